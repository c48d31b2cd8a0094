// KV cache layout and upkeep (SPEC §5): carving the arena per layer kind, views for the decode ops,
// storing a token's rows and pooling a completed block. Everything on the tensors goes through
// backend ops, so the cache can live in device memory.
#include "infer/kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "core/carve.h"
#include "core/error.h"
#include "model/kv_cache_size.h"

// A view of n bytes, counted into the layer's bytes.
static void *carve_bytes(asa_carver *cv, size_t n, size_t *bytes) {
    *bytes += n;
    return asa_carve(cv, n);
}
static asa_act *carve(asa_carver *cv, size_t elems, size_t *bytes) { return carve_bytes(cv, elems * cv->act_size, bytes); }

static void carve_layer(const asa_config *c, char kind, int B, int max_len, asa_carver *cv, asa_layer_kv *l) {
    memset(l, 0, sizeof *l);
    l->kind = kind;
    const int window = c->window_size < max_len ? c->window_size : max_len;
    const int rows = (kind == 'W' || kind == 'L') ? window : max_len;
    const size_t Bz = (size_t)B;
    l->rows = rows;
    switch (kind) {
    case 'F':
    case 'W':
    case 'N':
        l->width = c->num_kv_heads * c->head_dim;
        l->k = carve(cv, Bz * rows * l->width, &l->bytes);
        l->v = carve(cv, Bz * rows * l->width, &l->bytes);
        if (kind == 'N') {
            l->nblocks = max_len / c->block_size;
            l->kc = carve(cv, Bz * l->nblocks * l->width, &l->bytes);
            l->vc = carve(cv, Bz * l->nblocks * l->width, &l->bytes);
            l->nsel = c->num_kv_heads * c->block_counts;
            l->idx = carve_bytes(cv, Bz * l->nsel * sizeof(int32_t), &l->bytes);
        }
        break;
    case 'L':
        l->width = c->kv_lora_rank + c->qk_rope_head_dim;
        l->lat = carve(cv, Bz * rows * l->width, &l->bytes);
        break;
    case 'G':
        l->width = c->latent_groups * c->latent_dim + c->qk_rope_head_dim;
        l->lat = carve(cv, Bz * rows * l->width, &l->bytes);
        l->nblocks = max_len / c->block_size;
        l->latc = carve(cv, Bz * l->nblocks * l->width, &l->bytes);
        l->nsel = c->latent_groups * c->block_counts;
        l->idx = carve_bytes(cv, Bz * l->nsel * sizeof(int32_t), &l->bytes);
        break;
    default:
        ASA_CHECK(0 && "unknown layer kind");
    }
}

static size_t carve_all(const asa_config *c, asa_dtype act, int B, int max_len, char *base, asa_layer_kv *layers) {
    asa_carver cv = {base, 0, 64, asa_dtype_size(act)};
    asa_layer_kv tmp;
    for (int i = 0; i < c->num_hidden_layers; i++) carve_layer(c, c->layer_kinds[i], B, max_len, &cv, layers ? &layers[i] : &tmp);
    return cv.off;
}

void asa_kv_cache_init(asa_kv_cache *kv, const asa_config *cfg, asa_backend *be, int B, int max_len) {
    ASA_CHECK(B > 0 && max_len > 0);
    memset(kv, 0, sizeof *kv);
    kv->be = be;
    kv->B = B;
    kv->max_len = max_len;
    kv->num_layers = cfg->num_hidden_layers;
    kv->layer = asa_calloc((size_t)kv->num_layers, sizeof(asa_layer_kv));
    kv->arena_bytes = carve_all(cfg, be->act, B, max_len, NULL, NULL);
    kv->arena = be->alloc(be, kv->arena_bytes);
    carve_all(cfg, be->act, B, max_len, kv->arena, kv->layer);
}

void asa_kv_cache_free(asa_kv_cache *kv) {
    if (kv->arena) kv->be->free(kv->be, kv->arena);
    free(kv->layer);
    memset(kv, 0, sizeof *kv);
}

void asa_kv_cache_reset(asa_kv_cache *kv) { kv->be->zero(kv->be, kv->arena, kv->arena_bytes); }

asa_kv_view asa_kv_layer_view(const asa_backend *be, const asa_layer_kv *l, const asa_config *c, int pooled) {
    asa_kv_view w;
    memset(&w, 0, sizeof w);
    const long rs = l->width, bs = (long)(pooled ? l->nblocks : l->rows) * rs;
    if (l->kind == 'F' || l->kind == 'W' || l->kind == 'N') {
        const int d = c->head_dim;
        w.k1 = pooled ? l->kc : l->k;
        w.v = pooled ? l->vc : l->v;
        w.k1_bs = w.v_bs = bs;
        w.k1_rs = w.v_rs = rs;
        w.k1_hs = w.v_hs = d;
        w.dk1 = w.dv = d;
        return w;
    }
    // latent row [c_0 .. c_{ng-1} | kr]: group j's key is [c_j ; kr], its value c_j
    const int dc = l->kind == 'L' ? c->kv_lora_rank : c->latent_dim;
    const int groups = l->kind == 'L' ? 1 : c->latent_groups;
    const asa_act *base = pooled ? l->latc : l->lat;
    w.k1 = w.v = base;
    w.k1_bs = w.v_bs = w.k2_bs = bs;
    w.k1_rs = w.v_rs = w.k2_rs = rs;
    w.k1_hs = w.v_hs = dc;
    w.dk1 = w.dv = dc;
    w.k2 = asa_act_at(be, base, (size_t)groups * dc);
    w.k2_hs = 0;
    w.dk2 = c->qk_rope_head_dim;
    return w;
}

void asa_kv_store(asa_backend *be, const asa_layer_kv *l, asa_act *buf, int B, int pos, int col0, const asa_act *src,
                  int src_rs, int cols) {
    asa_act *dst = asa_act_at(be, buf, (size_t)asa_kv_row(l, pos) * l->width + col0);
    // one "row" per sequence: the destination's row stride is the cache's batch stride
    be->copy_heads(be, dst, l->rows * l->width, 0, src, src_rs, 0, B, 1, cols, 0);
}

void asa_kv_pool_block(asa_backend *be, const asa_layer_kv *l, int B, int m, int block_size) {
    ASA_CHECK(m < l->nblocks && l->rows >= (m + 1) * block_size);
    // One block of one sequence at a time: compress_fwd reads a [1, b, 1, width] sequence.
    asa_attn_shape s = {0};
    s.B = 1;
    s.T = block_size;
    s.g = 1;
    s.block_size = block_size;
    s.selection_block_size = block_size;
    s.selection_share = 1;
    for (int b = 0; b < B; b++) {
        const size_t src = ((size_t)b * l->rows + (size_t)m * block_size) * l->width;
        const size_t dst = ((size_t)b * l->nblocks + m) * l->width;
        if (l->kind == 'N') {
            be->compress_fwd(be, &s, l->width, asa_act_at(be, l->k, src), asa_act_at(be, l->kc, dst));
            be->compress_fwd(be, &s, l->width, asa_act_at(be, l->v, src), asa_act_at(be, l->vc, dst));
        } else {
            be->compress_fwd(be, &s, l->width, asa_act_at(be, l->lat, src), asa_act_at(be, l->latc, dst));
        }
    }
}
