// The op table every backend implements. Model code (src/model) calls only these; it never knows
// whether a pointer lives in host or device memory.
//
// Two kinds of tensors cross this interface:
// - activation tensors (`void *`): activations, their gradients, the attention inputs and outputs, KV
//   caches and the compute copy of the weights that matrix products read. Their elements are of the
//   backend's storage type be->act (fp32, or bf16 in the CUDA backend's bf16 mode).
// - fp32 tensors (`float *`): master weights and parameter gradients, AdamW moments, the RMSNorm and
//   embedding weights the ops read, and every statistic (lse, rstd, losses). fp32 in every mode.
// On the CPU backend be->act is fp32, so a float array is a valid activation tensor there.
//
// Conventions for every op:
// - Activations are row-major with one row per token: N = B*T rows, token n is position n % T of
//   sequence n / T. A "[N, h, d]" tensor is h heads of d contiguous values per row.
// - Forward ops overwrite their outputs.
// - Backward ops ACCUMULATE (+=) into every gradient they produce (parameters and activations alike);
//   the caller zeroes gradient buffers. The exceptions: rope_fwd/rope_bwd work in place, xent_fwd_bwd
//   writes dlogits, gate_bwd writes its branch gradients (their only producer, so the pass that would
//   read zeros is saved), and attn_bwd writes dq, dk and dv (in every layer kind their first producer:
//   the N layer's sparse branches add theirs after it; cuDNN stores its gradients in place then, where
//   adding them would cost a pass over dq).
// - Attention backward ops take drow = rowsum(dout * o) per (row, head), [N, h] fp32, when the caller
//   already has it (gate_bwd gives it for the branches it feeds, from rows it reads anyway), or NULL:
//   the op computes it. It is the softmax backward's correction term, dS = P * (dP - drow).
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
    const void *k1; long k1_bs, k1_rs, k1_hs; int dk1;  // activation tensors (be->act)
    const void *k2; long k2_bs, k2_rs, k2_hs; int dk2;
    const void *v;  long v_bs, v_rs, v_hs; int dv;
} asa_kv_view;

static inline int asa_attn_num_cmp_blocks(const asa_attn_shape *s) { return s->T / s->block_size; }
static inline int asa_attn_num_anchors(const asa_attn_shape *s) {
    return (s->T + s->selection_share - 1) / s->selection_share;
}

#define ASA_GATE_MAX_BRANCHES 3

// Element type of a tensor in backend memory.
typedef enum { ASA_F32 = 0, ASA_BF16 = 1 } asa_dtype;
static inline size_t asa_dtype_size(asa_dtype t) { return t == ASA_BF16 ? 2 : 4; }
static inline const char *asa_dtype_name(asa_dtype t) { return t == ASA_BF16 ? "bf16" : "fp32"; }

// Model code holds activation tensors as asa_act pointers. The type is incomplete on purpose: an element
// offset cannot be taken by pointer arithmetic (wrong for bf16 storage), only with asa_act_at.
typedef struct asa_act asa_act;

// A backend's arithmetic and storage. Sums (softmax, norms, reductions, gemm accumulation) are fp32 in
// every mode.
typedef enum {
    ASA_PRECISION_FP32 = 0,  // fp32 storage, fp32 multiplies
    ASA_PRECISION_TF32 = 1,  // fp32 storage; products on the tensor cores with TF32 operands (CUDA)
    ASA_PRECISION_BF16 = 2,  // bf16 activations and weight copy; products on bf16 tensor cores (CUDA)
} asa_precision;
static inline const char *asa_precision_name(asa_precision p) {
    return p == ASA_PRECISION_BF16 ? "bf16" : p == ASA_PRECISION_TF32 ? "tf32" : "fp32";
}

struct asa_backend {
    const char *name;
    asa_precision precision;
    asa_dtype act;  // storage type of activation tensors (ASA_BF16 exactly in the bf16 mode)
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
    // n fp32 host values into / out of an activation tensor (rounded to nearest even into bf16).
    void (*act_to_device)(asa_backend *be, void *dst, const float *host_src, size_t n);
    void (*act_to_host)(asa_backend *be, float *host_dst, const void *src, size_t n);
    // n elements from src (type st) to dst (type dt), both backend memory; dt == st copies.
    void (*convert)(asa_backend *be, void *dst, asa_dtype dt, const void *src, asa_dtype st, size_t n);

    // ---- dense ----
    // Strided-batched row-major GEMM: for b in [0, batch):
    //   C_b[M,N] = alpha * op(A_b) op(B_b) + beta * C_b,  X_b = X + b*strideX,
    //   op(A) is [M,K] (A stored [K,M] when transA), op(B) is [K,N] (B stored [N,K] when transB).
    //   lda/ldb/ldc are row strides of the stored matrices. beta = 1 accumulates.
    //   A and B are activation tensors; C is one too (ct = be->act) or fp32 (ct = ASA_F32: parameter
    //   gradients, accumulated in fp32 whatever the storage type).
    void (*gemm)(asa_backend *be, int transA, int transB, int M, int N, int K, float alpha,
                 const void *A, int lda, long strideA, const void *B, int ldb, long strideB,
                 float beta, void *C, asa_dtype ct, int ldc, long strideC, int batch);

    // out[n,:] = E[tokens[n],:]; tokens already validated to lie in [0, V).
    void (*embedding_fwd)(asa_backend *be, void *out, const int32_t *tokens, const float *E, int N, int D);
    void (*embedding_bwd)(asa_backend *be, float *dE, const void *dout, const int32_t *tokens, int N, int D);

    // RMSNorm over `groups` independent slices of C values per row: x [N, groups*C], w [groups*C],
    // rstd [N, groups] saved for backward. out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps).
    void (*rmsnorm_fwd)(asa_backend *be, void *out, float *rstd, const void *x, const float *w,
                        int N, int groups, int C, float eps);
    void (*rmsnorm_bwd)(asa_backend *be, void *dx, float *dw, const void *dout, const void *x,
                        const float *w, const float *rstd, int N, int groups, int C);

    // GPT-NeoX RoPE, in place. Row n has `heads` heads; head i's rotated part is the rot_dim values at
    // x + n*row_stride + i*head_stride + offset. Position of row n is pos0 + n % T.
    // rope_bwd applies the inverse rotation (the transpose), turning d(rotated) into d(unrotated).
    // The rotated parts of different heads must not overlap.
    void (*rope_fwd)(asa_backend *be, void *x, int N, int T, int pos0, int heads, int row_stride,
                     int head_stride, int offset, int rot_dim, float theta);
    void (*rope_bwd)(asa_backend *be, void *dx, int N, int T, int pos0, int heads, int row_stride,
                     int head_stride, int offset, int rot_dim, float theta);

    // SwiGLU: out = silu(gate) * up, all [N, hidden].
    void (*swiglu_fwd)(asa_backend *be, void *out, const void *gate, const void *up, int N, int hidden);
    void (*swiglu_bwd)(asa_backend *be, void *dgate, void *dup, const void *dout, const void *gate,
                       const void *up, int N, int hidden);

    // Copy `cols` values per (row, head): dst[r*dst_rs + i*dst_hs + c] (+)= src[r*src_rs + i*src_hs + c].
    // A head stride of 0 broadcasts (src) or, with accumulate, sums over heads (dst). Used to assemble
    // per-head keys from parts ([kn_i ; kr]) and to split their gradients back.
    void (*copy_heads)(asa_backend *be, void *dst, int dst_rs, int dst_hs, const void *src, int src_rs,
                       int src_hs, int rows, int heads, int cols, int accumulate);

    // Fused softmax cross-entropy over logits [N, V]. losses[n] = -log softmax(logits[n])[targets[n]],
    // 0 where targets[n] < 0. If dlogits is not NULL it is written (overwritten, may alias logits) with
    // dloss_scale * (softmax - onehot), zero rows for ignored targets.
    void (*xent_fwd_bwd)(asa_backend *be, float *losses, void *dlogits, const void *logits,
                         const int32_t *targets, int N, int V, float dloss_scale);

    // Gated sum of branches: out[n,i,:] = sum_c sigmoid(glog[n, i*nbr + c]) * br[c][n,i,:], nbr <= 3
    // (ASA_GATE_MAX_BRANCHES). glog [N, h*nbr] (g_proj output, reshaped [h, nbr] per row), br[c] and out [N, h, dv].
    void (*gate_fwd)(asa_backend *be, void *out, const void *glog, const void *const *br, int nbr,
                     int N, int h, int dv);
    // Backward: dglog += the gate gradients; dbr[c] = sigmoid(glog_c) * dout (written, see above); when
    // drow is not NULL, drow[c] [N, h] = rowsum(dbr[c] * br[c]) from the unrounded products (the branch
    // attention's drow).
    void (*gate_bwd)(asa_backend *be, void *dglog, void *const *dbr, float *const *drow, const void *dout,
                     const void *glog, const void *const *br, int nbr, int N, int h, int dv);

    // ---- attention (shapes above) ----
    // Causal attention, full or windowed (s->window). lse [N, h] = log-sum-exp of the scaled scores.
    // The backward writes dq, dk and dv (see the conventions above).
    void (*attn_fwd)(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k,
                     const void *v, void *o, float *lse);
    void (*attn_bwd)(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k,
                     const void *v, const void *o, const float *lse, const void *dout,
                     const float *drow, void *dq, void *dk, void *dv);

    // Mean pooling of complete blocks: x [N, g, d] -> xc [B, nb, g, d] (d = dk for keys, dv for values).
    void (*compress_fwd)(asa_backend *be, const asa_attn_shape *s, int d, const void *x, void *xc);
    void (*compress_bwd)(asa_backend *be, const asa_attn_shape *s, int d, const void *dxc, void *dx);

    // Compression branch: query t attends over blocks m with (m+1)*b - 1 <= t. Rows with no visible
    // block get o = 0 and lse = -INFINITY.
    void (*attn_cmp_fwd)(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc,
                         const void *vc, void *o, float *lse);
    void (*attn_cmp_bwd)(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc,
                         const void *vc, const void *o, const float *lse, const void *dout,
                         const float *drow, void *dq, void *dkc, void *dvc);

    // Block selection (SPEC §4) for every anchor query a*R: scores from the compression branch's
    // probabilities exp(q.kc*scale - lse_cmp), summed over the group's heads and over the compression
    // blocks inside each selection block; forced blocks 0, c-1, c; the rest by score, ties to the lower
    // index; -1 padding. No gradient.
    void (*select_topk)(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc,
                        const float *lse_cmp, int32_t *idx);

    // Selection branch: query t (anchor a = R*floor(t/R)) attends over tokens s <= t of the blocks in
    // idx row t/R of its group.
    void (*attn_slc_fwd)(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k,
                         const void *v, const int32_t *idx, void *o, float *lse);
    void (*attn_slc_bwd)(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k,
                         const void *v, const int32_t *idx, const void *o, const float *lse,
                         const void *dout, const float *drow, void *dq, void *dk, void *dv);

    // ---- decoding: one query per sequence, q [B, h, dk1+dk2], o [B, h, dv], lse [B, h] ----
    // Attention over cache rows s0 <= s < s1 (all visible; callers pass the window or the ring's filled
    // rows). s1 <= s0 gives o = 0 and lse = -INFINITY (a compression branch with no complete block).
    void (*attn_decode)(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kv,
                        int s0, int s1, void *o, float *lse);
    // Block selection for the query at position t (SPEC §4, as select_topk for one anchor): kvc views the
    // pooled blocks (rows m < (t+1)/b are visible), lse_cmp [B, h] from the compression branch.
    // idx [B, g, n], ascending, -1 padded.
    void (*select_decode)(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kvc,
                          const float *lse_cmp, int t, int block_size, int selection_block_size, int block_counts,
                          int32_t *idx);
    // Selected branch for the query at position t: keys s <= t of the blocks in idx [B, g, n].
    void (*attn_slc_decode)(asa_backend *be, int B, int h, int g, float scale, const void *q, const asa_kv_view *kv,
                            const int32_t *idx, int t, int selection_block_size, int block_counts, void *o, float *lse);

    // ---- optimizer and reductions ----
    // AdamW on n fp32 master parameters: g is scaled by grad_scale first (clipping); weight decay wd is applied
    // decoupled (p -= lr*wd*p) and the caller passes wd = 0 for 1-D tensors. step counts from 1.
    void (*adamw)(asa_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float wd, int step, float grad_scale);
    // Sum of squares in double of n elements of type t, returned to the host.
    double (*sum_squares)(asa_backend *be, const void *x, asa_dtype t, size_t n);
    void (*scale)(asa_backend *be, float *x, size_t n, float alpha);
    void (*add)(asa_backend *be, float *y, const float *x, size_t n);  // y += x
};

// Element i of the activation tensor p (offsets in elements of be->act).
static inline asa_act *asa_act_at(const asa_backend *be, const void *p, size_t i) {
    return (asa_act *)((const char *)p + i * asa_dtype_size(be->act));
}

// The CPU backend: fp32, OpenBLAS for gemm, OpenMP elsewhere.
asa_backend *asa_backend_cpu_new(void);
static inline void asa_backend_free(asa_backend *be) { if (be) be->destroy(be); }

#endif
