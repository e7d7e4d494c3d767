// One SGD step as torch.optim.SGD (no Nesterov); CPU reference: src/nn/ops/sgd.rs.
//   d = g + wd·θ;  buf = d (first step) or momentum·buf + (1 − dampening)·d;  θ −= lr·buf
// With momentum 0 there is no buffer: θ −= lr·d.
extern "C" __global__ void sgd_step(float* __restrict__ param, float* __restrict__ buf,
                                    const float* __restrict__ grad, long long n, float lr,
                                    float momentum, float dampening, float weight_decay,
                                    int first) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float p = param[i];
    float d = grad[i] + weight_decay * p;
    if (momentum == 0.0f) {
        param[i] = p - lr * d;
        return;
    }
    float b = first ? d : momentum * buf[i] + (1.0f - dampening) * d;
    buf[i] = b;
    param[i] = p - lr * b;
}
