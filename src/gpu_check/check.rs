//! `wbs gpu-check`: every kernel against its CPU reference on random inputs of odd sizes, then
//! `wbs match` on both devices. Prints a table; any failure makes the command fail.
//!
//! Error measure: the normwise relative error `max|gpu − cpu| / max|cpu|` (see the module docs of
//! [`crate::gpu`]), tolerance [`TOLERANCE`]; the training step through HardNet by the 2-norm ratio
//! `‖gpu − cpu‖₂ / ‖cpu‖₂`, [`HARDNET_STEP_TOLERANCE`] (its docs say why). End to end: the same verdict, and inlier counts
//! within 2 % (at least 1 inlier of slack).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::describe::DescriptorKind;
use crate::gpu::net::GpuNet;
use crate::gpu::ops::{self, Activation, FusedAct as Fused, InputMap};
use crate::gpu::pyramid::GpuPyramid;
use crate::gpu::shapes::{ConvGeometry, WarpGeometry};
use crate::gpu::Gpu;
use crate::image::GrayImage;
use crate::laf::Laf;
use crate::matcher::Matcher;
use crate::networks::Models;
use crate::nn::gradcheck::random_vec;
use crate::nn::network::standardise_moments;
use crate::nn::ops::loss::{descriptor_loss, LossGrads, LossKind, LossWorkspace};
use crate::nn::ops::sgd::Sgd;
use crate::nn::ops::sift::{DiffSift, SiftCache};
use crate::nn::ops::spatial_transformer::{warp_backward, warp_forward, Affine, WarpSize};
use crate::nn::ops::{self as tl, ConvGrads, ConvInput, ConvShape};
use crate::nn::{self, AffNet, HardNet, NetworkKind, OriNet, Weights};
use crate::orient::OrientationMethod;
use crate::patch::{PatchSpec, NET_PATCH, SIFT_PATCH};
use crate::pipeline::{self, Config, Method};
use crate::pyramid::ScaleSpace;
use crate::train::device_chain::DeviceTrainChain;
use crate::train::hardnet::l2_normalise_rows_backward;
use crate::train::{Descriptor, FrozenHardNet, Mode, SyntheticBatch, TrainAffNet, TrainChain};
use crate::{Error, Result};

/// The f32 tolerance (no TF32 is used).
pub const TOLERANCE: f64 = 1e-4;
/// End to end: inlier counts may differ by this fraction (and at least one inlier).
pub const INLIER_TOLERANCE: f64 = 0.02;

/// One line of the table.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub shape: String,
    /// The error, or why the check could not run.
    pub outcome: std::result::Result<f64, String>,
    pub tolerance: f64,
}

impl Row {
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Ok(e) if e <= self.tolerance)
    }
}

/// `max|a − b| / max|b|` (infinite when the lengths differ or a value is not finite).
pub fn rel_error(gpu: &[f32], cpu: &[f32]) -> f64 {
    if gpu.len() != cpu.len() {
        return f64::INFINITY;
    }
    let scale = cpu.iter().fold(0f64, |m, v| m.max((*v as f64).abs()));
    let diff = gpu.iter().zip(cpu).fold(0f64, |m, (a, b)| {
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

fn worst(errors: &[f64]) -> f64 {
    errors.iter().fold(0.0, |m: f64, e| m.max(*e))
}

/// Runs every kernel check; `seed` varies the random inputs.
pub fn kernel_checks(gpu: &Gpu, seed: u64) -> Vec<Row> {
    type Check = fn(&Gpu, u64) -> Result<f64>;
    let checks: &[(&str, &str, Check)] = &[
        ("relu fwd+bwd", "n 100,003", check_relu),
        ("tanh fwd+bwd", "n 100,003", check_tanh),
        (
            "conv2d fwd (BN map, ReLU in; bias, ReLU out)",
            "3×13×11×5 → 7, k3 s2 p1",
            check_conv_small,
        ),
        ("conv2d fwd", "5×17×15×17 → 70, k3 s1 p1", check_conv_wide),
        (
            "conv2d fwd (OriNet head)",
            "9×8×8×64 → 2, k8 s1 p1, tanh",
            check_conv_head,
        ),
        (
            "conv2d bwd input+weight+bias",
            "3×13×11×5 → 7, k3 s2 p1",
            check_conv_backward_small,
        ),
        (
            "conv2d bwd input+weight+bias",
            "4×9×9×33 → 65, k3 s1 p1",
            check_conv_backward_wide,
        ),
        (
            "batch norm batch stats + running",
            "1,001 × 37",
            check_bn_stats,
        ),
        (
            "batch norm bwd (batch stats, ReLU)",
            "1,001 × 37",
            check_bn_backward,
        ),
        ("batch norm eval fwd+bwd", "999 × 19", check_bn_eval),
        ("global avg pool fwd+bwd", "7 × 25 × 13", check_pool),
        ("standardise patches", "37 × 1,024", check_standardise),
        ("L2 normalise rows", "41 × 128", check_l2),
        (
            "standardise + L2 normalise bwd",
            "37 × 1,024; 41 × 128",
            check_normalise_backward,
        ),
        (
            "patch extraction (pyramid)",
            "301 frames, 32² and 41²",
            check_extract,
        ),
        ("warp fwd", "13 × 45×39 → 33×31", check_warp_forward),
        (
            "warp bwd (source, θ)",
            "13 × 45×39 → 33×31",
            check_warp_backward,
        ),
        ("SIFT fwd", "29 × 32² and 41²", check_sift_forward),
        ("SIFT bwd", "29 × 32² and 41²", check_sift_backward),
        (
            "two nearest + ratio test",
            "1,037 × 2,011 × 128",
            check_nearest,
        ),
        ("HardNegC fwd+bwd", "97 × 128", check_hardnegc),
        ("HardNeg fwd+bwd", "97 × 128", check_hardneg),
        ("PosDist fwd+bwd", "97 × 128", check_posdist),
        ("SGD momentum (3 steps)", "n 10,007", check_sgd),
        (
            "dropout fwd+bwd (CPU mask, BN map)",
            "1,563 × 64",
            check_dropout,
        ),
        (
            "train chain step (HardNegC, all shape terms)",
            "37 pairs, 64² sources",
            check_train_chain_terms,
        ),
        (
            "train chain step (HardNeg, recipe)",
            "37 pairs, 64² sources",
            check_train_chain_hardneg,
        ),
        (
            "train chain step (PosDist, recipe)",
            "37 pairs, 64² sources",
            check_train_chain_posdist,
        ),
        (
            "HardNet descriptor fwd+bwd (training mode)",
            "37 patches",
            check_hardnet_descriptor,
        ),
        ("AffNet (random weights)", "37 patches", check_affnet),
        ("OriNet (random weights)", "37 patches", check_orinet),
        ("HardNet (random weights)", "37 patches", check_hardnet),
    ];
    let mut rows: Vec<Row> = checks
        .iter()
        .map(|(name, shape, f)| Row {
            name: name.to_string(),
            shape: shape.to_string(),
            outcome: f(gpu, seed).map_err(|e| e.to_string()),
            tolerance: TOLERANCE,
        })
        .collect();
    rows.push(Row {
        name: "train chain step (HardNegC, HardNet)".to_string(),
        shape: "37 pairs, 64² sources".to_string(),
        outcome: check_train_chain_hardnet(gpu, seed).map_err(|e| e.to_string()),
        tolerance: HARDNET_STEP_TOLERANCE,
    });
    rows
}

/// A whole step through a frozen HardNet, with AffNet's gradients compared by the 2-norm ratio: HardNet's
/// descriptor-patch gradients (checked at [`TOLERANCE`] by their own row) alternate in sign from
/// pixel to pixel and cancel by orders of magnitude in the warp's and batch norm's backward
/// sums, so two f32 summation orders differ there by ~2e-3 of the gradients' 2-norm (measured on the CPU
/// with the device recipe, `train::device_chain` tests). A wrong recipe is off by 5e-2 or more.
pub const HARDNET_STEP_TOLERANCE: f64 = 1e-2;

fn check_activation(gpu: &Gpu, seed: u64, act: Activation) -> Result<f64> {
    let x = random_vec(100_003, seed, 3.0);
    let dy = random_vec(x.len(), seed + 1, 1.0);
    let (dx_, dy_) = (gpu.upload(&x)?, gpu.upload(&dy)?);
    let mut y_ = gpu.zeros::<f32>(x.len())?;
    let mut g_ = gpu.zeros::<f32>(x.len())?;
    ops::activation_forward(gpu, act, &dx_, &mut y_)?;
    let mut y = x.clone();
    let mut g = dy.clone();
    match act {
        Activation::Relu => {
            tl::relu_forward(&x, &mut y);
            tl::relu_backward(&x, &mut g);
            ops::activation_backward(gpu, act, &dy_, &dx_, &mut g_)?;
        }
        Activation::Tanh => {
            tl::tanh_forward(&mut y);
            tl::tanh_backward(&y, &mut g);
            ops::activation_backward(gpu, act, &dy_, &y_, &mut g_)?;
        }
    }
    Ok(worst(&[
        rel_error(&gpu.download(&y_)?, &y),
        rel_error(&gpu.download(&g_)?, &g),
    ]))
}

fn check_relu(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_activation(gpu, seed, Activation::Relu)
}

fn check_tanh(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_activation(gpu, seed, Activation::Tanh)
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
    #[allow(clippy::too_many_arguments)]
    fn new(
        seed: u64,
        n: usize,
        h: usize,
        w: usize,
        cin: usize,
        cout: usize,
        k: usize,
        s: usize,
        p: usize,
    ) -> Result<ConvCase> {
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

    fn shape(&self) -> ConvShape {
        ConvShape {
            cin: self.g.cin,
            cout: self.g.cout,
            k: self.g.k,
            stride: self.g.stride,
            padding: self.g.pad,
        }
    }

    fn input(&self, mapped: bool) -> ConvInput<'_> {
        ConvInput {
            data: &self.x,
            n: self.g.n,
            h: self.g.h,
            w: self.g.w,
            map: if mapped {
                tl::InputMap {
                    affine: Some((&self.shift, &self.scale)),
                    relu: true,
                }
            } else {
                tl::InputMap::IDENTITY
            },
        }
    }
}

fn check_conv_forward(gpu: &Gpu, c: &ConvCase, mapped: bool, act: Fused) -> Result<f64> {
    let mut y = vec![0.0; c.g.out_len()];
    tl::conv2d_forward(&c.shape(), &c.input(mapped), &c.w, Some(&c.b), &mut y, None);
    match act {
        Fused::None => {}
        Fused::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
        Fused::Tanh => tl::tanh_forward(&mut y),
    }
    let (x_, w_, b_) = (gpu.upload(&c.x)?, gpu.upload(&c.w)?, gpu.upload(&c.b)?);
    let (sh_, sc_) = (gpu.upload(&c.shift)?, gpu.upload(&c.scale)?);
    let map = if mapped {
        InputMap {
            affine: Some((&sh_, &sc_)),
            relu: true,
        }
    } else {
        InputMap::default()
    };
    let mut y_ = gpu.zeros::<f32>(c.g.out_len())?;
    ops::conv2d_forward(gpu, &c.g, &x_, &w_, Some(&b_), map, act, &mut y_)?;
    Ok(rel_error(&gpu.download(&y_)?, &y))
}

fn check_conv_small(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_conv_forward(
        gpu,
        &ConvCase::new(seed, 3, 13, 11, 5, 7, 3, 2, 1)?,
        true,
        Fused::Relu,
    )
}

fn check_conv_wide(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_conv_forward(
        gpu,
        &ConvCase::new(seed, 5, 17, 15, 17, 70, 3, 1, 1)?,
        false,
        Fused::None,
    )
}

fn check_conv_head(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_conv_forward(
        gpu,
        &ConvCase::new(seed, 9, 8, 8, 64, 2, 8, 1, 1)?,
        false,
        Fused::Tanh,
    )
}

fn check_conv_backward(gpu: &Gpu, c: &ConvCase, mapped: bool) -> Result<f64> {
    let dy = random_vec(c.g.out_len(), 99, 1.0);
    let (mut dx, mut dw, mut db) = (
        vec![0.0; c.g.in_len()],
        vec![0.0; c.g.weight_len()],
        vec![0.0; c.g.cout],
    );
    tl::conv2d_backward(
        &c.shape(),
        &c.input(mapped),
        &c.w,
        &dy,
        ConvGrads {
            input: Some(&mut dx),
            weight: Some(&mut dw),
            bias: Some(&mut db),
        },
    );
    let (x_, w_, dy_) = (gpu.upload(&c.x)?, gpu.upload(&c.w)?, gpu.upload(&dy)?);
    let (sh_, sc_) = (gpu.upload(&c.shift)?, gpu.upload(&c.scale)?);
    let map = if mapped {
        InputMap {
            affine: Some((&sh_, &sc_)),
            relu: true,
        }
    } else {
        InputMap::default()
    };
    let mut dx_ = gpu.zeros::<f32>(c.g.in_len())?;
    let mut dw_ = gpu.zeros::<f32>(c.g.weight_len())?;
    let mut db_ = gpu.zeros::<f32>(c.g.cout)?;
    ops::conv2d_backward_input(gpu, &c.g, &dy_, &w_, &mut dx_)?;
    ops::conv2d_backward_weight(gpu, &c.g, &x_, &dy_, map, &mut dw_, Some(&mut db_))?;
    Ok(worst(&[
        rel_error(&gpu.download(&dx_)?, &dx),
        rel_error(&gpu.download(&dw_)?, &dw),
        rel_error(&gpu.download(&db_)?, &db),
    ]))
}

fn check_conv_backward_small(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_conv_backward(gpu, &ConvCase::new(seed, 3, 13, 11, 5, 7, 3, 2, 1)?, true)
}

fn check_conv_backward_wide(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_conv_backward(gpu, &ConvCase::new(seed, 4, 9, 9, 33, 65, 3, 1, 1)?, false)
}

fn bn_input(seed: u64, rows: usize, c: usize) -> Vec<f32> {
    // Channels with different means and spreads.
    let x = random_vec(rows * c, seed, 1.0);
    x.iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + (i % c) as f32 * 0.3) + (i % c) as f32 - 5.0)
        .collect()
}

fn check_bn_stats(gpu: &Gpu, seed: u64) -> Result<f64> {
    let (rows, c) = (1001, 37);
    let x = bn_input(seed, rows, c);
    let mut bn = tl::BatchNorm::new(c);
    bn.running_mean = random_vec(c, seed + 1, 1.0);
    let mut rm_ = gpu.upload(&bn.running_mean)?;
    let mut rv_ = gpu.upload(&bn.running_var)?;
    let mut y = x.clone();
    let mut stats = tl::BatchStats::default();
    bn.forward_train(&mut y, &mut stats, true);
    let x_ = gpu.upload(&x)?;
    let s = ops::bn_batch_stats(gpu, &x_, c, bn.eps, bn.momentum, Some((&mut rm_, &mut rv_)))?;
    let mut y_ = gpu.zeros::<f32>(x.len())?;
    ops::bn_normalise(gpu, &x_, &s.mean, &s.inv_std, false, &mut y_)?;
    Ok(worst(&[
        rel_error(&gpu.download(&s.mean)?, &stats.mean),
        rel_error(&gpu.download(&s.var)?, &stats.var),
        rel_error(&gpu.download(&s.inv_std)?, &stats.inv_std),
        rel_error(&gpu.download(&rm_)?, &bn.running_mean),
        rel_error(&gpu.download(&rv_)?, &bn.running_var),
        rel_error(&gpu.download(&y_)?, &y),
    ]))
}

fn check_bn_backward(gpu: &Gpu, seed: u64) -> Result<f64> {
    let (rows, c) = (1001, 37);
    let x = bn_input(seed, rows, c);
    let dy = random_vec(x.len(), seed + 2, 1.0);
    let mut stats = tl::BatchStats::default();
    tl::batchnorm::batch_statistics(&x, c, crate::nn::layers::BATCHNORM_EPS, &mut stats);
    let mut dx = dy.clone();
    tl::batchnorm::backward_train(&x, &mut dx, &stats, true);
    let (x_, dy_) = (gpu.upload(&x)?, gpu.upload(&dy)?);
    let s = ops::bn_batch_stats(gpu, &x_, c, crate::nn::layers::BATCHNORM_EPS, 0.1, None)?;
    let mut dx_ = gpu.zeros::<f32>(x.len())?;
    ops::bn_backward_train(gpu, &x_, &dy_, &s, true, &mut dx_)?;
    Ok(rel_error(&gpu.download(&dx_)?, &dx))
}

fn check_bn_eval(gpu: &Gpu, seed: u64) -> Result<f64> {
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
    let (x_, dy_, m_, v_) = (
        gpu.upload(&x)?,
        gpu.upload(&dy)?,
        gpu.upload(&bn.running_mean)?,
        gpu.upload(&bn.running_var)?,
    );
    let mut k_ = gpu.zeros::<f32>(c)?;
    ops::bn_inv_std(gpu, &v_, bn.eps, &mut k_)?;
    let mut y_ = gpu.zeros::<f32>(x.len())?;
    ops::bn_normalise(gpu, &x_, &m_, &k_, false, &mut y_)?;
    let mut dx_ = gpu.zeros::<f32>(x.len())?;
    ops::bn_backward_eval(gpu, &x_, &dy_, &m_, &k_, true, &mut dx_)?;
    Ok(worst(&[
        rel_error(&gpu.download(&y_)?, &y),
        rel_error(&gpu.download(&dx_)?, &dx),
    ]))
}

fn check_pool(gpu: &Gpu, seed: u64) -> Result<f64> {
    let (n, hw, c) = (7, 25, 13);
    let x = random_vec(n * hw * c, seed, 1.0);
    let dy = random_vec(n * c, seed + 1, 1.0);
    let mut y = vec![0.0; n * c];
    tl::global_avg_pool_forward(&x, n, c, &mut y);
    let mut dx = vec![0.0; x.len()];
    tl::global_avg_pool_backward(&dy, n, c, &mut dx);
    let (x_, dy_) = (gpu.upload(&x)?, gpu.upload(&dy)?);
    let mut y_ = gpu.zeros::<f32>(n * c)?;
    let mut dx_ = gpu.zeros::<f32>(x.len())?;
    ops::global_avg_pool_forward(gpu, &x_, n, c, &mut y_)?;
    ops::global_avg_pool_backward(gpu, &dy_, n, c, &mut dx_)?;
    Ok(worst(&[
        rel_error(&gpu.download(&y_)?, &y),
        rel_error(&gpu.download(&dx_)?, &dx),
    ]))
}

fn check_standardise(gpu: &Gpu, seed: u64) -> Result<f64> {
    let x: Vec<f32> = random_vec(37 * 1024, seed, 50.0)
        .iter()
        .map(|v| v + 120.0)
        .collect();
    let y: Vec<f32> = x
        .chunks(1024)
        .flat_map(|p| nn::normalise_patch(p, nn::DEFAULT_INPUT_EPS))
        .collect();
    let x_ = gpu.upload(&x)?;
    let mut y_ = gpu.zeros::<f32>(x.len())?;
    ops::standardise(gpu, &x_, 1024, nn::DEFAULT_INPUT_EPS, &mut y_)?;
    Ok(rel_error(&gpu.download(&y_)?, &y))
}

fn check_l2(gpu: &Gpu, seed: u64) -> Result<f64> {
    let x = random_vec(41 * nn::HARDNET_DIM, seed, 3.0);
    let mut y = x.clone();
    y.chunks_mut(nn::HARDNET_DIM).for_each(nn::l2_normalise);
    let x_ = gpu.upload(&x)?;
    let mut y_ = gpu.zeros::<f32>(x.len())?;
    let eps = nn::L2_NORM_EPS as f32;
    ops::l2_normalise(gpu, &x_, nn::HARDNET_DIM, eps, &mut y_)?;
    Ok(rel_error(&gpu.download(&y_)?, &y))
}

/// The backward passes of the two normalisations against the CPU's formulas: standardisation
/// with each patch's mean and std held fixed (`Network::backward`), and the L2 normalisation
/// (`FrozenHardNet::backward`).
fn check_normalise_backward(gpu: &Gpu, seed: u64) -> Result<f64> {
    let eps = nn::DEFAULT_INPUT_EPS;
    let x: Vec<f32> = random_vec(37 * 1024, seed, 50.0)
        .iter()
        .map(|v| v + 120.0)
        .collect();
    let dy = random_vec(x.len(), seed + 1, 1.0);
    let mut dx = dy.clone();
    for (d, p) in dx.chunks_mut(1024).zip(x.chunks(1024)) {
        let k = standardise_moments(p, eps).1 as f32;
        d.iter_mut().for_each(|v| *v *= k);
    }
    let mut dx_ = gpu.zeros::<f32>(x.len())?;
    ops::standardise_backward(
        gpu,
        &gpu.upload(&x)?,
        &gpu.upload(&dy)?,
        1024,
        eps,
        &mut dx_,
    )?;

    let r = random_vec(41 * nn::HARDNET_DIM, seed + 2, 3.0);
    let dr = random_vec(r.len(), seed + 3, 1.0);
    let mut dl = vec![0.0f32; r.len()];
    l2_normalise_rows_backward(&r, &dr, &mut dl);
    let mut dl_ = gpu.zeros::<f32>(r.len())?;
    ops::l2_normalise_backward(
        gpu,
        &gpu.upload(&r)?,
        &gpu.upload(&dr)?,
        nn::HARDNET_DIM,
        nn::L2_NORM_EPS as f32,
        &mut dl_,
    )?;
    Ok(worst(&[
        rel_error(&gpu.download(&dx_)?, &dx),
        rel_error(&gpu.download(&dl_)?, &dl),
    ]))
}

/// A textured test image of odd size.
fn test_image(w: usize, h: usize, seed: u64) -> GrayImage {
    let phase = seed as f32 * 0.37;
    GrayImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as f32, y as f32);
        128.0
            + 60.0 * (0.13 * x + phase).sin() * (0.07 * y - 0.2 * phase).cos()
            + 40.0 * ((x - 70.0) * (y - 40.0) / 700.0 + phase).sin()
    })
}

/// Random frames over the image: various scales, shapes, rotations, some over the border.
fn test_frames(n: usize, w: usize, h: usize, seed: u64) -> Vec<Laf> {
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

fn check_extract(gpu: &Gpu, seed: u64) -> Result<f64> {
    let (w, h) = (263, 197);
    let space = ScaleSpace::build(&test_image(w, h, seed));
    let lafs = test_frames(301, w, h, seed + 1);
    let pyramid = GpuPyramid::upload(gpu, &space)?;
    let mut errors = Vec::new();
    for spec in [NET_PATCH, SIFT_PATCH] {
        let cpu = crate::patch::extract_patches(&space, &lafs, &spec);
        let dev = pyramid.extract(gpu, &space, &lafs, &spec)?;
        errors.push(rel_error(&gpu.download(&dev)?, &cpu));
    }
    Ok(worst(&errors))
}

fn warp_case(seed: u64) -> (WarpGeometry, Vec<f32>, Vec<Affine>, Vec<f32>) {
    let g = WarpGeometry {
        n: 13,
        in_h: 45,
        in_w: 39,
        out_h: 33,
        out_w: 31,
    };
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
    let flat = theta
        .iter()
        .flat_map(|t| t.iter().flatten().copied())
        .collect();
    (g, src, theta, flat)
}

fn warp_size(g: &WarpGeometry) -> WarpSize {
    WarpSize {
        in_h: g.in_h,
        in_w: g.in_w,
        out_h: g.out_h,
        out_w: g.out_w,
    }
}

fn check_warp_forward(gpu: &Gpu, seed: u64) -> Result<f64> {
    let (g, src, theta, flat) = warp_case(seed);
    let mut out = vec![0.0; g.out_len()];
    warp_forward(&src, &theta, warp_size(&g), &mut out);
    let (s_, t_) = (gpu.upload(&src)?, gpu.upload(&flat)?);
    let mut o_ = gpu.zeros::<f32>(g.out_len())?;
    ops::warp_forward(gpu, &g, &s_, &t_, &mut o_)?;
    Ok(rel_error(&gpu.download(&o_)?, &out))
}

fn check_warp_backward(gpu: &Gpu, seed: u64) -> Result<f64> {
    let (g, src, theta, flat) = warp_case(seed);
    let d_out = random_vec(g.out_len(), seed + 7, 1.0);
    let mut d_src = vec![0.0; g.src_len()];
    let mut d_theta = vec![[[0.0f32; 3]; 2]; g.n];
    warp_backward(
        &src,
        &theta,
        warp_size(&g),
        &d_out,
        Some(&mut d_src),
        &mut d_theta,
    );
    let d_theta: Vec<f32> = d_theta
        .iter()
        .flat_map(|t| t.iter().flatten().copied())
        .collect();
    let (s_, t_, do_) = (gpu.upload(&src)?, gpu.upload(&flat)?, gpu.upload(&d_out)?);
    let mut ds_ = gpu.zeros::<f32>(g.src_len())?;
    let mut dt_ = gpu.zeros::<f32>(6 * g.n)?;
    ops::warp_backward(gpu, &g, &s_, &t_, &do_, Some(&mut ds_), &mut dt_)?;
    Ok(worst(&[
        rel_error(&gpu.download(&ds_)?, &d_src),
        rel_error(&gpu.download(&dt_)?, &d_theta),
    ]))
}

fn sift_patches(size: usize, n: usize, seed: u64) -> Vec<f32> {
    let space = ScaleSpace::build(&test_image(151, 131, seed));
    let lafs = test_frames(n, 151, 131, seed + 3);
    crate::patch::extract_patches(
        &space,
        &lafs,
        &PatchSpec {
            size,
            blur_per_step: 1.5,
        },
    )
}

fn check_sift(gpu: &Gpu, seed: u64, backward: bool) -> Result<f64> {
    let mut errors = Vec::new();
    for size in [32, 41] {
        let n = 29;
        let patches = sift_patches(size, n, seed);
        let sift = DiffSift::new(size);
        let mut out = vec![0.0; n * 128];
        let mut cache = SiftCache::default();
        sift.forward(&patches, &mut out, &mut cache);
        let p_ = gpu.upload(&patches)?;
        let mut o_ = gpu.zeros::<f32>(n * 128)?;
        let dcache = ops::sift_forward(gpu, &p_, size, &mut o_)?;
        if !backward {
            errors.push(rel_error(&gpu.download(&o_)?, &out));
            continue;
        }
        let dd = random_vec(n * 128, seed + 5, 1.0);
        let mut dp = vec![0.0; patches.len()];
        sift.backward(&patches, &cache, &dd, &mut dp);
        let dd_ = gpu.upload(&dd)?;
        let mut dp_ = gpu.zeros::<f32>(patches.len())?;
        ops::sift_backward(gpu, &p_, size, &dcache, &dd_, &mut dp_)?;
        errors.push(rel_error(&gpu.download(&dp_)?, &dp));
    }
    Ok(worst(&errors))
}

fn check_sift_forward(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_sift(gpu, seed, false)
}

fn check_sift_backward(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_sift(gpu, seed, true)
}

fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut v = random_vec(n * dim, seed, 1.0);
    v.chunks_mut(dim).for_each(nn::l2_normalise);
    v
}

fn check_nearest(gpu: &Gpu, seed: u64) -> Result<f64> {
    let (nq, nd, dim) = (1037, 2011, 128);
    let q = unit_rows(nq, dim, seed);
    let d = unit_rows(nd, dim, seed + 1);
    let cpu = crate::matching::two_nearest(&q, &d, dim);
    let (q_, d_) = (gpu.upload(&q)?, gpu.upload(&d)?);
    let nn = ops::two_nearest(gpu, &q_, &d_, dim)?;
    let nearest = gpu.download(&nn.nearest)?;
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
    let ratio = ops::ratio_test(gpu, &nn, 0.95)?;
    let ratio = gpu.download(&ratio)?;
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
        rel_error(&gpu.download(&nn.d1)?, &cpu.d1),
        rel_error(&gpu.download(&nn.d2)?, &cpu.d2),
    ]))
}

fn check_loss(gpu: &Gpu, seed: u64, kind: LossKind) -> Result<f64> {
    let (n, dim) = (97, 128);
    let a = unit_rows(n, dim, seed);
    // Positives near their anchors, so that some margins are active and some not.
    let noise = random_vec(n * dim, seed + 1, 0.08);
    let mut p: Vec<f32> = a.iter().zip(&noise).map(|(a, e)| a + e).collect();
    p.chunks_mut(dim).for_each(nn::l2_normalise);
    let (mut ga, mut gp) = (vec![0.0; a.len()], vec![0.0; a.len()]);
    let stats = descriptor_loss(
        kind,
        &a,
        &p,
        dim,
        LossGrads {
            anchor: Some(&mut ga),
            positive: Some(&mut gp),
        },
        &mut LossWorkspace::default(),
    );
    let (a_, p_) = (gpu.upload(&a)?, gpu.upload(&p)?);
    let mut ga_ = gpu.zeros::<f32>(a.len())?;
    let mut gp_ = gpu.zeros::<f32>(a.len())?;
    let dev = ops::descriptor_loss(gpu, kind, &a_, &p_, dim, Some(&mut ga_), Some(&mut gp_))?;
    let scalar = |x: f64, y: f64| (x - y).abs() / y.abs().max(1e-30);
    let mut errors = vec![
        scalar(dev.loss, stats.loss),
        scalar(dev.mean_positive as f64, stats.mean_positive as f64),
        rel_error(&gpu.download(&ga_)?, &ga),
        rel_error(&gpu.download(&gp_)?, &gp),
    ];
    if kind != LossKind::PosDist {
        errors.push(scalar(
            dev.mean_hardest_negative as f64,
            stats.mean_hardest_negative as f64,
        ));
    }
    Ok(worst(&errors))
}

fn check_hardnegc(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_loss(gpu, seed, LossKind::HardNegC)
}

fn check_hardneg(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_loss(gpu, seed, LossKind::HardNeg)
}

fn check_posdist(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_loss(gpu, seed, LossKind::PosDist)
}

fn check_sgd(gpu: &Gpu, seed: u64) -> Result<f64> {
    let n = 10_007;
    let mut p = random_vec(n, seed, 1.0);
    let mut opt = Sgd::affnet_recipe();
    let mut p_ = gpu.upload(&p)?;
    let mut b_ = gpu.zeros::<f32>(n)?;
    for step in 0..3 {
        let g = random_vec(n, seed + 10 + step, 1.0);
        opt.step(&mut p, &g);
        let g_ = gpu.upload(&g)?;
        ops::sgd_step(
            gpu,
            &mut p_,
            &mut b_,
            &g_,
            opt.lr,
            opt.momentum,
            opt.dampening,
            opt.weight_decay,
            step == 0,
        )?;
    }
    let buf = opt.momentum_buffer().unwrap_or(&[]).to_vec();
    Ok(worst(&[
        rel_error(&gpu.download(&p_)?, &p),
        rel_error(&gpu.download(&b_)?, &buf),
    ]))
}

fn check_dropout(gpu: &Gpu, seed: u64) -> Result<f64> {
    let (rows, c, p) = (1_563, 64, 0.25);
    let x = random_vec(rows * c, seed, 1.0);
    let shift = random_vec(c, seed + 1, 0.5);
    let scale: Vec<f32> = random_vec(c, seed + 2, 0.5)
        .iter()
        .map(|v| 1.0 + v)
        .collect();
    let mask_seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let map = tl::InputMap {
        affine: Some((&shift[..], &scale[..])),
        relu: true,
    };
    let mut y = vec![0.0; x.len()];
    tl::dropout_forward(&x, p, mask_seed, map, c, &mut y);
    let mut d = random_vec(x.len(), seed + 3, 1.0);
    let d_in = d.clone();
    tl::dropout_backward(&mut d, p, mask_seed);

    let (shift_, scale_) = (gpu.upload(&shift)?, gpu.upload(&scale)?);
    let map_ = InputMap {
        affine: Some((&shift_, &scale_)),
        relu: true,
    };
    let mut y_ = gpu.zeros::<f32>(x.len())?;
    ops::dropout_forward(gpu, &gpu.upload(&x)?, map_, c, p, mask_seed, &mut y_)?;
    let mut d_ = gpu.upload(&d_in)?;
    ops::dropout_backward(gpu, &mut d_, p, mask_seed)?;
    Ok(worst(&[
        rel_error(&gpu.download(&y_)?, &y),
        rel_error(&gpu.download(&d_)?, &d),
    ]))
}

/// One step of `train::device_chain` against `train::TrainChain` from the same model and batch:
/// loss and statistics, the gradients of every parameter, the updated running statistics.
fn check_train_chain(
    gpu: &Gpu,
    seed: u64,
    kind: LossKind,
    terms: bool,
    descriptor: Descriptor,
) -> Result<f64> {
    let data = SyntheticBatch::new(37, seed);
    let batch = data.batch();
    // By the 2-norm through a HardNet (see HARDNET_STEP_TOLERANCE), else the largest difference.
    let gradient_error = match descriptor {
        Descriptor::Sift(_) => rel_error,
        Descriptor::HardNet(_) => two_norm_error,
    };
    let mut chain = TrainChain::new(descriptor, kind);
    if terms {
        chain.elongation_penalty = 0.5;
        chain.geom_weight = 1.0;
        chain.source_elongation_penalty = 1.0;
        chain.upright_descriptors = true;
    }
    let mut cpu_model = TrainAffNet::new(seed);
    let mut gpu_model = cpu_model.clone();
    let mut device = DeviceTrainChain::new(&chain)?;
    let mut g_cpu = vec![0.0; cpu_model.params().len()];
    let mut g_gpu = g_cpu.clone();
    let c = chain.step(&mut cpu_model, &batch, seed, &mut g_cpu);
    let d = device.step(gpu, &mut gpu_model, &batch, seed, &mut g_gpu)?;
    let scalar = |x: f64, y: f64| (x - y).abs() / y.abs().max(1e-30);
    let running = |m: &TrainAffNet| -> Vec<f32> {
        m.network()
            .batch_norms()
            .iter()
            .flat_map(|b| b.running_mean.iter().chain(&b.running_var).copied())
            .collect()
    };
    let mut errors = vec![
        scalar(d.loss.loss, c.loss.loss),
        scalar(d.loss.mean_positive as f64, c.loss.mean_positive as f64),
        scalar(d.mean_anisotropy as f64, c.mean_anisotropy as f64),
        scalar(
            d.mean_source_anisotropy as f64,
            c.mean_source_anisotropy as f64,
        ),
        gradient_error(&g_gpu, &g_cpu),
        rel_error(&running(&gpu_model), &running(&cpu_model)),
    ];
    if terms {
        errors.push(scalar(d.mean_geom as f64, c.mean_geom as f64));
    }
    if kind != LossKind::PosDist {
        errors.push(scalar(
            d.loss.mean_hardest_negative as f64,
            c.loss.mean_hardest_negative as f64,
        ));
    }
    Ok(worst(&errors))
}

fn check_train_chain_terms(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_train_chain(gpu, seed, LossKind::HardNegC, true, Descriptor::sift())
}

fn check_train_chain_hardneg(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_train_chain(gpu, seed, LossKind::HardNeg, false, Descriptor::sift())
}

fn check_train_chain_posdist(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_train_chain(gpu, seed, LossKind::PosDist, false, Descriptor::sift())
}

fn random_frozen_hardnet(seed: u64) -> Result<FrozenHardNet> {
    FrozenHardNet::from_weights(&nn::random_weights(NetworkKind::HardNet, seed))
}

/// A step with a frozen HardNet (random weights) as the descriptor, every shape term on.
fn check_train_chain_hardnet(gpu: &Gpu, seed: u64) -> Result<f64> {
    let descriptor = Descriptor::hardnet(random_frozen_hardnet(seed + 5)?);
    check_train_chain(gpu, seed, LossKind::HardNegC, true, descriptor)
}

/// The device chain's HardNet descriptor against `FrozenHardNet`: descriptors and the gradient
/// w.r.t. the patches, same patches, seed and descriptor gradients.
fn check_hardnet_descriptor(gpu: &Gpu, seed: u64) -> Result<f64> {
    let mut hardnet = random_frozen_hardnet(seed + 6)?;
    let patches = net_patches(seed);
    let n = patches.len() / nn::PATCH_LEN;
    let d_desc = random_vec(n * nn::HARDNET_DIM, seed + 7, 1.0);
    let mode_seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut cache = crate::train::hardnet::HardNetCache::default();
    let mut desc = vec![0.0; d_desc.len()];
    hardnet.forward(
        &patches,
        Mode::Train { seed: mode_seed },
        &mut cache,
        &mut desc,
    );
    let mut d_patches = vec![0.0; patches.len()];
    hardnet.backward(&mut cache, &d_desc, &mut d_patches);
    let (desc_, d_patches_) = crate::train::device_chain::hardnet_descriptor_pass(
        gpu, &hardnet, &patches, mode_seed, &d_desc,
    )?;
    Ok(worst(&[
        rel_error(&desc_, &desc),
        rel_error(&d_patches_, &d_patches),
    ]))
}

fn net_patches(seed: u64) -> Vec<f32> {
    let space = ScaleSpace::build(&test_image(181, 163, seed));
    crate::patch::extract_patches(&space, &test_frames(37, 181, 163, seed + 9), &NET_PATCH)
}

fn check_net(gpu: &Gpu, seed: u64, kind: NetworkKind) -> Result<f64> {
    let w = nn::random_weights(kind, seed);
    let patches = net_patches(seed);
    let cpu: Vec<f32> = match kind {
        NetworkKind::AffNet => AffNet::from_weights(&w)?
            .forward_raw(&patches)
            .iter()
            .flatten()
            .copied()
            .collect(),
        NetworkKind::OriNet => OriNet::from_weights(&w)?
            .forward_raw(&patches)
            .iter()
            .flatten()
            .copied()
            .collect(),
        NetworkKind::HardNet => HardNet::from_weights(&w)?.describe(&patches),
    };
    let net = GpuNet::new(gpu, kind, &w)?;
    let out = net.run(gpu, &gpu.upload(&patches)?)?;
    Ok(rel_error(&gpu.download(&out)?, &cpu))
}

fn check_affnet(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_net(gpu, seed, NetworkKind::AffNet)
}

fn check_orinet(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_net(gpu, seed, NetworkKind::OriNet)
}

fn check_hardnet(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_net(gpu, seed, NetworkKind::HardNet)
}

/// One end-to-end comparison.
#[derive(Clone, Debug)]
pub struct MatchRow {
    pub pair: String,
    pub setting: String,
    pub outcome: std::result::Result<[(bool, usize, f64); 2], String>,
}

impl MatchRow {
    pub fn ok(&self) -> bool {
        match &self.outcome {
            Ok([(r1, i1, _), (r2, i2, _)]) => {
                let slack = (INLIER_TOLERANCE * (*i1).max(*i2) as f64).max(1.0);
                r1 == r2 && (*i1 as f64 - *i2 as f64).abs() <= slack
            }
            Err(_) => false,
        }
    }
}

/// Weights for an end-to-end setting: the usual lookup, else seeded random weights.
fn weights_for(kind: NetworkKind) -> (Weights, bool) {
    match nn::locate(kind, None).and_then(|p| Weights::load(&p)) {
        Ok(w) => (w, true),
        Err(_) => (nn::random_weights(kind, 7), false),
    }
}

/// `wbs match` on both devices for each pair and each setting: hesaff + RootSIFT (device
/// matching only), hesaffnet + RootSIFT (AffNet), and hesaffnet + OriNet + HardNet (all three
/// networks). Networks without weights found run with seeded random weights (said in the
/// setting's name), which still compares the devices.
pub fn match_checks(pairs: &[(PathBuf, PathBuf)]) -> Vec<MatchRow> {
    let mut settings: Vec<(String, Config)> = Vec::new();
    settings.push(("hesaff+rootsift".into(), Config::preset(Method::Hesaff)));
    settings.push((
        "hesaffnet+rootsift".into(),
        Config::preset(Method::Hesaffnet),
    ));
    let mut full = Config::preset(Method::Hesaffnet);
    full.orientation = OrientationMethod::Orinet;
    full.descriptor = DescriptorKind::Hardnet;
    settings.push(("hesaffnet+orinet+hardnet".into(), full));

    let mut rows = Vec::new();
    let (wa, fa) = weights_for(NetworkKind::AffNet);
    let (wo, fo) = weights_for(NetworkKind::OriNet);
    let (wh, fh) = weights_for(NetworkKind::HardNet);
    for (name, config) in &settings {
        let uses = |k: NetworkKind| match k {
            NetworkKind::AffNet => config.shape == crate::shape::ShapeMethod::Affnet,
            NetworkKind::OriNet => config.orientation == OrientationMethod::Orinet,
            NetworkKind::HardNet => config.descriptor == DescriptorKind::Hardnet,
        };
        let random: Vec<&str> = [
            (NetworkKind::AffNet, fa, "affnet"),
            (NetworkKind::OriNet, fo, "orinet"),
            (NetworkKind::HardNet, fh, "hardnet"),
        ]
        .iter()
        .filter(|(k, found, _)| uses(*k) && !found)
        .map(|(_, _, n)| *n)
        .collect();
        let label = if random.is_empty() {
            name.clone()
        } else {
            format!("{name} (random {})", random.join(", "))
        };
        let models = || -> Result<Models> {
            let mut cpu = Models::none();
            if uses(NetworkKind::AffNet) {
                cpu.affnet = Some(AffNet::from_weights(&wa)?);
            }
            if uses(NetworkKind::OriNet) {
                cpu.orinet = Some(OriNet::from_weights(&wo)?);
            }
            if uses(NetworkKind::HardNet) {
                cpu.hardnet = Some(HardNet::from_weights(&wh)?);
            }
            Ok(cpu)
        };
        let on = |device: crate::device::Device, models: Models| {
            let mut config = config.clone();
            config.device = device;
            Matcher::with_models(config, models)
        };
        for (a, b) in pairs {
            let outcome = models().and_then(|cpu| {
                let c = on(crate::device::Device::Cpu, cpu.clone())?.match_files(a, b)?;
                let g = on(crate::device::Device::Cuda, cpu)?.match_files(a, b)?;
                let total = |r: &pipeline::MatchReport| {
                    r.timings_ms.get("total").copied().unwrap_or(f64::NAN)
                };
                Ok([
                    (c.registered, c.inliers, total(&c)),
                    (g.registered, g.inliers, total(&g)),
                ])
            });
            rows.push(MatchRow {
                pair: format!("{} {}", short(a), short(b)),
                setting: label.clone(),
                outcome: outcome.map_err(|e| e.to_string()),
            });
        }
    }
    rows
}

fn short(p: &Path) -> String {
    let parts: Vec<String> = p
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

/// The printed report and whether everything passed.
pub fn report(gpu: &Gpu, kernels: &[Row], matches: &[MatchRow]) -> (String, bool) {
    let mut out = String::new();
    let info = gpu.info();
    let _ = writeln!(
        out,
        "wbs gpu-check on {} (compute {}.{}, {:.1} GiB), tolerance {TOLERANCE:e} (max|gpu − cpu| / max|cpu|)",
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.memory_bytes as f64 / (1u64 << 30) as f64
    );
    let _ = writeln!(
        out,
        "{:<46} {:<28} {:>10}  result",
        "kernel", "shape", "error"
    );
    let mut all = true;
    for r in kernels {
        let (err, verdict) = match &r.outcome {
            Ok(e) => {
                let verdict = if r.ok() { "ok" } else { "FAIL" };
                let verdict = if r.tolerance == TOLERANCE {
                    verdict.to_string()
                } else {
                    format!("{verdict} (2-norm, tolerance {:e})", r.tolerance)
                };
                (format!("{e:.2e}"), verdict)
            }
            Err(e) => ("-".into(), format!("FAIL: {e}")),
        };
        all &= r.ok();
        let _ = writeln!(out, "{:<46} {:<28} {:>10}  {verdict}", r.name, r.shape, err);
    }
    let _ = writeln!(
        out,
        "\nend to end (same verdict, inliers within {:.0} %): cpu vs cuda",
        INLIER_TOLERANCE * 100.0
    );
    for m in matches {
        let line = match &m.outcome {
            Ok([(r1, i1, t1), (r2, i2, t2)]) => format!(
                "{} / {}  inliers {} / {}  time {:.0} / {:.0} ms  {}",
                verdict(*r1),
                verdict(*r2),
                i1,
                i2,
                t1,
                t2,
                if m.ok() { "ok" } else { "FAIL" }
            ),
            Err(e) => format!("FAIL: {e}"),
        };
        all &= m.ok();
        let _ = writeln!(out, "{:<34} {:<44} {line}", m.pair, m.setting);
    }
    let _ = writeln!(out, "\n{}", if all { "ALL PASSED" } else { "FAILED" });
    (out, all)
}

fn verdict(registered: bool) -> &'static str {
    if registered {
        "REGISTERED"
    } else {
        "NOT REGISTERED"
    }
}
