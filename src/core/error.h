// Errors. Two kinds, kept apart on purpose:
// - Bad input (a file, a flag, a config value): the function records a message naming the file and the
//   problem with asa_err_set() and returns ASA_ERR; the caller passes it up; the CLI prints it and exits 1.
// - Broken invariants and failed allocations inside the engine: ASA_CHECK / asa_fatal print file and
//   line and abort. These are bugs or exhausted memory, not user errors.
#ifndef ASA_CORE_ERROR_H
#define ASA_CORE_ERROR_H

#include <stddef.h>

#define ASA_OK 0
#define ASA_ERR (-1)

// Records the message of the most recent error of this thread (printf-style) and returns ASA_ERR.
int asa_err_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Prefixes the current message, e.g. with the file name: "model.safetensors: " + message.
int asa_err_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *asa_err_msg(void);
void asa_err_clear(void);

_Noreturn void asa_fatal_at(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define asa_fatal(...) asa_fatal_at(__FILE__, __LINE__, __VA_ARGS__)
#define ASA_CHECK(cond) do { if (!(cond)) asa_fatal_at(__FILE__, __LINE__, "check failed: %s", #cond); } while (0)

// malloc/calloc that abort with file and line on failure.
void *asa_malloc_at(size_t n, const char *file, int line);
void *asa_calloc_at(size_t n, size_t size, const char *file, int line);
#define asa_malloc(n) asa_malloc_at((n), __FILE__, __LINE__)
#define asa_calloc(n, s) asa_calloc_at((n), (s), __FILE__, __LINE__)

#endif
