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
mod device_cmd;
mod eval_cmd;
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
use crate::{Error, Result};

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
    GpuCheck(device_cmd::GpuCheckArgs),
    /// Compile every CUDA kernel to PTX here (no GPU needed), for a GPU machine without NVRTC.
    GpuPtx(device_cmd::GpuPtxArgs),
}

/// Which detector runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DetectorChoice {
    /// Hessian with a fixed threshold.
    Hessian,
    /// AdHess: the threshold is lowered until --target-features detections are found.
    Adaptive,
}

/// The feature flags shared by `match`, `detect` and `eval`; unset flags take the preset's value.
#[derive(Args, Debug, Clone)]
pub struct FeatureArgs {
    /// Preset, named as in the AffNet paper (it sets the detector and the shape; the other flags
    /// change one setting each).
    #[arg(long, value_parser = choice::<Method>(), default_value_t = Method::Hesaff)]
    pub method: Method,
    /// Detector: a fixed threshold, or adaptive (AdHess) [default: the preset's: adaptive for
    /// adhesaff and adhesaffnet].
    #[arg(long, value_enum)]
    pub detector: Option<DetectorChoice>,
    /// Hessian threshold in hesaff units, > 0 (responses det H·σ⁴ are compared with its square;
    /// a fraction like 16/3 is accepted). Higher: fewer, stronger features.
    #[arg(long, value_name = "T", default_value = "16/3", value_parser = number::<f32>,
          allow_negative_numbers = true)]
    pub threshold: f32,
    /// Adaptive detector only: keep lowering the threshold until this many detections are
    /// found; at least 1 [default: 3000].
    #[arg(long, value_name = "N", value_parser = whole::<usize>, allow_negative_numbers = true)]
    pub target_features: Option<usize>,
    /// Adaptive detector only: never lower the threshold below this; in (0, --threshold]
    /// [default: 2/3].
    #[arg(long, value_name = "T", value_parser = number::<f32>, allow_negative_numbers = true)]
    pub threshold_floor: Option<f32>,
    /// Affine shape [default: the preset's: baumberg, or affnet for the *net methods].
    #[arg(long, value_parser = choice::<ShapeMethod>())]
    pub shape: Option<ShapeMethod>,
    /// Detections whose shape estimation fails: keep them as circles, or drop them (hesaff).
    #[arg(long, value_parser = choice::<ShapeFailures>(), default_value_t = ShapeFailures::Circle)]
    pub shape_failures: ShapeFailures,
    /// Orientation of each region.
    #[arg(long, value_parser = choice::<OrientationMethod>(), default_value_t = OrientationMethod::Histogram)]
    pub orientation: OrientationMethod,
    /// Descriptor of each region.
    #[arg(long, value_parser = choice::<DescriptorKind>(), default_value_t = DescriptorKind::Rootsift)]
    pub descriptor: DescriptorKind,
    /// Refuse images larger than this many megapixels before decoding them; > 0 (the scale
    /// space needs about 60 MB per MP).
    #[arg(long, value_name = "MP", value_parser = number::<f64>, allow_negative_numbers = true,
          default_value_t = crate::image::DEFAULT_MAX_MEGAPIXELS)]
    pub max_megapixels: f64,
    /// Device for the networks and the descriptor matching: auto (the CPU for now: it stays
    /// there until the CUDA path is validated, docs/gpu-validation.md), cpu, or cuda (an NVIDIA
    /// GPU; an error where none answers).
    #[arg(long, value_parser = choice::<Device>(), default_value_t = Device::Auto)]
    pub device: Device,
    /// AffNet weights (safetensors, or the authors' .pth) [default: WBS_WEIGHTS (a file, or a
    /// folder with affnet.safetensors), then the file wbs ships, data/affnet.safetensors].
    #[arg(long, value_name = "FILE")]
    pub affnet_weights: Option<PathBuf>,
    /// OriNet weights (safetensors or .pth), for --orientation orinet [default: WBS_WEIGHTS
    /// (a file, or a folder with orinet.safetensors); none is shipped].
    #[arg(long, value_name = "FILE")]
    pub orinet_weights: Option<PathBuf>,
    /// HardNet weights (safetensors or .pth), for --descriptor hardnet [default: WBS_WEIGHTS
    /// (a file, or a folder with hardnet.safetensors); none is shipped].
    #[arg(long, value_name = "FILE")]
    pub hardnet_weights: Option<PathBuf>,
    /// AffNet: average the shape over this many turns of each patch, 1 to 8 (4: quarter turns;
    /// 1: one pass, the paper's). More inliers, N times AffNet's time (docs/affnet.md).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = whole::<usize>,
          allow_negative_numbers = true)]
    pub affnet_turns: usize,
    /// MODS schedule for --method mods/modsnet: a built-in name (wbs, cviu, wxbs) or a JSON file
    /// (format: docs/mods.md) [default: wbs: cviu's steps with HalfRootSIFT after step 0].
    #[arg(long, value_name = "NAME|FILE")]
    pub schedule: Option<String>,
    /// The LAF check after verification (MODS; on for mods/modsnet through their schedule).
    #[arg(long)]
    pub laf_check: bool,
}

impl FeatureArgs {
    /// The pipeline configuration these flags describe (verification settings at defaults),
    /// checked: every setting in its range ([`Config::validate`]), and no flag the settings
    /// would ignore; `--schedule` must name a built-in schedule or a readable, valid schedule
    /// file, and only with a method that runs one.
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
                target: self.target_features.unwrap_or(DEFAULT_ADAPTIVE_TARGET),
                floor: self.threshold_floor.unwrap_or(DEFAULT_THRESHOLD / 8.0),
            }
        } else {
            for (flag, given) in [
                ("--target-features", self.target_features.is_some()),
                ("--threshold-floor", self.threshold_floor.is_some()),
            ] {
                if given {
                    return Err(Error::Usage(format!(
                        "{flag} applies to the adaptive detector only: add --detector adaptive \
                         (or use --method adhesaff / adhesaffnet)"
                    )));
                }
            }
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
        config.affnet_turns = self.affnet_turns;
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
        config.validate()?;
        Ok(config)
    }
}

/// Verification flags of `match` and `eval`.
#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Model verified by LO-RANSAC: homography (planar scenes, rotations) or fundamental matrix.
    #[arg(long, value_parser = choice::<Geometry>(), default_value_t = Geometry::Homography)]
    pub geometry: Geometry,
    /// Robust estimator: wbs's LO-RANSAC or the arrsac crate (a baseline without local optimisation).
    #[arg(long, value_parser = choice::<RansacMethod>(), default_value_t = RansacMethod::LoRansac)]
    pub ransac: RansacMethod,
    /// Inlier threshold in px, > 0: forward transfer error for a homography, Sampson distance
    /// for F [default: 3 for a homography, 1.5 for F].
    #[arg(long, value_name = "PX", value_parser = number::<f64>, allow_negative_numbers = true)]
    pub inlier_threshold: Option<f64>,
    /// Homography inlier error: forward transfer error, or symmetric (both directions).
    #[arg(long, value_parser = choice::<HomographyError>(), default_value_t = HomographyError::Forward)]
    pub homography_error: HomographyError,
    /// RANSAC confidence, in (0, 1): sampling stops once an all-inlier sample was drawn with
    /// this probability.
    #[arg(long, value_name = "P", default_value_t = 0.999, value_parser = number::<f64>,
          allow_negative_numbers = true)]
    pub confidence: f64,
    /// RANSAC iteration cap, at least 1.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = whole::<usize>,
          allow_negative_numbers = true)]
    pub max_iterations: usize,
    /// A pair is registered with at least this many inliers; at least 1.
    #[arg(long, value_name = "N", default_value_t = 15, value_parser = whole::<usize>,
          allow_negative_numbers = true)]
    pub min_inliers: usize,
    /// Second-nearest-neighbour ratio test, in (0, 1]: a match is kept when its nearest
    /// neighbour is closer than this fraction of the second nearest.
    #[arg(long, default_value_t = 0.8, value_parser = number::<f32>, allow_negative_numbers = true)]
    pub ratio: f32,
    /// Seed of every random choice (RANSAC), a whole number ≥ 0; the same seed gives the same
    /// result.
    #[arg(long, default_value_t = 0, value_parser = whole::<u64>, allow_negative_numbers = true)]
    pub seed: u64,
}

impl VerifyArgs {
    /// Applies these flags to `config` and checks the result ([`Config::validate`]).
    pub fn apply(&self, config: &mut Config) -> Result<()> {
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
        config.validate()
    }
}

/// The picture formats `--viz` writes, by file extension.
pub const IMAGE_OUTPUTS: &[&str] = &["png", "jpg", "jpeg", "bmp", "ppm"];

/// Parses a number flag: a decimal (`0.5`, `1e-3`) or a fraction (`16/3`). Ranges are checked
/// by [`Config::validate`], so that the message names the range.
pub fn number<T>(text: &str) -> std::result::Result<T, String>
where
    T: std::str::FromStr + std::ops::Div<Output = T>,
{
    let parse = |t: &str| {
        t.trim()
            .parse::<T>()
            .map_err(|_| format!("'{text}' is not a number"))
    };
    match text.split_once('/') {
        Some((a, b)) => Ok(parse(a)? / parse(b)?),
        None => parse(text),
    }
}

/// Parses a count flag: a whole number ≥ 0, with a message about the value for anything else
/// (`-1` is negative, not another flag).
pub fn whole<T: std::str::FromStr>(text: &str) -> std::result::Result<T, String> {
    text.trim().parse::<T>().map_err(|_| {
        if text.trim().starts_with('-') && text.trim()[1..].parse::<u64>().is_ok() {
            format!("{text} is negative; expected a whole number ≥ 0")
        } else {
            format!("'{text}' is not a whole number")
        }
    })
}

/// An error as the CLI prints it (after `error: `): settings are named by their flags.
pub fn message(error: &Error) -> String {
    match error {
        Error::Setting {
            setting,
            rule,
            value,
        } => format!(
            "--{} must be {rule}, got {value}",
            crate::settings::setting_name(setting).replace('_', "-")
        ),
        other => other.to_string(),
    }
}

/// Resolves `--device` for a command that has no CUDA path: `cuda` is refused on a GPU machine
/// rather than silently running on the CPU.
pub fn resolve_device(device: Device, has_cuda_path: bool) -> Result<ResolvedDevice> {
    crate::device::resolve(device, has_cuda_path)
}

/// The exit code of `wbs eval` when it ran but some pairs failed (1: it could not run; 2: a
/// usage error: a bad flag, or a setting out of its range).
pub const EXIT_PAIRS_FAILED: i32 = 3;

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
        Command::GpuCheck(args) => device_cmd::run(args),
        Command::GpuPtx(args) => device_cmd::run_ptx(args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            match e {
                Error::Setting { .. } | Error::Usage(_) => 2,
                Error::PairsFailed { .. } => EXIT_PAIRS_FAILED,
                _ => 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand, with its path (`wbs eval merge`).
    fn commands() -> Vec<(String, clap::Command)> {
        fn walk(path: String, cmd: clap::Command, out: &mut Vec<(String, clap::Command)>) {
            for sub in cmd.get_subcommands() {
                walk(format!("{path} {}", sub.get_name()), sub.clone(), out);
            }
            out.push((path, cmd));
        }
        let mut out = Vec::new();
        walk("wbs".into(), Cli::command(), &mut out);
        out
    }

    /// The help audit: every flag and argument says what it does, and every default prints as
    /// a user reads it (no float noise like 5.3333335).
    #[test]
    fn every_flag_has_help_and_readable_defaults() {
        let mut missing = Vec::new();
        for (path, cmd) in commands() {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
                for default in arg.get_default_values() {
                    let text = default.to_string_lossy();
                    let digits = text.split('.').nth(1).map_or(0, str::len);
                    assert!(digits <= 4, "{path} --{id}: default {text}");
                }
            }
        }
        assert!(missing.is_empty(), "flags without help: {missing:?}");
    }

    #[test]
    fn numbers_take_fractions_and_negatives_are_values() {
        assert_eq!(number::<f32>("16/3").unwrap(), 16.0 / 3.0);
        assert_eq!(number::<f64>("-0.5").unwrap(), -0.5);
        assert!(number::<f64>("1/x")
            .unwrap_err()
            .contains("'1/x' is not a number"));
        assert_eq!(whole::<usize>("7").unwrap(), 7);
        assert_eq!(
            whole::<usize>("-1").unwrap_err(),
            "-1 is negative; expected a whole number ≥ 0"
        );
        assert_eq!(
            whole::<u64>("2.5").unwrap_err(),
            "'2.5' is not a whole number"
        );
    }
}
