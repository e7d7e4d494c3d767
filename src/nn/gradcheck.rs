//! Finite-difference gradient checks, for the tests of every backward pass here and for the
//! CUDA port's checks against the CPU.
//!
//! The check: differences of a scalar `L` (accumulated in f64) along each coordinate, against
//! the analytic gradient. Three estimates are formed, the central difference
//! `(L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h` and the two one-sided ones, and the coordinate's error is
//! that of the best of them, `|numeric − analytic| / max(|numeric|, |analytic|, floor)` with
//! `floor = 1e-2 · max |analytic|`:
//! - the one-sided estimates make the check valid for piecewise-smooth functions (ReLU, the hard
//!   minimum of the losses, SIFT's orientation bins and clipping): a kink inside one half of the
//!   interval spoils the central estimate and that side's, not the other side's, whereas a wrong
//!   analytic value matches none of them;
//! - the floor judges gradients far below the typical size on an absolute scale: an f32 forward
//!   pass carries rounding noise of about `1e-7·|L| / h` that a tiny gradient cannot beat
//!   relatively.
//!
//! One-sided differences have O(h·L'') truncation error, so tolerances are a few 1e-3 to 1e-2.

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
    /// The worst coordinate's error, relative to the larger of its gradients and the floor.
    pub worst_error: f64,
    /// The central-difference gradient at the worst coordinate.
    pub numeric: f64,
    /// The analytic gradient at the worst coordinate.
    pub analytic: f64,
    /// The largest error that passes.
    pub tolerance: f64,
    /// Largest |analytic| (the scale of the floor).
    pub scale: f64,
    /// Share of the checked coordinates whose error is within the tolerance.
    pub fraction_ok: f64,
}

impl GradReport {
    /// Every checked coordinate is within the tolerance.
    pub fn ok(&self) -> bool {
        self.worst_error <= self.tolerance
    }

    /// At least `min_fraction` of the checked coordinates are within the tolerance: the check
    /// for deep ReLU networks in f32, where a perturbation of ±h moves some pre-activations across
    /// 0 (the derivative jumps there) and rounding noise is `~1e-7·|L|/h`, so a few coordinates
    /// disagree even when the backward pass is exact. A wrong backward pass (missing term, wrong
    /// index or scale) makes most coordinates disagree.
    pub fn mostly_ok(&self, min_fraction: f64) -> bool {
        self.fraction_ok >= min_fraction
    }

    /// # Panics
    /// With the details when fewer than `min_fraction` of the coordinates agree.
    pub fn assert_mostly_ok(&self, what: &str, min_fraction: f64) {
        assert!(
            self.mostly_ok(min_fraction),
            "{what}: only {:.1} % of {} coordinates agree within {:.1e} (need {:.1} %); worst at \
             {}: numeric {:.6e}, analytic {:.6e} (gradient scale {:.3e})",
            100.0 * self.fraction_ok,
            self.checked,
            self.tolerance,
            100.0 * min_fraction,
            self.worst_index,
            self.numeric,
            self.analytic,
            self.scale
        );
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

/// Compares `analytic` with finite differences of `loss` at `x` with step `h`, on every
/// coordinate, or on 300 of them for long vectors (see [`check_gradient_n`]).
///
/// # Panics
/// If `analytic` and `x` differ in length.
pub fn check_gradient(
    loss: impl FnMut(&[f32]) -> f64,
    x: &[f32],
    analytic: &[f32],
    h: f32,
    tolerance: f64,
) -> GradReport {
    check_gradient_n(loss, x, analytic, h, tolerance, 300)
}

/// [`check_gradient`] on at most `max_coords` coordinates: a third of them the largest analytic
/// gradients, the rest evenly spread.
pub fn check_gradient_n(
    mut loss: impl FnMut(&[f32]) -> f64,
    x: &[f32],
    analytic: &[f32],
    h: f32,
    tolerance: f64,
    max_coords: usize,
) -> GradReport {
    assert_eq!(x.len(), analytic.len(), "gradient length");
    let scale = analytic.iter().fold(0.0f64, |m, g| m.max(g.abs() as f64));
    let indices: Vec<usize> = if x.len() <= max_coords {
        (0..x.len()).collect()
    } else {
        let mut by_size: Vec<usize> = (0..x.len()).collect();
        by_size.sort_by(|&a, &b| analytic[b].abs().total_cmp(&analytic[a].abs()));
        let top = max_coords / 3;
        let mut idx: Vec<usize> = by_size[..top].to_vec();
        let spread = max_coords - top;
        idx.extend((0..spread).map(|i| i * x.len() / spread));
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
        fraction_ok: 0.0,
    };
    let mut within = 0usize;
    let floor = (1e-2 * scale).max(1e-30);
    let l0 = loss(x);
    for &i in &indices {
        let (plus, minus) = (x[i] + h, x[i] - h);
        xs[i] = plus;
        let lp = loss(&xs);
        xs[i] = minus;
        let lm = loss(&xs);
        xs[i] = x[i];
        let (hp, hm) = (plus as f64 - x[i] as f64, x[i] as f64 - minus as f64);
        let a = analytic[i] as f64;
        let error = |numeric: f64| (numeric - a).abs() / numeric.abs().max(a.abs()).max(floor);
        // Central difference, and the one-sided ones: a kink (ReLU, max, clip) inside one half of
        // the interval spoils the central and that side's difference but not the other side's.
        let (numeric, err) = [(lp - lm) / (hp + hm), (lp - l0) / hp, (l0 - lm) / hm]
            .into_iter()
            .map(|d| (d, error(d)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("three estimates");
        within += usize::from(err <= tolerance);
        if err >= report.worst_error {
            report.worst_error = err;
            report.worst_index = i;
            report.numeric = numeric;
            report.analytic = a;
        }
    }
    report.fraction_ok = within as f64 / indices.len().max(1) as f64;
    report
}

/// The relative error of the directional derivative along `direction`:
/// `|D − ⟨analytic, v⟩| / max(|D|, |⟨analytic, v⟩|)` with `D` the central difference of `loss`
/// along `v` with step `h`. It aggregates every coordinate, so a wrong gradient anywhere shows,
/// while the rounding noise and the kinks crossed (each a tiny share of the total) average out.
/// Used for inputs of deep ReLU networks, whose per-pixel gradients are too small for
/// coordinate-wise differences in f32.
pub fn directional_error(
    mut loss: impl FnMut(&[f32]) -> f64,
    x: &[f32],
    analytic: &[f32],
    direction: &[f32],
    h: f32,
) -> f64 {
    assert_eq!(x.len(), direction.len());
    assert_eq!(x.len(), analytic.len());
    let at = |t: f32| -> Vec<f32> { x.iter().zip(direction).map(|(a, v)| a + t * v).collect() };
    let numeric = (loss(&at(h)) - loss(&at(-h))) / (2.0 * h as f64);
    let predicted: f64 = analytic
        .iter()
        .zip(direction)
        .map(|(g, v)| *g as f64 * *v as f64)
        .sum();
    (numeric - predicted).abs() / numeric.abs().max(predicted.abs()).max(1e-30)
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
