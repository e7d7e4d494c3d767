//! One AffNet training step on the device (batch statistics, differentiable SIFT, HardNegC,
//! SGD), built from the kernels in [`super::ops`], for `wbs bench --device cuda`'s training
//! figure. It follows `train::chain` (read its module docs) with these differences, which make it
//! a throughput measurement, not yet a trainer:
//! - no dropout before the head (the CPU chain applies Dropout(0.25));
//! - the shape `A = f(raw)` and `θ = compose(F, A, 32/S)` and their backward run on the host (a
//!   download of N×3 and an upload of N×6 floats per side and direction);
//! - SIFT only (no frozen-HardNet descriptor);
//! - not compared with `train::TrainChain` by `wbs gpu-check` (each kernel is).
//!
//! Layers: six conv 3×3 (no bias) → batch norm (batch statistics, running statistics updated) →
//! ReLU, the batch norm and ReLU fused into the next convolution's reads, then the 8×8 head with
//! bias and tanh (its output is 1×1, so the global pool is the identity).

use super::ops::{self, Buf, DeviceBatchStats, Fused, InputMap};
use super::shapes::{ConvGeometry, WarpGeometry};
use super::Gpu;
use crate::nn::layers::{Layer, BATCHNORM_EPS};
use crate::nn::{ModelKind, Weights, DEFAULT_INPUT_EPS, PATCH_SIZE};
use crate::train::loss::{LossKind, LossStats};
use crate::train::shape::{affine_shape_backward, affine_shape_forward};
use crate::train::spatial_transformer::{compose, compose_backward, crop, Affine};
use crate::train::Sgd;
use crate::{Error, Result};

/// One convolution's parameters and state on the device.
struct Layer_ {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    weight: Buf,
    bias: Option<Buf>,
    grad_w: Buf,
    grad_b: Option<Buf>,
    momentum_w: Buf,
    momentum_b: Option<Buf>,
    /// Running statistics of the batch norm after it (none for the head).
    running: Option<(Buf, Buf)>,
}

/// AffNet's parameters on the device and the step.
pub struct DeviceAffNetTrainer {
    layers: Vec<Layer_>,
    pub sgd: Sgd,
    steps: u64,
}

/// What the forward pass of one side keeps for backward.
struct Side {
    /// Conv outputs z_1..z_7 (z_0 is the standardised input).
    z: Vec<Buf>,
    stats: Vec<DeviceBatchStats>,
    raw: Vec<f32>,
    theta_dev: Buf,
    patches: Buf,
    descriptors: Buf,
    cache: ops::SiftCache,
}

impl DeviceAffNetTrainer {
    /// AffNet with the weights `w` (e.g. `nn::random_weights(ModelKind::AffNet, seed)`).
    pub fn new(gpu: &Gpu, w: &Weights) -> Result<Self> {
        let seq = ModelKind::AffNet.build(w)?;
        let mut layers = Vec::new();
        for layer in &seq.layers {
            match layer {
                Layer::Conv2d(c) => {
                    let mut gw = vec![0.0; c.weight.len()];
                    crate::train::layers::ConvShape {
                        cin: c.cin,
                        cout: c.cout,
                        k: c.k,
                        stride: c.stride,
                        padding: c.padding,
                    }
                    .to_gemm_layout(&c.weight, &mut gw);
                    layers.push(Layer_ {
                        cin: c.cin,
                        cout: c.cout,
                        k: c.k,
                        stride: c.stride,
                        pad: c.padding,
                        weight: gpu.upload(&gw)?,
                        bias: c.bias.as_ref().map(|b| gpu.upload(b)).transpose()?,
                        grad_w: gpu.zeros(gw.len())?,
                        grad_b: c.bias.as_ref().map(|b| gpu.zeros(b.len())).transpose()?,
                        momentum_w: gpu.zeros(gw.len())?,
                        momentum_b: c.bias.as_ref().map(|b| gpu.zeros(b.len())).transpose()?,
                        running: None,
                    });
                }
                Layer::BatchNorm2d(bn) => {
                    let last = layers
                        .last_mut()
                        .ok_or_else(|| Error::invalid("batch norm before any conv"))?;
                    last.running =
                        Some((gpu.upload(&bn.running_mean)?, gpu.upload(&bn.running_var)?));
                }
                _ => {}
            }
        }
        Ok(DeviceAffNetTrainer {
            layers,
            sgd: Sgd::affnet_recipe(),
            steps: 0,
        })
    }

    fn geometry(&self, n: usize) -> Result<Vec<ConvGeometry>> {
        let (mut h, mut w) = (PATCH_SIZE, PATCH_SIZE);
        let mut out = Vec::new();
        for l in &self.layers {
            let g = ConvGeometry::new(n, h, w, l.cin, l.cout, l.k, l.stride, l.pad)?;
            (h, w) = (g.oh, g.ow);
            out.push(g);
        }
        Ok(out)
    }

    fn forward(&mut self, gpu: &Gpu, src: &Buf, s: usize, frames: &[Affine]) -> Result<Side> {
        let n = frames.len();
        let geo = self.geometry(n)?;
        let wg = WarpGeometry::new(n, s, s, PATCH_SIZE, PATCH_SIZE)?;
        let crop_factor = PATCH_SIZE as f32 / s as f32;
        let theta_in: Vec<f32> = frames
            .iter()
            .flat_map(|f| crop(f, crop_factor).into_iter().flatten())
            .collect();
        let mut input = gpu.zeros::<f32>(wg.out_len())?;
        ops::warp_forward(gpu, &wg, src, &gpu.upload(&theta_in)?, &mut input)?;
        let mut x0 = gpu.zeros::<f32>(input.len())?;
        ops::standardise(
            gpu,
            &input,
            PATCH_SIZE * PATCH_SIZE,
            DEFAULT_INPUT_EPS,
            &mut x0,
        )?;
        let mut z = vec![x0];
        let mut stats: Vec<DeviceBatchStats> = Vec::new();
        let last = self.layers.len() - 1;
        for (i, (l, g)) in self.layers.iter_mut().zip(&geo).enumerate() {
            let map = match stats.last() {
                Some(st) => InputMap {
                    affine: Some((&st.mean, &st.inv_std)),
                    relu: true,
                },
                None => InputMap::default(),
            };
            let mut y = gpu.zeros::<f32>(g.out_len())?;
            let act = if i == last { Fused::Tanh } else { Fused::None };
            ops::conv2d_forward(gpu, g, &z[i], &l.weight, l.bias.as_ref(), map, act, &mut y)?;
            if let Some((rm, rv)) = l.running.as_mut() {
                stats.push(ops::bn_batch_stats(
                    gpu,
                    &y,
                    l.cout,
                    BATCHNORM_EPS,
                    0.1,
                    Some((rm, rv)),
                )?);
            }
            z.push(y);
        }
        let raw = gpu.download(&z[z.len() - 1])?;
        let theta: Vec<Affine> = frames
            .iter()
            .zip(raw.chunks_exact(3))
            .map(|(f, r)| compose(f, &affine_shape_forward([r[0], r[1], r[2]]), crop_factor))
            .collect();
        let flat: Vec<f32> = theta
            .iter()
            .flat_map(|t| t.iter().flatten().copied())
            .collect();
        let theta_dev = gpu.upload(&flat)?;
        let mut patches = gpu.zeros::<f32>(wg.out_len())?;
        ops::warp_forward(gpu, &wg, src, &theta_dev, &mut patches)?;
        let mut descriptors = gpu.zeros::<f32>(n * 128)?;
        let cache = ops::sift_forward(gpu, &patches, PATCH_SIZE, &mut descriptors)?;
        Ok(Side {
            z,
            stats,
            raw,
            theta_dev,
            patches,
            descriptors,
            cache,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        gpu: &Gpu,
        side: &Side,
        src: &Buf,
        s: usize,
        frames: &[Affine],
        d_desc: &Buf,
    ) -> Result<()> {
        let n = frames.len();
        let geo = self.geometry(n)?;
        let wg = WarpGeometry::new(n, s, s, PATCH_SIZE, PATCH_SIZE)?;
        let crop_factor = PATCH_SIZE as f32 / s as f32;
        let mut d_patches = gpu.zeros::<f32>(side.patches.len())?;
        ops::sift_backward(
            gpu,
            &side.patches,
            PATCH_SIZE,
            &side.cache,
            d_desc,
            &mut d_patches,
        )?;
        let mut d_theta = gpu.zeros::<f32>(6 * n)?;
        ops::warp_backward(
            gpu,
            &wg,
            src,
            &side.theta_dev,
            &d_patches,
            None,
            &mut d_theta,
        )?;
        let d_theta = gpu.download(&d_theta)?;
        let d_raw: Vec<f32> = d_theta
            .chunks_exact(6)
            .zip(frames)
            .zip(side.raw.chunks_exact(3))
            .flat_map(|((dt, f), r)| {
                let dt: Affine = [[dt[0], dt[1], dt[2]], [dt[3], dt[4], dt[5]]];
                affine_shape_backward([r[0], r[1], r[2]], compose_backward(f, &dt, crop_factor))
            })
            .collect();
        let last = self.layers.len() - 1;
        // Through the head's tanh.
        let mut d = gpu.zeros::<f32>(d_raw.len())?;
        ops::activation_backward(
            gpu,
            ops::Activation::Tanh,
            &gpu.upload(&d_raw)?,
            &side.z[last + 1],
            &mut d,
        )?;
        for i in (0..=last).rev() {
            let g = &geo[i];
            let l = &mut self.layers[i];
            let map = match i.checked_sub(1).map(|j| &side.stats[j]) {
                Some(st) => InputMap {
                    affine: Some((&st.mean, &st.inv_std)),
                    relu: true,
                },
                None => InputMap::default(),
            };
            let mut dw = gpu.zeros::<f32>(g.weight_len())?;
            let mut db = l
                .grad_b
                .as_ref()
                .map(|b| gpu.zeros::<f32>(b.len()))
                .transpose()?;
            ops::conv2d_backward_weight(gpu, g, &side.z[i], &d, map, &mut dw, db.as_mut())?;
            ops::axpy(gpu, 1.0, &dw, &mut l.grad_w)?;
            if let (Some(db), Some(gb)) = (db.as_ref(), l.grad_b.as_mut()) {
                ops::axpy(gpu, 1.0, db, gb)?;
            }
            if i == 0 {
                break;
            }
            // d w.r.t. relu(bn(z_i)), then through the fused ReLU and batch norm to z_i.
            let mut d_map = gpu.zeros::<f32>(g.in_len())?;
            ops::conv2d_backward_input(gpu, g, &d, &l.weight, &mut d_map)?;
            let mut dz = gpu.zeros::<f32>(g.in_len())?;
            ops::bn_backward_train(gpu, &side.z[i], &d_map, &side.stats[i - 1], true, &mut dz)?;
            d = dz;
        }
        Ok(())
    }

    /// One step on `n` pairs: sources `anchors`/`positives` (`n × s × s` on the device) and
    /// augmentation frames. Returns the loss statistics.
    pub fn step(
        &mut self,
        gpu: &Gpu,
        anchors: &Buf,
        positives: &Buf,
        s: usize,
        anchor_frames: &[Affine],
        positive_frames: &[Affine],
    ) -> Result<LossStats> {
        let n = anchor_frames.len();
        if positive_frames.len() != n {
            return Err(Error::invalid(
                "gpu train step: anchor and positive frame counts differ",
            ));
        }
        for l in &mut self.layers {
            ops::fill(gpu, &mut l.grad_w, 0.0)?;
            if let Some(b) = l.grad_b.as_mut() {
                ops::fill(gpu, b, 0.0)?;
            }
        }
        let a = self.forward(gpu, anchors, s, anchor_frames)?;
        let p = self.forward(gpu, positives, s, positive_frames)?;
        let mut ga = gpu.zeros::<f32>(n * 128)?;
        let mut gp = gpu.zeros::<f32>(n * 128)?;
        let stats = ops::descriptor_loss(
            gpu,
            LossKind::HardNegC,
            &a.descriptors,
            &p.descriptors,
            128,
            Some(&mut ga),
            Some(&mut gp),
        )?;
        self.backward(gpu, &a, anchors, s, anchor_frames, &ga)?;
        self.backward(gpu, &p, positives, s, positive_frames, &gp)?;
        let first = self.steps == 0;
        let o = self.sgd.clone();
        for l in &mut self.layers {
            ops::sgd_step(
                gpu,
                &mut l.weight,
                &mut l.momentum_w,
                &l.grad_w,
                o.lr,
                o.momentum,
                o.dampening,
                o.weight_decay,
                first,
            )?;
            if let (Some(b), Some(m), Some(g)) =
                (l.bias.as_mut(), l.momentum_b.as_mut(), l.grad_b.as_ref())
            {
                ops::sgd_step(
                    gpu,
                    b,
                    m,
                    g,
                    o.lr,
                    o.momentum,
                    o.dampening,
                    o.weight_decay,
                    first,
                )?;
            }
        }
        self.steps += 1;
        Ok(stats)
    }
}
