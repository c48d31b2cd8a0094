// --device: the CPU backend, or the CUDA backend when the build has it (ASA_HAVE_CUDA).
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

asa_backend *cli_backend_new(const char *cmd, const char *device) {
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
        fprintf(stderr, "asa %s: device cpu\n", cmd);
        return asa_backend_cpu_new();
    }
    int gpu = 0;
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
            asa_backend *be = asa_backend_cuda_new(gpu);
            if (!be) {
                fprintf(stderr, "asa %s: device %s: %s\n", cmd, device, asa_err_msg());
                return NULL;
            }
            struct cudaDeviceProp p;
            if (cudaGetDeviceProperties(&p, gpu) == cudaSuccess)
                fprintf(stderr, "asa %s: device cuda:%d (%s, %.1f GiB, fp32)\n", cmd, gpu, p.name,
                        p.totalGlobalMem / (double)(1 << 30));
            else
                fprintf(stderr, "asa %s: device cuda:%d\n", cmd, gpu);
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
