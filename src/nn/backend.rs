//! One interface to the operations of inference and training, whatever runs them (after candle's
//! `BackendStorage`): a [`Backend`] owns buffers of f32 values and runs every op on them, with the
//! meaning, layouts and argument order of the CUDA kernel wrappers (`gpu::ops`, which document
//! the layouts; `gpu` implements the trait as `gpu::backend::Cuda`, one call per op).
//!
//! [`Cpu`] is the reference: each of its ops calls the CPU code in [`crate::nn::ops`],
//! [`crate::patch`], [`crate::matching`] and the normalisations of [`crate::nn`], with only the
//! glue that turns buffers into the slices those functions take. The parity checks
//! ([`crate::nn::parity`]) run one generic body per op on any backend against that CPU code.
//!
//! # Conventions
//! - Ops queue work and return; [`Backend::download`] waits for it (the CPU runs at once).
//! - Output buffers are allocated by the caller ([`Backend::zeros`]) and overwritten, except the
//!   few ops that return what they compute (batch statistics, SIFT cache, nearest neighbours,
//!   ratios, the loss).
//! - Shapes: [`ConvGeometry`] and [`WarpGeometry`] are checked when built. Buffers that do not fit
//!   the shape are an `Error::Invalid` on the CUDA backend; the CPU backend panics, as the
//!   reference functions it calls assert their lengths.
//! - The CUDA backend's [`Backend::zeros`] allocates at least one value (a valid device
//!   pointer), so [`Backend::len`] of an empty buffer may be 1 there.

mod cpu;
mod geometry;

pub use cpu::Cpu;
pub use geometry::{fits_int, ConvGeometry, WarpGeometry};

use crate::laf::Laf;
use crate::matching::TwoNearest;
use crate::nn::fold::FusedAct;
use crate::nn::ops::loss::{LossKind, LossStats};
use crate::nn::ops::{Activation, BatchStats, InputMap};
use crate::patch::PatchSpec;
use crate::pyramid::ScaleSpace;
use crate::Result;

/// A compute backend: its buffers and every operation on them.
pub trait Backend: Send + Sync {
    /// A buffer of f32 values.
    type Buf: Send + Sync;
    /// A buffer of u32 indices (the nearest neighbours).
    type Indices: Send + Sync;
    /// A scale space ready for patch sampling ([`Backend::upload_pyramid`]).
    type Pyramid: Send + Sync;
    /// What [`Backend::sift_forward`] keeps for [`Backend::sift_backward`].
    type SiftCache: Send + Sync;

    /// A short name for reports ("cpu", "cuda").
    fn name(&self) -> &'static str;

    // -- Buffers ---------------------------------------------------------------------------------

    /// A new buffer holding `host`.
    fn upload(&self, host: &[f32]) -> Result<Self::Buf>;
    /// The values of `buf` (waits for the work queued before).
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    /// The values of an index buffer.
    fn download_indices(&self, buf: &Self::Indices) -> Result<Vec<u32>>;
    /// A buffer of `len` zeros (see the module docs for `len` 0).
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// The number of values in `buf`.
    fn len(&self, buf: &Self::Buf) -> usize;

    // -- Elementwise -----------------------------------------------------------------------------

    /// `x[i] = value`.
    fn fill(&self, x: &mut Self::Buf, value: f32) -> Result<()>;
    /// `y += a·x`.
    fn axpy(&self, a: f32, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// `y = act(x)`.
    fn activation_forward(&self, act: Activation, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// `dx = dy·act'(·)`, from the forward input `x` (ReLU) or output `y` (tanh): `saved`.
    fn activation_backward(
        &self,
        act: Activation,
        dy: &Self::Buf,
        saved: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// `y = map(x)·mask/(1 − p)`: dropout with the mask of `nn::ops::dropout` (a hash of
    /// `(seed, flat index)`), reading `x` through `map` (`c` channels, fastest-varying).
    #[allow(clippy::too_many_arguments)]
    fn dropout_forward(
        &self,
        x: &Self::Buf,
        map: InputMap<'_, Self::Buf>,
        c: usize,
        p: f32,
        seed: u64,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// `d = d·mask/(1 − p)` in place: the backward of [`Backend::dropout_forward`].
    fn dropout_backward(&self, d: &mut Self::Buf, p: f32, seed: u64) -> Result<()>;

    // -- Convolution -----------------------------------------------------------------------------

    /// `y = act(conv(map(x)) + bias)`: NHWC `x`, GEMM-layout `w`, NHWC `y`.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_forward(
        &self,
        g: &ConvGeometry,
        x: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
        map: InputMap<'_, Self::Buf>,
        act: FusedAct,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// `dx = dL/d(map(x))` (overwritten) from `dy`.
    fn conv2d_backward_input(
        &self,
        g: &ConvGeometry,
        dy: &Self::Buf,
        w: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// `dw = Σ col(map(x))ᵀ·dy` (GEMM layout) and `db = Σ dy`, both overwritten.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward_weight(
        &self,
        g: &ConvGeometry,
        x: &Self::Buf,
        dy: &Self::Buf,
        map: InputMap<'_, Self::Buf>,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
    ) -> Result<()>;

    // -- Batch norm ------------------------------------------------------------------------------

    /// Batch statistics of `x` (`rows × c`) and, with `running`, the running-statistics update
    /// (momentum; unbiased variance), as `BatchNorm::forward_train`'s statistics.
    fn bn_batch_stats(
        &self,
        x: &Self::Buf,
        c: usize,
        eps: f32,
        momentum: f32,
        running: Option<(&mut Self::Buf, &mut Self::Buf)>,
    ) -> Result<BatchStats<Self::Buf>>;
    /// `inv_std = 1/sqrt(var + eps)` (inference with running statistics).
    fn bn_inv_std(&self, var: &Self::Buf, eps: f32, inv_std: &mut Self::Buf) -> Result<()>;
    /// `y = (x − mean)·inv_std` per channel (then ReLU when `relu`).
    fn bn_normalise(
        &self,
        x: &Self::Buf,
        mean: &Self::Buf,
        inv_std: &Self::Buf,
        relu: bool,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// Training-mode backward: `dx` from `dy` (w.r.t. x̂, or max(x̂, 0) when `relu_after`).
    fn bn_backward_train(
        &self,
        x: &Self::Buf,
        dy: &Self::Buf,
        stats: &BatchStats<Self::Buf>,
        relu_after: bool,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// Inference-mode backward: `dx = dy·inv_std` (masked when `relu_after`).
    #[allow(clippy::too_many_arguments)]
    fn bn_backward_eval(
        &self,
        x: &Self::Buf,
        dy: &Self::Buf,
        mean: &Self::Buf,
        inv_std: &Self::Buf,
        relu_after: bool,
        dx: &mut Self::Buf,
    ) -> Result<()>;

    // -- Pooling and normalisations --------------------------------------------------------------

    /// `y[b][c] = mean over the pixels of x[b][·][c]` (NHWC, `n` items of `hw × c`).
    fn global_avg_pool_forward(
        &self,
        x: &Self::Buf,
        n: usize,
        c: usize,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// `dx[b][p][c] = dy[b][c] / hw` (overwritten).
    fn global_avg_pool_backward(
        &self,
        dy: &Self::Buf,
        n: usize,
        c: usize,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// Per-item `(x − mean)/(std + eps)` with the unbiased std; items of `len` values.
    fn standardise(&self, x: &Self::Buf, len: usize, eps: f32, y: &mut Self::Buf) -> Result<()>;
    /// Backward of [`Backend::standardise`] with each item's mean and std held fixed:
    /// `dx = dy / (std(x) + eps)`; `x` is the unstandardised input.
    fn standardise_backward(
        &self,
        x: &Self::Buf,
        dy: &Self::Buf,
        len: usize,
        eps: f32,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    /// Per-row `x / sqrt(Σx² + eps)`, rows of `dim`.
    fn l2_normalise(&self, x: &Self::Buf, dim: usize, eps: f32, y: &mut Self::Buf) -> Result<()>;
    /// Backward of [`Backend::l2_normalise`]: `dx = dy/‖x‖ − x·(dy·x)/‖x‖³`; `x` is the
    /// unnormalised rows.
    fn l2_normalise_backward(
        &self,
        x: &Self::Buf,
        dy: &Self::Buf,
        dim: usize,
        eps: f32,
        dx: &mut Self::Buf,
    ) -> Result<()>;

    // -- Patches and the spatial transformer -----------------------------------------------------

    /// `space` made ready for [`Backend::extract_patches`] (on a device: uploaded once).
    fn upload_pyramid(&self, space: &ScaleSpace) -> Result<Self::Pyramid>;
    /// The `spec` patches of `lafs` (input-image pixels) sampled from `pyramid`, the upload of
    /// `space`: `lafs.len() · size²` values, as `patch::extract_patches`.
    fn extract_patches(
        &self,
        pyramid: &Self::Pyramid,
        space: &ScaleSpace,
        lafs: &[Laf],
        spec: &PatchSpec,
    ) -> Result<Self::Buf>;
    /// Batched affine warp (`theta`: 6 floats per item, `[m00 m01 t0 m10 m11 t1]`).
    fn warp_forward(
        &self,
        g: &WarpGeometry,
        src: &Self::Buf,
        theta: &Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// Gradients of [`Backend::warp_forward`]: `d_theta` (overwritten) and, if given, `d_src`
    /// (overwritten).
    #[allow(clippy::too_many_arguments)]
    fn warp_backward(
        &self,
        g: &WarpGeometry,
        src: &Self::Buf,
        theta: &Self::Buf,
        d_out: &Self::Buf,
        d_src: Option<&mut Self::Buf>,
        d_theta: &mut Self::Buf,
    ) -> Result<()>;

    // -- SIFT ------------------------------------------------------------------------------------

    /// Unit-length 128-D differentiable-SIFT descriptors of `size × size` patches.
    fn sift_forward(
        &self,
        patches: &Self::Buf,
        size: usize,
        out: &mut Self::Buf,
    ) -> Result<Self::SiftCache>;
    /// `d_patches` (overwritten) from `d_desc`, for the patches of the forward pass.
    fn sift_backward(
        &self,
        patches: &Self::Buf,
        size: usize,
        cache: &Self::SiftCache,
        d_desc: &Self::Buf,
        d_patches: &mut Self::Buf,
    ) -> Result<()>;

    // -- Nearest neighbours ----------------------------------------------------------------------

    /// Exact two nearest neighbours (rows of `dim` values), as `matching::two_nearest`.
    fn two_nearest(
        &self,
        queries: &Self::Buf,
        database: &Self::Buf,
        dim: usize,
    ) -> Result<TwoNearest<Self::Indices, Self::Buf>>;
    /// Exact `k` nearest neighbours (rows of `dim` values), as `matching::k_nearest_scores`:
    /// per query `k` scores `‖d‖² − 2·q·d`, ascending, and their database rows (+∞ and
    /// u32::MAX past the database's end). MODS's FGINN walks them.
    fn k_nearest(
        &self,
        queries: &Self::Buf,
        database: &Self::Buf,
        dim: usize,
        k: usize,
    ) -> Result<(Self::Buf, Self::Indices)>;
    /// The ratio test: `d1/d2` where it passes `max_ratio`, +∞ elsewhere (one value per query).
    fn ratio_test(
        &self,
        nn: &TwoNearest<Self::Indices, Self::Buf>,
        max_ratio: f32,
    ) -> Result<Self::Buf>;

    // -- Losses and the optimiser ----------------------------------------------------------------

    /// The descriptor loss of `kind` on `anchors` and `positives` (`N × dim` each), writing the
    /// gradients asked for (overwritten), as `nn::ops::loss::descriptor_loss`.
    #[allow(clippy::too_many_arguments)]
    fn descriptor_loss(
        &self,
        kind: LossKind,
        anchors: &Self::Buf,
        positives: &Self::Buf,
        dim: usize,
        ga: Option<&mut Self::Buf>,
        gp: Option<&mut Self::Buf>,
    ) -> Result<LossStats>;
    /// One SGD step as `nn::ops::sgd::Sgd::step` (`first`: the momentum buffer is initialised
    /// with the gradient, as PyTorch).
    #[allow(clippy::too_many_arguments)]
    fn sgd_step(
        &self,
        params: &mut Self::Buf,
        momentum_buffer: &mut Self::Buf,
        grads: &Self::Buf,
        lr: f32,
        momentum: f32,
        dampening: f32,
        weight_decay: f32,
        first: bool,
    ) -> Result<()>;
}
