//! The CUDA kernel sources, embedded in the binary: one file per concept in `kernels/`, all
//! header-free (NVRTC has no standard headers). `tests/gpu_kernels.rs` checks that this list and
//! the folder agree and that every file compiles with NVRTC.

macro_rules! kernels {
    ($($name:literal),* $(,)?) => {
        /// (module name, source) of every kernel file.
        pub const SOURCES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../kernels/", $name, ".cu")))),*
        ];
    };
}

kernels!(
    "batchnorm",
    "conv2d_backward_input",
    "conv2d_backward_weight",
    "conv2d_forward",
    "elementwise",
    "loss",
    "nearest_neighbours",
    "normalise",
    "patch_extract",
    "pool",
    "sgd",
    "sift",
    "spatial_transformer",
);

/// The source of one module.
pub fn source(module: &str) -> Option<&'static str> {
    SOURCES
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, s)| *s)
}
