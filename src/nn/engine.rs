//! The fast inference path: a `Sequential` compiled into fused conv stages that run on padded
//! channels-last (NHWC) buffers, a few patches at a time per rayon task.
//!
//! Why this layout:
//! - Each convolution becomes a GEMM `[pixels × k·k·cin] · [k·k·cin × cout]` whose output rows are
//!   already the next layer's NHWC pixels, so no transposes happen between layers.
//! - BatchNorm is folded into the conv weights and bias, and ReLU/tanh are applied while the GEMM
//!   result is copied into the next buffer (one pass, no separate BN/ReLU sweeps).
//! - Stride-1 convs need no im2col at all ("shifted GEMM"): in a zero-padded buffer of width
//!   `Wp`, output pixel `q` (counted over padded rows) is `Σ_ky Σ_(kx,ci) in[q + ky·Wp + kx][ci]·w`,
//!   and for a fixed `ky` the `(kx, ci)` run is contiguous, so the left operand is the activation
//!   buffer itself viewed with row stride `cin` (overlapping rows). `k` GEMMs accumulate the
//!   kernel rows. Outputs at padding columns are computed too and not copied out; that waste is
//!   small only on large maps, so this is used for the 32×32 layers.
//! - Other convs use im2col in cache-sized blocks of output rows; a conv whose kernel covers the
//!   whole unpadded input (HardNet's final 8×8 layer) is a plain matrix product on the buffer, and
//!   one with very few outputs (AffNet's and OriNet's final convs) is a set of dot products: a
//!   GEMM with 2 or 3 columns is slow, and im2col would copy more data than the dots read.
//!
//! Parallelism: chunks of patches run as rayon tasks, and GEMMs inside run single-threaded
//! (`gemm` with `Parallelism::None`). Each thread keeps its scratch buffers between chunks and
//! calls, so the hot path allocates nothing after the first call.
//!
//! # Why a second CPU convolution forward
//! [`crate::nn::ops`]'s convolution (what training and `Network` in `Mode::Eval` run) keeps
//! raw outputs for the backward pass, reads them through the next batch norm
//! ([`crate::nn::ops::InputMap`]) and always uses blocked im2col. Inference needs none of that,
//! and this path is the faster one, so it stays (the rule: keep the fastest implementation of each op): on the same random
//! weights and 2,048 patches, 2 cores, it ran AffNet at about 1.1–1.4× and OriNet at about
//! 1.2× the patches per CPU-second of `Network` in `Mode::Eval`, and HardNet at the same
//! per CPU-second but 1.3× the wall-clock rate (chunks of 8 patches per rayon task balance
//! better); outputs agree to 2e-6. Reproduce with
//! `cargo run --release --example inference_paths -- 2048 8`.

use std::cell::RefCell;

use rayon::prelude::*;

use super::fold::{fold, FusedAct};
use super::layers::Sequential;
use super::matmul::{gemm, MatMut, MatRef};

/// Patches per rayon task (measured: 8–32 are within noise of each other on 2 cores; 8 keeps
/// the per-thread buffers at about 4 MiB for HardNet).
const DEFAULT_CHUNK: usize = 8;
/// im2col block size, in values (512 KiB, so a block stays in a 2 MiB L2 with its output).
const COL_BUDGET: usize = 1 << 17;
/// Below this many input channels a stride-1 conv uses im2col: the shifted GEMM's inner
/// dimension `k·cin` would be too short to use the FMA units.
const SHIFTED_MIN_CIN: usize = 4;
/// The shifted GEMM is used while padded/real output pixels stays below this (1.13 at 32×32,
/// 1.27 at 16×16, 1.56 at 8×8); above it, im2col's copy costs less than the wasted rows.
const SHIFTED_MAX_WASTE: f64 = 1.2;
/// Up to this many output channels, dot products beat a GEMM that is mostly padding.
const DIRECT_MAX_COUT: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum ConvPath {
    /// Stride 1: `k` GEMMs on overlapping views of the padded input.
    Shifted,
    /// Blocked im2col, then one GEMM per block.
    Im2col,
    /// Kernel covers the whole unpadded input: one GEMM with a row per item.
    Dense,
    /// Few output channels: dot products straight from the input buffer.
    Direct,
}

/// A convolution with its BatchNorm folded in and its activation fused.
#[derive(Clone, Debug)]
struct Stage {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    /// Input size (unpadded).
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// Padding of the buffer this stage writes (the next stage's `pad`, 0 for the last).
    out_pad: usize,
    /// `[(ky·k + kx)·cin + ci][co]`, row-major `k·k·cin × cout`.
    weight: Vec<f32>,
    /// For `Direct`: the same transposed, `[co][(ky·k + kx)·cin + ci]`; empty otherwise.
    weight_t: Vec<f32>,
    bias: Vec<f32>,
    act: FusedAct,
    method: ConvPath,
}

impl Stage {
    fn padded_in(&self) -> (usize, usize) {
        (self.h + 2 * self.pad, self.w + 2 * self.pad)
    }
    fn padded_out(&self) -> (usize, usize) {
        (self.oh + 2 * self.out_pad, self.ow + 2 * self.out_pad)
    }
    fn kk(&self) -> usize {
        self.k * self.k * self.cin
    }
    /// Output rows per im2col block.
    fn block_rows(&self) -> usize {
        (COL_BUDGET / (self.ow * self.kk()).max(1)).max(1)
    }
}

/// A compiled network for items of shape `[c, h, w]`.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    in_c: usize,
    in_h: usize,
    in_w: usize,
    stages: Vec<Stage>,
    /// Global average pooling after the last stage.
    pool: bool,
    out_len: usize,
    chunk: usize,
}

/// Work buffers of one thread. Every stage writes all of what it later reads, so buffers are
/// never cleared, only grown.
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    gemm_out: Vec<f32>,
    col: Vec<f32>,
}

/// Buffer lengths a plan needs for a chunk: `[a and b, gemm_out, col]`.
type ScratchSizes = [usize; 3];

impl Scratch {
    fn ensure(&mut self, [act, gemm_out, col]: ScratchSizes) {
        for (buf, len) in [
            (&mut self.a, act),
            (&mut self.b, act),
            (&mut self.gemm_out, gemm_out),
            (&mut self.col, col),
        ] {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Plan {
    /// Compiles `seq` for inputs of shape `[c, h, w]`. Supports conv (+ BN) (+ ReLU | tanh)
    /// stages, dropout (skipped) and a final global average pool.
    pub(crate) fn new(seq: &Sequential, c: usize, h: usize, w: usize) -> Result<Plan, String> {
        let folded = fold(seq)?;
        let mut stages: Vec<Stage> = Vec::new();
        let (mut c, mut h, mut w) = (c, h, w);
        let in_shape = (c, h, w);
        for conv in folded.convs {
            if conv.cin != c {
                return Err(format!("conv expects {} channels, gets {c}", conv.cin));
            }
            let (oh, ow) = conv.out_size(h, w).ok_or_else(|| {
                format!(
                    "input {h}×{w} with padding {} is smaller than the {}×{} kernel",
                    conv.pad, conv.k, conv.k
                )
            })?;
            let (k, cin, cout) = (conv.k, conv.cin, conv.cout);
            let waste = ((h + 2 * conv.pad) * (w + 2 * conv.pad)) as f64 / (oh * ow) as f64;
            let method = if cout <= DIRECT_MAX_COUT {
                ConvPath::Direct
            } else if conv.pad == 0 && k == h && k == w {
                ConvPath::Dense
            } else if conv.stride == 1 && cin >= SHIFTED_MIN_CIN && waste < SHIFTED_MAX_WASTE {
                ConvPath::Shifted
            } else {
                ConvPath::Im2col
            };
            stages.push(Stage {
                cin,
                cout,
                k,
                stride: conv.stride,
                pad: conv.pad,
                h,
                w,
                oh,
                ow,
                out_pad: 0,
                weight: conv.weight,
                weight_t: Vec::new(),
                bias: conv.bias,
                act: conv.act,
                method,
            });
            (c, h, w) = (cout, oh, ow);
        }
        let pool = folded.pool;
        for i in 1..stages.len() {
            stages[i - 1].out_pad = stages[i].pad;
        }
        for st in stages.iter_mut().filter(|st| st.method == ConvPath::Direct) {
            let kk = st.kk();
            st.weight_t = (0..st.cout * kk)
                .map(|i| st.weight[(i % kk) * st.cout + i / kk])
                .collect();
        }
        let out_len = if pool { c } else { c * h * w };
        Ok(Plan {
            in_c: in_shape.0,
            in_h: in_shape.1,
            in_w: in_shape.2,
            stages,
            pool,
            out_len,
            chunk: DEFAULT_CHUNK,
        })
    }

    /// Patches per rayon task (at least 1).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    pub(crate) fn in_len(&self) -> usize {
        self.in_c * self.in_h * self.in_w
    }

    pub(crate) fn out_len(&self) -> usize {
        self.out_len
    }

    /// Runs the network on `input` (items of `[c, h, w]`, NCHW) and returns `out_len` values per
    /// item (NCHW-flattened when not pooled). With `norm_eps`, each item is first standardised:
    /// `(x − mean) / (std + eps)` with the unbiased std.
    ///
    /// # Panics
    /// If `input.len()` is not a multiple of the item size.
    pub(crate) fn run(&self, input: &[f32], norm_eps: Option<f32>) -> Vec<f32> {
        let in_len = self.in_len();
        assert!(
            in_len > 0 && input.len().is_multiple_of(in_len),
            "input of {} values is not a whole number of {}×{}×{} items",
            input.len(),
            self.in_c,
            self.in_h,
            self.in_w
        );
        let n = input.len() / in_len;
        let mut out = vec![0.0; n * self.out_len];
        if n == 0 {
            return out;
        }
        let sizes = self.scratch_sizes(self.chunk.min(n));
        let work = |(o, i): (&mut [f32], &[f32])| {
            SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut s) => {
                    s.ensure(sizes);
                    self.run_chunk(i, o, &mut s, norm_eps);
                }
                // Only if a caller re-enters from inside a chunk: use private buffers.
                Err(_) => {
                    let mut s = Scratch::default();
                    s.ensure(sizes);
                    self.run_chunk(i, o, &mut s, norm_eps);
                }
            })
        };
        if n <= self.chunk {
            work((&mut out, input));
        } else {
            out.par_chunks_mut(self.chunk * self.out_len)
                .zip(input.par_chunks(self.chunk * in_len))
                .for_each(work);
        }
        out
    }

    fn scratch_sizes(&self, b: usize) -> ScratchSizes {
        let first = &self.stages[0];
        let (hp, wp) = first.padded_in();
        let mut act = b * hp * wp * first.cin;
        let mut gemm_out = 0;
        let mut col = 0;
        for st in &self.stages {
            let (ohp, owp) = st.padded_out();
            act = act.max(b * ohp * owp * st.cout);
            match st.method {
                ConvPath::Shifted => {
                    let (hp, wp) = st.padded_in();
                    gemm_out = gemm_out.max(b * hp * wp * st.cout);
                }
                ConvPath::Im2col => {
                    let rows = st.block_rows().min(b * st.oh) * st.ow;
                    gemm_out = gemm_out.max(rows * st.cout);
                    col = col.max(rows * st.kk());
                }
                ConvPath::Dense => gemm_out = gemm_out.max(b * st.cout),
                ConvPath::Direct => gemm_out = gemm_out.max(st.ow * st.cout),
            }
        }
        [act, gemm_out, col]
    }

    fn run_chunk(&self, input: &[f32], out: &mut [f32], s: &mut Scratch, norm_eps: Option<f32>) {
        let b = input.len() / self.in_len();
        self.load_input(input, b, &mut s.a, norm_eps);
        let (mut src, mut dst) = (&mut s.a, &mut s.b);
        for st in &self.stages {
            match st.method {
                ConvPath::Shifted => shifted(st, b, src, dst, &mut s.gemm_out),
                ConvPath::Im2col => im2col(st, b, src, dst, &mut s.gemm_out, &mut s.col),
                ConvPath::Dense => dense(st, b, src, dst, &mut s.gemm_out),
                ConvPath::Direct => direct(st, b, src, dst, &mut s.gemm_out),
            }
            std::mem::swap(&mut src, &mut dst);
        }
        // `src` now holds the last stage's unpadded [b][oh][ow][cout].
        let last = &self.stages[self.stages.len() - 1];
        let (hw, c) = (last.oh * last.ow, last.cout);
        for (bi, o) in out.chunks_mut(self.out_len).enumerate().take(b) {
            let item = &src[bi * hw * c..(bi + 1) * hw * c];
            if self.pool {
                o.fill(0.0);
                for px in item.chunks(c) {
                    o.iter_mut().zip(px).for_each(|(a, v)| *a += v);
                }
                o.iter_mut().for_each(|v| *v /= hw as f32);
            } else {
                for (p, px) in item.chunks(c).enumerate() {
                    for (ci, v) in px.iter().enumerate() {
                        o[ci * hw + p] = *v;
                    }
                }
            }
        }
    }

    /// Copies NCHW items into the first stage's padded NHWC buffer, standardising each item.
    fn load_input(&self, input: &[f32], b: usize, dst: &mut [f32], norm_eps: Option<f32>) {
        let first = &self.stages[0];
        let (c, h, w, p) = (self.in_c, self.in_h, self.in_w, first.pad);
        let (hp, wp) = first.padded_in();
        zero_border(dst, b, h, w, p, c);
        for (bi, item) in input.chunks(self.in_len()).enumerate().take(b) {
            let (mean, scale) = match norm_eps {
                Some(eps) => standardise(item, eps),
                None => (0.0, 1.0),
            };
            for ci in 0..c {
                for y in 0..h {
                    let row = &item[(ci * h + y) * w..][..w];
                    let base = (bi * hp + y + p) * wp + p;
                    for (x, v) in row.iter().enumerate() {
                        dst[(base + x) * c + ci] = ((*v as f64 - mean) * scale) as f32;
                    }
                }
            }
        }
    }
}

/// `(mean, 1 / (std_unbiased + eps))` of one item, in f64.
fn standardise(item: &[f32], eps: f32) -> (f64, f64) {
    let n = item.len() as f64;
    let mean = item.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = item.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, 1.0 / (var.sqrt() + eps as f64))
}

/// Zeroes the padding frame of `b` items of `[h + 2p][w + 2p][c]`.
fn zero_border(buf: &mut [f32], b: usize, h: usize, w: usize, p: usize, c: usize) {
    if p == 0 {
        return;
    }
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    for item in buf.chunks_mut(hp * wp * c).take(b) {
        item[..p * wp * c].fill(0.0);
        item[(p + h) * wp * c..].fill(0.0);
        for y in p..p + h {
            let row = &mut item[y * wp * c..(y + 1) * wp * c];
            row[..p * c].fill(0.0);
            row[(p + w) * c..].fill(0.0);
        }
    }
}

/// Writes one output row: `ow` pixels from `rows` (GEMM output, `cout` values each) through
/// bias and activation into the next stage's padded buffer.
fn emit_row(st: &Stage, rows: &[f32], dst: &mut [f32], bi: usize, y: usize) {
    let (ohp, owp) = st.padded_out();
    let p = st.out_pad;
    let start = ((bi * ohp + y + p) * owp + p) * st.cout;
    let out = &mut dst[start..start + st.ow * st.cout];
    for (o, r) in out
        .chunks_exact_mut(st.cout)
        .zip(rows.chunks_exact(st.cout))
    {
        for ((o, r), b) in o.iter_mut().zip(r).zip(&st.bias) {
            let v = r + b;
            *o = match st.act {
                FusedAct::None => v,
                FusedAct::Relu => v.max(0.0),
                FusedAct::Tanh => v.tanh(),
            };
        }
    }
}

fn shifted(st: &Stage, b: usize, src: &[f32], dst: &mut [f32], gemm_out: &mut [f32]) {
    let (hp, wp) = st.padded_in();
    let item = hp * wp;
    // Rows up to the last real output; rows at padding columns are computed and ignored.
    let m = (b - 1) * item + (st.oh - 1) * wp + st.ow;
    let run = st.k * st.cin;
    for ky in 0..st.k {
        gemm(
            MatMut::row_major(&mut gemm_out[..m * st.cout], m, st.cout),
            MatRef::new(&src[ky * wp * st.cin..], m, run, st.cin, 1),
            MatRef::row_major(
                &st.weight[ky * run * st.cout..(ky + 1) * run * st.cout],
                run,
                st.cout,
            ),
            ky > 0,
            false,
        );
    }
    zero_border(dst, b, st.oh, st.ow, st.out_pad, st.cout);
    for bi in 0..b {
        for y in 0..st.oh {
            let q = bi * item + y * wp;
            emit_row(
                st,
                &gemm_out[q * st.cout..(q + st.ow) * st.cout],
                dst,
                bi,
                y,
            );
        }
    }
}

fn im2col(
    st: &Stage,
    b: usize,
    src: &[f32],
    dst: &mut [f32],
    gemm_out: &mut [f32],
    col: &mut [f32],
) {
    let (hp, wp) = st.padded_in();
    let (kk, run, s) = (st.kk(), st.k * st.cin, st.stride);
    let total = b * st.oh;
    let per_block = st.block_rows().min(total);
    zero_border(dst, b, st.oh, st.ow, st.out_pad, st.cout);
    for r0 in (0..total).step_by(per_block) {
        let r1 = (r0 + per_block).min(total);
        let rows = (r1 - r0) * st.ow;
        for r in r0..r1 {
            let (bi, oy) = (r / st.oh, r % st.oh);
            for ox in 0..st.ow {
                let to = ((r - r0) * st.ow + ox) * kk;
                for ky in 0..st.k {
                    let from = ((bi * hp + oy * s + ky) * wp + ox * s) * st.cin;
                    col[to + ky * run..to + (ky + 1) * run].copy_from_slice(&src[from..from + run]);
                }
            }
        }
        gemm(
            MatMut::row_major(&mut gemm_out[..rows * st.cout], rows, st.cout),
            MatRef::row_major(&col[..rows * kk], rows, kk),
            MatRef::row_major(&st.weight, kk, st.cout),
            false,
            false,
        );
        for r in r0..r1 {
            let q = (r - r0) * st.ow;
            emit_row(
                st,
                &gemm_out[q * st.cout..(q + st.ow) * st.cout],
                dst,
                r / st.oh,
                r % st.oh,
            );
        }
    }
}

fn dense(st: &Stage, b: usize, src: &[f32], dst: &mut [f32], gemm_out: &mut [f32]) {
    let kk = st.kk();
    gemm(
        MatMut::row_major(&mut gemm_out[..b * st.cout], b, st.cout),
        MatRef::row_major(&src[..b * kk], b, kk),
        MatRef::row_major(&st.weight, kk, st.cout),
        false,
        false,
    );
    zero_border(dst, b, 1, 1, st.out_pad, st.cout);
    for bi in 0..b {
        emit_row(st, &gemm_out[bi * st.cout..(bi + 1) * st.cout], dst, bi, 0);
    }
}

fn direct(st: &Stage, b: usize, src: &[f32], dst: &mut [f32], row: &mut [f32]) {
    let (hp, wp) = st.padded_in();
    let (kk, run, s) = (st.kk(), st.k * st.cin, st.stride);
    zero_border(dst, b, st.oh, st.ow, st.out_pad, st.cout);
    for bi in 0..b {
        for oy in 0..st.oh {
            for ox in 0..st.ow {
                for co in 0..st.cout {
                    let w = &st.weight_t[co * kk..(co + 1) * kk];
                    row[ox * st.cout + co] = (0..st.k)
                        .map(|ky| {
                            let from = ((bi * hp + oy * s + ky) * wp + ox * s) * st.cin;
                            dot(&src[from..from + run], &w[ky * run..(ky + 1) * run])
                        })
                        .sum();
                }
            }
            emit_row(st, &row[..st.ow * st.cout], dst, bi, oy);
        }
    }
}

/// A dot product with 16 independent partial sums, so the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::super::layers::{BatchNorm2d, Conv2d, Layer};
    use super::super::tensor::Tensor;
    use super::*;

    /// A small deterministic generator for test values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    fn conv(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
        seed: u64,
    ) -> Layer {
        let w = values(cout * cin * k * k, seed)
            .iter()
            .map(|v| v * 0.5)
            .collect();
        let b = bias.then(|| values(cout, seed + 1));
        Layer::Conv2d(Conv2d::new(cin, cout, k, stride, pad, w, b))
    }

    fn bn(c: usize, seed: u64) -> Layer {
        let m = values(c, seed);
        let v = values(c, seed + 1).iter().map(|v| v.abs() + 0.2).collect();
        Layer::BatchNorm2d(BatchNorm2d::new(m, v))
    }

    /// Every method but `Dense` (im2col with few input channels, shifted, strided im2col,
    /// strided direct) and pooling on odd sizes, against the reference layers, for several
    /// chunk sizes.
    #[test]
    fn plan_matches_reference_layers() {
        let (h, w) = (23, 29);
        let seq = Sequential {
            layers: vec![
                conv(2, 5, 3, 1, 1, false, 1),
                bn(5, 2),
                Layer::Relu,
                conv(5, 6, 3, 1, 1, true, 3),
                bn(6, 4),
                Layer::Relu,
                conv(6, 7, 3, 2, 1, false, 5),
                Layer::Tanh,
                Layer::Dropout(0.5),
                conv(7, 3, 5, 2, 2, true, 6),
                Layer::Relu,
                conv(3, 5, 2, 1, 0, true, 7),
                Layer::GlobalAvgPool,
            ],
        };
        let n = 7;
        let x = values(n * 2 * h * w, 9);
        let reference = seq.forward(&Tensor::from_vec([n, 2, h, w], x.clone()));
        for chunk in [1, 3, 8] {
            let plan = Plan::new(&seq, 2, h, w).unwrap().with_chunk(chunk);
            let methods: Vec<ConvPath> = plan.stages.iter().map(|s| s.method).collect();
            use ConvPath::*;
            assert_eq!(methods, [Im2col, Shifted, Im2col, Direct, Im2col]);
            let got = plan.run(&x, None);
            assert_eq!(got.len(), reference.data.len());
            for (a, b) in got.iter().zip(&reference.data) {
                assert!((a - b).abs() < 1e-5, "chunk {chunk}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn dense_final_layer_and_unpooled_output_order() {
        let seq = Sequential {
            layers: vec![
                conv(3, 8, 3, 1, 1, false, 11),
                bn(8, 12),
                Layer::Relu,
                conv(8, 5, 4, 1, 0, true, 13),
            ],
        };
        let plan = Plan::new(&seq, 3, 4, 4).unwrap();
        assert_eq!(plan.stages[1].method, ConvPath::Dense);
        let x = values(5 * 3 * 16, 14);
        let reference = seq.forward(&Tensor::from_vec([5, 3, 4, 4], x.clone()));
        let got = plan.run(&x, None);
        for (a, b) in got.iter().zip(&reference.data) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Unpooled multi-pixel output comes out in NCHW order.
        let seq2 = Sequential {
            layers: vec![conv(1, 2, 3, 1, 1, true, 15)],
        };
        let x2 = values(2 * 25, 16);
        let r2 = seq2.forward(&Tensor::from_vec([2, 1, 5, 5], x2.clone()));
        let g2 = Plan::new(&seq2, 1, 5, 5).unwrap().run(&x2, None);
        for (a, b) in g2.iter().zip(&r2.data) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn standardise_uses_unbiased_std() {
        let (mean, scale) = standardise(&[0.0, 2.0], 0.0);
        assert_eq!(mean, 1.0);
        assert!((1.0 / scale - 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn unsupported_orders_are_refused() {
        let seq = Sequential {
            layers: vec![Layer::Relu],
        };
        assert!(Plan::new(&seq, 1, 4, 4).is_err());
        let seq = Sequential {
            layers: vec![conv(1, 2, 3, 1, 1, false, 1), Layer::Relu, bn(2, 3)],
        };
        assert!(Plan::new(&seq, 1, 4, 4).is_err());
    }
}
