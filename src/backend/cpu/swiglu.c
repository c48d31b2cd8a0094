// CPU SwiGLU activation: out = silu(gate) * up, forward and backward.
#include <math.h>

#include "backend/cpu/cpu_ops.h"

// 1/(1+exp(-x)) saturates cleanly at both ends in float: exp overflow gives +inf and a 0 result.
static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void cpu_swiglu_fwd(asa_backend *be, void *out_, const void *gate_, const void *up_, int N, int hidden) {
    float *out = out_;
    const float *gate = gate_;
    const float *up = up_;
    long n_el = (long)N * hidden;
#pragma omp parallel for schedule(static) if (n_el >= CPU_PAR_MIN_WORK)
    for (long i = 0; i < n_el; i++) out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

// d silu(x)/dx = s + x s (1 - s) = s (1 + x (1 - s)), s = sigmoid(x).
void cpu_swiglu_bwd(asa_backend *be, void *dgate_, void *dup_, const void *dout_, const void *gate_, const void *up_,
                    int N, int hidden) {
    float *dgate = dgate_;
    float *dup = dup_;
    const float *dout = dout_;
    const float *gate = gate_;
    const float *up = up_;
    long n_el = (long)N * hidden;
#pragma omp parallel for schedule(static) if (n_el >= CPU_PAR_MIN_WORK)
    for (long i = 0; i < n_el; i++) {
        float g = gate[i], s = sigmoidf(g);
        dup[i] += dout[i] * g * s;
        dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
}
