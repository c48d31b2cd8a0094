// CPU optimizer step (AdamW) and the flat-vector reductions and updates around it.
#include <math.h>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

// sum_squares splits x into this many equal chunks whatever the thread count, so the order of the
// additions, and hence the result, depends on n alone.
#define SUMSQ_CHUNKS 64

// PyTorch's AdamW: decay first, p *= 1 - lr*wd, then p -= lr * mhat / (sqrt(vhat) + eps).
void cpu_adamw(asa_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
               float beta2, float eps, float wd, int step, float grad_scale) {

    ASA_CHECK(step >= 1);
    float bc1 = (float)(1.0 - pow(beta1, step));
    float bc2 = (float)(1.0 - pow(beta2, step));
    float decay = 1.0f - lr * wd;
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
    }
}

double cpu_sum_squares(asa_backend *be, const void *x_, asa_dtype t, size_t n) {
    const float *x = x_;
    ASA_CHECK(t == ASA_F32);
    double part[SUMSQ_CHUNKS];
    size_t chunk = (n + SUMSQ_CHUNKS - 1) / SUMSQ_CHUNKS;
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN_WORK)
    for (int ch = 0; ch < SUMSQ_CHUNKS; ch++) {
        size_t i0 = ch * chunk < n ? ch * chunk : n;
        size_t i1 = i0 + chunk < n ? i0 + chunk : n;
        // Four interleaved partial sums let the additions overlap; their order is still fixed.
        double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        size_t i = i0;
        for (; i + 4 <= i1; i += 4) {
            a0 += (double)x[i] * x[i];
            a1 += (double)x[i + 1] * x[i + 1];
            a2 += (double)x[i + 2] * x[i + 2];
            a3 += (double)x[i + 3] * x[i + 3];
        }
        for (; i < i1; i++) a0 += (double)x[i] * x[i];
        part[ch] = (a0 + a1) + (a2 + a3);
    }
    double s = 0;
    for (int ch = 0; ch < SUMSQ_CHUNKS; ch++) s += part[ch];
    return s;
}

void cpu_scale(asa_backend *be, float *x, size_t n, float alpha) {

#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN_WORK)
    for (size_t i = 0; i < n; i++) x[i] *= alpha;
}

void cpu_add(asa_backend *be, float *y, const float *x, size_t n) {

#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN_WORK)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
