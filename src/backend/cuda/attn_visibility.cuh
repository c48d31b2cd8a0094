// What the two tensor-core implementations of causal attention over pooled keys share (attn_dense_mma.cu:
// TF32 mma for the tf32 and bf16 modes; attn_dense16.cu: bf16 mma for the bf16 mode): the kernel arguments,
// which keys a query sees (key m summarises tokens [m*span, (m+1)*span) and is visible to query t iff
// (m+1)*span - 1 <= t and, with a window, t - window < m), the (query, head) rows of a GQA group, and the
// split of the dk/dv pass's rows when key blocks are few, with the pass that adds the splits' partial sums.
#ifndef ASA_BACKEND_CUDA_ATTN_VISIBILITY_CUH
#define ASA_BACKEND_CUDA_ATTN_VISIBILITY_CUH

#include "backend/cuda/attn_mma_common.cuh"

typedef struct {
    int B, T, h, g, dk, dv, nkeys, span, window, G;
    float scale, sl2;  // sl2 = scale * log2(e): scores in base 2
} dense_args;

static inline dense_args dense_args_make(const asa_attn_shape *s, int nkeys, int span, int window) {
    attn_check_dims(s);
    dense_args a;
    a.B = s->B, a.T = s->T, a.h = s->h, a.g = s->g, a.dk = s->dk, a.dv = s->dv;
    a.nkeys = nkeys, a.span = span, a.window = window, a.G = s->h / s->g;
    a.scale = s->scale, a.sl2 = s->scale * LOG2E;
    return a;
}

// Keys [dense_lo, dense_hi) are visible to query t.
static __device__ __forceinline__ int dense_lo(const dense_args &a, int t) {
    return a.window > 0 && t - a.window + 1 > 0 ? t - a.window + 1 : 0;
}
static __device__ __forceinline__ int dense_hi(const dense_args &a, int t) { return min((t + 1) / a.span, a.nkeys); }
// Queries [dense_qlo, dense_qhi) see key m.
static __device__ __forceinline__ int dense_qlo(const dense_args &a, int m) { return (m + 1) * a.span - 1; }
static __device__ __forceinline__ int dense_qhi(const dense_args &a, int m) {
    return a.window > 0 && m + a.window < a.T ? m + a.window : a.T;
}

// Row rho of group j: token t (-1 past the end) and its (token, head) row r.
static __device__ __forceinline__ void dense_row(const dense_args &a, int b, int j, long rho, int &t, long &r) {
    if (rho >= (long)a.T * a.G) {
        t = -1, r = 0;
        return;
    }
    t = (int)(rho / a.G);
    r = ((long)b * a.T + t) * a.h + j * a.G + (int)(rho % a.G);
}

static __device__ __forceinline__ int dense_warp_min(int x) {
    for (int o = 16; o > 0; o /= 2) x = min(x, __shfl_xor_sync(FULL_MASK, x, o));
    return x;
}
static __device__ __forceinline__ int dense_warp_max(int x) {
    for (int o = 16; o > 0; o /= 2) x = max(x, __shfl_xor_sync(FULL_MASK, x, o));
    return x;
}

// dk / dv += the splits' partial sums, added in split order.
template <typename T>
__global__ void dense_split_sum_kernel(dense_args a, int nsplit, const float *part, T *dk, T *dv) {
    const int W = a.dk + a.dv;
    const long total = (long)a.B * a.nkeys * a.g * W;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int sp = 0; sp < nsplit; sp++) acc += part[sp * total + e];
        const long kr = e / W;
        const int col = (int)(e % W);
        T *x = col < a.dk ? dk + (kr * a.dk + col) : dv + (kr * a.dv + col - a.dk);
        st_f(x, ld_f(x) + acc);
    }
}

// The backward's scratch and the split of the dk/dv pass, which has kblocks blocks of `keys` of the nkeys
// keys: when they are fewer than `target`, each block's rows are split in nsplit parts of at least min_rows
// rows, whose partial sums (part, krows x (dk + dv) per split) a second pass adds. The split depends on the
// shape alone, so results are reproducible. D: the row dots dout·o. attn_dense.cu's warp-per-row backward uses it too.
typedef struct {
    float *D, *part;
    long kblocks, krows;
    int nsplit;
} dense_bwd_plan;

static inline dense_bwd_plan dense_bwd_plan_make(asa_backend *be, const asa_attn_shape *s, int nkeys, int keys,
                                                 long target, long min_rows) {
    dense_bwd_plan p;
    const long rows = (long)s->B * s->T * s->h;
    p.kblocks = (long)s->B * s->g * ((nkeys + keys - 1) / keys);
    p.nsplit = 1;
    if (p.kblocks > 0 && p.kblocks < target) {
        const long want = (target + p.kblocks - 1) / p.kblocks;
        const long most = ((long)s->T * (s->h / s->g) + min_rows - 1) / min_rows;
        p.nsplit = (int)(want < most ? want : most);
        if (p.nsplit < 1) p.nsplit = 1;
    }
    p.krows = (long)s->B * nkeys * s->g;
    const size_t off_part = ((size_t)rows * sizeof(float) + 255) & ~(size_t)255;
    const size_t part_bytes = p.nsplit > 1 ? (size_t)p.nsplit * p.krows * (s->dk + s->dv) * sizeof(float) : 0;
    char *scr = (char *)cuda_scratch(be, off_part + part_bytes);
    p.D = (float *)scr, p.part = (float *)(scr + off_part);
    return p;
}

template <typename T>
static void dense_split_sum(const dense_args &a, const dense_bwd_plan &p, T *dk, T *dv, cudaStream_t st = 0) {
    if (p.nsplit <= 1) return;
    dense_split_sum_kernel<T><<<cuda_blocks(p.krows * (a.dk + a.dv), CUDA_THREADS), CUDA_THREADS, 0, st>>>(
        a, p.nsplit, p.part, dk, dv);
    CUDA_LAUNCH_CHECK();
}

#endif
