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
// Sequences first, first + 1, ..., first + B - 1 of the copy-task stream named by `key`; sequence i is a
// function of (key, i) alone, so that data-parallel ranks can each draw their own part of one global
// stream, and the stream does not depend on how it is cut into micro-batches.
void asa_synthetic_copy_at(const asa_rng *key, uint64_t first, int32_t *tokens, int32_t *targets, int B, int T,
                           int alphabet);

#endif
