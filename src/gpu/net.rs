//! AffNet, OriNet and HardNet inference on the device, from the same weights (safetensors or
//! `.pth`) and the same architecture description (`nn::ModelKind`) as the CPU.
//!
//! As the CPU engine (`nn::engine`), each batch norm is folded into the convolution before it and
//! every activation is fused into the convolution's output, so a network is its per-patch input
//! standardisation, six or seven [`ops::conv2d_forward`] launches, and a global average pool
//! (AffNet, OriNet) or an L2 normalisation (HardNet). Activations are NHWC on the device; a
//! batch of 16,384 HardNet patches needs about 2.2 GB for the largest pair of buffers.

use super::ops::{self, Buf, Fused, InputMap};
use super::shapes::ConvGeometry;
use super::Gpu;
use crate::nn::layers::{Layer, Sequential};
use crate::nn::{ModelKind, Weights, DEFAULT_INPUT_EPS, L2_NORM_EPS, PATCH_LEN, PATCH_SIZE};
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
    act: Fused,
}

/// A network on the device.
pub struct GpuNet {
    kind: ModelKind,
    stages: Vec<Stage>,
    pool: bool,
    input_eps: f32,
}

/// The folded stages of `seq` on the host: (cin, cout, k, stride, pad, GEMM-layout weights,
/// bias, activation), and whether a global average pool ends the network. The same folding as
/// `nn::engine::Plan::new`.
#[allow(clippy::type_complexity)]
pub(crate) fn fold(
    seq: &Sequential,
) -> Result<(
    Vec<(usize, usize, usize, usize, usize, Vec<f32>, Vec<f32>, Fused)>,
    bool,
)> {
    let mut stages: Vec<(usize, usize, usize, usize, usize, Vec<f32>, Vec<f32>, Fused)> =
        Vec::new();
    let mut pool = false;
    let unsupported = |what: &str| Error::invalid(format!("gpu network: {what}"));
    for layer in &seq.layers {
        if pool {
            return Err(unsupported("layers after global pooling are not supported"));
        }
        match layer {
            Layer::Conv2d(c) => {
                let (k, cin, cout) = (c.k, c.cin, c.cout);
                let w = c.gemm_weights();
                let b = c.bias.clone().unwrap_or_else(|| vec![0.0; cout]);
                stages.push((cin, cout, k, c.stride, c.padding, w, b, Fused::None));
            }
            Layer::BatchNorm2d(bn) => {
                let st = match stages.last_mut() {
                    Some(st) if st.7 == Fused::None && st.1 == bn.channels() => st,
                    _ => return Err(unsupported("batch norm must directly follow a conv")),
                };
                let (scale, shift) = bn.scale_shift();
                let cout = st.1;
                for row in st.5.chunks_mut(cout) {
                    row.iter_mut().zip(&scale).for_each(|(v, s)| *v *= s);
                }
                for ((b, s), t) in st.6.iter_mut().zip(&scale).zip(&shift) {
                    *b = *b * s + t;
                }
            }
            Layer::Relu | Layer::Tanh => match stages.last_mut() {
                Some(st) if st.7 == Fused::None => {
                    st.7 = if *layer == Layer::Relu {
                        Fused::Relu
                    } else {
                        Fused::Tanh
                    }
                }
                _ => {
                    return Err(unsupported(
                        "an activation must follow a conv or batch norm",
                    ))
                }
            },
            Layer::Dropout(_) => {}
            Layer::GlobalAvgPool => pool = true,
        }
    }
    if stages.is_empty() {
        return Err(unsupported("no conv layer"));
    }
    Ok((stages, pool))
}

impl GpuNet {
    /// Uploads the network `kind` with weights `w` (checked as on the CPU).
    pub fn new(gpu: &Gpu, kind: ModelKind, w: &Weights) -> Result<GpuNet> {
        GpuNet::from_layers(gpu, kind, &kind.build(w)?)
    }

    /// Uploads the network `kind` built as `layers` (e.g. `AffNet::layers` of a network in
    /// memory).
    pub fn from_layers(gpu: &Gpu, kind: ModelKind, layers: &Sequential) -> Result<GpuNet> {
        let (host, pool) = fold(layers)?;
        let mut stages = Vec::with_capacity(host.len());
        for (cin, cout, k, stride, pad, weight, bias, act) in host {
            stages.push(Stage {
                cin,
                cout,
                k,
                stride,
                pad,
                weight: gpu.upload(&weight)?,
                bias: gpu.upload(&bias)?,
                act,
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
    pub fn load(gpu: &Gpu, kind: ModelKind, path: &std::path::Path) -> Result<GpuNet> {
        GpuNet::new(gpu, kind, &Weights::load(path)?)
    }

    pub fn kind(&self) -> ModelKind {
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
        if self.kind == ModelKind::HardNet {
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
    fn emulate(kind: ModelKind, w: &Weights, patches: &[f32]) -> Vec<f32> {
        let (stages, pool) = fold(&kind.build(w).unwrap()).unwrap();
        let n = patches.len() / PATCH_LEN;
        let mut x: Vec<f32> = patches
            .chunks(PATCH_LEN)
            .flat_map(|p| crate::nn::normalise_patch(p, DEFAULT_INPUT_EPS))
            .collect();
        let (mut h, mut wd) = (PATCH_SIZE, PATCH_SIZE);
        let mut c = 1;
        for (cin, cout, k, stride, pad, weight, bias, act) in &stages {
            let cs = ConvShape {
                cin: *cin,
                cout: *cout,
                k: *k,
                stride: *stride,
                padding: *pad,
            };
            let (oh, ow) = cs.out_size(h, wd);
            let mut y = vec![0.0; n * oh * ow * cout];
            let input = ConvInput {
                data: &x,
                n,
                h,
                w: wd,
                map: CpuMap::IDENTITY,
            };
            conv2d_forward(&cs, &input, weight, Some(bias), &mut y, None);
            match act {
                Fused::None => {}
                Fused::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
                Fused::Tanh => y.iter_mut().for_each(|v| *v = v.tanh()),
            }
            (x, h, wd, c) = (y, oh, ow, *cout);
        }
        if pool {
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
        for kind in ModelKind::ALL {
            let w = random_weights(kind, 3);
            let cpu: Vec<f32> = match kind {
                ModelKind::AffNet => AffNet::from_weights(&w)
                    .unwrap()
                    .forward_raw(&patches)
                    .concat(),
                ModelKind::OriNet => OriNet::from_weights(&w)
                    .unwrap()
                    .forward_raw(&patches)
                    .concat(),
                ModelKind::HardNet => HardNet::from_weights(&w).unwrap().describe(&patches),
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
