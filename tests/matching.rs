//! End-to-end matching: synthetic pairs with known homographies, real OxAff pairs, determinism.

mod skip;

use std::path::{Path, PathBuf};

use wbs::image::{load_rgb, to_gray, LoadOptions};
use wbs::pipeline::{Config, Method};
use wbs::protocol::{judge, median_transfer_error, GroundTruth};
use wbs::synth::{read_homography, synthesize, transfer, SynthParams};
use wbs::Matcher;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared() -> Option<PathBuf> {
    let p = root().join("../shared/datasets");
    if p.exists() {
        Some(p)
    } else {
        skip::missing(&p.display().to_string());
        None
    }
}

#[test]
fn synthetic_pairs_with_tilt_up_to_3_register_within_2_px() {
    let photo = load_rgb(
        &root().join("data/sample/img1.png"),
        &LoadOptions::default(),
    )
    .unwrap();
    let config = Config::preset(Method::Hesaff);
    for (seed, tilt) in [(1u64, 1.5f64), (2, 2.0), (3, 2.5), (4, 3.0)] {
        let mut params = SynthParams::random(seed, 3.0);
        params.tilt = tilt;
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
        assert!(
            judgement.registered,
            "seed {seed}, tilt {tilt}: {judgement:?}"
        );
        let median = median_transfer_error(&report.inlier_matches, &h).unwrap();
        assert!(
            median < 2.0,
            "seed {seed}, tilt {tilt}: median error {median:.2} px"
        );
        // The estimated homography agrees with the truth where image 1 is seen in image 2.
        let est = wbs::protocol::rows_to_matrix(report.model.as_ref().unwrap());
        let mut errors: Vec<f64> = report
            .inlier_matches
            .iter()
            .map(|m| {
                let (p, q) = (
                    transfer(&h, [m[0], m[1]]).unwrap(),
                    transfer(&est, [m[0], m[1]]).unwrap(),
                );
                ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt()
            })
            .collect();
        errors.sort_by(f64::total_cmp);
        let p90 = errors[errors.len() * 9 / 10];
        assert!(
            p90 < 2.0,
            "seed {seed}: model error at the 90th percentile {p90:.2} px"
        );
    }
}

fn oxaff_pair(seq: &str, n: u32) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let dir = shared()?.join("OxAff").join(seq);
    Some((
        dir.join("img1.png"),
        dir.join(format!("img{n}.png")),
        dir.join(format!("H1to{n}p")),
    ))
}

fn assert_registered(a: &Path, b: &Path, h: &Path) -> wbs::pipeline::MatchReport {
    let report = Matcher::new(Config::preset(Method::Hesaff))
        .unwrap()
        .match_files(a, b)
        .unwrap();
    let truth = GroundTruth::Homography(read_homography(h).unwrap());
    let judgement = judge(&report.inlier_matches, None, &truth, 15);
    assert!(judgement.registered, "{}: {judgement:?}", b.display());
    report
}

#[test]
fn oxaff_graf_1_2_and_1_3_register() {
    for n in [2, 3] {
        if let Some((a, b, h)) = oxaff_pair("graf", n) {
            let report = assert_registered(&a, &b, &h);
            assert!(
                report.inliers >= 50,
                "graf 1-{n}: {} inliers",
                report.inliers
            );
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_result() {
    let Some((a, b, _)) = oxaff_pair("graf", 3) else {
        return;
    };
    let config = Config::preset(Method::Hesaff);
    let first = Matcher::new(config.clone())
        .unwrap()
        .match_files(&a, &b)
        .unwrap();
    let second = Matcher::new(config.clone())
        .unwrap()
        .match_files(&a, &b)
        .unwrap();
    assert_eq!(first.inlier_matches, second.inlier_matches);
    assert_eq!(first.model, second.model);
    assert_eq!(first.tentatives, second.tentatives);
}

#[test]
fn the_json_report_has_what_other_tools_need() {
    let Some((a, b, _)) = oxaff_pair("graf", 2) else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wbs"))
        .args([
            "match",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--json",
            "-",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is only JSON");
    for key in [
        "registered",
        "inliers",
        "tentatives",
        "features",
        "geometry",
        "model",
        "inlier_matches",
        "timings_ms",
        "device",
        "settings",
    ] {
        assert!(report.get(key).is_some(), "missing {key}");
    }
    assert_eq!(
        report["inlier_matches"].as_array().unwrap().len() as u64,
        report["inliers"].as_u64().unwrap()
    );
    assert_eq!(report["model"].as_array().unwrap().len(), 3);
    assert!(report["timings_ms"]["total"].as_f64().unwrap() > 0.0);
    assert_eq!(report["device"], "cpu");
    // The human summary went to stderr.
    assert!(String::from_utf8_lossy(&out.stderr).contains("REGISTERED"));
}
