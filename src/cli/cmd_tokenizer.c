// `asa tokenizer train|encode`: train a byte-level BPE tokenizer on text files; show how text encodes.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asa/tokenizer.h"
#include "cli/cli.h"
#include "cli/progress.h"
#include "core/error.h"

static void usage(void) {
    printf("usage: asa tokenizer train --vocab-size N -o tokenizer.json INPUT...\n"
           "       asa tokenizer encode (--tokenizer tokenizer.json | --tiktoken FILE) TEXT\n"
           "  train: byte-level BPE (GPT-2 pre-tokenizer) on text files or directories; the vocabulary holds\n"
           "         the 256 bytes, the merges and <|endoftext|>\n"
           "  encode: prints the ids and the pieces of TEXT\n");
}

typedef struct {
    cli_progress bars[2];  // read, merge
    int started[2], finished[2];
} train_progress;

static void on_progress(void *ctx, const char *stage, int64_t done, int64_t total) {
    train_progress *tp = ctx;
    int k = strcmp(stage, "read") == 0 ? 0 : 1;
    if (tp->finished[k]) return;
    if (!tp->started[k]) {
        cli_progress_start(&tp->bars[k], k ? "merge" : "read ", k ? "merges" : "MB", total);
        tp->started[k] = 1;
    }
    if (done >= total) {
        cli_progress_finish(&tp->bars[k], done);
        tp->finished[k] = 1;
    } else {
        cli_progress_update(&tp->bars[k], done);
    }
}

static int tokenizer_train(int argc, char **argv) {
    int vocab = 0;
    const char *out = NULL;
    char **inputs = asa_malloc(sizeof(char *) * (size_t)(argc + 1));
    int ninputs = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (a[0] != '-') {
            inputs[ninputs++] = argv[i];
            continue;
        }
        if (!(v = cli_value("tokenizer train", argc, argv, &i))) goto bad;
        if (!strcmp(a, "--vocab-size")) {
            if (cli_parse_int("tokenizer train", a, v, 257, 1 << 24, &vocab)) goto bad;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = v;
        else {
            fprintf(stderr, "asa tokenizer train: unknown option '%s'\n", a);
            goto bad;
        }
    }
    if (!vocab || !out || !ninputs) {
        fprintf(stderr, "asa tokenizer train: needs --vocab-size N, -o FILE and input files\n");
        goto bad;
    }
    char **files;
    int nfiles;
    if (cli_collect_inputs("tokenizer train", inputs, ninputs, &files, &nfiles) != 0) {
        free(inputs);
        return 1;
    }
    train_progress tp = {0};
    asa_tokenizer_train_opts opts = {.special_token = NULL, .progress = on_progress, .progress_ctx = &tp};
    asa_tokenizer *tok = NULL;
    double t0 = cli_now();
    int rc = asa_tokenizer_train((const char *const *)files, nfiles, vocab, &opts, &tok);
    double el = cli_now() - t0;
    if (rc == ASA_OK) rc = asa_tokenizer_save(tok, out);
    if (rc != ASA_OK) fprintf(stderr, "asa tokenizer train: %s\n", asa_err_msg());
    else
        printf("trained %d tokens (%d merges) in %.1f s; wrote %s\n", asa_tokenizer_vocab_size(tok),
               asa_tokenizer_num_merges(tok), el, out);
    asa_tokenizer_free(tok);
    cli_free_inputs(files, nfiles);
    free(inputs);
    return rc == ASA_OK ? 0 : 1;
bad:
    free(inputs);
    return 2;
}

static int tokenizer_encode(int argc, char **argv) {
    const char *tok_path = NULL, *tik = NULL, *text = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (a[0] != '-' || !strcmp(a, "-")) {
            text = a;
            continue;
        }
        if (!(v = cli_value("tokenizer encode", argc, argv, &i))) return 2;
        if (!strcmp(a, "--tokenizer")) tok_path = v;
        else if (!strcmp(a, "--tiktoken")) tik = v;
        else {
            fprintf(stderr, "asa tokenizer encode: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (!text || (!tok_path == !tik)) {
        fprintf(stderr, "asa tokenizer encode: needs one of --tokenizer/--tiktoken and a TEXT\n");
        return 2;
    }
    asa_tokenizer *tok;
    if ((tok_path ? asa_tokenizer_load(tok_path, &tok) : asa_tokenizer_load_tiktoken(tik, &tok)) != ASA_OK) {
        fprintf(stderr, "asa tokenizer encode: %s\n", asa_err_msg());
        return 1;
    }
    asa_token_buf ids = {0};
    int rc = asa_tokenizer_encode(tok, text, strlen(text), ASA_ENCODE_SPECIAL, &ids);
    if (rc == ASA_OK) {
        printf("%zu tokens:", ids.n);
        for (size_t i = 0; i < ids.n; i++) printf(" %d", ids.ids[i]);
        printf("\npieces:");
        for (size_t i = 0; i < ids.n; i++) {
            size_t len;
            const char *t = asa_tokenizer_token(tok, ids.ids[i], &len);
            printf(" [%.*s]", (int)len, t);
        }
        printf("\n");
    } else {
        fprintf(stderr, "asa tokenizer encode: %s\n", asa_err_msg());
    }
    asa_token_buf_free(&ids);
    asa_tokenizer_free(tok);
    return rc == ASA_OK ? 0 : 1;
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "train")) return tokenizer_train(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "encode")) return tokenizer_encode(argc, argv);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage();
        return 0;
    }
    usage();
    return 2;
}
