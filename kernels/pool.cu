// Global average pooling (AdaptiveAvgPool2d(1), the only pooling the three networks use) on NHWC
// items of `hw` pixels × `c` channels; the CPU reference is src/nn/ops/pool.rs.

// y[b][ch] = Σ_p x[b][p][ch] / hw, summed in f64 as on the CPU. One thread per (item, channel);
// consecutive threads read consecutive channels.
extern "C" __global__ void global_avg_pool_forward(float* __restrict__ y,
                                                   const float* __restrict__ x, int n, int hw,
                                                   int c) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * c) return;
    long long b = i / c;
    int ch = (int)(i % c);
    const float* item = x + b * hw * c;
    double s = 0.0;
    for (int p = 0; p < hw; p++) s += (double)item[(long long)p * c + ch];
    y[i] = (float)(s / (double)hw);
}

// dx[b][p][ch] = dy[b][ch] / hw.
extern "C" __global__ void global_avg_pool_backward(float* __restrict__ dx,
                                                    const float* __restrict__ dy, int n, int hw,
                                                    int c) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long total = (long long)n * hw * c;
    if (i >= total) return;
    int ch = (int)(i % c);
    long long b = i / ((long long)hw * c);
    dx[i] = dy[b * c + ch] / (float)hw;
}
