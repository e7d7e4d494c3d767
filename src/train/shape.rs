//! AffNet's three outputs to its affine shape, forward and backward.
//!
//! The authors' `AffNetFast.forward` builds `A_raw = [[1 + y0, 0], [y1, 1 + y2]]` and returns
//! `rectifyAffineTransformationUpIsUp(A_raw)`: with `det = sqrt(|a11·a22 − a12·a21 + 1e-10|)` and
//! `n = sqrt(a11² + a12²)`, `A = [[n/det, 0], [(a22·a12 + a21·a11)/(n·det), det/n]]`
//! (reference `affnet.md` §1.3). With `a12 = 0` and `a11 = 1 + tanh(·) > 0` this is
//! `[[a11/det, 0], [a21/det, det/a11]]`, upright with determinant 1; it equals
//! [`crate::nn::affine_shape`] up to the 1e-10 (a relative 1e-10/(a11·a22), invisible in f32).
//! The gradient flows through that formula as autograd would (the `a12` paths carry a factor
//! `a12 = 0`, so they vanish).

/// `A` (rows top to bottom) from the raw outputs `(y0, y1, y2)`.
pub fn affine_shape_forward(raw: [f32; 3]) -> [[f32; 2]; 2] {
    let (a11, a21, a22) = (1.0 + raw[0] as f64, raw[1] as f64, 1.0 + raw[2] as f64);
    let det = (a11 * a22 + 1e-10).abs().sqrt();
    let n = a11.abs();
    [
        [(n / det) as f32, 0.0],
        [(a21 * a11 / (n * det)) as f32, (det / n) as f32],
    ]
}

/// `dL/d(y0, y1, y2)` from `dL/dA` (the `[0][1]` entry is a constant 0 and ignored).
pub fn affine_shape_backward(raw: [f32; 3], d_a: [[f32; 2]; 2]) -> [f32; 3] {
    let (a11, a21, a22) = (1.0 + raw[0] as f64, raw[1] as f64, 1.0 + raw[2] as f64);
    let p = a11 * a22 + 1e-10;
    let sp = p.signum();
    let det = p.abs().sqrt();
    // d det / d a11 and d a22.
    let (ddet_11, ddet_22) = (sp * a22 / (2.0 * det), sp * a11 / (2.0 * det));
    let (n, s) = (a11.abs(), a11.signum());
    let (g00, g10, g11) = (d_a[0][0] as f64, d_a[1][0] as f64, d_a[1][1] as f64);
    // A00 = n/det, A10 = a21·s/det, A11 = det/n.
    let d11 = g00 * (s / det - n * ddet_11 / (det * det))
        + g10 * (-a21 * s * ddet_11 / (det * det))
        + g11 * (ddet_11 / n - det * s / (n * n));
    let d22 = g00 * (-n * ddet_22 / (det * det))
        + g10 * (-a21 * s * ddet_22 / (det * det))
        + g11 * (ddet_22 / n);
    let d21 = g10 * s / det;
    [d11 as f32, d21 as f32, d22 as f32]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::gradcheck::{check_gradient, random_vec};

    #[test]
    fn forward_is_nn_affine_shape() {
        for raw in [[0.5, -0.2, -0.3], [0.0, 0.0, 0.0], [-0.9, 0.8, 0.95]] {
            let (a, b) = (affine_shape_forward(raw), crate::nn::affine_shape(raw));
            for r in 0..2 {
                for c in 0..2 {
                    assert!((a[r][c] - b[r][c]).abs() < 1e-6, "{a:?} vs {b:?}");
                }
            }
            assert!((a[0][0] * a[1][1] - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for seed in 0..5 {
            let raw = random_vec(3, seed, 0.9);
            let r = random_vec(4, seed + 10, 1.0);
            let loss = |y: &[f32]| -> f64 {
                let a = affine_shape_forward([y[0], y[1], y[2]]);
                (a[0][0] * r[0] + a[0][1] * r[1] + a[1][0] * r[2] + a[1][1] * r[3]) as f64
            };
            let g = affine_shape_backward([raw[0], raw[1], raw[2]], [[r[0], r[1]], [r[2], r[3]]]);
            check_gradient(loss, &raw, &g, 1e-3, 5e-3).assert_ok("affine shape");
        }
    }
}
