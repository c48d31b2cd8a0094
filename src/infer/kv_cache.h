// The KV cache of a decoder (SPEC §5): per layer, the keys and values (GQA kinds) or the latent rows
// [c_0 .. c_{ng-1} | kr] (latent kinds) of the tokens it must keep, the pooled rows of complete blocks
// and the current anchor's block lists (sparse kinds). All of it lives in one backend arena; the decode
// ops read it through asa_kv_view.
#ifndef ASA_INFER_KV_CACHE_H
#define ASA_INFER_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "asa/config.h"
#include "backend/backend.h"

typedef struct {
    char kind;
    int rows;       // token rows kept per sequence: max_len, or min(window, max_len) as a ring (W, L)
    int width;      // elements per token row: g*d for k and for v (F W N); dc+dr (L); ng*dcg+dr (G)
    int nblocks;    // pooled rows per sequence (N, G): max_len / block_size
    int nsel;       // entries of one sequence's block lists (N, G): groups * block_counts
    asa_act *k, *v;   // F W N: [B, rows, width] keys (after RoPE) and values (be->act, as every cached row)
    asa_act *kc, *vc; // N: [B, nblocks, width] pooled keys and values
    asa_act *lat;     // L G: [B, rows, width]
    asa_act *latc;    // G: [B, nblocks, width] pooled latent rows
    int32_t *idx;   // N G: [B, groups, block_counts]
    size_t bytes;   // bytes of this layer's tensors: B * asa_kv_bytes(cfg, kind, max_len, element size)
} asa_layer_kv;

typedef struct {
    asa_backend *be;
    int B, max_len, num_layers;
    asa_layer_kv *layer;  // [num_layers]
    void *arena;
    size_t arena_bytes;
} asa_kv_cache;

void asa_kv_cache_init(asa_kv_cache *kv, const asa_config *cfg, asa_backend *be, int B, int max_len);
void asa_kv_cache_free(asa_kv_cache *kv);
// Forgets every token (zeroes the arena).
void asa_kv_cache_reset(asa_kv_cache *kv);

// The cache row that holds the token at position pos (a ring slot for W and L).
static inline int asa_kv_row(const asa_layer_kv *l, int pos) { return pos % l->rows; }

// Views of a layer's token rows (pooled = 0) or pooled rows (pooled = 1) for the decode ops.
// GQA kinds: k1 = k, v = v with head stride d. Latent kinds: k1 = c_j (head stride d_c; L has the one
// latent, g = 1), k2 = kr (head stride 0: shared by the groups), v = c_j.
asa_kv_view asa_kv_layer_view(const asa_backend *be, const asa_layer_kv *l, const asa_config *cfg, int pooled);

// Writes one token's values into columns [col0, col0+cols) of its row of buf (l->k, l->v or l->lat) for
// every sequence: buf row of sequence b at position pos <- src[b*src_rs .. + cols).
void asa_kv_store(asa_backend *be, const asa_layer_kv *l, asa_act *buf, int B, int pos, int col0, const asa_act *src,
                  int src_rs, int cols);
// Pools block m (tokens [m*b, (m+1)*b), all cached) into the layer's pooled rows, for every sequence.
void asa_kv_pool_block(asa_backend *be, const asa_layer_kv *l, int B, int m, int block_size);

#endif
