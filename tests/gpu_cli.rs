//! The CUDA entry points on a machine without a GPU (CI): `--device cuda`, `wbs gpu-check` and
//! `wbs bench --device cuda` fail with one clear line and exit code 1, and `--device auto` runs
//! on the CPU and says why in the JSON report. On a machine with a GPU these tests only check
//! that nothing panics (the GPU behaviour is `wbs gpu-check`'s job, docs/gpu-validation.md).

use std::process::{Command, Output};

fn wbs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wbs"))
        .args(args)
        .output()
        .expect("the wbs binary runs")
}

fn sample(name: &str) -> String {
    format!("{}/data/sample/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn has_gpu() -> bool {
    wbs::gpu::probe().is_ok()
}

/// Exit code 1 and a single `error: ...` line naming the context and the missing device.
fn assert_no_device_error(out: &Output, context: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("error: {context}: ")), "{err}");
    assert!(
        err.contains("`cuda` requested but no CUDA driver/device found"),
        "{err}"
    );
}

#[test]
fn match_on_cuda_without_a_gpu_is_one_clear_line() {
    if has_gpu() {
        eprintln!("SKIP: a GPU is present");
        return;
    }
    let out = wbs(&[
        "match",
        &sample("img1.png"),
        &sample("img2.png"),
        "--device",
        "cuda",
    ]);
    assert_no_device_error(&out, "--device cuda");
}

#[test]
fn gpu_check_and_gpu_bench_without_a_gpu_fail_cleanly() {
    if has_gpu() {
        eprintln!("SKIP: a GPU is present");
        return;
    }
    assert_no_device_error(&wbs(&["gpu-check"]), "wbs gpu-check");
    assert_no_device_error(
        &wbs(&["bench", "--device", "cuda"]),
        "wbs bench --device cuda",
    );
}

#[test]
fn eval_and_detect_refuse_cuda_without_a_gpu() {
    if has_gpu() {
        eprintln!("SKIP: a GPU is present");
        return;
    }
    let out = wbs(&["detect", &sample("img1.png"), "--device", "cuda"]);
    assert_no_device_error(&out, "--device cuda");
}

#[test]
fn auto_falls_back_to_the_cpu_and_says_why() {
    let out = wbs(&[
        "match",
        &sample("img1.png"),
        &sample("img2.png"),
        "--device",
        "auto",
        "--json",
        "-",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["device"], "cpu");
    let note = report["device_note"].as_str().expect("a device note");
    if has_gpu() {
        assert!(note.contains("GPU"), "{note}");
    } else {
        assert!(note.starts_with("no CUDA: "), "{note}");
    }
}
