// libFuzzer target: the tiktoken rank-file loader, then a short encode and decode with what it built.
#include "asa/tokenizer.h"
#include "core/error.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    asa_tokenizer *tok;
    if (asa_tokenizer_load_tiktoken(fuzz_temp_file(0, "tt", data, size), &tok) != ASA_OK) return 0;
    static const char text[] = "Hello world, it's 2024!\n<|endoftext|> \xff\xfe ok";
    asa_token_buf b = {0};
    if (asa_tokenizer_encode(tok, text, sizeof text - 1, ASA_ENCODE_SPECIAL, &b) == ASA_OK) {
        char *out;
        size_t len;
        if (asa_tokenizer_decode(tok, b.ids, b.n, &out, &len) == ASA_OK) free(out);
    }
    asa_token_buf_free(&b);
    asa_tokenizer_free(tok);
    return 0;
}
