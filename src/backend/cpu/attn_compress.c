// CPU compression branch (SPEC §4): mean pooling of complete blocks (compress_fwd / compress_bwd) and
// attention over the pooled keys (attn_cmp_fwd / attn_cmp_bwd). The attention is the dense kernel of
// attn_dense.c run on pooled keys: block m is visible to query t iff (m+1)*b - 1 <= t.
#include <string.h>

#include "backend/cpu/attn_kernels.h"

void cpu_compress_fwd(asa_backend *be, const asa_attn_shape *s, int d, const void *x_, void *xc_) {
    const float *x = x_;
    float *xc = xc_;
    const int B = s->B, T = s->T, g = s->g, bs = s->block_size, nb = asa_attn_num_cmp_blocks(s);
    const float inv = 1.0f / (float)bs;
#pragma omp parallel for collapse(3) if ((long)B * nb * bs * g * d >= CPU_PAR_MIN_WORK)
    for (int b = 0; b < B; b++)
        for (int m = 0; m < nb; m++)
            for (int j = 0; j < g; j++) {
                float *out = xc + (((long)b * nb + m) * g + j) * d;
                memset(out, 0, (size_t)d * sizeof(float));
                for (int u = 0; u < bs; u++) {
                    const float *xr = x + (((long)b * T + (long)m * bs + u) * g + j) * d;
                    for (int c = 0; c < d; c++) out[c] += xr[c];
                }
                for (int c = 0; c < d; c++) out[c] *= inv;
            }
}

// Each token row of a complete block receives its block's gradient / b; a trailing partial block's
// tokens are never pooled and get nothing.
void cpu_compress_bwd(asa_backend *be, const asa_attn_shape *s, int d, const void *dxc_, void *dx_) {
    const float *dxc = dxc_;
    float *dx = dx_;
    const int B = s->B, T = s->T, g = s->g, bs = s->block_size, nb = asa_attn_num_cmp_blocks(s);
    const float inv = 1.0f / (float)bs;
#pragma omp parallel for collapse(2) if ((long)B * nb * bs * g * d >= CPU_PAR_MIN_WORK)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < nb * bs; t++) {
            const float *src = dxc + ((long)b * nb + t / bs) * g * d;
            float *dst = dx + ((long)b * T + t) * g * d;
            for (int c = 0; c < g * d; c++) dst[c] += src[c] * inv;
        }
}

void cpu_attn_cmp_fwd(asa_backend *be, const asa_attn_shape *s, const void *q_, const void *kc_, const void *vc_,
                      void *o_, float *lse) {
    const float *q = q_;
    const float *kc = kc_;
    const float *vc = vc_;
    float *o = o_;
    cpu_attn_pooled_fwd(s, asa_attn_num_cmp_blocks(s), s->block_size, 0, q, kc, vc, o, lse);
}

void cpu_attn_cmp_bwd(asa_backend *be, const asa_attn_shape *s, const void *q_, const void *kc_, const void *vc_,
                      const void *o_, const float *lse, const void *dout_, const float *drow, void *dq_,
                      void *dkc_, void *dvc_) {
    const float *q = q_;
    const float *kc = kc_;
    const float *vc = vc_;
    const float *o = o_;
    const float *dout = dout_;
    float *dq = dq_;
    float *dkc = dkc_;
    float *dvc = dvc_;
    cpu_attn_pooled_bwd(s, asa_attn_num_cmp_blocks(s), s->block_size, 0, q, kc, vc, o, lse, dout, drow, dq, dkc,
                        dvc);
}
