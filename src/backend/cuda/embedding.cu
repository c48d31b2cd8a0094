// CUDA token embedding lookup and its gradient.
#include <cub/device/device_radix_sort.cuh>

#include "backend/cuda/cuda_common.cuh"

template <typename T>
__global__ void embedding_fwd_kernel(T *out, const int32_t *tokens, const float *E, int N, int D) {
    long total = (long)N * D;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x)
        st_f(out + e, E[(long)tokens[e / D] * D + e % D]);
}

// Repeated tokens make rows of dE collide. The positions are sorted by token with a stable radix sort (equal
// tokens keep their order), and the block of each run's first position adds the run's rows of dout into its
// row of dE in that order: no atomics, and every element of dE receives its additions in token order, as on
// the CPU. (Before, a thread owned a column and walked every token: 8 blocks, 3.4 ms at 8192 x 1024.)
__global__ void embedding_iota_kernel(int32_t *pos, int N) {
    for (int n = blockIdx.x * blockDim.x + threadIdx.x; n < N; n += gridDim.x * blockDim.x) pos[n] = n;
}

template <typename T>
__global__ void embedding_bwd_kernel(float *dE, const T *dout, const int32_t *tok, const int32_t *pos, int N, int D) {
    const int i = blockIdx.x, v = tok[i];
    if (i > 0 && tok[i - 1] == v) return;  // not the first of its run
    float *row = dE + (long)v * D;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        float acc = row[j];
        for (int k = i; k < N && tok[k] == v; k++) acc += ld_f(dout + (long)pos[k] * D + j);
        row[j] = acc;
    }
}

void cuda_embedding_fwd(asa_backend *be, void *out, const int32_t *tokens, const float *E, int N, int D) {
    if ((long)N * D == 0) return;
    DISPATCH_ACT(be, embedding_fwd_kernel<<<cuda_blocks((long)N * D, CUDA_THREADS), CUDA_THREADS>>>(
                         (act_t *)out, tokens, E, N, D));
    CUDA_LAUNCH_CHECK();
}

// dE is fp32 (a parameter gradient) in every mode. Token ids are below 2^31 (int32, not negative).
void cuda_embedding_bwd(asa_backend *be, float *dE, const void *dout, const int32_t *tokens, int N, int D) {
    if ((long)N * D == 0) return;
    size_t ws = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(NULL, ws, (const int32_t *)NULL, (int32_t *)NULL,
                                               (const int32_t *)NULL, (int32_t *)NULL, N, 0, 31));
    const size_t vec = ((size_t)N * sizeof(int32_t) + 255) / 256 * 256;
    char *scr = (char *)cuda_scratch(be, 3 * vec + ws);
    int32_t *pos = (int32_t *)scr, *tok = (int32_t *)(scr + vec), *pos_sorted = (int32_t *)(scr + 2 * vec);
    embedding_iota_kernel<<<cuda_blocks(N, CUDA_THREADS), CUDA_THREADS>>>(pos, N);
    CUDA_LAUNCH_CHECK();
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(scr + 3 * vec, ws, tokens, tok, pos, pos_sorted, N, 0, 31));
    DISPATCH_ACT(be, embedding_bwd_kernel<<<N, 128>>>(dE, (const act_t *)dout, tok, pos_sorted, N, D));
    CUDA_LAUNCH_CHECK();
}
