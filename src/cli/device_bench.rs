//! `wbs bench --device cuda`: the GPU's speed figures (networks' patches/s at batch 16,384,
//! 10k × 10k matching, whole matches, training pairs/s), measured in this process after a warm-up
//! run (kernel compilation and allocation pools are not timed). Every timing ends with a device
//! synchronisation. The targets and the recorded runs are in `docs/gpu-validation.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::describe::DescriptorKind;
use crate::gpu::backend::Cuda;
use crate::gpu::net::GpuNet;
use crate::gpu::search::device_tentatives;
use crate::gpu::Gpu;
use crate::matcher::Matcher;
use crate::networks::Models;
use crate::nn::ops::loss::LossKind;
use crate::nn::ops::spatial_transformer::Affine;
use crate::nn::{self, NetworkKind, Weights, PATCH_LEN};
use crate::pipeline::{Config, Method};
use crate::train::chain::on_backend::BackendTrainChain;
use crate::train::{Descriptor, PairBatch, Sgd, TrainAffNet, TrainChain};
use crate::Result;

/// Patches per network batch.
pub const NET_BATCH: usize = 16_384;
/// Pairs per training step.
pub const TRAIN_BATCH: usize = 1_024;

/// Minimum and median of `repeat` timed runs of `f` (seconds), after one warm-up run.
fn time(gpu: &Gpu, repeat: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?;
    gpu.synchronize()?;
    let mut s = Vec::new();
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        f()?;
        gpu.synchronize()?;
        s.push(t.elapsed().as_secs_f64());
    }
    s.sort_by(f64::total_cmp);
    Ok((s[0], s[s.len() / 2]))
}

fn weights(kind: NetworkKind) -> (Weights, &'static str) {
    match nn::locate(kind, None).and_then(|p| Weights::load(&p)) {
        Ok(w) => (w, "weights found"),
        Err(_) => (nn::random_weights(kind, 1), "random weights"),
    }
}

/// The whole report (one line per figure).
pub fn bench_report(
    gpu: &Gpu,
    pair: Option<(&Path, &Path)>,
    descriptors: usize,
    repeat: usize,
) -> Result<String> {
    let mut out = String::new();
    let info = gpu.info();
    let _ = writeln!(
        out,
        "wbs bench --device cuda: {} (compute {}.{}), {repeat} timed runs each (min / median)",
        info.name, info.compute_capability.0, info.compute_capability.1
    );

    // Networks: throughput on one batch already on the device (standardisation included).
    let patches = gpu.upload(&nn::random_patches(NET_BATCH, 3))?;
    for kind in [
        NetworkKind::AffNet,
        NetworkKind::OriNet,
        NetworkKind::HardNet,
    ] {
        let (w, source) = weights(kind);
        let net = GpuNet::new(gpu, kind, &w)?;
        let (min, median) = time(gpu, repeat, || net.run(gpu, &patches).map(|_| ()))?;
        let _ = writeln!(
            out,
            "{kind:<8} batch {NET_BATCH}: {:>12.0} patches/s  ({:.2} / {:.2} ms, {source})",
            NET_BATCH as f64 / min,
            min * 1e3,
            median * 1e3
        );
    }
    debug_assert_eq!(patches.len(), NET_BATCH * PATCH_LEN);

    // Matching: 2-NN and the ratio test, descriptors already on the device, results downloaded.
    let n = descriptors.max(2);
    let q = gpu.upload(&unit_rows(n, 1))?;
    let d = gpu.upload(&unit_rows(n, 2))?;
    let (min, median) = time(gpu, repeat, || {
        device_tentatives(gpu, &q, &d, 128, 0.8).map(|_| ())
    })?;
    let _ = writeln!(
        out,
        "nearest neighbours {n} x {n} (128-D, exact, 2-NN + ratio test): {:.3} / {:.3} ms  ({:.1} TFLOP/s)",
        min * 1e3,
        median * 1e3,
        2.0 * (n as f64).powi(2) * 128.0 / min / 1e12
    );

    // MODS's FGINN lists: the 50 nearest of every query, scores and rows downloaded (the walk over
    // them is the host's and not timed), against a database 4× smaller (a textured image's pool
    // against a poorer one's).
    let (nq, nd, k) = (n, (n / 4).max(2), 50.min(n / 4).max(1));
    let d = gpu.upload(&unit_rows(nd, 3))?;
    let (min, median) = time(gpu, repeat, || {
        let (scores, rows) = crate::gpu::ops::k_nearest_scores(gpu, &q, &d, 128, k)?;
        gpu.download(&scores)?;
        gpu.download(&rows)?;
        Ok(())
    })?;
    let _ = writeln!(
        out,
        "k nearest {nq} x {nd} (128-D, exact, k {k}, FGINN's lists): {:.3} / {:.3} ms  ({:.1} TFLOP/s)",
        min * 1e3,
        median * 1e3,
        2.0 * nq as f64 * nd as f64 * 128.0 / min / 1e12
    );

    // End to end after warm-up: networks loaded once, images read from disk each run.
    match pair {
        Some((a, b)) => {
            for (label, config) in end_to_end_configs() {
                // Weights found as for `wbs match`, else random (the speed hardly depends on
                // them; the line says which).
                let models = (|| -> Result<(Matcher, Vec<&'static str>)> {
                    let mut m = Models::none();
                    let mut sources = Vec::new();
                    if config.shape == crate::shape::ShapeMethod::Affnet {
                        let (w, s) = weights(NetworkKind::AffNet);
                        m.affnet = Some(crate::nn::AffNet::from_weights(&w)?);
                        sources.push(s);
                    }
                    if config.descriptor == DescriptorKind::Hardnet {
                        let (w, s) = weights(NetworkKind::HardNet);
                        m.hardnet = Some(crate::nn::HardNet::from_weights(&w)?);
                        sources.push(s);
                    }
                    let mut config = config.clone();
                    config.device = crate::device::Device::Cuda;
                    Ok((Matcher::with_models(config, m)?, sources))
                })();
                match models {
                    Ok((matcher, sources)) => {
                        let mut report = None;
                        let (min, median) = time(gpu, repeat, || {
                            report = Some(matcher.match_files(a, b)?);
                            Ok(())
                        })?;
                        let (inliers, verdict) = report
                            .map(|r| (r.inliers, r.registered))
                            .unwrap_or((0, false));
                        let _ = writeln!(
                            out,
                            "match {} {} ({label}): {:.3} / {:.3} s  [inliers {inliers}, {}; {}]",
                            a.display(),
                            b.display(),
                            min,
                            median,
                            if verdict {
                                "registered"
                            } else {
                                "not registered"
                            },
                            sources.join(", ")
                        );
                    }
                    Err(e) => {
                        let _ = writeln!(out, "match ({label}): skipped: {e}");
                    }
                }
            }
        }
        None => {
            let _ = writeln!(out, "match: no image pair found (pass --pair A B)");
        }
    }

    // Training: a step as `wbs train affnet --device cuda` runs it (the chain on CUDA, then SGD on
    // the host), with the sources uploaded per step; the trainer's batch sampling is not timed.
    let s = 64;
    let (w, source) = weights(NetworkKind::AffNet);
    let mut model = TrainAffNet::from_weights(&w)?;
    let mut chain =
        BackendTrainChain::new(&TrainChain::new(Descriptor::sift(), LossKind::HardNegC))?;
    let cuda = Cuda::new(gpu);
    let anchors = nn::random_patches(TRAIN_BATCH * s * s / PATCH_LEN, 5);
    let positives = nn::random_patches(TRAIN_BATCH * s * s / PATCH_LEN, 6);
    let (frames, frames_p) = (frames_from(TRAIN_BATCH, 7), frames_from(TRAIN_BATCH, 8));
    let batch = PairBatch {
        anchors: &anchors,
        positives: &positives,
        source_size: s,
        anchor_frames: &frames,
        positive_frames: &frames_p,
    };
    let mut grads = vec![0.0; model.params().len()];
    let mut sgd = Sgd::affnet_recipe();
    let mut step = 0u64;
    let (min, median) = time(gpu, repeat, || {
        grads.fill(0.0);
        chain.step(&cuda, &mut model, &batch, step, &mut grads)?;
        sgd.step(model.params_mut(), &grads);
        step += 1;
        Ok(())
    })?;
    let _ = writeln!(
        out,
        "training (wbs train affnet --device cuda's step: AffNet with dropout, spatial transformer, SIFT, HardNegC on the device, SGD on the host; batch {TRAIN_BATCH}, 64×64 sources, {source}): {:>9.0} pairs/s  ({:.2} / {:.2} ms per step)",
        TRAIN_BATCH as f64 / min,
        min * 1e3,
        median * 1e3
    );
    Ok(out)
}

/// hesaffnet + HardNet (the 0.15 s target) and hesaffnet + RootSIFT.
fn end_to_end_configs() -> Vec<(&'static str, Config)> {
    let mut hardnet = Config::preset(Method::Hesaffnet);
    hardnet.descriptor = DescriptorKind::Hardnet;
    vec![
        ("hesaffnet+hardnet", hardnet),
        ("hesaffnet+rootsift", Config::preset(Method::Hesaffnet)),
    ]
}

fn unit_rows(n: usize, seed: u64) -> Vec<f32> {
    let mut v = crate::nn::gradcheck::random_vec(n * 128, seed, 1.0);
    v.iter_mut().for_each(|x| *x = x.abs());
    v.chunks_mut(128).for_each(nn::l2_normalise);
    v
}

/// Mild random augmentation frames (rotation, anisotropic scale, small shift).
fn frames_from(n: usize, seed: u64) -> Vec<Affine> {
    crate::nn::gradcheck::random_vec(4 * n, seed, 1.0)
        .chunks(4)
        .map(|v| {
            let (s, c) = (v[0] * 0.5).sin_cos();
            let (a, b) = (1.0 + 0.2 * v[1], 1.0 - 0.2 * v[1]);
            [[c * a, -s * b, 0.05 * v[2]], [s * a, c * b, 0.05 * v[3]]]
        })
        .collect()
}
