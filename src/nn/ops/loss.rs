//! The descriptor losses of the AffNet paper, forward and backward w.r.t. the anchor and positive
//! descriptors (`N × D`, row `i` of each is a matching pair, every other row a non-match).
//!
//! Exactly as ducha-aiki/affnet `Losses.py` and `train_AffNet_test_on_graffity.py` (margin 1):
//! - distances `D_ij = sqrt(|a_i|² + |p_j|² − 2·a_i·p_j + 1e-6) + 1e-8` (`distance_matrix_vector`
//!   plus the loss's `eps`);
//! - non-matches are found in `D̃ = D + 10·I`, then `+10` again where `D̃ < 0.008` (near-duplicate
//!   patches are not negatives); the hardest is the first minimum;
//! - [`LossKind::HardNegC`] (`loss_HardNegC`): with `pos_i = sqrt(|a_i|² + |p_i|² − 2·a_i·p_i + 1e-8)`
//!   (`distance_vectors_pairwise`), `L = ½·mean_i relu(1 + pos_i − min_j D̃(a_i, p̄_j))
//!   + ½·mean_i relu(1 + pos_i − min_j D̃(ā_j, p_i))`, where the bar marks a detached value: the
//!   hardest negative from the *other* side is a constant, so a row term moves only `a_i` (towards
//!   `p_i`, away from the fixed `p̄_j`) and `p_i`, never `p_j`;
//! - [`LossKind::HardNeg`] (`loss_HardNet` as the training script calls it: no anchor swap, row
//!   minimum): `L = mean_i relu(1 + D_ii − min_j D̃_ij)`, the hardest negative *not* detached, so
//!   `p_j` is pushed away from `a_i` too;
//! - [`LossKind::PosDist`] (the script's `descr_dist`): `L = mean_i sqrt(|a_i − p_i|² + 1e-6)`.

use rayon::prelude::*;

use crate::nn::matmul::{gemm, MatMut, MatRef};

const MARGIN: f64 = 1.0;
const MATRIX_EPS: f64 = 1e-6;
const LOSS_EPS: f64 = 1e-8;
const PAIR_EPS: f64 = 1e-8;
const POSDIST_EPS: f64 = 1e-6;
const DUPLICATE: f64 = 0.008;
const EXCLUDE: f64 = 10.0;

choices! {
    /// Which descriptor loss.
    pub enum LossKind {
        /// Hard negative-constant (the paper's contribution, the default).
        HardNegC = "hardnegc",
        /// HardNet's hardest-in-batch triplet margin loss.
        HardNeg = "hardneg",
        /// Mean positive distance only (collapses; for comparison).
        PosDist = "posdist",
    }
}

/// The loss and what to log about a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossStats {
    /// The loss (accumulated in f64, kept so: gradient checks difference it).
    pub loss: f64,
    /// Mean distance of the matching pairs (`sqrt(|a_i − p_i|² + eps)`).
    pub mean_positive: f32,
    /// Mean over anchors of the distance to the hardest non-matching positive (`min_j D̃_ij`).
    pub mean_hardest_negative: f32,
}

/// Reusable buffers (the `N × N` distance matrix).
#[derive(Clone, Debug, Default)]
pub struct LossWorkspace {
    dots: Vec<f32>,
}

/// Where the gradients go; `None` skips one. Both are overwritten.
#[derive(Debug, Default)]
pub struct LossGrads<'a> {
    /// `dL/d(anchors)`, `N × dim`.
    pub anchor: Option<&'a mut [f32]>,
    /// `dL/d(positives)`, `N × dim`.
    pub positive: Option<&'a mut [f32]>,
}

fn sq(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// `g += c·(x − y)`.
fn axpy_diff(g: &mut [f32], c: f64, x: &[f32], y: &[f32]) {
    for ((g, &x), &y) in g.iter_mut().zip(x).zip(y) {
        *g += (c * (x as f64 - y as f64)) as f32;
    }
}

/// Computes the loss of `kind` on `anchors` and `positives` (`N × dim` each) and writes the
/// gradients asked for.
///
/// # Panics
/// If the lengths differ or are not multiples of `dim`.
pub fn descriptor_loss(
    kind: LossKind,
    anchors: &[f32],
    positives: &[f32],
    dim: usize,
    grads: LossGrads,
    ws: &mut LossWorkspace,
) -> LossStats {
    assert!(
        dim > 0 && anchors.len().is_multiple_of(dim),
        "anchor length"
    );
    assert_eq!(
        anchors.len(),
        positives.len(),
        "anchors and positives differ in size"
    );
    let n = anchors.len() / dim;
    let LossGrads {
        anchor: mut ga,
        positive: mut gp,
    } = grads;
    for g in [ga.as_deref_mut(), gp.as_deref_mut()].into_iter().flatten() {
        assert_eq!(g.len(), anchors.len(), "gradient length");
        g.fill(0.0);
    }
    if n == 0 {
        return LossStats::default();
    }
    let a = |i: usize| &anchors[i * dim..(i + 1) * dim];
    let p = |i: usize| &positives[i * dim..(i + 1) * dim];
    let mean_positive = (0..n)
        .map(|i| {
            let d: f64 = a(i)
                .iter()
                .zip(p(i))
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum();
            (d + POSDIST_EPS).sqrt()
        })
        .sum::<f64>()
        / n as f64;

    if kind == LossKind::PosDist {
        for i in 0..n {
            let d: f64 = a(i)
                .iter()
                .zip(p(i))
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum();
            let c = 1.0 / (n as f64 * (d + POSDIST_EPS).sqrt());
            if let Some(g) = ga.as_deref_mut() {
                axpy_diff(&mut g[i * dim..(i + 1) * dim], c, a(i), p(i));
            }
            if let Some(g) = gp.as_deref_mut() {
                axpy_diff(&mut g[i * dim..(i + 1) * dim], c, p(i), a(i));
            }
        }
        return LossStats {
            loss: mean_positive,
            mean_positive: mean_positive as f32,
            mean_hardest_negative: f32::NAN,
        };
    }

    // a·pᵀ by GEMM, then distances in f64.
    ws.dots.resize(n * n, 0.0);
    gemm(
        MatMut::row_major(&mut ws.dots, n, n),
        MatRef::row_major(anchors, n, dim),
        MatRef::new(positives, dim, n, 1, dim),
        false,
        true,
    );
    let a2: Vec<f64> = (0..n).map(|i| sq(a(i))).collect();
    let p2: Vec<f64> = (0..n).map(|i| sq(p(i))).collect();
    let dots = &ws.dots;
    // sqrt argument of D_ij (without the 1e-8 outside).
    let root = |i: usize, j: usize| {
        (a2[i] + p2[j] - 2.0 * dots[i * n + j] as f64 + MATRIX_EPS)
            .max(0.0)
            .sqrt()
    };
    let masked = |i: usize, j: usize| {
        let mut d = root(i, j) + LOSS_EPS + if i == j { EXCLUDE } else { 0.0 };
        if d < DUPLICATE {
            d += EXCLUDE;
        }
        d
    };
    // Hardest negative per row (for every anchor) and per column (for every positive).
    let row_min: Vec<(usize, f64)> = (0..n)
        .into_par_iter()
        .map(|i| {
            (0..n).fold((0, f64::INFINITY), |best, j| {
                let d = masked(i, j);
                if d < best.1 {
                    (j, d)
                } else {
                    best
                }
            })
        })
        .collect();
    let mean_hardest_negative = row_min.iter().map(|r| r.1).sum::<f64>() / n as f64;

    let mut loss = 0.0f64;
    match kind {
        LossKind::HardNegC => {
            let col_min: Vec<(usize, f64)> = (0..n)
                .into_par_iter()
                .map(|j| {
                    (0..n).fold((0, f64::INFINITY), |best, i| {
                        let d = masked(i, j);
                        if d < best.1 {
                            (i, d)
                        } else {
                            best
                        }
                    })
                })
                .collect();
            let c = 0.5 / n as f64;
            for i in 0..n {
                let pos = (a2[i] + p2[i] - 2.0 * dot(a(i), p(i)) + PAIR_EPS)
                    .max(0.0)
                    .sqrt();
                for (side, &(k, neg)) in [(0, &row_min[i]), (1, &col_min[i])] {
                    let term = MARGIN + pos - neg;
                    if term <= 0.0 {
                        continue;
                    }
                    loss += c * term;
                    // d pos_i.
                    if let Some(g) = ga.as_deref_mut() {
                        axpy_diff(&mut g[i * dim..(i + 1) * dim], c / pos, a(i), p(i));
                    }
                    if let Some(g) = gp.as_deref_mut() {
                        axpy_diff(&mut g[i * dim..(i + 1) * dim], c / pos, p(i), a(i));
                    }
                    // −d neg: only this side's descriptor moves; the other one is detached.
                    if side == 0 {
                        if let Some(g) = ga.as_deref_mut() {
                            axpy_diff(&mut g[i * dim..(i + 1) * dim], -c / root(i, k), a(i), p(k));
                        }
                    } else if let Some(g) = gp.as_deref_mut() {
                        axpy_diff(&mut g[i * dim..(i + 1) * dim], -c / root(k, i), p(i), a(k));
                    }
                }
            }
        }
        LossKind::HardNeg => {
            let c = 1.0 / n as f64;
            for (i, &(j, neg)) in row_min.iter().enumerate() {
                let pos = root(i, i) + LOSS_EPS;
                let term = MARGIN + pos - neg;
                if term <= 0.0 {
                    continue;
                }
                loss += c * term;
                let (rp, rn) = (root(i, i), root(i, j));
                if let Some(g) = ga.as_deref_mut() {
                    let gi = &mut g[i * dim..(i + 1) * dim];
                    axpy_diff(gi, c / rp, a(i), p(i));
                    axpy_diff(gi, -c / rn, a(i), p(j));
                }
                if let Some(g) = gp.as_deref_mut() {
                    axpy_diff(&mut g[i * dim..(i + 1) * dim], c / rp, p(i), a(i));
                    axpy_diff(&mut g[j * dim..(j + 1) * dim], -c / rn, p(j), a(i));
                }
            }
        }
        LossKind::PosDist => unreachable!(),
    }
    LossStats {
        loss,
        mean_positive: mean_positive as f32,
        mean_hardest_negative: mean_hardest_negative as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_gradient, random_vec};

    fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut v = random_vec(n * dim, seed, 1.0);
        for r in v.chunks_mut(dim) {
            let s = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= s);
        }
        v
    }

    fn value(kind: LossKind, a: &[f32], p: &[f32], dim: usize) -> f64 {
        descriptor_loss(
            kind,
            a,
            p,
            dim,
            LossGrads::default(),
            &mut LossWorkspace::default(),
        )
        .loss
    }

    /// The loss written out from its definition, in f64, for a fixed example.
    #[test]
    fn values_follow_the_definitions() {
        let dim = 2;
        let a = [0.0f32, 0.0, 1.0, 0.0, 0.0, 2.0];
        let p = [0.1f32, 0.0, 1.0, 0.5, 0.0, 2.0];
        let d = |x: &[f32], y: &[f32], eps: f64| -> f64 {
            (x.iter()
                .zip(y)
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum::<f64>()
                + eps)
                .sqrt()
        };
        let ai = |i: usize| &a[2 * i..2 * i + 2];
        let pi = |i: usize| &p[2 * i..2 * i + 2];
        let dm = |i: usize, j: usize| {
            let mut v = d(ai(i), pi(j), 1e-6) + 1e-8 + if i == j { 10.0 } else { 0.0 };
            if v < 0.008 {
                v += 10.0;
            }
            v
        };
        let n = 3;
        let (mut row, mut col, mut hn, mut pd) = (0.0, 0.0, 0.0, 0.0);
        for i in 0..n {
            let rmin = (0..n).map(|j| dm(i, j)).fold(f64::INFINITY, f64::min);
            let cmin = (0..n).map(|j| dm(j, i)).fold(f64::INFINITY, f64::min);
            let pos = d(ai(i), pi(i), 1e-8);
            row += (1.0 + pos - rmin).max(0.0);
            col += (1.0 + pos - cmin).max(0.0);
            hn += (1.0 + d(ai(i), pi(i), 1e-6) + 1e-8 - rmin).max(0.0);
            pd += d(ai(i), pi(i), 1e-6);
        }
        let expect = [
            (LossKind::HardNegC, 0.5 * row / 3.0 + 0.5 * col / 3.0),
            (LossKind::HardNeg, hn / 3.0),
            (LossKind::PosDist, pd / 3.0),
        ];
        for (kind, e) in expect {
            let v = value(kind, &a, &p, dim);
            assert!((v - e).abs() < 1e-6, "{kind}: {v} vs {e}");
        }
        // Identical descriptors of two different pairs are not used as each other's negative.
        let a = [1.0f32, 0.0, 1.0, 0.0];
        let p = [1.0f32, 0.0, 1.0, 0.0];
        assert!(value(LossKind::HardNegC, &a, &p, 2) < 1e-6);
    }

    /// HardNegC from its definition in f64, with the detached descriptors as separate
    /// arguments: the anchors `ab` used in the column minima and the positives `pb` in the row
    /// minima. Its derivative with `ab`, `pb` held at the base point is what autograd computes.
    fn hardnegc_detached(a: &[f32], p: &[f32], ab: &[f32], pb: &[f32], dim: usize) -> f64 {
        let n = a.len() / dim;
        let row = |v: &[f32], i: usize| v[i * dim..(i + 1) * dim].to_vec();
        let dm = |x: &[f32], y: &[f32], diag: bool| {
            let v = (sq(x) + sq(y) - 2.0 * dot(x, y) + 1e-6).max(0.0).sqrt()
                + 1e-8
                + if diag { 10.0 } else { 0.0 };
            if v < 0.008 {
                v + 10.0
            } else {
                v
            }
        };
        let mut loss = 0.0;
        for i in 0..n {
            let (ai, pi) = (row(a, i), row(p, i));
            let pos = (sq(&ai) + sq(&pi) - 2.0 * dot(&ai, &pi) + 1e-8)
                .max(0.0)
                .sqrt();
            let rmin = (0..n)
                .map(|j| dm(&ai, &row(pb, j), i == j))
                .fold(f64::INFINITY, f64::min);
            let cmin = (0..n)
                .map(|j| dm(&row(ab, j), &pi, i == j))
                .fold(f64::INFINITY, f64::min);
            loss += 0.5 * ((1.0 + pos - rmin).max(0.0) + (1.0 + pos - cmin).max(0.0)) / n as f64;
        }
        loss
    }

    #[test]
    fn backward_matches_finite_differences() {
        for kind in <LossKind as crate::choice::Choice>::ALL.iter().copied() {
            for (n, dim) in [(7, 5), (16, 128), (1, 3)] {
                // Positives near their anchors, so that the hinges are neither all on nor off.
                let a = unit_rows(n, dim, 1 + n as u64);
                let noise = random_vec(n * dim, 2 + n as u64, 0.6);
                let p: Vec<f32> = a
                    .iter()
                    .zip(&noise)
                    .map(|(a, e)| a + e / (dim as f32).sqrt())
                    .collect();
                let (mut ga, mut gp) = (vec![0.0; a.len()], vec![0.0; a.len()]);
                let stats = descriptor_loss(
                    kind,
                    &a,
                    &p,
                    dim,
                    LossGrads {
                        anchor: Some(&mut ga),
                        positive: Some(&mut gp),
                    },
                    &mut LossWorkspace::default(),
                );
                type Probe<'a> = Box<dyn Fn(&[f32]) -> f64 + 'a>;
                let (fa, fp): (Probe, Probe) = if kind == LossKind::HardNegC {
                    let direct = hardnegc_detached(&a, &p, &a, &p, dim);
                    assert!((direct - stats.loss).abs() < 1e-5);
                    (
                        Box::new(|v| hardnegc_detached(v, &p, &a, &p, dim)),
                        Box::new(|v| hardnegc_detached(&a, v, &a, &p, dim)),
                    )
                } else {
                    (
                        Box::new(|v| value(kind, v, &p, dim)),
                        Box::new(|v| value(kind, &a, v, dim)),
                    )
                };
                // 2e-2: the dot products come from an f32 GEMM.
                let h = 1e-3;
                check_gradient(fa, &a, &ga, h, 2e-2)
                    .assert_ok(&format!("{kind} anchors {n}×{dim}"));
                check_gradient(fp, &p, &gp, h, 2e-2)
                    .assert_ok(&format!("{kind} positives {n}×{dim}"));
            }
        }
    }

    /// HardNegC's defining property: the hardest negative is a constant. Pair 0 is badly
    /// matched (`a0 = 0`, `p0 = 2`) and `p1 = −1.5` is its hardest negative, while pair 1
    /// (`a1 = −1.6`, `p1`) is well matched and far from every other descriptor, so only a0's row
    /// term is active. HardNeg then pushes `p1` away from `a0`; HardNegC leaves pair 1 alone.
    #[test]
    fn hardnegc_does_not_move_the_negative() {
        let a = [0.0f32, 0.0, -1.6, 0.0];
        let p = [2.0f32, 0.0, -1.5, 0.0];
        let grads = |kind| {
            let (mut ga, mut gp) = (vec![0.0; 4], vec![0.0; 4]);
            descriptor_loss(
                kind,
                &a,
                &p,
                2,
                LossGrads {
                    anchor: Some(&mut ga),
                    positive: Some(&mut gp),
                },
                &mut LossWorkspace::default(),
            );
            (ga, gp)
        };
        let (ga_c, gp_c) = grads(LossKind::HardNegC);
        assert_eq!((ga_c[2], gp_c[2]), (0.0, 0.0), "HardNegC moved pair 1");
        // Descent moves a0 to +x (towards p0, away from p1) and p0 to −x.
        assert!(
            ga_c[0] < 0.0 && gp_c[0] > 0.0,
            "pair 0 pulled together: {ga_c:?} {gp_c:?}"
        );
        let (_, gp_h) = grads(LossKind::HardNeg);
        // dL/dp1 > 0: gradient descent moves p1 to −x, away from a0.
        assert!(
            gp_h[2] > 0.1,
            "HardNeg should push p1 away from a0: {gp_h:?}"
        );
    }
}
