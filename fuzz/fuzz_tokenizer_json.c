// libFuzzer target: the tokenizer.json loader, then a short encode and decode with what it built.
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    asa_tokenizer *tok;
    if (asa_tokenizer_load(fuzz_temp_file(0, "tj", data, size), &tok) == ASA_OK) fuzz_use_tokenizer(tok);
    return 0;
}
