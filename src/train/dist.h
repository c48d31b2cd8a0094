// Data-parallel training across processes: which rank this process is, and the collectives the trainer
// needs. Two ways in:
//   - mpirun (or srun with PMI): MPI carries everything on the CPU backend; on the CUDA backend
//     gradients and parameters go through NCCL when the build has it (its id broadcast over MPI), else
//     through host memory and MPI.
//   - a launcher that only sets environment variables (RANK/WORLD_SIZE/LOCAL_RANK as torchrun does, or
//     SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID): NCCL on the CUDA backend, its id passed through a file on a
//     shared file system (ASA_DIST_ID_FILE, default RUN_DIR.nccl-id next to the run directory).
// With one rank every call is a no-op, unless ASA_DIST_BACKEND=nccl asks for a one-rank NCCL
// communicator (to test that path on one GPU).
//
// Every collective runs under a watchdog: one that waits longer than the timeout (a peer died or hangs)
// ends the process with a message naming the collective and the rank, so that no rank waits forever.
#ifndef ASA_TRAIN_DIST_H
#define ASA_TRAIN_DIST_H

#include <stddef.h>

#include "backend/backend.h"

typedef struct asa_dist_impl asa_dist_impl;

typedef struct {
    int rank, world;
    int local_rank;        // rank among the processes of this machine (picks the GPU)
    int mpi;               // this process called MPI_Init (and so must call MPI_Finalize)
    const char *launcher;  // "mpirun", "RANK/WORLD_SIZE", "SLURM" or "none"
    const char *transport; // what gradients travel over: "none", "MPI", "MPI via host memory", "NCCL"
    double timeout_s;      // watchdog limit for one collective (ASA_DIST_TIMEOUT, default 600 s)
    asa_dist_impl *impl;   // communicators, scratch buffers and the watchdog
} asa_dist;

// Finds the ranks from the environment (see above); MPI is initialised here when mpirun started us.
// Refuses a launch with several ranks that this build cannot serve (no MPI, or an environment launch
// without NCCL) rather than have N processes each train the whole run.
int asa_dist_init(asa_dist *d);
// Binds the collectives to the backend whose memory holds gradients and parameters; sets up NCCL on a
// CUDA backend (collective). id_file: where an environment launch exchanges the NCCL id (NULL: the
// default next to run_dir). Call once, after asa_dist_init, on every rank.
int asa_dist_attach(asa_dist *d, asa_backend *be, const char *run_dir);
void asa_dist_finalize(asa_dist *d);

// The part [*lo, *lo + *n) of an n-element arena that rank r owns under ZeRO-1 (contiguous, sizes
// differing by at most one).
void asa_dist_shard(const asa_dist *d, int r, size_t n, size_t *lo, size_t *count);

// Collectives on buffers in the attached backend's memory (host memory before attach):
// buf becomes the mean over ranks of buf (every rank gets the same bits).
void asa_dist_allreduce_mean(const asa_dist *d, float *buf, size_t n);
// Rank r's shard of buf (asa_dist_shard) becomes the mean over ranks of that shard; the rest of buf is
// left unspecified.
void asa_dist_reduce_scatter_mean(const asa_dist *d, float *buf, size_t n);
// Every rank's shard of buf is copied to all ranks (the inverse of the above).
void asa_dist_allgather(const asa_dist *d, float *buf, size_t n);
// Rank 0's host buffer `full` (n floats) receives every rank's shard; `shard` is this rank's shard in
// backend memory. Other ranks pass full = NULL.
void asa_dist_gather_to_root(const asa_dist *d, float *full, const float *shard, size_t n);

// Small host-memory collectives. In place: buf becomes the sum over ranks.
void asa_dist_allreduce_sum(const asa_dist *d, double *buf, size_t n);
// The largest of the ranks' values of v.
int asa_dist_max(const asa_dist *d, int v);
// Returns ASA_ERR on every rank when rc is ASA_ERR on any. The error message of the lowest failing rank
// becomes every rank's message (prefixed with its rank when that is not 0), so that rank 0 can report
// what went wrong anywhere.
int asa_dist_agree(const asa_dist *d, int rc);

#endif
