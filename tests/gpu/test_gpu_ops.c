// Every op of the CUDA backend against the CPU backend on the same random inputs. Forward outputs start
// NaN-poisoned on the GPU (an element the op does not write fails the comparison); gradients start from
// the same random values on both sides (backward ops accumulate). Tolerances: 1e-5 relative (norm-wise)
// where both sides add the same terms in the same or a similarly short order (fp32 rounding is 6e-8 per
// operation); 1e-4 where a gradient sums hundreds of products in a different order (dk/dv over every
// query and head that sees a key). Top-k block lists must equal the CPU's exactly: scores use the CPU's
// dot product order, and random inputs have no exact ties.
// gemm runs again on a second CUDA backend in tf32 mode (tensor cores, operands rounded to TF32, fp32
// sums): tolerance 2e-3, as a TF32 operand carries a relative error up to 2^-11 = 4.9e-4 (rms about 2e-4,
// so about 3e-4 per product, and the fp32 sum of random-sign products keeps that relative size; 3e-4 was
// measured on the H100). A large product must also show an error above 1e-4, which fp32 arithmetic
// (~1e-7) cannot: the mode is really in use.
// Without a GPU the program prints "SKIPPED: no CUDA device" and exits 77 (ctest SKIP_RETURN_CODE).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "testutil.h"

#define TOL_ELEM 1e-5
#define TOL_LONG 1e-4
#define TOL_TF32 2e-3

static asa_backend *cpu, *gpu, *gpu_tf32;
static asa_rng rng;

static float *h_rand(size_t n, float sd) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    tu_fill_normal(p, n, &rng, sd);
    return p;
}
static void *d_from(const void *h, size_t bytes) {
    void *p = gpu->alloc(gpu, bytes);
    gpu->to_device(gpu, p, h, bytes);
    return p;
}
static void d_poison(float *d, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    gpu->to_device(gpu, d, h, n * sizeof(float));
    free(h);
}
static float *d_nan(size_t n) {
    float *d = gpu->alloc(gpu, n * sizeof(float));
    d_poison(d, n);
    return d;
}

// Downloads the GPU result and compares it with the CPU's, norm-wise.
static void expect_close(const char *what, const float *dev, const float *ref, size_t n, double tol) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    gpu->to_host(gpu, h, dev, n * sizeof(float));
    double err = tu_rel_err_f(h, ref, n);
    TU_CHECK(err < tol, "%s: relative error %.3e (tolerance %.0e)", what, err, tol);
    free(h);
}

// lse rows with no visible key are -INFINITY on both sides; the rest compare norm-wise. Returns the error.
static double expect_lse_tol(const char *what, const float *dev, const float *ref, size_t n, double tol) {
    float *h = malloc(n * sizeof(float)), *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    gpu->to_host(gpu, h, dev, n * sizeof(float));
    size_t m = 0, mism = 0;
    for (size_t i = 0; i < n; i++) {
        if (ref[i] == -INFINITY || h[i] == -INFINITY) {
            mism += !(ref[i] == -INFINITY && h[i] == -INFINITY);
            continue;
        }
        a[m] = h[i], b[m] = ref[i], m++;
    }
    double err = tu_rel_err_f(a, b, m);
    TU_CHECK(mism == 0, "%s: %zu rows -inf on one side only", what, mism);
    TU_CHECK(err < tol, "%s: relative error %.3e", what, err);
    free(h), free(a), free(b);
    return err;
}
static void expect_lse(const char *what, const float *dev, const float *ref, size_t n) {
    expect_lse_tol(what, dev, ref, n, TOL_ELEM);
}

// ---- dense ops ----

// The product on `g` (gpu or gpu_tf32) against the CPU's; returns the relative error.
static double test_gemm(asa_backend *g, double tol, int ta, int tb, int M, int N, int K, int pad, int batch,
                        int misalign, float beta) {
    const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const long sA = (long)(ta ? K : M) * lda + 3, sB = (long)(tb ? N : K) * ldb + 5, sC = (long)M * ldc + 7;
    const size_t nA = sA * batch + misalign, nB = sB * batch + misalign, nC = sC * batch + misalign;
    float *A = h_rand(nA, 1), *B = h_rand(nB, 1), *C = h_rand(nC, 1);
    float *dA = d_from(A, nA * 4), *dB = d_from(B, nB * 4), *dC = d_from(C, nC * 4);
    if (beta == 0.0f) {  // beta = 0 must ignore C: NaN where the product writes, zeros in the padding
        float *hn = calloc(nC, sizeof(float));
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) hn[misalign + b * sC + (long)i * ldc + j] = NAN;
        gpu->to_device(gpu, dC, hn, nC * 4);
        memset(C, 0, nC * 4);
        free(hn);
    }
    cpu->gemm(cpu, ta, tb, M, N, K, 0.7f, A + misalign, lda, sA, B + misalign, ldb, sB, beta, C + misalign, ldc, sC,
              batch);
    g->gemm(g, ta, tb, M, N, K, 0.7f, dA + misalign, lda, sA, dB + misalign, ldb, sB, beta, dC + misalign, ldc, sC,
            batch);
    char what[160];
    snprintf(what, sizeof what, "gemm %s tA=%d tB=%d %dx%dx%d batch=%d beta=%g misalign=%d",
             g->precision == ASA_PRECISION_TF32 ? "tf32" : "fp32", ta, tb, M, N, K, batch, beta, misalign);
    float *h = malloc(nC * sizeof(float));
    gpu->to_host(gpu, h, dC, nC * sizeof(float));
    double err = tu_rel_err_f(h, C, nC);
    TU_CHECK(err < tol, "%s: relative error %.3e (tolerance %.0e)", what, err, tol);
    free(A), free(B), free(C), free(h);
    gpu->free(gpu, dA), gpu->free(gpu, dB), gpu->free(gpu, dC);
    return err;
}

static void test_embedding(void) {
    const int V = 50, D = 70, N = 300;
    int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)asa_rng_below(&rng, V);
    float *E = h_rand((size_t)V * D, 1), *out = h_rand((size_t)N * D, 1), *dE = h_rand((size_t)V * D, 1);
    float *dout = h_rand((size_t)N * D, 1);
    int32_t *dtok = d_from(tok, sizeof tok);
    float *dEm = d_from(E, V * D * 4), *dout_ = d_nan((size_t)N * D), *ddE = d_from(dE, V * D * 4);
    float *ddout = d_from(dout, N * D * 4);
    cpu->embedding_fwd(cpu, out, tok, E, N, D);
    gpu->embedding_fwd(gpu, dout_, dtok, dEm, N, D);
    expect_close("embedding_fwd", dout_, out, (size_t)N * D, TOL_ELEM);
    cpu->embedding_bwd(cpu, dE, dout, tok, N, D);
    gpu->embedding_bwd(gpu, ddE, ddout, dtok, N, D);
    expect_close("embedding_bwd", ddE, dE, (size_t)V * D, TOL_ELEM);  // same additions, same order
    free(E), free(out), free(dE), free(dout);
    gpu->free(gpu, dtok), gpu->free(gpu, dEm), gpu->free(gpu, dout_), gpu->free(gpu, ddE), gpu->free(gpu, ddout);
}

static void test_rmsnorm(int N, int groups, int C) {
    const size_t n = (size_t)N * groups * C;
    float *x = h_rand(n, 2), *w = h_rand((size_t)groups * C, 1), *out = h_rand(n, 1), *rstd = h_rand((size_t)N * groups, 1);
    float *dout = h_rand(n, 1), *dx = h_rand(n, 1), *dw = h_rand((size_t)groups * C, 1);
    float *gx = d_from(x, n * 4), *gw = d_from(w, groups * C * 4), *gout = d_nan(n), *grstd = d_nan((size_t)N * groups);
    float *gdout = d_from(dout, n * 4), *gdx = d_from(dx, n * 4), *gdw = d_from(dw, groups * C * 4);
    cpu->rmsnorm_fwd(cpu, out, rstd, x, w, N, groups, C, 1e-6f);
    gpu->rmsnorm_fwd(gpu, gout, grstd, gx, gw, N, groups, C, 1e-6f);
    expect_close("rmsnorm_fwd out", gout, out, n, TOL_ELEM);
    expect_close("rmsnorm_fwd rstd", grstd, rstd, (size_t)N * groups, TOL_ELEM);
    cpu->rmsnorm_bwd(cpu, dx, dw, dout, x, w, rstd, N, groups, C);
    gpu->rmsnorm_bwd(gpu, gdx, gdw, gdout, gx, gw, grstd, N, groups, C);
    expect_close("rmsnorm_bwd dx", gdx, dx, n, TOL_ELEM);
    expect_close("rmsnorm_bwd dw", gdw, dw, (size_t)groups * C, TOL_ELEM);  // double sums over rows
    free(x), free(w), free(out), free(rstd), free(dout), free(dx), free(dw);
    gpu->free(gpu, gx), gpu->free(gpu, gw), gpu->free(gpu, gout), gpu->free(gpu, grstd), gpu->free(gpu, gdout);
    gpu->free(gpu, gdx), gpu->free(gpu, gdw);
}

static void test_rope(int pos0) {
    const int T = 37, N = 2 * T, heads = 3, head_stride = 20, row_stride = 64, offset = 4, rot = 16;
    const size_t n = (size_t)N * row_stride;
    float *x = h_rand(n, 1);
    float *gx = d_from(x, n * 4);
    cpu->rope_fwd(cpu, x, N, T, pos0, heads, row_stride, head_stride, offset, rot, 10000.0f);
    gpu->rope_fwd(gpu, gx, N, T, pos0, heads, row_stride, head_stride, offset, rot, 10000.0f);
    char what[64];
    snprintf(what, sizeof what, "rope_fwd pos0=%d", pos0);
    expect_close(what, gx, x, n, TOL_ELEM);
    cpu->rope_bwd(cpu, x, N, T, pos0, heads, row_stride, head_stride, offset, rot, 500000.0f);
    gpu->rope_bwd(gpu, gx, N, T, pos0, heads, row_stride, head_stride, offset, rot, 500000.0f);
    snprintf(what, sizeof what, "rope_bwd pos0=%d", pos0);
    expect_close(what, gx, x, n, TOL_ELEM);
    free(x);
    gpu->free(gpu, gx);
}

static void test_swiglu(void) {
    const int N = 33, H = 129;
    const size_t n = (size_t)N * H;
    float *g = h_rand(n, 3), *u = h_rand(n, 1), *out = h_rand(n, 1), *dout = h_rand(n, 1), *dg = h_rand(n, 1),
          *du = h_rand(n, 1);
    float *gg = d_from(g, n * 4), *gu = d_from(u, n * 4), *gout = d_nan(n), *gdout = d_from(dout, n * 4);
    float *gdg = d_from(dg, n * 4), *gdu = d_from(du, n * 4);
    cpu->swiglu_fwd(cpu, out, g, u, N, H);
    gpu->swiglu_fwd(gpu, gout, gg, gu, N, H);
    expect_close("swiglu_fwd", gout, out, n, TOL_ELEM);
    cpu->swiglu_bwd(cpu, dg, du, dout, g, u, N, H);
    gpu->swiglu_bwd(gpu, gdg, gdu, gdout, gg, gu, N, H);
    expect_close("swiglu_bwd dgate", gdg, dg, n, TOL_ELEM);
    expect_close("swiglu_bwd dup", gdu, du, n, TOL_ELEM);
    free(g), free(u), free(out), free(dout), free(dg), free(du);
    gpu->free(gpu, gg), gpu->free(gpu, gu), gpu->free(gpu, gout), gpu->free(gpu, gdout), gpu->free(gpu, gdg);
    gpu->free(gpu, gdu);
}

// Assemble per-head keys [kn_i ; kr] (kr broadcast: src head stride 0) and split the gradient back
// (sum over heads: dst head stride 0, accumulate).
static void test_copy_heads(void) {
    const int rows = 41, h = 5, dn = 12, dr = 6, rs = h * (dn + dr);
    float *k = h_rand((size_t)rows * rs, 1), *kn = h_rand((size_t)rows * h * dn, 1), *kr = h_rand((size_t)rows * dr, 1);
    float *gk = d_from(k, rows * rs * 4), *gkn = d_from(kn, rows * h * dn * 4), *gkr = d_from(kr, rows * dr * 4);
    cpu->copy_heads(cpu, k, rs, dn + dr, kn, h * dn, dn, rows, h, dn, 0);
    gpu->copy_heads(gpu, gk, rs, dn + dr, gkn, h * dn, dn, rows, h, dn, 0);
    cpu->copy_heads(cpu, k + dn, rs, dn + dr, kr, dr, 0, rows, h, dr, 0);
    gpu->copy_heads(gpu, gk + dn, rs, dn + dr, gkr, dr, 0, rows, h, dr, 0);
    expect_close("copy_heads assemble", gk, k, (size_t)rows * rs, TOL_ELEM);
    cpu->copy_heads(cpu, kr, dr, 0, k + dn, rs, dn + dr, rows, h, dr, 1);
    gpu->copy_heads(gpu, gkr, dr, 0, gk + dn, rs, dn + dr, rows, h, dr, 1);
    expect_close("copy_heads sum over heads", gkr, kr, (size_t)rows * dr, TOL_ELEM);
    cpu->copy_heads(cpu, kn, h * dn, dn, k, rs, dn + dr, rows, h, dn, 1);
    gpu->copy_heads(gpu, gkn, h * dn, dn, gk, rs, dn + dr, rows, h, dn, 1);
    expect_close("copy_heads accumulate", gkn, kn, (size_t)rows * h * dn, TOL_ELEM);
    free(k), free(kn), free(kr);
    gpu->free(gpu, gk), gpu->free(gpu, gkn), gpu->free(gpu, gkr);
}

static void test_xent(void) {
    const int N = 40, V = 1000;
    const size_t n = (size_t)N * V;
    int32_t tgt[N];
    for (int i = 0; i < N; i++) tgt[i] = i % 9 == 4 ? -1 : (int32_t)asa_rng_below(&rng, V);
    float *x = h_rand(n, 4), *loss = h_rand(N, 1), *dx = h_rand(n, 1);
    float *gx = d_from(x, n * 4), *gloss = d_nan(N), *gdx = d_nan(n);
    int32_t *gt = d_from(tgt, sizeof tgt);
    cpu->xent_fwd_bwd(cpu, loss, NULL, x, tgt, N, V, 0.0f);
    gpu->xent_fwd_bwd(gpu, gloss, NULL, gx, gt, N, V, 0.0f);
    expect_close("xent losses", gloss, loss, N, TOL_ELEM);
    cpu->xent_fwd_bwd(cpu, loss, dx, x, tgt, N, V, 0.3f);
    gpu->xent_fwd_bwd(gpu, gloss, gdx, gx, gt, N, V, 0.3f);
    expect_close("xent dlogits", gdx, dx, n, TOL_ELEM);
    cpu->xent_fwd_bwd(cpu, loss, x, x, tgt, N, V, 0.3f);  // in place, as the model calls it
    gpu->xent_fwd_bwd(gpu, gloss, gx, gx, gt, N, V, 0.3f);
    expect_close("xent in place losses", gloss, loss, N, TOL_ELEM);
    expect_close("xent in place dlogits", gx, x, n, TOL_ELEM);
    free(x), free(loss), free(dx);
    gpu->free(gpu, gx), gpu->free(gpu, gloss), gpu->free(gpu, gdx), gpu->free(gpu, gt);
}

static void test_gate(int nbr) {
    const int N = 29, h = 3, dv = 40;
    const size_t n = (size_t)N * h * dv, ng = (size_t)N * h * nbr;
    float *glog = h_rand(ng, 2), *out = h_rand(n, 1), *dout = h_rand(n, 1), *dglog = h_rand(ng, 1);
    float *gglog = d_from(glog, ng * 4), *gout = d_nan(n), *gdout = d_from(dout, n * 4), *gdglog = d_from(dglog, ng * 4);
    float *br[3], *dbr[3], *gbr[3], *gdbr[3];
    for (int c = 0; c < nbr; c++) {
        br[c] = h_rand(n, 1), dbr[c] = h_rand(n, 1);
        gbr[c] = d_from(br[c], n * 4), gdbr[c] = d_from(dbr[c], n * 4);
    }
    cpu->gate_fwd(cpu, out, glog, (const float *const *)br, nbr, N, h, dv);
    gpu->gate_fwd(gpu, gout, gglog, (const float *const *)gbr, nbr, N, h, dv);
    expect_close("gate_fwd", gout, out, n, TOL_ELEM);
    cpu->gate_bwd(cpu, dglog, dbr, dout, glog, (const float *const *)br, nbr, N, h, dv);
    gpu->gate_bwd(gpu, gdglog, gdbr, gdout, gglog, (const float *const *)gbr, nbr, N, h, dv);
    expect_close("gate_bwd dglog", gdglog, dglog, ng, TOL_ELEM);
    for (int c = 0; c < nbr; c++) expect_close("gate_bwd dbr", gdbr[c], dbr[c], n, TOL_ELEM);
    for (int c = 0; c < nbr; c++) free(br[c]), free(dbr[c]), gpu->free(gpu, gbr[c]), gpu->free(gpu, gdbr[c]);
    free(glog), free(out), free(dout), free(dglog);
    gpu->free(gpu, gglog), gpu->free(gpu, gout), gpu->free(gpu, gdout), gpu->free(gpu, gdglog);
}

static void test_optim(void) {
    const size_t n = 100003;
    float *p = h_rand(n, 1), *g = h_rand(n, 1), *m = h_rand(n, 0.1f), *v = h_rand(n, 0.1f);
    for (size_t i = 0; i < n; i++) v[i] = v[i] * v[i];
    float *gp = d_from(p, n * 4), *gg = d_from(g, n * 4), *gm = d_from(m, n * 4), *gv = d_from(v, n * 4);
    cpu->adamw(cpu, p, g, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, 0.5f);
    gpu->adamw(gpu, gp, gg, gm, gv, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, 0.5f);
    expect_close("adamw p", gp, p, n, TOL_ELEM);
    expect_close("adamw m", gm, m, n, TOL_ELEM);
    expect_close("adamw v", gv, v, n, TOL_ELEM);
    double sc = cpu->sum_squares(cpu, g, n), sg = gpu->sum_squares(gpu, gg, n);
    TU_CHECK(fabs(sc - sg) <= 1e-12 * sc, "sum_squares: cpu %.17g gpu %.17g", sc, sg);  // double sums
    double sg2 = gpu->sum_squares(gpu, gg, n);
    TU_CHECK(sg == sg2, "sum_squares not deterministic: %.17g then %.17g", sg, sg2);
    TU_CHECK(gpu->sum_squares(gpu, gg, 0) == 0.0, "sum_squares of nothing");
    cpu->scale(cpu, g, n, -0.37f);
    gpu->scale(gpu, gg, n, -0.37f);
    expect_close("scale", gg, g, n, TOL_ELEM);
    cpu->add(cpu, p, g, n);
    gpu->add(gpu, gp, gg, n);
    expect_close("add", gp, p, n, TOL_ELEM);
    free(p), free(g), free(m), free(v);
    gpu->free(gpu, gp), gpu->free(gpu, gg), gpu->free(gpu, gm), gpu->free(gpu, gv);
}

// ---- attention ----

typedef struct {
    asa_attn_shape s;
    const char *name;
} attn_case;

static attn_case make_case(const char *name, int B, int T, int h, int g, int dk, int dv, int window, int b, int bs,
                           int n, int R) {
    attn_case c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.s.B = B, c.s.T = T, c.s.h = h, c.s.g = g, c.s.dk = dk, c.s.dv = dv, c.s.window = window;
    c.s.scale = 1.0f / sqrtf((float)dk);
    c.s.block_size = b, c.s.selection_block_size = bs, c.s.block_counts = n, c.s.selection_share = R;
    return c;
}

// Runs a forward op's (o, lse) on both sides and a backward's (dq, dk, dv) accumulation.
static void test_attention_case(const attn_case *c) {
    const asa_attn_shape *s = &c->s;
    const int N = s->B * s->T, nb = asa_attn_num_cmp_blocks(s), na = asa_attn_num_anchors(s);
    const size_t nq = (size_t)N * s->h * s->dk, nk = (size_t)N * s->g * s->dk, nv = (size_t)N * s->g * s->dv;
    const size_t no = (size_t)N * s->h * s->dv, nl = (size_t)N * s->h;
    const size_t nkc = (size_t)s->B * nb * s->g * s->dk, nvc = (size_t)s->B * nb * s->g * s->dv;
    const size_t nidx = (size_t)s->B * na * s->g * s->block_counts;
    char what[160];
    float *q = h_rand(nq, 1), *k = h_rand(nk, 1), *v = h_rand(nv, 1), *dout = h_rand(no, 1);
    float *gq = d_from(q, nq * 4), *gk = d_from(k, nk * 4), *gv = d_from(v, nv * 4), *gdout = d_from(dout, no * 4);
    float *o = malloc(no * 4), *lse = malloc(nl * 4), *go = d_nan(no), *glse = d_nan(nl);
    float *dq = h_rand(nq, 1), *dk = h_rand(nk, 1), *dv = h_rand(nv, 1);
    float *gdq = d_from(dq, nq * 4), *gdk = d_from(dk, nk * 4), *gdv = d_from(dv, nv * 4);

    // dense (full or windowed)
    cpu->attn_fwd(cpu, s, q, k, v, o, lse);
    gpu->attn_fwd(gpu, s, gq, gk, gv, go, glse);
    snprintf(what, sizeof what, "%s attn_fwd o", c->name);
    expect_close(what, go, o, no, TOL_ELEM);
    snprintf(what, sizeof what, "%s attn_fwd lse", c->name);
    expect_lse(what, glse, lse, nl);
    cpu->attn_bwd(cpu, s, q, k, v, o, lse, dout, dq, dk, dv);
    gpu->attn_bwd(gpu, s, gq, gk, gv, go, glse, gdout, gdq, gdk, gdv);
    snprintf(what, sizeof what, "%s attn_bwd dq", c->name);
    expect_close(what, gdq, dq, nq, TOL_LONG);
    snprintf(what, sizeof what, "%s attn_bwd dk", c->name);
    expect_close(what, gdk, dk, nk, TOL_LONG);
    snprintf(what, sizeof what, "%s attn_bwd dv", c->name);
    expect_close(what, gdv, dv, nv, TOL_LONG);

    if (s->block_size > 0) {
        // compression: pooling, attention over pooled keys
        float *kc = malloc(nkc * 4), *vc = malloc(nvc * 4), *gkc = d_nan(nkc), *gvc = d_nan(nvc);
        cpu->compress_fwd(cpu, s, s->dk, k, kc);
        cpu->compress_fwd(cpu, s, s->dv, v, vc);
        gpu->compress_fwd(gpu, s, s->dk, gk, gkc);
        gpu->compress_fwd(gpu, s, s->dv, gv, gvc);
        snprintf(what, sizeof what, "%s compress_fwd", c->name);
        expect_close(what, gkc, kc, nkc, TOL_ELEM);
        expect_close(what, gvc, vc, nvc, TOL_ELEM);
        // Both sides continue from identical pooled keys, so later comparisons test one op each.
        gpu->to_device(gpu, gkc, kc, nkc * 4);
        gpu->to_device(gpu, gvc, vc, nvc * 4);
        d_poison(go, no);
        d_poison(glse, nl);
        cpu->attn_cmp_fwd(cpu, s, q, kc, vc, o, lse);
        gpu->attn_cmp_fwd(gpu, s, gq, gkc, gvc, go, glse);
        snprintf(what, sizeof what, "%s attn_cmp_fwd o", c->name);
        expect_close(what, go, o, no, TOL_ELEM);
        snprintf(what, sizeof what, "%s attn_cmp_fwd lse", c->name);
        expect_lse(what, glse, lse, nl);
        gpu->to_device(gpu, glse, lse, nl * 4);
        gpu->to_device(gpu, go, o, no * 4);

        // selection from the CPU's lse (identical inputs on both sides)
        int32_t *idx = malloc(nidx * 4), *hidx = malloc(nidx * 4);
        int32_t *gidx = gpu->alloc(gpu, nidx * 4);
        d_poison((float *)gidx, nidx);  // an entry left unwritten reads as NaN's bits, no block index
        cpu->select_topk(cpu, s, q, kc, lse, idx);
        gpu->select_topk(gpu, s, gq, gkc, glse, gidx);
        gpu->to_host(gpu, hidx, gidx, nidx * 4);
        size_t diff = 0;
        for (size_t e = 0; e < nidx; e++) diff += idx[e] != hidx[e];
        snprintf(what, sizeof what, "%s select_topk", c->name);
        TU_CHECK(diff == 0, "%s: %zu of %zu list entries differ from the CPU's", what, diff, nidx);

        float *dkc = h_rand(nkc, 1), *dvc = h_rand(nvc, 1), *gdkc = d_from(dkc, nkc * 4), *gdvc = d_from(dvc, nvc * 4);
        cpu->attn_cmp_bwd(cpu, s, q, kc, vc, o, lse, dout, dq, dkc, dvc);
        gpu->attn_cmp_bwd(gpu, s, gq, gkc, gvc, go, glse, gdout, gdq, gdkc, gdvc);
        snprintf(what, sizeof what, "%s attn_cmp_bwd dq", c->name);
        expect_close(what, gdq, dq, nq, TOL_LONG);
        snprintf(what, sizeof what, "%s attn_cmp_bwd dkc", c->name);
        expect_close(what, gdkc, dkc, nkc, TOL_LONG);
        snprintf(what, sizeof what, "%s attn_cmp_bwd dvc", c->name);
        expect_close(what, gdvc, dvc, nvc, TOL_LONG);

        gpu->to_device(gpu, gdkc, dkc, nkc * 4);
        gpu->to_device(gpu, gdvc, dvc, nvc * 4);
        gpu->to_device(gpu, gdk, dk, nk * 4);  // continue from identical values
        gpu->to_device(gpu, gdv, dv, nv * 4);
        cpu->compress_bwd(cpu, s, s->dk, dkc, dk);
        cpu->compress_bwd(cpu, s, s->dv, dvc, dv);
        gpu->compress_bwd(gpu, s, s->dk, gdkc, gdk);
        gpu->compress_bwd(gpu, s, s->dv, gdvc, gdv);
        snprintf(what, sizeof what, "%s compress_bwd", c->name);
        expect_close(what, gdk, dk, nk, TOL_ELEM);
        expect_close(what, gdv, dv, nv, TOL_ELEM);

        // selected attention on the CPU's lists
        gpu->to_device(gpu, gidx, idx, nidx * 4);
        float *go2 = d_nan(no), *glse2 = d_nan(nl);
        cpu->attn_slc_fwd(cpu, s, q, k, v, idx, o, lse);
        gpu->attn_slc_fwd(gpu, s, gq, gk, gv, gidx, go2, glse2);
        snprintf(what, sizeof what, "%s attn_slc_fwd o", c->name);
        expect_close(what, go2, o, no, TOL_ELEM);
        snprintf(what, sizeof what, "%s attn_slc_fwd lse", c->name);
        expect_lse(what, glse2, lse, nl);
        gpu->to_device(gpu, go2, o, no * 4);
        gpu->to_device(gpu, glse2, lse, nl * 4);
        cpu->attn_slc_bwd(cpu, s, q, k, v, idx, o, lse, dout, dq, dk, dv);
        gpu->attn_slc_bwd(gpu, s, gq, gk, gv, gidx, go2, glse2, gdout, gdq, gdk, gdv);
        snprintf(what, sizeof what, "%s attn_slc_bwd dq", c->name);
        expect_close(what, gdq, dq, nq, TOL_LONG);
        snprintf(what, sizeof what, "%s attn_slc_bwd dk", c->name);
        expect_close(what, gdk, dk, nk, TOL_LONG);
        snprintf(what, sizeof what, "%s attn_slc_bwd dv", c->name);
        expect_close(what, gdv, dv, nv, TOL_LONG);

        free(kc), free(vc), free(idx), free(hidx), free(dkc), free(dvc);
        gpu->free(gpu, gkc), gpu->free(gpu, gvc), gpu->free(gpu, gidx), gpu->free(gpu, gdkc), gpu->free(gpu, gdvc);
        gpu->free(gpu, go2), gpu->free(gpu, glse2);
    }
    printf("  %-28s B=%d T=%d h=%d g=%d dk=%d dv=%d window=%d b=%d b_s=%d n=%d R=%d\n", c->name, s->B, s->T, s->h, s->g,
           s->dk, s->dv, s->window, s->block_size, s->selection_block_size, s->block_counts, s->selection_share);
    free(q), free(k), free(v), free(dout), free(o), free(lse), free(dq), free(dk), free(dv);
    gpu->free(gpu, gq), gpu->free(gpu, gk), gpu->free(gpu, gv), gpu->free(gpu, gdout), gpu->free(gpu, go);
    gpu->free(gpu, glse), gpu->free(gpu, gdq), gpu->free(gpu, gdk), gpu->free(gpu, gdv);
}

// select_topk alone at lengths the attention cases do not reach (over 1024 selection blocks; query rows
// of one group over several passes of the kernel's tiles), lse from the CPU's compression branch. ties 1:
// selection block u+1 gets block u's pooled keys for even u; ties 2: every selection block gets block 0's.
// Tied blocks have bitwise equal scores on both sides, so the lists must still be equal, the lower index
// winning; the test also asserts that ties were really decided.
static void test_select_topk(const char *name, int B, int T, int h, int g, int dk, int bsz, int bsel, int n, int R,
                             int ties) {
    const attn_case c = make_case(name, B, T, h, g, dk, 8, 0, bsz, bsel, n, R);
    const asa_attn_shape *s = &c.s;
    const int N = B * T, nb = asa_attn_num_cmp_blocks(s), na = asa_attn_num_anchors(s), per = bsel / bsz;
    const size_t nq = (size_t)N * h * dk, nl = (size_t)N * h, row = (size_t)g * dk;
    const size_t nkc = (size_t)B * nb * row, nidx = (size_t)B * na * g * n;
    float *q = h_rand(nq, 1), *kc = h_rand(nkc, 1), *vc = h_rand((size_t)B * nb * g * 8, 1);
    if (ties)
        for (int b = 0; b < B; b++)
            for (int m = 0; m < nb; m++) {
                const int u = m / per, src = ties == 2 ? m % per : (u % 2 ? m - per : m);
                memcpy(kc + ((size_t)b * nb + m) * row, kc + ((size_t)b * nb + src) * row, row * sizeof(float));
            }
    float *o = malloc((size_t)N * h * 8 * 4), *lse = malloc(nl * 4);
    cpu->attn_cmp_fwd(cpu, s, q, kc, vc, o, lse);
    int32_t *idx = malloc(nidx * 4), *hidx = malloc(nidx * 4);
    float *gq = d_from(q, nq * 4), *gkc = d_from(kc, nkc * 4), *glse = d_from(lse, nl * 4);
    int32_t *gidx = gpu->alloc(gpu, nidx * 4);
    d_poison((float *)gidx, nidx);
    cpu->select_topk(cpu, s, q, kc, lse, idx);
    gpu->select_topk(gpu, s, gq, gkc, glse, gidx);
    gpu->to_host(gpu, hidx, gidx, nidx * 4);
    size_t diff = 0, decided = 0;
    for (size_t e = 0; e < nidx; e++) diff += idx[e] != hidx[e];
    for (int b = 0; b < B; b++)
        for (int a = 0; a < na; a++)
            for (int j = 0; j < g; j++) {
                const int cur = a * R / bsel;
                const int32_t *r = idx + (((size_t)b * na + a) * g + j) * n;
                char in[4096] = {0};
                for (int e = 0; e < n; e++)
                    if (r[e] >= 0 && r[e] <= cur && r[e] < 4096) in[r[e]] = 1;
                // Tied neighbours (u, u+1) of which one alone was chosen; ties 1 ties even u to u+1 only.
                for (int u = ties == 2 ? 1 : 2; u + 1 < cur - 1 && u + 1 < 4096; u += ties == 2 ? 1 : 2)
                    decided += in[u] != in[u + 1];
            }
    TU_CHECK(diff == 0, "select_topk %s: %zu of %zu list entries differ from the CPU's", name, diff, nidx);
    if (ties) TU_CHECK(decided > 0, "select_topk %s: no tie was decided", name);
    printf("  select_topk %-24s B=%d T=%d h=%d g=%d dk=%d b=%d b_s=%d n=%d R=%d: %d selection blocks%s\n", name, B, T,
           h, g, dk, bsz, bsel, n, R, (T + bsel - 1) / bsel, ties ? ", ties decided" : "");
    free(q), free(kc), free(vc), free(o), free(lse), free(idx), free(hidx);
    gpu->free(gpu, gq), gpu->free(gpu, gkc), gpu->free(gpu, glse), gpu->free(gpu, gidx);
}

// Backward twice from zeroed gradients: the results must be bitwise equal (no atomics, fixed orders).
static void test_determinism(const attn_case *c) {
    const asa_attn_shape *s = &c->s;
    const int N = s->B * s->T, nb = asa_attn_num_cmp_blocks(s), na = asa_attn_num_anchors(s);
    const size_t nq = (size_t)N * s->h * s->dk, nk = (size_t)N * s->g * s->dk, nv = (size_t)N * s->g * s->dv;
    const size_t no = (size_t)N * s->h * s->dv, nl = (size_t)N * s->h;
    const size_t nkc = (size_t)s->B * nb * s->g * s->dk, nvc = (size_t)s->B * nb * s->g * s->dv;
    const size_t nidx = (size_t)s->B * na * s->g * s->block_counts, ntot = nq + nk + nv + nkc + nvc;
    float *h = h_rand(nq + nk + nv + no, 1);
    float *q = d_from(h, nq * 4), *k = d_from(h + nq, nk * 4), *v = d_from(h + nq + nk, nv * 4);
    float *dout = d_from(h + nq + nk + nv, no * 4);
    float *o = gpu->alloc(gpu, no * 4), *lse = gpu->alloc(gpu, nl * 4), *kc = gpu->alloc(gpu, nkc * 4);
    float *vc = gpu->alloc(gpu, nvc * 4), *lc = gpu->alloc(gpu, nl * 4), *oc = gpu->alloc(gpu, no * 4);
    int32_t *idx = gpu->alloc(gpu, nidx * 4);
    float *grads = gpu->alloc(gpu, ntot * 4);
    float *dq = grads, *dk = dq + nq, *dv = dk + nk, *dkc = dv + nv, *dvc = dkc + nkc;
    float *run[2] = {malloc(ntot * 4), malloc(ntot * 4)};
    gpu->compress_fwd(gpu, s, s->dk, k, kc);
    gpu->compress_fwd(gpu, s, s->dv, v, vc);
    gpu->attn_cmp_fwd(gpu, s, q, kc, vc, oc, lc);
    gpu->select_topk(gpu, s, q, kc, lc, idx);
    for (int r = 0; r < 2; r++) {
        gpu->zero(gpu, grads, ntot * 4);
        gpu->attn_fwd(gpu, s, q, k, v, o, lse);
        gpu->attn_bwd(gpu, s, q, k, v, o, lse, dout, dq, dk, dv);
        gpu->attn_cmp_bwd(gpu, s, q, kc, vc, oc, lc, dout, dq, dkc, dvc);
        gpu->attn_slc_fwd(gpu, s, q, k, v, idx, o, lse);
        gpu->attn_slc_bwd(gpu, s, q, k, v, idx, o, lse, dout, dq, dk, dv);
        gpu->to_host(gpu, run[r], grads, ntot * 4);
    }
    TU_CHECK(memcmp(run[0], run[1], ntot * 4) == 0, "%s: two backward passes differ", c->name);
    free(h), free(run[0]), free(run[1]);
    gpu->free(gpu, q), gpu->free(gpu, k), gpu->free(gpu, v), gpu->free(gpu, dout), gpu->free(gpu, o);
    gpu->free(gpu, lse), gpu->free(gpu, kc), gpu->free(gpu, vc), gpu->free(gpu, lc), gpu->free(gpu, oc);
    gpu->free(gpu, idx), gpu->free(gpu, grads);
}

// ---- selected attention on the tensor cores ----

// The increment a backward op added to `init` (the common starting gradient), GPU against CPU: comparing
// the totals would let the starting values hide the increment's error. Returns the relative error.
static double expect_increment(const char *what, const float *dev, const float *init, const float *ref, size_t n,
                               double tol) {
    float *h = malloc((n ? n : 1) * sizeof(float)), *r = malloc((n ? n : 1) * sizeof(float));
    gpu->to_host(gpu, h, dev, n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] -= init[i], r[i] = ref[i] - init[i];
    double err = tu_rel_err_f(h, r, n);
    TU_CHECK(err < tol, "%s: relative error %.3e (tolerance %.0e)", what, err, tol);
    free(h), free(r);
    return err;
}

// attn_slc_fwd / attn_slc_bwd of the tf32 backend (mma.sync on TF32 operands, fp32 softmax and sums) against
// the CPU. Tolerance TOL_TF32 = 2e-3: each operand of q.k, p.v, dout.v, ds.k, p.dout and ds.q is rounded to
// TF32 (relative error up to 2^-11 = 4.9e-4, rms about 2e-4) and the products are summed in fp32 over up to
// 128 terms (head dims) or the visible keys / rows, so outputs and gradients carry about 3e-4 relative
// error, as gemm's tf32 products do; lse inherits the scores' absolute error (a few 1e-4 on values of a few
// units). The lists are the CPU's selection on these inputs with every slot emptied (-1) with chance 1/5:
// gaps inside lists, and rows whose list is empty (o = 0, lse = -inf, no gradient). Returns o's error.
static double test_slc_tf32(const attn_case *c) {
    const asa_attn_shape *s = &c->s;
    const int N = s->B * s->T, nb = asa_attn_num_cmp_blocks(s), na = asa_attn_num_anchors(s);
    const size_t nq = (size_t)N * s->h * s->dk, nk = (size_t)N * s->g * s->dk, nv = (size_t)N * s->g * s->dv;
    const size_t no = (size_t)N * s->h * s->dv, nl = (size_t)N * s->h;
    const size_t nkc = (size_t)s->B * nb * s->g * s->dk, nvc = (size_t)s->B * nb * s->g * s->dv;
    const size_t nidx = (size_t)s->B * na * s->g * s->block_counts;
    char what[160];
    float *q = h_rand(nq, 1), *k = h_rand(nk, 1), *v = h_rand(nv, 1), *dout = h_rand(no, 1);
    float *kc = malloc(nkc * 4), *vc = malloc(nvc * 4), *o = malloc(no * 4), *lse = malloc(nl * 4);
    int32_t *idx = malloc(nidx * 4);
    cpu->compress_fwd(cpu, s, s->dk, k, kc);
    cpu->compress_fwd(cpu, s, s->dv, v, vc);
    cpu->attn_cmp_fwd(cpu, s, q, kc, vc, o, lse);
    cpu->select_topk(cpu, s, q, kc, lse, idx);
    for (size_t e = 0; e < nidx; e++)
        if (asa_rng_below(&rng, 5) == 0) idx[e] = -1;

    float *gq = d_from(q, nq * 4), *gk = d_from(k, nk * 4), *gv = d_from(v, nv * 4), *gdout = d_from(dout, no * 4);
    int32_t *gidx = d_from(idx, nidx * 4);
    float *go = d_nan(no), *glse = d_nan(nl);
    cpu->attn_slc_fwd(cpu, s, q, k, v, idx, o, lse);
    gpu_tf32->attn_slc_fwd(gpu_tf32, s, gq, gk, gv, gidx, go, glse);
    snprintf(what, sizeof what, "%s attn_slc_fwd o", c->name);
    float *h = malloc(no * 4);
    gpu->to_host(gpu, h, go, no * 4);
    const double eo = tu_rel_err_f(h, o, no);
    TU_CHECK(eo < TOL_TF32, "%s: relative error %.3e (tolerance %.0e)", what, eo, TOL_TF32);
    snprintf(what, sizeof what, "%s attn_slc_fwd lse", c->name);
    const double el = expect_lse_tol(what, glse, lse, nl, TOL_TF32);

    // backward from the CPU's o and lse, accumulating onto common random gradients; twice on the GPU, the
    // second run bitwise equal to the first
    gpu->to_device(gpu, go, o, no * 4);
    gpu->to_device(gpu, glse, lse, nl * 4);
    float *dq0 = h_rand(nq, 1), *dk0 = h_rand(nk, 1), *dv0 = h_rand(nv, 1);
    float *dq = malloc(nq * 4), *dk = malloc(nk * 4), *dv = malloc(nv * 4);
    memcpy(dq, dq0, nq * 4), memcpy(dk, dk0, nk * 4), memcpy(dv, dv0, nv * 4);
    cpu->attn_slc_bwd(cpu, s, q, k, v, idx, o, lse, dout, dq, dk, dv);
    float *run[2][3];
    double eg[3] = {0, 0, 0};
    for (int r = 0; r < 2; r++) {
        float *gdq = d_from(dq0, nq * 4), *gdk = d_from(dk0, nk * 4), *gdv = d_from(dv0, nv * 4);
        gpu_tf32->attn_slc_bwd(gpu_tf32, s, gq, gk, gv, gidx, go, glse, gdout, gdq, gdk, gdv);
        run[r][0] = malloc(nq * 4), run[r][1] = malloc(nk * 4), run[r][2] = malloc(nv * 4);
        gpu->to_host(gpu, run[r][0], gdq, nq * 4);
        gpu->to_host(gpu, run[r][1], gdk, nk * 4);
        gpu->to_host(gpu, run[r][2], gdv, nv * 4);
        if (r == 0) {
            snprintf(what, sizeof what, "%s attn_slc_bwd dq", c->name);
            eg[0] = expect_increment(what, gdq, dq0, dq, nq, TOL_TF32);
            snprintf(what, sizeof what, "%s attn_slc_bwd dk", c->name);
            eg[1] = expect_increment(what, gdk, dk0, dk, nk, TOL_TF32);
            snprintf(what, sizeof what, "%s attn_slc_bwd dv", c->name);
            eg[2] = expect_increment(what, gdv, dv0, dv, nv, TOL_TF32);
        }
        gpu->free(gpu, gdq), gpu->free(gpu, gdk), gpu->free(gpu, gdv);
    }
    TU_CHECK(!memcmp(run[0][0], run[1][0], nq * 4) && !memcmp(run[0][1], run[1][1], nk * 4) &&
                 !memcmp(run[0][2], run[1][2], nv * 4),
             "%s: two tf32 attn_slc_bwd runs differ", c->name);
    printf("  %-26s B=%d T=%d h=%d g=%d dk=%d dv=%d b_s=%d n=%d R=%d: o %.1e lse %.1e dq %.1e dk %.1e dv %.1e\n",
           c->name, s->B, s->T, s->h, s->g, s->dk, s->dv, s->selection_block_size, s->block_counts,
           s->selection_share, eo, el, eg[0], eg[1], eg[2]);
    for (int r = 0; r < 2; r++) free(run[r][0]), free(run[r][1]), free(run[r][2]);
    free(q), free(k), free(v), free(dout), free(kc), free(vc), free(o), free(lse), free(idx), free(h);
    free(dq0), free(dk0), free(dv0), free(dq), free(dk), free(dv);
    gpu->free(gpu, gq), gpu->free(gpu, gk), gpu->free(gpu, gv), gpu->free(gpu, gdout), gpu->free(gpu, gidx);
    gpu->free(gpu, go), gpu->free(gpu, glse);
    return eo;
}

// attn_fwd / attn_bwd (full and window) and attn_cmp_bwd of the tf32 backend (attn_dense_mma.cu) against
// the CPU, with TOL_TF32 and its reasoning as for test_slc_tf32 (the same products, over the visible keys
// or the rows that see a key). attn_cmp_fwd stays exact in tf32 mode (its lse feeds select_topk): checked
// at TOL_ELEM. Backward runs from the CPU's o and lse, twice, bitwise equal. Sets worst[0] / worst[1] to
// the largest of o's error and of the backward's errors when they exceed it (head dims <= 128 only).
static void test_dense_tf32(const attn_case *c, double worst[2]) {
    const asa_attn_shape *s = &c->s;
    const int N = s->B * s->T, nb = s->block_size > 0 ? asa_attn_num_cmp_blocks(s) : 0;
    const size_t nq = (size_t)N * s->h * s->dk, nk = (size_t)N * s->g * s->dk, nv = (size_t)N * s->g * s->dv;
    const size_t no = (size_t)N * s->h * s->dv, nl = (size_t)N * s->h;
    const size_t nkc = (size_t)s->B * nb * s->g * s->dk, nvc = (size_t)s->B * nb * s->g * s->dv;
    char what[160];
    float *q = h_rand(nq, 1), *k = h_rand(nk, 1), *v = h_rand(nv, 1), *dout = h_rand(no, 1);
    float *o = malloc(no * 4), *lse = malloc(nl * 4), *h = malloc(no * 4);
    float *gq = d_from(q, nq * 4), *gk = d_from(k, nk * 4), *gv = d_from(v, nv * 4), *gdout = d_from(dout, no * 4);
    float *go = d_nan(no), *glse = d_nan(nl);
    cpu->attn_fwd(cpu, s, q, k, v, o, lse);
    gpu_tf32->attn_fwd(gpu_tf32, s, gq, gk, gv, go, glse);
    gpu->to_host(gpu, h, go, no * 4);
    const double eo = tu_rel_err_f(h, o, no);
    TU_CHECK(eo < TOL_TF32, "%s attn_fwd o: relative error %.3e (tolerance %.0e)", c->name, eo, TOL_TF32);
    snprintf(what, sizeof what, "%s attn_fwd lse", c->name);
    const double el = expect_lse_tol(what, glse, lse, nl, TOL_TF32);
    gpu->to_device(gpu, go, o, no * 4);
    gpu->to_device(gpu, glse, lse, nl * 4);

    // the dense backward, then (block_size > 0) the compressed branch's, each twice
    float *kc = malloc((nkc ? nkc : 1) * 4), *vc = malloc((nvc ? nvc : 1) * 4);
    float *gkc = NULL, *gvc = NULL, *co = NULL, *clse = NULL;
    double eg[2][3] = {{0, 0, 0}, {0, 0, 0}};
    const int passes = s->block_size > 0 ? 2 : 1;
    for (int pass = 0; pass < passes; pass++) {
        const char *op = pass ? "attn_cmp_bwd" : "attn_bwd";
        const size_t n2 = pass ? nkc : nk, n3 = pass ? nvc : nv;
        if (pass) {
            cpu->compress_fwd(cpu, s, s->dk, k, kc);
            cpu->compress_fwd(cpu, s, s->dv, v, vc);
            co = malloc(no * 4), clse = malloc(nl * 4);
            cpu->attn_cmp_fwd(cpu, s, q, kc, vc, co, clse);
            gkc = d_from(kc, nkc * 4), gvc = d_from(vc, nvc * 4);
            d_poison(go, no);
            d_poison(glse, nl);
            gpu_tf32->attn_cmp_fwd(gpu_tf32, s, gq, gkc, gvc, go, glse);
            snprintf(what, sizeof what, "%s attn_cmp_fwd o (exact in tf32 mode)", c->name);
            expect_close(what, go, co, no, TOL_ELEM);
            snprintf(what, sizeof what, "%s attn_cmp_fwd lse (exact in tf32 mode)", c->name);
            expect_lse(what, glse, clse, nl);
            gpu->to_device(gpu, go, co, no * 4);
            gpu->to_device(gpu, glse, clse, nl * 4);
        }
        // this pass's keys and values, on the host and on the device, and the forward's o and lse
        const float *ck = pass ? kc : k, *cv = pass ? vc : v, *gck = pass ? gkc : gk, *gcv = pass ? gvc : gv;
        const float *ro = pass ? co : o, *rl = pass ? clse : lse;
        float *dq0 = h_rand(nq, 1), *dk0 = h_rand(n2, 1), *dv0 = h_rand(n3, 1);
        float *dq = malloc(nq * 4), *dk = malloc((n2 ? n2 : 1) * 4), *dv = malloc((n3 ? n3 : 1) * 4);
        memcpy(dq, dq0, nq * 4), memcpy(dk, dk0, n2 * 4), memcpy(dv, dv0, n3 * 4);
        if (pass) cpu->attn_cmp_bwd(cpu, s, q, ck, cv, ro, rl, dout, dq, dk, dv);
        else cpu->attn_bwd(cpu, s, q, ck, cv, ro, rl, dout, dq, dk, dv);
        float *run[2][3];
        for (int r = 0; r < 2; r++) {
            float *gdq = d_from(dq0, nq * 4), *gdk = d_from(dk0, n2 * 4), *gdv = d_from(dv0, n3 * 4);
            if (pass) gpu_tf32->attn_cmp_bwd(gpu_tf32, s, gq, gck, gcv, go, glse, gdout, gdq, gdk, gdv);
            else gpu_tf32->attn_bwd(gpu_tf32, s, gq, gck, gcv, go, glse, gdout, gdq, gdk, gdv);
            run[r][0] = malloc(nq * 4), run[r][1] = malloc((n2 ? n2 : 1) * 4), run[r][2] = malloc((n3 ? n3 : 1) * 4);
            gpu->to_host(gpu, run[r][0], gdq, nq * 4);
            gpu->to_host(gpu, run[r][1], gdk, n2 * 4);
            gpu->to_host(gpu, run[r][2], gdv, n3 * 4);
            if (r == 0 && !pass && s->window == 1) {
                // One visible key: the score gradient is zero (ds = dout.v - dout.o, o = v), so dq and dk's
                // increments are the TF32 error of dout.v (~3e-4 relative on a dot of rms 8 at d = 64) times
                // scale·k: rms about 3e-4, against ~0.1 for a real score gradient. Bound: 5e-3.
                for (int x = 0; x < 2; x++) {
                    const size_t n = x ? n2 : nq;
                    double ss = 0;
                    for (size_t e = 0; e < n; e++) {
                        const double d = (double)run[0][x][e] - (x ? dk0 : dq0)[e];
                        ss += d * d;
                    }
                    eg[0][x] = sqrt(ss / (double)n);
                    TU_CHECK(eg[0][x] < 5e-3, "%s %s %s: rms increment %.3e, expected zero up to TF32 error",
                             c->name, op, x ? "dk" : "dq", eg[0][x]);
                }
            } else if (r == 0) {
                snprintf(what, sizeof what, "%s %s dq", c->name, op);
                eg[pass][0] = expect_increment(what, gdq, dq0, dq, nq, TOL_TF32);
                snprintf(what, sizeof what, "%s %s dk", c->name, op);
                eg[pass][1] = expect_increment(what, gdk, dk0, dk, n2, TOL_TF32);
            }
            if (r == 0) {
                snprintf(what, sizeof what, "%s %s dv", c->name, op);
                eg[pass][2] = expect_increment(what, gdv, dv0, dv, n3, TOL_TF32);
            }
            gpu->free(gpu, gdq), gpu->free(gpu, gdk), gpu->free(gpu, gdv);
        }
        TU_CHECK(!memcmp(run[0][0], run[1][0], nq * 4) && !memcmp(run[0][1], run[1][1], n2 * 4) &&
                     !memcmp(run[0][2], run[1][2], n3 * 4),
                 "%s: two tf32 %s runs differ", c->name, op);
        if (s->dk <= 128 && s->dv <= 128)
            for (int i = s->window == 1 && !pass ? 2 : 0; i < 3; i++)  // window 1: dq, dk are rms, not relative
                worst[1] = eg[pass][i] > worst[1] ? eg[pass][i] : worst[1];
        for (int r = 0; r < 2; r++) free(run[r][0]), free(run[r][1]), free(run[r][2]);
        free(dq0), free(dk0), free(dv0), free(dq), free(dk), free(dv);
    }
    if (s->dk <= 128 && s->dv <= 128) worst[0] = eo > worst[0] ? eo : worst[0];
    printf("  %-24s B=%d T=%d h=%d g=%d dk=%d dv=%d w=%d b=%d: o %.1e lse %.1e d %.1e %.1e %.1e cmp d %.1e %.1e %.1e\n",
           c->name, s->B, s->T, s->h, s->g, s->dk, s->dv, s->window, s->block_size, eo, el, eg[0][0], eg[0][1],
           eg[0][2], eg[1][0], eg[1][1], eg[1][2]);
    free(q), free(k), free(v), free(dout), free(o), free(lse), free(h), free(kc), free(vc), free(co), free(clse);
    gpu->free(gpu, gq), gpu->free(gpu, gk), gpu->free(gpu, gv), gpu->free(gpu, gdout), gpu->free(gpu, go);
    gpu->free(gpu, glse);
    if (gkc) gpu->free(gpu, gkc), gpu->free(gpu, gvc);
}

// ---- decoding ----

// A cache of B sequences of S rows, row width W, viewed as GQA ([k] and v, separate buffers) or latent
// ([c_0 .. c_{g-1} | kr] rows, values c_j) keys; `base` and `vbase` are its key and value buffers.
static asa_kv_view make_view(int latent, const float *base, const float *vbase, int S, int g, int dk, int dv, int dr) {
    asa_kv_view kv;
    memset(&kv, 0, sizeof kv);
    if (!latent) {
        kv.k1 = base, kv.k1_bs = (long)S * g * dk, kv.k1_rs = (long)g * dk, kv.k1_hs = dk, kv.dk1 = dk;
        kv.v = vbase, kv.v_bs = (long)S * g * dv, kv.v_rs = (long)g * dv, kv.v_hs = dv, kv.dv = dv;
        kv.k2 = NULL, kv.dk2 = 0;
    } else {  // dk = dv = d_c
        const long W = (long)g * dk + dr;
        kv.k1 = base, kv.k1_bs = S * W, kv.k1_rs = W, kv.k1_hs = dk, kv.dk1 = dk;
        kv.k2 = base + (long)g * dk, kv.k2_bs = S * W, kv.k2_rs = W, kv.k2_hs = 0, kv.dk2 = dr;
        kv.v = base, kv.v_bs = S * W, kv.v_rs = W, kv.v_hs = dk, kv.dv = dk;
    }
    return kv;
}

static void test_decode(int latent) {
    const int B = 2, S = 150, h = latent ? 4 : 6, g = 2, dk = latent ? 24 : 40, dv = latent ? 24 : 24, dr = latent ? 8 : 0;
    const int bsz = 4, bsel = 16, n = 5, t = S - 1, nbk = S / bsz;
    const int dq = dk + dr;
    const float scale = 1.0f / sqrtf((float)dq);
    const size_t W = latent ? (size_t)g * dk + dr : (size_t)g * dk;
    const size_t nkc = (size_t)B * S * W, nvc = latent ? 1 : (size_t)B * S * g * dv;
    const size_t npk = (size_t)B * nbk * W, npv = latent ? 1 : (size_t)B * nbk * g * dv;
    const size_t nqq = (size_t)B * h * dq, no = (size_t)B * h * dv, nl = (size_t)B * h, nidx = (size_t)B * g * n;
    float *kc = h_rand(nkc, 1), *vc = h_rand(nvc, 1), *pk = h_rand(npk, 1), *pv = h_rand(npv, 1), *q = h_rand(nqq, 1);
    float *gkc = d_from(kc, nkc * 4), *gvc = d_from(vc, nvc * 4), *gpk = d_from(pk, npk * 4), *gpv = d_from(pv, npv * 4);
    float *gq = d_from(q, nqq * 4);
    float *o = malloc(no * 4), *lse = malloc(nl * 4), *go = d_nan(no), *glse = d_nan(nl);
    asa_kv_view kv = make_view(latent, kc, latent ? kc : vc, S, g, dk, dv, dr);
    asa_kv_view gkv = make_view(latent, gkc, latent ? gkc : gvc, S, g, dk, dv, dr);
    asa_kv_view pkv = make_view(latent, pk, latent ? pk : pv, nbk, g, dk, dv, dr);
    asa_kv_view gpkv = make_view(latent, gpk, latent ? gpk : gpv, nbk, g, dk, dv, dr);
    const char *kind = latent ? "latent" : "gqa";
    char what[96];

    // a window of rows, then no rows at all
    cpu->attn_decode(cpu, B, h, g, scale, q, &kv, 37, S, o, lse);
    gpu->attn_decode(gpu, B, h, g, scale, gq, &gkv, 37, S, go, glse);
    snprintf(what, sizeof what, "%s attn_decode o", kind);
    expect_close(what, go, o, no, TOL_ELEM);
    snprintf(what, sizeof what, "%s attn_decode lse", kind);
    expect_lse(what, glse, lse, nl);
    d_poison(go, no);
    cpu->attn_decode(cpu, B, h, g, scale, q, &kv, 5, 5, o, lse);
    gpu->attn_decode(gpu, B, h, g, scale, gq, &gkv, 5, 5, go, glse);
    snprintf(what, sizeof what, "%s attn_decode empty", kind);
    expect_close(what, go, o, no, TOL_ELEM);
    expect_lse(what, glse, lse, nl);

    // compression branch over the pooled rows, selection from its lse, selected attention
    cpu->attn_decode(cpu, B, h, g, scale, q, &pkv, 0, (t + 1) / bsz, o, lse);
    gpu->to_device(gpu, glse, lse, nl * 4);
    int32_t *idx = malloc(nidx * 4), *hidx = malloc(nidx * 4), *gidx = gpu->alloc(gpu, nidx * 4);
    cpu->select_decode(cpu, B, h, g, scale, q, &pkv, lse, t, bsz, bsel, n, idx);
    gpu->select_decode(gpu, B, h, g, scale, gq, &gpkv, glse, t, bsz, bsel, n, gidx);
    gpu->to_host(gpu, hidx, gidx, nidx * 4);
    size_t diff = 0;
    for (size_t e = 0; e < nidx; e++) diff += idx[e] != hidx[e];
    TU_CHECK(diff == 0, "%s select_decode: %zu of %zu entries differ from the CPU's", kind, diff, nidx);
    gpu->to_device(gpu, gidx, idx, nidx * 4);
    d_poison(go, no);
    d_poison(glse, nl);
    cpu->attn_slc_decode(cpu, B, h, g, scale, q, &kv, idx, t - 3, bsel, n, o, lse);
    gpu->attn_slc_decode(gpu, B, h, g, scale, gq, &gkv, gidx, t - 3, bsel, n, go, glse);
    snprintf(what, sizeof what, "%s attn_slc_decode o", kind);
    expect_close(what, go, o, no, TOL_ELEM);
    snprintf(what, sizeof what, "%s attn_slc_decode lse", kind);
    expect_lse(what, glse, lse, nl);
    printf("  decode %-6s B=%d S=%d h=%d g=%d dk=%d+%d dv=%d\n", kind, B, S, h, g, dk, dr, dv);

    free(kc), free(vc), free(pk), free(pv), free(q), free(o), free(lse), free(idx), free(hidx);
    gpu->free(gpu, gkc), gpu->free(gpu, gvc), gpu->free(gpu, gpk), gpu->free(gpu, gpv), gpu->free(gpu, gq);
    gpu->free(gpu, go), gpu->free(gpu, glse), gpu->free(gpu, gidx);
}

int main(void) {
    gpu = asa_backend_cuda_new(0, ASA_PRECISION_FP32);
    if (!gpu) {
        printf("SKIPPED: %s\n", asa_err_msg());
        return 77;
    }
    gpu_tf32 = asa_backend_cuda_new(0, ASA_PRECISION_TF32);
    TU_CHECK(gpu_tf32 && gpu_tf32->precision == ASA_PRECISION_TF32, "no tf32 CUDA backend: %s", asa_err_msg());
    if (!gpu_tf32) return tu_finish("test_gpu_ops");
    TU_CHECK(asa_backend_cuda_new(0, 7) == NULL, "an unknown precision was accepted");
    cpu = asa_backend_cpu_new();
    asa_rng_seed(&rng, 2024);

    // K <= 300 products, blocked differently: fp32 agrees to ~1e-7
    double worst_tf32 = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            test_gemm(gpu, TOL_ELEM, ta, tb, 37, 53, 71, 0, 1, 0, 0.0f);
            test_gemm(gpu, TOL_ELEM, ta, tb, 37, 53, 71, 5, 3, 1, 1.0f);
            test_gemm(gpu, TOL_ELEM, ta, tb, 64, 48, 300, 3, 2, 2, 0.5f);
            double e[3] = {test_gemm(gpu_tf32, TOL_TF32, ta, tb, 37, 53, 71, 0, 1, 0, 0.0f),
                           test_gemm(gpu_tf32, TOL_TF32, ta, tb, 37, 53, 71, 5, 3, 1, 1.0f),
                           test_gemm(gpu_tf32, TOL_TF32, ta, tb, 64, 48, 300, 3, 2, 2, 0.5f)};
            for (int i = 0; i < 3; i++) worst_tf32 = e[i] > worst_tf32 ? e[i] : worst_tf32;
        }
    test_gemm(gpu, TOL_ELEM, 0, 1, 20, 30, 0, 0, 2, 0, 0.0f);  // K = 0: C = beta C
    test_gemm(gpu, TOL_ELEM, 0, 1, 20, 30, 0, 0, 2, 0, 0.5f);
    test_gemm(gpu_tf32, TOL_ELEM, 0, 1, 20, 30, 0, 0, 2, 0, 0.5f);  // no product: exact in tf32 mode too
    double big = test_gemm(gpu_tf32, TOL_TF32, 0, 1, 512, 512, 1024, 0, 1, 0, 0.0f);
    TU_CHECK(big > 1e-4, "tf32 gemm 512x512x1024: relative error %.2e, no larger than fp32 arithmetic gives", big);
    printf("  gemm tf32: worst relative error %.2e on the small shapes, %.2e at 512x512x1024\n", worst_tf32, big);
    test_embedding();
    test_rmsnorm(77, 1, 300);
    test_rmsnorm(50, 3, 40);
    test_rope(0);
    test_rope(65000);
    test_swiglu();
    test_copy_heads();
    test_xent();
    test_gate(3);
    test_gate(2);
    test_optim();
    printf("  dense ops done\n");

    const attn_case cases[] = {
        make_case("gqa full", 2, 150, 4, 2, 40, 24, 0, 8, 16, 5, 1),
        make_case("gqa window", 2, 150, 4, 2, 40, 24, 37, 8, 16, 5, 2),
        make_case("mqa R=4", 1, 203, 6, 1, 72, 64, 0, 4, 16, 6, 4),
        make_case("latent-like wide heads", 1, 130, 4, 2, 200, 160, 0, 16, 32, 3, 8),
        make_case("small heads", 3, 61, 2, 2, 8, 8, 9, 4, 8, 4, 1),
        // few compressed keys over many queries: the key-major backward splits its queries over blocks
        make_case("long, split cmp backward", 1, 2048, 4, 2, 32, 32, 0, 16, 32, 8, 2),
        // selection blocks of 12 tokens: key tiles of 8 end inside a block
        make_case("selection blocks of 12", 2, 100, 4, 2, 16, 16, 0, 6, 12, 4, 3),
        // head dims over 256: the widest register accumulators, over 48 KB of shared memory
        make_case("widest heads", 1, 70, 2, 1, 300, 270, 5, 8, 16, 3, 2),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_attention_case(&cases[i]);
    test_determinism(&cases[1]);
    test_determinism(&cases[5]);
    test_select_topk("1250 blocks", 1, 20000, 4, 2, 32, 16, 16, 16, 1, 0);
    test_select_topk("16 heads per group, R=4", 1, 8192, 16, 1, 128, 64, 64, 16, 4, 0);
    test_select_topk("2 blocks per selection", 2, 16421, 8, 2, 64, 16, 32, 16, 4, 0);
    test_select_topk("128 heads per group", 1, 1024, 128, 1, 16, 16, 64, 5, 1, 0);
    test_select_topk("64 blocks per selection", 1, 2000, 2, 1, 8, 4, 256, 4, 2, 0);
    test_select_topk("pairs tied, dk tail", 1, 4096, 6, 2, 44, 8, 16, 16, 1, 1);
    test_select_topk("all tied, R=4", 1, 3000, 4, 1, 20, 16, 16, 8, 4, 2);
    test_select_topk("1088 blocks all tied", 1, 17408, 2, 1, 16, 16, 16, 16, 1, 2);

    // tf32 selected attention: R·G = 16 (one m-tile), 64 (four), 32 (two), 1 and 4 (padded rows); T not a
    // multiple of b_s or of R, T < b_s; head dims 128, 96 / 64, 64, padded 40 / 24, 160 / 128 (the latent
    // keys of asa-340M's G layers), and 200 / 160 (over 160: the fp32 kernels serve the tf32 mode too);
    // selection blocks of 128 (several key
    // chunks and dk/dv key tiles per block); lists long enough to be split
    const attn_case slc_cases[] = {
        make_case("tf32 R=1 G=16 d128", 1, 300, 16, 1, 128, 128, 0, 16, 32, 5, 1),
        make_case("tf32 R=4 G=16 d128", 1, 150, 32, 2, 128, 128, 0, 16, 16, 6, 4),
        make_case("tf32 R=4 G=4 d64", 2, 77, 8, 2, 64, 64, 0, 8, 16, 5, 4),
        make_case("tf32 R=1 G=1 T<b_s", 1, 20, 4, 4, 64, 64, 0, 8, 32, 3, 1),
        make_case("tf32 R=4 G=8 d96/64", 1, 130, 8, 1, 96, 64, 0, 16, 32, 4, 4),
        make_case("tf32 R=2 G=2 d40/24", 2, 150, 4, 2, 40, 24, 0, 8, 16, 5, 2),
        make_case("tf32 R=4 G=1 d128/64", 1, 100, 2, 2, 128, 64, 0, 8, 16, 4, 4),
        make_case("tf32 b_s=128", 1, 300, 16, 1, 64, 64, 0, 32, 128, 3, 1),
        // over 512 anchors list block 0: the dk/dv pass splits the list and adds the parts in order
        make_case("tf32 split lists", 1, 1100, 16, 1, 64, 64, 0, 16, 16, 4, 1),
        make_case("tf32 R=4 G=8 d160/128 (asa-340M G)", 1, 260, 16, 2, 160, 128, 0, 16, 64, 4, 4),
        make_case("tf32 wide heads (fp32)", 1, 70, 2, 1, 200, 160, 0, 8, 16, 3, 2),
    };
    double slc_worst = 0;
    for (size_t i = 0; i < sizeof slc_cases / sizeof slc_cases[0]; i++) {
        const double e = test_slc_tf32(&slc_cases[i]);
        if (slc_cases[i].s.dk <= 160) slc_worst = e > slc_worst ? e : slc_worst;
    }
    // fp32 kernels agree with the CPU to ~1e-7: a larger error shows the tensor cores in use
    TU_CHECK(slc_worst > 1e-5, "tf32 attn_slc_fwd: worst error %.2e, no larger than fp32 arithmetic gives", slc_worst);
    // tf32 full / window attention and compressed backward: T not a multiple of the 64-row tiles, T < 16,
    // window 1 and window >= T, G = 1, 4 and 16, head dims 32, 64, 96 / 64 (ASA's local layers), 128 and
    // padded 40 / 24, and 200 / 160 (over 128: the fp32 kernels serve the tf32 mode too); the dk/dv pass
    // splits its rows over blocks at these lengths, and T = 2048 gives long compressed-key row streams
    const attn_case dense_cases[] = {
        make_case("tf32 full G=1 d64", 2, 150, 4, 4, 64, 64, 0, 16, 16, 1, 1),
        make_case("tf32 window 37 G=4 d128", 1, 300, 16, 4, 128, 128, 37, 32, 32, 1, 1),
        make_case("tf32 T<16 G=16 d32", 1, 11, 16, 1, 32, 32, 0, 4, 4, 1, 1),
        make_case("tf32 window 1", 1, 100, 2, 2, 64, 64, 1, 0, 16, 1, 1),
        make_case("tf32 window>=T d96/64", 2, 90, 8, 2, 96, 64, 200, 8, 8, 1, 1),
        make_case("tf32 full G=16 d128", 1, 200, 32, 2, 128, 128, 0, 16, 16, 1, 1),
        make_case("tf32 d40/24 G=2", 2, 77, 4, 2, 40, 24, 20, 8, 8, 1, 1),
        make_case("tf32 long cmp b=16", 1, 2048, 4, 2, 32, 32, 0, 16, 16, 1, 1),
        make_case("tf32 wide heads (fp32)", 1, 70, 2, 1, 200, 160, 5, 8, 8, 1, 1),
    };
    double dense_worst[2] = {0, 0};
    for (size_t i = 0; i < sizeof dense_cases / sizeof dense_cases[0]; i++)
        test_dense_tf32(&dense_cases[i], dense_worst);
    // fp32 kernels agree with the CPU to ~1e-7: a larger error shows the tensor cores in use
    TU_CHECK(dense_worst[0] > 1e-6 && dense_worst[1] > 1e-6,
             "tf32 dense attention: worst errors %.2e (forward) %.2e (backward), no larger than fp32 gives",
             dense_worst[0], dense_worst[1]);
    test_decode(0);
    test_decode(1);

    asa_backend_free(cpu);
    asa_backend_free(gpu);
    asa_backend_free(gpu_tf32);
    return tu_finish("test_gpu_ops");
}
