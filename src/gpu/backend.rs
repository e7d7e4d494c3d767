//! The CUDA backend of [`crate::nn::backend::Backend`]: every op is one call to its wrapper in
//! [`super::ops`] (patch extraction: to [`GpuPyramid`]), which checks the shapes and launches.

use cudarc::driver::CudaSlice;

use super::ops::{self, Buf, DeviceBatchStats, DeviceTwoNearest, InputMap, SiftCache};
use super::pyramid::GpuPyramid;
use super::Gpu;
use crate::laf::Laf;
use crate::nn::backend::{Backend, ConvGeometry, WarpGeometry};
use crate::nn::fold::FusedAct;
use crate::nn::ops::loss::{LossKind, LossStats};
use crate::nn::ops::Activation;
use crate::patch::PatchSpec;
use crate::pyramid::ScaleSpace;
use crate::Result;

/// An opened GPU as a [`Backend`].
#[derive(Clone, Copy)]
pub struct Cuda<'g> {
    gpu: &'g Gpu,
}

impl<'g> Cuda<'g> {
    /// The backend on `gpu`.
    pub fn new(gpu: &'g Gpu) -> Self {
        Cuda { gpu }
    }

    /// The GPU it runs on.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }
}

impl Backend for Cuda<'_> {
    type Buf = Buf;
    type Indices = CudaSlice<u32>;
    type Pyramid = GpuPyramid;
    type SiftCache = SiftCache;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn upload(&self, host: &[f32]) -> Result<Buf> {
        self.gpu.upload(host)
    }
    fn download(&self, buf: &Buf) -> Result<Vec<f32>> {
        self.gpu.download(buf)
    }
    fn download_indices(&self, buf: &CudaSlice<u32>) -> Result<Vec<u32>> {
        self.gpu.download(buf)
    }
    fn zeros(&self, len: usize) -> Result<Buf> {
        self.gpu.zeros(len)
    }
    fn len(&self, buf: &Buf) -> usize {
        buf.len()
    }

    fn fill(&self, x: &mut Buf, value: f32) -> Result<()> {
        ops::fill(self.gpu, x, value)
    }
    fn axpy(&self, a: f32, x: &Buf, y: &mut Buf) -> Result<()> {
        ops::axpy(self.gpu, a, x, y)
    }
    fn activation_forward(&self, act: Activation, x: &Buf, y: &mut Buf) -> Result<()> {
        ops::activation_forward(self.gpu, act, x, y)
    }
    fn activation_backward(
        &self,
        act: Activation,
        dy: &Buf,
        saved: &Buf,
        dx: &mut Buf,
    ) -> Result<()> {
        ops::activation_backward(self.gpu, act, dy, saved, dx)
    }
    fn dropout_forward(
        &self,
        x: &Buf,
        map: InputMap<'_>,
        c: usize,
        p: f32,
        seed: u64,
        y: &mut Buf,
    ) -> Result<()> {
        ops::dropout_forward(self.gpu, x, map, c, p, seed, y)
    }
    fn dropout_backward(&self, d: &mut Buf, p: f32, seed: u64) -> Result<()> {
        ops::dropout_backward(self.gpu, d, p, seed)
    }

    fn conv2d_forward(
        &self,
        g: &ConvGeometry,
        x: &Buf,
        w: &Buf,
        bias: Option<&Buf>,
        map: InputMap<'_>,
        act: FusedAct,
        y: &mut Buf,
    ) -> Result<()> {
        ops::conv2d_forward(self.gpu, g, x, w, bias, map, act, y)
    }
    fn conv2d_backward_input(
        &self,
        g: &ConvGeometry,
        dy: &Buf,
        w: &Buf,
        dx: &mut Buf,
    ) -> Result<()> {
        ops::conv2d_backward_input(self.gpu, g, dy, w, dx)
    }
    fn conv2d_backward_weight(
        &self,
        g: &ConvGeometry,
        x: &Buf,
        dy: &Buf,
        map: InputMap<'_>,
        dw: &mut Buf,
        db: Option<&mut Buf>,
    ) -> Result<()> {
        ops::conv2d_backward_weight(self.gpu, g, x, dy, map, dw, db)
    }

    fn bn_batch_stats(
        &self,
        x: &Buf,
        c: usize,
        eps: f32,
        momentum: f32,
        running: Option<(&mut Buf, &mut Buf)>,
    ) -> Result<DeviceBatchStats> {
        ops::bn_batch_stats(self.gpu, x, c, eps, momentum, running)
    }
    fn bn_inv_std(&self, var: &Buf, eps: f32, inv_std: &mut Buf) -> Result<()> {
        ops::bn_inv_std(self.gpu, var, eps, inv_std)
    }
    fn bn_normalise(
        &self,
        x: &Buf,
        mean: &Buf,
        inv_std: &Buf,
        relu: bool,
        y: &mut Buf,
    ) -> Result<()> {
        ops::bn_normalise(self.gpu, x, mean, inv_std, relu, y)
    }
    fn bn_backward_train(
        &self,
        x: &Buf,
        dy: &Buf,
        stats: &DeviceBatchStats,
        relu_after: bool,
        dx: &mut Buf,
    ) -> Result<()> {
        ops::bn_backward_train(self.gpu, x, dy, stats, relu_after, dx)
    }
    fn bn_backward_eval(
        &self,
        x: &Buf,
        dy: &Buf,
        mean: &Buf,
        inv_std: &Buf,
        relu_after: bool,
        dx: &mut Buf,
    ) -> Result<()> {
        ops::bn_backward_eval(self.gpu, x, dy, mean, inv_std, relu_after, dx)
    }

    fn global_avg_pool_forward(&self, x: &Buf, n: usize, c: usize, y: &mut Buf) -> Result<()> {
        ops::global_avg_pool_forward(self.gpu, x, n, c, y)
    }
    fn global_avg_pool_backward(&self, dy: &Buf, n: usize, c: usize, dx: &mut Buf) -> Result<()> {
        ops::global_avg_pool_backward(self.gpu, dy, n, c, dx)
    }
    fn standardise(&self, x: &Buf, len: usize, eps: f32, y: &mut Buf) -> Result<()> {
        ops::standardise(self.gpu, x, len, eps, y)
    }
    fn standardise_backward(
        &self,
        x: &Buf,
        dy: &Buf,
        len: usize,
        eps: f32,
        dx: &mut Buf,
    ) -> Result<()> {
        ops::standardise_backward(self.gpu, x, dy, len, eps, dx)
    }
    fn l2_normalise(&self, x: &Buf, dim: usize, eps: f32, y: &mut Buf) -> Result<()> {
        ops::l2_normalise(self.gpu, x, dim, eps, y)
    }
    fn l2_normalise_backward(
        &self,
        x: &Buf,
        dy: &Buf,
        dim: usize,
        eps: f32,
        dx: &mut Buf,
    ) -> Result<()> {
        ops::l2_normalise_backward(self.gpu, x, dy, dim, eps, dx)
    }

    fn upload_pyramid(&self, space: &ScaleSpace) -> Result<GpuPyramid> {
        GpuPyramid::upload(self.gpu, space)
    }
    fn extract_patches(
        &self,
        pyramid: &GpuPyramid,
        space: &ScaleSpace,
        lafs: &[Laf],
        spec: &PatchSpec,
    ) -> Result<Buf> {
        pyramid.extract(self.gpu, space, lafs, spec)
    }
    fn warp_forward(&self, g: &WarpGeometry, src: &Buf, theta: &Buf, out: &mut Buf) -> Result<()> {
        ops::warp_forward(self.gpu, g, src, theta, out)
    }
    fn warp_backward(
        &self,
        g: &WarpGeometry,
        src: &Buf,
        theta: &Buf,
        d_out: &Buf,
        d_src: Option<&mut Buf>,
        d_theta: &mut Buf,
    ) -> Result<()> {
        ops::warp_backward(self.gpu, g, src, theta, d_out, d_src, d_theta)
    }

    fn sift_forward(&self, patches: &Buf, size: usize, out: &mut Buf) -> Result<SiftCache> {
        ops::sift_forward(self.gpu, patches, size, out)
    }
    fn sift_backward(
        &self,
        patches: &Buf,
        size: usize,
        cache: &SiftCache,
        d_desc: &Buf,
        d_patches: &mut Buf,
    ) -> Result<()> {
        ops::sift_backward(self.gpu, patches, size, cache, d_desc, d_patches)
    }

    fn two_nearest(&self, queries: &Buf, database: &Buf, dim: usize) -> Result<DeviceTwoNearest> {
        ops::two_nearest(self.gpu, queries, database, dim)
    }
    fn k_nearest(
        &self,
        queries: &Buf,
        database: &Buf,
        dim: usize,
        k: usize,
    ) -> Result<(Buf, CudaSlice<u32>)> {
        ops::k_nearest_scores(self.gpu, queries, database, dim, k)
    }
    fn ratio_test(&self, nn: &DeviceTwoNearest, max_ratio: f32) -> Result<Buf> {
        ops::ratio_test(self.gpu, nn, max_ratio)
    }

    fn descriptor_loss(
        &self,
        kind: LossKind,
        anchors: &Buf,
        positives: &Buf,
        dim: usize,
        ga: Option<&mut Buf>,
        gp: Option<&mut Buf>,
    ) -> Result<LossStats> {
        ops::descriptor_loss(self.gpu, kind, anchors, positives, dim, ga, gp)
    }
    fn sgd_step(
        &self,
        params: &mut Buf,
        momentum_buffer: &mut Buf,
        grads: &Buf,
        lr: f32,
        momentum: f32,
        dampening: f32,
        weight_decay: f32,
        first: bool,
    ) -> Result<()> {
        ops::sgd_step(
            self.gpu,
            params,
            momentum_buffer,
            grads,
            lr,
            momentum,
            dampening,
            weight_decay,
            first,
        )
    }
}
