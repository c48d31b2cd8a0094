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

#include <cuda.h>

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


// Tiles of whole 64-column boxes of 128-byte rows under the 128-byte swizzle, as TMA writes them and wgmma
// reads them: 16-byte unit u of row r sits at unit u ^ (r % 8) of its box row, so the 8 rows an ldmatrix
// phase reads fall in 8 distinct bank groups. Byte offset of unit u of row r in such a tile of `rows` rows:
static __device__ __forceinline__ int sw128_off(int rows, int r, int u) {
    return (u / 8) * rows * 128 + r * 128 + (((u % 8) ^ (r % 8)) << 4);
}
// Rows [0, cn) of a [*, D] operand (row r at src + r*srs) into such a tile of `rows` rows by cp.async, zeros
// past cn, the NTHREADS threads of the block sharing the copies.
template <int D, int NTHREADS>
static __device__ __forceinline__ void stage_sw(char *dst, const bf16 *src, long srs, int cn, int rows) {
    for (int e = threadIdx.x; e < rows * (D / 8); e += NTHREADS) {
        const int r = e / (D / 8), u = e % (D / 8);
        const bool in = r < cn;
        cp16_b16((bf16 *)(dst + sw128_off(rows, r, u)), in ? src + r * srs + u * 8 : src, in ? 16 : 0);
    }
}

// Hopper (sm_90 on): the tensor memory accelerator loads a 2-D box of a global tensor described by a
// CUtensorMap into shared memory as one request, counting its bytes on an mbarrier in shared memory. A
// phase of such a barrier (initialized with one arrival) completes when the thread that announced the
// bytes has arrived and they have all landed.
// The map of a [rows, cols] bf16 tensor (rows contiguous) read in boxes of 64 rows by 64 columns under the
// 128-byte swizzle (rows past the end read as zeros); false when the driver offers no encoder.
bool cuda_tma_map(CUtensorMap *m, const void *base, long rows, long cols);

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

// Hopper's warpgroup MMA (sm_90a): the 4 warps of a warpgroup issue wgmma.mma_async together for a 64-row
// product (warp w holds rows 16w..16w+15, in the m16n8k16 C layout per 8 columns; an A operand in registers
// is the m16n8k16 A fragment of those rows). Operands in shared memory are named by descriptors and laid out
// as 64-column boxes of 128-byte rows under the 128-byte swizzle (as TMA writes them; the boxes 1024-byte
// aligned). A K-major tile (the product's k along a row) advances by 32 bytes per k-step of 16 and by a box
// per 64; 8-row groups are 1024 bytes apart. An N-major B tile (rows are k, columns n) advances by 16 rows
// per k-step, with its boxes of 64 columns `box` bytes apart. The products run asynchronously: wg_fence before
// the first (after the registers they use were written), wg_commit, then wg_wait until done. Shared memory
// written by ordinary stores or cp.async needs fence_proxy_async before a product reads it.
// The dk/dv pass on warpgroup MMA, shared by the selected and the pooled-key backward: a block's 4 warps are one
// warpgroup holding 64 keys as the M side (warp w keys 16w..16w+15, accumulator rows g and g+8), K and V as
// swizzled tiles of 64 rows, against chunks of NR staged (query, head) rows: q and dout as swizzled tiles,
// then lse, D and t per row (the layout of wg_dkdv_smem). Head dims 64 or 128 (dk = dv), or dk 160 with dv 128
// (three boxes, the last half read).
#define WG_DKDV_DIMS(DK, DV) (((DK) == (DV) && ((DK) == 64 || (DK) == 128)) || ((DK) == 160 && (DV) == 128))
// Head dims 64 and 128: chunks of 64 rows in 2 stages (2 blocks per multiprocessor); at T 16384 on an H100
// the selected pass took 4.23 ms, against 4.77 with 32 rows in 4 stages (at T 65536, attn_slc_bwd 42.6
// against 44.4 ms). dk 160: 32 rows in 3 stages, which keep 2 blocks per multiprocessor (registers and
// shared memory).
#define WG_DKDV_NR(DK) ((DK) == 160 ? 32 : 64)
#define WG_DKDV_STAGES(DK) ((DK) == 160 ? 3 : 2)
template <int DK, int DV, int NR, int STAGES>
struct wg_dkdv_smem {
    static constexpr int KP = (DK + 63) / 64 * 64, VP = (DV + 63) / 64 * 64;  // whole boxes
    static constexpr int KV = 64 * (KP + VP) * 2;                                // K then V
    static constexpr int QB = NR * KP * 2, OB = NR * VP * 2;
    static constexpr int STAGE = (QB + OB + 3 * NR * 4 + 1023) / 1024 * 1024;  // q, dout, lse, D, t
    static constexpr size_t BYTES = KV + STAGES * STAGE + 1024;                 // + the alignment slack
};
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ASA_WGMMA 1
static __device__ __forceinline__ uint64_t wg_desc(const void *smem, uint32_t lbo) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    return (uint64_t)((a & 0x3FFFF) >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(1024 >> 4) << 32 | 1ull << 62;
}
// k-step kk (16 columns) of a K-major tile of `rows` rows.
static __device__ __forceinline__ uint64_t wg_desc_k(const void *tile, int rows, int kk) {
    return wg_desc((const char *)tile + (kk / 4) * rows * 128 + (kk % 4) * 32, 16);
}
// k-step kk (16 rows) of an N-major tile of `rows` rows.
static __device__ __forceinline__ uint64_t wg_desc_n(const void *tile, int rows, int kk) {
    return wg_desc((const char *)tile + kk * 16 * 128, rows * 128);
}
static __device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
static __device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
static __device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
static __device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
// After wg_wait: the accumulators are read only from here on (the compiler sees them written here).
template <int N>
static __device__ __forceinline__ void wg_hold(float (&d)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; i++)
        asm volatile("" : "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])::"memory");
}
// d = A·B (accumulate 0) or d += A·B over 16 k, 64 rows by 64, 32 or 16 columns, A and B in shared memory:
// B a K-major tile; A K-major (TA 0) or M-major (TA 1: its rows are k and its columns the 64 rows of the
// product, one box, as an N-major B's).
template <int TA = 0>
static __device__ __forceinline__ void wg_m64n64_ss(float (&d)[8][4], uint64_t da, uint64_t db, int accumulate) {
    asm volatile(
        "{ .reg .pred p; setp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %35, 0; }"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "l"(da), "l"(db), "r"(accumulate), "n"(TA));
}
template <int TA = 0>
static __device__ __forceinline__ void wg_m64n32_ss(float (&d)[4][4], uint64_t da, uint64_t db, int accumulate) {
    asm volatile(
        "{ .reg .pred p; setp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, %19, 0; }"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
        : "l"(da), "l"(db), "r"(accumulate), "n"(TA));
}
template <int TA = 0>
static __device__ __forceinline__ void wg_m64n16_ss(float (&d)[2][4], uint64_t da, uint64_t db, int accumulate) {
    asm volatile(
        "{ .reg .pred p; setp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, %11, 0; }"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3])
        : "l"(da), "l"(db), "r"(accumulate), "n"(TA));
}
// The same for N = 16, 32 or 64 columns.
template <int N, int TA>
static __device__ __forceinline__ void wg_m64_ss(float (&d)[N / 8][4], uint64_t da, uint64_t db, int accumulate) {
    static_assert(N == 16 || N == 32 || N == 64, "m64n16, m64n32 or m64n64");
    if constexpr (N == 64) wg_m64n64_ss<TA>(d, da, db, accumulate);
    else if constexpr (N == 32) wg_m64n32_ss<TA>(d, da, db, accumulate);
    else wg_m64n16_ss<TA>(d, da, db, accumulate);
}
// d += A·B over 16 k, 64 rows by 64 columns: A in registers (per warp, the m16n8k16 A fragment of its 16
// rows), B an N-major tile in shared memory.
static __device__ __forceinline__ void wg_m64n64_rs(float (&d)[8][4], const uint32_t (&a)[4], uint64_t db) {
    asm volatile(
        "{ .reg .pred p; setp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, 1; }"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
// d += A·B over 16 k, 64 rows by 128 columns: A in registers (per warp, the m16n8k16 A fragment of its 16
// rows), B an N-major tile in shared memory.
static __device__ __forceinline__ void wg_m64n128_rs(float (&d)[16][4], const uint32_t (&a)[4], uint64_t db) {
    asm volatile(
        "{ .reg .pred p; setp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1, 1; }"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
          "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]),
          "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
          "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
          "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
          "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
// d += A·B over 16 k, 64 rows by 160 columns (A, B as above).
static __device__ __forceinline__ void wg_m64n160_rs(float (&d)[20][4], const uint32_t (&a)[4], uint64_t db) {
    asm volatile(
        "{ .reg .pred p; setp.ne.b32 p, %85, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n160k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79}, "
        "{%80, %81, %82, %83}, %84, p, 1, 1, 1; }"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]),
          "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),
          "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]),
          "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
          "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]),
          "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]),
          "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
          "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
          "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]),
          "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
          "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3]),
          "+f"(d[16][0]), "+f"(d[16][1]), "+f"(d[16][2]), "+f"(d[16][3]),
          "+f"(d[17][0]), "+f"(d[17][1]), "+f"(d[17][2]), "+f"(d[17][3]),
          "+f"(d[18][0]), "+f"(d[18][1]), "+f"(d[18][2]), "+f"(d[18][3]),
          "+f"(d[19][0]), "+f"(d[19][1]), "+f"(d[19][2]), "+f"(d[19][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

// S^T = K·q^T and dP^T = V·dout^T over a chunk (m64nNRk16, both operands K-major tiles in shared memory).
template <int DK, int DV, int NR>
static __device__ __forceinline__ void wg_dkdv_scores(float (&st)[NR / 8][4], float (&dpt)[NR / 8][4], const char *Ks,
                                                      const char *Vs, const char *Q, const char *O) {
    static_assert(NR == 32 || NR == 64, "S^T and dP^T are m64n32 or m64n64 products");
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < DK / 16; kk++) {
        wg_m64_ss<NR, 0>(st, wg_desc_k(Ks, 64, kk), wg_desc_k(Q, NR, kk), kk > 0);
    }
#pragma unroll
    for (int kk = 0; kk < DV / 16; kk++) {
        wg_m64_ss<NR, 0>(dpt, wg_desc_k(Vs, 64, kk), wg_desc_k(O, NR, kk), kk > 0);
    }
    wg_commit();
    wg_wait();
    wg_hold<NR / 8>(st), wg_hold<NR / 8>(dpt);
}
// dv += P^T·dout and dk += dS^T·q (m64nDk16): P^T and dS^T from registers (the packed S^T and dP^T
// accumulators), dout and q as N-major tiles.
template <int DK, int DV, int NR>
static __device__ __forceinline__ void wg_dkdv_accumulate(float (&ak)[DK / 8][4], float (&av)[DV / 8][4],
                                                          const uint32_t (&pf)[NR / 16][4],
                                                          const uint32_t (&sf)[NR / 16][4], const char *Q,
                                                          const char *O) {
    static_assert(WG_DKDV_DIMS(DK, DV), "the warpgroup dk/dv pass holds head dims 64 or 128, or dk 160 with dv 128");
    wg_fence();
#pragma unroll
    for (int ks = 0; ks < NR / 16; ks++) {
        if constexpr (DV == 128) wg_m64n128_rs(av, pf[ks], wg_desc_n(O, NR, ks));
        else wg_m64n64_rs(av, pf[ks], wg_desc_n(O, NR, ks));
        if constexpr (DK == 160) wg_m64n160_rs(ak, sf[ks], wg_desc_n(Q, NR, ks));
        else if constexpr (DK == 128) wg_m64n128_rs(ak, sf[ks], wg_desc_n(Q, NR, ks));
        else wg_m64n64_rs(ak, sf[ks], wg_desc_n(Q, NR, ks));
    }
    wg_commit();
    wg_wait();
    wg_hold<DK / 8>(ak), wg_hold<DV / 8>(av);
}
#else
#define ASA_WGMMA 0
#endif

#endif
