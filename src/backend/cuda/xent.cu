// CUDA fused softmax cross-entropy: per-row losses (fp32) and, optionally, the logits gradient (storage
// type, like the logits). One block per row: max, then the sum of exponentials in double (as on the CPU),
// then the gradient.
#include "backend/cuda/cuda_common.cuh"

#define XENT_THREADS 256

// Block-wide reductions through shared memory; every thread gets the result.
static __device__ float block_max(float x, float *sh) {
    x = warp_max(x);
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = x;
    __syncthreads();
    float r = -INFINITY;
    for (int w = 0; w < XENT_THREADS / 32; w++) r = fmaxf(r, sh[w]);
    __syncthreads();
    return r;
}
static __device__ double block_sum_d(double x, double *sh) {
    x = warp_sum_d(x);
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = x;
    __syncthreads();
    double r = 0;
    for (int w = 0; w < XENT_THREADS / 32; w++) r += sh[w];
    __syncthreads();
    return r;
}

// dlogits may alias logits: every read of the row (max, sum, the target's logit) happens before the
// barrier inside block_sum_d, and the write pass then reads and writes element j in the same thread.
template <typename E>
__global__ void xent_kernel(float *losses, E *dlogits, const E *logits, const int32_t *targets, int V,
                            float dloss_scale) {
    __shared__ float shf[XENT_THREADS / 32];
    __shared__ double shd[XENT_THREADS / 32];
    const long n = blockIdx.x;
    const E *x = logits + n * V;
    E *dx = dlogits ? dlogits + n * V : NULL;
    const int t = targets[n];
    if (t < 0) {
        if (threadIdx.x == 0) losses[n] = 0.0f;
        if (dx)
            for (int j = threadIdx.x; j < V; j += XENT_THREADS) st_f(dx + j, 0.0f);
        return;
    }
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += XENT_THREADS) mx = fmaxf(mx, ld_f(x + j));
    mx = block_max(mx, shf);
    const float xt = ld_f(x + t);
    double sum = 0;
    for (int j = threadIdx.x; j < V; j += XENT_THREADS) sum += expf(ld_f(x + j) - mx);
    sum = block_sum_d(sum, shd);
    if (threadIdx.x == 0) losses[n] = (float)((double)mx + log(sum) - xt);
    if (dx) {
        const float inv = (float)(1.0 / sum);
        for (int j = threadIdx.x; j < V; j += XENT_THREADS)
            st_f(dx + j, dloss_scale * (expf(ld_f(x + j) - mx) * inv - (j == t ? 1.0f : 0.0f)));
    }
}

void cuda_xent_fwd_bwd(asa_backend *be, float *losses, void *dlogits, const void *logits, const int32_t *targets,
                       int N, int V, float dloss_scale) {
    if (N == 0) return;
    DISPATCH_ACT(be, xent_kernel<<<N, XENT_THREADS>>>(losses, (act_t *)dlogits, (const act_t *)logits, targets, V,
                                                      dloss_scale));
    CUDA_LAUNCH_CHECK();
}
