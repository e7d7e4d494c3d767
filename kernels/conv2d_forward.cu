// 2-D convolution forward as an implicit GEMM on NHWC activations (see src/gpu/mod.rs, "Layouts").
//
//   y[m][co] = act( Σ_kk A[m][kk] · W[kk][co] + bias[co] )
//   m  = (b·OH + oy)·OW + ox               (output pixel; NHWC row)
//   kk = (ky·K + kx)·CIN + ci               (W in "GEMM layout", as src/nn/ops/conv.rs)
//   A[m][kk] = map(x[b][oy·S + ky − P][ox·S + kx − P][ci]), 0 outside the image
//   map(v) = relu?((v − shift[ci])·scale[ci])   (the previous batch norm / ReLU, fused)
//
// im2col never exists: each 64×64 output tile loads 16-wide slices of A and W into shared
// memory, and every thread accumulates a 4×4 block in registers. Consecutive threads read
// consecutive kk (consecutive channels of one pixel), so the loads are coalesced when CIN ≥ 16.
// Full f32 FMA (no TF32), so the CPU tolerance of 1e-4 applies.

#define BM 64
#define BN 64
#define BK 16

extern "C" __global__ void __launch_bounds__(256) conv2d_forward(
    float* __restrict__ y, const float* __restrict__ x, const float* __restrict__ w,
    const float* __restrict__ bias, const float* __restrict__ in_shift,
    const float* __restrict__ in_scale, int in_relu, int act, int n, int h, int wd, int cin,
    int cout, int k, int stride, int pad, int oh, int ow) {
    __shared__ float As[BK][BM + 4];
    __shared__ float Bs[BK][BN + 4];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const long long M = (long long)n * oh * ow;
    const int KK = k * k * cin;
    const long long m0 = (long long)blockIdx.x * BM;
    const int n0 = blockIdx.y * BN;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    // The A element this thread loads: column kq of rows mq + 16·r.
    const int kq = tid % BK, mq = tid / BK;
    // Per loaded row: the item and the top-left input position (fixed over the K loop).
    int rb[4], ry[4], rx[4];
    bool rvalid[4];
#pragma unroll
    for (int r = 0; r < 4; r++) {
        long long m = m0 + mq + 16 * r;
        rvalid[r] = m < M;
        long long mm = rvalid[r] ? m : 0;
        int ox = (int)(mm % ow);
        long long t = mm / ow;
        int oy = (int)(t % oh);
        rb[r] = (int)(t / oh);
        ry[r] = oy * stride - pad;
        rx[r] = ox * stride - pad;
    }
    // The W element this thread loads: row kb, columns nb + 16·r... (BK·BN = 4 per thread).
    const int nb = tid % BN, kb = tid / BN;

    for (int k0 = 0; k0 < KK; k0 += BK) {
        int kk = k0 + kq;
        int ci = 0, kx = 0, ky = 0;
        bool kvalid = kk < KK;
        if (kvalid) {
            ci = kk % cin;
            int t = kk / cin;
            kx = t % k;
            ky = t / k;
        }
        float sh = 0.0f, sc = 1.0f;
        if (kvalid && in_scale) {
            sh = in_shift[ci];
            sc = in_scale[ci];
        }
#pragma unroll
        for (int r = 0; r < 4; r++) {
            float v = 0.0f;
            int iy = ry[r] + ky, ix = rx[r] + kx;
            if (kvalid && rvalid[r] && iy >= 0 && iy < h && ix >= 0 && ix < wd) {
                v = x[(((long long)rb[r] * h + iy) * wd + ix) * cin + ci];
                if (in_scale) v = (v - sh) * sc;
                if (in_relu) v = fmaxf(v, 0.0f);
            }
            As[kq][mq + 16 * r] = v;
        }
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int kr = k0 + kb + 4 * r;
            int co = n0 + nb;
            Bs[kb + 4 * r][nb] = (kr < KK && co < cout) ? w[(long long)kr * cout + co] : 0.0f;
        }
        __syncthreads();
        GEMM_TILE_4X4(acc, As, Bs, BK, tx, ty);  // prelude.cuh
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        long long m = m0 + ty * 4 + i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int co = n0 + tx * 4 + j;
            if (co >= cout) continue;
            float v = acc[i][j] + (bias ? bias[co] : 0.0f);
            if (act == 1) v = fmaxf(v, 0.0f);
            else if (act == 2) v = tanhf(v);
            y[m * cout + co] = v;
        }
    }
}
