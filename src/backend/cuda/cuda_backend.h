// The CUDA backend's public entry point (built only when nvcc is present: ASA_HAVE_CUDA).
#ifndef ASA_BACKEND_CUDA_BACKEND_H
#define ASA_BACKEND_CUDA_BACKEND_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

// The CUDA backend on GPU `device`: one kernel family per op, cuBLASLt for gemm. `precision`
// (asa_precision) picks what activation tensors store (be->act) and how products are computed; sums,
// softmax and statistics are fp32 (or double) in every mode, and the fp32 tensors of backend.h (master
// weights, parameter gradients, optimizer state, norm and embedding weights) stay fp32:
//   ASA_PRECISION_FP32: fp32 storage; gemm and attention multiply in fp32 (TF32 off).
//   ASA_PRECISION_TF32: fp32 storage; gemm runs cuBLASLt's FAST_TF32 compute type (tensor cores, inputs
//     rounded to TF32, fp32 accumulation) and attention its tensor-core (TF32) kernels.
//   ASA_PRECISION_BF16: bf16 storage (be->act = ASA_BF16) of activations and of the weight copy that gemm
//     reads; gemm multiplies the bf16 operands on the tensor cores with fp32 accumulation, attention runs
//     the TF32 tensor-core kernels (bf16 values are exact in TF32), and every other kernel loads bf16,
//     computes in fp32 and rounds its stores to nearest even.
// Returns NULL with a message (asa_err_msg) when there is no usable GPU or the precision is unknown.
asa_backend *asa_backend_cuda_new(int device, int precision);

// cuDNN's fused flash attention, when the build found cuDNN 9: in bf16 mode attn_fwd / attn_bwd of full
// and window attention, and the compression branch's attention from asa_backend_cuda_cudnn_cmp_min_keys
// pooled keys per sequence on, run on it for the shapes it takes (T a multiple of 128, head dims
// multiples of 8 up to 256), asa's kernels for the rest. On by default; ASA_CUDNN=0 in the environment turns it off at
// creation, this call at any time (on = 0 / 1; on < 0 leaves it as it is). Its backward sums dQ with
// atomics, so gradients are not bit-reproducible with it. Returns cuDNN's version (e.g. 91400) when it is
// on after the call, 0 when off or absent.
int asa_backend_cuda_cudnn(asa_backend *be, int on);
// Attention calls cuDNN has served so far.
long asa_backend_cuda_cudnn_calls(const asa_backend *be);
// The fewest pooled keys per sequence (T / block_size) for which the compression branch's forward (bwd = 0)
// or backward (bwd = 1) runs on cuDNN. Defaults, from an H100: forward 256 (below it cuDNN's tiles are mostly
// padding and asa's kernels are faster), backward 1024 where asa's warpgroup kernels serve it (Hopper, head
// dims 64 or 128: faster below, with no dQ conversion or head reduction passes), the forward's elsewhere.
// Sets it when min_keys > 0; returns the value before the call.
int asa_backend_cuda_cudnn_cmp_min_keys(asa_backend *be, int bwd, int min_keys);

// Hopper paths of the bf16 selected branch on an sm_90 GPU: for key and value head dims both 64 or both 128,
// and dk 160 with dv 128 (ASA's G layers), the forward and dq kernels take their KV chunks through the tensor
// memory accelerator (one request per 64 x 64 box, 128-byte swizzle) instead of cp.async, and dq and the
// dk/dv pass run on warpgroup MMA (wgmma) instead of mma.sync; so do the backward passes of attention
// over pooled keys (attn_dense16.cu: the compression branch, and full and window attention where cuDNN does not
// serve them): dq for head dims 64 and 128, dk/dv for those and 160 / 128. On by default where the GPU has
// them, unless ASA_TMA=0 is set. on = 0 / 1 sets it
// (1 only takes on sm_90), on < 0 leaves it; returns whether it is on after the call.
int asa_backend_cuda_tma(asa_backend *be, int on);

// Read rate of L2-resident data in GB/s, best of five after a warm-up: every block (8 per multiprocessor)
// reads all of a zeroed buffer of `bytes` (pick well under the L2's size) 16 bytes at a time past L1.
double asa_backend_cuda_l2_read_gbs(asa_backend *be, size_t bytes);

#ifdef __cplusplus
}
#endif

#endif
