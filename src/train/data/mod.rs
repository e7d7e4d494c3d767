//! Training pairs in memory and on disk, and the batch sampler.
//!
//! A [`PairSet`] holds 64×64 u8 patches and the pairs (anchor index, positive index) cut from
//! them, each pair tagged with the id of the 3D point it shows. The sampler never puts two pairs
//! of the same point in one batch: every other positive of the batch is a negative for the loss.
//!
//! File format (`wbs train-data` writes it, `wbs train affnet --data` reads it): safetensors with
//! - `anchors`   U8  `[N, 64, 64]`
//! - `positives` U8  `[N, 64, 64]`
//! - `ids`       I64 `[N]` (the 3D point of each pair; pairs may share a point)
//!
//! and string metadata (`wbs.kind = train-pairs`, the seed, sources and generation parameters).

pub mod augment;
pub mod photo_pairs;
pub mod phototour;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::files::write_atomically;
use crate::nn::rng::Rng;
use crate::{Error, Result};

/// Side of the stored patches (UBC Phototour's).
pub const SOURCE_SIZE: usize = 64;
/// Values per stored patch.
pub const SOURCE_LEN: usize = SOURCE_SIZE * SOURCE_SIZE;
/// Metadata key marking a pair file.
pub const META_KIND: &str = "wbs.kind";
/// Its value.
pub const KIND_PAIRS: &str = "train-pairs";

/// Patches and the pairs cut from them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairSet {
    /// `M` patches of 64×64 u8, back to back.
    pub patches: Vec<u8>,
    /// Per pair, the indices of its anchor and positive in `patches`.
    pub pairs: Vec<[u32; 2]>,
    /// Per pair, its 3D point.
    pub ids: Vec<u64>,
    /// Where the pairs came from (file metadata, merged sources).
    pub metadata: BTreeMap<String, String>,
}

fn data_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Dataset(format!("{}: {message}", path.display()))
}

impl PairSet {
    /// Pairs in the set.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the set has no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Source patches stored (two per pair unless pairs share patches).
    pub fn patch_count(&self) -> usize {
        self.patches.len() / SOURCE_LEN
    }

    /// Patch `k` (64×64 u8).
    pub fn patch(&self, k: usize) -> &[u8] {
        &self.patches[k * SOURCE_LEN..(k + 1) * SOURCE_LEN]
    }

    /// Appends a pair of two new patches.
    pub fn push_pair(&mut self, anchor: &[u8], positive: &[u8], id: u64) {
        assert_eq!(anchor.len(), SOURCE_LEN, "anchor patch size");
        assert_eq!(positive.len(), SOURCE_LEN, "positive patch size");
        let k = self.patch_count() as u32;
        self.patches.extend_from_slice(anchor);
        self.patches.extend_from_slice(positive);
        self.pairs.push([k, k + 1]);
        self.ids.push(id);
    }

    /// Number of distinct 3D points.
    pub fn distinct_points(&self) -> usize {
        let mut ids = self.ids.clone();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// Appends `other`, keeping its points apart from this set's (ids are renumbered densely
    /// per set, then offset).
    pub fn append(&mut self, other: PairSet) {
        let offset = self.patch_count() as u32;
        let base = self.ids.iter().max().map_or(0, |m| m + 1);
        let mut dense: HashMap<u64, u64> = HashMap::new();
        for id in &other.ids {
            let next = dense.len() as u64;
            let d = *dense.entry(*id).or_insert(next);
            self.ids.push(base + d);
        }
        self.patches.extend_from_slice(&other.patches);
        self.pairs
            .extend(other.pairs.iter().map(|p| [p[0] + offset, p[1] + offset]));
    }

    /// Writes the pair file (anchors and positives materialised per pair), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let n = self.len();
        let mut anchors = Vec::with_capacity(n * SOURCE_LEN);
        let mut positives = Vec::with_capacity(n * SOURCE_LEN);
        for p in &self.pairs {
            anchors.extend_from_slice(self.patch(p[0] as usize));
            positives.extend_from_slice(self.patch(p[1] as usize));
        }
        let ids: Vec<u8> = self
            .ids
            .iter()
            .flat_map(|&id| (id as i64).to_le_bytes())
            .collect();
        let shape = vec![n, SOURCE_SIZE, SOURCE_SIZE];
        fn view<'a>(
            path: &Path,
            dtype: Dtype,
            shape: Vec<usize>,
            data: &'a [u8],
        ) -> Result<TensorView<'a>> {
            TensorView::new(dtype, shape, data).map_err(|e| data_error(path, e))
        }
        let tensors = vec![
            ("anchors", view(path, Dtype::U8, shape.clone(), &anchors)?),
            ("positives", view(path, Dtype::U8, shape, &positives)?),
            ("ids", view(path, Dtype::I64, vec![n], &ids)?),
        ];
        let mut meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        meta.insert(META_KIND.into(), KIND_PAIRS.into());
        let bytes = safetensors::serialize(tensors, Some(meta))
            .map_err(|e| data_error(path, format!("cannot serialise: {e}")))?;
        write_atomically(path, &crate::nn::with_sorted_header(bytes))
    }

    /// Reads a pair file written by [`save`](Self::save); every problem is a one-line error.
    pub fn load(path: &Path) -> Result<PairSet> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            data_error(
                path,
                format!(
                    "not a readable safetensors pair file ({e}); make one with `wbs train-data`"
                ),
            )
        })?;
        let mut metadata = BTreeMap::new();
        if let Ok((_, meta)) = SafeTensors::read_metadata(&bytes) {
            if let Some(m) = meta.metadata() {
                metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            }
        }
        let get = |name: &str, dtype: Dtype| -> Result<TensorView<'_>> {
            let t = st.tensor(name).map_err(|_| {
                data_error(
                    path,
                    format!("no tensor '{name}' (a pair file has anchors, positives and ids; make one with `wbs train-data`)"),
                )
            })?;
            if t.dtype() != dtype {
                return Err(data_error(
                    path,
                    format!("tensor '{name}' is {:?}, expected {dtype:?}", t.dtype()),
                ));
            }
            Ok(t)
        };
        let (a, p, ids) = (
            get("anchors", Dtype::U8)?,
            get("positives", Dtype::U8)?,
            get("ids", Dtype::I64)?,
        );
        let n = a.shape().first().copied().unwrap_or(0);
        let want = [n, SOURCE_SIZE, SOURCE_SIZE];
        for (name, t) in [("anchors", &a), ("positives", &p)] {
            if t.shape() != want {
                return Err(data_error(
                    path,
                    format!(
                        "tensor '{name}' has shape {:?}, expected [N, {SOURCE_SIZE}, {SOURCE_SIZE}] with the same N as anchors ({n})",
                        t.shape()
                    ),
                ));
            }
        }
        if ids.shape() != [n] {
            return Err(data_error(
                path,
                format!("tensor 'ids' has shape {:?}, expected [{n}]", ids.shape()),
            ));
        }
        if n == 0 {
            return Err(data_error(path, "the file holds no pairs"));
        }
        let mut set = PairSet {
            patches: Vec::with_capacity(2 * n * SOURCE_LEN),
            pairs: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            metadata,
        };
        for (k, ((a, p), id)) in a
            .data()
            .chunks_exact(SOURCE_LEN)
            .zip(p.data().chunks_exact(SOURCE_LEN))
            .zip(ids.data().chunks_exact(8))
            .enumerate()
        {
            let id = i64::from_le_bytes(id.try_into().expect("8 bytes"));
            if id < 0 {
                return Err(data_error(path, format!("pair {k} has a negative id {id}")));
            }
            set.push_pair(a, p, id as u64);
        }
        Ok(set)
    }

    /// Pair indices for one batch of `batch` pairs with distinct points, drawn from `rng`: a
    /// partial Fisher–Yates shuffle that skips pairs whose point is already in the batch.
    /// `scratch` is reused between calls and reset each time, so the batch depends on `rng` only.
    ///
    /// # Panics
    /// If the set has fewer than `batch` distinct points (checked up front by the trainer).
    pub fn sample_batch(&self, batch: usize, rng: &mut Rng, scratch: &mut Vec<u32>) -> Vec<usize> {
        let n = self.len();
        scratch.clear();
        scratch.extend(0..n as u32);
        let mut used = std::collections::HashSet::with_capacity(batch);
        let mut out = Vec::with_capacity(batch);
        let mut k = 0;
        while out.len() < batch {
            assert!(k < n, "fewer distinct points than the batch size");
            let j = k + (rng.next_u64() % (n - k) as u64) as usize;
            scratch.swap(k, j);
            let pair = scratch[k] as usize;
            k += 1;
            if used.insert(self.ids[pair]) {
                out.push(pair);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n: usize, points: u64) -> PairSet {
        let mut set = PairSet::default();
        for k in 0..n {
            let a = vec![k as u8; SOURCE_LEN];
            let p = vec![(k as u8).wrapping_mul(3); SOURCE_LEN];
            set.push_pair(&a, &p, k as u64 % points);
        }
        set
    }

    #[test]
    fn round_trip_and_batches_of_distinct_points() {
        let mut set = tiny(20, 7);
        for k in 0..6 {
            set.metadata.insert(format!("wbs.test{k}"), k.to_string());
        }
        set.metadata.insert("wbs.seed".into(), "3".into());
        let path =
            std::env::temp_dir().join(format!("wbs-pairs-{}.safetensors", std::process::id()));
        set.save(&path).unwrap();
        let first = std::fs::read(&path).unwrap();
        set.save(&path).unwrap();
        let second = std::fs::read(&path).unwrap();
        let back = PairSet::load(&path).unwrap();
        std::fs::remove_file(&path).ok();
        // A seeded `wbs train-data` writes the same file twice, byte for byte.
        assert!(first == second, "the two saves differ");
        assert_eq!(back.patches, set.patches);
        assert_eq!(back.pairs, set.pairs);
        assert_eq!(back.ids, set.ids);
        assert_eq!(back.metadata["wbs.seed"], "3");
        assert_eq!(back.metadata[META_KIND], KIND_PAIRS);
        assert_eq!(back.distinct_points(), 7);

        let mut scratch = Vec::new();
        for s in 0..50 {
            let b = set.sample_batch(7, &mut Rng::new(s), &mut scratch);
            let mut ids: Vec<u64> = b.iter().map(|&i| set.ids[i]).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 7, "batch {b:?}");
            assert_eq!(b, set.sample_batch(7, &mut Rng::new(s), &mut scratch));
        }
    }

    #[test]
    fn append_keeps_points_apart() {
        let mut a = tiny(4, 2);
        let b = tiny(3, 3);
        a.append(b);
        assert_eq!(a.len(), 7);
        assert_eq!(a.distinct_points(), 5);
        assert_eq!(a.pairs[4], [8, 9]);
        assert_eq!(a.patch(8), a.patch(0));
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        let dir = std::env::temp_dir().join(format!("wbs-pairs-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.safetensors");
        std::fs::write(&garbage, b"not a safetensors file at all").unwrap();
        let missing = dir.join("missing.safetensors");
        // Wrong shape: 32×32 patches.
        let wrong = dir.join("wrong.safetensors");
        let data = vec![0u8; 2 * 32 * 32];
        let ids = vec![0u8; 16];
        let t = vec![
            (
                "anchors",
                TensorView::new(Dtype::U8, vec![2, 32, 32], &data).unwrap(),
            ),
            (
                "positives",
                TensorView::new(Dtype::U8, vec![2, 32, 32], &data).unwrap(),
            ),
            ("ids", TensorView::new(Dtype::I64, vec![2], &ids).unwrap()),
        ];
        std::fs::write(&wrong, safetensors::serialize(t, None).unwrap()).unwrap();
        for (path, needle) in [
            (&garbage, "not a readable safetensors"),
            (&missing, "missing.safetensors"),
            (&wrong, "expected [N, 64, 64]"),
        ] {
            let e = PairSet::load(path).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
