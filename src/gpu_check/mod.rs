//! `wbs gpu-check` and `wbs bench --device cuda`: every CUDA kernel against its CPU reference,
//! whole matches on both devices, and the device's speed figures. They sit above the whole
//! library (they run matches and training steps); the backend they check, [`crate::gpu`], knows
//! nothing of them.

pub mod bench;
pub mod check;
