//! Training AffNet (`wbs train-data`, `wbs train affnet`), in three parts:
//! - [`data`]: training pairs (cut from photographs, or UBC Phototour) and their augmentation;
//! - [`chain`]: one training step, forward and backward through AffNet, the spatial transformer,
//!   the descriptor and the loss, on the CPU and on CUDA (`chain::device`, which shares
//!   `chain::regions` with it), and its throughput;
//! - [`run`]: the loop: the trainer, checkpoints and resume, validation, the log and its curves.
//!
//! The operations it is built from (layers, losses, the spatial transformer, the differentiable
//! SIFT, SGD) are in [`crate::nn::ops`], the trainable network in [`crate::nn::network`].

pub mod chain;
pub mod data;
pub mod run;

pub use crate::nn::network::{Mode, Network, ParamSpec};
pub use crate::nn::ops::loss::{descriptor_loss, LossGrads, LossKind, LossStats};
pub use crate::nn::ops::sgd::{linear_decay, recipe_lr, Sgd};
pub use crate::nn::ops::spatial_transformer::{Affine, WarpSize};
pub use chain::affnet::TrainAffNet;
pub use chain::bench::{
    bench_report, bench_step, bench_step_on, recipe_frames, synthetic_pairs, SyntheticBatch,
    TrainBench,
};
pub use chain::hardnet::FrozenHardNet;
pub use chain::{Descriptor, PairBatch, StepStats, StepTimes, TrainChain};
