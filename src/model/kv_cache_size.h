// KV-cache sizes per layer kind (SPEC §5), in elements, for `asa info` and the generator.
#ifndef ASA_MODEL_KV_CACHE_SIZE_H
#define ASA_MODEL_KV_CACHE_SIZE_H

#include <stdint.h>

#include "asa/config.h"

typedef struct {
    int64_t per_token;   // elements kept per cached token (k and v, or latent and rope key)
    int64_t tokens;      // tokens kept at context T (all, or the window for W and L)
    int64_t pooled;      // elements of the pooled per-block keys/values at context T (N, G)
    int64_t index_bytes; // the anchor's block list (G, N): int32 entries
} asa_kv_size;

// Cache of one layer of `kind` after T tokens. Total bytes = (tokens*per_token + pooled)*elem + index_bytes.
asa_kv_size asa_kv_size_of(const asa_config *c, char kind, int64_t T);
int64_t asa_kv_bytes(const asa_config *c, char kind, int64_t T, int elem_bytes);

#endif
