//! The shapes the kernels accept and their launch configurations, as plain Rust: every wrapper in
//! [`super::ops`] checks its buffers and picks its grid here before anything reaches the device,
//! so bad shapes give an [`Error::Invalid`] (never a panic or an out-of-bounds launch), and all of
//! it is tested without a GPU.
//!
//! The geometries themselves ([`ConvGeometry`], [`WarpGeometry`]) are backend-neutral and live in
//! `nn::backend`; their launch configurations are here. The constants mirror the `#define`s of the
//! kernel files (tile sizes, threads per block).

use crate::nn::backend::fits_int;
pub use crate::nn::backend::{ConvGeometry, WarpGeometry};
use crate::{Error, Result};

/// Threads per block of the one-thread-per-element kernels.
pub const THREADS: u32 = 256;
/// Output tile of the GEMM-shaped kernels (conv2d_*.cu, nearest_neighbours.cu): 64×64, K step 16.
pub const TILE: usize = 64;
/// The K step of those kernels' tiles (`BK` in the kernels).
pub const TILE_K: usize = 16;
/// CUDA's limits on the grid.
const MAX_GRID_X: usize = i32::MAX as usize;
const MAX_GRID_YZ: usize = 65_535;
/// Blocks a split reduction aims for (a few waves on an H100's 132 SMs).
const TARGET_BLOCKS: usize = 2048;
/// Default dynamic shared memory limit per block.
const MAX_SHARED_BYTES: usize = 48 * 1024;

/// A kernel launch: grid and block dimensions and dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Blocks per grid dimension (x, y, z).
    pub grid: (u32, u32, u32),
    /// Threads per block dimension (x, y, z).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

impl Launch {
    /// A launch with no blocks (nothing to do); wrappers skip it.
    pub fn is_empty(&self) -> bool {
        self.grid.0 == 0 || self.grid.1 == 0 || self.grid.2 == 0
    }
}

fn invalid(kernel: &str, message: impl std::fmt::Display) -> Error {
    Error::invalid(format!("gpu {kernel}: {message}"))
}

/// `got == want`, else an error naming the kernel and the buffer.
pub fn check_len(kernel: &str, what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(invalid(
            kernel,
            format!("{what} holds {got} values, the shape needs {want}"),
        ))
    }
}

/// `v` fits the kernel's `int` argument.
pub fn check_int(kernel: &str, what: &str, v: usize) -> Result<i32> {
    fits_int(v).ok_or_else(|| {
        invalid(
            kernel,
            format!("{what} = {v} exceeds the kernel's 32-bit index"),
        )
    })
}

fn grid_x(kernel: &str, blocks: usize) -> Result<u32> {
    if blocks <= MAX_GRID_X {
        Ok(blocks as u32)
    } else {
        Err(invalid(kernel, format!("{blocks} blocks exceed the grid")))
    }
}

fn grid_yz(kernel: &str, blocks: usize) -> Result<u32> {
    if blocks <= MAX_GRID_YZ {
        Ok(blocks as u32)
    } else {
        Err(invalid(
            kernel,
            format!("{blocks} blocks exceed the grid's y/z limit"),
        ))
    }
}

/// One thread per element, [`THREADS`] per block.
pub fn linear(kernel: &str, total: usize) -> Result<Launch> {
    Ok(Launch {
        grid: (grid_x(kernel, total.div_ceil(THREADS as usize))?, 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    })
}

/// One block of `threads` per item.
pub fn per_item(kernel: &str, items: usize, threads: u32, shared_bytes: usize) -> Result<Launch> {
    if shared_bytes > MAX_SHARED_BYTES {
        return Err(invalid(
            kernel,
            format!("needs {shared_bytes} bytes of shared memory per block, more than 48 KiB"),
        ));
    }
    Ok(Launch {
        grid: (grid_x(kernel, items)?, 1, 1),
        block: (threads, 1, 1),
        shared_bytes: shared_bytes as u32,
    })
}

/// A per-channel reduction over `rows × c` values (bn_moments, bn_backward_reduce,
/// conv2d_backward_bias): one thread per (channel, chunk of rows). Returns the launch and the
/// chunk length.
pub fn channel_reduction(kernel: &str, rows: usize, c: usize) -> Result<(Launch, usize)> {
    if c == 0 {
        return Err(invalid(kernel, "no channels"));
    }
    check_int(kernel, "channels", c)?;
    let block = c.next_multiple_of(32).min(THREADS as usize);
    let channel_blocks = c.div_ceil(block);
    // Enough chunks for ~64k threads, each summing at least 64 rows.
    let want_chunks = (65_536 / c).max(1);
    let chunk = rows.div_ceil(want_chunks).max(64);
    let chunks = rows.div_ceil(chunk).max(1);
    check_int(kernel, "rows per chunk", chunk)?;
    Ok((
        Launch {
            grid: (grid_x(kernel, channel_blocks)?, grid_yz(kernel, chunks)?, 1),
            block: (block as u32, 1, 1),
            shared_bytes: 0,
        },
        chunk,
    ))
}

impl ConvGeometry {
    fn tiles(kernel: &str, rows: usize, cols: usize) -> Result<Launch> {
        Ok(Launch {
            grid: (
                grid_x(kernel, rows.div_ceil(TILE))?,
                grid_yz(kernel, cols.div_ceil(TILE))?,
                1,
            ),
            block: (THREADS, 1, 1),
            shared_bytes: 0,
        })
    }

    /// conv2d_forward: 64×64 tiles of (output pixels × cout).
    pub fn forward_launch(&self) -> Result<Launch> {
        Self::tiles("conv2d_forward", self.n * self.oh * self.ow, self.cout)
    }

    /// conv2d_backward_input: 64×64 tiles of (input pixels × cin).
    pub fn backward_input_launch(&self) -> Result<Launch> {
        Self::tiles("conv2d_backward_input", self.n * self.h * self.w, self.cin)
    }

    /// conv2d_backward_weight: 64×64 tiles of (k·k·cin × cout), the pixels split into chunks
    /// (grid.z) so that about `TARGET_BLOCKS` blocks run. Returns the launch and the chunk.
    pub fn backward_weight_launch(&self) -> Result<(Launch, usize)> {
        const K: &str = "conv2d_backward_weight";
        let pixels = self.n * self.oh * self.ow;
        let tiles = self.kk().div_ceil(TILE) * self.cout.div_ceil(TILE);
        let splits = TARGET_BLOCKS
            .div_ceil(tiles)
            .clamp(1, pixels.div_ceil(TILE_K).max(1));
        let chunk = pixels.div_ceil(splits).next_multiple_of(TILE_K).max(TILE_K);
        let splits = pixels.div_ceil(chunk).max(1);
        check_int(K, "pixels per chunk", chunk)?;
        Ok((
            Launch {
                grid: (
                    grid_x(K, self.kk().div_ceil(TILE))?,
                    grid_yz(K, self.cout.div_ceil(TILE))?,
                    grid_yz(K, splits)?,
                ),
                block: (THREADS, 1, 1),
                shared_bytes: 0,
            },
            chunk,
        ))
    }
}

impl WarpGeometry {
    /// warp_forward: one thread per output value.
    pub fn forward_launch(&self) -> Result<Launch> {
        linear("warp_forward", self.out_len())
    }
    /// One block per item (warp_backward reduces dθ in shared memory, ≤ 256 threads).
    pub fn backward_launch(&self) -> Result<Launch> {
        per_item("warp_backward", self.n, THREADS, 0)
    }
}

/// Side of the SIFT patches the kernels accept: at least 4 (as the CPU), and small enough that
/// the backward's patch gradient fits in shared memory next to its other buffers.
pub const SIFT_MAX_SIZE: usize = 96;

/// sift_forward / sift_backward: one block of 256 threads per patch.
pub fn sift_launch(n: usize, size: usize, backward: bool) -> Result<Launch> {
    const K: &str = "sift";
    if !(4..=SIFT_MAX_SIZE).contains(&size) {
        return Err(invalid(
            K,
            format!("patch side {size} is outside 4..={SIFT_MAX_SIZE}"),
        ));
    }
    let shared = if backward { size * size * 4 } else { 0 };
    per_item(K, n, THREADS, shared)
}

/// two_nearest_partial: 64 queries per block (grid.x), the database split into grid.y slices of
/// `per_split` rows (a multiple of 64) so that about 1,024 blocks run. Returns the launch and
/// `per_split`.
pub fn nearest_launch(nq: usize, nd: usize, dim: usize) -> Result<(Launch, usize)> {
    const K: &str = "two_nearest";
    if dim == 0 {
        return Err(invalid(K, "zero-dimensional descriptors"));
    }
    for (what, v) in [("queries", nq), ("database rows", nd), ("dimension", dim)] {
        check_int(K, what, v)?;
    }
    let qblocks = nq.div_ceil(TILE);
    let max_splits = nd.div_ceil(TILE).max(1);
    let splits = 1024usize.div_ceil(qblocks.max(1)).clamp(1, max_splits);
    let per_split = nd.div_ceil(splits).next_multiple_of(TILE).max(TILE);
    let splits = nd.div_ceil(per_split).max(1);
    Ok((
        Launch {
            grid: (grid_x(K, qblocks)?, grid_yz(K, splits)?, 1),
            block: (THREADS, 1, 1),
            shared_bytes: 0,
        },
        per_split,
    ))
}

/// The most neighbours [`k_nearest_launch`] lists per query (each is an insertion into a list in
/// device memory; MODS asks for 50).
pub const MAX_NEIGHBOURS: usize = 1024;

/// k_nearest_scores: one block of [`THREADS`] per [`TILE`] queries, each scanning the whole
/// database (no splits: a split would need its own k-list per query).
pub fn k_nearest_launch(nq: usize, nd: usize, dim: usize, k: usize) -> Result<Launch> {
    const K: &str = "k_nearest";
    if dim == 0 {
        return Err(invalid(K, "zero-dimensional descriptors"));
    }
    if !(1..=MAX_NEIGHBOURS).contains(&k) {
        return Err(invalid(
            K,
            format!("{k} neighbours: must be in 1..={MAX_NEIGHBOURS}"),
        ));
    }
    for (what, v) in [
        ("queries", nq),
        ("database rows", nd),
        ("dimension", dim),
        ("list entries", nq.saturating_mul(k)),
    ] {
        check_int(K, what, v)?;
    }
    Ok(Launch {
        grid: (grid_x(K, nq.div_ceil(TILE))?, 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
    })
}

/// gemm_abt (loss.cu): 16×16 threads, one output each.
pub fn gemm_abt_launch(n: usize, m: usize) -> Result<Launch> {
    const K: &str = "gemm_abt";
    Ok(Launch {
        grid: (grid_x(K, m.div_ceil(16))?, grid_yz(K, n.div_ceil(16))?, 1),
        block: (16, 16, 1),
        shared_bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_launches_cover_the_outputs() {
        let g = ConvGeometry::new(7, 23, 29, 5, 70, 3, 2, 1).unwrap();
        let l = g.forward_launch().unwrap();
        assert!(l.grid.0 as usize * TILE >= 7 * g.oh * g.ow);
        assert_eq!(l.grid.1, 2);
        let l = g.backward_input_launch().unwrap();
        assert!(l.grid.0 as usize * TILE >= 7 * 23 * 29 && l.grid.1 == 1);
        let (l, chunk) = g.backward_weight_launch().unwrap();
        assert_eq!(chunk % TILE_K, 0);
        assert!(l.grid.2 as usize * chunk >= 7 * g.oh * g.ow);
        assert!((l.grid.2 as usize - 1) * chunk < 7 * g.oh * g.ow);
        // A big batch still fits the grid.
        let g = ConvGeometry::new(16_384, 32, 32, 32, 32, 3, 1, 1).unwrap();
        assert!(g.forward_launch().is_ok() && g.backward_weight_launch().is_ok());
    }

    #[test]
    fn reductions_and_nearest_neighbour_splits() {
        let (l, chunk) = channel_reduction("bn", 1000, 16).unwrap();
        assert_eq!(l.block.0, 32);
        assert!(l.grid.1 as usize * chunk >= 1000);
        assert!(channel_reduction("bn", 10, 0).is_err());
        let (l, per) = nearest_launch(10_000, 10_000, 128).unwrap();
        assert_eq!(per % TILE, 0);
        assert!(l.grid.1 as usize * per >= 10_000);
        assert!(l.grid.0 as usize * l.grid.1 as usize >= 1000);
        let (l, per) = nearest_launch(3, 5, 128).unwrap();
        assert_eq!((l.grid, per), ((1, 1, 1), 64));
        assert!(nearest_launch(3, 5, 0).is_err());
        let l = k_nearest_launch(135_000, 60_000, 128, 50).unwrap();
        assert_eq!((l.grid, l.block), ((2110, 1, 1), (THREADS, 1, 1)));
        assert!(k_nearest_launch(10, 10, 128, 0).is_err());
        assert!(k_nearest_launch(10, 10, 128, MAX_NEIGHBOURS + 1).is_err());
        assert!(k_nearest_launch(10, 10, 0, 2).is_err());
        assert!(k_nearest_launch(0, 10, 128, 2).unwrap().is_empty());
    }

    #[test]
    fn per_item_limits() {
        assert!(sift_launch(10, 3, false).is_err());
        assert!(sift_launch(10, 97, true).is_err());
        assert_eq!(sift_launch(10, 41, true).unwrap().shared_bytes, 41 * 41 * 4);
        assert!(per_item("x", 1, 256, 64 * 1024).is_err());
        assert!(linear("x", 0).unwrap().is_empty());
        assert!(check_len("k", "x", 3, 4)
            .unwrap_err()
            .to_string()
            .contains("x holds 3 values"));
    }
}
