// CUDA RMSNorm over independent slices of each row, forward and backward. One warp per (row, slice);
// sums of squares and dot products in double, as on the CPU.
#include "backend/cuda/cuda_common.cuh"

#define RMS_WARPS 4
// Weight-gradient pass: a block owns 32 columns; RMS_ROW_LANES threads per column take every
// RMS_ROW_LANES-th row and their partial sums are combined in a fixed order (deterministic, no atomics).
#define RMS_ROW_LANES 8

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

template <typename E>
__global__ void rmsnorm_bwd_dw_kernel(float *dw, const E *dout, const E *x, const float *rstd, int N, int groups,
                                      int C) {
    __shared__ double part[RMS_ROW_LANES][32];
    const long row = (long)groups * C;
    const long j = blockIdx.x * 32L + threadIdx.x;
    double acc = 0;
    if (j < row)
        for (int n = threadIdx.y; n < N; n += RMS_ROW_LANES)
            acc += (double)ld_f(dout + n * row + j) * ld_f(x + n * row + j) * rstd[(long)n * groups + j / C];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < row) {
        double s = 0;
        for (int y = 0; y < RMS_ROW_LANES; y++) s += part[y][threadIdx.x];
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
    DISPATCH_ACT(be, rmsnorm_bwd_dx_kernel<<<blocks, RMS_WARPS * 32>>>((act_t *)dx, (const act_t *)dout,
                                                                       (const act_t *)x, w, rstd, N, groups, C));
    CUDA_LAUNCH_CHECK();
    long cols = (long)groups * C;
    DISPATCH_ACT(be, rmsnorm_bwd_dw_kernel<<<(unsigned)((cols + 31) / 32), dim3(32, RMS_ROW_LANES)>>>(
                         dw, (const act_t *)dout, (const act_t *)x, rstd, N, groups, C));
    CUDA_LAUNCH_CHECK();
}
