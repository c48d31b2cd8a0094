#include "data/synthetic.h"

#include <stddef.h>

void asa_synthetic_copy(asa_rng *rng, int32_t *tokens, int32_t *targets, int B, int T, int alphabet) {
    int half = T / 2;
    for (int b = 0; b < B; b++) {
        int32_t *x = tokens + (size_t)b * T, *y = targets + (size_t)b * T;
        for (int t = 0; t < T; t++) x[t] = t < half ? 1 + (int32_t)asa_rng_below(rng, (uint32_t)alphabet) : x[t - half];
        for (int t = 0; t < T; t++) y[t] = (t >= half - 1 && t + 1 < T && half > 0) ? x[t + 1] : -1;
    }
}

void asa_synthetic_copy_at(const asa_rng *key, uint64_t first, int32_t *tokens, int32_t *targets, int B, int T,
                           int alphabet) {
    for (int b = 0; b < B; b++) {
        asa_rng r;  // seeding runs the value through splitmix64: neighbouring indices give unrelated streams
        asa_rng_seed(&r, key->s[0] ^ key->s[1] ^ ((first + (uint64_t)b) * 0x9E3779B97F4A7C15ull));
        asa_synthetic_copy(&r, tokens + (size_t)b * T, targets + (size_t)b * T, 1, T, alphabet);
    }
}
