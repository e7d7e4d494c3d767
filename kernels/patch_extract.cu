// Batched patch extraction for inference: thousands of local affine frames sampled from an image
// pyramid that was uploaded once (all images back to back in one buffer), in one launch.
//
// Exactly the convention of src/patch.rs (kornia's extract_patches_from_pyramid): patch pixel
// (i, j) (row i, column j) of an S×S patch sits at u = ((2j+1)/S − 1, (2i+1)/S − 1) in the
// frame, at g = A·u + c in the chosen image's pixels, and is read bilinearly at
// (g_x·W/(W−1) − 0.5, g_y·H/(H−1) − 0.5) clamped to the image (border replication). The host
// chooses each frame's image (ScaleSpace::sampling_level) and maps the frame into its pixels,
// exactly as the CPU does, and passes per frame: the image index and [a00 a01 a10 a11 c0 c1].
//
// The position arithmetic uses __fmul_rn/__fadd_rn, which the compiler never fuses into FMAs,
// so positions are the CPU's to the bit (the CPU's row-by-row path); the bilinear weights may
// differ in the last bit.
//
// images: per image [offset, width, height] (i64). One thread per output pixel.

__device__ float at(const float* img, long long w, long long x, long long y) {
    return img[y * w + x];
}

extern "C" __global__ void extract_patches(float* __restrict__ out,
                                           const float* __restrict__ pyramid,
                                           const long long* __restrict__ images,
                                           const int* __restrict__ image_of,
                                           const float* __restrict__ frames, int n, int size) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long per = (long long)size * size;
    if (idx >= (long long)n * per) return;
    int f = (int)(idx / per);
    int pix = (int)(idx % per);
    int i = pix / size, j = pix % size;
    int level = image_of[f];
    const long long off = images[3 * level];
    const long long w = images[3 * level + 1], h = images[3 * level + 2];
    const float* img = pyramid + off;
    const float* fr = frames + 6 * (long long)f;
    const float a00 = fr[0], a01 = fr[1], a10 = fr[2], a11 = fr[3], c0 = fr[4], c1 = fr[5];

    float fx = (float)w / (float)((w > 2 ? w : 2) - 1);
    float fy = (float)h / (float)((h > 2 ? h : 2) - 1);
    float inv = 1.0f / (float)size;
    float u0 = __fadd_rn(inv, -1.0f);
    float du = __fmul_rn(2.0f, inv);
    float ox = __fadd_rn(__fmul_rn(__fadd_rn(__fadd_rn(__fmul_rn(a00, u0), __fmul_rn(a01, u0)), c0), fx), -0.5f);
    float oy = __fadd_rn(__fmul_rn(__fadd_rn(__fadd_rn(__fmul_rn(a10, u0), __fmul_rn(a11, u0)), c1), fy), -0.5f);
    float dxx = __fmul_rn(__fmul_rn(a00, du), fx), dxy = __fmul_rn(__fmul_rn(a10, du), fy);
    float dyx = __fmul_rn(__fmul_rn(a01, du), fx), dyy = __fmul_rn(__fmul_rn(a11, du), fy);
    float sx = __fadd_rn(ox, __fmul_rn((float)i, dyx));
    float sy = __fadd_rn(oy, __fmul_rn((float)i, dyy));
    float x = __fadd_rn(sx, __fmul_rn((float)j, dxx));
    float y = __fadd_rn(sy, __fmul_rn((float)j, dxy));

    // GrayImage::sample_clamped.
    float mx = (float)(w - 1), my = (float)(h - 1);
    x = fminf(fmaxf(x, 0.0f), mx);
    y = fminf(fmaxf(y, 0.0f), my);
    long long x0 = (long long)x, y0 = (long long)y;
    float tx = x - (float)x0, ty = y - (float)y0;
    long long x1 = x0 + 1 < w ? x0 + 1 : w - 1;
    long long y1 = y0 + 1 < h ? y0 + 1 : h - 1;
    float top = at(img, w, x0, y0) * (1.0f - tx) + at(img, w, x1, y0) * tx;
    float bottom = at(img, w, x0, y1) * (1.0f - tx) + at(img, w, x1, y1) * tx;
    out[idx] = top * (1.0f - ty) + bottom * ty;
}
