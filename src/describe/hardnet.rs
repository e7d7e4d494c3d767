//! HardNet descriptors: one network pass on the 32×32 patch of each oriented frame.
//!
//! The patch is the networks' common [`crate::patch::NET_PATCH`], the frame's `[-1, 1]²` at
//! mrSize·σ, as HesAffNet feeds HardNet++ (reference `affnet.md` §6). Every feature keeps its
//! descriptor: a flat patch standardises to zeros and gets the network's constant answer, which the
//! ratio test then rejects as ambiguous.

use crate::feature::Feature;
use crate::laf::Laf;
use crate::nn::{HardNet, HARDNET_DIM};
use crate::patch::on_patches;
use crate::pyramid::ScaleSpace;

use super::Described;

/// Describes every feature with HardNet on the CPU: 128-D, unit length, order kept. (The
/// pipeline's stage asks `Networks::run` for the descriptors, on any device.)
pub fn describe_hardnet(space: &ScaleSpace, features: &[Feature], hardnet: &HardNet) -> Described {
    let lafs: Vec<Laf> = features.iter().map(|f| f.laf).collect();
    let descriptors = on_patches(space, &lafs, |patches| hardnet.describe(patches));
    debug_assert_eq!(descriptors.len(), features.len() * HARDNET_DIM);
    Described {
        features: features.to_vec(),
        descriptors,
        dimension: HARDNET_DIM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::GrayImage;
    use crate::nn::{random_weights, NetworkKind};

    #[test]
    fn random_weights_give_one_unit_128_d_descriptor_per_feature() {
        let hardnet = HardNet::from_weights(&random_weights(NetworkKind::HardNet, 4)).unwrap();
        let image = GrayImage::from_fn(100, 100, |x, y| {
            100.0 + 60.0 * ((x as f32) * 0.3).sin() * ((y as f32) * 0.2).cos()
        });
        let space = ScaleSpace::build(&image);
        let features: Vec<Feature> = [(30.0, 40.0, 10.0), (60.0, 50.0, 20.0), (50.0, 50.0, 5.0)]
            .iter()
            .map(|&(x, y, r)| Feature {
                laf: Laf::circle(x, y, r),
                response: 1.0,
                sigma: r / crate::laf::MR_SIZE,
                octave: 0,
                level: 1,
            })
            .collect();
        let d = describe_hardnet(&space, &features, &hardnet);
        assert_eq!((d.len(), d.dimension, d.descriptors.len()), (3, 128, 384));
        for i in 0..3 {
            let norm = d.descriptor(i).iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        }
        // Different regions, different descriptors.
        assert!(d.descriptor(0) != d.descriptor(1));
    }
}
