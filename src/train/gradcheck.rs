//! Finite-difference gradient checks, for the tests of every backward pass here and for the
//! CUDA port's checks against the CPU.
//!
//! The check: central differences `(L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h` of a scalar `L` computed in
//! f64, against the analytic gradient. The error of a coordinate is
//! `|numeric − analytic| / max(|numeric|, |analytic|, floor)` with `floor = 1e-2 · max |analytic|`,
//! so gradients far below the typical size are judged on an absolute scale: an f32 forward pass
//! carries rounding noise of about `1e-7·|L| / h` that no small gradient could beat relatively.
//! Truncation error is O(h²·L'''), so `h` is chosen per test: 1e-3 for (piecewise) polynomial
//! layers, larger for deep f32 chains where rounding noise dominates.

use super::rng::Rng;

/// `n` values uniform in `[-scale, scale)`, seeded.
pub fn random_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.range(-1.0, 1.0) * scale as f64) as f32)
        .collect()
}

/// The outcome of [`check_gradient`].
#[derive(Clone, Debug)]
pub struct GradReport {
    /// Coordinates compared.
    pub checked: usize,
    /// The worst coordinate, its error and both gradients there.
    pub worst_index: usize,
    pub worst_error: f64,
    pub numeric: f64,
    pub analytic: f64,
    pub tolerance: f64,
    /// Largest |analytic| (the scale of the floor).
    pub scale: f64,
}

impl GradReport {
    pub fn ok(&self) -> bool {
        self.worst_error <= self.tolerance
    }

    /// # Panics
    /// With the details when the check failed.
    pub fn assert_ok(&self, what: &str) {
        assert!(
            self.ok(),
            "{what}: gradient check failed at coordinate {} ({} checked): numeric {:.6e}, analytic {:.6e}, \
             error {:.3e} > {:.1e} (gradient scale {:.3e})",
            self.worst_index,
            self.checked,
            self.numeric,
            self.analytic,
            self.worst_error,
            self.tolerance,
            self.scale
        );
    }
}

/// Compares `analytic` with central differences of `loss` at `x` with step `h`, on every
/// coordinate (or 300 of them, the largest analytic ones and an even spread, for long vectors).
///
/// # Panics
/// If `analytic` and `x` differ in length.
pub fn check_gradient(
    mut loss: impl FnMut(&[f32]) -> f64,
    x: &[f32],
    analytic: &[f32],
    h: f32,
    tolerance: f64,
) -> GradReport {
    assert_eq!(x.len(), analytic.len(), "gradient length");
    let scale = analytic.iter().fold(0.0f64, |m, g| m.max(g.abs() as f64));
    let indices: Vec<usize> = if x.len() <= 300 {
        (0..x.len()).collect()
    } else {
        let mut by_size: Vec<usize> = (0..x.len()).collect();
        by_size.sort_by(|&a, &b| analytic[b].abs().total_cmp(&analytic[a].abs()));
        let mut idx: Vec<usize> = by_size[..100].to_vec();
        idx.extend((0..200).map(|i| i * x.len() / 200));
        idx.sort_unstable();
        idx.dedup();
        idx
    };
    let mut xs = x.to_vec();
    let mut report = GradReport {
        checked: indices.len(),
        worst_index: 0,
        worst_error: 0.0,
        numeric: 0.0,
        analytic: 0.0,
        tolerance,
        scale,
    };
    let floor = (1e-2 * scale).max(1e-30);
    for &i in &indices {
        let (plus, minus) = (x[i] + h, x[i] - h);
        xs[i] = plus;
        let lp = loss(&xs);
        xs[i] = minus;
        let lm = loss(&xs);
        xs[i] = x[i];
        let numeric = (lp - lm) / (plus as f64 - minus as f64);
        let a = analytic[i] as f64;
        let err = (numeric - a).abs() / numeric.abs().max(a.abs()).max(floor);
        if err > report.worst_error || i == indices[0] {
            report.worst_error = report.worst_error.max(err);
            if err >= report.worst_error {
                report.worst_index = i;
                report.numeric = numeric;
                report.analytic = a;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_wrong_gradient() {
        let x = random_vec(10, 1, 1.0);
        let loss = |v: &[f32]| v.iter().map(|&a| (a as f64).powi(3)).sum::<f64>();
        let good: Vec<f32> = x.iter().map(|a| 3.0 * a * a).collect();
        check_gradient(loss, &x, &good, 1e-3, 1e-3).assert_ok("cubic");
        let mut bad = good.clone();
        bad[4] *= 1.1;
        assert!(!check_gradient(loss, &x, &bad, 1e-3, 1e-3).ok());
    }
}
