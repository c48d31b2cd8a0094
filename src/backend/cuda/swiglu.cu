// CUDA SwiGLU activation: out = silu(gate) * up, forward and backward.
#include "backend/cuda/cuda_common.cuh"

template <typename E>
__global__ void swiglu_fwd_kernel(E *out, const E *gate, const E *up, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float g = ld_f(gate + i);
        st_f(out + i, g * sigmoid_f(g) * ld_f(up + i));
    }
}

// d silu(x)/dx = s (1 + x (1 - s)), s = sigmoid(x).
template <typename E>
__global__ void swiglu_bwd_kernel(E *dgate, E *dup, const E *dout, const E *gate, const E *up, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float g = ld_f(gate + i), s = sigmoid_f(g);
        st_f(dup + i, ld_f(dup + i) + ld_f(dout + i) * g * s);
        st_f(dgate + i, ld_f(dgate + i) + ld_f(dout + i) * ld_f(up + i) * s * (1.0f + g * (1.0f - s)));
    }
}

void cuda_swiglu_fwd(asa_backend *be, void *out, const void *gate, const void *up, int N, int hidden) {
    long n = (long)N * hidden;
    if (n == 0) return;
    DISPATCH_ACT(be, swiglu_fwd_kernel<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS>>>(
                         (act_t *)out, (const act_t *)gate, (const act_t *)up, n));
    CUDA_LAUNCH_CHECK();
}

void cuda_swiglu_bwd(asa_backend *be, void *dgate, void *dup, const void *dout, const void *gate, const void *up,
                     int N, int hidden) {
    long n = (long)N * hidden;
    if (n == 0) return;
    DISPATCH_ACT(be, swiglu_bwd_kernel<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS>>>(
                         (act_t *)dgate, (act_t *)dup, (const act_t *)dout, (const act_t *)gate, (const act_t *)up, n));
    CUDA_LAUNCH_CHECK();
}
