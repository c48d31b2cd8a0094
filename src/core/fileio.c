// Whole-file reads and atomic writes with errors that name the path (see fileio.h).
#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

static char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = asa_malloc(n);
    memcpy(d, s, n);
    return d;
}

int asa_file_read_all(const char *path, size_t max_bytes, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    ASA_CHECK(max_bytes < SIZE_MAX);  // the growth loop reads one byte past the limit to detect it
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return asa_err_set("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return asa_err_set("%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return asa_err_set("%s: is a directory, expected a file", path);
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_bytes) {
        close(fd);
        return asa_err_set("%s: file is %lld bytes, more than the limit of %zu bytes", path, (long long)st.st_size,
                           max_bytes);
    }
    // The size from fstat is a hint only: pipes report 0 and a file may grow while we read it.
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size : 0, n = 0;
    char *buf = asa_malloc(cap + 1);
    for (;;) {
        if (n == cap) {
            if (cap > max_bytes) break;
            size_t grow = cap < 4096 ? 4096 : cap;
            cap = grow > max_bytes - cap ? max_bytes + 1 : cap + grow;
            char *nb = realloc(buf, cap + 1);
            if (!nb) asa_fatal("out of memory reading %s (%zu bytes)", path, cap);
            buf = nb;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(buf);
            close(fd);
            return asa_err_set("%s: read failed: %s", path, strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (n > max_bytes) {
        free(buf);
        return asa_err_set("%s: file is more than the limit of %zu bytes", path, max_bytes);
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return ASA_OK;
}

static void afile_release(asa_afile *f) {
    free(f->path);
    free(f->tmp_path);
    f->path = f->tmp_path = NULL;
    f->fd = -1;
}

// Closes and removes the temp file after a failure; the message names the destination path.
static int afile_fail(asa_afile *f, const char *what, int err) {
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp_path);
    asa_err_set("%s: %s: %s", f->path, what, strerror(err));
    afile_release(f);
    return ASA_ERR;
}

int asa_afile_open(asa_afile *f, const char *path) {
    f->fd = -1;
    f->path = str_dup(path);
    size_t n = strlen(path) + 32;
    f->tmp_path = asa_malloc(n);
    snprintf(f->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (f->fd < 0) {
        int e = errno;
        asa_err_set("%s: cannot create temporary file %s: %s", path, f->tmp_path, strerror(e));
        afile_release(f);
        return ASA_ERR;
    }
    return ASA_OK;
}

int asa_afile_write(asa_afile *f, const void *data, size_t len) {
    if (f->fd < 0) return ASA_ERR;  // already failed: keep the first message
    const char *p = data;
    while (len > 0) {
        ssize_t r = write(f->fd, p, len);
        if (r < 0) {
            if (errno == EINTR) continue;
            return afile_fail(f, "write failed", errno);
        }
        if (r == 0) return afile_fail(f, "write failed", ENOSPC);
        p += r;
        len -= (size_t)r;
    }
    return ASA_OK;
}

static int fsync_dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) dir = str_dup(".");
    else if (slash == path) dir = str_dup("/");
    else {
        dir = asa_malloc((size_t)(slash - path) + 1);
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = 0;
    }
    int rc = ASA_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) rc = asa_err_set("%s: written, but cannot open its directory %s to sync it: %s", path, dir, strerror(errno));
    else {
        // Some filesystems cannot sync a directory (EINVAL); the rename is then as durable as they allow.
        if (fsync(fd) != 0 && errno != EINVAL)
            rc = asa_err_set("%s: written, but syncing its directory %s failed: %s", path, dir, strerror(errno));
        close(fd);
    }
    free(dir);
    return rc;
}

int asa_afile_commit(asa_afile *f) {
    if (f->fd < 0) return ASA_ERR;
    if (fsync(f->fd) != 0) return afile_fail(f, "fsync failed", errno);
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0) return afile_fail(f, "close failed", errno);
    if (rename(f->tmp_path, f->path) != 0) return afile_fail(f, "cannot rename the temporary file into place", errno);
    int rc = fsync_dir_of(f->path);
    afile_release(f);
    return rc;
}

void asa_afile_abort(asa_afile *f) {
    if (f->fd < 0) return;
    close(f->fd);
    unlink(f->tmp_path);
    afile_release(f);
}

int asa_file_write_atomic(const char *path, const void *data, size_t len) {
    asa_afile f;
    if (asa_afile_open(&f, path) || asa_afile_write(&f, data, len)) return ASA_ERR;
    return asa_afile_commit(&f);
}
