// Model and run directories: the files a model directory must hold, and the newest checkpoint of a run.
#include "cli/model_dir.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "asa/config.h"
#include "core/error.h"
#include "model/weights_io.h"
#include "train/trainer.h"

// path = dir/name, which must be a readable regular file.
static int model_file(const char *dir, const char *name, char *path, size_t cap) {
    struct stat st;
    if ((size_t)snprintf(path, cap, "%s/%s", dir, name) >= cap) return asa_err_set("%s: path too long", dir);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return asa_err_set("%s: no such file", path);
    return ASA_OK;
}

// Config, weights and tokenizer of a model directory, or of the newest checkpoint of a run directory;
// the model lives on be.
int cli_load_model_dir(const char *dir, asa_backend *be, asa_model *m, asa_tokenizer **tok) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return asa_err_set("%s: not a directory", dir);
    char cfg_path[4096], w_path[4096], tok_path[4096], latest_path[4096];
    snprintf(w_path, sizeof w_path, "%s/model.safetensors", dir);
    snprintf(latest_path, sizeof latest_path, "%s/checkpoints/latest", dir);
    if (stat(w_path, &st) != 0 && stat(latest_path, &st) == 0) {  // a run directory
        char *ckpt = NULL;
        if (asa_checkpoint_latest(dir, &ckpt) != ASA_OK) return ASA_ERR;
        int rc = cli_load_model_dir(ckpt, be, m, tok);
        free(ckpt);
        return rc;
    }
    if (model_file(dir, "config.json", cfg_path, sizeof cfg_path) || model_file(dir, "model.safetensors", w_path, sizeof w_path) ||
        model_file(dir, "tokenizer.json", tok_path, sizeof tok_path))
        return ASA_ERR;
    asa_config cfg;
    if (asa_config_load(cfg_path, &cfg) != ASA_OK) return ASA_ERR;
    if (asa_tokenizer_load(tok_path, tok) != ASA_OK) return ASA_ERR;
    if (asa_tokenizer_vocab_size(*tok) > cfg.vocab_size) {
        int tv = asa_tokenizer_vocab_size(*tok);
        asa_tokenizer_free(*tok);
        *tok = NULL;
        return asa_err_set("%s: %d tokens do not fit the model's vocab_size %d (%s)", tok_path, tv, cfg.vocab_size, cfg_path);
    }
    asa_param_layout layout;
    asa_layout_build(&cfg, &layout);
    // config.json sizes the allocations below: one that declares a model larger than the weights file
    // could hold (2 bytes a parameter, BF16 or F16, is the least the reader takes) is refused first.
    if (stat(w_path, &st) == 0 && (uint64_t)st.st_size / 2 < layout.total) {
        size_t total = layout.total;
        asa_layout_free(&layout);
        asa_tokenizer_free(*tok);
        *tok = NULL;
        return asa_err_set("%s: %lld bytes cannot hold the %zu parameters that %s declares (2 bytes each at least)",
                           w_path, (long long)st.st_size, total, cfg_path);
    }
    float *host = asa_malloc(sizeof(float) * layout.total);
    int rc = asa_weights_load(&layout, host, w_path);
    asa_layout_free(&layout);
    if (rc != ASA_OK) {
        free(host);
        asa_tokenizer_free(*tok);
        *tok = NULL;
        return ASA_ERR;  // the message names the file and the tensor that does not fit the config
    }
    asa_model_init_inference(m, &cfg, be);
    asa_model_set_params(m, host);
    free(host);
    return ASA_OK;
}
