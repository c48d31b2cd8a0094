// Built-in synthetic tasks: data that needs no files, for the first demo, tests and benchmarks.
#ifndef ASA_DATA_SYNTHETIC_H
#define ASA_DATA_SYNTHETIC_H

#include <stdint.h>

#include "core/rng.h"

// "copy": each sequence is a random string of tokens from [1, alphabet] followed by the same string.
// Only the second half is predictable, so targets are -1 (ignored) elsewhere: a model that learns to
// attend back T/2 positions drives the loss to 0; one that does not stays near log(alphabet).
// tokens and targets are [B, T].
void asa_synthetic_copy(asa_rng *rng, int32_t *tokens, int32_t *targets, int B, int T, int alphabet);

#endif
