// Parameter layout: the list of named tensors a config implies (names, shapes and order as in SPEC §1-3),
// their offsets in one arena, and the views (asa_weights) that model code uses. The same layout
// carves the parameter, gradient and AdamW-moment arenas.
#ifndef ASA_MODEL_PARAMS_H
#define ASA_MODEL_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "asa/config.h"

typedef struct {
    float *attn_norm;                                    // [D]
    float *q_proj, *k_proj, *v_proj, *o_proj, *g_proj;   // F W N: q [h*d, D], k/v [g*d, D]; L G: q [h*(dn+dr), D]
                                                         // o [D, h*dv]; g_proj N [3h, D], G [2h, D]
    float *kv_down, *kv_norm, *k_rope, *kv_up;           // L: [dc, D], [dc], [dr, D], [h*(dn+dv), dc]
                                                         // G: [ng*dcg, D], [ng*dcg], [dr, D], [h*(dn+dv), dcg]
    float *mlp_norm;                                     // [D]
    float *gate_proj, *up_proj, *down_proj;              // [I, D], [I, D], [D, I]
} asa_layer_weights;

typedef struct {
    float *embed;       // [V, D]  model.embeddings.weight
    float *final_norm;  // [D]     model.norm.weight
    float *lm_head;     // [V, D]  lm_head.weight (== embed when tie_word_embeddings)
    asa_layer_weights layer[ASA_MAX_LAYERS];
} asa_weights;

typedef struct {
    char name[96];
    int ndim;             // 1 or 2
    int64_t shape[2];
    size_t offset;        // in floats from the arena start
    size_t numel;
    size_t field;         // offsetof(asa_weights, <the view this tensor binds>)
    int is_norm;          // RMSNorm weight: init 1, no weight decay
} asa_tensor_info;

typedef struct {
    asa_tensor_info *tensors;
    int count;
    size_t total;         // floats in the arena (each tensor's offset aligned to 16 floats)
} asa_param_layout;

void asa_layout_build(const asa_config *cfg, asa_param_layout *layout);
void asa_layout_free(asa_param_layout *layout);
const asa_tensor_info *asa_layout_find(const asa_param_layout *layout, const char *name);
// Points every view of w at base + offset (base may be device memory: nothing is dereferenced).
void asa_weights_bind(const asa_param_layout *layout, float *base, asa_weights *w);
// SPEC §1 init on a host arena: N(0, initializer_range^2) for matrices, 1 for norm weights.
void asa_weights_init(const asa_param_layout *layout, const asa_config *cfg, float *host_base, uint64_t seed);

// Parameter counts, for `asa info`: total, and per layer kind (attention+norms of that kind's layers,
// MLPs counted separately).
typedef struct {
    size_t total, embedding, lm_head, final_norm, mlp;
    size_t per_kind[5];          // F W N L G attention (incl. attn_norm), summed over layers of that kind
    int layers_per_kind[5];
} asa_param_counts;
void asa_param_counts_get(const asa_param_layout *layout, const asa_config *cfg, asa_param_counts *c);
int asa_kind_index(char kind);  // F=0 W=1 N=2 L=3 G=4, -1 otherwise

#endif
