#include "model/kv_cache_size.h"

asa_kv_size asa_kv_size_of(const asa_config *c, char kind, int64_t T) {
    asa_kv_size s = {0};
    int64_t window = c->window_size < T ? c->window_size : T;
    int64_t blocks = c->block_size > 0 ? T / c->block_size : 0;
    switch (kind) {
    case 'F':
    case 'W':
    case 'N':
        s.per_token = 2LL * c->num_kv_heads * c->head_dim;
        s.tokens = kind == 'W' ? window : T;
        if (kind == 'N') {
            s.pooled = blocks * s.per_token;
            s.index_bytes = 4LL * c->num_kv_heads * c->block_counts;
        }
        break;
    case 'L':
        s.per_token = (int64_t)c->kv_lora_rank + c->qk_rope_head_dim;
        s.tokens = window;
        break;
    case 'G':
        s.per_token = (int64_t)c->latent_groups * c->latent_dim + c->qk_rope_head_dim;
        s.tokens = T;
        s.pooled = blocks * s.per_token;
        s.index_bytes = 4LL * c->latent_groups * c->block_counts;
        break;
    }
    return s;
}

int64_t asa_kv_bytes(const asa_config *c, char kind, int64_t T, int elem_bytes) {
    asa_kv_size s = asa_kv_size_of(c, kind, T);
    return (s.tokens * s.per_token + s.pooled) * elem_bytes + s.index_bytes;
}
