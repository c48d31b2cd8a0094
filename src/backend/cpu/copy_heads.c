// CPU strided copy of per-head column blocks (assembling and splitting per-head keys).
#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

// Threads split rows only: with dst_hs == 0 all heads of a row land on the same values, and one
// thread adding them in head order keeps that sum race-free and deterministic.
void cpu_copy_heads(asa_backend *be, void *dst_, int dst_rs, int dst_hs, const void *src_, int src_rs, int src_hs,
                    int rows, int heads, int cols, int accumulate) {
    float *dst = dst_;
    const float *src = src_;
    // A zero destination head stride without accumulation would keep only the last head: a caller bug.
    ASA_CHECK(dst_hs != 0 || accumulate || heads <= 1);
#pragma omp parallel for schedule(static) if ((long)rows * heads * cols >= CPU_PAR_MIN_WORK)
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < heads; i++) {
            float *d = dst + (long)r * dst_rs + (long)i * dst_hs;
            const float *s = src + (long)r * src_rs + (long)i * src_hs;
            if (accumulate)
                for (int c = 0; c < cols; c++) d[c] += s[c];
            else
                for (int c = 0; c < cols; c++) d[c] = s[c];
        }
    }
}
