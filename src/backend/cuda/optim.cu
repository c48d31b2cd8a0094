// CUDA optimizer step (AdamW) and the flat-vector reductions and updates around it. All on fp32 tensors,
// except sum_squares, which also reads bf16 activations.
#include "backend/cuda/cuda_common.cuh"

// sum_squares: a fixed grid of SUMSQ_BLOCKS blocks sums equal contiguous chunks, then one block adds the
// partial sums in order: two passes, no atomics, so the result depends on n alone.
#define SUMSQ_BLOCKS 256
#define SUMSQ_THREADS 256

// PyTorch's AdamW: decay first, p *= 1 - lr*wd, then p -= lr * mhat / (sqrt(vhat) + eps).
__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                             float beta2, float eps, float decay, float bc1, float bc2, float grad_scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
    }
}

static __device__ double block_sum_d(double x) {
    __shared__ double sh[SUMSQ_THREADS / 32];
    x = warp_sum_d(x);
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = x;
    __syncthreads();
    double r = 0;
    for (int w = 0; w < SUMSQ_THREADS / 32; w++) r += sh[w];
    return r;
}

template <typename E>
__global__ void sumsq_partial_kernel(double *part, const E *x, size_t n) {
    size_t chunk = (n + SUMSQ_BLOCKS - 1) / SUMSQ_BLOCKS;
    size_t i0 = blockIdx.x * chunk < n ? blockIdx.x * chunk : n;
    size_t i1 = i0 + chunk < n ? i0 + chunk : n;
    double a = 0;
    for (size_t i = i0 + threadIdx.x; i < i1; i += SUMSQ_THREADS) {
        const double xi = ld_f(x + i);
        a += xi * xi;
    }
    a = block_sum_d(a);
    if (threadIdx.x == 0) part[blockIdx.x] = a;
}

__global__ void sumsq_final_kernel(double *part) {
    double a = block_sum_d(part[threadIdx.x]);
    if (threadIdx.x == 0) part[SUMSQ_BLOCKS] = a;
}

__global__ void scale_kernel(float *x, size_t n, float alpha) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= alpha;
}

__global__ void add_kernel(float *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

void cuda_adamw(asa_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                float beta2, float eps, float wd, int step, float grad_scale) {
    ASA_CHECK(step >= 1);
    if (n == 0) return;
    float bc1 = (float)(1.0 - pow(beta1, step));
    float bc2 = (float)(1.0 - pow(beta2, step));
    adamw_kernel<<<cuda_blocks((long)n, CUDA_THREADS), CUDA_THREADS>>>(p, g, m, v, n, lr, beta1, beta2, eps,
                                                                      1.0f - lr * wd, bc1, bc2, grad_scale);
    CUDA_LAUNCH_CHECK();
}

double cuda_sum_squares(asa_backend *be, const void *x, asa_dtype t, size_t n) {
    static_assert(SUMSQ_BLOCKS == SUMSQ_THREADS, "the final pass reads one partial per thread");
    double *part = (double *)cuda_scratch(be, (SUMSQ_BLOCKS + 1) * sizeof(double));
    if (t == ASA_BF16)
        sumsq_partial_kernel<<<SUMSQ_BLOCKS, SUMSQ_THREADS>>>(part, (const bf16 *)x, n);
    else
        sumsq_partial_kernel<<<SUMSQ_BLOCKS, SUMSQ_THREADS>>>(part, (const float *)x, n);
    CUDA_LAUNCH_CHECK();
    sumsq_final_kernel<<<1, SUMSQ_THREADS>>>(part);
    CUDA_LAUNCH_CHECK();
    double s = 0;
    CUDA_CHECK(cudaMemcpy(&s, part + SUMSQ_BLOCKS, sizeof s, cudaMemcpyDeviceToHost));
    return s;
}

void cuda_scale(asa_backend *be, float *x, size_t n, float alpha) {
    if (n == 0) return;
    scale_kernel<<<cuda_blocks((long)n, CUDA_THREADS), CUDA_THREADS>>>(x, n, alpha);
    CUDA_LAUNCH_CHECK();
}

void cuda_add(asa_backend *be, float *y, const float *x, size_t n) {
    if (n == 0) return;
    add_kernel<<<cuda_blocks((long)n, CUDA_THREADS), CUDA_THREADS>>>(y, x, n);
    CUDA_LAUNCH_CHECK();
}
