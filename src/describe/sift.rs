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

const SIZE: usize = 41;
const SPATIAL_BINS: usize = 4;
const ORIENTATION_BINS: usize = 8;
const MAX_BIN_VALUE: f32 = 0.2;

/// The SIFT-family variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiftVariant {
    /// SIFT (128-D): L2 → clip at 0.2 → L2.
    Sift,
    /// RootSIFT (128-D): SIFT, then L1 normalisation and an element-wise square root.
    RootSift,
    /// HalfSIFT (64-D): SIFT with opposite orientation bins folded together.
    HalfSift,
    /// HalfRootSIFT (64-D): HalfSIFT with the RootSIFT normalisation.
    HalfRootSift,
}

impl SiftVariant {
    /// Whether orientations are folded modulo 180° (the 64-D variants).
    pub fn is_half(self) -> bool {
        matches!(self, SiftVariant::HalfSift | SiftVariant::HalfRootSift)
    }

    /// Whether the RootSIFT normalisation (L1, square root) is applied.
    pub fn is_root(self) -> bool {
        matches!(self, SiftVariant::RootSift | SiftVariant::HalfRootSift)
    }

    /// The descriptor length: 128, or 64 for the half variants.
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
    /// 1 where the circular mask is non-zero, else 0 (the photometric statistics' support).
    inside: Vec<f32>,
    /// Per patch row/column: (first bin, its weight, second bin, its weight); weight 0 outside.
    bins: [(usize, f32, usize, f32); SIZE],
}

/// Reusable per-thread buffers for [`Sift::describe`]; `Default` allocates them.
pub struct SiftScratch {
    patch: Vec<f32>,
    gx: Vec<f32>,
    gy: Vec<f32>,
    value: Vec<f32>,
    /// The fraction of each pixel's vote for the next orientation bin.
    orientation: Vec<f32>,
    bin: Vec<u32>,
    histogram: Vec<f32>,
}

impl Default for SiftScratch {
    fn default() -> Self {
        SiftScratch {
            patch: vec![0.0; SIZE * SIZE],
            gx: vec![0.0; SIZE * SIZE],
            gy: vec![0.0; SIZE * SIZE],
            value: vec![0.0; SIZE * SIZE],
            orientation: vec![0.0; SIZE * SIZE],
            bin: vec![0; SIZE * SIZE],
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
    /// Precomputes the Gaussian mask (`exp(−d²/(0.9·20²))` inside radius 20) and the spatial bin
    /// weights; build it once and share it across threads.
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
        let inside = mask
            .iter()
            .map(|&m| if m > 0.0 { 1.0 } else { 0.0 })
            .collect();
        let step = (SPATIAL_BINS + 1) as f32 / (2.0 * half);
        let mut bins = [(0usize, 0f32, 0usize, 0f32); SIZE];
        for (i, b) in bins.iter_mut().enumerate() {
            let x = step * i as f32;
            let xi = x.floor();
            let first = xi as i32 - 1;
            let second = xi as i32;
            let in_range = |bin: i32| bin >= 0 && bin < SPATIAL_BINS as i32;
            *b = (
                first.clamp(0, SPATIAL_BINS as i32 - 1) as usize,
                if in_range(first) { 1.0 - (x - xi) } else { 0.0 },
                second.clamp(0, SPATIAL_BINS as i32 - 1) as usize,
                if in_range(second) { x - xi } else { 0.0 },
            );
        }
        Sift { mask, inside, bins }
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
        sift_histogram(self, scratch);
        let hist = &scratch.histogram;
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
}

crate::multiversion! {
    /// The raw 4×4×8 histogram of `scratch.patch` into `scratch.histogram`, in vectorisable
    /// passes: photometric normalisation, gradients, per-pixel votes, then the trilinear scatter
    /// through a per-row accumulator (4 scattered adds per pixel instead of 8).
    fn sift_histogram(sift: &Sift, scratch: &mut SiftScratch) {
        let p = &mut scratch.patch;
        // hesaff's photometric normalisation: mean 128, standard deviation 50 over the mask.
        let count: f32 = sift.inside.iter().sum();
        let mean = crate::math::weighted_sum(p, &sift.inside) / count;
        let mut centred = [0f32; SIZE * SIZE];
        for ((c, v), m) in centred.iter_mut().zip(p.iter()).zip(&sift.inside) {
            *c = (v - mean) * m;
        }
        let sd = (crate::math::weighted_sum(&centred, &centred) / count).sqrt();
        if sd >= 1e-4 {
            let factor = 50.0 / sd;
            for v in p.iter_mut() {
                *v = (128.0 + factor * (*v - mean)).clamp(0.0, 255.0);
            }
        }

        // Central differences (not halved), one-sided at the border.
        let (gx, gy) = (&mut scratch.gx, &mut scratch.gy);
        for r in 0..SIZE {
            let row = &p[r * SIZE..(r + 1) * SIZE];
            let out = &mut gx[r * SIZE..(r + 1) * SIZE];
            out[0] = row[1] - row[0];
            out[SIZE - 1] = row[SIZE - 1] - row[SIZE - 2];
            for c in 1..SIZE - 1 {
                out[c] = row[c + 1] - row[c - 1];
            }
        }
        for c in 0..SIZE {
            gy[c] = p[SIZE + c] - p[c];
            gy[(SIZE - 1) * SIZE + c] = p[(SIZE - 1) * SIZE + c] - p[(SIZE - 2) * SIZE + c];
        }
        for r in 1..SIZE - 1 {
            for c in 0..SIZE {
                gy[r * SIZE + c] = p[(r + 1) * SIZE + c] - p[(r - 1) * SIZE + c];
            }
        }

        // Per pixel: vote = mask·magnitude; orientation bin (0..8) and the fraction of the vote
        // that goes to the next bin.
        let scale = ORIENTATION_BINS as f32 / (2.0 * PI);
        for i in 0..SIZE * SIZE {
            let (x, y) = (gx[i], gy[i]);
            scratch.value[i] = sift.mask[i] * (x * x + y * y).sqrt();
            // In [4, 12] for finite gradients; max/min (unlike clamp) also map NaN into range.
            #[allow(clippy::manual_clamp)]
            let o = (scale * (crate::math::fast_atan2(y, x) + 2.0 * PI)).max(0.0).min(15.999);
            // SAFETY: 0 ≤ o < 16, finite: exact truncation.
            let bin: i32 = unsafe { o.to_int_unchecked() };
            scratch.orientation[i] = o - bin as f32;
            scratch.bin[i] = (bin as u32) % ORIENTATION_BINS as u32;
        }

        let hist = &mut scratch.histogram;
        hist.iter_mut().for_each(|v| *v = 0.0);
        let mut row_hist = [0f32; SPATIAL_BINS * ORIENTATION_BINS];
        for r in 0..SIZE {
            let (br0, wr0, br1, wr1) = sift.bins[r];
            if wr0 == 0.0 && wr1 == 0.0 {
                continue;
            }
            row_hist.iter_mut().for_each(|v| *v = 0.0);
            for c in 0..SIZE {
                let value = scratch.value[r * SIZE + c];
                let wo1 = scratch.orientation[r * SIZE + c];
                let wo0 = 1.0 - wo1;
                let bo0 = scratch.bin[r * SIZE + c] as usize;
                let bo1 = (bo0 + 1) % ORIENTATION_BINS;
                let (bc0, wc0, bc1, wc1) = sift.bins[c];
                let (v0, v1) = (value * wc0, value * wc1);
                // Indices are below 32 by construction; the mask lets the compiler see it.
                const MASK: usize = SPATIAL_BINS * ORIENTATION_BINS - 1;
                row_hist[(bc0 * ORIENTATION_BINS + bo0) & MASK] += v0 * wo0;
                row_hist[(bc0 * ORIENTATION_BINS + bo1) & MASK] += v0 * wo1;
                row_hist[(bc1 * ORIENTATION_BINS + bo0) & MASK] += v1 * wo0;
                row_hist[(bc1 * ORIENTATION_BINS + bo1) & MASK] += v1 * wo1;
            }
            let width = SPATIAL_BINS * ORIENTATION_BINS;
            for (h, v) in hist[br0 * width..(br0 + 1) * width].iter_mut().zip(&row_hist) {
                *h += wr0 * v;
            }
            for (h, v) in hist[br1 * width..(br1 + 1) * width].iter_mut().zip(&row_hist) {
                *h += wr1 * v;
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
