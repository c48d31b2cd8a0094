// CUDA decode ops (one query per sequence against a KV cache): attention over a range of cache rows
// (attn_decode), block selection for one query (select_decode) and attention over the selected blocks
// (attn_slc_decode). Keys are read through asa_kv_view, so one code path serves GQA caches ([k] and v)
// and latent caches ([c_j | kr] with values c_j). One warp per (sequence, head), as in training. q, the
// cache and o are activation tensors (fp32 or bf16, read with ld_f); scores, softmax and lse are fp32.
#include "backend/cuda/attn_kernels.cuh"

#define SELECT_THREADS 128

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

// Online softmax of qs over cache rows [s0, s1) of group j of sequence b (warp_fold_keys through a view).
template <int COLS, typename E>
static __device__ __forceinline__ void warp_fold_view(const float *qs, const asa_kv_view &kv, int b, int j,
                                                      float scale, int s0, int s1, float &mx, float &l,
                                                      float (&acc)[COLS], int lane) {
    for (int c0 = s0; c0 < s1; c0 += 32) {
        const int key = c0 + lane, cn = s1 - c0 < 32 ? s1 - c0 : 32;
        const float sc = key < s1 ? attn_dot2(qs, view_k1<E>(kv, b, key, j), kv.dk1,
                                              kv.dk2 ? view_k2<E>(kv, b, key, j) : NULL, kv.dk2) * scale
                                  : -INFINITY;
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

// Block lists idx [B, g, n] are NULL for plain range attention (rows [s0, s1)); otherwise the rows s <= t
// of each listed selection block of size bsel.
template <int COLS, typename E>
__global__ void decode_kernel(decode_args a, const E *q, asa_kv_view kv, int s0, int s1, const int32_t *idx,
                              int t, int bsel, int n, E *o, float *lse) {
    extern __shared__ float smem[];
    const int lane = threadIdx.x % 32, wib = threadIdx.x / 32;
    const long w = blockIdx.x * (long)ATTN_WARPS + wib;
    if (w >= (long)a.B * a.h) return;
    const int b = (int)(w / a.h), i = (int)(w % a.h), j = i / (a.h / a.g);
    const int dk = a.dk1 + a.dk2;
    float *qs = smem + wib * dk;
    warp_load(qs, q + w * dk, dk, lane);
    __syncwarp();
    float mx = -INFINITY, l = 0.0f, acc[COLS];
#pragma unroll
    for (int c = 0; c < COLS; c++) acc[c] = 0.0f;
    if (!idx) {
        warp_fold_view<COLS, E>(qs, kv, b, j, a.scale, s0, s1, mx, l, acc, lane);
    } else {
        const int32_t *row = idx + ((long)b * a.g + j) * n;
        for (int e = 0; e < n; e++) {
            const int u = row[e];
            if (u < 0) continue;
            const int r0 = u * bsel, r1 = (u + 1) * bsel < t + 1 ? (u + 1) * bsel : t + 1;
            warp_fold_view<COLS, E>(qs, kv, b, j, a.scale, r0, r1, mx, l, acc, lane);
        }
    }
    warp_finish(acc, mx, l, a.dv, o + w * a.dv, lse + w, lane);
}

// One block per (sequence, group): select_topk's scores and rule for the single anchor t.
template <typename E>
__global__ void select_decode_kernel(decode_args a, const E *q, asa_kv_view kvc, const float *lse_cmp, int t,
                                     int bsz, int bsel, int n, int32_t *idx) {
    extern __shared__ float score[];  // [c + 1] then chosen flags [c + 1]
    const int c = t / bsel, nm = (t + 1) / bsz, per = bsel / bsz, G = a.h / a.g;
    unsigned char *chosen = (unsigned char *)(score + c + 1);
    const int b = blockIdx.x / a.g, j = blockIdx.x % a.g;
    for (int u = threadIdx.x; u <= c; u += SELECT_THREADS) {
        float sc = 0.0f;
        const int mb = u * per, me = (u + 1) * per < nm ? (u + 1) * per : nm;
        for (int i = j * G; i < (j + 1) * G; i++) {
            const float L = lse_cmp[(long)b * a.h + i];
            if (L == -INFINITY) continue;
            const E *qi = q + ((long)b * a.h + i) * (a.dk1 + a.dk2);
            for (int m = mb; m < me; m++)
                sc += expf(attn_dot2(qi, view_k1<E>(kvc, b, m, j), a.dk1, a.dk2 ? view_k2<E>(kvc, b, m, j) : NULL,
                                     a.dk2) * a.scale -
                           L);
        }
        score[u] = sc;
        chosen[u] = u == 0 || u == c || u == c - 1;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    const int nforced = c >= 2 ? 3 : c + 1;
    const int total = c + 1 < n ? c + 1 : n;
    for (int e = nforced; e < total; e++) {
        int best = -1;
        for (int u = 1; u < c - 1; u++)
            if (!chosen[u] && (best < 0 || score[u] > score[best])) best = u;
        chosen[best] = 1;
    }
    int32_t *row = idx + ((long)b * a.g + j) * n;
    int e = 0;
    for (int u = 0; u <= c; u++)
        if (chosen[u]) row[e++] = u;
    for (; e < n; e++) row[e] = -1;
}

static decode_args decode_make(int B, int h, int g, float scale, const asa_kv_view *kv) {
    ASA_CHECK(h > 0 && g > 0 && h % g == 0);
    if (kv->dv > ATTN_MAX_DIM) asa_fatal("CUDA decode: value dim %d exceeds %d", kv->dv, ATTN_MAX_DIM);
    decode_args a = {B, h, g, kv->dk1, kv->dk2, kv->dv, scale};
    return a;
}

template <typename E>
static void decode_launch(decode_args a, const void *q, const asa_kv_view *kv, int s0, int s1, const int32_t *idx,
                          int t, int bsel, int n, void *o, float *lse) {
    const long rows = (long)a.B * a.h;
    ATTN_WITH_COLS(a.dv, {
        decode_kernel<COLS, E><<<(unsigned)((rows + ATTN_WARPS - 1) / ATTN_WARPS), ATTN_WARPS * 32,
                                 ATTN_WARPS * (a.dk1 + a.dk2) * sizeof(float)>>>(a, (const E *)q, *kv, s0, s1, idx, t,
                                                                                 bsel, n, (E *)o, lse);
    });
}

void cuda_attn_decode(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kv, int s0,
                      int s1, void *o, float *lse) {
    const decode_args a = decode_make(B, h, g, scale, kv);
    if ((long)B * h == 0) return;
    DISPATCH_ACT(be, decode_launch<act_t>(a, q, kv, s0, s1, NULL, 0, 0, 0, o, lse));
    CUDA_LAUNCH_CHECK();
}

void cuda_attn_slc_decode(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kv,
                          const int32_t *idx, int t, int selection_block_size, int block_counts, void *o, float *lse) {
    const decode_args a = decode_make(B, h, g, scale, kv);
    if ((long)B * h == 0) return;
    DISPATCH_ACT(be, decode_launch<act_t>(a, q, kv, 0, 0, idx, t, selection_block_size, block_counts, o, lse));
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
    DISPATCH_ACT(be, select_decode_kernel<<<B * g, SELECT_THREADS, smem>>>(a, (const act_t *)q, *kvc, lse_cmp, t,
                                                                           block_size, selection_block_size,
                                                                           block_counts, idx));
    CUDA_LAUNCH_CHECK();
}
