//! MODS: matching on demand with affine view synthesis (reference §4; Mishkin, Matas, Perdoch,
//! CVIU 2015), run by [`crate::matcher::Matcher`] when the settings hold a
//! [`Schedule`](crate::schedule::Schedule) (`--method mods`/`modsnet`).
//!
//! For each step of the schedule, the views it names are synthesised for both images (`views`),
//! each view goes through the normal feature stages (detect, shape, orient, describe; networks on
//! the configured device) and its regions are mapped back to the image. Views are made once per
//! image and reused by later steps; an image longer than the schedule's `view_max_side` has its
//! views made from a copy shrunk to it (the image itself keeps its size). The regions of all views made so far are pooled per
//! descriptor and matched again: the 2-NN ratio when each image has one view, FGINN otherwise;
//! then the duplicate filter, LO-RANSAC and the LAF check. The first step that registers the pair
//! ends the run. Views run in parallel in groups of rayon's thread count, so at most that many
//! scale spaces exist at once; with `--device cuda` too (their network passes take turns on the
//! device, `Networks` sees to it), since most of a view's work is on the CPU.
//!
//! Views can also outlive a pair: given a [`ViewStore`] per image, a pair takes the views an
//! earlier pair made of the same image (with the same settings) instead of making them again,
//! and leaves its own there for later pairs (`wbs eval` keeps one per image that several pairs
//! name, as OxAff's `img1`). Views are deterministic, so the results are the same either way.

pub mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use rayon::prelude::*;

use crate::describe::{Described, DescriptorKind};
use crate::detect::Threshold;
use crate::feature::Feature;
use crate::image::GrayImage;
use crate::matching::{fginn, remove_duplicates, FginnMatcher, Tentative};
use crate::networks::Networks;
use crate::pipeline::{
    centres, extract_features_each, ms, verify_tentatives, Config, MatchReport, Pooled,
};
use crate::schedule::{ModsReport, Schedule, Step, StepDetector, StepReport, ViewSpec};
use crate::shape::ShapeMethod;
use crate::{Error, Result};

/// One view's regions, mapped back into the image.
struct ViewFeatures {
    detector: StepDetector,
    descriptor: DescriptorKind,
    spec: ViewSpec,
    init_sigma: f32,
    shape: ShapeMethod,
    detections: usize,
    shaped: usize,
    described: Described,
}

impl ViewFeatures {
    /// Whether this is `job`'s view described with `descriptor`.
    fn is(&self, job: &Job, descriptor: DescriptorKind) -> bool {
        self.key() == job.key(descriptor)
    }

    fn key(&self) -> ViewKey {
        (
            self.detector,
            self.descriptor,
            self.spec,
            self.init_sigma,
            self.shape,
        )
    }
}

/// The views of one image kept beyond one pair: a pair that names the image takes from here the
/// views an earlier pair made, instead of making them again, and leaves its new ones
/// ([`Matcher::match_images_with_views`](crate::Matcher::match_images_with_views)). A store
/// belongs to one image and one matcher's settings: the first pair that uses it binds it to
/// them, and a pair with another image or other settings is refused. Its memory is that of the
/// views' regions and descriptors; drop it when no pair to come names the image.
#[derive(Default)]
pub struct ViewStore {
    /// A fingerprint of the image's pixels and the settings, set by the first pair.
    owner: OnceLock<u64>,
    views: Mutex<Vec<Arc<ViewFeatures>>>,
}

impl ViewStore {
    /// An empty store.
    pub fn new() -> ViewStore {
        ViewStore::default()
    }

    /// How many views the store holds (one per view and descriptor).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store holds no views.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Binds the store to `fingerprint` (its first use) or checks that it is bound to it.
    fn bind(&self, fingerprint: u64) -> Result<()> {
        if *self.owner.get_or_init(|| fingerprint) == fingerprint {
            Ok(())
        } else {
            Err(Error::invalid(
                "a ViewStore holds the views of one image with one matcher's settings, \
                 and this one was filled for another image or other settings",
            ))
        }
    }

    /// `job`'s view described with `descriptor`, if a pair made it.
    fn find(&self, job: &Job, descriptor: DescriptorKind) -> Option<Arc<ViewFeatures>> {
        self.lock().iter().find(|v| v.is(job, descriptor)).cloned()
    }

    /// Keeps `made` (views another pair made meanwhile are not kept twice).
    fn keep(&self, made: &[Arc<ViewFeatures>]) {
        let mut views = self.lock();
        for view in made {
            if !views.iter().any(|v| v.key() == view.key()) {
                views.push(view.clone());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ViewFeatures>>> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What binds a [`ViewStore`]: the image's size and pixels and the settings (the schedule in
/// them), hashed.
fn fingerprint(image: &GrayImage, config: &Config) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let settings = serde_json::to_string(config).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |word: u64| h = (h ^ word).wrapping_mul(PRIME);
    mix(image.width() as u64);
    mix(image.height() as u64);
    for pixel in image.data() {
        mix(pixel.to_bits() as u64);
    }
    for byte in settings.bytes() {
        mix(byte as u64);
    }
    h
}

/// The views made so far of one image.
struct ImageViews<'a> {
    image: &'a GrayImage,
    /// The zoom of the image itself (tilt 1, scale 1).
    zoom: f32,
    /// The zoom of its synthesised views.
    view_zoom: f32,
    /// The copy views are made from when `view_zoom` shrinks the image (made once).
    shrunk: Option<GrayImage>,
    views: Vec<Arc<ViewFeatures>>,
    /// Where views of other pairs are taken from and this pair's are kept.
    store: Option<&'a ViewStore>,
}

impl<'a> ImageViews<'a> {
    /// No views yet of `image`, which is seen at `zoom` and its views at `view_zoom`.
    fn new(image: &'a GrayImage, zoom: f32, view_zoom: f32) -> ImageViews<'a> {
        ImageViews {
            image,
            zoom,
            view_zoom,
            shrunk: None,
            views: Vec::new(),
            store: None,
        }
    }

    /// Whether `job`'s view was made with `descriptor` already.
    fn has(&self, job: &Job, descriptor: DescriptorKind) -> bool {
        self.views.iter().any(|v| v.is(job, descriptor))
    }

    /// The pooled regions of one detector and descriptor: features, descriptors, views,
    /// detections, shaped.
    fn pool(&self, (detector, descriptor): Pool) -> (Described, usize, usize, usize) {
        let mut out = Described {
            features: Vec::new(),
            descriptors: Vec::new(),
            dimension: descriptor.dimension(),
        };
        let (mut views, mut detections, mut shaped) = (0, 0, 0);
        for v in self
            .views
            .iter()
            .filter(|v| v.detector == detector && v.descriptor == descriptor)
        {
            out.features.extend_from_slice(&v.described.features);
            out.descriptors.extend_from_slice(&v.described.descriptors);
            views += 1;
            detections += v.detections;
            shaped += v.shaped;
        }
        (out, views, detections, shaped)
    }
}

/// The zoom that brings an image's longer side to `upsample_below` (1 when it is already as long,
/// or when upsampling is off), at most 4.
pub fn zoom_for(width: usize, height: usize, upsample_below: usize) -> f32 {
    let side = width.max(height);
    if upsample_below == 0 || side >= upsample_below || side == 0 {
        1.0
    } else {
        (upsample_below as f32 / side as f32).min(4.0)
    }
}

/// The zoom of an image's synthesised views: the image's own `zoom`, or the one that brings its
/// longer side to `view_max_side` where it is longer (0: never shrinks).
pub fn view_zoom_for(width: usize, height: usize, zoom: f32, view_max_side: usize) -> f32 {
    let side = width.max(height) as f32 * zoom;
    if view_max_side == 0 || side <= view_max_side as f32 {
        zoom
    } else {
        zoom * view_max_side as f32 / side
    }
}

/// Regions are pooled, and matched, per detector and descriptor (as in MODS).
type Pool = (StepDetector, DescriptorKind);

/// A job: one view of one image, described with each of `descriptors` (detected once).
struct Job {
    image: usize,
    detector: StepDetector,
    descriptors: Vec<DescriptorKind>,
    spec: ViewSpec,
    init_sigma: f32,
    /// The shape stage of Hessian views (the step's, else the method's).
    shape: ShapeMethod,
}

/// What tells views apart: detector, descriptor, view, anti-aliasing σ constant, shape stage.
type ViewKey = (StepDetector, DescriptorKind, ViewSpec, f32, ShapeMethod);

impl Job {
    fn key(&self, descriptor: DescriptorKind) -> ViewKey {
        (
            self.detector,
            descriptor,
            self.spec,
            self.init_sigma,
            self.shape,
        )
    }
}

/// Runs `schedule` on two images with the stages of `config` (its descriptor and ratio are set per
/// pool by the schedule) until a step registers the pair; the report is that of the last step run,
/// with [`ModsReport`] in `mods`.
/// `stores` keep each image's views beyond this pair (see [`ViewStore`]).
pub(crate) fn match_images(
    image1: &GrayImage,
    image2: &GrayImage,
    config: &Config,
    schedule: &Schedule,
    networks: &Networks,
    stores: [Option<&ViewStore>; 2],
) -> Result<MatchReport> {
    let start = Instant::now();
    let mut images = [image1, image2].map(|image| {
        let zoom = zoom_for(image.width(), image.height(), schedule.upsample_below);
        let view_zoom = view_zoom_for(image.width(), image.height(), zoom, schedule.view_max_side);
        ImageViews::new(image, zoom, view_zoom)
    });
    for (im, store) in images.iter_mut().zip(stores) {
        if let Some(store) = store {
            store.bind(fingerprint(im.image, config))?;
            im.store = Some(store);
        }
    }
    let mut mods = ModsReport {
        schedule: schedule.name.clone(),
        registered_at: None,
        zoom: [images[0].zoom, images[1].zoom],
        view_zoom: [images[0].view_zoom, images[1].view_zoom],
        steps: Vec::new(),
    };
    let mut last: Option<MatchReport> = None;
    let mut pools = PoolMatching::default();
    for (index, step) in schedule.steps.iter().enumerate() {
        pools.add_step(step);
        let mut times = BTreeMap::new();
        let t = Instant::now();
        let made = add_step_views(&mut images, step, config, schedule, networks)?;
        times.insert("views".to_string(), ms(t));

        let t = Instant::now();
        let matched = pools.match_all(&images, schedule, networks)?;
        times.insert("match".to_string(), ms(t));

        let pooled = Pooled {
            features: [&matched.features[0], &matched.features[1]],
            image_sizes: [image1, image2].map(|im| [im.width(), im.height()]),
            detections: matched.detections,
            shaped: matched.shaped,
        };
        let step_config = verify_config(config, schedule, step, &pools);
        let mut report = verify_tentatives(&pooled, matched.tentatives, &step_config, networks);
        report.settings = config.clone();
        let verify_ms = report.timings_ms.get("verify").copied().unwrap_or(0.0);
        times.insert("verify".to_string(), verify_ms);
        let total: f64 = times.values().sum();
        times.insert("total".to_string(), total);
        mods.steps.push(StepReport {
            views: matched.views,
            new_views: made.new_views,
            reused_views: made.reused_views,
            features: report.features,
            tentatives: report.tentatives,
            inliers: report.inliers,
            registered: report.registered,
            timings_ms: times,
        });
        let registered = report.registered;
        last = Some(report);
        if registered {
            mods.registered_at = Some(index);
            break;
        }
    }
    let report = last.expect("a validated schedule has at least one step");
    Ok(finish(report, mods, start))
}

/// The last step's report with the run's totals: stage times summed over the steps, the verdict
/// naming the step (or saying that none registered), and `mods`.
fn finish(mut report: MatchReport, mods: ModsReport, start: Instant) -> MatchReport {
    let sum = |key: &str| {
        mods.steps
            .iter()
            .filter_map(|s| s.timings_ms.get(key))
            .sum::<f64>()
    };
    for key in ["views", "match", "verify"] {
        report.timings_ms.insert(key.into(), sum(key));
    }
    report.timings_ms.insert("total".into(), ms(start));
    report.verdict = match mods.registered_at {
        None => format!(
            "{} after all {} steps of schedule {}",
            report.verdict,
            mods.steps.len(),
            mods.schedule
        ),
        Some(step) => format!(
            "{} at step {step} of schedule {}",
            report.verdict, mods.schedule
        ),
    };
    report.mods = Some(mods);
    report
}

/// How many views each image gained in a step, and how many of those came from its store.
struct StepViews {
    new_views: [usize; 2],
    reused_views: [usize; 2],
}

/// Adds the views `step` needs that the images do not have yet: taken from an image's store
/// where an earlier pair made them, else made here, in parallel groups of rayon's thread count.
/// Each image's views are appended in the jobs' order, made or taken, so that its pools are the
/// same whoever made their views.
fn add_step_views(
    images: &mut [ImageViews; 2],
    step: &Step,
    config: &Config,
    schedule: &Schedule,
    networks: &Networks,
) -> Result<StepViews> {
    let mut jobs: Vec<(Job, Vec<Arc<ViewFeatures>>)> = Vec::new();
    for (i, im) in images.iter().enumerate() {
        for spec in step.views() {
            let job = Job {
                image: i,
                detector: step.detector,
                descriptors: Vec::new(),
                spec,
                init_sigma: step.init_sigma,
                shape: step.shape.unwrap_or(config.shape),
            };
            let (mut taken, mut descriptors) = (Vec::new(), Vec::new());
            for d in step.descriptors.iter().map(|d| d.descriptor) {
                if im.has(&job, d) {
                    continue;
                }
                match im.store.and_then(|store| store.find(&job, d)) {
                    Some(view) => taken.push(view),
                    None => descriptors.push(d),
                }
            }
            if !taken.is_empty() || !descriptors.is_empty() {
                jobs.push((Job { descriptors, ..job }, taken));
            }
        }
    }
    // A large image's views come from a shrunk copy, made when its first view is due.
    for (job, _) in &jobs {
        let im = &mut images[job.image];
        if im.shrunk.is_none()
            && im.view_zoom < 1.0
            && !job.spec.is_image_itself()
            && !job.descriptors.is_empty()
        {
            im.shrunk = Some(views::shrink(im.image, im.view_zoom));
        }
    }
    // On every device: a view's CPU stages (synthesis, detection, Baumberg, SIFT) run in
    // parallel with the other views'; network passes and searches on a GPU take turns.
    let to_make: Vec<usize> = (0..jobs.len())
        .filter(|&j| !jobs[j].0.descriptors.is_empty())
        .collect();
    let mut made: Vec<Vec<Arc<ViewFeatures>>> = vec![Vec::new(); jobs.len()];
    let group = rayon::current_num_threads().max(1);
    for chunk in to_make.chunks(group) {
        let views: Vec<Result<Vec<ViewFeatures>>> = chunk
            .par_iter()
            .map(|&j| {
                let job = &jobs[j].0;
                let im = &images[job.image];
                let config = view_config(config, schedule, job);
                make_view(im, job, &config, networks)
            })
            .collect();
        for (&j, views) in chunk.iter().zip(views) {
            made[j] = views?.into_iter().map(Arc::new).collect();
        }
    }
    let mut counts = StepViews {
        new_views: [0; 2],
        reused_views: [0; 2],
    };
    for ((job, taken), made) in jobs.iter().zip(made) {
        let im = &mut images[job.image];
        if let Some(store) = im.store {
            store.keep(&made);
        }
        counts.new_views[job.image] += taken.len() + made.len();
        counts.reused_views[job.image] += taken.len();
        im.views.extend(taken.iter().cloned());
        im.views.extend(made);
    }
    Ok(counts)
}

/// What a step's matching gives: the pooled features of each image (all pools, one after the
/// other), the tentatives into them after the duplicate filter, and per image the pooled views,
/// detections and shaped regions.
struct StepMatches {
    features: [Vec<Feature>; 2],
    tentatives: Vec<Tentative>,
    views: [usize; 2],
    detections: [usize; 2],
    shaped: [usize; 2],
}

/// The pools matched so far, with what carries over from step to step: each pool's ratio (that of
/// the latest step naming it), one FGINN search per pool extended step by step with the new
/// views' regions, and the raw matches of the last time each pool was matched (a pool no new
/// view joined is not searched again).
#[derive(Default)]
struct PoolMatching {
    pools: Vec<(Pool, f32)>,
    searches: Vec<(Pool, FginnMatcher)>,
    matched: HashMap<Pool, ([usize; 2], f32, Vec<Tentative>)>,
}

impl PoolMatching {
    /// The pools `step` names join (or take its ratio).
    fn add_step(&mut self, step: &Step) {
        for d in &step.descriptors {
            let pool = (step.detector, d.descriptor);
            match self.pools.iter_mut().find(|(p, _)| *p == pool) {
                Some(entry) => entry.1 = d.ratio,
                None => self.pools.push((pool, d.ratio)),
            }
        }
    }

    /// Whether any pool matched so far folds orientations (HalfRootSIFT).
    fn folds_orientations(&self) -> bool {
        self.pools
            .iter()
            .any(|((_, descriptor), _)| descriptor.wants_half_orientation())
    }

    /// Matches every pool (the 2-NN ratio when both images have one view, FGINN otherwise) and
    /// filters duplicates over all of them; all tentatives index one combined list per image.
    fn match_all(
        &mut self,
        images: &[ImageViews; 2],
        schedule: &Schedule,
        networks: &Networks,
    ) -> Result<StepMatches> {
        let mut out = StepMatches {
            features: [Vec::new(), Vec::new()],
            tentatives: Vec::new(),
            views: [0; 2],
            detections: [0; 2],
            shaped: [0; 2],
        };
        for &(pool, ratio) in &self.pools {
            let pools = [0, 1].map(|i| images[i].pool(pool));
            for (i, (_, views, detections, shaped)) in pools.iter().enumerate() {
                out.views[i] += views;
                out.detections[i] += detections;
                out.shaped[i] += shaped;
            }
            let (p1, p2) = (&pools[0].0, &pools[1].0);
            let view_counts = [pools[0].1, pools[1].1];
            let raw = match self.matched.get(&pool) {
                Some((seen, r, raw)) if *seen == view_counts && *r == ratio => raw.clone(),
                _ => {
                    let raw = if p1.is_empty() || p2.is_empty() {
                        Vec::new()
                    } else if view_counts == [1, 1] {
                        networks.ratio_matches(p1, p2, ratio)?
                    } else if networks.searches_on_device() {
                        // A GPU lists each step's neighbours afresh; the walk is the host's.
                        let k = schedule.fginn.neighbours.min(p2.len()).max(1);
                        fginn(
                            &networks.k_nearest(p1, p2, k)?,
                            &centres(&p2.features),
                            ratio,
                            schedule.fginn.contradiction_px,
                        )
                    } else {
                        let search = search_for(&mut self.searches, pool, p1, p2, schedule);
                        search.matches(
                            &p1.descriptors,
                            &p2.descriptors,
                            &centres(&p2.features),
                            ratio,
                            schedule.fginn.contradiction_px,
                        )
                    };
                    self.matched.insert(pool, (view_counts, ratio, raw.clone()));
                    raw
                }
            };
            let (o1, o2) = (out.features[0].len(), out.features[1].len());
            out.tentatives.extend(raw.into_iter().map(|m| Tentative {
                query: m.query + o1,
                train: m.train + o2,
                ratio: m.ratio,
            }));
            out.features[0].extend_from_slice(&p1.features);
            out.features[1].extend_from_slice(&p2.features);
        }
        out.tentatives = remove_duplicates(
            &out.tentatives,
            &centres(&out.features[0]),
            &centres(&out.features[1]),
            schedule.duplicate_radius,
        );
        Ok(out)
    }
}

/// The settings a step's tentatives are verified with: the schedule's LAF check, the step's
/// first descriptor, and HalfRootSIFT's half-turn rule in the LAF check when any pool matched
/// (in this step or an earlier one) folds orientations.
fn verify_config(
    config: &Config,
    schedule: &Schedule,
    step: &Step,
    pools: &PoolMatching,
) -> Config {
    let mut out = config.clone();
    out.laf_check = schedule.laf_check.or(config.laf_check);
    if let Some(d) = step.descriptors.first() {
        out.descriptor = d.descriptor;
    }
    if pools.folds_orientations() {
        out.descriptor = DescriptorKind::Halfrootsift;
    }
    out
}

/// The settings `job`'s view is described with: `config` with the job's shape, and the schedule's
/// `min_regions` turning a fixed Hessian threshold t into the adaptive one (t, floor t/8). The number of regions to reach
/// is `min_regions` for the image itself and shrinks with the view's area (a view squeezed by the
/// tilt t and the scale s has s²/t of the image's area, so it asks for s²/t of `min_regions`; the
/// views of a large image, made from its shrunk copy, ask for their share of the copy's):
/// views of a well-textured image keep the fixed threshold's regions.
fn view_config(config: &Config, schedule: &Schedule, job: &Job) -> Config {
    let mut out = config.clone();
    out.shape = job.shape;
    let spec = job.spec;
    if let (Some(min_regions), Threshold::Fixed { threshold }) =
        (schedule.min_regions, config.threshold)
    {
        let area = (spec.scale * spec.scale / spec.tilt) as f64;
        out.threshold = Threshold::Adaptive {
            threshold,
            target: ((min_regions as f64 * area).round() as usize).max(1),
            floor: threshold / 8.0,
        };
    }
    out
}

/// The FGINN search of `descriptor`'s pools, made for the lowest ratio any step gives it so that
/// it serves every step. A pool is the previous step's plus the new views' regions (views are only
/// ever appended), so the search only needs extending; a pool that does not extend the last one
/// gets a new search.
fn search_for<'a>(
    searches: &'a mut Vec<(Pool, FginnMatcher)>,
    pool: Pool,
    pool1: &Described,
    pool2: &Described,
    schedule: &Schedule,
) -> &'a mut FginnMatcher {
    let fresh = || {
        let ratio = schedule
            .steps
            .iter()
            .filter(|s| s.detector == pool.0)
            .flat_map(|s| &s.descriptors)
            .filter(|d| d.descriptor == pool.1)
            .map(|d| d.ratio)
            .fold(1.0f32, f32::min);
        FginnMatcher::new(pool1.dimension, schedule.fginn.neighbours, ratio)
    };
    let at = match searches.iter().position(|(p, _)| *p == pool) {
        Some(at) => at,
        None => {
            searches.push((pool, fresh()));
            searches.len() - 1
        }
    };
    let search = &mut searches[at].1;
    if search.query_rows() > pool1.len() || search.database_rows() > pool2.len() {
        *search = fresh();
    }
    search
}

/// Synthesises one view, runs the feature stages on it with `config` (made by [`view_config`]
/// for this job) (detection and shape once, orientation
/// and description per descriptor) and maps its regions back: one result per descriptor.
fn make_view(
    im: &ImageViews,
    job: &Job,
    config: &Config,
    networks: &Networks,
) -> Result<Vec<ViewFeatures>> {
    let image = im.image;
    let (spec, sigma) = (job.spec, job.init_sigma);
    // The image itself keeps its size (and `zoom`, which only ever enlarges); other views come
    // from the shrunk copy where there is one.
    let view = if spec.is_image_itself() {
        views::synthesize(image, spec, sigma, im.zoom)
    } else if let Some(shrunk) = &im.shrunk {
        let view = views::synthesize(shrunk, spec, sigma, 1.0);
        views::View {
            to_view: view.to_view.after_scale(im.view_zoom),
            image: view.image,
        }
    } else {
        views::synthesize(image, spec, sigma, im.view_zoom)
    };
    let found = extract_features_each(
        &view.image,
        config,
        job.detector,
        &job.descriptors,
        networks,
    )?;
    let made = job
        .descriptors
        .iter()
        .zip(found)
        .map(|(&descriptor, found)| {
            let kept = views::map_back(
                &found.described.features,
                &view.to_view,
                image.width(),
                image.height(),
            );
            let dim = found.described.dimension;
            let mut described = Described {
                features: Vec::with_capacity(kept.len()),
                descriptors: Vec::with_capacity(kept.len() * dim),
                dimension: dim,
            };
            for (i, f) in kept {
                described.features.push(f);
                described
                    .descriptors
                    .extend_from_slice(&found.described.descriptors[i * dim..(i + 1) * dim]);
            }
            ViewFeatures {
                detector: job.detector,
                descriptor,
                spec: job.spec,
                init_sigma: job.init_sigma,
                shape: job.shape,
                detections: found.detections,
                shaped: found.shaped,
                described,
            }
        });
    Ok(made.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::ResolvedDevice;
    use crate::networks::Models;
    use crate::pipeline::Method;

    /// The feature of `view` nearest the test images' centre (200, 180).
    fn nearest_centre(view: &ViewFeatures) -> Option<&crate::feature::Feature> {
        let from_centre = |f: &&crate::feature::Feature| {
            (f.laf.c[0] - 200.0).powi(2) + (f.laf.c[1] - 180.0).powi(2)
        };
        view.described
            .features
            .iter()
            .min_by(|a, b| from_centre(a).total_cmp(&from_centre(b)))
    }

    /// A job for one view of image 0 with `detector` and `descriptors`, the method's shape.
    fn job_for(
        detector: StepDetector,
        descriptors: Vec<DescriptorKind>,
        spec: ViewSpec,
        config: &Config,
    ) -> Job {
        Job {
            image: 0,
            detector,
            descriptors,
            spec,
            init_sigma: 1.6,
            shape: config.shape,
        }
    }

    /// The blob's σ: big enough that squeezed 4× it is still above the scale space's σ₀ = 1.6.
    const BLOB_SIGMA: f32 = 10.0;

    /// A dark image with one bright Gaussian blob of σ = [`BLOB_SIGMA`] at (200, 180).
    fn blob_image() -> GrayImage {
        GrayImage::from_fn(400, 360, |x, y| {
            let (dx, dy) = (x as f32 - 200.0, y as f32 - 180.0);
            20.0 + 200.0 * (-(dx * dx + dy * dy) / (2.0 * BLOB_SIGMA * BLOB_SIGMA)).exp()
        })
    }

    #[test]
    fn views_of_large_images_are_made_from_a_shrunk_copy() {
        // A 2000×1500 image: views from a 1000-px copy, the image itself at its size.
        assert_eq!(view_zoom_for(2000, 1500, 1.0, 1000), 0.5);
        assert_eq!(view_zoom_for(1500, 2000, 1.0, 1000), 0.5);
        // Not larger than the bound, or no bound: the image's own zoom (upsampled small ones too).
        assert_eq!(view_zoom_for(1000, 750, 1.0, 1000), 1.0);
        assert_eq!(view_zoom_for(2000, 1500, 1.0, 0), 1.0);
        assert_eq!(view_zoom_for(240, 225, 500.0 / 240.0, 1000), 500.0 / 240.0);
    }

    #[test]
    fn a_blob_found_on_a_tilted_rotated_view_maps_back_onto_itself() {
        let networks = Networks::place(Models::none(), &ResolvedDevice::cpu()).unwrap();
        let config = Config::preset(Method::Mods);
        let image = blob_image();
        // The last case is a small image upsampled 2× before the view is made: the regions
        // still come back in the image's own pixels.
        for (spec, zoom) in [
            (
                ViewSpec {
                    tilt: 4.0,
                    phi_deg: 30.0,
                    scale: 1.0,
                },
                1.0,
            ),
            (
                ViewSpec {
                    tilt: 2.0,
                    phi_deg: 120.0,
                    scale: 1.0,
                },
                1.0,
            ),
            (
                ViewSpec {
                    tilt: 2.0,
                    phi_deg: 45.0,
                    scale: 1.0,
                },
                2.0,
            ),
        ] {
            let job = job_for(
                StepDetector::Hessian,
                vec![DescriptorKind::Rootsift],
                spec,
                &config,
            );
            let view = make_view(
                &ImageViews::new(&image, zoom, zoom),
                &job,
                &config,
                &networks,
            )
            .unwrap()
            .remove(0);
            let best = nearest_centre(&view).expect("the blob is found on the view");
            let (cx, cy) = (best.laf.c[0], best.laf.c[1]);
            assert!(
                (cx - 200.0).abs() < 2.0 && (cy - 180.0).abs() < 2.0,
                "{spec:?}: centre ({cx}, {cy})"
            );
            // The view squeezed the round blob 1/t along a turned axis; Baumberg made the view's
            // frame an ellipse that undoes much of it, so mapped back it is rounder than the
            // squeeze, of the blob's scale (σ√2 for a Gaussian blob, times mrSize). A frame mapped
            // back with the wrong rotation or without the tilt would be at least t elongated.
            // Measured: Baumberg leaves about √t (1.38 at t = 2, 1.79 at t = 4), not 1.
            let elongation = best.laf.elongation();
            assert!(
                elongation < 0.75 * spec.tilt,
                "{spec:?} zoom {zoom}: elongation {elongation}, {:?}",
                best.laf
            );
            let radius = best.laf.scale();
            assert!(
                radius > 0.6 * BLOB_SIGMA * crate::laf::MR_SIZE
                    && radius < 2.2 * BLOB_SIGMA * crate::laf::MR_SIZE,
                "{spec:?}: radius {radius}"
            );
        }
    }

    #[test]
    fn a_view_described_twice_equals_two_views_described_once() {
        // One detection for RootSIFT and HalfRootSIFT must give each exactly what a view made
        // for that descriptor alone gives (features, frames, descriptors), for both detectors.
        let networks = Networks::place(Models::none(), &ResolvedDevice::cpu()).unwrap();
        let config = Config::preset(Method::Mods);
        let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/img1.png");
        let image = crate::image::load_gray(&sample, &Default::default()).unwrap();
        let spec = ViewSpec {
            tilt: 2.0,
            phi_deg: 30.0,
            scale: 1.0,
        };
        for detector in [StepDetector::Hessian, StepDetector::Mser] {
            let both = [DescriptorKind::Rootsift, DescriptorKind::Halfrootsift];
            let job = |descriptors| job_for(detector, descriptors, spec, &config);
            let together = make_view(
                &ImageViews::new(&image, 1.0, 1.0),
                &job(both.to_vec()),
                &config,
                &networks,
            )
            .unwrap();
            assert_eq!(together.len(), 2);
            for (view, descriptor) in together.iter().zip(both) {
                let alone = make_view(
                    &ImageViews::new(&image, 1.0, 1.0),
                    &job(vec![descriptor]),
                    &config,
                    &networks,
                )
                .unwrap()
                .remove(0);
                assert_eq!(view.descriptor, descriptor);
                assert!(
                    !alone.described.features.is_empty(),
                    "{detector:?}: no features"
                );
                assert_eq!(view.described.features, alone.described.features);
                assert_eq!(view.described.descriptors, alone.described.descriptors);
                assert_eq!(view.described.dimension, descriptor.dimension());
                assert_eq!(
                    (view.detections, view.shaped),
                    (alone.detections, alone.shaped)
                );
            }
            // HalfRootSIFT's frames come from the folded histogram: not the same set.
            assert_ne!(
                together[0].described.features,
                together[1].described.features
            );
        }
    }

    #[test]
    fn a_step_shape_overrides_the_methods() {
        // The sample pair through one tilt-1 step: with the step's shape `none` every region is
        // a circle (before orientation, which only turns it); with the method's (Baumberg) some
        // are ellipses. A step asking for AffNet makes the settings load it.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
        let load = |name: &str| crate::image::load_gray(&root.join(name), &Default::default());
        let (image1, image2) = (load("img1.png").unwrap(), load("img2.png").unwrap());
        let networks = Networks::place(Models::none(), &ResolvedDevice::cpu()).unwrap();
        let config = Config::preset(Method::Mods);
        let most_elongated = |shape: Option<ShapeMethod>| {
            let mut schedule = Schedule::cviu();
            schedule.steps.truncate(1);
            schedule.steps[0].shape = shape;
            let report = match_images(
                &image1,
                &image2,
                &config,
                &schedule,
                &networks,
                [None, None],
            )
            .unwrap();
            let details = report.details.expect("details");
            assert!(details.features1.len() > 100);
            details
                .features1
                .iter()
                .map(|f| f.laf.elongation())
                .fold(1.0f32, f32::max)
        };
        assert!(most_elongated(Some(ShapeMethod::None)) < 1.001);
        assert!(most_elongated(None) > 1.5);

        let mut with_affnet = config.clone();
        assert!(with_affnet.networks().is_empty());
        let mut schedule = Schedule::cviu();
        schedule.steps[2].shape = Some(ShapeMethod::Affnet);
        with_affnet.schedule = Some(schedule);
        let wanted: Vec<_> = with_affnet.networks().into_iter().map(|(k, _)| k).collect();
        assert_eq!(wanted, vec![crate::nn::NetworkKind::AffNet]);
    }

    #[test]
    fn min_regions_keeps_a_low_contrast_image_described() {
        // The sample image at 12 % of its contrast: the fixed threshold finds few regions; with
        // the schedule's `min_regions` the weaker ones fill up to it, and a normal image keeps
        // every strong region (none are dropped to meet the number).
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
        let load = |name: &str| crate::image::load_gray(&root.join(name), &Default::default());
        let (image1, image2) = (load("img1.png").unwrap(), load("img2.png").unwrap());
        let mut faint = image1.clone();
        faint
            .data_mut()
            .iter_mut()
            .for_each(|v| *v = 128.0 + 0.12 * (*v - 128.0));
        let networks = Networks::place(Models::none(), &ResolvedDevice::cpu()).unwrap();
        let config = Config::preset(Method::Mods);
        assert!(matches!(config.threshold, Threshold::Fixed { .. }));
        let detections = |image: &GrayImage, min_regions| {
            let mut schedule = Schedule::wbs();
            schedule.steps.truncate(1);
            schedule.min_regions = min_regions;
            let report =
                match_images(image, &image2, &config, &schedule, &networks, [None, None]).unwrap();
            report.detections[0]
        };
        let (fixed, filled) = (detections(&faint, None), detections(&faint, Some(1000)));
        assert!(fixed < 400, "{fixed} detections at the fixed threshold");
        assert_eq!(filled, 1000);
        let (fixed, filled) = (detections(&image1, None), detections(&image1, Some(1000)));
        assert!(fixed > 1000, "{fixed}");
        assert!(filled >= fixed, "{filled} < {fixed}");

        // The settings' own adaptive threshold is left alone.
        let mut adaptive = config.clone();
        adaptive.threshold = Threshold::adaptive(3000);
        let rootsift = || vec![DescriptorKind::Rootsift];
        let image_itself = ViewSpec {
            tilt: 1.0,
            phi_deg: 0.0,
            scale: 1.0,
        };
        let image_itself = job_for(StepDetector::Hessian, rootsift(), image_itself, &config);
        let wbs = Schedule::wbs();
        let kept = view_config(&adaptive, &wbs, &image_itself).threshold;
        assert_eq!(kept, adaptive.threshold);
        let cviu = Schedule::cviu();
        assert_eq!(
            view_config(&config, &cviu, &image_itself).threshold,
            config.threshold
        );
        // A view asks for its share of the image's area.
        let tilted = ViewSpec {
            tilt: 4.0,
            phi_deg: 45.0,
            scale: 0.5,
        };
        let mut tilted = job_for(StepDetector::Hessian, rootsift(), tilted, &config);
        tilted.shape = ShapeMethod::None;
        let Threshold::Adaptive { target, floor, .. } =
            view_config(&config, &wbs, &tilted).threshold
        else {
            panic!("adaptive expected");
        };
        assert_eq!(view_config(&config, &wbs, &tilted).shape, ShapeMethod::None);
        assert_eq!(
            target,
            (crate::schedule::WBS_MIN_REGIONS as f64 / 16.0).round() as usize
        );
        assert!((floor - crate::detect::DEFAULT_THRESHOLD / 8.0).abs() < 1e-6);
    }

    #[test]
    fn an_mser_region_found_on_shrunk_and_tilted_views_maps_back_onto_itself() {
        let networks = Networks::place(Models::none(), &ResolvedDevice::cpu()).unwrap();
        let config = Config::preset(Method::Mods);
        // A bright filled ellipse, semi-axes 40 and 25 along x and y, at (200, 180).
        let (a, b) = (40.0f32, 25.0f32);
        let image = GrayImage::from_fn(400, 360, |x, y| {
            let (dx, dy) = ((x as f32 - 200.0) / a, (y as f32 - 180.0) / b);
            if dx * dx + dy * dy <= 1.0 {
                210.0
            } else {
                30.0
            }
        });
        for spec in [
            ViewSpec {
                tilt: 1.0,
                phi_deg: 0.0,
                scale: 0.25,
            },
            ViewSpec {
                tilt: 3.0,
                phi_deg: 30.0,
                scale: 1.0,
            },
            ViewSpec {
                tilt: 1.0,
                phi_deg: 0.0,
                scale: 0.125,
            },
        ] {
            let job = job_for(
                StepDetector::Mser,
                vec![DescriptorKind::Rootsift],
                spec,
                &config,
            );
            let view = make_view(&ImageViews::new(&image, 1.0, 1.0), &job, &config, &networks)
                .unwrap()
                .remove(0);
            let best =
                nearest_centre(&view).unwrap_or_else(|| panic!("{spec:?}: the ellipse is found"));
            let (cx, cy) = (best.laf.c[0], best.laf.c[1]);
            assert!(
                (cx - 200.0).abs() < 2.0 && (cy - 180.0).abs() < 2.0,
                "{spec:?}: centre ({cx}, {cy})"
            );
            // The frame is mrSize·√C of the ellipse (√C has semi-axes a/2, b/2), whatever the
            // view: the same area and elongation (orientation turns it, not more). On a shrunk
            // view the edge is blurred and the most stable threshold lies inside it: the frame
            // may come out up to 25 % smaller.
            let want = crate::laf::MR_SIZE * (a * b).sqrt() / 2.0;
            let scale = best.laf.scale();
            assert!(
                (scale / want - 1.0).abs() < 0.25,
                "{spec:?}: scale {scale} vs {want}"
            );
            let elongation = best.laf.elongation();
            assert!(
                (elongation / (a / b) - 1.0).abs() < 0.2,
                "{spec:?}: elongation {elongation}"
            );
        }
    }

    #[test]
    fn small_images_are_zoomed_to_the_target_side() {
        assert_eq!(zoom_for(800, 533, 500), 1.0);
        assert!((zoom_for(240, 225, 500) - 500.0 / 240.0).abs() < 1e-6);
        assert_eq!(zoom_for(240, 225, 0), 1.0);
        assert_eq!(zoom_for(50, 40, 500), 4.0);
    }
}
