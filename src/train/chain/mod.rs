//! One training step of AffNet, forward and backward through the whole chain: what `wbs train
//! affnet` calls per batch.
//!
//! For each side (anchors, then positives, as the authors' two `model(...)` calls, so batch norm
//! sees each side as its own batch):
//! 1. AffNet's input: the 32×32 centre crop of the source patch warped by the augmentation
//!    frame `F` (`θ_in = crop(F, 32/S)`, the spatial transformer, no gradient);
//! 2. AffNet (training mode) → raw outputs → shape `A` (upright, det 1);
//! 3. the descriptor patch: the source sampled with `θ = [M_F·A·(32/S) | t_F]` — the recipe's
//!    "warp the augmented 64×64 patch by A, centre-crop 32×32", composed into one resampling of the
//!    original source instead of two (less blur, same geometry). Passing already-augmented patches
//!    with identity frames reproduces the original's double resampling exactly;
//! 4. descriptor (differentiable SIFT, or a frozen HardNet in training mode) → loss.
//!
//! Backward: loss → descriptors → descriptor patches → `θ` (spatial transformer) → `A` → raw
//! outputs → AffNet weights. Gradients are *added* into the caller's vector, which the caller
//! zeroes per step, then hands to the optimiser:
//!
//! ```no_run
//! use wbs::train::{Descriptor, LossKind, PairBatch, Sgd, TrainAffNet, TrainChain, linear_decay};
//! # let (anchors, positives, frames_a, frames_p): (Vec<f32>, Vec<f32>, Vec<_>, Vec<_>) = todo!();
//! let mut model = TrainAffNet::new(0);
//! let mut chain = TrainChain::new(Descriptor::sift(), LossKind::HardNegC);
//! let mut sgd = Sgd::affnet_recipe();
//! let mut grads = vec![0.0; model.params().len()];
//! let total = 1000;
//! for step in 0..total {
//!     let batch = PairBatch {
//!         anchors: &anchors,      // N × 64 × 64, from the trainer's data
//!         positives: &positives,
//!         source_size: 64,
//!         anchor_frames: &frames_a, // from train::data::augment::random_frame
//!         positive_frames: &frames_p,
//!     };
//!     grads.fill(0.0);
//!     let stats = chain.step(&mut model, &batch, step, &mut grads);
//!     sgd.lr = linear_decay(0.005, step, total);
//!     sgd.step(model.params_mut(), &grads);
//!     println!("{step}: loss {:.4}", stats.loss.loss);
//! }
//! model.to_weights().save(std::path::Path::new("affnet.safetensors")).unwrap();
//! ```

pub mod affnet;
pub(crate) mod bench;
pub mod hardnet;
pub mod on_backend;
pub mod parity;
pub mod regions;
pub mod shape;

use std::time::Instant;

use crate::nn::network::{Mode, Workspace};
use crate::nn::ops::loss::{descriptor_loss, LossGrads, LossKind, LossStats, LossWorkspace};
use crate::nn::ops::sift::{DiffSift, SiftCache, SIFT_DIM};
use crate::nn::ops::spatial_transformer::{crop, warp_backward, warp_forward, Affine, WarpSize};
use crate::nn::rng::mix64;
use crate::nn::{HARDNET_DIM, PATCH_LEN, PATCH_SIZE};
use crate::train::chain::affnet::TrainAffNet;
use crate::train::chain::hardnet::{FrozenHardNet, HardNetCache};
use crate::train::chain::regions::{RegionStage, RegionStats, RegionTerms};

/// The training-mode seed of AffNet's pass on side `k` (0 anchors, 1 positives) of a step with
/// `seed`: the dropout masks derive from it (`Network::dropout_seed`). Shared with the chain over
/// a backend (`on_backend`) so that both drop the same values.
pub(crate) fn affnet_side_seed(seed: u64, k: usize) -> u64 {
    mix64(seed ^ (0x100 + k as u64))
}

/// The training-mode seed of the descriptor's pass on side `k` of a step with `seed` (HardNet's
/// dropout masks; SIFT has none). Shared with the chain over a backend.
pub(crate) fn descriptor_side_seed(seed: u64, k: usize) -> u64 {
    mix64(seed ^ (0x200 + k as u64))
}

/// The descriptor the loss is computed on.
#[derive(Clone, Debug)]
pub enum Descriptor {
    /// Differentiable SIFT on 32×32 patches (the default; the paper reports SIFT-trained AffNet
    /// on par with HardNet-trained).
    Sift(DiffSift),
    /// HardNet with frozen weights, batch norm in training mode.
    HardNet(Box<FrozenHardNet>),
}

impl Descriptor {
    /// The differentiable SIFT on 32×32 patches.
    pub fn sift() -> Self {
        Descriptor::Sift(DiffSift::new(PATCH_SIZE))
    }

    /// A frozen HardNet.
    pub fn hardnet(net: FrozenHardNet) -> Self {
        Descriptor::HardNet(Box::new(net))
    }

    /// Values per descriptor (128 for either).
    pub fn dim(&self) -> usize {
        match self {
            Descriptor::Sift(_) => SIFT_DIM,
            Descriptor::HardNet(_) => HARDNET_DIM,
        }
    }
}

/// One batch of training pairs.
#[derive(Clone, Copy, Debug)]
pub struct PairBatch<'a> {
    /// `N` source patches of `source_size²` values (row-major, back to back).
    pub anchors: &'a [f32],
    /// The positives, as `anchors`: pair `i` is `(anchors[i], positives[i])`.
    pub positives: &'a [f32],
    /// Side of the square source patches (64 for UBC Phototour).
    pub source_size: usize,
    /// Per patch, the augmentation frame on its source (normalised coordinates, see
    /// `spatial_transformer`): the 64×64 warp's map, before the centre crop.
    pub anchor_frames: &'a [Affine],
    /// The positives' frames, as `anchor_frames`.
    pub positive_frames: &'a [Affine],
}

impl PairBatch<'_> {
    /// Pairs in the batch.
    pub fn len(&self) -> usize {
        self.anchor_frames.len()
    }

    /// Whether the batch has no pairs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn check(&self) {
        let (n, area) = (self.len(), self.source_size * self.source_size);
        assert!(
            self.source_size >= PATCH_SIZE,
            "source patches smaller than 32×32"
        );
        assert_eq!(self.positive_frames.len(), n, "frame counts differ");
        assert_eq!(self.anchors.len(), n * area, "anchor patch buffer length");
        assert_eq!(
            self.positives.len(),
            n * area,
            "positive patch buffer length"
        );
    }
}

/// Wall-clock seconds per stage of the last step, forward and backward summed over both sides.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimes {
    /// The input warp: sources through their augmentation frames to AffNet's 32×32 inputs.
    pub augment: f64,
    /// AffNet's forward pass.
    pub affnet_forward: f64,
    /// The region stage and the descriptor-patch warp.
    pub warp_forward: f64,
    /// The descriptor's forward pass.
    pub descriptor_forward: f64,
    /// The descriptor loss and its gradients.
    pub loss: f64,
    /// The descriptor's backward pass.
    pub descriptor_backward: f64,
    /// The warp's and the region stage's backward passes.
    pub warp_backward: f64,
    /// AffNet's backward pass.
    pub affnet_backward: f64,
}

impl StepTimes {
    /// The sum of the stages.
    pub fn total(&self) -> f64 {
        self.augment
            + self.affnet_forward
            + self.warp_forward
            + self.descriptor_forward
            + self.loss
            + self.descriptor_backward
            + self.warp_backward
            + self.affnet_backward
    }
}

/// The outcome of one step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    /// The descriptor loss and its statistics; `loss.loss` includes the shape terms.
    pub loss: LossStats,
    /// Mean of `max(s1/s2, s2/s1)` of the predicted shapes (singular values), a sanity signal:
    /// 1 for circles.
    pub mean_anisotropy: f32,
    /// Mean `shape::shape_disagreement` of the pairs' regions in their sources (unweighted; 0
    /// when the geometric term is off): 0 for perfectly covariant shapes.
    pub mean_geom: f32,
    /// Mean singular-value ratio of the regions in their source patches (`θ`'s 2×2 part): how
    /// far from round the network makes what the source shows.
    pub mean_source_anisotropy: f32,
    /// Where the step's time went.
    pub times: StepTimes,
}

/// Per-side buffers, reused between steps.
#[derive(Clone, Debug, Default)]
struct Side {
    net_input: Vec<f32>,
    net: Workspace,
    raw: Vec<f32>,
    theta_in: Vec<Affine>,
    desc_patches: Vec<f32>,
    desc: Vec<f32>,
    d_desc: Vec<f32>,
    d_patches: Vec<f32>,
    d_theta: Vec<Affine>,
    d_raw: Vec<f32>,
    sift: SiftCache,
    hardnet: HardNetCache,
}

/// The training chain with its reusable buffers.
#[derive(Clone, Debug)]
pub struct TrainChain {
    /// What describes the descriptor patches.
    pub descriptor: Descriptor,
    /// The descriptor loss.
    pub loss: LossKind,
    /// Weight of the elongation penalty (`shape::elongation_penalty`, mean over each side's
    /// patches, added to the loss); 0 is the paper's recipe.
    pub elongation_penalty: f32,
    /// Weight of the geometric (covariance) term `shape::shape_disagreement` between each pair's
    /// two regions mapped back into their sources (mean over pairs, added to the loss); 0 is the
    /// paper's recipe. Valid when a pair's two source patches show the point in the same frame
    /// up to rotation and scale (as UBC Phototour's and `wbs train-data --max-tilt 1` pairs do).
    pub geom_weight: f32,
    /// Weight of `shape::region_elongation` on each region in its source patch beyond
    /// `SOURCE_ELONGATION_HINGE`:1 (mean over patches, added to the loss); 0 is the recipe.
    pub source_elongation_penalty: f32,
    /// Sample each descriptor patch in the upright form of its region (`shape::upright`): the
    /// orientation is fixed by the source frame's vertical instead of by the augmentation's
    /// rotation. Needed when a pair's two patches are rotated independently (the trainer's
    /// `--relative-rotation`); false is the paper's recipe.
    pub upright_descriptors: bool,
    sides: [Side; 2],
    regions: RegionStage,
    loss_ws: LossWorkspace,
}

fn timed<R>(acc: &mut f64, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    *acc += t.elapsed().as_secs_f64();
    r
}

impl TrainChain {
    /// A chain with `descriptor` and `loss`, every shape term off (the paper's recipe).
    pub fn new(descriptor: Descriptor, loss: LossKind) -> Self {
        TrainChain {
            descriptor,
            loss,
            elongation_penalty: 0.0,
            geom_weight: 0.0,
            source_elongation_penalty: 0.0,
            upright_descriptors: false,
            sides: Default::default(),
            regions: RegionStage::default(),
            loss_ws: LossWorkspace::default(),
        }
    }

    /// Forward and backward of one step: returns the loss and *adds* `dL/dθ` to `grads` (the
    /// layout of `model.params()`). `seed` fixes the dropout masks (use the step number, or a
    /// value from the trainer's generator); the same seed and inputs give the same result.
    ///
    /// # Panics
    /// If the batch is inconsistent or `grads` has the wrong length.
    pub fn step(
        &mut self,
        model: &mut TrainAffNet,
        batch: &PairBatch,
        seed: u64,
        grads: &mut [f32],
    ) -> StepStats {
        assert_eq!(grads.len(), model.params().len(), "gradient length");
        self.run(model, batch, seed, Some(grads))
    }

    /// The loss of the chain without backward (same randomness as [`step`](Self::step)); for
    /// gradient checks and validation. Batch-norm running statistics are updated as in a step.
    pub fn loss(&mut self, model: &mut TrainAffNet, batch: &PairBatch, seed: u64) -> StepStats {
        self.run(model, batch, seed, None)
    }

    fn run(
        &mut self,
        model: &mut TrainAffNet,
        batch: &PairBatch,
        seed: u64,
        grads: Option<&mut [f32]>,
    ) -> StepStats {
        batch.check();
        let n = batch.len();
        let size = WarpSize::square(batch.source_size, PATCH_SIZE);
        let scale = PATCH_SIZE as f32 / batch.source_size as f32;
        let mut times = StepTimes::default();
        let sources = [batch.anchors, batch.positives];
        let frames = [batch.anchor_frames, batch.positive_frames];
        for (k, side) in self.sides.iter_mut().enumerate() {
            timed(&mut times.augment, || {
                side.theta_in.clear();
                side.theta_in
                    .extend(frames[k].iter().map(|f| crop(f, scale)));
                side.net_input.resize(n * PATCH_LEN, 0.0);
                warp_forward(sources[k], &side.theta_in, size, &mut side.net_input);
            });
            let mode = Mode::Train {
                seed: affnet_side_seed(seed, k),
            };
            timed(&mut times.affnet_forward, || {
                let raw = model.forward(&side.net_input, mode, &mut side.net);
                side.raw.clear();
                side.raw.extend_from_slice(raw);
            });
        }
        let want_grads = grads.is_some();
        let (loss, regions) = self.head(batch, seed, want_grads, &mut times);
        if let Some(grads) = grads {
            for side in self.sides.iter_mut() {
                timed(&mut times.affnet_backward, || {
                    model.backward(&mut side.net, &side.d_raw, grads)
                });
            }
        }
        StepStats {
            loss,
            mean_anisotropy: regions.mean_anisotropy,
            mean_geom: regions.mean_geom,
            mean_source_anisotropy: regions.mean_source_anisotropy,
            times,
        }
    }

    /// Everything after AffNet: from the raw outputs in `self.sides[k].raw` to the loss, and with
    /// `want_grads` back to `self.sides[k].d_raw`. Returns the loss and the region statistics.
    fn head(
        &mut self,
        batch: &PairBatch,
        seed: u64,
        want_grads: bool,
        times: &mut StepTimes,
    ) -> (LossStats, RegionStats) {
        let n = batch.len();
        let size = WarpSize::square(batch.source_size, PATCH_SIZE);
        let scale = PATCH_SIZE as f32 / batch.source_size as f32;
        let dim = self.descriptor.dim();
        let terms = self.region_terms();
        let sources = [batch.anchors, batch.positives];
        let frames = [batch.anchor_frames, batch.positive_frames];
        let [a_side, p_side] = &self.sides;
        let regions = &mut self.regions;
        let region_stats = timed(&mut times.warp_forward, || {
            regions.forward(
                &terms,
                frames,
                [&a_side.raw, &p_side.raw],
                scale,
                want_grads,
            )
        });
        for (k, side) in self.sides.iter_mut().enumerate() {
            timed(&mut times.warp_forward, || {
                side.desc_patches.resize(n * PATCH_LEN, 0.0);
                warp_forward(
                    sources[k],
                    &self.regions.theta[k],
                    size,
                    &mut side.desc_patches,
                );
            });
            side.desc.resize(n * dim, 0.0);
            let desc_mode = Mode::Train {
                seed: descriptor_side_seed(seed, k),
            };
            timed(&mut times.descriptor_forward, || {
                match &mut self.descriptor {
                    Descriptor::Sift(sift) => {
                        sift.forward(&side.desc_patches, &mut side.desc, &mut side.sift)
                    }
                    Descriptor::HardNet(h) => h.forward(
                        &side.desc_patches,
                        desc_mode,
                        &mut side.hardnet,
                        &mut side.desc,
                    ),
                }
            });
            side.d_desc
                .resize(if want_grads { n * dim } else { 0 }, 0.0);
        }

        let [a_side, p_side] = &mut self.sides;
        let loss = timed(&mut times.loss, || {
            descriptor_loss(
                self.loss,
                &a_side.desc,
                &p_side.desc,
                dim,
                LossGrads {
                    anchor: want_grads.then_some(&mut a_side.d_desc[..]),
                    positive: want_grads.then_some(&mut p_side.d_desc[..]),
                },
                &mut self.loss_ws,
            )
        });

        if want_grads {
            for (k, side) in self.sides.iter_mut().enumerate() {
                side.d_patches.resize(n * PATCH_LEN, 0.0);
                timed(&mut times.descriptor_backward, || match &self.descriptor {
                    Descriptor::Sift(sift) => sift.backward(
                        &side.desc_patches,
                        &side.sift,
                        &side.d_desc,
                        &mut side.d_patches,
                    ),
                    Descriptor::HardNet(h) => {
                        h.backward(&mut side.hardnet, &side.d_desc, &mut side.d_patches)
                    }
                });
                timed(&mut times.warp_backward, || {
                    side.d_theta.resize(n, [[0.0; 3]; 2]);
                    warp_backward(
                        sources[k],
                        &self.regions.theta[k],
                        size,
                        &side.d_patches,
                        None,
                        &mut side.d_theta,
                    );
                    self.regions.backward(
                        &terms,
                        k,
                        frames[k],
                        &side.raw,
                        &side.d_theta,
                        scale,
                        &mut side.d_raw,
                    );
                });
            }
        }
        let mut loss = loss;
        loss.loss += region_stats.extra_loss;
        (loss, region_stats)
    }

    /// The shape terms' settings, as the region stage takes them.
    pub fn region_terms(&self) -> RegionTerms {
        RegionTerms {
            elongation_penalty: self.elongation_penalty,
            geom_weight: self.geom_weight,
            source_elongation_penalty: self.source_elongation_penalty,
            upright_descriptors: self.upright_descriptors,
        }
    }

    /// The descriptor patches of the last step's anchors and positives (`N × 32 × 32` each), e.g.
    /// to look at what the network sees.
    pub fn descriptor_patches(&self) -> [&[f32]; 2] {
        [&self.sides[0].desc_patches, &self.sides[1].desc_patches]
    }

    /// The raw AffNet outputs of the last step's anchors and positives (`N × 3` each).
    pub fn raw_outputs(&self) -> [&[f32]; 2] {
        [&self.sides[0].raw, &self.sides[1].raw]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_gradient, directional_error};
    use crate::nn::{random_weights, NetworkKind};
    use crate::train::chain::bench::SyntheticBatch;

    /// SIFT, and HardNet with random weights. HardNet's input standardisation is off here: its
    /// statistics are detached (as in the original), so with it on the propagated gradient is
    /// deliberately not the derivative of the forward pass.
    fn descriptors() -> Vec<(&'static str, Descriptor)> {
        let mut hardnet =
            FrozenHardNet::from_weights(&random_weights(NetworkKind::HardNet, 4)).unwrap();
        hardnet.network_mut().standardise_input = false;
        vec![
            ("sift", Descriptor::sift()),
            ("hardnet", Descriptor::hardnet(hardnet)),
        ]
    }

    /// Everything after AffNet (shape, composition with the frame, spatial transformer,
    /// descriptor) against finite differences w.r.t. AffNet's raw outputs, for every loss and
    /// both descriptors. HardNegC's gradient is by design not the derivative of its value (the
    /// hardest negatives are detached), so the differenced function is the loss linearised at
    /// the descriptors, `Σ ⟨dL/ddesc, desc(raw)⟩`, whose derivative is exactly what the chain
    /// propagates; HardNeg and PosDist are also differenced through the loss itself.
    #[test]
    fn head_gradient_matches_finite_differences() {
        let data = SyntheticBatch::new(6, 10);
        let batch = data.batch();
        for (name, descriptor) in descriptors() {
            for kind in <LossKind as crate::choice::Choice>::ALL.iter().copied() {
                let mut model = TrainAffNet::new(2);
                let mut chain = TrainChain::new(descriptor.clone(), kind);
                let mut grads = vec![0.0; model.params().len()];
                chain.step(&mut model, &batch, 5, &mut grads);
                let raw: Vec<f32> =
                    [chain.sides[0].raw.clone(), chain.sides[1].raw.clone()].concat();
                let d_raw: Vec<f32> =
                    [chain.sides[0].d_raw.clone(), chain.sides[1].d_raw.clone()].concat();
                let d_desc = [chain.sides[0].d_desc.clone(), chain.sides[1].d_desc.clone()];
                let mut probe = chain.clone();
                let mut eval = |r: &[f32]| -> (f64, f64) {
                    probe.sides[0].raw.copy_from_slice(&r[..18]);
                    probe.sides[1].raw.copy_from_slice(&r[18..]);
                    let loss = probe
                        .head(&batch, 5, false, &mut StepTimes::default())
                        .0
                        .loss;
                    let linear: f64 = (0..2)
                        .map(|k| {
                            probe.sides[k]
                                .desc
                                .iter()
                                .zip(&d_desc[k])
                                .map(|(d, w)| *d as f64 * *w as f64)
                                .sum::<f64>()
                        })
                        .sum();
                    (loss, linear)
                };
                if name == "sift" {
                    check_gradient(|r| eval(r).1, &raw, &d_raw, 3e-4, 2e-2)
                        .assert_mostly_ok(&format!("{name} {kind}: linearised loss"), 0.94);
                    if kind != LossKind::HardNegC {
                        check_gradient(|r| eval(r).0, &raw, &d_raw, 3e-4, 2e-2)
                            .assert_mostly_ok(&format!("{name} {kind}: loss"), 0.94);
                    }
                }
                let e = directional_error(|r| eval(r).1, &raw, &d_raw, &d_raw, 1e-4);
                assert!(
                    e < 1e-2,
                    "{name} {kind}: along the gradient, relative error {e:.2e}"
                );
            }
        }
    }

    /// After a step of `chain` on `batch` (6 pairs, dropout seed 5): the head's loss (a true
    /// derivative: not HardNegC) against finite differences w.r.t. both sides' raw outputs.
    /// Returns the raw outputs.
    fn check_head_loss_gradient(chain: &TrainChain, batch: &PairBatch, label: &str) -> Vec<f32> {
        let raw: Vec<f32> = [chain.sides[0].raw.clone(), chain.sides[1].raw.clone()].concat();
        let d_raw: Vec<f32> = [chain.sides[0].d_raw.clone(), chain.sides[1].d_raw.clone()].concat();
        let mut probe = chain.clone();
        let eval = |r: &[f32]| -> f64 {
            probe.sides[0].raw.copy_from_slice(&r[..18]);
            probe.sides[1].raw.copy_from_slice(&r[18..]);
            probe
                .head(batch, 5, false, &mut StepTimes::default())
                .0
                .loss
        };
        check_gradient(eval, &raw, &d_raw, 3e-4, 2e-2).assert_mostly_ok(label, 0.94);
        raw
    }

    /// The geometric term's gradient through shape, composition and frames, against finite
    /// differences of the loss (PosDist plus the term, both true derivatives); and its value is
    /// 0 when both sides see the same source through frames that differ by a rotation only.
    #[test]
    fn geometric_term_gradient_matches_finite_differences() {
        let data = SyntheticBatch::new(6, 30);
        let batch = data.batch();
        let mut model = TrainAffNet::new(4);
        let mut chain = TrainChain::new(Descriptor::sift(), LossKind::PosDist);
        chain.geom_weight = 0.8;
        chain.source_elongation_penalty = 0.5;
        let mut grads = vec![0.0; model.params().len()];
        let stats = chain.step(&mut model, &batch, 5, &mut grads);
        assert!(stats.mean_geom > 0.0);
        let raw = check_head_loss_gradient(&chain, &batch, "posdist + geometric term");

        // The same patches through the same frames on both sides: the same regions, 0; and a
        // different frame on one side is seen.
        let frame: Affine = [[0.9, 0.3, 0.0], [-0.2, 0.6, 0.0]];
        let (fa, fp) = (vec![frame; 6], vec![frame; 6]);
        let same = PairBatch {
            anchors: &data.anchors,
            positives: &data.anchors,
            source_size: 64,
            anchor_frames: &fa,
            positive_frames: &fp,
        };
        let mut probe = chain.clone();
        probe.sides[0].raw.copy_from_slice(&raw[..18]);
        probe.sides[1].raw.copy_from_slice(&raw[..18]);
        let geom = probe
            .head(&same, 5, false, &mut StepTimes::default())
            .1
            .mean_geom;
        assert!(geom.abs() < 1e-6, "{geom}");
        let other = PairBatch {
            positive_frames: &data.positive_frames[..],
            ..same
        };
        let geom = probe
            .head(&other, 5, false, &mut StepTimes::default())
            .1
            .mean_geom;
        assert!(geom > 1e-3, "{geom}");
    }

    /// Upright descriptor frames: two patches whose regions are the same ellipse, one turned
    /// against the other, give the same descriptor patch (and the recipe's frames do not); and
    /// the gradient through the upright form matches finite differences.
    #[test]
    fn upright_descriptor_frames_remove_a_relative_rotation_and_their_gradient_is_right() {
        let data = SyntheticBatch::new(6, 40);
        let frame: Affine = [[0.9, 0.3, 0.0], [-0.2, 0.6, 0.0]];
        let (c, s) = (0.9f32.cos(), 0.9f32.sin());
        // F·R: the positive sees the anchor's patch turned by 0.9 rad.
        let turned: Affine = [
            [
                frame[0][0] * c + frame[0][1] * s,
                -frame[0][0] * s + frame[0][1] * c,
                0.0,
            ],
            [
                frame[1][0] * c + frame[1][1] * s,
                -frame[1][0] * s + frame[1][1] * c,
                0.0,
            ],
        ];
        let (fa, fp) = (vec![frame; 6], vec![turned; 6]);
        let batch = PairBatch {
            anchors: &data.anchors,
            positives: &data.anchors,
            source_size: 64,
            anchor_frames: &fa,
            positive_frames: &fp,
        };
        let mut chain = TrainChain::new(Descriptor::sift(), LossKind::PosDist);
        // Raw outputs 0: identity shapes, so the two regions are the frames' own ellipses.
        for side in &mut chain.sides {
            side.raw = vec![0.0; 18];
        }
        let max_diff = |chain: &TrainChain| {
            let [a, p] = chain.descriptor_patches();
            a.iter()
                .zip(p)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        };
        chain.head(&batch, 5, false, &mut StepTimes::default());
        assert!(max_diff(&chain) > 0.05, "{}", max_diff(&chain));
        chain.upright_descriptors = true;
        chain.head(&batch, 5, false, &mut StepTimes::default());
        assert!(max_diff(&chain) < 1e-4, "{}", max_diff(&chain));

        // Gradient: PosDist plus the geometric term through upright frames.
        let batch = data.batch();
        let mut model = TrainAffNet::new(6);
        chain.geom_weight = 0.5;
        let mut grads = vec![0.0; model.params().len()];
        chain.step(&mut model, &batch, 5, &mut grads);
        check_head_loss_gradient(&chain, &batch, "posdist + geometric term, upright frames");
    }

    /// The whole chain down to AffNet's weights: the loss (linearised at the descriptors for
    /// HardNegC, see above) along the gradient and along single weights, against the parameter
    /// gradient of a step. Kinks (ReLU, orientation bins, bilinear cells, hardest negatives) are
    /// everywhere at this depth, hence small steps and the majority criterion.
    #[test]
    fn whole_chain_gradient_matches_finite_differences() {
        let data = SyntheticBatch::new(6, 20);
        let batch = data.batch();
        for kind in <LossKind as crate::choice::Choice>::ALL.iter().copied() {
            let mut model = TrainAffNet::new(3);
            let mut chain = TrainChain::new(Descriptor::sift(), kind);
            let mut grads = vec![0.0; model.params().len()];
            chain.step(&mut model, &batch, 9, &mut grads);
            let d_desc = [chain.sides[0].d_desc.clone(), chain.sides[1].d_desc.clone()];
            let base = model.params().to_vec();
            let (mut probe, mut probe_chain) = (model.clone(), chain.clone());
            let mut eval = |p: &[f32]| -> f64 {
                probe.params_mut().copy_from_slice(p);
                let loss = probe_chain.loss(&mut probe, &batch, 9).loss.loss;
                if kind != LossKind::HardNegC {
                    return loss;
                }
                (0..2)
                    .map(|k| {
                        probe_chain.sides[k]
                            .desc
                            .iter()
                            .zip(&d_desc[k])
                            .map(|(d, w)| *d as f64 * *w as f64)
                            .sum::<f64>()
                    })
                    .sum()
            };
            // Along the gradient: the error shrinks with the step (curvature, not a wrong
            // gradient) until kinks and f32 noise take over; the best of two steps must agree.
            let gmax = grads.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            let e = [1e-4f32, 1e-5]
                .iter()
                .map(|h| directional_error(&mut eval, &base, &grads, &grads, h / gmax))
                .fold(f64::INFINITY, f64::min);
            assert!(
                e < 3e-2,
                "{kind}: along the gradient, relative error {e:.2e}"
            );
            // The 24 largest single coordinates (the last layer's bias and weights and
            // first-layer weights): at most a few may sit across a kink.
            let mut idx: Vec<usize> = (0..grads.len()).collect();
            idx.sort_by(|&a, &b| grads[b].abs().total_cmp(&grads[a].abs()));
            idx.truncate(24);
            let sub: Vec<f32> = idx.iter().map(|&i| base[i]).collect();
            let sub_g: Vec<f32> = idx.iter().map(|&i| grads[i]).collect();
            check_gradient(
                |v| {
                    let mut p = base.clone();
                    for (&i, &v) in idx.iter().zip(v) {
                        p[i] = v;
                    }
                    eval(&p)
                },
                &sub,
                &sub_g,
                1e-4,
                2e-2,
            )
            .assert_mostly_ok(&format!("{kind}: largest weights"), 0.9);
        }
    }
}
