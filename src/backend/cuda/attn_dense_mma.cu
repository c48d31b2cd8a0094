// Causal attention over pooled keys on the tensor cores, for the tf32 and bf16 modes, FlashAttention-2 style:
// mma.sync m16n8k8 on operands rounded to TF32, online softmax, masks and sums in fp32. Key m summarises
// tokens [m*span, (m+1)*span) and is visible to query t iff (m+1)*span - 1 <= t and, with a window,
// t - window < m (span 1: full or window attention; span b: the compressed branch).
// The kernels are templates over the storage type T of q, k, v, o, dout, dq, dk, dv (float, or bf16, whose
// values TF32 holds exactly): operands are loaded into fp32 shared tiles and registers, outputs stored (and
// accumulated) with st_f.
//
// Forward and dq: a block holds 64 consecutive (query, head) rows of one GQA group (row rho is token
// rho / G, head j*G + rho % G, so the G heads sharing K/V share the staged tiles), 16 rows per warp. It
// walks the union of its rows' key ranges in chunks of DM_KT keys, staged in shared memory by cp.async
// with the next chunk in flight (fp32 storage; bf16 rows go through registers, see stage4); every warp takes
// the whole chunk for its 16 rows (S = Q·K^T, then O += P·V, or dS·K for dq), skipping chunks its rows
// cannot see and masking only chunks not fully visible to all of them. dk / dv: a block holds 64 keys of one
// group (16 per warp) and streams the (query, head) rows that can see them, 16 per chunk in ascending order,
// recomputing P from the saved lse; when keys are few (the compressed branch) each key tile's rows are split
// over several blocks whose partial sums a second pass adds in split order. No atomics, fixed orders:
// deterministic.
// Fragment layouts and the reuse of S's accumulator as P's A fragment: see attn_slc_mma.cu.
#include <limits.h>

#include "backend/cuda/attn_dense_mma.cuh"
#include "backend/cuda/attn_mma_common.cuh"
#include "backend/cuda/attn_visibility.cuh"

#define DM_WARPS 4
#define DM_ROWS 64          // (query, head) rows per block of the forward and dq kernels
#define DM_KT 32            // keys per staged chunk (forward, dq)
#define DM_KEYS 64          // keys per block of the dk/dv pass (16 per warp)
#define DM_NR 16            // rows per staged chunk of the dk/dv pass
#define DM_TARGET_BLOCKS 1024  // the dk/dv pass splits its rows to reach this many blocks ...
#define DM_MIN_PAIRS 512       // ... with at least this many rows per split

// The key ranges of this warp's rows: the union [ulo, uhi) (chunks outside it are skipped) and the
// intersection [ilo, ihi) (chunks inside it need no mask). Rows past the end (t < 0) do not count.
struct dm_span {
    int ulo, uhi, ilo, ihi;
};
static __device__ __forceinline__ dm_span dm_warp_span(int lo0, int hi0, int lo1, int hi1, bool ok0, bool ok1) {
    dm_span w;
    w.ulo = dense_warp_min(min(ok0 ? lo0 : INT_MAX, ok1 ? lo1 : INT_MAX));
    w.uhi = dense_warp_max(max(ok0 ? hi0 : INT_MIN, ok1 ? hi1 : INT_MIN));
    w.ilo = dense_warp_max(max(ok0 ? lo0 : INT_MIN, ok1 ? lo1 : INT_MIN));
    w.ihi = dense_warp_min(min(ok0 ? hi0 : INT_MAX, ok1 ? hi1 : INT_MAX));
    return w;
}

// The keys of the block's rows: [dense_lo of its first token, dense_hi of its last).
static __device__ __forceinline__ void dm_block_keys(const dense_args &a, long rbase, int &u0, int &u1) {
    const long rend = min(rbase + DM_ROWS, (long)a.T * a.G);
    u0 = dense_lo(a, (int)(rbase / a.G));
    u1 = dense_hi(a, (int)((rend - 1) / a.G));
}

template <int DK, int DV>
static size_t dm_chunk_bytes() {
    return 2 * (size_t)DM_KT * (DK + 4 + DV + 4) * sizeof(float);
}

template <typename T, int DK, int DV>
__global__ void __launch_bounds__(DM_WARPS * 32)
dm_fwd_kernel(dense_args a, long ntiles, const T *q, const T *k, const T *v, T *o, float *lse) {
    constexpr int KST = DK + 4, VST = DV + 4, NT = DM_KT / 8;
    extern __shared__ float4 smem4[];
    float *Ks = (float *)smem4, *Vs = Ks + 2 * DM_KT * KST;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const long tile = blockIdx.x % ntiles;
    const int j = (int)(blockIdx.x / ntiles % a.g), b = (int)(blockIdx.x / (ntiles * a.g));
    const long rbase = tile * DM_ROWS;
    int t0, t1;
    long r0, r1;
    dense_row(a, b, j, rbase + w * 16 + g, t0, r0);
    dense_row(a, b, j, rbase + w * 16 + g + 8, t1, r1);
    uint32_t qf[DK / 8][4];
    mma_load_rows<DK>(qf, q, r0, r1, t0 >= 0, t1 >= 0, a.dk, c);
    const int lo0 = t0 >= 0 ? dense_lo(a, t0) : 0, hi0 = t0 >= 0 ? dense_hi(a, t0) : 0;
    const int lo1 = t1 >= 0 ? dense_lo(a, t1) : 0, hi1 = t1 >= 0 ? dense_hi(a, t1) : 0;
    const dm_span ws = dm_warp_span(lo0, hi0, lo1, hi1, t0 >= 0, t1 >= 0);
    int u0, u1;
    dm_block_keys(a, rbase, u0, u1);

    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const T *kg = k + (long)b * a.nkeys * krs + (long)j * a.dk, *vg = v + (long)b * a.nkeys * vrs + (long)j * a.dv;
    float acc[DV / 8][4];
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

    int buf = 0;
    if (u0 < u1) {
        stage_rows<DK>(Ks, kg + u0 * krs, krs, min(DM_KT, u1 - u0), DM_KT, a.dk);
        stage_rows<DV>(Vs, vg + u0 * vrs, vrs, min(DM_KT, u1 - u0), DM_KT, a.dv);
    }
    cp_commit();
    for (int c0 = u0; c0 < u1; c0 += DM_KT) {
        const int cn = min(DM_KT, u1 - c0), nx = c0 + DM_KT;
        if (nx < u1) {
            stage_rows<DK>(Ks + (buf ^ 1) * DM_KT * KST, kg + nx * krs, krs, min(DM_KT, u1 - nx), DM_KT, a.dk);
            stage_rows<DV>(Vs + (buf ^ 1) * DM_KT * VST, vg + nx * vrs, vrs, min(DM_KT, u1 - nx), DM_KT, a.dv);
        }
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        if (c0 < ws.uhi && c0 + cn > ws.ulo) {
            const float *K = Ks + buf * DM_KT * KST, *V = Vs + buf * DM_KT * VST;
            const bool full = c0 >= ws.ilo && c0 + DM_KT <= ws.ihi && cn == DM_KT;
            float x[NT][4];
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                if (nt * 8 < cn) {
                    mma_rowprod<DK>(x[nt], qf, K, nt, a.dk, lane);
                } else {
                    x[nt][0] = x[nt][1] = x[nt][2] = x[nt][3] = 0.0f;
                }
                const int key = c0 + nt * 8 + 2 * c;
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const bool in = key + e < c0 + cn;
                    x[nt][e] = full || (in && key + e >= lo0 && key + e < hi0) ? x[nt][e] * a.sl2 : -INFINITY;
                    x[nt][2 + e] = full || (in && key + e >= lo1 && key + e < hi1) ? x[nt][2 + e] * a.sl2 : -INFINITY;
                }
                mx0 = fmaxf(mx0, fmaxf(x[nt][0], x[nt][1]));
                mx1 = fmaxf(mx1, fmaxf(x[nt][2], x[nt][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 2));
            const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
            // A row with no visible key yet keeps max -inf; its factors must be 0, not exp2(-inf + inf).
            const float f0 = n0 == -INFINITY ? 1.0f : exp2f(m0 - n0), f1 = n1 == -INFINITY ? 1.0f : exp2f(m1 - n1);
            const float b0 = n0 == -INFINITY ? 0.0f : n0, b1 = n1 == -INFINITY ? 0.0f : n1;
            m0 = n0, m1 = n1;
            if (__any_sync(FULL_MASK, f0 != 1.0f || f1 != 1.0f))  // a row's max moved: rescale
#pragma unroll
                for (int nd = 0; nd < DV / 8; nd++)
                    acc[nd][0] *= f0, acc[nd][1] *= f0, acc[nd][2] *= f1, acc[nd][3] *= f1;
            l0 *= f0, l1 *= f1;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                if (nt * 8 >= cn) break;
                const float p0 = exp2f(x[nt][0] - b0), p1 = exp2f(x[nt][1] - b0);
                const float p2 = exp2f(x[nt][2] - b1), p3 = exp2f(x[nt][3] - b1);
                l0 += p0 + p1, l1 += p2 + p3;
                const uint32_t a0 = tf32(p0), a1 = tf32(p2), a2 = tf32(p1), a3 = tf32(p3);
                const float *vr = V + (nt * 8 + 2 * c) * VST + g;
#pragma unroll
                for (int nd = 0; nd < DV / 8; nd++)
                    if (nd * 8 < a.dv) mma8(acc[nd], a0, a1, a2, a3, tf32(vr[nd * 8]), tf32(vr[VST + nd * 8]));
            }
        }
        __syncthreads();  // the next iteration stages into this buffer
        buf ^= 1;
    }
    cp_wait<0>();
    l0 += __shfl_xor_sync(FULL_MASK, l0, 1);
    l0 += __shfl_xor_sync(FULL_MASK, l0, 2);
    l1 += __shfl_xor_sync(FULL_MASK, l1, 1);
    l1 += __shfl_xor_sync(FULL_MASK, l1, 2);
    mma_store_o<DV>(o, lse, acc, a.dv, r0, r1, t0, t1, m0, m1, l0, l1, c);  // empty rows: o = 0, lse = -inf
}

// dq += scale * sum_m p_m (dout.v_m - D) k_m with p_m = exp(q.k_m*scale - lse), the forward's tiling; q and
// dout (the A operands of S = Q·K^T and dP = dout·V^T) sit in registers.
template <typename T, int DK, int DV>
__global__ void __launch_bounds__(DM_WARPS * 32)
dm_dq_kernel(dense_args a, long ntiles, const T *q, const T *k, const T *v, const float *lse, const float *D,
             const T *dout, T *dq) {
    constexpr int KST = DK + 4, VST = DV + 4, NT = DM_KT / 8;
    extern __shared__ float4 smem4[];
    float *Ks = (float *)smem4, *Vs = Ks + 2 * DM_KT * KST;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const long tile = blockIdx.x % ntiles;
    const int j = (int)(blockIdx.x / ntiles % a.g), b = (int)(blockIdx.x / (ntiles * a.g));
    const long rbase = tile * DM_ROWS;
    int t0, t1;
    long r0, r1;
    dense_row(a, b, j, rbase + w * 16 + g, t0, r0);
    dense_row(a, b, j, rbase + w * 16 + g + 8, t1, r1);
    // Rows with lse = -inf saw no key: no gradient.
    const float L0 = t0 >= 0 ? lse[r0] : -INFINITY, L1 = t1 >= 0 ? lse[r1] : -INFINITY;
    if (L0 == -INFINITY) t0 = -1;
    if (L1 == -INFINITY) t1 = -1;
    const float lb0 = t0 >= 0 ? L0 * LOG2E : 0.0f, lb1 = t1 >= 0 ? L1 * LOG2E : 0.0f;
    const float D0 = t0 >= 0 ? D[r0] : 0.0f, D1 = t1 >= 0 ? D[r1] : 0.0f;
    uint32_t qf[DK / 8][4], of[DV / 8][4];
    mma_load_rows<DK>(qf, q, r0, r1, t0 >= 0, t1 >= 0, a.dk, c);
    mma_load_rows<DV>(of, dout, r0, r1, t0 >= 0, t1 >= 0, a.dv, c);
    const int lo0 = t0 >= 0 ? dense_lo(a, t0) : 0, hi0 = t0 >= 0 ? dense_hi(a, t0) : 0;
    const int lo1 = t1 >= 0 ? dense_lo(a, t1) : 0, hi1 = t1 >= 0 ? dense_hi(a, t1) : 0;
    const dm_span ws = dm_warp_span(lo0, hi0, lo1, hi1, t0 >= 0, t1 >= 0);
    int u0, u1;
    dm_block_keys(a, rbase, u0, u1);

    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const T *kg = k + (long)b * a.nkeys * krs + (long)j * a.dk, *vg = v + (long)b * a.nkeys * vrs + (long)j * a.dv;
    float acc[DK / 8][4];
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;

    int buf = 0;
    if (u0 < u1) {
        stage_rows<DK>(Ks, kg + u0 * krs, krs, min(DM_KT, u1 - u0), DM_KT, a.dk);
        stage_rows<DV>(Vs, vg + u0 * vrs, vrs, min(DM_KT, u1 - u0), DM_KT, a.dv);
    }
    cp_commit();
    for (int c0 = u0; c0 < u1; c0 += DM_KT) {
        const int cn = min(DM_KT, u1 - c0), nx = c0 + DM_KT;
        if (nx < u1) {
            stage_rows<DK>(Ks + (buf ^ 1) * DM_KT * KST, kg + nx * krs, krs, min(DM_KT, u1 - nx), DM_KT, a.dk);
            stage_rows<DV>(Vs + (buf ^ 1) * DM_KT * VST, vg + nx * vrs, vrs, min(DM_KT, u1 - nx), DM_KT, a.dv);
        }
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        if (c0 < ws.uhi && c0 + cn > ws.ulo) {
            const float *K = Ks + buf * DM_KT * KST, *V = Vs + buf * DM_KT * VST;
            const bool full = c0 >= ws.ilo && c0 + DM_KT <= ws.ihi && cn == DM_KT;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                if (nt * 8 >= cn) break;
                float sc[4], dp[4];
                mma_rowprod<DK>(sc, qf, K, nt, a.dk, lane);
                mma_rowprod<DV>(dp, of, V, nt, a.dv, lane);
                const int key = c0 + nt * 8 + 2 * c;
                float ds[4];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const bool in = key + e < c0 + cn;
                    const bool v0 = full || (in && key + e >= lo0 && key + e < hi0);
                    const bool v1 = full || (in && key + e >= lo1 && key + e < hi1);
                    ds[e] = v0 ? exp2f(sc[e] * a.sl2 - lb0) * (dp[e] - D0) : 0.0f;
                    ds[2 + e] = v1 ? exp2f(sc[2 + e] * a.sl2 - lb1) * (dp[2 + e] - D1) : 0.0f;
                }
                const uint32_t a0 = tf32(ds[0]), a1 = tf32(ds[2]), a2 = tf32(ds[1]), a3 = tf32(ds[3]);
                const float *kr = K + (nt * 8 + 2 * c) * KST + g;
#pragma unroll
                for (int nd = 0; nd < DK / 8; nd++)
                    if (nd * 8 < a.dk) mma8(acc[nd], a0, a1, a2, a3, tf32(kr[nd * 8]), tf32(kr[KST + nd * 8]));
            }
        }
        __syncthreads();
        buf ^= 1;
    }
    cp_wait<0>();
    mma_add_dq<DK>(dq, acc, a.dk, a.scale, r0, r1, t0, t1, c);
}

// Stages rows [i0, i0 + DM_NR) of the (query, head) row stream of group j that starts at token T0 (row i is
// token T0 + i / G, head j*G + i % G; rows at or past i1 are padding): q and dout (stage4), lse (base
// 2), D and t per row (t = -1 for padding and rows with no visible key: they add nothing).
template <int DK, int DV, typename T>
static __device__ __forceinline__ void dm_stage_queries(const dense_args &a, int b, int j, int T0, long i0, long i1,
                                                        const T *q, const float *lse, const float *D, const T *dout,
                                                        float *Qs, float *Os, float *Lb, float *Db, int *Tb) {
    constexpr int TPR = DM_WARPS * 32 / DM_NR;
    const int rr = threadIdx.x / TPR, part = threadIdx.x % TPR;
    const long i = i0 + rr;
    int t = -1;
    long r = 0;
    if (i < i1) dense_row(a, b, j, (long)T0 * a.G + i, t, r);
#pragma unroll
    for (int x = part; x < DK / 4; x += TPR) {
        const bool in = t >= 0 && x * 4 < a.dk;
        stage4(Qs + rr * (DK + 4) + x * 4, in ? q + r * a.dk + x * 4 : q, in);
    }
#pragma unroll
    for (int x = part; x < DV / 4; x += TPR) {
        const bool in = t >= 0 && x * 4 < a.dv;
        stage4(Os + rr * (DV + 4) + x * 4, in ? dout + r * a.dv + x * 4 : dout, in);
    }
    if (part == 0) {
        const float L = t >= 0 ? lse[r] : -INFINITY;
        Tb[rr] = L == -INFINITY ? -1 : t;
        Lb[rr] = L == -INFINITY ? 0.0f : L * LOG2E;
        Db[rr] = L == -INFINITY ? 0.0f : D[r];
    }
}

template <int DK, int DV>
static size_t dm_dkdv_bytes() {
    return ((size_t)DM_KEYS * (DK + 4 + DV + 4) + 2 * ((size_t)DM_NR * (DK + 4 + DV + 4) + 3 * DM_NR)) * sizeof(float);
}

// dk / dv of 64 keys of group j from split sp of the rows that can see them: S^T = K·Q^T and dP^T = V·dout^T
// on the streamed rows, then dv += P^T·dout and dk += dS^T·Q, P^T's and dS^T's accumulators reused as A
// fragments (k index c standing for row 2c, c+4 for row 2c+1). With nsplit > 1 every split stores its
// partial sums (scaled) in `part` for dense_split_sum_kernel.
template <typename T, int DK, int DV>
__global__ void __launch_bounds__(DM_WARPS * 32)
dm_dkdv_kernel(dense_args a, int nsplit, const T *q, const T *k, const T *v, const float *lse, const float *D,
               const T *dout, T *dk, T *dv, float *part) {
    constexpr int KST = DK + 4, VST = DV + 4, QBUF = DM_NR * (KST + VST) + 3 * DM_NR;
    extern __shared__ float4 smem4[];
    float *Ks = (float *)smem4, *Vs = Ks + DM_KEYS * KST, *Qb = Vs + DM_KEYS * VST;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const int nmb = (a.nkeys + DM_KEYS - 1) / DM_KEYS;
    const int sp = blockIdx.x % nsplit, kb = blockIdx.x / nsplit;
    const int mb = kb % nmb, j = kb / nmb % a.g, b = kb / (nmb * a.g);
    const int mfirst = mb * DM_KEYS, cnk = min(DM_KEYS, a.nkeys - mfirst);
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const long kr0 = ((long)b * a.nkeys + mfirst) * a.g + j;  // key row mfirst of group j, in units of heads
    stage_rows<DK>(Ks, k + kr0 * a.dk, krs, cnk, DM_KEYS, a.dk);
    stage_rows<DV>(Vs, v + kr0 * a.dv, vrs, cnk, DM_KEYS, a.dv);
    // The rows that see some key of the tile: tokens [T0, T1), split sp of them.
    const int T0 = dense_qlo(a, mfirst), T1 = dense_qhi(a, mfirst + cnk - 1);
    const long npairs = (long)max(T1 - T0, 0) * a.G;
    const long i0 = npairs * sp / nsplit, i1 = npairs * (sp + 1) / nsplit;
    const int p0 = mfirst + w * 16 + g, p1 = p0 + 8;  // this thread's keys (accumulator rows g, g+8)
    const int qlo0 = dense_qlo(a, p0), qhi0 = p0 < a.nkeys ? dense_qhi(a, p0) : 0;
    const int qlo1 = dense_qlo(a, p1), qhi1 = p1 < a.nkeys ? dense_qhi(a, p1) : 0;

    float ak[DK / 8][4], av[DV / 8][4];
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) ak[nd][0] = ak[nd][1] = ak[nd][2] = ak[nd][3] = 0.0f;
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) av[nd][0] = av[nd][1] = av[nd][2] = av[nd][3] = 0.0f;

    int buf = 0;
    if (i0 < i1) {
        float *Q = Qb, *O = Q + DM_NR * KST, *Lb = O + DM_NR * VST, *Db = Lb + DM_NR;
        dm_stage_queries<DK, DV>(a, b, j, T0, i0, i1, q, lse, D, dout, Q, O, Lb, Db, (int *)(Db + DM_NR));
    }
    cp_commit();
    // K and V are the A operands of every chunk: round them to TF32 in place once
    cp_wait<0>();
    __syncthreads();
    for (int x = threadIdx.x; x < DM_KEYS * (KST + VST); x += blockDim.x) Ks[x] = __uint_as_float(tf32(Ks[x]));
    // ldmatrix rows: A fragments (rows g / g+8, columns c / c+4) and two k steps of B fragments
    const int arow = lane % 8 + (lane / 8 % 2) * 8, acol = lane / 16 * 4, brow = lane % 8, bcol = lane / 8 * 4;
    const float *kw = Ks + (w * 16 + arow) * KST + acol, *vw = Vs + (w * 16 + arow) * VST + acol;
    for (long x0 = i0; x0 < i1; x0 += DM_NR) {
        if (x0 + DM_NR < i1) {
            float *Q = Qb + (buf ^ 1) * QBUF, *O = Q + DM_NR * KST, *Lb = O + DM_NR * VST, *Db = Lb + DM_NR;
            dm_stage_queries<DK, DV>(a, b, j, T0, x0 + DM_NR, i1, q, lse, D, dout, Q, O, Lb, Db, (int *)(Db + DM_NR));
        }
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const float *Q = Qb + buf * QBUF, *O = Q + DM_NR * KST, *Lb = O + DM_NR * VST, *Db = Lb + DM_NR;
        const int *Tb = (const int *)(Db + DM_NR);
        float st[DM_NR / 8][4], dpt[DM_NR / 8][4];
#pragma unroll
        for (int rt = 0; rt < DM_NR / 8; rt++)
            st[rt][0] = st[rt][1] = st[rt][2] = st[rt][3] = dpt[rt][0] = dpt[rt][1] = dpt[rt][2] = dpt[rt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DK / 8; kk += 2) {
            if (kk * 8 >= a.dk) break;
            uint32_t x[4], y[4];
            ldsm4(x, kw + kk * 8);
            ldsm4(y, kw + kk * 8 + 8);
#pragma unroll
            for (int rt = 0; rt < DM_NR / 8; rt++) {
                uint32_t z[4];
                ldsm4(z, Q + (rt * 8 + brow) * KST + kk * 8 + bcol);
                mma8(st[rt], x[0], x[1], x[2], x[3], tf32u(z[0]), tf32u(z[1]));
                mma8(st[rt], y[0], y[1], y[2], y[3], tf32u(z[2]), tf32u(z[3]));
            }
        }
#pragma unroll
        for (int kk = 0; kk < DV / 8; kk += 2) {
            if (kk * 8 >= a.dv) break;
            uint32_t x[4], y[4];
            ldsm4(x, vw + kk * 8);
            ldsm4(y, vw + kk * 8 + 8);
#pragma unroll
            for (int rt = 0; rt < DM_NR / 8; rt++) {
                uint32_t z[4];
                ldsm4(z, O + (rt * 8 + brow) * VST + kk * 8 + bcol);
                mma8(dpt[rt], x[0], x[1], x[2], x[3], tf32u(z[0]), tf32u(z[1]));
                mma8(dpt[rt], y[0], y[1], y[2], y[3], tf32u(z[2]), tf32u(z[3]));
            }
        }
#pragma unroll
        for (int rt = 0; rt < DM_NR / 8; rt++) {
            const int ra = rt * 8 + 2 * c, rb = ra + 1;  // the accumulator's columns: rows ra, rb of the chunk
            const int ta = Tb[ra], tb = Tb[rb];
            const float la = Lb[ra], lb = Lb[rb], da = Db[ra], db = Db[rb];
            // t = -1 (padding, no visible key) fails t >= qlo, as qlo >= 0
            const float pa0 = ta >= qlo0 && ta < qhi0 ? exp2f(st[rt][0] * a.sl2 - la) : 0.0f;
            const float pb0 = tb >= qlo0 && tb < qhi0 ? exp2f(st[rt][1] * a.sl2 - lb) : 0.0f;
            const float pa1 = ta >= qlo1 && ta < qhi1 ? exp2f(st[rt][2] * a.sl2 - la) : 0.0f;
            const float pb1 = tb >= qlo1 && tb < qhi1 ? exp2f(st[rt][3] * a.sl2 - lb) : 0.0f;
            {
                const uint32_t y0 = tf32(pa0), y1 = tf32(pa1), y2 = tf32(pb0), y3 = tf32(pb1);
                const float *orr = O + ra * VST + g;
#pragma unroll
                for (int nd = 0; nd < DV / 8; nd++)
                    if (nd * 8 < a.dv) mma8(av[nd], y0, y1, y2, y3, tf32(orr[nd * 8]), tf32(orr[VST + nd * 8]));
            }
            const uint32_t y0 = tf32(pa0 * (dpt[rt][0] - da)), y1 = tf32(pa1 * (dpt[rt][2] - da));
            const uint32_t y2 = tf32(pb0 * (dpt[rt][1] - db)), y3 = tf32(pb1 * (dpt[rt][3] - db));
            const float *qr = Q + ra * KST + g;
#pragma unroll
            for (int nd = 0; nd < DK / 8; nd++)
                if (nd * 8 < a.dk) mma8(ak[nd], y0, y1, y2, y3, tf32(qr[nd * 8]), tf32(qr[KST + nd * 8]));
        }
        __syncthreads();
        buf ^= 1;
    }
    cp_wait<0>();
    const long o0 = ((long)b * a.nkeys + p0) * a.g + j, o1 = ((long)b * a.nkeys + p1) * a.g + j;
    const bool w0 = p0 < a.nkeys, w1 = p1 < a.nkeys;
    if (nsplit > 1) {
        const int W = a.dk + a.dv;
        float *pp = part + (long)sp * a.B * a.nkeys * a.g * W;
#pragma unroll
        for (int nd = 0; nd < DK / 8; nd++) {
            const int col = nd * 8 + 2 * c;
            if (col >= a.dk) break;
            if (w0) pp[o0 * W + col] = a.scale * ak[nd][0], pp[o0 * W + col + 1] = a.scale * ak[nd][1];
            if (w1) pp[o1 * W + col] = a.scale * ak[nd][2], pp[o1 * W + col + 1] = a.scale * ak[nd][3];
        }
#pragma unroll
        for (int nd = 0; nd < DV / 8; nd++) {
            const int col = a.dk + nd * 8 + 2 * c;
            if (nd * 8 + 2 * c >= a.dv) break;
            if (w0) pp[o0 * W + col] = av[nd][0], pp[o0 * W + col + 1] = av[nd][1];
            if (w1) pp[o1 * W + col] = av[nd][2], pp[o1 * W + col + 1] = av[nd][3];
        }
        return;
    }
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) {
        const int col = nd * 8 + 2 * c;
        if (col >= a.dk) break;
        if (w0) mma_acc2(dk + o0 * a.dk + col, a.scale * ak[nd][0], a.scale * ak[nd][1]);
        if (w1) mma_acc2(dk + o1 * a.dk + col, a.scale * ak[nd][2], a.scale * ak[nd][3]);
    }
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) {
        const int col = nd * 8 + 2 * c;
        if (col >= a.dv) break;
        if (w0) mma_acc2(dv + o0 * a.dv + col, av[nd][0], av[nd][1]);
        if (w1) mma_acc2(dv + o1 * a.dv + col, av[nd][2], av[nd][3]);
    }
}

bool cuda_dense_mma_ok(const asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                       const void *dout) {
    return s->dk % 4 == 0 && s->dv % 4 == 0 && s->dk <= 128 && s->dv <= 128 && mma_aligned4(be, q) &&
           mma_aligned4(be, k) && mma_aligned4(be, v) && (dout == NULL || mma_aligned4(be, dout));
}

template <typename T>
static void dm_fwd(const asa_attn_shape *s, int nkeys, int span, int window, const T *q, const T *k, const T *v, T *o,
                   float *lse) {
    const dense_args a = dense_args_make(s, nkeys, span, window);
    const long ntiles = ((long)a.T * a.G + DM_ROWS - 1) / DM_ROWS, blocks = (long)a.B * a.g * ntiles;
    if (blocks == 0) return;
    MMA_WITH_DIMS(a.dk, a.dv, {
        const size_t smem = dm_chunk_bytes<DK, DV>();
        attn_allow_smem((const void *)dm_fwd_kernel<T, DK, DV>, smem);
        dm_fwd_kernel<T, DK, DV><<<(unsigned)blocks, DM_WARPS * 32, smem>>>(a, ntiles, q, k, v, o, lse);
    });
    CUDA_LAUNCH_CHECK();
}

void cuda_dense_mma_fwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                        const void *k, const void *v, void *o, float *lse) {
    DISPATCH_ACT(be, dm_fwd<act_t>(s, nkeys, span, window, (const act_t *)q, (const act_t *)k, (const act_t *)v,
                                   (act_t *)o, lse));
}

template <typename T>
static void dm_bwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const T *q, const T *k,
                   const T *v, const T *o, const float *lse, const T *dout, const float *drow, T *dq, T *dk, T *dv) {
    const dense_args a = dense_args_make(s, nkeys, span, window);
    const long rows = (long)a.B * a.T * a.h;
    if (rows == 0) return;
    const dense_bwd_plan pl = dense_bwd_plan_make(be, s, nkeys, DM_KEYS, DM_TARGET_BLOCKS, DM_MIN_PAIRS);
    const float *D = cuda_attn_drow(be, drow, dout, o, rows, a.dv, pl.D);

    const long ntiles = ((long)a.T * a.G + DM_ROWS - 1) / DM_ROWS, qblocks = (long)a.B * a.g * ntiles;
    MMA_WITH_DIMS(a.dk, a.dv, {
        const size_t smem = dm_chunk_bytes<DK, DV>();
        attn_allow_smem((const void *)dm_dq_kernel<T, DK, DV>, smem);
        dm_dq_kernel<T, DK, DV><<<(unsigned)qblocks, DM_WARPS * 32, smem>>>(a, ntiles, q, k, v, lse, D, dout, dq);
    });
    CUDA_LAUNCH_CHECK();
    if (pl.kblocks == 0) return;
    MMA_WITH_DIMS(a.dk, a.dv, {
        const size_t smem = dm_dkdv_bytes<DK, DV>();
        attn_allow_smem((const void *)dm_dkdv_kernel<T, DK, DV>, smem);
        dm_dkdv_kernel<T, DK, DV><<<(unsigned)(pl.kblocks * pl.nsplit), DM_WARPS * 32, smem>>>(
            a, pl.nsplit, q, k, v, lse, D, dout, dk, dv, pl.part);
    });
    CUDA_LAUNCH_CHECK();
    dense_split_sum(a, pl, dk, dv);
}

void cuda_dense_mma_bwd(asa_backend *be, const asa_attn_shape *s, int nkeys, int span, int window, const void *q,
                        const void *k, const void *v, const void *o, const float *lse, const void *dout,
                        const float *drow, void *dq, void *dk, void *dv) {
    DISPATCH_ACT(be, dm_bwd<act_t>(be, s, nkeys, span, window, (const act_t *)q, (const act_t *)k, (const act_t *)v,
                                   (const act_t *)o, lse, (const act_t *)dout, drow, (act_t *)dq, (act_t *)dk,
                                   (act_t *)dv));
}
