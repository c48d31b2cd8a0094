// CUDA RMSNorm over independent slices of each row, forward and backward. One warp per (row, slice);
// sums of squares and dot products in double, as on the CPU.
#include "backend/cuda/cuda_common.cuh"

#define RMS_WARPS 4
// Weight-gradient pass: a block owns 64 columns (two a thread) of one range of rows; RMS_ROW_LANES threads
// per column take every RMS_ROW_LANES-th row of the range, their sums are combined in a fixed order into the
// range's partial sums, and a second pass adds the ranges in order (deterministic, no atomics). Before, a
// block took every row of its 32 columns: 32 blocks for a hidden size of 1024, 0.47 ms at T 8192 on an H100.
#define RMS_ROW_LANES 8
#define RMS_RANGE_ROWS 64  // rows per range, at least
#define RMS_MAX_RANGES 128

template <typename E>
__global__ void rmsnorm_fwd_kernel(E *out, float *rstd, const E *x, const float *w, int N, int groups, int C,
                                   float eps) {
    long wid = blockIdx.x * (long)RMS_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (wid >= (long)N * groups) return;
    int gi = (int)(wid % groups);
    const E *xs = x + wid * C;
    const float *ws = w + (long)gi * C;
    double ss = 0;
    for (int c = lane; c < C; c += 32) {
        const float xc = ld_f(xs + c);
        ss += (double)xc * xc;
    }
    ss = warp_sum_d(ss);
    float r = (float)(1.0 / sqrt(ss / C + eps));
    for (int c = lane; c < C; c += 32) st_f(out + wid * C + c, ld_f(xs + c) * r * ws[c]);
    if (lane == 0) rstd[wid] = r;
}

// dx_c = r w_c dout_c - (r^3 / C) x_c sum_k(dout_k w_k x_k)  (see cpu/rmsnorm.c)
template <typename E>
__global__ void rmsnorm_bwd_dx_kernel(E *dx, const E *dout, const E *x, const float *w, const float *rstd, int N,
                                      int groups, int C) {
    long wid = blockIdx.x * (long)RMS_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (wid >= (long)N * groups) return;
    const long o = wid * C;
    const float *ws = w + (wid % groups) * C;
    float r = rstd[wid];
    double d = 0;
    for (int c = lane; c < C; c += 32) d += (double)ld_f(dout + o + c) * ws[c] * ld_f(x + o + c);
    d = warp_sum_d(d);
    float k = (float)((double)r * r * r * d / C);
    for (int c = lane; c < C; c += 32)
        st_f(dx + o + c, ld_f(dx + o + c) + (r * ws[c] * ld_f(dout + o + c) - k * ld_f(x + o + c)));
}

// The same on slices of C % 8 == 0 aligned to 16 bytes, 8 elements a lane per access (the scalar kernel's
// two-byte loads left it at 0.22 ms for 8192 x 1024 on an H100).
template <typename E>
__global__ void rmsnorm_bwd_dx8_kernel(E *dx, const E *dout, const E *x, const float *w, const float *rstd, int N,
                                       int groups, int C) {
    long wid = blockIdx.x * (long)RMS_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (wid >= (long)N * groups) return;
    const long o = wid * C;
    const float *ws = w + (wid % groups) * C;
    float r = rstd[wid];
    double d = 0;
    for (int c = lane * 8; c < C; c += 256) {
        float g[8], xv[8], wv[8];
        ld8(dout + o + c, g), ld8(x + o + c, xv), ld8(ws + c, wv);
#pragma unroll
        for (int i = 0; i < 8; i++) d += (double)g[i] * wv[i] * xv[i];
    }
    d = warp_sum_d(d);
    float k = (float)((double)r * r * r * d / C);
    for (int c = lane * 8; c < C; c += 256) {
        float g[8], xv[8], wv[8], y[8];
        ld8(dout + o + c, g), ld8(x + o + c, xv), ld8(ws + c, wv), ld8(dx + o + c, y);
#pragma unroll
        for (int i = 0; i < 8; i++) y[i] += r * wv[i] * g[i] - k * xv[i];
        st8(dx + o + c, y);
    }
}

// Partial sums of dw over rows [y * per, (y + 1) * per) for columns 2j, 2j + 1 (j = the block's column pair),
// into part[y][col] (double).
template <typename E>
__global__ void rmsnorm_bwd_dw_part_kernel(double *part, const E *dout, const E *x, const float *rstd, int N,
                                           int groups, int C, int per) {
    __shared__ double sh[RMS_ROW_LANES][64];
    const long row = (long)groups * C;
    const long j = blockIdx.x * 64L + 2 * threadIdx.x;
    const int n0 = blockIdx.y * per, n1 = min(N, n0 + per);
    double a0 = 0, a1 = 0;
    for (int n = n0 + threadIdx.y; n < n1; n += RMS_ROW_LANES) {
        const float rs0 = j < row ? rstd[(long)n * groups + j / C] : 0.0f;
        const float rs1 = j + 1 < row ? rstd[(long)n * groups + (j + 1) / C] : 0.0f;
        if (j < row) a0 += (double)ld_f(dout + n * row + j) * ld_f(x + n * row + j) * rs0;
        if (j + 1 < row) a1 += (double)ld_f(dout + n * row + j + 1) * ld_f(x + n * row + j + 1) * rs1;
    }
    sh[threadIdx.y][2 * threadIdx.x] = a0, sh[threadIdx.y][2 * threadIdx.x + 1] = a1;
    __syncthreads();
    if (threadIdx.y == 0) {
        double s0 = 0, s1 = 0;
        for (int y = 0; y < RMS_ROW_LANES; y++) s0 += sh[y][2 * threadIdx.x], s1 += sh[y][2 * threadIdx.x + 1];
        if (j < row) part[(long)blockIdx.y * row + j] = s0;
        if (j + 1 < row) part[(long)blockIdx.y * row + j + 1] = s1;
    }
}

__global__ void rmsnorm_bwd_dw_sum_kernel(float *dw, const double *part, long row, int ranges) {
    for (long j = blockIdx.x * (long)blockDim.x + threadIdx.x; j < row; j += (long)gridDim.x * blockDim.x) {
        double s = 0;
        for (int y = 0; y < ranges; y++) s += part[(long)y * row + j];
        dw[j] += (float)s;
    }
}

void cuda_rmsnorm_fwd(asa_backend *be, void *out, float *rstd, const void *x, const float *w, int N, int groups,
                      int C, float eps) {
    long rows = (long)N * groups;
    if (rows == 0) return;
    const unsigned blocks = (unsigned)((rows + RMS_WARPS - 1) / RMS_WARPS);
    DISPATCH_ACT(be, rmsnorm_fwd_kernel<<<blocks, RMS_WARPS * 32>>>((act_t *)out, rstd, (const act_t *)x, w, N, groups,
                                                                    C, eps));
    CUDA_LAUNCH_CHECK();
}

// dw is fp32 (a parameter gradient) in every mode.
void cuda_rmsnorm_bwd(asa_backend *be, void *dx, float *dw, const void *dout, const void *x, const float *w,
                      const float *rstd, int N, int groups, int C) {
    long rows = (long)N * groups;
    if (rows == 0) return;
    const unsigned blocks = (unsigned)((rows + RMS_WARPS - 1) / RMS_WARPS);
    const void *vp[] = {dx, dout, x, w};
    if (cuda_vec8_ok(vp, 4, C))
        DISPATCH_ACT(be, rmsnorm_bwd_dx8_kernel<<<blocks, RMS_WARPS * 32>>>((act_t *)dx, (const act_t *)dout,
                                                                            (const act_t *)x, w, rstd, N, groups, C));
    else
        DISPATCH_ACT(be, rmsnorm_bwd_dx_kernel<<<blocks, RMS_WARPS * 32>>>((act_t *)dx, (const act_t *)dout,
                                                                           (const act_t *)x, w, rstd, N, groups, C));
    CUDA_LAUNCH_CHECK();
    const long cols = (long)groups * C;
    int ranges = (N + RMS_RANGE_ROWS - 1) / RMS_RANGE_ROWS;
    if (ranges > RMS_MAX_RANGES) ranges = RMS_MAX_RANGES;
    const int per = (N + ranges - 1) / ranges;
    double *part = (double *)cuda_scratch(be, (size_t)ranges * cols * sizeof(double));
    DISPATCH_ACT(be, rmsnorm_bwd_dw_part_kernel<<<dim3((unsigned)((cols + 63) / 64), (unsigned)ranges),
                                                  dim3(32, RMS_ROW_LANES)>>>(part, (const act_t *)dout,
                                                                             (const act_t *)x, rstd, N, groups, C,
                                                                             per));
    CUDA_LAUNCH_CHECK();
    rmsnorm_bwd_dw_sum_kernel<<<cuda_blocks(cols, CUDA_THREADS), CUDA_THREADS>>>(dw, part, cols, ranges);
    CUDA_LAUNCH_CHECK();
}
