// The training run (SPEC §7, §9): options, the run directory (config.json, log.jsonl, loss.svg,
// checkpoints/), atomic checkpoints with exact resume, and the loop itself (gradient accumulation to a
// token batch, warmup + cosine/WSD schedule, clipping, periodic validation, clean stop on SIGINT/SIGTERM,
// a NaN/Inf loss or gradient reported with the tensor it started in, then a stop or a skipped step,
// data-parallel ranks with optional ZeRO-1 sharding of the AdamW moments).
//
// Run directory layout:
//   config.json, tokenizer.json (when the data directory has one), log.jsonl, loss.svg,
//   checkpoints/step-NNNNNNN/{model.safetensors, optimizer.safetensors, trainer_state.json, config.json,
//                             tokenizer.json}
//   checkpoints/latest  one line naming the newest complete checkpoint directory ("step-0000100")
#ifndef ASA_TRAIN_TRAINER_H
#define ASA_TRAIN_TRAINER_H

#include <stdint.h>

#include "core/rng.h"
#include "data/shard.h"
#include "model/model.h"
#include "train/dist.h"
#include "train/optimizer.h"

// Called every sample_every steps (when set) with the model after that step's update, so that the CLI
// can print a generated sample. Must not change the parameters.
typedef void (*asa_train_sample_fn)(void *user, asa_model *model, int step);

// Options. Numeric fields left at ASA_TRAIN_UNSET (ints) or NaN (floats, asa_train_options_init sets
// them so) take the run's saved value on --resume and the documented default on a new run. On resume,
// a set value that differs from the run's is refused, except for the ones marked "may change".
#define ASA_TRAIN_UNSET (-1)
enum { ASA_ON_NAN_STOP, ASA_ON_NAN_SKIP };
// Consecutive skipped steps after which --on-nan skip gives up: the run has diverged, not hit one bad batch.
#define ASA_MAX_SKIPPED_STEPS 10
typedef struct {
    const char *config_path;  // model config; optional with resume (then the run's config.json)
    const char *run_dir;      // required (the CLI defaults it to runs/<config name>)
    const char *data_dir;     // DIR with train-*.shard, val-*.shard and maybe tokenizer.json; or NULL
    const char *synthetic;    // "copy" for the built-in task; exactly one of data_dir / synthetic
    int alphabet;             // copy task symbols (default 32)
    int steps;                // total optimizer steps of the run (default 300; may change on resume)
    int batch, seq;           // micro-batch sequences B (8) and tokens per sequence T (256)
    int batch_tokens;         // tokens per optimizer step; a multiple of B*T (default B*T)
    float lr;                 // peak learning rate (3e-4 on data, SPEC §9; 3e-3 on the copy task)
    float min_lr_ratio;       // decay floor as a fraction of lr (0.1)
    int warmup;               // linear warmup steps (default 5% of steps)
    int schedule;             // asa_sched_kind (cosine)
    float decay_frac;         // WSD: fraction of the steps spent decaying (0.2)
    float weight_decay;       // on 2-D weights (0.01)
    float clip;               // global gradient-norm clip, 0 = off (1.0)
    int seed;                 // weights, data order, synthetic data (1)
    int log_every;            // progress line and loss.svg refresh (10; may change)
    int val_every;            // validation every N steps, 0 = only at the end (100; may change)
    int val_batches;          // micro-batches per validation (10; may change)
    int ckpt_every;           // checkpoint every N steps, 0 = only at the end (500; may change)
    int keep;                 // checkpoints kept (3; may change)
    int resume;               // continue run_dir from checkpoints/latest
    int exit_after;           // stop after this many steps of this invocation, with a checkpoint (0 = off)
    int sample_every;         // call `sample` every N steps (0 = never; may change)
    asa_train_sample_fn sample;
    void *sample_user;
    int zero;                 // ZeRO-1, AdamW moments sharded across ranks: 1, 0, or ASA_TRAIN_UNSET for on
                              // with more than one rank (not saved: may change on resume)
    int on_nan;               // a NaN/Inf loss or gradient: ASA_ON_NAN_STOP (default) or ASA_ON_NAN_SKIP the
                              // step; not saved
    int quiet;                // no progress output (tests)
    int recompute;            // activation recomputation (asa_model.recompute): less memory, about a quarter
                              // more compute, the same results; not saved (may change on resume)
    asa_backend *backend;     // where the model lives (required; not owned: the caller frees it after the run)
    const asa_dist *dist;     // data-parallel ranks (asa_dist_init); NULL = this process alone
} asa_train_options;

void asa_train_options_init(asa_train_options *o);

// Everything a checkpoint holds besides weights and AdamW moments (trainer_state.json).
typedef struct {
    int step;                      // optimizer steps done
    uint64_t tokens_seen;
    float last_loss;
    double elapsed_s;              // training time over all invocations
    asa_loader_state train_pos;    // shard stream position (data runs), counted in global micro-batches
                                   // so that a run can resume on another number of ranks
    asa_rng train_rng;             // key of the synthetic data stream (synthetic runs): micro-batch i of
                                   // the run is asa_synthetic_copy_at(key, i * B)
    asa_train_options opts;        // resolved numeric options of the run; its string fields are NULL
    char data_dir[4096];           // absolute path of the data directory, "" for synthetic data
    char synthetic[32];            // synthetic task name, "" for shard data
} asa_train_state;

// Writes RUN/checkpoints/step-NNNNNNN for st->step: under a temporary name, fsynced, renamed into place,
// then checkpoints/latest is replaced; older checkpoints beyond `keep` are removed afterwards.
// moments: NULL to save opt's moments, or {m, v} in host memory (layout.total floats each) for a sharded
// optimizer whose moments were gathered from the ranks.
// Sets *written to the checkpoint directory path (caller frees) when not NULL.
int asa_checkpoint_save(const char *run_dir, const asa_model *m, const asa_adamw *opt, const float *const *moments,
                        const asa_train_state *st, int keep, char **written);
// Reads checkpoint directory `dir` into the model (whose config must equal the checkpoint's config.json),
// the optimizer (its shard of the moments, when sharded) and st. Everything is read and checked before m and opt are touched: on error they are
// unchanged and the message names the offending file.
int asa_checkpoint_load(const char *dir, asa_model *m, asa_adamw *opt, asa_train_state *st);
// The directory checkpoints/latest names (caller frees), or an error when there is none.
int asa_checkpoint_latest(const char *run_dir, char **dir);

// Compares two configs key by key in their saved form (through temp files in $TMPDIR or /tmp); returns
// the number of differing keys and writes "key (a vs b), ..." into buf, or ASA_ERR if a temp file fails.
int asa_config_diff(const asa_config *a, const asa_config *b, char *buf, size_t cap);

// Runs (or resumes) the training run. ASA_OK when the run finished or stopped cleanly (signal,
// exit_after); ASA_ERR with a message for bad input and for a NaN/Inf loss or gradient norm.
int asa_train_run(const asa_train_options *opts);

#endif
