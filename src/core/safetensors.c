// safetensors reader (full validation, pread) and atomic writer; see safetensors.h.
#include "core/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/json_limits.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader copies it as is"
#endif

#define CHUNK_BYTES ((size_t)4 << 20)
#define MAX_EXACT_INT 9007199254740992.0  // 2^53: larger JSON numbers are not exact in a double
// Header limits, checked before the header is read and parsed. A tensor's entry is about 100 bytes and
// 14 JSON values, so the largest real headers (a 671B model in one file: ~91,000 tensors) are ~10 MB
// and ~1.3M values. 64 MiB and 2^22 values are far above that, and bound what a hostile header costs:
// the text plus a cJSON tree of at most 2^22 values (~300 MB), instead of ~30 bytes per header byte.
#define ST_MAX_HEADER ((uint64_t)64 << 20)
#define ST_MAX_VALUES ((size_t)1 << 22)

static const struct { const char *name; size_t size; } dtypes[] = {
    [ASA_ST_F32] = {"F32", 4}, [ASA_ST_F16] = {"F16", 2}, [ASA_ST_BF16] = {"BF16", 2},
    [ASA_ST_I32] = {"I32", 4}, [ASA_ST_I64] = {"I64", 8},
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

const char *asa_st_dtype_name(asa_st_dtype d) { return d >= 0 && (int)d < N_DTYPES ? dtypes[d].name : "?"; }
size_t asa_st_dtype_size(asa_st_dtype d) { return d >= 0 && (int)d < N_DTYPES ? dtypes[d].size : 0; }

uint16_t asa_bf16_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // truncation could make it inf
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float asa_f32_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

float asa_f32_from_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) u = sign | 0x7f800000u | (man << 13);
    else if (exp) u = sign | ((exp + 112) << 23) | (man << 13);
    else if (!man) u = sign;
    else {  // subnormal in f16, normal in f32
        exp = 113;
        while (!(man & 0x400)) { man <<= 1; exp--; }
        u = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
    float x;
    memcpy(&x, &u, 4);
    return x;
}

// ---------------------------------------------------------------------------------------------- reader

static int st_err(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int st_err(const char *path, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return asa_err_set("%s: %s", path, msg);
}

static char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = asa_malloc(n);
    memcpy(d, s, n);
    return d;
}

// Full reads at an offset; 0 bytes before the end means the file shrank after it was validated.
static int pread_all(const char *path, int fd, void *buf, size_t n, uint64_t off) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return st_err(path, "read failed at byte %llu: %s", (unsigned long long)off, strerror(errno));
        }
        if (r == 0) return st_err(path, "file ends at byte %llu, before the data it declares (truncated while open?)",
                                  (unsigned long long)off);
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return ASA_OK;
}

// Offset of the first byte that is not valid UTF-8 (JSON text must be), or n if all are.
static size_t utf8_check(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t c = s[i];
        size_t len;
        uint32_t min;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xe0) == 0xc0) { len = 2; min = 0x80; c &= 0x1f; }
        else if ((c & 0xf0) == 0xe0) { len = 3; min = 0x800; c &= 0x0f; }
        else if ((c & 0xf8) == 0xf0) { len = 4; min = 0x10000; c &= 0x07; }
        else return i;
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            c = (c << 6) | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return i;  // overlong, range, surrogate
        i += len;
    }
    return n;
}

// A JSON number that is a non-negative integer exactly representable in a double.
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0) || d > MAX_EXACT_INT || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

static int parse_dtype(const char *s, asa_st_dtype *d) {
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(s, dtypes[i].name) == 0) { *d = (asa_st_dtype)i; return 1; }
    return 0;
}

static int parse_entry(const char *path, const cJSON *e, asa_st_tensor *t, uint64_t data_len) {
    const char *nm = e->string;
    if (!cJSON_IsObject(e)) return st_err(path, "tensor \"%s\": entry is not a JSON object", nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!dt) return st_err(path, "tensor \"%s\": missing \"dtype\"", nm);
    if (!cJSON_IsString(dt)) return st_err(path, "tensor \"%s\": \"dtype\" is not a string", nm);
    if (!parse_dtype(dt->valuestring, &t->dtype))
        return st_err(path, "tensor \"%s\": unsupported dtype \"%.32s\" (supported: F32, BF16, F16, I32, I64)", nm,
                      dt->valuestring);
    if (!sh) return st_err(path, "tensor \"%s\": missing \"shape\"", nm);
    if (!cJSON_IsArray(sh)) return st_err(path, "tensor \"%s\": \"shape\" is not an array", nm);
    if (!of) return st_err(path, "tensor \"%s\": missing \"data_offsets\"", nm);
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
        return st_err(path, "tensor \"%s\": \"data_offsets\" is not an array of two integers", nm);

    int ndim = cJSON_GetArraySize(sh);
    if (ndim > ASA_ST_MAX_DIMS)
        return st_err(path, "tensor \"%s\": %d dimensions, at most %d supported", nm, ndim, ASA_ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1;
    int overflow = 0, k = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, sh) {
        uint64_t dim;
        if (!json_uint(v, &dim))
            return st_err(path, "tensor \"%s\": shape[%d] is not an integer in [0, 2^53]", nm, k);
        t->shape[k++] = (int64_t)dim;
        overflow |= __builtin_mul_overflow(numel, dim, &numel);
    }
    uint64_t bytes;
    overflow |= __builtin_mul_overflow(numel, (uint64_t)dtypes[t->dtype].size, &bytes);
    if (overflow || bytes > SIZE_MAX) return st_err(path, "tensor \"%s\": shape is too large (size overflows)", nm);
    t->numel = (size_t)numel;

    if (!json_uint(cJSON_GetArrayItem(of, 0), &t->begin) || !json_uint(cJSON_GetArrayItem(of, 1), &t->end))
        return st_err(path, "tensor \"%s\": \"data_offsets\" is not an array of two non-negative integers", nm);
    if (t->end < t->begin)
        return st_err(path, "tensor \"%s\": data_offsets [%llu, %llu]: end is before begin", nm,
                      (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > data_len)
        return st_err(path, "tensor \"%s\": data_offsets end %llu is past the end of the data (%llu bytes)", nm,
                      (unsigned long long)t->end, (unsigned long long)data_len);
    if (t->end - t->begin != bytes)
        return st_err(path, "tensor \"%s\": data_offsets span %llu bytes, but %s of %llu elements needs %llu", nm,
                      (unsigned long long)(t->end - t->begin), dtypes[t->dtype].name, (unsigned long long)numel,
                      (unsigned long long)bytes);
    t->name = str_dup(nm);
    return ASA_OK;
}

static int parse_metadata(const char *path, const cJSON *m, asa_st_file *f) {
    if (!cJSON_IsObject(m)) return st_err(path, "\"__metadata__\" is not a JSON object");
    int n = cJSON_GetArraySize(m);
    f->meta = asa_calloc((size_t)(2 * n) + 1, sizeof(char *));
    const cJSON *v;
    cJSON_ArrayForEach(v, m) {
        if (!cJSON_IsString(v)) return st_err(path, "\"__metadata__\": value of \"%s\" is not a string", v->string);
        f->meta[2 * f->n_meta] = str_dup(v->string);
        f->meta[2 * f->n_meta + 1] = str_dup(v->valuestring);
        f->n_meta++;
    }
    return ASA_OK;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const asa_st_tensor *const *)a)->name, (*(const asa_st_tensor *const *)b)->name);
}
static int cmp_range(const void *a, const void *b) {
    const asa_st_tensor *x = *(const asa_st_tensor *const *)a, *y = *(const asa_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

// Names unique, and the byte ranges tile [0, data_len) with no overlap, hole or trailing bytes.
static int check_layout(const char *path, asa_st_file *f) {
    int n = f->count;
    const asa_st_tensor **by_name = asa_malloc(sizeof(*by_name) * (size_t)(n ? n : 1));
    const asa_st_tensor **by_range = asa_malloc(sizeof(*by_range) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) by_name[i] = by_range[i] = &f->tensors[i];
    qsort(by_name, (size_t)n, sizeof(*by_name), cmp_name);
    qsort(by_range, (size_t)n, sizeof(*by_range), cmp_range);
    f->by_name = asa_malloc(sizeof(int) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) f->by_name[i] = (int)(by_name[i] - f->tensors);
    int rc = ASA_OK;
    for (int i = 1; i < n && rc == ASA_OK; i++)
        if (strcmp(by_name[i]->name, by_name[i - 1]->name) == 0)
            rc = st_err(path, "tensor \"%s\" appears twice in the header", by_name[i]->name);
    uint64_t cursor = 0;
    const char *prev = NULL;
    for (int i = 0; i < n && rc == ASA_OK; i++) {
        const asa_st_tensor *t = by_range[i];
        if (t->begin < cursor)
            rc = st_err(path, "tensors \"%s\" and \"%s\" overlap (bytes %llu..%llu of the data)", prev, t->name,
                        (unsigned long long)t->begin, (unsigned long long)cursor);
        else if (t->begin > cursor)
            rc = st_err(path, "bytes %llu..%llu of the data belong to no tensor (a hole before \"%s\")",
                        (unsigned long long)cursor, (unsigned long long)t->begin, t->name);
        cursor = t->end;
        prev = t->name;
    }
    if (rc == ASA_OK && cursor != f->data_len)
        rc = st_err(path, "%llu trailing bytes after the last tensor (data region is %llu bytes, tensors cover %llu)",
                    (unsigned long long)(f->data_len - cursor), (unsigned long long)f->data_len,
                    (unsigned long long)cursor);
    free(by_name);
    free(by_range);
    return rc;
}

static int parse_header(const char *path, char *text, size_t len, asa_st_file *f) {
    size_t bad = utf8_check((const unsigned char *)text, len);
    if (bad < len) return st_err(path, "header is not valid UTF-8 (byte %zu of the header)", bad);
    if (memchr(text, 0, len)) return st_err(path, "header contains a NUL byte");
    const asa_json_limits lim = {ST_MAX_VALUES, ST_MAX_VALUES, " (a header holds about 14 per tensor)"};
    char src[4200];
    snprintf(src, sizeof src, "%s: header", path);
    if (asa_json_check(text, len, src, &lim)) return ASA_ERR;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        size_t pos = end && end >= text ? (size_t)(end - text) : 0;
        return st_err(path, "header is not valid JSON (near byte %zu of the header)", pos);
    }
    int rc = ASA_OK;
    if (!cJSON_IsObject(root)) {
        rc = st_err(path, "header is not a JSON object");
        goto done;
    }
    int n = cJSON_GetArraySize(root);
    f->tensors = asa_calloc((size_t)(n ? n : 1), sizeof(asa_st_tensor));
    const cJSON *e;
    int seen_meta = 0;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta++) rc = st_err(path, "\"__metadata__\" appears twice in the header");
            else rc = parse_metadata(path, e, f);
        } else {
            rc = parse_entry(path, e, &f->tensors[f->count], f->data_len);
            if (rc == ASA_OK) f->count++;
        }
        if (rc != ASA_OK) goto done;
    }
    rc = check_layout(path, f);
done:
    cJSON_Delete(root);
    return rc;
}

int asa_st_open(const char *path, asa_st_file *f) {
    memset(f, 0, sizeof *f);
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) return st_err(path, "cannot open: %s", strerror(errno));
    f->path = str_dup(path);
    int rc = ASA_ERR;
    char *text = NULL;
    struct stat st;
    if (fstat(f->fd, &st) != 0) { st_err(path, "cannot stat: %s", strerror(errno)); goto fail; }
    if (!S_ISREG(st.st_mode)) { st_err(path, "not a regular file"); goto fail; }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        st_err(path, "file is %llu bytes, too short for the 8-byte header length of a safetensors file",
               (unsigned long long)size);
        goto fail;
    }
    unsigned char nbuf[8];
    if (pread_all(path, f->fd, nbuf, 8, 0)) goto fail;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | nbuf[i];
    if (hlen > ST_MAX_HEADER) {
        st_err(path, "header length %llu is over the limit of %llu bytes (64 MiB; not a safetensors file?)",
               (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > size - 8) {
        st_err(path, "header length %llu runs past the end of the file (%llu bytes)", (unsigned long long)hlen,
               (unsigned long long)size);
        goto fail;
    }
    f->data_start = 8 + hlen;
    f->data_len = size - f->data_start;
    text = asa_malloc((size_t)hlen + 1);
    if (pread_all(path, f->fd, text, (size_t)hlen, 8)) goto fail;
    text[hlen] = 0;
    if (parse_header(path, text, (size_t)hlen, f)) goto fail;
    rc = ASA_OK;
fail:
    free(text);
    if (rc != ASA_OK) asa_st_close(f);
    return rc;
}

void asa_st_close(asa_st_file *f) {
    if (f->fd >= 0) close(f->fd);
    for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    for (int i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->tensors);
    free(f->by_name);
    free(f->meta);
    free(f->path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

const asa_st_tensor *asa_st_find(const asa_st_file *f, const char *name) {
    int lo = 0, hi = f->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const asa_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *asa_st_meta(const asa_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

static int check_read(const asa_st_file *f, const asa_st_tensor *t, size_t n) {
    if (n != t->numel)
        return st_err(f->path, "tensor \"%s\" has %zu elements, the caller expects %zu", t->name, t->numel, n);
    return ASA_OK;
}

int asa_st_read_f32(const asa_st_file *f, const asa_st_tensor *t, float *dst, size_t n) {
    if (check_read(f, t, n)) return ASA_ERR;
    uint64_t off = f->data_start + t->begin;
    if (t->dtype == ASA_ST_F32) return pread_all(f->path, f->fd, dst, n * 4, off);
    if (t->dtype != ASA_ST_BF16 && t->dtype != ASA_ST_F16)
        return st_err(f->path, "tensor \"%s\" is %s, expected a floating-point dtype (F32, BF16, F16)", t->name,
                      dtypes[t->dtype].name);
    size_t per = CHUNK_BYTES / 2;
    uint16_t *buf = asa_malloc(CHUNK_BYTES);
    int rc = ASA_OK;
    for (size_t i = 0; i < n && rc == ASA_OK; i += per) {
        size_t m = n - i < per ? n - i : per;
        rc = pread_all(f->path, f->fd, buf, m * 2, off + 2 * (uint64_t)i);
        if (rc) break;
        if (t->dtype == ASA_ST_BF16) for (size_t j = 0; j < m; j++) dst[i + j] = asa_f32_from_bf16(buf[j]);
        else for (size_t j = 0; j < m; j++) dst[i + j] = asa_f32_from_f16(buf[j]);
    }
    free(buf);
    return rc;
}

int asa_st_read_i32(const asa_st_file *f, const asa_st_tensor *t, int32_t *dst, size_t n) {
    if (check_read(f, t, n)) return ASA_ERR;
    uint64_t off = f->data_start + t->begin;
    if (t->dtype == ASA_ST_I32) return pread_all(f->path, f->fd, dst, n * 4, off);
    if (t->dtype != ASA_ST_I64)
        return st_err(f->path, "tensor \"%s\" is %s, expected an integer dtype (I32, I64)", t->name,
                      dtypes[t->dtype].name);
    size_t per = CHUNK_BYTES / 8;
    int64_t *buf = asa_malloc(CHUNK_BYTES);
    int rc = ASA_OK;
    for (size_t i = 0; i < n && rc == ASA_OK; i += per) {
        size_t m = n - i < per ? n - i : per;
        rc = pread_all(f->path, f->fd, buf, m * 8, off + 8 * (uint64_t)i);
        for (size_t j = 0; j < m && rc == ASA_OK; j++) {
            if (buf[j] < INT32_MIN || buf[j] > INT32_MAX)
                rc = st_err(f->path, "tensor \"%s\": element %zu (%lld) does not fit in 32 bits", t->name, i + j,
                            (long long)buf[j]);
            dst[i + j] = (int32_t)buf[j];
        }
    }
    free(buf);
    return rc;
}

// ---------------------------------------------------------------------------------------------- writer

static int out_numel(const char *path, const asa_st_out *o, size_t *numel) {
    if (!o->name || !o->name[0]) return st_err(path, "a tensor to write has no name");
    if (strcmp(o->name, "__metadata__") == 0) return st_err(path, "\"__metadata__\" cannot name a tensor");
    if (o->ndim < 0 || o->ndim > ASA_ST_MAX_DIMS) return st_err(path, "tensor \"%s\": ndim %d", o->name, o->ndim);
    uint64_t n = 1;
    for (int d = 0; d < o->ndim; d++) {
        if (o->shape[d] < 0) return st_err(path, "tensor \"%s\": negative shape[%d]", o->name, d);
        if (__builtin_mul_overflow(n, (uint64_t)o->shape[d], &n))
            return st_err(path, "tensor \"%s\": shape overflows", o->name);
    }
    int f32 = o->dtype == ASA_ST_F32 || o->dtype == ASA_ST_BF16;
    if (!f32 && o->dtype != ASA_ST_I32)
        return st_err(path, "tensor \"%s\": cannot store %s (F32, BF16 or I32)", o->name, asa_st_dtype_name(o->dtype));
    if (n > 0 && (f32 ? !o->f32 : !o->i32)) return st_err(path, "tensor \"%s\": no source data", o->name);
    *numel = (size_t)n;
    return ASA_OK;
}

static int cmp_out_name(const void *a, const void *b) {
    return strcmp((*(const asa_st_out *const *)a)->name, (*(const asa_st_out *const *)b)->name);
}

// The header, padded with spaces so that the data starts at a multiple of 8; NULL on error.
static char *build_header(const char *path, const asa_st_out *ts, int n, const char *const *metadata, size_t *len) {
    cJSON *root = cJSON_CreateObject();
    if (metadata && metadata[0]) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; metadata[i]; i += 2) {
            ASA_CHECK(metadata[i + 1] != NULL);
            cJSON_AddStringToObject(m, metadata[i], metadata[i + 1]);
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const asa_st_out *o = &ts[i];
        size_t numel;
        if (out_numel(path, o, &numel)) { cJSON_Delete(root); return NULL; }
        cJSON *e = cJSON_AddObjectToObject(root, o->name);
        cJSON_AddStringToObject(e, "dtype", asa_st_dtype_name(o->dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < o->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)o->shape[d]));
        uint64_t end = off + (uint64_t)numel * asa_st_dtype_size(o->dtype);
        cJSON *of = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)end));
        off = end;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    ASA_CHECK(json != NULL);
    size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;
    char *h = asa_malloc(padded + 1);
    memcpy(h, json, jl);
    memset(h + jl, ' ', padded - jl);
    h[padded] = 0;
    cJSON_free(json);
    *len = padded;
    return h;
}

static int write_tensor(asa_afile *af, const asa_st_out *o, size_t numel, void *buf) {
    if (o->dtype == ASA_ST_F32) return asa_afile_write(af, o->f32, numel * 4);
    if (o->dtype == ASA_ST_I32) return asa_afile_write(af, o->i32, numel * 4);
    uint16_t *b = buf;
    size_t per = CHUNK_BYTES / 2;
    for (size_t i = 0; i < numel; i += per) {
        size_t m = numel - i < per ? numel - i : per;
        for (size_t j = 0; j < m; j++) b[j] = asa_bf16_from_f32(o->f32[i + j]);
        if (asa_afile_write(af, b, m * 2)) return ASA_ERR;
    }
    return ASA_OK;
}

int asa_st_write(const char *path, const asa_st_out *tensors, int n, const char *const *metadata) {
    // Duplicate names would make an unreadable file: refuse before touching the disk.
    const asa_st_out **sorted = asa_malloc(sizeof(*sorted) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        if (!tensors[i].name) { free(sorted); return st_err(path, "a tensor to write has no name"); }
        sorted[i] = &tensors[i];
    }
    qsort(sorted, (size_t)n, sizeof(*sorted), cmp_out_name);
    for (int i = 1; i < n; i++)
        if (strcmp(sorted[i]->name, sorted[i - 1]->name) == 0) {
            int rc = st_err(path, "tensor \"%s\" given twice", sorted[i]->name);
            free(sorted);
            return rc;
        }
    free(sorted);

    size_t hlen;
    char *header = build_header(path, tensors, n, metadata, &hlen);
    if (!header) return ASA_ERR;
    unsigned char nbuf[8];
    for (int i = 0; i < 8; i++) nbuf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    asa_afile af;
    if (asa_afile_open(&af, path)) { free(header); return ASA_ERR; }
    int rc = asa_afile_write(&af, nbuf, 8);
    if (!rc) rc = asa_afile_write(&af, header, hlen);
    free(header);
    void *buf = asa_malloc(CHUNK_BYTES);
    for (int i = 0; i < n && !rc; i++) {
        size_t numel;
        rc = out_numel(path, &tensors[i], &numel);
        if (!rc) rc = write_tensor(&af, &tensors[i], numel, buf);
    }
    free(buf);
    if (rc) {
        asa_afile_abort(&af);
        return ASA_ERR;
    }
    return asa_afile_commit(&af);
}
