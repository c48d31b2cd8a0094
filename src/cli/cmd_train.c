// `asa train`: parses the options into an asa_train_options and hands them to the trainer
// (src/train/trainer.h), which owns the run directory, checkpoints, resume and the loop.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asa/tokenizer.h"
#include "cli/cli.h"
#include "cli/device.h"
#include "core/error.h"
#include "infer/generate.h"
#include "train/dist.h"
#include "train/trainer.h"

// Samples printed during training (--sample-every): the same prompt, seed and settings every time, so
// that successive samples show what the model has learnt. The tokenizer is the run's tokenizer.json.
typedef struct {
    const char *run_dir, *prompt;
    int tokens;
    asa_tokenizer *tok;
    int tried;
} sample_ctx;

static void print_token(void *user, int32_t id) {
    size_t len;
    const char *bytes = asa_tokenizer_token(user, id, &len);
    if (bytes) fwrite(bytes, 1, len, stdout);
}

static void sample_hook(void *user, asa_model *model, int step) {
    sample_ctx *c = user;
    if (!c->tok && !c->tried) {
        c->tried = 1;
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.json", c->run_dir);
        if (asa_tokenizer_load(path, &c->tok) != ASA_OK)
            fprintf(stderr, "asa train: no samples: %s\n", asa_err_msg());
    }
    if (!c->tok) return;
    asa_token_buf ids = {0};
    asa_tokenizer_encode(c->tok, c->prompt, strlen(c->prompt), 0, &ids);
    if (ids.n == 0 && asa_tokenizer_eot(c->tok) >= 0) asa_token_buf_push(&ids, asa_tokenizer_eot(c->tok));
    asa_sampler_config sc = asa_sampler_defaults();
    sc.temperature = 0.8f;
    sc.top_k = 40;
    asa_sampler s;
    if (ids.n > 0 && asa_sampler_init(&s, &sc, asa_tokenizer_vocab_size(c->tok), 1234) == ASA_OK) {
        asa_decoder dec;
        asa_decoder_init(&dec, model, 1, (int)ids.n + c->tokens);
        printf("sample at step %d: %s", step, c->prompt);
        asa_generate(&dec, &s, ids.ids, (int)ids.n, c->tokens, asa_tokenizer_eot(c->tok), print_token, c->tok, NULL);
        printf("\n");
        fflush(stdout);
        asa_decoder_free(&dec);
        asa_sampler_free(&s);
    }
    asa_token_buf_free(&ids);
}

static void usage(void) {
    printf("usage: asa train --config FILE (--data DIR | --synthetic copy) [options]\n"
           "       asa train --resume --out RUN_DIR [options]\n"
           "data:\n"
           "  --data DIR         token shards DIR/train-*.shard and DIR/val-*.shard (from asa prepare);\n"
           "                     DIR/tokenizer.json, when present, is copied into the run\n"
           "  --synthetic copy   the built-in copy task   --alphabet A  its symbols (32)\n"
           "run directory:\n"
           "  --out RUN_DIR      (default runs/<config name>): config.json, log.jsonl, loss.svg, checkpoints/\n"
           "  --resume           continue RUN_DIR exactly from its latest checkpoint; given --config and a data\n"
           "                     source too, a run with no checkpoint yet starts anew (one command for a job\n"
           "                     that may be preempted: it starts or continues, whichever it finds)\n"
           "  --ckpt-every N     checkpoint every N steps, 0 = only at the end (500)\n"
           "  --keep K           checkpoints kept (3)\n"
           "  --exit-after N     stop after N steps of this invocation, with a checkpoint\n"
           "optimisation:\n"
           "  --steps N          optimizer steps of the whole run (300)\n"
           "  --batch B          sequences per micro-batch (8)    --seq T  tokens per sequence (256)\n"
           "  --batch-tokens N   tokens per optimizer step, a multiple of B*T (B*T): N/(B*T) accumulation steps\n"
           "  --lr X             peak learning rate (3e-4 on data, 3e-3 on the copy task)\n"
           "  --schedule S       cosine | wsd | constant (cosine)   --warmup N  (5%% of steps)\n"
           "  --min-lr-ratio X   decay floor as a fraction of the peak (0.1)\n"
           "  --decay-frac X     wsd: fraction of the steps spent decaying (0.2)\n"
           "  --weight-decay X   (0.01)   --clip X  global gradient-norm clip, 0 = off (1.0)\n"
           "  --seed S           weights, data order and synthetic data (1)\n"
           "  --recompute        keep only each layer's input in the forward and recompute its activations\n"
           "                     before its backward: activation memory of one layer instead of all, for about\n"
           "                     a quarter more compute; the same results (may change on --resume)\n"
           "reporting:\n"
           "  --log-every N      progress line and loss.svg refresh (10)\n"
           "  --val-every N      validation loss every N steps and at the end (100)\n"
           "  --val-batches K    micro-batches per validation (10)\n"
           "  --sample-every N   print a generated sample every N steps (0 = never; needs the run's\n"
           "                     tokenizer.json)   --sample-prompt TEXT (\"\": from <|endoftext|>)\n"
           "  --sample-tokens N  tokens per sample (64)\n"
           "  --on-nan stop|skip a NaN/Inf loss or gradient (reported with the tensor it appeared in first)\n"
           "                     stops the run (stop, the default), or skips that step's update (skip; more\n"
           "                     than %d skipped steps in a row stop the run)\n"
           "device:\n"
           CLI_DEVICE_HELP
           "data-parallel (mpirun -np N asa train ..., or a launcher setting RANK/WORLD_SIZE/LOCAL_RANK or SLURM's\n"
           "variables, with NCCL on GPUs): every step's micro-batches are split over the N ranks (--batch-tokens\n"
           "must be a multiple of B*T*N); rank r uses GPU r of its machine; a run may resume on another number of\n"
           "ranks. Environment: ASA_DIST_TIMEOUT (s, 600) ends every rank when a collective waits that long (a\n"
           "rank died or hangs); ASA_DIST_ID_FILE, where an environment launch passes the NCCL id (RUN_DIR.nccl-id).\n"
           "  --zero 0|1         ZeRO-1: shard the AdamW moments across the ranks (on with more than one rank)\n"
           "On --resume the training options come from the run; --steps, --log-every, --val-every,\n"
           "--val-batches, --ckpt-every and --keep may be changed. Ctrl-C writes a checkpoint and exits.\n",
           ASA_MAX_SKIPPED_STEPS);
}

// "runs/<name>" for a config path ".../<name>.json".
static char *default_run_dir(const char *config_path) {
    const char *base = strrchr(config_path, '/');
    base = base ? base + 1 : config_path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".json")) n -= 5;
    char *p = asa_malloc(n + 6);
    snprintf(p, n + 6, "runs/%.*s", (int)n, base);
    return p;
}

int cmd_train(int argc, char **argv) {
    asa_train_options o;
    asa_train_options_init(&o);
    sample_ctx sample = {.prompt = "", .tokens = 64};
    const char *device = NULL, *precision = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        }
        if (!strcmp(a, "--resume")) {
            o.resume = 1;
            continue;
        }
        if (!strcmp(a, "--recompute")) {
            o.recompute = 1;
            continue;
        }
        if (!(v = cli_value("train", argc, argv, &i))) return 2;
        int bad = 0;
        if (!strcmp(a, "--config")) o.config_path = v;
        else if (!strcmp(a, "--out")) o.run_dir = v;
        else if (!strcmp(a, "--data")) o.data_dir = v;
        else if (!strcmp(a, "--synthetic")) o.synthetic = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--precision")) precision = v;
        else if (!strcmp(a, "--alphabet")) bad = cli_parse_int("train", a, v, 1, 1 << 30, &o.alphabet);
        else if (!strcmp(a, "--steps")) bad = cli_parse_int("train", a, v, 1, 1000000000, &o.steps);
        else if (!strcmp(a, "--batch")) bad = cli_parse_int("train", a, v, 1, 1 << 20, &o.batch);
        else if (!strcmp(a, "--seq")) bad = cli_parse_int("train", a, v, 2, 1 << 24, &o.seq);
        else if (!strcmp(a, "--batch-tokens")) bad = cli_parse_int("train", a, v, 1, 1 << 30, &o.batch_tokens);
        else if (!strcmp(a, "--lr")) bad = cli_parse_float("train", a, v, 0, 10, &o.lr);
        else if (!strcmp(a, "--min-lr-ratio")) bad = cli_parse_float("train", a, v, 0, 1, &o.min_lr_ratio);
        else if (!strcmp(a, "--warmup")) bad = cli_parse_int("train", a, v, 0, 1000000000, &o.warmup);
        else if (!strcmp(a, "--decay-frac")) bad = cli_parse_float("train", a, v, 0, 1, &o.decay_frac);
        else if (!strcmp(a, "--weight-decay")) bad = cli_parse_float("train", a, v, 0, 10, &o.weight_decay);
        else if (!strcmp(a, "--clip")) bad = cli_parse_float("train", a, v, 0, 1e9, &o.clip);
        else if (!strcmp(a, "--seed")) bad = cli_parse_int("train", a, v, 0, 2147483647, &o.seed);
        else if (!strcmp(a, "--log-every")) bad = cli_parse_int("train", a, v, 1, 1000000000, &o.log_every);
        else if (!strcmp(a, "--val-every")) bad = cli_parse_int("train", a, v, 0, 1000000000, &o.val_every);
        else if (!strcmp(a, "--val-batches")) bad = cli_parse_int("train", a, v, 0, 1000000, &o.val_batches);
        else if (!strcmp(a, "--ckpt-every")) bad = cli_parse_int("train", a, v, 0, 1000000000, &o.ckpt_every);
        else if (!strcmp(a, "--keep")) bad = cli_parse_int("train", a, v, 1, 1000000, &o.keep);
        else if (!strcmp(a, "--zero")) bad = cli_parse_int("train", a, v, 0, 1, &o.zero);
        else if (!strcmp(a, "--on-nan")) {
            if (!strcmp(v, "stop")) o.on_nan = ASA_ON_NAN_STOP;
            else if (!strcmp(v, "skip")) o.on_nan = ASA_ON_NAN_SKIP;
            else {
                fprintf(stderr, "asa train: --on-nan: '%s' is not one of stop, skip\n", v);
                return 2;
            }
        }
        else if (!strcmp(a, "--exit-after")) bad = cli_parse_int("train", a, v, 1, 1000000000, &o.exit_after);
        else if (!strcmp(a, "--sample-every")) bad = cli_parse_int("train", a, v, 0, 1000000000, &o.sample_every);
        else if (!strcmp(a, "--sample-prompt")) sample.prompt = v;
        else if (!strcmp(a, "--sample-tokens")) bad = cli_parse_int("train", a, v, 1, 1 << 20, &sample.tokens);
        else if (!strcmp(a, "--schedule")) {
            if (!strcmp(v, "cosine")) o.schedule = ASA_SCHED_COSINE;
            else if (!strcmp(v, "wsd")) o.schedule = ASA_SCHED_WSD;
            else if (!strcmp(v, "constant")) o.schedule = ASA_SCHED_CONSTANT;
            else {
                fprintf(stderr, "asa train: --schedule: '%s' is not one of cosine, wsd, constant\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "asa train: unknown option '%s' (see asa train --help)\n", a);
            return 2;
        }
        if (bad) return 2;
    }
    if (!o.resume && !o.config_path) {
        fprintf(stderr, "asa train: --config FILE is required (or --resume --out RUN_DIR)\n");
        return 2;
    }
    if (!o.resume && !o.data_dir == !o.synthetic) {
        fprintf(stderr, "asa train: give one data source: --data DIR (token shards) or --synthetic copy\n");
        return 2;
    }
    if (o.resume && !o.run_dir && !o.config_path) {
        fprintf(stderr, "asa train: --resume needs --out RUN_DIR (or the --config whose default run to continue)\n");
        return 2;
    }
    // Under mpirun every rank runs this with the same arguments; rank 0 alone prints and writes the run.
    asa_dist dist;
    if (asa_dist_init(&dist) != ASA_OK) {
        fprintf(stderr, "asa train: %s\n", asa_err_msg());
        return 1;
    }
    o.dist = &dist;
    if (!(o.backend = cli_backend_new_rank("train", device, precision, dist.local_rank))) {
        asa_dist_finalize(&dist);
        return 2;
    }
    char *run_dir = o.run_dir ? NULL : default_run_dir(o.config_path);
    if (run_dir) o.run_dir = run_dir;
    if (asa_dist_attach(&dist, o.backend, o.run_dir) != ASA_OK) {
        fprintf(stderr, "asa train: rank %d: %s\n", dist.rank, asa_err_msg());
        asa_backend_free(o.backend);
        free(run_dir);
        asa_dist_finalize(&dist);
        return 1;
    }
    sample.run_dir = o.run_dir;
    o.sample = sample_hook;
    o.sample_user = &sample;
    int rc = asa_train_run(&o);
    if (rc != ASA_OK && dist.rank == 0) fprintf(stderr, "asa train: %s\n", asa_err_msg());
    asa_tokenizer_free(sample.tok);
    asa_backend_free(o.backend);
    free(run_dir);
    asa_dist_finalize(&dist);
    return rc == ASA_OK ? 0 : 1;
}
