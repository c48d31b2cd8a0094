// CUDA compression branch (SPEC §4): mean pooling of complete blocks (compress_fwd / compress_bwd) and
// attention over the pooled keys (attn_cmp_fwd / attn_cmp_bwd), the pooled kernels of attn_dense.cu with
// span = block_size and no window.
#include "backend/cuda/attn_kernels.cuh"

// One thread per output element (b, m, j, c), adding the block's tokens in order as the CPU does.
__global__ void compress_fwd_kernel(const float *x, float *xc, int B, int T, int g, int d, int bs, int nb) {
    const long total = (long)B * nb * g * d;
    const float inv = 1.0f / (float)bs;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        const long gd = (long)g * d, inner = e % gd;
        const long bm = e / gd;
        const int m = (int)(bm % nb), b = (int)(bm / nb);
        const float *xr = x + ((long)b * T + (long)m * bs) * gd + inner;
        float acc = 0.0f;
        for (int u = 0; u < bs; u++) acc += xr[u * gd];
        xc[e] = acc * inv;
    }
}

// Each token row of a complete block receives its block's gradient / b; a trailing partial block's tokens
// get nothing.
__global__ void compress_bwd_kernel(const float *dxc, float *dx, int B, int T, int g, int d, int bs, int nb) {
    const long gd = (long)g * d, total = (long)B * nb * bs * gd;
    const float inv = 1.0f / (float)bs;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        const long inner = e % gd, bt = e / gd;
        const int t = (int)(bt % ((long)nb * bs)), b = (int)(bt / ((long)nb * bs));
        dx[((long)b * T + t) * gd + inner] += dxc[((long)b * nb + t / bs) * gd + inner] * inv;
    }
}

void cuda_compress_fwd(asa_backend *be, const asa_attn_shape *s, int d, const float *x, float *xc) {
    const int nb = asa_attn_num_cmp_blocks(s);
    const long total = (long)s->B * nb * s->g * d;
    if (total == 0) return;
    compress_fwd_kernel<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS>>>(x, xc, s->B, s->T, s->g, d, s->block_size,
                                                                           nb);
    CUDA_LAUNCH_CHECK();
}

void cuda_compress_bwd(asa_backend *be, const asa_attn_shape *s, int d, const float *dxc, float *dx) {
    const int nb = asa_attn_num_cmp_blocks(s);
    const long total = (long)s->B * nb * s->block_size * s->g * d;
    if (total == 0) return;
    compress_bwd_kernel<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS>>>(dxc, dx, s->B, s->T, s->g, d,
                                                                           s->block_size, nb);
    CUDA_LAUNCH_CHECK();
}

void cuda_attn_cmp_fwd(asa_backend *be, const asa_attn_shape *s, const float *q, const float *kc, const float *vc,
                       float *o, float *lse) {
    cuda_attn_pooled_fwd(be, s, asa_attn_num_cmp_blocks(s), s->block_size, 0, q, kc, vc, o, lse);
}

void cuda_attn_cmp_bwd(asa_backend *be, const asa_attn_shape *s, const float *q, const float *kc, const float *vc,
                       const float *o, const float *lse, const float *dout, float *dq, float *dkc, float *dvc) {
    cuda_attn_pooled_bwd(be, s, asa_attn_num_cmp_blocks(s), s->block_size, 0, q, kc, vc, o, lse, dout, dq, dkc, dvc);
}
