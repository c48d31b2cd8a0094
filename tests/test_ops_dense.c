// Tests of the CPU backend's dense ops (gemm, embedding, rmsnorm, rope, swiglu, copy_heads, xent, gate,
// adamw, sum_squares, scale, add), called through the backend table, against naive double-precision
// references written here. Every backward op is checked against central finite differences of
// L = sum(out * W) taken on the double reference, and checked to accumulate into its outputs.
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "testutil.h"

static asa_rng rng;
static asa_backend *be;

// fp32 op against a double reference: a few ulp per element, growing slowly with reduction length.
#define TOL 1e-5

// ---------------------------------------------------------------- helpers

static float *rand_f(size_t n, float sd) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    tu_fill_normal(x, n, &rng, sd);
    return x;
}

static double *to_d(const float *x, size_t n) {
    double *d = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

// A guarded buffer whose body holds a copy of src (src NULL: zeros).
static float *guarded_from(const float *src, size_t n) {
    float *p = tu_guarded_new(n);
    for (size_t i = 0; i < n; i++) p[i] = src ? src[i] : 0.0f;
    return p;
}

static void check_err(const char *what, const float *a, const double *ref, size_t n, double tol) {
    double e = tu_rel_err(a, ref, n);
    TU_CHECK(e <= tol, "%s: rel err %.3g > %.3g", what, e, tol);
}

static void check_guard(const char *what, const float *p, size_t n) {
    TU_CHECK(tu_guard_ok(p, n), "%s: write outside the buffer", what);
}

// start + 2 * g: what a backward op run twice on a buffer starting at `start` must produce.
static double *twice_from(const float *start, const double *g, size_t n) {
    double *r = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) r[i] = start[i] + 2.0 * g[i];
    return r;
}

static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

typedef double (*loss_fn)(void *ctx);

// Central differences of f with respect to each element of x, which f reads through ctx. In double
// with h ~ 1e-6 the truncation (h^2) and rounding (1e-16 / h) errors are both far below fp32 tolerances.
static void fd_grad(loss_fn f, void *ctx, double *x, size_t n, double *g) {
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i], h = 1e-6 * fmax(1.0, fabs(x0));
        x[i] = x0 + h;
        double lp = f(ctx);
        x[i] = x0 - h;
        double lm = f(ctx);
        x[i] = x0;
        g[i] = (lp - lm) / (2 * h);
    }
}

static double dot_w(const double *out, const float *W, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += out[i] * W[i];
    return s;
}

// ---------------------------------------------------------------- gemm

// Dense [M, N] reference of one product; C0 is not read when beta == 0 (BLAS semantics).
static void ref_gemm(int tA, int tB, int M, int N, int K, double alpha, const float *A, int lda, const float *B,
                     int ldb, double beta, const float *C0, int ldc, double *out) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                double a = tA ? A[(long)k * lda + i] : A[(long)i * lda + k];
                double b = tB ? B[(long)j * ldb + k] : B[(long)k * ldb + j];
                s += a * b;
            }
            out[(long)i * N + j] = alpha * s + (beta == 0 ? 0.0 : beta * C0[(long)i * ldc + j]);
        }
}

static void test_gemm_case(int tA, int tB, int M, int N, int K, int batch, float alpha, float beta, int pad) {
    char what[128];
    snprintf(what, sizeof what, "gemm tA=%d tB=%d M=%d N=%d K=%d batch=%d alpha=%g beta=%g", tA, tB, M, N, K,
             batch, alpha, beta);
    int lda = (tA ? M : K) + pad, ldb = (tB ? K : N) + pad, ldc = N + pad;
    long strideA = (long)(tA ? K : M) * lda + 3, strideB = (long)(tB ? N : K) * ldb + 5;
    long strideC = (long)M * ldc + 2;
    size_t nA = batch * strideA, nB = batch * strideB, nC = batch * strideC;
    float *A = rand_f(nA, 1.0f), *B = rand_f(nB, 1.0f);
    float *C = tu_guarded_new(nC);
    if (beta != 0) tu_fill_normal(C, nC, &rng, 1.0f);  // beta == 0 keeps the NaN poison: it must vanish
    float *C0 = malloc((nC ? nC : 1) * sizeof(float));
    memcpy(C0, C, nC * sizeof(float));

    be->gemm(be, tA, tB, M, N, K, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ASA_F32, ldc, strideC, batch);

    double *ref = malloc(((size_t)M * N + 1) * sizeof(double));
    float *got = malloc(((size_t)M * N + 1) * sizeof(float));
    char *live = calloc(nC + 1, 1);
    double worst = 0;
    for (int b = 0; b < batch; b++) {
        ref_gemm(tA, tB, M, N, K, alpha, A + b * strideA, lda, B + b * strideB, ldb, beta, C0 + b * strideC, ldc,
                 ref);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                long at = b * strideC + (long)i * ldc + j;
                got[(long)i * N + j] = C[at];
                live[at] = 1;
            }
        double e = tu_rel_err(got, ref, (size_t)M * N);
        worst = e > worst ? e : worst;
    }
    TU_CHECK(worst <= TOL, "%s: rel err %.3g", what, worst);
    size_t touched = 0;  // padding between rows and between batch entries must be left alone
    for (size_t i = 0; i < nC; i++)
        if (!live[i] && !same_bits(&C[i], &C0[i], 1)) touched++;
    TU_CHECK(touched == 0, "%s: %zu elements outside the matrices changed", what, touched);
    check_guard(what, C, nC);
    free(A); free(B); free(C0); free(ref); free(got); free(live);
    tu_guarded_free(C);
}

static void test_gemm(void) {
    static const int shapes[][5] = {  // M, N, K, batch, pad
        {1, 1, 1, 1, 0}, {7, 5, 3, 1, 2}, {33, 17, 65, 3, 1}, {64, 40, 50, 4, 3}, {200, 300, 150, 2, 7},
    };
    for (int tA = 0; tA < 2; tA++)
        for (int tB = 0; tB < 2; tB++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                const int *sh = shapes[s];
                test_gemm_case(tA, tB, sh[0], sh[1], sh[2], sh[3], 1.0f, 0.0f, sh[4]);
                test_gemm_case(tA, tB, sh[0], sh[1], sh[2], sh[3], 0.5f, 1.0f, sh[4]);
            }
    // Degenerate sizes: K = 0 leaves beta * C (zeros from NaN when beta = 0); M or N = 0 touch nothing.
    test_gemm_case(0, 0, 5, 6, 0, 2, 1.0f, 0.0f, 1);
    test_gemm_case(1, 1, 5, 6, 0, 2, 1.0f, 1.0f, 0);
    test_gemm_case(0, 1, 5, 6, 0, 1, 1.0f, 0.5f, 2);
    test_gemm_case(0, 0, 0, 6, 4, 2, 1.0f, 0.0f, 1);
    test_gemm_case(1, 0, 5, 0, 4, 2, 1.0f, 0.0f, 1);
    test_gemm_case(0, 0, 9, 4, 6, 3, 0.0f, 0.0f, 1);  // alpha = 0, beta = 0: exact zeros
    test_gemm_case(1, 0, 6, 8, 11, 5, -2.0f, 0.25f, 2);
}

// ---------------------------------------------------------------- embedding

typedef struct { int N, D; const int32_t *tok; double *E; const float *W; } emb_ctx;

static double emb_loss(void *p) {
    emb_ctx *c = p;
    double s = 0;
    for (int n = 0; n < c->N; n++)
        for (int j = 0; j < c->D; j++) s += c->E[(long)c->tok[n] * c->D + j] * c->W[(long)n * c->D + j];
    return s;
}

static void test_embedding_case(int V, int N, int D) {
    char what[96];
    snprintf(what, sizeof what, "embedding V=%d N=%d D=%d", V, N, D);
    size_t nE = (size_t)V * D, nO = (size_t)N * D;
    int32_t *tok = malloc(N * sizeof(int32_t));
    for (int n = 0; n < N; n++) tok[n] = (int32_t)asa_rng_below(&rng, V);
    tok[N - 1] = tok[0];  // at least one repeated token (a no-op when N = 1)
    float *E = rand_f(nE, 1.0f), *W = rand_f(nO, 1.0f);

    float *out = tu_guarded_new(nO);
    be->embedding_fwd(be, out, tok, E, N, D);
    int exact = 1;
    for (int n = 0; n < N; n++) exact &= same_bits(out + (size_t)n * D, E + (size_t)tok[n] * D, D);
    TU_CHECK(exact, "%s: fwd rows differ from E", what);
    check_guard(what, out, nO);

    double *Ed = to_d(E, nE), *g = malloc(nE * sizeof(double));
    emb_ctx ctx = {N, D, tok, Ed, W};
    fd_grad(emb_loss, &ctx, Ed, nE, g);
    float *dE = guarded_from(NULL, nE);
    be->embedding_bwd(be, dE, W, tok, N, D);
    check_err(what, dE, g, nE, TOL);
    check_guard(what, dE, nE);

    // Accumulation, and the same bits for any thread count (colliding rows are summed in token order).
    float *start = rand_f(nE, 1.0f);
    float *dE1 = guarded_from(start, nE), *dE3 = guarded_from(start, nE);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    be->embedding_bwd(be, dE1, W, tok, N, D);
    be->embedding_bwd(be, dE1, W, tok, N, D);
    omp_set_num_threads(3);
    be->embedding_bwd(be, dE3, W, tok, N, D);
    be->embedding_bwd(be, dE3, W, tok, N, D);
    omp_set_num_threads(threads);
    double *want = twice_from(start, g, nE);
    check_err(what, dE1, want, nE, TOL);
    TU_CHECK(same_bits(dE1, dE3, nE), "%s: bwd depends on the thread count", what);
    check_guard(what, dE1, nE);
    check_guard(what, dE3, nE);

    free(tok); free(E); free(W); free(Ed); free(g); free(start); free(want);
    tu_guarded_free(out); tu_guarded_free(dE); tu_guarded_free(dE1); tu_guarded_free(dE3);
}

static void test_embedding(void) {
    test_embedding_case(1, 1, 1);
    test_embedding_case(11, 9, 13);
    test_embedding_case(50, 40, 71);
    test_embedding_case(7, 64, 130);
}

// ---------------------------------------------------------------- rmsnorm

typedef struct { int N, groups, C; double eps; double *x, *w; const float *W; double *out, *rstd; } rms_ctx;

static void rms_ref(rms_ctx *c) {
    long row = (long)c->groups * c->C;
    for (int n = 0; n < c->N; n++)
        for (int gi = 0; gi < c->groups; gi++) {
            const double *xs = c->x + n * row + (long)gi * c->C;
            double ss = 0;
            for (int k = 0; k < c->C; k++) ss += xs[k] * xs[k];
            double r = 1.0 / sqrt(ss / c->C + c->eps);
            c->rstd[(long)n * c->groups + gi] = r;
            for (int k = 0; k < c->C; k++) c->out[n * row + (long)gi * c->C + k] = xs[k] * r * c->w[(long)gi * c->C + k];
        }
}

static double rms_loss(void *p) {
    rms_ctx *c = p;
    rms_ref(c);
    return dot_w(c->out, c->W, (size_t)c->N * c->groups * c->C);
}

static void test_rmsnorm_case(int N, int groups, int C, float xsd, float eps) {
    char what[96];
    snprintf(what, sizeof what, "rmsnorm N=%d groups=%d C=%d", N, groups, C);
    size_t nx = (size_t)N * groups * C, nw = (size_t)groups * C, nr = (size_t)N * groups;
    float *x = rand_f(nx, xsd), *w = rand_f(nw, 0.3f), *W = rand_f(nx, 1.0f);
    for (size_t i = 0; i < nw; i++) w[i] += 1.0f;

    float *out = tu_guarded_new(nx), *rstd = tu_guarded_new(nr);
    be->rmsnorm_fwd(be, out, rstd, x, w, N, groups, C, eps);
    double *xd = to_d(x, nx), *wd = to_d(w, nw);
    double *outd = malloc(nx * sizeof(double)), *rstdd = malloc(nr * sizeof(double));
    rms_ctx ctx = {N, groups, C, eps, xd, wd, W, outd, rstdd};
    rms_ref(&ctx);
    check_err(what, out, outd, nx, TOL);
    check_err(what, rstd, rstdd, nr, TOL);
    check_guard(what, out, nx);
    check_guard(what, rstd, nr);

    double *gx = malloc(nx * sizeof(double)), *gw = malloc(nw * sizeof(double));
    fd_grad(rms_loss, &ctx, xd, nx, gx);
    fd_grad(rms_loss, &ctx, wd, nw, gw);
    float *dx = guarded_from(NULL, nx), *dw = guarded_from(NULL, nw);
    be->rmsnorm_bwd(be, dx, dw, W, x, w, rstd, N, groups, C);
    check_err(what, dx, gx, nx, TOL);
    check_err(what, dw, gw, nw, TOL);
    check_guard(what, dx, nx);
    check_guard(what, dw, nw);

    float *sx = rand_f(nx, 1.0f), *sw = rand_f(nw, 1.0f);
    float *dx1 = guarded_from(sx, nx), *dw1 = guarded_from(sw, nw);
    float *dx3 = guarded_from(sx, nx), *dw3 = guarded_from(sw, nw);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    be->rmsnorm_bwd(be, dx1, dw1, W, x, w, rstd, N, groups, C);
    be->rmsnorm_bwd(be, dx1, dw1, W, x, w, rstd, N, groups, C);
    omp_set_num_threads(3);
    be->rmsnorm_bwd(be, dx3, dw3, W, x, w, rstd, N, groups, C);
    be->rmsnorm_bwd(be, dx3, dw3, W, x, w, rstd, N, groups, C);
    omp_set_num_threads(threads);
    double *wantx = twice_from(sx, gx, nx), *wantw = twice_from(sw, gw, nw);
    check_err(what, dx1, wantx, nx, TOL);
    check_err(what, dw1, wantw, nw, TOL);
    TU_CHECK(same_bits(dx1, dx3, nx) && same_bits(dw1, dw3, nw), "%s: bwd depends on the thread count", what);
    check_guard(what, dx1, nx);
    check_guard(what, dw1, nw);

    free(x); free(w); free(W); free(xd); free(wd); free(outd); free(rstdd); free(gx); free(gw);
    free(sx); free(sw); free(wantx); free(wantw);
    tu_guarded_free(out); tu_guarded_free(rstd); tu_guarded_free(dx); tu_guarded_free(dw);
    tu_guarded_free(dx1); tu_guarded_free(dw1); tu_guarded_free(dx3); tu_guarded_free(dw3);
}

static void test_rmsnorm(void) {
    // C = 1 makes out = x/|x| w, whose gradient is ~eps / x^2: a tiny eps would leave only fp32
    // cancellation noise to compare, so that case uses a large one.
    test_rmsnorm_case(1, 1, 1, 1.0f, 0.5f);
    test_rmsnorm_case(1, 1, 8, 1.0f, 1e-6f);
    test_rmsnorm_case(5, 2, 7, 1.5f, 1e-6f);
    test_rmsnorm_case(7, 3, 33, 20.0f, 1e-6f);
    test_rmsnorm_case(16, 1, 130, 0.05f, 1e-6f);
}

// ---------------------------------------------------------------- rope

typedef struct { int N, T, pos0, heads, row_stride, head_stride, offset, rot_dim; float theta; } rope_case;

// Rotates x (the whole [N, row_stride] buffer) in double; dir = -1 applies the inverse.
static void rope_ref(const rope_case *rc, double *x, int dir) {
    int half = rc->rot_dim / 2;
    for (int n = 0; n < rc->N; n++)
        for (int hd = 0; hd < rc->heads; hd++) {
            double *u = x + (long)n * rc->row_stride + (long)hd * rc->head_stride + rc->offset;
            for (int i = 0; i < half; i++) {
                double a = (double)(rc->pos0 + n % rc->T) * pow(rc->theta, -2.0 * i / rc->rot_dim);
                double c = cos(a), s = dir * sin(a);
                double u0 = u[i], u1 = u[i + half];
                u[i] = u0 * c - u1 * s;
                u[i + half] = u1 * c + u0 * s;
            }
        }
}

typedef struct { const rope_case *rc; double *x, *tmp; const float *W; size_t n; } rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    memcpy(c->tmp, c->x, c->n * sizeof(double));
    rope_ref(c->rc, c->tmp, 1);
    return dot_w(c->tmp, c->W, c->n);
}

static void test_rope_case(const rope_case *rc) {
    char what[160];
    snprintf(what, sizeof what, "rope N=%d T=%d pos0=%d heads=%d rs=%d hs=%d off=%d rot=%d theta=%g", rc->N, rc->T,
             rc->pos0, rc->heads, rc->row_stride, rc->head_stride, rc->offset, rc->rot_dim, rc->theta);
    size_t n = (size_t)rc->N * rc->row_stride;
    char *rot = calloc(n, 1);  // which elements the op may change
    for (int r = 0; r < rc->N; r++)
        for (int hd = 0; hd < rc->heads; hd++)
            for (int i = 0; i < rc->rot_dim; i++)
                rot[(long)r * rc->row_stride + (long)hd * rc->head_stride + rc->offset + i] = 1;
    float *x0 = rand_f(n, 1.0f), *W = rand_f(n, 1.0f);

    float *x = guarded_from(x0, n);
    be->rope_fwd(be, x, rc->N, rc->T, rc->pos0, rc->heads, rc->row_stride, rc->head_stride, rc->offset, rc->rot_dim,
                 rc->theta);
    double *ref = to_d(x0, n);
    rope_ref(rc, ref, 1);
    check_err(what, x, ref, n, TOL);
    size_t touched = 0;
    for (size_t i = 0; i < n; i++)
        if (!rot[i] && !same_bits(&x[i], &x0[i], 1)) touched++;
    TU_CHECK(touched == 0, "%s: %zu elements outside the rotated parts changed", what, touched);
    check_guard(what, x, n);

    // The backward is the transpose: applied after the forward it restores the input.
    be->rope_bwd(be, x, rc->N, rc->T, rc->pos0, rc->heads, rc->row_stride, rc->head_stride, rc->offset, rc->rot_dim,
                 rc->theta);
    double *x0d = to_d(x0, n);
    check_err(what, x, x0d, n, TOL);

    // d/dx of sum(rope(x) * W), elements that are not rotated included (their gradient is W itself).
    double *g = malloc(n * sizeof(double)), *tmp = malloc(n * sizeof(double));
    rope_ctx ctx = {rc, x0d, tmp, W, n};
    fd_grad(rope_loss, &ctx, x0d, n, g);
    float *dx = guarded_from(W, n);
    be->rope_bwd(be, dx, rc->N, rc->T, rc->pos0, rc->heads, rc->row_stride, rc->head_stride, rc->offset,
                 rc->rot_dim, rc->theta);
    check_err(what, dx, g, n, TOL);
    check_guard(what, dx, n);

    free(rot); free(x0); free(W); free(ref); free(x0d); free(g); free(tmp);
    tu_guarded_free(x); tu_guarded_free(dx);
}

static void test_rope(void) {
    static const rope_case cases[] = {
        {1, 1, 0, 1, 8, 8, 0, 8, 10000.0f},           // position 0: identity
        {6, 3, 0, 2, 16, 8, 0, 8, 10000.0f},          // two sequences, full head
        {5, 5, 7, 3, 40, 12, 4, 6, 10000.0f},         // rot_dim < head size, offset, padded rows, pos0
        {8, 4, 3, 3, 72, 24, 16, 8, 500000.0f},       // latent query layout: rope on the last d_r of a head
        {7, 7, 0, 1, 8, 0, 0, 8, 10000.0f},           // the single shared rope key
        {4, 2, 65530, 2, 128, 64, 0, 64, 10000.0f},   // positions near 65536: angles must be exact
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_rope_case(&cases[i]);
}

// ---------------------------------------------------------------- swiglu

typedef struct { size_t n; double *gate, *up; const float *W; } swiglu_ctx;

static double silu(double x) { return x / (1.0 + exp(-x)); }

static double swiglu_loss(void *p) {
    swiglu_ctx *c = p;
    double s = 0;
    for (size_t i = 0; i < c->n; i++) s += silu(c->gate[i]) * c->up[i] * c->W[i];
    return s;
}

static void test_swiglu_case(int N, int I) {
    char what[64];
    snprintf(what, sizeof what, "swiglu N=%d I=%d", N, I);
    size_t n = (size_t)N * I;
    float *gate = rand_f(n, 3.0f), *up = rand_f(n, 1.0f), *W = rand_f(n, 1.0f);
    if (n >= 3) { gate[1] = -100.0f; gate[2] = 90.0f; }  // exp overflows in float on one side

    float *out = tu_guarded_new(n);
    be->swiglu_fwd(be, out, gate, up, N, I);
    double *ref = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) ref[i] = silu(gate[i]) * up[i];
    check_err(what, out, ref, n, TOL);
    check_guard(what, out, n);

    double *gd = to_d(gate, n), *ud = to_d(up, n);
    double *gg = malloc(n * sizeof(double)), *gu = malloc(n * sizeof(double));
    swiglu_ctx ctx = {n, gd, ud, W};
    fd_grad(swiglu_loss, &ctx, gd, n, gg);
    fd_grad(swiglu_loss, &ctx, ud, n, gu);
    float *dg = guarded_from(NULL, n), *du = guarded_from(NULL, n);
    be->swiglu_bwd(be, dg, du, W, gate, up, N, I);
    check_err(what, dg, gg, n, TOL);
    check_err(what, du, gu, n, TOL);
    check_guard(what, dg, n);
    check_guard(what, du, n);

    float *sg = rand_f(n, 1.0f), *su = rand_f(n, 1.0f);
    float *dg2 = guarded_from(sg, n), *du2 = guarded_from(su, n);
    be->swiglu_bwd(be, dg2, du2, W, gate, up, N, I);
    be->swiglu_bwd(be, dg2, du2, W, gate, up, N, I);
    double *wg = twice_from(sg, gg, n), *wu = twice_from(su, gu, n);
    check_err(what, dg2, wg, n, TOL);
    check_err(what, du2, wu, n, TOL);
    check_guard(what, dg2, n);
    check_guard(what, du2, n);

    free(gate); free(up); free(W); free(ref); free(gd); free(ud); free(gg); free(gu);
    free(sg); free(su); free(wg); free(wu);
    tu_guarded_free(out); tu_guarded_free(dg); tu_guarded_free(du); tu_guarded_free(dg2); tu_guarded_free(du2);
}

static void test_swiglu(void) {
    test_swiglu_case(1, 1);
    test_swiglu_case(3, 17);
    test_swiglu_case(8, 64);
}

// ---------------------------------------------------------------- copy_heads

typedef struct {
    const char *name;
    int rows, heads, cols;
    int dst_rs, dst_hs, dst_off, src_rs, src_hs, src_off;
    int accumulate;
} copy_case;

// dst holds rows * dst_rs floats: NaN where the op writes without accumulating, so a skipped element
// shows, and random values elsewhere, which must be kept (padding) or added to (accumulate).
static void test_copy_heads_case(const copy_case *cc) {
    size_t nd = (size_t)cc->rows * cc->dst_rs, ns = (size_t)cc->rows * cc->src_rs;
    float *src = rand_f(ns, 1.0f);
    float *dst = tu_guarded_new(nd);
    tu_fill_normal(dst, nd, &rng, 1.0f);
    if (!cc->accumulate)
        for (int r = 0; r < cc->rows; r++)
            for (int i = 0; i < cc->heads; i++)
                for (int c = 0; c < cc->cols; c++)
                    dst[(long)r * cc->dst_rs + (long)i * cc->dst_hs + cc->dst_off + c] = NAN;
    double *ref = to_d(dst, nd);
    for (int r = 0; r < cc->rows; r++)
        for (int i = 0; i < cc->heads; i++)
            for (int c = 0; c < cc->cols; c++) {
                long d = (long)r * cc->dst_rs + (long)i * cc->dst_hs + cc->dst_off + c;
                double s = src[(long)r * cc->src_rs + (long)i * cc->src_hs + cc->src_off + c];
                ref[d] = cc->accumulate ? ref[d] + s : s;
            }

    be->copy_heads(be, dst + cc->dst_off, cc->dst_rs, cc->dst_hs, src + cc->src_off, cc->src_rs, cc->src_hs,
                   cc->rows, cc->heads, cc->cols, cc->accumulate);
    // A copy is exact; an accumulated sum of a few terms in float is within a few ulp.
    double e = tu_rel_err(dst, ref, nd);
    TU_CHECK(cc->accumulate ? e <= 1e-6 : e == 0, "copy_heads %s: rel err %.3g", cc->name, e);
    check_guard(cc->name, dst, nd);
    free(src); free(ref);
    tu_guarded_free(dst);
}

static void test_copy_heads(void) {
    static const copy_case cases[] = {
        // name                   rows heads cols  dst_rs hs off  src_rs hs off  acc
        {"strided copy",           5,   3,   4,    20,    6, 1,   14,    4, 2,   0},
        {"broadcast src",          4,   3,   5,    15,    5, 0,    6,    0, 1,   0},
        {"sum over heads",         6,   4,   3,     3,    0, 0,   12,    3, 0,   1},
        {"accumulate per head",    3,   2,   7,    16,    8, 1,   14,    7, 0,   1},
        {"assemble [kn ; kr]",     5,   3,   4,    30,   10, 6,    4,    0, 0,   0},
        {"split d(kr) from dk",    5,   3,   4,     4,    0, 0,   30,   10, 6,   1},
        {"one row one head",       1,   1,   9,     9,    9, 0,    9,    9, 0,   0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_copy_heads_case(&cases[i]);
}

// ---------------------------------------------------------------- xent

typedef struct { int N, V; double *x; const int32_t *tgt; double scale; } xent_ctx;

static double xent_row_loss(const double *x, int V, int t) {
    double mx = -INFINITY, s = 0;
    for (int j = 0; j < V; j++) mx = fmax(mx, x[j]);
    for (int j = 0; j < V; j++) s += exp(x[j] - mx);
    return mx + log(s) - x[t];
}

static double xent_loss(void *p) {
    xent_ctx *c = p;
    double s = 0;
    for (int n = 0; n < c->N; n++)
        if (c->tgt[n] >= 0) s += xent_row_loss(c->x + (size_t)n * c->V, c->V, c->tgt[n]);
    return c->scale * s;
}

static void test_xent_case(int N, int V, float sd, int fd) {
    char what[64];
    snprintf(what, sizeof what, "xent N=%d V=%d", N, V);
    size_t n = (size_t)N * V;
    float *x = rand_f(n, sd);
    int32_t *tgt = malloc(N * sizeof(int32_t));
    int valid = 0;
    for (int r = 0; r < N; r++) {
        tgt[r] = (int32_t)asa_rng_below(&rng, V);
        if (N > 1 && r % 3 == 1) tgt[r] = r % 2 ? -1 : -100;  // ignored positions
        valid += tgt[r] >= 0;
    }
    if (N >= 3) {  // rows far from zero: the log-softmax must be shifted by the row maximum
        for (int j = 0; j < V; j++) { x[j] += 1000.0f; x[2 * V + j] -= 1000.0f; }
    }
    float scale = 1.0f / (valid ? valid : 1);

    double *xd = to_d(x, n);
    double *lref = malloc(N * sizeof(double)), *dref = malloc(n * sizeof(double));
    for (int r = 0; r < N; r++) {
        const double *xr = xd + (size_t)r * V;
        lref[r] = tgt[r] >= 0 ? xent_row_loss(xr, V, tgt[r]) : 0.0;
        double lse = tgt[r] >= 0 ? lref[r] + xr[tgt[r]] : 0.0;
        for (int j = 0; j < V; j++)
            dref[(size_t)r * V + j] = tgt[r] >= 0 ? scale * (exp(xr[j] - lse) - (j == tgt[r])) : 0.0;
    }

    float *loss = tu_guarded_new(N);
    be->xent_fwd_bwd(be, loss, NULL, x, tgt, N, V, scale);
    check_err(what, loss, lref, N, TOL);
    check_guard(what, loss, N);

    float *loss2 = tu_guarded_new(N), *dx = tu_guarded_new(n);
    be->xent_fwd_bwd(be, loss2, dx, x, tgt, N, V, scale);
    TU_CHECK(same_bits(loss, loss2, N), "%s: losses change when dlogits is asked for", what);
    check_err(what, dx, dref, n, TOL);
    check_guard(what, dx, n);
    if (fd) {
        double *g = malloc(n * sizeof(double));
        xent_ctx ctx = {N, V, xd, tgt, scale};
        fd_grad(xent_loss, &ctx, xd, n, g);
        check_err(what, dx, g, n, TOL);
        free(g);
    }

    // In place: dlogits overwriting logits gives the same bits as separate buffers.
    float *xa = guarded_from(x, n), *loss3 = tu_guarded_new(N);
    be->xent_fwd_bwd(be, loss3, xa, xa, tgt, N, V, scale);
    TU_CHECK(same_bits(xa, dx, n) && same_bits(loss3, loss, N), "%s: aliased dlogits differ", what);
    check_guard(what, xa, n);

    free(x); free(tgt); free(xd); free(lref); free(dref);
    tu_guarded_free(loss); tu_guarded_free(loss2); tu_guarded_free(dx); tu_guarded_free(xa);
    tu_guarded_free(loss3);
}

static void test_xent(void) {
    test_xent_case(1, 1, 1.0f, 1);
    test_xent_case(1, 5, 1.0f, 1);
    test_xent_case(4, 7, 2.0f, 1);
    test_xent_case(6, 301, 5.0f, 1);
    test_xent_case(5, 50304, 3.0f, 0);  // GPT-2 padded vocabulary; the analytic reference only (FD too slow)
}

// ---------------------------------------------------------------- gate

typedef struct { int nbr, N, h, dv; double *glog, *br[3]; const float *W; } gate_ctx;

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

static void gate_ref(const gate_ctx *c, double *out) {
    for (int n = 0; n < c->N; n++)
        for (int i = 0; i < c->h; i++)
            for (int k = 0; k < c->dv; k++) {
                long o = ((long)n * c->h + i) * c->dv + k;
                double s = 0;
                for (int b = 0; b < c->nbr; b++) s += sigm(c->glog[((long)n * c->h + i) * c->nbr + b]) * c->br[b][o];
                out[o] = s;
            }
}

static double gate_loss(void *p) {
    gate_ctx *c = p;
    size_t n = (size_t)c->N * c->h * c->dv;
    double *out = malloc(n * sizeof(double));
    gate_ref(c, out);
    double s = dot_w(out, c->W, n);
    free(out);
    return s;
}

static void test_gate_case(int nbr, int N, int h, int dv) {
    char what[64];
    snprintf(what, sizeof what, "gate nbr=%d N=%d h=%d dv=%d", nbr, N, h, dv);
    size_t no = (size_t)N * h * dv, ng = (size_t)N * h * nbr;
    float *glog = rand_f(ng, 2.0f), *W = rand_f(no, 1.0f);
    float *br[3];
    for (int b = 0; b < nbr; b++) br[b] = rand_f(no, 1.0f);

    float *out = tu_guarded_new(no);
    be->gate_fwd(be, out, glog, (const void *const *)br, nbr, N, h, dv);
    gate_ctx ctx = {nbr, N, h, dv, to_d(glog, ng), {0}, W};
    for (int b = 0; b < nbr; b++) ctx.br[b] = to_d(br[b], no);
    double *ref = malloc(no * sizeof(double));
    gate_ref(&ctx, ref);
    check_err(what, out, ref, no, TOL);
    check_guard(what, out, no);

    double *gg = malloc(ng * sizeof(double)), *gb[3];
    fd_grad(gate_loss, &ctx, ctx.glog, ng, gg);
    for (int b = 0; b < nbr; b++) {
        gb[b] = malloc(no * sizeof(double));
        fd_grad(gate_loss, &ctx, ctx.br[b], no, gb[b]);
    }
    float *dglog = guarded_from(NULL, ng), *dbr[3], *drow[3];
    size_t nr = (size_t)N * h;
    for (int b = 0; b < nbr; b++) dbr[b] = guarded_from(NULL, no), drow[b] = guarded_from(NULL, nr);
    be->gate_bwd(be, dglog, (void *const *)dbr, drow, W, glog, (const void *const *)br, nbr, N, h, dv);
    check_err(what, dglog, gg, ng, TOL);
    check_guard(what, dglog, ng);
    double *drow_ref = malloc(nr * sizeof(double));
    for (int b = 0; b < nbr; b++) {
        check_err(what, dbr[b], gb[b], no, TOL);
        check_guard(what, dbr[b], no);
        // the branch attention's row dots: rowsum(dbr * br) = sigmoid(l_b) (W . br)
        for (size_t r = 0; r < nr; r++) {
            double d = 0;
            for (int k = 0; k < dv; k++) d += (double)W[r * dv + k] * br[b][r * dv + k];
            drow_ref[r] = sigm(ctx.glog[r * nbr + b]) * d;
        }
        check_err(what, drow[b], drow_ref, nr, TOL);
        check_guard(what, drow[b], nr);
    }
    free(drow_ref);

    float *sg = rand_f(ng, 1.0f), *sb[3], *dbr2[3];
    float *dglog2 = guarded_from(sg, ng);
    for (int b = 0; b < nbr; b++) { sb[b] = rand_f(no, 1.0f); dbr2[b] = guarded_from(sb[b], no); }
    // dglog accumulates; the branch gradients are written over whatever the buffers held
    be->gate_bwd(be, dglog2, (void *const *)dbr2, NULL, W, glog, (const void *const *)br, nbr, N, h, dv);
    be->gate_bwd(be, dglog2, (void *const *)dbr2, NULL, W, glog, (const void *const *)br, nbr, N, h, dv);
    double *want = twice_from(sg, gg, ng);
    check_err(what, dglog2, want, ng, TOL);
    check_guard(what, dglog2, ng);
    free(want);
    for (int b = 0; b < nbr; b++) {
        check_err(what, dbr2[b], gb[b], no, TOL);
        check_guard(what, dbr2[b], no);
    }

    for (int b = 0; b < nbr; b++) {
        free(br[b]); free(ctx.br[b]); free(gb[b]); free(sb[b]);
        tu_guarded_free(dbr[b]); tu_guarded_free(dbr2[b]); tu_guarded_free(drow[b]);
    }
    free(glog); free(W); free(ctx.glog); free(ref); free(gg); free(sg);
    tu_guarded_free(out); tu_guarded_free(dglog); tu_guarded_free(dglog2);
}

static void test_gate(void) {
    test_gate_case(2, 1, 1, 1);
    test_gate_case(2, 5, 3, 7);
    test_gate_case(3, 4, 4, 16);
    test_gate_case(3, 1, 2, 5);
}

// ---------------------------------------------------------------- adamw

static void test_adamw_case(float lr, float wd, float grad_scale, float eps) {
    char what[96];
    snprintf(what, sizeof what, "adamw lr=%g wd=%g grad_scale=%g eps=%g", lr, wd, grad_scale, eps);
    const size_t n = 1037;
    const float beta1 = 0.9f, beta2 = 0.95f;
    float *p0 = rand_f(n, 1.0f);
    float *p = guarded_from(p0, n), *m = guarded_from(NULL, n), *v = guarded_from(NULL, n);
    double *pd = to_d(p0, n), *md = calloc(n, sizeof(double)), *vd = calloc(n, sizeof(double));
    for (int step = 1; step <= 3; step++) {
        float *g = rand_f(n, 0.1f);
        be->adamw(be, p, g, m, v, n, lr, beta1, beta2, eps, wd, step, grad_scale);
        double bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step);
        for (size_t i = 0; i < n; i++) {
            double gi = (double)g[i] * grad_scale;
            md[i] = beta1 * md[i] + (1 - (double)beta1) * gi;
            vd[i] = beta2 * vd[i] + (1 - (double)beta2) * gi * gi;
            pd[i] = pd[i] * (1 - (double)lr * wd) - lr * (md[i] / bc1) / (sqrt(vd[i] / bc2) + eps);
        }
        free(g);
    }
    check_err(what, p, pd, n, TOL);
    check_err(what, m, md, n, TOL);
    check_err(what, v, vd, n, TOL);
    check_guard(what, p, n);
    check_guard(what, m, n);
    check_guard(what, v, n);
    free(p0); free(pd); free(md); free(vd);
    tu_guarded_free(p); tu_guarded_free(m); tu_guarded_free(v);
}

static void test_adamw(void) {
    test_adamw_case(1e-2f, 0.1f, 0.5f, 1e-8f);
    test_adamw_case(3e-4f, 0.0f, 1.0f, 1e-8f);
    test_adamw_case(1e-1f, 0.01f, 0.25f, 1e-3f);
}

// ---------------------------------------------------------------- reductions and updates

static void test_sum_squares(void) {
    static const size_t sizes[] = {0, 1, 3, 64, 65, 1000, (1u << 20) + 7};
    int threads = omp_get_max_threads();
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        float *x = rand_f(n, 2.0f);
        double ref = 0;
        for (size_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
        double got[3];
        for (int t = 1; t <= 3; t++) {
            omp_set_num_threads(t);
            got[t - 1] = be->sum_squares(be, x, ASA_F32, n);
        }
        omp_set_num_threads(threads);
        // Squares of floats are exact in double; only the order of the additions differs.
        TU_CHECK(fabs(got[0] - ref) <= 1e-12 * ref, "sum_squares n=%zu: %.17g vs %.17g", n, got[0], ref);
        TU_CHECK(got[0] == got[1] && got[1] == got[2], "sum_squares n=%zu depends on the thread count", n);
        free(x);
    }
}

static void test_scale_add(void) {
    static const size_t sizes[] = {0, 1, 1001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        float *x0 = rand_f(n, 1.0f), *y0 = rand_f(n, 1.0f);
        double *ref = malloc((n + 1) * sizeof(double));
        float *x = guarded_from(x0, n), *y = guarded_from(y0, n);
        be->scale(be, x, n, -0.37f);
        for (size_t i = 0; i < n; i++) ref[i] = x0[i] * (double)-0.37f;
        check_err("scale", x, ref, n, 1e-7);  // one rounding per element
        check_guard("scale", x, n);
        be->add(be, y, x0, n);
        for (size_t i = 0; i < n; i++) ref[i] = (double)y0[i] + x0[i];
        check_err("add", y, ref, n, 1e-7);
        check_guard("add", y, n);
        free(x0); free(y0); free(ref);
        tu_guarded_free(x); tu_guarded_free(y);
    }
}

// The small shapes above run below CPU_PAR_MIN_WORK, on one thread whatever the setting; these shapes
// are large enough to run threaded, so races and thread-count dependence in the backward ops show.
static void test_threaded_determinism(void) {
    const int N = 64, D = 1100, V = 40, groups = 2, C = 550;
    int32_t *tok = malloc(sizeof(int32_t) * N);
    for (int n = 0; n < N; n++) tok[n] = (int32_t)asa_rng_below(&rng, V);  // many colliding rows
    float *W = rand_f((size_t)N * D, 1.0f), *x = rand_f((size_t)N * D, 1.0f), *w = rand_f(D, 1.0f);
    float *out = guarded_from(NULL, (size_t)N * D), *rstd = guarded_from(NULL, (size_t)N * groups);
    be->rmsnorm_fwd(be, out, rstd, x, w, N, groups, C, 1e-6f);
    float *dE[2], *dx[2], *dw[2];
    int threads = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k ? 3 : 1);
        dE[k] = guarded_from(NULL, (size_t)V * D);
        dx[k] = guarded_from(NULL, (size_t)N * D);
        dw[k] = guarded_from(NULL, D);
        be->embedding_bwd(be, dE[k], W, tok, N, D);
        be->rmsnorm_bwd(be, dx[k], dw[k], W, x, w, rstd, N, groups, C);
    }
    omp_set_num_threads(threads);
    TU_CHECK(same_bits(dE[0], dE[1], (size_t)V * D), "embedding_bwd %dx%d: 1 and 3 threads differ", N, D);
    TU_CHECK(same_bits(dx[0], dx[1], (size_t)N * D) && same_bits(dw[0], dw[1], D),
             "rmsnorm_bwd %dx%d: 1 and 3 threads differ", N, D);
    for (int k = 0; k < 2; k++) {
        check_guard("embedding_bwd threaded", dE[k], (size_t)V * D);
        check_guard("rmsnorm_bwd threaded", dx[k], (size_t)N * D);
        tu_guarded_free(dE[k]); tu_guarded_free(dx[k]); tu_guarded_free(dw[k]);
    }
    free(tok); free(W); free(x); free(w);
    tu_guarded_free(out); tu_guarded_free(rstd);
}

int main(void) {
    asa_rng_seed(&rng, 1234);
    be = asa_backend_cpu_new();
    test_gemm();
    test_embedding();
    test_rmsnorm();
    test_threaded_determinism();
    test_rope();
    test_swiglu();
    test_copy_heads();
    test_xent();
    test_gate();
    test_adamw();
    test_sum_squares();
    test_scale_add();
    asa_backend_free(be);
    return tu_finish("test_ops_dense");
}
