//! `wbs eval`: evaluate methods on datasets (table, JSON, plots); `wbs eval merge`: combine shards.

use std::path::PathBuf;

use std::time::Duration;

use clap::{ArgAction, ArgMatches, Args, FromArgMatches, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{FeatureArgs, VerifyArgs};
use crate::eval::datasets::{load_dataset, load_pair_list, parse_dataset_spec, parse_list_spec};
use crate::eval::record::Shard;
use crate::eval::report::{paper_table_markdown, write_reports};
use crate::eval::{EvalFile, MethodConfig, Plan, Progress, RunOptions};
use crate::files::check_writable_dir;
use crate::geometry::Geometry;
use crate::pipeline::Method;
use crate::{Error, Result};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub action: Option<EvalAction>,
    /// A dataset in its authors' layout: OxAff, EF, EVD, SymB, WxBS or homogr, read from
    /// <root>/<NAME>, or from DIR with NAME=DIR. Repeat for several (columns of the table).
    #[arg(long = "dataset", value_name = "NAME[=DIR]")]
    pub datasets: Vec<String>,
    /// A pair list (GDB, LTLL, your data): lines `image1 image2 [H-file | pts-file | -]`, paths
    /// relative to the list, `#` comments. The dataset is called NAME, or the file's stem.
    #[arg(long = "list", value_name = "[NAME=]FILE")]
    pub lists: Vec<String>,
    /// The folder that holds the datasets named without =DIR.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Where the journal (pairs.jsonl), eval.json, table.md/.csv, summary.csv, report.md and
    /// plots/ go.
    #[arg(long, value_name = "DIR", default_value = "eval-out")]
    pub out: PathBuf,
    /// Also draw each pair's inliers to DIR/<method>/<pair>.png.
    #[arg(long, value_name = "DIR")]
    pub viz_dir: Option<PathBuf>,
    /// Continue the run in --out: pairs already in its pairs.jsonl are not matched again
    /// (failed pairs are retried).
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Replace an earlier run in --out (without it, a folder holding one is refused).
    #[arg(long)]
    pub overwrite: bool,
    /// Run only shard I of N (pairs whose position modulo N is I-1); combine the shards' outputs
    /// with `wbs eval merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Pairs matched at the same time, at least 1 (each match also uses every core for its own
    /// stages).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = super::whole::<usize>,
          allow_negative_numbers = true)]
    pub jobs: usize,
    /// Only pairs whose name contains TEXT (e.g. `graf`, `OxAff/bark/1-6`); repeatable.
    #[arg(long, value_name = "TEXT")]
    pub only: Vec<String>,
    #[command(flatten)]
    pub features: MethodsArgs,
    /// Verification flags; the model follows each pair's ground truth (homography or, for
    /// annotated correspondences, fundamental); --geometry applies to pairs without ground truth.
    #[command(flatten)]
    pub verify: VerifyArgs,
}

#[derive(Subcommand, Debug)]
pub enum EvalAction {
    /// Combine the outputs of `wbs eval --shard I/N` runs into one report.
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shards' eval.json files (or their --out folders).
    #[arg(required = true, value_name = "SHARD.json")]
    pub shards: Vec<PathBuf>,
    /// Where the merged reports go.
    #[arg(long, value_name = "DIR", default_value = "eval-out")]
    pub out: PathBuf,
}

/// The feature flags of `wbs match`, with `--method` repeatable: every method becomes a row.
#[derive(Debug, Clone)]
pub struct MethodsArgs {
    pub methods: Vec<Method>,
    pub features: FeatureArgs,
}

impl Args for MethodsArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        FeatureArgs::augment_args(cmd).mut_arg("method", |a| {
            a.action(ArgAction::Append)
                .help("Method (preset), named as in the AffNet paper; repeat to compare several")
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for MethodsArgs {
    fn from_arg_matches(matches: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        let features = FeatureArgs::from_arg_matches(matches)?;
        let methods = matches
            .get_many::<Method>("method")
            .map(|v| v.copied().collect())
            .unwrap_or_else(|| vec![features.method]);
        Ok(MethodsArgs { methods, features })
    }

    fn update_from_arg_matches(
        &mut self,
        matches: &ArgMatches,
    ) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// The methods' settings from the flags, each validated before any pair runs.
fn methods(args: &EvalArgs) -> Result<Vec<MethodConfig>> {
    let device = super::resolve_device(args.features.features.device, true)?;
    let mut out: Vec<MethodConfig> = Vec::new();
    for &method in &args.features.methods {
        let mut features = args.features.features.clone();
        features.method = method;
        if !method.is_mods() {
            // One --schedule for the MODS methods of a comparison; the others run without.
            features.schedule = None;
        }
        let with = |kind: Geometry| {
            let mut config = features.config()?;
            let mut verify = args.verify.clone();
            verify.geometry = kind;
            verify.apply(&mut config)?;
            Ok::<_, Error>(config)
        };
        let homography = with(Geometry::Homography)?;
        let fundamental = with(Geometry::Fundamental)?;
        let label = MethodConfig::label_of(&homography);
        if out.iter().any(|m| m.label == label) {
            return Err(Error::invalid(format!("--method {label} is given twice")));
        }
        out.push(MethodConfig {
            label,
            device: device.kind,
            homography,
            fundamental,
            without_ground_truth: args.verify.geometry,
        });
    }
    Ok(out)
}

/// The datasets named by --dataset and --list, in the order given (datasets first).
fn datasets(args: &EvalArgs) -> Result<Vec<crate::eval::Dataset>> {
    let mut out: Vec<crate::eval::Dataset> = Vec::new();
    for spec in &args.datasets {
        let (layout, dir) = parse_dataset_spec(spec, args.root.as_deref())?;
        out.push(load_dataset(layout, &dir)?);
    }
    for spec in &args.lists {
        let (name, file) = parse_list_spec(spec);
        out.push(load_pair_list(name, &file)?);
    }
    for (i, d) in out.iter().enumerate() {
        if out[..i].iter().any(|e| e.name == d.name) {
            return Err(Error::invalid(format!(
                "dataset {} is given twice (name a pair list with --list NAME=FILE)",
                d.name
            )));
        }
    }
    Ok(out)
}

pub fn run(args: EvalArgs) -> Result<()> {
    let command: Vec<String> = std::env::args().collect();
    if let Some(EvalAction::Merge(merge)) = args.action {
        check_writable_dir(&merge.out)?;
        let file = crate::eval::merge::merge(&merge.shards, command)?;
        write_reports(&merge.out, &file)?;
        return finish(&file, &merge.out);
    }
    if args.datasets.is_empty() && args.lists.is_empty() {
        return Err(Error::invalid(
            "wbs eval: give at least one --dataset NAME[=DIR] or --list FILE (see wbs eval --help)",
        ));
    }
    if args.jobs == 0 {
        return Err(Error::invalid("--jobs must be at least 1, got 0"));
    }
    check_writable_dir(&args.out)?;
    if let Some(dir) = &args.viz_dir {
        check_writable_dir(dir)?;
    }
    let plan = Plan {
        methods: methods(&args)?,
        datasets: datasets(&args)?,
        only: args.only.clone(),
        shard: args.shard,
    };
    if plan.pairs().is_empty() {
        return Err(Error::invalid(
            "no pair to evaluate: --only or --shard selects none of the datasets' pairs",
        ));
    }
    let options = RunOptions {
        out: args.out.clone(),
        viz_dir: args.viz_dir.clone(),
        resume: args.resume,
        overwrite: args.overwrite,
        jobs: args.jobs,
        command,
    };
    let file = crate::eval::run_with(&plan, &options, &Bar::default())?;
    finish(&file, &args.out)
}

/// Prints the table and where everything went. Failed pairs (a file that cannot be read, a
/// match that errs) do not stop the run, but make it end with [`Error::PairsFailed`] (exit
/// code 3) once every report is written, so that a script or CI job sees them.
fn finish(file: &EvalFile, out: &std::path::Path) -> Result<()> {
    print!("{}", paper_table_markdown(file));
    let failed: Vec<_> = file.pairs.iter().filter(|r| r.error.is_some()).collect();
    println!(
        "\n{} record(s): {} computed, {} resumed, {} failed · {:.0} s",
        file.pairs.len(),
        file.run.computed,
        file.run.resumed,
        failed.len(),
        file.run.wall_seconds
    );
    for r in failed.iter().take(5) {
        eprintln!(
            "failed: {} ({}): {}",
            r.pair,
            r.method,
            r.error.as_deref().unwrap_or("")
        );
    }
    if failed.len() > 5 {
        eprintln!("failed: ... {} more in report.md", failed.len() - 5);
    }
    println!(
        "wrote eval.json, table.md, table.csv, summary.csv, report.md and plots/ in {}",
        out.display()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::PairsFailed {
            failed: failed.len(),
            total: file.pairs.len(),
        })
    }
}

/// The progress bar of `eval` and `collection` on stderr (indicatif hides it when stderr is not a terminal).
#[derive(Default)]
pub(super) struct Bar {
    bar: std::sync::OnceLock<ProgressBar>,
}

impl Progress for Bar {
    fn start(&self, todo: usize) {
        let bar = ProgressBar::with_draw_target(Some(todo as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed:>4} [{bar:24}] {pos}/{len} eta {eta:>3} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(500));
        let _ = self.bar.set(bar);
    }

    fn advance(&self, status: &str) {
        if let Some(bar) = self.bar.get() {
            bar.set_message(status.to_string());
            bar.inc(1);
        }
    }

    /// A line on stderr that does not tear the bar.
    fn note(&self, line: &str) {
        match self.bar.get() {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}
