#include "train/optimizer.h"

#include <math.h>

#include "core/error.h"

asa_adamw_config asa_adamw_defaults(void) {
    asa_adamw_config c = {3e-4f, 0.9f, 0.95f, 1e-8f, 0.01f, 1.0f};
    return c;
}

void asa_adamw_init_shard(asa_adamw *opt, const asa_model *m, asa_adamw_config cfg, size_t lo, size_t n) {
    ASA_CHECK(lo + n <= m->layout.total);
    opt->cfg = cfg;
    opt->step = 0;
    opt->lo = lo;
    opt->n = n;
    // One float more than needed: a rank whose shard is empty still holds valid (distinct) pointers.
    opt->m = m->be->alloc(m->be, (n + 1) * sizeof(float));
    opt->v = m->be->alloc(m->be, (n + 1) * sizeof(float));
}

void asa_adamw_init(asa_adamw *opt, const asa_model *m, asa_adamw_config cfg) {
    asa_adamw_init_shard(opt, m, cfg, 0, m->layout.total);
}

void asa_adamw_free(asa_adamw *opt, const asa_model *m) {
    m->be->free(m->be, opt->m);
    m->be->free(m->be, opt->v);
    opt->m = opt->v = NULL;
}

double asa_grad_norm(asa_model *m) {
    double ss = 0;
    for (int i = 0; i < m->layout.count; i++) {
        const asa_tensor_info *t = &m->layout.tensors[i];
        ss += m->be->sum_squares(m->be, m->grads + t->offset, ASA_F32, t->numel);
    }
    return sqrt(ss);
}

double asa_grad_sum_squares(asa_model *m, size_t lo, size_t n) {
    return n ? m->be->sum_squares(m->be, m->grads + lo, ASA_F32, n) : 0.0;
}

void asa_adamw_update(asa_adamw *opt, asa_model *m, float lr, double norm) {
    const asa_adamw_config *c = &opt->cfg;
    float scale = 1.0f;
    if (c->clip > 0 && norm > c->clip) scale = (float)(c->clip / (norm + 1e-6));
    opt->step++;
    size_t lo = opt->lo, hi = opt->lo + opt->n;
    for (int i = 0; i < m->layout.count; i++) {
        const asa_tensor_info *t = &m->layout.tensors[i];
        size_t a = t->offset > lo ? t->offset : lo, b = t->offset + t->numel < hi ? t->offset + t->numel : hi;
        if (a >= b) continue;  // outside this shard
        float wd = t->ndim == 2 ? c->weight_decay : 0.0f;
        m->be->adamw(m->be, m->params + a, m->grads + a, opt->m + (a - lo), opt->v + (a - lo), b - a, lr, c->beta1,
                     c->beta2, c->eps, wd, opt->step, scale);
    }
}

double asa_adamw_step(asa_adamw *opt, asa_model *m, float lr) {
    double norm = asa_grad_norm(m);
    asa_adamw_update(opt, m, lr, norm);
    return norm;
}

void asa_adamw_set_moments(asa_adamw *opt, const asa_model *m, const float *hm, const float *hv) {
    m->be->to_device(m->be, opt->m, hm + opt->lo, opt->n * sizeof(float));
    m->be->to_device(m->be, opt->v, hv + opt->lo, opt->n * sizeof(float));
}

void asa_adamw_get_moments(const asa_adamw *opt, const asa_model *m, float *hm, float *hv) {
    ASA_CHECK(opt->lo == 0 && opt->n == m->layout.total);
    m->be->to_host(m->be, hm, opt->m, opt->n * sizeof(float));
    m->be->to_host(m->be, hv, opt->v, opt->n * sizeof(float));
}

float asa_lr_at(asa_sched_kind kind, float peak, int step, int warmup, int total, float min_ratio, float decay_frac) {
    if (warmup > 0 && step < warmup) return peak * (float)(step + 1) / (float)warmup;
    if (kind == ASA_SCHED_CONSTANT || total <= warmup) return peak;
    float floor_lr = peak * min_ratio;
    if (kind == ASA_SCHED_WSD) {
        int decay_steps = (int)(decay_frac * total);
        int decay_start = total - decay_steps;
        if (step < decay_start || decay_steps <= 0) return peak;
        float frac = (float)(step - decay_start) / (float)decay_steps;
        return peak + (floor_lr - peak) * (frac > 1 ? 1 : frac);
    }
    float frac = (float)(step - warmup) / (float)(total - warmup);
    if (frac > 1) frac = 1;
    return floor_lr + 0.5f * (peak - floor_lr) * (1.0f + cosf((float)M_PI * frac));
}
