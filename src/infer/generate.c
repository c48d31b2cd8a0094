#include "infer/generate.h"

#include <stdlib.h>
#include <time.h>

#include "core/error.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int asa_generate(asa_decoder *dec, asa_sampler *s, const int32_t *prompt, int n_prompt, int max_new, int32_t stop_id,
                 asa_token_fn on_token, void *user, asa_generate_stats *st) {
    ASA_CHECK(dec->B == 1 && n_prompt >= 1);
    asa_backend *be = dec->be;
    const int V = dec->model->cfg.vocab_size;
    float *logits = asa_malloc(sizeof(float) * (size_t)V);
    int rc = ASA_OK, n_gen = 0;
    double t0 = now_s();
    for (int t = 0; t < n_prompt && rc == ASA_OK; t++) rc = asa_decoder_step(dec, &prompt[t]);
    double t1 = now_s();
    if (rc == ASA_OK) be->act_to_host(be, logits, dec->logits, (size_t)V);
    while (rc == ASA_OK && n_gen < max_new) {
        int32_t next = asa_sampler_sample(s, logits);
        if (next == stop_id) break;
        if (on_token) on_token(user, next);
        if (++n_gen == max_new) break;
        rc = asa_decoder_step(dec, &next);
        if (rc == ASA_OK) be->act_to_host(be, logits, dec->logits, (size_t)V);
    }
    double t2 = now_s();
    free(logits);
    if (st) {
        st->n_prompt = n_prompt;
        st->n_gen = n_gen;
        st->prompt_s = t1 - t0;
        st->gen_s = t2 - t1;
    }
    return rc;
}
