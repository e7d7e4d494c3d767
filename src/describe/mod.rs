//! Descriptors: the SIFT family on 41×41 patches ([`sift`]) and HardNet on 32×32 patches.

pub mod hardnet;
pub mod sift;

use rayon::prelude::*;

use crate::feature::Feature;
use crate::patch::{sample_from_space, SIFT_PATCH};
use crate::pyramid::ScaleSpace;

pub use hardnet::describe_hardnet;
pub use sift::{Sift, SiftScratch, SiftVariant};

choices! {
    /// The descriptor a pipeline computes.
    pub enum DescriptorKind {
        /// Perdoch's patch SIFT (128-D).
        Sift = "sift",
        /// RootSIFT (128-D): SIFT with L1 normalisation and a square root.
        Rootsift = "rootsift",
        /// HalfRootSIFT (64-D): orientations folded modulo 180°, for contrast reversal and
        /// multimodal pairs.
        Halfrootsift = "halfrootsift",
        /// HardNet (128-D), a CNN descriptor on 32×32 patches.
        Hardnet = "hardnet",
    }
}

impl DescriptorKind {
    /// The SIFT variant, if this is one.
    pub fn sift_variant(self) -> Option<SiftVariant> {
        match self {
            DescriptorKind::Sift => Some(SiftVariant::Sift),
            DescriptorKind::Rootsift => Some(SiftVariant::RootSift),
            DescriptorKind::Halfrootsift => Some(SiftVariant::HalfRootSift),
            DescriptorKind::Hardnet => None,
        }
    }

    /// Whether orientations should be folded modulo 180° to go with this descriptor.
    pub fn wants_half_orientation(self) -> bool {
        matches!(self, DescriptorKind::Halfrootsift)
    }

    /// The descriptor length: 128, or 64 for HalfRootSIFT.
    pub fn dimension(self) -> usize {
        match self {
            DescriptorKind::Hardnet => 128,
            other => other.sift_variant().map_or(128, |v| v.dimension()),
        }
    }
}

/// Features with one descriptor each (row-major, `dimension` values per feature).
#[derive(Clone, Debug, Default)]
pub struct Described {
    /// The described features; row `i` of `descriptors` belongs to `features[i]`.
    pub features: Vec<Feature>,
    /// `features.len() × dimension` values, one unit-length row per feature.
    pub descriptors: Vec<f32>,
    /// The length of one descriptor (see [`DescriptorKind::dimension`]).
    pub dimension: usize,
}

impl Described {
    /// The number of features.
    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// Whether there are no features.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// The descriptor of feature `i`. Panics when `i` is out of range.
    pub fn descriptor(&self, i: usize) -> &[f32] {
        &self.descriptors[i * self.dimension..(i + 1) * self.dimension]
    }
}

/// Computes SIFT-family descriptors; features whose patch has no gradient at all are dropped.
pub fn describe_sift(space: &ScaleSpace, features: &[Feature], variant: SiftVariant) -> Described {
    let sift = Sift::new();
    let dimension = variant.dimension();
    let mut descriptors = vec![0f32; features.len() * dimension];
    let valid: Vec<bool> = descriptors
        .par_chunks_mut(dimension)
        .zip(features.par_iter())
        .map_init(
            || (vec![0f32; SIFT_PATCH.pixels()], SiftScratch::default()),
            |(patch, scratch), (out, feature)| {
                sample_from_space(space, &feature.laf, &SIFT_PATCH, patch);
                sift.describe(patch, variant, scratch, out)
            },
        )
        .collect();
    keep_valid(features, descriptors, &valid, dimension)
}

/// Drops the features (and descriptor rows) marked invalid. `descriptors` holds one row of
/// `dimension` values per feature and `valid` one flag per feature.
pub fn keep_valid(
    features: &[Feature],
    descriptors: Vec<f32>,
    valid: &[bool],
    dimension: usize,
) -> Described {
    if valid.iter().all(|&v| v) {
        return Described {
            features: features.to_vec(),
            descriptors,
            dimension,
        };
    }
    let mut kept = Described {
        features: Vec::with_capacity(features.len()),
        descriptors: Vec::with_capacity(descriptors.len()),
        dimension,
    };
    for (i, feature) in features.iter().enumerate() {
        if valid[i] {
            kept.features.push(*feature);
            kept.descriptors
                .extend_from_slice(&descriptors[i * dimension..(i + 1) * dimension]);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::GrayImage;
    use crate::laf::Laf;
    use crate::orient::orient_by_histogram;

    /// A smooth texture evaluated in continuous coordinates, so that rotated copies are exact.
    fn texture(x: f32, y: f32) -> f32 {
        120.0
            + 50.0 * (0.21 * x + 0.05 * y).sin() * (0.13 * y - 0.02 * x).cos()
            + 30.0 * (0.09 * x * 0.7 + 0.11 * y * 1.3 + 0.0004 * x * y).sin()
    }

    fn rotated_image(size: usize, angle: f32) -> GrayImage {
        let c = (size / 2) as f32;
        let (s, co) = angle.sin_cos();
        GrayImage::from_fn(size, size, |x, y| {
            // Pixel (x, y) of the rotated image shows the texture at R(−angle)·(p − c).
            let (dx, dy) = (x as f32 - c, y as f32 - c);
            texture(co * dx + s * dy, -s * dx + co * dy)
        })
    }

    #[test]
    fn sift_of_a_rotated_patch_after_orientation_assignment_matches_the_original() {
        let size = 161;
        let centre = (size / 2) as f32;
        let feature = Feature {
            laf: Laf::circle(centre, centre, 30.0),
            response: 100.0,
            sigma: 30.0 / crate::laf::MR_SIZE,
            octave: 0,
            level: 1,
        };
        let describe = |angle: f32| {
            let space = ScaleSpace::build(&rotated_image(size, angle));
            let oriented = orient_by_histogram(&space, &[feature], false);
            describe_sift(&space, &oriented, SiftVariant::RootSift)
        };
        let original = describe(0.0);
        assert!(!original.is_empty());
        let unoriented_distance = {
            let space = ScaleSpace::build(&rotated_image(size, 1.1));
            let d = describe_sift(&space, &[feature], SiftVariant::RootSift);
            distance(original.descriptor(0), d.descriptor(0))
        };
        for angle in [0.6f32, 1.1, 2.5, -2.0] {
            let rotated = describe(angle);
            // The best pair over the (possibly several) orientations of both.
            let best = (0..original.len())
                .flat_map(|i| (0..rotated.len()).map(move |j| (i, j)))
                .map(|(i, j)| distance(original.descriptor(i), rotated.descriptor(j)))
                .fold(f32::INFINITY, f32::min);
            assert!(best < 0.12, "angle {angle}: distance {best}");
        }
        assert!(
            unoriented_distance > 0.3,
            "without orientation: {unoriented_distance}"
        );
    }

    fn distance(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f32>()
            .sqrt()
    }
}
