// libFuzzer target: asa_checkpoint_load with arbitrary bytes as trainer_state.json. A real checkpoint of
// a tiny model is saved once per process (in /dev/shm when there is one); each input replaces its
// trainer_state.json, so an input that parses goes on through config.json, the weights and the optimizer.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "asa/config.h"
#include "backend/backend.h"
#include "core/error.h"
#include "train/trainer.h"

static const char *TINY =
    "{\"vocab_size\": 16, \"hidden_size\": 16, \"intermediate_size\": 32, \"num_hidden_layers\": 2,"
    " \"max_position_embeddings\": 32, \"layer_pattern\": \"GL\", \"num_heads\": 2, \"qk_nope_head_dim\": 4,"
    " \"qk_rope_head_dim\": 4, \"v_head_dim\": 4, \"kv_lora_rank\": 8, \"latent_groups\": 2, \"latent_dim\": 4,"
    " \"window_size\": 8, \"block_size\": 4, \"block_counts\": 3}";

static char run_dir[64];
static asa_model model;
static asa_adamw opt;
static char *ckpt_dir;

static void remove_run_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", run_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz_trainer_state: could not remove %s\n", run_dir);
}

static void setup(void) {
    asa_config cfg;
    if (asa_config_parse(TINY, "tiny", &cfg)) {
        fprintf(stderr, "fuzz_trainer_state: %s\n", asa_err_msg());
        abort();
    }
    asa_model_init(&model, &cfg, asa_backend_cpu_new(), 1);
    asa_adamw_init(&opt, &model, asa_adamw_defaults());
    asa_train_state st;
    memset(&st, 0, sizeof st);
    st.step = 3;
    st.tokens_seen = 12345678901234567ULL;
    st.last_loss = 2.5f;
    asa_rng_seed(&st.train_rng, 7);
    snprintf(st.synthetic, sizeof st.synthetic, "copy");
    asa_train_options *o = &st.opts;  // resolved options, as a run saves them
    asa_train_options_init(o);
    o->alphabet = 12, o->steps = 40, o->batch = 2, o->seq = 16, o->batch_tokens = 32, o->warmup = 2;
    o->lr = 3e-3f, o->min_lr_ratio = 0.1f, o->schedule = ASA_SCHED_WSD, o->decay_frac = 0.3f;
    o->weight_decay = 0.01f, o->clip = 1.0f, o->seed = 5, o->log_every = 10, o->val_every = 20;
    o->val_batches = 4, o->ckpt_every = 5, o->keep = 2, o->sample_every = 0;
    opt.step = 3;
    snprintf(run_dir, sizeof run_dir, "%s/asa-fuzz-run-XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(run_dir)) abort();
    atexit(remove_run_dir);
    if (asa_checkpoint_save(run_dir, &model, &opt, NULL, &st, 1, &ckpt_dir)) {
        fprintf(stderr, "fuzz_trainer_state: %s\n", asa_err_msg());
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ckpt_dir) setup();
    char path[256];
    snprintf(path, sizeof path, "%s/trainer_state.json", ckpt_dir);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) abort();
    asa_train_state st;
    // The optimizer's step is 3 and a load checks the state against it: anything else accepted is a bug.
    if (asa_checkpoint_load(ckpt_dir, &model, &opt, &st) == ASA_OK && st.step != 3) abort();
    return 0;
}
