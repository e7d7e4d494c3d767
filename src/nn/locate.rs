//! Where a network's weights come from when the user does not say: the `--weights` flag, then
//! `WBS_WEIGHTS`, then the files wbs ships in `data/`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::arch::NetworkKind;
use super::weights::weights_error;
use crate::Result;

/// Environment variable naming a weights file or a directory of `*.safetensors` files.
pub const WEIGHTS_ENV: &str = "WBS_WEIGHTS";

/// How a weights file was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsOrigin {
    /// Named explicitly (a `--*-weights` flag, or `Config::weights`).
    Flag,
    /// Named by the `WBS_WEIGHTS` environment variable.
    Env,
    /// The file wbs ships in `data/`.
    Shipped,
}

impl WeightsOrigin {
    /// How a user reads it: "flag", "WBS_WEIGHTS" or "shipped".
    pub fn describe(self) -> &'static str {
        match self {
            WeightsOrigin::Flag => "flag",
            WeightsOrigin::Env => WEIGHTS_ENV,
            WeightsOrigin::Shipped => "shipped",
        }
    }
}

/// Finds the weights file for `kind`: [`locate_with_origin`] without the origin.
pub fn locate(kind: NetworkKind, explicit: Option<&Path>) -> Result<PathBuf> {
    locate_with_origin(kind, explicit).map(|(path, _)| path)
}

/// Finds the weights file for `kind`, and says how it was found.
///
/// Order: `explicit` (a `--weights FILE` flag; must exist), then `WBS_WEIGHTS` (a file, or a
/// directory holding `affnet.safetensors` / `orinet.safetensors` / `hardnet.safetensors`), then
/// the shipped defaults in `data/` next to the executable (`<exe dir>/data`,
/// `<exe dir>/../../data` for cargo's `target/<profile>/` layout) or in the source tree. A
/// `WBS_WEIGHTS` that names nothing (no such file or folder) is an error, not a silent fallback.
pub fn locate_with_origin(
    kind: NetworkKind,
    explicit: Option<&Path>,
) -> Result<(PathBuf, WeightsOrigin)> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok((p.to_path_buf(), WeightsOrigin::Flag))
        } else {
            Err(weights_error(format!(
                "{}: no such {} weights file",
                p.display(),
                kind.name()
            )))
        };
    }
    let env = std::env::var_os(WEIGHTS_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(p) = &env {
        if p.is_file() {
            return Ok((p.clone(), WeightsOrigin::Env));
        }
        if !p.is_dir() {
            return Err(weights_error(format!(
                "{WEIGHTS_ENV}={}: no such file or folder (it should name a weights file or a folder holding {})",
                p.display(),
                kind.file_name()
            )));
        }
        let in_dir = p.join(kind.file_name());
        if in_dir.is_file() {
            return Ok((in_dir, WeightsOrigin::Env));
        }
    }
    if let Some(p) = default_dirs()
        .into_iter()
        .map(|d| d.join(kind.file_name()))
        .find(|p| p.is_file())
    {
        return Ok((p, WeightsOrigin::Shipped));
    }
    let env_note = match &env {
        Some(p) => format!(
            " ({WEIGHTS_ENV}={} has no {})",
            p.display(),
            kind.file_name()
        ),
        None => String::new(),
    };
    Err(weights_error(format!(
        "no {} weights found{env_note}: pass --weights FILE, set {WEIGHTS_ENV}, or import the authors' file with `wbs weights import {}.pth --out {}`",
        kind.name(),
        kind.name(),
        kind.file_name()
    )))
}

/// The `data/` directories wbs ships defaults in, most specific first.
fn default_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("data"));
        dirs.push(exe_dir.join("../../data"));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("data"));
    dirs
}
