//! The operations of training and inference on the CPU, each with its forward and backward pass,
//! on NHWC f32 batches (an item's pixels row-major, a pixel's channels contiguous): convolution,
//! batch norm, activations, dropout, global pooling, the spatial transformer, the differentiable
//! SIFT, the descriptor losses (HardNegC and its family) and SGD. Each is checked against central
//! finite differences on odd sizes in its own tests.
//!
//! They are the CPU reference that every CUDA kernel (`kernels/`, wrapped in `gpu::ops`) must
//! reproduce, and the building blocks of the trainable [`crate::nn::network`]. The
//! [`crate::nn::backend`] trait puts both behind one interface (`backend::Cpu` calls these).

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod dropout;
pub mod input_map;
pub mod loss;
pub mod pool;
pub mod sgd;
pub mod sift;
pub mod spatial_transformer;

pub use activation::{relu_backward, relu_forward, tanh_backward, tanh_forward, Activation};
pub use batchnorm::{BatchNorm, BatchStats, Moments, BATCHNORM_MOMENTUM};
pub use conv::{conv2d_backward, conv2d_forward, ConvGrads, ConvInput, ConvShape};
pub use dropout::{dropout_backward, dropout_forward};
pub use input_map::InputMap;
pub use pool::{global_avg_pool_backward, global_avg_pool_forward};
