// CUDA rotary position embedding (GPT-NeoX rotate-half, SPEC §1), in place, and its inverse. As on the
// CPU, angles are computed in double and only their cosine and sine are rounded to float.
#include "backend/cuda/cuda_common.cuh"

// One thread per (row, frequency), looping over the row's heads, which share its cos/sin.
template <typename E>
__global__ void rope_kernel(E *x, int N, int T, int pos0, int heads, int row_stride, int head_stride, int offset,
                            int nhalf, double log_step, int dir) {
    long total = (long)N * nhalf;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        int n = (int)(e / nhalf), i = (int)(e % nhalf);
        double a = ((double)pos0 + n % T) * exp(log_step * i);
        double sd, cd;
        sincos(a, &sd, &cd);
        float c = (float)cd, s = dir * (float)sd;
        E *xr = x + (long)n * row_stride + offset;
        for (int hd = 0; hd < heads; hd++) {
            E *u = xr + (long)hd * head_stride;
            float u0 = ld_f(u + i), u1 = ld_f(u + (i + nhalf));
            st_f(u + i, u0 * c - u1 * s);
            st_f(u + (i + nhalf), u1 * c + u0 * s);
        }
    }
}

static void rope_apply(asa_backend *be, void *x, int N, int T, int pos0, int heads, int row_stride, int head_stride,
                       int offset, int rot_dim, float theta, int dir) {
    ASA_CHECK(rot_dim % 2 == 0 && T > 0);
    int nhalf = rot_dim / 2;
    if ((long)N * nhalf == 0) return;
    double log_step = -2.0 / rot_dim * log((double)theta);  // frequency i is theta^(-2i/rot_dim)
    DISPATCH_ACT(be, rope_kernel<<<cuda_blocks((long)N * nhalf, CUDA_THREADS), CUDA_THREADS>>>(
                         (act_t *)x, N, T, pos0, heads, row_stride, head_stride, offset, nhalf, log_step, dir));
    CUDA_LAUNCH_CHECK();
}

void cuda_rope_fwd(asa_backend *be, void *x, int N, int T, int pos0, int heads, int row_stride, int head_stride,
                   int offset, int rot_dim, float theta) {
    rope_apply(be, x, N, T, pos0, heads, row_stride, head_stride, offset, rot_dim, theta, 1);
}

void cuda_rope_bwd(asa_backend *be, void *dx, int N, int T, int pos0, int heads, int row_stride, int head_stride,
                   int offset, int rot_dim, float theta) {
    rope_apply(be, dx, N, T, pos0, heads, row_stride, head_stride, offset, rot_dim, theta, -1);
}
