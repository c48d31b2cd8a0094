// libFuzzer target: the tiktoken rank-file loader, then a short encode and decode with what it built.
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    asa_tokenizer *tok;
    if (asa_tokenizer_load_tiktoken(fuzz_temp_file(0, "tt", data, size), &tok) == ASA_OK) fuzz_use_tokenizer(tok);
    return 0;
}
