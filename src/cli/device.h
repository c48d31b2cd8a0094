// The --device and --precision options of the commands that run a model (train, generate, bench, eval):
// which backend to create, in which arithmetic, and the line that says so.
#ifndef ASA_CLI_DEVICE_H
#define ASA_CLI_DEVICE_H

#include "backend/backend.h"

// Help text for --device and --precision, shared by the commands' usage messages.
#define CLI_DEVICE_HELP                                                                                     \
    "  --device D         cpu | cuda | cuda:N (default: $ASA_DEVICE if set, else cuda when this build has\n" \
    "                     the CUDA backend and a GPU is present, else cpu)\n"                                \
    "  --precision P      bf16 | tf32 | fp32 (default bf16 on a GPU; the CPU has fp32 only): bf16 keeps\n" \
    "                     activations, KV caches and a copy of the weights in bf16 for the bf16 tensor cores\n" \
    "                     (fp32 master weights, gradients of the weights, optimizer and sums); tf32 runs the\n" \
    "                     matrix products on the tensor cores (operands rounded to TF32) on fp32 tensors\n"

// The backend for `device` ("cpu", "cuda", "cuda:N"; NULL = the default above) in `precision` ("fp32",
// "tf32", "bf16"; NULL = the device's default). Prints "asa <cmd>: device ..." naming the precision to stderr.
// Returns NULL after printing "asa <cmd>: <why>" when the device is unknown or unusable (cuda in a build
// without CUDA, no GPU) or the precision is unknown or not offered by the device (tf32, bf16 on the CPU).
asa_backend *cli_backend_new_precision(const char *cmd, const char *device, const char *precision);

// The same, with "cuda" (given or chosen by default) meaning GPU gpu_index rather than 0: the GPU of a
// data-parallel rank, its rank among the processes of its machine.
asa_backend *cli_backend_new_rank(const char *cmd, const char *device, const char *precision, int gpu_index);

// cli_backend_new_precision in the device's default precision.
asa_backend *cli_backend_new(const char *cmd, const char *device);

#endif
