#include "model/params.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"

typedef struct {
    asa_param_layout *layout;
    int cap;
} builder;

static void add(builder *b, const char *name, int64_t rows, int64_t cols, size_t field, int is_norm) {
    asa_param_layout *L = b->layout;
    if (L->count == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        asa_tensor_info *t = asa_malloc(sizeof(*t) * (size_t)b->cap);
        if (L->count) memcpy(t, L->tensors, sizeof(*t) * (size_t)L->count);
        free(L->tensors);
        L->tensors = t;
    }
    asa_tensor_info *t = &L->tensors[L->count++];
    memset(t, 0, sizeof *t);
    ASA_CHECK(strlen(name) < sizeof t->name);
    strcpy(t->name, name);
    t->ndim = cols > 0 ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols > 0 ? cols : 0;
    t->numel = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    t->offset = L->total;
    t->field = field;
    t->is_norm = is_norm;
    L->total += (t->numel + 15) & ~(size_t)15;  // 64-byte aligned views
}

#define FIELD(f) offsetof(asa_weights, f)
#define LFIELD(l, f) (offsetof(asa_weights, layer) + (size_t)(l) * sizeof(asa_layer_weights) + offsetof(asa_layer_weights, f))

void asa_layout_build(const asa_config *c, asa_param_layout *layout) {
    memset(layout, 0, sizeof *layout);
    builder b = {layout, 0};
    char nm[96];
    const int D = c->hidden_size, h = c->num_heads;
    add(&b, "model.embeddings.weight", c->vocab_size, D, FIELD(embed), 0);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        char kind = c->layer_kinds[l];
#define P(suffix, rows, cols, f, norm) \
    do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); add(&b, nm, rows, cols, LFIELD(l, f), norm); } while (0)
        P("attn_norm.weight", D, 0, attn_norm, 1);
        if (kind == 'F' || kind == 'W' || kind == 'N') {
            const int g = c->num_kv_heads, d = c->head_dim;
            P("attn.q_proj.weight", h * d, D, q_proj, 0);
            P("attn.k_proj.weight", g * d, D, k_proj, 0);
            P("attn.v_proj.weight", g * d, D, v_proj, 0);
            if (kind == 'N') P("attn.g_proj.weight", 3 * h, D, g_proj, 0);
            P("attn.o_proj.weight", D, h * d, o_proj, 0);
        } else {
            const int dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
            const int lat = kind == 'L' ? c->kv_lora_rank : c->latent_groups * c->latent_dim;
            const int up_in = kind == 'L' ? c->kv_lora_rank : c->latent_dim;
            P("attn.q_proj.weight", h * (dn + dr), D, q_proj, 0);
            P("attn.kv_down.weight", lat, D, kv_down, 0);
            P("attn.kv_norm.weight", lat, 0, kv_norm, 1);
            P("attn.k_rope.weight", dr, D, k_rope, 0);
            P("attn.kv_up.weight", h * (dn + dv), up_in, kv_up, 0);
            if (kind == 'G') P("attn.g_proj.weight", 2 * h, D, g_proj, 0);
            P("attn.o_proj.weight", D, h * dv, o_proj, 0);
        }
        P("mlp_norm.weight", D, 0, mlp_norm, 1);
        P("mlp.gate_proj.weight", c->intermediate_size, D, gate_proj, 0);
        P("mlp.up_proj.weight", c->intermediate_size, D, up_proj, 0);
        P("mlp.down_proj.weight", D, c->intermediate_size, down_proj, 0);
#undef P
    }
    add(&b, "model.norm.weight", D, 0, FIELD(final_norm), 1);
    if (!c->tie_word_embeddings) add(&b, "lm_head.weight", c->vocab_size, D, FIELD(lm_head), 0);
}

void asa_layout_free(asa_param_layout *layout) {
    free(layout->tensors);
    memset(layout, 0, sizeof *layout);
}

const asa_tensor_info *asa_layout_find(const asa_param_layout *layout, const char *name) {
    for (int i = 0; i < layout->count; i++)
        if (strcmp(layout->tensors[i].name, name) == 0) return &layout->tensors[i];
    return NULL;
}

void asa_weights_bind(const asa_param_layout *layout, float *base, asa_weights *w) {
    memset(w, 0, sizeof *w);
    for (int i = 0; i < layout->count; i++) {
        const asa_tensor_info *t = &layout->tensors[i];
        float **slot = (float **)((char *)w + t->field);
        *slot = base + t->offset;
    }
    if (!w->lm_head) w->lm_head = w->embed;  // tied
}

void asa_weights_init(const asa_param_layout *layout, const asa_config *cfg, float *host_base, uint64_t seed) {
    asa_rng rng;
    asa_rng_seed(&rng, seed);
    for (int i = 0; i < layout->count; i++) {
        const asa_tensor_info *t = &layout->tensors[i];
        float *p = host_base + t->offset;
        for (size_t j = 0; j < t->numel; j++)
            p[j] = t->is_norm ? 1.0f : (float)(cfg->initializer_range * asa_rng_normal(&rng));
    }
}

int asa_kind_index(char kind) {
    switch (kind) {
    case 'F': return 0;
    case 'W': return 1;
    case 'N': return 2;
    case 'L': return 3;
    case 'G': return 4;
    default: return -1;
    }
}

void asa_param_counts_get(const asa_param_layout *layout, const asa_config *cfg, asa_param_counts *c) {
    memset(c, 0, sizeof *c);
    for (int l = 0; l < cfg->num_hidden_layers; l++) c->layers_per_kind[asa_kind_index(cfg->layer_kinds[l])]++;
    for (int i = 0; i < layout->count; i++) {
        const asa_tensor_info *t = &layout->tensors[i];
        c->total += t->numel;
        int l;
        char rest[96];
        if (sscanf(t->name, "model.layers.%d.%95s", &l, rest) == 2) {
            if (strncmp(rest, "mlp", 3) == 0) c->mlp += t->numel;
            else c->per_kind[asa_kind_index(cfg->layer_kinds[l])] += t->numel;
        } else if (strcmp(t->name, "model.embeddings.weight") == 0) c->embedding += t->numel;
        else if (strcmp(t->name, "lm_head.weight") == 0) c->lm_head += t->numel;
        else c->final_norm += t->numel;
    }
}
