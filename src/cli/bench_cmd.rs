//! `wbs bench`: the speed figures the project tracks, measured in this process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use rand::{RngExt, SeedableRng};

use crate::device::Device;
use crate::image::{load_gray, LoadOptions};
use crate::matcher::Matcher;
use crate::matching::two_nearest;
use crate::mser::{self, MserParams};
use crate::nn::{self, NetworkKind};
use crate::pipeline::{Config, Method};
use crate::shape::ShapeMethod;
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The image pair of the end-to-end benchmark (default: OxAff graf img1/img3 from
    /// ../shared/datasets, else the bundled sample pair).
    #[arg(long, num_args = 2, value_names = ["IMAGE1", "IMAGE2"])]
    pub pair: Option<Vec<PathBuf>>,
    /// Timed repetitions of each benchmark (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Descriptors per side in the matching benchmark.
    #[arg(long, default_value_t = 10_000)]
    pub descriptors: usize,
    /// Preset of the end-to-end benchmark.
    #[arg(long, value_parser = super::choice::<Method>(), default_value_t = Method::Hesaff)]
    pub method: Method,
    /// AffNet weights for the end-to-end hesaffnet benchmark (default: WBS_WEIGHTS, then data/;
    /// that line is skipped when none are found).
    #[arg(long)]
    pub affnet_weights: Option<PathBuf>,
    /// Patches per batch in the network throughput benchmark (0 skips it).
    #[arg(long, default_value_t = 2048)]
    pub nn_batch: usize,
    /// Pairs per batch in the training throughput benchmark (AffNet + spatial transformer +
    /// differentiable SIFT + HardNegC, forward, backward and SGD; 0 skips it).
    #[arg(long, default_value_t = 1024)]
    pub train_batch: usize,
    /// Device to measure: `cuda` prints the GPU figures (networks at batch 16,384, 10k × 10k
    /// matching, end-to-end match, training step); `auto`/`cpu` the CPU figures.
    #[arg(long, value_parser = super::choice::<Device>(), default_value_t = Device::Cpu)]
    pub device: Device,
}

/// Minimum and median of a list of seconds.
fn stats(mut seconds: Vec<f64>) -> (f64, f64) {
    seconds.sort_by(f64::total_cmp);
    (seconds[0], seconds[seconds.len() / 2])
}

fn time_runs(repeat: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?; // warm-up: page cache, thread pool, lazily built tables
    let mut seconds = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        f()?;
        seconds.push(t.elapsed().as_secs_f64());
    }
    Ok(stats(seconds))
}

fn default_pair() -> Option<(PathBuf, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let graf = root.join("../shared/datasets/OxAff/graf");
    if graf.join("img1.png").exists() {
        return Some((graf.join("img1.png"), graf.join("img3.png")));
    }
    let sample = root.join("data/sample");
    sample
        .join("img1.png")
        .exists()
        .then(|| (sample.join("img1.png"), sample.join("img2.png")))
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.device == Device::Cuda {
        return run_cuda(&args);
    }
    println!(
        "wbs bench: {} threads, {} timed runs each (min / median)",
        rayon::current_num_threads(),
        args.repeat
    );
    let pair = match &args.pair {
        Some(p) => Some((p[0].clone(), p[1].clone())),
        None => default_pair(),
    };
    match &pair {
        Some((a, b)) => {
            let mut config = Config::preset(args.method);
            config.weights.affnet = args.affnet_weights.clone();
            bench_match(a, b, &config, args.repeat)?;
            if config.shape != ShapeMethod::Affnet {
                // The AffNet preset too, when its weights can be found.
                match nn::locate(NetworkKind::AffNet, args.affnet_weights.as_deref()) {
                    Ok(path) => {
                        let mut config = Config::preset(Method::Hesaffnet);
                        config.weights.affnet = Some(path);
                        bench_match(a, b, &config, args.repeat)?;
                    }
                    Err(e) => println!("match (hesaffnet): skipped: {e}"),
                }
            }
        }
        None => println!("match: no image pair found (pass --pair A B)"),
    }
    if let Some((a, _)) = &pair {
        bench_mser(a, args.repeat)?;
    }

    let n = args.descriptors;
    if n < 2 {
        return Err(Error::invalid("--descriptors must be at least 2"));
    }
    let (a, b) = (rootsift_like(n, 1), rootsift_like(n, 2));
    let (min, median) = time_runs(args.repeat, || {
        let nn = two_nearest(&a, &b, 128);
        std::hint::black_box(&nn);
        Ok(())
    })?;
    println!(
        "nearest neighbours {n} x {n} RootSIFT-like (128-D, exact, 2-NN): {:.3} s / {:.3} s  ({:.1} GFLOP/s)",
        min,
        median,
        2.0 * (n as f64).powi(2) * 128.0 / min / 1e9
    );
    if args.nn_batch > 0 {
        print!("{}", nn::bench_report(args.nn_batch));
    }
    if args.train_batch > 0 {
        // Small batches are for tests: a few steps are enough there.
        let min_time = Duration::from_secs(if args.train_batch >= 256 { 5 } else { 0 });
        println!(
            "{}",
            crate::train::bench_step(args.train_batch, crate::train::Descriptor::sift(), min_time)
        );
    }
    Ok(())
}

/// `wbs bench --device cuda` (one-line error without a GPU).
fn run_cuda(args: &BenchArgs) -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        let gpu = crate::gpu::Gpu::open("wbs bench --device cuda")?;
        let pair = match &args.pair {
            Some(p) => Some((p[0].clone(), p[1].clone())),
            None => super::device_cmd::check_pairs(&None).pop(),
        };
        let text = crate::cli::device_bench::bench_report(
            &gpu,
            pair.as_ref().map(|(a, b)| (a.as_path(), b.as_path())),
            args.descriptors,
            args.repeat,
        )?;
        print!("{text}");
        Ok(())
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = args;
        Err(Error::Device(
            "wbs bench --device cuda: this wbs was built without the `cuda` feature".into(),
        ))
    }
}

/// Times whole matches of one pair (image loading and network loading included, as in
/// `wbs match`) and prints one line.
fn bench_match(a: &Path, b: &Path, config: &Config, repeat: usize) -> Result<()> {
    let run = || Matcher::new(config.clone())?.match_files(a, b);
    let report = run()?;
    let (min, median) = time_runs(repeat, || run().map(|_| ()))?;
    println!(
        "match {} {}  ({}, {}): {:.3} s / {:.3} s   [features {}/{}, shaped {}/{}, tentatives {}, inliers {}]",
        a.display(),
        b.display(),
        config.method.name(),
        format!("{:?}", config.descriptor).to_lowercase(),
        min,
        median,
        report.features[0],
        report.features[1],
        report.shaped[0],
        report.shaped[1],
        report.tentatives,
        report.inliers
    );
    Ok(())
}

/// Times MSER (both polarities, OpenCV's parameters) on one loaded image and prints one line.
fn bench_mser(path: &Path, repeat: usize) -> Result<()> {
    let image = load_gray(path, &LoadOptions::default())?;
    let params = MserParams::default();
    let regions = mser::detect(&image, &params).len();
    let (min, median) = time_runs(repeat, || {
        std::hint::black_box(mser::detect(&image, &params));
        Ok(())
    })?;
    println!(
        "mser {} ({}×{}, dark and bright): {:.4} s / {:.4} s   [{regions} regions]",
        path.display(),
        image.width(),
        image.height(),
        min,
        median
    );
    Ok(())
}

/// Random vectors with RootSIFT's statistics: non-negative, square roots of an L1-normalised
/// sparse-ish histogram, unit L2 norm.
fn rootsift_like(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut v = vec![0f32; n * 128];
    for row in v.chunks_exact_mut(128) {
        let mut sum = 0.0;
        for x in row.iter_mut() {
            let u: f32 = rng.random_range(0.0..1.0);
            *x = u * u * u;
            sum += *x;
        }
        for x in row.iter_mut() {
            *x = (*x / sum).sqrt();
        }
    }
    v
}
