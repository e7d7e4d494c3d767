//! The parity checks of a [`Backend`]: every op against the CPU reference code on random inputs of
//! odd sizes, one generic body per op. `wbs gpu-check` runs them on the CUDA backend
//! (`cli::device_check`, which adds the checks of whole networks and training steps), and
//! `tests/device_parity.rs` on every backend present, the CPU's included (which checks the
//! [`super::backend::Cpu`] glue).
//!
//! Error measure: the normwise relative error `max|got − cpu| / max|cpu|` ([`rel_error`]),
//! tolerance [`TOLERANCE`] (f32, no TF32). Elementwise relative errors are not used: values near
//! zero (gradients, centred activations) legitimately differ by more than 1e-4 of themselves
//! after another summation order. Scalars (losses, statistics) by their relative error.

use super::backend::{Backend, ConvGeometry, WarpGeometry};
use super::fold::FusedAct;
use super::gradcheck::random_vec;
use super::network::standardise_moments;
use super::ops::loss::{descriptor_loss, LossGrads, LossKind, LossWorkspace};
use super::ops::sgd::Sgd;
use super::ops::sift::{DiffSift, SiftCache};
use super::ops::spatial_transformer::{warp_backward, warp_forward, Affine};
use super::ops::{self as tl, Activation, ConvGrads, ConvInput, InputMap};
use crate::image::GrayImage;
use crate::laf::Laf;
use crate::patch::{extract_patches, PatchSpec, NET_PATCH, SIFT_PATCH};
use crate::pyramid::ScaleSpace;
use crate::{Error, Result};

/// The f32 tolerance of the normwise relative error (no TF32 is used).
pub const TOLERANCE: f64 = 1e-4;

/// One line of a parity table.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was checked.
    pub name: String,
    /// The sizes it was checked on.
    pub shape: String,
    /// The error, or why the check could not run.
    pub outcome: std::result::Result<f64, String>,
    /// The largest error that passes.
    pub tolerance: f64,
}

impl Row {
    /// Whether the check ran and its error is within the tolerance.
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Ok(e) if e <= self.tolerance)
    }
}

/// `‖gpu − cpu‖₂ / ‖cpu‖₂` (infinite when the lengths differ or a value is not finite).
pub fn two_norm_error(gpu: &[f32], cpu: &[f32]) -> f64 {
    if gpu.len() != cpu.len() {
        return f64::INFINITY;
    }
    let d: f64 = gpu
        .iter()
        .zip(cpu)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let n: f64 = cpu.iter().map(|b| (*b as f64).powi(2)).sum();
    match (d / n.max(1e-60)).sqrt() {
        e if e.is_nan() => f64::INFINITY,
        e => e,
    }
}

/// `max|got − want| / max|want|` (infinite when the lengths differ or a value is not finite).
pub fn rel_error(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(0f64, |m, v| m.max((*v as f64).abs()));
    let diff = got.iter().zip(want).fold(0f64, |m, (a, b)| {
        let d = (*a as f64 - *b as f64).abs();
        if d.is_nan() {
            f64::INFINITY
        } else {
            m.max(d)
        }
    });
    if diff == 0.0 {
        0.0
    } else {
        diff / scale.max(1e-30)
    }
}

/// The largest of `errors`.
pub(crate) fn worst(errors: &[f64]) -> f64 {
    errors.iter().fold(0.0, |m: f64, e| m.max(*e))
}

/// `|got − want| / |want|`.
pub(crate) fn scalar_error(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-30)
}

/// One check: a name for the tests (`id`), the table's name and shape, the body and the largest
/// error that passes. The op checks here and the training chain's (`train::chain::parity`) are
/// lists of these.
pub struct KernelCheck<B: Backend> {
    /// A unique identifier (a Rust identifier: the tests name their instances by it).
    pub id: &'static str,
    /// What the table calls it.
    pub name: &'static str,
    /// The sizes it runs on.
    pub shape: &'static str,
    /// Runs the check with a seed; the error, to compare with `tolerance`.
    pub run: fn(&B, u64) -> Result<f64>,
    /// The largest error that passes ([`TOLERANCE`] for every op check).
    pub tolerance: f64,
}

impl<B: Backend> KernelCheck<B> {
    /// Runs the check on `backend` as a table row.
    pub fn row(&self, backend: &B, seed: u64) -> Row {
        Row {
            name: self.name.to_string(),
            shape: self.shape.to_string(),
            outcome: (self.run)(backend, seed).map_err(|e| e.to_string()),
            tolerance: self.tolerance,
        }
    }
}

/// Every op check, in the order of the table.
pub fn kernel_check_list<B: Backend>() -> Vec<KernelCheck<B>> {
    macro_rules! checks {
        ($(($id:ident, $name:expr, $shape:expr)),* $(,)?) => {
            vec![$(KernelCheck {
                id: stringify!($id),
                name: $name,
                shape: $shape,
                run: $id::<B>,
                tolerance: TOLERANCE,
            }),*]
        };
    }
    checks![
        (relu, "relu fwd+bwd", "n 100,003"),
        (tanh, "tanh fwd+bwd", "n 100,003"),
        (
            conv_small,
            "conv2d fwd (BN map, ReLU in; bias, ReLU out)",
            "3×13×11×5 → 7, k3 s2 p1"
        ),
        (conv_wide, "conv2d fwd", "5×17×15×17 → 70, k3 s1 p1"),
        (
            conv_head,
            "conv2d fwd (OriNet head)",
            "9×8×8×64 → 2, k8 s1 p1, tanh"
        ),
        (
            conv_backward_small,
            "conv2d bwd input+weight+bias",
            "3×13×11×5 → 7, k3 s2 p1"
        ),
        (
            conv_backward_wide,
            "conv2d bwd input+weight+bias",
            "4×9×9×33 → 65, k3 s1 p1"
        ),
        (bn_stats, "batch norm batch stats + running", "1,001 × 37"),
        (
            bn_backward,
            "batch norm bwd (batch stats, ReLU)",
            "1,001 × 37"
        ),
        (bn_eval, "batch norm eval fwd+bwd", "999 × 19"),
        (pool, "global avg pool fwd+bwd", "7 × 25 × 13"),
        (standardise, "standardise patches", "37 × 1,024"),
        (l2, "L2 normalise rows", "41 × 128"),
        (
            normalise_backward,
            "standardise + L2 normalise bwd",
            "37 × 1,024; 41 × 128"
        ),
        (
            extract,
            "patch extraction (pyramid)",
            "301 frames, 32² and 41²"
        ),
        (warp_fwd, "warp fwd", "13 × 45×39 → 33×31"),
        (warp_bwd, "warp bwd (source, θ)", "13 × 45×39 → 33×31"),
        (sift_fwd, "SIFT fwd", "29 × 32² and 41²"),
        (sift_bwd, "SIFT bwd", "29 × 32² and 41²"),
        (nearest, "two nearest + ratio test", "1,037 × 2,011 × 128"),
        (
            k_nearest,
            "k nearest (FGINN lists)",
            "517 × 1,009 × 128, k 50"
        ),
        (hardnegc, "HardNegC fwd+bwd", "97 × 128"),
        (hardneg, "HardNeg fwd+bwd", "97 × 128"),
        (posdist, "PosDist fwd+bwd", "97 × 128"),
        (sgd, "SGD momentum (3 steps)", "n 10,007"),
        (dropout, "dropout fwd+bwd (CPU mask, BN map)", "1,563 × 64"),
    ]
}

/// Runs every op check on `backend`; `seed` varies the random inputs.
pub fn kernel_checks<B: Backend>(backend: &B, seed: u64) -> Vec<Row> {
    kernel_check_list::<B>()
        .iter()
        .map(|c| c.row(backend, seed))
        .collect()
}

/// The backend's `buf` against `want` by [`rel_error`].
fn error_of<B: Backend>(b: &B, buf: &B::Buf, want: &[f32]) -> Result<f64> {
    Ok(rel_error(&b.download(buf)?, want))
}

/// `(shift, scale)` and a ReLU when `on`, else the identity.
fn map_if<'a, T: ?Sized>(on: bool, shift: &'a T, scale: &'a T) -> InputMap<'a, T> {
    if on {
        InputMap {
            affine: Some((shift, scale)),
            relu: true,
        }
    } else {
        InputMap::default()
    }
}

fn activation<B: Backend>(b: &B, seed: u64, act: Activation) -> Result<f64> {
    let x = random_vec(100_003, seed, 3.0);
    let dy = random_vec(x.len(), seed + 1, 1.0);
    let (x_, dy_) = (b.upload(&x)?, b.upload(&dy)?);
    let mut y_ = b.zeros(x.len())?;
    let mut g_ = b.zeros(x.len())?;
    b.activation_forward(act, &x_, &mut y_)?;
    let mut y = x.clone();
    let mut g = dy.clone();
    match act {
        Activation::Relu => {
            tl::relu_forward(&x, &mut y);
            tl::relu_backward(&x, &mut g);
            b.activation_backward(act, &dy_, &x_, &mut g_)?;
        }
        Activation::Tanh => {
            tl::tanh_forward(&mut y);
            tl::tanh_backward(&y, &mut g);
            b.activation_backward(act, &dy_, &y_, &mut g_)?;
        }
    }
    Ok(worst(&[error_of(b, &y_, &y)?, error_of(b, &g_, &g)?]))
}

fn relu<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    activation(b, seed, Activation::Relu)
}

fn tanh<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    activation(b, seed, Activation::Tanh)
}

/// Random conv inputs: x, GEMM-layout weights, bias, and an input map (shift, scale).
struct ConvCase {
    g: ConvGeometry,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    shift: Vec<f32>,
    scale: Vec<f32>,
}

impl ConvCase {
    /// `[n, h, w, cin, cout, k, stride, pad]`.
    fn new(seed: u64, [n, h, w, cin, cout, k, s, p]: [usize; 8]) -> Result<ConvCase> {
        let g = ConvGeometry::new(n, h, w, cin, cout, k, s, p)?;
        Ok(ConvCase {
            g,
            x: random_vec(g.in_len(), seed, 1.0),
            w: random_vec(g.weight_len(), seed + 1, 0.3),
            b: random_vec(cout, seed + 2, 0.5),
            shift: random_vec(cin, seed + 3, 0.2),
            scale: random_vec(cin, seed + 4, 0.5)
                .iter()
                .map(|v| 1.0 + v)
                .collect(),
        })
    }

    fn input(&self, mapped: bool) -> ConvInput<'_> {
        ConvInput {
            data: &self.x,
            n: self.g.n,
            h: self.g.h,
            w: self.g.w,
            map: map_if(mapped, &self.shift[..], &self.scale[..]),
        }
    }
}

fn conv_forward<B: Backend>(b: &B, c: &ConvCase, mapped: bool, act: FusedAct) -> Result<f64> {
    let mut y = vec![0.0; c.g.out_len()];
    tl::conv2d_forward(
        &c.g.shape(),
        &c.input(mapped),
        &c.w,
        Some(&c.b),
        &mut y,
        None,
    );
    act.apply(&mut y);
    let (x_, w_, b_) = (b.upload(&c.x)?, b.upload(&c.w)?, b.upload(&c.b)?);
    let (sh_, sc_) = (b.upload(&c.shift)?, b.upload(&c.scale)?);
    let mut y_ = b.zeros(c.g.out_len())?;
    let map = map_if(mapped, &sh_, &sc_);
    b.conv2d_forward(&c.g, &x_, &w_, Some(&b_), map, act, &mut y_)?;
    error_of(b, &y_, &y)
}

fn conv_small<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let c = ConvCase::new(seed, [3, 13, 11, 5, 7, 3, 2, 1])?;
    conv_forward(b, &c, true, FusedAct::Relu)
}

fn conv_wide<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let c = ConvCase::new(seed, [5, 17, 15, 17, 70, 3, 1, 1])?;
    conv_forward(b, &c, false, FusedAct::None)
}

fn conv_head<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let c = ConvCase::new(seed, [9, 8, 8, 64, 2, 8, 1, 1])?;
    conv_forward(b, &c, false, FusedAct::Tanh)
}

fn conv_backward<B: Backend>(b: &B, c: &ConvCase, mapped: bool) -> Result<f64> {
    let dy = random_vec(c.g.out_len(), 99, 1.0);
    let (mut dx, mut dw, mut db) = (
        vec![0.0; c.g.in_len()],
        vec![0.0; c.g.weight_len()],
        vec![0.0; c.g.cout],
    );
    let grads = ConvGrads {
        input: Some(&mut dx),
        weight: Some(&mut dw),
        bias: Some(&mut db),
    };
    tl::conv2d_backward(&c.g.shape(), &c.input(mapped), &c.w, &dy, grads);
    let (x_, w_, dy_) = (b.upload(&c.x)?, b.upload(&c.w)?, b.upload(&dy)?);
    let (sh_, sc_) = (b.upload(&c.shift)?, b.upload(&c.scale)?);
    let mut dx_ = b.zeros(c.g.in_len())?;
    let mut dw_ = b.zeros(c.g.weight_len())?;
    let mut db_ = b.zeros(c.g.cout)?;
    b.conv2d_backward_input(&c.g, &dy_, &w_, &mut dx_)?;
    let map = map_if(mapped, &sh_, &sc_);
    b.conv2d_backward_weight(&c.g, &x_, &dy_, map, &mut dw_, Some(&mut db_))?;
    Ok(worst(&[
        error_of(b, &dx_, &dx)?,
        error_of(b, &dw_, &dw)?,
        error_of(b, &db_, &db)?,
    ]))
}

fn conv_backward_small<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let c = ConvCase::new(seed, [3, 13, 11, 5, 7, 3, 2, 1])?;
    conv_backward(b, &c, true)
}

fn conv_backward_wide<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let c = ConvCase::new(seed, [4, 9, 9, 33, 65, 3, 1, 1])?;
    conv_backward(b, &c, false)
}

/// Channels with different means and spreads.
fn bn_input(seed: u64, rows: usize, c: usize) -> Vec<f32> {
    let x = random_vec(rows * c, seed, 1.0);
    x.iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + (i % c) as f32 * 0.3) + (i % c) as f32 - 5.0)
        .collect()
}

fn bn_stats<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let (rows, c) = (1001, 37);
    let x = bn_input(seed, rows, c);
    let mut bn = tl::BatchNorm::new(c);
    bn.running_mean = random_vec(c, seed + 1, 1.0);
    let mut rm_ = b.upload(&bn.running_mean)?;
    let mut rv_ = b.upload(&bn.running_var)?;
    let mut y = x.clone();
    let mut stats = tl::BatchStats::default();
    bn.forward_train(&mut y, &mut stats, true);
    let x_ = b.upload(&x)?;
    let s = b.bn_batch_stats(&x_, c, bn.eps, bn.momentum, Some((&mut rm_, &mut rv_)))?;
    let mut y_ = b.zeros(x.len())?;
    b.bn_normalise(&x_, &s.mean, &s.inv_std, false, &mut y_)?;
    Ok(worst(&[
        error_of(b, &s.mean, &stats.mean)?,
        error_of(b, &s.var, &stats.var)?,
        error_of(b, &s.inv_std, &stats.inv_std)?,
        error_of(b, &rm_, &bn.running_mean)?,
        error_of(b, &rv_, &bn.running_var)?,
        error_of(b, &y_, &y)?,
    ]))
}

fn bn_backward<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let (rows, c) = (1001, 37);
    let eps = crate::nn::layers::BATCHNORM_EPS;
    let x = bn_input(seed, rows, c);
    let dy = random_vec(x.len(), seed + 2, 1.0);
    let mut stats = tl::BatchStats::default();
    tl::batchnorm::batch_statistics(&x, c, eps, &mut stats);
    let mut dx = dy.clone();
    tl::batchnorm::backward_train(&x, &mut dx, &stats, true);
    let (x_, dy_) = (b.upload(&x)?, b.upload(&dy)?);
    let s = b.bn_batch_stats(&x_, c, eps, 0.1, None)?;
    let mut dx_ = b.zeros(x.len())?;
    b.bn_backward_train(&x_, &dy_, &s, true, &mut dx_)?;
    error_of(b, &dx_, &dx)
}

fn bn_eval<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let (rows, c) = (999, 19);
    let x = bn_input(seed, rows, c);
    let dy = random_vec(x.len(), seed + 2, 1.0);
    let mut bn = tl::BatchNorm::new(c);
    bn.running_mean = random_vec(c, seed + 3, 2.0);
    bn.running_var = random_vec(c, seed + 4, 1.0)
        .iter()
        .map(|v| v.abs() + 0.5)
        .collect();
    let r = bn.running_stats();
    let mut y = x.clone();
    bn.forward_eval(&mut y);
    let mut dx = dy.clone();
    tl::batchnorm::backward_eval(&x, &mut dx, &r, true);
    let (x_, dy_) = (b.upload(&x)?, b.upload(&dy)?);
    let (m_, v_) = (b.upload(&bn.running_mean)?, b.upload(&bn.running_var)?);
    let mut k_ = b.zeros(c)?;
    b.bn_inv_std(&v_, bn.eps, &mut k_)?;
    let mut y_ = b.zeros(x.len())?;
    b.bn_normalise(&x_, &m_, &k_, false, &mut y_)?;
    let mut dx_ = b.zeros(x.len())?;
    b.bn_backward_eval(&x_, &dy_, &m_, &k_, true, &mut dx_)?;
    Ok(worst(&[error_of(b, &y_, &y)?, error_of(b, &dx_, &dx)?]))
}

fn pool<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let (n, hw, c) = (7, 25, 13);
    let x = random_vec(n * hw * c, seed, 1.0);
    let dy = random_vec(n * c, seed + 1, 1.0);
    let mut y = vec![0.0; n * c];
    tl::global_avg_pool_forward(&x, n, c, &mut y);
    let mut dx = vec![0.0; x.len()];
    tl::global_avg_pool_backward(&dy, n, c, &mut dx);
    let (x_, dy_) = (b.upload(&x)?, b.upload(&dy)?);
    let mut y_ = b.zeros(n * c)?;
    let mut dx_ = b.zeros(x.len())?;
    b.global_avg_pool_forward(&x_, n, c, &mut y_)?;
    b.global_avg_pool_backward(&dy_, n, c, &mut dx_)?;
    Ok(worst(&[error_of(b, &y_, &y)?, error_of(b, &dx_, &dx)?]))
}

/// Patch-like values (around 120, spread 50), `n` items of 1,024.
fn patch_values(n: usize, seed: u64) -> Vec<f32> {
    random_vec(n * 1024, seed, 50.0)
        .iter()
        .map(|v| v + 120.0)
        .collect()
}

fn standardise<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let x = patch_values(37, seed);
    let eps = crate::nn::DEFAULT_INPUT_EPS;
    let y: Vec<f32> = x
        .chunks(1024)
        .flat_map(|p| crate::nn::normalise_patch(p, eps))
        .collect();
    let x_ = b.upload(&x)?;
    let mut y_ = b.zeros(x.len())?;
    b.standardise(&x_, 1024, eps, &mut y_)?;
    error_of(b, &y_, &y)
}

fn l2<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let dim = crate::nn::HARDNET_DIM;
    let x = random_vec(41 * dim, seed, 3.0);
    let mut y = x.clone();
    y.chunks_mut(dim).for_each(crate::nn::l2_normalise);
    let x_ = b.upload(&x)?;
    let mut y_ = b.zeros(x.len())?;
    b.l2_normalise(&x_, dim, crate::nn::L2_NORM_EPS as f32, &mut y_)?;
    error_of(b, &y_, &y)
}

/// The backward passes of the two normalisations against the CPU's formulas: standardisation
/// with each patch's mean and std held fixed (`Network::backward`), and the L2 normalisation
/// (`FrozenHardNet::backward`).
fn normalise_backward<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let eps = crate::nn::DEFAULT_INPUT_EPS;
    let x = patch_values(37, seed);
    let dy = random_vec(x.len(), seed + 1, 1.0);
    let mut dx = dy.clone();
    for (d, p) in dx.chunks_mut(1024).zip(x.chunks(1024)) {
        let k = standardise_moments(p, eps).1 as f32;
        d.iter_mut().for_each(|v| *v *= k);
    }
    let mut dx_ = b.zeros(x.len())?;
    b.standardise_backward(&b.upload(&x)?, &b.upload(&dy)?, 1024, eps, &mut dx_)?;

    let dim = crate::nn::HARDNET_DIM;
    let l2_eps = crate::nn::L2_NORM_EPS;
    let r = random_vec(41 * dim, seed + 2, 3.0);
    let dr = random_vec(r.len(), seed + 3, 1.0);
    let mut dl = vec![0.0f32; r.len()];
    for ((d, row), g) in dl.chunks_mut(dim).zip(r.chunks(dim)).zip(dr.chunks(dim)) {
        crate::nn::l2_normalise_backward(row, g, l2_eps, d);
    }
    let mut dl_ = b.zeros(r.len())?;
    let (r_, dr_) = (b.upload(&r)?, b.upload(&dr)?);
    b.l2_normalise_backward(&r_, &dr_, dim, l2_eps as f32, &mut dl_)?;
    Ok(worst(&[error_of(b, &dx_, &dx)?, error_of(b, &dl_, &dl)?]))
}

/// A textured test image of odd size.
pub(crate) fn test_image(w: usize, h: usize, seed: u64) -> GrayImage {
    let phase = seed as f32 * 0.37;
    GrayImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as f32, y as f32);
        128.0
            + 60.0 * (0.13 * x + phase).sin() * (0.07 * y - 0.2 * phase).cos()
            + 40.0 * ((x - 70.0) * (y - 40.0) / 700.0 + phase).sin()
    })
}

/// Random frames over the image: various scales, shapes, rotations, some over the border.
pub(crate) fn test_frames(n: usize, w: usize, h: usize, seed: u64) -> Vec<Laf> {
    let r = random_vec(5 * n, seed, 1.0);
    r.chunks(5)
        .map(|v| {
            let c = [(v[0] + 1.0) * 0.5 * w as f32, (v[1] + 1.0) * 0.5 * h as f32];
            let s = 2.0 + (v[2] + 1.0) * 30.0;
            let e = 1.0 + v[3].abs() * 2.0;
            Laf {
                a: [[s * e, 0.0], [s * v[3], s / e]],
                c,
            }
            .rotated(v[4] * 3.1)
        })
        .collect()
}

/// 37 network patches (32×32) of a test image, varied by `seed`: the inputs of the network and
/// training-chain checks.
pub(crate) fn net_patches(seed: u64) -> Vec<f32> {
    let space = ScaleSpace::build(&test_image(181, 163, seed));
    extract_patches(&space, &test_frames(37, 181, 163, seed + 9), &NET_PATCH)
}

fn extract<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let (w, h) = (263, 197);
    let space = ScaleSpace::build(&test_image(w, h, seed));
    let lafs = test_frames(301, w, h, seed + 1);
    let pyramid = b.upload_pyramid(&space)?;
    let mut errors = Vec::new();
    for spec in [NET_PATCH, SIFT_PATCH] {
        let cpu = extract_patches(&space, &lafs, &spec);
        let got = b.extract_patches(&pyramid, &space, &lafs, &spec)?;
        errors.push(error_of(b, &got, &cpu)?);
    }
    Ok(worst(&errors))
}

/// Sources and maps (the backends take them flat: 6 floats each).
fn warp_case(seed: u64) -> Result<(WarpGeometry, Vec<f32>, Vec<Affine>)> {
    let g = WarpGeometry::new(13, 45, 39, 33, 31)?;
    let src = random_vec(g.src_len(), seed, 1.0);
    let r = random_vec(6 * g.n, seed + 1, 1.0);
    // Maps that stay mostly inside and sometimes leave the source (border clamping).
    let theta: Vec<Affine> = r
        .chunks(6)
        .map(|v| {
            [
                [0.8 + 0.3 * v[0], 0.4 * v[1], 0.4 * v[2]],
                [0.4 * v[3], 0.8 + 0.3 * v[4], 0.4 * v[5]],
            ]
        })
        .collect();
    Ok((g, src, theta))
}

fn warp_fwd<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let (g, src, theta) = warp_case(seed)?;
    let flat = theta.as_flattened().as_flattened();
    let mut out = vec![0.0; g.out_len()];
    warp_forward(&src, &theta, g.size(), &mut out);
    let (s_, t_) = (b.upload(&src)?, b.upload(flat)?);
    let mut o_ = b.zeros(g.out_len())?;
    b.warp_forward(&g, &s_, &t_, &mut o_)?;
    error_of(b, &o_, &out)
}

fn warp_bwd<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let (g, src, theta) = warp_case(seed)?;
    let flat = theta.as_flattened().as_flattened();
    let d_out = random_vec(g.out_len(), seed + 7, 1.0);
    let mut d_src = vec![0.0; g.src_len()];
    let mut d_theta = vec![[[0.0f32; 3]; 2]; g.n];
    warp_backward(
        &src,
        &theta,
        g.size(),
        &d_out,
        Some(&mut d_src),
        &mut d_theta,
    );
    let (s_, t_, do_) = (b.upload(&src)?, b.upload(flat)?, b.upload(&d_out)?);
    let mut ds_ = b.zeros(g.src_len())?;
    let mut dt_ = b.zeros(6 * g.n)?;
    b.warp_backward(&g, &s_, &t_, &do_, Some(&mut ds_), &mut dt_)?;
    Ok(worst(&[
        error_of(b, &ds_, &d_src)?,
        error_of(b, &dt_, d_theta.as_flattened().as_flattened())?,
    ]))
}

fn sift_patches(size: usize, n: usize, seed: u64) -> Vec<f32> {
    let space = ScaleSpace::build(&test_image(151, 131, seed));
    let lafs = test_frames(n, 151, 131, seed + 3);
    let spec = PatchSpec {
        size,
        blur_per_step: 1.5,
    };
    extract_patches(&space, &lafs, &spec)
}

fn sift<B: Backend>(b: &B, seed: u64, backward: bool) -> Result<f64> {
    let mut errors = Vec::new();
    for size in [32, 41] {
        let n = 29;
        let patches = sift_patches(size, n, seed);
        let sift = DiffSift::new(size);
        let mut out = vec![0.0; n * 128];
        let mut cache = SiftCache::default();
        sift.forward(&patches, &mut out, &mut cache);
        let p_ = b.upload(&patches)?;
        let mut o_ = b.zeros(n * 128)?;
        let cache_ = b.sift_forward(&p_, size, &mut o_)?;
        if !backward {
            errors.push(error_of(b, &o_, &out)?);
            continue;
        }
        let dd = random_vec(n * 128, seed + 5, 1.0);
        let mut dp = vec![0.0; patches.len()];
        sift.backward(&patches, &cache, &dd, &mut dp);
        let dd_ = b.upload(&dd)?;
        let mut dp_ = b.zeros(patches.len())?;
        b.sift_backward(&p_, size, &cache_, &dd_, &mut dp_)?;
        errors.push(error_of(b, &dp_, &dp)?);
    }
    Ok(worst(&errors))
}

fn sift_fwd<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    sift(b, seed, false)
}

fn sift_bwd<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    sift(b, seed, true)
}

fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut v = random_vec(n * dim, seed, 1.0);
    v.chunks_mut(dim).for_each(crate::nn::l2_normalise);
    v
}

fn nearest<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let (nq, nd, dim) = (1037, 2011, 128);
    let q = unit_rows(nq, dim, seed);
    let d = unit_rows(nd, dim, seed + 1);
    let cpu = crate::matching::two_nearest(&q, &d, dim);
    let (q_, d_) = (b.upload(&q)?, b.upload(&d)?);
    let nn = b.two_nearest(&q_, &d_, dim)?;
    let nearest = b.download_indices(&nn.nearest)?;
    let mismatched = nearest
        .iter()
        .zip(&cpu.nearest)
        .filter(|(a, b)| a != b)
        .count();
    if mismatched > 0 {
        return Err(Error::Device(format!(
            "{mismatched} of {nq} nearest indices differ from the CPU's"
        )));
    }
    let ratio = b.download(&b.ratio_test(&nn, 0.95)?)?;
    let kept: Vec<usize> = (0..nq).filter(|&i| ratio[i] <= 0.95).collect();
    let cpu_kept: Vec<usize> = crate::matching::ratio_test(&cpu, 0.95)
        .iter()
        .map(|t| t.query)
        .collect();
    if kept != cpu_kept {
        return Err(Error::Device(format!(
            "the ratio test keeps {} queries, the CPU {}",
            kept.len(),
            cpu_kept.len()
        )));
    }
    Ok(worst(&[
        error_of(b, &nn.d1, &cpu.d1)?,
        error_of(b, &nn.d2, &cpu.d2)?,
    ]))
}

fn k_nearest<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let (nq, nd, dim, k) = (517, 1009, 128, 50);
    let q = unit_rows(nq, dim, seed);
    let d = unit_rows(nd, dim, seed + 1);
    let (want_s, want_i) = crate::matching::k_nearest_scores(&q, &d, dim, k);
    let (s, i) = b.k_nearest(&b.upload(&q)?, &b.upload(&d)?, dim, k)?;
    let (got_s, got_i) = (b.download(&s)?, b.download_indices(&i)?);
    // Another summation order may swap two neighbours whose scores tie to rounding: a row may
    // differ from the CPU's only where the CPU lists it too, at a score that close.
    let mismatched = (0..nq * k)
        .filter(|&x| got_i[x] != want_i[x])
        .filter(|&x| {
            let list = x / k * k..(x / k + 1) * k;
            !list
                .clone()
                .any(|y| want_i[y] == got_i[x] && (want_s[y] - want_s[x]).abs() <= 1e-5)
        })
        .count();
    if mismatched > 0 {
        return Err(Error::Device(format!(
            "{mismatched} of {} listed neighbours differ from the CPU's",
            nq * k
        )));
    }
    Ok(rel_error(&got_s, &want_s))
}

fn loss<B: Backend>(b: &B, seed: u64, kind: LossKind) -> Result<f64> {
    let (n, dim) = (97, 128);
    let a = unit_rows(n, dim, seed);
    // Positives near their anchors, so that some margins are active and some not.
    let noise = random_vec(n * dim, seed + 1, 0.08);
    let mut p: Vec<f32> = a.iter().zip(&noise).map(|(a, e)| a + e).collect();
    p.chunks_mut(dim).for_each(crate::nn::l2_normalise);
    let (mut ga, mut gp) = (vec![0.0; a.len()], vec![0.0; a.len()]);
    let grads = LossGrads {
        anchor: Some(&mut ga),
        positive: Some(&mut gp),
    };
    let stats = descriptor_loss(kind, &a, &p, dim, grads, &mut LossWorkspace::default());
    let (a_, p_) = (b.upload(&a)?, b.upload(&p)?);
    let mut ga_ = b.zeros(a.len())?;
    let mut gp_ = b.zeros(a.len())?;
    let got = b.descriptor_loss(kind, &a_, &p_, dim, Some(&mut ga_), Some(&mut gp_))?;
    let mut errors = vec![
        scalar_error(got.loss, stats.loss),
        scalar_error(got.mean_positive as f64, stats.mean_positive as f64),
        error_of(b, &ga_, &ga)?,
        error_of(b, &gp_, &gp)?,
    ];
    if kind != LossKind::PosDist {
        errors.push(scalar_error(
            got.mean_hardest_negative as f64,
            stats.mean_hardest_negative as f64,
        ));
    }
    Ok(worst(&errors))
}

fn hardnegc<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    loss(b, seed, LossKind::HardNegC)
}

fn hardneg<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    loss(b, seed, LossKind::HardNeg)
}

fn posdist<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    loss(b, seed, LossKind::PosDist)
}

fn sgd<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let n = 10_007;
    let mut p = random_vec(n, seed, 1.0);
    let mut opt = Sgd::affnet_recipe();
    let mut p_ = b.upload(&p)?;
    let mut buf_ = b.zeros(n)?;
    for step in 0..3 {
        let g = random_vec(n, seed + 10 + step, 1.0);
        opt.step(&mut p, &g);
        let g_ = b.upload(&g)?;
        let (lr, m, damp, wd) = (opt.lr, opt.momentum, opt.dampening, opt.weight_decay);
        b.sgd_step(&mut p_, &mut buf_, &g_, lr, m, damp, wd, step == 0)?;
    }
    let buf = opt.momentum_buffer().unwrap_or(&[]);
    Ok(worst(&[error_of(b, &p_, &p)?, error_of(b, &buf_, buf)?]))
}

fn dropout<B: Backend>(b: &B, seed: u64) -> Result<f64> {
    let (rows, c, p) = (1_563, 64, 0.25);
    let x = random_vec(rows * c, seed, 1.0);
    let shift = random_vec(c, seed + 1, 0.5);
    let scale: Vec<f32> = random_vec(c, seed + 2, 0.5)
        .iter()
        .map(|v| 1.0 + v)
        .collect();
    let mask_seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut y = vec![0.0; x.len()];
    let map = map_if(true, &shift[..], &scale[..]);
    tl::dropout_forward(&x, p, mask_seed, map, c, &mut y);
    let d_in = random_vec(x.len(), seed + 3, 1.0);
    let mut d = d_in.clone();
    tl::dropout_backward(&mut d, p, mask_seed);

    let (shift_, scale_) = (b.upload(&shift)?, b.upload(&scale)?);
    let mut y_ = b.zeros(x.len())?;
    let map_ = map_if(true, &shift_, &scale_);
    b.dropout_forward(&b.upload(&x)?, map_, c, p, mask_seed, &mut y_)?;
    let mut d_ = b.upload(&d_in)?;
    b.dropout_backward(&mut d_, p, mask_seed)?;
    Ok(worst(&[error_of(b, &y_, &y)?, error_of(b, &d_, &d)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_ids_are_unique_identifiers() {
        let list = kernel_check_list::<crate::nn::backend::Cpu>();
        let mut ids: Vec<&str> = list.iter().map(|c| c.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), list.len());
    }

    #[test]
    fn rel_error_is_normwise_and_refuses_mismatches() {
        assert_eq!(rel_error(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((rel_error(&[1.0, 2.1], &[1.0, 2.0]) - 0.05).abs() < 1e-6);
        assert!(rel_error(&[1.0], &[1.0, 2.0]).is_infinite());
        assert!(rel_error(&[f32::NAN], &[1.0]).is_infinite());
    }
}
