// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {string: string}}, then the
// data region, which the tensors must cover exactly. The reader validates everything before any tensor
// is read and reads tensors with pread (no mapping, so a file truncated later gives an error, not a
// signal); the writer pads the header with spaces to a multiple of 8 and writes atomically.
#ifndef ASA_CORE_SAFETENSORS_H
#define ASA_CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ASA_ST_MAX_DIMS 8

typedef enum { ASA_ST_F32, ASA_ST_F16, ASA_ST_BF16, ASA_ST_I32, ASA_ST_I64 } asa_st_dtype;

const char *asa_st_dtype_name(asa_st_dtype d);  // "F32", "BF16", ...
size_t asa_st_dtype_size(asa_st_dtype d);

typedef struct {
    char *name;
    asa_st_dtype dtype;
    int ndim;                          // 0 for a scalar
    int64_t shape[ASA_ST_MAX_DIMS];
    size_t numel;
    uint64_t begin, end;               // byte range within the data region
} asa_st_tensor;

typedef struct {
    char *path;
    int fd;
    uint64_t data_start;               // file offset of the data region: 8 + N
    uint64_t data_len;
    asa_st_tensor *tensors;            // in header order
    int count;
    int *by_name;                      // tensor indices sorted by name (asa_st_find)
    char **meta;                       // "__metadata__" as key, value, key, value, ...
    int n_meta;
} asa_st_file;

// Opens and fully validates path; every error names the file. On error *f needs no close.
int asa_st_open(const char *path, asa_st_file *f);
void asa_st_close(asa_st_file *f);
const asa_st_tensor *asa_st_find(const asa_st_file *f, const char *name);  // NULL if absent
const char *asa_st_meta(const asa_st_file *f, const char *key);            // NULL if absent
// Reads a whole tensor; n must equal its numel. F32, BF16 and F16 convert to fp32; I32 reads as is and
// I64 narrows (an error if a value does not fit). Safe to call from several threads on one file.
int asa_st_read_f32(const asa_st_file *f, const asa_st_tensor *t, float *dst, size_t n);
int asa_st_read_i32(const asa_st_file *f, const asa_st_tensor *t, int32_t *dst, size_t n);

// One tensor to write: stored as dtype, F32 or BF16 from f32 data, I32 from i32 data.
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[ASA_ST_MAX_DIMS];
    asa_st_dtype dtype;
    const float *f32;
    const int32_t *i32;
} asa_st_out;

// Writes n tensors in the given order, atomically. metadata: NULL or a NULL-terminated list of
// alternating keys and values, e.g. {"format", "pt", NULL} (which Hugging Face loaders look for).
int asa_st_write(const char *path, const asa_st_out *tensors, int n, const char *const *metadata);

// BF16: round to nearest even, NaN stays NaN, and BF16 -> F32 is exact. F16 -> F32 is exact too.
uint16_t asa_bf16_from_f32(float x);
float asa_f32_from_bf16(uint16_t h);
float asa_f32_from_f16(uint16_t h);

#endif
