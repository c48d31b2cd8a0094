// Tests of the CPU attention ops (attn_dense.c, attn_compress.c, attn_select.c) through the backend
// table, against naive double-precision references written here from SPEC §2-§4: every query gets an
// explicit key set, softmax is the plain two-pass one, gradients are central finite differences of
// the reference forward.
//
// Tolerances. Forward outputs and lse: 1e-5 relative (norm-wise): fp32 has a unit roundoff of 6e-8,
// and a query sums at most a few hundred terms of dot products of at most 32 terms, so the honest
// error is ~1e-6, while any wrong key set or mask gives O(1) errors. Gradients: 1e-4 relative against
// finite differences in double (step 1e-5: truncation ~1e-10, rounding ~1e-11); the C backward sums
// over up to T*G query-key pairs and recomputes probabilities from a float lse, a longer reduction.
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "testutil.h"

static asa_backend *be;
static asa_rng rng;

// One test configuration; fields not used by an op are ignored by it.
typedef struct {
    int B, T, h, g, dk, dv, window, b, bs, n, R;
} cfg;

static asa_attn_shape make_shape(cfg c) {
    asa_attn_shape s = {.B = c.B, .T = c.T, .h = c.h, .g = c.g, .dk = c.dk, .dv = c.dv,
                        .scale = 1.0f / sqrtf((float)c.dk), .window = c.window, .block_size = c.b,
                        .selection_block_size = c.bs, .block_counts = c.n, .selection_share = c.R};
    return s;
}

static float *rand_floats(size_t n, float std) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    tu_fill_normal(x, n, &rng, std);
    return x;
}

static double *to_double(const float *x, size_t n) {
    double *d = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

static float *guarded_copy(const float *x, size_t n) {
    float *p = tu_guarded_new(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}

// ---------------------------------------------------------------------------------------------------
// The three attention ops behind one interface: which keys query (b, t) of group j sees, the number of
// key rows per sequence, and calls into the backend.

enum { DENSE, CMP, SLC };
static const char *kind_name[] = {"attn", "attn_cmp", "attn_slc"};

typedef struct {
    int kind;
    asa_attn_shape s;
    const int32_t *idx;  // SLC only: [B, na, g, n]
} acase;

static int case_nkeys(const acase *c) { return c->kind == CMP ? c->s.T / c->s.block_size : c->s.T; }

// The key sets, written from the SPEC's wording rather than from the ops' loop bounds.
static int visible(const acase *c, int b, int t, int j, int m) {
    const asa_attn_shape *s = &c->s;
    switch (c->kind) {
    case DENSE: return m <= t && (s->window == 0 || m > t - s->window);
    case CMP: return (m + 1) * s->block_size - 1 <= t;
    default: {
        if (m > t) return 0;
        const int na = (s->T + s->selection_share - 1) / s->selection_share;
        const int32_t *row = c->idx + (((long)b * na + t / s->selection_share) * s->g + j) * s->block_counts;
        for (int e = 0; e < s->block_counts; e++)
            if (row[e] >= 0 && row[e] == m / s->selection_block_size) return 1;
        return 0;
    }
    }
}

// Reference forward in double: q [N,h,dk], k [B,nkeys,g,dk], v [B,nkeys,g,dv] -> o [N,h,dv], lse [N,h].
static void ref_attn(const acase *c, const double *q, const double *k, const double *v, double *o, double *lse) {
    const asa_attn_shape *s = &c->s;
    const int nk = case_nkeys(c), G = s->h / s->g;
    double *sc = malloc((nk ? nk : 1) * sizeof(double));
    char *vis = malloc(nk ? nk : 1);
    for (int b = 0; b < s->B; b++)
        for (int t = 0; t < s->T; t++)
            for (int i = 0; i < s->h; i++) {
                const long r = ((long)b * s->T + t) * s->h + i;
                const int j = i / G;
                double mx = -INFINITY;
                for (int m = 0; m < nk; m++) {
                    vis[m] = (char)visible(c, b, t, j, m);
                    if (!vis[m]) continue;
                    const double *km = k + (((long)b * nk + m) * s->g + j) * s->dk;
                    double d = 0;
                    for (int e = 0; e < s->dk; e++) d += q[r * s->dk + e] * km[e];
                    sc[m] = d * s->scale;
                    if (sc[m] > mx) mx = sc[m];
                }
                for (int e = 0; e < s->dv; e++) o[r * s->dv + e] = 0;
                if (mx == -INFINITY) {
                    lse[r] = -INFINITY;
                    continue;
                }
                double sum = 0;
                for (int m = 0; m < nk; m++)
                    if (vis[m]) sum += exp(sc[m] - mx);
                lse[r] = mx + log(sum);
                for (int m = 0; m < nk; m++) {
                    if (!vis[m]) continue;
                    const double p = exp(sc[m] - lse[r]);
                    const double *vm = v + (((long)b * nk + m) * s->g + j) * s->dv;
                    for (int e = 0; e < s->dv; e++) o[r * s->dv + e] += p * vm[e];
                }
            }
    free(sc);
    free(vis);
}

static void op_fwd(const acase *c, const float *q, const float *k, const float *v, float *o, float *lse) {
    if (c->kind == DENSE) be->attn_fwd(be, &c->s, q, k, v, o, lse);
    else if (c->kind == CMP) be->attn_cmp_fwd(be, &c->s, q, k, v, o, lse);
    else be->attn_slc_fwd(be, &c->s, q, k, v, c->idx, o, lse);
}

static void op_bwd(const acase *c, const float *q, const float *k, const float *v, const float *o,
                   const float *lse, const float *dout, const float *drow, float *dq, float *dk, float *dv) {
    if (c->kind == DENSE) be->attn_bwd(be, &c->s, q, k, v, o, lse, dout, drow, dq, dk, dv);
    else if (c->kind == CMP) be->attn_cmp_bwd(be, &c->s, q, k, v, o, lse, dout, drow, dq, dk, dv);
    else be->attn_slc_bwd(be, &c->s, q, k, v, c->idx, o, lse, dout, drow, dq, dk, dv);
}

// Forward against the reference: outputs in guarded NaN-poisoned buffers, rows with no visible key
// exactly o = 0 and lse = -inf. Returns the number of such rows.
static int check_fwd(const acase *c, const char *what) {
    const asa_attn_shape *s = &c->s;
    const size_t N = (size_t)s->B * s->T, nk = (size_t)case_nkeys(c);
    const size_t nq = N * s->h * s->dk, nkk = s->B * nk * s->g * s->dk, nv = s->B * nk * s->g * s->dv;
    const size_t no = N * s->h * s->dv, nl = N * s->h;
    float *q = rand_floats(nq, 1.5f), *k = rand_floats(nkk, 1.5f), *v = rand_floats(nv, 1.0f);
    float *o = tu_guarded_new(no), *lse = tu_guarded_new(nl);
    op_fwd(c, q, k, v, o, lse);
    double *qd = to_double(q, nq), *kd = to_double(k, nkk), *vd = to_double(v, nv);
    double *o_ref = malloc(no * sizeof(double)), *lse_ref = malloc(nl * sizeof(double));
    ref_attn(c, qd, kd, vd, o_ref, lse_ref);

    const double eo = tu_rel_err(o, o_ref, no);
    TU_CHECK(eo < 1e-5, "%s %s: o rel err %.3g", kind_name[c->kind], what, eo);
    // lse: finite rows against the reference, empty rows exactly -inf with o exactly 0.
    double num = 0, den = 0;
    int empty = 0, bad_empty = 0;
    for (size_t r = 0; r < nl; r++) {
        if (lse_ref[r] == -INFINITY) {
            empty++;
            int ok = lse[r] == -INFINITY;
            for (int e = 0; e < s->dv; e++) ok &= o[r * s->dv + e] == 0.0f;
            bad_empty += !ok;
        } else {
            const double d = (isfinite(lse[r]) ? lse[r] : INFINITY) - lse_ref[r];
            num += d * d;
            den += lse_ref[r] * lse_ref[r];
        }
    }
    const double el = den > 0 ? sqrt(num / den) : sqrt(num);
    TU_CHECK(el < 1e-5, "%s %s: lse rel err %.3g", kind_name[c->kind], what, el);
    TU_CHECK(bad_empty == 0, "%s %s: %d rows with no visible key are not o = 0, lse = -inf", kind_name[c->kind],
             what, bad_empty);
    TU_CHECK(tu_guard_ok(o, no) && tu_guard_ok(lse, nl), "%s %s: write outside o or lse", kind_name[c->kind], what);
    free(q); free(k); free(v); free(qd); free(kd); free(vd); free(o_ref); free(lse_ref);
    tu_guarded_free(o);
    tu_guarded_free(lse);
    return empty;
}

// Loss = sum(dout . o) on the reference forward, for finite differences.
typedef struct {
    const acase *c;
    double *q, *k, *v;
    const double *dout;
    double *o, *lse;  // scratch
    size_t no;
} fd_problem;

static double fd_loss(fd_problem *p) {
    ref_attn(p->c, p->q, p->k, p->v, p->o, p->lse);
    double L = 0;
    for (size_t i = 0; i < p->no; i++) L += p->dout[i] * p->o[i];
    return L;
}

static void fd_grad(fd_problem *p, double *x, size_t n, double *grad) {
    const double step = 1e-5;
    for (size_t i = 0; i < n; i++) {
        const double x0 = x[i];
        x[i] = x0 + step;
        const double lp = fd_loss(p);
        x[i] = x0 - step;
        const double lm = fd_loss(p);
        x[i] = x0;
        grad[i] = (lp - lm) / (2 * step);
    }
}

// Backward: C gradients (accumulated into zeroed buffers) against finite differences; inputs the loss
// does not depend on get exactly zero; a run into pre-filled buffers adds the same gradient (attn_bwd:
// writes it over them); a run on
// one thread is bit-identical (no races, a summation order independent of the schedule); no writes
// outside the buffers; a run given the row dots (drow, from doubles) gives the same gradients, and one
// given wrong row dots does not (the op reads them).
static void check_bwd(const acase *c, const char *what) {
    const asa_attn_shape *s = &c->s;
    const char *kn = kind_name[c->kind];
    const size_t N = (size_t)s->B * s->T, nk = (size_t)case_nkeys(c);
    const size_t n[3] = {N * s->h * s->dk, s->B * nk * s->g * s->dk, s->B * nk * s->g * s->dv};
    const size_t no = N * s->h * s->dv, nl = N * s->h;
    const char *names[3] = {"dq", "dk", "dv"};
    float *x[3], *g0[3], *g1[3], *gp[3], *pre[3], *gr[3], *gw[3];
    for (int a = 0; a < 3; a++) x[a] = rand_floats(n[a], a == 2 ? 1.0f : 1.5f);
    float *dout = rand_floats(no, 1.0f), *o = malloc(no * sizeof(float)), *lse = malloc(nl * sizeof(float));
    op_fwd(c, x[0], x[1], x[2], o, lse);
    for (int a = 0; a < 3; a++) {
        g0[a] = tu_guarded_new(n[a]);
        g1[a] = tu_guarded_new(n[a]);
        memset(g0[a], 0, n[a] * sizeof(float));
        memset(g1[a], 0, n[a] * sizeof(float));
        pre[a] = rand_floats(n[a], 1.0f);
        gp[a] = guarded_copy(pre[a], n[a]);
        gr[a] = calloc(n[a] + 1, sizeof(float));
        gw[a] = calloc(n[a] + 1, sizeof(float));
    }
    op_bwd(c, x[0], x[1], x[2], o, lse, dout, NULL, g0[0], g0[1], g0[2]);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    op_bwd(c, x[0], x[1], x[2], o, lse, dout, NULL, g1[0], g1[1], g1[2]);
    omp_set_num_threads(threads);
    op_bwd(c, x[0], x[1], x[2], o, lse, dout, NULL, gp[0], gp[1], gp[2]);
    float *drow = malloc(nl * sizeof(float)), *dwrong = malloc(nl * sizeof(float));
    for (size_t r = 0; r < nl; r++) {
        double d = 0;
        for (int e = 0; e < s->dv; e++) d += (double)dout[r * s->dv + e] * o[r * s->dv + e];
        drow[r] = (float)d;
        dwrong[r] = (float)d + 1.0f;
    }
    op_bwd(c, x[0], x[1], x[2], o, lse, dout, drow, gr[0], gr[1], gr[2]);
    op_bwd(c, x[0], x[1], x[2], o, lse, dout, dwrong, gw[0], gw[1], gw[2]);
    // dv does not involve the row dots; dq and dk do wherever a row sees a key
    TU_CHECK(tu_rel_err_f(gr[0], g0[0], n[0]) < 1e-5 && tu_rel_err_f(gr[1], g0[1], n[1]) < 1e-5 &&
                 tu_rel_err_f(gr[2], g0[2], n[2]) < 1e-6,
             "%s %s: the gradients given drow differ from those computing it", kn, what);
    int seen = 0;  // rows that see a key
    for (size_t r = 0; r < nl; r++) seen += isfinite(lse[r]) != 0;
    TU_CHECK(!seen || tu_rel_err_f(gw[0], g0[0], n[0]) > 1e-3, "%s %s: wrong drow left dq unchanged: the op ignores it",
             kn, what);

    fd_problem p = {.c = c, .q = to_double(x[0], n[0]), .k = to_double(x[1], n[1]), .v = to_double(x[2], n[2]),
                    .dout = to_double(dout, no), .o = malloc(no * sizeof(double)),
                    .lse = malloc(nl * sizeof(double)), .no = no};
    double *xd[3] = {p.q, p.k, p.v};
    for (int a = 0; a < 3; a++) {
        double *ref = malloc((n[a] ? n[a] : 1) * sizeof(double));
        fd_grad(&p, xd[a], n[a], ref);
        const double e = tu_rel_err(g0[a], ref, n[a]);
        TU_CHECK(e < 1e-4, "%s %s: %s rel err %.3g vs finite differences", kn, what, names[a], e);
        int nonzero_unused = 0, bad_acc = 0;
        for (size_t i = 0; i < n[a]; i++) {
            nonzero_unused += ref[i] == 0.0 && g0[a][i] != 0.0f;
            const double want = (c->kind == DENSE ? 0.0 : (double)pre[a][i]) + g0[a][i];  // attn_bwd writes
            bad_acc += fabs(gp[a][i] - want) > 1e-6 * (fabs(pre[a][i]) + fabs(g0[a][i])) + 1e-30;
        }
        TU_CHECK(nonzero_unused == 0, "%s %s: %s: %d inputs the loss ignores got a gradient", kn, what, names[a],
                 nonzero_unused);
        TU_CHECK(bad_acc == 0, "%s %s: %s: %d elements not %s the pre-filled buffer", kn, what, names[a], bad_acc,
                 c->kind == DENSE ? "written over" : "accumulated into");
        TU_CHECK(memcmp(g0[a], g1[a], n[a] * sizeof(float)) == 0, "%s %s: %s differs between %d threads and 1",
                 kn, what, names[a], threads);
        TU_CHECK(tu_guard_ok(g0[a], n[a]) && tu_guard_ok(gp[a], n[a]), "%s %s: write outside %s", kn, what,
                 names[a]);
        free(ref);
    }
    for (int a = 0; a < 3; a++) {
        free(x[a]);
        free(pre[a]);
        free(xd[a]);
        tu_guarded_free(g0[a]);
        tu_guarded_free(g1[a]);
        tu_guarded_free(gp[a]);
        free(gr[a]);
        free(gw[a]);
    }
    free(drow); free(dwrong);
    free(dout); free(o); free(lse); free((double *)p.dout); free(p.o); free(p.lse);
}

// ---------------------------------------------------------------------------------------------------
// Block lists.

static int num_anchors(const asa_attn_shape *s) { return (s->T + s->selection_share - 1) / s->selection_share; }

// A valid random list per anchor: forced blocks 0, c-1, c plus a random subset of the other usable
// blocks, min(n, c+1) in all, ascending, -1 padded.
static int32_t *random_idx(const asa_attn_shape *s) {
    const int na = num_anchors(s), n = s->block_counts;
    int32_t *idx = malloc((size_t)s->B * na * s->g * n * sizeof(int32_t));
    char *in = malloc((size_t)s->T + 1);
    for (int b = 0; b < s->B; b++)
        for (int a = 0; a < na; a++)
            for (int j = 0; j < s->g; j++) {
                const int c = a * s->selection_share / s->selection_block_size;
                const int total = c + 1 < n ? c + 1 : n;
                memset(in, 0, (size_t)c + 1);
                in[0] = in[c] = 1;
                if (c >= 1) in[c - 1] = 1;
                int cnt = c >= 2 ? 3 : c + 1;
                while (cnt < total) {
                    const int u = 1 + (int)asa_rng_below(&rng, (uint32_t)(c - 2));
                    if (!in[u]) in[u] = 1, cnt++;
                }
                int32_t *row = idx + (((long)b * na + a) * s->g + j) * n;
                int e = 0;
                for (int u = 0; u <= c; u++)
                    if (in[u]) row[e++] = u;
                while (e < n) row[e++] = -1;
            }
    free(in);
    return idx;
}

// Reference selection scores in double for one (b, anchor t, group j): score[u] for u <= c.
static void ref_scores(const asa_attn_shape *s, const double *q, const double *kc, const double *lse_ref, int b,
                       int t, int j, double *score) {
    const int nb = s->T / s->block_size, G = s->h / s->g, c = t / s->selection_block_size;
    for (int u = 0; u <= c; u++) score[u] = 0;
    for (int i = j * G; i < (j + 1) * G; i++) {
        const long r = ((long)b * s->T + t) * s->h + i;
        for (int m = 0; m < nb; m++) {
            if ((m + 1) * s->block_size - 1 > t) continue;
            double d = 0;
            for (int e = 0; e < s->dk; e++) d += q[r * s->dk + e] * kc[(((long)b * nb + m) * s->g + j) * s->dk + e];
            score[m * s->block_size / s->selection_block_size] += exp(d * s->scale - lse_ref[r]);
        }
    }
}

typedef struct {
    int near_ties;  // rows where the C set differs from the reference set within the tie tolerance
    int rows;
} select_stats;

// Checks one list row against the SPEC: format, forced blocks, and top scores (reference in double,
// accepting either side of a near tie). Returns 1 if the row is well formed and matches.
static int check_row(const int32_t *row, int n, int c, const double *score, select_stats *st) {
    char in[4096] = {0};
    const int total = c + 1 < n ? c + 1 : n;
    int ok = c < 4096;
    for (int e = 0; ok && e < n; e++) {
        if (e < total) {
            ok &= row[e] >= 0 && row[e] <= c && (e == 0 || row[e] > row[e - 1]);
            if (ok) in[row[e]] = 1;
        } else {
            ok &= row[e] == -1;
        }
    }
    if (!ok) return 0;
    if (!in[0] || !in[c] || (c >= 1 && !in[c - 1])) return 0;
    // Every chosen candidate scores at least as high as every unchosen one, up to rounding.
    for (int x = 1; x < c - 1; x++)
        for (int y = 1; y < c - 1; y++)
            if (in[x] && !in[y] && score[x] < score[y] - 1e-5 * fmax(score[x], score[y])) return 0;
    // Exact reference set (ties to the lower index) for the statistics.
    char want[4096] = {0};
    want[0] = want[c] = 1;
    if (c >= 1) want[c - 1] = 1;
    for (int cnt = c >= 2 ? 3 : c + 1; cnt < total; cnt++) {
        int best = -1;
        for (int u = 1; u < c - 1; u++)
            if (!want[u] && (best < 0 || score[u] > score[best])) best = u;
        want[best] = 1;
    }
    st->near_ties += memcmp(in, want, (size_t)c + 1) != 0;
    st->rows++;
    return 1;
}

// select_topk on random inputs against the reference; anchors reuse the rows of R = 1.
static void check_select(cfg cf) {
    asa_attn_shape s = make_shape(cf);
    const int N = s.B * s.T, nb = s.T / s.block_size, na = num_anchors(&s), n = s.block_counts;
    const size_t nq = (size_t)N * s.h * s.dk, nkc = (size_t)s.B * nb * s.g * s.dk;
    const size_t nvc = (size_t)s.B * nb * s.g * s.dv;
    float *q = rand_floats(nq, 1.5f), *kc = rand_floats(nkc, 1.5f), *vc = rand_floats(nvc, 1.0f);
    float *o = malloc((size_t)N * s.h * s.dv * sizeof(float)), *lse = malloc((size_t)N * s.h * sizeof(float));
    be->attn_cmp_fwd(be, &s, q, kc, vc, o, lse);
    const size_t nidx = (size_t)s.B * na * s.g * n;
    int32_t *idx = (int32_t *)tu_guarded_new(nidx);
    be->select_topk(be, &s, q, kc, lse, idx);

    acase cc = {.kind = CMP, .s = s};
    double *qd = to_double(q, nq), *kd = to_double(kc, nkc), *vd = to_double(vc, nvc);
    double *o_ref = malloc((size_t)N * s.h * s.dv * sizeof(double));
    double *lse_ref = malloc((size_t)N * s.h * sizeof(double));
    ref_attn(&cc, qd, kd, vd, o_ref, lse_ref);
    double *score = malloc(((size_t)s.T / s.selection_block_size + 1) * sizeof(double));
    select_stats st = {0, 0};
    int bad = 0;
    for (int b = 0; b < s.B; b++)
        for (int a = 0; a < na; a++)
            for (int j = 0; j < s.g; j++) {
                const int t = a * s.selection_share;
                ref_scores(&s, qd, kd, lse_ref, b, t, j, score);
                const int32_t *row = idx + (((long)b * na + a) * s.g + j) * n;
                bad += !check_row(row, n, t / s.selection_block_size, score, &st);
            }
    TU_CHECK(bad == 0, "select_topk T=%d b=%d bs=%d n=%d R=%d: %d of %d rows wrong", s.T, s.block_size,
             s.selection_block_size, n, s.selection_share, bad, s.B * na * s.g);
    TU_CHECK(st.near_ties <= st.rows / 20, "select_topk: %d of %d rows differ from the reference by near ties",
             st.near_ties, st.rows);
    TU_CHECK(tu_guard_ok((float *)idx, nidx), "select_topk: write outside idx");

    if (s.selection_share > 1) {  // row a is the list of query a*R computed from its own scores
        asa_attn_shape s1 = s;
        s1.selection_share = 1;
        int32_t *idx1 = malloc((size_t)s.B * s.T * s.g * n * sizeof(int32_t));
        be->select_topk(be, &s1, q, kc, lse, idx1);
        int diff = 0;
        for (int b = 0; b < s.B; b++)
            for (int a = 0; a < na; a++)
                diff += memcmp(idx + (((long)b * na + a) * s.g) * n,
                               idx1 + (((long)b * s.T + a * s.selection_share) * s.g) * n,
                               (size_t)s.g * n * sizeof(int32_t)) != 0;
        TU_CHECK(diff == 0, "select_topk R=%d: %d anchor rows differ from the R=1 rows of their anchors",
                 s.selection_share, diff);
        free(idx1);
    }
    free(q); free(kc); free(vc); free(o); free(lse); free(qd); free(kd); free(vd); free(o_ref); free(lse_ref);
    free(score);
    tu_guarded_free((float *)idx);
}

// Exact ties: selection block 2p+1 gets the same compressed keys as block 2p (identical == mode: every
// block the same), so their scores are bit-identical; the lower index must win.
static void check_select_ties(cfg cf, int identical) {
    asa_attn_shape s = make_shape(cf);
    const int N = s.B * s.T, nb = s.T / s.block_size, na = num_anchors(&s), n = s.block_counts;
    const int per = s.selection_block_size / s.block_size;
    const size_t row_len = (size_t)s.g * s.dk;
    float *q = rand_floats((size_t)N * s.h * s.dk, 1.5f), *kc = rand_floats((size_t)s.B * nb * row_len, 1.5f);
    float *vc = rand_floats((size_t)s.B * nb * s.g * s.dv, 1.0f);
    for (int b = 0; b < s.B; b++)
        for (int m = 0; m < nb; m++) {
            const int u = m / per;
            const int src = identical ? m % per : (u % 2 ? m - per : m);
            memcpy(kc + ((size_t)b * nb + m) * row_len, kc + ((size_t)b * nb + src) * row_len,
                   row_len * sizeof(float));
        }
    float *o = malloc((size_t)N * s.h * s.dv * sizeof(float)), *lse = malloc((size_t)N * s.h * sizeof(float));
    be->attn_cmp_fwd(be, &s, q, kc, vc, o, lse);
    int32_t *idx = malloc((size_t)s.B * na * s.g * n * sizeof(int32_t));
    be->select_topk(be, &s, q, kc, lse, idx);
    int bad = 0, decided = 0;
    for (int b = 0; b < s.B; b++)
        for (int a = 0; a < na; a++)
            for (int j = 0; j < s.g; j++) {
                const int c = a * s.selection_share / s.selection_block_size;
                const int32_t *row = idx + (((long)b * na + a) * s.g + j) * n;
                char in[1024] = {0};
                for (int e = 0; e < n; e++)
                    if (row[e] >= 0 && row[e] <= c) in[row[e]] = 1;
                if (identical) {  // forced blocks, then the lowest candidates
                    char want[1024] = {0};
                    want[0] = want[c] = 1;
                    if (c >= 1) want[c - 1] = 1;
                    int cnt = c >= 2 ? 3 : c + 1;
                    for (int u = 1; u < c - 1 && cnt < n; u++) want[u] = 1, cnt++;
                    bad += memcmp(in, want, (size_t)c + 1) != 0;
                    decided += c - 2 > n - 3;
                } else {  // of a tied pair of candidates, never the upper one alone
                    for (int u = 2; u + 1 < c - 1; u += 2) {
                        bad += in[u + 1] && !in[u];
                        decided += in[u] != in[u + 1];
                    }
                }
            }
    TU_CHECK(bad == 0, "select_topk ties (%s): %d rows break ties away from the lower index",
             identical ? "all blocks equal" : "pairs equal", bad);
    TU_CHECK(decided > 0, "select_topk ties: the test never had a tie to break");
    free(q); free(kc); free(vc); free(o); free(lse); free(idx);
}

// ---------------------------------------------------------------------------------------------------
// Compression (mean pooling).

static void check_compress(cfg cf, int d) {
    asa_attn_shape s = make_shape(cf);
    const int nb = s.T / s.block_size;
    const size_t nx = (size_t)s.B * s.T * s.g * d, nc = (size_t)s.B * nb * s.g * d;
    float *x = rand_floats(nx, 1.0f), *xc = tu_guarded_new(nc);
    be->compress_fwd(be, &s, d, x, xc);
    double *ref = malloc((nc ? nc : 1) * sizeof(double));
    for (int b = 0; b < s.B; b++)
        for (int m = 0; m < nb; m++)
            for (int j = 0; j < s.g; j++)
                for (int e = 0; e < d; e++) {
                    double sum = 0;
                    for (int u = m * s.block_size; u < (m + 1) * s.block_size; u++)
                        sum += x[(((size_t)b * s.T + u) * s.g + j) * d + e];
                    ref[(((size_t)b * nb + m) * s.g + j) * d + e] = sum / s.block_size;
                }
    const double e = tu_rel_err(xc, ref, nc);
    TU_CHECK(e < 1e-6, "compress_fwd T=%d b=%d: rel err %.3g", s.T, s.block_size, e);
    TU_CHECK(tu_guard_ok(xc, nc), "compress_fwd: write outside xc");

    // Backward of a linear map: the gradient of sum(w . xc) w.r.t. x[t] is w[block of t] / b for tokens
    // of complete blocks and exactly 0 (the buffer untouched) for a trailing partial block.
    float *w = rand_floats(nc, 1.0f), *pre = rand_floats(nx, 1.0f), *dx = guarded_copy(pre, nx);
    be->compress_bwd(be, &s, d, w, dx);
    double num = 0, den = 0;
    int untouched_bad = 0;
    for (int b = 0; b < s.B; b++)
        for (int t = 0; t < s.T; t++)
            for (int j = 0; j < s.g; j++)
                for (int c = 0; c < d; c++) {
                    const size_t i = (((size_t)b * s.T + t) * s.g + j) * d + c;
                    if (t >= nb * s.block_size) {
                        untouched_bad += dx[i] != pre[i];
                        continue;
                    }
                    const size_t wi = (((size_t)b * nb + t / s.block_size) * s.g + j) * d + c;
                    const double g = (double)w[wi] / s.block_size;
                    num += (dx[i] - pre[i] - g) * (dx[i] - pre[i] - g);
                    den += g * g;
                }
    const double eb = den > 0 ? sqrt(num / den) : sqrt(num);
    TU_CHECK(eb < 1e-6, "compress_bwd T=%d b=%d: rel err %.3g", s.T, s.block_size, eb);
    TU_CHECK(untouched_bad == 0, "compress_bwd: %d elements of a partial block changed", untouched_bad);
    TU_CHECK(tu_guard_ok(dx, nx), "compress_bwd: write outside dx");
    free(x); free(ref); free(w); free(pre);
    tu_guarded_free(xc);
    tu_guarded_free(dx);
}

// ---------------------------------------------------------------------------------------------------
// Consistency between ops.

// A window of at least T is full attention (bit for bit: same keys, same order).
static void check_window_full(cfg cf) {
    asa_attn_shape s = make_shape(cf);
    const size_t N = (size_t)s.B * s.T, no = N * s.h * s.dv, nl = N * s.h;
    float *q = rand_floats(N * s.h * s.dk, 1.5f), *k = rand_floats(N * s.g * s.dk, 1.5f);
    float *v = rand_floats(N * s.g * s.dv, 1.0f);
    float *o0 = malloc(no * sizeof(float)), *l0 = malloc(nl * sizeof(float));
    float *o1 = malloc(no * sizeof(float)), *l1 = malloc(nl * sizeof(float));
    s.window = 0;
    be->attn_fwd(be, &s, q, k, v, o0, l0);
    const int windows[2] = {s.T, s.T + 7};
    for (int w = 0; w < 2; w++) {
        s.window = windows[w];
        be->attn_fwd(be, &s, q, k, v, o1, l1);
        TU_CHECK(memcmp(o0, o1, no * sizeof(float)) == 0 && memcmp(l0, l1, nl * sizeof(float)) == 0,
                 "attn window %d >= T=%d differs from full attention", s.window, s.T);
    }
    free(q); free(k); free(v); free(o0); free(l0); free(o1); free(l1);
}

// Selection with n >= the number of blocks and R = 1 reads every causal key: full attention, forward
// and backward (up to summation order).
static void check_slc_full(cfg cf) {
    cf.R = 1;
    cf.n = (cf.T + cf.bs - 1) / cf.bs + 2;
    cf.window = 0;
    asa_attn_shape s = make_shape(cf);
    const size_t N = (size_t)s.B * s.T, no = N * s.h * s.dv, nl = N * s.h;
    const size_t n[3] = {N * s.h * s.dk, N * s.g * s.dk, N * s.g * s.dv};
    const int nb = s.T / s.block_size;
    float *x[3];
    for (int a = 0; a < 3; a++) x[a] = rand_floats(n[a], a == 2 ? 1.0f : 1.5f);
    float *kc = malloc(((size_t)s.B * nb * s.g * s.dk + 1) * sizeof(float));
    float *oc = malloc(no * sizeof(float)), *lc = malloc(nl * sizeof(float));
    be->compress_fwd(be, &s, s.dk, x[1], kc);
    float *vc = malloc(((size_t)s.B * nb * s.g * s.dv + 1) * sizeof(float));
    be->compress_fwd(be, &s, s.dv, x[2], vc);
    be->attn_cmp_fwd(be, &s, x[0], kc, vc, oc, lc);
    int32_t *idx = malloc((size_t)N * s.g * s.block_counts * sizeof(int32_t));
    be->select_topk(be, &s, x[0], kc, lc, idx);

    float *o0 = malloc(no * sizeof(float)), *l0 = malloc(nl * sizeof(float));
    float *o1 = malloc(no * sizeof(float)), *l1 = malloc(nl * sizeof(float));
    be->attn_fwd(be, &s, x[0], x[1], x[2], o0, l0);
    be->attn_slc_fwd(be, &s, x[0], x[1], x[2], idx, o1, l1);
    const double eo = tu_rel_err_f(o1, o0, no), el = tu_rel_err_f(l1, l0, nl);
    TU_CHECK(eo < 1e-6 && el < 1e-6, "attn_slc with all blocks (T=%d bs=%d) vs full attention: o %.3g lse %.3g",
             s.T, s.selection_block_size, eo, el);
    float *dout = rand_floats(no, 1.0f), *g0[3], *g1[3];
    for (int a = 0; a < 3; a++) {
        g0[a] = calloc(n[a], sizeof(float));
        g1[a] = calloc(n[a], sizeof(float));
    }
    be->attn_bwd(be, &s, x[0], x[1], x[2], o0, l0, dout, NULL, g0[0], g0[1], g0[2]);
    be->attn_slc_bwd(be, &s, x[0], x[1], x[2], idx, o1, l1, dout, NULL, g1[0], g1[1], g1[2]);
    for (int a = 0; a < 3; a++) {
        const double e = tu_rel_err_f(g1[a], g0[a], n[a]);
        TU_CHECK(e < 1e-5, "attn_slc_bwd with all blocks vs attn_bwd: grad %d rel err %.3g", a, e);
        free(x[a]);
        free(g0[a]);
        free(g1[a]);
    }
    free(kc); free(vc); free(oc); free(lc); free(idx); free(o0); free(l0); free(o1); free(l1); free(dout);
}

// ---------------------------------------------------------------------------------------------------

// The compression branch on random pooled keys; the rows with no complete block are exactly the first
// b - 1 tokens of each sequence (all of them when T < b).
static void run_cmp_cases(cfg cf, int with_bwd, const char *what) {
    acase c = {.kind = CMP, .s = make_shape(cf)};
    const int empty = check_fwd(&c, what);
    const int want = cf.T < cf.b ? cf.B * cf.T * cf.h : cf.B * (cf.b - 1) * cf.h;
    TU_CHECK(empty == want, "attn_cmp %s: %d rows see no block, want %d (the first b-1 tokens of each sequence)", what,
             empty, want);
    if (with_bwd) check_bwd(&c, what);
}

static void run_slc_cases(cfg cf, int with_bwd, const char *what) {
    acase c = {.kind = SLC, .s = make_shape(cf)};
    int32_t *idx = random_idx(&c.s);
    c.idx = idx;
    check_fwd(&c, what);
    if (with_bwd) check_bwd(&c, what);
    free(idx);
}

int main(void) {
    be = asa_backend_cpu_new();
    asa_rng_seed(&rng, 1234);

    //                      B    T  h  g  dk  dv  win  b  bs   n  R
    static const cfg fwd_cases[] = {{2, 150, 4, 2, 16, 12, 0, 8, 16, 4, 4},
                                    {1, 77, 4, 1, 8, 8, 5, 4, 8, 3, 2},
                                    {2, 64, 2, 2, 12, 20, 1, 4, 16, 6, 4},
                                    {1, 70, 4, 4, 16, 16, 70, 16, 16, 5, 1},
                                    {2, 5, 2, 1, 8, 4, 3, 8, 8, 3, 1},
                                    {1, 200, 8, 2, 32, 16, 100, 16, 32, 8, 2},
                                    {1, 130, 4, 2, 8, 8, 0, 2, 8, 40, 4},
                                    {2, 40, 6, 3, 5, 7, 300, 4, 8, 3, 4}};
    static const cfg bwd_cases[] = {{1, 19, 4, 2, 6, 5, 0, 4, 8, 3, 2},
                                    {2, 13, 4, 1, 5, 3, 3, 2, 4, 4, 4},
                                    {1, 17, 2, 2, 9, 4, 1, 3, 3, 5, 1},
                                    {1, 3, 2, 1, 4, 4, 0, 4, 4, 3, 1},
                                    {1, 24, 2, 1, 8, 6, 30, 2, 8, 3, 2},
                                    {1, 40, 4, 2, 8, 6, 9, 4, 16, 3, 4},
                                    {2, 30, 4, 2, 6, 6, 7, 2, 4, 12, 2}};
    const int nf = (int)(sizeof fwd_cases / sizeof fwd_cases[0]), nbw = (int)(sizeof bwd_cases / sizeof bwd_cases[0]);
    char what[96];
    for (int i = 0; i < nf + nbw; i++) {
        const int bwd = i >= nf;
        const cfg cf = bwd ? bwd_cases[i - nf] : fwd_cases[i];
        snprintf(what, sizeof what, "B=%d T=%d h=%d g=%d dk=%d dv=%d w=%d b=%d bs=%d n=%d R=%d", cf.B, cf.T, cf.h,
                 cf.g, cf.dk, cf.dv, cf.window, cf.b, cf.bs, cf.n, cf.R);
        acase dense = {.kind = DENSE, .s = make_shape(cf)};
        check_fwd(&dense, what);
        if (bwd) check_bwd(&dense, what);
        run_cmp_cases(cf, bwd, what);
        run_slc_cases(cf, bwd, what);
        check_compress(cf, cf.dk);
        check_compress(cf, cf.dv);
        check_window_full(cf);
        check_slc_full(cf);
        check_select(cf);
    }
    check_select((cfg){2, 300, 4, 2, 16, 8, 0, 4, 8, 6, 4});
    check_select((cfg){1, 257, 8, 2, 8, 8, 0, 16, 64, 3, 4});
    check_select((cfg){1, 257, 8, 2, 8, 8, 0, 8, 8, 12, 1});
    check_select_ties((cfg){2, 120, 4, 2, 8, 8, 0, 4, 8, 5, 2}, 1);
    check_select_ties((cfg){2, 120, 4, 2, 8, 8, 0, 4, 8, 5, 2}, 0);
    check_select_ties((cfg){1, 200, 2, 1, 12, 8, 0, 4, 4, 7, 1}, 0);
    check_select_ties((cfg){1, 200, 2, 1, 12, 8, 0, 4, 16, 4, 4}, 1);

    asa_backend_free(be);
    return tu_finish("test_ops_attn");
}
