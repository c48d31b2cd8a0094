#include "train/optimizer.h"

#include <math.h>

asa_adamw_config asa_adamw_defaults(void) {
    asa_adamw_config c = {3e-4f, 0.9f, 0.95f, 1e-8f, 0.01f, 1.0f};
    return c;
}

void asa_adamw_init(asa_adamw *opt, const asa_model *m, asa_adamw_config cfg) {
    opt->cfg = cfg;
    opt->step = 0;
    size_t bytes = m->layout.total * sizeof(float);
    opt->m = m->be->alloc(m->be, bytes);
    opt->v = m->be->alloc(m->be, bytes);
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
        ss += m->be->sum_squares(m->be, m->grads + t->offset, t->numel);
    }
    return sqrt(ss);
}

double asa_adamw_step(asa_adamw *opt, asa_model *m, float lr) {
    const asa_adamw_config *c = &opt->cfg;
    double norm = asa_grad_norm(m);
    float scale = 1.0f;
    if (c->clip > 0 && norm > c->clip) scale = (float)(c->clip / (norm + 1e-6));
    opt->step++;
    for (int i = 0; i < m->layout.count; i++) {
        const asa_tensor_info *t = &m->layout.tensors[i];
        float wd = t->ndim == 2 ? c->weight_decay : 0.0f;
        m->be->adamw(m->be, m->params + t->offset, m->grads + t->offset, opt->m + t->offset, opt->v + t->offset,
                     t->numel, lr, c->beta1, c->beta2, c->eps, wd, opt->step, scale);
    }
    return norm;
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
