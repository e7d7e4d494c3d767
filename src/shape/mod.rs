//! Affine shape: turns circular detections into affine-covariant frames.
//!
//! `none` keeps the circle, `baumberg` runs the classical second-moment iteration
//! ([`baumberg`]), `affnet` asks the network once (see [`crate::nn`]). Every method then keeps the
//! scale, makes the frame upright (up is up; orientation is assigned later), and drops frames more
//! elongated than 6:1 or whose measurement region touches the image border.

pub mod affnet;
pub mod baumberg;

use rayon::prelude::*;

use crate::detect::Detection;
use crate::feature::Feature;
use crate::laf::{upright_shape, Laf, MR_SIZE};
use crate::pyramid::ScaleSpace;

pub use affnet::{
    average_turned_shapes, shape_by_affnet, shape_from_affnet_outputs, turned_circles,
};
pub use baumberg::{Adaptation, BaumbergWindow};

/// Frames more elongated than this (long/short axis) are dropped, whatever the shape method.
pub const MAX_ELONGATION: f32 = 6.0;

choices! {
    /// What happens to a detection whose shape estimation fails (Baumberg does not converge, or its
    /// estimate exceeds 6:1).
    pub enum ShapeFailures {
        /// Keep the detection with its circular frame (wbs's default; measured in docs/accuracy.md).
        Circle = "circle",
        /// Drop it, as hesaff does.
        Drop = "drop",
    }
}

choices! {
    /// How the affine shape of a detection is estimated.
    pub enum ShapeMethod {
        /// Keep the circular region.
        None = "none",
        /// Baumberg's second-moment iteration (Hessian-Affine).
        Baumberg = "baumberg",
        /// AffNet, one pass on the detection's patch (HesAffNet).
        Affnet = "affnet",
    }
}

/// Shapes detections with the classical methods (`none`, `baumberg`); AffNet lives with the
/// networks. Order follows the detections; dropped ones leave no trace.
pub fn shape_classical(
    space: &ScaleSpace,
    detections: &[Detection],
    method: ShapeMethod,
    failures: ShapeFailures,
) -> Vec<Feature> {
    let (w, h) = (space.input.width(), space.input.height());
    let window = BaumbergWindow::new();
    detections
        .par_iter()
        .filter_map(|d| {
            let feature = Feature::from_detection(d);
            let shape = match method {
                ShapeMethod::None => [[1.0, 0.0], [0.0, 1.0]],
                ShapeMethod::Baumberg => match window.adapt(space, d) {
                    Adaptation::Converged(u) => u,
                    _ if failures == ShapeFailures::Circle => [[1.0, 0.0], [0.0, 1.0]],
                    _ => return None,
                },
                ShapeMethod::Affnet => unreachable!("AffNet shapes come from shape_by_affnet"),
            };
            keep_if_valid(feature.with_laf(shaped_laf(d, shape)), w, h)
        })
        .collect()
}

/// The frame of detection `d` with the det-1 `shape`: upright, radius mrSize·σ.
pub fn shaped_laf(d: &Detection, shape: [[f32; 2]; 2]) -> Laf {
    let u = upright_shape(shape);
    let r = MR_SIZE * d.sigma;
    Laf {
        a: [[u[0][0] * r, 0.0], [u[1][0] * r, u[1][1] * r]],
        c: [d.x, d.y],
    }
}

/// The common filter: not too elongated, inside the image.
pub fn keep_if_valid(feature: Feature, width: usize, height: usize) -> Option<Feature> {
    let laf = &feature.laf;
    if laf.elongation() > MAX_ELONGATION || laf.touches_border(width, height) {
        None
    } else {
        Some(feature)
    }
}
