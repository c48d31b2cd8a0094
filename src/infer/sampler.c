// Sampling (greedy, temperature, top-k, top-p). Candidates are ordered by probability with ties to the
// lower id, a total order, so the kept set and the draw never depend on the sort's stability.
#include "infer/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

asa_sampler_config asa_sampler_defaults(void) {
    asa_sampler_config c = {0, 1.0f, 0, 1.0f};
    return c;
}

int asa_sampler_init(asa_sampler *s, const asa_sampler_config *cfg, int V, uint64_t seed) {
    memset(s, 0, sizeof *s);
    if (!(cfg->temperature >= 0.0f) || !isfinite(cfg->temperature))
        return asa_err_set("sampler: temperature %g must be a finite number >= 0", cfg->temperature);
    if (cfg->top_k < 0) return asa_err_set("sampler: top-k %d must be >= 0", cfg->top_k);
    if (!(cfg->top_p > 0.0f && cfg->top_p <= 1.0f)) return asa_err_set("sampler: top-p %g must be in (0, 1]", cfg->top_p);
    ASA_CHECK(V > 0);
    s->cfg = *cfg;
    s->V = V;
    asa_rng_seed(&s->rng, seed);
    s->cand = asa_malloc(sizeof(asa_sampler_cand) * (size_t)V);
    return ASA_OK;
}

void asa_sampler_free(asa_sampler *s) {
    free(s->cand);
    memset(s, 0, sizeof *s);
}

int32_t asa_argmax(const float *logits, int V) {
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static int by_prob_desc(const void *pa, const void *pb) {
    const asa_sampler_cand *a = pa, *b = pb;
    if (a->p != b->p) return a->p > b->p ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

static int is_greedy(const asa_sampler *s) { return s->cfg.greedy || s->cfg.temperature == 0.0f; }

// Fills s->cand with exp((logit - max) / temperature) per token, the kept ones first; returns how many
// are kept and their total mass in *total.
static int candidates(asa_sampler *s, const float *logits, double *total) {
    const int V = s->V;
    const float mx = logits[asa_argmax(logits, V)], inv_t = 1.0f / s->cfg.temperature;
    for (int i = 0; i < V; i++) s->cand[i] = (asa_sampler_cand){expf((logits[i] - mx) * inv_t), i};
    int kept = V;
    if (s->cfg.top_k > 0 || s->cfg.top_p < 1.0f) {
        qsort(s->cand, (size_t)V, sizeof *s->cand, by_prob_desc);
        if (s->cfg.top_k > 0 && s->cfg.top_k < kept) kept = s->cfg.top_k;
    }
    double sum = 0;
    for (int e = 0; e < kept; e++) sum += s->cand[e].p;
    if (s->cfg.top_p < 1.0f) {
        // the shortest head of the list whose share of the mass reaches top_p
        double cum = 0;
        int e = 0;
        while (e < kept) {
            cum += s->cand[e++].p;
            if (cum >= (double)s->cfg.top_p * sum) break;
        }
        kept = e;
        sum = cum;
    }
    *total = sum;
    return kept;
}

int asa_sampler_distribution(asa_sampler *s, const float *logits, float *prob) {
    memset(prob, 0, sizeof(float) * (size_t)s->V);
    if (is_greedy(s)) {
        prob[asa_argmax(logits, s->V)] = 1.0f;
        return 1;
    }
    double total;
    const int kept = candidates(s, logits, &total);
    for (int e = 0; e < kept; e++) prob[s->cand[e].id] = (float)(s->cand[e].p / total);
    return kept;
}

int32_t asa_sampler_sample(asa_sampler *s, const float *logits) {
    if (is_greedy(s)) return asa_argmax(logits, s->V);
    double total;
    const int kept = candidates(s, logits, &total);
    const double target = asa_rng_uniform(&s->rng) * total;
    double cum = 0;
    for (int e = 0; e < kept; e++) {
        cum += s->cand[e].p;
        if (cum > target) return s->cand[e].id;
    }
    // rounding left the target at the very top: the last candidate with mass
    int e = kept - 1;
    while (e > 0 && s->cand[e].p == 0) e--;
    return s->cand[e].id;
}
