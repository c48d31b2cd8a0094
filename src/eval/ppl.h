// Perplexity over one long token sequence at a given context length T: non-overlapping windows
// (stride T), or lm-eval / Hugging Face style strided windows where each window moves by `stride` tokens
// and scores only its new tokens, so every token is scored exactly once with up to T tokens before it.
#ifndef ASA_EVAL_PPL_H
#define ASA_EVAL_PPL_H

#include <stddef.h>
#include <stdint.h>

#include "eval/scorer.h"

typedef struct {
    double logprob;    // summed over the scored tokens
    int64_t n_tokens;  // scored tokens: every token after the first of the sequence
    int64_t n_windows;
    double loss, ppl;  // mean negative log-likelihood per token and exp(loss)
} asa_ppl_result;

// Scores seq[1..n) given what precedes each token. T is the window (input) length, 1 <= stride <= T.
// max_windows > 0 stops after that many windows (a quick look); progress may be NULL.
int asa_eval_ppl(asa_scorer *s, const int32_t *seq, size_t n, int T, int stride, int64_t max_windows,
                 asa_eval_progress_fn progress, void *user, asa_ppl_result *out);

// Number of windows asa_eval_ppl makes for a sequence of n tokens.
int64_t asa_ppl_num_windows(size_t n, int T, int stride);

// Counts for lm-evaluation-harness's word and byte perplexities of a raw text: whitespace-separated
// words and bytes.
int64_t asa_count_words(const char *text, size_t len);

#endif
