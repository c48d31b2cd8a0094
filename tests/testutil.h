// Small test harness shared by every tests/test_*.c program: checks that count failures and keep going,
// relative errors against double-precision references, random fills, and guarded buffers that catch
// writes outside a tensor and elements an op forgot to write.
#ifndef ASA_TESTUTIL_H
#define ASA_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "asa/config.h"
#include "core/rng.h"

extern int tu_failures;
extern int tu_checks;

#define TU_CHECK(cond, ...)                                                        \
    do {                                                                           \
        tu_checks++;                                                               \
        if (!(cond)) {                                                             \
            tu_failures++;                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                          \
            fputc('\n', stderr);                                                   \
        }                                                                          \
    } while (0)

// ||a - ref|| / max(||ref||, tiny); NaN anywhere in a gives +inf.
double tu_rel_err(const float *a, const double *ref, size_t n);
double tu_rel_err_f(const float *a, const float *ref, size_t n);
double tu_max_abs_diff(const float *a, const double *ref, size_t n);

void tu_fill_normal(float *x, size_t n, asa_rng *r, float stddev);
void tu_fill_uniform(float *x, size_t n, asa_rng *r, float lo, float hi);

// A buffer of n floats between two guard zones, filled with a poison value (NaN) so that an element the
// op under test does not write is caught, and a write outside [0, n) is caught by tu_guard_ok.
float *tu_guarded_new(size_t n);
void tu_guarded_poison(float *p, size_t n);   // refill the body with NaN (before each run)
int tu_guard_ok(const float *p, size_t n);    // 1 if both guard zones are untouched
void tu_guarded_free(float *p);

// A validated tiny config of the given layer pattern (repeated to at least 2 layers) and selection_share
// R: D 32, 4 heads, GQA g 2 x d 8, latent d_n 8 / d_r 4 / d_v 8, d_c 16, 2 latent groups of 8, window 6,
// block 4, selection block 8, 4 blocks per query, vocab 48. Init std 0.3, far from uniform attention,
// so block selections are decisive. Exits the test on an invalid config.
asa_config tu_tiny_config(const char *pattern, int R);
// asa-tiny's shapes (SPEC §6) at the tiny test vocabulary: D 128, heads of 32 (rope 16), d_c 64,
// latent groups of 32, window 64, block 16, R 4; init std 0.1.
asa_config tu_tiny_shapes_config(const char *pattern);

// Prints "name: N checks, M failures" and returns the process exit code.
int tu_finish(const char *name);

#endif
