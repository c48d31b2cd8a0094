// Pooled-key causal attention on the tensor cores (attn_dense_mma.cu), for the tf32 mode: the forward of
// full and window attention (span 1) and the backward of every pooled call (span 1, and the compressed
// branch's span = block size). attn_dense.cu dispatches to these and keeps the fp32 kernels for the fp32
// mode and for the calls cuda_dense_mma_ok refuses.
#ifndef ASA_BACKEND_CUDA_ATTN_DENSE_MMA_CUH
#define ASA_BACKEND_CUDA_ATTN_DENSE_MMA_CUH

#include "backend/cuda/cuda_common.cuh"

// Head dims up to 128 in multiples of 4, operands (and dout, when given) 16-byte aligned: rows are copied
// with 16-byte cp.async.
bool cuda_dense_mma_ok(const asa_attn_shape *s, const float *q, const float *k, const float *v, const float *dout);

void cuda_dense_mma_fwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const float *q,
                        const float *k, const float *v, float *o, float *lse);
void cuda_dense_mma_bwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const float *q,
                        const float *k, const float *v, const float *o, const float *lse, const float *dout,
                        float *dq, float *dk, float *dv);

#endif
