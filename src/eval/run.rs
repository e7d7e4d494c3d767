//! Running an evaluation: every (pair, method) is matched, judged and appended to
//! `<out>/pairs.jsonl` as soon as it finishes, so an interrupted run loses no finished pair and
//! `--resume` continues where it stopped.
//!
//! Pairs run `jobs` at a time on plain threads; each match parallelises its own stages on rayon's
//! global pool, so a small `jobs` (2) keeps the cores busy without multiplying the memory of
//! several scale spaces. Results never depend on `jobs`: every match is seeded and the report
//! is sorted afterwards.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::datasets::TruthSource;
use super::datasets::{truth_kind, Dataset, Pair};
use super::method::{MethodConfig, MethodMatchers};
use super::record::{
    load_average, DatasetInfo, EvalFile, ModsSteps, PairRecord, RunInfo, Settings, Shard,
};
use super::report::{build, write_reports};
use super::reuse::{self, FeatureReuse};
use crate::device::DeviceKind;
use crate::files::write_atomically;
use crate::geometry::Geometry;
use crate::matcher::merge_stage_times;
use crate::pipeline::{ms, FeatureTimes, MatchReport};
use crate::protocol::GroundTruth;
use crate::{Error, Result};

/// The journal of finished records, one JSON object a line.
pub const JOURNAL: &str = "pairs.jsonl";
/// The settings of the run that owns the journal.
pub const SETTINGS: &str = "settings.json";

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The datasets, in order; pair positions count through them in this order.
    pub datasets: Vec<Dataset>,
    /// The methods; every selected pair runs with each.
    pub methods: Vec<MethodConfig>,
    /// Only pairs whose name contains one of these (empty: all).
    pub only: Vec<String>,
    /// Only the pairs of this shard (`--shard I/N`); None for all.
    pub shard: Option<Shard>,
}

impl Plan {
    /// The settings that identify this evaluation.
    pub fn settings(&self) -> Settings {
        Settings {
            datasets: self
                .datasets
                .iter()
                .map(|d| DatasetInfo {
                    name: d.name.clone(),
                    layout: d.layout.name().to_string(),
                    root: absolute(&d.root).display().to_string(),
                    pairs: d.pairs.len(),
                })
                .collect(),
            methods: self.methods.clone(),
            only: self.only.clone(),
            shard: self.shard,
        }
    }

    /// The pairs this evaluation runs, with their positions in the full list.
    pub fn pairs(&self) -> Vec<(usize, &Pair)> {
        let settings = self.settings();
        self.datasets
            .iter()
            .flat_map(|d| &d.pairs)
            .enumerate()
            .filter(|(i, p)| settings.selects(*i, &p.name))
            .collect()
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// How to run it.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where the journal and the reports go.
    pub out: PathBuf,
    /// Write an inlier picture per pair and method here.
    pub viz_dir: Option<PathBuf>,
    /// Continue the journal in `out` instead of refusing to overwrite it.
    pub resume: bool,
    /// Replace an earlier run's journal in `out` instead of refusing to (ignored with `resume`).
    pub overwrite: bool,
    /// Pairs matched at the same time.
    pub jobs: usize,
    /// The command line, for the report.
    pub command: Vec<String>,
}

/// The one place where `wbs eval` calls the matcher: the method's matcher for the model the
/// ground truth asks for (the same code as `wbs match`), and the protocol's verdict (the same as
/// `wbs match --ground-truth`).
pub fn match_pair(
    pair: &Pair,
    truth: &GroundTruth,
    method: &MethodConfig,
    matchers: &MethodMatchers,
) -> Result<MatchReport> {
    match_pair_reusing(pair, truth, (0, method), matchers, &FeatureReuse::default())
}

/// [`match_pair`] with features that earlier pairs of the run extracted ([`FeatureReuse`]);
/// `method` is the method and its position in the plan. A MODS schedule runs as in
/// `wbs match`, taking the views earlier pairs made of an image from its store.
pub fn match_pair_reusing(
    pair: &Pair,
    truth: &GroundTruth,
    (position, method): (usize, &MethodConfig),
    matchers: &MethodMatchers,
    reuse: &FeatureReuse,
) -> Result<MatchReport> {
    let geometry = method.geometry_for(truth);
    let matcher = matchers.for_geometry(geometry);
    let paths = [&pair.image1, &pair.image2];
    let keys = paths.map(|path| reuse::key(position, geometry, path));
    let mut report = if matcher.config().schedule.is_some() {
        let stores = keys.each_ref().map(|key| reuse.views(key));
        matcher.match_files_with_views(
            &pair.image1,
            &pair.image2,
            [stores[0].as_deref(), stores[1].as_deref()],
        )?
    } else {
        let start = Instant::now();
        let parallel = matcher.runs_images_in_parallel();
        let [(f1, fresh1), (f2, fresh2)] = reuse.pair_features(
            [&keys[0], &keys[1]],
            |i| matcher.extract_file(paths[i]),
            parallel,
        )?;
        let mut report = matcher.match_features(&f1, &f2)?;
        // A reused image cost this pair nothing.
        let none = FeatureTimes::default();
        let t1 = if fresh1 { &f1.times } else { &none };
        let t2 = if fresh2 { &f2.times } else { &none };
        merge_stage_times(&mut report.timings_ms, t1, t2, parallel);
        let load = if parallel {
            t1.load.max(t2.load)
        } else {
            t1.load + t2.load
        };
        report.timings_ms.insert("load".into(), load);
        report.timings_ms.insert("total".into(), ms(start));
        report.images = [
            pair.image1.display().to_string(),
            pair.image2.display().to_string(),
        ];
        report
    };
    report.judge_against(truth);
    Ok(report)
}

/// The reuse keys of a pair's two images (features, or a MODS method's views), when they are
/// known before its ground truth is loaded (not for a truth file of unknown kind).
fn planned_keys(position: usize, method: &MethodConfig, pair: &Pair) -> Option<[reuse::Key; 2]> {
    let geometry = match &pair.truth {
        TruthSource::None => method.without_ground_truth,
        TruthSource::Homography { .. } => Geometry::Homography,
        TruthSource::Correspondences { .. } => Geometry::Fundamental,
        TruthSource::File { .. } => return None,
    };
    Some([
        reuse::key(position, geometry, &pair.image1),
        reuse::key(position, geometry, &pair.image2),
    ])
}

/// Loads the ground truth, matches and judges one pair. Never fails: a failure (unreadable
/// file, refused settings, even a panic) becomes the record's `error`.
pub fn evaluate_pair(
    index: usize,
    pair: &Pair,
    (position, method): (usize, &MethodConfig),
    matchers: &MethodMatchers,
    reuse: &FeatureReuse,
) -> (PairRecord, Option<MatchReport>) {
    let mut record = PairRecord {
        index,
        dataset: pair.dataset.clone(),
        pair: pair.name.clone(),
        method: method.label.clone(),
        images: [
            pair.image1.display().to_string(),
            pair.image2.display().to_string(),
        ],
        ground_truth: pair.truth.kind().to_string(),
        geometry: None,
        registered: false,
        verdict: String::new(),
        inliers: 0,
        tentatives: 0,
        features: [0, 0],
        metric: None,
        model: None,
        ransac_iterations: 0,
        timings_ms: BTreeMap::new(),
        error: None,
        mods: None,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let truth = pair.truth.load()?;
        record.ground_truth = truth_kind(&truth).to_string();
        record.geometry = Some(
            match method.geometry_for(&truth) {
                crate::geometry::Geometry::Homography => "homography",
                crate::geometry::Geometry::Fundamental => "fundamental",
            }
            .to_string(),
        );
        match_pair_reusing(pair, &truth, (position, method), matchers, reuse)
    }));
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => return (failed(record, e.to_string()), None),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            return (failed(record, format!("wbs panicked: {message}")), None);
        }
    };
    record.registered = report.registered;
    record.verdict = report.verdict.clone();
    record.inliers = report.inliers;
    record.tentatives = report.tentatives;
    record.features = report.features;
    record.metric = report.ground_truth.as_ref().and_then(|j| j.metric);
    record.model = report.model;
    record.ransac_iterations = report.ransac_iterations;
    record.timings_ms = report.timings_ms.clone();
    record.mods = report.mods.as_ref().map(|m| ModsSteps {
        registered_at: m.registered_at,
        steps: m.steps.len(),
    });
    (record, Some(report))
}

fn failed(mut record: PairRecord, message: String) -> PairRecord {
    record.verdict = format!("failed: {message}");
    record.error = Some(message);
    record
}

/// Where `--viz-dir` puts a pair's picture: `<dir>/<method>/<pair with / as _>.png`.
pub fn viz_path(dir: &Path, record: &PairRecord) -> PathBuf {
    dir.join(&record.method)
        .join(format!("{}.png", record.pair.replace(['/', '\\'], "_")))
}

fn draw(path: &Path, pair: &Pair, report: &MatchReport) -> Result<()> {
    let options = report.settings.load_options();
    let a = crate::image::load_rgb(&pair.image1, &options)?;
    let b = crate::image::load_rgb(&pair.image2, &options)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::viz::draw_matches(&a, &b, report, &crate::viz::MatchDrawing::default())
        .save(path)
        .map_err(|e| Error::image(path, format!("cannot write: {e}")))
}

/// Reads a journal: the records and the number of lines dropped because they do not parse (a
/// line cut short by an interruption). A missing journal is empty.
pub fn read_journal(path: &Path) -> Result<(Vec<PairRecord>, usize)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut records = Vec::new();
    let mut dropped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<PairRecord>(line) {
            Ok(r) => records.push(r),
            Err(_) => dropped += 1,
        }
    }
    Ok((records, dropped))
}

fn journal_text(records: &[PairRecord]) -> Result<String> {
    let mut text = String::new();
    for r in records {
        text += &serde_json::to_string(r)
            .map_err(|e| Error::invalid(format!("cannot encode a record: {e}")))?;
        text.push('\n');
    }
    Ok(text)
}

/// The records an earlier run left in `out` that this run can keep: same settings, finished
/// without error (failed pairs run again: the file may have been fixed). Refuses a journal
/// from different settings.
fn resumable(
    out: &Path,
    settings: &Settings,
    planned: &HashSet<(String, String)>,
) -> Result<Vec<PairRecord>> {
    let journal = out.join(JOURNAL);
    if !journal.exists() {
        return Ok(Vec::new());
    }
    let settings_path = out.join(SETTINGS);
    let text = std::fs::read_to_string(&settings_path).map_err(|e| Error::io(&settings_path, e))?;
    let earlier: Settings = serde_json::from_str(&text)
        .map_err(|e| Error::Dataset(format!("{}: unreadable ({e})", settings_path.display())))?;
    if !settings.same_evaluation(&earlier) || settings.shard != earlier.shard {
        return Err(Error::invalid(format!(
            "--resume: {} was written with other settings (datasets, methods, --only or --shard differ); \
             resume with the same options or choose another --out",
            journal.display()
        )));
    }
    let (records, _) = read_journal(&journal)?;
    // The last record of a (method, pair) wins; failures are dropped so that they run again.
    let mut kept: BTreeMap<(String, String), PairRecord> = BTreeMap::new();
    for r in records {
        kept.insert(r.key(), r);
    }
    Ok(kept
        .into_values()
        .filter(|r| r.error.is_none() && planned.contains(&r.key()))
        .collect())
}

/// What an evaluation tells its caller while it runs (the CLI draws a progress bar). Every
/// method has a default: [`Quiet`] prints notes to stderr and nothing else.
pub trait Progress: Sync {
    /// The run starts with `todo` (pair, method) matches to do.
    fn start(&self, todo: usize) {
        let _ = todo;
    }
    /// One match finished; `status` sums up the run so far.
    fn advance(&self, status: &str) {
        let _ = status;
    }
    /// A line for the user (resuming, a picture that could not be written).
    fn note(&self, line: &str) {
        eprintln!("{line}");
    }
    /// The run is over.
    fn finish(&self) {}
}

/// A [`Progress`] that prints notes only.
pub struct Quiet;

impl Progress for Quiet {}

/// Runs the evaluation quietly: see [`run_with`].
pub fn run(plan: &Plan, options: &RunOptions) -> Result<EvalFile> {
    run_with(plan, options, &Quiet)
}

/// Runs the evaluation, writes the journal and the reports into `options.out`, and returns
/// the evaluation, telling `progress` as it goes. Errors only for unusable arguments, networks
/// that cannot be loaded, or an unwritable output folder; a pair that fails is a record with its
/// reason.
pub fn run_with(plan: &Plan, options: &RunOptions, progress: &dyn Progress) -> Result<EvalFile> {
    let start = Instant::now();
    let load_start = load_average();
    let settings = plan.settings();
    let out = &options.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let journal_path = out.join(JOURNAL);

    let pairs = plan.pairs();
    // Every method's networks are loaded once, before any pair runs: missing or malformed
    // weights and an unavailable device are errors now, not a failure per pair.
    let matchers = plan
        .methods
        .iter()
        .map(MethodConfig::matchers)
        .collect::<Result<Vec<_>>>()?;
    let mut todo: Vec<(usize, &Pair, (usize, &MethodConfig), &MethodMatchers)> = Vec::new();
    for &(index, pair) in &pairs {
        for (position, (method, m)) in plan.methods.iter().zip(&matchers).enumerate() {
            todo.push((index, pair, (position, method), m));
        }
    }
    let planned: HashSet<(String, String)> = todo
        .iter()
        .map(|(_, p, (_, m), _)| (m.label.clone(), p.name.clone()))
        .collect();

    let kept = if options.resume {
        resumable(out, &settings, &planned)?
    } else {
        if !options.overwrite && std::fs::metadata(&journal_path).is_ok_and(|m| m.len() > 0) {
            return Err(Error::invalid(format!(
                "{} holds an earlier run; add --resume to continue it, --overwrite to replace it, \
                 or choose another --out",
                journal_path.display()
            )));
        }
        Vec::new()
    };
    let settings_json = serde_json::to_string_pretty(&settings)
        .map_err(|e| Error::invalid(format!("cannot encode the settings: {e}")))?;
    write_atomically(&out.join(SETTINGS), (settings_json + "\n").as_bytes())?;
    // The journal restarts from the kept records (without a cut-off last line or failures).
    write_atomically(&journal_path, journal_text(&kept)?.as_bytes())?;
    let done: HashSet<(String, String)> = kept.iter().map(PairRecord::key).collect();
    todo.retain(|(_, p, (_, m), _)| !done.contains(&(m.label.clone(), p.name.clone())));
    // Each image's features (or a MODS method's views of it) are made once per method and model
    // and reused by the pairs still to run that name it.
    let reuse = FeatureReuse::plan(
        todo.iter()
            .filter_map(|&(_, pair, (position, method), _)| planned_keys(position, method, pair))
            .flatten(),
    );

    let journal = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal_path)
        .map_err(|e| Error::io(&journal_path, e))?;
    progress.start(todo.len());
    if !kept.is_empty() {
        progress.note(&format!(
            "resuming: {} record(s) already done, {} to go",
            kept.len(),
            todo.len()
        ));
    }
    let state = Mutex::new(Tally {
        journal,
        records: Vec::with_capacity(todo.len()),
        registered: 0,
        failed: 0,
        write_error: None,
    });
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // The device runs one pair at a time; on the CPU `jobs` pairs share the cores.
    let on_device = plan.methods.iter().any(|m| m.device == DeviceKind::Cuda);
    let jobs = if on_device { 1 } else { options.jobs.max(1) };
    let jobs = jobs.min(todo.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(index, pair, method, matchers)) = todo.get(i) else {
                        break;
                    };
                    let (record, report) = evaluate_pair(index, pair, method, matchers, &reuse);
                    for key in planned_keys(method.0, method.1, pair).into_iter().flatten() {
                        reuse.release(&key);
                    }
                    if let (Some(dir), Some(report)) = (&options.viz_dir, &report) {
                        if let Err(e) = draw(&viz_path(dir, &record), pair, report) {
                            progress.note(&format!("warning: {}: no picture: {e}", record.pair));
                        }
                    }
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    if let Err(e) = s.append(record, &journal_path) {
                        s.write_error.get_or_insert(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                    let status = format!(
                        "{} registered, {} failed, last {}",
                        s.registered, s.failed, pair.name
                    );
                    drop(s);
                    progress.advance(&status);
                }
            });
        }
    });
    progress.finish();
    let state = state.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = state.write_error {
        return Err(e);
    }
    let run = RunInfo {
        command: options.command.clone(),
        jobs,
        threads: rayon::current_num_threads(),
        wall_seconds: start.elapsed().as_secs_f64(),
        load_start,
        load_end: load_average(),
        computed: state.records.len(),
        resumed: kept.len(),
        merged_from: Vec::new(),
    };
    let mut records = kept;
    records.extend(state.records);
    let file = build(settings, run, records);
    write_reports(out, &file)?;
    Ok(file)
}

struct Tally {
    journal: std::fs::File,
    records: Vec<PairRecord>,
    registered: usize,
    failed: usize,
    write_error: Option<Error>,
}

impl Tally {
    /// Appends one record to the journal (one write of a whole line) and keeps it.
    fn append(&mut self, record: PairRecord, path: &Path) -> Result<()> {
        let line = journal_text(std::slice::from_ref(&record))?;
        self.journal
            .write_all(line.as_bytes())
            .and_then(|_| self.journal.flush())
            .map_err(|e| Error::io(path, e))?;
        self.registered += record.registered as usize;
        self.failed += record.error.is_some() as usize;
        self.records.push(record);
        Ok(())
    }
}
