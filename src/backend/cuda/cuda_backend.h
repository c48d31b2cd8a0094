// The CUDA backend's public entry point (built only when nvcc is present: ASA_HAVE_CUDA).
#ifndef ASA_BACKEND_CUDA_BACKEND_H
#define ASA_BACKEND_CUDA_BACKEND_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

// The CUDA backend on GPU `device`: fp32 storage and kernels, one kernel family per op, cuBLASLt for gemm.
// `precision` (asa_precision) picks gemm's arithmetic: ASA_PRECISION_FP32 multiplies in fp32 (TF32 off),
// ASA_PRECISION_TF32 runs cuBLASLt's FAST_TF32 compute type on the fp32 operands: tensor cores, inputs
// rounded to TF32, fp32 accumulation (see gemm.cu).
// Returns NULL with a message (asa_err_msg) when there is no usable GPU or the precision is unknown.
asa_backend *asa_backend_cuda_new(int device, int precision);

#ifdef __cplusplus
}
#endif

#endif
