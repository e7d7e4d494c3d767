//! What an evaluation writes down: the settings that define it, one record per (pair, method),
//! and the run's circumstances. These are the lines of `pairs.jsonl` and the parts of
//! `eval.json`; `--resume` and `wbs eval merge` read them back.
//!
//! [`Settings`] holds everything that decides the numbers (datasets, methods, pair filter, shard);
//! two runs with equal settings are the same evaluation, which is what resuming and merging check.
//! [`RunInfo`] holds what does not decide them (command line, jobs, wall time, machine load).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::method::MethodConfig;
use super::report::Summary;
use crate::{Error, Result};

/// A deterministic slice of the pairs: shard `index` of `count` (1-based) runs the pairs whose
/// position in the full list is `index - 1` modulo `count`. All methods of a pair run in the same
/// shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard's number, 1..=`count`.
    pub index: usize,
    /// The number of shards.
    pub count: usize,
}

impl Shard {
    /// Whether the pair at `pair_index` (0-based, in the full list) belongs to this shard.
    pub fn contains(&self, pair_index: usize) -> bool {
        pair_index % self.count == self.index - 1
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let bad = || format!("'{s}' is not a shard; expected I/N with 1 ≤ I ≤ N, e.g. 2/8");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A dataset as evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The dataset's name in reports ([`Dataset::name`](super::Dataset::name)).
    pub name: String,
    /// The layout's name ("OxAff", ..., "list").
    pub layout: String,
    /// The folder or pair list, made absolute.
    pub root: String,
    /// Pairs in the dataset (before `--only` and `--shard`).
    pub pairs: usize,
}

/// Everything that decides an evaluation's numbers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// The datasets, in the order given; pair positions count through them in this order.
    pub datasets: Vec<DatasetInfo>,
    /// The methods, in the order given (the order of the table's rows).
    pub methods: Vec<MethodConfig>,
    /// `--only`: pairs whose name contains one of these (empty: all).
    pub only: Vec<String>,
    /// `--shard I/N`, or none for all pairs.
    pub shard: Option<Shard>,
}

impl Settings {
    /// Whether two settings describe the same evaluation, ignoring the shard. Compared through
    /// their JSON text, so that settings read back from a file compare like fresh ones.
    pub fn same_evaluation(&self, other: &Settings) -> bool {
        let canonical = |s: &Settings| {
            let mut s = s.clone();
            s.shard = None;
            serde_json::to_string(&s)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        };
        canonical(self) == canonical(other)
    }

    /// Whether a pair (by its position and name) is part of this evaluation.
    pub fn selects(&self, pair_index: usize, name: &str) -> bool {
        self.shard.is_none_or(|s| s.contains(pair_index))
            && (self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str())))
    }
}

/// The result of one method on one pair. A pair that could not be matched (unreadable image or
/// ground truth, refused settings) has `error` set and counts as not registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    /// The pair's position in the full list of pairs (all datasets in the order given).
    pub index: usize,
    /// The dataset's name.
    pub dataset: String,
    /// `<dataset>/<pair>`, as score.py names it.
    pub pair: String,
    /// The method's label.
    pub method: String,
    /// The paths of image 1 and image 2, as the dataset gave them.
    pub images: [String; 2],
    /// "homography", "correspondences" or "none" (judged on inliers alone); the source's kind
    /// when it could not be read.
    pub ground_truth: String,
    /// "homography" or "fundamental"; None when the pair failed before matching.
    pub geometry: Option<String>,
    /// The protocol's verdict; false for a failed pair.
    pub registered: bool,
    /// The protocol's verdict in words, or `failed: <error>`.
    pub verdict: String,
    /// Correspondences consistent with the verified model.
    pub inliers: usize,
    /// Correspondences that passed the ratio test and the duplicate filter.
    pub tentatives: usize,
    /// Features per image.
    pub features: [usize; 2],
    /// The ground-truth check's measure: median transfer error of the inliers in px
    /// (homography) or the fraction of annotated correspondences explained (fundamental).
    pub metric: Option<f64>,
    /// The verified model (3×3, row-major): a homography image 1 → image 2 or a fundamental
    /// matrix with `x2ᵀ·F·x1 = 0`.
    pub model: Option<[[f64; 3]; 3]>,
    /// The iterations LO-RANSAC ran.
    pub ransac_iterations: usize,
    /// Milliseconds per stage as `wbs match` reports them ("total" is the whole pair).
    pub timings_ms: BTreeMap<String, f64>,
    /// Why the pair failed; None when it ran.
    pub error: Option<String>,
    /// A MODS method's steps: absent for other methods and for a pair that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mods: Option<ModsSteps>,
}

/// How far a MODS method went on a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModsSteps {
    /// The step (0-based) where the schedule stopped with at least `min_inliers` inliers after
    /// the LAF check (MODS's own stopping rule, which the protocol's ground-truth check may
    /// still reject); None when no step did.
    pub registered_at: Option<usize>,
    /// The steps run.
    pub steps: usize,
}

impl PairRecord {
    /// The key that identifies a record within an evaluation.
    pub fn key(&self) -> (String, String) {
        (self.method.clone(), self.pair.clone())
    }
}

/// The circumstances of a run: not part of its identity.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunInfo {
    /// The command line (for a merge: the merge's).
    pub command: Vec<String>,
    /// Pairs matched concurrently (`--jobs`).
    pub jobs: usize,
    /// Worker threads inside each match (rayon's global pool).
    pub threads: usize,
    /// Wall time of this invocation.
    pub wall_seconds: f64,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started; None where there is none.
    pub load_start: Option<[f64; 3]>,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run ended.
    pub load_end: Option<[f64; 3]>,
    /// Records computed in this invocation.
    pub computed: usize,
    /// Records taken over from an earlier invocation (`--resume`).
    pub resumed: usize,
    /// For a merge: the shard files merged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

/// `eval.json`: the whole evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalFile {
    /// The wbs version that wrote it.
    pub version: String,
    /// What was evaluated.
    pub settings: Settings,
    /// How the run went.
    pub run: RunInfo,
    /// Per method and dataset (the table's cells and more).
    pub summary: Vec<Summary>,
    /// Every record, ordered by method (as given), then pair position.
    pub pairs: Vec<PairRecord>,
}

impl EvalFile {
    /// Reads `eval.json` (or a folder holding one). A file that does not parse is an
    /// [`Error::Dataset`].
    pub fn read(path: &std::path::Path) -> Result<EvalFile> {
        let file = if path.is_dir() {
            path.join("eval.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Dataset(format!(
                "{}: not an eval.json written by wbs eval ({e})",
                file.display()
            ))
        })
    }
}

/// The 1-, 5- and 15-minute load averages, where the system tells them.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|t| t.parse().ok())
        .collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        let s: Shard = "2/3".parse().unwrap();
        assert_eq!(s, Shard { index: 2, count: 3 });
        assert_eq!(s.to_string(), "2/3");
        for bad in ["0/3", "4/3", "1", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // Every pair index is in exactly one shard.
        for i in 0..20 {
            let n = (1..=3)
                .filter(|&k| Shard { index: k, count: 3 }.contains(i))
                .count();
            assert_eq!(n, 1);
        }
    }
}
