// `asa bench cpu`: training throughput of a config on the CPU backend, and the achieved GFLOP/s as a
// fraction of OpenBLAS sgemm measured in the same run (the ceiling every matrix product here runs on).
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "asa/config.h"
#include "cli/cli.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/synthetic.h"
#include "model/flops.h"
#include "model/model.h"
#include "train/optimizer.h"

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Best of a few 1024^3 sgemms through the backend's own gemm.
static double sgemm_gflops(asa_backend *be) {
    const int n = 1024;
    float *a = be->alloc(be, sizeof(float) * n * n), *b = be->alloc(be, sizeof(float) * n * n);
    float *c = be->alloc(be, sizeof(float) * n * n);
    asa_rng r;
    asa_rng_seed(&r, 3);
    for (int i = 0; i < n * n; i++) a[i] = (float)asa_rng_normal(&r), b[i] = (float)asa_rng_normal(&r);
    double best = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        double t = now_sec();
        be->gemm(be, 0, 1, n, n, n, 1.0f, a, n, 0, b, n, 0, 0.0f, c, n, 0, 1);
        t = now_sec() - t;
        if (rep > 0 && t < best) best = t;
    }
    be->free(be, a);
    be->free(be, b);
    be->free(be, c);
    return 2.0 * n * n * (double)n / best / 1e9;
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "cpu") != 0) {
        if (argc >= 2) fprintf(stderr, "asa bench: unknown target '%s' (only 'cpu' so far)\n", argv[1]);
        fprintf(stderr, "usage: asa bench cpu [--config FILE] [--seq T] [--batch B] [--steps N]\n");
        return 2;
    }
    const char *config_path = "configs/asa-tiny.json";
    int T = 512, B = 4, steps = 5;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = cli_value("bench", argc, argv, &i);
        if (!v) return 2;
        int bad = 0;
        if (!strcmp(a, "--config")) config_path = v;
        else if (!strcmp(a, "--seq")) bad = cli_parse_int("bench", a, v, 2, 1 << 24, &T);
        else if (!strcmp(a, "--batch")) bad = cli_parse_int("bench", a, v, 1, 1 << 20, &B);
        else if (!strcmp(a, "--steps")) bad = cli_parse_int("bench", a, v, 1, 100000, &steps);
        else {
            fprintf(stderr, "asa bench: unknown option '%s'\n", a);
            return 2;
        }
        if (bad) return 2;
    }
    asa_config cfg;
    if (asa_config_load(config_path, &cfg) != ASA_OK) {
        fprintf(stderr, "asa bench: %s\n", asa_err_msg());
        return 1;
    }
    asa_backend *be = asa_backend_cpu_new();
    printf("asa bench cpu: %s, batch %d x %d tokens, %d threads\n", config_path, B, T, omp_get_max_threads());
    double peak = sgemm_gflops(be);
    printf("  OpenBLAS sgemm 1024^3:      %8.1f GFLOP/s\n", peak);

    asa_model model;
    asa_model_init(&model, &cfg, be, 1);
    asa_adamw opt;
    asa_adamw_init(&opt, &model, asa_adamw_defaults());
    asa_rng rng;
    asa_rng_seed(&rng, 5);
    int32_t *tokens = asa_malloc(sizeof(int32_t) * (size_t)B * T), *targets = asa_malloc(sizeof(int32_t) * (size_t)B * T);
    double fwd_time = 0, total_time = 0;
    for (int step = -1; step < steps; step++) {  // step -1 warms up (first-touch of the arenas)
        asa_synthetic_copy(&rng, tokens, targets, B, T, cfg.vocab_size - 1 < 64 ? cfg.vocab_size - 1 : 64);
        double t0 = now_sec();
        asa_model_zero_grad(&model);
        asa_model_forward(&model, tokens, targets, B, T);
        double t1 = now_sec();
        asa_model_backward(&model, 1.0f);
        asa_adamw_step(&opt, &model, 1e-4f);
        double t2 = now_sec();
        if (step >= 0) {
            fwd_time += t1 - t0;
            total_time += t2 - t0;
        }
    }
    double tokens_per_step = (double)B * T;
    double tok_s = tokens_per_step * steps / total_time;
    double flops_tok = asa_flops_train_per_token(&cfg, T);
    double gflops = tok_s * flops_tok / 1e9;
    printf("  forward:                    %8.1f ms/step\n", 1e3 * fwd_time / steps);
    printf("  train step (fwd+bwd+AdamW): %8.1f ms/step\n", 1e3 * total_time / steps);
    printf("  throughput:                 %8.0f tokens/s\n", tok_s);
    printf("  model FLOPs:                %8.2f MFLOP/token (training, attention by keys read)\n", flops_tok / 1e6);
    printf("  achieved:                   %8.1f GFLOP/s = %.1f%% of sgemm\n", gflops, 100.0 * gflops / peak);
    free(tokens);
    free(targets);
    asa_adamw_free(&opt, &model);
    asa_model_free(&model);
    asa_backend_free(be);
    return 0;
}
