// Data-parallel collectives over MPI (see dist.h); without ASA_HAVE_MPI a world of one.
#include "train/dist.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#ifdef ASA_HAVE_MPI
#include <mpi.h>
#endif

// The world size a launcher put in the environment: 1 when none did, 0 when one did without saying it.
static int env_world_size(void) {
    const char *keys[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = getenv(keys[i]);
        if (v && *v) return atoi(v);
    }
    return getenv("PMIX_RANK") ? 0 : 1;
}

int asa_dist_init(asa_dist *d) {
    memset(d, 0, sizeof *d);
    d->world = 1;
    int env_world = env_world_size();
#ifdef ASA_HAVE_MPI
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited && env_world == 1) return ASA_OK;
    if (!inited) {
        if (MPI_Init(NULL, NULL) != MPI_SUCCESS) return asa_err_set("MPI_Init failed");
        d->mpi = 1;
    }
    // Failures of the collectives below are bugs or dead peers: let MPI abort the job with its message.
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->world);
    return ASA_OK;
#else
    if (env_world > 1)
        return asa_err_set("started as one of %d ranks (mpirun), but this asa was built without MPI: install "
                           "libopenmpi-dev and rebuild (scripts/setup.sh)", env_world);
    return ASA_OK;
#endif
}

void asa_dist_finalize(asa_dist *d) {
#ifdef ASA_HAVE_MPI
    if (d->mpi) MPI_Finalize();
#endif
    d->mpi = 0;
}

#ifdef ASA_HAVE_MPI
// MPI counts are int: large buffers go in chunks.
#define CHUNK ((size_t)1 << 30)
#endif

void asa_dist_allreduce_mean(const asa_dist *d, float *buf, size_t n) {
    if (d->world <= 1) return;
#ifdef ASA_HAVE_MPI
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t c = n - i < CHUNK ? n - i : CHUNK;
        MPI_Allreduce(MPI_IN_PLACE, buf + i, (int)c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    float inv = 1.0f / (float)d->world;
    for (size_t i = 0; i < n; i++) buf[i] *= inv;
#endif
}

void asa_dist_allreduce_sum(const asa_dist *d, double *buf, size_t n) {
    if (d->world <= 1) return;
#ifdef ASA_HAVE_MPI
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#endif
}

int asa_dist_agree(const asa_dist *d, int rc) {
    if (d->world <= 1) return rc;
#ifdef ASA_HAVE_MPI
    int mine = rc != ASA_OK ? d->rank : d->world, first;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == d->world) return ASA_OK;
    char msg[2048];
    if (d->rank == first) {
        const char *m = asa_err_msg();
        snprintf(msg, sizeof msg, "%s", m ? m : "failed");
    }
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, first, MPI_COMM_WORLD);
    if (first == 0) return asa_err_set("%s", msg);
    return asa_err_set("rank %d: %s", first, msg);
#else
    return rc;
#endif
}
