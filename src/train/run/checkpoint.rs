//! Training checkpoints: everything a resumed run needs to continue bit for bit.
//!
//! One safetensors file (`checkpoint.safetensors` in the output folder), written through a
//! temporary file and a rename:
//! - AffNet's state dict under its usual names (weights and batch-norm running statistics), so
//!   `wbs weights inspect` reads it and `--shape affnet --affnet-weights` could even use it;
//! - `sgd.momentum`: SGD's momentum buffer (absent before the first step);
//! - metadata `wbs.kind = train-checkpoint`, `wbs.step` (steps done), `wbs.epoch`, `wbs.seed`,
//!   `wbs.rng` (how batch randomness is derived: from the seed and the step number only, so the
//!   step is the whole generator state) and `wbs.run`, the run's settings as JSON, compared on
//!   resume.

use std::path::Path;

use crate::nn::{NetworkKind, Weights};
use crate::{Error, Result};

/// The `kind` metadata of a checkpoint file.
pub const KIND_CHECKPOINT: &str = "train-checkpoint";
const MOMENTUM: &str = "sgd.momentum";

/// A training state.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// AffNet's state dict.
    pub weights: Weights,
    /// The SGD momentum buffer (`None` before the first step).
    pub momentum: Option<Vec<f32>>,
    /// Steps done.
    pub step: u64,
    /// The epoch of the next step.
    pub epoch: u64,
    /// The run's seed.
    pub seed: u64,
    /// The run's settings (JSON).
    pub run: String,
}

fn bad(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Weights(format!("{}: {message}", path.display()))
}

impl Checkpoint {
    /// Writes the checkpoint to `path` (safetensors, atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut w = self.weights.clone();
        if let Some(m) = &self.momentum {
            w.insert(MOMENTUM, vec![m.len()], m.clone());
        }
        for (k, v) in [
            (crate::train::data::META_KIND, KIND_CHECKPOINT.to_string()),
            ("wbs.step", self.step.to_string()),
            ("wbs.epoch", self.epoch.to_string()),
            ("wbs.seed", self.seed.to_string()),
            (
                "wbs.rng",
                "counter-based: step s draws from Rng::new(mix64(seed ^ mix64(s)))".to_string(),
            ),
            ("wbs.run", self.run.clone()),
        ] {
            w.metadata.insert(k.into(), v);
        }
        // Weights::save writes in place: write a temporary file next to it, then rename.
        let tmp = path.with_extension(format!("{}.partial", std::process::id()));
        w.save(&tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            std::fs::remove_file(&tmp).ok();
            Error::io(path, e)
        })
    }

    /// Reads a checkpoint written by [`Checkpoint::save`]; one-line errors for other files.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let mut w = Weights::load(path)?;
        if w.metadata
            .get(crate::train::data::META_KIND)
            .map(String::as_str)
            != Some(KIND_CHECKPOINT)
        {
            return Err(bad(path, "not a wbs training checkpoint"));
        }
        let num = |key: &str| -> Result<u64> {
            w.metadata
                .get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(path, format!("checkpoint metadata lacks a number '{key}'")))
        };
        let (step, epoch, seed) = (num("wbs.step")?, num("wbs.epoch")?, num("wbs.seed")?);
        let run = w.metadata.get("wbs.run").cloned().unwrap_or_default();
        let momentum = w.tensors.remove(MOMENTUM).map(|p| p.data);
        NetworkKind::AffNet.check(&w).map_err(|e| bad(path, e))?;
        Ok(Checkpoint {
            weights: w,
            momentum,
            step,
            epoch,
            seed,
            run,
        })
    }
}
