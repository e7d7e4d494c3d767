// Per-item normalisations of the networks (CPU reference: src/nn/models.rs):
// - standardise_patches: (x − mean)/(std + eps) per patch, with the unbiased (N − 1) std, as the
//   authors' input normalisation; sums in f64 like the CPU;
// - l2_normalise_rows: x / sqrt(Σx² + eps) per row (HardNet's output, eps 1e-10);
// - their backward passes for training AffNet through a frozen HardNet (CPU reference:
//   src/nn/network.rs `Network::backward`, src/train/chain/hardnet.rs `FrozenHardNet::backward`).
// One block per item; blockDim must be a power of two ≤ 1024 (the wrappers use 256 and 128).

__device__ double block_sum(double v, double* shared) {
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

// The patch's mean and 1/(std + eps) with the unbiased std, summed in f64 (every thread gets them).
__device__ void patch_moments(const float* p, int len, float eps, double* shared, double* mean,
                              double* scale) {
    double s = 0.0;
    for (int i = threadIdx.x; i < len; i += blockDim.x) s += (double)p[i];
    double m = block_sum(s, shared) / (double)len;
    double q = 0.0;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        double d = (double)p[i] - m;
        q += d * d;
    }
    double denom = len > 1 ? (double)(len - 1) : 1.0;
    double var = block_sum(q, shared) / denom;
    *mean = m;
    *scale = 1.0 / (sqrt(var) + (double)eps);
}

extern "C" __global__ void standardise_patches(float* y, const float* x, int len, float eps) {
    __shared__ double red[1024];
    const float* p = x + (long long)blockIdx.x * len;
    float* o = y + (long long)blockIdx.x * len;
    double mean, scale;
    patch_moments(p, len, eps, red, &mean, &scale);
    for (int i = threadIdx.x; i < len; i += blockDim.x)
        o[i] = (float)(((double)p[i] - mean) * scale);
}

extern "C" __global__ void l2_normalise_rows(float* y, const float* x, int dim, float eps) {
    __shared__ double red[1024];
    const float* r = x + (long long)blockIdx.x * dim;
    float* o = y + (long long)blockIdx.x * dim;
    double s = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += (double)r[i] * (double)r[i];
    double norm = sqrt(block_sum(s, red) + (double)eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = (float)((double)r[i] / norm);
}

// Backward of standardise_patches with the patch's mean and std held fixed, as the CPU network's
// backward: dx = dy / (std(x) + eps) per patch (x: the unstandardised input). dx may alias dy.
extern "C" __global__ void standardise_patches_backward(float* dx, const float* dy, const float* x,
                                                       int len, float eps) {
    __shared__ double red[1024];
    const float* p = x + (long long)blockIdx.x * len;
    const float* g = dy + (long long)blockIdx.x * len;
    float* o = dx + (long long)blockIdx.x * len;
    double mean, scale;
    patch_moments(p, len, eps, red, &mean, &scale);
    for (int i = threadIdx.x; i < len; i += blockDim.x) o[i] = g[i] * (float)scale;
}

// Backward of l2_normalise_rows: dx = dy/‖x‖ − x·(dy·x)/‖x‖³ with ‖x‖ = sqrt(Σx² + eps)
// (x: the unnormalised rows). dx may alias dy.
extern "C" __global__ void l2_normalise_rows_backward(float* dx, const float* dy, const float* x,
                                                      int dim, float eps) {
    __shared__ double red[1024];
    const float* r = x + (long long)blockIdx.x * dim;
    const float* g = dy + (long long)blockIdx.x * dim;
    float* o = dx + (long long)blockIdx.x * dim;
    double s = 0.0, d = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += (double)r[i] * (double)r[i];
    double norm = sqrt(block_sum(s, red) + (double)eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) d += (double)g[i] * (double)r[i];
    double dot = block_sum(d, red);
    double n3 = norm * norm * norm;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = (float)((double)g[i] / norm - (double)r[i] * dot / n3);
}
