#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_buf[1024];

int asa_err_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return ASA_ERR;
}

int asa_err_prefix(const char *fmt, ...) {
    char prefix[512], old[sizeof err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    size_t n = strlen(prefix);
    if (n >= sizeof err_buf) n = sizeof err_buf - 1;
    memcpy(err_buf, prefix, n);
    size_t rest = strlen(old);
    if (rest > sizeof err_buf - 1 - n) rest = sizeof err_buf - 1 - n;
    memcpy(err_buf + n, old, rest);
    err_buf[n + rest] = 0;
    return ASA_ERR;
}

const char *asa_err_msg(void) { return err_buf[0] ? err_buf : "unknown error"; }
void asa_err_clear(void) { err_buf[0] = 0; }

void asa_fatal_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "asa: internal error at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void *asa_malloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) asa_fatal_at(file, line, "out of memory allocating %zu bytes", n);
    return p;
}

void *asa_calloc_at(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) asa_fatal_at(file, line, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}
