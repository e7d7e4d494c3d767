//! A trainable network built from an architecture of `nn::arch` (AffNet, OriNet or HardNet): the
//! same layers, the same state_dict names, so trained weights save with `Weights::save` and load
//! into the inference networks of `nn`.
//!
//! The network is a list of stages, each `[dropout] → conv → [batch norm] → [ReLU | tanh]`, then
//! an optional global average pool, with the authors' per-patch input standardisation in front:
//! `x ← (x − mean) / (std + eps)` (unbiased std), where mean and std are *detached* (constants
//! for the gradient, as `.detach()` in ducha-aiki/affnet `AffNetFast.input_norm`), so the input
//! gradient is simply `dx_normalised / (std + eps)`.
//!
//! Modes: [`Mode::Train`] uses batch statistics in batch norm (and updates the running statistics
//! unless [`Network::update_running_stats`] is off) and active dropout with a seeded mask;
//! [`Mode::Eval`] uses the running statistics and no dropout (= `nn::AffNet` etc.).
//!
//! Memory and passes: a [`Workspace`] keeps, per stage, only the raw convolution output `z` and
//! the batch-norm statistics. The convolution accumulates the statistics while its output blocks
//! are in cache; the next layer reads `relu((z − μ)·inv_std)` through its fused [`InputMap`]; the
//! backward pass recomputes `x̂` and the ReLU mask from `z`. So batch norm and ReLU cost no pass of
//! their own in the forward direction, and AffNet keeps 56 k floats (224 KiB) per patch.
//! Buffers are reused between calls, so a training loop allocates nothing after its first step.
//!
//! Parameters live in one flat vector (PyTorch layouts, [`ParamSpec`] gives names and offsets), so
//! the optimiser, checkpoints and gradient checks treat them uniformly. Convolution weights are
//! converted to GEMM layout once per forward pass.

use rayon::prelude::*;

use super::ops::batchnorm::{backward_eval, backward_train};
#[cfg(test)]
use super::ops::dropout::dropout_keep;
use super::ops::{
    conv2d_backward, conv2d_forward, dropout_backward, dropout_forward, relu_backward,
    tanh_backward, tanh_forward, BatchNorm, BatchStats, ConvGrads, ConvInput, ConvShape, InputMap,
    Moments,
};
use super::rng::{mix64, Rng};
use crate::nn::arch::{LayerSpec, NetworkKind};
use crate::nn::{Weights, META_MODEL};
use crate::{Error, Result};

/// What a stage applies after its convolution (and batch norm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    None,
    Relu,
    Tanh,
}

#[derive(Clone, Debug)]
struct Stage {
    conv: ConvShape,
    /// Input size of the stage (unpadded) and output size.
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    weight_offset: usize,
    bias_offset: Option<usize>,
    /// `(index into Network::bns, index in features)`.
    bn: Option<(usize, usize)>,
    act: Act,
    /// Dropout probability on this stage's input.
    dropout: Option<f32>,
}

impl Stage {
    fn in_len(&self) -> usize {
        self.h * self.w * self.conv.cin
    }
    fn out_len(&self) -> usize {
        self.oh * self.ow * self.conv.cout
    }
}

/// One trainable tensor inside the flat parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// State-dict name, e.g. `features.0.weight`.
    pub name: String,
    /// Shape in PyTorch order.
    pub shape: Vec<usize>,
    /// Offset of the first value in `params()`.
    pub offset: usize,
}

impl ParamSpec {
    /// Number of values, the product of the shape.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the parameter holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Where its values are in `params()`.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// One stage of a [`Network`], from [`Network::stage_plan`]: `[dropout] → conv (+ bias) →
/// [batch norm] → [ReLU | tanh]`, NHWC activations, PyTorch-layout weights in `params()`.
#[derive(Clone, Debug, PartialEq)]
pub struct StagePlan {
    /// The convolution.
    pub conv: ConvShape,
    /// Input size (unpadded) and output size.
    pub h: usize,
    /// Input width (unpadded).
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Where the weights and the bias are in `params()`.
    pub weights: std::ops::Range<usize>,
    /// Where the bias is in `params()` (`None`: no bias).
    pub bias: Option<std::ops::Range<usize>>,
    /// Index into `batch_norms()` of the batch norm after the convolution.
    pub batch_norm: Option<usize>,
    /// ReLU after the batch norm.
    pub relu: bool,
    /// tanh after the convolution.
    pub tanh: bool,
    /// Dropout probability on the stage's input (training mode only).
    pub dropout: Option<f32>,
}

/// Training or inference behaviour of batch norm and dropout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Running statistics, no dropout.
    Eval,
    /// Batch statistics; dropout masks drawn from `seed` (the same seed gives the same masks).
    Train {
        /// Seed of the dropout masks.
        seed: u64,
    },
}

/// A trainable sequential network.
#[derive(Clone, Debug)]
pub struct Network {
    kind: NetworkKind,
    in_h: usize,
    in_w: usize,
    stages: Vec<Stage>,
    pool: bool,
    specs: Vec<ParamSpec>,
    params: Vec<f32>,
    bns: Vec<BatchNorm>,
    /// Epsilon of the input standardisation (`nn::DEFAULT_INPUT_EPS`, 1e-7, unless changed).
    pub input_eps: f32,
    /// Whether training-mode forward passes update the running statistics (PyTorch always
    /// does; a frozen descriptor may prefer not to).
    pub update_running_stats: bool,
    /// Whether inputs are standardised per item (on by default; off only to test the layers
    /// below it against finite differences, since the detached statistics make the input
    /// gradient differ from the true derivative of the standardised network by design).
    pub standardise_input: bool,
    gemm_weights: Vec<Vec<f32>>,
}

/// Everything a forward pass keeps for its backward pass, reused between calls.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    n: usize,
    mode: Option<Mode>,
    /// Per item `1 / (std + eps)` of the input standardisation.
    scale: Vec<f32>,
    input: Vec<f32>,
    /// Per stage: the raw convolution output `z` (batch norm and ReLU are applied by whoever
    /// reads it), or `tanh(z)` for a tanh stage.
    stored: Vec<Vec<f32>>,
    /// Per stage with active dropout: the dropped input the convolution read.
    dropped: Vec<Vec<f32>>,
    /// Per stage with batch norm: the statistics it normalised with (batch or running).
    stats: Vec<BatchStats>,
    moments: Vec<Moments>,
    output: Vec<f32>,
    grad_a: Vec<f32>,
    grad_b: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

impl Workspace {
    /// Items in the last forward pass.
    pub fn batch_size(&self) -> usize {
        self.n
    }

    /// The outputs of the last forward pass (`output_len` per item).
    pub fn output(&self) -> &[f32] {
        &self.output
    }
}

/// Where [`Network::backward`] writes.
#[derive(Debug, Default)]
pub struct NetGrads<'a> {
    /// Parameter gradients, *added* into this flat vector (same layout as the parameters).
    pub params: Option<&'a mut [f32]>,
    /// Gradient w.r.t. the raw input patches (through the detached standardisation); overwritten.
    pub input: Option<&'a mut [f32]>,
}

fn resize(v: &mut Vec<f32>, len: usize) {
    if v.len() != len {
        v.resize(len, 0.0);
    }
}

impl Network {
    /// The architecture `kind` for `in_h × in_w` single-channel inputs, with all parameters zero
    /// and fresh batch-norm statistics (mean 0, variance 1).
    pub fn new(kind: NetworkKind, in_h: usize, in_w: usize) -> Network {
        let mut stages: Vec<Stage> = Vec::new();
        let mut specs = Vec::new();
        let mut bns = Vec::new();
        let (mut c, mut h, mut w) = (1, in_h, in_w);
        let mut pending_dropout = None;
        let mut pool = false;
        let mut offset = 0;
        for (i, layer) in kind.spec().into_iter().enumerate() {
            match layer {
                LayerSpec::Conv {
                    cin,
                    cout,
                    k,
                    stride,
                    padding,
                    bias,
                } => {
                    assert_eq!(cin, c, "architecture channel mismatch");
                    let conv = ConvShape {
                        cin,
                        cout,
                        k,
                        stride,
                        padding,
                    };
                    let (oh, ow) = conv.out_size(h, w);
                    specs.push(ParamSpec {
                        name: format!("features.{i}.weight"),
                        shape: vec![cout, cin, k, k],
                        offset,
                    });
                    let weight_offset = offset;
                    offset += conv.weight_len();
                    let bias_offset = bias.then(|| {
                        specs.push(ParamSpec {
                            name: format!("features.{i}.bias"),
                            shape: vec![cout],
                            offset,
                        });
                        offset += cout;
                        offset - cout
                    });
                    stages.push(Stage {
                        conv,
                        h,
                        w,
                        oh,
                        ow,
                        weight_offset,
                        bias_offset,
                        bn: None,
                        act: Act::None,
                        dropout: pending_dropout.take(),
                    });
                    (c, h, w) = (cout, oh, ow);
                }
                LayerSpec::BatchNorm(ch) => {
                    let st = stages.last_mut().expect("batch norm follows a conv");
                    assert!(st.bn.is_none() && st.act == Act::None && ch == st.conv.cout);
                    st.bn = Some((bns.len(), i));
                    bns.push(BatchNorm::new(ch));
                }
                LayerSpec::Relu | LayerSpec::Tanh => {
                    let st = stages.last_mut().expect("activation follows a conv");
                    assert_eq!(st.act, Act::None);
                    st.act = if layer == LayerSpec::Relu {
                        Act::Relu
                    } else {
                        Act::Tanh
                    };
                }
                LayerSpec::Dropout(p) => pending_dropout = Some(p),
                LayerSpec::GlobalAvgPool => pool = true,
            }
        }
        let gemm_weights = stages
            .iter()
            .map(|s| vec![0.0; s.conv.weight_len()])
            .collect();
        Network {
            kind,
            in_h,
            in_w,
            stages,
            pool,
            specs,
            params: vec![0.0; offset],
            bns,
            input_eps: crate::nn::DEFAULT_INPUT_EPS,
            update_running_stats: true,
            standardise_input: true,
            gemm_weights,
        }
    }

    /// The network with `w`'s values (names and shapes checked by `NetworkKind::check`).
    pub fn from_weights(kind: NetworkKind, w: &Weights, in_h: usize, in_w: usize) -> Result<Self> {
        kind.check(w)?;
        let mut net = Network::new(kind, in_h, in_w);
        for spec in &net.specs {
            let t = w.get(&spec.name).expect("checked above");
            net.params[spec.range()].copy_from_slice(&t.data);
        }
        for st in &net.stages {
            if let Some((b, i)) = st.bn {
                let bn = &mut net.bns[b];
                for (name, dst) in [
                    ("running_mean", &mut bn.running_mean),
                    ("running_var", &mut bn.running_var),
                ] {
                    let t = w
                        .get(&format!("features.{i}.{name}"))
                        .ok_or_else(|| Error::Weights(format!("missing features.{i}.{name}")))?;
                    dst.copy_from_slice(&t.data);
                }
            }
        }
        Ok(net)
    }

    /// The state dict (parameters and running statistics) under the names of `nn::arch`.
    pub fn to_weights(&self) -> Weights {
        let mut w = Weights::new(format!("trained {}", self.kind));
        for spec in &self.specs {
            w.insert(
                spec.name.clone(),
                spec.shape.clone(),
                self.params[spec.range()].to_vec(),
            );
        }
        for st in &self.stages {
            if let Some((b, i)) = st.bn {
                let bn = &self.bns[b];
                let c = bn.channels();
                w.insert(
                    format!("features.{i}.running_mean"),
                    vec![c],
                    bn.running_mean.clone(),
                );
                w.insert(
                    format!("features.{i}.running_var"),
                    vec![c],
                    bn.running_var.clone(),
                );
            }
        }
        w.metadata
            .insert(META_MODEL.into(), self.kind.name().into());
        w
    }

    /// PyTorch's `nn.init.orthogonal_(weight, gain)` for every convolution (the weight viewed as
    /// `cout × cin·k·k`, rows or columns orthonormal, times `gain`) and `bias = bias_value`, as
    /// ducha-aiki/affnet's `weights_init` (gain 0.8, bias 0.01). Seeded.
    pub fn init_orthogonal(&mut self, gain: f32, bias_value: f32, seed: u64) {
        let mut rng = Rng::new(seed);
        for st in &self.stages {
            let (rows, cols) = (st.conv.cout, st.conv.kk());
            let q = orthogonal(rows, cols, &mut rng);
            for (dst, v) in self.params[st.weight_offset..st.weight_offset + rows * cols]
                .iter_mut()
                .zip(q)
            {
                *dst = (v * gain as f64) as f32;
            }
            if let Some(b) = st.bias_offset {
                self.params[b..b + st.conv.cout].fill(bias_value);
            }
        }
    }

    /// Which of the three networks this is.
    pub fn kind(&self) -> NetworkKind {
        self.kind
    }

    /// `(height, width)` of an input item.
    pub fn input_size(&self) -> (usize, usize) {
        (self.in_h, self.in_w)
    }

    /// Values per output item.
    pub fn output_len(&self) -> usize {
        let last = self.stages.last().expect("at least one stage");
        if self.pool {
            last.conv.cout
        } else {
            last.out_len()
        }
    }

    /// The parameters' names, shapes and offsets, in state-dict order.
    pub fn param_specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// Every parameter, back to back in state-dict order (PyTorch layouts).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The parameters, for an optimiser step.
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// The batch-norm layers in order (running statistics).
    pub fn batch_norms(&self) -> &[BatchNorm] {
        &self.bns
    }

    /// The batch-norm layers, to set their running statistics.
    pub fn batch_norms_mut(&mut self) -> &mut [BatchNorm] {
        &mut self.bns
    }

    /// Sets every dropout probability (e.g. 0.1 for affnet's copy of HardNet).
    pub fn set_dropout(&mut self, p: f32) {
        for st in &mut self.stages {
            if st.dropout.is_some() {
                st.dropout = Some(p);
            }
        }
    }

    /// The stages as another executor (the device chain, `train::chain::device`) needs them to run
    /// this network with the same parameters, statistics and dropout masks.
    pub fn stage_plan(&self) -> Vec<StagePlan> {
        self.stages
            .iter()
            .map(|st| StagePlan {
                conv: st.conv,
                h: st.h,
                w: st.w,
                oh: st.oh,
                ow: st.ow,
                weights: st.weight_offset..st.weight_offset + st.conv.weight_len(),
                bias: st.bias_offset.map(|b| b..b + st.conv.cout),
                batch_norm: st.bn.map(|(i, _)| i),
                relu: st.act == Act::Relu,
                tanh: st.act == Act::Tanh,
                dropout: st.dropout,
            })
            .collect()
    }

    /// Whether the output is globally average-pooled.
    pub fn pooled(&self) -> bool {
        self.pool
    }

    /// The seed of stage `stage`'s dropout mask in a training pass with `seed`
    /// (`layers::dropout`: element `i` is dropped iff `hash_uniform(mask seed, i) < p`).
    pub fn dropout_seed(seed: u64, stage: usize) -> u64 {
        mix64(seed ^ (stage as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    /// How consumers read stage `s`'s stored output: batch norm with `stats` and the ReLU fused
    /// (identity for a tanh stage, whose stored value is already the output).
    fn view_map<'a>(&self, s: usize, stats: &'a [BatchStats]) -> InputMap<'a> {
        let st = &self.stages[s];
        InputMap {
            affine: st.bn.map(|_| (&stats[s].mean[..], &stats[s].inv_std[..])),
            relu: st.act == Act::Relu,
        }
    }

    /// Runs the network on `input` (items of `in_h × in_w`, row-major, back to back) and
    /// returns `output_len` values per item (NCHW order when not pooled). In training mode,
    /// batch norm uses the statistics of this batch.
    ///
    /// # Panics
    /// If `input.len()` is not a whole number of items, or a training batch has one item only
    /// and a batch norm sees a single value per channel.
    pub fn forward<'w>(&mut self, input: &[f32], mode: Mode, ws: &'w mut Workspace) -> &'w [f32] {
        let item = self.in_h * self.in_w;
        assert!(
            item > 0 && input.len().is_multiple_of(item),
            "{}: {} values is not a whole number of {}×{} inputs",
            self.kind,
            input.len(),
            self.in_h,
            self.in_w
        );
        let n = input.len() / item;
        ws.n = n;
        ws.mode = Some(mode);
        let ns = self.stages.len();
        ws.stored.resize_with(ns, Vec::new);
        ws.dropped.resize_with(ns, Vec::new);
        ws.stats.resize_with(ns, BatchStats::default);
        for (s, st) in self.stages.iter().enumerate() {
            resize(&mut ws.stored[s], n * st.out_len());
            let dropping = st.dropout.is_some() && matches!(mode, Mode::Train { .. });
            resize(
                &mut ws.dropped[s],
                if dropping { n * st.in_len() } else { 0 },
            );
            st.conv.to_gemm_layout(
                &self.params[st.weight_offset..st.weight_offset + st.conv.weight_len()],
                &mut self.gemm_weights[s],
            );
        }
        resize(&mut ws.input, n * item);
        resize(&mut ws.scale, n);
        if self.standardise_input {
            standardise(input, item, self.input_eps, &mut ws.input, &mut ws.scale);
        } else {
            ws.input.copy_from_slice(input);
            ws.scale.fill(1.0);
        }

        for s in 0..ns {
            let st = &self.stages[s];
            let (before, after) = ws.stored.split_at_mut(s);
            let out = &mut after[0];
            let (mut x, mut map): (&[f32], InputMap) = if s == 0 {
                (&ws.input, InputMap::IDENTITY)
            } else {
                (&before[s - 1], self.view_map(s - 1, &ws.stats))
            };
            if let (Some(p), Mode::Train { seed }) = (st.dropout, mode) {
                let ds = Self::dropout_seed(seed, s);
                dropout_forward(x, p, ds, map, st.conv.cin, &mut ws.dropped[s]);
                (x, map) = (&ws.dropped[s], InputMap::IDENTITY);
            }
            let bias = st.bias_offset.map(|b| &self.params[b..b + st.conv.cout]);
            let batch_stats = st.bn.is_some() && matches!(mode, Mode::Train { .. });
            conv2d_forward(
                &st.conv,
                &ConvInput {
                    data: x,
                    n,
                    h: st.h,
                    w: st.w,
                    map,
                },
                &self.gemm_weights[s],
                bias,
                out,
                batch_stats.then_some(&mut ws.moments),
            );
            if let Some((b, _)) = st.bn {
                let bn = &mut self.bns[b];
                if batch_stats {
                    Moments::merge(&mut ws.moments, bn.eps, &mut ws.stats[s]);
                    if self.update_running_stats {
                        bn.update_running(&ws.stats[s]);
                    }
                } else {
                    ws.stats[s] = bn.running_stats();
                }
            }
            if st.act == Act::Tanh {
                tanh_forward(out);
            }
        }

        let last = &self.stages[ns - 1];
        let (hw, c) = (last.oh * last.ow, last.conv.cout);
        let map = self.view_map(ns - 1, &ws.stats);
        let stored = &ws.stored[ns - 1];
        resize(&mut ws.output, n * self.output_len());
        for (o, item) in ws
            .output
            .chunks_exact_mut(self.output_len())
            .zip(stored.chunks_exact(hw * c))
        {
            if self.pool {
                let mut acc = vec![0.0f64; c];
                for px in item.chunks_exact(c) {
                    for (ch, (a, &v)) in acc.iter_mut().zip(px).enumerate() {
                        *a += map.value(v, ch) as f64;
                    }
                }
                o.iter_mut()
                    .zip(&acc)
                    .for_each(|(o, a)| *o = (a / hw as f64) as f32);
            } else {
                for (p, px) in item.chunks_exact(c).enumerate() {
                    for (ch, &v) in px.iter().enumerate() {
                        o[ch * hw + p] = map.value(v, ch);
                    }
                }
            }
        }
        &ws.output
    }

    /// Back-propagates `d_output` (gradient w.r.t. the last forward's outputs) through the
    /// network. Parameter gradients are added into `grads.params`; the input gradient (w.r.t. the
    /// raw, unstandardised input) overwrites `grads.input`.
    ///
    /// # Panics
    /// If `ws` holds no forward pass of this network or a length does not match.
    pub fn backward(&self, ws: &mut Workspace, d_output: &[f32], grads: NetGrads) {
        let mode = ws.mode.expect("backward needs a forward pass first");
        let n = ws.n;
        assert_eq!(
            d_output.len(),
            n * self.output_len(),
            "output gradient length"
        );
        let NetGrads {
            params: mut dparams,
            input: dinput,
        } = grads;
        if let Some(p) = dparams.as_deref() {
            assert_eq!(p.len(), self.params.len(), "parameter gradient length");
        }
        let ns = self.stages.len();
        let max_len = self
            .stages
            .iter()
            .map(|s| s.in_len().max(s.out_len()))
            .max()
            .unwrap_or(0)
            * n;
        resize(&mut ws.grad_a, max_len);
        resize(&mut ws.grad_b, max_len);
        let Workspace {
            input,
            scale,
            stored,
            dropped,
            stats,
            grad_a,
            grad_b,
            dw,
            db,
            ..
        } = ws;
        let (mut g, mut gx) = (grad_a, grad_b);

        // Gradient w.r.t. the last stage's output view.
        let last = &self.stages[ns - 1];
        let (hw, c) = (last.oh * last.ow, last.conv.cout);
        {
            let gl = &mut g[..n * last.out_len()];
            for (d, item) in d_output
                .chunks_exact(self.output_len())
                .zip(gl.chunks_exact_mut(hw * c))
            {
                for (p, px) in item.chunks_exact_mut(c).enumerate() {
                    for (ch, v) in px.iter_mut().enumerate() {
                        *v = if self.pool {
                            d[ch] / hw as f32
                        } else {
                            d[ch * hw + p]
                        };
                    }
                }
            }
        }

        for s in (0..ns).rev() {
            let st = &self.stages[s];
            let out = &stored[s];
            let gs = &mut g[..n * st.out_len()];
            // Through the activation and batch norm, to the conv output.
            match st.act {
                Act::Tanh => tanh_backward(out, gs),
                Act::Relu if st.bn.is_none() => relu_backward(out, gs),
                _ => {}
            }
            if st.bn.is_some() {
                let relu = st.act == Act::Relu;
                match mode {
                    Mode::Train { .. } => backward_train(out, gs, &stats[s], relu),
                    Mode::Eval => backward_eval(out, gs, &stats[s], relu),
                }
            }
            // Through the convolution.
            let dropping = st.dropout.filter(|_| matches!(mode, Mode::Train { .. }));
            let (x, map): (&[f32], InputMap) = if dropping.is_some() {
                (&dropped[s], InputMap::IDENTITY)
            } else if s == 0 {
                (input, InputMap::IDENTITY)
            } else {
                (&stored[s - 1], self.view_map(s - 1, stats))
            };
            let want_dx = s > 0 || dinput.is_some();
            resize(dw, st.conv.weight_len());
            resize(db, st.conv.cout);
            let want_params = dparams.is_some();
            conv2d_backward(
                &st.conv,
                &ConvInput {
                    data: x,
                    n,
                    h: st.h,
                    w: st.w,
                    map,
                },
                &self.gemm_weights[s],
                gs,
                ConvGrads {
                    input: want_dx.then(|| &mut gx[..n * st.in_len()]),
                    weight: want_params.then_some(&mut dw[..]),
                    bias: (want_params && st.bias_offset.is_some()).then_some(&mut db[..]),
                },
            );
            if let Some(p) = dparams.as_deref_mut() {
                let range = st.weight_offset..st.weight_offset + st.conv.weight_len();
                st.conv.add_to_torch_layout(dw, &mut p[range]);
                if let Some(b) = st.bias_offset {
                    p[b..b + st.conv.cout]
                        .iter_mut()
                        .zip(db.iter())
                        .for_each(|(a, v)| *a += v);
                }
            }
            if let (Some(p), Mode::Train { seed }, true) = (dropping, mode, want_dx) {
                dropout_backward(&mut gx[..n * st.in_len()], p, Self::dropout_seed(seed, s));
            }
            std::mem::swap(&mut g, &mut gx);
        }

        if let Some(di) = dinput {
            let item = self.in_h * self.in_w;
            assert_eq!(di.len(), n * item, "input gradient length");
            di.par_chunks_mut(item)
                .zip(g[..n * item].par_chunks(item))
                .zip(scale.par_iter())
                .for_each(|((d, gi), s)| d.iter_mut().zip(gi).for_each(|(d, g)| *d = g * s));
        }
    }
}

/// Per-item `(x − mean) / (std + eps)` with the unbiased std (as `nn::normalise_patch`), and the
/// per-item factor `1 / (std + eps)`.
fn standardise(input: &[f32], item: usize, eps: f32, out: &mut [f32], scale: &mut [f32]) {
    out.par_chunks_mut(item)
        .zip(input.par_chunks(item))
        .zip(scale.par_iter_mut())
        .for_each(|((o, x), s)| {
            let (mean, k) = standardise_moments(x, eps);
            *s = k as f32;
            o.iter_mut()
                .zip(x)
                .for_each(|(o, &v)| *o = ((v as f64 - mean) * k) as f32);
        });
}

/// An item's mean and `1 / (std + eps)` (unbiased std), in f64: what [`standardise`] applies, and
/// the factor its backward multiplies by (the statistics held fixed).
pub(crate) fn standardise_moments(x: &[f32], eps: f32) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, 1.0 / (var.sqrt() + eps as f64))
}

/// A `rows × cols` matrix with orthonormal rows (rows ≤ cols) or columns, row-major, following
/// `torch.nn.init.orthogonal_`: QR of a Gaussian matrix (transposed when rows < cols), Q's columns
/// multiplied by the signs of R's diagonal.
fn orthogonal(rows: usize, cols: usize, rng: &mut Rng) -> Vec<f64> {
    let (r, c) = if rows < cols {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let a = nalgebra::DMatrix::<f64>::from_fn(r, c, |_, _| rng.normal());
    let qr = a.qr();
    let (mut q, rr) = (qr.q(), qr.r());
    for j in 0..c {
        if rr[(j, j)] < 0.0 {
            q.column_mut(j).neg_mut();
        }
    }
    let mut out = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            out[i * cols + j] = if rows < cols { q[(j, i)] } else { q[(i, j)] };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_gradient, random_vec};

    #[test]
    fn orthogonal_rows_or_columns() {
        let mut rng = Rng::new(1);
        for (rows, cols) in [(3, 10), (10, 3), (4, 4)] {
            let q = orthogonal(rows, cols, &mut rng);
            let (m, len, stride, step) = if rows <= cols {
                (rows, cols, cols, 1)
            } else {
                (cols, rows, 1, cols)
            };
            for a in 0..m {
                for b in 0..m {
                    let dot: f64 = (0..len)
                        .map(|k| q[a * stride + k * step] * q[b * stride + k * step])
                        .sum();
                    assert!((dot - (a == b) as u8 as f64).abs() < 1e-10);
                }
            }
        }
    }

    /// An independent float64 forward pass of a [`Network`] with `params`, straight from the
    /// layer definitions (naive convolution, two-pass batch statistics), returning `Σ r·y`.
    /// Finite differences of this, with steps of 1e-5 where f64 rounding noise is ~1e-11, are
    /// the oracle for the f32 backward pass: f32 differences through seven ReLU layers are too
    /// noisy (and cross too many kinks) to judge per-coordinate gradients.
    fn reference_loss(net: &Network, params: &[f32], x: &[f32], mode: Mode, r: &[f32]) -> f64 {
        let item = net.in_h * net.in_w;
        let n = x.len() / item;
        let mut cur: Vec<f64> = Vec::with_capacity(x.len());
        for p in x.chunks(item) {
            let v: Vec<f64> = p.iter().map(|&v| v as f64).collect();
            if net.standardise_input {
                let mean = v.iter().sum::<f64>() / item as f64;
                let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (item - 1) as f64;
                let k = 1.0 / (var.sqrt() + net.input_eps as f64);
                cur.extend(v.iter().map(|a| (a - mean) * k));
            } else {
                cur.extend(v);
            }
        }
        let mut relu_prev = false;
        for (s, st) in net.stages.iter().enumerate() {
            let cs = st.conv;
            let mut inp: Vec<f64> = cur
                .iter()
                .map(|&v| if relu_prev { v.max(0.0) } else { v })
                .collect();
            if let (Some(p), Mode::Train { seed }) = (st.dropout, mode) {
                let ds = Network::dropout_seed(seed, s);
                for (i, v) in inp.iter_mut().enumerate() {
                    *v = if dropout_keep(ds, i, p) {
                        *v / (1.0 - p as f64)
                    } else {
                        0.0
                    };
                }
            }
            // Weights as [ky][kx][ci][co] in f64.
            let wt = &params[st.weight_offset..st.weight_offset + cs.weight_len()];
            let mut wk = vec![0.0f64; cs.weight_len()];
            for co in 0..cs.cout {
                for ci in 0..cs.cin {
                    for ky in 0..cs.k {
                        for kx in 0..cs.k {
                            wk[((ky * cs.k + kx) * cs.cin + ci) * cs.cout + co] =
                                wt[((co * cs.cin + ci) * cs.k + ky) * cs.k + kx] as f64;
                        }
                    }
                }
            }
            let mut out = vec![0.0f64; n * st.oh * st.ow * cs.cout];
            for b in 0..n {
                for oy in 0..st.oh {
                    for ox in 0..st.ow {
                        let o = &mut out[((b * st.oh + oy) * st.ow + ox) * cs.cout..][..cs.cout];
                        if let Some(bo) = st.bias_offset {
                            o.iter_mut()
                                .zip(&params[bo..bo + cs.cout])
                                .for_each(|(o, b)| *o = *b as f64);
                        }
                        for ky in 0..cs.k {
                            let iy = (oy * cs.stride + ky) as isize - cs.padding as isize;
                            if iy < 0 || iy >= st.h as isize {
                                continue;
                            }
                            for kx in 0..cs.k {
                                let ix = (ox * cs.stride + kx) as isize - cs.padding as isize;
                                if ix < 0 || ix >= st.w as isize {
                                    continue;
                                }
                                let px = ((b * st.h + iy as usize) * st.w + ix as usize) * cs.cin;
                                for ci in 0..cs.cin {
                                    let v = inp[px + ci];
                                    let wrow = &wk[((ky * cs.k + kx) * cs.cin + ci) * cs.cout..]
                                        [..cs.cout];
                                    o.iter_mut().zip(wrow).for_each(|(o, w)| *o += v * w);
                                }
                            }
                        }
                    }
                }
            }
            if let Some((bi, _)) = st.bn {
                let c = cs.cout;
                let m = out.len() / c;
                for ch in 0..c {
                    let (mean, var) = match mode {
                        Mode::Train { .. } => {
                            let mean = (0..m).map(|i| out[i * c + ch]).sum::<f64>() / m as f64;
                            let var = (0..m)
                                .map(|i| (out[i * c + ch] - mean).powi(2))
                                .sum::<f64>()
                                / m as f64;
                            (mean, var)
                        }
                        Mode::Eval => (
                            net.bns[bi].running_mean[ch] as f64,
                            net.bns[bi].running_var[ch] as f64,
                        ),
                    };
                    let k = 1.0 / (var + net.bns[bi].eps as f64).sqrt();
                    for i in 0..m {
                        out[i * c + ch] = (out[i * c + ch] - mean) * k;
                    }
                }
            }
            if st.act == Act::Tanh {
                out.iter_mut().for_each(|v| *v = v.tanh());
            }
            relu_prev = st.act == Act::Relu;
            cur = out;
        }
        let last = net.stages.last().unwrap();
        let (hw, c) = (last.oh * last.ow, last.conv.cout);
        let view = |v: f64| if relu_prev { v.max(0.0) } else { v };
        let mut total = 0.0;
        for b in 0..n {
            for ch in 0..c {
                if net.pool {
                    let m = (0..hw)
                        .map(|p| view(cur[(b * hw + p) * c + ch]))
                        .sum::<f64>()
                        / hw as f64;
                    total += m * r[b * c + ch] as f64;
                } else {
                    for p in 0..hw {
                        total += view(cur[(b * hw + p) * c + ch]) * r[(b * c + ch) * hw + p] as f64;
                    }
                }
            }
        }
        total
    }

    /// The f32 forward and backward passes of `kind` against the float64 reference: outputs,
    /// up to `2·per_tensor` coordinates of every parameter tensor (the largest gradients and a
    /// spread) and up to `2·input_coords` input coordinates, in each of `modes`.
    fn check_against_reference(
        kind: NetworkKind,
        modes: &[Mode],
        per_tensor: usize,
        input_coords: usize,
    ) {
        let mut net = Network::new(kind, 32, 32);
        net.init_orthogonal(0.8, 0.01, 3);
        net.update_running_stats = false;
        for (bi, bn) in net.batch_norms_mut().iter_mut().enumerate() {
            let c = bn.channels();
            bn.running_mean = random_vec(c, 60 + bi as u64, 0.3);
            bn.running_var = random_vec(c, 70 + bi as u64, 0.5)
                .iter()
                .map(|v| v + 1.0)
                .collect();
        }
        let n = 2;
        let x = random_vec(n * 1024, 4, 1.0);
        let r = random_vec(n * net.output_len(), 5, 1.0);
        let base = net.params().to_vec();
        for &mode in modes {
            // The f32 forward agrees with the reference (r = one-hot picks an output).
            let mut ws = Workspace::default();
            let y = net.forward(&x, mode, &mut ws).to_vec();
            for k in (0..y.len()).step_by(y.len().div_ceil(12)) {
                let mut e = vec![0.0; y.len()];
                e[k] = 1.0;
                let yr = reference_loss(&net, &base, &x, mode, &e);
                assert!(
                    (y[k] as f64 - yr).abs() < 1e-4 * (1.0 + yr.abs()),
                    "{kind} {mode:?} output {k}: {} vs {yr}",
                    y[k]
                );
            }
            let mut gp = vec![0.0; base.len()];
            let mut gi = vec![0.0; x.len()];
            net.backward(
                &mut ws,
                &r,
                NetGrads {
                    params: Some(&mut gp),
                    input: Some(&mut gi),
                },
            );
            for spec in net.param_specs() {
                let g = &gp[spec.range()];
                let mut idx: Vec<usize> = (0..g.len()).collect();
                idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
                idx.truncate(per_tensor);
                idx.extend((0..per_tensor).map(|i| i * g.len() / per_tensor));
                idx.sort_unstable();
                idx.dedup();
                let sub: Vec<f32> = idx.iter().map(|&i| base[spec.offset + i]).collect();
                let sub_g: Vec<f32> = idx.iter().map(|&i| g[i]).collect();
                check_gradient(
                    |v| {
                        let mut p = base.clone();
                        for (&i, &v) in idx.iter().zip(v) {
                            p[spec.offset + i] = v;
                        }
                        reference_loss(&net, &p, &x, mode, &r)
                    },
                    &sub,
                    &sub_g,
                    1e-5,
                    1e-2,
                )
                .assert_ok(&format!("{kind} {mode:?} {}", spec.name));
            }
            // The input gradient is through the detached standardisation: with the statistics
            // held fixed, it is the derivative w.r.t. the standardised input times 1/(std + eps).
            // Differences of the reference with the standardisation off check the first part.
            let mut raw = net.clone();
            raw.standardise_input = false;
            let xs: Vec<f32> = x
                .chunks(1024)
                .flat_map(|p| crate::nn::normalise_patch(p, net.input_eps))
                .collect();
            let mut ws2 = Workspace::default();
            raw.forward(&xs, mode, &mut ws2);
            let mut gs = vec![0.0; x.len()];
            raw.backward(
                &mut ws2,
                &r,
                NetGrads {
                    params: None,
                    input: Some(&mut gs),
                },
            );
            let mut idx: Vec<usize> = (0..gs.len()).collect();
            idx.sort_by(|&a, &b| gs[b].abs().total_cmp(&gs[a].abs()));
            idx.truncate(input_coords);
            idx.extend((0..input_coords).map(|i| i * gs.len() / input_coords + 7));
            let sub: Vec<f32> = idx.iter().map(|&i| xs[i]).collect();
            let sub_g: Vec<f32> = idx.iter().map(|&i| gs[i]).collect();
            check_gradient(
                |v| {
                    let mut p = xs.clone();
                    for (&i, &v) in idx.iter().zip(v) {
                        p[i] = v;
                    }
                    reference_loss(&raw, &base, &p, mode, &r)
                },
                &sub,
                &sub_g,
                1e-4,
                1e-2,
            )
            .assert_ok(&format!("{kind} {mode:?} input"));
            for (p, (gi, gs)) in x.chunks(1024).zip(gi.chunks(1024).zip(gs.chunks(1024))) {
                let mean = p.iter().map(|&v| v as f64).sum::<f64>() / 1024.0;
                let sd =
                    (p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 1023.0).sqrt();
                let k = 1.0 / (sd + net.input_eps as f64);
                for (a, b) in gi.iter().zip(gs) {
                    assert!(
                        (*a as f64 - *b as f64 * k).abs() < 1e-6 + 1e-4 * (*b as f64 * k).abs()
                    );
                }
            }
        }
    }

    /// The whole AffNet architecture in training mode (batch norm with batch statistics,
    /// dropout, tanh, pool) and in inference mode: the f32 backward pass against finite
    /// differences of the float64 reference, for weights of every layer and for the input.
    #[test]
    fn affnet_backward_matches_the_f64_reference() {
        check_against_reference(
            NetworkKind::AffNet,
            &[Mode::Train { seed: 77 }, Mode::Eval],
            8,
            16,
        );
    }

    /// HardNet, the frozen descriptor whose input gradient the chain uses (final conv without
    /// bias, final batch norm without ReLU, unpooled output), in training mode; fewer
    /// coordinates, its reference pass costs 4× AffNet's.
    #[test]
    fn hardnet_backward_matches_the_f64_reference() {
        check_against_reference(NetworkKind::HardNet, &[Mode::Train { seed: 78 }], 2, 6);
    }
}
