//! The AffNet weights wbs ships in `data/`: trained by wbs (not the authors' file), found by the
//! default lookup, and good enough to register the README's sample pair against its ground truth.

use std::path::PathBuf;

use wbs::nn::{self, ModelKind, Weights};
use wbs::pipeline::{match_files, Config, Method};
use wbs::protocol::{judge, GroundTruth};
use wbs::synth::read_homography;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped() -> PathBuf {
    root().join("data/affnet.safetensors")
}

#[test]
fn shipped_affnet_was_trained_by_wbs() {
    let w = Weights::load(&shipped()).expect("data/affnet.safetensors loads");
    assert_eq!(
        w.metadata.get(nn::META_SOURCE).map(String::as_str),
        Some("wbs train affnet"),
        "{:?}",
        w.metadata
    );
    let run = w.metadata.get("wbs.run").expect("the run's settings");
    assert!(run.contains("\"init\":null"), "trained from scratch: {run}");
    // Not a copy of the authors' weights (compared when ../shared is beside the checkout).
    let official = root().join("../shared/weights/AffNet.pth");
    if !official.is_file() {
        println!("SKIP (comparison): {} not found", official.display());
        return;
    }
    let theirs = Weights::load(&official).unwrap();
    let (mut differ, mut total) = (0usize, 0usize);
    for (name, p) in &w.tensors {
        let Some(q) = theirs.tensors.get(name) else {
            continue;
        };
        assert_eq!(p.shape, q.shape, "{name}");
        total += p.data.len();
        differ += p
            .data
            .iter()
            .zip(&q.data)
            .filter(|(a, b)| (*a - *b).abs() > 1e-3)
            .count();
    }
    assert!(total > 80_000, "{total} values compared");
    assert!(differ * 10 > total * 9, "{differ} of {total} values differ");
}

#[test]
fn the_default_lookup_finds_the_shipped_affnet() {
    // With WBS_WEIGHTS unset the lookup ends at data/ (this binary does not set it).
    if std::env::var_os(nn::WEIGHTS_ENV).is_some() {
        println!("SKIP: {} is set in the environment", nn::WEIGHTS_ENV);
        return;
    }
    let found = nn::locate(ModelKind::AffNet, None).unwrap();
    assert!(
        found.ends_with("data/affnet.safetensors"),
        "{}",
        found.display()
    );
}

#[test]
fn hesaffnet_with_the_shipped_weights_registers_the_sample_pair() {
    let sample = root().join("data/sample");
    let mut config = Config::preset(Method::Hesaffnet);
    config.weights.affnet = Some(shipped());
    let report = match_files(&sample.join("img1.png"), &sample.join("img2.png"), &config).unwrap();
    let h = read_homography(&sample.join("H1to2p")).unwrap();
    let judgement = judge(
        &report.inlier_matches,
        None,
        &GroundTruth::Homography(h),
        15,
    );
    assert!(judgement.registered, "{judgement:?}");
    assert!(report.inliers >= 25, "{} inliers", report.inliers);
}
