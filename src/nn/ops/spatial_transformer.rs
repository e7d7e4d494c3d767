//! The spatial transformer: batched affine grid + bilinear sampling, forward, and backward to the
//! source patches and to the affine matrices.
//!
//! # Convention (normalised coordinates, as PyTorch `affine_grid` + `grid_sample` with
//! `align_corners=False` and `padding_mode="border"`, i.e. wbs's `patch::sample_patch`)
//! Item `k` has an affine map `θ = [M | t]` (2×3, [`Affine`]). Output pixel `(i, j)` (row `i`,
//! column `j`) of an `out_h × out_w` patch sits at `u = ((2j+1)/out_w − 1, (2i+1)/out_h − 1)`
//! and reads the source at `g = M·u + t`, both in `[-1, 1]²` coordinates of their own patch. The
//! source pixel position is `x = ((g_x + 1)·in_w − 1)/2`, `y = ((g_y + 1)·in_h − 1)/2` (pixel
//! centres at integers), clamped to `[0, in_w − 1] × [0, in_h − 1]` (border replication), and
//! read bilinearly. `θ = [I | 0]` with equal sizes is the identity.
//!
//! This is exactly `patch::sample_patch` with the LAF `A = diag((in_w − 1)/2, (in_h − 1)/2)·M`,
//! `c = ((t_x + 1)(in_w − 1)/2, (t_y + 1)(in_h − 1)/2)` ([`affine_to_laf`]; the test checks it), so
//! a network trained on these patches sees the geometry it will see at inference.
//!
//! Gradients are those of the sampled values w.r.t. the sample position, which are 0 along a
//! clamped axis (as PyTorch's border mode); at integer positions the bilinear interpolant has a
//! kink and the backward pass takes the right-hand derivative.
//!
//! # The recipe's "warp a 64×64 patch, then centre-crop 32×32"
//! Cropping the central `c × c` of an `S × S` output (S − c even) samples the same points as a
//! `c × c` output with `M·(c/S)`: pixel `i + (S − c)/2` of the big grid is at
//! `(2i + 1)/S − c/S = (c/S)·((2i + 1)/c − 1)`. [`crop`] does that, so the 64×64 intermediate is
//! never materialised. [`compose`] puts an AffNet shape inside an augmentation frame.

use rayon::prelude::*;

use crate::laf::Laf;

/// A 2×3 affine map in normalised coordinates: rows `[m00, m01, t0]` and `[m10, m11, t1]`.
pub type Affine = [[f32; 3]; 2];

/// The identity map.
pub const IDENTITY: Affine = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];

/// Source and output sizes of a batched warp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarpSize {
    /// Source height.
    pub in_h: usize,
    /// Source width.
    pub in_w: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

impl WarpSize {
    /// Square source and output.
    pub fn square(input: usize, output: usize) -> Self {
        WarpSize {
            in_h: input,
            in_w: input,
            out_h: output,
            out_w: output,
        }
    }
    fn in_len(&self) -> usize {
        self.in_h * self.in_w
    }
    fn out_len(&self) -> usize {
        self.out_h * self.out_w
    }
}

/// `M·(crop)`: the map that samples the central `crop·out` part of what `θ` samples (see the
/// module docs; `crop = c/S`).
pub fn crop(theta: &Affine, crop: f32) -> Affine {
    [
        [theta[0][0] * crop, theta[0][1] * crop, theta[0][2]],
        [theta[1][0] * crop, theta[1][1] * crop, theta[1][2]],
    ]
}

/// `[F·A·s | t_F]`: a shape `A` (2×2, in the frame's own coordinates) placed inside the frame
/// `F = [M_F | t_F]` and scaled by `s`. For the recipe, `F` is the augmentation, `A` AffNet's
/// output and `s` the crop factor 32/64.
pub fn compose(frame: &Affine, a: &[[f32; 2]; 2], s: f32) -> Affine {
    let m = |r: usize, c: usize| {
        (frame[r][0] as f64 * a[0][c] as f64 + frame[r][1] as f64 * a[1][c] as f64) * s as f64
    };
    [
        [m(0, 0) as f32, m(0, 1) as f32, frame[0][2]],
        [m(1, 0) as f32, m(1, 1) as f32, frame[1][2]],
    ]
}

/// `dL/dA` from `dL/dθ` of `θ = compose(frame, A, s)`: `s·M_Fᵀ·dM`.
pub fn compose_backward(frame: &Affine, d_theta: &Affine, s: f32) -> [[f32; 2]; 2] {
    let mut d = [[0.0f32; 2]; 2];
    for (k, row) in d.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = ((frame[0][k] as f64 * d_theta[0][c] as f64
                + frame[1][k] as f64 * d_theta[1][c] as f64)
                * s as f64) as f32;
        }
    }
    d
}

/// The LAF (in source pixels) with which `patch::sample_patch` samples what `θ` samples from an
/// `in_w × in_h` source into a square output.
pub fn affine_to_laf(theta: &Affine, in_w: usize, in_h: usize) -> Laf {
    let (hx, hy) = ((in_w as f32 - 1.0) / 2.0, (in_h as f32 - 1.0) / 2.0);
    Laf {
        a: [
            [theta[0][0] * hx, theta[0][1] * hx],
            [theta[1][0] * hy, theta[1][1] * hy],
        ],
        c: [(theta[0][2] + 1.0) * hx, (theta[1][2] + 1.0) * hy],
    }
}

/// Per-pixel sampling data shared by forward and backward.
struct Sample {
    /// Top-left corner and the other column/row (clamped), and the fractions.
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
    fx: f32,
    fy: f32,
    /// Whether x / y were clamped (derivative 0 along that axis).
    clamped_x: bool,
    clamped_y: bool,
}

#[inline]
fn locate(g: f32, size: usize) -> (usize, usize, f32, bool) {
    let p = ((g + 1.0) * size as f32 - 1.0) * 0.5;
    let max = (size - 1) as f32;
    let clamped = !(0.0..=max).contains(&p);
    let p = p.clamp(0.0, max);
    let p0 = (p as usize).min(size - 1);
    (p0, (p0 + 1).min(size - 1), p - p0 as f32, clamped)
}

#[inline]
fn sample_at(theta: &Affine, size: &WarpSize, u: f32, v: f32) -> Sample {
    let gx = theta[0][0] * u + theta[0][1] * v + theta[0][2];
    let gy = theta[1][0] * u + theta[1][1] * v + theta[1][2];
    let (x0, x1, fx, clamped_x) = locate(gx, size.in_w);
    let (y0, y1, fy, clamped_y) = locate(gy, size.in_h);
    Sample {
        x0,
        y0,
        x1,
        y1,
        fx,
        fy,
        clamped_x,
        clamped_y,
    }
}

/// The normalised coordinate of pixel `i` of `n`: `(2i + 1)/n − 1`.
#[inline]
fn grid(i: usize, n: usize) -> f32 {
    (2 * i + 1) as f32 / n as f32 - 1.0
}

/// Samples `theta.len()` outputs of `out_h × out_w` from as many sources of `in_h × in_w`
/// (row-major, back to back).
///
/// # Panics
/// If a buffer length does not match, or a source side is 0.
pub fn warp_forward(src: &[f32], theta: &[Affine], size: WarpSize, out: &mut [f32]) {
    assert!(size.in_h > 0 && size.in_w > 0, "empty source");
    assert_eq!(src.len(), theta.len() * size.in_len(), "warp source length");
    assert_eq!(
        out.len(),
        theta.len() * size.out_len(),
        "warp output length"
    );
    if size.out_len() == 0 {
        return;
    }
    out.par_chunks_mut(size.out_len())
        .zip(src.par_chunks(size.in_len()))
        .zip(theta.par_iter())
        .for_each(|((o, s), th)| {
            for i in 0..size.out_h {
                let v = grid(i, size.out_h);
                for j in 0..size.out_w {
                    let p = sample_at(th, &size, grid(j, size.out_w), v);
                    let w = size.in_w;
                    let top = s[p.y0 * w + p.x0] + p.fx * (s[p.y0 * w + p.x1] - s[p.y0 * w + p.x0]);
                    let bottom =
                        s[p.y1 * w + p.x0] + p.fx * (s[p.y1 * w + p.x1] - s[p.y1 * w + p.x0]);
                    o[i * size.out_w + j] = top + p.fy * (bottom - top);
                }
            }
        });
}

/// Gradients of [`warp_forward`] given `d_out`: w.r.t. the maps (overwritten) and, if asked,
/// the sources (overwritten).
///
/// # Panics
/// If a buffer length does not match.
pub fn warp_backward(
    src: &[f32],
    theta: &[Affine],
    size: WarpSize,
    d_out: &[f32],
    d_src: Option<&mut [f32]>,
    d_theta: &mut [Affine],
) {
    assert_eq!(src.len(), theta.len() * size.in_len(), "warp source length");
    assert_eq!(
        d_out.len(),
        theta.len() * size.out_len(),
        "warp output gradient length"
    );
    assert_eq!(d_theta.len(), theta.len(), "warp map gradient length");
    let d_src_items: Vec<&mut [f32]> = match d_src {
        Some(d) => {
            assert_eq!(d.len(), src.len(), "warp source gradient length");
            d.chunks_mut(size.in_len().max(1)).collect()
        }
        None => theta.iter().map(|_| Default::default()).collect(),
    };
    d_theta
        .par_iter_mut()
        .zip(d_src_items.into_par_iter())
        .enumerate()
        .for_each(|(k, (dth, ds))| {
            let s = &src[k * size.in_len()..(k + 1) * size.in_len()];
            let dout = &d_out[k * size.out_len()..(k + 1) * size.out_len()];
            let th = &theta[k];
            ds.fill(0.0);
            let w = size.in_w;
            let (sx, sy) = (size.in_w as f32 * 0.5, size.in_h as f32 * 0.5);
            let mut acc = [[0.0f64; 3]; 2];
            for i in 0..size.out_h {
                let v = grid(i, size.out_h);
                for j in 0..size.out_w {
                    let u = grid(j, size.out_w);
                    let dv = dout[i * size.out_w + j];
                    if dv == 0.0 {
                        continue;
                    }
                    let p = sample_at(th, &size, u, v);
                    let (v00, v01) = (s[p.y0 * w + p.x0], s[p.y0 * w + p.x1]);
                    let (v10, v11) = (s[p.y1 * w + p.x0], s[p.y1 * w + p.x1]);
                    let dgx = if p.clamped_x {
                        0.0
                    } else {
                        dv * ((1.0 - p.fy) * (v01 - v00) + p.fy * (v11 - v10)) * sx
                    };
                    let dgy = if p.clamped_y {
                        0.0
                    } else {
                        dv * ((1.0 - p.fx) * (v10 - v00) + p.fx * (v11 - v01)) * sy
                    };
                    for (row, dg) in acc.iter_mut().zip([dgx, dgy]) {
                        row[0] += (dg * u) as f64;
                        row[1] += (dg * v) as f64;
                        row[2] += dg as f64;
                    }
                    if !ds.is_empty() {
                        ds[p.y0 * w + p.x0] += dv * (1.0 - p.fx) * (1.0 - p.fy);
                        ds[p.y0 * w + p.x1] += dv * p.fx * (1.0 - p.fy);
                        ds[p.y1 * w + p.x0] += dv * (1.0 - p.fx) * p.fy;
                        ds[p.y1 * w + p.x1] += dv * p.fx * p.fy;
                    }
                }
            }
            for r in 0..2 {
                for c in 0..3 {
                    dth[r][c] = acc[r][c] as f32;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::GrayImage;
    use crate::nn::gradcheck::{check_gradient, random_vec};

    fn random_affines(n: usize, seed: u64) -> Vec<Affine> {
        let v = random_vec(n * 6, seed, 1.0);
        v.chunks(6)
            .map(|c| {
                [
                    [0.8 + 0.3 * c[0], 0.4 * c[1], 0.2 * c[2]],
                    [0.4 * c[3], 0.7 + 0.3 * c[4], 0.2 * c[5]],
                ]
            })
            .collect()
    }

    #[test]
    fn identity_and_patch_sampler_agree() {
        // Identity at equal sizes returns the source.
        let src = random_vec(2 * 7 * 9, 1, 1.0);
        let size = WarpSize {
            in_h: 7,
            in_w: 9,
            out_h: 7,
            out_w: 9,
        };
        let mut out = vec![0.0; src.len()];
        warp_forward(&src, &[IDENTITY; 2], size, &mut out);
        for (a, b) in out.iter().zip(&src) {
            assert!((a - b).abs() < 1e-6);
        }
        // Any map, including ones reaching outside (border clamp), equals sample_patch with
        // the equivalent LAF.
        let (s, o) = (23, 11);
        let src = random_vec(s * s, 2, 100.0);
        let image = GrayImage::from_vec(s, s, src.clone());
        let mut thetas = random_affines(20, 3);
        thetas.push([[1.6, 0.3, 0.4], [-0.2, 1.4, -0.3]]);
        for th in thetas {
            let mut a = vec![0.0; o * o];
            warp_forward(&src, &[th], WarpSize::square(s, o), &mut a);
            let mut b = vec![0.0; o * o];
            crate::patch::sample_patch(&image, &affine_to_laf(&th, s, s), o, &mut b);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-3, "{x} vs {y} for {th:?}");
            }
        }
    }

    #[test]
    fn crop_equals_centre_of_the_full_warp() {
        let (s, full, c) = (64, 64, 32);
        let src = random_vec(s * s, 4, 1.0);
        let th = random_affines(1, 5)[0];
        let mut big = vec![0.0; full * full];
        warp_forward(&src, &[th], WarpSize::square(s, full), &mut big);
        let mut small = vec![0.0; c * c];
        warp_forward(&src, &[crop(&th, 0.5)], WarpSize::square(s, c), &mut small);
        let off = (full - c) / 2;
        for i in 0..c {
            for j in 0..c {
                let (a, b) = (small[i * c + j], big[(i + off) * full + j + off]);
                assert!((a - b).abs() < 1e-5, "({i}, {j}): {a} vs {b}");
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let size = WarpSize {
            in_h: 13,
            in_w: 11,
            out_h: 7,
            out_w: 9,
        };
        let n = 3;
        // A smooth source, so that the bilinear kinks at integer positions matter little.
        let src: Vec<f32> = (0..n * 143)
            .map(|k| {
                let (i, p) = (k / 143, k % 143);
                let (y, x) = ((p / 11) as f32, (p % 11) as f32);
                (0.3 * x + 0.2 * y + i as f32).sin() + 0.1 * (x * y * 0.05).cos()
            })
            .collect();
        // One map reaching outside the source exercises the clamped (zero-derivative) pixels.
        let mut thetas = random_affines(n, 6);
        thetas[2] = [[1.3, 0.2, 0.3], [-0.1, 1.2, 0.1]];
        let r = random_vec(n * size.out_len(), 7, 1.0);
        let loss = |s: &[f32], th: &[Affine]| -> f64 {
            let mut o = vec![0.0; n * size.out_len()];
            warp_forward(s, th, size, &mut o);
            o.iter().zip(&r).map(|(o, r)| (*o as f64) * *r as f64).sum()
        };
        let mut d_src = vec![0.0; src.len()];
        let mut d_th = vec![[[0.0; 3]; 2]; n];
        warp_backward(&src, &thetas, size, &r, Some(&mut d_src), &mut d_th);
        check_gradient(|s| loss(s, &thetas), &src, &d_src, 1e-2, 1e-3).assert_ok("warp d_src");
        let flat: Vec<f32> = thetas
            .iter()
            .flat_map(|t| t.iter().flatten().copied())
            .collect();
        let dflat: Vec<f32> = d_th
            .iter()
            .flat_map(|t| t.iter().flatten().copied())
            .collect();
        let unflat = |v: &[f32]| -> Vec<Affine> {
            v.chunks(6)
                .map(|c| [[c[0], c[1], c[2]], [c[3], c[4], c[5]]])
                .collect()
        };
        check_gradient(|v| loss(&src, &unflat(v)), &flat, &dflat, 1e-4, 2e-2).assert_ok("warp dθ");
    }

    #[test]
    fn compose_backward_matches_finite_differences() {
        let frame = random_affines(1, 8)[0];
        let a = random_vec(4, 9, 1.0);
        let r = random_vec(6, 10, 1.0);
        let loss = |a: &[f32]| -> f64 {
            let th = compose(&frame, &[[a[0], a[1]], [a[2], a[3]]], 0.5);
            th.iter()
                .flatten()
                .zip(&r)
                .map(|(t, r)| (*t as f64) * *r as f64)
                .sum()
        };
        let d = compose_backward(&frame, &[[r[0], r[1], r[2]], [r[3], r[4], r[5]]], 0.5);
        let d = [d[0][0], d[0][1], d[1][0], d[1][1]];
        check_gradient(loss, &a, &d, 1e-3, 1e-4).assert_ok("compose");
    }
}
