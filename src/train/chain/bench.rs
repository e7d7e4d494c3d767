//! Training throughput (pairs/s of whole training steps, recorded in `docs/training.md`) and the
//! synthetic pairs it and the tests train on.

use std::fmt;
use std::time::{Duration, Instant};

use crate::nn::backend::Backend;
use crate::nn::ops::loss::LossKind;
use crate::nn::ops::sgd::Sgd;
use crate::nn::ops::spatial_transformer::{warp_forward, Affine, WarpSize};
use crate::nn::process_cpu_seconds;
use crate::nn::rng::Rng;
use crate::train::chain::affnet::TrainAffNet;
use crate::train::chain::on_backend::BackendTrainChain;
use crate::train::chain::{Descriptor, PairBatch, StepStats, StepTimes, TrainChain};
use crate::train::data::augment::{max_tilt_for_epoch, random_frame, rotation, tilt_shape};
use crate::Result;

/// A smooth random texture of `size × size` (a few Gaussian blobs and sinusoids, values 0..1):
/// structured enough for SIFT, cheap to make.
fn texture(size: usize, rng: &mut Rng) -> Vec<f32> {
    let blobs: Vec<[f64; 4]> = (0..12)
        .map(|_| {
            [
                rng.range(0.0, size as f64),
                rng.range(0.0, size as f64),
                rng.range(2.0, size as f64 / 6.0),
                rng.range(-1.0, 1.0),
            ]
        })
        .collect();
    let waves: Vec<[f64; 4]> = (0..3)
        .map(|_| {
            [
                rng.range(-0.4, 0.4),
                rng.range(-0.4, 0.4),
                rng.range(0.0, 6.3),
                rng.range(0.05, 0.2),
            ]
        })
        .collect();
    (0..size * size)
        .map(|k| {
            let (y, x) = ((k / size) as f64, (k % size) as f64);
            let mut v = 0.5;
            for b in &blobs {
                let d2 = (x - b[0]).powi(2) + (y - b[1]).powi(2);
                v += 0.4 * b[3] * (-d2 / (2.0 * b[2] * b[2])).exp();
            }
            for w in &waves {
                v += w[3] * (w[0] * x + w[1] * y + w[2]).sin();
            }
            v as f32
        })
        .collect()
}

/// `n` pairs of `size × size` patches of the same random texture: the anchor as is, the
/// positive seen through a known random affine distortion (rotation up to ±0.3 rad, tilt up to
/// `max_tilt`) about the patch centre, plus a little noise. Returns `(anchors, positives)`.
pub fn synthetic_pairs(n: usize, size: usize, max_tilt: f64, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let big = 2 * size;
    let (mut anchors, mut positives) = (Vec::with_capacity(n * size * size), Vec::new());
    let mut patch = vec![0.0; size * size];
    for _ in 0..n {
        let tex = texture(big, &mut rng);
        let half: Affine = [[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]];
        warp_forward(&tex, &[half], WarpSize::square(big, size), &mut patch);
        anchors.extend_from_slice(&patch);
        let t = rng.range(1.0, max_tilt);
        let psi = rng.range(-std::f64::consts::PI, std::f64::consts::PI);
        let r = rotation(rng.range(-0.3, 0.3));
        let a = tilt_shape(t, psi);
        let m = [
            [
                r[0][0] * a[0][0] + r[0][1] * a[1][0],
                r[0][0] * a[0][1] + r[0][1] * a[1][1],
            ],
            [
                r[1][0] * a[0][0] + r[1][1] * a[1][0],
                r[1][0] * a[0][1] + r[1][1] * a[1][1],
            ],
        ];
        let th: Affine = [
            [(0.5 * m[0][0]) as f32, (0.5 * m[0][1]) as f32, 0.0],
            [(0.5 * m[1][0]) as f32, (0.5 * m[1][1]) as f32, 0.0],
        ];
        warp_forward(&tex, &[th], WarpSize::square(big, size), &mut patch);
        positives.extend(patch.iter().map(|v| v + 0.01 * rng.range(-1.0, 1.0) as f32));
    }
    (anchors, positives)
}

/// A batch for tests and checks: `n` synthetic pairs of 64×64 sources (tilt up to 2) with
/// recipe frames (tilt up to 2, scale 0.5), all from `seed`.
pub struct SyntheticBatch {
    /// `N` anchor sources, 64×64 each.
    pub anchors: Vec<f32>,
    /// `N` positive sources, 64×64 each.
    pub positives: Vec<f32>,
    /// The anchors' augmentation frames.
    pub anchor_frames: Vec<Affine>,
    /// The positives' augmentation frames.
    pub positive_frames: Vec<Affine>,
}

impl SyntheticBatch {
    /// `n` pairs, everything drawn from `seed`.
    pub fn new(n: usize, seed: u64) -> Self {
        let (anchors, positives) = synthetic_pairs(n, 64, 2.0, seed);
        let (anchor_frames, positive_frames) = recipe_frames(n, 2.0, 0.5, &mut Rng::new(seed + 1));
        SyntheticBatch {
            anchors,
            positives,
            anchor_frames,
            positive_frames,
        }
    }

    /// The batch as the chains take it.
    pub fn batch(&self) -> PairBatch<'_> {
        PairBatch {
            anchors: &self.anchors,
            positives: &self.positives,
            source_size: 64,
            anchor_frames: &self.anchor_frames,
            positive_frames: &self.positive_frames,
        }
    }
}

/// The recipe's frames for a batch: a rotation shared by each pair, independent tilts.
pub fn recipe_frames(
    n: usize,
    max_tilt: f64,
    scale: f64,
    rng: &mut Rng,
) -> (Vec<Affine>, Vec<Affine>) {
    (0..n)
        .map(|_| {
            let phi = rng.range(-std::f64::consts::PI, std::f64::consts::PI);
            (
                random_frame(rng, phi, max_tilt, scale),
                random_frame(rng, phi, max_tilt, scale),
            )
        })
        .unzip()
}

/// Measured training throughput.
#[derive(Clone, Debug)]
pub struct TrainBench {
    /// Pairs per step.
    pub batch: usize,
    /// Threads of the rayon pool.
    pub threads: usize,
    /// `sift` or `hardnet`.
    pub descriptor: &'static str,
    /// Best wall-clock time of one step (forward, backward and SGD update).
    pub seconds: f64,
    /// `batch / seconds`.
    pub pairs_per_second: f64,
    /// Pairs per CPU-second summed over threads, from the step with the least CPU time (Linux):
    /// stays meaningful when other processes share the cores.
    pub pairs_per_cpu_second: Option<f64>,
    /// Stage times of the best step.
    pub times: StepTimes,
    /// Steps timed (after one warm-up step).
    pub steps: usize,
}

impl fmt::Display for TrainBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.times;
        writeln!(
            f,
            "train affnet ({} + hardnegc), batch {}, {} threads: {:.0} ms/step, {:.0} pairs/s{} (best of {} steps)",
            self.descriptor,
            self.batch,
            self.threads,
            self.seconds * 1e3,
            self.pairs_per_second,
            self.pairs_per_cpu_second
                .map(|c| format!(", {c:.0} pairs per CPU-second"))
                .unwrap_or_default(),
            self.steps
        )?;
        write!(
            f,
            "  ms: augment {:.0}, affnet fwd {:.0}, warp fwd {:.0}, descriptor fwd {:.0}, loss {:.0}, \
             descriptor bwd {:.0}, warp bwd {:.0}, affnet bwd {:.0}, sgd+other {:.0}",
            t.augment * 1e3,
            t.affnet_forward * 1e3,
            t.warp_forward * 1e3,
            t.descriptor_forward * 1e3,
            t.loss * 1e3,
            t.descriptor_backward * 1e3,
            t.warp_backward * 1e3,
            t.affnet_backward * 1e3,
            (self.seconds - t.total()).max(0.0) * 1e3
        )
    }
}

/// Times training steps (chain forward + backward + SGD) at `batch` pairs of 64×64 synthetic
/// patches with the recipe's augmentation: one warm-up step, then at least 3 steps and
/// `min_time`.
pub fn bench_step(batch: usize, descriptor: Descriptor, min_time: Duration) -> TrainBench {
    let name = descriptor_name(&descriptor);
    let mut chain = TrainChain::new(descriptor, LossKind::HardNegC);
    let step = |model: &mut TrainAffNet, b: &PairBatch, seed: u64, grads: &mut [f32]| {
        Ok(chain.step(model, b, seed, grads))
    };
    time_steps(batch, name, min_time, step).expect("the CPU chain does not fail")
}

/// [`bench_step`] with the chain over backend `b` (`train::chain::on_backend`): the same steps,
/// for comparing the two chains, or the backends.
pub fn bench_step_on<B: Backend>(
    b: &B,
    batch: usize,
    descriptor: Descriptor,
    min_time: Duration,
) -> Result<TrainBench> {
    let name = descriptor_name(&descriptor);
    let mut chain = BackendTrainChain::new(&TrainChain::new(descriptor, LossKind::HardNegC))?;
    let step = |model: &mut TrainAffNet, batch: &PairBatch, seed: u64, grads: &mut [f32]| {
        chain.step(b, model, batch, seed, grads)
    };
    time_steps(batch, name, min_time, step)
}

fn descriptor_name(descriptor: &Descriptor) -> &'static str {
    match descriptor {
        Descriptor::Sift(_) => "sift",
        Descriptor::HardNet(_) => "hardnet",
    }
}

/// The timing loop of [`bench_step`] around `step`, a chain's step.
fn time_steps(
    batch: usize,
    name: &'static str,
    min_time: Duration,
    mut step: impl FnMut(&mut TrainAffNet, &PairBatch, u64, &mut [f32]) -> Result<StepStats>,
) -> Result<TrainBench> {
    // Few distinct textures, repeated: generating textures is not what is measured.
    let distinct = batch.min(64);
    let (a, p) = synthetic_pairs(distinct, 64, 2.0, 1);
    let anchors: Vec<f32> = a.iter().cycle().take(batch * 4096).copied().collect();
    let positives: Vec<f32> = p.iter().cycle().take(batch * 4096).copied().collect();
    let mut rng = Rng::new(2);
    let mut model = TrainAffNet::new(3);
    let mut sgd = Sgd::affnet_recipe();
    let mut grads = vec![0.0; model.params().len()];
    let mut run = |seed: u64| -> Result<_> {
        let (fa, fp) = recipe_frames(batch, max_tilt_for_epoch(0), 0.5, &mut rng);
        let b = PairBatch {
            anchors: &anchors,
            positives: &positives,
            source_size: 64,
            anchor_frames: &fa,
            positive_frames: &fp,
        };
        let (t, cpu) = (Instant::now(), process_cpu_seconds());
        grads.fill(0.0);
        let stats = step(&mut model, &b, seed, &mut grads)?;
        sgd.step(model.params_mut(), &grads);
        let cpu = match (cpu, process_cpu_seconds()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        Ok((t.elapsed().as_secs_f64(), cpu, stats.times))
    };
    run(0)?;
    let start = Instant::now();
    let (mut best, mut best_cpu, mut best_times, mut steps) =
        (f64::INFINITY, f64::INFINITY, StepTimes::default(), 0);
    while steps < 3 || start.elapsed() < min_time {
        let (t, cpu, times) = run(steps as u64 + 1)?;
        if t < best {
            best = t;
            best_times = times;
        }
        if let Some(c) = cpu {
            best_cpu = best_cpu.min(c);
        }
        steps += 1;
    }
    Ok(TrainBench {
        batch,
        threads: rayon::current_num_threads(),
        descriptor: name,
        seconds: best,
        pairs_per_second: batch as f64 / best,
        pairs_per_cpu_second: (best_cpu.is_finite() && best_cpu > 0.0)
            .then(|| batch as f64 / best_cpu),
        times: best_times,
        steps,
    })
}

/// Training throughput at batch 1,024 with the default chain (differentiable SIFT, HardNegC),
/// for `wbs bench` and the trainer's report.
pub fn bench_report() -> String {
    format!(
        "{}\n",
        bench_step(1024, Descriptor::sift(), Duration::from_secs(5))
    )
}
