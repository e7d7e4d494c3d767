//! Where a network's weights come from when the user does not say: the `--weights` flag, then
//! `WBS_WEIGHTS`, then the files wbs ships in `data/`.

use std::path::{Path, PathBuf};

use super::arch::NetworkKind;
use super::weights::weights_error;
use crate::Result;

/// Environment variable naming a weights file or a directory of `*.safetensors` files.
pub const WEIGHTS_ENV: &str = "WBS_WEIGHTS";

/// Finds the weights file for `kind`.
///
/// Order: `explicit` (a `--weights FILE` flag; must exist), then `WBS_WEIGHTS` (a file, or a
/// directory holding `affnet.safetensors` / `orinet.safetensors` / `hardnet.safetensors`), then
/// the shipped defaults in `data/` next to the executable (`<exe dir>/data`,
/// `<exe dir>/../../data` for cargo's `target/<profile>/` layout) or in the source tree.
pub fn locate(kind: NetworkKind, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(weights_error(format!(
                "{}: no such {} weights file",
                p.display(),
                kind.name()
            )))
        };
    }
    let env = std::env::var_os(WEIGHTS_ENV).map(PathBuf::from);
    if let Some(p) = &env {
        if p.is_file() {
            return Ok(p.clone());
        }
        let in_dir = p.join(kind.file_name());
        if in_dir.is_file() {
            return Ok(in_dir);
        }
    }
    if let Some(p) = default_dirs()
        .into_iter()
        .map(|d| d.join(kind.file_name()))
        .find(|p| p.is_file())
    {
        return Ok(p);
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
