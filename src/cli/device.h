// The --device option of the commands that run a model (train, generate, bench): which backend to
// create, and the line that says which one is used.
#ifndef ASA_CLI_DEVICE_H
#define ASA_CLI_DEVICE_H

#include "backend/backend.h"

// Help text for --device, shared by the commands' usage messages.
#define CLI_DEVICE_HELP                                                                                     \
    "  --device D         cpu | cuda | cuda:N (default: $ASA_DEVICE if set, else cuda when this build has\n" \
    "                     the CUDA backend and a GPU is present, else cpu)\n"

// The backend for `device` ("cpu", "cuda", "cuda:N"; NULL = the default above). Prints
// "asa <cmd>: device ..." to stderr. Returns NULL after printing "asa <cmd>: <why>" when the device is
// unknown or unusable (cuda in a build without CUDA, no GPU).
asa_backend *cli_backend_new(const char *cmd, const char *device);

#endif
