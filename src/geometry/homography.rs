//! Homography estimation: the 4-point minimal solver with its sample checks, the normalised DLT
//! least-squares fit, and the per-correspondence errors RANSAC scores with.
//!
//! All errors here are *squared* pixel distances (thresholds are compared as θ²), except the
//! public [`transfer_error`], which is in pixels.

use nalgebra::{Matrix3, Vector3};

use super::linalg::{matrix_from_row_major, smallest_eigenvector, Matrix9};
use super::normalise::{hartley_of, Similarity};

/// Orientation (twice the signed area) of the triangle a, b, c: `det[a b c]` in homogeneous
/// coordinates with w = 1.
fn orientation(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

fn homogeneous(p: [f64; 2]) -> Vector3<f64> {
    Vector3::new(p[0], p[1], 1.0)
}

/// The homography through four correspondences, or `None` when the sample is unusable.
///
/// The sample is rejected when three of its points are (nearly) collinear in either image, or when
/// the orientation of any triangle of points differs between the images. A homography induced by
/// a plane seen from the same side by both cameras keeps every triangle's orientation, so an
/// orientation flip means at least one mismatch: checking it before solving skips the scoring of a
/// model that cannot be right (the `all_Hori_valid` test of pydegensac, as in OpenCV's USAC).
///
/// Solving uses the projective-basis construction: with `M = [p1 p2 p3]` and `μᵢ` the determinant
/// of `M` with column i replaced by `p4`, `H ∝ M′·diag(μ′ᵢ/μᵢ)·adj(M)`. The four triangle
/// orientations of the check are exactly `det M` and the `μᵢ`, so the check is free, and the whole
/// solve is a few dozen flops instead of an 8×9 null-space computation.
pub(crate) fn minimal_homography(p: &[[f64; 2]; 4], q: &[[f64; 2]; 4]) -> Option<Matrix3<f64>> {
    let dets = |s: &[[f64; 2]; 4]| {
        [
            orientation(s[0], s[1], s[2]),
            orientation(s[3], s[1], s[2]),
            orientation(s[0], s[3], s[2]),
            orientation(s[0], s[1], s[3]),
        ]
    };
    let spread2 = |s: &[[f64; 2]; 4]| {
        s.iter()
            .map(|v| (v[0] - s[0][0]).powi(2) + (v[1] - s[0][1]).powi(2))
            .fold(0.0, f64::max)
    };
    let (dp, dq) = (dets(p), dets(q));
    let (tp, tq) = (1e-10 * spread2(p), 1e-10 * spread2(q));
    for (a, b) in dp.iter().zip(dq.iter()) {
        // NaN fails these comparisons too, so non-finite input is rejected here.
        if !(a.abs() > tp && b.abs() > tq && a * b > 0.0) {
            return None;
        }
    }
    let rows_of_adj = [
        homogeneous(p[1]).cross(&homogeneous(p[2])),
        homogeneous(p[2]).cross(&homogeneous(p[0])),
        homogeneous(p[0]).cross(&homogeneous(p[1])),
    ];
    let mut h = Matrix3::zeros();
    for i in 0..3 {
        let w = dq[i + 1] / dp[i + 1];
        h += homogeneous(q[i]) * rows_of_adj[i].transpose() * w;
    }
    h.iter().all(|v| v.is_finite()).then_some(h)
}

/// Least-squares homography (normalised DLT) through the correspondences `indices` of `p1`, `p2`.
///
/// Each correspondence contributes the rows `[q, 0, −u·q]` and `[0, q, −v·q]` (q = (x, y, 1)); the
/// normal matrix AᵀA therefore has the block form `[[S, 0, −Su], [0, S, −Sv], [−Su, −Sv, Suv]]`
/// with `S = Σqqᵀ`, `Su = Σu·qqᵀ`, `Sv = Σv·qqᵀ`, `Suv = Σ(u²+v²)·qqᵀ`, which we accumulate
/// directly: 30 flops per point instead of 90, and this runs on every LO step.
pub(crate) fn fit_homography(
    p1: &[[f64; 2]],
    p2: &[[f64; 2]],
    indices: &[usize],
) -> Option<Matrix3<f64>> {
    if indices.len() < 4 {
        return None;
    }
    let t1 = hartley_of(p1, indices)?;
    let t2 = hartley_of(p2, indices)?;
    // Upper triangles of the four 3×3 blocks, entries (xx, xy, x, yy, y, 1).
    let mut s = [0.0f64; 6];
    let mut su = [0.0f64; 6];
    let mut sv = [0.0f64; 6];
    let mut suv = [0.0f64; 6];
    for &i in indices {
        let [x, y] = t1.apply(p1[i]);
        let [u, v] = t2.apply(p2[i]);
        let q = [x * x, x * y, x, y * y, y, 1.0];
        let r2 = u * u + v * v;
        for k in 0..6 {
            s[k] += q[k];
            su[k] += u * q[k];
            sv[k] += v * q[k];
            suv[k] += r2 * q[k];
        }
    }
    let block = |b: &[f64; 6]| Matrix3::new(b[0], b[1], b[2], b[1], b[3], b[4], b[2], b[4], b[5]);
    let (s, su, sv, suv) = (block(&s), block(&su), block(&sv), block(&suv));
    let mut ata = Matrix9::zeros();
    ata.fixed_view_mut::<3, 3>(0, 0).copy_from(&s);
    ata.fixed_view_mut::<3, 3>(3, 3).copy_from(&s);
    ata.fixed_view_mut::<3, 3>(6, 6).copy_from(&suv);
    ata.fixed_view_mut::<3, 3>(0, 6).copy_from(&-su);
    ata.fixed_view_mut::<3, 3>(6, 0).copy_from(&-su);
    ata.fixed_view_mut::<3, 3>(3, 6).copy_from(&-sv);
    ata.fixed_view_mut::<3, 3>(6, 3).copy_from(&-sv);
    let h = smallest_eigenvector(&ata)?;
    let h = denormalise(&matrix_from_row_major(&h), &t1, &t2);
    h.iter().all(|v| v.is_finite()).then_some(h)
}

/// `H = T2⁻¹·Hn·T1`: a homography between normalised coordinates back to pixels.
pub(crate) fn denormalise(hn: &Matrix3<f64>, t1: &Similarity, t2: &Similarity) -> Matrix3<f64> {
    t2.inverse_matrix() * hn * t1.matrix()
}

/// pydegensac's near-singularity rejection, made coordinate-free: the local area scale of `h` at
/// the point `at` (the Jacobian determinant `det H / w³`) below 1e-2 means the model squashes the
/// region of the data to (nearly) a line or point: no real view of a plane does that, but
/// degenerate samples do. A point mapped to infinity (w = 0) is also rejected.
pub(crate) fn is_near_singular(h: &Matrix3<f64>, at: [f64; 2]) -> bool {
    let w = h[(2, 0)] * at[0] + h[(2, 1)] * at[1] + h[(2, 2)];
    let jacobian = h.determinant() / (w * w * w);
    !(jacobian.abs() >= 1e-2 && jacobian.is_finite())
}

/// Squared forward transfer error `‖p2 − H·p1‖²`, infinite when `p1` maps to infinity.
#[inline(always)]
pub(crate) fn forward_error2(h: &Matrix3<f64>, p1: [f64; 2], p2: [f64; 2]) -> f64 {
    let w = h[(2, 0)] * p1[0] + h[(2, 1)] * p1[1] + h[(2, 2)];
    if w == 0.0 {
        return f64::INFINITY;
    }
    let inv = 1.0 / w;
    let dx = (h[(0, 0)] * p1[0] + h[(0, 1)] * p1[1] + h[(0, 2)]) * inv - p2[0];
    let dy = (h[(1, 0)] * p1[0] + h[(1, 1)] * p1[1] + h[(1, 2)]) * inv - p2[1];
    dx * dx + dy * dy
}

/// Squared symmetric-max transfer error: the larger of the forward error in image 2 and the
/// backward error (through `H⁻¹`) in image 1.
#[inline(always)]
pub(crate) fn symmetric_max_error2(
    h: &Matrix3<f64>,
    h_inv: &Matrix3<f64>,
    p1: [f64; 2],
    p2: [f64; 2],
) -> f64 {
    forward_error2(h, p1, p2).max(forward_error2(h_inv, p2, p1))
}

/// Squared Sampson error of a homography: the first-order geometric distance of the point
/// (x1, y1, x2, y2) to the variety `x2 × H·x1 = 0` in the joint 4-D space, `rᵀ(JJᵀ)⁻¹r` with `r`
/// the two first algebraic residuals and `J` their Jacobian.
#[inline(always)]
pub(crate) fn sampson_error2(h: &Matrix3<f64>, p1: [f64; 2], p2: [f64; 2]) -> f64 {
    let [x, y] = p1;
    let [u, v] = p2;
    let a = h[(0, 0)] * x + h[(0, 1)] * y + h[(0, 2)];
    let b = h[(1, 0)] * x + h[(1, 1)] * y + h[(1, 2)];
    let c = h[(2, 0)] * x + h[(2, 1)] * y + h[(2, 2)];
    let r1 = v * c - b;
    let r2 = a - u * c;
    // Jacobian rows with respect to (x, y, u, v).
    let j1 = [v * h[(2, 0)] - h[(1, 0)], v * h[(2, 1)] - h[(1, 1)], 0.0, c];
    let j2 = [
        h[(0, 0)] - u * h[(2, 0)],
        h[(0, 1)] - u * h[(2, 1)],
        -c,
        0.0,
    ];
    let a11 = j1[0] * j1[0] + j1[1] * j1[1] + j1[3] * j1[3];
    let a12 = j1[0] * j2[0] + j1[1] * j2[1];
    let a22 = j2[0] * j2[0] + j2[1] * j2[1] + j2[2] * j2[2];
    let det = a11 * a22 - a12 * a12;
    if det.is_nan() || det <= 0.0 {
        return f64::INFINITY;
    }
    // rᵀ·(JJᵀ)⁻¹·r with the 2×2 inverse written out.
    (r1 * r1 * a22 - 2.0 * r1 * r2 * a12 + r2 * r2 * a11) / det
}

/// Scale `h` so that `H[(2,2)] = 1` when that entry is not (relatively) zero; otherwise to unit
/// Frobenius norm.
pub(crate) fn scale_homography(h: &Matrix3<f64>) -> Matrix3<f64> {
    let norm = h.norm();
    if h[(2, 2)].abs() > 1e-12 * norm {
        h / h[(2, 2)]
    } else if norm > 0.0 {
        h / norm
    } else {
        *h
    }
}

/// Normalised DLT homography through all correspondences (at least 4, all finite), mapping image 1
/// to image 2, scaled so that `H[(2,2)] = 1` when possible. `None` for fewer than 4 points,
/// mismatched lengths, non-finite coordinates or a degenerate configuration (all points identical).
pub fn homography_lsq(pts1: &[[f64; 2]], pts2: &[[f64; 2]]) -> Option<Matrix3<f64>> {
    if pts1.len() != pts2.len() || pts1.len() < 4 {
        return None;
    }
    if !pts1.iter().chain(pts2).flatten().all(|v| v.is_finite()) {
        return None;
    }
    let indices: Vec<usize> = (0..pts1.len()).collect();
    fit_homography(pts1, pts2, &indices).map(|h| scale_homography(&h))
}

/// Forward transfer error `‖p2 − H·p1‖` in pixels; `f64::INFINITY` when `p1` maps to infinity.
pub fn transfer_error(h: &Matrix3<f64>, p1: [f64; 2], p2: [f64; 2]) -> f64 {
    let e = forward_error2(h, p1, p2);
    if e.is_nan() {
        f64::INFINITY
    } else {
        e.sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::synthetic::{Scene, SceneRng};

    fn apply(h: &Matrix3<f64>, p: [f64; 2]) -> [f64; 2] {
        let v = h * Vector3::new(p[0], p[1], 1.0);
        [v.x / v.z, v.y / v.z]
    }

    /// Distance between two homographies up to scale, in the sense of the largest transfer
    /// disagreement over a grid covering the image.
    fn max_disagreement(a: &Matrix3<f64>, b: &Matrix3<f64>) -> f64 {
        let mut worst: f64 = 0.0;
        for i in 0..=8 {
            for j in 0..=6 {
                let p = [i as f64 * 100.0, j as f64 * 100.0];
                let (x, y) = (apply(a, p), apply(b, p));
                worst = worst.max((x[0] - y[0]).hypot(x[1] - y[1]));
            }
        }
        worst
    }

    #[test]
    fn minimal_and_least_squares_are_exact_on_noise_free_planes() {
        let mut rng = SceneRng::new(7);
        for _ in 0..20 {
            let scene = Scene::random(&mut rng);
            let (h_true, p1, p2) = scene.plane_points(&mut rng, 60);
            // Least squares through all points.
            let h = homography_lsq(&p1, &p2).expect("well-spread plane points");
            assert!(max_disagreement(&h, &h_true) < 1e-6, "LSq H off");
            assert!((h[(2, 2)] - 1.0).abs() < 1e-12);
            // Minimal solver through the first 4 (orientation preserved for a real view).
            let s1 = [p1[0], p1[1], p1[2], p1[3]];
            let s2 = [p2[0], p2[1], p2[2], p2[3]];
            let hm = minimal_homography(&s1, &s2).expect("valid sample");
            assert!(max_disagreement(&hm, &h_true) < 1e-6, "minimal H off");
            assert!(!is_near_singular(&hm, [400.0, 300.0]));
            // The errors vanish on the true correspondences.
            for (a, b) in p1.iter().zip(&p2) {
                assert!(forward_error2(&h_true, *a, *b) < 1e-16);
                assert!(sampson_error2(&h_true, *a, *b) < 1e-16);
                let inv = h_true.try_inverse().expect("invertible");
                assert!(symmetric_max_error2(&h_true, &inv, *a, *b) < 1e-16);
                assert!(transfer_error(&h, *a, *b) < 1e-6);
            }
        }
    }

    #[test]
    fn errors_measure_pixels() {
        let h = Matrix3::new(1.0, 0.0, 10.0, 0.0, 1.0, -5.0, 0.0, 0.0, 1.0);
        // Off by (3, 4) in image 2: forward error 5 px; backward error also 5 px.
        let (p1, p2) = ([100.0, 100.0], [113.0, 99.0]);
        assert!((transfer_error(&h, p1, p2) - 5.0).abs() < 1e-12);
        let inv = h.try_inverse().expect("invertible");
        assert!((symmetric_max_error2(&h, &inv, p1, p2) - 25.0).abs() < 1e-9);
        // For a translation the Sampson error splits the residual between both images: 25/2.
        assert!((sampson_error2(&h, p1, p2) - 12.5).abs() < 1e-9);
        // A point on the line at infinity of H.
        let hp = Matrix3::new(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -2.0);
        assert_eq!(transfer_error(&hp, [2.0, 3.0], [0.0, 0.0]), f64::INFINITY);
    }

    #[test]
    fn mirrored_or_collinear_samples_are_rejected() {
        let p = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        let mirrored = [[0.0, 0.0], [-1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]];
        assert!(minimal_homography(&p, &p).is_some());
        assert!(minimal_homography(&p, &mirrored).is_none());
        let collinear = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [0.0, 1.0]];
        assert!(minimal_homography(&collinear, &p).is_none());
        assert!(minimal_homography(&p, &[[3.0, 3.0]; 4]).is_none());
        let mut nan = p;
        nan[2][0] = f64::NAN;
        assert!(minimal_homography(&nan, &p).is_none());
        // One swapped correspondence flips a triangle.
        let swapped = [p[0], p[2], p[1], p[3]];
        assert!(minimal_homography(&p, &swapped).is_none());
    }

    #[test]
    fn near_singular_models_are_detected() {
        assert!(!is_near_singular(&Matrix3::identity(), [0.0, 0.0]));
        // Squashing the plane onto a line.
        let flat = Matrix3::new(1.0, 0.0, 0.0, 0.0, 0.001, 0.0, 0.0, 0.0, 1.0);
        assert!(is_near_singular(&flat, [10.0, 10.0]));
        // Zoom out by 20 in each direction: area scale 1/400.
        let zoom_out = Matrix3::new(0.05, 0.0, 0.0, 0.0, 0.05, 0.0, 0.0, 0.0, 1.0);
        assert!(is_near_singular(&zoom_out, [0.0, 0.0]));
        let zoom_out_4 = Matrix3::new(0.25, 0.0, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0, 1.0);
        assert!(!is_near_singular(&zoom_out_4, [0.0, 0.0]));
    }

    #[test]
    fn lsq_rejects_bad_input() {
        let p = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        assert!(homography_lsq(&p[..3], &p[..3]).is_none());
        assert!(homography_lsq(&p, &p[..3]).is_none());
        assert!(homography_lsq(&[[1.0, 1.0]; 6], &[[2.0, 2.0]; 6]).is_none());
        let mut bad = p;
        bad[1][1] = f64::INFINITY;
        assert!(homography_lsq(&bad, &p).is_none());
        let h = homography_lsq(&p, &p).expect("identity");
        assert!((h - Matrix3::identity()).norm() < 1e-9);
    }
}
