// Evaluation harness: every multiple-choice file format (hand-made files in each real layout) scored by
// an injected scorer whose preferences are known, so acc and acc_norm are certain; lm-eval's contexts and
// continuations; malformed records name their line; LAMBADA; perplexity of a model with uniform logits
// equals the vocabulary size; the model-backed scorer against asa_model_forward's own loss (truncation
// and padding included); S-NIAH prompts fit their budget exactly, the needle sits at its depth, and the
// answer is found only when present.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "asa/config.h"
#include "asa/tokenizer.h"
#include "backend/backend.h"
#include "core/error.h"
#include "eval/lambada.h"
#include "eval/mc.h"
#include "eval/niah.h"
#include "eval/ppl.h"
#include "eval/scorer.h"
#include "model/model.h"
#include "testutil.h"

static char tmpdir[64];

static const char *tmp_path(const char *name) {
    static char buf[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static const char *write_tmp(const char *name, const char *text) {
    const char *p = tmp_path(name);
    FILE *f = fopen(p, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", p);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return p;
}

// ----------------------------------------------------------------------------
// injected scorer: logprob = -(bytes of the continuation) - 100 if the context contains "Bad", so acc
// picks the shortest choice and acc_norm (length-normalised) the longest, away from any "Bad" context;
// greedy = the continuation contains '!'.

typedef struct {
    asa_scorer base;
    const asa_tokenizer *tok;
    int calls, max_seen;
} fake_scorer;

static int fake_score(asa_scorer *s, const asa_score_req *req, int n, asa_score_res *res) {
    fake_scorer *f = (fake_scorer *)s;
    f->calls++;
    if (n > f->max_seen) f->max_seen = n;
    for (int i = 0; i < n; i++) {
        char *ctx, *cont;
        size_t lc, lk;
        if (asa_tokenizer_decode(f->tok, req[i].ctx, req[i].n_ctx, &ctx, &lc) != ASA_OK ||
            asa_tokenizer_decode(f->tok, req[i].cont, req[i].n_cont, &cont, &lk) != ASA_OK)
            return ASA_ERR;
        res[i].logprob = -(double)lk - (strstr(ctx, "Bad") ? 100.0 : 0.0);
        res[i].greedy = strchr(cont, '!') != NULL;
        free(ctx);
        free(cont);
    }
    return ASA_OK;
}

static fake_scorer fake_new(const asa_tokenizer *tok, int batch) {
    fake_scorer f = {{fake_score, batch, 1 << 20}, tok, 0, 0};
    return f;
}

// ----------------------------------------------------------------------------
// multiple choice

typedef struct {
    const char *task, *name, *text, *labels;
    int n;
    double acc, acc_norm;
} mc_case;

// In each file gold is the shortest choice in some examples and the longest in others.
static const mc_case mc_cases[] = {
    {"piqa", "piqa_dev.jsonl",
     "{\"id\": \"a\", \"goal\": \"How do I open a jar?\", \"sol1\": \"Twist the lid.\", \"sol2\": \"Twist the lid hard, slowly.\"}\n"
     "{\"id\": \"b\", \"goal\": \"Keep bread fresh\", \"sol1\": \"Put it in a sealed bag in a cool place.\", \"sol2\": \"Burn it.\"}\n"
     "{\"id\": \"c\", \"goal\": \"Dry wet shoes\", \"sol1\": \"Stuff them with newspaper overnight.\", \"sol2\": \"Wear them.\"}\n",
     "0\n0\n0\n", 3, 1.0 / 3, 2.0 / 3},
    {"piqa", "piqa_hf.jsonl",
     "{\"goal\": \"g\", \"sol1\": \"short\", \"sol2\": \"much longer one\", \"label\": 1}\n"
     "{\"goal\": \"g\", \"sol1\": \"short\", \"sol2\": \"much longer one\", \"label\": 1}\n",
     NULL, 2, 0.0, 1.0},
    {"hellaswag", "hellaswag_val_full.txt",
     "Roof shingle removal: A man is sitting on a roof. he\n3\nis using wrap to wrap a pair of skis.\n"
     "is ripping level tiles off.\nis holding a rubik's cube.\nstarts pulling up roofing on a roof.\n"
     "Clean and jerk: A lady walks to a barbell. She\n2\nbends down and grabs the pole slowly and carefully.\n"
     "swings and lands.\nlifts it.\nstands and claps her hands very loudly and for long.\n",
     NULL, 2, 0.5, 0.0},
    {"hellaswag", "hellaswag_val.jsonl",
     "{\"ind\": 24, \"activity_label\": \"Roof shingle removal\", \"ctx_a\": \"A man is sitting on a roof.\", "
     "\"ctx_b\": \"he\", \"endings\": [\"is using wrap [step] to wrap a pair of skis.\", \"x.\", \"is holding a cube.\", "
     "\"starts pulling up roofing on a roof, very slowly.\"], \"label\": 1}\n"
     "{\"ind\": 92, \"activity_label\": \"Home [title]\", \"ctx_a\": \"[header] How to x [title] Do it.\", \"ctx_b\": \"THEN\", "
     "\"endings\": [\"a.\", \"bb.\", \"ccc.\", \"the longest ending of them all.\"], \"label\": \"3\"}\n",
     NULL, 2, 0.5, 0.5},
    {"winogrande", "winogrande_dev.jsonl",
     "{\"qID\": \"1\", \"sentence\": \"Sarah was a better surgeon than Maria so _ got the harder cases.\", "
     "\"option1\": \"Sarah\", \"option2\": \"Badria\", \"answer\": \"1\"}\n"
     "{\"qID\": \"2\", \"sentence\": \"Tom lost to Jim because _ was slower.\", \"option1\": \"Badtom\", "
     "\"option2\": \"Jim\", \"answer\": \"1\"}\n"
     "{\"qID\": \"3\", \"sentence\": \"The cup fit in the box because _ was small.\", \"option1\": \"cup\", "
     "\"option2\": \"Badbox\", \"answer\": \"2\"}\n",
     NULL, 3, 1.0 / 3, 1.0 / 3},
    {"winogrande", "winogrande.llmfoundry.jsonl",
     "{\"context_options\": [\"Sarah beat Tom so Sarah\", \"Sarah beat Tom so Badtom\"], "
     "\"continuation\": \"got the harder cases.\", \"gold\": 1}\n"
     "{\"context_options\": [\"Ann or Bo: Badann\", \"Ann or Bo: Bo\"], \"continuation\": \"won.\", \"gold\": 0}\n",
     NULL, 2, 0.0, 0.0},
    {"arc_easy", "arc_easy.jsonl",
     "{\"id\": \"Q1\", \"question\": {\"stem\": \"Which is a gas?\", \"choices\": [{\"text\": \"steam\", \"label\": \"A\"}, "
     "{\"text\": \"ice\", \"label\": \"B\"}, {\"text\": \"liquid water\", \"label\": \"C\"}]}, \"answerKey\": \"B\"}\n"
     "{\"id\": \"Q2\", \"question\": {\"stem\": \"Pick\", \"choices\": [{\"text\": \"aa\", \"label\": \"1\"}, "
     "{\"text\": \"bbbbbbbb\", \"label\": \"2\"}, {\"text\": \"c\", \"label\": \"3\"}, {\"text\": \"dddd\", \"label\": \"4\"}, "
     "{\"text\": \"eee\", \"label\": \"5\"}]}, \"answerKey\": \"2\"}\n",
     NULL, 2, 0.5, 0.5},
    {"arc_challenge", "arc_challenge.llmfoundry.jsonl",
     "{\"query\": \"Question: An astronomer observes a planet rotate faster. What happens?\", \"choices\": "
     "[\"Planetary density will decrease.\", \"Planetary years will become longer.\", \"Planetary days will become "
     "shorter.\", \"Gravity goes.\"], \"gold\": 3}\n"
     "{\"query\": \"Question: Pick the long one\", \"choices\": [\"a\", \"bb\", \"the long one\", \"dd\"], \"gold\": 2}\n",
     NULL, 2, 0.5, 0.5},
    {"boolq", "superglue_boolq_val.jsonl",
     "{\"question\": \"is the sky blue\", \"passage\": \"Sky -- The sky is blue.\", \"idx\": 0, \"label\": \"false\"}\n"
     "{\"question\": \"is grass red\", \"passage\": \"Grass -- Grass is green.\", \"idx\": 1, \"label\": \"true\"}\n"
     "{\"question\": \"is ice cold\", \"passage\": \"Ice -- Ice is cold.\", \"idx\": 2, \"label\": false}\n",
     NULL, 3, 2.0 / 3, 1.0 / 3},
    {"boolq", "boolq_dev.jsonl",
     "{\"question\": \"does it work\", \"title\": \"T\", \"answer\": true, \"passage\": \"It works.\"}\n",
     NULL, 1, 0.0, 1.0},
};

static void test_mc_files(const asa_tokenizer *tok) {
    for (size_t c = 0; c < sizeof mc_cases / sizeof *mc_cases; c++) {
        const mc_case *k = &mc_cases[c];
        const char *path = write_tmp(k->name, k->text);
        char lname[96];
        snprintf(lname, sizeof lname, "%s.labels", k->name);
        const char *labels = k->labels ? write_tmp(lname, k->labels) : NULL;
        asa_mc_set set;
        int rc = asa_mc_load(k->task, path, labels, &set);
        TU_CHECK(rc == ASA_OK, "%s: %s", k->name, asa_err_msg());
        if (rc != ASA_OK) continue;
        TU_CHECK(set.n == k->n, "%s: %d examples parsed, expected %d", k->name, set.n, k->n);
        fake_scorer f = fake_new(tok, 4);
        asa_mc_result r;
        int pred[8], pred_norm[8];
        rc = asa_mc_eval(&set, tok, &f.base, 0, NULL, NULL, &r, pred, pred_norm);
        TU_CHECK(rc == ASA_OK, "%s: %s", k->name, asa_err_msg());
        TU_CHECK(r.n == k->n && fabs(r.acc - k->acc) < 1e-12, "%s: acc %g, expected %g", k->name, r.acc, k->acc);
        if (set.has_norm)
            TU_CHECK(fabs(r.acc_norm - k->acc_norm) < 1e-12, "%s: acc_norm %g, expected %g", k->name, r.acc_norm, k->acc_norm);
        // Standard error: sample std / sqrt(n) of the 0/1 outcomes.
        double p = r.acc, se = k->n > 1 ? sqrt(p * (1 - p) * k->n / (k->n - 1) / k->n) : 0;
        TU_CHECK(fabs(r.acc_stderr - se) < 1e-12, "%s: acc stderr %g, expected %g", k->name, r.acc_stderr, se);
        // Examples of one call never exceed the batch, and whole examples go together.
        TU_CHECK(f.max_seen <= 5, "%s: %d requests in one call with batch 4", k->name, f.max_seen);
        asa_mc_free(&set);
    }
}

// lm-eval's exact contexts and continuations.
static void test_mc_text(void) {
    asa_mc_set set;
    const char *path = tmp_path("piqa_dev.jsonl");
    TU_CHECK(asa_mc_load("piqa", path, tmp_path("piqa_dev.jsonl.labels"), &set) == ASA_OK, "%s", asa_err_msg());
    if (set.n) {
        TU_CHECK(!strcmp(set.ex[0].ctx[0], "Question: How do I open a jar?\nAnswer:"), "piqa ctx '%s'", set.ex[0].ctx[0]);
        TU_CHECK(!strcmp(set.ex[0].cont[1], " Twist the lid hard, slowly."), "piqa cont '%s'", set.ex[0].cont[1]);
        TU_CHECK(set.ex[0].norm_len[0] == 14, "piqa norm_len %d", set.ex[0].norm_len[0]);
        TU_CHECK(set.ex[2].line == 3, "piqa line %d", set.ex[2].line);
        asa_mc_free(&set);
    }
    TU_CHECK(asa_mc_load("hellaswag", tmp_path("hellaswag_val.jsonl"), NULL, &set) == ASA_OK, "%s", asa_err_msg());
    if (set.n) {
        TU_CHECK(!strcmp(set.ex[0].ctx[0], "Roof shingle removal: A man is sitting on a roof. He"), "hellaswag ctx '%s'",
                 set.ex[0].ctx[0]);
        TU_CHECK(!strcmp(set.ex[0].cont[0], " is using wrap to wrap a pair of skis."), "hellaswag ending '%s'",
                 set.ex[0].cont[0]);
        // "Home [title]: [header] How to x [title] Do it. Then" -> " [title]" becomes ". ", brackets go,
        // double spaces collapse once.
        TU_CHECK(!strcmp(set.ex[1].ctx[0], "Home. : How to x. Do it. Then"), "hellaswag ctx '%s'", set.ex[1].ctx[0]);
        asa_mc_free(&set);
    }
    char *pp = asa_hellaswag_preprocess("  A [title] b [step] c  d ");
    TU_CHECK(!strcmp(pp, "A. b c d"), "preprocess '%s'", pp);
    free(pp);
    TU_CHECK(asa_mc_load("hellaswag", tmp_path("hellaswag_val_full.txt"), NULL, &set) == ASA_OK, "%s", asa_err_msg());
    if (set.n) {
        TU_CHECK(!strcmp(set.ex[1].ctx[2], "Clean and jerk: A lady walks to a barbell. She") && set.ex[1].gold == 2 &&
                     !strcmp(set.ex[1].cont[2], " lifts it.") && set.ex[1].line == 7,
                 "hellaswag text example 2: '%s' gold %d line %d", set.ex[1].ctx[2], set.ex[1].gold, set.ex[1].line);
        asa_mc_free(&set);
    }
    TU_CHECK(asa_mc_load("winogrande", tmp_path("winogrande_dev.jsonl"), NULL, &set) == ASA_OK, "%s", asa_err_msg());
    if (set.n) {
        TU_CHECK(!strcmp(set.ex[0].ctx[1], "Sarah was a better surgeon than Maria so Badria") &&
                     !strcmp(set.ex[0].cont[1], " got the harder cases."),
                 "winogrande partial: '%s' | '%s'", set.ex[0].ctx[1], set.ex[0].cont[1]);
        asa_mc_free(&set);
    }
    TU_CHECK(asa_mc_load("winogrande", tmp_path("winogrande.llmfoundry.jsonl"), NULL, &set) == ASA_OK, "%s", asa_err_msg());
    if (set.n) {
        TU_CHECK(!strcmp(set.ex[1].ctx[0], "Ann or Bo: Badann") && !strcmp(set.ex[1].cont[0], " won.") && set.ex[1].gold == 0,
                 "winogrande mosaic: '%s' | '%s'", set.ex[1].ctx[0], set.ex[1].cont[0]);
        asa_mc_free(&set);
    }
    TU_CHECK(asa_mc_load("arc_challenge", tmp_path("arc_challenge.llmfoundry.jsonl"), NULL, &set) == ASA_OK, "%s", asa_err_msg());
    if (set.n) {
        TU_CHECK(!strcmp(set.ex[1].ctx[0], "Question: Pick the long one\nAnswer:") && !strcmp(set.ex[1].cont[2], " the long one"),
                 "arc mosaic: '%s' | '%s'", set.ex[1].ctx[0], set.ex[1].cont[2]);
        asa_mc_free(&set);
    }
    TU_CHECK(asa_mc_load("arc_easy", tmp_path("arc_easy.jsonl"), NULL, &set) == ASA_OK, "%s", asa_err_msg());
    if (set.n) {
        TU_CHECK(set.ex[1].n_choices == 5 && set.ex[1].gold == 1 && !strcmp(set.ex[0].ctx[0], "Question: Which is a gas?\nAnswer:"),
                 "arc ai2: %d choices, gold %d, '%s'", set.ex[1].n_choices, set.ex[1].gold, set.ex[0].ctx[0]);
        asa_mc_free(&set);
    }
    TU_CHECK(asa_mc_load("boolq", tmp_path("superglue_boolq_val.jsonl"), NULL, &set) == ASA_OK, "%s", asa_err_msg());
    if (set.n) {
        TU_CHECK(!strcmp(set.ex[0].ctx[0], "Sky -- The sky is blue.\nQuestion: is the sky blue?\nAnswer:") &&
                     !strcmp(set.ex[0].cont[0], " no") && !strcmp(set.ex[0].cont[1], " yes") && set.ex[0].gold == 0 &&
                     set.ex[1].gold == 1,
                 "boolq: '%s' gold %d %d", set.ex[0].ctx[0], set.ex[0].gold, set.ex[1].gold);
        asa_mc_free(&set);
    }
}

// A malformed record: the error names the file and the line.
static void expect_error(const char *task, const char *name, const char *text, const char *labels, const char *want) {
    const char *path = write_tmp(name, text);
    const char *lp = labels ? write_tmp("bad.labels", labels) : NULL;
    asa_mc_set set;
    asa_lambada_set ls;
    int rc = !strcmp(task, "lambada") ? asa_lambada_load(path, &ls) : asa_mc_load(task, path, lp, &set);
    TU_CHECK(rc == ASA_ERR, "%s %s: malformed file accepted", task, name);
    if (rc == ASA_ERR) TU_CHECK(strstr(asa_err_msg(), want) != NULL, "%s: message '%s' lacks '%s'", name, asa_err_msg(), want);
}

static void test_malformed(void) {
    char want[128];
    snprintf(want, sizeof want, "%s:2: key 'sol2'", tmp_path("bad_piqa.jsonl"));
    expect_error("piqa", "bad_piqa.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g\", \"sol1\": \"a\"}\n",
                 "0\n1\n", want);
    snprintf(want, sizeof want, "%s:3: not a JSON object", tmp_path("bad_arc.jsonl"));
    expect_error("arc_easy", "bad_arc.jsonl",
                 "{\"query\": \"Question: q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n\n{\"query\": \"Question: q\", \"choi\n",
                 NULL, want);
    snprintf(want, sizeof want, "%s:1: gold answer 5", tmp_path("bad_arc2.jsonl"));
    expect_error("arc_challenge", "bad_arc2.jsonl", "{\"query\": \"Question: q\", \"choices\": [\"a\", \"b\"], \"gold\": 5}\n", NULL, want);
    snprintf(want, sizeof want, "%s:8: '7' is not a gold label", tmp_path("bad_hs.txt"));
    expect_error("hellaswag", "bad_hs.txt", "c: x\n0\na\nb\nc\nd\nc: y\n7\na\nb\nc\nd\n", NULL, want);
    snprintf(want, sizeof want, "%s:2: key 'answer' or 'label'", tmp_path("bad_boolq.jsonl"));
    expect_error("boolq", "bad_boolq.jsonl",
                 "{\"question\": \"q\", \"passage\": \"p\", \"label\": \"true\"}\n{\"question\": \"q\", \"passage\": \"p\", \"label\": \"maybe\"}\n",
                 NULL, want);
    snprintf(want, sizeof want, "%s:1: key 'sentence': no '_'", tmp_path("bad_wg.jsonl"));
    expect_error("winogrande", "bad_wg.jsonl", "{\"sentence\": \"no blank\", \"option1\": \"a\", \"option2\": \"b\", \"answer\": \"1\"}\n",
                 NULL, want);
    snprintf(want, sizeof want, "%s:2: '2' is not a label", tmp_path("bad.labels"));
    expect_error("piqa", "bad_piqa2.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n",
                 "0\nx\n", "bad.labels:2: 'x' is not a label");
    expect_error("piqa", "bad_piqa3.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n", "0\n1\n", "2 labels for the 1 examples");
    expect_error("boolq", "boolq_labels.jsonl", "{\"question\": \"q\", \"passage\": \"p\", \"label\": true}\n", "1\n",
                 "only read for piqa");
    expect_error("piqa", "bad_piqa4.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n", NULL, ":1: no 'label' key");
    // Found by fuzz_eval_jsonl (fuzz/regressions/fuzz_eval_jsonl/hellaswag-label-1e48): a label too large
    // for an int was cast before it was range-checked: undefined behaviour that a sanitizer build reports.
    expect_error("hellaswag", "bad_hs_label.jsonl",
                 "{\"activity_label\": \"a\", \"ctx_a\": \"b\", \"ctx_b\": \"c\", \"endings\": [\"d\", \"e\"], "
                 "\"label\": 1999999999999999999999999999999999999999999999999}\n",
                 NULL, ":1: key 'label': missing or not an integer");
    snprintf(want, sizeof want, "%s:2: key 'text': no last word", tmp_path("bad_lambada.jsonl"));
    expect_error("lambada", "bad_lambada.jsonl", "{\"text\": \"a b c\"}\n{\"text\": \"oneword\"}\n", NULL, want);

    // Size limits. A record nested 10,000 deep (cJSON's limit is 1000; the message says so), a record of
    // 5000 choices (an array of a record may have 1024 elements) and a 4 MB line with no space in its text.
    char *big = malloc((size_t)5 << 20);
    int k = sprintf(big, "{\"text\": \"a b\"}\n{\"text\": ");
    for (int i = 0; i < 10000; i++) big[k++] = '[';
    for (int i = 0; i < 10000; i++) big[k++] = ']';
    strcpy(big + k, "}\n");
    snprintf(want, sizeof want, "%s:2: JSON nested more than 1000 levels deep", tmp_path("deep_lambada.jsonl"));
    expect_error("lambada", "deep_lambada.jsonl", big, NULL, want);
    snprintf(want, sizeof want, "%s:1: JSON nested more than 1000 levels deep", tmp_path("deep_hs.jsonl"));
    expect_error("hellaswag", "deep_hs.jsonl", strchr(big, '\n') + 1, NULL, want);
    k = sprintf(big, "{\"query\": \"Question: q\", \"gold\": 0, \"choices\": [");
    for (int i = 0; i < 5000; i++) k += sprintf(big + k, "%s\"c\"", i ? "," : "");
    strcpy(big + k, "]}\n");
    snprintf(want, sizeof want, "%s:1: a JSON array or object with more than 1024 elements", tmp_path("wide_arc.jsonl"));
    expect_error("arc_easy", "wide_arc.jsonl", big, NULL, want);
    k = sprintf(big, "{\"text\": \"");
    memset(big + k, 'x', (size_t)4 << 20);
    strcpy(big + k + ((size_t)4 << 20), "\"}\n");
    snprintf(want, sizeof want, "%s:1: key 'text': no last word", tmp_path("long_lambada.jsonl"));
    expect_error("lambada", "long_lambada.jsonl", big, NULL, want);
    // Brackets, commas and escaped quotes inside a string are text, not structure: this record loads.
    k = sprintf(big, "{\"text\": \"");
    for (int i = 0; i < 5000; i++) k += sprintf(big + k, "[{,\\\"");
    strcpy(big + k, " last\"}\n");
    asa_lambada_set ls;
    int rc = asa_lambada_load(write_tmp("brackets.jsonl", big), &ls);
    TU_CHECK(rc == ASA_OK && ls.n == 1 && !strcmp(ls.target[0], " last"), "brackets in a string: %s",
             rc ? asa_err_msg() : "loaded");
    if (rc == ASA_OK) asa_lambada_free(&ls);
    free(big);
}

static void test_lambada(const asa_tokenizer *tok) {
    const char *path = write_tmp("lambada_test.jsonl",
                                 "{\"text\": \"he said that he did not care about signs!\"}\n"
                                 "{\"text\": \"the cat sat on the mat\"}\n"
                                 "{\"text\": \"she won the race by a mile!\"}\n"
                                 "{\"text\": \"and then there was \\\"silence\\\"\"}\n");
    asa_lambada_set set;
    TU_CHECK(asa_lambada_load(path, &set) == ASA_OK, "%s", asa_err_msg());
    if (set.n != 4) {
        TU_CHECK(set.n == 4, "lambada: %d examples", set.n);
        return;
    }
    TU_CHECK(!strcmp(set.ctx[0], "he said that he did not care about") && !strcmp(set.target[0], " signs!"),
             "lambada split: '%s' | '%s'", set.ctx[0], set.target[0]);
    TU_CHECK(!strcmp(set.target[3], " \"silence\""), "lambada target '%s'", set.target[3]);
    fake_scorer f = fake_new(tok, 3);
    asa_lambada_result r;
    TU_CHECK(asa_lambada_eval(&set, tok, &f.base, 0, NULL, NULL, &r) == ASA_OK, "%s", asa_err_msg());
    // The fake scorer: greedy iff '!' in the target; logprob = -bytes (" signs!" 7, " mat" 4, " mile!" 6,
    // " \"silence\"" 10).
    TU_CHECK(r.n == 4 && fabs(r.acc - 0.5) < 1e-12, "lambada acc %g", r.acc);
    TU_CHECK(fabs(r.ppl - exp((7 + 4 + 6 + 10) / 4.0)) < 1e-9 * r.ppl, "lambada ppl %g, expected %g", r.ppl, exp(27 / 4.0));
    TU_CHECK(f.calls == 2, "lambada: %d scorer calls for 4 examples at batch 3", f.calls);
    asa_lambada_eval(&set, tok, &f.base, 2, NULL, NULL, &r);
    TU_CHECK(r.n == 2 && fabs(r.acc - 0.5) < 1e-12, "lambada --limit 2: n %d acc %g", r.n, r.acc);
    asa_lambada_free(&set);
}

// lm-eval's pair encoding: trailing spaces of the context join the continuation, the continuation is
// what encode(context + continuation) adds after encode(context), an empty context is <|endoftext|>.
static void test_encode_pair(const asa_tokenizer *tok) {
    asa_encoder *enc = asa_encoder_new(tok);
    asa_token_buf ctx = {0}, cont = {0}, a = {0}, whole = {0};
    TU_CHECK(asa_encode_pair(enc, tok, "The sky is ", "blue.", &ctx, &cont) == ASA_OK, "%s", asa_err_msg());
    asa_tokenizer_encode(tok, "The sky is", 10, 0, &a);
    asa_tokenizer_encode(tok, "The sky is blue.", 16, 0, &whole);
    int same = ctx.n == a.n && cont.n == whole.n - a.n;
    for (size_t i = 0; same && i < ctx.n; i++) same = ctx.ids[i] == a.ids[i];
    for (size_t i = 0; same && i < cont.n; i++) same = cont.ids[i] == whole.ids[a.n + i];
    TU_CHECK(same, "pair encoding: %zu + %zu tokens, expected %zu + %zu", ctx.n, cont.n, a.n, whole.n - a.n);
    TU_CHECK(asa_encode_pair(enc, tok, "", " blue", &ctx, &cont) == ASA_OK && ctx.n == 1 && ctx.ids[0] == asa_tokenizer_eot(tok),
             "empty context is not <|endoftext|>");
    TU_CHECK(asa_encode_pair(enc, tok, "x", "", &ctx, &cont) == ASA_ERR, "empty continuation accepted");
    asa_token_buf_free(&ctx);
    asa_token_buf_free(&cont);
    asa_token_buf_free(&a);
    asa_token_buf_free(&whole);
    asa_encoder_free(enc);
}

// ----------------------------------------------------------------------------
// model-backed scoring and perplexity

static asa_config small_config(int V) {
    asa_config c;
    const char *json = "{\"model_type\": \"asa\", \"vocab_size\": 96, \"hidden_size\": 32, \"num_hidden_layers\": 2, "
                       "\"max_position_embeddings\": 256, \"layer_pattern\": \"GL\", \"num_heads\": 2, "
                       "\"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 4, \"v_head_dim\": 8, \"kv_lora_rank\": 16, "
                       "\"latent_groups\": 2, \"latent_dim\": 8, \"window_size\": 16, \"block_size\": 4, "
                       "\"block_counts\": 4, \"selection_share\": 2, \"initializer_range\": 0.2}";
    if (asa_config_parse(json, "small", &c) != ASA_OK) {
        fprintf(stderr, "small config: %s\n", asa_err_msg());
        exit(1);
    }
    c.vocab_size = V;
    return c;
}

static void test_ppl_uniform(asa_backend *be) {
    // All parameters zero: the final norm's weight is 0, so every logit is 0 and the model is uniform.
    asa_config c = small_config(96);
    asa_model m;
    asa_model_init_inference(&m, &c, be);
    asa_model_scorer ms;
    asa_model_scorer_init(&ms, &m, 64, 3);
    asa_rng rng;
    asa_rng_seed(&rng, 5);
    int32_t seq[300];
    for (int i = 0; i < 300; i++) seq[i] = (int32_t)asa_rng_below(&rng, 96);
    const int strides[] = {64, 16, 1 << 30};
    for (int k = 0; k < 2; k++) {
        asa_ppl_result r;
        TU_CHECK(asa_eval_ppl(&ms.base, seq, 300, 64, strides[k], 0, NULL, NULL, &r) == ASA_OK, "%s", asa_err_msg());
        TU_CHECK(fabs(r.ppl - 96) < 1e-9, "uniform ppl %.12g, expected 96 (stride %d)", r.ppl, strides[k]);
        TU_CHECK(r.n_tokens == 299, "stride %d: %lld tokens scored, expected 299", strides[k], (long long)r.n_tokens);
        TU_CHECK(r.n_windows == asa_ppl_num_windows(300, 64, strides[k]), "stride %d: %lld windows", strides[k],
                 (long long)r.n_windows);
    }
    TU_CHECK(asa_ppl_num_windows(300, 64, 64) == 5 && asa_ppl_num_windows(300, 64, 16) == 1 + (235 + 15) / 16 &&
                 asa_ppl_num_windows(65, 64, 16) == 1,
             "window counts");
    asa_ppl_result r;
    TU_CHECK(asa_eval_ppl(&ms.base, seq, 300, 64, strides[2], 0, NULL, NULL, &r) == ASA_ERR, "stride > context accepted");
    asa_model_scorer_free(&ms);
    asa_model_free(&m);
}

// Reference: -sum of log p over cont positions through asa_model_forward's own loss on the input
// (ctx ++ cont)[-(C+1):][:-1], targets only at the continuation.
static double ref_logprob(asa_model *m, const int32_t *seq, int total, int n_cont, int C) {
    int in_len = total - 1 < C ? total - 1 : C, start = total - 1 - in_len;
    int32_t *tok = malloc(sizeof(int32_t) * in_len), *tgt = malloc(sizeof(int32_t) * in_len);
    for (int j = 0; j < in_len; j++) {
        tok[j] = seq[start + j];
        tgt[j] = j >= in_len - n_cont ? seq[start + j + 1] : -1;
    }
    double loss = asa_model_forward(m, tok, tgt, 1, in_len);
    free(tok);
    free(tgt);
    return -loss * n_cont;
}

static void test_model_scorer(asa_backend *be) {
    asa_config c = small_config(96);
    asa_model m;
    asa_model_init(&m, &c, be, 11);
    asa_rng rng;
    asa_rng_seed(&rng, 7);
    int32_t seq[3][90];
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < 90; i++) seq[r][i] = (int32_t)asa_rng_below(&rng, 96);
    // Three requests of different shapes in one batch; the third is longer than the context of 64.
    const int n_ctx[3] = {10, 37, 80}, n_cont[3] = {5, 1, 9};
    asa_score_req req[3];
    for (int r = 0; r < 3; r++) req[r] = (asa_score_req){seq[r], n_ctx[r], seq[r] + n_ctx[r], n_cont[r]};
    asa_model_scorer ms;
    asa_model_scorer_init(&ms, &m, 64, 3);
    asa_score_res res[3], one;
    TU_CHECK(ms.base.score(&ms.base, req, 3, res) == ASA_OK, "%s", asa_err_msg());
    for (int r = 0; r < 3; r++) {
        double ref = ref_logprob(&m, seq[r], n_ctx[r] + n_cont[r], n_cont[r], 64);
        TU_CHECK(fabs(res[r].logprob - ref) < 1e-5 * fabs(ref), "request %d: logprob %.8g, forward loss gives %.8g", r,
                 res[r].logprob, ref);
        TU_CHECK(ms.base.score(&ms.base, &req[r], 1, &one) == ASA_OK && fabs(one.logprob - res[r].logprob) < 1e-5 * fabs(ref),
                 "request %d alone %.8g vs batched %.8g", r, one.logprob, res[r].logprob);
    }
    // Greedy: a continuation made of each position's argmax is greedy; changing one token makes it not.
    int32_t g[12] = {1, 2, 3, 4};
    for (int j = 4; j < 12; j++) {
        asa_model_forward(&m, g, NULL, 1, j);
        float *logits = malloc(sizeof(float) * 96);
        be->act_to_host(be, logits, asa_act_at(be, m.logits, (size_t)(j - 1) * 96), 96);
        int arg = 0;
        for (int v = 1; v < 96; v++)
            if (logits[v] > logits[arg]) arg = v;
        g[j] = arg;
        free(logits);
    }
    asa_score_req gr = {g, 4, g + 4, 8};
    TU_CHECK(ms.base.score(&ms.base, &gr, 1, &one) == ASA_OK && one.greedy == 1, "argmax continuation not greedy");
    g[9] = (g[9] + 1) % 96;
    TU_CHECK(ms.base.score(&ms.base, &gr, 1, &one) == ASA_OK && one.greedy == 0, "changed continuation still greedy");
    // A continuation longer than the context is scored in two pieces: its first 64 tokens after the
    // context token, then its last 6 after the 64 tokens before them.
    asa_score_req lr = {seq[2], 1, seq[2] + 1, 70};
    double ref_long = ref_logprob(&m, seq[2], 65, 64, 64) + ref_logprob(&m, seq[2], 71, 6, 64);
    TU_CHECK(ms.base.score(&ms.base, &lr, 1, &one) == ASA_OK && fabs(one.logprob - ref_long) < 1e-5 * fabs(ref_long),
             "70-token continuation at context 64: %.8g, reference %.8g", one.logprob, ref_long);
    // Strided perplexity: token i > T is scored in the window ending at E = T + ceil((i - T) / S) * S
    // (capped at the last token), whose input is the T tokens before E; tokens up to T share the first.
    const int n = 150, T = 64, S = 16;
    int32_t long_seq[150];
    for (int i = 0; i < n; i++) long_seq[i] = (int32_t)asa_rng_below(&rng, 96);
    double ref = ref_logprob(&m, long_seq, T + 1, T, 64);
    for (int E0 = T + S; E0 - S < n - 1; E0 += S) {
        int E = E0 < n - 1 ? E0 : n - 1;
        ref += ref_logprob(&m, long_seq + E - T, T + 1, E - (E0 - S), 64);
    }
    asa_ppl_result pr;
    TU_CHECK(asa_eval_ppl(&ms.base, long_seq, n, T, S, 0, NULL, NULL, &pr) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(pr.n_tokens == n - 1 && fabs(pr.logprob - ref) < 1e-5 * fabs(ref), "strided ppl: logprob %.8g over %lld tokens, reference %.8g",
             pr.logprob, (long long)pr.n_tokens, ref);
    TU_CHECK(asa_eval_ppl(&ms.base, long_seq, n, T, S, 2, NULL, NULL, &pr) == ASA_OK && pr.n_windows == 2 && pr.n_tokens == T + S,
             "ppl with 2 windows: %lld windows, %lld tokens", (long long)pr.n_windows, (long long)pr.n_tokens);
    asa_model_scorer_free(&ms);
    asa_model_free(&m);
}

// ----------------------------------------------------------------------------
// S-NIAH

static int count_tokens(const asa_tokenizer *tok, const char *text) {
    asa_token_buf ids = {0};
    asa_tokenizer_encode(tok, text, strlen(text), 0, &ids);
    int n = (int)ids.n;
    asa_token_buf_free(&ids);
    return n;
}

static void test_niah(const asa_tokenizer *tok) {
    // Essay haystack: sentences of 6 words.
    char essay[4096] = "";
    for (int i = 0; i < 40; i++) {
        char s[96];
        snprintf(s, sizeof s, "Sentence number %d talks about rivers. ", i);
        strcat(essay, s);
    }
    asa_niah_words hw;
    TU_CHECK(asa_niah_words_init(&hw, essay, strlen(essay)) == ASA_OK && hw.n == 240, "haystack words %d", hw.n);
    asa_encoder *enc = asa_encoder_new(tok);
    asa_rng rng;
    asa_rng_seed(&rng, 3);
    const double depths[] = {0.0, 0.25, 0.5, 1.0};
    for (int task = 1; task <= 3; task++) {
        for (int di = 0; di < 4; di++) {
            asa_niah_spec spec = {task, task == 1 ? 700 : 1500, 32, depths[di]};
            asa_niah_sample s;
            if (asa_niah_make(&spec, &hw, enc, &rng, &s) != ASA_OK) {
                TU_CHECK(0, "niah task %d: %s", task, asa_err_msg());
                continue;
            }
            const int budget = spec.length - spec.answer_tokens;
            TU_CHECK(s.n_tokens == count_tokens(tok, s.prompt) && s.n_tokens <= budget, "task %d: %d tokens over budget %d",
                     task, s.n_tokens, budget);
            asa_niah_sample more;
            char *p = asa_niah_prompt(&spec, &hw, s.n_units + 1, s.key, s.value, &more);
            int nt = count_tokens(tok, p);
            TU_CHECK(nt > budget, "task %d depth %g: %d units fit in %d tokens but %d units take only %d", task, depths[di],
                     s.n_units, s.n_tokens, s.n_units + 1, nt);
            free(p);
            TU_CHECK(s.n_units > (task == 1 ? 3 : 100), "task %d: only %d haystack units", task, s.n_units);
            // Needle text and position.
            char needle[256];
            snprintf(needle, sizeof needle, "One of the special magic %s for %s is: %s.", task == 3 ? "uuids" : "numbers", s.key,
                     s.value);
            TU_CHECK(!strncmp(s.prompt + s.needle_at, needle, strlen(needle)), "task %d: needle not at its offset", task);
            double frac = (double)(s.needle_at - s.hay_begin) / (double)(s.hay_end - s.hay_begin - strlen(needle));
            double tol = task == 1 ? 1.0 / s.n_units : 8.0 / s.n_units;  // one filler paragraph / one sentence
            TU_CHECK(fabs(frac - depths[di]) <= tol + 1e-9, "task %d: needle at %.3f of the haystack, asked %.3f", task, frac,
                     depths[di]);
            const char *tail = task == 3 ? "The special magic uuid for " : "The special magic number for ";
            TU_CHECK(strstr(s.prompt, tail) != NULL && !strcmp(s.prompt + strlen(s.prompt) - 33, "mentioned in the provided text is"),
                     "task %d: prompt does not end with the answer prefix", task);
            TU_CHECK(!strncmp(s.prompt, task == 3 ? "A special magic uuid is hidden" : "A special magic number is hidden", 30),
                     "task %d: prompt head", task);
            if (task == 1) TU_CHECK(strstr(s.prompt, ASA_NIAH_FILLER "\n" ASA_NIAH_FILLER) || s.n_units < 2, "filler lines");
            if (task == 3) TU_CHECK(strlen(s.value) == 36 && s.value[14] == '4' && s.value[8] == '-', "uuid '%s'", s.value);
            else TU_CHECK(strlen(s.value) == 7 && s.value[0] >= '1', "7-digit value '%s'", s.value);
            // Scoring: the value inside the output is found, case-insensitively; another value is not.
            char out[256], upper[64];
            snprintf(out, sizeof out, " %s.\nThe end", s.value);
            TU_CHECK(asa_niah_found(out, s.value), "value in output not found");
            snprintf(upper, sizeof upper, "%s", s.value);
            for (char *c = upper; *c; c++)
                if (*c >= 'a' && *c <= 'z') *c = (char)(*c - 32);
            TU_CHECK(asa_niah_found(upper, s.value), "upper-case value not found");
            TU_CHECK(!asa_niah_found(" 1234567 is the number", task == 3 ? s.value : "7654321"), "absent value found");
            upper[3] = upper[3] == '0' ? '1' : '0';
            TU_CHECK(!asa_niah_found(upper, s.value), "altered value found");
            asa_niah_sample_free(&s);
        }
    }
    asa_niah_spec tiny = {1, 40, 32, 0.5};
    asa_niah_sample s;
    TU_CHECK(asa_niah_make(&tiny, &hw, enc, &rng, &s) == ASA_ERR && strstr(asa_err_msg(), "no room"), "length 40 accepted");
    asa_niah_spec two = {2, 500, 32, 0.5};
    TU_CHECK(asa_niah_make(&two, NULL, enc, &rng, &s) == ASA_ERR, "task 2 without a haystack accepted");
    // The picture.
    const int tasks[1] = {1}, lengths[2] = {2048, 4096};
    const double dd[2] = {0, 1}, cells[4] = {1, 0.5, -1, 0};
    const double *acc[1] = {cells};
    TU_CHECK(asa_niah_svg(tmp_path("niah.svg"), "t", 1, tasks, lengths, 2, dd, 2, acc) == ASA_OK, "%s", asa_err_msg());
    FILE *f = fopen(tmp_path("niah.svg"), "rb");
    char buf[8192] = "";
    if (f) {
        buf[fread(buf, 1, sizeof buf - 1, f)] = 0;
        fclose(f);
    }
    TU_CHECK(strstr(buf, "<svg") && strstr(buf, "4096") && strstr(buf, ">50<"), "svg content");
    asa_encoder_free(enc);
    asa_niah_words_free(&hw);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_eval.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    // A small BPE tokenizer trained on English-like text, so that tokens are not bytes.
    const char *corpus = write_tmp("corpus.txt",
                                   "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
                                   "One of the special magic numbers for the key is: 1234567. Question: Answer: the a lid "
                                   "Sentence number talks about rivers. What is the special magic number mentioned in the "
                                   "provided text? The special magic uuid for it is\n");
    asa_tokenizer *tok = NULL;
    const char *files[1] = {corpus};
    if (asa_tokenizer_train(files, 1, 400, NULL, &tok) != ASA_OK) {
        fprintf(stderr, "tokenizer: %s\n", asa_err_msg());
        return 1;
    }
    asa_backend *be = asa_backend_cpu_new();
    test_mc_files(tok);
    test_mc_text();
    test_malformed();
    test_lambada(tok);
    test_encode_pair(tok);
    test_ppl_uniform(be);
    test_model_scorer(be);
    test_niah(tok);
    asa_backend_free(be);
    asa_tokenizer_free(tok);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return tu_finish("test_eval");
}
