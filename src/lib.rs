//! wbs: a wide-baseline stereo matcher.
//!
//! Two photographs in, a verdict out: local affine features (Hessian detector, Baumberg or AffNet
//! shape, gradient-histogram or OriNet orientation, SIFT-family or HardNet descriptors), tentative
//! correspondences by the second-nearest-neighbour ratio test, and LO-RANSAC geometric verification.
//! The library does the work; the `wbs` binary is a thin command-line layer over it.
//!
//! # The common case
//! A [`Matcher`] is built once from a [`Config`] (a preset, then any field changed: the CLI flags
//! map 1:1 onto it, the device included); it loads the networks the settings use and matches
//! pairs of files, images or already extracted features.
//!
//! ```
//! use wbs::{Config, Matcher, Method};
//!
//! # fn main() -> wbs::Result<()> {
//! let mut config = Config::preset(Method::Hesaff); // Hessian-Affine + RootSIFT + LO-RANSAC
//! config.min_inliers = 15;
//! let matcher = Matcher::new(config)?;
//! let report = matcher.match_files(
//!     "data/sample/img1.png".as_ref(),
//!     "data/sample/img2.png".as_ref(),
//! )?;
//! assert!(report.registered, "{}", report.verdict);
//! println!("{} inliers of {} tentatives", report.inliers, report.tentatives);
//! let h = report.model.expect("a registered pair has a model"); // image 1 → image 2
//! # let _ = h;
//! # Ok(()) }
//! ```
//!
//! Errors ([`Error`]) are one line each and come before long work where they can: bad settings,
//! `Device::Cuda` without a GPU, missing or malformed weights, unreadable or oversized images.
//!
//! # The data flow
//! One module per arrow:
//! ```text
//! image ─▶ pyramid ─▶ detect ─▶ shape ─▶ orient ─▶ patch ─▶ describe ─▶ matching ─▶ geometry
//! ```
//! [`pipeline`] holds the settings, the stages and the report; [`networks`] loads AffNet, OriNet
//! and HardNet once and runs them on the configured [`device`]; [`nn`] is the neural-network core
//! (the CPU reference) and [`gpu`] the CUDA kernels behind the same operations; [`eval`] runs
//! whole datasets and [`train`] trains AffNet. The `cli` module (feature `cli`, on by default) is
//! the command line; `default-features = false` builds the library without clap, indicatif or
//! plotters.
//!
//! Conventions (see `docs/conventions.md`): pixel centres at integer coordinates, the top-left
//! pixel's centre is (0, 0); a local affine frame (LAF) `[A | c]` maps a point `u` of the normalised
//! patch `[-1, 1]²` to the image point `A·u + c`; homographies map image 1 to image 2; a
//! fundamental matrix satisfies `x2ᵀ·F·x1 = 0`; images are f32 gray in 0..255.

// `!(x > 0.0)` is used on purpose throughout: it rejects NaN as well as non-positive values.
#![allow(clippy::neg_cmp_op_on_partial_ord)]
#![warn(missing_docs)]

#[macro_use]
pub mod choice;
#[cfg(feature = "cli")]
pub mod cli;
pub mod collection;
pub mod describe;
pub mod detect;
pub mod device;
pub mod error;
pub mod eval;
pub mod feature;
pub mod files;
pub mod geometry;
pub mod gpu;
pub mod image;
pub mod laf;
pub mod matcher;
pub mod matching;
pub mod math;
pub mod mods;
pub mod mser;
pub mod networks;
pub mod nn;
pub mod orient;
pub mod patch;
pub mod pipeline;
#[cfg(feature = "plots")]
pub mod plot;
pub mod protocol;
pub mod provenance;
pub mod pyramid;
pub mod schedule;
pub mod settings;
pub mod shape;
pub mod simd;
pub mod synth;
pub mod train;
pub mod viz;

pub use error::{Error, Result};
pub use matcher::Matcher;
pub use pipeline::{Config, MatchReport, Method};
