// The selected branch on the tensor cores (attn_slc_mma.cu): the tf32 and bf16 modes' attn_slc_fwd and
// attn_slc_bwd, called by attn_select.cu, which keeps the fp32 kernels for the fp32 mode and for the calls
// that cuda_slc_mma_ok refuses. q, k, v, o, dout, dq, dk, dv are activation tensors (be->act), lse fp32.
#ifndef ASA_BACKEND_CUDA_ATTN_SLC_MMA_CUH
#define ASA_BACKEND_CUDA_ATTN_SLC_MMA_CUH

#include "backend/cuda/cuda_common.cuh"

// Whether the tensor-core kernels take this call: head dims up to 128 (dk up to 160 with dv up to 128) in
// multiples of 4, and q, k, v (and dout, when given) aligned to 4 elements (16 bytes of fp32, 8 of bf16),
// since rows are staged 4 elements at a time. Other calls run the fp32 kernels.
bool cuda_slc_mma_ok(const asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                     const void *dout);

void cuda_slc_mma_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                      const int32_t *idx, void *o, float *lse);
void cuda_slc_mma_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                      const int32_t *idx, const void *o, const float *lse, const void *dout, const float *drow,
                      void *dq, void *dk, void *dv);

#endif
