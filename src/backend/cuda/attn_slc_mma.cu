// Selected attention (SPEC §4) on the tensor cores, for the tf32 and bf16 modes: mma.sync m16n8k8 with
// operands rounded to TF32 (cvt.rna: 10-bit mantissa) and fp32 accumulation; softmax, masks and sums in fp32.
// The kernels are templates over the storage type T of q, k, v, o, dout, dq, dk, dv (float, or bf16, which
// TF32 holds exactly): operands are loaded into fp32 shared tiles and registers, outputs stored with st_f.
//
// Forward and dq: a block holds the R·G query rows that share one block list (anchor a, group j; row rho
// is token a*R + rho / G, head j*G + rho % G), padded to m-tiles of 16 rows, at most 4 m-tiles per block.
// Each selected KV block is copied into shared memory once for all the rows (cp.async, two chunks of SLC_KT
// keys in flight, with fp32 storage; bf16 rows go through registers, see stage4); the 4 warps split the work
// as (m-tile, key slice): with one m-tile each warp takes a quarter of every chunk's keys and keeps its own
// online-softmax state, merged at the end in warp order.
// dk / dv: a block holds 64 keys of one selection block u (16 per warp, the warp's m-tile) and streams the
// (query, head) rows of the anchors that listed u, 16 rows per chunk, in CSR order (ascending anchors);
// long lists are cut into segments whose partial sums are added in segment order. No atomics, fixed
// summation orders: the result is deterministic.
//
// Fragment layouts (PTX ISA, mma.m16n8k8 .tf32), g = lane / 4, c = lane % 4: A holds (g, c), (g+8, c),
// (g, c+4), (g+8, c+4); B holds (k c, n g), (k c+4, n g); the accumulator (g, 2c), (g, 2c+1), (g+8, 2c),
// (g+8, 2c+1). A product P·V sums over keys in any order, so the accumulator of S = Q·K^T serves as P's A
// fragment directly when the k index c stands for key 2c and c+4 for key 2c+1 (V's rows read to match):
// no shuffles between the two products. Shared-memory rows have a stride of d + 4 floats (d a multiple
// of 32): fragment reads (row g, column c; ldmatrix rows alike) hit banks 4g + c and the permuted ones
// (row 2c, column g) banks 8c + g, all distinct.
#include "backend/cuda/attn_kernels.cuh"
#include "backend/cuda/attn_mma_common.cuh"
#include "backend/cuda/attn_slc_lists.cuh"
#include "backend/cuda/attn_slc_mma.cuh"

#define SLC_KT 32  // keys per staged chunk (forward, dq)
#define SLC_NR 16  // query rows per staged chunk of the dk/dv pass (2 blocks per SM fit)

// Shared memory of the forward and dq kernels: two chunks of keys and values.
template <int DK, int DV>
static size_t slc_chunk_floats() {
    return 2 * (size_t)SLC_KT * (DK + 4 + DV + 4);
}

template <typename T, int DK, int DV, int MT>
__global__ void __launch_bounds__(SLC_WARPS * 32)
slc_mma_fwd_kernel(slc_mma_args a, int chunks, const T *q, const T *k, const T *v, const int32_t *idx, T *o,
                   float *lse) {
    constexpr int KS = SLC_WARPS / MT, KST = DK + 4, VST = DV + 4;
    extern __shared__ float4 smem4[];
    float *Ks = (float *)smem4, *Vs = Ks + 2 * SLC_KT * KST;
    __shared__ float Ms[SLC_WARPS][16], Ls[SLC_WARPS][16];
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const int mt = w % MT, ks = w / MT;
    int chunk, an, j, b;
    slc_tile_of(a, chunks, chunk, an, j, b);
    const int tmax = min(an * a.R + a.R, a.T) - 1;
    const int rho0 = (chunk * MT + mt) * 16 + g;
    int t0, t1;
    long r0, r1;
    slc_tile_row(a, b, an, j, rho0, t0, r0);
    slc_tile_row(a, b, an, j, rho0 + 8, t1, r1);
    uint32_t qf[DK / 8][4];
    mma_load_rows<DK>(qf, q, r0, r1, t0 >= 0, t1 >= 0, a.dk, c);

    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const T *kg = k + (long)b * a.T * krs + (long)j * a.dk, *vg = v + (long)b * a.T * vrs + (long)j * a.dv;
    const int32_t *row = idx + (((long)b * a.na + an) * a.g + j) * a.n;
    float acc[DV / 8][4];
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

    int e = 0, off = 0, c0 = 0, cn = 0, buf = 0;
    bool have = slc_chunk(row, a, SLC_KT, tmax, e, off, c0, cn);
    if (have) {
        stage_rows<DK>(Ks, kg + c0 * krs, krs, cn, SLC_KT, a.dk);
        stage_rows<DV>(Vs, vg + c0 * vrs, vrs, cn, SLC_KT, a.dv);
    }
    cp_commit();
    while (have) {
        const int cc0 = c0, ccn = cn;
        off += SLC_KT;
        have = slc_chunk(row, a, SLC_KT, tmax, e, off, c0, cn);
        if (have) {
            stage_rows<DK>(Ks + (buf ^ 1) * SLC_KT * KST, kg + c0 * krs, krs, cn, SLC_KT, a.dk);
            stage_rows<DV>(Vs + (buf ^ 1) * SLC_KT * VST, vg + c0 * vrs, vrs, cn, SLC_KT, a.dv);
        }
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const float *K = Ks + buf * SLC_KT * KST, *V = Vs + buf * SLC_KT * VST;
#pragma unroll
        for (int i = 0; i < MT; i++) {
            const int nt = ks + i * KS;
            if (nt * 8 >= ccn) break;
            float sc[4];
            mma_rowprod<DK>(sc, qf, K, nt, a.dk, lane);
            const int s = nt * 8 + 2 * c;  // key offsets s, s+1 in the chunk
            const float x0 = s < ccn && cc0 + s <= t0 ? sc[0] * a.sl2 : -INFINITY;
            const float x1 = s + 1 < ccn && cc0 + s + 1 <= t0 ? sc[1] * a.sl2 : -INFINITY;
            const float x2 = s < ccn && cc0 + s <= t1 ? sc[2] * a.sl2 : -INFINITY;
            const float x3 = s + 1 < ccn && cc0 + s + 1 <= t1 ? sc[3] * a.sl2 : -INFINITY;
            float mx0 = fmaxf(x0, x1), mx1 = fmaxf(x2, x3);
            mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 2));
            const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
            // A row with no visible key yet keeps max -inf; its factors must be 0, not exp2(-inf + inf).
            const float f0 = n0 == -INFINITY ? 1.0f : exp2f(m0 - n0), f1 = n1 == -INFINITY ? 1.0f : exp2f(m1 - n1);
            const float b0 = n0 == -INFINITY ? 0.0f : n0, b1 = n1 == -INFINITY ? 0.0f : n1;
            const float p0 = exp2f(x0 - b0), p1 = exp2f(x1 - b0), p2 = exp2f(x2 - b1), p3 = exp2f(x3 - b1);
            m0 = n0, m1 = n1;
            l0 = l0 * f0 + p0 + p1, l1 = l1 * f1 + p2 + p3;
            const uint32_t a0 = tf32(p0), a1 = tf32(p2), a2 = tf32(p1), a3 = tf32(p3);
            if (__any_sync(FULL_MASK, f0 != 1.0f || f1 != 1.0f))  // a row's max moved: rescale
#pragma unroll
                for (int nd = 0; nd < DV / 8; nd++)
                    acc[nd][0] *= f0, acc[nd][1] *= f0, acc[nd][2] *= f1, acc[nd][3] *= f1;
            const float *vr = V + (nt * 8 + 2 * c) * VST + g;
#pragma unroll
            for (int nd = 0; nd < DV / 8; nd++)
                if (nd * 8 < a.dv) mma8(acc[nd], a0, a1, a2, a3, tf32(vr[nd * 8]), tf32(vr[VST + nd * 8]));
        }
        __syncthreads();  // the next iteration stages into this buffer
        buf ^= 1;
    }
    cp_wait<0>();
    l0 += __shfl_xor_sync(FULL_MASK, l0, 1);
    l0 += __shfl_xor_sync(FULL_MASK, l0, 2);
    l1 += __shfl_xor_sync(FULL_MASK, l1, 1);
    l1 += __shfl_xor_sync(FULL_MASK, l1, 2);
    if (KS > 1) {  // merge the key slices of each m-tile into the warp with ks = 0, in slice order
        slc_slices_put<DV, true>((float *)smem4, Ms, Ls, acc, m0, m1, l0, l1, w, g, c);
        if (ks != 0) return;
        float n0 = -INFINITY, n1 = -INFINITY;
        for (int x = 0; x < KS; x++) n0 = fmaxf(n0, Ms[mt + x * MT][g]), n1 = fmaxf(n1, Ms[mt + x * MT][g + 8]);
        float f0[KS], f1[KS];
        l0 = l1 = 0.0f;
#pragma unroll
        for (int x = 0; x < KS; x++) {
            const int wx = mt + x * MT;
            f0[x] = n0 == -INFINITY ? 0.0f : exp2f(Ms[wx][g] - n0);
            f1[x] = n1 == -INFINITY ? 0.0f : exp2f(Ms[wx][g + 8] - n1);
            l0 += Ls[wx][g] * f0[x], l1 += Ls[wx][g + 8] * f1[x];
        }
#pragma unroll
        for (int nd = 0; nd < DV / 8; nd++) {
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma unroll
            for (int x = 0; x < KS; x++) {
                const float *op = ((float *)smem4) + ((mt + x * MT) * 16 + g) * DV + nd * 8 + 2 * c;
                s0 += op[0] * f0[x], s1 += op[1] * f0[x], s2 += op[8 * DV] * f1[x], s3 += op[8 * DV + 1] * f1[x];
            }
            acc[nd][0] = s0, acc[nd][1] = s1, acc[nd][2] = s2, acc[nd][3] = s3;
        }
        m0 = n0, m1 = n1;
    }
    mma_store_o<DV>(o, lse, acc, a.dv, r0, r1, t0, t1, m0, m1, l0, l1, c);  // empty rows: o = 0, lse = -inf
}

// dq of the tile's rows: dq += scale * sum_s p_s (dout.v_s - D) k_s, with p_s = exp(q.k_s*scale - lse).
// Q and dout (the A operands of S = Q·K^T and dP = dout·V^T) sit in registers.
template <typename T, int DK, int DV, int MT>
__global__ void __launch_bounds__(SLC_WARPS * 32)
slc_mma_dq_kernel(slc_mma_args a, int chunks, const T *q, const T *k, const T *v, const int32_t *idx,
                  const float *lse, const float *D, const T *dout, T *dq) {
    constexpr int KS = SLC_WARPS / MT, KST = DK + 4, VST = DV + 4;
    extern __shared__ float4 smem4[];
    float *Ks = (float *)smem4, *Vs = Ks + 2 * SLC_KT * KST;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const int mt = w % MT, ks = w / MT;
    int chunk, an, j, b;
    slc_tile_of(a, chunks, chunk, an, j, b);
    const int tmax = min(an * a.R + a.R, a.T) - 1;
    const int rho0 = (chunk * MT + mt) * 16 + g;
    int t0, t1;
    long r0, r1;
    slc_tile_row(a, b, an, j, rho0, t0, r0);
    slc_tile_row(a, b, an, j, rho0 + 8, t1, r1);
    // Rows with lse = -inf saw no key: no gradient.
    const float L0 = t0 >= 0 ? lse[r0] : -INFINITY, L1 = t1 >= 0 ? lse[r1] : -INFINITY;
    if (L0 == -INFINITY) t0 = -1;
    if (L1 == -INFINITY) t1 = -1;
    const float lb0 = t0 >= 0 ? L0 * LOG2E : 0.0f, lb1 = t1 >= 0 ? L1 * LOG2E : 0.0f;
    const float D0 = t0 >= 0 ? D[r0] : 0.0f, D1 = t1 >= 0 ? D[r1] : 0.0f;
    uint32_t qf[DK / 8][4], of[DV / 8][4];
    mma_load_rows<DK>(qf, q, r0, r1, t0 >= 0, t1 >= 0, a.dk, c);
    mma_load_rows<DV>(of, dout, r0, r1, t0 >= 0, t1 >= 0, a.dv, c);

    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const T *kg = k + (long)b * a.T * krs + (long)j * a.dk, *vg = v + (long)b * a.T * vrs + (long)j * a.dv;
    const int32_t *row = idx + (((long)b * a.na + an) * a.g + j) * a.n;
    float acc[DK / 8][4];
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;

    int e = 0, off = 0, c0 = 0, cn = 0, buf = 0;
    bool have = slc_chunk(row, a, SLC_KT, tmax, e, off, c0, cn);
    if (have) {
        stage_rows<DK>(Ks, kg + c0 * krs, krs, cn, SLC_KT, a.dk);
        stage_rows<DV>(Vs, vg + c0 * vrs, vrs, cn, SLC_KT, a.dv);
    }
    cp_commit();
    while (have) {
        const int cc0 = c0, ccn = cn;
        off += SLC_KT;
        have = slc_chunk(row, a, SLC_KT, tmax, e, off, c0, cn);
        if (have) {
            stage_rows<DK>(Ks + (buf ^ 1) * SLC_KT * KST, kg + c0 * krs, krs, cn, SLC_KT, a.dk);
            stage_rows<DV>(Vs + (buf ^ 1) * SLC_KT * VST, vg + c0 * vrs, vrs, cn, SLC_KT, a.dv);
        }
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const float *K = Ks + buf * SLC_KT * KST, *V = Vs + buf * SLC_KT * VST;
#pragma unroll
        for (int i = 0; i < MT; i++) {
            const int nt = ks + i * KS;
            if (nt * 8 >= ccn) break;
            float sc[4], dp[4];
            mma_rowprod<DK>(sc, qf, K, nt, a.dk, lane);
            mma_rowprod<DV>(dp, of, V, nt, a.dv, lane);
            const int s = nt * 8 + 2 * c;
            const float p0 = s < ccn && cc0 + s <= t0 ? exp2f(sc[0] * a.sl2 - lb0) : 0.0f;
            const float p1 = s + 1 < ccn && cc0 + s + 1 <= t0 ? exp2f(sc[1] * a.sl2 - lb0) : 0.0f;
            const float p2 = s < ccn && cc0 + s <= t1 ? exp2f(sc[2] * a.sl2 - lb1) : 0.0f;
            const float p3 = s + 1 < ccn && cc0 + s + 1 <= t1 ? exp2f(sc[3] * a.sl2 - lb1) : 0.0f;
            const uint32_t a0 = tf32(p0 * (dp[0] - D0)), a2 = tf32(p1 * (dp[1] - D0));
            const uint32_t a1 = tf32(p2 * (dp[2] - D1)), a3 = tf32(p3 * (dp[3] - D1));
            const float *kr = K + (nt * 8 + 2 * c) * KST + g;
#pragma unroll
            for (int nd = 0; nd < DK / 8; nd++)
                if (nd * 8 < a.dk) mma8(acc[nd], a0, a1, a2, a3, tf32(kr[nd * 8]), tf32(kr[KST + nd * 8]));
        }
        __syncthreads();
        buf ^= 1;
    }
    cp_wait<0>();
    if (KS > 1) {  // sum the key slices of each m-tile in slice order
        slc_slices_put<DK, false>((float *)smem4, NULL, NULL, acc, 0.0f, 0.0f, 0.0f, 0.0f, w, g, c);
        if (ks != 0) return;
        slc_slices_sum<DK, MT>((float *)smem4, acc, mt, g, c);
    }
    mma_add_dq<DK>(dq, acc, a.dk, a.scale, r0, r1, t0, t1, c);
}

// Stages rows [i0, i0 + SLC_NR) of the stream of (query, head) rows of list entries e0, e0 + 1, ... (each
// anchor's R·G rows in tile order, nrows in all): q and dout rows (stage4), and lse (base 2), D and t
// per row (t = -1 for rows past the stream, past the sequence, or with no visible key: they add nothing).
// SLC_WARPS*32 / SLC_NR threads share a row, so each finds its row's address once.
template <int DK, int DV, typename T>
static __device__ __forceinline__ void slc_stage_queries(const slc_mma_args &a, int b, int j, const int *anchors,
                                                         int e0, long nrows, long i0, const T *q, const float *lse,
                                                         const float *D, const T *dout, float *Qs, float *Os,
                                                         float *Lb, float *Db, int *Tb) {
    constexpr int TPR = SLC_WARPS * 32 / SLC_NR;
    const int rr = threadIdx.x / TPR, part = threadIdx.x % TPR;
    const long i = i0 + rr;
    int t = -1;
    long r = 0;
    if (i < nrows) slc_tile_row(a, b, anchors[e0 + i / a.rows], j, (int)(i % a.rows), t, r);
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
static size_t slc_dkdv_floats() {
    return (size_t)SLC_KEYS * (DK + 4 + DV + 4) + 2 * ((size_t)SLC_NR * (DK + 4 + DV + 4) + 3 * SLC_NR);
}

// dk / dv of 64 keys of selection block u of group j (key tile kt of the block) from one segment of the
// block's anchor list: for the streamed rows (columns of the transposed products), S^T = K·Q^T and
// dP^T = V·dout^T, then dv += P^T·dout and dk += dS^T·Q, P^T's and dS^T's accumulators reused as A
// fragments with the k index c standing for row 2c, c+4 for row 2c+1. A list is cut into segments of
// `sega` anchors (segment s of list l is number seg[l] + s overall), so that block 0, which every anchor
// lists, does not hold up the pass: segment 0 adds into dk / dv, the others store partial sums in `part`
// (slot seg[l] - l + s - 1) for slc_mma_reduce_kernel to add in segment order.
template <typename T, int DK, int DV>
__global__ void __launch_bounds__(SLC_WARPS * 32)
slc_mma_dkdv_kernel(slc_mma_args a, int nkt, int sega, const T *q, const T *k, const T *v, const float *lse,
                    const float *D, const T *dout, const int *start, const int *seg, const int *anchors, T *dk, T *dv,
                    float *part) {
    constexpr int KST = DK + 4, VST = DV + 4, QBUF = SLC_NR * (KST + VST) + 3 * SLC_NR;
    extern __shared__ float4 smem4[];
    float *Ks = (float *)smem4, *Vs = Ks + SLC_KEYS * KST, *Qb = Vs + SLC_KEYS * VST;
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, c = lane % 4;
    const int nlists = a.B * a.g * a.nsb, kt = blockIdx.x % nkt, gs = blockIdx.x / nkt;
    if (gs >= seg[nlists]) return;  // the grid covers the most segments there can be
    const int l = slc_seg_list(seg, nlists, gs);
    const int sidx = gs - seg[l], u = l % a.nsb, j = l / a.nsb % a.g, b = l / (a.nsb * a.g);
    const int e0 = start[l] + sidx * sega, e1 = min(e0 + sega, start[l + 1]);
    const int pfirst = u * a.bsel + kt * SLC_KEYS, pend = min((u + 1) * a.bsel, a.T);
    if (pfirst >= pend || e0 >= e1) return;
    const int cnk = min(SLC_KEYS, pend - pfirst);
    const long krs = (long)a.g * a.dk, vrs = (long)a.g * a.dv;
    const long kr0 = ((long)b * a.T + pfirst) * a.g + j;  // key row pfirst of head j, in units of heads
    stage_rows<DK>(Ks, k + kr0 * a.dk, krs, cnk, SLC_KEYS, a.dk);
    stage_rows<DV>(Vs, v + kr0 * a.dv, vrs, cnk, SLC_KEYS, a.dv);
    const long nrows = (long)(e1 - e0) * a.rows;
    const int p0 = pfirst + w * 16 + g, p1 = p0 + 8;  // this thread's keys (accumulator rows g, g+8)

    float ak[DK / 8][4], av[DV / 8][4];
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) ak[nd][0] = ak[nd][1] = ak[nd][2] = ak[nd][3] = 0.0f;
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) av[nd][0] = av[nd][1] = av[nd][2] = av[nd][3] = 0.0f;

    int buf = 0;
    if (nrows > 0) {
        float *Q = Qb, *O = Q + SLC_NR * KST, *Lb = O + SLC_NR * VST, *Db = Lb + SLC_NR;
        slc_stage_queries<DK, DV>(a, b, j, anchors, e0, nrows, 0, q, lse, D, dout, Q, O, Lb, Db, (int *)(Db + SLC_NR));
    }
    cp_commit();
    // K and V are the A operands of every chunk: round them to TF32 in place once
    cp_wait<0>();
    __syncthreads();
    for (int x = threadIdx.x; x < SLC_KEYS * (KST + VST); x += blockDim.x) Ks[x] = __uint_as_float(tf32(Ks[x]));
    // ldmatrix rows: A fragments (rows g / g+8, columns c / c+4) and two k steps of B fragments
    const int arow = lane % 8 + (lane / 8 % 2) * 8, acol = lane / 16 * 4, brow = lane % 8, bcol = lane / 8 * 4;
    const float *kw = Ks + (w * 16 + arow) * KST + acol, *vw = Vs + (w * 16 + arow) * VST + acol;
    for (long i0 = 0; i0 < nrows; i0 += SLC_NR) {
        if (i0 + SLC_NR < nrows) {
            float *Q = Qb + (buf ^ 1) * QBUF, *O = Q + SLC_NR * KST, *Lb = O + SLC_NR * VST, *Db = Lb + SLC_NR;
            slc_stage_queries<DK, DV>(a, b, j, anchors, e0, nrows, i0 + SLC_NR, q, lse, D, dout, Q, O, Lb, Db,
                                      (int *)(Db + SLC_NR));
        }
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const float *Q = Qb + buf * QBUF, *O = Q + SLC_NR * KST, *Lb = O + SLC_NR * VST, *Db = Lb + SLC_NR;
        const int *Tb = (const int *)(Db + SLC_NR);
        float st[SLC_NR / 8][4], dpt[SLC_NR / 8][4];
#pragma unroll
        for (int rt = 0; rt < SLC_NR / 8; rt++)
            st[rt][0] = st[rt][1] = st[rt][2] = st[rt][3] = dpt[rt][0] = dpt[rt][1] = dpt[rt][2] = dpt[rt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DK / 8; kk += 2) {
            if (kk * 8 >= a.dk) break;
            uint32_t x[4], y[4];
            ldsm4(x, kw + kk * 8);
            ldsm4(y, kw + kk * 8 + 8);
#pragma unroll
            for (int rt = 0; rt < SLC_NR / 8; rt++) {
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
            for (int rt = 0; rt < SLC_NR / 8; rt++) {
                uint32_t z[4];
                ldsm4(z, O + (rt * 8 + brow) * VST + kk * 8 + bcol);
                mma8(dpt[rt], x[0], x[1], x[2], x[3], tf32u(z[0]), tf32u(z[1]));
                mma8(dpt[rt], y[0], y[1], y[2], y[3], tf32u(z[2]), tf32u(z[3]));
            }
        }
#pragma unroll
        for (int rt = 0; rt < SLC_NR / 8; rt++) {
            const int ra = rt * 8 + 2 * c, rb = ra + 1;  // the accumulator's columns: rows ra, rb of the chunk
            const int ta = Tb[ra], tb = Tb[rb];
            const float la = Lb[ra], lb = Lb[rb], da = Db[ra], db = Db[rb];
            const float pa0 = p0 <= ta ? exp2f(st[rt][0] * a.sl2 - la) : 0.0f;
            const float pb0 = p0 <= tb ? exp2f(st[rt][1] * a.sl2 - lb) : 0.0f;
            const float pa1 = p1 <= ta ? exp2f(st[rt][2] * a.sl2 - la) : 0.0f;
            const float pb1 = p1 <= tb ? exp2f(st[rt][3] * a.sl2 - lb) : 0.0f;
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
    slc_dkdv_store<DK, DV>(a, seg, nkt, l, sidx, kt, b, j, pend, w, g, c, p0, p1, ak, av, part, dk, dv);
}

bool cuda_slc_mma_ok(const asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                     const void *dout) {
    return s->dk % 4 == 0 && s->dv % 4 == 0 && s->dk <= 160 && s->dv <= 128 && mma_aligned4(be, q) &&
           mma_aligned4(be, k) && mma_aligned4(be, v) && (dout == NULL || mma_aligned4(be, dout));
}

// The dims of MMA_WITH_DIMS plus dk 160 / dv 128: ASA's global layers attend over latent keys [c ; kr] of
// 128 + 32 (asa-340M, asa-1.3B) and values of 128.
#define SLC_WITH_DIMS(dk, dv, ...)                                   \
    do {                                                             \
        if ((dk) > 128 && (dk) <= 160 && (dv) <= 128) {              \
            constexpr int DK = 160, DV = 128;                        \
            __VA_ARGS__;                                             \
        } else {                                                     \
            MMA_WITH_DIMS(dk, dv, __VA_ARGS__);                      \
        }                                                            \
    } while (0)

template <typename T>
static void slc_mma_fwd(const asa_attn_shape *s, const T *q, const T *k, const T *v, const int32_t *idx, T *o,
                        float *lse) {
    const slc_mma_args a = slc_mma_make(s);
    int chunks;
    const int mt = slc_mtiles(a.rows, &chunks);
    const long blocks = (long)a.B * a.na * a.g * chunks;
    if (blocks == 0) return;
    SLC_WITH_DIMS(a.dk, a.dv, SLC_WITH_MT(mt, {
        const size_t smem = slc_chunk_floats<DK, DV>() * sizeof(float);
        attn_allow_smem((const void *)slc_mma_fwd_kernel<T, DK, DV, MT>, smem);
        slc_mma_fwd_kernel<T, DK, DV, MT><<<(unsigned)blocks, SLC_WARPS * 32, smem>>>(a, chunks, q, k, v, idx, o, lse);
    }));
    CUDA_LAUNCH_CHECK();
}

void cuda_slc_mma_fwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                      const int32_t *idx, void *o, float *lse) {
    DISPATCH_ACT(be, slc_mma_fwd<act_t>(s, (const act_t *)q, (const act_t *)k, (const act_t *)v, idx, (act_t *)o,
                                        lse));
}

template <typename T>
static void slc_mma_bwd(asa_backend *be, const asa_attn_shape *s, const T *q, const T *k, const T *v,
                        const int32_t *idx, const T *o, const float *lse, const T *dout, const float *drow, T *dq,
                        T *dk, T *dv) {
    const slc_mma_args a = slc_mma_make(s);
    const long rows = (long)a.B * a.T * a.h;
    if (rows == 0) return;
    const slc_lists L = slc_lists_alloc(be, a);
    const float *D = cuda_attn_drow(be, drow, dout, o, rows, a.dv, L.D);
    int chunks;
    const int mt = slc_mtiles(a.rows, &chunks);
    SLC_WITH_DIMS(a.dk, a.dv, SLC_WITH_MT(mt, {
        const size_t smem = slc_chunk_floats<DK, DV>() * sizeof(float);  // holds the final merge too
        attn_allow_smem((const void *)slc_mma_dq_kernel<T, DK, DV, MT>, smem);
        slc_mma_dq_kernel<T, DK, DV, MT><<<(unsigned)((long)a.B * a.na * a.g * chunks), SLC_WARPS * 32, smem>>>(
            a, chunks, q, k, v, idx, lse, D, dout, dq);
    }));
    CUDA_LAUNCH_CHECK();

    slc_lists_build(a, idx, L);

    SLC_WITH_DIMS(a.dk, a.dv, {
        const size_t smem = slc_dkdv_floats<DK, DV>() * sizeof(float);
        attn_allow_smem((const void *)slc_mma_dkdv_kernel<T, DK, DV>, smem);
        slc_mma_dkdv_kernel<T, DK, DV><<<(unsigned)((L.nlists + L.xmax) * L.nkt), SLC_WARPS * 32, smem>>>(
            a, L.nkt, L.sega, q, k, v, lse, D, dout, L.start, L.seg, L.anchors, dk, dv, L.part);
    });
    CUDA_LAUNCH_CHECK();
    slc_lists_reduce<1>(a, L, dk, dv);
}

void cuda_slc_mma_bwd(asa_backend *be, const asa_attn_shape *s, const void *q, const void *k, const void *v,
                      const int32_t *idx, const void *o, const float *lse, const void *dout, const float *drow,
                      void *dq, void *dk, void *dv) {
    DISPATCH_ACT(be, slc_mma_bwd<act_t>(be, s, (const act_t *)q, (const act_t *)k, (const act_t *)v, idx,
                                        (const act_t *)o, lse, (const act_t *)dout, drow, (act_t *)dq,
                                        (act_t *)dk, (act_t *)dv));
}
