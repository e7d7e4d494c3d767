//! 2-D convolution on NHWC batches (PyTorch `Conv2d`: square kernel, zero padding, any stride),
//! forward, and backward to the input, the weights and the bias.
//!
//! Layout and method (the same as the inference engine, `nn::engine`): activations are NHWC, so
//! a block of output pixels is one GEMM `[pixels × k·k·cin] · [k·k·cin × cout]` whose result rows
//! are already the output's NHWC pixels. With `col` the im2col matrix of a block,
//! - forward: `y = col · W`;
//! - weights: `dW += colᵀ · dy` (the im2col block is rebuilt from the input, not stored);
//! - input: `dcol = dy · Wᵀ`, then col2im scatters `dcol` back onto the input pixels.
//!
//! `W` is in "GEMM layout" `[(ky·k + kx)·cin + ci][co]`; [`ConvShape::to_gemm_layout`] converts
//! PyTorch's `[co][ci][ky][kx]`. Batches are processed in the fixed groups of `parallel`, and
//! the weight and bias gradients of the groups are added in group order (deterministic).
//!
//! `ConvInput::map` fuses the previous layer's batch norm and ReLU into the reads
//! ([`InputMap`]): the networks keep only raw convolution outputs. The input gradient is always
//! with respect to what the convolution read (the mapped value); the caller takes it through the
//! map. The forward pass can also accumulate the output's per-channel [`Moments`] while each
//! block is still in cache, for the batch norm that follows.

use rayon::prelude::*;

use super::batchnorm::Moments;
use super::input_map::InputMap;
use crate::nn::matmul::{gemm, MatMut, MatRef};
use crate::nn::parallel::{group_ranges, split_mut, with_scratch};

/// im2col block size in values (256 KiB: the block, its GEMM output and the weights stay in L2).
const COL_BUDGET: usize = 1 << 16;
/// Input values per item chunk (256 KiB): the batch norm and ReLU of the previous layer are
/// applied once per chunk, not once per im2col copy (k² times).
const MAP_BUDGET: usize = 1 << 16;

/// The geometry of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel size (`k × k`).
    pub k: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl ConvShape {
    /// Output height and width for an `h × w` input.
    ///
    /// # Panics
    /// If the padded input is smaller than the kernel, or `k` or `stride` is zero.
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        assert!(
            self.k > 0 && self.stride > 0,
            "kernel and stride must be positive"
        );
        let (hp, wp) = (h + 2 * self.padding, w + 2 * self.padding);
        assert!(
            hp >= self.k && wp >= self.k,
            "input {h}×{w} (padding {}) is smaller than the {}×{} kernel",
            self.padding,
            self.k,
            self.k
        );
        (
            (hp - self.k) / self.stride + 1,
            (wp - self.k) / self.stride + 1,
        )
    }

    /// Length of one im2col row, `k·k·cin`.
    pub fn kk(&self) -> usize {
        self.k * self.k * self.cin
    }

    /// Number of weights, `cout·cin·k·k`.
    pub fn weight_len(&self) -> usize {
        self.cout * self.kk()
    }

    /// PyTorch `[co][ci][ky][kx]` → GEMM layout `[(ky·k + kx)·cin + ci][co]`.
    pub fn to_gemm_layout(&self, torch: &[f32], gemm: &mut [f32]) {
        crate::nn::layers::torch_to_gemm_layout(self.k, self.cin, self.cout, torch, gemm);
    }

    /// Adds a GEMM-layout weight gradient into a PyTorch-layout one.
    pub fn add_to_torch_layout(&self, gemm: &[f32], torch: &mut [f32]) {
        assert_eq!(torch.len(), self.weight_len());
        assert_eq!(gemm.len(), self.weight_len());
        let (k, cin, cout) = (self.k, self.cin, self.cout);
        for co in 0..cout {
            for ci in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        torch[((co * cin + ci) * k + ky) * k + kx] +=
                            gemm[((ky * k + kx) * cin + ci) * cout + co];
                    }
                }
            }
        }
    }
}

/// A convolution's input: `n` NHWC items of `h × w × cin`.
#[derive(Clone, Copy, Debug)]
pub struct ConvInput<'a> {
    /// The `n × h × w × cin` values.
    pub data: &'a [f32],
    /// Items.
    pub n: usize,
    /// Item height.
    pub h: usize,
    /// Item width.
    pub w: usize,
    /// What is read: `map(x)` (the previous layer's fused batch norm and ReLU).
    pub map: InputMap<'a>,
}

/// Where [`conv2d_backward`] writes; `None` skips that gradient (and its GEMM).
#[derive(Debug, Default)]
pub struct ConvGrads<'a> {
    /// `dL/d(input as read)`, same layout as the input; overwritten.
    pub input: Option<&'a mut [f32]>,
    /// `dL/dW` in GEMM layout; overwritten.
    pub weight: Option<&'a mut [f32]>,
    /// `dL/db`; overwritten.
    pub bias: Option<&'a mut [f32]>,
}

/// Per-call constants.
struct Geometry<'a> {
    cs: ConvShape,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    map: InputMap<'a>,
}

impl<'a> Geometry<'a> {
    fn new(cs: &ConvShape, input: &ConvInput<'a>) -> Geometry<'a> {
        assert_eq!(
            input.data.len(),
            input.n * input.h * input.w * cs.cin,
            "conv input length"
        );
        let (oh, ow) = cs.out_size(input.h, input.w);
        Geometry {
            cs: *cs,
            h: input.h,
            w: input.w,
            oh,
            ow,
            map: input.map,
        }
    }
    fn in_item(&self) -> usize {
        self.h * self.w * self.cs.cin
    }
    fn out_item(&self) -> usize {
        self.oh * self.ow * self.cs.cout
    }
    /// Output pixels per im2col block.
    fn block(&self) -> usize {
        (COL_BUDGET / self.cs.kk()).max(1)
    }

    /// Calls `f(item, oy, ox, row)` for output pixels `p0..p1` of a group (pixel `p` is item
    /// `p / (oh·ow)`), with `row` the pixel's slice of length `kk` in `col`.
    fn for_pixels(
        &self,
        p0: usize,
        p1: usize,
        col: &mut [f32],
        mut f: impl FnMut(usize, usize, usize, &mut [f32]),
    ) {
        let kk = self.cs.kk();
        let plane = self.oh * self.ow;
        for (p, row) in (p0..p1).zip(col.chunks_exact_mut(kk)) {
            let (item, q) = (p / plane, p % plane);
            f(item, q / self.ow, q % self.ow, row);
        }
    }

    /// The input offset range of kernel row `ky` for output pixel `(oy, ox)`:
    /// `None` if the row lies in the padding, else `(input row, first input pixel x, kx0, kx1)`
    /// where the kernel columns `kx0..kx1` (not empty) fall inside the image.
    #[inline]
    fn kernel_row(&self, oy: usize, ox: usize, ky: usize) -> Option<(usize, usize, usize, usize)> {
        let iy = (oy * self.cs.stride + ky) as isize - self.cs.padding as isize;
        if iy < 0 || iy >= self.h as isize {
            return None;
        }
        let k = self.cs.k as isize;
        let ix0 = (ox * self.cs.stride) as isize - self.cs.padding as isize;
        // A padding as wide as the kernel can put a whole kernel row left or right of the image.
        let kx0 = (-ix0).clamp(0, k);
        let kx1 = (self.w as isize - ix0).clamp(0, k);
        if kx1 <= kx0 {
            return None;
        }
        Some((
            iy as usize,
            (ix0 + kx0) as usize,
            kx0 as usize,
            kx1 as usize,
        ))
    }

    /// Items per chunk: the (mapped) input of a chunk stays in L2 while its im2col blocks are
    /// built from it.
    fn chunk_items(&self) -> usize {
        (MAP_BUDGET / self.in_item().max(1)).max(1)
    }

    /// The input of items `i0..i1` of a group as the convolution reads it: the slice itself for
    /// an identity map, else mapped into `buf`.
    fn mapped<'b>(&self, x: &'b [f32], i0: usize, i1: usize, buf: &'b mut [f32]) -> &'b [f32] {
        let src = &x[i0 * self.in_item()..i1 * self.in_item()];
        if self.map.is_identity() {
            src
        } else {
            let dst = &mut buf[..src.len()];
            self.map.apply(src, dst);
            dst
        }
    }

    /// Fills the im2col rows of pixels `p0..p1` of a group whose (mapped) input is `x`.
    fn im2col(&self, x: &[f32], p0: usize, p1: usize, col: &mut [f32]) {
        let (k, cin) = (self.cs.k, self.cs.cin);
        let run = k * cin;
        let in_item = self.in_item();
        self.for_pixels(p0, p1, col, |item, oy, ox, row| {
            let xi = &x[item * in_item..(item + 1) * in_item];
            for ky in 0..k {
                let dst = &mut row[ky * run..(ky + 1) * run];
                match self.kernel_row(oy, ox, ky) {
                    None => dst.fill(0.0),
                    Some((iy, ix, kx0, kx1)) => {
                        dst[..kx0 * cin].fill(0.0);
                        dst[kx1 * cin..].fill(0.0);
                        let from = (iy * self.w + ix) * cin;
                        dst[kx0 * cin..kx1 * cin]
                            .copy_from_slice(&xi[from..from + (kx1 - kx0) * cin]);
                    }
                }
            }
        });
    }

    /// Adds the im2col-shaped gradient `dcol` of pixels `p0..p1` onto the group's input gradient.
    fn col2im(&self, dcol: &mut [f32], p0: usize, p1: usize, dx: &mut [f32]) {
        let (k, cin) = (self.cs.k, self.cs.cin);
        let run = k * cin;
        let in_item = self.in_item();
        self.for_pixels(p0, p1, dcol, |item, oy, ox, row| {
            let di = &mut dx[item * in_item..(item + 1) * in_item];
            for ky in 0..k {
                if let Some((iy, ix, kx0, kx1)) = self.kernel_row(oy, ox, ky) {
                    let from = (iy * self.w + ix) * cin;
                    let d = &mut di[from..from + (kx1 - kx0) * cin];
                    let s = &row[ky * run + kx0 * cin..ky * run + kx1 * cin];
                    d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
                }
            }
        });
    }
}

/// `y = conv(x)` (+ bias), NHWC in and out; `weight` in GEMM layout. With `moments`, also
/// returns the per-channel moments of `y`, one entry per batch group (for
/// `Moments::merge`).
///
/// # Panics
/// If a buffer length does not match the shapes.
pub fn conv2d_forward(
    cs: &ConvShape,
    input: &ConvInput,
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    moments: Option<&mut Vec<Moments>>,
) {
    let g = Geometry::new(cs, input);
    assert_eq!(weight.len(), cs.weight_len(), "conv weight length");
    assert_eq!(y.len(), input.n * g.out_item(), "conv output length");
    if let Some(b) = bias {
        assert_eq!(b.len(), cs.cout, "conv bias length");
    }
    let ranges = group_ranges(input.n);
    let (kk, cout, block) = (cs.kk(), cs.cout, g.block());
    let outs = split_mut(y, g.out_item(), &ranges);
    let want_moments = moments.is_some();
    let mut parts: Vec<Moments> = ranges
        .iter()
        .map(|_| Moments::new(if want_moments { cout } else { 0 }))
        .collect();
    ranges
        .par_iter()
        .zip(outs.into_par_iter())
        .zip(parts.par_iter_mut())
        .for_each(|((r, out), part)| {
            let x = &input.data[r.start * g.in_item()..r.end * g.in_item()];
            let chunk = g.chunk_items().min(r.len());
            let plane = g.oh * g.ow;
            let map_len = if g.map.is_identity() {
                0
            } else {
                chunk * g.in_item()
            };
            with_scratch(
                [block.min(chunk * plane) * kk, map_len, 0],
                |col, mapped, _| {
                    for i0 in (0..r.len()).step_by(chunk) {
                        let i1 = (i0 + chunk).min(r.len());
                        let xc = g.mapped(x, i0, i1, mapped);
                        let oc = &mut out[i0 * g.out_item()..i1 * g.out_item()];
                        let total = (i1 - i0) * plane;
                        for p0 in (0..total).step_by(block) {
                            let p1 = (p0 + block).min(total);
                            let rows = p1 - p0;
                            g.im2col(xc, p0, p1, &mut col[..rows * kk]);
                            let o = &mut oc[p0 * cout..p1 * cout];
                            gemm(
                                MatMut::row_major(o, rows, cout),
                                MatRef::row_major(&col[..rows * kk], rows, kk),
                                MatRef::row_major(weight, kk, cout),
                                false,
                                false,
                            );
                            if let Some(b) = bias {
                                for px in o.chunks_exact_mut(cout) {
                                    px.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                                }
                            }
                            if want_moments {
                                part.add_rows(o);
                            }
                        }
                    }
                },
            );
        });
    if let Some(m) = moments {
        *m = parts;
    }
}

/// Gradients of a convolution given `dy = dL/dy` (NHWC, like the forward output).
///
/// # Panics
/// If a buffer length does not match the shapes.
pub fn conv2d_backward(
    cs: &ConvShape,
    input: &ConvInput,
    weight: &[f32],
    dy: &[f32],
    grads: ConvGrads,
) {
    let g = Geometry::new(cs, input);
    let (kk, cout) = (cs.kk(), cs.cout);
    assert_eq!(weight.len(), cs.weight_len(), "conv weight length");
    assert_eq!(
        dy.len(),
        input.n * g.out_item(),
        "conv output gradient length"
    );
    let ConvGrads {
        input: dx,
        weight: dw,
        bias: db,
    } = grads;
    let (want_w, want_b) = (dw.is_some(), db.is_some());
    let part_len = if want_w { kk * cout } else { 0 } + if want_b { cout } else { 0 };
    let ranges = group_ranges(input.n);
    let dx_parts: Vec<Option<&mut [f32]>> = match dx {
        Some(dx) => {
            assert_eq!(dx.len(), input.data.len(), "conv input gradient length");
            split_mut(dx, g.in_item(), &ranges)
                .into_iter()
                .map(Some)
                .collect()
        }
        None => ranges.iter().map(|_| None).collect(),
    };
    // Per-group partial gradients, kept per calling thread between calls (2.4 MB for AffNet's
    // largest layer: a fresh allocation each step costs page faults).
    PARTIALS.with(|cell| {
        let mut own = Vec::new();
        let mut guard = cell.try_borrow_mut();
        let partials = match guard.as_deref_mut() {
            Ok(p) => p,
            Err(_) => &mut own,
        };
        partials.clear();
        partials.resize(ranges.len() * part_len.max(1), 0.0);
        backward_groups(
            &g,
            input,
            weight,
            dy,
            &ranges,
            dx_parts,
            partials,
            (part_len, want_w, want_b),
        );
        reduce_partials(partials, part_len, kk * cout, cout, dw, db);
    });
}

thread_local! {
    static PARTIALS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The per-group work of [`conv2d_backward`].
#[allow(clippy::too_many_arguments)]
fn backward_groups(
    g: &Geometry,
    input: &ConvInput,
    weight: &[f32],
    dy: &[f32],
    ranges: &[std::ops::Range<usize>],
    dx_parts: Vec<Option<&mut [f32]>>,
    partials: &mut [f32],
    (part_len, want_w, want_b): (usize, bool, bool),
) {
    let (kk, cout, block) = (g.cs.kk(), g.cs.cout, g.block());
    ranges
        .par_iter()
        .zip(dx_parts.into_par_iter())
        .zip(partials.par_chunks_mut(part_len.max(1)))
        .for_each(|((r, mut dx), part)| {
            let x = &input.data[r.start * g.in_item()..r.end * g.in_item()];
            let dy_g = &dy[r.start * g.out_item()..r.end * g.out_item()];
            let (dw_part, db_part) = part.split_at_mut(if want_w { kk * cout } else { 0 });
            let chunk = g.chunk_items().min(r.len());
            let plane = g.oh * g.ow;
            let blk = block.min(chunk * plane) * kk;
            let col_len = if want_w { blk } else { 0 };
            let dcol_len = if dx.is_some() { blk } else { 0 };
            let map_len = if want_w && !g.map.is_identity() {
                chunk * g.in_item()
            } else {
                0
            };
            let mut first = true;
            with_scratch([col_len, dcol_len, map_len], |col, dcol, mapped| {
                for i0 in (0..r.len()).step_by(chunk) {
                    let i1 = (i0 + chunk).min(r.len());
                    let xc = if want_w {
                        g.mapped(x, i0, i1, mapped)
                    } else {
                        &[][..]
                    };
                    let dyc = &dy_g[i0 * g.out_item()..i1 * g.out_item()];
                    let mut dxc = dx
                        .as_deref_mut()
                        .map(|d| &mut d[i0 * g.in_item()..i1 * g.in_item()]);
                    if let Some(d) = dxc.as_deref_mut() {
                        d.fill(0.0);
                    }
                    let total = (i1 - i0) * plane;
                    for p0 in (0..total).step_by(block) {
                        let p1 = (p0 + block).min(total);
                        let rows = p1 - p0;
                        let dy_blk = &dyc[p0 * cout..p1 * cout];
                        if want_w {
                            g.im2col(xc, p0, p1, &mut col[..rows * kk]);
                            // dW[kk × cout] += colᵀ · dy: col viewed transposed (row stride 1).
                            gemm(
                                MatMut::row_major(dw_part, kk, cout),
                                MatRef::new(&col[..rows * kk], kk, rows, 1, kk),
                                MatRef::row_major(dy_blk, rows, cout),
                                !first,
                                false,
                            );
                            first = false;
                        }
                        if want_b {
                            for px in dy_blk.chunks_exact(cout) {
                                db_part.iter_mut().zip(px).for_each(|(a, v)| *a += v);
                            }
                        }
                        if let Some(d) = dxc.as_deref_mut() {
                            // dcol[rows × kk] = dy · Wᵀ: W viewed transposed.
                            gemm(
                                MatMut::row_major(&mut dcol[..rows * kk], rows, kk),
                                MatRef::row_major(dy_blk, rows, cout),
                                MatRef::new(weight, cout, kk, 1, cout),
                                false,
                                false,
                            );
                            g.col2im(&mut dcol[..rows * kk], p0, p1, d);
                        }
                    }
                }
            });
        });
}

/// Adds the per-group partial weight and bias gradients in group order.
fn reduce_partials(
    partials: &[f32],
    part_len: usize,
    wlen: usize,
    cout: usize,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) {
    let want_w = dw.is_some();
    if let Some(dw) = dw {
        assert_eq!(dw.len(), wlen, "conv weight gradient length");
        dw.fill(0.0);
        for part in partials.chunks(part_len.max(1)) {
            dw.iter_mut().zip(&part[..wlen]).for_each(|(a, v)| *a += v);
        }
    }
    if let Some(db) = db {
        assert_eq!(db.len(), cout, "conv bias gradient length");
        db.fill(0.0);
        let off = if want_w { wlen } else { 0 };
        for part in partials.chunks(part_len.max(1)) {
            db.iter_mut()
                .zip(&part[off..off + cout])
                .for_each(|(a, v)| *a += v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_gradient, check_gradient_n, random_vec};

    /// Direct NHWC convolution in f64, from the definition.
    fn naive(cs: &ConvShape, x: &ConvInput, w_torch: &[f32], b: Option<&[f32]>) -> Vec<f64> {
        let (oh, ow) = cs.out_size(x.h, x.w);
        let mut y = vec![0.0; x.n * oh * ow * cs.cout];
        for n in 0..x.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for co in 0..cs.cout {
                        let mut acc = b.map_or(0.0, |b| b[co] as f64);
                        for ci in 0..cs.cin {
                            for ky in 0..cs.k {
                                for kx in 0..cs.k {
                                    let iy = (oy * cs.stride + ky) as isize - cs.padding as isize;
                                    let ix = (ox * cs.stride + kx) as isize - cs.padding as isize;
                                    if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize
                                    {
                                        continue;
                                    }
                                    let v = x.map.value(
                                        x.data[((n * x.h + iy as usize) * x.w + ix as usize)
                                            * cs.cin
                                            + ci],
                                        ci,
                                    );
                                    acc += v as f64
                                        * w_torch[((co * cs.cin + ci) * cs.k + ky) * cs.k + kx]
                                            as f64;
                                }
                            }
                        }
                        y[((n * oh + oy) * ow + ox) * cs.cout + co] = acc;
                    }
                }
            }
        }
        y
    }

    /// `(cin, cout, k, stride, padding, h, w)`: odd sizes, strides 1–3, paddings 0–2, and
    /// AffNet's layers (several im2col blocks per group at 32×32).
    fn shapes() -> Vec<(ConvShape, usize, usize)> {
        [
            (3, 5, 3, 1, 1, 7, 9),
            (2, 4, 3, 2, 1, 9, 7),
            (5, 3, 5, 2, 2, 11, 6),
            (4, 2, 4, 1, 0, 5, 7),
            (1, 6, 1, 3, 0, 7, 5),
            (64, 3, 8, 1, 0, 8, 8),
            (16, 16, 3, 1, 1, 32, 32),
            (16, 32, 3, 2, 1, 32, 32),
            // Padding as wide as the kernel: whole kernel rows fall left or right of the image.
            (3, 4, 1, 2, 2, 5, 4),
            (2, 3, 2, 1, 3, 3, 4),
        ]
        .into_iter()
        .map(|(cin, cout, k, stride, padding, h, w)| {
            let cs = ConvShape {
                cin,
                cout,
                k,
                stride,
                padding,
            };
            (cs, h, w)
        })
        .collect()
    }

    /// Per-channel batch-norm-like shift and scale for the fused input map.
    fn map_params(cin: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let shift = random_vec(cin, seed, 0.3);
        let scale = random_vec(cin, seed + 1, 0.5)
            .iter()
            .map(|v| v + 1.0)
            .collect();
        (shift, scale)
    }

    #[test]
    fn forward_matches_the_definition() {
        for (i, (cs, h, w)) in shapes().into_iter().enumerate() {
            let (shift, scale) = map_params(cs.cin, 40 + i as u64);
            for relu in [false, true] {
                let n = 19; // more than GROUPS, so several groups
                let x = random_vec(n * h * w * cs.cin, 10 + i as u64, 1.0);
                let wt = random_vec(cs.weight_len(), 20 + i as u64, 0.5);
                let b = random_vec(cs.cout, 30 + i as u64, 0.5);
                let map = InputMap {
                    affine: relu.then_some((&shift[..], &scale[..])),
                    relu,
                };
                let input = ConvInput {
                    data: &x,
                    n,
                    h,
                    w,
                    map,
                };
                let mut wg = vec![0.0; wt.len()];
                cs.to_gemm_layout(&wt, &mut wg);
                let (oh, ow) = cs.out_size(h, w);
                let mut y = vec![0.0; n * oh * ow * cs.cout];
                let mut moments = Vec::new();
                conv2d_forward(&cs, &input, &wg, Some(&b), &mut y, Some(&mut moments));
                let expect = naive(&cs, &input, &wt, Some(&b));
                for (a, e) in y.iter().zip(&expect) {
                    assert!((*a as f64 - e).abs() < 1e-4, "{cs:?}: {a} vs {e}");
                }
                // The fused moments equal a separate pass.
                let mut fused = super::super::batchnorm::BatchStats::default();
                Moments::merge(&mut moments, 1e-5, &mut fused);
                let mut separate = fused.clone();
                super::super::batchnorm::batch_statistics(&y, cs.cout, 1e-5, &mut separate);
                for (a, b) in fused.var.iter().zip(&separate.var) {
                    assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()));
                }
            }
        }
    }

    /// Central differences of `L = Σ r·y` with respect to inputs, weights and bias, in f64, on odd
    /// sizes, strides 1–3, paddings 0–2, with and without the fused input map (shift, scale,
    /// ReLU).
    #[test]
    fn backward_matches_finite_differences() {
        for (i, (cs, h, w)) in shapes().into_iter().enumerate() {
            for relu in [false, true] {
                // One item for the 32×32 layers (several im2col blocks each) to keep the naive
                // f64 reference affordable.
                let n = if h >= 32 { 1 } else { 3 };
                let coords = if h >= 32 { 60 } else { 300 };
                let seed = 100 + 10 * i as u64 + relu as u64;
                let (shift, scale) = map_params(cs.cin, seed + 5);
                let map = InputMap {
                    affine: relu.then_some((&shift[..], &scale[..])),
                    relu,
                };
                // Inputs kept away from the ReLU's kink (mapped value 0), where it has no
                // derivative.
                let x: Vec<f32> = random_vec(n * h * w * cs.cin, seed, 1.0)
                    .into_iter()
                    .enumerate()
                    .map(|(k, v)| {
                        if map.value(v, k % cs.cin).abs() < 0.01 && relu {
                            v + 0.1
                        } else {
                            v
                        }
                    })
                    .collect();
                let wt = random_vec(cs.weight_len(), seed + 1, 0.5);
                let b = random_vec(cs.cout, seed + 2, 0.5);
                let (oh, ow) = cs.out_size(h, w);
                let r = random_vec(n * oh * ow * cs.cout, seed + 3, 1.0);
                // Loss through the naive f64 definition: the check then also covers the layouts.
                let loss = |x: &[f32], wt: &[f32], b: &[f32]| -> f64 {
                    let input = ConvInput {
                        data: x,
                        n,
                        h,
                        w,
                        map,
                    };
                    naive(&cs, &input, wt, Some(b))
                        .iter()
                        .zip(&r)
                        .map(|(y, r)| y * *r as f64)
                        .sum()
                };
                let mut wg = vec![0.0; wt.len()];
                cs.to_gemm_layout(&wt, &mut wg);
                let (mut dx, mut dwg, mut db) =
                    (vec![0.0; x.len()], vec![0.0; wt.len()], vec![0.0; cs.cout]);
                let input = ConvInput {
                    data: &x,
                    n,
                    h,
                    w,
                    map,
                };
                conv2d_backward(
                    &cs,
                    &input,
                    &wg,
                    &r,
                    ConvGrads {
                        input: Some(&mut dx),
                        weight: Some(&mut dwg),
                        bias: Some(&mut db),
                    },
                );
                // The input gradient is w.r.t. what was read: take it through the map here.
                if relu {
                    for (k, (d, x)) in dx.iter_mut().zip(&x).enumerate() {
                        let ci = k % cs.cin;
                        *d *= if map.value(*x, ci) > 0.0 {
                            scale[ci]
                        } else {
                            0.0
                        };
                    }
                }
                let mut dw = vec![0.0; wt.len()];
                cs.add_to_torch_layout(&dwg, &mut dw);
                check_gradient_n(|v| loss(v, &wt, &b), &x, &dx, 1e-3, 1e-3, coords)
                    .assert_ok("conv dx");
                check_gradient_n(|v| loss(&x, v, &b), &wt, &dw, 1e-3, 1e-3, coords)
                    .assert_ok("conv dW");
                check_gradient(|v| loss(&x, &wt, v), &b, &db, 1e-3, 1e-3).assert_ok("conv db");
            }
        }
    }
}
