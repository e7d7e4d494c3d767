//! Nearest neighbours on the device: the two nearest with the ratio test, and the k nearest
//! (for FGINN, which the caller walks on the host).

use super::ops::{self, Buf};
use super::Gpu;
use crate::matching::{KNearest, Tentative};
use crate::Result;

/// The `k` nearest rows of `database` for every row of `queries` (`queries_host` is the same rows
/// in host memory, for their norms), exact, nearest first, as `matching::k_nearest`.
pub fn device_k_nearest(
    gpu: &Gpu,
    queries: &Buf,
    queries_host: &[f32],
    database: &Buf,
    dim: usize,
    k: usize,
) -> Result<KNearest> {
    let (scores, rows) = ops::k_nearest_scores(gpu, queries, database, dim, k)?;
    let n = queries_host.len() / dim.max(1) * k;
    // Device buffers hold at least one value (`Gpu::zeros`): keep the real ones.
    let mut scores = gpu.download(&scores)?;
    let mut rows = gpu.download(&rows)?;
    scores.truncate(n);
    rows.truncate(n);
    Ok(KNearest::from_scores(k, &scores, rows, queries_host, dim))
}

/// Nearest neighbours and the ratio test on the device; returns the tentatives that pass.
pub fn device_tentatives(
    gpu: &Gpu,
    queries: &Buf,
    database: &Buf,
    dim: usize,
    max_ratio: f32,
) -> Result<Vec<Tentative>> {
    let nn = ops::two_nearest(gpu, queries, database, dim)?;
    let ratio = ops::ratio_test(gpu, &nn, max_ratio)?;
    let nearest = gpu.download(&nn.nearest)?;
    let ratio = gpu.download(&ratio)?;
    // Device buffers hold at least one value (`Gpu::zeros`): keep the real rows.
    let n = queries.len() / dim.max(1);
    Ok(nearest
        .iter()
        .zip(&ratio)
        .take(n)
        .enumerate()
        .filter(|(_, (_, r))| **r <= max_ratio)
        .map(|(i, (&j, &r))| Tentative {
            query: i,
            train: j as usize,
            ratio: r,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::matching::{k_nearest, KNearest};

    /// kernels/nearest_neighbours.cu `k_nearest_scores`, step by step on the host: 64×64 tiles of
    /// scores `‖d‖² − 2·q·d` (computed here in one exact order), then each query's list of the k
    /// smallest, kept by insertion in row order with the kernel's strict comparisons.
    fn emulate(q: &[f32], d: &[f32], dim: usize, k: usize) -> (Vec<f32>, Vec<u32>) {
        const TILE: usize = 64;
        let (nq, nd) = (q.len() / dim, d.len() / dim);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let dnorm: Vec<f32> = d.chunks(dim).map(|r| dot(r, r)).collect();
        let mut best_s = vec![f32::INFINITY; nq * k];
        let mut best_i = vec![u32::MAX; nq * k];
        for q0 in (0..nq).step_by(TILE) {
            let mut worst = vec![f32::INFINITY; TILE];
            for t0 in (0..nd).step_by(TILE) {
                let mut tile = [[f32::INFINITY; TILE]; TILE];
                for (r, row) in tile.iter_mut().enumerate().take(nq.saturating_sub(q0)) {
                    let qr = &q[(q0 + r) * dim..(q0 + r + 1) * dim];
                    for (c, s) in row.iter_mut().enumerate().take(nd - t0) {
                        let dc = &d[(t0 + c) * dim..(t0 + c + 1) * dim];
                        *s = dnorm[t0 + c] - 2.0 * dot(qr, dc);
                    }
                }
                for tid in 0..TILE.min(nq - q0) {
                    let ls = &mut best_s[(q0 + tid) * k..(q0 + tid + 1) * k];
                    let li = &mut best_i[(q0 + tid) * k..(q0 + tid + 1) * k];
                    for (c, &s) in tile[tid].iter().enumerate().take(nd - t0) {
                        if s >= worst[tid] || s.is_nan() {
                            continue;
                        }
                        let mut pos = k - 1;
                        while pos > 0 && s < ls[pos - 1] {
                            ls[pos] = ls[pos - 1];
                            li[pos] = li[pos - 1];
                            pos -= 1;
                        }
                        ls[pos] = s;
                        li[pos] = (t0 + c) as u32;
                        worst[tid] = ls[k - 1];
                    }
                }
            }
        }
        (best_s, best_i)
    }

    #[test]
    fn the_kernels_selection_lists_the_cpus_k_nearest_ties_and_padding_included() {
        // Small whole numbers: every score is exact in f32 whatever the summation order, so the
        // lists must agree entry for entry; repeated rows make ties (the smaller row first).
        let dim = 8;
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 59) as f32) - 16.0
        };
        let q: Vec<f32> = (0..150 * dim).map(|_| next()).collect();
        let mut d: Vec<f32> = (0..140 * dim).map(|_| next()).collect();
        let copies: Vec<f32> = d[..20 * dim].to_vec();
        d.extend(copies); // rows 140..160 repeat rows 0..20
        for (nd, k) in [(160, 50), (160, 1), (30, 50), (0, 3)] {
            let d = &d[..nd * dim];
            let (scores, rows) = emulate(&q, d, dim, k);
            let got = KNearest::from_scores(k, &scores, rows, &q, dim);
            let want = k_nearest(&q, d, dim, k);
            assert_eq!(got.indices, want.indices, "nd {nd}, k {k}");
            assert_eq!(got.distances, want.distances, "nd {nd}, k {k}");
        }
    }
}
