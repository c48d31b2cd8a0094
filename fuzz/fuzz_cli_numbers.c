// libFuzzer target: the CLI's numeric option parsers (cli_parse_int, cli_parse_float). They live in
// src/cli/main.c beside main, so that file is compiled into this target with its main renamed; the
// other CLI sources are linked as they are.
#define main asa_cli_main_unused
#include "cli/main.c"
#undef main

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 64) return 0;
    char val[65];
    memcpy(val, data + 1, size - 1);
    val[size - 1] = 0;
    // The first byte picks a range (the ones the commands use), the rest is the option's value.
    static const long lo_i[] = {1, 0, 2, -1000};
    static const long hi_i[] = {1 << 30, 1000000000, 1 << 24, 1000};
    int k = data[0] & 3, iv = 12345;
    if (cli_parse_int("fuzz", "--n", val, lo_i[k], hi_i[k], &iv) == 0 && (iv < lo_i[k] || iv > hi_i[k])) abort();
    static const double lo_f[] = {0, 0, 1e-9, -1};
    static const double hi_f[] = {10, 1, 1e9, 1};
    float fv = 0.5f;
    if (cli_parse_float("fuzz", "--x", val, lo_f[k], hi_f[k], &fv) == 0 &&
        !(fv >= (float)lo_f[k] && fv <= (float)hi_f[k]))
        abort();
    return 0;
}
