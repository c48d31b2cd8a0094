// One decoding step of the whole model (SPEC §1-§5), written only in terms of backend ops: the same
// layer math as src/model/model.c on B rows of one position, with keys and values read from the cache
// instead of recomputed. Latent layers (L and G) attend in the absorbed form: the query is moved into
// latent space, qa_i = [q_nope_i W_uk_i ; q_rope_i], the keys are the cached rows [c_j ; kr] and the
// values c_j, and the output comes back through W_uv_i, so no per-head key or value is ever formed.
#include "infer/decode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/carve.h"
#include "core/error.h"

// ----------------------------------------------------------------------------
// activation arena: a first pass counts (base == NULL), a second assigns

#define TAKEF(cv, n) ((float *)asa_carve((cv), (size_t)(n) * sizeof(float)))
#define TAKEA(cv, n) ((asa_act *)asa_carve((cv), (size_t)(n) * (cv)->act_size))
#define AT(p, i) asa_act_at(be, (p), (size_t)(i))

static int max_int(int a, int b) { return a > b ? a : b; }

static size_t carve_acts(const asa_config *c, asa_dtype act, int B, char *base, asa_decode_acts *a) {
    asa_carver cv = {base, 0, 64, asa_dtype_size(act)};
    const size_t Bz = (size_t)B, h = (size_t)c->num_heads, dr = (size_t)c->qk_rope_head_dim;
    // widest per-head vector of any kind: queries, absorbed queries, branch outputs
    const size_t hd = (size_t)max_int(max_int(c->head_dim, c->qk_nope_head_dim + c->qk_rope_head_dim),
                                   max_int(max_int(c->kv_lora_rank, c->latent_dim) + c->qk_rope_head_dim, c->v_head_dim));
    const size_t lat = (size_t)max_int(c->kv_lora_rank, c->latent_groups * c->latent_dim);
    const size_t kvw = (size_t)c->num_kv_heads * c->head_dim;
    a->tokens = asa_carve(&cv, Bz * sizeof(int32_t));
    a->x = TAKEA(&cv, Bz * c->hidden_size);
    a->an = TAKEA(&cv, Bz * c->hidden_size);
    a->rstd = TAKEF(&cv, Bz);
    a->q = TAKEA(&cv, Bz * h * hd);
    a->k = TAKEA(&cv, Bz * kvw);
    a->v = TAKEA(&cv, Bz * kvw);
    a->cpre = TAKEA(&cv, Bz * lat);
    a->c = TAKEA(&cv, Bz * lat);
    a->c_rstd = TAKEF(&cv, Bz * (size_t)max_int(c->latent_groups, 1));
    a->kr = TAKEA(&cv, Bz * dr);
    a->qa = TAKEA(&cv, Bz * h * hd);
    a->glog = TAKEA(&cv, Bz * h * 3);
    a->o_cmp = TAKEA(&cv, Bz * h * hd);
    a->lse_cmp = TAKEF(&cv, Bz * h);
    a->o_slc = TAKEA(&cv, Bz * h * hd);
    a->lse_slc = TAKEF(&cv, Bz * h);
    a->o_win = TAKEA(&cv, Bz * h * hd);
    a->lse_win = TAKEF(&cv, Bz * h);
    a->ol = TAKEA(&cv, Bz * h * hd);
    a->o = TAKEA(&cv, Bz * h * hd);
    a->mg = TAKEA(&cv, Bz * c->intermediate_size);
    a->mu = TAKEA(&cv, Bz * c->intermediate_size);
    a->mh = TAKEA(&cv, Bz * c->intermediate_size);
    a->logits = TAKEA(&cv, Bz * c->vocab_size);
    return cv.off;
}

void asa_decoder_init(asa_decoder *dec, const asa_model *model, int B, int max_len) {
    memset(dec, 0, sizeof *dec);
    dec->model = model;
    dec->be = model->be;
    dec->B = B;
    dec->max_len = max_len;
    asa_kv_cache_init(&dec->kv, &model->cfg, dec->be, B, max_len);
    asa_decode_acts tmp;
    dec->arena_bytes = carve_acts(&model->cfg, dec->be->act, B, NULL, &tmp);
    dec->arena = dec->be->alloc(dec->be, dec->arena_bytes);
    carve_acts(&model->cfg, dec->be->act, B, dec->arena, &dec->a);
    dec->logits = dec->a.logits;
}

void asa_decoder_free(asa_decoder *dec) {
    if (!dec->be) return;
    asa_kv_cache_free(&dec->kv);
    dec->be->free(dec->be, dec->arena);
    memset(dec, 0, sizeof *dec);
}

void asa_decoder_reset(asa_decoder *dec) {
    asa_kv_cache_reset(&dec->kv);
    dec->pos = 0;
}

// ----------------------------------------------------------------------------
// per-kind attention: reads a->an, writes a->o (the o_proj input)

// y[B,out] = x[B,in] W^T + beta*y
static void linear(const asa_model *m, asa_act *y, const asa_act *x, const float *W, int B, int in, int out, float beta) {
    asa_backend *be = m->be;
    be->gemm(be, 0, 1, B, out, in, 1.0f, x, in, 0, asa_model_wcopy(m, W), in, 0, beta, y, be->act, out, 0, 1);
}

static int min_int(int a, int b) { return a < b ? a : b; }

// The sparse branches of N and G layers at position pos: pool the block that pos completes, attend
// over the complete blocks, refresh the block list at an anchor, attend over the selected blocks.
static void sparse_branches(asa_decoder *dec, const asa_layer_kv *L, int h, int g, float scale, const asa_act *q) {
    asa_backend *be = dec->be;
    const asa_config *c = &dec->model->cfg;
    asa_decode_acts *a = &dec->a;
    const int B = dec->B, pos = dec->pos, b = c->block_size;
    if ((pos + 1) % b == 0) asa_kv_pool_block(be, L, B, (pos + 1) / b - 1, b);
    const asa_kv_view tok = asa_kv_layer_view(be, L, c, 0), pooled = asa_kv_layer_view(be, L, c, 1);
    be->attn_decode(be, B, h, g, scale, q, &pooled, 0, (pos + 1) / b, a->o_cmp, a->lse_cmp);
    if (pos % c->selection_share == 0)
        be->select_decode(be, B, h, g, scale, q, &pooled, a->lse_cmp, pos, b, c->selection_block_size,
                          c->block_counts, L->idx);
    be->attn_slc_decode(be, B, h, g, scale, q, &tok, L->idx, pos, c->selection_block_size, c->block_counts,
                        a->o_slc, a->lse_slc);
}

static void attn_gqa(asa_decoder *dec, const asa_layer_weights *w, const asa_layer_kv *L) {
    asa_backend *be = dec->be;
    const asa_model *m = dec->model;
    const asa_config *c = &m->cfg;
    asa_decode_acts *a = &dec->a;
    const int B = dec->B, pos = dec->pos, D = c->hidden_size, h = c->num_heads, g = c->num_kv_heads, d = c->head_dim;
    const float scale = 1.0f / sqrtf((float)d);
    linear(m, a->q, a->an, w->q_proj, B, D, h * d, 0.0f);
    linear(m, a->k, a->an, w->k_proj, B, D, g * d, 0.0f);
    linear(m, a->v, a->an, w->v_proj, B, D, g * d, 0.0f);
    be->rope_fwd(be, a->q, B, 1, pos, h, h * d, d, 0, d, c->rope_theta);
    be->rope_fwd(be, a->k, B, 1, pos, g, g * d, d, 0, d, c->rope_theta);
    asa_kv_store(be, L, L->k, B, pos, 0, a->k, g * d, g * d);
    asa_kv_store(be, L, L->v, B, pos, 0, a->v, g * d, g * d);
    const asa_kv_view tok = asa_kv_layer_view(be, L, c, 0);
    if (L->kind == 'F') {
        be->attn_decode(be, B, h, g, scale, a->q, &tok, 0, pos + 1, a->o, a->lse_win);
        return;
    }
    if (L->kind == 'W') {  // the ring holds exactly the window once it is full
        be->attn_decode(be, B, h, g, scale, a->q, &tok, 0, min_int(pos + 1, L->rows), a->o, a->lse_win);
        return;
    }
    linear(m, a->glog, a->an, w->g_proj, B, D, 3 * h, 0.0f);
    sparse_branches(dec, L, h, g, scale, a->q);
    const int w0 = pos + 1 - c->window_size > 0 ? pos + 1 - c->window_size : 0;
    be->attn_decode(be, B, h, g, scale, a->q, &tok, w0, pos + 1, a->o_win, a->lse_win);
    const void *br[3] = {a->o_cmp, a->o_slc, a->o_win};
    be->gate_fwd(be, a->o, a->glog, br, 3, B, h, d);
}

static void attn_latent(asa_decoder *dec, const asa_layer_weights *w, const asa_layer_kv *L) {
    asa_backend *be = dec->be;
    const asa_model *m = dec->model;
    const asa_config *c = &m->cfg;
    asa_decode_acts *a = &dec->a;
    const int B = dec->B, pos = dec->pos, D = c->hidden_size, h = c->num_heads;
    const int dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
    const int global = L->kind == 'G';
    const int groups = global ? c->latent_groups : 1, dc = global ? c->latent_dim : c->kv_lora_rank;
    const int lat = groups * dc, hs_up = (dn + dv) * dc;  // floats per head in kv_up: W_uk_i then W_uv_i
    const float scale = 1.0f / sqrtf((float)(dn + dr));
    linear(m, a->q, a->an, w->q_proj, B, D, h * (dn + dr), 0.0f);
    be->rope_fwd(be, a->q, B, 1, pos, h, h * (dn + dr), dn + dr, dn, dr, c->rope_theta);
    linear(m, a->cpre, a->an, w->kv_down, B, D, lat, 0.0f);
    be->rmsnorm_fwd(be, a->c, a->c_rstd, a->cpre, w->kv_norm, B, groups, dc, c->norm_eps);
    linear(m, a->kr, a->an, w->k_rope, B, D, dr, 0.0f);
    be->rope_fwd(be, a->kr, B, 1, pos, 1, dr, dr, 0, dr, c->rope_theta);
    asa_kv_store(be, L, L->lat, B, pos, 0, a->c, lat, lat);
    asa_kv_store(be, L, L->lat, B, pos, lat, a->kr, dr, dr);
    // qa_i = [q_nope_i W_uk_i ; q_rope_i]
    be->gemm(be, 0, 0, B, dc, dn, 1.0f, a->q, h * (dn + dr), dn + dr, asa_model_wcopy(m, w->kv_up), dc, hs_up, 0.0f,
             a->qa, be->act, h * (dc + dr), dc + dr, h);
    be->copy_heads(be, AT(a->qa, dc), h * (dc + dr), dc + dr, AT(a->q, dn), h * (dn + dr), dn + dr, B, h, dr, 0);
    if (global) {
        linear(m, a->glog, a->an, w->g_proj, B, D, 2 * h, 0.0f);
        sparse_branches(dec, L, h, groups, scale, a->qa);
        const void *br[2] = {a->o_cmp, a->o_slc};
        be->gate_fwd(be, a->ol, a->glog, br, 2, B, h, dc);
    } else {
        const asa_kv_view tok = asa_kv_layer_view(be, L, c, 0);
        be->attn_decode(be, B, h, 1, scale, a->qa, &tok, 0, min_int(pos + 1, L->rows), a->ol, a->lse_win);
    }
    // o_i = ol_i W_uv_i^T
    be->gemm(be, 0, 1, B, dv, dc, 1.0f, a->ol, h * dc, dc, asa_model_wcopy(m, w->kv_up + (size_t)dn * dc), dc, hs_up,
             0.0f, a->o, be->act, h * dv, dv, h);
}

// ----------------------------------------------------------------------------
// whole model, one position

int asa_decoder_step(asa_decoder *dec, const int32_t *tokens) {
    asa_backend *be = dec->be;
    const asa_model *m = dec->model;
    const asa_config *c = &m->cfg;
    asa_decode_acts *a = &dec->a;
    const int B = dec->B, D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size;
    if (dec->pos >= dec->max_len)
        return asa_err_set("decoder: the cache holds %d tokens and is full", dec->max_len);
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= V)
            return asa_err_set("decoder: token %d is outside the vocabulary [0, %d)", (int)tokens[b], V);
    be->to_device(be, a->tokens, tokens, sizeof(int32_t) * (size_t)B);
    be->embedding_fwd(be, a->x, a->tokens, m->w.embed, B, D);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const asa_layer_weights *w = &m->w.layer[l];
        const asa_layer_kv *L = &dec->kv.layer[l];
        be->rmsnorm_fwd(be, a->an, a->rstd, a->x, w->attn_norm, B, 1, D, c->norm_eps);
        const int dvo = (L->kind == 'L' || L->kind == 'G') ? c->v_head_dim : c->head_dim;
        if (L->kind == 'L' || L->kind == 'G') attn_latent(dec, w, L);
        else attn_gqa(dec, w, L);
        linear(m, a->x, a->o, w->o_proj, B, c->num_heads * dvo, D, 1.0f);
        be->rmsnorm_fwd(be, a->an, a->rstd, a->x, w->mlp_norm, B, 1, D, c->norm_eps);
        linear(m, a->mg, a->an, w->gate_proj, B, D, I, 0.0f);
        linear(m, a->mu, a->an, w->up_proj, B, D, I, 0.0f);
        be->swiglu_fwd(be, a->mh, a->mg, a->mu, B, I);
        linear(m, a->x, a->mh, w->down_proj, B, I, D, 1.0f);
    }
    be->rmsnorm_fwd(be, a->an, a->rstd, a->x, m->w.final_norm, B, 1, D, c->norm_eps);
    linear(m, a->logits, a->an, m->w.lm_head, B, D, V, 0.0f);
    dec->pos++;
    return ASA_OK;
}
