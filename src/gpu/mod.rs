//! The CUDA backend: device detection, run-time compilation of `kernels/*.cu` with NVRTC, and one
//! safe wrapper per kernel.
//!
//! No CUDA is needed to build wbs: the driver (`libcuda`) and NVRTC (`libnvrtc`) are opened at run
//! time through cudarc's dynamic loading. [`probe`] says whether a GPU can be used and why not;
//! `--device auto` falls back to the CPU when it cannot, `--device cuda` makes that an error.
//! Kernels are embedded in the binary ([`kernels::SOURCES`]) and compiled on first use for the
//! device's compute capability; header-free, because NVRTC alone has no standard headers.
//!
//! NVRTC can also run without a GPU, which is how CI checks that every kernel compiles: see
//! [`nvrtc::compile`] and `tests/gpu_kernels.rs`. Point wbs at a NVRTC that is not on the library
//! path with `WBS_NVRTC_DIR=<dir with libnvrtc.so.13>` (e.g. from the `nvidia-cuda-nvrtc==13.0.88`
//! pip wheel).

pub mod kernels;
pub mod nvrtc;

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
pub use device::Gpu;

/// What the machine offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    pub name: String,
    /// (major, minor), e.g. (9, 0) for an H100.
    pub compute_capability: (i32, i32),
    pub memory_bytes: usize,
}

/// Whether a CUDA GPU can be used, without panicking when the driver is absent.
pub fn probe() -> Result<GpuInfo, String> {
    #[cfg(feature = "cuda")]
    {
        device::probe()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("this wbs was built without the `cuda` feature".into())
    }
}
