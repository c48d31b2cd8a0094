// Model weights as model.safetensors: the tensors of an asa_param_layout (SPEC §1-3 names and shapes,
// PyTorch [out, in] layout) stored as F32 or BF16, read back into a host fp32 arena with every name
// and shape checked against the layout.
#ifndef ASA_MODEL_WEIGHTS_IO_H
#define ASA_MODEL_WEIGHTS_IO_H

#include "core/safetensors.h"
#include "model/params.h"

// dtype: ASA_ST_F32 or ASA_ST_BF16. Written atomically, with metadata {"format": "pt"}.
int asa_weights_save(const asa_param_layout *layout, const float *host_params, const char *path, int dtype);
// Every tensor of the layout must be present with its exact shape, as F32, BF16 or F16, and no other
// tensor may be present. All checks run before any data is read, so on a mismatch host_params is
// untouched; only an IO error while reading can leave it partly written.
int asa_weights_load(const asa_param_layout *layout, float *host_params, const char *path);

#endif
