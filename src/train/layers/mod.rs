//! The layers of the three networks with explicit forward and backward passes, on NHWC f32
//! batches (an item's pixels row-major, a pixel's channels contiguous). Each is checked against
//! central finite differences on odd sizes in its own tests.
//!
//! These are the CPU reference for the CUDA kernels of issue 5 and the building blocks of
//! [`crate::train::network`].

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod dropout;
pub mod input_map;
pub mod pool;

pub use activation::{relu_backward, relu_forward, tanh_backward, tanh_forward};
pub use batchnorm::{BatchNorm, BatchStats, Moments, BATCHNORM_MOMENTUM};
pub use conv::{conv2d_backward, conv2d_forward, ConvGrads, ConvInput, ConvShape};
pub use dropout::{dropout_backward, dropout_forward};
pub use input_map::InputMap;
pub use pool::{global_avg_pool_backward, global_avg_pool_forward};
