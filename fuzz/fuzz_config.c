// libFuzzer target: asa_config_parse on arbitrary text (NUL-terminated copy of the input).
#include <stdlib.h>
#include <string.h>

#include "asa/config.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    asa_config cfg;
    (void)asa_config_parse(text, "fuzz.json", &cfg);
    free(text);
    return 0;
}
