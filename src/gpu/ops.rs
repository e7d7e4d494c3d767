//! One safe wrapper per kernel: each checks its buffers against the shape ([`super::shapes`]),
//! picks the launch configuration there, and launches on the [`Gpu`]'s stream. Nothing is
//! synchronised here: work is queued, and a download (or [`Gpu::synchronize`]) waits for it.
//! Layouts and conventions: see the module docs of [`crate::gpu`].

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::device::{driver_error, Gpu};
use super::shapes::{
    channel_reduction, check_int, check_len, gemm_abt_launch, k_nearest_launch, linear,
    nearest_launch, per_item, sift_launch, ConvGeometry, Launch, WarpGeometry, THREADS,
};
use crate::matching::TwoNearest;
pub use crate::nn::fold::FusedAct;
use crate::nn::ops::loss::{LossKind, LossStats};
pub use crate::nn::ops::{Activation, BatchStats};
use crate::{Error, Result};

/// A device buffer of f32.
pub type Buf = CudaSlice<f32>;

/// The null device pointer, for optional kernel arguments.
static NULL: u64 = 0;

fn config(l: Launch) -> LaunchConfig {
    LaunchConfig {
        grid_dim: l.grid,
        block_dim: l.block,
        shared_mem_bytes: l.shared_bytes,
    }
}

/// Pushes the arguments and launches (unless the launch is empty).
macro_rules! launch {
    ($gpu:expr, $module:literal, $func:literal, $launch:expr; $($arg:expr),* $(,)?) => {{
        let l: Launch = $launch;
        if !l.is_empty() {
            let f = $gpu.function($module, $func)?;
            let mut b = $gpu.stream().launch_builder(&f);
            $( b.arg($arg); )*
            // SAFETY: the wrapper checked every buffer's length against the shape the kernel
            // indexes with, and the argument list matches the kernel's signature in
            // kernels/<module>.cu.
            unsafe { b.launch(config(l)) }.map_err(driver_error)?;
        }
        Ok::<(), Error>(())
    }};
}

/// An optional buffer argument (the null pointer when absent).
macro_rules! opt {
    ($b:expr) => {
        OptBuf($b)
    };
}

/// Like `launch!`, for argument lists with optional buffers: every argument is something that
/// implements [`PushTo`] (a buffer reference, `opt!(..)`, `Scalar(..)`). The arguments are held
/// in boxes that outlive the launch, since the driver reads them at launch time.
macro_rules! launch_opt {
    ($gpu:expr, $module:literal, $func:literal, $launch:expr; $($arg:expr),* $(,)?) => {{
        let l: Launch = $launch;
        if !l.is_empty() {
            let f = $gpu.function($module, $func)?;
            let holders: Vec<Box<dyn PushTo + '_>> = vec![$(Box::new($arg)),*];
            let mut b = $gpu.stream().launch_builder(&f);
            for h in &holders {
                h.push_to(&mut b);
            }
            // SAFETY: as in `launch!`; null pointers are passed only where the kernel checks them.
            unsafe { b.launch(config(l)) }.map_err(driver_error)?;
        }
        Ok::<(), Error>(())
    }};
}

/// A kernel argument that can be pushed onto a launch.
trait PushTo {
    fn push_to<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>);
}
struct OptBuf<'b>(Option<&'b Buf>);
impl PushTo for OptBuf<'_> {
    fn push_to<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>) {
        match self.0 {
            Some(s) => b.arg(s),
            None => b.arg(&NULL),
        };
    }
}
struct Scalar<T>(T);
impl<T: cudarc::driver::DeviceRepr> PushTo for Scalar<T> {
    fn push_to<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>) {
        b.arg(&self.0);
    }
}
impl PushTo for &Buf {
    fn push_to<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>) {
        b.arg(*self);
    }
}
impl PushTo for &mut Buf {
    fn push_to<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>) {
        b.arg(&**self);
    }
}
impl PushTo for &CudaSlice<f64> {
    fn push_to<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>) {
        b.arg(*self);
    }
}
struct IntBuf<'b>(&'b CudaSlice<i32>);
impl PushTo for IntBuf<'_> {
    fn push_to<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>) {
        b.arg(self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise

/// `x[i] = value`.
pub fn fill(gpu: &Gpu, x: &mut Buf, value: f32) -> Result<()> {
    let n = x.len() as i64;
    launch!(gpu, "elementwise", "fill_f32", linear("fill_f32", x.len())?; &mut *x, &value, &n)
}

/// Zeroes an f64 buffer.
pub fn fill_f64(gpu: &Gpu, x: &mut CudaSlice<f64>, value: f64) -> Result<()> {
    let n = x.len() as i64;
    launch!(gpu, "elementwise", "fill_f64", linear("fill_f64", x.len())?; &mut *x, &value, &n)
}

/// `y += a·x`.
pub fn axpy(gpu: &Gpu, a: f32, x: &Buf, y: &mut Buf) -> Result<()> {
    check_len("axpy", "y", y.len(), x.len())?;
    let n = x.len() as i64;
    launch!(gpu, "elementwise", "axpy_f32", linear("axpy_f32", x.len())?; &mut *y, x, &a, &n)
}

/// `y = act(x)`.
pub fn activation_forward(gpu: &Gpu, act: Activation, x: &Buf, y: &mut Buf) -> Result<()> {
    check_len("activation", "y", y.len(), x.len())?;
    let n = x.len() as i64;
    let l = linear("activation", x.len())?;
    match act {
        Activation::Relu => launch!(gpu, "elementwise", "relu_forward", l; &mut *y, x, &n),
        Activation::Tanh => launch!(gpu, "elementwise", "tanh_forward", l; &mut *y, x, &n),
    }
}

/// `dx = dy·act'(·)`, from the forward input `x` (ReLU) or output `y` (tanh): `saved`.
pub fn activation_backward(
    gpu: &Gpu,
    act: Activation,
    dy: &Buf,
    saved: &Buf,
    dx: &mut Buf,
) -> Result<()> {
    check_len("activation", "saved", saved.len(), dy.len())?;
    check_len("activation", "dx", dx.len(), dy.len())?;
    let n = dy.len() as i64;
    let l = linear("activation", dy.len())?;
    match act {
        Activation::Relu => {
            launch!(gpu, "elementwise", "relu_backward", l; &mut *dx, dy, saved, &n)
        }
        Activation::Tanh => {
            launch!(gpu, "elementwise", "tanh_backward", l; &mut *dx, dy, saved, &n)
        }
    }
}

/// `y = map(x)·mask/(1 − p)`: dropout with the CPU's mask (`nn::ops::dropout`, the same
/// hash of `(seed, flat index)`), reading `x` through `map` (`c` channels, fastest-varying).
pub fn dropout_forward(
    gpu: &Gpu,
    x: &Buf,
    map: InputMap,
    c: usize,
    p: f32,
    seed: u64,
    y: &mut Buf,
) -> Result<()> {
    const K: &str = "dropout_forward";
    check_len(K, "output", y.len(), x.len())?;
    check_dropout(K, p)?;
    bn_rows(K, x.len(), c)?;
    check_map(K, &map, c)?;
    let (shift, scale) = map.affine.unzip();
    let c_i = check_int(K, "channels", c)?;
    launch_opt!(gpu, "elementwise", "dropout_forward", linear(K, x.len())?;
        &mut *y, x, opt!(shift), opt!(scale), Scalar(map.relu as i32), Scalar(c_i), Scalar(p),
        Scalar(seed), Scalar(x.len() as i64))
}

/// `d = d·mask/(1 − p)` in place: the backward of [`dropout_forward`] with the same seed.
pub fn dropout_backward(gpu: &Gpu, d: &mut Buf, p: f32, seed: u64) -> Result<()> {
    const K: &str = "dropout_backward";
    check_dropout(K, p)?;
    let n = d.len() as i64;
    launch!(gpu, "elementwise", "dropout_backward", linear(K, d.len())?; &mut *d, &p, &seed, &n)
}

fn check_dropout(kernel: &str, p: f32) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "gpu {kernel}: dropout probability {p} not in [0, 1)"
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution

/// The per-channel input map a convolution applies while reading (the previous layer's batch
/// norm `(v − shift)·scale` and ReLU): the CPU's `InputMap` over device buffers.
pub type InputMap<'a> = crate::nn::ops::InputMap<'a, Buf>;

fn check_map(kernel: &str, map: &InputMap, cin: usize) -> Result<()> {
    if let Some((shift, scale)) = map.affine {
        check_len(kernel, "input shift", shift.len(), cin)?;
        check_len(kernel, "input scale", scale.len(), cin)?;
    }
    Ok(())
}

/// The kernels' code for the activation fused into a convolution's output.
fn fused_code(act: FusedAct) -> i32 {
    match act {
        FusedAct::None => 0,
        FusedAct::Relu => 1,
        FusedAct::Tanh => 2,
    }
}

/// `y = act(conv(map(x)) + bias)`: NHWC `x` (`n·h·w·cin`), GEMM-layout `w` (`k·k·cin × cout`),
/// NHWC `y` (`n·oh·ow·cout`).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    gpu: &Gpu,
    g: &ConvGeometry,
    x: &Buf,
    w: &Buf,
    bias: Option<&Buf>,
    map: InputMap,
    act: FusedAct,
    y: &mut Buf,
) -> Result<()> {
    const K: &str = "conv2d_forward";
    check_len(K, "input", x.len(), g.in_len())?;
    check_len(K, "weights", w.len(), g.weight_len())?;
    check_len(K, "output", y.len(), g.out_len())?;
    if let Some(b) = bias {
        check_len(K, "bias", b.len(), g.cout)?;
    }
    check_map(K, &map, g.cin)?;
    let l = g.forward_launch()?;
    let (shift, scale) = map.affine.unzip();
    let dims = dims(g);
    launch_opt!(gpu, "conv2d_forward", "conv2d_forward", l;
        &mut *y, x, w, opt!(bias), opt!(shift), opt!(scale),
        Scalar(map.relu as i32), Scalar(fused_code(act)),
        Scalar(dims[0]), Scalar(dims[1]), Scalar(dims[2]), Scalar(dims[3]), Scalar(dims[4]),
        Scalar(dims[5]), Scalar(dims[6]), Scalar(dims[7]), Scalar(dims[8]), Scalar(dims[9]))
}

/// `[n, h, w, cin, cout, k, stride, pad, oh, ow]` as kernel ints (checked in `ConvGeometry::new`).
fn dims(g: &ConvGeometry) -> [i32; 10] {
    [
        g.n, g.h, g.w, g.cin, g.cout, g.k, g.stride, g.pad, g.oh, g.ow,
    ]
    .map(|v| v as i32)
}

/// `dx = dL/d(map(x))` (overwritten) from `dy`.
pub fn conv2d_backward_input(
    gpu: &Gpu,
    g: &ConvGeometry,
    dy: &Buf,
    w: &Buf,
    dx: &mut Buf,
) -> Result<()> {
    const K: &str = "conv2d_backward_input";
    check_len(K, "output gradient", dy.len(), g.out_len())?;
    check_len(K, "weights", w.len(), g.weight_len())?;
    check_len(K, "input gradient", dx.len(), g.in_len())?;
    let l = g.backward_input_launch()?;
    let d = dims(g);
    launch!(gpu, "conv2d_backward_input", "conv2d_backward_input", l;
        &mut *dx, dy, w, &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7], &d[8], &d[9])
}

/// `dw = Σ col(map(x))ᵀ·dy` (GEMM layout) and `db = Σ dy`, both overwritten.
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    g: &ConvGeometry,
    x: &Buf,
    dy: &Buf,
    map: InputMap,
    dw: &mut Buf,
    db: Option<&mut Buf>,
) -> Result<()> {
    const K: &str = "conv2d_backward_weight";
    check_len(K, "input", x.len(), g.in_len())?;
    check_len(K, "output gradient", dy.len(), g.out_len())?;
    check_len(K, "weight gradient", dw.len(), g.weight_len())?;
    check_map(K, &map, g.cin)?;
    fill(gpu, dw, 0.0)?;
    let (l, chunk) = g.backward_weight_launch()?;
    let (shift, scale) = map.affine.unzip();
    let d = dims(g);
    launch_opt!(gpu, "conv2d_backward_weight", "conv2d_backward_weight", l;
        &mut *dw, x, dy, opt!(shift), opt!(scale), Scalar(map.relu as i32),
        Scalar(d[0]), Scalar(d[1]), Scalar(d[2]), Scalar(d[3]), Scalar(d[4]), Scalar(d[5]),
        Scalar(d[6]), Scalar(d[7]), Scalar(d[8]), Scalar(d[9]), Scalar(chunk as i32))?;
    if let Some(db) = db {
        check_len(K, "bias gradient", db.len(), g.cout)?;
        fill(gpu, db, 0.0)?;
        let rows = (g.n * g.oh * g.ow) as i64;
        let (l, chunk) = channel_reduction("conv2d_backward_bias", g.n * g.oh * g.ow, g.cout)?;
        let (c, chunk) = (g.cout as i32, chunk as i32);
        launch!(gpu, "conv2d_backward_weight", "conv2d_backward_bias", l;
            &mut *db, dy, &rows, &c, &chunk)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Batch norm

/// Per-channel statistics on the device (`mean`, biased `var`, `inv_std`): the CPU's
/// `BatchStats` over device buffers.
pub type DeviceBatchStats = BatchStats<Buf>;

fn bn_rows(kernel: &str, len: usize, c: usize) -> Result<usize> {
    if c == 0 || !len.is_multiple_of(c) {
        return Err(Error::invalid(format!(
            "gpu {kernel}: {len} values are not whole rows of {c} channels"
        )));
    }
    Ok(len / c)
}

/// Batch statistics of `x` (`rows × c`) and, with `running`, the running-statistics update
/// (momentum; unbiased variance), as `BatchNorm::forward_train`'s statistics.
pub fn bn_batch_stats(
    gpu: &Gpu,
    x: &Buf,
    c: usize,
    eps: f32,
    momentum: f32,
    running: Option<(&mut Buf, &mut Buf)>,
) -> Result<DeviceBatchStats> {
    const K: &str = "bn_batch_stats";
    let rows = bn_rows(K, x.len(), c)?;
    if rows < 2 {
        return Err(Error::invalid(format!(
            "gpu {K}: batch statistics need at least 2 values per channel"
        )));
    }
    let (l, chunk) = channel_reduction(K, rows, c)?;
    let mut s1 = gpu.zeros::<f64>(c)?;
    let mut s2 = gpu.zeros::<f64>(c)?;
    let (rows_i, c_i, chunk_i) = (rows as i64, c as i32, chunk as i32);
    launch!(gpu, "batchnorm", "bn_moments", l; &mut s1, &mut s2, x, &rows_i, &c_i, &chunk_i)?;
    let mut stats = DeviceBatchStats {
        mean: gpu.zeros(c)?,
        var: gpu.zeros(c)?,
        inv_std: gpu.zeros(c)?,
        count: rows,
    };
    let mut dummy = (gpu.zeros::<f32>(1)?, gpu.zeros::<f32>(1)?);
    let update = running.is_some() as i32;
    let (rm, rv) = match running {
        Some((rm, rv)) => {
            check_len(K, "running mean", rm.len(), c)?;
            check_len(K, "running variance", rv.len(), c)?;
            (rm, rv)
        }
        None => (&mut dummy.0, &mut dummy.1),
    };
    launch!(gpu, "batchnorm", "bn_finalize", linear(K, c)?;
        &mut stats.mean, &mut stats.var, &mut stats.inv_std, rm, rv, &s1, &s2, x,
        &rows_i, &c_i, &eps, &momentum, &update)?;
    Ok(stats)
}

/// `inv_std = 1/sqrt(var + eps)` (inference with running statistics).
pub fn bn_inv_std(gpu: &Gpu, var: &Buf, eps: f32, inv_std: &mut Buf) -> Result<()> {
    check_len("bn_inv_std", "inv_std", inv_std.len(), var.len())?;
    let c = var.len() as i32;
    launch!(gpu, "batchnorm", "bn_inv_std", linear("bn_inv_std", var.len())?;
        &mut *inv_std, var, &c, &eps)
}

/// `y = (x − mean)·inv_std` per channel (then ReLU when `relu`).
pub fn bn_normalise(
    gpu: &Gpu,
    x: &Buf,
    mean: &Buf,
    inv_std: &Buf,
    relu: bool,
    y: &mut Buf,
) -> Result<()> {
    const K: &str = "bn_normalise";
    let c = mean.len();
    bn_rows(K, x.len(), c)?;
    check_len(K, "inv_std", inv_std.len(), c)?;
    check_len(K, "output", y.len(), x.len())?;
    let (total, c, relu) = (x.len() as i64, c as i32, relu as i32);
    launch!(gpu, "batchnorm", "bn_normalise", linear(K, x.len())?;
        &mut *y, x, mean, inv_std, &total, &c, &relu)
}

/// Training-mode backward: `dx` from `dy` (w.r.t. x̂, or max(x̂, 0) when `relu_after`).
pub fn bn_backward_train(
    gpu: &Gpu,
    x: &Buf,
    dy: &Buf,
    stats: &DeviceBatchStats,
    relu_after: bool,
    dx: &mut Buf,
) -> Result<()> {
    const K: &str = "bn_backward_train";
    let c = stats.mean.len();
    let rows = bn_rows(K, x.len(), c)?;
    check_len(K, "output gradient", dy.len(), x.len())?;
    check_len(K, "input gradient", dx.len(), x.len())?;
    let (l, chunk) = channel_reduction(K, rows, c)?;
    let mut s = gpu.zeros::<f64>(c)?;
    let mut sx = gpu.zeros::<f64>(c)?;
    let (rows_i, c_i, chunk_i, relu) = (rows as i64, c as i32, chunk as i32, relu_after as i32);
    launch!(gpu, "batchnorm", "bn_backward_reduce", l;
        &mut s, &mut sx, x, dy, &stats.mean, &stats.inv_std, &rows_i, &c_i, &chunk_i, &relu)?;
    launch!(gpu, "batchnorm", "bn_backward_apply", linear(K, x.len())?;
        &mut *dx, x, dy, &stats.mean, &stats.inv_std, &s, &sx, &rows_i, &c_i, &relu)
}

/// Inference-mode backward: `dx = dy·inv_std` (masked when `relu_after`).
pub fn bn_backward_eval(
    gpu: &Gpu,
    x: &Buf,
    dy: &Buf,
    mean: &Buf,
    inv_std: &Buf,
    relu_after: bool,
    dx: &mut Buf,
) -> Result<()> {
    const K: &str = "bn_backward_eval";
    let c = mean.len();
    bn_rows(K, x.len(), c)?;
    check_len(K, "inv_std", inv_std.len(), c)?;
    check_len(K, "output gradient", dy.len(), x.len())?;
    check_len(K, "input gradient", dx.len(), x.len())?;
    let (total, c, relu) = (x.len() as i64, c as i32, relu_after as i32);
    launch!(gpu, "batchnorm", "bn_backward_eval", linear(K, x.len())?;
        &mut *dx, x, dy, mean, inv_std, &total, &c, &relu)
}

// ---------------------------------------------------------------------------------------------
// Pooling and normalisations

/// `y[b][c] = mean over the pixels of x[b][·][c]` (NHWC, `n` items of `hw × c`).
pub fn global_avg_pool_forward(gpu: &Gpu, x: &Buf, n: usize, c: usize, y: &mut Buf) -> Result<()> {
    const K: &str = "global_avg_pool_forward";
    let hw = pool_hw(K, x.len(), n, c)?;
    check_len(K, "output", y.len(), n * c)?;
    let (n_i, hw_i, c_i) = (n as i32, check_int(K, "pixels", hw)?, c as i32);
    launch!(gpu, "pool", "global_avg_pool_forward", linear(K, n * c)?; &mut *y, x, &n_i, &hw_i, &c_i)
}

/// `dx[b][p][c] = dy[b][c] / hw` (overwritten).
pub fn global_avg_pool_backward(
    gpu: &Gpu,
    dy: &Buf,
    n: usize,
    c: usize,
    dx: &mut Buf,
) -> Result<()> {
    const K: &str = "global_avg_pool_backward";
    let hw = pool_hw(K, dx.len(), n, c)?;
    check_len(K, "output gradient", dy.len(), n * c)?;
    let (n_i, hw_i, c_i) = (n as i32, check_int(K, "pixels", hw)?, c as i32);
    launch!(gpu, "pool", "global_avg_pool_backward", linear(K, dx.len())?;
        &mut *dx, dy, &n_i, &hw_i, &c_i)
}

fn pool_hw(kernel: &str, len: usize, n: usize, c: usize) -> Result<usize> {
    if n == 0 || c == 0 || !len.is_multiple_of(n * c) || len == 0 {
        return Err(Error::invalid(format!(
            "gpu {kernel}: {len} values are not {n} items of whole {c}-channel pixels"
        )));
    }
    check_int(kernel, "items", n)?;
    check_int(kernel, "channels", c)?;
    Ok(len / (n * c))
}

/// Per-item `(x − mean)/(std + eps)` with the unbiased std; items of `len` values.
pub fn standardise(gpu: &Gpu, x: &Buf, len: usize, eps: f32, y: &mut Buf) -> Result<()> {
    const K: &str = "standardise_patches";
    whole_items(K, x.len(), len)?;
    check_len(K, "output", y.len(), x.len())?;
    let len_i = check_int(K, "item length", len)?;
    launch!(gpu, "normalise", "standardise_patches", per_item(K, x.len() / len, THREADS, 0)?;
        &mut *y, x, &len_i, &eps)
}

/// Per-row `x / sqrt(Σx² + eps)`.
pub fn l2_normalise(gpu: &Gpu, x: &Buf, dim: usize, eps: f32, y: &mut Buf) -> Result<()> {
    const K: &str = "l2_normalise_rows";
    whole_items(K, x.len(), dim)?;
    check_len(K, "output", y.len(), x.len())?;
    let dim_i = check_int(K, "dimension", dim)?;
    launch!(gpu, "normalise", "l2_normalise_rows", per_item(K, x.len() / dim, 128, 0)?;
        &mut *y, x, &dim_i, &eps)
}

/// Backward of [`standardise`] with each item's mean and std held fixed (as the CPU network's
/// backward): `dx = dy / (std(x) + eps)`; `x` is the unstandardised input.
pub fn standardise_backward(
    gpu: &Gpu,
    x: &Buf,
    dy: &Buf,
    len: usize,
    eps: f32,
    dx: &mut Buf,
) -> Result<()> {
    const K: &str = "standardise_patches_backward";
    whole_items(K, x.len(), len)?;
    check_len(K, "output gradient", dy.len(), x.len())?;
    check_len(K, "input gradient", dx.len(), x.len())?;
    let len_i = check_int(K, "item length", len)?;
    launch!(gpu, "normalise", "standardise_patches_backward", per_item(K, x.len() / len, THREADS, 0)?;
        &mut *dx, dy, x, &len_i, &eps)
}

/// Backward of [`l2_normalise`]: `dx = dy/‖x‖ − x·(dy·x)/‖x‖³`, `‖x‖ = sqrt(Σx² + eps)`; `x` is
/// the unnormalised rows.
pub fn l2_normalise_backward(
    gpu: &Gpu,
    x: &Buf,
    dy: &Buf,
    dim: usize,
    eps: f32,
    dx: &mut Buf,
) -> Result<()> {
    const K: &str = "l2_normalise_rows_backward";
    whole_items(K, x.len(), dim)?;
    check_len(K, "output gradient", dy.len(), x.len())?;
    check_len(K, "input gradient", dx.len(), x.len())?;
    let dim_i = check_int(K, "dimension", dim)?;
    launch!(gpu, "normalise", "l2_normalise_rows_backward", per_item(K, x.len() / dim, 128, 0)?;
        &mut *dx, dy, x, &dim_i, &eps)
}

fn whole_items(kernel: &str, total: usize, len: usize) -> Result<()> {
    if len == 0 || !total.is_multiple_of(len) {
        return Err(Error::invalid(format!(
            "gpu {kernel}: {total} values are not whole items of {len}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Patches and the spatial transformer

/// Samples `n` patches of `size × size` (row-major, back to back) from the images of a pyramid
/// buffer. `images`: per image `[offset, width, height]`; `image_of`: the image of each frame;
/// `frames`: per frame `[a00, a01, a10, a11, c0, c1]` in that image's pixels. Offsets and sizes
/// are checked against the pyramid on the host by the caller ([`super::pyramid::GpuPyramid`]).
pub fn extract_patches(
    gpu: &Gpu,
    pyramid: &Buf,
    images: &CudaSlice<i64>,
    image_of: &CudaSlice<i32>,
    frames: &Buf,
    size: usize,
    out: &mut Buf,
) -> Result<()> {
    const K: &str = "extract_patches";
    let n = image_of.len();
    check_len(K, "frames", frames.len(), 6 * n)?;
    check_len(K, "output", out.len(), n * size * size)?;
    if size == 0 || !images.len().is_multiple_of(3) || images.is_empty() || pyramid.is_empty() {
        return Err(Error::invalid(format!("gpu {K}: empty pyramid or patch")));
    }
    let (n_i, size_i) = (
        check_int(K, "frames", n)?,
        check_int(K, "patch side", size)?,
    );
    launch!(gpu, "patch_extract", "extract_patches", linear(K, n * size * size)?;
        &mut *out, pyramid, images, image_of, frames, &n_i, &size_i)
}

/// Batched affine warp (`theta`: 6 floats per item).
pub fn warp_forward(
    gpu: &Gpu,
    g: &WarpGeometry,
    src: &Buf,
    theta: &Buf,
    out: &mut Buf,
) -> Result<()> {
    const K: &str = "warp_forward";
    check_len(K, "sources", src.len(), g.src_len())?;
    check_len(K, "maps", theta.len(), 6 * g.n)?;
    check_len(K, "output", out.len(), g.out_len())?;
    let d = [g.n, g.in_h, g.in_w, g.out_h, g.out_w].map(|v| v as i32);
    launch!(gpu, "spatial_transformer", "warp_forward", g.forward_launch()?;
        &mut *out, src, theta, &d[0], &d[1], &d[2], &d[3], &d[4])
}

/// Gradients of [`warp_forward`]: `d_theta` (overwritten) and, if given, `d_src` (overwritten).
pub fn warp_backward(
    gpu: &Gpu,
    g: &WarpGeometry,
    src: &Buf,
    theta: &Buf,
    d_out: &Buf,
    d_src: Option<&mut Buf>,
    d_theta: &mut Buf,
) -> Result<()> {
    const K: &str = "warp_backward";
    check_len(K, "sources", src.len(), g.src_len())?;
    check_len(K, "maps", theta.len(), 6 * g.n)?;
    check_len(K, "output gradient", d_out.len(), g.out_len())?;
    check_len(K, "map gradient", d_theta.len(), 6 * g.n)?;
    let d_src: Option<&Buf> = match d_src {
        Some(ds) => {
            check_len(K, "source gradient", ds.len(), g.src_len())?;
            fill(gpu, ds, 0.0)?;
            Some(ds)
        }
        None => None,
    };
    let d = [g.in_h, g.in_w, g.out_h, g.out_w].map(|v| v as i32);
    launch_opt!(gpu, "spatial_transformer", "warp_backward", g.backward_launch()?;
        opt!(d_src), &mut *d_theta, src, theta, d_out,
        Scalar(d[0]), Scalar(d[1]), Scalar(d[2]), Scalar(d[3]))
}

// ---------------------------------------------------------------------------------------------
// SIFT

/// What [`sift_forward`] keeps for [`sift_backward`]: raw histograms and their two norms.
pub struct SiftCache {
    /// The raw (unnormalised) histograms, `N × 128`.
    pub hist: Buf,
    /// Per descriptor, the 2-norms of the histogram and of the clipped histogram.
    pub norms: CudaSlice<f64>,
}

/// Unit-length 128-D descriptors of `size × size` patches.
pub fn sift_forward(gpu: &Gpu, patches: &Buf, size: usize, out: &mut Buf) -> Result<SiftCache> {
    const K: &str = "sift_forward";
    let area = size * size;
    if area == 0 || !patches.len().is_multiple_of(area) {
        return Err(Error::invalid(format!(
            "gpu {K}: {} values are not whole {size}×{size} patches",
            patches.len()
        )));
    }
    let n = patches.len() / area;
    check_len(K, "output", out.len(), n * 128)?;
    let l = sift_launch(n, size, false)?;
    let mut cache = SiftCache {
        hist: gpu.zeros(n * 128)?,
        norms: gpu.zeros(2 * n)?,
    };
    let size_i = size as i32;
    launch!(gpu, "sift", "sift_forward", l;
        &mut *out, &mut cache.hist, &mut cache.norms, patches, &size_i)?;
    Ok(cache)
}

/// `d_patches` (overwritten) from `d_desc`, for the patches of the forward pass.
pub fn sift_backward(
    gpu: &Gpu,
    patches: &Buf,
    size: usize,
    cache: &SiftCache,
    d_desc: &Buf,
    d_patches: &mut Buf,
) -> Result<()> {
    const K: &str = "sift_backward";
    let area = size * size;
    if area == 0 || !patches.len().is_multiple_of(area) {
        return Err(Error::invalid(format!("gpu {K}: bad patch buffer")));
    }
    let n = patches.len() / area;
    check_len(K, "cache", cache.hist.len(), n * 128)?;
    check_len(K, "descriptor gradient", d_desc.len(), n * 128)?;
    check_len(K, "patch gradient", d_patches.len(), patches.len())?;
    let l = sift_launch(n, size, true)?;
    let size_i = size as i32;
    launch!(gpu, "sift", "sift_backward", l;
        &mut *d_patches, patches, &cache.hist, &cache.norms, d_desc, &size_i)
}

// ---------------------------------------------------------------------------------------------
// Nearest neighbours

/// The two nearest database rows of every query, on the device (`nearest` is u32::MAX without a
/// database row): `matching::TwoNearest` over device buffers.
pub type DeviceTwoNearest = TwoNearest<CudaSlice<u32>, Buf>;

/// Exact two nearest neighbours (rows of `dim` values), as `matching::two_nearest`.
pub fn two_nearest(
    gpu: &Gpu,
    queries: &Buf,
    database: &Buf,
    dim: usize,
) -> Result<DeviceTwoNearest> {
    const K: &str = "two_nearest";
    if dim == 0 || !queries.len().is_multiple_of(dim) || !database.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "gpu {K}: buffers are not whole rows of {dim}"
        )));
    }
    let (nq, nd) = (queries.len() / dim, database.len() / dim);
    let (l, per_split) = nearest_launch(nq, nd, dim)?;
    let splits = l.grid.1 as usize;
    let mut out = DeviceTwoNearest {
        nearest: gpu.zeros(nq)?,
        d1: gpu.zeros(nq)?,
        d2: gpu.zeros(nq)?,
    };
    if nq == 0 {
        return Ok(out);
    }
    if nd == 0 {
        out.nearest = gpu.upload(&vec![u32::MAX; nq])?;
        out.d1 = gpu.upload(&vec![f32::INFINITY; nq])?;
        out.d2 = gpu.upload(&vec![f32::INFINITY; nq])?;
        return Ok(out);
    }
    let mut norms = gpu.zeros::<f32>(nd)?;
    let (nq_i, nd_i, dim_i, per_i) = (nq as i32, nd as i32, dim as i32, per_split as i32);
    launch!(gpu, "nearest_neighbours", "row_sq_norms", linear(K, nd)?;
        &mut norms, database, &nd_i, &dim_i)?;
    let mut s1 = gpu.zeros::<f32>(splits * nq)?;
    let mut s2 = gpu.zeros::<f32>(splits * nq)?;
    let mut i1 = gpu.zeros::<u32>(splits * nq)?;
    launch!(gpu, "nearest_neighbours", "two_nearest_partial", l;
        &mut s1, &mut s2, &mut i1, queries, database, &norms, &nq_i, &nd_i, &dim_i, &per_i)?;
    let splits_i = splits as i32;
    launch!(gpu, "nearest_neighbours", "two_nearest_merge", linear(K, nq)?;
        &mut out.nearest, &mut out.d1, &mut out.d2, &s1, &s2, &i1, queries, &nq_i, &dim_i, &splits_i)?;
    Ok(out)
}

/// Exact `k` nearest neighbours (rows of `dim` values), nearest first: per query `k` scores
/// `‖d‖² − 2·q·d` and database rows (+∞ and u32::MAX past the database's end), as
/// `matching::k_nearest` has them before turning scores into distances. Ties keep the smaller row.
pub fn k_nearest_scores(
    gpu: &Gpu,
    queries: &Buf,
    database: &Buf,
    dim: usize,
    k: usize,
) -> Result<(Buf, CudaSlice<u32>)> {
    const K: &str = "k_nearest";
    if dim == 0 || !queries.len().is_multiple_of(dim) || !database.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "gpu {K}: buffers are not whole rows of {dim}"
        )));
    }
    let (nq, nd) = (queries.len() / dim, database.len() / dim);
    let l = k_nearest_launch(nq, nd, dim, k)?;
    let mut scores = gpu.zeros::<f32>(nq * k)?;
    let mut rows = gpu.zeros::<u32>(nq * k)?;
    if nq == 0 {
        return Ok((scores, rows));
    }
    if nd == 0 {
        scores = gpu.upload(&vec![f32::INFINITY; nq * k])?;
        rows = gpu.upload(&vec![u32::MAX; nq * k])?;
        return Ok((scores, rows));
    }
    let mut norms = gpu.zeros::<f32>(nd)?;
    let (nq_i, nd_i, dim_i, k_i) = (nq as i32, nd as i32, dim as i32, k as i32);
    launch!(gpu, "nearest_neighbours", "row_sq_norms", linear(K, nd)?;
        &mut norms, database, &nd_i, &dim_i)?;
    launch!(gpu, "nearest_neighbours", "k_nearest_scores", l;
        &mut scores, &mut rows, queries, database, &norms, &nq_i, &nd_i, &dim_i, &k_i)?;
    Ok((scores, rows))
}

/// The ratio test on the device: `d1/d2` where it passes `max_ratio`, +∞ elsewhere.
pub fn ratio_test(gpu: &Gpu, nn: &DeviceTwoNearest, max_ratio: f32) -> Result<Buf> {
    let n = nn.nearest.len();
    let mut ratio = gpu.zeros::<f32>(n)?;
    let n_i = check_int("ratio_test", "queries", n)?;
    launch!(gpu, "nearest_neighbours", "ratio_test", linear("ratio_test", n)?;
        &mut ratio, &nn.nearest, &nn.d1, &nn.d2, &n_i, &max_ratio)?;
    Ok(ratio)
}

// ---------------------------------------------------------------------------------------------
// Losses and the optimiser

/// The descriptor loss of `kind` on `anchors` and `positives` (`N × dim` each), writing the
/// gradients asked for (overwritten), as `train::descriptor_loss`. Downloads three N-vectors for
/// the loss and its statistics.
pub fn descriptor_loss(
    gpu: &Gpu,
    kind: LossKind,
    anchors: &Buf,
    positives: &Buf,
    dim: usize,
    ga: Option<&mut Buf>,
    gp: Option<&mut Buf>,
) -> Result<LossStats> {
    const K: &str = "descriptor_loss";
    if dim == 0 || !anchors.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "gpu {K}: anchors are not whole rows of {dim}"
        )));
    }
    check_len(K, "positives", positives.len(), anchors.len())?;
    let n = anchors.len() / dim;
    if n == 0 {
        return Ok(LossStats::default());
    }
    let (n_i, dim_i) = (check_int(K, "rows", n)?, check_int(K, "dimension", dim)?);
    let kind_i: i32 = match kind {
        LossKind::HardNegC => 0,
        LossKind::HardNeg => 1,
        LossKind::PosDist => 2,
    };
    let mut a2 = gpu.zeros::<f64>(n)?;
    let mut p2 = gpu.zeros::<f64>(n)?;
    launch!(gpu, "loss", "sq_norms_f64", linear(K, n)?; &mut a2, anchors, &n_i, &dim_i)?;
    launch!(gpu, "loss", "sq_norms_f64", linear(K, n)?; &mut p2, positives, &n_i, &dim_i)?;
    let mut dots = gpu.zeros::<f32>(n * n)?;
    launch!(gpu, "loss", "gemm_abt", gemm_abt_launch(n, n)?;
        &mut dots, anchors, positives, &n_i, &n_i, &dim_i)?;
    let mut row_arg = gpu.zeros::<i32>(n)?;
    let mut row_min = gpu.zeros::<f64>(n)?;
    let mut col_arg = gpu.zeros::<i32>(n)?;
    let mut col_min = gpu.zeros::<f64>(n)?;
    let (by_row, by_col) = (0i32, 1i32);
    launch!(gpu, "loss", "loss_hardest", linear(K, n)?;
        &mut row_arg, &mut row_min, &dots, &a2, &p2, &n_i, &by_row)?;
    if kind == LossKind::HardNegC {
        launch!(gpu, "loss", "loss_hardest", linear(K, n)?;
            &mut col_arg, &mut col_min, &dots, &a2, &p2, &n_i, &by_col)?;
    }
    let mut row_loss = gpu.zeros::<f64>(n)?;
    let mut row_pos = gpu.zeros::<f64>(n)?;
    let mut coef = gpu.zeros::<f64>(3 * n)?;
    launch!(gpu, "loss", "loss_rows", linear(K, n)?;
        &mut row_loss, &mut row_pos, &mut coef, anchors, positives, &dots, &a2, &p2,
        &row_arg, &row_min, &col_arg, &col_min, &n_i, &dim_i, &kind_i)?;
    for g in [&ga, &gp].into_iter().flatten() {
        check_len(K, "gradient", g.len(), anchors.len())?;
    }
    if ga.is_some() || gp.is_some() {
        let (ga, gp): (Option<&Buf>, Option<&Buf>) = (ga.map(|g| &*g), gp.map(|g| &*g));
        let (ra, ca) = (&row_arg, &col_arg);
        launch_opt!(gpu, "loss", "loss_grad", linear(K, n * dim)?;
            opt!(ga), opt!(gp), anchors, positives, &coef, IntBuf(ra), IntBuf(ca),
            Scalar(n_i), Scalar(dim_i), Scalar(kind_i))?;
    }
    let row_loss = gpu.download(&row_loss)?;
    let row_pos = gpu.download(&row_pos)?;
    let mean_positive = row_pos.iter().sum::<f64>() / n as f64;
    let loss = if kind == LossKind::PosDist {
        mean_positive
    } else {
        row_loss.iter().sum()
    };
    let mean_hardest_negative = if kind == LossKind::PosDist {
        f32::NAN
    } else {
        (gpu.download(&row_min)?.iter().sum::<f64>() / n as f64) as f32
    };
    Ok(LossStats {
        loss,
        mean_positive: mean_positive as f32,
        mean_hardest_negative,
    })
}

/// One SGD step (`first`: the momentum buffer is initialised with the gradient, as PyTorch).
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    gpu: &Gpu,
    params: &mut Buf,
    momentum_buffer: &mut Buf,
    grads: &Buf,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    first: bool,
) -> Result<()> {
    const K: &str = "sgd_step";
    check_len(K, "gradients", grads.len(), params.len())?;
    check_len(K, "momentum buffer", momentum_buffer.len(), params.len())?;
    let (n, first) = (params.len() as i64, first as i32);
    launch!(gpu, "sgd", "sgd_step", linear(K, params.len())?;
        &mut *params, &mut *momentum_buffer, grads, &n, &lr, &momentum, &dampening,
        &weight_decay, &first)
}
