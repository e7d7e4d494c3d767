//! Batch normalisation over NHWC buffers (`rows × channels`, channel fastest), in training mode
//! (batch statistics) and inference mode (running statistics), forward and backward, following
//! PyTorch's `BatchNorm2d`:
//! - training: `x̂ = (x − μ_B) / sqrt(σ²_B + eps)` with the biased batch variance, and the running
//!   statistics updated as `r ← (1 − momentum)·r + momentum·s` with the *unbiased* variance
//!   (`σ²_B · m / (m − 1)`), momentum 0.1;
//! - backward (training): `dx = inv_std · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂))`, the means over the
//!   `m` values of a channel (the statistics depend on every input);
//! - inference: `x̂ = (x − r_μ) / sqrt(r_σ² + eps)`, backward `dx = inv_std · dx̂`.
//!
//! AffNet and HardNet use `affine=False` (no γ, β): the layer's output is `x̂` itself, computed in
//! place. The affine variant is [`affine_forward`]/[`affine_backward`] on top of `x̂`.
//!
//! A ReLU after the normalisation can be fused into the backward pass (`relu_after`): the incoming
//! gradient is then w.r.t. `max(x̂, 0)` and masked with `x̂ > 0` first (only without affine).
//!
//! Statistics are accumulated in f64 per group of rows (shifted by the group's first row to avoid
//! cancellation) and merged in group order (Chan et al.'s pairwise update), so they do not depend
//! on the thread count.

use rayon::prelude::*;

use crate::nn::layers::BATCHNORM_EPS;
use crate::train::parallel::{group_ranges, split_mut};

/// PyTorch's default running-statistics momentum.
pub const BATCHNORM_MOMENTUM: f32 = 0.1;

/// A batch-norm layer's state: running statistics and constants.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
    pub eps: f32,
    pub momentum: f32,
}

/// The statistics one training forward pass normalised with (what backward needs besides `x̂`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// Biased (population) variance of the batch.
    pub var: Vec<f32>,
    /// `1 / sqrt(var + eps)`.
    pub inv_std: Vec<f32>,
    /// Values per channel (`m`).
    pub count: usize,
}

impl BatchNorm {
    /// Fresh statistics (mean 0, variance 1), as PyTorch initialises them.
    pub fn new(channels: usize) -> Self {
        BatchNorm {
            running_mean: vec![0.0; channels],
            running_var: vec![1.0; channels],
            eps: BATCHNORM_EPS,
            momentum: BATCHNORM_MOMENTUM,
        }
    }

    pub fn channels(&self) -> usize {
        self.running_mean.len()
    }

    /// Training forward in place: `x ← x̂` with the batch statistics, returned in `stats`.
    /// Updates the running statistics when `update_running`.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of the channel count, or there are fewer than 2 rows.
    pub fn forward_train(&mut self, x: &mut [f32], stats: &mut BatchStats, update_running: bool) {
        let c = self.channels();
        batch_statistics(x, c, self.eps, stats);
        normalise(x, c, &stats.mean, &stats.inv_std);
        if update_running {
            let unbias = stats.count as f64 / (stats.count as f64 - 1.0);
            let m = self.momentum as f64;
            for ch in 0..c {
                self.running_mean[ch] =
                    ((1.0 - m) * self.running_mean[ch] as f64 + m * stats.mean[ch] as f64) as f32;
                self.running_var[ch] = ((1.0 - m) * self.running_var[ch] as f64
                    + m * stats.var[ch] as f64 * unbias)
                    as f32;
            }
        }
    }

    /// `1 / sqrt(running_var + eps)` per channel.
    pub fn running_inv_std(&self) -> Vec<f32> {
        self.running_var
            .iter()
            .map(|&v| (1.0 / (v as f64 + self.eps as f64).sqrt()) as f32)
            .collect()
    }

    /// Inference forward in place with the running statistics.
    pub fn forward_eval(&self, x: &mut [f32]) {
        normalise(
            x,
            self.channels(),
            &self.running_mean,
            &self.running_inv_std(),
        );
    }
}

/// Mean and biased variance per channel of `x` (`rows × c`), and `inv_std` with `eps`.
///
/// # Panics
/// If `x.len()` is not a multiple of `c` or holds fewer than 2 rows.
pub fn batch_statistics(x: &[f32], c: usize, eps: f32, stats: &mut BatchStats) {
    assert!(
        c > 0 && x.len().is_multiple_of(c),
        "batch norm input length"
    );
    let rows = x.len() / c;
    assert!(
        rows >= 2,
        "batch norm in training mode needs at least 2 values per channel"
    );
    let ranges = group_ranges(rows);
    // Per group: [mean; m2] per channel.
    let parts: Vec<Vec<f64>> = ranges
        .par_iter()
        .map(|r| {
            let g = &x[r.start * c..r.end * c];
            let shift = &g[..c];
            let (mut s1, mut s2) = (vec![0.0f64; c], vec![0.0f64; c]);
            for row in g.chunks_exact(c) {
                for ch in 0..c {
                    let d = (row[ch] - shift[ch]) as f64;
                    s1[ch] += d;
                    s2[ch] += d * d;
                }
            }
            let n = r.len() as f64;
            let mut out = vec![0.0; 2 * c];
            for ch in 0..c {
                out[ch] = shift[ch] as f64 + s1[ch] / n;
                out[c + ch] = (s2[ch] - s1[ch] * s1[ch] / n).max(0.0);
            }
            out
        })
        .collect();
    let (mut mean, mut m2, mut count) = (vec![0.0f64; c], vec![0.0f64; c], 0.0f64);
    for (r, p) in ranges.iter().zip(&parts) {
        let nb = r.len() as f64;
        let n = count + nb;
        for ch in 0..c {
            let delta = p[ch] - mean[ch];
            mean[ch] += delta * nb / n;
            m2[ch] += p[c + ch] + delta * delta * count * nb / n;
        }
        count = n;
    }
    stats.count = rows;
    stats.mean = mean.iter().map(|&m| m as f32).collect();
    stats.var = m2.iter().map(|&v| (v / count) as f32).collect();
    stats.inv_std = m2
        .iter()
        .map(|&v| (1.0 / (v / count + eps as f64).sqrt()) as f32)
        .collect();
}

/// `x ← (x − mean)·inv_std` per channel, in place.
pub fn normalise(x: &mut [f32], c: usize, mean: &[f32], inv_std: &[f32]) {
    assert!(
        c > 0 && x.len().is_multiple_of(c),
        "batch norm input length"
    );
    let rows = x.len() / c;
    let ranges = group_ranges(rows);
    split_mut(x, c, &ranges).into_par_iter().for_each(|g| {
        for row in g.chunks_exact_mut(c) {
            for ch in 0..c {
                row[ch] = (row[ch] - mean[ch]) * inv_std[ch];
            }
        }
    });
}

/// Training backward in place: `dy` (gradient w.r.t. `x̂`, or w.r.t. `max(x̂, 0)` when
/// `relu_after`) becomes the gradient w.r.t. the layer input.
///
/// # Panics
/// If the lengths disagree.
pub fn backward_train(xhat: &[f32], dy: &mut [f32], stats: &BatchStats, relu_after: bool) {
    let c = stats.mean.len();
    assert_eq!(xhat.len(), dy.len(), "batch norm gradient length");
    assert!(
        c > 0 && xhat.len().is_multiple_of(c),
        "batch norm input length"
    );
    let rows = xhat.len() / c;
    let ranges = group_ranges(rows);
    let parts: Vec<Vec<f64>> = ranges
        .par_iter()
        .zip(split_mut(dy, c, &ranges).into_par_iter())
        .map(|(r, dg)| {
            let xg = &xhat[r.start * c..r.end * c];
            let (mut s, mut sx) = (vec![0.0f64; c], vec![0.0f64; c]);
            for (drow, xrow) in dg.chunks_exact_mut(c).zip(xg.chunks_exact(c)) {
                for ch in 0..c {
                    if relu_after && xrow[ch] <= 0.0 {
                        drow[ch] = 0.0;
                    }
                    s[ch] += drow[ch] as f64;
                    sx[ch] += (drow[ch] * xrow[ch]) as f64;
                }
            }
            s.extend(sx);
            s
        })
        .collect();
    let (mut mean_d, mut mean_dx) = (vec![0.0f64; c], vec![0.0f64; c]);
    for p in &parts {
        for ch in 0..c {
            mean_d[ch] += p[ch];
            mean_dx[ch] += p[c + ch];
        }
    }
    let a: Vec<f32> = mean_d.iter().map(|v| (v / rows as f64) as f32).collect();
    let b: Vec<f32> = mean_dx.iter().map(|v| (v / rows as f64) as f32).collect();
    let inv = &stats.inv_std;
    split_mut(dy, c, &ranges)
        .into_par_iter()
        .zip(ranges.par_iter())
        .for_each(|(dg, r)| {
            let xg = &xhat[r.start * c..r.end * c];
            for (drow, xrow) in dg.chunks_exact_mut(c).zip(xg.chunks_exact(c)) {
                for ch in 0..c {
                    drow[ch] = inv[ch] * (drow[ch] - a[ch] - xrow[ch] * b[ch]);
                }
            }
        });
}

/// Inference backward in place: `dy ← dy · inv_std` (masked by `x̂ > 0` first when `relu_after`).
pub fn backward_eval(xhat: &[f32], dy: &mut [f32], inv_std: &[f32], relu_after: bool) {
    let c = inv_std.len();
    assert_eq!(xhat.len(), dy.len(), "batch norm gradient length");
    dy.par_chunks_mut(c * 256)
        .zip(xhat.par_chunks(c * 256))
        .for_each(|(dg, xg)| {
            for (drow, xrow) in dg.chunks_exact_mut(c).zip(xg.chunks_exact(c)) {
                for ch in 0..c {
                    let keep = !relu_after || xrow[ch] > 0.0;
                    drow[ch] = if keep { drow[ch] * inv_std[ch] } else { 0.0 };
                }
            }
        });
}

/// The affine part of `BatchNorm2d(affine=True)`: `y = γ·x̂ + β` per channel.
pub fn affine_forward(xhat: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    let c = gamma.len();
    assert_eq!(xhat.len(), y.len());
    for (yr, xr) in y.chunks_exact_mut(c).zip(xhat.chunks_exact(c)) {
        for ch in 0..c {
            yr[ch] = gamma[ch] * xr[ch] + beta[ch];
        }
    }
}

/// Backward of [`affine_forward`]: `dγ = Σ dy·x̂`, `dβ = Σ dy` (overwritten), and `dy ← dy·γ` in
/// place (the gradient w.r.t. `x̂`, ready for [`backward_train`]).
pub fn affine_backward(
    xhat: &[f32],
    dy: &mut [f32],
    gamma: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let c = gamma.len();
    let (mut dg, mut dbt) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (dr, xr) in dy.chunks_exact_mut(c).zip(xhat.chunks_exact(c)) {
        for ch in 0..c {
            dg[ch] += (dr[ch] * xr[ch]) as f64;
            dbt[ch] += dr[ch] as f64;
            dr[ch] *= gamma[ch];
        }
    }
    for ch in 0..c {
        dgamma[ch] = dg[ch] as f32;
        dbeta[ch] = dbt[ch] as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::gradcheck::{check_gradient, random_vec};

    /// The training forward in f64 from the definition, for the loss `Σ r·y` (with the optional
    /// affine part and ReLU).
    fn loss_train(x: &[f32], c: usize, r: &[f32], gb: Option<(&[f32], &[f32])>, relu: bool) -> f64 {
        let rows = x.len() / c;
        let mut total = 0.0;
        for ch in 0..c {
            let vals: Vec<f64> = (0..rows).map(|i| x[i * c + ch] as f64).collect();
            let mean = vals.iter().sum::<f64>() / rows as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / rows as f64;
            for (i, v) in vals.iter().enumerate() {
                let mut y = (v - mean) / (var + BATCHNORM_EPS as f64).sqrt();
                if let Some((g, b)) = gb {
                    y = g[ch] as f64 * y + b[ch] as f64;
                }
                if relu {
                    y = y.max(0.0);
                }
                total += y * r[i * c + ch] as f64;
            }
        }
        total
    }

    #[test]
    fn training_forward_statistics_and_running_update() {
        let (c, rows) = (3, 37);
        let x: Vec<f32> = random_vec(rows * c, 1, 2.0)
            .iter()
            .map(|v| v + 5.0)
            .collect();
        let mut bn = BatchNorm::new(c);
        let mut y = x.clone();
        let mut stats = BatchStats::default();
        bn.forward_train(&mut y, &mut stats, true);
        for ch in 0..c {
            let vals: Vec<f64> = (0..rows).map(|i| x[i * c + ch] as f64).collect();
            let mean = vals.iter().sum::<f64>() / rows as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / rows as f64;
            assert!((stats.mean[ch] as f64 - mean).abs() < 1e-5);
            assert!((stats.var[ch] as f64 - var).abs() < 1e-5);
            // PyTorch: running_var uses the unbiased variance.
            let rv = 0.9 + 0.1 * var * rows as f64 / (rows as f64 - 1.0);
            assert!((bn.running_var[ch] as f64 - rv).abs() < 1e-5);
            assert!((bn.running_mean[ch] as f64 - 0.1 * mean).abs() < 1e-5);
            let out: Vec<f32> = (0..rows).map(|i| y[i * c + ch]).collect();
            let m = out.iter().map(|&v| v as f64).sum::<f64>() / rows as f64;
            assert!(m.abs() < 1e-5);
        }
    }

    #[test]
    fn training_backward_matches_finite_differences() {
        for (c, rows, relu) in [(3, 37, false), (5, 23, true), (1, 7, false)] {
            let x = random_vec(rows * c, 2 + c as u64, 1.5);
            let r = random_vec(rows * c, 3 + c as u64, 1.0);
            let mut xhat = x.clone();
            let mut stats = BatchStats::default();
            BatchNorm::new(c).forward_train(&mut xhat, &mut stats, false);
            let mut d = r.clone();
            backward_train(&xhat, &mut d, &stats, relu);
            check_gradient(|v| loss_train(v, c, &r, None, relu), &x, &d, 1e-3, 2e-3)
                .assert_ok("batch norm (train)");
        }
    }

    #[test]
    fn affine_variant_matches_finite_differences() {
        let (c, rows) = (4, 29);
        let x = random_vec(rows * c, 7, 1.5);
        let r = random_vec(rows * c, 8, 1.0);
        let g = random_vec(c, 9, 1.0);
        let b = random_vec(c, 10, 1.0);
        let mut xhat = x.clone();
        let mut stats = BatchStats::default();
        BatchNorm::new(c).forward_train(&mut xhat, &mut stats, false);
        let mut d = r.clone();
        let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
        affine_backward(&xhat, &mut d, &g, &mut dg, &mut db);
        backward_train(&xhat, &mut d, &stats, false);
        check_gradient(
            |v| loss_train(v, c, &r, Some((&g, &b)), false),
            &x,
            &d,
            1e-3,
            2e-3,
        )
        .assert_ok("affine batch norm dx");
        check_gradient(
            |v| loss_train(&x, c, &r, Some((v, &b)), false),
            &g,
            &dg,
            1e-3,
            2e-3,
        )
        .assert_ok("affine batch norm dγ");
        check_gradient(
            |v| loss_train(&x, c, &r, Some((&g, v)), false),
            &b,
            &db,
            1e-3,
            2e-3,
        )
        .assert_ok("affine batch norm dβ");
    }

    #[test]
    fn eval_mode_forward_and_backward() {
        let (c, rows) = (3, 11);
        let x = random_vec(rows * c, 11, 1.5);
        let r = random_vec(rows * c, 12, 1.0);
        let mut bn = BatchNorm::new(c);
        bn.running_mean = vec![0.3, -0.2, 0.1];
        bn.running_var = vec![0.5, 2.0, 1.5];
        let loss = |v: &[f32]| -> f64 {
            let mut y = v.to_vec();
            bn.forward_eval(&mut y);
            y.iter().zip(&r).map(|(y, r)| (y.max(0.0) * r) as f64).sum()
        };
        let mut xhat = x.clone();
        bn.forward_eval(&mut xhat);
        let mut d = r.clone();
        backward_eval(&xhat, &mut d, &bn.running_inv_std(), true);
        check_gradient(loss, &x, &d, 1e-3, 2e-3).assert_ok("batch norm (eval)");
    }
}
