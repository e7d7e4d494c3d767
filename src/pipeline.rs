//! The settings of a match ([`Config`]: the CLI flags map 1:1 onto it, the device included), the
//! feature stages, and the outcome ([`MatchReport`]).
//!
//! ```text
//! load → scale space → detect → shape → orient → describe   (both images)
//!      → nearest neighbours → ratio test → duplicates → LO-RANSAC → verdict
//! ```
//! [`crate::matcher::Matcher`] runs them: it loads the networks a `Config` uses once, on the
//! configured device, and `wbs match`, `wbs eval`, training validation and the benchmarks all call
//! it, so there is one implementation of the protocol.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::describe::{describe_sift, Described, DescriptorKind};
use crate::detect::{detect, Detection, Threshold, DEFAULT_THRESHOLD};
use crate::device::{Device, DeviceKind};
use crate::feature::Feature;
use crate::geometry::{self, Geometry, LafCheck, RansacConfig, RansacMethod};
use crate::image::{GrayImage, LoadOptions, DEFAULT_MAX_MEGAPIXELS};
use crate::laf::Laf;
use crate::matching::{remove_duplicates, Tentative};
use crate::mser::{self, MserParams};
use crate::networks::{Networks, PreparedImage, WeightsFile};
use crate::nn::{NetworkKind, HARDNET_DIM};
use crate::orient::{orient_by_histogram, orient_from_orinet_outputs, OrientationMethod};
use crate::pyramid::ScaleSpace;
use crate::schedule::{ModsReport, Schedule, StepDetector};
use crate::shape::{
    keep_if_valid, shape_classical, shape_from_affnet_outputs, turned_circles, ShapeFailures,
    ShapeMethod,
};
use crate::{Error, Result};

choices! {
    /// The feature presets, named as in the AffNet paper.
    pub enum Method {
        /// Hessian (threshold 16/3) + Baumberg + dominant orientation.
        Hesaff = "hesaff",
        /// Adaptive-threshold Hessian + Baumberg + dominant orientation.
        Adhesaff = "adhesaff",
        /// Hessian + AffNet + dominant orientation.
        Hesaffnet = "hesaffnet",
        /// Adaptive-threshold Hessian + AffNet + dominant orientation.
        Adhesaffnet = "adhesaffnet",
        /// MODS: Hessian + Baumberg on synthesised affine views, on demand (`docs/mods.md`).
        Mods = "mods",
        /// MODS with AffNet shapes in the Hessian steps.
        Modsnet = "modsnet",
    }
}

impl Method {
    /// Whether the preset's detector lowers its threshold to a target count (AdHess).
    pub fn is_adaptive(self) -> bool {
        matches!(self, Method::Adhesaff | Method::Adhesaffnet)
    }

    /// The preset's shape method.
    pub fn shape(self) -> ShapeMethod {
        match self {
            Method::Hesaff | Method::Adhesaff | Method::Mods => ShapeMethod::Baumberg,
            Method::Hesaffnet | Method::Adhesaffnet | Method::Modsnet => ShapeMethod::Affnet,
        }
    }

    /// Whether the preset runs a MODS schedule.
    pub fn is_mods(self) -> bool {
        matches!(self, Method::Mods | Method::Modsnet)
    }
}

/// The AdHess target: the threshold is lowered until this many detections are found.
pub const DEFAULT_ADAPTIVE_TARGET: usize = 3000;

/// Where the network weights come from (None: the usual lookup, see [`crate::nn::locate`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightPaths {
    /// AffNet's weights (`--affnet-weights`).
    pub affnet: Option<PathBuf>,
    /// OriNet's weights (`--orinet-weights`).
    pub orinet: Option<PathBuf>,
    /// HardNet's weights (`--hardnet-weights`).
    pub hardnet: Option<PathBuf>,
}

/// Every setting of a match. The CLI flags map 1:1 onto these fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// The preset the settings started from (informational once fields are overridden).
    pub method: Method,
    /// The detector's threshold: fixed, or adaptive down to a floor (AdHess).
    pub threshold: Threshold,
    /// How detections get their affine shape.
    pub shape: ShapeMethod,
    /// Detections whose shape estimation fails keep a circle or are dropped.
    pub shape_failures: ShapeFailures,
    /// How frames are oriented.
    pub orientation: OrientationMethod,
    /// The descriptor.
    pub descriptor: DescriptorKind,
    /// Second-nearest-neighbour ratio (0.8).
    pub ratio: f32,
    /// Duplicate filter radius in px at both ends (2).
    pub duplicate_radius: f32,
    /// The verification model and LO-RANSAC's settings.
    pub ransac: RansacConfig,
    /// The robust estimator.
    pub ransac_method: RansacMethod,
    /// A pair is registered with at least this many inliers (15).
    pub min_inliers: usize,
    /// Images larger than this are refused before they are decoded.
    pub max_megapixels: f64,
    /// Network weight files (None: the usual lookup).
    pub weights: WeightPaths,
    /// AffNet's shape averaged over this many turns of each patch (1: one pass, the paper's;
    /// see [`crate::shape::average_turned_shapes`]).
    #[serde(default = "one_turn")]
    pub affnet_turns: usize,
    /// The device that runs the networks and the nearest-neighbour search.
    #[serde(default)]
    pub device: Device,
    /// The LAF check after verification (None: off; MODS schedules bring their own).
    #[serde(default)]
    pub laf_check: Option<LafCheck>,
    /// The MODS schedule (`--method mods`/`modsnet`, `--schedule`); None for single-view methods.
    #[serde(default)]
    pub schedule: Option<Schedule>,
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
            device: Device::Auto,
            laf_check: None,
            schedule: method.is_mods().then(Schedule::wbs),
        }
    }

    /// Switches the verification model, resetting the threshold to the protocol's default.
    pub fn set_geometry(&mut self, kind: Geometry) {
        let seed = self.ransac.seed;
        self.ransac = match kind {
            Geometry::Homography => RansacConfig::homography(),
            Geometry::Fundamental => RansacConfig::fundamental(),
        };
        self.ransac.seed = seed;
    }

    /// The networks these settings use, each with its weights file when one is given (else the
    /// usual lookup applies: `WBS_WEIGHTS`, then the shipped `data/`).
    pub fn networks(&self) -> Vec<(NetworkKind, Option<&Path>)> {
        let w = &self.weights;
        let mut wanted = Vec::new();
        let scheduled_affnet = self.schedule.as_ref().is_some_and(|s| {
            s.steps.iter().any(|st| {
                st.detector == StepDetector::Hessian && st.shape == Some(ShapeMethod::Affnet)
            })
        });
        if self.shape == ShapeMethod::Affnet || scheduled_affnet {
            wanted.push((NetworkKind::AffNet, w.affnet.as_deref()));
        }
        if self.orientation == OrientationMethod::Orinet {
            wanted.push((NetworkKind::OriNet, w.orinet.as_deref()));
        }
        if self.descriptor == DescriptorKind::Hardnet {
            wanted.push((NetworkKind::HardNet, w.hardnet.as_deref()));
        }
        wanted
    }

    /// The image loading options of these settings.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            max_megapixels: self.max_megapixels,
            ..LoadOptions::default()
        }
    }

    /// Rejects settings out of their range, or that cannot work together, before any image is
    /// read. The error is an [`Error::Setting`] that names the setting as this struct does
    /// (`ratio`, `ransac.confidence`, `threshold.floor`, ...) and its range.
    pub fn validate(&self) -> Result<()> {
        fn check<T: std::fmt::Display>(
            setting: &'static str,
            value: T,
            ok: bool,
            rule: &str,
        ) -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::setting(setting, rule, value))
            }
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let r = self.ratio;
        check("ratio", r, r > 0.0 && r <= 1.0, "in (0, 1]")?;
        let t = self.ransac.threshold_px;
        check(
            "ransac.threshold_px",
            t,
            positive(t),
            "a positive number of px",
        )?;
        let c = self.ransac.confidence;
        check("ransac.confidence", c, c > 0.0 && c < 1.0, "in (0, 1)")?;
        let n = self.ransac.max_iterations;
        check("ransac.max_iterations", n, n >= 1, "at least 1")?;
        check(
            "min_inliers",
            self.min_inliers,
            self.min_inliers >= 1,
            "at least 1",
        )?;
        let m = self.max_megapixels;
        check("max_megapixels", m, positive(m), "a positive number")?;
        let d = self.duplicate_radius;
        check("duplicate_radius", d, d.is_finite() && d >= 0.0, "≥ 0 px")?;
        let turns = self.affnet_turns;
        check("affnet_turns", turns, (1..=8).contains(&turns), "in 1..=8")?;
        let (threshold, adaptive) = match self.threshold {
            Threshold::Fixed { threshold } => (threshold, None),
            Threshold::Adaptive {
                threshold,
                target,
                floor,
            } => (threshold, Some((target, floor))),
        };
        check(
            "threshold",
            threshold,
            positive(threshold as f64),
            "a positive number",
        )?;
        if let Some((target, floor)) = adaptive {
            check("threshold.target", target, target >= 1, "at least 1")?;
            let rule = format!(
                "in (0, threshold], and the threshold is {}",
                short(threshold)
            );
            check(
                "threshold.floor",
                floor,
                positive(floor as f64) && floor <= threshold,
                &rule,
            )?;
        }
        match &self.schedule {
            // Worded for every front end (the CLI names its flags in its own, earlier check).
            Some(_) if !self.method.is_mods() => Err(Error::invalid(format!(
                "a schedule needs method mods or modsnet, not {}",
                self.method
            ))),
            None if self.method.is_mods() => Err(Error::invalid(format!(
                "method {} needs a schedule",
                self.method
            ))),
            Some(schedule) => schedule.validate(),
            None => Ok(()),
        }
    }
}

/// A number for a message: at most four decimals, trailing zeros dropped (16/3 → 5.3333).
fn short(x: f32) -> String {
    let text = format!("{x:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Wall-clock milliseconds per stage of one image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureTimes {
    /// Reading and decoding the file.
    pub load: f64,
    /// The scale space (and, on CUDA, its upload).
    pub pyramid: f64,
    /// The Hessian detector.
    pub detect: f64,
    /// The shape stage.
    pub shape: f64,
    /// The orientation stage.
    pub orient: f64,
    /// The description stage.
    pub describe: f64,
}

/// The described features of one image.
#[derive(Clone, Debug, Default)]
pub struct ImageFeatures {
    /// The image's width in pixels.
    pub width: usize,
    /// The image's height in pixels.
    pub height: usize,
    /// Detections before the shape stage.
    pub detections: usize,
    /// Regions kept by the shape stage (before orientation may split or drop them).
    pub shaped: usize,
    /// The features and their descriptors.
    pub described: Described,
    /// How long each stage took.
    pub times: FeatureTimes,
}

pub(crate) fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Runs detection, shape, orientation and description on one image with `networks` (loaded for
/// `config`, on their device).
pub(crate) fn extract_features(
    image: &GrayImage,
    config: &Config,
    networks: &Networks,
) -> Result<ImageFeatures> {
    let descriptors = [config.descriptor];
    let mut each =
        extract_features_each(image, config, StepDetector::Hessian, &descriptors, networks)?;
    Ok(each.remove(0))
}

/// [`extract_features`] with `detector` and for several descriptors at once (MODS's steps with
/// RootSIFT and HalfRootSIFT): the scale space, the regions and their shapes are computed once,
/// the orientation and the description once per descriptor. One result per descriptor, in
/// order; each equals what a run for that descriptor alone gives. The shared stages' times
/// (pyramid, detection, shape) are reported with the first descriptor's features.
pub(crate) fn extract_features_each(
    image: &GrayImage,
    config: &Config,
    detector: StepDetector,
    descriptors: &[DescriptorKind],
    networks: &Networks,
) -> Result<Vec<ImageFeatures>> {
    let mut shared = FeatureTimes::default();
    let t = Instant::now();
    let space = ScaleSpace::build(image);
    let prepared = networks.prepare(&space)?;
    shared.pyramid = ms(t);
    let (detections, shaped) = match detector {
        StepDetector::Hessian => hessian_frames(&prepared, config, networks, &mut shared)?,
        StepDetector::Mser => mser_frames(image, &prepared, &mut shared),
    };

    let shaped_count = shaped.len();
    let mut out = Vec::with_capacity(descriptors.len());
    // The last descriptor takes the shaped frames; the others orient a copy. The settings are
    // copied only for a descriptor other than the configured one (the one-descriptor run of
    // every plain extraction copies nothing).
    let mut shaped = shaped;
    for (i, &descriptor) in descriptors.iter().enumerate() {
        let mut times = if i == 0 {
            shared.clone()
        } else {
            FeatureTimes::default()
        };
        let described_config = if descriptor == config.descriptor {
            Cow::Borrowed(config)
        } else {
            let mut c = config.clone();
            c.descriptor = descriptor;
            Cow::Owned(c)
        };
        let frames = if i + 1 == descriptors.len() {
            std::mem::take(&mut shaped)
        } else {
            shaped.clone()
        };
        let t = Instant::now();
        let oriented = orient_stage(&prepared, frames, &described_config, networks)?;
        times.orient = ms(t);

        let t = Instant::now();
        let described = describe_stage(&prepared, &oriented, &described_config, networks)?;
        times.describe = ms(t);
        out.push(ImageFeatures {
            width: image.width(),
            height: image.height(),
            detections,
            shaped: shaped_count,
            described,
            times,
        });
    }
    Ok(out)
}

/// Hessian detections and the shape stage: their number and the shaped frames.
fn hessian_frames(
    prepared: &PreparedImage,
    config: &Config,
    networks: &Networks,
    times: &mut FeatureTimes,
) -> Result<(usize, Vec<Feature>)> {
    let t = Instant::now();
    let detections = detect(prepared.space, &config.threshold);
    times.detect = ms(t);

    let t = Instant::now();
    let shaped = shape_stage(prepared, &detections, config, networks)?;
    times.shape = ms(t);
    Ok((detections.len(), shaped))
}

/// MSER regions (dark and bright, OpenCV's parameters), framed by their second moments instead
/// of a shape stage; frames more elongated than 6:1 or touching the border are dropped. The
/// number of regions and the frames kept.
fn mser_frames(
    image: &GrayImage,
    prepared: &PreparedImage,
    times: &mut FeatureTimes,
) -> (usize, Vec<Feature>) {
    let t = Instant::now();
    let regions = mser::detect(image, &MserParams::default());
    times.detect = ms(t);
    let (w, h) = (image.width(), image.height());
    // Patches come from the scale space: an image too small to have one gets no features.
    let framed: Vec<Feature> = regions
        .iter()
        .filter(|_| !prepared.space.octaves.is_empty())
        .filter_map(|r| keep_if_valid(r.feature(), w, h))
        .collect();
    (regions.len(), framed)
}

/// Detection and shape of one image only: the number of detections and the shaped regions
/// (upright frames), as `wbs detect` writes them.
pub(crate) fn shaped_features(
    image: &GrayImage,
    config: &Config,
    networks: &Networks,
) -> Result<(usize, Vec<Feature>)> {
    let space = ScaleSpace::build(image);
    let prepared = networks.prepare(&space)?;
    let detections = detect(&space, &config.threshold);
    let shaped = shape_stage(&prepared, &detections, config, networks)?;
    Ok((detections.len(), shaped))
}

fn lafs_of(features: &[Feature]) -> Vec<Laf> {
    features.iter().map(|f| f.laf).collect()
}

/// The shape stage: upright affine frames, elongated and border-touching ones dropped.
pub fn shape_stage(
    image: &PreparedImage,
    detections: &[Detection],
    config: &Config,
    networks: &Networks,
) -> Result<Vec<Feature>> {
    let space = image.space;
    match config.shape {
        ShapeMethod::None | ShapeMethod::Baumberg => Ok(shape_classical(
            space,
            detections,
            config.shape,
            config.shape_failures,
        )),
        ShapeMethod::Affnet => {
            let circles = turned_circles(detections, config.affnet_turns);
            let raw = networks.run(NetworkKind::AffNet, image, &circles)?;
            let raw: Vec<[f32; 3]> = raw.chunks_exact(3).map(|r| [r[0], r[1], r[2]]).collect();
            let (w, h) = (space.input.width(), space.input.height());
            Ok(shape_from_affnet_outputs(
                detections,
                &raw,
                config.affnet_turns,
                w,
                h,
            ))
        }
    }
}

/// The orientation stage: each frame rotated by its orientation(s).
pub fn orient_stage(
    image: &PreparedImage,
    features: Vec<Feature>,
    config: &Config,
    networks: &Networks,
) -> Result<Vec<Feature>> {
    match config.orientation {
        OrientationMethod::Upright => Ok(features),
        OrientationMethod::Histogram => Ok(orient_by_histogram(
            image.space,
            &features,
            config.descriptor.wants_half_orientation(),
        )),
        OrientationMethod::Orinet => {
            let raw = networks.run(NetworkKind::OriNet, image, &lafs_of(&features))?;
            let raw: Vec<[f32; 2]> = raw.chunks_exact(2).map(|r| [r[0], r[1]]).collect();
            Ok(orient_from_orinet_outputs(&features, &raw))
        }
    }
}

/// The description stage.
pub fn describe_stage(
    image: &PreparedImage,
    features: &[Feature],
    config: &Config,
    networks: &Networks,
) -> Result<Described> {
    match config.descriptor.sift_variant() {
        Some(variant) => Ok(describe_sift(image.space, features, variant)),
        None => Ok(Described {
            features: features.to_vec(),
            descriptors: networks.run(NetworkKind::HardNet, image, &lafs_of(features))?,
            dimension: HARDNET_DIM,
        }),
    }
}

/// The outcome of matching two images.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MatchReport {
    /// At least `min_inliers` inliers (and the ground-truth check passed, when one was given).
    pub registered: bool,
    /// Why the verdict is what it is, in words.
    pub verdict: String,
    /// Correspondences consistent with the model.
    pub inliers: usize,
    /// Correspondences that passed the ratio test and the duplicate filter.
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
    /// The verified model: "homography" or "fundamental".
    pub geometry: Geometry,
    /// The 3×3 model (row-major), or null when none was found.
    pub model: Option<[[f64; 3]; 3]>,
    /// Every inlier as [x1, y1, x2, y2].
    pub inlier_matches: Vec<[f64; 4]>,
    /// Every tentative correspondence as [x1, y1, x2, y2, ratio], when asked for
    /// (`wbs match --tentatives`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tentative_matches: Option<Vec<[f64; 5]>>,
    /// Milliseconds per stage ("load", "pyramid", "detect", "shape", "orient", "describe": the
    /// stage's wall time over both images, which run in parallel on the CPU and one after the
    /// other on CUDA; "match", "verify", "total"; "models" for the loading in `wbs match`).
    pub timings_ms: BTreeMap<String, f64>,
    /// Samples LO-RANSAC drew.
    pub ransac_iterations: usize,
    /// The protocol's verdict against ground truth, when one was given (`--ground-truth`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ground_truth: Option<crate::protocol::Judgement>,
    /// The device that ran the networks and the search: "cpu" or "cuda".
    pub device: DeviceKind,
    /// Why `--device auto` chose this device (e.g. "no CUDA: no NVIDIA driver").
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device_note: Option<String>,
    /// The image files (empty for images matched from memory).
    pub images: [String; 2],
    /// What each step of a MODS schedule did (`--method mods`/`modsnet`), else absent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mods: Option<ModsReport>,
    /// Every setting used.
    pub settings: Config,
    /// The weights file of every network used: path, SHA-256 and how it was found (empty for
    /// the classical stages, and for networks given in memory).
    #[serde(default)]
    pub weights: Vec<WeightsFile>,
    /// The wbs version that produced the report.
    pub version: String,
    /// The git commit that wbs was built from ("unknown" outside a git checkout).
    #[serde(default)]
    pub commit: String,
    /// Everything needed to draw the result; not serialised.
    #[serde(skip)]
    pub details: Option<Box<MatchDetails>>,
}

/// The features and correspondences behind a report (for drawing).
#[derive(Clone, Debug, Default)]
pub struct MatchDetails {
    /// Image 1's features.
    pub features1: Vec<Feature>,
    /// Image 2's features.
    pub features2: Vec<Feature>,
    /// Tentative correspondences (indices into both feature lists).
    pub tentatives: Vec<Tentative>,
    /// Indices into `tentatives`.
    pub inliers: Vec<usize>,
}

/// Matches two sets of described features: tentatives (on the networks' device), duplicates
/// removed, verification, verdict.
pub(crate) fn match_features(
    f1: &ImageFeatures,
    f2: &ImageFeatures,
    config: &Config,
    networks: &Networks,
) -> Result<MatchReport> {
    let (d1, d2) = (&f1.described, &f2.described);
    let t = Instant::now();
    let tentatives = if d1.is_empty() || d2.is_empty() {
        Vec::new()
    } else {
        let raw = networks.ratio_matches(d1, d2, config.ratio)?;
        remove_duplicates(
            &raw,
            &centres(&d1.features),
            &centres(&d2.features),
            config.duplicate_radius,
        )
    };
    let match_ms = ms(t);
    let pooled = Pooled {
        features: [&d1.features, &d2.features],
        image_sizes: [[f1.width, f1.height], [f2.width, f2.height]],
        detections: [f1.detections, f2.detections],
        shaped: [f1.shaped, f2.shaped],
    };
    let mut report = verify_tentatives(&pooled, tentatives, config, networks);
    report.timings_ms.insert("match".to_string(), match_ms);
    Ok(report)
}

/// The centres of features' frames.
pub(crate) fn centres(features: &[Feature]) -> Vec<[f32; 2]> {
    features.iter().map(|f| f.laf.c).collect()
}

/// Both images' features as verification sees them, with the counts the report gives.
pub(crate) struct Pooled<'a> {
    /// Image 1's and image 2's features.
    pub features: [&'a [Feature]; 2],
    /// [width, height] of both images.
    pub image_sizes: [[usize; 2]; 2],
    /// Detections per image.
    pub detections: [usize; 2],
    /// Shaped regions per image.
    pub shaped: [usize; 2],
}

/// Verification of `tentatives` (indices into the pooled features), the LAF check when
/// `config.laf_check` asks for it, and the verdict. The report's times hold "verify".
pub(crate) fn verify_tentatives(
    pooled: &Pooled,
    tentatives: Vec<Tentative>,
    config: &Config,
    networks: &Networks,
) -> MatchReport {
    let [features1, features2] = pooled.features;
    let mut timings = BTreeMap::new();
    let t = Instant::now();
    let pts1: Vec<[f64; 2]> = tentatives
        .iter()
        .map(|m| point(features1[m.query].laf.c))
        .collect();
    let pts2: Vec<[f64; 2]> = tentatives
        .iter()
        .map(|m| point(features2[m.train].laf.c))
        .collect();
    let verification = geometry::verify(&pts1, &pts2, &config.ransac, config.ransac_method);
    let (model, mut inlier_indices, iterations) = match &verification {
        Some(v) => (Some(v.model), v.inliers.clone(), v.iterations),
        None => (None, Vec::new(), 0),
    };
    if let (Some(check), Some(m)) = (&config.laf_check, &model) {
        let pairs: Vec<(Laf, Laf)> = tentatives
            .iter()
            .map(|t| (features1[t.query].laf, features2[t.train].laf))
            .collect();
        inlier_indices = check.survivors(
            config.ransac.kind,
            m,
            config.ransac.threshold_px,
            &pairs,
            &inlier_indices,
            config.descriptor.wants_half_orientation(),
        );
    }
    timings.insert("verify".to_string(), ms(t));
    let model = model.as_ref().map(matrix_rows);
    let inlier_matches: Vec<[f64; 4]> = inlier_indices
        .iter()
        .map(|&i| [pts1[i][0], pts1[i][1], pts2[i][0], pts2[i][1]])
        .collect();
    let inliers = inlier_matches.len();
    let minimal = match config.ransac.kind {
        Geometry::Homography => 4,
        Geometry::Fundamental => 7,
    };
    let (registered, verdict) = if features1.is_empty() || features2.is_empty() {
        let which = if features1.is_empty() { 1 } else { 2 };
        let threshold = match config.threshold {
            Threshold::Fixed { threshold } => threshold,
            Threshold::Adaptive { floor, .. } => floor,
        };
        (
            false,
            format!(
                "no features in image {which}: no Hessian response reaches the threshold {} \
                 (a uniform image, or a threshold too high: the default is 16/3)",
                short(threshold)
            ),
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
    MatchReport {
        registered,
        verdict,
        inliers,
        tentatives: tentatives.len(),
        features: [features1.len(), features2.len()],
        detections: pooled.detections,
        shaped: pooled.shaped,
        image_sizes: pooled.image_sizes,
        geometry: config.ransac.kind,
        model,
        inlier_matches,
        tentative_matches: None,
        timings_ms: timings,
        ransac_iterations: iterations,
        ground_truth: None,
        device: networks.device().kind,
        device_note: networks.device().note.clone(),
        images: [String::new(), String::new()],
        mods: None,
        settings: config.clone(),
        weights: Vec::new(),
        version: crate::provenance::VERSION.into(),
        commit: crate::provenance::COMMIT.into(),
        details: Some(Box::new(MatchDetails {
            features1: features1.to_vec(),
            features2: features2.to_vec(),
            tentatives,
            inliers: inlier_indices,
        })),
    }
}

impl MatchReport {
    /// Applies the protocol's ground-truth check: the verdict becomes the protocol's.
    pub fn judge_against(&mut self, truth: &crate::protocol::GroundTruth) {
        let judgement = crate::protocol::judge(
            &self.inlier_matches,
            self.model.as_ref().map(|m| (self.geometry, m)),
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
