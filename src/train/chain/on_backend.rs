//! The training chain over a [`Backend`]: what `wbs train affnet --device cuda` runs per batch
//! (on [`crate::gpu::backend::Cuda`]), written once over the backend's ops and checked on the
//! [`crate::nn::backend::Cpu`] backend against [`TrainChain`] (read its module docs for the
//! chain itself). The interface is `TrainChain`'s, so the trainer, its optimiser, checkpoints
//! and resume are shared: [`BackendTrainChain::step`] takes the host model, *adds* `dL/dθ`
//! (PyTorch layout) into the caller's gradient vector and updates the model's batch-norm running
//! statistics, as `TrainChain::step` does; the caller runs `train::Sgd` on the host.
//!
//! Per step: the weights (about 85 k floats) and running statistics are uploaded, and the
//! gradients and new running statistics downloaded; each side's raw outputs (`N × 3`) come to the
//! host and the descriptor patches' maps `θ` (`N × 6`) go back, because the shape, the
//! composition with the augmentation frame and the optional shape terms run on the host in
//! [`super::regions`] for both chains. The same numbers as the CPU chain, then, up to f32
//! summation order:
//! - AffNet in training mode ([`crate::nn::net_pass`]): batch statistics (running statistics
//!   updated), dropout 0.25 before the head with the CPU's masks (the same hash of the same
//!   seeds);
//! - input warp, descriptor-patch warp and their backward: the spatial-transformer ops;
//! - the descriptor: differentiable SIFT, or a frozen HardNet (batch statistics, dropout 0.1 with
//!   the CPU's masks, input standardisation and L2 normalisation, backward to the patches only;
//!   its weights are uploaded once, at the first step);
//! - the loss (`hardnegc`, `hardneg`, `posdist`) and its backward.
//!
//! `wbs gpu-check` and `tests/device_parity.rs` compare a step of this chain with
//! `TrainChain::step` (loss, gradients, running statistics) on batches with every option on,
//! with either descriptor, on every backend present.

use std::time::Instant;

use crate::nn::backend::{Backend, WarpGeometry};
use crate::nn::net_pass::{self, NetParams, NetPass};
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

/// The chain over a backend whose buffers are `T`: the loss, shape terms and descriptor of a
/// [`TrainChain`].
pub struct BackendTrainChain<T> {
    /// The descriptor loss.
    pub loss: LossKind,
    /// The shape terms (`TrainChain::region_terms`).
    pub terms: RegionTerms,
    regions: RegionStage,
    descriptor: BackendDescriptor<T>,
}

/// The descriptor of the descriptor patches.
enum BackendDescriptor<T> {
    Sift,
    /// A frozen HardNet: the host network gives the stage plan, the batch-norm `eps` and the
    /// input standardisation; its parameters go to the backend at the first step and stay.
    HardNet {
        net: Box<Network>,
        plan: Vec<StagePlan>,
        params: Option<NetParams<T>>,
    },
}

/// What the descriptor's forward pass keeps for its backward pass.
enum DescriptorCache<B: Backend> {
    Sift(B::SiftCache),
    HardNet {
        pass: NetPass<B::Buf>,
        /// The network's output before the L2 normalisation.
        unnormalised: B::Buf,
    },
}

/// One side of the batch (anchors or positives).
struct Side<B: Backend> {
    affnet: NetPass<B::Buf>,
    raw: Vec<f32>,
    source: B::Buf,
    theta: B::Buf,
    patches: B::Buf,
    descriptors: B::Buf,
    descriptor_cache: DescriptorCache<B>,
}

impl<T> BackendTrainChain<T> {
    /// The backend version of `chain` (its loss, shape terms and descriptor). Fails with one
    /// line for a descriptor network the backend chain does not run.
    pub fn new(chain: &TrainChain) -> Result<Self> {
        let descriptor = match &chain.descriptor {
            Descriptor::Sift(_) => BackendDescriptor::Sift,
            Descriptor::HardNet(h) => BackendDescriptor::hardnet(h)?,
        };
        Ok(BackendTrainChain {
            loss: chain.loss,
            terms: chain.region_terms(),
            regions: RegionStage::default(),
            descriptor,
        })
    }

    /// Forward and backward of one step on `b`, as `TrainChain::step`: returns the statistics,
    /// *adds* `dL/dθ` to `grads` (the layout of `model.params()`) and updates the model's running
    /// statistics. `seed` fixes the dropout masks exactly as on the CPU.
    pub fn step<B: Backend<Buf = T>>(
        &mut self,
        b: &B,
        model: &mut TrainAffNet,
        batch: &PairBatch,
        seed: u64,
        grads: &mut [f32],
    ) -> Result<StepStats> {
        if grads.len() != model.params().len() {
            return Err(Error::invalid("train step: gradient length"));
        }
        self.run(b, model, batch, seed, Some(grads))
    }

    /// The loss without backward (same randomness as [`step`](Self::step)); running statistics
    /// are updated as in a step, as `TrainChain::loss`.
    pub fn loss<B: Backend<Buf = T>>(
        &mut self,
        b: &B,
        model: &mut TrainAffNet,
        batch: &PairBatch,
        seed: u64,
    ) -> Result<StepStats> {
        self.run(b, model, batch, seed, None)
    }

    fn run<B: Backend<Buf = T>>(
        &mut self,
        b: &B,
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
        let plan = net_pass::plan(net)?;
        let mut times = StepTimes::default();
        let mut clock = Instant::now();
        let mut lap = |acc: &mut f64| {
            *acc += clock.elapsed().as_secs_f64();
            clock = Instant::now();
        };

        let mut params = NetParams::upload(b, net, &plan, true)?;
        let sources = [batch.anchors, batch.positives];
        let frames = [batch.anchor_frames, batch.positive_frames];
        let mut passes = Vec::with_capacity(2);
        for k in 0..2 {
            let source = b.upload(sources[k])?;
            let x0 = affnet_input(b, net, &source, s, frames[k])?;
            lap(&mut times.augment);
            let seed = affnet_side_seed(seed, k);
            let pass = net_pass::forward(b, net, &plan, &mut params, x0, seed)?;
            let raw = b.download(pass.last_stored())?;
            passes.push((pass, raw, source));
            lap(&mut times.affnet_forward);
        }

        let want_grads = grads.is_some();
        let region_stats = self.regions.forward(
            &self.terms,
            frames,
            [&passes[0].1, &passes[1].1],
            scale,
            want_grads,
        );
        lap(&mut times.warp_forward);
        let wg = WarpGeometry::new(n, s, s, PATCH_SIZE, PATCH_SIZE)?;
        let dim = self.descriptor.dim();
        let mut sides: Vec<Side<B>> = Vec::with_capacity(2);
        for (k, (affnet, raw, source)) in passes.into_iter().enumerate() {
            let theta = b.upload(&flatten(&self.regions.theta[k]))?;
            let mut patches = b.zeros(wg.out_len())?;
            b.warp_forward(&wg, &source, &theta, &mut patches)?;
            lap(&mut times.warp_forward);
            let mut descriptors = b.zeros(n * dim)?;
            let seed = descriptor_side_seed(seed, k);
            let descriptor_cache = self
                .descriptor
                .forward(b, &patches, seed, &mut descriptors)?;
            sides.push(Side {
                affnet,
                raw,
                source,
                theta,
                patches,
                descriptors,
                descriptor_cache,
            });
            lap(&mut times.descriptor_forward);
        }
        let (mut ga, mut gp) = if want_grads {
            (Some(b.zeros(n * dim)?), Some(b.zeros(n * dim)?))
        } else {
            (None, None)
        };
        let mut loss = b.descriptor_loss(
            self.loss,
            &sides[0].descriptors,
            &sides[1].descriptors,
            dim,
            ga.as_mut(),
            gp.as_mut(),
        )?;
        loss.loss += region_stats.extra_loss;
        lap(&mut times.loss);

        if let (Some(grads), Some(ga), Some(gp)) = (grads, ga, gp) {
            for (k, (side, d_desc)) in sides.iter().zip([ga, gp]).enumerate() {
                let d_patches =
                    self.descriptor
                        .backward(b, &side.patches, &side.descriptor_cache, &d_desc)?;
                lap(&mut times.descriptor_backward);
                let mut d_theta = b.zeros(6 * n)?;
                b.warp_backward(
                    &wg,
                    &side.source,
                    &side.theta,
                    &d_patches,
                    None,
                    &mut d_theta,
                )?;
                let d_theta = unflatten(&b.download(&d_theta)?);
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
                let d_raw = b.upload(&d_raw)?;
                net_pass::backward(b, &plan, &mut params, &side.affnet, d_raw, false)?;
                lap(&mut times.affnet_backward);
            }
            params.add_grads(b, net, &plan, grads)?;
            lap(&mut times.affnet_backward);
        }
        params.download_running(b, model.network_mut(), &plan)?;
        Ok(StepStats {
            loss,
            mean_anisotropy: region_stats.mean_anisotropy,
            mean_geom: region_stats.mean_geom,
            mean_source_anisotropy: region_stats.mean_source_anisotropy,
            times,
        })
    }
}

impl<T> BackendDescriptor<T> {
    /// A frozen HardNet whose plan the backend chain runs (its weights are uploaded at first use).
    fn hardnet(h: &FrozenHardNet) -> Result<Self> {
        let net = h.network().clone();
        let plan = net_pass::plan(&net)?;
        Ok(BackendDescriptor::HardNet {
            net: Box::new(net),
            plan,
            params: None,
        })
    }

    fn dim(&self) -> usize {
        match self {
            BackendDescriptor::Sift => SIFT_DIM,
            BackendDescriptor::HardNet { .. } => HARDNET_DIM,
        }
    }

    /// Descriptors of `patches` (`N × 32 × 32`) into `out` (`N × dim`); `seed` is the side's
    /// training-mode seed (`descriptor_side_seed`).
    fn forward<B: Backend<Buf = T>>(
        &mut self,
        b: &B,
        patches: &T,
        seed: u64,
        out: &mut T,
    ) -> Result<DescriptorCache<B>> {
        match self {
            BackendDescriptor::Sift => Ok(DescriptorCache::Sift(
                b.sift_forward(patches, PATCH_SIZE, out)?,
            )),
            BackendDescriptor::HardNet { net, plan, params } => {
                if params.is_none() {
                    *params = Some(NetParams::upload(b, net, plan, false)?);
                }
                let params = params.as_mut().expect("uploaded above");
                let x0 = net_pass::standardised(b, net, patches, PATCH_LEN)?;
                let pass = net_pass::forward(b, net, plan, params, x0, seed)?;
                let unnormalised = net_pass::output_view(b, &pass)?;
                let eps = L2_NORM_EPS as f32;
                b.l2_normalise(&unnormalised, HARDNET_DIM, eps, out)?;
                Ok(DescriptorCache::HardNet { pass, unnormalised })
            }
        }
    }

    /// `dL/dpatches` from `dL/ddescriptors` of the forward pass that made `cache`.
    fn backward<B: Backend<Buf = T>>(
        &mut self,
        b: &B,
        patches: &T,
        cache: &DescriptorCache<B>,
        d_desc: &T,
    ) -> Result<T> {
        let mut d_patches = b.zeros(b.len(patches))?;
        match (self, cache) {
            (BackendDescriptor::Sift, DescriptorCache::Sift(c)) => {
                b.sift_backward(patches, PATCH_SIZE, c, d_desc, &mut d_patches)?
            }
            (
                BackendDescriptor::HardNet { net, plan, params },
                DescriptorCache::HardNet { pass, unnormalised },
            ) => {
                let params = params.as_mut().expect("uploaded by the forward pass");
                let mut d_out = b.zeros(b.len(d_desc))?;
                let eps = L2_NORM_EPS as f32;
                b.l2_normalise_backward(unnormalised, d_desc, HARDNET_DIM, eps, &mut d_out)?;
                let d_x0 = net_pass::backward(b, plan, params, pass, d_out, true)?
                    .expect("asked for the input gradient");
                if net.standardise_input {
                    let eps = net.input_eps;
                    b.standardise_backward(patches, &d_x0, PATCH_LEN, eps, &mut d_patches)?;
                } else {
                    d_patches = d_x0;
                }
            }
            _ => unreachable!("a descriptor cache comes from the same descriptor's forward pass"),
        }
        Ok(d_patches)
    }
}

/// The backend chain's frozen-HardNet descriptor on its own, for the parity checks: descriptors
/// of `patches` in training mode with `seed`, and `dL/dpatches` from `d_desc`.
pub fn hardnet_descriptor_pass<B: Backend>(
    b: &B,
    hardnet: &FrozenHardNet,
    patches: &[f32],
    seed: u64,
    d_desc: &[f32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut descriptor = BackendDescriptor::<B::Buf>::hardnet(hardnet)?;
    let patches = b.upload(patches)?;
    let mut desc = b.zeros(d_desc.len())?;
    let cache = descriptor.forward(b, &patches, seed, &mut desc)?;
    let d_patches = descriptor.backward(b, &patches, &cache, &b.upload(d_desc)?)?;
    Ok((b.download(&desc)?, b.download(&d_patches)?))
}

/// AffNet's input: the sources warped through the (cropped) augmentation frames, standardised.
fn affnet_input<B: Backend>(
    b: &B,
    net: &Network,
    source: &B::Buf,
    s: usize,
    frames: &[Affine],
) -> Result<B::Buf> {
    let n = frames.len();
    let wg = WarpGeometry::new(n, s, s, PATCH_SIZE, PATCH_SIZE)?;
    let scale = PATCH_SIZE as f32 / s as f32;
    let theta_in: Vec<Affine> = frames.iter().map(|f| crop(f, scale)).collect();
    let mut warped = b.zeros(wg.out_len())?;
    b.warp_forward(&wg, source, &b.upload(&flatten(&theta_in))?, &mut warped)?;
    net_pass::standardised(b, net, &warped, PATCH_LEN)
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
    use crate::nn::backend::Cpu;
    use crate::nn::parity::two_norm_error;
    use crate::nn::{random_weights, NetworkKind};
    use crate::train::{synthetic_pairs, SyntheticBatch};

    fn random_hardnet() -> FrozenHardNet {
        FrozenHardNet::from_weights(&random_weights(NetworkKind::HardNet, 1)).unwrap()
    }

    /// The chain over the CPU backend (stage plans, GEMM layouts, dropout seeds per side, network
    /// and stage, fused batch-norm reads, the frozen HardNet's batch norm, standardisation and
    /// L2 normalisation backward, region stage, gradient accumulation into PyTorch layout) gives
    /// `TrainChain`'s loss, gradients and running statistics, with either descriptor. The same
    /// code runs on CUDA (`tests/device_parity.rs`, `wbs gpu-check`).
    #[test]
    fn cpu_backend_step_matches_the_cpu_chain() {
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
            let mut on_cpu = BackendTrainChain::new(&chain).unwrap();
            let mut cpu = TrainAffNet::new(5);
            let mut other = cpu.clone();
            let mut g_cpu = vec![0.0; cpu.params().len()];
            let mut g_other = g_cpu.clone();
            let stats = chain.step(&mut cpu, &batch, 77, &mut g_cpu);
            let got = on_cpu
                .step(&Cpu, &mut other, &batch, 77, &mut g_other)
                .unwrap();
            let (loss, want) = (got.loss.loss, stats.loss.loss);
            assert!(
                (loss - want).abs() <= 1e-5 * want.abs(),
                "{name}: {loss} vs {want}"
            );
            let scale = g_cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0);
            match chain.descriptor {
                Descriptor::Sift(_) => {
                    for (a, b) in g_other.iter().zip(&g_cpu) {
                        assert!((a - b).abs() <= 1e-4 * scale, "{name}: gradient {a} vs {b}");
                    }
                }
                // The descriptor-patch gradients agree at ~2e-6 (the next test), but HardNet's
                // alternate in sign from pixel to pixel, and their sums through the warp and
                // batch norm's backward cancel by orders of magnitude: the f32 rounding of two
                // summation orders reaches ~2e-3 of the gradients' norm here. A wrong recipe
                // (a mask, a missing normalisation backward) is off by far more.
                Descriptor::HardNet(_) => {
                    let e = two_norm_error(&g_other, &g_cpu);
                    assert!(e <= 1e-2, "{name}: gradients differ by {e} of their norm");
                }
            }
            for (a, b) in other
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
            let mut g_seed = vec![0.0; g_cpu.len()];
            let mut fresh = TrainAffNet::new(5);
            on_cpu
                .step(&Cpu, &mut fresh, &batch, 78, &mut g_seed)
                .unwrap();
            assert!(two_norm_error(&g_seed, &g_cpu) > 0.1, "{name}");
        }
    }

    /// The frozen HardNet's own dropout masks matter: a different descriptor seed (AffNet's
    /// masks unchanged) changes the descriptors.
    #[test]
    fn hardnet_dropout_masks_follow_the_descriptor_seed() {
        let patches: Vec<f32> = synthetic_pairs(8, 32, 1.0, 9).0;
        let h = random_hardnet();
        let d = vec![0.0; 8 * HARDNET_DIM];
        let a = hardnet_descriptor_pass(&Cpu, &h, &patches, descriptor_side_seed(3, 0), &d);
        let b = hardnet_descriptor_pass(&Cpu, &h, &patches, descriptor_side_seed(3, 1), &d);
        let (a, b) = (a.unwrap().0, b.unwrap().0);
        assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-4));
    }

    #[test]
    fn both_descriptors_have_a_backend_chain() {
        for descriptor in [Descriptor::sift(), Descriptor::hardnet(random_hardnet())] {
            let dim = descriptor.dim();
            let chain =
                BackendTrainChain::<Vec<f32>>::new(&TrainChain::new(descriptor, LossKind::PosDist))
                    .unwrap();
            assert_eq!(chain.descriptor.dim(), dim);
        }
    }

    #[test]
    fn hardnet_plan_is_one_the_backend_chain_runs() {
        let hardnet = random_hardnet();
        let plan = net_pass::plan(hardnet.network()).unwrap();
        let last = plan.last().unwrap();
        assert!(last.batch_norm.is_some() && !last.relu && !last.tanh);
        assert_eq!(last.dropout, Some(0.1));
        assert_eq!(last.oh * last.ow * last.conv.cout, HARDNET_DIM);
    }

    /// The backend chain's HardNet descriptor on the CPU (stage plan, batch statistics, dropout
    /// seeds, standardisation and L2-normalisation backward) against `FrozenHardNet` on the same
    /// patches and descriptor gradients.
    #[test]
    fn cpu_backend_hardnet_descriptor_matches_the_frozen_hardnet() {
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
        let d_desc = crate::nn::gradcheck::random_vec(out.len(), 5, 1.0);
        let mut d_patches = vec![0.0; patches.len()];
        h.backward(&mut cache, &d_desc, &mut d_patches);
        let (desc, d_p) = hardnet_descriptor_pass(&Cpu, &h, &patches, seed, &d_desc).unwrap();
        assert!(two_norm_error(&desc, &out) < 1e-5);
        let e = two_norm_error(&d_p, &d_patches);
        assert!(e < 1e-5, "{e}");
    }
}
