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
//! `train::chain::regions` for both chains. The same numbers as the CPU chain, then, up to f32
//! summation order:
//! - AffNet in training mode: batch statistics (running statistics updated), dropout 0.25 before
//!   the head with the CPU's masks (the same hash of the same seeds, `kernels/elementwise.cu`);
//! - input warp, descriptor-patch warp and their backward: the spatial-transformer kernels;
//! - the descriptor: differentiable SIFT, or a frozen HardNet (batch statistics, dropout 0.1 with
//!   the CPU's masks, input standardisation and L2 normalisation, backward to the patches only;
//!   its weights are uploaded once, at the first step);
//! - the loss (`hardnegc`, `hardneg`, `posdist`) and its backward.
//!
//! Both networks run through the same two functions, `forward_stages` and
//! `backward_stages`, from `Network::stage_plan()`.
//!
//! `wbs gpu-check` compares a step of this chain with `TrainChain::step` (loss, gradients,
//! running statistics) on batches with every option on, with either descriptor.

use std::time::Instant;

use crate::gpu::ops::{self, Buf, DeviceBatchStats, FusedAct, InputMap};
use crate::gpu::shapes::{ConvGeometry, WarpGeometry};
use crate::gpu::Gpu;
use crate::nn::network::{Network, StagePlan};
use crate::nn::ops::loss::LossKind;
use crate::nn::ops::sift::SIFT_DIM;
use crate::nn::ops::spatial_transformer::{crop, Affine};
use crate::nn::{HARDNET_DIM, L2_NORM_EPS, PATCH_LEN, PATCH_SIZE};
use crate::train::chain::hardnet::FrozenHardNet;
use crate::train::chain::regions::{RegionStage, RegionTerms};
use crate::train::chain::{
    affnet_side_seed, descriptor_side_seed, Descriptor, PairBatch, StepStats, StepTimes, TrainChain,
};
use crate::train::TrainAffNet;
use crate::{Error, Result};

/// The device chain: the loss, shape terms and descriptor of a `TrainChain`.
pub struct DeviceTrainChain {
    pub loss: LossKind,
    pub terms: RegionTerms,
    regions: RegionStage,
    descriptor: DeviceDescriptor,
}

/// The descriptor of the descriptor patches.
enum DeviceDescriptor {
    Sift,
    /// A frozen HardNet: the host network gives the stage plan, the batch-norm `eps` and the
    /// input standardisation; its parameters go to the device at the first step and stay.
    HardNet {
        net: Box<Network>,
        plan: Vec<StagePlan>,
        params: Option<DeviceParams>,
    },
}

/// What the descriptor's forward pass keeps for its backward pass.
enum DescriptorCache {
    Sift(ops::SiftCache),
    HardNet {
        pass: NetPass,
        /// The network's output before the L2 normalisation.
        unnormalised: Buf,
    },
}

/// A network's parameters and running statistics on the device and, for a trained network,
/// its accumulated gradients.
struct DeviceParams {
    /// Per stage: GEMM-layout weights, bias, and the running (mean, var) of its batch norm.
    weights: Vec<Buf>,
    bias: Vec<Option<Buf>>,
    running: Vec<Option<(Buf, Buf)>>,
    /// Per stage: accumulated weight and bias gradients (both sides), GEMM layout; empty for a
    /// frozen network.
    grad_w: Vec<Buf>,
    grad_b: Vec<Option<Buf>>,
}

impl DeviceParams {
    fn trainable(&self) -> bool {
        !self.grad_w.is_empty()
    }
}

/// What one training-mode pass of a network keeps for its backward pass.
struct NetPass {
    /// Items in the batch.
    n: usize,
    /// Per stage, what its convolution read (the standardised input, or the dropped input) when
    /// that is not the previous stage's output read through its batch norm and ReLU.
    inputs: Vec<Option<Buf>>,
    /// Per stage, its convolution output (after tanh for a tanh stage).
    z: Vec<Buf>,
    stats: Vec<Option<DeviceBatchStats>>,
    /// The pass's training-mode seed (`Network::dropout_seed` gives each stage's mask seed).
    seed: u64,
}

/// One side of the batch (anchors or positives).
struct DeviceSide {
    affnet: NetPass,
    raw: Vec<f32>,
    source: Buf,
    theta: Option<Buf>,
    patches: Option<Buf>,
    descriptors: Option<Buf>,
    descriptor_cache: Option<DescriptorCache>,
}

impl DeviceTrainChain {
    /// The device version of `chain` (its loss, shape terms and descriptor). Fails with one
    /// line for a descriptor network the device does not run.
    pub fn new(chain: &TrainChain) -> Result<Self> {
        let descriptor = match &chain.descriptor {
            Descriptor::Sift(_) => DeviceDescriptor::Sift,
            Descriptor::HardNet(h) => DeviceDescriptor::hardnet(h)?,
        };
        Ok(DeviceTrainChain {
            loss: chain.loss,
            terms: chain.region_terms(),
            regions: RegionStage::default(),
            descriptor,
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
        let mut times = StepTimes::default();
        let mut clock = Instant::now();
        let mut lap = |acc: &mut f64| {
            *acc += clock.elapsed().as_secs_f64();
            clock = Instant::now();
        };

        let mut params = upload_params(gpu, net, &plan, true)?;
        let sources = [batch.anchors, batch.positives];
        let frames = [batch.anchor_frames, batch.positive_frames];
        let mut sides = Vec::with_capacity(2);
        for k in 0..2 {
            let source = gpu.upload(sources[k])?;
            let x0 = affnet_input(gpu, net, &source, s, frames[k])?;
            let pass = forward_stages(gpu, net, &plan, &mut params, x0, affnet_side_seed(seed, k))?;
            let raw = gpu.download(pass.z.last().expect("checked: at least one stage"))?;
            sides.push(DeviceSide {
                affnet: pass,
                raw,
                source,
                theta: None,
                patches: None,
                descriptors: None,
                descriptor_cache: None,
            });
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
        let dim = self.descriptor.dim();
        for (k, side) in sides.iter_mut().enumerate() {
            let theta = gpu.upload(&flatten(&self.regions.theta[k]))?;
            let mut patches = gpu.zeros::<f32>(wg.out_len())?;
            ops::warp_forward(gpu, &wg, &side.source, &theta, &mut patches)?;
            lap(&mut times.warp_forward);
            let mut desc = gpu.zeros::<f32>(n * dim)?;
            let seed = descriptor_side_seed(seed, k);
            side.descriptor_cache = Some(self.descriptor.forward(gpu, &patches, seed, &mut desc)?);
            (side.theta, side.patches, side.descriptors) = (Some(theta), Some(patches), Some(desc));
            lap(&mut times.descriptor_forward);
        }
        let (mut ga, mut gp) = if want_grads {
            (
                Some(gpu.zeros::<f32>(n * dim)?),
                Some(gpu.zeros::<f32>(n * dim)?),
            )
        } else {
            (None, None)
        };
        let mut loss = ops::descriptor_loss(
            gpu,
            self.loss,
            sides[0].descriptors.as_ref().expect("set above"),
            sides[1].descriptors.as_ref().expect("set above"),
            dim,
            ga.as_mut(),
            gp.as_mut(),
        )?;
        loss.loss += region_stats.extra_loss;
        lap(&mut times.loss);

        if let (Some(grads), Some(ga), Some(gp)) = (grads, ga, gp) {
            for (k, (side, d_desc)) in sides.iter().zip([ga, gp]).enumerate() {
                let patches = side.patches.as_ref().expect("set above");
                let cache = side.descriptor_cache.as_ref().expect("set above");
                let d_patches = self.descriptor.backward(gpu, patches, cache, &d_desc)?;
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
                let d_raw = gpu.upload(&d_raw)?;
                backward_stages(gpu, &plan, &mut params, &side.affnet, d_raw, false)?;
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

impl DeviceDescriptor {
    /// A frozen HardNet whose plan the device runs (its weights are uploaded at first use).
    fn hardnet(h: &FrozenHardNet) -> Result<Self> {
        let net = h.network().clone();
        let plan = check_plan(&net)?;
        Ok(DeviceDescriptor::HardNet {
            net: Box::new(net),
            plan,
            params: None,
        })
    }

    fn dim(&self) -> usize {
        match self {
            DeviceDescriptor::Sift => SIFT_DIM,
            DeviceDescriptor::HardNet { .. } => HARDNET_DIM,
        }
    }

    /// Descriptors of `patches` (`N × 32 × 32`) into `out` (`N × dim`); `seed` is the side's
    /// training-mode seed (`descriptor_side_seed`).
    fn forward(
        &mut self,
        gpu: &Gpu,
        patches: &Buf,
        seed: u64,
        out: &mut Buf,
    ) -> Result<DescriptorCache> {
        match self {
            DeviceDescriptor::Sift => Ok(DescriptorCache::Sift(ops::sift_forward(
                gpu, patches, PATCH_SIZE, out,
            )?)),
            DeviceDescriptor::HardNet { net, plan, params } => {
                if params.is_none() {
                    *params = Some(upload_params(gpu, net, plan, false)?);
                }
                let params = params.as_mut().expect("uploaded above");
                let x0 = standardised(gpu, net, patches)?;
                let pass = forward_stages(gpu, net, plan, params, x0, seed)?;
                let unnormalised = output_view(gpu, plan, &pass)?;
                let eps = L2_NORM_EPS as f32;
                ops::l2_normalise(gpu, &unnormalised, HARDNET_DIM, eps, out)?;
                Ok(DescriptorCache::HardNet { pass, unnormalised })
            }
        }
    }

    /// `dL/dpatches` from `dL/ddescriptors` of the forward pass that made `cache`.
    fn backward(
        &mut self,
        gpu: &Gpu,
        patches: &Buf,
        cache: &DescriptorCache,
        d_desc: &Buf,
    ) -> Result<Buf> {
        let mut d_patches = gpu.zeros::<f32>(patches.len())?;
        match (self, cache) {
            (DeviceDescriptor::Sift, DescriptorCache::Sift(c)) => {
                ops::sift_backward(gpu, patches, PATCH_SIZE, c, d_desc, &mut d_patches)?
            }
            (
                DeviceDescriptor::HardNet { net, plan, params },
                DescriptorCache::HardNet { pass, unnormalised },
            ) => {
                let params = params.as_mut().expect("uploaded by the forward pass");
                let mut d_out = gpu.zeros::<f32>(d_desc.len())?;
                let eps = L2_NORM_EPS as f32;
                ops::l2_normalise_backward(
                    gpu,
                    unnormalised,
                    d_desc,
                    HARDNET_DIM,
                    eps,
                    &mut d_out,
                )?;
                let d_x0 = backward_stages(gpu, plan, params, pass, d_out, true)?
                    .expect("asked for the input gradient");
                if net.standardise_input {
                    let eps = net.input_eps;
                    ops::standardise_backward(gpu, patches, &d_x0, PATCH_LEN, eps, &mut d_patches)?;
                } else {
                    d_patches = d_x0;
                }
            }
            _ => unreachable!("a descriptor cache comes from the same descriptor's forward pass"),
        }
        Ok(d_patches)
    }
}

/// The device chain's frozen-HardNet descriptor on its own, for `wbs gpu-check`: descriptors of
/// `patches` in training mode with `seed`, and `dL/dpatches` from `d_desc`.
pub fn hardnet_descriptor_pass(
    gpu: &Gpu,
    hardnet: &FrozenHardNet,
    patches: &[f32],
    seed: u64,
    d_desc: &[f32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut descriptor = DeviceDescriptor::hardnet(hardnet)?;
    let patches = gpu.upload(patches)?;
    let mut desc = gpu.zeros::<f32>(d_desc.len())?;
    let cache = descriptor.forward(gpu, &patches, seed, &mut desc)?;
    let d_patches = descriptor.backward(gpu, &patches, &cache, &gpu.upload(d_desc)?)?;
    Ok((gpu.download(&desc)?, gpu.download(&d_patches)?))
}

/// The network's stages, checked to be what the device runs: hidden stages with batch norm and
/// ReLU; a last stage with tanh, batch norm (HardNet) or neither, and no ReLU; no dropout before
/// the first stage; no pooling of more than one position; 32×32 inputs.
fn check_plan(net: &Network) -> Result<Vec<StagePlan>> {
    if net.input_size() != (PATCH_SIZE, PATCH_SIZE) {
        return Err(Error::invalid(format!(
            "gpu train chain: {} takes {:?} inputs, the chain's patches are {PATCH_SIZE}×{PATCH_SIZE}",
            net.kind(),
            net.input_size()
        )));
    }
    let plan = net.stage_plan();
    let last = plan
        .len()
        .checked_sub(1)
        .ok_or_else(|| Error::invalid("gpu train chain: the network has no stages"))?;
    for (i, st) in plan.iter().enumerate() {
        let supported = if i < last {
            st.batch_norm.is_some() && st.relu
        } else {
            // tanh (AffNet), batch norm (HardNet) or neither; never a ReLU.
            let tanh_after_bn = st.tanh && st.batch_norm.is_some();
            !st.relu && !tanh_after_bn
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

/// The network's parameters on the device, with zeroed gradient accumulators when `trainable`.
fn upload_params(
    gpu: &Gpu,
    net: &Network,
    plan: &[StagePlan],
    trainable: bool,
) -> Result<DeviceParams> {
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
        d.bias
            .push(st.bias.clone().map(|b| gpu.upload(&p[b])).transpose()?);
        if trainable {
            d.grad_w.push(gpu.zeros::<f32>(gemm.len())?);
            d.grad_b.push(
                st.bias
                    .as_ref()
                    .map(|b| gpu.zeros::<f32>(b.len()))
                    .transpose()?,
            );
        }
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

/// AffNet's input: the sources warped through the (cropped) augmentation frames, standardised.
fn affnet_input(
    gpu: &Gpu,
    net: &Network,
    source: &Buf,
    s: usize,
    frames: &[Affine],
) -> Result<Buf> {
    let n = frames.len();
    let wg = WarpGeometry::new(n, s, s, PATCH_SIZE, PATCH_SIZE)?;
    let scale = PATCH_SIZE as f32 / s as f32;
    let theta_in: Vec<Affine> = frames.iter().map(|f| crop(f, scale)).collect();
    let mut warped = gpu.zeros::<f32>(wg.out_len())?;
    ops::warp_forward(
        gpu,
        &wg,
        source,
        &gpu.upload(&flatten(&theta_in))?,
        &mut warped,
    )?;
    standardised(gpu, net, &warped)
}

/// The network's first-stage input: `x` standardised per item when the network does that.
fn standardised(gpu: &Gpu, net: &Network, x: &Buf) -> Result<Buf> {
    let mut x0 = gpu.zeros::<f32>(x.len())?;
    if net.standardise_input {
        ops::standardise(gpu, x, PATCH_LEN, net.input_eps, &mut x0)?;
    } else {
        ops::axpy(gpu, 1.0, x, &mut x0)?;
    }
    Ok(x0)
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

/// A training-mode forward pass of a network (a checked plan) from its first-stage input `x0`
/// (`N × 32 × 32`): batch statistics, running statistics updated when the network does that,
/// dropout with the masks of `Network::dropout_seed(seed, stage)`.
fn forward_stages(
    gpu: &Gpu,
    net: &Network,
    plan: &[StagePlan],
    params: &mut DeviceParams,
    x0: Buf,
    seed: u64,
) -> Result<NetPass> {
    let n = x0.len() / PATCH_LEN;
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
        let act = if st.tanh {
            FusedAct::Tanh
        } else {
            FusedAct::None
        };
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
    Ok(NetPass {
        n,
        inputs,
        z,
        stats,
        seed,
    })
}

/// The network's output as its consumers read it: the last stage's convolution output through
/// its batch norm when it has one (HardNet), else as stored (after tanh for AffNet).
fn output_view(gpu: &Gpu, plan: &[StagePlan], pass: &NetPass) -> Result<Buf> {
    let last = plan.len() - 1;
    let z = &pass.z[last];
    let mut out = gpu.zeros::<f32>(z.len())?;
    match &pass.stats[last] {
        Some(st) => ops::bn_normalise(gpu, z, &st.mean, &st.inv_std, false, &mut out)?,
        None => ops::axpy(gpu, 1.0, z, &mut out)?,
    }
    Ok(out)
}

/// Backward of a pass from `d_out`, the gradient w.r.t. the network's output view
/// ([`output_view`]). A trainable network's weight and bias gradients are added into `params`;
/// with `input_grad`, returns the gradient w.r.t. the first-stage input `x0`.
fn backward_stages(
    gpu: &Gpu,
    plan: &[StagePlan],
    params: &mut DeviceParams,
    pass: &NetPass,
    d_out: Buf,
    input_grad: bool,
) -> Result<Option<Buf>> {
    let n = pass.n;
    let last = plan.len() - 1;
    let mut d = d_out;
    // Through the last stage's output view to its convolution output.
    if plan[last].tanh {
        let mut dt = gpu.zeros::<f32>(d.len())?;
        ops::activation_backward(gpu, ops::Activation::Tanh, &d, &pass.z[last], &mut dt)?;
        d = dt;
    }
    if let Some(st) = &pass.stats[last] {
        let mut dz = gpu.zeros::<f32>(d.len())?;
        ops::bn_backward_train(gpu, &pass.z[last], &d, st, false, &mut dz)?;
        d = dz;
    }
    for i in (0..=last).rev() {
        let st = &plan[i];
        let g = geometry(n, st)?;
        let (x, map) = match &pass.inputs[i] {
            Some(x) => (x, InputMap::default()),
            None => (&pass.z[i - 1], read_map(&pass.stats, i)),
        };
        if params.trainable() {
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
        }
        if i == 0 && !input_grad {
            return Ok(None);
        }
        let mut d_in = gpu.zeros::<f32>(g.in_len())?;
        ops::conv2d_backward_input(gpu, &g, &d, &params.weights[i], &mut d_in)?;
        if i == 0 {
            return Ok(Some(d_in));
        }
        // d w.r.t. what the convolution read, back through dropout to relu(bn(z_{i−1})), then
        // through the ReLU and batch norm to z_{i−1}.
        if let Some(p) = st.dropout {
            ops::dropout_backward(gpu, &mut d_in, p, Network::dropout_seed(pass.seed, i))?;
        }
        let prev = pass.stats[i - 1]
            .as_ref()
            .expect("checked: hidden stages have batch norm");
        let mut dz = gpu.zeros::<f32>(g.in_len())?;
        ops::bn_backward_train(gpu, &pass.z[i - 1], &d_in, prev, true, &mut dz)?;
        d = dz;
    }
    unreachable!("the loop returns at stage 0")
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
    use crate::nn::network::standardise_moments;
    use crate::nn::ops::batchnorm::{backward_train, batch_statistics};
    use crate::nn::ops::loss::{descriptor_loss, LossGrads, LossWorkspace};
    use crate::nn::ops::sift::{DiffSift, SiftCache};
    use crate::nn::ops::spatial_transformer::{warp_backward, warp_forward, WarpSize};
    use crate::nn::ops::{
        conv2d_backward, conv2d_forward, dropout_backward, dropout_forward, BatchStats, ConvGrads,
        ConvInput, InputMap as CpuMap,
    };
    use crate::nn::parity::two_norm_error;
    use crate::nn::{normalise_patch, random_weights, NetworkKind};
    use crate::train::chain::hardnet::{l2_normalise_rows, l2_normalise_rows_backward};
    use crate::train::{synthetic_pairs, SyntheticBatch};

    /// One network pass as `forward_stages` runs it (per stage: the own input at stage 0 or
    /// after dropout, else the previous output read through its batch norm and ReLU), with the
    /// CPU's NHWC layers in place of the kernels.
    struct EmulatedPass {
        inputs: Vec<Option<Vec<f32>>>,
        z: Vec<Vec<f32>>,
        stats: Vec<Option<BatchStats>>,
        seed: u64,
    }

    impl EmulatedPass {
        /// What stage `i`'s convolution reads, as `forward_stages`/`backward_stages` choose it.
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

        /// `output_view`: the last stage through its batch norm, if any.
        fn output(&self) -> Vec<f32> {
            let z = self.z.last().unwrap();
            match self.stats.last().unwrap() {
                Some(st) => {
                    let c = st.mean.len();
                    z.iter()
                        .enumerate()
                        .map(|(i, v)| (v - st.mean[i % c]) * st.inv_std[i % c])
                        .collect()
                }
                None => z.clone(),
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

    /// The first-stage input of a network: per-patch standardisation when it does that.
    fn standardised_input(net: &Network, x: &[f32]) -> Vec<f32> {
        if !net.standardise_input {
            return x.to_vec();
        }
        x.chunks(PATCH_LEN)
            .flat_map(|p| normalise_patch(p, net.input_eps))
            .collect()
    }

    fn emulate_forward(net: &mut Network, x0: Vec<f32>, seed: u64) -> EmulatedPass {
        let plan = check_plan(net).unwrap();
        let n = x0.len() / PATCH_LEN;
        let params = net.params().to_vec();
        let mut pass = EmulatedPass {
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
                    let prev = &pass.z[i - 1];
                    let mut dropped = vec![0.0; prev.len()];
                    let map = cpu_map(&pass.stats, i);
                    let ds = Network::dropout_seed(seed, i);
                    dropout_forward(prev, p, ds, map, st.conv.cin, &mut dropped);
                    Some(dropped)
                }
                None => None,
            };
            pass.inputs.push(own);
            let input = pass.conv_input(i, st, n);
            let mut y = vec![0.0; n * st.oh * st.ow * st.conv.cout];
            let bias = st.bias.clone().map(|b| &params[b]);
            conv2d_forward(&st.conv, &input, &gemm(st, &params), bias, &mut y, None);
            if st.tanh {
                y.iter_mut().for_each(|v| *v = v.tanh());
            }
            let update = net.update_running_stats;
            let stats = st.batch_norm.map(|j| {
                let bn = &mut net.batch_norms_mut()[j];
                let mut s = BatchStats::default();
                batch_statistics(&y, st.conv.cout, bn.eps, &mut s);
                if update {
                    bn.update_running(&s);
                }
                s
            });
            pass.stats.push(stats);
            pass.z.push(y);
        }
        pass
    }

    /// `backward_stages`' sequence with the CPU layers from the gradient w.r.t. the output
    /// view: adds PyTorch-layout parameter gradients into `grads` when given, and returns the
    /// gradient w.r.t. the first-stage input.
    fn emulate_backward(
        net: &Network,
        pass: &EmulatedPass,
        d_out: &[f32],
        mut grads: Option<&mut [f32]>,
    ) -> Vec<f32> {
        let plan = check_plan(net).unwrap();
        let params = net.params();
        let last = plan.len() - 1;
        let n = d_out.len() / (plan[last].oh * plan[last].ow * plan[last].conv.cout);
        let mut d = d_out.to_vec();
        if plan[last].tanh {
            for (d, y) in d.iter_mut().zip(&pass.z[last]) {
                *d *= 1.0 - y * y;
            }
        }
        if let Some(st) = &pass.stats[last] {
            backward_train(&pass.z[last], &mut d, st, false);
        }
        for i in (0..=last).rev() {
            let st = &plan[i];
            let input = pass.conv_input(i, st, n);
            let mut dw = vec![0.0; st.conv.weight_len()];
            let mut db = vec![0.0; st.conv.cout];
            let mut d_in = vec![0.0; input.data.len()];
            conv2d_backward(
                &st.conv,
                &input,
                &gemm(st, params),
                &d,
                ConvGrads {
                    input: Some(&mut d_in[..]),
                    weight: Some(&mut dw),
                    bias: st.bias.is_some().then_some(&mut db[..]),
                },
            );
            if let Some(grads) = grads.as_deref_mut() {
                st.conv
                    .add_to_torch_layout(&dw, &mut grads[st.weights.clone()]);
                if let Some(range) = st.bias.clone() {
                    grads[range].iter_mut().zip(&db).for_each(|(g, v)| *g += v);
                }
            }
            if i == 0 {
                return d_in;
            }
            if let Some(p) = st.dropout {
                dropout_backward(&mut d_in, p, Network::dropout_seed(pass.seed, i));
            }
            backward_train(
                &pass.z[i - 1],
                &mut d_in,
                pass.stats[i - 1].as_ref().unwrap(),
                true,
            );
            d = d_in;
        }
        unreachable!()
    }

    /// The descriptor stage of the device chain with CPU layers: descriptors of `patches`, and
    /// a closure-free backward through [`EmulatedDescriptor::backward`].
    enum EmulatedDescriptor {
        Sift(DiffSift, SiftCache),
        HardNet {
            net: Box<Network>,
            pass: Option<EmulatedPass>,
            unnormalised: Vec<f32>,
        },
    }

    impl EmulatedDescriptor {
        fn new(d: &Descriptor) -> Self {
            match d {
                Descriptor::Sift(_) => {
                    EmulatedDescriptor::Sift(DiffSift::new(PATCH_SIZE), SiftCache::default())
                }
                Descriptor::HardNet(h) => EmulatedDescriptor::HardNet {
                    net: Box::new(h.network().clone()),
                    pass: None,
                    unnormalised: Vec::new(),
                },
            }
        }

        fn forward(&mut self, patches: &[f32], seed: u64) -> Vec<f32> {
            let n = patches.len() / PATCH_LEN;
            match self {
                EmulatedDescriptor::Sift(sift, cache) => {
                    let mut desc = vec![0.0; n * SIFT_DIM];
                    sift.forward(patches, &mut desc, cache);
                    desc
                }
                EmulatedDescriptor::HardNet {
                    net,
                    pass,
                    unnormalised,
                } => {
                    let x0 = standardised_input(net, patches);
                    let p = emulate_forward(net, x0, seed);
                    *unnormalised = p.output();
                    *pass = Some(p);
                    let mut desc = vec![0.0; unnormalised.len()];
                    l2_normalise_rows(unnormalised, &mut desc);
                    desc
                }
            }
        }

        fn backward(&self, patches: &[f32], d_desc: &[f32]) -> Vec<f32> {
            let mut d_patches = vec![0.0; patches.len()];
            match self {
                EmulatedDescriptor::Sift(sift, cache) => {
                    sift.backward(patches, cache, d_desc, &mut d_patches)
                }
                EmulatedDescriptor::HardNet {
                    net,
                    pass,
                    unnormalised,
                } => {
                    let mut d_out = vec![0.0; d_desc.len()];
                    l2_normalise_rows_backward(unnormalised, d_desc, &mut d_out);
                    let d_x0 = emulate_backward(net, pass.as_ref().unwrap(), &d_out, None);
                    for ((dp, g), p) in d_patches
                        .chunks_mut(PATCH_LEN)
                        .zip(d_x0.chunks(PATCH_LEN))
                        .zip(patches.chunks(PATCH_LEN))
                    {
                        let k = if net.standardise_input {
                            standardise_moments(p, net.input_eps).1 as f32
                        } else {
                            1.0
                        };
                        dp.iter_mut().zip(g).for_each(|(d, g)| *d = g * k);
                    }
                }
            }
            d_patches
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
            let mut warped = vec![0.0; n * PATCH_LEN];
            warp_forward(sources[k], &theta_in, size, &mut warped);
            let x0 = standardised_input(model.network(), &warped);
            sides.push(emulate_forward(
                model.network_mut(),
                x0,
                affnet_side_seed(seed, k),
            ));
        }
        let raw: Vec<&[f32]> = sides.iter().map(|s| &s.z.last().unwrap()[..]).collect();
        let terms = chain.region_terms();
        let mut regions = RegionStage::default();
        let rs = regions.forward(&terms, frames, [raw[0], raw[1]], scale, true);
        let mut patches = vec![vec![0.0; n * PATCH_LEN]; 2];
        let mut desc = Vec::new();
        let mut descriptors = Vec::new();
        for k in 0..2 {
            warp_forward(sources[k], &regions.theta[k], size, &mut patches[k]);
            let mut d = EmulatedDescriptor::new(&chain.descriptor);
            desc.push(d.forward(&patches[k], descriptor_side_seed(seed, k)));
            descriptors.push(d);
        }
        let dim = chain.descriptor.dim();
        let (mut ga, mut gp) = (vec![0.0; n * dim], vec![0.0; n * dim]);
        let loss = descriptor_loss(
            chain.loss,
            &desc[0],
            &desc[1],
            dim,
            LossGrads {
                anchor: Some(&mut ga),
                positive: Some(&mut gp),
            },
            &mut LossWorkspace::default(),
        );
        for (k, d_desc) in [ga, gp].iter().enumerate() {
            let d_patches = descriptors[k].backward(&patches[k], d_desc);
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
            emulate_backward(model.network(), &sides[k], &d_raw, Some(grads));
        }
        loss.loss + rs.extra_loss
    }

    fn random_hardnet() -> FrozenHardNet {
        FrozenHardNet::from_weights(&random_weights(NetworkKind::HardNet, 1)).unwrap()
    }

    /// The device chain's recipe (stage plans, GEMM layouts, dropout seeds per side, network
    /// and stage, fused batch-norm reads, the frozen HardNet's batch norm, standardisation and
    /// L2 normalisation backward, region stage, gradient accumulation into PyTorch layout)
    /// gives the CPU chain's loss, gradients and running statistics, with either descriptor.
    /// Without a GPU this checks everything but the kernels, which `wbs gpu-check` compares one
    /// by one and as a step.
    #[test]
    fn emulated_device_step_matches_the_cpu_chain() {
        let data = SyntheticBatch::new(12, 3);
        let batch = data.batch();
        for descriptor in [Descriptor::sift(), Descriptor::hardnet(random_hardnet())] {
            let name = match descriptor {
                Descriptor::Sift(_) => "sift",
                Descriptor::HardNet(_) => "hardnet",
            };
            let mut chain = TrainChain::new(descriptor, LossKind::HardNegC);
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
                "{name}: {loss} vs {}",
                stats.loss.loss
            );
            let scale = g_cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0);
            match chain.descriptor {
                Descriptor::Sift(_) => {
                    for (a, b) in g_emu.iter().zip(&g_cpu) {
                        assert!((a - b).abs() <= 1e-4 * scale, "{name}: gradient {a} vs {b}");
                    }
                }
                // The descriptor-patch gradients agree at ~2e-6 (the next test), but HardNet's
                // alternate in sign from pixel to pixel, and their sums through the warp and
                // batch norm's backward cancel by orders of magnitude: the f32 rounding of two
                // summation orders reaches ~2e-3 of the gradients' norm here. A wrong recipe
                // (a mask, a missing normalisation backward) is off by far more.
                Descriptor::HardNet(_) => {
                    let e = two_norm_error(&g_emu, &g_cpu);

                    assert!(e <= 1e-2, "{name}: gradients differ by {e} of their norm");
                }
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
            // The dropout masks matter: another step seed changes the gradients.
            let mut g_other = vec![0.0; g_cpu.len()];
            let mut other = TrainAffNet::new(5);
            emulate_step(&chain, &mut other, &batch, 78, &mut g_other);
            assert!(two_norm_error(&g_other, &g_cpu) > 0.1, "{name}");
        }
    }

    /// The frozen HardNet's own dropout masks matter: a different descriptor seed (AffNet's
    /// masks unchanged) changes the loss.
    #[test]
    fn hardnet_dropout_masks_follow_the_descriptor_seed() {
        let patches: Vec<f32> = synthetic_pairs(8, 32, 1.0, 9).0;
        let mut d = EmulatedDescriptor::new(&Descriptor::hardnet(random_hardnet()));
        let a = d.forward(&patches, descriptor_side_seed(3, 0));
        let b = d.forward(&patches, descriptor_side_seed(3, 1));
        assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-4));
    }

    #[test]
    fn both_descriptors_have_a_device_chain() {
        for descriptor in [Descriptor::sift(), Descriptor::hardnet(random_hardnet())] {
            let dim = descriptor.dim();
            let chain =
                DeviceTrainChain::new(&TrainChain::new(descriptor, LossKind::PosDist)).unwrap();
            assert_eq!(chain.descriptor.dim(), dim);
        }
    }

    #[test]
    fn affnet_and_hardnet_plans_are_ones_the_device_runs() {
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

        let hardnet = random_hardnet();
        let plan = check_plan(hardnet.network()).unwrap();
        let last = plan.last().unwrap();
        assert!(last.batch_norm.is_some() && !last.relu && !last.tanh);
        assert_eq!(last.dropout, Some(0.1));
        assert_eq!(last.oh * last.ow * last.conv.cout, HARDNET_DIM);

        // Another input size is refused with one line.
        let wide = Network::new(NetworkKind::AffNet, 48, 48);
        let e = check_plan(&wide).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("48") && !e.contains('\n'), "{e}");
    }

    /// The device recipe's HardNet descriptor (stage plan, batch statistics, dropout seeds,
    /// standardisation and L2-normalisation backward) against `FrozenHardNet` on the same
    /// patches and descriptor gradients.
    #[test]
    fn emulated_hardnet_descriptor_matches_the_frozen_hardnet() {
        let patches: Vec<f32> = synthetic_pairs(12, 32, 1.0, 9).0;
        let mut h = random_hardnet();
        let mut cache = crate::train::chain::hardnet::HardNetCache::default();
        let mut out = vec![0.0; 12 * HARDNET_DIM];
        let seed = descriptor_side_seed(3, 0);
        h.forward(
            &patches,
            crate::train::Mode::Train { seed },
            &mut cache,
            &mut out,
        );
        let mut emulated = EmulatedDescriptor::new(&Descriptor::hardnet(h.clone()));
        let desc = emulated.forward(&patches, seed);
        assert!(two_norm_error(&desc, &out) < 1e-5);
        let d_desc = crate::nn::gradcheck::random_vec(out.len(), 5, 1.0);
        let mut d_patches = vec![0.0; patches.len()];
        h.backward(&mut cache, &d_desc, &mut d_patches);
        let e = two_norm_error(&emulated.backward(&patches, &d_desc), &d_patches);
        assert!(e < 1e-5, "{e}");
    }
}
