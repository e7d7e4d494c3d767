//! What every compute backend shares: the shapes of the batched operations, checked once in plain
//! Rust.

mod geometry;

pub use geometry::{fits_int, ConvGeometry, WarpGeometry};
