// CPU causal attention, full or sliding window (attn_fwd / attn_bwd), FlashAttention style: each query
// streams over its keys with an online softmax, so nothing T×T is ever stored. The kernels are written
// for "pooled" keys (key m summarises tokens [m*span, (m+1)*span)) so that the compression branch
// (attn_compress.c) runs on the same code with span = block_size; dense attention is span = 1.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/attn_kernels.h"
#include "core/error.h"

// Keys folded into the running softmax per step: one max and one rescale per chunk, not per key.
#define KEY_CHUNK 64

// Visibility of pooled key m to query t: the key's tokens are complete, (m+1)*span - 1 <= t, and with a
// window w > 0 also t - w < m (windows are used with span 1 only).
static inline int keys_end(int t, int span, int nkeys) {
    int e = (t + 1) / span;
    return e < nkeys ? e : nkeys;
}
static inline int keys_begin(int t, int window) { return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0; }
static inline int queries_begin(int m, int span) { return (m + 1) * span - 1; }
static inline int queries_end(int m, int window, int T) { return window > 0 && m + window < T ? m + window : T; }

// Multiply-adds of one pass over all (query, visible key) pairs, counting every query as seeing its
// whole window: the size that decides whether a pass forks threads.
static long pooled_work(const asa_attn_shape *s, int nkeys, int window) {
    const int keys = window > 0 && window < nkeys ? window : nkeys;
    return (long)s->B * s->h * s->T * keys * (s->dk + s->dv);
}

// Forward over pooled keys: k [B, nkeys, g, dk], v [B, nkeys, g, dv]; `window` replaces s->window (the
// compression branch of a layer with a window must not inherit it). Rows that see no key get o = 0
// and lse = -INFINITY.
void cpu_attn_pooled_fwd(const asa_attn_shape *s, int nkeys, int span, int window, const float *q,
                         const float *k, const float *v, float *o, float *lse) {
    const int B = s->B, T = s->T, h = s->h, g = s->g, dk = s->dk, dv = s->dv, G = h / g;
    const float scale = s->scale;
    const long krs = (long)g * dk, vrs = (long)g * dv;  // key / value row strides
#pragma omp parallel if (pooled_work(s, nkeys, window) >= CPU_PAR_MIN_WORK)
    {
        float *acc = asa_malloc((size_t)dv * sizeof(float));
        float sc[KEY_CHUNK];
#pragma omp for collapse(3) schedule(dynamic, 16)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < h; i++)
                for (int t = 0; t < T; t++) {
                    const long n = (long)b * T + t;
                    const int j = i / G;
                    const float *qi = q + (n * h + i) * dk;
                    const float *kb = k + (long)b * nkeys * krs + (long)j * dk;
                    const float *vb = v + (long)b * nkeys * vrs + (long)j * dv;
                    float *oi = o + (n * h + i) * dv;
                    const int m0 = keys_begin(t, window), m1 = keys_end(t, span, nkeys);
                    float mx = -INFINITY, l = 0;
                    memset(acc, 0, (size_t)dv * sizeof(float));
                    for (int c0 = m0; c0 < m1; c0 += KEY_CHUNK) {
                        const int cn = m1 - c0 < KEY_CHUNK ? m1 - c0 : KEY_CHUNK;
                        float cmax = -INFINITY;
                        for (int e = 0; e < cn; e++) {
                            sc[e] = dot(qi, kb + (c0 + e) * krs, dk) * scale;
                            if (sc[e] > cmax) cmax = sc[e];
                        }
                        if (cmax > mx) {
                            const float r = expf(mx - cmax);  // 0 on the first chunk
                            l *= r;
                            for (int c = 0; c < dv; c++) acc[c] *= r;
                            mx = cmax;
                        }
                        for (int e = 0; e < cn; e++) {
                            const float p = expf(sc[e] - mx);
                            l += p;
                            axpy(acc, p, vb + (c0 + e) * vrs, dv);
                        }
                    }
                    if (m1 <= m0) {
                        memset(oi, 0, (size_t)dv * sizeof(float));
                        lse[n * h + i] = -INFINITY;
                    } else {
                        const float inv = 1.0f / l;
                        for (int c = 0; c < dv; c++) oi[c] = acc[c] * inv;
                        lse[n * h + i] = mx + logf(l);
                    }
                }
        free(acc);
    }
}

// Backward over pooled keys, accumulating into dq, dk, dv. Two passes so that every gradient row has a
// single writer (race-free, deterministic): query-major for dq, key-major for dk/dv, where key m
// gathers the contributions of the contiguous range of queries that can see it.
void cpu_attn_pooled_bwd(const asa_attn_shape *s, int nkeys, int span, int window, const float *q,
                         const float *k, const float *v, const float *o, const float *lse, const float *dout,
                         const float *drow, float *dq, float *dk, float *dv) {
    const int B = s->B, T = s->T, h = s->h, g = s->g, dkh = s->dk, dvh = s->dv, G = h / g;
    const float scale = s->scale;
    const long krs = (long)g * dkh, vrs = (long)g * dvh, N = (long)B * T;
    const int par = pooled_work(s, nkeys, window) >= CPU_PAR_MIN_WORK;

    float *own;
    const float *D = attn_delta(drow, &own, (long)N * h, dvh, dout, o);

#pragma omp parallel if (par)
    {
        float *acc = asa_malloc((size_t)dkh * sizeof(float));
#pragma omp for collapse(3) schedule(dynamic, 16)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < h; i++)
                for (int t = 0; t < T; t++) {
                    const long n = (long)b * T + t;
                    const int j = i / G;
                    const float L = lse[n * h + i], Dn = D[n * h + i];
                    const int m0 = keys_begin(t, window), m1 = keys_end(t, span, nkeys);
                    if (m1 <= m0) continue;
                    const float *qi = q + (n * h + i) * dkh, *doi = dout + (n * h + i) * dvh;
                    const float *kb = k + (long)b * nkeys * krs + (long)j * dkh;
                    const float *vb = v + (long)b * nkeys * vrs + (long)j * dvh;
                    memset(acc, 0, (size_t)dkh * sizeof(float));
                    for (int m = m0; m < m1; m++) {
                        const float *km = kb + m * krs;
                        const float p = expf(dot(qi, km, dkh) * scale - L);
                        const float ds = p * (dot(doi, vb + m * vrs, dvh) - Dn);
                        axpy(acc, ds, km, dkh);
                    }
                    axpy(dq + (n * h + i) * dkh, scale, acc, dkh);
                }
        free(acc);
    }

#pragma omp parallel if (par)
    {
        float *ak = asa_malloc((size_t)dkh * sizeof(float));
        float *av = asa_malloc((size_t)dvh * sizeof(float));
#pragma omp for collapse(3) schedule(dynamic, 4)
        for (int b = 0; b < B; b++)
            for (int j = 0; j < g; j++)
                for (int m = 0; m < nkeys; m++) {
                    const long kr = (long)b * nkeys + m;
                    const float *km = k + kr * krs + (long)j * dkh, *vm = v + kr * vrs + (long)j * dvh;
                    const int t0 = queries_begin(m, span), t1 = queries_end(m, window, T);
                    memset(ak, 0, (size_t)dkh * sizeof(float));
                    memset(av, 0, (size_t)dvh * sizeof(float));
                    for (int t = t0; t < t1; t++)
                        key_grad_add_query(q, dout, lse, D, (long)b * T + t, h, j * G, (j + 1) * G, dkh, dvh, km, vm,
                                           scale, ak, av);
                    axpy(dk + kr * krs + (long)j * dkh, scale, ak, dkh);
                    axpy(dv + kr * vrs + (long)j * dvh, 1.0f, av, dvh);
                }
        free(ak);
        free(av);
    }
    free(own);
}

void cpu_attn_fwd(asa_backend *be, const asa_attn_shape *s, const void *q_, const void *k_, const void *v_, void *o_,
                  float *lse) {
    const float *q = q_;
    const float *k = k_;
    const float *v = v_;
    float *o = o_;
    cpu_attn_pooled_fwd(s, s->T, 1, s->window, q, k, v, o, lse);
}

void cpu_attn_bwd(asa_backend *be, const asa_attn_shape *s, const void *q_, const void *k_, const void *v_,
                  const void *o_, const float *lse, const void *dout_, const float *drow, void *dq_, void *dk_,
                  void *dv_) {
    const float *q = q_;
    const float *k = k_;
    const float *v = v_;
    const float *o = o_;
    const float *dout = dout_;
    float *dq = dq_;
    float *dk = dk_;
    float *dv = dv_;
    // this op writes its gradients (backend.h); the pooled backward adds
    const size_t N = (size_t)s->B * s->T;
    memset(dq, 0, N * s->h * s->dk * sizeof(float));
    memset(dk, 0, N * s->g * s->dk * sizeof(float));
    memset(dv, 0, N * s->g * s->dv * sizeof(float));
    cpu_attn_pooled_bwd(s, s->T, 1, s->window, q, k, v, o, lse, dout, drow, dq, dk, dv);
}
