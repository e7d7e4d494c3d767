//! The CUDA kernel sources, embedded in the binary: one file per concept in `kernels/`, all
//! header-free (NVRTC has no standard headers). What several files share is written once in
//! `kernels/prelude.cuh` ([`PRELUDE`]; today `GEMM_TILE_4X4`, the 4×4 register-tiled GEMM step of
//! the convolutions and the nearest-neighbour search), which is prepended to every file at embed
//! time, with `#line` directives so that NVRTC's messages and the PTX line info name `prelude.cuh`
//! or the kernel file with its own line numbers. A module's source, and so the hash that
//! precompiled PTX records, includes the prelude. `tests/gpu_kernels.rs` checks that this list and
//! the folder agree, that every module compiles with NVRTC, and that the tile step is not copied
//! back into a kernel file.

/// The source prepended to every kernel file (`kernels/prelude.cuh`).
pub const PRELUDE: &str = include_str!("../../kernels/prelude.cuh");

macro_rules! kernels {
    ($($name:literal),* $(,)?) => {
        /// (module name, source) of every kernel file, each with [`PRELUDE`] in front.
        pub const SOURCES: &[(&str, &str)] = &[
            $(($name, concat!(
                "#line 1 \"prelude.cuh\"\n",
                include_str!("../../kernels/prelude.cuh"),
                "\n#line 1 \"", $name, ".cu\"\n",
                include_str!(concat!("../../kernels/", $name, ".cu")),
            ))),*
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
