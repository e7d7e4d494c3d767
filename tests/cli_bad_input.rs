//! Every bad input gets a clear one-line message and the right exit code, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn wbs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wbs"))
        .args(args)
        .output()
        .expect("the wbs binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A fresh folder for one test's files, under cargo's `target/tmp` (emptied at the start of each
/// run and kept after it, so runs do not pile up in the system temp dir).
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-bad-input-{name}"));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A textured image (so that it has features).
fn textured(path: &Path, w: u32, h: u32) {
    image::GrayImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as f32, y as f32);
        let v = 128.0
            + 50.0 * (0.11 * x + 0.05 * y).sin() * (0.07 * y - 0.03 * x).cos()
            + 40.0 * ((x - 40.0) * (y - 30.0) / 400.0).sin();
        image::Luma([v.clamp(0.0, 255.0) as u8])
    })
    .save(path)
    .unwrap();
}

/// An error run: non-zero exit, exactly one line on stderr starting with "error:", no panic.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

#[test]
fn missing_file() {
    let dir = scratch("missing");
    let good = dir.join("good.png");
    textured(&good, 64, 64);
    let o = wbs(&[
        "match",
        dir.join("nope.png").to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, "no such file");
}

#[test]
fn corrupt_truncated_empty_and_odd_files() {
    let dir = scratch("corrupt");
    let good = dir.join("good.png");
    textured(&good, 64, 64);
    let g = good.to_str().unwrap();

    let text = dir.join("text.png");
    std::fs::write(&text, "hello, I am not a picture").unwrap();
    assert_one_line_error(
        &wbs(&["match", text.to_str().unwrap(), g]),
        "not a supported image",
    );

    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.join("truncated.png");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    assert_one_line_error(
        &wbs(&["match", g, truncated.to_str().unwrap()]),
        "truncated.png",
    );

    let empty = dir.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    assert_one_line_error(&wbs(&["match", empty.to_str().unwrap(), g]), "empty file");

    // A TIFF is a real image format wbs does not read.
    let tiff = dir.join("image.tif");
    std::fs::write(&tiff, [0x49, 0x49, 0x2A, 0x00, 8, 0, 0, 0, 0, 0]).unwrap();
    assert_one_line_error(&wbs(&["match", tiff.to_str().unwrap(), g]), "image.tif");

    let folder = dir.join("folder.png");
    std::fs::create_dir_all(&folder).unwrap();
    assert_one_line_error(&wbs(&["match", folder.to_str().unwrap(), g]), "directory");
}

#[test]
fn tiny_images() {
    let dir = scratch("tiny");
    let good = dir.join("good.png");
    textured(&good, 64, 64);
    let one = dir.join("one.png");
    image::GrayImage::new(1, 1).save(&one).unwrap();
    assert_one_line_error(
        &wbs(&["match", one.to_str().unwrap(), good.to_str().unwrap()]),
        "1x1",
    );
    let thin = dir.join("thin.pgm");
    image::GrayImage::new(300, 3).save(&thin).unwrap();
    assert_one_line_error(&wbs(&["detect", thin.to_str().unwrap()]), "300x3");
}

#[test]
fn uniform_images_are_not_registered_without_error() {
    let dir = scratch("uniform");
    let a = dir.join("a.png");
    let b = dir.join("b.png");
    image::GrayImage::from_pixel(200, 150, image::Luma([90]))
        .save(&a)
        .unwrap();
    textured(&b, 200, 150);
    let json = dir.join("r.json");
    let o = wbs(&[
        "match",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("NOT REGISTERED"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("no features in image 1"),
        "{}",
        stdout(&o)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(report["registered"], false);
    assert_eq!(report["features"][0], 0);
    assert_eq!(report["inliers"], 0);
    assert!(report["model"].is_null());
}

#[test]
fn fewer_tentatives_than_a_minimal_sample() {
    // Two unrelated images with a handful of features each: a couple of tentatives at most.
    let dir = scratch("few");
    let a = dir.join("a.png");
    let b = dir.join("b.png");
    let blobs = |path: &Path, centres: &[(f32, f32)]| {
        image::GrayImage::from_fn(160, 160, |x, y| {
            let mut v = 200.0;
            for &(cx, cy) in centres {
                let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                v -= 150.0 * (-d2 / 50.0).exp();
            }
            image::Luma([v as u8])
        })
        .save(path)
        .unwrap();
    };
    blobs(&a, &[(50.0, 50.0), (110.0, 90.0)]);
    blobs(&b, &[(80.0, 70.0)]);
    let o = wbs(&["match", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("NOT REGISTERED"), "{out}");
    assert!(out.contains("fewer than the 4 a model needs"), "{out}");
}

#[test]
fn large_images_are_refused_unless_allowed() {
    let dir = scratch("large");
    let big = dir.join("big.png");
    // 3000×2000 = 6 MP: refused under a 5 MP limit, accepted with a higher one.
    textured(&big, 3000, 2000);
    let small = dir.join("small.png");
    textured(&small, 300, 200);
    let o = wbs(&["detect", big.to_str().unwrap(), "--max-megapixels", "5"]);
    assert_one_line_error(&o, "--max-megapixels");
    let o = wbs(&[
        "match",
        big.to_str().unwrap(),
        small.to_str().unwrap(),
        "--max-megapixels",
        "7",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn the_default_limit_is_40_megapixels() {
    // A 48 MP PNG of one colour is tiny on disk; it must be refused from its header, quickly,
    // and the message must name the flag.
    let dir = scratch("huge");
    let huge = dir.join("huge.png");
    image::GrayImage::from_pixel(8000, 6000, image::Luma([7]))
        .save(&huge)
        .unwrap();
    let o = wbs(&["detect", huge.to_str().unwrap()]);
    assert_one_line_error(&o, "pass --max-megapixels 48");
}

#[test]
fn very_different_sizes_and_formats_work() {
    let dir = scratch("sizes");
    let a = dir.join("a.ppm");
    let b = dir.join("b.bmp");
    let c = dir.join("c16.png");
    let d = dir.join("d.png");
    let rgb = image::RgbImage::from_fn(900, 700, |x, y| {
        let v = (128.0 + 60.0 * ((x as f32) * 0.05).sin() * ((y as f32) * 0.07).cos()) as u8;
        image::Rgb([v, v / 2, 255 - v])
    });
    rgb.save(&a).unwrap();
    textured(&b, 40, 30);
    image::ImageBuffer::<image::Luma<u16>, _>::from_fn(120, 90, |x, y| {
        image::Luma([((x * 500 + y * 300) % 65535) as u16])
    })
    .save(&c)
    .unwrap();
    image::RgbaImage::from_fn(80, 60, |x, y| {
        image::Rgba([(x * 3) as u8, (y * 4) as u8, 9, 128])
    })
    .save(&d)
    .unwrap();
    for (p, q) in [(&a, &b), (&c, &d), (&b, &c)] {
        let o = wbs(&["match", p.to_str().unwrap(), q.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "{} vs {}: {}",
            p.display(),
            q.display(),
            stderr(&o)
        );
        assert!(!stderr(&o).contains("panicked"));
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let o = wbs(&["match", "a.png"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = wbs(&["match", "a.png", "b.png", "--method", "sift"]);
    assert_eq!(o.status.code(), Some(2));
    for turns in ["0", "9", "two"] {
        let o = wbs(&["match", "a.png", "b.png", "--affnet-turns", turns]);
        assert_eq!(o.status.code(), Some(2), "--affnet-turns {turns}");
        assert!(stderr(&o).contains("--affnet-turns"), "{}", stderr(&o));
    }
    let o = wbs(&["match", "a.png", "b.png", "--affnet-turns", "9"]);
    assert!(
        stderr(&o).contains("--affnet-turns must be in 1..=8, got 9"),
        "{}",
        stderr(&o)
    );
    let dir = scratch("flags");
    let a = dir.join("a.png");
    textured(&a, 64, 64);
    let o = wbs(&[
        "match",
        a.to_str().unwrap(),
        a.to_str().unwrap(),
        "--ratio",
        "1.5",
    ]);
    assert_one_line_error(&o, "--ratio");
}

/// Every setting out of its range is refused before any image is read (the images here do not
/// exist: the message is about the setting, not the file), in one line that names the flag, its
/// range and the value, with exit code 2 like any other usage error.
#[test]
fn settings_out_of_range_fail_fast_naming_the_flag_and_the_range() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--confidence", "1.5"],
            "--confidence must be in (0, 1), got 1.5",
        ),
        (
            &["--confidence", "-1"],
            "--confidence must be in (0, 1), got -1",
        ),
        (
            &["--confidence", "nan"],
            "--confidence must be in (0, 1), got NaN",
        ),
        (
            &["--confidence", "0"],
            "--confidence must be in (0, 1), got 0",
        ),
        (
            &["--max-iterations", "0"],
            "--max-iterations must be at least 1, got 0",
        ),
        (
            &["--min-inliers", "0"],
            "--min-inliers must be at least 1, got 0",
        ),
        (
            &["--max-megapixels=-1"],
            "--max-megapixels must be a positive number, got -1",
        ),
        (
            &["--max-megapixels", "-1"],
            "--max-megapixels must be a positive number, got -1",
        ),
        (&["--ratio", "-0.5"], "--ratio must be in (0, 1], got -0.5"),
        (&["--ratio", "1.5"], "--ratio must be in (0, 1], got 1.5"),
        (
            &["--inlier-threshold", "0"],
            "--inlier-threshold must be a positive number of px, got 0",
        ),
        (
            &["--threshold", "-2"],
            "--threshold must be a positive number, got -2",
        ),
        (
            &["--threshold", "inf"],
            "--threshold must be a positive number, got inf",
        ),
        (
            &["--detector", "adaptive", "--threshold-floor", "100"],
            "--threshold-floor must be in (0, threshold], and the threshold is 5.3333, got 100",
        ),
        (
            &["--detector", "adaptive", "--threshold-floor", "0"],
            "--threshold-floor must be in (0, threshold], and the threshold is 5.3333, got 0",
        ),
        (
            &["--method", "adhesaff", "--target-features", "0"],
            "--target-features must be at least 1, got 0",
        ),
        (
            &["--threshold-floor", "1"],
            "--threshold-floor applies to the adaptive detector only: add --detector adaptive \
             (or use --method adhesaff / adhesaffnet)",
        ),
        (
            &["--target-features", "500"],
            "--target-features applies to the adaptive detector only: add --detector adaptive \
             (or use --method adhesaff / adhesaffnet)",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["match", "/nonexistent/a.png", "/nonexistent/b.png"];
        args.extend_from_slice(flags);
        let o = wbs(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{flags:?}: {err}");
        assert_eq!(err.trim_end(), format!("error: {expected}"), "{flags:?}");
    }
    // The same checks in eval and detect.
    let o = wbs(&[
        "eval",
        "--dataset",
        "OxAff",
        "--root",
        "/nonexistent",
        "--confidence",
        "2",
    ]);
    assert_eq!(
        stderr(&o).trim_end(),
        "error: --confidence must be in (0, 1), got 2"
    );
    let o = wbs(&["detect", "/nonexistent/a.png", "--threshold", "0"]);
    assert_eq!(
        stderr(&o).trim_end(),
        "error: --threshold must be a positive number, got 0"
    );
}

/// Negative counts are about the value, not taken for flags (no "use '-- -1'" tip, which would
/// turn the value into an image argument).
#[test]
fn negative_counts_get_a_message_about_the_value() {
    for (flag, value) in [
        ("--min-inliers", "-1"),
        ("--max-iterations", "-5"),
        ("--seed", "-3"),
        ("--affnet-turns", "-1"),
    ] {
        let o = wbs(&[
            "match",
            "/nonexistent/a.png",
            "/nonexistent/b.png",
            flag,
            value,
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(&format!("{value} is negative; expected a whole number ≥ 0")),
            "{flag} {value}: {err}"
        );
        assert!(!err.contains("-- -"), "{flag} {value}: {err}");
    }
    let o = wbs(&[
        "match",
        "/nonexistent/a.png",
        "/nonexistent/b.png",
        "--ratio",
        "x",
    ]);
    assert!(stderr(&o).contains("'x' is not a number"), "{}", stderr(&o));
}

/// Output paths are checked before any image is read (the images do not exist here), with one
/// message shape: "cannot write PATH: why".
#[test]
fn output_paths_are_checked_before_the_work() {
    let dir = scratch("outputs");
    let missing = dir.join("missing").join("r.json");
    let cases = [
        (
            vec!["--json", missing.to_str().unwrap()],
            format!("cannot write {}: no folder {}", missing.display(), dir.join("missing").display()),
        ),
        (
            vec!["--viz", missing.to_str().unwrap()],
            format!("cannot write {}: unknown format; the file name should end in .png, .jpg, .jpeg, .bmp, .ppm", missing.display()),
        ),
        (
            vec!["--viz", "m.txt"],
            "cannot write m.txt: unknown format; the file name should end in .png, .jpg, .jpeg, .bmp, .ppm".to_string(),
        ),
        (
            vec!["--json", dir.to_str().unwrap()],
            format!("cannot write {}: it is a folder", dir.display()),
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["match", "/nonexistent/a.png", "/nonexistent/b.png"];
        args.extend_from_slice(&flags);
        let o = wbs(&args);
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {}", stderr(&o));
        assert_eq!(
            stderr(&o).trim_end(),
            format!("error: {expected}"),
            "{flags:?}"
        );
    }
    let o = wbs(&["detect", "/nonexistent/a.png", "--viz", "out.gif"]);
    assert!(
        stderr(&o).starts_with("error: cannot write out.gif: unknown format"),
        "{}",
        stderr(&o)
    );
    let file = dir.join("file");
    std::fs::write(&file, b"").unwrap();
    let out = file.join("eval-out");
    let o = wbs(&[
        "eval",
        "--dataset",
        "OxAff",
        "--root",
        "/nonexistent",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "error: cannot write {}: {} is not a folder",
            out.display(),
            file.display()
        )
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "the checks leave nothing behind"
    );
}

/// A threshold that no response reaches is named in the verdict, not blamed on the image.
#[test]
fn a_threshold_too_high_is_named_in_the_verdict() {
    let dir = scratch("threshold");
    let a = dir.join("a.png");
    textured(&a, 96, 96);
    let a = a.to_str().unwrap();
    let o = wbs(&["match", a, a, "--threshold", "100000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("no Hessian response reaches the threshold 100000"),
        "{}",
        stdout(&o)
    );
}
