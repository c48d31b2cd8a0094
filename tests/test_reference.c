// The C model against the independent PyTorch implementation (tools/reference/asa_ref.py, float64):
// for each committed fixture, the same config, weights and tokens must give the same logits and loss
// (relative error < 1e-4), the same gradient for every parameter (< 1e-3), the same residual stream
// after every layer, and the same selected block sets in every N and G layer.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "asa/config.h"
#include "backend/backend.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "model/model.h"
#include "testutil.h"

static float *read_f32(asa_st_file *f, const char *name, size_t expect) {
    const asa_st_tensor *t = asa_st_find(f, name);
    TU_CHECK(t != NULL, "%s: tensor %s missing", f->path, name);
    if (!t) return NULL;
    TU_CHECK(t->numel == expect, "%s: %s has %zu elements, expected %zu", f->path, name, t->numel, expect);
    if (t->numel != expect) return NULL;
    float *x = malloc(sizeof(float) * (expect ? expect : 1));
    if (asa_st_read_f32(f, t, x, expect) != ASA_OK) {
        TU_CHECK(0, "%s", asa_err_msg());
        free(x);
        return NULL;
    }
    return x;
}

static double rel_err(const float *a, const float *ref, size_t n) { return tu_rel_err_f(a, ref, n); }

static void compare_block_sets(const char *fx, int l, const int32_t *mine, const int32_t *ref, size_t rows, int n) {
    int mismatches = 0;
    for (size_t r = 0; r < rows; r++) {
        // both rows: ascending, -1 padded; compare as sets
        int32_t a[64], b[64];
        int na = 0, nb = 0;
        for (int i = 0; i < n && i < 64; i++) {
            if (mine[r * n + i] >= 0) a[na++] = mine[r * n + i];
            if (ref[r * n + i] >= 0) b[nb++] = ref[r * n + i];
        }
        int same = na == nb;
        for (int i = 0; same && i < na; i++) {
            int found = 0;
            for (int j = 0; j < nb; j++) found |= a[i] == b[j];
            same = found;
        }
        mismatches += !same;
    }
    TU_CHECK(mismatches == 0, "%s: layer %d: %d of %zu block lists differ from the reference", fx, l, mismatches, rows);
}

static void check_fixture(const char *name) {
    char dir[256], path[300];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    snprintf(path, sizeof path, "%s/config.json", dir);
    asa_config cfg;
    if (asa_config_load(path, &cfg) != ASA_OK) {
        TU_CHECK(0, "%s", asa_err_msg());
        return;
    }
    snprintf(path, sizeof path, "%s/fixture.safetensors", dir);
    asa_st_file f;
    if (asa_st_open(path, &f) != ASA_OK) {
        TU_CHECK(0, "%s", asa_err_msg());
        return;
    }
    const asa_st_tensor *tt = asa_st_find(&f, "tokens");
    TU_CHECK(tt && tt->ndim == 2, "%s: tokens [B, T] missing", path);
    if (!tt || tt->ndim != 2) return;
    int B = (int)tt->shape[0], T = (int)tt->shape[1], N = B * T, V = cfg.vocab_size;
    int32_t *tokens = malloc(sizeof(int32_t) * N), *targets = malloc(sizeof(int32_t) * N);
    asa_st_read_i32(&f, tt, tokens, N);
    asa_st_read_i32(&f, asa_st_find(&f, "targets"), targets, N);

    asa_backend *be = asa_backend_cpu_new();
    asa_model m;
    asa_model_init(&m, &cfg, be, 1);
    float *host = calloc(m.layout.total, sizeof(float));
    for (int i = 0; i < m.layout.count; i++) {
        const asa_tensor_info *t = &m.layout.tensors[i];
        float *x = read_f32(&f, t->name, t->numel);
        if (x) memcpy(host + t->offset, x, sizeof(float) * t->numel);
        free(x);
    }
    asa_model_set_params(&m, host);

    asa_model_zero_grad(&m);
    float loss = asa_model_forward(&m, tokens, targets, B, T);
    float *ref_loss = read_f32(&f, "loss", 1), *ref_logits = read_f32(&f, "logits", (size_t)N * V);
    double e_logits = ref_logits ? rel_err((const float *)m.logits, ref_logits, (size_t)N * V) : INFINITY;
    double e_loss = ref_loss ? fabs(loss - ref_loss[0]) / fabs(ref_loss[0]) : INFINITY;
    TU_CHECK(e_logits < 1e-4, "%s: logits relative error %.3e", name, e_logits);
    TU_CHECK(e_loss < 1e-4, "%s: loss %.7f vs reference %.7f", name, loss, ref_loss ? ref_loss[0] : NAN);
    double e_hidden = 0;
    for (int l = 0; l < cfg.num_hidden_layers; l++) {
        char nm[64];
        snprintf(nm, sizeof nm, "hidden.%d", l);
        float *ref = read_f32(&f, nm, (size_t)N * cfg.hidden_size);
        double e = ref ? rel_err((const float *)m.res + (size_t)(l + 1) * N * cfg.hidden_size, ref, (size_t)N * cfg.hidden_size) : INFINITY;
        TU_CHECK(e < 1e-4, "%s: residual stream after layer %d: relative error %.3e", name, l, e);
        if (e > e_hidden) e_hidden = e;
        free(ref);
        char kind = cfg.layer_kinds[l];
        if (kind == 'N' || kind == 'G') {
            snprintf(nm, sizeof nm, "block_idx.%d", l);
            const asa_st_tensor *bt = asa_st_find(&f, nm);
            int g = kind == 'N' ? cfg.num_kv_heads : cfg.latent_groups;
            size_t rows = (size_t)B * ((T + cfg.selection_share - 1) / cfg.selection_share) * g;
            TU_CHECK(bt && bt->numel == rows * cfg.block_counts, "%s: %s missing or wrong size", name, nm);
            if (bt && bt->numel == rows * cfg.block_counts) {
                int32_t *ref_idx = malloc(sizeof(int32_t) * bt->numel);
                asa_st_read_i32(&f, bt, ref_idx, bt->numel);
                compare_block_sets(name, l, m.la[l].idx, ref_idx, rows, cfg.block_counts);
                free(ref_idx);
            }
        }
    }
    asa_model_backward(&m, 1.0f);
    double e_grad = 0;
    const char *worst = "-";
    for (int i = 0; i < m.layout.count; i++) {
        const asa_tensor_info *t = &m.layout.tensors[i];
        char nm[128];
        snprintf(nm, sizeof nm, "grad.%s", t->name);
        float *ref = read_f32(&f, nm, t->numel);
        double e = ref ? rel_err(m.grads + t->offset, ref, t->numel) : INFINITY;
        TU_CHECK(e < 1e-3, "%s: gradient of %s: relative error %.3e", name, t->name, e);
        if (e > e_grad) e_grad = e, worst = t->name;
        free(ref);
    }
    printf("  %-7s logits %.2e  loss %.2e  hidden %.2e  worst gradient %.2e (%s)\n", name, e_logits, e_loss, e_hidden,
           e_grad, worst);
    free(ref_loss);
    free(ref_logits);
    free(host);
    free(tokens);
    free(targets);
    asa_model_free(&m);
    asa_backend_free(be);
    asa_st_close(&f);
}

int main(void) {
    const char *fixtures[] = {"f", "n_r1", "n_r4", "n_bs4", "gl_r1", "gl_r4", "lg_r1", "lg_r4"};
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) check_fixture(fixtures[i]);
    return tu_finish("test_reference");
}
