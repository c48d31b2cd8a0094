// Internals shared by the CUDA attention files: the dot product, the per-warp building blocks (online-
// softmax forward and dq over a range of keys), shared-memory tiling helpers, and the pooled-key
// launchers (defined in attn_dense.cu, also run by attn_compress.cu).
// Activation tensors in global memory are of the storage type (float or bf16, read with ld_f); everything
// staged in shared memory and every sum is fp32, so the building blocks that read shared memory take floats.
//
// Work layout: one warp per query row (forward, dq) or per key row (dk/dv). The warps of a block share
// tiles of keys (or of query rows) staged in shared memory. Keys are visited 32 at a time, lane e scoring
// key e of the chunk; a row's output columns are spread over the lanes (column lane + 32*k, k < ATTN_MAXC)
// and kept in registers. Every gradient row has a single writer, so backward needs no atomics and is
// deterministic.
#ifndef ASA_BACKEND_CUDA_ATTN_KERNELS_CUH
#define ASA_BACKEND_CUDA_ATTN_KERNELS_CUH

#include "backend/cuda/cuda_common.cuh"

#define ATTN_MAXC 20                 // register columns per lane at most: head dims up to 32 * 20 = 640
#define ATTN_MAX_DIM (32 * ATTN_MAXC)
#define ATTN_WARPS 4                 // warps per block of the untiled kernels (row dots, decoding)
#define ATTN_TILE_ROWS 8             // rows (warps) per block of the tiled kernels

// The CPU's dot (attn_kernels.h): eight partial sums in the same order and no fused multiply-add, so a
// score here is bit-identical to the CPU's, and top-k selections agree at near-ties too. The operands are
// fp32 (shared memory) or activation tensors of either storage type.
template <typename TA, typename TB>
static __device__ __forceinline__ float attn_dot(const TA *a, const TB *b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
#pragma unroll
        for (int l = 0; l < 8; l++) acc[l] = __fadd_rn(acc[l], __fmul_rn(ld_f(a + i + l), ld_f(b + i + l)));
    float tail = 0;
    for (; i < n; i++) tail = __fadd_rn(tail, __fmul_rn(ld_f(a + i), ld_f(b + i)));
    return __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(acc[0], acc[4]), __fadd_rn(acc[1], acc[5])),
                               __fadd_rn(__fadd_rn(acc[2], acc[6]), __fadd_rn(acc[3], acc[7]))),
                     tail);
}

// attn_dot on the concatenation [k1 ; k2] (decode caches keep the two parts apart), in the same order.
template <typename TA, typename TK>
static __device__ __forceinline__ float attn_dot2(const TA *a, const TK *k1, int n1, const TK *k2, int n2) {
    if (n2 == 0) return attn_dot(a, k1, n1);
    const int n = n1 + n2;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
#pragma unroll
        for (int l = 0; l < 8; l++) {
            const int e = i + l;
            acc[l] = __fadd_rn(acc[l], __fmul_rn(ld_f(a + e), ld_f(e < n1 ? k1 + e : k2 + (e - n1))));
        }
    float tail = 0;
    for (; i < n; i++) tail = __fadd_rn(tail, __fmul_rn(ld_f(a + i), ld_f(i < n1 ? k1 + i : k2 + (i - n1))));
    return __fadd_rn(__fadd_rn(__fadd_rn(__fadd_rn(acc[0], acc[4]), __fadd_rn(acc[1], acc[5])),
                               __fadd_rn(__fadd_rn(acc[2], acc[6]), __fadd_rn(acc[3], acc[7]))),
                     tail);
}

// Runs the statements given (a kernel launch naming COLS) with COLS, the register columns per lane of the
// row accumulators, the least of 1, 2, 4, 8, ATTN_MAXC covering head dim d: registers grow with COLS, and
// fewer registers let more warps share a multiprocessor.
#define ATTN_WITH_COLS(d, ...)                                  \
    do {                                                        \
        const int need_ = ((d) + 31) / 32;                      \
        if (need_ <= 1) {                                       \
            constexpr int COLS = 1;                             \
            __VA_ARGS__;                                        \
        } else if (need_ <= 2) {                                \
            constexpr int COLS = 2;                             \
            __VA_ARGS__;                                        \
        } else if (need_ <= 4) {                                \
            constexpr int COLS = 4;                             \
            __VA_ARGS__;                                        \
        } else if (need_ <= 8) {                                \
            constexpr int COLS = 8;                             \
            __VA_ARGS__;                                        \
        } else {                                                \
            constexpr int COLS = ATTN_MAXC;                     \
            __VA_ARGS__;                                        \
        }                                                       \
    } while (0)

// Copies n values (fp32 or bf16) to shared memory as floats with the warp's lanes (the caller then
// __syncwarp()s).
template <typename T>
static __device__ __forceinline__ void warp_load(float *dst, const T *src, int n, int lane) {
    for (int c = lane; c < n; c += 32) dst[c] = ld_f(src + c);
}

// Online softmax of the query qs (shared) over keys [s0, s1) of one head: key s at kb + s*krs, value at
// vb + s*vrs. Updates the running max mx, normaliser l and unnormalised output acc (lane's columns).
template <int COLS>
static __device__ __forceinline__ void warp_fold_keys(const float *qs, const float *kb, const float *vb, long krs,
                                                      long vrs, int dk, int dv, float scale, int s0, int s1,
                                                      float &mx, float &l, float (&acc)[COLS], int lane) {
    for (int c0 = s0; c0 < s1; c0 += 32) {
        const int key = c0 + lane, cn = s1 - c0 < 32 ? s1 - c0 : 32;
        const float sc = key < s1 ? attn_dot(qs, kb + key * krs, dk) * scale : -INFINITY;
        const float cmax = warp_max(sc);
        if (cmax > mx) {
            const float r = expf(mx - cmax);  // 0 on the first chunk
            l *= r;
#pragma unroll
            for (int k = 0; k < COLS; k++) acc[k] *= r;
            mx = cmax;
        }
        const float p = key < s1 ? expf(sc - mx) : 0.0f;
        l += warp_sum(p);
        for (int e = 0; e < cn; e++) {
            const float pe = __shfl_sync(FULL_MASK, p, e);
            const float *vr = vb + (c0 + e) * vrs;
#pragma unroll
            for (int k = 0; k < COLS; k++)
                if (lane + 32 * k < dv) acc[k] += pe * vr[lane + 32 * k];
        }
    }
}

// dq of one query (qs, dos in shared memory, L its lse, Dn = dout . o) over keys [s0, s1):
// acc += sum_s p_s (dout . v_s - Dn) k_s.
template <int COLS>
static __device__ __forceinline__ void warp_dq_keys(const float *qs, const float *dos, float L, float Dn,
                                                    const float *kb, const float *vb, long krs, long vrs, int dk,
                                                    int dv, float scale, int s0, int s1,
                                                    float (&acc)[COLS], int lane) {
    for (int c0 = s0; c0 < s1; c0 += 32) {
        const int key = c0 + lane, cn = s1 - c0 < 32 ? s1 - c0 : 32;
        float ds = 0.0f;
        if (key < s1) {
            const float p = expf(attn_dot(qs, kb + key * krs, dk) * scale - L);
            ds = p * (attn_dot(dos, vb + key * vrs, dv) - Dn);
        }
        for (int e = 0; e < cn; e++) {
            const float dse = __shfl_sync(FULL_MASK, ds, e);
            const float *kr = kb + (c0 + e) * krs;
#pragma unroll
            for (int k = 0; k < COLS; k++)
                if (lane + 32 * k < dk) acc[k] += dse * kr[lane + 32 * k];
        }
    }
}

// The backward's softmax correction D[r] = dout_r . o_r for every (token, head) row (dout, o activation
// tensors of be->act): the caller's drow (backend.h) when it has one, else computed into `scratch`.
const float *cuda_attn_drow(asa_backend *be, const float *drow, const void *dout, const void *o, long rows, int dv,
                            float *scratch);

// Causal attention over pooled keys (see cpu/attn_kernels.h): key m summarises tokens [m*span,
// (m+1)*span), visible to query t iff (m+1)*span - 1 <= t (and t - window < m when window > 0).
// q, k, v, o, dout, dq, dk, dv are activation tensors (be->act); lse is fp32.
void cuda_attn_pooled_fwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                          const void *k, const void *v, void *o, float *lse);
void cuda_attn_pooled_bwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                          const void *k, const void *v, const void *o, const float *lse, const void *dout,
                          const float *drow, void *dq, void *dk, void *dv);

// Picks the largest tile (32, 16 or 8 rows) whose shared memory fits the device: `tiled` floats per tile
// row plus `fixed` floats. Returns the bytes and sets *tile_rows.
static inline size_t attn_tile(asa_backend *be, int *tile_rows, int tiled, int fixed) {
    const int max_smem = cuda_ctx_of(be)->max_smem;
    for (int tile = 32; tile >= 8; tile /= 2) {
        size_t bytes = ((size_t)tile * tiled + fixed) * sizeof(float);
        if (bytes <= (size_t)max_smem) {
            *tile_rows = tile;
            return bytes;
        }
    }
    asa_fatal("CUDA attention: %zu bytes of shared memory needed, the device has %d", (8 * (size_t)tiled + fixed) * 4,
              max_smem);
}

// Kernels needing more than the default 48 KB of dynamic shared memory must say so first.
static inline void attn_allow_smem(const void *kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// Row stride of a staged operand whose rows are read by 32 lanes at once: odd, so they hit 32 banks.
static inline int attn_odd(int d) { return d | 1; }

// Copies rows [0, n) of a strided [rows, d] operand (row stride srs, fp32 or bf16) into shared memory as
// floats with row stride st.
template <typename T>
static __device__ __forceinline__ void block_stage(float *dst, int st, const T *src, long srs, int n, int d) {
    for (int e = threadIdx.x; e < n * d; e += blockDim.x)
        dst[(e / d) * st + e % d] = ld_f(src + ((long)(e / d) * srs + e % d));
}

static inline void attn_check_dims(const asa_attn_shape *s) {
    ASA_CHECK(s->h > 0 && s->g > 0 && s->h % s->g == 0);
    if (s->dk > ATTN_MAX_DIM || s->dv > ATTN_MAX_DIM)
        asa_fatal("CUDA attention: head dims dk=%d dv=%d exceed %d", s->dk, s->dv, ATTN_MAX_DIM);
}

#endif
