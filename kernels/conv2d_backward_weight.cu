// 2-D convolution backward to the weights and the bias (CPU reference: src/nn/ops/conv.rs):
//
//   dW[kk][co] = Σ_m A[m][kk] · dy[m][co]      (A as in conv2d_forward.cu, input map included)
//   db[co]     = Σ_m dy[m][co]
//
// The reduction runs over every output pixel of the batch (millions), so it is split: block
// (kk tile, co tile, z) sums the pixels [z·chunk, (z+1)·chunk) into a 64×64 register tile and
// adds it to dW with atomicAdd. dW and db must be zeroed first (the wrapper does). The order of
// the atomic additions varies, so results vary in the last bits between runs.

#define BM 64
#define BN 64
#define BK 16

extern "C" __global__ void __launch_bounds__(256) conv2d_backward_weight(
    float* __restrict__ dw, const float* __restrict__ x, const float* __restrict__ dy,
    const float* __restrict__ in_shift, const float* __restrict__ in_scale, int in_relu, int n,
    int h, int wd, int cin, int cout, int k, int stride, int pad, int oh, int ow, int chunk) {
    __shared__ float As[BK][BM + 4];  // [pixel][kk]
    __shared__ float Bs[BK][BN + 4];  // [pixel][co]
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const long long P = (long long)n * oh * ow;
    const int KK = k * k * cin;
    const int kk0 = blockIdx.x * BM;
    const int co0 = blockIdx.y * BN;
    const long long p_begin = (long long)blockIdx.z * chunk;
    long long p_end = p_begin + chunk;
    if (p_end > P) p_end = P;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    // A loads: consecutive threads take consecutive kk of one pixel.
    const int lk = tid % BM, lp = tid / BM;  // lp in 0..3, pixels lp + 4·r
    int ci = 0, kx = 0, ky = 0;
    const bool kvalid = kk0 + lk < KK;
    if (kvalid) {
        int kk = kk0 + lk;
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

    for (long long p0 = p_begin; p0 < p_end; p0 += BK) {
#pragma unroll
        for (int r = 0; r < 4; r++) {
            long long p = p0 + lp + 4 * r;
            float v = 0.0f;
            if (kvalid && p < p_end) {
                int ox = (int)(p % ow);
                long long t = p / ow;
                int oy = (int)(t % oh);
                long long b = t / oh;
                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                if (iy >= 0 && iy < h && ix >= 0 && ix < wd) {
                    v = x[((b * h + iy) * wd + ix) * cin + ci];
                    if (in_scale) v = (v - sh) * sc;
                    if (in_relu) v = fmaxf(v, 0.0f);
                }
            }
            As[lp + 4 * r][lk] = v;
        }
#pragma unroll
        for (int r = 0; r < 4; r++) {
            long long p = p0 + lp + 4 * r;
            int co = co0 + lk;
            Bs[lp + 4 * r][lk] = (p < p_end && co < cout) ? dy[p * cout + co] : 0.0f;
        }
        __syncthreads();
        GEMM_TILE_4X4(acc, As, Bs, BK, tx, ty);  // prelude.cuh
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        int kk = kk0 + ty * 4 + i;
        if (kk >= KK) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int co = co0 + tx * 4 + j;
            if (co < cout) atomicAdd(&dw[(long long)kk * cout + co], acc[i][j]);
        }
    }
}

// db[c] += Σ over rows [z·chunk, (z+1)·chunk) of dy[row][c]; one thread per (channel, chunk).
// Rows are read with stride c, but consecutive threads read consecutive channels.
extern "C" __global__ void conv2d_backward_bias(float* __restrict__ db,
                                                const float* __restrict__ dy, long long rows,
                                                int c, int chunk) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    long long r0 = (long long)blockIdx.y * chunk;
    long long r1 = r0 + chunk;
    if (r1 > rows) r1 = rows;
    float s = 0.0f;
    for (long long r = r0; r < r1; r++) s += dy[r * c + ch];
    atomicAdd(&db[ch], s);
}
