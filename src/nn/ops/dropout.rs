//! Dropout (PyTorch `nn.Dropout(p)`): in training mode each value is kept with probability
//! `1 − p` and scaled by `1 / (1 − p)`; at inference it is the identity.
//!
//! The mask is a function of `(seed, flat index)` only ([`crate::nn::rng::hash_uniform`]):
//! element `i` is dropped iff `hash_uniform(seed, i) < p`. Forward and backward regenerate the same
//! mask, nothing is stored, and the result does not depend on threading. The CUDA port uses the
//! same hash.

use rayon::prelude::*;

use super::input_map::InputMap;
use crate::nn::rng::hash_uniform;

const CHUNK: usize = 1 << 14;

/// Whether element `index` survives.
#[inline]
pub fn dropout_keep(seed: u64, index: usize, p: f32) -> bool {
    hash_uniform(seed, index as u64) >= p
}

/// `y = map(x) · mask / (1 − p)`, with the input read through `map` (the previous layer's fused
/// batch norm and ReLU, see [`InputMap`]; `c` channels, fastest-varying).
///
/// # Panics
/// If `p` is not in `[0, 1)` or the lengths differ.
pub fn dropout_forward(x: &[f32], p: f32, seed: u64, map: InputMap, c: usize, y: &mut [f32]) {
    assert!(
        (0.0..1.0).contains(&p),
        "dropout probability {p} not in [0, 1)"
    );
    assert_eq!(x.len(), y.len());
    let scale = 1.0 / (1.0 - p);
    assert!(
        c > 0 && CHUNK.is_multiple_of(c),
        "channel count must divide {CHUNK}"
    );
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(ci, (y, x))| {
            for (i, (y, &x)) in y.iter_mut().zip(x).enumerate() {
                let v = map.value(x, i % c);
                *y = if dropout_keep(seed, ci * CHUNK + i, p) {
                    v * scale
                } else {
                    0.0
                };
            }
        });
}

/// `dx = dy · mask / (1 − p)` in place (the gradient w.r.t. the value dropout read).
pub fn dropout_backward(dy: &mut [f32], p: f32, seed: u64) {
    let scale = 1.0 / (1.0 - p);
    dy.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, d)| {
        for (i, d) in d.iter_mut().enumerate() {
            *d = if dropout_keep(seed, ci * CHUNK + i, p) {
                *d * scale
            } else {
                0.0
            };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_gradient, random_vec};

    #[test]
    fn dropout_keeps_about_one_minus_p_and_matches_finite_differences() {
        let n = 40_001;
        let x = vec![1.0f32; n];
        let mut y = vec![0.0; n];
        dropout_forward(&x, 0.25, 7, InputMap::IDENTITY, 1, &mut y);
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        assert!((kept - 0.75).abs() < 0.01, "{kept}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        // Another seed, another mask; the same seed, the same mask.
        let mut y2 = vec![0.0; n];
        dropout_forward(&x, 0.25, 8, InputMap::IDENTITY, 1, &mut y2);
        assert_ne!(y, y2);
        dropout_forward(&x, 0.25, 7, InputMap::IDENTITY, 1, &mut y2);
        assert_eq!(y, y2);

        let x = random_vec(301, 3, 1.0);
        let r = random_vec(301, 4, 1.0);
        let loss = |v: &[f32]| -> f64 {
            let mut y = vec![0.0; v.len()];
            dropout_forward(v, 0.3, 5, InputMap::IDENTITY, 1, &mut y);
            y.iter().zip(&r).map(|(y, r)| (*y as f64) * *r as f64).sum()
        };
        let mut d = r.clone();
        dropout_backward(&mut d, 0.3, 5);
        check_gradient(loss, &x, &d, 1e-3, 1e-3).assert_ok("dropout");
    }
}
