// SPEC §4's block choice for one query row set from its selection-block scores, by one warp: shared by
// select_topk (every anchor) and select_decode (the one new token). The CPU's rule exactly: forced blocks
// 0, c-1, c, the rest by score, ties to the lower block index.
#ifndef ASA_BACKEND_CUDA_SELECT_ROWS_CUH
#define ASA_BACKEND_CUDA_SELECT_ROWS_CUH

#include "backend/cuda/cuda_common.cuh"

// (v1, i1) ranks above (v2, i2): higher score, ties to the lower block index; i < 0 is no candidate.
static __device__ __forceinline__ bool topk_better(float v1, int i1, float v2, int i2) {
    return i1 >= 0 && (i2 < 0 || v1 > v2 || (v1 == v2 && i1 < i2));
}

// The lane's best unchosen candidate among u = lane, lane + 32, ... in [1, c-2].
static __device__ __forceinline__ void topk_lane_best(const float *sc, const unsigned char *chosen, int c, int lane,
                                                      float &bv, int &bi) {
    bi = -1;
    bv = 0.0f;
    for (int u = lane; u <= c - 2; u += 32)
        if (u >= 1 && !chosen[u] && topk_better(sc[u], u, bv, bi)) bv = sc[u], bi = u;
}

// The chosen blocks of [0, c] into row[0..n), ascending, -1 padded (by one warp).
static __device__ __forceinline__ void topk_write_row(const unsigned char *chosen, int c, int n, int32_t *row,
                                                      int lane) {
    int cnt = 0;
    for (int base = 0; base <= c; base += 32) {
        const int u = base + lane;
        const bool f = u <= c && chosen[u];
        const unsigned m = __ballot_sync(FULL_MASK, f);
        if (f) row[cnt + __popc(m & ((1u << lane) - 1))] = u;
        cnt += __popc(m);
    }
    for (int e = cnt + lane; e < n; e += 32) row[e] = -1;
}

// SPEC §4's choice for one anchor (current selection block c) from its scores sc[0..c], by one warp:
// forced blocks 0, c-1, c, then rounds of a warp arg-max over the candidates; row[0..n) ascending, -1 padded.
static __device__ void topk_select_row(const float *sc, unsigned char *chosen, int c, int n, int32_t *row, int lane) {
    for (int u = lane; u <= c; u += 32) chosen[u] = u == 0 || u >= c - 1;
    const int nforced = c >= 2 ? 3 : c + 1;
    const int rounds = (c + 1 < n ? c + 1 : n) - nforced;
    float bv;
    int bi;
    topk_lane_best(sc, chosen, c, lane, bv, bi);
    for (int r = 0; r < rounds; r++) {
        float v = bv;
        int i = bi;
        for (int o = 16; o > 0; o >>= 1) {
            const float v2 = __shfl_xor_sync(FULL_MASK, v, o);
            const int i2 = __shfl_xor_sync(FULL_MASK, i, o);
            if (topk_better(v2, i2, v, i)) v = v2, i = i2;
        }
        // The order is total (indices differ), so every lane holds the same winner; its owner rescans.
        if (i % 32 == lane) {
            chosen[i] = 1;
            topk_lane_best(sc, chosen, c, lane, bv, bi);
        }
    }
    __syncwarp();
    topk_write_row(chosen, c, n, row, lane);
}

#endif
