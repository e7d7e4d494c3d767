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
    assert!(dim > 0 && queries.len().is_multiple_of(dim) && database.len().is_multiple_of(dim));
    let n_queries = queries.len() / dim;
    let n_database = database.len() / dim;
    let mut result = TwoNearest {
        nearest: vec![u32::MAX; n_queries],
        d1: vec![f32::INFINITY; n_queries],
        d2: vec![f32::INFINITY; n_queries],
    };
    if n_queries == 0 || n_database == 0 {
        return result;
    }
    let database_norms: Vec<f32> = database
        .chunks_exact(dim)
        .map(|row| row.iter().map(|v| v * v).sum())
        .collect();

    result
        .nearest
        .par_chunks_mut(QUERY_BLOCK)
        .zip(result.d1.par_chunks_mut(QUERY_BLOCK))
        .zip(result.d2.par_chunks_mut(QUERY_BLOCK))
        .enumerate()
        .for_each(|(block, ((nearest, d1), d2))| {
            let first = block * QUERY_BLOCK;
            let rows = nearest.len();
            let q = &queries[first * dim..(first + rows) * dim];
            // Per query: the two smallest of ‖d‖² − 2·q·d so far, with the nearest's index.
            let mut best = vec![(f32::INFINITY, f32::INFINITY, u32::MAX); rows];
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
                    scan_two_smallest(&scores[r * cols..(r + 1) * cols], start as u32, b);
                }
            }
            for (r, (s1, s2, index)) in best.into_iter().enumerate() {
                let qn: f32 = q[r * dim..(r + 1) * dim].iter().map(|v| v * v).sum();
                nearest[r] = index;
                d1[r] = (qn + s1).max(0.0).sqrt();
                d2[r] = (qn + s2).max(0.0).sqrt();
            }
        });
    result
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
