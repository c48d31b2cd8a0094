// libFuzzer target: cli_load_model_dir, the model-directory reader of `asa generate` and `asa eval`. A
// real model directory of a tiny model is made once per process (in /dev/shm when there is one); the
// first byte of an input picks the file it replaces for one load, config.json (even) or model.safetensors
// (odd), so that each is checked against the other: a config that claims a larger model than the
// weights, weights that do not fit the config. model_dir.c lives with the CLI, so it is compiled in here.
#include "cli/model_dir.c"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "core/fileio.h"
#include "fuzz_util.h"

static const char *TINY =
    "{\"vocab_size\": 300, \"hidden_size\": 16, \"intermediate_size\": 32, \"num_hidden_layers\": 2,"
    " \"max_position_embeddings\": 32, \"layer_pattern\": \"GL\", \"num_heads\": 2, \"qk_nope_head_dim\": 4,"
    " \"qk_rope_head_dim\": 4, \"v_head_dim\": 4, \"kv_lora_rank\": 8, \"latent_groups\": 2, \"latent_dim\": 4,"
    " \"window_size\": 8, \"block_size\": 4, \"block_counts\": 3}";

static char dir[64], paths[3][96];  // config.json, model.safetensors, tokenizer.json
static char *orig[2];                // the valid config.json and model.safetensors
static size_t orig_len[2];
static asa_backend *be;

static void remove_dir(void) {
    for (int i = 0; i < 3; i++) unlink(paths[i]);
    rmdir(dir);
}

static void write_or_abort(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) abort();
}

static void setup(void) {
    snprintf(dir, sizeof dir, "%s/asa-fuzz-model-XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(dir)) abort();
    atexit(remove_dir);
    const char *names[3] = {"config.json", "model.safetensors", "tokenizer.json"};
    for (int i = 0; i < 3; i++) snprintf(paths[i], sizeof paths[i], "%s/%s", dir, names[i]);
    asa_config cfg;
    asa_param_layout layout;
    if (asa_config_parse(TINY, "tiny", &cfg) || asa_config_save(&cfg, paths[0])) abort();
    asa_layout_build(&cfg, &layout);
    float *w = calloc(layout.total, sizeof(float));
    for (size_t i = 0; i < layout.total; i++) w[i] = (float)(i % 7) * 0.01f;
    if (asa_weights_save(&layout, w, paths[1], ASA_ST_BF16)) abort();
    free(w);
    asa_layout_free(&layout);
    // A tokenizer of the 256 bytes and <|endoftext|>: trained on text with nothing to merge.
    const char *txt = fuzz_temp_file(0, "md", (const uint8_t *)"ab", 2);
    asa_tokenizer *t = NULL;
    if (asa_tokenizer_train(&txt, 1, 257, NULL, &t) || asa_tokenizer_save(t, paths[2])) abort();
    asa_tokenizer_free(t);
    for (int i = 0; i < 2; i++)
        if (asa_file_read_all(paths[i], (size_t)1 << 24, &orig[i], &orig_len[i])) abort();
    be = asa_backend_cpu_new();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!be) setup();
    if (size < 1) return 0;
    int k = data[0] & 1;
    write_or_abort(paths[k], data + 1, size - 1);
    asa_model m;
    asa_tokenizer *tok = NULL;
    if (cli_load_model_dir(dir, be, &m, &tok) == ASA_OK) {
        if (!tok) abort();
        asa_model_free(&m);
        asa_tokenizer_free(tok);
    } else if (tok) {
        abort();  // the tokenizer is freed on every error path
    }
    write_or_abort(paths[k], orig[k], orig_len[k]);
    return 0;
}
