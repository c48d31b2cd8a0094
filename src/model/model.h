// The model: parameters, gradients and activations in one arena each (backend memory), and the
// explicit forward and backward pass of SPEC §1-§4 written against the backend op table.
#ifndef ASA_MODEL_MODEL_H
#define ASA_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "asa/config.h"
#include "backend/backend.h"
#include "model/params.h"

// Saved activations of one layer (pointers into the activation arena). Which fields are used depends
// on the layer kind; the comments give shapes with N = B*T rows. asa_act tensors are in the backend's
// storage type (be->act), float ones (1/rms, log-sum-exp) fp32 in every mode.
typedef struct {
    asa_act *res_mid;          // [N, D] residual after the attention block
    asa_act *an;               // [N, D] attention pre-norm output
    float *an_rstd;            // [N] its 1/rms
    asa_act *q;                // [N, h*dq] after RoPE (dq = d for F/W/N, dn+dr for L/G)
    asa_act *k, *v;            // F/W/N: [N, g*d] (k after RoPE); L: [N, h*(dn+dr)], [N, h*dv] per-head keys/values
    asa_act *o;                // [N, h*dv_out] the input of o_proj (dv_out = d or dv)
    float *lse;                // [N, h] (F/W/L: the single branch)
    // latent layers
    asa_act *cpre, *c;         // [N, lat] kv_down output, normalised latent
    float *c_rstd;             // [N, groups] 1/rms
    asa_act *kr;               // [N, dr] shared RoPE key, after RoPE
    asa_act *kvu;              // L: [N, h*(dn+dv)] kv_up output
    asa_act *qa;               // G: [N, h, dcg+dr] absorbed query (W_uk folded in)
    asa_act *kl;               // G: [N, ng, dcg+dr] latent keys [c_j ; kr]
    asa_act *ol;               // G: [N, h, dcg] gated output in latent space
    // sparse kinds (N, G)
    asa_act *glog;             // [N, h*nbr] gate logits
    asa_act *kc, *vc;          // [B, nb, g, dk], [B, nb, g, dv]
    asa_act *o_cmp, *o_slc, *o_win;  // [N, h, dv] branch outputs
    float *lse_cmp, *lse_slc, *lse_win;  // [N, h]
    int32_t *idx;              // [B, na, g, n]
    // MLP
    asa_act *mn;               // [N, D] MLP pre-norm output
    float *mn_rstd;            // [N]
    asa_act *mg, *mu, *mh;     // [N, I] gate, up, silu(gate)*up
} asa_layer_acts;

typedef struct {
    asa_config cfg;
    asa_backend *be;
    asa_param_layout layout;
    float *params, *grads;     // layout.total floats each (backend memory): fp32 master weights, gradients
    asa_weights w, gw;         // views into params and grads
    // The weights the products read: params rounded to be->act, refreshed by every forward of a training
    // model and by asa_model_set_params (an alias of params when be->act is fp32).
    asa_act *wc;

    // Activation recomputation: set before a forward (a change re-carves the arena on the next one).
    // The forward then keeps only the residual stream res[l] and one layer slot that every la[l] points
    // at; the backward recomputes layer l's activations from res[l] just before its backward. Results
    // are bit-identical to the default mode; the cost is one more forward of every layer but the last.
    int recompute;

    // activations for the current batch shape
    int B, T;                  // capacity the arena was carved for
    int carved_recompute;      // the mode it was carved for
    int slot_layer;            // recompute: the layer whose activations the shared slot holds, or -1
    void *acts, *gacts;        // arena of saved activations, scratch arena for their gradients
    asa_layer_acts *la;        // [num_hidden_layers] (recompute: all the same slot)
    asa_layer_acts gl;         // gradient views (one layer's worth, reused layer by layer)
    asa_act *res;              // [L+1, N, D] residual stream: res[l] = input of layer l, res[L] = output
    asa_act *fn;               // [N, D] final norm
    float *fn_rstd;            // [N]
    asa_act *logits;           // [N, V] (read them with be->act_to_host)
    float *losses;             // [N]
    asa_act *dres, *dres2;     // [N, D] residual gradients
    int32_t *tokens, *targets; // [N] backend copies
    int32_t *host_targets;     // [N] host copy, for counting valid targets
    int cur_B, cur_T;          // shape of the last forward
    float loss;                // mean loss of the last forward with targets
    int num_valid;             // targets >= 0 in the last forward
} asa_model;

// The compute copy of master weight W (a view into m->params) that the products read.
static inline const asa_act *asa_model_wcopy(const asa_model *m, const float *W) {
    return asa_act_at(m->be, m->wc, (size_t)(W - m->params));
}

// Allocates and initialises parameters (SPEC §1 init with `seed`) and zeroes gradients.
void asa_model_init(asa_model *m, const asa_config *cfg, asa_backend *be, uint64_t seed);
// For inference: parameters only (zeros, to be set with asa_model_set_params), no gradient arena.
// asa_model_backward must not be called on such a model.
void asa_model_init_inference(asa_model *m, const asa_config *cfg, asa_backend *be);
void asa_model_free(asa_model *m);
// Copies host parameters (layout order, layout.total floats) in or out.
void asa_model_set_params(asa_model *m, const float *host);
void asa_model_get_params(asa_model *m, float *host);
// Bytes of activation memory for training on a batch of B sequences of T tokens (saved activations and
// the backward's gradient scratch) stored as `act`, with or without recomputation (for messages and
// `asa info`).
size_t asa_model_act_bytes(const asa_config *cfg, asa_dtype act, int B, int T, int recompute);
// Refuses (ASA_ERR, a message with the bytes needed and free) a model that will not fit the backend's
// memory: parameters, and for training gradients and the two AdamW moments (unless already allocated),
// plus the activations of a B x T batch in the given recompute mode. training: 0 for inference, else the
// number of ranks the moments are sharded over (1 without ZeRO-1).
int asa_model_check_memory(asa_backend *be, const asa_config *cfg, int B, int T, int training, int params_allocated,
                           int recompute);
// Forward pass over tokens [B, T] (host, validated 0 <= token < V by the caller). With targets
// (host, [B, T], < 0 = ignored) it computes the mean loss and returns it; without, it returns 0.
// Logits stay in m->logits ([B*T, V], backend memory).
float asa_model_forward(asa_model *m, const int32_t *tokens, const int32_t *targets, int B, int T);
// Backward pass of the last forward (which must have had targets): ACCUMULATES into m->grads, scaled by
// `loss_scale` (1 for one micro-batch; 1/k when averaging k accumulated micro-batches).
void asa_model_backward(asa_model *m, float loss_scale);
void asa_model_zero_grad(asa_model *m);

// Where a NaN or Inf came from, in the order a step computes things. asa_model_find_nonfinite names the
// first non-finite tensor among the parameters (layout order), then the last forward's activations from
// the embedding output through each layer's attention and MLP blocks to the logits and losses (with
// recomputation, a layer's attention block only when the slot holds that layer); it
// writes "" when everything is finite. asa_model_find_nonfinite_grad returns the layout index of the
// first gradient tensor with a non-finite element in [lo, lo + n) of the arena, in the order the
// backward pass produces them (the last layer's first), or -1.
void asa_model_find_nonfinite(asa_model *m, char *buf, size_t cap);
int asa_model_find_nonfinite_grad(asa_model *m, size_t lo, size_t n);

#endif
