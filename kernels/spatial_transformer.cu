// The spatial transformer for training: batched affine grid + bilinear sampling, forward, and
// backward to the sources and to the affine maps. CPU reference and convention:
// src/nn/ops/spatial_transformer.rs (PyTorch affine_grid + grid_sample, align_corners=False,
// padding_mode="border"):
//   output pixel (i, j) of item b sits at u = ((2j+1)/OW − 1, (2i+1)/OH − 1), reads its source at
//   g = M·u + t (θ = [M | t], 6 floats per item, row-major), i.e. at pixel
//   ((g_x + 1)·IW − 1)/2, ((g_y + 1)·IH − 1)/2, clamped to the source (derivative 0 along a
//   clamped axis), bilinearly.
// Each item has its own IH×IW source (sources back to back).

struct Sample {
    int x0, y0, x1, y1;
    float fx, fy;
    bool cx, cy;
};

__device__ void locate(float g, int size, int* p0, int* p1, float* f, bool* clamped) {
    float p = ((g + 1.0f) * (float)size - 1.0f) * 0.5f;
    float mx = (float)(size - 1);
    *clamped = !(p >= 0.0f && p <= mx);
    p = fminf(fmaxf(p, 0.0f), mx);
    int q = (int)p;
    if (q > size - 1) q = size - 1;
    *p0 = q;
    *p1 = q + 1 < size ? q + 1 : size - 1;
    *f = p - (float)q;
}

__device__ Sample sample_at(const float* th, int ih, int iw, float u, float v) {
    Sample s;
    float gx = th[0] * u + th[1] * v + th[2];
    float gy = th[3] * u + th[4] * v + th[5];
    locate(gx, iw, &s.x0, &s.x1, &s.fx, &s.cx);
    locate(gy, ih, &s.y0, &s.y1, &s.fy, &s.cy);
    return s;
}

__device__ float grid_coord(int i, int n) { return (float)(2 * i + 1) / (float)n - 1.0f; }

// One thread per output pixel.
extern "C" __global__ void warp_forward(float* __restrict__ out, const float* __restrict__ src,
                                        const float* __restrict__ theta, int n, int ih, int iw,
                                        int oh, int ow) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long per = (long long)oh * ow;
    if (idx >= (long long)n * per) return;
    int b = (int)(idx / per);
    int pix = (int)(idx % per);
    int i = pix / ow, j = pix % ow;
    const float* s = src + (long long)b * ih * iw;
    Sample p = sample_at(theta + 6 * (long long)b, ih, iw, grid_coord(j, ow), grid_coord(i, oh));
    float v00 = s[p.y0 * iw + p.x0], v01 = s[p.y0 * iw + p.x1];
    float v10 = s[p.y1 * iw + p.x0], v11 = s[p.y1 * iw + p.x1];
    float top = v00 + p.fx * (v01 - v00);
    float bottom = v10 + p.fx * (v11 - v10);
    out[idx] = top + p.fy * (bottom - top);
}

// One block per item: the block's threads stride over the output pixels, accumulate dθ in f64
// (as the CPU) and reduce it in shared memory, so dθ needs no atomics. The source gradient is
// scattered with atomicAdd (several outputs read one source pixel); d_src must be zeroed first,
// or null to skip it. blockDim must be a power of two ≤ 256.
extern "C" __global__ void warp_backward(float* __restrict__ d_src, float* __restrict__ d_theta,
                                         const float* __restrict__ src,
                                         const float* __restrict__ theta,
                                         const float* __restrict__ d_out, int ih, int iw, int oh,
                                         int ow) {
    __shared__ double red[6][256];
    const int b = blockIdx.x;
    const float* s = src + (long long)b * ih * iw;
    const float* th = theta + 6 * (long long)b;
    const float* dout = d_out + (long long)b * oh * ow;
    float* ds = d_src ? d_src + (long long)b * ih * iw : 0;
    const float sx = (float)iw * 0.5f, sy = (float)ih * 0.5f;
    double acc[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    for (int pix = threadIdx.x; pix < oh * ow; pix += blockDim.x) {
        float dv = dout[pix];
        if (dv == 0.0f) continue;
        int i = pix / ow, j = pix % ow;
        float u = grid_coord(j, ow), v = grid_coord(i, oh);
        Sample p = sample_at(th, ih, iw, u, v);
        float v00 = s[p.y0 * iw + p.x0], v01 = s[p.y0 * iw + p.x1];
        float v10 = s[p.y1 * iw + p.x0], v11 = s[p.y1 * iw + p.x1];
        float dgx = p.cx ? 0.0f : dv * ((1.0f - p.fy) * (v01 - v00) + p.fy * (v11 - v10)) * sx;
        float dgy = p.cy ? 0.0f : dv * ((1.0f - p.fx) * (v10 - v00) + p.fx * (v11 - v01)) * sy;
        acc[0] += (double)(dgx * u);
        acc[1] += (double)(dgx * v);
        acc[2] += (double)dgx;
        acc[3] += (double)(dgy * u);
        acc[4] += (double)(dgy * v);
        acc[5] += (double)dgy;
        if (ds) {
            atomicAdd(&ds[p.y0 * iw + p.x0], dv * (1.0f - p.fx) * (1.0f - p.fy));
            atomicAdd(&ds[p.y0 * iw + p.x1], dv * p.fx * (1.0f - p.fy));
            atomicAdd(&ds[p.y1 * iw + p.x0], dv * (1.0f - p.fx) * p.fy);
            atomicAdd(&ds[p.y1 * iw + p.x1], dv * p.fx * p.fy);
        }
    }
    for (int r = 0; r < 6; r++) red[r][threadIdx.x] = acc[r];
    __syncthreads();
    for (int st = blockDim.x / 2; st > 0; st >>= 1) {
        if (threadIdx.x < st)
            for (int r = 0; r < 6; r++) red[r][threadIdx.x] += red[r][threadIdx.x + st];
        __syncthreads();
    }
    if (threadIdx.x < 6) d_theta[6 * (long long)b + threadIdx.x] = (float)red[threadIdx.x][0];
}
