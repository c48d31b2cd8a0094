// CUDA compression branch (SPEC §4): mean pooling of complete blocks (compress_fwd / compress_bwd) and
// attention over the pooled keys (attn_cmp_fwd / attn_cmp_bwd), the pooled kernels of attn_dense.cu with
// span = block_size and no window.
#include "backend/cuda/attn_kernels.cuh"

// One thread per output element (b, m, j, c), adding the block's tokens in order as the CPU does.
template <typename E>
__global__ void compress_fwd_kernel(const E *x, E *xc, int B, int T, int g, int d, int bs, int nb) {
    const long total = (long)B * nb * g * d;
    const float inv = 1.0f / (float)bs;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        const long gd = (long)g * d, inner = e % gd;
        const long bm = e / gd;
        const int m = (int)(bm % nb), b = (int)(bm / nb);
        const E *xr = x + ((long)b * T + (long)m * bs) * gd + inner;
        float acc = 0.0f;
        for (int u = 0; u < bs; u++) acc += ld_f(xr + u * gd);
        st_f(xc + e, acc * inv);
    }
}

// Each token row of a complete block receives its block's gradient / b; a trailing partial block's tokens
// get nothing. One block per token row, its threads across the row's g*d values: per-element 64-bit
// index arithmetic made this pass instruction-bound (0.26 ms for the keys of T 65536, h 64 / g 4).
template <typename E>
__global__ void compress_bwd_kernel(const E *dxc, E *dx, int T, int gd, int bs, int nb) {
    const long rows = (long)nb * bs, b = blockIdx.x / rows;
    const int t = (int)(blockIdx.x % rows);
    const float inv = 1.0f / (float)bs;
    const E *src = dxc + (b * nb + t / bs) * gd;
    E *dst = dx + (b * T + t) * gd;
    for (int c = threadIdx.x; c < gd; c += blockDim.x) st_f(dst + c, ld_f(dst + c) + ld_f(src + c) * inv);
}

void cuda_compress_fwd(asa_backend *be, const asa_attn_shape *s, int d, const void *x, void *xc) {
    const int nb = asa_attn_num_cmp_blocks(s);
    const long total = (long)s->B * nb * s->g * d;
    if (total == 0) return;
    DISPATCH_ACT(be, compress_fwd_kernel<<<cuda_blocks(total, CUDA_THREADS), CUDA_THREADS>>>(
                         (const act_t *)x, (act_t *)xc, s->B, s->T, s->g, d, s->block_size, nb));
    CUDA_LAUNCH_CHECK();
}

void cuda_compress_bwd(asa_backend *be, const asa_attn_shape *s, int d, const void *dxc, void *dx) {
    const int nb = asa_attn_num_cmp_blocks(s);
    const long rows = (long)s->B * nb * s->block_size;
    if (rows == 0 || s->g * d == 0) return;
    DISPATCH_ACT(be, compress_bwd_kernel<<<(unsigned)rows, CUDA_THREADS>>>((const act_t *)dxc, (act_t *)dx, s->T,
                                                                           s->g * d, s->block_size, nb));
    CUDA_LAUNCH_CHECK();
}

void cuda_attn_cmp_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc, const void *vc,
                       void *o, float *lse) {
    if (cuda_cudnn_attn_cmp_fwd(be, s, q, kc, vc, o, lse)) return;
    cuda_attn_pooled_fwd(be, s, asa_attn_num_cmp_blocks(s), s->block_size, 0, q, kc, vc, o, lse);
}

void cuda_attn_cmp_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc, const void *vc,
                       const void *o, const float *lse, const void *dout, const float *drow, void *dq, void *dkc,
                       void *dvc) {
    if (cuda_cudnn_attn_cmp_bwd(be, s, q, kc, vc, o, lse, dout, dq, dkc, dvc)) return;
    cuda_attn_pooled_bwd(be, s, asa_attn_num_cmp_blocks(s), s->block_size, 0, q, kc, vc, o, lse, dout, drow, dq, dkc,
                         dvc);
}
