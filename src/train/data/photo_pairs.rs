//! Positive pairs cut from ordinary photographs (`wbs train-data`): the training data of the
//! shipped weights, since UBC Phototour may not be redistributed with them.
//!
//! For each photo, Hessian features are detected once. Each *view* warps the photo by a random
//! homography (`synth`: moderate tilt and perspective, any rotation, a zoom, gamma/gain/noise)
//! and cuts, for random features, two 64×64 patches:
//! - the anchor: a circle of radius `support·mrSize·σ` about the detection in the photo;
//! - the positive: the same point in the view, as the detector would see it there: a circle of
//!   radius `support·mrSize·σ·√det J` (J the homography's Jacobian at the point) about the mapped
//!   point, with small position and scale noise. It is rotated so that what remains between
//!   the two patches is an *upright* affine map (determinant 1, lower-triangular, the form
//!   AffNet predicts); the rotation a descriptor would remove by its orientation is not there.
//!
//! `support` defaults to 4: the recipe's augmentation zooms 2× before its 32×32 centre crop, so
//! AffNet sees the central 16×16 of the 64×64 patch, which is then the measurement region
//! (radius mrSize·σ) that AffNet sees at inference. The patches are blurred by 1.25 of their
//! sampling steps, which after the 2× zoom is about the inference patches' blur.
//!
//! Everything is seeded: view `v` of photo `i` depends only on `(seed, i, v)`, so the file is
//! the same whatever the thread count.

use std::path::{Path, PathBuf};

use image::DynamicImage;
use rayon::prelude::*;
use serde::Serialize;

use crate::detect::{detect, Detection, Threshold};
use crate::image::{load_rgb, to_gray, GrayImage, LoadOptions};
use crate::laf::{Laf, MR_SIZE};
use crate::nn::rng::{mix64, Rng};
use crate::patch::{sample_from_space, PatchSpec};
use crate::pyramid::ScaleSpace;
use crate::synth::{synthesize, SynthParams};
use crate::train::data::augment::rectify_up_is_up;
use crate::train::data::{PairSet, SOURCE_LEN, SOURCE_SIZE};
use crate::{Error, Result};

/// How the pairs are made; stored in the file's metadata.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhotoPairParams {
    /// Pairs to make in total (split evenly over the photos).
    pub pairs: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Half-width of the 64×64 patch in measurement-region radii (mrSize·σ).
    pub support: f32,
    /// The views' tilt is uniform in [1, this] (the augmentation adds the large tilts).
    pub max_view_tilt: f64,
    /// The views' zoom is log-uniform in this range.
    pub zoom: [f64; 2],
    /// Position noise of the positive, standard deviation in region radii.
    pub position_noise: f32,
    /// Scale noise of the positive, standard deviation of the log scale.
    pub scale_noise: f32,
    /// At most this many pairs per view.
    pub pairs_per_view: usize,
}

impl Default for PhotoPairParams {
    fn default() -> Self {
        PhotoPairParams {
            pairs: 100_000,
            seed: 0,
            support: 4.0,
            max_view_tilt: 2.0,
            zoom: [0.6, 1.6],
            position_noise: 0.03,
            scale_noise: 0.05,
            pairs_per_view: 200,
        }
    }
}

/// The range `--zoom` accepts: below it features shrink under the detector's smallest scale,
/// above it a view of a large photo takes gigabytes.
pub const MIN_VIEW_ZOOM: f64 = 0.1;
/// See [`MIN_VIEW_ZOOM`].
pub const MAX_VIEW_ZOOM: f64 = 4.0;

/// The anti-aliasing blur of the stored patches, in sampling steps (see the module docs).
const BLUR_PER_STEP: f32 = 1.25;
/// A feature is used when this many region radii about it lie inside both images: the
/// augmentation's tilted crops reach about that far.
const MARGIN_RADII: f32 = 2.0;
/// Views in a row without a single pair before a photo is given up.
const MAX_EMPTY_VIEWS: usize = 24;

/// The photos under `inputs` (files, or folders scanned for .png/.jpg/.jpeg/.bmp/.pnm/.ppm/.pgm,
/// not recursively), sorted, without those whose file name is in `exclude`.
pub fn list_photos(inputs: &[PathBuf], exclude: &[String]) -> Result<Vec<PathBuf>> {
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .is_some_and(|e| {
                ["png", "jpg", "jpeg", "bmp", "pnm", "ppm", "pgm"].contains(&e.as_str())
            })
    };
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let entries = std::fs::read_dir(input).map_err(|e| Error::io(input, e))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            found.sort();
            out.extend(found);
        } else if input.is_file() {
            out.push(input.clone());
        } else {
            return Err(Error::Dataset(format!(
                "{}: no such file or folder",
                input.display()
            )));
        }
    }
    out.retain(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        !name.is_some_and(|n| exclude.iter().any(|x| x == &n))
    });
    if out.is_empty() {
        return Err(Error::Dataset(format!(
            "no photos (png, jpg, bmp, pnm) found in {}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(out)
}

/// One photo, ready to cut views from.
struct Photo {
    rgb: image::RgbImage,
    space: ScaleSpace,
    /// Usable detections.
    features: Vec<Detection>,
}

fn region(sigma: f32) -> f32 {
    MR_SIZE * sigma
}

/// Detections whose surroundings lie inside the image, strongest first, without near
/// duplicates (a close feature of similar scale shows the same content: a false negative).
fn usable_features(space: &ScaleSpace) -> Vec<Detection> {
    let (w, h) = (space.input.width() as f32, space.input.height() as f32);
    let mut all: Vec<Detection> = detect(space, &Threshold::default())
        .into_iter()
        .filter(|d| {
            let m = MARGIN_RADII * region(d.sigma);
            d.x >= m && d.y >= m && d.x <= w - 1.0 - m && d.y <= h - 1.0 - m
        })
        .collect();
    all.sort_by(|a, b| b.response.abs().total_cmp(&a.response.abs()));
    let mut kept: Vec<Detection> = Vec::new();
    for d in all {
        let duplicate = kept.iter().any(|k| {
            let ratio = (k.sigma / d.sigma).max(d.sigma / k.sigma);
            let dist2 = (k.x - d.x).powi(2) + (k.y - d.y).powi(2);
            ratio < 1.5 && dist2 < (0.5 * region(k.sigma.max(d.sigma))).powi(2)
        });
        if !duplicate {
            kept.push(d);
        }
    }
    kept
}

fn to_u8(values: &[f32], out: &mut Vec<u8>) {
    out.extend(values.iter().map(|v| v.round().clamp(0.0, 255.0) as u8));
}

fn sample(space: &ScaleSpace, laf: &Laf, buf: &mut [f32]) {
    let spec = PatchSpec {
        size: SOURCE_SIZE,
        blur_per_step: BLUR_PER_STEP,
    };
    sample_from_space(space, laf, &spec, buf);
}

/// The homography `h` applied to `p`, and its Jacobian there.
fn map_with_jacobian(h: &nalgebra::Matrix3<f64>, p: [f64; 2]) -> Option<([f64; 2], [[f64; 2]; 2])> {
    let v = h * nalgebra::Vector3::new(p[0], p[1], 1.0);
    if v[2].abs() < 1e-9 {
        return None;
    }
    let (x, y) = (v[0] / v[2], v[1] / v[2]);
    let j = [
        [
            (h[(0, 0)] - x * h[(2, 0)]) / v[2],
            (h[(0, 1)] - x * h[(2, 1)]) / v[2],
        ],
        [
            (h[(1, 0)] - y * h[(2, 0)]) / v[2],
            (h[(1, 1)] - y * h[(2, 1)]) / v[2],
        ],
    ];
    Some(([x, y], j))
}

/// Pairs from one view: `(anchors, positives, feature indices)`.
fn cut_view(
    photo: &Photo,
    params: &PhotoPairParams,
    view_seed: u64,
) -> (Vec<u8>, Vec<u8>, Vec<u32>) {
    let mut rng = Rng::new(view_seed);
    let mut synth = SynthParams::random(view_seed, params.max_view_tilt);
    let (lo, hi) = (params.zoom[0].ln(), params.zoom[1].ln());
    synth.scale = rng.range(lo, hi).exp();
    let Ok((view_rgb, h)) = synthesize(&photo.rgb, &synth) else {
        return Default::default();
    };
    let Some(h_inv) = h.try_inverse() else {
        return Default::default();
    };
    let view = to_gray(&DynamicImage::ImageRgb8(view_rgb));
    let (w, hgt) = (view.width() as f64, view.height() as f64);
    let (w1, h1) = (
        photo.space.input.width() as f64,
        photo.space.input.height() as f64,
    );
    let inside = |p: [f64; 2], w: f64, h: f64| {
        p[0] >= 0.0 && p[1] >= 0.0 && p[0] <= w - 1.0 && p[1] <= h - 1.0
    };

    // Candidates in random order; positives are checked before the view's pyramid is built.
    let mut order: Vec<u32> = (0..photo.features.len() as u32).collect();
    for k in (1..order.len()).rev() {
        order.swap(k, (rng.next_u64() % (k as u64 + 1)) as usize);
    }
    let mut chosen = Vec::new();
    for &fi in &order {
        if chosen.len() >= params.pairs_per_view {
            break;
        }
        let d = &photo.features[fi as usize];
        let Some((x2, j)) = map_with_jacobian(&h, [d.x as f64, d.y as f64]) else {
            continue;
        };
        let det = j[0][0] * j[1][1] - j[0][1] * j[1][0];
        if det <= 1e-6 {
            continue;
        }
        let s = det.sqrt();
        // Upright remainder: K = s·J⁻¹ = L·Q (L upright), the positive is turned by Qᵀ.
        let k = [[j[1][1] / s, -j[0][1] / s], [-j[1][0] / s, j[0][0] / s]];
        let l = rectify_up_is_up(k);
        let l_inv = [[l[1][1], 0.0], [-l[1][0], l[0][0]]];
        let q = [
            [
                l_inv[0][0] * k[0][0] + l_inv[0][1] * k[1][0],
                l_inv[0][0] * k[0][1] + l_inv[0][1] * k[1][1],
            ],
            [
                l_inv[1][0] * k[0][0] + l_inv[1][1] * k[1][0],
                l_inv[1][0] * k[0][1] + l_inv[1][1] * k[1][1],
            ],
        ];
        let r2 = region(d.sigma) as f64 * s;
        let noise = (params.position_noise as f64) * r2;
        let c2 = [x2[0] + noise * rng.normal(), x2[1] + noise * rng.normal()];
        let scale = (params.scale_noise as f64 * rng.normal()).exp();
        // The region about the positive, with margin, must show the photo, not the black
        // outside of the warp, and lie inside the view.
        let m = MARGIN_RADII as f64 * r2;
        let corners = [[-m, -m], [m, -m], [m, m], [-m, m]].map(|o| [c2[0] + o[0], c2[1] + o[1]]);
        let ok = corners.iter().all(|&p| {
            inside(p, w, hgt)
                && crate::synth::transfer(&h_inv, p).is_some_and(|b| inside(b, w1, h1))
        });
        if !ok {
            continue;
        }
        let r = params.support as f64 * r2 * scale;
        // Patch coordinates u map to c2 + r·Qᵀ·u.
        let a = [
            [(r * q[0][0]) as f32, (r * q[1][0]) as f32],
            [(r * q[0][1]) as f32, (r * q[1][1]) as f32],
        ];
        chosen.push((
            fi,
            Laf {
                a,
                c: [c2[0] as f32, c2[1] as f32],
            },
        ));
    }
    if chosen.is_empty() {
        return Default::default();
    }
    let view_space = ScaleSpace::build(&view);
    let mut buf = vec![0.0; SOURCE_LEN];
    let (mut anchors, mut positives, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for (fi, laf2) in chosen {
        let d = &photo.features[fi as usize];
        let r1 = params.support * region(d.sigma);
        sample(&photo.space, &Laf::circle(d.x, d.y, r1), &mut buf);
        to_u8(&buf, &mut anchors);
        sample(&view_space, &laf2, &mut buf);
        to_u8(&buf, &mut positives);
        ids.push(fi);
    }
    (anchors, positives, ids)
}

/// Makes the pairs. `progress(pairs_done, photo_name)` is called as views finish; `note` gets
/// one line per photo that yields nothing.
pub fn pairs_from_photos(
    photos: &[PathBuf],
    params: &PhotoPairParams,
    options: &LoadOptions,
    mut progress: impl FnMut(usize, &str),
    mut note: impl FnMut(String),
) -> Result<PairSet> {
    if params.pairs == 0 {
        return Err(Error::invalid("--pairs must be at least 1"));
    }
    if !(params.support > 0.0) || params.pairs_per_view == 0 {
        return Err(Error::invalid(
            "--support and pairs per view must be positive",
        ));
    }
    let [zoom_min, zoom_max] = params.zoom;
    // A view is the photo zoomed, so its pixel count grows with the square of the zoom.
    if !(zoom_min >= MIN_VIEW_ZOOM && zoom_min <= zoom_max && zoom_max <= MAX_VIEW_ZOOM) {
        return Err(Error::invalid(format!(
            "--zoom needs {MIN_VIEW_ZOOM} ≤ MIN ≤ MAX ≤ {MAX_VIEW_ZOOM}, got {zoom_min} {zoom_max}"
        )));
    }
    let mut set = PairSet::default();
    let mut used_sources = Vec::new();
    let count = photos.len();
    for (i, path) in photos.iter().enumerate() {
        // Photos still to come share what is left, so skipped ones do not shrink the total.
        let want = (params.pairs - set.len()).div_ceil(count - i);
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let rgb = load_rgb(path, options)?;
        let gray: GrayImage = to_gray(&DynamicImage::ImageRgb8(rgb.clone()));
        let space = ScaleSpace::build(&gray);
        let features = usable_features(&space);
        if features.is_empty() {
            note(format!("{name}: no usable Hessian features, skipped"));
            continue;
        }
        let photo = Photo {
            rgb,
            space,
            features,
        };
        let mut made = 0;
        let mut view = 0u64;
        let mut empty = 0;
        let round = 2 * rayon::current_num_threads().max(1);
        while made < want && empty < MAX_EMPTY_VIEWS {
            let views: Vec<_> = (view..view + round as u64)
                .into_par_iter()
                .map(|v| {
                    cut_view(
                        &photo,
                        params,
                        mix64(params.seed ^ mix64(((i as u64) << 32) | v)),
                    )
                })
                .collect();
            view += round as u64;
            for (a, p, ids) in views {
                if ids.is_empty() {
                    empty += 1;
                    continue;
                }
                empty = 0;
                for (k, &fi) in ids.iter().enumerate() {
                    if made == want {
                        break;
                    }
                    let r = k * SOURCE_LEN..(k + 1) * SOURCE_LEN;
                    set.push_pair(&a[r.clone()], &p[r], ((i as u64) << 32) | fi as u64);
                    made += 1;
                }
            }
            progress(set.len(), &name);
        }
        if made == 0 {
            note(format!(
                "{name}: no feature survived the random views, skipped"
            ));
        } else {
            used_sources.push(name);
        }
    }
    if set.is_empty() {
        return Err(Error::Dataset(
            "no pairs could be made: the photos have no usable Hessian features".into(),
        ));
    }
    set.metadata
        .insert("wbs.seed".into(), params.seed.to_string());
    set.metadata
        .insert("wbs.sources".into(), used_sources.join(","));
    set.metadata.insert(
        "wbs.params".into(),
        serde_json::to_string(params).unwrap_or_default(),
    );
    set.metadata
        .insert("wbs.generator".into(), "wbs train-data".into());
    set.metadata
        .insert("wbs.version".into(), env!("CARGO_PKG_VERSION").into());
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A photo-like test image: smooth blobs of many sizes.
    pub(crate) fn blob_image(size: u32, seed: u64) -> image::RgbImage {
        let mut rng = Rng::new(seed);
        let blobs: Vec<[f64; 4]> = (0..150)
            .map(|_| {
                [
                    rng.range(0.0, size as f64),
                    rng.range(0.0, size as f64),
                    rng.range(2.0, 12.0),
                    rng.range(-120.0, 120.0),
                ]
            })
            .collect();
        image::RgbImage::from_fn(size, size, |x, y| {
            let mut v = 128.0;
            for b in &blobs {
                let d2 = (x as f64 - b[0]).powi(2) + (y as f64 - b[1]).powi(2);
                v += b[3] * (-d2 / (2.0 * b[2] * b[2])).exp();
            }
            let g = v.round().clamp(0.0, 255.0) as u8;
            image::Rgb([g, g, g])
        })
    }

    #[test]
    fn pairs_from_a_folder_are_seeded_and_well_formed() {
        let dir = std::env::temp_dir().join(format!("wbs-photo-pairs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..3 {
            blob_image(256, k)
                .save(dir.join(format!("p{k}.png")))
                .unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
        let photos = list_photos(std::slice::from_ref(&dir), &["p2.png".into()]).unwrap();
        assert_eq!(photos.len(), 2);
        let params = PhotoPairParams {
            pairs: 60,
            seed: 5,
            ..Default::default()
        };
        let make = || {
            pairs_from_photos(&photos, &params, &LoadOptions::default(), |_, _| {}, |_| {}).unwrap()
        };
        let a = make();
        assert_eq!(a.len(), 60);
        assert!(a.distinct_points() >= 15, "{}", a.distinct_points());
        assert_eq!(a, make());
        assert_eq!(a.metadata["wbs.sources"], "p0.png,p1.png");
        // Both photos contribute; anchors and positives are similar but not equal.
        assert!(a.ids.iter().any(|id| id >> 32 == 1));
        let (mut close, mut diff) = (0, 0.0);
        for p in &a.pairs {
            let (x, y) = (a.patch(p[0] as usize), a.patch(p[1] as usize));
            // The central 16×16, what AffNet sees.
            let d: f64 = (24..40)
                .flat_map(|r| (24..40).map(move |c| r * 64 + c))
                .map(|k| (x[k] as f64 - y[k] as f64).abs())
                .sum::<f64>()
                / 256.0;
            diff += d;
            close += usize::from(d < 30.0);
        }
        assert!(
            close > 40,
            "{close} of 60 pairs close, mean diff {}",
            diff / 60.0
        );
        assert!(diff > 0.0);
        let other = pairs_from_photos(
            &photos,
            &PhotoPairParams { seed: 6, ..params },
            &LoadOptions::default(),
            |_, _| {},
            |_| {},
        )
        .unwrap();
        assert_ne!(a.patches, other.patches);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_zoom_range_is_checked_used_and_recorded() {
        let dir = std::env::temp_dir().join(format!("wbs-photo-zoom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        blob_image(256, 3).save(dir.join("p.png")).unwrap();
        let photos = list_photos(std::slice::from_ref(&dir), &[]).unwrap();
        let make = |zoom: [f64; 2]| {
            let params = PhotoPairParams {
                pairs: 30,
                seed: 1,
                zoom,
                ..Default::default()
            };
            pairs_from_photos(&photos, &params, &LoadOptions::default(), |_, _| {}, |_| {})
        };
        for bad in [[0.0, 1.0], [2.0, 1.0], [1.0, 8.0], [f64::NAN, 1.0]] {
            let message = make(bad).unwrap_err().to_string();
            assert!(message.contains("--zoom"), "{bad:?}: {message}");
        }
        let near = make([1.0, 1.0]).unwrap();
        let far = make([2.0, 2.0]).unwrap();
        assert_ne!(near.patches, far.patches);
        assert!(
            far.metadata["wbs.params"].contains("\"zoom\":[2.0,2.0]"),
            "{}",
            far.metadata["wbs.params"]
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
