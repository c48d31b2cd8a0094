// Training on the GPU against training on the CPU: asa-tiny (configs/asa-tiny.json) at T = 128, the same
// options and data on both backends, through the trainer itself. The loss of every step (log.jsonl) must
// agree within 2% for 200 steps; then each run is resumed from its step-200 checkpoint on the other
// backend (a GPU checkpoint loaded on the CPU and vice versa) for 10 more steps, which must agree as well,
// and the final validation losses too. Prints the largest relative difference.
// The data are token shards of a random Markov chain (each token has 4 possible successors), whose loss
// falls smoothly from log V towards the chain's entropy. Not the copy task: its loss sits on a plateau
// and then drops suddenly once the model learns to copy, and the step where that happens moves with
// rounding, so two correct backends can be far apart at a few steps there.
// The fp32 GPU backend differs from the CPU only in summation order (~1e-6 per op), so the curves should
// agree far closer than the 2%, which still fails any wrong gradient.
// A third run trains on the GPU in tf32 mode (tensor-core matrix products, fp32 storage and sums) for the
// same 200 steps, then continues in tf32 mode from its checkpoint; its curve and final validation loss
// must stay within the same 2% of the CPU's: the rounded products (~3e-4 relative) perturb each step's
// gradient slightly, and a correct run keeps the loss curve close (5e-5 apart at worst on the H100).
// A fourth run does the same in bf16 mode (bf16 activations and weight copy; fp32 master weights, AdamW
// and sums): every stored value is rounded to 2^-9, so each step's gradient carries a few percent of
// noise (test_gpu_model), unbiased (round to nearest even) and small beside the minibatch noise of B 4 x
// T 128, and the master weights keep every small update; the loss curve follows the CPU's within the same
// 2% (a host emulation of bf16 storage stayed within 7.4e-4), which a gradient error that does not
// average out (a stale weight copy, an update lost to bf16 rounding) would leave within tens of steps.
// Without a GPU: prints "SKIPPED: ..." and exits 77 (ctest SKIP_RETURN_CODE).
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/rng.h"
#include "data/shard.h"
#include "testutil.h"
#include "train/trainer.h"

#define STEPS 200
#define EXTRA 10
#define TOL 0.02
#define ALPHABET 512  // tokens of the chain, below asa-tiny's vocab_size 4096

typedef struct {
    float loss[STEPS + EXTRA + 1];  // by step, 1-based; NaN where absent
    double val_loss;                // the last validation loss
} curve;

// DIR/train-0.shard and DIR/val-0.shard: n and n/8 tokens of a Markov chain over ALPHABET tokens, token
// a followed by succ[a][j] with probability 0.55, 0.25, 0.15, 0.05 (entropy 1.11 nats per token).
static int write_chain(const char *dir, size_t n) {
    static int32_t succ[ALPHABET][4];
    asa_rng r;
    asa_rng_seed(&r, 42);
    for (int a = 0; a < ALPHABET; a++)
        for (int j = 0; j < 4; j++) succ[a][j] = (int32_t)asa_rng_below(&r, ALPHABET);
    const double cum[4] = {0.55, 0.80, 0.95, 1.0};
    int32_t *tok = malloc(sizeof(int32_t) * n);
    int rc = ASA_OK;
    for (int part = 0; part < 2 && rc == ASA_OK; part++) {
        size_t len = part ? n / 8 : n;
        tok[0] = (int32_t)asa_rng_below(&r, ALPHABET);
        for (size_t i = 1; i < len; i++) {
            double u = asa_rng_uniform(&r);
            int j = 0;
            while (j < 3 && u >= cum[j]) j++;
            tok[i] = succ[tok[i - 1]][j];
        }
        char path[4200];
        snprintf(path, sizeof path, "%s/%s-0.shard", dir, part ? "val" : "train");
        asa_shard_writer w;
        rc = asa_shard_writer_open(&w, path, 0, 4096);
        if (!rc) rc = asa_shard_writer_append(&w, tok, len);
        if (!rc) rc = asa_shard_writer_commit(&w);
    }
    free(tok);
    return rc;
}

static int train(asa_backend *be, const char *run, const char *data, int resume) {
    asa_train_options o;
    asa_train_options_init(&o);
    o.config_path = resume ? NULL : "configs/asa-tiny.json";
    o.run_dir = run;
    o.data_dir = data;
    o.lr = 1e-3f;
    o.steps = STEPS + EXTRA;
    o.exit_after = resume ? 0 : STEPS;
    o.batch = 4;
    o.seq = 128;
    o.seed = 7;
    o.val_every = 0;  // validation only at the end
    o.val_batches = 2;
    o.ckpt_every = 0;
    o.log_every = 50;
    o.resume = resume;
    o.quiet = 1;
    o.backend = be;
    int rc = asa_train_run(&o);
    if (rc != ASA_OK) fprintf(stderr, "train %s (%s%s): %s\n", run, be->name, resume ? ", resumed" : "", asa_err_msg());
    return rc;
}

static int read_curve(const char *run, curve *c) {
    char path[4096], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/log.jsonl", run);
    for (int i = 0; i <= STEPS + EXTRA; i++) c->loss[i] = NAN;
    c->val_loss = NAN;
    if (asa_file_read_all(path, (size_t)1 << 26, &text, &len) != ASA_OK) return ASA_ERR;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step"), *l = cJSON_GetObjectItemCaseSensitive(j, "loss");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "val_loss");
        if (cJSON_IsNumber(s) && cJSON_IsNumber(l) && s->valueint >= 1 && s->valueint <= STEPS + EXTRA)
            c->loss[s->valueint] = (float)l->valuedouble;
        if (cJSON_IsNumber(v)) c->val_loss = v->valuedouble;
        cJSON_Delete(j);
    }
    free(text);
    return ASA_OK;
}

int main(void) {
    asa_backend *gpu = asa_backend_cuda_new(0, ASA_PRECISION_FP32);
    if (!gpu) {
        printf("SKIPPED: %s\n", asa_err_msg());
        return 77;
    }
    asa_backend *cpu = asa_backend_cpu_new(), *gpu_tf32 = asa_backend_cuda_new(0, ASA_PRECISION_TF32);
    TU_CHECK(gpu_tf32 != NULL, "no tf32 CUDA backend: %s", asa_err_msg());
    asa_backend *gpu_bf16 = asa_backend_cuda_new(0, ASA_PRECISION_BF16);
    TU_CHECK(gpu_bf16 != NULL, "no bf16 CUDA backend: %s", asa_err_msg());
    if (!gpu_tf32 || !gpu_bf16) return tu_finish("test_gpu_train");
    char dir[] = "/tmp/asa-gpu-train-XXXXXX", run_c[4096], run_g[4096], run_b[4096], run_h[4096], data[4096];
    TU_CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
    snprintf(run_c, sizeof run_c, "%s/cpu", dir);
    snprintf(run_g, sizeof run_g, "%s/gpu", dir);
    snprintf(run_b, sizeof run_b, "%s/gpu-tf32", dir);
    snprintf(run_h, sizeof run_h, "%s/gpu-bf16", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    TU_CHECK(mkdir(data, 0777) == 0 && write_chain(data, (size_t)(STEPS + EXTRA + 20) * 4 * 128) == ASA_OK,
             "cannot write the data shards: %s", asa_err_msg());

    // Steps 1-200 on each backend, then 201-210 on the other one from the step-200 checkpoint.
    TU_CHECK(train(cpu, run_c, data, 0) == ASA_OK, "CPU run failed");
    TU_CHECK(train(gpu, run_g, data, 0) == ASA_OK, "GPU run failed");
    TU_CHECK(train(gpu, run_c, data, 1) == ASA_OK, "GPU resume of the CPU checkpoint failed");
    TU_CHECK(train(cpu, run_g, data, 1) == ASA_OK, "CPU resume of the GPU checkpoint failed");
    TU_CHECK(train(gpu_tf32, run_b, data, 0) == ASA_OK && train(gpu_tf32, run_b, data, 1) == ASA_OK,
             "GPU tf32 run failed");
    TU_CHECK(train(gpu_bf16, run_h, data, 0) == ASA_OK && train(gpu_bf16, run_h, data, 1) == ASA_OK,
             "GPU bf16 run failed");

    static curve cc, cg, cb, ch;
    TU_CHECK(read_curve(run_c, &cc) == ASA_OK && read_curve(run_g, &cg) == ASA_OK && read_curve(run_b, &cb) == ASA_OK &&
                 read_curve(run_h, &ch) == ASA_OK,
             "log.jsonl unreadable: %s", asa_err_msg());
    double worst = 0, worst_resumed = 0;
    int worst_step = 0, missing = 0;
    for (int s = 1; s <= STEPS + EXTRA; s++) {
        if (isnan(cc.loss[s]) || isnan(cg.loss[s])) {
            missing++;
            continue;
        }
        double d = fabs((double)cg.loss[s] - cc.loss[s]) / fabs((double)cc.loss[s]);
        TU_CHECK(d <= TOL, "step %d%s: loss CPU %.6f GPU %.6f (%.2f%% apart)", s, s > STEPS ? " (resumed)" : "",
                 cc.loss[s], cg.loss[s], 100 * d);
        if (s > STEPS && d > worst_resumed) worst_resumed = d;
        if (d > worst) worst = d, worst_step = s;
    }
    TU_CHECK(missing == 0, "%d steps missing from log.jsonl", missing);
    // The task must actually have been learnt somewhat, or agreeing curves would prove little.
    TU_CHECK(cc.loss[STEPS] < 0.8f * cc.loss[1], "loss did not fall: %.4f -> %.4f", cc.loss[1], cc.loss[STEPS]);
    double dv = fabs(cg.val_loss - cc.val_loss) / fabs(cc.val_loss);
    TU_CHECK(dv <= TOL, "final val loss CPU %.6f GPU %.6f", cc.val_loss, cg.val_loss);
    // the tf32 and bf16 runs, each against the CPU's curve and final validation loss
    const curve *modes[2] = {&cb, &ch};
    double worst_m[2] = {0, 0}, dv_m[2] = {0, 0};
    int worst_m_step[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        const char *name = i ? "bf16" : "tf32";
        for (int s = 1; s <= STEPS + EXTRA; s++) {
            double d = fabs((double)modes[i]->loss[s] - cc.loss[s]) / fabs((double)cc.loss[s]);
            TU_CHECK(d <= TOL, "step %d: loss CPU %.6f GPU %s %.6f (%.2f%% apart)", s, cc.loss[s], name,
                     modes[i]->loss[s], 100 * d);
            if (!(d <= worst_m[i])) worst_m[i] = d, worst_m_step[i] = s;  // NaN counts as worst
        }
        dv_m[i] = fabs(modes[i]->val_loss - cc.val_loss) / fabs(cc.val_loss);
        TU_CHECK(dv_m[i] <= TOL, "final val loss CPU %.6f GPU %s %.6f", cc.val_loss, name, modes[i]->val_loss);
    }
    printf("  asa-tiny, Markov-chain shards, B 4 x T 128: loss %.4f -> %.4f (CPU) / %.4f -> %.4f (GPU) over %d steps\n",
           cc.loss[1], cc.loss[STEPS + EXTRA], cg.loss[1], cg.loss[STEPS + EXTRA], STEPS + EXTRA);
    printf("  max relative loss difference: %.3e (step %d); steps %d-%d after swapping backends at the checkpoint: "
           "%.3e; final val loss %.3e\n", worst, worst_step, STEPS + 1, STEPS + EXTRA, worst_resumed, dv);
    for (int i = 0; i < 2; i++)
        printf("  GPU %s mode: loss %.4f -> %.4f, max relative difference from the CPU %.3e (step %d); "
               "final val loss %.3e\n", i ? "bf16" : "tf32", modes[i]->loss[1], modes[i]->loss[STEPS + EXTRA],
               worst_m[i], worst_m_step[i], dv_m[i]);

    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    TU_CHECK(system(cmd) == 0, "could not remove %s", dir);
    asa_backend_free(cpu);
    asa_backend_free(gpu);
    asa_backend_free(gpu_tf32);
    asa_backend_free(gpu_bf16);
    return tu_finish("test_gpu_train");
}
