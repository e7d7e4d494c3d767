//! `wbs eval` end to end on small synthetic datasets: the protocol's verdicts (right and wrong
//! ground-truth models, correspondences, no ground truth) equal `wbs match`'s; shards merged
//! equal one full run; a resumed run equals an uninterrupted one; a corrupt image or ground-truth
//! file fails only its pair; argument and layout errors are one line.

mod eval_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use eval_support::*;
use nalgebra::Matrix3;
use wbs::eval::datasets::{load_dataset, load_pair_list, Layout};
use wbs::eval::record::Shard;
use wbs::eval::{run, EvalFile, MethodConfig, Plan, RunOptions};
use wbs::geometry::Geometry;
use wbs::pipeline::Method;
use wbs::protocol::GroundTruth;
use wbs::Matcher;

const SIZE: u32 = 256;

fn options(out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        viz_dir: None,
        resume: false,
        overwrite: false,
        jobs: 2,
        command: vec!["test".into()],
    }
}

fn plan(datasets: Vec<wbs::eval::Dataset>, methods: &[Method]) -> Plan {
    Plan {
        datasets,
        methods: methods.iter().map(|&m| MethodConfig::preset(m)).collect(),
        only: Vec::new(),
        shard: None,
    }
}

fn record<'a>(file: &'a EvalFile, pair: &str, method: &str) -> &'a wbs::eval::PairRecord {
    file.pairs
        .iter()
        .find(|r| r.pair == pair && r.method == method)
        .unwrap_or_else(|| panic!("no record for {pair} ({method})"))
}

/// Everything but the measured times and the run's circumstances.
fn numbers(file: &EvalFile) -> serde_json::Value {
    let mut v = serde_json::to_value(file).unwrap();
    v.as_object_mut().unwrap().remove("run");
    for r in v["pairs"].as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("timings_ms");
    }
    for s in v["summary"].as_array_mut().unwrap() {
        s.as_object_mut().unwrap().remove("median_ms");
    }
    v
}

/// The `wbs match --ground-truth` path for one pair: the same call and the same judge.
fn wbs_match(
    a: &Path,
    b: &Path,
    method: Method,
    kind: Geometry,
    truth: &GroundTruth,
) -> wbs::pipeline::MatchReport {
    let method = MethodConfig::preset(method);
    let matcher = Matcher::new(method.config(kind).clone()).unwrap();
    let mut report = matcher.match_files(a, b).unwrap();
    report.judge_against(truth);
    report
}

/// Asserts that a record has what `wbs match` gets on its images (verdict, inliers, tentatives,
/// model, features) and returns that report.
fn same_as_wbs_match(
    r: &wbs::eval::PairRecord,
    kind: Geometry,
    truth: &GroundTruth,
) -> wbs::pipeline::MatchReport {
    let direct = wbs_match(
        Path::new(&r.images[0]),
        Path::new(&r.images[1]),
        r.method.parse().unwrap(),
        kind,
        truth,
    );
    assert_eq!(
        (
            direct.registered,
            direct.inliers,
            direct.tentatives,
            direct.model,
            direct.features
        ),
        (r.registered, r.inliers, r.tentatives, r.model, r.features),
        "{}",
        r.pair
    );
    direct
}

#[test]
fn verdicts_follow_the_protocol_and_equal_wbs_match() {
    let dir = scratch("verdicts");
    let homogr = dir.join("homogr");
    let truths = homogr_fixture(&homogr, 3, SIZE);
    // p2's model is wrong by 20 px: enough inliers, wrong geometry.
    let shift = Matrix3::new(1.0, 0.0, 20.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0);
    let wrong = shift * truths[2];
    write_h(
        &homogr.join("p2_model.txt"),
        &wrong.try_inverse().unwrap(),
        1.0,
    );
    // A WxBS pair (annotated correspondences → fundamental matrix) and a list pair without truth.
    let wxbs = dir.join("wxbs");
    std::fs::create_dir_all(wxbs.join("p0")).unwrap();
    std::fs::copy(homogr.join("p0A.png"), wxbs.join("p0/01.png")).unwrap();
    std::fs::copy(homogr.join("p0B.png"), wxbs.join("p0/02.png")).unwrap();
    write_points(&wxbs.join("p0/pts.txt"), &truths[0], SIZE, [0.0, 0.0]);
    std::fs::write(dir.join("mine.txt"), "homogr/p1A.png homogr/p1B.png -\n").unwrap();

    let datasets = vec![
        load_dataset(Layout::Homogr, &homogr).unwrap(),
        load_dataset(Layout::WxBS, &wxbs).unwrap(),
        load_pair_list(None, &dir.join("mine.txt")).unwrap(),
    ];
    let mut opts = options(&dir.join("out"));
    opts.viz_dir = Some(dir.join("viz"));
    let file = run(&plan(datasets, &[Method::Hesaff]), &opts).unwrap();
    assert_eq!(file.pairs.len(), 5);

    for (i, name) in ["homogr/p0", "homogr/p1"].iter().enumerate() {
        let r = record(&file, name, "hesaff");
        assert!(r.registered, "{name}: {}", r.verdict);
        assert!(r.metric.unwrap() < 2.0, "{name}: {:?}", r.metric);
        assert_eq!(r.geometry.as_deref(), Some("homography"));
        assert!(dir.join(format!("viz/hesaff/homogr_p{i}.png")).exists());
    }
    let r = record(&file, "homogr/p2", "hesaff");
    assert!(
        r.inliers >= 15,
        "the wrong model must be rejected by the check, not the count"
    );
    assert!(!r.registered && r.error.is_none(), "{}", r.verdict);
    let m = r.metric.unwrap();
    assert!((15.0..25.0).contains(&m), "median error {m}");
    assert!(
        r.verdict.contains("median ground-truth error"),
        "{}",
        r.verdict
    );

    let r = record(&file, "WxBS/p0", "hesaff");
    assert_eq!(
        (r.ground_truth.as_str(), r.geometry.as_deref()),
        ("correspondences", Some("fundamental"))
    );
    assert!(r.registered, "{}", r.verdict);

    let r = record(&file, "mine/homogr/p1A-p1B", "hesaff");
    assert_eq!(r.ground_truth, "none");
    assert!(
        r.registered && r.verdict.contains("no ground truth"),
        "{}",
        r.verdict
    );
    let s = file.summary.iter().find(|s| s.dataset == "mine").unwrap();
    assert_eq!(s.without_ground_truth, 1);
    let table = std::fs::read_to_string(dir.join("out/table.md")).unwrap();
    assert!(
        table.contains("| mine 1* |") && table.contains("without ground truth"),
        "{table}"
    );
    assert!(table.contains("| hesaff | 2/3, "), "{table}");

    // The same verdicts, inliers and measures as wbs match --ground-truth on each pair.
    for r in &file.pairs {
        let truth = match r.dataset.as_str() {
            "homogr" => {
                let i: usize = r.pair["homogr/p".len()..].parse().unwrap();
                GroundTruth::Homography(if i == 2 { wrong } else { truths[i] })
            }
            "WxBS" => wbs::protocol::load_ground_truth(&wxbs.join("p0/pts.txt")).unwrap(),
            _ => GroundTruth::None,
        };
        let kind = if r.geometry.as_deref() == Some("fundamental") {
            Geometry::Fundamental
        } else {
            Geometry::Homography
        };
        let direct = same_as_wbs_match(r, kind, &truth);
        let metric = direct.ground_truth.as_ref().and_then(|j| j.metric);
        match (metric, r.metric) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9 * a.abs().max(1.0), "{}", r.pair),
            (a, b) => assert_eq!(a, b, "{}", r.pair),
        }
    }
}

#[test]
fn an_image_in_several_pairs_is_extracted_once_with_the_same_results() {
    let dir = scratch("reuse");
    let homogr = dir.join("homogr");
    homogr_fixture(&homogr, 2, SIZE);
    // Two more pairs over the same files, as OxAff's img1 is in five pairs.
    std::fs::write(
        dir.join("mine.txt"),
        "homogr/p0A.png homogr/p0B.png -\nhomogr/p0A.png homogr/p1B.png -\n",
    )
    .unwrap();
    let datasets = vec![
        load_dataset(Layout::Homogr, &homogr).unwrap(),
        load_pair_list(None, &dir.join("mine.txt")).unwrap(),
    ];
    let mut opts = options(&dir.join("out"));
    opts.jobs = 1; // pairs in order: homogr/p0 and homogr/p1 extract every file first
    let file = run(&plan(datasets, &[Method::Hesaff, Method::Mods]), &opts).unwrap();
    assert_eq!(file.pairs.len(), 8);
    for name in ["mine/homogr/p0A-p0B", "mine/homogr/p0A-p1B"] {
        let r = record(&file, name, "hesaff");
        for stage in ["load", "pyramid", "detect", "describe"] {
            assert_eq!(r.timings_ms[stage], 0.0, "{name}: {stage} was not reused");
        }
    }
    let r = record(&file, "homogr/p0", "hesaff");
    assert!(r.timings_ms["detect"] > 0.0);
    // Reused or not (features, or a MODS method's views), each pair gets what `wbs match` gets,
    // and a MODS record says where its schedule stopped, as `wbs match` does.
    for r in &file.pairs {
        let direct = same_as_wbs_match(r, Geometry::Homography, &GroundTruth::None);
        let steps = direct
            .mods
            .as_ref()
            .map(|m| (m.registered_at, m.steps.len()));
        assert_eq!(
            r.mods.map(|m| (m.registered_at, m.steps)),
            steps,
            "{}",
            r.pair
        );
        assert_eq!(r.mods.is_some(), r.method == "mods");
    }
    // The summary counts the steps per dataset; the report shows them and the views' time.
    for s in &file.summary {
        let records: Vec<_> = file
            .pairs
            .iter()
            .filter(|r| r.method == s.method && r.dataset == s.dataset)
            .collect();
        match &s.mods {
            Some(m) => {
                let mut stopped = vec![0usize; m.stopped_at.len()];
                let mut none = 0;
                for r in &records {
                    match r.mods.unwrap().registered_at {
                        Some(k) => stopped[k] += 1,
                        None => none += 1,
                    }
                }
                assert_eq!((&m.stopped_at, m.ran_out), (&stopped, none));
                assert_eq!(
                    m.stopped_at.iter().sum::<usize>() + m.ran_out,
                    records.len()
                );
                assert!(s.median_ms.contains_key("views"));
            }
            None => assert_eq!(s.method, "hesaff"),
        }
    }
    let report = std::fs::read_to_string(dir.join("out/report.md")).unwrap();
    assert!(
        report.contains("## MODS steps") && report.contains("| views |"),
        "{report}"
    );
}

fn fixture(name: &str, pairs: usize) -> PathBuf {
    let dir = scratch(name);
    homogr_fixture(&dir.join("homogr"), pairs, SIZE);
    dir
}

#[test]
fn shards_merged_equal_one_full_run() {
    let dir = fixture("shards", 4);
    let dataset = || vec![load_dataset(Layout::Homogr, &dir.join("homogr")).unwrap()];
    let methods = [Method::Hesaff, Method::Adhesaff];
    let full = run(&plan(dataset(), &methods), &options(&dir.join("full"))).unwrap();
    assert_eq!(full.pairs.len(), 8);

    let mut shard_dirs = Vec::new();
    for index in 1..=3 {
        let mut p = plan(dataset(), &methods);
        p.shard = Some(Shard { index, count: 3 });
        let out = dir.join(format!("shard{index}"));
        let mut o = options(&out);
        o.jobs = 1;
        let part = run(&p, &o).unwrap();
        // Shard i holds the pairs at positions i-1, i-1+3, ...
        assert!(part.pairs.iter().all(|r| r.index % 3 == index - 1));
        shard_dirs.push(out);
    }
    let merged = wbs::eval::merge::merge(&shard_dirs, vec!["merge".into()]).unwrap();
    wbs::eval::report::write_reports(&dir.join("merged"), &merged).unwrap();
    assert_eq!(numbers(&merged), numbers(&full));
    for name in ["table.md", "table.csv"] {
        assert_eq!(
            std::fs::read_to_string(dir.join("merged").join(name)).unwrap(),
            std::fs::read_to_string(dir.join("full").join(name)).unwrap(),
            "{name}"
        );
    }
    for plot in ["registered", "inliers", "time"] {
        let img = image::open(dir.join(format!("merged/plots/{plot}.png"))).unwrap();
        assert!(img.width() >= 800 && img.height() >= 400, "{plot}");
    }

    let e = wbs::eval::merge::merge(&shard_dirs[..2], vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing shard(s) 3/3"), "{e}");
    let twice = [
        shard_dirs[0].clone(),
        shard_dirs[0].clone(),
        shard_dirs[1].clone(),
    ];
    let e = wbs::eval::merge::merge(&twice, vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("given twice"), "{e}");
    let e = wbs::eval::merge::merge(&[dir.join("full"), shard_dirs[0].clone()], vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a shard"), "{e}");
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let dir = fixture("resume", 4);
    let dataset = || vec![load_dataset(Layout::Homogr, &dir.join("homogr")).unwrap()];
    let methods = [Method::Hesaff, Method::Adhesaff];
    let full = run(&plan(dataset(), &methods), &options(&dir.join("full"))).unwrap();

    // An interruption: three records written, the fourth cut off mid-line, no reports.
    let cut = dir.join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::copy(dir.join("full/settings.json"), cut.join("settings.json")).unwrap();
    let journal = std::fs::read_to_string(dir.join("full/pairs.jsonl")).unwrap();
    let lines: Vec<&str> = journal.lines().collect();
    assert_eq!(lines.len(), 8);
    let partial = format!(
        "{}\n{}\n{}\n{}",
        lines[0],
        lines[1],
        lines[2],
        &lines[3][..lines[3].len() / 2]
    );
    std::fs::write(cut.join("pairs.jsonl"), partial).unwrap();

    let e = run(&plan(dataset(), &methods), &options(&cut))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume"), "{e}");
    let mut other = options(&cut);
    other.resume = true;
    let e = run(&plan(dataset(), &[Method::Hesaff]), &other)
        .unwrap_err()
        .to_string();
    assert!(e.contains("other settings"), "{e}");

    let resumed = run(&plan(dataset(), &methods), &other).unwrap();
    assert_eq!((resumed.run.resumed, resumed.run.computed), (3, 5));
    assert_eq!(numbers(&resumed), numbers(&full));
    // The three finished records were kept as they were (times included), not recomputed.
    let kept: Vec<wbs::eval::PairRecord> = lines[..3]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for k in &kept {
        assert_eq!(record(&resumed, &k.pair, &k.method), k);
    }
    // The journal is whole again: eight parseable lines.
    let (records, dropped) = wbs::eval::run::read_journal(&cut.join("pairs.jsonl")).unwrap();
    assert_eq!((records.len(), dropped), (8, 0));
    // Resuming a finished run computes nothing.
    let again = run(&plan(dataset(), &methods), &other).unwrap();
    assert_eq!((again.run.resumed, again.run.computed), (8, 0));
}

fn wbs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wbs"))
        .args(args)
        .output()
        .expect("the wbs binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[test]
fn a_corrupt_image_or_ground_truth_fails_only_its_pair() {
    let dir = fixture("corrupt", 3);
    let homogr = dir.join("homogr");
    std::fs::write(
        homogr.join("p1A.png"),
        b"\x89PNG\r\n\x1a\nthis is not a png",
    )
    .unwrap();
    std::fs::write(homogr.join("p2_model.txt"), "1 0 0\n0 1 0\n").unwrap();
    let out = dir.join("out");
    let o = wbs(&[
        "eval",
        "--dataset",
        &format!("homogr={}", homogr.display()),
        "--out",
        out.to_str().unwrap(),
    ]);
    // Every report is written, and the exit code says that pairs failed.
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("error: 2 of 3 record(s) failed (listed in report.md)"),
        "{stderr}"
    );
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("| hesaff | 1/3, ") && stdout.contains("(2 failed)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 record(s): 3 computed, 0 resumed, 2 failed"),
        "{stdout}"
    );
    let file = EvalFile::read(&out).unwrap();
    assert!(record(&file, "homogr/p0", "hesaff").registered);
    let e = record(&file, "homogr/p1", "hesaff").error.clone().unwrap();
    assert!(e.contains("p1A.png"), "{e}");
    let e = record(&file, "homogr/p2", "hesaff").error.clone().unwrap();
    assert!(e.contains("p2_model.txt") && e.contains("9 numbers"), "{e}");
    assert_eq!(file.summary[0].errors, 2);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Failed pairs") && report.contains("homogr/p1 (hesaff)"),
        "{report}"
    );

    // The folder now holds a run: refused without --resume or --overwrite, replaced with
    // --overwrite (the same two pairs fail again), and the two flags exclude each other.
    let dataset = format!("homogr={}", homogr.display());
    let again = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--dataset",
            &dataset,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        wbs(&args)
    };
    let o = again(&[]);
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("add --resume to continue it, --overwrite to replace it"),
        "{stderr}"
    );
    let o = again(&["--overwrite"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("3 record(s): 3 computed, 0 resumed, 2 failed"),
        "{}",
        text(&o.stdout)
    );
    let o = again(&["--overwrite", "--resume"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));

    // The CLI's merge of a single full run reproduces its table.
    let merged = dir.join("merged");
    let o = wbs(&[
        "eval",
        "merge",
        out.join("eval.json").to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(merged.join("table.md")).unwrap(),
        std::fs::read_to_string(out.join("table.md")).unwrap()
    );
}

#[test]
fn wrong_arguments_are_one_line_errors() {
    let empty = scratch("cli-errors");
    let root = empty.display().to_string();
    for (args, expected) in [
        (
            vec!["eval", "--dataset", "OxAff", "--root", root.as_str()],
            "no such folder; expected the Oxford affine layout",
        ),
        (
            vec!["eval", "--dataset", &format!("EF={root}")],
            "expected the Edge Foci layout",
        ),
        (vec!["eval", "--dataset", "GDB"], "unknown dataset 'GDB'"),
        (
            vec!["eval", "--list", "/nonexistent/gdb.txt"],
            "no such pair list",
        ),
        (vec!["eval"], "give at least one --dataset"),
        (
            vec!["eval", "merge", "/nonexistent/eval.json"],
            "/nonexistent/eval.json",
        ),
    ] {
        let o = wbs(&args);
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
    let o = wbs(&["eval", "--dataset", "SymB", "--shard", "4/3"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn a_real_pair_gets_wbs_matchs_verdict() {
    let Some(shared) = shared() else { return };
    // homogr: the model maps B → A, so this also checks the inversion end to end.
    let dir = scratch("real");
    let mut p = plan(
        vec![load_dataset(Layout::Homogr, &shared.join("homogr")).unwrap()],
        &[Method::Hesaff],
    );
    p.only = vec!["homogr/graf".into()];
    let file = run(&p, &options(&dir)).unwrap();
    assert_eq!(file.pairs.len(), 1);
    let r = &file.pairs[0];
    let model = wbs::synth::read_homography(&shared.join("homogr/graf_model.txt")).unwrap();
    let truth = GroundTruth::Homography(model.try_inverse().unwrap());
    let direct = wbs_match(
        &shared.join("homogr/grafA.png"),
        &shared.join("homogr/grafB.png"),
        Method::Hesaff,
        Geometry::Homography,
        &truth,
    );
    assert_eq!(
        (r.registered, r.inliers),
        (direct.registered, direct.inliers)
    );
    assert!(r.registered && r.metric.unwrap() < 5.0, "{}", r.verdict);
}
