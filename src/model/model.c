// Forward and backward of the whole model (SPEC §1-§4), one function per layer kind, written only in
// terms of backend ops. Layer kinds and what they compute:
//   F, W  GQA attention, full or windowed.
//   N     GQA with three branches (compressed, selected, window) mixed by sigmoid gates.
//   L     sliding-window MLA, per-head keys [kn_i ; kr] and values materialised from the latent.
//   G     grouped-latent attention in the absorbed form: W_uk is folded into the query and W_uv into
//         the output, so each latent group is one shared KV head [c_j ; kr] (values c_j) and the
//         sparse branches run exactly as for an N layer with g = latent_groups. SPEC §3 allows either
//         form; this one lets a group's heads share each selected block, as the fast kernels need.
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/carve.h"
#include "core/error.h"

// ----------------------------------------------------------------------------
// per-layer dimensions

typedef struct {
    char kind;
    int h, g;      // query heads; KV heads (F/W/N), heads (L), latent groups (G)
    int dq;        // q head size as projected: d (F/W/N), dn+dr (L/G)
    int dk, dv;    // attention key / value head dims (G: latent dims dcg+dr, dcg)
    int dvo;       // per-head size of the o_proj input: d (F/W/N), dv (L/G)
    int lat;       // latent width (L: dc, G: ng*dcg)
    int nbr;       // gated branches: N 3, G 2, else 0
    float scale;
} layer_dims;

static layer_dims dims_of(const asa_config *c, char kind) {
    layer_dims d = {0};
    d.kind = kind;
    d.h = c->num_heads;
    if (kind == 'F' || kind == 'W' || kind == 'N') {
        d.g = c->num_kv_heads;
        d.dq = d.dk = d.dv = d.dvo = c->head_dim;
        d.scale = 1.0f / sqrtf((float)c->head_dim);
        d.nbr = kind == 'N' ? 3 : 0;
    } else {
        int dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
        d.dq = dn + dr;
        d.dvo = c->v_head_dim;
        d.scale = 1.0f / sqrtf((float)(dn + dr));
        if (kind == 'L') {
            d.g = d.h;
            d.dk = dn + dr;
            d.dv = c->v_head_dim;
            d.lat = c->kv_lora_rank;
        } else {
            d.g = c->latent_groups;
            d.dk = c->latent_dim + dr;
            d.dv = c->latent_dim;
            d.lat = c->latent_groups * c->latent_dim;
            d.nbr = 2;
        }
    }
    return d;
}

static asa_attn_shape attn_shape(const asa_config *c, const layer_dims *d, int B, int T) {
    asa_attn_shape s = {0};
    s.B = B;
    s.T = T;
    s.h = d->h;
    s.g = d->g;
    s.dk = d->dk;
    s.dv = d->dv;
    s.scale = d->scale;
    s.window = (d->kind == 'F') ? 0 : c->window_size;
    s.block_size = c->block_size;
    s.selection_block_size = c->selection_block_size;
    s.block_counts = c->block_counts;
    s.selection_share = c->selection_share;
    return s;
}

// ----------------------------------------------------------------------------
// activation arena: one pass counts, a second assigns (base != NULL)

// Every view starts on a 256-byte boundary: cuBLASLt picks its kernel by operand alignment (up to 256
// bytes, src/backend/cuda/gemm.cu), so a product gets the same kernel and the same rounding wherever its
// view lies, in particular in either recompute mode.
#define ARENA_ALIGN 256
static asa_carver carver_new(char *base, asa_dtype act) { return (asa_carver){base, 0, ARENA_ALIGN, asa_dtype_size(act)}; }
#define TAKEF(cv, n) ((float *)asa_carve((cv), (size_t)(n) * sizeof(float)))
#define TAKEI(cv, n) ((int32_t *)asa_carve((cv), (size_t)(n) * sizeof(int32_t)))
#define TAKEA(cv, n) ((asa_act *)asa_carve((cv), (size_t)(n) * (cv)->act_size))

static void carve_layer(const asa_config *c, char kind, int B, int T, asa_carver *cv, asa_layer_acts *a) {
    memset(a, 0, sizeof *a);
    layer_dims d = dims_of(c, kind);
    size_t N = (size_t)B * T, D = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t h = (size_t)d.h, g = (size_t)d.g;
    a->res_mid = TAKEA(cv, N * D);
    a->an = TAKEA(cv, N * D);
    a->an_rstd = TAKEF(cv, N);
    a->q = TAKEA(cv, N * h * d.dq);
    a->o = TAKEA(cv, N * h * d.dvo);
    if (kind == 'F' || kind == 'W' || kind == 'N') {
        a->k = TAKEA(cv, N * g * d.dk);
        a->v = TAKEA(cv, N * g * d.dv);
    } else {
        int dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
        int groups = kind == 'G' ? c->latent_groups : 1;
        a->cpre = TAKEA(cv, N * d.lat);
        a->c = TAKEA(cv, N * d.lat);
        a->c_rstd = TAKEF(cv, N * groups);
        a->kr = TAKEA(cv, N * dr);
        if (kind == 'L') {
            a->kvu = TAKEA(cv, N * h * (dn + c->v_head_dim));
            a->k = TAKEA(cv, N * h * d.dk);
            a->v = TAKEA(cv, N * h * d.dv);
        } else {
            a->qa = TAKEA(cv, N * h * d.dk);
            a->kl = TAKEA(cv, N * g * d.dk);
            a->ol = TAKEA(cv, N * h * d.dv);
        }
    }
    if (kind == 'N' || kind == 'G') {
        size_t nb = (size_t)(T / c->block_size);
        size_t na = (size_t)((T + c->selection_share - 1) / c->selection_share);
        a->glog = TAKEA(cv, N * h * d.nbr);
        a->kc = TAKEA(cv, B * nb * g * d.dk);
        a->vc = TAKEA(cv, B * nb * g * d.dv);
        a->o_cmp = TAKEA(cv, N * h * d.dv);
        a->lse_cmp = TAKEF(cv, N * h);
        a->o_slc = TAKEA(cv, N * h * d.dv);
        a->lse_slc = TAKEF(cv, N * h);
        a->idx = TAKEI(cv, B * na * g * (size_t)c->block_counts);
        if (kind == 'N') {
            a->o_win = TAKEA(cv, N * h * d.dv);
            a->lse_win = TAKEF(cv, N * h);
        }
    } else {
        a->lse = TAKEF(cv, N * h);
    }
    a->mn = TAKEA(cv, N * D);
    a->mn_rstd = TAKEF(cv, N);
    a->mg = TAKEA(cv, N * I);
    a->mu = TAKEA(cv, N * I);
    a->mh = TAKEA(cv, N * I);
}

// Top-level buffers plus every layer's saved activations, or with recompute one slot sized for the
// largest layer kind that every layer's views share; returns bytes.
static size_t carve_all(asa_model *m, const asa_config *c, asa_dtype act, int B, int T, char *base, int recompute) {
    asa_carver cv = carver_new(base, act);
    size_t N = (size_t)B * T, D = (size_t)c->hidden_size, L = (size_t)c->num_hidden_layers, end = 0;
    asa_layer_acts dummy;
    for (size_t l = 0; l < L; l++) {
        if (recompute) cv.off = 0;
        carve_layer(c, c->layer_kinds[l], B, T, &cv, m ? &m->la[l] : &dummy);
        if (cv.off > end) end = cv.off;
    }
    cv.off = end;
    asa_act *res = TAKEA(&cv, (L + 1) * N * D);
    asa_act *fn = TAKEA(&cv, N * D);
    float *fn_rstd = TAKEF(&cv, N);
    asa_act *logits = TAKEA(&cv, N * (size_t)c->vocab_size);
    float *losses = TAKEF(&cv, N);
    int32_t *tokens = TAKEI(&cv, N), *targets = TAKEI(&cv, N);
    if (m) {
        m->res = res;
        m->fn = fn;
        m->fn_rstd = fn_rstd;
        m->logits = logits;
        m->losses = losses;
        m->tokens = tokens;
        m->targets = targets;
    }
    return cv.off;
}

// Gradient scratch: two [N, D] buffers, then one layer's worth of views (the largest kind in the
// model), which start at grad_views_offset.
static size_t grad_views_offset(size_t N, size_t D, asa_dtype act) {
    asa_carver cv = carver_new(NULL, act);
    TAKEA(&cv, N * D);
    TAKEA(&cv, N * D);
    return cv.off;
}

static size_t carve_grads(asa_model *m, const asa_config *c, asa_dtype act, int B, int T, char *base, char kind) {
    asa_carver cv = carver_new(base, act);
    size_t N = (size_t)B * T, D = (size_t)c->hidden_size;
    asa_act *dres = TAKEA(&cv, N * D), *dres2 = TAKEA(&cv, N * D);
    if (m) {
        m->dres = dres;
        m->dres2 = dres2;
    }
    size_t start = cv.off, most = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        char k = c->layer_kinds[l];
        if (kind && k != kind) continue;
        asa_layer_acts tmp;
        cv.off = start;
        carve_layer(c, k, B, T, &cv, m && kind ? &m->gl : &tmp);
        if (cv.off - start > most) most = cv.off - start;
        if (kind) break;
    }
    return start + most;
}

size_t asa_model_act_bytes(const asa_config *cfg, asa_dtype act, int B, int T, int recompute) {
    return carve_all(NULL, cfg, act, B, T, NULL, recompute) + carve_grads(NULL, cfg, act, B, T, NULL, 0);
}

int asa_model_check_memory(asa_backend *be, const asa_config *cfg, int B, int T, int training, int params_allocated,
                           int recompute) {
    asa_param_layout layout;
    asa_layout_build(cfg, &layout);
    double gib = 1024.0 * 1024 * 1024, arena = (double)layout.total * sizeof(float);
    double copy = be->act == ASA_F32 ? 0 : (double)layout.total * asa_dtype_size(be->act);
    asa_layout_free(&layout);
    // weights (and their compute copy), grads, and AdamW m and v (this rank's shard of them)
    double params = params_allocated ? 0 : arena * (training ? 2 + 2.0 / training : 1) + copy;
    double acts = training ? (double)asa_model_act_bytes(cfg, be->act, B, T, recompute)
                           : (double)carve_all(NULL, cfg, be->act, B, T, NULL, recompute);
    size_t free_b = 0, total_b = 0;
    be->mem_info(be, &free_b, &total_b);
    if (params + acts <= (double)free_b) return ASA_OK;
    char what[128] = "the model is allocated";
    if (!params_allocated)
        snprintf(what, sizeof what, "%s %.2f GiB", training ? "weights, gradients and AdamW" : "weights", params / gib);
    return asa_err_set("needs %.2f GiB on the %s backend (%s; activations of %d x %d tokens %.2f GiB) but %.2f GiB "
                       "of %.2f GiB is free; use a smaller --batch or --seq%s",
                       (params + acts) / gib, be->name, what, B, T, acts / gib, free_b / gib, total_b / gib,
                       training && !recompute ? ", or --recompute" : "");
}

static void ensure_acts(asa_model *m, int B, int T) {
    if (m->acts && m->B == B && m->T == T && m->carved_recompute == m->recompute) return;
    asa_backend *be = m->be;
    if (m->acts) be->free(be, m->acts);
    if (m->gacts) be->free(be, m->gacts);
    m->gacts = NULL;
    m->acts = be->alloc(be, carve_all(NULL, &m->cfg, be->act, B, T, NULL, m->recompute));
    carve_all(m, &m->cfg, be->act, B, T, m->acts, m->recompute);
    m->carved_recompute = m->recompute;
    m->slot_layer = -1;
    if (m->grads) {  // inference models never run backward
        m->gacts = be->alloc(be, carve_grads(NULL, &m->cfg, be->act, B, T, NULL, 0));
        carve_grads(m, &m->cfg, be->act, B, T, m->gacts, 0);
    }
    free(m->host_targets);
    m->host_targets = asa_malloc(sizeof(int32_t) * (size_t)B * T);
    m->B = B;
    m->T = T;
}

// ----------------------------------------------------------------------------
// helpers

// Element offsets into activation tensors (be in scope).
#define AT(p, i) asa_act_at(be, (p), (size_t)(i))

// y[N,out] (+)= x[N,in] W^T
static void linear_fwd(const asa_model *m, asa_act *y, const asa_act *x, const float *W, int N, int in, int out,
                       float beta) {
    asa_backend *be = m->be;
    be->gemm(be, 0, 1, N, out, in, 1.0f, x, in, 0, asa_model_wcopy(m, W), in, 0, beta, y, be->act, out, 0, 1);
}

// dx[N,in] += dy[N,out] W ; dW[out,in] += dy^T x (fp32)
static void linear_bwd(const asa_model *m, asa_act *dx, float *dW, const asa_act *dy, const asa_act *x, const float *W,
                       int N, int in, int out) {
    asa_backend *be = m->be;
    if (dx) be->gemm(be, 0, 0, N, in, out, 1.0f, dy, out, 0, asa_model_wcopy(m, W), in, 0, 1.0f, dx, be->act, in, 0, 1);
    be->gemm(be, 1, 0, out, in, N, 1.0f, dy, out, 0, x, in, 0, 1.0f, dW, ASA_F32, in, 0, 1);
}

static void copy_rows(asa_backend *be, asa_act *dst, const asa_act *src, int N, int D) {
    be->copy_heads(be, dst, D, 0, src, D, 0, N, 1, D, 0);
}

// ----------------------------------------------------------------------------
// attention forward, per kind: reads a->an, writes a->o (the o_proj input)

static void attn_gqa_fwd(asa_model *m, const asa_layer_weights *w, asa_layer_acts *a, const layer_dims *d, int B, int T) {
    asa_backend *be = m->be;
    const asa_config *c = &m->cfg;
    int N = B * T, D = c->hidden_size, h = d->h, g = d->g, hd = d->dk;
    float theta = c->rope_theta;
    linear_fwd(m, a->q, a->an, w->q_proj, N, D, h * hd, 0.0f);
    linear_fwd(m, a->k, a->an, w->k_proj, N, D, g * hd, 0.0f);
    linear_fwd(m, a->v, a->an, w->v_proj, N, D, g * hd, 0.0f);
    be->rope_fwd(be, a->q, N, T, 0, h, h * hd, hd, 0, hd, theta);
    be->rope_fwd(be, a->k, N, T, 0, g, g * hd, hd, 0, hd, theta);
    asa_attn_shape s = attn_shape(c, d, B, T);
    if (d->kind != 'N') {
        be->attn_fwd(be, &s, a->q, a->k, a->v, a->o, a->lse);
        return;
    }
    linear_fwd(m, a->glog, a->an, w->g_proj, N, D, 3 * h, 0.0f);
    be->compress_fwd(be, &s, hd, a->k, a->kc);
    be->compress_fwd(be, &s, hd, a->v, a->vc);
    be->attn_cmp_fwd(be, &s, a->q, a->kc, a->vc, a->o_cmp, a->lse_cmp);
    be->select_topk(be, &s, a->q, a->kc, a->lse_cmp, a->idx);
    be->attn_slc_fwd(be, &s, a->q, a->k, a->v, a->idx, a->o_slc, a->lse_slc);
    be->attn_fwd(be, &s, a->q, a->k, a->v, a->o_win, a->lse_win);
    const void *br[3] = {a->o_cmp, a->o_slc, a->o_win};
    be->gate_fwd(be, a->o, a->glog, br, 3, N, h, hd);
}

// Shared by L and G: q (RoPE on the last dr of each head), the latent c = RMSNorm(x W_dkv^T) per group,
// and the shared RoPE key kr.
static void latent_common_fwd(asa_model *m, const asa_layer_weights *w, asa_layer_acts *a, const layer_dims *d, int B, int T) {
    asa_backend *be = m->be;
    const asa_config *c = &m->cfg;
    int N = B * T, D = c->hidden_size, h = d->h, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
    int groups = d->kind == 'G' ? c->latent_groups : 1;
    linear_fwd(m, a->q, a->an, w->q_proj, N, D, h * (dn + dr), 0.0f);
    be->rope_fwd(be, a->q, N, T, 0, h, h * (dn + dr), dn + dr, dn, dr, c->rope_theta);
    linear_fwd(m, a->cpre, a->an, w->kv_down, N, D, d->lat, 0.0f);
    be->rmsnorm_fwd(be, a->c, a->c_rstd, a->cpre, w->kv_norm, N, groups, d->lat / groups, c->norm_eps);
    linear_fwd(m, a->kr, a->an, w->k_rope, N, D, dr, 0.0f);
    be->rope_fwd(be, a->kr, N, T, 0, 1, dr, dr, 0, dr, c->rope_theta);
}

static void attn_local_fwd(asa_model *m, const asa_layer_weights *w, asa_layer_acts *a, const layer_dims *d, int B, int T) {
    asa_backend *be = m->be;
    const asa_config *c = &m->cfg;
    int N = B * T, h = d->h, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
    latent_common_fwd(m, w, a, d, B, T);
    linear_fwd(m, a->kvu, a->c, w->kv_up, N, d->lat, h * (dn + dv), 0.0f);
    // k_i = [kn_i ; kr], v_i from the second part of each head's kv_up rows
    be->copy_heads(be, a->k, h * (dn + dr), dn + dr, a->kvu, h * (dn + dv), dn + dv, N, h, dn, 0);
    be->copy_heads(be, AT(a->k, dn), h * (dn + dr), dn + dr, a->kr, dr, 0, N, h, dr, 0);
    be->copy_heads(be, a->v, h * dv, dv, AT(a->kvu, dn), h * (dn + dv), dn + dv, N, h, dv, 0);
    asa_attn_shape s = attn_shape(c, d, B, T);
    be->attn_fwd(be, &s, a->q, a->k, a->v, a->o, a->lse);
}

static void attn_global_fwd(asa_model *m, const asa_layer_weights *w, asa_layer_acts *a, const layer_dims *d, int B, int T) {
    asa_backend *be = m->be;
    const asa_config *c = &m->cfg;
    int N = B * T, D = c->hidden_size, h = d->h, ng = d->g;
    int dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim, dcg = c->latent_dim;
    int hs_up = (dn + dv) * dcg;  // floats per head in kv_up: dn rows of W_uk then dv rows of W_uv
    latent_common_fwd(m, w, a, d, B, T);
    // qa_i = [q_nope_i W_uk_i ; q_rope_i]: the query in latent space of its group
    be->gemm(be, 0, 0, N, dcg, dn, 1.0f, a->q, h * (dn + dr), dn + dr, asa_model_wcopy(m, w->kv_up), dcg, hs_up,
             0.0f, a->qa, be->act, h * (dcg + dr), dcg + dr, h);
    be->copy_heads(be, AT(a->qa, dcg), h * (dcg + dr), dcg + dr, AT(a->q, dn), h * (dn + dr), dn + dr, N, h, dr, 0);
    // kl_j = [c_j ; kr]; the values are c itself
    be->copy_heads(be, a->kl, ng * (dcg + dr), dcg + dr, a->c, ng * dcg, dcg, N, ng, dcg, 0);
    be->copy_heads(be, AT(a->kl, dcg), ng * (dcg + dr), dcg + dr, a->kr, dr, 0, N, ng, dr, 0);
    linear_fwd(m, a->glog, a->an, w->g_proj, N, D, 2 * h, 0.0f);
    asa_attn_shape s = attn_shape(c, d, B, T);
    be->compress_fwd(be, &s, d->dk, a->kl, a->kc);
    be->compress_fwd(be, &s, d->dv, a->c, a->vc);
    be->attn_cmp_fwd(be, &s, a->qa, a->kc, a->vc, a->o_cmp, a->lse_cmp);
    be->select_topk(be, &s, a->qa, a->kc, a->lse_cmp, a->idx);
    be->attn_slc_fwd(be, &s, a->qa, a->kl, a->c, a->idx, a->o_slc, a->lse_slc);
    const void *br[2] = {a->o_cmp, a->o_slc};
    be->gate_fwd(be, a->ol, a->glog, br, 2, N, h, dcg);
    // o_i = ol_i W_uv_i^T
    be->gemm(be, 0, 1, N, dv, dcg, 1.0f, a->ol, h * dcg, dcg, asa_model_wcopy(m, w->kv_up + (size_t)dn * dcg), dcg, hs_up,
             0.0f, a->o, be->act, h * dv, dv, h);
}

// ----------------------------------------------------------------------------
// attention backward, per kind: reads g->o (d o_proj input), accumulates into g->an and parameter grads

static void attn_gqa_bwd(asa_model *m, const asa_layer_weights *w, asa_layer_weights *gw, asa_layer_acts *a,
                         asa_layer_acts *g, const layer_dims *d, int B, int T) {
    asa_backend *be = m->be;
    const asa_config *c = &m->cfg;
    int N = B * T, D = c->hidden_size, h = d->h, kvh = d->g, hd = d->dk;
    asa_attn_shape s = attn_shape(c, d, B, T);
    if (d->kind != 'N') {
        be->attn_bwd(be, &s, a->q, a->k, a->v, a->o, a->lse, g->o, NULL, g->q, g->k, g->v);
    } else {
        const void *br[3] = {a->o_cmp, a->o_slc, a->o_win};
        void *dbr[3] = {g->o_cmp, g->o_slc, g->o_win};
        // lse has no gradient: its slots among the gradient views take the branches' row dots
        float *drow[3] = {g->lse_cmp, g->lse_slc, g->lse_win};
        be->gate_bwd(be, g->glog, dbr, drow, g->o, a->glog, br, 3, N, h, hd);
        be->attn_bwd(be, &s, a->q, a->k, a->v, a->o_win, a->lse_win, g->o_win, drow[2], g->q, g->k, g->v);
        be->attn_slc_bwd(be, &s, a->q, a->k, a->v, a->idx, a->o_slc, a->lse_slc, g->o_slc, drow[1], g->q, g->k,
                         g->v);
        be->attn_cmp_bwd(be, &s, a->q, a->kc, a->vc, a->o_cmp, a->lse_cmp, g->o_cmp, drow[0], g->q, g->kc, g->vc);
        be->compress_bwd(be, &s, hd, g->kc, g->k);
        be->compress_bwd(be, &s, hd, g->vc, g->v);
        linear_bwd(m, g->an, gw->g_proj, g->glog, a->an, w->g_proj, N, D, 3 * h);
    }
    be->rope_bwd(be, g->q, N, T, 0, h, h * hd, hd, 0, hd, c->rope_theta);
    be->rope_bwd(be, g->k, N, T, 0, kvh, kvh * hd, hd, 0, hd, c->rope_theta);
    linear_bwd(m, g->an, gw->q_proj, g->q, a->an, w->q_proj, N, D, h * hd);
    linear_bwd(m, g->an, gw->k_proj, g->k, a->an, w->k_proj, N, D, kvh * hd);
    linear_bwd(m, g->an, gw->v_proj, g->v, a->an, w->v_proj, N, D, kvh * hd);
}

// Inverse of latent_common_fwd, from g->q (post-RoPE), g->c and g->kr.
static void latent_common_bwd(asa_model *m, const asa_layer_weights *w, asa_layer_weights *gw, asa_layer_acts *a,
                              asa_layer_acts *g, const layer_dims *d, int B, int T) {
    asa_backend *be = m->be;
    const asa_config *c = &m->cfg;
    int N = B * T, D = c->hidden_size, h = d->h, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
    int groups = d->kind == 'G' ? c->latent_groups : 1;
    be->rmsnorm_bwd(be, g->cpre, gw->kv_norm, g->c, a->cpre, w->kv_norm, a->c_rstd, N, groups, d->lat / groups);
    linear_bwd(m, g->an, gw->kv_down, g->cpre, a->an, w->kv_down, N, D, d->lat);
    be->rope_bwd(be, g->kr, N, T, 0, 1, dr, dr, 0, dr, c->rope_theta);
    linear_bwd(m, g->an, gw->k_rope, g->kr, a->an, w->k_rope, N, D, dr);
    be->rope_bwd(be, g->q, N, T, 0, h, h * (dn + dr), dn + dr, dn, dr, c->rope_theta);
    linear_bwd(m, g->an, gw->q_proj, g->q, a->an, w->q_proj, N, D, h * (dn + dr));
}

static void attn_local_bwd(asa_model *m, const asa_layer_weights *w, asa_layer_weights *gw, asa_layer_acts *a,
                           asa_layer_acts *g, const layer_dims *d, int B, int T) {
    asa_backend *be = m->be;
    const asa_config *c = &m->cfg;
    int N = B * T, h = d->h, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
    asa_attn_shape s = attn_shape(c, d, B, T);
    be->attn_bwd(be, &s, a->q, a->k, a->v, a->o, a->lse, g->o, NULL, g->q, g->k, g->v);
    be->copy_heads(be, g->kvu, h * (dn + dv), dn + dv, g->k, h * (dn + dr), dn + dr, N, h, dn, 1);
    be->copy_heads(be, AT(g->kvu, dn), h * (dn + dv), dn + dv, g->v, h * dv, dv, N, h, dv, 1);
    be->copy_heads(be, g->kr, dr, 0, AT(g->k, dn), h * (dn + dr), dn + dr, N, h, dr, 1);  // sum over heads
    linear_bwd(m, g->c, gw->kv_up, g->kvu, a->c, w->kv_up, N, d->lat, h * (dn + dv));
    latent_common_bwd(m, w, gw, a, g, d, B, T);
}

static void attn_global_bwd(asa_model *m, const asa_layer_weights *w, asa_layer_weights *gw, asa_layer_acts *a,
                            asa_layer_acts *g, const layer_dims *d, int B, int T) {
    asa_backend *be = m->be;
    const asa_config *c = &m->cfg;
    int N = B * T, D = c->hidden_size, h = d->h, ng = d->g;
    int dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim, dcg = c->latent_dim;
    int hs_up = (dn + dv) * dcg;
    asa_attn_shape s = attn_shape(c, d, B, T);
    const asa_act *W_uv = asa_model_wcopy(m, w->kv_up + (size_t)dn * dcg);
    float *gW_uv = gw->kv_up + (size_t)dn * dcg;
    // o_i = ol_i W_uv_i^T
    be->gemm(be, 0, 0, N, dcg, dv, 1.0f, g->o, h * dv, dv, W_uv, dcg, hs_up, 1.0f, g->ol, be->act, h * dcg, dcg, h);
    be->gemm(be, 1, 0, dv, dcg, N, 1.0f, g->o, h * dv, dv, a->ol, h * dcg, dcg, 1.0f, gW_uv, ASA_F32, dcg, hs_up, h);
    const void *br[2] = {a->o_cmp, a->o_slc};
    void *dbr[2] = {g->o_cmp, g->o_slc};
    float *drow[2] = {g->lse_cmp, g->lse_slc};  // as in attn_gqa_bwd
    be->gate_bwd(be, g->glog, dbr, drow, g->ol, a->glog, br, 2, N, h, dcg);
    be->attn_slc_bwd(be, &s, a->qa, a->kl, a->c, a->idx, a->o_slc, a->lse_slc, g->o_slc, drow[1], g->qa, g->kl,
                     g->c);
    be->attn_cmp_bwd(be, &s, a->qa, a->kc, a->vc, a->o_cmp, a->lse_cmp, g->o_cmp, drow[0], g->qa, g->kc, g->vc);
    be->compress_bwd(be, &s, d->dk, g->kc, g->kl);
    be->compress_bwd(be, &s, d->dv, g->vc, g->c);
    // kl_j = [c_j ; kr]
    be->copy_heads(be, g->c, ng * dcg, dcg, g->kl, ng * (dcg + dr), dcg + dr, N, ng, dcg, 1);
    be->copy_heads(be, g->kr, dr, 0, AT(g->kl, dcg), ng * (dcg + dr), dcg + dr, N, ng, dr, 1);
    // qa_i = [q_nope_i W_uk_i ; q_rope_i]
    be->gemm(be, 0, 1, N, dn, dcg, 1.0f, g->qa, h * (dcg + dr), dcg + dr, asa_model_wcopy(m, w->kv_up), dcg, hs_up,
             1.0f, g->q, be->act, h * (dn + dr), dn + dr, h);
    be->gemm(be, 1, 0, dn, dcg, N, 1.0f, a->q, h * (dn + dr), dn + dr, g->qa, h * (dcg + dr), dcg + dr,
             1.0f, gw->kv_up, ASA_F32, dcg, hs_up, h);
    be->copy_heads(be, AT(g->q, dn), h * (dn + dr), dn + dr, AT(g->qa, dcg), h * (dcg + dr), dcg + dr, N, h, dr, 1);
    linear_bwd(m, g->an, gw->g_proj, g->glog, a->an, w->g_proj, N, D, 2 * h);
    latent_common_bwd(m, w, gw, a, g, d, B, T);
}

// ----------------------------------------------------------------------------
// whole model

// Rounds the master weights into the compute copy (nothing to do when they are the same memory).
static void refresh_weight_copy(asa_model *m) {
    if ((void *)m->wc != (void *)m->params) m->be->convert(m->be, m->wc, m->be->act, m->params, ASA_F32, m->layout.total);
}

static void model_alloc(asa_model *m, const asa_config *cfg, asa_backend *be, int with_grads) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    m->la = asa_calloc((size_t)cfg->num_hidden_layers, sizeof(asa_layer_acts));
    asa_layout_build(cfg, &m->layout);
    size_t bytes = m->layout.total * sizeof(float);
    m->params = be->alloc(be, bytes);
    asa_weights_bind(&m->layout, m->params, &m->w);
    m->wc = be->act == ASA_F32 ? (asa_act *)m->params : be->alloc(be, m->layout.total * asa_dtype_size(be->act));
    if (with_grads) {
        m->grads = be->alloc(be, bytes);
        asa_weights_bind(&m->layout, m->grads, &m->gw);
    }
}

void asa_model_init(asa_model *m, const asa_config *cfg, asa_backend *be, uint64_t seed) {
    model_alloc(m, cfg, be, 1);
    float *host = asa_calloc(m->layout.total, sizeof(float));
    asa_weights_init(&m->layout, cfg, host, seed);
    be->to_device(be, m->params, host, m->layout.total * sizeof(float));
    free(host);
    refresh_weight_copy(m);
}

void asa_model_init_inference(asa_model *m, const asa_config *cfg, asa_backend *be) { model_alloc(m, cfg, be, 0); }

void asa_model_free(asa_model *m) {
    asa_backend *be = m->be;
    if (!be) return;
    if ((void *)m->wc != (void *)m->params) be->free(be, m->wc);
    be->free(be, m->params);
    if (m->grads) be->free(be, m->grads);
    if (m->acts) be->free(be, m->acts);
    if (m->gacts) be->free(be, m->gacts);
    free(m->la);
    free(m->host_targets);
    asa_layout_free(&m->layout);
    memset(m, 0, sizeof *m);
}

void asa_model_set_params(asa_model *m, const float *host) {
    m->be->to_device(m->be, m->params, host, m->layout.total * sizeof(float));
    refresh_weight_copy(m);
}

void asa_model_get_params(asa_model *m, float *host) {
    m->be->to_host(m->be, host, m->params, m->layout.total * sizeof(float));
}

void asa_model_zero_grad(asa_model *m) {
    ASA_CHECK(m->grads);
    m->be->zero(m->be, m->grads, m->layout.total * sizeof(float));
}

// Layer l from its input res[l]: its saved activations, and with `output` its output res[l+1]
// (a recomputation before the backward needs only the activations).
static void layer_fwd(asa_model *m, int l, int B, int T, int output) {
    asa_backend *be = m->be;
    const asa_config *c = &m->cfg;
    int N = B * T, D = c->hidden_size, I = c->intermediate_size;
    const asa_layer_weights *w = &m->w.layer[l];
    asa_layer_acts *a = &m->la[l];
    layer_dims d = dims_of(c, c->layer_kinds[l]);
    const asa_act *x = AT(m->res, (size_t)l * N * D);
    be->rmsnorm_fwd(be, a->an, a->an_rstd, x, w->attn_norm, N, 1, D, c->norm_eps);
    switch (d.kind) {
    case 'L': attn_local_fwd(m, w, a, &d, B, T); break;
    case 'G': attn_global_fwd(m, w, a, &d, B, T); break;
    default: attn_gqa_fwd(m, w, a, &d, B, T); break;
    }
    copy_rows(be, a->res_mid, x, N, D);
    linear_fwd(m, a->res_mid, a->o, w->o_proj, N, d.h * d.dvo, D, 1.0f);
    be->rmsnorm_fwd(be, a->mn, a->mn_rstd, a->res_mid, w->mlp_norm, N, 1, D, c->norm_eps);
    linear_fwd(m, a->mg, a->mn, w->gate_proj, N, D, I, 0.0f);
    linear_fwd(m, a->mu, a->mn, w->up_proj, N, D, I, 0.0f);
    be->swiglu_fwd(be, a->mh, a->mg, a->mu, N, I);
    m->slot_layer = l;
    if (!output) return;
    asa_act *y = AT(m->res, (size_t)(l + 1) * N * D);
    copy_rows(be, y, a->res_mid, N, D);
    linear_fwd(m, y, a->mh, w->down_proj, N, I, D, 1.0f);
}

float asa_model_forward(asa_model *m, const int32_t *tokens, const int32_t *targets, int B, int T) {
    asa_backend *be = m->be;
    const asa_config *c = &m->cfg;
    ensure_acts(m, B, T);
    // The optimizer, the ranks' all-gather and checkpoint loads all write the master weights: a training
    // model re-rounds them before every forward (under 1% of a step) so that no writer can leave the copy
    // stale.
    if (m->grads) refresh_weight_copy(m);
    m->cur_B = B;
    m->cur_T = T;
    int N = B * T, D = c->hidden_size, V = c->vocab_size;
    be->to_device(be, m->tokens, tokens, sizeof(int32_t) * (size_t)N);
    be->embedding_fwd(be, m->res, m->tokens, m->w.embed, N, D);
    for (int l = 0; l < c->num_hidden_layers; l++) layer_fwd(m, l, B, T, 1);
    be->rmsnorm_fwd(be, m->fn, m->fn_rstd, AT(m->res, (size_t)c->num_hidden_layers * N * D), m->w.final_norm, N, 1,
                    D, c->norm_eps);
    linear_fwd(m, m->logits, m->fn, m->w.lm_head, N, D, V, 0.0f);
    m->num_valid = 0;
    m->loss = 0.0f;
    if (!targets) return 0.0f;
    memcpy(m->host_targets, targets, sizeof(int32_t) * (size_t)N);
    be->to_device(be, m->targets, targets, sizeof(int32_t) * (size_t)N);
    be->xent_fwd_bwd(be, m->losses, NULL, m->logits, m->targets, N, V, 0.0f);
    float *losses = asa_malloc(sizeof(float) * (size_t)N);
    be->to_host(be, losses, m->losses, sizeof(float) * (size_t)N);
    double sum = 0;
    for (int n = 0; n < N; n++) {
        if (targets[n] >= 0) {
            sum += losses[n];
            m->num_valid++;
        }
    }
    free(losses);
    m->loss = m->num_valid ? (float)(sum / m->num_valid) : 0.0f;
    return m->loss;
}

void asa_model_backward(asa_model *m, float loss_scale) {
    asa_backend *be = m->be;
    const asa_config *c = &m->cfg;
    int B = m->cur_B, T = m->cur_T;
    ASA_CHECK(m->acts && B > 0 && m->grads);
    int N = B * T, D = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, L = c->num_hidden_layers;
    size_t ND = (size_t)N * D;
    // dlogits overwrite the logits (they are not needed again)
    float scale = m->num_valid ? loss_scale / (float)m->num_valid : 0.0f;
    be->xent_fwd_bwd(be, m->losses, m->logits, m->logits, m->targets, N, V, scale);
    be->zero(be, m->dres, ND * asa_dtype_size(be->act));
    be->zero(be, m->dres2, ND * asa_dtype_size(be->act));
    linear_bwd(m, m->dres2, m->gw.lm_head, m->logits, m->fn, m->w.lm_head, N, D, V);
    be->rmsnorm_bwd(be, m->dres, m->gw.final_norm, m->dres2, AT(m->res, (size_t)L * ND), m->w.final_norm, m->fn_rstd,
                    N, 1, D);
    for (int l = L - 1; l >= 0; l--) {
        const asa_layer_weights *w = &m->w.layer[l];
        asa_layer_weights *gw = &m->gw.layer[l];
        asa_layer_acts *a = &m->la[l];
        layer_dims d = dims_of(c, c->layer_kinds[l]);
        // the forward left the last layer in the slot: every other layer is recomputed from res[l]
        if (m->carved_recompute && m->slot_layer != l) layer_fwd(m, l, B, T, 0);
        // carve this kind's gradient views and zero them (backward ops accumulate)
        size_t used = carve_grads(m, c, be->act, B, T, m->gacts, d.kind);
        size_t start = grad_views_offset((size_t)N, (size_t)D, be->act);
        be->zero(be, (char *)m->gacts + start, used - start);
        asa_layer_acts *g = &m->gl;
        // MLP: y = res_mid + swiglu(...) W_down^T ; dres holds dL/dy and becomes dL/dres_mid
        linear_bwd(m, g->mh, gw->down_proj, m->dres, a->mh, w->down_proj, N, I, D);
        be->swiglu_bwd(be, g->mg, g->mu, g->mh, a->mg, a->mu, N, I);
        linear_bwd(m, g->mn, gw->gate_proj, g->mg, a->mn, w->gate_proj, N, D, I);
        linear_bwd(m, g->mn, gw->up_proj, g->mu, a->mn, w->up_proj, N, D, I);
        be->rmsnorm_bwd(be, m->dres, gw->mlp_norm, g->mn, a->res_mid, w->mlp_norm, a->mn_rstd, N, 1, D);
        // attention: res_mid = x + o W_o^T ; dres becomes dL/dx
        linear_bwd(m, g->o, gw->o_proj, m->dres, a->o, w->o_proj, N, d.h * d.dvo, D);
        switch (d.kind) {
        case 'L': attn_local_bwd(m, w, gw, a, g, &d, B, T); break;
        case 'G': attn_global_bwd(m, w, gw, a, g, &d, B, T); break;
        default: attn_gqa_bwd(m, w, gw, a, g, &d, B, T); break;
        }
        be->rmsnorm_bwd(be, m->dres, gw->attn_norm, g->an, AT(m->res, (size_t)l * ND), w->attn_norm, a->an_rstd, N, 1,
                        D);
    }
    be->embedding_bwd(be, m->gw.embed, m->dres, m->tokens, N, D);
}

// ----------------------------------------------------------------------------
// NaN / Inf diagnosis

// A sum of squares (in double) is non-finite exactly when an element is NaN or Inf, or so large
// (> 1e154) that training has already diverged.
static int has_nonfinite(asa_backend *be, const void *x, asa_dtype t, size_t n) {
    return n && !isfinite(be->sum_squares(be, x, t, n));
}
static int act_nonfinite(asa_backend *be, const asa_act *x, size_t n) { return has_nonfinite(be, x, be->act, n); }

void asa_model_find_nonfinite(asa_model *m, char *buf, size_t cap) {
    asa_backend *be = m->be;
    buf[0] = 0;
    for (int i = 0; i < m->layout.count; i++) {
        const asa_tensor_info *t = &m->layout.tensors[i];
        if (has_nonfinite(be, m->params + t->offset, ASA_F32, t->numel)) {
            snprintf(buf, cap, "parameter %s", t->name);
            return;
        }
    }
    if (!m->acts || m->cur_B == 0) return;
    const asa_config *c = &m->cfg;
    size_t N = (size_t)m->cur_B * m->cur_T, D = (size_t)c->hidden_size;
    if (act_nonfinite(be, m->res, N * D)) {
        snprintf(buf, cap, "activation: the embedding output");
        return;
    }
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const char *what = NULL;
        // With recomputation the slot holds one layer's activations only: the others' are not there to see.
        int kept = !m->carved_recompute || m->slot_layer == l;
        if (kept && act_nonfinite(be, m->la[l].res_mid, N * D)) what = "attention block";
        else if (act_nonfinite(be, AT(m->res, (size_t)(l + 1) * N * D), N * D)) what = "MLP block";
        if (what) {
            snprintf(buf, cap, "activation: the output of layer %d's %s (kind %c)", l, what, c->layer_kinds[l]);
            return;
        }
    }
    if (act_nonfinite(be, m->fn, N * D)) snprintf(buf, cap, "activation: the final norm output");
    else if (act_nonfinite(be, m->logits, N * (size_t)c->vocab_size)) snprintf(buf, cap, "activation: the logits");
    else if (has_nonfinite(be, m->losses, ASA_F32, N)) snprintf(buf, cap, "activation: the per-token losses");
}

int asa_model_find_nonfinite_grad(asa_model *m, size_t lo, size_t n) {
    for (int i = m->layout.count - 1; i >= 0; i--) {
        const asa_tensor_info *t = &m->layout.tensors[i];
        size_t a = t->offset > lo ? t->offset : lo, b = t->offset + t->numel < lo + n ? t->offset + t->numel : lo + n;
        if (a < b && has_nonfinite(m->be, m->grads + a, ASA_F32, b - a)) return i;
    }
    return -1;
}
