//! MODS end to end: an extreme synthetic pair that `hesaff` fails and `--method mods` registers,
//! a contrast-reversed pair, pairs sharing an image's views, and the one-line errors of
//! `--schedule`.

use std::path::PathBuf;
use std::process::{Command, Output};

use wbs::image::{load_rgb, to_gray, GrayImage, LoadOptions};
use wbs::mods::ViewStore;
use wbs::pipeline::{Config, MatchReport, Method};
use wbs::protocol::{judge, load_ground_truth, GroundTruth};
use wbs::schedule::Schedule;
use wbs::synth::{synthesize, SynthParams};
use wbs::Matcher;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sample's `img1.png` and its tilt-6 view (`wbs synth data/sample/img1.png --seed 1
/// --tilt 6`) with the homography between them.
fn tilt_6_pair() -> (GrayImage, GrayImage, GroundTruth) {
    let photo = load_rgb(
        &root().join("data/sample/img1.png"),
        &LoadOptions::default(),
    )
    .unwrap();
    let mut params = SynthParams::random(1, 3.0);
    params.tilt = 6.0;
    let (view, h) = synthesize(&photo, &params).unwrap();
    let a = to_gray(&image::DynamicImage::ImageRgb8(photo));
    let b = to_gray(&image::DynamicImage::ImageRgb8(view));
    (a, b, GroundTruth::Homography(h))
}

/// One of the sample's images in grey.
fn sample(name: &str) -> GrayImage {
    let rgb = load_rgb(
        &root().join("data/sample").join(name),
        &LoadOptions::default(),
    );
    to_gray(&image::DynamicImage::ImageRgb8(rgb.unwrap()))
}

/// The sample's `img2.png` with its grey levels inverted.
fn inverted_img2() -> GrayImage {
    let mut b = sample("img2.png");
    b.data_mut().iter_mut().for_each(|v| *v = 255.0 - *v);
    b
}

#[test]
fn mods_registers_a_tilt_6_pair_that_hesaff_does_not() {
    let (a, b, truth) = tilt_6_pair();
    let run = |method| {
        let report = Matcher::new(Config::preset(method))
            .unwrap()
            .match_images(&a, &b)
            .unwrap();
        let judgement = judge(&report.inlier_matches, None, &truth, 15);
        (report, judgement.registered)
    };
    let (hesaff, hesaff_ok) = run(Method::Hesaff);
    assert!(!hesaff_ok, "hesaff registered: {} inliers", hesaff.inliers);
    assert!(hesaff.mods.is_none());

    let (mods, mods_ok) = run(Method::Mods);
    let steps = mods.mods.as_ref().expect("a mods report");
    assert!(
        mods_ok,
        "mods: {} inliers, {:?}",
        mods.inliers,
        steps.steps.iter().map(|s| s.inliers).collect::<Vec<_>>()
    );
    // Step 0 is the image alone and fails like hesaff; step 1 adds HalfRootSIFT on the image
    // alone (a second pool of one view) and fails too; step 2 adds the 10 tilted views of each
    // image to the RootSIFT pool and registers; the step-0 view is reused, not made again.
    assert_eq!(steps.schedule, "wbs");
    assert_eq!(steps.registered_at, Some(2));
    assert_eq!(steps.steps.len(), 3);
    let views: Vec<[usize; 2]> = steps.steps.iter().map(|s| s.views).collect();
    let new_views: Vec<[usize; 2]> = steps.steps.iter().map(|s| s.new_views).collect();
    assert_eq!(views, vec![[1, 1], [2, 2], [12, 12]]);
    assert_eq!(new_views, vec![[1, 1], [1, 1], [10, 10]]);
    assert!(!steps.steps[1].registered && steps.steps[2].registered);
    assert!(steps.steps[2].features[0] > steps.steps[1].features[0]);
    assert!(mods.inliers >= 50, "{} inliers", mods.inliers);
    for key in ["views", "match", "verify", "total"] {
        assert!(steps.steps[2].timings_ms.contains_key(key), "{key}");
    }
    assert_eq!(
        steps.view_zoom, steps.zoom,
        "the default leaves a 512-px image's views alone"
    );

    // The same schedule with views made from 300-px copies: the images themselves (steps 0
    // and 1) are described as before, the tilted views at 300/512 of the size, with fewer
    // regions; the pair still registers at step 2.
    let mut config = Config::preset(Method::Mods);
    let mut schedule = Schedule::wbs();
    schedule.view_max_side = 300;
    config.schedule = Some(schedule);
    let small = Matcher::new(config).unwrap().match_images(&a, &b).unwrap();
    let small_steps = small.mods.as_ref().expect("a mods report");
    let side = |im: &wbs::image::GrayImage| im.width().max(im.height()) as f32;
    assert_eq!(small_steps.zoom, [1.0, 1.0]);
    assert_eq!(small_steps.view_zoom, [300.0 / side(&a), 300.0 / side(&b)]);
    let features = |s: &wbs::schedule::ModsReport, i: usize| s.steps[i].features;
    assert_eq!(features(small_steps, 0), features(steps, 0));
    assert_eq!(features(small_steps, 1), features(steps, 1));
    let views_of = |s: &wbs::schedule::ModsReport| {
        let [a, b] = features(s, 2);
        let [a1, b1] = features(s, 0);
        (a - a1, b - b1)
    };
    let (full, shrunk) = (views_of(steps), views_of(small_steps));
    assert!(
        shrunk.0 < full.0 * 3 / 4 && shrunk.1 < full.1 * 3 / 4,
        "view regions {shrunk:?} vs {full:?}"
    );
    assert_eq!(
        small_steps.registered_at,
        Some(2),
        "{:?}",
        small_steps.steps
    );
    assert!(judge(&small.inlier_matches, None, &truth, 15).registered);
}

#[test]
fn the_default_schedule_registers_a_contrast_reversed_pair_at_step_1() {
    // The sample pair with image 2's grey levels inverted (as thermal against visible, or
    // lamps at night): RootSIFT sees opposite gradients, HalfRootSIFT folds them.
    let (a, b) = (sample("img1.png"), inverted_img2());
    let truth = load_ground_truth(&root().join("data/sample/H1to2p")).unwrap();
    let hesaff = Matcher::new(Config::preset(Method::Hesaff))
        .unwrap()
        .match_images(&a, &b)
        .unwrap();
    assert!(!judge(&hesaff.inlier_matches, None, &truth, 15).registered);
    let mods = Matcher::new(Config::preset(Method::Mods))
        .unwrap()
        .match_images(&a, &b)
        .unwrap();
    let steps = mods.mods.as_ref().expect("a mods report");
    assert_eq!(steps.registered_at, Some(1), "{:?}", steps.steps);
    assert_eq!(steps.steps[0].inliers, 0);
    let judgement = judge(&mods.inlier_matches, None, &truth, 15);
    assert!(judgement.registered, "{judgement:?}");
    assert!(mods.inliers >= 40, "{} inliers", mods.inliers);
}

/// A report without its times and its count of reused views: what must not depend on whether
/// views were reused.
fn results(report: &MatchReport) -> serde_json::Value {
    let mut v = serde_json::to_value(report).unwrap();
    v.as_object_mut().unwrap().remove("timings_ms");
    for step in v["mods"]["steps"].as_array_mut().unwrap() {
        let step = step.as_object_mut().unwrap();
        step.remove("timings_ms");
        step.remove("reused_views");
    }
    v
}

#[test]
fn pairs_that_share_an_image_share_its_views_with_the_same_results() {
    let (a, tilted, _) = tilt_6_pair();
    let inverted = inverted_img2();
    let matcher = Matcher::new(Config::preset(Method::Mods)).unwrap();
    // Each step's (new_views, reused_views).
    let counts = |r: &MatchReport| -> Vec<([usize; 2], [usize; 2])> {
        let steps = &r.mods.as_ref().unwrap().steps;
        steps
            .iter()
            .map(|s| (s.new_views, s.reused_views))
            .collect()
    };
    // A pair with stores, checked against the same pair without: the same results.
    let shared = |x: &GrayImage, y: &GrayImage, stores: [Option<&ViewStore>; 2]| {
        let report = matcher.match_images_with_views(x, y, stores).unwrap();
        assert_eq!(
            results(&report),
            results(&matcher.match_images(x, y).unwrap())
        );
        counts(&report)
    };
    // The tilt-6 pair (registered at step 2) fills the store of `a` with every view it made.
    let store = ViewStore::new();
    let first = shared(&a, &tilted, [Some(&store), None]);
    assert!(first.iter().all(|&(_, reused)| reused == [0, 0]) && first.len() == 3);
    assert_eq!(
        store.len(),
        12,
        "image, image for HalfRootSIFT, 10 tilted views"
    );
    // `a` against the inverted image (registered at step 1) takes both its views from the
    // store, in either position; the other image's views are made.
    let second = shared(&a, &inverted, [Some(&store), None]);
    assert_eq!(second, vec![([1, 1], [1, 0]); 2]);
    let swapped = shared(&inverted, &a, [None, Some(&store)]);
    assert_eq!(swapped, vec![([1, 1], [0, 1]); 2]);
    assert_eq!(store.len(), 12);
    // A store is one image's, with one matcher's settings.
    let other_image = matcher
        .match_images_with_views(&inverted, &a, [Some(&store), None])
        .unwrap_err();
    assert!(
        other_image.to_string().contains("ViewStore"),
        "{other_image}"
    );
    let mut cviu = Config::preset(Method::Mods);
    cviu.schedule = Some(Schedule::cviu());
    let other_settings = Matcher::new(cviu)
        .unwrap()
        .match_images_with_views(&a, &inverted, [Some(&store), None])
        .unwrap_err();
    assert!(
        other_settings.to_string().contains("ViewStore"),
        "{other_settings}"
    );
}

fn wbs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wbs"))
        .args(args)
        .output()
        .expect("the wbs binary runs")
}

fn assert_one_line_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "expected failure: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

#[test]
fn bad_schedules_get_one_line_errors() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mods-schedules");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let img = root().join("data/sample/img1.png");
    let img = img.to_str().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let cases = [
        (write("broken.json", "{ \"name\": "), "bad schedule"),
        (
            write(
                "tilt.json",
                r#"{"name":"t","fginn":{"neighbours":50,"contradiction_px":10},"duplicate_radius":2,
                "steps":[{"detector":"hessian","tilts":[0.5],"descriptors":[{"descriptor":"rootsift","ratio":0.8}]}]}"#,
            ),
            "tilts must be in [1, 32]",
        ),
        (
            write(
                "nosteps.json",
                r#"{"name":"e","fginn":{"neighbours":50,"contradiction_px":10},"duplicate_radius":2,"steps":[]}"#,
            ),
            "no steps",
        ),
        (
            write(
                "detector.json",
                r#"{"name":"d","fginn":{"neighbours":50,"contradiction_px":10},"duplicate_radius":2,
                "steps":[{"detector":"sift","tilts":[1],"descriptors":[{"descriptor":"rootsift","ratio":0.8}]}]}"#,
            ),
            "bad schedule",
        ),
        (
            "no-such-schedule".to_string(),
            "neither a built-in schedule",
        ),
    ];
    for (spec, needle) in &cases {
        let o = wbs(&["match", img, img, "--method", "mods", "--schedule", spec]);
        assert_one_line_error(&o, needle);
    }
    let o = wbs(&["match", img, img, "--schedule", "wxbs"]);
    assert_one_line_error(&o, "--schedule needs --method mods");
}

#[test]
fn a_mods_matcher_refuses_per_image_features_with_one_line() {
    // MODS makes its regions per pair: per-image calls would silently be another method's.
    let image = sample("img1.png");
    for (method, single) in [(Method::Mods, "hesaff"), (Method::Modsnet, "hesaffnet")] {
        let matcher = Matcher::new(Config::preset(method)).unwrap();
        let refusals = [
            matcher.extract_features(&image).err(),
            matcher.shaped_features(&image).err(),
            matcher
                .extract_file(&root().join("data/sample/img1.png"))
                .err(),
        ];
        for e in refusals {
            let e = e.expect("refused").to_string();
            assert!(
                e.contains("has no per-image features") && e.contains(single) && !e.contains('\n'),
                "{e}"
            );
        }
        // Features made by a single-view matcher cannot be matched by a MODS one either.
        let features = Matcher::new(Config::preset(Method::Hesaff))
            .unwrap()
            .extract_features(&image)
            .unwrap();
        let e = matcher.match_features(&features, &features).unwrap_err();
        assert!(e.to_string().contains("has no per-image features"), "{e}");
    }
    // The same through the CLI, with and without --describe.
    let img = root().join("data/sample/img1.png");
    let img = img.to_str().unwrap();
    assert_one_line_error(
        &wbs(&["detect", img, "--method", "mods"]),
        "method mods has no per-image features",
    );
    assert_one_line_error(
        &wbs(&["detect", img, "--method", "mods", "--describe"]),
        "such as hesaff",
    );
}
