//! Training AffNet: data (`wbs train-data`, UBC Phototour), the chain with its backward pass on
//! the CPU (the device chain, `gpu::train_chain`, shares `regions` with it), the optimiser,
//! checkpoints, validation and curves (`wbs train affnet`).

pub mod affnet;
pub mod augment;
pub mod chain;
pub mod checkpoint;
#[cfg(feature = "plots")]
pub mod curves;
pub mod data;
pub mod gradcheck;
pub mod hardnet;
pub mod layers;
pub mod loss;
pub mod network;
pub mod optim;
mod parallel;
pub mod photo_pairs;
pub mod phototour;
pub mod regions;
pub mod rng;
pub mod session;
pub mod shape;
pub mod sift;
pub mod spatial_transformer;
pub mod trainer;
pub mod validate;

pub use affnet::TrainAffNet;
pub use chain::{Descriptor, PairBatch, StageTimes, StepStats, TrainChain};
pub use hardnet::FrozenHardNet;
pub use loss::{descriptor_loss, LossGrads, LossKind, LossStats};
pub use network::{Mode, Network, ParamSpec};
pub use optim::{linear_decay, recipe_lr, Sgd};
pub use spatial_transformer::{Affine, WarpSize};
mod bench;
pub use bench::{
    bench_report, bench_step, recipe_frames, synthetic_pairs, SyntheticBatch, TrainBench,
};
