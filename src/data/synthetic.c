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
