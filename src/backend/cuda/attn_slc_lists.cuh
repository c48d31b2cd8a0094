// What the two tensor-core implementations of selected attention share (attn_slc_mma.cu: TF32 mma for the
// tf32 and bf16 modes; attn_slc16.cu: bf16 mma for the bf16 mode): the kernel arguments, the walk of a block
// list in key chunks and the rows of a (anchor, group) tile; the merge of the key slices that the warps of a
// forward or dq block split a chunk into; and the block-list machinery of the dk/dv pass: inversion of the
// lists into CSR (per selection block, the ascending anchors that listed it), the prefix sums that cut each
// list into segments, a block's segment, the segments' partial sums and their reduction in segment order.
// Both implementations use 4 warps of 16 rows (or keys) each.
#ifndef ASA_BACKEND_CUDA_ATTN_SLC_LISTS_CUH
#define ASA_BACKEND_CUDA_ATTN_SLC_LISTS_CUH

#include "backend/cuda/attn_mma_common.cuh"

#include <cub/device/device_radix_sort.cuh>

#define SLC_WARPS 4
#define SLC_KEYS 64            // keys per block of the dk/dv pass (16 per warp)
#define SLC_SEG_ROWS 4096      // (query, head) rows per segment of a list at least
#define SLC_SCAN_THREADS 1024  // threads of the one block of slc_mma_scan_kernel

typedef struct {
    int B, T, h, g, dk, dv, bsel, n, R, na, nsb, G, rows;  // rows = R*G, the rows sharing a list
    float scale, sl2;                                      // sl2 = scale * log2(e): scores in base 2
} slc_mma_args;

static inline slc_mma_args slc_mma_make(const asa_attn_shape *s) {
    slc_mma_args a;
    a.B = s->B, a.T = s->T, a.h = s->h, a.g = s->g, a.dk = s->dk, a.dv = s->dv;
    a.bsel = s->selection_block_size, a.n = s->block_counts, a.R = s->selection_share;
    a.na = asa_attn_num_anchors(s), a.nsb = (s->T + a.bsel - 1) / a.bsel;
    a.G = s->h / s->g, a.rows = a.R * a.G;
    a.scale = s->scale, a.sl2 = s->scale * LOG2E;
    return a;
}

// The (m-tile chunk, anchor, group, sequence) of forward or dq block blockIdx.x. Groups vary more slowly
// than anchors: the blocks resident at one time then gather the KV rows of one group, which at long T fit
// in L2 where those of every group would not (65536 keys of 128 + 128 bf16 dims are 32 MiB a group).
static __device__ __forceinline__ void slc_tile_of(const slc_mma_args &a, int chunks, int &chunk, int &an, int &j,
                                                   int &b) {
    chunk = blockIdx.x % chunks, an = blockIdx.x / chunks % a.na, j = blockIdx.x / (chunks * a.na) % a.g;
    b = blockIdx.x / (chunks * a.na * a.g);
}

// Walks a block list in chunks of kt keys: (e, off) is list entry e, offset off inside its block.
// Moves to the first chunk at or after (e, off) with keys left (tokens <= tmax); false at the list's end.
static __device__ __forceinline__ bool slc_chunk(const int32_t *row, const slc_mma_args &a, int kt, int tmax, int &e,
                                                 int &off, int &c0, int &cn) {
    for (; e < a.n; e++, off = 0) {
        const int u = row[e];
        if (u < 0) continue;
        const int s1 = min((u + 1) * a.bsel, tmax + 1);
        c0 = u * a.bsel + off;
        if (c0 < s1) {
            cn = min(kt, s1 - c0);
            return true;
        }
    }
    return false;
}

// Row rho of the tile of (anchor an, group j): token t (-1 for padding or past the sequence) and row r of q.
static __device__ __forceinline__ void slc_tile_row(const slc_mma_args &a, int b, int an, int j, int rho, int &t,
                                                    long &r) {
    t = an * a.R + rho / a.G;
    if (rho >= a.rows || t >= a.T) {
        t = -1, r = 0;
        return;
    }
    r = ((long)b * a.T + t) * a.h + j * a.G + rho % a.G;
}

// The warps of a forward or dq block split each chunk's keys into slices: warp w = ks * MT + mt (lane g, c)
// holds slice ks of m-tile mt. At the end the slices of an m-tile are merged, in slice order, into the warp
// of slice 0; the others are then done. slc_slices_put gives shared memory a warp's accumulators (Os,
// SLC_WARPS*16*D floats) and, with ML (the forward), its online-softmax state (Ms, Ls [SLC_WARPS][16]).
// The forward's merge itself stays in its kernels: as a function it compiled to different machine code.
template <int D, bool ML>
static __device__ __forceinline__ void slc_slices_put(float *Os, float (*Ms)[16], float (*Ls)[16],
                                                      const float (&acc)[D / 8][4], float m0, float m1, float l0,
                                                      float l1, int w, int g, int c) {
    __syncthreads();
    if (ML && c == 0) Ms[w][g] = m0, Ms[w][g + 8] = m1, Ls[w][g] = l0, Ls[w][g + 8] = l1;
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
        float *op = Os + (w * 16 + g) * D + nd * 8 + 2 * c;
        op[0] = acc[nd][0], op[1] = acc[nd][1], op[8 * D] = acc[nd][2], op[8 * D + 1] = acc[nd][3];
    }
    __syncthreads();
}

// dq, in the warp of slice 0: the summed accumulators of m-tile mt.
template <int DK, int MT>
static __device__ __forceinline__ void slc_slices_sum(const float *Ps, float (&acc)[DK / 8][4], int mt, int g, int c) {
    constexpr int KS = SLC_WARPS / MT;
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) {
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma unroll
        for (int x = 0; x < KS; x++) {
            const float *op = Ps + ((mt + x * MT) * 16 + g) * DK + nd * 8 + 2 * c;
            s0 += op[0], s1 += op[1], s2 += op[8 * DK], s3 += op[8 * DK + 1];
        }
        acc[nd][0] = s0, acc[nd][1] = s1, acc[nd][2] = s2, acc[nd][3] = s3;
    }
}

// The dk/dv pass: a block takes key tile kt (SLC_KEYS keys) of selection block u of group j, batch b, and
// one segment of the anchor list l of (b, j, u). A list is cut into segments of `sega` anchors (segment s of
// list l is number seg[l] + s overall), so that block 0, which every anchor lists, does not hold up the pass.
// The list of segment gs: seg[l] <= gs < seg[l + 1] (every list has a segment).
static __device__ __forceinline__ int slc_seg_list(const int *seg, int nlists, int gs) {
    int l = 0, hi = nlists;
    while (hi - l > 1) {
        const int mid = (l + hi) / 2;
        if (seg[mid] <= gs) l = mid;
        else hi = mid;
    }
    return l;
}

// The end of the dk/dv pass, in lane (g, c) of warp w: keys p0 = pfirst + 16w + g and p1 = p0 + 8 (of
// segment sidx of list l, key tile kt, keys below pend) hold dk = scale * ak and dv = av (accumulator rows g,
// g+8). Segment 0 of a list adds them into dk / dv, the others store them in `part` (slot seg[l] - l + sidx - 1)
// for slc_mma_reduce_kernel to add in segment order.
template <int DK, int DV, typename T>
static __device__ __forceinline__ void slc_dkdv_store(const slc_mma_args &a, const int *seg, int nkt, int l,
                                                      int sidx, int kt, int b, int j, int pend, int w, int g, int c,
                                                      int p0, int p1, const float (&ak)[DK / 8][4],
                                                      const float (&av)[DV / 8][4], float *part, T *dk, T *dv) {
    if (sidx > 0) {
        const int W = a.dk + a.dv;
        float *pp = part + ((long)(seg[l] - l + sidx - 1) * nkt + kt) * SLC_KEYS * W + (w * 16 + g) * W;
#pragma unroll
        for (int nd = 0; nd < DK / 8; nd++) {
            const int col = nd * 8 + 2 * c;
            if (col >= a.dk) break;
            pp[col] = a.scale * ak[nd][0], pp[col + 1] = a.scale * ak[nd][1];
            pp[8 * W + col] = a.scale * ak[nd][2], pp[8 * W + col + 1] = a.scale * ak[nd][3];
        }
#pragma unroll
        for (int nd = 0; nd < DV / 8; nd++) {
            const int col = nd * 8 + 2 * c;
            if (col >= a.dv) break;
            pp[a.dk + col] = av[nd][0], pp[a.dk + col + 1] = av[nd][1];
            pp[8 * W + a.dk + col] = av[nd][2], pp[8 * W + a.dk + col + 1] = av[nd][3];
        }
        return;
    }
    const long o0 = ((long)b * a.T + p0) * a.g + j, o1 = ((long)b * a.T + p1) * a.g + j;
#pragma unroll
    for (int nd = 0; nd < DK / 8; nd++) {
        const int col = nd * 8 + 2 * c;
        if (col >= a.dk) break;
        if (p0 < pend) mma_acc2(dk + o0 * a.dk + col, a.scale * ak[nd][0], a.scale * ak[nd][1]);
        if (p1 < pend) mma_acc2(dk + o1 * a.dk + col, a.scale * ak[nd][2], a.scale * ak[nd][3]);
    }
#pragma unroll
    for (int nd = 0; nd < DV / 8; nd++) {
        const int col = nd * 8 + 2 * c;
        if (col >= a.dv) break;
        if (p0 < pend) mma_acc2(dv + o0 * a.dv + col, av[nd][0], av[nd][1]);
        if (p1 < pend) mma_acc2(dv + o1 * a.dv + col, av[nd][2], av[nd][3]);
    }
}

// dk / dv += the partial sums of segments 1, 2, ... of list l (key tile kt), in segment order; with
// PARTS > 1, blockIdx.y picks one of PARTS slices of the tile's elements.
template <typename T, int PARTS>
__global__ void slc_mma_reduce_kernel(slc_mma_args a, int nkt, const int *seg, const float *part, T *dk, T *dv) {
    const int l = blockIdx.x / nkt, kt = blockIdx.x % nkt, ns = seg[l + 1] - seg[l];
    if (ns <= 1) return;
    const int u = l % a.nsb, j = l / a.nsb % a.g, b = l / (a.nsb * a.g), W = a.dk + a.dv;
    const int pfirst = u * a.bsel + kt * SLC_KEYS, pend = min((u + 1) * a.bsel, a.T);
    const float *pp = part + ((long)(seg[l] - l) * nkt + kt) * SLC_KEYS * W;
    const int per = (SLC_KEYS * W + PARTS - 1) / PARTS;
    const unsigned y = PARTS > 1 ? blockIdx.y : 0;
    const int x1 = min(SLC_KEYS * W, (int)(y + 1) * per);
    for (int x = y * per + threadIdx.x; x < x1; x += blockDim.x) {
        const int p = pfirst + x / W, col = x % W;
        if (p >= pend) break;
        float sum = 0.0f;
        for (int sl = 0; sl < ns - 1; sl++) sum += pp[(long)sl * nkt * SLC_KEYS * W + x];
        const long kr = ((long)b * a.T + p) * a.g + j;
        T *yp = col < a.dk ? dk + (kr * a.dk + col) : dv + (kr * a.dv + col - a.dk);
        st_f(yp, ld_f(yp) + sum);
    }
}

// The list entries as (list, anchor) pairs, in anchor order: entry (b, anchor an, group j, slot e) naming
// block u belongs to list l = (b*g + j)*nsb + u (unused slots: key nlists, sorted past every list); counts
// the entries of each list.
static __global__ void slc_mma_entries_kernel(slc_mma_args a, const int32_t *idx, long nentries, int nlists,
                                              int *keys, int *vals, int *count) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < nentries; i += (long)gridDim.x * blockDim.x) {
        const long r = i / a.n;  // (b*na + an)*g + j
        const int j = (int)(r % a.g), an = (int)(r / a.g % a.na), b = (int)(r / ((long)a.g * a.na));
        const int u = idx[i];
        const int l = u >= 0 ? (b * a.g + j) * a.nsb + u : nlists;
        keys[i] = l, vals[i] = an;
        if (u >= 0) atomicAdd(&count[l], 1);
    }
}

// One block: exclusive prefix sums start[0..n] of count and seg[0..n] of the segments per list
// (ceil(count / sega), at least 1). Each thread sums a contiguous part, thread 0 scans the part totals.
static __global__ void slc_mma_scan_kernel(const int *count, long n, int sega, int *start, int *seg) {
    __shared__ int tot[SLC_SCAN_THREADS], tseg[SLC_SCAN_THREADS];
    const long per = (n + SLC_SCAN_THREADS - 1) / SLC_SCAN_THREADS;
    const long i0 = min(threadIdx.x * per, n), i1 = min(i0 + per, n);
    int sc = 0, ss = 0;
    for (long i = i0; i < i1; i++) sc += count[i], ss += max(1, (count[i] + sega - 1) / sega);
    tot[threadIdx.x] = sc, tseg[threadIdx.x] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        int rc = 0, rs = 0;
        for (int x = 0; x < SLC_SCAN_THREADS; x++) {
            const int cx = tot[x], sx = tseg[x];
            tot[x] = rc, tseg[x] = rs;
            rc += cx, rs += sx;
        }
        start[n] = rc, seg[n] = rs;
    }
    __syncthreads();
    sc = tot[threadIdx.x], ss = tseg[threadIdx.x];
    for (long i = i0; i < i1; i++) {
        start[i] = sc, seg[i] = ss;
        sc += count[i], ss += max(1, (count[i] + sega - 1) / sega);
    }
}

// m-tiles per block (1, 2 or 4) for R·G rows, and the blocks per (anchor, group).
static inline int slc_mtiles(int rows, int *chunks) {
    const int need = (rows + 15) / 16, mt = need <= 1 ? 1 : need <= 2 ? 2 : 4;
    *chunks = (rows + 16 * mt - 1) / (16 * mt);
    return mt;
}

#define SLC_WITH_MT(mt, ...)          \
    do {                              \
        if ((mt) == 1) {              \
            constexpr int MT = 1;     \
            __VA_ARGS__;              \
        } else if ((mt) == 2) {       \
            constexpr int MT = 2;     \
            __VA_ARGS__;              \
        } else {                      \
            constexpr int MT = 4;     \
            __VA_ARGS__;              \
        }                             \
    } while (0)

// The dk/dv pass's lists, in the op's scratch: D [rows] (the row dots dout·o) | count [nlists] | start
// [nlists + 1] | seg [nlists + 1] | anchors [nentries] | the entries' lists and anchors before the sort, the
// sorted lists, the sort's workspace | part (the segments' partial sums).
typedef struct {
    float *D, *part;
    int *count, *start, *seg, *anchors;
    int *keys, *keys_sorted, *vals;
    void *sort_ws;
    size_t sort_ws_bytes;
    long nlists, xmax, nentries;  // xmax: segments beyond each list's first, at most
    int nkt, sega;                // key tiles per selection block, anchors per segment
    int key_bits;                 // bits of the keys 0..nlists
} slc_lists;

static inline size_t slc_align_up(size_t x) { return (x + 255) & ~(size_t)255; }

// Segments of at least SLC_SEG_ROWS rows, and few enough that there are at most about 8 per multiprocessor
// besides one per list: that bounds the partial sums' memory (8 * SMs slots).
static inline slc_lists slc_lists_alloc(asa_backend *be, const slc_mma_args &a) {
    slc_lists L;
    const long rows = (long)a.B * a.T * a.h, nentries = (long)a.B * a.na * a.g * a.n;
    L.nlists = (long)a.B * a.g * a.nsb;
    L.nkt = (a.bsel + SLC_KEYS - 1) / SLC_KEYS;
    const long per_sm = nentries / (8L * cuda_ctx_of(be)->num_sms) + 1;
    L.sega = (int)max((long)(SLC_SEG_ROWS + a.rows - 1) / a.rows, per_sm);
    L.xmax = nentries / L.sega;
    const size_t off_count = slc_align_up(rows * sizeof(float));
    const size_t off_start = off_count + slc_align_up(L.nlists * sizeof(int));
    const size_t off_seg = off_start + slc_align_up((L.nlists + 1) * sizeof(int));
    const size_t off_anchors = off_seg + slc_align_up((L.nlists + 1) * sizeof(int));
    const size_t ent_bytes = slc_align_up((nentries + 1) * sizeof(int));
    const size_t off_keys = off_anchors + ent_bytes, off_sorted = off_keys + ent_bytes;
    const size_t off_vals = off_sorted + ent_bytes;
    L.nentries = nentries;
    L.key_bits = 1;
    while ((1L << L.key_bits) <= L.nlists) L.key_bits++;
    L.sort_ws_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(NULL, L.sort_ws_bytes, (const int *)NULL, (int *)NULL,
                                               (const int *)NULL, (int *)NULL, nentries, 0, L.key_bits));
    const size_t off_ws = off_vals + ent_bytes;
    const size_t off_part = off_ws + slc_align_up(L.sort_ws_bytes);
    const size_t part_bytes = (size_t)L.xmax * L.nkt * SLC_KEYS * (a.dk + a.dv) * sizeof(float);
    char *scr = (char *)cuda_scratch(be, off_part + part_bytes + 256);
    L.D = (float *)scr, L.part = (float *)(scr + off_part);
    L.count = (int *)(scr + off_count), L.start = (int *)(scr + off_start), L.seg = (int *)(scr + off_seg);
    L.anchors = (int *)(scr + off_anchors);
    L.keys = (int *)(scr + off_keys), L.keys_sorted = (int *)(scr + off_sorted), L.vals = (int *)(scr + off_vals);
    L.sort_ws = scr + off_ws;
    return L;
}

// Fills L's count, start, seg and anchors from the block lists idx: the entries sorted by list with a
// stable radix sort keep their anchor order (deterministic lists, whatever the schedule).
static void slc_lists_build(const slc_mma_args &a, const int32_t *idx, const slc_lists &L, cudaStream_t st = 0) {
    CUDA_CHECK(cudaMemsetAsync(L.count, 0, L.nlists * sizeof(int), st));
    if (L.nentries > 0) {
        slc_mma_entries_kernel<<<cuda_blocks(L.nentries, CUDA_THREADS), CUDA_THREADS, 0, st>>>(
            a, idx, L.nentries, (int)L.nlists, L.keys, L.vals, L.count);
        CUDA_LAUNCH_CHECK();
        size_t ws = L.sort_ws_bytes;
        CUDA_CHECK(cub::DeviceRadixSort::SortPairs(L.sort_ws, ws, L.keys, L.keys_sorted, L.vals, L.anchors,
                                                   L.nentries, 0, L.key_bits, st));
    }
    slc_mma_scan_kernel<<<1, SLC_SCAN_THREADS, 0, st>>>(L.count, L.nlists, L.sega, L.start, L.seg);
    CUDA_LAUNCH_CHECK();
}

// After the dk/dv pass: adds the segments' partial sums (a grid of PARTS slices per key tile).
template <int PARTS, typename T>
static void slc_lists_reduce(const slc_mma_args &a, const slc_lists &L, T *dk, T *dv, cudaStream_t st = 0) {
    if (L.xmax == 0) return;
    slc_mma_reduce_kernel<T, PARTS><<<dim3((unsigned)(L.nlists * L.nkt), PARTS), 128, 0, st>>>(a, L.nkt, L.seg,
                                                                                                L.part, dk, dv);
    CUDA_LAUNCH_CHECK();
}

#endif
