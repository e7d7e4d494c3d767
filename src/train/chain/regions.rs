//! From AffNet's raw outputs to the sampling maps `θ` of the descriptor patches, with the
//! optional shape terms of the loss, and back: the part of a training step between the network
//! and the spatial transformer. It works on `N × 3` raw outputs and `N` maps per side, so it runs
//! on the host for both the CPU chain (`train::chain`) and the device chain
//! (`train::chain::device`), which therefore compute these terms identically.
//!
//! Per patch: `A = affine_shape(raw)`, `θ = compose(F, A, 32/S)` (the augmentation frame `F`
//! composed with the shape, see `spatial_transformer::compose`), optionally replaced by its
//! upright form (`shape::upright`). Per pair, on the two regions `θ` shows in their sources:
//! the geometric disagreement (`shape::shape_disagreement`) and the source elongation penalty
//! (`shape::region_elongation`); per patch, the elongation penalty of `A` itself.

use crate::nn::ops::spatial_transformer::{compose, compose_backward, Affine};
use crate::train::chain::shape::{
    affine_shape_backward, affine_shape_forward, elongation_penalty, region_elongation,
    shape_disagreement, upright, upright_backward, SOURCE_ELONGATION_HINGE,
};

/// The weights of the optional shape terms (all 0 / false in the paper's recipe).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RegionTerms {
    /// Weight of `shape::elongation_penalty` on `A` (mean over each side's patches).
    pub elongation_penalty: f32,
    /// Weight of the geometric disagreement between a pair's regions in their sources (mean over
    /// pairs).
    pub geom_weight: f32,
    /// Weight of `shape::region_elongation` beyond `SOURCE_ELONGATION_HINGE`:1 of each region in
    /// its source (mean over both sides' patches).
    pub source_elongation_penalty: f32,
    /// Sample descriptor patches in the upright form of their regions.
    pub upright_descriptors: bool,
}

/// What the forward pass adds to a step's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RegionStats {
    /// The shape terms' contribution to the loss (weights applied).
    pub extra_loss: f64,
    /// Mean singular-value ratio of the shapes `A`.
    pub mean_anisotropy: f32,
    /// Mean geometric disagreement of the pairs (0 when that term is off).
    pub mean_geom: f32,
    /// Mean singular-value ratio of the regions in their sources (`θ`'s 2×2 part).
    pub mean_source_anisotropy: f32,
}

/// The stage's per-step buffers: the maps of both sides and the shape terms' `dL/dθ`.
#[derive(Clone, Debug, Default)]
pub struct RegionStage {
    /// Per side (anchors, positives), the descriptor patches' sampling maps.
    pub theta: [Vec<Affine>; 2],
    /// Per side, `dL/dθ` (2×2 part) of the pair terms; empty without gradients or terms.
    d_pair: [Vec<[[f32; 2]; 2]>; 2],
}

impl RegionStage {
    /// Computes both sides' maps from their frames and raw outputs (`scale` = 32 / source
    /// size), and the shape terms; with `want_grads`, keeps what [`backward`](Self::backward)
    /// needs.
    pub fn forward(
        &mut self,
        terms: &RegionTerms,
        frames: [&[Affine]; 2],
        raw: [&[f32]; 2],
        scale: f32,
        want_grads: bool,
    ) -> RegionStats {
        let n = frames[0].len();
        let (mut anisotropy, mut penalty) = (0.0f64, 0.0f64);
        let lambda = terms.elongation_penalty;
        for k in 0..2 {
            let theta = &mut self.theta[k];
            theta.clear();
            for (f, r) in frames[k].iter().zip(raw[k].chunks_exact(3)) {
                let a = affine_shape_forward([r[0], r[1], r[2]]);
                anisotropy += anisotropy_of(&a);
                if lambda > 0.0 {
                    penalty += elongation_penalty(&a).0;
                }
                let t = compose(f, &a, scale);
                theta.push(if terms.upright_descriptors {
                    with_linear_part(&t, upright(linear_part(&t)))
                } else {
                    t
                });
            }
        }

        let [da_all, dp_all] = &mut self.d_pair;
        da_all.clear();
        dp_all.clear();
        let (mut geom, mut source_penalty, mut source_anisotropy) = (0.0f64, 0.0f64, 0.0f64);
        let (geom_weight, source_weight) = (terms.geom_weight, terms.source_elongation_penalty);
        for (ta, tp) in self.theta[0].iter().zip(&self.theta[1]) {
            let (ba, bp) = (linear_part(ta), linear_part(tp));
            source_anisotropy += anisotropy_of(&ba) + anisotropy_of(&bp);
            if geom_weight <= 0.0 && source_weight <= 0.0 {
                continue;
            }
            let (mut da, mut dp) = ([[0.0; 2]; 2], [[0.0; 2]; 2]);
            if geom_weight > 0.0 {
                let (v, ga, gp) = shape_disagreement(ba, bp);
                geom += v;
                add_scaled(&mut da, &ga, geom_weight as f64 / n as f64);
                add_scaled(&mut dp, &gp, geom_weight as f64 / n as f64);
            }
            if source_weight > 0.0 {
                // Mean over both sides' 2n regions.
                let w = source_weight as f64 / (2 * n) as f64;
                let (va, ga) = region_elongation(ba, SOURCE_ELONGATION_HINGE);
                let (vp, gp) = region_elongation(bp, SOURCE_ELONGATION_HINGE);
                source_penalty += va + vp;
                add_scaled(&mut da, &ga, w);
                add_scaled(&mut dp, &gp, w);
            }
            if want_grads {
                let to_f32 = |d: [[f64; 2]; 2]| d.map(|row| row.map(|v| v as f32));
                da_all.push(to_f32(da));
                dp_all.push(to_f32(dp));
            }
        }
        let mean_geom = geom / n.max(1) as f64;
        RegionStats {
            extra_loss: lambda as f64 * penalty / n.max(1) as f64
                + geom_weight as f64 * mean_geom
                + source_weight as f64 * source_penalty / (2 * n).max(1) as f64,
            mean_anisotropy: (anisotropy / (2 * n).max(1) as f64) as f32,
            mean_geom: mean_geom as f32,
            mean_source_anisotropy: (source_anisotropy / (2 * n).max(1) as f64) as f32,
        }
    }

    /// Side `k`'s `dL/d(raw)` (overwriting `d_raw`, `N × 3`) from the descriptor loss's
    /// `dL/dθ` (the spatial transformer's backward) plus the shape terms of the last
    /// [`forward`](Self::forward), which must have been run with `want_grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        terms: &RegionTerms,
        k: usize,
        frames: &[Affine],
        raw: &[f32],
        d_theta: &[Affine],
        scale: f32,
        d_raw: &mut Vec<f32>,
    ) {
        let n = frames.len();
        let lambda = terms.elongation_penalty;
        d_raw.clear();
        for (i, ((f, dth), r)) in frames
            .iter()
            .zip(d_theta)
            .zip(raw.chunks_exact(3))
            .enumerate()
        {
            let mut dth = *dth;
            if let Some(g) = self.d_pair[k].get(i) {
                for (row, grow) in dth.iter_mut().zip(g) {
                    row[0] += grow[0];
                    row[1] += grow[1];
                }
            }
            let a = affine_shape_forward([r[0], r[1], r[2]]);
            if terms.upright_descriptors {
                let before = linear_part(&compose(f, &a, scale));
                dth = with_linear_part(&dth, upright_backward(before, linear_part(&dth)));
            }
            let mut da = compose_backward(f, &dth, scale);
            if lambda > 0.0 {
                let (_, dp) = elongation_penalty(&a);
                let w = lambda / n as f32;
                for (row, prow) in da.iter_mut().zip(dp) {
                    for (v, p) in row.iter_mut().zip(prow) {
                        *v += w * p;
                    }
                }
            }
            d_raw.extend(affine_shape_backward([r[0], r[1], r[2]], da));
        }
    }
}

/// The 2×2 part of `θ`, in f64.
fn linear_part(t: &Affine) -> [[f64; 2]; 2] {
    t.map(|row| [row[0] as f64, row[1] as f64])
}

/// `θ` with its 2×2 part replaced (the translation kept).
fn with_linear_part(t: &Affine, m: [[f64; 2]; 2]) -> Affine {
    [
        [m[0][0] as f32, m[0][1] as f32, t[0][2]],
        [m[1][0] as f32, m[1][1] as f32, t[1][2]],
    ]
}

fn add_scaled(acc: &mut [[f64; 2]; 2], g: &[[f64; 2]; 2], w: f64) {
    for (row, grow) in acc.iter_mut().zip(g) {
        row[0] += w * grow[0];
        row[1] += w * grow[1];
    }
}

/// `s_max / s_min` of a 2×2 matrix.
pub(crate) fn anisotropy_of<T: Copy + Into<f64>>(a: &[[T; 2]; 2]) -> f64 {
    let (p, q, r, s): (f64, f64, f64, f64) = (
        a[0][0].into(),
        a[0][1].into(),
        a[1][0].into(),
        a[1][1].into(),
    );
    let fro = p * p + q * q + r * r + s * s;
    let det = (p * s - q * r).abs();
    let disc = (fro * fro - 4.0 * det * det).max(0.0).sqrt();
    let (s1, s2) = (
        ((fro + disc) / 2.0).sqrt(),
        ((fro - disc) / 2.0).max(1e-30).sqrt(),
    );
    s1 / s2
}
