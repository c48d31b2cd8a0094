// AdamW over a model's parameter arena (decoupled weight decay on 2-D weights only, SPEC §9), global
// gradient-norm clipping, and the learning-rate schedules.
#ifndef ASA_TRAIN_OPTIMIZER_H
#define ASA_TRAIN_OPTIMIZER_H

#include "model/model.h"

typedef struct {
    float lr, beta1, beta2, eps, weight_decay, clip;  // clip <= 0: no clipping
} asa_adamw_config;

// The moments cover the parameters [lo, lo + n) of the arena: all of it, or under ZeRO-1 this rank's
// shard (the other ranks hold the rest).
typedef struct {
    asa_adamw_config cfg;
    float *m, *v;  // first and second moments, n floats each (backend memory)
    size_t lo, n;
    int step;      // updates done so far
} asa_adamw;

asa_adamw_config asa_adamw_defaults(void);  // lr 3e-4, betas (0.9, 0.95), eps 1e-8, wd 0.01, clip 1.0
void asa_adamw_init(asa_adamw *opt, const asa_model *m, asa_adamw_config cfg);
// ZeRO-1: moments for parameters [lo, lo + n) only.
void asa_adamw_init_shard(asa_adamw *opt, const asa_model *m, asa_adamw_config cfg, size_t lo, size_t n);
void asa_adamw_free(asa_adamw *opt, const asa_model *m);
// Global L2 norm of all gradients (tied weights counted once: they are one tensor).
double asa_grad_norm(asa_model *m);
// Sum of squares of gradients [lo, lo + n) (a shard's part of the global norm).
double asa_grad_sum_squares(asa_model *m, size_t lo, size_t n);
// One update with learning rate lr: clips to cfg.clip by global norm, steps every tensor. Returns the
// gradient norm before clipping.
double asa_adamw_step(asa_adamw *opt, asa_model *m, float lr);
// The update of the parameters the moments cover, with the global gradient norm given (computed across
// ranks under ZeRO-1).
void asa_adamw_update(asa_adamw *opt, asa_model *m, float lr, double grad_norm);
// Moments between host memory (full arena, layout.total floats each) and the optimizer: set keeps the
// part [lo, lo + n); get requires an unsharded optimizer (a sharded one is gathered across ranks).
void asa_adamw_set_moments(asa_adamw *opt, const asa_model *m, const float *hm, const float *hv);
void asa_adamw_get_moments(const asa_adamw *opt, const asa_model *m, float *hm, float *hv);

typedef enum { ASA_SCHED_COSINE, ASA_SCHED_WSD, ASA_SCHED_CONSTANT } asa_sched_kind;
// Linear warmup over `warmup` steps to peak, then cosine decay to min_ratio*peak at `total` (COSINE), or
// constant then a linear decay over the last decay_frac of the steps (WSD).
float asa_lr_at(asa_sched_kind kind, float peak, int step, int warmup, int total, float min_ratio, float decay_frac);

#endif
