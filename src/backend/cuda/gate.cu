// CUDA sigmoid-gated sum of attention branches (NSA / ASA-global mixing), forward and backward.
#include "backend/cuda/cuda_common.cuh"

#define GATE_MAX_BRANCHES 4
#define GATE_WARPS 4

// The branch pointers travel by value in the kernel's parameters.
typedef struct { const float *p[GATE_MAX_BRANCHES]; } gate_branches;
typedef struct { float *p[GATE_MAX_BRANCHES]; } gate_dbranches;

__global__ void gate_fwd_kernel(float *out, const float *glog, gate_branches br, int nbr, long rows, int dv) {
    long total = rows * dv;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        long r = e / dv;
        float acc = 0.0f;
        for (int c = 0; c < nbr; c++) acc += sigmoid_f(glog[r * nbr + c]) * br.p[c][e];
        out[e] = acc;
    }
}

// One warp per (token, head): d out / d br[c] = sigmoid(l_c); d out / d l_c = s (1 - s) (dout . br[c]).
__global__ void gate_bwd_kernel(float *dglog, gate_dbranches dbr, const float *dout, const float *glog,
                                gate_branches br, int nbr, long rows, int dv) {
    long r = blockIdx.x * (long)GATE_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const long o = r * dv;
    for (int c = 0; c < nbr; c++) {
        float g = sigmoid_f(glog[r * nbr + c]);
        double d = 0;
        for (int k = lane; k < dv; k += 32) {
            d += (double)dout[o + k] * br.p[c][o + k];
            dbr.p[c][o + k] += g * dout[o + k];
        }
        d = warp_sum_d(d);
        if (lane == 0) dglog[r * nbr + c] += (float)(g * (1.0f - g) * d);
    }
}

void cuda_gate_fwd(asa_backend *be, float *out, const float *glog, const float *const *br, int nbr, int N, int h,
                   int dv) {
    ASA_CHECK(nbr >= 1 && nbr <= GATE_MAX_BRANCHES);
    gate_branches b;
    for (int c = 0; c < nbr; c++) b.p[c] = br[c];
    long rows = (long)N * h;
    if (rows * dv == 0) return;
    gate_fwd_kernel<<<cuda_blocks(rows * dv, CUDA_THREADS), CUDA_THREADS>>>(out, glog, b, nbr, rows, dv);
    CUDA_LAUNCH_CHECK();
}

void cuda_gate_bwd(asa_backend *be, float *dglog, float *const *dbr, const float *dout, const float *glog,
                   const float *const *br, int nbr, int N, int h, int dv) {
    ASA_CHECK(nbr >= 1 && nbr <= GATE_MAX_BRANCHES);
    gate_branches b;
    gate_dbranches db;
    for (int c = 0; c < nbr; c++) b.p[c] = br[c], db.p[c] = dbr[c];
    long rows = (long)N * h;
    if (rows == 0) return;
    gate_bwd_kernel<<<(unsigned)((rows + GATE_WARPS - 1) / GATE_WARPS), GATE_WARPS * 32>>>(dglog, db, dout, glog, b,
                                                                                         nbr, rows, dv);
    CUDA_LAUNCH_CHECK();
}
