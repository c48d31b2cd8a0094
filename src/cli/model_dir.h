// Loading a model for the commands that run one (generate, eval): a model directory (config.json,
// model.safetensors, tokenizer.json) or a run directory of `asa train` (its newest checkpoint).
#ifndef ASA_CLI_MODEL_DIR_H
#define ASA_CLI_MODEL_DIR_H

#include "asa/tokenizer.h"
#include "backend/backend.h"
#include "model/model.h"

// Config, weights and tokenizer of dir; the model (inference only) lives on be. ASA_ERR with a message
// naming the missing or bad file; nothing is left allocated then.
int cli_load_model_dir(const char *dir, asa_backend *be, asa_model *m, asa_tokenizer **tok);

#endif
