// Floating-point operations of the model, for throughput and MFU figures. Attention is counted by the
// keys each query actually reads (causal half for F, the window for W and L, compressed blocks + n·b_s
// selected keys (+ window) for N and G), so sparse kinds are not credited with dense work.
#ifndef ASA_MODEL_FLOPS_H
#define ASA_MODEL_FLOPS_H

#include "asa/config.h"

// Forward FLOPs per token of a sequence of length T (averaged over positions).
double asa_flops_forward_per_token(const asa_config *c, int T);
// Training (forward + backward) FLOPs per token: 3x forward.
double asa_flops_train_per_token(const asa_config *c, int T);

#endif
