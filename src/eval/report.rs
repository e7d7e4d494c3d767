//! From records to reports: the per-dataset numbers of `protocol.md`, the side-by-side table in
//! the AffNet paper's form (Markdown and CSV), a per-dataset CSV, a human report and `eval.json`.
//!
//! Everything here is a pure function of the settings and the records, so a merged set of shards
//! gives the same report as one full run. Times are medians (robust to a busy machine); inliers
//! are averaged over registered pairs only, as in the paper's Table 3.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::{EvalFile, PairRecord, RunInfo, Settings};
use crate::files::write_atomically;
use crate::{Error, Result};

/// One method on one dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The method's label.
    pub method: String,
    /// The dataset's name.
    pub dataset: String,
    /// Pairs evaluated (errors included).
    pub pairs: usize,
    /// Pairs the protocol counts as registered.
    pub registered: usize,
    /// Pairs that failed to run (unreadable image or ground truth); not registered.
    pub errors: usize,
    /// Pairs without ground truth, judged on their inlier count alone.
    pub without_ground_truth: usize,
    /// Mean inliers over the registered pairs (None when none is registered).
    pub mean_inliers: Option<f64>,
    /// Mean tentative correspondences over the pairs that ran.
    pub mean_tentatives: Option<f64>,
    /// Mean features per image over the pairs that ran.
    pub mean_features: Option<f64>,
    /// Median milliseconds per pair for each stage of `timings_ms` ("total": the whole pair).
    pub median_ms: BTreeMap<String, f64>,
    /// A MODS method's steps over the pairs that ran; absent for other methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mods: Option<ModsSummary>,
}

/// Where a MODS method's schedule stopped on a dataset's pairs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModsSummary {
    /// Pairs whose schedule stopped at step k (MODS's rule: enough inliers after the LAF check;
    /// the protocol's ground-truth check may still reject some), k = 0, 1, …
    pub stopped_at: Vec<usize>,
    /// Pairs that ran every step and none stopped.
    pub ran_out: usize,
}

/// The stages of `timings_ms`, in pipeline order ("views": a MODS method's synthesised views
/// with their feature stages).
pub const STAGES: [&str; 10] = [
    "load", "pyramid", "detect", "shape", "orient", "describe", "views", "match", "verify", "total",
];

/// Where the MODS schedule stopped on `ran` (None when no record has MODS steps).
fn mods_summary(ran: &[&PairRecord]) -> Option<ModsSummary> {
    let mut out: Option<ModsSummary> = None;
    for steps in ran.iter().filter_map(|r| r.mods) {
        let summary = out.get_or_insert_with(ModsSummary::default);
        match steps.registered_at {
            Some(k) => {
                if summary.stopped_at.len() <= k {
                    summary.stopped_at.resize(k + 1, 0);
                }
                summary.stopped_at[k] += 1;
            }
            None => summary.ran_out += 1,
        }
    }
    out
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The median as numpy computes it (the mean of the two middle values for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    })
}

/// The records in report order: methods as given, then pair position.
pub fn sort_records(settings: &Settings, records: &mut [PairRecord]) {
    let rank = |m: &str| {
        settings
            .methods
            .iter()
            .position(|c| c.label == m)
            .unwrap_or(usize::MAX)
    };
    records.sort_by(|a, b| {
        (rank(&a.method), a.index, &a.pair).cmp(&(rank(&b.method), b.index, &b.pair))
    });
}

/// The protocol's per-dataset numbers for every method and dataset of the settings.
pub fn summarize(settings: &Settings, records: &[PairRecord]) -> Vec<Summary> {
    let mut out = Vec::new();
    for method in &settings.methods {
        for dataset in &settings.datasets {
            let rows: Vec<&PairRecord> = records
                .iter()
                .filter(|r| r.method == method.label && r.dataset == dataset.name)
                .collect();
            let ran: Vec<&PairRecord> =
                rows.iter().copied().filter(|r| r.error.is_none()).collect();
            let registered: Vec<&PairRecord> =
                ran.iter().copied().filter(|r| r.registered).collect();
            let mut median_ms = BTreeMap::new();
            for stage in STAGES {
                let times: Vec<f64> = ran
                    .iter()
                    .filter_map(|r| r.timings_ms.get(stage).copied())
                    .collect();
                if let Some(m) = median(times) {
                    median_ms.insert(stage.to_string(), m);
                }
            }
            out.push(Summary {
                method: method.label.clone(),
                dataset: dataset.name.clone(),
                pairs: rows.len(),
                registered: registered.len(),
                errors: rows.len() - ran.len(),
                without_ground_truth: rows.iter().filter(|r| r.ground_truth == "none").count(),
                mean_inliers: mean(registered.iter().map(|r| r.inliers as f64)),
                mean_tentatives: mean(ran.iter().map(|r| r.tentatives as f64)),
                mean_features: mean(
                    ran.iter()
                        .map(|r| (r.features[0] + r.features[1]) as f64 / 2.0),
                ),
                median_ms,
                mods: mods_summary(&ran),
            });
        }
    }
    out
}

/// Puts an evaluation together: records sorted, summaries computed.
pub fn build(settings: Settings, run: RunInfo, mut records: Vec<PairRecord>) -> EvalFile {
    sort_records(&settings, &mut records);
    let summary = summarize(&settings, &records);
    EvalFile {
        version: env!("CARGO_PKG_VERSION").to_string(),
        settings,
        run,
        summary,
        pairs: records,
    }
}

fn cell<'a>(file: &'a EvalFile, method: &str, dataset: &str) -> Option<&'a Summary> {
    file.summary
        .iter()
        .find(|s| s.method == method && s.dataset == dataset)
}

/// Pairs per dataset in this evaluation (the same for every method), and those without ground
/// truth.
fn dataset_sizes(file: &EvalFile, dataset: &str) -> (usize, usize) {
    file.summary
        .iter()
        .filter(|s| s.dataset == dataset)
        .map(|s| (s.pairs, s.without_ground_truth))
        .max()
        .unwrap_or((0, 0))
}

/// The paper's table: rows methods, columns datasets, cells "registered/pairs, mean inliers".
pub fn paper_table_markdown(file: &EvalFile) -> String {
    let datasets = &file.settings.datasets;
    let mut out = String::from("| method |");
    let mut notes = Vec::new();
    for d in datasets {
        let (pairs, no_gt) = dataset_sizes(file, &d.name);
        if no_gt > 0 {
            let _ = write!(out, " {} {pairs}* |", d.name);
            notes.push(format!(
                "\\* {}: {no_gt} pair(s) without ground truth, judged on inliers alone.",
                d.name
            ));
        } else {
            let _ = write!(out, " {} {pairs} |", d.name);
        }
    }
    out += "\n|---|";
    out += &"---|".repeat(datasets.len());
    out += "\n";
    for m in &file.settings.methods {
        let _ = write!(out, "| {} |", m.label);
        for d in datasets {
            let text = match cell(file, &m.label, &d.name) {
                Some(s) if s.pairs > 0 => {
                    let mut t = format!(
                        "{}/{}, {}",
                        s.registered,
                        s.pairs,
                        s.mean_inliers
                            .map(|v| format!("{v:.0}"))
                            .unwrap_or_else(|| "–".into())
                    );
                    if s.errors > 0 {
                        let _ = write!(t, " ({} failed)", s.errors);
                    }
                    t
                }
                _ => "–".into(),
            };
            let _ = write!(out, " {text} |");
        }
        out += "\n";
    }
    if !notes.is_empty() {
        out += "\n";
        out += &notes.join("\n");
        out += "\n";
    }
    out
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}")).unwrap_or_default()
}

/// The paper's table as CSV: one row per method, three columns per dataset.
pub fn paper_table_csv(file: &EvalFile) -> String {
    let mut out = String::from("method");
    for d in &file.settings.datasets {
        let n = &d.name;
        let _ = write!(out, ",{n} registered,{n} pairs,{n} mean inliers");
    }
    out += "\n";
    for m in &file.settings.methods {
        out += &csv_field(&m.label);
        for d in &file.settings.datasets {
            match cell(file, &m.label, &d.name) {
                Some(s) => {
                    let _ = write!(
                        out,
                        ",{},{},{}",
                        s.registered,
                        s.pairs,
                        opt(s.mean_inliers, 1)
                    );
                }
                None => out += ",,,",
            }
        }
        out += "\n";
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Every number of every (method, dataset) as CSV.
pub fn summary_csv(file: &EvalFile) -> String {
    let mut out = String::from(
        "method,dataset,pairs,registered,errors,without_ground_truth,mean_inliers,mean_tentatives,features_per_image",
    );
    for stage in STAGES {
        let _ = write!(out, ",median_ms_{stage}");
    }
    out += "\n";
    for s in &file.summary {
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            csv_field(&s.method),
            csv_field(&s.dataset),
            s.pairs,
            s.registered,
            s.errors,
            s.without_ground_truth,
            opt(s.mean_inliers, 1),
            opt(s.mean_tentatives, 1),
            opt(s.mean_features, 0),
        );
        for stage in STAGES {
            let _ = write!(out, ",{}", opt(s.median_ms.get(stage).copied(), 0));
        }
        out += "\n";
    }
    out
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The command line as one shell-quoted string.
pub fn command_line(run: &RunInfo) -> String {
    run.command
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The human report: the table, the per-dataset details, failures, and the plots.
pub fn report_markdown(file: &EvalFile) -> String {
    let run = &file.run;
    let mut out = String::from("# wbs eval\n\n");
    let _ = writeln!(out, "```sh\n{}\n```\n", command_line(run));
    let load = |l: Option<[f64; 3]>| {
        l.map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
            .unwrap_or_else(|| "?".into())
    };
    let _ = writeln!(
        out,
        "wbs {} · {} records ({} computed, {} resumed) · wall {:.0} s · {} pair(s) at a time, {} threads · load average {} at the start, {} at the end{}\n",
        file.version,
        file.pairs.len(),
        run.computed,
        run.resumed,
        run.wall_seconds,
        run.jobs,
        run.threads,
        load(run.load_start),
        load(run.load_end),
        file.settings
            .shard
            .map(|s| format!(" · shard {s}"))
            .unwrap_or_default()
    );
    if !run.merged_from.is_empty() {
        let _ = writeln!(out, "Merged from: {}\n", run.merged_from.join(", "));
    }
    out += "## Registered pairs, mean inliers\n\n";
    out += &paper_table_markdown(file);
    out += "\n## Per dataset\n\n";
    out += "| method | dataset | pairs | registered | failed | no GT | mean inliers | mean tentatives | features / image | median s / pair | detect | shape | orient | describe | views | match | verify |\n";
    out += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for s in &file.summary {
        let ms = |k: &str| opt(s.median_ms.get(k).map(|v| v / 1e3), 2);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.method,
            s.dataset,
            s.pairs,
            s.registered,
            s.errors,
            s.without_ground_truth,
            opt(s.mean_inliers, 1),
            opt(s.mean_tentatives, 1),
            opt(s.mean_features, 0),
            ms("total"),
            ms("detect"),
            ms("shape"),
            ms("orient"),
            ms("describe"),
            ms("views"),
            ms("match"),
            ms("verify"),
        );
    }
    out += "\nStage times are medians in seconds (the slower image of the two, which run in parallel; \
            `views`: a MODS method's views with their feature stages, summed over its steps).\n";
    let mods: Vec<(&Summary, &ModsSummary)> = file
        .summary
        .iter()
        .filter_map(|s| s.mods.as_ref().map(|m| (s, m)))
        .collect();
    if !mods.is_empty() {
        out += "\n## MODS steps\n\nWhere each schedule stopped: the first step with at least the \
                minimum inliers after the LAF check (the ground-truth check above may still reject \
                the model), or none.\n\n| method | dataset | stopped at step | none |\n|---|---|---|---|\n";
        for (s, m) in mods {
            let steps: Vec<String> = m
                .stopped_at
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                s.method,
                s.dataset,
                steps.join(" · "),
                m.ran_out
            );
        }
    }
    let failed: Vec<&PairRecord> = file.pairs.iter().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() {
        out += "\n## Failed pairs\n\n";
        for r in failed {
            let _ = writeln!(
                out,
                "- {} ({}): {}",
                r.pair,
                r.method,
                r.error.as_deref().unwrap_or("")
            );
        }
    }
    let missed: Vec<&PairRecord> = file
        .pairs
        .iter()
        .filter(|r| r.error.is_none() && !r.registered)
        .collect();
    if !missed.is_empty() {
        out += "\n## Not registered\n\n";
        for r in missed {
            let _ = writeln!(out, "- {} ({}): {}", r.pair, r.method, r.verdict);
        }
    }
    if cfg!(feature = "plots") {
        out += "\n## Plots\n\n![registered pairs](plots/registered.png)\n\n![inliers per pair](plots/inliers.png)\n\n![time per pair](plots/time.png)\n";
    }
    out
}

/// Writes `eval.json`, `table.md`, `table.csv`, `summary.csv`, `report.md` and the plots into
/// `dir`; returns the paths written.
pub fn write_reports(dir: &Path, file: &EvalFile) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_string_pretty(file)
        .map_err(|e| Error::invalid(format!("cannot encode eval.json: {e}")))?;
    let mut written = Vec::new();
    for (name, text) in [
        ("eval.json", json + "\n"),
        ("table.md", paper_table_markdown(file)),
        ("table.csv", paper_table_csv(file)),
        ("summary.csv", summary_csv(file)),
        ("report.md", report_markdown(file)),
    ] {
        let path = dir.join(name);
        write_atomically(&path, text.as_bytes())?;
        written.push(path);
    }
    #[cfg(feature = "plots")]
    written.extend(super::plot::write_plots(&dir.join("plots"), file)?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_like_numpy() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--dataset"), "--dataset");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
