// Next-token sampling from logits: greedy (argmax), or a draw from softmax(logits / temperature)
// restricted to the top-k tokens and then to the smallest top set whose probability reaches top-p
// (nucleus). Seeded and deterministic: the same seed and logits give the same tokens on every machine.
#ifndef ASA_INFER_SAMPLER_H
#define ASA_INFER_SAMPLER_H

#include <stdint.h>

#include "core/rng.h"

typedef struct {
    int greedy;         // argmax, no randomness (also when temperature == 0)
    float temperature;  // > 0 divides the logits; default 1
    int top_k;          // keep the k most probable tokens; 0 = all
    float top_p;        // keep the most probable tokens up to cumulative probability p, in (0, 1]; 1 = all
} asa_sampler_config;

typedef struct {
    float p;     // unnormalised probability
    int32_t id;
} asa_sampler_cand;

typedef struct {
    asa_sampler_config cfg;
    int V;
    asa_rng rng;
    asa_sampler_cand *cand;  // [V] scratch: candidates, most probable first when cut by top-k / top-p
} asa_sampler;

asa_sampler_config asa_sampler_defaults(void);
// Checks the config (ASA_ERR with a message naming the bad setting) and seeds the generator.
int asa_sampler_init(asa_sampler *s, const asa_sampler_config *cfg, int V, uint64_t seed);
void asa_sampler_free(asa_sampler *s);

// The distribution a draw comes from: prob [V] (host), normalised over the kept tokens, 0 elsewhere.
// Returns the number of kept tokens. Greedy configs give a one-hot distribution.
int asa_sampler_distribution(asa_sampler *s, const float *logits, float *prob);
// Draws the next token from logits [V] (host memory). Greedy draws consume no randomness.
int32_t asa_sampler_sample(asa_sampler *s, const float *logits);
// Index of the largest logit, the lowest index on ties.
int32_t asa_argmax(const float *logits, int V);

#endif
