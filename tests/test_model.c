// Whole-model tests on the CPU backend, for tiny models of every pattern the issue names
// (F, W, N, GL, LG): gradients against finite differences of the loss, overfitting one batch, and
// activation recomputation giving bit-identical results.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "asa/config.h"
#include "backend/backend.h"
#include "core/error.h"
#include "model/model.h"
#include "testutil.h"
#include "train/optimizer.h"

static void random_batch(asa_rng *r, int32_t *tok, int32_t *tgt, int n, int V) {
    for (int i = 0; i < n; i++) {
        tok[i] = (int32_t)asa_rng_below(r, (uint32_t)V);
        tgt[i] = (i % 7 == 3) ? -1 : (int32_t)asa_rng_below(r, (uint32_t)V);
    }
}

// Block lists of every sparse layer after the last forward, concatenated (to detect selection flips).
static size_t snapshot_idx(asa_model *m, int32_t *out) {
    size_t n = 0;
    const asa_config *c = &m->cfg;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        char k = c->layer_kinds[l];
        if (k != 'N' && k != 'G') continue;
        int g = k == 'N' ? c->num_kv_heads : c->latent_groups;
        size_t cnt = (size_t)m->cur_B * ((m->cur_T + c->selection_share - 1) / c->selection_share) * g * c->block_counts;
        if (out) memcpy(out + n, m->la[l].idx, cnt * sizeof(int32_t));
        n += cnt;
    }
    return n;
}

// For every parameter tensor: the directional derivative along a random direction confined to that
// tensor, from backward, against a central difference of the fp32 loss. fp32 loss rounding (~5e-7 of
// a loss near 5) over a step of 2*eps*|v| = 6e-3 puts the difference's error near 2e-4 absolute, and
// the O(eps^2) truncation term is below 1% for these smooth functions: hence 2e-2 relative + 5e-4
// absolute. Directions whose perturbation flips a block selection
// (top-k is not differentiable) are redrawn.
static void check_gradients(const char *pattern, int R) {
    asa_config c = tu_tiny_config(pattern, R);
    asa_backend *be = asa_backend_cpu_new();
    asa_model m;
    asa_model_init(&m, &c, be, 11);
    const int B = 2, T = 41;
    int32_t tok[B * T], tgt[B * T];
    asa_rng r;
    asa_rng_seed(&r, 5);
    random_batch(&r, tok, tgt, B * T, c.vocab_size);
    asa_model_zero_grad(&m);
    asa_model_forward(&m, tok, tgt, B, T);
    size_t nidx = snapshot_idx(&m, NULL);
    int32_t *idx0 = malloc(sizeof(int32_t) * (nidx + 1)), *idx1 = malloc(sizeof(int32_t) * (nidx + 1));
    snapshot_idx(&m, idx0);
    asa_model_backward(&m, 1.0f);
    float *p0 = malloc(sizeof(float) * m.layout.total), *grad = malloc(sizeof(float) * m.layout.total);
    memcpy(p0, m.params, sizeof(float) * m.layout.total);
    memcpy(grad, m.grads, sizeof(float) * m.layout.total);
    const float eps = 3e-3f;
    int worst = -1;
    double worst_err = 0;
    for (int ti = 0; ti < m.layout.count; ti++) {
        const asa_tensor_info *t = &m.layout.tensors[ti];
        float *v = malloc(sizeof(float) * t->numel);
        double analytic = 0, numeric = 0;
        int ok_dir = 0;
        for (int attempt = 0; attempt < 8 && !ok_dir; attempt++) {
            double norm = 0;
            for (size_t i = 0; i < t->numel; i++) v[i] = (float)asa_rng_normal(&r), norm += (double)v[i] * v[i];
            norm = sqrt(norm);
            for (size_t i = 0; i < t->numel; i++) v[i] = (float)(v[i] / norm);
            analytic = 0;
            for (size_t i = 0; i < t->numel; i++) analytic += (double)grad[t->offset + i] * v[i];
            double lp, lm;
            int flipped = 0;
            for (int sgn = -1; sgn <= 1; sgn += 2) {
                memcpy(m.params, p0, sizeof(float) * m.layout.total);
                for (size_t i = 0; i < t->numel; i++) m.params[t->offset + i] += sgn * eps * v[i];
                double l = asa_model_forward(&m, tok, tgt, B, T);
                snapshot_idx(&m, idx1);
                if (memcmp(idx0, idx1, sizeof(int32_t) * nidx) != 0) flipped = 1;
                if (sgn < 0) lm = l; else lp = l;
            }
            if (flipped) continue;
            numeric = (lp - lm) / (2.0 * eps);
            ok_dir = 1;
        }
        TU_CHECK(ok_dir, "%s: every direction flipped a block selection", t->name);
        double err = fabs(analytic - numeric) / (fabs(numeric) + 1e-2);
        TU_CHECK(fabs(analytic - numeric) <= 2e-2 * fabs(numeric) + 5e-4,
                 "pattern %s R=%d %s: backward %.6e vs finite difference %.6e", pattern, R, t->name, analytic, numeric);
        if (err > worst_err) worst_err = err, worst = ti;
        free(v);
    }
    printf("  gradients %-3s R=%d: %d tensors, worst %s (rel %.2e)\n", pattern, R, m.layout.count,
           worst >= 0 ? m.layout.tensors[worst].name : "-", worst_err);
    free(p0);
    free(grad);
    free(idx0);
    free(idx1);
    asa_model_free(&m);
    asa_backend_free(be);
}

// A tiny model memorises one fixed batch: the loss must fall by more than 90%.
static void check_overfit(const char *pattern, int R) {
    asa_config c = tu_tiny_config(pattern, R);
    c.initializer_range = 0.02f;
    asa_backend *be = asa_backend_cpu_new();
    asa_model m;
    asa_model_init(&m, &c, be, 3);
    asa_adamw_config oc = asa_adamw_defaults();
    oc.lr = 1e-2f;
    oc.weight_decay = 0.0f;
    asa_adamw opt;
    asa_adamw_init(&opt, &m, oc);
    const int B = 2, T = 32;
    int32_t tok[B * T], tgt[B * T];
    asa_rng r;
    asa_rng_seed(&r, 9);
    random_batch(&r, tok, tgt, B * T, c.vocab_size);
    float first = 0, last = 0;
    for (int step = 0; step < 150; step++) {
        asa_model_zero_grad(&m);
        float loss = asa_model_forward(&m, tok, tgt, B, T);
        if (step == 0) first = loss;
        last = loss;
        asa_model_backward(&m, 1.0f);
        asa_adamw_step(&opt, &m, oc.lr);
    }
    printf("  overfit   %-3s R=%d: loss %.4f -> %.4f\n", pattern, R, first, last);
    TU_CHECK(last < 0.1f * first, "pattern %s: loss %.4f -> %.4f did not fall by 90%%", pattern, first, last);
    asa_adamw_free(&opt, &m);
    asa_model_free(&m);
    asa_backend_free(be);
}

// The first gradient tensor where two models' gradients differ in any bit, or -1.
static int first_grad_diff(const asa_model *a, const asa_model *b) {
    for (int ti = 0; ti < a->layout.count; ti++) {
        const asa_tensor_info *t = &a->layout.tensors[ti];
        if (memcmp(a->grads + t->offset, b->grads + t->offset, t->numel * sizeof(float))) return ti;
    }
    return -1;
}

// Recomputation changes where activations live, not what is computed: the same ops run on the same
// inputs, so the loss, the logits and every gradient must equal the default mode's bit for bit. Two
// steps on different batches (the second reuses the arena and accumulates gradients), then the mode is
// switched off on the same model (the arena is re-carved) for a third.
static void check_recompute(const char *pattern, int R, int layers) {
    asa_config c = tu_tiny_config(pattern, R);
    c.num_hidden_layers = layers;
    TU_CHECK(asa_config_validate(&c, "tiny") == ASA_OK, "%s", asa_err_msg());
    asa_backend *be = asa_backend_cpu_new();
    asa_model a, b;
    asa_model_init(&a, &c, be, 11);
    asa_model_init(&b, &c, be, 11);
    b.recompute = 1;
    const int B = 2, T = 41, N = B * T, V = c.vocab_size;
    int32_t tok[B * T], tgt[B * T];
    asa_rng r;
    asa_rng_seed(&r, 7);
    asa_model_zero_grad(&a);
    asa_model_zero_grad(&b);
    for (int step = 0; step < 3; step++) {
        if (step == 2) b.recompute = 0;
        random_batch(&r, tok, tgt, N, V);
        float la = asa_model_forward(&a, tok, tgt, B, T), lb = asa_model_forward(&b, tok, tgt, B, T);
        TU_CHECK(memcmp(&la, &lb, sizeof la) == 0 && isfinite(la), "%s R=%d step %d: loss %.9g, recompute %.9g",
                 pattern, R, step, la, lb);
        TU_CHECK(memcmp(a.logits, b.logits, sizeof(float) * (size_t)N * V) == 0, "%s R=%d step %d: logits differ",
                 pattern, R, step);
        asa_model_backward(&a, 1.0f);
        asa_model_backward(&b, 1.0f);
        int d = first_grad_diff(&a, &b);
        TU_CHECK(d < 0, "%s R=%d step %d: gradient of %s differs", pattern, R, step, d >= 0 ? a.layout.tensors[d].name : "");
        if (step == 0) {
            // every layer's views are the one slot
            for (int l = 1; l < layers; l++)
                TU_CHECK(b.la[l].res_mid == b.la[0].res_mid && b.la[l].an == b.la[0].an, "%s: layer %d has its own views",
                         pattern, l);
        }
    }
    size_t full = asa_model_act_bytes(&c, ASA_F32, B, T, 0), rc = asa_model_act_bytes(&c, ASA_F32, B, T, 1);
    TU_CHECK(rc < full, "%s x %d layers: recompute arena %zu bytes, default %zu", pattern, layers, rc, full);
    printf("  recompute %-3s R=%d x %d layers: bit-identical over 3 steps, activations %zu -> %zu bytes (%.0f%%)\n",
           pattern, R, layers, full, rc, 100.0 * rc / full);
    asa_model_free(&a);
    asa_model_free(&b);
    asa_backend_free(be);
}

int main(void) {
    const char *patterns[] = {"F", "W", "N", "GL", "LG"};
    for (int i = 0; i < 5; i++) check_recompute(patterns[i], 1, 2);
    check_recompute("N", 4, 4);
    check_recompute("GL", 4, 6);
    check_recompute("LG", 2, 4);
    for (int i = 0; i < 5; i++) check_gradients(patterns[i], 1);
    check_gradients("N", 4);
    check_gradients("GL", 4);
    check_gradients("LG", 2);
    for (int i = 0; i < 5; i++) check_overfit(patterns[i], 1);
    check_overfit("GL", 4);
    return tu_finish("test_model");
}
