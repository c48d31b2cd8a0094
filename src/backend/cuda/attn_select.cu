// CUDA selected branch (SPEC §4): attention over the selected blocks (attn_slc_fwd / attn_slc_bwd), fp32
// CUDA-core kernels bit-compatible with the CPU; in tf32 and bf16 modes they hand over to the tensor-core
// kernels of attn_slc_mma.cu, and the bf16 mode first to the bf16 ones of attn_slc16.cu. The block
// selection itself is in select_topk.cu. Work is proportional to the keys each query actually reads;
// nothing T×T or T×nb is stored. The kernels are templates over the storage type T of the activation
// tensors (loads with ld_f into fp32 shared tiles, stores with st_f).
#include "backend/cuda/attn_kernels.cuh"
#include "backend/cuda/attn_slc16.cuh"
#include "backend/cuda/attn_slc_lists.cuh"
#include "backend/cuda/attn_slc_mma.cuh"

typedef struct {
    int B, T, h, g, dk, dv, bsz, bsel, n, R, nb, na, nsb;
    float scale;
} slc_args;

static slc_args slc_make(const asa_attn_shape *s) {
    slc_args a = {s->B, s->T, s->h, s->g, s->dk, s->dv, s->block_size, s->selection_block_size, s->block_counts,
                  s->selection_share, asa_attn_num_cmp_blocks(s), asa_attn_num_anchors(s),
                  (s->T + s->selection_block_size - 1) / s->selection_block_size, s->scale};
    return a;
}

// The forward and dq kernels give a block the rows that share one block list: the R queries of anchor
// a times the G heads of group j (row rho: t = a*R + rho / G, head j*G + rho % G), at most
// SLC_MAX_WARPS per block, one warp each. The listed blocks' keys are staged in shared memory tiles once
// for all of them, and each warp folds in the tokens s <= t of its own query.
#define SLC_MAX_WARPS 16

typedef struct {
    int warps, chunks;  // warps per block, blocks per (anchor, group)
} slc_rows;

static slc_rows slc_rows_of(const slc_args &a) {
    const int rows = a.R * (a.h / a.g);
    slc_rows r = {rows < SLC_MAX_WARPS ? rows : SLC_MAX_WARPS, 0};
    r.chunks = (rows + r.warps - 1) / r.warps;
    return r;
}

// Decodes the block's (b, anchor, group) and this warp's query row; false when the warp has no row.
static __device__ __forceinline__ bool slc_row_of(const slc_args &a, int warps, int chunks, int wib, int &b, int &an,
                                                 int &j, int &t, long &r) {
    const int G = a.h / a.g;
    const int chunk = blockIdx.x % chunks;
    j = blockIdx.x / chunks % a.g, an = blockIdx.x / (chunks * a.g) % a.na, b = blockIdx.x / (chunks * a.g * a.na);
    const int rho = chunk * warps + wib;
    t = an * a.R + rho / G;
    r = ((long)b * a.T + t) * a.h + j * G + rho % G;
    return rho < a.R * G && t < a.T;
}

template <typename T, int COLS>
__global__ void __launch_bounds__(SLC_MAX_WARPS * 32)
slc_fwd_kernel(slc_args a, int warps, int chunks, int tile, int kst, const T *q, const T *k, const T *v,
               const int32_t *idx, T *o, float *lse) {
    extern __shared__ float smem[];
    float *Ks = smem, *Vs = Ks + tile * kst, *Qs = Vs + tile * a.dv;
    const int lane = threadIdx.x % 32, wib = threadIdx.x / 32;
    int b, an, j, t;
    long r;
    const bool active = slc_row_of(a, warps, chunks, wib, b, an, j, t, r);
    const int tmax = min(an * a.R + a.R, a.T) - 1;  // the block's last query
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const T *kg = k + (long)b * a.T * krs + (long)j * a.dk, *vg = v + (long)b * a.T * vrs + (long)j * a.dv;
    float *qs = Qs + wib * a.dk;
    if (active) warp_load(qs, q + r * a.dk, a.dk, lane);
    const int32_t *row = idx + (((long)b * a.na + an) * a.g + j) * a.n;
    float mx = -INFINITY, l = 0.0f, acc[COLS];
#pragma unroll
    for (int c = 0; c < COLS; c++) acc[c] = 0.0f;
    for (int e = 0; e < a.n; e++) {
        const int u = row[e];
        if (u < 0) continue;
        const int s1 = min((u + 1) * a.bsel, tmax + 1);
        for (int c0 = u * a.bsel; c0 < s1; c0 += tile) {
            const int cn = min(tile, s1 - c0);
            __syncthreads();
            block_stage(Ks, kst, kg + c0 * krs, krs, cn, a.dk);
            block_stage(Vs, a.dv, vg + c0 * vrs, vrs, cn, a.dv);
            __syncthreads();
            const int w1 = active ? min(c0 + cn, t + 1) : c0;
            if (c0 < w1)
                warp_fold_keys(qs, Ks, Vs, kst, a.dv, a.dk, a.dv, a.scale, 0, w1 - c0, mx, l, acc, lane);
        }
    }
    if (!active) return;
    T *orow = o + r * a.dv;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // an empty list gives o = 0, lse = -inf
#pragma unroll
    for (int c = 0; c < COLS; c++)
        if (lane + 32 * c < a.dv) st_f(orow + lane + 32 * c, acc[c] * inv);
    if (lane == 0) lse[r] = l > 0.0f ? mx + logf(l) : -INFINITY;
}

template <typename T, int COLS>
__global__ void __launch_bounds__(SLC_MAX_WARPS * 32)
slc_dq_kernel(slc_args a, int warps, int chunks, int tile, int kst, int vst, const T *q, const T *k, const T *v,
              const int32_t *idx, const float *lse, const float *D, const T *dout, T *dq) {
    extern __shared__ float smem[];
    float *Ks = smem, *Vs = Ks + tile * kst, *Qs = Vs + tile * vst;
    const int lane = threadIdx.x % 32, wib = threadIdx.x / 32;
    int b, an, j, t;
    long r;
    bool active = slc_row_of(a, warps, chunks, wib, b, an, j, t, r);
    const float L = active ? lse[r] : 0.0f, Dn = active ? D[r] : 0.0f;
    active = active && L != -INFINITY;
    const int tmax = min(an * a.R + a.R, a.T) - 1;
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const T *kg = k + (long)b * a.T * krs + (long)j * a.dk, *vg = v + (long)b * a.T * vrs + (long)j * a.dv;
    float *qs = Qs + wib * (a.dk + a.dv), *dos = qs + a.dk;
    if (active) {
        warp_load(qs, q + r * a.dk, a.dk, lane);
        warp_load(dos, dout + r * a.dv, a.dv, lane);
    }
    const int32_t *row = idx + (((long)b * a.na + an) * a.g + j) * a.n;
    float acc[COLS];
#pragma unroll
    for (int c = 0; c < COLS; c++) acc[c] = 0.0f;
    for (int e = 0; e < a.n; e++) {
        const int u = row[e];
        if (u < 0) continue;
        const int s1 = min((u + 1) * a.bsel, tmax + 1);
        for (int c0 = u * a.bsel; c0 < s1; c0 += tile) {
            const int cn = min(tile, s1 - c0);
            __syncthreads();
            block_stage(Ks, kst, kg + c0 * krs, krs, cn, a.dk);
            block_stage(Vs, vst, vg + c0 * vrs, vrs, cn, a.dv);
            __syncthreads();
            const int w1 = active ? min(c0 + cn, t + 1) : c0;
            if (c0 < w1) warp_dq_keys(qs, dos, L, Dn, Ks, Vs, kst, vst, a.dk, a.dv, a.scale, 0, w1 - c0, acc, lane);
        }
    }
    if (!active) return;
    T *dqr = dq + r * a.dk;
#pragma unroll
    for (int c = 0; c < COLS; c++)
        if (lane + 32 * c < a.dk) st_f(dqr + lane + 32 * c, ld_f(dqr + lane + 32 * c) + a.scale * acc[c]);
}

// dk / dv: a block holds ATTN_TILE_ROWS consecutive tokens p of one selection block u of group j, one
// warp each; they share u's anchor list. The anchors' (query, head) pairs with t >= the block's first
// token form one stream, ascending in t (anchors ascending, then t, then head), staged ATTN_TILE_ROWS..32
// pairs at a time; a warp adds the suffix of each tile with t >= its own p, in stream order.
template <typename T, int COLS>
__global__ void __launch_bounds__(ATTN_TILE_ROWS * 32)
slc_dkdv_kernel(slc_args a, int nsub, int tile, int kst, int vst, const T *q, const T *k, const T *v,
                const float *lse, const float *D, const T *dout, const int *start, const int *anchors, T *dk, T *dv) {
    extern __shared__ float smem[];
    float *Qt = smem, *Ot = Qt + tile * kst, *Lt = Ot + tile * vst, *Dt = Lt + tile;
    int *Pt = (int *)(Dt + tile);  // t of each staged pair
    float *KVs = (float *)(Pt + tile);
    __shared__ long pair_row[32];
    __shared__ int cur_e, cur_t, cur_i, tile_n;
    const int lane = threadIdx.x % 32, wib = threadIdx.x / 32, G = a.h / a.g;
    const int sub = blockIdx.x % nsub, u = blockIdx.x / nsub % a.nsb, j = blockIdx.x / (nsub * a.nsb) % a.g;
    const int b = blockIdx.x / (nsub * a.nsb * a.g);
    const int pfirst = u * a.bsel + sub * ATTN_TILE_ROWS, pend = min((u + 1) * a.bsel, a.T), p = pfirst + wib;
    if (pfirst >= pend) return;  // the whole block: past the end of the sequence or of block u
    const bool active = p < pend;
    const long kr = ((long)b * a.T + p) * a.g + j;
    float *ks = KVs + wib * (a.dk + a.dv), *vs = ks + a.dk;
    if (active) {
        warp_load(ks, k + kr * a.dk, a.dk, lane);
        warp_load(vs, v + kr * a.dv, a.dv, lane);
    }
    const long list = ((long)b * a.g + j) * a.nsb + u;
    const int e1 = start[list + 1];
    if (threadIdx.x == 0) {
        cur_e = start[list];
        cur_t = cur_e < e1 ? max(anchors[cur_e] * a.R, pfirst) : 0;
        cur_i = 0;
    }
    float ak[COLS], av[COLS];
#pragma unroll
    for (int c = 0; c < COLS; c++) ak[c] = av[c] = 0.0f;
    for (;;) {
        __syncthreads();  // the previous tile is consumed
        if (threadIdx.x == 0) {
            int n = 0, e = cur_e, t = cur_t, i = cur_i;
            while (n < tile && e < e1) {
                if (t >= min(anchors[e] * a.R + a.R, a.T)) {  // this anchor is done (or had no query >= pfirst)
                    if (++e < e1) t = max(anchors[e] * a.R, pfirst), i = 0;
                    continue;
                }
                Pt[n] = t;
                pair_row[n++] = ((long)b * a.T + t) * a.h + j * G + i;
                if (++i == G) i = 0, t++;
            }
            cur_e = e, cur_t = t, cur_i = i, tile_n = n;
        }
        __syncthreads();
        const int cn = tile_n;
        if (cn == 0) break;
        for (int e = threadIdx.x; e < cn * a.dk; e += blockDim.x)
            Qt[(e / a.dk) * kst + e % a.dk] = ld_f(q + (pair_row[e / a.dk] * a.dk + e % a.dk));
        for (int e = threadIdx.x; e < cn * a.dv; e += blockDim.x)
            Ot[(e / a.dv) * vst + e % a.dv] = ld_f(dout + (pair_row[e / a.dv] * a.dv + e % a.dv));
        for (int e = threadIdx.x; e < cn; e += blockDim.x) Lt[e] = lse[pair_row[e]], Dt[e] = D[pair_row[e]];
        __syncthreads();
        const unsigned vis = __ballot_sync(FULL_MASK, active && lane < cn && Pt[lane] >= p);
        if (vis == 0) continue;
        const int x0 = __ffs(vis) - 1, x = x0 + lane;
        float pr = 0.0f, ds = 0.0f;
        if (x < cn) {
            pr = expf(attn_dot(Qt + x * kst, ks, a.dk) * a.scale - Lt[x]);
            ds = pr * (attn_dot(Ot + x * vst, vs, a.dv) - Dt[x]);
        }
        for (int y = 0; y < cn - x0; y++) {
            const float pe = __shfl_sync(FULL_MASK, pr, y), dse = __shfl_sync(FULL_MASK, ds, y);
            const float *qr = Qt + (x0 + y) * kst, *dr = Ot + (x0 + y) * vst;
#pragma unroll
            for (int c = 0; c < COLS; c++) {
                if (lane + 32 * c < a.dv) av[c] += pe * dr[lane + 32 * c];
                if (lane + 32 * c < a.dk) ak[c] += dse * qr[lane + 32 * c];
            }
        }
    }
    if (!active) return;
    T *dkr = dk + kr * a.dk, *dvr = dv + kr * a.dv;
#pragma unroll
    for (int c = 0; c < COLS; c++) {
        if (lane + 32 * c < a.dk) st_f(dkr + lane + 32 * c, ld_f(dkr + lane + 32 * c) + a.scale * ak[c]);
        if (lane + 32 * c < a.dv) st_f(dvr + lane + 32 * c, ld_f(dvr + lane + 32 * c) + av[c]);
    }
}

template <typename T>
static void slc_fwd(asa_backend *be, const asa_attn_shape *s, const T *q, const T *k, const T *v, const int32_t *idx,
                    T *o, float *lse) {
    slc_args a = slc_make(s);
    const slc_rows rw = slc_rows_of(a);
    const long blocks = (long)a.B * a.na * a.g * rw.chunks;
    if (blocks == 0) return;
    int tile;
    const int kst = attn_odd(a.dk);
    const size_t smem = attn_tile(be, &tile, kst + a.dv, rw.warps * a.dk);
    ATTN_WITH_COLS(a.dk > a.dv ? a.dk : a.dv, {
        attn_allow_smem((const void *)slc_fwd_kernel<T, COLS>, smem);
        slc_fwd_kernel<T, COLS><<<(unsigned)blocks, rw.warps * 32, smem>>>(a, rw.warps, rw.chunks, tile, kst, q, k, v,
                                                                           idx, o, lse);
    });
    CUDA_LAUNCH_CHECK();
}

void cuda_attn_slc_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                       const int32_t *idx, void *o, float *lse) {
    attn_check_dims(s);
    if (cuda_slc16_ok(be, s, q, k, v, NULL)) {
        cuda_slc16_fwd(be, s, q, k, v, idx, o, lse);
        return;
    }
    if (be->precision != ASA_PRECISION_FP32 && cuda_slc_mma_ok(be, s, q, k, v, NULL)) {
        cuda_slc_mma_fwd(be, s, q, k, v, idx, o, lse);
        return;
    }
    DISPATCH_ACT(be, slc_fwd<act_t>(be, s, (const act_t *)q, (const act_t *)k, (const act_t *)v, idx, (act_t *)o,
                                    lse));
}

template <typename T>
static void slc_bwd(asa_backend *be, const asa_attn_shape *s, const T *q, const T *k, const T *v, const int32_t *idx,
                    const T *o, const float *lse, const T *dout, const float *drow, T *dq, T *dk, T *dv) {
    slc_args a = slc_make(s);
    const long rows = (long)a.B * a.T * a.h;
    if (rows == 0) return;
    // D and the inverted block lists (per selection block, its ascending anchors), built as for the
    // tensor-core kernels (attn_slc_lists.cuh; their segments and partial sums go unused here)
    const slc_mma_args ma = slc_mma_make(s);
    const slc_lists L = slc_lists_alloc(be, ma);
    const long nlists = L.nlists;
    const int kst = attn_odd(a.dk), vst = attn_odd(a.dv);
    int tile;

    const float *D = cuda_attn_drow(be, drow, dout, o, rows, a.dv, L.D);
    const slc_rows rw = slc_rows_of(a);
    size_t smem = attn_tile(be, &tile, kst + vst, rw.warps * (a.dk + a.dv));
    const int dmax = a.dk > a.dv ? a.dk : a.dv;
    ATTN_WITH_COLS(dmax, {
        attn_allow_smem((const void *)slc_dq_kernel<T, COLS>, smem);
        slc_dq_kernel<T, COLS><<<(unsigned)((long)a.B * a.na * a.g * rw.chunks), rw.warps * 32, smem>>>(
            a, rw.warps, rw.chunks, tile, kst, vst, q, k, v, idx, lse, D, dout, dq);
    });
    CUDA_LAUNCH_CHECK();

    slc_lists_build(ma, idx, L);

    const int nsub = (a.bsel + ATTN_TILE_ROWS - 1) / ATTN_TILE_ROWS;
    // tile rows: q and dout rows, lse, D and t per pair
    smem = attn_tile(be, &tile, kst + vst + 3, ATTN_TILE_ROWS * (a.dk + a.dv));
    ATTN_WITH_COLS(dmax, {
        attn_allow_smem((const void *)slc_dkdv_kernel<T, COLS>, smem);
        slc_dkdv_kernel<T, COLS><<<(unsigned)(nlists * nsub), ATTN_TILE_ROWS * 32, smem>>>(
            a, nsub, tile, kst, vst, q, k, v, lse, D, dout, L.start, L.anchors, dk, dv);
    });
    CUDA_LAUNCH_CHECK();
}

void cuda_attn_slc_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                       const int32_t *idx, const void *o, const float *lse, const void *dout, const float *drow,
                       void *dq, void *dk, void *dv) {
    attn_check_dims(s);
    if (cuda_slc16_ok(be, s, q, k, v, dout)) {
        cuda_slc16_bwd(be, s, q, k, v, idx, o, lse, dout, drow, dq, dk, dv);
        return;
    }
    if (be->precision != ASA_PRECISION_FP32 && cuda_slc_mma_ok(be, s, q, k, v, dout)) {
        cuda_slc_mma_bwd(be, s, q, k, v, idx, o, lse, dout, drow, dq, dk, dv);
        return;
    }
    DISPATCH_ACT(be, slc_bwd<act_t>(be, s, (const act_t *)q, (const act_t *)k, (const act_t *)v, idx,
                                    (const act_t *)o, lse, (const act_t *)dout, drow, (act_t *)dq, (act_t *)dk,
                                    (act_t *)dv));
}
