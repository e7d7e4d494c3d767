//! `wbs train-data` and `wbs train affnet` end to end: pairs from a folder of generated photos,
//! a tiny run with checkpoints, validation, curves and final weights the matcher loads, a run
//! stopped and resumed that equals an uninterrupted one, and one-line errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wbs::nn::{AffNet, Weights};

fn wbs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wbs"))
        .args(args)
        .env_remove("WBS_WEIGHTS")
        .output()
        .expect("the wbs binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "failed:\n{}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// Non-zero exit, no panic, and the last stderr line is one `error: ...` containing `needle`.
fn one_line_error(o: &Output, needle: &str) {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "succeeded: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(needle),
        "want '{needle}', got: {err}"
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wbs-cli-train-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A photo-like picture: blobs of many sizes on a gradient.
fn photo(path: &Path, seed: u32) {
    let blobs: Vec<[f32; 4]> = (0..160u32)
        .map(|k| {
            let h = |m: u32| {
                ((k.wrapping_mul(2654435761) ^ seed.wrapping_mul(40503) ^ m)
                    .wrapping_mul(2246822519)
                    >> 8) as f32
                    / (1u32 << 24) as f32
            };
            [
                h(1) * 256.0,
                h(2) * 256.0,
                2.0 + 10.0 * h(3),
                240.0 * h(4) - 120.0,
            ]
        })
        .collect();
    image::GrayImage::from_fn(256, 256, |x, y| {
        let mut v = 100.0 + 0.2 * x as f32;
        for b in &blobs {
            let d2 = (x as f32 - b[0]).powi(2) + (y as f32 - b[1]).powi(2);
            v += b[3] * (-d2 / (2.0 * b[2] * b[2])).exp();
        }
        image::Luma([v.clamp(0.0, 255.0) as u8])
    })
    .save(path)
    .unwrap();
}

fn sample(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/sample")
        .join(name)
        .display()
        .to_string()
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    Weights::load(path)
        .unwrap()
        .tensors
        .into_iter()
        .map(|(k, v)| (k, v.data))
        .collect()
}

#[test]
fn train_data_then_a_tiny_run_resumed_equals_an_uninterrupted_one() {
    let dir = scratch("run");
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for k in 0..3 {
        photo(&photos.join(format!("p{k}.png")), k);
    }
    let pairs = dir.join("pairs.safetensors");
    let o = wbs(&[
        "train-data",
        "--images",
        photos.to_str().unwrap(),
        "--exclude",
        "p2.png",
        "--out",
        pairs.to_str().unwrap(),
        "--pairs",
        "64",
        "--seed",
        "3",
    ]);
    ok(&o);
    assert!(text(&o.stdout).contains("64 pairs"), "{}", text(&o.stdout));

    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "affnet",
            "--data",
            pairs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--pairs",
            "32",
            "--epochs",
            "2",
            "--batch",
            "16",
            "--checkpoint-every",
            "2",
            "--log-every",
            "1",
            "--seed",
            "5",
            "--device",
            "cpu",
        ];
        args.extend_from_slice(extra);
        wbs(&args)
    };
    let whole = dir.join("whole");
    let (s1, s2, h) = (sample("img1.png"), sample("img2.png"), sample("H1to2p"));
    let o = run(&whole, &["--validate", &s1, &s2, &h]);
    ok(&o);
    let err = text(&o.stderr);
    assert!(err.contains("validation at step 0:"), "{err}");
    assert!(err.contains("done: weights in"), "{err}");
    for f in [
        "checkpoint.safetensors",
        "log.csv",
        "curves.png",
        "affnet.safetensors",
    ] {
        assert!(whole.join(f).is_file(), "no {f}");
    }
    let log = std::fs::read_to_string(whole.join("log.csv")).unwrap();
    assert!(log.starts_with("step,epoch,lr,loss,"), "{log}");
    // 4 training rows and validations at 0, 2 and 4.
    assert_eq!(log.lines().count(), 1 + 4 + 3, "{log}");
    // The final weights are what the matcher loads.
    AffNet::load(&whole.join("affnet.safetensors")).unwrap();
    let o = wbs(&[
        "match",
        &s1,
        &s2,
        "--method",
        "hesaffnet",
        "--affnet-weights",
        whole.join("affnet.safetensors").to_str().unwrap(),
    ]);
    ok(&o);

    // Stopped after 3 steps and resumed: the same weights, bit for bit.
    one_line_error(
        &run(&dir.join("fresh"), &["--resume"]),
        "has no checkpoint.safetensors",
    );
    let split = dir.join("split");
    ok(&run(&split, &["--stop-after", "3"]));
    assert!(!split.join("affnet.safetensors").exists());
    one_line_error(&run(&split, &[]), "pass --resume");
    one_line_error(&run(&split, &["--resume", "--lr", "0.1"]), "other settings");
    ok(&run(&split, &["--resume"]));
    assert_eq!(
        tensors(&whole.join("affnet.safetensors")),
        tensors(&split.join("affnet.safetensors"))
    );
    assert_eq!(
        tensors(&whole.join("checkpoint.safetensors")),
        tensors(&split.join("checkpoint.safetensors"))
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = scratch("bad");
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "affnet", "--out", out];
        args.extend_from_slice(extra);
        wbs(&args)
    };
    one_line_error(&train(&[]), "no training data");
    let missing = dir.join("missing.safetensors");
    one_line_error(
        &train(&["--data", missing.to_str().unwrap()]),
        "missing.safetensors",
    );
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(
        &garbage,
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all",
    )
    .unwrap();
    one_line_error(
        &train(&["--data", garbage.to_str().unwrap()]),
        "not a readable safetensors pair file",
    );
    // AffNet weights are a safetensors file, but not a pair file.
    let weights = dir.join("weights.safetensors");
    wbs::nn::random_weights(wbs::nn::NetworkKind::AffNet, 1)
        .save(&weights)
        .unwrap();
    one_line_error(
        &train(&["--data", weights.to_str().unwrap()]),
        "no tensor 'anchors'",
    );
    // A pair file with 32×32 patches.
    let small = dir.join("small.safetensors");
    let data = vec![0u8; 2 * 32 * 32];
    let ids = vec![0u8; 16];
    let t = vec![
        (
            "anchors",
            safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![2, 32, 32], &data)
                .unwrap(),
        ),
        (
            "positives",
            safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![2, 32, 32], &data)
                .unwrap(),
        ),
        (
            "ids",
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![2], &ids).unwrap(),
        ),
    ];
    std::fs::write(&small, safetensors::serialize(t, None).unwrap()).unwrap();
    one_line_error(
        &train(&["--data", small.to_str().unwrap()]),
        "expected [N, 64, 64]",
    );
    one_line_error(
        &train(&["--phototour", dir.join("nothing").to_str().unwrap()]),
        "info.txt",
    );
    if wbs::gpu::probe().is_err() {
        one_line_error(
            &train(&["--data", small.to_str().unwrap(), "--device", "cuda"]),
            "`cuda` requested but no CUDA driver/device found",
        );
    }
    one_line_error(
        &train(&["--data", small.to_str().unwrap(), "--resume"]),
        "expected [N, 64, 64]",
    );
    one_line_error(
        &wbs(&[
            "train-data",
            "--images",
            dir.join("nothing").to_str().unwrap(),
            "--out",
            dir.join("p.safetensors").to_str().unwrap(),
        ]),
        "no such file or folder",
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    one_line_error(
        &wbs(&[
            "train-data",
            "--images",
            empty.to_str().unwrap(),
            "--out",
            dir.join("p.safetensors").to_str().unwrap(),
        ]),
        "no photos",
    );
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    photo(&photos.join("p.png"), 0);
    one_line_error(
        &wbs(&[
            "train-data",
            "--images",
            photos.to_str().unwrap(),
            "--out",
            dir.join("p.safetensors").to_str().unwrap(),
            "--zoom",
            "2",
            "1",
        ]),
        "--zoom needs",
    );
    std::fs::remove_dir_all(&dir).ok();
}
