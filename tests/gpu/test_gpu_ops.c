// Every op of the CUDA backend against the CPU backend on the same random inputs, in each precision mode.
// Device tensors sit between guard zones (a write outside a tensor fails); forward outputs start
// NaN-poisoned (an element the op does not write fails the comparison); gradients start from the same
// random values on both sides (backward ops accumulate).
// fp32 mode: tolerances 1e-5 relative (norm-wise) where both sides add the same terms in the same or a
// similarly short order (fp32 rounding is 6e-8 per operation); 1e-4 where a gradient sums hundreds of
// products in a different order (dk/dv over every query and head that sees a key). Top-k block lists
// must equal the CPU's exactly: scores use the CPU's dot product order, and random inputs have no exact
// ties.
// tf32 mode: gemm (tensor cores, operands rounded to TF32, fp32 sums): tolerance 2e-3, as a TF32 operand
// carries a relative error up to 2^-11 = 4.9e-4 (rms about 2e-4, so about 3e-4 per product, and the fp32
// sum of random-sign products keeps that relative size; 3e-4 was measured on the H100). A large product
// must also show an error above 1e-4, which fp32 arithmetic (~1e-7) cannot: the mode is really in use.
// The tensor-core attention kernels: see test_slc_tc and test_dense_tc.
// bf16 mode: every op again. Inputs are drawn on the host and rounded to bf16 there (bf16_round), so the
// CPU reference runs in fp32 on exactly the GPU's inputs; outputs come back through act_to_host.
// Tolerance TOL_BF16 = 1e-2 for activation outputs: each stored value carries one bf16 rounding (up to
// 2^-9 = 2e-3 relative, rms about 1e-3); inside attention the tensor cores round probabilities and score
// gradients to TF32 (~3e-4); nothing else differs from the fp32 / tf32 kernels. Accumulated gradients
// are rounded once per +=, so their increments are compared with an allowance for that rounding
// (expect_increment). fp32 outputs (lse, rstd, losses, parameter gradients) computed from the rounded
// inputs keep the fp32 tolerances. Block lists: select_topk's dots run on the bf16 tensor cores (exact
// products, another summation order), so a list may differ from the CPU's at a near-tie only (see
// topk_list_diff); select_decode keeps the CPU's sums and its lists stay exact.
// Without a GPU the program prints "SKIPPED: no CUDA device" and exits 77 (ctest SKIP_RETURN_CODE).
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "testutil.h"

#define TOL_ELEM 1e-5
#define TOL_LONG 1e-4
#define TOL_TF32 2e-3
#define TOL_BF16 1e-2

// The CPU reference and the three CUDA modes. `gpu` is the mode under test (fp32, then bf16): device
// tensors are allocated and transferred through it, activation tensors in its storage type.
static asa_backend *cpu, *gpu, *gpu_fp32, *gpu_tf32, *gpu_bf16;
static const char *mode = "fp32";  // precision of the op under test, for messages
static char where[200];            // the test under way, for guard-zone messages
static double worst_bf16[2];       // largest bf16-mode error of an output and of a gradient increment
static int reproducible = 1;       // backward ops must give identical bits run to run (not cuDNN's dQ)
static asa_rng rng;

static int bf16_mode(void) { return gpu->act == ASA_BF16; }
static size_t esz(void) { return asa_dtype_size(gpu->act); }

// The bf16 value nearest to x, ties to even (as the backend's stores round); NaN stays NaN.
static float bf16_round(float x) {
    if (isnan(x)) return x;
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof u);
    return x;
}
static float bf16_widen(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
static int same_bits(float a, float b) { return isnan(a) ? isnan(b) : memcmp(&a, &b, sizeof a) == 0; }

// Host values bound for an activation tensor are rounded in the bf16 mode, so that the CPU reference
// sees exactly the GPU's inputs.
static void round_act(float *x, size_t n) {
    if (bf16_mode())
        for (size_t i = 0; i < n; i++) x[i] = bf16_round(x[i]);
}
static float *h_rand32(size_t n, float sd) {  // an fp32 tensor's values (weights, optimizer state)
    float *p = malloc((n ? n : 1) * sizeof(float));
    tu_fill_normal(p, n, &rng, sd);
    return p;
}
static float *h_rand(size_t n, float sd) {  // an activation tensor's values
    float *p = h_rand32(n, sd);
    round_act(p, n);
    return p;
}
static float *h_dup(const float *x, size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    memcpy(p, x, n * sizeof(float));
    return p;
}

// Every device tensor lies between two guard zones of GUARD bytes of GUARD_BYTE, checked by d_free: a
// write outside the tensor (an fp32 store into a bf16 tensor, say) fails. 256 bytes keep the tensor's
// alignment.
#define GUARD 256
#define GUARD_BYTE 0xa5
#define MAX_LIVE 256
static struct {
    char *base;
    size_t bytes;
} live[MAX_LIVE];
static int nlive;

static void *d_alloc(size_t bytes) {
    unsigned char pat[GUARD];
    memset(pat, GUARD_BYTE, sizeof pat);
    char *base = gpu->alloc(gpu, bytes + 2 * GUARD);
    gpu->to_device(gpu, base, pat, GUARD);
    gpu->to_device(gpu, base + GUARD + bytes, pat, GUARD);
    ASA_CHECK(nlive < MAX_LIVE);
    live[nlive].base = base, live[nlive].bytes = bytes;
    nlive++;
    return base + GUARD;
}
static void d_free(void *p) {
    int i = 0;
    while (i < nlive && live[i].base + GUARD != (char *)p) i++;
    ASA_CHECK(i < nlive);
    unsigned char z[2 * GUARD];
    gpu->to_host(gpu, z, live[i].base, GUARD);
    gpu->to_host(gpu, z + GUARD, live[i].base + GUARD + live[i].bytes, GUARD);
    size_t bad = 0;
    for (int e = 0; e < 2 * GUARD; e++) bad += z[e] != GUARD_BYTE;
    TU_CHECK(bad == 0, "%s: %zu guard bytes around a device tensor of %zu bytes overwritten", where, bad,
             live[i].bytes);
    gpu->free(gpu, live[i].base);
    live[i] = live[--nlive];
}

// fp32 and int32 tensors: bytes as they are.
static void *d_raw(const void *h, size_t bytes) {
    void *p = d_alloc(bytes);
    gpu->to_device(gpu, p, h, bytes);
    return p;
}
static void d_f32_poison(void *d, size_t n) {  // also for block lists: NaN's bits are no block index
    float *h = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    gpu->to_device(gpu, d, h, n * sizeof(float));
    free(h);
}
static float *d_f32_nan(size_t n) {
    float *d = d_alloc(n * sizeof(float));
    d_f32_poison(d, n);
    return d;
}
// Activation tensors, in the storage type of `gpu`, from host values already rounded (h_rand).
static void *d_act(const float *h, size_t n) {
    void *p = d_alloc(n * esz());
    gpu->act_to_device(gpu, p, h, n);
    return p;
}
static void d_act_poison(void *d, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    gpu->act_to_device(gpu, d, h, n);
    free(h);
}
static void *d_act_nan(size_t n) {
    void *d = d_alloc(n * esz());
    d_act_poison(d, n);
    return d;
}
// Both sides continue from identical values: the CPU's, rounded in place in the bf16 mode.
static void d_act_set(void *d, float *h, size_t n) {
    round_act(h, n);
    gpu->act_to_device(gpu, d, h, n);
}
// Before an accumulating op: d_act_set, and init keeps the common starting values for expect_accum.
static void d_sync(void *d, float *h, float *init, size_t n) {
    d_act_set(d, h, n);
    memcpy(init, h, n * sizeof(float));
}
static float *h_act(const void *dev, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    gpu->act_to_host(gpu, h, dev, n);
    return h;
}

static double tol_act(double tol) { return bf16_mode() ? TOL_BF16 : tol; }
static void note_bf16(int kind, double err) {
    if (bf16_mode() && err > worst_bf16[kind]) worst_bf16[kind] = err;
}

// An activation output against the CPU's, norm-wise: tol in fp32 storage, TOL_BF16 in bf16.
static double expect_act(const char *what, const void *dev, const float *ref, size_t n, double tol) {
    float *h = h_act(dev, n);
    const double t = tol_act(tol), err = tu_rel_err_f(h, ref, n);
    TU_CHECK(err < t, "%s %s: relative error %.3e (tolerance %.0e)", mode, what, err, t);
    note_bf16(0, err);
    free(h);
    return err;
}
// An fp32 tensor: the same tolerance in every mode (its inputs are the same values on both sides).
static void expect_f32(const char *what, const float *dev, const float *ref, size_t n, double tol) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    gpu->to_host(gpu, h, dev, n * sizeof(float));
    double err = tu_rel_err_f(h, ref, n);
    TU_CHECK(err < tol, "%s %s: relative error %.3e (tolerance %.0e)", mode, what, err, tol);
    free(h);
}

// The increment a backward op added to `init` (the common starting gradient), GPU against CPU: comparing
// the totals would let the starting values hide the increment's error. Returns the relative error.
// bf16 storage: the total is rounded once per += (up to 2^-9 of each element), which the increment
// inherits; the bound is TOL_BF16 plus two such roundings of the total, 2^-8 ||total|| / ||increment||.
static double expect_increment(const char *what, const void *dev, const float *init, const float *ref, size_t n,
                               double tol) {
    float *h = h_act(dev, n), *r = malloc((n ? n : 1) * sizeof(float));
    double ss_ref = 0, ss_inc = 0;
    for (size_t i = 0; i < n; i++) {
        h[i] -= init[i], r[i] = ref[i] - init[i];
        ss_ref += (double)ref[i] * ref[i], ss_inc += (double)r[i] * r[i];
    }
    const double err = tu_rel_err_f(h, r, n);
    const double bound = bf16_mode() ? TOL_BF16 + ldexp(1, -8) * sqrt(ss_ref / fmax(ss_inc, 1e-300)) : tol;
    TU_CHECK(err < bound, "%s %s: increment's relative error %.3e (bound %.1e)", mode, what, err, bound);
    note_bf16(1, err);
    free(h), free(r);
    return err;
}
// An activation gradient accumulated onto init: fp32 storage compares the totals within tol, bf16 the
// increments (expect_increment).
static void expect_accum(const char *what, const void *dev, const float *init, const float *ref, size_t n,
                         double tol) {
    if (bf16_mode()) expect_increment(what, dev, init, ref, n, tol);
    else expect_act(what, dev, ref, n, tol);
}
// bf16 results against the CPU's rounded to bf16: fp32 arithmetic (~1e-7 from the CPU before the store)
// rounds to the same bf16 value but for a flip in ~3e-5 of the elements (one bf16 step, ~2^-8), ~2e-5
// norm-wise; TF32 products (~2e-4) flip ~5% of them: ~8e-4. Tells the tensor cores' use in bf16 mode.
static double err_vs_rounded(const float *h, const float *ref, size_t n) {
    float *r = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) r[i] = bf16_round(ref[i]);
    const double err = tu_rel_err_f(h, r, n);
    free(r);
    return err;
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
    TU_CHECK(mism == 0, "%s %s: %zu rows -inf on one side only", mode, what, mism);
    TU_CHECK(err < tol, "%s %s: relative error %.3e", mode, what, err);
    free(h), free(a), free(b);
    return err;
}
static void expect_lse(const char *what, const float *dev, const float *ref, size_t n) {
    expect_lse_tol(what, dev, ref, n, TOL_ELEM);
}

// ---- dense ops ----

// C (type ct) from host values: fp32 bytes, or an activation tensor of `gpu`.
static void c_to_device(void *d, const float *h, size_t n, asa_dtype ct) {
    if (ct == ASA_F32) gpu->to_device(gpu, d, h, n * sizeof(float));
    else gpu->act_to_device(gpu, d, h, n);
}

// The product on g (gpu_fp32, gpu_tf32 or gpu_bf16, with `gpu` of g's storage type), C of type ct,
// against the CPU's; returns the relative error.
static double test_gemm(asa_backend *g, double tol, asa_dtype ct, int ta, int tb, int M, int N, int K, int pad,
                        int batch, int misalign, float beta) {
    const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const long sA = (long)(ta ? K : M) * lda + 3, sB = (long)(tb ? N : K) * ldb + 5, sC = (long)M * ldc + 7;
    const size_t nA = sA * batch + misalign, nB = sB * batch + misalign, nC = sC * batch + misalign;
    const size_t csz = asa_dtype_size(ct);
    char what[200];
    snprintf(what, sizeof what, "gemm %s C %s tA=%d tB=%d %dx%dx%d batch=%d beta=%g misalign=%d",
             asa_precision_name(g->precision), asa_dtype_name(ct), ta, tb, M, N, K, batch, beta, misalign);
    snprintf(where, sizeof where, "%s", what);
    float *A = h_rand(nA, 1), *B = h_rand(nB, 1), *C = h_rand(nC, 1);
    void *dA = d_act(A, nA), *dB = d_act(B, nB), *dC = d_alloc(nC * csz);
    c_to_device(dC, C, nC, ct);
    if (beta == 0.0f) {  // beta = 0 must ignore C: NaN where the product writes, zeros in the padding
        float *hn = calloc(nC, sizeof(float));
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) hn[misalign + b * sC + (long)i * ldc + j] = NAN;
        c_to_device(dC, hn, nC, ct);
        memset(C, 0, nC * 4);
        free(hn);
    }
    cpu->gemm(cpu, ta, tb, M, N, K, 0.7f, A + misalign, lda, sA, B + misalign, ldb, sB, beta, C + misalign, ASA_F32,
              ldc, sC, batch);
    g->gemm(g, ta, tb, M, N, K, 0.7f, asa_act_at(g, dA, misalign), lda, sA, asa_act_at(g, dB, misalign), ldb, sB,
            beta, (char *)dC + misalign * csz, ct, ldc, sC, batch);
    float *h = malloc(nC * sizeof(float));
    if (ct == ASA_F32) gpu->to_host(gpu, h, dC, nC * sizeof(float));
    else gpu->act_to_host(gpu, h, dC, nC);
    double err = tu_rel_err_f(h, C, nC);
    TU_CHECK(err < tol, "%s: relative error %.3e (tolerance %.0e)", what, err, tol);
    free(A), free(B), free(C), free(h);
    d_free(dA), d_free(dB), d_free(dC);
    return err;
}

// V = 3 makes runs of equal tokens longer than the backward's 128-entry steps; D 1100 spans five 256-column slices.
static void test_embedding(int V, int D, int N) {
    snprintf(where, sizeof where, "%s embedding %d x %d, %d tokens", mode, V, D, N);
    int32_t *tok = malloc((size_t)N * sizeof *tok);
    for (int i = 0; i < N; i++) tok[i] = (int32_t)asa_rng_below(&rng, V);
    float *E = h_rand32((size_t)V * D, 1), *out = h_rand((size_t)N * D, 1), *dE = h_rand32((size_t)V * D, 1);
    float *dout = h_rand((size_t)N * D, 1);
    int32_t *dtok = d_raw(tok, (size_t)N * sizeof *tok);
    float *dEm = d_raw(E, V * D * 4), *ddE = d_raw(dE, V * D * 4);
    void *dout_ = d_act_nan((size_t)N * D), *ddout = d_act(dout, (size_t)N * D);
    cpu->embedding_fwd(cpu, out, tok, E, N, D);
    gpu->embedding_fwd(gpu, dout_, dtok, dEm, N, D);
    expect_act("embedding_fwd", dout_, out, (size_t)N * D, TOL_ELEM);
    if (bf16_mode()) {  // rows of the fp32 table, each value rounded to its nearest bf16 (ties to even)
        float *h = h_act(dout_, (size_t)N * D);
        size_t off = 0;
        for (size_t i = 0; i < (size_t)N * D; i++) off += !same_bits(h[i], bf16_round(out[i]));
        TU_CHECK(off == 0, "bf16 embedding_fwd: %zu values are not the nearest bf16 of the weights", off);
        free(h);
    }
    cpu->embedding_bwd(cpu, dE, dout, tok, N, D);
    gpu->embedding_bwd(gpu, ddE, ddout, dtok, N, D);
    expect_f32("embedding_bwd", ddE, dE, (size_t)V * D, TOL_ELEM);  // same additions, same order
    free(E), free(out), free(dE), free(dout), free(tok);
    d_free(dtok), d_free(dEm), d_free(dout_), d_free(ddE), d_free(ddout);
}

static void test_rmsnorm(int N, int groups, int C) {
    const size_t n = (size_t)N * groups * C;
    snprintf(where, sizeof where, "%s rmsnorm %d x %d x %d", mode, N, groups, C);
    float *x = h_rand(n, 2), *w = h_rand32((size_t)groups * C, 1), *out = h_rand(n, 1);
    float *rstd = h_rand32((size_t)N * groups, 1), *dout = h_rand(n, 1), *dx = h_rand(n, 1);
    float *dw = h_rand32((size_t)groups * C, 1), *dx0 = h_dup(dx, n);
    void *gx = d_act(x, n), *gout = d_act_nan(n), *gdout = d_act(dout, n), *gdx = d_act(dx, n);
    float *gw = d_raw(w, groups * C * 4), *grstd = d_f32_nan((size_t)N * groups), *gdw = d_raw(dw, groups * C * 4);
    cpu->rmsnorm_fwd(cpu, out, rstd, x, w, N, groups, C, 1e-6f);
    gpu->rmsnorm_fwd(gpu, gout, grstd, gx, gw, N, groups, C, 1e-6f);
    expect_act("rmsnorm_fwd out", gout, out, n, TOL_ELEM);
    expect_f32("rmsnorm_fwd rstd", grstd, rstd, (size_t)N * groups, TOL_ELEM);
    cpu->rmsnorm_bwd(cpu, dx, dw, dout, x, w, rstd, N, groups, C);
    gpu->rmsnorm_bwd(gpu, gdx, gdw, gdout, gx, gw, grstd, N, groups, C);
    expect_accum("rmsnorm_bwd dx", gdx, dx0, dx, n, TOL_ELEM);
    expect_f32("rmsnorm_bwd dw", gdw, dw, (size_t)groups * C, TOL_ELEM);  // double sums over rows
    free(x), free(w), free(out), free(rstd), free(dout), free(dx), free(dw), free(dx0);
    d_free(gx), d_free(gw), d_free(gout), d_free(grstd), d_free(gdout), d_free(gdx), d_free(gdw);
}

static void test_rope(int pos0) {
    const int T = 37, N = 2 * T, heads = 3, head_stride = 20, row_stride = 64, offset = 4, rot = 16;
    const size_t n = (size_t)N * row_stride;
    snprintf(where, sizeof where, "%s rope pos0=%d", mode, pos0);
    float *x = h_rand(n, 1);
    void *gx = d_act(x, n);
    cpu->rope_fwd(cpu, x, N, T, pos0, heads, row_stride, head_stride, offset, rot, 10000.0f);
    gpu->rope_fwd(gpu, gx, N, T, pos0, heads, row_stride, head_stride, offset, rot, 10000.0f);
    char what[64];
    snprintf(what, sizeof what, "rope_fwd pos0=%d", pos0);
    expect_act(what, gx, x, n, TOL_ELEM);
    // bf16: from here the GPU rotates its rounded result back, the CPU its exact one (two roundings apart)
    cpu->rope_bwd(cpu, x, N, T, pos0, heads, row_stride, head_stride, offset, rot, 500000.0f);
    gpu->rope_bwd(gpu, gx, N, T, pos0, heads, row_stride, head_stride, offset, rot, 500000.0f);
    snprintf(what, sizeof what, "rope_bwd pos0=%d", pos0);
    expect_act(what, gx, x, n, TOL_ELEM);
    free(x);
    d_free(gx);
}

static void test_swiglu(void) {
    const int N = 33, H = 129;
    const size_t n = (size_t)N * H;
    snprintf(where, sizeof where, "%s swiglu", mode);
    float *g = h_rand(n, 3), *u = h_rand(n, 1), *out = h_rand(n, 1), *dout = h_rand(n, 1), *dg = h_rand(n, 1),
          *du = h_rand(n, 1);
    float *dg0 = h_dup(dg, n), *du0 = h_dup(du, n);
    void *gg = d_act(g, n), *gu = d_act(u, n), *gout = d_act_nan(n), *gdout = d_act(dout, n);
    void *gdg = d_act(dg, n), *gdu = d_act(du, n);
    cpu->swiglu_fwd(cpu, out, g, u, N, H);
    gpu->swiglu_fwd(gpu, gout, gg, gu, N, H);
    expect_act("swiglu_fwd", gout, out, n, TOL_ELEM);
    cpu->swiglu_bwd(cpu, dg, du, dout, g, u, N, H);
    gpu->swiglu_bwd(gpu, gdg, gdu, gdout, gg, gu, N, H);
    expect_accum("swiglu_bwd dgate", gdg, dg0, dg, n, TOL_ELEM);
    expect_accum("swiglu_bwd dup", gdu, du0, du, n, TOL_ELEM);
    free(g), free(u), free(out), free(dout), free(dg), free(du), free(dg0), free(du0);
    d_free(gg), d_free(gu), d_free(gout), d_free(gdout), d_free(gdg), d_free(gdu);
}

// Assemble per-head keys [kn_i ; kr] (kr broadcast: src head stride 0) and split the gradient back
// (sum over heads: dst head stride 0, accumulate). Column counts that are multiples of 8 take the vector kernel.
static void test_copy_heads(int rows, int h, int dn, int dr) {
    const int rs = h * (dn + dr);
    const size_t nk = (size_t)rows * rs, nkn = (size_t)rows * h * dn, nkr = (size_t)rows * dr;
    snprintf(where, sizeof where, "%s copy_heads %d x %d x (%d + %d)", mode, rows, h, dn, dr);
    float *k = h_rand(nk, 1), *kn = h_rand(nkn, 1), *kr = h_rand(nkr, 1);
    float *kn0 = h_dup(kn, nkn), *kr0 = h_dup(kr, nkr);
    void *gk = d_act(k, nk), *gkn = d_act(kn, nkn), *gkr = d_act(kr, nkr);
    cpu->copy_heads(cpu, k, rs, dn + dr, kn, h * dn, dn, rows, h, dn, 0);
    gpu->copy_heads(gpu, gk, rs, dn + dr, gkn, h * dn, dn, rows, h, dn, 0);
    cpu->copy_heads(cpu, k + dn, rs, dn + dr, kr, dr, 0, rows, h, dr, 0);
    gpu->copy_heads(gpu, asa_act_at(gpu, gk, dn), rs, dn + dr, gkr, dr, 0, rows, h, dr, 0);
    expect_act("copy_heads assemble", gk, k, nk, TOL_ELEM);
    cpu->copy_heads(cpu, kr, dr, 0, k + dn, rs, dn + dr, rows, h, dr, 1);
    gpu->copy_heads(gpu, gkr, dr, 0, asa_act_at(gpu, gk, dn), rs, dn + dr, rows, h, dr, 1);
    expect_accum("copy_heads sum over heads", gkr, kr0, kr, nkr, TOL_ELEM);
    cpu->copy_heads(cpu, kn, h * dn, dn, k, rs, dn + dr, rows, h, dn, 1);
    gpu->copy_heads(gpu, gkn, h * dn, dn, gk, rs, dn + dr, rows, h, dn, 1);
    expect_accum("copy_heads accumulate", gkn, kn0, kn, nkn, TOL_ELEM);
    free(k), free(kn), free(kr), free(kn0), free(kr0);
    d_free(gk), d_free(gkn), d_free(gkr);
}

static void test_xent(void) {
    const int N = 40, V = 1000;
    const size_t n = (size_t)N * V;
    snprintf(where, sizeof where, "%s xent", mode);
    int32_t tgt[N];
    for (int i = 0; i < N; i++) tgt[i] = i % 9 == 4 ? -1 : (int32_t)asa_rng_below(&rng, V);
    float *x = h_rand(n, 4), *loss = h_rand32(N, 1), *dx = h_rand(n, 1);
    void *gx = d_act(x, n), *gdx = d_act_nan(n);
    float *gloss = d_f32_nan(N);
    int32_t *gt = d_raw(tgt, sizeof tgt);
    cpu->xent_fwd_bwd(cpu, loss, NULL, x, tgt, N, V, 0.0f);
    gpu->xent_fwd_bwd(gpu, gloss, NULL, gx, gt, N, V, 0.0f);
    expect_f32("xent losses", gloss, loss, N, TOL_ELEM);
    cpu->xent_fwd_bwd(cpu, loss, dx, x, tgt, N, V, 0.3f);
    gpu->xent_fwd_bwd(gpu, gloss, gdx, gx, gt, N, V, 0.3f);
    expect_act("xent dlogits", gdx, dx, n, TOL_ELEM);
    cpu->xent_fwd_bwd(cpu, loss, x, x, tgt, N, V, 0.3f);  // in place, as the model calls it
    gpu->xent_fwd_bwd(gpu, gloss, gx, gx, gt, N, V, 0.3f);
    expect_f32("xent in place losses", gloss, loss, N, TOL_ELEM);
    expect_act("xent in place dlogits", gx, x, n, TOL_ELEM);
    free(x), free(loss), free(dx);
    d_free(gx), d_free(gloss), d_free(gdx), d_free(gt);
}

// dv 40: the 16-byte vector kernels; dv 36: the per-element ones
static void test_gate(int nbr, int dv) {
    const int N = 29, h = 3;
    const size_t n = (size_t)N * h * dv, ng = (size_t)N * h * nbr;
    snprintf(where, sizeof where, "%s gate %d branches dv %d", mode, nbr, dv);
    float *glog = h_rand(ng, 2), *out = h_rand(n, 1), *dout = h_rand(n, 1), *dglog = h_rand(ng, 1);
    float *dglog0 = h_dup(dglog, ng);
    void *gglog = d_act(glog, ng), *gout = d_act_nan(n), *gdout = d_act(dout, n), *gdglog = d_act(dglog, ng);
    float *br[3], *dbr[3], *drow[3], *gdrow[3];
    void *gbr[3], *gdbr[3];
    for (int c = 0; c < nbr; c++) {
        br[c] = h_rand(n, 1), dbr[c] = h_rand(n, 1), drow[c] = malloc((size_t)N * h * sizeof(float));
        gbr[c] = d_act(br[c], n), gdbr[c] = d_act(dbr[c], n), gdrow[c] = d_f32_nan((size_t)N * h);
    }
    cpu->gate_fwd(cpu, out, glog, (const void *const *)br, nbr, N, h, dv);
    gpu->gate_fwd(gpu, gout, gglog, (const void *const *)gbr, nbr, N, h, dv);
    expect_act("gate_fwd", gout, out, n, TOL_ELEM);
    // dglog accumulates; dbr (random here) is written over; drow is the branches' rowsum(dbr * br)
    cpu->gate_bwd(cpu, dglog, (void *const *)dbr, drow, dout, glog, (const void *const *)br, nbr, N, h, dv);
    gpu->gate_bwd(gpu, gdglog, gdbr, gdrow, gdout, gglog, (const void *const *)gbr, nbr, N, h, dv);
    expect_accum("gate_bwd dglog", gdglog, dglog0, dglog, ng, TOL_ELEM);
    for (int c = 0; c < nbr; c++) {
        expect_act("gate_bwd dbr", gdbr[c], dbr[c], n, TOL_ELEM);
        expect_f32("gate_bwd drow", gdrow[c], drow[c], (size_t)N * h, TOL_ELEM);
    }
    for (int c = 0; c < nbr; c++) free(br[c]), free(dbr[c]), free(drow[c]), d_free(gbr[c]), d_free(gdbr[c]);
    for (int c = 0; c < nbr; c++) d_free(gdrow[c]);
    free(glog), free(out), free(dout), free(dglog), free(dglog0);
    d_free(gglog), d_free(gout), d_free(gdout), d_free(gdglog);
}

// The optimizer and the reductions work on fp32 tensors in every mode; sum_squares also on a bf16 one.
static void test_optim(void) {
    const size_t n = 100003;
    snprintf(where, sizeof where, "%s adamw / reductions", mode);
    float *p = h_rand32(n, 1), *g = h_rand32(n, 1), *m = h_rand32(n, 0.1f), *v = h_rand32(n, 0.1f);
    for (size_t i = 0; i < n; i++) v[i] = v[i] * v[i];
    float *gp = d_raw(p, n * 4), *gg = d_raw(g, n * 4), *gm = d_raw(m, n * 4), *gv = d_raw(v, n * 4);
    cpu->adamw(cpu, p, g, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, 0.5f);
    gpu->adamw(gpu, gp, gg, gm, gv, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, 0.5f);
    expect_f32("adamw p", gp, p, n, TOL_ELEM);
    expect_f32("adamw m", gm, m, n, TOL_ELEM);
    expect_f32("adamw v", gv, v, n, TOL_ELEM);
    double sc = cpu->sum_squares(cpu, g, ASA_F32, n), sg = gpu->sum_squares(gpu, gg, ASA_F32, n);
    TU_CHECK(fabs(sc - sg) <= 1e-12 * sc, "%s sum_squares: cpu %.17g gpu %.17g", mode, sc, sg);  // double sums
    double sg2 = gpu->sum_squares(gpu, gg, ASA_F32, n);
    TU_CHECK(sg == sg2, "%s sum_squares not deterministic: %.17g then %.17g", mode, sg, sg2);
    TU_CHECK(gpu->sum_squares(gpu, gg, ASA_F32, 0) == 0.0, "%s sum_squares of nothing", mode);
    if (bf16_mode()) {  // a bf16 tensor: its values widen exactly, then the same double sums
        float *r = h_dup(g, n);
        round_act(r, n);
        void *gb = d_act(r, n);
        const double sr = cpu->sum_squares(cpu, r, ASA_F32, n), sb = gpu->sum_squares(gpu, gb, ASA_BF16, n);
        TU_CHECK(fabs(sr - sb) <= 1e-12 * sr, "bf16 sum_squares of a bf16 tensor: cpu %.17g gpu %.17g", sr, sb);
        TU_CHECK(gpu->sum_squares(gpu, gb, ASA_BF16, n) == sb, "bf16 sum_squares of a bf16 tensor not deterministic");
        TU_CHECK(gpu->sum_squares(gpu, gb, ASA_BF16, 0) == 0.0, "bf16 sum_squares of no bf16 element");
        free(r);
        d_free(gb);
    }
    cpu->scale(cpu, g, n, -0.37f);
    gpu->scale(gpu, gg, n, -0.37f);
    expect_f32("scale", gg, g, n, TOL_ELEM);
    cpu->add(cpu, p, g, n);
    gpu->add(gpu, gp, gg, n);
    expect_f32("add", gp, p, n, TOL_ELEM);
    free(p), free(g), free(m), free(v);
    d_free(gp), d_free(gg), d_free(gm), d_free(gv);
}

// convert, act_to_device and act_to_host against the host's rounding: bf16 values survive f32 -> bf16 -> f32
// exactly; other values go to the nearest bf16, ties to even, beyond the largest bf16 to infinity; NaN
// stays NaN. dt == st copies bit for bit.
static void test_convert(void) {
    static const float special[][2] = {
        // value, its bf16 rounding
        {0x1.01p+0f, 0x1p+0f},         // halfway between 1 and 1 + 2^-7: to the even 1
        {0x1.03p+0f, 0x1.04p+0f},      // halfway between 1 + 2^-7 and 1 + 2^-6: to the even 1 + 2^-6
        {-0x1.01p+0f, -0x1p+0f},
        {-0x1.03p+0f, -0x1.04p+0f},
        {0x1.010002p+0f, 0x1.02p+0f},  // just above a tie: up
        {0x1.02fffep+0f, 0x1.02p+0f},  // just below a tie: down
        {0x1.01p-100f, 0x1p-100f},
        {0x1.fep+127f, 0x1.fep+127f},  // the largest bf16
        {0x1.fffffep+127f, INFINITY},  // the largest float rounds beyond it
        {-0x1.fffffep+127f, -INFINITY},
        {0.0f, 0.0f},
        {-0.0f, -0.0f},
        {INFINITY, INFINITY},
        {-INFINITY, -INFINITY},
        {NAN, NAN},
    };
    const size_t ns = sizeof special / sizeof special[0], n = ns + 10001;
    snprintf(where, sizeof where, "%s convert", mode);
    float *x = h_rand32(n, 100), *want = malloc(n * sizeof(float)), *back = malloc(n * sizeof(float));
    uint16_t *bits = malloc(n * sizeof(uint16_t)), *bits2 = malloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < ns; i++) x[i] = special[i][0];
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) want[i] = bf16_round(x[i]);
    for (size_t i = 0; i < ns; i++) bad += !same_bits(want[i], special[i][1]);
    TU_CHECK(bad == 0, "the test's own bf16 rounding is wrong on %zu special values", bad);

    float *dx = d_raw(x, n * 4), *dy = d_alloc(n * 4), *dy2 = d_alloc(n * 4);
    void *db = d_alloc(n * 2), *db2 = d_alloc(n * 2);
    gpu->convert(gpu, db, ASA_BF16, dx, ASA_F32, n);
    gpu->to_host(gpu, bits, db, n * 2);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += !same_bits(bf16_widen(bits[i]), want[i]);
    TU_CHECK(bad == 0, "%s convert f32 -> bf16: %zu of %zu values not rounded to nearest even", mode, bad, n);
    gpu->convert(gpu, dy, ASA_F32, db, ASA_BF16, n);
    gpu->to_host(gpu, back, dy, n * 4);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += !same_bits(back[i], want[i]);
    TU_CHECK(bad == 0, "%s convert bf16 -> f32: %zu of %zu values changed", mode, bad, n);
    gpu->convert(gpu, db2, ASA_BF16, db, ASA_BF16, n);
    gpu->to_host(gpu, bits2, db2, n * 2);
    TU_CHECK(memcmp(bits, bits2, n * 2) == 0, "%s convert bf16 -> bf16 is no copy", mode);
    gpu->convert(gpu, dy2, ASA_F32, dx, ASA_F32, n);
    gpu->to_host(gpu, back, dy2, n * 4);
    TU_CHECK(memcmp(back, x, n * 4) == 0, "%s convert f32 -> f32 is no copy", mode);
    if (bf16_mode()) {  // the activation transfers round and widen as convert does
        gpu->act_to_device(gpu, db2, x, n);
        gpu->to_host(gpu, bits2, db2, n * 2);
        TU_CHECK(memcmp(bits, bits2, n * 2) == 0, "bf16 act_to_device rounds otherwise than convert");
        gpu->act_to_host(gpu, back, db, n);
        bad = 0;
        for (size_t i = 0; i < n; i++) bad += !same_bits(back[i], want[i]);
        TU_CHECK(bad == 0, "bf16 act_to_host: %zu of %zu values not widened exactly", bad, n);
    }
    free(x), free(want), free(back), free(bits), free(bits2);
    d_free(dx), d_free(dy), d_free(dy2), d_free(db), d_free(db2);
}

static void test_dense_ops(void) {
    test_embedding(50, 70, 300);
    test_embedding(3, 1100, 1000);
    test_rmsnorm(77, 1, 300);
    test_rmsnorm(50, 3, 40);
    test_rmsnorm(2000, 1, 1024);  // vector dx kernel, the weight gradient over 32 row ranges
    test_rmsnorm(130, 2, 64);
    test_rope(0);
    test_rope(65000);
    test_swiglu();
    test_copy_heads(41, 5, 12, 6);
    test_copy_heads(50, 4, 64, 32);
    test_xent();
    test_gate(3, 40);
    test_gate(2, 40);
    test_gate(3, 36);
    test_optim();
    test_convert();
    printf("  %s dense ops done\n", mode);
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

// Score of selection block u for query row set (b, anchor a, group j), in double from the inputs: the
// probabilities exp(q.kc*scale - lse) of the pooled keys the anchor sees, over the group's heads.
static double topk_score(const asa_attn_shape *s, const float *q, const float *kc, const float *lse, int b, int a,
                         int j, int u) {
    const int G = s->h / s->g, per = s->selection_block_size / s->block_size, t = a * s->selection_share;
    const int nb = asa_attn_num_cmp_blocks(s), nm = (t + 1) / s->block_size < nb ? (t + 1) / s->block_size : nb;
    double sc = 0;
    for (int hi = 0; hi < G; hi++) {
        const size_t row = ((size_t)b * s->T + t) * s->h + (size_t)j * G + hi;
        if (lse[row] == -INFINITY) continue;
        for (int m = u * per; m < (u + 1) * per && m < nm; m++) {
            const float *x = q + row * s->dk, *y = kc + (((size_t)b * nb + m) * s->g + j) * s->dk;
            double d = 0;
            for (int e = 0; e < s->dk; e++) d += (double)x[e] * y[e];
            sc += exp(d * s->scale - lse[row]);
        }
    }
    return sc;
}

// Entries of the GPU's block lists that differ from the CPU's. In bf16 mode the GPU's dots run on the
// tensor cores (exact bf16 products, fp32 sums in another order), so its scores are the CPU's up to a few
// fp32 roundings (dots of |q.kc|*scale ~ 1, relative error ~ dk * 6e-8 in the worst case): a list may
// differ where two blocks' scores are that close. A differing row is accepted there only when it swaps as
// many blocks as it takes and every pair (dropped, taken) has scores, recomputed in double, within
// TOPK_NEAR_TIE relative; its entries are counted in *near (NULL: none accepted, as in fp32 and tf32 modes).
#define TOPK_NEAR_TIE 1e-5
static size_t topk_list_diff(const asa_attn_shape *s, const float *q, const float *kc, const float *lse,
                             const int32_t *ref, const int32_t *got, size_t *near) {
    const int n = s->block_counts, na = asa_attn_num_anchors(s);
    size_t diff = 0;
    for (int b = 0; b < s->B; b++)
        for (int a = 0; a < na; a++)
            for (int j = 0; j < s->g; j++) {
                const size_t off = (((size_t)b * na + a) * s->g + j) * n;
                size_t d = 0;
                for (int e = 0; e < n; e++) d += ref[off + e] != got[off + e];
                if (!d) continue;
                int drop[64], take[64], nd = 0, nt = 0, ok = near != NULL && n <= 64;
                for (int e = 0; ok && e < n; e++) {
                    int in_got = 0, in_ref = 0;
                    for (int f = 0; f < n; f++)
                        in_got |= got[off + f] == ref[off + e], in_ref |= ref[off + f] == got[off + e];
                    if (!in_got) drop[nd++] = ref[off + e];
                    if (!in_ref) take[nt++] = got[off + e];
                }
                ok = ok && nd == nt;
                for (int x = 0; ok && x < nd; x++)
                    for (int y = 0; ok && y < nt; y++) {
                        if (drop[x] < 0 || take[y] < 0) ok = 0;
                        if (!ok) break;
                        const double u = topk_score(s, q, kc, lse, b, a, j, drop[x]);
                        const double v = topk_score(s, q, kc, lse, b, a, j, take[y]);
                        ok = fabs(u - v) <= TOPK_NEAR_TIE * fmax(u, v);
                    }
                if (ok)
                    *near += d;
                else
                    diff += d;
            }
    return diff;
}

// rowsum(dout * o) per (row, head) in double: the drow that gate_bwd hands the attention backward ops.
static float *d_drow(const float *dout, const float *o, size_t rows, int dv) {
    float *h = malloc((rows ? rows : 1) * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        double d = 0;
        for (int e = 0; e < dv; e++) d += (double)dout[r * dv + e] * o[r * dv + e];
        h[r] = (float)d;
    }
    float *d = d_raw(h, rows * sizeof(float));
    free(h);
    return d;
}

// Runs a forward op's (o, lse) on both sides and a backward's (dq, dk, dv) accumulation. Each op starts
// from identical inputs on both sides (the CPU's previous results, rounded in the bf16 mode), so each
// comparison tests one op. The GPU's backward ops get drow, as the model gives them, and the CPU's
// compute it (the other tests leave it to the GPU's ops too).
static void test_attention_case(const attn_case *c) {
    const asa_attn_shape *s = &c->s;
    const int N = s->B * s->T, nb = asa_attn_num_cmp_blocks(s), na = asa_attn_num_anchors(s);
    const size_t nq = (size_t)N * s->h * s->dk, nk = (size_t)N * s->g * s->dk, nv = (size_t)N * s->g * s->dv;
    const size_t no = (size_t)N * s->h * s->dv, nl = (size_t)N * s->h;
    const size_t nkc = (size_t)s->B * nb * s->g * s->dk, nvc = (size_t)s->B * nb * s->g * s->dv;
    const size_t nidx = (size_t)s->B * na * s->g * s->block_counts;
    // bf16 mode: full, window and selected attention run the TF32 tensor-core kernels, whose lse carries
    // the scores' TF32 error (see test_slc_tc); the compressed forward keeps exact fp32 sums
    const double lse_tol = bf16_mode() ? TOL_TF32 : TOL_ELEM;
    char what[160];
    snprintf(where, sizeof where, "%s %s", mode, c->name);
    float *q = h_rand(nq, 1), *k = h_rand(nk, 1), *v = h_rand(nv, 1), *dout = h_rand(no, 1);
    void *gq = d_act(q, nq), *gk = d_act(k, nk), *gv = d_act(v, nv), *gdout = d_act(dout, no);
    float *o = malloc(no * 4), *lse = malloc(nl * 4), *glse = d_f32_nan(nl);
    void *go = d_act_nan(no);
    float *dq = h_rand(nq, 1), *dk = h_rand(nk, 1), *dv = h_rand(nv, 1);
    float *dq0 = h_dup(dq, nq), *dk0 = h_dup(dk, nk), *dv0 = h_dup(dv, nv);
    void *gdq = d_act(dq, nq), *gdk = d_act(dk, nk), *gdv = d_act(dv, nv);

    // dense (full or windowed)
    cpu->attn_fwd(cpu, s, q, k, v, o, lse);
    gpu->attn_fwd(gpu, s, gq, gk, gv, go, glse);
    snprintf(what, sizeof what, "%s attn_fwd o", c->name);
    expect_act(what, go, o, no, TOL_ELEM);
    snprintf(what, sizeof what, "%s attn_fwd lse", c->name);
    expect_lse_tol(what, glse, lse, nl, lse_tol);
    d_act_set(go, o, no);
    gpu->to_device(gpu, glse, lse, nl * 4);
    float *gdrow = d_drow(dout, o, nl, s->dv);
    cpu->attn_bwd(cpu, s, q, k, v, o, lse, dout, NULL, dq, dk, dv);
    gpu->attn_bwd(gpu, s, gq, gk, gv, go, glse, gdout, gdrow, gdq, gdk, gdv);
    d_free(gdrow);
    // attn_bwd writes its gradients over the random values both sides started from
    float *zero = calloc(nq > nk ? (nq > nv ? nq : nv) : (nk > nv ? nk : nv), sizeof(float));
    snprintf(what, sizeof what, "%s attn_bwd dq", c->name);
    expect_accum(what, gdq, zero, dq, nq, TOL_LONG);
    snprintf(what, sizeof what, "%s attn_bwd dk", c->name);
    expect_accum(what, gdk, zero, dk, nk, TOL_LONG);
    snprintf(what, sizeof what, "%s attn_bwd dv", c->name);
    expect_accum(what, gdv, zero, dv, nv, TOL_LONG);
    free(zero);

    if (s->block_size > 0) {
        // compression: pooling, attention over pooled keys
        float *kc = malloc(nkc * 4), *vc = malloc(nvc * 4);
        void *gkc = d_act_nan(nkc), *gvc = d_act_nan(nvc);
        cpu->compress_fwd(cpu, s, s->dk, k, kc);
        cpu->compress_fwd(cpu, s, s->dv, v, vc);
        gpu->compress_fwd(gpu, s, s->dk, gk, gkc);
        gpu->compress_fwd(gpu, s, s->dv, gv, gvc);
        snprintf(what, sizeof what, "%s compress_fwd", c->name);
        expect_act(what, gkc, kc, nkc, TOL_ELEM);
        expect_act(what, gvc, vc, nvc, TOL_ELEM);
        d_act_set(gkc, kc, nkc);
        d_act_set(gvc, vc, nvc);
        d_act_poison(go, no);
        d_f32_poison(glse, nl);
        cpu->attn_cmp_fwd(cpu, s, q, kc, vc, o, lse);
        gpu->attn_cmp_fwd(gpu, s, gq, gkc, gvc, go, glse);
        snprintf(what, sizeof what, "%s attn_cmp_fwd o", c->name);
        expect_act(what, go, o, no, TOL_ELEM);
        snprintf(what, sizeof what, "%s attn_cmp_fwd lse", c->name);
        expect_lse(what, glse, lse, nl);
        gpu->to_device(gpu, glse, lse, nl * 4);
        d_act_set(go, o, no);

        // selection from the CPU's lse (identical inputs on both sides)
        int32_t *idx = malloc(nidx * 4), *hidx = malloc(nidx * 4);
        int32_t *gidx = d_alloc(nidx * 4);
        d_f32_poison(gidx, nidx);  // an entry left unwritten reads as NaN's bits, no block index
        cpu->select_topk(cpu, s, q, kc, lse, idx);
        gpu->select_topk(gpu, s, gq, gkc, glse, gidx);
        gpu->to_host(gpu, hidx, gidx, nidx * 4);
        size_t near = 0;
        const size_t diff = topk_list_diff(s, q, kc, lse, idx, hidx, bf16_mode() ? &near : NULL);
        TU_CHECK(diff == 0, "%s %s select_topk: %zu of %zu list entries differ from the CPU's (%zu at near-ties)",
                 mode, c->name, diff, nidx, near);

        float *dkc = h_rand(nkc, 1), *dvc = h_rand(nvc, 1), *dkc0 = h_dup(dkc, nkc), *dvc0 = h_dup(dvc, nvc);
        void *gdkc = d_act(dkc, nkc), *gdvc = d_act(dvc, nvc);
        d_sync(gdq, dq, dq0, nq);
        gdrow = d_drow(dout, o, nl, s->dv);
        cpu->attn_cmp_bwd(cpu, s, q, kc, vc, o, lse, dout, NULL, dq, dkc, dvc);
        gpu->attn_cmp_bwd(gpu, s, gq, gkc, gvc, go, glse, gdout, gdrow, gdq, gdkc, gdvc);
        d_free(gdrow);
        snprintf(what, sizeof what, "%s attn_cmp_bwd dq", c->name);
        expect_accum(what, gdq, dq0, dq, nq, TOL_LONG);
        snprintf(what, sizeof what, "%s attn_cmp_bwd dkc", c->name);
        expect_accum(what, gdkc, dkc0, dkc, nkc, TOL_LONG);
        snprintf(what, sizeof what, "%s attn_cmp_bwd dvc", c->name);
        expect_accum(what, gdvc, dvc0, dvc, nvc, TOL_LONG);

        d_sync(gdkc, dkc, dkc0, nkc);
        d_sync(gdvc, dvc, dvc0, nvc);
        d_sync(gdk, dk, dk0, nk);
        d_sync(gdv, dv, dv0, nv);
        cpu->compress_bwd(cpu, s, s->dk, dkc, dk);
        cpu->compress_bwd(cpu, s, s->dv, dvc, dv);
        gpu->compress_bwd(gpu, s, s->dk, gdkc, gdk);
        gpu->compress_bwd(gpu, s, s->dv, gdvc, gdv);
        snprintf(what, sizeof what, "%s compress_bwd", c->name);
        expect_accum(what, gdk, dk0, dk, nk, TOL_ELEM);
        expect_accum(what, gdv, dv0, dv, nv, TOL_ELEM);

        // selected attention on the CPU's lists
        gpu->to_device(gpu, gidx, idx, nidx * 4);
        void *go2 = d_act_nan(no);
        float *glse2 = d_f32_nan(nl);
        cpu->attn_slc_fwd(cpu, s, q, k, v, idx, o, lse);
        gpu->attn_slc_fwd(gpu, s, gq, gk, gv, gidx, go2, glse2);
        snprintf(what, sizeof what, "%s attn_slc_fwd o", c->name);
        expect_act(what, go2, o, no, TOL_ELEM);
        snprintf(what, sizeof what, "%s attn_slc_fwd lse", c->name);
        expect_lse_tol(what, glse2, lse, nl, lse_tol);
        d_act_set(go2, o, no);
        gpu->to_device(gpu, glse2, lse, nl * 4);
        d_sync(gdq, dq, dq0, nq);
        d_sync(gdk, dk, dk0, nk);
        d_sync(gdv, dv, dv0, nv);
        gdrow = d_drow(dout, o, nl, s->dv);
        cpu->attn_slc_bwd(cpu, s, q, k, v, idx, o, lse, dout, NULL, dq, dk, dv);
        gpu->attn_slc_bwd(gpu, s, gq, gk, gv, gidx, go2, glse2, gdout, gdrow, gdq, gdk, gdv);
        d_free(gdrow);
        snprintf(what, sizeof what, "%s attn_slc_bwd dq", c->name);
        expect_accum(what, gdq, dq0, dq, nq, TOL_LONG);
        snprintf(what, sizeof what, "%s attn_slc_bwd dk", c->name);
        expect_accum(what, gdk, dk0, dk, nk, TOL_LONG);
        snprintf(what, sizeof what, "%s attn_slc_bwd dv", c->name);
        expect_accum(what, gdv, dv0, dv, nv, TOL_LONG);

        free(kc), free(vc), free(idx), free(hidx), free(dkc), free(dvc), free(dkc0), free(dvc0);
        d_free(gkc), d_free(gvc), d_free(gidx), d_free(gdkc), d_free(gdvc), d_free(go2), d_free(glse2);
    }
    printf("  %s %-28s B=%d T=%d h=%d g=%d dk=%d dv=%d window=%d b=%d b_s=%d n=%d R=%d\n", mode, c->name, s->B, s->T,
           s->h, s->g, s->dk, s->dv, s->window, s->block_size, s->selection_block_size, s->block_counts,
           s->selection_share);
    free(q), free(k), free(v), free(dout), free(o), free(lse), free(dq), free(dk), free(dv);
    free(dq0), free(dk0), free(dv0);
    d_free(gq), d_free(gk), d_free(gv), d_free(gdout), d_free(go), d_free(glse), d_free(gdq), d_free(gdk);
    d_free(gdv);
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
    snprintf(where, sizeof where, "%s select_topk %s", mode, name);
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
    void *gq = d_act(q, nq), *gkc = d_act(kc, nkc);
    float *glse = d_raw(lse, nl * 4);
    int32_t *gidx = d_alloc(nidx * 4);
    d_f32_poison(gidx, nidx);
    cpu->select_topk(cpu, s, q, kc, lse, idx);
    gpu->select_topk(gpu, s, gq, gkc, glse, gidx);
    gpu->to_host(gpu, hidx, gidx, nidx * 4);
    size_t near = 0, decided = 0, lost = 0;
    const size_t diff = topk_list_diff(s, q, kc, lse, idx, hidx, bf16_mode() ? &near : NULL);
    for (int b = 0; b < B; b++)
        for (int a = 0; a < na; a++)
            for (int j = 0; j < g; j++) {
                const int cur = a * R / bsel;
                const int32_t *r = idx + (((size_t)b * na + a) * g + j) * n;
                const int32_t *gr = hidx + (((size_t)b * na + a) * g + j) * n;
                char in[4096] = {0}, gin[4096] = {0};
                for (int e = 0; e < n; e++) {
                    if (r[e] >= 0 && r[e] <= cur && r[e] < 4096) in[r[e]] = 1;
                    if (gr[e] >= 0 && gr[e] <= cur && gr[e] < 4096) gin[gr[e]] = 1;
                }
                // Tied neighbours (u, u+1) of which one alone was chosen; ties 1 ties even u to u+1 only. The
                // GPU must keep the lower index of such a pair: exact ties, which the near-tie acceptance of
                // bf16 mode would otherwise let through in either order.
                for (int u = ties == 2 ? 1 : 2; u + 1 < cur - 1 && u + 1 < 4096; u += ties == 2 ? 1 : 2) {
                    decided += in[u] != in[u + 1];
                    lost += !gin[u] && gin[u + 1];
                }
            }
    TU_CHECK(diff == 0, "%s select_topk %s: %zu of %zu list entries differ from the CPU's (%zu at near-ties)", mode,
             name, diff, nidx, near);
    if (ties) TU_CHECK(decided > 0, "%s select_topk %s: no tie was decided", mode, name);
    if (ties) TU_CHECK(lost == 0, "%s select_topk %s: %zu exact ties went to the higher block index", mode, name, lost);
    printf("  %s select_topk %-24s B=%d T=%d h=%d g=%d dk=%d b=%d b_s=%d n=%d R=%d: %d selection blocks%s, %zu "
           "entries differ at near-ties\n",
           mode, name, B, T, h, g, dk, bsz, bsel, n, R, (T + bsel - 1) / bsel, ties ? ", ties decided" : "", near);
    free(q), free(kc), free(vc), free(o), free(lse), free(idx), free(hidx);
    d_free(gq), d_free(gkc), d_free(glse), d_free(gidx);
}

// Backward twice from zeroed gradients: the results must be bitwise equal (no atomics, fixed orders).
static void test_determinism(const attn_case *c) {
    const asa_attn_shape *s = &c->s;
    const int N = s->B * s->T, nb = asa_attn_num_cmp_blocks(s), na = asa_attn_num_anchors(s);
    const size_t nq = (size_t)N * s->h * s->dk, nk = (size_t)N * s->g * s->dk, nv = (size_t)N * s->g * s->dv;
    const size_t no = (size_t)N * s->h * s->dv, nl = (size_t)N * s->h;
    const size_t nkc = (size_t)s->B * nb * s->g * s->dk, nvc = (size_t)s->B * nb * s->g * s->dv;
    const size_t nidx = (size_t)s->B * na * s->g * s->block_counts, ntot = nq + nk + nv + nkc + nvc, es = esz();
    snprintf(where, sizeof where, "%s determinism %s", mode, c->name);
    float *h = h_rand(nq + nk + nv + no, 1);
    void *q = d_act(h, nq), *k = d_act(h + nq, nk), *v = d_act(h + nq + nk, nv), *dout = d_act(h + nq + nk + nv, no);
    void *o = d_alloc(no * es), *kc = d_alloc(nkc * es), *vc = d_alloc(nvc * es), *oc = d_alloc(no * es);
    float *lse = d_alloc(nl * 4), *lc = d_alloc(nl * 4);
    int32_t *idx = d_alloc(nidx * 4);
    void *grads = d_alloc(ntot * es);
    void *dq = grads, *dk = asa_act_at(gpu, grads, nq), *dv = asa_act_at(gpu, grads, nq + nk);
    void *dkc = asa_act_at(gpu, grads, nq + nk + nv), *dvc = asa_act_at(gpu, grads, nq + nk + nv + nkc);
    unsigned char *run[2] = {malloc(ntot * es), malloc(ntot * es)};
    gpu->compress_fwd(gpu, s, s->dk, k, kc);
    gpu->compress_fwd(gpu, s, s->dv, v, vc);
    gpu->attn_cmp_fwd(gpu, s, q, kc, vc, oc, lc);
    gpu->select_topk(gpu, s, q, kc, lc, idx);
    for (int r = 0; r < 2; r++) {
        gpu->zero(gpu, grads, ntot * es);
        gpu->attn_fwd(gpu, s, q, k, v, o, lse);
        gpu->attn_bwd(gpu, s, q, k, v, o, lse, dout, NULL, dq, dk, dv);
        gpu->attn_cmp_bwd(gpu, s, q, kc, vc, oc, lc, dout, NULL, dq, dkc, dvc);
        gpu->attn_slc_fwd(gpu, s, q, k, v, idx, o, lse);
        gpu->attn_slc_bwd(gpu, s, q, k, v, idx, o, lse, dout, NULL, dq, dk, dv);
        gpu->to_host(gpu, run[r], grads, ntot * es);
    }
    TU_CHECK(memcmp(run[0], run[1], ntot * es) == 0, "%s %s: two backward passes differ", mode, c->name);
    free(h), free(run[0]), free(run[1]);
    d_free(q), d_free(k), d_free(v), d_free(dout), d_free(o), d_free(lse), d_free(kc), d_free(vc), d_free(lc);
    d_free(oc), d_free(idx), d_free(grads);
}

// ---- attention on the tensor cores ----

// attn_slc_fwd / attn_slc_bwd of `tc` (gpu_tf32, or gpu_bf16 = the same kernels on bf16-rounded inputs):
// mma.sync on TF32 operands, fp32 softmax and sums, against the CPU. Tolerance TOL_TF32 = 2e-3: each
// operand of q.k, p.v, dout.v, ds.k, p.dout and ds.q is rounded to TF32 (relative error up to 2^-11 =
// 4.9e-4, rms about 2e-4) and the products are summed in fp32 over up to 128 terms (head dims) or the
// visible keys / rows, so outputs and gradients carry about 3e-4 relative error, as gemm's tf32 products
// do; lse inherits the scores' absolute error (a few 1e-4 on values of a few units). bf16: outputs and
// gradients as expect_act / expect_increment say, lse TOL_TF32 still (fp32 storage). The lists are the
// CPU's selection on these inputs with every slot emptied (-1) with chance 1/5: gaps inside lists, and
// rows whose list is empty (o = 0, lse = -inf, no gradient). Returns o's error against the CPU (tf32) or
// against the CPU's rounded to bf16 (bf16, err_vs_rounded), which shows the tensor cores in use.
static double test_slc_tc(asa_backend *tc, const attn_case *c) {
    const asa_attn_shape *s = &c->s;
    const int N = s->B * s->T, nb = asa_attn_num_cmp_blocks(s), na = asa_attn_num_anchors(s);
    const size_t nq = (size_t)N * s->h * s->dk, nk = (size_t)N * s->g * s->dk, nv = (size_t)N * s->g * s->dv;
    const size_t no = (size_t)N * s->h * s->dv, nl = (size_t)N * s->h;
    const size_t nkc = (size_t)s->B * nb * s->g * s->dk, nvc = (size_t)s->B * nb * s->g * s->dv;
    const size_t nidx = (size_t)s->B * na * s->g * s->block_counts;
    char what[160];
    mode = asa_precision_name(tc->precision);
    snprintf(where, sizeof where, "%s %s", mode, c->name);
    float *q = h_rand(nq, 1), *k = h_rand(nk, 1), *v = h_rand(nv, 1), *dout = h_rand(no, 1);
    float *kc = malloc(nkc * 4), *vc = malloc(nvc * 4), *o = malloc(no * 4), *lse = malloc(nl * 4);
    int32_t *idx = malloc(nidx * 4);
    cpu->compress_fwd(cpu, s, s->dk, k, kc);
    cpu->compress_fwd(cpu, s, s->dv, v, vc);
    cpu->attn_cmp_fwd(cpu, s, q, kc, vc, o, lse);
    cpu->select_topk(cpu, s, q, kc, lse, idx);
    for (size_t e = 0; e < nidx; e++)
        if (asa_rng_below(&rng, 5) == 0) idx[e] = -1;

    void *gq = d_act(q, nq), *gk = d_act(k, nk), *gv = d_act(v, nv), *gdout = d_act(dout, no);
    int32_t *gidx = d_raw(idx, nidx * 4);
    void *go = d_act_nan(no);
    float *glse = d_f32_nan(nl);
    cpu->attn_slc_fwd(cpu, s, q, k, v, idx, o, lse);
    tc->attn_slc_fwd(tc, s, gq, gk, gv, gidx, go, glse);
    float *h = h_act(go, no);
    const double eo = tu_rel_err_f(h, o, no), eo_tol = tol_act(TOL_TF32);
    const double ind = bf16_mode() ? err_vs_rounded(h, o, no) : eo;
    TU_CHECK(eo < eo_tol, "%s %s attn_slc_fwd o: relative error %.3e (tolerance %.0e)", mode, c->name, eo, eo_tol);
    note_bf16(0, eo);
    snprintf(what, sizeof what, "%s attn_slc_fwd lse", c->name);
    const double el = expect_lse_tol(what, glse, lse, nl, TOL_TF32);

    // backward from the CPU's o and lse, accumulating onto common random gradients; twice on the GPU, the
    // second run bitwise equal to the first
    d_act_set(go, o, no);
    gpu->to_device(gpu, glse, lse, nl * 4);
    float *dq0 = h_rand(nq, 1), *dk0 = h_rand(nk, 1), *dv0 = h_rand(nv, 1);
    float *dq = h_dup(dq0, nq), *dk = h_dup(dk0, nk), *dv = h_dup(dv0, nv);
    cpu->attn_slc_bwd(cpu, s, q, k, v, idx, o, lse, dout, NULL, dq, dk, dv);
    float *run[2][3];
    double eg[3] = {0, 0, 0};
    for (int r = 0; r < 2; r++) {
        void *gdq = d_act(dq0, nq), *gdk = d_act(dk0, nk), *gdv = d_act(dv0, nv);
        tc->attn_slc_bwd(tc, s, gq, gk, gv, gidx, go, glse, gdout, NULL, gdq, gdk, gdv);
        run[r][0] = h_act(gdq, nq), run[r][1] = h_act(gdk, nk), run[r][2] = h_act(gdv, nv);
        if (r == 0) {
            snprintf(what, sizeof what, "%s attn_slc_bwd dq", c->name);
            eg[0] = expect_increment(what, gdq, dq0, dq, nq, TOL_TF32);
            snprintf(what, sizeof what, "%s attn_slc_bwd dk", c->name);
            eg[1] = expect_increment(what, gdk, dk0, dk, nk, TOL_TF32);
            snprintf(what, sizeof what, "%s attn_slc_bwd dv", c->name);
            eg[2] = expect_increment(what, gdv, dv0, dv, nv, TOL_TF32);
        }
        d_free(gdq), d_free(gdk), d_free(gdv);
    }
    TU_CHECK(!memcmp(run[0][0], run[1][0], nq * 4) && !memcmp(run[0][1], run[1][1], nk * 4) &&
                 !memcmp(run[0][2], run[1][2], nv * 4),
             "%s %s: two attn_slc_bwd runs differ", mode, c->name);
    printf("  %s %-30s B=%d T=%d h=%d g=%d dk=%d dv=%d b_s=%d n=%d R=%d: o %.1e lse %.1e dq %.1e dk %.1e dv %.1e\n",
           mode, c->name, s->B, s->T, s->h, s->g, s->dk, s->dv, s->selection_block_size, s->block_counts,
           s->selection_share, eo, el, eg[0], eg[1], eg[2]);
    for (int r = 0; r < 2; r++) free(run[r][0]), free(run[r][1]), free(run[r][2]);
    free(q), free(k), free(v), free(dout), free(kc), free(vc), free(o), free(lse), free(idx), free(h);
    free(dq0), free(dk0), free(dv0), free(dq), free(dk), free(dv);
    d_free(gq), d_free(gk), d_free(gv), d_free(gdout), d_free(gidx), d_free(go), d_free(glse);
    mode = asa_precision_name(gpu->precision);
    return ind;
}

// bf16 selected attention with more rows sharing a list (R·G = 128) than one block of attn_slc16.cu holds
// (64): two blocks per (anchor, group).
static void test_slc16_many_rows(void) {
    const attn_case c = make_case("R=8 G=16: 128 rows per list", 1, 200, 16, 1, 64, 64, 0, 16, 32, 4, 8);
    test_slc_tc(gpu_bf16, &c);
}

// bf16 selected attention at head dims 64 and 128, and 160 / 128, on both paths (asa_backend_cuda_tma):
// Hopper's (the default there, so the main cases ran it), where the forward and dq take their KV chunks as
// TMA tiles (64, 128 and 160 / 128), dq and the dk/dv pass run on wgmma (dq with 16, 32 and 64 rows a tile),
// and every other GPU's (cp.async and mma.sync).
// Chunks past a sequence's end read the next sequence's rows (B 2) or past the tensor (the map's zero fill),
// blocks of 16 or 32 keys leave most of a 64-row box or a 64-key dk/dv tile to the masks, lists of 16 or 8
// rows put several anchors in one staged chunk, and block 0's list of 1100 anchors is split.
static void test_slc16_tma(void) {
    const attn_case c[] = {
        make_case("R=1 G=16 d128 B=2 b_s=64", 2, 200, 16, 1, 128, 128, 0, 16, 64, 4, 1),
        make_case("R=1 G=16 d128", 1, 300, 16, 1, 128, 128, 0, 16, 32, 5, 1),
        make_case("R=4 G=16 d128", 1, 150, 32, 2, 128, 128, 0, 16, 16, 6, 4),
        make_case("R=2 G=16 d64: 32 rows", 1, 150, 32, 2, 64, 64, 0, 16, 32, 4, 2),
        make_case("R=1 G=16 d64 B=2 (nsa-340M's heads)", 2, 300, 32, 2, 64, 64, 0, 16, 64, 5, 1),
        make_case("R=4 G=4 d64", 2, 77, 8, 2, 64, 64, 0, 8, 16, 5, 4),
        make_case("R=4 G=8 d160/128 B=2 (asa-340M's G layers)", 2, 300, 16, 2, 160, 128, 0, 16, 64, 5, 4),
        make_case("R=1 G=8 d160/128 b_s=32, split lists", 1, 1100, 8, 1, 160, 128, 0, 16, 32, 4, 1),
    };
    const int tma = asa_backend_cuda_tma(gpu_bf16, -1);
    printf("bf16 selected attention, d64, d128 and d160/128: Hopper path (TMA, wgmma) %s on this GPU\n",
           tma ? "on" : "not available");
    for (int pass = 0; pass < (tma ? 2 : 1); pass++) {
        asa_backend_cuda_tma(gpu_bf16, tma && pass == 0);
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) test_slc_tc(gpu_bf16, &c[i]);
    }
    TU_CHECK(asa_backend_cuda_tma(gpu_bf16, 1) == tma, "asa_backend_cuda_tma did not restore the setting");
}

// attn_fwd / attn_bwd (full and window) and attn_cmp_bwd of `tc` (attn_dense_mma.cu) against the CPU,
// with TOL_TF32 and its reasoning as for test_slc_tc (the same products, over the visible keys or the
// rows that see a key). attn_cmp_fwd keeps exact sums in these modes (its lse feeds select_topk): lse
// checked at TOL_ELEM, o at TOL_ELEM (tf32) or TOL_BF16 (bf16 storage). Backward runs from the CPU's o
// and lse, twice, bitwise equal. Raises worst[0] / worst[1] to o's error and the backward's errors (as
// test_slc_tc returns them: against the rounded CPU results in bf16) for head dims <= 128.
static void test_dense_tc(asa_backend *tc, const attn_case *c, double worst[2]) {
    const asa_attn_shape *s = &c->s;
    const int N = s->B * s->T, nb = s->block_size > 0 ? asa_attn_num_cmp_blocks(s) : 0;
    const size_t nq = (size_t)N * s->h * s->dk, nk = (size_t)N * s->g * s->dk, nv = (size_t)N * s->g * s->dv;
    const size_t no = (size_t)N * s->h * s->dv, nl = (size_t)N * s->h;
    const size_t nkc = (size_t)s->B * nb * s->g * s->dk, nvc = (size_t)s->B * nb * s->g * s->dv;
    char what[160];
    mode = asa_precision_name(tc->precision);
    snprintf(where, sizeof where, "%s %s", mode, c->name);
    float *q = h_rand(nq, 1), *k = h_rand(nk, 1), *v = h_rand(nv, 1), *dout = h_rand(no, 1);
    float *o = malloc(no * 4), *lse = malloc(nl * 4);
    void *gq = d_act(q, nq), *gk = d_act(k, nk), *gv = d_act(v, nv), *gdout = d_act(dout, no);
    void *go = d_act_nan(no);
    float *glse = d_f32_nan(nl);
    cpu->attn_fwd(cpu, s, q, k, v, o, lse);
    tc->attn_fwd(tc, s, gq, gk, gv, go, glse);
    float *h = h_act(go, no);
    const double eo = tu_rel_err_f(h, o, no), eo_tol = tol_act(TOL_TF32);
    const double eo_ind = bf16_mode() ? err_vs_rounded(h, o, no) : eo;
    TU_CHECK(eo < eo_tol, "%s %s attn_fwd o: relative error %.3e (tolerance %.0e)", mode, c->name, eo, eo_tol);
    note_bf16(0, eo);
    snprintf(what, sizeof what, "%s attn_fwd lse", c->name);
    const double el = expect_lse_tol(what, glse, lse, nl, TOL_TF32);
    d_act_set(go, o, no);
    gpu->to_device(gpu, glse, lse, nl * 4);

    // the dense backward, then (block_size > 0) the compressed branch's, each twice
    float *kc = malloc((nkc ? nkc : 1) * 4), *vc = malloc((nvc ? nvc : 1) * 4);
    void *gkc = NULL, *gvc = NULL;
    float *co = NULL, *clse = NULL;
    double eg[2][3] = {{0, 0, 0}, {0, 0, 0}}, ind[2][3] = {{0, 0, 0}, {0, 0, 0}};
    const int passes = s->block_size > 0 ? 2 : 1;
    for (int pass = 0; pass < passes; pass++) {
        const char *op = pass ? "attn_cmp_bwd" : "attn_bwd";
        const size_t n2 = pass ? nkc : nk, n3 = pass ? nvc : nv;
        if (pass) {
            cpu->compress_fwd(cpu, s, s->dk, k, kc);
            cpu->compress_fwd(cpu, s, s->dv, v, vc);
            round_act(kc, nkc);
            round_act(vc, nvc);
            co = malloc(no * 4), clse = malloc(nl * 4);
            cpu->attn_cmp_fwd(cpu, s, q, kc, vc, co, clse);
            gkc = d_act(kc, nkc), gvc = d_act(vc, nvc);
            d_act_poison(go, no);
            d_f32_poison(glse, nl);
            tc->attn_cmp_fwd(tc, s, gq, gkc, gvc, go, glse);
            snprintf(what, sizeof what, "%s attn_cmp_fwd o (exact sums)", c->name);
            expect_act(what, go, co, no, TOL_ELEM);
            snprintf(what, sizeof what, "%s attn_cmp_fwd lse (exact sums)", c->name);
            expect_lse(what, glse, clse, nl);
            d_act_set(go, co, no);
            gpu->to_device(gpu, glse, clse, nl * 4);
        }
        // this pass's keys and values, on the host and on the device, and the forward's o and lse
        const float *ck = pass ? kc : k, *cv = pass ? vc : v, *ro = pass ? co : o, *rl = pass ? clse : lse;
        const void *gck = pass ? gkc : gk, *gcv = pass ? gvc : gv;
        float *dq0 = h_rand(nq, 1), *dk0 = h_rand(n2, 1), *dv0 = h_rand(n3, 1);
        float *dq = h_dup(dq0, nq), *dk = h_dup(dk0, n2), *dv = h_dup(dv0, n3);
        if (pass) cpu->attn_cmp_bwd(cpu, s, q, ck, cv, ro, rl, dout, NULL, dq, dk, dv);
        else cpu->attn_bwd(cpu, s, q, ck, cv, ro, rl, dout, NULL, dq, dk, dv);
        // attn_bwd writes its gradients over the random start (increments from zero), attn_cmp_bwd adds
        float *zero = pass ? NULL : calloc(nq > n2 ? (nq > n3 ? nq : n3) : (n2 > n3 ? n2 : n3), sizeof(float));
        const float *ref[3] = {dq, dk, dv}, *ini[3] = {pass ? dq0 : zero, pass ? dk0 : zero, pass ? dv0 : zero};
        const size_t cnt[3] = {nq, n2, n3};
        static const char *const gname[3] = {"dq", "dk", "dv"};
        float *run[2][3];
        for (int r = 0; r < 2; r++) {
            void *gd[3] = {d_act(dq0, nq), d_act(dk0, n2), d_act(dv0, n3)};
            if (pass) tc->attn_cmp_bwd(tc, s, gq, gck, gcv, go, glse, gdout, NULL, gd[0], gd[1], gd[2]);
            else tc->attn_bwd(tc, s, gq, gck, gcv, go, glse, gdout, NULL, gd[0], gd[1], gd[2]);
            for (int x = 0; x < 3; x++) run[r][x] = h_act(gd[x], cnt[x]);
            for (int x = 0; x < 3 && r == 0; x++) {
                if (!pass && s->window == 1 && x < 2) {
                    // One visible key: the score gradient is zero (ds = dout.v - dout.o, o = v), so dq and
                    // dk's increments are the TF32 error of dout.v (~3e-4 relative on a dot of rms 8 at d =
                    // 64) times scale·k: rms about 3e-4, against ~0.1 for a real score gradient. Bound:
                    // 5e-3; in bf16 storage the rounded total moves from its bf16 start by at most a few
                    // times the increment: 1.5e-2.
                    const double bound = bf16_mode() ? 1.5e-2 : 5e-3;
                    double ss = 0;
                    for (size_t e = 0; e < cnt[x]; e++) {
                        const double d = (double)run[0][x][e] - ini[x][e];
                        ss += d * d;
                    }
                    eg[0][x] = sqrt(ss / (double)cnt[x]);
                    TU_CHECK(eg[0][x] < bound, "%s %s %s %s: rms increment %.3e, expected zero up to TF32 error",
                             mode, c->name, op, gname[x], eg[0][x]);
                } else {
                    snprintf(what, sizeof what, "%s %s %s", c->name, op, gname[x]);
                    eg[pass][x] = expect_increment(what, gd[x], ini[x], ref[x], cnt[x], TOL_TF32);
                    ind[pass][x] = bf16_mode() ? err_vs_rounded(run[0][x], ref[x], cnt[x]) : eg[pass][x];
                }
            }
            for (int x = 0; x < 3; x++) d_free(gd[x]);
        }
        TU_CHECK(!reproducible || (!memcmp(run[0][0], run[1][0], nq * 4) && !memcmp(run[0][1], run[1][1], n2 * 4) &&
                                   !memcmp(run[0][2], run[1][2], n3 * 4)),
                 "%s %s: two %s runs differ", mode, c->name, op);
        if (s->dk <= 128 && s->dv <= 128)
            for (int i = s->window == 1 && !pass ? 2 : 0; i < 3; i++)  // window 1: dq, dk are rms, not relative
                worst[1] = ind[pass][i] > worst[1] ? ind[pass][i] : worst[1];
        for (int r = 0; r < 2; r++) free(run[r][0]), free(run[r][1]), free(run[r][2]);
        free(dq0), free(dk0), free(dv0), free(dq), free(dk), free(dv), free(zero);
    }
    if (s->dk <= 128 && s->dv <= 128) worst[0] = eo_ind > worst[0] ? eo_ind : worst[0];
    printf("  %s %-24s B=%d T=%d h=%d g=%d dk=%d dv=%d w=%d b=%d: o %.1e lse %.1e d %.1e %.1e %.1e cmp d %.1e %.1e "
           "%.1e\n",
           mode, c->name, s->B, s->T, s->h, s->g, s->dk, s->dv, s->window, s->block_size, eo, el, eg[0][0], eg[0][1],
           eg[0][2], eg[1][0], eg[1][1], eg[1][2]);
    free(q), free(k), free(v), free(dout), free(o), free(lse), free(h), free(kc), free(vc), free(co), free(clse);
    d_free(gq), d_free(gk), d_free(gv), d_free(gdout), d_free(go), d_free(glse);
    if (gkc) d_free(gkc), d_free(gvc);
    mode = asa_precision_name(gpu->precision);
}

// bf16 attention at dk 160 / dv 128 (the compressed branch of asa-340M's G layers: latent 128 + RoPE 32),
// attn_dense16.cu's instance with halved key and row chunks: full attention, a window, and the compressed
// branch over 68 pooled keys (two dk/dv key blocks, the second partial, rows split over blocks).
static void test_dense16_d160(void) {
    const attn_case cases[] = {
        make_case("d160/128 full, cmp b=16", 1, 1100, 16, 2, 160, 128, 0, 16, 16, 1, 1),
        make_case("d160/128 window 45 G=4", 2, 300, 8, 2, 160, 128, 45, 8, 8, 1, 1),
    };
    double worst[2] = {0, 0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_dense_tc(gpu_bf16, &cases[i], worst);
}

// bf16 attention over pooled keys (attn_dense16.cu) at head dims 64, 128 and 160 / 128 on both paths
// (asa_backend_cuda_tma): Hopper's (the default there, so the main cases ran it), where dq (64 and 128) and
// the dk/dv pass run on warpgroup MMA, and every other GPU's mma.sync kernels. Full, window and compressed
// (1 to 37 pooled keys per sequence, the dk/dv rows split over blocks), B 2: tiles that end inside a sequence.
static void test_dense16_paths(void) {
    const attn_case c[] = {
        make_case("full G=16 d128 B=2, cmp b=16", 2, 300, 16, 1, 128, 128, 0, 16, 16, 1, 1),
        make_case("window 70 G=8 d64, cmp b=8", 1, 300, 16, 2, 64, 64, 70, 8, 8, 1, 1),
        make_case("full G=8 d160/128, cmp b=32", 1, 500, 8, 1, 160, 128, 0, 32, 32, 1, 1),
        make_case("window 9 G=2 d128 B=2, cmp b=64", 2, 130, 4, 2, 128, 128, 9, 64, 64, 1, 1),
    };
    const int tma = asa_backend_cuda_tma(gpu_bf16, -1);
    printf("bf16 attention over pooled keys, d64, d128 and d160/128: Hopper path (wgmma) %s on this GPU\n",
           tma ? "on" : "not available");
    double worst[2] = {0, 0};
    for (int pass = 0; pass < (tma ? 2 : 1); pass++) {
        asa_backend_cuda_tma(gpu_bf16, tma && pass == 0);
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) test_dense_tc(gpu_bf16, &c[i], worst);
    }
    TU_CHECK(asa_backend_cuda_tma(gpu_bf16, 1) == tma, "asa_backend_cuda_tma did not restore the setting");
}

// cuDNN's fused attention (bf16 mode, T a multiple of 128), checked like asa's kernels against the CPU:
// full and window, GQA and MHA, head dims 64, 128 and 160 / 128 (ASA's local layers), and the compressed
// branch over pooled keys (b 16, 32 and 64, 8 to 128 keys, below the default length it starts from; rows
// before the first complete block see nothing); every call must have run on cuDNN (a shape it refuses
// would fall back to asa's kernels and pass unseen otherwise).
static void test_cudnn(void) {
    const int version = asa_backend_cuda_cudnn(gpu_bf16, 1);
    if (!version) {
        printf("  SKIPPED cuDNN attention: this build has no cuDNN\n");
        return;
    }
    const attn_case cases[] = {
        make_case("cuDNN full G=4 d64, cmp b=16", 2, 256, 8, 2, 64, 64, 0, 16, 16, 1, 1),
        make_case("cuDNN window 100 d128", 1, 384, 4, 4, 128, 128, 100, 0, 16, 1, 1),
        make_case("cuDNN full G=16 d160/128, cmp b=32", 1, 256, 16, 1, 160, 128, 0, 32, 32, 1, 1),
        make_case("cuDNN cmp b=16 G=2 d128, 128 pooled keys", 1, 2048, 4, 2, 128, 128, 0, 16, 16, 1, 1),
        make_case("cuDNN cmp b=64 d128, 32 pooled keys", 1, 2048, 4, 1, 128, 128, 0, 64, 64, 1, 1),
    };
    const int ncases = (int)(sizeof cases / sizeof cases[0]);
    const long calls0 = asa_backend_cuda_cudnn_calls(gpu_bf16);
    const int min_keys[2] = {asa_backend_cuda_cudnn_cmp_min_keys(gpu_bf16, 0, 2),
                             asa_backend_cuda_cudnn_cmp_min_keys(gpu_bf16, 1, 2)};
    double worst[2] = {0, 0};
    long expected = 0;
    reproducible = 0;
    for (int i = 0; i < ncases; i++) {
        test_dense_tc(gpu_bf16, &cases[i], worst);
        expected += cases[i].s.block_size > 0 ? 6 : 3;  // forward and two backwards, per branch
    }
    reproducible = 1;
    asa_backend_cuda_cudnn_cmp_min_keys(gpu_bf16, 0, min_keys[0]);
    asa_backend_cuda_cudnn_cmp_min_keys(gpu_bf16, 1, min_keys[1]);
    const long calls = asa_backend_cuda_cudnn_calls(gpu_bf16) - calls0;
    TU_CHECK(calls == expected, "cuDNN %d served %ld of the %ld attention calls", version, calls, expected);
    printf("  cuDNN %d served %ld attention calls\n", version, calls);
    asa_backend_cuda_cudnn(gpu_bf16, 0);
}

// ---- decoding ----

// A cache of B sequences of S rows, row width W, viewed as GQA ([k] and v, separate buffers) or latent
// ([c_0 .. c_{g-1} | kr] rows, values c_j) keys; `base` and `vbase` are its key and value buffers, of
// elements of es bytes.
static asa_kv_view make_view(int latent, const void *base, const void *vbase, size_t es, int S, int g, int dk,
                             int dv, int dr) {
    asa_kv_view kv;
    memset(&kv, 0, sizeof kv);
    if (!latent) {
        kv.k1 = base, kv.k1_bs = (long)S * g * dk, kv.k1_rs = (long)g * dk, kv.k1_hs = dk, kv.dk1 = dk;
        kv.v = vbase, kv.v_bs = (long)S * g * dv, kv.v_rs = (long)g * dv, kv.v_hs = dv, kv.dv = dv;
        kv.k2 = NULL, kv.dk2 = 0;
    } else {  // dk = dv = d_c
        const long W = (long)g * dk + dr;
        kv.k1 = base, kv.k1_bs = S * W, kv.k1_rs = W, kv.k1_hs = dk, kv.dk1 = dk;
        kv.k2 = (const char *)base + (size_t)g * dk * es, kv.k2_bs = S * W, kv.k2_rs = W, kv.k2_hs = 0, kv.dk2 = dr;
        kv.v = base, kv.v_bs = S * W, kv.v_rs = W, kv.v_hs = dk, kv.dv = dk;
    }
    return kv;
}

// The decode ops keep fp32 sums in every mode: lse at TOL_ELEM, o as expect_act, lists exact. S rows: 150
// splits the window's keys in two chunks and the list in one entry a chunk; 4000, the window in dozens of
// chunks and the selection scores over two blocks of threads.
static void test_decode(int latent, int S) {
    const int B = 2, h = latent ? 4 : 6, g = 2, dk = latent ? 24 : 40, dv = latent ? 24 : 24, dr = latent ? 8 : 0;
    const int bsz = 4, bsel = 16, n = 5, t = S - 1, nbk = S / bsz;
    const int dq = dk + dr;
    const float scale = 1.0f / sqrtf((float)dq);
    const size_t W = latent ? (size_t)g * dk + dr : (size_t)g * dk;
    const size_t nkc = (size_t)B * S * W, nvc = latent ? 1 : (size_t)B * S * g * dv;
    const size_t npk = (size_t)B * nbk * W, npv = latent ? 1 : (size_t)B * nbk * g * dv;
    const size_t nqq = (size_t)B * h * dq, no = (size_t)B * h * dv, nl = (size_t)B * h, nidx = (size_t)B * g * n;
    const char *kind = latent ? "latent" : "gqa";
    snprintf(where, sizeof where, "%s decode %s", mode, kind);
    float *kc = h_rand(nkc, 1), *vc = h_rand(nvc, 1), *pk = h_rand(npk, 1), *pv = h_rand(npv, 1), *q = h_rand(nqq, 1);
    void *gkc = d_act(kc, nkc), *gvc = d_act(vc, nvc), *gpk = d_act(pk, npk), *gpv = d_act(pv, npv);
    void *gq = d_act(q, nqq), *go = d_act_nan(no);
    float *o = malloc(no * 4), *lse = malloc(nl * 4), *glse = d_f32_nan(nl);
    asa_kv_view kv = make_view(latent, kc, latent ? kc : vc, sizeof(float), S, g, dk, dv, dr);
    asa_kv_view gkv = make_view(latent, gkc, latent ? gkc : gvc, esz(), S, g, dk, dv, dr);
    asa_kv_view pkv = make_view(latent, pk, latent ? pk : pv, sizeof(float), nbk, g, dk, dv, dr);
    asa_kv_view gpkv = make_view(latent, gpk, latent ? gpk : gpv, esz(), nbk, g, dk, dv, dr);
    char what[96];

    // a window of rows, then no rows at all
    cpu->attn_decode(cpu, B, h, g, scale, q, &kv, 37, S, o, lse);
    gpu->attn_decode(gpu, B, h, g, scale, gq, &gkv, 37, S, go, glse);
    snprintf(what, sizeof what, "%s attn_decode o", kind);
    expect_act(what, go, o, no, TOL_ELEM);
    snprintf(what, sizeof what, "%s attn_decode lse", kind);
    expect_lse(what, glse, lse, nl);
    d_act_poison(go, no);
    cpu->attn_decode(cpu, B, h, g, scale, q, &kv, 5, 5, o, lse);
    gpu->attn_decode(gpu, B, h, g, scale, gq, &gkv, 5, 5, go, glse);
    snprintf(what, sizeof what, "%s attn_decode empty", kind);
    expect_act(what, go, o, no, TOL_ELEM);
    expect_lse(what, glse, lse, nl);

    // compression branch over the pooled rows, selection from its lse, selected attention
    cpu->attn_decode(cpu, B, h, g, scale, q, &pkv, 0, (t + 1) / bsz, o, lse);
    gpu->to_device(gpu, glse, lse, nl * 4);
    int32_t *idx = malloc(nidx * 4), *hidx = malloc(nidx * 4), *gidx = d_alloc(nidx * 4);
    cpu->select_decode(cpu, B, h, g, scale, q, &pkv, lse, t, bsz, bsel, n, idx);
    gpu->select_decode(gpu, B, h, g, scale, gq, &gpkv, glse, t, bsz, bsel, n, gidx);
    gpu->to_host(gpu, hidx, gidx, nidx * 4);
    size_t diff = 0;
    for (size_t e = 0; e < nidx; e++) diff += idx[e] != hidx[e];
    TU_CHECK(diff == 0, "%s %s select_decode: %zu of %zu entries differ from the CPU's", mode, kind, diff, nidx);
    gpu->to_device(gpu, gidx, idx, nidx * 4);
    d_act_poison(go, no);
    d_f32_poison(glse, nl);
    cpu->attn_slc_decode(cpu, B, h, g, scale, q, &kv, idx, t - 3, bsel, n, o, lse);
    gpu->attn_slc_decode(gpu, B, h, g, scale, gq, &gkv, gidx, t - 3, bsel, n, go, glse);
    snprintf(what, sizeof what, "%s attn_slc_decode o", kind);
    expect_act(what, go, o, no, TOL_ELEM);
    snprintf(what, sizeof what, "%s attn_slc_decode lse", kind);
    expect_lse(what, glse, lse, nl);
    printf("  %s decode %-6s B=%d S=%d h=%d g=%d dk=%d+%d dv=%d\n", mode, kind, B, S, h, g, dk, dr, dv);

    free(kc), free(vc), free(pk), free(pv), free(q), free(o), free(lse), free(idx), free(hidx);
    d_free(gkc), d_free(gvc), d_free(gpk), d_free(gpv), d_free(gq), d_free(go), d_free(glse), d_free(gidx);
}

// Every attention op on `gpu`, then the tensor-core kernels on tc (gpu_tf32 with gpu_fp32, gpu_bf16 with
// itself), then decoding. The bf16 mode runs three of the select_topk cases (two on its tensor-core kernel;
// dk 44, not a multiple of 8, on the fp32 kernel).
static void test_attention(asa_backend *tc) {
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
    const int all = !bf16_mode();
    test_select_topk("1250 blocks", 1, 20000, 4, 2, 32, 16, 16, 16, 1, 0);
    test_select_topk("16 heads per group, R=4", 1, 8192, 16, 1, 128, 64, 64, 16, 4, 0);
    if (all) test_select_topk("2 blocks per selection", 2, 16421, 8, 2, 64, 16, 32, 16, 4, 0);
    if (all) test_select_topk("128 heads per group", 1, 1024, 128, 1, 16, 16, 64, 5, 1, 0);
    if (all) test_select_topk("64 blocks per selection", 1, 2000, 2, 1, 8, 4, 256, 4, 2, 0);
    test_select_topk("pairs tied, dk tail", 1, 4096, 6, 2, 44, 8, 16, 16, 1, 1);
    if (all) test_select_topk("all tied, R=4", 1, 3000, 4, 1, 20, 16, 16, 8, 4, 2);
    if (all) test_select_topk("1088 blocks all tied", 1, 17408, 2, 1, 16, 16, 16, 16, 1, 2);
    // exact ties through the bf16 tensor-core kernel (dk a multiple of 8), one and two pooled keys per block
    test_select_topk("pairs tied, d64", 1, 4096, 16, 1, 64, 16, 16, 16, 1, 1);
    test_select_topk("all tied, d64, 2 per block", 1, 3000, 16, 2, 64, 16, 32, 8, 2, 2);
    // the scores summed in registers for every G it takes (16 % G == 0; 16 above): 8 and 4 tied, 1 and 2
    test_select_topk("pairs tied, d64, G=8", 1, 2500, 16, 2, 64, 16, 16, 12, 1, 1);
    test_select_topk("all tied, d32, G=4, R=2", 1, 2100, 8, 2, 32, 16, 16, 8, 2, 2);
    test_select_topk("G=1, d128", 2, 3000, 4, 4, 128, 32, 32, 16, 1, 0);
    // Hopper's warpgroup kernel at dk 160 (asa-340M's latent keys: three boxes, the last half read), and dk 120,
    // no whole box, on the mma.sync kernel in tiles of 128 (columns past dk zero), G = 4 tied
    test_select_topk("G=8, d160, R=4", 1, 6000, 16, 2, 160, 64, 64, 16, 4, 0);
    test_select_topk("pairs tied, d120, G=4", 1, 3000, 8, 2, 120, 16, 16, 16, 1, 1);

    // selected attention on the tensor cores: R·G = 16 (one m-tile), 64 (four), 32 (two), 1 and 4 (padded
    // rows); T not a multiple of b_s or of R, T < b_s; head dims 128, 96 / 64, 64, padded 40 / 24, 160 /
    // 128 (the latent keys of asa-340M's G layers), and 200 / 160 (over 160: the fp32 kernels serve the
    // tf32 and bf16 modes too); selection blocks of 128 (several key chunks and dk/dv key tiles per
    // block); lists long enough to be split
    const attn_case slc_cases[] = {
        make_case("R=1 G=16 d128", 1, 300, 16, 1, 128, 128, 0, 16, 32, 5, 1),
        make_case("R=4 G=16 d128", 1, 150, 32, 2, 128, 128, 0, 16, 16, 6, 4),
        make_case("R=4 G=4 d64", 2, 77, 8, 2, 64, 64, 0, 8, 16, 5, 4),
        make_case("R=1 G=1 T<b_s", 1, 20, 4, 4, 64, 64, 0, 8, 32, 3, 1),
        make_case("R=4 G=8 d96/64", 1, 130, 8, 1, 96, 64, 0, 16, 32, 4, 4),
        make_case("R=2 G=2 d40/24", 2, 150, 4, 2, 40, 24, 0, 8, 16, 5, 2),
        make_case("R=4 G=1 d128/64", 1, 100, 2, 2, 128, 64, 0, 8, 16, 4, 4),
        make_case("b_s=128", 1, 300, 16, 1, 64, 64, 0, 32, 128, 3, 1),
        // over 512 anchors list block 0: the dk/dv pass splits the list and adds the parts in order
        make_case("split lists", 1, 1100, 16, 1, 64, 64, 0, 16, 16, 4, 1),
        make_case("R=4 G=8 d160/128 (asa-340M G)", 1, 260, 16, 2, 160, 128, 0, 16, 64, 4, 4),
        make_case("wide heads (fp32 kernels)", 1, 70, 2, 1, 200, 160, 0, 8, 16, 3, 2),
    };
    // A larger error than fp32 kernels give shows the tensor cores in use: against the CPU in tf32 mode
    // (fp32 kernels agree to ~1e-7); against the CPU's results rounded to bf16 in bf16 mode (fp32 kernels
    // ~2e-5, TF32 products ~8e-4: see err_vs_rounded).
    const double slc_floor = tc->act == ASA_BF16 ? 1.5e-4 : 1e-5, dense_floor = tc->act == ASA_BF16 ? 1.5e-4 : 1e-6;
    double slc_worst = 0;
    for (size_t i = 0; i < sizeof slc_cases / sizeof slc_cases[0]; i++) {
        const double e = test_slc_tc(tc, &slc_cases[i]);
        if (slc_cases[i].s.dk <= 160) slc_worst = e > slc_worst ? e : slc_worst;
    }
    TU_CHECK(slc_worst > slc_floor, "%s attn_slc_fwd: worst error %.2e, no larger than fp32 arithmetic gives",
             asa_precision_name(tc->precision), slc_worst);
    // full / window attention and compressed backward on the tensor cores: T not a multiple of the 64-row
    // tiles, T < 16, window 1 and window >= T, G = 1, 4 and 16, head dims 32, 64, 96 / 64 (ASA's local
    // layers), 128 and padded 40 / 24, and 200 / 160 (over 128: the fp32 kernels serve these modes too);
    // the dk/dv pass splits its rows over blocks at these lengths, and T = 2048 gives long compressed-key
    // row streams
    const attn_case dense_cases[] = {
        make_case("full G=1 d64", 2, 150, 4, 4, 64, 64, 0, 16, 16, 1, 1),
        make_case("window 37 G=4 d128", 1, 300, 16, 4, 128, 128, 37, 32, 32, 1, 1),
        make_case("T<16 G=16 d32", 1, 11, 16, 1, 32, 32, 0, 4, 4, 1, 1),
        make_case("window 1", 1, 100, 2, 2, 64, 64, 1, 0, 16, 1, 1),
        make_case("window>=T d96/64", 2, 90, 8, 2, 96, 64, 200, 8, 8, 1, 1),
        make_case("full G=16 d128", 1, 200, 32, 2, 128, 128, 0, 16, 16, 1, 1),
        make_case("d40/24 G=2", 2, 77, 4, 2, 40, 24, 20, 8, 8, 1, 1),
        make_case("long cmp b=16", 1, 2048, 4, 2, 32, 32, 0, 16, 16, 1, 1),
        make_case("wide heads (fp32 kernels)", 1, 70, 2, 1, 200, 160, 5, 8, 8, 1, 1),
    };
    double dense_worst[2] = {0, 0};
    for (size_t i = 0; i < sizeof dense_cases / sizeof dense_cases[0]; i++)
        test_dense_tc(tc, &dense_cases[i], dense_worst);
    TU_CHECK(dense_worst[0] > dense_floor && dense_worst[1] > dense_floor,
             "%s dense attention: worst errors %.2e (forward) %.2e (backward), no larger than fp32 gives",
             asa_precision_name(tc->precision), dense_worst[0], dense_worst[1]);
    test_decode(0, 150);
    test_decode(0, 4000);
    test_decode(1, 150);
    test_decode(1, 4000);
}

int main(void) {
    gpu_fp32 = asa_backend_cuda_new(0, ASA_PRECISION_FP32);
    if (!gpu_fp32) {
        printf("SKIPPED: %s\n", asa_err_msg());
        return 77;
    }
    gpu_tf32 = asa_backend_cuda_new(0, ASA_PRECISION_TF32);
    TU_CHECK(gpu_tf32 && gpu_tf32->precision == ASA_PRECISION_TF32 && gpu_tf32->act == ASA_F32,
             "no tf32 CUDA backend with fp32 storage: %s", asa_err_msg());
    gpu_bf16 = asa_backend_cuda_new(0, ASA_PRECISION_BF16);
    TU_CHECK(gpu_bf16 && gpu_bf16->precision == ASA_PRECISION_BF16 && gpu_bf16->act == ASA_BF16,
             "no bf16 CUDA backend with bf16 storage: %s", asa_err_msg());
    TU_CHECK(gpu_fp32->act == ASA_F32, "the fp32 CUDA backend stores %s", asa_dtype_name(gpu_fp32->act));
    // asa's own kernels under test; test_cudnn turns cuDNN's attention on for its cases
    if (gpu_bf16) asa_backend_cuda_cudnn(gpu_bf16, 0);
    if (!gpu_tf32 || !gpu_bf16) return tu_finish("test_gpu_ops");
    TU_CHECK(asa_backend_cuda_new(0, 7) == NULL, "an unknown precision was accepted");
    cpu = asa_backend_cpu_new();
    asa_rng_seed(&rng, 2024);

    gpu = gpu_fp32, mode = "fp32";
    // K <= 300 products, blocked differently: fp32 agrees to ~1e-7
    double worst_tf32 = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            test_gemm(gpu, TOL_ELEM, ASA_F32, ta, tb, 37, 53, 71, 0, 1, 0, 0.0f);
            test_gemm(gpu, TOL_ELEM, ASA_F32, ta, tb, 37, 53, 71, 5, 3, 1, 1.0f);
            test_gemm(gpu, TOL_ELEM, ASA_F32, ta, tb, 64, 48, 300, 3, 2, 2, 0.5f);
            double e[3] = {test_gemm(gpu_tf32, TOL_TF32, ASA_F32, ta, tb, 37, 53, 71, 0, 1, 0, 0.0f),
                           test_gemm(gpu_tf32, TOL_TF32, ASA_F32, ta, tb, 37, 53, 71, 5, 3, 1, 1.0f),
                           test_gemm(gpu_tf32, TOL_TF32, ASA_F32, ta, tb, 64, 48, 300, 3, 2, 2, 0.5f)};
            for (int i = 0; i < 3; i++) worst_tf32 = e[i] > worst_tf32 ? e[i] : worst_tf32;
        }
    test_gemm(gpu, TOL_ELEM, ASA_F32, 0, 1, 20, 30, 0, 0, 2, 0, 0.0f);  // K = 0: C = beta C
    test_gemm(gpu, TOL_ELEM, ASA_F32, 0, 1, 20, 30, 0, 0, 2, 0, 0.5f);
    test_gemm(gpu_tf32, TOL_ELEM, ASA_F32, 0, 1, 20, 30, 0, 0, 2, 0, 0.5f);  // no product: exact in tf32 mode too
    double big = test_gemm(gpu_tf32, TOL_TF32, ASA_F32, 0, 1, 512, 512, 1024, 0, 1, 0, 0.0f);
    TU_CHECK(big > 1e-4, "tf32 gemm 512x512x1024: relative error %.2e, no larger than fp32 arithmetic gives", big);
    printf("  gemm tf32: worst relative error %.2e on the small shapes, %.2e at 512x512x1024\n", worst_tf32, big);
    test_dense_ops();
    test_attention(gpu_tf32);

    gpu = gpu_bf16, mode = "bf16";
    test_dense_ops();
    test_attention(gpu_bf16);
    test_slc16_many_rows();
    test_slc16_tma();
    test_dense16_d160();
    test_dense16_paths();
    test_cudnn();
    // gemm last (cuBLASLt aborts the program if it has no kernel for a bf16 layout, after every other
    // result). Operands bf16 (the tensor cores multiply them exactly into fp32), sums fp32: with an fp32 C
    // the product agrees with the CPU's fp32 sgemm on the same rounded operands to fp32 summation error
    // (~1e-6 at K <= 300, ~1e-5 if the tensor cores truncate their sums), so TOL_LONG, below the 1e-3 that
    // rounding C to bf16 would give; with a bf16 C, TOL_BF16 (one rounding of each output).
    double worst_bf16_gemm[2] = {0, 0};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int cb = 0; cb < 2; cb++) {
                const asa_dtype ct = cb ? ASA_BF16 : ASA_F32;
                const double tol = cb ? TOL_BF16 : TOL_LONG;
                double e[3] = {test_gemm(gpu, tol, ct, ta, tb, 37, 53, 71, 0, 1, 0, 0.0f),
                               test_gemm(gpu, tol, ct, ta, tb, 37, 53, 71, 5, 3, 1, 1.0f),
                               test_gemm(gpu, tol, ct, ta, tb, 64, 48, 300, 3, 2, 2, 0.5f)};
                for (int i = 0; i < 3; i++) worst_bf16_gemm[cb] = e[i] > worst_bf16_gemm[cb] ? e[i] : worst_bf16_gemm[cb];
            }
    test_gemm(gpu, TOL_ELEM, ASA_BF16, 0, 1, 20, 30, 0, 0, 2, 0, 0.0f);  // K = 0: C = beta C, exact for beta 0, 1/2
    test_gemm(gpu, TOL_ELEM, ASA_BF16, 0, 1, 20, 30, 0, 0, 2, 0, 0.5f);
    test_gemm(gpu, TOL_ELEM, ASA_F32, 0, 1, 20, 30, 0, 0, 2, 0, 0.5f);
    const double big_bf16 = test_gemm(gpu, TOL_BF16, ASA_BF16, 0, 1, 512, 512, 1024, 0, 1, 0, 0.0f);
    printf("  gemm bf16: worst relative error %.2e (C fp32), %.2e (C bf16) on the small shapes, %.2e at "
           "512x512x1024 (C bf16)\n",
           worst_bf16_gemm[0], worst_bf16_gemm[1], big_bf16);
    printf("  bf16: worst relative error %.2e of an output, %.2e of a gradient increment\n", worst_bf16[0],
           worst_bf16[1]);
    TU_CHECK(nlive == 0, "%d device tensors not freed by the test", nlive);

    asa_backend_free(cpu);
    asa_backend_free(gpu_fp32);
    asa_backend_free(gpu_tf32);
    asa_backend_free(gpu_bf16);
    return tu_finish("test_gpu_ops");
}
