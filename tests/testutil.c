#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int tu_failures = 0;
int tu_checks = 0;

#define GUARD 64
static const uint32_t GUARD_BITS = 0x7fc0dead;  // a quiet NaN with a recognisable payload

double tu_rel_err(const float *a, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    if (den < 1e-300) return sqrt(num);
    return sqrt(num / den);
}

double tu_rel_err_f(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (den < 1e-300) return sqrt(num);
    return sqrt(num / den);
}

double tu_max_abs_diff(const float *a, const double *ref, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = fabs((double)a[i] - ref[i]);
        if (d > m) m = d;
    }
    return m;
}

void tu_fill_normal(float *x, size_t n, asa_rng *r, float stddev) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(stddev * asa_rng_normal(r));
}

void tu_fill_uniform(float *x, size_t n, asa_rng *r, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)asa_rng_uniform(r);
}

static void fill_bits(float *p, size_t n, uint32_t bits) {
    for (size_t i = 0; i < n; i++) memcpy(&p[i], &bits, 4);
}

float *tu_guarded_new(size_t n) {
    float *base = malloc((n + 2 * GUARD) * sizeof(float));
    if (!base) { fprintf(stderr, "out of memory\n"); exit(2); }
    fill_bits(base, GUARD, GUARD_BITS);
    fill_bits(base + GUARD + n, GUARD, GUARD_BITS);
    tu_guarded_poison(base + GUARD, n);
    return base + GUARD;
}

void tu_guarded_poison(float *p, size_t n) { for (size_t i = 0; i < n; i++) p[i] = NAN; }

int tu_guard_ok(const float *p, size_t n) {
    const float *lo = p - GUARD, *hi = p + n;
    for (int i = 0; i < GUARD; i++) {
        uint32_t a, b;
        memcpy(&a, &lo[i], 4);
        memcpy(&b, &hi[i], 4);
        if (a != GUARD_BITS || b != GUARD_BITS) return 0;
    }
    return 1;
}

void tu_guarded_free(float *p) { if (p) free(p - GUARD); }

int tu_finish(const char *name) {
    printf("%s: %d checks, %d failures\n", name, tu_checks, tu_failures);
    return tu_failures ? 1 : 0;
}

asa_config tu_tiny_config(const char *pattern, int R) {
    asa_config c;
    memset(&c, 0, sizeof c);
    strcpy(c.model_type, "asa");
    c.vocab_size = 48;
    c.hidden_size = 32;
    c.intermediate_size = 48;
    c.num_hidden_layers = (int)strlen(pattern) < 2 ? 2 : (int)strlen(pattern);
    c.max_position_embeddings = 256;
    c.norm_eps = 1e-6f;
    c.rope_theta = 10000.0f;
    c.initializer_range = 0.3f;
    snprintf(c.layer_pattern, sizeof c.layer_pattern, "%s", pattern);
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 8;
    c.qk_nope_head_dim = 8;
    c.qk_rope_head_dim = 4;
    c.v_head_dim = 8;
    c.kv_lora_rank = 16;
    c.latent_groups = 2;
    c.latent_dim = 8;
    c.window_size = 6;
    c.block_size = 4;
    c.selection_block_size = 8;
    c.block_counts = 4;
    c.selection_share = R;
    strcpy(c.compress, "mean");
    if (asa_config_validate(&c, "tiny") != ASA_OK) {
        fprintf(stderr, "tiny config invalid: %s\n", asa_err_msg());
        exit(1);
    }
    return c;
}

asa_config tu_tiny_shapes_config(const char *pattern) {
    asa_config c = tu_tiny_config(pattern, 4);
    c.hidden_size = 128;
    c.intermediate_size = 256;
    c.num_heads = 4;
    c.head_dim = 32;
    c.qk_nope_head_dim = 32;
    c.qk_rope_head_dim = 16;
    c.v_head_dim = 32;
    c.kv_lora_rank = 64;
    c.latent_dim = 32;
    c.window_size = 64;
    c.block_size = 16;
    c.selection_block_size = 16;
    c.initializer_range = 0.1f;
    if (asa_config_validate(&c, "asa-tiny shapes") != ASA_OK) {
        fprintf(stderr, "asa-tiny shapes config invalid: %s\n", asa_err_msg());
        exit(1);
    }
    return c;
}
