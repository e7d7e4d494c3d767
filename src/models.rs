//! The networks a pipeline uses, loaded once.
//!
//! Loading a network means reading its weights and compiling its inference plan, which costs more
//! than shaping one image's features. [`Models::for_config`] therefore loads exactly the networks a
//! [`Config`] asks for (AffNet for `--shape affnet`, OriNet for `--orientation orinet`, HardNet
//! for `--descriptor hardnet`), and the stages borrow them: `match_files` loads them per call,
//! batch evaluation loads them once and passes them to `match_files_with` for every pair.
//!
//! ```no_run
//! # fn main() -> wbs::Result<()> {
//! use wbs::models::Models;
//! use wbs::pipeline::{match_files_with, Config, Method};
//!
//! let config = Config::preset(Method::Hesaffnet);
//! let models = Models::for_config(&config)?; // "no AffNet weights found: ..." when absent
//! for (a, b) in [("a1.png", "b1.png"), ("a2.png", "b2.png")] {
//!     let report = match_files_with(a.as_ref(), b.as_ref(), &config, &models)?;
//!     println!("{}", report.verdict);
//! }
//! # Ok(()) }
//! ```

use std::path::Path;

use crate::describe::DescriptorKind;
use crate::laf::Laf;
use crate::nn::{self, AffNet, HardNet, ModelKind, OriNet};
use crate::orient::OrientationMethod;
use crate::patch::{extract_patches, NET_PATCH};
use crate::pipeline::Config;
use crate::pyramid::ScaleSpace;
use crate::shape::ShapeMethod;
use crate::{Error, Result};

/// Patches per network call in the stages: large enough to keep both cores busy (the engine splits
/// a batch into chunks of 8), small enough to bound the patch buffer (16 MiB).
pub const STAGE_BATCH: usize = 4096;

/// The networks a pipeline may use; `None` where the configuration does not need one.
#[derive(Clone, Debug, Default)]
pub struct Models {
    pub affnet: Option<AffNet>,
    pub orinet: Option<OriNet>,
    pub hardnet: Option<HardNet>,
}

impl Models {
    /// No networks: enough for the classical stages.
    pub fn none() -> Models {
        Models::default()
    }

    /// Loads the networks `config` uses, each from `config.weights` or the usual lookup
    /// ([`nn::locate`]: the explicit file, then `WBS_WEIGHTS`, then the shipped `data/`).
    pub fn for_config(config: &Config) -> Result<Models> {
        let w = &config.weights;
        Ok(Models {
            affnet: (config.shape == ShapeMethod::Affnet)
                .then(|| load(ModelKind::AffNet, w.affnet.as_deref(), AffNet::load))
                .transpose()?,
            orinet: (config.orientation == OrientationMethod::Orinet)
                .then(|| load(ModelKind::OriNet, w.orinet.as_deref(), OriNet::load))
                .transpose()?,
            hardnet: (config.descriptor == DescriptorKind::Hardnet)
                .then(|| load(ModelKind::HardNet, w.hardnet.as_deref(), HardNet::load))
                .transpose()?,
        })
    }

    /// AffNet, or an error saying it was not loaded.
    pub fn affnet(&self) -> Result<&AffNet> {
        self.affnet
            .as_ref()
            .ok_or_else(|| not_loaded(ModelKind::AffNet))
    }

    /// OriNet, or an error saying it was not loaded.
    pub fn orinet(&self) -> Result<&OriNet> {
        self.orinet
            .as_ref()
            .ok_or_else(|| not_loaded(ModelKind::OriNet))
    }

    /// HardNet, or an error saying it was not loaded.
    pub fn hardnet(&self) -> Result<&HardNet> {
        self.hardnet
            .as_ref()
            .ok_or_else(|| not_loaded(ModelKind::HardNet))
    }
}

/// Locates and loads one network. The lookup's hint names the generic `--weights FILE`; the
/// matcher's flag for this network is `--<name>-weights`, so the hint says that instead.
fn load<T>(kind: ModelKind, explicit: Option<&Path>, load: fn(&Path) -> Result<T>) -> Result<T> {
    let path = nn::locate(kind, explicit).map_err(|e| match e {
        Error::Weights(message) => Error::Weights(message.replace(
            "--weights FILE",
            &format!("--{}-weights FILE", kind.name().to_lowercase()),
        )),
        other => other,
    })?;
    load(&path)
}

fn not_loaded(kind: ModelKind) -> Error {
    Error::invalid(format!(
        "these settings use {kind}, but it was not loaded (build the models with Models::for_config)"
    ))
}

/// Runs `net` on the 32×32 network patches ([`NET_PATCH`]) of `lafs`, [`STAGE_BATCH`] frames at a
/// time, and returns its per-patch results in order.
pub fn on_patches<T>(space: &ScaleSpace, lafs: &[Laf], net: impl Fn(&[f32]) -> Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(lafs.len());
    for chunk in lafs.chunks(STAGE_BATCH) {
        out.extend(net(&extract_patches(space, chunk, &NET_PATCH)));
    }
    out
}
