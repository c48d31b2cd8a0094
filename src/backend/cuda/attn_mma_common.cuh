// Device helpers of the tensor-core attention kernels (attn_slc_mma.cu, attn_dense_mma.cu): TF32 rounding,
// mma.sync m16n8k8 TF32, ldmatrix, staging of operand rows, the row products on fragments, and (for
// attn_slc16.cu too) the stores that end a forward or dq tile.
// Fragment layouts and the shared-memory row stride (d + 4 floats) are explained at the top of
// attn_slc_mma.cu. Operands in global memory are activation tensors (float or bf16); shared-memory tiles
// and fragments are fp32 / TF32 in both cases (bf16 -> fp32 -> TF32 is exact).
#ifndef ASA_BACKEND_CUDA_ATTN_MMA_COMMON_CUH
#define ASA_BACKEND_CUDA_ATTN_MMA_COMMON_CUH

#include "backend/cuda/attn_kernels.cuh"

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

// 2^x by the MUFU alone: exp2f adds a range test and two multiplies to keep results below 2^-126, which
// a probability that small does not need.
static __device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Rows are staged 4 elements at a time (16 bytes of fp32, 8 of bf16): operands must be aligned to that.
static inline bool mma_aligned4(const asa_backend *be, const void *p) {
    return ((uintptr_t)p & (4 * asa_dtype_size(be->act) - 1)) == 0;
}

static __device__ __forceinline__ uint32_t tf32(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

static __device__ __forceinline__ uint32_t tf32u(uint32_t x) { return tf32(__uint_as_float(x)); }

// Four 8-row x 4-float tiles of shared memory in one instruction (ldmatrix moves bits: b16 pairs are whole
// floats): lanes 8i .. 8i+7 give the 16-byte rows of tile i, and register i of lane (g, c) receives float c
// of row g of tile i, i.e. an mma fragment entry.
static __device__ __forceinline__ void ldsm4(uint32_t (&r)[4], const float *p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// c += A·B on one m16n8k8 tile.
static __device__ __forceinline__ void mma8(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                            uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared without a register round trip; bytes = 0 writes zeros (padding).
static __device__ __forceinline__ void cp16(float *dst, const float *src, int bytes) {
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(bytes));
}
static __device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
static __device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// 4 elements of an operand row into 4 shared floats, or zeros when !in (src is then any valid address).
// fp32 rows go by cp.async; bf16 rows through registers (one 8-byte load), widened exactly to fp32.
static __device__ __forceinline__ void stage4(float *dst, const float *src, bool in) { cp16(dst, src, in ? 16 : 0); }
static __device__ __forceinline__ void stage4(float *dst, const bf16 *src, bool in) {
    uint2 x = make_uint2(0, 0);
    if (in) x = *(const uint2 *)src;
    // a bf16 is the upper half of the fp32 it stands for; element 0 sits in the low half (little endian)
    *(float4 *)dst = make_float4(__uint_as_float(x.x << 16), __uint_as_float(x.x & 0xffff0000u),
                                 __uint_as_float(x.y << 16), __uint_as_float(x.y & 0xffff0000u));
}

// Copies rows [0, cn) of a [*, d] operand (row r at src + r*srs) into nrows shared rows of D floats
// (stride D + 4); columns >= d and rows >= cn become zeros, so padded products add nothing.
template <int D, typename T>
static __device__ __forceinline__ void stage_rows(float *dst, const T *src, long srs, int cn, int nrows, int d) {
    constexpr int SEG = D / 4;
    for (int e = threadIdx.x; e < nrows * SEG; e += blockDim.x) {
        const int r = e / SEG, c = (e % SEG) * 4;
        const bool in = r < cn && c < d;
        stage4(dst + r * (D + 4) + c, in ? src + r * srs + c : src, in);
    }
}

// S = X·Y^T for n-tile nt of a staged chunk: X (this warp's 16 rows) in registers as A fragments, Y's 8 rows
// (keys or values, row stride D + 4) in shared memory read by ldmatrix, two k steps per load; two
// accumulation chains (even and odd k steps) halve the wait on each mma's result.
template <int D>
static __device__ __forceinline__ void mma_rowprod(float (&sc)[4], const uint32_t (&xf)[D / 8][4], const float *Ys,
                                                   int nt, int d, int lane) {
    float s2[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    sc[0] = sc[1] = sc[2] = sc[3] = 0.0f;
    const float *yr = Ys + (nt * 8 + lane % 8) * (D + 4) + (lane / 8) * 4;
#pragma unroll
    for (int kk = 0; kk < D / 8; kk += 2) {
        if (kk * 8 >= d) break;
        uint32_t y[4];
        ldsm4(y, yr + kk * 8);
        mma8(sc, xf[kk][0], xf[kk][1], xf[kk][2], xf[kk][3], tf32u(y[0]), tf32u(y[1]));
        mma8(s2, xf[kk + 1][0], xf[kk + 1][1], xf[kk + 1][2], xf[kk + 1][3], tf32u(y[2]), tf32u(y[3]));
    }
    sc[0] += s2[0], sc[1] += s2[1], sc[2] += s2[2], sc[3] += s2[3];
}

// A fragments of rows r0 and r1 of x [*, d] (16 x D, columns >= d and invalid rows zero), rounded to TF32.
template <int D, typename T>
static __device__ __forceinline__ void mma_load_rows(uint32_t (&xf)[D / 8][4], const T *x, long r0, long r1,
                                                     bool ok0, bool ok1, int d, int c) {
#pragma unroll
    for (int kk = 0; kk < D / 8; kk++) {
        const int c0 = kk * 8 + c, c1 = c0 + 4;
        xf[kk][0] = tf32(ok0 && c0 < d ? ld_f(x + (r0 * d + c0)) : 0.0f);
        xf[kk][1] = tf32(ok1 && c0 < d ? ld_f(x + (r1 * d + c0)) : 0.0f);
        xf[kk][2] = tf32(ok0 && c1 < d ? ld_f(x + (r0 * d + c1)) : 0.0f);
        xf[kk][3] = tf32(ok1 && c1 < d ? ld_f(x + (r1 * d + c1)) : 0.0f);
    }
}

// p[0] += x0, p[1] += x1 (the two output columns of an accumulator entry pair), added in fp32 and stored in
// p's type.
template <typename T>
static __device__ __forceinline__ void mma_acc2(T *p, float x0, float x1) {
    st_f(p, ld_f(p) + x0), st_f(p + 1, ld_f(p + 1) + x1);
}

// The end of a forward tile in lane (g, c): o = acc / l in rows r0 and r1 (tokens t0, t1; rows with t < 0
// are padding) and lse = (m + log2 l) ln 2 (m and l in base 2). A row with no visible key (l = 0) gets o = 0
// and lse = -inf, as on the CPU.
template <int DV, typename T>
static __device__ __forceinline__ void mma_store_o(T *o, float *lse, const float (&acc)[DV / 8][4], int dv, long r0,
                                                   long r1, int t0, int t1, float m0, float m1, float l0, float l1,
                                                   int c) {
    const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) {
        const int col = nd * 8 + 2 * c;
        if (col >= dv) break;
        if (t0 >= 0) st_f(o + r0 * dv + col, acc[nd][0] * i0), st_f(o + r0 * dv + col + 1, acc[nd][1] * i0);
        if (t1 >= 0) st_f(o + r1 * dv + col, acc[nd][2] * i1), st_f(o + r1 * dv + col + 1, acc[nd][3] * i1);
    }
    if (c == 0) {
        if (t0 >= 0) lse[r0] = l0 > 0.0f ? (m0 + log2f(l0)) * LN2 : -INFINITY;
        if (t1 >= 0) lse[r1] = l1 > 0.0f ? (m1 + log2f(l1)) * LN2 : -INFINITY;
    }
}

// The end of a dq tile in lane (g, c): dq += scale * acc in rows r0 and r1 (t < 0: padding).
template <int DK, typename T>
static __device__ __forceinline__ void mma_add_dq(T *dq, const float (&acc)[DK / 8][4], int dk, float scale, long r0,
                                                  long r1, int t0, int t1, int c) {
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) {
        const int col = nd * 8 + 2 * c;
        if (col >= dk) break;
        if (t0 >= 0) mma_acc2(dq + r0 * dk + col, scale * acc[nd][0], scale * acc[nd][1]);
        if (t1 >= 0) mma_acc2(dq + r1 * dk + col, scale * acc[nd][2], scale * acc[nd][3]);
    }
}

// Runs the statements given with DK, DV: the least instantiated pair (32/32, 64/64, 96/64, 128/128)
// covering dk and dv; the padding columns are zeros and their products are skipped.
#define MMA_WITH_DIMS(dk, dv, ...)                                   \
    do {                                                             \
        if ((dk) <= 32 && (dv) <= 32) {                              \
            constexpr int DK = 32, DV = 32;                          \
            __VA_ARGS__;                                             \
        } else if ((dk) <= 64 && (dv) <= 64) {                       \
            constexpr int DK = 64, DV = 64;                          \
            __VA_ARGS__;                                             \
        } else if ((dk) <= 96 && (dv) <= 64) {                       \
            constexpr int DK = 96, DV = 64;                          \
            __VA_ARGS__;                                             \
        } else {                                                     \
            constexpr int DK = 128, DV = 128;                        \
            __VA_ARGS__;                                             \
        }                                                            \
    } while (0)

#endif
