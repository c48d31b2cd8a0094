// Model configuration: the HF-style config.json of SPEC §1-§6, parsed and validated.
#ifndef ASA_CONFIG_H
#define ASA_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define ASA_MAX_LAYERS 256

// Layer kinds, one letter each in layer_pattern (SPEC §1).
typedef enum {
    ASA_LAYER_FULL = 'F',    // full causal GQA attention
    ASA_LAYER_WINDOW = 'W',  // sliding-window GQA attention
    ASA_LAYER_NSA = 'N',     // NSA: compression + selection + window, gated
    ASA_LAYER_LOCAL = 'L',   // ASA local: sliding-window MLA
    ASA_LAYER_GLOBAL = 'G',  // ASA global: compression + selection over grouped latents, gated
} asa_layer_kind;

typedef struct {
    char model_type[32];       // "asa"
    int vocab_size;            // V
    int hidden_size;           // D
    int intermediate_size;     // I (SwiGLU); default 256*ceil(8/3*D/256)
    int num_hidden_layers;     // L
    int max_position_embeddings;
    float norm_eps;            // default 1e-6
    float rope_theta;          // default 10000
    float initializer_range;   // default 0.02
    int tie_word_embeddings;   // default 0
    char layer_pattern[ASA_MAX_LAYERS + 1];
    char layer_kinds[ASA_MAX_LAYERS + 1];  // derived: pattern repeated to num_hidden_layers

    int num_heads;             // h, every layer kind
    // GQA kinds (F, W, N)
    int num_kv_heads;          // g
    int head_dim;              // d
    // latent kinds (L, G)
    int qk_nope_head_dim;      // d_n
    int qk_rope_head_dim;      // d_r
    int v_head_dim;            // d_v
    int kv_lora_rank;          // d_c (L)
    int latent_groups;         // n_g (G)
    int latent_dim;            // d_cg (G)
    // windows and sparse branches (W, N, L, G)
    int window_size;           // w
    int block_size;            // b (compression)
    int selection_block_size;  // b_s, default b
    int block_counts;          // n, blocks selected per query (>= 3)
    int selection_share;       // R: queries t share the block list of a = R*floor(t/R); default 4 if the
                               // pattern has G layers, else 1
    char compress[16];         // "mean"
} asa_config;

// Parse and validate. On error returns ASA_ERR (-1) with a message naming the file and the key
// (asa_err_msg()); never exits.
int asa_config_load(const char *path, asa_config *cfg);
int asa_config_parse(const char *json_text, const char *source_name, asa_config *cfg);
// Checks every cross-key rule (divisibility, block sizes, pattern letters) and fills layer_kinds. It
// applies no defaults (asa_config_parse does): a config built in code must set every field it uses.
int asa_config_validate(asa_config *cfg, const char *source_name);
// Writes config.json atomically (temp file, fsync, rename).
int asa_config_save(const asa_config *cfg, const char *path);

static inline int asa_config_has_kind(const asa_config *c, char kind) {
    for (int l = 0; l < c->num_hidden_layers; l++) if (c->layer_kinds[l] == kind) return 1;
    return 0;
}

#endif
