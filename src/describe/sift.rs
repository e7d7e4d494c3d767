//! SIFT, RootSIFT and HalfRootSIFT on 41×41 normalised patches (Perdoch's `siftdesc.cpp`, with the
//! RootSIFT and HalfSIFT normalisations of MODS).
//!
//! The patch is photometrically normalised (128 + 50·z over the circular mask); gradients are
//! central differences (one-sided at the border) weighted by a circular Gaussian
//! `exp(−d²/(0.9·20²))`, and vote trilinearly into 4×4 spatial × 8 orientation bins whose centres
//! lie at patch pixels 8, 16, 24, 32. Then L2 → clip at 0.2 → L2 (SIFT); RootSIFT adds L1 and an
//! element-wise square root, so that L2 matching equals the Hellinger kernel. HalfSIFT folds
//! opposite orientations (bin j and j + 4) before normalising, giving 64-D descriptors that
//! survive contrast reversal (infrared vs visible, maps vs photos).
//!
//! Descriptors are kept as unit-length f32 vectors; hesaff's ×512 byte quantisation is not applied.

use std::f32::consts::PI;

use crate::math::fast_atan2;

const SIZE: usize = 41;
const SPATIAL_BINS: usize = 4;
const ORIENTATION_BINS: usize = 8;
const MAX_BIN_VALUE: f32 = 0.2;

/// The SIFT-family variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiftVariant {
    Sift,
    RootSift,
    HalfSift,
    HalfRootSift,
}

impl SiftVariant {
    pub fn is_half(self) -> bool {
        matches!(self, SiftVariant::HalfSift | SiftVariant::HalfRootSift)
    }

    pub fn is_root(self) -> bool {
        matches!(self, SiftVariant::RootSift | SiftVariant::HalfRootSift)
    }

    pub fn dimension(self) -> usize {
        if self.is_half() {
            SPATIAL_BINS * SPATIAL_BINS * ORIENTATION_BINS / 2
        } else {
            SPATIAL_BINS * SPATIAL_BINS * ORIENTATION_BINS
        }
    }
}

/// The precomputed masks and bin tables of the 41×41 SIFT.
pub struct Sift {
    mask: Vec<f32>,
    /// Per patch row/column: (first bin, its weight, second bin, its weight); weight 0 outside.
    bins: [(usize, f32, usize, f32); SIZE],
}

/// Reusable per-thread buffers.
pub struct SiftScratch {
    patch: Vec<f32>,
    magnitude: Vec<f32>,
    orientation: Vec<f32>,
    histogram: Vec<f32>,
}

impl Default for SiftScratch {
    fn default() -> Self {
        SiftScratch {
            patch: vec![0.0; SIZE * SIZE],
            magnitude: vec![0.0; SIZE * SIZE],
            orientation: vec![0.0; SIZE * SIZE],
            histogram: vec![0.0; SPATIAL_BINS * SPATIAL_BINS * ORIENTATION_BINS],
        }
    }
}

impl Default for Sift {
    fn default() -> Self {
        Self::new()
    }
}

impl Sift {
    pub fn new() -> Sift {
        let half = (SIZE / 2) as f32;
        let r2 = half * half;
        let sigma2 = 0.9 * r2;
        let mut mask = vec![0f32; SIZE * SIZE];
        for r in 0..SIZE {
            for c in 0..SIZE {
                let d2 = (r as f32 - half).powi(2) + (c as f32 - half).powi(2);
                if d2 < r2 {
                    mask[r * SIZE + c] = (-d2 / sigma2).exp();
                }
            }
        }
        let step = (SPATIAL_BINS + 1) as f32 / (2.0 * half);
        let mut bins = [(0usize, 0f32, 0usize, 0f32); SIZE];
        for (i, b) in bins.iter_mut().enumerate() {
            let x = step * i as f32;
            let xi = x.floor();
            let first = xi as i32 - 1;
            let second = xi as i32;
            let in_range = |bin: i32| bin >= 0 && bin < SPATIAL_BINS as i32;
            *b = (
                first.max(0) as usize,
                if in_range(first) { 1.0 - (x - xi) } else { 0.0 },
                second.clamp(0, SPATIAL_BINS as i32 - 1) as usize,
                if in_range(second) { x - xi } else { 0.0 },
            );
        }
        Sift { mask, bins }
    }

    /// Describes one 41×41 patch into `out` (length `variant.dimension()`). Returns false when
    /// the patch has no gradient at all (the descriptor would be meaningless).
    pub fn describe(
        &self,
        patch: &[f32],
        variant: SiftVariant,
        scratch: &mut SiftScratch,
        out: &mut [f32],
    ) -> bool {
        assert_eq!(patch.len(), SIZE * SIZE);
        assert_eq!(out.len(), variant.dimension());
        scratch.patch.copy_from_slice(patch);
        self.normalise_photometrically(&mut scratch.patch);
        self.gradients(scratch);
        let hist = &mut scratch.histogram;
        hist.iter_mut().for_each(|v| *v = 0.0);
        let orientation_scale = ORIENTATION_BINS as f32 / (2.0 * PI);
        for r in 0..SIZE {
            let (br0, wr0, br1, wr1) = self.bins[r];
            for c in 0..SIZE {
                let value = self.mask[r * SIZE + c] * scratch.magnitude[r * SIZE + c];
                if value == 0.0 {
                    continue;
                }
                let (bc0, wc0, bc1, wc1) = self.bins[c];
                let o = orientation_scale * (scratch.orientation[r * SIZE + c] + 2.0 * PI);
                let bo = o as usize;
                let wo1 = o - bo as f32;
                let wo0 = 1.0 - wo1;
                let bo0 = bo % ORIENTATION_BINS;
                let bo1 = (bo0 + 1) % ORIENTATION_BINS;
                for (br, wr) in [(br0, wr0), (br1, wr1)] {
                    if wr == 0.0 {
                        continue;
                    }
                    for (bc, wc) in [(bc0, wc0), (bc1, wc1)] {
                        if wc == 0.0 {
                            continue;
                        }
                        let base = (br * SPATIAL_BINS + bc) * ORIENTATION_BINS;
                        let w = value * wr * wc;
                        hist[base + bo0] += w * wo0;
                        hist[base + bo1] += w * wo1;
                    }
                }
            }
        }
        if variant.is_half() {
            for (cell, o) in out.chunks_exact_mut(ORIENTATION_BINS / 2).enumerate() {
                let h = &hist[cell * ORIENTATION_BINS..(cell + 1) * ORIENTATION_BINS];
                for j in 0..ORIENTATION_BINS / 2 {
                    o[j] = h[j] + h[j + ORIENTATION_BINS / 2];
                }
            }
        } else {
            out.copy_from_slice(hist);
        }
        normalise(out, variant.is_root())
    }

    /// hesaff's photometric normalisation: mean 128, standard deviation 50 over the mask.
    fn normalise_photometrically(&self, patch: &mut [f32]) {
        let mut sum = 0f64;
        let mut count = 0usize;
        for (v, m) in patch.iter().zip(&self.mask) {
            if *m > 0.0 {
                sum += *v as f64;
                count += 1;
            }
        }
        let mean = (sum / count as f64) as f32;
        let mut var = 0f64;
        for (v, m) in patch.iter().zip(&self.mask) {
            if *m > 0.0 {
                var += ((*v - mean) as f64).powi(2);
            }
        }
        let sd = (var / count as f64).sqrt() as f32;
        if sd < 1e-4 {
            return;
        }
        let factor = 50.0 / sd;
        for v in patch.iter_mut() {
            *v = (128.0 + factor * (*v - mean)).clamp(0.0, 255.0);
        }
    }

    fn gradients(&self, scratch: &mut SiftScratch) {
        let p = &scratch.patch;
        for r in 0..SIZE {
            for c in 0..SIZE {
                let gx = if c == 0 {
                    p[r * SIZE + 1] - p[r * SIZE]
                } else if c == SIZE - 1 {
                    p[r * SIZE + c] - p[r * SIZE + c - 1]
                } else {
                    p[r * SIZE + c + 1] - p[r * SIZE + c - 1]
                };
                let gy = if r == 0 {
                    p[SIZE + c] - p[c]
                } else if r == SIZE - 1 {
                    p[r * SIZE + c] - p[(r - 1) * SIZE + c]
                } else {
                    p[(r + 1) * SIZE + c] - p[(r - 1) * SIZE + c]
                };
                scratch.magnitude[r * SIZE + c] = (gx * gx + gy * gy).sqrt();
                scratch.orientation[r * SIZE + c] = fast_atan2(gy, gx);
            }
        }
    }
}

/// L2 → clip at 0.2 → L2, then (RootSIFT) L1 and square root. False for an all-zero vector.
fn normalise(v: &mut [f32], root: bool) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(norm > 1e-12) {
        return false;
    }
    for x in v.iter_mut() {
        *x = (*x / norm).min(MAX_BIN_VALUE);
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    if root {
        let l1: f32 = v.iter().sum();
        v.iter_mut().for_each(|x| *x = (*x / l1).sqrt());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(seed: u32) -> Vec<f32> {
        // A deterministic, smooth, non-symmetric texture.
        (0..SIZE * SIZE)
            .map(|i| {
                let (x, y) = ((i % SIZE) as f32, (i / SIZE) as f32);
                let s = seed as f32;
                100.0
                    + 40.0 * (0.31 * x + 0.17 * y + s).sin()
                    + 30.0 * (0.23 * y - 0.41 * x).cos()
                    + 20.0 * ((x - 12.0) * (y - 25.0) / 90.0).sin()
            })
            .collect()
    }

    #[test]
    fn variants_have_unit_norm_and_the_right_size() {
        let sift = Sift::new();
        let mut scratch = SiftScratch::default();
        for variant in [
            SiftVariant::Sift,
            SiftVariant::RootSift,
            SiftVariant::HalfSift,
            SiftVariant::HalfRootSift,
        ] {
            let mut out = vec![0.0; variant.dimension()];
            assert!(sift.describe(&textured(1), variant, &mut scratch, &mut out));
            let n: f32 = out.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-4, "{variant:?}: norm {n}");
            assert!(out.iter().all(|&x| x >= 0.0));
            if !variant.is_root() {
                // No bin exceeds the clip after renormalisation by much.
                assert!(out.iter().all(|&x| x <= 0.3));
            }
        }
        let mut out = vec![0.0; 128];
        assert!(!sift.describe(
            &vec![7.0; SIZE * SIZE],
            SiftVariant::Sift,
            &mut scratch,
            &mut out
        ));
    }

    #[test]
    fn photometric_changes_do_not_change_the_descriptor() {
        let sift = Sift::new();
        let mut scratch = SiftScratch::default();
        let a = textured(2);
        let b: Vec<f32> = a.iter().map(|v| 0.5 * v + 20.0).collect();
        let (mut da, mut db) = (vec![0.0; 128], vec![0.0; 128]);
        sift.describe(&a, SiftVariant::RootSift, &mut scratch, &mut da);
        sift.describe(&b, SiftVariant::RootSift, &mut scratch, &mut db);
        let d: f32 = da
            .iter()
            .zip(&db)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f32>()
            .sqrt();
        assert!(d < 1e-3, "distance {d}");
    }

    #[test]
    fn contrast_reversal_is_invisible_to_half_sift_only() {
        let sift = Sift::new();
        let mut scratch = SiftScratch::default();
        let a = textured(3);
        let b: Vec<f32> = a.iter().map(|v| 255.0 - v).collect();
        let dist = |variant: SiftVariant, scratch: &mut SiftScratch| {
            let (mut da, mut db) = (
                vec![0.0; variant.dimension()],
                vec![0.0; variant.dimension()],
            );
            sift.describe(&a, variant, scratch, &mut da);
            sift.describe(&b, variant, scratch, &mut db);
            da.iter()
                .zip(&db)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f32>()
                .sqrt()
        };
        assert!(dist(SiftVariant::HalfRootSift, &mut scratch) < 1e-3);
        assert!(dist(SiftVariant::RootSift, &mut scratch) > 0.3);
    }

    #[test]
    fn different_patches_are_far_apart() {
        let sift = Sift::new();
        let mut scratch = SiftScratch::default();
        let (mut da, mut db) = (vec![0.0; 128], vec![0.0; 128]);
        sift.describe(&textured(4), SiftVariant::RootSift, &mut scratch, &mut da);
        sift.describe(&textured(40), SiftVariant::RootSift, &mut scratch, &mut db);
        let d: f32 = da
            .iter()
            .zip(&db)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f32>()
            .sqrt();
        assert!(d > 0.3, "distance {d}");
    }
}
