// CUDA sigmoid-gated sum of attention branches (NSA / ASA-global mixing), forward and backward.
#include "backend/cuda/cuda_common.cuh"

#define GATE_MAX_BRANCHES 4
#define GATE_WARPS 4

// The branch pointers travel by value in the kernel's parameters.
template <typename E> struct gate_branches { const E *p[GATE_MAX_BRANCHES]; };
template <typename E> struct gate_dbranches { E *p[GATE_MAX_BRANCHES]; };
struct gate_rows { float *p[GATE_MAX_BRANCHES]; };  // drow per branch, or all NULL

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
// dbr is written, not added to (backend.h); drow[c] = s (dout . br[c]).
template <typename E>
__global__ void gate_bwd_kernel(E *dglog, gate_dbranches<E> dbr, gate_rows drow, const E *dout, const E *glog,
                                gate_branches<E> br, int nbr, long rows, int dv) {
    long r = blockIdx.x * (long)GATE_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const long o = r * dv;
    for (int c = 0; c < nbr; c++) {
        float g = sigmoid_f(ld_f(glog + r * nbr + c));
        double d = 0;
        for (int k = lane; k < dv; k += 32) {
            d += (double)ld_f(dout + o + k) * ld_f(br.p[c] + o + k);
            st_f(dbr.p[c] + o + k, g * ld_f(dout + o + k));
        }
        d = warp_sum_d(d);
        if (lane == 0) {
            st_f(dglog + r * nbr + c, ld_f(dglog + r * nbr + c) + (float)(g * (1.0f - g) * d));
            if (drow.p[c]) drow.p[c][r] = (float)(g * d);
        }
    }
}

// The same two kernels on rows of dv % 8 == 0 aligned to 16 bytes: one thread per 8 outputs in the
// forward; in the backward 16 lanes per (token, head) row, 8 elements each per step, and the dot products
// of a row summed over its 16 lanes (in a fixed order, as before).
template <typename E>
__global__ void gate_fwd8_kernel(E *out, const E *glog, gate_branches<E> br, int nbr, long rows, int dv) {
    const int per_row = dv / 8;
    const long total = rows * per_row;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        const long r = e / per_row, off = r * dv + (e % per_row) * 8;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, x[8];
        for (int c = 0; c < nbr; c++) {
            const float g = sigmoid_f(ld_f(glog + r * nbr + c));
            ld8(br.p[c] + off, x);
            for (int j = 0; j < 8; j++) acc[j] += g * x[j];
        }
        st8(out + off, acc);
    }
}

// The backward's loads of a step (dout and every branch) are issued together: with one branch at a
// time a thread had two 16-byte loads in flight, too few to cover the memory's latency. The dot products
// are fp32 (a row's 16 lanes x dv/16 terms, in a fixed order): doubles took 72 registers against 56 and
// made the kernel 9% slower (T 65536: 3.46 against 3.16 ms), for an error far below the tests' 1e-5.
template <typename E, int NBR>
__global__ void gate_bwd8_kernel(E *dglog, gate_dbranches<E> dbr, gate_rows drow, const E *dout, const E *glog,
                                 gate_branches<E> br, long rows, int dv) {
    const long r = (blockIdx.x * (long)blockDim.x + threadIdx.x) / 16;
    const int lane = threadIdx.x % 16;
    if (r >= rows) return;  // whole 16-lane groups leave together: the shuffles below see only live lanes
    const unsigned mask = (threadIdx.x % 32) < 16 ? 0x0000ffffu : 0xffff0000u;
    const long o = r * dv;
    float d[NBR];
    float g[NBR];
#pragma unroll
    for (int c = 0; c < NBR; c++) d[c] = 0, g[c] = sigmoid_f(ld_f(glog + r * NBR + c));
    for (int k = lane * 8; k < dv; k += 16 * 8) {
        float go[8], x[NBR][8];
        ld8(dout + o + k, go);
#pragma unroll
        for (int c = 0; c < NBR; c++) ld8(br.p[c] + o + k, x[c]);
#pragma unroll
        for (int c = 0; c < NBR; c++) {
            float db[8];
            for (int j = 0; j < 8; j++) d[c] = fmaf(go[j], x[c][j], d[c]), db[j] = g[c] * go[j];
            st8(dbr.p[c] + o + k, db);
        }
    }
#pragma unroll
    for (int c = 0; c < NBR; c++) {
        for (int w = 8; w > 0; w >>= 1) d[c] += __shfl_xor_sync(mask, d[c], w);
        if (lane == 0) {
            st_f(dglog + r * NBR + c, ld_f(dglog + r * NBR + c) + (float)(g[c] * (1.0f - g[c]) * d[c]));
            if (drow.p[c]) drow.p[c][r] = (float)(g[c] * d[c]);
        }
    }
}


template <typename E>
static void gate_fwd_launch(void *out, const void *glog, const void *const *br, int nbr, long rows, int dv) {
    gate_branches<E> b;
    for (int c = 0; c < nbr; c++) b.p[c] = (const E *)br[c];
    const void *ptr[GATE_MAX_BRANCHES + 1] = {out};
    for (int c = 0; c < nbr; c++) ptr[c + 1] = br[c];
    if (cuda_vec8_ok(ptr, nbr + 1, dv))
        gate_fwd8_kernel<<<cuda_blocks(rows * dv / 8, CUDA_THREADS), CUDA_THREADS>>>((E *)out, (const E *)glog, b, nbr,
                                                                                    rows, dv);
    else
        gate_fwd_kernel<<<cuda_blocks(rows * dv, CUDA_THREADS), CUDA_THREADS>>>((E *)out, (const E *)glog, b, nbr,
                                                                               rows, dv);
}

template <typename E>
static void gate_bwd_launch(void *dglog, void *const *dbr, float *const *drow, const void *dout, const void *glog,
                            const void *const *br, int nbr, long rows, int dv) {
    gate_branches<E> b;
    gate_dbranches<E> db;
    gate_rows dr = {};
    for (int c = 0; c < nbr; c++) b.p[c] = (const E *)br[c], db.p[c] = (E *)dbr[c], dr.p[c] = drow ? drow[c] : NULL;
    const void *ptr[2 * GATE_MAX_BRANCHES + 1] = {dout};
    for (int c = 0; c < nbr; c++) ptr[1 + 2 * c] = br[c], ptr[2 + 2 * c] = dbr[c];
    const unsigned blocks = (unsigned)((rows * 16 + CUDA_THREADS - 1) / CUDA_THREADS);
    if (cuda_vec8_ok(ptr, 2 * nbr + 1, dv)) {
        void (*kernel)(E *, gate_dbranches<E>, gate_rows, const E *, const E *, gate_branches<E>, long, int) =
            nbr == 1   ? gate_bwd8_kernel<E, 1>
            : nbr == 2 ? gate_bwd8_kernel<E, 2>
            : nbr == 3 ? gate_bwd8_kernel<E, 3>
                       : gate_bwd8_kernel<E, 4>;
        kernel<<<blocks, CUDA_THREADS>>>((E *)dglog, db, dr, (const E *)dout, (const E *)glog, b, rows, dv);
    } else
        gate_bwd_kernel<<<(unsigned)((rows + GATE_WARPS - 1) / GATE_WARPS), GATE_WARPS * 32>>>(
            (E *)dglog, db, dr, (const E *)dout, (const E *)glog, b, nbr, rows, dv);
}

void cuda_gate_fwd(asa_backend *be, void *out, const void *glog, const void *const *br, int nbr, int N, int h,
                   int dv) {
    ASA_CHECK(nbr >= 1 && nbr <= GATE_MAX_BRANCHES);
    long rows = (long)N * h;
    if (rows * dv == 0) return;
    DISPATCH_ACT(be, gate_fwd_launch<act_t>(out, glog, br, nbr, rows, dv));
    CUDA_LAUNCH_CHECK();
}

void cuda_gate_bwd(asa_backend *be, void *dglog, void *const *dbr, float *const *drow, const void *dout,
                   const void *glog, const void *const *br, int nbr, int N, int h, int dv) {
    ASA_CHECK(nbr >= 1 && nbr <= GATE_MAX_BRANCHES);
    long rows = (long)N * h;
    if (rows == 0) return;
    DISPATCH_ACT(be, gate_bwd_launch<act_t>(dglog, dbr, drow, dout, glog, br, nbr, rows, dv));
    CUDA_LAUNCH_CHECK();
}
