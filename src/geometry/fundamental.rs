//! Fundamental-matrix estimation: the 7-point minimal solver with the oriented epipolar
//! constraint, the (Sampson-weighted) normalised 8-point least-squares fit with rank-2
//! enforcement, and the Sampson and epipolar distances.
//!
//! Convention: `x2ᵀ·F·x1 = 0` for corresponding points x1 in image 1 and x2 in image 2.

use nalgebra::{Matrix3, Vector3, SVD};

use super::linalg::{
    det_pencil, left_null_vector, matrix_from_row_major, null_space_7x9, real_cubic_roots,
    smallest_eigenvector, Matrix9,
};
use super::normalise::{hartley, hartley_of, Similarity};

/// The row of the linear system `A·f = 0` (f = F in row-major order) for one correspondence.
#[inline(always)]
fn epipolar_row(p1: [f64; 2], p2: [f64; 2]) -> [f64; 9] {
    let [x, y] = p1;
    let [u, v] = p2;
    [u * x, u * y, u, v * x, v * y, v, x, y, 1.0]
}

/// Up to three fundamental matrices through seven correspondences, all satisfying the oriented
/// epipolar constraint on the sample. Works in whatever frame the points are given (callers pass
/// Hartley-normalised points). Empty for a degenerate sample (rank of the 7×9 system below 7).
///
/// The 2-D null space {F1, F2} of the 7×9 system gives the pencil `F2 + λ(F1 − F2)`; rank 2 means
/// `det = 0`, a cubic in λ whose real roots are the candidate models. A vanishing cubic term means
/// `F1 − F2` itself (λ → ∞) is singular and is a candidate as well.
pub(crate) fn seven_point(p1: &[[f64; 2]; 7], p2: &[[f64; 2]; 7]) -> ([Matrix3<f64>; 3], usize) {
    let mut out = [Matrix3::zeros(); 3];
    let mut count = 0;
    let mut rows = [[0.0; 9]; 7];
    for (row, (a, b)) in rows.iter_mut().zip(p1.iter().zip(p2)) {
        *row = epipolar_row(*a, *b);
    }
    let Some((f1, f2)) = null_space_7x9(&rows) else {
        return (out, 0);
    };
    let f1 = matrix_from_row_major(&f1);
    let f2 = matrix_from_row_major(&f2);
    let b = f1 - f2;
    let c = det_pencil(&f2, &b);
    let (roots, n) = real_cubic_roots(c[3], c[2], c[1], c[0]);
    let mut candidates = [Matrix3::zeros(); 4];
    let mut n_candidates = 0;
    for &lambda in &roots[..n] {
        candidates[n_candidates] = f2 + b * lambda;
        n_candidates += 1;
    }
    let c_scale = c.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if c[3].abs() <= 1e-12 * c_scale {
        candidates[n_candidates] = b;
        n_candidates += 1;
    }
    for f in &candidates[..n_candidates] {
        let norm = f.norm();
        if count < 3 && norm > 0.0 && norm.is_finite() && satisfies_orientation(f, p1, p2) {
            out[count] = f / norm;
            count += 1;
        }
    }
    (out, count)
}

/// The oriented epipolar constraint (Chum, Werner, Matas 2004): for a correct F all points lie in
/// front of both cameras, which makes `(e2 × x2)·(F·x1)` — the two ways of writing the epipolar
/// line of x1 in image 2 — have the same sign for every correspondence. A sample whose points
/// disagree contains a mismatch, whatever its algebraic fit.
pub(crate) fn satisfies_orientation(f: &Matrix3<f64>, p1: &[[f64; 2]], p2: &[[f64; 2]]) -> bool {
    let e2 = left_null_vector(f);
    let side = |a: &[f64; 2], b: &[f64; 2]| {
        let line = f * Vector3::new(a[0], a[1], 1.0);
        e2.cross(&Vector3::new(b[0], b[1], 1.0)).dot(&line)
    };
    // The sign of the clearest point is the reference; points on the epipole (0) are neutral.
    let reference = p1
        .iter()
        .zip(p2)
        .map(|(a, b)| side(a, b))
        .fold(0.0f64, |r, s| if s.abs() > r.abs() { s } else { r });
    p1.iter()
        .zip(p2)
        .all(|(a, b)| side(a, b) * reference >= 0.0)
}

/// Least-squares F (normalised 8-point, rank 2 enforced) through the correspondences `indices`.
///
/// With `weight_by = Some(F0)` each equation is divided by the norm of the gradient of the
/// epipolar constraint under `F0`, so the algebraic residual approximates the Sampson distance
/// (pydegensac's `u2fw`): the LO step refines the geometric error, not the algebraic one, which
/// otherwise over-weights points far from the epipoles.
pub(crate) fn fit_fundamental(
    p1: &[[f64; 2]],
    p2: &[[f64; 2]],
    indices: &[usize],
    weight_by: Option<&Matrix3<f64>>,
) -> Option<Matrix3<f64>> {
    if indices.len() < 8 {
        return None;
    }
    let t1 = hartley_of(p1, indices)?;
    let t2 = hartley_of(p2, indices)?;
    // AᵀA = Σ w·(x2x2ᵀ) ⊗ (x1x1ᵀ): accumulate the 6×6 products of the distinct monomials of
    // x2x2ᵀ and x1x1ᵀ (36 FMAs a point, vectorisable) instead of the 45 of the 9×9 triangle.
    let mut s = [[0.0f64; 6]; 6];
    let mut used = 0usize;
    for &i in indices {
        let w = match weight_by {
            Some(f) => {
                let d = sampson_denominator(f, p1[i], p2[i]);
                if !(d > 0.0 && d.is_finite()) {
                    continue;
                }
                1.0 / d
            }
            None => 1.0,
        };
        let [x, y] = t1.apply(p1[i]);
        let [u, v] = t2.apply(p2[i]);
        let m1 = [x * x, x * y, x, y * y, y, 1.0];
        let m2 = [w * u * u, w * u * v, w * u, w * v * v, w * v, w];
        for (row, a) in s.iter_mut().zip(m2) {
            for (acc, b) in row.iter_mut().zip(m1) {
                *acc += a * b;
            }
        }
        used += 1;
    }
    if used < 8 {
        return None;
    }
    // Position of the product of homogeneous coordinates i·k (i ≤ k) among the monomials.
    const MONOMIAL: [[usize; 3]; 3] = [[0, 1, 2], [1, 3, 4], [2, 4, 5]];
    let mut ata = [0.0f64; 81];
    for (r, entry_row) in ata.chunks_exact_mut(9).enumerate() {
        let (i, j) = (r / 3, r % 3);
        for (c, entry) in entry_row.iter_mut().enumerate() {
            let (k, l) = (c / 3, c % 3);
            *entry = s[MONOMIAL[i][k]][MONOMIAL[j][l]];
        }
    }
    // Weights are only relative; rescale so the matrix is O(1) for the eigen solver.
    let max = ata.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if !(max > 0.0 && max.is_finite()) {
        return None;
    }
    let ata = Matrix9::from_row_slice(&ata) / max;
    let f = smallest_eigenvector(&ata)?;
    let fn_rank2 = enforce_rank_2(&matrix_from_row_major(&f))?;
    let f = denormalise(&fn_rank2, &t1, &t2);
    let norm = f.norm();
    (norm > 0.0 && norm.is_finite()).then(|| f / norm)
}

/// The closest rank-2 matrix in Frobenius norm: zero the smallest singular value.
pub(crate) fn enforce_rank_2(f: &Matrix3<f64>) -> Option<Matrix3<f64>> {
    let mut svd = SVD::try_new(*f, true, true, f64::EPSILON, 1000)?;
    svd.singular_values[2] = 0.0;
    svd.recompose().ok()
}

/// `F = T2ᵀ·Fn·T1`: a fundamental matrix between normalised coordinates back to pixels.
pub(crate) fn denormalise(fn_: &Matrix3<f64>, t1: &Similarity, t2: &Similarity) -> Matrix3<f64> {
    t2.matrix().transpose() * fn_ * t1.matrix()
}

/// `(F·x1)₁² + (F·x1)₂² + (Fᵀ·x2)₁² + (Fᵀ·x2)₂²`, the squared gradient norm of `x2ᵀ·F·x1`.
#[inline(always)]
pub(crate) fn sampson_denominator(f: &Matrix3<f64>, p1: [f64; 2], p2: [f64; 2]) -> f64 {
    let l0 = f[(0, 0)] * p1[0] + f[(0, 1)] * p1[1] + f[(0, 2)];
    let l1 = f[(1, 0)] * p1[0] + f[(1, 1)] * p1[1] + f[(1, 2)];
    let m0 = f[(0, 0)] * p2[0] + f[(1, 0)] * p2[1] + f[(2, 0)];
    let m1 = f[(0, 1)] * p2[0] + f[(1, 1)] * p2[1] + f[(2, 1)];
    l0 * l0 + l1 * l1 + m0 * m0 + m1 * m1
}

/// The Sampson error's numerator `x2ᵀFx1` and squared-gradient denominator
/// `(Fx1)₁² + (Fx1)₂² + (Fᵀx2)₁² + (Fᵀx2)₂²`, shared by the error and the DEGENSAC test.
#[inline(always)]
pub(crate) fn sampson_terms(f: &Matrix3<f64>, p1: [f64; 2], p2: [f64; 2]) -> (f64, f64) {
    let [x, y] = p1;
    let [u, v] = p2;
    let l0 = f[(0, 0)] * x + f[(0, 1)] * y + f[(0, 2)];
    let l1 = f[(1, 0)] * x + f[(1, 1)] * y + f[(1, 2)];
    let l2 = f[(2, 0)] * x + f[(2, 1)] * y + f[(2, 2)];
    let m0 = f[(0, 0)] * u + f[(1, 0)] * v + f[(2, 0)];
    let m1 = f[(0, 1)] * u + f[(1, 1)] * v + f[(2, 1)];
    (u * l0 + v * l1 + l2, l0 * l0 + l1 * l1 + m0 * m0 + m1 * m1)
}

/// Squared Sampson error `(x2ᵀFx1)² / ((Fx1)₁² + (Fx1)₂² + (Fᵀx2)₁² + (Fᵀx2)₂²)` in px²;
/// infinite where the gradient vanishes (a point at both epipoles).
#[inline(always)]
pub(crate) fn sampson_error2(f: &Matrix3<f64>, p1: [f64; 2], p2: [f64; 2]) -> f64 {
    let (num, den) = sampson_terms(f, p1, p2);
    if den > 0.0 {
        num * num / den
    } else {
        f64::INFINITY
    }
}

/// Scale to unit Frobenius norm with the largest-magnitude entry positive, so that equal models
/// compare equal.
pub(crate) fn normalise_fundamental(f: &Matrix3<f64>) -> Matrix3<f64> {
    let norm = f.norm();
    if !(norm > 0.0 && norm.is_finite()) {
        return *f;
    }
    let largest = f
        .iter()
        .fold(0.0f64, |m, &v| if v.abs() > m.abs() { v } else { m });
    f / (norm * largest.signum())
}

fn all_finite(pts1: &[[f64; 2]], pts2: &[[f64; 2]]) -> bool {
    pts1.iter().chain(pts2).flatten().all(|v| v.is_finite())
}

/// Normalised 8-point fundamental matrix through all correspondences (at least 8, all finite),
/// rank 2, unit Frobenius norm, `x2ᵀ·F·x1 = 0`. `None` for too few or non-finite points,
/// mismatched lengths, or a degenerate configuration.
pub fn fundamental_lsq(pts1: &[[f64; 2]], pts2: &[[f64; 2]]) -> Option<Matrix3<f64>> {
    if pts1.len() != pts2.len() || pts1.len() < 8 || !all_finite(pts1, pts2) {
        return None;
    }
    let indices: Vec<usize> = (0..pts1.len()).collect();
    fit_fundamental(pts1, pts2, &indices, None).map(|f| normalise_fundamental(&f))
}

/// The 1–3 fundamental matrices through seven correspondences that satisfy the oriented epipolar
/// constraint (unit Frobenius norm); empty for a degenerate or non-finite sample.
pub fn fundamental_7pt(pts1: &[[f64; 2]; 7], pts2: &[[f64; 2]; 7]) -> Vec<Matrix3<f64>> {
    if !all_finite(pts1, pts2) {
        return Vec::new();
    }
    let (Some(t1), Some(t2)) = (hartley(pts1.iter().copied()), hartley(pts2.iter().copied()))
    else {
        return Vec::new();
    };
    let n1 = pts1.map(|p| t1.apply(p));
    let n2 = pts2.map(|p| t2.apply(p));
    let (models, n) = seven_point(&n1, &n2);
    models[..n]
        .iter()
        .map(|f| normalise_fundamental(&denormalise(f, &t1, &t2)))
        .filter(|f| f.iter().all(|v| v.is_finite()))
        .collect()
}

/// Sampson distance (square root of the Sampson error) in pixels.
pub fn sampson_distance(f: &Matrix3<f64>, p1: [f64; 2], p2: [f64; 2]) -> f64 {
    let e = sampson_error2(f, p1, p2);
    if e.is_nan() {
        f64::INFINITY
    } else {
        e.sqrt()
    }
}

/// Mean of the two one-sided point-to-epipolar-line distances in pixels: x2 to the line `F·x1`
/// and x1 to the line `Fᵀ·x2` (the protocol's WxBS correctness measure).
pub fn epipolar_distance(f: &Matrix3<f64>, p1: [f64; 2], p2: [f64; 2]) -> f64 {
    let x1 = Vector3::new(p1[0], p1[1], 1.0);
    let x2 = Vector3::new(p2[0], p2[1], 1.0);
    let l2 = f * x1;
    let l1 = f.transpose() * x2;
    let num = x2.dot(&l2).abs();
    let d2 = num / l2.x.hypot(l2.y);
    let d1 = num / l1.x.hypot(l1.y);
    let d = 0.5 * (d1 + d2);
    if d.is_nan() {
        f64::INFINITY
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::synthetic::{Scene, SceneRng};

    /// Distance between two fundamental matrices up to scale and sign.
    fn projective_distance(a: &Matrix3<f64>, b: &Matrix3<f64>) -> f64 {
        let (a, b) = (a / a.norm(), b / b.norm());
        (a - b).norm().min((a + b).norm())
    }

    #[test]
    fn seven_and_eight_point_are_exact_on_noise_free_scenes() {
        let mut rng = SceneRng::new(11);
        for _ in 0..20 {
            let scene = Scene::random(&mut rng);
            let (f_true, p1, p2) = scene.general_points(&mut rng, 50);
            let f = fundamental_lsq(&p1, &p2).expect("general scene");
            assert!(projective_distance(&f, &f_true) < 1e-6, "8-point F off");
            assert!((f.norm() - 1.0).abs() < 1e-12);
            let svd = f.svd(false, false);
            assert!(
                svd.singular_values[2] < 1e-9 * svd.singular_values[0],
                "rank 2"
            );
            for (a, b) in p1.iter().zip(&p2) {
                let x1 = Vector3::new(a[0], a[1], 1.0);
                let x2 = Vector3::new(b[0], b[1], 1.0);
                assert!((x2.transpose() * f * x1)[0].abs() < 1e-8);
                assert!(sampson_distance(&f, *a, *b) < 1e-6);
                assert!(epipolar_distance(&f, *a, *b) < 1e-6);
            }
            // One of the 7-point solutions is the truth; all satisfy the 7 equations.
            let s1: [[f64; 2]; 7] = std::array::from_fn(|i| p1[i]);
            let s2: [[f64; 2]; 7] = std::array::from_fn(|i| p2[i]);
            let models = fundamental_7pt(&s1, &s2);
            assert!(!models.is_empty() && models.len() <= 3);
            let best = models
                .iter()
                .map(|m| projective_distance(m, &f_true))
                .fold(f64::INFINITY, f64::min);
            assert!(best < 1e-6, "no 7-point model matches the truth: {best}");
            for m in &models {
                assert!(m.determinant().abs() < 1e-9);
                for (a, b) in s1.iter().zip(&s2) {
                    assert!(sampson_distance(m, *a, *b) < 1e-5);
                }
            }
        }
    }

    #[test]
    fn weighted_fit_recovers_the_model_too() {
        let mut rng = SceneRng::new(5);
        let scene = Scene::random(&mut rng);
        let (f_true, p1, p2) = scene.general_points(&mut rng, 40);
        let idx: Vec<usize> = (0..40).collect();
        let f = fit_fundamental(&p1, &p2, &idx, Some(&f_true)).expect("fit");
        assert!(projective_distance(&f, &f_true) < 1e-6);
    }

    #[test]
    fn distances_are_in_pixels() {
        // Pure horizontal translation: epipolar lines are the rows, F = [e]× with e = (1, 0, 0).
        let f = Matrix3::new(0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0);
        // x2 is 2 px below the epipolar line of x1 (and x1 2 px above that of x2).
        let (p1, p2) = ([10.0, 50.0], [40.0, 52.0]);
        assert!((epipolar_distance(&f, p1, p2) - 2.0).abs() < 1e-12);
        // The Sampson distance shares the disparity between both images: 2/√2.
        assert!((sampson_distance(&f, p1, p2) - 2.0f64.sqrt()).abs() < 1e-12);
        assert_eq!(sampson_distance(&Matrix3::zeros(), p1, p2), f64::INFINITY);
    }

    #[test]
    fn orientation_violations_are_rejected() {
        let mut rng = SceneRng::new(3);
        let scene = Scene::random(&mut rng);
        let (_, p1, p2) = scene.general_points(&mut rng, 7);
        let s1: [[f64; 2]; 7] = std::array::from_fn(|i| p1[i]);
        let s2: [[f64; 2]; 7] = std::array::from_fn(|i| p2[i]);
        let models = fundamental_7pt(&s1, &s2);
        assert!(models.iter().all(|f| satisfies_orientation(f, &s1, &s2)));
        // Reflecting one point through the epipole of image 2 keeps it on its epipolar line but
        // puts it "behind" the camera: the constraint must catch it.
        let f = models[0];
        let e2 = left_null_vector(&f);
        let e2 = [e2.x / e2.z, e2.y / e2.z];
        let mut bad2 = s2;
        bad2[3] = [2.0 * e2[0] - s2[3][0], 2.0 * e2[1] - s2[3][1]];
        assert!(sampson_distance(&f, s1[3], bad2[3]) < 1e-6);
        assert!(!satisfies_orientation(&f, &s1, &bad2));
    }

    #[test]
    fn degenerate_input_gives_nothing() {
        assert!(fundamental_7pt(&[[1.0, 2.0]; 7], &[[3.0, 4.0]; 7]).is_empty());
        let mut s = [[0.0; 2]; 7];
        for (i, p) in s.iter_mut().enumerate() {
            *p = [i as f64, 2.0 * i as f64];
        }
        // Collinear points: whatever comes out, it must not panic and has at most 3 models.
        assert!(fundamental_7pt(&s, &s).len() <= 3);
        let mut nan = s;
        nan[0][0] = f64::NAN;
        assert!(fundamental_7pt(&nan, &s).is_empty());
        assert!(fundamental_lsq(&[[0.0, 0.0]; 7], &[[0.0, 0.0]; 7]).is_none());
        assert!(fundamental_lsq(&[[1.0, 1.0]; 9], &[[2.0, 2.0]; 9]).is_none());
    }
}
