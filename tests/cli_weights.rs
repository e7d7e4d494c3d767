//! The networks through the command line: `wbs weights import` → `inspect` → `match`, one-line
//! errors for bad or missing weight files, and HardNet descriptors end to end.

mod nn_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nn_support::{legacy_pth, temp_dir, TestCheckpoint};
use wbs::nn::{random_weights, NetworkKind};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample(n: u32) -> String {
    root()
        .join(format!("data/sample/img{n}.png"))
        .display()
        .to_string()
}

/// Runs wbs with `WBS_WEIGHTS` set to `weights_env` (an empty folder unless a test says otherwise),
/// so that nothing from the caller's environment is found by accident.
fn wbs(args: &[&str], weights_env: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wbs"))
        .args(args)
        .env("WBS_WEIGHTS", weights_env)
        .output()
        .expect("the wbs binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn assert_success(o: &Output) {
    assert!(
        o.status.success(),
        "failed: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// An error run: exit 1, exactly one line on stderr starting with "error:", no panic.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "expected exit 1: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("stdout is only JSON")
}

fn random_affnet_pth(dir: &Path) -> PathBuf {
    let path = dir.join("AffNet.pth");
    let checkpoint = TestCheckpoint::from_weights(&random_weights(NetworkKind::AffNet, 3));
    std::fs::write(&path, legacy_pth(&checkpoint)).unwrap();
    path
}

/// import → inspect → match with the imported file, by flag and through `WBS_WEIGHTS`.
fn round_trip(pth: &Path, dir: &Path) -> serde_json::Value {
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = dir.join("affnet.safetensors");
    let o = wbs(
        &[
            "weights",
            "import",
            pth.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &empty,
    );
    assert_success(&o);
    assert!(
        text(&o.stdout).contains("imported AffNet weights"),
        "{}",
        text(&o.stdout)
    );

    let o = wbs(&["weights", "inspect", out.to_str().unwrap()], &empty);
    assert_success(&o);
    let listing = text(&o.stdout);
    assert!(listing.contains("format   safetensors"), "{listing}");
    assert!(listing.contains("model    AffNet"), "{listing}");
    assert!(listing.contains("tensors  20 (84307 values)"), "{listing}");
    assert!(listing.contains("features.19.bias"), "{listing}");

    let by_flag = wbs(
        &[
            "match",
            &sample(1),
            &sample(2),
            "--method",
            "hesaffnet",
            "--affnet-weights",
            out.to_str().unwrap(),
            "--json",
            "-",
        ],
        &empty,
    );
    assert_success(&by_flag);
    let report = json(&by_flag);
    assert_eq!(report["settings"]["shape"], "affnet");
    // Provenance: the file, its checksum and how it was found; the summary names it too.
    let sha = wbs::provenance::file_sha256(&out).unwrap();
    assert_weights(&report, out.to_str().unwrap(), &sha, "flag");
    assert!(
        text(&by_flag.stderr).contains(&format!(
            "weights     AffNet {} (flag, sha256 {})",
            out.display(),
            &sha[..12]
        )),
        "{}",
        text(&by_flag.stderr)
    );
    assert!(
        report["shaped"][0].as_u64().unwrap() > 0,
        "{}",
        report["shaped"]
    );

    // The same file found through WBS_WEIGHTS (a folder holding affnet.safetensors).
    let by_env = wbs(
        &[
            "match",
            &sample(1),
            &sample(2),
            "--method",
            "hesaffnet",
            "--json",
            "-",
        ],
        dir,
    );
    assert_success(&by_env);
    assert_eq!(json(&by_env)["inliers"], report["inliers"]);
    assert_weights(&json(&by_env), out.to_str().unwrap(), &sha, "env");
    report
}

/// The report names exactly one weights file: AffNet's, with this path, checksum and origin,
/// and the wbs version and commit that made it.
fn assert_weights(report: &serde_json::Value, path: &str, sha256: &str, found_by: &str) {
    let expected = serde_json::json!([{
        "network": "AffNet",
        "path": path,
        "sha256": sha256,
        "found_by": found_by,
    }]);
    assert_eq!(report["weights"], expected, "{}", report["weights"]);
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    let commit = report["commit"].as_str().unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
}

#[test]
fn the_report_names_the_shipped_weights_and_a_wbs_weights_naming_nothing_is_an_error() {
    let dir = temp_dir("cli-provenance");
    let shipped = root().join("data/affnet.safetensors");
    let args = [
        "match",
        &sample(1),
        &sample(2),
        "--method",
        "hesaffnet",
        "--json",
        "-",
    ];
    let o = wbs(&args, &dir);
    assert_success(&o);
    let sha = wbs::provenance::file_sha256(&shipped).unwrap();
    let report = json(&o);
    assert_eq!(
        report["weights"][0]["found_by"], "shipped",
        "{}",
        report["weights"]
    );
    assert_eq!(report["weights"][0]["sha256"], sha.as_str());
    let found = PathBuf::from(report["weights"][0]["path"].as_str().unwrap());
    assert_eq!(
        std::fs::canonicalize(found).unwrap(),
        std::fs::canonicalize(&shipped).unwrap()
    );
    // hesaff uses no network: the report lists none.
    let o = wbs(&["match", &sample(1), &sample(2), "--json", "-"], &dir);
    assert_success(&o);
    assert_eq!(json(&o)["weights"], serde_json::json!([]));
    // WBS_WEIGHTS that names no file or folder: an error, not the shipped file.
    let o = wbs(&args, Path::new("/nonexistent/weights"));
    assert_one_line_error(
        &o,
        "WBS_WEIGHTS=/nonexistent/weights: no such file or folder",
    );
}

#[test]
fn import_inspect_and_match_with_a_random_affnet_checkpoint() {
    let dir = temp_dir("cli-round-trip-random");
    round_trip(&random_affnet_pth(&dir), &dir);
}

#[test]
fn import_inspect_and_match_with_the_official_affnet() {
    let pth = root().join("../shared/weights/AffNet.pth");
    if !pth.is_file() {
        nn_support::skip::missing(&pth.display().to_string());
        return;
    }
    let dir = temp_dir("cli-round-trip-official");
    let report = round_trip(&pth, &dir);
    assert_eq!(report["registered"], true, "{}", report["verdict"]);
}

#[test]
fn import_refuses_other_files_with_one_line() {
    let dir = temp_dir("cli-import-refusals");
    let out = dir.join("out.safetensors");
    let out = out.to_str().unwrap();
    let not_pth = dir.join("notes.pth");
    std::fs::write(&not_pth, "these are not weights\n").unwrap();
    let o = wbs(
        &["weights", "import", not_pth.to_str().unwrap(), "--out", out],
        &dir,
    );
    assert_one_line_error(&o, "not a PyTorch checkpoint");

    let pth = random_affnet_pth(&dir);
    let bytes = std::fs::read(&pth).unwrap();
    let truncated = dir.join("truncated.pth");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let o = wbs(
        &[
            "weights",
            "import",
            truncated.to_str().unwrap(),
            "--out",
            out,
        ],
        &dir,
    );
    assert_one_line_error(&o, "truncated");

    let o = wbs(
        &[
            "weights",
            "import",
            pth.to_str().unwrap(),
            "--out",
            out,
            "--kind",
            "hardnet",
        ],
        &dir,
    );
    assert_one_line_error(&o, "HardNet");
    assert!(!Path::new(out).exists(), "nothing is written on failure");

    let o = wbs(&["weights", "inspect", not_pth.to_str().unwrap()], &dir);
    assert_one_line_error(&o, "notes.pth");
}

#[test]
fn missing_weights_are_one_line_errors_that_say_how_to_get_them() {
    // AffNet is shipped in data/ (trained by wbs, tests/shipped_weights.rs); OriNet and HardNet
    // are not.
    let empty = temp_dir("cli-no-weights");
    for (flags, needle) in [
        (&["--orientation", "orinet"][..], "no OriNet weights found"),
        (&["--descriptor", "hardnet"][..], "no HardNet weights found"),
    ] {
        let (a, b) = (sample(1), sample(2));
        let mut args = vec!["match", a.as_str(), b.as_str()];
        args.extend_from_slice(flags);
        let o = wbs(&args, &empty);
        assert_one_line_error(&o, needle);
        assert_one_line_error(&o, "wbs weights import");
        assert_one_line_error(&o, "-weights FILE");
    }
    let o = wbs(
        &[
            "match",
            &sample(1),
            &sample(2),
            "--method",
            "hesaffnet",
            "--affnet-weights",
            "/nonexistent.safetensors",
        ],
        &empty,
    );
    assert_one_line_error(&o, "no such AffNet weights file");
}

#[test]
fn bench_times_hesaffnet_and_the_networks() {
    let dir = temp_dir("cli-bench");
    let weights = dir.join("affnet.safetensors");
    random_weights(NetworkKind::AffNet, 2)
        .save(&weights)
        .unwrap();
    let (a, b) = (sample(1), sample(2));
    let common = [
        "bench",
        "--pair",
        &a,
        &b,
        "--repeat",
        "1",
        "--descriptors",
        "100",
    ];
    let mut args = common.to_vec();
    args.extend([
        "--nn-batch",
        "16",
        "--train-batch",
        "8",
        "--affnet-weights",
        weights.to_str().unwrap(),
    ]);
    let o = wbs(&args, &dir);
    assert_success(&o);
    let out = text(&o.stdout);
    for needle in [
        "(hesaff, rootsift)",
        "(hesaffnet, rootsift)",
        "AffNet   batch    16",
        "HardNet  batch    16",
        "train affnet (sift + hardnegc), batch 8",
        "pairs/s",
        "dark and bright)",
    ] {
        assert!(out.contains(needle), "no '{needle}' in:\n{out}");
    }
    // Without a flag the shipped data/affnet.safetensors is timed; with a weights file that is
    // not there the hesaffnet line says why it was skipped.
    let mut args = common.to_vec();
    args.extend(["--nn-batch", "0", "--train-batch", "0"]);
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let out = text(&wbs(&args, &dir.join("empty")).stdout);
    assert!(out.contains("(hesaffnet, rootsift)"), "{out}");
    args.extend(["--affnet-weights", "/nonexistent.safetensors"]);
    let out = text(&wbs(&args, &dir.join("empty")).stdout);
    assert!(
        out.contains(
            "match (hesaffnet): skipped: /nonexistent.safetensors: no such AffNet weights file"
        ),
        "{out}"
    );
    assert!(!out.contains("patches/s"), "{out}");
}

#[test]
fn hardnet_with_random_weights_runs_end_to_end() {
    let dir = temp_dir("cli-hardnet");
    let weights = dir.join("hardnet.safetensors");
    random_weights(NetworkKind::HardNet, 8)
        .save(&weights)
        .unwrap();
    let w = weights.to_str().unwrap();

    let o = wbs(
        &[
            "detect",
            &sample(1),
            "--describe",
            "--descriptor",
            "hardnet",
            "--hardnet-weights",
            w,
        ],
        &dir.join("nothing-here"),
    );
    assert_success(&o);
    let out = text(&o.stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("128"), "the dimension comes first");
    let n: usize = lines.next().unwrap().parse().unwrap();
    assert!(n > 50, "{n} features");
    let rows: Vec<Vec<f32>> = lines
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), n);
    for row in &rows {
        assert_eq!(row.len(), 5 + 128);
        let norm = row[5..].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }

    let o = wbs(
        &[
            "match",
            &sample(1),
            &sample(2),
            "--descriptor",
            "hardnet",
            "--hardnet-weights",
            w,
            "--json",
            "-",
        ],
        &dir.join("nothing-here"),
    );
    assert_success(&o);
    let report = json(&o);
    assert_eq!(report["settings"]["descriptor"], "hardnet");
    assert!(report["features"][0].as_u64().unwrap() > 50);
}
