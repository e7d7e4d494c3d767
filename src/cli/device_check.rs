//! `wbs gpu-check` (a CLI runner above the whole library, since it runs whole networks, training
//! steps and matches; the GPU backend itself knows none of them): every kernel against its CPU reference on random inputs of odd sizes, then
//! `wbs match` on both devices. Prints a table; any failure makes the command fail.
//!
//! The op checks are the generic ones of [`crate::nn::parity`], run on the CUDA backend
//! ([`Cuda`]); this module adds the checks of what is built from several ops on the device: the
//! training chain's checks (`train::chain::parity`: a step of `train::chain::on_backend` on CUDA,
//! its HardNet descriptor pass) and the three networks (`gpu::net`).
//!
//! Error measure: the normwise relative error `max|gpu − cpu| / max|cpu|` (see the module docs of
//! [`crate::gpu`]), tolerance [`TOLERANCE`]; the training step through HardNet by the 2-norm ratio
//! `‖gpu − cpu‖₂ / ‖cpu‖₂`, [`HARDNET_STEP_TOLERANCE`] (its docs say why). End to end: the same verdict, and inlier counts
//! within 2 % (at least 1 inlier of slack).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::describe::DescriptorKind;
use crate::gpu::backend::Cuda;
use crate::gpu::net::GpuNet;
use crate::gpu::Gpu;
use crate::matcher::Matcher;
use crate::networks::Models;
use crate::nn::parity::{self, net_patches};
pub use crate::nn::parity::{rel_error, Row, TOLERANCE};
use crate::nn::{self, AffNet, HardNet, NetworkKind, OriNet, Weights};
use crate::orient::OrientationMethod;
use crate::pipeline::{self, Config, Method};
pub use crate::train::chain::parity::{chain_checks, HARDNET_STEP_TOLERANCE};
use crate::Result;

/// End to end: inlier counts may differ by this fraction (and at least one inlier).
pub const INLIER_TOLERANCE: f64 = 0.02;

/// Runs every check: the op checks of [`parity::kernel_checks`] on the CUDA backend, then
/// [`device_checks`]; `seed` varies the random inputs.
pub fn kernel_checks(gpu: &Gpu, seed: u64) -> Vec<Row> {
    let mut rows = parity::kernel_checks(&Cuda::new(gpu), seed);
    rows.extend(device_checks(gpu, seed));
    rows
}

/// The checks of what the device builds from several ops: training-chain steps and the HardNet
/// descriptor pass ([`chain_checks`] on the CUDA backend), and the three networks.
pub fn device_checks(gpu: &Gpu, seed: u64) -> Vec<Row> {
    type Check = fn(&Gpu, u64) -> Result<f64>;
    let checks: &[(&str, &str, Check)] = &[
        ("AffNet (random weights)", "37 patches", check_affnet),
        ("OriNet (random weights)", "37 patches", check_orinet),
        ("HardNet (random weights)", "37 patches", check_hardnet),
    ];
    let mut rows = chain_checks(&Cuda::new(gpu), seed);
    rows.extend(checks.iter().map(|(name, shape, f)| Row {
        name: name.to_string(),
        shape: shape.to_string(),
        outcome: f(gpu, seed).map_err(|e| e.to_string()),
        tolerance: TOLERANCE,
    }));
    rows
}

fn check_net(gpu: &Gpu, seed: u64, kind: NetworkKind) -> Result<f64> {
    let w = nn::random_weights(kind, seed);
    let patches = net_patches(seed);
    let cpu: Vec<f32> = match kind {
        NetworkKind::AffNet => AffNet::from_weights(&w)?
            .forward_raw(&patches)
            .iter()
            .flatten()
            .copied()
            .collect(),
        NetworkKind::OriNet => OriNet::from_weights(&w)?
            .forward_raw(&patches)
            .iter()
            .flatten()
            .copied()
            .collect(),
        NetworkKind::HardNet => HardNet::from_weights(&w)?.describe(&patches),
    };
    let net = GpuNet::new(gpu, kind, &w)?;
    let out = net.run(gpu, &gpu.upload(&patches)?)?;
    Ok(rel_error(&gpu.download(&out)?, &cpu))
}

fn check_affnet(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_net(gpu, seed, NetworkKind::AffNet)
}

fn check_orinet(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_net(gpu, seed, NetworkKind::OriNet)
}

fn check_hardnet(gpu: &Gpu, seed: u64) -> Result<f64> {
    check_net(gpu, seed, NetworkKind::HardNet)
}

/// One end-to-end comparison.
#[derive(Clone, Debug)]
pub struct MatchRow {
    /// The image pair's file names.
    pub pair: String,
    /// The matcher setting compared.
    pub setting: String,
    /// Per device (CPU, then GPU): registered, inliers and total milliseconds; or why the pair
    /// could not run.
    pub outcome: std::result::Result<[(bool, usize, f64); 2], String>,
}

impl MatchRow {
    /// Whether both devices gave the same verdict and inlier counts within
    /// [`INLIER_TOLERANCE`].
    pub fn ok(&self) -> bool {
        match &self.outcome {
            Ok([(r1, i1, _), (r2, i2, _)]) => {
                let slack = (INLIER_TOLERANCE * (*i1).max(*i2) as f64).max(1.0);
                r1 == r2 && (*i1 as f64 - *i2 as f64).abs() <= slack
            }
            Err(_) => false,
        }
    }
}

/// Weights for an end-to-end setting: the usual lookup, else seeded random weights.
fn weights_for(kind: NetworkKind) -> (Weights, bool) {
    match nn::locate(kind, None).and_then(|p| Weights::load(&p)) {
        Ok(w) => (w, true),
        Err(_) => (nn::random_weights(kind, 7), false),
    }
}

/// `wbs match` on both devices for each pair and each setting: hesaff + RootSIFT (device
/// matching only), hesaffnet + RootSIFT (AffNet), and hesaffnet + OriNet + HardNet (all three
/// networks). Networks without weights found run with seeded random weights (said in the
/// setting's name), which still compares the devices.
pub fn match_checks(pairs: &[(PathBuf, PathBuf)]) -> Vec<MatchRow> {
    let mut settings: Vec<(String, Config)> = Vec::new();
    settings.push(("hesaff+rootsift".into(), Config::preset(Method::Hesaff)));
    settings.push((
        "hesaffnet+rootsift".into(),
        Config::preset(Method::Hesaffnet),
    ));
    let mut full = Config::preset(Method::Hesaffnet);
    full.orientation = OrientationMethod::Orinet;
    full.descriptor = DescriptorKind::Hardnet;
    settings.push(("hesaffnet+orinet+hardnet".into(), full));

    let mut rows = Vec::new();
    let (wa, fa) = weights_for(NetworkKind::AffNet);
    let (wo, fo) = weights_for(NetworkKind::OriNet);
    let (wh, fh) = weights_for(NetworkKind::HardNet);
    for (name, config) in &settings {
        let uses = |k: NetworkKind| match k {
            NetworkKind::AffNet => config.shape == crate::shape::ShapeMethod::Affnet,
            NetworkKind::OriNet => config.orientation == OrientationMethod::Orinet,
            NetworkKind::HardNet => config.descriptor == DescriptorKind::Hardnet,
        };
        let random: Vec<&str> = [
            (NetworkKind::AffNet, fa, "affnet"),
            (NetworkKind::OriNet, fo, "orinet"),
            (NetworkKind::HardNet, fh, "hardnet"),
        ]
        .iter()
        .filter(|(k, found, _)| uses(*k) && !found)
        .map(|(_, _, n)| *n)
        .collect();
        let label = if random.is_empty() {
            name.clone()
        } else {
            format!("{name} (random {})", random.join(", "))
        };
        let models = || -> Result<Models> {
            let mut cpu = Models::none();
            if uses(NetworkKind::AffNet) {
                cpu.affnet = Some(AffNet::from_weights(&wa)?);
            }
            if uses(NetworkKind::OriNet) {
                cpu.orinet = Some(OriNet::from_weights(&wo)?);
            }
            if uses(NetworkKind::HardNet) {
                cpu.hardnet = Some(HardNet::from_weights(&wh)?);
            }
            Ok(cpu)
        };
        let on = |device: crate::device::Device, models: Models| {
            let mut config = config.clone();
            config.device = device;
            Matcher::with_models(config, models)
        };
        for (a, b) in pairs {
            let outcome = models().and_then(|cpu| {
                let c = on(crate::device::Device::Cpu, cpu.clone())?.match_files(a, b)?;
                let g = on(crate::device::Device::Cuda, cpu)?.match_files(a, b)?;
                let total = |r: &pipeline::MatchReport| {
                    r.timings_ms.get("total").copied().unwrap_or(f64::NAN)
                };
                Ok([
                    (c.registered, c.inliers, total(&c)),
                    (g.registered, g.inliers, total(&g)),
                ])
            });
            rows.push(MatchRow {
                pair: format!("{} {}", short(a), short(b)),
                setting: label.clone(),
                outcome: outcome.map_err(|e| e.to_string()),
            });
        }
    }
    rows
}

fn short(p: &Path) -> String {
    let parts: Vec<String> = p
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

/// The printed report and whether everything passed.
pub fn report(gpu: &Gpu, kernels: &[Row], matches: &[MatchRow]) -> (String, bool) {
    let mut out = String::new();
    let info = gpu.info();
    let _ = writeln!(
        out,
        "wbs gpu-check on {} (compute {}.{}, {:.1} GiB), tolerance {TOLERANCE:e} (max|gpu − cpu| / max|cpu|)",
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.memory_bytes as f64 / (1u64 << 30) as f64
    );
    let _ = writeln!(
        out,
        "{:<46} {:<28} {:>10}  result",
        "kernel", "shape", "error"
    );
    let mut all = true;
    for r in kernels {
        let (err, verdict) = match &r.outcome {
            Ok(e) => {
                let verdict = if r.ok() { "ok" } else { "FAIL" };
                let verdict = if r.tolerance == TOLERANCE {
                    verdict.to_string()
                } else {
                    format!("{verdict} (2-norm, tolerance {:e})", r.tolerance)
                };
                (format!("{e:.2e}"), verdict)
            }
            Err(e) => ("-".into(), format!("FAIL: {e}")),
        };
        all &= r.ok();
        let _ = writeln!(out, "{:<46} {:<28} {:>10}  {verdict}", r.name, r.shape, err);
    }
    let _ = writeln!(
        out,
        "\nend to end (same verdict, inliers within {:.0} %): cpu vs cuda",
        INLIER_TOLERANCE * 100.0
    );
    for m in matches {
        let line = match &m.outcome {
            Ok([(r1, i1, t1), (r2, i2, t2)]) => format!(
                "{} / {}  inliers {} / {}  time {:.0} / {:.0} ms  {}",
                verdict(*r1),
                verdict(*r2),
                i1,
                i2,
                t1,
                t2,
                if m.ok() { "ok" } else { "FAIL" }
            ),
            Err(e) => format!("FAIL: {e}"),
        };
        all &= m.ok();
        let _ = writeln!(out, "{:<34} {:<44} {line}", m.pair, m.setting);
    }
    let _ = writeln!(out, "\n{}", if all { "ALL PASSED" } else { "FAILED" });
    (out, all)
}

fn verdict(registered: bool) -> &'static str {
    if registered {
        "REGISTERED"
    } else {
        "NOT REGISTERED"
    }
}
