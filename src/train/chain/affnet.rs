//! The trainable AffNet: `nn::arch`'s AffNetFast as a [`Network`], with the authors'
//! initialisation and conversions to and from weight files and the inference `nn::AffNet`.

use std::path::Path;

use crate::nn::network::{Mode, NetGrads, Network, ParamSpec, Workspace};
use crate::nn::{self, NetworkKind, Weights, PATCH_SIZE};
use crate::train::chain::shape::affine_shape_forward;
use crate::Result;

/// Orthogonal-init gain and bias of ducha-aiki/affnet's `weights_init`.
pub const INIT_GAIN: f32 = 0.8;
/// See [`INIT_GAIN`].
pub const INIT_BIAS: f32 = 0.01;

/// AffNet with trainable weights. Inputs are 32×32 patches, outputs the raw `(y0, y1, y2)`.
#[derive(Clone, Debug)]
pub struct TrainAffNet {
    net: Network,
}

impl TrainAffNet {
    /// Fresh weights: orthogonal init (gain 0.8), bias 0.01, batch-norm statistics 0 / 1. Seeded.
    pub fn new(seed: u64) -> Self {
        let mut net = Network::new(NetworkKind::AffNet, PATCH_SIZE, PATCH_SIZE);
        net.init_orthogonal(INIT_GAIN, INIT_BIAS, seed);
        TrainAffNet { net }
    }

    /// From AffNet weights (e.g. a checkpoint, or the authors' file for fine-tuning).
    pub fn from_weights(w: &Weights) -> Result<Self> {
        Ok(TrainAffNet {
            net: Network::from_weights(NetworkKind::AffNet, w, PATCH_SIZE, PATCH_SIZE)?,
        })
    }

    /// Loads a `.safetensors` (or `.pth`) AffNet file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_weights(&Weights::load(path)?)
    }

    /// The weights under AffNet's state-dict names: `to_weights().save(path)` writes a file
    /// that `nn::AffNet::load` reads.
    pub fn to_weights(&self) -> Weights {
        self.net.to_weights()
    }

    /// The inference network with these weights (running statistics, no dropout).
    pub fn to_inference(&self) -> Result<nn::AffNet> {
        Ok(nn::AffNet::from_weights(&self.to_weights())?.with_input_eps(self.net.input_eps))
    }

    /// The network (training-mode forward and backward, running statistics).
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// The network, to change its parameters or running statistics.
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    /// Every parameter, in state-dict order (PyTorch layouts).
    pub fn params(&self) -> &[f32] {
        self.net.params()
    }

    /// The parameters, for an optimiser step.
    pub fn params_mut(&mut self) -> &mut [f32] {
        self.net.params_mut()
    }

    /// The parameters' names, shapes and offsets.
    pub fn param_specs(&self) -> &[ParamSpec] {
        self.net.param_specs()
    }

    /// Raw outputs `(y0, y1, y2)` per patch, `3·N` values (after tanh, before the `+1`).
    pub fn forward<'w>(&mut self, patches: &[f32], mode: Mode, ws: &'w mut Workspace) -> &'w [f32] {
        self.net.forward(patches, mode, ws)
    }

    /// Adds `dL/dθ` to `grads` (same layout as [`params`](Self::params)) from `dL/d(raw
    /// outputs)` of the last forward pass in `ws`.
    pub fn backward(&self, ws: &mut Workspace, d_raw: &[f32], grads: &mut [f32]) {
        self.net.backward(
            ws,
            d_raw,
            NetGrads {
                params: Some(grads),
                input: None,
            },
        );
    }

    /// The upright determinant-1 shapes of raw outputs (see [`affine_shape_forward`]).
    pub fn shapes(raw: &[f32]) -> Vec<[[f32; 2]; 2]> {
        raw.chunks_exact(3)
            .map(|r| affine_shape_forward([r[0], r[1], r[2]]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{random_patches, random_weights};

    /// Inference mode equals `nn::AffNet` on the same random weights, through the engine and
    /// through the reference layers, and the weights survive a safetensors round trip.
    #[test]
    fn eval_mode_equals_inference_affnet() {
        let w = random_weights(NetworkKind::AffNet, 11);
        let mut model = TrainAffNet::from_weights(&w).unwrap();
        let patches = random_patches(37, 12);
        let mut ws = Workspace::default();
        let got = model.forward(&patches, Mode::Eval, &mut ws).to_vec();
        let inference = nn::AffNet::from_weights(&w).unwrap();
        for (a, b) in got.chunks(3).zip(inference.forward_raw(&patches)) {
            for k in 0..3 {
                assert!((a[k] - b[k]).abs() < 1e-5, "{a:?} vs {b:?}");
            }
        }
        let path = std::env::temp_dir().join(format!(
            "wbs-train-affnet-{}.safetensors",
            std::process::id()
        ));
        model.to_weights().save(&path).unwrap();
        let loaded = nn::AffNet::load(&path).unwrap();
        std::fs::remove_file(&path).ok();
        for (a, b) in got.chunks(3).zip(loaded.forward_raw(&patches)) {
            for k in 0..3 {
                assert!((a[k] - b[k]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn official_weights_when_present() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/weights/AffNet.pth");
        let Ok(w) = Weights::load(&path) else {
            eprintln!("SKIP: {} not found", path.display());
            return;
        };
        let mut model = TrainAffNet::from_weights(&w).unwrap();
        let inference = nn::AffNet::from_weights(&w).unwrap();
        let patches = random_patches(50, 3);
        let mut ws = Workspace::default();
        let got = model.forward(&patches, Mode::Eval, &mut ws).to_vec();
        for (a, b) in got.chunks(3).zip(inference.forward_raw(&patches)) {
            for k in 0..3 {
                assert!((a[k] - b[k]).abs() < 1e-5, "{a:?} vs {b:?}");
            }
        }
        // The state dict comes back unchanged.
        assert_eq!(model.to_weights().tensors, w.tensors);
    }

    #[test]
    fn fresh_model_is_seeded_and_near_identity() {
        let (a, b) = (TrainAffNet::new(1), TrainAffNet::new(1));
        assert_eq!(a.params(), b.params());
        assert_ne!(a.params(), TrainAffNet::new(2).params());
        let mut m = a;
        let mut ws = Workspace::default();
        let raw = m
            .forward(&random_patches(8, 1), Mode::Eval, &mut ws)
            .to_vec();
        // Small outputs: the initial shapes are close to circles.
        assert!(raw.iter().all(|v| v.abs() < 0.5), "{raw:?}");
        assert!(TrainAffNet::shapes(&raw)
            .iter()
            .all(|s| (s[0][0] * s[1][1] - 1.0).abs() < 1e-5));
    }
}
