// CUDA GEMM: strided-batched row-major products through cuBLASLt, in the backend's precision.
// FP32: fp32 operands, CUBLAS_COMPUTE_32F (no TF32), so results agree with the CPU's sgemm to rounding.
// TF32: CUBLAS_COMPUTE_32F_FAST_TF32 on the same fp32 A, B and C: the tensor cores round A and B to TF32
// and accumulate in fp32 (H100, CUDA 13, 8192^3: relative error 2.6e-4, 400 TFLOP/s; FAST_16BF on fp32
// operands measured the same, i.e. it also ran TF32 kernels).
// BF16: A and B are the bf16 tensors in memory (CUDA_R_16BF), CUBLAS_COMPUTE_32F with fp32 scale: bf16
// tensor-core products accumulated in fp32 (H100, 8192^3: 2.1e-3, 760 TFLOP/s). C and D are bf16
// activations or fp32 parameter gradients (ct); both are combinations cublasLtMatmul lists.
//
// Row-major C [M,N] (row stride ldc) is column-major C^T [N,M] with the same leading dimension, and
// C^T = op(B)^T op(A)^T: one column-major product with the operands swapped, no data moved.
#include "backend/cuda/cuda_common.cuh"

// C = beta * C for K == 0 (no product); beta == 0 stores zeros so that NaN in C does not survive.
template <typename E>
__global__ void gemm_scale_c_kernel(E *C, int M, int N, int ldc, long strideC, int batch, float beta) {
    long total = (long)batch * M * N;
    for (long e = blockIdx.x * (long)blockDim.x + threadIdx.x; e < total; e += (long)gridDim.x * blockDim.x) {
        long b = e / ((long)M * N), r = e % ((long)M * N);
        E *c = C + b * strideC + (r / N) * (long)ldc + r % N;
        st_f(c, beta == 0.0f ? 0.0f : beta * ld_f(c));
    }
}

static cublasLtMatrixLayout_t gemm_layout(cudaDataType_t type, int rows, int cols, int ld, long stride, int batch) {
    cublasLtMatrixLayout_t l;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, rows, cols, ld));
    if (batch > 1) {
        int32_t bc = batch;
        int64_t st = stride;
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &st, sizeof st));
    }
    return l;
}

// Largest power of two (<= 256) dividing the address of every batch element (elements of `esize` bytes):
// cuBLASLt's heuristic otherwise assumes 256-byte aligned operands, and the model passes views at
// arbitrary element offsets.
static uint32_t gemm_alignment(const void *p, long stride, int batch, size_t esize) {
    uint64_t bits = (uint64_t)(uintptr_t)p | 256u;
    if (batch > 1) bits |= (uint64_t)stride * esize;
    return (uint32_t)(bits & (~bits + 1));
}

void cuda_gemm(asa_backend *be, int transA, int transB, int M, int N, int K, float alpha, const void *A, int lda,
               long strideA, const void *B, int ldb, long strideB, float beta, void *C, asa_dtype ct, int ldc,
               long strideC, int batch) {
    const int bf = be->act == ASA_BF16;  // A and B are of the storage type
    // fp32 storage has no bf16 tensor to write; bf16 storage writes activations or fp32 gradients.
    ASA_CHECK(bf ? ct == ASA_BF16 || ct == ASA_F32 : ct == ASA_F32);
    ASA_CHECK(M >= 0 && N >= 0 && K >= 0 && batch >= 0);
    if (M == 0 || N == 0 || batch == 0) return;
    ASA_CHECK(ldc >= N);
    if (K == 0) {
        if (beta == 1.0f) return;
        const unsigned blocks = cuda_blocks((long)batch * M * N, CUDA_THREADS);
        if (ct == ASA_BF16)
            gemm_scale_c_kernel<<<blocks, CUDA_THREADS>>>((bf16 *)C, M, N, ldc, strideC, batch, beta);
        else
            gemm_scale_c_kernel<<<blocks, CUDA_THREADS>>>((float *)C, M, N, ldc, strideC, batch, beta);
        CUDA_LAUNCH_CHECK();
        return;
    }
    ASA_CHECK(lda >= (transA ? M : K) && ldb >= (transB ? K : N));
    cuda_ctx *cx = cuda_ctx_of(be);
    const cudaDataType_t abt = bf ? CUDA_R_16BF : CUDA_R_32F, cdt = ct == ASA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const size_t ab_size = bf ? sizeof(bf16) : sizeof(float), c_size = asa_dtype_size(ct);

    // Column-major views: B stored [K,N] row-major is [N,K] column-major (transposed when transB).
    cublasLtMatrixLayout_t la = transB ? gemm_layout(abt, K, N, ldb, strideB, batch)
                                       : gemm_layout(abt, N, K, ldb, strideB, batch);
    cublasLtMatrixLayout_t lb = transA ? gemm_layout(abt, M, K, lda, strideA, batch)
                                       : gemm_layout(abt, K, M, lda, strideA, batch);
    cublasLtMatrixLayout_t lc = gemm_layout(cdt, N, M, ldc, strideC, batch);

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &cx->lt_ws_bytes,
                                                      sizeof cx->lt_ws_bytes));
    uint32_t al_a = gemm_alignment(B, strideB, batch, ab_size), al_b = gemm_alignment(A, strideA, batch, ab_size);
    uint32_t al_c = gemm_alignment(C, strideC, batch, c_size);
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
    // The tf32 mode falls back to fp32 for a product that cuBLASLt has no reduced-precision kernel for
    // (operand alignment, say) rather than failing. bf16 operands take CUBLAS_COMPUTE_32F alone (its
    // bf16 kernels run on the tensor cores).
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
        asa_fatal("cuBLASLt has no algorithm for gemm M=%d N=%d K=%d lda=%d ldb=%d ldc=%d batch=%d (%s, C %s)", M, N,
                  K, lda, ldb, ldc, batch, asa_precision_name(be->precision), asa_dtype_name(ct));
    CUBLAS_CHECK(cublasLtMatmul(cx->lt, op, &alpha, B, la, A, lb, &beta, C, lc, C, lc, &res.algo, cx->lt_ws,
                                cx->lt_ws_bytes, 0));
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(la));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lb));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lc));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(op));
}
