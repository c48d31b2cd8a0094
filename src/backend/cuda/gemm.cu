// CUDA GEMM: strided-batched row-major products through cuBLASLt on fp32 operands, in the backend's
// precision. FP32: CUBLAS_COMPUTE_32F (no TF32), so results agree with the CPU's sgemm to rounding.
// TF32: CUBLAS_COMPUTE_32F_FAST_TF32 on the same fp32 A, B and C: the tensor cores round A and B to TF32
// and accumulate in fp32 (H100, CUDA 13, 8192^3: relative error 2.6e-4, 400 TFLOP/s; FAST_16BF on fp32
// operands measured the same, i.e. it also ran TF32 kernels). True bf16 products (CUDA_R_16BF operands:
// 2.1e-3, 760 TFLOP/s) need bf16 tensors in memory, which this fp32-storage backend does not have yet.
//
// Row-major C [M,N] (row stride ldc) is column-major C^T [N,M] with the same leading dimension, and
// C^T = op(B)^T op(A)^T: one column-major product with the operands swapped, no data moved.
#include "backend/cuda/cuda_common.cuh"

// C = beta * C for K == 0 (no product); beta == 0 stores zeros so that NaN in C does not survive.
__global__ void gemm_scale_c_kernel(float *C, int M, int N, int ldc, long strideC, int batch, float beta) {
    long total = (long)batch * M * N;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        long b = e / ((long)M * N), r = e % ((long)M * N);
        float *c = C + b * strideC + (r / N) * (long)ldc + r % N;
        *c = beta == 0.0f ? 0.0f : beta * *c;
    }
}

static cublasLtMatrixLayout_t gemm_layout(int rows, int cols, int ld, long stride, int batch) {
    cublasLtMatrixLayout_t l;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, CUDA_R_32F, rows, cols, ld));
    if (batch > 1) {
        int32_t bc = batch;
        int64_t st = stride;
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &st, sizeof st));
    }
    return l;
}

// Largest power of two (<= 256) dividing the address of every batch element: cuBLASLt's heuristic otherwise
// assumes 256-byte aligned operands, and the model passes views at arbitrary float offsets.
static uint32_t gemm_alignment(const void *p, long stride, int batch) {
    uint64_t bits = (uint64_t)(uintptr_t)p | 256u;
    if (batch > 1) bits |= (uint64_t)stride * sizeof(float);
    return (uint32_t)(bits & (~bits + 1));
}

void cuda_gemm(asa_backend *be, int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
               long strideA, const float *B, int ldb, long strideB, float beta, float *C, int ldc, long strideC,
               int batch) {
    ASA_CHECK(M >= 0 && N >= 0 && K >= 0 && batch >= 0);
    if (M == 0 || N == 0 || batch == 0) return;
    ASA_CHECK(ldc >= N);
    if (K == 0) {
        if (beta == 1.0f) return;
        gemm_scale_c_kernel<<<cuda_blocks((long)batch * M * N, CUDA_THREADS), CUDA_THREADS>>>(C, M, N, ldc, strideC,
                                                                                            batch, beta);
        CUDA_LAUNCH_CHECK();
        return;
    }
    ASA_CHECK(lda >= (transA ? M : K) && ldb >= (transB ? K : N));
    cuda_ctx *cx = cuda_ctx_of(be);

    // Column-major views: B stored [K,N] row-major is [N,K] column-major (transposed when transB).
    cublasLtMatrixLayout_t la = transB ? gemm_layout(K, N, ldb, strideB, batch) : gemm_layout(N, K, ldb, strideB, batch);
    cublasLtMatrixLayout_t lb = transA ? gemm_layout(M, K, lda, strideA, batch) : gemm_layout(K, M, lda, strideA, batch);
    cublasLtMatrixLayout_t lc = gemm_layout(N, M, ldc, strideC, batch);

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &cx->lt_ws_bytes,
                                                      sizeof cx->lt_ws_bytes));
    uint32_t al_a = gemm_alignment(B, strideB, batch), al_b = gemm_alignment(A, strideA, batch);
    uint32_t al_c = gemm_alignment(C, strideC, batch);
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
    // The tf32 mode falls back to fp32 for a product that cuBLASLt has no reduced-precision kernel for
    // (operand alignment, say) rather than failing.
    const cublasComputeType_t computes[2] = {CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_32F};
    cublasOperation_t opa = transB ? CUBLAS_OP_T : CUBLAS_OP_N, opb = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    for (int ci = be->precision == ASA_PRECISION_TF32 ? 0 : 1; ci < 2 && found == 0; ci++) {
        if (op) CUBLAS_CHECK(cublasLtMatmulDescDestroy(op));
        CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, computes[ci], CUDA_R_32F));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
        cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(cx->lt, op, la, lb, lc, lc, pref, 1, &res, &found);
        if (st == CUBLAS_STATUS_NOT_SUPPORTED) found = 0;
        else CUBLAS_CHECK(st);
    }
    if (found == 0)
        asa_fatal("cuBLASLt has no algorithm for gemm M=%d N=%d K=%d lda=%d ldb=%d ldc=%d batch=%d", M, N, K, lda, ldb,
                  ldc, batch);
    CUBLAS_CHECK(cublasLtMatmul(cx->lt, op, &alpha, B, la, A, lb, &beta, C, lc, C, lc, &res.algo, cx->lt_ws,
                                cx->lt_ws_bytes, 0));
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(la));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lb));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lc));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(op));
}
