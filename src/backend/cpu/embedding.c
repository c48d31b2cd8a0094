// CPU token embedding lookup and its gradient.
#include <string.h>

#include "backend/cpu/cpu_ops.h"

// Columns per task in the backward pass: a multiple of a cache line, so no two threads share one.
#define EMB_COL_CHUNK 64

void cpu_embedding_fwd(asa_backend *be, void *out_, const int32_t *tokens, const float *E, int N, int D) {
    float *out = out_;
#pragma omp parallel for schedule(static) if ((long)N * D >= CPU_PAR_MIN_WORK)
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * D, E + (size_t)tokens[n] * D, (size_t)D * sizeof(float));
}

// Repeated tokens make rows of dE collide, so threads own column ranges instead of tokens: every
// element of dE then receives its additions in token order whatever the thread count.
void cpu_embedding_bwd(asa_backend *be, float *dE, const void *dout_, const int32_t *tokens, int N, int D) {
    const float *dout = dout_;
    int nchunks = (D + EMB_COL_CHUNK - 1) / EMB_COL_CHUNK;
#pragma omp parallel for schedule(static) if ((long)N * D >= CPU_PAR_MIN_WORK)
    for (int ch = 0; ch < nchunks; ch++) {
        int j0 = ch * EMB_COL_CHUNK, j1 = j0 + EMB_COL_CHUNK < D ? j0 + EMB_COL_CHUNK : D;
        for (int n = 0; n < N; n++) {
            float *dst = dE + (size_t)tokens[n] * D;
            const float *src = dout + (size_t)n * D;
            for (int j = j0; j < j1; j++) dst[j] += src[j];
        }
    }
}
