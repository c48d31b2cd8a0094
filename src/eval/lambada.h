// LAMBADA (OpenAI's jsonl, one {"text": ...} per line) as lm-evaluation-harness's lambada_openai: the
// context is the text up to its last space, the target " " + the last word; acc = the target is the
// greedy continuation, ppl = exp(mean over examples of the target's negative log-likelihood).
#ifndef ASA_EVAL_LAMBADA_H
#define ASA_EVAL_LAMBADA_H

#include "asa/tokenizer.h"
#include "eval/scorer.h"

typedef struct {
    char **ctx, **target;  // [n]
    int *line;             // 1-based line of each example
    int n;
} asa_lambada_set;

// A record that is not {"text": string} with a space in it is an error naming the file and line.
int asa_lambada_load(const char *path, asa_lambada_set *set);
void asa_lambada_free(asa_lambada_set *set);

typedef struct {
    int n;
    double acc, acc_stderr;
    double ppl, loss;  // loss = mean negative log-likelihood of a target
} asa_lambada_result;

// The first `limit` examples (all when limit <= 0), up to the scorer's batch of examples per call.
int asa_lambada_eval(const asa_lambada_set *set, const asa_tokenizer *tok, asa_scorer *s, int limit,
                     asa_eval_progress_fn progress, void *user, asa_lambada_result *out);

#endif
