// The descriptor losses of the AffNet paper (HardNegC, HardNeg, PosDist), forward and backward
// w.r.t. anchors a and positives p (N × D, row i of each a matching pair). Same definitions as
// src/nn/ops/loss.rs (read its module docs):
//   D_ij = sqrt(|a_i|² + |p_j|² − 2·a_i·p_j + 1e-6) + 1e-8, non-matches from D̃ = D + 10·I, +10
//   again where D̃ < 0.008, the hardest negative the first minimum of a row (or column).
// Norms and distances in f64 like the CPU, a·pᵀ in f32 (a tiled GEMM, as the CPU's gemm).
//
// Steps: sq_norms_f64 (|a|², |p|²) → gemm_abt (a·pᵀ) → loss_hardest (per row; per column for
// HardNegC) → loss_rows (per-row loss term, statistics and gradient coefficients) → loss_grad
// (the gradients, one thread per value; HardNeg's push on p_j is a gather over the rows whose
// hardest negative is j, so no atomics and the result is deterministic).
// kind: 0 HardNegC, 1 HardNeg, 2 PosDist.

#define MATRIX_EPS 1e-6
#define LOSS_EPS 1e-8
#define PAIR_EPS 1e-8
#define POSDIST_EPS 1e-6
#define DUPLICATE 0.008
#define EXCLUDE 10.0
#define MARGIN 1.0

extern "C" __global__ void sq_norms_f64(double* __restrict__ out, const float* __restrict__ x,
                                        int rows, int dim) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* v = x + (long long)r * dim;
    double s = 0.0;
    for (int k = 0; k < dim; k++) s += (double)v[k] * (double)v[k];
    out[r] = s;
}

// c[i][j] = a_i · b_j (n × m, rows of length dim); 16×16 threads, one value each, 16-wide
// shared-memory tiles.
extern "C" __global__ void gemm_abt(float* __restrict__ c, const float* __restrict__ a,
                                    const float* __restrict__ b, int n, int m, int dim) {
    __shared__ float As[16][17];
    __shared__ float Bs[16][17];
    int tx = threadIdx.x, ty = threadIdx.y;
    int i = blockIdx.y * 16 + ty, j = blockIdx.x * 16 + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < dim; k0 += 16) {
        int ar = blockIdx.y * 16 + ty, br = blockIdx.x * 16 + ty;
        As[ty][tx] = (ar < n && k0 + tx < dim) ? a[(long long)ar * dim + k0 + tx] : 0.0f;
        Bs[ty][tx] = (br < m && k0 + tx < dim) ? b[(long long)br * dim + k0 + tx] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int k = 0; k < 16; k++) acc = fmaf(As[ty][k], Bs[tx][k], acc);
        __syncthreads();
    }
    if (i < n && j < m) c[(long long)i * m + j] = acc;
}

__device__ double root(const float* dots, const double* a2, const double* p2, int n, int i,
                       int j) {
    double v = a2[i] + p2[j] - 2.0 * (double)dots[(long long)i * n + j] + MATRIX_EPS;
    return sqrt(v > 0.0 ? v : 0.0);
}

__device__ double masked(const float* dots, const double* a2, const double* p2, int n, int i,
                         int j) {
    double d = root(dots, a2, p2, n, i, j) + LOSS_EPS + (i == j ? EXCLUDE : 0.0);
    if (d < DUPLICATE) d += EXCLUDE;
    return d;
}

// The hardest negative of every row (by_column = 0: min over j of D̃_ij) or column (min over i).
extern "C" __global__ void loss_hardest(int* __restrict__ arg, double* __restrict__ minimum,
                                        const float* __restrict__ dots,
                                        const double* __restrict__ a2,
                                        const double* __restrict__ p2, int n, int by_column) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    int best = 0;
    double bv = __longlong_as_double(0x7ff0000000000000LL);
    for (int t = 0; t < n; t++) {
        double d = by_column ? masked(dots, a2, p2, n, t, r) : masked(dots, a2, p2, n, r, t);
        if (d < bv) {
            bv = d;
            best = t;
        }
    }
    arg[r] = best;
    minimum[r] = bv;
}

// Per row i: row_loss[i] (its contribution to the loss), row_pos[i] = sqrt(|a_i − p_i|² + 1e-6)
// (for the mean positive distance) and coef[3i..3i+3], the gradient coefficients:
//   HardNegC: ga_i = coef0·(a_i − p_i) + coef1·(a_i − p_k),  gp_i = coef0·(p_i − a_i) + coef2·(p_i − a_l)
//             (k = row_arg[i], l = col_arg[i]);
//   HardNeg:  ga_i = coef0·(a_i − p_i) + coef1·(a_i − p_k),  gp_i = coef0·(p_i − a_i)
//             + Σ_{r: row_arg[r] = i} coef1_r·(p_i − a_r);
//   PosDist:  ga_i = coef0·(a_i − p_i),  gp_i = coef0·(p_i − a_i).
extern "C" __global__ void loss_rows(double* __restrict__ row_loss, double* __restrict__ row_pos,
                                     double* __restrict__ coef, const float* __restrict__ a,
                                     const float* __restrict__ p, const float* __restrict__ dots,
                                     const double* __restrict__ a2,
                                     const double* __restrict__ p2,
                                     const int* __restrict__ row_arg,
                                     const double* __restrict__ row_min,
                                     const int* __restrict__ col_arg,
                                     const double* __restrict__ col_min, int n, int dim,
                                     int kind) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float* ai = a + (long long)i * dim;
    const float* pi = p + (long long)i * dim;
    double diff2 = 0.0, dot = 0.0;
    for (int k = 0; k < dim; k++) {
        double d = (double)ai[k] - (double)pi[k];
        diff2 += d * d;
        dot += (double)ai[k] * (double)pi[k];
    }
    row_pos[i] = sqrt(diff2 + POSDIST_EPS);
    double loss = 0.0, c0 = 0.0, c1 = 0.0, c2 = 0.0;
    if (kind == 2) {
        c0 = 1.0 / ((double)n * sqrt(diff2 + POSDIST_EPS));
        loss = sqrt(diff2 + POSDIST_EPS) / (double)n;
    } else if (kind == 0) {
        double c = 0.5 / (double)n;
        double v = a2[i] + p2[i] - 2.0 * dot + PAIR_EPS;
        double pos = sqrt(v > 0.0 ? v : 0.0);
        double t0 = MARGIN + pos - row_min[i];
        double t1 = MARGIN + pos - col_min[i];
        if (t0 > 0.0) {
            loss += c * t0;
            c0 += c / pos;
            c1 = -c / root(dots, a2, p2, n, i, row_arg[i]);
        }
        if (t1 > 0.0) {
            loss += c * t1;
            c0 += c / pos;
            c2 = -c / root(dots, a2, p2, n, col_arg[i], i);
        }
    } else {
        double c = 1.0 / (double)n;
        double rp = root(dots, a2, p2, n, i, i);
        double term = MARGIN + rp + LOSS_EPS - row_min[i];
        if (term > 0.0) {
            loss = c * term;
            c0 = c / rp;
            c1 = -c / root(dots, a2, p2, n, i, row_arg[i]);
        }
    }
    row_loss[i] = loss;
    coef[3 * (long long)i] = c0;
    coef[3 * (long long)i + 1] = c1;
    coef[3 * (long long)i + 2] = c2;
}

// The gradients (overwritten; either may be null), one thread per (row, component).
extern "C" __global__ void loss_grad(float* __restrict__ ga, float* __restrict__ gp,
                                     const float* __restrict__ a, const float* __restrict__ p,
                                     const double* __restrict__ coef,
                                     const int* __restrict__ row_arg,
                                     const int* __restrict__ col_arg, int n, int dim, int kind) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n * dim) return;
    int i = (int)(idx / dim), k = (int)(idx % dim);
    double av = (double)a[idx], pv = (double)p[idx];
    double c0 = coef[3 * (long long)i], c1 = coef[3 * (long long)i + 1],
           c2 = coef[3 * (long long)i + 2];
    if (ga) {
        double g = c0 * (av - pv);
        if (kind != 2 && c1 != 0.0) g += c1 * (av - (double)p[(long long)row_arg[i] * dim + k]);
        ga[idx] = (float)g;
    }
    if (gp) {
        double g = c0 * (pv - av);
        if (kind == 0 && c2 != 0.0) g += c2 * (pv - (double)a[(long long)col_arg[i] * dim + k]);
        if (kind == 1)
            for (int r = 0; r < n; r++)
                if (row_arg[r] == i) {
                    double cr = coef[3 * (long long)r + 1];
                    if (cr != 0.0) g += cr * (pv - (double)a[(long long)r * dim + k]);
                }
        gp[idx] = (float)g;
    }
}
