// CUDA decode ops (one query per sequence against a KV cache): attention over a range of cache rows
// (attn_decode), block selection for one query (select_decode) and attention over the selected blocks
// (attn_slc_decode). Keys are read through asa_kv_view, so one code path serves GQA caches ([k] and v)
// and latent caches ([c_j | kr] with values c_j). q, the cache and o are activation tensors (fp32 or bf16,
// read with ld_f); scores, softmax and lse are fp32.
//
// A decode step has one query row per (sequence, head): a warp per row, as in training, would leave all
// but B*h warps of the GPU idle while each walks its whole range (65536 keys: 28 ms). So the keys are split
// (flash decoding): a warp folds one chunk of a row's keys (a stretch of the range, or some entries of
// the block list) into a partial online softmax (max, sum, unnormalised output) in scratch, and a second
// kernel merges a row's partials in chunk order: deterministic, and o and lse as one pass would give them
// up to the order of the sums. Selection computes each term of the scores (block, head, pooled key) in a
// thread of its own, then a block per (sequence, group) sums them in the CPU's order, a score a thread,
// and one warp picks the blocks as select_topk does.
#include "backend/cuda/attn_kernels.cuh"
#include "backend/cuda/select_rows.cuh"

#define SELECT_THREADS 128
#define DECODE_TARGET_WARPS 4096  // warps a decode step spreads its keys over (about 31 per SM of an H100)
#define DECODE_MIN_CHUNK 64       // keys a warp folds at least

typedef struct {
    int B, h, g, dk1, dk2, dv;
    float scale;
} decode_args;

// The view's strides count elements of the storage type E.
template <typename E>
static __device__ __forceinline__ const E *view_k1(const asa_kv_view &kv, int b, int s, int j) {
    return (const E *)kv.k1 + (long)b * kv.k1_bs + (long)s * kv.k1_rs + (long)j * kv.k1_hs;
}
template <typename E>
static __device__ __forceinline__ const E *view_k2(const asa_kv_view &kv, int b, int s, int j) {
    return (const E *)kv.k2 + (long)b * kv.k2_bs + (long)s * kv.k2_rs + (long)j * kv.k2_hs;
}
template <typename E>
static __device__ __forceinline__ const E *view_v(const asa_kv_view &kv, int b, int s, int j) {
    return (const E *)kv.v + (long)b * kv.v_bs + (long)s * kv.v_rs + (long)j * kv.v_hs;
}

// Online softmax of qs over cache rows [s0, s1) of group j of sequence b, 32 keys a step. The warp reads
// each key row whole, lane x taking dims x, x + 32, ... (coalesced, where a lane per key would read 32
// rows at once element by element), and a reduce-scatter over the lanes turns the 32 x 32 partial dots
// into lane e's score of key e: round r trades half of the keys a lane holds with the lane across bit r.
// (The view's row strides are those of the cache rows, so key e of a step is e row strides on.)
template <int COLS, typename E>
static __device__ __forceinline__ void warp_fold_view(const float *qs, const asa_kv_view &kv, int b, int j,
                                                      float scale, int s0, int s1, float &mx, float &l,
                                                      float (&acc)[COLS], int lane) {
    const int n1 = kv.dk1, dk = kv.dk1 + kv.dk2;
    for (int c0 = s0; c0 < s1; c0 += 32) {
        const int cn = s1 - c0 < 32 ? s1 - c0 : 32;
        // one dim of all 32 keys at a time: 32 independent loads in flight
        float d[32];
#pragma unroll
        for (int e = 0; e < 32; e++) d[e] = 0.0f;
#pragma unroll 4
        for (int x = lane; x < dk; x += 32) {
            const float qx = qs[x];
            const E *kx = x < n1 ? view_k1<E>(kv, b, c0, j) + x : view_k2<E>(kv, b, c0, j) + (x - n1);
            const long rs = x < n1 ? kv.k1_rs : kv.k2_rs;
#pragma unroll
            for (int e = 0; e < 32; e++)
                if (e < cn) d[e] += qx * ld_f(kx + e * rs);
        }
#pragma unroll
        for (int r = 0; r < 5; r++) {
            const bool up = lane >> r & 1;
#pragma unroll
            for (int k = 0; k < 32; k += 2 << r) {
                const float give = up ? d[k] : d[k + (1 << r)], keep = up ? d[k + (1 << r)] : d[k];
                d[k] = keep + __shfl_xor_sync(FULL_MASK, give, 1 << r);
            }
        }
        const int key = c0 + lane;
        const float sc = key < s1 ? d[0] * scale : -INFINITY;
        const float cmax = warp_max(sc);
        if (cmax > mx) {
            const float r = expf(mx - cmax);
            l *= r;
#pragma unroll
            for (int k = 0; k < COLS; k++) acc[k] *= r;
            mx = cmax;
        }
        const float p = key < s1 ? expf(sc - mx) : 0.0f;
        l += warp_sum(p);
#pragma unroll 8
        for (int e = 0; e < cn; e++) {
            const float pe = __shfl_sync(FULL_MASK, p, e);
            const E *vr = view_v<E>(kv, b, c0 + e, j);
#pragma unroll
            for (int k = 0; k < COLS; k++)
                if (lane + 32 * k < kv.dv) acc[k] += pe * ld_f(vr + lane + 32 * k);
        }
    }
}

template <int COLS, typename E>
static __device__ __forceinline__ void warp_finish(const float (&acc)[COLS], float mx, float l, int dv, E *o,
                                                   float *lse, int lane) {
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // no row: o = 0, lse = -inf
#pragma unroll
    for (int c = 0; c < COLS; c++)
        if (lane + 32 * c < dv) st_f(o + lane + 32 * c, acc[c] * inv);
    if (lane == 0) *lse = l > 0.0f ? mx + logf(l) : -INFINITY;
}

// The keys of one chunk of one row: block lists idx [B, g, n] are NULL for plain range attention (chunk ch of
// the rows [s0, s1), `per` rows a chunk); otherwise list entries [ch*per, (ch+1)*per), each the rows s <= t of
// its selection block of size bsel. Writes the chunk's partial: acc[dv] (unnormalised), max, sum.
template <int COLS, typename E>
__global__ void decode_part_kernel(decode_args a, const E *q, asa_kv_view kv, int s0, int s1, const int32_t *idx,
                                   int t, int bsel, int n, int per, int nch, float *part) {
    extern __shared__ float smem[];
    const int lane = threadIdx.x % 32, wib = threadIdx.x / 32;
    const long w = blockIdx.x * (long)ATTN_WARPS + wib;
    if (w >= (long)a.B * a.h * nch) return;
    const long row = w / nch;
    const int ch = (int)(w % nch), b = (int)(row / a.h), i = (int)(row % a.h), j = i / (a.h / a.g);
    const int dk = a.dk1 + a.dk2;
    float *qs = smem + wib * dk;
    warp_load(qs, q + row * dk, dk, lane);
    __syncwarp();
    float mx = -INFINITY, l = 0.0f, acc[COLS];
#pragma unroll
    for (int c = 0; c < COLS; c++) acc[c] = 0.0f;
    if (!idx) {
        const long r0 = s0 + (long)ch * per, r1 = r0 + per < s1 ? r0 + per : s1;
        warp_fold_view<COLS, E>(qs, kv, b, j, a.scale, (int)r0, (int)r1, mx, l, acc, lane);
    } else {
        const int32_t *list = idx + ((long)b * a.g + j) * n;
        for (int e = ch * per; e < (ch + 1) * per && e < n; e++) {
            const int u = list[e];
            if (u < 0) continue;
            const int r0 = u * bsel, r1 = (u + 1) * bsel < t + 1 ? (u + 1) * bsel : t + 1;
            warp_fold_view<COLS, E>(qs, kv, b, j, a.scale, r0, r1, mx, l, acc, lane);
        }
    }
    float *p = part + w * (a.dv + 2);
#pragma unroll
    for (int c = 0; c < COLS; c++)
        if (lane + 32 * c < a.dv) p[lane + 32 * c] = acc[c];
    if (lane == 0) p[a.dv] = mx, p[a.dv + 1] = l;
}

// One warp per row: its nch partials merged in chunk order into o and lse (no keys at all: o = 0, lse = -inf).
template <int COLS, typename E>
__global__ void decode_merge_kernel(decode_args a, int nch, const float *part, E *o, float *lse) {
    const int lane = threadIdx.x % 32;
    const long row = blockIdx.x * (long)ATTN_WARPS + threadIdx.x / 32;
    if (row >= (long)a.B * a.h) return;
    const float *p = part + row * nch * (a.dv + 2);
    float mx = -INFINITY;
    for (int ch = 0; ch < nch; ch++) mx = fmaxf(mx, p[ch * (a.dv + 2) + a.dv]);
    float l = 0.0f, acc[COLS];
#pragma unroll
    for (int c = 0; c < COLS; c++) acc[c] = 0.0f;
    for (int ch = 0; ch < nch && mx != -INFINITY; ch++) {
        const float *pc = p + ch * (a.dv + 2);
        if (pc[a.dv + 1] == 0.0f) continue;  // a chunk without keys
        const float r = expf(pc[a.dv] - mx);
        l += pc[a.dv + 1] * r;
#pragma unroll
        for (int c = 0; c < COLS; c++)
            if (lane + 32 * c < a.dv) acc[c] += pc[lane + 32 * c] * r;
    }
    warp_finish(acc, mx, l, a.dv, o + row * a.dv, lse + row, lane);
}

// The terms of select_topk's scores for the single anchor t, one (selection block u, head, pooled key m)
// a thread: p = exp(q_i . kc_m * scale - lse_i) as the CPU computes it (attn_dot2), 0 where the CPU adds
// nothing (a head without a visible key, m past the complete blocks). p [B*g, c+1, G, per].
template <typename E>
__global__ void select_decode_terms_kernel(decode_args a, const E *q, asa_kv_view kvc, const float *lse_cmp, int t,
                                           int bsz, int bsel, float *p) {
    const int c = t / bsel, nm = (t + 1) / bsz, per = bsel / bsz, G = a.h / a.g;
    const int b = blockIdx.y / a.g, j = blockIdx.y % a.g;
    const long e = (long)blockIdx.x * SELECT_THREADS + threadIdx.x, terms = (long)(c + 1) * G * per;
    if (e >= terms) return;
    const int u = (int)(e / (G * per)), i = j * G + (int)(e % (G * per)) / per, m = u * per + (int)(e % per);
    const float L = lse_cmp[(long)b * a.h + i];
    float v = 0.0f;
    if (L != -INFINITY && m < nm)
        v = expf(__fsub_rn(__fmul_rn(attn_dot2(q + ((long)b * a.h + i) * (a.dk1 + a.dk2), view_k1<E>(kvc, b, m, j),
                                               a.dk1, a.dk2 ? view_k2<E>(kvc, b, m, j) : NULL, a.dk2),
                                     a.scale),
                           L));  // no fused multiply-add: the CPU rounds the product
    p[blockIdx.y * terms + e] = v;
}

// One block per (sequence, group): each score summed by a thread from its terms in the CPU's order (the
// heads, then the pooled keys inside the block; the zero terms change no sum of non-negative values), so
// the lists equal the CPU's; then the first warp picks the blocks as select_topk does.
__global__ void select_decode_pick_kernel(int G, int t, int bsz, int bsel, int n, const float *p, int32_t *idx) {
    extern __shared__ float sc[];  // [c + 1] then chosen flags [c + 1]
    const int c = t / bsel, per = bsel / bsz;
    unsigned char *chosen = (unsigned char *)(sc + c + 1);
    const float *pg = p + (long)blockIdx.x * (c + 1) * G * per;
    for (int u = threadIdx.x; u <= c; u += SELECT_THREADS) {
        float v = 0.0f;
        for (int k = 0; k < G * per; k++) v += pg[(long)u * G * per + k];
        sc[u] = v;
    }
    __syncthreads();
    if (threadIdx.x < 32) topk_select_row(sc, chosen, c, n, idx + (long)blockIdx.x * n, threadIdx.x);
}

static decode_args decode_make(int B, int h, int g, float scale, const asa_kv_view *kv) {
    ASA_CHECK(h > 0 && g > 0 && h % g == 0);
    if (kv->dv > ATTN_MAX_DIM) asa_fatal("CUDA decode: value dim %d exceeds %d", kv->dv, ATTN_MAX_DIM);
    decode_args a = {B, h, g, kv->dk1, kv->dk2, kv->dv, scale};
    return a;
}

// Splits each row's keys into chunks of `per` rows (range) or list entries (idx), about
// DECODE_TARGET_WARPS warps in all, and merges the partials.
template <typename E>
static void decode_launch(asa_backend *be, decode_args a, const void *q, const asa_kv_view *kv, int s0, int s1,
                          const int32_t *idx, int t, int bsel, int n, void *o, float *lse) {
    const long rows = (long)a.B * a.h;
    const long want = (DECODE_TARGET_WARPS + rows - 1) / rows;  // chunks a row
    int nch, per;
    if (!idx) {
        const long keys = s1 > s0 ? s1 - s0 : 0, most = (keys + DECODE_MIN_CHUNK - 1) / DECODE_MIN_CHUNK;
        nch = (int)(want < most ? want : most);
        if (nch < 1) nch = 1;
        per = (int)((keys + nch - 1) / nch);
        if (per > 0) nch = (int)((keys + per - 1) / per);
    } else {
        nch = (int)(want < n ? want : n);
        if (nch < 1) nch = 1;
        per = (n + nch - 1) / nch;
        nch = (n + per - 1) / per;
    }
    float *part = (float *)cuda_scratch(be, (size_t)rows * nch * (a.dv + 2) * sizeof(float));
    const long warps = rows * nch;
    ATTN_WITH_COLS(a.dv, {
        decode_part_kernel<COLS, E><<<(unsigned)((warps + ATTN_WARPS - 1) / ATTN_WARPS), ATTN_WARPS * 32,
                                      ATTN_WARPS * (a.dk1 + a.dk2) * sizeof(float)>>>(a, (const E *)q, *kv, s0, s1, idx,
                                                                                      t, bsel, n, per, nch, part);
        CUDA_LAUNCH_CHECK();
        decode_merge_kernel<COLS, E><<<(unsigned)((rows + ATTN_WARPS - 1) / ATTN_WARPS), ATTN_WARPS * 32>>>(
            a, nch, part, (E *)o, lse);
    });
}

void cuda_attn_decode(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kv, int s0,
                      int s1, void *o, float *lse) {
    const decode_args a = decode_make(B, h, g, scale, kv);
    if ((long)B * h == 0) return;
    DISPATCH_ACT(be, decode_launch<act_t>(be, a, q, kv, s0, s1, NULL, 0, 0, 0, o, lse));
    CUDA_LAUNCH_CHECK();
}

void cuda_attn_slc_decode(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kv,
                          const int32_t *idx, int t, int selection_block_size, int block_counts, void *o, float *lse) {
    const decode_args a = decode_make(B, h, g, scale, kv);
    if ((long)B * h == 0) return;
    DISPATCH_ACT(be, decode_launch<act_t>(be, a, q, kv, 0, 0, idx, t, selection_block_size, block_counts, o, lse));
    CUDA_LAUNCH_CHECK();
}

void cuda_select_decode(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kvc,
                        const float *lse_cmp, int t, int block_size, int selection_block_size, int block_counts,
                        int32_t *idx) {
    decode_args a = decode_make(B, h, g, scale, kvc);
    ASA_CHECK(selection_block_size % block_size == 0 && block_counts >= 3);
    const int c = t / selection_block_size;
    const size_t smem = (size_t)(c + 1) * (sizeof(float) + 1);
    if (smem > 48 * 1024) asa_fatal("CUDA select_decode: %d selection blocks exceed shared memory", c + 1);
    if ((long)B * g == 0) return;
    ASA_CHECK((long)B * g <= 65535);
    const int G = h / g, per = selection_block_size / block_size;
    const long terms = (long)(c + 1) * G * per;
    float *p = (float *)cuda_scratch(be, (size_t)B * g * terms * sizeof(float));
    const dim3 grid((unsigned)((terms + SELECT_THREADS - 1) / SELECT_THREADS), (unsigned)(B * g));
    DISPATCH_ACT(be, select_decode_terms_kernel<<<grid, SELECT_THREADS>>>(a, (const act_t *)q, *kvc, lse_cmp, t,
                                                                          block_size, selection_block_size, p));
    CUDA_LAUNCH_CHECK();
    select_decode_pick_kernel<<<B * g, SELECT_THREADS, smem>>>(G, t, block_size, selection_block_size, block_counts,
                                                               p, idx);
    CUDA_LAUNCH_CHECK();
}
