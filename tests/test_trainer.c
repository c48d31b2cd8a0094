// The trainer library: learning-rate schedules (warmup, cosine end value, WSD shape), checkpoint save and
// load round trips (weights, AdamW moments and step, trainer state, all bit-exact, and training continues
// identically), pruning to the last K, and refusals that leave the model untouched.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "asa/config.h"
#include "core/error.h"
#include "data/synthetic.h"
#include "testutil.h"
#include "train/trainer.h"

static const char *TINY =
    "{\"model_type\": \"asa\", \"vocab_size\": 48, \"hidden_size\": 32, \"intermediate_size\": 64,"
    " \"num_hidden_layers\": 2, \"max_position_embeddings\": 128, \"layer_pattern\": \"GL\", \"num_heads\": 2,"
    " \"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 8, \"v_head_dim\": 8, \"kv_lora_rank\": 16,"
    " \"latent_groups\": 2, \"latent_dim\": 8, \"window_size\": 16, \"block_size\": 8, \"block_counts\": 3,"
    " \"selection_share\": 4}";

// Schedules are computed in float: 1e-6 relative covers the rounding of cosf and the divisions.
static void test_schedules(void) {
    const float peak = 2e-3f, tol = 1e-6f * peak;
    // Cosine: warmup 10 of 110 steps, floor 10%.
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_COSINE, peak, 0, 10, 110, 0.1f, 0) - peak / 10) < tol, "first warmup step");
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_COSINE, peak, 4, 10, 110, 0.1f, 0) - peak / 2) < tol, "warmup is linear");
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_COSINE, peak, 9, 10, 110, 0.1f, 0) - peak) < tol, "warmup ends at the peak");
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_COSINE, peak, 10, 10, 110, 0.1f, 0) - peak) < tol, "decay starts at the peak");
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_COSINE, peak, 60, 10, 110, 0.1f, 0) - 0.55f * peak) < tol,
             "cosine midpoint is halfway between peak and floor: %g", asa_lr_at(ASA_SCHED_COSINE, peak, 60, 10, 110, 0.1f, 0));
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_COSINE, peak, 110, 10, 110, 0.1f, 0) - 0.1f * peak) < tol, "cosine ends at 10%%");
    float prev = INFINITY;
    int monotone = 1;
    for (int s = 10; s <= 110; s++) {
        float lr = asa_lr_at(ASA_SCHED_COSINE, peak, s, 10, 110, 0.1f, 0);
        if (lr > prev + tol || lr < 0.1f * peak - tol) monotone = 0;
        prev = lr;
    }
    TU_CHECK(monotone, "cosine decay is monotone and stays above the floor");
    // WSD: 100 steps, warmup 10, decay over the last 20%.
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_WSD, peak, 4, 10, 100, 0.1f, 0.2f) - peak / 2) < tol, "wsd warms up");
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_WSD, peak, 50, 10, 100, 0.1f, 0.2f) - peak) < tol, "wsd is stable mid-run");
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_WSD, peak, 80, 10, 100, 0.1f, 0.2f) - peak) < tol, "wsd decay starts at 80");
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_WSD, peak, 85, 10, 100, 0.1f, 0.2f) - 0.775f * peak) < tol, "wsd decays linearly");
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_WSD, peak, 100, 10, 100, 0.1f, 0.2f) - 0.1f * peak) < tol, "wsd ends at 10%%");
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_CONSTANT, peak, 99, 10, 100, 0.1f, 0) - peak) < tol, "constant stays at peak");
    TU_CHECK(fabsf(asa_lr_at(ASA_SCHED_CONSTANT, peak, 1, 10, 100, 0.1f, 0) - peak / 5) < tol, "constant warms up");
}

// One optimizer step on a copy-task batch drawn from r; returns the loss.
static float train_step(asa_model *m, asa_adamw *opt, asa_rng *r, int32_t *tok, int32_t *tgt) {
    asa_synthetic_copy(r, tok, tgt, 2, 32, 12);
    asa_model_zero_grad(m);
    float loss = asa_model_forward(m, tok, tgt, 2, 32);
    asa_model_backward(m, 1.0f);
    asa_adamw_step(opt, m, 1e-2f);
    return loss;
}

static void host_state(asa_model *m, asa_adamw *opt, float *p, float *mm, float *vv) {
    size_t bytes = m->layout.total * sizeof(float);
    asa_model_get_params(m, p);
    m->be->to_host(m->be, mm, opt->m, bytes);
    m->be->to_host(m->be, vv, opt->v, bytes);
}

static void fill_state(asa_train_state *st, int step) {
    memset(st, 0, sizeof *st);
    st->step = step;
    st->tokens_seen = 12345678901234567ULL;  // past 2^53: must not go through a double
    st->last_loss = 1.2345678f;
    st->elapsed_s = 3.25;
    st->train_pos.epoch = 3;
    st->train_pos.index = 7;
    asa_rng_seed(&st->train_rng, 99);
    snprintf(st->synthetic, sizeof st->synthetic, "copy");
    asa_train_options *o = &st->opts;
    asa_train_options_init(o);
    o->alphabet = 12, o->steps = 40, o->batch = 2, o->seq = 32, o->batch_tokens = 128;
    o->lr = 3e-3f, o->min_lr_ratio = 0.1f, o->warmup = 2, o->schedule = ASA_SCHED_WSD, o->decay_frac = 0.3f;
    o->weight_decay = 0.01f, o->clip = 1.0f, o->seed = 5, o->log_every = 10, o->val_every = 20;
    o->val_batches = 4, o->ckpt_every = 5, o->keep = 2, o->sample_every = 0;
}

static int count_ckpts(const char *run) {
    int n = 0;
    char p[512];
    for (int s = 0; s <= 10; s++) {
        snprintf(p, sizeof p, "%s/checkpoints/step-%07d", run, s);
        struct stat st;
        n += stat(p, &st) == 0;
    }
    return n;
}

static void test_checkpoints(void) {
    asa_config cfg;
    ASA_CHECK(asa_config_parse(TINY, "tiny", &cfg) == ASA_OK);
    char run[] = "/tmp/asa-test-trainer-XXXXXX";
    ASA_CHECK(mkdtemp(run) != NULL);
    asa_backend *be = asa_backend_cpu_new();
    asa_model a, b;
    asa_adamw oa, ob;
    asa_model_init(&a, &cfg, be, 1);
    asa_model_init(&b, &cfg, be, 2);
    asa_adamw_init(&oa, &a, asa_adamw_defaults());
    asa_adamw_init(&ob, &b, asa_adamw_defaults());
    size_t n = a.layout.total;
    int32_t tok[64], tgt[64];
    asa_rng r;
    asa_rng_seed(&r, 7);
    for (int i = 0; i < 2; i++) train_step(&a, &oa, &r, tok, tgt);

    asa_train_state st, back;
    fill_state(&st, 2);
    char *dir = NULL;
    int rc = asa_checkpoint_save(run, &a, &oa, NULL, &st, 2, &dir);
    TU_CHECK(rc == ASA_OK, "save: %s", asa_err_msg());
    char expect[512], *latest = NULL;
    snprintf(expect, sizeof expect, "%s/checkpoints/step-0000002", run);
    TU_CHECK(dir && !strcmp(dir, expect), "saved to %s", dir ? dir : "(null)");
    TU_CHECK(asa_checkpoint_latest(run, &latest) == ASA_OK && latest && !strcmp(latest, expect), "latest: %s",
             latest ? latest : asa_err_msg());

    rc = asa_checkpoint_load(expect, &b, &ob, &back);
    TU_CHECK(rc == ASA_OK, "load: %s", asa_err_msg());
    float *pa = malloc(n * 4), *ma = malloc(n * 4), *va = malloc(n * 4);
    float *pb = malloc(n * 4), *mb = malloc(n * 4), *vb = malloc(n * 4);
    host_state(&a, &oa, pa, ma, va);
    host_state(&b, &ob, pb, mb, vb);
    TU_CHECK(!memcmp(pa, pb, n * 4) && !memcmp(ma, mb, n * 4) && !memcmp(va, vb, n * 4),
             "parameters and moments are bit-identical after the round trip");
    TU_CHECK(ob.step == 2, "optimizer step %d", ob.step);
    TU_CHECK(back.step == 2 && back.tokens_seen == st.tokens_seen && back.last_loss == st.last_loss &&
                 back.elapsed_s == st.elapsed_s,
             "step, tokens, loss, time: %d %llu %.9g %g", back.step, (unsigned long long)back.tokens_seen,
             back.last_loss, back.elapsed_s);
    TU_CHECK(back.train_pos.epoch == 3 && back.train_pos.index == 7, "loader position");
    TU_CHECK(!memcmp(&back.train_rng, &st.train_rng, sizeof st.train_rng), "rng state");
    TU_CHECK(!strcmp(back.synthetic, "copy") && back.data_dir[0] == 0, "data source");
    const asa_train_options *x = &st.opts, *y = &back.opts;
    TU_CHECK(x->alphabet == y->alphabet && x->steps == y->steps && x->batch == y->batch && x->seq == y->seq &&
                 x->batch_tokens == y->batch_tokens && x->lr == y->lr && x->min_lr_ratio == y->min_lr_ratio &&
                 x->warmup == y->warmup && x->schedule == y->schedule && x->decay_frac == y->decay_frac &&
                 x->weight_decay == y->weight_decay && x->clip == y->clip && x->seed == y->seed &&
                 x->log_every == y->log_every && x->val_every == y->val_every && x->val_batches == y->val_batches &&
                 x->ckpt_every == y->ckpt_every && x->keep == y->keep && x->sample_every == y->sample_every,
             "options round trip");

    // Training continues identically from the loaded state.
    asa_rng ra, rb;
    asa_rng_seed(&ra, 11);
    asa_rng_seed(&rb, 11);
    int same = 1;
    for (int i = 0; i < 3; i++) {
        float la = train_step(&a, &oa, &ra, tok, tgt), lb = train_step(&b, &ob, &rb, tok, tgt);
        if (la != lb) same = 0;
    }
    host_state(&a, &oa, pa, ma, va);
    host_state(&b, &ob, pb, mb, vb);
    TU_CHECK(same && !memcmp(pa, pb, n * 4) && !memcmp(va, vb, n * 4), "training after a load is bit-identical");

    // Keep the last 2.
    for (int s = 3; s <= 5; s++) {
        st.step = s;
        oa.step = s;
        TU_CHECK(asa_checkpoint_save(run, &a, &oa, NULL, &st, 2, NULL) == ASA_OK, "save %d: %s", s, asa_err_msg());
    }
    snprintf(expect, sizeof expect, "%s/checkpoints/step-0000004", run);
    struct stat sb;
    TU_CHECK(count_ckpts(run) == 2 && stat(expect, &sb) == 0, "%d checkpoints kept, expected steps 4 and 5",
             count_ckpts(run));

    // A truncated model file: refused with its name, the model untouched.
    char model_path[600];
    snprintf(model_path, sizeof model_path, "%s/checkpoints/step-0000005/model.safetensors", run);
    ASA_CHECK(stat(model_path, &sb) == 0);
    ASA_CHECK(truncate(model_path, sb.st_size - 64) == 0);
    host_state(&b, &ob, pb, mb, vb);
    int step_before = ob.step;
    snprintf(expect, sizeof expect, "%s/checkpoints/step-0000005", run);
    rc = asa_checkpoint_load(expect, &b, &ob, &back);
    TU_CHECK(rc == ASA_ERR && strstr(asa_err_msg(), "step-0000005/model.safetensors"), "truncated model: %s",
             asa_err_msg());
    asa_model_get_params(&b, pa);
    TU_CHECK(!memcmp(pa, pb, n * 4) && ob.step == step_before, "a failed load left the model untouched");

    // A checkpoint of another config.
    asa_config other = cfg;
    other.window_size = 32;
    char diff[512];
    TU_CHECK(asa_config_diff(&cfg, &cfg, diff, sizeof diff) == 0, "a config differs from itself: %s", diff);
    TU_CHECK(asa_config_diff(&other, &cfg, diff, sizeof diff) == 1 && strstr(diff, "window_size (32 vs 16)"),
             "diff: %s", diff);
    asa_model c;
    asa_adamw oc;
    asa_model_init(&c, &other, be, 3);
    asa_adamw_init(&oc, &c, asa_adamw_defaults());
    snprintf(expect, sizeof expect, "%s/checkpoints/step-0000004", run);
    rc = asa_checkpoint_load(expect, &c, &oc, &back);
    TU_CHECK(rc == ASA_ERR && strstr(asa_err_msg(), "window_size"), "other config: %s", asa_err_msg());

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", run);
    TU_CHECK(system(cmd) == 0, "cleanup of %s", run);
    free(dir);
    free(latest);
    free(pa), free(ma), free(va), free(pb), free(mb), free(vb);
    asa_adamw_free(&oc, &c);
    asa_model_free(&c);
    asa_adamw_free(&oa, &a);
    asa_adamw_free(&ob, &b);
    asa_model_free(&a);
    asa_model_free(&b);
    asa_backend_free(be);
}

int main(void) {
    test_schedules();
    test_checkpoints();
    return tu_finish("test_trainer");
}
