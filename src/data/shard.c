// Token shards: writer, validating memory-mapped reader, and the shuffled, resumable training loader
// (format and stream order in shard.h).
#include "data/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/rng.h"

static const char SHARD_MAGIC[8] = {'A', 'S', 'A', 'T', 'O', 'K', 'S', 0};

#define WRITER_BUF_BYTES ((size_t)1 << 18)

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

int asa_shard_width_for_vocab(uint32_t vocab) {
    return vocab >= 1 && vocab <= 65536 ? 2 : 4;
}

static void header_encode(uint8_t *h, int width, uint64_t count, uint32_t vocab) {
    memset(h, 0, ASA_SHARD_HEADER_BYTES);
    memcpy(h, SHARD_MAGIC, 8);
    put_u32(h + 8, ASA_SHARD_VERSION);
    put_u32(h + 12, (uint32_t)width);
    put_u64(h + 16, count);
    put_u32(h + 24, vocab);
}

// ---------------------------------------------------------------------------------------------------
// Writer

int asa_shard_writer_open(asa_shard_writer *w, const char *path, int width, uint32_t vocab) {
    memset(w, 0, sizeof *w);
    w->f.fd = -1;
    if (width == 0) width = asa_shard_width_for_vocab(vocab);
    if (width != 2 && width != 4) return asa_err_set("%s: token width %d: must be 2 or 4 bytes", path, width);
    if (width == 2 && vocab > 65536)
        return asa_err_set("%s: token width 2 cannot hold a vocabulary of %u ids (at most 65536)", path, vocab);
    if (asa_afile_open(&w->f, path)) return ASA_ERR;
    w->width = width;
    w->vocab = vocab;
    w->buf = asa_malloc(WRITER_BUF_BYTES);
    // A placeholder header with count 0; commit rewrites it with the final count.
    uint8_t h[ASA_SHARD_HEADER_BYTES];
    header_encode(h, width, 0, vocab);
    if (asa_afile_write(&w->f, h, sizeof h)) {
        asa_shard_writer_abort(w);
        return ASA_ERR;
    }
    return ASA_OK;
}

static int writer_flush(asa_shard_writer *w) {
    int rc = asa_afile_write(&w->f, w->buf, w->buf_len);
    w->buf_len = 0;
    if (rc) asa_shard_writer_abort(w);
    return rc;
}

int asa_shard_writer_append(asa_shard_writer *w, const int32_t *ids, size_t n) {
    if (w->f.fd < 0) return ASA_ERR;  // already failed (or finished): keep the first message
    int64_t limit = w->width == 2 ? 65536 : (int64_t)1 << 32;
    if (w->vocab > 0 && w->vocab < limit) limit = w->vocab;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= limit) {
            if (ids[i] >= 0 && w->vocab > 0 && ids[i] >= (int64_t)w->vocab)
                asa_err_set("%s: token %llu: id %d is not below the vocabulary size %u", w->f.path,
                            (unsigned long long)(w->count + i), ids[i], w->vocab);
            else
                asa_err_set("%s: token %llu: id %d does not fit in a %d-byte token", w->f.path,
                            (unsigned long long)(w->count + i), ids[i], w->width);
            asa_shard_writer_abort(w);
            return ASA_ERR;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (w->buf_len + (size_t)w->width > WRITER_BUF_BYTES && writer_flush(w)) return ASA_ERR;
        uint8_t *p = w->buf + w->buf_len;
        uint32_t v = (uint32_t)ids[i];
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
        if (w->width == 4) {
            p[2] = (uint8_t)(v >> 16);
            p[3] = (uint8_t)(v >> 24);
        }
        w->buf_len += (size_t)w->width;
    }
    w->count += n;
    return ASA_OK;
}

int asa_shard_writer_commit(asa_shard_writer *w) {
    if (w->f.fd < 0) return ASA_ERR;
    if (w->buf_len > 0 && writer_flush(w)) return ASA_ERR;
    uint8_t h[ASA_SHARD_HEADER_BYTES];
    header_encode(h, w->width, w->count, w->vocab);
    // asa_afile writes sequentially; the header is patched in place before its commit fsyncs the file.
    ssize_t r = pwrite(w->f.fd, h, sizeof h, 0);
    if (r != (ssize_t)sizeof h) {
        int e = r < 0 ? errno : ENOSPC;
        asa_err_set("%s: writing the shard header failed: %s", w->f.path, strerror(e));
        asa_shard_writer_abort(w);
        return ASA_ERR;
    }
    int rc = asa_afile_commit(&w->f);
    free(w->buf);
    w->buf = NULL;
    return rc;
}

void asa_shard_writer_abort(asa_shard_writer *w) {
    asa_afile_abort(&w->f);
    free(w->buf);
    w->buf = NULL;
    w->buf_len = 0;
}

// ---------------------------------------------------------------------------------------------------
// Reader

static char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = asa_malloc(n);
    memcpy(d, s, n);
    return d;
}

int asa_shard_open(const char *path, asa_shard *s) {
    memset(s, 0, sizeof *s);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return asa_err_set("%s: cannot open token shard: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return asa_err_set("%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return asa_err_set("%s: not a regular file, expected a token shard", path);
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < ASA_SHARD_HEADER_BYTES) {
        close(fd);
        return asa_err_set("%s: not an asa token shard: %llu bytes, shorter than the %d-byte header", path,
                           (unsigned long long)size, ASA_SHARD_HEADER_BYTES);
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);  // the mapping keeps the file
    if (map == MAP_FAILED) return asa_err_set("%s: cannot map token shard: %s", path, strerror(map_errno));
    const uint8_t *h = map;
    int rc = ASA_OK;
    uint32_t version = get_u32(h + 8), width = get_u32(h + 12);
    uint64_t count = get_u64(h + 16);
    if (memcmp(h, SHARD_MAGIC, 8) != 0) rc = asa_err_set("%s: not an asa token shard (bad magic)", path);
    else if (version != ASA_SHARD_VERSION)
        rc = asa_err_set("%s: token shard version %u is not supported (this build reads version %d)", path, version,
                         ASA_SHARD_VERSION);
    else if (width != 2 && width != 4)
        rc = asa_err_set("%s: token shard header: token width %u, must be 2 or 4 bytes", path, width);
    else {
        // Compared in bytes without overflow: the header's count may be anything.
        uint64_t body = size - ASA_SHARD_HEADER_BYTES;
        if (count > body / width) {
            if (count > (UINT64_MAX - ASA_SHARD_HEADER_BYTES) / width)
                rc = asa_err_set("%s: truncated token shard: the header says %llu tokens, far more than the file's "
                                 "%llu bytes hold", path, (unsigned long long)count, (unsigned long long)size);
            else
                rc = asa_err_set("%s: truncated token shard: the header says %llu tokens of %u bytes (%llu bytes "
                                 "with the header) but the file has %llu bytes, %llu bytes short",
                                 path, (unsigned long long)count, width,
                                 (unsigned long long)(ASA_SHARD_HEADER_BYTES + count * width),
                                 (unsigned long long)size,
                                 (unsigned long long)(ASA_SHARD_HEADER_BYTES + count * width - size));
        } else if (count * width < body)
            rc = asa_err_set("%s: token shard has %llu trailing bytes after its %llu tokens of %u bytes", path,
                             (unsigned long long)(body - count * width), (unsigned long long)count, width);
    }
    if (rc) {
        munmap(map, (size_t)size);
        return rc;
    }
    s->path = str_dup(path);
    s->map = map;
    s->map_len = (size_t)size;
    s->width = (int)width;
    s->vocab = get_u32(h + 24);
    s->count = count;
    return ASA_OK;
}

int asa_shard_read(const asa_shard *s, uint64_t offset, size_t n, int32_t *dst) {
    if (offset > s->count || n > s->count - offset)
        return asa_err_set("%s: read of tokens [%llu, %llu) past the end of the shard (%llu tokens)", s->path,
                           (unsigned long long)offset, (unsigned long long)offset + n,
                           (unsigned long long)s->count);
    uint64_t limit = s->vocab > 0 ? s->vocab : (uint64_t)INT32_MAX + 1;
    const uint8_t *p = s->map + ASA_SHARD_HEADER_BYTES + offset * (uint64_t)s->width;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = s->width == 2 ? (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8 : get_u32(p + 4 * i);
        if (v >= limit) {
            if (s->vocab > 0 && v >= s->vocab)
                return asa_err_set("%s: token %llu: id %u is not below the vocabulary size %u of the header",
                                   s->path, (unsigned long long)(offset + i), v, s->vocab);
            return asa_err_set("%s: token %llu: id %u does not fit in a signed 32-bit id", s->path,
                               (unsigned long long)(offset + i), v);
        }
        dst[i] = (int32_t)v;
    }
    return ASA_OK;
}

void asa_shard_close(asa_shard *s) {
    if (s->map) munmap((void *)s->map, s->map_len);
    free(s->path);
    memset(s, 0, sizeof *s);
}

// ---------------------------------------------------------------------------------------------------
// Loader

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// The epoch's shuffle as a keyed bijection of [0, n) instead of a stored permutation, so that memory and
// restore cost do not grow with the data: a 4-round Feistel network over the smallest even-bit-width
// domain that holds n, cycle-walking until the value falls in [0, n) (fewer than 4 steps expected).
static uint64_t perm_apply(const uint64_t key[4], uint64_t n, uint64_t x) {
    int half = 1;
    while (half < 31 && ((uint64_t)1 << (2 * half)) < n) half++;
    ASA_CHECK(((uint64_t)1 << (2 * half)) >= n);
    uint64_t mask = ((uint64_t)1 << half) - 1;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (int k = 0; k < 4; k++) {
            uint64_t t = l ^ (mix64(r ^ key[k]) & mask);
            l = r;
            r = t;
        }
        x = l << half | r;
    } while (x >= n);
    return x;
}

static void loader_key_epoch(asa_loader *ld) {
    asa_rng r;
    asa_rng_seed(&r, ld->seed ^ mix64(ld->pos.epoch + 0x9e3779b97f4a7c15ULL));
    for (int k = 0; k < 4; k++) ld->perm_key[k] = asa_rng_u64(&r);
}

int asa_loader_init(asa_loader *ld, const char *const *paths, int n_paths, int B, int T, uint64_t seed, int rank,
                    int world) {
    memset(ld, 0, sizeof *ld);
    if (n_paths < 1) return asa_err_set("training data: no token shards given");
    if (B < 1 || T < 1) return asa_err_set("training data: batch size %d and sequence length %d must be >= 1", B, T);
    if (world < 1 || rank < 0 || rank >= world)
        return asa_err_set("training data: rank %d of world size %d is out of range", rank, world);
    ld->shards = asa_calloc((size_t)n_paths, sizeof *ld->shards);
    ld->first_window = asa_calloc((size_t)n_paths + 1, sizeof *ld->first_window);
    for (int i = 0; i < n_paths; i++) {
        if (asa_shard_open(paths[i], &ld->shards[i])) {
            asa_loader_free(ld);
            return ASA_ERR;
        }
        ld->n_shards = i + 1;
        const asa_shard *s = &ld->shards[i];
        if (s->vocab > 0 && ld->vocab > 0 && s->vocab != ld->vocab) {
            const char *other = paths[0];
            for (int j = 0; j < i; j++)
                if (ld->shards[j].vocab > 0) { other = paths[j]; break; }
            asa_err_set("%s: vocabulary size %u differs from the %u of %s: shards of different tokenizers",
                        paths[i], s->vocab, ld->vocab, other);
            asa_loader_free(ld);
            return ASA_ERR;
        }
        if (s->vocab > 0) ld->vocab = s->vocab;
        uint64_t nw = s->count > 0 ? (s->count - 1) / (uint64_t)T : 0;
        ld->first_window[i + 1] = ld->first_window[i] + nw;
    }
    ld->n_windows = ld->first_window[n_paths];
    ld->B = B;
    ld->T = T;
    ld->rank = rank;
    ld->world = world;
    ld->seed = seed;
    ld->steps_per_epoch = ld->n_windows / ((uint64_t)B * (uint64_t)world);
    if (ld->steps_per_epoch == 0) {
        asa_err_set("training data: %d shard(s) (%s%s) hold %llu windows of %d tokens, fewer than one batch of "
                    "%d sequences for each of %d rank(s)", n_paths, paths[0], n_paths > 1 ? ", ..." : "",
                    (unsigned long long)ld->n_windows, T + 1, B, world);
        asa_loader_free(ld);
        return ASA_ERR;
    }
    ASA_CHECK(ld->n_windows <= (uint64_t)1 << 62);
    ld->window = asa_malloc(((size_t)T + 1) * sizeof *ld->window);
    loader_key_epoch(ld);
    return ASA_OK;
}

int asa_loader_next(asa_loader *ld, int32_t *tokens, int32_t *targets) {
    if (ld->pos.index >= ld->steps_per_epoch) {
        ld->pos.epoch++;
        ld->pos.index = 0;
        loader_key_epoch(ld);
    }
    int T = ld->T;
    uint64_t batch = ld->pos.index * (uint64_t)ld->world + (uint64_t)ld->rank;
    for (int b = 0; b < ld->B; b++) {
        uint64_t w = perm_apply(ld->perm_key, ld->n_windows, batch * (uint64_t)ld->B + (uint64_t)b);
        int lo = 0, hi = ld->n_shards - 1;  // the shard i with first_window[i] <= w < first_window[i + 1]
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (ld->first_window[mid] <= w) lo = mid;
            else hi = mid - 1;
        }
        if (asa_shard_read(&ld->shards[lo], (w - ld->first_window[lo]) * (uint64_t)T, (size_t)T + 1, ld->window))
            return ASA_ERR;
        memcpy(tokens + (size_t)b * T, ld->window, (size_t)T * sizeof *tokens);
        memcpy(targets + (size_t)b * T, ld->window + 1, (size_t)T * sizeof *targets);
    }
    ld->pos.index++;
    return ASA_OK;
}

asa_loader_state asa_loader_get_state(const asa_loader *ld) {
    return ld->pos;
}

int asa_loader_set_state(asa_loader *ld, asa_loader_state st) {
    if (st.index > ld->steps_per_epoch)
        return asa_err_set("training data: saved position %llu of epoch %llu is past the %llu steps per epoch of "
                           "these shards and batch size (different data or batch size?)",
                           (unsigned long long)st.index, (unsigned long long)st.epoch,
                           (unsigned long long)ld->steps_per_epoch);
    ld->pos = st;
    loader_key_epoch(ld);
    return ASA_OK;
}

void asa_loader_free(asa_loader *ld) {
    for (int i = 0; i < ld->n_shards; i++) asa_shard_close(&ld->shards[i]);
    free(ld->shards);
    free(ld->first_window);
    free(ld->window);
    memset(ld, 0, sizeof *ld);
}
