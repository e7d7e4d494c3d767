//! The two CPU inference paths of a network side by side: `nn::engine` (BN folded, fused NHWC
//! stages, what `AffNet`/`OriNet`/`HardNet` run) and `nn::network::Network` in `Mode::Eval` (the
//! training network's forward over the `nn::ops` convolution). Same random weights and patches;
//! alternating runs, best of each, wall-clock and per CPU-second (Linux), and the largest output
//! difference.
//!
//! `cargo run --release --example inference_paths -- [BATCH] [SECONDS]` (defaults 1024, 3).

use std::time::{Duration, Instant};

use wbs::nn::network::{Mode, Network, Workspace};
use wbs::nn::{random_patches, random_weights, AffNet, HardNet, NetworkKind, OriNet, PATCH_SIZE};

/// CPU time of this process's threads so far (Linux `/proc/self/task/*/schedstat`).
fn cpu_seconds() -> f64 {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 * 1e-9
}

/// Best wall-clock and CPU seconds of `run` over `min_time` (at least 3 runs).
fn time(min_time: Duration, mut run: impl FnMut()) -> (f64, f64) {
    run();
    let start = Instant::now();
    let (mut wall, mut cpu, mut runs) = (f64::INFINITY, f64::INFINITY, 0);
    while runs < 3 || start.elapsed() < min_time {
        let (t, c) = (Instant::now(), cpu_seconds());
        run();
        wall = wall.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(cpu_seconds() - c);
        runs += 1;
    }
    (wall, cpu)
}

fn main() -> wbs::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let batch: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let seconds: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let min_time = Duration::from_secs_f64(seconds);
    for kind in [
        NetworkKind::AffNet,
        NetworkKind::OriNet,
        NetworkKind::HardNet,
    ] {
        let w = random_weights(kind, 7);
        let patches = random_patches(batch, 11);
        let mut net = Network::from_weights(kind, &w, PATCH_SIZE, PATCH_SIZE)?;
        let mut ws = Workspace::default();
        // The engine's raw outputs (HardNet: before the L2 normalisation, as the network's).
        let engine: Box<dyn Fn() -> Vec<f32>> = match kind {
            NetworkKind::AffNet => {
                let m = AffNet::from_weights(&w)?;
                let p = patches.clone();
                Box::new(move || m.forward_raw(&p).concat())
            }
            NetworkKind::OriNet => {
                let m = OriNet::from_weights(&w)?;
                let p = patches.clone();
                Box::new(move || m.forward_raw(&p).concat())
            }
            NetworkKind::HardNet => {
                let m = HardNet::from_weights(&w)?;
                let p = patches.clone();
                Box::new(move || m.describe(&p))
            }
        };
        let mut network_out = net.forward(&patches, Mode::Eval, &mut ws).to_vec();
        if kind == NetworkKind::HardNet {
            for d in network_out.chunks_mut(128) {
                wbs::nn::l2_normalise(d);
            }
        }
        let engine_out = engine();
        let diff = engine_out
            .iter()
            .zip(&network_out)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        for round in 1..=2 {
            let (ew, ec) = time(min_time, || drop(std::hint::black_box(engine())));
            let (nw, nc) = time(min_time, || {
                std::hint::black_box(net.forward(&patches, Mode::Eval, &mut ws));
            });
            let n = batch as f64;
            println!(
                "{kind} batch {batch} round {round}: engine {:.0} patches/s ({:.0} per CPU-s), \
                 Network eval {:.0} patches/s ({:.0} per CPU-s); max |diff| {diff:.2e}",
                n / ew,
                n / ec,
                n / nw,
                n / nc
            );
        }
    }
    Ok(())
}
