//! Fixtures for the `wbs eval` tests: scratch folders, small synthetic pairs with known
//! homographies, homography files in engineering notation, the shared datasets when present.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use image::RgbImage;
use nalgebra::Matrix3;
use wbs::image::{load_rgb, LoadOptions};
use wbs::synth::{synthesize, SynthParams};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[path = "../skip/mod.rs"]
pub mod skip;

/// The shared datasets folder, or None (and a visible SKIP line; a failure under CI) when this
/// checkout has none.
pub fn shared() -> Option<PathBuf> {
    let p = root().join("../shared/datasets");
    if p.join("OxAff").exists() {
        Some(p)
    } else {
        skip::missing(&p.join("OxAff").display().to_string());
        None
    }
}

/// A fresh, empty folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("eval-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bundled sample photo, shrunk to `size` × `size` (small images keep the tests fast).
pub fn photo(size: u32) -> RgbImage {
    let full = load_rgb(
        &root().join("data/sample/img1.png"),
        &LoadOptions::default(),
    )
    .unwrap();
    image::imageops::resize(&full, size, size, image::imageops::FilterType::Triangle)
}

/// A synthetic pair: the photo and a view of it through a mild random homography (image 1 →
/// image 2) that the matcher registers.
pub fn synthetic_pair(seed: u64, size: u32) -> (RgbImage, RgbImage, Matrix3<f64>) {
    let a = photo(size);
    let mut params = SynthParams::random(seed, 1.6);
    params.scale = params.scale.max(0.9);
    let (b, h) = synthesize(&a, &params).unwrap();
    (a, b, h)
}

/// A number as the Edge Foci files write it: three-digit exponents in steps of three
/// (`883.39e-003`, `1.54106182623676e+000`).
pub fn engineering(v: f64) -> String {
    if v == 0.0 {
        return "0.00000000000000e+000".into();
    }
    let e = (v.abs().log10() / 3.0).floor() as i32 * 3;
    let m = v / 10f64.powi(e);
    let sign = if e < 0 { '-' } else { '+' };
    format!("{m:.14}e{sign}{:03}", e.abs())
}

/// Writes a homography (scaled by `scale`, as unnormalised files are) in engineering notation.
pub fn write_h(path: &Path, h: &Matrix3<f64>, scale: f64) {
    let mut text = String::new();
    for r in 0..3 {
        for c in 0..3 {
            text += &format!("    {}", engineering(h[(r, c)] * scale));
        }
        text += "\n";
    }
    std::fs::write(path, text).unwrap();
}

/// Correspondences `x1 y1 x2 y2` under `h`, on a grid inside the image, moved by `shift` in image 2.
pub fn write_points(path: &Path, h: &Matrix3<f64>, size: u32, shift: [f64; 2]) {
    let mut text = String::new();
    let s = size as f64;
    for i in 0..4 {
        for j in 0..3 {
            let (x, y) = (s * (0.25 + 0.16 * i as f64), s * (0.3 + 0.2 * j as f64));
            let q = wbs::synth::transfer(h, [x, y]).unwrap();
            text += &format!("{x} {y} {} {}\n", q[0] + shift[0], q[1] + shift[1]);
        }
    }
    std::fs::write(path, text).unwrap();
}

/// A 1×1 image file with any name (the loaders only list files).
pub fn dummy_image(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = RgbImage::from_pixel(4, 4, image::Rgb([90, 90, 90]));
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("ppm") | Some("pgm") => image::ImageFormat::Pnm,
        Some("jpg") => image::ImageFormat::Jpeg,
        _ => image::ImageFormat::Png,
    };
    img.save_with_format(path, format).unwrap();
}

/// A homogr-layout fixture: `n` synthetic pairs `p<i>A.png`, `p<i>B.png`, `p<i>_model.txt`
/// (the model maps B → A, as homogr's do). Returns the true A → B homographies.
pub fn homogr_fixture(dir: &Path, n: usize, size: u32) -> Vec<Matrix3<f64>> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let (a, b, h) = synthetic_pair(10 + i as u64, size);
            a.save(dir.join(format!("p{i}A.png"))).unwrap();
            b.save(dir.join(format!("p{i}B.png"))).unwrap();
            write_h(
                &dir.join(format!("p{i}_model.txt")),
                &h.try_inverse().unwrap(),
                1.0,
            );
            h
        })
        .collect()
}

pub fn max_abs_diff(a: &Matrix3<f64>, b: &Matrix3<f64>) -> f64 {
    (a - b).abs().max()
}
