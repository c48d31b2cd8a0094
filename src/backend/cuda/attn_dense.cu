// CUDA causal attention, full or sliding window (attn_fwd / attn_bwd), FlashAttention style: queries stream
// over their keys with an online softmax, so nothing T×T is ever stored. As on the CPU, the kernels work
// on "pooled" keys (key m summarises tokens [m*span, (m+1)*span)) so that the compression branch
// (attn_compress.cu) runs on the same code; dense attention is span = 1.
// In tf32 and bf16 modes attn_fwd and every pooled backward (attn_bwd, attn_cmp_bwd) run on the tensor cores:
// the bf16 kernels of attn_dense16.cu in bf16 mode where they apply, else the TF32 ones of attn_dense_mma.cu.
// The compressed branch's forward (cuda_attn_pooled_fwd with span b) feeds select_topk's scores with its lse,
// and a TF32 product would round q.k and move near-ties away from the CPU's choice: in tf32 mode it stays
// exact fp32 math. In bf16 mode it runs on the bf16 tensor cores too: products of bf16 operands are exact
// and the tensor cores sum them in fp32 (only P is rounded, for P.V), so its lse is the fp32 one up to
// summation order.
// Kernels are templates over the storage type T of the activation tensors (float or bf16): they load with
// ld_f, stage and sum in fp32, and store (or accumulate) with st_f.
//
// A block holds ATTN_TILE_ROWS consecutive query rows of one head (forward, dq) or ATTN_TILE_ROWS consecutive key
// rows of one group (dk/dv), one warp each. The block walks the union of its rows' ranges one tile at a
// time: up to 32 keys (or query-head pairs) staged in shared memory and shared by all its warps, each
// warp folding in the part of the tile its own row can see. Rows of scored operands are padded to an odd
// stride, so the 32 lanes reading 32 different rows hit 32 different banks.
#include "backend/cuda/attn_dense16.cuh"
#include "backend/cuda/attn_dense_mma.cuh"
#include "backend/cuda/attn_kernels.cuh"
#include "backend/cuda/attn_visibility.cuh"


// Backward's key-major pass aims at this many blocks at least (a few per multiprocessor on current GPUs),
// splitting each key tile's queries into parts of at least DKDV_MIN_PAIRS (query, head) pairs.
#define DKDV_TARGET_BLOCKS 512
#define DKDV_MIN_PAIRS 512

static __device__ __forceinline__ int keys_end(int t, int span, int nkeys) {
    int e = (t + 1) / span;
    return e < nkeys ? e : nkeys;
}
static __device__ __forceinline__ int keys_begin(int t, int window) {
    return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
}
static __device__ __forceinline__ int queries_begin(int m, int span) { return (m + 1) * span - 1; }
static __device__ __forceinline__ int queries_end(int m, int window, int T) {
    return window > 0 && m + window < T ? m + window : T;
}

// The geometry every kernel here needs, passed by value. tile: rows per shared-memory tile (<= 32);
// kst, vst: padded row strides of the staged scored operands.
typedef struct {
    int B, T, h, g, dk, dv, nkeys, span, window;
    float scale;
    int tile, kst, vst;
} pooled_args;

template <typename T, int COLS>
__global__ void __launch_bounds__(ATTN_TILE_ROWS * 32)
pooled_fwd_kernel(pooled_args a, const T *q, const T *k, const T *v, T *o, float *lse) {
    extern __shared__ float smem[];
    float *Ks = smem, *Vs = Ks + a.tile * a.kst, *Qs = Vs + a.tile * a.dv;
    const int lane = threadIdx.x % 32, wib = threadIdx.x / 32;
    const int ntb = (a.T + ATTN_TILE_ROWS - 1) / ATTN_TILE_ROWS;
    const int tb = blockIdx.x % ntb, i = blockIdx.x / ntb % a.h, b = blockIdx.x / (ntb * a.h);
    const int j = i / (a.h / a.g);
    const int tfirst = tb * ATTN_TILE_ROWS, tlast = min(tfirst + ATTN_TILE_ROWS, a.T) - 1, t = tfirst + wib;
    const bool active = t < a.T;
    const long r = ((long)b * a.T + t) * a.h + i;
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const T *kg = k + (long)b * a.nkeys * krs + (long)j * a.dk, *vg = v + (long)b * a.nkeys * vrs + (long)j * a.dv;
    float *qs = Qs + wib * a.dk;
    if (active) warp_load(qs, q + r * a.dk, a.dk, lane);
    const int u0 = keys_begin(tfirst, a.window), u1 = keys_end(tlast, a.span, a.nkeys);
    const int m0 = active ? keys_begin(t, a.window) : 0, m1 = active ? keys_end(t, a.span, a.nkeys) : 0;
    float mx = -INFINITY, l = 0.0f, acc[COLS];
#pragma unroll
    for (int c = 0; c < COLS; c++) acc[c] = 0.0f;
    for (int c0 = u0; c0 < u1; c0 += a.tile) {
        const int cn = min(a.tile, u1 - c0);
        __syncthreads();  // the previous tile is consumed (and, the first time, q is staged)
        block_stage(Ks, a.kst, kg + c0 * krs, krs, cn, a.dk);
        block_stage(Vs, a.dv, vg + c0 * vrs, vrs, cn, a.dv);
        __syncthreads();
        const int s0 = max(m0, c0), s1 = min(m1, c0 + cn);
        if (s0 < s1)
            warp_fold_keys(qs, Ks + (s0 - c0) * a.kst, Vs + (s0 - c0) * a.dv, a.kst, a.dv, a.dk, a.dv, a.scale, 0,
                           s1 - s0, mx, l, acc, lane);
    }
    if (!active) return;
    T *orow = o + r * a.dv;
    const float inv = m1 > m0 ? 1.0f / l : 0.0f;
#pragma unroll
    for (int c = 0; c < COLS; c++)
        if (lane + 32 * c < a.dv) st_f(orow + lane + 32 * c, acc[c] * inv);
    if (lane == 0) lse[r] = m1 > m0 ? mx + logf(l) : -INFINITY;
}

template <typename T>
__global__ void rowdot_kernel(const T *dout, const T *o, long rows, int dv, float *D) {
    const int lane = threadIdx.x % 32;
    const long r = blockIdx.x * (long)ATTN_WARPS + threadIdx.x / 32;
    if (r >= rows) return;
    float acc = 0.0f;
    for (int c = lane; c < dv; c += 32) acc += ld_f(dout + (r * dv + c)) * ld_f(o + (r * dv + c));
    acc = warp_sum(acc);
    if (lane == 0) D[r] = acc;
}

// dq, query-major: the forward's tiling, with both k and v scored (kst, vst padded).
template <typename T, int COLS>
__global__ void __launch_bounds__(ATTN_TILE_ROWS * 32)
pooled_dq_kernel(pooled_args a, const T *q, const T *k, const T *v, const float *lse, const float *D, const T *dout,
                 T *dq) {
    extern __shared__ float smem[];
    float *Ks = smem, *Vs = Ks + a.tile * a.kst, *Qs = Vs + a.tile * a.vst;
    const int lane = threadIdx.x % 32, wib = threadIdx.x / 32;
    const int ntb = (a.T + ATTN_TILE_ROWS - 1) / ATTN_TILE_ROWS;
    const int tb = blockIdx.x % ntb, i = blockIdx.x / ntb % a.h, b = blockIdx.x / (ntb * a.h);
    const int j = i / (a.h / a.g);
    const int tfirst = tb * ATTN_TILE_ROWS, tlast = min(tfirst + ATTN_TILE_ROWS, a.T) - 1, t = tfirst + wib;
    const bool active = t < a.T;
    const long r = ((long)b * a.T + t) * a.h + i;
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const T *kg = k + (long)b * a.nkeys * krs + (long)j * a.dk, *vg = v + (long)b * a.nkeys * vrs + (long)j * a.dv;
    float *qs = Qs + wib * (a.dk + a.dv), *dos = qs + a.dk;
    if (active) {
        warp_load(qs, q + r * a.dk, a.dk, lane);
        warp_load(dos, dout + r * a.dv, a.dv, lane);
    }
    const float L = active ? lse[r] : 0.0f, Dn = active ? D[r] : 0.0f;
    const int u0 = keys_begin(tfirst, a.window), u1 = keys_end(tlast, a.span, a.nkeys);
    const int m0 = active ? keys_begin(t, a.window) : 0, m1 = active ? keys_end(t, a.span, a.nkeys) : 0;
    float acc[COLS];
#pragma unroll
    for (int c = 0; c < COLS; c++) acc[c] = 0.0f;
    for (int c0 = u0; c0 < u1; c0 += a.tile) {
        const int cn = min(a.tile, u1 - c0);
        __syncthreads();
        block_stage(Ks, a.kst, kg + c0 * krs, krs, cn, a.dk);
        block_stage(Vs, a.vst, vg + c0 * vrs, vrs, cn, a.dv);
        __syncthreads();
        const int s0 = max(m0, c0), s1 = min(m1, c0 + cn);
        if (s0 < s1)
            warp_dq_keys(qs, dos, L, Dn, Ks + (s0 - c0) * a.kst, Vs + (s0 - c0) * a.vst, a.kst, a.vst, a.dk, a.dv,
                         a.scale, 0, s1 - s0, acc, lane);
    }
    if (!active || m1 <= m0) return;
    T *dqr = dq + r * a.dk;
#pragma unroll
    for (int c = 0; c < COLS; c++)
        if (lane + 32 * c < a.dk) st_f(dqr + lane + 32 * c, ld_f(dqr + lane + 32 * c) + a.scale * acc[c]);
}

// dk / dv, key-major: a block holds ATTN_TILE_ROWS consecutive keys of one group and walks the union of their
// query ranges as tiles of (query, head) pairs: pair p = (t, i) with t = T0 + p / G, i = j*G + p % G.
// Each warp adds the pairs of its own range [(t0 - T0)*G, (t1 - T0)*G) in ascending order.
template <typename T, int COLS>
__global__ void __launch_bounds__(ATTN_TILE_ROWS * 32)
pooled_dkdv_kernel(pooled_args a, int nsplit, const T *q, const T *k, const T *v, const float *lse, const float *D,
                   const T *dout, T *dk, T *dv, float *part) {
    extern __shared__ float smem[];
    float *Qt = smem, *Ot = Qt + a.tile * a.kst, *Lt = Ot + a.tile * a.vst, *Dt = Lt + a.tile;
    float *KVs = Dt + a.tile;
    const int lane = threadIdx.x % 32, wib = threadIdx.x / 32;
    const int G = a.h / a.g;
    const int nmb = (a.nkeys + ATTN_TILE_ROWS - 1) / ATTN_TILE_ROWS;
    const int sp = blockIdx.x % nsplit, kb = blockIdx.x / nsplit;
    const int mb = kb % nmb, j = kb / nmb % a.g, b = kb / (nmb * a.g);
    const int mfirst = mb * ATTN_TILE_ROWS, mlast = min(mfirst + ATTN_TILE_ROWS, a.nkeys) - 1, m = mfirst + wib;
    const bool active = m < a.nkeys;
    const long kr = ((long)b * a.nkeys + m) * a.g + j;  // row of this key head in k [B, nkeys, g, dk]
    float *ks = KVs + wib * (a.dk + a.dv), *vs = ks + a.dk;
    if (active) {
        warp_load(ks, k + kr * a.dk, a.dk, lane);
        warp_load(vs, v + kr * a.dv, a.dv, lane);
    }
    const int T0 = queries_begin(mfirst, a.span), T1 = queries_end(mlast, a.window, a.T);
    const int p0 = active ? (queries_begin(m, a.span) - T0) * G : 0;
    const int p1 = active ? max(queries_end(m, a.window, a.T) - T0, 0) * G : 0;
    const long qb = (long)b * a.T * a.h + (long)T0 * a.h + j * G;  // (token, head) row of pair 0
    float ak[COLS], av[COLS];
#pragma unroll
    for (int c = 0; c < COLS; c++) ak[c] = av[c] = 0.0f;
    const int npairs = max(T1 - T0, 0) * G;
    const int q0 = (int)((long)npairs * sp / nsplit), q1 = (int)((long)npairs * (sp + 1) / nsplit);
    for (int c0 = q0; c0 < q1; c0 += a.tile) {
        const int cn = min(a.tile, q1 - c0);
        __syncthreads();
        // pair p's row: qb + (p / G) * h + p % G
        for (int e = threadIdx.x; e < cn * a.dk; e += blockDim.x) {
            const int p = c0 + e / a.dk;
            Qt[(e / a.dk) * a.kst + e % a.dk] = ld_f(q + ((qb + (long)(p / G) * a.h + p % G) * a.dk + e % a.dk));
        }
        for (int e = threadIdx.x; e < cn * a.dv; e += blockDim.x) {
            const int p = c0 + e / a.dv;
            Ot[(e / a.dv) * a.vst + e % a.dv] = ld_f(dout + ((qb + (long)(p / G) * a.h + p % G) * a.dv + e % a.dv));
        }
        for (int e = threadIdx.x; e < cn; e += blockDim.x) {
            const long pr = qb + (long)((c0 + e) / G) * a.h + (c0 + e) % G;
            Lt[e] = lse[pr];
            Dt[e] = D[pr];
        }
        __syncthreads();
        const int s0 = max(p0, c0), s1 = min(p1, c0 + cn);
        if (s0 >= s1) continue;
        const int e = s0 - c0 + lane;
        float p = 0.0f, ds = 0.0f;
        if (e < s1 - c0) {
            p = expf(attn_dot(Qt + e * a.kst, ks, a.dk) * a.scale - Lt[e]);
            ds = p * (attn_dot(Ot + e * a.vst, vs, a.dv) - Dt[e]);
        }
        for (int x = 0; x < s1 - s0; x++) {
            const float pe = __shfl_sync(FULL_MASK, p, x), dse = __shfl_sync(FULL_MASK, ds, x);
            const float *qr = Qt + (s0 - c0 + x) * a.kst, *dr = Ot + (s0 - c0 + x) * a.vst;
#pragma unroll
            for (int c = 0; c < COLS; c++) {
                if (lane + 32 * c < a.dv) av[c] += pe * dr[lane + 32 * c];
                if (lane + 32 * c < a.dk) ak[c] += dse * qr[lane + 32 * c];
            }
        }
    }
    if (!active) return;
    if (nsplit > 1) {  // partial sums of this split, added up in split order by pooled_split_sum_kernel
        float *pr = part + ((long)sp * a.B * a.nkeys * a.g + kr) * (a.dk + a.dv);
#pragma unroll
        for (int c = 0; c < COLS; c++) {
            if (lane + 32 * c < a.dk) pr[lane + 32 * c] = ak[c];
            if (lane + 32 * c < a.dv) pr[a.dk + lane + 32 * c] = av[c];
        }
        return;
    }
    T *dkr = dk + kr * a.dk, *dvr = dv + kr * a.dv;
#pragma unroll
    for (int c = 0; c < COLS; c++) {
        if (lane + 32 * c < a.dk) st_f(dkr + lane + 32 * c, ld_f(dkr + lane + 32 * c) + a.scale * ak[c]);
        if (lane + 32 * c < a.dv) st_f(dvr + lane + 32 * c, ld_f(dvr + lane + 32 * c) + av[c]);
    }
}

template <typename T>
__global__ void pooled_split_sum_kernel(pooled_args a, int nsplit, const float *part, T *dk, T *dv) {
    const int w = a.dk + a.dv;
    const long krows = (long)a.B * a.nkeys * a.g, total = krows * w;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int sp = 0; sp < nsplit; sp++) acc += part[sp * total + e];
        const long kr = e / w;
        const int c = (int)(e % w);
        if (c < a.dk) {
            T *x = dk + (kr * a.dk + c);
            st_f(x, ld_f(x) + a.scale * acc);
        } else {
            T *x = dv + (kr * a.dv + c - a.dk);
            st_f(x, ld_f(x) + acc);
        }
    }
}

const float *cuda_attn_drow(asa_backend *be, const float *drow, const void *dout, const void *o, long rows, int dv,
                            float *scratch) {
    if (drow) return drow;
    DISPATCH_ACT(be, rowdot_kernel<act_t><<<(unsigned)((rows + ATTN_WARPS - 1) / ATTN_WARPS), ATTN_WARPS * 32>>>(
                         (const act_t *)dout, (const act_t *)o, rows, dv, scratch));
    CUDA_LAUNCH_CHECK();
    return scratch;
}

static pooled_args pooled_make(const asa_attn_shape *s, int nkeys, int span, int window) {
    attn_check_dims(s);
    pooled_args a = {s->B, s->T, s->h, s->g, s->dk, s->dv, nkeys, span, window, s->scale, 0, attn_odd(s->dk),
                     attn_odd(s->dv)};
    return a;
}

template <typename T>
static void pooled_fwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const T *q,
                       const T *k, const T *v, T *o, float *lse) {
    pooled_args a = pooled_make(s, nkeys, span, window);
    const long blocks = (long)s->B * s->h * ((s->T + ATTN_TILE_ROWS - 1) / ATTN_TILE_ROWS);
    if (blocks == 0) return;
    const size_t smem = attn_tile(be, &a.tile, a.kst + a.dv, ATTN_TILE_ROWS * a.dk);
    ATTN_WITH_COLS(s->dk > s->dv ? s->dk : s->dv, {
        attn_allow_smem((const void *)pooled_fwd_kernel<T, COLS>, smem);
        pooled_fwd_kernel<T, COLS><<<(unsigned)blocks, ATTN_TILE_ROWS * 32, smem>>>(a, q, k, v, o, lse);
    });
    CUDA_LAUNCH_CHECK();
}

void cuda_attn_pooled_fwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                          const void *k, const void *v, void *o, float *lse) {
    const void *ptr16[] = {q, k, v, o};
    if (cuda_dense16_ok(be, s, ptr16, 4)) {
        cuda_dense16_fwd(be, s, nkeys, span, window, q, k, v, o, lse);
        return;
    }
    DISPATCH_ACT(be, pooled_fwd<act_t>(be, s, nkeys, span, window, (const act_t *)q, (const act_t *)k,
                                       (const act_t *)v, (act_t *)o, lse));
}

template <typename T>
static void pooled_bwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const T *q,
                       const T *k, const T *v, const T *o, const float *lse, const T *dout, const float *drow, T *dq,
                       T *dk, T *dv) {
    pooled_args a = pooled_make(s, nkeys, span, window);
    const long rows = (long)s->B * s->T * s->h;
    if (rows == 0) return;
    // Key-major blocks are few when keys are (compressed blocks): the queries of each key tile are then
    // split over several blocks, whose partial sums a second pass adds in a fixed order.
    const dense_bwd_plan pl = dense_bwd_plan_make(be, s, nkeys, ATTN_TILE_ROWS, DKDV_TARGET_BLOCKS, DKDV_MIN_PAIRS);
    const float *D = cuda_attn_drow(be, drow, dout, o, rows, s->dv, pl.D);

    const long qblocks = (long)s->B * s->h * ((s->T + ATTN_TILE_ROWS - 1) / ATTN_TILE_ROWS);
    size_t smem = attn_tile(be, &a.tile, a.kst + a.vst, ATTN_TILE_ROWS * (a.dk + a.dv));
    const int dmax = s->dk > s->dv ? s->dk : s->dv;
    ATTN_WITH_COLS(dmax, {
        attn_allow_smem((const void *)pooled_dq_kernel<T, COLS>, smem);
        pooled_dq_kernel<T, COLS><<<(unsigned)qblocks, ATTN_TILE_ROWS * 32, smem>>>(a, q, k, v, lse, D, dout, dq);
    });
    CUDA_LAUNCH_CHECK();

    if (pl.kblocks == 0) return;
    smem = attn_tile(be, &a.tile, a.kst + a.vst + 2, ATTN_TILE_ROWS * (a.dk + a.dv));
    ATTN_WITH_COLS(dmax, {
        attn_allow_smem((const void *)pooled_dkdv_kernel<T, COLS>, smem);
        pooled_dkdv_kernel<T, COLS><<<(unsigned)(pl.kblocks * pl.nsplit), ATTN_TILE_ROWS * 32, smem>>>(
            a, pl.nsplit, q, k, v, lse, D, dout, dk, dv, pl.part);
    });
    CUDA_LAUNCH_CHECK();
    if (pl.nsplit > 1) {
        pooled_split_sum_kernel<T><<<cuda_blocks(pl.krows * (s->dk + s->dv), CUDA_THREADS), CUDA_THREADS>>>(
            a, pl.nsplit, pl.part, dk, dv);
        CUDA_LAUNCH_CHECK();
    }
}

void cuda_attn_pooled_bwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                          const void *k, const void *v, const void *o, const float *lse, const void *dout,
                          const float *drow, void *dq, void *dk, void *dv) {
    const void *ptr16[] = {q, k, v, o, dout, dq, dk, dv};
    if (cuda_dense16_ok(be, s, ptr16, 8)) {
        cuda_dense16_bwd(be, s, nkeys, span, window, q, k, v, o, lse, dout, drow, dq, dk, dv);
        return;
    }
    if (be->precision != ASA_PRECISION_FP32 && cuda_dense_mma_ok(be, s, q, k, v, dout)) {
        cuda_dense_mma_bwd(be, s, nkeys, span, window, q, k, v, o, lse, dout, drow, dq, dk, dv);
        return;
    }
    DISPATCH_ACT(be, pooled_bwd<act_t>(be, s, nkeys, span, window, (const act_t *)q, (const act_t *)k,
                                       (const act_t *)v, (const act_t *)o, lse, (const act_t *)dout, drow,
                                       (act_t *)dq, (act_t *)dk, (act_t *)dv));
}

void cuda_attn_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v, void *o,
                   float *lse) {
    if (cuda_cudnn_attn_fwd(be, s, q, k, v, o, lse)) return;
    const void *ptr16[] = {q, k, v, o};
    if (cuda_dense16_ok(be, s, ptr16, 4)) {
        cuda_dense16_fwd(be, s, s->T, 1, s->window, q, k, v, o, lse);
        return;
    }
    if (be->precision != ASA_PRECISION_FP32 && cuda_dense_mma_ok(be, s, q, k, v, NULL)) {
        cuda_dense_mma_fwd(be, s, s->T, 1, s->window, q, k, v, o, lse);
        return;
    }
    cuda_attn_pooled_fwd(be, s, s->T, 1, s->window, q, k, v, o, lse);
}

void cuda_attn_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                   const void *o, const float *lse, const void *dout, const float *drow, void *dq, void *dk,
                   void *dv) {
    // cuDNN's graph computes its own row dots: drow serves asa's kernels
    if (cuda_cudnn_attn_bwd(be, s, q, k, v, o, lse, dout, dq, dk, dv)) return;
    // this op writes its gradients (backend.h); asa's kernels add theirs
    const size_t es = asa_dtype_size(be->act), N = (size_t)s->B * s->T;
    be->zero(be, dq, N * s->h * s->dk * es);
    be->zero(be, dk, N * s->g * s->dk * es);
    be->zero(be, dv, N * s->g * s->dv * es);
    cuda_attn_pooled_bwd(be, s, s->T, 1, s->window, q, k, v, o, lse, dout, drow, dq, dk, dv);
}
