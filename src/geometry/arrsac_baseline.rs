//! The ARRSAC baseline: the `arrsac` crate driven through `sample-consensus` estimators for H
//! (4-point) and F (7-point), with no local optimisation and no refit, so that LO-RANSAC can be
//! compared against a plain adaptive RANSAC.
//!
//! Residuals are the same squared pixel errors LO-RANSAC scores with (forward/symmetric/Sampson
//! for H as configured, Sampson for F), so the threshold handed to ARRSAC is θ².

use std::cell::Cell;

use arrsac::Arrsac;
use nalgebra::Matrix3;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use sample_consensus::{Consensus, Estimator, Model};

use super::fundamental::{self, normalise_fundamental, seven_point};
use super::homography::{self, is_near_singular, minimal_homography, scale_homography};
use super::normalise::hartley;
use super::{Geometry, HomographyError, RansacConfig, Verification};

/// Initial hypotheses ARRSAC draws to estimate ε and δ. The crate's default (256) fails at
/// 20 % inliers on 2,000 matches (rust-stack.md §3); 2048 finds H at 20 %, comfortably covering
/// the ~25 % we need.
const INITIALIZATION_HYPOTHESES: usize = 2048;

/// One tentative correspondence, the data type the `sample-consensus` traits see.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Correspondence {
    /// The point in image 1, pixels.
    pub p1: [f64; 2],
    /// The point in image 2, pixels.
    pub p2: [f64; 2],
}

/// A homography hypothesis; its residual is the squared error chosen by `error`, in px².
#[derive(Clone, Debug)]
pub struct HomographyModel {
    /// The homography image 1 → image 2, scaled so that `H[2,2] = 1` when possible.
    pub h: Matrix3<f64>,
    h_inv: Matrix3<f64>,
    /// The error the residual measures.
    pub error: HomographyError,
}

impl Model<Correspondence> for HomographyModel {
    fn residual(&self, c: &Correspondence) -> f64 {
        let e = match self.error {
            HomographyError::Forward => homography::forward_error2(&self.h, c.p1, c.p2),
            HomographyError::SymmetricMax => {
                homography::symmetric_max_error2(&self.h, &self.h_inv, c.p1, c.p2)
            }
            HomographyError::Sampson => homography::sampson_error2(&self.h, c.p1, c.p2),
        };
        if e.is_nan() {
            f64::INFINITY
        } else {
            e
        }
    }
}

/// A fundamental-matrix hypothesis; its residual is the squared Sampson error in px².
#[derive(Clone, Debug)]
pub struct FundamentalModel {
    /// The fundamental matrix, `x2ᵀ·F·x1 = 0`, Frobenius norm 1.
    pub f: Matrix3<f64>,
}

impl Model<Correspondence> for FundamentalModel {
    fn residual(&self, c: &Correspondence) -> f64 {
        let e = fundamental::sampson_error2(&self.f, c.p1, c.p2);
        if e.is_nan() {
            f64::INFINITY
        } else {
            e
        }
    }
}

/// Minimal-sample homography estimator (the same solver and sample checks as LO-RANSAC).
/// Counts its calls, i.e. the hypotheses ARRSAC draws.
#[derive(Debug)]
pub struct HomographyEstimator {
    /// The error its models' residuals measure.
    pub error: HomographyError,
    calls: Cell<usize>,
}

/// The first `N` correspondences of a sample, or `None` when it has fewer.
fn first_n<const N: usize>(
    data: impl Iterator<Item = Correspondence>,
) -> Option<[Correspondence; N]> {
    let mut sample = [Correspondence {
        p1: [0.0; 2],
        p2: [0.0; 2],
    }; N];
    let mut n = 0;
    for (slot, c) in sample.iter_mut().zip(data) {
        *slot = c;
        n += 1;
    }
    (n == N).then_some(sample)
}

impl HomographyEstimator {
    /// An estimator whose models score with `error`; no calls counted yet.
    pub fn new(error: HomographyError) -> Self {
        Self {
            error,
            calls: Cell::new(0),
        }
    }

    /// The samples it was asked to estimate from so far.
    pub fn calls(&self) -> usize {
        self.calls.get()
    }
}

impl Estimator<Correspondence> for HomographyEstimator {
    type Model = HomographyModel;
    type ModelIter = Option<HomographyModel>;
    const MIN_SAMPLES: usize = 4;

    fn estimate<I>(&self, data: I) -> Self::ModelIter
    where
        I: Iterator<Item = Correspondence> + Clone,
    {
        self.calls.set(self.calls.get() + 1);
        let sample = first_n::<4>(data)?;
        let t1 = hartley(sample.iter().map(|c| c.p1))?;
        let t2 = hartley(sample.iter().map(|c| c.p2))?;
        let p = sample.map(|c| t1.apply(c.p1));
        let q = sample.map(|c| t2.apply(c.p2));
        let h = homography::denormalise(&minimal_homography(&p, &q)?, &t1, &t2);
        if is_near_singular(&h, t1.centre) {
            return None;
        }
        let h = scale_homography(&h);
        let h_inv = match self.error {
            HomographyError::SymmetricMax => h.try_inverse()?,
            _ => Matrix3::zeros(),
        };
        Some(HomographyModel {
            h,
            h_inv,
            error: self.error,
        })
    }
}

/// Minimal-sample (7-point) fundamental-matrix estimator, with the oriented constraint; returns
/// up to three models per sample. Counts its calls.
#[derive(Debug, Default)]
pub struct FundamentalEstimator {
    calls: Cell<usize>,
}

impl FundamentalEstimator {
    /// An estimator with no calls counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The samples it was asked to estimate from so far.
    pub fn calls(&self) -> usize {
        self.calls.get()
    }
}

impl Estimator<Correspondence> for FundamentalEstimator {
    type Model = FundamentalModel;
    type ModelIter = Vec<FundamentalModel>;
    const MIN_SAMPLES: usize = 7;

    fn estimate<I>(&self, data: I) -> Self::ModelIter
    where
        I: Iterator<Item = Correspondence> + Clone,
    {
        self.calls.set(self.calls.get() + 1);
        let Some(sample) = first_n::<7>(data) else {
            return Vec::new();
        };
        let (Some(t1), Some(t2)) = (
            hartley(sample.iter().map(|c| c.p1)),
            hartley(sample.iter().map(|c| c.p2)),
        ) else {
            return Vec::new();
        };
        let p = sample.map(|c| t1.apply(c.p1));
        let q = sample.map(|c| t2.apply(c.p2));
        let (models, count) = seven_point(&p, &q);
        models[..count]
            .iter()
            .map(|f| normalise_fundamental(&fundamental::denormalise(f, &t1, &t2)))
            .filter(|f| f.iter().all(|v| v.is_finite()))
            .map(|f| FundamentalModel { f })
            .collect()
    }
}

/// A rand_core 0.9 generator (what `arrsac` needs), seeded like LO-RANSAC's.
type BaselineRng = Xoshiro256PlusPlus;

/// Uniform index below `bound` (Lemire's multiply-shift; the bias is < bound/2⁶⁴).
fn index_below(rng: &mut BaselineRng, bound: usize) -> usize {
    ((u128::from(rng.next_u64()) * bound as u128) >> 64) as usize
}

/// Run ARRSAC on the correspondences `valid` (finite, at least a minimal sample) and report the
/// inliers of its model under the configured error and threshold.
pub(crate) fn verify_arrsac(
    pts1: &[[f64; 2]],
    pts2: &[[f64; 2]],
    valid: &[usize],
    cfg: &RansacConfig,
) -> Option<Verification> {
    let threshold2 = cfg.threshold_px * cfg.threshold_px;
    let mut rng = BaselineRng::seed_from_u64(cfg.seed);
    // ARRSAC evaluates data in the given order and samples early blocks first: shuffle.
    let mut order = valid.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, index_below(&mut rng, i + 1));
    }
    let data: Vec<Correspondence> = order
        .iter()
        .map(|&i| Correspondence {
            p1: pts1[i],
            p2: pts2[i],
        })
        .collect();
    // Data on which no sample gives a model makes ARRSAC return None (it never panics there: a
    // best initial hypothesis with fewer inliers than a minimal sample aborts initialisation).
    let mut arrsac =
        Arrsac::new(threshold2, rng).initialization_hypotheses(INITIALIZATION_HYPOTHESES);
    let (model, iterations) = match cfg.kind {
        Geometry::Homography => {
            let estimator = HomographyEstimator::new(cfg.homography_error);
            let model = arrsac.model(&estimator, data.iter().copied());
            (model.map(|m| m.h), estimator.calls())
        }
        Geometry::Fundamental => {
            let estimator = FundamentalEstimator::new();
            let model = arrsac.model(&estimator, data.iter().copied());
            (model.map(|m| m.f), estimator.calls())
        }
    };
    let model = model?;
    let (model, inliers) = match cfg.kind {
        Geometry::Homography => {
            let h = scale_homography(&model);
            let h_model = HomographyModel {
                h,
                h_inv: h.try_inverse().unwrap_or_else(Matrix3::zeros),
                error: cfg.homography_error,
            };
            let inliers = valid
                .iter()
                .copied()
                .filter(|&i| {
                    h_model.residual(&Correspondence {
                        p1: pts1[i],
                        p2: pts2[i],
                    }) <= threshold2
                })
                .collect();
            (h, inliers)
        }
        Geometry::Fundamental => {
            let f = normalise_fundamental(&model);
            let inliers = valid
                .iter()
                .copied()
                .filter(|&i| fundamental::sampson_error2(&f, pts1[i], pts2[i]) <= threshold2)
                .collect();
            (f, inliers)
        }
    };
    Some(Verification {
        model,
        inliers,
        iterations,
        lo_runs: 0,
    })
}
