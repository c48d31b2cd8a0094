// The model-backed scorer, lm-evaluation-harness's context/continuation encoding and the standard error
// every task reports.
#include "eval/scorer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

// Forward passes reallocate activations whenever the batch shape changes: rounding the length up to a
// multiple of this keeps the number of distinct shapes small.
#define SCORER_LEN_ROUND 64

// One forward row: continuation tokens [a, b) of request r, with the tokens before them as context.
typedef struct {
    int r, a, b;
} piece;

static int model_score(asa_scorer *s, const asa_score_req *req, int n, asa_score_res *res) {
    asa_model_scorer *ms = (asa_model_scorer *)s;
    asa_model *m = ms->model;
    asa_backend *be = m->be;
    const int V = m->cfg.vocab_size, C = s->context;
    // A continuation longer than the context is scored in consecutive pieces of at most C tokens, each
    // with as much of what precedes it as fits: every token is still scored once.
    int n_pieces = 0;
    for (int r = 0; r < n; r++) {
        if (req[r].n_ctx < 1 || req[r].n_cont < 1) return asa_err_set("scorer: empty context or continuation");
        n_pieces += (req[r].n_cont + C - 1) / C;
        res[r].logprob = 0;
        res[r].greedy = 1;
    }
    piece *pc = asa_malloc(sizeof *pc * n_pieces);
    n_pieces = 0;
    for (int r = 0; r < n; r++)
        for (int a = 0; a < req[r].n_cont; a += C) pc[n_pieces++] = (piece){r, a, a + C < req[r].n_cont ? a + C : req[r].n_cont};
    int in_len[s->max_batch];
    int rc = ASA_OK;
    for (int i0 = 0; i0 < n_pieces && rc == ASA_OK; i0 += s->max_batch) {
        const int nb = n_pieces - i0 < s->max_batch ? n_pieces - i0 : s->max_batch;
        int T = 1;
        for (int b = 0; b < nb; b++) {
            const int end = req[pc[i0 + b].r].n_ctx + pc[i0 + b].b;  // ctx ++ cont[:b]
            in_len[b] = end - 1 < C ? end - 1 : C;
            if (in_len[b] > T) T = in_len[b];
        }
        T = (T + SCORER_LEN_ROUND - 1) / SCORER_LEN_ROUND * SCORER_LEN_ROUND;
        if (T > C) T = C;
        for (int b = 0; b < nb && rc == ASA_OK; b++) {
            const asa_score_req *r = &req[pc[i0 + b].r];
            const int start = r->n_ctx + pc[i0 + b].b - 1 - in_len[b];  // first input token in ctx ++ cont
            int32_t *row = ms->tokens + (size_t)b * T;
            for (int j = 0; j < T; j++) {
                int p = start + j;
                int32_t id = j >= in_len[b] ? 0 : p < r->n_ctx ? r->ctx[p] : r->cont[p - r->n_ctx];
                if (id < 0 || id >= V) {
                    rc = asa_err_set("token id %d is outside the model's vocabulary [0, %d)", id, V);
                    break;
                }
                row[j] = id;
            }
        }
        if (rc != ASA_OK) break;
        asa_model_forward(m, ms->tokens, NULL, nb, T);
        for (int b = 0; b < nb; b++) {
            const piece *q = &pc[i0 + b];
            const int32_t *tgt = req[q->r].cont + q->a;
            const int nc = q->b - q->a, first = in_len[b] - nc;  // input position predicting cont[a]
            const size_t need = (size_t)nc * V;
            if (need > ms->rows_cap) {
                free(ms->rows);
                ms->rows = asa_malloc(sizeof(float) * need);
                ms->rows_cap = need;
            }
            be->act_to_host(be, ms->rows, asa_act_at(be, m->logits, ((size_t)b * T + first) * V), need);
            double lp = 0;
            int greedy = 1;
#pragma omp parallel for reduction(+ : lp) reduction(& : greedy)
            for (int j = 0; j < nc; j++) {
                const float *x = ms->rows + (size_t)j * V;
                int arg = 0;
                for (int v = 1; v < V; v++)
                    if (x[v] > x[arg]) arg = v;
                double sum = 0, mx = x[arg];
                for (int v = 0; v < V; v++) sum += exp((double)x[v] - mx);
                lp += (double)x[tgt[j]] - mx - log(sum);
                greedy &= arg == tgt[j];
            }
            res[q->r].logprob += lp;
            res[q->r].greedy &= greedy;
        }
    }
    free(pc);
    return rc;
}

void asa_model_scorer_init(asa_model_scorer *ms, asa_model *m, int context, int max_batch) {
    ASA_CHECK(context >= 1 && max_batch >= 1);
    memset(ms, 0, sizeof *ms);
    ms->base.score = model_score;
    ms->base.max_batch = max_batch;
    ms->base.context = context;
    ms->model = m;
    ms->tokens = asa_malloc(sizeof(int32_t) * (size_t)max_batch * context);
}

void asa_model_scorer_free(asa_model_scorer *ms) {
    free(ms->tokens);
    free(ms->rows);
    memset(ms, 0, sizeof *ms);
}

int asa_encode_pair(asa_encoder *enc, const asa_tokenizer *tok, const char *context, const char *continuation,
                    asa_token_buf *ctx, asa_token_buf *cont) {
    size_t lc = strlen(context), lk = strlen(continuation);
    size_t cut = lc;
    while (cut > 0 && context[cut - 1] == ' ') cut--;
    char *whole = asa_malloc(lc + lk + 1);
    memcpy(whole, context, lc);
    memcpy(whole + lc, continuation, lk);
    whole[lc + lk] = 0;
    asa_token_buf all = {0};
    ctx->n = 0;
    cont->n = 0;
    int rc = asa_encoder_encode(enc, whole, cut, 0, ctx);
    if (rc == ASA_OK) rc = asa_encoder_encode(enc, whole, lc + lk, 0, &all);
    free(whole);
    if (rc != ASA_OK) {
        asa_token_buf_free(&all);
        return ASA_ERR;
    }
    // The whole text's ids usually start with the context's ids; when a merge crosses the boundary the
    // continuation is still everything after the context's count, as lm-evaluation-harness takes it.
    for (size_t i = ctx->n; i < all.n; i++) asa_token_buf_push(cont, all.ids[i]);
    asa_token_buf_free(&all);
    if (cont->n == 0) return asa_err_set("continuation '%.40s' encodes to no tokens", continuation);
    if (ctx->n == 0) {
        int eot = asa_tokenizer_eot(tok);
        if (eot < 0) return asa_err_set("empty context and the tokenizer has no <|endoftext|> to stand in");
        asa_token_buf_push(ctx, eot);
    }
    return ASA_OK;
}

double asa_mean_stderr(double sum, double sumsq, int n) {
    if (n < 2) return 0;
    double mean = sum / n, var = (sumsq - n * mean * mean) / (n - 1);
    return var > 0 ? sqrt(var / n) : 0;
}
