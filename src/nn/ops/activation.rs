//! Element-wise activations, forward and backward: ReLU (`max(x, 0)`, derivative 1 for `x > 0`,
//! 0 otherwise, as PyTorch) and tanh (derivative `1 − tanh²`, computed from the output).

use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// Which activation: ReLU or tanh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`; its backward reads the forward input.
    Relu,
    /// `tanh(x)`; its backward reads the forward output.
    Tanh,
}

/// `y = max(x, 0)`.
pub fn relu_forward(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, x)| *y = x.max(0.0)));
}

/// `dy ← dy · [x > 0]` in place (`x` the forward input; the output works as well).
pub fn relu_backward(x: &[f32], dy: &mut [f32]) {
    assert_eq!(x.len(), dy.len());
    dy.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(d, x)| {
            d.iter_mut()
                .zip(x)
                .for_each(|(d, x)| *d = if *x > 0.0 { *d } else { 0.0 })
        });
}

/// `x ← tanh(x)` in place.
pub fn tanh_forward(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK)
        .for_each(|x| x.iter_mut().for_each(|v| *v = v.tanh()));
}

/// `dy ← dy · (1 − t²)` in place, `t` the forward output.
pub fn tanh_backward(t: &[f32], dy: &mut [f32]) {
    assert_eq!(t.len(), dy.len());
    dy.par_chunks_mut(CHUNK)
        .zip(t.par_chunks(CHUNK))
        .for_each(|(d, t)| d.iter_mut().zip(t).for_each(|(d, t)| *d *= 1.0 - t * t));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_gradient, random_vec};

    #[test]
    fn relu_and_tanh_match_finite_differences() {
        // Odd length; values kept away from ReLU's kink at 0 (it is not differentiable there).
        let x: Vec<f32> = random_vec(101, 1, 2.0)
            .into_iter()
            .map(|v| if v.abs() < 0.01 { 0.5 } else { v })
            .collect();
        let r = random_vec(101, 2, 1.0);
        let relu_loss = |v: &[f32]| -> f64 {
            let mut y = vec![0.0; v.len()];
            relu_forward(v, &mut y);
            y.iter().zip(&r).map(|(y, r)| (y * r) as f64).sum()
        };
        let mut d = r.clone();
        relu_backward(&x, &mut d);
        check_gradient(relu_loss, &x, &d, 1e-3, 1e-3).assert_ok("relu");
        let tanh_loss = |v: &[f32]| -> f64 {
            let mut y = v.to_vec();
            tanh_forward(&mut y);
            y.iter().zip(&r).map(|(y, r)| (*y as f64) * *r as f64).sum()
        };
        let mut t = x.clone();
        tanh_forward(&mut t);
        let mut d = r.clone();
        tanh_backward(&t, &mut d);
        check_gradient(tanh_loss, &x, &d, 1e-3, 2e-3).assert_ok("tanh");
    }
}
