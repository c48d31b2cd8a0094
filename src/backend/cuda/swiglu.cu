// CUDA SwiGLU activation: out = silu(gate) * up, forward and backward.
#include "backend/cuda/cuda_common.cuh"

__global__ void swiglu_fwd_kernel(float *out, const float *gate, const float *up, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = gate[i] * sigmoid_f(gate[i]) * up[i];
}

// d silu(x)/dx = s (1 + x (1 - s)), s = sigmoid(x).
__global__ void swiglu_bwd_kernel(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                  long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float g = gate[i], s = sigmoid_f(g);
        dup[i] += dout[i] * g * s;
        dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
}

void cuda_swiglu_fwd(asa_backend *be, float *out, const float *gate, const float *up, int N, int hidden) {
    long n = (long)N * hidden;
    if (n == 0) return;
    swiglu_fwd_kernel<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS>>>(out, gate, up, n);
    CUDA_LAUNCH_CHECK();
}

void cuda_swiglu_bwd(asa_backend *be, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                     int N, int hidden) {
    long n = (long)N * hidden;
    if (n == 0) return;
    swiglu_bwd_kernel<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS>>>(dgate, dup, dout, gate, up, n);
    CUDA_LAUNCH_CHECK();
}
