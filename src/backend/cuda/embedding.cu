// CUDA token embedding lookup and its gradient.
#include "backend/cuda/cuda_common.cuh"

__global__ void embedding_fwd_kernel(float *out, const int32_t *tokens, const float *E, int N, int D) {
    long total = (long)N * D;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x)
        out[e] = E[(long)tokens[e / D] * D + e % D];
}

// Repeated tokens make rows of dE collide, so a thread owns a column and adds the tokens in order: no
// atomics, and every element of dE receives its additions in token order, as on the CPU.
__global__ void embedding_bwd_kernel(float *dE, const float *dout, const int32_t *tokens, int N, int D) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= D) return;
    for (int n = 0; n < N; n++) dE[(long)tokens[n] * D + j] += dout[(long)n * D + j];
}

void cuda_embedding_fwd(asa_backend *be, float *out, const int32_t *tokens, const float *E, int N, int D) {
    if ((long)N * D == 0) return;
    embedding_fwd_kernel<<<cuda_blocks((long)N * D, CUDA_THREADS), CUDA_THREADS>>>(out, tokens, E, N, D);
    CUDA_LAUNCH_CHECK();
}

void cuda_embedding_bwd(asa_backend *be, float *dE, const float *dout, const int32_t *tokens, int N, int D) {
    if ((long)N * D == 0) return;
    embedding_bwd_kernel<<<(D + 127) / 128, 128>>>(dE, dout, tokens, N, D);
    CUDA_LAUNCH_CHECK();
}
