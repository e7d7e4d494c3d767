//! Tentative correspondences: exact nearest neighbours by L2, the second-nearest-neighbour ratio
//! test and the duplicate filter of `protocol.md`.
//!
//! Distances come from blocked matrix products, `‖q − d‖² = ‖q‖² + ‖d‖² − 2·q·d`: a block of
//! queries times a block of the database is one GEMM whose output starts as `‖d‖²` and receives
//! `−2·Q·Dᵀ`, then a scan keeps the two smallest per query. The full N×M matrix never exists,
//! and the blocks run in parallel over queries.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Query rows per block (one block per parallel task).
const QUERY_BLOCK: usize = 128;
/// Database rows per GEMM: the 128×2048 f32 output (1 MB) stays in a core's L2 cache.
const DATABASE_BLOCK: usize = 2048;

/// The two nearest database rows of every query row.
///
/// `I` and `F` hold the indices and the distances: host vectors (the default), or a compute
/// backend's buffers (`nn::backend::Backend`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TwoNearest<I = Vec<u32>, F = Vec<f32>> {
    /// Index of the nearest database row (u32::MAX when the database is empty).
    pub nearest: I,
    /// L2 distance to the nearest row.
    pub d1: F,
    /// L2 distance to the second nearest row (infinite when there is only one).
    pub d2: F,
}

/// One tentative correspondence between feature `query` of image 1 and `train` of image 2.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tentative {
    /// Index of the feature in image 1 (the query side).
    pub query: usize,
    /// Index of its nearest neighbour among the features of image 2.
    pub train: usize,
    /// d1/d2, the second-nearest-neighbour ratio (lower is more distinctive).
    pub ratio: f32,
}

/// Exact two nearest neighbours of each query (row-major `dim`-vectors) in the database. Panics
/// when `dim` is 0 or does not divide both lengths.
pub fn two_nearest(queries: &[f32], database: &[f32], dim: usize) -> TwoNearest {
    let norms = row_norms(queries, dim);
    let mut best = vec![(f32::INFINITY, f32::INFINITY, u32::MAX); norms.len()];
    scan_blocks(
        queries,
        database,
        dim,
        0,
        &mut best,
        |best, scores, offset| scan_two_smallest(scores, offset, best),
    );
    let mut result: TwoNearest = TwoNearest::default();
    for ((s1, s2, index), qn) in best.into_iter().zip(norms) {
        result.nearest.push(index);
        result.d1.push(distance(qn, s1));
        result.d2.push(distance(qn, s2));
    }
    result
}

/// The `k` nearest database rows of every query row, nearest first: `indices[i·k + j]` is the
/// j-th neighbour of query i (u32::MAX past the end of the database) and `distances` its L2
/// distance (infinite past the end).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KNearest {
    /// Neighbours per query.
    pub k: usize,
    /// Database row indices, `k` per query.
    pub indices: Vec<u32>,
    /// L2 distances, `k` per query, ascending.
    pub distances: Vec<f32>,
}

impl KNearest {
    /// The neighbours from per-query scores `‖d‖² − 2·q·d` (`k` per query, ascending; +∞ with
    /// row u32::MAX past the database) and their rows, as a device search gives them: the
    /// distances as [`k_nearest`] computes them, with the norms of `queries` (rows of `dim`).
    pub fn from_scores(
        k: usize,
        scores: &[f32],
        indices: Vec<u32>,
        queries: &[f32],
        dim: usize,
    ) -> KNearest {
        let norms = row_norms(queries, dim);
        assert!(scores.len() == norms.len() * k && indices.len() == scores.len());
        let distances = scores
            .chunks(k.max(1))
            .zip(&norms)
            .flat_map(|(row, &qn)| row.iter().map(move |&s| distance(qn, s)))
            .collect();
        KNearest {
            k,
            indices,
            distances,
        }
    }
}

/// Exact `k` nearest neighbours of each query, by the same blocked search as [`two_nearest`].
/// Panics when `dim` is 0 or does not divide both lengths.
pub fn k_nearest(queries: &[f32], database: &[f32], dim: usize, k: usize) -> KNearest {
    let k = k.max(1);
    let (scores, indices) = k_nearest_scores(queries, database, dim, k);
    KNearest::from_scores(k, &scores, indices, queries, dim)
}

/// [`k_nearest`] before its scores become distances: per query `k` scores `‖d‖² − 2·q·d`,
/// ascending, and their database rows (+∞ and u32::MAX past the database's end); ties keep the
/// smaller row. What the device's search computes (`nn::backend::Backend::k_nearest`).
pub fn k_nearest_scores(
    queries: &[f32],
    database: &[f32],
    dim: usize,
    k: usize,
) -> (Vec<f32>, Vec<u32>) {
    let k = k.max(1);
    let mut best: Vec<Vec<(f32, u32)>> = vec![Vec::with_capacity(k + 1); queries.len() / dim];
    scan_blocks(
        queries,
        database,
        dim,
        0,
        &mut best,
        |best, scores, offset| scan_k_smallest(scores, offset, k, best),
    );
    let (mut scores, mut indices) = (Vec::new(), Vec::new());
    for best in best {
        for j in 0..k {
            let (s, index) = best.get(j).copied().unwrap_or((f32::INFINITY, u32::MAX));
            scores.push(s);
            indices.push(index);
        }
    }
    (scores, indices)
}

/// The L2 distance from `‖q‖²` and the score `‖d‖² − 2·q·d`.
fn distance(query_norm: f32, score: f32) -> f32 {
    (query_norm + score).max(0.0).sqrt()
}

/// `‖row‖²` of every row.
fn row_norms(rows: &[f32], dim: usize) -> Vec<f32> {
    assert!(dim > 0 && rows.len().is_multiple_of(dim));
    rows.chunks_exact(dim)
        .map(|row| row.iter().map(|v| v * v).sum::<f32>())
        .collect()
}

/// Runs `scan(state, scores, database_row_of_scores[0])` over blocks of `‖d‖² − 2·q·d` scores
/// (see the module documentation), one state per query row, database rows numbered from
/// `first_row`. The database is scanned in row order for every query.
fn scan_blocks<S: Send>(
    queries: &[f32],
    database: &[f32],
    dim: usize,
    first_row: u32,
    states: &mut [S],
    scan: impl Fn(&mut S, &[f32], u32) + Sync,
) {
    assert!(dim > 0 && queries.len().is_multiple_of(dim) && database.len().is_multiple_of(dim));
    assert_eq!(states.len(), queries.len() / dim);
    let n_database = database.len() / dim;
    if n_database == 0 {
        return;
    }
    let database_norms = row_norms(database, dim);
    states
        .par_chunks_mut(QUERY_BLOCK)
        .zip(queries.par_chunks(QUERY_BLOCK * dim))
        .for_each(|(best, q)| {
            let rows = best.len();
            let mut scores = vec![0f32; rows * DATABASE_BLOCK.min(n_database)];
            for start in (0..n_database).step_by(DATABASE_BLOCK) {
                let cols = DATABASE_BLOCK.min(n_database - start);
                let norms = &database_norms[start..start + cols];
                for r in 0..rows {
                    scores[r * cols..(r + 1) * cols].copy_from_slice(norms);
                }
                // SAFETY: every pointer/stride pair describes a region inside its slice:
                // dst is rows×cols row-major, lhs rows×dim row-major, rhs dim×cols read from the
                // row-major database block (element (k, j) at j·dim + k).
                unsafe {
                    gemm::gemm(
                        rows,
                        cols,
                        dim,
                        scores.as_mut_ptr(),
                        1,
                        cols as isize,
                        true,
                        q.as_ptr(),
                        1,
                        dim as isize,
                        database[start * dim..].as_ptr(),
                        dim as isize,
                        1,
                        1.0,
                        -2.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for (r, b) in best.iter_mut().enumerate() {
                    scan(
                        b,
                        &scores[r * cols..(r + 1) * cols],
                        first_row + start as u32,
                    );
                }
            }
        });
}

/// Whether any score is below `bound`: lane-wise compares and an OR, which vectorise (a min
/// fold does not, as `f32::min` is not associative under NaN).
#[inline]
fn any_below(scores: &[f32], bound: f32) -> bool {
    scores
        .iter()
        .fold(0u32, |any, &v| any | u32::from(v < bound))
        != 0
}

/// Keeps the `k` smallest (score, index) pairs, ascending, in `best`. Chunks whose minimum cannot
/// enter the list are skipped with one vectorisable pass.
fn scan_k_smallest(scores: &[f32], offset: u32, k: usize, best: &mut Vec<(f32, u32)>) {
    const CHUNK: usize = 16;
    for (c, chunk) in scores.chunks(CHUNK).enumerate() {
        let worst = if best.len() < k {
            f32::INFINITY
        } else {
            best[k - 1].0
        };
        if !any_below(chunk, worst) {
            continue;
        }
        for (j, &v) in chunk.iter().enumerate() {
            if best.len() == k && v >= best[k - 1].0 {
                continue;
            }
            let at = best.partition_point(|&(s, _)| s <= v);
            best.insert(at, (v, offset + (c * CHUNK + j) as u32));
            best.truncate(k);
        }
    }
}

/// Updates (smallest, second smallest, index of smallest) with a row of scores. Chunks whose
/// minimum cannot enter the top two are skipped with one vectorisable pass.
#[inline]
fn scan_two_smallest(scores: &[f32], offset: u32, best: &mut (f32, f32, u32)) {
    const CHUNK: usize = 16;
    let (mut b1, mut b2, mut i1) = *best;
    let mut chunks = scores.chunks_exact(CHUNK);
    let mut base = offset;
    for chunk in &mut chunks {
        if any_below(chunk, b2) {
            for (j, &v) in chunk.iter().enumerate() {
                if v < b2 {
                    if v < b1 {
                        b2 = b1;
                        b1 = v;
                        i1 = base + j as u32;
                    } else {
                        b2 = v;
                    }
                }
            }
        }
        base += CHUNK as u32;
    }
    for (j, &v) in chunks.remainder().iter().enumerate() {
        if v < b2 {
            if v < b1 {
                b2 = b1;
                b1 = v;
                i1 = base + j as u32;
            } else {
                b2 = v;
            }
        }
    }
    *best = (b1, b2, i1);
}

/// The ratio test: each query's nearest neighbour, kept when `d1/d2 ≤ max_ratio`.
pub fn ratio_test(nn: &TwoNearest, max_ratio: f32) -> Vec<Tentative> {
    (0..nn.nearest.len())
        .filter_map(|i| {
            let (d1, d2) = (nn.d1[i], nn.d2[i]);
            if nn.nearest[i] == u32::MAX || !d2.is_finite() {
                return None;
            }
            // d2 = 0 means two identical database vectors: ambiguous unless d1 is also 0... and
            // then still ambiguous. Reject.
            let ratio = if d2 > 0.0 { d1 / d2 } else { f32::INFINITY };
            (ratio <= max_ratio).then_some(Tentative {
                query: i,
                train: nn.nearest[i] as usize,
                ratio,
            })
        })
        .collect()
}

/// The first-geometrically-inconsistent-nearest-neighbour ratio test of MODS (FGINN; reference
/// §4.2). For each query, walk its neighbours j = 1, 2, … nearest first: accept with ratio
/// `d₀/d_j` as soon as it is ≤ `max_ratio`; otherwise stop and reject at the first neighbour whose
/// image-2 position (`positions2`) lies more than `contradiction_px` from the nearest one's. So
/// neighbours that sit on top of the nearest (the same region in another synthetic view, or with
/// another orientation) do not make a match ambiguous. A query none of whose k neighbours decides
/// is rejected.
pub fn fginn(
    nn: &KNearest,
    positions2: &[[f32; 2]],
    max_ratio: f32,
    contradiction_px: f32,
) -> Vec<Tentative> {
    (0..nn.indices.len() / nn.k.max(1))
        .filter_map(
            |i| match fginn_walk(nn, i, positions2, max_ratio, contradiction_px) {
                Walk::Accept(t) => Some(t),
                Walk::Reject | Walk::Undecided => None,
            },
        )
        .collect()
}

/// Where FGINN's walk over one query's listed neighbours ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Walk {
    Accept(Tentative),
    /// No neighbour, or a geometrically inconsistent one before any distinctive one.
    Reject,
    /// Every listed neighbour was consistent and not distinctive (all `k` of them).
    Undecided,
}

/// FGINN's walk (see [`fginn`]) over the neighbours `nn` lists for query `i`.
fn fginn_walk(
    nn: &KNearest,
    i: usize,
    positions2: &[[f32; 2]],
    max_ratio: f32,
    contradiction_px: f32,
) -> Walk {
    let k = nn.k;
    let far2 = contradiction_px * contradiction_px;
    let idx = &nn.indices[i * k..(i + 1) * k];
    let dist = &nn.distances[i * k..(i + 1) * k];
    if idx[0] == u32::MAX {
        return Walk::Reject;
    }
    let p0 = positions2[idx[0] as usize];
    for j in 1..k {
        if idx[j] == u32::MAX {
            return Walk::Reject;
        }
        let ratio = if dist[j] > 0.0 {
            dist[0] / dist[j]
        } else {
            f32::INFINITY
        };
        if ratio <= max_ratio {
            return Walk::Accept(Tentative {
                query: i,
                train: idx[0] as usize,
                ratio,
            });
        }
        let p = positions2[idx[j] as usize];
        if (p[0] - p0[0]).powi(2) + (p[1] - p0[1]).powi(2) > far2 {
            return Walk::Reject;
        }
    }
    Walk::Undecided
}

/// FGINN's neighbour search (reference §4.2): exact, and incremental across MODS steps.
///
/// [`fginn`] walks a query's neighbours nearest first and stops at the first one with
/// `d₀/d_j ≤ max_ratio`, or earlier at a geometrically inconsistent one; so only the neighbours
/// nearer than `d₀/max_ratio` and the first one beyond can decide a query, and most queries need
/// far fewer than `k`. Per query this search keeps, from the blocked scores of [`k_nearest`], the
/// nearest row, the rows nearer than that bound (at most `k` in all) and the nearest row of the
/// rest. [`FginnSearch::neighbours`] lists them nearest first as a [`KNearest`] padded with
/// u32::MAX; on it [`fginn`] with any ratio ≥ `max_ratio` accepts and rejects exactly what it
/// does on `k_nearest(…, k)` (same scores, same order, ties by row).
///
/// [`FginnSearch::extend`] adds rows to both sides: only the new query × database blocks are
/// computed. A MODS step's pools extend the previous step's, so each step pays only for its new
/// views.
pub struct FginnSearch {
    dim: usize,
    k: usize,
    /// 1/max_ratio², the bound on (d_j/d₀)² below which a neighbour cannot decide.
    inv_ratio2: f32,
    database_rows: usize,
    queries: Vec<Decisive>,
}

/// An entry (score, database row); entries compare by score, then by row.
type Entry = (f32, u32);

const NO_ENTRY: Entry = (f32::INFINITY, u32::MAX);

fn entry_less(a: Entry, b: Entry) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// One query's state in [`FginnSearch`]. Invariants: `best` is the smallest entry seen; `list`
/// holds every other entry seen with score < `limit` and not after `cap`, unordered; every entry
/// seen and not kept comes after all kept ones, and `next` is the smallest of them.
#[derive(Clone, Debug)]
struct Decisive {
    query_norm: f32,
    best: Entry,
    /// The score bound for d₀/max_ratio (with a margin for rounding).
    limit: f32,
    /// Set once `list` had to be cut to the k − 1 smallest: entries after it cannot be among the
    /// first k.
    cap: Entry,
    list: Vec<Entry>,
    next: Entry,
}

impl Decisive {
    fn new(query_norm: f32) -> Decisive {
        Decisive {
            query_norm,
            best: NO_ENTRY,
            limit: f32::INFINITY,
            cap: NO_ENTRY,
            list: Vec::new(),
            next: NO_ENTRY,
        }
    }

    fn keeps(&self, e: Entry) -> bool {
        e.0 < self.limit && !entry_less(self.cap, e)
    }

    /// Scans a row of scores for database rows `offset`, `offset + 1`, …, which come after every
    /// row seen so far. Chunks none of whose scores can be kept or become `next` cost one
    /// vectorisable pass.
    fn scan(&mut self, scores: &[f32], offset: u32, k: usize, inv_ratio2: f32) {
        const CHUNK: usize = 16;
        for (c, chunk) in scores.chunks(CHUNK).enumerate() {
            // Every entry still to come that is kept, or becomes `best` or `next`, is below
            // `next`: kept ones come before it, and it has a lower row.
            if !any_below(chunk, self.next.0) {
                continue;
            }
            for (j, &v) in chunk.iter().enumerate() {
                self.push((v, offset + (c * CHUNK + j) as u32), k, inv_ratio2);
            }
        }
    }

    fn push(&mut self, e: Entry, k: usize, inv_ratio2: f32) {
        if entry_less(e, self.best) {
            let old = std::mem::replace(&mut self.best, e);
            let d0 = (self.query_norm + e.0).max(0.0);
            self.limit = d0 * inv_ratio2 * (1.0 + 1e-4) - self.query_norm
                + 1e-6 * (1.0 + self.query_norm.abs());
            self.drop_unkept();
            if old.1 != u32::MAX {
                self.consider(old, k);
            }
        } else {
            self.consider(e, k);
        }
    }

    fn consider(&mut self, e: Entry, k: usize) {
        if self.keeps(e) {
            self.list.push(e);
            if self.list.len() >= 2 * k + 16 {
                // Keep the k − 1 smallest (with `best`, the first k).
                let last = k.saturating_sub(2);
                self.list
                    .select_nth_unstable_by(last, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                self.cap = self.list[last];
                self.drop_unkept();
            }
        } else if entry_less(e, self.next) {
            self.next = e;
        }
    }

    /// Moves the entries that `limit` and `cap` no longer keep out of `list`.
    fn drop_unkept(&mut self) {
        let (limit, cap) = (self.limit, self.cap);
        let mut next = self.next;
        self.list.retain(|&e| {
            let keep = e.0 < limit && !entry_less(cap, e);
            if !keep && entry_less(e, next) {
                next = e;
            }
            keep
        });
        self.next = next;
    }
}

impl FginnSearch {
    /// An empty search for `dim`-vectors, `k` neighbours (at least 2) and ratios ≥ `max_ratio`
    /// (in (0, 1]).
    pub fn new(dim: usize, k: usize, max_ratio: f32) -> FginnSearch {
        let ratio = max_ratio.clamp(1e-3, 1.0);
        FginnSearch {
            dim,
            k: k.max(2),
            inv_ratio2: 1.0 / (ratio * ratio),
            database_rows: 0,
            queries: Vec::new(),
        }
    }

    /// Query rows searched so far.
    pub fn query_rows(&self) -> usize {
        self.queries.len()
    }

    /// Database rows searched so far.
    pub fn database_rows(&self) -> usize {
        self.database_rows
    }

    /// Brings the search up to `queries` and `database` (row-major `dim`-vectors), which must
    /// begin with the rows of the previous call: the previous queries are searched in the new
    /// database rows, the new queries in all of them. Panics when `dim` does not divide a length
    /// or a side is shorter than before.
    pub fn extend(&mut self, queries: &[f32], database: &[f32]) {
        let dim = self.dim;
        let (old_queries, old_rows) = (self.queries.len(), self.database_rows);
        assert!(queries.len() >= old_queries * dim && database.len() >= old_rows * dim);
        let (k, inv_ratio2) = (self.k, self.inv_ratio2);
        let scan =
            |s: &mut Decisive, scores: &[f32], offset: u32| s.scan(scores, offset, k, inv_ratio2);
        scan_blocks(
            &queries[..old_queries * dim],
            &database[old_rows * dim..],
            dim,
            old_rows as u32,
            &mut self.queries,
            scan,
        );
        let new_queries = &queries[old_queries * dim..];
        let mut fresh: Vec<Decisive> = row_norms(new_queries, dim)
            .into_iter()
            .map(Decisive::new)
            .collect();
        scan_blocks(new_queries, database, dim, 0, &mut fresh, scan);
        self.queries.extend(fresh);
        self.database_rows = database.len() / dim;
    }

    /// The neighbours that decide [`fginn`] for every query so far, nearest first, as a
    /// [`KNearest`] of `min(k, database rows)` columns (padded with u32::MAX and infinity).
    pub fn neighbours(&self) -> KNearest {
        let k = self.k.min(self.database_rows).max(1);
        let mut result = KNearest {
            k,
            indices: Vec::with_capacity(self.queries.len() * k),
            distances: Vec::with_capacity(self.queries.len() * k),
        };
        let mut row: Vec<Entry> = Vec::with_capacity(self.k + 1);
        for q in &self.queries {
            row.clear();
            if q.best.1 != u32::MAX {
                row.push(q.best);
                let first = row.len();
                row.extend_from_slice(&q.list);
                row[first..].sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                row.truncate(k);
                if row.len() < k && q.next.1 != u32::MAX {
                    row.push(q.next);
                }
            }
            for j in 0..k {
                let (s, index) = row.get(j).copied().unwrap_or(NO_ENTRY);
                result.indices.push(index);
                result.distances.push(distance(q.query_norm, s));
            }
        }
        result
    }
}

/// Neighbours the first pass of [`FginnMatcher`] lists per query.
const SHALLOW_NEIGHBOURS: usize = 8;

/// FGINN ([`fginn`]) over pools that grow step by step, in two exact passes: an incremental
/// [`FginnSearch`] for the first [`SHALLOW_NEIGHBOURS`] neighbours decides most queries (their walk
/// meets a distinctive or an inconsistent neighbour early); only the queries whose walk runs
/// through all of them are searched again for all `k`. A shallow list is cut sooner, so far fewer
/// scores pass its threshold. The tentatives are those of `fginn(k_nearest(…, k))`; the second
/// pass and extended blocks can move the last bits of a distance (see [`FginnSearch::extend`]).
pub struct FginnMatcher {
    dim: usize,
    k: usize,
    min_ratio: f32,
    shallow: FginnSearch,
}

impl FginnMatcher {
    /// For `dim`-vectors, `k` neighbours and ratios ≥ `min_ratio`.
    pub fn new(dim: usize, k: usize, min_ratio: f32) -> FginnMatcher {
        FginnMatcher {
            dim,
            k: k.max(2),
            min_ratio,
            shallow: FginnSearch::new(dim, k.clamp(2, SHALLOW_NEIGHBOURS), min_ratio),
        }
    }

    /// Query rows searched so far.
    pub fn query_rows(&self) -> usize {
        self.shallow.query_rows()
    }

    /// Database rows searched so far.
    pub fn database_rows(&self) -> usize {
        self.shallow.database_rows()
    }

    /// Extends the search to `queries` and `database` (as [`FginnSearch::extend`]) and returns
    /// FGINN's tentatives for all queries, in query order, with `max_ratio` (≥ the ratio given to
    /// [`FginnMatcher::new`]) and `contradiction_px`; `positions2` are the database rows'
    /// positions in image 2.
    pub fn matches(
        &mut self,
        queries: &[f32],
        database: &[f32],
        positions2: &[[f32; 2]],
        max_ratio: f32,
        contradiction_px: f32,
    ) -> Vec<Tentative> {
        self.shallow.extend(queries, database);
        let shallow = self.shallow.neighbours();
        let full_k = self.k.min(self.shallow.database_rows()).max(1);
        let mut out = Vec::new();
        let mut deep = Vec::new();
        for i in 0..self.shallow.query_rows() {
            match fginn_walk(&shallow, i, positions2, max_ratio, contradiction_px) {
                Walk::Accept(t) => out.push(t),
                Walk::Undecided if shallow.k < full_k => deep.push(i),
                Walk::Reject | Walk::Undecided => {}
            }
        }
        if !deep.is_empty() {
            let dim = self.dim;
            let rows: Vec<f32> = deep
                .iter()
                .flat_map(|&i| &queries[i * dim..(i + 1) * dim])
                .copied()
                .collect();
            let mut search = FginnSearch::new(dim, self.k, self.min_ratio);
            search.extend(&rows, database);
            let nn = search.neighbours();
            for (row, &i) in deep.iter().enumerate() {
                if let Walk::Accept(t) =
                    fginn_walk(&nn, row, positions2, max_ratio, contradiction_px)
                {
                    out.push(Tentative { query: i, ..t });
                }
            }
            out.sort_by_key(|t| t.query);
        }
        out
    }
}

/// Removes duplicates: a correspondence whose end points both lie within `radius` px of an
/// already kept one's end points, processing in order of increasing ratio (the best is kept).
/// `points1[i]`/`points2[j]` are the feature centres. The result is sorted by ratio.
pub fn remove_duplicates(
    tentatives: &[Tentative],
    points1: &[[f32; 2]],
    points2: &[[f32; 2]],
    radius: f32,
) -> Vec<Tentative> {
    let mut order: Vec<Tentative> = tentatives.to_vec();
    order.sort_by(|a, b| a.ratio.total_cmp(&b.ratio).then(a.query.cmp(&b.query)));
    // Kept correspondences bucketed by their image-1 end point on a grid of `radius` cells.
    let cell = radius.max(1e-3);
    let key = |p: [f32; 2]| ((p[0] / cell).floor() as i64, (p[1] / cell).floor() as i64);
    let mut grid: std::collections::HashMap<(i64, i64), Vec<usize>> = Default::default();
    let mut kept: Vec<Tentative> = Vec::with_capacity(order.len());
    let r2 = radius * radius;
    let close = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) <= r2;
    for t in order {
        let (p1, p2) = (points1[t.query], points2[t.train]);
        let (kx, ky) = key(p1);
        let duplicate = (-1..=1).any(|dx| {
            (-1..=1).any(|dy| {
                grid.get(&(kx + dx, ky + dy)).is_some_and(|list| {
                    list.iter().any(|&k| {
                        let other = &kept[k];
                        close(points1[other.query], p1) && close(points2[other.train], p2)
                    })
                })
            })
        });
        if !duplicate {
            grid.entry((kx, ky)).or_default().push(kept.len());
            kept.push(t);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn random_unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut v: Vec<f32> = (0..n * dim)
            .map(|_| rng.random_range(0.0f32..1.0))
            .collect();
        for row in v.chunks_exact_mut(dim) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= n);
        }
        v
    }

    fn brute_force(q: &[f32], d: &[f32], dim: usize) -> TwoNearest {
        let mut out: TwoNearest = TwoNearest::default();
        for qr in q.chunks_exact(dim) {
            let mut dists: Vec<(f32, usize)> = d
                .chunks_exact(dim)
                .enumerate()
                .map(|(j, dr)| {
                    let s: f32 = qr.iter().zip(dr).map(|(a, b)| (a - b).powi(2)).sum();
                    (s.sqrt(), j)
                })
                .collect();
            dists.sort_by(|a, b| a.0.total_cmp(&b.0));
            out.nearest.push(dists[0].1 as u32);
            out.d1.push(dists[0].0);
            out.d2.push(dists.get(1).map_or(f32::INFINITY, |x| x.0));
        }
        out
    }

    #[test]
    fn blocked_gemm_equals_brute_force_on_odd_sizes() {
        for &(n, m, dim) in &[
            (1usize, 2usize, 128usize),
            (300, 2500, 128),
            (131, 4099, 64),
            (5, 3, 7),
        ] {
            let q = random_unit_rows(n, dim, 1);
            let d = random_unit_rows(m, dim, 2);
            let fast = two_nearest(&q, &d, dim);
            let slow = brute_force(&q, &d, dim);
            let mut index_mismatch = 0;
            for i in 0..n {
                assert!((fast.d1[i] - slow.d1[i]).abs() < 1e-3, "d1 {i}");
                assert!((fast.d2[i] - slow.d2[i]).abs() < 1e-3, "d2 {i}");
                if fast.nearest[i] != slow.nearest[i] {
                    // Only allowed for exact ties within float rounding.
                    index_mismatch += 1;
                    assert!((slow.d1[i] - slow.d2[i]).abs() < 1e-4);
                }
            }
            assert!(index_mismatch <= n / 100);
        }
    }

    #[test]
    fn k_nearest_equals_a_sort_of_all_distances() {
        for &(n, m, dim, k) in &[
            (7usize, 3000usize, 32usize, 50usize),
            (130, 40, 16, 5),
            (3, 4, 8, 6),
        ] {
            let q = random_unit_rows(n, dim, 5);
            let d = random_unit_rows(m, dim, 6);
            let nn = k_nearest(&q, &d, dim, k);
            assert_eq!(nn.indices.len(), n * k);
            for (i, qr) in q.chunks_exact(dim).enumerate() {
                let mut all: Vec<f32> = d
                    .chunks_exact(dim)
                    .map(|dr| {
                        qr.iter()
                            .zip(dr)
                            .map(|(a, b)| (a - b).powi(2))
                            .sum::<f32>()
                            .sqrt()
                    })
                    .collect();
                all.sort_by(f32::total_cmp);
                for j in 0..k {
                    let got = nn.distances[i * k + j];
                    match all.get(j) {
                        Some(&want) => {
                            assert!((got - want).abs() < 1e-3, "query {i} neighbour {j}");
                            let index = nn.indices[i * k + j] as usize;
                            let direct: f32 = qr
                                .iter()
                                .zip(&d[index * dim..(index + 1) * dim])
                                .map(|(a, b)| (a - b).powi(2))
                                .sum::<f32>()
                                .sqrt();
                            assert!((direct - want).abs() < 1e-3);
                        }
                        None => assert!(got.is_infinite() && nn.indices[i * k + j] == u32::MAX),
                    }
                }
            }
            // The first two agree with two_nearest.
            let two = two_nearest(&q, &d, dim);
            for i in 0..n {
                assert!((two.d1[i] - nn.distances[i * k]).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn fginn_skips_neighbours_on_top_of_the_nearest() {
        // Query 0: neighbours 0 (d 1.0), 1 (d 1.05, 3 px from 0: the same region in another
        // view), 2 (d 2.0, far away). The 2-NN ratio 0.95 rejects; FGINN's 1/2 accepts.
        // Query 1: the same distances but neighbour 1 is far away: rejected as ambiguous.
        let nn = KNearest {
            k: 3,
            indices: vec![0, 1, 2, 0, 3, 2],
            distances: vec![1.0, 1.05, 2.0, 1.0, 1.05, 2.0],
        };
        let pos = vec![
            [100.0, 100.0],
            [102.0, 102.2],
            [300.0, 10.0],
            [150.0, 100.0],
        ];
        let t = fginn(&nn, &pos, 0.8, 10.0);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].query, t[0].train), (0, 0));
        assert!((t[0].ratio - 0.5).abs() < 1e-6);
        // With a contradiction distance under 3 px, neighbour 1 contradicts: rejected too.
        assert!(fginn(&nn, &pos, 0.8, 2.0).is_empty());
    }

    /// FGINN by brute force: every distance, sorted, walked as reference §4.2 says.
    fn fginn_brute_force(
        q: &[f32],
        d: &[f32],
        dim: usize,
        k: usize,
        pos: &[[f32; 2]],
        r: f32,
        far: f32,
    ) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (i, qr) in q.chunks_exact(dim).enumerate() {
            let mut all: Vec<(f32, usize)> = d
                .chunks_exact(dim)
                .enumerate()
                .map(|(j, dr)| {
                    let d2: f32 = qr.iter().zip(dr).map(|(a, b)| (a - b).powi(2)).sum();
                    (d2.sqrt(), j)
                })
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (d0, j0) = all[0];
            for &(dj, j) in all.iter().take(k).skip(1) {
                if d0 / dj <= r {
                    out.push((i, j0));
                    break;
                }
                let (a, b) = (pos[j], pos[j0]);
                if (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) > far * far {
                    break;
                }
            }
        }
        out
    }

    /// Region `r` of `base` seen in `1 + r % views` views: copies with small noise (rows of
    /// `noise`, in turn) at nearly the same position. Returns the rows, their positions and the
    /// noise rows used.
    fn regions_in_views(
        base: &[f32],
        noise: &[f32],
        dim: usize,
        views: usize,
    ) -> (Vec<f32>, Vec<[f32; 2]>, usize) {
        let (mut d, mut pos) = (Vec::new(), Vec::new());
        let mut n = 0;
        for (r, row) in base.chunks_exact(dim).enumerate() {
            for copy in 0..(1 + r % views) {
                let e = &noise[n * dim..(n + 1) * dim];
                d.extend(row.iter().zip(e).map(|(a, b)| a + 0.05 * b));
                pos.push([(r * 37 % 500) as f32 + copy as f32, (r * 91 % 400) as f32]);
                n += 1;
            }
        }
        (d, pos, n)
    }

    /// `count` queries near the first rows of `base`, with more noise (rows of `noise`).
    fn queries_near(base: &[f32], noise: &[f32], dim: usize, count: usize) -> Vec<f32> {
        let mut q = Vec::new();
        for r in 0..count {
            let e = &noise[r * dim..(r + 1) * dim];
            let row = &base[r * dim..(r + 1) * dim];
            q.extend(row.iter().zip(e).map(|(a, b)| a + 0.2 * b));
        }
        q
    }

    #[test]
    fn fginn_equals_brute_force_on_regions_seen_in_several_views() {
        // 60 regions in image 2, each seen in 1–4 "views": copies of one descriptor with small
        // noise at nearly the same position; 40 queries near some of them, and 10 random ones.
        let dim = 16;
        let base = random_unit_rows(60, dim, 11);
        let noise = random_unit_rows(400, dim, 12);
        let (d, pos, n) = regions_in_views(&base, &noise, dim, 4);
        let mut q = queries_near(&base, &noise[n * dim..], dim, 40);
        q.extend(random_unit_rows(10, dim, 13));
        for (k, ratio, far) in [(50, 0.8, 10.0), (5, 0.9, 2.0), (3, 0.8, 100.0)] {
            let nn = k_nearest(&q, &d, dim, k);
            let mut got: Vec<(usize, usize)> = fginn(&nn, &pos, ratio, far)
                .iter()
                .map(|t| (t.query, t.train))
                .collect();
            got.sort();
            let want = fginn_brute_force(&q, &d, dim, k, &pos, ratio, far);
            assert_eq!(got, want, "k {k}, ratio {ratio}, contradiction {far}");
            // Views of one region are not rivals: FGINN accepts more than the plain ratio test.
            if k == 50 {
                let plain = ratio_test(&two_nearest(&q, &d, dim), ratio).len();
                assert!(got.len() > plain, "FGINN {} vs 2-NN {plain}", got.len());
            }
        }
    }

    /// Checks that [`FginnSearch`], in one go and extended in `parts` steps, lists a prefix of
    /// `k_nearest` bit for bit that holds every neighbour FGINN looks at, and that FGINN gives
    /// exactly the same tentatives on it.
    fn check_fginn_search(
        q: &[f32],
        d: &[f32],
        dim: usize,
        pos: &[[f32; 2]],
        cases: &[(usize, f32, f32)],
    ) {
        let (nq, nd) = (q.len() / dim, d.len() / dim);
        for &(k, ratio, far) in cases {
            let full = k_nearest(q, d, dim, k.min(nd));
            let want = fginn(&full, pos, ratio, far);
            for parts in [1usize, 2, 3] {
                let mut search = FginnSearch::new(dim, k, ratio);
                for p in 1..=parts {
                    let (qr, dr) = (nq * p / parts, nd * p / parts);
                    search.extend(&q[..qr * dim], &d[..dr.max(1) * dim]);
                }
                assert_eq!((search.query_rows(), search.database_rows()), (nq, nd));
                let got = search.neighbours();
                assert_eq!(got.k, full.k);
                let mut listed = 0;
                for i in 0..nq {
                    for j in 0..got.k {
                        let at = i * got.k + j;
                        if got.indices[at] == u32::MAX {
                            break;
                        }
                        listed += 1;
                        let (a, b) = (got.distances[at], full.distances[at]);
                        // In one go the scores are the same GEMM's, bit for bit; extended, the
                        // blocks cut the database elsewhere, which moves the rounding of
                        // ‖q‖² + ‖d‖² − 2·q·d (about 1e-7 of ‖q‖² + ‖d‖²).
                        let close = if parts == 1 {
                            a.to_bits() == b.to_bits()
                        } else {
                            (a * a - b * b).abs() <= 1e-5 * (1.0 + b * b)
                        };
                        assert!(
                            got.indices[at] == full.indices[at] && close,
                            "k {k} ratio {ratio} parts {parts}: query {i} neighbour {j}: \
                             {} {a} vs {} {b}",
                            got.indices[at],
                            full.indices[at]
                        );
                    }
                }
                // The same correspondences, ratios to rounding.
                let same = |got: &[Tentative], what: &str| {
                    let pairs = |t: &[Tentative]| -> Vec<(usize, usize)> {
                        t.iter().map(|t| (t.query, t.train)).collect()
                    };
                    assert_eq!(
                        pairs(got),
                        pairs(&want),
                        "{what}: k {k} ratio {ratio} parts {parts}"
                    );
                    for (a, b) in got.iter().zip(&want) {
                        assert!((a.ratio - b.ratio).abs() < 1e-4, "{what}: {a:?} vs {b:?}");
                    }
                };
                let tentatives = fginn(&got, pos, ratio, far);
                if parts == 1 {
                    assert_eq!(tentatives, want, "k {k} ratio {ratio} contradiction {far}");
                } else {
                    same(&tentatives, "extended");
                }
                // The two-pass matcher, extended the same way.
                let mut matcher = FginnMatcher::new(dim, k, ratio * 0.95);
                let mut two_pass = Vec::new();
                for p in 1..=parts {
                    let (qr, dr) = (nq * p / parts, nd * p / parts);
                    two_pass =
                        matcher.matches(&q[..qr * dim], &d[..dr.max(1) * dim], pos, ratio, far);
                }
                same(&two_pass, "two-pass");
                // A search made for a lower ratio also decides the higher one.
                let mut lower = FginnSearch::new(dim, k, ratio * 0.9);
                lower.extend(q, d);
                assert_eq!(fginn(&lower.neighbours(), pos, ratio, far), want);
                assert!(listed >= nq.min(1));
            }
        }
    }

    #[test]
    fn fginn_over_all_rows_of_a_small_database_equals_fginn_over_k_padded() {
        // A device lists min(k, rows) neighbours (MODS on a GPU); the host pads to k: a query
        // whose walk reaches the end of the database is rejected either way.
        let dim = 8;
        let d = random_unit_rows(12, dim, 31);
        let mut q = random_unit_rows(40, dim, 32);
        q.extend_from_slice(&d[..4 * dim]); // exact copies: accepted
        let pos: Vec<[f32; 2]> = (0..12).map(|i| [i as f32 * 3.0, 0.0]).collect();
        for far in [1.0, 1000.0] {
            let padded = fginn(&k_nearest(&q, &d, dim, 50), &pos, 0.9, far);
            let all = fginn(&k_nearest(&q, &d, dim, 12), &pos, 0.9, far);
            assert_eq!(padded, all, "contradiction {far}");
            assert!(!all.is_empty());
        }
    }

    #[test]
    fn fginn_search_lists_what_fginn_needs_of_the_exact_k_nearest() {
        // Regions seen in several views (clusters of near copies), queries near some of them.
        let dim = 16;
        let base = random_unit_rows(300, dim, 21);
        let noise = random_unit_rows(2000, dim, 22);
        let (mut d, mut pos, n) = regions_in_views(&base, &noise, dim, 5);
        // One region seen in 20 views: the first pass of FginnMatcher cannot decide it.
        for copy in 0..20 {
            let e = &noise[(1000 + copy) * dim..(1001 + copy) * dim];
            d.extend(base[..dim].iter().zip(e).map(|(a, b)| a + 0.05 * b));
            pos.push([3.0 + copy as f32 * 0.5, 7.0]);
        }
        // Exact copies: ties broken by row.
        d.extend_from_within(..20 * dim);
        pos.extend_from_within(..20);
        let mut q = queries_near(&base, &noise[n * dim..], dim, 200);
        q.extend(random_unit_rows(300, dim, 23));
        q.extend_from_slice(&d[5 * dim..6 * dim]);
        let cases = [
            (50, 0.8, 30.0),
            (50, 0.9, 10.0),
            (5, 0.8, 2.0),
            (8, 0.3, 1000.0),
            (2, 0.8, 10.0),
        ];
        check_fginn_search(&q, &d, dim, &pos, &cases);
        let mut shallow = FginnSearch::new(dim, SHALLOW_NEIGHBOURS, 0.8);
        shallow.extend(&q, &d);
        let nn = shallow.neighbours();
        assert!(
            (0..200).any(|i| fginn_walk(&nn, i, &pos, 0.8, 30.0) == Walk::Undecided),
            "no query needs the second pass"
        );
        // A database smaller than k, and 128-d random rows (many rows within d₀/ratio: the
        // list is cut to k again and again).
        check_fginn_search(&q[..40 * dim], &d[..30 * dim], dim, &pos, &cases);
        let (q, d) = (
            random_unit_rows(300, 128, 24),
            random_unit_rows(3000, 128, 25),
        );
        let pos: Vec<[f32; 2]> = (0..3000)
            .map(|i| [(i % 7) as f32, (i / 7) as f32])
            .collect();
        check_fginn_search(&q, &d, 128, &pos, &[(50, 0.8, 30.0), (10, 0.5, 5.0)]);
    }

    #[test]
    fn single_database_row_has_no_second_neighbour_and_fails_the_ratio_test() {
        let q = random_unit_rows(3, 16, 3);
        let d = random_unit_rows(1, 16, 4);
        let nn = two_nearest(&q, &d, 16);
        assert!(nn.d2.iter().all(|v| v.is_infinite()));
        assert!(ratio_test(&nn, 0.8).is_empty());
        let empty = two_nearest(&q, &[], 16);
        assert!(ratio_test(&empty, 0.8).is_empty());
    }

    #[test]
    fn ratio_test_keeps_distinctive_matches() {
        let nn = TwoNearest {
            nearest: vec![4, 7, 1],
            d1: vec![0.1, 0.5, 0.0],
            d2: vec![0.5, 0.55, 0.0],
        };
        let t = ratio_test(&nn, 0.8);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].query, t[0].train), (0, 4));
        assert!((t[0].ratio - 0.2).abs() < 1e-6);
    }

    #[test]
    fn duplicates_within_2px_at_both_ends_are_removed_keeping_the_best() {
        let p1 = vec![[10.0, 10.0], [11.0, 10.5], [11.0, 10.5], [50.0, 50.0]];
        let p2 = vec![[20.0, 20.0], [21.0, 21.0], [80.0, 80.0], [20.5, 20.0]];
        let t = vec![
            Tentative {
                query: 0,
                train: 0,
                ratio: 0.5,
            },
            Tentative {
                query: 1,
                train: 1,
                ratio: 0.3,
            }, // duplicate of 0, better: kept
            Tentative {
                query: 2,
                train: 2,
                ratio: 0.4,
            }, // close in image 1 only: kept
            Tentative {
                query: 3,
                train: 3,
                ratio: 0.6,
            }, // close in image 2 only: kept
        ];
        let kept = remove_duplicates(&t, &p1, &p2, 2.0);
        let ids: Vec<usize> = kept.iter().map(|t| t.query).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }
}
