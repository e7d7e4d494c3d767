//! AffNet, OriNet and HardNet: inference on batches of 32×32 patches, with the exact per-patch
//! input normalisation and output post-processing of the authors' code.
//!
//! Input everywhere: `patches.len() == N · 1024`, patch after patch, each row-major (x = column).
//! The value range does not matter (each patch is standardised), apart from `eps`.

use std::path::Path;

use super::arch::{NetworkKind, PATCH_LEN, PATCH_SIZE};
use super::engine::Plan;
use super::layers::Sequential;
use super::tensor::Tensor;
use super::weights::weights_error;
use super::weights::Weights;
use crate::Result;

/// Input-normalisation epsilon of ducha-aiki/affnet, its TorchScript export and MODS.
pub const DEFAULT_INPUT_EPS: f32 = 1e-7;
/// Input-normalisation epsilon of kornia.
pub const KORNIA_INPUT_EPS: f32 = 1e-6;

/// What the three models share: the checked architecture, its reference layers and the compiled
/// fast path.
#[derive(Clone, Debug)]
struct Net {
    kind: NetworkKind,
    layers: Sequential,
    plan: Plan,
    input_eps: f32,
}

impl Net {
    fn from_weights(kind: NetworkKind, w: &Weights) -> Result<Net> {
        let layers = kind.build(w)?;
        let plan = Plan::new(&layers, 1, PATCH_SIZE, PATCH_SIZE).map_err(|e| {
            weights_error(format!("{}: cannot compile {}: {e}", w.source_name(), kind))
        })?;
        Ok(Net {
            kind,
            layers,
            plan,
            input_eps: DEFAULT_INPUT_EPS,
        })
    }

    fn load(kind: NetworkKind, path: &Path) -> Result<Net> {
        Net::from_weights(kind, &Weights::load(path)?)
    }

    fn check_len(&self, patches: &[f32]) {
        assert!(
            patches.len().is_multiple_of(PATCH_LEN),
            "{}: {} values is not a whole number of 32×32 patches",
            self.kind,
            patches.len()
        );
    }

    /// The network's outputs, `output_len` per patch, via the fast path.
    fn run(&self, patches: &[f32]) -> Vec<f32> {
        self.check_len(patches);
        self.plan.run(patches, Some(self.input_eps))
    }

    /// The same through the reference layers (slow; for tests and as the training baseline).
    fn run_reference(&self, patches: &[f32]) -> Vec<f32> {
        self.check_len(patches);
        let normalised: Vec<f32> = patches
            .chunks(PATCH_LEN)
            .flat_map(|p| normalise_patch(p, self.input_eps))
            .collect();
        let out = self
            .layers
            .forward(&Tensor::from_patches(&normalised, PATCH_SIZE));
        debug_assert_eq!(out.item_len(), self.plan.out_len());
        out.data
    }
}

/// `(x − mean) / (std + eps)` over one patch, with the unbiased (N − 1) std, as the authors do.
pub fn normalise_patch(patch: &[f32], eps: f32) -> Vec<f32> {
    let n = patch.len() as f64;
    let mean = patch.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = patch
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0).max(1.0);
    let scale = 1.0 / (var.sqrt() + eps as f64);
    patch
        .iter()
        .map(|&v| ((v as f64 - mean) * scale) as f32)
        .collect()
}

/// The upright, determinant-1 affine shape from AffNet's raw outputs:
/// `A = [[1 + y0, 0], [y1, 1 + y2]] / sqrt((1 + y0)(1 + y2))`, rows top to bottom.
pub fn affine_shape(raw: [f32; 3]) -> [[f32; 2]; 2] {
    let (a11, a21, a22) = (1.0 + raw[0] as f64, raw[1] as f64, 1.0 + raw[2] as f64);
    let s = (a11 * a22).sqrt();
    [
        [(a11 / s) as f32, 0.0],
        [(a21 / s) as f32, (a22 / s) as f32],
    ]
}

/// OriNet's angle in radians: `atan2(y0 + 1e-8, y1 + 1e-8)`. Apply it as `A ← A·R(θ)` with
/// `R(θ) = [[cos θ, sin θ], [−sin θ, cos θ]]`.
pub fn orientation_angle(raw: [f32; 2]) -> f32 {
    (raw[0] as f64 + 1e-8).atan2(raw[1] as f64 + 1e-8) as f32
}

/// The `eps` of HardNet's output normalisation (DagnyT/hardnet's `L2Norm`).
pub const L2_NORM_EPS: f64 = 1e-10;

/// The norm HardNet's output normalisation divides by: `sqrt(Σx² + L2_NORM_EPS)`, summed in f64.
pub fn l2_norm(x: &[f32]) -> f64 {
    l2_norm_eps(x, L2_NORM_EPS)
}

/// `sqrt(Σx² + eps)`, summed in f64.
pub fn l2_norm_eps(x: &[f32], eps: f64) -> f64 {
    (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() + eps).sqrt()
}

/// HardNet's output normalisation, in place: `x / l2_norm(x)`.
pub fn l2_normalise(descriptor: &mut [f32]) {
    l2_normalise_eps(descriptor, L2_NORM_EPS);
}

/// `x / sqrt(Σx² + eps)` in place ([`l2_normalise`] with another `eps`).
pub fn l2_normalise_eps(x: &mut [f32], eps: f64) {
    let norm = l2_norm_eps(x, eps);
    x.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
}

/// Backward of [`l2_normalise_eps`] for one row `x` (unnormalised): `d(x/‖x‖)/dx` applied to
/// `d`, `dx = d/‖x‖ − x·(d·x)/‖x‖³` with `‖x‖ = sqrt(Σx² + eps)`; `dx` is overwritten.
pub fn l2_normalise_backward(x: &[f32], d: &[f32], eps: f64, dx: &mut [f32]) {
    let norm = l2_norm_eps(x, eps);
    let dot: f64 = d.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64).sum();
    for ((dr, &x), &dd) in dx.iter_mut().zip(x).zip(d) {
        *dr = (dd as f64 / norm - x as f64 * dot / (norm * norm * norm)) as f32;
    }
}

macro_rules! common_api {
    ($kind:expr) => {
        /// Builds the network from weights that [`NetworkKind::check`] accepts.
        pub fn from_weights(w: &Weights) -> Result<Self> {
            Ok(Self {
                net: Net::from_weights($kind, w)?,
            })
        }

        /// Loads a `.safetensors` file (or a PyTorch `.pth`, converted in memory).
        pub fn load(path: &Path) -> Result<Self> {
            Ok(Self {
                net: Net::load($kind, path)?,
            })
        }

        /// Sets the input-normalisation epsilon ([`DEFAULT_INPUT_EPS`] unless changed).
        pub fn with_input_eps(mut self, eps: f32) -> Self {
            self.net.input_eps = eps;
            self
        }

        /// The input-normalisation epsilon.
        pub fn input_eps(&self) -> f32 {
            self.net.input_eps
        }

        /// The network's reference layers (what a device backend compiles).
        pub fn layers(&self) -> &Sequential {
            &self.net.layers
        }
    };
}

/// The affine shape network.
#[derive(Clone, Debug)]
pub struct AffNet {
    net: Net,
}

impl AffNet {
    common_api!(NetworkKind::AffNet);

    /// The three outputs `(y0, y1, y2)` per patch, after tanh and before the `+1` offsets.
    ///
    /// # Panics
    /// If `patches.len()` is not a multiple of 1024.
    pub fn forward_raw(&self, patches: &[f32]) -> Vec<[f32; 3]> {
        triples(&self.net.run(patches))
    }

    /// The upright determinant-1 shape per patch (see [`affine_shape`]).
    pub fn shapes(&self, patches: &[f32]) -> Vec<[[f32; 2]; 2]> {
        self.forward_raw(patches)
            .into_iter()
            .map(affine_shape)
            .collect()
    }

    /// [`forward_raw`](Self::forward_raw) through the reference layers (slow).
    pub fn forward_reference(&self, patches: &[f32]) -> Vec<[f32; 3]> {
        triples(&self.net.run_reference(patches))
    }
}

/// The orientation network.
#[derive(Clone, Debug)]
pub struct OriNet {
    net: Net,
}

impl OriNet {
    common_api!(NetworkKind::OriNet);

    /// `(y0, y1)` per patch: the mean over the 3×3 map of tanh(final conv).
    ///
    /// # Panics
    /// If `patches.len()` is not a multiple of 1024.
    pub fn forward_raw(&self, patches: &[f32]) -> Vec<[f32; 2]> {
        pairs(&self.net.run(patches))
    }

    /// The angle per patch in radians (see [`orientation_angle`]).
    pub fn angles(&self, patches: &[f32]) -> Vec<f32> {
        self.forward_raw(patches)
            .into_iter()
            .map(orientation_angle)
            .collect()
    }

    /// [`forward_raw`](Self::forward_raw) through the reference layers (slow).
    pub fn forward_reference(&self, patches: &[f32]) -> Vec<[f32; 2]> {
        pairs(&self.net.run_reference(patches))
    }
}

/// The descriptor network.
#[derive(Clone, Debug)]
pub struct HardNet {
    net: Net,
}

/// HardNet descriptor length.
pub const HARDNET_DIM: usize = 128;

impl HardNet {
    common_api!(NetworkKind::HardNet);

    /// Unit-length 128-D descriptors, `N × 128` values, patch after patch.
    ///
    /// # Panics
    /// If `patches.len()` is not a multiple of 1024.
    pub fn describe(&self, patches: &[f32]) -> Vec<f32> {
        let mut d = self.net.run(patches);
        d.chunks_mut(HARDNET_DIM).for_each(l2_normalise);
        d
    }

    /// [`describe`](Self::describe) through the reference layers (slow).
    pub fn describe_reference(&self, patches: &[f32]) -> Vec<f32> {
        let mut d = self.net.run_reference(patches);
        d.chunks_mut(HARDNET_DIM).for_each(l2_normalise);
        d
    }
}

fn triples(v: &[f32]) -> Vec<[f32; 3]> {
    v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect()
}

fn pairs(v: &[f32]) -> Vec<[f32; 2]> {
    v.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_upright_with_unit_determinant() {
        let a = affine_shape([0.5, -0.2, -0.3]);
        assert_eq!(a[0][1], 0.0);
        assert!((a[0][0] * a[1][1] - 1.0).abs() < 1e-6);
        assert!((a[1][0] / a[1][1] - (-0.2 / 0.7)).abs() < 1e-6);
    }

    #[test]
    fn angle_convention() {
        assert!((orientation_angle([1.0, 0.0]) - std::f32::consts::FRAC_PI_2).abs() < 1e-6);
        assert!(orientation_angle([0.0, 1.0]).abs() < 1e-6);
        // The 1e-8 offsets make an all-zero output 45°, as in the original.
        assert!((orientation_angle([0.0, 0.0]) - std::f32::consts::FRAC_PI_4).abs() < 1e-6);
    }

    #[test]
    fn normalisation_of_a_constant_patch_is_zero() {
        assert!(normalise_patch(&[3.0; 16], 1e-7).iter().all(|&v| v == 0.0));
        let mut d = [3.0, 4.0];
        l2_normalise(&mut d);
        assert!((d[0] - 0.6).abs() < 1e-6 && (d[1] - 0.8).abs() < 1e-6);
    }
}
