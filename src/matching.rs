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
    let rows = blocked_scan(
        queries,
        database,
        dim,
        || (f32::INFINITY, f32::INFINITY, u32::MAX),
        |best, scores, offset| scan_two_smallest(scores, offset, best),
    );
    let mut result: TwoNearest = TwoNearest::default();
    for ((s1, s2, index), qn) in rows {
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

/// Exact `k` nearest neighbours of each query, by the same blocked search as [`two_nearest`].
/// Panics when `dim` is 0 or does not divide both lengths.
pub fn k_nearest(queries: &[f32], database: &[f32], dim: usize, k: usize) -> KNearest {
    let k = k.max(1);
    let rows = blocked_scan(
        queries,
        database,
        dim,
        || Vec::<(f32, u32)>::with_capacity(k + 1),
        |best, scores, offset| scan_k_smallest(scores, offset, k, best),
    );
    let mut result = KNearest {
        k,
        ..Default::default()
    };
    for (best, qn) in rows {
        for j in 0..k {
            let (s, index) = best.get(j).copied().unwrap_or((f32::INFINITY, u32::MAX));
            result.indices.push(index);
            result.distances.push(distance(qn, s));
        }
    }
    result
}

/// The L2 distance from `‖q‖²` and the score `‖d‖² − 2·q·d`.
fn distance(query_norm: f32, score: f32) -> f32 {
    (query_norm + score).max(0.0).sqrt()
}

/// Runs `scan(state, scores, first_database_row)` over blocks of `‖d‖² − 2·q·d` scores for every
/// query (see the module documentation) and returns each query's final state with `‖q‖²`.
fn blocked_scan<S: Send>(
    queries: &[f32],
    database: &[f32],
    dim: usize,
    init: impl Fn() -> S + Sync,
    scan: impl Fn(&mut S, &[f32], u32) + Sync,
) -> Vec<(S, f32)> {
    assert!(dim > 0 && queries.len().is_multiple_of(dim) && database.len().is_multiple_of(dim));
    let n_queries = queries.len() / dim;
    let n_database = database.len() / dim;
    let norm = |row: &[f32]| row.iter().map(|v| v * v).sum::<f32>();
    if n_database == 0 {
        return queries
            .chunks_exact(dim)
            .map(|q| (init(), norm(q)))
            .collect();
    }
    let database_norms: Vec<f32> = database.chunks_exact(dim).map(norm).collect();
    let blocks: Vec<Vec<(S, f32)>> = (0..n_queries.div_ceil(QUERY_BLOCK))
        .into_par_iter()
        .map(|block| {
            let first = block * QUERY_BLOCK;
            let rows = QUERY_BLOCK.min(n_queries - first);
            let q = &queries[first * dim..(first + rows) * dim];
            let mut best: Vec<S> = (0..rows).map(|_| init()).collect();
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
                    scan(b, &scores[r * cols..(r + 1) * cols], start as u32);
                }
            }
            best.into_iter()
                .zip(q.chunks_exact(dim))
                .map(|(b, row)| (b, norm(row)))
                .collect()
        })
        .collect();
    blocks.into_iter().flatten().collect()
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
        let min = chunk.iter().fold(f32::INFINITY, |m, &v| m.min(v));
        if min >= worst {
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
        let min = chunk.iter().fold(f32::INFINITY, |m, &v| m.min(v));
        if min < b2 {
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
    let k = nn.k;
    let far2 = contradiction_px * contradiction_px;
    (0..nn.indices.len() / k.max(1))
        .filter_map(|i| {
            let idx = &nn.indices[i * k..(i + 1) * k];
            let dist = &nn.distances[i * k..(i + 1) * k];
            if idx[0] == u32::MAX {
                return None;
            }
            let p0 = positions2[idx[0] as usize];
            for j in 1..k {
                if idx[j] == u32::MAX {
                    return None;
                }
                let ratio = if dist[j] > 0.0 {
                    dist[0] / dist[j]
                } else {
                    f32::INFINITY
                };
                if ratio <= max_ratio {
                    return Some(Tentative {
                        query: i,
                        train: idx[0] as usize,
                        ratio,
                    });
                }
                let p = positions2[idx[j] as usize];
                if (p[0] - p0[0]).powi(2) + (p[1] - p0[1]).powi(2) > far2 {
                    return None;
                }
            }
            None
        })
        .collect()
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

    #[test]
    fn fginn_equals_brute_force_on_regions_seen_in_several_views() {
        // 60 regions in image 2, each seen in 1–4 "views": copies of one descriptor with small
        // noise at nearly the same position; 40 queries near some of them, and 10 random ones.
        let dim = 16;
        let base = random_unit_rows(60, dim, 11);
        let noise = random_unit_rows(400, dim, 12);
        let (mut d, mut pos) = (Vec::new(), Vec::new());
        let mut n = 0;
        for (r, row) in base.chunks_exact(dim).enumerate() {
            for copy in 0..(1 + r % 4) {
                let e = &noise[n * dim..(n + 1) * dim];
                d.extend(row.iter().zip(e).map(|(a, b)| a + 0.05 * b));
                pos.push([(r * 37 % 500) as f32 + copy as f32, (r * 91 % 400) as f32]);
                n += 1;
            }
        }
        let mut q = Vec::new();
        for r in 0..40 {
            let e = &noise[(n + r) * dim..(n + r + 1) * dim];
            q.extend(
                base[r * dim..(r + 1) * dim]
                    .iter()
                    .zip(e)
                    .map(|(a, b)| a + 0.2 * b),
            );
        }
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
