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
//!
//! A MODS method (a schedule) keeps, instead of features, a [`ViewStore`] per image: the
//! synthesised views that pairs made of it, taken by later pairs as their steps need them.
//! Two pairs running at the same time may both make a view (no one waits); each gets the same
//! regions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::geometry::Geometry;
use crate::mods::ViewStore;
use crate::pipeline::ImageFeatures;
use crate::Result;

/// What identifies one extraction: the method (its index in the plan), the verification model
/// (whose matcher extracts) and the image file.
pub type Key = (usize, Geometry, PathBuf);

/// Where a planned image stands.
enum Slot {
    /// Not extracted (or its last extraction failed: the next pair tries again).
    Free,
    /// A pair is extracting it.
    Busy,
    /// Extracted.
    Ready(Arc<ImageFeatures>),
    /// A MODS method's views of the image, filled by its pairs.
    Views(Arc<ViewStore>),
}

/// What a pair does for one of its images.
enum Claim {
    /// Reuse these features.
    Ready(Arc<ImageFeatures>),
    /// Extract and keep them (this pair claimed the slot).
    Mine,
    /// Another pair is extracting them: wait.
    Theirs,
    /// Not planned: extract without keeping.
    Untracked,
}

/// The planned uses of each image and the features extracted so far; see the
/// [module documentation](self). The default plans nothing: every request extracts afresh.
#[derive(Default)]
pub struct FeatureReuse {
    entries: Mutex<HashMap<Key, (usize, Slot)>>,
    extracted: Condvar,
}

impl FeatureReuse {
    /// Plans `uses`: each key once per pair that will ask for it. Keys used only once are not
    /// kept (nothing to reuse).
    pub fn plan(uses: impl IntoIterator<Item = Key>) -> FeatureReuse {
        let mut entries: HashMap<Key, (usize, Slot)> = HashMap::new();
        for key in uses {
            entries.entry(key).or_insert((0, Slot::Free)).0 += 1;
        }
        entries.retain(|_, (left, _)| *left > 1);
        FeatureReuse {
            entries: Mutex::new(entries),
            extracted: Condvar::new(),
        }
    }

    /// The features of a pair's two images (`keys`), each extracted by `extract(0 | 1)` unless
    /// an earlier pair did so, with whether this call extracted it (`true`) or reused it. When
    /// `parallel`, the two extractions run side by side on rayon's pool.
    ///
    /// A pair waits for an image that another pair is extracting only on a thread outside
    /// rayon's pool (the evaluation's job threads); on a pool thread it extracts the image
    /// itself, since a blocked pool thread could be the one the other extraction needs.
    pub fn pair_features(
        &self,
        keys: [&Key; 2],
        extract: impl Fn(usize) -> Result<ImageFeatures> + Sync,
        parallel: bool,
    ) -> Result<[(Arc<ImageFeatures>, bool); 2]> {
        let claims = keys.map(|key| self.claim(key));
        let work = |i: usize| -> Option<Result<Arc<ImageFeatures>>> {
            match claims[i] {
                Claim::Mine => Some(self.extract_claimed(keys[i], || extract(i))),
                Claim::Untracked => Some(extract(i).map(Arc::new)),
                Claim::Ready(_) | Claim::Theirs => None,
            }
        };
        let (a, b) = if parallel {
            rayon::join(|| work(0), || work(1))
        } else {
            (work(0), work(1))
        };
        let mut got = [a, b].into_iter();
        let mut result = |i: usize| -> Result<(Arc<ImageFeatures>, bool)> {
            let own = got.next().flatten();
            match (&claims[i], own) {
                (_, Some(extracted)) => extracted.map(|f| (f, true)),
                (Claim::Ready(features), None) => Ok((features.clone(), false)),
                _ => match self.wait(keys[i]) {
                    Some(features) => Ok((features, false)),
                    // Its extraction failed (this pair reports its own error), the entry is
                    // gone, or waiting is unsafe here: extract without keeping.
                    None => extract(i).map(|f| (Arc::new(f), true)),
                },
            }
        };
        Ok([result(0)?, result(1)?])
    }

    /// The store of a MODS method's views of a planned image (made at the first request); `None`
    /// for an image that only one pair names (nothing to reuse). A key is used either for
    /// features or for views, never both.
    pub fn views(&self, key: &Key) -> Option<Arc<ViewStore>> {
        let mut entries = self.lock();
        let (_, slot) = entries.get_mut(key)?;
        match slot {
            Slot::Views(store) => Some(store.clone()),
            Slot::Free => {
                let store = Arc::new(ViewStore::new());
                *slot = Slot::Views(store.clone());
                Some(store)
            }
            Slot::Busy | Slot::Ready(_) => None,
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
    #[cfg(test)]
    fn held(&self) -> usize {
        let entries = self.lock();
        entries
            .values()
            .filter(|(_, s)| matches!(s, Slot::Ready(_)))
            .count()
    }

    fn claim(&self, key: &Key) -> Claim {
        let mut entries = self.lock();
        let Some((_, slot)) = entries.get_mut(key) else {
            return Claim::Untracked;
        };
        match slot {
            Slot::Ready(features) => Claim::Ready(features.clone()),
            Slot::Busy => Claim::Theirs,
            Slot::Views(_) => Claim::Untracked,
            Slot::Free => {
                *slot = Slot::Busy;
                Claim::Mine
            }
        }
    }

    /// Runs a claimed extraction and publishes its outcome, also when it fails or panics (the
    /// slot is freed, so that no pair waits for ever).
    fn extract_claimed(
        &self,
        key: &Key,
        extract: impl FnOnce() -> Result<ImageFeatures>,
    ) -> Result<Arc<ImageFeatures>> {
        struct Publish<'a> {
            reuse: &'a FeatureReuse,
            key: &'a Key,
            features: Option<Arc<ImageFeatures>>,
        }
        impl Drop for Publish<'_> {
            fn drop(&mut self) {
                let mut entries = self.reuse.lock();
                if let Some((_, slot)) = entries.get_mut(self.key) {
                    *slot = match self.features.take() {
                        Some(features) => Slot::Ready(features),
                        None => Slot::Free,
                    };
                }
                drop(entries);
                self.reuse.extracted.notify_all();
            }
        }
        let mut publish = Publish {
            reuse: self,
            key,
            features: None,
        };
        let features = Arc::new(extract()?);
        publish.features = Some(features.clone());
        Ok(features)
    }

    /// Waits until another pair's extraction of `key` ends: its features, or `None` when it
    /// failed, when nothing is planned for `key`, or on a rayon pool thread (see
    /// [`FeatureReuse::pair_features`]).
    fn wait(&self, key: &Key) -> Option<Arc<ImageFeatures>> {
        if rayon::current_thread_index().is_some() {
            return None;
        }
        let mut entries = self.lock();
        loop {
            match entries.get(key) {
                Some((_, Slot::Ready(features))) => return Some(features.clone()),
                Some((_, Slot::Busy)) => {
                    entries = self
                        .extracted
                        .wait(entries)
                        .unwrap_or_else(|p| p.into_inner());
                }
                Some((_, Slot::Free | Slot::Views(_))) | None => return None,
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, (usize, Slot)>> {
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

    fn counted(calls: &AtomicUsize, width: usize) -> Result<ImageFeatures> {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(features(width))
    }

    #[test]
    fn an_image_used_by_three_pairs_is_extracted_once_and_dropped_after_the_last() {
        let a = key(0, Geometry::Homography, Path::new("a.png"));
        let b = key(0, Geometry::Homography, Path::new("b.png"));
        let c = key(0, Geometry::Homography, Path::new("c.png"));
        let reuse = FeatureReuse::plan([&a, &b, &a, &c, &a, &c].map(Key::clone));
        let calls = AtomicUsize::new(0);
        let extract = |i: usize| counted(&calls, i + 1);
        let [(first, fresh_a), (_, fresh_b)] =
            reuse.pair_features([&a, &b], extract, true).unwrap();
        assert!(fresh_a && fresh_b);
        assert_eq!(first.width, 1);
        reuse.release(&a);
        reuse.release(&b);
        let [(second, fresh_a), (_, fresh_c)] =
            reuse.pair_features([&a, &c], extract, false).unwrap();
        assert!(!fresh_a && fresh_c);
        assert!(Arc::ptr_eq(&first, &second));
        reuse.release(&a);
        reuse.release(&c);
        assert_eq!(reuse.held(), 2);
        let [(_, fresh_a), (_, fresh_c)] = reuse.pair_features([&a, &c], extract, true).unwrap();
        assert!(!fresh_a && !fresh_c);
        reuse.release(&a);
        reuse.release(&c);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "a, b and c once each");
        assert_eq!(reuse.held(), 0, "dropped after their last pair");
        // b was planned once: never kept, extracted every time it is asked for.
        reuse.pair_features([&b, &b], extract, false).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn a_mods_image_in_several_pairs_has_one_view_store_until_its_last_pair() {
        let a = key(2, Geometry::Homography, Path::new("a.png"));
        let b = key(2, Geometry::Homography, Path::new("b.png"));
        let reuse = FeatureReuse::plan([&a, &b, &a].map(Key::clone));
        let first = reuse.views(&a).expect("a is in two pairs");
        assert!(
            reuse.views(&b).is_none(),
            "b is in one pair: nothing to keep"
        );
        reuse.release(&a);
        let second = reuse.views(&a).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(
            Arc::strong_count(&first),
            3,
            "the plan's, and the two pairs'"
        );
        reuse.release(&a);
        assert_eq!(
            Arc::strong_count(&first),
            2,
            "the plan dropped it after the last pair"
        );
        assert!(reuse.views(&a).is_none());
    }

    #[test]
    fn a_failed_extraction_is_not_kept_and_the_next_pair_gets_its_own_error_or_result() {
        let a = key(1, Geometry::Fundamental, Path::new("a.png"));
        let b = key(1, Geometry::Fundamental, Path::new("b.png"));
        let reuse = FeatureReuse::plan([&a, &b, &a, &b].map(Key::clone));
        let calls = AtomicUsize::new(0);
        let extract = |_: usize| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(crate::Error::invalid("unreadable"))
            } else {
                Ok(features(3))
            }
        };
        assert!(reuse.pair_features([&a, &b], extract, false).is_err());
        assert_eq!(reuse.held(), 1, "b was extracted and kept, a was not");
        let [(again, fresh), (_, fresh_b)] = reuse.pair_features([&a, &b], extract, false).unwrap();
        assert!(fresh && !fresh_b);
        assert_eq!(again.width, 3);
    }

    #[test]
    fn pairs_on_job_threads_wait_for_one_extraction() {
        let a = key(0, Geometry::Homography, Path::new("a.png"));
        let reuse = FeatureReuse::plan(vec![a.clone(); 8]);
        let calls = AtomicUsize::new(0);
        let extract = |_: usize| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            counted(&calls, 1)
        };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| reuse.pair_features([&a, &a], extract, true).unwrap());
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Pairs matched from rayon's pool, with extractions that use the pool themselves, get each
    /// image's own features and finish. (A pool thread that waited for another pair's
    /// extraction could be the thread that extraction needs; `wbs eval` hung that way with
    /// waiting pool threads. This test did not reproduce the hang when pool threads waited:
    /// the timing is narrow.)
    #[test]
    fn pairs_inside_rayon_never_wait_on_a_pool_thread() {
        use rayon::prelude::*;
        let keys: Vec<Key> = (0..4)
            .map(|i| key(0, Geometry::Homography, Path::new(&format!("{i}.png"))))
            .collect();
        let pairs: Vec<[&Key; 2]> = (0..64)
            .map(|p| [&keys[p % 4], &keys[(p / 4) % 4]])
            .collect();
        let reuse = FeatureReuse::plan(pairs.iter().flatten().map(|&k| k.clone()));
        // An image's features are 32 + its number wide, whoever extracted them.
        let extract = |image: usize| -> Result<ImageFeatures> {
            let width = (0..32)
                .into_par_iter()
                .map(|_| {
                    std::thread::sleep(std::time::Duration::from_micros(500));
                    1
                })
                .sum::<usize>();
            Ok(features(width + image))
        };
        let number = |k: &Key| keys.iter().position(|x| x == k).unwrap();
        pairs.par_iter().with_max_len(1).for_each(|&pair| {
            let [(f1, _), (f2, _)] = reuse
                .pair_features(pair, |i| extract(number(pair[i])), true)
                .unwrap();
            assert_eq!(
                (f1.width, f2.width),
                (32 + number(pair[0]), 32 + number(pair[1]))
            );
            reuse.release(pair[0]);
            reuse.release(pair[1]);
        });
        assert_eq!(reuse.held(), 0);
    }
}
