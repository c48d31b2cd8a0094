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

// The same over 8 columns a thread (cols and every stride multiples of 8, 16-byte aligned): the scalar kernel's
// two-byte accesses and per-element divisions made the per-head copies of an ASA layer about 0.34 ms at T 8192.
// A sum over heads keeps the destination in registers, rounded to the storage type after each head as the
// scalar kernel's stores round it.
template <typename E>
__global__ void copy_heads8_kernel(E *dst, int dst_rs, int dst_hs, const E *src, int src_rs, int src_hs, int rows,
                                   int heads, int cols8, int accumulate, int heads_per_thread) {
    const int hgroups = heads / heads_per_thread;
    const long total = (long)rows * hgroups * cols8;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        const int c = (int)(e % cols8) * 8;
        const long rh = e / cols8;
        const int r = (int)(rh / hgroups), i0 = (int)(rh % hgroups) * heads_per_thread;
        E *d = dst + (long)r * dst_rs + (long)i0 * dst_hs + c;
        float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        if (accumulate) ld8(d, acc);
        for (int i = i0; i < i0 + heads_per_thread; i++) {
            float x[8];
            ld8(src + (long)r * src_rs + (long)i * src_hs + c, x);
#pragma unroll
            for (int u = 0; u < 8; u++) acc[u] = accumulate ? round_to(d, acc[u] + x[u]) : x[u];
        }
        st8(d, acc);
    }
}

void cuda_copy_heads(asa_backend *be, void *dst, int dst_rs, int dst_hs, const void *src, int src_rs, int src_hs,
                     int rows, int heads, int cols, int accumulate) {
    // A zero destination head stride without accumulation would keep only the last head: a caller bug.
    ASA_CHECK(dst_hs != 0 || accumulate || heads <= 1);
    long total = (long)rows * heads * cols;
    if (total == 0) return;
    int per = dst_hs == 0 ? heads : 1;
    const void *vp[] = {dst, src};
    if (cuda_vec8_ok(vp, 2, cols) && dst_rs % 8 == 0 && dst_hs % 8 == 0 && src_rs % 8 == 0 && src_hs % 8 == 0)
        DISPATCH_ACT(be, copy_heads8_kernel<<<cuda_blocks(total / per / 8, CUDA_THREADS), CUDA_THREADS>>>(
                             (act_t *)dst, dst_rs, dst_hs, (const act_t *)src, src_rs, src_hs, rows, heads, cols / 8,
                             accumulate, per));
    else
        DISPATCH_ACT(be, copy_heads_kernel<<<cuda_blocks(total / per, CUDA_THREADS), CUDA_THREADS>>>(
                             (act_t *)dst, dst_rs, dst_hs, (const act_t *)src, src_rs, src_hs, rows, heads, cols,
                             accumulate, per));
    CUDA_LAUNCH_CHECK();
}
