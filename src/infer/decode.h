// Incremental decoding: an asa_decoder runs a model one token per sequence at a time over a KV cache
// (infer/kv_cache.h), B sequences in lockstep, and gives the logits of each step. Token-by-token
// decoding computes what asa_model_forward computes over the whole sequence (to rounding): latent
// layers run in the absorbed form of SPEC §3, and sparse layers recompute their block list at each
// anchor position (pos % selection_share == 0) and reuse it until the next one.
#ifndef ASA_INFER_DECODE_H
#define ASA_INFER_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "infer/kv_cache.h"
#include "model/model.h"

// One step's activations, B rows each (backend memory).
typedef struct {
    int32_t *tokens;                         // [B]
    asa_act *x;                              // [B, D] residual stream
    asa_act *an;                             // [B, D] normalised input
    float *rstd;                             // [B] 1/rms (not kept)
    asa_act *q, *k, *v;                      // [B, h*dq] after RoPE; GQA [B, g*d] key (after RoPE), value
    asa_act *cpre, *c, *kr;                  // latent: [B, lat] before / after kv_norm, [B, dr]
    float *c_rstd;                           // latent: [B, groups]
    asa_act *qa;                             // latent: [B, h, dc+dr] absorbed query
    asa_act *glog;                           // [B, h*nbr] gate logits
    asa_act *o_cmp, *o_slc, *o_win;          // branch outputs [B, h, dv]
    float *lse_cmp, *lse_slc, *lse_win;      // [B, h]; lse_win is also the lse of F, W and L (not kept)
    asa_act *ol;                             // latent: [B, h, dc] output in latent space
    asa_act *o;                              // [B, h*dv] the input of o_proj
    asa_act *mg, *mu, *mh;                   // [B, I]
    asa_act *logits;                         // [B, V]
} asa_decode_acts;

typedef struct {
    const asa_model *model;  // weights and config, not owned
    asa_backend *be;
    int B, max_len;
    int pos;                 // position of the next token (tokens decoded so far)
    asa_kv_cache kv;
    void *arena;             // the activations' arena
    size_t arena_bytes;
    asa_decode_acts a;
    const asa_act *logits;   // [B, V] logits of the last step (backend memory, valid until the next step;
                             // read them with be->act_to_host)
} asa_decoder;

// A decoder for B sequences of at most max_len tokens, with an empty cache.
void asa_decoder_init(asa_decoder *dec, const asa_model *model, int B, int max_len);
void asa_decoder_free(asa_decoder *dec);
// Forgets every token: the next step is position 0 again.
void asa_decoder_reset(asa_decoder *dec);
// Feeds tokens[b] (host memory, one per sequence) at position dec->pos and advances it; dec->logits
// then holds the next-token logits [B, V]. ASA_ERR with a message when the cache is full or a token is
// outside [0, vocab_size).
int asa_decoder_step(asa_decoder *dec, const int32_t *tokens);

#endif
