//! The LAF check of MODS (reference §4.3, `LORANSACFiltering`): after LO-RANSAC, each inlier's
//! two local affine frames must agree with the model, not only their centres.
//!
//! Per correspondence three points of each frame are compared: the centre and the centre moved
//! by `k_sigma·s` along the frame's two axes (`c + f·A·e₂`, `c + f·A·e₁` with `f = k_sigma /
//! mrSize = 2`, since a wbs frame `A` already holds mrSize·σ). For a homography the correspondence
//! is rejected when `sqrt(Σ max(fwd², bwd²))` over the three points exceeds `3·coef_h·θ`; for a
//! fundamental matrix when the sum of the three Sampson distances exceeds `coef_f·θ` (θ: the
//! RANSAC threshold). If fewer than `min_survivors` remain, nothing survives: the pair fails.

use nalgebra::Matrix3;
use serde::{Deserialize, Serialize};

use super::homography::forward_error2;
use super::{sampson_distance, Geometry};
use crate::laf::Laf;

/// The LAF check's constants (MODS CVIU values by default).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LafCheck {
    /// H: reject above `3·homography_coef·θ` px (12: 108 px at θ = 3; WxBS 13).
    pub homography_coef: f64,
    /// F: reject above `fundamental_coef·θ` summed Sampson distance (2; WxBS 3).
    pub fundamental_coef: f64,
    /// With fewer survivors than this the result is emptied (8).
    pub min_survivors: usize,
    /// The frame points lie at `c + frame_factor·A·e` (2: k_sigma = 2·mrSize).
    pub frame_factor: f64,
}

impl Default for LafCheck {
    fn default() -> Self {
        LafCheck {
            homography_coef: 12.0,
            fundamental_coef: 2.0,
            min_survivors: 8,
            frame_factor: 2.0,
        }
    }
}

impl LafCheck {
    /// The inliers (indices into `pairs`) whose frames agree with `model` (H: image 1 → 2, or F
    /// with `x2ᵀ·F·x1 = 0`) at RANSAC threshold `threshold_px`; empty when fewer than
    /// `min_survivors` agree. With `half_turn` (descriptors that fold orientation modulo 180°)
    /// image 2's frame may also be turned by 180°.
    pub fn survivors(
        &self,
        kind: Geometry,
        model: &Matrix3<f64>,
        threshold_px: f64,
        pairs: &[(Laf, Laf)],
        inliers: &[usize],
        half_turn: bool,
    ) -> Vec<usize> {
        let inverse = model.try_inverse();
        let error = |p1: &[[f64; 2]; 3], p2: &[[f64; 2]; 3]| -> f64 {
            match kind {
                Geometry::Homography => {
                    let Some(inverse) = &inverse else {
                        return f64::INFINITY;
                    };
                    let sum: f64 = (0..3)
                        .map(|k| {
                            let f = forward_error2(model, p1[k], p2[k]);
                            let b = forward_error2(inverse, p2[k], p1[k]);
                            f.max(b)
                        })
                        .sum();
                    sum.sqrt()
                }
                Geometry::Fundamental => {
                    (0..3).map(|k| sampson_distance(model, p1[k], p2[k])).sum()
                }
            }
        };
        let limit = match kind {
            Geometry::Homography => 3.0 * self.homography_coef * threshold_px,
            Geometry::Fundamental => self.fundamental_coef * threshold_px,
        };
        let kept: Vec<usize> = inliers
            .iter()
            .copied()
            .filter(|&i| {
                let (l1, l2) = &pairs[i];
                let p1 = self.points(l1, 1.0);
                let mut e = error(&p1, &self.points(l2, 1.0));
                if half_turn {
                    e = e.min(error(&p1, &self.points(l2, -1.0)));
                }
                e <= limit
            })
            .collect();
        if kept.len() < self.min_survivors {
            Vec::new()
        } else {
            kept
        }
    }

    /// The centre and the tips of the frame's two axes (`sign` −1: the frame turned by 180°).
    fn points(&self, laf: &Laf, sign: f64) -> [[f64; 2]; 3] {
        let f = self.frame_factor * sign;
        let c = [laf.c[0] as f64, laf.c[1] as f64];
        let a = laf.a;
        [
            c,
            [c[0] + f * a[0][1] as f64, c[1] + f * a[1][1] as f64],
            [c[0] + f * a[0][0] as f64, c[1] + f * a[1][0] as f64],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of image 1 and their images under H = 2× zoom plus a shift: consistent frames map
    /// exactly; a frame whose shape disagrees (turned by 90°, 60 px arms) is rejected.
    fn scene(n: usize) -> (Matrix3<f64>, Vec<(Laf, Laf)>) {
        let h = Matrix3::new(2.0, 0.0, 10.0, 0.0, 2.0, -5.0, 0.0, 0.0, 1.0);
        let pairs = (0..n)
            .map(|i| {
                let l1 = Laf {
                    a: [[15.0, 0.0], [3.0, 12.0]],
                    c: [20.0 + 10.0 * i as f32, 30.0 + 7.0 * i as f32],
                };
                let l2 = Laf {
                    a: [[30.0, 0.0], [6.0, 24.0]],
                    c: [2.0 * l1.c[0] + 10.0, 2.0 * l1.c[1] - 5.0],
                };
                (l1, l2)
            })
            .collect();
        (h, pairs)
    }

    #[test]
    fn consistent_frames_survive_and_a_turned_frame_is_rejected() {
        let (h, mut pairs) = scene(10);
        pairs[3].1 = pairs[3].1.rotated(std::f32::consts::FRAC_PI_2);
        let all: Vec<usize> = (0..10).collect();
        let check = LafCheck::default();
        let kept = check.survivors(Geometry::Homography, &h, 3.0, &pairs, &all, false);
        assert_eq!(kept, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
        // A frame turned by 180° passes only for half-orientation descriptors.
        pairs[3].1 = pairs[3].1.rotated(std::f32::consts::FRAC_PI_2);
        let strict = check.survivors(Geometry::Homography, &h, 3.0, &pairs, &all, false);
        assert!(!strict.contains(&3));
        let half = check.survivors(Geometry::Homography, &h, 3.0, &pairs, &all, true);
        assert!(half.contains(&3));
    }

    #[test]
    fn fewer_than_the_minimum_survivors_empties_the_result() {
        let (h, mut pairs) = scene(9);
        for p in pairs.iter_mut().take(2) {
            p.1 = p.1.rotated(std::f32::consts::FRAC_PI_2);
        }
        let all: Vec<usize> = (0..9).collect();
        let kept =
            LafCheck::default().survivors(Geometry::Homography, &h, 3.0, &pairs, &all, false);
        assert!(kept.is_empty(), "7 survivors < 8: {kept:?}");
    }

    #[test]
    fn fundamental_check_rejects_frames_off_their_epipolar_lines() {
        // A pure x translation: F = [t]× with t = (1, 0, 0); epipolar lines are rows (y2 = y1).
        let f = Matrix3::new(0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0);
        let (_, mut pairs) = scene(10);
        for p in pairs.iter_mut() {
            p.1 = Laf {
                a: p.0.a,
                c: [p.0.c[0] + 40.0, p.0.c[1]],
            };
        }
        // Same centre row, but the frame is turned: its axis tips leave their rows.
        pairs[5].1 = pairs[5].1.rotated(0.7);
        let all: Vec<usize> = (0..10).collect();
        let kept =
            LafCheck::default().survivors(Geometry::Fundamental, &f, 1.5, &pairs, &all, false);
        assert_eq!(kept.len(), 9);
        assert!(!kept.contains(&5));
    }
}
