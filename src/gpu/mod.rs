//! The CUDA backend: device detection, run-time compilation of `kernels/*.cu` with NVRTC, one safe
//! wrapper per kernel, the same ops behind `nn::backend::Backend` (`backend::Cuda`), the three
//! networks on the device, patch sampling from a device pyramid, and the nearest-neighbour search.
//!
//! No CUDA is needed to build wbs: the driver (`libcuda`) and NVRTC (`libnvrtc`) are opened at run
//! time through cudarc's dynamic loading. [`probe`] says whether a GPU can be used and why not;
//! `--device auto` falls back to the CPU when it cannot, `--device cuda` makes that an error.
//! Kernels are embedded in the binary ([`kernels::SOURCES`]) and compiled on first use for the
//! device's compute capability ([`nvrtc::arch_for`]: `compute_90` on an H100/H200), once per
//! process; header-free, because NVRTC alone has no standard headers. What several kernel files
//! share (the register-tiled GEMM step) is in `kernels/prelude.cuh`, which is prepended to every
//! file when it is embedded.
//!
//! NVRTC can also run without a GPU, which is how CI checks that every kernel compiles: see
//! [`nvrtc::compile`] and `tests/gpu_kernels.rs`. Point wbs at a NVRTC that is not on the library
//! path with `WBS_NVRTC_DIR=<dir with libnvrtc.so.13>` (e.g. from the `nvidia-cuda-nvrtc==13.0.88`
//! pip wheel).
//!
//! # Layouts (the same as the CPU training code, `nn::ops`)
//! - Activations are **NHWC**: `n` items of `h × w` pixels, a pixel's channels contiguous. A
//!   convolution is then an implicit GEMM `[pixels × k·k·cin]·[k·k·cin × cout]` whose output rows
//!   are the next layer's pixels. The CPU inference reference (`nn::layers`) is NCHW; the two
//!   agree for the networks' inputs (one channel) and pooled outputs (`n × c`), which is all the
//!   parity checks compare. HardNet's output, `n × 128` after the final 8×8 convolution, is the
//!   same in both.
//! - Convolution weights are in **GEMM layout** `[(ky·k + kx)·cin + ci][co]`
//!   (`nn::ops::ConvShape::to_gemm_layout` converts PyTorch's `[co][ci][ky][kx]`).
//! - Patches are `size × size`, row-major, back to back; descriptors `n × dim` row-major.
//! - Affine maps of the spatial transformer are 6 floats per item, `[m00 m01 t0 m10 m11 t1]`;
//!   frames for patch extraction are `[a00 a01 a10 a11 c0 c1]` in the chosen image's pixels.
//! - Sums over a batch (batch-norm statistics, pooling, losses, dθ) are accumulated in f64 like
//!   the CPU; GEMM-shaped work in f32 FMA. No TF32 anywhere, so the f32 tolerance applies.
//!
//! # Tolerance
//! The parity checks (`nn::parity`, run by `wbs gpu-check`) compare every kernel with its CPU
//! reference on random inputs of odd sizes by the normwise relative error
//! `max|gpu − cpu| / max|cpu|`, which must be ≤ 1e-4. Elementwise relative errors are not used:
//! values near zero (gradients, centred activations) legitimately differ more than 1e-4 of
//! themselves after a different summation order.

pub mod kernels;
pub mod nvrtc;
pub mod shapes;

#[cfg(feature = "cuda")]
pub mod backend;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
pub mod net;
#[cfg(feature = "cuda")]
pub mod ops;
#[cfg(feature = "cuda")]
pub mod pyramid;
#[cfg(feature = "cuda")]
pub mod search;
#[cfg(feature = "cuda")]
pub use device::Gpu;

/// What the machine offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    /// The device's name, as the driver reports it.
    pub name: String,
    /// (major, minor), e.g. (9, 0) for an H100.
    pub compute_capability: (i32, i32),
    /// Total device memory.
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

/// The one-line error of every command that needs a GPU when there is none.
pub fn no_device_error(context: &str, reason: &str) -> crate::Error {
    crate::Error::Device(format!(
        "{context}: `cuda` requested but no CUDA driver/device found ({reason})"
    ))
}
