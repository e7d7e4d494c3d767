//! One test body per check, run on every device wbs can use here (candle's `test_device!`
//! pattern): the `cpu` instance always, the `cuda` instance where a GPU answers. Each body checks
//! its device against something independent of that device's code (the reference layers, a
//! brute-force search, the CPU's whole match), so the CPU instance tests the CPU path too.
//!
//! The op checks of `nn::parity` (what `wbs gpu-check` runs) are instantiated the same way, one
//! module per check under `op::` (`op::relu::cpu`, `op::relu::cuda`, ...), on the
//! `nn::backend::Cpu` and `gpu::backend::Cuda` backends, and so are the training chain's checks
//! of `train::chain::parity` under `chain::` (`chain::step_hardneg::cpu`, ...: a step of the
//! chain over a backend against `TrainChain`'s); the checks that only the device has (networks,
//! whole matches: `cli::device_check`) run where a GPU answers. `--nocapture` prints each
//! check's error.
//!
//! Without a GPU the `cuda` instances pass without running, and the binary says so once on
//! stderr (written past the test harness's capture, so that CI shows it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;
#[cfg(feature = "cuda")]
use std::sync::{Mutex, MutexGuard, OnceLock};

use wbs::device::{self, Device, DeviceKind};
#[cfg(feature = "cuda")]
use wbs::gpu::Gpu;
use wbs::image::{load_gray, GrayImage, LoadOptions};
use wbs::laf::Laf;
use wbs::networks::{Models, Networks};
use wbs::nn::backend::{Backend, Cpu};
use wbs::nn::parity::{self, KernelCheck};
use wbs::nn::{random_weights, AffNet, HardNet, NetworkKind, OriNet};
use wbs::patch::{extract_patches, NET_PATCH};
use wbs::pyramid::ScaleSpace;
use wbs::{Config, Matcher, Method};

/// Runs `$body(Device)` as `$name::cpu` and `$name::cuda`.
macro_rules! on_every_device {
    ($name:ident) => {
        mod $name {
            #[test]
            fn cpu() {
                super::$name(wbs::device::Device::Cpu);
            }

            #[test]
            fn cuda() {
                if super::cuda_present() {
                    super::$name(wbs::device::Device::Cuda);
                }
            }
        }
    };
}

static CUDA_ABSENT: Once = Once::new();

/// Whether a CUDA GPU answers; says once (on the real stderr) when none does.
fn cuda_present() -> bool {
    match wbs::gpu::probe() {
        Ok(_) => true,
        Err(reason) => {
            CUDA_ABSENT.call_once(|| {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "device_parity: no CUDA here ({reason}): the `cuda` instances ran nothing"
                );
            });
            false
        }
    }
}

/// The seed of the op checks' random inputs (`wbs gpu-check`'s default).
const SEED: u64 = 1;

/// The GPU the `cuda` op checks share (one, so that its kernels compile once), behind a lock
/// (one check at a time on its stream); `None` without a GPU.
#[cfg(feature = "cuda")]
fn shared_gpu() -> Option<MutexGuard<'static, Gpu>> {
    static GPU: OnceLock<Option<Mutex<Gpu>>> = OnceLock::new();
    let gpu = GPU.get_or_init(|| {
        cuda_present().then(|| Mutex::new(Gpu::open("device_parity").expect("the GPU opens")))
    });
    // A failed check (a panic while locked) must not fail the others.
    gpu.as_ref()
        .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// The op checks of `nn::parity`.
fn op_list<B: Backend>() -> Vec<KernelCheck<B>> {
    parity::kernel_check_list::<B>()
}

/// The training chain's checks (`train::chain::parity`: a step of the chain over a backend
/// against `TrainChain`'s, with either descriptor, and its HardNet descriptor pass).
fn chain_list<B: Backend>() -> Vec<KernelCheck<B>> {
    wbs::train::chain::parity::chain_check_list::<B>()
}

/// Runs the check `id` of `list` on `backend`; fails with its error.
fn run_check<B: Backend>(backend: &B, list: Vec<KernelCheck<B>>, id: &str) {
    let check = list
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id}"));
    let row = check.row(backend, SEED);
    let line = format!(
        "{} ({}) on {}: {:?}, tolerance {:e}",
        row.name,
        row.shape,
        backend.name(),
        row.outcome,
        row.tolerance
    );
    eprintln!("{line}"); // the error, shown with --nocapture
    assert!(row.ok(), "{line}");
}

/// `$module::$id::cpu` and `$module::$id::cuda` for each check `$id` of `$list`, and `$ids`, the
/// list of those instantiated.
macro_rules! check_instances {
    ($module:ident, $list:ident, $ids:ident: $($id:ident),* $(,)?) => {
        mod $module {
            $(
                mod $id {
                    #[test]
                    fn cpu() {
                        use wbs::nn::backend::Cpu;
                        crate::run_check(&Cpu, crate::$list(), stringify!($id));
                    }

                    #[cfg(feature = "cuda")]
                    #[test]
                    fn cuda() {
                        use wbs::gpu::backend::Cuda;
                        if let Some(gpu) = crate::shared_gpu() {
                            let cuda = Cuda::new(&gpu);
                            crate::run_check(&cuda, crate::$list(), stringify!($id));
                        }
                    }
                }
            )*
        }

        /// The checks of `$list` instantiated here.
        const $ids: &[&str] = &[$(stringify!($id)),*];
    };
}

check_instances!(
    op,
    op_list,
    OP_CHECKS: relu,
    tanh,
    conv_small,
    conv_wide,
    conv_head,
    conv_backward_small,
    conv_backward_wide,
    bn_stats,
    bn_backward,
    bn_eval,
    pool,
    standardise,
    l2,
    normalise_backward,
    extract,
    warp_fwd,
    warp_bwd,
    sift_fwd,
    sift_bwd,
    nearest,
    k_nearest,
    hardnegc,
    hardneg,
    posdist,
    sgd,
    dropout,
);

check_instances!(
    chain,
    chain_list,
    CHAIN_CHECKS: step_hardnegc_terms,
    step_hardneg,
    step_posdist,
    hardnet_descriptor_fwd,
    hardnet_descriptor_bwd,
    step_hardnet,
    step_hardnet_gradients,
);

#[test]
fn every_op_check_is_instantiated() {
    let ids: Vec<&str> = parity::kernel_check_list::<Cpu>()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        ids, OP_CHECKS,
        "instantiate every check of nn::parity in op_checks!"
    );
}

#[test]
fn every_chain_check_is_instantiated() {
    let ids: Vec<&str> = chain_list::<Cpu>().iter().map(|c| c.id).collect();
    assert_eq!(
        ids, CHAIN_CHECKS,
        "instantiate every check of train::chain::parity in check_instances!(chain, ...)"
    );
}

/// The checks `wbs gpu-check` adds on the device (training steps, the HardNet descriptor pass,
/// the networks), where a GPU answers.
#[cfg(feature = "cuda")]
#[test]
fn device_checks_pass_on_a_gpu() {
    if let Some(gpu) = shared_gpu() {
        let rows = wbs::cli::device_check::device_checks(&gpu, SEED);
        let failed: Vec<_> = rows.iter().filter(|r| !r.ok()).collect();
        assert!(failed.is_empty(), "failed device checks: {failed:#?}");
    }
}

/// `wbs gpu-check`'s end-to-end comparison on the bundled pair (all three settings), where a GPU
/// answers.
#[cfg(feature = "cuda")]
#[test]
fn match_checks_pass_on_a_gpu() {
    if cuda_present() {
        let pairs = [(sample("img1.png"), sample("img2.png"))];
        let rows = wbs::cli::device_check::match_checks(&pairs);
        assert_eq!(rows.len(), 3, "one row per setting");
        let failed: Vec<_> = rows.iter().filter(|r| !r.ok()).collect();
        assert!(failed.is_empty(), "failed end-to-end checks: {failed:#?}");
    }
}

/// `max|got − want| / max|want|`, the parity policy's normwise relative error.
fn normwise(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(0f64, |m, v| m.max((*v as f64).abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

fn textured(w: usize, h: usize) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as f32, y as f32);
        110.0 + 60.0 * (0.17 * x).sin() * (0.11 * y).cos() + 25.0 * ((x - 40.0) * y / 500.0).sin()
    })
}

/// Frames of several scales, shapes and angles, some near or over the border.
fn frames() -> Vec<Laf> {
    (0..57)
        .map(|k| {
            let t = k as f32;
            let s = 2.0 + (t * 0.7) % 30.0;
            Laf {
                a: [[s * 1.2, 0.0], [s * 0.3, s / 1.2]],
                c: [(t * 37.0) % 190.0 - 5.0, (t * 23.0) % 150.0 - 5.0],
            }
            .rotated(t * 0.4)
        })
        .collect()
}

fn placed(models: Models, device: Device) -> Networks {
    let resolved = device::resolve(device, true).expect("the device resolves");
    Networks::place(models, &resolved).expect("the networks are placed")
}

/// Each network on the device, patches sampled from a scale space by the device, against the
/// reference layers (NCHW, unfused) on patches from the CPU sampler.
fn networks_match_the_reference_layers(device: Device) {
    let models = Models {
        affnet: Some(AffNet::from_weights(&random_weights(NetworkKind::AffNet, 1)).unwrap()),
        orinet: Some(OriNet::from_weights(&random_weights(NetworkKind::OriNet, 2)).unwrap()),
        hardnet: Some(HardNet::from_weights(&random_weights(NetworkKind::HardNet, 3)).unwrap()),
    };
    let networks = placed(models.clone(), device);
    let image = textured(201, 157);
    let space = ScaleSpace::build(&image);
    let prepared = networks.prepare(&space).unwrap();
    let lafs = frames();
    let patches = extract_patches(&space, &lafs, &NET_PATCH);
    for kind in [
        NetworkKind::AffNet,
        NetworkKind::OriNet,
        NetworkKind::HardNet,
    ] {
        let got = networks.run(kind, &prepared, &lafs).unwrap();
        let want: Vec<f32> = match kind {
            NetworkKind::AffNet => models
                .affnet
                .as_ref()
                .unwrap()
                .forward_reference(&patches)
                .concat(),
            NetworkKind::OriNet => models
                .orinet
                .as_ref()
                .unwrap()
                .forward_reference(&patches)
                .concat(),
            NetworkKind::HardNet => models
                .hardnet
                .as_ref()
                .unwrap()
                .describe_reference(&patches),
        };
        let error = normwise(&got, &want);
        assert!(
            error <= 1e-4,
            "{kind} on {device}: normwise error {error:e}"
        );
        assert!(networks.run(kind, &prepared, &[]).unwrap().is_empty());
    }
}
on_every_device!(networks_match_the_reference_layers);

/// `n` unit rows of `dim` seeded pseudo-random values in [0, 1) before normalising.
fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut v: Vec<f32> = (0..n * dim)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    v.chunks_mut(dim).for_each(wbs::nn::l2_normalise);
    v
}

/// Brute force: every row of `database` as (L2 distance to `query`, row), nearest first, ties by
/// row.
fn by_distance(query: &[f32], database: &[f32], dim: usize) -> Vec<(f32, usize)> {
    let mut dist: Vec<(f32, usize)> = database
        .chunks(dim)
        .enumerate()
        .map(|(j, dj)| {
            let sq: f32 = query.iter().zip(dj).map(|(a, b)| (a - b) * (a - b)).sum();
            (sq.sqrt(), j)
        })
        .collect();
    dist.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    dist
}

/// Nearest neighbours and the ratio test on the device against a brute-force search.
fn ratio_matches_equal_a_brute_force_search(device: Device) {
    let networks = placed(Models::none(), device);
    let dim = 128;
    let (q, d) = (unit_rows(301, dim, 1), unit_rows(257, dim, 2));
    let described = |descriptors: Vec<f32>| wbs::describe::Described {
        features: Vec::new(),
        descriptors,
        dimension: dim,
    };
    let got = networks
        .ratio_matches(&described(q.clone()), &described(d.clone()), 0.95)
        .unwrap();
    let mut want = Vec::new();
    for (i, qi) in q.chunks(dim).enumerate() {
        let dist = by_distance(qi, &d, dim);
        let ratio = dist[0].0 / dist[1].0;
        if ratio <= 0.95 {
            want.push((i, dist[0].1, ratio));
        }
    }
    assert!(want.len() > 5, "the test data gives some matches");
    // Distances computed by another summation order: ratios near the threshold may flip.
    let near = |r: f32| (r - 0.95).abs() < 1e-4;
    for &(i, j, r) in &want {
        match got.iter().find(|t| t.query == i) {
            Some(t) => {
                assert_eq!(t.train, j, "query {i} on {device}");
                assert!((t.ratio - r).abs() <= 1e-4, "query {i}: {} vs {r}", t.ratio);
            }
            None => assert!(near(r), "query {i} (ratio {r}) missing on {device}"),
        }
    }
    assert!(got.len() <= want.len() + want.iter().filter(|w| near(w.2)).count() + 1);
}
on_every_device!(ratio_matches_equal_a_brute_force_search);

/// The k nearest neighbours (MODS's FGINN lists) on the device against a brute-force search:
/// the same rows nearest first, up to swaps of neighbours whose distances are equal to rounding;
/// rows past a small database are u32::MAX at +∞.
fn k_nearest_equals_a_brute_force_search(device: Device) {
    let networks = placed(Models::none(), device);
    let dim = 128;
    let (q, d) = (unit_rows(203, dim, 11), unit_rows(301, dim, 12));
    let described = |descriptors: &[f32]| wbs::describe::Described {
        features: Vec::new(),
        descriptors: descriptors.to_vec(),
        dimension: dim,
    };
    for (nd, k) in [(301, 50), (301, 1), (20, 50)] {
        let d = &d[..nd * dim];
        let got = networks
            .k_nearest(&described(&q), &described(d), k)
            .unwrap();
        assert_eq!(got.k, k);
        for (i, qi) in q.chunks(dim).enumerate() {
            let want = by_distance(qi, d, dim);
            for j in 0..k {
                let (row, dist) = (got.indices[i * k + j], got.distances[i * k + j]);
                match want.get(j) {
                    None => assert_eq!((row, dist), (u32::MAX, f32::INFINITY), "{device}"),
                    Some(&(w, wrow)) => {
                        assert!((dist - w).abs() < 1e-4, "query {i} #{j}: {dist} vs {w}");
                        // A different row only where two distances tie to rounding.
                        let tied = want
                            .iter()
                            .any(|&(x, r)| r as u32 == row && (x - w).abs() < 1e-5);
                        assert!(
                            row == wrow as u32 || tied,
                            "query {i} #{j} on {device}: {row}"
                        );
                    }
                }
            }
        }
    }
}
on_every_device!(k_nearest_equals_a_brute_force_search);

/// A file of `data/sample`: from the checkout this binary was built in, or, where that path does
/// not exist (the binary carried to a GPU machine by `tools/gpu-prepare.sh` as
/// `target/gpu/device_parity`), from the checkout it is run in.
fn sample(name: &str) -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    let carried = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("../../data/sample")));
    let root = match carried {
        Some(dir) if !built.is_dir() && dir.is_dir() => dir,
        _ => built,
    };
    root.join(name)
}

/// The bundled pair matched on the device: registered, and (off the CPU) the same verdict and
/// inliers within 2 % of the CPU's. hesaffnet uses the shipped AffNet.
fn whole_matches_agree_with_the_cpu(device: Device) {
    let (a, b) = (sample("img1.png"), sample("img2.png"));
    for method in [Method::Hesaff, Method::Hesaffnet] {
        let mut config = Config::preset(method);
        config.device = device;
        let report = Matcher::new(config.clone())
            .unwrap()
            .match_files(&a, &b)
            .unwrap();
        let expected = if device == Device::Cpu {
            DeviceKind::Cpu
        } else {
            DeviceKind::Cuda
        };
        assert_eq!(report.device, expected);
        assert!(
            report.registered,
            "{method} on {device}: {}",
            report.verdict
        );
        assert!(
            report.inliers >= 50,
            "{method} on {device}: {}",
            report.inliers
        );
        if device != Device::Cpu {
            config.device = Device::Cpu;
            let cpu = Matcher::new(config).unwrap().match_files(&a, &b).unwrap();
            let (g, c) = (report.inliers as f64, cpu.inliers as f64);
            assert!(
                (g - c).abs() <= 0.02 * c,
                "{method}: {g} inliers vs {c} on the CPU"
            );
        }
    }
}
on_every_device!(whole_matches_agree_with_the_cpu);

/// The same image through `extract_features` twice gives the same features on the device
/// (nothing left over from the first run changes the second).
fn extraction_is_repeatable(device: Device) {
    let image = load_gray(&sample("img1.png"), &LoadOptions::default()).unwrap();
    let mut config = Config::preset(Method::Hesaffnet);
    config.device = device;
    let matcher = Matcher::new(config).unwrap();
    let first = matcher.extract_features(&image).unwrap();
    let second = matcher.extract_features(&image).unwrap();
    assert!(first.described.len() > 100);
    assert_eq!(first.described.features, second.described.features);
    assert_eq!(first.described.descriptors, second.described.descriptors);
}
on_every_device!(extraction_is_repeatable);
