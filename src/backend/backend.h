// The op table every backend implements. Model code (src/model) calls only these; it never knows
// whether a pointer lives in host or device memory. All float tensors are fp32 on the CPU backend.
//
// Conventions for every op:
// - Activations are row-major with one row per token: N = B*T rows, token n is position n % T of
//   sequence n / T. A "[N, h, d]" tensor is h heads of d contiguous values per row.
// - Forward ops overwrite their outputs.
// - Backward ops ACCUMULATE (+=) into every gradient they produce (parameters and activations alike);
//   the caller zeroes gradient buffers. The only in-place exceptions are rope_fwd/rope_bwd.
// - Shapes are explicit in every call; nothing is inferred from pointers.
#ifndef ASA_BACKEND_H
#define ASA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct asa_backend asa_backend;

// Shape of one attention call (all kinds). Layouts:
//   q [N, h, dk]   k [N, g, dk]   v [N, g, dv]   o [N, h, dv]   lse [N, h]   (N = B*T)
//   query head i reads key/value head i / (h/g); the g KV heads are also the selection groups.
//   Compressed (sparse kinds): kc [B, nb, g, dk], vc [B, nb, g, dv], nb = T / block_size (complete
//   blocks only; a trailing partial block is never visible to any query).
//   Block lists: idx [B, na, g, block_counts] int32, na = ceil(T / selection_share); row a holds the
//   list of anchor query a*selection_share; unused slots are -1.
typedef struct {
    int B, T;
    int h, g;            // query heads, key/value heads (h % g == 0)
    int dk, dv;          // query/key head dim, value head dim
    float scale;         // softmax scale (1/sqrt(d) for GQA kinds, 1/sqrt(d_n+d_r) for latent kinds)
    int window;          // attn_fwd/bwd: 0 = full causal, else keys t-window < s <= t
    int block_size;      // b: compression block
    int selection_block_size;  // b_s: selection block, a multiple of b
    int block_counts;    // n: blocks per query, including the forced ones (0, c-1, c)
    int selection_share; // R: divides b_s
} asa_attn_shape;

// Keys and values of a KV cache as seen by the decode ops. A key is the concatenation [k1 ; k2] of two
// parts (k2 may be empty): GQA caches use k1 alone; latent caches keep one row [c_0 .. c_{ng-1} | kr]
// per token, so a group's key is k1 = its latent c_j (head stride d_c) and k2 = the shared RoPE key
// (head stride 0), and its value is c_j again (v may alias k1). Element e of head j at row s of batch b:
//   k1[b*k1_bs + s*k1_rs + j*k1_hs + e], likewise k2 and v.
typedef struct {
    const float *k1; long k1_bs, k1_rs, k1_hs; int dk1;
    const float *k2; long k2_bs, k2_rs, k2_hs; int dk2;
    const float *v;  long v_bs, v_rs, v_hs; int dv;
} asa_kv_view;

static inline int asa_attn_num_cmp_blocks(const asa_attn_shape *s) { return s->T / s->block_size; }
static inline int asa_attn_num_anchors(const asa_attn_shape *s) {
    return (s->T + s->selection_share - 1) / s->selection_share;
}

// Arithmetic of a backend's matrix products; tensors are stored in fp32 either way.
typedef enum {
    ASA_PRECISION_FP32 = 0,  // fp32 multiplies and sums
    ASA_PRECISION_TF32 = 1,  // gemm on the tensor cores with TF32 operands (10-bit mantissa), fp32 sums (CUDA)
} asa_precision;

struct asa_backend {
    const char *name;
    asa_precision precision;
    void *ctx;  // backend-private state (threads, handles, scratch)
    void (*destroy)(asa_backend *be);  // frees ctx and be itself

    // ---- memory ----
    void *(*alloc)(asa_backend *be, size_t bytes);  // zero-filled, aligned to 64 bytes
    void (*free)(asa_backend *be, void *p);
    void (*zero)(asa_backend *be, void *p, size_t bytes);
    void (*to_device)(asa_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*to_host)(asa_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*sync)(asa_backend *be);
    // Memory the backend can still allocate, and its total (host RAM for the CPU, device memory for a GPU).
    void (*mem_info)(asa_backend *be, size_t *free_bytes, size_t *total_bytes);

    // ---- dense ----
    // Strided-batched row-major GEMM: for b in [0, batch):
    //   C_b[M,N] = alpha * op(A_b) op(B_b) + beta * C_b,  X_b = X + b*strideX,
    //   op(A) is [M,K] (A stored [K,M] when transA), op(B) is [K,N] (B stored [N,K] when transB).
    //   lda/ldb/ldc are row strides of the stored matrices. beta = 1 accumulates.
    void (*gemm)(asa_backend *be, int transA, int transB, int M, int N, int K, float alpha,
                 const float *A, int lda, long strideA, const float *B, int ldb, long strideB,
                 float beta, float *C, int ldc, long strideC, int batch);

    // out[n,:] = E[tokens[n],:]; tokens already validated to lie in [0, V).
    void (*embedding_fwd)(asa_backend *be, float *out, const int32_t *tokens, const float *E, int N, int D);
    void (*embedding_bwd)(asa_backend *be, float *dE, const float *dout, const int32_t *tokens, int N, int D);

    // RMSNorm over `groups` independent slices of C values per row: x [N, groups*C], w [groups*C],
    // rstd [N, groups] saved for backward. out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
    void (*rmsnorm_fwd)(asa_backend *be, float *out, float *rstd, const float *x, const float *w,
                        int N, int groups, int C, float eps);
    void (*rmsnorm_bwd)(asa_backend *be, float *dx, float *dw, const float *dout, const float *x,
                        const float *w, const float *rstd, int N, int groups, int C);

    // GPT-NeoX RoPE, in place. Row n has `heads` heads; head i's rotated part is the rot_dim values at
    // x + n*row_stride + i*head_stride + offset. Position of row n is pos0 + n % T.
    // rope_bwd applies the inverse rotation (the transpose), turning d(rotated) into d(unrotated).
    // The rotated parts of different heads must not overlap.
    void (*rope_fwd)(asa_backend *be, float *x, int N, int T, int pos0, int heads, int row_stride,
                     int head_stride, int offset, int rot_dim, float theta);
    void (*rope_bwd)(asa_backend *be, float *dx, int N, int T, int pos0, int heads, int row_stride,
                     int head_stride, int offset, int rot_dim, float theta);

    // SwiGLU: out = silu(gate) * up, all [N, hidden].
    void (*swiglu_fwd)(asa_backend *be, float *out, const float *gate, const float *up, int N, int hidden);
    void (*swiglu_bwd)(asa_backend *be, float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, int N, int hidden);

    // Copy `cols` values per (row, head): dst[r*dst_rs + i*dst_hs + c] (+)= src[r*src_rs + i*src_hs + c].
    // A head stride of 0 broadcasts (src) or, with accumulate, sums over heads (dst). Used to assemble
    // per-head keys from parts ([kn_i ; kr]) and to split their gradients back.
    void (*copy_heads)(asa_backend *be, float *dst, int dst_rs, int dst_hs, const float *src, int src_rs,
                       int src_hs, int rows, int heads, int cols, int accumulate);

    // Fused softmax cross-entropy over logits [N, V]. losses[n] = -log softmax(logits[n])[targets[n]],
    // 0 where targets[n] < 0. If dlogits is not NULL it is written (overwritten, may alias logits) with
    // dloss_scale * (softmax - onehot), zero rows for ignored targets.
    void (*xent_fwd_bwd)(asa_backend *be, float *losses, float *dlogits, const float *logits,
                         const int32_t *targets, int N, int V, float dloss_scale);

    // Gated sum of branches: out[n,i,:] = sum_c sigmoid(glog[n, i*nbr + c]) * br[c][n,i,:]
    // glog [N, h*nbr] (g_proj output, reshaped [h, nbr] per row), br[c] and out [N, h, dv].
    void (*gate_fwd)(asa_backend *be, float *out, const float *glog, const float *const *br, int nbr,
                     int N, int h, int dv);
    void (*gate_bwd)(asa_backend *be, float *dglog, float *const *dbr, const float *dout,
                     const float *glog, const float *const *br, int nbr, int N, int h, int dv);

    // ---- attention (shapes above) ----
    // Causal attention, full or windowed (s->window). lse [N, h] = log-sum-exp of the scaled scores.
    void (*attn_fwd)(asa_backend *be, const asa_attn_shape *s, const float *q, const float *k,
                     const float *v, float *o, float *lse);
    void (*attn_bwd)(asa_backend *be, const asa_attn_shape *s, const float *q, const float *k,
                     const float *v, const float *o, const float *lse, const float *dout,
                     float *dq, float *dk, float *dv);

    // Mean pooling of complete blocks: x [N, g, d] -> xc [B, nb, g, d] (d = dk for keys, dv for values).
    void (*compress_fwd)(asa_backend *be, const asa_attn_shape *s, int d, const float *x, float *xc);
    void (*compress_bwd)(asa_backend *be, const asa_attn_shape *s, int d, const float *dxc, float *dx);

    // Compression branch: query t attends over blocks m with (m+1)*b - 1 <= t. Rows with no visible
    // block get o = 0 and lse = -INFINITY.
    void (*attn_cmp_fwd)(asa_backend *be, const asa_attn_shape *s, const float *q, const float *kc,
                         const float *vc, float *o, float *lse);
    void (*attn_cmp_bwd)(asa_backend *be, const asa_attn_shape *s, const float *q, const float *kc,
                         const float *vc, const float *o, const float *lse, const float *dout,
                         float *dq, float *dkc, float *dvc);

    // Block selection (SPEC §4) for every anchor query a*R: scores from the compression branch's
    // probabilities exp(q.kc*scale - lse_cmp), summed over the group's heads and over the compression
    // blocks inside each selection block; forced blocks 0, c-1, c; the rest by score, ties to the lower
    // index; -1 padding. No gradient.
    void (*select_topk)(asa_backend *be, const asa_attn_shape *s, const float *q, const float *kc,
                        const float *lse_cmp, int32_t *idx);

    // Selection branch: query t (anchor a = R*floor(t/R)) attends over tokens s <= t of the blocks in
    // idx row t/R of its group.
    void (*attn_slc_fwd)(asa_backend *be, const asa_attn_shape *s, const float *q, const float *k,
                         const float *v, const int32_t *idx, float *o, float *lse);
    void (*attn_slc_bwd)(asa_backend *be, const asa_attn_shape *s, const float *q, const float *k,
                         const float *v, const int32_t *idx, const float *o, const float *lse,
                         const float *dout, float *dq, float *dk, float *dv);

    // ---- decoding: one query per sequence, q [B, h, dk1+dk2], o [B, h, dv], lse [B, h] ----
    // Attention over cache rows s0 <= s < s1 (all visible; callers pass the window or the ring's filled
    // rows). s1 <= s0 gives o = 0 and lse = -INFINITY (a compression branch with no complete block).
    void (*attn_decode)(asa_backend *be, int B, int h, int g, float scale, const float *q, const asa_kv_view *kv,
                        int s0, int s1, float *o, float *lse);
    // Block selection for the query at position t (SPEC §4, as select_topk for one anchor): kvc views the
    // pooled blocks (rows m < (t+1)/b are visible), lse_cmp [B, h] from the compression branch.
    // idx [B, g, n], ascending, -1 padded.
    void (*select_decode)(asa_backend *be, int B, int h, int g, float scale, const float *q, const asa_kv_view *kvc,
                          const float *lse_cmp, int t, int block_size, int selection_block_size, int block_counts,
                          int32_t *idx);
    // Selected branch for the query at position t: keys s <= t of the blocks in idx [B, g, n].
    void (*attn_slc_decode)(asa_backend *be, int B, int h, int g, float scale, const float *q, const asa_kv_view *kv,
                            const int32_t *idx, int t, int selection_block_size, int block_counts, float *o, float *lse);

    // ---- optimizer and reductions ----
    // AdamW on n parameters: g is scaled by grad_scale first (clipping); weight decay wd is applied
    // decoupled (p -= lr*wd*p) and the caller passes wd = 0 for 1-D tensors. step counts from 1.
    void (*adamw)(asa_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float wd, int step, float grad_scale);
    // Sum of squares in double, returned to the host.
    double (*sum_squares)(asa_backend *be, const float *x, size_t n);
    void (*scale)(asa_backend *be, float *x, size_t n, float alpha);
    void (*add)(asa_backend *be, float *y, const float *x, size_t n);  // y += x
};

// The CPU backend: fp32, OpenBLAS for gemm, OpenMP elsewhere.
asa_backend *asa_backend_cpu_new(void);
static inline void asa_backend_free(asa_backend *be) { if (be) be->destroy(be); }

#endif
