// Pooled-key causal attention on the tensor cores (attn_dense_mma.cu), for the tf32 and bf16 modes: the
// forward of full and window attention (span 1) and the backward of every pooled call (span 1, and the
// compressed branch's span = block size). attn_dense.cu dispatches to these and keeps the fp32 kernels for
// the fp32 mode and for the calls cuda_dense_mma_ok refuses. q, k, v, o, dout, dq, dk, dv are activation
// tensors (be->act), lse fp32.
#ifndef ASA_BACKEND_CUDA_ATTN_DENSE_MMA_CUH
#define ASA_BACKEND_CUDA_ATTN_DENSE_MMA_CUH

#include "backend/cuda/cuda_common.cuh"

// Head dims up to 128 in multiples of 4, operands (and dout, when given) aligned to 4 elements (16 bytes of
// fp32, 8 of bf16): rows are staged 4 elements at a time.
bool cuda_dense_mma_ok(const asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                       const void *dout);

void cuda_dense_mma_fwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                        const void *k, const void *v, void *o, float *lse);
void cuda_dense_mma_bwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                        const void *k, const void *v, const void *o, const float *lse, const void *dout,
                        const float *drow, void *dq, void *dk, void *dv);

#endif
