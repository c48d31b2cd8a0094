// CPU decode ops (one query per sequence against a KV cache): attention over a range of cache rows
// (attn_decode), block selection for one query (select_decode) and attention over the selected blocks
// (attn_slc_decode). Keys are read through asa_kv_view, so one code path serves GQA caches ([k] and v)
// and latent caches ([c_j | kr] with values c_j).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/attn_kernels.h"
#include "core/error.h"

static inline const float *view_k1(const asa_kv_view *kv, int b, int s, int j) {
    return (const float *)kv->k1 + (long)b * kv->k1_bs + (long)s * kv->k1_rs + (long)j * kv->k1_hs;
}
static inline const float *view_k2(const asa_kv_view *kv, int b, int s, int j) {
    return (const float *)kv->k2 + (long)b * kv->k2_bs + (long)s * kv->k2_rs + (long)j * kv->k2_hs;
}
static inline const float *view_v(const asa_kv_view *kv, int b, int s, int j) {
    return (const float *)kv->v + (long)b * kv->v_bs + (long)s * kv->v_rs + (long)j * kv->v_hs;
}

// q . [k1 ; k2]. A two-part key is gathered into `key` first so that dot() sees the same vector, in the
// same summation order, as the training kernels do on the concatenated keys: equal inputs give equal
// scores, and selection ties break the same way.
static inline float key_dot(const float *q, const asa_kv_view *kv, int b, int s, int j, float *key) {
    const int dk = kv->dk1 + kv->dk2;
    if (kv->dk2 == 0) return dot(q, view_k1(kv, b, s, j), dk);
    memcpy(key, view_k1(kv, b, s, j), (size_t)kv->dk1 * sizeof(float));
    memcpy(key + kv->dk1, view_k2(kv, b, s, j), (size_t)kv->dk2 * sizeof(float));
    return dot(q, key, dk);
}

// Running softmax state of one query: max, normaliser and the unnormalised output.
typedef struct {
    float mx, l;
    float *acc;
    float *sc;  // scores of the current span
} online_softmax;

// Folds cache rows [s0, s1) of group j into st (s1 - s0 <= the capacity of st->sc).
static void fold_rows(online_softmax *st, const float *q, const asa_kv_view *kv, int b, int j, int s0, int s1,
                      float scale, float *key) {
    float cmax = -INFINITY;
    for (int p = s0; p < s1; p++) {
        st->sc[p - s0] = key_dot(q, kv, b, p, j, key) * scale;
        if (st->sc[p - s0] > cmax) cmax = st->sc[p - s0];
    }
    if (cmax > st->mx) {
        const float r = expf(st->mx - cmax);  // 0 on the first span
        st->l *= r;
        for (int c = 0; c < kv->dv; c++) st->acc[c] *= r;
        st->mx = cmax;
    }
    for (int p = s0; p < s1; p++) {
        const float pr = expf(st->sc[p - s0] - st->mx);
        st->l += pr;
        axpy(st->acc, pr, view_v(kv, b, p, j), kv->dv);
    }
}

static void finish(const online_softmax *st, int dv, float *o, float *lse) {
    if (st->l == 0) {
        memset(o, 0, (size_t)dv * sizeof(float));
        *lse = -INFINITY;
        return;
    }
    const float inv = 1.0f / st->l;
    for (int c = 0; c < dv; c++) o[c] = st->acc[c] * inv;
    *lse = st->mx + logf(st->l);
}

#define ROW_CHUNK 64

void cpu_attn_decode(asa_backend *be, int B, int h, int g, float scale, const void *q_, const asa_kv_view *kv, int s0,
                     int s1, void *o_, float *lse) {
    const float *q = q_;
    float *o = o_;
    const int G = h / g, dk = kv->dk1 + kv->dk2, dv = kv->dv;
    ASA_CHECK(h % g == 0);
#pragma omp parallel if ((long)B * h * (s1 - s0) * (dk + dv) >= CPU_PAR_MIN_WORK)
    {
        float *acc = asa_malloc((size_t)dv * sizeof(float));
        float *key = asa_malloc((size_t)dk * sizeof(float));
        float sc[ROW_CHUNK];
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < h; i++) {
                online_softmax st = {-INFINITY, 0, acc, sc};
                memset(acc, 0, (size_t)dv * sizeof(float));
                const float *qi = q + ((long)b * h + i) * dk;
                for (int c0 = s0; c0 < s1; c0 += ROW_CHUNK) {
                    const int c1 = s1 - c0 < ROW_CHUNK ? s1 : c0 + ROW_CHUNK;
                    fold_rows(&st, qi, kv, b, i / G, c0, c1, scale, key);
                }
                finish(&st, dv, o + ((long)b * h + i) * dv, lse + (long)b * h + i);
            }
        free(acc);
        free(key);
    }
}

void cpu_select_decode(asa_backend *be, int B, int h, int g, float scale, const void *q_, const asa_kv_view *kvc,
                       const float *lse_cmp, int t, int block_size, int selection_block_size, int block_counts,
                       int32_t *idx) {
    const float *q = q_;
    const int G = h / g, dk = kvc->dk1 + kvc->dk2, n = block_counts;
    const int per = selection_block_size / block_size;  // compression blocks per selection block
    const int c = t / selection_block_size, nm = (t + 1) / block_size;
    ASA_CHECK(h % g == 0 && selection_block_size % block_size == 0 && n >= 3);
#pragma omp parallel if ((long)B * h * nm * dk >= CPU_PAR_MIN_WORK)
    {
        float *score = asa_malloc((size_t)(c + 1) * sizeof(float));
        unsigned char *chosen = asa_malloc((size_t)(c + 1));
        float *key = asa_malloc((size_t)dk * sizeof(float));
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int j = 0; j < g; j++) {
                memset(score, 0, (size_t)(c + 1) * sizeof(float));
                // Head, then block: the order of select_topk, so equal inputs give equal sums.
                for (int i = j * G; i < (j + 1) * G; i++) {
                    const float L = lse_cmp[(long)b * h + i];
                    if (L == -INFINITY) continue;
                    const float *qi = q + ((long)b * h + i) * dk;
                    for (int m = 0; m < nm; m++) score[m / per] += expf(key_dot(qi, kvc, b, m, j, key) * scale - L);
                }
                select_blocks(score, c, n, chosen, idx + ((long)b * g + j) * n);
            }
        free(score);
        free(chosen);
        free(key);
    }
}

void cpu_attn_slc_decode(asa_backend *be, int B, int h, int g, float scale, const void *q_, const asa_kv_view *kv,
                         const int32_t *idx, int t, int selection_block_size, int block_counts, void *o_,
                         float *lse) {
    const float *q = q_;
    float *o = o_;
    const int G = h / g, dk = kv->dk1 + kv->dk2, dv = kv->dv, bsel = selection_block_size;
    ASA_CHECK(h % g == 0);
#pragma omp parallel if ((long)B * h * block_counts * bsel * (dk + dv) >= CPU_PAR_MIN_WORK)
    {
        float *acc = asa_malloc((size_t)dv * sizeof(float));
        float *key = asa_malloc((size_t)dk * sizeof(float));
        float *sc = asa_malloc((size_t)bsel * sizeof(float));
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < h; i++) {
                const int j = i / G;
                const int32_t *row = idx + ((long)b * g + j) * block_counts;
                online_softmax st = {-INFINITY, 0, acc, sc};
                memset(acc, 0, (size_t)dv * sizeof(float));
                const float *qi = q + ((long)b * h + i) * dk;
                for (int e = 0; e < block_counts; e++) {
                    const int u = row[e];
                    if (u < 0) continue;
                    const int s0 = u * bsel, s1 = (u + 1) * bsel < t + 1 ? (u + 1) * bsel : t + 1;
                    if (s0 < s1) fold_rows(&st, qi, kv, b, j, s0, s1, scale, key);
                }
                finish(&st, dv, o + ((long)b * h + i) * dv, lse + (long)b * h + i);
            }
        free(acc);
        free(key);
        free(sc);
    }
}
