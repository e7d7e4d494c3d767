// The differentiable SIFT descriptor of training, forward and backward w.r.t. the patch. Same
// maths as src/nn/ops/sift.rs (read its module docs): central-difference gradients with border
// replication, magnitude sqrt(gx² + gy² + 1e-10), circular Gaussian mask exp(−d²/(0.9·r²)),
// soft binning into 8 orientations and 4×4 cells (Perdoch's layout), L2 normalisation, clip at
// 0.2, L2 normalisation; index (ybin·4 + xbin)·8 + obin.
//
// One block per patch (blockDim a power of two, 128 ≤ blockDim ≤ 1024). The histogram lives in
// shared memory and pixels vote with shared-memory atomics; forward keeps the raw histogram and
// its two norms (`cache_hist`, `cache_norms`) for backward. Backward needs `size²` floats of
// dynamic shared memory (the patch gradient, accumulated with shared atomics).

#define SIFT_DIM 128
#define TWO_PI 6.28318548f

__device__ double sift_block_sum(double v, double* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    double total = shared[0];
    __syncthreads();
    return total;
}

__device__ float sift_mask(int i, int j, int size) {
    float c = ((float)size - 1.0f) / 2.0f;
    float r = (float)size / 2.0f;
    float y = (float)i - c, x = (float)j - c;
    float d2 = x * x + y * y;
    return d2 < r * r ? expf(-d2 / (0.9f * r * r)) : 0.0f;
}

// The two (cell, weight) pairs of row/column j; weight 0 for cells outside 0..3.
__device__ void sift_bins(int j, int size, int* b, float* wt) {
    float step = 5.0f / ((float)size - 1.0f);
    float x = (float)j * step - 1.0f;
    float fl = floorf(x);
    float f = x - fl;
    float bins[2] = {fl, fl + 1.0f};
    float ws[2] = {1.0f - f, f};
    for (int k = 0; k < 2; k++) {
        if (bins[k] >= 0.0f && bins[k] < 4.0f) {
            b[k] = (int)bins[k];
            wt[k] = ws[k];
        } else {
            b[k] = 0;
            wt[k] = 0.0f;
        }
    }
}

struct Pix {
    float gx, gy, mag, w1;
    int b0, b1;
};

__device__ Pix sift_pixel(const float* p, int i, int j, int s) {
    int jm = j > 0 ? j - 1 : 0, jp = j + 1 < s ? j + 1 : s - 1;
    int im = i > 0 ? i - 1 : 0, ip = i + 1 < s ? i + 1 : s - 1;
    Pix px;
    px.gx = p[i * s + jp] - p[i * s + jm];
    px.gy = p[ip * s + j] - p[im * s + j];
    px.mag = sqrtf(px.gx * px.gx + px.gy * px.gy + 1e-10f);
    float o = (atan2f(px.gy, px.gx) + TWO_PI) * (8.0f / TWO_PI);
    float fl = floorf(o);
    px.b0 = ((int)fl) % 8;
    px.b1 = (px.b0 + 1) % 8;
    px.w1 = o - fl;
    return px;
}

extern "C" __global__ void sift_forward(float* __restrict__ out, float* __restrict__ cache_hist,
                                        double* __restrict__ cache_norms,
                                        const float* __restrict__ patches, int size) {
    __shared__ float hist[SIFT_DIM];
    __shared__ double red[1024];
    const int b = blockIdx.x;
    const float* p = patches + (long long)b * size * size;
    for (int k = threadIdx.x; k < SIFT_DIM; k += blockDim.x) hist[k] = 0.0f;
    __syncthreads();
    for (int pix = threadIdx.x; pix < size * size; pix += blockDim.x) {
        int i = pix / size, j = pix % size;
        float m = sift_mask(i, j, size);
        if (m == 0.0f) continue;
        Pix px = sift_pixel(p, i, j, size);
        float w = px.mag * m;
        int by[2], bx[2];
        float wy[2], wx[2];
        sift_bins(i, size, by, wy);
        sift_bins(j, size, bx, wx);
        for (int a = 0; a < 2; a++)
            for (int c = 0; c < 2; c++) {
                float ww = w * wy[a] * wx[c];
                if (ww != 0.0f) {
                    int cell = (by[a] * 4 + bx[c]) * 8;
                    atomicAdd(&hist[cell + px.b0], ww * (1.0f - px.w1));
                    atomicAdd(&hist[cell + px.b1], ww * px.w1);
                }
            }
    }
    __syncthreads();
    const int k = threadIdx.x;
    float h = k < SIFT_DIM ? hist[k] : 0.0f;
    double n1 = sqrt(sift_block_sum((double)h * (double)h, red) + 1e-10);
    float d = k < SIFT_DIM ? fminf((float)((double)h / n1), 0.2f) : 0.0f;
    double n2 = sqrt(sift_block_sum((double)d * (double)d, red) + 1e-10);
    if (k < SIFT_DIM) {
        out[(long long)b * SIFT_DIM + k] = (float)((double)d / n2);
        cache_hist[(long long)b * SIFT_DIM + k] = h;
    }
    if (k == 0) {
        cache_norms[2 * (long long)b] = n1;
        cache_norms[2 * (long long)b + 1] = n2;
    }
}

extern "C" __global__ void sift_backward(float* __restrict__ d_patches,
                                         const float* __restrict__ patches,
                                         const float* __restrict__ cache_hist,
                                         const double* __restrict__ cache_norms,
                                         const float* __restrict__ d_desc, int size) {
    extern __shared__ float dp[];  // size² floats
    __shared__ float dh[SIFT_DIM];
    __shared__ double red[1024];
    const int b = blockIdx.x;
    const float* p = patches + (long long)b * size * size;
    const int k = threadIdx.x;
    const double n1 = cache_norms[2 * (long long)b], n2 = cache_norms[2 * (long long)b + 1];
    // Backward of h → v = h/n1 → c = min(v, 0.2) → d = c/n2 (normalisation_backward on the CPU).
    double h = k < SIFT_DIM ? (double)cache_hist[(long long)b * SIFT_DIM + k] : 0.0;
    double dd = k < SIFT_DIM ? (double)d_desc[(long long)b * SIFT_DIM + k] : 0.0;
    const double clip = (double)0.2f;  // the CPU compares with 0.2f32 as f64
    double c = h / n1 < clip ? h / n1 : clip;
    if (k >= SIFT_DIM) c = 0.0;
    double dot = sift_block_sum(dd * c, red);
    double dv = (h / n1 <= clip) ? dd / n2 - c * dot / (n2 * n2 * n2) : 0.0;
    if (k >= SIFT_DIM) dv = 0.0;
    double dot_h = sift_block_sum(dv * h, red);
    if (k < SIFT_DIM) dh[k] = (float)(dv / n1 - h * dot_h / (n1 * n1 * n1));
    for (int q = threadIdx.x; q < size * size; q += blockDim.x) dp[q] = 0.0f;
    __syncthreads();
    for (int pix = threadIdx.x; pix < size * size; pix += blockDim.x) {
        int i = pix / size, j = pix % size;
        float m = sift_mask(i, j, size);
        if (m == 0.0f) continue;
        Pix px = sift_pixel(p, i, j, size);
        int by[2], bx[2];
        float wy[2], wx[2];
        sift_bins(i, size, by, wy);
        sift_bins(j, size, bx, wx);
        float d_w = 0.0f, d_w1 = 0.0f;
        for (int a = 0; a < 2; a++)
            for (int cc = 0; cc < 2; cc++) {
                float ww = wy[a] * wx[cc];
                if (ww != 0.0f) {
                    int cell = (by[a] * 4 + bx[cc]) * 8;
                    float g0 = dh[cell + px.b0], g1 = dh[cell + px.b1];
                    d_w += ww * ((1.0f - px.w1) * g0 + px.w1 * g1);
                    d_w1 += ww * (g1 - g0);
                }
            }
        float d_mag = d_w * m;
        float d_theta = d_w1 * px.mag * m * (8.0f / TWO_PI);
        float r2 = px.gx * px.gx + px.gy * px.gy;
        float dgx = d_mag * px.gx / px.mag, dgy = d_mag * px.gy / px.mag;
        if (r2 > 0.0f) {
            dgx -= d_theta * px.gy / r2;
            dgy += d_theta * px.gx / r2;
        }
        int jm = j > 0 ? j - 1 : 0, jp = j + 1 < size ? j + 1 : size - 1;
        int im = i > 0 ? i - 1 : 0, ip = i + 1 < size ? i + 1 : size - 1;
        atomicAdd(&dp[i * size + jp], dgx);
        atomicAdd(&dp[i * size + jm], -dgx);
        atomicAdd(&dp[ip * size + j], dgy);
        atomicAdd(&dp[im * size + j], -dgy);
    }
    __syncthreads();
    float* out = d_patches + (long long)b * size * size;
    for (int q = threadIdx.x; q < size * size; q += blockDim.x) out[q] = dp[q];
}
