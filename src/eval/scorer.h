// Log-likelihood scoring, the core of every evaluation task: for (context, continuation) token pairs, the
// summed log-probability of the continuation given the context and whether greedy decoding would have
// produced exactly that continuation. Tasks talk to an asa_scorer, so a test can inject one with known
// preferences; asa_model_scorer is the one backed by a model.
#ifndef ASA_EVAL_SCORER_H
#define ASA_EVAL_SCORER_H

#include <stddef.h>
#include <stdint.h>

#include "asa/tokenizer.h"
#include "model/model.h"

typedef struct {
    const int32_t *ctx;   // n_ctx >= 1 tokens
    int n_ctx;
    const int32_t *cont;  // n_cont >= 1 tokens, scored
    int n_cont;
} asa_score_req;

typedef struct {
    double logprob;  // sum over the continuation of log p(token | everything before it)
    int greedy;      // 1 if every continuation token is the argmax of its position
} asa_score_res;

typedef struct asa_scorer asa_scorer;
struct asa_scorer {
    // Scores req[0..n) into res[0..n); ASA_ERR with a message on bad input.
    int (*score)(asa_scorer *s, const asa_score_req *req, int n, asa_score_res *res);
    int max_batch;  // requests worth grouping into one call (tasks group up to this many)
    int context;    // longest input the scorer takes; longer contexts lose tokens on the left
};

// Progress callback of the tasks: done of total units (examples, windows, samples).
typedef void (*asa_eval_progress_fn)(void *user, int64_t done, int64_t total);

// The model-backed scorer: one asa_model_forward over [context + continuation] per request, at most
// max_batch requests per forward (padded to a common length; padding sits after every scored position,
// so causal attention never lets it change a score). The context is truncated from the left so the
// input (context + continuation minus its last token) fits `context` tokens; a continuation longer than
// that is scored in pieces of `context` tokens, each token once with as much of what precedes it as fits.
// Log-softmax in double on the host, over only the logits rows of continuation positions.
typedef struct {
    asa_scorer base;  // first member: an asa_model_scorer * is an asa_scorer *
    asa_model *model;
    int32_t *tokens;  // [max_batch * context] host staging
    float *rows;      // host copy of the logits rows being scored
    size_t rows_cap;  // floats
} asa_model_scorer;

void asa_model_scorer_init(asa_model_scorer *ms, asa_model *m, int context, int max_batch);
void asa_model_scorer_free(asa_model_scorer *ms);

// lm-evaluation-harness's pair encoding: trailing spaces of the context move to the continuation, the
// continuation's ids are those of encode(context + continuation) after the ids of encode(context), and
// an empty context becomes <|endoftext|> (ASA_ERR if the tokenizer has none). ctx and cont are reset
// and filled; a continuation that encodes to nothing is an error.
int asa_encode_pair(asa_encoder *enc, const asa_tokenizer *tok, const char *context, const char *continuation,
                    asa_token_buf *ctx, asa_token_buf *cont);

// Standard error of the mean of n values with this sum and sum of squares: sample std (n-1) / sqrt(n).
double asa_mean_stderr(double sum, double sumsq, int n);

#endif
