// `asa generate`: load a model directory (config.json, model.safetensors, tokenizer.json), feed the
// prompt through the KV-cache decoder one token at a time, then sample until --max-tokens or
// <|endoftext|>, printing the text as it is produced, and report prompt and generation speed.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "asa/config.h"
#include "asa/tokenizer.h"
#include "backend/backend.h"
#include "cli/cli.h"
#include "core/error.h"
#include "infer/decode.h"
#include "infer/generate.h"
#include "infer/sampler.h"
#include "model/model.h"
#include "model/weights_io.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: asa generate --model DIR --prompt TEXT [--max-tokens N] [--temperature X] [--top-k K]\n"
               "                    [--top-p P] [--seed S] [--greedy]\n"
               "  DIR holds config.json, model.safetensors and tokenizer.json, or is a run directory of asa train\n"
               "  (its newest checkpoint is used). The prompt is fed through the\n"
               "  KV cache token by token, then tokens are sampled until N of them (default 128) or\n"
               "  <|endoftext|>. The generated text goes to stdout as it is produced; the prompt and generation\n"
               "  speeds (tokens/s) to stderr.\n"
               "  --temperature X  softmax temperature (default 1; 0 = greedy)\n"
               "  --top-k K        sample among the K most probable tokens (default 0 = all)\n"
               "  --top-p P        nucleus: the most probable tokens up to probability P (default 1 = all)\n"
               "  --seed S         sampling seed (default 0)\n"
               "  --greedy         always the most probable token\n");
}

// path = dir/name, which must be a readable regular file.
static int model_file(const char *dir, const char *name, char *path, size_t cap) {
    struct stat st;
    if ((size_t)snprintf(path, cap, "%s/%s", dir, name) >= cap) return asa_err_set("%s: path too long", dir);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return asa_err_set("%s: no such file", path);
    return ASA_OK;
}

// Config, weights and tokenizer of a model directory, or of the newest checkpoint of a run directory;
// the model lives on be.
static int load_model(const char *dir, asa_backend *be, asa_model *m, asa_tokenizer **tok) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return asa_err_set("%s: not a directory", dir);
    char cfg_path[4096], w_path[4096], tok_path[4096], latest_path[4096];
    snprintf(w_path, sizeof w_path, "%s/model.safetensors", dir);
    snprintf(latest_path, sizeof latest_path, "%s/checkpoints/latest", dir);
    if (stat(w_path, &st) != 0 && stat(latest_path, &st) == 0) {  // a run directory
        char *ckpt = NULL;
        if (asa_checkpoint_latest(dir, &ckpt) != ASA_OK) return ASA_ERR;
        int rc = load_model(ckpt, be, m, tok);
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

// Writes a token's bytes to stdout at once (the text appears as it is produced).
static void emit(void *user, int32_t id) {
    const asa_tokenizer *tok = user;
    size_t len;
    const char *bytes = asa_tokenizer_token(tok, id, &len);
    if (bytes) fwrite(bytes, 1, len, stdout);
    fflush(stdout);
}

int cmd_generate(int argc, char **argv) {
    const char *dir = NULL, *prompt = NULL;
    int max_tokens = 128, seed = 0;
    asa_sampler_config sc = asa_sampler_defaults();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--greedy")) {
            sc.greedy = 1;
        } else if (!strcmp(a, "--model")) {
            if (!(dir = cli_value("generate", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--prompt")) {
            if (!(prompt = cli_value("generate", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--max-tokens")) {
            if (!(v = cli_value("generate", argc, argv, &i)) || cli_parse_int("generate", a, v, 0, 1 << 24, &max_tokens)) return 2;
        } else if (!strcmp(a, "--temperature")) {
            if (!(v = cli_value("generate", argc, argv, &i)) || cli_parse_float("generate", a, v, 0.0, 1e6, &sc.temperature)) return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (!(v = cli_value("generate", argc, argv, &i)) || cli_parse_int("generate", a, v, 0, 1 << 30, &sc.top_k)) return 2;
        } else if (!strcmp(a, "--top-p")) {
            if (!(v = cli_value("generate", argc, argv, &i)) || cli_parse_float("generate", a, v, 1e-9, 1.0, &sc.top_p)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!(v = cli_value("generate", argc, argv, &i)) || cli_parse_int("generate", a, v, 0, 2147483647L, &seed)) return 2;
        } else {
            fprintf(stderr, "asa generate: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!dir || !prompt) {
        fprintf(stderr, "asa generate: --model DIR and --prompt TEXT are required\n");
        usage(stderr);
        return 2;
    }

    asa_backend *be = asa_backend_cpu_new();
    asa_model m;
    asa_tokenizer *tok = NULL;
    if (load_model(dir, be, &m, &tok) != ASA_OK) {
        fprintf(stderr, "asa generate: %s\n", asa_err_msg());
        asa_backend_free(be);
        return 1;
    }
    int rc = 1;
    asa_token_buf ids = {0};
    asa_sampler sampler;
    asa_decoder dec;
    memset(&dec, 0, sizeof dec);
    memset(&sampler, 0, sizeof sampler);
    // Padding ids past the tokenizer's vocabulary are never text: they are not sampled.
    const int V = asa_tokenizer_vocab_size(tok), eot = asa_tokenizer_eot(tok);
    if (asa_sampler_init(&sampler, &sc, V, (uint64_t)seed) != ASA_OK ||
        asa_tokenizer_encode(tok, prompt, strlen(prompt), 0, &ids) != ASA_OK) {
        fprintf(stderr, "asa generate: %s\n", asa_err_msg());
        goto done;
    }
    if (ids.n == 0) {  // an empty prompt starts from <|endoftext|>, as GPT-2 does
        if (eot < 0) {
            fprintf(stderr, "asa generate: the prompt is empty and the tokenizer has no <|endoftext|> to start from\n");
            goto done;
        }
        asa_token_buf_push(&ids, eot);
    }
    const int n_prompt = (int)ids.n;
    asa_decoder_init(&dec, &m, 1, n_prompt + (max_tokens > 0 ? max_tokens - 1 : 0));
    asa_generate_stats st;
    if (asa_generate(&dec, &sampler, ids.ids, n_prompt, max_tokens, eot, emit, tok, &st) != ASA_OK) {
        fprintf(stderr, "\nasa generate: %s\n", asa_err_msg());
        goto done;
    }
    printf("\n");
    fflush(stdout);
    // The first generated token comes from the prompt's last step; each later one costs one step.
    fprintf(stderr, "prompt: %d tokens, %.1f tokens/s; generation: %d tokens, %.1f tokens/s\n", st.n_prompt,
            st.n_prompt / (st.prompt_s > 1e-9 ? st.prompt_s : 1e-9), st.n_gen,
            st.n_gen / (st.gen_s > 1e-9 ? st.gen_s : 1e-9));
    rc = 0;
done:
    asa_decoder_free(&dec);
    asa_sampler_free(&sampler);
    asa_token_buf_free(&ids);
    asa_tokenizer_free(tok);
    asa_model_free(&m);
    asa_backend_free(be);
    return rc;
}
