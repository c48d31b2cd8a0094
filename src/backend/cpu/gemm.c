// CPU GEMM: strided-batched row-major matrix products through OpenBLAS.
#include <cblas.h>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

// Below this many multiply-adds per matrix, one sgemm call cannot keep the cores busy, so a batch is
// spread over OpenMP threads instead, each running its sgemm on one thread.
#define GEMM_SMALL_MNK (128L * 128 * 128)

static void gemm_one(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// C = beta * C for K == 0, where BLAS would reject the leading dimensions of the empty A and B.
// beta == 0 stores zeros rather than multiplying, so NaN or Inf in C does not survive.
static void gemm_scale_c(int M, int N, float beta, float *C, int ldc) {
    if (beta == 1.0f) return;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) C[(long)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(long)i * ldc + j];
}

void cpu_gemm(asa_backend *be, int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
              long strideA, const float *B, int ldb, long strideB, float beta, float *C, int ldc, long strideC,
              int batch) {
    ASA_CHECK(M >= 0 && N >= 0 && K >= 0 && batch >= 0);
    if (M == 0 || N == 0 || batch == 0) return;
    ASA_CHECK(ldc >= N);
    if (K == 0) {
        for (int b = 0; b < batch; b++) gemm_scale_c(M, N, beta, C + b * strideC, ldc);
        return;
    }
    ASA_CHECK(lda >= (transA ? M : K) && ldb >= (transB ? K : N));

    // The OpenMP build of OpenBLAS runs single-threaded when called inside a parallel region; the
    // pthread build would start its own threads in every call, so only the OpenMP build gets here.
    if (batch > 1 && (long)M * N * K <= GEMM_SMALL_MNK && openblas_get_parallel() == 2) {
#pragma omp parallel for schedule(static)
        for (int b = 0; b < batch; b++)
            gemm_one(transA, transB, M, N, K, alpha, A + b * strideA, lda, B + b * strideB, ldb, beta,
                     C + b * strideC, ldc);
        return;
    }
    for (int b = 0; b < batch; b++)
        gemm_one(transA, transB, M, N, K, alpha, A + b * strideA, lda, B + b * strideB, ldb, beta,
                 C + b * strideC, ldc);
}
