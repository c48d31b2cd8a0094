// Token shards (SPEC §7): the files `asa prepare` writes and training reads, and the loader that turns a
// list of shards into a deterministic, resumable stream of [B, T] training batches.
//
// File format, all integers little-endian:
//   offset  size  field
//        0     8  magic "ASATOKS\0"
//        8     4  u32 version = 1
//       12     4  u32 token width in bytes: 2 (u16 tokens) or 4 (u32 tokens)
//       16     8  u64 token count
//       24     4  u32 vocabulary size hint, 0 = unknown; when set every token is below it
//       28   228  zero padding up to 256 bytes
//      256        count tokens of the given width
// The file size is exactly 256 + count * width: anything else is a truncated or padded file and refused.
// Tokens fit in int32_t: a width-4 token of 2^31 or more is refused when read.
#ifndef ASA_DATA_SHARD_H
#define ASA_DATA_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "core/fileio.h"

#define ASA_SHARD_HEADER_BYTES 256
#define ASA_SHARD_VERSION 1

// 2 when every id of a vocabulary of this size fits in a u16 (vocab in 1..65536), else 4.
int asa_shard_width_for_vocab(uint32_t vocab);

// Writer: tokens stream into a temp file beside path; commit writes the final count into the header,
// fsyncs and renames it into place, so path holds either the previous file or a complete shard.
// After any failed call the writer is already aborted (temp file removed): later appends and the commit
// fail without replacing that first message, and asa_shard_writer_abort is always safe in an error path.
typedef struct {
    asa_afile f;
    int width;
    uint32_t vocab;
    uint64_t count;
    uint8_t *buf;  // staging for encoded tokens, flushed when full
    size_t buf_len;
} asa_shard_writer;

// width 2 or 4, or 0 for asa_shard_width_for_vocab(vocab); vocab 0 = unknown.
int asa_shard_writer_open(asa_shard_writer *w, const char *path, int width, uint32_t vocab);
// Refuses (and aborts) if an id is negative, does not fit the width, or is not below vocab when known.
int asa_shard_writer_append(asa_shard_writer *w, const int32_t *ids, size_t n);
int asa_shard_writer_commit(asa_shard_writer *w);
void asa_shard_writer_abort(asa_shard_writer *w);

// A validated, read-only view of one shard (memory-mapped). The writer replaces a shard by renaming a new
// file into place, so an open view keeps reading the old one; truncating a mapped shard in place is not
// supported.
typedef struct {
    char *path;
    const uint8_t *map;  // the whole file; tokens start at ASA_SHARD_HEADER_BYTES
    size_t map_len;
    int width;
    uint32_t vocab;
    uint64_t count;
} asa_shard;

// Checks the header and the file size before returning; every error names the file.
int asa_shard_open(const char *path, asa_shard *s);
// Tokens [offset, offset + n) into dst; refuses ranges past the end, ids >= the vocab hint and ids that
// do not fit in int32_t, naming the file and the token's position.
int asa_shard_read(const asa_shard *s, uint64_t offset, size_t n, int32_t *dst);
void asa_shard_close(asa_shard *s);

// Training loader over a list of shards taken as one stream.
// A window is T + 1 consecutive tokens of one shard starting at a multiple of T (windows never cross a
// shard boundary); consecutive windows of a shard share their boundary token, so every token after the
// first of a shard is a target exactly once per epoch. Each epoch visits the windows of all shards in an
// order shuffled by (seed, epoch); global batch g of an epoch is windows [g*B, g*B + B) of that order,
// and rank r of world w takes batches r, r + w, r + 2w, ... The last windows that do not fill a batch
// for every rank are skipped that epoch, so every rank makes the same number of steps per epoch
// (steps_per_epoch) and then wraps to the next, reshuffled epoch.
// The position is (epoch, index = steps taken in the epoch), the same on every rank: saving it with a
// checkpoint and restoring it continues the identical stream.
typedef struct {
    uint64_t epoch;
    uint64_t index;
} asa_loader_state;

typedef struct {
    int n_shards;
    asa_shard *shards;
    uint64_t *first_window;  // [n_shards + 1]: prefix sums of windows per shard
    uint64_t n_windows;
    int B, T, rank, world;
    uint64_t seed;
    uint64_t steps_per_epoch;
    uint32_t vocab;          // the shards' common vocab hint, 0 if none gives one
    asa_loader_state pos;
    uint64_t perm_key[4];    // round keys of this epoch's shuffle
    int32_t *window;         // [T + 1] scratch
} asa_loader;

int asa_loader_init(asa_loader *ld, const char *const *paths, int n_paths, int B, int T, uint64_t seed, int rank,
                    int world);
// Fills tokens and targets ([B, T] each, targets[b][t] = tokens[b][t + 1] of the window) and advances.
int asa_loader_next(asa_loader *ld, int32_t *tokens, int32_t *targets);
asa_loader_state asa_loader_get_state(const asa_loader *ld);
// Refuses an index past steps_per_epoch (a state from another data set or batch size, most likely).
int asa_loader_set_state(asa_loader *ld, asa_loader_state st);
void asa_loader_free(asa_loader *ld);

#endif
