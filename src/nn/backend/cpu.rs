//! The CPU backend, the reference: every op is a call to the CPU code it names, with only the glue
//! that turns buffers (`Vec<f32>`) into the slices, maps and per-item types that code takes.

use std::mem::take;

use super::{Backend, ConvGeometry, WarpGeometry};
use crate::laf::Laf;
use crate::matching::{self, TwoNearest};
use crate::nn::fold::FusedAct;
use crate::nn::network::standardise_moments;
use crate::nn::ops::batchnorm::{self, BatchNorm};
use crate::nn::ops::loss::{self, LossGrads, LossKind, LossStats, LossWorkspace};
use crate::nn::ops::sgd::Sgd;
use crate::nn::ops::sift::{DiffSift, SiftCache};
use crate::nn::ops::spatial_transformer::{self as st, Affine};
use crate::nn::ops::{self, Activation, BatchStats, ConvGrads, ConvInput, InputMap};
use crate::nn::{l2_normalise_backward, l2_normalise_eps, normalise_patch};
use crate::patch::{self, PatchSpec};
use crate::pyramid::ScaleSpace;
use crate::Result;

/// The CPU: buffers are host vectors, ops the reference code of [`crate::nn::ops`] and friends.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

type Map<'a> = InputMap<'a, Vec<f32>>;

/// A convolution's input as the CPU ops take it.
fn conv_input<'a>(g: &ConvGeometry, x: &'a [f32], map: Map<'a>) -> ConvInput<'a> {
    ConvInput {
        data: x,
        n: g.n,
        h: g.h,
        w: g.w,
        map: map.as_slices(),
    }
}

/// Flat maps (6 floats per item) as the CPU's [`Affine`]s.
fn affines(g: &WarpGeometry, flat: &[f32]) -> Vec<Affine> {
    assert_eq!(flat.len(), 6 * g.n, "warp map length");
    flat.chunks_exact(6)
        .map(|t| [[t[0], t[1], t[2]], [t[3], t[4], t[5]]])
        .collect()
}

/// Checks that an op's output has its input's length (`zip` would silently stop short).
fn same_len(what: &str, got: usize, want: usize) {
    assert_eq!(got, want, "{what} length");
}

impl Backend for Cpu {
    type Buf = Vec<f32>;
    type Indices = Vec<u32>;
    /// The CPU samples the scale space itself: nothing to prepare.
    type Pyramid = ();
    type SiftCache = SiftCache;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }
    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }
    fn download_indices(&self, buf: &Vec<u32>) -> Result<Vec<u32>> {
        Ok(buf.clone())
    }
    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn fill(&self, x: &mut Vec<f32>, value: f32) -> Result<()> {
        x.fill(value);
        Ok(())
    }

    fn axpy(&self, a: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        same_len("axpy", y.len(), x.len());
        y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
        Ok(())
    }

    fn activation_forward(&self, act: Activation, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        match act {
            Activation::Relu => ops::relu_forward(x, y),
            Activation::Tanh => {
                y.copy_from_slice(x);
                ops::tanh_forward(y);
            }
        }
        Ok(())
    }

    fn activation_backward(
        &self,
        act: Activation,
        dy: &Vec<f32>,
        saved: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        dx.copy_from_slice(dy);
        match act {
            Activation::Relu => ops::relu_backward(saved, dx),
            Activation::Tanh => ops::tanh_backward(saved, dx),
        }
        Ok(())
    }

    fn dropout_forward(
        &self,
        x: &Vec<f32>,
        map: Map<'_>,
        c: usize,
        p: f32,
        seed: u64,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        ops::dropout_forward(x, p, seed, map.as_slices(), c, y);
        Ok(())
    }

    fn dropout_backward(&self, d: &mut Vec<f32>, p: f32, seed: u64) -> Result<()> {
        ops::dropout_backward(d, p, seed);
        Ok(())
    }

    fn conv2d_forward(
        &self,
        g: &ConvGeometry,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        map: Map<'_>,
        act: FusedAct,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        let input = conv_input(g, x, map);
        ops::conv2d_forward(&g.shape(), &input, w, bias.map(|b| &b[..]), y, None);
        act.apply(y);
        Ok(())
    }

    fn conv2d_backward_input(
        &self,
        g: &ConvGeometry,
        dy: &Vec<f32>,
        w: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        // The reference takes the input for every gradient; the input gradient never reads it.
        let unread = vec![0.0; g.in_len()];
        let grads = ConvGrads {
            input: Some(&mut dx[..]),
            ..ConvGrads::default()
        };
        let input = conv_input(g, &unread, Map::default());
        ops::conv2d_backward(&g.shape(), &input, w, dy, grads);
        Ok(())
    }

    fn conv2d_backward_weight(
        &self,
        g: &ConvGeometry,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        map: Map<'_>,
        dw: &mut Vec<f32>,
        db: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        // The reference takes the weights for every gradient; the weight gradient never reads them.
        let unread = vec![0.0; g.weight_len()];
        let grads = ConvGrads {
            input: None,
            weight: Some(&mut dw[..]),
            bias: db.map(|b| &mut b[..]),
        };
        ops::conv2d_backward(&g.shape(), &conv_input(g, x, map), &unread, dy, grads);
        Ok(())
    }

    fn bn_batch_stats(
        &self,
        x: &Vec<f32>,
        c: usize,
        eps: f32,
        momentum: f32,
        running: Option<(&mut Vec<f32>, &mut Vec<f32>)>,
    ) -> Result<BatchStats> {
        let mut stats = BatchStats::default();
        batchnorm::batch_statistics(x, c, eps, &mut stats);
        if let Some((mean, var)) = running {
            let mut bn = BatchNorm {
                running_mean: take(mean),
                running_var: take(var),
                eps,
                momentum,
            };
            bn.update_running(&stats);
            (*mean, *var) = (bn.running_mean, bn.running_var);
        }
        Ok(stats)
    }

    fn bn_inv_std(&self, var: &Vec<f32>, eps: f32, inv_std: &mut Vec<f32>) -> Result<()> {
        inv_std.copy_from_slice(&batchnorm::inv_std(var, eps));
        Ok(())
    }

    fn bn_normalise(
        &self,
        x: &Vec<f32>,
        mean: &Vec<f32>,
        inv_std: &Vec<f32>,
        relu: bool,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        y.copy_from_slice(x);
        batchnorm::normalise(y, mean.len(), mean, inv_std);
        if relu {
            FusedAct::Relu.apply(y);
        }
        Ok(())
    }

    fn bn_backward_train(
        &self,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        stats: &BatchStats,
        relu_after: bool,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        dx.copy_from_slice(dy);
        batchnorm::backward_train(x, dx, stats, relu_after);
        Ok(())
    }

    fn bn_backward_eval(
        &self,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        mean: &Vec<f32>,
        inv_std: &Vec<f32>,
        relu_after: bool,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        let stats = BatchStats {
            mean: mean.clone(),
            var: Vec::new(),
            inv_std: inv_std.clone(),
            count: 0,
        };
        dx.copy_from_slice(dy);
        batchnorm::backward_eval(x, dx, &stats, relu_after);
        Ok(())
    }

    fn global_avg_pool_forward(
        &self,
        x: &Vec<f32>,
        n: usize,
        c: usize,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        ops::global_avg_pool_forward(x, n, c, y);
        Ok(())
    }

    fn global_avg_pool_backward(
        &self,
        dy: &Vec<f32>,
        n: usize,
        c: usize,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        ops::global_avg_pool_backward(dy, n, c, dx);
        Ok(())
    }

    fn standardise(&self, x: &Vec<f32>, len: usize, eps: f32, y: &mut Vec<f32>) -> Result<()> {
        same_len("standardise output", y.len(), x.len());
        for (item, out) in x.chunks(len).zip(y.chunks_mut(len)) {
            out.copy_from_slice(&normalise_patch(item, eps));
        }
        Ok(())
    }

    fn standardise_backward(
        &self,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        len: usize,
        eps: f32,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        same_len("standardise output gradient", dy.len(), x.len());
        same_len("standardise input gradient", dx.len(), x.len());
        for ((d, g), item) in dx.chunks_mut(len).zip(dy.chunks(len)).zip(x.chunks(len)) {
            // As `Network::backward`: the factor in f32.
            let k = standardise_moments(item, eps).1 as f32;
            d.iter_mut().zip(g).for_each(|(d, g)| *d = g * k);
        }
        Ok(())
    }

    fn l2_normalise(&self, x: &Vec<f32>, dim: usize, eps: f32, y: &mut Vec<f32>) -> Result<()> {
        y.copy_from_slice(x);
        y.chunks_mut(dim)
            .for_each(|row| l2_normalise_eps(row, eps as f64));
        Ok(())
    }

    fn l2_normalise_backward(
        &self,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        dim: usize,
        eps: f32,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        same_len("L2 normalisation output gradient", dy.len(), x.len());
        same_len("L2 normalisation input gradient", dx.len(), x.len());
        for ((d, g), row) in dx.chunks_mut(dim).zip(dy.chunks(dim)).zip(x.chunks(dim)) {
            l2_normalise_backward(row, g, eps as f64, d);
        }
        Ok(())
    }

    fn upload_pyramid(&self, _space: &ScaleSpace) -> Result<()> {
        Ok(())
    }

    fn extract_patches(
        &self,
        _pyramid: &(),
        space: &ScaleSpace,
        lafs: &[Laf],
        spec: &PatchSpec,
    ) -> Result<Vec<f32>> {
        Ok(patch::extract_patches(space, lafs, spec))
    }

    fn warp_forward(
        &self,
        g: &WarpGeometry,
        src: &Vec<f32>,
        theta: &Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        st::warp_forward(src, &affines(g, theta), g.size(), out);
        Ok(())
    }

    fn warp_backward(
        &self,
        g: &WarpGeometry,
        src: &Vec<f32>,
        theta: &Vec<f32>,
        d_out: &Vec<f32>,
        d_src: Option<&mut Vec<f32>>,
        d_theta: &mut Vec<f32>,
    ) -> Result<()> {
        let mut d_maps = vec![[[0.0f32; 3]; 2]; g.n];
        let d_src = d_src.map(|d| &mut d[..]);
        st::warp_backward(src, &affines(g, theta), g.size(), d_out, d_src, &mut d_maps);
        same_len("warp map gradient", d_theta.len(), 6 * g.n);
        for (flat, map) in d_theta.chunks_exact_mut(6).zip(&d_maps) {
            flat.copy_from_slice(map.as_flattened());
        }
        Ok(())
    }

    fn sift_forward(
        &self,
        patches: &Vec<f32>,
        size: usize,
        out: &mut Vec<f32>,
    ) -> Result<SiftCache> {
        let mut cache = SiftCache::default();
        DiffSift::new(size).forward(patches, out, &mut cache);
        Ok(cache)
    }

    fn sift_backward(
        &self,
        patches: &Vec<f32>,
        size: usize,
        cache: &SiftCache,
        d_desc: &Vec<f32>,
        d_patches: &mut Vec<f32>,
    ) -> Result<()> {
        DiffSift::new(size).backward(patches, cache, d_desc, d_patches);
        Ok(())
    }

    fn two_nearest(
        &self,
        queries: &Vec<f32>,
        database: &Vec<f32>,
        dim: usize,
    ) -> Result<TwoNearest> {
        Ok(matching::two_nearest(queries, database, dim))
    }

    fn k_nearest(
        &self,
        queries: &Vec<f32>,
        database: &Vec<f32>,
        dim: usize,
        k: usize,
    ) -> Result<(Vec<f32>, Vec<u32>)> {
        Ok(matching::k_nearest_scores(queries, database, dim, k))
    }

    fn ratio_test(&self, nn: &TwoNearest, max_ratio: f32) -> Result<Vec<f32>> {
        let mut ratio = vec![f32::INFINITY; nn.nearest.len()];
        for t in matching::ratio_test(nn, max_ratio) {
            ratio[t.query] = t.ratio;
        }
        Ok(ratio)
    }

    fn descriptor_loss(
        &self,
        kind: LossKind,
        anchors: &Vec<f32>,
        positives: &Vec<f32>,
        dim: usize,
        ga: Option<&mut Vec<f32>>,
        gp: Option<&mut Vec<f32>>,
    ) -> Result<LossStats> {
        let grads = LossGrads {
            anchor: ga.map(|g| &mut g[..]),
            positive: gp.map(|g| &mut g[..]),
        };
        let mut ws = LossWorkspace::default();
        Ok(loss::descriptor_loss(
            kind, anchors, positives, dim, grads, &mut ws,
        ))
    }

    fn sgd_step(
        &self,
        params: &mut Vec<f32>,
        momentum_buffer: &mut Vec<f32>,
        grads: &Vec<f32>,
        lr: f32,
        momentum: f32,
        dampening: f32,
        weight_decay: f32,
        first: bool,
    ) -> Result<()> {
        same_len("momentum buffer", momentum_buffer.len(), params.len());
        let mut sgd = Sgd::new(lr, momentum, dampening, weight_decay);
        if !first {
            sgd.set_momentum_buffer(Some(take(momentum_buffer)));
        }
        sgd.step(params, grads);
        // Momentum 0 keeps no buffer: the caller's stays as it was.
        if let Some(b) = sgd.momentum_buffer() {
            *momentum_buffer = b.to_vec();
        }
        Ok(())
    }
}
