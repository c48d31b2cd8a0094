// Causal attention over pooled keys on the bf16 tensor cores (bf16 storage mode), FlashAttention-2 style:
// mma.sync m16n8k16 on bf16 operands with fp32 accumulators, online softmax in base 2 with the scale folded
// into the exponent, masks and sums in fp32. Key m summarises tokens [m*span, (m+1)*span) and is visible to
// query t iff (m+1)*span - 1 <= t and, with a window, t - window < m (span 1: full or window attention; span
// b: the compressed branch). Semantics are those of attn_dense_mma.cu (which keeps the tf32 mode): rows with
// no visible key get o = 0, lse = -inf and no gradient; no atomics, fixed summation orders.
//
// Rows are (query, head) pairs of one GQA group: row rho of group j is token rho / G, head j*G + rho % G, so
// the G heads sharing K/V share every staged key chunk. Operand tiles are bf16 in shared memory, rows padded
// by 8 elements (16 bytes): the 8 rows an ldmatrix reads start 4 banks apart, so it has no bank conflict.
// Copies are cp.async (zero-filled past the ends: padded products add nothing and never read garbage), the
// next chunk in flight while the current one is multiplied; one __syncthreads per chunk (the buffer a chunk
// is copied into was last read before the barrier that precedes the copy).
// - forward: 128 rows per block, 32 per warp as two m-tiles that share every K and V fragment (half the
//   shared-memory reads of 16-row warps); chunks of 64 keys (32 for dk 160). S = Q·K^T, then P (the S
//   accumulators packed to bf16: they are P·V's A fragments) times V read by ldmatrix.trans.
// - dq: 64 rows per block (16 per warp, the score, dP and dq accumulators need the registers); chunks of 32
//   keys, which leave registers for 3 blocks per multiprocessor (measured faster than 2 blocks of 64-key
//   chunks; 2 for dk 160, by shared memory): S = Q·K^T, dP = dout·V^T, dS = P(dP - D), dq += dS·K (K read
//   transposed).
// - dk/dv: 64 keys per block (16 per warp) streaming the rows that see them, 64 per chunk (32 for dk 160):
//   S^T = K·Q^T and dP^T = V·dout^T, then dv += P^T·dout and dk += dS^T·Q, P^T and dS^T again straight from
//   registers. When key blocks are few (the compressed branch) each one's rows are split over several blocks
//   whose partial sums a second pass adds in split order; the splits cut every key block's rows at the same
//   places, and the key blocks of a split run together, so that they read the same rows from L2.
// - Hopper (asa_backend_cuda_tma): dq and dk/dv on warpgroup MMA (d16_dq_wg_kernel, d16_dkdv_wg_kernel, the
//   latter with the selected branch's products), the tiles swizzled instead of padded.
#include <limits.h>

#include "backend/cuda/attn_dense16.cuh"
#include "backend/cuda/attn_kernels.cuh"
#include "backend/cuda/attn_mma16.cuh"
#include "backend/cuda/attn_mma_common.cuh"
#include "backend/cuda/attn_visibility.cuh"

#define D16_THREADS 128  // 4 warps
#define F_ROWS 128       // forward: rows per block
#define DQ_ROWS 64       // dq: rows per block
#define DQ_KT 32         // dq: keys per chunk (its fewer registers let 3 blocks share a multiprocessor)
#define KV_KEYS 64       // dk/dv: keys per block
// Head dims over 128 (dk 160 / dv 128) halve the forward's key chunks and the dk/dv pass's row chunks, so
// that two blocks of each fit a multiprocessor's shared memory and the dk/dv accumulators its registers;
// dq then fits only two blocks (three would take 236 KB).
#define F_KT(DK) ((DK) > 128 ? 32 : 64)   // forward: keys per chunk
#define KV_RT(DK) ((DK) > 128 ? 32 : 64)  // dk/dv: rows per chunk
#define DQ_BLOCKS(DK) ((DK) > 128 ? 2 : 3)  // dq: blocks per multiprocessor
#define KV_TARGET_BLOCKS 2112  // dk/dv splits its rows when key blocks are fewer than this (16 per SM on an H100) ...
#define KV_MIN_ROWS 512       // ... keeping at least this many rows per split

// Rows [0, n) of a [*, d] operand (row r at src + r*rs) into `rows` shared rows of stride D + 8; columns >= d
// and rows >= n are zero-filled.
template <int D>
static __device__ __forceinline__ void d16_stage(bf16 *dst, const bf16 *src, long rs, int n, int rows, int d) {
    constexpr int SEG = D / 8;
    for (int e = threadIdx.x; e < rows * SEG; e += D16_THREADS) {
        const int r = e / SEG, col = (e % SEG) * 8;
        const bool in = r < n && col < d;
        cp16_b16(dst + r * (D + 8) + col, in ? src + r * rs + col : src, in ? 16 : 0);
    }
}

// (Query, head) rows rho0 .. rho0 + rows - 1 of group j: x (width d, padded to D) into shared rows of stride
// D + 8 or, with SW, a swizzled tile (sw128_off), zeros past the end. `rows` is a multiple of D16_THREADS / 2:
// two threads per row, one division each.
template <int D, bool SW = false>
static __device__ __forceinline__ void d16_stage_q(const dense_args &a, int b, int j, long rho0, int rows, bf16 *dst,
                                                   const bf16 *x, int d) {
    for (int rr = threadIdx.x / 2; rr < rows; rr += D16_THREADS / 2) {
        int t;
        long r;
        dense_row(a, b, j, rho0 + rr, t, r);
#pragma unroll
        for (int s = threadIdx.x % 2; s < D / 8; s += 2) {
            const bool in = t >= 0 && s * 8 < d;
            bf16 *p = SW ? (bf16 *)((char *)dst + sw128_off(rows, rr, s)) : dst + rr * (D + 8) + s * 8;
            cp16_b16(p, in ? x + r * d + s * 8 : x, in ? 16 : 0);
        }
    }
}

// acc[2n], acc[2n+1] (n < N/2) += A · B over one 16-wide k step, B = 16 rows of 8-column tiles read from a
// row-major shared [k][n] tile (trans: rows are k, e.g. values as rows for P·V) or [n][k] tile (keys as rows
// for Q·K^T). `p` points at the tile's (k 0, n 0) element ([k][n]) or (n 0, k 0) ([n][k]), row stride ST.
template <int N, int ST>
static __device__ __forceinline__ void d16_mma_kn(float (&acc)[N][4], const uint32_t (&af)[4], const bf16 *p, int lane,
                                                  int nlim) {
    const bf16 *pl = p + ((lane / 8) % 2 * 8 + lane % 8) * ST + (lane / 16) * 8;
#pragma unroll
    for (int n = 0; n < N / 2; n++) {
        if (n * 16 >= nlim) break;
        uint32_t bf[4];
        ldsm16_x4_t(bf, pl + n * 16);
        mma16(acc[2 * n], af, bf[0], bf[1]);
        mma16(acc[2 * n + 1], af, bf[2], bf[3]);
    }
}

// A fragment of 16 rows x 16 k from a row-major shared tile (row stride ST).
template <int ST>
static __device__ __forceinline__ void d16_afrag(uint32_t (&af)[4], const bf16 *p, int lane) {
    ldsm16_x4(af, p + (lane % 16) * ST + (lane / 16) * 8);
}

// B fragments of n-tiles 2n, 2n+1 over one 16-wide k step from a row-major [n][k] shared tile.
template <int ST>
static __device__ __forceinline__ void d16_bfrag_nk(uint32_t (&bf)[4], const bf16 *p, int n, int lane) {
    ldsm16_x4(bf, p + (n * 16 + (lane / 16) * 8 + lane % 8) * ST + ((lane / 8) % 2) * 8);
}

// The A fragment of k step kk (columns 16kk .. 16kk+15) from the accumulators of n-tiles 2kk, 2kk+1.
template <int N>
static __device__ __forceinline__ void d16_pack(uint32_t (&af)[4], const float (&x)[N][4], int kk) {
    af[0] = pack_bf16(x[2 * kk][0], x[2 * kk][1]);
    af[1] = pack_bf16(x[2 * kk][2], x[2 * kk][3]);
    af[2] = pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    af[3] = pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3]);
}

// p[0] += x0, p[1] += x1 in fp32, stored as a rounded bf16 pair.
static __device__ __forceinline__ void d16_acc2(bf16 *p, float x0, float x1) {
    const float2 v = __bfloat1622float2(*(const __nv_bfloat162 *)p);
    *(__nv_bfloat162 *)p = __floats2bfloat162_rn(v.x + x0, v.y + x1);
}

template <int DK, int DV>
static constexpr size_t d16_fwd_bytes() {
    return ((size_t)F_ROWS * (DK + 8) + 2 * (size_t)F_KT(DK) * (DK + 8 + DV + 8)) * sizeof(bf16);
}

template <int DK, int DV>
__global__ void __launch_bounds__(D16_THREADS, 2)
d16_fwd_kernel(dense_args a, int ntiles, const bf16 *q, const bf16 *k, const bf16 *v, bf16 *o, float *lse) {
    constexpr int QST = DK + 8, KST = DK + 8, VST = DV + 8, KT = F_KT(DK), NT = KT / 8;
    extern __shared__ float4 smem4[];
    bf16 *Qs = (bf16 *)smem4, *Ks = Qs + F_ROWS * QST, *Vs = Ks + 2 * KT * KST;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const int nbj = a.B * a.g, bj = blockIdx.x % nbj, j = bj % a.g, b = bj / a.g;
    const long rbase = (long)(ntiles - 1 - (int)(blockIdx.x / nbj)) * F_ROWS;  // late rows (most keys) first
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const bf16 *kg = k + (long)b * a.nkeys * krs + (long)j * a.dk, *vg = v + (long)b * a.nkeys * vrs + (long)j * a.dv;

    // this thread's rows: m-tile mt, half hf (accumulator rows g, g+8); only their tokens stay in registers
    // (the accumulators need the rest), key ranges and row offsets are recomputed where needed
    int tr[2][2];
    int ulo = INT_MAX, uhi = INT_MIN, ilo = INT_MIN, ihi = INT_MAX;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            long r;
            dense_row(a, b, j, rbase + w * 32 + mt * 16 + hf * 8 + g, tr[mt][hf], r);
            if (tr[mt][hf] >= 0) {
                const int lo = dense_lo(a, tr[mt][hf]), hi = dense_hi(a, tr[mt][hf]);
                ulo = min(ulo, lo), uhi = max(uhi, hi), ilo = max(ilo, lo), ihi = min(ihi, hi);
            }
        }
    // the warp's rows: chunks outside [ulo, uhi) are skipped, chunks inside [ilo, ihi) need no mask
    ulo = dense_warp_min(ulo), uhi = dense_warp_max(uhi), ilo = dense_warp_max(ilo), ihi = dense_warp_min(ihi);
    const int u0 = dense_lo(a, (int)(rbase / a.G));
    const int u1 = dense_hi(a, (int)((min(rbase + F_ROWS, (long)a.T * a.G) - 1) / a.G));

    d16_stage_q<DK>(a, b, j, rbase, F_ROWS, Qs, q, a.dk);
    if (u0 < u1) {
        d16_stage<DK>(Ks, kg + u0 * krs, krs, min(KT, u1 - u0), KT, a.dk);
        d16_stage<DV>(Vs, vg + u0 * vrs, vrs, min(KT, u1 - u0), KT, a.dv);
    }
    cp_commit();

    float acc[2][DV / 8][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nd = 0; nd < DV / 8; nd++) acc[mt][nd][0] = acc[mt][nd][1] = acc[mt][nd][2] = acc[mt][nd][3] = 0.0f;
    float mx[2][2], l[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++) mx[mt][0] = mx[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;

    const bf16 *qw = Qs + w * 32 * QST;
    int buf = 0;
    for (int c0 = u0; c0 < u1; c0 += KT, buf ^= 1) {
        cp_wait<0>();
        __syncthreads();  // chunk c0 is in; every warp is done with the other buffer
        const int nx = c0 + KT;
        if (nx < u1) {
            d16_stage<DK>(Ks + (buf ^ 1) * KT * KST, kg + nx * krs, krs, min(KT, u1 - nx), KT, a.dk);
            d16_stage<DV>(Vs + (buf ^ 1) * KT * VST, vg + nx * vrs, vrs, min(KT, u1 - nx), KT, a.dv);
        }
        cp_commit();
        if (c0 >= uhi || nx <= ulo) continue;
        const bf16 *K = Ks + buf * KT * KST, *V = Vs + buf * KT * VST;
        const bool full = c0 >= ilo && nx <= ihi;

        float s[2][NT][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < DK / 16; ks++) {
            if (ks * 16 >= a.dk) break;
            uint32_t qa[2][4];
            d16_afrag<QST>(qa[0], qw + ks * 16, lane);
            d16_afrag<QST>(qa[1], qw + 16 * QST + ks * 16, lane);
#pragma unroll
            for (int n = 0; n < NT / 2; n++) {
                uint32_t kb[4];
                d16_bfrag_nk<KST>(kb, K + ks * 16, n, lane);
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    mma16(s[mt][2 * n], qa[mt], kb[0], kb[1]);
                    mma16(s[mt][2 * n + 1], qa[mt], kb[2], kb[3]);
                }
            }
        }
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            if (!full)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const int t = tr[mt][hf], lo = t >= 0 ? dense_lo(a, t) : 0, hi = t >= 0 ? dense_hi(a, t) : 0;
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const int key = c0 + nt * 8 + 2 * c + e;
                            if (key < lo || key >= hi) s[mt][nt][2 * hf + e] = -INFINITY;
                        }
                }
            float m2[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) m2[e >> 1] = fmaxf(m2[e >> 1], s[mt][nt][e]);
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                m2[hf] = fmaxf(m2[hf], __shfl_xor_sync(FULL_MASK, m2[hf], 1));
                m2[hf] = fmaxf(m2[hf], __shfl_xor_sync(FULL_MASK, m2[hf], 2));
            }
            float f[2], base[2];
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const float n2 = fmaxf(mx[mt][hf], m2[hf] * a.sl2);
                // a row with no visible key yet keeps max -inf: factor 1, exponents against 0 (all -inf)
                f[hf] = n2 == -INFINITY ? 1.0f : ex2(mx[mt][hf] - n2);
                base[hf] = n2 == -INFINITY ? 0.0f : n2;
                mx[mt][hf] = n2;
                l[mt][hf] *= f[hf];
            }
            if (__any_sync(FULL_MASK, f[0] != 1.0f || f[1] != 1.0f))
#pragma unroll
                for (int nd = 0; nd < DV / 8; nd++)
                    acc[mt][nd][0] *= f[0], acc[mt][nd][1] *= f[0], acc[mt][nd][2] *= f[1], acc[mt][nd][3] *= f[1];
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int hf = e >> 1;
                    s[mt][nt][e] = ex2(fmaf(s[mt][nt][e], a.sl2, -base[hf]));
                    l[mt][hf] += s[mt][nt][e];
                }
        }
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            uint32_t pa[2][4];
            d16_pack<NT>(pa[0], s[0], kk);
            d16_pack<NT>(pa[1], s[1], kk);
            const bf16 *vl = V + (kk * 16 + (lane / 8) % 2 * 8 + lane % 8) * VST + (lane / 16) * 8;
#pragma unroll
            for (int n = 0; n < DV / 16; n++) {
                if (n * 16 >= a.dv) break;
                uint32_t vb[4];
                ldsm16_x4_t(vb, vl + n * 16);
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    mma16(acc[mt][2 * n], pa[mt], vb[0], vb[1]);
                    mma16(acc[mt][2 * n + 1], pa[mt], vb[2], vb[3]);
                }
            }
        }
    }
    cp_wait<0>();
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            float ls = l[mt][hf];
            ls += __shfl_xor_sync(FULL_MASK, ls, 1);
            ls += __shfl_xor_sync(FULL_MASK, ls, 2);
            int t;
            long r;
            dense_row(a, b, j, rbase + w * 32 + mt * 16 + hf * 8 + g, t, r);
            if (t < 0) continue;
            // a row with no visible key gets o = 0 and lse = -inf, as on the CPU
            const float inv = ls > 0.0f ? 1.0f / ls : 0.0f;
            bf16 *orow = o + r * a.dv;
#pragma unroll
            for (int nd = 0; nd < DV / 8; nd++) {
                const int col = nd * 8 + 2 * c;
                if (col >= a.dv) break;
                *(__nv_bfloat162 *)(orow + col) =
                    __floats2bfloat162_rn(acc[mt][nd][2 * hf] * inv, acc[mt][nd][2 * hf + 1] * inv);
            }
            if (c == 0) lse[r] = ls > 0.0f ? (mx[mt][hf] + log2f(ls)) * LN2 : -INFINITY;
        }
}

// A thread's two rows of a dq tile (accumulator rows g and g + 8 of its warp's 16): token (-1: no gradient),
// (token, head) row, log2-scaled lse, D and visible keys [lo, hi); over the warp's rows, the union [ulo, uhi)
// and the intersection [ilo, ihi) of the visible keys.
typedef struct {
    int tr[2], lo[2], hi[2], ulo, uhi, ilo, ihi;
    long rr[2];
    float lb[2], Dn[2];
} d16_dq_rows;

static __device__ __forceinline__ void d16_dq_rows_of(const dense_args &a, int b, int j, long rho, const float *lse,
                                                      const float *D, d16_dq_rows &rw) {
    rw.ulo = INT_MAX, rw.uhi = INT_MIN, rw.ilo = INT_MIN, rw.ihi = INT_MAX;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        dense_row(a, b, j, rho + hf * 8, rw.tr[hf], rw.rr[hf]);
        // rows with lse = -inf saw no key: no gradient
        const float L = rw.tr[hf] >= 0 ? lse[rw.rr[hf]] : -INFINITY;
        if (L == -INFINITY) rw.tr[hf] = -1;
        const bool ok = rw.tr[hf] >= 0;
        rw.lb[hf] = ok ? L * LOG2E : 0.0f, rw.Dn[hf] = ok ? D[rw.rr[hf]] : 0.0f;
        rw.lo[hf] = ok ? dense_lo(a, rw.tr[hf]) : 0, rw.hi[hf] = ok ? dense_hi(a, rw.tr[hf]) : 0;
        if (ok)
            rw.ulo = min(rw.ulo, rw.lo[hf]), rw.uhi = max(rw.uhi, rw.hi[hf]), rw.ilo = max(rw.ilo, rw.lo[hf]),
            rw.ihi = min(rw.ihi, rw.hi[hf]);
    }
    rw.ulo = dense_warp_min(rw.ulo), rw.uhi = dense_warp_max(rw.uhi);
    rw.ilo = dense_warp_max(rw.ilo), rw.ihi = dense_warp_min(rw.ihi);
}

// dS = P (dP - D) in place of the dP accumulators of keys c0 .. c0 + 8 NT - 1 (all visible to the warp's rows
// when `full`), from the S accumulators (scores unscaled).
template <int NT>
static __device__ __forceinline__ void d16_dq_ds(float (&dp)[NT][4], const float (&s)[NT][4], const d16_dq_rows &rw,
                                                 int c0, bool full, float sl2, int c) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int key = c0 + nt * 8 + 2 * c + (e & 1), hf = e >> 1;
            const bool vis = full || (key >= rw.lo[hf] && key < rw.hi[hf]);
            dp[nt][e] = vis ? ex2(fmaf(s[nt][e], sl2, -rw.lb[hf])) * (dp[nt][e] - rw.Dn[hf]) : 0.0f;
        }
}

// The block's rows' dq as it stands into shared memory (rows of stride DK + 8: the 8 rows a store step reads
// fall in distinct banks), by cp.async once every product is done. d16_dq_store then adds from there: read
// from global memory, one load per column pair, the loads were waited for in turn (the compiler sinks them
// next to their stores), a quarter of the pooled-key dq pass's stall samples.
template <int DK>
static __device__ __forceinline__ void d16_dq_fetch(const dense_args &a, int b, int j, long rho0, bf16 *dst,
                                                    const bf16 *dq) {
    for (int e = threadIdx.x; e < DQ_ROWS * (DK / 8); e += D16_THREADS) {
        const int rr = e / (DK / 8), u = e % (DK / 8);
        int t;
        long r;
        dense_row(a, b, j, rho0 + rr, t, r);
        const bool in = t >= 0 && u * 8 < a.dk;
        cp16_b16(dst + rr * (DK + 8) + u * 8, in ? dq + r * a.dk + u * 8 : dq, in ? 16 : 0);
    }
    cp_commit();
    cp_wait<0>();
    __syncthreads();
}

// dq += scale * acc for the thread's two rows (warp w, lane group g), the current values from d16_dq_fetch.
template <int DK>
static __device__ __forceinline__ void d16_dq_store(const dense_args &a, const d16_dq_rows &rw,
                                                    const float (&acc)[DK / 8][4], int w, int g, int c,
                                                    const bf16 *cur, bf16 *dq) {
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        if (rw.tr[hf] < 0) continue;
        const bf16 *src = cur + (w * 16 + g + 8 * hf) * (DK + 8);
        bf16 *row = dq + rw.rr[hf] * a.dk;
#pragma unroll
        for (int nd = 0; nd < DK / 8; nd++) {
            const int col = nd * 8 + 2 * c;
            if (col >= a.dk) break;
            const float2 v = __bfloat1622float2(*(const __nv_bfloat162 *)(src + col));
            *(__nv_bfloat162 *)(row + col) =
                __floats2bfloat162_rn(v.x + a.scale * acc[nd][2 * hf], v.y + a.scale * acc[nd][2 * hf + 1]);
        }
    }
}

template <int DK, int DV>
static constexpr size_t d16_dq_bytes() {
    return ((size_t)DQ_ROWS * (DK + 8 + DV + 8) + 2 * (size_t)DQ_KT * (DK + 8 + DV + 8)) * sizeof(bf16);
}

// dq += scale * sum_m p_m (dout.v_m - D) k_m with p_m = exp(q.k_m*scale - lse).
template <int DK, int DV>
__global__ void __launch_bounds__(D16_THREADS, DQ_BLOCKS(DK))
d16_dq_kernel(dense_args a, int ntiles, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse, const float *D,
              const bf16 *dout, bf16 *dq) {
    constexpr int QST = DK + 8, OST = DV + 8, KST = DK + 8, VST = DV + 8, NT = DQ_KT / 8;
    extern __shared__ float4 smem4[];
    bf16 *Qs = (bf16 *)smem4, *Os = Qs + DQ_ROWS * QST, *Ks = Os + DQ_ROWS * OST, *Vs = Ks + 2 * DQ_KT * KST;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const int nbj = a.B * a.g, bj = blockIdx.x % nbj, j = bj % a.g, b = bj / a.g;
    const long rbase = (long)(ntiles - 1 - (int)(blockIdx.x / nbj)) * DQ_ROWS;
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const bf16 *kg = k + (long)b * a.nkeys * krs + (long)j * a.dk, *vg = v + (long)b * a.nkeys * vrs + (long)j * a.dv;

    d16_dq_rows rw;
    d16_dq_rows_of(a, b, j, rbase + w * 16 + g, lse, D, rw);
    const int ulo = rw.ulo, uhi = rw.uhi;
    const int u0 = dense_lo(a, (int)(rbase / a.G));
    const int u1 = dense_hi(a, (int)((min(rbase + DQ_ROWS, (long)a.T * a.G) - 1) / a.G));

    d16_stage_q<DK>(a, b, j, rbase, DQ_ROWS, Qs, q, a.dk);
    d16_stage_q<DV>(a, b, j, rbase, DQ_ROWS, Os, dout, a.dv);
    if (u0 < u1) {
        d16_stage<DK>(Ks, kg + u0 * krs, krs, min(DQ_KT, u1 - u0), DQ_KT, a.dk);
        d16_stage<DV>(Vs, vg + u0 * vrs, vrs, min(DQ_KT, u1 - u0), DQ_KT, a.dv);
    }
    cp_commit();

    float acc[DK / 8][4];
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;
    const bf16 *qw = Qs + w * 16 * QST, *ow = Os + w * 16 * OST;
    int buf = 0;
    for (int c0 = u0; c0 < u1; c0 += DQ_KT, buf ^= 1) {
        cp_wait<0>();
        __syncthreads();
        const int nx = c0 + DQ_KT;
        if (nx < u1) {
            d16_stage<DK>(Ks + (buf ^ 1) * DQ_KT * KST, kg + nx * krs, krs, min(DQ_KT, u1 - nx), DQ_KT, a.dk);
            d16_stage<DV>(Vs + (buf ^ 1) * DQ_KT * VST, vg + nx * vrs, vrs, min(DQ_KT, u1 - nx), DQ_KT, a.dv);
        }
        cp_commit();
        if (c0 >= uhi || nx <= ulo) continue;
        const bf16 *K = Ks + buf * DQ_KT * KST, *V = Vs + buf * DQ_KT * VST;
        const bool full = c0 >= rw.ilo && nx <= rw.ihi;

        float s[NT][4], dp[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < DK / 16; ks++) {
            if (ks * 16 >= a.dk) break;
            uint32_t qa[4];
            d16_afrag<QST>(qa, qw + ks * 16, lane);
#pragma unroll
            for (int n = 0; n < NT / 2; n++) {
                uint32_t kb[4];
                d16_bfrag_nk<KST>(kb, K + ks * 16, n, lane);
                mma16(s[2 * n], qa, kb[0], kb[1]);
                mma16(s[2 * n + 1], qa, kb[2], kb[3]);
            }
        }
#pragma unroll
        for (int ks = 0; ks < DV / 16; ks++) {
            if (ks * 16 >= a.dv) break;
            uint32_t oa[4];
            d16_afrag<OST>(oa, ow + ks * 16, lane);
#pragma unroll
            for (int n = 0; n < NT / 2; n++) {
                uint32_t vb[4];
                d16_bfrag_nk<VST>(vb, V + ks * 16, n, lane);
                mma16(dp[2 * n], oa, vb[0], vb[1]);
                mma16(dp[2 * n + 1], oa, vb[2], vb[3]);
            }
        }
        d16_dq_ds<NT>(dp, s, rw, c0, full, a.sl2, c);
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            uint32_t da[4];
            d16_pack<NT>(da, dp, kk);
            d16_mma_kn<DK / 8, KST>(acc, da, K + kk * 16 * KST, lane, a.dk);
        }
    }
    cp_wait<0>();
    __syncthreads();  // every warp is done with the tiles
    d16_dq_fetch<DK>(a, b, j, rbase, Qs, dq);
    d16_dq_store<DK>(a, rw, acc, w, g, c, Qs, dq);
}

// dq on Hopper by warpgroup MMA: the work of d16_dq_kernel, whose warps each read every K and V chunk from
// shared memory for their 16 rows. The block's 4 warps are one warpgroup holding the 64 rows as the M side:
// S = Q·K^T and dP = dout·V^T (m64n64k16, Q, dout, K and V swizzled tiles), then dq += dS·K (m64nDKk16, dS
// from registers, K read N-major), chunks of 64 keys. Head dims 64 or 128 (dk = dv). One chunk buffer, so that
// 3 blocks share a multiprocessor: the compressed branch's rows see few chunks (2 on average at T 16384, b 64),
// and a block spends most of its time loading its rows and adding its dq, which the other blocks overlap.
#define D16_WG_DQ_DIMS(DK, DV) ((DK) == (DV) && ((DK) == 64 || (DK) == 128))
#define DQW_KT 64  // keys per chunk
template <int DK, int DV>
struct d16_dqw_smem {
    static constexpr int QT = DQ_ROWS * DK * 2, OT = DQ_ROWS * DV * 2, KT = DQW_KT * DK * 2, VT = DQW_KT * DV * 2;
    static constexpr size_t BYTES = QT + OT + KT + VT + 1024;  // + the alignment slack
};

template <int DK, int DV>
__global__ void __launch_bounds__(D16_THREADS, 3)
d16_dq_wg_kernel(dense_args a, int ntiles, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                 const float *D, const bf16 *dout, bf16 *dq) {
#if ASA_WGMMA
    static_assert(D16_WG_DQ_DIMS(DK, DV), "the warpgroup dq pass holds head dims 64 or 128");
    using SM = d16_dqw_smem<DK, DV>;
    constexpr int NT = DQW_KT / 8;
    extern __shared__ float4 smem4[];
    char *Qs = (char *)(((uintptr_t)smem4 + 1023) & ~(uintptr_t)1023), *Os = Qs + SM::QT, *K = Os + SM::OT;
    char *V = K + SM::KT;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, c = lane % 4;
    const int nbj = a.B * a.g, bj = blockIdx.x % nbj, j = bj % a.g, b = bj / a.g;
    const long rbase = (long)(ntiles - 1 - (int)(blockIdx.x / nbj)) * DQ_ROWS;
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const bf16 *kg = k + (long)b * a.nkeys * krs + (long)j * a.dk, *vg = v + (long)b * a.nkeys * vrs + (long)j * a.dv;
    // the block's keys (the products are the warpgroup's: no warp skips a chunk alone)
    const int u0 = dense_lo(a, (int)(rbase / a.G));
    const int u1 = dense_hi(a, (int)((min(rbase + DQ_ROWS, (long)a.T * a.G) - 1) / a.G));
    d16_stage_q<DK, true>(a, b, j, rbase, DQ_ROWS, (bf16 *)Qs, q, a.dk);
    d16_stage_q<DV, true>(a, b, j, rbase, DQ_ROWS, (bf16 *)Os, dout, a.dv);
    if (u0 < u1) {
        stage_sw<DK, D16_THREADS>(K, kg + u0 * krs, krs, min(DQW_KT, u1 - u0), DQW_KT);
        stage_sw<DV, D16_THREADS>(V, vg + u0 * vrs, vrs, min(DQW_KT, u1 - u0), DQW_KT);
    }
    cp_commit();
    d16_dq_rows rw;  // after the copies are issued: its loads of lse and D overlap them
    d16_dq_rows_of(a, b, j, rbase + w * 16 + lane / 4, lse, D, rw);

    float acc[DK / 8][4];
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;
    for (int c0 = u0; c0 < u1; c0 += DQW_KT) {
        const int nx = c0 + DQW_KT;
        if (c0 > u0) {
            __syncthreads();  // every product of the last chunk is done
            stage_sw<DK, D16_THREADS>(K, kg + c0 * krs, krs, min(DQW_KT, u1 - c0), DQW_KT);
            stage_sw<DV, D16_THREADS>(V, vg + c0 * vrs, vrs, min(DQW_KT, u1 - c0), DQW_KT);
            cp_commit();
        }
        cp_wait<0>();
        fence_proxy_async();  // cp.async wrote the tiles; wgmma reads them through the async proxy
        __syncthreads();
        float s[NT][4], dp[NT][4];
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < DK / 16; kk++)
            wg_m64n64_ss(s, wg_desc_k(Qs, DQ_ROWS, kk), wg_desc_k(K, DQW_KT, kk), kk > 0);
#pragma unroll
        for (int kk = 0; kk < DV / 16; kk++)
            wg_m64n64_ss(dp, wg_desc_k(Os, DQ_ROWS, kk), wg_desc_k(V, DQW_KT, kk), kk > 0);
        wg_commit();
        wg_wait();
        wg_hold<NT>(s), wg_hold<NT>(dp);
        d16_dq_ds<NT>(dp, s, rw, c0, c0 >= rw.ilo && nx <= rw.ihi, a.sl2, c);
        uint32_t da[NT / 2][4];
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) d16_pack<NT>(da[kk], dp, kk);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            if constexpr (DK == 128) wg_m64n128_rs(acc, da[kk], wg_desc_n(K, DQW_KT, kk));
            else wg_m64n64_rs(acc, da[kk], wg_desc_n(K, DQW_KT, kk));
        }
        wg_commit();
        wg_wait();
        wg_hold<DK / 8>(acc);
    }
    cp_wait<0>();
    __syncthreads();  // every warp is done with the tiles
    d16_dq_fetch<DK>(a, b, j, rbase, (bf16 *)Qs, dq);
    d16_dq_store<DK>(a, rw, acc, w, lane / 4, c, (const bf16 *)Qs, dq);
#else
    __trap();  // launched only on Hopper
#endif
}

template <int DK, int DV>
static constexpr size_t d16_kv_bytes() {
    return (size_t)KV_KEYS * (DK + 8 + DV + 8) * sizeof(bf16) +
           2 * ((size_t)KV_RT(DK) * (DK + 8 + DV + 8) * sizeof(bf16) + 3 * KV_RT(DK) * sizeof(float));
}

// Rows rho0 .. rho0 + RT - 1 of group j's stream (those < rend): q and dout into Qc, Oc (rows of stride D + 8
// or, with SW, swizzled tiles); log2-scaled lse, D and the token (-1 for padding and rows with no visible key:
// they add nothing) into Lb, Db, Tb.
template <int DK, int DV, int RT = KV_RT(DK), bool SW = false>
static __device__ __forceinline__ void d16_stage_rows(const dense_args &a, int b, int j, long rho0, long rend,
                                                      const bf16 *q, const bf16 *dout, const float *lse,
                                                      const float *D, bf16 *Qc, bf16 *Oc, float *Lb, float *Db,
                                                      int *Tb) {
    constexpr int TPR = D16_THREADS / RT;  // threads per row
    const int rr = threadIdx.x / TPR;
    int t = -1;
    long r = 0;
    if (rho0 + rr < rend) dense_row(a, b, j, rho0 + rr, t, r);
#pragma unroll
    for (int s = threadIdx.x % TPR; s < DK / 8; s += TPR) {
        const bool in = t >= 0 && s * 8 < a.dk;
        bf16 *p = SW ? (bf16 *)((char *)Qc + sw128_off(RT, rr, s)) : Qc + rr * (DK + 8) + s * 8;
        cp16_b16(p, in ? q + r * a.dk + s * 8 : q, in ? 16 : 0);
    }
#pragma unroll
    for (int s = threadIdx.x % TPR; s < DV / 8; s += TPR) {
        const bool in = t >= 0 && s * 8 < a.dv;
        bf16 *p = SW ? (bf16 *)((char *)Oc + sw128_off(RT, rr, s)) : Oc + rr * (DV + 8) + s * 8;
        cp16_b16(p, in ? dout + r * a.dv + s * 8 : dout, in ? 16 : 0);
    }
    if (threadIdx.x % TPR == 0) {
        const float L = t >= 0 ? lse[r] : -INFINITY;
        Tb[rr] = L == -INFINITY ? -1 : t;
        Lb[rr] = L == -INFINITY ? 0.0f : L * LOG2E;
        Db[rr] = L == -INFINITY ? 0.0f : D[r];
    }
}

// P^T and dS^T in place of the S^T and dP^T accumulators (key rows g / g+8, chunk rows 2c, 2c+1 of n-tile n):
// keys p0 and p1 are visible to tokens [qlo0, qhi0) and [qlo1, qhi1).
template <int NR>
static __device__ __forceinline__ void d16_dkdv_probs(float (&st)[NR][4], float (&dpt)[NR][4], const float *Lb,
                                                      const float *Db, const int *Tb, int qlo0, int qhi0, int qlo1,
                                                      int qhi1, float sl2, int c) {
#pragma unroll
    for (int n = 0; n < NR; n++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int ri = n * 8 + 2 * c + e, tt = Tb[ri];
            const float L = Lb[ri], Dr = Db[ri];
            // t = -1 (padding, no visible key) fails t >= qlo, as qlo >= 0
            const float pa = tt >= qlo0 && tt < qhi0 ? ex2(fmaf(st[n][e], sl2, -L)) : 0.0f;
            const float pb = tt >= qlo1 && tt < qhi1 ? ex2(fmaf(st[n][2 + e], sl2, -L)) : 0.0f;
            st[n][e] = pa, st[n][2 + e] = pb;
            dpt[n][e] = pa * (dpt[n][e] - Dr), dpt[n][2 + e] = pb * (dpt[n][2 + e] - Dr);
        }
}

// A dk/dv block's sums for keys p0 (accumulator rows g) and p1 (g + 8): added into dk / dv, or with nsplit > 1
// stored as split sp's partial sums (dk's scaled) in `part` for dense_split_sum_kernel.
template <int DK, int DV>
static __device__ __forceinline__ void d16_dkdv_store(const dense_args &a, int nsplit, int sp, int b, int j, int p0,
                                                      int p1, int c, const float (&ak)[DK / 8][4],
                                                      const float (&av)[DV / 8][4], float *part, bf16 *dk,
                                                      bf16 *dv) {
    const long o0 = ((long)b * a.nkeys + p0) * a.g + j, o1 = ((long)b * a.nkeys + p1) * a.g + j;
    const bool w0 = p0 < a.nkeys, w1 = p1 < a.nkeys;
    if (nsplit > 1) {
        const int W = a.dk + a.dv;
        float *pp = part + (long)sp * a.B * a.nkeys * a.g * W;
#pragma unroll
        for (int nd = 0; nd < DK / 8; nd++) {
            const int col = nd * 8 + 2 * c;
            if (col >= a.dk) break;
            if (w0) *(float2 *)(pp + o0 * W + col) = make_float2(a.scale * ak[nd][0], a.scale * ak[nd][1]);
            if (w1) *(float2 *)(pp + o1 * W + col) = make_float2(a.scale * ak[nd][2], a.scale * ak[nd][3]);
        }
#pragma unroll
        for (int nd = 0; nd < DV / 8; nd++) {
            const int col = nd * 8 + 2 * c;
            if (col >= a.dv) break;
            if (w0) *(float2 *)(pp + o0 * W + a.dk + col) = make_float2(av[nd][0], av[nd][1]);
            if (w1) *(float2 *)(pp + o1 * W + a.dk + col) = make_float2(av[nd][2], av[nd][3]);
        }
        return;
    }
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) {
        const int col = nd * 8 + 2 * c;
        if (col >= a.dk) break;
        if (w0) d16_acc2(dk + o0 * a.dk + col, a.scale * ak[nd][0], a.scale * ak[nd][1]);
        if (w1) d16_acc2(dk + o1 * a.dk + col, a.scale * ak[nd][2], a.scale * ak[nd][3]);
    }
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) {
        const int col = nd * 8 + 2 * c;
        if (col >= a.dv) break;
        if (w0) d16_acc2(dv + o0 * a.dv + col, av[nd][0], av[nd][1]);
        if (w1) d16_acc2(dv + o1 * a.dv + col, av[nd][2], av[nd][3]);
    }
}

// A dk/dv block's share of the pass: KV_KEYS keys from mfirst (cnk of them) of group j, sequence b, and the
// rows [i0, i1) of split sp of the rows that see them. The splits cut a sequence's (query, head) rows at the
// same places for every key block, and the blocks of one split run together (key blocks fastest), so that
// they read the same rows, from L2 after the first; a block whose rows all lie before its keys' first query
// has none (its partial sums are zeros).
typedef struct {
    int sp, j, b, mfirst, cnk;
    long i0, i1;
} d16_kv_share;

static __device__ __forceinline__ d16_kv_share d16_kv_share_of(const dense_args &a, int nsplit) {
    d16_kv_share p;
    const int nmb = (a.nkeys + KV_KEYS - 1) / KV_KEYS, nbj = a.B * a.g;
    const int mb = blockIdx.x % nmb, bj = blockIdx.x / nmb % nbj;
    p.sp = blockIdx.x / nmb / nbj, p.j = bj % a.g, p.b = bj / a.g;
    p.mfirst = mb * KV_KEYS, p.cnk = min(KV_KEYS, a.nkeys - p.mfirst);
    const long rows = (long)a.T * a.G, ch = (rows + nsplit - 1) / nsplit;
    const long rho0 = (long)dense_qlo(a, p.mfirst) * a.G, rend = (long)dense_qhi(a, p.mfirst + p.cnk - 1) * a.G;
    p.i0 = max(rho0, p.sp * ch), p.i1 = min(rend, (p.sp + 1) * ch);
    return p;
}

// dk / dv of KV_KEYS keys of group j from split sp of the rows that see them. With nsplit > 1 every split
// stores its partial sums (dk's scaled) in `part` for dense_split_sum_kernel.
template <int DK, int DV>
__global__ void __launch_bounds__(D16_THREADS, 2)
d16_dkdv_kernel(dense_args a, int nsplit, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                const float *D, const bf16 *dout, bf16 *dk, bf16 *dv, float *part) {
    constexpr int KST = DK + 8, VST = DV + 8, RT = KV_RT(DK), NR = RT / 8;
    constexpr int CHUNK = RT * (KST + VST) * (int)sizeof(bf16) + 3 * RT * (int)sizeof(float);  // bytes
    extern __shared__ float4 smem4[];
    bf16 *Ks = (bf16 *)smem4, *Vs = Ks + KV_KEYS * KST;
    char *cb = (char *)(Vs + KV_KEYS * VST);
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const d16_kv_share p = d16_kv_share_of(a, nsplit);
    const int sp = p.sp, j = p.j, b = p.b, mfirst = p.mfirst, cnk = p.cnk;
    const long i0 = p.i0, i1 = p.i1;
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const long kr0 = ((long)b * a.nkeys + mfirst) * a.g + j;  // key row mfirst of group j, in units of heads
    d16_stage<DK>(Ks, k + kr0 * a.dk, krs, cnk, KV_KEYS, a.dk);
    d16_stage<DV>(Vs, v + kr0 * a.dv, vrs, cnk, KV_KEYS, a.dv);
    const int p0 = mfirst + w * 16 + g, p1 = p0 + 8;  // this thread's keys (accumulator rows g, g+8)
    const int qlo0 = dense_qlo(a, p0), qhi0 = p0 < a.nkeys ? dense_qhi(a, p0) : 0;
    const int qlo1 = dense_qlo(a, p1), qhi1 = p1 < a.nkeys ? dense_qhi(a, p1) : 0;
#define D16_CHUNK_PTRS(bufi)                                                                                  \
    bf16 *Qc = (bf16 *)(cb + (bufi) * CHUNK), *Oc = Qc + RT * KST;                                          \
    float *Lb = (float *)(Oc + RT * VST), *Db = Lb + RT;                                                  \
    int *Tb = (int *)(Db + RT)
    if (i0 < i1) {
        D16_CHUNK_PTRS(0);
        d16_stage_rows<DK, DV>(a, b, j, i0, i1, q, dout, lse, D, Qc, Oc, Lb, Db, Tb);
    }
    cp_commit();

    float ak[DK / 8][4], av[DV / 8][4];
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) ak[nd][0] = ak[nd][1] = ak[nd][2] = ak[nd][3] = 0.0f;
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) av[nd][0] = av[nd][1] = av[nd][2] = av[nd][3] = 0.0f;
    const bf16 *kw = Ks + w * 16 * KST, *vw = Vs + w * 16 * VST;
    int buf = 0;
    for (long x0 = i0; x0 < i1; x0 += RT, buf ^= 1) {
        cp_wait<0>();
        __syncthreads();
        if (x0 + RT < i1) {
            D16_CHUNK_PTRS(buf ^ 1);
            d16_stage_rows<DK, DV>(a, b, j, x0 + RT, i1, q, dout, lse, D, Qc, Oc, Lb, Db, Tb);
        }
        cp_commit();
        D16_CHUNK_PTRS(buf);
        float st[NR][4], dpt[NR][4];
#pragma unroll
        for (int n = 0; n < NR; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) st[n][e] = dpt[n][e] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < DK / 16; ks++) {
            if (ks * 16 >= a.dk) break;
            uint32_t ka[4];
            d16_afrag<KST>(ka, kw + ks * 16, lane);
#pragma unroll
            for (int n = 0; n < NR / 2; n++) {
                uint32_t qb[4];
                d16_bfrag_nk<KST>(qb, Qc + ks * 16, n, lane);
                mma16(st[2 * n], ka, qb[0], qb[1]);
                mma16(st[2 * n + 1], ka, qb[2], qb[3]);
            }
        }
#pragma unroll
        for (int ks = 0; ks < DV / 16; ks++) {
            if (ks * 16 >= a.dv) break;
            uint32_t va[4];
            d16_afrag<VST>(va, vw + ks * 16, lane);
#pragma unroll
            for (int n = 0; n < NR / 2; n++) {
                uint32_t ob[4];
                d16_bfrag_nk<VST>(ob, Oc + ks * 16, n, lane);
                mma16(dpt[2 * n], va, ob[0], ob[1]);
                mma16(dpt[2 * n + 1], va, ob[2], ob[3]);
            }
        }
        d16_dkdv_probs<NR>(st, dpt, Lb, Db, Tb, qlo0, qhi0, qlo1, qhi1, a.sl2, c);
#pragma unroll
        for (int kk = 0; kk < NR / 2; kk++) {
            uint32_t pa[4], da[4];
            d16_pack<NR>(pa, st, kk);
            d16_mma_kn<DV / 8, VST>(av, pa, Oc + kk * 16 * VST, lane, a.dv);
            d16_pack<NR>(da, dpt, kk);
            d16_mma_kn<DK / 8, KST>(ak, da, Qc + kk * 16 * KST, lane, a.dk);
        }
    }
#undef D16_CHUNK_PTRS
    cp_wait<0>();
    d16_dkdv_store<DK, DV>(a, nsplit, sp, b, j, p0, p1, c, ak, av, part, dk, dv);
}

// dk / dv on Hopper by warpgroup MMA: the work and order of d16_dkdv_kernel, with the products of the
// selected branch's pass (wg_dkdv_scores, wg_dkdv_accumulate): each staged chunk of rows is read once for all
// 64 keys, the rows staged STAGES - 1 chunks ahead.
template <int DK, int DV, int NR, int STAGES>
__global__ void __launch_bounds__(D16_THREADS, 2)
d16_dkdv_wg_kernel(dense_args a, int nsplit, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                   const float *D, const bf16 *dout, bf16 *dk, bf16 *dv, float *part) {
#if ASA_WGMMA
    using SM = wg_dkdv_smem<DK, DV, NR, STAGES>;
    constexpr int NT = NR / 8;
    extern __shared__ float4 smem4[];
    char *Ks = (char *)(((uintptr_t)smem4 + 1023) & ~(uintptr_t)1023), *Vs = Ks + KV_KEYS * SM::KP * 2;
    char *Qb = Ks + SM::KV;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const d16_kv_share p = d16_kv_share_of(a, nsplit);
    const int sp = p.sp, j = p.j, b = p.b, mfirst = p.mfirst, cnk = p.cnk;
    const long i0 = p.i0, i1 = p.i1;
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const long kr0 = ((long)b * a.nkeys + mfirst) * a.g + j;  // key row mfirst of group j, in units of heads
    stage_sw<DK, D16_THREADS>(Ks, k + kr0 * a.dk, krs, cnk, KV_KEYS);
    stage_sw<DV, D16_THREADS>(Vs, v + kr0 * a.dv, vrs, cnk, KV_KEYS);
    const int p0 = mfirst + w * 16 + g, p1 = p0 + 8;  // this thread's keys (accumulator rows g, g+8)
    const int qlo0 = dense_qlo(a, p0), qhi0 = p0 < a.nkeys ? dense_qhi(a, p0) : 0;
    const int qlo1 = dense_qlo(a, p1), qhi1 = p1 < a.nkeys ? dense_qhi(a, p1) : 0;
#define D16_WG_STAGE(x)                                                                                      \
    bf16 *Qc = (bf16 *)(Qb + (x) * SM::STAGE), *Oc = (bf16 *)((char *)Qc + SM::QB);                        \
    float *Lb = (float *)((char *)Oc + SM::OB), *Db = Lb + NR;                                             \
    int *Tb = (int *)(Db + NR)
    // chunk x goes to stage x % STAGES; its commit group is the x-th (K and V ride with chunk 0)
#pragma unroll
    for (int x = 0; x < STAGES - 1; x++) {
        if (i0 + (long)x * NR < i1) {
            D16_WG_STAGE(x);
            d16_stage_rows<DK, DV, NR, true>(a, b, j, i0 + (long)x * NR, i1, q, dout, lse, D, Qc, Oc, Lb, Db, Tb);
        }
        cp_commit();
    }
    float ak[DK / 8][4], av[DV / 8][4];
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) ak[nd][0] = ak[nd][1] = ak[nd][2] = ak[nd][3] = 0.0f;
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) av[nd][0] = av[nd][1] = av[nd][2] = av[nd][3] = 0.0f;
    for (long ci = 0; i0 + ci * NR < i1; ci++) {
        const long nx = ci + STAGES - 1;  // into the stage freed at the end of the last iteration
        if (i0 + nx * NR < i1) {
            D16_WG_STAGE(nx % STAGES);
            d16_stage_rows<DK, DV, NR, true>(a, b, j, i0 + nx * NR, i1, q, dout, lse, D, Qc, Oc, Lb, Db, Tb);
        }
        cp_commit();
        cp_wait<STAGES - 1>();
        fence_proxy_async();
        __syncthreads();
        D16_WG_STAGE(ci % STAGES);
        float st[NT][4], dpt[NT][4];
        wg_dkdv_scores<DK, DV, NR>(st, dpt, Ks, Vs, (const char *)Qc, (const char *)Oc);
        d16_dkdv_probs<NT>(st, dpt, Lb, Db, Tb, qlo0, qhi0, qlo1, qhi1, a.sl2, c);
        uint32_t pf[NT / 2][4], sf[NT / 2][4];
#pragma unroll
        for (int ks = 0; ks < NT / 2; ks++) d16_pack<NT>(pf[ks], st, ks), d16_pack<NT>(sf[ks], dpt, ks);
        wg_dkdv_accumulate<DK, DV, NR>(ak, av, pf, sf, (const char *)Qc, (const char *)Oc);
        __syncthreads();  // the stage is refilled next iteration
    }
#undef D16_WG_STAGE
    cp_wait<0>();
    d16_dkdv_store<DK, DV>(a, nsplit, sp, b, j, p0, p1, c, ak, av, part, dk, dv);
#else
    __trap();  // launched only on Hopper
#endif
}

// The instantiated head-dim pairs: 64/64, 96/64 (ASA's local layers), 128/128, 160/128 (the compressed branch
// of asa-340M's G layers: latent 128 + RoPE 32); smaller dims are zero-padded.
#define D16_WITH_DIMS(dk, dv, ...)                 \
    do {                                           \
        if ((dk) <= 64 && (dv) <= 64) {            \
            constexpr int DK = 64, DV = 64;        \
            __VA_ARGS__;                           \
        } else if ((dk) <= 96 && (dv) <= 64) {     \
            constexpr int DK = 96, DV = 64;        \
            __VA_ARGS__;                           \
        } else if ((dk) <= 128 && (dv) <= 128) {   \
            constexpr int DK = 128, DV = 128;      \
            __VA_ARGS__;                           \
        } else {                                   \
            constexpr int DK = 160, DV = 128;      \
            __VA_ARGS__;                           \
        }                                          \
    } while (0)

bool cuda_dense16_ok(const asa_backend *be, const asa_attn_shape *s, const void *const *ptr, int n) {
    if (be->act != ASA_BF16 || s->dk <= 0 || s->dv <= 0 || s->dk % 8 || s->dv % 8 || s->dk > 160 || s->dv > 128)
        return false;
    for (int i = 0; i < n; i++)
        if ((uintptr_t)ptr[i] % 16) return false;
    return true;
}

void cuda_dense16_fwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                      const void *k, const void *v, void *o, float *lse) {
    (void)be;
    const dense_args a = dense_args_make(s, nkeys, span, window);
    const long ntiles = ((long)a.T * a.G + F_ROWS - 1) / F_ROWS, blocks = (long)a.B * a.g * ntiles;
    if (blocks == 0) return;
    D16_WITH_DIMS(a.dk, a.dv, {
        const size_t smem = d16_fwd_bytes<DK, DV>();
        attn_allow_smem((const void *)d16_fwd_kernel<DK, DV>, smem);
        d16_fwd_kernel<DK, DV><<<(unsigned)blocks, D16_THREADS, smem>>>(a, (int)ntiles, (const bf16 *)q,
                                                                        (const bf16 *)k, (const bf16 *)v,
                                                                        (bf16 *)o, lse);
    });
    CUDA_LAUNCH_CHECK();
}

bool cuda_dense16_bwd_wg(asa_backend *be, const asa_attn_shape *s) {
    return cuda_ctx_of(be)->use_tma && D16_WG_DQ_DIMS(s->dk, s->dv);
}

void cuda_dense16_bwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                      const void *k, const void *v, const void *o, const float *lse, const void *dout,
                      const float *drow, void *dq, void *dk, void *dv) {
    const dense_args a = dense_args_make(s, nkeys, span, window);
    const long rows = (long)a.B * a.T * a.h;
    if (rows == 0) return;
    // Few key blocks (the compressed branch): split each one's rows.
    const dense_bwd_plan pl = dense_bwd_plan_make(be, s, nkeys, KV_KEYS, KV_TARGET_BLOCKS, KV_MIN_ROWS);
    const float *D = cuda_attn_drow(be, drow, dout, o, rows, a.dv, pl.D);

    const bf16 *q16 = (const bf16 *)q, *k16 = (const bf16 *)k, *v16 = (const bf16 *)v, *do16 = (const bf16 *)dout;
    const long ntiles = ((long)a.T * a.G + DQ_ROWS - 1) / DQ_ROWS, qblocks = (long)a.B * a.g * ntiles;
    // Hopper: the warpgroup kernels for the head dims they hold (exactly: padded columns would cost products)
    const bool hopper = cuda_ctx_of(be)->use_tma;
    // dq and dk/dv side by side, as in cuda_slc16_bwd (the compressed backward at T 16384 1.59 -> 1.53 ms)
    const bool fork = pl.kblocks > 0;
    if (fork) cuda_fork(be);
    const cudaStream_t sq = fork ? cuda_ctx_of(be)->side[1] : 0, sk = fork ? cuda_ctx_of(be)->side[0] : 0;
    D16_WITH_DIMS(a.dk, a.dv, {
        if (cuda_dense16_bwd_wg(be, s)) {
            constexpr int WK = D16_WG_DQ_DIMS(DK, DV) ? DK : 64, WV = D16_WG_DQ_DIMS(DK, DV) ? DV : 64;
            const size_t smem = d16_dqw_smem<WK, WV>::BYTES;
            attn_allow_smem((const void *)d16_dq_wg_kernel<WK, WV>, smem);
            d16_dq_wg_kernel<WK, WV><<<(unsigned)qblocks, D16_THREADS, smem, sq>>>(a, (int)ntiles, q16, k16, v16,
                                                                                   lse, D, do16, (bf16 *)dq);
        } else {
            const size_t smem = d16_dq_bytes<DK, DV>();
            attn_allow_smem((const void *)d16_dq_kernel<DK, DV>, smem);
            d16_dq_kernel<DK, DV><<<(unsigned)qblocks, D16_THREADS, smem, sq>>>(a, (int)ntiles, q16, k16, v16, lse,
                                                                                D, do16, (bf16 *)dq);
        }
    });
    CUDA_LAUNCH_CHECK();
    if (pl.kblocks == 0) return;
    const unsigned kgrid = (unsigned)(pl.kblocks * pl.nsplit);
    D16_WITH_DIMS(a.dk, a.dv, {
        if (hopper && WG_DKDV_DIMS(a.dk, a.dv)) {
            constexpr bool WG = WG_DKDV_DIMS(DK, DV);
            constexpr int WK = WG ? DK : 64, WV = WG ? DV : 64, NR = WG_DKDV_NR(WK), ST = WG_DKDV_STAGES(WK);
            const size_t smem = wg_dkdv_smem<WK, WV, NR, ST>::BYTES;
            attn_allow_smem((const void *)d16_dkdv_wg_kernel<WK, WV, NR, ST>, smem);
            d16_dkdv_wg_kernel<WK, WV, NR, ST><<<kgrid, D16_THREADS, smem, sk>>>(
                a, pl.nsplit, q16, k16, v16, lse, D, do16, (bf16 *)dk, (bf16 *)dv, pl.part);
        } else {
            const size_t smem = d16_kv_bytes<DK, DV>();
            attn_allow_smem((const void *)d16_dkdv_kernel<DK, DV>, smem);
            d16_dkdv_kernel<DK, DV><<<kgrid, D16_THREADS, smem, sk>>>(a, pl.nsplit, q16, k16, v16, lse, D, do16,
                                                                      (bf16 *)dk, (bf16 *)dv, pl.part);
        }
    });
    CUDA_LAUNCH_CHECK();
    dense_split_sum(a, pl, (bf16 *)dk, (bf16 *)dv, sk);
    if (fork) cuda_join(be);
}
