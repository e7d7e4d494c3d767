//! A local feature: an affine frame plus where it came from in the scale space.

use serde::{Deserialize, Serialize};

use crate::detect::Detection;
use crate::laf::Laf;

/// A detected, shaped and (possibly) oriented region.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    /// The frame in input-image pixels; its square `A·[±1, ±1] + c` is the measurement region.
    pub laf: Laf,
    /// The detector response (signed; saddles are negative).
    pub response: f32,
    /// The detector scale σ in input-image pixels.
    pub sigma: f32,
    /// The octave of the detection (0 is the input resolution; 0 for MSER regions).
    pub octave: u8,
    /// The detection level within the octave, 1..=3 (0 for MSER regions: no scale space).
    pub level: u8,
}

impl Feature {
    /// The feature of a detection before shape adaptation: a circle of radius mrSize·σ.
    pub fn from_detection(d: &Detection) -> Feature {
        Feature {
            laf: Laf::from_detection(d.x, d.y, d.sigma),
            response: d.response,
            sigma: d.sigma,
            octave: d.octave as u8,
            level: d.level as u8,
        }
    }

    /// The same feature with another frame.
    pub fn with_laf(&self, laf: Laf) -> Feature {
        Feature { laf, ..*self }
    }
}
