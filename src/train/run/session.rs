//! A training run in an output folder: what `wbs train affnet` drives.
//!
//! The folder holds
//! - `checkpoint.safetensors`: the state after the last checkpoint (see `checkpoint.rs`), written
//!   every `checkpoint_every` steps, when a run stops early, and at the end;
//! - `log.csv`: one row per `log_every` steps (means over them) and one per validation;
//! - `curves.png`: loss and validation curves, redrawn at every checkpoint;
//! - `affnet.safetensors`: the final weights in the inference format (`--affnet-weights`,
//!   `WBS_WEIGHTS`, or `data/affnet.safetensors`).
//!
//! A fresh run refuses a folder that already has a checkpoint; `resume` continues from it (the
//! run's settings must be the same) and drops log rows written after it, so the folder ends up
//! as an uninterrupted run would leave it (pairs/s aside).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::train::chain::affnet::TrainAffNet;
use crate::train::chain::Descriptor;
use crate::train::data::PairSet;
use crate::train::run::checkpoint::Checkpoint;
#[cfg(feature = "plots")]
use crate::train::run::curves::draw_curves;
use crate::train::run::trainer::{RunSettings, Trainer};
use crate::train::run::validate::{validate, Validation, ValidationPair};
use crate::{Error, Result};

/// The checkpoint in a run's output folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The training log (CSV) in a run's output folder.
pub const LOG_FILE: &str = "log.csv";
/// The training curves (PNG) in a run's output folder.
pub const CURVES_FILE: &str = "curves.png";
/// The final weights in a run's output folder.
pub const WEIGHTS_FILE: &str = "affnet.safetensors";
/// The weights of the checkpoint with the most correct validation matches so far (written only
/// with `--validate`; on a tie the earlier one stays).
pub const BEST_WEIGHTS_FILE: &str = "affnet-best.safetensors";

const HEADER: &str = "step,epoch,lr,loss,mean_positive,mean_hardest_negative,mean_anisotropy,mean_source_anisotropy,mean_geom,pairs_per_s,val_tentatives,val_correct,val_inliers";

/// One row of `log.csv`: either training means over the steps since the last row, or a
/// validation (the other columns empty).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRow {
    /// Steps done when the row was written.
    pub step: u64,
    /// The epoch of the last step done.
    pub epoch: u64,
    /// Training means (a training row).
    pub train: Option<TrainMeans>,
    /// Validation results (a validation row).
    pub validation: Option<Validation>,
}

/// Means over the steps of one log interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrainMeans {
    /// Learning rate of the last step.
    pub lr: f32,
    /// Mean loss.
    pub loss: f64,
    /// Mean distance of the positive pairs.
    pub mean_positive: f32,
    /// Mean distance of the hardest negatives.
    pub mean_hardest_negative: f32,
    /// Mean anisotropy of the predicted shapes.
    pub mean_anisotropy: f32,
    /// Mean singular-value ratio of the regions in their source patches.
    pub mean_source_anisotropy: f32,
    /// Mean geometric disagreement (0 when the term is off).
    pub mean_geom: f32,
    /// Training throughput over the interval.
    pub pairs_per_s: f64,
}

impl LogRow {
    fn csv(&self) -> String {
        let mut cols = vec![self.step.to_string(), self.epoch.to_string()];
        match &self.train {
            Some(t) => cols.extend([
                format!("{:e}", t.lr),
                format!("{:.6}", t.loss),
                format!("{:.5}", t.mean_positive),
                format!("{:.5}", t.mean_hardest_negative),
                format!("{:.5}", t.mean_anisotropy),
                format!("{:.5}", t.mean_source_anisotropy),
                format!("{:.5}", t.mean_geom),
                format!("{:.1}", t.pairs_per_s),
            ]),
            None => cols.extend(std::iter::repeat_n(String::new(), 8)),
        }
        match &self.validation {
            Some(v) => cols.extend([
                v.tentatives.to_string(),
                v.correct.to_string(),
                v.inliers.to_string(),
            ]),
            None => cols.extend(std::iter::repeat_n(String::new(), 3)),
        }
        cols.join(",")
    }

    fn parse(line: &str) -> Option<LogRow> {
        let mut c: Vec<&str> = line.split(',').collect();
        if c.len() == 11 {
            // The layout before mean_source_anisotropy and mean_geom (a run resumed with this
            // version keeps its rows): the source anisotropy was not measured, no geometric term.
            if !c[3].is_empty() {
                c.splice(7..7, ["NaN", "0"]);
            } else {
                c.splice(7..7, ["", ""]);
            }
        }
        if c.len() != 13 {
            return None;
        }
        let train = if c[3].is_empty() {
            None
        } else {
            Some(TrainMeans {
                lr: c[2].parse().ok()?,
                loss: c[3].parse().ok()?,
                mean_positive: c[4].parse().ok()?,
                mean_hardest_negative: c[5].parse().ok()?,
                mean_anisotropy: c[6].parse().ok()?,
                mean_source_anisotropy: c[7].parse().ok()?,
                mean_geom: c[8].parse().ok()?,
                pairs_per_s: c[9].parse().ok()?,
            })
        };
        let validation = if c[10].is_empty() {
            None
        } else {
            Some(Validation {
                tentatives: c[10].parse().ok()?,
                correct: c[11].parse().ok()?,
                inliers: c[12].parse().ok()?,
            })
        };
        Some(LogRow {
            step: c[0].parse().ok()?,
            epoch: c[1].parse().ok()?,
            train,
            validation,
        })
    }
}

/// Reads `log.csv` (rows that do not parse are skipped).
pub fn read_log(path: &Path) -> Result<Vec<LogRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text.lines().skip(1).filter_map(LogRow::parse).collect())
}

/// How a session runs.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// The run's output folder (checkpoint, log, curves, weights).
    pub out: PathBuf,
    /// Continue from `out/checkpoint.safetensors`.
    pub resume: bool,
    /// Steps between checkpoints (and validations, and curve redraws); 0: only at the end.
    pub checkpoint_every: u64,
    /// Steps per log row.
    pub log_every: u64,
    /// The pair validated at each checkpoint, if any.
    pub validation: Option<ValidationPair>,
    /// Stop (with a checkpoint) after this many steps of this session; resume later.
    pub stop_after: Option<u64>,
    /// Run the steps on the GPU (`Trainer::use_gpu`); a one-line error when there is none.
    pub cuda: bool,
}

/// What the caller hears about (for progress output).
#[derive(Clone, Debug)]
pub enum Event {
    /// The run starts or resumes at `step` of `total`.
    Started {
        /// Steps already done.
        step: u64,
        /// Steps in the whole run.
        total: u64,
    },
    /// A step finished.
    Step {
        /// The step number (0-based).
        step: u64,
        /// Its loss.
        loss: f64,
        /// Its learning rate.
        lr: f32,
    },
    /// A row was written to `log.csv`.
    Logged(LogRow),
    /// A checkpoint was written.
    Checkpointed {
        /// Steps done.
        step: u64,
    },
    /// The session stopped before the end (`stop_after`).
    Paused {
        /// Steps done.
        step: u64,
    },
    /// The run finished and wrote its weights.
    Finished {
        /// The final weights file.
        weights: PathBuf,
    },
}

/// Runs (or resumes) a training run in `options.out`. Returns the trainer at the end.
pub fn run_session(
    settings: RunSettings,
    data: PairSet,
    descriptor: Descriptor,
    init: Option<TrainAffNet>,
    options: &SessionOptions,
    mut observe: impl FnMut(Event),
) -> Result<Trainer> {
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let ckpt_path = out.join(CHECKPOINT_FILE);
    let log_path = out.join(LOG_FILE);
    let mut rows = Vec::new();
    let mut trainer = if options.resume {
        if !ckpt_path.is_file() {
            return Err(Error::invalid(format!(
                "--resume: {} has no {CHECKPOINT_FILE}",
                out.display()
            )));
        }
        let ckpt = Checkpoint::load(&ckpt_path)?;
        let done = ckpt.step;
        let t = Trainer::resume(settings, data, descriptor, ckpt)?;
        if log_path.is_file() {
            rows = read_log(&log_path)?;
            rows.retain(|r| r.step <= done);
        }
        t
    } else {
        if ckpt_path.exists() {
            return Err(Error::invalid(format!(
                "{} already holds a run ({CHECKPOINT_FILE}); pass --resume to continue it, or choose another --out",
                out.display()
            )));
        }
        Trainer::new(settings, data, descriptor, init)?
    };
    if options.cuda {
        #[cfg(feature = "cuda")]
        trainer.use_gpu(crate::gpu::Gpu::open("--device cuda")?)?;
        #[cfg(not(feature = "cuda"))]
        return Err(crate::gpu::no_device_error(
            "--device cuda",
            "this wbs was built without the `cuda` feature",
        ));
    }
    // (Re)write the log with the rows kept.
    let mut log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let mut text = format!("{HEADER}\n");
    for r in &rows {
        text += &r.csv();
        text.push('\n');
    }
    log.write_all(text.as_bytes())
        .map_err(|e| Error::io(&log_path, e))?;

    let total = trainer.total_steps();
    observe(Event::Started {
        step: trainer.steps_done(),
        total,
    });
    let mut append =
        |row: LogRow, rows: &mut Vec<LogRow>, observe: &mut dyn FnMut(Event)| -> Result<()> {
            writeln!(log, "{}", row.csv()).map_err(|e| Error::io(&log_path, e))?;
            log.flush().map_err(|e| Error::io(&log_path, e))?;
            rows.push(row.clone());
            observe(Event::Logged(row));
            Ok(())
        };
    let validate_now = |t: &Trainer| -> Result<Option<Validation>> {
        options
            .validation
            .as_ref()
            .map(|pair| validate(t.model(), pair))
            .transpose()
    };
    if trainer.steps_done() == 0 {
        if let Some(v) = validate_now(&trainer)? {
            let row = LogRow {
                step: 0,
                epoch: 0,
                train: None,
                validation: Some(v),
            };
            append(row, &mut rows, &mut observe)?;
        }
    }

    let mut acc = Accumulator::default();
    let mut session_steps = 0u64;
    // The best validation so far (from the log when resuming, so the best file stays right).
    let mut best_correct: Option<usize> = rows
        .iter()
        .filter(|r| r.step > 0)
        .filter_map(|r| r.validation.as_ref().map(|v| v.correct))
        .max();
    let checkpoint = |t: &Trainer, rows: &[LogRow]| -> Result<()> {
        t.checkpoint().save(&ckpt_path)?;
        #[cfg(feature = "plots")]
        draw_curves(&out.join(CURVES_FILE), rows)?;
        #[cfg(not(feature = "plots"))]
        let _ = rows;
        Ok(())
    };
    while !trainer.finished() {
        if options.stop_after.is_some_and(|n| session_steps >= n) {
            if let Some(row) = acc.row(&trainer) {
                append(row, &mut rows, &mut observe)?;
            }
            checkpoint(&trainer, &rows)?;
            observe(Event::Paused {
                step: trainer.steps_done(),
            });
            return Ok(trainer);
        }
        let t = Instant::now();
        let r = trainer.step()?;
        acc.add(&r, trainer.settings.batch, t.elapsed().as_secs_f64());
        session_steps += 1;
        observe(Event::Step {
            step: trainer.steps_done(),
            loss: r.stats.loss.loss,
            lr: r.lr,
        });
        let done = trainer.steps_done();
        let at_checkpoint = options.checkpoint_every > 0 && done % options.checkpoint_every == 0;
        if (options.log_every > 0 && done % options.log_every == 0)
            || at_checkpoint
            || trainer.finished()
        {
            if let Some(row) = acc.row(&trainer) {
                append(row, &mut rows, &mut observe)?;
            }
        }
        if at_checkpoint || trainer.finished() {
            if let Some(v) = validate_now(&trainer)? {
                if best_correct.is_none_or(|b| v.correct > b) {
                    best_correct = Some(v.correct);
                    save_weights(&trainer, &out.join(BEST_WEIGHTS_FILE))?;
                }
                let row = LogRow {
                    step: done,
                    epoch: trainer.last_epoch(),
                    train: None,
                    validation: Some(v),
                };
                append(row, &mut rows, &mut observe)?;
            }
            checkpoint(&trainer, &rows)?;
            observe(Event::Checkpointed { step: done });
        }
    }
    let weights = out.join(WEIGHTS_FILE);
    save_weights(&trainer, &weights)?;
    observe(Event::Finished { weights });
    Ok(trainer)
}

/// Writes the final weights in the inference format, with the run in the metadata.
pub fn save_weights(trainer: &Trainer, path: &Path) -> Result<()> {
    let mut w = trainer.model().to_weights();
    w.metadata
        .insert(crate::nn::META_SOURCE.into(), "wbs train affnet".into());
    w.metadata
        .insert("wbs.steps".into(), trainer.steps_done().to_string());
    w.metadata
        .insert(crate::nn::META_EPOCH.into(), trainer.epoch().to_string());
    w.metadata.insert(
        "wbs.run".into(),
        serde_json::to_string(&trainer.settings).unwrap_or_default(),
    );
    let tmp = path.with_extension(format!("{}.partial", std::process::id()));
    w.save(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Sums over the steps since the last log row.
#[derive(Default)]
struct Accumulator {
    steps: u64,
    lr: f64,
    loss: f64,
    positive: f64,
    negative: f64,
    anisotropy: f64,
    geom: f64,
    source_anisotropy: f64,
    pairs: f64,
    seconds: f64,
}

impl Accumulator {
    fn add(&mut self, r: &crate::train::run::trainer::StepReport, batch: usize, seconds: f64) {
        self.steps += 1;
        self.lr += r.lr as f64;
        self.loss += r.stats.loss.loss;
        self.positive += r.stats.loss.mean_positive as f64;
        self.negative += r.stats.loss.mean_hardest_negative as f64;
        self.anisotropy += r.stats.mean_anisotropy as f64;
        self.geom += r.stats.mean_geom as f64;
        self.source_anisotropy += r.stats.mean_source_anisotropy as f64;
        self.pairs += batch as f64;
        self.seconds += seconds;
    }

    /// The row of the interval, and a reset; None when no step was run.
    fn row(&mut self, t: &Trainer) -> Option<LogRow> {
        if self.steps == 0 {
            return None;
        }
        let n = self.steps as f64;
        let row = LogRow {
            step: t.steps_done(),
            epoch: t.last_epoch(),
            train: Some(TrainMeans {
                lr: (self.lr / n) as f32,
                loss: self.loss / n,
                mean_positive: (self.positive / n) as f32,
                mean_hardest_negative: (self.negative / n) as f32,
                mean_anisotropy: (self.anisotropy / n) as f32,
                mean_geom: (self.geom / n) as f32,
                mean_source_anisotropy: (self.source_anisotropy / n) as f32,
                pairs_per_s: self.pairs / self.seconds.max(1e-9),
            }),
            validation: None,
        };
        *self = Accumulator::default();
        Some(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rows_round_trip_and_rows_of_the_earlier_layout_are_kept() {
        let row = LogRow {
            step: 40,
            epoch: 1,
            train: Some(TrainMeans {
                lr: 0.004,
                loss: 1.25,
                mean_positive: 0.5,
                mean_hardest_negative: 0.625,
                mean_anisotropy: 2.5,
                mean_source_anisotropy: 1.75,
                mean_geom: 0.125,
                pairs_per_s: 600.5,
            }),
            validation: None,
        };
        assert_eq!(LogRow::parse(&row.csv()), Some(row));
        let val = LogRow {
            step: 100,
            epoch: 2,
            train: None,
            validation: Some(Validation {
                tentatives: 60,
                correct: 30,
                inliers: 28,
            }),
        };
        assert_eq!(LogRow::parse(&val.csv()), Some(val.clone()));

        // 11 columns: written before the geometric columns existed.
        let old = LogRow::parse("20,0,4.9e-3,1.2,0.6,0.57,3.1,820.0,,,").unwrap();
        let t = old.train.unwrap();
        assert_eq!(
            (old.step, t.mean_anisotropy, t.pairs_per_s),
            (20, 3.1, 820.0)
        );
        assert!(t.mean_source_anisotropy.is_nan());
        assert_eq!(t.mean_geom, 0.0);
        assert_eq!(LogRow::parse("100,2,,,,,,,60,30,28"), Some(val));
        assert_eq!(LogRow::parse("1,2,3"), None);
    }
}
