// The L2 read ceiling that `asa bench attn` sets the selected branch's gathers against: that branch reads
// each (anchor, group) tile's KV blocks from L2 (or through it), so its rate is bounded by how fast the
// SMs together can pull L2-resident data, well above the device-memory copy rate.
#include "backend/cuda/cuda_common.cuh"

#define PROBE_THREADS 256
#define PROBE_BLOCKS_PER_SM 8  // 2048 threads: a full H100 multiprocessor

// Every block reads the whole buffer (n 16-byte units) through L2 (ld.global.cg: not kept in L1), starting
// at its own offset so that the blocks spread over the L2 slices. The loads feed an xor that is stored
// only when it has a value a buffer of zeros cannot give, which the compiler cannot rule out.
__global__ void __launch_bounds__(PROBE_THREADS) probe_l2_kernel(const float4 *x, long n, unsigned *sink) {
    const long start = (long)blockIdx.x * (n / gridDim.x);
    unsigned acc = 0;
#pragma unroll 8
    for (long i = threadIdx.x; i < n; i += PROBE_THREADS) {
        const long e = start + i < n ? start + i : start + i - n;
        const float4 v = __ldcg(x + e);
        acc ^= __float_as_uint(v.x) ^ __float_as_uint(v.y) ^ __float_as_uint(v.z) ^ __float_as_uint(v.w);
    }
    if (acc == 0x7fc00001u) *sink = acc;
}

double asa_backend_cuda_l2_read_gbs(asa_backend *be, size_t bytes) {
    const long n = (long)(bytes / sizeof(float4));
    const int blocks = cuda_ctx_of(be)->num_sms * PROBE_BLOCKS_PER_SM;
    float4 *x = NULL;
    unsigned *sink = NULL;
    CUDA_CHECK(cudaMalloc(&x, (size_t)n * sizeof(float4)));
    CUDA_CHECK(cudaMalloc(&sink, sizeof *sink));
    CUDA_CHECK(cudaMemset(x, 0, (size_t)n * sizeof(float4)));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    float best = 1e30f;
    for (int rep = 0; rep < 6; rep++) {  // the first brings the buffer into L2
        CUDA_CHECK(cudaEventRecord(e0));
        probe_l2_kernel<<<blocks, PROBE_THREADS>>>(x, n, sink);
        CUDA_LAUNCH_CHECK();
        CUDA_CHECK(cudaEventRecord(e1));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (rep > 0 && ms < best) best = ms;
    }
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    CUDA_CHECK(cudaFree(x));
    CUDA_CHECK(cudaFree(sink));
    return (double)blocks * (double)n * sizeof(float4) / (best * 1e-3) / 1e9;
}
