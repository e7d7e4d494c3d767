//! The `wbs` command line: a thin layer that maps flags onto [`crate::pipeline::Config`] and
//! prints results. Every error is printed as one line, `error: ...`, with exit code 1 (2 for
//! usage errors, from clap).

mod bench_cmd;
mod choice;
mod collection_cmd;
mod detect_cmd;
#[cfg(feature = "cuda")]
pub mod device_bench;
#[cfg(feature = "cuda")]
pub mod device_check;
mod eval_cmd;
mod gpu_check_cmd;
mod match_cmd;
mod synth_cmd;
mod train_cmd;
mod train_data_cmd;
mod weights_cmd;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use choice::choice;

use crate::describe::DescriptorKind;
use crate::detect::{Threshold, DEFAULT_THRESHOLD};
use crate::device::{Device, ResolvedDevice};
use crate::geometry::{Geometry, HomographyError, RansacMethod};
use crate::orient::OrientationMethod;
use crate::pipeline::{Config, Method, DEFAULT_ADAPTIVE_TARGET};
use crate::shape::{ShapeFailures, ShapeMethod};
use crate::Result;

#[derive(Parser, Debug)]
#[command(
    name = "wbs",
    version,
    about = "Wide-baseline stereo matching with Hessian-Affine / AffNet features and LO-RANSAC",
    long_about = "Wide-baseline stereo matching with Hessian-Affine / AffNet features and LO-RANSAC.\n\n\
                  The common case:  wbs match a.jpg b.jpg --viz matches.png"
)]
/// The parsed command line (its help text comes from the `about` above).
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, one per variant (their doc comments are the help texts).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Match two images: verdict, inliers, the model, timings; optional JSON and picture.
    Match(match_cmd::MatchArgs),
    /// Detect features in one image and write them as Oxford ellipses (x y a b c).
    Detect(detect_cmd::DetectArgs),
    /// Make a wide-baseline pair from one photo by a known random homography.
    Synth(synth_cmd::SynthArgs),
    /// Measure speed: a whole match, descriptor matching, verification.
    Bench(bench_cmd::BenchArgs),
    /// Evaluate methods on datasets as protocol.md says: table, JSON, plots (`eval merge`: shards).
    Eval(eval_cmd::EvalArgs),
    /// Match an image collection (features once per image, pairs in parallel) into a COLMAP
    /// database (`collection merge`: shards).
    Collection(collection_cmd::CollectionArgs),
    /// Network weights: import the authors' PyTorch files, inspect weight files.
    Weights(weights_cmd::WeightsArgs),
    /// Train a network (`train affnet`): checkpoints, resume, log, curves, validation.
    Train(train_cmd::TrainArgs),
    /// Make training pairs (64×64 patches of the same point) from a folder of photographs.
    TrainData(train_data_cmd::TrainDataArgs),
    /// Check every CUDA kernel against its CPU reference and `match` on both devices (needs a GPU).
    GpuCheck(gpu_check_cmd::GpuCheckArgs),
    /// Compile every CUDA kernel to PTX here (no GPU needed), for a GPU machine without NVRTC.
    GpuPtx(gpu_check_cmd::GpuPtxArgs),
}

/// Which detector runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DetectorChoice {
    /// Hessian with a fixed threshold.
    Hessian,
    /// AdHess: the threshold is lowered until --target-features detections are found.
    Adaptive,
}

/// The feature flags shared by `match` and `detect`; unset flags take the preset's value.
#[derive(Args, Debug, Clone)]
pub struct FeatureArgs {
    /// Preset, named as in the AffNet paper.
    #[arg(long, value_parser = choice::<Method>(), default_value_t = Method::Hesaff)]
    pub method: Method,
    /// Detector: fixed or adaptive threshold (default: the preset's).
    #[arg(long, value_enum)]
    pub detector: Option<DetectorChoice>,
    /// Hessian threshold in hesaff units (responses are compared with its square).
    #[arg(long, default_value_t = DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// Adaptive detector: lower the threshold until this many detections are found.
    #[arg(long, default_value_t = DEFAULT_ADAPTIVE_TARGET)]
    pub target_features: usize,
    /// Adaptive detector: never lower the threshold below this.
    #[arg(long, default_value_t = DEFAULT_THRESHOLD / 8.0)]
    pub threshold_floor: f32,
    /// Affine shape (default: the preset's).
    #[arg(long, value_parser = choice::<ShapeMethod>())]
    pub shape: Option<ShapeMethod>,
    /// Detections whose shape estimation fails: keep them as circles, or drop them (hesaff).
    #[arg(long, value_parser = choice::<ShapeFailures>(), default_value_t = ShapeFailures::Circle)]
    pub shape_failures: ShapeFailures,
    /// Orientation.
    #[arg(long, value_parser = choice::<OrientationMethod>(), default_value_t = OrientationMethod::Histogram)]
    pub orientation: OrientationMethod,
    /// Descriptor.
    #[arg(long, value_parser = choice::<DescriptorKind>(), default_value_t = DescriptorKind::Rootsift)]
    pub descriptor: DescriptorKind,
    /// Refuse images larger than this many megapixels (the scale space needs ~60 MB per MP).
    #[arg(long, default_value_t = crate::image::DEFAULT_MAX_MEGAPIXELS)]
    pub max_megapixels: f64,
    /// Device for the networks and matching.
    #[arg(long, value_parser = choice::<Device>(), default_value_t = Device::Auto)]
    pub device: Device,
    /// AffNet weights (safetensors, or the authors' .pth); default: WBS_WEIGHTS (a file or a
    /// folder with affnet.safetensors), then the files wbs ships in data/.
    #[arg(long)]
    pub affnet_weights: Option<PathBuf>,
    /// OriNet weights (safetensors or .pth); looked up like --affnet-weights.
    #[arg(long)]
    pub orinet_weights: Option<PathBuf>,
    /// HardNet weights (safetensors or .pth); looked up like --affnet-weights.
    #[arg(long)]
    pub hardnet_weights: Option<PathBuf>,
    /// AffNet: average the shape over this many turns of each patch (4: quarter turns; 1: one
    /// pass, the paper's). More inliers, `N` times AffNet's time (docs/affnet.md).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub affnet_turns: u8,
    /// MODS schedule for --method mods/modsnet: a built-in name (cviu, wxbs) or a JSON file
    /// (format: docs/mods.md). Default: cviu.
    #[arg(long, value_name = "NAME|FILE")]
    pub schedule: Option<String>,
    /// The LAF check after verification (MODS; on for mods/modsnet through their schedule).
    #[arg(long)]
    pub laf_check: bool,
}

impl FeatureArgs {
    /// The pipeline configuration these flags describe (verification settings at defaults);
    /// fails with a one-line message when `--schedule` names neither a built-in schedule nor a
    /// readable, valid schedule file, or is given with a method that runs no schedule.
    pub fn config(&self) -> Result<Config> {
        let mut config = Config::preset(self.method);
        let adaptive = match self.detector {
            Some(DetectorChoice::Adaptive) => true,
            Some(DetectorChoice::Hessian) => false,
            None => self.method.is_adaptive(),
        };
        config.threshold = if adaptive {
            Threshold::Adaptive {
                threshold: self.threshold,
                target: self.target_features,
                floor: self.threshold_floor,
            }
        } else {
            Threshold::Fixed {
                threshold: self.threshold,
            }
        };
        if let Some(shape) = self.shape {
            config.shape = shape;
        }
        config.shape_failures = self.shape_failures;
        config.orientation = self.orientation;
        config.descriptor = self.descriptor;
        config.max_megapixels = self.max_megapixels;
        config.weights.affnet = self.affnet_weights.clone();
        config.weights.orinet = self.orinet_weights.clone();
        config.weights.hardnet = self.hardnet_weights.clone();
        config.affnet_turns = self.affnet_turns as usize;
        config.device = self.device;
        if let Some(spec) = &self.schedule {
            if !self.method.is_mods() {
                return Err(crate::Error::invalid(format!(
                    "--schedule needs --method mods or modsnet, not {}",
                    self.method
                )));
            }
            config.schedule = Some(crate::schedule::Schedule::load(spec)?);
        }
        if self.laf_check {
            config.laf_check = Some(crate::geometry::LafCheck::default());
        }
        Ok(config)
    }
}

/// Verification flags of `match`.
#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Model verified by LO-RANSAC: homography (planar scenes, rotations) or fundamental matrix.
    #[arg(long, value_parser = choice::<Geometry>(), default_value_t = Geometry::Homography)]
    pub geometry: Geometry,
    /// Robust estimator: wbs's LO-RANSAC or the arrsac crate (a baseline without local optimisation).
    #[arg(long, value_parser = choice::<RansacMethod>(), default_value_t = RansacMethod::LoRansac)]
    pub ransac: RansacMethod,
    /// Inlier threshold in px (default: 3 for a homography, 1.5 Sampson for F).
    #[arg(long)]
    pub inlier_threshold: Option<f64>,
    /// Homography inlier error.
    #[arg(long, value_parser = choice::<HomographyError>(), default_value_t = HomographyError::Forward)]
    pub homography_error: HomographyError,
    /// RANSAC confidence.
    #[arg(long, default_value_t = 0.999)]
    pub confidence: f64,
    /// RANSAC iteration cap.
    #[arg(long, default_value_t = 10_000)]
    pub max_iterations: usize,
    /// Registered with at least this many inliers.
    #[arg(long, default_value_t = 15)]
    pub min_inliers: usize,
    /// Second-nearest-neighbour ratio.
    #[arg(long, default_value_t = 0.8)]
    pub ratio: f32,
    /// Seed of every random choice (RANSAC); the same seed gives the same result.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl VerifyArgs {
    /// Sets `config`'s verification settings from these flags.
    pub fn apply(&self, config: &mut Config) {
        config.set_geometry(self.geometry);
        config.ransac_method = self.ransac;
        if let Some(t) = self.inlier_threshold {
            config.ransac.threshold_px = t;
        }
        config.ransac.homography_error = self.homography_error;
        config.ransac.confidence = self.confidence;
        config.ransac.max_iterations = self.max_iterations;
        config.ransac.seed = self.seed;
        config.min_inliers = self.min_inliers;
        config.ratio = self.ratio;
    }
}

/// Resolves `--device` for a command that has no CUDA path: `cuda` is refused on a GPU machine
/// rather than silently running on the CPU.
pub fn resolve_device(device: Device, has_cuda_path: bool) -> Result<ResolvedDevice> {
    crate::device::resolve(device, has_cuda_path)
}

/// Parses the arguments, runs the command and returns the process exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Match(args) => match_cmd::run(args),
        Command::Detect(args) => detect_cmd::run(args),
        Command::Synth(args) => synth_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Collection(args) => collection_cmd::run(args),
        Command::Weights(args) => weights_cmd::run(args),
        Command::Train(args) => train_cmd::run(args),
        Command::TrainData(args) => train_data_cmd::run(args),
        Command::GpuCheck(args) => gpu_check_cmd::run(args),
        Command::GpuPtx(args) => gpu_check_cmd::run_ptx(args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
