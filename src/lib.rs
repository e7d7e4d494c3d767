//! wbs: a wide-baseline stereo matcher.
//!
//! Two photographs in, a verdict out: local affine features (Hessian detector, Baumberg or AffNet
//! shape, gradient-histogram or OriNet orientation, SIFT-family or HardNet descriptors), tentative
//! correspondences by the second-nearest-neighbour ratio test, and LO-RANSAC geometric verification.
//! The library does the work; the `wbs` binary is a thin command-line layer over it.
//!
//! The data flow, one module per arrow:
//! ```text
//! image ─▶ pyramid ─▶ detect ─▶ shape ─▶ orient ─▶ patch ─▶ describe ─▶ matching ─▶ geometry
//! ```
//! and [`pipeline`] runs the arrows from one [`pipeline::Config`].
//!
//! Conventions (see `docs/conventions.md`): pixel centres at integer coordinates, the top-left
//! pixel's centre is (0, 0); a local affine frame (LAF) `[A | c]` maps a point `u` of the normalised
//! patch `[-1, 1]²` to the image point `A·u + c`; homographies map image 1 to image 2; a
//! fundamental matrix satisfies `x2ᵀ·F·x1 = 0`; images are f32 gray in 0..255.

// `!(x > 0.0)` is used on purpose throughout: it rejects NaN as well as non-positive values.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod cli;
pub mod describe;
pub mod detect;
pub mod error;
pub mod eval;
pub mod feature;
pub mod geometry;
pub mod gpu;
pub mod image;
pub mod laf;
pub mod matching;
pub mod math;
pub mod models;
pub mod nn;
pub mod orient;
pub mod patch;
pub mod pipeline;
pub mod protocol;
pub mod pyramid;
pub mod shape;
pub mod simd;
pub mod synth;
pub mod train;
pub mod viz;

pub use error::{Error, Result};
