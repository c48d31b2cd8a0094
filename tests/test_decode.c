// Token-by-token decoding through the KV cache against one forward pass over the whole sequence, for
// tiny models of every pattern (F, W, N, GL, LG) and selection_share 1, 2 and 4, at lengths that cross
// the window, block, selection-block and anchor boundaries, and shorter than one block. Also: cache
// bytes match asa_kv_bytes, reset gives a fresh decoder, a full cache and a bad token are errors.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "asa/config.h"
#include "backend/backend.h"
#include "core/error.h"
#include "infer/decode.h"
#include "model/kv_cache_size.h"
#include "model/model.h"
#include "testutil.h"

// Decodes tokens [B, T] (column t at step t) from a reset decoder into out [B, T, V] (host).
static int decode_all(asa_decoder *dec, const int32_t *tokens, int B, int T, int V, float *out) {
    asa_decoder_reset(dec);
    int32_t col[8];
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) col[b] = tokens[b * T + t];
        if (asa_decoder_step(dec, col) != ASA_OK) return ASA_ERR;
        for (int b = 0; b < B; b++)
            dec->be->act_to_host(dec->be, out + ((size_t)b * T + t) * V, asa_act_at(dec->be, dec->logits, (size_t)b * V), V);
    }
    return ASA_OK;
}

// Logits at every position agree with the forward pass to fp32 rounding: the two differ only in the
// order of sums (gemm shapes, the absorbed latent form, online softmax over other chunks), ~1e-6
// relative; a wrong mask, position or block list gives errors of order 1.
static void check_decode(const char *pattern, int R, int T, int max_len, int wide) {
    asa_config c = wide ? tu_tiny_shapes_config(pattern) : tu_tiny_config(pattern, R);
    asa_backend *be = asa_backend_cpu_new();
    asa_model m;
    asa_model_init(&m, &c, be, 17);
    const int B = 2, V = c.vocab_size;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(B * T)), *other = malloc(sizeof(int32_t) * (size_t)(B * T));
    asa_rng r;
    asa_rng_seed(&r, 100 + (uint64_t)T);
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)asa_rng_below(&r, (uint32_t)V);
    for (int i = 0; i < B * T; i++) other[i] = (int32_t)asa_rng_below(&r, (uint32_t)V);
    asa_model_forward(&m, tok, NULL, B, T);
    float *ref = malloc(sizeof(float) * (size_t)(B * T * V));
    be->to_host(be, ref, m.logits, sizeof(float) * (size_t)(B * T * V));

    asa_decoder dec;
    asa_decoder_init(&dec, &m, B, max_len);
    for (int l = 0; l < c.num_hidden_layers; l++) {
        const int64_t want = B * asa_kv_bytes(&c, c.layer_kinds[l], max_len, 4);
        TU_CHECK((int64_t)dec.kv.layer[l].bytes == want, "%s layer %d (%c): cache %zu bytes, asa_kv_bytes says %lld",
                 pattern, l, c.layer_kinds[l], dec.kv.layer[l].bytes, (long long)want);
    }
    float *got = malloc(sizeof(float) * (size_t)(B * T * V)), *again = malloc(sizeof(float) * (size_t)(B * T * V));
    TU_CHECK(decode_all(&dec, tok, B, T, V, got) == ASA_OK, "%s: decode failed: %s", pattern, asa_err_msg());
    double worst = 0;
    int worst_t = -1;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const double e = tu_rel_err_f(got + ((size_t)b * T + t) * V, ref + ((size_t)b * T + t) * V, (size_t)V);
            TU_CHECK(e < 1e-4, "%s R=%d: sequence %d position %d: rel err %.3e", pattern, R, b, t, e);
            if (!(e <= worst)) worst = e, worst_t = t;
        }
    // Another sequence, then reset and the first again: bit-identical, nothing leaks across a reset.
    decode_all(&dec, other, B, T, V, again);
    TU_CHECK(decode_all(&dec, tok, B, T, V, again) == ASA_OK, "%s: decode after reset failed", pattern);
    TU_CHECK(memcmp(got, again, sizeof(float) * (size_t)(B * T * V)) == 0, "%s R=%d: logits differ after a reset", pattern, R);
    printf("  decode %-3s D=%-3d R=%d T=%-3d max_len=%-3d: worst rel err %.2e (position %d)\n", pattern, c.hidden_size, c.selection_share, T,
           max_len, worst, worst_t);
    asa_decoder_free(&dec);
    free(tok), free(other), free(ref), free(got), free(again);
    asa_model_free(&m);
    asa_backend_free(be);
}

static void check_errors(void) {
    asa_config c = tu_tiny_config("GL", 4);
    asa_backend *be = asa_backend_cpu_new();
    asa_model m;
    asa_model_init(&m, &c, be, 3);
    asa_decoder dec;
    asa_decoder_init(&dec, &m, 2, 3);
    int32_t ok[2] = {1, 2}, bad[2] = {1, 48}, neg[2] = {-1, 0};
    TU_CHECK(asa_decoder_step(&dec, bad) == ASA_ERR && strstr(asa_err_msg(), "48"), "token 48 of 48 accepted");
    TU_CHECK(asa_decoder_step(&dec, neg) == ASA_ERR, "token -1 accepted");
    TU_CHECK(dec.pos == 0, "a rejected step advanced the position");
    for (int t = 0; t < 3; t++) TU_CHECK(asa_decoder_step(&dec, ok) == ASA_OK, "step %d failed", t);
    TU_CHECK(asa_decoder_step(&dec, ok) == ASA_ERR && strstr(asa_err_msg(), "full"), "step past max_len accepted");
    asa_decoder_reset(&dec);
    TU_CHECK(asa_decoder_step(&dec, ok) == ASA_OK && dec.pos == 1, "step after reset failed");
    asa_decoder_free(&dec);
    asa_model_free(&m);
    asa_backend_free(be);
}

int main(void) {
    const char *patterns[] = {"F", "W", "N", "GL", "LG"};
    for (int i = 0; i < 5; i++) check_decode(patterns[i], 1, 45, 45, 0);
    check_decode("N", 4, 45, 45, 0);
    check_decode("N", 2, 45, 64, 0);
    check_decode("GL", 4, 45, 45, 0);
    check_decode("GL", 2, 45, 50, 0);
    check_decode("LG", 4, 45, 45, 0);
    check_decode("LG", 2, 45, 64, 0);
    check_decode("GLL", 4, 40, 40, 0);
    for (int i = 0; i < 5; i++) check_decode(patterns[i], 4, 3, 3, 0);  // T < b, max_len < window
    check_decode("GL", 4, 9, 12, 0);
    check_decode("GL", 4, 200, 200, 1);
    check_decode("N", 4, 200, 200, 1);
    check_errors();
    return tu_finish("test_decode");
}
