// CPU RMSNorm over independent slices of each row, forward and backward.
#include <math.h>

#include "backend/cpu/cpu_ops.h"

// Columns per task of the weight-gradient pass (see cpu_rmsnorm_bwd).
#define RMS_COL_CHUNK 64

void cpu_rmsnorm_fwd(asa_backend *be, void *out_, float *rstd, const void *x_, const float *w, int N, int groups,
                     int C, float eps) {
    float *out = out_;
    const float *x = x_;
    long row = (long)groups * C;
#pragma omp parallel for schedule(static) if (N * row >= CPU_PAR_MIN_WORK)
    for (int n = 0; n < N; n++) {
        for (int gi = 0; gi < groups; gi++) {
            const float *xs = x + n * row + (long)gi * C;
            const float *ws = w + (long)gi * C;
            float *os = out + n * row + (long)gi * C;
            double ss = 0;
            for (int c = 0; c < C; c++) ss += (double)xs[c] * xs[c];
            float r = (float)(1.0 / sqrt(ss / C + eps));
            for (int c = 0; c < C; c++) os[c] = xs[c] * r * ws[c];
            rstd[(long)n * groups + gi] = r;
        }
    }
}

// With out_c = x_c r w_c and r = (mean(x^2) + eps)^(-1/2), dr/dx_c = -r^3 x_c / C, so
//   dx_c = r w_c dout_c - (r^3 / C) x_c sum_k(dout_k w_k x_k),   dw_c = sum_n dout_c x_c r.
void cpu_rmsnorm_bwd(asa_backend *be, void *dx_, float *dw, const void *dout_, const void *x_, const float *w,
                     const float *rstd, int N, int groups, int C) {
    float *dx = dx_;
    const float *dout = dout_;
    const float *x = x_;
    long row = (long)groups * C;
#pragma omp parallel for schedule(static) if (N * row >= CPU_PAR_MIN_WORK)
    for (int n = 0; n < N; n++) {
        for (int gi = 0; gi < groups; gi++) {
            long o = n * row + (long)gi * C;
            const float *ws = w + (long)gi * C;
            float r = rstd[(long)n * groups + gi];
            double dot = 0;
            for (int c = 0; c < C; c++) dot += (double)dout[o + c] * ws[c] * x[o + c];
            float k = (float)((double)r * r * r * dot / C);
            for (int c = 0; c < C; c++) dx[o + c] += r * ws[c] * dout[o + c] - k * x[o + c];
        }
    }
    // dw sums over rows: threads own column ranges and add rows in order, which keeps the result
    // free of races and identical for every thread count.
    int nchunks = (int)((row + RMS_COL_CHUNK - 1) / RMS_COL_CHUNK);
#pragma omp parallel for schedule(static) if (N * row >= CPU_PAR_MIN_WORK)
    for (int ch = 0; ch < nchunks; ch++) {
        long j0 = (long)ch * RMS_COL_CHUNK, j1 = j0 + RMS_COL_CHUNK < row ? j0 + RMS_COL_CHUNK : row;
        double acc[RMS_COL_CHUNK] = {0};
        for (int n = 0; n < N; n++)
            for (long j = j0; j < j1; j++)
                acc[j - j0] += (double)dout[n * row + j] * x[n * row + j] * rstd[(long)n * groups + j / C];
        for (long j = j0; j < j1; j++) dw[j] += (float)acc[j - j0];
    }
}
