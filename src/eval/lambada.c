// LAMBADA parsing and scoring.
#include "eval/lambada.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/json_limits.h"

static char *dup_n(const char *s, size_t n) {
    char *out = asa_malloc(n + 1);
    memcpy(out, s, n);
    out[n] = 0;
    return out;
}

int asa_lambada_load(const char *path, asa_lambada_set *set) {
    memset(set, 0, sizeof *set);
    char *text;
    size_t len;
    if (asa_file_read_all(path, (size_t)1 << 31, &text, &len) != ASA_OK) return ASA_ERR;
    int cap = 0, line = 0, rc = ASA_OK;
    for (size_t i = 0; i < len && rc == ASA_OK;) {
        char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) : len;
        char *ln = text + i;
        text[end] = 0;
        i = end + 1;
        line++;
        size_t k = 0;
        while (ln[k] == ' ' || ln[k] == '\t' || ln[k] == '\r') k++;
        if (!ln[k]) continue;
        char src[4200];
        snprintf(src, sizeof src, "%s:%d", path, line);
        const asa_json_limits lim = ASA_JSON_RECORD_LIMITS;
        if (asa_json_check(ln, strlen(ln), src, &lim)) {
            rc = ASA_ERR;
            break;
        }
        cJSON *o = cJSON_Parse(ln);
        const cJSON *t = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "text") : NULL;
        const char *sp = cJSON_IsString(t) ? strrchr(t->valuestring, ' ') : NULL;
        if (!cJSON_IsObject(o)) rc = asa_err_set("%s:%d: not a JSON object", path, line);
        else if (!cJSON_IsString(t)) rc = asa_err_set("%s:%d: key 'text': missing or not a string", path, line);
        else if (!sp || !sp[1]) rc = asa_err_set("%s:%d: key 'text': no last word after a space", path, line);
        if (rc == ASA_OK) {
            if (set->n == cap) {
                cap = cap ? cap * 2 : 1024;
                set->ctx = realloc(set->ctx, sizeof(char *) * cap);
                set->target = realloc(set->target, sizeof(char *) * cap);
                set->line = realloc(set->line, sizeof(int) * cap);
                ASA_CHECK(set->ctx && set->target && set->line);
            }
            set->ctx[set->n] = dup_n(t->valuestring, (size_t)(sp - t->valuestring));
            set->target[set->n] = dup_n(sp, strlen(sp));  // " " + last word
            set->line[set->n] = line;
            set->n++;
        }
        cJSON_Delete(o);
    }
    free(text);
    if (rc == ASA_OK && set->n == 0) rc = asa_err_set("%s: no examples", path);
    if (rc != ASA_OK) asa_lambada_free(set);
    return rc;
}

void asa_lambada_free(asa_lambada_set *set) {
    for (int i = 0; i < set->n; i++) {
        free(set->ctx[i]);
        free(set->target[i]);
    }
    free(set->ctx);
    free(set->target);
    free(set->line);
    memset(set, 0, sizeof *set);
}

int asa_lambada_eval(const asa_lambada_set *set, const asa_tokenizer *tok, asa_scorer *s, int limit,
                     asa_eval_progress_fn progress, void *user, asa_lambada_result *out) {
    memset(out, 0, sizeof *out);
    const int n = limit > 0 && limit < set->n ? limit : set->n, B = s->max_batch;
    asa_token_buf *ctx = asa_calloc((size_t)B, sizeof *ctx), *cont = asa_calloc((size_t)B, sizeof *cont);
    asa_score_req *req = asa_malloc(sizeof *req * B);
    asa_score_res *res = asa_malloc(sizeof *res * B);
    asa_encoder *enc = asa_encoder_new(tok);
    int correct = 0, rc = ASA_OK;
    double nll = 0;
    for (int i0 = 0; i0 < n && rc == ASA_OK; i0 += B) {
        const int nb = n - i0 < B ? n - i0 : B;
        for (int b = 0; b < nb && rc == ASA_OK; b++) {
            rc = asa_encode_pair(enc, tok, set->ctx[i0 + b], set->target[i0 + b], &ctx[b], &cont[b]);
            if (rc != ASA_OK) asa_err_prefix("lambada example at line %d: ", set->line[i0 + b]);
            req[b] = (asa_score_req){ctx[b].ids, (int)ctx[b].n, cont[b].ids, (int)cont[b].n};
        }
        if (rc == ASA_OK) rc = s->score(s, req, nb, res);
        for (int b = 0; b < nb && rc == ASA_OK; b++) {
            correct += res[b].greedy;
            nll -= res[b].logprob;
        }
        if (progress && rc == ASA_OK) progress(user, i0 + nb, n);
    }
    for (int b = 0; b < B; b++) {
        asa_token_buf_free(&ctx[b]);
        asa_token_buf_free(&cont[b]);
    }
    free(ctx);
    free(cont);
    free(req);
    free(res);
    asa_encoder_free(enc);
    if (rc != ASA_OK) return ASA_ERR;
    out->n = n;
    out->acc = (double)correct / n;
    out->acc_stderr = asa_mean_stderr(correct, correct, n);
    out->loss = nll / n;
    out->ppl = exp(out->loss);
    return ASA_OK;
}
