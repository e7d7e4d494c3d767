//! Training AffNet: data (`wbs train-data`, UBC Phototour), augmentation, the chain with its
//! backward pass on the CPU and on CUDA (`device_chain`, which shares `regions` with it), the
//! trainer, checkpoints, validation and curves (`wbs train affnet`). The operations it is built
//! from (layers, losses, the spatial transformer, the differentiable SIFT, SGD) are in
//! [`crate::nn::ops`], the trainable network in [`crate::nn::network`].

pub mod affnet;
pub mod augment;
pub mod chain;
pub mod checkpoint;
#[cfg(feature = "plots")]
pub mod curves;
pub mod data;
#[cfg(feature = "cuda")]
pub mod device_chain;
pub mod hardnet;
pub mod photo_pairs;
pub mod phototour;
pub mod regions;
pub mod session;
pub mod shape;
pub mod trainer;
pub mod validate;

pub use crate::nn::network::{Mode, Network, ParamSpec};
pub use crate::nn::ops::loss::{descriptor_loss, LossGrads, LossKind, LossStats};
pub use crate::nn::ops::sgd::{linear_decay, recipe_lr, Sgd};
pub use crate::nn::ops::spatial_transformer::{Affine, WarpSize};
pub use affnet::TrainAffNet;
pub use chain::{Descriptor, PairBatch, StepStats, StepTimes, TrainChain};
pub use hardnet::FrozenHardNet;
mod bench;
pub use bench::{
    bench_report, bench_step, recipe_frames, synthetic_pairs, SyntheticBatch, TrainBench,
};
