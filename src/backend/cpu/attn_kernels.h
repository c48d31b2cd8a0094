// Internals shared by the CPU attention files: the pooled-key attention kernels (defined in
// attn_dense.c, also run by attn_compress.c) and the dot / axpy helpers of all three. Internal to the
// CPU backend, so not part of cpu_ops.h (the op table's list).
#ifndef ASA_BACKEND_CPU_ATTN_KERNELS_H
#define ASA_BACKEND_CPU_ATTN_KERNELS_H

#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

// Causal attention over pooled keys: key m summarises tokens [m*span, (m+1)*span) and is visible to
// query t iff (m+1)*span - 1 <= t (and t - window < m when window > 0). k [B, nkeys, g, dk],
// v [B, nkeys, g, dv]; `window` replaces s->window. Dense attention is span = 1, nkeys = T.
void cpu_attn_pooled_fwd(const asa_attn_shape *s, int nkeys, int span, int window, const float *q,
                         const float *k, const float *v, float *o, float *lse);
void cpu_attn_pooled_bwd(const asa_attn_shape *s, int nkeys, int span, int window, const float *q,
                         const float *k, const float *v, const float *o, const float *lse, const float *dout,
                         const float *drow, float *dq, float *dk, float *dv);

// Eight independent partial sums: the compiler vectorises this without -ffast-math, and the summation
// order depends only on n, never on where the data sits in memory, so identical inputs give
// bit-identical scores (select_topk's ties are real ties). Do not change the order.
static inline float dot(const float *a, const float *b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    float tail = 0;
    for (; i < n; i++) tail += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

static inline void axpy(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

// SPEC §4's choice of blocks for one query and group, from score[0..c] (c = the current selection
// block): 0, c-1 and c always, then the rest by descending score, ties to the lower index (strict >),
// n in all at most. Writes row[0..n) ascending, -1 padded. chosen: c+1 bytes of scratch.
static inline void select_blocks(const float *score, int c, int n, unsigned char *chosen, int32_t *row) {
    memset(chosen, 0, (size_t)(c + 1));
    chosen[0] = 1;
    if (c >= 1) chosen[c - 1] = chosen[c] = 1;
    const int nforced = c >= 2 ? 3 : c + 1;
    const int total = c + 1 < n ? c + 1 : n;
    for (int e = nforced; e < total; e++) {
        int best = -1;
        for (int u = 1; u < c - 1; u++)
            if (!chosen[u] && (best < 0 || score[u] > score[best])) best = u;
        chosen[best] = 1;
    }
    int e = 0;
    for (int u = 0; u <= c; u++)
        if (chosen[u]) row[e++] = u;
    for (; e < n; e++) row[e] = -1;
}

// D[r] = dout_r . o_r for every (token, head) row r < rows: the softmax-backward correction term,
// ds = p * (dp - D). The caller's drow when it has one, else computed into *own, which the caller frees.
static inline const float *attn_delta(const float *drow, float **own, long rows, int dv, const float *dout,
                                      const float *o) {
    *own = NULL;
    if (drow) return drow;
    float *D = *own = asa_malloc((size_t)rows * sizeof(float));
#pragma omp parallel for if (rows * dv >= CPU_PAR_MIN_WORK)
    for (long r = 0; r < rows; r++) D[r] = dot(dout + r * dv, o + r * dv, dv);
    return D;
}

// Key-major backward: adds to one key's accumulators the share of query row n, heads [i0, i1) of
// q/dout [N, h, d]: p = exp(q_i.k * scale - lse_i), av += p * dout_i, ak += p * (dout_i.v - D_i) * q_i.
// (The caller scales ak by `scale` once per key.)
static inline void key_grad_add_query(const float *q, const float *dout, const float *lse, const float *D, long n,
                                      int h, int i0, int i1, int dkh, int dvh, const float *km, const float *vm,
                                      float scale, float *ak, float *av) {
    for (int i = i0; i < i1; i++) {
        const float *qi = q + (n * h + i) * dkh, *doi = dout + (n * h + i) * dvh;
        const float p = expf(dot(qi, km, dkh) * scale - lse[n * h + i]);
        const float ds = p * (dot(doi, vm, dvh) - D[n * h + i]);
        axpy(av, p, doi, dvh);
        axpy(ak, ds, qi, dkh);
    }
}

#endif
