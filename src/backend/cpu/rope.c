// CPU rotary position embedding (GPT-NeoX rotate-half, SPEC §1), in place, and its inverse.
//
// Angles are computed in double for every (row, frequency) and only their cosine and sine are rounded
// to float: an fp32 angle p * f at p ~ 65536 would be off by ~4e-3 radians, a table would need
// max-position rows of state. A row's cos/sin are shared by all its heads.
#include <math.h>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

// dir = +1 rotates by +angle (forward); dir = -1 by -angle, the transpose (backward).
static void rope_apply(float *x, int N, int T, int pos0, int heads, int row_stride, int head_stride, int offset,
                       int rot_dim, float theta, int dir) {
    ASA_CHECK(rot_dim % 2 == 0 && T > 0);
    int half = rot_dim / 2;
    double step = pow((double)theta, -2.0 / rot_dim);
    // Work in rotations: a double cos and sin per (row, frequency) cost about 32 of them.
#pragma omp parallel for schedule(static) if ((long)N * half * (heads + 32) >= CPU_PAR_MIN_WORK)
    for (int n = 0; n < N; n++) {
        double p = (double)pos0 + n % T;
        float *xr = x + (long)n * row_stride + offset;
        double f = 1.0;  // theta^(-2i/rot_dim), by repeated multiplication: ~1e-15 relative drift
        for (int i = 0; i < half; i++, f *= step) {
            double a = p * f;
            float c = (float)cos(a), s = dir * (float)sin(a);
            for (int hd = 0; hd < heads; hd++) {
                float *u = xr + (long)hd * head_stride;
                float u0 = u[i], u1 = u[i + half];
                u[i] = u0 * c - u1 * s;
                u[i + half] = u1 * c + u0 * s;
            }
        }
    }
}

void cpu_rope_fwd(asa_backend *be, void *x_, int N, int T, int pos0, int heads, int row_stride, int head_stride,
                  int offset, int rot_dim, float theta) {
    float *x = x_;
    rope_apply(x, N, T, pos0, heads, row_stride, head_stride, offset, rot_dim, theta, 1);
}

void cpu_rope_bwd(asa_backend *be, void *dx_, int N, int T, int pos0, int heads, int row_stride, int head_stride,
                  int offset, int rot_dim, float theta) {
    float *dx = dx_;
    rope_apply(dx, N, T, pos0, heads, row_stride, head_stride, offset, rot_dim, theta, -1);
}
