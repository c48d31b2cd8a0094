// Deterministic random numbers (xoshiro256**, seeded through splitmix64). Same seed, same stream on
// every machine: weights, synthetic data and sampling are reproducible.
#ifndef ASA_CORE_RNG_H
#define ASA_CORE_RNG_H

#include <stdint.h>

typedef struct { uint64_t s[4]; } asa_rng;

void asa_rng_seed(asa_rng *r, uint64_t seed);
uint64_t asa_rng_u64(asa_rng *r);
double asa_rng_uniform(asa_rng *r);             // [0, 1)
double asa_rng_normal(asa_rng *r);              // N(0, 1), Box-Muller
uint32_t asa_rng_below(asa_rng *r, uint32_t n); // [0, n), unbiased

#endif
