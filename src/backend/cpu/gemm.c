// CPU GEMM: strided-batched row-major matrix products through OpenBLAS.
#include <cblas.h>
#include <omp.h>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

// Below this many multiply-adds per matrix, one sgemm call cannot keep the cores busy, so a batch is
// spread over OpenMP threads instead, each running its sgemm on one thread.
#define GEMM_SMALL_MNK (128L * 128 * 128)

// OpenBLAS (0.3.21, OpenMP build) forks omp_get_max_threads() threads for every product above
// 4 * 65536 multiply-adds, M = 1 included: a decoding step's logits. Below this many (~0.2 ms on one
// core at M = 1) the product runs on the calling thread instead, for the reason at CPU_PAR_MIN_WORK.
#define GEMM_PAR_MIN_MNK (16L * CPU_PAR_MIN_WORK)

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

void cpu_gemm(asa_backend *be, int transA, int transB, int M, int N, int K, float alpha, const void *A_, int lda,
              long strideA, const void *B_, int ldb, long strideB, float beta, void *C_, asa_dtype ct, int ldc,
              long strideC, int batch) {
    const float *A = A_, *B = B_;
    float *C = C_;
    ASA_CHECK(ct == ASA_F32);
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
    const long mnk = (long)M * N * K;
    if (batch > 1 && mnk <= GEMM_SMALL_MNK && mnk * batch >= CPU_PAR_MIN_WORK && openblas_get_parallel() == 2) {
#pragma omp parallel for schedule(static)
        for (int b = 0; b < batch; b++)
            gemm_one(transA, transB, M, N, K, alpha, A + b * strideA, lda, B + b * strideB, ldb, beta,
                     C + b * strideC, ldc);
        return;
    }
    // omp_set_num_threads changes only this thread's setting, which OpenBLAS reads; restored after.
    const int nt = omp_get_max_threads();
    if (mnk < GEMM_PAR_MIN_MNK) omp_set_num_threads(1);
    for (int b = 0; b < batch; b++)
        gemm_one(transA, transB, M, N, K, alpha, A + b * strideA, lda, B + b * strideB, ldb, beta,
                 C + b * strideC, ldc);
    if (mnk < GEMM_PAR_MIN_MNK) omp_set_num_threads(nt);
}
