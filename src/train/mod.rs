//! Training AffNet on the CPU (work in progress).

pub mod gradcheck;
pub mod layers;
pub mod loss;
pub mod network;
pub mod optim;
mod parallel;
pub mod rng;
pub mod shape;
pub mod sift;
pub mod spatial_transformer;
