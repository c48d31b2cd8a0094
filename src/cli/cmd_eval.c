// `asa eval TASK --model DIR`: perplexity, the lm-evaluation-harness multiple-choice tasks, LAMBADA and
// S-NIAH-1/2/3 for a model directory or run directory; prints a table and writes the results as JSON.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "asa/tokenizer.h"
#include "backend/backend.h"
#include "cli/cli.h"
#include "cli/device.h"
#include "cli/model_dir.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/rng.h"
#include "data/shard.h"
#include "eval/lambada.h"
#include "eval/mc.h"
#include "eval/niah.h"
#include "eval/ppl.h"
#include "eval/scorer.h"
#include "model/model.h"

#define EVAL_MAX_LENGTHS 16

static void usage(FILE *f) {
    fprintf(f,
            "usage: asa eval TASK --model DIR [--data FILE] [--limit N] [--seed S] [--batch B] [--context T]\n"
            "                [--out FILE] [options]\n"
            "  TASK: ppl | piqa | hellaswag | winogrande | arc_easy | arc_challenge | boolq | lambada |\n"
            "        niah (S-NIAH-1, and 2 and 3 when --haystack is given) | niah_single_1 | niah_single_2 | niah_single_3\n"
            "  DIR holds config.json, model.safetensors and tokenizer.json, or is a run directory of asa train.\n"
            "  --data FILE      the task's data: a token shard or a raw text file (ppl); the dataset's jsonl (PIQA,\n"
            "                   WinoGrande, ARC, BoolQ, HellaSwag, also MosaicML and llama.cpp layouts); LAMBADA jsonl\n"
            "  --labels FILE    labels file for PIQA's jsonl (one 0/1 per line)\n"
            "  --limit N        the first N examples (ppl: N windows; niah: N samples per length)\n"
            "  --batch B        sequences per forward pass (default 4)\n"
            "  --context T      context length (default: the model's max_position_embeddings); longer contexts\n"
            "                   lose tokens on the left\n"
            "  --stride S       ppl: windows of T tokens moving by S, each token scored once (default S = T)\n"
            "  --lengths LIST   niah: total lengths in tokens (default 2048,4096,8192)\n"
            "  --depths N       niah: needle depths swept evenly over 0..100%% (default 10)\n"
            "  --answer-tokens N  niah: generation budget inside each length (default 32)\n"
            "  --haystack FILE  niah: long text for S-NIAH-2 and -3\n"
            "  --seed S         niah: keys and values (default 0)\n"
            "  --out FILE       results as JSON (default eval-TASK.json); niah also writes FILE.svg\n" CLI_DEVICE_HELP);
}

typedef struct {
    char task[32], metric[48];
    double value, se;
    int has_se;
    int64_t n;
} result_row;

typedef struct {
    result_row r[64];
    int n;
} results;

static void add(results *rs, const char *task, const char *metric, double value, double se, int has_se, int64_t n) {
    if (rs->n == (int)(sizeof rs->r / sizeof *rs->r)) return;
    result_row *r = &rs->r[rs->n++];
    snprintf(r->task, sizeof r->task, "%s", task);
    snprintf(r->metric, sizeof r->metric, "%s", metric);
    r->value = value;
    r->se = se;
    r->has_se = has_se;
    r->n = n;
}

static void print_table(const results *rs) {
    printf("%-16s %-22s %12s %10s %9s\n", "task", "metric", "value", "stderr", "n");
    for (int i = 0; i < rs->n; i++) {
        const result_row *r = &rs->r[i];
        char se[32] = "";
        if (r->has_se) snprintf(se, sizeof se, "%.4f", r->se);
        printf("%-16s %-22s %12.4f %10s %9lld\n", r->task, r->metric, r->value, se, (long long)r->n);
    }
}

static int write_json(const char *path, const results *rs, const char *model, int context) {
    char date[32];
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < rs->n; i++) {
        const result_row *r = &rs->r[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "task", r->task);
        cJSON_AddStringToObject(o, "metric", r->metric);
        cJSON_AddNumberToObject(o, "value", r->value);
        if (r->has_se) cJSON_AddNumberToObject(o, "stderr", r->se);
        else cJSON_AddNullToObject(o, "stderr");
        cJSON_AddNumberToObject(o, "n", (double)r->n);
        cJSON_AddStringToObject(o, "model", model);
        cJSON_AddNumberToObject(o, "context_length", context);
        cJSON_AddStringToObject(o, "date", date);
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(arr);
    cJSON_Delete(arr);
    size_t len = strlen(text);
    char *withnl = asa_malloc(len + 2);
    memcpy(withnl, text, len);
    withnl[len] = '\n';
    withnl[len + 1] = 0;
    free(text);
    int rc = asa_file_write_atomic(path, withnl, len + 1);
    free(withnl);
    return rc;
}

static void on_progress(void *user, int64_t done, int64_t total) {
    (void)total;
    cli_progress_update(user, done);
}

typedef struct {
    const char *task, *model_dir, *data, *labels, *haystack, *out, *device, *precision;
    int limit, seed, batch, context, stride, depths, answer_tokens;
    int lengths[EVAL_MAX_LENGTHS], n_lengths;
} eval_opts;

// ----------------------------------------------------------------------------
// ppl

static int is_shard(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[8] = {0};
    size_t got = fread(magic, 1, 8, f);
    fclose(f);
    return got == 8 && !memcmp(magic, "ASATOKS", 8);
}

static int run_ppl(const eval_opts *o, const asa_tokenizer *tok, asa_scorer *s, results *rs) {
    asa_token_buf seq = {0};
    int eot = asa_tokenizer_eot(tok), rc = ASA_ERR;
    int64_t words = 0, bytes = 0;
    // lm-eval scores the first token too, conditioned on <|endoftext|>.
    if (eot >= 0) asa_token_buf_push(&seq, eot);
    if (is_shard(o->data)) {
        asa_shard sh;
        if (asa_shard_open(o->data, &sh) != ASA_OK) goto done;
        size_t n0 = seq.n;
        for (uint64_t i = 0; i < sh.count; i++) asa_token_buf_push(&seq, 0);
        int src = asa_shard_read(&sh, 0, sh.count, seq.ids + n0);
        asa_shard_close(&sh);
        if (src != ASA_OK) goto done;
    } else {
        char *text;
        size_t len;
        if (asa_file_read_all(o->data, (size_t)1 << 32, &text, &len) != ASA_OK) goto done;
        words = asa_count_words(text, len);
        bytes = (int64_t)len;
        int erc = asa_tokenizer_encode(tok, text, len, 0, &seq);
        free(text);
        if (erc != ASA_OK) goto done;
    }
    cli_progress p;
    const int T = o->context, S = o->stride > 0 ? o->stride : T;
    int64_t total = asa_ppl_num_windows(seq.n, T, S);
    if (o->limit > 0 && o->limit < total) total = o->limit;
    cli_progress_start(&p, "ppl", "windows", total);
    asa_ppl_result r;
    if (asa_eval_ppl(s, seq.ids, seq.n, T, S, o->limit, on_progress, &p, &r) != ASA_OK) goto done;
    cli_progress_finish(&p, r.n_windows);
    add(rs, "ppl", "perplexity", r.ppl, 0, 0, r.n_tokens);
    add(rs, "ppl", "loss", r.loss, 0, 0, r.n_tokens);
    if (words > 0 && (o->limit <= 0 || r.n_tokens == (int64_t)seq.n - 1)) {  // whole text scored
        add(rs, "ppl", "word_perplexity", exp(-r.logprob / (double)words), 0, 0, words);
        add(rs, "ppl", "byte_perplexity", exp(-r.logprob / (double)bytes), 0, 0, bytes);
        add(rs, "ppl", "bits_per_byte", -r.logprob / (double)bytes / log(2.0), 0, 0, bytes);
    }
    rc = ASA_OK;
done:
    asa_token_buf_free(&seq);
    return rc;
}

// ----------------------------------------------------------------------------
// multiple choice, lambada

static int run_mc(const eval_opts *o, const asa_tokenizer *tok, asa_scorer *s, results *rs) {
    asa_mc_set set;
    if (asa_mc_load(o->task, o->data, o->labels, &set) != ASA_OK) return ASA_ERR;
    fprintf(stderr, "%s: %d examples parsed from %d non-empty lines of %s\n", o->task, set.n, set.lines, o->data);
    cli_progress p;
    cli_progress_start(&p, o->task, "examples", o->limit > 0 && o->limit < set.n ? o->limit : set.n);
    asa_mc_result r;
    int rc = asa_mc_eval(&set, tok, s, o->limit, on_progress, &p, &r, NULL, NULL);
    if (rc == ASA_OK) {
        cli_progress_finish(&p, r.n);
        add(rs, o->task, "acc", r.acc, r.acc_stderr, 1, r.n);
        if (set.has_norm) add(rs, o->task, "acc_norm", r.acc_norm, r.acc_norm_stderr, 1, r.n);
    }
    asa_mc_free(&set);
    return rc;
}

static int run_lambada(const eval_opts *o, const asa_tokenizer *tok, asa_scorer *s, results *rs) {
    asa_lambada_set set;
    if (asa_lambada_load(o->data, &set) != ASA_OK) return ASA_ERR;
    fprintf(stderr, "lambada: %d examples parsed from %s\n", set.n, o->data);
    cli_progress p;
    cli_progress_start(&p, "lambada", "examples", o->limit > 0 && o->limit < set.n ? o->limit : set.n);
    asa_lambada_result r;
    int rc = asa_lambada_eval(&set, tok, s, o->limit, on_progress, &p, &r);
    if (rc == ASA_OK) {
        cli_progress_finish(&p, r.n);
        add(rs, "lambada", "acc", r.acc, r.acc_stderr, 1, r.n);
        add(rs, "lambada", "perplexity", r.ppl, 0, 0, r.n);
    }
    asa_lambada_free(&set);
    return rc;
}

// ----------------------------------------------------------------------------
// niah

static int run_niah(const eval_opts *o, const asa_model *m, const asa_tokenizer *tok, results *rs, const char *svg) {
    int tasks[3], nt = 0;
    if (!strcmp(o->task, "niah")) {
        tasks[nt++] = 1;
        if (o->haystack) {
            tasks[nt++] = 2;
            tasks[nt++] = 3;
        }
    } else {
        tasks[nt++] = o->task[strlen(o->task) - 1] - '0';
    }
    asa_niah_words hw = {0};
    if (tasks[nt - 1] > 1) {
        char *text;
        size_t len;
        if (!o->haystack) return asa_err_set("%s needs --haystack FILE (a long text)", o->task);
        if (asa_file_read_all(o->haystack, (size_t)1 << 31, &text, &len) != ASA_OK) return ASA_ERR;
        int wrc = asa_niah_words_init(&hw, text, len);
        free(text);
        if (wrc != ASA_OK) return asa_err_prefix("%s: ", o->haystack);
    }
    for (int l = 0; l < o->n_lengths; l++)
        if (o->lengths[l] > m->cfg.max_position_embeddings)
            fprintf(stderr, "asa eval: note: length %d is beyond the model's max_position_embeddings %d\n", o->lengths[l],
                    m->cfg.max_position_embeddings);
    const int nd = o->depths, nl = o->n_lengths;
    const int per_cell = o->limit > 0 ? (o->limit + nd - 1) / nd : 1;
    double depth[64], *acc[3];
    for (int d = 0; d < nd; d++) depth[d] = nd > 1 ? (double)d / (nd - 1) : 0.5;
    asa_rng rng;
    asa_rng_seed(&rng, (uint64_t)o->seed);
    asa_encoder *enc = asa_encoder_new(tok);
    asa_token_buf ids = {0};
    cli_progress p;
    cli_progress_start(&p, "niah", "samples", (int64_t)nt * nl * nd * per_cell);
    int64_t done = 0;
    int rc = ASA_OK;
    for (int t = 0; t < nt; t++) acc[t] = asa_malloc(sizeof(double) * nd * nl);
    for (int t = 0; t < nt && rc == ASA_OK; t++) {
        for (int l = 0; l < nl && rc == ASA_OK; l++) {
            int hits = 0, n = 0;
            for (int d = 0; d < nd && rc == ASA_OK; d++) {
                int cell_hits = 0, cell_n = 0;
                for (int k = 0; k < per_cell && rc == ASA_OK; k++) {
                    if (o->limit > 0 && n >= o->limit) break;
                    asa_niah_spec spec = {tasks[t], o->lengths[l], o->answer_tokens, depth[d]};
                    asa_niah_sample smp;
                    char *outtxt = NULL;
                    rc = asa_niah_make(&spec, &hw, enc, &rng, &smp);
                    if (rc == ASA_OK) {
                        ids.n = 0;
                        rc = asa_encoder_encode(enc, smp.prompt, strlen(smp.prompt), 0, &ids);
                    }
                    if (rc == ASA_OK) rc = asa_niah_generate(m, tok, ids.ids, (int)ids.n, o->answer_tokens, &outtxt);
                    if (rc == ASA_OK) {
                        int hit = asa_niah_found(outtxt, smp.value);
                        cell_hits += hit;
                        cell_n++;
                        free(outtxt);
                    }
                    asa_niah_sample_free(&smp);
                    cli_progress_update(&p, ++done);
                }
                acc[t][d * nl + l] = cell_n ? (double)cell_hits / cell_n : -1;
                hits += cell_hits;
                n += cell_n;
            }
            if (rc == ASA_OK && n > 0) {
                char task[32], metric[32];
                snprintf(task, sizeof task, "niah_single_%d", tasks[t]);
                snprintf(metric, sizeof metric, "acc@%d", o->lengths[l]);
                add(rs, task, metric, (double)hits / n, asa_mean_stderr(hits, hits, n), 1, n);
            }
        }
    }
    if (rc == ASA_OK) {
        cli_progress_finish(&p, done);
        for (int t = 0; t < nt; t++) {
            printf("S-NIAH-%d accuracy (%%), depth x length\n%8s", tasks[t], "depth");
            for (int l = 0; l < nl; l++) printf(" %7d", o->lengths[l]);
            printf("\n");
            for (int d = 0; d < nd; d++) {
                printf("%7.0f%%", depth[d] * 100);
                for (int l = 0; l < nl; l++) printf(" %7.0f", acc[t][d * nl + l] * 100);
                printf("\n");
            }
        }
        char title[256];
        snprintf(title, sizeof title, "S-NIAH accuracy: %s", o->model_dir);
        rc = asa_niah_svg(svg, title, nt, tasks, o->lengths, nl, depth, nd, (const double *const *)acc);
        if (rc == ASA_OK) fprintf(stderr, "wrote %s\n", svg);
    }
    for (int t = 0; t < nt; t++) free(acc[t]);
    asa_token_buf_free(&ids);
    asa_encoder_free(enc);
    asa_niah_words_free(&hw);
    return rc;
}

// ----------------------------------------------------------------------------

static int parse_lengths(const char *v, eval_opts *o) {
    o->n_lengths = 0;
    const char *p = v;
    while (*p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || x < 16 || x > (1 << 24) || o->n_lengths == EVAL_MAX_LENGTHS) {
            fprintf(stderr, "asa eval: --lengths: '%s' is not a list of up to %d lengths >= 16\n", v, EVAL_MAX_LENGTHS);
            return -1;
        }
        o->lengths[o->n_lengths++] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (o->n_lengths == 0) {
        fprintf(stderr, "asa eval: --lengths: empty list\n");
        return -1;
    }
    return 0;
}

static int known_task(const char *t) {
    return !strcmp(t, "ppl") || !strcmp(t, "lambada") || !strcmp(t, "niah") || !strcmp(t, "niah_single_1") ||
           !strcmp(t, "niah_single_2") || !strcmp(t, "niah_single_3") || asa_mc_is_task(t);
}

int cmd_eval(int argc, char **argv) {
    eval_opts o = {0};
    o.batch = 4;
    o.depths = 10;
    o.answer_tokens = 32;
    o.lengths[0] = 2048;
    o.lengths[1] = 4096;
    o.lengths[2] = 8192;
    o.n_lengths = 3;
    const char *C = "eval";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (a[0] != '-' && !o.task) {
            o.task = a;
        } else if (!strcmp(a, "--model")) {
            if (!(o.model_dir = cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--data")) {
            if (!(o.data = cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--labels")) {
            if (!(o.labels = cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--haystack")) {
            if (!(o.haystack = cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--out")) {
            if (!(o.out = cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--device")) {
            if (!(o.device = cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--precision")) {
            if (!(o.precision = cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--limit")) {
            if (!(v = cli_value(C, argc, argv, &i)) || cli_parse_int(C, a, v, 0, 2147483647L, &o.limit)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!(v = cli_value(C, argc, argv, &i)) || cli_parse_int(C, a, v, 0, 2147483647L, &o.seed)) return 2;
        } else if (!strcmp(a, "--batch")) {
            if (!(v = cli_value(C, argc, argv, &i)) || cli_parse_int(C, a, v, 1, 4096, &o.batch)) return 2;
        } else if (!strcmp(a, "--context")) {
            if (!(v = cli_value(C, argc, argv, &i)) || cli_parse_int(C, a, v, 2, 1 << 24, &o.context)) return 2;
        } else if (!strcmp(a, "--stride")) {
            if (!(v = cli_value(C, argc, argv, &i)) || cli_parse_int(C, a, v, 1, 1 << 24, &o.stride)) return 2;
        } else if (!strcmp(a, "--depths")) {
            if (!(v = cli_value(C, argc, argv, &i)) || cli_parse_int(C, a, v, 1, 64, &o.depths)) return 2;
        } else if (!strcmp(a, "--answer-tokens")) {
            if (!(v = cli_value(C, argc, argv, &i)) || cli_parse_int(C, a, v, 1, 4096, &o.answer_tokens)) return 2;
        } else if (!strcmp(a, "--lengths")) {
            if (!(v = cli_value(C, argc, argv, &i)) || parse_lengths(v, &o)) return 2;
        } else {
            fprintf(stderr, "asa eval: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!o.task || !known_task(o.task)) {
        if (o.task) fprintf(stderr, "asa eval: unknown task '%s'\n", o.task);
        else fprintf(stderr, "asa eval: a TASK is required\n");
        usage(stderr);
        return 2;
    }
    const int is_niah = !strncmp(o.task, "niah", 4);
    if (!o.model_dir || (!is_niah && !o.data)) {
        fprintf(stderr, "asa eval: --model DIR%s is required\n", is_niah ? "" : " and --data FILE are");
        usage(stderr);
        return 2;
    }
    char out_path[4096], svg_path[4120];
    if (o.out) snprintf(out_path, sizeof out_path, "%s", o.out);
    else snprintf(out_path, sizeof out_path, "eval-%s.json", o.task);
    snprintf(svg_path, sizeof svg_path, "%s.svg", out_path);

    asa_backend *be = cli_backend_new_precision(C, o.device, o.precision);
    if (!be) return 1;
    asa_model m;
    asa_tokenizer *tok = NULL;
    if (cli_load_model_dir(o.model_dir, be, &m, &tok) != ASA_OK) {
        fprintf(stderr, "asa eval: %s\n", asa_err_msg());
        asa_backend_free(be);
        return 1;
    }
    if (o.context == 0) o.context = m.cfg.max_position_embeddings;
    if (o.stride > o.context) {
        fprintf(stderr, "asa eval: --stride %d is longer than the context %d\n", o.stride, o.context);
        asa_tokenizer_free(tok);
        asa_model_free(&m);
        asa_backend_free(be);
        return 2;
    }
    asa_model_scorer ms;
    asa_model_scorer_init(&ms, &m, o.context, o.batch);
    results rs = {0};
    int rc;
    double t0 = cli_now();
    if (!strcmp(o.task, "ppl")) rc = run_ppl(&o, tok, &ms.base, &rs);
    else if (!strcmp(o.task, "lambada")) rc = run_lambada(&o, tok, &ms.base, &rs);
    else if (is_niah) rc = run_niah(&o, &m, tok, &rs, svg_path);
    else rc = run_mc(&o, tok, &ms.base, &rs);
    if (rc == ASA_OK) {
        print_table(&rs);
        rc = write_json(out_path, &rs, o.model_dir, is_niah ? o.lengths[o.n_lengths - 1] : o.context);
        if (rc == ASA_OK) fprintf(stderr, "wrote %s (%.1f s)\n", out_path, cli_now() - t0);
    }
    if (rc != ASA_OK) fprintf(stderr, "asa eval: %s\n", asa_err_msg());
    asa_model_scorer_free(&ms);
    asa_tokenizer_free(tok);
    asa_model_free(&m);
    asa_backend_free(be);
    return rc == ASA_OK ? 0 : 1;
}
