//! The CUDA kernel sources, embedded in the binary. One file per op family in `kernels/`.

/// (module name, source) of every kernel file.
pub const SOURCES: &[(&str, &str)] =
    &[("elementwise", include_str!("../../kernels/elementwise.cu"))];

/// The source of one module.
pub fn source(module: &str) -> Option<&'static str> {
    SOURCES
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, s)| *s)
}
