//! Sampling normalised patches from local affine frames.
//!
//! One sampler for every consumer (SIFT, the orientation histogram, AffNet, OriNet, HardNet), and
//! the one the networks were trained with: kornia's `extract_patches_from_pyramid` convention
//! (reference `affnet.md` §9). Patch pixel (i, j) (row i, column j) sits at
//! `u = ((2j+1)/PS − 1, (2i+1)/PS − 1)` in the frame, i.e. at `g = A·u + c` in the chosen image's
//! pixels, and is read bilinearly at `g·W/(W−1) − 0.5` (x) and `g·H/(H−1) − 0.5` (y) with the
//! coordinates clamped to the image (border replication). A half-pixel difference moves network
//! outputs by about 1 %, so nothing else in wbs samples patches.
//!
//! The image is chosen from the scale space so that it is blurred about as much as the patch's
//! sampling step needs ([`PatchSpec::blur_per_step`]) and never coarser than that step.

use rayon::prelude::*;

use crate::image::GrayImage;
use crate::laf::Laf;
use crate::pyramid::ScaleSpace;

/// The patch of Perdoch's SIFT (and of the orientation histogram): 41×41.
pub const SIFT_PATCH: PatchSpec = PatchSpec {
    size: 41,
    blur_per_step: 1.5,
};

/// The patch of AffNet, OriNet and HardNet: 32×32. The blur matches the original HesAffNet,
/// which samples the level just below the detection (σ_det/2^(1/3)): with the frame spanning
/// ±3√3·σ over 32 samples, that is about 2.44 sampling steps.
pub const NET_PATCH: PatchSpec = PatchSpec {
    size: 32,
    blur_per_step: 2.44,
};

/// The size of a square patch and how much anti-aliasing blur it wants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PatchSpec {
    /// The side in patch pixels; the patch spans the frame's `[-1, 1]²`.
    pub size: usize,
    /// The wanted blur of the sampled image, in units of the patch's sampling step (input-image
    /// pixels per patch pixel). hesaff blurs SIFT patches by 1.5 steps.
    pub blur_per_step: f32,
}

impl PatchSpec {
    /// The number of patch pixels, `size²`.
    pub fn pixels(&self) -> usize {
        self.size * self.size
    }
}

/// Samples a `size`×`size` patch of `image` over `laf` (given in `image`'s pixels) into `out`,
/// row-major, with no anti-aliasing of its own: the caller picks a suitably blurred image.
pub fn sample_patch(image: &GrayImage, laf: &Laf, size: usize, out: &mut [f32]) {
    debug_assert_eq!(out.len(), size * size);
    let (w, h) = (image.width(), image.height());
    // kornia normalises by (W − 1) and grid_sample de-normalises by W with align_corners=False.
    let fx = w as f32 / (w.max(2) - 1) as f32;
    let fy = h as f32 / (h.max(2) - 1) as f32;
    let a = laf.a;
    let inv = 1.0 / size as f32;
    // Sample position of patch pixel (i, j) in image pixels: origin + j·dx + i·dy.
    let u0 = inv - 1.0;
    let du = 2.0 * inv;
    let origin = [
        (a[0][0] * u0 + a[0][1] * u0 + laf.c[0]) * fx - 0.5,
        (a[1][0] * u0 + a[1][1] * u0 + laf.c[1]) * fy - 0.5,
    ];
    let dx = [a[0][0] * du * fx, a[1][0] * du * fy];
    let dy = [a[0][1] * du * fx, a[1][1] * du * fy];
    let last = (size - 1) as f32;
    let corners = [
        origin,
        [origin[0] + last * dx[0], origin[1] + last * dx[1]],
        [origin[0] + last * dy[0], origin[1] + last * dy[1]],
        [
            origin[0] + last * (dx[0] + dy[0]),
            origin[1] + last * (dx[1] + dy[1]),
        ],
    ];
    // A small margin keeps the fast path safe from rounding in the incremental positions.
    let inside = corners.iter().all(|p| {
        p[0] >= 0.0 && p[1] >= 0.0 && p[0] < (w - 1) as f32 - 0.01 && p[1] < (h - 1) as f32 - 0.01
    });
    if inside {
        let grid = Grid {
            origin,
            dx,
            dy,
            size,
        };
        sample_inside(image.data(), w, grid, out);
    } else {
        for i in 0..size {
            let row = &mut out[i * size..(i + 1) * size];
            let start = [origin[0] + i as f32 * dy[0], origin[1] + i as f32 * dy[1]];
            for (j, o) in row.iter_mut().enumerate() {
                let x = start[0] + j as f32 * dx[0];
                let y = start[1] + j as f32 * dx[1];
                *o = image.sample_clamped(x, y);
            }
        }
    }
}

/// A square grid of sample positions `origin + j·dx + i·dy` (row i, column j, both below `size`),
/// in image pixels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub origin: [f32; 2],
    pub dx: [f32; 2],
    pub dy: [f32; 2],
    pub size: usize,
}

impl Grid {
    /// The position of row `i`'s first sample.
    fn row_start(&self, i: usize) -> (f32, f32) {
        let (o, d) = (self.origin, self.dy);
        (o[0] + i as f32 * d[0], o[1] + i as f32 * d[1])
    }
}

/// Bilinear samples of an `size`×`size` grid `origin + j·dx + i·dy` (row i, column j) that lies
/// inside `[0, W−1) × [0, H−1)`: the caller checked the four corners with a margin, and every
/// sample is a convex combination of them. The fast path of [`sample_patch`] and of Baumberg's
/// window.
pub(crate) fn sample_inside(data: &[f32], w: usize, grid: Grid, out: &mut [f32]) {
    // The largest top-left index whose 2×2 neighbourhood is in bounds; clamping to it costs one
    // integer min per sample and keeps the loads safe whatever the rounding.
    assert!(
        w >= 2 && data.len() >= 2 * w,
        "sample_inside needs an image of at least 2×2"
    );
    assert!(
        out.len() >= grid.size * grid.size,
        "sample_inside: output too short"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() && data.len() <= i32::MAX as usize {
        // SAFETY: the CPU has AVX2; the image is indexable by i32 (checked above).
        unsafe { sample_inside_avx2(data, w, grid, out) };
        return;
    }
    sample_rows_scalar(data, w, grid, out);
}

/// Row `i`'s sample positions start at `origin + i·dy` and advance by `dx` by repeated addition;
/// both versions of [`sample_inside`] compute them this way, so they read the same positions.
fn sample_rows_scalar(data: &[f32], w: usize, grid: Grid, out: &mut [f32]) {
    let size = grid.size;
    let last = data.len() - (w + 2);
    for i in 0..size {
        let row = &mut out[i * size..(i + 1) * size];
        let (x, y) = grid.row_start(i);
        sample_run(data, w, last, x, y, grid.dx, row);
    }
}

/// Bilinear samples along one run of positions `(x, y), (x, y) + dx, …`, one per element of `out`.
#[inline(always)]
fn sample_run(
    data: &[f32],
    w: usize,
    last: usize,
    mut x: f32,
    mut y: f32,
    dx: [f32; 2],
    out: &mut [f32],
) {
    let stride = w as i32;
    for o in out.iter_mut() {
        // SAFETY: the caller guarantees 0 ≤ x < W − 1 and 0 ≤ y < H − 1 (finite, far inside
        // i32), so the conversion is exact truncation, i.e. floor.
        let (x0, y0): (i32, i32) = unsafe { (x.to_int_unchecked(), y.to_int_unchecked()) };
        let (tx, ty) = (x - x0 as f32, y - y0 as f32);
        let p = ((y0 * stride + x0) as usize).min(last);
        // SAFETY: p ≤ last = len − w − 2, so p + w + 1 < len.
        let (a, b, c, d) = unsafe {
            (
                *data.get_unchecked(p),
                *data.get_unchecked(p + 1),
                *data.get_unchecked(p + w),
                *data.get_unchecked(p + w + 1),
            )
        };
        let top = a + tx * (b - a);
        let bottom = c + tx * (d - c);
        *o = top + ty * (bottom - top);
        x += dx[0];
        y += dx[1];
    }
}

/// [`sample_inside`] eight samples at a time with AVX2 gathers: the same positions (the scalar
/// additions, buffered), the same truncation, clamp and arithmetic (no fused multiply-adds), so
/// the same bits as the scalar loop.
///
/// # Safety
/// The CPU must support AVX2, `data.len()` must fit in an i32, and the arguments must satisfy
/// [`sample_inside`]'s assertions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sample_inside_avx2(data: &[f32], w: usize, grid: Grid, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let size = grid.size;
    let last = data.len() - (w + 2);
    let stride = _mm256_set1_epi32(w as i32);
    let last_v = _mm256_set1_epi32(last as i32);
    let base = data.as_ptr();
    for i in 0..size {
        let row = &mut out[i * size..(i + 1) * size];
        let (mut x, mut y) = grid.row_start(i);
        let mut chunks = row.chunks_exact_mut(8);
        for chunk in &mut chunks {
            let (mut xs, mut ys) = ([0f32; 8], [0f32; 8]);
            for k in 0..8 {
                xs[k] = x;
                ys[k] = y;
                x += grid.dx[0];
                y += grid.dx[1];
            }
            let vx = _mm256_loadu_ps(xs.as_ptr());
            let vy = _mm256_loadu_ps(ys.as_ptr());
            // Positions are ≥ 0, so truncation is floor, as in the scalar loop.
            let ix = _mm256_cvttps_epi32(vx);
            let iy = _mm256_cvttps_epi32(vy);
            let tx = _mm256_sub_ps(vx, _mm256_cvtepi32_ps(ix));
            let ty = _mm256_sub_ps(vy, _mm256_cvtepi32_ps(iy));
            // The scalar loop clamps `p as usize` to `last`: an unsigned min does the same for
            // every i32 (a negative p would wrap above `last` in both).
            let p = _mm256_add_epi32(_mm256_mullo_epi32(iy, stride), ix);
            let p = _mm256_min_epu32(p, last_v);
            // Each sample's two horizontal neighbours are adjacent: fetch them as one 64-bit
            // value (four samples per gather), then split the pairs into a, b (and c, d).
            // SAFETY: every index is ≤ last = len − w − 2, so the reads up to p + w + 1 are in
            // bounds.
            let lo = _mm256_castsi256_si128(p);
            let hi = _mm256_extracti128_si256::<1>(p);
            let top0 = _mm256_castsi256_ps(_mm256_i32gather_epi64::<4>(base as *const i64, lo));
            let top1 = _mm256_castsi256_ps(_mm256_i32gather_epi64::<4>(base as *const i64, hi));
            let row2 = base.add(w) as *const i64;
            let bot0 = _mm256_castsi256_ps(_mm256_i32gather_epi64::<4>(row2, lo));
            let bot1 = _mm256_castsi256_ps(_mm256_i32gather_epi64::<4>(row2, hi));
            // [a0 b0 a1 b1 | a2 b2 a3 b3] and [a4 b4 a5 b5 | a6 b6 a7 b7] → evens and odds in
            // the order 0 1 4 5 | 2 3 6 7, then lanes put back in order.
            let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
            let split = |u: __m256, v: __m256| {
                let even = _mm256_shuffle_ps::<0b10_00_10_00>(u, v);
                let odd = _mm256_shuffle_ps::<0b11_01_11_01>(u, v);
                (
                    _mm256_permutevar8x32_ps(even, order),
                    _mm256_permutevar8x32_ps(odd, order),
                )
            };
            let (a, b) = split(top0, top1);
            let (c, d) = split(bot0, bot1);
            let top = _mm256_add_ps(a, _mm256_mul_ps(tx, _mm256_sub_ps(b, a)));
            let bottom = _mm256_add_ps(c, _mm256_mul_ps(tx, _mm256_sub_ps(d, c)));
            let v = _mm256_add_ps(top, _mm256_mul_ps(ty, _mm256_sub_ps(bottom, top)));
            _mm256_storeu_ps(chunk.as_mut_ptr(), v);
        }
        sample_run(data, w, last, x, y, grid.dx, chunks.into_remainder());
    }
}

/// Samples the patch of `laf` (input-image pixels) from the suitable image of the scale space.
pub fn sample_from_space(space: &ScaleSpace, laf: &Laf, spec: &PatchSpec, out: &mut [f32]) {
    let step = 2.0 * laf.scale() / spec.size as f32;
    let level = space.sampling_level(spec.blur_per_step * step);
    sample_patch(
        level.image,
        &laf.in_level(level.pixel_distance),
        spec.size,
        out,
    );
}

/// Samples the patches of many frames, in parallel; returns N·size² values, patch by patch in the
/// order of `lafs`.
pub fn extract_patches(space: &ScaleSpace, lafs: &[Laf], spec: &PatchSpec) -> Vec<f32> {
    let pixels = spec.pixels();
    let mut out = vec![0f32; lafs.len() * pixels];
    out.par_chunks_mut(pixels)
        .zip(lafs.par_iter())
        .for_each(|(patch, laf)| sample_from_space(space, laf, spec, patch));
    out
}

/// Patches per network call on the CPU: large enough to keep both cores busy (the engine splits a
/// batch into chunks of 8), small enough to bound the patch buffer (16 MiB).
pub const STAGE_BATCH: usize = 4096;

/// Runs `net` on the 32×32 network patches ([`NET_PATCH`]) of `lafs`, [`STAGE_BATCH`] frames at a
/// time, and returns its per-patch results in order.
pub fn on_patches<T>(space: &ScaleSpace, lafs: &[Laf], net: impl Fn(&[f32]) -> Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(lafs.len());
    for chunk in lafs.chunks(STAGE_BATCH) {
        out.extend(net(&extract_patches(space, chunk, &NET_PATCH)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_checks_from_kornia() {
        // A 5×5 image with LAF [[2, 0, 2], [0, 2, 2]] and PS 5, and a 4×4 image with LAF
        // [[1.5, 0, 1.5], [0, 1.5, 1.5]] and PS 4, both return the image itself.
        let img = GrayImage::from_fn(5, 5, |x, y| (y * 5 + x) as f32);
        let mut out = vec![0.0; 25];
        sample_patch(&img, &Laf::circle(2.0, 2.0, 2.0), 5, &mut out);
        for (a, b) in out.iter().zip(img.data()) {
            assert!((a - b).abs() < 1e-5, "{out:?}");
        }
        let img = GrayImage::from_fn(4, 4, |x, y| (y * 4 + x) as f32 * 1.5);
        let mut out = vec![0.0; 16];
        sample_patch(&img, &Laf::circle(1.5, 1.5, 1.5), 4, &mut out);
        for (a, b) in out.iter().zip(img.data()) {
            assert!((a - b).abs() < 1e-5, "{out:?}");
        }
    }

    #[test]
    fn kornia_affnet_toy_patch_when_shared_data_is_present() {
        // golden.json lists the non-zero values of the toy patch resampled with this convention.
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/weights/golden.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("SKIP: {} not found", path.display());
            return;
        };
        let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
        let toy = &golden["kornia_affnet_toy"];
        let image = GrayImage::from_fn(32, 32, |x, y| {
            if (15..=16).contains(&y) && (9..=22).contains(&x) {
                1.0
            } else {
                0.0
            }
        });
        let mut patch = vec![0.0; 32 * 32];
        sample_patch(&image, &Laf::circle(16.0, 16.0, 20.0), 32, &mut patch);
        let expected = find_nonzero_values(toy).expect("golden patch values");
        let mut checked = 0;
        for (index, value) in expected {
            assert!(
                (patch[index] - value).abs() < 1e-5,
                "pixel {index}: {} vs {value}",
                patch[index]
            );
            checked += 1;
        }
        let nonzero = patch.iter().filter(|v| v.abs() > 1e-7).count();
        assert_eq!(nonzero, checked, "the patch has other non-zero values");
        assert!(checked > 20);
    }

    /// Finds the list of (flat index, value) of the toy patch in golden.json, whatever the exact
    /// field layout: entries with (row, col, value) or (index, value).
    fn find_nonzero_values(toy: &serde_json::Value) -> Option<Vec<(usize, f32)>> {
        let sampling = toy.get("patch_sampling")?;
        let list = sampling
            .as_object()?
            .values()
            .find_map(|v| v.as_array().filter(|a| a.len() > 20))?;
        list.iter()
            .map(|entry| {
                if let Some(o) = entry.as_object() {
                    let r = o.get("row").or(o.get("y"))?.as_u64()? as usize;
                    let c = o.get("col").or(o.get("x"))?.as_u64()? as usize;
                    let v = o.get("value").or(o.get("v"))?.as_f64()? as f32;
                    Some((r * 32 + c, v))
                } else {
                    let a = entry.as_array()?;
                    match a.len() {
                        3 => Some((
                            a[0].as_u64()? as usize * 32 + a[1].as_u64()? as usize,
                            a[2].as_f64()? as f32,
                        )),
                        2 => Some((a[0].as_u64()? as usize, a[1].as_f64()? as f32)),
                        _ => None,
                    }
                }
            })
            .collect()
    }

    #[test]
    fn sample_inside_gives_the_same_bits_with_and_without_avx2() {
        // Rotated, sheared and scaled grids of the sizes the stages use (Baumberg's 19, the
        // networks' 32, SIFT's 41) and sizes around the 8-wide chunks, reaching to the margin
        // of the image's last row and column.
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(7);
        let (w, h) = (97, 61);
        let data: Vec<f32> = (0..w * h).map(|_| rng.random_range(0.0..255.0)).collect();
        let mut compared = 0;
        for &size in &[1, 5, 7, 8, 9, 16, 19, 32, 41] {
            for _ in 0..40 {
                let span = rng.random_range(0.5..(h as f32 - 1.2));
                let angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
                let shear: f32 = rng.random_range(-0.3..0.3);
                let step = span / size as f32;
                let dx = [step * angle.cos(), step * angle.sin()];
                let dy = [step * (shear - angle.sin()), step * angle.cos()];
                let last = (size - 1) as f32;
                let xs = [0.0, last * dx[0], last * dy[0], last * (dx[0] + dy[0])];
                let ys = [0.0, last * dx[1], last * dy[1], last * (dx[1] + dy[1])];
                let lo = |v: [f32; 4]| v.iter().cloned().fold(f32::INFINITY, f32::min);
                let hi = |v: [f32; 4]| v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let (room_x, room_y) = (
                    (w - 1) as f32 - 0.02 - (hi(xs) - lo(xs)),
                    (h - 1) as f32 - 0.02 - (hi(ys) - lo(ys)),
                );
                if room_x <= 0.0 || room_y <= 0.0 {
                    continue;
                }
                let origin = [
                    -lo(xs) + rng.random_range(0.0..room_x),
                    -lo(ys) + rng.random_range(0.0..room_y),
                ];
                let mut fast = vec![0.0; size * size];
                let mut plain = vec![0.0; size * size];
                let grid = Grid {
                    origin,
                    dx,
                    dy,
                    size,
                };
                sample_inside(&data, w, grid, &mut fast);
                sample_rows_scalar(&data, w, grid, &mut plain);
                let (fast, plain): (Vec<u32>, Vec<u32>) = (
                    fast.iter().map(|v| v.to_bits()).collect(),
                    plain.iter().map(|v| v.to_bits()).collect(),
                );
                assert_eq!(
                    fast, plain,
                    "size {size}, origin {origin:?}, dx {dx:?}, dy {dy:?}"
                );
                compared += 1;
            }
        }
        assert!(compared > 300, "only {compared} grids fitted the image");
    }

    #[test]
    fn patch_follows_the_frame_orientation() {
        // An image that increases to the right; a frame rotated by 90° looks down the image, so
        // the patch increases downwards instead.
        let img = GrayImage::from_fn(64, 64, |x, _| x as f32);
        let laf = Laf::circle(32.0, 32.0, 10.0).rotated(std::f32::consts::FRAC_PI_2);
        let mut out = vec![0.0; 9];
        sample_patch(&img, &laf, 3, &mut out);
        // Rows of the patch follow the frame's y axis, which now points to image −x.
        assert!(out[0] > out[6], "{out:?}");
        assert!((out[0] - out[2]).abs() < 1e-3, "{out:?}");
    }
}
