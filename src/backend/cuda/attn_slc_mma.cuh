// The selected branch on the tensor cores (attn_slc_mma.cu): the tf32 mode's attn_slc_fwd and attn_slc_bwd,
// called by attn_select.cu, which keeps the fp32 kernels for the fp32 mode and for the calls that
// cuda_slc_mma_ok refuses.
#ifndef ASA_BACKEND_CUDA_ATTN_SLC_MMA_CUH
#define ASA_BACKEND_CUDA_ATTN_SLC_MMA_CUH

#include "backend/cuda/cuda_common.cuh"

// Whether the tensor-core kernels take this call: head dims up to 128 in multiples of 4, and q, k, v (and
// dout, when given) 16-byte aligned, since rows are copied with 16-byte cp.async. Other calls run the fp32
// kernels.
bool cuda_slc_mma_ok(const asa_attn_shape *s, const float *q, const float *k, const float *v, const float *dout);

void cuda_slc_mma_fwd(asa_backend *be, const asa_attn_shape *s, const float *q, const float *k, const float *v,
                      const int32_t *idx, float *o, float *lse);
void cuda_slc_mma_bwd(asa_backend *be, const asa_attn_shape *s, const float *q, const float *k, const float *v,
                      const int32_t *idx, const float *o, const float *lse, const float *dout, float *dq, float *dk,
                      float *dv);

#endif
