//! Inference networks folded for speed: each batch norm (running statistics) folded into the
//! convolution before it, each ReLU or tanh fused into that convolution's output, dropout dropped.
//! One folding for every backend: the CPU engine (`nn::engine`) and the CUDA networks
//! (`gpu::net`) both start from [`fold`].

use super::layers::{Layer, Sequential};

/// The activation fused into a convolution's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedAct {
    /// None: the raw (batch-normalised) output.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
}

impl FusedAct {
    /// Applies the activation in place (the CPU's reading of a fused output).
    pub fn apply(self, y: &mut [f32]) {
        match self {
            FusedAct::None => {}
            FusedAct::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
            FusedAct::Tanh => super::ops::tanh_forward(y),
        }
    }
}

/// One convolution with its batch norm folded in and its activation fused.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedConv {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel size (square).
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub pad: usize,
    /// Weights in GEMM layout `[(ky·k + kx)·cin + ci][co]`, the batch norm's scale folded in.
    pub weight: Vec<f32>,
    /// One bias per output channel, the batch norm's shift folded in (zeros without a bias).
    pub bias: Vec<f32>,
    /// The activation applied to the output.
    pub act: FusedAct,
}

impl FoldedConv {
    /// Output height and width for an `h × w` input, or `None` when the padded input is smaller
    /// than the kernel.
    pub fn out_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (hp, wp) = (h + 2 * self.pad, w + 2 * self.pad);
        (hp >= self.k && wp >= self.k).then(|| {
            (
                (hp - self.k) / self.stride + 1,
                (wp - self.k) / self.stride + 1,
            )
        })
    }
}

/// A network as folded convolutions.
#[derive(Clone, Debug, PartialEq)]
pub struct Folded {
    /// The convolutions, in order.
    pub convs: Vec<FoldedConv>,
    /// Whether a global average pool ends the network.
    pub pool: bool,
}

/// Folds `seq`: conv (+ batch norm) (+ ReLU | tanh) stages, dropout (skipped, as in inference) and
/// a final global average pool. Anything else is an error that says what is not supported.
pub fn fold(seq: &Sequential) -> Result<Folded, String> {
    let mut convs: Vec<FoldedConv> = Vec::new();
    let mut pool = false;
    for layer in &seq.layers {
        if pool {
            return Err("layers after global pooling are not supported".into());
        }
        match layer {
            Layer::Conv2d(c) => convs.push(FoldedConv {
                cin: c.cin,
                cout: c.cout,
                k: c.k,
                stride: c.stride,
                pad: c.padding,
                weight: c.gemm_weights(),
                bias: c.bias.clone().unwrap_or_else(|| vec![0.0; c.cout]),
                act: FusedAct::None,
            }),
            Layer::BatchNorm2d(bn) => {
                let st = match convs.last_mut() {
                    Some(st) if st.act == FusedAct::None && bn.channels() == st.cout => st,
                    _ => return Err("batch norm must directly follow a conv".into()),
                };
                let (scale, shift) = bn.scale_shift();
                for row in st.weight.chunks_mut(st.cout) {
                    row.iter_mut().zip(&scale).for_each(|(v, s)| *v *= s);
                }
                for ((b, s), t) in st.bias.iter_mut().zip(&scale).zip(&shift) {
                    *b = *b * s + t;
                }
            }
            Layer::Relu | Layer::Tanh => match convs.last_mut() {
                Some(st) if st.act == FusedAct::None => {
                    st.act = if *layer == Layer::Relu {
                        FusedAct::Relu
                    } else {
                        FusedAct::Tanh
                    }
                }
                _ => return Err("an activation must follow a conv or batch norm".into()),
            },
            Layer::Dropout(_) => {}
            Layer::GlobalAvgPool => pool = true,
        }
    }
    if convs.is_empty() {
        return Err("nothing to compute: no conv layer".into());
    }
    Ok(Folded { convs, pool })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{random_weights, NetworkKind};

    #[test]
    fn batch_norm_folds_into_the_conv_before_it() {
        let seq = NetworkKind::AffNet
            .build(&random_weights(NetworkKind::AffNet, 3))
            .unwrap();
        let folded = fold(&seq).unwrap();
        // AffNet: seven convs, BN after all but the last, ReLU after the first six, tanh last.
        assert_eq!(folded.convs.len(), 7);
        assert!(folded.pool);
        assert_eq!(folded.convs[6].act, FusedAct::Tanh);
        // The first conv has no bias: its folded bias is the batch norm's shift alone.
        let (Layer::Conv2d(conv), Layer::BatchNorm2d(bn)) = (&seq.layers[0], &seq.layers[1]) else {
            panic!("AffNet starts with conv, batch norm");
        };
        let (scale, shift) = bn.scale_shift();
        let first = &folded.convs[0];
        assert_eq!(first.bias, shift);
        let raw = conv.gemm_weights();
        for (i, (f, r)) in first.weight.iter().zip(&raw).enumerate() {
            assert_eq!(*f, r * scale[i % first.cout]);
        }
    }

    #[test]
    fn unsupported_orders_are_refused() {
        let seq = Sequential {
            layers: vec![Layer::Relu],
        };
        assert!(fold(&seq).unwrap_err().contains("activation"));
        let seq = Sequential { layers: vec![] };
        assert!(fold(&seq).unwrap_err().contains("no conv"));
    }
}
