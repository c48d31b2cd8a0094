// CPU sigmoid-gated sum of attention branches (NSA / ASA-global mixing), forward and backward.
#include <math.h>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void cpu_gate_fwd(asa_backend *be, void *out_, const void *glog_, const void *const *br_, int nbr, int N, int h,
                  int dv) {
    float *out = out_;
    const float *glog = glog_;
    const float *br[ASA_GATE_MAX_BRANCHES];
    ASA_CHECK(nbr <= ASA_GATE_MAX_BRANCHES);
    for (int c = 0; c < nbr; c++) br[c] = br_[c];
#pragma omp parallel for schedule(static) if ((long)N * h * nbr * dv >= CPU_PAR_MIN_WORK)
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < h; i++) {
            long o = ((long)n * h + i) * dv;
            float *os = out + o;
            for (int k = 0; k < dv; k++) os[k] = 0.0f;
            for (int c = 0; c < nbr; c++) {
                float g = sigmoidf(glog[((long)n * h + i) * nbr + c]);
                const float *bs = br[c] + o;
                for (int k = 0; k < dv; k++) os[k] += g * bs[k];
            }
        }
    }
}

// d out / d br[c] = sigmoid(l_c); d out / d l_c = sigmoid'(l_c) br[c] with sigmoid' = s (1 - s).
void cpu_gate_bwd(asa_backend *be, void *dglog_, void *const *dbr_, float *const *drow, const void *dout_,
                  const void *glog_, const void *const *br_, int nbr, int N, int h, int dv) {
    float *dglog = dglog_;
    float *dbr[ASA_GATE_MAX_BRANCHES];
    const float *dout = dout_;
    const float *glog = glog_;
    const float *br[ASA_GATE_MAX_BRANCHES];
    ASA_CHECK(nbr <= ASA_GATE_MAX_BRANCHES);
    for (int c = 0; c < nbr; c++) {
        br[c] = br_[c];
        dbr[c] = dbr_[c];
    }
#pragma omp parallel for schedule(static) if ((long)N * h * nbr * dv >= CPU_PAR_MIN_WORK)
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < h; i++) {
            long o = ((long)n * h + i) * dv;
            const float *ds = dout + o;
            for (int c = 0; c < nbr; c++) {
                long gidx = ((long)n * h + i) * nbr + c;
                float g = sigmoidf(glog[gidx]);
                const float *bs = br[c] + o;
                float *dbs = dbr[c] + o;
                double dot = 0;
                for (int k = 0; k < dv; k++) {
                    dot += (double)ds[k] * bs[k];
                    dbs[k] = g * ds[k];
                }
                dglog[gidx] += (float)(g * (1.0f - g) * dot);
                if (drow) drow[c][(long)n * h + i] = (float)(g * dot);
            }
        }
    }
}
