// 2-D convolution backward to the input, as an implicit GEMM on NHWC activations (the transposed
// convolution of conv2d_forward.cu; the CPU reference is src/nn/ops/conv.rs):
//
//   dx[p][ci] = Σ_kk' dY[p][kk'] · W'[kk'][ci]
//   p   = (b·H + iy)·W + ix                  (input pixel; NHWC row)
//   kk' = (ky·K + kx)·COUT + co
//   dY[p][kk'] = dy[b][oy][ox][co] with oy = (iy + P − ky)/S, ox = (ix + P − kx)/S when those
//                divisions are exact and inside the output, else 0
//   W'[kk'][ci] = w[(ky·K + kx)·CIN + ci][co]
//
// The gradient is w.r.t. the value the forward pass read (after its input map), as on the CPU.
// Each thread writes its own dx entries: no atomics, deterministic. Same 64×64×16 tiling as the
// forward kernel.

#define BM 64
#define BN 64
#define BK 16

extern "C" __global__ void __launch_bounds__(256) conv2d_backward_input(
    float* __restrict__ dx, const float* __restrict__ dy, const float* __restrict__ w, int n,
    int h, int wd, int cin, int cout, int k, int stride, int pad, int oh, int ow) {
    __shared__ float As[BK][BM + 4];
    __shared__ float Bs[BK][BN + 4];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const long long M = (long long)n * h * wd;
    const int KK = k * k * cout;
    const long long m0 = (long long)blockIdx.x * BM;
    const int n0 = blockIdx.y * BN;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    const int kq = tid % BK, mq = tid / BK;
    int rb[4], ry[4], rx[4];
    bool rvalid[4];
#pragma unroll
    for (int r = 0; r < 4; r++) {
        long long m = m0 + mq + 16 * r;
        rvalid[r] = m < M;
        long long mm = rvalid[r] ? m : 0;
        rx[r] = (int)(mm % wd);
        long long t = mm / wd;
        ry[r] = (int)(t % h);
        rb[r] = (int)(t / h);
    }

    for (int k0 = 0; k0 < KK; k0 += BK) {
        int kk = k0 + kq;
        bool kvalid = kk < KK;
        int co = 0, kx = 0, ky = 0;
        if (kvalid) {
            co = kk % cout;
            int t = kk / cout;
            kx = t % k;
            ky = t / k;
        }
#pragma unroll
        for (int r = 0; r < 4; r++) {
            float v = 0.0f;
            int ty_ = ry[r] + pad - ky, tx_ = rx[r] + pad - kx;
            if (kvalid && rvalid[r] && ty_ >= 0 && tx_ >= 0 && ty_ % stride == 0 &&
                tx_ % stride == 0) {
                int oy = ty_ / stride, ox = tx_ / stride;
                if (oy < oh && ox < ow)
                    v = dy[(((long long)rb[r] * oh + oy) * ow + ox) * cout + co];
            }
            As[kq][mq + 16 * r] = v;
        }
        // W'[kk][ci]: consecutive threads take consecutive co (contiguous in w).
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int ci = n0 + mq + 16 * r;
            float v = 0.0f;
            if (kvalid && ci < cin) v = w[((long long)(ky * k + kx) * cin + ci) * cout + co];
            Bs[kq][mq + 16 * r] = v;
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
            int ci = n0 + tx * 4 + j;
            if (ci < cin) dx[m * cin + ci] = acc[i][j];
        }
    }
}
