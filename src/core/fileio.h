// File IO with user-facing errors: whole-file reads with a size cap, and atomic writes (temp file in the
// same directory, fsync, rename, fsync of the directory) so that a crash or a full disk never leaves a
// half-written config, checkpoint or shard where a good one used to be.
#ifndef ASA_CORE_FILEIO_H
#define ASA_CORE_FILEIO_H

#include <stddef.h>

// Reads the whole file into a new buffer (caller frees), NUL-terminated after *len bytes so that text
// can be parsed in place. Errors name the path: missing, unreadable, a directory, larger than max_bytes.
int asa_file_read_all(const char *path, size_t max_bytes, char **data, size_t *len);

// Atomic writer. Data goes to "<path>.tmp.<pid>"; commit makes it appear under path in one rename.
// After any failed call the temp file is already removed and the writer closed, so asa_afile_abort is
// always safe to call in an error path (it is then a no-op), and the previous file at path is intact.
typedef struct {
    int fd;           // -1 once committed or aborted
    char *path;
    char *tmp_path;
} asa_afile;

int asa_afile_open(asa_afile *f, const char *path);
int asa_afile_write(asa_afile *f, const void *data, size_t len);
int asa_afile_commit(asa_afile *f);
void asa_afile_abort(asa_afile *f);

// One-shot atomic write of a buffer.
int asa_file_write_atomic(const char *path, const void *data, size_t len);

#endif
