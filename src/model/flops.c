#include "model/flops.h"

#include <string.h>

#include "model/params.h"

// Average over positions t in [0, T) of the keys query t reads in each attention kind.
static double mean_keys_causal(int T) { return (T + 1) / 2.0; }
static double mean_keys_window(int T, int w) {
    double s = 0;
    for (int t = 0; t < T; t++) s += (t + 1 < w) ? t + 1 : w;
    return s / T;
}
static double mean_keys_cmp(int T, int b) {
    double s = 0;
    for (int t = 0; t < T; t++) s += (t + 1) / b;
    return s / T;
}
static double mean_keys_slc(int T, int bs, int n) {
    double s = 0;
    for (int t = 0; t < T; t++) {
        int usable = t / bs + 1;
        int blocks = usable < n ? usable : n;
        s += (double)blocks * bs;  // upper bound: the current block is partly masked
    }
    return s / T;
}

double asa_flops_forward_per_token(const asa_config *c, int T) {
    asa_param_layout layout;
    asa_layout_build(c, &layout);
    double matmul = 0;
    for (int i = 0; i < layout.count; i++) {
        const asa_tensor_info *t = &layout.tensors[i];
        if (t->ndim == 2 && strcmp(t->name, "model.embeddings.weight") != 0) matmul += 2.0 * (double)t->numel;
    }
    if (c->tie_word_embeddings) matmul += 2.0 * (double)c->vocab_size * c->hidden_size;
    asa_layout_free(&layout);
    double attn = 0;
    int h = c->num_heads;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        char k = c->layer_kinds[l];
        double dk, dv;
        if (k == 'F' || k == 'W' || k == 'N') dk = dv = c->head_dim;
        else if (k == 'L') dk = c->qk_nope_head_dim + c->qk_rope_head_dim, dv = c->v_head_dim;
        else dk = c->latent_dim + c->qk_rope_head_dim, dv = c->latent_dim;
        double per_key = 2.0 * h * (dk + dv);  // scores and weighted sum
        double keys = 0;
        if (k == 'F') keys = mean_keys_causal(T);
        else if (k == 'W' || k == 'L') keys = mean_keys_window(T, c->window_size);
        else {
            keys = mean_keys_cmp(T, c->block_size) + mean_keys_slc(T, c->selection_block_size, c->block_counts);
            if (k == 'N') keys += mean_keys_window(T, c->window_size);
        }
        attn += per_key * keys;
    }
    return matmul + attn;
}

double asa_flops_train_per_token(const asa_config *c, int T) { return 3.0 * asa_flops_forward_per_token(c, T); }
