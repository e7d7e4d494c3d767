//! A small neural-network core: NCHW f32 tensors, layers with explicit forward/backward, the AffNet,
//! OriNet and HardNet models, and weight I/O.
