//! The LO-RANSAC engine (pydegensac's `exp_ransac*customLAF` with `iter_type = 4`), generic over
//! the model family: uniform minimal samples, MSAC scoring with the truncated quadratic gain, the
//! hypergeometric stopping rule, the local optimisation (LO) step and a final least-squares refit.
//!
//! Constants are those of pydegensac (classical.md §3.2): LO runs on a new best sample score after
//! sample 50 (and once at sample 50, and once at the end if it never ran); it starts with a
//! least-squares fit on the inliers at `TC·MWM·θ² = 8θ²`, then 10 inner repetitions, each fitting
//! a random non-minimal sample of the inliers and refining it by 4 least-squares steps while the
//! threshold shrinks from `4θ²` to `θ²` (fitting on the inliers at twice the current threshold).
//! All thresholds here are on squared pixel errors.

use std::collections::HashSet;

use nalgebra::Matrix3;
use rand::rngs::Xoshiro256PlusPlus;
use rand::RngExt;

use super::correspondences::Correspondences;
use super::sprt::Sprt;
use super::termination::required_samples;

/// The random generator of a run: seeded, so that a seed fixes the result.
pub(crate) type Rng = Xoshiro256PlusPlus;

/// pydegensac's threshold multiplier `TC` for the start of the iterative LSq (on squared errors).
const TC: f64 = 4.0;
/// pydegensac's inlier widening for LSq fits, `MWM = 9/4` evaluated in C integer arithmetic.
const MWM: f64 = 2.0;
/// Shrinking steps of the iterative LSq.
const ILSQ_ITERS: usize = 4;
/// Inner RANSAC repetitions of the LO step.
pub(crate) const LO_REPETITIONS: usize = 10;
/// LO runs on new best samples only after this many samples (and once exactly here).
const LO_AFTER_SAMPLES: usize = 50;
/// MSAC truncation: gain `1 − e/(2.25·θ²)` for `e < 2.25·θ²`.
const MSAC_TRUNCATION: f64 = 2.25;
/// Refit rounds of the final least-squares polish.
const FINAL_REFITS: usize = 3;

/// Up to three models from one minimal sample (the 7-point solver's maximum).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Models {
    models: [Matrix3<f64>; 3],
    len: usize,
}

impl Models {
    pub fn new() -> Self {
        Self {
            models: [Matrix3::zeros(); 3],
            len: 0,
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn push(&mut self, m: Matrix3<f64>) {
        if self.len < 3 {
            self.models[self.len] = m;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[Matrix3<f64>] {
        &self.models[..self.len]
    }
}

/// A model with its MSAC score and inlier count (at θ²) on all correspondences.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scored {
    pub model: Matrix3<f64>,
    pub score: f64,
    pub inliers: usize,
}

/// What the engine needs from a model family (homography or fundamental matrix).
pub(crate) trait Family {
    /// Minimal sample size.
    const SAMPLE_SIZE: usize;
    /// Fewest correspondences a least-squares fit accepts.
    const FIT_MIN: usize;
    /// Cap of the LO step's non-minimal sample: `min(⌊n_in/2⌋, cap)`.
    const LO_SAMPLE_CAP: usize;
    /// The LO inner RANSAC is skipped below this many inliers.
    const LO_INNER_MIN: usize;
    /// Whether a least-squares fit depends only on the inlier set (not on the current model), so
    /// that an inlier set already refined once need not be refined again.
    const FIT_IS_SET_FUNCTION: bool;

    /// A model readied for fast error evaluation (e.g. with its inverse).
    type Prepared;

    fn data(&self) -> &Correspondences;
    /// Hypotheses from a minimal sample (indices into the data), in pixels, already filtered by
    /// the family's sample and model checks.
    fn minimal(&self, sample: &[usize], out: &mut Models);
    fn prepare(&self, model: &Matrix3<f64>) -> Option<Self::Prepared>;
    /// Squared error (px²) of one correspondence; NaN or infinity count as outliers.
    fn error(&self, prepared: &Self::Prepared, p1: [f64; 2], p2: [f64; 2]) -> f64;
    /// Least-squares model through `indices`; `current` is the model being refined, if any.
    fn fit(&self, indices: &[usize], current: Option<&Matrix3<f64>>) -> Option<Matrix3<f64>>;
    /// A better model when the sample that produced the new best `candidate` is degenerate
    /// (DEGENSAC for F); called on every new best sample.
    fn degenerate_alternative(
        &self,
        _sample: &[usize],
        _candidate: &Scored,
        _threshold2: f64,
        _rng: &mut Rng,
    ) -> Option<Scored> {
        None
    }
}

/// Settings of one run, already validated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub threshold2: f64,
    pub confidence: f64,
    pub max_iterations: usize,
    pub local_optimisation: bool,
}

/// The result of a run: the final model and the work done.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outcome {
    pub best: Scored,
    pub iterations: usize,
    pub lo_runs: usize,
}

/// One LO-RANSAC run over a family's data, with its reusable buffers.
pub(crate) struct Engine<'a, F: Family> {
    family: &'a F,
    threshold2: f64,
    truncation2: f64,
    /// Per-correspondence errors of the model last passed to [`Engine::evaluate`].
    errors: Vec<f64>,
    /// Hashes of (step, inlier set) pairs already refined (see `FIT_IS_SET_FUNCTION`).
    refined: HashSet<u64>,
    pool: Vec<usize>,
    subset: Vec<usize>,
}

impl<'a, F: Family> Engine<'a, F> {
    pub fn new(family: &'a F, threshold2: f64) -> Self {
        Self {
            family,
            threshold2,
            truncation2: MSAC_TRUNCATION * threshold2,
            errors: vec![0.0; family.data().len()],
            refined: HashSet::new(),
            pool: Vec::new(),
            subset: Vec::new(),
        }
    }

    pub fn errors(&self) -> &[f64] {
        &self.errors
    }

    /// MSAC score and inlier count of `model` on all correspondences; keeps the errors.
    pub fn evaluate(&mut self, model: &Matrix3<f64>) -> Option<Scored> {
        let prepared = self.family.prepare(model)?;
        let data = self.family.data();
        let (t2, c2) = (self.threshold2, self.truncation2);
        let (mut score, mut inliers) = (0.0, 0usize);
        for ((e_out, &a), &b) in self.errors.iter_mut().zip(&data.p1).zip(&data.p2) {
            let e = self.family.error(&prepared, a, b);
            *e_out = e;
            if e <= t2 {
                inliers += 1;
            }
            if e < c2 {
                score += 1.0 - e / c2;
            }
        }
        Some(Scored {
            model: *model,
            score,
            inliers,
        })
    }

    /// As [`Engine::evaluate`] but abandoning the model as soon as SPRT decides it is bad; does
    /// not keep the errors.
    fn evaluate_sprt(&self, model: &Matrix3<f64>, sprt: &mut Sprt) -> Option<Scored> {
        let prepared = self.family.prepare(model)?;
        let data = self.family.data();
        let (t2, c2) = (self.threshold2, self.truncation2);
        let (mut score, mut inliers) = (0.0, 0usize);
        let active = sprt.active();
        let (consistent, inconsistent) = sprt.factors();
        let a = sprt.threshold();
        let mut ratio = 1.0f64;
        for (k, (&p, &q)) in data.p1.iter().zip(&data.p2).enumerate() {
            let e = self.family.error(&prepared, p, q);
            if e <= t2 {
                inliers += 1;
                ratio *= consistent;
            } else {
                ratio *= inconsistent;
            }
            if e < c2 {
                score += 1.0 - e / c2;
            }
            if active && ratio > a {
                sprt.record_rejection(k + 1, inliers);
                return None;
            }
        }
        Some(Scored {
            model: *model,
            score,
            inliers,
        })
    }

    /// Indices whose last evaluated error is at most `limit2`, ascending.
    fn collect(&self, limit2: f64, out: &mut Vec<usize>) {
        out.clear();
        out.extend(
            self.errors
                .iter()
                .enumerate()
                .filter(|(_, &e)| e <= limit2)
                .map(|(i, _)| i),
        );
    }

    /// Inliers (at θ²) of `model`, ascending indices into the family's data.
    pub fn inliers_of(&mut self, model: &Matrix3<f64>) -> Vec<usize> {
        let mut out = Vec::new();
        if self.evaluate(model).is_some() {
            self.collect(self.threshold2, &mut out);
        }
        out
    }

    /// The LO step from `start`: returns the best model seen (possibly `start` itself).
    pub fn local_optimisation(
        &mut self,
        start: &Scored,
        repetitions: usize,
        rng: &mut Rng,
    ) -> Scored {
        let mut best = *start;
        let mut pool = std::mem::take(&mut self.pool);
        // Least squares on the generous inlier set of the sample's model; the inner samples are
        // then drawn from the inliers (at θ²) of that fit, or of `start` if it failed.
        if self.evaluate(&start.model).is_none() {
            self.pool = pool;
            return best;
        }
        self.collect(TC * MWM * self.threshold2, &mut pool);
        match self
            .family
            .fit(&pool, Some(&start.model))
            .and_then(|m| self.evaluate(&m))
        {
            Some(fitted) if fitted.score > best.score => best = fitted,
            Some(_) => {}
            None => {
                // Restore the errors of `start` for the inlier selection below.
                let _ = self.evaluate(&start.model);
            }
        }
        self.collect(self.threshold2, &mut pool);
        if pool.len() >= F::LO_INNER_MIN {
            let size = (pool.len() / 2).min(F::LO_SAMPLE_CAP);
            let mut subset = std::mem::take(&mut self.subset);
            for _ in 0..repetitions {
                draw_subset(rng, &pool, size, &mut subset);
                let Some(fitted) = self.family.fit(&subset, None) else {
                    continue;
                };
                let Some(scored) = self.evaluate(&fitted) else {
                    continue;
                };
                if scored.score > best.score {
                    best = scored;
                }
                self.iterative_least_squares(scored.model, &mut best);
            }
            self.subset = subset;
        }
        self.pool = pool;
        best
    }

    /// pydegensac's `exp_iterHcustom`: refit on the inliers at `MWM·ths` while `ths` shrinks from
    /// `TC·θ²` to `θ²`. Expects the errors of `model` to be current.
    fn iterative_least_squares(&mut self, model: Matrix3<f64>, best: &mut Scored) {
        let mut set = Vec::new();
        let mut current = model;
        let start = TC * self.threshold2;
        let step = (start - self.threshold2) / ILSQ_ITERS as f64;
        let mut ths = start;
        for k in 0..ILSQ_ITERS {
            self.collect(MWM * ths, &mut set);
            if set.len() < F::FIT_MIN {
                break;
            }
            if F::FIT_IS_SET_FUNCTION && !self.refined.insert(hash_set(k, &set)) {
                // This exact refinement already ran in an earlier LO: it would end the same way.
                break;
            }
            let Some(next) = self.family.fit(&set, Some(&current)) else {
                break;
            };
            let Some(scored) = self.evaluate(&next) else {
                break;
            };
            if scored.score > best.score {
                *best = scored;
            }
            current = next;
            ths -= step;
        }
    }

    /// The final polish: least squares on the inliers of the best model, re-selecting inliers a
    /// few times, kept only while the MSAC score does not get worse.
    fn final_refit(&mut self, mut best: Scored) -> Scored {
        let mut set = Vec::new();
        for _ in 0..FINAL_REFITS {
            if self.evaluate(&best.model).is_none() {
                break;
            }
            self.collect(self.threshold2, &mut set);
            if set.len() < F::FIT_MIN {
                break;
            }
            let Some(refit) = self
                .family
                .fit(&set, Some(&best.model))
                .and_then(|m| self.evaluate(&m))
            else {
                break;
            };
            if refit.score < best.score {
                break;
            }
            let same = refit.score == best.score;
            best = refit;
            if same {
                break;
            }
        }
        best
    }

    /// The whole LO-RANSAC loop. `None` when no sample gave a usable model.
    pub fn run(&mut self, settings: &Settings, rng: &mut Rng) -> Option<Outcome> {
        let n = self.family.data().len();
        let m = F::SAMPLE_SIZE;
        if n < m {
            return None;
        }
        let mut sprt = Sprt::new();
        let mut best: Option<Scored> = None;
        // Score of the best *sample* model (pydegensac's maxSs), which triggers LO, and the
        // candidate it gave (after the degeneracy check).
        let mut best_sample_score = f64::NEG_INFINITY;
        let mut candidate: Option<Scored> = None;
        let mut limit = settings.max_iterations;
        let (mut iterations, mut lo_runs) = (0usize, 0usize);
        let mut sample = [0usize; 8];
        let mut models = Models::new();
        while iterations < limit {
            iterations += 1;
            draw_distinct(rng, n, &mut sample[..m]);
            models.clear();
            self.family.minimal(&sample[..m], &mut models);
            for model in models.as_slice() {
                let Some(scored) = self.evaluate_sprt(model, &mut sprt) else {
                    continue;
                };
                if scored.score <= best_sample_score {
                    continue;
                }
                best_sample_score = scored.score;
                sprt.set_epsilon(scored.inliers as f64 / n as f64);
                let mut cand = scored;
                if let Some(alt) =
                    self.family
                        .degenerate_alternative(&sample[..m], &scored, self.threshold2, rng)
                {
                    if alt.score > cand.score {
                        cand = alt;
                    }
                }
                candidate = Some(cand);
                let mut top = best.map_or(cand, |b| if cand.score > b.score { cand } else { b });
                if settings.local_optimisation && iterations > LO_AFTER_SAMPLES {
                    lo_runs += 1;
                    let lo = self.local_optimisation(&cand, LO_REPETITIONS, rng);
                    if lo.score > top.score {
                        top = lo;
                    }
                }
                best = Some(top);
                limit = required_samples(
                    top.inliers + 1,
                    n,
                    m,
                    settings.confidence,
                    sprt.acceptance(),
                    settings.max_iterations,
                );
            }
            if settings.local_optimisation && iterations == LO_AFTER_SAMPLES && lo_runs == 0 {
                if let (Some(cand), Some(top)) = (candidate, best) {
                    if cand.inliers > 4 {
                        lo_runs += 1;
                        let lo = self.local_optimisation(&cand, LO_REPETITIONS, rng);
                        if lo.score > top.score {
                            best = Some(lo);
                            limit = required_samples(
                                lo.inliers + 1,
                                n,
                                m,
                                settings.confidence,
                                sprt.acceptance(),
                                settings.max_iterations,
                            );
                        }
                    }
                }
            }
        }
        let mut best = best?;
        if settings.local_optimisation {
            if lo_runs == 0 {
                if let Some(cand) = candidate {
                    lo_runs += 1;
                    let lo = self.local_optimisation(&cand, LO_REPETITIONS, rng);
                    if lo.score > best.score {
                        best = lo;
                    }
                }
            }
            best = self.final_refit(best);
        }
        Some(Outcome {
            best,
            iterations,
            lo_runs,
        })
    }
}

/// Fill `out` with distinct uniform indices below `n` (rejection sampling: `out` is tiny).
pub(crate) fn draw_distinct(rng: &mut Rng, n: usize, out: &mut [usize]) {
    for k in 0..out.len() {
        loop {
            let i = rng.random_range(0..n);
            if !out[..k].contains(&i) {
                out[k] = i;
                break;
            }
        }
    }
}

/// `size` distinct elements of `pool` drawn uniformly (partial Fisher–Yates on a copy).
fn draw_subset(rng: &mut Rng, pool: &[usize], size: usize, out: &mut Vec<usize>) {
    out.clear();
    out.extend_from_slice(pool);
    let size = size.min(out.len());
    for k in 0..size {
        let j = rng.random_range(k..out.len());
        out.swap(k, j);
    }
    out.truncate(size);
}

/// 64-bit FNV-1a hash of a refinement step and an (ascending) inlier set.
fn hash_set(step: usize, set: &[usize]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in std::iter::once(step).chain(set.iter().copied()) {
        for byte in (v as u64).to_le_bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn samples_are_distinct_and_in_range() {
        let mut rng = Rng::seed_from_u64(1);
        let mut s = [0usize; 7];
        for _ in 0..1000 {
            draw_distinct(&mut rng, 9, &mut s);
            for (i, a) in s.iter().enumerate() {
                assert!(*a < 9);
                assert!(!s[i + 1..].contains(a));
            }
        }
        let pool: Vec<usize> = (100..130).collect();
        let mut out = Vec::new();
        draw_subset(&mut rng, &pool, 12, &mut out);
        assert_eq!(out.len(), 12);
        let mut sorted = out.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 12);
        assert!(out.iter().all(|v| pool.contains(v)));
    }

    #[test]
    fn set_hash_distinguishes_steps_and_sets() {
        assert_ne!(hash_set(0, &[1, 2, 3]), hash_set(1, &[1, 2, 3]));
        assert_ne!(hash_set(0, &[1, 2, 3]), hash_set(0, &[1, 2, 4]));
        assert_eq!(hash_set(2, &[5, 9]), hash_set(2, &[5, 9]));
    }
}
