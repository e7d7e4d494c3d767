//! The networks' layers as loaded from weights (one type per PyTorch module the three networks
//! use), with a plain NCHW forward pass: the reference the fast inference path (`engine`) is tested
//! against. The convolution runs through the one CPU convolution op (`nn::ops::conv2d_forward`,
//! also the training network's); batch norm, the activations and pooling are written out here.

use super::ops::{conv2d_forward, ConvInput, ConvShape, InputMap};
use super::tensor::Tensor;

/// PyTorch's default BatchNorm epsilon, used by all three networks.
pub const BATCHNORM_EPS: f32 = 1e-5;

/// A 2-D convolution with a square `k × k` kernel (PyTorch `Conv2d`, zero padding).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel size (`k × k`).
    pub k: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// `[cout, cin, k, k]`, row-major.
    pub weight: Vec<f32>,
    /// `[cout]`, or `None` for `bias=False`.
    pub bias: Option<Vec<f32>>,
}

/// Conv weights from PyTorch's `[co][ci][ky][kx]` to the GEMM layout `[(ky·k + kx)·cin + ci][co]`
/// (one row per input tap, one column per output channel) that the im2col/implicit-GEMM
/// convolutions of the CPU engine, the training layers and the CUDA kernels all take.
pub fn torch_to_gemm_layout(k: usize, cin: usize, cout: usize, torch: &[f32], gemm: &mut [f32]) {
    assert_eq!(torch.len(), k * k * cin * cout, "conv weight length");
    assert_eq!(gemm.len(), torch.len(), "conv weight length");
    for co in 0..cout {
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    gemm[((ky * k + kx) * cin + ci) * cout + co] =
                        torch[((co * cin + ci) * k + ky) * k + kx];
                }
            }
        }
    }
}

impl Conv2d {
    /// The weights in the GEMM layout ([`torch_to_gemm_layout`]).
    pub fn gemm_weights(&self) -> Vec<f32> {
        let mut gemm = vec![0.0; self.weight.len()];
        torch_to_gemm_layout(self.k, self.cin, self.cout, &self.weight, &mut gemm);
        gemm
    }

    /// # Panics
    /// If the weight or bias length does not match, or `k` or `stride` is zero.
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Self {
        assert!(
            k > 0 && stride > 0,
            "kernel size and stride must be positive"
        );
        assert_eq!(weight.len(), cout * cin * k * k, "conv weight length");
        if let Some(b) = &bias {
            assert_eq!(b.len(), cout, "conv bias length");
        }
        Conv2d {
            cin,
            cout,
            k,
            stride,
            padding,
            weight,
            bias,
        }
    }

    /// Output height and width for an `h × w` input.
    ///
    /// # Panics
    /// If the padded input is smaller than the kernel.
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        self.shape().out_size(h, w)
    }

    /// The convolution's shape as the CPU op takes it.
    pub fn shape(&self) -> ConvShape {
        ConvShape {
            cin: self.cin,
            cout: self.cout,
            k: self.k,
            stride: self.stride,
            padding: self.padding,
        }
    }

    /// The convolution, by the CPU op every path shares (`nn::ops::conv2d_forward`, NHWC): the
    /// NCHW tensor is transposed in and out.
    ///
    /// # Panics
    /// If the input channel count differs from `cin`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        assert_eq!(x.c(), self.cin, "conv input channels");
        let (n, h, w) = (x.n(), x.h(), x.w());
        let (oh, ow) = self.out_size(h, w);
        let mut out = Tensor::zeros([n, self.cout, oh, ow]);
        if out.data.is_empty() {
            return out;
        }
        let shape = self.shape();
        let nhwc = to_nhwc(&x.data, n, self.cin, h * w);
        let input = ConvInput {
            data: &nhwc,
            n,
            h,
            w,
            map: InputMap::IDENTITY,
        };
        let mut y = vec![0.0; n * oh * ow * self.cout];
        let weight = self.gemm_weights();
        conv2d_forward(&shape, &input, &weight, self.bias.as_deref(), &mut y, None);
        out.data = to_nchw(&y, n, self.cout, oh * ow);
        out
    }
}

/// `[n][c][p]` → `[n][p][c]`.
fn to_nhwc(x: &[f32], n: usize, c: usize, pixels: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for ci in 0..c {
            for p in 0..pixels {
                out[(b * pixels + p) * c + ci] = x[(b * c + ci) * pixels + p];
            }
        }
    }
    out
}

/// `[n][p][c]` → `[n][c][p]`.
fn to_nchw(x: &[f32], n: usize, c: usize, pixels: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for p in 0..pixels {
            for ci in 0..c {
                out[(b * c + ci) * pixels + p] = x[(b * pixels + p) * c + ci];
            }
        }
    }
    out
}

/// Inference-mode `BatchNorm2d(affine=False)`: `(x − running_mean) / sqrt(running_var + eps)`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm2d {
    /// Per-channel running mean.
    pub running_mean: Vec<f32>,
    /// Per-channel running (unbiased) variance.
    pub running_var: Vec<f32>,
    /// Added to the variance before the square root.
    pub eps: f32,
}

impl BatchNorm2d {
    /// # Panics
    /// If the two statistics differ in length.
    pub fn new(running_mean: Vec<f32>, running_var: Vec<f32>) -> Self {
        assert_eq!(
            running_mean.len(),
            running_var.len(),
            "batch norm statistics"
        );
        BatchNorm2d {
            running_mean,
            running_var,
            eps: BATCHNORM_EPS,
        }
    }

    /// The number of channels normalised.
    pub fn channels(&self) -> usize {
        self.running_mean.len()
    }

    /// The per-channel `(scale, shift)` with `y = x·scale + shift`, for folding into a convolution.
    pub fn scale_shift(&self) -> (Vec<f32>, Vec<f32>) {
        self.running_mean
            .iter()
            .zip(&self.running_var)
            .map(|(&m, &v)| {
                let scale = 1.0 / (v as f64 + self.eps as f64).sqrt();
                (scale as f32, (-(m as f64) * scale) as f32)
            })
            .unzip()
    }

    /// # Panics
    /// If the input channel count differs.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        assert_eq!(x.c(), self.channels(), "batch norm channels");
        let plane = x.h() * x.w();
        let mut out = x.clone();
        if plane == 0 {
            return out;
        }
        for (i, chunk) in out.data.chunks_mut(plane).enumerate() {
            let c = i % self.channels();
            let (m, d) = (
                self.running_mean[c],
                (self.running_var[c] + self.eps).sqrt(),
            );
            chunk.iter_mut().for_each(|v| *v = (*v - m) / d);
        }
        out
    }
}

/// One module of a `Sequential`, mirroring PyTorch's `nn.Sequential` indices so that weight
/// names (`features.<index>.weight`) map straight onto positions.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// `Conv2d`.
    Conv2d(Conv2d),
    /// `BatchNorm2d` with running statistics.
    BatchNorm2d(BatchNorm2d),
    /// `ReLU`: `max(x, 0)`.
    Relu,
    /// `Tanh`.
    Tanh,
    /// Dropout with its training probability; the identity at inference.
    Dropout(f32),
    /// `AdaptiveAvgPool2d(1)`: the mean of each channel.
    GlobalAvgPool,
}

impl Layer {
    /// The layer applied to an NCHW tensor (inference mode).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Layer::Conv2d(conv) => conv.forward(x),
            Layer::BatchNorm2d(bn) => bn.forward(x),
            Layer::Relu => x.clone().map(|v| v.max(0.0)),
            Layer::Tanh => x.clone().map(f32::tanh),
            Layer::Dropout(_) => x.clone(),
            Layer::GlobalAvgPool => global_avg_pool(x),
        }
    }
}

/// `[n, c, h, w] → [n, c, 1, 1]`, the mean over each plane.
pub fn global_avg_pool(x: &Tensor) -> Tensor {
    let plane = x.h() * x.w();
    let data = if plane == 0 {
        vec![0.0; x.n() * x.c()]
    } else {
        x.data
            .chunks(plane)
            .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32)
            .collect()
    };
    Tensor::from_vec([x.n(), x.c(), 1, 1], data)
}

/// Layers applied in order (PyTorch `nn.Sequential`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Sequential {
    /// The layers, at their PyTorch indices.
    pub layers: Vec<Layer>,
}

impl Sequential {
    /// The layers applied to `x` in order (inference mode).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut y = x.clone();
        for layer in &self.layers {
            y = layer.forward(&y);
        }
        y
    }
}
