//! Features extracted once per evaluation and reused by every pair that names the same image
//! with the same method (OxAff's `img1` is in five pairs, EF's reference images in several).
//!
//! The run counts, before it starts, how many of its pairs use each (method, model, image);
//! the first pair to need an image extracts it, later ones wait for that extraction and reuse
//! it, and the entry is dropped when its last pair is done, so memory holds only the images
//! that pairs still to run will use. Extraction is deterministic, so a pair's result does not
//! depend on whether its features were reused (`tests/eval_run.rs` checks it against
//! `wbs match`); only its per-stage times do: an image already extracted for an earlier pair
//! costs this pair nothing, and its stage times count zero for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::geometry::Geometry;
use crate::pipeline::ImageFeatures;
use crate::Result;

/// What identifies one extraction: the method (its index in the plan), the verification model
/// (whose matcher extracts) and the image file.
pub type Key = (usize, Geometry, PathBuf);

/// A cell filled by the first extraction; `None` when that extraction failed (the next pair
/// extracts again and reports its own error).
type Cell = Arc<OnceLock<Option<Arc<ImageFeatures>>>>;

/// The planned uses of each image and the features extracted so far; see the
/// [module documentation](self). The default plans nothing: every request extracts afresh.
#[derive(Default)]
pub struct FeatureReuse {
    entries: Mutex<HashMap<Key, (usize, Cell)>>,
}

impl FeatureReuse {
    /// Plans `uses`: each key once per pair that will ask for it. Keys used only once are not
    /// kept (nothing to reuse).
    pub fn plan(uses: impl IntoIterator<Item = Key>) -> FeatureReuse {
        let mut entries: HashMap<Key, (usize, Cell)> = HashMap::new();
        for key in uses {
            entries.entry(key).or_default().0 += 1;
        }
        entries.retain(|_, (left, _)| *left > 1);
        FeatureReuse {
            entries: Mutex::new(entries),
        }
    }

    /// The features of `key`'s image: extracted by `extract` unless an earlier pair did so,
    /// and whether this call extracted them (`true`) or reused them.
    pub fn features(
        &self,
        key: &Key,
        extract: impl Fn() -> Result<ImageFeatures>,
    ) -> Result<(Arc<ImageFeatures>, bool)> {
        let cell = self.lock().get(key).map(|(_, cell)| cell.clone());
        let Some(cell) = cell else {
            return Ok((Arc::new(extract()?), true));
        };
        let mut outcome = None;
        let kept = cell.get_or_init(|| match extract() {
            Ok(features) => {
                let features = Arc::new(features);
                outcome = Some(Ok(features.clone()));
                Some(features)
            }
            Err(e) => {
                outcome = Some(Err(e));
                None
            }
        });
        match (outcome, kept) {
            (Some(result), _) => result.map(|f| (f, true)),
            (None, Some(features)) => Ok((features.clone(), false)),
            // An earlier pair's extraction failed: this pair reports its own error.
            (None, None) => Ok((Arc::new(extract()?), true)),
        }
    }

    /// One pair that planned to use `key` is done with it (whether it succeeded or not); the
    /// features are dropped after the last.
    pub fn release(&self, key: &Key) {
        let mut entries = self.lock();
        if let Some((left, _)) = entries.get_mut(key) {
            *left -= 1;
            if *left == 0 {
                entries.remove(key);
            }
        }
    }

    /// How many images are held now.
    pub fn held(&self) -> usize {
        self.lock()
            .values()
            .filter(|(_, c)| c.get().is_some())
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (usize, Cell)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The key of `path` for a method and model.
pub fn key(method: usize, geometry: Geometry, path: &Path) -> Key {
    (method, geometry, path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::Described;
    use crate::pipeline::FeatureTimes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn features(width: usize) -> ImageFeatures {
        ImageFeatures {
            width,
            height: 1,
            detections: 0,
            shaped: 0,
            described: Described::default(),
            times: FeatureTimes::default(),
        }
    }

    #[test]
    fn an_image_used_by_three_pairs_is_extracted_once_and_dropped_after_the_last() {
        let a = key(0, Geometry::Homography, Path::new("a.png"));
        let b = key(0, Geometry::Homography, Path::new("b.png"));
        let reuse = FeatureReuse::plan([a.clone(), a.clone(), a.clone(), b.clone()]);
        let calls = AtomicUsize::new(0);
        let extract = || {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(features(7))
        };
        let (first, fresh) = reuse.features(&a, extract).unwrap();
        assert!(fresh);
        assert_eq!(first.width, 7);
        reuse.release(&a);
        let (second, fresh) = reuse.features(&a, extract).unwrap();
        assert!(!fresh);
        assert!(Arc::ptr_eq(&first, &second));
        reuse.release(&a);
        assert_eq!(reuse.held(), 1);
        reuse.features(&a, extract).unwrap();
        reuse.release(&a);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(reuse.held(), 0, "dropped after its last pair");
        // Used once: never kept, extracted every time it is asked for.
        reuse.features(&b, extract).unwrap();
        reuse.features(&b, extract).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(reuse.held(), 0);
    }

    #[test]
    fn a_failed_extraction_is_not_kept_and_the_next_pair_gets_its_own_error_or_result() {
        let a = key(1, Geometry::Fundamental, Path::new("a.png"));
        let reuse = FeatureReuse::plan([a.clone(), a.clone()]);
        let calls = AtomicUsize::new(0);
        let extract = || {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(crate::Error::invalid("unreadable"))
            } else {
                Ok(features(3))
            }
        };
        assert!(reuse.features(&a, extract).is_err());
        let (again, fresh) = reuse.features(&a, extract).unwrap();
        assert!(fresh);
        assert_eq!(again.width, 3);
    }

    #[test]
    fn pairs_in_parallel_wait_for_one_extraction() {
        let a = key(0, Geometry::Homography, Path::new("a.png"));
        let reuse = FeatureReuse::plan(vec![a.clone(); 4]);
        let calls = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    reuse
                        .features(&a, || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            Ok(features(1))
                        })
                        .unwrap();
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
