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
#include "backend/cuda/attn_kernels.cuh"

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

// (v1, i1) ranks above (v2, i2): higher score, ties to the lower block index; i < 0 is no candidate.
static __device__ __forceinline__ bool topk_better(float v1, int i1, float v2, int i2) {
    return i1 >= 0 && (i2 < 0 || v1 > v2 || (v1 == v2 && i1 < i2));
}

// The lane's best unchosen candidate among u = lane, lane + 32, ... in [1, c-2].
static __device__ __forceinline__ void topk_lane_best(const float *sc, const unsigned char *chosen, int c, int lane,
                                                      float &bv, int &bi) {
    bi = -1;
    bv = 0.0f;
    for (int u = lane; u <= c - 2; u += 32)
        if (u >= 1 && !chosen[u] && topk_better(sc[u], u, bv, bi)) bv = sc[u], bi = u;
}

// SPEC §4's choice for one anchor (current selection block c) from its scores sc[0..c], by one warp:
// forced blocks 0, c-1, c, then rounds of a warp arg-max over the candidates; row[0..n) ascending, -1 padded.
static __device__ void topk_select_row(const float *sc, unsigned char *chosen, int c, int n, int32_t *row, int lane) {
    for (int u = lane; u <= c; u += 32) chosen[u] = u == 0 || u >= c - 1;
    const int nforced = c >= 2 ? 3 : c + 1;
    const int rounds = (c + 1 < n ? c + 1 : n) - nforced;
    float bv;
    int bi;
    topk_lane_best(sc, chosen, c, lane, bv, bi);
    for (int r = 0; r < rounds; r++) {
        float v = bv;
        int i = bi;
        for (int o = 16; o > 0; o >>= 1) {
            const float v2 = __shfl_xor_sync(FULL_MASK, v, o);
            const int i2 = __shfl_xor_sync(FULL_MASK, i, o);
            if (topk_better(v2, i2, v, i)) v = v2, i = i2;
        }
        // The order is total (indices differ), so every lane holds the same winner; its owner rescans.
        if (i % 32 == lane) {
            chosen[i] = 1;
            topk_lane_best(sc, chosen, c, lane, bv, bi);
        }
    }
    __syncwarp();
    int cnt = 0;
    for (int base = 0; base <= c; base += 32) {
        const int u = base + lane;
        const bool f = u <= c && chosen[u];
        const unsigned m = __ballot_sync(FULL_MASK, f);
        if (f) row[cnt + __popc(m & ((1u << lane) - 1))] = u;
        cnt += __popc(m);
    }
    for (int e = cnt + lane; e < n; e += 32) row[e] = -1;
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
