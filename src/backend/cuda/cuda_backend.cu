// CUDA backend: context (device, cuBLASLt handle, scratch), device memory ops, activation transfers, dtype
// conversion and the op table. Every op runs on the default stream, so ops are ordered and the synchronous
// copies see finished results; an op whose passes are independent may run them on two side streams between
// cuda_fork and cuda_join, which makes the default stream wait for them before the op returns.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cudaTypedefs.h>

#include "backend/cuda/attn_mma16.cuh"
#include "backend/cuda/cuda_common.cuh"

#define LT_WORKSPACE_BYTES (32u << 20)

void cuda_fork(asa_backend *be) {
    cuda_ctx *cx = cuda_ctx_of(be);
    CUDA_CHECK(cudaEventRecord(cx->fork_ev, 0));
    for (int i = 0; i < 2; i++) CUDA_CHECK(cudaStreamWaitEvent(cx->side[i], cx->fork_ev, 0));
}

void cuda_join(asa_backend *be) {
    cuda_ctx *cx = cuda_ctx_of(be);
    for (int i = 0; i < 2; i++) {
        CUDA_CHECK(cudaEventRecord(cx->join_ev[i], cx->side[i]));
        CUDA_CHECK(cudaStreamWaitEvent(0, cx->join_ev[i], 0));
    }
}

// Through the driver's encoder, reached via the runtime: no link to libcuda.
bool cuda_tma_map(CUtensorMap *m, const void *base, long rows, long cols) {
    static PFN_cuTensorMapEncodeTiled_v12000 encode = NULL;
    if (!encode) {
        void *fn = NULL;
        cudaDriverEntryPointQueryResult found;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
                cudaSuccess ||
            found != cudaDriverEntryPointSuccess)
            return false;
        encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
    }
    const cuuint64_t dim[2] = {(cuuint64_t)cols, (cuuint64_t)rows}, stride[1] = {(cuuint64_t)cols * sizeof(bf16)};
    const cuuint32_t box[2] = {64, 64}, unit[2] = {1, 1};
    return encode(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)base, dim, stride, box, unit,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

void *cuda_scratch(asa_backend *be, size_t bytes) {
    cuda_ctx *cx = cuda_ctx_of(be);
    if (bytes > cx->scratch_bytes) {
        // cudaFree waits for the work in flight, which may still read the old buffer.
        if (cx->scratch) CUDA_CHECK(cudaFree(cx->scratch));
        size_t grown = bytes + bytes / 2;
        CUDA_CHECK(cudaMalloc(&cx->scratch, grown));
        cx->scratch_bytes = grown;
    }
    return cx->scratch;
}

static void *cuda_alloc(asa_backend *be, size_t bytes) {
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes ? bytes : 64);  // 256-byte aligned
    if (err != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        asa_fatal("out of GPU memory allocating %zu bytes (%zu of %zu bytes free): %s", bytes, free_b, total_b,
                  cudaGetErrorString(err));
    }
    CUDA_CHECK(cudaMemset(p, 0, bytes));
    return p;
}

static void cuda_free(asa_backend *be, void *p) { CUDA_CHECK(cudaFree(p)); }
static void cuda_zero(asa_backend *be, void *p, size_t bytes) { CUDA_CHECK(cudaMemset(p, 0, bytes)); }
static void cuda_to_device(asa_backend *be, void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
static void cuda_to_host(asa_backend *be, void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
static void cuda_sync(asa_backend *be) { CUDA_CHECK(cudaDeviceSynchronize()); }
static void cuda_mem_info(asa_backend *be, size_t *free_bytes, size_t *total_bytes) {
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

// Element-wise type conversion (bf16 stores round to nearest even).
template <typename D, typename S>
__global__ void convert_kernel(D *dst, const S *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        st_f(dst + i, ld_f(src + i));
}

void cuda_convert(asa_backend *be, void *dst, asa_dtype dt, const void *src, asa_dtype st, size_t n) {
    if (n == 0) return;
    if (dt == st) {
        CUDA_CHECK(cudaMemcpy(dst, src, n * asa_dtype_size(dt), cudaMemcpyDeviceToDevice));
        return;
    }
    if (dt == ASA_BF16)
        convert_kernel<<<cuda_blocks((long)n, CUDA_THREADS), CUDA_THREADS>>>((bf16 *)dst, (const float *)src, n);
    else
        convert_kernel<<<cuda_blocks((long)n, CUDA_THREADS), CUDA_THREADS>>>((float *)dst, (const bf16 *)src, n);
    CUDA_LAUNCH_CHECK();
}

// bf16 transfers stage fp32 values in scratch, a chunk at a time, so that uploading a large tensor does
// not grow the scratch buffer (which stays allocated) to the tensor's fp32 size.
#define ACT_STAGE_ELEMS ((size_t)1 << 24)

void cuda_act_to_device(asa_backend *be, void *dst, const float *host_src, size_t n) {
    if (be->act == ASA_F32) {
        CUDA_CHECK(cudaMemcpy(dst, host_src, n * sizeof(float), cudaMemcpyHostToDevice));
        return;
    }
    for (size_t i = 0; i < n; i += ACT_STAGE_ELEMS) {
        const size_t c = n - i < ACT_STAGE_ELEMS ? n - i : ACT_STAGE_ELEMS;
        float *stage = (float *)cuda_scratch(be, c * sizeof(float));
        CUDA_CHECK(cudaMemcpy(stage, host_src + i, c * sizeof(float), cudaMemcpyHostToDevice));
        cuda_convert(be, (bf16 *)dst + i, ASA_BF16, stage, ASA_F32, c);
    }
}

void cuda_act_to_host(asa_backend *be, float *host_dst, const void *src, size_t n) {
    if (be->act == ASA_F32) {
        CUDA_CHECK(cudaMemcpy(host_dst, src, n * sizeof(float), cudaMemcpyDeviceToHost));
        return;
    }
    for (size_t i = 0; i < n; i += ACT_STAGE_ELEMS) {
        const size_t c = n - i < ACT_STAGE_ELEMS ? n - i : ACT_STAGE_ELEMS;
        float *stage = (float *)cuda_scratch(be, c * sizeof(float));
        cuda_convert(be, stage, ASA_F32, (const bf16 *)src + i, ASA_BF16, c);
        CUDA_CHECK(cudaMemcpy(host_dst + i, stage, c * sizeof(float), cudaMemcpyDeviceToHost));
    }
}

static void cuda_destroy(asa_backend *be) {
    cuda_ctx *cx = cuda_ctx_of(be);
    CUDA_CHECK(cudaDeviceSynchronize());
    cuda_cudnn_release(cx);
    for (int i = 0; i < 2; i++) {
        CUDA_CHECK(cudaStreamDestroy(cx->side[i]));
        CUDA_CHECK(cudaEventDestroy(cx->join_ev[i]));
    }
    CUDA_CHECK(cudaEventDestroy(cx->fork_ev));
    if (cx->scratch) CUDA_CHECK(cudaFree(cx->scratch));
    CUDA_CHECK(cudaFree(cx->lt_ws));
    CUBLAS_CHECK(cublasLtDestroy(cx->lt));
    free(cx);
    free(be);
}

extern "C" asa_backend *asa_backend_cuda_new(int device, int precision) {
    if (precision != ASA_PRECISION_FP32 && precision != ASA_PRECISION_TF32 && precision != ASA_PRECISION_BF16) {
        asa_err_set("CUDA backend: unknown precision %d", precision);
        return NULL;
    }
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        asa_err_set("no CUDA device: %s", cudaGetErrorString(err));
        return NULL;
    }
    if (count == 0) {
        asa_err_set("no CUDA device");
        return NULL;
    }
    if (device < 0 || device >= count) {
        asa_err_set("CUDA device %d: only %d device(s) present", device, count);
        return NULL;
    }
    CUDA_CHECK(cudaSetDevice(device));
    cuda_ctx *cx = (cuda_ctx *)asa_calloc(1, sizeof *cx);
    cx->device = device;
    CUDA_CHECK(cudaDeviceGetAttribute(&cx->max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    CUDA_CHECK(cudaDeviceGetAttribute(&cx->num_sms, cudaDevAttrMultiProcessorCount, device));
    int major = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    // the kernels' TMA and wgmma code is built for sm_90a only; ASA_TMA=0 runs the portable kernels there too
    const char *use_tma = getenv("ASA_TMA");
    cx->use_tma = major == 9 && !(use_tma && strcmp(use_tma, "0") == 0);
    CUBLAS_CHECK(cublasLtCreate(&cx->lt));
    cx->lt_ws_bytes = LT_WORKSPACE_BYTES;
    CUDA_CHECK(cudaMalloc(&cx->lt_ws, cx->lt_ws_bytes));
    const char *use_cudnn = getenv("ASA_CUDNN");
    cx->use_cudnn = cuda_cudnn_version() > 0 && !(use_cudnn && strcmp(use_cudnn, "0") == 0);
    // H100, Setting A's N layer: with 128 pooled keys cuDNN's compressed backward took 1.13 ms against asa's
    // 0.93 (asa-340M's G layer: both directions slower); forward with 256 0.33 against 0.64 ms. Backward on
    // asa's warpgroup kernels: 256 keys 1.59 against 2.25 ms, 512 4.43 against 4.76, 1024 11.2 against 18.3 (an earlier
    // version of them).
    cx->cudnn_cmp_min_keys[0] = 256, cx->cudnn_cmp_min_keys[1] = 1024;
    int least = 0, greatest = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&cx->side[0], cudaStreamNonBlocking, greatest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&cx->side[1], cudaStreamNonBlocking, least));
    CUDA_CHECK(cudaEventCreateWithFlags(&cx->fork_ev, cudaEventDisableTiming));
    for (int i = 0; i < 2; i++) CUDA_CHECK(cudaEventCreateWithFlags(&cx->join_ev[i], cudaEventDisableTiming));

    asa_backend *be = (asa_backend *)asa_calloc(1, sizeof *be);
    be->name = "cuda";
    be->precision = (asa_precision)precision;
    be->act = precision == ASA_PRECISION_BF16 ? ASA_BF16 : ASA_F32;
    be->ctx = cx;
    be->destroy = cuda_destroy;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->zero = cuda_zero;
    be->to_device = cuda_to_device;
    be->to_host = cuda_to_host;
    be->sync = cuda_sync;
    be->mem_info = cuda_mem_info;
    be->act_to_device = cuda_act_to_device;
    be->act_to_host = cuda_act_to_host;
    be->convert = cuda_convert;
    be->gemm = cuda_gemm;
    be->embedding_fwd = cuda_embedding_fwd;
    be->embedding_bwd = cuda_embedding_bwd;
    be->rmsnorm_fwd = cuda_rmsnorm_fwd;
    be->rmsnorm_bwd = cuda_rmsnorm_bwd;
    be->rope_fwd = cuda_rope_fwd;
    be->rope_bwd = cuda_rope_bwd;
    be->swiglu_fwd = cuda_swiglu_fwd;
    be->swiglu_bwd = cuda_swiglu_bwd;
    be->copy_heads = cuda_copy_heads;
    be->xent_fwd_bwd = cuda_xent_fwd_bwd;
    be->gate_fwd = cuda_gate_fwd;
    be->gate_bwd = cuda_gate_bwd;
    be->attn_fwd = cuda_attn_fwd;
    be->attn_bwd = cuda_attn_bwd;
    be->compress_fwd = cuda_compress_fwd;
    be->compress_bwd = cuda_compress_bwd;
    be->attn_cmp_fwd = cuda_attn_cmp_fwd;
    be->attn_cmp_bwd = cuda_attn_cmp_bwd;
    be->select_topk = cuda_select_topk;
    be->attn_slc_fwd = cuda_attn_slc_fwd;
    be->attn_slc_bwd = cuda_attn_slc_bwd;
    be->attn_decode = cuda_attn_decode;
    be->select_decode = cuda_select_decode;
    be->attn_slc_decode = cuda_attn_slc_decode;
    be->adamw = cuda_adamw;
    be->sum_squares = cuda_sum_squares;
    be->scale = cuda_scale;
    be->add = cuda_add;
    return be;
}

extern "C" int asa_backend_cuda_cudnn(asa_backend *be, int on) {
    cuda_ctx *cx = cuda_ctx_of(be);
    if (on >= 0) cx->use_cudnn = on && cuda_cudnn_version() > 0;
    return cx->use_cudnn ? cuda_cudnn_version() : 0;
}

extern "C" int asa_backend_cuda_tma(asa_backend *be, int on) {
    cuda_ctx *cx = cuda_ctx_of(be);
    int major = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, cx->device));
    if (on >= 0) cx->use_tma = on && major == 9;
    return cx->use_tma;
}

extern "C" long asa_backend_cuda_cudnn_calls(const asa_backend *be) { return ((const cuda_ctx *)be->ctx)->cudnn_calls; }

extern "C" int asa_backend_cuda_cudnn_cmp_min_keys(asa_backend *be, int bwd, int min_keys) {
    cuda_ctx *cx = cuda_ctx_of(be);
    const int before = cx->cudnn_cmp_min_keys[bwd != 0];
    if (min_keys > 0) cx->cudnn_cmp_min_keys[bwd != 0] = min_keys;
    return before;
}
