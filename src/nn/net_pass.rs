//! A [`Network`] run in training mode over any [`Backend`]: the stages of
//! [`Network::stage_plan`] as backend ops, forward (batch statistics, running statistics updated
//! when the network does that, dropout with the masks of [`Network::dropout_seed`]) and backward
//! (parameter gradients accumulated on the backend, and the gradient w.r.t. the first-stage
//! input when asked). The training chain over a backend (`train::chain::on_backend`) runs AffNet
//! and the frozen HardNet through it.
//!
//! Each stage's convolution reads the previous stage's raw output through that stage's batch
//! norm and ReLU ([`InputMap`]), or its own input: the network's first-stage input, or the
//! dropped values when the stage has dropout.

use crate::nn::backend::{Backend, ConvGeometry};
use crate::nn::fold::FusedAct;
use crate::nn::network::{Network, StagePlan};
use crate::nn::ops::{Activation, BatchStats, InputMap};
use crate::nn::PATCH_SIZE;
use crate::{Error, Result};

/// A network's parameters and running statistics on a backend and, for a trained network, its
/// accumulated gradients.
pub struct NetParams<T> {
    /// Per stage: GEMM-layout weights, bias, and the running (mean, var) of its batch norm.
    weights: Vec<T>,
    bias: Vec<Option<T>>,
    running: Vec<Option<(T, T)>>,
    /// Per stage: accumulated weight and bias gradients (GEMM layout); empty for a frozen
    /// network.
    grad_w: Vec<T>,
    grad_b: Vec<Option<T>>,
}

impl<T> NetParams<T> {
    /// `net`'s parameters and running statistics uploaded to `b` (weights in GEMM layout), with
    /// zeroed gradient accumulators when `trainable`.
    pub fn upload<B: Backend<Buf = T>>(
        b: &B,
        net: &Network,
        plan: &[StagePlan],
        trainable: bool,
    ) -> Result<Self> {
        let p = net.params();
        let bns = net.batch_norms();
        let mut d = NetParams {
            weights: Vec::new(),
            bias: Vec::new(),
            running: Vec::new(),
            grad_w: Vec::new(),
            grad_b: Vec::new(),
        };
        for st in plan {
            let mut gemm = vec![0.0; st.conv.weight_len()];
            st.conv.to_gemm_layout(&p[st.weights.clone()], &mut gemm);
            d.weights.push(b.upload(&gemm)?);
            d.bias
                .push(st.bias.clone().map(|r| b.upload(&p[r])).transpose()?);
            if trainable {
                d.grad_w.push(b.zeros(gemm.len())?);
                d.grad_b
                    .push(st.bias.as_ref().map(|r| b.zeros(r.len())).transpose()?);
            }
            d.running.push(
                st.batch_norm
                    .map(|j| -> Result<(T, T)> {
                        Ok((
                            b.upload(&bns[j].running_mean)?,
                            b.upload(&bns[j].running_var)?,
                        ))
                    })
                    .transpose()?,
            );
        }
        Ok(d)
    }

    fn trainable(&self) -> bool {
        !self.grad_w.is_empty()
    }

    /// Adds the accumulated gradients into `grads` (PyTorch layout, `net.params()`'s offsets).
    pub fn add_grads<B: Backend<Buf = T>>(
        &self,
        b: &B,
        net: &Network,
        plan: &[StagePlan],
        grads: &mut [f32],
    ) -> Result<()> {
        debug_assert_eq!(grads.len(), net.params().len());
        for (i, st) in plan.iter().enumerate() {
            let gw = b.download(&self.grad_w[i])?;
            st.conv
                .add_to_torch_layout(&gw, &mut grads[st.weights.clone()]);
            if let (Some(range), Some(gb)) = (st.bias.clone(), self.grad_b[i].as_ref()) {
                for (g, v) in grads[range].iter_mut().zip(b.download(gb)?) {
                    *g += v;
                }
            }
        }
        Ok(())
    }

    /// Copies the running statistics back into `net` (when it updates them).
    pub fn download_running<B: Backend<Buf = T>>(
        &self,
        b: &B,
        net: &mut Network,
        plan: &[StagePlan],
    ) -> Result<()> {
        if !net.update_running_stats {
            return Ok(());
        }
        for (st, running) in plan.iter().zip(&self.running) {
            if let (Some(j), Some((rm, rv))) = (st.batch_norm, running) {
                let bn = &mut net.batch_norms_mut()[j];
                bn.running_mean = b.download(rm)?;
                bn.running_var = b.download(rv)?;
            }
        }
        Ok(())
    }
}

/// What one training-mode pass of a network keeps for its backward pass.
pub struct NetPass<T> {
    /// Items in the batch.
    n: usize,
    /// Per stage, what its convolution read (the first-stage input, or the dropped input) when
    /// that is not the previous stage's output read through its batch norm and ReLU.
    inputs: Vec<Option<T>>,
    /// Per stage, its convolution output (after tanh for a tanh stage).
    z: Vec<T>,
    stats: Vec<Option<BatchStats<T>>>,
    /// The pass's training-mode seed (`Network::dropout_seed` gives each stage's mask seed).
    seed: u64,
}

impl<T> NetPass<T> {
    /// The last stage's stored output: AffNet's raw outputs (after tanh).
    pub fn last_stored(&self) -> &T {
        self.z.last().expect("checked: at least one stage")
    }
}

/// The network's stages, checked to be what [`forward`] runs: hidden stages with batch norm and
/// ReLU; a last stage with tanh, batch norm (HardNet) or neither, and no ReLU; no dropout before
/// the first stage; no pooling of more than one position; 32×32 inputs.
pub fn plan(net: &Network) -> Result<Vec<StagePlan>> {
    if net.input_size() != (PATCH_SIZE, PATCH_SIZE) {
        return Err(Error::invalid(format!(
            "train chain: {} takes {:?} inputs, the chain's patches are {PATCH_SIZE}×{PATCH_SIZE}",
            net.kind(),
            net.input_size()
        )));
    }
    let plan = net.stage_plan();
    let last = plan
        .len()
        .checked_sub(1)
        .ok_or_else(|| Error::invalid("train chain: the network has no stages"))?;
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
                "train chain: {} stage {i} is not one the backend chain runs",
                net.kind()
            )));
        }
    }
    if net.pooled() && plan[last].oh * plan[last].ow != 1 {
        return Err(Error::invalid(
            "train chain: pooling over more than one position is not run on a backend",
        ));
    }
    Ok(plan)
}

fn geometry(n: usize, st: &StagePlan) -> Result<ConvGeometry> {
    let c = &st.conv;
    ConvGeometry::new(n, st.h, st.w, c.cin, c.cout, c.k, c.stride, c.padding)
}

/// The network's first-stage input: `x` (items of `item` values) standardised per item when the
/// network does that.
pub fn standardised<B: Backend>(b: &B, net: &Network, x: &B::Buf, item: usize) -> Result<B::Buf> {
    let mut x0 = b.zeros(b.len(x))?;
    if net.standardise_input {
        b.standardise(x, item, net.input_eps, &mut x0)?;
    } else {
        b.axpy(1.0, x, &mut x0)?;
    }
    Ok(x0)
}

/// How stage `i` reads stage `i − 1`'s output: its batch norm and ReLU.
fn read_map<T>(stats: &[Option<BatchStats<T>>], i: usize) -> InputMap<'_, T> {
    match i.checked_sub(1).and_then(|j| stats[j].as_ref()) {
        Some(st) => InputMap {
            affine: Some((&st.mean, &st.inv_std)),
            relu: true,
        },
        None => InputMap::default(),
    }
}

/// A training-mode forward pass of `net` (stages `plan`, from [`plan`]) from its first-stage
/// input `x0` (`N` items): batch statistics, running statistics in `params` updated when the
/// network does that, dropout with the masks of `Network::dropout_seed(seed, stage)`.
pub fn forward<B: Backend>(
    b: &B,
    net: &Network,
    plan: &[StagePlan],
    params: &mut NetParams<B::Buf>,
    x0: B::Buf,
    seed: u64,
) -> Result<NetPass<B::Buf>> {
    let (h, w) = net.input_size();
    let n = b.len(&x0) / (h * w);
    let mut x0 = Some(x0);
    let mut inputs: Vec<Option<B::Buf>> = Vec::with_capacity(plan.len());
    let mut z: Vec<B::Buf> = Vec::new();
    let mut stats: Vec<Option<BatchStats<B::Buf>>> = Vec::new();
    let bns = net.batch_norms();
    for (i, st) in plan.iter().enumerate() {
        let g = geometry(n, st)?;
        let own_input = match st.dropout {
            _ if i == 0 => x0.take(),
            Some(p) => {
                // Materialise map(z_{i−1})·mask/(1 − p); the convolution then reads it unmapped.
                let mut dropped = b.zeros(g.in_len())?;
                let (map, ds) = (read_map(&stats, i), Network::dropout_seed(seed, i));
                b.dropout_forward(&z[i - 1], map, st.conv.cin, p, ds, &mut dropped)?;
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
        let mut y = b.zeros(g.out_len())?;
        let bias = params.bias[i].as_ref();
        b.conv2d_forward(&g, x, &params.weights[i], bias, map, act, &mut y)?;
        let st_stats = match (st.batch_norm, params.running[i].as_mut()) {
            (Some(j), Some((rm, rv))) => {
                let bn = &bns[j];
                let running = net.update_running_stats.then_some((rm, rv));
                Some(b.bn_batch_stats(&y, st.conv.cout, bn.eps, bn.momentum, running)?)
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
pub fn output_view<B: Backend>(b: &B, pass: &NetPass<B::Buf>) -> Result<B::Buf> {
    let z = pass.last_stored();
    let mut out = b.zeros(b.len(z))?;
    match pass.stats.last().expect("at least one stage") {
        Some(st) => b.bn_normalise(z, &st.mean, &st.inv_std, false, &mut out)?,
        None => b.axpy(1.0, z, &mut out)?,
    }
    Ok(out)
}

/// Backward of `pass` from `d_out`, the gradient w.r.t. the network's [`output_view`]. A
/// trainable network's weight and bias gradients are added into `params`; with `input_grad`,
/// returns the gradient w.r.t. the first-stage input `x0`.
pub fn backward<B: Backend>(
    b: &B,
    plan: &[StagePlan],
    params: &mut NetParams<B::Buf>,
    pass: &NetPass<B::Buf>,
    d_out: B::Buf,
    input_grad: bool,
) -> Result<Option<B::Buf>> {
    let n = pass.n;
    let last = plan.len() - 1;
    let mut d = d_out;
    // Through the last stage's output view to its convolution output.
    if plan[last].tanh {
        let mut dt = b.zeros(b.len(&d))?;
        b.activation_backward(Activation::Tanh, &d, &pass.z[last], &mut dt)?;
        d = dt;
    }
    if let Some(st) = &pass.stats[last] {
        let mut dz = b.zeros(b.len(&d))?;
        b.bn_backward_train(&pass.z[last], &d, st, false, &mut dz)?;
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
            let mut dw = b.zeros(g.weight_len())?;
            let mut db = params.grad_b[i]
                .as_ref()
                .map(|gb| b.zeros(b.len(gb)))
                .transpose()?;
            b.conv2d_backward_weight(&g, x, &d, map, &mut dw, db.as_mut())?;
            b.axpy(1.0, &dw, &mut params.grad_w[i])?;
            if let (Some(db), Some(gb)) = (db.as_ref(), params.grad_b[i].as_mut()) {
                b.axpy(1.0, db, gb)?;
            }
        }
        if i == 0 && !input_grad {
            return Ok(None);
        }
        let mut d_in = b.zeros(g.in_len())?;
        b.conv2d_backward_input(&g, &d, &params.weights[i], &mut d_in)?;
        if i == 0 {
            return Ok(Some(d_in));
        }
        // d w.r.t. what the convolution read, back through dropout to relu(bn(z_{i−1})), then
        // through the ReLU and batch norm to z_{i−1}.
        if let Some(p) = st.dropout {
            b.dropout_backward(&mut d_in, p, Network::dropout_seed(pass.seed, i))?;
        }
        let prev = pass.stats[i - 1]
            .as_ref()
            .expect("checked: hidden stages have batch norm");
        let mut dz = b.zeros(g.in_len())?;
        b.bn_backward_train(&pass.z[i - 1], &d_in, prev, true, &mut dz)?;
        d = dz;
    }
    unreachable!("the loop returns at stage 0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::backend::Cpu;
    use crate::nn::network::{Mode, NetGrads, Workspace};
    use crate::nn::parity::two_norm_error;
    use crate::nn::{random_patches, random_weights, NetworkKind};

    /// The backend pass on the CPU against `Network::forward`/`backward` in training mode, for
    /// AffNet (trained: parameter gradients) and HardNet (frozen: input gradient).
    #[test]
    fn cpu_pass_matches_the_network() {
        for kind in [NetworkKind::AffNet, NetworkKind::HardNet] {
            let mut net =
                Network::from_weights(kind, &random_weights(kind, 3), PATCH_SIZE, PATCH_SIZE)
                    .unwrap();
            let mut reference = net.clone();
            let plan = plan(&net).unwrap();
            let patches = random_patches(10, 4);
            let b = Cpu;
            let trainable = kind == NetworkKind::AffNet;
            let mut params = NetParams::upload(&b, &net, &plan, trainable).unwrap();
            let x0 = standardised(&b, &net, &patches, 1024).unwrap();
            let pass = forward(&b, &net, &plan, &mut params, x0, 11).unwrap();
            let out = output_view(&b, &pass).unwrap();

            let mut ws = Workspace::default();
            let want = reference
                .forward(&patches, Mode::Train { seed: 11 }, &mut ws)
                .to_vec();
            assert!(two_norm_error(&out, &want) < 1e-5, "{kind}: outputs");

            let d_out = crate::nn::gradcheck::random_vec(want.len(), 5, 1.0);
            let d_x0 = backward(&b, &plan, &mut params, &pass, d_out.clone(), !trainable).unwrap();
            let mut g_ref = vec![0.0; net.params().len()];
            let mut d_in_ref = vec![0.0; patches.len()];
            reference.backward(
                &mut ws,
                &d_out,
                NetGrads {
                    params: trainable.then_some(&mut g_ref[..]),
                    input: (!trainable).then_some(&mut d_in_ref[..]),
                },
            );
            if trainable {
                let mut g = vec![0.0; net.params().len()];
                params.add_grads(&b, &net, &plan, &mut g).unwrap();
                assert!(
                    two_norm_error(&g, &g_ref) < 1e-4,
                    "{kind}: parameter gradients"
                );
                params.download_running(&b, &mut net, &plan).unwrap();
                for (a, r) in net.batch_norms().iter().zip(reference.batch_norms()) {
                    assert!(two_norm_error(&a.running_var, &r.running_var) < 1e-5);
                    assert!(a.running_mean.iter().any(|&m| m != 0.0));
                }
            } else {
                let mut d_in = vec![0.0; patches.len()];
                b.standardise_backward(&patches, &d_x0.unwrap(), 1024, net.input_eps, &mut d_in)
                    .unwrap();
                assert!(
                    two_norm_error(&d_in, &d_in_ref) < 1e-4,
                    "{kind}: input gradient"
                );
            }
        }
    }

    #[test]
    fn plans_are_checked() {
        let affnet = Network::new(NetworkKind::AffNet, 32, 32);
        let p = plan(&affnet).unwrap();
        assert_eq!(p.len(), 7);
        assert!(p[..6].iter().all(|s| s.batch_norm.is_some() && s.relu));
        assert!(p[6].tanh && p[6].dropout == Some(0.25));
        let covered: usize = p
            .iter()
            .map(|s| s.weights.len() + s.bias.as_ref().map_or(0, |b| b.len()))
            .sum();
        assert_eq!(covered, affnet.params().len());
        // Another input size is refused with one line.
        let wide = Network::new(NetworkKind::AffNet, 48, 48);
        let e = plan(&wide).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("48") && !e.contains('\n'), "{e}");
    }
}
