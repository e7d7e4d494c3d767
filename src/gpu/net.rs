//! AffNet, OriNet and HardNet inference on the device, from the same weights (safetensors or
//! `.pth`) and the same architecture description (`nn::NetworkKind`) as the CPU.
//!
//! As the CPU engine (`nn::engine`), each batch norm is folded into the convolution before it and
//! every activation is fused into the convolution's output, so a network is its per-patch input
//! standardisation, six or seven [`ops::conv2d_forward`] launches, and a global average pool
//! (AffNet, OriNet) or an L2 normalisation (HardNet). Activations are NHWC on the device; a
//! batch of 16,384 HardNet patches needs about 2.2 GB for the largest pair of buffers.

use super::ops::{self, Buf, InputMap};
use super::shapes::ConvGeometry;
use super::Gpu;
use crate::nn::fold::{fold, FusedAct};
use crate::nn::layers::Sequential;
use crate::nn::{NetworkKind, Weights, DEFAULT_INPUT_EPS, L2_NORM_EPS, PATCH_LEN, PATCH_SIZE};
use crate::{Error, Result};

/// One convolution with its batch norm folded in and its activation fused.
struct Stage {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    weight: Buf,
    bias: Buf,
    act: FusedAct,
}

/// A network on the device.
pub struct GpuNet {
    kind: NetworkKind,
    stages: Vec<Stage>,
    pool: bool,
    input_eps: f32,
}

impl GpuNet {
    /// Uploads the network `kind` with weights `w` (checked as on the CPU).
    pub fn new(gpu: &Gpu, kind: NetworkKind, w: &Weights) -> Result<GpuNet> {
        GpuNet::from_layers(gpu, kind, &kind.build(w)?)
    }

    /// Uploads the network `kind` built as `layers` (e.g. `AffNet::layers` of a network in
    /// memory).
    pub fn from_layers(gpu: &Gpu, kind: NetworkKind, layers: &Sequential) -> Result<GpuNet> {
        let folded = fold(layers).map_err(|e| Error::invalid(format!("gpu network: {e}")))?;
        let pool = folded.pool;
        let mut stages = Vec::with_capacity(folded.convs.len());
        for conv in folded.convs {
            stages.push(Stage {
                cin: conv.cin,
                cout: conv.cout,
                k: conv.k,
                stride: conv.stride,
                pad: conv.pad,
                weight: gpu.upload(&conv.weight)?,
                bias: gpu.upload(&conv.bias)?,
                act: conv.act,
            });
        }
        Ok(GpuNet {
            kind,
            stages,
            pool,
            input_eps: DEFAULT_INPUT_EPS,
        })
    }

    /// Loads weights from a file (as `AffNet::load` etc.) and uploads them.
    pub fn load(gpu: &Gpu, kind: NetworkKind, path: &std::path::Path) -> Result<GpuNet> {
        GpuNet::new(gpu, kind, &Weights::load(path)?)
    }

    /// Which network this is.
    pub fn kind(&self) -> NetworkKind {
        self.kind
    }

    /// Sets the input-normalisation epsilon (as `with_input_eps` on the CPU networks).
    pub fn with_input_eps(mut self, eps: f32) -> Self {
        self.input_eps = eps;
        self
    }

    /// The network's outputs for `patches` (`n` 32×32 patches on the device): `n × 3` raw AffNet
    /// outputs, `n × 2` OriNet outputs, or `n × 128` unit-length HardNet descriptors, exactly
    /// what `forward_raw` / `describe` return on the CPU.
    pub fn run(&self, gpu: &Gpu, patches: &Buf) -> Result<Buf> {
        if !patches.len().is_multiple_of(PATCH_LEN) {
            return Err(Error::invalid(format!(
                "gpu {}: {} values are not whole 32×32 patches",
                self.kind,
                patches.len()
            )));
        }
        let n = patches.len() / PATCH_LEN;
        if n == 0 {
            return gpu.zeros(0);
        }
        let mut x = gpu.zeros::<f32>(patches.len())?;
        ops::standardise(gpu, patches, PATCH_LEN, self.input_eps, &mut x)?;
        let (mut h, mut w) = (PATCH_SIZE, PATCH_SIZE);
        for st in &self.stages {
            let g = ConvGeometry::new(n, h, w, st.cin, st.cout, st.k, st.stride, st.pad)?;
            let mut y = gpu.zeros::<f32>(g.out_len())?;
            ops::conv2d_forward(
                gpu,
                &g,
                &x,
                &st.weight,
                Some(&st.bias),
                InputMap::default(),
                st.act,
                &mut y,
            )?;
            x = y;
            (h, w) = (g.oh, g.ow);
        }
        let c = self.stages[self.stages.len() - 1].cout;
        if self.pool {
            let mut y = gpu.zeros::<f32>(n * c)?;
            ops::global_avg_pool_forward(gpu, &x, n, c, &mut y)?;
            return Ok(y);
        }
        if self.kind == NetworkKind::HardNet {
            let mut y = gpu.zeros::<f32>(x.len())?;
            ops::l2_normalise(gpu, &x, c * h * w, L2_NORM_EPS as f32, &mut y)?;
            return Ok(y);
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::{conv2d_forward, ConvInput, ConvShape, InputMap as CpuMap};
    use crate::nn::{random_patches, random_weights, AffNet, HardNet, OriNet};

    /// The device network's recipe (standardise, folded NHWC convs with fused activations, pool
    /// or L2) run with the CPU's NHWC layers: the same numbers as the CPU networks. This checks
    /// the folding and the layout without a GPU.
    fn emulate(kind: NetworkKind, w: &Weights, patches: &[f32]) -> Vec<f32> {
        let folded = fold(&kind.build(w).unwrap()).unwrap();
        let n = patches.len() / PATCH_LEN;
        let mut x: Vec<f32> = patches
            .chunks(PATCH_LEN)
            .flat_map(|p| crate::nn::normalise_patch(p, DEFAULT_INPUT_EPS))
            .collect();
        let (mut h, mut wd) = (PATCH_SIZE, PATCH_SIZE);
        let mut c = 1;
        for conv in &folded.convs {
            let cs = ConvShape {
                cin: conv.cin,
                cout: conv.cout,
                k: conv.k,
                stride: conv.stride,
                padding: conv.pad,
            };
            let (oh, ow) = cs.out_size(h, wd);
            let mut y = vec![0.0; n * oh * ow * conv.cout];
            let input = ConvInput {
                data: &x,
                n,
                h,
                w: wd,
                map: CpuMap::IDENTITY,
            };
            conv2d_forward(&cs, &input, &conv.weight, Some(&conv.bias), &mut y, None);
            conv.act.apply(&mut y);
            (x, h, wd, c) = (y, oh, ow, conv.cout);
        }
        if folded.pool {
            let mut y = vec![0.0; n * c];
            crate::nn::ops::global_avg_pool_forward(&x, n, c, &mut y);
            return y;
        }
        x.chunks_mut(c * h * wd).for_each(crate::nn::l2_normalise);
        x
    }

    #[test]
    fn folded_nhwc_recipe_matches_the_cpu_networks() {
        let patches = random_patches(5, 11);
        for kind in NetworkKind::ALL {
            let w = random_weights(kind, 3);
            let cpu: Vec<f32> = match kind {
                NetworkKind::AffNet => AffNet::from_weights(&w)
                    .unwrap()
                    .forward_raw(&patches)
                    .concat(),
                NetworkKind::OriNet => OriNet::from_weights(&w)
                    .unwrap()
                    .forward_raw(&patches)
                    .concat(),
                NetworkKind::HardNet => HardNet::from_weights(&w).unwrap().describe(&patches),
            };
            let got = emulate(kind, &w, &patches);
            assert_eq!(got.len(), cpu.len(), "{kind}");
            let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in got.iter().zip(&cpu) {
                assert!((a - b).abs() <= 1e-4 * scale, "{kind}: {a} vs {b}");
            }
        }
    }
}
