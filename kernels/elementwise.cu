// Elementwise layers: ReLU and tanh, forward and backward, and buffer fills. Header-free (NVRTC
// has no standard headers). One thread per element; the CPU versions in src/nn/ops/
// activation.rs are the reference. Outputs may alias inputs.

extern "C" __global__ void relu_forward(float* y, const float* x, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = fmaxf(x[i], 0.0f);
}

// dx = dy where the forward input was positive.
extern "C" __global__ void relu_backward(float* dx, const float* dy, const float* x, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

extern "C" __global__ void tanh_forward(float* y, const float* x, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = tanhf(x[i]);
}

// dx = dy · (1 − y²), from the forward output y.
extern "C" __global__ void tanh_backward(float* dx, const float* dy, const float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

// x[i] = value (zeroing buffers before atomic accumulation).
extern "C" __global__ void fill_f32(float* x, float value, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = value;
}

extern "C" __global__ void fill_f64(double* x, double value, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = value;
}

// y += a·x (accumulating gradients).
extern "C" __global__ void axpy_f32(float* y, const float* x, float a, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += a * x[i];
}

// Dropout with the mask of src/nn/ops/dropout.rs, bit for bit: element i of a pass with
// mask seed `seed` is dropped iff hash_uniform(seed, i) < p, where hash_uniform is the top 24 bits
// of mix64(seed ^ mix64(i + 1)) (SplitMix64's finaliser; src/nn/rng.rs).
__device__ __forceinline__ unsigned long long wbs_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ bool dropout_keep(unsigned long long seed, long long i, float p) {
    unsigned long long h = wbs_mix64(seed ^ wbs_mix64((unsigned long long)i + 1ULL)) >> 40;
    return (float)h * (1.0f / 16777216.0f) >= p;
}

// y = map(x) · mask / (1 − p), reading x through the previous layer's fused batch norm and ReLU
// (map(v) = relu?((v − shift[ch])·scale[ch]), c channels fastest-varying; shift/scale may be null).
extern "C" __global__ void dropout_forward(float* y, const float* x, const float* shift,
                                           const float* scale, int relu, int c, float p,
                                           unsigned long long seed, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    if (scale) {
        int ch = (int)(i % c);
        v = (v - shift[ch]) * scale[ch];
    }
    if (relu) v = fmaxf(v, 0.0f);
    y[i] = dropout_keep(seed, i, p) ? v * (1.0f / (1.0f - p)) : 0.0f;
}

// d = d · mask / (1 − p) in place: the gradient w.r.t. the value dropout read.
extern "C" __global__ void dropout_backward(float* d, float p, unsigned long long seed,
                                            long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) d[i] = dropout_keep(seed, i, p) ? d[i] * (1.0f / (1.0f - p)) : 0.0f;
}
