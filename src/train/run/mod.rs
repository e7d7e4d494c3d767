//! The training loop: the [`trainer`] (steps, learning-rate schedule, the device), a whole run
//! with its checkpoints, log and resume ([`session`], [`checkpoint`]), validation on a pair with a
//! known homography ([`validate`]) and the curves drawn from the log ([`curves`]).

pub mod checkpoint;
#[cfg(feature = "plots")]
pub mod curves;
pub mod session;
pub mod trainer;
pub mod validate;
