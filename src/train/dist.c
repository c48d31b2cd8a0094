// Data-parallel collectives over MPI and NCCL, with a watchdog (see dist.h). Without ASA_HAVE_MPI and
// ASA_HAVE_NCCL a world of one.
#include "train/dist.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"

#ifdef ASA_HAVE_MPI
#include <mpi.h>
#endif
#ifdef ASA_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

struct asa_dist_impl {
    asa_backend *be;    // NULL before attach: buffers are host memory
    int staged;         // MPI on a device backend: buffers go through host memory
    float *host;        // staging buffer for that case
    size_t host_n;
    int use_mpi;
#ifdef ASA_HAVE_NCCL
    ncclComm_t comm;    // NULL unless the collectives go through NCCL
    void *dev_small;    // scratch for the small collectives (a message, a few doubles)
    float *dev_stage;   // gather_to_root on rank 0: one shard at a time
    size_t dev_stage_n;
#endif
    // Watchdog: the collective in flight and since when (monotonic seconds, 0 = none).
    pthread_t thread;
    int thread_on, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    double since;
    const char *what;
    int rank;
    double timeout_s;
};

#define SMALL_BYTES 4096
#define MSG_BYTES 2048

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// A failed collective means a dead peer or a broken interconnect: nothing can continue, and the last
// checkpoint is intact, so the process ends here with the reason.
static void die(const asa_dist *d, const char *what, const char *why) {
    fprintf(stderr, "asa: rank %d of %d: %s failed: %s; stopping (the last checkpoint is intact)\n", d->rank,
            d->world, what, why);
    fflush(stderr);
    _exit(1);
}

// ------------------------------------------------------------------------------------------ watchdog

static void *watchdog_main(void *arg) {
    asa_dist_impl *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&w->cv, &w->mu, &until);
        if (w->since > 0 && mono_now() - w->since > w->timeout_s) {
            fprintf(stderr, "asa: rank %d: %s has waited %.0f s for the other ranks (ASA_DIST_TIMEOUT=%g): a rank "
                    "died or hangs; stopping (the last checkpoint is intact)\n", w->rank, w->what,
                    mono_now() - w->since, w->timeout_s);
            fflush(stderr);
            _exit(1);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void wd_begin(const asa_dist *d, const char *what) {
    asa_dist_impl *w = d->impl;
    if (!w->thread_on) return;
    pthread_mutex_lock(&w->mu);
    w->since = mono_now();
    w->what = what;
    pthread_mutex_unlock(&w->mu);
}

static void wd_end(const asa_dist *d) {
    asa_dist_impl *w = d->impl;
    if (!w->thread_on) return;
    pthread_mutex_lock(&w->mu);
    w->since = 0;
    pthread_mutex_unlock(&w->mu);
}

// ------------------------------------------------------------------------------------------ launch

static int env_int(const char *key, int *v) {
    const char *s = getenv(key);
    if (!s || !*s) return 0;
    char *end;
    long x = strtol(s, &end, 10);
    if (*end || x < 0 || x > 1 << 20) return -1;
    *v = (int)x;
    return 1;
}

// Started by mpirun (or srun through PMI/PMIx): 1 when the environment says so.
static int mpi_launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

// RANK/WORLD_SIZE(/LOCAL_RANK) or SLURM_PROCID/SLURM_STEP_NUM_TASKS(/SLURM_LOCALID): 1 when found,
// 0 when absent, ASA_ERR for malformed values.
static int env_launch(asa_dist *d) {
    static const char *sets[][4] = {{"RANK", "WORLD_SIZE", "LOCAL_RANK", "RANK/WORLD_SIZE"},
                                    {"SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "SLURM"}};
    for (int i = 0; i < 2; i++) {
        int r = 0, w = 0, l = 0;
        int hr = env_int(sets[i][0], &r), hw = env_int(sets[i][1], &w), hl = env_int(sets[i][2], &l);
        if (!hr && !hw) continue;
        if (hr < 0 || hw < 0 || hl < 0 || hr == 0 || hw == 0 || w < 1 || r >= w)
            return asa_err_set("launch environment: %s=%s, %s=%s, %s=%s is not a rank below a world size", sets[i][0],
                               getenv(sets[i][0]) ? getenv(sets[i][0]) : "(unset)", sets[i][1],
                               getenv(sets[i][1]) ? getenv(sets[i][1]) : "(unset)", sets[i][2],
                               getenv(sets[i][2]) ? getenv(sets[i][2]) : "(unset)");
        d->rank = r;
        d->world = w;
        d->local_rank = hl ? l : 0;
        d->launcher = sets[i][3];
        return 1;
    }
    return 0;
}

static int impl_new(asa_dist *d) {
    asa_dist_impl *w = asa_calloc(1, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->rank = d->rank;
    w->timeout_s = d->timeout_s;
    d->impl = w;
    if (d->world > 1) {
        if (pthread_create(&w->thread, NULL, watchdog_main, w) != 0)
            return asa_err_set("cannot start the collective watchdog thread");
        w->thread_on = 1;
    }
    return ASA_OK;
}

int asa_dist_init(asa_dist *d) {
    memset(d, 0, sizeof *d);
    d->world = 1;
    d->launcher = "none";
    d->transport = "none";
    d->timeout_s = 600;
    const char *ts = getenv("ASA_DIST_TIMEOUT");
    if (ts && *ts) {
        char *end;
        d->timeout_s = strtod(ts, &end);
        if (*end || !(d->timeout_s >= 1 && d->timeout_s <= 1e6))
            return asa_err_set("ASA_DIST_TIMEOUT=%s: must be seconds between 1 and 1000000", ts);
    }
    const char *want = getenv("ASA_DIST_BACKEND");
    if (want && *want && strcmp(want, "nccl") && strcmp(want, "mpi"))
        return asa_err_set("ASA_DIST_BACKEND=%s: must be nccl or mpi", want);
    int force_nccl = want && !strcmp(want, "nccl");
#ifdef ASA_HAVE_MPI
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited || mpi_launched()) {
        if (!inited) {
            if (MPI_Init(NULL, NULL) != MPI_SUCCESS) return asa_err_set("MPI_Init failed");
            d->mpi = 1;
        }
        MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &d->world);
        MPI_Comm node;  // the ranks sharing this machine number its GPUs
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node);
        MPI_Comm_rank(node, &d->local_rank);
        MPI_Comm_free(&node);
        d->launcher = "mpirun";
        d->transport = d->world > 1 ? "MPI" : "none";
        if (d->world > 1 || force_nccl) {
            if (impl_new(d)) return ASA_ERR;
            d->impl->use_mpi = 1;
        }
        return ASA_OK;
    }
#else
    if (mpi_launched()) {
        const char *n = getenv("OMPI_COMM_WORLD_SIZE") ? getenv("OMPI_COMM_WORLD_SIZE") : getenv("PMI_SIZE");
        if (!n || atoi(n) != 1)
            return asa_err_set("started by mpirun%s%s, but this asa was built without MPI: install libopenmpi-dev "
                               "and rebuild (scripts/setup.sh)", n ? " as one of the ranks of " : "", n ? n : "");
    }
#endif
    int e = env_launch(d);
    if (e < 0) return ASA_ERR;
    if (e == 0) {
        d->rank = 0;
        d->world = 1;
    }
#ifndef ASA_HAVE_NCCL
    if (d->world > 1)
        return asa_err_set("launched as rank %d of %d by %s variables without mpirun: the ranks would talk through "
                           "NCCL, which this asa was built without; start the ranks with mpirun instead", d->rank,
                           d->world, d->launcher);
#endif
    if (d->world > 1 || force_nccl) return impl_new(d);
    return ASA_OK;
}

// ------------------------------------------------------------------------------------------ NCCL setup

#ifdef ASA_HAVE_NCCL
static void nccl_check(const asa_dist *d, ncclResult_t r, const char *what) {
    if (r != ncclSuccess) die(d, what, ncclGetErrorString(r));
}
static void cuda_check(const asa_dist *d, cudaError_t r, const char *what) {
    if (r != cudaSuccess) die(d, what, cudaGetErrorString(r));
}

// What must match between the rank that writes an id file and the ranks that read it, so that a file
// left by an earlier launch is not taken for this one's.
static void launch_token(char *buf, size_t cap) {
    const char *v;
    if ((v = getenv("ASA_DIST_RUN_ID")) || (v = getenv("TORCHELASTIC_RUN_ID"))) snprintf(buf, cap, "%s", v);
    else if (getenv("SLURM_JOB_ID"))
        snprintf(buf, cap, "slurm %s.%s", getenv("SLURM_JOB_ID"), getenv("SLURM_STEP_ID") ? getenv("SLURM_STEP_ID") : "");
    else if (getenv("MASTER_ADDR") && getenv("MASTER_PORT"))
        snprintf(buf, cap, "%s:%s", getenv("MASTER_ADDR"), getenv("MASTER_PORT"));
    else snprintf(buf, cap, "-");
}

// An environment launch: rank 0 writes the id (with the world size, a token of this launch and the time)
// to a file on a shared file system; the others wait for a file that matches.
static int nccl_id_exchange(asa_dist *d, const char *path, ncclUniqueId *id) {
    char token[256];
    launch_token(token, sizeof token);
    if (d->rank == 0) {
        nccl_check(d, ncclGetUniqueId(id), "ncclGetUniqueId");
        char text[sizeof(ncclUniqueId) * 2 + 512];
        int len = snprintf(text, sizeof text, "asa-nccl-id 1\nworld %d\ntime %lld\ntoken %s\nid ", d->world,
                           (long long)time(NULL), token);
        for (size_t i = 0; i < sizeof(ncclUniqueId); i++)
            len += snprintf(text + len, sizeof text - (size_t)len, "%02x", (unsigned char)id->internal[i]);
        len += snprintf(text + len, sizeof text - (size_t)len, "\n");
        if (asa_file_write_atomic(path, text, (size_t)len)) return asa_err_prefix("NCCL id file: ");
        return ASA_OK;
    }
    double t0 = mono_now();
    for (;;) {
        char *text = NULL;
        size_t len;
        struct stat st;
        if (stat(path, &st) == 0 && asa_file_read_all(path, 4096, &text, &len) == ASA_OK) {
            int world = 0;
            long long when = 0;
            char tok[256] = "", hex[sizeof(ncclUniqueId) * 2 + 1] = "";
            int ok = sscanf(text, "asa-nccl-id 1\nworld %d\ntime %lld\ntoken %255[^\n]\nid %256s", &world, &when, tok,
                            hex) == 4 && strlen(hex) == sizeof(ncclUniqueId) * 2;
            free(text);
            // Another launch's file: a different token or world size, or written long before this launch.
            if (ok && world == d->world && !strcmp(tok, token) && llabs((long long)time(NULL) - when) < 300) {
                for (size_t i = 0; i < sizeof(ncclUniqueId); i++) {
                    unsigned x;
                    sscanf(hex + 2 * i, "%2x", &x);
                    id->internal[i] = (char)x;
                }
                return ASA_OK;
            }
        } else {
            asa_err_clear();
        }
        if (mono_now() - t0 > d->timeout_s)
            return asa_err_set("rank %d waited %.0f s for rank 0 to write the NCCL id to %s (set ASA_DIST_ID_FILE to a "
                               "path every rank sees)", d->rank, d->timeout_s, path);
        usleep(100000);
    }
}

static int nccl_attach(asa_dist *d, const char *run_dir) {
    asa_dist_impl *w = d->impl;
    ncclUniqueId id;
    char *path = NULL;
    if (w->use_mpi) {
#ifdef ASA_HAVE_MPI
        if (d->rank == 0) nccl_check(d, ncclGetUniqueId(&id), "ncclGetUniqueId");
        MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
#endif
    } else {
        const char *p = getenv("ASA_DIST_ID_FILE");
        if (p && *p) path = strdup(p);
        else {
            size_t n = strlen(run_dir);
            while (n > 1 && run_dir[n - 1] == '/') n--;
            path = asa_malloc(n + 16);
            snprintf(path, n + 16, "%.*s.nccl-id", (int)n, run_dir);
        }
        if (nccl_id_exchange(d, path, &id)) {
            free(path);
            return ASA_ERR;
        }
    }
    wd_begin(d, "NCCL communicator setup");
    nccl_check(d, ncclCommInitRank(&w->comm, d->world, id, d->rank), "ncclCommInitRank");
    wd_end(d);
    cuda_check(d, cudaMalloc(&w->dev_small, SMALL_BYTES), "cudaMalloc");
    d->transport = "NCCL";
    if (path) {  // every rank has joined once this returns: the file can go
        double one = 1;
        asa_dist_allreduce_sum(d, &one, 1);
        if (d->rank == 0) unlink(path);
        free(path);
    }
    return ASA_OK;
}
#endif

int asa_dist_attach(asa_dist *d, asa_backend *be, const char *run_dir) {
    asa_dist_impl *w = d->impl;
    if (!w) return ASA_OK;
    const char *want = getenv("ASA_DIST_BACKEND");
    int cuda = !strcmp(be->name, "cuda"), cpu = !strcmp(be->name, "cpu");
    int nccl = 0;
#ifdef ASA_HAVE_NCCL
    nccl = cuda && !(want && !strcmp(want, "mpi"));
#endif
    if (want && !strcmp(want, "nccl") && !nccl)
        return asa_err_set("ASA_DIST_BACKEND=nccl: NCCL needs the CUDA backend (--device cuda) and a build with NCCL%s",
#ifdef ASA_HAVE_NCCL
                           ""
#else
                           " (this one has none)"
#endif
        );
    if (want && !strcmp(want, "mpi") && !w->use_mpi)
        return asa_err_set("ASA_DIST_BACKEND=mpi: this process was not started by mpirun");
    if (!nccl && !w->use_mpi)
        return asa_err_set("launched as rank %d of %d by %s variables without mpirun: the ranks talk through NCCL, "
                           "which needs the CUDA backend (--device cuda); on the %s backend start the ranks with mpirun",
                           d->rank, d->world, d->launcher, be->name);
    w->be = be;
    w->staged = !cpu && !nccl;
    if (!nccl) {
        d->transport = w->staged ? "MPI via host memory" : "MPI";
        return ASA_OK;
    }
#ifdef ASA_HAVE_NCCL
    return nccl_attach(d, run_dir);
#else
    (void)run_dir;
    (void)cuda;
    return ASA_OK;
#endif
}

void asa_dist_finalize(asa_dist *d) {
    asa_dist_impl *w = d->impl;
    if (w) {
        if (w->thread_on) {
            pthread_mutex_lock(&w->mu);
            w->stop = 1;
            pthread_cond_signal(&w->cv);
            pthread_mutex_unlock(&w->mu);
            pthread_join(w->thread, NULL);
        }
#ifdef ASA_HAVE_NCCL
        if (w->comm) ncclCommDestroy(w->comm);
        if (w->dev_small) cudaFree(w->dev_small);
        if (w->dev_stage) cudaFree(w->dev_stage);
#endif
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w->host);
        free(w);
        d->impl = NULL;
    }
#ifdef ASA_HAVE_MPI
    if (d->mpi) MPI_Finalize();
#endif
    d->mpi = 0;
}

// ------------------------------------------------------------------------------------------ collectives

void asa_dist_shard(const asa_dist *d, int r, size_t n, size_t *lo, size_t *count) {
    size_t w = (size_t)d->world, q = n / w, rem = n % w, rr = (size_t)r;
    *lo = rr * q + (rr < rem ? rr : rem);
    *count = q + (rr < rem);
}

static int active(const asa_dist *d) { return d->impl != NULL; }

#ifdef ASA_HAVE_NCCL
static int use_nccl(const asa_dist *d) { return d->impl->comm != NULL; }
static void nccl_sync(const asa_dist *d, const char *what) {
    cuda_check(d, cudaStreamSynchronize(0), what);
}
#else
static int use_nccl(const asa_dist *d) { (void)d; return 0; }
#endif

#ifdef ASA_HAVE_MPI
// MPI counts are int: large buffers go in chunks.
#define CHUNK ((size_t)1 << 30)

// Host memory holding buf's elements [lo, lo + n): buf itself on the CPU backend, else the staging buffer
// (filled from the device when `fill`).
static float *host_view(const asa_dist *d, float *buf, size_t total, size_t lo, size_t n, int fill) {
    asa_dist_impl *w = d->impl;
    if (!w->staged) return buf;
    if (w->host_n < total) {
        free(w->host);
        w->host = asa_malloc(sizeof(float) * total);
        w->host_n = total;
    }
    if (fill && n) w->be->to_host(w->be, w->host + lo, buf + lo, sizeof(float) * n);
    return w->host;
}

static void host_writeback(const asa_dist *d, float *buf, size_t lo, size_t n) {
    asa_dist_impl *w = d->impl;
    if (w->staged && n) w->be->to_device(w->be, buf + lo, w->host + lo, sizeof(float) * n);
}
#endif

static void scale(const asa_dist *d, float *buf, size_t n) {
    if (d->world == 1 || n == 0) return;
    asa_dist_impl *w = d->impl;
    float inv = 1.0f / (float)d->world;
    if (w->be && !w->staged) w->be->scale(w->be, buf, n, inv);
    else
        for (size_t i = 0; i < n; i++) buf[i] *= inv;
}

void asa_dist_allreduce_mean(const asa_dist *d, float *buf, size_t n) {
    if (!active(d)) return;
    wd_begin(d, "gradient all-reduce");
    if (use_nccl(d)) {
#ifdef ASA_HAVE_NCCL
        nccl_check(d, ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, d->impl->comm, 0), "ncclAllReduce");
        scale(d, buf, n);
        nccl_sync(d, "gradient all-reduce");
#endif
    } else {
#ifdef ASA_HAVE_MPI
        float *h = host_view(d, buf, n, 0, n, 1);
        for (size_t i = 0; i < n; i += CHUNK) {
            size_t c = n - i < CHUNK ? n - i : CHUNK;
            if (MPI_Allreduce(MPI_IN_PLACE, h + i, (int)c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
                die(d, "gradient all-reduce", "MPI_Allreduce");
        }
        scale(d, h, n);  // on the host copy: the division happens once, wherever the data is
        host_writeback(d, buf, 0, n);
#endif
    }
    wd_end(d);
}

// One collective per shard owner r on r's shard of buf (backend memory for NCCL, host memory for MPI):
// a sum onto r (reduce), or a copy from r to all (broadcast). Shards differ in size by one element, which
// ncclReduceScatter / ncclAllGather (equal counts) cannot express without padding the arena; grouped,
// NCCL runs the per-owner calls together.
static void per_owner(const asa_dist *d, float *buf, size_t n, int reduce) {
    const char *what = reduce ? "gradient reduce-scatter" : "parameter all-gather";
    (void)what;  // a build with neither NCCL nor MPI has no collectives to name
    if (use_nccl(d)) {
#ifdef ASA_HAVE_NCCL
        ncclComm_t comm = d->impl->comm;
        nccl_check(d, ncclGroupStart(), "ncclGroupStart");
        for (int r = 0; r < d->world; r++) {
            size_t l, c;
            asa_dist_shard(d, r, n, &l, &c);
            nccl_check(d, reduce ? ncclReduce(buf + l, buf + l, c, ncclFloat, ncclSum, r, comm, 0)
                                 : ncclBroadcast(buf + l, buf + l, c, ncclFloat, r, comm, 0),
                       what);
        }
        nccl_check(d, ncclGroupEnd(), "ncclGroupEnd");
#endif
        return;
    }
#ifdef ASA_HAVE_MPI
    for (int r = 0; r < d->world; r++) {
        size_t l, c;
        asa_dist_shard(d, r, n, &l, &c);
        for (size_t i = 0; i < c; i += CHUNK) {
            int k = (int)(c - i < CHUNK ? c - i : CHUNK);
            float *p = buf + l + i;
            int rc = reduce ? MPI_Reduce(r == d->rank ? MPI_IN_PLACE : p, p, k, MPI_FLOAT, MPI_SUM, r, MPI_COMM_WORLD)
                            : MPI_Bcast(p, k, MPI_FLOAT, r, MPI_COMM_WORLD);
            if (rc != MPI_SUCCESS) die(d, what, reduce ? "MPI_Reduce" : "MPI_Bcast");
        }
    }
#endif
}

void asa_dist_reduce_scatter_mean(const asa_dist *d, float *buf, size_t n) {
    if (!active(d)) return;
    size_t lo, cnt;
    asa_dist_shard(d, d->rank, n, &lo, &cnt);
    wd_begin(d, "gradient reduce-scatter");
    if (use_nccl(d)) {
        per_owner(d, buf, n, 1);
        scale(d, buf + lo, cnt);
#ifdef ASA_HAVE_NCCL
        nccl_sync(d, "gradient reduce-scatter");
#endif
    } else {
#ifdef ASA_HAVE_MPI
        float *h = host_view(d, buf, n, 0, n, 1);
        per_owner(d, h, n, 1);
        scale(d, h + lo, cnt);
        host_writeback(d, buf, lo, cnt);
#endif
    }
    wd_end(d);
}

void asa_dist_allgather(const asa_dist *d, float *buf, size_t n) {
    if (!active(d)) return;
    size_t lo, cnt;
    asa_dist_shard(d, d->rank, n, &lo, &cnt);
    wd_begin(d, "parameter all-gather");
    if (use_nccl(d)) {
        per_owner(d, buf, n, 0);
#ifdef ASA_HAVE_NCCL
        nccl_sync(d, "parameter all-gather");
#endif
    } else {
#ifdef ASA_HAVE_MPI
        float *h = host_view(d, buf, n, lo, cnt, 1);
        per_owner(d, h, n, 0);
        host_writeback(d, buf, 0, n);
#endif
    }
    wd_end(d);
}

void asa_dist_gather_to_root(const asa_dist *d, float *full, const float *shard, size_t n) {
    ASA_CHECK(active(d) && d->impl->be);  // only a sharded optimizer gathers, and sharding needs attach
    size_t lo, cnt;
    asa_dist_impl *w = d->impl;
    asa_dist_shard(d, d->rank, n, &lo, &cnt);
    if (d->rank == 0 && cnt) w->be->to_host(w->be, full + lo, shard, sizeof(float) * cnt);
    if (d->world == 1) return;
    wd_begin(d, "optimizer-state gather");
    if (use_nccl(d)) {
#ifdef ASA_HAVE_NCCL
        if (d->rank == 0 && w->dev_stage_n < cnt + 1) {
            if (w->dev_stage) cudaFree(w->dev_stage);
            cuda_check(d, cudaMalloc((void **)&w->dev_stage, sizeof(float) * (cnt + 1)), "cudaMalloc");
            w->dev_stage_n = cnt + 1;  // shard 0 is the largest: every other fits
        }
        for (int r = 1; r < d->world; r++) {
            size_t l, c;
            asa_dist_shard(d, r, n, &l, &c);
            if (d->rank != r && d->rank != 0) continue;
            nccl_check(d, ncclGroupStart(), "ncclGroupStart");
            if (d->rank == r) nccl_check(d, ncclSend(shard, c, ncclFloat, 0, w->comm, 0), "ncclSend");
            if (d->rank == 0) nccl_check(d, ncclRecv(w->dev_stage, c, ncclFloat, r, w->comm, 0), "ncclRecv");
            nccl_check(d, ncclGroupEnd(), "ncclGroupEnd");
            nccl_sync(d, "optimizer-state gather");
            if (d->rank == 0) w->be->to_host(w->be, full + l, w->dev_stage, sizeof(float) * c);
        }
#endif
    } else {
#ifdef ASA_HAVE_MPI
        const float *h = shard;
        if (w->staged && d->rank != 0) {
            float *s = host_view(d, (float *)shard, n, 0, 0, 0);
            w->be->to_host(w->be, s, shard, sizeof(float) * cnt);
            h = s;
        }
        for (int r = 1; r < d->world; r++) {
            size_t l, c;
            asa_dist_shard(d, r, n, &l, &c);
            for (size_t i = 0; i < c; i += CHUNK) {
                size_t k = c - i < CHUNK ? c - i : CHUNK;
                int rc = MPI_SUCCESS;
                if (d->rank == r) rc = MPI_Send(h + i, (int)k, MPI_FLOAT, 0, 7, MPI_COMM_WORLD);
                else if (d->rank == 0) rc = MPI_Recv(full + l + i, (int)k, MPI_FLOAT, r, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                if (rc != MPI_SUCCESS) die(d, "optimizer-state gather", "MPI_Send/MPI_Recv");
            }
        }
#endif
    }
    wd_end(d);
}

void asa_dist_allreduce_sum(const asa_dist *d, double *buf, size_t n) {
    if (!active(d)) return;
    wd_begin(d, "all-reduce of the step's loss and flags");
    if (use_nccl(d)) {
#ifdef ASA_HAVE_NCCL
        ASA_CHECK(n * sizeof(double) <= SMALL_BYTES);
        void *s = d->impl->dev_small;
        cuda_check(d, cudaMemcpy(s, buf, n * sizeof(double), cudaMemcpyHostToDevice), "cudaMemcpy");
        nccl_check(d, ncclAllReduce(s, s, n, ncclDouble, ncclSum, d->impl->comm, 0), "ncclAllReduce");
        cuda_check(d, cudaMemcpy(buf, s, n * sizeof(double), cudaMemcpyDeviceToHost), "cudaMemcpy");
#endif
    } else {
#ifdef ASA_HAVE_MPI
        if (MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            die(d, "all-reduce", "MPI_Allreduce");
#endif
    }
    wd_end(d);
}

int asa_dist_max(const asa_dist *d, int v) {
    if (!active(d) || d->world == 1) return v;
    int out = v;
    wd_begin(d, "all-reduce (max)");
    if (use_nccl(d)) {
#ifdef ASA_HAVE_NCCL
        void *s = d->impl->dev_small;
        cuda_check(d, cudaMemcpy(s, &v, sizeof v, cudaMemcpyHostToDevice), "cudaMemcpy");
        nccl_check(d, ncclAllReduce(s, s, 1, ncclInt32, ncclMax, d->impl->comm, 0), "ncclAllReduce");
        cuda_check(d, cudaMemcpy(&out, s, sizeof out, cudaMemcpyDeviceToHost), "cudaMemcpy");
#endif
    } else {
#ifdef ASA_HAVE_MPI
        if (MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
            die(d, "all-reduce (max)", "MPI_Allreduce");
#endif
    }
    wd_end(d);
    return out;
}

int asa_dist_agree(const asa_dist *d, int rc) {
    if (!active(d) || d->world == 1) return rc;
    int mine = rc != ASA_OK ? d->rank : d->world, first = d->world;
    (void)mine;  // as in per_owner
    char msg[MSG_BYTES];
    memset(msg, 0, sizeof msg);
    wd_begin(d, "agreement on errors");
    if (use_nccl(d)) {
#ifdef ASA_HAVE_NCCL
        void *s = d->impl->dev_small;
        cuda_check(d, cudaMemcpy(s, &mine, sizeof mine, cudaMemcpyHostToDevice), "cudaMemcpy");
        nccl_check(d, ncclAllReduce(s, s, 1, ncclInt32, ncclMin, d->impl->comm, 0), "ncclAllReduce");
        cuda_check(d, cudaMemcpy(&first, s, sizeof first, cudaMemcpyDeviceToHost), "cudaMemcpy");
#endif
    } else {
#ifdef ASA_HAVE_MPI
        if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS)
            die(d, "agreement on errors", "MPI_Allreduce");
#endif
    }
    if (first < d->world) {
        if (d->rank == first) {
            const char *m = asa_err_msg();
            snprintf(msg, sizeof msg, "%s", m ? m : "failed");
        }
        if (use_nccl(d)) {
#ifdef ASA_HAVE_NCCL
            void *s = d->impl->dev_small;
            cuda_check(d, cudaMemcpy(s, msg, sizeof msg, cudaMemcpyHostToDevice), "cudaMemcpy");
            nccl_check(d, ncclBroadcast(s, s, sizeof msg, ncclChar, first, d->impl->comm, 0), "ncclBroadcast");
            cuda_check(d, cudaMemcpy(msg, s, sizeof msg, cudaMemcpyDeviceToHost), "cudaMemcpy");
#endif
        } else {
#ifdef ASA_HAVE_MPI
            MPI_Bcast(msg, sizeof msg, MPI_CHAR, first, MPI_COMM_WORLD);
#endif
        }
    }
    wd_end(d);
    if (first == d->world) return ASA_OK;
    msg[sizeof msg - 1] = 0;
    if (first == 0) return asa_err_set("%s", msg);
    return asa_err_set("rank %d: %s", first, msg);
}
