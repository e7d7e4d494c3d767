//! The training chain on the device: what `wbs train affnet --device cuda` runs per batch. It is
//! `train::TrainChain` (read its module docs) with the heavy work on the GPU and the same
//! interface, so the trainer, its optimiser, checkpoints and resume are the CPU's:
//! [`DeviceTrainChain::step`] takes the host model, *adds* `dL/dθ` (PyTorch layout) into the
//! caller's gradient vector and updates the model's batch-norm running statistics, as
//! `TrainChain::step` does; the caller runs `train::Sgd` on the host.
//!
//! Per step: the weights (about 85 k floats) and running statistics are uploaded, and the
//! gradients and new running statistics downloaded; each side's raw outputs (`N × 3`) come to the
//! host and the descriptor patches' maps `θ` (`N × 6`) go back, because the shape, the
//! composition with the augmentation frame and the optional shape terms run on the host in
//! `train::regions` for both chains. The same numbers as the CPU chain, then, up to f32
//! summation order:
//! - AffNet in training mode: batch statistics (running statistics updated), dropout 0.25 before
//!   the head with the CPU's masks (the same hash of the same seeds, `kernels/elementwise.cu`);
//! - input warp, descriptor-patch warp and their backward: the spatial-transformer kernels;
//! - differentiable SIFT and the loss (`hardnegc`, `hardneg`, `posdist`) with their backward.
//!
//! The frozen-HardNet descriptor runs on the CPU only (a one-line error here).
//!
//! `wbs gpu-check` compares a step of this chain with `TrainChain::step` (loss, gradients,
//! running statistics) on a batch with every option on.

use std::time::Instant;

use super::ops::{self, Buf, DeviceBatchStats, Fused, InputMap};
use super::shapes::{ConvGeometry, WarpGeometry};
use super::Gpu;
use crate::nn::PATCH_SIZE;
use crate::train::chain::{
    affnet_side_seed, Descriptor, PairBatch, StageTimes, StepStats, TrainChain,
};
use crate::train::loss::LossKind;
use crate::train::network::{Network, StagePlan};
use crate::train::regions::{RegionStage, RegionTerms};
use crate::train::sift::SIFT_DIM;
use crate::train::spatial_transformer::{crop, Affine};
use crate::train::TrainAffNet;
use crate::{Error, Result};

/// The device chain: the loss and shape terms of a `TrainChain`, and the per-step host buffers.
#[derive(Clone, Debug)]
pub struct DeviceTrainChain {
    pub loss: LossKind,
    pub terms: RegionTerms,
    regions: RegionStage,
}

/// The model's parameters and running statistics on the device for one step.
struct DeviceParams {
    /// Per stage: GEMM-layout weights, bias, and the running (mean, var) of its batch norm.
    weights: Vec<Buf>,
    bias: Vec<Option<Buf>>,
    running: Vec<Option<(Buf, Buf)>>,
    /// Per stage: accumulated weight and bias gradients (both sides), GEMM layout.
    grad_w: Vec<Buf>,
    grad_b: Vec<Option<Buf>>,
}

/// What one side's forward pass keeps for backward.
struct DeviceSide {
    /// Per stage, what its convolution read (the standardised input, or the dropped input) when
    /// that is not the previous stage's output read through its batch norm and ReLU.
    inputs: Vec<Option<Buf>>,
    /// Per stage, its convolution output (after tanh for a tanh stage).
    z: Vec<Buf>,
    stats: Vec<Option<DeviceBatchStats>>,
    /// The side's training-mode seed (`affnet_side_seed`; `Network::dropout_seed` gives each
    /// stage's mask seed from it).
    seed: u64,
    raw: Vec<f32>,
    source: Buf,
    theta: Option<Buf>,
    patches: Option<Buf>,
    descriptors: Option<Buf>,
    sift: Option<ops::SiftCache>,
}

impl DeviceTrainChain {
    /// The device version of `chain` (its loss and shape terms). Fails with one line for what
    /// the device does not run: the frozen-HardNet descriptor.
    pub fn new(chain: &TrainChain) -> Result<Self> {
        if !matches!(chain.descriptor, Descriptor::Sift(_)) {
            return Err(Error::invalid(crate::gpu::TRAIN_SIFT_ONLY));
        }
        Ok(DeviceTrainChain {
            loss: chain.loss,
            terms: chain.region_terms(),
            regions: RegionStage::default(),
        })
    }

    /// Forward and backward of one step, as `TrainChain::step`: returns the statistics, *adds*
    /// `dL/dθ` to `grads` (the layout of `model.params()`) and updates the model's running
    /// statistics. `seed` fixes the dropout masks exactly as on the CPU.
    pub fn step(
        &mut self,
        gpu: &Gpu,
        model: &mut TrainAffNet,
        batch: &PairBatch,
        seed: u64,
        grads: &mut [f32],
    ) -> Result<StepStats> {
        if grads.len() != model.params().len() {
            return Err(Error::invalid("gpu train step: gradient length"));
        }
        self.run(gpu, model, batch, seed, Some(grads))
    }

    /// The loss without backward (same randomness as [`step`](Self::step)); running statistics
    /// are updated as in a step, as `TrainChain::loss`.
    pub fn loss(
        &mut self,
        gpu: &Gpu,
        model: &mut TrainAffNet,
        batch: &PairBatch,
        seed: u64,
    ) -> Result<StepStats> {
        self.run(gpu, model, batch, seed, None)
    }

    fn run(
        &mut self,
        gpu: &Gpu,
        model: &mut TrainAffNet,
        batch: &PairBatch,
        seed: u64,
        grads: Option<&mut [f32]>,
    ) -> Result<StepStats> {
        batch.check();
        let n = batch.len();
        let s = batch.source_size;
        let scale = PATCH_SIZE as f32 / s as f32;
        let net = model.network();
        let plan = check_plan(net)?;
        let mut times = StageTimes::default();
        let mut clock = Instant::now();
        let mut lap = |acc: &mut f64| {
            *acc += clock.elapsed().as_secs_f64();
            clock = Instant::now();
        };

        let mut params = upload_params(gpu, net, &plan)?;
        let sources = [batch.anchors, batch.positives];
        let frames = [batch.anchor_frames, batch.positive_frames];
        let mut sides = Vec::with_capacity(2);
        for k in 0..2 {
            let mode_seed = affnet_side_seed(seed, k);
            sides.push(forward_net(
                gpu,
                net,
                &plan,
                &mut params,
                sources[k],
                s,
                frames[k],
                mode_seed,
            )?);
        }
        lap(&mut times.affnet_forward);

        let want_grads = grads.is_some();
        let region_stats = self.regions.forward(
            &self.terms,
            frames,
            [&sides[0].raw, &sides[1].raw],
            scale,
            want_grads,
        );
        lap(&mut times.warp_forward);
        let wg = WarpGeometry::new(n, s, s, PATCH_SIZE, PATCH_SIZE)?;
        for (k, side) in sides.iter_mut().enumerate() {
            let theta = gpu.upload(&flatten(&self.regions.theta[k]))?;
            let mut patches = gpu.zeros::<f32>(wg.out_len())?;
            ops::warp_forward(gpu, &wg, &side.source, &theta, &mut patches)?;
            let mut desc = gpu.zeros::<f32>(n * SIFT_DIM)?;
            side.sift = Some(ops::sift_forward(gpu, &patches, PATCH_SIZE, &mut desc)?);
            (side.theta, side.patches, side.descriptors) = (Some(theta), Some(patches), Some(desc));
        }
        let (mut ga, mut gp) = if want_grads {
            (
                Some(gpu.zeros::<f32>(n * SIFT_DIM)?),
                Some(gpu.zeros::<f32>(n * SIFT_DIM)?),
            )
        } else {
            (None, None)
        };
        let mut loss = ops::descriptor_loss(
            gpu,
            self.loss,
            sides[0].descriptors.as_ref().expect("set above"),
            sides[1].descriptors.as_ref().expect("set above"),
            SIFT_DIM,
            ga.as_mut(),
            gp.as_mut(),
        )?;
        loss.loss += region_stats.extra_loss;
        lap(&mut times.loss);

        if let (Some(grads), Some(ga), Some(gp)) = (grads, ga, gp) {
            for (k, (side, d_desc)) in sides.iter().zip([ga, gp]).enumerate() {
                let patches = side.patches.as_ref().expect("set above");
                let mut d_patches = gpu.zeros::<f32>(patches.len())?;
                let cache = side.sift.as_ref().expect("set above");
                ops::sift_backward(gpu, patches, PATCH_SIZE, cache, &d_desc, &mut d_patches)?;
                let mut d_theta = gpu.zeros::<f32>(6 * n)?;
                let theta = side.theta.as_ref().expect("set above");
                ops::warp_backward(
                    gpu,
                    &wg,
                    &side.source,
                    theta,
                    &d_patches,
                    None,
                    &mut d_theta,
                )?;
                let d_theta = unflatten(&gpu.download(&d_theta)?);
                lap(&mut times.descriptor_backward);
                let mut d_raw = Vec::with_capacity(3 * n);
                self.regions.backward(
                    &self.terms,
                    k,
                    frames[k],
                    &side.raw,
                    &d_theta,
                    scale,
                    &mut d_raw,
                );
                lap(&mut times.warp_backward);
                backward_net(gpu, &plan, &mut params, side, &d_raw)?;
            }
            download_grads(gpu, net, &plan, &params, grads)?;
            lap(&mut times.affnet_backward);
        }
        download_running(gpu, model, &plan, &params)?;
        Ok(StepStats {
            loss,
            mean_anisotropy: region_stats.mean_anisotropy,
            mean_geom: region_stats.mean_geom,
            mean_source_anisotropy: region_stats.mean_source_anisotropy,
            times,
        })
    }
}

/// The network's stages, checked to be what the device runs: hidden stages with batch norm and
/// ReLU, a last stage with tanh or nothing, no pooling of more than one position.
fn check_plan(net: &Network) -> Result<Vec<StagePlan>> {
    let plan = net.stage_plan();
    let last = plan
        .len()
        .checked_sub(1)
        .ok_or_else(|| Error::invalid("gpu train chain: the network has no stages"))?;
    for (i, st) in plan.iter().enumerate() {
        let supported = if i < last {
            st.batch_norm.is_some() && st.relu
        } else {
            st.batch_norm.is_none() && !st.relu
        };
        if !supported || (i == 0 && st.dropout.is_some()) {
            return Err(Error::invalid(format!(
                "gpu train chain: {} stage {i} is not one the device chain runs",
                net.kind()
            )));
        }
    }
    if net.pooled() && plan[last].oh * plan[last].ow != 1 {
        return Err(Error::invalid(
            "gpu train chain: pooling over more than one position is not run on the device",
        ));
    }
    Ok(plan)
}

fn geometry(n: usize, st: &StagePlan) -> Result<ConvGeometry> {
    let c = &st.conv;
    ConvGeometry::new(n, st.h, st.w, c.cin, c.cout, c.k, c.stride, c.padding)
}

fn upload_params(gpu: &Gpu, net: &Network, plan: &[StagePlan]) -> Result<DeviceParams> {
    let p = net.params();
    let bns = net.batch_norms();
    let mut d = DeviceParams {
        weights: Vec::new(),
        bias: Vec::new(),
        running: Vec::new(),
        grad_w: Vec::new(),
        grad_b: Vec::new(),
    };
    for st in plan {
        let mut gemm = vec![0.0; st.conv.weight_len()];
        st.conv.to_gemm_layout(&p[st.weights.clone()], &mut gemm);
        d.weights.push(gpu.upload(&gemm)?);
        d.grad_w.push(gpu.zeros::<f32>(gemm.len())?);
        d.bias
            .push(st.bias.clone().map(|b| gpu.upload(&p[b])).transpose()?);
        d.grad_b.push(
            st.bias
                .as_ref()
                .map(|b| gpu.zeros::<f32>(b.len()))
                .transpose()?,
        );
        d.running.push(
            st.batch_norm
                .map(|j| -> Result<(Buf, Buf)> {
                    Ok((
                        gpu.upload(&bns[j].running_mean)?,
                        gpu.upload(&bns[j].running_var)?,
                    ))
                })
                .transpose()?,
        );
    }
    Ok(d)
}

/// How stage `i` reads stage `i − 1`'s output: its batch norm and ReLU.
fn read_map(stats: &[Option<DeviceBatchStats>], i: usize) -> InputMap<'_> {
    match i.checked_sub(1).and_then(|j| stats[j].as_ref()) {
        Some(st) => InputMap {
            affine: Some((&st.mean, &st.inv_std)),
            relu: true,
        },
        None => InputMap::default(),
    }
}

/// AffNet's training-mode forward pass of one side, from the sources and frames to the raw
/// outputs on the host.
#[allow(clippy::too_many_arguments)]
fn forward_net(
    gpu: &Gpu,
    net: &Network,
    plan: &[StagePlan],
    params: &mut DeviceParams,
    sources: &[f32],
    s: usize,
    frames: &[Affine],
    seed: u64,
) -> Result<DeviceSide> {
    let n = frames.len();
    let source = gpu.upload(sources)?;
    let wg = WarpGeometry::new(n, s, s, PATCH_SIZE, PATCH_SIZE)?;
    let scale = PATCH_SIZE as f32 / s as f32;
    let theta_in: Vec<Affine> = frames.iter().map(|f| crop(f, scale)).collect();
    let mut warped = gpu.zeros::<f32>(wg.out_len())?;
    ops::warp_forward(
        gpu,
        &wg,
        &source,
        &gpu.upload(&flatten(&theta_in))?,
        &mut warped,
    )?;
    let mut x0 = gpu.zeros::<f32>(warped.len())?;
    if net.standardise_input {
        ops::standardise(
            gpu,
            &warped,
            PATCH_SIZE * PATCH_SIZE,
            net.input_eps,
            &mut x0,
        )?;
    } else {
        x0 = warped;
    }
    let mut x0 = Some(x0);
    let mut inputs: Vec<Option<Buf>> = Vec::with_capacity(plan.len());
    let mut z: Vec<Buf> = Vec::new();
    let mut stats: Vec<Option<DeviceBatchStats>> = Vec::new();
    let bns = net.batch_norms();
    for (i, st) in plan.iter().enumerate() {
        let g = geometry(n, st)?;
        let own_input = match st.dropout {
            _ if i == 0 => x0.take(),
            Some(p) => {
                // Materialise map(z_{i−1})·mask/(1 − p); the convolution then reads it unmapped.
                let mut dropped = gpu.zeros::<f32>(g.in_len())?;
                let (map, ds) = (read_map(&stats, i), Network::dropout_seed(seed, i));
                ops::dropout_forward(gpu, &z[i - 1], map, st.conv.cin, p, ds, &mut dropped)?;
                Some(dropped)
            }
            None => None,
        };
        inputs.push(own_input);
        let (x, map) = match &inputs[i] {
            Some(x) => (x, InputMap::default()),
            None => (&z[i - 1], read_map(&stats, i)),
        };
        let act = if st.tanh { Fused::Tanh } else { Fused::None };
        let mut y = gpu.zeros::<f32>(g.out_len())?;
        ops::conv2d_forward(
            gpu,
            &g,
            x,
            &params.weights[i],
            params.bias[i].as_ref(),
            map,
            act,
            &mut y,
        )?;
        let st_stats = match (st.batch_norm, params.running[i].as_mut()) {
            (Some(j), Some((rm, rv))) => {
                let bn = &bns[j];
                let running = net.update_running_stats.then_some((rm, rv));
                Some(ops::bn_batch_stats(
                    gpu,
                    &y,
                    st.conv.cout,
                    bn.eps,
                    bn.momentum,
                    running,
                )?)
            }
            _ => None,
        };
        stats.push(st_stats);
        z.push(y);
    }
    let raw = gpu.download(z.last().expect("checked: at least one stage"))?;
    Ok(DeviceSide {
        inputs,
        z,
        stats,
        seed,
        raw,
        source,
        theta: None,
        patches: None,
        descriptors: None,
        sift: None,
    })
}

/// Backward of one side from `dL/d(raw)`, adding the weight and bias gradients into `params`.
fn backward_net(
    gpu: &Gpu,
    plan: &[StagePlan],
    params: &mut DeviceParams,
    side: &DeviceSide,
    d_raw: &[f32],
) -> Result<()> {
    let n = side.raw.len() / 3;
    let last = plan.len() - 1;
    let mut d = gpu.upload(d_raw)?;
    if plan[last].tanh {
        let mut dt = gpu.zeros::<f32>(d.len())?;
        ops::activation_backward(gpu, ops::Activation::Tanh, &d, &side.z[last], &mut dt)?;
        d = dt;
    }
    for i in (0..=last).rev() {
        let st = &plan[i];
        let g = geometry(n, st)?;
        let (x, map) = match &side.inputs[i] {
            Some(x) => (x, InputMap::default()),
            None => (&side.z[i - 1], read_map(&side.stats, i)),
        };
        let mut dw = gpu.zeros::<f32>(g.weight_len())?;
        let mut db = params.grad_b[i]
            .as_ref()
            .map(|b| gpu.zeros::<f32>(b.len()))
            .transpose()?;
        ops::conv2d_backward_weight(gpu, &g, x, &d, map, &mut dw, db.as_mut())?;
        ops::axpy(gpu, 1.0, &dw, &mut params.grad_w[i])?;
        if let (Some(db), Some(gb)) = (db.as_ref(), params.grad_b[i].as_mut()) {
            ops::axpy(gpu, 1.0, db, gb)?;
        }
        if i == 0 {
            break;
        }
        // d w.r.t. what the convolution read, back through dropout to relu(bn(z_{i−1})), then
        // through the ReLU and batch norm to z_{i−1}.
        let mut d_in = gpu.zeros::<f32>(g.in_len())?;
        ops::conv2d_backward_input(gpu, &g, &d, &params.weights[i], &mut d_in)?;
        if let Some(p) = st.dropout {
            ops::dropout_backward(gpu, &mut d_in, p, Network::dropout_seed(side.seed, i))?;
        }
        let prev = side.stats[i - 1]
            .as_ref()
            .expect("checked: hidden stages have batch norm");
        let mut dz = gpu.zeros::<f32>(g.in_len())?;
        ops::bn_backward_train(gpu, &side.z[i - 1], &d_in, prev, true, &mut dz)?;
        d = dz;
    }
    Ok(())
}

/// Adds the accumulated gradients into `grads` (PyTorch layout, `net.params()`'s offsets).
fn download_grads(
    gpu: &Gpu,
    net: &Network,
    plan: &[StagePlan],
    params: &DeviceParams,
    grads: &mut [f32],
) -> Result<()> {
    debug_assert_eq!(grads.len(), net.params().len());
    for (i, st) in plan.iter().enumerate() {
        let gw = gpu.download(&params.grad_w[i])?;
        st.conv
            .add_to_torch_layout(&gw, &mut grads[st.weights.clone()]);
        if let (Some(range), Some(gb)) = (st.bias.clone(), params.grad_b[i].as_ref()) {
            for (g, v) in grads[range].iter_mut().zip(gpu.download(gb)?) {
                *g += v;
            }
        }
    }
    Ok(())
}

/// Copies the updated running statistics back into the host model.
fn download_running(
    gpu: &Gpu,
    model: &mut TrainAffNet,
    plan: &[StagePlan],
    params: &DeviceParams,
) -> Result<()> {
    if !model.network().update_running_stats {
        return Ok(());
    }
    for (st, running) in plan.iter().zip(&params.running) {
        if let (Some(j), Some((rm, rv))) = (st.batch_norm, running) {
            let bn = &mut model.network_mut().batch_norms_mut()[j];
            bn.running_mean = gpu.download(rm)?;
            bn.running_var = gpu.download(rv)?;
        }
    }
    Ok(())
}

fn flatten(t: &[Affine]) -> Vec<f32> {
    t.iter().flat_map(|a| a.iter().flatten().copied()).collect()
}

fn unflatten(v: &[f32]) -> Vec<Affine> {
    v.chunks_exact(6)
        .map(|d| [[d[0], d[1], d[2]], [d[3], d[4], d[5]]])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::layers::batchnorm::{backward_train, batch_statistics};
    use crate::train::layers::{
        conv2d_backward, conv2d_forward, dropout_backward, dropout_forward, BatchStats, ConvGrads,
        ConvInput, InputMap as CpuMap,
    };
    use crate::train::loss::{descriptor_loss, LossGrads, LossWorkspace};
    use crate::train::rng::Rng;
    use crate::train::sift::{DiffSift, SiftCache};
    use crate::train::spatial_transformer::{warp_backward, warp_forward, WarpSize};
    use crate::train::{recipe_frames, synthetic_pairs};

    /// One side's forward pass as `forward_net` runs it (per stage: the own input at stage 0
    /// or after dropout, else the previous output read through its batch norm and ReLU), with
    /// the CPU's NHWC layers in place of the kernels.
    struct EmulatedSide {
        inputs: Vec<Option<Vec<f32>>>,
        z: Vec<Vec<f32>>,
        stats: Vec<Option<BatchStats>>,
        seed: u64,
    }

    impl EmulatedSide {
        /// What stage `i`'s convolution reads, as `forward_net`/`backward_net` choose it.
        fn conv_input(&self, i: usize, st: &StagePlan, n: usize) -> ConvInput<'_> {
            let (data, map) = match &self.inputs[i] {
                Some(x) => (&x[..], CpuMap::IDENTITY),
                None => (&self.z[i - 1][..], cpu_map(&self.stats, i)),
            };
            ConvInput {
                data,
                n,
                h: st.h,
                w: st.w,
                map,
            }
        }
    }

    fn cpu_map(stats: &[Option<BatchStats>], i: usize) -> CpuMap<'_> {
        match i.checked_sub(1).and_then(|j| stats[j].as_ref()) {
            Some(st) => CpuMap {
                affine: Some((&st.mean, &st.inv_std)),
                relu: true,
            },
            None => CpuMap::IDENTITY,
        }
    }

    fn gemm(st: &StagePlan, params: &[f32]) -> Vec<f32> {
        let mut g = vec![0.0; st.conv.weight_len()];
        st.conv.to_gemm_layout(&params[st.weights.clone()], &mut g);
        g
    }

    fn emulate_forward(model: &mut TrainAffNet, x0: Vec<f32>, seed: u64) -> EmulatedSide {
        let plan = check_plan(model.network()).unwrap();
        let n = x0.len() / (PATCH_SIZE * PATCH_SIZE);
        let params = model.params().to_vec();
        let mut side = EmulatedSide {
            inputs: Vec::new(),
            z: Vec::new(),
            stats: Vec::new(),
            seed,
        };
        let mut x0 = Some(x0);
        for (i, st) in plan.iter().enumerate() {
            let own = match st.dropout {
                _ if i == 0 => x0.take(),
                Some(p) => {
                    let prev = &side.z[i - 1];
                    let mut dropped = vec![0.0; prev.len()];
                    let map = cpu_map(&side.stats, i);
                    let ds = Network::dropout_seed(seed, i);
                    dropout_forward(prev, p, ds, map, st.conv.cin, &mut dropped);
                    Some(dropped)
                }
                None => None,
            };
            side.inputs.push(own);
            let input = side.conv_input(i, st, n);
            let mut y = vec![0.0; n * st.oh * st.ow * st.conv.cout];
            let bias = st.bias.clone().map(|b| &params[b]);
            conv2d_forward(&st.conv, &input, &gemm(st, &params), bias, &mut y, None);
            if st.tanh {
                y.iter_mut().for_each(|v| *v = v.tanh());
            }
            let stats = st.batch_norm.map(|j| {
                let bn = &mut model.network_mut().batch_norms_mut()[j];
                let mut s = BatchStats::default();
                batch_statistics(&y, st.conv.cout, bn.eps, &mut s);
                bn.update_running(&s);
                s
            });
            side.stats.push(stats);
            side.z.push(y);
        }
        side
    }

    /// `backward_net`'s sequence with the CPU layers, adding PyTorch-layout gradients.
    fn emulate_backward(
        model: &TrainAffNet,
        side: &EmulatedSide,
        d_raw: &[f32],
        grads: &mut [f32],
    ) {
        let plan = check_plan(model.network()).unwrap();
        let params = model.params();
        let n = d_raw.len() / 3;
        let last = plan.len() - 1;
        let mut d = d_raw.to_vec();
        if plan[last].tanh {
            for (d, y) in d.iter_mut().zip(&side.z[last]) {
                *d *= 1.0 - y * y;
            }
        }
        for i in (0..=last).rev() {
            let st = &plan[i];
            let input = side.conv_input(i, st, n);
            let mut dw = vec![0.0; st.conv.weight_len()];
            let mut db = vec![0.0; st.conv.cout];
            let mut d_in = vec![0.0; if i > 0 { input.data.len() } else { 0 }];
            conv2d_backward(
                &st.conv,
                &input,
                &gemm(st, params),
                &d,
                ConvGrads {
                    input: (i > 0).then_some(&mut d_in[..]),
                    weight: Some(&mut dw),
                    bias: st.bias.is_some().then_some(&mut db[..]),
                },
            );
            st.conv
                .add_to_torch_layout(&dw, &mut grads[st.weights.clone()]);
            if let Some(range) = st.bias.clone() {
                grads[range].iter_mut().zip(&db).for_each(|(g, v)| *g += v);
            }
            if i == 0 {
                break;
            }
            if let Some(p) = st.dropout {
                dropout_backward(&mut d_in, p, Network::dropout_seed(side.seed, i));
            }
            backward_train(
                &side.z[i - 1],
                &mut d_in,
                side.stats[i - 1].as_ref().unwrap(),
                true,
            );
            d = d_in;
        }
    }

    /// The device chain's whole step (`DeviceTrainChain::run`) with CPU layers in place of the
    /// kernels: returns the loss and adds the gradients.
    fn emulate_step(
        chain: &TrainChain,
        model: &mut TrainAffNet,
        batch: &PairBatch,
        seed: u64,
        grads: &mut [f32],
    ) -> f64 {
        let n = batch.len();
        let s = batch.source_size;
        let scale = PATCH_SIZE as f32 / s as f32;
        let size = WarpSize::square(s, PATCH_SIZE);
        let sources = [batch.anchors, batch.positives];
        let frames = [batch.anchor_frames, batch.positive_frames];
        let mut sides = Vec::new();
        for k in 0..2 {
            let theta_in: Vec<Affine> = frames[k].iter().map(|f| crop(f, scale)).collect();
            let mut warped = vec![0.0; n * PATCH_SIZE * PATCH_SIZE];
            warp_forward(sources[k], &theta_in, size, &mut warped);
            let eps = model.network().input_eps;
            let x0: Vec<f32> = warped
                .chunks(PATCH_SIZE * PATCH_SIZE)
                .flat_map(|p| crate::nn::normalise_patch(p, eps))
                .collect();
            sides.push(emulate_forward(model, x0, affnet_side_seed(seed, k)));
        }
        let raw: Vec<&[f32]> = sides.iter().map(|s| &s.z.last().unwrap()[..]).collect();
        let terms = chain.region_terms();
        let mut regions = RegionStage::default();
        let rs = regions.forward(&terms, frames, [raw[0], raw[1]], scale, true);
        let sift = DiffSift::new(PATCH_SIZE);
        let mut patches = vec![vec![0.0; n * PATCH_SIZE * PATCH_SIZE]; 2];
        let mut desc = vec![vec![0.0; n * SIFT_DIM]; 2];
        let mut caches = [SiftCache::default(), SiftCache::default()];
        for k in 0..2 {
            warp_forward(sources[k], &regions.theta[k], size, &mut patches[k]);
            sift.forward(&patches[k], &mut desc[k], &mut caches[k]);
        }
        let (mut ga, mut gp) = (vec![0.0; n * SIFT_DIM], vec![0.0; n * SIFT_DIM]);
        let loss = descriptor_loss(
            chain.loss,
            &desc[0],
            &desc[1],
            SIFT_DIM,
            LossGrads {
                anchor: Some(&mut ga),
                positive: Some(&mut gp),
            },
            &mut LossWorkspace::default(),
        );
        for (k, d_desc) in [ga, gp].iter().enumerate() {
            let mut d_patches = vec![0.0; patches[k].len()];
            sift.backward(&patches[k], &caches[k], d_desc, &mut d_patches);
            let mut d_theta = vec![[[0.0; 3]; 2]; n];
            warp_backward(
                sources[k],
                &regions.theta[k],
                size,
                &d_patches,
                None,
                &mut d_theta,
            );
            let mut d_raw = Vec::new();
            regions.backward(&terms, k, frames[k], raw[k], &d_theta, scale, &mut d_raw);
            emulate_backward(model, &sides[k], &d_raw, grads);
        }
        loss.loss + rs.extra_loss
    }

    /// The device chain's recipe (stage plan, GEMM layouts, dropout seeds per side and stage,
    /// fused batch-norm reads, region stage, gradient accumulation into PyTorch layout) gives
    /// the CPU chain's loss, gradients and running statistics. Without a GPU this checks
    /// everything but the kernels, which `wbs gpu-check` compares one by one and as a step.
    #[test]
    fn emulated_device_step_matches_the_cpu_chain() {
        let n = 12;
        let (anchors, positives) = synthetic_pairs(n, 64, 2.0, 3);
        let (fa, fp) = recipe_frames(n, 2.0, 0.5, &mut Rng::new(4));
        let batch = PairBatch {
            anchors: &anchors,
            positives: &positives,
            source_size: 64,
            anchor_frames: &fa,
            positive_frames: &fp,
        };
        let mut chain = TrainChain::new(Descriptor::sift(), LossKind::HardNegC);
        chain.geom_weight = 1.0;
        chain.source_elongation_penalty = 1.0;
        chain.elongation_penalty = 0.5;
        chain.upright_descriptors = true;
        let mut cpu = TrainAffNet::new(5);
        let mut emu = cpu.clone();
        let mut g_cpu = vec![0.0; cpu.params().len()];
        let mut g_emu = g_cpu.clone();
        let stats = chain.step(&mut cpu, &batch, 77, &mut g_cpu);
        let loss = emulate_step(&chain, &mut emu, &batch, 77, &mut g_emu);
        assert!(
            (loss - stats.loss.loss).abs() <= 1e-5 * stats.loss.loss.abs(),
            "{loss} vs {}",
            stats.loss.loss
        );
        let scale = g_cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0);
        for (a, b) in g_emu.iter().zip(&g_cpu) {
            assert!((a - b).abs() <= 1e-4 * scale, "gradient {a} vs {b}");
        }
        for (a, b) in emu
            .network()
            .batch_norms()
            .iter()
            .zip(cpu.network().batch_norms())
        {
            // Equal up to the order of the statistics' sums.
            for (x, y) in [
                (&a.running_mean, &b.running_mean),
                (&a.running_var, &b.running_var),
            ] {
                let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(x.iter().zip(y).all(|(u, v)| (u - v).abs() <= 1e-5 * scale));
            }
            // ... and both were updated (from PyTorch's initial 0 / 1).
            assert!(a.running_mean.iter().any(|&m| m != 0.0));
        }
        // The dropout masks matter: another seed for one side's mask changes the gradients.
        let mut g_other = vec![0.0; g_cpu.len()];
        let mut other = TrainAffNet::new(5);
        emulate_step(&chain, &mut other, &batch, 78, &mut g_other);
        assert!(g_other
            .iter()
            .zip(&g_cpu)
            .any(|(a, b)| (a - b).abs() > 1e-3 * scale));
    }

    #[test]
    fn the_hardnet_descriptor_is_refused_with_one_line() {
        let chain = TrainChain::new(
            Descriptor::hardnet(
                crate::train::FrozenHardNet::from_weights(&crate::nn::random_weights(
                    crate::nn::ModelKind::HardNet,
                    1,
                ))
                .unwrap(),
            ),
            LossKind::HardNegC,
        );
        let e = DeviceTrainChain::new(&chain).unwrap_err().to_string();
        assert!(
            e.contains("SIFT descriptor only") && !e.contains('\n'),
            "{e}"
        );
        assert!(
            DeviceTrainChain::new(&TrainChain::new(Descriptor::sift(), LossKind::PosDist)).is_ok()
        );
    }

    #[test]
    fn affnet_plan_is_one_the_device_runs() {
        let model = TrainAffNet::new(0);
        let plan = check_plan(model.network()).unwrap();
        assert_eq!(plan.len(), 7);
        assert!(plan[..6].iter().all(|s| s.batch_norm.is_some() && s.relu));
        assert!(plan[6].tanh && plan[6].dropout == Some(0.25));
        let covered: usize = plan
            .iter()
            .map(|s| s.weights.len() + s.bias.as_ref().map_or(0, |b| b.len()))
            .sum();
        assert_eq!(covered, model.params().len());
    }
}
