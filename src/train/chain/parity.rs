//! The training chain's parity checks, one generic body each, on any backend: a step of
//! [`BackendTrainChain`] against [`TrainChain::step`] from the same model and batch (loss and
//! statistics, the gradients of every parameter, the updated running statistics), and its
//! frozen-HardNet descriptor pass against [`FrozenHardNet`]. `wbs gpu-check` runs them on CUDA;
//! `tests/device_parity.rs` on every backend present.
//!
//! Error measure: the normwise relative error ([`rel_error`]), tolerance [`TOLERANCE`], for the
//! loss, the step's statistics, the running statistics and (with SIFT) the gradients; the
//! gradients through a HardNet by the 2-norm ratio, [`HARDNET_STEP_TOLERANCE`] (its docs say
//! why).

use crate::nn::backend::Backend;
use crate::nn::gradcheck::random_vec;
use crate::nn::ops::loss::LossKind;
use crate::nn::parity::{
    net_patches, rel_error, scalar_error, two_norm_error, worst, KernelCheck, Row, TOLERANCE,
};
use crate::nn::{self, NetworkKind};
use crate::train::chain::hardnet::HardNetCache;
use crate::train::chain::on_backend::{hardnet_descriptor_pass, BackendTrainChain};
use crate::train::{Descriptor, FrozenHardNet, Mode, SyntheticBatch, TrainAffNet, TrainChain};
use crate::Result;

/// A whole step through a frozen HardNet, with AffNet's gradients compared by the 2-norm ratio:
/// HardNet's descriptor-patch gradients (checked at [`TOLERANCE`] by their own row) alternate in
/// sign from pixel to pixel and cancel by orders of magnitude in the warp's and batch norm's
/// backward sums, so two f32 summation orders differ there by ~2e-3 of the gradients' 2-norm
/// (measured on the CPU backend against `TrainChain`). A wrong recipe is off by 5e-2 or more.
pub const HARDNET_STEP_TOLERANCE: f64 = 1e-2;

/// Every check of the chain, in the order of the table (each with an `id` the tests name their
/// instances by, as the op checks of [`crate::nn::parity`]).
pub fn chain_check_list<B: Backend>() -> Vec<KernelCheck<B>> {
    let pairs = "37 pairs, 64² sources";
    let check = |id: &'static str,
                 name: &'static str,
                 shape: &'static str,
                 run: fn(&B, u64) -> Result<f64>,
                 tolerance: f64| KernelCheck {
        id,
        name,
        shape,
        run,
        tolerance,
    };
    vec![
        check(
            "step_hardnegc_terms",
            "train chain step (HardNegC, all shape terms)",
            pairs,
            |b, s| step_worst(b, s, LossKind::HardNegC, true),
            TOLERANCE,
        ),
        check(
            "step_hardneg",
            "train chain step (HardNeg, recipe)",
            pairs,
            |b, s| step_worst(b, s, LossKind::HardNeg, false),
            TOLERANCE,
        ),
        check(
            "step_posdist",
            "train chain step (PosDist, recipe)",
            pairs,
            |b, s| step_worst(b, s, LossKind::PosDist, false),
            TOLERANCE,
        ),
        check(
            "hardnet_descriptor_fwd",
            "HardNet descriptor fwd (training mode)",
            "37 patches",
            |b, s| Ok(hardnet_descriptor(b, s)?.0),
            TOLERANCE,
        ),
        check(
            "hardnet_descriptor_bwd",
            "HardNet descriptor bwd to the patches (2-norm)",
            "37 patches",
            |b, s| Ok(hardnet_descriptor(b, s)?.1),
            HARDNET_STEP_TOLERANCE,
        ),
        check(
            "step_hardnet",
            "train chain step (HardNegC, HardNet): loss, stats, running stats",
            pairs,
            |b, s| Ok(step_through_hardnet(b, s)?.outputs),
            TOLERANCE,
        ),
        check(
            "step_hardnet_gradients",
            "train chain step (HardNegC, HardNet): gradients (2-norm)",
            pairs,
            |b, s| Ok(step_through_hardnet(b, s)?.gradients),
            HARDNET_STEP_TOLERANCE,
        ),
    ]
}

/// Runs every check of the chain on `b` as table rows; `seed` varies the random inputs.
pub fn chain_checks<B: Backend>(b: &B, seed: u64) -> Vec<Row> {
    chain_check_list::<B>()
        .iter()
        .map(|c| c.row(b, seed))
        .collect()
}

/// The errors of a step on a backend against `TrainChain::step`.
struct StepErrors {
    /// The worst of the loss, the step's statistics and the updated running statistics.
    outputs: f64,
    /// The parameter gradients' (the largest difference with SIFT, the 2-norm ratio through a
    /// HardNet: see [`HARDNET_STEP_TOLERANCE`]).
    gradients: f64,
}

/// A step with the SIFT descriptor: the worst error of all.
fn step_worst<B: Backend>(b: &B, seed: u64, kind: LossKind, terms: bool) -> Result<f64> {
    let e = step(b, seed, kind, terms, Descriptor::sift())?;
    Ok(e.outputs.max(e.gradients))
}

/// A step with a frozen HardNet (random weights) as the descriptor, every shape term on.
fn step_through_hardnet<B: Backend>(b: &B, seed: u64) -> Result<StepErrors> {
    let descriptor = Descriptor::hardnet(random_frozen_hardnet(seed + 5)?);
    step(b, seed, LossKind::HardNegC, true, descriptor)
}

/// One step of the chain on `b` against `TrainChain::step` from the same model and batch;
/// `terms` turns every shape term on.
fn step<B: Backend>(
    b: &B,
    seed: u64,
    kind: LossKind,
    terms: bool,
    descriptor: Descriptor,
) -> Result<StepErrors> {
    let data = SyntheticBatch::new(37, seed);
    let batch = data.batch();
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
    let mut b_model = cpu_model.clone();
    let mut on_b = BackendTrainChain::new(&chain)?;
    let mut g_cpu = vec![0.0; cpu_model.params().len()];
    let mut g_b = g_cpu.clone();
    let c = chain.step(&mut cpu_model, &batch, seed, &mut g_cpu);
    let d = on_b.step(b, &mut b_model, &batch, seed, &mut g_b)?;
    let running = |m: &TrainAffNet| -> Vec<f32> {
        m.network()
            .batch_norms()
            .iter()
            .flat_map(|b| b.running_mean.iter().chain(&b.running_var).copied())
            .collect()
    };
    let mut errors = vec![
        scalar_error(d.loss.loss, c.loss.loss),
        scalar_error(d.loss.mean_positive as f64, c.loss.mean_positive as f64),
        scalar_error(d.mean_anisotropy as f64, c.mean_anisotropy as f64),
        scalar_error(
            d.mean_source_anisotropy as f64,
            c.mean_source_anisotropy as f64,
        ),
        rel_error(&running(&b_model), &running(&cpu_model)),
    ];
    if terms {
        errors.push(scalar_error(d.mean_geom as f64, c.mean_geom as f64));
    }
    if kind != LossKind::PosDist {
        errors.push(scalar_error(
            d.loss.mean_hardest_negative as f64,
            c.loss.mean_hardest_negative as f64,
        ));
    }
    Ok(StepErrors {
        outputs: worst(&errors),
        gradients: gradient_error(&g_b, &g_cpu),
    })
}

fn random_frozen_hardnet(seed: u64) -> Result<FrozenHardNet> {
    FrozenHardNet::from_weights(&nn::random_weights(NetworkKind::HardNet, seed))
}

/// The chain's HardNet descriptor on `b` against `FrozenHardNet` on the same patches, seed and
/// descriptor gradients: the descriptors' error by [`rel_error`] and the patch gradients' by
/// [`two_norm_error`]. The latter, not the largest difference: a ReLU that one summation order
/// of the batch statistics puts just above 0 and the other just below changes the gradient of
/// the patches it sees, by up to 2e-2 of the largest patch gradient (measured on the CPU
/// backend, seed 1; 4e-3 by the 2-norm, descriptors equal to 1.4e-6).
fn hardnet_descriptor<B: Backend>(b: &B, seed: u64) -> Result<(f64, f64)> {
    let mut hardnet = random_frozen_hardnet(seed + 6)?;
    let patches = net_patches(seed);
    let n = patches.len() / nn::PATCH_LEN;
    let d_desc = random_vec(n * nn::HARDNET_DIM, seed + 7, 1.0);
    let mode_seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut cache = HardNetCache::default();
    let mut desc = vec![0.0; d_desc.len()];
    hardnet.forward(
        &patches,
        Mode::Train { seed: mode_seed },
        &mut cache,
        &mut desc,
    );
    let mut d_patches = vec![0.0; patches.len()];
    hardnet.backward(&mut cache, &d_desc, &mut d_patches);
    let (desc_, d_patches_) = hardnet_descriptor_pass(b, &hardnet, &patches, mode_seed, &d_desc)?;
    Ok((
        rel_error(&desc_, &desc),
        two_norm_error(&d_patches_, &d_patches),
    ))
}
