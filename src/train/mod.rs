//! Training AffNet on the CPU (work in progress).

pub mod gradcheck;
pub mod layers;
mod parallel;
pub mod rng;
