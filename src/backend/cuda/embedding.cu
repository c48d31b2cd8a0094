// CUDA token embedding lookup and its gradient.
#include "backend/cuda/cuda_common.cuh"

template <typename T>
__global__ void embedding_fwd_kernel(T *out, const int32_t *tokens, const float *E, int N, int D) {
    long total = (long)N * D;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x)
        st_f(out + e, E[(long)tokens[e / D] * D + e % D]);
}

// Repeated tokens make rows of dE collide, so a thread owns a column and adds the tokens in order: no
// atomics, and every element of dE receives its additions in token order, as on the CPU.
template <typename T>
__global__ void embedding_bwd_kernel(float *dE, const T *dout, const int32_t *tokens, int N, int D) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= D) return;
    for (int n = 0; n < N; n++) dE[(long)tokens[n] * D + j] += ld_f(dout + (long)n * D + j);
}

void cuda_embedding_fwd(asa_backend *be, void *out, const int32_t *tokens, const float *E, int N, int D) {
    if ((long)N * D == 0) return;
    DISPATCH_ACT(be, embedding_fwd_kernel<<<cuda_blocks((long)N * D, CUDA_THREADS), CUDA_THREADS>>>(
                         (act_t *)out, tokens, E, N, D));
    CUDA_LAUNCH_CHECK();
}

// dE is fp32 (a parameter gradient) in every mode.
void cuda_embedding_bwd(asa_backend *be, float *dE, const void *dout, const int32_t *tokens, int N, int D) {
    if ((long)N * D == 0) return;
    DISPATCH_ACT(be, embedding_bwd_kernel<<<(D + 127) / 128, 128>>>(dE, (const act_t *)dout, tokens, N, D));
    CUDA_LAUNCH_CHECK();
}
