//! The matcher: a [`Config`] (the CLI flags map 1:1 onto it) runs the arrows of the data flow
//! for two images and produces a [`MatchReport`].
//!
//! ```text
//! load → scale space → detect → shape → orient → describe   (both images, in parallel)
//!      → nearest neighbours → ratio test → duplicates → LO-RANSAC → verdict
//! ```
//! `wbs match`, `wbs eval` and the benchmarks all call [`match_files`] / [`match_images`], so
//! there is one implementation of the protocol. Those load the networks the settings use on every
//! call; to match many pairs, load them once with [`Models::for_config`] and call
//! [`match_files_with`] / [`match_images_with`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::describe::{describe_hardnet, describe_sift, Described, DescriptorKind};
use crate::detect::{detect, Detection, Threshold, DEFAULT_THRESHOLD};
use crate::feature::Feature;
use crate::geometry::{self, ModelKind, RansacConfig, RansacMethod};
use crate::image::{load_gray, GrayImage, LoadOptions, DEFAULT_MAX_MEGAPIXELS};
use crate::matching::{ratio_test, remove_duplicates, two_nearest, Tentative};
use crate::models::Models;
use crate::orient::{orient_by_histogram, orient_by_orinet, OrientationMethod};
use crate::pyramid::ScaleSpace;
use crate::shape::{shape_by_affnet, shape_classical, ShapeFailures, ShapeMethod};
use crate::{Error, Result};

/// The feature presets, named as in the AffNet paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Hessian (threshold 16/3) + Baumberg + dominant orientation.
    Hesaff,
    /// Adaptive-threshold Hessian + Baumberg + dominant orientation.
    Adhesaff,
    /// Hessian + AffNet + dominant orientation.
    Hesaffnet,
    /// Adaptive-threshold Hessian + AffNet + dominant orientation.
    Adhesaffnet,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Hesaff => "hesaff",
            Method::Adhesaff => "adhesaff",
            Method::Hesaffnet => "hesaffnet",
            Method::Adhesaffnet => "adhesaffnet",
        }
    }

    pub fn is_adaptive(self) -> bool {
        matches!(self, Method::Adhesaff | Method::Adhesaffnet)
    }

    pub fn shape(self) -> ShapeMethod {
        match self {
            Method::Hesaff | Method::Adhesaff => ShapeMethod::Baumberg,
            Method::Hesaffnet | Method::Adhesaffnet => ShapeMethod::Affnet,
        }
    }
}

/// The AdHess target: the threshold is lowered until this many detections are found.
pub const DEFAULT_ADAPTIVE_TARGET: usize = 3000;

/// Where the network weights come from (None: the usual lookup, see [`crate::nn::locate`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightPaths {
    pub affnet: Option<PathBuf>,
    pub orinet: Option<PathBuf>,
    pub hardnet: Option<PathBuf>,
}

/// Every setting of a match. The CLI flags map 1:1 onto these fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// The preset the settings started from (informational once fields are overridden).
    pub method: Method,
    pub threshold: Threshold,
    pub shape: ShapeMethod,
    /// Detections whose shape estimation fails keep a circle or are dropped.
    pub shape_failures: ShapeFailures,
    pub orientation: OrientationMethod,
    pub descriptor: DescriptorKind,
    /// Second-nearest-neighbour ratio (0.8).
    pub ratio: f32,
    /// Duplicate filter radius in px at both ends (2).
    pub duplicate_radius: f32,
    pub ransac: RansacConfig,
    pub ransac_method: RansacMethod,
    /// A pair is registered with at least this many inliers (15).
    pub min_inliers: usize,
    pub max_megapixels: f64,
    pub weights: WeightPaths,
    /// AffNet's shape averaged over this many turns of each patch (1: one pass, the paper's;
    /// see [`crate::shape::average_turned_shapes`]).
    #[serde(default = "one_turn")]
    pub affnet_turns: usize,
}

fn one_turn() -> usize {
    1
}

impl Config {
    /// The settings of a preset with RootSIFT, homography verification and protocol defaults.
    pub fn preset(method: Method) -> Config {
        let threshold = if method.is_adaptive() {
            Threshold::adaptive(DEFAULT_ADAPTIVE_TARGET)
        } else {
            Threshold::Fixed {
                threshold: DEFAULT_THRESHOLD,
            }
        };
        Config {
            method,
            threshold,
            shape: method.shape(),
            shape_failures: ShapeFailures::Circle,
            orientation: OrientationMethod::Histogram,
            descriptor: DescriptorKind::Rootsift,
            ratio: 0.8,
            duplicate_radius: 2.0,
            ransac: RansacConfig::homography(),
            ransac_method: RansacMethod::LoRansac,
            min_inliers: 15,
            max_megapixels: DEFAULT_MAX_MEGAPIXELS,
            weights: WeightPaths::default(),
            affnet_turns: 1,
        }
    }

    /// Switches the verification model, resetting the threshold to the protocol's default.
    pub fn set_geometry(&mut self, kind: ModelKind) {
        let seed = self.ransac.seed;
        self.ransac = match kind {
            ModelKind::Homography => RansacConfig::homography(),
            ModelKind::Fundamental => RansacConfig::fundamental(),
        };
        self.ransac.seed = seed;
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            max_megapixels: self.max_megapixels,
        }
    }

    /// Rejects settings that cannot work together, before any image is read.
    pub fn validate(&self) -> Result<()> {
        if !(self.ratio > 0.0 && self.ratio <= 1.0) {
            return Err(Error::invalid(format!(
                "--ratio must be in (0, 1], got {}",
                self.ratio
            )));
        }
        if !(self.ransac.threshold_px > 0.0) {
            return Err(Error::invalid("--inlier-threshold must be positive"));
        }
        let t = match self.threshold {
            Threshold::Fixed { threshold } => threshold,
            Threshold::Adaptive { floor, .. } => floor,
        };
        if !(t > 0.0) {
            return Err(Error::invalid("--threshold must be positive"));
        }
        Ok(())
    }
}

/// Wall-clock milliseconds per stage of one image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimes {
    pub load: f64,
    pub pyramid: f64,
    pub detect: f64,
    pub shape: f64,
    pub orient: f64,
    pub describe: f64,
}

/// The described features of one image.
#[derive(Clone, Debug, Default)]
pub struct ImageFeatures {
    pub width: usize,
    pub height: usize,
    pub detections: usize,
    /// Regions kept by the shape stage (before orientation may split or drop them).
    pub shaped: usize,
    pub described: Described,
    pub times: StageTimes,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Runs detection, shape, orientation and description on one image (loading the networks the
/// settings use; see [`extract_features_with`] to load them once).
pub fn extract_features(image: &GrayImage, config: &Config) -> Result<ImageFeatures> {
    extract_features_with(image, config, &Models::for_config(config)?)
}

/// [`extract_features`] with the networks already loaded.
pub fn extract_features_with(
    image: &GrayImage,
    config: &Config,
    models: &Models,
) -> Result<ImageFeatures> {
    let mut times = StageTimes::default();
    let t = Instant::now();
    let space = ScaleSpace::build(image);
    times.pyramid = ms(t);

    let t = Instant::now();
    let detections = detect(&space, &config.threshold);
    times.detect = ms(t);

    let t = Instant::now();
    let shaped = shape_stage(&space, &detections, config, models)?;
    times.shape = ms(t);
    let shaped_count = shaped.len();

    let t = Instant::now();
    let oriented = orient_stage(&space, shaped, config, models)?;
    times.orient = ms(t);

    let t = Instant::now();
    let described = describe_stage(&space, &oriented, config, models)?;
    times.describe = ms(t);
    Ok(ImageFeatures {
        width: image.width(),
        height: image.height(),
        detections: detections.len(),
        shaped: shaped_count,
        described,
        times,
    })
}

/// The shape stage: upright affine frames, elongated and border-touching ones dropped.
pub fn shape_stage(
    space: &ScaleSpace,
    detections: &[Detection],
    config: &Config,
    models: &Models,
) -> Result<Vec<Feature>> {
    match config.shape {
        ShapeMethod::None | ShapeMethod::Baumberg => Ok(shape_classical(
            space,
            detections,
            config.shape,
            config.shape_failures,
        )),
        ShapeMethod::Affnet => Ok(shape_by_affnet(
            space,
            detections,
            models.affnet()?,
            config.affnet_turns,
        )),
    }
}

/// The orientation stage: each frame rotated by its orientation(s).
pub fn orient_stage(
    space: &ScaleSpace,
    features: Vec<Feature>,
    config: &Config,
    models: &Models,
) -> Result<Vec<Feature>> {
    match config.orientation {
        OrientationMethod::Upright => Ok(features),
        OrientationMethod::Histogram => Ok(orient_by_histogram(
            space,
            &features,
            config.descriptor.wants_half_orientation(),
        )),
        OrientationMethod::Orinet => Ok(orient_by_orinet(space, &features, models.orinet()?)),
    }
}

/// The description stage.
pub fn describe_stage(
    space: &ScaleSpace,
    features: &[Feature],
    config: &Config,
    models: &Models,
) -> Result<Described> {
    match config.descriptor.sift_variant() {
        Some(variant) => Ok(describe_sift(space, features, variant)),
        None => Ok(describe_hardnet(space, features, models.hardnet()?)),
    }
}

/// The outcome of matching two images.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MatchReport {
    /// At least `min_inliers` inliers (and the ground-truth check passed, when one was given).
    pub registered: bool,
    /// Why the verdict is what it is, in words.
    pub verdict: String,
    pub inliers: usize,
    pub tentatives: usize,
    /// Features (after shape, orientation and description) in image 1 and image 2.
    pub features: [usize; 2],
    /// Detections before shape adaptation.
    pub detections: [usize; 2],
    /// Regions kept by the shape stage (elongated and border-touching ones dropped), before
    /// orientation may split or drop them.
    #[serde(default)]
    pub shaped: [usize; 2],
    /// [width, height] of both images.
    pub image_sizes: [[usize; 2]; 2],
    /// "homography" or "fundamental".
    pub geometry: String,
    /// The 3×3 model (row-major), or null when none was found.
    pub model: Option<[[f64; 3]; 3]>,
    /// Every inlier as [x1, y1, x2, y2].
    pub inlier_matches: Vec<[f64; 4]>,
    /// Every tentative correspondence as [x1, y1, x2, y2, ratio], when asked for
    /// (`wbs match --tentatives`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tentative_matches: Option<Vec<[f64; 5]>>,
    /// Milliseconds per stage ("load", "pyramid", "detect", "shape", "orient", "describe": the
    /// slower of the two images, which run in parallel; "match", "verify", "total").
    pub timings_ms: BTreeMap<String, f64>,
    pub ransac_iterations: usize,
    /// The protocol's verdict against ground truth, when one was given (`--ground-truth`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ground_truth: Option<crate::protocol::Judgement>,
    pub device: String,
    /// Why `--device auto` chose this device (e.g. "no CUDA: no NVIDIA driver").
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device_note: Option<String>,
    pub images: [String; 2],
    pub settings: Config,
    pub version: String,
    /// Everything needed to draw the result; not serialised.
    #[serde(skip)]
    pub details: Option<Box<MatchDetails>>,
}

/// The features and correspondences behind a report (for drawing).
#[derive(Clone, Debug, Default)]
pub struct MatchDetails {
    pub features1: Vec<Feature>,
    pub features2: Vec<Feature>,
    pub tentatives: Vec<Tentative>,
    /// Indices into `tentatives`.
    pub inliers: Vec<usize>,
}

/// Loads two image files and matches them (loading the networks the settings use).
pub fn match_files(path1: &Path, path2: &Path, config: &Config) -> Result<MatchReport> {
    config.validate()?;
    let start = Instant::now();
    let models = Models::for_config(config)?;
    let loading = ms(start);
    let mut report = match_files_with(path1, path2, config, &models)?;
    report.timings_ms.insert("models".into(), loading);
    report.timings_ms.insert("total".into(), ms(start));
    Ok(report)
}

/// [`match_files`] with the networks already loaded ([`Models::for_config`]).
pub fn match_files_with(
    path1: &Path,
    path2: &Path,
    config: &Config,
    models: &Models,
) -> Result<MatchReport> {
    config.validate()?;
    let start = Instant::now();
    let options = config.load_options();
    let (a, b) = rayon::join(
        || timed(|| load_gray(path1, &options)),
        || timed(|| load_gray(path2, &options)),
    );
    let ((image1, load1), (image2, load2)) = ((a.0?, a.1), (b.0?, b.1));
    let mut report = match_images_with(&image1, &image2, config, models)?;
    report.timings_ms.insert("load".into(), load1.max(load2));
    report.timings_ms.insert("total".into(), ms(start));
    report.images = [path1.display().to_string(), path2.display().to_string()];
    Ok(report)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let value = f();
    (value, ms(t))
}

/// Matches two loaded images (loading the networks the settings use).
pub fn match_images(
    image1: &GrayImage,
    image2: &GrayImage,
    config: &Config,
) -> Result<MatchReport> {
    config.validate()?;
    match_images_with(image1, image2, config, &Models::for_config(config)?)
}

/// [`match_images`] with the networks already loaded ([`Models::for_config`]).
pub fn match_images_with(
    image1: &GrayImage,
    image2: &GrayImage,
    config: &Config,
    models: &Models,
) -> Result<MatchReport> {
    config.validate()?;
    let start = Instant::now();
    let (f1, f2) = rayon::join(
        || extract_features_with(image1, config, models),
        || extract_features_with(image2, config, models),
    );
    let (f1, f2) = (f1?, f2?);
    let mut report = match_features(&f1, &f2, config);
    let mut timings = std::mem::take(&mut report.timings_ms);
    for (name, a, b) in [
        ("pyramid", f1.times.pyramid, f2.times.pyramid),
        ("detect", f1.times.detect, f2.times.detect),
        ("shape", f1.times.shape, f2.times.shape),
        ("orient", f1.times.orient, f2.times.orient),
        ("describe", f1.times.describe, f2.times.describe),
    ] {
        timings.insert(name.into(), a.max(b));
    }
    timings.insert("total".into(), ms(start));
    report.timings_ms = timings;
    Ok(report)
}

/// Matches two sets of described features: tentatives, verification, verdict.
pub fn match_features(f1: &ImageFeatures, f2: &ImageFeatures, config: &Config) -> MatchReport {
    let cpu = |d1: &Described, d2: &Described| {
        let nn = two_nearest(&d1.descriptors, &d2.descriptors, d1.dimension);
        Ok(ratio_test(&nn, config.ratio))
    };
    match match_features_by(f1, f2, config, cpu) {
        Ok(report) => report,
        Err(_) => unreachable!("the CPU nearest-neighbour search does not fail"),
    }
}

/// [`match_features`] with another nearest-neighbour search and ratio test (`nearest` returns
/// the tentatives that pass the ratio test, as `ratio_test(&two_nearest(..))`; it is called only
/// when both images have features). The CUDA pipeline passes its device matcher here.
pub fn match_features_by(
    f1: &ImageFeatures,
    f2: &ImageFeatures,
    config: &Config,
    nearest: impl FnOnce(&Described, &Described) -> Result<Vec<Tentative>>,
) -> Result<MatchReport> {
    let (d1, d2) = (&f1.described, &f2.described);
    let mut timings = BTreeMap::new();

    let t = Instant::now();
    let tentatives = if d1.is_empty() || d2.is_empty() {
        Vec::new()
    } else {
        let raw = nearest(d1, d2)?;
        let centres = |d: &Described| d.features.iter().map(|f| f.laf.c).collect::<Vec<_>>();
        remove_duplicates(&raw, &centres(d1), &centres(d2), config.duplicate_radius)
    };
    timings.insert("match".to_string(), ms(t));

    let t = Instant::now();
    let pts1: Vec<[f64; 2]> = tentatives
        .iter()
        .map(|m| point(d1.features[m.query].laf.c))
        .collect();
    let pts2: Vec<[f64; 2]> = tentatives
        .iter()
        .map(|m| point(d2.features[m.train].laf.c))
        .collect();
    let verification = geometry::verify(&pts1, &pts2, &config.ransac, config.ransac_method);
    timings.insert("verify".to_string(), ms(t));

    let (model, inlier_indices, iterations) = match &verification {
        Some(v) => (Some(matrix_rows(&v.model)), v.inliers.clone(), v.iterations),
        None => (None, Vec::new(), 0),
    };
    let inlier_matches: Vec<[f64; 4]> = inlier_indices
        .iter()
        .map(|&i| [pts1[i][0], pts1[i][1], pts2[i][0], pts2[i][1]])
        .collect();
    let inliers = inlier_matches.len();
    let minimal = match config.ransac.kind {
        ModelKind::Homography => 4,
        ModelKind::Fundamental => 7,
    };
    let (registered, verdict) = if d1.is_empty() || d2.is_empty() {
        let which = if d1.is_empty() { 1 } else { 2 };
        (
            false,
            format!("no features in image {which} (uniform or featureless image?)"),
        )
    } else if tentatives.len() < minimal {
        (
            false,
            format!(
                "only {} tentative correspondences, fewer than the {minimal} a model needs",
                tentatives.len()
            ),
        )
    } else if inliers >= config.min_inliers {
        (true, format!("{inliers} inliers ≥ {}", config.min_inliers))
    } else {
        (
            false,
            format!(
                "only {inliers} inliers, fewer than the {} required",
                config.min_inliers
            ),
        )
    };
    Ok(MatchReport {
        registered,
        verdict,
        inliers,
        tentatives: tentatives.len(),
        features: [d1.len(), d2.len()],
        detections: [f1.detections, f2.detections],
        shaped: [f1.shaped, f2.shaped],
        image_sizes: [[f1.width, f1.height], [f2.width, f2.height]],
        geometry: match config.ransac.kind {
            ModelKind::Homography => "homography".into(),
            ModelKind::Fundamental => "fundamental".into(),
        },
        model,
        inlier_matches,
        tentative_matches: None,
        timings_ms: timings,
        ransac_iterations: iterations,
        ground_truth: None,
        device: "cpu".into(),
        device_note: None,
        images: [String::new(), String::new()],
        settings: config.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        details: Some(Box::new(MatchDetails {
            features1: d1.features.clone(),
            features2: d2.features.clone(),
            tentatives,
            inliers: inlier_indices,
        })),
    })
}

impl MatchReport {
    /// Applies the protocol's ground-truth check: the verdict becomes the protocol's.
    pub fn judge_against(&mut self, truth: &crate::protocol::GroundTruth) {
        let judgement = crate::protocol::judge(
            &self.inlier_matches,
            self.model.as_ref(),
            truth,
            self.settings.min_inliers,
        );
        self.registered = judgement.registered;
        self.verdict = judgement.reason.clone();
        self.ground_truth = Some(judgement);
    }

    /// Fills `tentative_matches` from the details.
    pub fn include_tentatives(&mut self) {
        if let Some(d) = &self.details {
            self.tentative_matches = Some(
                d.tentatives
                    .iter()
                    .map(|t| {
                        let (p, q) = (d.features1[t.query].laf.c, d.features2[t.train].laf.c);
                        [
                            p[0] as f64,
                            p[1] as f64,
                            q[0] as f64,
                            q[1] as f64,
                            t.ratio as f64,
                        ]
                    })
                    .collect(),
            );
        }
    }
}

fn point(c: [f32; 2]) -> [f64; 2] {
    [c[0] as f64, c[1] as f64]
}

fn matrix_rows(m: &nalgebra::Matrix3<f64>) -> [[f64; 3]; 3] {
    let mut rows = [[0.0; 3]; 3];
    for (r, row) in rows.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = m[(r, c)];
        }
    }
    rows
}
