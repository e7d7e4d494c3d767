//! HardNet as a frozen, differentiable descriptor for training AffNet: weights fixed, batch norm
//! with batch statistics (the authors call `descriptor.train()` on HardNet++), backward to the
//! input patches only.
//!
//! Output: `x / sqrt(Σx² + 1e-10)` (DagnyT/hardnet's `L2Norm`, as `nn::HardNet`). Dropout is
//! 0.1 as in affnet's copy of HardNet (reference `affnet.md` §3), active in training mode with its
//! own seeded masks. The running statistics are not updated: the network is frozen and they only
//! matter in inference mode.

use crate::nn::network::{Mode, NetGrads, Network, Workspace};
use crate::nn::{
    l2_normalise, l2_normalise_backward, NetworkKind, Weights, HARDNET_DIM, L2_NORM_EPS, PATCH_SIZE,
};
use crate::Result;
/// Dropout of ducha-aiki/affnet's HardNet copy.
pub const HARDNET_TRAIN_DROPOUT: f32 = 0.1;

/// A frozen HardNet with a backward pass to its input.
#[derive(Clone, Debug)]
pub struct FrozenHardNet {
    net: Network,
}

/// What one forward pass keeps for its backward pass.
#[derive(Clone, Debug, Default)]
pub struct HardNetCache {
    ws: Workspace,
    /// Unnormalised outputs.
    raw: Vec<f32>,
}

impl FrozenHardNet {
    /// From HardNet weights (e.g. HardNet++).
    pub fn from_weights(w: &Weights) -> Result<Self> {
        let mut net = Network::from_weights(NetworkKind::HardNet, w, PATCH_SIZE, PATCH_SIZE)?;
        net.update_running_stats = false;
        net.set_dropout(HARDNET_TRAIN_DROPOUT);
        Ok(FrozenHardNet { net })
    }

    /// The network (training mode, running statistics frozen).
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// The network, to change its settings.
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    /// Unit-length descriptors (`N × 128`) of `N` 32×32 patches.
    pub fn forward(
        &mut self,
        patches: &[f32],
        mode: Mode,
        cache: &mut HardNetCache,
        out: &mut [f32],
    ) {
        let raw = self.net.forward(patches, mode, &mut cache.ws);
        assert_eq!(out.len(), raw.len(), "HardNet output length");
        cache.raw.clear();
        cache.raw.extend_from_slice(raw);
        l2_normalise_rows(raw, out);
    }

    /// `dL/dpatches` (overwritten) from `dL/ddescriptors` of the last forward pass.
    pub fn backward(&self, cache: &mut HardNetCache, d_desc: &[f32], d_patches: &mut [f32]) {
        assert_eq!(
            d_desc.len(),
            cache.raw.len(),
            "HardNet output gradient length"
        );
        let mut d_raw = vec![0.0f32; d_desc.len()];
        l2_normalise_rows_backward(&cache.raw, d_desc, &mut d_raw);
        self.net.backward(
            &mut cache.ws,
            &d_raw,
            NetGrads {
                params: None,
                input: Some(d_patches),
            },
        );
    }
}

/// [`l2_normalise`] per row of [`HARDNET_DIM`], from `raw` into `out`.
pub(crate) fn l2_normalise_rows(raw: &[f32], out: &mut [f32]) {
    out.copy_from_slice(raw);
    out.chunks_mut(HARDNET_DIM).for_each(l2_normalise);
}

/// Backward of [`l2_normalise_rows`] (overwrites `d_raw`): `d(x/‖x‖)/dx` applied to `d`,
/// `dx = d/‖x‖ − x·(d·x)/‖x‖³`.
pub(crate) fn l2_normalise_rows_backward(raw: &[f32], d: &[f32], d_raw: &mut [f32]) {
    for ((dr, x), dd) in d_raw
        .chunks_mut(HARDNET_DIM)
        .zip(raw.chunks(HARDNET_DIM))
        .zip(d.chunks(HARDNET_DIM))
    {
        l2_normalise_backward(x, dd, L2_NORM_EPS, dr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{directional_error, random_vec};
    use crate::nn::{random_patches, random_weights};

    #[test]
    fn eval_equals_nn_hardnet_and_backward_is_consistent() {
        let w = random_weights(NetworkKind::HardNet, 5);
        let mut h = FrozenHardNet::from_weights(&w).unwrap();
        let patches = random_patches(6, 6);
        let mut cache = HardNetCache::default();
        let mut out = vec![0.0; 6 * 128];
        h.forward(&patches, Mode::Eval, &mut cache, &mut out);
        let reference = crate::nn::HardNet::from_weights(&w)
            .unwrap()
            .describe(&patches);
        for (a, b) in out.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-5);
        }
        // The L2 normalisation's backward (`l2_normalise_rows_backward`), against a directional
        // derivative of `Σ r·x/‖x‖` w.r.t. the network's raw output (the network's own backward
        // is checked in `network`).
        let x = random_vec(128, 7, 1.0);
        let r = random_vec(128, 8, 1.0);
        let norm_loss = |v: &[f32]| -> f64 {
            let n = (v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>() + L2_NORM_EPS).sqrt();
            v.iter()
                .zip(&r)
                .map(|(a, r)| *a as f64 / n * *r as f64)
                .sum()
        };
        let mut g = vec![0.0; 128];
        l2_normalise_rows_backward(&x, &r, &mut g);
        let v = random_vec(128, 9, 1.0);
        assert!(directional_error(norm_loss, &x, &g, &v, 1e-3) < 1e-3);
        // Training mode: a backward pass to the patches runs and is finite.
        h.forward(&patches, Mode::Train { seed: 3 }, &mut cache, &mut out);
        let mut dp = vec![0.0; patches.len()];
        h.backward(&mut cache, &random_vec(6 * 128, 10, 1.0), &mut dp);
        assert!(dp.iter().all(|v| v.is_finite()) && dp.iter().any(|&v| v != 0.0));
    }
}
