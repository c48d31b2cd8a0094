// Perplexity windows: window k scores tokens (e, e + len] given the T tokens before each of them at most.
#include "eval/ppl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int64_t asa_ppl_num_windows(size_t n, int T, int stride) {
    if (n < 2) return 0;
    size_t rest = n - 1;  // tokens to score
    if (rest <= (size_t)T) return 1;
    return 1 + (int64_t)((rest - T + stride - 1) / stride);
}

int asa_eval_ppl(asa_scorer *s, const int32_t *seq, size_t n, int T, int stride, int64_t max_windows,
                 asa_eval_progress_fn progress, void *user, asa_ppl_result *out) {
    memset(out, 0, sizeof *out);
    if (T < 1 || stride < 1 || stride > T) return asa_err_set("ppl: need 1 <= stride (%d) <= context (%d)", stride, T);
    if (T > s->context) return asa_err_set("ppl: context %d is longer than the scorer's %d", T, s->context);
    if (n < 2) return asa_err_set("ppl: %zu tokens, need at least 2", n);
    int64_t total = asa_ppl_num_windows(n, T, stride);
    if (max_windows > 0 && max_windows < total) total = max_windows;
    const int B = s->max_batch;
    asa_score_req *req = asa_malloc(sizeof *req * B);
    asa_score_res *res = asa_malloc(sizeof *res * B);
    size_t e = 0;  // index of the last scored token so far (0: nothing scored yet)
    int64_t done = 0;
    int rc = ASA_OK;
    while (done < total && rc == ASA_OK) {
        int nb = 0;
        while (nb < B && done + nb < total) {
            size_t len = n - 1 - e, cap = e == 0 ? (size_t)T : (size_t)stride;
            if (len > cap) len = cap;
            size_t start = e + len > (size_t)T ? e + len - T : 0;  // input = seq[start .. e + len)
            req[nb].ctx = seq + start;
            req[nb].n_ctx = (int)(e + 1 - start);
            req[nb].cont = seq + e + 1;
            req[nb].n_cont = (int)len;
            e += len;
            nb++;
        }
        rc = s->score(s, req, nb, res);
        for (int b = 0; b < nb && rc == ASA_OK; b++) {
            out->logprob += res[b].logprob;
            out->n_tokens += req[b].n_cont;
        }
        done += nb;
        if (progress) progress(user, done, total);
    }
    free(req);
    free(res);
    if (rc != ASA_OK) return ASA_ERR;
    out->n_windows = done;
    out->loss = -out->logprob / (double)out->n_tokens;
    out->ppl = exp(out->loss);
    return ASA_OK;
}

int64_t asa_count_words(const char *text, size_t len) {
    int64_t words = 0;
    int in_word = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        int space = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
        if (!space && !in_word) words++;
        in_word = !space;
    }
    return words;
}
