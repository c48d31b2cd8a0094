// Device primitives of the bf16-mode attention kernels: mma.sync m16n8k16 on bf16 operands with fp32
// accumulation, ldmatrix on bf16 shared tiles (plain and transposed), cp.async of 16-byte bf16 segments,
// and packing fp32 pairs into bf16x2 registers.
//
// Fragment layouts of m16n8k16 (lane = 4g + c, g = lane / 4, c = lane % 4; each register holds two bf16,
// the lower column / k index in the low half):
//   A (16 x 16, row major): a[0] = (row g,   k 2c..2c+1)    a[1] = (row g+8, k 2c..2c+1)
//                           a[2] = (row g,   k 2c+8..2c+9)  a[3] = (row g+8, k 2c+8..2c+9)
//   B (16 x 8, "col"):      b[0] = (k 2c..2c+1, col g)     b[1] = (k 2c+8..2c+9, col g)
//   C (16 x 8, fp32):       c[0], c[1] = (row g, cols 2c, 2c+1)   c[2], c[3] = (row g+8, cols 2c, 2c+1)
// So the accumulators of two adjacent 16 x 8 tiles (n-tiles 2i, 2i+1) are, once packed, the A fragment of
// a 16 x 16 tile whose k index is their column: P = softmax(S) feeds P·V straight from S's registers.
// ldmatrix: lanes 8i .. 8i+7 give the row addresses of 8 x 8 tile i (16 bytes each); without .trans lane
// (g, c) receives row g, elements 2c, 2c+1 of tile i in register i, which is an A fragment for tiles laid
// out (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15), and a B fragment
// for a row-major [n][k] tile (keys as rows: S = Q·K^T). With .trans lane (g, c) receives column g,
// elements 2c, 2c+1: the B fragment of a row-major [k][n] tile (values as rows: O = P·V).
#ifndef ASA_BACKEND_CUDA_ATTN_MMA16_CUH
#define ASA_BACKEND_CUDA_ATTN_MMA16_CUH

#include "backend/cuda/cuda_common.cuh"

// c += A·B on one m16n8k16 tile (bf16 inputs, fp32 accumulation).
static __device__ __forceinline__ void mma16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ void ldsm16_x4(uint32_t (&r)[4], const bf16 *p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
static __device__ __forceinline__ void ldsm16_x4_t(uint32_t (&r)[4], const bf16 *p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
static __device__ __forceinline__ void ldsm16_x2(uint32_t (&r)[2], const bf16 *p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
}
static __device__ __forceinline__ void ldsm16_x2_t(uint32_t (&r)[2], const bf16 *p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
}

// Two fp32 values as one bf16x2 register (round to nearest even), lo in the low half.
static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

// 16 bytes (8 bf16) global -> shared without a register round trip; bytes = 0 writes zeros (padding).
static __device__ __forceinline__ void cp16_b16(bf16 *dst, const bf16 *src, int bytes) {
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(bytes));
}


// Hopper (sm_90 on): the tensor memory accelerator loads a 2-D box of a global tensor described by a
// CUtensorMap into shared memory as one request, counting its bytes on an mbarrier in shared memory. A
// phase of such a barrier (initialized with one arrival) completes when the thread that announced the
// bytes has arrived and they have all landed.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define ASA_TMA 1
static __device__ __forceinline__ void mbar_init(uint64_t *bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"((uint32_t)__cvta_generic_to_shared(bar)));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
static __device__ __forceinline__ void mbar_arrive_bytes(uint64_t *bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(
                     (uint32_t)__cvta_generic_to_shared(bar)),
                 "r"(bytes)
                 : "memory");
}
// Waits for the completion of the barrier's phase with parity `parity` (0 for its first phase).
static __device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(bar);
    uint32_t done = 0;
    while (!done)
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                     : "=r"(done)
                     : "r"(a), "r"(parity)
                     : "memory");
}
// The box at (column x, row y) of the 2-D tensor `map` into dst (aligned as the map's swizzle needs).
static __device__ __forceinline__ void tma_load_2d(void *dst, const void *map, int x, int y, uint64_t *bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
            (uint32_t)__cvta_generic_to_shared(dst)),
        "l"(map), "r"(x), "r"(y), "r"((uint32_t)__cvta_generic_to_shared(bar))
        : "memory");
}
#else
#define ASA_TMA 0
#endif

#endif
