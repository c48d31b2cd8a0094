// --device and --precision: the CPU backend (fp32), or the CUDA backend when the build has it
// (ASA_HAVE_CUDA) in bf16 (the default), tf32 or fp32 mode.
#include "cli/device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#ifdef ASA_HAVE_CUDA
#include <cuda_runtime.h>

#include "backend/cuda/cuda_backend.h"

// Asked without side effects: a machine without a driver just reports no device.
static int cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error of a failed probe
        return 0;
    }
    return n;
}
#endif

asa_backend *cli_backend_new_rank(const char *cmd, const char *device, const char *precision, int gpu_index) {
    if (precision && strcmp(precision, "fp32") != 0 && strcmp(precision, "tf32") != 0 && strcmp(precision, "bf16") != 0) {
        fprintf(stderr, "asa %s: --precision: unknown precision '%s' (fp32, tf32 or bf16)\n", cmd, precision);
        return NULL;
    }
    const char *how = "--device";
    if (!device || !device[0]) {
        device = getenv("ASA_DEVICE");
        how = "ASA_DEVICE";
    }
    if (!device || !device[0]) {
        how = NULL;
#ifdef ASA_HAVE_CUDA
        device = cuda_device_count() > 0 ? "cuda" : "cpu";
#else
        device = "cpu";
#endif
    }
    if (!strcmp(device, "cpu")) {
        if (precision && strcmp(precision, "fp32") != 0) {
            fprintf(stderr, "asa %s: --precision %s: the CPU backend computes in fp32 only (%s needs a GPU: "
                    "--device cuda)\n", cmd, precision, precision);
            return NULL;
        }
        fprintf(stderr, "asa %s: device cpu (fp32)\n", cmd);
        return asa_backend_cpu_new();
    }
    int gpu = gpu_index;
    if (!strncmp(device, "cuda", 4)) {
        const char *n = device + 4;
        char *end = NULL;
        if (*n == ':') {
            long v = strtol(n + 1, &end, 10);
            if (end == n + 1 || *end || v < 0 || v > 1024) n = NULL;
            else gpu = (int)v;
        } else if (*n) {
            n = NULL;
        }
        if (n) {
#ifdef ASA_HAVE_CUDA
            asa_precision mode = !precision                ? ASA_PRECISION_BF16
                                 : !strcmp(precision, "fp32") ? ASA_PRECISION_FP32
                                 : !strcmp(precision, "tf32") ? ASA_PRECISION_TF32
                                                              : ASA_PRECISION_BF16;
            asa_backend *be = asa_backend_cuda_new(gpu, mode);
            if (!be) {
                fprintf(stderr, "asa %s: device %s: %s\n", cmd, device, asa_err_msg());
                return NULL;
            }
            const char *arith = mode == ASA_PRECISION_FP32   ? "fp32"
                                : mode == ASA_PRECISION_BF16 ? "bf16: bf16 activations and weight copy, fp32 master weights"
                                                             : "tf32: tensor-core matrix products, fp32 storage";
            // cuDNN's attention runs in bf16 mode only: say so there
            const int cudnn = mode == ASA_PRECISION_BF16 ? asa_backend_cuda_cudnn(be, -1) : 0;
            char fused[64] = "";
            if (cudnn) snprintf(fused, sizeof fused, ", cuDNN %d.%d attention", cudnn / 10000, cudnn / 100 % 100);
            struct cudaDeviceProp p;
            if (cudaGetDeviceProperties(&p, gpu) == cudaSuccess)
                fprintf(stderr, "asa %s: device cuda:%d (%s, %.1f GiB), %s%s\n", cmd, gpu, p.name,
                        p.totalGlobalMem / (double)(1 << 30), arith, fused);
            else
                fprintf(stderr, "asa %s: device cuda:%d, %s%s\n", cmd, gpu, arith, fused);
            return be;
#else
            (void)gpu;
            fprintf(stderr, "asa %s: device %s: this build has no CUDA backend (nvcc was not found when it was "
                    "configured)\n", cmd, device);
            return NULL;
#endif
        }
    }
    fprintf(stderr, "asa %s: %s: unknown device '%s' (cpu, cuda or cuda:N)\n", cmd, how ? how : "device", device);
    return NULL;
}

asa_backend *cli_backend_new(const char *cmd, const char *device) {
    return cli_backend_new_precision(cmd, device, NULL);
}

asa_backend *cli_backend_new_precision(const char *cmd, const char *device, const char *precision) {
    return cli_backend_new_rank(cmd, device, precision, 0);
}
