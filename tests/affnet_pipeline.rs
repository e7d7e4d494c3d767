//! HesAffNet in the matcher: real OxAff pairs with the authors' AffNet and OriNet weights (read from
//! `../shared/weights/*.pth` at run time; skipped when `../shared` is absent), and the library's
//! errors when a network is missing.

mod skip;

use std::path::{Path, PathBuf};

use wbs::image::{load_gray, LoadOptions};
use wbs::networks::Models;
use wbs::orient::OrientationMethod;
use wbs::pipeline::{Config, Method};
use wbs::protocol::{judge, GroundTruth};
use wbs::shape::ShapeFailures;
use wbs::synth::read_homography;
use wbs::Matcher;

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if p.join("weights/AffNet.pth").is_file() && p.join("datasets/OxAff/graf").is_dir() {
        Some(p)
    } else {
        skip::missing(&format!("{} (weights and OxAff)", p.display()));
        None
    }
}

/// hesaffnet with the authors' AffNet.pth (loaded directly; no conversion needed).
fn hesaffnet(shared: &Path) -> Config {
    let mut config = Config::preset(Method::Hesaffnet);
    config.weights.affnet = Some(shared.join("weights/AffNet.pth"));
    config
}

fn graf(shared: &Path, n: u32) -> (PathBuf, PathBuf, GroundTruth) {
    let dir = shared.join("datasets/OxAff/graf");
    let h = read_homography(&dir.join(format!("H1to{n}p"))).unwrap();
    (
        dir.join("img1.png"),
        dir.join(format!("img{n}.png")),
        GroundTruth::Homography(h),
    )
}

fn assert_registers(matcher: &Matcher, shared: &Path, n: u32, min_inliers: usize) {
    let config = matcher.config();
    let (a, b, truth) = graf(shared, n);
    let report = matcher.match_files(&a, &b).unwrap();
    let judgement = judge(&report.inlier_matches, None, &truth, 15);
    eprintln!(
        "graf 1-{n} ({:?} orientation): {} inliers, {} tentatives, shaped {:?} of {:?} detections",
        config.orientation, report.inliers, report.tentatives, report.shaped, report.detections
    );
    assert!(judgement.registered, "graf 1-{n}: {judgement:?}");
    assert!(
        report.inliers >= min_inliers,
        "graf 1-{n}: {} inliers",
        report.inliers
    );
}

#[test]
fn hesaffnet_registers_graf_1_2_and_1_3() {
    let Some(shared) = shared() else { return };
    let config = hesaffnet(&shared);
    let matcher = Matcher::new(config).unwrap();
    for n in [2, 3] {
        assert_registers(&matcher, &shared, n, 100);
    }
}

#[test]
fn hesaffnet_with_orinet_registers_graf_1_2_and_1_3() {
    let Some(shared) = shared() else { return };
    let mut config = hesaffnet(&shared);
    config.orientation = OrientationMethod::Orinet;
    config.weights.orinet = Some(shared.join("weights/OriNet.pth"));
    let matcher = Matcher::new(config).unwrap();
    for n in [2, 3] {
        assert_registers(&matcher, &shared, n, 100);
    }
}

#[test]
fn affnet_keeps_more_regions_than_hesaff_dropping_failed_shapes() {
    let Some(shared) = shared() else { return };
    let affnet = hesaffnet(&shared);
    let affnet = Matcher::new(affnet).unwrap();
    let mut baumberg = Config::preset(Method::Hesaff);
    baumberg.shape_failures = ShapeFailures::Drop;
    let baumberg = Matcher::new(baumberg).unwrap();
    for n in [1, 3] {
        let path = shared.join(format!("datasets/OxAff/graf/img{n}.png"));
        let image = load_gray(&path, &LoadOptions::default()).unwrap();
        let a = affnet.extract_features(&image).unwrap();
        let b = baumberg.extract_features(&image).unwrap();
        eprintln!(
            "graf img{n}: {} detections; AffNet keeps {}, Baumberg (failures dropped) {}",
            a.detections, a.shaped, b.shaped
        );
        assert_eq!(a.detections, b.detections, "same detector");
        assert!(
            a.shaped > b.shaped,
            "img{n}: AffNet {} vs Baumberg {}",
            a.shaped,
            b.shaped
        );
    }
}

#[test]
fn a_missing_network_is_an_error_not_a_panic() {
    let mut config = Config::preset(Method::Hesaffnet);
    config.weights.affnet = Some(PathBuf::from("/nonexistent/affnet.safetensors"));
    let e = Matcher::new(config.clone()).err().unwrap().to_string();
    assert!(e.contains("no such AffNet weights file"), "{e}");
    assert!(!e.contains('\n'));

    // Models that lack what the settings use: a clear error from the stage.
    let image = wbs::image::GrayImage::from_fn(64, 64, |x, y| ((x * 7 + y * 13) % 50) as f32);
    let e = Matcher::with_models(config, Models::none())
        .and_then(|m| m.match_images(&image, &image))
        .unwrap_err()
        .to_string();
    assert!(e.contains("AffNet") && e.contains("not loaded"), "{e}");
}
