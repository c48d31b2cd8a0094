// `asa bench cpu` and `asa bench train`: training throughput of a config (forward, backward and AdamW on
// synthetic tokens), model FLOPs and the fraction of a matrix-product peak measured in the same run on
// the same device through the backend's own gemm: OpenBLAS sgemm on the CPU; on a GPU a cuBLASLt gemm in
// the backend's precision (fp32 with TF32 off, or TF32 tensor cores: see gemm.cu), the ceiling of a backend
// whose other ops are fp32 kernels.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "asa/config.h"
#include "cli/cli.h"
#include "cli/device.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/synthetic.h"
#include "model/flops.h"
#include "model/model.h"
#include "train/optimizer.h"

#ifdef ASA_HAVE_CUDA
#include <cuda_runtime.h>
#endif

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int is_cuda(const asa_backend *be) { return !strcmp(be->name, "cuda"); }

// Best of a few n^3 products C = A B^T through the backend's gemm, in GFLOP/s. Random operands:
// zeros can run faster than real data.
static double gemm_gflops(asa_backend *be, int n) {
    size_t nn = (size_t)n * n;
    float *h = asa_malloc(sizeof(float) * nn);
    asa_rng r;
    asa_rng_seed(&r, 3);
    for (size_t i = 0; i < nn; i++) h[i] = (float)asa_rng_uniform(&r) - 0.5f;
    float *a = be->alloc(be, sizeof(float) * nn), *b = be->alloc(be, sizeof(float) * nn);
    float *c = be->alloc(be, sizeof(float) * nn);
    be->to_device(be, a, h, sizeof(float) * nn);
    be->to_device(be, b, h, sizeof(float) * nn);
    free(h);
    double best = 1e30;
    for (int rep = 0; rep < 6; rep++) {  // the first is a warm-up (heuristics, first touch)
        be->sync(be);
        double t = now_sec();
        be->gemm(be, 0, 1, n, n, n, 1.0f, a, n, 0, b, n, 0, 0.0f, c, n, 0, 1);
        be->sync(be);
        t = now_sec() - t;
        if (rep > 0 && t < best) best = t;
    }
    be->free(be, a);
    be->free(be, b);
    be->free(be, c);
    return 2.0 * n * n * (double)n / best / 1e9;
}

// Bytes of GPU memory in use on the current device (all processes), or -1 without CUDA.
static double gpu_used_bytes(const asa_backend *be) {
#ifdef ASA_HAVE_CUDA
    size_t free_b = 0, total_b = 0;
    if (is_cuda(be) && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) return (double)(total_b - free_b);
#endif
    return -1;
}

static void usage(FILE *f) {
    fprintf(f, "usage: asa bench train --config FILE [--seq T] [--batch B] [--steps N] [--device D]\n"
               "                       [--precision P]\n"
               "       asa bench cpu [--config FILE] [--seq T] [--batch B] [--steps N]\n"
               "  train: defaults T 8192, B 1, 10 timed steps after 2 warm-up steps\n"
               "  cpu:   the CPU backend; defaults configs/asa-tiny.json, T 512, B 4, 5 steps\n"
               CLI_DEVICE_HELP);
}

int cmd_bench(int argc, char **argv) {
    int legacy_cpu = argc >= 2 && !strcmp(argv[1], "cpu");
    if (argc < 2 || (!legacy_cpu && strcmp(argv[1], "train") != 0)) {
        if (argc >= 2) fprintf(stderr, "asa bench: unknown target '%s' (train or cpu)\n", argv[1]);
        usage(stderr);
        return 2;
    }
    const char *config_path = legacy_cpu ? "configs/asa-tiny.json" : NULL, *device = NULL, *precision = NULL;
    int T = legacy_cpu ? 512 : 8192, B = legacy_cpu ? 4 : 1, steps = legacy_cpu ? 5 : 10;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        const char *v = cli_value("bench", argc, argv, &i);
        if (!v) return 2;
        int bad = 0;
        if (!strcmp(a, "--config")) config_path = v;
        else if (!strcmp(a, "--seq")) bad = cli_parse_int("bench", a, v, 2, 1 << 24, &T);
        else if (!strcmp(a, "--batch")) bad = cli_parse_int("bench", a, v, 1, 1 << 20, &B);
        else if (!strcmp(a, "--steps")) bad = cli_parse_int("bench", a, v, 1, 100000, &steps);
        else if (!strcmp(a, "--device") && !legacy_cpu) device = v;
        else if (!strcmp(a, "--precision") && !legacy_cpu) precision = v;
        else {
            fprintf(stderr, "asa bench: unknown option '%s'\n", a);
            return 2;
        }
        if (bad) return 2;
    }
    if (!config_path) {
        fprintf(stderr, "asa bench train: --config FILE is required\n");
        return 2;
    }
    asa_config cfg;
    if (asa_config_load(config_path, &cfg) != ASA_OK) {
        fprintf(stderr, "asa bench: %s\n", asa_err_msg());
        return 1;
    }
    asa_backend *be = legacy_cpu ? asa_backend_cpu_new() : cli_backend_new_precision("bench", device, precision);
    if (!be) return 1;
    if (asa_model_check_memory(be, &cfg, B, T, 1, 0) != ASA_OK) {
        fprintf(stderr, "asa bench: %s: %s\n", config_path, asa_err_msg());
        asa_backend_free(be);
        return 1;
    }
    const int gpu = is_cuda(be);
    const char *prec = be->precision == ASA_PRECISION_TF32 ? "tf32" : "fp32";
    printf("asa bench %s: %s, batch %d x %d tokens, device %s, %s", legacy_cpu ? "cpu" : "train", config_path, B, T,
           be->name, prec);
    if (!gpu) printf(", %d threads", omp_get_max_threads());
    printf("\n");
    double peak;
    if (gpu) {
        peak = gemm_gflops(be, 8192);
        printf("  %s-mode peak, cuBLASLt gemm 8192^3 (%s): %8.1f TFLOP/s\n", prec,
               be->precision == ASA_PRECISION_TF32 ? "TF32 tensor cores" : "TF32 off", peak / 1e3);
    } else {
        peak = gemm_gflops(be, 1024);
        printf("  OpenBLAS sgemm 1024^3:      %8.1f GFLOP/s\n", peak);
    }
    double used0 = gpu_used_bytes(be);

    asa_model model;
    asa_model_init(&model, &cfg, be, 1);
    asa_adamw opt;
    asa_adamw_init(&opt, &model, asa_adamw_defaults());
    asa_rng rng;
    asa_rng_seed(&rng, 5);
    int32_t *tokens = asa_malloc(sizeof(int32_t) * (size_t)B * T), *targets = asa_malloc(sizeof(int32_t) * (size_t)B * T);
    // Warm-up steps first: arenas are touched, scratch buffers grow and cuBLASLt picks its algorithms.
    const int warmup = gpu ? 2 : 1;
    double fwd_time = 0, total_time = 0, last_loss = 0;
    for (int step = -warmup; step < steps; step++) {
        asa_synthetic_copy(&rng, tokens, targets, B, T, cfg.vocab_size - 1 < 64 ? cfg.vocab_size - 1 : 64);
        be->sync(be);
        double t0 = now_sec();
        asa_model_zero_grad(&model);
        last_loss = asa_model_forward(&model, tokens, targets, B, T);  // the loss comes back to the host
        double t1 = now_sec();
        asa_model_backward(&model, 1.0f);
        asa_adamw_step(&opt, &model, 1e-4f);
        be->sync(be);
        double t2 = now_sec();
        if (step >= 0) {
            fwd_time += t1 - t0;
            total_time += t2 - t0;
        }
    }
    double used1 = gpu_used_bytes(be);
    double tokens_per_step = (double)B * T;
    double tok_s = tokens_per_step * steps / total_time;
    double flops_tok = asa_flops_train_per_token(&cfg, T);
    double gflops = tok_s * flops_tok / 1e9;
    printf("  forward:                    %8.1f ms/step\n", 1e3 * fwd_time / steps);
    printf("  train step (fwd+bwd+AdamW): %8.1f ms/step\n", 1e3 * total_time / steps);
    printf("  throughput:                 %8.0f tokens/s\n", tok_s);
    printf("  model FLOPs:                %8.2f %s (training, attention by keys read)\n",
           gpu ? flops_tok / 1e9 : flops_tok / 1e6, gpu ? "GFLOP/token" : "MFLOP/token");
    if (gpu) {
        printf("  achieved:                   %8.2f TFLOP/s = MFU %.1f%% of the %s-mode peak above\n", gflops / 1e3,
               100.0 * gflops / peak, prec);
        char b0[32], b1[32], b2[32];
        // Every arena is allocated before the first step and scratch only grows, so the memory in use
        // after the steps is the run's peak.
        printf("  GPU memory:                 %s in use after the steps (peak); model, AdamW, activations and "
               "scratch %s; before the model %s\n", cli_bytes(used1, b0, sizeof b0), cli_bytes(used1 - used0, b1, sizeof b1),
               cli_bytes(used0, b2, sizeof b2));
        char b3[32];
        printf("  activations (asa_model_act_bytes): %s\n", cli_bytes((double)asa_model_act_bytes(&cfg, B, T), b3, sizeof b3));
    } else {
        printf("  achieved:                   %8.1f GFLOP/s = %.1f%% of sgemm\n", gflops, 100.0 * gflops / peak);
    }
    printf("  last loss:                  %8.4f\n", last_loss);
    free(tokens);
    free(targets);
    asa_adamw_free(&opt, &model);
    asa_model_free(&model);
    asa_backend_free(be);
    return isfinite(last_loss) ? 0 : 1;
}
