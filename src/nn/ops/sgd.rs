//! Stochastic gradient descent as PyTorch's `torch.optim.SGD` (no Nesterov), and the authors'
//! learning-rate schedule.
//!
//! One step, per parameter `θ` with gradient `g` (PyTorch's order of operations, in f32):
//! ```text
//! d = g + weight_decay·θ
//! buf = d                                   (first step: a copy, no dampening)
//! buf = momentum·buf + (1 − dampening)·d    (later steps)
//! θ = θ − lr·buf
//! ```
//! The recipe (reference `affnet.md` §5): lr 0.005, momentum 0.9, dampening 0.9, weight decay
//! 1e-4, lr decayed linearly to 0 over the run.

use rayon::prelude::*;

/// SGD with momentum, dampening and weight decay.
#[derive(Clone, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor (0: none).
    pub momentum: f32,
    /// Dampening of the gradient in the momentum update.
    pub dampening: f32,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f32,
    /// The momentum buffer; `None` before the first step (PyTorch's lazily created state).
    buffer: Option<Vec<f32>>,
}

impl Sgd {
    /// SGD with these settings and no momentum buffer yet.
    pub fn new(lr: f32, momentum: f32, dampening: f32, weight_decay: f32) -> Self {
        Sgd {
            lr,
            momentum,
            dampening,
            weight_decay,
            buffer: None,
        }
    }

    /// The authors' settings: lr 0.005, momentum 0.9, dampening 0.9, weight decay 1e-4.
    pub fn affnet_recipe() -> Self {
        Sgd::new(0.005, 0.9, 0.9, 1e-4)
    }

    /// The momentum buffer, for checkpoints (`None` before the first step).
    pub fn momentum_buffer(&self) -> Option<&[f32]> {
        self.buffer.as_deref()
    }

    /// Restores a checkpointed momentum buffer.
    pub fn set_momentum_buffer(&mut self, buffer: Option<Vec<f32>>) {
        self.buffer = buffer;
    }

    /// One update of `params` with `grads`.
    ///
    /// # Panics
    /// If the lengths differ (also from the momentum buffer's).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        assert_eq!(
            params.len(),
            grads.len(),
            "parameter and gradient lengths differ"
        );
        let (wd, m, damp, lr) = (self.weight_decay, self.momentum, self.dampening, self.lr);
        const CHUNK: usize = 1 << 14;
        if m == 0.0 {
            params
                .par_chunks_mut(CHUNK)
                .zip(grads.par_chunks(CHUNK))
                .for_each(|(p, g)| {
                    for (p, g) in p.iter_mut().zip(g) {
                        *p -= lr * (g + wd * *p);
                    }
                });
            return;
        }
        let first = self.buffer.is_none();
        let buf = self.buffer.get_or_insert_with(|| vec![0.0; params.len()]);
        assert_eq!(buf.len(), params.len(), "momentum buffer length differs");
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(buf.par_chunks_mut(CHUNK))
            .for_each(|((p, g), b)| {
                for ((p, g), b) in p.iter_mut().zip(g).zip(b) {
                    let d = g + wd * *p;
                    *b = if first { d } else { m * *b + (1.0 - damp) * d };
                    *p -= lr * *b;
                }
            });
    }
}

/// `base·(1 − step/total)`, clamped at 0: linear decay to zero over `total` steps.
pub fn linear_decay(base: f32, step: u64, total: u64) -> f32 {
    if total == 0 {
        return base;
    }
    (base as f64 * (1.0 - step as f64 / total as f64)).max(0.0) as f32
}

/// The authors' schedule, `lr·(1 − step·batch / (n_pairs·epochs))` (`adjust_learning_rate` in
/// `train_AffNet_test_on_graffity.py`): the same linear decay, counted in pairs.
pub fn recipe_lr(base: f32, step: u64, batch: u64, n_pairs: u64, epochs: u64) -> f32 {
    linear_decay(base, step * batch, n_pairs * epochs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three steps on two parameters against the update written out by hand, as PyTorch
    /// computes it (first step without dampening).
    #[test]
    fn matches_hand_computed_pytorch_updates() {
        let mut sgd = Sgd::affnet_recipe();
        let mut p = vec![1.0f32, -2.0];
        let grads = [[0.5f32, 0.25], [-1.0, 0.5], [0.2, -0.3]];
        // Hand computation in f64.
        let (lr, m, damp, wd) = (0.005, 0.9, 0.9, 1e-4);
        let mut ph = [1.0f64, -2.0];
        let mut buf = [0.0f64; 2];
        for (step, g) in grads.iter().enumerate() {
            sgd.step(&mut p, g);
            for k in 0..2 {
                let d = g[k] as f64 + wd * ph[k];
                buf[k] = if step == 0 {
                    d
                } else {
                    m * buf[k] + (1.0 - damp) * d
                };
                ph[k] -= lr * buf[k];
            }
            for k in 0..2 {
                assert!(
                    (p[k] as f64 - ph[k]).abs() < 1e-7,
                    "step {step}: {p:?} vs {ph:?}"
                );
            }
        }
        // Spot values: step 1 moves by lr·(g + wd·θ) exactly.
        let mut s = Sgd::affnet_recipe();
        let mut q = vec![1.0f32];
        s.step(&mut q, &[0.5]);
        assert!((q[0] as f64 - (1.0 - 0.005 * (0.5 + 1e-4))).abs() < 1e-7);
        // Step 2 with dampening: buf = 0.9·0.5001 + 0.1·(g2 + wd·θ1).
        let theta1 = q[0] as f64;
        s.step(&mut q, &[0.5]);
        let buf2 = 0.9 * (0.5 + 1e-4) + 0.1 * (0.5 + 1e-4 * theta1);
        assert!((q[0] as f64 - (theta1 - 0.005 * buf2)).abs() < 1e-7);
        assert!(s.momentum_buffer().is_some());
    }

    #[test]
    fn schedules() {
        assert_eq!(linear_decay(0.005, 0, 100), 0.005);
        assert!((linear_decay(0.005, 50, 100) - 0.0025).abs() < 1e-9);
        assert_eq!(linear_decay(0.005, 200, 100), 0.0);
        // The recipe: 1e7 pairs × 20 epochs at batch 1024 reaches 0 after 195,312.5 steps.
        assert!((recipe_lr(0.005, 97_656, 1024, 10_000_000, 20) - 0.0025).abs() < 1e-6);
    }
}
