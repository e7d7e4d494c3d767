//! Orientation: rotates each upright frame so that its patch x axis follows the image.
//!
//! `upright` keeps the gravity direction (hesaff's default: no rotation invariance),
//! `histogram` uses the dominant gradient orientations (one feature per peak ≥ 0.8 of the maximum,
//! [`histogram`]), `orinet` asks the network.

pub mod histogram;
pub mod orinet;

use rayon::prelude::*;

use crate::feature::Feature;
use crate::patch::{sample_from_space, PatchSpec};
use crate::pyramid::ScaleSpace;

pub use orinet::{orient_by_orinet, orient_from_orinet_outputs};

/// The orientation histogram looks at a region 1.5× larger than the descriptor's...
pub const ORIENTATION_SUPPORT: f32 = 1.5;
/// ...sampled into 41×41 pixels with 2.5 steps of blur (SIFT patches get 1.5): coarser gradients
/// give orientations that repeat better under illumination and appearance change (measured in
/// docs/accuracy.md; MODS uses the descriptor's own patch).
pub const ORIENTATION_PATCH: PatchSpec = PatchSpec {
    size: 41,
    blur_per_step: 2.5,
};

choices! {
    /// How features are oriented.
    pub enum OrientationMethod {
        /// No rotation: up is up.
        Upright = "upright",
        /// Dominant gradient orientation (36-bin histogram, every peak ≥ 0.8·max).
        Histogram = "histogram",
        /// OriNet.
        Orinet = "orinet",
    }
}

/// Orients features by their gradient histogram; `half` folds orientations modulo 180° (for
/// HalfRootSIFT). A feature with several peaks becomes several features; one without any
/// gradient above the noise floor is dropped (it cannot be described either).
pub fn orient_by_histogram(space: &ScaleSpace, features: &[Feature], half: bool) -> Vec<Feature> {
    let per_feature: Vec<Vec<Feature>> = features
        .par_iter()
        .map_init(
            || vec![0f32; ORIENTATION_PATCH.pixels()],
            |patch, f| {
                sample_from_space(
                    space,
                    &f.laf.scaled(ORIENTATION_SUPPORT),
                    &ORIENTATION_PATCH,
                    patch,
                );
                histogram::dominant_orientations(patch, half)
                    .into_iter()
                    .map(|theta| f.with_laf(f.laf.rotated(theta)))
                    .collect()
            },
        )
        .collect();
    per_feature.into_iter().flatten().collect()
}
