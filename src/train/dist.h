// Data-parallel training across processes: which rank this process is, and the few collectives the
// trainer needs (average of a float buffer, broadcast, agreement on an error). Backed by MPI when the
// library was built with it (ASA_HAVE_MPI) and the process was started by mpirun; otherwise, and with
// one rank, every call is a no-op on a world of size 1.
#ifndef ASA_TRAIN_DIST_H
#define ASA_TRAIN_DIST_H

#include <stddef.h>

typedef struct {
    int rank, world;
    int mpi;  // this process called MPI_Init (and so must call MPI_Finalize)
} asa_dist;

// Initialises MPI when the environment says a launcher started us (OMPI_COMM_WORLD_SIZE, PMI_SIZE or
// PMIX_RANK) or MPI is already initialised; else a world of one. Refuses a launch with several ranks
// by a binary built without MPI, rather than have N processes each train the whole run.
int asa_dist_init(asa_dist *d);
void asa_dist_finalize(asa_dist *d);

// In place: buf becomes the mean over ranks of buf (every rank gets the same bits).
void asa_dist_allreduce_mean(const asa_dist *d, float *buf, size_t n);
// In place: buf becomes the sum over ranks.
void asa_dist_allreduce_sum(const asa_dist *d, double *buf, size_t n);

// Collective: returns ASA_ERR on every rank when rc is ASA_ERR on any. The error message of the lowest
// failing rank becomes every rank's message (prefixed with its rank when that is not 0), so that rank 0
// can report what went wrong anywhere.
int asa_dist_agree(const asa_dist *d, int rc);

#endif
