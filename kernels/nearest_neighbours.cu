// Exact two nearest neighbours by L2 and the ratio test (CPU reference: src/matching.rs).
//
// ‖q − d‖² = ‖q‖² + ‖d‖² − 2·q·d: a block takes 64 queries and a slice of the database (grid.y
// splits the database, so that even 10k queries fill every SM), computes 64×64 tiles of dot
// products with shared-memory tiling (each thread a 4×4 block), turns them into scores
// ‖d‖² − 2·q·d and keeps, per query and thread, the two smallest scores and the index of the
// smallest. The 16 threads that share a query merge theirs with warp shuffles, and
// two_nearest_merge combines the slices. The N×M distance matrix never exists. Ties go to the
// smaller database index, as the CPU's in-order scan. Full f32 FMA, no TF32.

#define BQ 64
#define BD 64
#define BK 16
#define INF __int_as_float(0x7f800000)
#define NONE 0xffffffffu

// out[r] = Σ x[r][k]², summed in order (as the CPU).
extern "C" __global__ void row_sq_norms(float* __restrict__ out, const float* __restrict__ x,
                                        int rows, int dim) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* v = x + (long long)r * dim;
    float s = 0.0f;
    for (int k = 0; k < dim; k++) s += v[k] * v[k];
    out[r] = s;
}

// Merges (b1, b2, i1) with (c1, c2, j1): the two smallest scores and the smallest's index.
__device__ void merge2(float* b1, float* b2, unsigned* i1, float c1, float c2, unsigned j1) {
    if (c1 < *b1 || (c1 == *b1 && j1 < *i1)) {
        *b2 = fminf(*b1, c2);
        *b1 = c1;
        *i1 = j1;
    } else {
        *b2 = fminf(*b2, c1);
    }
}

// acc[i][j] = q[q0 + ty·4 + i] · d[t0 + tx·4 + j] for the block's 64×64 tile (thread (tx, ty)
// holds its 4×4 block; rows past nq and columns past d_end count as zeros), through the K-deep
// shared-memory slices Qs and Ds. Every thread of the block calls it (it synchronises).
__device__ __forceinline__ void dot_tile(float acc[4][4], float (*Qs)[BQ + 4],
                                         float (*Ds)[BD + 4], const float* __restrict__ q,
                                         const float* __restrict__ d, int q0, int t0, int nq,
                                         int d_end, int dim) {
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int lk = tid % BK, lr = tid / BK;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < dim; k0 += BK) {
        int kk = k0 + lk;
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int row = lr + 16 * r;
            int qi = q0 + row, di = t0 + row;
            Qs[lk][row] = (kk < dim && qi < nq) ? q[(long long)qi * dim + kk] : 0.0f;
            Ds[lk][row] = (kk < dim && di < d_end) ? d[(long long)di * dim + kk] : 0.0f;
        }
        __syncthreads();
        GEMM_TILE_4X4(acc, Qs, Ds, BK, tx, ty);  // prelude.cuh
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(256) two_nearest_partial(
    float* __restrict__ out_s1, float* __restrict__ out_s2, unsigned* __restrict__ out_i1,
    const float* __restrict__ q, const float* __restrict__ d, const float* __restrict__ dnorm,
    int nq, int nd, int dim, int per_split) {
    __shared__ float Qs[BK][BQ + 4];
    __shared__ float Ds[BK][BD + 4];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int q0 = blockIdx.x * BQ;
    const int split = blockIdx.y;
    const int d_begin = split * per_split;
    int d_end = d_begin + per_split;
    if (d_end > nd) d_end = nd;

    float b1[4], b2[4];
    unsigned i1[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        b1[i] = INF;
        b2[i] = INF;
        i1[i] = NONE;
    }

    for (int t0 = d_begin; t0 < d_end; t0 += BD) {
        float acc[4][4];
        dot_tile(acc, Qs, Ds, q, d, q0, t0, nq, d_end, dim);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int col = t0 + tx * 4 + j;
            if (col >= d_end) continue;
            float dn = dnorm[col];
#pragma unroll
            for (int i = 0; i < 4; i++)
                merge2(&b1[i], &b2[i], &i1[i], dn - 2.0f * acc[i][j], INF, (unsigned)col);
        }
    }
    // The 16 threads of a query row are 16 consecutive lanes: merge with xor shuffles.
#pragma unroll
    for (int i = 0; i < 4; i++) {
        for (int off = 8; off > 0; off >>= 1) {
            float c1 = __shfl_xor_sync(0xffffffffu, b1[i], off);
            float c2 = __shfl_xor_sync(0xffffffffu, b2[i], off);
            unsigned j1 = __shfl_xor_sync(0xffffffffu, i1[i], off);
            merge2(&b1[i], &b2[i], &i1[i], c1, c2, j1);
        }
        int qi = q0 + ty * 4 + i;
        if (tx == 0 && qi < nq) {
            long long o = (long long)split * nq + qi;
            out_s1[o] = b1[i];
            out_s2[o] = b2[i];
            out_i1[o] = i1[i];
        }
    }
}

// Combines the slices and turns scores into distances: d = sqrt(max(‖q‖² + score, 0)).
extern "C" __global__ void two_nearest_merge(unsigned* __restrict__ nearest,
                                             float* __restrict__ d1, float* __restrict__ d2,
                                             const float* __restrict__ s1,
                                             const float* __restrict__ s2,
                                             const unsigned* __restrict__ i1,
                                             const float* __restrict__ q, int nq, int dim,
                                             int splits) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= nq) return;
    float b1 = INF, b2 = INF;
    unsigned best = NONE;
    for (int s = 0; s < splits; s++) {
        long long o = (long long)s * nq + r;
        merge2(&b1, &b2, &best, s1[o], s2[o], i1[o]);
    }
    const float* v = q + (long long)r * dim;
    float qn = 0.0f;
    for (int k = 0; k < dim; k++) qn += v[k] * v[k];
    nearest[r] = best;
    d1[r] = sqrtf(fmaxf(qn + b1, 0.0f));
    d2[r] = sqrtf(fmaxf(qn + b2, 0.0f));
}

// The ratio test: ratio[r] = d1/d2 when it is ≤ max_ratio, else +∞ (also when there is no second
// neighbour or d2 = 0, as the CPU's ratio_test).
extern "C" __global__ void ratio_test(float* __restrict__ ratio,
                                      const unsigned* __restrict__ nearest,
                                      const float* __restrict__ d1, const float* __restrict__ d2,
                                      int n, float max_ratio) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    float out = INF;
    float b = d2[r];
    if (nearest[r] != NONE && b < INF && b > 0.0f) {
        float v = d1[r] / b;
        if (v <= max_ratio) out = v;
    }
    ratio[r] = out;
}

// Exact k nearest neighbours by L2, nearest first (CPU reference: matching::k_nearest; MODS's
// FGINN walks them on the host). A block takes 64 queries and scans the whole database in 64×64
// tiles of scores ‖d‖² − 2·q·d (the GEMM of two_nearest_partial), which it writes to shared memory;
// then thread r < 64 inserts the tile's scores into query r's list of the k smallest (score, row),
// kept sorted in best_s/best_i (k per query, in global memory: only that thread touches them).
// Columns are scanned in row order and a score enters only when strictly smaller than the list's
// last, so ties keep the smaller row, as the CPU's scan. Rows past the database stay NONE with a
// score of +∞. The host turns scores into distances.
extern "C" __global__ void __launch_bounds__(256) k_nearest_scores(
    float* __restrict__ best_s, unsigned* __restrict__ best_i, const float* __restrict__ q,
    const float* __restrict__ d, const float* __restrict__ dnorm, int nq, int nd, int dim, int k) {
    __shared__ float Qs[BK][BQ + 4];
    __shared__ float Ds[BK][BD + 4];
    __shared__ float S[BQ][BD + 1];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int q0 = blockIdx.x * BQ;
    const bool selects = tid < BQ && q0 + tid < nq;
    float* ls = best_s + (long long)(q0 + tid) * k;
    unsigned* li = best_i + (long long)(q0 + tid) * k;
    if (selects) {
        for (int j = 0; j < k; j++) {
            ls[j] = INF;
            li[j] = NONE;
        }
    }
    float worst = INF;

    for (int t0 = 0; t0 < nd; t0 += BD) {
        float acc[4][4];
        dot_tile(acc, Qs, Ds, q, d, q0, t0, nq, nd, dim);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int col = t0 + tx * 4 + j;
            float dn = col < nd ? dnorm[col] : INF;
#pragma unroll
            for (int i = 0; i < 4; i++)
                S[ty * 4 + i][tx * 4 + j] = col < nd ? dn - 2.0f * acc[i][j] : INF;
        }
        __syncthreads();
        if (selects) {
            int cols = nd - t0 < BD ? nd - t0 : BD;
            for (int c = 0; c < cols; c++) {
                float s = S[tid][c];
                if (!(s < worst)) continue;
                int pos = k - 1;
                while (pos > 0 && s < ls[pos - 1]) {
                    ls[pos] = ls[pos - 1];
                    li[pos] = li[pos - 1];
                    pos--;
                }
                ls[pos] = s;
                li[pos] = (unsigned)(t0 + c);
                worst = ls[k - 1];
            }
        }
        __syncthreads();
    }
}
