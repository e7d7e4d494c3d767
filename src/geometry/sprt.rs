//! Wald's sequential probability ratio test for hypothesis verification (Chum & Matas, "Optimal
//! randomized RANSAC", 2008), used to stop scoring a hypothesis that is clearly bad.
//!
//! Why we need it although pydegensac has none: at the protocol's settings F estimation is capped
//! at 10,000 samples (32k would be needed at 30 % inliers), each giving up to three 7-point models,
//! and scoring every model on 3,000 correspondences is ~60 M Sampson errors per pair. SPRT rejects
//! a bad model after a few dozen points. It is made conservative: the decision threshold is fixed at
//! A = 1000, so a good model is wrongly rejected with probability at most 1/A = 0.1 % (the
//! stopping rule accounts for it), and ε is the inlier ratio of the best *sample* so far, so only
//! models that would not have beaten it anyway are at risk: the LO-RANSAC control flow, which only
//! reacts to a new best sample score, is essentially unchanged.

/// Likelihood-ratio threshold A above which a model is rejected.
const DECISION_THRESHOLD: f64 = 1000.0;
/// Initial guess of δ, the probability that a correspondence is consistent with a bad model, and
/// the weight (in points) of that guess against the estimate from rejected models.
const INITIAL_DELTA: f64 = 0.01;
const PRIOR_POINTS: f64 = 100.0;

#[derive(Clone, Debug)]
pub(crate) struct Sprt {
    epsilon: f64,
    delta: f64,
    consistent_seen: f64,
    tested_seen: f64,
}

impl Sprt {
    pub fn new() -> Self {
        Self {
            epsilon: 0.0,
            delta: INITIAL_DELTA,
            consistent_seen: INITIAL_DELTA * PRIOR_POINTS,
            tested_seen: PRIOR_POINTS,
        }
    }

    /// The test only helps (and is only valid) when good models are clearly more consistent than
    /// bad ones; until a decent model is known it stays off and every model is scored fully.
    pub fn active(&self) -> bool {
        self.epsilon > 1.5 * self.delta && self.epsilon < 1.0
    }

    /// Multipliers of the likelihood ratio for a consistent and an inconsistent point.
    pub fn factors(&self) -> (f64, f64) {
        (
            self.delta / self.epsilon,
            (1.0 - self.delta) / (1.0 - self.epsilon),
        )
    }

    pub fn threshold(&self) -> f64 {
        DECISION_THRESHOLD
    }

    /// Set ε from the inlier ratio of the best sample so far.
    pub fn set_epsilon(&mut self, epsilon: f64) {
        self.epsilon = epsilon.clamp(0.0, 1.0);
    }

    /// Update δ from a rejected model: `consistent` of its first `tested` points were consistent.
    pub fn record_rejection(&mut self, tested: usize, consistent: usize) {
        self.tested_seen += tested as f64;
        self.consistent_seen += consistent as f64;
        self.delta = (self.consistent_seen / self.tested_seen).clamp(1e-4, 0.5);
    }

    /// Probability that a good model survives the test, for the stopping rule.
    pub fn acceptance(&self) -> f64 {
        if self.active() {
            1.0 - 1.0 / DECISION_THRESHOLD
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_until_epsilon_exceeds_delta_and_rejections_move_delta() {
        let mut s = Sprt::new();
        assert!(!s.active());
        assert_eq!(s.acceptance(), 1.0);
        s.set_epsilon(0.012);
        assert!(!s.active());
        s.set_epsilon(0.3);
        assert!(s.active());
        let (pos, neg) = s.factors();
        assert!(pos < 1.0 && neg > 1.0);
        s.record_rejection(100, 10);
        assert!(
            s.factors().0 > pos,
            "δ went up after a model with 10 % consistency"
        );
        s.set_epsilon(1.0);
        assert!(!s.active());
    }
}
