//! The training loop's state and one step of it: sample a batch, augment, run the chain, update.
//!
//! Randomness is counter-based: step `s` draws its batch, rotations, tilts and flips from
//! `Rng::new(mix64(seed ^ mix64(s)))`, and its dropout masks from a hash of the seed and `s`.
//! The state of a run is therefore the weights, the batch-norm running statistics, SGD's
//! momentum buffer and the step number, which is what a [`Checkpoint`] holds; a resumed run
//! repeats an uninterrupted one bit for bit. The chain's parallel reductions add per-group
//! partial results in a fixed order (`parallel.rs`), so the thread count does not matter either.
//!
//! The recipe (reference `affnet.md` §5): a rotation shared by the pair, independent tilts
//! with the epoch schedule (`augment::max_tilt_for_epoch`, optionally capped), the 2× zoom and
//! 32×32 centre crop, "fliprot" (the same random transpose and horizontal flip on both
//! patches), batch norm with batch statistics, SGD (lr 0.005, momentum 0.9, dampening 0.9,
//! weight decay 1e-4) with the learning rate decayed linearly to 0 over the run.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::nn::ops::loss::LossKind;
use crate::nn::ops::sgd::{linear_decay, Sgd};
use crate::nn::ops::spatial_transformer::Affine;
use crate::nn::rng::{mix64, Rng};
use crate::train::chain::affnet::TrainAffNet;
use crate::train::chain::{Descriptor, PairBatch, StepStats, TrainChain};
use crate::train::data::augment::{max_tilt_for_epoch, random_frame};
use crate::train::data::{PairSet, SOURCE_LEN, SOURCE_SIZE};
use crate::train::run::checkpoint::Checkpoint;
use crate::{Error, Result};

/// The recipe's frame scale: `extract_random_LAF` warps the 64×64 patch with `0.5·R_φ·TA` (a 2×
/// zoom) before the centre crop, see `augment.rs`.
pub const FRAME_SCALE: f64 = 0.5;

/// What defines a run; stored in checkpoints and compared on resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// The data, e.g. `data:pairs.safetensors (100000 pairs)`.
    pub sources: Vec<String>,
    /// Pairs per epoch (the recipe's `--n-pairs`).
    pub pairs_per_epoch: u64,
    /// Epochs to train.
    pub epochs: u64,
    /// Pairs per step.
    pub batch: usize,
    /// `hardnegc`, `hardneg` or `posdist`.
    pub loss: String,
    /// `sift`, or `hardnet:<weights file>`.
    pub descriptor: String,
    /// Initial learning rate (f64 so that the JSON shows what was typed).
    pub lr: f64,
    /// Seed of every random choice: the initial weights, batches, augmentation, dropout.
    pub seed: u64,
    /// The same random transpose and flip on both patches of a pair.
    pub fliprot: bool,
    /// Initial weights (None: the authors' orthogonal initialisation, seeded).
    pub init: Option<String>,
    /// Weight of the penalty on shapes more elongated than 6:1 (0: the paper's recipe; see
    /// `shape::elongation_penalty`).
    #[serde(default)]
    pub elongation_penalty: f64,
    /// Weight of the geometric (covariance) term between each pair's regions (0: the paper's
    /// recipe; see `TrainChain::geom_weight`).
    #[serde(default)]
    pub geom_weight: f64,
    /// Weight of the penalty on regions more elongated than 2:1 in their source patches (0: the
    /// paper's recipe; see `TrainChain::source_elongation_penalty`).
    #[serde(default)]
    pub source_elongation_penalty: f64,
    /// Largest rotation between a pair's two patches, degrees: the positive's augmentation
    /// rotation is the anchor's plus a uniform draw in ±this, and descriptor patches are cut in
    /// their upright form (`TrainChain::upright_descriptors`). 0 is the paper's recipe (one
    /// rotation shared by both patches), which never shows AffNet a turned pair.
    #[serde(default)]
    pub relative_rotation: f64,
    /// Epochs over which the relative rotation's range grows linearly from 0 to
    /// `relative_rotation` (0: the full range from the first step). From a random start, ranges
    /// of 45° and more collapse every shape to one within 20 steps; see docs/training.md.
    #[serde(default)]
    pub relative_rotation_warmup: f64,
    /// Share of pairs (0–1) whose positive is not turned against its anchor when
    /// `relative_rotation` is on (0: every pair turned): tests whether the turned pairs crowd
    /// out what AffNet learns of tilt; see docs/training.md.
    #[serde(default)]
    pub unturned_share: f64,
    /// Cap on the tilt schedule (0: none, the recipe's schedule up to 5.8).
    #[serde(default)]
    pub tilt_cap: f64,
}

impl RunSettings {
    /// Steps per epoch (at least 1).
    pub fn steps_per_epoch(&self) -> u64 {
        self.pairs_per_epoch.div_ceil(self.batch as u64).max(1)
    }

    /// Steps in the whole run.
    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch() * self.epochs
    }

    /// The loss, parsed from `loss` (one-line error for an unknown name).
    pub fn loss_kind(&self) -> Result<LossKind> {
        self.loss.parse()
    }

    /// The largest augmentation tilt in `epoch`: the recipe's schedule, capped by `tilt_cap`.
    pub fn max_tilt(&self, epoch: u64) -> f64 {
        let scheduled = max_tilt_for_epoch(epoch.min(u32::MAX as u64) as u32);
        if self.tilt_cap > 0.0 {
            scheduled.min(self.tilt_cap)
        } else {
            scheduled
        }
    }

    /// The settings that differ from `other`, by name (empty when a resume may go on).
    pub fn differences(&self, other: &RunSettings) -> Vec<String> {
        let (a, b) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(other).unwrap_or_default(),
        );
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return vec!["all".into()];
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}: checkpoint has {}, now {}",
                    b.get(k).map_or("nothing".into(), |x| x.to_string()),
                    v
                )
            })
            .collect()
    }
}

/// The outcome of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The step number (0-based) that was run.
    pub step: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Its learning rate.
    pub lr: f32,
    /// The augmentation's largest tilt at this epoch.
    pub max_tilt: f64,
    /// The chain's statistics and stage times.
    pub stats: StepStats,
}

/// A training run in memory.
pub struct Trainer {
    /// The run's settings (saved in checkpoints).
    pub settings: RunSettings,
    data: PairSet,
    model: TrainAffNet,
    chain: TrainChain,
    sgd: Sgd,
    /// Steps done.
    step: u64,
    grads: Vec<f32>,
    scratch: Vec<u32>,
    anchors: Vec<f32>,
    positives: Vec<f32>,
    frames: [Vec<Affine>; 2],
    /// The GPU and the device chain when the steps run there ([`Trainer::use_gpu`]).
    #[cfg(feature = "cuda")]
    device: Option<(
        crate::gpu::Gpu,
        crate::train::chain::on_backend::BackendTrainChain<crate::gpu::ops::Buf>,
    )>,
}

impl Trainer {
    /// A fresh run (or one from `init` weights).
    pub fn new(
        settings: RunSettings,
        data: PairSet,
        descriptor: Descriptor,
        init: Option<TrainAffNet>,
    ) -> Result<Self> {
        let loss = settings.loss_kind()?;
        if settings.batch < 2 {
            return Err(Error::invalid(
                "--batch must be at least 2 (the loss needs negatives)",
            ));
        }
        if settings.epochs == 0 || settings.pairs_per_epoch == 0 {
            return Err(Error::invalid("--epochs and --pairs must be at least 1"));
        }
        if !(settings.lr >= 0.0 && settings.lr.is_finite()) {
            return Err(Error::invalid("--lr must be a non-negative number"));
        }
        let points = data.distinct_points();
        if points < settings.batch {
            return Err(Error::Dataset(format!(
                "the data shows only {points} distinct points, fewer than --batch {}; a batch never holds two pairs of one point (make more pairs or lower --batch)",
                settings.batch
            )));
        }
        let model = init.unwrap_or_else(|| TrainAffNet::new(settings.seed));
        let grads = vec![0.0; model.params().len()];
        for (flag, w) in [
            ("--elongation-penalty", settings.elongation_penalty),
            ("--geom-weight", settings.geom_weight),
            (
                "--source-elongation-penalty",
                settings.source_elongation_penalty,
            ),
            ("--relative-rotation", settings.relative_rotation),
            (
                "--relative-rotation-warmup",
                settings.relative_rotation_warmup,
            ),
            ("--tilt-cap", settings.tilt_cap),
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                return Err(Error::invalid(format!(
                    "{flag} must be a non-negative number"
                )));
            }
        }
        if !(0.0..=1.0).contains(&settings.unturned_share) {
            return Err(Error::invalid("--unturned-share must be between 0 and 1"));
        }
        if settings.unturned_share > 0.0 && settings.relative_rotation <= 0.0 {
            return Err(Error::invalid(
                "--unturned-share needs --relative-rotation (without it no pair is turned)",
            ));
        }
        if settings.tilt_cap > 0.0 && settings.tilt_cap < 1.0 {
            return Err(Error::invalid("--tilt-cap must be 0 (none) or at least 1"));
        }
        let mut chain = TrainChain::new(descriptor, loss);
        chain.elongation_penalty = settings.elongation_penalty as f32;
        chain.geom_weight = settings.geom_weight as f32;
        chain.source_elongation_penalty = settings.source_elongation_penalty as f32;
        chain.upright_descriptors = settings.relative_rotation > 0.0;
        Ok(Trainer {
            chain,
            sgd: Sgd::new(settings.lr as f32, 0.9, 0.9, 1e-4),
            settings,
            data,
            model,
            step: 0,
            grads,
            scratch: Vec::new(),
            anchors: Vec::new(),
            positives: Vec::new(),
            frames: Default::default(),
            #[cfg(feature = "cuda")]
            device: None,
        })
    }

    /// Continues from a checkpoint; its settings must equal `settings`.
    pub fn resume(
        settings: RunSettings,
        data: PairSet,
        descriptor: Descriptor,
        checkpoint: Checkpoint,
    ) -> Result<Self> {
        let saved: RunSettings = serde_json::from_str(&checkpoint.run).map_err(|e| {
            Error::invalid(format!("the checkpoint's run settings are unreadable: {e}"))
        })?;
        let diff = settings.differences(&saved);
        if !diff.is_empty() {
            return Err(Error::invalid(format!(
                "--resume with other settings than the checkpoint's ({}); use the original flags or a new --out",
                diff.join("; ")
            )));
        }
        let model = TrainAffNet::from_weights(&checkpoint.weights)?;
        let mut t = Trainer::new(settings, data, descriptor, Some(model))?;
        if let Some(m) = &checkpoint.momentum {
            if m.len() != t.grads.len() {
                return Err(Error::invalid(
                    "the checkpoint's momentum buffer has the wrong length",
                ));
            }
        }
        t.sgd.set_momentum_buffer(checkpoint.momentum);
        t.step = checkpoint.step;
        Ok(t)
    }

    /// The state to save.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            weights: self.model.to_weights(),
            momentum: self.sgd.momentum_buffer().map(<[f32]>::to_vec),
            step: self.step,
            epoch: self.epoch(),
            seed: self.settings.seed,
            run: serde_json::to_string(&self.settings).unwrap_or_default(),
        }
    }

    /// Steps done.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Steps in the whole run.
    pub fn total_steps(&self) -> u64 {
        self.settings.total_steps()
    }

    /// Whether every step is done.
    pub fn finished(&self) -> bool {
        self.step >= self.total_steps()
    }

    /// The epoch of the next step.
    pub fn epoch(&self) -> u64 {
        self.step / self.settings.steps_per_epoch()
    }

    /// The epoch of the last step done (0 before the first).
    pub fn last_epoch(&self) -> u64 {
        self.step.saturating_sub(1) / self.settings.steps_per_epoch()
    }

    /// The model being trained.
    pub fn model(&self) -> &TrainAffNet {
        &self.model
    }

    /// The training pairs.
    pub fn data(&self) -> &PairSet {
        &self.data
    }

    /// Runs the next step.
    /// Fills the batch buffers with the pairs and frames of step `s` at `max_tilt`.
    /// The relative rotation's range at step `s`, degrees.
    pub fn relative_rotation_at(&self, s: u64) -> f64 {
        let full = self.settings.relative_rotation;
        let warmup =
            self.settings.relative_rotation_warmup * self.settings.steps_per_epoch() as f64;
        if warmup <= 0.0 {
            full
        } else {
            full * (s as f64 / warmup).min(1.0)
        }
    }

    fn prepare(&mut self, s: u64, max_tilt: f64) {
        let n = self.settings.batch;
        let mut rng = Rng::new(mix64(self.settings.seed ^ mix64(s)));
        let picked = self.data.sample_batch(n, &mut rng, &mut self.scratch);

        self.anchors.resize(n * SOURCE_LEN, 0.0);
        self.positives.resize(n * SOURCE_LEN, 0.0);
        let data = &self.data;
        for (buf, side) in [(&mut self.anchors, 0), (&mut self.positives, 1)] {
            buf.par_chunks_mut(SOURCE_LEN)
                .zip(picked.par_iter())
                .for_each(|(out, &p)| {
                    let src = data.patch(data.pairs[p][side] as usize);
                    for (o, &v) in out.iter_mut().zip(src) {
                        *o = v as f32 * (1.0 / 255.0);
                    }
                });
        }
        let relative_rotation = self.relative_rotation_at(s).to_radians();
        let [fa, fp] = &mut self.frames;
        fa.clear();
        fp.clear();
        let unturned_share = self.settings.unturned_share;
        for _ in 0..n {
            let phi = rng.range(-std::f64::consts::PI, std::f64::consts::PI);
            let (transpose, flip) = if self.settings.fliprot {
                (rng.uniform() < 0.5, rng.uniform() < 0.5)
            } else {
                (false, false)
            };
            // Drawn only when asked for, so that earlier runs keep their random stream.
            let turned = relative_rotation > 0.0
                && (unturned_share <= 0.0 || rng.uniform() >= unturned_share);
            for (k, f) in [&mut *fa, &mut *fp].into_iter().enumerate() {
                let turn = if k == 1 && turned {
                    rng.range(-relative_rotation, relative_rotation)
                } else {
                    0.0
                };
                let frame = random_frame(&mut rng, phi + turn, max_tilt, FRAME_SCALE);
                f.push(flipped(frame, transpose, flip));
            }
        }
    }

    fn batch(&self) -> PairBatch<'_> {
        PairBatch {
            anchors: &self.anchors,
            positives: &self.positives,
            source_size: SOURCE_SIZE,
            anchor_frames: &self.frames[0],
            positive_frames: &self.frames[1],
        }
    }

    /// The loss the current weights give on the batch of step `s` (at the tilt of the current
    /// epoch), without changing the run: a copy of the model and chain computes it.
    pub fn loss_on_batch(&mut self, s: u64) -> f64 {
        let max_tilt = self.settings.max_tilt(self.epoch());
        self.prepare(s, max_tilt);
        let (mut model, mut chain) = (self.model.clone(), self.chain.clone());
        let seed = mix64(self.settings.seed ^ 0xD50F_0000 ^ s);
        chain.loss(&mut model, &self.batch(), seed).loss.loss
    }

    /// Runs the next step (an error only from the device: a failed launch or transfer).
    pub fn step(&mut self) -> Result<StepReport> {
        let s = self.step;
        let epoch = self.epoch();
        let max_tilt = self.settings.max_tilt(epoch);
        self.prepare(s, max_tilt);
        let batch = PairBatch {
            anchors: &self.anchors,
            positives: &self.positives,
            source_size: SOURCE_SIZE,
            anchor_frames: &self.frames[0],
            positive_frames: &self.frames[1],
        };
        self.grads.fill(0.0);
        let seed = mix64(self.settings.seed ^ 0xD50F_0000 ^ s);
        #[cfg(feature = "cuda")]
        let stats = match self.device.as_mut() {
            Some((gpu, chain)) => {
                let cuda = crate::gpu::backend::Cuda::new(gpu);
                chain.step(&cuda, &mut self.model, &batch, seed, &mut self.grads)?
            }
            None => self
                .chain
                .step(&mut self.model, &batch, seed, &mut self.grads),
        };
        #[cfg(not(feature = "cuda"))]
        let stats = self
            .chain
            .step(&mut self.model, &batch, seed, &mut self.grads);
        let lr = linear_decay(self.settings.lr as f32, s, self.total_steps());
        self.sgd.lr = lr;
        self.sgd.step(self.model.params_mut(), &self.grads);
        self.step += 1;
        Ok(StepReport {
            step: s,
            epoch,
            lr,
            max_tilt,
            stats,
        })
    }

    /// Runs the steps on `gpu` from now on (`train::chain::on_backend` on the CUDA backend: the
    /// same numbers as the CPU chain up to f32 summation order; optimiser, checkpoints and
    /// validation stay on the host). A one-line error for a descriptor network the backend chain
    /// does not run.
    #[cfg(feature = "cuda")]
    pub fn use_gpu(&mut self, gpu: crate::gpu::Gpu) -> Result<()> {
        let chain = crate::train::chain::on_backend::BackendTrainChain::new(&self.chain)?;
        self.device = Some((gpu, chain));
        Ok(())
    }
}

/// The frame of a transposed and/or horizontally flipped source: sampling `src∘P` through `F`
/// is sampling `src` through `P·F`.
fn flipped(frame: Affine, transpose: bool, flip: bool) -> Affine {
    let mut f = frame;
    if transpose {
        f.swap(0, 1);
    }
    if flip {
        f[0] = f[0].map(|v| -v);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::spatial_transformer::{warp_forward, WarpSize};
    use crate::train::chain::bench::synthetic_pairs;

    /// Pairs of synthetic textures, one point per pair.
    pub(crate) fn synthetic_set(n: usize, seed: u64) -> PairSet {
        let (a, p) = synthetic_pairs(n, SOURCE_SIZE, 2.0, seed);
        let to_u8 = |v: &[f32]| -> Vec<u8> {
            v.iter()
                .map(|x| (x * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect()
        };
        let mut set = PairSet::default();
        for k in 0..n {
            let r = k * SOURCE_LEN..(k + 1) * SOURCE_LEN;
            set.push_pair(&to_u8(&a[r.clone()]), &to_u8(&p[r]), k as u64);
        }
        set
    }

    pub(crate) fn settings(batch: usize, pairs: u64, epochs: u64) -> RunSettings {
        RunSettings {
            sources: vec!["synthetic".into()],
            pairs_per_epoch: pairs,
            epochs,
            batch,
            loss: "hardnegc".into(),
            descriptor: "sift".into(),
            lr: 0.005,
            seed: 7,
            fliprot: true,
            init: None,
            elongation_penalty: 0.0,
            geom_weight: 0.0,
            source_elongation_penalty: 0.0,
            relative_rotation: 0.0,
            relative_rotation_warmup: 0.0,
            unturned_share: 0.0,
            tilt_cap: 0.0,
        }
    }

    #[test]
    fn flips_are_left_multiplied() {
        // A 3×3 source, the frame of the identity: the flipped frames sample the flipped source.
        let src: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let id: Affine = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let mut out = vec![0.0; 9];
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        warp_forward(
            &src,
            &[flipped(id, true, false)],
            WarpSize::square(3, 3),
            &mut out,
        );
        assert!(
            close(&out, &[0.0, 3.0, 6.0, 1.0, 4.0, 7.0, 2.0, 5.0, 8.0]),
            "{out:?}"
        );
        warp_forward(
            &src,
            &[flipped(id, false, true)],
            WarpSize::square(3, 3),
            &mut out,
        );
        assert!(
            close(&out, &[2.0, 1.0, 0.0, 5.0, 4.0, 3.0, 8.0, 7.0, 6.0]),
            "{out:?}"
        );
    }

    /// The augmentation rotates a pair's two patches alike (the recipe), or with
    /// `relative_rotation` by up to that many degrees apart; the descriptor frames follow.
    #[test]
    fn relative_rotation_turns_the_positive_within_its_range() {
        // F = P·R(φ)·U with U upright: F's second column is P·R(φ)·(0, u11), so the angle
        // between a pair's second columns is its relative rotation (a shared flip P keeps it).
        let relative_angle = |a: &Affine, b: &Affine| {
            let (x, y) = (
                (a[0][1] as f64, a[1][1] as f64),
                (b[0][1] as f64, b[1][1] as f64),
            );
            (x.0 * y.1 - x.1 * y.0)
                .atan2(x.0 * y.0 + x.1 * y.1)
                .abs()
                .to_degrees()
        };
        for degrees in [0.0, 30.0] {
            let mut run = settings(32, 64, 1);
            run.relative_rotation = degrees;
            let mut trainer =
                Trainer::new(run, synthetic_set(40, 2), Descriptor::sift(), None).unwrap();
            assert_eq!(trainer.chain.upright_descriptors, degrees > 0.0);
            trainer.prepare(0, 3.0);
            let angles: Vec<f64> = trainer.frames[0]
                .iter()
                .zip(&trainer.frames[1])
                .map(|(a, b)| relative_angle(a, b))
                .collect();
            let largest = angles.iter().fold(0.0f64, |m, &v| m.max(v));
            if degrees == 0.0 {
                assert!(largest < 1e-3, "{largest}");
            } else {
                assert!(
                    largest <= degrees + 1e-3 && largest > degrees / 2.0,
                    "{angles:?}"
                );
            }
        }
        // The warm-up grows the range linearly over its epochs (2 steps per epoch here).
        let mut run = settings(32, 64, 3);
        run.relative_rotation = 90.0;
        run.relative_rotation_warmup = 2.0;
        let trainer = Trainer::new(run, synthetic_set(40, 2), Descriptor::sift(), None).unwrap();
        let ranges: Vec<f64> = [0, 2, 4, 5]
            .map(|s| trainer.relative_rotation_at(s))
            .to_vec();
        assert_eq!(ranges, [0.0, 45.0, 90.0, 90.0]);
        let mut bad = settings(32, 64, 1);
        bad.relative_rotation = -5.0;
        let e = Trainer::new(bad, synthetic_set(40, 2), Descriptor::sift(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--relative-rotation must be a non-negative"),
            "{e}"
        );
    }

    /// `unturned_share` leaves about that share of pairs with no relative turn; `tilt_cap`
    /// bounds the schedule; both refuse values that would do nothing or something else.
    #[test]
    fn unturned_share_and_tilt_cap_shape_the_augmentation() {
        let mut run = settings(400, 800, 1);
        run.relative_rotation = 60.0;
        run.unturned_share = 0.25;
        let mut trainer =
            Trainer::new(run, synthetic_set(400, 3), Descriptor::sift(), None).unwrap();
        trainer.prepare(0, 3.0);
        // The second columns of a pair's frames are parallel exactly when it is unturned.
        let unturned = trainer.frames[0]
            .iter()
            .zip(&trainer.frames[1])
            .filter(|(a, b)| {
                let cross = a[0][1] * b[1][1] - a[1][1] * b[0][1];
                let norms = (a[0][1].hypot(a[1][1])) * (b[0][1].hypot(b[1][1]));
                (cross / norms).abs() < 1e-4
            })
            .count();
        // Binomial(400, 0.25): mean 100, sd 8.7.
        assert!((70..=130).contains(&unturned), "{unturned} of 400 unturned");

        let mut capped = settings(32, 64, 12);
        capped.tilt_cap = 3.5;
        let tilts: Vec<f64> = [0, 1, 8].map(|e| capped.max_tilt(e)).to_vec();
        assert_eq!(tilts, [3.0, 3.5, 3.5]);
        assert_eq!(settings(32, 64, 12).max_tilt(8), 5.8);
        // The steps draw their frames at the capped tilt (2 steps per epoch here: step 2 is
        // in epoch 1, where the schedule says 4).
        let mut t = Trainer::new(capped, synthetic_set(40, 2), Descriptor::sift(), None).unwrap();
        let reported: Vec<f64> = (0..3).map(|_| t.step().unwrap().max_tilt).collect();
        assert_eq!(reported, [3.0, 3.0, 3.5]);

        type Spoil = fn(&mut RunSettings);
        let refusals: [(Spoil, &str); 3] = [
            (
                |s| s.unturned_share = 1.5,
                "--unturned-share must be between 0 and 1",
            ),
            (
                |s| s.unturned_share = 0.5,
                "--unturned-share needs --relative-rotation",
            ),
            (
                |s| s.tilt_cap = 0.5,
                "--tilt-cap must be 0 (none) or at least 1",
            ),
        ];
        for (spoil, message) in refusals {
            let mut bad = settings(32, 64, 1);
            spoil(&mut bad);
            let e = Trainer::new(bad, synthetic_set(40, 2), Descriptor::sift(), None)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(message), "{e}");
        }
    }

    #[test]
    fn refuses_batches_larger_than_the_points() {
        let set = synthetic_set(8, 1);
        let e = Trainer::new(settings(16, 64, 1), set, Descriptor::sift(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("only 8 distinct points"), "{e}");
    }

    /// K steps in one go equal K/2 steps, a checkpoint written to disk and read back, and K/2
    /// more: every weight, running statistic and momentum value bit for bit.
    #[test]
    fn resume_equals_an_uninterrupted_run() {
        let set = synthetic_set(48, 2);
        let s = settings(16, 64, 2); // 4 steps per epoch, 8 in all, the tilt changes at 4
        let mut whole = Trainer::new(s.clone(), set.clone(), Descriptor::sift(), None).unwrap();
        while !whole.finished() {
            whole.step().unwrap();
        }
        let mut first = Trainer::new(s.clone(), set.clone(), Descriptor::sift(), None).unwrap();
        for _ in 0..3 {
            first.step().unwrap();
        }
        let path =
            std::env::temp_dir().join(format!("wbs-resume-{}.safetensors", std::process::id()));
        first.checkpoint().save(&path).unwrap();
        drop(first);
        let ckpt = Checkpoint::load(&path).unwrap();
        std::fs::remove_file(&path).ok();
        let mut second = Trainer::resume(s.clone(), set.clone(), Descriptor::sift(), ckpt).unwrap();
        assert_eq!(second.steps_done(), 3);
        while !second.finished() {
            second.step().unwrap();
        }
        assert_eq!(whole.checkpoint(), second.checkpoint());
        assert_eq!(whole.model().params(), second.model().params());
        // Other settings are refused.
        let mut other = s.clone();
        other.lr = 0.01;
        let e = Trainer::resume(other, set, Descriptor::sift(), whole.checkpoint())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("lr: checkpoint has 0.005"), "{e}");
    }

    /// The thread count does not change the result: 1 and 3 threads give the same weights.
    #[test]
    fn independent_of_the_thread_count() {
        let set = synthetic_set(40, 4);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut t =
                    Trainer::new(settings(20, 60, 1), set.clone(), Descriptor::sift(), None)
                        .unwrap();
                while !t.finished() {
                    t.step().unwrap();
                }
                t.checkpoint()
            })
        };
        assert_eq!(run(1), run(3));
    }

    /// A tiny run on synthetic pairs lowers the loss: the loss of fixed held-out batches
    /// (batches of steps the run never takes, the same augmentation before and after) drops.
    #[test]
    fn tiny_run_lowers_the_loss() {
        let set = synthetic_set(96, 3);
        let mut t = Trainer::new(settings(48, 48 * 30, 1), set, Descriptor::sift(), None).unwrap();
        let held_out = 1_000_000..1_000_006;
        let mean =
            |t: &mut Trainer| held_out.clone().map(|s| t.loss_on_batch(s)).sum::<f64>() / 6.0;
        let before = mean(&mut t);
        while !t.finished() {
            t.step().unwrap();
        }
        let after = mean(&mut t);
        assert!(
            after < before - 0.02,
            "held-out loss {before:.4} → {after:.4}"
        );
    }
}
