//! The library's entry point: a [`Matcher`] holds a [`Config`] and the networks it uses, loaded
//! once on the configured device, and matches images, files or features.
//!
//! ```no_run
//! # fn main() -> wbs::Result<()> {
//! use wbs::{Config, Matcher, Method};
//!
//! let matcher = Matcher::new(Config::preset(Method::Hesaffnet))?; // loads AffNet once
//! for (a, b) in [("a1.png", "b1.png"), ("a2.png", "b2.png")] {
//!     let report = matcher.match_files(a.as_ref(), b.as_ref())?;
//!     println!("{}: {} inliers", report.verdict, report.inliers);
//! }
//! # Ok(()) }
//! ```
//!
//! A `Matcher` is `Sync` on the CPU: one instance can serve several threads (the evaluation runs
//! pairs in parallel on one). Features extracted once ([`Matcher::extract_features`]) can be
//! matched against many others ([`Matcher::match_features`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::device::{self, ResolvedDevice};
use crate::feature::Feature;
use crate::image::{load_gray, GrayImage};
use crate::mods::ViewStore;
use crate::networks::{Models, Networks, WeightsFile};
use crate::pipeline::{self, ms, Config, FeatureTimes, ImageFeatures, MatchReport};
use crate::shape::ShapeMethod;
use crate::{Error, Result};

/// Matches images with one configuration; see the [module documentation](self).
pub struct Matcher {
    config: Config,
    networks: Networks,
    /// The files the networks were loaded from (empty for networks given in memory).
    weights: Vec<WeightsFile>,
    /// Milliseconds spent loading the networks in `new`.
    loading_ms: f64,
}

impl Matcher {
    /// Checks `config`, resolves its device and loads the networks it uses (each from
    /// `config.weights` or the usual lookup: `WBS_WEIGHTS`, then the shipped `data/`). Errors
    /// come before any image is read: bad settings, `--device cuda` without a GPU, missing or
    /// malformed weights.
    pub fn new(config: Config) -> Result<Matcher> {
        config.validate()?;
        let device = device::resolve(config.device, true)?;
        let start = Instant::now();
        let (models, weights) = Models::load_with_files(&config.networks())?;
        let mut matcher = Matcher::build(config, models, &device, start)?;
        matcher.weights = weights;
        Ok(matcher)
    }

    /// A matcher with networks already in memory (e.g. AffNet while it trains), placed on the
    /// device `config` asks for. Networks the settings use but `models` lacks are errors when a
    /// stage needs them.
    pub fn with_models(config: Config, models: Models) -> Result<Matcher> {
        config.validate()?;
        let device = device::resolve(config.device, true)?;
        Matcher::build(config, models, &device, Instant::now())
    }

    fn build(
        config: Config,
        models: Models,
        device: &ResolvedDevice,
        start: Instant,
    ) -> Result<Matcher> {
        let networks = Networks::place(models, device)?;
        Ok(Matcher {
            config,
            networks,
            weights: Vec::new(),
            loading_ms: ms(start),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device that runs the networks and the nearest-neighbour search, and why.
    pub fn device(&self) -> &ResolvedDevice {
        self.networks.device()
    }

    /// The networks, in host memory.
    pub fn models(&self) -> &Models {
        self.networks.models()
    }

    /// The weights file of each network, as [`Matcher::new`] found it (path, SHA-256, how it
    /// was found); empty for networks given to [`Matcher::with_models`].
    pub fn weights(&self) -> &[WeightsFile] {
        &self.weights
    }

    /// Milliseconds that loading and placing the networks took in [`Matcher::new`].
    pub fn loading_ms(&self) -> f64 {
        self.loading_ms
    }

    /// Detection, shape, orientation and description of one image. Refused with a MODS
    /// schedule in the settings ([`Matcher::match_images`] makes its regions per pair).
    pub fn extract_features(&self, image: &GrayImage) -> Result<ImageFeatures> {
        self.per_image()?;
        pipeline::extract_features(image, &self.config, &self.networks)
    }

    /// Whether this matcher makes features per image (`Ok`), as every single-view method does;
    /// with a MODS schedule it does not (one-line error): the views and their regions are made
    /// pair by pair, step by step, as matching needs them, so a per-image call would silently be
    /// another method's. The per-image calls below check it; front ends that keep per-image
    /// features (`wbs collection`) check it before any work.
    pub fn per_image(&self) -> Result<()> {
        match &self.config.schedule {
            Some(_) => {
                // The built-in schedules start with the method's single-view pipeline.
                let single = match self.config.shape {
                    ShapeMethod::Affnet => "hesaffnet",
                    _ => "hesaff",
                };
                Err(Error::invalid(format!(
                    "method {} has no per-image features: it makes views and regions pair by \
                     pair, step by step, while matching; match the pair, or take per-image \
                     features from a single-view method such as {single} (the built-in schedules' \
                     first step)",
                    self.config.method
                )))
            }
            None => Ok(()),
        }
    }

    /// Loads one image file (refusing it over `config.max_megapixels` before decoding it) and
    /// extracts its features; `times.load` is the reading and decoding.
    pub fn extract_file(&self, path: &Path) -> Result<ImageFeatures> {
        self.per_image()?;
        let start = Instant::now();
        let image = load_gray(path, &self.config.load_options())?;
        let load = ms(start);
        let mut features = self.extract_features(&image)?;
        features.times.load = load;
        Ok(features)
    }

    /// Whether two images' stages run in parallel on this matcher's device (the CPU) or one
    /// after the other (a GPU).
    pub fn runs_images_in_parallel(&self) -> bool {
        self.networks.runs_images_in_parallel()
    }

    /// Detection and shape only: the number of detections and the shaped regions (upright
    /// frames, before orientation), as `wbs detect` writes them. Refused with a MODS schedule.
    pub fn shaped_features(&self, image: &GrayImage) -> Result<(usize, Vec<Feature>)> {
        self.per_image()?;
        pipeline::shaped_features(image, &self.config, &self.networks)
    }

    /// Tentatives, verification and verdict for two images' features. The report's per-stage
    /// times hold only "match", "verify" and "total". Refused with a MODS schedule (its matching
    /// needs the views, which [`Matcher::match_images`] makes).
    pub fn match_features(&self, f1: &ImageFeatures, f2: &ImageFeatures) -> Result<MatchReport> {
        self.per_image()?;
        let start = Instant::now();
        let mut report = pipeline::match_features(f1, f2, &self.config, &self.networks)?;
        report.weights = self.weights.clone();
        report.timings_ms.insert("total".into(), ms(start));
        Ok(report)
    }

    /// Matches two loaded images. Both images' stages run in parallel where the device allows
    /// (the CPU); the report's time of a stage is its wall time over both images. With a MODS
    /// schedule in the settings, the schedule runs ([`crate::mods`]): the report's `mods` says
    /// what each step did.
    pub fn match_images(&self, image1: &GrayImage, image2: &GrayImage) -> Result<MatchReport> {
        self.match_images_with_views(image1, image2, [None, None])
    }

    /// [`Matcher::match_images`] with a [`ViewStore`] for either image: with a MODS schedule,
    /// the pair takes the synthesised views an earlier pair left in an image's store instead of
    /// making them again, and leaves its own there. The results are those of `match_images`;
    /// only the time differs (the report's `mods.steps[].reused_views` counts the views taken).
    /// A store belongs to one image and this matcher's settings (another is refused). Without a
    /// schedule the stores are not used.
    pub fn match_images_with_views(
        &self,
        image1: &GrayImage,
        image2: &GrayImage,
        stores: [Option<&ViewStore>; 2],
    ) -> Result<MatchReport> {
        let start = Instant::now();
        if let Some(schedule) = &self.config.schedule {
            return crate::mods::match_images(
                image1,
                image2,
                &self.config,
                schedule,
                &self.networks,
                stores,
            );
        }
        let parallel = self.runs_images_in_parallel();
        let (f1, f2) = if parallel {
            rayon::join(
                || self.extract_features(image1),
                || self.extract_features(image2),
            )
        } else {
            (self.extract_features(image1), self.extract_features(image2))
        };
        let (f1, f2) = (f1?, f2?);
        let mut report = pipeline::match_features(&f1, &f2, &self.config, &self.networks)?;
        report.weights = self.weights.clone();
        merge_stage_times(&mut report.timings_ms, &f1.times, &f2.times, parallel);
        report.timings_ms.insert("total".into(), ms(start));
        Ok(report)
    }

    /// Loads two image files (refusing images over `config.max_megapixels` before decoding them)
    /// and matches them; the report names the files.
    pub fn match_files(&self, path1: &Path, path2: &Path) -> Result<MatchReport> {
        self.match_files_with_views(path1, path2, [None, None])
    }

    /// [`Matcher::match_files`] with a [`ViewStore`] for either image, as
    /// [`Matcher::match_images_with_views`].
    pub fn match_files_with_views(
        &self,
        path1: &Path,
        path2: &Path,
        stores: [Option<&ViewStore>; 2],
    ) -> Result<MatchReport> {
        let start = Instant::now();
        let options = self.config.load_options();
        let timed = |path: &Path| {
            let t = Instant::now();
            load_gray(path, &options).map(|image| (image, ms(t)))
        };
        let (a, b) = rayon::join(|| timed(path1), || timed(path2));
        let ((image1, load1), (image2, load2)) = (a?, b?);
        let mut report = self.match_images_with_views(&image1, &image2, stores)?;
        report.timings_ms.insert("load".into(), load1.max(load2));
        report.timings_ms.insert("total".into(), ms(start));
        report.images = [path1.display().to_string(), path2.display().to_string()];
        Ok(report)
    }
}

/// Each feature stage's wall time over both images: the slower image when they ran in parallel,
/// the sum when they ran one after the other.
pub(crate) fn merge_stage_times(
    timings: &mut BTreeMap<String, f64>,
    t1: &FeatureTimes,
    t2: &FeatureTimes,
    parallel: bool,
) {
    for (name, a, b) in [
        ("pyramid", t1.pyramid, t2.pyramid),
        ("detect", t1.detect, t2.detect),
        ("shape", t1.shape, t2.shape),
        ("orient", t1.orient, t2.orient),
        ("describe", t1.describe, t2.describe),
    ] {
        timings.insert(name.into(), if parallel { a.max(b) } else { a + b });
    }
}
