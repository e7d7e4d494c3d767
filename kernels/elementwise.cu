// Elementwise layers: ReLU and tanh, forward and backward, and buffer fills. Header-free (NVRTC
// has no standard headers). One thread per element; the CPU versions in src/train/layers/
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
