// The CUDA backend's public entry point (built only when nvcc is present: ASA_HAVE_CUDA).
#ifndef ASA_BACKEND_CUDA_BACKEND_H
#define ASA_BACKEND_CUDA_BACKEND_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

// The CUDA backend on GPU `device`: fp32 everywhere, cuBLASLt for gemm (TF32 off), one kernel family per
// op. Returns NULL with a message (asa_err_msg) when there is no usable GPU.
asa_backend *asa_backend_cuda_new(int device);

#ifdef __cplusplus
}
#endif

#endif
