// `asa bench cpu` and `asa bench train`: training throughput of a config (forward, backward and AdamW on
// synthetic tokens), model FLOPs and the fraction of a matrix-product peak measured in the same run on
// the same device through the backend's own gemm: OpenBLAS sgemm on the CPU; on a GPU a cuBLASLt gemm in
// the backend's precision (fp32 with TF32 off, TF32 tensor cores, or bf16 tensor cores on bf16 operands:
// see gemm.cu). `asa bench attn`: one layer's attention ops alone (training passes or
// one decoding step), op by op, against that gemm and a device copy.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "asa/config.h"
#include "cli/cli.h"
#include "cli/device.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/synthetic.h"
#include "model/flops.h"
#include "model/model.h"
#include "train/optimizer.h"

#ifdef ASA_HAVE_CUDA
#include <cuda_runtime.h>

#include "backend/cuda/cuda_backend.h"
#endif

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int is_cuda(const asa_backend *be) { return !strcmp(be->name, "cuda"); }

// Best of a few n^3 products C = A B^T through the backend's gemm, in GFLOP/s. Random operands:
// zeros can run faster than real data.
static double gemm_gflops(asa_backend *be, int n) {
    size_t nn = (size_t)n * n, esz = asa_dtype_size(be->act);
    float *h = asa_malloc(sizeof(float) * nn);
    asa_rng r;
    asa_rng_seed(&r, 3);
    for (size_t i = 0; i < nn; i++) h[i] = (float)asa_rng_uniform(&r) - 0.5f;
    void *a = be->alloc(be, esz * nn), *b = be->alloc(be, esz * nn), *c = be->alloc(be, esz * nn);
    be->act_to_device(be, a, h, nn);
    be->act_to_device(be, b, h, nn);
    free(h);
    double best = 1e30;
    for (int rep = 0; rep < 6; rep++) {  // the first is a warm-up (heuristics, first touch)
        be->sync(be);
        double t = now_sec();
        be->gemm(be, 0, 1, n, n, n, 1.0f, a, n, 0, b, n, 0, 0.0f, c, be->act, n, 0, 1);
        be->sync(be);
        t = now_sec() - t;
        if (rep > 0 && t < best) best = t;
    }
    be->free(be, a);
    be->free(be, b);
    be->free(be, c);
    return 2.0 * n * n * (double)n / best / 1e9;
}

// Bytes of GPU memory in use on the current device (all processes), or -1 without CUDA.
static double gpu_used_bytes(const asa_backend *be) {
#ifdef ASA_HAVE_CUDA
    size_t free_b = 0, total_b = 0;
    if (is_cuda(be) && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) return (double)(total_b - free_b);
#endif
    return -1;
}

// ----------------------------------------------------------------------------
// asa bench attn: the attention ops of one layer (model.c's call sequence for the kind), on random
// inputs, timed op by op. No projections: from q/k/v and the gate logits to the gated output and back.

#define ATTN_MAX_OPS 8

typedef struct {
    char kind;                      // N, G, F or W
    int B, T, h, g, d, rope;        // G: d is the latent dim (values), keys are [latent ; rope]
    int b, bs, n, w, R;
    int repeats, decode, breakdown, ceilings;
} attn_opts;

// Timestamps between the ops of one pass: CUDA events on the default stream (every op of the CUDA
// backend runs there), or on the CPU, whose ops return when done, the host clock.
typedef struct {
    asa_backend *be;
    int gpu, n;  // n: ops marked in this pass
    const char *name[ATTN_MAX_OPS];
    double host[ATTN_MAX_OPS + 1];
#ifdef ASA_HAVE_CUDA
    cudaEvent_t ev[ATTN_MAX_OPS + 1];
#endif
} op_marks;

#ifdef ASA_HAVE_CUDA
static void cuda_ok(cudaError_t err, const char *what) {
    if (err != cudaSuccess) asa_fatal("asa bench attn: %s: %s", what, cudaGetErrorString(err));
}
#endif

static void marks_init(op_marks *m, asa_backend *be) {
    memset(m, 0, sizeof *m);
    m->be = be;
    m->gpu = is_cuda(be);
#ifdef ASA_HAVE_CUDA
    for (int i = 0; m->gpu && i <= ATTN_MAX_OPS; i++) cuda_ok(cudaEventCreate(&m->ev[i]), "cudaEventCreate");
#endif
}

static void marks_free(op_marks *m) {
#ifdef ASA_HAVE_CUDA
    for (int i = 0; m->gpu && i <= ATTN_MAX_OPS; i++) cuda_ok(cudaEventDestroy(m->ev[i]), "cudaEventDestroy");
#endif
    (void)m;
}

static void marks_record(op_marks *m, int i) {
#ifdef ASA_HAVE_CUDA
    if (m->gpu) {
        cuda_ok(cudaEventRecord(m->ev[i], 0), "cudaEventRecord");
        return;
    }
#endif
    m->be->sync(m->be);
    m->host[i] = now_sec();
}

static void marks_start(op_marks *m) {
    m->n = 0;
    marks_record(m, 0);
}

// Marks the end of the op (or ops) named, launched since the previous mark.
static void marks_op(op_marks *m, const char *name) {
    ASA_CHECK(m->n < ATTN_MAX_OPS);
    m->name[m->n++] = name;
    marks_record(m, m->n);
}

// Milliseconds of op i of the finished pass (waits for it).
static double marks_ms(op_marks *m, int i) {
#ifdef ASA_HAVE_CUDA
    if (m->gpu) {
        float ms = 0;
        cuda_ok(cudaEventSynchronize(m->ev[m->n]), "cudaEventSynchronize");
        cuda_ok(cudaEventElapsedTime(&ms, m->ev[i], m->ev[i + 1]), "cudaEventElapsedTime");
        return ms;
    }
#endif
    return 1e3 * (m->host[i + 1] - m->host[i]);
}

static double median(double *x, int n) {
    for (int i = 1; i < n; i++)  // insertion sort: a handful of repeats
        for (int j = i; j > 0 && x[j - 1] > x[j]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

// Per-op times of `repeats` passes: times[rep * ATTN_MAX_OPS + op] in ms.
typedef struct {
    int nops, repeats;
    const char *name[ATTN_MAX_OPS];
    double *times;
} op_times;

static void times_add(op_times *t, op_marks *m, int rep) {
    t->nops = m->n;
    for (int i = 0; i < m->n; i++) {
        t->name[i] = m->name[i];
        t->times[rep * ATTN_MAX_OPS + i] = marks_ms(m, i);
    }
}

// Median over the passes of the whole sequence's time.
static double times_total(const op_times *t) {
    double *x = asa_malloc(sizeof(double) * t->repeats);
    for (int r = 0; r < t->repeats; r++) {
        x[r] = 0;
        for (int i = 0; i < t->nops; i++) x[r] += t->times[r * ATTN_MAX_OPS + i];
    }
    double m = median(x, t->repeats);
    free(x);
    return m;
}

// Median over the passes of op i's time.
static double times_op(const op_times *t, int i) {
    double *x = asa_malloc(sizeof(double) * t->repeats);
    for (int r = 0; r < t->repeats; r++) x[r] = t->times[r * ATTN_MAX_OPS + i];
    const double m = median(x, t->repeats);
    free(x);
    return m;
}

// The same for the op named `name`; -1 when the passes have none.
static double times_named(const op_times *t, const char *name) {
    for (int i = 0; i < t->nops; i++)
        if (!strcmp(t->name[i], name)) return times_op(t, i);
    return -1;
}

static void times_print(const op_times *t, const char *what) {
    const double total = times_total(t);
    printf("  %s by op (median ms, share of the median total):\n", what);
    for (int i = 0; i < t->nops; i++) {
        const double mi = times_op(t, i);
        printf("    %-22s %11.4f ms %6.1f%%\n", t->name[i], mi, total > 0 ? 100.0 * mi / total : 0.0);
    }
}

// Uniform values of unit variance, from one generator per 2^18 elements (seeded by the element's chunk),
// so that gigabytes fill in parallel and the same on any thread count. Uploaded through a bounded host
// buffer.
static void fill_random(asa_backend *be, asa_act *dst, size_t n, uint64_t seed) {
    const size_t chunk = (size_t)1 << 18, stage = chunk * 64;
    const double half = sqrt(3.0);
    float *h = asa_malloc(sizeof(float) * (n < stage ? n : stage));
    for (size_t off = 0; off < n; off += stage) {
        const size_t len = n - off < stage ? n - off : stage;
        const long nchunks = (long)((len + chunk - 1) / chunk);
#pragma omp parallel for if (nchunks > 1)
        for (long c = 0; c < nchunks; c++) {
            asa_rng r;
            asa_rng_seed(&r, seed * 0x9E3779B97F4A7C15ull + (off / chunk) + (uint64_t)c);
            const size_t e1 = ((size_t)c + 1) * chunk < len ? ((size_t)c + 1) * chunk : len;
            for (size_t e = (size_t)c * chunk; e < e1; e++) h[e] = (float)((2.0 * asa_rng_uniform(&r) - 1.0) * half);
        }
        be->act_to_device(be, asa_act_at(be, dst, off), h, len);
    }
    free(h);
}

// Device-to-device copy rate in GB/s, bytes read plus bytes written, best of five after a warm-up.
static double copy_gbs(asa_backend *be, size_t bytes) {
    char *a = be->alloc(be, bytes), *b = be->alloc(be, bytes);
    double best = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        be->sync(be);
        double t = now_sec();
#ifdef ASA_HAVE_CUDA
        if (is_cuda(be)) cuda_ok(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy");
        else
#endif
            memcpy(b, a, bytes);  // the CPU backend's memory is host memory
        be->sync(be);
        t = now_sec() - t;
        if (rep > 0 && t < best) best = t;
    }
    be->free(be, a);
    be->free(be, b);
    return 2.0 * (double)bytes / best / 1e9;
}

static int imin(int a, int b) { return a < b ? a : b; }

// Keys read by query t in each branch (exact for the kernels' masks). Selected: the current selection
// block up to t and min(n, c+1) - 1 complete earlier blocks (R divides b_s, so the anchor's current
// block is the query's).
static int keys_cmp(const attn_opts *o, int t) { return (t + 1) / o->b; }
static int keys_slc(const attn_opts *o, int t) { return (imin(o->n, t / o->bs + 1) - 1) * o->bs + t % o->bs + 1; }
static int keys_win(const attn_opts *o, int t) { return imin(t + 1, o->w); }

typedef struct {
    double fwd_flops, bwd_flops, fwd_bytes, bwd_bytes;
    double slc_gather;  // K and V bytes the selected forward gathers: each (anchor, group) tile its own
} attn_work;

// FLOPs the layer's attention needs: per (query, head, key read) 2(dk+dv) forward (scores, weighted sum)
// and 2(3dk+2dv) backward (scores recomputed, dP, dV, dQ, dK), plus the selection scores (2dk per anchor,
// head and visible compressed block) and the elementwise pooling and gates. Bytes: each input read once,
// each output written once (forward: q, k, v, gate logits in, o out; backward: q, k, v, gate logits,
// dout, o and one log-sum-exp per branch in, dq, dk, dv, dgate out).
static attn_work attn_work_of(const attn_opts *o, int dk, int dv, double esz) {
    attn_work w = {0, 0, 0, 0, 0};
    const double h = o->h, g = o->g;
    const int nbr = o->kind == 'N' ? 3 : o->kind == 'G' ? 2 : 0;
    double keys = 0, scores = 0, tile_keys = 0;
    for (int t = 0; t < o->T; t++) {
        if (o->kind == 'F') keys += t + 1;
        else if (o->kind == 'W') keys += keys_win(o, t);
        else {
            keys += keys_cmp(o, t) + keys_slc(o, t) + (o->kind == 'N' ? keys_win(o, t) : 0);
            if (t % o->R == 0) scores += keys_cmp(o, t);
            if (t % o->R == o->R - 1 || t == o->T - 1) tile_keys += keys_slc(o, t);  // the anchor's last query
        }
    }
    w.slc_gather = esz * o->B * g * tile_keys * (dk + dv);
    const double B = o->B, N = B * o->T;
    w.fwd_flops = B * h * (keys * 2.0 * (dk + dv) + scores * 2.0 * dk);
    w.bwd_flops = B * h * keys * 2.0 * (3.0 * dk + 2.0 * dv);
    if (nbr) {
        w.fwd_flops += N * (g * (dk + dv) + h * dv * 2.0 * nbr);
        w.bwd_flops += N * (g * (dk + dv) + h * dv * 4.0 * nbr);
    }
    const double in = N * (h * dk + g * (dk + dv) + h * nbr);
    w.fwd_bytes = esz * (in + N * h * dv);
    w.bwd_bytes = esz * (in + N * h * (2.0 * dv + (nbr ? nbr : 1)) + in);
    return w;
}

// Every tensor of one run, allocated together (or only counted, with be == NULL).
typedef struct {
    asa_backend *be;
    double esz;  // bytes per activation element
    double bytes;
    int count;
    void *ptr[40];
} tensor_pool;

static void *pool_take_bytes(tensor_pool *p, double bytes) {
    p->bytes += bytes;
    if (!p->be) return NULL;
    ASA_CHECK(p->count < 40);
    return p->ptr[p->count++] = p->be->alloc(p->be, (size_t)bytes);
}
static asa_act *pool_take(tensor_pool *p, double n) { return pool_take_bytes(p, p->esz * n); }
static float *pool_take_f32(tensor_pool *p, double n) { return pool_take_bytes(p, 4.0 * n); }

static void pool_free(tensor_pool *p) {
    for (int i = 0; i < p->count; i++) p->be->free(p->be, p->ptr[i]);
    p->count = 0;
}

typedef struct {
    asa_act *q, *k, *v, *glog, *kc, *vc, *o, *br[3];
    float *lse, *lse_br[3], *drow[3];
    asa_act *dout, *dq, *dk, *dv, *dkc, *dvc, *dglog, *dbr[3];
    int32_t *idx;
} train_tensors;

static void train_carve(tensor_pool *p, const attn_opts *o, const asa_attn_shape *s, train_tensors *x) {
    memset(x, 0, sizeof *x);
    const double N = (double)o->B * o->T, h = o->h, g = o->g;
    const int nbr = o->kind == 'N' ? 3 : o->kind == 'G' ? 2 : 0;
    x->q = pool_take(p, N * h * s->dk);
    x->k = pool_take(p, N * g * s->dk);
    x->v = pool_take(p, N * g * s->dv);
    x->o = pool_take(p, N * h * s->dv);
    x->dout = pool_take(p, N * h * s->dv);
    x->dq = pool_take(p, N * h * s->dk);
    x->dk = pool_take(p, N * g * s->dk);
    x->dv = pool_take(p, N * g * s->dv);
    // the backends' scratch: backward's row dots D, one float per (token, head)
    pool_take_f32(p, N * h);
    if (!nbr) {
        x->lse = pool_take_f32(p, N * h);
        return;
    }
    const double nb = (double)o->B * asa_attn_num_cmp_blocks(s);
    x->glog = pool_take(p, N * h * nbr);
    x->dglog = pool_take(p, N * h * nbr);
    x->kc = pool_take(p, nb * g * s->dk);
    x->vc = pool_take(p, nb * g * s->dv);
    x->dkc = pool_take(p, nb * g * s->dk);
    x->dvc = pool_take(p, nb * g * s->dv);
    x->idx = pool_take_bytes(p, 4.0 * o->B * asa_attn_num_anchors(s) * g * o->n);
    for (int c = 0; c < nbr; c++) {
        x->br[c] = pool_take(p, N * h * s->dv);
        x->lse_br[c] = pool_take_f32(p, N * h);
        x->dbr[c] = pool_take(p, N * h * s->dv);
        x->drow[c] = pool_take_f32(p, N * h);
    }
}

static void train_fwd(asa_backend *be, const attn_opts *o, const asa_attn_shape *s, train_tensors *x, op_marks *m) {
    marks_start(m);
    if (o->kind == 'F' || o->kind == 'W') {
        be->attn_fwd(be, s, x->q, x->k, x->v, x->o, x->lse);
        marks_op(m, "attn_fwd");
        return;
    }
    be->compress_fwd(be, s, s->dk, x->k, x->kc);
    be->compress_fwd(be, s, s->dv, x->v, x->vc);
    marks_op(m, "compress_fwd (k, v)");
    be->attn_cmp_fwd(be, s, x->q, x->kc, x->vc, x->br[0], x->lse_br[0]);
    marks_op(m, "attn_cmp_fwd");
    be->select_topk(be, s, x->q, x->kc, x->lse_br[0], x->idx);
    marks_op(m, "select_topk");
    be->attn_slc_fwd(be, s, x->q, x->k, x->v, x->idx, x->br[1], x->lse_br[1]);
    marks_op(m, "attn_slc_fwd");
    if (o->kind == 'N') {
        be->attn_fwd(be, s, x->q, x->k, x->v, x->br[2], x->lse_br[2]);
        marks_op(m, "attn_fwd (window)");
    }
    const void *br[3] = {x->br[0], x->br[1], x->br[2]};
    be->gate_fwd(be, x->o, x->glog, br, o->kind == 'N' ? 3 : 2, o->B * o->T, o->h, s->dv);
    marks_op(m, "gate_fwd");
}

static void train_bwd(asa_backend *be, const attn_opts *o, const asa_attn_shape *s, train_tensors *x, op_marks *m) {
    marks_start(m);
    if (o->kind == 'F' || o->kind == 'W') {
        be->attn_bwd(be, s, x->q, x->k, x->v, x->o, x->lse, x->dout, NULL, x->dq, x->dk, x->dv);
        marks_op(m, "attn_bwd");
        return;
    }
    const void *br[3] = {x->br[0], x->br[1], x->br[2]};
    void *dbr[3] = {x->dbr[0], x->dbr[1], x->dbr[2]};
    be->gate_bwd(be, x->dglog, dbr, x->drow, x->dout, x->glog, br, o->kind == 'N' ? 3 : 2, o->B * o->T, o->h,
                 s->dv);
    marks_op(m, "gate_bwd");
    if (o->kind == 'N') {
        be->attn_bwd(be, s, x->q, x->k, x->v, x->br[2], x->lse_br[2], x->dbr[2], x->drow[2], x->dq, x->dk, x->dv);
        marks_op(m, "attn_bwd (window)");
    }
    be->attn_slc_bwd(be, s, x->q, x->k, x->v, x->idx, x->br[1], x->lse_br[1], x->dbr[1], x->drow[1], x->dq, x->dk,
                     x->dv);
    marks_op(m, "attn_slc_bwd");
    be->attn_cmp_bwd(be, s, x->q, x->kc, x->vc, x->br[0], x->lse_br[0], x->dbr[0], x->drow[0], x->dq, x->dkc,
                     x->dvc);
    marks_op(m, "attn_cmp_bwd");
    be->compress_bwd(be, s, s->dk, x->dkc, x->dk);
    be->compress_bwd(be, s, s->dv, x->dvc, x->dv);
    marks_op(m, "compress_bwd (k, v)");
}

// Backward accumulates: every gradient starts from zero, as in a training step (not timed). gate_bwd
// writes the branch gradients (backend.h).
static void train_zero_grads(asa_backend *be, const attn_opts *o, const asa_attn_shape *s, train_tensors *x) {
    const size_t N = (size_t)o->B * o->T, h = (size_t)o->h, g = (size_t)o->g, e = asa_dtype_size(be->act);
    be->zero(be, x->dq, e * N * h * s->dk);
    be->zero(be, x->dk, e * N * g * s->dk);
    be->zero(be, x->dv, e * N * g * s->dv);
    if (!x->glog) return;
    const size_t nb = (size_t)o->B * asa_attn_num_cmp_blocks(s), nbr = o->kind == 'N' ? 3 : 2;
    be->zero(be, x->dglog, e * N * h * nbr);
    be->zero(be, x->dkc, e * nb * g * s->dk);
    be->zero(be, x->dvc, e * nb * g * s->dv);
}

// Decoding: one query per sequence at position T-1 against caches holding T tokens.
typedef struct {
    asa_act *q, *glog, *o, *br[3];
    float *lse_br[3];
    asa_act *k, *v, *kc, *vc;  // F W N: [B, T, g*d] keys and values, N: pooled [B, T/b, g*d]
    asa_act *lat, *latc;       // G: [B, T, g*d + rope] latent rows [c_0 .. c_{g-1} | kr], pooled [B, T/b, ...]
    int32_t *idx;
    asa_kv_view tok, pooled;
    double bytes_read;       // cache bytes the ops read
} decode_tensors;

static void decode_carve(tensor_pool *p, const attn_opts *o, const asa_attn_shape *s, decode_tensors *x) {
    memset(x, 0, sizeof *x);
    const double B = o->B, T = o->T, h = o->h, g = o->g, nb = asa_attn_num_cmp_blocks(s);
    x->q = pool_take(p, B * h * s->dk);
    x->glog = pool_take(p, B * h * 3);
    x->o = pool_take(p, B * h * s->dv);
    for (int c = 0; c < 3; c++) {
        x->br[c] = pool_take(p, B * h * s->dv);
        x->lse_br[c] = pool_take_f32(p, B * h);
    }
    x->idx = pool_take_bytes(p, 4.0 * B * g * o->n);
    if (o->kind == 'G') {
        const double width = g * o->d + o->rope;
        x->lat = pool_take(p, B * T * width);
        x->latc = pool_take(p, B * nb * width);
    } else {
        x->k = pool_take(p, B * T * g * o->d);
        x->v = pool_take(p, B * T * g * o->d);
        if (o->kind == 'N') {
            x->kc = pool_take(p, B * nb * g * o->d);
            x->vc = pool_take(p, B * nb * g * o->d);
        }
    }
}

// Views as the KV cache gives them (asa_kv_layer_view) and the bytes each branch reads from them.
static void decode_views(const asa_backend *be, const attn_opts *o, const asa_attn_shape *s, decode_tensors *x) {
    const int nb = asa_attn_num_cmp_blocks(s), t = o->T - 1, G = o->kind == 'G';
    const long width = G ? (long)o->g * o->d + o->rope : (long)o->g * o->d;
    for (int pooled = 0; pooled < 2; pooled++) {
        asa_kv_view *w = pooled ? &x->pooled : &x->tok;
        memset(w, 0, sizeof *w);
        const long bs = (pooled ? nb : o->T) * width;
        w->k1 = G ? (pooled ? x->latc : x->lat) : (pooled ? x->kc : x->k);
        w->v = G ? w->k1 : (pooled ? x->vc : x->v);
        w->k1_bs = w->v_bs = w->k2_bs = bs;
        w->k1_rs = w->v_rs = w->k2_rs = width;
        w->k1_hs = w->v_hs = o->d;
        w->dk1 = w->dv = o->d;
        if (G && o->rope) {
            w->k2 = asa_act_at(be, w->k1, (size_t)o->g * o->d);
            w->dk2 = o->rope;
        }
    }
    // GQA rows: k and v of g heads. Latent rows: one row holds every group's key and value (values alias
    // the keys), so a branch reading every group reads the whole row, and one group c_j and kr.
    const double B = o->B, row = G ? (double)width : 2.0 * o->g * o->d;
    const double group_keys = G ? (double)o->d + o->rope : 2.0 * o->d;
    double rows = 0;
    if (o->kind == 'F') rows = (double)o->T * row;
    else if (o->kind == 'W') rows = keys_win(o, t) * row;
    else {
        const double key_cols = G ? (double)width : (double)o->g * o->d;
        rows = nb * row + nb * key_cols + o->g * keys_slc(o, t) * group_keys;  // compressed, selection scores, selected
        if (o->kind == 'N') rows += keys_win(o, t) * row;
    }
    x->bytes_read = (double)asa_dtype_size(be->act) * B * rows;
}

static void decode_step(asa_backend *be, const attn_opts *o, const asa_attn_shape *s, decode_tensors *x, op_marks *m) {
    const int t = o->T - 1, B = o->B, h = o->h, g = o->g;
    marks_start(m);
    if (o->kind == 'F' || o->kind == 'W') {
        be->attn_decode(be, B, h, g, s->scale, x->q, &x->tok, o->kind == 'W' ? t + 1 - keys_win(o, t) : 0, t + 1, x->o,
                        x->lse_br[0]);
        marks_op(m, "attn_decode");
        return;
    }
    be->attn_decode(be, B, h, g, s->scale, x->q, &x->pooled, 0, (t + 1) / o->b, x->br[0], x->lse_br[0]);
    marks_op(m, "attn_decode (cmp)");
    be->select_decode(be, B, h, g, s->scale, x->q, &x->pooled, x->lse_br[0], t, o->b, o->bs, o->n, x->idx);
    marks_op(m, "select_decode");
    be->attn_slc_decode(be, B, h, g, s->scale, x->q, &x->tok, x->idx, t, o->bs, o->n, x->br[1], x->lse_br[1]);
    marks_op(m, "attn_slc_decode");
    if (o->kind == 'N') {
        be->attn_decode(be, B, h, g, s->scale, x->q, &x->tok, t + 1 - keys_win(o, t), t + 1, x->br[2], x->lse_br[2]);
        marks_op(m, "attn_decode (window)");
    }
    const void *br[3] = {x->br[0], x->br[1], x->br[2]};
    be->gate_fwd(be, x->o, x->glog, br, o->kind == 'N' ? 3 : 2, B, h, s->dv);
    marks_op(m, "gate_fwd");
}

// "  forward:  ms  rate = share of gemm  GB/s = share of copy", without the shares when gbs is 0 (no ceilings).
static void attn_rate_print(const char *what, double ms, double rate, const char *uname, double of_gemm, double gb_s,
                            double gbs) {
    if (gbs > 0)
        printf("  %s %10.3f ms %9.3f %s = %5.1f%% of gemm %9.2f GB/s = %5.2f%% of copy\n", what, ms, rate, uname,
               100.0 * of_gemm, gb_s, 100.0 * gb_s / gbs);
    else
        printf("  %s %10.3f ms %9.3f %s %9.2f GB/s\n", what, ms, rate, uname, gb_s);
}

static void attn_usage(FILE *f) {
    fprintf(f,
            "usage: asa bench attn [--kind K] [--seq T] [--batch B] [--heads H] [--kv-heads G] [--head-dim D]\n"
            "                      [--rope-dim R] [--block-size b] [--selection-block-size bs] [--block-counts n]\n"
            "                      [--window w] [--selection-share R] [--repeats N] [--decode] [--breakdown]\n"
            "                      [--no-ceilings] [--device D] [--precision P]\n"
            "  The attention of one layer on random inputs, as src/model/model.c runs it, from q/k/v and the gate\n"
            "  logits to the gated output (forward) and back to their gradients (backward), without projections.\n"
            "  Defaults: the NSA paper's kernel setting (issue 6, Setting A): kind N, T 8192, B 1, 64 heads, 4 KV\n"
            "  heads, head dim 128, block 64, selection block = block, 16 blocks, window 512, selection share 1.\n"
            "  --kind K           N (NSA: compressed, selected and window branches, gated), G (ASA global: latent\n"
            "                     groups as KV heads, compressed and selected branches), F (full causal), W (window)\n"
            "  --kv-heads G       KV heads (N F W) or latent groups (G)\n"
            "  --head-dim D       head dim (N F W) or latent dim (G: values c_j, keys [c_j ; kr])\n"
            "  --rope-dim R       G only: the shared RoPE key's dims (default 0)\n"
            "  --repeats N        timed passes (default 5; 50 with --decode) after a warm-up pass (5 decode steps)\n"
            "  --decode           one new token at position T-1 against caches of T tokens, through the decode\n"
            "                     ops (compressed, selection, selected, window), instead of training passes\n"
            "  --breakdown        each op's median time and share (the profile)\n"
            "  --no-ceilings      skip the gemm, copy and L2 measurements and the shares of them (for runs under\n"
            "                     compute-sanitizer, whose racecheck cannot run cuBLASLt's Hopper gemm)\n"
            "  Printed: ms (median over the passes, CUDA events on a GPU), TFLOP/s and GB/s against a matrix\n"
            "  product through the backend's gemm (8192^3 on a GPU, 1024^3 on the CPU, in the backend's precision)\n"
            "  and a device-to-device copy (bytes read + written). FLOPs: those the layer needs, by the keys each\n"
            "  query reads under the kernels' masks: 2(dk+dv) per (query, head, key) forward, 2(3dk+2dv) backward\n"
            "  (scores recomputed, dP, dV, dQ, dK), plus selection scores (2dk per anchor, head and visible block),\n"
            "  pooling and gates. Bytes: each input read once and each output written once (decoding: the cache\n"
            "  rows each op reads). On a GPU also the rate of reading L2-resident data, against which the N and G\n"
            "  kinds' selected forward is set: the K and V rows each (anchor, group) tile gathers, per second.\n"
            CLI_DEVICE_HELP);
}

static int bench_attn(int argc, char **argv) {
    attn_opts o = {'N', 1, 8192, 64, 4, 128, 0, 64, 0, 16, 512, 1, 0, 0, 0, 1};
    const char *device = NULL, *precision = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            attn_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--decode")) {
            o.decode = 1;
            continue;
        }
        if (!strcmp(a, "--breakdown")) {
            o.breakdown = 1;
            continue;
        }
        if (!strcmp(a, "--no-ceilings")) {
            o.ceilings = 0;
            continue;
        }
        const char *v = cli_value("bench attn", argc, argv, &i);
        if (!v) return 2;
        int bad = 0;
        if (!strcmp(a, "--kind")) {
            if (strlen(v) != 1 || !strchr("NGFW", v[0])) {
                fprintf(stderr, "asa bench attn: --kind: '%s' is not a layer kind (N, G, F or W)\n", v);
                return 2;
            }
            o.kind = v[0];
        } else if (!strcmp(a, "--seq")) bad = cli_parse_int("bench attn", a, v, 1, 1 << 24, &o.T);
        else if (!strcmp(a, "--batch")) bad = cli_parse_int("bench attn", a, v, 1, 1 << 20, &o.B);
        else if (!strcmp(a, "--heads")) bad = cli_parse_int("bench attn", a, v, 1, 1 << 16, &o.h);
        else if (!strcmp(a, "--kv-heads")) bad = cli_parse_int("bench attn", a, v, 1, 1 << 16, &o.g);
        else if (!strcmp(a, "--head-dim")) bad = cli_parse_int("bench attn", a, v, 1, 1 << 16, &o.d);
        else if (!strcmp(a, "--rope-dim")) bad = cli_parse_int("bench attn", a, v, 0, 1 << 16, &o.rope);
        else if (!strcmp(a, "--block-size")) bad = cli_parse_int("bench attn", a, v, 1, 1 << 24, &o.b);
        else if (!strcmp(a, "--selection-block-size")) bad = cli_parse_int("bench attn", a, v, 1, 1 << 24, &o.bs);
        else if (!strcmp(a, "--block-counts")) bad = cli_parse_int("bench attn", a, v, 3, 1 << 20, &o.n);
        else if (!strcmp(a, "--window")) bad = cli_parse_int("bench attn", a, v, 1, 1 << 24, &o.w);
        else if (!strcmp(a, "--selection-share")) bad = cli_parse_int("bench attn", a, v, 1, 1 << 24, &o.R);
        else if (!strcmp(a, "--repeats")) bad = cli_parse_int("bench attn", a, v, 1, 100000, &o.repeats);
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--precision")) precision = v;
        else {
            fprintf(stderr, "asa bench attn: unknown option '%s'\n", a);
            return 2;
        }
        if (bad) return 2;
    }
    if (!o.bs) o.bs = o.b;
    if (!o.repeats) o.repeats = o.decode ? 50 : 5;
    const char *bad = NULL;
    if (o.h % o.g) bad = "--heads must be a multiple of --kv-heads";
    else if (o.rope && o.kind != 'G') bad = "--rope-dim applies to kind G only (the shared RoPE key of a latent group)";
    else if ((o.kind == 'N' || o.kind == 'G') && o.bs % o.b) bad = "--selection-block-size must be a multiple of --block-size";
    else if ((o.kind == 'N' || o.kind == 'G') && o.bs % o.R) bad = "--selection-share must divide --selection-block-size";
    if (bad) {
        fprintf(stderr, "asa bench attn: %s\n", bad);
        return 2;
    }
    asa_backend *be = cli_backend_new_precision("bench attn", device, precision);
    if (!be) return 1;
    const int gpu = is_cuda(be);
    asa_attn_shape s = {0};
    s.B = o.B;
    s.T = o.T;
    s.h = o.h;
    s.g = o.g;
    s.dk = o.d + o.rope;
    s.dv = o.d;
    s.scale = 1.0f / sqrtf((float)s.dk);
    s.window = o.kind == 'F' ? 0 : o.w;
    s.block_size = o.b;
    s.selection_block_size = o.bs;
    s.block_counts = o.n;
    s.selection_share = o.R;

    // Refused before anything is allocated when it cannot fit, as the model's commands do.
    tensor_pool pool = {NULL, (double)asa_dtype_size(be->act), 0, 0, {0}};
    train_tensors tx;
    decode_tensors dx;
    if (o.decode) decode_carve(&pool, &o, &s, &dx);
    else train_carve(&pool, &o, &s, &tx);
    size_t free_b = 0, total_b = 0;
    be->mem_info(be, &free_b, &total_b);
    if (pool.bytes > (double)free_b) {
        const double gib = 1024.0 * 1024 * 1024;
        fprintf(stderr, "asa bench attn: needs %.2f GiB on the %s backend (kind %c attention %s of %d x %d tokens) "
                "but %.2f GiB of %.2f GiB is free; use a smaller --batch or --seq\n", pool.bytes / gib, be->name, o.kind,
                o.decode ? "caches" : "tensors, forward and backward,", o.B, o.T, free_b / gib, total_b / gib);
        asa_backend_free(be);
        return 1;
    }

    const char *prec = asa_precision_name(be->precision);
    printf("asa bench attn%s: kind %c, B %d x T %d, h %d, g %d, d %d", o.decode ? " --decode" : "", o.kind, o.B, o.T,
           o.h, o.g, o.d);
    if (o.kind == 'G') printf(" + rope %d", o.rope);
    if (o.kind == 'N' || o.kind == 'G') printf(", b %d, b_s %d, n %d, R %d", o.b, o.bs, o.n, o.R);
    if (o.kind == 'N' || o.kind == 'W') printf(", window %d", o.w);
    printf(", device %s, %s, %d repeats\n", be->name, prec, o.repeats);
    // Ceilings: a matrix product through the backend's own gemm (its precision), and a plain copy.
    // With --no-ceilings all three stay 0 and the lines below leave out the shares.
    double peak = 0, gbs = 0, l2 = 0;  // l2: GB/s reading L2-resident data, which bounds the selected gathers
    if (o.ceilings) {
        peak = gemm_gflops(be, gpu ? 8192 : 1024);
        gbs = copy_gbs(be, gpu ? (free_b > (8ull << 30) ? (1ull << 30) : (64ull << 20)) : (64ull << 20));
#ifdef ASA_HAVE_CUDA
        if (gpu) l2 = asa_backend_cuda_l2_read_gbs(be, 16u << 20);
#endif
    }
    if (!o.ceilings)
        printf("  ceilings: not measured (--no-ceilings)\n");
    else if (gpu)
        printf("  ceilings: gemm 8192^3 %.1f TFLOP/s (%s mode), device copy %.0f GB/s (read + write), L2 read %.0f GB/s "
               "(16 MiB)\n", peak / 1e3, prec, gbs, l2);
    else
        printf("  ceilings: OpenBLAS sgemm 1024^3 %.1f GFLOP/s, memcpy %.1f GB/s (read + write)\n", peak, gbs);
    fflush(stdout);

    pool.be = be;
    pool.bytes = 0;
    op_marks m;
    marks_init(&m, be);
    op_times tf = {0, o.repeats, {0}, asa_calloc((size_t)o.repeats * ATTN_MAX_OPS, sizeof(double))};
    op_times tb = {0, o.repeats, {0}, asa_calloc((size_t)o.repeats * ATTN_MAX_OPS, sizeof(double))};
    double t0 = now_sec(), rms = 0;
    if (o.decode) {
        decode_carve(&pool, &o, &s, &dx);
        decode_views(be, &o, &s, &dx);
        const size_t B = (size_t)o.B;
        fill_random(be, dx.q, B * o.h * s.dk, 1);
        fill_random(be, dx.glog, B * o.h * 3, 2);
        // The pooled rows are the means of the token rows, as the cache keeps them.
        asa_attn_shape ps = s;
        if (o.kind == 'G') {
            const size_t width = (size_t)o.g * o.d + o.rope;
            fill_random(be, dx.lat, B * o.T * width, 3);
            ps.g = 1;
            be->compress_fwd(be, &ps, (int)width, dx.lat, dx.latc);
        } else {
            fill_random(be, dx.k, B * o.T * o.g * o.d, 3);
            fill_random(be, dx.v, B * o.T * o.g * o.d, 4);
            if (o.kind == 'N') {
                be->compress_fwd(be, &s, o.d, dx.k, dx.kc);
                be->compress_fwd(be, &s, o.d, dx.v, dx.vc);
            }
        }
        for (int rep = -5; rep < o.repeats; rep++) {
            decode_step(be, &o, &s, &dx, &m);
            if (rep >= 0) times_add(&tf, &m, rep);
        }
        be->sync(be);
        const double ms = times_total(&tf);
        char b0[32];
        printf("  decode step: %9.4f ms   cache bytes read %s   %.1f GB/s", ms, cli_bytes(dx.bytes_read, b0, sizeof b0),
               dx.bytes_read / (ms * 1e-3) / 1e9);
        if (gbs > 0) printf(" = %.1f%% of the copy", 100.0 * dx.bytes_read / (ms * 1e-3) / 1e9 / gbs);
        printf("\n");
        if (o.breakdown) times_print(&tf, "decode step");
        rms = sqrt(be->sum_squares(be, dx.o, be->act, B * o.h * s.dv) / ((double)B * o.h * s.dv));
    } else {
        train_carve(&pool, &o, &s, &tx);
        const size_t N = (size_t)o.B * o.T;
        fill_random(be, tx.q, N * o.h * s.dk, 1);
        fill_random(be, tx.k, N * o.g * s.dk, 2);
        fill_random(be, tx.v, N * o.g * s.dv, 3);
        fill_random(be, tx.dout, N * o.h * s.dv, 4);
        if (tx.glog) fill_random(be, tx.glog, N * o.h * (o.kind == 'N' ? 3 : 2), 5);
        // One warm-up pass: scratch buffers grow and kernels load outside the timings.
        for (int rep = -1; rep < o.repeats; rep++) {
            train_zero_grads(be, &o, &s, &tx);
            train_fwd(be, &o, &s, &tx, &m);
            if (rep >= 0) times_add(&tf, &m, rep);
            train_bwd(be, &o, &s, &tx, &m);
            if (rep >= 0) times_add(&tb, &m, rep);
        }
        be->sync(be);
        const attn_work w = attn_work_of(&o, s.dk, s.dv, (double)asa_dtype_size(be->act));
        const double fms = times_total(&tf), bms = times_total(&tb);
        const double unit = gpu ? 1e12 : 1e9;
        const char *uname = gpu ? "TFLOP/s" : "GFLOP/s";
        printf("  FLOPs: forward %.4g G, backward %.4g G (keys each query reads; see --help)\n", w.fwd_flops / 1e9,
               w.bwd_flops / 1e9);
        const double fr = w.fwd_flops / (fms * 1e-3), br = w.bwd_flops / (bms * 1e-3);
        attn_rate_print("forward: ", fms, fr / unit, uname, fr / (peak * 1e9), w.fwd_bytes / (fms * 1e-3) / 1e9, gbs);
        attn_rate_print("backward:", bms, br / unit, uname, br / (peak * 1e9), w.bwd_bytes / (bms * 1e-3) / 1e9, gbs);
        if (o.breakdown) {
            times_print(&tf, "forward");
            times_print(&tb, "backward");
        }
        const double sms = times_named(&tf, "attn_slc_fwd");
        if (sms > 0 && l2 > 0) {
            const double rate = w.slc_gather / (sms * 1e-3) / 1e9;
            printf("  attn_slc_fwd gathers %.2f GB of K and V rows (each anchor's tile its own): %.0f GB/s = %.1f%% of "
                   "the L2 read ceiling\n", w.slc_gather / 1e9, rate, 100.0 * rate / l2);
        }
        rms = sqrt(be->sum_squares(be, tx.o, be->act, N * o.h * s.dv) / ((double)N * o.h * s.dv)) +
              sqrt(be->sum_squares(be, tx.dq, be->act, N * o.h * s.dk) / ((double)N * o.h * s.dk));
    }
    // A sanity check on the work timed: outputs (and gradients) of random inputs are finite and not all 0.
    printf("  output rms %.4g, wall time %.1f s\n", rms, now_sec() - t0);
    free(tf.times);
    free(tb.times);
    marks_free(&m);
    pool_free(&pool);
    asa_backend_free(be);
    if (!isfinite(rms) || rms == 0) {
        fprintf(stderr, "asa bench attn: the outputs are %s\n", rms == 0 ? "all zero" : "not finite");
        return 1;
    }
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: asa bench train --config FILE [--seq T] [--batch B] [--steps N] [--device D]\n"
               "                       [--precision P] [--recompute]\n"
               "       asa bench cpu [--config FILE] [--seq T] [--batch B] [--steps N] [--recompute]\n"
               "       asa bench attn [--kind N|G|F|W] [--seq T] [--decode] [--breakdown] ... (--help for all)\n"
               "  train: defaults T 8192, B 1, 10 timed steps after 2 warm-up steps\n"
               "  cpu:   the CPU backend; defaults configs/asa-tiny.json, T 512, B 4, 5 steps\n"
               "  attn:  one layer's attention ops (forward, backward or one decoding step), op by op\n"
               "  --recompute        activation recomputation as in asa train: one layer's activations kept\n"
               "                     instead of every layer's, for about a quarter more compute\n"
               CLI_DEVICE_HELP);
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "attn")) return bench_attn(argc, argv);
    int legacy_cpu = argc >= 2 && !strcmp(argv[1], "cpu");
    if (argc < 2 || (!legacy_cpu && strcmp(argv[1], "train") != 0)) {
        if (argc >= 2) fprintf(stderr, "asa bench: unknown target '%s' (train, cpu or attn)\n", argv[1]);
        usage(stderr);
        return 2;
    }
    const char *config_path = legacy_cpu ? "configs/asa-tiny.json" : NULL, *device = NULL, *precision = NULL;
    int T = legacy_cpu ? 512 : 8192, B = legacy_cpu ? 4 : 1, steps = legacy_cpu ? 5 : 10, recompute = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--recompute")) {
            recompute = 1;
            continue;
        }
        const char *v = cli_value("bench", argc, argv, &i);
        if (!v) return 2;
        int bad = 0;
        if (!strcmp(a, "--config")) config_path = v;
        else if (!strcmp(a, "--seq")) bad = cli_parse_int("bench", a, v, 2, 1 << 24, &T);
        else if (!strcmp(a, "--batch")) bad = cli_parse_int("bench", a, v, 1, 1 << 20, &B);
        else if (!strcmp(a, "--steps")) bad = cli_parse_int("bench", a, v, 1, 100000, &steps);
        else if (!strcmp(a, "--device") && !legacy_cpu) device = v;
        else if (!strcmp(a, "--precision") && !legacy_cpu) precision = v;
        else {
            fprintf(stderr, "asa bench: unknown option '%s'\n", a);
            return 2;
        }
        if (bad) return 2;
    }
    if (!config_path) {
        fprintf(stderr, "asa bench train: --config FILE is required\n");
        return 2;
    }
    asa_config cfg;
    if (asa_config_load(config_path, &cfg) != ASA_OK) {
        fprintf(stderr, "asa bench: %s\n", asa_err_msg());
        return 1;
    }
    asa_backend *be = legacy_cpu ? asa_backend_cpu_new() : cli_backend_new_precision("bench", device, precision);
    if (!be) return 1;
    if (asa_model_check_memory(be, &cfg, B, T, 1, 0, recompute) != ASA_OK) {
        fprintf(stderr, "asa bench: %s: %s\n", config_path, asa_err_msg());
        asa_backend_free(be);
        return 1;
    }
    const int gpu = is_cuda(be);
    const char *prec = asa_precision_name(be->precision);
    printf("asa bench %s: %s, batch %d x %d tokens, device %s, %s", legacy_cpu ? "cpu" : "train", config_path, B, T,
           be->name, prec);
    if (!gpu) printf(", %d threads", omp_get_max_threads());
    if (recompute) printf(", activation recomputation");
    printf("\n");
    double peak;
    if (gpu) {
        peak = gemm_gflops(be, 8192);
        printf("  %s-mode peak, cuBLASLt gemm 8192^3 (%s): %8.1f TFLOP/s\n", prec,
               be->precision == ASA_PRECISION_BF16   ? "bf16 tensor cores, bf16 operands"
               : be->precision == ASA_PRECISION_TF32 ? "TF32 tensor cores"
                                                     : "TF32 off",
               peak / 1e3);
    } else {
        peak = gemm_gflops(be, 1024);
        printf("  OpenBLAS sgemm 1024^3:      %8.1f GFLOP/s\n", peak);
    }
    double used0 = gpu_used_bytes(be);

    asa_model model;
    asa_model_init(&model, &cfg, be, 1);
    model.recompute = recompute;
    asa_adamw opt;
    asa_adamw_init(&opt, &model, asa_adamw_defaults());
    asa_rng rng;
    asa_rng_seed(&rng, 5);
    int32_t *tokens = asa_malloc(sizeof(int32_t) * (size_t)B * T), *targets = asa_malloc(sizeof(int32_t) * (size_t)B * T);
    // Warm-up steps first: arenas are touched, scratch buffers grow and cuBLASLt picks its algorithms.
    const int warmup = gpu ? 2 : 1;
    double fwd_time = 0, total_time = 0, last_loss = 0;
    for (int step = -warmup; step < steps; step++) {
        asa_synthetic_copy(&rng, tokens, targets, B, T, cfg.vocab_size - 1 < 64 ? cfg.vocab_size - 1 : 64);
        be->sync(be);
        double t0 = now_sec();
        asa_model_zero_grad(&model);
        last_loss = asa_model_forward(&model, tokens, targets, B, T);  // the loss comes back to the host
        double t1 = now_sec();
        asa_model_backward(&model, 1.0f);
        asa_adamw_step(&opt, &model, 1e-4f);
        be->sync(be);
        double t2 = now_sec();
        if (step >= 0) {
            fwd_time += t1 - t0;
            total_time += t2 - t0;
        }
    }
    double used1 = gpu_used_bytes(be);
    double tokens_per_step = (double)B * T;
    double tok_s = tokens_per_step * steps / total_time;
    double flops_tok = asa_flops_train_per_token(&cfg, T);
    double gflops = tok_s * flops_tok / 1e9;
    printf("  forward:                    %8.1f ms/step\n", 1e3 * fwd_time / steps);
    printf("  train step (fwd+bwd+AdamW): %8.1f ms/step\n", 1e3 * total_time / steps);
    printf("  throughput:                 %8.0f tokens/s\n", tok_s);
    printf("  model FLOPs:                %8.2f %s (training, attention by keys read)\n",
           gpu ? flops_tok / 1e9 : flops_tok / 1e6, gpu ? "GFLOP/token" : "MFLOP/token");
    if (gpu) {
        printf("  achieved:                   %8.2f TFLOP/s = MFU %.1f%% of the %s-mode peak above\n", gflops / 1e3,
               100.0 * gflops / peak, prec);
        char b0[32], b1[32], b2[32];
        // Every arena is allocated before the first step and scratch only grows, so the memory in use
        // after the steps is the run's peak.
        printf("  GPU memory:                 %s in use after the steps (peak); model, AdamW, activations and "
               "scratch %s; before the model %s\n", cli_bytes(used1, b0, sizeof b0), cli_bytes(used1 - used0, b1, sizeof b1),
               cli_bytes(used0, b2, sizeof b2));
        char b3[32];
        printf("  activations (asa_model_act_bytes): %s%s\n",
               cli_bytes((double)asa_model_act_bytes(&cfg, be->act, B, T, recompute), b3, sizeof b3),
               recompute ? " (--recompute)" : "");
    } else {
        printf("  achieved:                   %8.1f GFLOP/s = %.1f%% of sgemm\n", gflops, 100.0 * gflops / peak);
    }
    printf("  last loss:                  %8.4f\n", last_loss);
    free(tokens);
    free(targets);
    asa_adamw_free(&opt, &model);
    asa_model_free(&model);
    asa_backend_free(be);
    return isfinite(last_loss) ? 0 : 1;
}
