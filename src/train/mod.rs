//! Training AffNet on the CPU (work in progress).

pub mod gradcheck;
pub mod layers;
pub mod network;
mod parallel;
pub mod rng;
