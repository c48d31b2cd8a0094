// Pooled-key causal attention on the bf16 tensor cores (attn_dense16.cu), for the bf16 storage mode: the
// forward of full and window attention (span 1) and the backward of every pooled call (span 1, and the
// compressed branch's span = block size). attn_dense.cu dispatches to these when cuda_dense16_ok accepts the
// call and keeps the TF32 kernels (attn_dense_mma.cu) as the fallback. q, k, v, o, dout, dq, dk, dv are bf16
// activation tensors, lse fp32.
#ifndef ASA_BACKEND_CUDA_ATTN_DENSE16_CUH
#define ASA_BACKEND_CUDA_ATTN_DENSE16_CUH

#include "backend/cuda/cuda_common.cuh"

// bf16 storage, head dims in multiples of 8 up to dk 160 / dv 128, and the n tensors of ptr aligned to 16 bytes: rows
// are copied 8 elements at a time by cp.async and outputs stored as bf16 pairs.
bool cuda_dense16_ok(const asa_backend *be, const asa_attn_shape *s, const void *const *ptr, int n);

void cuda_dense16_fwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                      const void *k, const void *v, void *o, float *lse);
// Whether the backward runs both passes on warpgroup MMA (Hopper, head dims 64 or 128: dk = dv).
bool cuda_dense16_bwd_wg(asa_backend *be, const asa_attn_shape *s);
void cuda_dense16_bwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                      const void *k, const void *v, const void *o, const float *lse, const void *dout,
                      const float *drow, void *dq, void *dk, void *dv);

#endif
