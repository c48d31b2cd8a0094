// CPU backend: one function per op of asa_backend (src/backend/backend.h documents each one).
// Files: gemm.c, elementwise ops in their own files, attention ops in attn_*.c.
#ifndef ASA_BACKEND_CPU_OPS_H
#define ASA_BACKEND_CPU_OPS_H

#include "backend/backend.h"

// Least work (elements touched or multiply-adds) for which an op forks OpenMP threads; below it the
// op runs on the calling thread (an `if` clause on each parallel region). Decoding one sequence issues
// dozens of ops per token on a single row each: on idle cores every fork/join costs microseconds,
// and when another process holds a core each one waits a scheduler time slice for the descheduled
// thread. 65536 keeps a small model's whole decoding step on one thread (its largest op, attention
// over a 64-key window, is ~37k multiply-adds, tens of microseconds) while training's ops, on B*T rows,
// are far above it. Only who runs the iterations changes, never their arithmetic: every op gives the
// same bits for any thread count, so the same bits with or without the clause.
#define CPU_PAR_MIN_WORK 65536

void cpu_gemm(asa_backend *be, int transA, int transB, int M, int N, int K, float alpha, const void *A, int lda, long strideA, const void *B, int ldb, long strideB, float beta, void *C, asa_dtype ct, int ldc, long strideC, int batch);
void cpu_embedding_fwd(asa_backend *be, void *out, const int32_t *tokens, const float *E, int N, int D);
void cpu_embedding_bwd(asa_backend *be, float *dE, const void *dout, const int32_t *tokens, int N, int D);
void cpu_rmsnorm_fwd(asa_backend *be, void *out, float *rstd, const void *x, const float *w, int N, int groups, int C, float eps);
void cpu_rmsnorm_bwd(asa_backend *be, void *dx, float *dw, const void *dout, const void *x, const float *w, const float *rstd, int N, int groups, int C);
void cpu_rope_fwd(asa_backend *be, void *x, int N, int T, int pos0, int heads, int row_stride, int head_stride, int offset, int rot_dim, float theta);
void cpu_rope_bwd(asa_backend *be, void *dx, int N, int T, int pos0, int heads, int row_stride, int head_stride, int offset, int rot_dim, float theta);
void cpu_swiglu_fwd(asa_backend *be, void *out, const void *gate, const void *up, int N, int hidden);
void cpu_swiglu_bwd(asa_backend *be, void *dgate, void *dup, const void *dout, const void *gate, const void *up, int N, int hidden);
void cpu_copy_heads(asa_backend *be, void *dst, int dst_rs, int dst_hs, const void *src, int src_rs, int src_hs, int rows, int heads, int cols, int accumulate);
void cpu_xent_fwd_bwd(asa_backend *be, float *losses, void *dlogits, const void *logits, const int32_t *targets, int N, int V, float dloss_scale);
void cpu_gate_fwd(asa_backend *be, void *out, const void *glog, const void *const *br, int nbr, int N, int h, int dv);
void cpu_gate_bwd(asa_backend *be, void *dglog, void *const *dbr, float *const *drow, const void *dout, const void *glog, const void *const *br, int nbr, int N, int h, int dv);
void cpu_attn_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v, void *o, float *lse);
void cpu_attn_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v, const void *o, const float *lse, const void *dout, const float *drow, void *dq, void *dk, void *dv);
void cpu_compress_fwd(asa_backend *be, const asa_attn_shape *s, int d, const void *x, void *xc);
void cpu_compress_bwd(asa_backend *be, const asa_attn_shape *s, int d, const void *dxc, void *dx);
void cpu_attn_cmp_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc, const void *vc, void *o, float *lse);
void cpu_attn_cmp_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc, const void *vc, const void *o, const float *lse, const void *dout, const float *drow, void *dq, void *dkc, void *dvc);
void cpu_select_topk(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc, const float *lse_cmp, int32_t *idx);
void cpu_attn_slc_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v, const int32_t *idx, void *o, float *lse);
void cpu_attn_slc_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v, const int32_t *idx, const void *o, const float *lse, const void *dout, const float *drow, void *dq, void *dk, void *dv);
void cpu_attn_decode(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kv, int s0, int s1, void *o, float *lse);
void cpu_select_decode(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kvc, const float *lse_cmp, int t, int block_size, int selection_block_size, int block_counts, int32_t *idx);
void cpu_attn_slc_decode(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kv, const int32_t *idx, int t, int selection_block_size, int block_counts, void *o, float *lse);
void cpu_adamw(asa_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd, int step, float grad_scale);
double cpu_sum_squares(asa_backend *be, const void *x, asa_dtype t, size_t n);
void cpu_scale(asa_backend *be, float *x, size_t n, float alpha);
void cpu_add(asa_backend *be, float *y, const float *x, size_t n);

#endif
