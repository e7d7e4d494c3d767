//! Image collections: features once per image, many pairs matched and verified in parallel with
//! one [`Matcher`], the result written as a COLMAP database ([`colmap`]) that COLMAP's (or
//! pycolmap's, GLOMAP's) mapper reconstructs from.
//!
//! ```no_run
//! # fn main() -> wbs::Result<()> {
//! use wbs::collection::{self, Options, PairSelection};
//! use wbs::geometry::Geometry;
//! use wbs::{Config, Matcher, Method};
//!
//! let mut config = Config::preset(Method::Hesaff);
//! config.set_geometry(Geometry::Fundamental); // a scene, not a plane
//! let matcher = Matcher::new(config)?;
//! let options = Options::new("photos".into(), "sfm".into(), PairSelection::Exhaustive);
//! let summary = collection::run(&matcher, &options, &wbs::eval::Quiet)?;
//! println!("{} pairs registered; database {}", summary.registered, summary.database.display());
//! # Ok(()) }
//! ```
//!
//! The output folder holds `features/` (the [`cache`]: one file per image) and the database
//! (`database.db`, or `database.shard-I-of-N.db` for `--shard I/N`). Images get ids by their
//! place in the sorted list of names (`1..`), so every shard and every resumed run gives an image
//! the same id. Pairs are written in batches, each in one transaction: a run cut short keeps every
//! finished batch, and `resume` matches only the pairs that have no two-view geometry yet. With a
//! shard, only the images of its pairs are read; [`merge`] unions the shards' databases.
//! Unreadable images are skipped with their reason and counted, and so are the pairs they are in.

pub mod cache;
pub mod camera;
pub mod colmap;
pub mod lru;
pub mod pairs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

pub use camera::{CameraMode, CameraSpec, ExifStatus};
pub use colmap::{CameraEntry, Database, ImageEntry, PairMatches};
pub use lru::Lru;
pub use pairs::{list_images, select_pairs, PairSelection};

use crate::device::DeviceKind;
use crate::eval::record::Shard;
use crate::eval::Progress;
use crate::image::load_gray;
use crate::pipeline::{ms, ImageFeatures};
use crate::{Error, Matcher, Result};

/// What to match and where to write it.
#[derive(Clone, Debug)]
pub struct Options {
    /// The folder of images (searched recursively).
    pub images: PathBuf,
    /// The output folder: `features/` and the database.
    pub out: PathBuf,
    /// The database; `None`: `database.db` in `out` (`database.shard-I-of-N.db` for a shard).
    pub database: Option<PathBuf>,
    /// Which pairs.
    pub selection: PairSelection,
    /// Only the pairs whose position in the full list, modulo N, is I−1.
    pub shard: Option<Shard>,
    /// Continue a database this collection's run wrote (the same settings).
    pub resume: bool,
    /// Add the images to a database that lists other images too.
    pub add: bool,
    /// Match at most this many pairs in this run (the rest with `resume`, e.g. within a job's
    /// time limit).
    pub max_pairs: Option<usize>,
    /// How images share cameras ([`camera`]).
    pub camera_mode: CameraMode,
    /// The most images whose features are held in memory at once (the others are read again
    /// from `features/` when a pair needs them); `None`: two batches' worth, 16 per thread.
    pub images_in_memory: Option<usize>,
}

impl Options {
    /// A new database in `out` for `selection` over the images in `images`.
    pub fn new(images: PathBuf, out: PathBuf, selection: PairSelection) -> Options {
        Options {
            images,
            out,
            database: None,
            selection,
            shard: None,
            resume: false,
            add: false,
            max_pairs: None,
            camera_mode: CameraMode::default(),
            images_in_memory: None,
        }
    }

    /// The database file these options write.
    pub fn database_path(&self) -> PathBuf {
        self.database.clone().unwrap_or_else(|| match self.shard {
            Some(s) => self
                .out
                .join(format!("database.shard-{}-of-{}.db", s.index, s.count)),
            None => self.out.join("database.db"),
        })
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// The database written.
    pub database: PathBuf,
    /// Images found in the folder.
    pub images: usize,
    /// Images whose features this run used (read from the cache or extracted).
    pub images_used: usize,
    /// Of those, images whose features came from the cache.
    pub cached: usize,
    /// Times features were read again from the cache for a pair (not held in memory).
    pub reloaded: usize,
    /// Images that could not be used, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Cameras of the images this run used.
    pub cameras: usize,
    /// Of the images this run used, those whose camera has a focal length prior from EXIF.
    pub exif_priors: usize,
    /// Images (of all found) whose EXIF could not be read, with the reason: they get no prior.
    pub exif_unreadable: Vec<(String, String)>,
    /// Pairs of this run's selection (and shard).
    pub pairs: usize,
    /// Of those, pairs already in the database when the run started.
    pub already_done: usize,
    /// Pairs matched and verified by this run.
    pub matched: usize,
    /// Of those, pairs registered (a model with at least `min_inliers` inliers).
    pub registered: usize,
    /// Pairs not matched because an image was skipped.
    pub pairs_skipped: usize,
    /// Pairs left for a later `resume` (`max_pairs`).
    pub left: usize,
    /// Wall time of the feature stage (load, extract or read the cache), ms.
    pub features_ms: f64,
    /// Wall time of matching and verification, ms.
    pub matching_ms: f64,
    /// Wall time of the whole run, ms.
    pub total_ms: f64,
}

/// Pairs matched between two database writes, per thread.
const BATCH_PER_THREAD: usize = 8;

/// The image ids of `names`: the place in the sorted list plus one, unless the database gives
/// the name another id or the id is taken (added to another collection: then ids after the
/// largest).
fn image_ids(names: &[String], listed: &BTreeMap<String, u32>) -> Vec<u32> {
    let taken: BTreeSet<u32> = listed.values().copied().collect();
    let mut ids: Vec<Option<u32>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| match listed.get(name) {
            Some(&id) => Some(id),
            None => Some(i as u32 + 1).filter(|id| !taken.contains(id)),
        })
        .collect();
    let next = ids
        .iter()
        .flatten()
        .chain(&taken)
        .max()
        .map_or(1, |m| m + 1);
    for (id, free) in ids.iter_mut().filter(|id| id.is_none()).zip(next..) {
        *id = Some(free);
    }
    ids.into_iter().flatten().collect()
}

/// Where the features of image `name` are cached.
fn cache_path(out: &Path, name: &str) -> PathBuf {
    out.join("features").join(format!("{name}.safetensors"))
}

/// Opens the database as `options` allow, refusing one this run must not change.
fn open_database(options: &Options, settings: &str, names: &[String]) -> Result<Database> {
    let path = options.database_path();
    if path.exists() && !options.resume && !options.add {
        return Err(Error::invalid(format!(
            "{}: the database exists; --resume continues it, --add adds these images to it \
             (or delete it)",
            path.display()
        )));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let db = Database::open(&path)?;
    let listed = db.images()?;
    let ours: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let other: Vec<&String> = listed
        .keys()
        .filter(|n| !ours.contains(n.as_str()))
        .collect();
    if !other.is_empty() && !options.add {
        return Err(Error::invalid(format!(
            "{}: lists {} image(s) that are not in {} (e.g. {}); give --add to add these images \
             to it",
            path.display(),
            other.len(),
            options.images.display(),
            other[0]
        )));
    }
    match db.setting("settings")? {
        Some(s) if s != settings => {
            return Err(Error::invalid(format!(
                "{}: made with other settings than these; use the same flags to continue it, \
                 or another database",
                path.display()
            )))
        }
        Some(_) => {}
        None => {
            let with_keypoints = db.images_with_keypoints()?;
            if let Some((name, _)) = listed
                .iter()
                .find(|(n, id)| ours.contains(n.as_str()) && with_keypoints.contains(id))
            {
                return Err(Error::invalid(format!(
                    "{}: {name} already has keypoints that wbs did not write; wbs cannot add \
                     matches between features it did not make",
                    path.display()
                )));
            }
            db.set_setting("settings", settings)?;
        }
    }
    let mode = options.camera_mode.name();
    match db.setting("camera_mode")? {
        Some(m) if m != mode => {
            return Err(Error::invalid(format!(
                "{}: made with --camera-mode {m}, not {mode}; use the same mode to continue it, \
                 or another database",
                path.display()
            )))
        }
        Some(_) => {}
        None => db.set_setting("camera_mode", mode)?,
    }
    Ok(db)
}

/// The camera ids of a run, by sharing key: the id the database gives the key, or the id of the
/// first image with the key where free (so that shards and resumed runs agree), or one past the
/// largest.
struct Cameras {
    /// Sharing key → camera id and the first image with the key (whose camera spec is used).
    by_key: BTreeMap<String, (u32, usize)>,
    /// Camera ids taken.
    used: BTreeSet<u32>,
    /// The keys the database knows.
    recorded: BTreeMap<String, u32>,
}

impl Cameras {
    fn new(recorded: BTreeMap<String, u32>, taken: BTreeSet<u32>) -> Cameras {
        Cameras {
            by_key: BTreeMap::new(),
            used: taken,
            recorded,
        }
    }

    /// The camera id of `identity`, given to image `first` (id `wanted`) when new.
    fn assign(&mut self, identity: &str, wanted: u32, first: usize) -> u32 {
        if let Some(&(id, _)) = self.by_key.get(identity) {
            return id;
        }
        let id = match self.recorded.get(identity) {
            Some(&id) => id,
            None if !self.used.contains(&wanted) => wanted,
            None => self.used.last().map_or(1, |m| m + 1),
        };
        self.used.insert(id);
        self.by_key.insert(identity.to_string(), (id, first));
        id
    }

    /// Image `i`'s camera id and the spec its camera is written from.
    fn of<'a>(&self, specs: &'a [Option<CameraSpec>], i: usize) -> (u32, &'a CameraSpec) {
        let spec = specs[i].as_ref().expect("every used image has a camera");
        let (id, first) = self.by_key[&spec.identity];
        let first = specs[first].as_ref().expect("the first image has a camera");
        (id, first)
    }
}

/// `todo` cut into consecutive batches of at most `pairs` pairs and `images` distinct images (a
/// pair always fits an empty batch).
fn batches(todo: &[(usize, usize)], pairs: usize, images: usize) -> Vec<&[(usize, usize)]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut seen = BTreeSet::new();
    for (k, &(i, j)) in todo.iter().enumerate() {
        let new = usize::from(!seen.contains(&i)) + usize::from(i != j && !seen.contains(&j));
        if k > start && (k - start == pairs || seen.len() + new > images) {
            out.push(&todo[start..k]);
            start = k;
            seen.clear();
        }
        seen.insert(i);
        seen.insert(j);
    }
    if start < todo.len() {
        out.push(&todo[start..]);
    }
    out
}

/// Matches the collection `options` describe with `matcher` and writes the database, telling
/// `progress` as it goes (one step per image read and per pair). Errors for unusable options,
/// a database this run must not change, or one that cannot be written; an unreadable image is
/// skipped and counted.
pub fn run(matcher: &Matcher, options: &Options, progress: &dyn Progress) -> Result<Summary> {
    let start = Instant::now();
    let config = matcher.config();
    // A database holds one set of keypoints per image: a MODS method has none.
    matcher
        .per_image()
        .map_err(|e| Error::invalid(format!("wbs collection: {e}")))?;
    let settings = serde_json::to_string(config).unwrap_or_default();
    let key = cache::features_key(config);
    let names = list_images(&options.images)?;
    let all_pairs = select_pairs(&options.selection, &names)?;
    let pairs: Vec<(usize, usize)> = all_pairs
        .iter()
        .enumerate()
        .filter(|(k, _)| options.shard.is_none_or(|s| s.contains(*k)))
        .map(|(_, &p)| p)
        .collect();
    let mut db = open_database(options, &settings, &names)?;
    let listed = db.images()?;
    let ids = image_ids(&names, &listed);
    let with_keypoints = db.images_with_keypoints()?;
    let done = db.verified_pairs()?;
    let mut summary = Summary {
        database: db.path().to_path_buf(),
        images: names.len(),
        pairs: pairs.len(),
        ..Summary::default()
    };

    let (finished, mut todo): (Vec<_>, Vec<_>) = pairs
        .iter()
        .partition(|&&(i, j)| done.contains(&colmap::pair_id(ids[i], ids[j])));
    summary.already_done = finished.len();
    if let Some(max) = options.max_pairs {
        summary.left = todo.len().saturating_sub(max);
        todo.truncate(max);
    }
    // Without a shard every image gets its keypoints; a shard reads only its pairs' images.
    let mut needed: BTreeSet<usize> = todo.iter().flat_map(|&(i, j)| [i, j]).collect();
    let whole = options.shard.is_none();
    needed.extend((0..names.len()).filter(|&i| {
        (whole || pairs.iter().any(|&(a, b)| a == i || b == i)) && !with_keypoints.contains(&ids[i])
    }));

    progress.start(needed.len() + todo.len());
    if summary.already_done > 0 {
        progress.note(&format!(
            "resuming: {} of {} pairs already in {}",
            summary.already_done,
            pairs.len(),
            summary.database.display()
        ));
    }

    // Every image's size and EXIF (headers only), for its camera.
    let t = Instant::now();
    let read_info = |name: &String| camera::read_info(&options.images.join(name));
    let infos: Vec<Result<camera::ImageInfo>> = if matcher.device().kind == DeviceKind::Cpu {
        names.par_iter().map(read_info).collect()
    } else {
        names.iter().map(read_info).collect()
    };
    let mut specs: Vec<Option<CameraSpec>> = Vec::with_capacity(names.len());
    for (name, info) in names.iter().zip(&infos) {
        if let Ok(camera::ImageInfo {
            exif: ExifStatus::Corrupt(reason),
            ..
        }) = info
        {
            progress.note(&format!("{name}: {reason}; no focal length prior"));
            summary.exif_unreadable.push((name.clone(), reason.clone()));
        }
        specs.push(
            info.as_ref()
                .ok()
                .map(|info| camera::camera_spec(options.camera_mode, name, info)),
        );
    }

    // Cameras: their ids are fixed before any image is written (see `Cameras`).
    let mut cameras = Cameras::new(db.camera_keys()?, db.camera_ids()?);
    for (i, spec) in specs.iter().enumerate() {
        if let Some(spec) = spec {
            cameras.assign(&spec.identity, ids[i], i);
        }
    }
    let mut written_cameras = db.camera_ids()?;

    // Features: from the cache, or extracted (and cached). They are written to the database a
    // chunk at a time and then held in a bounded LRU; pairs read the others from the cache again.
    let cached = AtomicUsize::new(0);
    let on_cpu = matcher.device().kind == DeviceKind::Cpu;
    let batch = if on_cpu {
        BATCH_PER_THREAD * rayon::current_num_threads()
    } else {
        BATCH_PER_THREAD
    };
    let capacity = options.images_in_memory.unwrap_or(2 * batch).max(2);
    let mut memory: Lru<usize, ImageFeatures> = Lru::new(capacity);
    let mut load_options = config.load_options();
    load_options.apply_orientation = false; // as COLMAP reads pixels: see `camera`
    let obtain = |i: usize| -> std::result::Result<ImageFeatures, String> {
        let path = cache_path(&options.out, &names[i]);
        if let Some(f) = cache::load(&path, &key) {
            cached.fetch_add(1, Ordering::Relaxed);
            return Ok(f);
        }
        let image_path = options.images.join(&names[i]);
        let features = load_gray(&image_path, &load_options)
            .and_then(|image| matcher.extract_features(&image))
            .map_err(|e| e.to_string());
        if let Ok(f) = &features {
            let saved = path
                .parent()
                .map_or(Ok(()), |p| {
                    std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))
                })
                .and_then(|()| cache::save(&path, f, &key));
            if let Err(e) = saved {
                progress.note(&format!("warning: features not cached: {e}"));
            }
        }
        features
    };
    let obtain_all =
        |images: &[usize]| -> Vec<(usize, std::result::Result<ImageFeatures, String>)> {
            let one = |&i: &usize| (i, obtain(i));
            if on_cpu {
                images.par_iter().map(one).collect()
            } else {
                images.iter().map(one).collect()
            }
        };
    let needed: Vec<usize> = needed.into_iter().collect();
    let mut usable: BTreeSet<usize> = BTreeSet::new();
    // The last chunk first: the LRU ends up holding the first images, which the first pairs
    // need (in name order, a least-recently-used store evicts each image just before a
    // sequential scan of the pairs needs it).
    for chunk in needed.chunks(if on_cpu { capacity } else { 1 }).rev() {
        for (i, result) in obtain_all(chunk) {
            progress.advance(&format!("features of {}", names[i]));
            let f = match result {
                Ok(f) => f,
                Err(reason) => {
                    progress.note(&format!("skipped: {reason}"));
                    summary.skipped.push((names[i].clone(), reason));
                    continue;
                }
            };
            // An image read although its header was not (should not happen): its own camera.
            if specs[i].is_none() {
                let spec = CameraSpec {
                    identity: format!("image:{}", names[i]),
                    size: [f.width, f.height],
                    focal: camera::default_focal([f.width, f.height]),
                    prior: false,
                };
                cameras.assign(&spec.identity, ids[i], i);
                specs[i] = Some(spec);
            }
            let id = ids[i];
            if !listed.contains_key(&names[i]) {
                let (camera, spec) = cameras.of(&specs, i);
                if spec.size != [f.width, f.height] {
                    return Err(Error::invalid(format!(
                        "{}: the header says {}x{}, the pixels are {}x{}",
                        names[i], spec.size[0], spec.size[1], f.width, f.height
                    )));
                }
                if written_cameras.insert(camera) {
                    db.add_camera(&CameraEntry {
                        id: camera,
                        identity: spec.identity.clone(),
                        size: spec.size,
                        focal: spec.focal,
                        prior: spec.prior,
                    })?;
                }
                let entry = ImageEntry {
                    id,
                    name: names[i].clone(),
                    camera,
                };
                db.add_image(&entry)?;
            }
            if !with_keypoints.contains(&id) {
                db.write_features(id, &f.described, config.descriptor)?;
            }
            usable.insert(i);
            memory.put(i, Arc::new(f));
        }
    }
    summary.skipped.sort();
    summary.images_used = usable.len();
    summary.cached = cached.swap(0, Ordering::Relaxed);
    summary.features_ms = ms(t);
    let used_cameras: BTreeSet<u32> = usable.iter().map(|&i| cameras.of(&specs, i).0).collect();
    summary.cameras = used_cameras.len();
    summary.exif_priors = usable
        .iter()
        .filter(|&&i| cameras.of(&specs, i).1.prior)
        .count();

    // Pairs, in batches: matched in parallel, each batch written in one transaction.
    let t = Instant::now();
    let (todo, unusable): (Vec<_>, Vec<_>) = todo
        .into_iter()
        .partition(|(i, j)| usable.contains(i) && usable.contains(j));
    summary.pairs_skipped = unusable.len();
    for _ in &unusable {
        progress.advance("a pair with a skipped image");
    }
    let registered = AtomicUsize::new(0);
    for chunk in batches(&todo, batch, capacity) {
        // The batch's images: from memory, or read again from the cache.
        let images: BTreeSet<usize> = chunk.iter().flat_map(|&(i, j)| [i, j]).collect();
        let mut held: BTreeMap<usize, Arc<ImageFeatures>> = BTreeMap::new();
        let mut missing = Vec::new();
        for &i in &images {
            match memory.get(&i) {
                Some(f) => {
                    held.insert(i, f);
                }
                None => missing.push(i),
            }
        }
        summary.reloaded += missing.len();
        for (i, result) in obtain_all(&missing) {
            let f = Arc::new(result.map_err(|reason| {
                Error::invalid(format!("{}: features needed again: {reason}", names[i]))
            })?);
            memory.put(i, Arc::clone(&f));
            held.insert(i, f);
        }
        let match_pair = |&(i, j): &(usize, usize)| -> Result<PairMatches> {
            let report = matcher.match_features(&held[&i], &held[&j])?;
            let details = report.details.as_deref();
            let tentatives: Vec<[u32; 2]> = details.map_or_else(Vec::new, |d| {
                d.tentatives
                    .iter()
                    .map(|t| [t.query as u32, t.train as u32])
                    .collect()
            });
            let inliers = match (report.registered, details) {
                (true, Some(d)) => d.inliers.iter().map(|&k| tentatives[k]).collect(),
                _ => Vec::new(),
            };
            if report.registered {
                registered.fetch_add(1, Ordering::Relaxed);
            }
            progress.advance(&format!(
                "{} registered",
                registered.load(Ordering::Relaxed)
            ));
            Ok(PairMatches {
                images: (ids[i], ids[j]),
                tentatives,
                inliers,
                model: report.model.filter(|_| report.registered),
                geometry: report.geometry,
            })
        };
        let matched: Vec<PairMatches> = if on_cpu {
            chunk.par_iter().map(match_pair).collect::<Result<_>>()?
        } else {
            chunk.iter().map(match_pair).collect::<Result<_>>()?
        };
        db.write_pairs(&matched)?;
        summary.matched += matched.len();
    }
    progress.finish();
    summary.registered = registered.into_inner();
    summary.matching_ms = ms(t);
    summary.total_ms = ms(start);
    Ok(summary)
}

/// Merges the databases of the shards of one collection (`shards`, each `--shard I/N` of the same
/// images and settings) into a new database `out`.
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<()> {
    let Some((first, rest)) = shards.split_first() else {
        return Err(Error::invalid("merge: give the shards' databases"));
    };
    if out.exists() {
        return Err(Error::invalid(format!(
            "{}: exists; merge writes a new database",
            out.display()
        )));
    }
    for shard in shards {
        if !shard.is_file() {
            return Err(Error::invalid(format!(
                "{}: no such database",
                shard.display()
            )));
        }
    }
    let merged = (|| {
        std::fs::copy(first, out).map_err(|e| Error::io(out, e))?;
        let mut db = Database::open(out)?;
        for shard in rest {
            db.merge_from(shard)?;
        }
        Ok(())
    })();
    if merged.is_err() {
        std::fs::remove_file(out).ok();
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_follow_the_name_order_and_avoid_taken_ids() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(image_ids(&names, &BTreeMap::new()), [1, 2, 3]);
        let own: BTreeMap<String, u32> = [("b".to_string(), 2)].into();
        assert_eq!(image_ids(&names, &own), [1, 2, 3]);
        let foreign: BTreeMap<String, u32> = [("x".to_string(), 1), ("y".to_string(), 3)].into();
        assert_eq!(image_ids(&names, &foreign), [4, 2, 5]);
    }

    #[test]
    fn batches_bound_pairs_and_images() {
        let todo = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];
        assert_eq!(batches(&todo, 4, 10), [&todo[..4], &todo[4..]]);
        assert_eq!(batches(&todo, 10, 3), [&todo[..2], &todo[2..3], &todo[3..]]);
        assert_eq!(batches(&todo, 10, 1).len(), 6, "one pair always fits");
        assert!(batches(&[], 4, 4).is_empty());
    }

    #[test]
    fn cameras_take_the_first_images_id_or_the_recorded_one() {
        let recorded: BTreeMap<String, u32> = [("k".to_string(), 9)].into();
        let mut c = Cameras::new(recorded, [1].into());
        assert_eq!(c.assign("k", 3, 0), 9);
        assert_eq!(c.assign("a", 2, 1), 2);
        assert_eq!(c.assign("a", 4, 3), 2);
        assert_eq!(
            c.assign("b", 1, 4),
            10,
            "id 1 is taken: one past the largest"
        );
    }
}
