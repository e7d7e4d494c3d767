//! DEGENSAC (Chum, Werner, Matas 2005; pydegensac `DegUtils.c`): a dominant plane makes F
//! estimation fail silently, because a 7-point sample with five or more points on the plane yields
//! a one-parameter family of fundamental matrices that all fit the plane, and RANSAC happily
//! returns one of them with many (planar) inliers and a wrong epipolar geometry off the plane.
//!
//! On every new best sample we test whether ≥ 5 of its 7 points are related by one homography
//! compatible with F. If so, we estimate that plane's homography H and recover F by
//! plane-and-parallax: `F = [e′]ₓ·H`, where the epipole e′ is the intersection of the lines
//! `x2 × H·x1` of two off-plane correspondences.

use nalgebra::{Matrix3, Vector3};

use super::correspondences::Correspondences;
use super::families::{FundamentalFamily, HomographyFamily};
use super::homography::{self, fit_homography, forward_error2};
use super::linalg::{left_null_vector, skew};
use super::ransac::{draw_distinct, Engine, Rng, Scored, LO_REPETITIONS};
use super::termination::required_samples;
use super::HomographyError;

/// The five triplets of the 7-point sample tried as plane candidates (pydegensac's choice).
const TRIPLETS: [[usize; 3]; 5] = [[0, 1, 2], [3, 4, 5], [0, 1, 6], [3, 4, 6], [2, 5, 6]];
/// A sample point is on the plane when its H error is below this multiple of θ².
const ON_PLANE: f64 = 3.0;
/// Threshold multiple (on θ²) of the inner homography LO that estimates the plane.
const PLANE_LO: f64 = 16.0;
/// Points with an H error above this multiple of θ² are off the plane (they carry parallax).
const OFF_PLANE: f64 = 100.0;
/// Plane-and-parallax samples: at most this many, at this confidence; support at 2θ².
const PARALLAX_MAX_SAMPLES: usize = 10_000;
const PARALLAX_CONFIDENCE: f64 = 0.999;
const PARALLAX_SUPPORT: f64 = 2.0;
/// Candidate epipoles are ranked on at most this many off-plane points. The data are in random
/// order, so a prefix is a random subset: ranking on 500 points picks the same kind of epipole as
/// ranking on all (the F local optimisation refines it on all points afterwards) at a fraction of
/// the cost; without the cap this loop dominated F estimation on general 3-D scenes, where the
/// check flags ~20 % of new best samples.
const PARALLAX_RANKING_POINTS: usize = 500;
/// Inner F refinement repetitions after plane-and-parallax (pydegensac's `innerFH`).
const PARALLAX_LO_REPETITIONS: usize = 15;

fn homogeneous(p: [f64; 2]) -> Vector3<f64> {
    Vector3::new(p[0], p[1], 1.0)
}

/// The homography induced by the plane through three 3-D points, given F and their images
/// (Hartley & Zisserman, Result 13.6): `H = A − e′·(M⁻¹b)ᵀ` with `A = [e′]ₓF`, `M` the rows `x1ᵢᵀ`
/// and `bᵢ = (x2ᵢ × A·x1ᵢ)ᵀ(x2ᵢ × e′) / ‖x2ᵢ × e′‖²`.
fn homography_from_fundamental(
    f: &Matrix3<f64>,
    e2: &Vector3<f64>,
    x1: &[Vector3<f64>; 3],
    x2: &[Vector3<f64>; 3],
) -> Option<Matrix3<f64>> {
    let a = skew(e2) * f;
    let mut b = Vector3::zeros();
    for i in 0..3 {
        let c = x2[i].cross(e2);
        let cc = c.norm_squared();
        if cc.is_nan() || cc <= 0.0 {
            return None;
        }
        b[i] = x2[i].cross(&(a * x1[i])).dot(&c) / cc;
    }
    let m = Matrix3::from_rows(&[x1[0].transpose(), x1[1].transpose(), x1[2].transpose()]);
    let v = m.try_inverse()? * b;
    let h = a - e2 * v.transpose();
    h.iter().all(|x| x.is_finite()).then_some(h)
}

/// `sampson_error2(f, p1, p2) <= limit2`, without the division (this loop dominates DEGENSAC).
#[inline(always)]
fn sampson_within(f: &Matrix3<f64>, p1: [f64; 2], p2: [f64; 2], limit2: f64) -> bool {
    let (num, den) = super::fundamental::sampson_terms(f, p1, p2);
    den > 0.0 && num * num <= limit2 * den
}

/// DEGENSAC's `checksample`: `Some(H)` when at least 5 of the 7 sample points (indices into
/// `data`) are consistent, within `3θ²`, with one homography compatible with `f`.
///
/// As in pydegensac the count is taken after refitting H on the 5 points closest to the
/// F-compatible homography. With only 2 redundant constraints that refit also bends to
/// non-coplanar points, so at the protocol's θ = 1.5 px about a third of general samples are
/// flagged (measured on noise-free synthetic scenes), against ~5 % when counting before the refit;
/// but the refit catches ~85 % of truly degenerate noisy samples, against ~30 %. False alarms only
/// cost a plane fit that finds too few plane inliers (see [`plane_and_parallax`]), misses cost a
/// wrong F, so we keep the reference behaviour.
pub(crate) fn degenerate_sample_homography(
    data: &Correspondences,
    sample: &[usize],
    f: &Matrix3<f64>,
    threshold2: f64,
) -> Option<Matrix3<f64>> {
    if sample.len() != 7 {
        return None;
    }
    // Work in the normalised frame, where the 3×3 solves are well conditioned.
    let fn_ = data.t2.inverse_matrix().transpose() * f * data.t1.inverse_matrix();
    let e2 = left_null_vector(&fn_);
    let limit = ON_PLANE * threshold2;
    for triplet in TRIPLETS {
        let x1 = triplet.map(|k| homogeneous(data.n1[sample[k]]));
        let x2 = triplet.map(|k| homogeneous(data.n2[sample[k]]));
        let Some(hn) = homography_from_fundamental(&fn_, &e2, &x1, &x2) else {
            continue;
        };
        let h = homography::denormalise(&hn, &data.t1, &data.t2);
        // Refit on the five sample points closest to this homography.
        let mut by_error: [(f64, usize); 7] = std::array::from_fn(|k| {
            let i = sample[k];
            (forward_error2(&h, data.p1[i], data.p2[i]), i)
        });
        by_error.sort_by(|a, b| a.0.total_cmp(&b.0));
        let closest: [usize; 5] = std::array::from_fn(|k| by_error[k].1);
        let refit = fit_homography(&data.p1, &data.p2, &closest).unwrap_or(h);
        let on_plane = sample
            .iter()
            .filter(|&&i| forward_error2(&refit, data.p1[i], data.p2[i]) < limit)
            .count();
        if on_plane >= 5 {
            return Some(refit);
        }
    }
    None
}

/// The DEGENSAC response to a degenerate sample: estimate the plane, then F by plane-and-parallax,
/// refined by the F local optimisation. `None` when the sample is not degenerate or the plane
/// or parallax evidence is too weak; the caller adopts the result only if it scores better.
pub(crate) fn plane_and_parallax(
    family: &FundamentalFamily<'_>,
    sample: &[usize],
    f: &Matrix3<f64>,
    threshold2: f64,
    rng: &mut Rng,
) -> Option<Scored> {
    let data = family.data;
    let h = degenerate_sample_homography(data, sample, f, threshold2)?;

    // The plane: refine H by the homography LO at a generous threshold.
    let planes = HomographyFamily {
        data,
        error: HomographyError::Forward,
    };
    let mut plane_engine = Engine::new(&planes, PLANE_LO * threshold2);
    let start = plane_engine.evaluate(&h)?;
    let on_plane = plane_engine
        .errors()
        .iter()
        .filter(|&&e| e < ON_PLANE * threshold2)
        .count();
    if on_plane < 8 {
        return None;
    }
    let plane = plane_engine.local_optimisation(&start, LO_REPETITIONS, rng);
    let plane = plane_engine.evaluate(&plane.model)?;
    if plane.inliers <= 6 {
        return None;
    }
    let off_plane: Vec<usize> = plane_engine
        .errors()
        .iter()
        .enumerate()
        .filter(|(_, &e)| e > OFF_PLANE * threshold2 || e.is_nan())
        .map(|(i, _)| i)
        .collect();
    if off_plane.len() < 2 {
        return None;
    }

    // Parallax: each off-plane correspondence puts e′ on the line through x2 and H·x1.
    let hm = plane.model;
    let lines: Vec<Vector3<f64>> = off_plane
        .iter()
        .map(|&i| homogeneous(data.p2[i]).cross(&(hm * homogeneous(data.p1[i]))))
        .collect();
    let ranking = &off_plane[..off_plane.len().min(PARALLAX_RANKING_POINTS)];
    let support_limit = PARALLAX_SUPPORT * threshold2;
    let support_of = |f: &Matrix3<f64>| {
        ranking
            .iter()
            .filter(|&&i| sampson_within(f, data.p1[i], data.p2[i], support_limit))
            .count()
    };
    // The bar to clear is the parallax support of the sample's own F: a truly degenerate F fits
    // the plane and only its own two off-plane points, while a falsely flagged, good F already
    // explains the parallax, and then the adaptive stopping ends the search almost at once.
    let mut best_support = support_of(f);
    let mut best: Option<Matrix3<f64>> = None;
    let mut limit = required_samples(
        best_support,
        ranking.len(),
        2,
        PARALLAX_CONFIDENCE,
        1.0,
        PARALLAX_MAX_SAMPLES,
    );
    let mut pair = [0usize; 2];
    let mut drawn = 0;
    while drawn < limit {
        drawn += 1;
        draw_distinct(rng, off_plane.len(), &mut pair);
        let e2 = lines[pair[0]].cross(&lines[pair[1]]);
        let f = skew(&e2) * hm;
        let norm = f.norm();
        if !(norm > 0.0 && norm.is_finite()) {
            continue;
        }
        let f = f / norm;
        // Planar points support every such F equally; rank candidates by the parallax points.
        let support = support_of(&f);
        if support > best_support {
            best_support = support;
            best = Some(f);
            limit = required_samples(
                support,
                ranking.len(),
                2,
                PARALLAX_CONFIDENCE,
                1.0,
                PARALLAX_MAX_SAMPLES,
            );
        }
    }
    let f_parallax = best?;
    let mut engine = Engine::new(family, threshold2);
    let scored = engine.evaluate(&f_parallax)?;
    Some(engine.local_optimisation(&scored, PARALLAX_LO_REPETITIONS, rng))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::synthetic::{Scene, SceneRng};

    fn correspondences(p1: Vec<[f64; 2]>, p2: Vec<[f64; 2]>) -> Correspondences {
        Correspondences::new(p1, p2).expect("spread points")
    }

    #[test]
    fn plane_induced_homography_from_f_is_exact() {
        let mut rng = SceneRng::new(21);
        let scene = Scene::random(&mut rng);
        let (h_true, p1, p2) = scene.plane_points(&mut rng, 10);
        let f = scene.fundamental();
        let e2 = left_null_vector(&f);
        let x1 = [0, 1, 2].map(|k| homogeneous(p1[k]));
        let x2 = [0, 1, 2].map(|k| homogeneous(p2[k]));
        let h = homography_from_fundamental(&f, &e2, &x1, &x2).expect("non-degenerate");
        for (a, b) in p1.iter().zip(&p2) {
            assert!(
                forward_error2(&h, *a, *b) < 1e-12,
                "H from F misses a plane point"
            );
        }
        let h = h / h[(2, 2)];
        assert!((h - h_true).norm() < 1e-6 * h_true.norm());
    }

    #[test]
    fn samples_with_five_coplanar_points_are_degenerate() {
        let mut rng = SceneRng::new(4);
        for _ in 0..10 {
            let scene = Scene::random(&mut rng);
            let (h_true, a1, a2) = scene.plane_points(&mut rng, 5);
            let (f, g1, g2) = scene.general_points(&mut rng, 200);
            // Keep general points with clear parallax with respect to the plane (≥ 20 px).
            let (b1, b2): (Vec<_>, Vec<_>) = g1
                .into_iter()
                .zip(g2)
                .filter(|(a, b)| forward_error2(&h_true, *a, *b) > 400.0)
                .take(7)
                .unzip();
            assert_eq!(b1.len(), 7);
            // Sample: 5 plane points and 2 general ones; the first triplet tried is planar, so
            // the plane's homography is found exactly.
            let p1 = vec![a1[0], a1[1], a1[2], a1[3], b1[0], a1[4], b1[1]];
            let p2 = vec![a2[0], a2[1], a2[2], a2[3], b2[0], a2[4], b2[1]];
            let data = correspondences(p1, p2);
            let sample = [0, 1, 2, 3, 4, 5, 6];
            let h = degenerate_sample_homography(&data, &sample, &f, 2.25)
                .expect("five coplanar points make the sample degenerate");
            for (a, b) in a1.iter().zip(&a2) {
                assert!(forward_error2(&h, *a, *b) < 1e-6);
            }
            assert!(forward_error2(&h_true, a1[0], a2[0]) < 1e-12);
        }
    }
}
