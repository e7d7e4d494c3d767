//! `wbs train affnet`: train AffNet (the recipe of the paper) from pair files and/or UBC
//! Phototour folders into an output folder with checkpoints, a log, curves and the final
//! weights. See docs/training.md.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::device::Device;
use crate::nn::{self, NetworkKind, Weights};
use crate::train::data::phototour::load_phototour;
use crate::train::data::PairSet;
use crate::train::run::session::{run_session, Event, SessionOptions};
use crate::train::run::trainer::RunSettings;
use crate::train::run::validate::ValidationPair;
use crate::train::{Descriptor, FrozenHardNet, LossKind, TrainAffNet};
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(subcommand)]
    pub command: TrainCommand,
}

#[derive(Subcommand, Debug)]
pub enum TrainCommand {
    /// Train AffNet: augment → AffNet → spatial transformer → descriptor → loss, SGD.
    Affnet(AffnetArgs),
}

/// The descriptor the loss is computed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DescriptorArg {
    /// Differentiable SIFT (no weights needed).
    Sift,
    /// HardNet with frozen weights (--hardnet-weights, WBS_WEIGHTS or data/).
    Hardnet,
}

#[derive(Args, Debug)]
pub struct AffnetArgs {
    /// Pair file(s) made by `wbs train-data` (repeatable).
    #[arg(long, value_name = "FILE")]
    pub data: Vec<PathBuf>,
    /// UBC Phototour folder(s) (patchesNNNN.bmp + info.txt; repeatable).
    #[arg(long, value_name = "DIR")]
    pub phototour: Vec<PathBuf>,
    /// Output folder: checkpoint.safetensors, log.csv, curves.png, affnet.safetensors.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Pairs per epoch (the recipe: 10,000,000).
    #[arg(long, default_value_t = 10_000_000)]
    pub pairs: u64,
    /// Epochs (the recipe: 20); the tilt schedule goes by epoch.
    #[arg(long, default_value_t = 20)]
    pub epochs: u64,
    /// Pairs per batch (no two of the same 3D point).
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Loss on the descriptors of each batch's patch pairs.
    #[arg(long, value_parser = super::choice::<LossKind>(), default_value_t = LossKind::HardNegC)]
    pub loss: LossKind,
    /// Descriptor the loss is computed on (AffNet's shapes are judged by how well it matches).
    #[arg(long, value_enum, default_value_t = DescriptorArg::Sift)]
    pub descriptor: DescriptorArg,
    /// HardNet weights for --descriptor hardnet (default: WBS_WEIGHTS, then data/).
    #[arg(long, value_name = "FILE")]
    pub hardnet_weights: Option<PathBuf>,
    /// Initial learning rate, decayed linearly to 0 over the run.
    #[arg(long, default_value_t = 0.005)]
    pub lr: f64,
    /// Seed of the initialisation, the batches and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start from these AffNet weights instead of the random initialisation (fine-tuning).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// Turn off the random transpose/flip of pairs.
    #[arg(long)]
    pub no_fliprot: bool,

    /// Penalise predicted shapes more elongated than 6:1 (the matcher drops them) with this
    /// weight; 0 is the paper's recipe. See docs/training.md for why the shipped run used it
    #[arg(long, default_value_t = 0.0, value_name = "WEIGHT")]
    pub elongation_penalty: f64,
    /// Add the geometric (covariance) term with this weight: how far each pair's two predicted
    /// regions, mapped back into their source patches, are from the same ellipse (up to rotation
    /// and scale). 0 is the paper's recipe; needs pairs whose two patches share one frame (UBC
    /// Phototour, `wbs train-data --max-tilt 1`). See docs/training.md
    #[arg(long, default_value_t = 0.0, value_name = "WEIGHT")]
    pub geom_weight: f64,
    /// Penalise regions more elongated than 2:1 *in their source patches* with this weight (0:
    /// the paper's recipe): keeps a SIFT-trained AffNet from stretching every region alike. See
    /// docs/training.md
    #[arg(long, default_value_t = 0.0, value_name = "WEIGHT")]
    pub source_elongation_penalty: f64,
    /// Rotate each pair's positive against its anchor by up to this many degrees (uniform), and
    /// cut descriptor patches upright in their source frame, so that AffNet learns to follow a
    /// turned patch; 0 is the paper's recipe (one rotation shared by both patches). See
    /// docs/training.md
    #[arg(long, default_value_t = 0.0, value_name = "DEGREES")]
    pub relative_rotation: f64,
    /// Grow the --relative-rotation range linearly from 0 over this many epochs (0: the full
    /// range from the start; a random start collapses at 45° and more without it)
    #[arg(long, default_value_t = 0.0, value_name = "EPOCHS")]
    pub relative_rotation_warmup: f64,
    /// With --relative-rotation, leave this share of pairs (0–1) unturned, so that more of the
    /// budget goes to tilt (0: every pair turned). See docs/training.md
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub unturned_share: f64,
    /// Cap the recipe's tilt schedule (3 → 5.8 over 8 epochs) at this tilt (0: no cap)
    #[arg(long, default_value_t = 0.0, value_name = "TILT")]
    pub tilt_cap: f64,
    /// Steps between checkpoints, validations and curve redraws (0: only at the end).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Steps per log row (and per progress line when stderr is not a terminal).
    #[arg(long, default_value_t = 20)]
    pub log_every: u64,
    /// Continue the run in --out from its checkpoint (same data and settings).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps (with a checkpoint); continue later with --resume.
    #[arg(long, value_name = "STEPS")]
    pub stop_after: Option<u64>,
    /// Validation pair with a known homography: IMG1 IMG2 H1to2 (at the start, at every
    /// checkpoint and at the end).
    #[arg(long, num_args = 3, value_names = ["IMG1", "IMG2", "H"])]
    pub validate: Option<Vec<PathBuf>>,
    /// Device: cuda runs the chain on the GPU (either descriptor), optimiser and validation on
    /// the host; auto stays on the CPU until the CUDA path is validated (docs/gpu-validation.md).
    #[arg(long, value_parser = super::choice::<Device>(), default_value_t = Device::Auto)]
    pub device: Device,
}

pub fn run(args: TrainArgs) -> Result<()> {
    match args.command {
        TrainCommand::Affnet(a) => affnet(a),
    }
}

fn affnet(args: AffnetArgs) -> Result<()> {
    crate::files::check_writable_dir(&args.out)?;
    let device = super::resolve_device(args.device, cfg!(feature = "cuda"))?;
    match &device.note {
        Some(note) => eprintln!("device: {} ({note})", device.kind),
        None => eprintln!("device: {}", device.kind),
    }
    if args.data.is_empty() && args.phototour.is_empty() {
        return Err(Error::invalid(
            "no training data: pass --data FILE (from `wbs train-data`) and/or --phototour DIR",
        ));
    }
    // Everything that can fail cheaply before the data is read.
    let validation = args
        .validate
        .as_ref()
        .map(|v| ValidationPair::load(&v[0], &v[1], &v[2]))
        .transpose()?;
    let (descriptor, descriptor_name) = match args.descriptor {
        DescriptorArg::Sift => (Descriptor::sift(), "sift".to_string()),
        DescriptorArg::Hardnet => {
            let path = nn::locate(NetworkKind::HardNet, args.hardnet_weights.as_deref())?;
            let net = FrozenHardNet::from_weights(&Weights::load(&path)?)?;
            (
                Descriptor::hardnet(net),
                format!("hardnet:{}", path.display()),
            )
        }
    };
    let init = args.init.as_deref().map(TrainAffNet::load).transpose()?;

    let mut data = PairSet::default();
    let mut sources = Vec::new();
    for path in &args.data {
        let set = PairSet::load(path)?;
        sources.push(format!("data:{} ({} pairs)", path.display(), set.len()));
        data.append(set);
    }
    for dir in &args.phototour {
        let set = load_phototour(dir)?;
        sources.push(format!("phototour:{} ({} pairs)", dir.display(), set.len()));
        data.append(set);
    }
    eprintln!(
        "data: {} pairs of {} points from {}",
        data.len(),
        data.distinct_points(),
        sources.join(", ")
    );
    let settings = RunSettings {
        sources,
        pairs_per_epoch: args.pairs,
        epochs: args.epochs,
        batch: args.batch,
        loss: args.loss.name().into(),
        descriptor: descriptor_name,
        lr: args.lr,
        seed: args.seed,
        fliprot: !args.no_fliprot,
        init: args.init.as_ref().map(|p| p.display().to_string()),
        elongation_penalty: args.elongation_penalty,
        geom_weight: args.geom_weight,
        source_elongation_penalty: args.source_elongation_penalty,
        relative_rotation: args.relative_rotation,
        relative_rotation_warmup: args.relative_rotation_warmup,
        unturned_share: args.unturned_share,
        tilt_cap: args.tilt_cap,
    };
    let options = SessionOptions {
        out: args.out.clone(),
        resume: args.resume,
        checkpoint_every: args.checkpoint_every,
        log_every: args.log_every,
        validation,
        stop_after: args.stop_after,
        cuda: device.kind == crate::device::DeviceKind::Cuda,
    };
    let mut progress = Progress::new();
    run_session(settings, data, descriptor, init, &options, |e| {
        progress.event(e)
    })?;
    progress.finish();
    Ok(())
}

/// Progress on stderr: a bar on a terminal, else one line per log row.
struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    first_step: u64,
    total: u64,
}

impl Progress {
    fn new() -> Self {
        Progress {
            bar: None,
            started: Instant::now(),
            first_step: 0,
            total: 0,
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn eta(&self, step: u64) -> String {
        let done = step.saturating_sub(self.first_step);
        if done == 0 {
            return "?".into();
        }
        let per = self.started.elapsed().as_secs_f64() / done as f64;
        let left = per * (self.total - step.min(self.total)) as f64;
        format!("{:.1} h", left / 3600.0)
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Started { step, total } => {
                self.first_step = step;
                self.total = total;
                self.started = Instant::now();
                if std::io::stderr().is_terminal() {
                    let bar =
                        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{elapsed:>4} [{bar:24}] {pos}/{len} eta {eta:>3} {wide_msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_position(step);
                    bar.enable_steady_tick(Duration::from_millis(500));
                    self.bar = Some(bar);
                }
                self.line(format!(
                    "train: {} at step {step} of {total}",
                    if step == 0 { "starting" } else { "resuming" }
                ));
            }
            Event::Step { step, loss, lr } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(step);
                    bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
                }
            }
            Event::Logged(row) => {
                if let Some(t) = &row.train {
                    if self.bar.is_none() {
                        self.line(format!(
                            "step {}/{} epoch {} loss {:.4} pos {:.3} neg {:.3} aniso {:.2} (source {:.2}) geom {:.3} lr {:.2e} {:.0} pairs/s eta {}",
                            row.step,
                            self.total,
                            row.epoch,
                            t.loss,
                            t.mean_positive,
                            t.mean_hardest_negative,
                            t.mean_anisotropy,
                            t.mean_source_anisotropy,
                            t.mean_geom,
                            t.lr,
                            t.pairs_per_s,
                            self.eta(row.step)
                        ));
                    }
                }
                if let Some(v) = &row.validation {
                    self.line(format!(
                        "validation at step {}: {} tentatives, {} correct (6 px), {} inliers",
                        row.step, v.tentatives, v.correct, v.inliers
                    ));
                }
            }
            Event::Checkpointed { step } => {
                if self.bar.is_none() {
                    self.line(format!("checkpoint at step {step}"));
                }
            }
            Event::Paused { step } => {
                self.line(format!(
                    "stopped at step {step} (checkpoint written); continue with --resume"
                ));
            }
            Event::Finished { weights } => {
                self.line(format!("done: weights in {}", weights.display()));
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
