// CUDA sigmoid-gated sum of attention branches (NSA / ASA-global mixing), forward and backward.
#include "backend/cuda/cuda_common.cuh"

#define GATE_MAX_BRANCHES 4
#define GATE_WARPS 4

// The branch pointers travel by value in the kernel's parameters.
template <typename E> struct gate_branches { const E *p[GATE_MAX_BRANCHES]; };
template <typename E> struct gate_dbranches { E *p[GATE_MAX_BRANCHES]; };

template <typename E>
__global__ void gate_fwd_kernel(E *out, const E *glog, gate_branches<E> br, int nbr, long rows, int dv) {
    long total = rows * dv;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        long r = e / dv;
        float acc = 0.0f;
        for (int c = 0; c < nbr; c++) acc += sigmoid_f(ld_f(glog + r * nbr + c)) * ld_f(br.p[c] + e);
        st_f(out + e, acc);
    }
}

// One warp per (token, head): d out / d br[c] = sigmoid(l_c); d out / d l_c = s (1 - s) (dout . br[c]).
template <typename E>
__global__ void gate_bwd_kernel(E *dglog, gate_dbranches<E> dbr, const E *dout, const E *glog, gate_branches<E> br,
                                int nbr, long rows, int dv) {
    long r = blockIdx.x * (long)GATE_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const long o = r * dv;
    for (int c = 0; c < nbr; c++) {
        float g = sigmoid_f(ld_f(glog + r * nbr + c));
        double d = 0;
        for (int k = lane; k < dv; k += 32) {
            d += (double)ld_f(dout + o + k) * ld_f(br.p[c] + o + k);
            st_f(dbr.p[c] + o + k, ld_f(dbr.p[c] + o + k) + g * ld_f(dout + o + k));
        }
        d = warp_sum_d(d);
        if (lane == 0) st_f(dglog + r * nbr + c, ld_f(dglog + r * nbr + c) + (float)(g * (1.0f - g) * d));
    }
}

template <typename E>
static void gate_fwd_launch(void *out, const void *glog, const void *const *br, int nbr, long rows, int dv) {
    gate_branches<E> b;
    for (int c = 0; c < nbr; c++) b.p[c] = (const E *)br[c];
    gate_fwd_kernel<<<cuda_blocks(rows * dv, CUDA_THREADS), CUDA_THREADS>>>((E *)out, (const E *)glog, b, nbr, rows,
                                                                           dv);
}

template <typename E>
static void gate_bwd_launch(void *dglog, void *const *dbr, const void *dout, const void *glog, const void *const *br,
                            int nbr, long rows, int dv) {
    gate_branches<E> b;
    gate_dbranches<E> db;
    for (int c = 0; c < nbr; c++) b.p[c] = (const E *)br[c], db.p[c] = (E *)dbr[c];
    gate_bwd_kernel<<<(unsigned)((rows + GATE_WARPS - 1) / GATE_WARPS), GATE_WARPS * 32>>>(
        (E *)dglog, db, (const E *)dout, (const E *)glog, b, nbr, rows, dv);
}

void cuda_gate_fwd(asa_backend *be, void *out, const void *glog, const void *const *br, int nbr, int N, int h,
                   int dv) {
    ASA_CHECK(nbr >= 1 && nbr <= GATE_MAX_BRANCHES);
    long rows = (long)N * h;
    if (rows * dv == 0) return;
    DISPATCH_ACT(be, gate_fwd_launch<act_t>(out, glog, br, nbr, rows, dv));
    CUDA_LAUNCH_CHECK();
}

void cuda_gate_bwd(asa_backend *be, void *dglog, void *const *dbr, const void *dout, const void *glog,
                   const void *const *br, int nbr, int N, int h, int dv) {
    ASA_CHECK(nbr >= 1 && nbr <= GATE_MAX_BRANCHES);
    long rows = (long)N * h;
    if (rows == 0) return;
    DISPATCH_ACT(be, gate_bwd_launch<act_t>(dglog, dbr, dout, glog, br, nbr, rows, dv));
    CUDA_LAUNCH_CHECK();
}
