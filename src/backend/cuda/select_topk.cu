// CUDA block selection (SPEC §4, select_topk): the compression branch's probabilities summed per selection
// block, then each anchor's top-n block list. One CUDA block per (sequence, group, A consecutive anchors):
// the A*G query rows (anchor, head) stay in shared memory while tiles of pooled keys stream past, as in a
// register-tiled GEMM; the scores stay in shared memory (nothing T×nb reaches global memory); then one warp
// per anchor picks the blocks by rounds of a warp arg-max.
//
// Ties are real ties, exactly as on the CPU: every dot product keeps the CPU's order (attn_dot: eight
// partial sums over the residues of k mod 8, combined as ((0+4)+(1+5))+((2+6)+(3+7)), then the tail), the
// probability is exp(dot*scale - lse) without a fused multiply-add, and each score adds its terms in the
// CPU's order (the group's heads, then the compression blocks inside the selection block). A tile always
// holds whole selection blocks, so that order never spans two tiles.
//
// The dots: eight lanes share an 8x8 tile of (query row, pooled key) dots, lane l summing the residue
// l partial sums of all 64 (one register each, so a lane's tile is large and its shared-memory reads are
// few per product). Staged rows are stored residue-major (element k at (k%8)*rs + k/8, the tail after) so
// that a lane reads its residue four elements at a time. Three butterfly steps then combine the eight
// partial sums in the CPU's order, each step halving the dots a lane keeps: each lane ends with 8 dots.
// No fused multiply-add is allowed, so the exact products cost two instructions each: the floor is half
// the fp32 FMA rate.
// q and kc are activation tensors (float or bf16, the kernel's template type): staging widens bf16 to fp32
// exactly, and everything after is the same fp32 arithmetic.
//
// bf16 mode (topk16_kernel): the dots run on the bf16 tensor cores (mma.sync m16n8k16, fp32 accumulation).
// A product of two bf16 values is exact in fp32, so the dots differ from the CPU's only in the order the
// tensor cores add the products: the scores move by a few fp32 roundings, and the lists equal the CPU's
// except where two blocks' scores are that close (near-ties). The probabilities are exp2 of one fused
// multiply-add (a rounding or two more, the same order of error). When an anchor's G rows lie in the lanes
// of one m-tile (16 % G == 0) and a selection block is one pooled key, the scores are summed there by warp
// shuffles: no probabilities go through shared memory and no second phase waits for them. Otherwise the
// probabilities are staged and summed in the CPU's order, as in the fp32 path. Rows of q and kc
// stay bf16 in shared memory (cp.async, the next key tile in flight), stride dk16 + 8 elements so that
// the 8 rows of an ldmatrix hit distinct banks. The choice (topk16_select_row) is topk_select_row's, found
// with fewer instructions: a lane keeps its best few candidates in registers and a round's arg-max is two
// warp reductions.
#include "backend/cuda/attn_kernels.cuh"
#include "backend/cuda/attn_mma16.cuh"
#include "backend/cuda/attn_mma_common.cuh"
#include "backend/cuda/select_rows.cuh"

#define TOPK_THREADS 256
#define TOPK_WARPS (TOPK_THREADS / 32)
#define TOPK_PASS_ROWS 64  // a pass: 8 x 4 tiles of 8 x 8 dots, one per 8 lanes
#define TOPK_PASS_COLS 32

typedef struct {
    int B, T, h, g, G, dk, bsz, bsel, n, R, nb, na, nsb, per;
    int A;       // anchors per CUDA block
    int rows;    // A * G query rows
    int rows_p;  // rows padded to whole passes
    int mt;      // pooled keys per tile: whole selection blocks
    int mt_p;    // mt padded to whole passes
    int pst;     // row stride of the staged probabilities: odd, so a tile's 8 rows hit 8 banks
    int d8;      // dk / 8: elements of a residue before the tail
    int rs;      // shared-memory stride of a residue: a multiple of 4 that is 4 mod 8, so that the
                 // 8 lanes of a tile, reading 4 floats of their residues each, hit disjoint banks
    int st;      // shared-memory row stride of the staged q and kc rows
    float scale;
} topk_args;

static size_t topk_smem(const topk_args &a) {
    const size_t floats = (size_t)a.rows_p * a.st + (size_t)a.mt_p * a.st + (size_t)a.rows_p * a.pst +
                          (size_t)a.rows_p * 2 + (size_t)a.A * a.nsb;
    return floats * sizeof(float) + (size_t)a.A * a.nsb;
}

// Copies one q or kc row (dk values at src; zeros when src is NULL) into the residue-major layout, by a warp.
template <typename T>
static __device__ __forceinline__ void topk_stage_row(float *dst, const T *src, const topk_args &a, int lane) {
    const int dk8 = 8 * a.d8;
    for (int k = lane; k < a.dk; k += 32)
        dst[k < dk8 ? (k & 7) * a.rs + (k >> 3) : 8 * a.rs + k - dk8] = src ? ld_f(src + k) : 0.0f;
}

// One lane's residue of an 8x8 tile: acc[i*8 + c] += q_i[e] * k_c[e] over its d8 elements in order
// (q rows and k rows st apart, already offset to the lane's residue).
static __device__ __forceinline__ void topk_tile_dots(float (&acc)[64], const float *qb, const float *kb, int st,
                                                      int d8) {
    int e = 0;
    for (; e + 4 <= d8; e += 4)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {  // four q rows at a time: all eight would spill registers
            float4 qv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) qv[i] = *(const float4 *)(qb + (size_t)(4 * hf + i) * st + e);
#pragma unroll
            for (int c = 0; c < 8; c++) {
                const float4 kv = *(const float4 *)(kb + (size_t)c * st + e);
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float &x = acc[(4 * hf + i) * 8 + c];
                    x = __fadd_rn(x, __fmul_rn(qv[i].x, kv.x));
                    x = __fadd_rn(x, __fmul_rn(qv[i].y, kv.y));
                    x = __fadd_rn(x, __fmul_rn(qv[i].z, kv.z));
                    x = __fadd_rn(x, __fmul_rn(qv[i].w, kv.w));
                }
            }
        }
    for (; e < d8; e++) {
        float qv[8];
#pragma unroll
        for (int i = 0; i < 8; i++) qv[i] = qb[(size_t)i * st + e];
#pragma unroll
        for (int c = 0; c < 8; c++) {
            const float kv = kb[(size_t)c * st + e];
#pragma unroll
            for (int i = 0; i < 8; i++) acc[i * 8 + c] = __fadd_rn(acc[i * 8 + c], __fmul_rn(qv[i], kv));
        }
    }
}

// One butterfly step over 2N values: the lane keeps the upper half when `upper`, adding the partner's
// (lane ^ mask) values of that half; the partner keeps the other half. Addition commutes bit for bit, so
// both lanes of a pair form the same sums.
template <int N>
static __device__ __forceinline__ void topk_combine(const float *in, float *out, bool upper, int mask) {
#pragma unroll
    for (int k = 0; k < N; k++) {
        const float give = upper ? in[k] : in[k + N], keep = upper ? in[k + N] : in[k];
        out[k] = __fadd_rn(keep, __shfl_xor_sync(FULL_MASK, give, mask));
    }
}

template <typename T>
__global__ void __launch_bounds__(TOPK_THREADS, 2)
topk_kernel(topk_args a, int anchor_tiles, const T *q, const T *kc, const float *lse_cmp, int32_t *idx) {
    extern __shared__ __align__(16) float smem[];
    float *Qs = smem, *Ks = Qs + (size_t)a.rows_p * a.st, *P = Ks + (size_t)a.mt_p * a.st;
    float *Ls = P + (size_t)a.rows_p * a.pst;
    int *Nm = (int *)(Ls + a.rows_p);
    float *S = (float *)(Nm + a.rows_p);
    unsigned char *F = (unsigned char *)(S + (size_t)a.A * a.nsb);
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    // Heaviest tiles (the latest anchors) first, so that the grid's tail is short.
    const int at = anchor_tiles - 1 - (int)(blockIdx.x / (a.B * a.g));
    const int b = blockIdx.x % (a.B * a.g) / a.g, j = blockIdx.x % a.g;
    const int a0 = at * a.A, nA = min(a.A, a.na - a0);
    const long krs = (long)a.g * a.dk;
    const T *kg = kc + (long)b * a.nb * krs + (long)j * a.dk;

    // Query rows r = ai*G + hi (anchor a0+ai, head j*G+hi), their lse and number of visible pooled keys;
    // padding rows are zero and see no key.
    for (int r = warp; r < a.rows_p; r += TOPK_WARPS) {
        const int ai = r / a.G, t = (a0 + ai) * a.R;
        if (r < a.rows && ai < nA) {
            const long row = ((long)b * a.T + t) * a.h + j * a.G + r % a.G;
            topk_stage_row(Qs + (size_t)r * a.st, q + row * a.dk, a, lane);
            if (lane == 0) Ls[r] = lse_cmp[row], Nm[r] = min((t + 1) / a.bsz, a.nb);
        } else {
            topk_stage_row(Qs + (size_t)r * a.st, (const T *)NULL, a, lane);
            if (lane == 0) Ls[r] = -INFINITY, Nm[r] = 0;
        }
    }
    const int nm_max = min(((a0 + nA - 1) * a.R + 1) / a.bsz, a.nb);  // the last anchor sees the most
    const int grp = tid / 8, l = tid % 8, rg = grp / 4, cg = grp % 4;
    for (int m0 = 0; m0 < nm_max; m0 += a.mt) {
        __syncthreads();  // the last tile's dots are done with Ks, its scores with P
        for (int mm = warp; mm < a.mt_p; mm += TOPK_WARPS)
            topk_stage_row(Ks + (size_t)mm * a.st, mm < a.mt && m0 + mm < nm_max ? kg + (m0 + mm) * krs : NULL, a,
                           lane);
        __syncthreads();
        for (int rp = 0; rp < a.rows_p; rp += TOPK_PASS_ROWS)
            for (int cp = 0; cp < a.mt_p; cp += TOPK_PASS_COLS) {
                const float *qb = Qs + (size_t)(rp + rg * 8) * a.st, *kb = Ks + (size_t)(cp + cg * 8) * a.st;
                float acc[64];
#pragma unroll
                for (int d = 0; d < 64; d++) acc[d] = 0.0f;
                topk_tile_dots(acc, qb + l * a.rs, kb + l * a.rs, a.st, a.d8);
                // Combine the residues: lanes l, l^4 add (the CPU's 0+4, 1+5, ...), then l, l^1, then
                // l, l^2; at each step a lane keeps half of its dots and hands the partner the other half.
                float r1[32], r2[16], r3[8];
                topk_combine<32>(acc, r1, l & 4, 4);
                topk_combine<16>(r1, r2, l & 1, 1);
                topk_combine<8>(r2, r3, l & 2, 2);
                const int i = (l & 4 ? 4 : 0) + (l & 1 ? 2 : 0) + (l & 2 ? 1 : 0);  // the tile row kept
                const int r = rp + rg * 8 + i;
                const float *qt = qb + (size_t)i * a.st + 8 * a.rs;
#pragma unroll
                for (int c = 0; c < 8; c++) {
                    const float *kt = kb + (size_t)c * a.st + 8 * a.rs;
                    float tail = 0.0f;
                    for (int k = 0; k < a.dk - 8 * a.d8; k++) tail = __fadd_rn(tail, __fmul_rn(qt[k], kt[k]));
                    const float d = __fadd_rn(r3[c], tail);
                    const int col = cp + cg * 8 + c;
                    if (r < a.rows && col < a.mt) {
                        const float L = Ls[r];
                        // A key the row cannot see, or a row with no visible key (lse -inf), adds +0:
                        // the same sum as the CPU's skipping it.
                        P[(size_t)r * a.pst + col] = m0 + col < Nm[r] && L != -INFINITY
                                                        ? expf(__fsub_rn(__fmul_rn(d, a.scale), L))
                                                        : 0.0f;
                    }
                }
            }
        __syncthreads();
        // Scores of the tile's selection blocks: over the heads, then over the pooled keys inside.
        const int ub = a.mt / a.per;
        for (int e = tid; e < nA * ub; e += TOPK_THREADS) {
            const int ai = e / ub, ul = e % ub;
            if (m0 + ul * a.per >= nm_max) continue;
            float sc = 0.0f;
            for (int hi = 0; hi < a.G; hi++) {
                const float *pr = P + (size_t)(ai * a.G + hi) * a.pst + ul * a.per;
                for (int mm = 0; mm < a.per; mm++) sc = __fadd_rn(sc, pr[mm]);
            }
            S[(size_t)ai * a.nsb + m0 / a.per + ul] = sc;
        }
    }
    __syncthreads();
    for (int ai = warp; ai < nA; ai += TOPK_WARPS) {
        const int c = (a0 + ai) * a.R / a.bsel;
        topk_select_row(S + (size_t)ai * a.nsb, F + (size_t)ai * a.nsb, c, a.n,
                        idx + (((long)b * a.na + a0 + ai) * a.g + j) * a.n, lane);
    }
}

#define TOPK16_THREADS 256
#define TOPK16_WARPS (TOPK16_THREADS / 32)
#define TOPK16_ROWS 64  // query rows per block: 4 m-tiles, each split over two warps (32 keys each)
#define TOPK16_COLS 64  // pooled keys per tile

typedef struct {
    int B, T, h, g, G, dk, bsz, bsel, n, R, nb, na, nsb, per;
    int A;       // anchors per CUDA block
    int rows;    // A * G query rows
    int rows_p;  // rows padded to whole m-tiles (16)
    int mt;      // pooled keys per tile: whole selection blocks, at most TOPK16_COLS
    int dk16;    // dk padded to whole k-steps (16); the padding columns are zeros
    int kst;     // bf16 row stride of the staged q and kc rows: dk16 + 8 (16 bytes), 4 banks mod 32
    int pst;     // row stride of the staged probabilities: 8 mod 32, so a warp's float2 stores take two
                 // wavefronts
    int fused;   // the scores are summed in registers (one selection block per pooled key, 16 % G == 0):
                 // no staged probabilities
    int lgG;     // log2 G when fused
    float scale;
} topk16_args;

static size_t topk16_smem(const topk16_args &a) {
    return (size_t)(a.rows_p + 2 * TOPK16_COLS) * a.kst * sizeof(bf16) +
           (size_t)(a.fused ? 0 : a.rows_p * a.pst) * sizeof(float) +
           (size_t)a.rows_p * 2 * sizeof(float) + (size_t)a.A * a.nsb * (sizeof(float) + 1);
}

// Rows [0, n) of a [*, dk] bf16 operand (row r at src + r*srs) into nrows shared rows by cp.async in
// 16-byte segments; rows >= n and columns in [dk, dk16) become zeros. DK16 > 0: dk16 known at compile time
// (the key tiles' copies were an eighth of the kernel's instructions with the divisions below).
template <int DK16>
static __device__ __forceinline__ void topk16_stage(bf16 *dst, const bf16 *src, long srs, int n, int nrows,
                                                    const topk16_args &a) {
    if constexpr (DK16 > 0) {
        constexpr int SEGS = DK16 / 8;
        for (int e = threadIdx.x; e < nrows * SEGS; e += TOPK16_THREADS) {
            const int r = e / SEGS, c = e % SEGS * 8;
            const bool in = r < n && c < a.dk;
            cp16_b16(dst + r * (DK16 + 8) + c, in ? src + r * srs + c : src, in ? 16 : 0);
        }
        return;
    }
    // Thread tid takes segments tid, tid + TOPK16_THREADS, ...: (row, segment) advance by fixed steps, so
    // that the loop divides once (a division by a variable costs as much as the copy).
    const int segs = a.dk16 / 8, dr = TOPK16_THREADS / segs, ds = TOPK16_THREADS % segs;
    int r = threadIdx.x / segs, c = threadIdx.x % segs * 8;
    const bf16 *sp = src + r * srs + c;
    bf16 *dp = dst + (size_t)r * a.kst + c;
    while (r < nrows) {
        const bool in = r < n && c < a.dk;
        cp16_b16(dp, in ? sp : src, in ? 16 : 0);
        r += dr, c += 8 * ds, sp += dr * srs + 8 * ds, dp += (size_t)dr * a.kst + 8 * ds;
        if (c >= 8 * segs) c -= 8 * segs, r++, sp += srs - 8 * segs, dp += a.kst - 8 * segs;
    }
}

#define TOPK16_CACHE 4  // candidates a lane keeps in registers during the selection

// A candidate as one integer that orders as topk_better does: the score's bits + 1 (scores are sums of
// probabilities, never below +0, so their bits order as unsigned integers) above the complemented block
// index (among equal scores the lower index is larger); 0 is no candidate.
static __device__ __forceinline__ unsigned long long topk16_key(float v, int u) {
    return (unsigned long long)(__float_as_uint(v) + 1u) << 32 | (unsigned)~u;
}

// Puts candidate key k into a lane's cache, which stays best (largest) first.
static __device__ __forceinline__ void topk16_insert(unsigned long long (&ck)[TOPK16_CACHE], unsigned long long k) {
    if (k <= ck[TOPK16_CACHE - 1]) return;  // most candidates, one test
#pragma unroll
    for (int e = 0; e < TOPK16_CACHE; e++)
        if (k > ck[e]) {
            const unsigned long long t = ck[e];
            ck[e] = k, k = t;
        }
}

// The lane's best unchosen candidates among u = lane, lane + 32, ... in [1, c-2] into its cache; returns how
// many unchosen candidates the lane has in all.
static __device__ __forceinline__ int topk16_fill(const float *sc, const unsigned char *chosen, int c, int lane,
                                                  unsigned long long (&ck)[TOPK16_CACHE]) {
#pragma unroll
    for (int e = 0; e < TOPK16_CACHE; e++) ck[e] = 0;
    int cnt = 0;
    for (int u = lane ? lane : 32; u <= c - 2; u += 32)
        if (!chosen[u]) topk16_insert(ck, topk16_key(sc[u], u)), cnt++;
    return cnt;
}

// topk_select_row's choice, faster: each lane scans its candidates once into a cache of its best few (a
// lane rescans only when its cache runs out), and a round's warp arg-max is two warp reductions: the
// largest score bits, then the lowest block index among the lanes that hold them.
static __device__ void topk16_select_row(const float *sc, unsigned char *chosen, int c, int n, int32_t *row,
                                         int lane) {
    for (int u = lane; u <= c; u += 32) chosen[u] = u == 0 || u >= c - 1;
    const int nforced = c >= 2 ? 3 : c + 1;
    const int rounds = (c + 1 < n ? c + 1 : n) - nforced;
    unsigned long long ck[TOPK16_CACHE];
    int left = topk16_fill(sc, chosen, c, lane, ck);
    for (int r = 0; r < rounds; r++) {
        const unsigned hi = (unsigned)(ck[0] >> 32);
        const unsigned best = __reduce_max_sync(FULL_MASK, hi);
        const int i = (int)~__reduce_max_sync(FULL_MASK, hi == best ? (unsigned)ck[0] : 0u);
        if (i % 32 == lane) {  // the winner is this lane's cache head
            chosen[i] = 1;
#pragma unroll
            for (int e = 0; e + 1 < TOPK16_CACHE; e++) ck[e] = ck[e + 1];
            ck[TOPK16_CACHE - 1] = 0;
            if (--left > 0 && ck[0] == 0) topk16_fill(sc, chosen, c, lane, ck);
        }
    }
    __syncwarp();
    topk_write_row(chosen, c, n, row, lane);
}

// The scores of one (m-tile, key half) unit from its probabilities, summed over each anchor's G rows without
// leaving the registers. v[hf][k]: row r0 + gr + 8*hf, pooled key c0 + (k/2)*8 + 2*cc + k%2 (gr = lane/4,
// cc = lane%4). An anchor's rows are 2^LG consecutive values of gr (LG = log2 min(G, 8); G = 16 adds the two
// halves first), so a reduce-scatter over those lane bits sums them: round b gives the lane across gr bit b
// the keys whose bit b differs from that lane's and adds the ones it gets back. After it a lane holds the
// keys whose low LG bits are its gr's, in the slots whose low LG bits are 0. Every key gets the same tree of additions, so
// blocks with equal probabilities get bitwise equal scores and exact ties stay ties. NHF: the halves hf < NHF
// hold scores (1 when G = 16, whose halves were added first).
template <int LG, int NHF>
static __device__ __forceinline__ void topk16_unit_scores(float (&v)[2][8], int lane, int lgG, int r0, int c0, int m0,
                                                          int nA, int nm_max, int nsb, float *S) {
    const int gr = lane / 4, cc = lane % 4;
#pragma unroll
    for (int b = 0; b < LG; b++) {
        const bool up = lane & (4 << b);
#pragma unroll
        for (int hf = 0; hf < NHF; hf++)
#pragma unroll
            for (int k = 0; k < 8; k++)
                if ((k & ((2 << b) - 1)) == 0) {  // live slots: low b+1 bits 0; partner slot k + 2^b
                    const float give = up ? v[hf][k] : v[hf][k + (1 << b)];
                    const float keep = up ? v[hf][k + (1 << b)] : v[hf][k];
                    v[hf][k] = keep + __shfl_xor_sync(FULL_MASK, give, 4 << b);
                }
    }
#pragma unroll
    for (int hf = 0; hf < NHF; hf++) {
        const int ai = (r0 + 8 * hf + gr) >> lgG;
        if (ai >= nA) continue;
#pragma unroll
        for (int k = 0; k < 8; k += 1 << LG) {
            const int key = k | (gr & ((1 << LG) - 1)), m = m0 + c0 + (key >> 1) * 8 + 2 * cc + (key & 1);
            if (m < nm_max) S[(size_t)ai * nsb + m] = v[hf][k];
        }
    }
}

// Three blocks per multiprocessor (80 registers, a few bytes spilled): the kernel waits on latency (shared
// memory, shuffles, the selection's reductions), and 24 warps hide more of it than 16 (65536: 7.15 -> 5.68 ms).
// DK16 > 0: a.dk16 at compile time (the products' k loop unrolled), 0: any.
template <int DK16>
__global__ void __launch_bounds__(TOPK16_THREADS, 3)
topk16_kernel(topk16_args a, int anchor_tiles, const bf16 *q, const bf16 *kc, const float *lse_cmp, int32_t *idx) {
    extern __shared__ __align__(16) unsigned char smem16[];
    const int dk16 = DK16 > 0 ? DK16 : a.dk16, kst = DK16 > 0 ? DK16 + 8 : a.kst;
    bf16 *Qs = (bf16 *)smem16, *Ks = Qs + (size_t)a.rows_p * kst;  // Ks: two key tiles
    float *P = (float *)(Ks + (size_t)2 * TOPK16_COLS * kst);
    float *Ls = P + (size_t)(a.fused ? 0 : a.rows_p * a.pst);
    int *Nm = (int *)(Ls + a.rows_p);
    float *S = (float *)(Nm + a.rows_p);
    unsigned char *F = (unsigned char *)(S + (size_t)a.A * a.nsb);
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const float sl2 = a.scale * LOG2E;
    const int at = anchor_tiles - 1 - (int)(blockIdx.x / (a.B * a.g));  // heaviest tiles first
    const int b = blockIdx.x % (a.B * a.g) / a.g, j = blockIdx.x % a.g;
    const int a0 = at * a.A, nA = min(a.A, a.na - a0);
    const long krs = (long)a.g * a.dk;
    const bf16 *kg = kc + (long)b * a.nb * krs + (long)j * a.dk;
    const int nm_max = min(((a0 + nA - 1) * a.R + 1) / a.bsz, a.nb);  // the last anchor sees the most

    // Query rows r = ai*G + hi (anchor a0+ai, head j*G+hi): the G rows of an anchor are consecutive in q,
    // and so are the anchors' rows when R = 1; row by row in general.
    {
        const int segs = a.dk16 / 8, dr = TOPK16_THREADS / segs, ds = TOPK16_THREADS % segs;  // as topk16_stage
        for (int r = tid / segs, c = tid % segs * 8; r < a.rows_p;) {
            const int ai = r / a.G;
            const bool in = r < a.rows && ai < nA && c < a.dk;
            const long row = ((long)b * a.T + (long)(a0 + ai) * a.R) * a.h + j * a.G + r - ai * a.G;
            cp16_b16(Qs + (size_t)r * kst + c, in ? q + row * a.dk + c : q, in ? 16 : 0);
            r += dr, c += 8 * ds;
            if (c >= 8 * segs) c -= 8 * segs, r++;
        }
    }
    for (int r = tid; r < a.rows_p; r += TOPK16_THREADS) {
        const int ai = r / a.G, t = (a0 + ai) * a.R;
        const bool in = r < a.rows && ai < nA;
        const long row = ((long)b * a.T + t) * a.h + j * a.G + r % a.G;
        Ls[r] = in ? lse_cmp[row] * LOG2E : -INFINITY;
        Nm[r] = in ? min((t + 1) / a.bsz, a.nb) : 0;
    }
    topk16_stage<DK16>(Ks, kg, krs, min(a.mt, nm_max), TOPK16_COLS, a);
    cp_commit();

    const int nunits = a.rows_p / 16 * 2;  // (m-tile, key half) pairs
    for (int m0 = 0, buf = 0; m0 < nm_max; m0 += a.mt, buf ^= 1) {
        cp_wait<0>();
        __syncthreads();  // this tile (and q) staged; the last tile's scores are done with P
        if (m0 + a.mt < nm_max) {
            topk16_stage<DK16>(Ks + (size_t)(buf ^ 1) * TOPK16_COLS * kst, kg + (m0 + a.mt) * krs, krs,
                               min(a.mt, nm_max - m0 - a.mt), TOPK16_COLS, a);
            cp_commit();
        }
        const bf16 *Kt = Ks + (size_t)buf * TOPK16_COLS * kst;
        for (int u = warp; u < nunits; u += TOPK16_WARPS) {
            const int r0 = u / 2 * 16, c0 = u % 2 * 32;
            float acc[4][4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
            // ldmatrix row addresses: A tiles (rows 0-7 | 8-15) x (k 0-7 | 8-15), B tiles (keys 0-7, k lo |
            // k hi), then keys 8-15
            const bf16 *qa = Qs + (size_t)(r0 + (lane & 15)) * kst + (lane >> 4) * 8;
            const bf16 *kb = Kt + (size_t)(c0 + (lane >> 4) * 8 + (lane & 7)) * kst + ((lane >> 3) & 1) * 8;
#pragma unroll
            for (int k0 = 0; k0 < dk16; k0 += 16) {
                uint32_t af[4], b0[4], b1[4];
                ldsm16_x4(af, qa + k0);
                ldsm16_x4(b0, kb + k0);
                ldsm16_x4(b1, kb + (size_t)16 * kst + k0);
                mma16(acc[0], af, b0[0], b0[1]);
                mma16(acc[1], af, b0[2], b0[3]);
                mma16(acc[2], af, b1[0], b1[1]);
                mma16(acc[3], af, b1[2], b1[3]);
            }
            // v[hf][nt*2 + x]: row r0 + gr + 8*hf, pooled key c0 + nt*8 + 2*cc + x. As the fp32 path: an invisible
            // key, or a row with no visible key (padding rows too: L = -inf), adds +0 (the exp is taken
            // regardless and discarded: cheaper than a branch per element). Rows that see the whole tile, all
            // but the last tile of a block, skip the test.
            const int gr = lane / 4, cc = lane % 4;
            float v[2][8];  // [hf][nt * 2 + x]
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const float Lb = Ls[r0 + gr + 8 * hf];  // lse * log2(e)
                const int vis = Lb != -INFINITY ? Nm[r0 + gr + 8 * hf] - m0 : 0;
                if (vis >= TOPK16_COLS) {
#pragma unroll
                    for (int k = 0; k < 8; k++) v[hf][k] = ex2(fmaf(acc[k / 2][2 * hf + k % 2], sl2, -Lb));
                } else {
#pragma unroll
                    for (int k = 0; k < 8; k++) {
                        const float e = ex2(fmaf(acc[k / 2][2 * hf + k % 2], sl2, -Lb));
                        v[hf][k] = c0 + k / 2 * 8 + 2 * cc + k % 2 < vis ? e : 0.0f;
                    }
                }
            }
            if (!a.fused) {
#pragma unroll
                for (int hf = 0; hf < 2; hf++)
#pragma unroll
                    for (int nt = 0; nt < 4; nt++)
                        *(float2 *)(P + (size_t)(r0 + gr + 8 * hf) * a.pst + c0 + nt * 8 + 2 * cc) =
                            make_float2(v[hf][2 * nt], v[hf][2 * nt + 1]);
                continue;
            }
            switch (a.lgG) {
            case 0: topk16_unit_scores<0, 2>(v, lane, a.lgG, r0, c0, m0, nA, nm_max, a.nsb, S); break;
            case 1: topk16_unit_scores<1, 2>(v, lane, a.lgG, r0, c0, m0, nA, nm_max, a.nsb, S); break;
            case 2: topk16_unit_scores<2, 2>(v, lane, a.lgG, r0, c0, m0, nA, nm_max, a.nsb, S); break;
            case 3: topk16_unit_scores<3, 2>(v, lane, a.lgG, r0, c0, m0, nA, nm_max, a.nsb, S); break;
            default:  // G = 16: the two halves are one anchor's rows; add them, then reduce the first alone
#pragma unroll
                for (int k = 0; k < 8; k++) v[0][k] += v[1][k];
                topk16_unit_scores<3, 1>(v, lane, a.lgG, r0, c0, m0, nA, nm_max, a.nsb, S);
                break;
            }
        }
        if (a.fused) continue;
        __syncthreads();
        // Scores of the tile's selection blocks: over the heads, then over the pooled keys inside.
        const int ub = a.mt / a.per;
        if (a.per == 1) {
            // Four consecutive selection blocks a thread (mt = TOPK16_COLS), a float4 of P per head.
            const int uq = ub / 4;
            for (int e = tid; e < nA * uq; e += TOPK16_THREADS) {
                const int ai = e / uq, ul = e % uq * 4;
                if (m0 + ul >= nm_max) continue;
                float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                const float *pr = P + (size_t)ai * a.G * a.pst + ul;
#pragma unroll 4
                for (int hi = 0; hi < a.G; hi++) {
                    const float4 p = *(const float4 *)(pr + (size_t)hi * a.pst);
                    sc[0] = __fadd_rn(sc[0], p.x), sc[1] = __fadd_rn(sc[1], p.y);
                    sc[2] = __fadd_rn(sc[2], p.z), sc[3] = __fadd_rn(sc[3], p.w);
                }
                float *so = S + (size_t)ai * a.nsb + m0 + ul;
#pragma unroll
                for (int x = 0; x < 4; x++)
                    if (m0 + ul + x < nm_max) so[x] = sc[x];
            }
        } else {
            for (int e = tid; e < nA * ub; e += TOPK16_THREADS) {
                const int ai = e / ub, ul = e % ub;
                if (m0 + ul * a.per >= nm_max) continue;
                float sc = 0.0f;
                for (int hi = 0; hi < a.G; hi++) {
                    const float *pr = P + (size_t)(ai * a.G + hi) * a.pst + ul * a.per;
                    for (int mm = 0; mm < a.per; mm++) sc = __fadd_rn(sc, pr[mm]);
                }
                S[(size_t)ai * a.nsb + m0 / a.per + ul] = sc;
            }
        }
    }
    cp_wait<0>();  // an anchor tile that sees no pooled key never waited for its staging
    __syncthreads();
    for (int ai = warp; ai < nA; ai += TOPK16_WARPS) {
        const int c = (a0 + ai) * a.R / a.bsel;
        topk16_select_row(S + (size_t)ai * a.nsb, F + (size_t)ai * a.nsb, c, a.n,
                          idx + (((long)b * a.na + a0 + ai) * a.g + j) * a.n, lane);
    }
}

// Hopper (asa_backend_cuda_tma), scores summed in registers (a.fused), dk 64, 128 or 160: the work of
// topk16_kernel with the dots on warpgroup MMA. One warpgroup holds 64 query rows as the M side (warp w the
// rows of m-tile w, in the accumulator layout of mma.sync, so the exponentials and the sums over each
// anchor's rows are topk16_kernel's), against tiles of 64 pooled keys: 8 (dk 64: 4, dk 160: 10) products
// where the warps issued 32 ldmatrix and 64 mma.sync each, from swizzled tiles with no A fragments in
// registers. The key tiles come by TMA (thread 0 asks for 64 rows in boxes of 64 columns of kc [B*nb, g*dk];
// rows past the anchors' last visible key are loaded and masked; at dk 160 the third box, half read and never
// multiplied, runs into the next group's columns or the map's zero fill), so the warps issue no copies.
#define TOPK_WG_THREADS 128
#define TOPK_WG_DIMS(DK) ((DK) == 64 || (DK) == 128 || (DK) == 160)
template <int DK>
struct topk_wg_smem {
    static constexpr int KP = (DK + 63) / 64 * 64, TILE = TOPK16_COLS * KP * 2;  // 64 rows of whole boxes
    static size_t bytes(const topk16_args &a) {  // q, two key tiles, lse and visible keys per row, scores, chosen
        return 3 * (size_t)TILE + 64 * 2 * sizeof(float) + (size_t)a.A * a.nsb * (sizeof(float) + 1) + 1024;
    }
};

template <int DK>
__global__ void __launch_bounds__(TOPK_WG_THREADS, 3)
topk16_wg_kernel(topk16_args a, int anchor_tiles, const bf16 *q, const float *lse_cmp, int32_t *idx,
                 const __grid_constant__ CUtensorMap tk) {
#if ASA_WGMMA
    using SM = topk_wg_smem<DK>;
    constexpr int BOXES = SM::KP / 64;
    __shared__ uint64_t bar[2];  // one per key tile buffer
    extern __shared__ float4 smem4[];
    char *Qs = (char *)(((uintptr_t)smem4 + 1023) & ~(uintptr_t)1023), *Ks = Qs + SM::TILE;  // Ks: two tiles
    float *Ls = (float *)(Ks + 2 * SM::TILE);
    int *Nm = (int *)(Ls + 64);
    float *S = (float *)(Nm + 64);
    unsigned char *F = (unsigned char *)(S + (size_t)a.A * a.nsb);
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, gr = lane / 4, cc = lane % 4;
    const float sl2 = a.scale * LOG2E;
    const int at = anchor_tiles - 1 - (int)(blockIdx.x / (a.B * a.g));  // heaviest tiles first
    const int b = blockIdx.x % (a.B * a.g) / a.g, j = blockIdx.x % a.g;
    const int a0 = at * a.A, nA = min(a.A, a.na - a0);
    const int nm_max = min(((a0 + nA - 1) * a.R + 1) / a.bsz, a.nb);  // the last anchor sees the most
    // key tile x (pooled keys 64x ..) into buffer x % 2, counted on bar[x % 2]
    auto fetch = [&](int x) {
        mbar_arrive_bytes(&bar[x % 2], BOXES * 64 * 128);
#pragma unroll
        for (int bx = 0; bx < BOXES; bx++)
            tma_load_2d(Ks + (x % 2) * SM::TILE + bx * 64 * 128, &tk, j * DK + 64 * bx, b * a.nb + 64 * x, &bar[x % 2]);
    };
    if (tid == 0) {
        mbar_init(&bar[0]), mbar_init(&bar[1]);
        if (nm_max > 0) fetch(0);
    }

    // query rows r = ai*G + hi (anchor a0+ai, head j*G+hi), as topk16_kernel's
    for (unsigned e = tid; e < 64 * (DK / 8); e += TOPK_WG_THREADS) {
        const int r = (int)(e / (DK / 8)), u = (int)(e % (DK / 8)), ai = r / a.G;
        const bool in = r < a.rows && ai < nA && u * 8 < a.dk;
        const long row = ((long)b * a.T + (long)(a0 + ai) * a.R) * a.h + j * a.G + r - ai * a.G;
        cp16_b16((bf16 *)(Qs + sw128_off(64, r, u)), in ? q + row * a.dk + u * 8 : q, in ? 16 : 0);
    }
    for (int r = tid; r < 64; r += TOPK_WG_THREADS) {
        const int ai = r / a.G, t = (a0 + ai) * a.R;
        const bool in = r < a.rows && ai < nA;
        const long row = ((long)b * a.T + t) * a.h + j * a.G + r % a.G;
        Ls[r] = in ? lse_cmp[row] * LOG2E : -INFINITY;
        Nm[r] = in ? min((t + 1) / a.bsz, a.nb) : 0;
    }
    cp_commit();
    cp_wait<0>();
    fence_proxy_async();  // cp.async wrote q; wgmma reads it through the async proxy

    for (int m0 = 0, x = 0; m0 < nm_max; m0 += TOPK16_COLS, x++) {
        __syncthreads();  // q, lse and the visible keys staged (x = 0); the other buffer's products are done
        if (tid == 0 && m0 + TOPK16_COLS < nm_max) fetch(x + 1);
        mbar_wait(&bar[x % 2], (x / 2) & 1);
        const char *Kt = Ks + (x % 2) * SM::TILE;
        float acc[8][4];
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < DK / 16; kk++) wg_m64n64_ss(acc, wg_desc_k(Qs, 64, kk), wg_desc_k(Kt, 64, kk), kk > 0);
        wg_commit();
        wg_wait();
        wg_hold<8>(acc);
        float Lb[2];
        int vis[2];
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            Lb[hf] = Ls[warp * 16 + gr + 8 * hf];
            vis[hf] = Lb[hf] != -INFINITY ? Nm[warp * 16 + gr + 8 * hf] - m0 : 0;
        }
        // the two halves of 32 keys as topk16_kernel's units (m-tile warp, key half kh)
#pragma unroll
        for (int kh = 0; kh < 2; kh++) {
            float v[2][8];
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                if (vis[hf] >= TOPK16_COLS) {
#pragma unroll
                    for (int k = 0; k < 8; k++) v[hf][k] = ex2(fmaf(acc[4 * kh + k / 2][2 * hf + k % 2], sl2, -Lb[hf]));
                } else {
#pragma unroll
                    for (int k = 0; k < 8; k++) {
                        const float e = ex2(fmaf(acc[4 * kh + k / 2][2 * hf + k % 2], sl2, -Lb[hf]));
                        v[hf][k] = 32 * kh + k / 2 * 8 + 2 * cc + k % 2 < vis[hf] ? e : 0.0f;
                    }
                }
            }
            const int r0 = warp * 16, c0 = 32 * kh;
            switch (a.lgG) {
            case 0: topk16_unit_scores<0, 2>(v, lane, a.lgG, r0, c0, m0, nA, nm_max, a.nsb, S); break;
            case 1: topk16_unit_scores<1, 2>(v, lane, a.lgG, r0, c0, m0, nA, nm_max, a.nsb, S); break;
            case 2: topk16_unit_scores<2, 2>(v, lane, a.lgG, r0, c0, m0, nA, nm_max, a.nsb, S); break;
            case 3: topk16_unit_scores<3, 2>(v, lane, a.lgG, r0, c0, m0, nA, nm_max, a.nsb, S); break;
            default:
#pragma unroll
                for (int k = 0; k < 8; k++) v[0][k] += v[1][k];
                topk16_unit_scores<3, 1>(v, lane, a.lgG, r0, c0, m0, nA, nm_max, a.nsb, S);
                break;
            }
        }
    }
    __syncthreads();
    for (int ai = warp; ai < nA; ai += TOPK_WG_THREADS / 32) {
        const int c = (a0 + ai) * a.R / a.bsel;
        topk16_select_row(S + (size_t)ai * a.nsb, F + (size_t)ai * a.nsb, c, a.n,
                          idx + (((long)b * a.na + a0 + ai) * a.g + j) * a.n, lane);
    }
#else
    __trap();  // launched only on Hopper
#endif
}

// The bf16 tensor-core path, when the shape allows it: rows 16-byte aligned (dk a multiple of 8), selection
// blocks of at most one key tile, and the shared memory. Returns false to leave the call to topk_kernel.
static bool topk16_launch(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc,
                          const float *lse_cmp, int32_t *idx) {
    const int per = s->selection_block_size / s->block_size;
    if (be->act != ASA_BF16 || s->dk % 8 != 0 || per > TOPK16_COLS || ((uintptr_t)q & 15) || ((uintptr_t)kc & 15))
        return false;
    topk16_args a;
    a.B = s->B, a.T = s->T, a.h = s->h, a.g = s->g, a.G = s->h / s->g, a.dk = s->dk;
    a.bsz = s->block_size, a.bsel = s->selection_block_size, a.n = s->block_counts, a.R = s->selection_share;
    a.nb = asa_attn_num_cmp_blocks(s), a.na = asa_attn_num_anchors(s), a.nsb = (s->T + a.bsel - 1) / a.bsel;
    a.per = per, a.scale = s->scale;
    a.mt = TOPK16_COLS / per * per;
    a.dk16 = (a.dk + 15) / 16 * 16;
    a.kst = a.dk16 + 8;
    a.pst = TOPK16_COLS + 8;
    a.fused = per == 1 && a.G <= 16 && 16 % a.G == 0;
    for (a.lgG = 0; (1 << a.lgG) < a.G;) a.lgG++;
    a.A = TOPK16_ROWS / a.G > 1 ? TOPK16_ROWS / a.G : 1;
    if (a.A > a.na) a.A = a.na;
    const size_t max_smem = (size_t)cuda_ctx_of(be)->max_smem;
    for (;;) {
        a.rows = a.A * a.G;
        a.rows_p = (a.rows + 15) / 16 * 16;
        if (topk16_smem(a) <= max_smem) break;
        if (a.A == 1) return false;
        a.A /= 2;
    }
    const int tiles = (a.na + a.A - 1) / a.A;
    const long blocks = (long)tiles * a.B * a.g;
    ASA_CHECK(blocks <= 0x7fffffffL);
    CUtensorMap tk;
    if (cuda_ctx_of(be)->use_tma && a.fused && TOPK_WG_DIMS(a.dk) && a.A * a.G <= 64 &&
        cuda_tma_map(&tk, kc, (long)a.B * a.nb, (long)a.g * a.dk)) {
        size_t smem = 0;
        void (*kernel)(topk16_args, int, const bf16 *, const float *, int32_t *, const CUtensorMap) = NULL;
        if (a.dk == 64) kernel = topk16_wg_kernel<64>, smem = topk_wg_smem<64>::bytes(a);
        if (a.dk == 128) kernel = topk16_wg_kernel<128>, smem = topk_wg_smem<128>::bytes(a);
        if (a.dk == 160) kernel = topk16_wg_kernel<160>, smem = topk_wg_smem<160>::bytes(a);
        if (smem <= max_smem) {
            attn_allow_smem((const void *)kernel, smem);
            kernel<<<(unsigned)blocks, TOPK_WG_THREADS, smem>>>(a, tiles, (const bf16 *)q, lse_cmp, idx, tk);
            CUDA_LAUNCH_CHECK();
            return true;
        }
    }
    const size_t smem = topk16_smem(a);
    // the head dims of the shipped configs (64, 128; 160 = latent 128 + RoPE 32) unrolled, others at run time
    void (*kernel)(topk16_args, int, const bf16 *, const bf16 *, const float *, int32_t *) =
        a.dk16 == 64 ? topk16_kernel<64> : a.dk16 == 128 ? topk16_kernel<128> : a.dk16 == 160 ? topk16_kernel<160>
                                                                                             : topk16_kernel<0>;
    attn_allow_smem((const void *)kernel, smem);
    kernel<<<(unsigned)blocks, TOPK16_THREADS, smem>>>(a, tiles, (const bf16 *)q, (const bf16 *)kc, lse_cmp, idx);
    CUDA_LAUNCH_CHECK();
    return true;
}

void cuda_select_topk(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc, const float *lse_cmp,
                      int32_t *idx) {
    attn_check_dims(s);
    ASA_CHECK(s->selection_block_size % s->block_size == 0 && s->block_counts >= 3);
    topk_args a;
    a.B = s->B, a.T = s->T, a.h = s->h, a.g = s->g, a.G = s->h / s->g, a.dk = s->dk;
    a.bsz = s->block_size, a.bsel = s->selection_block_size, a.n = s->block_counts, a.R = s->selection_share;
    a.nb = asa_attn_num_cmp_blocks(s), a.na = asa_attn_num_anchors(s), a.nsb = (s->T + a.bsel - 1) / a.bsel;
    a.per = a.bsel / a.bsz, a.scale = s->scale;
    if ((long)a.B * a.na * a.g == 0) return;
    if (topk16_launch(be, s, q, kc, lse_cmp, idx)) return;
    a.mt = a.per <= TOPK_PASS_COLS ? TOPK_PASS_COLS / a.per * a.per : a.per;
    a.mt_p = (a.mt + TOPK_PASS_COLS - 1) / TOPK_PASS_COLS * TOPK_PASS_COLS;
    a.pst = a.mt | 1;
    a.d8 = a.dk / 8;
    a.rs = (a.d8 + 3) / 4 * 4;
    if (a.rs % 8 == 0) a.rs += 4;
    a.st = (8 * a.rs + a.dk - 8 * a.d8 + 3) / 4 * 4;
    // About one pass of rows per block; fewer anchors when shared memory is short (long sequences keep
    // A * nsb scores).
    a.A = TOPK_PASS_ROWS / a.G > 1 ? TOPK_PASS_ROWS / a.G : 1;
    if (a.A > a.na) a.A = a.na;
    const size_t max_smem = (size_t)cuda_ctx_of(be)->max_smem;
    for (;;) {
        a.rows = a.A * a.G;
        a.rows_p = (a.rows + TOPK_PASS_ROWS - 1) / TOPK_PASS_ROWS * TOPK_PASS_ROWS;
        if (topk_smem(a) <= max_smem) break;
        if (a.A == 1)
            asa_fatal("CUDA select_topk: %zu bytes of shared memory needed (%d heads per group, head dim %d, %d "
                      "selection blocks), the device has %zu", topk_smem(a), a.G, a.dk, a.nsb, max_smem);
        a.A /= 2;
    }
    const int tiles = (a.na + a.A - 1) / a.A;
    const long blocks = (long)tiles * a.B * a.g;
    ASA_CHECK(blocks <= 0x7fffffffL);
    const size_t smem = topk_smem(a);
    DISPATCH_ACT(be, {
        attn_allow_smem((const void *)topk_kernel<act_t>, smem);
        topk_kernel<act_t><<<(unsigned)blocks, TOPK_THREADS, smem>>>(a, tiles, (const act_t *)q, (const act_t *)kc,
                                                                     lse_cmp, idx);
    });
    CUDA_LAUNCH_CHECK();
}
