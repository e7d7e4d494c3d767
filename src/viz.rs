//! Pictures of results: two images side by side with the inlier correspondences and their affine
//! regions, and single images with their features. Text uses the embedded DejaVu Sans Mono, so no
//! system font is needed.

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_antialiased_line_segment_mut, draw_filled_rect_mut, draw_text_mut};
use imageproc::pixelops::interpolate;
use imageproc::rect::Rect;

use crate::feature::Feature;
use crate::laf::Laf;
use crate::pipeline::MatchReport;

/// The font shipped in `assets/` (Bitstream Vera licence, see `assets/DejaVu-LICENSE.txt`).
pub const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

/// The embedded font.
pub fn font() -> FontRef<'static> {
    FontRef::try_from_slice(FONT_BYTES).expect("the embedded font is valid")
}

/// Options of [`draw_matches`].
#[derive(Clone, Debug)]
pub struct MatchDrawing {
    /// Draw the tentatives that are not inliers, faint red.
    pub outliers: bool,
    /// Draw each inlier's affine region as an ellipse.
    pub ellipses: bool,
    /// Shrink the picture so that it is at most this wide.
    pub max_width: u32,
}

impl Default for MatchDrawing {
    fn default() -> Self {
        MatchDrawing {
            outliers: false,
            ellipses: true,
            max_width: 2400,
        }
    }
}

/// The two images side by side with the inliers (and optionally the outliers) of `report`.
pub fn draw_matches(
    image1: &RgbImage,
    image2: &RgbImage,
    report: &MatchReport,
    options: &MatchDrawing,
) -> RgbImage {
    let (w1, h1) = image1.dimensions();
    let (w2, h2) = image2.dimensions();
    let scale = (options.max_width as f32 / (w1 + w2) as f32).min(1.0);
    let a = resize(image1, scale);
    let b = resize(image2, scale);
    let width = a.width() + b.width();
    let height = a.height().max(b.height()).max(1);
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([0, 0, 0]));
    image::imageops::replace(&mut canvas, &dim(&a), 0, 0);
    image::imageops::replace(&mut canvas, &dim(&b), a.width() as i64, 0);
    let offset = a.width() as f32;
    let _ = (h1, h2);

    if let Some(details) = &report.details {
        let is_inlier = {
            let mut mask = vec![false; details.tentatives.len()];
            for &i in &details.inliers {
                mask[i] = true;
            }
            mask
        };
        if options.outliers {
            for (t, inlier) in details.tentatives.iter().zip(&is_inlier) {
                if *inlier {
                    continue;
                }
                let p = details.features1[t.query].laf.c;
                let q = details.features2[t.train].laf.c;
                line(
                    &mut canvas,
                    [p[0] * scale, p[1] * scale],
                    [q[0] * scale + offset, q[1] * scale],
                    Rgb([255, 40, 40]),
                    0.25,
                );
            }
        }
        for (k, &i) in details.inliers.iter().enumerate() {
            let t = details.tentatives[i];
            let color = palette(k);
            let f1 = &details.features1[t.query];
            let f2 = &details.features2[t.train];
            if options.ellipses {
                ellipse(&mut canvas, &f1.laf, scale, 0.0, color);
                ellipse(&mut canvas, &f2.laf, scale, offset, color);
            }
            line(
                &mut canvas,
                [f1.laf.c[0] * scale, f1.laf.c[1] * scale],
                [f2.laf.c[0] * scale + offset, f2.laf.c[1] * scale],
                color,
                0.9,
            );
        }
    }
    let verdict = if report.registered {
        "registered"
    } else {
        "NOT registered"
    };
    let text = format!(
        "{verdict}: {} inliers / {} tentatives ({}, {})",
        report.inliers,
        report.tentatives,
        report.settings.method.name(),
        report.geometry
    );
    label(&mut canvas, &text);
    canvas
}

/// One image with the regions of its features.
pub fn draw_features(image: &RgbImage, features: &[Feature]) -> RgbImage {
    let mut canvas = dim(image);
    for (k, f) in features.iter().enumerate() {
        ellipse(&mut canvas, &f.laf, 1.0, 0.0, palette(k));
    }
    label(&mut canvas, &format!("{} features", features.len()));
    canvas
}

fn resize(image: &RgbImage, scale: f32) -> RgbImage {
    if scale >= 1.0 {
        return image.clone();
    }
    let w = ((image.width() as f32 * scale).round() as u32).max(1);
    let h = ((image.height() as f32 * scale).round() as u32).max(1);
    image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle)
}

/// Darkens and desaturates a little so that coloured lines stand out.
fn dim(image: &RgbImage) -> RgbImage {
    let mut out = image.clone();
    for p in out.pixels_mut() {
        let g = (p[0] as u32 + p[1] as u32 + p[2] as u32) / 3;
        for c in 0..3 {
            p[c] = ((p[c] as u32 + g) * 7 / 20) as u8;
        }
    }
    out
}

/// A distinct, bright colour per index (golden-ratio hue steps).
fn palette(k: usize) -> Rgb<u8> {
    let hue = (k as f32 * 0.618_034).fract() * 6.0;
    let x = 1.0 - (hue % 2.0 - 1.0).abs();
    let (r, g, b) = match hue as u32 {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    let to = |v: f32| (80.0 + 175.0 * v) as u8;
    Rgb([to(r), to(g), to(b)])
}

fn line(canvas: &mut RgbImage, p: [f32; 2], q: [f32; 2], color: Rgb<u8>, opacity: f32) {
    let clip = |v: f32| v.clamp(-1e5, 1e5).round() as i32;
    draw_antialiased_line_segment_mut(
        canvas,
        (clip(p[0]), clip(p[1])),
        (clip(q[0]), clip(q[1])),
        color,
        |new, old, weight| interpolate(new, old, weight * opacity),
    );
}

/// The frame's ellipse `c + A·(cos t, sin t)/2` with a spoke along `A·(1, 0)` showing the
/// orientation. Half the measurement region (as kornia_moons draws LAFs), so that neighbouring
/// regions stay readable.
fn ellipse(canvas: &mut RgbImage, laf: &Laf, scale: f32, offset: f32, color: Rgb<u8>) {
    let half = laf.scaled(0.5);
    let at = |u: [f32; 2]| {
        let p = half.map(u);
        [p[0] * scale + offset, p[1] * scale]
    };
    let n = 36;
    let mut previous = at([1.0, 0.0]);
    for i in 1..=n {
        let t = i as f32 / n as f32 * std::f32::consts::TAU;
        let p = at([t.cos(), t.sin()]);
        line(canvas, previous, p, color, 0.8);
        previous = p;
    }
    let c = [laf.c[0] * scale + offset, laf.c[1] * scale];
    line(canvas, c, at([1.0, 0.0]), color, 0.8);
}

fn label(canvas: &mut RgbImage, text: &str) {
    let size = 16.0;
    let width = (text.chars().count() as f32 * size * 0.62) as u32 + 12;
    draw_filled_rect_mut(
        canvas,
        Rect::at(0, 0).of_size(width.min(canvas.width()), 24),
        Rgb([0, 0, 0]),
    );
    draw_text_mut(
        canvas,
        Rgb([255, 255, 255]),
        6,
        3,
        PxScale::from(size),
        &font(),
        text,
    );
}
