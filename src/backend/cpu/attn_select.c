// CPU selection branch (SPEC §4): top-n block selection from the compression branch's probabilities
// (select_topk) and attention over the selected blocks (attn_slc_fwd / attn_slc_bwd). Work is
// proportional to the keys each query actually reads (at most n * b_s); nothing T×T or T×nb is stored.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/attn_kernels.h"
#include "core/error.h"

static inline int num_sel_blocks(const asa_attn_shape *s) {
    return (s->T + s->selection_block_size - 1) / s->selection_block_size;
}

void cpu_select_topk(asa_backend *be, const asa_attn_shape *s, const void *q_, const void *kc_, const float *lse_cmp,
                     int32_t *idx) {
    const float *q = q_;
    const float *kc = kc_;
    const int B = s->B, T = s->T, h = s->h, g = s->g, dk = s->dk, G = h / g;
    const int bsz = s->block_size, bsel = s->selection_block_size, n = s->block_counts, R = s->selection_share;
    const int nb = asa_attn_num_cmp_blocks(s), na = asa_attn_num_anchors(s), nsb = num_sel_blocks(s);
    const int per = bsel / bsz;  // compression blocks per selection block
    const float scale = s->scale;
    ASA_CHECK(bsel % bsz == 0 && n >= 3);
#pragma omp parallel if ((long)B * na * h * nb * dk >= CPU_PAR_MIN_WORK)
    {
        float *score = asa_malloc((size_t)nsb * sizeof(float));
        unsigned char *chosen = asa_malloc((size_t)nsb);
#pragma omp for collapse(3) schedule(dynamic, 8)
        for (int b = 0; b < B; b++)
            for (int a = 0; a < na; a++)
                for (int j = 0; j < g; j++) {
                    const int t = a * R, c = t / bsel;
                    const int nm = (t + 1) / bsz < nb ? (t + 1) / bsz : nb;  // visible compression blocks
                    const long nq = (long)b * T + t;
                    memset(score, 0, (size_t)(c + 1) * sizeof(float));
                    // Fixed order (head, then block) so that equal inputs give equal sums.
                    for (int i = j * G; i < (j + 1) * G; i++) {
                        const float L = lse_cmp[nq * h + i];
                        if (L == -INFINITY) continue;
                        const float *qi = q + (nq * h + i) * dk;
                        for (int m = 0; m < nm; m++) {
                            const float *km = kc + (((long)b * nb + m) * g + j) * dk;
                            score[m / per] += expf(dot(qi, km, dk) * scale - L);
                        }
                    }
                    select_blocks(score, c, n, chosen, idx + (((long)b * na + a) * g + j) * n);
                }
        free(score);
        free(chosen);
    }
}

// The block list that query t of group j reads: its anchor's row, t / R. Query t sees the tokens
// [u*b_s, min((u+1)*b_s, t+1)) of each listed block u.
static inline const int32_t *slc_row(const asa_attn_shape *s, const int32_t *idx, int b, int t, int j) {
    return idx + (((long)b * asa_attn_num_anchors(s) + t / s->selection_share) * s->g + j) * s->block_counts;
}

void cpu_attn_slc_fwd(asa_backend *be, const asa_attn_shape *s, const void *q_, const void *k_, const void *v_,
                      const int32_t *idx, void *o_, float *lse) {
    const float *q = q_;
    const float *k = k_;
    const float *v = v_;
    float *o = o_;
    const int B = s->B, T = s->T, h = s->h, g = s->g, dk = s->dk, dv = s->dv, G = h / g;
    const int bsel = s->selection_block_size, n = s->block_counts;
    const float scale = s->scale;
    const long krs = (long)g * dk, vrs = (long)g * dv;
#pragma omp parallel if ((long)B * h * T * n * bsel * (dk + dv) >= CPU_PAR_MIN_WORK)
    {
        float *acc = asa_malloc((size_t)dv * sizeof(float));
        float *sc = asa_malloc((size_t)bsel * sizeof(float));
#pragma omp for collapse(3) schedule(dynamic, 16)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < h; i++)
                for (int t = 0; t < T; t++) {
                    const long nq = (long)b * T + t;
                    const int j = i / G;
                    const int32_t *row = slc_row(s, idx, b, t, j);
                    const float *qi = q + (nq * h + i) * dk;
                    const float *kb = k + (long)b * T * krs + (long)j * dk;
                    const float *vb = v + (long)b * T * vrs + (long)j * dv;
                    float mx = -INFINITY, l = 0;
                    memset(acc, 0, (size_t)dv * sizeof(float));
                    // Online softmax, one selected block at a time.
                    for (int e = 0; e < n; e++) {
                        const int u = row[e];
                        if (u < 0) continue;
                        const int s0 = u * bsel, s1 = (u + 1) * bsel < t + 1 ? (u + 1) * bsel : t + 1;
                        if (s0 >= s1) continue;
                        float cmax = -INFINITY;
                        for (int p = s0; p < s1; p++) {
                            sc[p - s0] = dot(qi, kb + p * krs, dk) * scale;
                            if (sc[p - s0] > cmax) cmax = sc[p - s0];
                        }
                        if (cmax > mx) {
                            const float r = expf(mx - cmax);
                            l *= r;
                            for (int c = 0; c < dv; c++) acc[c] *= r;
                            mx = cmax;
                        }
                        for (int p = s0; p < s1; p++) {
                            const float pr = expf(sc[p - s0] - mx);
                            l += pr;
                            axpy(acc, pr, vb + p * vrs, dv);
                        }
                    }
                    float *oi = o + (nq * h + i) * dv;
                    if (l == 0) {  // an empty list (not produced by select_topk, which forces block 0)
                        memset(oi, 0, (size_t)dv * sizeof(float));
                        lse[nq * h + i] = -INFINITY;
                    } else {
                        const float inv = 1.0f / l;
                        for (int c = 0; c < dv; c++) oi[c] = acc[c] * inv;
                        lse[nq * h + i] = mx + logf(l);
                    }
                }
        free(acc);
        free(sc);
    }
}

// Backward, accumulating. dq: query-major, each query walks its own list. dk/dv: the lists are inverted
// into, per (batch, group, block), the ascending anchors that selected it (CSR: counts, prefix sums,
// entries); each block then gathers from the R queries of each of its anchors, so every key row has
// one writer and a fixed summation order.
void cpu_attn_slc_bwd(asa_backend *be, const asa_attn_shape *s, const void *q_, const void *k_, const void *v_,
                      const int32_t *idx, const void *o_, const float *lse, const void *dout_, const float *drow,
                      void *dq_, void *dk_, void *dv_) {
    const float *q = q_;
    const float *k = k_;
    const float *v = v_;
    const float *o = o_;
    const float *dout = dout_;
    float *dq = dq_;
    float *dk = dk_;
    float *dv = dv_;
    const int B = s->B, T = s->T, h = s->h, g = s->g, dkh = s->dk, dvh = s->dv, G = h / g;
    const int bsel = s->selection_block_size, n = s->block_counts, R = s->selection_share;
    const int na = asa_attn_num_anchors(s), nsb = num_sel_blocks(s);
    const float scale = s->scale;
    const long krs = (long)g * dkh, vrs = (long)g * dvh, N = (long)B * T;
    // Multiply-adds of each pass over all (query, selected key) pairs.
    const int par = N * h * n * bsel * (dkh + dvh) >= CPU_PAR_MIN_WORK;

    float *own;
    const float *D = attn_delta(drow, &own, (long)N * h, dvh, dout, o);

#pragma omp parallel if (par)
    {
        float *acc = asa_malloc((size_t)dkh * sizeof(float));
#pragma omp for collapse(3) schedule(dynamic, 16)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < h; i++)
                for (int t = 0; t < T; t++) {
                    const long nq = (long)b * T + t;
                    const int j = i / G;
                    const float L = lse[nq * h + i], Dn = D[nq * h + i];
                    if (L == -INFINITY) continue;
                    const int32_t *row = slc_row(s, idx, b, t, j);
                    const float *qi = q + (nq * h + i) * dkh, *doi = dout + (nq * h + i) * dvh;
                    const float *kb = k + (long)b * T * krs + (long)j * dkh;
                    const float *vb = v + (long)b * T * vrs + (long)j * dvh;
                    memset(acc, 0, (size_t)dkh * sizeof(float));
                    for (int e = 0; e < n; e++) {
                        const int u = row[e];
                        if (u < 0) continue;
                        const int s0 = u * bsel, s1 = (u + 1) * bsel < t + 1 ? (u + 1) * bsel : t + 1;
                        for (int p = s0; p < s1; p++) {
                            const float *kp = kb + p * krs;
                            const float pr = expf(dot(qi, kp, dkh) * scale - L);
                            const float ds = pr * (dot(doi, vb + p * vrs, dvh) - Dn);
                            axpy(acc, ds, kp, dkh);
                        }
                    }
                    axpy(dq + (nq * h + i) * dkh, scale, acc, dkh);
                }
        free(acc);
    }

    // CSR of (b, j, u) -> anchors. Filled per (b, j) in ascending anchor order: deterministic.
    const long nlists = (long)B * g * nsb;
    int *start = asa_calloc((size_t)nlists + 1, sizeof(int));
    int *fill = asa_malloc((size_t)nlists * sizeof(int));
    int *anchors = asa_malloc(((size_t)B * na * g * n + 1) * sizeof(int));
#pragma omp parallel for collapse(2) if ((long)B * g * na * n >= CPU_PAR_MIN_WORK)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < g; j++)
            for (int a = 0; a < na; a++) {
                const int32_t *row = idx + (((long)b * na + a) * g + j) * n;
                for (int e = 0; e < n; e++)
                    if (row[e] >= 0) {
                        ASA_CHECK(row[e] < nsb);
                        start[((long)b * g + j) * nsb + row[e] + 1]++;
                    }
            }
    for (long r = 0; r < nlists; r++) start[r + 1] += start[r];
    memcpy(fill, start, (size_t)nlists * sizeof(int));
#pragma omp parallel for collapse(2) if ((long)B * g * na * n >= CPU_PAR_MIN_WORK)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < g; j++)
            for (int a = 0; a < na; a++) {
                const int32_t *row = idx + (((long)b * na + a) * g + j) * n;
                for (int e = 0; e < n; e++)
                    if (row[e] >= 0) anchors[fill[((long)b * g + j) * nsb + row[e]]++] = a;
            }

#pragma omp parallel if (par)
    {
        float *ak = asa_malloc((size_t)dkh * sizeof(float));
        float *av = asa_malloc((size_t)dvh * sizeof(float));
#pragma omp for collapse(3) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int j = 0; j < g; j++)
                for (int u = 0; u < nsb; u++) {
                    const long list = ((long)b * g + j) * nsb + u;
                    const int s1 = (u + 1) * bsel < T ? (u + 1) * bsel : T;
                    for (int p = u * bsel; p < s1; p++) {
                        const long kr = (long)b * T + p;
                        const float *kp = k + kr * krs + (long)j * dkh, *vp = v + kr * vrs + (long)j * dvh;
                        memset(ak, 0, (size_t)dkh * sizeof(float));
                        memset(av, 0, (size_t)dvh * sizeof(float));
                        for (int r = start[list]; r < start[list + 1]; r++) {
                            const int a = anchors[r];
                            const int t1 = a * R + R < T ? a * R + R : T;
                            for (int t = a * R > p ? a * R : p; t < t1; t++)
                                key_grad_add_query(q, dout, lse, D, (long)b * T + t, h, j * G, (j + 1) * G, dkh, dvh,
                                                   kp, vp, scale, ak, av);
                        }
                        axpy(dk + kr * krs + (long)j * dkh, scale, ak, dkh);
                        axpy(dv + kr * vrs + (long)j * dvh, 1.0f, av, dvh);
                    }
                }
        free(ak);
        free(av);
    }
    free(start);
    free(fill);
    free(anchors);
    free(own);
}
