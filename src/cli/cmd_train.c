// `asa train`: for now the built-in synthetic task on the CPU backend; the data pipeline, checkpoints
// and resume arrive with the training-pipeline work and plug into this same loop.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "asa/config.h"
#include "cli/cli.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/synthetic.h"
#include "model/model.h"
#include "train/optimizer.h"

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(void) {
    printf("usage: asa train --config FILE --synthetic copy [options]\n"
           "  --steps N        optimizer steps (default 300)\n"
           "  --batch B        sequences per step (default 8)\n"
           "  --seq T          tokens per sequence (default 256)\n"
           "  --alphabet A     distinct tokens in the copy task (default 32)\n"
           "  --lr X           peak learning rate (default 3e-3)\n"
           "  --warmup N       warmup steps (default 5%% of steps)\n"
           "  --weight-decay X (default 0.01)   --clip X (default 1.0)\n"
           "  --seed S         (default 1)\n"
           "  --log-every N    (default 10)\n");
}

int cmd_train(int argc, char **argv) {
    const char *config_path = NULL, *task = NULL;
    int steps = 300, B = 8, T = 256, alphabet = 32, warmup = -1, seed = 1, log_every = 10;
    asa_adamw_config oc = asa_adamw_defaults();
    oc.lr = 3e-3f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        }
        if (!(v = cli_value("train", argc, argv, &i))) return 2;
        int bad = 0;
        if (!strcmp(a, "--config")) config_path = v;
        else if (!strcmp(a, "--synthetic")) task = v;
        else if (!strcmp(a, "--steps")) bad = cli_parse_int("train", a, v, 1, 100000000, &steps);
        else if (!strcmp(a, "--batch")) bad = cli_parse_int("train", a, v, 1, 1 << 20, &B);
        else if (!strcmp(a, "--seq")) bad = cli_parse_int("train", a, v, 2, 1 << 24, &T);
        else if (!strcmp(a, "--alphabet")) bad = cli_parse_int("train", a, v, 1, 1 << 30, &alphabet);
        else if (!strcmp(a, "--lr")) bad = cli_parse_float("train", a, v, 0, 10, &oc.lr);
        else if (!strcmp(a, "--warmup")) bad = cli_parse_int("train", a, v, 0, 100000000, &warmup);
        else if (!strcmp(a, "--weight-decay")) bad = cli_parse_float("train", a, v, 0, 10, &oc.weight_decay);
        else if (!strcmp(a, "--clip")) bad = cli_parse_float("train", a, v, 0, 1e9, &oc.clip);
        else if (!strcmp(a, "--seed")) bad = cli_parse_int("train", a, v, 0, 2147483647, &seed);
        else if (!strcmp(a, "--log-every")) bad = cli_parse_int("train", a, v, 1, 100000000, &log_every);
        else {
            fprintf(stderr, "asa train: unknown option '%s' (see asa train --help)\n", a);
            return 2;
        }
        if (bad) return 2;
    }
    if (!config_path) {
        fprintf(stderr, "asa train: --config FILE is required\n");
        return 2;
    }
    if (!task || strcmp(task, "copy") != 0) {
        fprintf(stderr, "asa train: --synthetic copy is the only data source so far (got %s)\n", task ? task : "none");
        return 2;
    }
    asa_config cfg;
    if (asa_config_load(config_path, &cfg) != ASA_OK) {
        fprintf(stderr, "asa train: %s\n", asa_err_msg());
        return 1;
    }
    if (alphabet >= cfg.vocab_size) {
        fprintf(stderr, "asa train: --alphabet %d must be below the vocabulary size %d\n", alphabet, cfg.vocab_size);
        return 2;
    }
    if (warmup < 0) warmup = steps / 20;

    asa_backend *be = asa_backend_cpu_new();
    asa_model model;
    asa_model_init(&model, &cfg, be, (uint64_t)seed);
    asa_adamw opt;
    asa_adamw_init(&opt, &model, oc);
    asa_rng data_rng;
    asa_rng_seed(&data_rng, (uint64_t)seed * 7919u + 1);
    int32_t *tokens = asa_malloc(sizeof(int32_t) * (size_t)B * T), *targets = asa_malloc(sizeof(int32_t) * (size_t)B * T);
    char b1[32];
    printf("asa train: %s (pattern %s, %s parameters) on the synthetic copy task, batch %d x %d tokens, %d steps\n",
           config_path, cfg.layer_pattern, cli_human((double)model.layout.total, b1, sizeof b1), B, T, steps);
    printf("  a random string of %d symbols, then the same string again: the second half is predictable only\n"
           "  by attending %d positions back; chance level is ln(%d) = %.3f\n", alphabet, T / 2, alphabet, log(alphabet));
    double t0 = now_sec(), first_loss = 0, last_loss = 0;
    int status = 0;
    for (int step = 0; step < steps; step++) {
        asa_synthetic_copy(&data_rng, tokens, targets, B, T, alphabet);
        asa_model_zero_grad(&model);
        float loss = asa_model_forward(&model, tokens, targets, B, T);
        if (!isfinite(loss)) {
            fprintf(stderr, "asa train: loss is %f at step %d; stopping\n", loss, step + 1);
            status = 1;
            break;
        }
        asa_model_backward(&model, 1.0f);
        float lr = asa_lr_at(ASA_SCHED_COSINE, oc.lr, step, warmup, steps, 0.1f, 0);
        double norm = asa_adamw_step(&opt, &model, lr);
        if (step == 0) first_loss = loss;
        last_loss = loss;
        if ((step + 1) % log_every == 0 || step == 0 || step + 1 == steps) {
            double el = now_sec() - t0;
            printf("step %5d/%d | loss %.4f | lr %.2e | grad norm %7.3f | %6.0f tok/s\n", step + 1, steps, loss, lr, norm,
                   (double)(step + 1) * B * T / el);
            fflush(stdout);
        }
    }
    if (!status)
        printf("done: loss %.4f -> %.4f (%.1f%% lower) in %.1f s\n", first_loss, last_loss,
               100.0 * (first_loss - last_loss) / first_loss, now_sec() - t0);
    free(tokens);
    free(targets);
    asa_adamw_free(&opt, &model);
    asa_model_free(&model);
    asa_backend_free(be);
    return status;
}
