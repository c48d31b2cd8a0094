// Multiple-choice tasks as lm-evaluation-harness defines them: PIQA, HellaSwag, WinoGrande, ARC-Easy,
// ARC-Challenge and BoolQ, read from their release formats and the other layouts in common use:
//   piqa        AI2 jsonl {goal, sol1, sol2} + a labels file (one 0/1 per line), or jsonl with "label"
//   hellaswag   original jsonl {activity_label, ctx_a, ctx_b, endings, label}, or llama.cpp's text file
//               (6 lines per task: context, gold index, four endings; its context keeps ctx_b's first
//               letter as the original has it, where lm-eval capitalises it: the boundary is lost)
//   winogrande  AI2 jsonl {sentence, option1, option2, answer "1"|"2"}, or MosaicML's
//               {context_options, continuation, gold}
//   arc_easy, arc_challenge   AI2 jsonl {question: {stem, choices: [{text, label}]}, answerKey}, or
//               MosaicML's {query, choices, gold}
//   boolq       {passage, question} with "answer" (Google, boolean) or "label" (SuperGLUE: boolean or
//               the strings "true"/"false")
// Each choice is a (context, continuation) pair; acc takes the argmax of the summed log-likelihood,
// acc_norm of the sum divided by the choice's length in bytes (lm-eval's acc_norm, which measures the
// choice text without the " " delimiter).
#ifndef ASA_EVAL_MC_H
#define ASA_EVAL_MC_H

#include "asa/tokenizer.h"
#include "eval/scorer.h"

#define ASA_MC_MAX_CHOICES 8

typedef struct {
    int n_choices;
    char *ctx[ASA_MC_MAX_CHOICES];   // context of each choice (WinoGrande's differ; the others repeat one)
    char *cont[ASA_MC_MAX_CHOICES];  // continuation of each choice, leading delimiter included
    int norm_len[ASA_MC_MAX_CHOICES];  // acc_norm divisor: bytes of the choice text
    int gold;
    int line;                        // 1-based line of the example in the data file
} asa_mc_example;

typedef struct {
    char task[32];
    int has_norm;  // acc_norm is reported (lm-eval reports acc only for WinoGrande and BoolQ)
    asa_mc_example *ex;
    int n;
    int lines;     // lines of the data file (non-empty for jsonl), for the parse report
} asa_mc_set;

// 1 if task names a multiple-choice task.
int asa_mc_is_task(const char *task);
// Parses path (and labels, PIQA's separate labels file, else NULL). A malformed record is an error
// naming the file and its line.
int asa_mc_load(const char *task, const char *path, const char *labels, asa_mc_set *set);
void asa_mc_free(asa_mc_set *set);

typedef struct {
    int n;
    double acc, acc_stderr, acc_norm, acc_norm_stderr;
} asa_mc_result;

// Scores the first `limit` examples (all when limit <= 0). pred and pred_norm, when not NULL, receive
// each example's chosen index.
int asa_mc_eval(const asa_mc_set *set, const asa_tokenizer *tok, asa_scorer *s, int limit,
                asa_eval_progress_fn progress, void *user, asa_mc_result *out, int *pred, int *pred_norm);

// HellaSwag's text cleanup (lm-eval preprocess): trim, " [title]" -> ". ", drop "[...]", "  " -> " ".
// Returns a new string.
char *asa_hellaswag_preprocess(const char *text);

#endif
