// Batch normalisation (affine=False) over NHWC rows (`rows × c`, channel fastest), training
// (batch statistics) and inference (running statistics), forward and backward; the CPU reference
// is src/nn/ops/batchnorm.rs:
//   x̂ = (x − μ)·inv_std,  inv_std = 1/sqrt(σ² + eps), σ² the biased batch variance;
//   running: r_μ ← (1 − m)·r_μ + m·μ,  r_σ² ← (1 − m)·r_σ² + m·σ²·rows/(rows − 1);
//   backward (batch stats): dx = inv_std·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂));
//   backward (running stats): dx = inv_std·dx̂.
// A ReLU after the normalisation can be fused into the backward (`relu_after`): dy is then w.r.t.
// max(x̂, 0) and is masked with x̂ > 0 first.
//
// Sums over the batch are split into row chunks (one thread per channel and chunk, consecutive
// threads on consecutive channels, so reads are coalesced) and accumulated in f64 with atomicAdd
// (sm_60+). The moments are taken around the first row's value (no cancellation when |μ| ≫ σ).

extern "C" __global__ void bn_moments(double* __restrict__ s1, double* __restrict__ s2,
                                      const float* __restrict__ x, long long rows, int c,
                                      int chunk) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    long long r0 = (long long)blockIdx.y * chunk;
    long long r1 = r0 + chunk;
    if (r1 > rows) r1 = rows;
    const double shift = (double)x[ch];
    double a = 0.0, b = 0.0;
    for (long long r = r0; r < r1; r++) {
        double d = (double)x[r * c + ch] - shift;
        a += d;
        b += d * d;
    }
    atomicAdd(&s1[ch], a);
    atomicAdd(&s2[ch], b);
}

// Batch statistics from the moments, and (when update_running) the running-statistics update.
extern "C" __global__ void bn_finalize(float* __restrict__ mean, float* __restrict__ var,
                                       float* __restrict__ inv_std,
                                       float* __restrict__ running_mean,
                                       float* __restrict__ running_var,
                                       const double* __restrict__ s1,
                                       const double* __restrict__ s2,
                                       const float* __restrict__ x, long long rows, int c,
                                       float eps, float momentum, int update_running) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double n = (double)rows;
    double m1 = s1[ch] / n;
    double v = s2[ch] / n - m1 * m1;
    if (v < 0.0) v = 0.0;
    float mf = (float)((double)x[ch] + m1);
    float vf = (float)v;
    mean[ch] = mf;
    var[ch] = vf;
    inv_std[ch] = (float)(1.0 / sqrt(v + (double)eps));
    if (update_running) {
        double m = (double)momentum;
        double unbias = n / (n - 1.0);
        running_mean[ch] = (float)((1.0 - m) * (double)running_mean[ch] + m * (double)mf);
        running_var[ch] = (float)((1.0 - m) * (double)running_var[ch] + m * (double)vf * unbias);
    }
}

// inv_std = 1/sqrt(var + eps), for inference with the running variance.
extern "C" __global__ void bn_inv_std(float* __restrict__ inv_std, const float* __restrict__ var,
                                      int c, float eps) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch < c) inv_std[ch] = (float)(1.0 / sqrt((double)var[ch] + (double)eps));
}

// y = (x − mean)·inv_std per channel (relu: max(·, 0)); y may alias x.
extern "C" __global__ void bn_normalise(float* y, const float* x, const float* __restrict__ mean,
                                        const float* __restrict__ inv_std, long long total, int c,
                                        int relu) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int ch = (int)(i % c);
    float v = (x[i] - mean[ch]) * inv_std[ch];
    y[i] = relu ? fmaxf(v, 0.0f) : v;
}

// Σ v and Σ v·x̂ per channel, v = dy masked by x̂ > 0 when relu_after.
extern "C" __global__ void bn_backward_reduce(double* __restrict__ s, double* __restrict__ sx,
                                              const float* __restrict__ x,
                                              const float* __restrict__ dy,
                                              const float* __restrict__ mean,
                                              const float* __restrict__ inv_std, long long rows,
                                              int c, int chunk, int relu_after) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    long long r0 = (long long)blockIdx.y * chunk;
    long long r1 = r0 + chunk;
    if (r1 > rows) r1 = rows;
    const float m = mean[ch], k = inv_std[ch];
    double a = 0.0, b = 0.0;
    for (long long r = r0; r < r1; r++) {
        float xhat = (x[r * c + ch] - m) * k;
        float v = (relu_after && xhat <= 0.0f) ? 0.0f : dy[r * c + ch];
        a += (double)v;
        b += (double)v * (double)xhat;
    }
    atomicAdd(&s[ch], a);
    atomicAdd(&sx[ch], b);
}

// dx = inv_std·(v − mean(v) − x̂·mean(v·x̂)); dx may alias dy.
extern "C" __global__ void bn_backward_apply(float* dx, const float* x, const float* dy,
                                             const float* __restrict__ mean,
                                             const float* __restrict__ inv_std,
                                             const double* __restrict__ s,
                                             const double* __restrict__ sx, long long rows,
                                             int c, int relu_after) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * c) return;
    int ch = (int)(i % c);
    const float m = mean[ch], k = inv_std[ch];
    float a = (float)(s[ch] / (double)rows);
    float b = (float)(sx[ch] / (double)rows);
    float xv = x[i];
    float xhat = (xv - m) * k;
    float v = (relu_after && xhat <= 0.0f) ? 0.0f : dy[i];
    dx[i] = k * (v - a - (xv - m) * k * b);
}

// Inference-mode backward: dx = dy·inv_std (0 where relu_after and x ≤ mean); dx may alias dy.
extern "C" __global__ void bn_backward_eval(float* dx, const float* x, const float* dy,
                                            const float* __restrict__ mean,
                                            const float* __restrict__ inv_std, long long total,
                                            int c, int relu_after) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int ch = (int)(i % c);
    bool keep = !relu_after || x[i] > mean[ch];
    dx[i] = keep ? dy[i] * inv_std[ch] : 0.0f;
}
