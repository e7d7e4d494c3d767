//! Validation during training, as the authors' script does it after every epoch: HesAffNet with
//! the current weights on a pair with a known homography, ratio-0.8 tentatives, and how many of
//! them are correct (the image-2 point mapped by H⁻¹ within 6 px of the image-1 point).
//!
//! The matching is the library's [`Matcher`] (preset `hesaffnet` on the CPU:
//! Hessian, one AffNet shape without Baumberg, dominant orientation, RootSIFT) with the trained
//! network plugged in ([`Matcher::with_models`]); nothing here re-implements a stage.

use std::path::{Path, PathBuf};

use nalgebra::Matrix3;
use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::image::{load_gray, GrayImage, LoadOptions};
use crate::matcher::Matcher;
use crate::networks::Models;
use crate::pipeline::{Config, Method};
use crate::synth::{read_homography, transfer};
use crate::train::chain::affnet::TrainAffNet;
use crate::{Error, Result};

/// The authors' threshold for a correct tentative, in pixels of image 1.
pub const CORRECT_PX: f64 = 6.0;

/// A validation pair: two images and the homography image 1 → image 2.
#[derive(Clone, Debug)]
pub struct ValidationPair {
    /// Image 1.
    pub image1: GrayImage,
    /// Image 2.
    pub image2: GrayImage,
    /// The homography image 1 → image 2.
    pub h: Matrix3<f64>,
    /// Its inverse.
    pub h_inv: Matrix3<f64>,
    /// The files it was loaded from (image 1, image 2, homography).
    pub files: [PathBuf; 3],
}

impl ValidationPair {
    /// Loads `IMG1 IMG2 H1to2` (the Oxford homography format).
    pub fn load(image1: &Path, image2: &Path, homography: &Path) -> Result<Self> {
        let options = LoadOptions::default();
        let h = read_homography(homography)?;
        let h_inv = h.try_inverse().ok_or_else(|| {
            Error::Dataset(format!(
                "{}: the homography is singular",
                homography.display()
            ))
        })?;
        Ok(ValidationPair {
            image1: load_gray(image1, &options)?,
            image2: load_gray(image2, &options)?,
            h,
            h_inv,
            files: [image1.into(), image2.into(), homography.into()],
        })
    }
}

/// The outcome of one validation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Tentative correspondences of the match.
    pub tentatives: usize,
    /// Tentatives within [`CORRECT_PX`] of the ground truth.
    pub correct: usize,
    /// LO-RANSAC homography inliers (informational).
    pub inliers: usize,
}

/// Matches the pair with HesAffNet using `model`'s current weights (inference mode: running
/// batch-norm statistics).
pub fn validate(model: &TrainAffNet, pair: &ValidationPair) -> Result<Validation> {
    let mut config = Config::preset(Method::Hesaffnet);
    config.device = Device::Cpu;
    let models = Models {
        affnet: Some(model.to_inference()?),
        ..Models::none()
    };
    let matcher = Matcher::with_models(config, models)?;
    let report = matcher.match_images(&pair.image1, &pair.image2)?;
    let details = report
        .details
        .as_ref()
        .ok_or_else(|| Error::invalid("the match report has no details"))?;
    let correct = details
        .tentatives
        .iter()
        .filter(|t| {
            let p1 = details.features1[t.query].laf.c;
            let p2 = details.features2[t.train].laf.c;
            transfer(&pair.h_inv, [p2[0] as f64, p2[1] as f64])
                .is_some_and(|q| (q[0] - p1[0] as f64).hypot(q[1] - p1[1] as f64) <= CORRECT_PX)
        })
        .count();
    Ok(Validation {
        tentatives: report.tentatives,
        correct,
        inliers: report.inliers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundled sample pair with a fresh (untrained) AffNet: many tentatives are correct.
    #[test]
    fn sample_pair_with_fresh_weights() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
        let pair = ValidationPair::load(
            &root.join("img1.png"),
            &root.join("img2.png"),
            &root.join("H1to2p"),
        )
        .unwrap();
        let v = validate(&TrainAffNet::new(0), &pair).unwrap();
        assert!(v.tentatives > 20, "{v:?}");
        assert!(v.correct > 10 && v.correct <= v.tentatives, "{v:?}");
        // A wrong homography makes (almost) nothing correct.
        let mut wrong = pair.clone();
        wrong.h_inv = Matrix3::new_translation(&nalgebra::Vector2::new(40.0, 0.0)) * pair.h_inv;
        let w = validate(&TrainAffNet::new(0), &wrong).unwrap();
        assert!(w.correct * 5 < v.correct, "{w:?} vs {v:?}");
    }
}
