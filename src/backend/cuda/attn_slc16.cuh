// The selected branch on bf16 tensor cores (attn_slc16.cu): the bf16 mode's attn_slc_fwd and attn_slc_bwd,
// called by attn_select.cu ahead of the TF32 kernels of attn_slc_mma.cu, which keep the tf32 mode and the
// calls that cuda_slc16_ok refuses. q, k, v, o, dout, dq, dk, dv are bf16 activation tensors, lse fp32.
#ifndef ASA_BACKEND_CUDA_ATTN_SLC16_CUH
#define ASA_BACKEND_CUDA_ATTN_SLC16_CUH

#include "backend/cuda/cuda_common.cuh"

// Whether the bf16 kernels take this call: bf16 storage, head dims dk, dv multiples of 8 with (dk, dv) up to
// (64, 64), (128, 128) or (160, 128), and q, k, v (and dout, when given) 16-byte aligned, since rows are
// copied 8 elements at a time by cp.async.
bool cuda_slc16_ok(const asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                   const void *dout);

void cuda_slc16_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                    const int32_t *idx, void *o, float *lse);
void cuda_slc16_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                    const int32_t *idx, const void *o, const float *lse, const void *dout, const float *drow,
                    void *dq, void *dk, void *dv);

#endif
