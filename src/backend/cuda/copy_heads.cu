// CUDA strided copy of per-head column blocks (assembling and splitting per-head keys).
#include "backend/cuda/cuda_common.cuh"

// One thread per (row, head, column); with dst_hs == 0 (sum over heads) one thread per (row, column)
// adds the heads in order, which keeps that sum race-free and deterministic.
template <typename E>
__global__ void copy_heads_kernel(E *dst, int dst_rs, int dst_hs, const E *src, int src_rs, int src_hs, int rows,
                                  int heads, int cols, int accumulate, int heads_per_thread) {
    const int hgroups = heads / heads_per_thread;
    long total = (long)rows * hgroups * cols;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        int c = (int)(e % cols);
        long rh = e / cols;
        int r = (int)(rh / hgroups), i0 = (int)(rh % hgroups) * heads_per_thread;
        for (int i = i0; i < i0 + heads_per_thread; i++) {
            E *d = dst + (long)r * dst_rs + (long)i * dst_hs + c;
            float s = ld_f(src + (long)r * src_rs + (long)i * src_hs + c);
            st_f(d, accumulate ? ld_f(d) + s : s);
        }
    }
}

void cuda_copy_heads(asa_backend *be, void *dst, int dst_rs, int dst_hs, const void *src, int src_rs, int src_hs,
                     int rows, int heads, int cols, int accumulate) {
    // A zero destination head stride without accumulation would keep only the last head: a caller bug.
    ASA_CHECK(dst_hs != 0 || accumulate || heads <= 1);
    long total = (long)rows * heads * cols;
    if (total == 0) return;
    int per = dst_hs == 0 ? heads : 1;
    DISPATCH_ACT(be, copy_heads_kernel<<<cuda_blocks(total / per, CUDA_THREADS), CUDA_THREADS>>>(
                         (act_t *)dst, dst_rs, dst_hs, (const act_t *)src, src_rs, src_hs, rows, heads, cols,
                         accumulate, per));
    CUDA_LAUNCH_CHECK();
}
