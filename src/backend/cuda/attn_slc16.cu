// Selected attention (SPEC §4) on bf16 tensor cores, for the bf16 mode: mma.sync m16n8k16 on bf16 operands
// with fp32 accumulation; softmax, masks, lse and every sum in fp32. The probabilities P and dS enter their
// products rounded to bf16 (as in FlashAttention-2); everything else the products read is stored bf16 already.
//
// The work split is that of attn_slc_mma.cu (its top comment): forward and dq give a block the R·G query rows
// sharing one block list (anchor a, group j), padded to m-tiles of 16 rows, at most 4 m-tiles per block, and
// stage each selected KV block once for all of them; dk / dv give a block 64 keys of one selection block and
// stream the rows of the anchors that listed it, through the inverted lists (CSR, cut into segments whose
// partial sums are added in segment order). No atomics, fixed summation orders: deterministic.
//
// Shared tiles are bf16 rows of D + 8 elements, filled by cp.async (16 bytes at a time, zeros past the end)
// with the next chunk in flight. A row is D/8 + 1 16-byte units, an odd number, so the 8 rows an ldmatrix
// phase reads fall in 8 distinct units of a 128-byte line: no bank conflicts. Operand roles (attn_mma16.cuh
// gives the fragment layouts): a [key][dim] tile is the B operand of a product over dims (S = Q·K^T, read
// by plain ldmatrix) and of one over keys (O = P·V, dq = dS·K: ldmatrix.trans). The accumulators of S are,
// once packed, the A fragments of P, so P·V needs no shuffles. Scores are in base 2 (scale·log2 e folded in).
#include "backend/cuda/attn_mma16.cuh"
#include "backend/cuda/attn_mma_common.cuh"
#include "backend/cuda/attn_slc16.cuh"
#include "backend/cuda/attn_slc_lists.cuh"

#define S16_KT 64  // keys per staged chunk (forward, dq)
#define S16_NR 32  // query rows per staged chunk of the dk/dv pass
// Blocks per multiprocessor the dq and dk/dv kernels' registers are fitted to: 3 where that spills only a
// few registers (head dims up to 128, one m-tile), which measured faster than 2 unspilled blocks.
#define S16_BWD_BLOCKS(DK, MT) ((DK) <= 128 && (MT) == 1 ? 3 : 2)

// Rows [0, cn) of a [*, d] operand (row r at src + r*srs) into nrows shared rows of D + 8 bf16; columns >= d
// and rows >= cn become zeros, so padded products add nothing.
template <int D>
static __device__ __forceinline__ void s16_stage(bf16 *dst, const bf16 *src, long srs, int cn, int nrows, int d) {
    constexpr int SEG = D / 8;
    for (int e = threadIdx.x; e < nrows * SEG; e += SLC_WARPS * 32) {
        const int r = e / SEG, c = (e % SEG) * 8;
        const bool in = r < cn && c < d;
        cp16_b16(dst + r * (D + 8) + c, in ? src + r * srs + c : src, in ? 16 : 0);
    }
}

// A fragments of rows r0 and r1 of x [*, d] (16 x D; columns >= d and rows not ok are zeros).
template <int D>
static __device__ __forceinline__ void s16_load_rows(uint32_t (&f)[D / 16][4], const bf16 *x, long r0, long r1,
                                                     bool ok0, bool ok1, int d, int c) {
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        const int c0 = kk * 16 + 2 * c, c1 = c0 + 8;
        f[kk][0] = ok0 && c0 < d ? *(const uint32_t *)(x + (r0 * d + c0)) : 0u;
        f[kk][1] = ok1 && c0 < d ? *(const uint32_t *)(x + (r1 * d + c0)) : 0u;
        f[kk][2] = ok0 && c1 < d ? *(const uint32_t *)(x + (r0 * d + c1)) : 0u;
        f[kk][3] = ok1 && c1 < d ? *(const uint32_t *)(x + (r1 * d + c1)) : 0u;
    }
}

// s = X·Y^T for NT n-tiles: X (16 rows) in registers as A fragments, Y's NT*8 rows from shared memory
// (Y points at the first, row stride D + 8), two n-tiles per ldmatrix.
template <int D, int NT>
static __device__ __forceinline__ void s16_rowprod(float (&s)[NT][4], const uint32_t (&xf)[D / 16][4], const bf16 *Y,
                                                   int d, int lane) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
    const bf16 *yr = Y + ((lane / 16) * 8 + lane % 8) * (D + 8) + (lane / 8 % 2) * 8;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        if (kk * 16 >= d) break;
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            uint32_t y[4];
            ldsm16_x4(y, yr + np * 16 * (D + 8) + kk * 16);
            mma16(s[2 * np], xf[kk], y[0], y[1]);
            mma16(s[2 * np + 1], xf[kk], y[2], y[3]);
        }
    }
}

// acc += P·Y: P (16 x NT*8, the packed accumulators of NT n-tiles) in registers, Y's NT*8 rows [*, D] from
// shared memory (Y points at the first, row stride D + 8) as B fragments by ldmatrix.trans.
template <int D, int NT>
static __device__ __forceinline__ void s16_pv(float (&acc)[D / 8][4], const uint32_t (&pf)[NT / 2][4], const bf16 *Y,
                                              int d, int lane) {
    const bf16 *yr = Y + ((lane / 8 % 2) * 8 + lane % 8) * (D + 8) + (lane / 16) * 8;
#pragma unroll
    for (int s = 0; s < NT / 2; s++) {
#pragma unroll
        for (int np = 0; np < D / 16; np++) {
            if (np * 16 >= d) break;
            uint32_t y[4];
            ldsm16_x4_t(y, yr + s * 16 * (D + 8) + np * 16);
            mma16(acc[2 * np], pf[s], y[0], y[1]);
            mma16(acc[2 * np + 1], pf[s], y[2], y[3]);
        }
    }
}

// The A fragment entries of n-tile nt's accumulator pair (x0, x1) of row g and (x2, x3) of row g+8.
template <int NT>
static __device__ __forceinline__ void s16_pack(uint32_t (&pf)[NT / 2][4], int nt, float x0, float x1, float x2,
                                                float x3) {
    pf[nt / 2][(nt % 2) * 2] = pack_bf16(x0, x1);
    pf[nt / 2][(nt % 2) * 2 + 1] = pack_bf16(x2, x3);
}

// TMA tiles (the forward and dq on Hopper, head dims 64 or 128, or dk 160 with dv 128: three key boxes, the
// last half read): a chunk's 64 key (or value) rows as whole boxes of 64 columns (the last box of a head
// reaches into the next head's columns or the map's zero fill, never multiplied), each box row 128 bytes
// whose 16-byte units the 128-byte swizzle permutes: unit u of
// row r sits at u ^ (r % 8). As with the padded rows of the cp.async tiles, the 8 rows an ldmatrix phase
// reads then fall in 8 distinct bank groups. One request per box, counted on the buffer's mbarrier.
#define S16_BOX_BYTES (S16_KT * 128)
#define S16_TMA_DIMS(DK, DV) (((DK) == (DV) && ((DK) == 64 || (DK) == 128)) || ((DK) == 160 && (DV) == 128))

static __device__ __forceinline__ const bf16 *s16_sw(const bf16 *tile, int r, int col) {
    return (const bf16 *)((const char *)tile + sw128_off(S16_KT, r, col / 8));
}

// s16_rowprod and s16_pv over TMA tiles: Y is the tile, row0 the first of the warp's rows. Kept apart from
// those two: one template for both layouts (with their bound on the run-time head dim) made the TMA forward
// 25% slower at T 65536 on an H100 (17.9 -> 22.4 ms).
template <int D, int NT>
static __device__ __forceinline__ void s16_rowprod_sw(float (&s)[NT][4], const uint32_t (&xf)[D / 16][4], const bf16 *Y,
                                                      int row0, int lane) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
    const int r = row0 + (lane / 16) * 8 + lane % 8, cb = (lane / 8 % 2) * 8;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            uint32_t y[4];
            ldsm16_x4(y, s16_sw(Y, r + np * 16, kk * 16 + cb));
            mma16(s[2 * np], xf[kk], y[0], y[1]);
            mma16(s[2 * np + 1], xf[kk], y[2], y[3]);
        }
    }
}
template <int D, int NT>
static __device__ __forceinline__ void s16_pv_sw(float (&acc)[D / 8][4], const uint32_t (&pf)[NT / 2][4], const bf16 *Y,
                                                 int row0, int lane) {
    const int r = row0 + (lane / 8 % 2) * 8 + lane % 8, cb = (lane / 16) * 8;
#pragma unroll
    for (int s = 0; s < NT / 2; s++) {
#pragma unroll
        for (int np = 0; np < D / 16; np++) {
            uint32_t y[4];
            ldsm16_x4_t(y, s16_sw(Y, r + s * 16, np * 16 + cb));
            mma16(acc[2 * np], pf[s], y[0], y[1]);
            mma16(acc[2 * np + 1], pf[s], y[2], y[3]);
        }
    }
}

// The forward's and dq's chunk buffers: two of keys, two of values, then the block list. TMA tiles start
// at a 1024-byte boundary (the swizzle's period; the launch adds the slack).
template <int D, bool TMA>
static constexpr __host__ __device__ int s16_buf_elems() {
    return TMA ? S16_KT * ((D + 63) / 64 * 64) : S16_KT * (D + 8);
}
template <bool TMA>
static __device__ __forceinline__ bf16 *s16_chunk_base(float4 *smem) {
    return TMA ? (bf16 *)(((uintptr_t)smem + 1023) & ~(uintptr_t)1023) : (bf16 *)smem;
}

// Keys and values [c0, c0 + cn) of the sequence's head column (kg, vg: key c0 = 0 of the head; trow the
// sequence's first row and j the head, whose columns in the maps start at j * DK and j * DV) into buffers
// Kd, Vd. TMA: thread 0 asks for 64 rows in boxes of 64 columns counted on bar (rows past cn are loaded too
// and masked like padding; a last box past the head's columns reads the next head's or the map's zero fill);
// otherwise cp.async, rows past cn as zeros.
template <int DK, int DV, bool TMA>
static __device__ __forceinline__ void s16_stage_chunk(bf16 *Kd, bf16 *Vd, const bf16 *kg, const bf16 *vg, long krs,
                                                       long vrs, int c0, int cn, const slc_mma_args &a,
                                                       const CUtensorMap *tk, const CUtensorMap *tv, int j,
                                                       int trow, uint64_t *bar) {
    if constexpr (TMA) {
#if ASA_TMA
        if (threadIdx.x != 0) return;
        constexpr int KX = (DK + 63) / 64, VX = (DV + 63) / 64;
        mbar_arrive_bytes(bar, (KX + VX) * S16_BOX_BYTES);
#pragma unroll
        for (int x = 0; x < KX; x++) tma_load_2d((char *)Kd + x * S16_BOX_BYTES, tk, j * DK + 64 * x, trow + c0, bar);
#pragma unroll
        for (int x = 0; x < VX; x++) tma_load_2d((char *)Vd + x * S16_BOX_BYTES, tv, j * DV + 64 * x, trow + c0, bar);
#else
        __trap();  // launched only on Hopper
#endif
    } else {
        s16_stage<DK>(Kd, kg + c0 * krs, krs, cn, S16_KT, a.dk);
        s16_stage<DV>(Vd, vg + c0 * vrs, vrs, cn, S16_KT, a.dv);
    }
}

// s = X·Y^T and acc += P·Y over rows [row0, ...) of a chunk buffer, either layout.
template <int D, int NT, bool TMA>
static __device__ __forceinline__ void s16_rowprod_of(float (&s)[NT][4], const uint32_t (&xf)[D / 16][4], const bf16 *Y,
                                                      int row0, int d, int lane) {
    if constexpr (TMA) s16_rowprod_sw<D, NT>(s, xf, Y, row0, lane);
    else s16_rowprod<D, NT>(s, xf, Y + row0 * (D + 8), d, lane);
}
template <int D, int NT, bool TMA>
static __device__ __forceinline__ void s16_pv_of(float (&acc)[D / 8][4], const uint32_t (&pf)[NT / 2][4], const bf16 *Y,
                                                 int row0, int d, int lane) {
    if constexpr (TMA) s16_pv_sw<D, NT>(acc, pf, Y, row0, lane);
    else s16_pv<D, NT>(acc, pf, Y + row0 * (D + 8), d, lane);
}

static __device__ __forceinline__ void s16_tma_wait(uint64_t *bar, uint32_t parity) {
#if ASA_TMA
    mbar_wait(bar, parity);
#else
    __trap();
#endif
}
static __device__ __forceinline__ void s16_tma_bars_init(uint64_t *bars) {
#if ASA_TMA
    if (threadIdx.x == 0) mbar_init(&bars[0]), mbar_init(&bars[1]);
#else
    __trap();
#endif
}

// Shared memory of the forward and dq kernels: two chunks of keys and values, then the block list.
template <int DK, int DV>
static size_t s16_chunk_bytes(int n) {
    return 2 * (size_t)S16_KT * (DK + 8 + DV + 8) * sizeof(bf16) + (size_t)n * sizeof(int);
}

// The block list into shared memory (Lst, after the chunks), so that walking it costs no global load.
static __device__ __forceinline__ const int32_t *s16_load_list(int32_t *Lst, const int32_t *idx, const slc_mma_args &a,
                                                               int b, int an, int j) {
    const int32_t *row = idx + (((long)b * a.na + an) * a.g + j) * a.n;
    for (int x = threadIdx.x; x < a.n; x += SLC_WARPS * 32) Lst[x] = row[x];
    __syncthreads();
    return Lst;
}

// Forward: warp w takes m-tile w % MT and key slice w / MT of every chunk (NK keys), with its own online
// softmax; the slices of an m-tile are merged at the end in slice order.
// With TMA (Hopper, DK = DV = 64 or 128) the chunks come as TMA tiles through tk and tv, the key and value
// tensors' maps, after a 1024-byte alignment of the shared memory (the swizzle's period).
template <int DK, int DV, int MT, bool TMA>
__global__ void __launch_bounds__(SLC_WARPS * 32)
slc16_fwd_kernel(slc_mma_args a, int chunks, const bf16 *q, const bf16 *k, const bf16 *v, const int32_t *idx, bf16 *o,
                 float *lse, const __grid_constant__ CUtensorMap tk, const __grid_constant__ CUtensorMap tv) {
    constexpr int KS = SLC_WARPS / MT, NK = S16_KT / KS, NT = NK / 8;
    static_assert(!TMA || S16_TMA_DIMS(DK, DV), "TMA tiles hold head dims of 64 or 128, or dk 160 with dv 128");
    constexpr int KBUF = s16_buf_elems<DK, TMA>(), VBUF = s16_buf_elems<DV, TMA>();
    extern __shared__ float4 smem4[];
    bf16 *Ks = s16_chunk_base<TMA>(smem4), *Vs = Ks + 2 * KBUF;
    __shared__ float Ms[SLC_WARPS][16], Ls[SLC_WARPS][16];
    __shared__ uint64_t bars[2];
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const int mt = w % MT, ks = w / MT;
    int chunk, an, j, b;
    slc_tile_of(a, chunks, chunk, an, j, b);
    const int tmin = an * a.R, tmax = min(tmin + a.R, a.T) - 1;
    const int rho0 = (chunk * MT + mt) * 16 + g;
    int t0, t1;
    long r0, r1;
    slc_tile_row(a, b, an, j, rho0, t0, r0);
    slc_tile_row(a, b, an, j, rho0 + 8, t1, r1);
    uint32_t qf[DK / 16][4];
    s16_load_rows<DK>(qf, q, r0, r1, t0 >= 0, t1 >= 0, a.dk, c);

    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const bf16 *kg = k + (long)b * a.T * krs + (long)j * a.dk, *vg = v + (long)b * a.T * vrs + (long)j * a.dv;
    if (TMA) s16_tma_bars_init(bars);
    const int32_t *row = s16_load_list((int32_t *)(Vs + 2 * VBUF), idx, a, b, an, j);
    float acc[DV / 8][4];
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

    // Chunk ci goes to buffer ci % 2; with TMA its barrier's phase ci / 2 says when it has landed.
    const int trow = b * a.T;
    int e = 0, off = 0, c0 = 0, cn = 0, buf = 0, ci = 0;
    bool have = slc_chunk(row, a, S16_KT, tmax, e, off, c0, cn);
    if (have) s16_stage_chunk<DK, DV, TMA>(Ks, Vs, kg, vg, krs, vrs, c0, cn, a, &tk, &tv, j, trow, &bars[0]);
    cp_commit();
    while (have) {
        const int cc0 = c0, ccn = cn;
        off += S16_KT;
        have = slc_chunk(row, a, S16_KT, tmax, e, off, c0, cn);
        if (have)
            s16_stage_chunk<DK, DV, TMA>(Ks + (buf ^ 1) * KBUF, Vs + (buf ^ 1) * VBUF, kg, vg, krs, vrs, c0, cn, a, &tk,
                                         &tv, j, trow, &bars[buf ^ 1]);
        cp_commit();
        cp_wait<1>();
        if (TMA) s16_tma_wait(&bars[buf], (uint32_t)(ci / 2 % 2));
        ci++;
        __syncthreads();
        if (ks * NK < ccn) {
            const bf16 *K = Ks + buf * KBUF, *V = Vs + buf * VBUF;
            float sc[NT][4];
            s16_rowprod_of<DK, NT, TMA>(sc, qf, K, ks * NK, a.dk, lane);
            // Chunks wholly before the anchor's first query and full need no mask (padding rows, whose
            // results are dropped, then see finite scores of zero rows).
            const bool full = ccn == S16_KT && cc0 + S16_KT - 1 <= tmin;
            float mx0 = m0, mx1 = m1;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                if (full) {
                    sc[nt][0] *= a.sl2, sc[nt][1] *= a.sl2, sc[nt][2] *= a.sl2, sc[nt][3] *= a.sl2;
                } else {
                    const int s = cc0 + ks * NK + nt * 8 + 2 * c, lim = cc0 + ccn;
                    sc[nt][0] = s < lim && s <= t0 ? sc[nt][0] * a.sl2 : -INFINITY;
                    sc[nt][1] = s + 1 < lim && s + 1 <= t0 ? sc[nt][1] * a.sl2 : -INFINITY;
                    sc[nt][2] = s < lim && s <= t1 ? sc[nt][2] * a.sl2 : -INFINITY;
                    sc[nt][3] = s + 1 < lim && s + 1 <= t1 ? sc[nt][3] * a.sl2 : -INFINITY;
                }
                mx0 = fmaxf(mx0, fmaxf(sc[nt][0], sc[nt][1]));
                mx1 = fmaxf(mx1, fmaxf(sc[nt][2], sc[nt][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 2));
            // A row with no visible key yet keeps max -inf; its factors must be 0, not exp2(-inf + inf).
            const float f0 = mx0 == -INFINITY ? 1.0f : exp2f(m0 - mx0), f1 = mx1 == -INFINITY ? 1.0f : exp2f(m1 - mx1);
            const float b0 = mx0 == -INFINITY ? 0.0f : mx0, b1 = mx1 == -INFINITY ? 0.0f : mx1;
            m0 = mx0, m1 = mx1;
            uint32_t pf[NT / 2][4];
            float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const float p0 = exp2f(sc[nt][0] - b0), p1 = exp2f(sc[nt][1] - b0);
                const float p2 = exp2f(sc[nt][2] - b1), p3 = exp2f(sc[nt][3] - b1);
                ps0 += p0 + p1, ps1 += p2 + p3;
                s16_pack<NT>(pf, nt, p0, p1, p2, p3);
            }
            l0 = l0 * f0 + ps0, l1 = l1 * f1 + ps1;
            if (__any_sync(FULL_MASK, f0 != 1.0f || f1 != 1.0f))  // a row's max moved: rescale
#pragma unroll
                for (int nd = 0; nd < DV / 8; nd++)
                    acc[nd][0] *= f0, acc[nd][1] *= f0, acc[nd][2] *= f1, acc[nd][3] *= f1;
            s16_pv_of<DV, NT, TMA>(acc, pf, V, ks * NK, a.dv, lane);
        }
        __syncthreads();  // the next iteration stages into this buffer
        buf ^= 1;
    }
    cp_wait<0>();
    l0 += __shfl_xor_sync(FULL_MASK, l0, 1);
    l0 += __shfl_xor_sync(FULL_MASK, l0, 2);
    l1 += __shfl_xor_sync(FULL_MASK, l1, 1);
    l1 += __shfl_xor_sync(FULL_MASK, l1, 2);
    if (KS > 1) {  // merge the key slices of each m-tile into the warp with ks = 0, in slice order
        float *Os = (float *)smem4;  // [SLC_WARPS][16][DV]
        slc_slices_put<DV, true>(Os, Ms, Ls, acc, m0, m1, l0, l1, w, g, c);
        if (ks != 0) return;
        float n0 = -INFINITY, n1 = -INFINITY;
        for (int x = 0; x < KS; x++) n0 = fmaxf(n0, Ms[mt + x * MT][g]), n1 = fmaxf(n1, Ms[mt + x * MT][g + 8]);
        float f0[KS], f1[KS];
        l0 = l1 = 0.0f;
#pragma unroll
        for (int x = 0; x < KS; x++) {
            const int wx = mt + x * MT;
            f0[x] = n0 == -INFINITY ? 0.0f : exp2f(Ms[wx][g] - n0);
            f1[x] = n1 == -INFINITY ? 0.0f : exp2f(Ms[wx][g + 8] - n1);
            l0 += Ls[wx][g] * f0[x], l1 += Ls[wx][g + 8] * f1[x];
        }
#pragma unroll
        for (int nd = 0; nd < DV / 8; nd++) {
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma unroll
            for (int x = 0; x < KS; x++) {
                const float *op = Os + ((mt + x * MT) * 16 + g) * DV + nd * 8 + 2 * c;
                s0 += op[0] * f0[x], s1 += op[1] * f0[x], s2 += op[8 * DV] * f1[x], s3 += op[8 * DV + 1] * f1[x];
            }
            acc[nd][0] = s0, acc[nd][1] = s1, acc[nd][2] = s2, acc[nd][3] = s3;
        }
        m0 = n0, m1 = n1;
    }
    mma_store_o<DV>(o, lse, acc, a.dv, r0, r1, t0, t1, m0, m1, l0, l1, c);  // empty rows: o = 0, lse = -inf
}

// dq's dS tile in shared memory: [MT*16 rows][64 keys + 8] bf16, an odd number of 16-byte units a row so that
// the 8 rows an ldmatrix phase reads hit distinct banks.
#define S16_DS_STRIDE (S16_KT + 8)
template <int MT>
static constexpr __host__ __device__ int s16_ds_bytes() {
    return MT * 16 * S16_DS_STRIDE * 2;
}

// acc (16 rows x GPW 16-column groups of Y, from group g0; groups past d are skipped) += A·Y over the 64 rows
// of a chunk buffer Y; A (16 x 64) in the A fragments af of its four 16-column steps.
template <int D, int GPW>
static __device__ __forceinline__ void s16_acc_cols(float (&acc)[2 * GPW][4], const uint32_t (&af)[S16_KT / 16][4],
                                                    const bf16 *Y, int g0, int d, int lane) {
    const int rl = (lane / 8 % 2) * 8 + lane % 8, cb = (lane / 16) * 8;
#pragma unroll
    for (int s = 0; s < S16_KT / 16; s++) {
#pragma unroll
        for (int gi = 0; gi < GPW; gi++) {
            const int col = (g0 + gi) * 16;
            if (col >= d) break;
            uint32_t y[4];
            ldsm16_x4_t(y, Y + (s * 16 + rl) * (D + 8) + col + cb);
            mma16(acc[2 * gi], af[s], y[0], y[1]);
            mma16(acc[2 * gi + 1], af[s], y[2], y[3]);
        }
    }
}

// dq of the tile's rows: dq += scale * sum_s p_s (dout.v_s - D) k_s, with p_s = exp(q.k_s*scale - lse).
// Q and dout (the A operands of S = Q·K^T and dP = dout·V^T) sit in registers. The warps split each chunk's
// keys for S and dP as in the forward and put dS = P (dP - D) in shared memory; then each warp adds dS·K into
// its own 16-column groups of its m-tile's dq (the DK / 16 groups dealt out over the KS warps of an m-tile).
// A warp so holds DK / KS columns of dq rather than all DK, which fits 3 blocks a multiprocessor without
// spills (before: a full dq per warp, summed over the warps at the end, spilling). Hopper runs
// slc16_dq_wg_kernel instead for head dims 64 and 128.
template <int DK, int DV, int MT>
__global__ void __launch_bounds__(SLC_WARPS * 32, S16_BWD_BLOCKS(DK, MT))
slc16_dq_kernel(slc_mma_args a, int chunks, const bf16 *q, const bf16 *k, const bf16 *v, const int32_t *idx,
                const float *lse, const float *D, const bf16 *dout, bf16 *dq) {
    constexpr int KS = SLC_WARPS / MT, NK = S16_KT / KS, NT = NK / 8;
    constexpr int GPW = (DK / 16 + KS - 1) / KS;  // dq's 16-column groups per warp
    constexpr int KBUF = s16_buf_elems<DK, false>(), VBUF = s16_buf_elems<DV, false>();
    extern __shared__ float4 smem4[];
    bf16 *Ks = (bf16 *)smem4, *Vs = Ks + 2 * KBUF, *Ds = Vs + 2 * VBUF;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const int mt = w % MT, ks = w / MT;
    int chunk, an, j, b;
    slc_tile_of(a, chunks, chunk, an, j, b);
    const int tmin = an * a.R, tmax = min(tmin + a.R, a.T) - 1;
    const int rho0 = (chunk * MT + mt) * 16 + g;
    int t0, t1;
    long r0, r1;
    slc_tile_row(a, b, an, j, rho0, t0, r0);
    slc_tile_row(a, b, an, j, rho0 + 8, t1, r1);
    // Rows with lse = -inf saw no key: no gradient (their q and dout stay zero, so they add nothing).
    const float L0 = t0 >= 0 ? lse[r0] : -INFINITY, L1 = t1 >= 0 ? lse[r1] : -INFINITY;
    if (L0 == -INFINITY) t0 = -1;
    if (L1 == -INFINITY) t1 = -1;
    const float lb0 = t0 >= 0 ? L0 * LOG2E : 0.0f, lb1 = t1 >= 0 ? L1 * LOG2E : 0.0f;
    const float D0 = t0 >= 0 ? D[r0] : 0.0f, D1 = t1 >= 0 ? D[r1] : 0.0f;
    uint32_t qf[DK / 16][4], of[DV / 16][4];
    s16_load_rows<DK>(qf, q, r0, r1, t0 >= 0, t1 >= 0, a.dk, c);
    s16_load_rows<DV>(of, dout, r0, r1, t0 >= 0, t1 >= 0, a.dv, c);

    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const bf16 *kg = k + (long)b * a.T * krs + (long)j * a.dk, *vg = v + (long)b * a.T * vrs + (long)j * a.dv;
    const int32_t *row = s16_load_list((int32_t *)((char *)Ds + s16_ds_bytes<MT>()), idx, a, b, an, j);
    float acc[2 * GPW][4];
#pragma unroll
    for (int nd = 0; nd < 2 * GPW; nd++) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;
    bf16 *dsw = Ds + (mt * 16 + g) * S16_DS_STRIDE + ks * NK + 2 * c;  // this thread's dS entries (row g)
    const bf16 *dsr = Ds + (mt * 16 + lane % 16) * S16_DS_STRIDE + (lane / 16) * 8;  // A fragments of the m-tile

    // chunk ci in buffer ci % 2 (as in the forward)
    int e = 0, off = 0, c0 = 0, cn = 0, buf = 0;
    bool have = slc_chunk(row, a, S16_KT, tmax, e, off, c0, cn);
    if (have) s16_stage_chunk<DK, DV, false>(Ks, Vs, kg, vg, krs, vrs, c0, cn, a, NULL, NULL, 0, 0, NULL);
    cp_commit();
    while (have) {
        const int cc0 = c0, ccn = cn;
        off += S16_KT;
        have = slc_chunk(row, a, S16_KT, tmax, e, off, c0, cn);
        if (have)
            s16_stage_chunk<DK, DV, false>(Ks + (buf ^ 1) * KBUF, Vs + (buf ^ 1) * VBUF, kg, vg, krs, vrs, c0, cn, a,
                                           NULL, NULL, 0, 0, NULL);
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const bf16 *K = Ks + buf * KBUF, *V = Vs + buf * VBUF;
        if (ks * NK < ccn) {
            float sc[NT][4], dp[NT][4];
            s16_rowprod<DK, NT>(sc, qf, K + ks * NK * (DK + 8), a.dk, lane);
            s16_rowprod<DV, NT>(dp, of, V + ks * NK * (DV + 8), a.dv, lane);
            const bool full = ccn == S16_KT && cc0 + S16_KT - 1 <= tmin;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const int s = cc0 + ks * NK + nt * 8 + 2 * c, lim = cc0 + ccn;
                const bool v0 = full || (s < lim && s <= t0), v1 = full || (s + 1 < lim && s + 1 <= t0);
                const bool v2 = full || (s < lim && s <= t1), v3 = full || (s + 1 < lim && s + 1 <= t1);
                const float p0 = v0 ? exp2f(sc[nt][0] * a.sl2 - lb0) : 0.0f;
                const float p1 = v1 ? exp2f(sc[nt][1] * a.sl2 - lb0) : 0.0f;
                const float p2 = v2 ? exp2f(sc[nt][2] * a.sl2 - lb1) : 0.0f;
                const float p3 = v3 ? exp2f(sc[nt][3] * a.sl2 - lb1) : 0.0f;
                *(uint32_t *)(dsw + nt * 8) = pack_bf16(p0 * (dp[nt][0] - D0), p1 * (dp[nt][1] - D0));
                *(uint32_t *)(dsw + 8 * S16_DS_STRIDE + nt * 8) =
                    pack_bf16(p2 * (dp[nt][2] - D1), p3 * (dp[nt][3] - D1));
            }
        } else {  // keys past the chunk's: dS = 0
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
                *(uint32_t *)(dsw + nt * 8) = 0u, *(uint32_t *)(dsw + 8 * S16_DS_STRIDE + nt * 8) = 0u;
        }
        __syncthreads();
        uint32_t df[S16_KT / 16][4];
#pragma unroll
        for (int s = 0; s < S16_KT / 16; s++) ldsm16_x4(df[s], dsr + s * 16);
        s16_acc_cols<DK, GPW>(acc, df, K, ks * GPW, a.dk, lane);
        __syncthreads();  // the next iteration stages into this buffer and rewrites dS
        buf ^= 1;
    }
    cp_wait<0>();
#pragma unroll
    for (int nd = 0; nd < 2 * GPW; nd++) {
        const int col = (ks * GPW + nd / 2) * 16 + (nd % 2) * 8 + 2 * c;
        if (col >= a.dk) break;
        if (t0 >= 0) mma_acc2(dq + r0 * a.dk + col, a.scale * acc[nd][0], a.scale * acc[nd][1]);
        if (t1 >= 0) mma_acc2(dq + r1 * a.dk + col, a.scale * acc[nd][2], a.scale * acc[nd][3]);
    }
}

// dq on Hopper by warpgroup MMA, transposed: the tile's NQ = 16·MT rows are the N side, so that a 64-key
// chunk is the M side of S^T = K·q^T and dP^T = V·dout^T (m64nNQk16, the chunk's TMA tiles as A, q and dout
// staged once as K-major tiles), and dq^T += K^T·dS^T takes K's tile as an M-major A, one product per 64
// columns of dq, with dS^T written to shared memory as a K-major [NQ][64] tile. A warp holds 16 keys (then 16
// columns of dq) for all NQ rows: no ldmatrix, no per-warp key slices to merge, and 24 products a chunk at
// NQ 16 (d128) where slc16_dq_kernel issued 192 mma.sync. The chunks come by TMA into one buffer: at NQ 16
// (60 registers, 44 KB of shared memory) 5 blocks share a multiprocessor and cover each other's loads. At T
// 16384 on an H100 (Setting A): 5.56 ms (slc16_dq_kernel) -> 4.62; with two buffers (2 blocks) slower. Key
// head dims in whole 64-column boxes (dk 160, ASA's G layers: three, the last half read; the products over
// dk stop at its last 16 columns and dq^T's third 64-row block keeps its first 32 rows).
template <int DK, int DV, int NQ>
struct s16_dqw_smem {
    static constexpr int KP = (DK + 63) / 64 * 64;            // whole boxes
    static constexpr int KB = S16_KT * KP * 2, VB = S16_KT * DV * 2;  // bytes of the K and V tiles
    static constexpr int QT = NQ * KP * 2, OT = NQ * DV * 2, ST = NQ * S16_KT * 2;
    static constexpr int ROWS = NQ * (4 + 4 + 4 + 8);  // lse, D, t and the row of q per tile row
    static constexpr size_t BYTES = KB + VB + QT + OT + ST + ROWS + 1024;  // + the list (added at launch), the slack
};
#define S16_DQW_BLOCKS(NQ) ((NQ) == 64 ? 2 : (NQ) == 32 ? 4 : 5)

template <int DK, int DV, int NQ>
__global__ void __launch_bounds__(SLC_WARPS * 32, S16_DQW_BLOCKS(NQ))
slc16_dq_wg_kernel(slc_mma_args a, int chunks, const bf16 *q, const bf16 *dout, const int32_t *idx, const float *lse,
                   const float *D, bf16 *dq, const __grid_constant__ CUtensorMap tk,
                   const __grid_constant__ CUtensorMap tv) {
#if ASA_WGMMA
    static_assert(S16_TMA_DIMS(DK, DV), "the warpgroup dq holds head dims 64 or 128, or dk 160 with dv 128");
    using SM = s16_dqw_smem<DK, DV, NQ>;
    constexpr int NT = NQ / 8, KP = SM::KP;
    extern __shared__ float4 smem4[];
    char *K = (char *)(((uintptr_t)smem4 + 1023) & ~(uintptr_t)1023), *V = K + SM::KB;
    char *Qs = V + SM::VB, *Os = Qs + SM::QT, *Ss = Os + SM::OT;
    float *Lr = (float *)(Ss + SM::ST), *Dr = Lr + NQ;
    int *Tr = (int *)(Dr + NQ);
    long *Rr = (long *)(Tr + NQ);
    int32_t *Lst = (int32_t *)(Rr + NQ);
    __shared__ uint64_t bar;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    int chunk, an, j, b;
    slc_tile_of(a, chunks, chunk, an, j, b);
    const int tmax = min(an * a.R + a.R, a.T) - 1;
    if (threadIdx.x < NQ) {  // rows with lse = -inf saw no key: no gradient (t = -1, q and dout zeros)
        int t;
        long r;
        slc_tile_row(a, b, an, j, chunk * NQ + threadIdx.x, t, r);
        const float L = t >= 0 ? lse[r] : -INFINITY;
        if (L == -INFINITY) t = -1;
        Tr[threadIdx.x] = t, Rr[threadIdx.x] = r;
        Lr[threadIdx.x] = t >= 0 ? L * LOG2E : 0.0f, Dr[threadIdx.x] = t >= 0 ? D[r] : 0.0f;
    }
    if (threadIdx.x == 0) mbar_init(&bar);
    const int32_t *row = s16_load_list(Lst, idx, a, b, an, j);  // (its __syncthreads publishes Tr, Rr too)
    // (dk 160: units past the 20th of the last box are never read)
    for (int e = threadIdx.x; e < NQ * DK / 8; e += SLC_WARPS * 32) {
        const int i = e / (DK / 8), u = e % (DK / 8), t = Tr[i];
        cp16_b16((bf16 *)(Qs + sw128_off(NQ, i, u)), t >= 0 ? q + Rr[i] * a.dk + u * 8 : q, t >= 0 ? 16 : 0);
    }
    for (int e = threadIdx.x; e < NQ * DV / 8; e += SLC_WARPS * 32) {
        const int i = e / (DV / 8), u = e % (DV / 8), t = Tr[i];
        cp16_b16((bf16 *)(Os + sw128_off(NQ, i, u)), t >= 0 ? dout + Rr[i] * a.dv + u * 8 : dout, t >= 0 ? 16 : 0);
    }
    cp_commit();

    float acc[KP / 64][NT][4];  // dq^T: column 64h + 16w + g (+8) of rows 8nt + 2c (+1)
#pragma unroll
    for (int h = 0; h < KP / 64; h++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++) acc[h][nt][0] = acc[h][nt][1] = acc[h][nt][2] = acc[h][nt][3] = 0.0f;
    const int trow = b * a.T;
    int e = 0, off = 0, c0 = 0, cn = 0;
    bool have = slc_chunk(row, a, S16_KT, tmax, e, off, c0, cn);
    cp_wait<0>();
    fence_proxy_async();  // cp.async wrote q and dout; wgmma reads them through the async proxy
    __syncthreads();
    for (uint32_t phase = 0; have; phase ^= 1) {  // chunk by chunk, the barrier's phases alternating
        const int cc0 = c0, ccn = cn;
        s16_stage_chunk<DK, DV, true>((bf16 *)K, (bf16 *)V, NULL, NULL, 0, 0, c0, cn, a, &tk, &tv, j, trow, &bar);
        off += S16_KT;
        have = slc_chunk(row, a, S16_KT, tmax, e, off, c0, cn);
        s16_tma_wait(&bar, phase);
        float sc[NT][4], dp[NT][4];
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < DK / 16; kk++) wg_m64_ss<NQ, 0>(sc, wg_desc_k(K, S16_KT, kk), wg_desc_k(Qs, NQ, kk), kk > 0);
#pragma unroll
        for (int kk = 0; kk < DV / 16; kk++) wg_m64_ss<NQ, 0>(dp, wg_desc_k(V, S16_KT, kk), wg_desc_k(Os, NQ, kk), kk > 0);
        wg_commit();
        wg_wait();
        wg_hold<NT>(sc), wg_hold<NT>(dp);
        // dS^T of keys k0 (accumulator rows g) and k0 + 8 against rows ra, ra + 1 of each n-tile
        const int k0 = 16 * w + g, lim = ccn;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
#pragma unroll
            for (int x = 0; x < 4; x++) {
                const int ra = 8 * nt + 2 * c + (x & 1), kl = k0 + 8 * (x >> 1), t = Tr[ra];
                const bool vis = kl < lim && cc0 + kl <= t;
                const float p = vis ? exp2f(sc[nt][x] * a.sl2 - Lr[ra]) : 0.0f;
                *(bf16 *)(Ss + sw128_off(NQ, ra, kl / 8) + (kl % 8) * 2) = __float2bfloat16_rn(p * (dp[nt][x] - Dr[ra]));
            }
        }
        fence_proxy_async();  // dS^T, written by ordinary stores, is read by wgmma
        __syncthreads();
        wg_fence();
#pragma unroll
        for (int h = 0; h < KP / 64; h++)
#pragma unroll
            for (int kk = 0; kk < S16_KT / 16; kk++)
                wg_m64_ss<NQ, 1>(acc[h], wg_desc_n(K + h * S16_BOX_BYTES, S16_KT, kk), wg_desc_k(Ss, NQ, kk), 1);
        wg_commit();
        wg_wait();
#pragma unroll
        for (int h = 0; h < KP / 64; h++) wg_hold<NT>(acc[h]);
        __syncthreads();  // the chunk buffer and dS^T are free again
    }
    // dq += scale * dq^T^T, through shared memory (fp32 [NQ][KP] over the tiles) for whole-row updates
    static_assert(NQ * KP * 4 <= SM::KB + SM::VB + SM::QT + SM::OT + SM::ST, "dq^T fits over the tiles");
    float *F = (float *)K;
#pragma unroll
    for (int h = 0; h < KP / 64; h++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int x = 0; x < 4; x++)
                F[(8 * nt + 2 * c + (x & 1)) * KP + 64 * h + 16 * w + g + 8 * (x >> 1)] = acc[h][nt][x];
    __syncthreads();
    // 8 column pairs a thread at a time, their loads issued before their stores (one add at a time waited on
    // each load in turn)
    constexpr int PAIRS = NQ * DK / 2, STEP = SLC_WARPS * 32;
#pragma unroll
    for (int x0 = 0; x0 < PAIRS; x0 += 8 * STEP) {
        __nv_bfloat162 cur[8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int x = x0 + u * STEP + threadIdx.x, i = x / (DK / 2), col = (x % (DK / 2)) * 2;
            if (x < PAIRS && Tr[i] >= 0 && col < a.dk) cur[u] = *(const __nv_bfloat162 *)(dq + Rr[i] * a.dk + col);
        }
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int x = x0 + u * STEP + threadIdx.x, i = x / (DK / 2), col = (x % (DK / 2)) * 2;
            if (x < PAIRS && Tr[i] >= 0 && col < a.dk) {
                const float2 v = __bfloat1622float2(cur[u]);
                *(__nv_bfloat162 *)(dq + Rr[i] * a.dk + col) =
                    __floats2bfloat162_rn(v.x + a.scale * F[i * KP + col], v.y + a.scale * F[i * KP + col + 1]);
            }
        }
    }
#else
    __trap();  // launched only on Hopper
#endif
}

// One staged chunk of the dk/dv pass: S16_NR rows of q and dout, then lse (base 2), D and t per row.
template <int DK, int DV>
static constexpr __host__ __device__ size_t s16_qbuf_bytes() {
    return (size_t)S16_NR * (DK + 8 + DV + 8) * sizeof(bf16) + 3 * S16_NR * sizeof(float);
}

template <int DK, int DV>
static size_t s16_dkdv_bytes() {
    return (size_t)SLC_KEYS * (DK + 8 + DV + 8) * sizeof(bf16) + 2 * s16_qbuf_bytes<DK, DV>();
}

// 4 bytes global -> shared by cp.async; zeros when !in.
static __device__ __forceinline__ void s16_cp4(void *dst, const void *src, bool in) {
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(src), "r"(in ? 4 : 0));
}

// The anchor of row i of the stream of list entries e0, e0 + 1, ... (0 past its end).
static __device__ __forceinline__ int s16_anchor(const int *anchors, int e0, int rows, long nrows, long i) {
    return i < nrows ? anchors[e0 + i / rows] : 0;
}

// A staged chunk of rows: q rows, dout rows, then lse, D and t; the rows padded (D + 8 elements) or, with SW,
// swizzled tiles of whole 64-column boxes (columns past D are never read).
template <int D, bool SW>
static constexpr __host__ __device__ int s16_row_elems() {
    return SW ? (D + 63) / 64 * 64 : D + 8;
}

// Stages rows [i0, i0 + NR) of the stream of (query, head) rows of list entries e0, e0 + 1, ... (each
// anchor's R·G rows in tile order, nrows in all) into buffer qb, all by cp.async: q and dout rows, lse and
// D, and t per row (-1 for rows past the stream or the sequence: they add nothing). SLC_WARPS*32 / NR
// threads share a row; `an` is the anchor of this thread's row, loaded a chunk ahead.
template <int DK, int DV, bool SW, int NR = S16_NR>
static __device__ __forceinline__ void s16_stage_queries(const slc_mma_args &a, int b, int j, int an, long nrows,
                                                         long i0, const bf16 *q, const float *lse, const float *D,
                                                         const bf16 *dout, char *qb) {
    constexpr int TPR = SLC_WARPS * 32 / NR, QE = s16_row_elems<DK, SW>(), OE = s16_row_elems<DV, SW>();
    bf16 *Qs = (bf16 *)qb, *Os = Qs + NR * QE;
    float *Lb = (float *)(Os + NR * OE), *Db = Lb + NR;
    int *Tb = (int *)(Db + NR);
    const int rr = threadIdx.x / TPR, part = threadIdx.x % TPR;
    const long i = i0 + rr;
    int t = -1;
    long r = 0;
    if (i < nrows) slc_tile_row(a, b, an, j, (int)(i % a.rows), t, r);
#pragma unroll
    for (int x = part; x < DK / 8; x += TPR) {
        const bool in = t >= 0 && x * 8 < a.dk;
        bf16 *dst = SW ? (bf16 *)((char *)Qs + sw128_off(NR, rr, x)) : Qs + rr * QE + x * 8;
        cp16_b16(dst, in ? q + r * a.dk + x * 8 : q, in ? 16 : 0);
    }
#pragma unroll
    for (int x = part; x < DV / 8; x += TPR) {
        const bool in = t >= 0 && x * 8 < a.dv;
        bf16 *dst = SW ? (bf16 *)((char *)Os + sw128_off(NR, rr, x)) : Os + rr * OE + x * 8;
        cp16_b16(dst, in ? dout + r * a.dv + x * 8 : dout, in ? 16 : 0);
    }
    if (part == 0) {
        Tb[rr] = t;
        s16_cp4(Lb + rr, lse + r, t >= 0);
        s16_cp4(Db + rr, D + r, t >= 0);
    }
}

// A dk/dv block's share of the pass: segment sidx of list l (group j, sequence b; slc_seg_list), its list
// entries [e0, e1) and keys [pfirst, pend) of key tile kt. False when there is nothing to do.
typedef struct {
    int l, sidx, kt, j, b, e0, e1, pfirst, pend;
} s16_dkdv_share;

static __device__ __forceinline__ bool s16_dkdv_share_of(const slc_mma_args &a, int nkt, int sega, const int *start,
                                                         const int *seg, s16_dkdv_share &p) {
    const int nlists = a.B * a.g * a.nsb, gs = blockIdx.x / nkt;
    p.kt = blockIdx.x % nkt;
    if (gs >= seg[nlists]) return false;  // the grid covers the most segments there can be
    p.l = slc_seg_list(seg, nlists, gs);
    const int u = p.l % a.nsb;
    p.sidx = gs - seg[p.l], p.j = p.l / a.nsb % a.g, p.b = p.l / (a.nsb * a.g);
    p.e0 = start[p.l] + p.sidx * sega, p.e1 = min(p.e0 + sega, start[p.l + 1]);
    p.pfirst = u * a.bsel + p.kt * SLC_KEYS, p.pend = min((u + 1) * a.bsel, a.T);
    return p.pfirst < p.pend && p.e0 < p.e1;
}

// P^T and dS^T of keys p0 (rows g) and p1 (rows g + 8) against a staged chunk's rows, from the accumulators of
// S^T and dP^T (scores unscaled), packed as the A fragments of dv += P^T·dout and dk += dS^T·q. The chunk's
// lse, D and t per row are Lb, Db, Tb; rows whose lse is -inf saw no key and give no gradient.
template <int NT>
static __device__ __forceinline__ void s16_dkdv_probs(const float (&st)[NT][4], const float (&dpt)[NT][4],
                                                      const float *Lb, const float *Db, const int *Tb, int p0, int p1,
                                                      float sl2, int c, uint32_t (&pf)[NT / 2][4],
                                                      uint32_t (&sf)[NT / 2][4]) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int ra = nt * 8 + 2 * c, rb = ra + 1;  // the accumulator's columns: rows ra, rb of the chunk
        const int ta = Lb[ra] == -INFINITY ? -1 : Tb[ra], tb = Lb[rb] == -INFINITY ? -1 : Tb[rb];
        const float la = Lb[ra] * LOG2E, lb = Lb[rb] * LOG2E, da = Db[ra], db = Db[rb];
        const float pa0 = p0 <= ta ? exp2f(st[nt][0] * sl2 - la) : 0.0f;
        const float pb0 = p0 <= tb ? exp2f(st[nt][1] * sl2 - lb) : 0.0f;
        const float pa1 = p1 <= ta ? exp2f(st[nt][2] * sl2 - la) : 0.0f;
        const float pb1 = p1 <= tb ? exp2f(st[nt][3] * sl2 - lb) : 0.0f;
        s16_pack<NT>(pf, nt, pa0, pb0, pa1, pb1);
        s16_pack<NT>(sf, nt, pa0 * (dpt[nt][0] - da), pb0 * (dpt[nt][1] - db), pa1 * (dpt[nt][2] - da),
                     pb1 * (dpt[nt][3] - db));
    }
}

// dk / dv of 64 keys of selection block u of group j (key tile kt of the block) from one segment of the
// block's anchor list. Warp w holds keys 16w..16w+15 as the rows of S^T = K·Q^T and dP^T = V·dout^T (A
// fragments by ldmatrix from the block's K and V tiles, B from the staged rows), then dv += P^T·dout and
// dk += dS^T·Q with P^T's and dS^T's accumulators as A fragments. Segment 0 of a list adds into dk / dv,
// the others store partial sums in `part` (slot seg[l] - l + s - 1) for slc_mma_reduce_kernel.
template <int DK, int DV>
__global__ void __launch_bounds__(SLC_WARPS * 32, S16_BWD_BLOCKS(DK, 1))
slc16_dkdv_kernel(slc_mma_args a, int nkt, int sega, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                  const float *D, const bf16 *dout, const int *start, const int *seg, const int *anchors, bf16 *dk,
                  bf16 *dv, float *part) {
    constexpr int KST = DK + 8, VST = DV + 8, NT = S16_NR / 8;
    constexpr size_t QB = s16_qbuf_bytes<DK, DV>();
    extern __shared__ float4 smem4[];
    bf16 *Ks = (bf16 *)smem4, *Vs = Ks + SLC_KEYS * KST;
    char *Qb = (char *)(Vs + SLC_KEYS * VST);
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    s16_dkdv_share p;
    if (!s16_dkdv_share_of(a, nkt, sega, start, seg, p)) return;
    const int j = p.j, b = p.b, e0 = p.e0, pfirst = p.pfirst, pend = p.pend;
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const long kr0 = ((long)b * a.T + pfirst) * a.g + j;  // key row pfirst of head j, in units of heads
    s16_stage<DK>(Ks, k + kr0 * a.dk, krs, min(SLC_KEYS, pend - pfirst), SLC_KEYS, a.dk);
    s16_stage<DV>(Vs, v + kr0 * a.dv, vrs, min(SLC_KEYS, pend - pfirst), SLC_KEYS, a.dv);
    const long nrows = (long)(p.e1 - e0) * a.rows;
    const int p0 = pfirst + w * 16 + g, p1 = p0 + 8;  // this thread's keys (accumulator rows g, g+8)

    float ak[DK / 8][4], av[DV / 8][4];
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) ak[nd][0] = ak[nd][1] = ak[nd][2] = ak[nd][3] = 0.0f;
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) av[nd][0] = av[nd][1] = av[nd][2] = av[nd][3] = 0.0f;

    constexpr int TPR = SLC_WARPS * 32 / S16_NR;
    const int rr = threadIdx.x / TPR;
    s16_stage_queries<DK, DV, false>(a, b, j, s16_anchor(anchors, e0, a.rows, nrows, rr), nrows, 0, q, lse, D, dout,
                                     Qb);
    cp_commit();
    int an_next = s16_anchor(anchors, e0, a.rows, nrows, S16_NR + rr);
    // A fragments of this warp's 16 keys (rows lane % 16, column halves lane / 16) and B fragments of two
    // n-tiles of staged rows per ldmatrix
    const bf16 *ka = Ks + (w * 16 + lane % 16) * KST + (lane / 16) * 8;
    const bf16 *va = Vs + (w * 16 + lane % 16) * VST + (lane / 16) * 8;
    const int brow = (lane / 16) * 8 + lane % 8, bcol = (lane / 8 % 2) * 8;
    int buf = 0;
    for (long i0 = 0; i0 < nrows; i0 += S16_NR) {
        if (i0 + S16_NR < nrows) {
            s16_stage_queries<DK, DV, false>(a, b, j, an_next, nrows, i0 + S16_NR, q, lse, D, dout,
                                             Qb + (buf ^ 1) * QB);
            an_next = s16_anchor(anchors, e0, a.rows, nrows, i0 + 2 * S16_NR + rr);
        }
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const bf16 *Q = (const bf16 *)(Qb + buf * QB), *O = Q + S16_NR * KST;
        const float *Lb = (const float *)(O + S16_NR * VST), *Db = Lb + S16_NR;
        const int *Tb = (const int *)(Db + S16_NR);
        float st[NT][4], dpt[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
            st[nt][0] = st[nt][1] = st[nt][2] = st[nt][3] = dpt[nt][0] = dpt[nt][1] = dpt[nt][2] = dpt[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DK / 16; kk++) {
            if (kk * 16 >= a.dk) break;
            uint32_t x[4];
            ldsm16_x4(x, ka + kk * 16);
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t y[4];
                ldsm16_x4(y, Q + (np * 16 + brow) * KST + kk * 16 + bcol);
                mma16(st[2 * np], x, y[0], y[1]);
                mma16(st[2 * np + 1], x, y[2], y[3]);
            }
        }
#pragma unroll
        for (int kk = 0; kk < DV / 16; kk++) {
            if (kk * 16 >= a.dv) break;
            uint32_t x[4];
            ldsm16_x4(x, va + kk * 16);
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t y[4];
                ldsm16_x4(y, O + (np * 16 + brow) * VST + kk * 16 + bcol);
                mma16(dpt[2 * np], x, y[0], y[1]);
                mma16(dpt[2 * np + 1], x, y[2], y[3]);
            }
        }
        uint32_t pf[NT / 2][4], sf[NT / 2][4];
        s16_dkdv_probs<NT>(st, dpt, Lb, Db, Tb, p0, p1, a.sl2, c, pf, sf);
        s16_pv<DV, NT>(av, pf, O, a.dv, lane);
        s16_pv<DK, NT>(ak, sf, Q, a.dk, lane);
        __syncthreads();
        buf ^= 1;
    }
    cp_wait<0>();
    slc_dkdv_store<DK, DV>(a, seg, nkt, p.l, p.sidx, p.kt, b, j, pend, w, g, c, p0, p1, ak, av, part, dk, dv);
}

// dk / dv on Hopper by warpgroup MMA: the same work and order as slc16_dkdv_kernel, whose warps each read
// every staged row from shared memory for their 16 keys (about 2.4x the shared-memory bytes the tensor cores
// can take per product). Here the block's 4 warps are one warpgroup that holds the 64 keys as the M side of
// wgmma (wg_dkdv_scores, wg_dkdv_accumulate), so each staged tile is read once for all 64 keys; the rows are
// staged STAGES - 1 chunks ahead. Head dims 64 or 128 (dk = dv), or dk 160 with dv 128.
template <int DK, int DV, int NR, int STAGES>
__global__ void __launch_bounds__(SLC_WARPS * 32, 2)
slc16_dkdv_wg_kernel(slc_mma_args a, int nkt, int sega, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                     const float *D, const bf16 *dout, const int *start, const int *seg, const int *anchors, bf16 *dk,
                     bf16 *dv, float *part) {
#if ASA_WGMMA
    using SM = wg_dkdv_smem<DK, DV, NR, STAGES>;
    constexpr int NT = NR / 8, TPR = SLC_WARPS * 32 / NR;
    extern __shared__ float4 smem4[];
    char *Ks = (char *)(((uintptr_t)smem4 + 1023) & ~(uintptr_t)1023), *Vs = Ks + SLC_KEYS * SM::KP * 2;
    char *Qb = Ks + SM::KV;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    s16_dkdv_share p;
    if (!s16_dkdv_share_of(a, nkt, sega, start, seg, p)) return;
    const int j = p.j, b = p.b, e0 = p.e0;
    const long kr0 = ((long)b * a.T + p.pfirst) * a.g + j;  // key row pfirst of head j, in units of heads
    const int kn = min(SLC_KEYS, p.pend - p.pfirst);
    stage_sw<DK, SLC_WARPS * 32>(Ks, k + kr0 * a.dk, (long)a.g * a.dk, kn, SLC_KEYS);
    stage_sw<DV, SLC_WARPS * 32>(Vs, v + kr0 * a.dv, (long)a.g * a.dv, kn, SLC_KEYS);
    const long nrows = (long)(p.e1 - e0) * a.rows;
    const int p0 = p.pfirst + w * 16 + g, p1 = p0 + 8;  // this thread's keys (accumulator rows g, g+8)
    const int rr = threadIdx.x / TPR;
    // chunk x goes to stage x % STAGES; its commit group is the x-th (K and V ride with chunk 0)
#pragma unroll
    for (int x = 0; x < STAGES - 1; x++) {
        if ((long)x * NR < nrows)
            s16_stage_queries<DK, DV, true, NR>(a, b, j, s16_anchor(anchors, e0, a.rows, nrows, x * NR + rr), nrows,
                                                (long)x * NR, q, lse, D, dout, Qb + x * SM::STAGE);
        cp_commit();
    }
    int an_next = s16_anchor(anchors, e0, a.rows, nrows, (STAGES - 1) * NR + rr);

    float ak[DK / 8][4], av[DV / 8][4];
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) ak[nd][0] = ak[nd][1] = ak[nd][2] = ak[nd][3] = 0.0f;
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) av[nd][0] = av[nd][1] = av[nd][2] = av[nd][3] = 0.0f;
    for (long ci = 0; ci * NR < nrows; ci++) {
        const long nx = ci + STAGES - 1;  // into the stage freed at the end of the last iteration
        if (nx * NR < nrows) {
            s16_stage_queries<DK, DV, true, NR>(a, b, j, an_next, nrows, nx * NR, q, lse, D, dout,
                                                Qb + (nx % STAGES) * SM::STAGE);
            an_next = s16_anchor(anchors, e0, a.rows, nrows, (nx + 1) * NR + rr);
        }
        cp_commit();
        cp_wait<STAGES - 1>();
        fence_proxy_async();  // cp.async wrote the tiles; wgmma reads them through the async proxy
        __syncthreads();
        const char *Q = Qb + (ci % STAGES) * SM::STAGE, *O = Q + SM::QB;
        const float *Lb = (const float *)(O + SM::OB), *Db = Lb + NR;
        const int *Tb = (const int *)(Db + NR);
        float st[NT][4], dpt[NT][4];
        wg_dkdv_scores<DK, DV, NR>(st, dpt, Ks, Vs, Q, O);
        uint32_t pf[NT / 2][4], sf[NT / 2][4];
        s16_dkdv_probs<NT>(st, dpt, Lb, Db, Tb, p0, p1, a.sl2, c, pf, sf);
        wg_dkdv_accumulate<DK, DV, NR>(ak, av, pf, sf, Q, O);
        __syncthreads();  // the stage is refilled next iteration
    }
    cp_wait<0>();
    slc_dkdv_store<DK, DV>(a, seg, nkt, p.l, p.sidx, p.kt, b, j, p.pend, w, g, c, p0, p1, ak, av, part, dk, dv);
#else
    __trap();  // launched only on Hopper
#endif
}

static bool s16_aligned(const void *p) { return ((uintptr_t)p & 15) == 0; }

bool cuda_slc16_ok(const asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                   const void *dout) {
    return be->act == ASA_BF16 && s->dk % 8 == 0 && s->dv % 8 == 0 && s->dk <= 160 && s->dv <= 128 &&
           s16_aligned(q) && s16_aligned(k) && s16_aligned(v) && (dout == NULL || s16_aligned(dout));
}

// Runs the statements given with DK, DV: the least instantiated pair (64/64, 128/128, 160/128) covering dk
// and dv; the padding columns are zeros and their products are skipped.
#define S16_WITH_DIMS(dk, dv, ...)                                   \
    do {                                                             \
        if ((dk) <= 64 && (dv) <= 64) {                              \
            constexpr int DK = 64, DV = 64;                          \
            __VA_ARGS__;                                             \
        } else if ((dk) <= 128) {                                    \
            constexpr int DK = 128, DV = 128;                        \
            __VA_ARGS__;                                             \
        } else {                                                     \
            constexpr int DK = 160, DV = 128;                        \
            __VA_ARGS__;                                             \
        }                                                            \
    } while (0)

// Whether the chunks come as TMA tiles (Hopper: the forward at head dims 64 or 128, the warpgroup dq at those
// and dk 160 with dv 128), with the maps of k and v [B*T, g*d] when they do.
static bool s16_tma_maps(asa_backend *be, const slc_mma_args &a, const void *k, const void *v, CUtensorMap *tk,
                         CUtensorMap *tv) {
    memset(tk, 0, sizeof *tk), memset(tv, 0, sizeof *tv);
    return cuda_ctx_of(be)->use_tma && S16_TMA_DIMS(a.dk, a.dv) &&
           cuda_tma_map(tk, k, (long)a.B * a.T, (long)a.g * a.dk) &&
           cuda_tma_map(tv, v, (long)a.B * a.T, (long)a.g * a.dv);
}

// Shared memory of a forward or dq block: s16_chunk_bytes, or with TMA the four tiles, the list and the
// alignment slack.
template <int DK, int DV, bool TMA>
static size_t s16_block_bytes(int n) {
    return TMA ? 2 * (size_t)(s16_buf_elems<DK, true>() + s16_buf_elems<DV, true>()) * sizeof(bf16) +
                     (size_t)n * sizeof(int) + 1024
               : s16_chunk_bytes<DK, DV>(n);
}

template <int DK, int DV, int MT, bool TMA>
static void s16_fwd_launch(const slc_mma_args &a, int chunks, long blocks, const void *q, const void *k, const void *v,
                           const int32_t *idx, void *o, float *lse, const CUtensorMap &tk, const CUtensorMap &tv) {
    const size_t smem = s16_block_bytes<DK, DV, TMA>(a.n);
    attn_allow_smem((const void *)slc16_fwd_kernel<DK, DV, MT, TMA>, smem);
    slc16_fwd_kernel<DK, DV, MT, TMA><<<(unsigned)blocks, SLC_WARPS * 32, smem>>>(
        a, chunks, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, idx, (bf16 *)o, lse, tk, tv);
}

template <int DK, int DV, int MT>
static void s16_dq_launch(const slc_mma_args &a, int chunks, const bf16 *q, const bf16 *k, const bf16 *v,
                          const int32_t *idx, const float *lse, const float *D, const bf16 *dout, void *dq,
                          cudaStream_t st) {
    const size_t smem = s16_block_bytes<DK, DV, false>(a.n) + s16_ds_bytes<MT>();
    attn_allow_smem((const void *)slc16_dq_kernel<DK, DV, MT>, smem);
    slc16_dq_kernel<DK, DV, MT><<<(unsigned)((long)a.B * a.na * a.g * chunks), SLC_WARPS * 32, smem, st>>>(
        a, chunks, q, k, v, idx, lse, D, dout, (bf16 *)dq);
}

// dq on warpgroup MMA (Hopper: TMA maps, head dims 64 or 128, at most 64 rows a list).
template <int DK, int DV, int MT>
static void s16_dq_wg_launch(const slc_mma_args &a, int chunks, const bf16 *q, const bf16 *dout, const int32_t *idx,
                             const float *lse, const float *D, void *dq, const CUtensorMap &tk,
                             const CUtensorMap &tv, cudaStream_t st) {
    constexpr int NQ = 16 * MT;
    const size_t smem = s16_dqw_smem<DK, DV, NQ>::BYTES + (size_t)a.n * sizeof(int32_t);
    attn_allow_smem((const void *)slc16_dq_wg_kernel<DK, DV, NQ>, smem);
    slc16_dq_wg_kernel<DK, DV, NQ><<<(unsigned)((long)a.B * a.na * a.g * chunks), SLC_WARPS * 32, smem, st>>>(
        a, chunks, q, dout, idx, lse, D, (bf16 *)dq, tk, tv);
}

void cuda_slc16_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                    const int32_t *idx, void *o, float *lse) {
    const slc_mma_args a = slc_mma_make(s);
    int chunks;
    const int mt = slc_mtiles(a.rows, &chunks);
    const long blocks = (long)a.B * a.na * a.g * chunks;
    if (blocks == 0) return;
    CUtensorMap tk, tv;
    const bool tma = s16_tma_maps(be, a, k, v, &tk, &tv);
    S16_WITH_DIMS(a.dk, a.dv, SLC_WITH_MT(mt, {
        constexpr bool CAN = S16_TMA_DIMS(DK, DV);
        if (CAN && tma) s16_fwd_launch<DK, DV, MT, CAN>(a, chunks, blocks, q, k, v, idx, o, lse, tk, tv);
        else s16_fwd_launch<DK, DV, MT, false>(a, chunks, blocks, q, k, v, idx, o, lse, tk, tv);
    }));
    CUDA_LAUNCH_CHECK();
}

void cuda_slc16_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                    const int32_t *idx, const void *o, const float *lse, const void *dout, const float *drow,
                    void *dq, void *dk, void *dv) {
    const slc_mma_args a = slc_mma_make(s);
    const long rows = (long)a.B * a.T * a.h;
    if (rows == 0) return;
    const slc_lists L = slc_lists_alloc(be, a);
    const bf16 *qb = (const bf16 *)q, *kb = (const bf16 *)k, *vb = (const bf16 *)v, *ob = (const bf16 *)dout;

    const float *D = cuda_attn_drow(be, drow, dout, o, rows, a.dv, L.D);
    // dq on the low-priority side stream, the lists and dk/dv on the high one: the lists are built while dq
    // runs, and dk/dv's blocks take the multiprocessors dq's last blocks leave (H100, Setting A's N layer:
    // the selected backward at T 8192 4.21 -> 3.97 ms, asa-340M's G layer 1.34 -> 1.18; with the priorities
    // the other way round it took as long as one pass after the other).
    cuda_ctx *cx = cuda_ctx_of(be);
    cuda_fork(be);
    const cudaStream_t sq = cx->side[1], sk = cx->side[0];
    int chunks;
    const int mt = slc_mtiles(a.rows, &chunks);
    CUtensorMap tk, tv;
    const bool tma = s16_tma_maps(be, a, k, v, &tk, &tv);
    S16_WITH_DIMS(a.dk, a.dv, SLC_WITH_MT(mt, {
        if constexpr (S16_TMA_DIMS(DK, DV)) {
            if (tma) s16_dq_wg_launch<DK, DV, MT>(a, chunks, qb, ob, idx, lse, D, dq, tk, tv, sq);
            else s16_dq_launch<DK, DV, MT>(a, chunks, qb, kb, vb, idx, lse, D, ob, dq, sq);
        } else {
            s16_dq_launch<DK, DV, MT>(a, chunks, qb, kb, vb, idx, lse, D, ob, dq, sq);
        }
    }));
    CUDA_LAUNCH_CHECK();

    slc_lists_build(a, idx, L, sk);

    const unsigned grid = (unsigned)((L.nlists + L.xmax) * L.nkt);
    const bool wg = cx->use_tma && WG_DKDV_DIMS(a.dk, a.dv);
    S16_WITH_DIMS(a.dk, a.dv, {
        constexpr bool WG = WG_DKDV_DIMS(DK, DV);
        if (WG && wg) {  // Hopper
            constexpr int WK = WG ? DK : 64, WV = WG ? DV : 64, NR = WG_DKDV_NR(WK), ST = WG_DKDV_STAGES(WK);
            const size_t smem = wg_dkdv_smem<WK, WV, NR, ST>::BYTES;
            attn_allow_smem((const void *)slc16_dkdv_wg_kernel<WK, WV, NR, ST>, smem);
            slc16_dkdv_wg_kernel<WK, WV, NR, ST><<<grid, SLC_WARPS * 32, smem, sk>>>(
                a, L.nkt, L.sega, qb, kb, vb, lse, D, ob, L.start, L.seg, L.anchors, (bf16 *)dk, (bf16 *)dv, L.part);
        } else {
            const size_t smem = s16_dkdv_bytes<DK, DV>();
            attn_allow_smem((const void *)slc16_dkdv_kernel<DK, DV>, smem);
            slc16_dkdv_kernel<DK, DV><<<grid, SLC_WARPS * 32, smem, sk>>>(
                a, L.nkt, L.sega, qb, kb, vb, lse, D, ob, L.start, L.seg, L.anchors, (bf16 *)dk, (bf16 *)dv, L.part);
        }
    });
    CUDA_LAUNCH_CHECK();
    slc_lists_reduce<16>(a, L, (bf16 *)dk, (bf16 *)dv, sk);
    cuda_join(be);
}
