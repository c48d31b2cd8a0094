// Text generation: feed a prompt through a decoder, then sample token after token.
#ifndef ASA_INFER_GENERATE_H
#define ASA_INFER_GENERATE_H

#include <stdint.h>

#include "infer/decode.h"
#include "infer/sampler.h"

typedef void (*asa_token_fn)(void *user, int32_t id);

typedef struct {
    int n_prompt, n_gen;
    double prompt_s, gen_s;  // wall time feeding the prompt, and producing the generated tokens
} asa_generate_stats;

// Feeds prompt[0..n_prompt) (n_prompt >= 1) to dec (B = 1) from its current position, then samples up to
// max_new tokens, stopping before stop_id (when >= 0). Each generated token goes to on_token as soon as
// it is drawn. dec needs room for n_prompt + max_new - 1 more tokens. ASA_ERR with a message if the
// decoder refuses a token.
int asa_generate(asa_decoder *dec, asa_sampler *s, const int32_t *prompt, int n_prompt, int max_new, int32_t stop_id,
                 asa_token_fn on_token, void *user, asa_generate_stats *st);

#endif
