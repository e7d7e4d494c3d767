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
use crate::nn::parallel::{group_ranges, split_mut};

/// Rows per f32 partial sum before it is added into the f64 total (bounds the f32 rounding).
const PARTIAL_ROWS: usize = 64;

/// PyTorch's default running-statistics momentum.
pub const BATCHNORM_MOMENTUM: f32 = 0.1;

/// A batch-norm layer's state: running statistics and constants.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    /// Per-channel running mean.
    pub running_mean: Vec<f32>,
    /// Per-channel running (unbiased) variance.
    pub running_var: Vec<f32>,
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Weight of the batch statistic in the running-statistics update (PyTorch's momentum).
    pub momentum: f32,
}

/// The per-channel statistics a forward pass normalised with (what backward needs besides the
/// input): the batch's in training mode, the running ones in inference mode.
///
/// `T` holds each per-channel vector: a host `Vec<f32>` (the default) or a backend's buffer
/// (`nn::backend::Backend::Buf`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchStats<T = Vec<f32>> {
    /// Per-channel mean.
    pub mean: T,
    /// Biased (population) variance (training mode), or the running variance.
    pub var: T,
    /// `1 / sqrt(var + eps)`.
    pub inv_std: T,
    /// Values per channel (`m`); 0 for running statistics.
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

    /// The number of channels normalised.
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
            self.update_running(stats);
        }
    }

    /// `r ← (1 − momentum)·r + momentum·s`, with the unbiased batch variance for `r_σ²`.
    pub fn update_running(&mut self, stats: &BatchStats) {
        let unbias = stats.count as f64 / (stats.count as f64 - 1.0);
        let m = self.momentum as f64;
        for (((rm, rv), &mean), &var) in self
            .running_mean
            .iter_mut()
            .zip(self.running_var.iter_mut())
            .zip(&stats.mean)
            .zip(&stats.var)
        {
            *rm = ((1.0 - m) * *rm as f64 + m * mean as f64) as f32;
            *rv = ((1.0 - m) * *rv as f64 + m * var as f64 * unbias) as f32;
        }
    }

    /// The running statistics as [`BatchStats`] (for inference mode).
    pub fn running_stats(&self) -> BatchStats {
        BatchStats {
            mean: self.running_mean.clone(),
            var: self.running_var.clone(),
            inv_std: inv_std(&self.running_var, self.eps),
            count: 0,
        }
    }

    /// Inference forward in place with the running statistics.
    pub fn forward_eval(&self, x: &mut [f32]) {
        let r = self.running_stats();
        normalise(x, self.channels(), &r.mean, &r.inv_std);
    }
}

/// `1 / sqrt(var + eps)` per channel, in f64 (inference with running statistics).
pub fn inv_std(var: &[f32], eps: f32) -> Vec<f32> {
    var.iter()
        .map(|&v| (1.0 / (v as f64 + eps as f64).sqrt()) as f32)
        .collect()
}

/// Per-channel moments of a stream of rows (`c` values each), for one group of a batch:
/// sums of `v − shift` and `(v − shift)²` with the shift the group's first row (no
/// cancellation), accumulated in f32 over at most `PARTIAL_ROWS` rows (vectorised over
/// channels) and then in f64.
#[derive(Clone, Debug, Default)]
pub struct Moments {
    count: usize,
    shift: Vec<f32>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    p1: Vec<f32>,
    p2: Vec<f32>,
    pending: usize,
}

impl Moments {
    /// Empty moments of `c` channels.
    pub fn new(c: usize) -> Self {
        Moments {
            count: 0,
            shift: Vec::new(),
            s1: vec![0.0; c],
            s2: vec![0.0; c],
            p1: vec![0.0; c],
            p2: vec![0.0; c],
            pending: 0,
        }
    }

    /// Adds rows (`rows.len()` a multiple of `c`).
    pub fn add_rows(&mut self, rows: &[f32]) {
        let c = self.s1.len();
        if rows.is_empty() {
            return;
        }
        if self.shift.is_empty() {
            self.shift = rows[..c].to_vec();
        }
        for row in rows.chunks_exact(c) {
            for (((a, b), &v), &k) in self
                .p1
                .iter_mut()
                .zip(self.p2.iter_mut())
                .zip(row)
                .zip(&self.shift)
            {
                let d = v - k;
                *a += d;
                *b += d * d;
            }
            self.pending += 1;
            if self.pending == PARTIAL_ROWS {
                self.flush();
            }
        }
        self.count += rows.len() / c;
    }

    fn flush(&mut self) {
        for (s, p) in self.s1.iter_mut().zip(self.p1.iter_mut()) {
            *s += *p as f64;
            *p = 0.0;
        }
        for (s, p) in self.s2.iter_mut().zip(self.p2.iter_mut()) {
            *s += *p as f64;
            *p = 0.0;
        }
        self.pending = 0;
    }

    /// Merges group moments in order (Chan et al.'s pairwise update) into batch statistics.
    ///
    /// # Panics
    /// If fewer than 2 rows were seen in total.
    pub fn merge(parts: &mut [Moments], eps: f32, stats: &mut BatchStats) {
        let c = parts.first().map_or(0, |p| p.s1.len());
        let (mut mean, mut m2, mut count) = (vec![0.0f64; c], vec![0.0f64; c], 0.0f64);
        for p in parts.iter_mut().filter(|p| p.count > 0) {
            p.flush();
            let nb = p.count as f64;
            let n = count + nb;
            for ch in 0..c {
                let (s1, s2) = (p.s1[ch], p.s2[ch]);
                let mean_b = p.shift[ch] as f64 + s1 / nb;
                let m2_b = (s2 - s1 * s1 / nb).max(0.0);
                let delta = mean_b - mean[ch];
                mean[ch] += delta * nb / n;
                m2[ch] += m2_b + delta * delta * count * nb / n;
            }
            count = n;
        }
        assert!(
            count >= 2.0,
            "batch norm in training mode needs at least 2 values per channel"
        );
        stats.count = count as usize;
        stats.mean = mean.iter().map(|&m| m as f32).collect();
        stats.var = m2.iter().map(|&v| (v / count) as f32).collect();
        stats.inv_std = m2
            .iter()
            .map(|&v| (1.0 / (v / count + eps as f64).sqrt()) as f32)
            .collect();
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
    let ranges = group_ranges(x.len() / c);
    let mut parts: Vec<Moments> = ranges
        .par_iter()
        .map(|r| {
            let mut m = Moments::new(c);
            m.add_rows(&x[r.start * c..r.end * c]);
            m
        })
        .collect();
    Moments::merge(&mut parts, eps, stats);
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
            for ((v, &m), &k) in row.iter_mut().zip(mean).zip(inv_std) {
                *v = (*v - m) * k;
            }
        }
    });
}

/// Training backward in place: `dy` (gradient w.r.t. `x̂`, or w.r.t. `max(x̂, 0)` when
/// `relu_after`) becomes the gradient w.r.t. the layer input `x` (`x̂` is recomputed from `x`
/// and `stats`).
///
/// # Panics
/// If the lengths disagree.
pub fn backward_train(x: &[f32], dy: &mut [f32], stats: &BatchStats, relu_after: bool) {
    let c = stats.mean.len();
    assert_eq!(x.len(), dy.len(), "batch norm gradient length");
    assert!(
        c > 0 && x.len().is_multiple_of(c),
        "batch norm input length"
    );
    let rows = x.len() / c;
    let ranges = group_ranges(rows);
    let (mean, inv) = (&stats.mean, &stats.inv_std);
    let parts: Vec<Vec<f64>> = ranges
        .par_iter()
        .zip(split_mut(dy, c, &ranges).into_par_iter())
        .map(|(r, dg)| {
            let xg = &x[r.start * c..r.end * c];
            let (mut s, mut sx) = (vec![0.0f64; c], vec![0.0f64; c]);
            let (mut p, mut px) = (vec![0.0f32; c], vec![0.0f32; c]);
            for (dblock, xblock) in dg
                .chunks_mut(c * PARTIAL_ROWS)
                .zip(xg.chunks(c * PARTIAL_ROWS))
            {
                p.fill(0.0);
                px.fill(0.0);
                for (drow, xrow) in dblock.chunks_exact_mut(c).zip(xblock.chunks_exact(c)) {
                    for (((((d, &x), &m), &k), a), b) in drow
                        .iter_mut()
                        .zip(xrow)
                        .zip(mean)
                        .zip(inv)
                        .zip(p.iter_mut())
                        .zip(px.iter_mut())
                    {
                        let xhat = (x - m) * k;
                        // Branch-free, so that the loop vectorises.
                        let v = if relu_after && xhat <= 0.0 { 0.0 } else { *d };
                        *d = v;
                        *a += v;
                        *b += v * xhat;
                    }
                }
                for (((s, sx), a), b) in s.iter_mut().zip(sx.iter_mut()).zip(&p).zip(&px) {
                    *s += *a as f64;
                    *sx += *b as f64;
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
    split_mut(dy, c, &ranges)
        .into_par_iter()
        .zip(ranges.par_iter())
        .for_each(|(dg, r)| {
            let xg = &x[r.start * c..r.end * c];
            for (drow, xrow) in dg.chunks_exact_mut(c).zip(xg.chunks_exact(c)) {
                for (((((d, &x), &m), &k), &a), &b) in
                    drow.iter_mut().zip(xrow).zip(mean).zip(inv).zip(&a).zip(&b)
                {
                    *d = k * (*d - a - (x - m) * k * b);
                }
            }
        });
}

/// Inference backward in place: `dy ← dy · inv_std` (masked by `x̂ > 0` first when
/// `relu_after`), with `stats` the running statistics and `x` the layer input.
pub fn backward_eval(x: &[f32], dy: &mut [f32], stats: &BatchStats, relu_after: bool) {
    let c = stats.mean.len();
    assert_eq!(x.len(), dy.len(), "batch norm gradient length");
    let (mean, inv) = (&stats.mean, &stats.inv_std);
    dy.par_chunks_mut(c * 256)
        .zip(x.par_chunks(c * 256))
        .for_each(|(dg, xg)| {
            for (drow, xrow) in dg.chunks_exact_mut(c).zip(xg.chunks_exact(c)) {
                for (((d, &x), &m), &k) in drow.iter_mut().zip(xrow).zip(mean).zip(inv) {
                    let keep = !relu_after || x > m;
                    *d = if keep { *d * k } else { 0.0 };
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
    use crate::nn::gradcheck::{check_gradient, random_vec};

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
            backward_train(&x, &mut d, &stats, relu);
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
        backward_train(&x, &mut d, &stats, false);
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
        let mut d = r.clone();
        backward_eval(&x, &mut d, &bn.running_stats(), true);
        check_gradient(loss, &x, &d, 1e-3, 2e-3).assert_ok("batch norm (eval)");
    }
}
