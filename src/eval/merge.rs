//! `wbs eval merge`: shard outputs (`--shard I/N` runs of the same evaluation) into one report.
//!
//! The merged report is built by the same code from the same records as a single full run, so
//! its table, CSV and per-pair numbers are identical to that run's; only the run information
//! (command line, wall time) says that it was merged.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use super::record::{EvalFile, RunInfo};
use super::report::build;
use crate::{Error, Result};

/// Merges shard files (`eval.json`, or the folders holding them). The shards must come from
/// the same evaluation (same datasets, methods and `--only`) and cover every shard `1/N .. N/N`
/// exactly once.
pub fn merge(inputs: &[PathBuf], command: Vec<String>) -> Result<EvalFile> {
    if inputs.is_empty() {
        return Err(Error::invalid(
            "wbs eval merge: give the shards' eval.json files",
        ));
    }
    let files: Vec<EvalFile> = inputs
        .iter()
        .map(|p| EvalFile::read(p))
        .collect::<Result<_>>()?;
    let first = &files[0];
    for (file, path) in files.iter().zip(inputs).skip(1) {
        if !file.settings.same_evaluation(&first.settings) {
            return Err(Error::invalid(format!(
                "{}: not the same evaluation as {} (datasets, methods or --only differ)",
                path.display(),
                inputs[0].display()
            )));
        }
    }
    check_shards(&files, inputs)?;

    let mut records = BTreeMap::new();
    for (file, path) in files.iter().zip(inputs) {
        for r in &file.pairs {
            if records.insert(r.key(), r.clone()).is_some() {
                return Err(Error::invalid(format!(
                    "{}: {} ({}) is in two shards",
                    path.display(),
                    r.pair,
                    r.method
                )));
            }
        }
    }
    let mut settings = first.settings.clone();
    settings.shard = None;
    let run = RunInfo {
        command,
        jobs: first.run.jobs,
        threads: first.run.threads,
        wall_seconds: files.iter().map(|f| f.run.wall_seconds).sum(),
        load_start: None,
        load_end: None,
        computed: files.iter().map(|f| f.run.computed).sum(),
        resumed: files.iter().map(|f| f.run.resumed).sum(),
        merged_from: inputs.iter().map(|p| p.display().to_string()).collect(),
    };
    Ok(build(settings, run, records.into_values().collect()))
}

/// Every shard of one `N` present exactly once (or a single unsharded run).
fn check_shards(files: &[EvalFile], inputs: &[PathBuf]) -> Result<()> {
    let shards: Vec<_> = files.iter().map(|f| f.settings.shard).collect();
    if shards.iter().all(Option::is_none) && files.len() == 1 {
        return Ok(());
    }
    let mut seen = HashSet::new();
    let mut count = None;
    for (shard, path) in shards.iter().zip(inputs) {
        let Some(shard) = shard else {
            return Err(Error::invalid(format!(
                "{}: a full run, not a shard; merge the --shard I/N runs of one evaluation",
                path.display()
            )));
        };
        if *count.get_or_insert(shard.count) != shard.count {
            return Err(Error::invalid(format!(
                "{}: shard {shard} does not split the pairs like the others (/{})",
                path.display(),
                count.unwrap_or(0)
            )));
        }
        if !seen.insert(shard.index) {
            return Err(Error::invalid(format!(
                "{}: shard {shard} given twice",
                path.display()
            )));
        }
    }
    let n = count.unwrap_or(0);
    let missing: Vec<String> = (1..=n)
        .filter(|i| !seen.contains(i))
        .map(|i| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!(
            "missing shard(s) {}: every shard must be merged for a complete report",
            missing.join(", ")
        )));
    }
    Ok(())
}
