//! The AffNet weights wbs ships in `data/`: trained by wbs (not the authors' file), found by the
//! default lookup, good enough to register the README's sample pair against its ground truth, and
//! covariant enough to follow an in-plane turn.

mod skip;

use std::path::PathBuf;

use wbs::image::{load_rgb, to_gray, LoadOptions};
use wbs::nn::{self, NetworkKind, Weights};
use wbs::pipeline::{Config, Method};
use wbs::protocol::{judge, GroundTruth};
use wbs::synth::{read_homography, synthesize, SynthParams};
use wbs::Matcher;

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
        skip::missing(&official.display().to_string());
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
    let found = nn::locate(NetworkKind::AffNet, None).unwrap();
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
    let report = Matcher::new(config.clone())
        .unwrap()
        .match_files(&sample.join("img1.png"), &sample.join("img2.png"))
        .unwrap();
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

/// `--affnet-turns 4` from the command line: the setting reaches the report, and the sample pair
/// still registers (with 65 inliers against one pass's 101: more inliers on every data set of
/// docs/affnet.md, fewer on this pair).
#[test]
fn four_turns_are_recorded_and_register_the_sample_pair() {
    let sample = root().join("data/sample");
    let run = |turns: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_wbs"))
            .arg("match")
            .arg(sample.join("img1.png"))
            .arg(sample.join("img2.png"))
            .args([
                "--method",
                "hesaffnet",
                "--affnet-turns",
                turns,
                "--json",
                "-",
            ])
            .arg("--affnet-weights")
            .arg(shipped())
            .output()
            .expect("the wbs binary runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("a JSON report")
    };
    let (one, four) = (run("1"), run("4"));
    assert_eq!(one["settings"]["affnet_turns"], 1);
    assert_eq!(four["settings"]["affnet_turns"], 4);
    assert_eq!(four["registered"], true, "{four}");
    let inliers = four["inliers"].as_u64().unwrap();
    assert!(inliers >= 25, "4 turns: {inliers} inliers");
    assert_ne!(four["inliers"], one["inliers"], "4 turns changed nothing");
}

/// A pure in-plane turn of the sample photo (no tilt, zoom or photometric change), with hesaffnet
/// and the shipped weights: at 45° and at 90° at least 30 % of the unturned pair's inliers must
/// survive. The shipped file (run sC3XL) keeps 61 % and 79 % (the authors' weights 63 % and
/// 77 %, the previously shipped runs sG2XL 58 % and 77 %, sG2 53 % and 67 %, sL 51 % and 61 %,
/// sR 44 % and 47 %);
/// weights trained with the recipe's one shared rotation kept 7.8 % and 2.9 %, and with a fixed
/// ±30° relative rotation 20 % and 11 %. `WBS_TEST_AFFNET=FILE` runs the check on other weights.
/// docs/training.md ("Rotation").
#[test]
fn the_shipped_weights_follow_an_in_plane_turn() {
    let photo = load_rgb(
        &root().join("data/sample/img1.png"),
        &LoadOptions::default(),
    )
    .unwrap();
    let mut config = Config::preset(Method::Hesaffnet);
    config.weights.affnet = Some(
        std::env::var_os("WBS_TEST_AFFNET")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(shipped),
    );
    let inliers_at = |degrees: f64| {
        let params = SynthParams {
            tilt: 1.0,
            tilt_direction_deg: 0.0,
            rotation_deg: degrees,
            scale: 1.0,
            perspective: [0.0, 0.0],
            gamma: 1.0,
            gain: 1.0,
            noise: 0.0,
            seed: 0,
        };
        let (view, h) = synthesize(&photo, &params).unwrap();
        let a = to_gray(&image::DynamicImage::ImageRgb8(photo.clone()));
        let b = to_gray(&image::DynamicImage::ImageRgb8(view));
        let report = Matcher::new(config.clone())
            .unwrap()
            .match_images(&a, &b)
            .unwrap();
        let judgement = judge(
            &report.inlier_matches,
            None,
            &GroundTruth::Homography(h),
            15,
        );
        assert!(judgement.registered, "{degrees}°: {judgement:?}");
        report.inliers
    };
    let straight = inliers_at(0.0);
    let turned: Vec<(f64, usize)> = [45.0, 90.0].map(|d| (d, inliers_at(d))).to_vec();
    eprintln!("unturned {straight} inliers; turned {turned:?}");
    for (degrees, n) in turned {
        assert!(
            n * 100 >= straight * 30,
            "{degrees}°: {n} inliers, unturned {straight}"
        );
    }
}
