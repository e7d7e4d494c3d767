//! The recipe's random affine frames (ducha-aiki/affnet `augmentation.py`, reference
//! `affnet.md` §5), as [`Affine`] maps for the spatial transformer: a rotation shared by the two
//! patches of a pair, and an independent random tilt per patch.
//!
//! Scale note for the trainer: in `extract_random_LAF` the normalised LAF is
//! `(0.5·R_φ)·(0.5·TA)`, i.e. the grid map of the 64×64 warp is `0.5·R_φ·TA` (a 2× zoom before
//! the 32×32 centre crop), whereas `affnet.md` reads it as `R_φ·TA`; [`random_frame`] takes the
//! scale as an argument so that either reading can be used.

use crate::nn::ops::spatial_transformer::Affine;
use crate::nn::rng::Rng;

/// `rectifyAffineTransformationUpIsUp`: the upright (lower-triangular), determinant-1 matrix with
/// the same first-row direction removed, `[[n/det, 0], [(a22·a12 + a21·a11)/(n·det), det/n]]`
/// with `det = sqrt(|det A| + 1e-10)`-style guard and `n = ‖first row‖`.
pub fn rectify_up_is_up(a: [[f64; 2]; 2]) -> [[f64; 2]; 2] {
    let det = (a[0][0] * a[1][1] - a[0][1] * a[1][0] + 1e-10).abs().sqrt();
    let n = (a[0][1] * a[0][1] + a[0][0] * a[0][0]).sqrt();
    [
        [n / det, 0.0],
        [(a[1][1] * a[0][1] + a[1][0] * a[0][0]) / (n * det), det / n],
    ]
}

/// `R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]]`.
pub fn rotation(theta: f64) -> [[f64; 2]; 2] {
    let (s, c) = theta.sin_cos();
    [[c, -s], [s, c]]
}

/// The 2×2 matrix product `a·b`.
pub(crate) fn mul(a: [[f64; 2]; 2], b: [[f64; 2]; 2]) -> [[f64; 2]; 2] {
    [
        [
            a[0][0] * b[0][0] + a[0][1] * b[1][0],
            a[0][0] * b[0][1] + a[0][1] * b[1][1],
        ],
        [
            a[1][0] * b[0][0] + a[1][1] * b[1][0],
            a[1][0] * b[0][1] + a[1][1] * b[1][1],
        ],
    ]
}

/// `get_normalized_affine_shape`: `rectify(R(ψ)·diag(t, 1)·R(ψ))` (R·D·R, as the code does).
pub fn tilt_shape(tilt: f64, psi: f64) -> [[f64; 2]; 2] {
    let r = rotation(psi);
    rectify_up_is_up(mul(r, mul([[tilt, 0.0], [0.0, 1.0]], r)))
}

/// The tilt schedule by epoch: `{0: 3.0, 1: 4.0, 3: 4.5, 5: 4.8, 6: 5.2, 8: 5.8}`, the value of
/// the largest key not above `epoch`.
pub fn max_tilt_for_epoch(epoch: u32) -> f64 {
    const SCHEDULE: [(u32, f64); 6] = [(0, 3.0), (1, 4.0), (3, 4.5), (5, 4.8), (6, 5.2), (8, 5.8)];
    SCHEDULE
        .iter()
        .rev()
        .find(|(e, _)| *e <= epoch)
        .map_or(3.0, |&(_, t)| t)
}

/// A frame `scale·R(φ)·TA` with `TA = tilt_shape(t, ψ)`, `t ~ U(1/T, T)`, `ψ ~ U(−π, π)`, and no
/// translation. Draw `φ ~ U(−π, π)` once per pair and pass it for both patches.
pub fn random_frame(rng: &mut Rng, phi: f64, max_tilt: f64, scale: f64) -> Affine {
    let t = rng.range(1.0 / max_tilt, max_tilt);
    let psi = rng.range(-std::f64::consts::PI, std::f64::consts::PI);
    let m = mul(rotation(phi), tilt_shape(t, psi));
    [
        [(scale * m[0][0]) as f32, (scale * m[0][1]) as f32, 0.0],
        [(scale * m[1][0]) as f32, (scale * m[1][1]) as f32, 0.0],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_unit_determinant_and_bounded_tilt() {
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            let f = random_frame(&mut rng, 0.3, 4.0, 1.0);
            let det = f[0][0] * f[1][1] - f[0][1] * f[1][0];
            assert!((det - 1.0).abs() < 1e-4, "{det}");
            // Singular values s and 1/s with s² ≤ T.
            let fro = f[0][0].powi(2) + f[0][1].powi(2) + f[1][0].powi(2) + f[1][1].powi(2);
            assert!(fro <= 4.0 + 0.25 + 1e-3, "{fro}");
        }
        assert_eq!(max_tilt_for_epoch(0), 3.0);
        assert_eq!(max_tilt_for_epoch(2), 4.0);
        assert_eq!(max_tilt_for_epoch(7), 5.2);
        assert_eq!(max_tilt_for_epoch(19), 5.8);
        let u = rectify_up_is_up([[2.0, 1.0], [0.5, 3.0]]);
        assert_eq!(u[0][1], 0.0);
        assert!((u[0][0] * u[1][1] - 1.0).abs() < 1e-9);
    }
}
