#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

static void *cpu_alloc(asa_backend *be, size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? (bytes + 63) / 64 * 64 : 64) != 0) asa_fatal("out of memory allocating %zu bytes", bytes);
    memset(p, 0, bytes);
    return p;
}

static void cpu_free(asa_backend *be, void *p) { free(p); }
static void cpu_zero(asa_backend *be, void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_copy(asa_backend *be, void *dst, const void *src, size_t bytes) { if (dst != src) memcpy(dst, src, bytes); }
static void cpu_sync(asa_backend *be) {}
// Activations are fp32 on the CPU: no bf16 tensor exists here to convert to or from.
static void cpu_act_copy_in(asa_backend *be, void *dst, const float *src, size_t n) {
    cpu_copy(be, dst, src, n * sizeof(float));
}
static void cpu_act_copy_out(asa_backend *be, float *dst, const void *src, size_t n) {
    cpu_copy(be, dst, src, n * sizeof(float));
}
static void cpu_convert(asa_backend *be, void *dst, asa_dtype dt, const void *src, asa_dtype st, size_t n) {
    ASA_CHECK(dt == ASA_F32 && st == ASA_F32);
    cpu_copy(be, dst, src, n * sizeof(float));
}

// MemAvailable (what the kernel can hand out without swapping) when /proc says it, else free pages.
static void cpu_mem_info(asa_backend *be, size_t *free_bytes, size_t *total_bytes) {
    long page = sysconf(_SC_PAGESIZE);
    *total_bytes = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)page;
    *free_bytes = (size_t)sysconf(_SC_AVPHYS_PAGES) * (size_t)page;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return;
    char line[256];
    unsigned long long kb;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) *free_bytes = (size_t)kb * 1024;
    fclose(f);
}
static void cpu_destroy(asa_backend *be) { free(be); }

asa_backend *asa_backend_cpu_new(void) {
    asa_backend *be = asa_calloc(1, sizeof *be);
    be->name = "cpu";
    be->precision = ASA_PRECISION_FP32;
    be->act = ASA_F32;
    be->destroy = cpu_destroy;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->zero = cpu_zero;
    be->to_device = cpu_copy;
    be->to_host = cpu_copy;
    be->sync = cpu_sync;
    be->mem_info = cpu_mem_info;
    be->act_to_device = cpu_act_copy_in;
    be->act_to_host = cpu_act_copy_out;
    be->convert = cpu_convert;
    be->gemm = cpu_gemm;
    be->embedding_fwd = cpu_embedding_fwd;
    be->embedding_bwd = cpu_embedding_bwd;
    be->rmsnorm_fwd = cpu_rmsnorm_fwd;
    be->rmsnorm_bwd = cpu_rmsnorm_bwd;
    be->rope_fwd = cpu_rope_fwd;
    be->rope_bwd = cpu_rope_bwd;
    be->swiglu_fwd = cpu_swiglu_fwd;
    be->swiglu_bwd = cpu_swiglu_bwd;
    be->copy_heads = cpu_copy_heads;
    be->xent_fwd_bwd = cpu_xent_fwd_bwd;
    be->gate_fwd = cpu_gate_fwd;
    be->gate_bwd = cpu_gate_bwd;
    be->attn_fwd = cpu_attn_fwd;
    be->attn_bwd = cpu_attn_bwd;
    be->compress_fwd = cpu_compress_fwd;
    be->compress_bwd = cpu_compress_bwd;
    be->attn_cmp_fwd = cpu_attn_cmp_fwd;
    be->attn_cmp_bwd = cpu_attn_cmp_bwd;
    be->select_topk = cpu_select_topk;
    be->attn_slc_fwd = cpu_attn_slc_fwd;
    be->attn_slc_bwd = cpu_attn_slc_bwd;
    be->attn_decode = cpu_attn_decode;
    be->select_decode = cpu_select_decode;
    be->attn_slc_decode = cpu_attn_slc_decode;
    be->adamw = cpu_adamw;
    be->sum_squares = cpu_sum_squares;
    be->scale = cpu_scale;
    be->add = cpu_add;
    return be;
}
