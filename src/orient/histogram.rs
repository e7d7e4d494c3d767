//! Dominant gradient orientations of a 41×41 patch (MODS `EstimateDominantAngles`).
//!
//! Central-difference gradients of the interior pixels vote with magnitude × a circular Gaussian
//! (σ = 41/3, radius 20) into 36 bins, if their magnitude exceeds 1 gray level; the histogram is
//! smoothed by six passes of a circular [1, 1, 1] filter; every bin that is above both
//! neighbours (a two-bin plateau counts once) and at least 0.8 of the maximum is a peak, refined by a parabola. Unlike MODS,
//! votes are split linearly between the two nearest bins, for sub-bin precision. In half mode
//! (HalfSIFT, for contrast reversal) the threshold is taken first, then bins 18..35 are folded onto
//! 0..17, so an orientation and its opposite count as one.

use std::f32::consts::PI;
use std::sync::OnceLock;

const SIZE: usize = 41;
const BINS: usize = 36;
const PEAK_RATIO: f32 = 0.8;
const SMOOTHING_PASSES: usize = 6;
/// Gradients weaker than this (gray levels per 2 patch pixels) are noise and do not vote.
const MIN_MAGNITUDE: f32 = 1.0;

/// The circular Gaussian weight of each patch pixel (0 outside radius 20).
fn weights() -> &'static [f32; SIZE * SIZE] {
    static WEIGHTS: OnceLock<[f32; SIZE * SIZE]> = OnceLock::new();
    WEIGHTS.get_or_init(|| {
        let half = (SIZE / 2) as f32;
        let sigma = SIZE as f32 / 3.0;
        let mut w = [0f32; SIZE * SIZE];
        for r in 0..SIZE {
            for c in 0..SIZE {
                let d2 = (r as f32 - half).powi(2) + (c as f32 - half).powi(2);
                if d2 < half * half {
                    w[r * SIZE + c] = (-d2 / (2.0 * sigma * sigma)).exp();
                }
            }
        }
        w
    })
}

/// The dominant orientations (radians, in the patch's frame) of a 41×41 patch.
pub fn dominant_orientations(patch: &[f32], half: bool) -> Vec<f32> {
    assert_eq!(patch.len(), SIZE * SIZE, "the orientation patch is 41×41");
    let mut hist = [0f32; BINS];
    vote(patch, weights(), &mut hist);
    peaks(hist, half)
}

crate::multiversion! {
    /// Accumulates the gradient votes of the interior pixels: per-pixel arithmetic in one
    /// vectorisable pass, then two scattered adds per pixel (linear interpolation between the
    /// two nearest bin centres; MODS votes into the nearest bin only, which limits the precision
    /// to ±5°).
    fn vote(patch: &[f32], w: &[f32; SIZE * SIZE], hist: &mut [f32; BINS]) {
        const INNER: usize = SIZE - 2;
        let mut votes = [0f32; INNER];
        let mut fractions = [0f32; INNER];
        let mut lower = [0u32; INNER];
        for r in 1..SIZE - 1 {
            let above = &patch[(r - 1) * SIZE + 1..(r - 1) * SIZE + 1 + INNER];
            let below = &patch[(r + 1) * SIZE + 1..(r + 1) * SIZE + 1 + INNER];
            let left = &patch[r * SIZE..r * SIZE + INNER];
            let right = &patch[r * SIZE + 2..r * SIZE + 2 + INNER];
            let weight = &w[r * SIZE + 1..r * SIZE + 1 + INNER];
            for k in 0..INNER {
                let gx = right[k] - left[k];
                let gy = below[k] - above[k];
                let magnitude = (gx * gx + gy * gy).sqrt();
                votes[k] = if magnitude > MIN_MAGNITUDE { magnitude * weight[k] } else { 0.0 };
                // In [−0.5, 35.5]; +1 makes it positive, max/min also map NaN into range.
                let position = (BINS as f32 * (crate::math::fast_atan2(gy, gx) / PI + 1.0) / 2.0 + 0.5)
                    .max(0.0)
                    .min(BINS as f32 + 0.999);
                // SAFETY: 0 ≤ position < 37, finite: exact truncation.
                let bin: i32 = unsafe { position.to_int_unchecked() };
                fractions[k] = position - bin as f32;
                lower[k] = ((bin + BINS as i32 - 1) % BINS as i32) as u32;
            }
            for k in 0..INNER {
                let (b, f, v) = (lower[k] as usize, fractions[k], votes[k]);
                hist[b] += v * (1.0 - f);
                hist[(b + 1) % BINS] += v * f;
            }
        }
    }
}

/// Smooths the histogram and returns its peaks as angles (see the module doc).
fn peaks(mut hist: [f32; BINS], half: bool) -> Vec<f32> {
    for _ in 0..SMOOTHING_PASSES {
        let previous = hist;
        for b in 0..BINS {
            hist[b] = previous[(b + BINS - 1) % BINS] + previous[b] + previous[(b + 1) % BINS];
        }
    }
    let max = hist.iter().cloned().fold(0f32, f32::max);
    if max <= 0.0 {
        return Vec::new();
    }
    let threshold = PEAK_RATIO * max;
    let bins = if half {
        for b in 0..BINS / 2 {
            hist[b] += hist[b + BINS / 2];
        }
        BINS / 2
    } else {
        BINS
    };
    let h = &hist[..bins];
    let mut angles = Vec::new();
    for b in 0..bins {
        let (left, right) = (h[(b + bins - 1) % bins], h[(b + 1) % bins]);
        // A plateau of two equal bins is one peak (counted at its left bin).
        if h[b] > left && h[b] >= right && h[b] >= threshold {
            let offset = (left - right) / (2.0 * (left - 2.0 * h[b] + right));
            angles.push(2.0 * PI * (b as f32 + 0.5 + offset) / BINS as f32 - PI);
        }
    }
    angles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(angle: f32) -> Vec<f32> {
        let (s, c) = angle.sin_cos();
        (0..SIZE * SIZE)
            .map(|i| {
                let (x, y) = ((i % SIZE) as f32 - 20.0, (i / SIZE) as f32 - 20.0);
                100.0 + 3.0 * (x * c + y * s)
            })
            .collect()
    }

    #[test]
    fn a_ramp_has_one_orientation_along_its_gradient() {
        for &deg in &[-170.0f32, -45.0, 0.0, 33.0, 90.0, 151.0] {
            let angles = dominant_orientations(&ramp(deg.to_radians()), false);
            assert_eq!(angles.len(), 1, "{deg}: {angles:?}");
            let diff = (angles[0] - deg.to_radians() + PI).rem_euclid(2.0 * PI) - PI;
            assert!(
                diff.abs() < 1f32.to_radians(),
                "{deg}: {}",
                angles[0].to_degrees()
            );
        }
    }

    #[test]
    fn half_mode_folds_opposite_directions() {
        let a = dominant_orientations(&ramp(120f32.to_radians()), true);
        let b = dominant_orientations(&ramp(-60f32.to_radians()), true);
        assert_eq!(a.len(), 1);
        assert!((a[0] - b[0]).abs() < 1e-3, "{a:?} {b:?}");
        assert!(
            (a[0].to_degrees() + 60.0).abs() < 1.0,
            "{}",
            a[0].to_degrees()
        );
    }

    #[test]
    fn two_equal_edges_give_two_orientations_and_flat_gives_none() {
        // A cross of a vertical and a horizontal step: gradients at 0° and 90°.
        let patch: Vec<f32> = (0..SIZE * SIZE)
            .map(|i| {
                let (x, y) = (i % SIZE, i / SIZE);
                (if x > 20 { 60.0 } else { 0.0 }) + (if y > 20 { 60.0 } else { 0.0 })
            })
            .collect();
        let angles = dominant_orientations(&patch, false);
        assert_eq!(angles.len(), 2, "{angles:?}");
        assert!(dominant_orientations(&vec![50.0; SIZE * SIZE], false).is_empty());
    }
}
