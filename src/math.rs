//! Small numeric helpers shared by the gradient-histogram stages.

use std::f32::consts::{FRAC_PI_2, PI};

/// atan2 to about 1e-5 rad, several times faster than `f32::atan2` and branch-free, so that loops
/// calling it vectorise. SIFT and the orientation histogram call it for every patch pixel
/// (millions of times per image pair) and bin into 8 or 36 bins, so this precision is plenty.
#[inline(always)]
pub fn fast_atan2(y: f32, x: f32) -> f32 {
    let ax = x.abs();
    let ay = y.abs();
    let max = ax.max(ay);
    let min = ax.min(ay);
    let a = if max > 0.0 { min / max } else { 0.0 };
    let s = a * a;
    // Minimax polynomial for atan on [0, 1] (max error about 1e-5 rad).
    let r = a
        * (0.999_977_26
            + s * (-0.332_623_47
                + s * (0.193_543_46
                    + s * (-0.116_432_87 + s * (0.052_653_32 + s * -0.011_721_2)))));
    let r = if ay > ax { FRAC_PI_2 - r } else { r };
    let r = if x < 0.0 { PI - r } else { r };
    if y < 0.0 {
        -r
    } else {
        r
    }
}

/// Sum of `values[i] * weights[i]` with eight independent partial sums, combined in a fixed
/// order: the compiler can vectorise it without reordering, so every build gives the same bits.
#[inline(always)]
pub fn weighted_sum(values: &[f32], weights: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut v = values.chunks_exact(8);
    let mut w = weights.chunks_exact(8);
    for (a, b) in (&mut v).zip(&mut w) {
        for k in 0..8 {
            lanes[k] += a[k] * b[k];
        }
    }
    let mut total = 0.0;
    for (a, b) in v.remainder().iter().zip(w.remainder()) {
        total += a * b;
    }
    lanes.iter().fold(0.0, |acc, x| acc + x) + total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_atan2_matches_std() {
        let mut worst = 0f32;
        for i in 0..2000 {
            let t = i as f32 / 2000.0 * 2.0 * PI - PI;
            for &r in &[1e-3f32, 0.7, 13.0, 4000.0] {
                let (y, x) = (r * t.sin(), r * t.cos());
                worst = worst.max((fast_atan2(y, x) - y.atan2(x)).abs());
            }
        }
        assert!(worst < 2e-5, "worst error {worst}");
        assert_eq!(fast_atan2(0.0, 0.0), 0.0);
        assert!((fast_atan2(0.0, -1.0) - PI).abs() < 1e-6);
    }
}
