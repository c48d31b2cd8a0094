// Full and sliding-window attention (attn_fwd / attn_bwd) and the compression branch's attention over
// pooled keys (attn_cmp_fwd / attn_cmp_bwd, recast as causal attention: see calls_make), bf16 storage, on
// cuDNN's fused flash-attention engine, expressed in cuDNN's backend graph API (plain C calls, no
// cudnn-frontend). The graphs are the
// scaled-dot-product patterns that cuDNN 9 fuses into one kernel per direction:
//   forward:  S = Q·K^T * scale, causal (and window) mask, softmax with its statistics (max + log sum =
//             our lse), O = P·V;
//   backward: D = rowsum(dO*O), P = exp(S - lse) under the same mask, dV = P^T·dO, dS = P*(dO·V^T - D)
//             * scale, dK = dS^T·Q, dQ = dS·K (GQA: per-query-head products summed over the group).
// One execution plan per call shape (plan_key) is built on first use and cached; a shape the engine does
// not take is remembered and served by asa's own kernels (attn_dense16.cu). cuDNN writes
// its gradients where asa's ops accumulate, so the backward adds them in. Its dQ sums with atomics: the
// backward is not bit-reproducible run to run (ASA_CUDNN=0 gives asa's deterministic kernels).
#include "backend/cuda/attn_dense16.cuh"
#include "backend/cuda/cuda_common.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if ASA_HAVE_CUDNN
#include <cudnn.h>

#define CUDNN_PLANS 32
#define GRAPH_DESCS 256
#define GRAPH_OPS 48

// Every descriptor made for one graph, kept alive with its plan and destroyed with the backend.
typedef struct {
    cudnnBackendDescriptor_t desc[GRAPH_DESCS];
    int ndesc;
    cudnnBackendDescriptor_t op[GRAPH_OPS];
    int nop;
    int64_t next_uid;   // virtual tensors
    cudnnStatus_t err;  // first failure while building, with what failed
    const char *what;
} graph;

// One cuDNN call: nb batches of sq query rows over skv keys. Strides count token rows of asa's tensors
// (a row of Q is h*dk elements): attn_fwd's batches are sequences (q_bs = T, q_rs = 1); the compression
// branch's are the b phases of the queries (see calls_make), so its rows step by b and its batches share
// one set of pooled keys (k_bs = 0), whose per-batch gradients are written apart and summed by asa.
typedef struct {
    int bwd, nb, sq, skv, h, g, dk, dv;
    long q_bs, q_rs, k_bs, k_rs;
    int window;  // keys s > t - window only (0: none)
} plan_key;

typedef struct {
    plan_key key;
    int ok;  // 1: plan ready, 0: the engine does not take this shape
    graph *g;
    cudnnBackendDescriptor_t plan;
    int64_t ws_bytes;
} cudnn_plan;

struct cuda_cudnn {
    cudnnHandle_t handle;
    cudnn_plan plans[CUDNN_PLANS];
    int nplans;
};

static cudnnBackendDescriptor_t g_new(graph *g, cudnnBackendDescriptorType_t type) {
    cudnnBackendDescriptor_t d = NULL;
    if (g->err != CUDNN_STATUS_SUCCESS) return NULL;
    ASA_CHECK(g->ndesc < GRAPH_DESCS);
    cudnnStatus_t st = cudnnBackendCreateDescriptor(type, &d);
    if (st != CUDNN_STATUS_SUCCESS) {
        g->err = st, g->what = "create descriptor";
        return NULL;
    }
    g->desc[g->ndesc++] = d;
    return d;
}

static void g_set(graph *g, cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                  cudnnBackendAttributeType_t type, int64_t n, const void *val, const char *what) {
    if (g->err != CUDNN_STATUS_SUCCESS) return;
    cudnnStatus_t st = cudnnBackendSetAttribute(d, name, type, n, val);
    if (st != CUDNN_STATUS_SUCCESS) g->err = st, g->what = what;
}

static void g_finalize(graph *g, cudnnBackendDescriptor_t d, const char *what) {
    if (g->err != CUDNN_STATUS_SUCCESS) return;
    cudnnStatus_t st = cudnnBackendFinalize(d);
    if (st != CUDNN_STATUS_SUCCESS) g->err = st, g->what = what;
}

// A 4-d tensor: uid > 0 names a tensor bound at execution; 0 makes a virtual one (an intermediate that
// never reaches memory). by_value: a host scalar passed at execution.
static cudnnBackendDescriptor_t g_tensor(graph *g, int64_t uid, cudnnDataType_t dt, const int64_t dim[4],
                                         const int64_t stride[4], bool by_value) {
    cudnnBackendDescriptor_t t = g_new(g, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const bool is_virtual = uid == 0;
    if (is_virtual) uid = g->next_uid++;
    const int64_t align = 16;
    g_set(g, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, "tensor type");
    g_set(g, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim, "tensor dims");
    g_set(g, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, stride, "tensor strides");
    g_set(g, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid");
    g_set(g, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, "tensor alignment");
    if (is_virtual) g_set(g, t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, "virtual");
    if (by_value) g_set(g, t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, "by value");
    g_finalize(g, t, "tensor");
    return t;
}

static cudnnBackendDescriptor_t g_scalar(graph *g, int64_t uid, cudnnDataType_t dt) {
    const int64_t one[4] = {1, 1, 1, 1};
    return g_tensor(g, uid, dt, one, one, true);
}

static void g_op(graph *g, cudnnBackendDescriptor_t op, const char *what) {
    g_finalize(g, op, what);
    if (g->err != CUDNN_STATUS_SUCCESS) return;
    ASA_CHECK(g->nop < GRAPH_OPS);
    g->op[g->nop++] = op;
}

// y = mode(x [, b [, t]]) elementwise (b and t broadcast); GEN_INDEX gives each element's index on `axis`.
static void g_pointwise(graph *g, cudnnPointwiseMode_t mode, cudnnDataType_t prec, cudnnBackendDescriptor_t x,
                        cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y,
                        int64_t axis) {
    cudnnBackendDescriptor_t pw = g_new(g, CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    g_set(g, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    g_set(g, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "pointwise precision");
    if (mode == CUDNN_POINTWISE_GEN_INDEX)
        g_set(g, pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
    g_finalize(g, pw, "pointwise");
    cudnnBackendDescriptor_t op = g_new(g, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    g_set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw, "pw desc");
    g_set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "pw x");
    if (b) g_set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, "pw b");
    if (t) g_set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t, "pw t");
    g_set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "pw y");
    g_op(g, op, "pointwise op");
}

// c [.., M, N] = a [.., M, K] · b [.., K, N], fp32 accumulation; batch dims broadcast (GQA heads).
static void g_matmul(graph *g, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t mm = g_new(g, CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    g_set(g, mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "matmul type");
    g_finalize(g, mm, "matmul");
    cudnnBackendDescriptor_t op = g_new(g, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    g_set(g, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a, "matmul a");
    g_set(g, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, "matmul b");
    g_set(g, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c, "matmul c");
    g_set(g, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm, "matmul desc");
    g_op(g, op, "matmul op");
}

// y = reduction of x over the dims where y is smaller (1, or a divisor: GQA group sums).
static void g_reduce(graph *g, cudnnReduceTensorOp_t red, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t rd = g_new(g, CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    g_set(g, rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "reduction type");
    g_set(g, rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &red, "reduction op");
    g_finalize(g, rd, "reduction");
    cudnnBackendDescriptor_t op = g_new(g, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    g_set(g, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd, "reduction desc");
    g_set(g, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "reduction x");
    g_set(g, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "reduction y");
    g_op(g, op, "reduction op");
}

// y = x seen with other dims / strides (the transposes of the backward).
static void g_reshape(graph *g, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t op = g_new(g, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    g_set(g, op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "reshape x");
    g_set(g, op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "reshape y");
    g_op(g, op, "reshape op");
}

// Execution-time names of the bound tensors.
enum {
    UID_Q = 1, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE, UID_NEG_INF, UID_WINDOW,
    UID_DO, UID_ONE, UID_DQ, UID_DK, UID_DV, UID_ROWDOT, UID_DQ_ACC, UID_VIRTUAL0 = 100
};

// Dims and strides of the tensors both graphs share: Q, O [nb, h, sq, d]; K, V [nb, g, skv, d] and
// transposed [nb, g, d, skv], over asa's token-major tensors (plan_key's strides).
typedef struct {
    int64_t q[4], qs[4], kt[4], kts[4], k[4], ks[4], v[4], vs[4], vt[4], vts[4], o[4], os[4];
    int64_t st[4], sts[4];  // [nb, h, sq, 1] row statistics, contiguous
    int64_t sc[4], scs[4];  // [nb, h, sq, skv] scores
    int64_t sct[4], scts[4];  // the same, transposed
    int64_t kh[4], khs[4], vh[4], vhs[4];  // [nb, h, skv, d]: per-query-head dK, dV before the group sums
    int64_t dks[4], dvs[4];  // dK, dV: K and V's strides, or [nb, skv, g, d] apart when batches share keys
} shapes;

static void set4(int64_t *x, int64_t a, int64_t b, int64_t c, int64_t d) { x[0] = a, x[1] = b, x[2] = c, x[3] = d; }

static void shapes_make(shapes *p, const plan_key *c) {
    const int64_t B = c->nb, S = c->sq, Sk = c->skv, h = c->h, g = c->g, dk = c->dk, dv = c->dv;
    const int64_t qb = c->q_bs, qr = c->q_rs, kb = c->k_bs, kr = c->k_rs;
    set4(p->q, B, h, S, dk), set4(p->qs, qb * h * dk, dk, qr * h * dk, 1);
    set4(p->kt, B, g, dk, Sk), set4(p->kts, kb * g * dk, dk, 1, kr * g * dk);
    set4(p->k, B, g, Sk, dk), set4(p->ks, kb * g * dk, dk, kr * g * dk, 1);
    set4(p->v, B, g, Sk, dv), set4(p->vs, kb * g * dv, dv, kr * g * dv, 1);
    set4(p->vt, B, g, dv, Sk), set4(p->vts, kb * g * dv, dv, 1, kr * g * dv);
    set4(p->o, B, h, S, dv), set4(p->os, qb * h * dv, dv, qr * h * dv, 1);
    set4(p->st, B, h, S, 1), set4(p->sts, h * S, S, 1, 1);
    set4(p->sc, B, h, S, Sk), set4(p->scs, h * S * Sk, S * Sk, Sk, 1);
    set4(p->sct, B, h, Sk, S), set4(p->scts, h * S * Sk, S * Sk, 1, Sk);
    set4(p->kh, B, h, Sk, dk), set4(p->khs, h * Sk * dk, Sk * dk, dk, 1);
    set4(p->vh, B, h, Sk, dv), set4(p->vhs, h * Sk * dv, Sk * dv, dv, 1);
    if (kb == 0) set4(p->dks, Sk * g * dk, dk, g * dk, 1), set4(p->dvs, Sk * g * dv, dv, g * dv, 1);
    else memcpy(p->dks, p->ks, sizeof p->dks), memcpy(p->dvs, p->vs, sizeof p->dvs);
}

// Scores outside the causal band (and the window, when there is one) become -inf: element (t, s) stays
// when t >= s and s + window > t. Index comparisons are elementwise ops the engine folds into its tiles.
// cuDNN 9.14 takes these patterns, not index arithmetic in general: a multiple of the key index is
// refused, and a strict t > s is accepted but gives wrong results (test_gpu_ops caught both).
static cudnnBackendDescriptor_t g_mask(graph *g, const shapes *p, cudnnBackendDescriptor_t x, const plan_key *c) {
    const cudnnDataType_t F = CUDNN_DATA_FLOAT, I = CUDNN_DATA_INT32, L = CUDNN_DATA_BOOLEAN;
    cudnnBackendDescriptor_t neg_inf = g_scalar(g, UID_NEG_INF, F);
    cudnnBackendDescriptor_t row = g_tensor(g, 0, I, p->sc, p->scs, false);
    cudnnBackendDescriptor_t col = g_tensor(g, 0, I, p->sc, p->scs, false);
    cudnnBackendDescriptor_t keep = g_tensor(g, 0, L, p->sc, p->scs, false);
    cudnnBackendDescriptor_t y = g_tensor(g, 0, F, p->sc, p->scs, false);
    g_pointwise(g, CUDNN_POINTWISE_GEN_INDEX, F, x, NULL, NULL, row, 2);
    g_pointwise(g, CUDNN_POINTWISE_GEN_INDEX, F, x, NULL, NULL, col, 3);
    g_pointwise(g, CUDNN_POINTWISE_CMP_GE, L, row, col, NULL, keep, 0);
    g_pointwise(g, CUDNN_POINTWISE_BINARY_SELECT, F, x, neg_inf, keep, y, 0);
    if (c->window <= 0) return y;
    cudnnBackendDescriptor_t w = g_scalar(g, UID_WINDOW, F);
    cudnnBackendDescriptor_t row2 = g_tensor(g, 0, I, p->sc, p->scs, false);
    cudnnBackendDescriptor_t col2 = g_tensor(g, 0, I, p->sc, p->scs, false);
    cudnnBackendDescriptor_t colw = g_tensor(g, 0, F, p->sc, p->scs, false);
    cudnnBackendDescriptor_t keep2 = g_tensor(g, 0, L, p->sc, p->scs, false);
    cudnnBackendDescriptor_t y2 = g_tensor(g, 0, F, p->sc, p->scs, false);
    g_pointwise(g, CUDNN_POINTWISE_GEN_INDEX, F, y, NULL, NULL, row2, 2);
    g_pointwise(g, CUDNN_POINTWISE_GEN_INDEX, F, y, NULL, NULL, col2, 3);
    g_pointwise(g, CUDNN_POINTWISE_ADD, F, col2, w, NULL, colw, 0);
    g_pointwise(g, CUDNN_POINTWISE_CMP_GT, L, colw, row2, NULL, keep2, 0);
    g_pointwise(g, CUDNN_POINTWISE_BINARY_SELECT, F, y, neg_inf, keep2, y2, 0);
    return y2;
}

static void graph_forward(graph *g, const plan_key *c) {
    const cudnnDataType_t F = CUDNN_DATA_FLOAT, H = CUDNN_DATA_BFLOAT16;
    shapes p;
    shapes_make(&p, c);
    cudnnBackendDescriptor_t q = g_tensor(g, UID_Q, H, p.q, p.qs, false);
    cudnnBackendDescriptor_t kt = g_tensor(g, UID_K, H, p.kt, p.kts, false);
    cudnnBackendDescriptor_t v = g_tensor(g, UID_V, H, p.v, p.vs, false);
    cudnnBackendDescriptor_t o = g_tensor(g, UID_O, H, p.o, p.os, false);
    cudnnBackendDescriptor_t stats = g_tensor(g, UID_STATS, F, p.st, p.sts, false);
    cudnnBackendDescriptor_t scale = g_scalar(g, UID_SCALE, F);

    cudnnBackendDescriptor_t s0 = g_tensor(g, 0, F, p.sc, p.scs, false);
    cudnnBackendDescriptor_t s1 = g_tensor(g, 0, F, p.sc, p.scs, false);
    g_matmul(g, q, kt, s0);
    g_pointwise(g, CUDNN_POINTWISE_MUL, F, s0, scale, NULL, s1, 0);
    cudnnBackendDescriptor_t sm = g_mask(g, &p, s1, c);
    // softmax, with lse = max + log(sum exp(s - max)) written out for the backward
    cudnnBackendDescriptor_t mx = g_tensor(g, 0, F, p.st, p.sts, false);
    cudnnBackendDescriptor_t d = g_tensor(g, 0, F, p.sc, p.scs, false);
    cudnnBackendDescriptor_t e = g_tensor(g, 0, F, p.sc, p.scs, false);
    cudnnBackendDescriptor_t sum = g_tensor(g, 0, F, p.st, p.sts, false);
    cudnnBackendDescriptor_t lg = g_tensor(g, 0, F, p.st, p.sts, false);
    cudnnBackendDescriptor_t pr = g_tensor(g, 0, H, p.sc, p.scs, false);
    g_reduce(g, CUDNN_REDUCE_TENSOR_MAX, sm, mx);
    g_pointwise(g, CUDNN_POINTWISE_SUB, F, sm, mx, NULL, d, 0);
    g_pointwise(g, CUDNN_POINTWISE_EXP, F, d, NULL, NULL, e, 0);
    g_reduce(g, CUDNN_REDUCE_TENSOR_ADD, e, sum);
    g_pointwise(g, CUDNN_POINTWISE_LOG, F, sum, NULL, NULL, lg, 0);
    g_pointwise(g, CUDNN_POINTWISE_ADD, F, mx, lg, NULL, stats, 0);
    g_pointwise(g, CUDNN_POINTWISE_DIV, F, e, sum, NULL, pr, 0);
    g_matmul(g, pr, v, o);
}

// y = a·b where the product has one result per query head ([nb, h, skv, d]: dims ph, strides phs) and y one
// per KV head: with GQA the product goes to a bf16 intermediate and is summed over each group's heads.
static void g_matmul_group_sum(graph *g, const plan_key *c, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b,
                               const int64_t *ph, const int64_t *phs, cudnnBackendDescriptor_t y) {
    if (c->g == c->h) {
        g_matmul(g, a, b, y);
        return;
    }
    cudnnBackendDescriptor_t per_head = g_tensor(g, 0, CUDNN_DATA_BFLOAT16, ph, phs, false);
    g_matmul(g, a, b, per_head);
    g_reduce(g, CUDNN_REDUCE_TENSOR_ADD, per_head, y);
}

static void graph_backward(graph *g, const plan_key *c) {
    const cudnnDataType_t F = CUDNN_DATA_FLOAT, H = CUDNN_DATA_BFLOAT16;
    const int64_t B = c->nb, S = c->sq, h = c->h, dk = c->dk, dv = c->dv;
    shapes p;
    shapes_make(&p, c);
    cudnnBackendDescriptor_t q = g_tensor(g, UID_Q, H, p.q, p.qs, false);
    cudnnBackendDescriptor_t kt = g_tensor(g, UID_K, H, p.kt, p.kts, false);
    cudnnBackendDescriptor_t vt = g_tensor(g, UID_V, H, p.vt, p.vts, false);
    cudnnBackendDescriptor_t o = g_tensor(g, UID_O, H, p.o, p.os, false);
    cudnnBackendDescriptor_t dout = g_tensor(g, UID_DO, H, p.o, p.os, false);
    cudnnBackendDescriptor_t stats = g_tensor(g, UID_STATS, F, p.st, p.sts, false);
    cudnnBackendDescriptor_t scale = g_scalar(g, UID_SCALE, F);
    cudnnBackendDescriptor_t one = g_scalar(g, UID_ONE, F);
    cudnnBackendDescriptor_t dq = g_tensor(g, UID_DQ, H, p.q, p.qs, false);
    cudnnBackendDescriptor_t dk_ = g_tensor(g, UID_DK, H, p.k, p.dks, false);
    cudnnBackendDescriptor_t dv_ = g_tensor(g, UID_DV, H, p.v, p.dvs, false);
    cudnnBackendDescriptor_t rowdot = g_tensor(g, UID_ROWDOT, F, p.st, p.sts, false);
    const int64_t qc[4] = {B, h, S, dk}, qcs[4] = {h * S * dk, S * dk, dk, 1};
    cudnnBackendDescriptor_t dq_acc = g_tensor(g, UID_DQ_ACC, F, qc, qcs, false);

    // D = rowsum(dO * O)
    const int64_t pos[4] = {h * S * dv, S * dv, h * dv, 1};
    cudnnBackendDescriptor_t t1 = g_tensor(g, 0, F, p.o, pos, false);
    cudnnBackendDescriptor_t t2 = g_tensor(g, 0, F, p.st, p.sts, false);
    g_pointwise(g, CUDNN_POINTWISE_MUL, F, dout, o, NULL, t1, 0);
    g_reduce(g, CUDNN_REDUCE_TENSOR_ADD, t1, t2);
    g_pointwise(g, CUDNN_POINTWISE_MUL, F, t2, one, NULL, rowdot, 0);

    // P = exp(S * scale - lse), masked
    cudnnBackendDescriptor_t s0 = g_tensor(g, 0, F, p.sc, p.scs, false);
    cudnnBackendDescriptor_t s1 = g_tensor(g, 0, F, p.sc, p.scs, false);
    cudnnBackendDescriptor_t s2 = g_tensor(g, 0, F, p.sc, p.scs, false);
    g_matmul(g, q, kt, s0);
    g_pointwise(g, CUDNN_POINTWISE_MUL, F, s0, scale, NULL, s1, 0);
    g_pointwise(g, CUDNN_POINTWISE_SUB, F, s1, stats, NULL, s2, 0);
    cudnnBackendDescriptor_t sm = g_mask(g, &p, s2, c);
    cudnnBackendDescriptor_t pe = g_tensor(g, 0, F, p.sc, p.scs, false);
    g_pointwise(g, CUDNN_POINTWISE_EXP, F, sm, NULL, NULL, pe, 0);

    // dV = P^T · dO (summed over the group's query heads)
    cudnnBackendDescriptor_t pt = g_tensor(g, 0, H, p.sct, p.scts, false);
    g_reshape(g, pe, pt);
    g_matmul_group_sum(g, c, pt, dout, p.vh, p.vhs, dv_);

    // dS = P * (dO · V^T - D) * scale
    cudnnBackendDescriptor_t dp = g_tensor(g, 0, F, p.sc, p.scs, false);
    cudnnBackendDescriptor_t x1 = g_tensor(g, 0, F, p.sc, p.scs, false);
    cudnnBackendDescriptor_t x2 = g_tensor(g, 0, F, p.sc, p.scs, false);
    cudnnBackendDescriptor_t ds = g_tensor(g, 0, F, p.sc, p.scs, false);
    g_matmul(g, dout, vt, dp);
    g_pointwise(g, CUDNN_POINTWISE_SUB, F, dp, rowdot, NULL, x1, 0);
    g_pointwise(g, CUDNN_POINTWISE_MUL, F, x1, pe, NULL, x2, 0);
    g_pointwise(g, CUDNN_POINTWISE_MUL, F, x2, scale, NULL, ds, 0);

    // dK = dS^T · Q (summed over the group)
    cudnnBackendDescriptor_t dst = g_tensor(g, 0, H, p.sct, p.scts, false);
    g_reshape(g, ds, dst);
    g_matmul_group_sum(g, c, dst, q, p.kh, p.khs, dk_);

    // dQ = dS · K, summed in fp32 then stored
    cudnnBackendDescriptor_t k = g_tensor(g, 0, H, p.k, p.ks, false);
    g_reshape(g, kt, k);
    g_matmul(g, ds, k, dq_acc);
    g_pointwise(g, CUDNN_POINTWISE_IDENTITY, F, dq_acc, NULL, NULL, dq, 0);
}

static void graph_free(graph *g) {
    if (!g) return;
    for (int i = g->ndesc - 1; i >= 0; i--) cudnnBackendDestroyDescriptor(g->desc[i]);
    free(g);
}

// Builds the operation graph and takes the first engine configuration of cuDNN's heuristics that
// finalizes into a plan. Returns 0 (with the reason in *why) when none does.
static int plan_build(cuda_cudnn *c, cudnn_plan *pl, char *why, size_t why_size) {
    graph *g = (graph *)asa_calloc(1, sizeof *g);
    g->next_uid = UID_VIRTUAL0;
    pl->g = g;
    if (pl->key.bwd) graph_backward(g, &pl->key);
    else graph_forward(g, &pl->key);
    cudnnBackendDescriptor_t og = g_new(g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    g_set(g, og, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, g->nop, g->op, "graph ops");
    g_set(g, og, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &c->handle, "graph handle");
    g_finalize(g, og, "operation graph");
    cudnnBackendDescriptor_t heur = g_new(g, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    g_set(g, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &og, "heur graph");
    g_set(g, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heur mode");
    g_finalize(g, heur, "heuristics");
    int64_t ncfg = 0;
    if (g->err == CUDNN_STATUS_SUCCESS) {
        cudnnStatus_t st = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &ncfg, NULL);
        if (st != CUDNN_STATUS_SUCCESS) g->err = st, g->what = "heuristics results";
    }
    if (g->err == CUDNN_STATUS_SUCCESS && ncfg == 0) g->err = CUDNN_STATUS_NOT_SUPPORTED, g->what = "no engine";
    if (ncfg > 8) ncfg = 8;
    cudnnBackendDescriptor_t cfg[8];
    for (int64_t i = 0; i < ncfg; i++) cfg[i] = g_new(g, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    if (g->err == CUDNN_STATUS_SUCCESS) {
        int64_t got = 0;
        cudnnStatus_t st = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                    CUDNN_TYPE_BACKEND_DESCRIPTOR, ncfg, &got, cfg);
        if (st != CUDNN_STATUS_SUCCESS) g->err = st, g->what = "heuristics results";
        ncfg = got < ncfg ? got : ncfg;
    }
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    for (int64_t i = 0; i < ncfg && g->err == CUDNN_STATUS_SUCCESS; i++) {
        cudnnBackendDescriptor_t plan = g_new(g, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        g_set(g, plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &c->handle, "plan handle");
        g_set(g, plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg[i],
              "plan config");
        if (g->err != CUDNN_STATUS_SUCCESS) break;
        last = cudnnBackendFinalize(plan);
        if (last != CUDNN_STATUS_SUCCESS) continue;
        int64_t n = 0;
        cudnnStatus_t st = cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                    CUDNN_TYPE_INT64, 1, &n, &pl->ws_bytes);
        if (st != CUDNN_STATUS_SUCCESS) {
            g->err = st, g->what = "plan workspace size";
            break;
        }
        pl->plan = plan;
        return 1;
    }
    if (g->err == CUDNN_STATUS_SUCCESS) g->err = last, g->what = "execution plan";
    char detail[256] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    snprintf(why, why_size, "%s: %s%s%s", g->what, cudnnGetErrorString(g->err), detail[0] ? ": " : "", detail);
    graph_free(g);
    pl->g = NULL;
    return 0;
}

// The plan for this call's shape: built on first use, NULL when cuDNN does not take the shape.
static cudnn_plan *plan_for(asa_backend *be, const plan_key *key) {
    cuda_ctx *cx = cuda_ctx_of(be);
    cuda_cudnn *c = cx->cudnn;
    if (!c) {
        c = (cuda_cudnn *)asa_calloc(1, sizeof *c);
        cudnnStatus_t st = cudnnCreate(&c->handle);
        if (st != CUDNN_STATUS_SUCCESS) {
            fprintf(stderr, "asa: cuDNN unusable (%s); attention runs asa's kernels\n", cudnnGetErrorString(st));
            free(c);
            cx->use_cudnn = 0;
            return NULL;
        }
        cx->cudnn = c;
    }
    for (int i = 0; i < c->nplans; i++)
        if (memcmp(&c->plans[i].key, key, sizeof *key) == 0) return c->plans[i].ok ? &c->plans[i] : NULL;
    if (c->nplans == CUDNN_PLANS) return NULL;  // many shapes in one process: the rest run asa's kernels
    cudnn_plan *pl = &c->plans[c->nplans++];
    pl->key = *key;
    char why[512];
    pl->ok = plan_build(c, pl, why, sizeof why);
    if (!pl->ok)
        fprintf(stderr,
                "asa: cuDNN takes no %s %s attention of %d x %d rows, %d keys, heads %d/%d, dims %d/%d, window %d "
                "(%s); asa's kernels run it\n",
                key->k_bs == 0 ? "compressed" : "dense", key->bwd ? "backward" : "forward", key->nb, key->sq,
                key->skv, key->h, key->g, key->dk, key->dv, key->window, why);
    return pl->ok ? pl : NULL;
}

static void plan_run(asa_backend *be, cudnn_plan *pl, int n, const int64_t *uids, void *const *ptrs, void *ws) {
    cuda_cudnn *c = cuda_ctx_of(be)->cudnn;
    cudnnBackendDescriptor_t vp = NULL;
    cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(vp);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendExecute(c->handle, pl->plan, vp);
    if (vp) cudnnBackendDestroyDescriptor(vp);
    if (st != CUDNN_STATUS_SUCCESS) asa_fatal("cuDNN attention: execute: %s", cudnnGetErrorString(st));
}

// lse (asa: [token row, h]) <-> statistics of one call ([nb, h, sq], contiguous): row r of batch z is
// token row z*q_bs + r*q_rs from the call's first row, where lse points.
__global__ void lse_from_stats_kernel(float *lse, const float *stats, int h, int sq, long q_bs, long q_rs, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long r = i % sq, zj = i / sq, j = zj % h, z = zj / h;
        lse[(z * q_bs + r * q_rs) * h + j] = stats[i];
    }
}
__global__ void stats_from_lse_kernel(float *stats, const float *lse, int h, int sq, long q_bs, long q_rs, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long r = i % sq, zj = i / sq, j = zj % h, z = zj / h;
        stats[i] = lse[(z * q_bs + r * q_rs) * h + j];
    }
}

// dst += the sum of `parts` bf16 arrays of n values laid end to end in src (n a multiple of 8, 16-byte
// aligned), in fp32, in part order: asa's backward ops accumulate, and batches that shared keys in one
// cuDNN call got their key gradients apart.
__global__ void add_parts_bf16_kernel(bf16 *dst, const bf16 *src, int parts, long n8) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n8; i += (long)gridDim.x * blockDim.x) {
        uint4 a = ((const uint4 *)dst)[i];
        __nv_bfloat162 *x = (__nv_bfloat162 *)&a;
        float acc[8];
        for (int j = 0; j < 4; j++) {
            const float2 f = __bfloat1622float2(x[j]);
            acc[2 * j] = f.x, acc[2 * j + 1] = f.y;
        }
        for (int p = 0; p < parts; p++) {
            uint4 b = ((const uint4 *)src)[p * n8 + i];
            const __nv_bfloat162 *y = (const __nv_bfloat162 *)&b;
            for (int j = 0; j < 4; j++) {
                const float2 f = __bfloat1622float2(y[j]);
                acc[2 * j] += f.x, acc[2 * j + 1] += f.y;
            }
        }
        for (int j = 0; j < 4; j++) x[j] = __floats2bfloat162_rn(acc[2 * j], acc[2 * j + 1]);
        ((uint4 *)dst)[i] = a;
    }
}

static void add_parts_bf16(void *dst, const void *src, int parts, long n) {
    add_parts_bf16_kernel<<<cuda_blocks(n / 8, CUDA_THREADS), CUDA_THREADS>>>((bf16 *)dst, (const bf16 *)src, parts,
                                                                               n / 8);
    CUDA_LAUNCH_CHECK();
}

static size_t round256(size_t n) { return (n + 255) & ~(size_t)255; }

static bool cudnn_takes(asa_backend *be, const asa_attn_shape *s, const void *const *ptr, int n) {
    if (!cuda_ctx_of(be)->use_cudnn || be->act != ASA_BF16) return false;
    // rows of whole 128-row tiles (cuDNN 9.14 pads other lengths with extra mask inputs); head dims the
    // engine takes; 16-byte aligned rows
    if (s->T % 128 != 0 || s->dk % 8 != 0 || s->dv % 8 != 0 || s->dk > 256 || s->dv > 256) return false;
    for (int i = 0; i < n; i++)
        if (((uintptr_t)ptr[i] & 15) != 0) return false;
    return true;
}

// The calls of one attention op. Dense: one, over all sequences. Compression branch (block b, R = T/b
// pooled keys): query t = r*b + i sees the pooled keys m <= (t+1)/b - 1, that is m <= r-1 for the phases
// i < b-1 and m <= r for i = b-1. So per sequence, phases 0..b-2 form b-1 batches of the R-1 rows r >= 1
// (row r-1 of a batch at token r*b + i, seeing keys m <= r-1), and phase b-1 one batch of R rows (row r
// at token r*b + b-1, keys m <= r): causal attention over R keys, the pattern cuDNN runs fastest, at the
// FLOPs the mask allows. Rows r = 0 of phases i < b-1 (t < b-1) see nothing and run in no call.
typedef struct {
    plan_key key;
    long q0, k0;  // first token row of Q / O and of K / V
} call;

#define CUDNN_MAX_CALLS 64

static int calls_make(const asa_attn_shape *s, int bwd, int cmp, call *c) {
    memset(c, 0, sizeof(call) * (cmp ? 2 * s->B : 1));
    if (!cmp) {
        const int window = s->window > 0 && s->window < s->T ? s->window : 0;
        c[0].key = (plan_key){bwd, s->B, s->T, s->T, s->h, s->g, s->dk, s->dv, s->T, 1, s->T, 1, window};
        return 1;
    }
    const int b = s->block_size, R = s->T / b;
    for (int z = 0; z < s->B; z++) {
        c[2 * z].key = (plan_key){bwd, b - 1, R - 1, R, s->h, s->g, s->dk, s->dv, 1, b, 0, 1, 0};
        c[2 * z].q0 = (long)z * s->T + b, c[2 * z].k0 = (long)z * R;
        c[2 * z + 1].key = (plan_key){bwd, 1, R, R, s->h, s->g, s->dk, s->dv, s->T, b, 0, 1, 0};
        c[2 * z + 1].q0 = (long)z * s->T + b - 1, c[2 * z + 1].k0 = (long)z * R;
    }
    return 2 * s->B;
}

// Plans for every call, or 0 when cuDNN does not take one of them (nothing has run yet). *ws: the largest
// workspace.
static int calls_plan(asa_backend *be, const asa_attn_shape *s, const void *const *ptr, int nptr, int bwd, int cmp,
                      call *c, cudnn_plan **pl, size_t *ws) {
    if (!cudnn_takes(be, s, ptr, nptr)) return 0;
    // the backward's own threshold where asa's warpgroup kernels would serve it, the forward's elsewhere
    const int min_keys = cuda_ctx_of(be)->cudnn_cmp_min_keys[bwd && cuda_dense16_bwd_wg(be, s)];
    if (cmp && (s->block_size < 2 || s->T % s->block_size != 0 || s->T / s->block_size < 2 ||
                s->T / s->block_size < min_keys || 2 * s->B > CUDNN_MAX_CALLS))
        return 0;
    const int n = calls_make(s, bwd, cmp, c);
    *ws = 0;
    for (int i = 0; i < n; i++) {
        if (!(pl[i] = plan_for(be, &c[i].key))) return 0;
        if ((size_t)pl[i]->ws_bytes > *ws) *ws = (size_t)pl[i]->ws_bytes;
    }
    return n;
}

static long call_rows(const plan_key *k) { return (long)k->nb * k->h * k->sq; }

// Rows t < b - 1 see no complete block and are in no call: o = 0 and lse = -inf, as asa's kernels give.
__global__ void empty_rows_kernel(bf16 *o, float *lse, int T, int h, int dv, int rows, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long b = i / ((long)rows * h), r = i % ((long)rows * h), t = r / h, j = r % h;
        const long row = (b * T + t) * h + j;
        lse[row] = -INFINITY;
        for (int e = 0; e < dv; e++) o[row * dv + e] = __float2bfloat16(0.0f);
    }
}

static bool cudnn_fwd(asa_backend *be, const asa_attn_shape *s, int cmp, const void *q, const void *k,
                      const void *v, void *o, float *lse) {
    const void *ptr[] = {q, k, v, o};
    call c[CUDNN_MAX_CALLS];
    cudnn_plan *pl[CUDNN_MAX_CALLS];
    size_t ws;
    const int n = calls_plan(be, s, ptr, 4, 0, cmp, c, pl, &ws);
    if (!n) return false;
    long nstats = 0;
    for (int i = 0; i < n; i++) nstats = call_rows(&c[i].key) > nstats ? call_rows(&c[i].key) : nstats;
    char *scr = (char *)cuda_scratch(be, round256(ws) + round256((size_t)nstats * sizeof(float)));
    float *stats = (float *)(scr + round256(ws));
    const size_t es = sizeof(bf16);
    float scale = s->scale, neg_inf = -INFINITY, window = (float)c[0].key.window;
    for (int i = 0; i < n; i++) {
        const plan_key *key = &c[i].key;
        const int64_t uids[] = {UID_Q, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE, UID_NEG_INF, UID_WINDOW};
        void *const ptrs[] = {(char *)q + c[i].q0 * s->h * s->dk * es, (char *)k + c[i].k0 * s->g * s->dk * es,
                              (char *)v + c[i].k0 * s->g * s->dv * es, (char *)o + c[i].q0 * s->h * s->dv * es,
                              stats, &scale, &neg_inf, &window};
        plan_run(be, pl[i], key->window ? 8 : 7, uids, ptrs, scr);
        const long nr = call_rows(key);
        lse_from_stats_kernel<<<cuda_blocks(nr, CUDA_THREADS), CUDA_THREADS>>>(lse + c[i].q0 * s->h, stats, s->h,
                                                                               key->sq, key->q_bs, key->q_rs, nr);
        CUDA_LAUNCH_CHECK();
    }
    if (cmp) {
        const int empty = s->block_size - 1;
        const long ne = (long)s->B * empty * s->h;
        empty_rows_kernel<<<cuda_blocks(ne, CUDA_THREADS), CUDA_THREADS>>>((bf16 *)o, lse, s->T, s->h, s->dv, empty,
                                                                           ne);
        CUDA_LAUNCH_CHECK();
    }
    cuda_ctx_of(be)->cudnn_calls++;
    return true;
}

static bool cudnn_bwd(asa_backend *be, const asa_attn_shape *s, int cmp, const void *q, const void *k,
                      const void *v, const void *o, const float *lse, const void *dout, void *dq, void *dk,
                      void *dv) {
    const void *ptr[] = {q, k, v, o, dout, dq, dk, dv};
    call c[CUDNN_MAX_CALLS];
    cudnn_plan *pl[CUDNN_MAX_CALLS];
    size_t ws;
    const int n = calls_plan(be, s, ptr, 8, 1, cmp, c, pl, &ws);
    if (!n) return false;
    // Scratch: workspace, one call's statistics, D and fp32 dQ; the compression branch's bf16 dQ of every row
    // and one sequence's key gradients, batches apart, which it adds to the op's. The dense op writes its
    // gradients (backend.h): cuDNN's graph stores them in place.
    const long N = (long)s->B * s->T, nkeys = cmp ? (long)s->T / s->block_size : s->T;
    const int parts = cmp ? s->block_size : 1;
    const long kseq = cmp ? (long)parts * nkeys : 0;  // key rows of the gradients one pass adds
    long nr = 0;
    for (int i = 0; i < n; i++) nr = call_rows(&c[i].key) > nr ? call_rows(&c[i].key) : nr;
    const size_t es = sizeof(bf16);
    const size_t sz[] = {ws, (size_t)nr * 4, (size_t)nr * 4, (size_t)nr * s->dk * 4,
                         (size_t)(cmp ? N : 0) * s->h * s->dk * es, (size_t)kseq * s->g * s->dk * es,
                         (size_t)kseq * s->g * s->dv * es};
    size_t off[8] = {0};
    for (int i = 0; i < 7; i++) off[i + 1] = off[i] + round256(sz[i]);
    char *scr = (char *)cuda_scratch(be, off[7]);
    float *stats = (float *)(scr + off[1]), *rowdot = (float *)(scr + off[2]), *dq_acc = (float *)(scr + off[3]);
    char *gq = cmp ? scr + off[4] : (char *)dq, *gk = cmp ? scr + off[5] : (char *)dk;
    char *gv = cmp ? scr + off[6] : (char *)dv;
    float scale = s->scale, one = 1.0f, neg_inf = -INFINITY, window = (float)c[0].key.window;
    for (int z = 0; cmp && z < s->B; z++)  // rows t < b-1: no call writes their dQ
        CUDA_CHECK(cudaMemsetAsync(gq + (long)z * s->T * s->h * s->dk * es, 0,
                                   (size_t)(s->block_size - 1) * s->h * s->dk * es, 0));
    for (int i = 0; i < n; i++) {
        const plan_key *key = &c[i].key;
        const long rows = call_rows(key);
        stats_from_lse_kernel<<<cuda_blocks(rows, CUDA_THREADS), CUDA_THREADS>>>(stats, lse + c[i].q0 * s->h, s->h,
                                                                                 key->sq, key->q_bs, key->q_rs, rows);
        CUDA_LAUNCH_CHECK();
        // this call's key gradients: after the earlier calls' of its sequence (compression branch: phase b-1
        // after phases 0..b-2)
        const long kpart = cmp && (i % 2) ? (long)(parts - 1) * nkeys : 0;
        const long qo = c[i].q0 * s->h, ko = c[i].k0 * s->g;
        const int64_t uids[] = {UID_Q,   UID_K,       UID_V,  UID_O,  UID_DO, UID_STATS,  UID_SCALE, UID_ONE,
                                UID_NEG_INF, UID_DQ, UID_DK, UID_DV, UID_ROWDOT, UID_DQ_ACC, UID_WINDOW};
        void *const ptrs[] = {(char *)q + qo * s->dk * es,    (char *)k + ko * s->dk * es,
                              (char *)v + ko * s->dv * es,    (char *)o + qo * s->dv * es,
                              (char *)dout + qo * s->dv * es, stats,
                              &scale,                         &one,
                              &neg_inf,                       gq + qo * s->dk * es,
                              gk + kpart * s->g * s->dk * es, gv + kpart * s->g * s->dv * es,
                              rowdot,                         dq_acc,
                              &window};
        plan_run(be, pl[i], key->window ? 15 : 14, uids, ptrs, scr);
        if (cmp && i % 2) {  // a sequence's key gradients are complete
            add_parts_bf16((char *)dk + c[i].k0 * s->g * s->dk * es, gk, parts, nkeys * s->g * s->dk);
            add_parts_bf16((char *)dv + c[i].k0 * s->g * s->dv * es, gv, parts, nkeys * s->g * s->dv);
        }
    }
    if (cmp) add_parts_bf16(dq, gq, 1, N * s->h * s->dk);
    cuda_ctx_of(be)->cudnn_calls++;
    return true;
}

bool cuda_cudnn_attn_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                         void *o, float *lse) {
    return cudnn_fwd(be, s, 0, q, k, v, o, lse);
}
bool cuda_cudnn_attn_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                         const void *o, const float *lse, const void *dout, void *dq, void *dk, void *dv) {
    return cudnn_bwd(be, s, 0, q, k, v, o, lse, dout, dq, dk, dv);
}
bool cuda_cudnn_attn_cmp_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc,
                             const void *vc, void *o, float *lse) {
    return cudnn_fwd(be, s, 1, q, kc, vc, o, lse);
}
bool cuda_cudnn_attn_cmp_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc,
                             const void *vc, const void *o, const float *lse, const void *dout, void *dq, void *dkc,
                             void *dvc) {
    return cudnn_bwd(be, s, 1, q, kc, vc, o, lse, dout, dq, dkc, dvc);
}

void cuda_cudnn_release(cuda_ctx *cx) {
    cuda_cudnn *c = cx->cudnn;
    if (!c) return;
    for (int i = 0; i < c->nplans; i++) graph_free(c->plans[i].g);
    cudnnDestroy(c->handle);
    free(c);
    cx->cudnn = NULL;
}

int cuda_cudnn_version(void) { return (int)cudnnGetVersion(); }

#else  // built without cuDNN: asa's kernels serve every shape

bool cuda_cudnn_attn_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                         void *o, float *lse) {
    return false;
}
bool cuda_cudnn_attn_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                         const void *o, const float *lse, const void *dout, void *dq, void *dk, void *dv) {
    return false;
}
bool cuda_cudnn_attn_cmp_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc,
                             const void *vc, void *o, float *lse) {
    return false;
}
bool cuda_cudnn_attn_cmp_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *kc,
                             const void *vc, const void *o, const float *lse, const void *dout, void *dq, void *dkc,
                             void *dvc) {
    return false;
}
void cuda_cudnn_release(cuda_ctx *cx) {}
int cuda_cudnn_version(void) { return 0; }

#endif
