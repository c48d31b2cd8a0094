// Decode ops of the CPU backend (attn_decode, select_decode, attn_slc_decode) against naive double
// references, on GQA-shaped caches (one key part) and latent-shaped caches (two key parts, the second
// shared by all groups through head stride 0, values aliasing the first part); select_decode also
// against cpu_select_topk's row for the same query.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "core/error.h"
#include "testutil.h"

// A cache of S rows per sequence. GQA: k [B, S, g, dk1], v [B, S, g, dv]. Latent: one buffer of rows
// [c_0 .. c_{g-1} | kr] (g*dk1 + dk2 floats), v = c_j (dv = dk1).
typedef struct {
    int B, S, g, dk1, dk2, dv, latent;
    float *k, *v;  // v == k for latent caches
    asa_kv_view view;
} test_cache;

static void cache_new(test_cache *c, int B, int S, int g, int dk1, int dk2, int dv, int latent, asa_rng *r) {
    memset(c, 0, sizeof *c);
    c->B = B, c->S = S, c->g = g, c->dk1 = dk1, c->dk2 = dk2, c->dv = dv, c->latent = latent;
    asa_kv_view *w = &c->view;
    if (latent) {
        const long rs = (long)g * dk1 + dk2;
        c->k = malloc(sizeof(float) * (size_t)(B * S * rs));
        tu_fill_normal(c->k, (size_t)(B * S * rs), r, 1.0f);
        c->v = c->k;
        *w = (asa_kv_view){c->k, S * rs, rs, dk1, dk1, c->k + (long)g * dk1, S * rs, rs, 0, dk2,
                           c->k, S * rs, rs, dk1, dk1};
    } else {
        c->k = malloc(sizeof(float) * (size_t)(B * S * g * dk1));
        c->v = malloc(sizeof(float) * (size_t)(B * S * g * dv));
        tu_fill_normal(c->k, (size_t)(B * S * g * dk1), r, 1.0f);
        tu_fill_normal(c->v, (size_t)(B * S * g * dv), r, 1.0f);
        *w = (asa_kv_view){c->k, (long)S * g * dk1, (long)g * dk1, dk1, dk1, NULL, 0, 0, 0, 0,
                           c->v, (long)S * g * dv, (long)g * dv, dv, dv};
    }
}

static void cache_free(test_cache *c) {
    if (c->v != c->k) free(c->v);
    free(c->k);
}

static double ref_key_dot(const float *q, const asa_kv_view *kv, int b, int s, int j) {
    double acc = 0;
    const float *k1 = (const float *)kv->k1 + b * kv->k1_bs + s * kv->k1_rs + j * kv->k1_hs;
    for (int e = 0; e < kv->dk1; e++) acc += (double)q[e] * k1[e];
    if (kv->dk2) {
        const float *k2 = (const float *)kv->k2 + b * kv->k2_bs + s * kv->k2_rs + j * kv->k2_hs;
        for (int e = 0; e < kv->dk2; e++) acc += (double)q[kv->dk1 + e] * k2[e];
    }
    return acc;
}

// Softmax attention of one query over the listed rows, in double.
static void ref_attend(const float *q, const asa_kv_view *kv, int b, int j, const int *rows, int nrows, double scale,
                       double *o, double *lse) {
    double mx = -INFINITY, l = 0;
    double *sc = malloc(sizeof(double) * (size_t)(nrows + 1));
    for (int r = 0; r < nrows; r++) {
        sc[r] = ref_key_dot(q, kv, b, rows[r], j) * scale;
        if (sc[r] > mx) mx = sc[r];
    }
    for (int c = 0; c < kv->dv; c++) o[c] = 0;
    for (int r = 0; r < nrows; r++) {
        const double p = exp(sc[r] - mx);
        const float *v = (const float *)kv->v + b * kv->v_bs + rows[r] * kv->v_rs + j * kv->v_hs;
        l += p;
        for (int c = 0; c < kv->dv; c++) o[c] += p * v[c];
    }
    if (nrows == 0) *lse = -INFINITY;
    else {
        for (int c = 0; c < kv->dv; c++) o[c] /= l;
        *lse = mx + log(l);
    }
    free(sc);
}

// fp32 dots of <= 40 terms and a softmax over <= 150 keys: rounding stays near 1e-6 relative.
#define TOL 1e-5

static void check_attn_decode(const char *what, int B, int h, int g, int dk1, int dk2, int dv, int latent, int S,
                              int s0, int s1, uint64_t seed) {
    asa_rng r;
    asa_rng_seed(&r, seed);
    test_cache c;
    cache_new(&c, B, S, g, dk1, dk2, dv, latent, &r);
    const int dk = dk1 + dk2;
    const float scale = 1.0f / sqrtf((float)dk);
    float *q = malloc(sizeof(float) * (size_t)(B * h * dk));
    tu_fill_normal(q, (size_t)(B * h * dk), &r, 1.0f);
    float *o = tu_guarded_new((size_t)(B * h * dv)), *lse = tu_guarded_new((size_t)(B * h));
    double *oref = malloc(sizeof(double) * (size_t)(B * h * dv)), *lref = malloc(sizeof(double) * (size_t)(B * h));
    int *rows = malloc(sizeof(int) * (size_t)(S + 1));
    int nrows = 0;
    for (int s = s0; s < s1; s++) rows[nrows++] = s;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < h; i++)
            ref_attend(q + (b * h + i) * dk, &c.view, b, i / (h / g), rows, nrows, scale, oref + (b * h + i) * dv,
                       lref + b * h + i);
    asa_backend *be = asa_backend_cpu_new();
    be->attn_decode(be, B, h, g, scale, q, &c.view, s0, s1, o, lse);
    TU_CHECK(tu_guard_ok(o, (size_t)(B * h * dv)) && tu_guard_ok(lse, (size_t)(B * h)), "%s: guard zone written", what);
    if (s1 <= s0) {
        int ok = 1;
        for (int n = 0; n < B * h * dv; n++) ok &= o[n] == 0.0f;
        for (int n = 0; n < B * h; n++) ok &= lse[n] == -INFINITY;
        TU_CHECK(ok, "%s: empty range must give o = 0, lse = -inf", what);
    } else {
        double eo = tu_rel_err(o, oref, (size_t)(B * h * dv)), el = tu_max_abs_diff(lse, lref, (size_t)(B * h));
        TU_CHECK(eo < TOL, "%s: o rel err %.3e", what, eo);
        TU_CHECK(el < TOL * 10, "%s: lse max abs err %.3e", what, el);  // |lse| is up to ~10
    }
    printf("  attn_decode %-34s rows [%d, %d)\n", what, s0, s1);
    be->destroy(be);
    tu_guarded_free(o);
    tu_guarded_free(lse);
    free(q), free(oref), free(lref), free(rows);
    cache_free(&c);
}

// Per-group concatenated keys [B*T, g, dk1+dk2] of a cache (what the training ops read).
static float *cache_as_keys(const test_cache *c) {
    const int dk = c->dk1 + c->dk2;
    float *k = malloc(sizeof(float) * (size_t)(c->B * c->S * c->g * dk));
    for (int b = 0; b < c->B; b++)
        for (int s = 0; s < c->S; s++)
            for (int j = 0; j < c->g; j++) {
                float *dst = k + (((long)b * c->S + s) * c->g + j) * dk;
                const asa_kv_view *w = &c->view;
                memcpy(dst, (const float *)w->k1 + b * w->k1_bs + s * w->k1_rs + j * w->k1_hs, sizeof(float) * (size_t)c->dk1);
                if (c->dk2) memcpy(dst + c->dk1, (const float *)w->k2 + b * w->k2_bs + s * w->k2_rs + j * w->k2_hs, sizeof(float) * (size_t)c->dk2);
            }
    return k;
}

// select_decode at every anchor t = a*R must reproduce row a of cpu_select_topk over the whole sequence,
// given the same queries, pooled keys and compression lse. `periodic` repeats the keys with period b_s,
// so that every complete selection block scores the same and the tie rule decides.
static void check_select(const char *what, int B, int T, int h, int g, int dk1, int dk2, int latent, int bsz, int bsel,
                         int n, int R, int periodic, uint64_t seed) {
    asa_rng r;
    asa_rng_seed(&r, seed);
    test_cache c;
    cache_new(&c, B, T, g, dk1, dk2, latent ? dk1 : dk1, latent, &r);
    const int dk = dk1 + dk2, rs = latent ? g * dk1 + dk2 : g * dk1;
    if (periodic)
        for (int b = 0; b < B; b++)
            for (int s = bsel; s < T; s++) memcpy(c.k + ((long)b * T + s) * rs, c.k + ((long)b * T + s % bsel) * rs, sizeof(float) * (size_t)rs);
    float *keys = cache_as_keys(&c);
    asa_attn_shape sh = {0};
    sh.B = B, sh.T = T, sh.h = h, sh.g = g, sh.dk = dk, sh.dv = dk, sh.scale = 1.0f / sqrtf((float)dk);
    sh.block_size = bsz, sh.selection_block_size = bsel, sh.block_counts = n, sh.selection_share = R;
    const int nb = T / bsz, na = asa_attn_num_anchors(&sh);
    float *q = malloc(sizeof(float) * (size_t)(B * T * h * dk));
    tu_fill_normal(q, (size_t)(B * T * h * dk), &r, 1.0f);
    float *kc = malloc(sizeof(float) * (size_t)(B * (nb + 1) * g * dk));
    float *o = malloc(sizeof(float) * (size_t)(B * T * h * dk)), *lse = malloc(sizeof(float) * (size_t)(B * T * h));
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(B * na * g * n));
    asa_backend *be = asa_backend_cpu_new();
    cpu_compress_fwd(be, &sh, dk, keys, kc);
    cpu_attn_cmp_fwd(be, &sh, q, kc, kc, o, lse);
    cpu_select_topk(be, &sh, q, kc, lse, idx);
    // The decode side pools the cache's own rows (latent: [c | kr], one "group" of width rs).
    asa_attn_shape sp = sh;
    sp.g = 1;
    float *pooled = malloc(sizeof(float) * (size_t)(B * (nb + 1) * rs));
    cpu_compress_fwd(be, &sp, rs, c.k, pooled);
    asa_kv_view kvc;
    if (latent)
        kvc = (asa_kv_view){pooled, (long)nb * rs, rs, dk1, dk1, pooled + g * dk1, (long)nb * rs, rs, 0, dk2,
                            pooled, (long)nb * rs, rs, dk1, dk1};
    else
        kvc = (asa_kv_view){pooled, (long)nb * rs, rs, dk1, dk1, NULL, 0, 0, 0, 0, pooled, (long)nb * rs, rs, dk1, dk1};
    float *qt = malloc(sizeof(float) * (size_t)(B * h * dk)), *lt = malloc(sizeof(float) * (size_t)(B * h));
    int32_t *got = malloc(sizeof(int32_t) * (size_t)(B * g * n + 2));
    int mismatches = 0, sorted = 1, ties_low = 1;
    for (int a = 0; a < na; a++) {
        const int t = a * R;
        for (int b = 0; b < B; b++) {
            memcpy(qt + b * h * dk, q + ((long)b * T + t) * h * dk, sizeof(float) * (size_t)(h * dk));
            memcpy(lt + b * h, lse + ((long)b * T + t) * h, sizeof(float) * (size_t)h);
        }
        for (int e = 0; e < B * g * n + 2; e++) got[e] = 0x7eadbeef;  // poison, and two guards past the end
        be->select_decode(be, B, h, g, sh.scale, qt, &kvc, lt, t, bsz, bsel, n, got);
        TU_CHECK(got[B * g * n] == 0x7eadbeef, "%s: select_decode wrote past idx", what);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < g; j++) {
                const int32_t *want = idx + (((long)b * na + a) * g + j) * n, *row = got + (b * g + j) * n;
                if (memcmp(want, row, sizeof(int32_t) * (size_t)n)) mismatches++;
                for (int e = 1; e < n; e++)
                    if (row[e] >= 0 && row[e] <= row[e - 1]) sorted = 0;
                if (periodic) {  // equal scores: the forced blocks 0, c-1, c, then the lowest free ones
                    const int cb = t / bsel, total = cb + 1 < n ? cb + 1 : n;
                    int e = 0;
                    for (int u = 0; u <= cb; u++) {
                        const int nfree = total - (cb >= 2 ? 3 : cb + 1);
                        if (u == 0 || u >= cb - 1 || u <= nfree) {
                            if (e >= n || row[e] != u) ties_low = 0;
                            e++;
                        }
                    }
                    if (e != total) ties_low = 0;
                }
            }
    }
    TU_CHECK(mismatches == 0, "%s: %d rows differ from select_topk", what, mismatches);
    TU_CHECK(sorted, "%s: rows not ascending", what);
    TU_CHECK(ties_low, "%s: ties did not go to the lower block", what);
    printf("  select_decode %-32s T=%d b=%d b_s=%d n=%d R=%d: %d anchors\n", what, T, bsz, bsel, n, R, na);
    be->destroy(be);
    free(keys), free(q), free(kc), free(o), free(lse), free(idx), free(pooled), free(qt), free(lt), free(got);
    cache_free(&c);
}

// attn_slc_decode for the query at t over random block lists (with -1 slots, the current partial block
// and blocks wholly after t), against the naive reference over the listed rows s <= t.
static void check_slc(const char *what, int B, int h, int g, int dk1, int dk2, int dv, int latent, int S, int t, int bsel,
                      int n, uint64_t seed) {
    asa_rng r;
    asa_rng_seed(&r, seed);
    test_cache c;
    cache_new(&c, B, S, g, dk1, dk2, dv, latent, &r);
    const int dk = dk1 + dk2, nsb = (S + bsel - 1) / bsel;
    const float scale = 1.0f / sqrtf((float)dk);
    float *q = malloc(sizeof(float) * (size_t)(B * h * dk));
    tu_fill_normal(q, (size_t)(B * h * dk), &r, 1.0f);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(B * g * n));
    for (int b = 0; b < B; b++)
        for (int j = 0; j < g; j++) {
            int32_t *row = idx + (b * g + j) * n;
            int e = 0;
            row[e++] = t / bsel;  // the partial current block
            for (int u = 0; u < nsb && e < n; u++)
                if (u != t / bsel && asa_rng_below(&r, 2)) row[e++] = u;
            for (; e < n; e++) row[e] = -1;
        }
    float *o = tu_guarded_new((size_t)(B * h * dv)), *lse = tu_guarded_new((size_t)(B * h));
    double *oref = malloc(sizeof(double) * (size_t)(B * h * dv)), *lref = malloc(sizeof(double) * (size_t)(B * h));
    int *rows = malloc(sizeof(int) * (size_t)(n * bsel + 1));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < h; i++) {
            const int j = i / (h / g);
            int nrows = 0;
            for (int e = 0; e < n; e++) {
                const int u = idx[(b * g + j) * n + e];
                for (int s = u * bsel; u >= 0 && s < (u + 1) * bsel && s <= t; s++) rows[nrows++] = s;
            }
            ref_attend(q + (b * h + i) * dk, &c.view, b, j, rows, nrows, scale, oref + (b * h + i) * dv, lref + b * h + i);
        }
    asa_backend *be = asa_backend_cpu_new();
    be->attn_slc_decode(be, B, h, g, scale, q, &c.view, idx, t, bsel, n, o, lse);
    TU_CHECK(tu_guard_ok(o, (size_t)(B * h * dv)) && tu_guard_ok(lse, (size_t)(B * h)), "%s: guard zone written", what);
    double eo = tu_rel_err(o, oref, (size_t)(B * h * dv)), el = tu_max_abs_diff(lse, lref, (size_t)(B * h));
    TU_CHECK(eo < TOL, "%s: o rel err %.3e", what, eo);
    TU_CHECK(el < TOL * 10, "%s: lse max abs err %.3e", what, el);
    printf("  attn_slc_decode %-30s t=%d b_s=%d n=%d\n", what, t, bsel, n);
    be->destroy(be);
    tu_guarded_free(o);
    tu_guarded_free(lse);
    free(q), free(idx), free(oref), free(lref), free(rows);
    cache_free(&c);
}

int main(void) {
    // GQA caches: one key part, separate values.
    check_attn_decode("gqa B=3 h=4 g=2 d=8", 3, 4, 2, 8, 0, 8, 0, 37, 5, 30, 1);
    check_attn_decode("gqa B=2 h=6 g=3 dk=12 dv=5", 2, 6, 3, 12, 0, 5, 0, 200, 0, 180, 2);  // > one chunk
    check_attn_decode("gqa one row", 1, 2, 1, 8, 0, 8, 0, 9, 8, 9, 3);
    check_attn_decode("gqa empty range (s1 == s0)", 2, 4, 2, 8, 0, 8, 0, 10, 4, 4, 4);
    check_attn_decode("gqa empty range (s1 < s0)", 2, 4, 2, 8, 0, 8, 0, 10, 6, 2, 5);
    // Latent caches: [c_j | kr], kr shared (head stride 0), values alias c_j.
    check_attn_decode("latent B=2 h=4 g=2 dc=8 dr=4", 2, 4, 2, 8, 4, 8, 1, 45, 0, 45, 6);
    check_attn_decode("latent g=1 (MLA window) dc=16 dr=4", 2, 4, 1, 16, 4, 16, 1, 70, 3, 70, 7);
    check_attn_decode("latent dc=9 dr=6 (odd widths)", 3, 6, 3, 9, 6, 9, 1, 23, 1, 22, 8);
    check_attn_decode("latent empty range", 2, 4, 2, 8, 4, 8, 1, 12, 0, 0, 9);

    check_select("gqa", 2, 61, 4, 2, 8, 0, 0, 4, 8, 4, 1, 0, 11);
    check_select("gqa R=4 n=5", 2, 77, 4, 2, 8, 0, 0, 4, 8, 5, 4, 0, 12);
    check_select("gqa b_s=b", 3, 50, 6, 3, 8, 0, 0, 4, 4, 6, 2, 0, 13);
    check_select("latent", 2, 61, 4, 2, 8, 4, 1, 4, 8, 4, 1, 0, 14);
    check_select("latent R=4", 2, 90, 4, 2, 8, 4, 1, 4, 16, 5, 4, 0, 15);
    check_select("gqa ties (periodic keys)", 2, 72, 4, 2, 8, 0, 0, 4, 8, 4, 1, 1, 16);
    check_select("latent ties (periodic keys)", 2, 72, 4, 2, 8, 4, 1, 4, 8, 5, 2, 1, 17);
    check_select("short (T < b)", 2, 3, 4, 2, 8, 0, 0, 4, 8, 4, 1, 0, 18);

    check_slc("gqa", 2, 4, 2, 8, 0, 8, 0, 64, 43, 8, 4, 21);
    check_slc("gqa t at block start", 3, 4, 1, 8, 0, 6, 0, 40, 32, 8, 5, 22);
    check_slc("latent", 2, 4, 2, 8, 4, 8, 1, 64, 50, 8, 4, 23);
    check_slc("latent g=1", 2, 4, 1, 16, 4, 16, 1, 100, 99, 16, 6, 24);
    return tu_finish("test_ops_decode");
}
