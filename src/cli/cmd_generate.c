// `asa generate`: load a model directory (config.json, model.safetensors, tokenizer.json), feed the
// prompt through the KV-cache decoder one token at a time, then sample until --max-tokens or
// <|endoftext|>, printing the text as it is produced, and report prompt and generation speed.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asa/tokenizer.h"
#include "backend/backend.h"
#include "cli/cli.h"
#include "cli/device.h"
#include "cli/model_dir.h"
#include "core/error.h"
#include "infer/decode.h"
#include "infer/generate.h"
#include "infer/sampler.h"
#include "model/model.h"

static void usage(FILE *f) {
    fprintf(f, "usage: asa generate --model DIR --prompt TEXT [--max-tokens N] [--temperature X] [--top-k K]\n"
               "                    [--top-p P] [--seed S] [--greedy] [--device D] [--precision P]\n"
               "  DIR holds config.json, model.safetensors and tokenizer.json, or is a run directory of asa train\n"
               "  (its newest checkpoint is used). The prompt is fed through the\n"
               "  KV cache token by token, then tokens are sampled until N of them (default 128) or\n"
               "  <|endoftext|>. The generated text goes to stdout as it is produced; the prompt and generation\n"
               "  speeds (tokens/s) to stderr.\n"
               "  --temperature X  softmax temperature (default 1; 0 = greedy)\n"
               "  --top-k K        sample among the K most probable tokens (default 0 = all)\n"
               "  --top-p P        nucleus: the most probable tokens up to probability P (default 1 = all)\n"
               "  --seed S         sampling seed (default 0)\n"
               "  --greedy         always the most probable token\n"
               "  --device D       cpu | cuda | cuda:N (default: $ASA_DEVICE if set, else cuda when this build\n"
               "                   has the CUDA backend and a GPU is present, else cpu)\n"
               "  --precision P    bf16 | tf32 | fp32 (default bf16 on a GPU; the CPU has fp32 only): see\n"
               "                   `asa train --help`; bf16 also halves the KV cache\n");
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
    const char *dir = NULL, *prompt = NULL, *device = NULL, *precision = NULL;
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
        } else if (!strcmp(a, "--device")) {
            if (!(device = cli_value("generate", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--precision")) {
            if (!(precision = cli_value("generate", argc, argv, &i))) return 2;
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

    asa_backend *be = cli_backend_new_precision("generate", device, precision);
    if (!be) return 1;
    asa_model m;
    asa_tokenizer *tok = NULL;
    if (cli_load_model_dir(dir, be, &m, &tok) != ASA_OK) {
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
