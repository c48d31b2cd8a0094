// Internals shared by the CUDA backend's files: error checks, the backend context, launch helpers, warp
// reductions and the declarations of every cuda_* op (one per entry of asa_backend, see backend.h).
#ifndef ASA_BACKEND_CUDA_COMMON_CUH
#define ASA_BACKEND_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

// error.h is C11: _Noreturn has a C++ spelling.
#define _Noreturn [[noreturn]]
extern "C" {
#include "backend/backend.h"
#include "core/error.h"
}
#undef _Noreturn

#include "backend/cuda/cuda_backend.h"

// Every CUDA runtime / cuBLASLt call is checked; a failure is a broken invariant (or an exhausted GPU)
// and aborts naming the file and line of the call.
#define CUDA_CHECK(call)                                                                          \
    do {                                                                                          \
        cudaError_t err_ = (call);                                                                \
        if (err_ != cudaSuccess) asa_fatal_at(__FILE__, __LINE__, "%s: %s", #call, cudaGetErrorString(err_)); \
    } while (0)
#define CUBLAS_CHECK(call)                                                                        \
    do {                                                                                          \
        cublasStatus_t st_ = (call);                                                              \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                         \
            asa_fatal_at(__FILE__, __LINE__, "%s: cuBLAS status %d", #call, (int)st_);            \
    } while (0)
// After each launch: catches bad launch configurations at once (asynchronous faults surface at the next
// synchronising call, also checked).
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

typedef struct {
    int device;
    int max_smem;         // dynamic shared memory a block may opt in to (bytes)
    int num_sms;          // multiprocessors
    int use_tma;          // bf16 selected branch's Hopper paths, TMA and wgmma (sm_90: asa_backend_cuda_tma)
    cublasLtHandle_t lt;
    void *lt_ws;          // cuBLASLt workspace
    size_t lt_ws_bytes;
    void *scratch;        // grows on demand; ops run in stream order on the default stream, so one op's
    size_t scratch_bytes; // scratch is free again when the next op starts
    int use_cudnn;        // attn_fwd / attn_bwd try cuDNN's fused attention first (attn_cudnn.cu)
    long cudnn_calls;     // attention calls cuDNN served
    int cudnn_cmp_min_keys[2];  // the compression branch's forward / backward try cuDNN from this many pooled keys
    struct cuda_cudnn *cudnn;  // its handle and plans, made on first use
    // Two non-blocking streams, [0] of the device's highest priority and [1] of its lowest, for an op whose
    // passes run side by side (cuda_fork, cuda_join); fork and join events.
    cudaStream_t side[2];
    cudaEvent_t fork_ev, join_ev[2];
} cuda_ctx;
typedef struct cuda_cudnn cuda_cudnn;

static inline cuda_ctx *cuda_ctx_of(asa_backend *be) { return (cuda_ctx *)be->ctx; }
// An op's work from here on may go to the side streams, after everything the default stream holds so far.
void cuda_fork(asa_backend *be);
// The default stream waits for everything given to the side streams so far.
void cuda_join(asa_backend *be);
// At least `bytes` of device scratch, valid until the next call (by any op) of cuda_scratch.
void *cuda_scratch(asa_backend *be, size_t bytes);

#define CUDA_THREADS 256
// Blocks for a grid-stride loop over n items (capped: the loop covers the rest).
static inline unsigned cuda_blocks(long n, int threads) {
    long b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    return (unsigned)(b < 65536L * 16 ? b : 65536L * 16);
}

#define FULL_MASK 0xffffffffu
static __device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(FULL_MASK, x, o);
    return x;
}
static __device__ __forceinline__ double warp_sum_d(double x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(FULL_MASK, x, o);
    return x;
}
static __device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, o));
    return x;
}
static __device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// Storage types of activation tensors: kernels are templates over the storage type (float or bf16), load
// with ld_f and store with st_f, and compute in fp32. bf16 stores round to nearest even.
typedef __nv_bfloat16 bf16;
static __device__ __forceinline__ float ld_f(const float *p) { return *p; }
static __device__ __forceinline__ float ld_f(const bf16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ void st_f(float *p, float x) { *p = x; }
static __device__ __forceinline__ void st_f(bf16 *p, float x) { *p = __float2bfloat16_rn(x); }
// Eight consecutive elements as floats: one 16-byte access for bf16, two for fp32.
static __device__ __forceinline__ void ld8(const bf16 *p, float (&f)[8]) {
    const uint4 u = *(const uint4 *)p;
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
    for (int j = 0; j < 4; j++) {
        const float2 x = __bfloat1622float2(h[j]);
        f[2 * j] = x.x, f[2 * j + 1] = x.y;
    }
}
static __device__ __forceinline__ void st8(bf16 *p, const float (&f)[8]) {
    uint4 u;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
    for (int j = 0; j < 4; j++) h[j] = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);
    *(uint4 *)p = u;
}
static __device__ __forceinline__ void ld8(const float *p, float (&f)[8]) {
    const float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
static __device__ __forceinline__ void st8(float *p, const float (&f)[8]) {
    ((float4 *)p)[0] = make_float4(f[0], f[1], f[2], f[3]);
    ((float4 *)p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}

// x as the storage type of *p would hold it (bf16: rounded to nearest even).
static __device__ __forceinline__ float round_to(const float *, float x) { return x; }
static __device__ __forceinline__ float round_to(const bf16 *, float x) {
    return __bfloat162float(__float2bfloat16_rn(x));
}
// Whether rows of n elements at these pointers are whole 16-byte vectors (the ld8 / st8 kernels).
static inline bool cuda_vec8_ok(const void *const *p, int np, long n) {
    if (n % 8 != 0) return false;
    for (int i = 0; i < np; i++)
        if (((uintptr_t)p[i] & 15) != 0) return false;
    return true;
}
// Runs a statement with `act_t` naming the backend's storage type, e.g.
//   DISPATCH_ACT(be, rope_kernel<act_t><<<grid, threads>>>((act_t *)x, ...)).
#define DISPATCH_ACT(be, ...)                  \
    do {                                       \
        if ((be)->act == ASA_BF16) {           \
            typedef bf16 act_t;                \
            __VA_ARGS__;                       \
        } else {                               \
            typedef float act_t;               \
            __VA_ARGS__;                       \
        }                                      \
    } while (0)

void cuda_act_to_device(asa_backend *be, void *dst, const float *host_src, size_t n);
void cuda_act_to_host(asa_backend *be, float *host_dst, const void *src, size_t n);
void cuda_convert(asa_backend *be, void *dst, asa_dtype dt, const void *src, asa_dtype st, size_t n);
void cuda_gemm(asa_backend *be, int transA, int transB, int M, int N, int K, float alpha, const void *A, int lda, long strideA, const void *B, int ldb, long strideB, float beta, void *C, asa_dtype ct, int ldc, long strideC, int batch);
void cuda_embedding_fwd(asa_backend *be, void *out, const int32_t *tokens, const float *E, int N, int D);
void cuda_embedding_bwd(asa_backend *be, float *dE, const void *dout, const int32_t *tokens, int N, int D);
void cuda_rmsnorm_fwd(asa_backend *be, void *out, float *rstd, const void *x, const float *w, int N, int groups, int C, float eps);
void cuda_rmsnorm_bwd(asa_backend *be, void *dx, float *dw, const void *dout, const void *x, const float *w, const float *rstd, int N, int groups, int C);
void cuda_rope_fwd(asa_backend *be, void *x, int N, int T, int pos0, int heads, int row_stride, int head_stride, int offset, int rot_dim, float theta);
void cuda_rope_bwd(asa_backend *be, void *dx, int N, int T, int pos0, int heads, int row_stride, int head_stride, int offset, int rot_dim, float theta);
void cuda_swiglu_fwd(asa_backend *be, void *out, const void *gate, const void *up, int N, int hidden);
void cuda_swiglu_bwd(asa_backend *be, void *dgate, void *dup, const void *dout, const void *gate, const void *up, int N, int hidden);
void cuda_copy_heads(asa_backend *be, void *dst, int dst_rs, int dst_hs, const void *src, int src_rs, int src_hs, int rows, int heads, int cols, int accumulate);
void cuda_xent_fwd_bwd(asa_backend *be, float *losses, void *dlogits, const void *logits, const int32_t *targets, int N, int V, float dloss_scale);
void cuda_gate_fwd(asa_backend *be, void *out, const void *glog, const void *const *br, int nbr, int N, int h, int dv);
void cuda_gate_bwd(asa_backend *be, void *dglog, void *const *dbr, float *const *drow, const void *dout, const void *glog, const void *const *br, int nbr, int N, int h, int dv);
// cuDNN's fused attention (attn_cudnn.cu) for attn_fwd / attn_bwd and the compression branch's
// attn_cmp_fwd / attn_cmp_bwd: true when it ran the call, false when asa's kernels must (no cuDNN in the
// build, turned off, not bf16, or a shape the engine does not take).
bool cuda_cudnn_attn_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v, void *o, float *lse);
bool cuda_cudnn_attn_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v, const void *o, const float *lse, const void *dout, void *dq, void *dk, void *dv);
bool cuda_cudnn_attn_cmp_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc, const void *vc, void *o, float *lse);
bool cuda_cudnn_attn_cmp_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc, const void *vc, const void *o, const float *lse, const void *dout, void *dq, void *dkc, void *dvc);
void cuda_cudnn_release(cuda_ctx *cx);
int cuda_cudnn_version(void);  // 0 without cuDNN
void cuda_attn_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v, void *o, float *lse);
void cuda_attn_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v, const void *o, const float *lse, const void *dout, const float *drow, void *dq, void *dk, void *dv);
void cuda_compress_fwd(asa_backend *be, const asa_attn_shape *s, int d, const void *x, void *xc);
void cuda_compress_bwd(asa_backend *be, const asa_attn_shape *s, int d, const void *dxc, void *dx);
void cuda_attn_cmp_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc, const void *vc, void *o, float *lse);
void cuda_attn_cmp_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc, const void *vc, const void *o, const float *lse, const void *dout, const float *drow, void *dq, void *dkc, void *dvc);
void cuda_select_topk(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc, const float *lse_cmp, int32_t *idx);
void cuda_attn_slc_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v, const int32_t *idx, void *o, float *lse);
void cuda_attn_slc_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v, const int32_t *idx, const void *o, const float *lse, const void *dout, const float *drow, void *dq, void *dk, void *dv);
void cuda_attn_decode(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kv, int s0, int s1, void *o, float *lse);
void cuda_select_decode(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kvc, const float *lse_cmp, int t, int block_size, int selection_block_size, int block_counts, int32_t *idx);
void cuda_attn_slc_decode(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kv, const int32_t *idx, int t, int selection_block_size, int block_counts, void *o, float *lse);
void cuda_adamw(asa_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd, int step, float grad_scale);
double cuda_sum_squares(asa_backend *be, const void *x, asa_dtype t, size_t n);
void cuda_scale(asa_backend *be, float *x, size_t n, float alpha);
void cuda_add(asa_backend *be, float *y, const float *x, size_t n);

#endif
