// The prelude: code that several kernel files share, written once. src/gpu/kernels.rs prepends it
// to every kernels/*.cu when it embeds them, with #line directives, so that NVRTC's messages and
// the PTX line info name prelude.cuh or the kernel file with its own line numbers. Header-free
// like the kernels (NVRTC has no standard headers); its names start with GEMM_TILE_, so that they
// cannot clash with a kernel's own. A macro that a kernel does not use costs it nothing.

// GEMM_TILE_4X4(acc, As, Bs, K, tx, ty): the inner product step of the register-tiled GEMMs
// (conv2d_forward, conv2d_backward_weight, conv2d_backward_input, nearest_neighbours). A block of
// 16×16 threads computes a 64×64 tile, each thread a 4×4 block `float acc[4][4]`. With the current
// K-deep slices of the two operands in shared memory, As[k][row] and Bs[k][column], thread (tx, ty)
// adds to acc[i][j] the products of row ty·4 + i and column tx·4 + j, one fmaf per k in the order
// k = 0, 1, …, K − 1.
//
// A macro rather than a __device__ function: an inlined function computes the same, but NVVM then
// numbers the loop-carried registers differently, and the PTX of two of the kernels is no longer
// the same as with the loop written out; with the macro it is. Its locals are kt, a, b, i and j, so
// the arguments must not use those names.
#define GEMM_TILE_4X4(acc, As, Bs, K, tx, ty)                                                     \
    do {                                                                                          \
        _Pragma("unroll") for (int kt = 0; kt < (K); kt++) {                                      \
            float a[4], b[4];                                                                     \
            _Pragma("unroll") for (int i = 0; i < 4; i++) a[i] = As[kt][ty * 4 + i];              \
            _Pragma("unroll") for (int j = 0; j < 4; j++) b[j] = Bs[kt][tx * 4 + j];              \
            _Pragma("unroll") for (int i = 0; i < 4; i++)                                         \
                _Pragma("unroll") for (int j = 0; j < 4; j++) acc[i][j] =                         \
                    fmaf(a[i], b[j], acc[i][j]);                                                  \
        }                                                                                         \
    } while (0)
