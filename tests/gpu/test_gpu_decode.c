// Decoding on the GPU: token-by-token decoding through the KV cache against one forward pass over the
// whole sequence, both on the CUDA backend, for tiny models of patterns F, W, N, GL, LG (as
// tests/test_decode.c does on the CPU) at lengths that cross window, block, selection-block and anchor
// boundaries, and at asa-tiny's shapes over 200 tokens. Also: the first decoded sequence agrees with the
// CPU decoder, and a reset decoder reproduces its logits bit for bit. All of it in fp32 mode, then again
// in bf16 mode.
// Without a GPU: prints "SKIPPED: ..." and exits 77 (ctest SKIP_RETURN_CODE).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "asa/config.h"
#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "infer/decode.h"
#include "model/model.h"
#include "testutil.h"

// Decode and forward differ only in summation order (gemm shapes, the absorbed latent form, online
// softmax over other chunks), ~1e-6 relative per op; a wrong mask, position or block list gives errors
// of order 1.
#define TOL 1e-4
// bf16 mode: both paths store every activation in bf16, mostly the same values: where they compute a
// tensor with other fp32 arithmetic (tensor-core attention in the forward, fp32 decode kernels; other gemm
// shapes) the two results round to different bf16 neighbours now and then, and where the math differs (L
// layers: per-head keys in the forward, the absorbed form in decoding) each path rounds at its own places,
// a layer's worth of bf16 noise (~1e-2 relative, see test_gpu_model). Bounds: TOL_BF16 = 4e-2 over all
// positions (norm-wise) and TOL_BF16_POS = 2e-1 at any one position (one position's logits have a heavier
// tail; a wrong cache row or position is O(1) there). Against the fp32 CPU decoder every rounding counts,
// and a near-tie may select another block than fp32 arithmetic does, as for test_gpu_model's logits:
// TOL_BF16_CPU = 2e-1. A host emulation of bf16 storage (8 seeds) gave 1.4e-2 over all positions, 7.1e-2
// at one position (LG) and 9.4e-2 against the CPU decoder (GL).
#define TOL_BF16 4e-2
#define TOL_BF16_POS 2e-1
#define TOL_BF16_CPU 2e-1

// Decodes tokens [B, T] (column t at step t) from a reset decoder into out [B, T, V] (host).
static int decode_all(asa_decoder *dec, const int32_t *tokens, int B, int T, int V, float *out) {
    asa_decoder_reset(dec);
    int32_t col[8];
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) col[b] = tokens[b * T + t];
        if (asa_decoder_step(dec, col) != ASA_OK) return ASA_ERR;
        for (int b = 0; b < B; b++)
            dec->be->act_to_host(dec->be, out + ((size_t)b * T + t) * V, asa_act_at(dec->be, dec->logits, (size_t)b * V),
                                 (size_t)V);
    }
    return ASA_OK;
}

static void check_decode(asa_backend *gpu, const char *pattern, int R, int T, int max_len, int wide) {
    const int bf = gpu->act == ASA_BF16;
    const double tol = bf ? TOL_BF16_POS : TOL, tol_cpu = bf ? TOL_BF16_CPU : TOL;
    const char *prec = asa_precision_name(gpu->precision);
    asa_config c = wide ? tu_tiny_shapes_config(pattern) : tu_tiny_config(pattern, R);
    const int B = 2, V = c.vocab_size;
    const size_t n = (size_t)B * T * V;
    asa_model m;
    asa_model_init(&m, &c, gpu, 17);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(B * T)), *other = malloc(sizeof(int32_t) * (size_t)(B * T));
    asa_rng r;
    asa_rng_seed(&r, 100 + (uint64_t)T);
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)asa_rng_below(&r, (uint32_t)V);
    for (int i = 0; i < B * T; i++) other[i] = (int32_t)asa_rng_below(&r, (uint32_t)V);
    asa_model_forward(&m, tok, NULL, B, T);
    float *ref = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n), *again = malloc(sizeof(float) * n);
    gpu->act_to_host(gpu, ref, m.logits, n);

    asa_decoder dec;
    asa_decoder_init(&dec, &m, B, max_len);
    TU_CHECK(decode_all(&dec, tok, B, T, V, got) == ASA_OK, "%s %s: decode failed: %s", prec, pattern,
             asa_err_msg());
    double worst = 0;
    int worst_t = -1;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const double e = tu_rel_err_f(got + ((size_t)b * T + t) * V, ref + ((size_t)b * T + t) * V, (size_t)V);
            TU_CHECK(e < tol, "%s %s R=%d: sequence %d position %d: rel err %.3e", prec, pattern, R, b, t, e);
            if (!(e <= worst)) worst = e, worst_t = t;
        }
    const double e_all = tu_rel_err_f(got, ref, n);
    TU_CHECK(e_all < (bf ? TOL_BF16 : TOL), "%s %s R=%d: rel err %.3e over all positions", prec, pattern, R, e_all);

    // The same weights decoded on the CPU: the GPU decoder computes the CPU decoder's function.
    asa_backend *cpu = asa_backend_cpu_new();
    asa_model mc;
    asa_model_init_inference(&mc, &c, cpu);
    float *params = malloc(sizeof(float) * m.layout.total);
    asa_model_get_params(&m, params);
    asa_model_set_params(&mc, params);
    asa_decoder dc;
    asa_decoder_init(&dc, &mc, B, max_len);
    TU_CHECK(decode_all(&dc, tok, B, T, V, again) == ASA_OK, "%s: CPU decode failed", pattern);
    double e_cpu = tu_rel_err_f(got, again, n);
    TU_CHECK(e_cpu < tol_cpu, "%s %s R=%d: GPU decode vs CPU decode rel err %.3e", prec, pattern, R, e_cpu);
    asa_decoder_free(&dc);
    asa_model_free(&mc);
    asa_backend_free(cpu);

    // Another sequence, then reset and the first again: bit-identical, nothing leaks across a reset.
    decode_all(&dec, other, B, T, V, again);
    TU_CHECK(decode_all(&dec, tok, B, T, V, again) == ASA_OK, "%s %s: decode after reset failed", prec, pattern);
    TU_CHECK(memcmp(got, again, sizeof(float) * n) == 0, "%s %s R=%d: logits differ after a reset", prec, pattern, R);
    printf("  gpu %s decode %-3s D=%-3d R=%d T=%-3d max_len=%-3d: vs forward rel err %.2e, worst %.2e (position %d), "
           "vs CPU decode %.2e\n", prec, pattern, c.hidden_size, c.selection_share, T, max_len, e_all, worst, worst_t,
           e_cpu);
    asa_decoder_free(&dec);
    free(tok), free(other), free(ref), free(got), free(again), free(params);
    asa_model_free(&m);
}

int main(void) {
    const int precisions[2] = {ASA_PRECISION_FP32, ASA_PRECISION_BF16};
    for (int p = 0; p < 2; p++) {
        asa_backend *gpu = asa_backend_cuda_new(0, precisions[p]);
        if (!gpu && p == 0) {
            printf("SKIPPED: %s\n", asa_err_msg());
            return 77;
        }
        TU_CHECK(gpu != NULL, "no %s CUDA backend: %s", asa_precision_name(precisions[p]), asa_err_msg());
        if (!gpu) continue;
        const char *patterns[] = {"F", "W", "N", "GL", "LG"};
        for (int i = 0; i < 5; i++) check_decode(gpu, patterns[i], 1, 45, 45, 0);
        check_decode(gpu, "N", 4, 45, 45, 0);
        check_decode(gpu, "N", 2, 45, 64, 0);
        check_decode(gpu, "GL", 4, 45, 45, 0);
        check_decode(gpu, "GL", 2, 45, 50, 0);
        check_decode(gpu, "LG", 4, 45, 45, 0);
        check_decode(gpu, "LG", 2, 45, 64, 0);
        for (int i = 0; i < 5; i++) check_decode(gpu, patterns[i], 4, 3, 3, 0);  // T < b, max_len < window
        check_decode(gpu, "GL", 4, 200, 200, 1);
        check_decode(gpu, "N", 4, 200, 200, 1);
        check_decode(gpu, "F", 4, 200, 200, 1);
        check_decode(gpu, "W", 4, 200, 200, 1);
        asa_backend_free(gpu);
    }
    return tu_finish("test_gpu_decode");
}
