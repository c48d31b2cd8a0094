// `asa prepare`: text files (or directories) -> token shards with a train/val split, tokenised on all
// cores. Output: OUT/train-NNNNN.shard, OUT/val-NNNNN.shard (src/data/shard.h), OUT/tokenizer.json.
//
// Each file is one document: <|endoftext|> (when the tokenizer has it) separates documents. The last
// --val-fraction of every file's bytes goes to the validation split, so both splits see every source.
// Files are cut into ~1 MB chunks at points where cutting does not change the encoding
// (asa_tokenizer_cut_point), encoded in parallel and written in order: the shards are exactly the
// encoding of each part and do not depend on the thread count.
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "asa/tokenizer.h"
#include "cli/cli.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/fileio.h"
#include "data/shard.h"

#define CHUNK_BYTES (1u << 20)
#define MAX_FILE_BYTES ((size_t)4 << 30)

typedef struct {
    int file, is_val;
    size_t begin, end;  // byte range within the file
    asa_token_buf ids;
} chunk;

static void usage(void) {
    printf("usage: asa prepare -o OUT (--tokenizer tokenizer.json | --tiktoken FILE) [options] INPUT...\n"
           "  INPUT                 text files or directories (walked recursively, hidden entries skipped)\n"
           "  --val-fraction F      share of each file for validation (default 0.01, 0 to 0.5)\n"
           "  --shard-tokens N      tokens per shard file (default 100000000)\n"
           "  writes OUT/train-00000.shard ..., OUT/val-00000.shard ..., OUT/tokenizer.json\n");
}

// Appends tokens to a split's shards, starting a new shard file every `limit` tokens.
typedef struct {
    const char *out_dir, *split;
    uint32_t vocab;
    uint64_t limit, in_shard, total;
    int shard, open;
    asa_shard_writer w;
} split_writer;

static int split_append(split_writer *sw, const int32_t *ids, size_t n) {
    while (n > 0) {
        if (!sw->open) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s-%05d.shard", sw->out_dir, sw->split, sw->shard);
            if (asa_shard_writer_open(&sw->w, path, 0, sw->vocab) != ASA_OK) return ASA_ERR;
            sw->open = 1;
            sw->in_shard = 0;
        }
        size_t take = n;
        if (take > sw->limit - sw->in_shard) take = (size_t)(sw->limit - sw->in_shard);
        if (asa_shard_writer_append(&sw->w, ids, take) != ASA_OK) return ASA_ERR;
        ids += take;
        n -= take;
        sw->in_shard += take;
        sw->total += take;
        if (sw->in_shard == sw->limit) {
            if (asa_shard_writer_commit(&sw->w) != ASA_OK) return ASA_ERR;
            sw->open = 0;
            sw->shard++;
        }
    }
    return ASA_OK;
}

// Writes the chunks of one split in file order, <|endoftext|> after each file's part.
static int write_split(const char *out_dir, const char *split, chunk *chunks, int nchunks, int want_val, int32_t eot,
                       int nfiles, int vocab, long shard_tokens, uint64_t *total) {
    split_writer sw = {.out_dir = out_dir, .split = split, .vocab = (uint32_t)vocab, .limit = (uint64_t)shard_tokens};
    for (int f = 0; f < nfiles; f++) {
        int any = 0;
        for (int c = 0; c < nchunks; c++) {
            if (chunks[c].file != f || chunks[c].is_val != want_val) continue;
            if (split_append(&sw, chunks[c].ids.ids, chunks[c].ids.n) != ASA_OK) return ASA_ERR;
            any = 1;
        }
        if (any && eot >= 0 && split_append(&sw, &eot, 1) != ASA_OK) return ASA_ERR;
    }
    if (sw.open && asa_shard_writer_commit(&sw.w) != ASA_OK) return ASA_ERR;
    *total = sw.total;
    return ASA_OK;
}

int cmd_prepare(int argc, char **argv) {
    const char *out_dir = NULL, *tok_path = NULL, *tiktoken_path = NULL;
    float val_fraction = 0.01f;
    int shard_tokens = 100000000;
    char **inputs = asa_malloc(sizeof(char *) * (size_t)(argc + 1));
    int ninputs = 0, status = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            free(inputs);
            return 0;
        }
        if (a[0] != '-') {
            inputs[ninputs++] = argv[i];
            continue;
        }
        if (!(v = cli_value("prepare", argc, argv, &i))) goto bad_args;
        if (!strcmp(a, "-o") || !strcmp(a, "--out")) out_dir = v;
        else if (!strcmp(a, "--tokenizer")) tok_path = v;
        else if (!strcmp(a, "--tiktoken")) tiktoken_path = v;
        else if (!strcmp(a, "--val-fraction")) {
            if (cli_parse_float("prepare", a, v, 0, 0.5, &val_fraction)) goto bad_args;
        } else if (!strcmp(a, "--shard-tokens")) {
            if (cli_parse_int("prepare", a, v, 1024, 2000000000, &shard_tokens)) goto bad_args;
        } else {
            fprintf(stderr, "asa prepare: unknown option '%s' (see asa prepare --help)\n", a);
            goto bad_args;
        }
    }
    if (!out_dir || ninputs == 0 || (!tok_path == !tiktoken_path)) {
        fprintf(stderr, "asa prepare: needs -o OUT, exactly one of --tokenizer/--tiktoken, and input files\n");
        goto bad_args;
    }

    asa_tokenizer *tok = NULL;
    if ((tok_path ? asa_tokenizer_load(tok_path, &tok) : asa_tokenizer_load_tiktoken(tiktoken_path, &tok)) != ASA_OK) {
        fprintf(stderr, "asa prepare: %s\n", asa_err_msg());
        free(inputs);
        return 1;
    }
    char **files = NULL;
    int nfiles = 0;
    char **texts = NULL;
    size_t *lens = NULL;
    chunk *chunks = NULL;
    int nchunks = 0;
    if (cli_collect_inputs("prepare", inputs, ninputs, &files, &nfiles) != 0) goto done;
    texts = asa_calloc((size_t)nfiles, sizeof(char *));
    lens = asa_calloc((size_t)nfiles, sizeof(size_t));
    int64_t total_bytes = 0;
    int cap = 0;
    for (int f = 0; f < nfiles; f++) {
        if (asa_file_read_all(files[f], MAX_FILE_BYTES, &texts[f], &lens[f]) != ASA_OK) {
            fprintf(stderr, "asa prepare: %s\n", asa_err_msg());
            goto done;
        }
        if (lens[f] == 0) {
            fprintf(stderr, "asa prepare: %s: empty file\n", files[f]);
            goto done;
        }
        if (memchr(texts[f], 0, lens[f])) {
            fprintf(stderr, "asa prepare: %s: contains NUL bytes, so it is not a text file\n", files[f]);
            goto done;
        }
        total_bytes += (int64_t)lens[f];
        size_t val_begin = lens[f] - (size_t)((double)lens[f] * val_fraction);
        if (val_begin < lens[f]) val_begin = asa_tokenizer_cut_point(texts[f], lens[f], val_begin);
        for (int part = 0; part < 2; part++) {
            size_t b = part ? val_begin : 0, e = part ? lens[f] : val_begin;
            while (b < e) {
                size_t cut = e - b <= CHUNK_BYTES ? e : asa_tokenizer_cut_point(texts[f], e, b + CHUNK_BYTES);
                if (nchunks == cap) {
                    cap = cap ? 2 * cap : 64;
                    chunk *nc = realloc(chunks, sizeof(chunk) * (size_t)cap);
                    if (!nc) asa_fatal("out of memory");
                    chunks = nc;
                }
                chunks[nchunks++] = (chunk){f, part, b, cut, {0}};
                b = cut;
            }
        }
    }
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "asa prepare: %s: cannot create directory: %s\n", out_dir, strerror(errno));
        goto done;
    }

    cli_progress prog;
    cli_progress_start(&prog, "encode", "MB", total_bytes);
    int64_t bytes_done = 0;
    int failed = 0;
    double t0 = cli_now();
#pragma omp parallel
    {
        asa_encoder *enc = asa_encoder_new(tok);
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < nchunks; c++) {
            chunk *ch = &chunks[c];
            if (asa_encoder_encode(enc, texts[ch->file] + ch->begin, ch->end - ch->begin, 0, &ch->ids) != ASA_OK) {
#pragma omp atomic write
                failed = 1;
            }
            int64_t d;
#pragma omp atomic capture
            d = bytes_done += (int64_t)(ch->end - ch->begin);
            if (omp_get_thread_num() == 0) cli_progress_update(&prog, d);
        }
        asa_encoder_free(enc);
    }
    cli_progress_finish(&prog, total_bytes);
    double enc_s = cli_now() - t0;
    if (failed) {
        fprintf(stderr, "asa prepare: encoding failed: %s\n", asa_err_msg());
        goto done;
    }
    int32_t eot = asa_tokenizer_eot(tok);
    int vocab = asa_tokenizer_vocab_size(tok);
    uint64_t ntrain = 0, nval = 0;
    if (write_split(out_dir, "train", chunks, nchunks, 0, eot, nfiles, vocab, shard_tokens, &ntrain) != ASA_OK ||
        write_split(out_dir, "val", chunks, nchunks, 1, eot, nfiles, vocab, shard_tokens, &nval) != ASA_OK) {
        fprintf(stderr, "asa prepare: %s\n", asa_err_msg());
        goto done;
    }
    char tpath[4096];
    snprintf(tpath, sizeof tpath, "%s/tokenizer.json", out_dir);
    if (asa_tokenizer_save(tok, tpath) != ASA_OK) {
        fprintf(stderr, "asa prepare: %s\n", asa_err_msg());
        goto done;
    }
    printf("prepared %d file%s, %.2f MB: %llu train tokens, %llu val tokens (%.2f bytes/token, vocab %d), "
           "encoded at %.2f MB/s on %d threads\n",
           nfiles, nfiles == 1 ? "" : "s", total_bytes / 1e6, (unsigned long long)ntrain, (unsigned long long)nval,
           (double)total_bytes / (double)(ntrain + nval ? ntrain + nval : 1), vocab, total_bytes / 1e6 / enc_s,
           omp_get_max_threads());
    printf("wrote %s/train-*.shard, %s/val-*.shard, %s\n", out_dir, out_dir, tpath);
    status = 0;
done:
    for (int c = 0; c < nchunks; c++) asa_token_buf_free(&chunks[c].ids);
    free(chunks);
    for (int f = 0; texts && f < nfiles; f++) free(texts[f]);
    free(texts);
    free(lens);
    if (files) cli_free_inputs(files, nfiles);
    asa_tokenizer_free(tok);
    free(inputs);
    return status;
bad_args:
    free(inputs);
    return 2;
}
