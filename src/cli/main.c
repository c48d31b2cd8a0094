// `asa`: one command, one subcommand per job.
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: asa <command> [options]\n"
            "\n"
            "commands:\n"
            "  info    --config FILE [--context T]   parameters and KV-cache bytes of a model config\n"
            "  train   --config FILE --synthetic copy [options]   train on a built-in synthetic task\n"
            "  bench   cpu [--config FILE] [--seq T] [--batch B]  training throughput on the CPU\n"
            "  bench   attn [--kind N|G|F|W] [--seq T] [--decode] one layer's attention ops, timed op by op\n"
            "  generate --model DIR --prompt TEXT [options]     sample text from a model with the KV cache\n"
            "  tokenizer train --vocab-size N -o FILE INPUT...   train a byte-level BPE tokenizer\n"
            "  tokenizer encode --tokenizer FILE TEXT            show how a text encodes\n"
            "  prepare -o OUT --tokenizer FILE INPUT...          text -> train/val token shards\n"
            "  eval TASK --model DIR [--data FILE] [options]     ppl, multiple choice, lambada, S-NIAH\n"
            "\n"
            "run 'asa <command> --help' for the options of one command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "prepare")) return cmd_prepare(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenizer")) return cmd_tokenizer(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
    fprintf(stderr, "asa: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}

int cli_parse_int(const char *cmd, const char *flag, const char *val, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end) {
        fprintf(stderr, "asa %s: %s: '%s' is not an integer\n", cmd, flag, val);
        return -1;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "asa %s: %s: %ld is out of range [%ld, %ld]\n", cmd, flag, v, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cli_parse_float(const char *cmd, const char *flag, const char *val, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !isfinite(v)) {
        fprintf(stderr, "asa %s: %s: '%s' is not a number\n", cmd, flag, val);
        return -1;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "asa %s: %s: %g is out of range [%g, %g]\n", cmd, flag, v, lo, hi);
        return -1;
    }
    *out = (float)v;
    return 0;
}

const char *cli_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "asa %s: %s needs a value\n", cmd, argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

const char *cli_human(double x, char *buf, int n) {
    if (x >= 1e9) snprintf(buf, n, "%.2fB", x / 1e9);
    else if (x >= 1e6) snprintf(buf, n, "%.2fM", x / 1e6);
    else if (x >= 1e3) snprintf(buf, n, "%.2fK", x / 1e3);
    else snprintf(buf, n, "%.0f", x);
    return buf;
}

const char *cli_bytes(double b, char *buf, int n) {
    if (b >= 1024.0 * 1024 * 1024) snprintf(buf, n, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024) snprintf(buf, n, "%.2f MiB", b / (1024.0 * 1024));
    else if (b >= 1024) snprintf(buf, n, "%.2f KiB", b / 1024);
    else snprintf(buf, n, "%.0f B", b);
    return buf;
}
