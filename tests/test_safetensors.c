// Tests of fileio (atomic writes, read errors), safetensors (round trips in F32, BF16, I32, F16 and I64
// reads, and a corpus of malformed files, each refused with the file's name) and weights_io (a whole
// model layout saved and loaded, and checkpoints that do not fit the config).
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "asa/config.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "model/params.h"
#include "model/weights_io.h"
#include "testutil.h"

static char tmpdir[64];

static const char *tpath(const char *name) {
    static char buf[8][384];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

// Files in tmpdir whose name contains ".tmp." (left-over temp files of the atomic writer).
static int count_temp_files(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        const char *p = tpath(e->d_name);
        if (rmdir(p) != 0) unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

static int msg_has(const char *s) { return strstr(asa_err_msg(), s) != NULL; }

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) { perror(path); exit(2); }
}

// ------------------------------------------------------------------------------------------- fileio

static void test_fileio(void) {
    const char *p = tpath("a.txt");
    char *data;
    size_t len;
    TU_CHECK(asa_file_write_atomic(p, "hello", 5) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(asa_file_read_all(p, 100, &data, &len) == ASA_OK && len == 5 && memcmp(data, "hello", 6) == 0,
             "read back");
    free(data);
    TU_CHECK(count_temp_files() == 0, "atomic write left a temp file");

    // Overwrite, then an aborted write: the committed content survives and the temp file goes.
    TU_CHECK(asa_file_write_atomic(p, "world!", 6) == ASA_OK, "%s", asa_err_msg());
    asa_afile f;
    TU_CHECK(asa_afile_open(&f, p) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(asa_afile_write(&f, "partial", 7) == ASA_OK, "write");
    TU_CHECK(count_temp_files() == 1, "temp file should exist while writing");
    asa_afile_abort(&f);
    asa_afile_abort(&f);  // a second abort is a no-op
    TU_CHECK(count_temp_files() == 0, "abort left a temp file");
    TU_CHECK(asa_file_read_all(p, 100, &data, &len) == ASA_OK && len == 6 && memcmp(data, "world!", 6) == 0,
             "previous content lost");
    free(data);

    // Reading: a directory, a missing file, a file over the limit.
    TU_CHECK(asa_file_read_all(tmpdir, 100, &data, &len) == ASA_ERR && msg_has(tmpdir) && msg_has("directory"),
             "dir: %s", asa_err_msg());
    TU_CHECK(data == NULL, "data set on error");
    const char *missing = tpath("missing.json");
    TU_CHECK(asa_file_read_all(missing, 100, &data, &len) == ASA_ERR && msg_has(missing) && msg_has(strerror(ENOENT)),
             "missing: %s", asa_err_msg());
    TU_CHECK(asa_file_read_all(p, 5, &data, &len) == ASA_ERR && msg_has(p) && msg_has("limit"), "limit: %s",
             asa_err_msg());
    TU_CHECK(asa_file_read_all(p, 6, &data, &len) == ASA_OK && len == 6, "exactly at the limit");
    free(data);

    // Creating in a directory that does not exist.
    const char *nodir = tpath("no/such/dir/x.json");
    TU_CHECK(asa_file_write_atomic(nodir, "x", 1) == ASA_ERR && msg_has(nodir), "nodir: %s", asa_err_msg());

    // A write error (a file size limit stands in for a full disk): reported with the path and the
    // system's reason, the temp file removed, the previous file intact.
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    struct rlimit lim = old;
    lim.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    TU_CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
    size_t big = 1 << 16;
    char *buf = calloc(big, 1);
    int rc = asa_file_write_atomic(p, buf, big);
    setrlimit(RLIMIT_FSIZE, &old);
    TU_CHECK(rc == ASA_ERR && msg_has(p) && msg_has(strerror(EFBIG)), "disk-full write: rc %d, %s", rc, asa_err_msg());
    TU_CHECK(count_temp_files() == 0, "failed write left a temp file");
    TU_CHECK(asa_file_read_all(p, 100, &data, &len) == ASA_OK && len == 6 && memcmp(data, "world!", 6) == 0,
             "previous content lost after a failed write");
    free(data);
    free(buf);
    // After a failed write, further calls fail without crashing and commit refuses.
    TU_CHECK(asa_afile_open(&f, p) == ASA_OK, "%s", asa_err_msg());
    setrlimit(RLIMIT_FSIZE, &lim);
    buf = calloc(big, 1);
    rc = asa_afile_write(&f, buf, big);
    setrlimit(RLIMIT_FSIZE, &old);
    free(buf);
    TU_CHECK(rc == ASA_ERR, "write past the limit succeeded");
    TU_CHECK(asa_afile_write(&f, "x", 1) == ASA_ERR && asa_afile_commit(&f) == ASA_ERR, "use after failure");
    asa_afile_abort(&f);
    TU_CHECK(count_temp_files() == 0, "temp file after failure");
    unlink(p);
}

// ---------------------------------------------------------------------------------------- round trips

static int bits_equal(const float *a, const float *b, size_t n) { return memcmp(a, b, n * 4) == 0; }

static void test_f32_i32_roundtrip(asa_rng *r) {
    const char *p = tpath("rt.safetensors");
    float *a = malloc(sizeof(float) * 6 * 7), *b = malloc(sizeof(float) * 5), s = 3.25f;
    int32_t ids[9];
    tu_fill_normal(a, 42, r, 2.0f);
    tu_fill_normal(b, 5, r, 1e-30f);
    b[1] = -0.0f;
    b[2] = INFINITY;
    b[3] = NAN;
    for (int i = 0; i < 9; i++) ids[i] = (int32_t)asa_rng_below(r, 1u << 31) - (1 << 30);
    asa_st_out out[] = {
        {.name = "w.a", .ndim = 2, .shape = {6, 7}, .dtype = ASA_ST_F32, .f32 = a},
        {.name = "b \"quoted\" \xc3\xa9", .ndim = 1, .shape = {5}, .dtype = ASA_ST_F32, .f32 = b},
        {.name = "scalar", .ndim = 0, .dtype = ASA_ST_F32, .f32 = &s},
        {.name = "empty", .ndim = 2, .shape = {0, 4}, .dtype = ASA_ST_F32},
        {.name = "ids", .ndim = 3, .shape = {3, 1, 3}, .dtype = ASA_ST_I32, .i32 = ids},
    };
    const char *meta[] = {"format", "pt", "note", "x", NULL};
    TU_CHECK(asa_st_write(p, out, 5, meta) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(count_temp_files() == 0, "temp file left");

    // The data starts at a multiple of 8 (header padded with spaces).
    char *raw;
    size_t len;
    TU_CHECK(asa_file_read_all(p, 1 << 20, &raw, &len) == ASA_OK, "%s", asa_err_msg());
    uint64_t hlen;
    memcpy(&hlen, raw, 8);
    TU_CHECK((8 + hlen) % 8 == 0 && raw[8] == '{' && len == 8 + hlen + (42 + 5 + 1) * 4 + 9 * 4, "layout: hlen %llu len %zu",
             (unsigned long long)hlen, len);
    free(raw);

    asa_st_file f;
    TU_CHECK(asa_st_open(p, &f) == ASA_OK, "%s", asa_err_msg());
    if (tu_failures) return;
    TU_CHECK(f.count == 5, "count %d", f.count);
    TU_CHECK(asa_st_meta(&f, "format") && strcmp(asa_st_meta(&f, "format"), "pt") == 0, "metadata");
    TU_CHECK(asa_st_meta(&f, "note") && !asa_st_meta(&f, "absent"), "metadata lookup");
    TU_CHECK(strcmp(f.tensors[0].name, "w.a") == 0 && strcmp(f.tensors[4].name, "ids") == 0, "header order");
    const asa_st_tensor *t = asa_st_find(&f, "w.a");
    float got[42];
    TU_CHECK(t && t->ndim == 2 && t->shape[0] == 6 && t->shape[1] == 7 && t->dtype == ASA_ST_F32, "w.a meta");
    TU_CHECK(t && asa_st_read_f32(&f, t, got, 42) == ASA_OK && bits_equal(got, a, 42), "w.a data");
    t = asa_st_find(&f, "b \"quoted\" \xc3\xa9");
    TU_CHECK(t && asa_st_read_f32(&f, t, got, 5) == ASA_OK && bits_equal(got, b, 5), "b data (escaped name, specials)");
    t = asa_st_find(&f, "scalar");
    TU_CHECK(t && t->ndim == 0 && t->numel == 1 && asa_st_read_f32(&f, t, got, 1) == ASA_OK && got[0] == 3.25f, "scalar");
    t = asa_st_find(&f, "empty");
    TU_CHECK(t && t->numel == 0 && t->begin == t->end && asa_st_read_f32(&f, t, got, 0) == ASA_OK, "empty tensor");
    t = asa_st_find(&f, "ids");
    int32_t gi[9];
    TU_CHECK(t && t->dtype == ASA_ST_I32 && asa_st_read_i32(&f, t, gi, 9) == ASA_OK && memcmp(gi, ids, sizeof ids) == 0,
             "ids data");
    TU_CHECK(asa_st_find(&f, "nope") == NULL && asa_st_find(&f, "w") == NULL, "find of absent names");
    // Misuse: wrong element count, integer read as float and back.
    TU_CHECK(asa_st_read_f32(&f, asa_st_find(&f, "w.a"), got, 41) == ASA_ERR && msg_has(p) && msg_has("w.a"),
             "count mismatch: %s", asa_err_msg());
    TU_CHECK(asa_st_read_f32(&f, asa_st_find(&f, "ids"), got, 9) == ASA_ERR && msg_has("I32"), "i32 as f32: %s",
             asa_err_msg());
    TU_CHECK(asa_st_read_i32(&f, asa_st_find(&f, "w.a"), gi, 42) == ASA_ERR && msg_has("F32"), "f32 as i32");
    asa_st_close(&f);

    // The writer refuses duplicate names and unsupported stored dtypes, and writes nothing.
    asa_st_out dup[] = {out[0], out[0]};
    const char *p2 = tpath("dup.safetensors");
    TU_CHECK(asa_st_write(p2, dup, 2, NULL) == ASA_ERR && msg_has("w.a") && msg_has(p2), "dup: %s", asa_err_msg());
    asa_st_out f16 = out[0];
    f16.dtype = ASA_ST_F16;
    TU_CHECK(asa_st_write(p2, &f16, 1, NULL) == ASA_ERR && msg_has("F16"), "F16 write: %s", asa_err_msg());
    TU_CHECK(access(p2, F_OK) != 0 && count_temp_files() == 0, "refused write left a file");
    unlink(p);
    free(a);
    free(b);
}

static void test_bf16(asa_rng *r) {
    // Conversion rules: round to nearest even on ties, NaN stays NaN, overflow rounds to inf.
    TU_CHECK(asa_bf16_from_f32(1.0f) == 0x3f80, "1.0");
    TU_CHECK(asa_bf16_from_f32(1.0f + 0x1p-8f) == 0x3f80, "tie rounds to even (down)");
    TU_CHECK(asa_bf16_from_f32(1.0f + 3 * 0x1p-8f) == 0x3f82, "tie rounds to even (up)");
    TU_CHECK(asa_bf16_from_f32(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81, "above the tie rounds up");
    TU_CHECK(asa_bf16_from_f32(-0.0f) == 0x8000 && asa_bf16_from_f32(INFINITY) == 0x7f80, "-0, inf");
    TU_CHECK(asa_bf16_from_f32(3.4e38f) == 0x7f80, "rounds to inf past the largest bf16");
    TU_CHECK(isnan(asa_f32_from_bf16(asa_bf16_from_f32(NAN))), "NaN");
    uint32_t nanbits = 0x7f800001u;  // a NaN whose payload truncation would turn into inf
    float snan;
    memcpy(&snan, &nanbits, 4);
    TU_CHECK(isnan(asa_f32_from_bf16(asa_bf16_from_f32(snan))), "low-payload NaN stays NaN");

    // File round trip: random values within bf16 rounding, bf16-representable values exactly.
    enum { N = 4096 };
    float *x = malloc(sizeof(float) * N), *exact = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    tu_fill_normal(x, N, r, 3.0f);
    for (int i = 0; i < N; i++) {
        uint16_t h;
        do h = (uint16_t)asa_rng_below(r, 65536); while ((h & 0x7f80) == 0x7f80);  // finite patterns
        exact[i] = asa_f32_from_bf16(h);
    }
    asa_st_out out[] = {
        {.name = "x", .ndim = 2, .shape = {64, 64}, .dtype = ASA_ST_BF16, .f32 = x},
        {.name = "exact", .ndim = 1, .shape = {N}, .dtype = ASA_ST_BF16, .f32 = exact},
    };
    const char *p = tpath("bf16.safetensors");
    TU_CHECK(asa_st_write(p, out, 2, NULL) == ASA_OK, "%s", asa_err_msg());
    asa_st_file f;
    TU_CHECK(asa_st_open(p, &f) == ASA_OK, "%s", asa_err_msg());
    if (tu_failures) return;
    TU_CHECK(asa_st_find(&f, "x")->dtype == ASA_ST_BF16 && f.data_len == 2 * 2 * N, "stored as 2 bytes");
    TU_CHECK(asa_st_read_f32(&f, asa_st_find(&f, "x"), y, N) == ASA_OK, "%s", asa_err_msg());
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double rel = fabs((double)y[i] - x[i]) / fabs((double)x[i]);
        if (!(rel <= worst)) worst = rel;
    }
    TU_CHECK(worst <= 0x1p-8, "bf16 relative error %g > 2^-8", worst);
    TU_CHECK(worst > 0, "bf16 conversion lost nothing: is it really stored as bf16?");
    TU_CHECK(asa_st_read_f32(&f, asa_st_find(&f, "exact"), y, N) == ASA_OK && bits_equal(y, exact, N),
             "bf16-representable values not exact");
    asa_st_close(&f);
    unlink(p);
    free(x);
    free(exact);
    free(y);
}

// A file built byte by byte: header text as given, length field as given (or the text's length).
static void write_st(const char *path, const char *header, uint64_t hlen, const void *data, size_t dlen) {
    size_t h = strlen(header);
    unsigned char *buf = malloc(8 + h + dlen);
    memcpy(buf, &hlen, 8);
    memcpy(buf + 8, header, h);
    if (dlen) memcpy(buf + 8 + h, data, dlen);
    write_bytes(path, buf, 8 + h + dlen);
    free(buf);
}

static double f16_ref(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static void test_f16_i64_read(void) {
    // Every F16 bit pattern against a formula in double.
    uint16_t *h = malloc(2 * 65536);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    const char *p = tpath("f16.safetensors");
    char hdr[128];
    snprintf(hdr, sizeof hdr, "{\"h\":{\"dtype\":\"F16\",\"shape\":[256,256],\"data_offsets\":[0,131072]}}");
    write_st(p, hdr, strlen(hdr), h, 2 * 65536);
    asa_st_file f;
    TU_CHECK(asa_st_open(p, &f) == ASA_OK, "%s", asa_err_msg());
    float *y = malloc(sizeof(float) * 65536);
    TU_CHECK(asa_st_read_f32(&f, asa_st_find(&f, "h"), y, 65536) == ASA_OK, "%s", asa_err_msg());
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        double ref = f16_ref((uint16_t)i);
        if (isnan(ref) ? !isnan(y[i]) : ((double)y[i] != ref || !signbit(y[i]) != !signbit(ref))) bad++;
    }
    TU_CHECK(bad == 0, "%d of 65536 F16 patterns converted wrongly", bad);
    asa_st_close(&f);
    free(h);
    free(y);

    // I64 narrows to I32; a value outside int32 is an error naming the tensor.
    int64_t v[4] = {0, -5, 2147483647, -2147483648LL};
    const char *hdr64 = "{\"t\":{\"dtype\":\"I64\",\"shape\":[4],\"data_offsets\":[0,32]}}";
    write_st(p, hdr64, strlen(hdr64), v, sizeof v);
    int32_t out[4];
    TU_CHECK(asa_st_open(p, &f) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(asa_st_read_i32(&f, asa_st_find(&f, "t"), out, 4) == ASA_OK && out[0] == 0 && out[1] == -5 &&
             out[2] == 2147483647 && out[3] == INT32_MIN, "i64 values");
    asa_st_close(&f);
    v[2] = 1LL << 40;
    write_st(p, hdr64, strlen(hdr64), v, sizeof v);
    TU_CHECK(asa_st_open(p, &f) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(asa_st_read_i32(&f, asa_st_find(&f, "t"), out, 4) == ASA_ERR && msg_has("\"t\"") && msg_has(p),
             "i64 out of range: %s", asa_err_msg());
    asa_st_close(&f);
    unlink(p);
}

// ---------------------------------------------------------------------------------------- bad files

typedef struct {
    const char *what;     // also the file name
    const char *header;
    uint64_t hlen;        // 0: strlen(header)
    size_t dlen;          // bytes of data after the header
    const char *expect;   // substring of the message
} bad_case;

static void test_malformed(void) {
    // 32 data bytes to hand; each case declares what it needs.
    unsigned char data[32] = {0};
    const char *F2 = "\"dtype\":\"F32\",\"shape\":[2]";
    char h[64][256];
    int k = 0;
#define H(...) (snprintf(h[k], sizeof h[k], __VA_ARGS__), h[k++])
    const bad_case cases[] = {
        {"control_ok", H("{\"a\":{%s,\"data_offsets\":[0,8]}}", F2), 0, 8, NULL},
        {"control_meta_ok", H("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{%s,\"data_offsets\":[0,8]}}   ", F2), 0, 8, NULL},
        {"control_empty_ok", "{}", 0, 0, NULL},
        {"header_past_end", H("{\"a\":{%s,\"data_offsets\":[0,8]}}", F2), 4000, 8, "past the end of the file"},
        {"huge_header_len", "{}", 1ull << 40, 0, "limit"},
        {"header_over_100MB", "{}", 100000001, 0, "limit"},
        {"header_100MiB", "{}", 100ull << 20, 0, "over the limit of 67108864 bytes"},
        {"header_64MiB_plus_1", "{}", (64ull << 20) + 1, 0, "over the limit of 67108864 bytes"},
        {"not_json", "{\"a\": {\"dtype\": ", 0, 0, "not valid JSON"},
        {"trailing_garbage", "{} xx", 0, 0, "not valid JSON"},
        {"not_object", "[1, 2, 3]", 0, 0, "not a JSON object"},
        {"string_header", "\"abc\"", 0, 0, "not a JSON object"},
        {"bad_utf8", "{\"\xff\xfe\":1}", 0, 0, "UTF-8"},
        {"overlong_utf8", "{\"\xc0\xaf\":1}", 0, 0, "UTF-8"},
        {"entry_not_object", "{\"a\":5}", 0, 0, "not a JSON object"},
        {"missing_dtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, "dtype"},
        {"dtype_not_string", "{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, "dtype"},
        {"unknown_dtype", "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 0, 8, "F64"},
        {"missing_shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 0, 8, "shape"},
        {"shape_not_array", "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 0, 8, "shape"},
        {"negative_dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 8, "shape[0]"},
        {"fractional_dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2, 1.5],\"data_offsets\":[0,8]}}", 0, 8, "shape[1]"},
        {"string_dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 0, 8, "shape[0]"},
        {"too_many_dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 0, 4,
         "dimensions"},
        {"numel_overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}",
         0, 8, "overflow"},
        {"bytes_overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4503599627370496,1024],\"data_offsets\":[0,8]}}",
         0, 8, "overflow"},
        {"dim_beyond_2_53", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e17],\"data_offsets\":[0,8]}}", 0, 8, "shape[0]"},
        {"missing_offsets", H("{\"a\":{%s}}", F2), 0, 8, "data_offsets"},
        {"offsets_three", H("{\"a\":{%s,\"data_offsets\":[0,8,8]}}", F2), 0, 8, "data_offsets"},
        {"offsets_negative", H("{\"a\":{%s,\"data_offsets\":[-8,0]}}", F2), 0, 8, "data_offsets"},
        {"offsets_fraction", H("{\"a\":{%s,\"data_offsets\":[0,8.5]}}", F2), 0, 8, "data_offsets"},
        {"offsets_huge", H("{\"a\":{%s,\"data_offsets\":[0,1e300]}}", F2), 0, 8, "data_offsets"},
        {"end_before_begin", H("{\"a\":{%s,\"data_offsets\":[8,0]}}", F2), 0, 8, "before begin"},
        {"end_past_data", H("{\"a\":{%s,\"data_offsets\":[16,24]}}", F2), 0, 8, "past the end of the data"},
        {"truncated_data", H("{\"a\":{%s,\"data_offsets\":[0,8]}}", F2), 0, 5, "past the end of the data"},
        {"wrong_byte_length", H("{\"a\":{%s,\"data_offsets\":[0,12]}}", F2), 0, 12, "needs 8"},
        {"overlap", H("{\"a\":{%s,\"data_offsets\":[0,8]},\"b\":{%s,\"data_offsets\":[4,12]}}", F2, F2), 0, 12,
         "overlap"},
        {"overlap_empty_inside", H("{\"a\":{%s,\"data_offsets\":[0,8]},\"z\":{\"dtype\":\"F32\",\"shape\":[0],"
                                   "\"data_offsets\":[4,4]}}", F2), 0, 8, "overlap"},
        {"hole", H("{\"a\":{%s,\"data_offsets\":[0,8]},\"b\":{%s,\"data_offsets\":[12,20]}}", F2, F2), 0, 20, "hole"},
        {"hole_at_start", H("{\"a\":{%s,\"data_offsets\":[4,12]}}", F2), 0, 12, "hole"},
        {"trailing_bytes", H("{\"a\":{%s,\"data_offsets\":[0,8]}}", F2), 0, 12, "trailing"},
        {"data_without_tensors", "{}", 0, 4, "trailing"},
        {"duplicate_name", H("{\"a\":{%s,\"data_offsets\":[0,8]},\"a\":{%s,\"data_offsets\":[8,16]}}", F2, F2), 0, 16,
         "twice"},
        {"metadata_not_object", H("{\"__metadata__\":[1],\"a\":{%s,\"data_offsets\":[0,8]}}", F2), 0, 8, "__metadata__"},
        {"metadata_number", H("{\"__metadata__\":{\"step\":5},\"a\":{%s,\"data_offsets\":[0,8]}}", F2), 0, 8,
         "__metadata__"},
        {"deep_nesting", NULL, 0, 0, "header: JSON nested more than 1000 levels deep"},
    };
#undef H
    // 10,000 deep: cJSON's limit (1000) stops it, and the message says so rather than "not valid JSON".
    static char deep[20001];
    for (int i = 0; i < 10000; i++) deep[i] = '[';
    for (int i = 0; i < 10000; i++) deep[10000 + i] = ']';
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) {
        const bad_case *c = &cases[i];
        const char *hdr = c->header ? c->header : deep;
        char name[96];
        snprintf(name, sizeof name, "%s.safetensors", c->what);
        const char *p = tpath(name);
        write_st(p, hdr, c->hlen ? c->hlen : strlen(hdr), data, c->dlen);
        asa_st_file f;
        asa_err_clear();
        int rc = asa_st_open(p, &f);
        if (!c->expect) {
            TU_CHECK(rc == ASA_OK, "%s: valid file refused: %s", c->what, asa_err_msg());
            if (rc == ASA_OK) asa_st_close(&f);
        } else {
            TU_CHECK(rc == ASA_ERR, "%s: malformed file accepted", c->what);
            TU_CHECK(msg_has(p), "%s: message does not name the file: %s", c->what, asa_err_msg());
            TU_CHECK(msg_has(c->expect), "%s: message lacks \"%s\": %s", c->what, c->expect, asa_err_msg());
        }
        unlink(p);
    }

    // Files too short for the length field, and a NUL byte inside the header.
    const char *p = tpath("short.safetensors");
    for (size_t len = 0; len < 8; len++) {
        write_bytes(p, "\x02\0\0\0\0\0\0\0", len);
        asa_st_file f;
        TU_CHECK(asa_st_open(p, &f) == ASA_ERR && msg_has(p) && msg_has("too short"), "%zu-byte file: %s", len,
                 asa_err_msg());
    }
    unsigned char nul[8 + 8] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, ' ', ' ', ' ', ' ', ' '};
    write_bytes(p, nul, sizeof nul);
    asa_st_file f;
    TU_CHECK(asa_st_open(p, &f) == ASA_ERR && msg_has(p) && msg_has("NUL"), "NUL: %s", asa_err_msg());
    // A header of 2^22 + 1 values (8 MB of "0,"), refused by the scan before cJSON builds a 300 MB tree;
    // and a 1 MB tensor name, which the (fixed-size) message buffers cut short without overflowing.
    size_t nv = ((size_t)1 << 22) + 1, hl = 7 + 2 * nv;
    char *big = malloc(hl + 1);
    memcpy(big, "{\"a\":[", 6);
    for (size_t i = 0; i < nv; i++) memcpy(big + 6 + 2 * i, "0,", 2);
    memcpy(big + 6 + 2 * nv - 1, "]}", 3);
    write_st(p, big, strlen(big), NULL, 0);
    TU_CHECK(asa_st_open(p, &f) == ASA_ERR && msg_has(p) && msg_has("more than 4194304 JSON values"), "values: %s",
             asa_err_msg());
    size_t nl = (size_t)1 << 20;
    big[0] = '{';
    big[1] = '"';
    memset(big + 2, 'n', nl);
    memcpy(big + 2 + nl, "\":5}", 5);
    write_st(p, big, strlen(big), NULL, 0);
    TU_CHECK(asa_st_open(p, &f) == ASA_ERR && msg_has(p) && msg_has("nnnnnnnn"), "long name: %s", asa_err_msg());
    free(big);
    // A directory and a missing file.
    TU_CHECK(asa_st_open(tmpdir, &f) == ASA_ERR && msg_has(tmpdir), "directory: %s", asa_err_msg());
    TU_CHECK(asa_st_open(tpath("none.safetensors"), &f) == ASA_ERR && msg_has("none.safetensors"), "missing");
    unlink(p);
}

// A file that shrinks after it was validated gives an error on read, not a crash or garbage.
static void test_truncated_while_open(asa_rng *r) {
    float x[256];
    tu_fill_normal(x, 256, r, 1.0f);
    asa_st_out out = {.name = "x", .ndim = 1, .shape = {256}, .dtype = ASA_ST_F32, .f32 = x};
    const char *p = tpath("shrink.safetensors");
    TU_CHECK(asa_st_write(p, &out, 1, NULL) == ASA_OK, "%s", asa_err_msg());
    asa_st_file f;
    TU_CHECK(asa_st_open(p, &f) == ASA_OK, "%s", asa_err_msg());
    if (tu_failures) return;
    TU_CHECK(truncate(p, (off_t)(f.data_start + 100)) == 0, "truncate");
    float y[256];
    TU_CHECK(asa_st_read_f32(&f, asa_st_find(&f, "x"), y, 256) == ASA_ERR && msg_has(p) && msg_has("truncated"),
             "read after truncation: %s", asa_err_msg());
    asa_st_close(&f);
    unlink(p);
}

// Random corruption of a valid file: every outcome is a clean accept or a clean refusal.
static void test_corruption(asa_rng *r) {
    float x[24];
    int32_t ids[6] = {1, 2, 3, 4, 5, 6};
    tu_fill_normal(x, 24, r, 1.0f);
    asa_st_out out[] = {
        {.name = "x", .ndim = 2, .shape = {4, 6}, .dtype = ASA_ST_BF16, .f32 = x},
        {.name = "y", .ndim = 1, .shape = {24}, .dtype = ASA_ST_F32, .f32 = x},
        {.name = "ids", .ndim = 1, .shape = {6}, .dtype = ASA_ST_I32, .i32 = ids},
    };
    const char *p = tpath("fuzz.safetensors");
    TU_CHECK(asa_st_write(p, out, 3, NULL) == ASA_OK, "%s", asa_err_msg());
    char *good;
    size_t len;
    TU_CHECK(asa_file_read_all(p, 1 << 20, &good, &len) == ASA_OK, "%s", asa_err_msg());
    unsigned char *buf = malloc(len);
    int accepted = 0, refused_named = 0, trials = 3000;
    for (int t = 0; t < trials; t++) {
        memcpy(buf, good, len);
        int flips = 1 + (int)asa_rng_below(r, 3);
        size_t cut = len;
        for (int j = 0; j < flips; j++) {
            // Mostly the length field and the header, where the structure is.
            size_t at = asa_rng_below(r, 4) ? asa_rng_below(r, (uint32_t)(len - 96)) : asa_rng_below(r, (uint32_t)len);
            buf[at] = (unsigned char)asa_rng_below(r, 256);
        }
        if (asa_rng_below(r, 8) == 0) cut = asa_rng_below(r, (uint32_t)len);
        write_bytes(p, buf, cut);
        asa_st_file f;
        if (asa_st_open(p, &f) == ASA_OK) {
            accepted++;
            for (int i = 0; i < f.count; i++) {
                const asa_st_tensor *ti = &f.tensors[i];
                if (ti->numel > 4096) continue;
                float fy[4096];
                int32_t iy[4096];
                if (ti->dtype == ASA_ST_I32 || ti->dtype == ASA_ST_I64) asa_st_read_i32(&f, ti, iy, ti->numel);
                else asa_st_read_f32(&f, ti, fy, ti->numel);
            }
            asa_st_close(&f);
        } else {
            refused_named += msg_has(p);
        }
    }
    TU_CHECK(refused_named == trials - accepted, "%d refusals without the file name", trials - accepted - refused_named);
    TU_CHECK(accepted > 0 && accepted < trials, "corruption outcomes: %d of %d accepted", accepted, trials);
    printf("corruption: %d of %d corrupted files accepted (data bytes), the rest refused\n", accepted, trials);
    free(buf);
    free(good);
    unlink(p);
}

// ---------------------------------------------------------------------------------------- weights

static float *new_params(const asa_param_layout *L, const asa_config *c, uint64_t seed) {
    float *p = calloc(L->total, sizeof(float));
    asa_weights_init(L, c, p, seed);
    // Norm weights are all 1 after init; make them distinct so that a swap would show.
    asa_rng r;
    asa_rng_seed(&r, seed + 1);
    for (int i = 0; i < L->count; i++)
        if (L->tensors[i].is_norm) tu_fill_normal(p + L->tensors[i].offset, L->tensors[i].numel, &r, 1.0f);
    return p;
}

static int arena_equal(const asa_param_layout *L, const float *a, const float *b) {
    for (int i = 0; i < L->count; i++)
        if (!bits_equal(a + L->tensors[i].offset, b + L->tensors[i].offset, L->tensors[i].numel)) return 0;
    return 1;
}

// Writes the layout's tensors with one dropped, one renamed or one given another dtype.
static void write_variant(const char *path, const asa_param_layout *L, const float *params, int drop, const char *extra,
                          asa_st_dtype dtype_of_first) {
    asa_st_out *o = calloc((size_t)L->count + 1, sizeof *o);
    int n = 0;
    for (int i = 0; i < L->count; i++) {
        if (i == drop) continue;
        const asa_tensor_info *t = &L->tensors[i];
        o[n] = (asa_st_out){.name = t->name, .ndim = t->ndim, .shape = {t->shape[0], t->shape[1]},
                            .dtype = n == 0 ? dtype_of_first : ASA_ST_F32, .f32 = params + t->offset};
        if (o[n].dtype == ASA_ST_I32) o[n].i32 = (const int32_t *)(params + t->offset);
        n++;
    }
    if (extra) o[n++] = (asa_st_out){.name = extra, .ndim = 1, .shape = {3}, .dtype = ASA_ST_F32, .f32 = params};
    if (asa_st_write(path, o, n, NULL) != ASA_OK) { fprintf(stderr, "%s\n", asa_err_msg()); exit(2); }
    free(o);
}

static void test_weights(void) {
    asa_config c, c2;
    if (asa_config_load("configs/asa-tiny.json", &c) != ASA_OK) {
        TU_CHECK(0, "%s", asa_err_msg());
        return;
    }
    asa_param_layout L;
    asa_layout_build(&c, &L);
    float *p = new_params(&L, &c, 7), *q = calloc(L.total, sizeof(float));
    const char *f32 = tpath("model.safetensors"), *bf = tpath("model-bf16.safetensors");

    TU_CHECK(asa_weights_save(&L, p, f32, ASA_ST_F32) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(asa_weights_load(&L, q, f32) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(arena_equal(&L, p, q), "F32 weights round trip not bit-exact");
    asa_st_file f;
    TU_CHECK(asa_st_open(f32, &f) == ASA_OK && f.count == L.count && asa_st_meta(&f, "format") &&
             strcmp(asa_st_meta(&f, "format"), "pt") == 0, "checkpoint metadata");
    asa_st_close(&f);

    TU_CHECK(asa_weights_save(&L, p, bf, ASA_ST_BF16) == ASA_OK, "%s", asa_err_msg());
    memset(q, 0, L.total * sizeof(float));
    TU_CHECK(asa_weights_load(&L, q, bf) == ASA_OK, "%s", asa_err_msg());
    int exact = 1;
    double worst = 0;
    for (int i = 0; i < L.count; i++)
        for (size_t j = 0; j < L.tensors[i].numel; j++) {
            size_t o = L.tensors[i].offset + j;
            exact &= q[o] == asa_f32_from_bf16(asa_bf16_from_f32(p[o]));
            if (p[o] != 0) worst = fmax(worst, fabs((double)q[o] - p[o]) / fabs((double)p[o]));
        }
    TU_CHECK(exact, "BF16 weights are not the bf16 rounding of the originals");
    TU_CHECK(worst <= 0x1p-8 && worst > 0, "BF16 weights relative error %g", worst);
    TU_CHECK(asa_weights_save(&L, p, bf, ASA_ST_I32) == ASA_ERR && msg_has(bf), "I32 weights accepted");

    // A checkpoint of another config: same names, other shapes (kv_lora_rank 64 -> 32).
    c2 = c;
    c2.kv_lora_rank = 32;
    TU_CHECK(asa_config_validate(&c2, "c2") == ASA_OK, "%s", asa_err_msg());
    asa_param_layout L2;
    asa_layout_build(&c2, &L2);
    float *q2 = calloc(L2.total, sizeof(float));
    for (size_t i = 0; i < L2.total; i++) q2[i] = 42.0f;
    TU_CHECK(asa_weights_load(&L2, q2, f32) == ASA_ERR && msg_has(f32) && msg_has("model.layers.1.attn.kv_down.weight") &&
             msg_has("expected shape [32, 128], found [64, 128]") && msg_has("belong to this config"),
             "shape mismatch: %s", asa_err_msg());
    int untouched = 1;
    for (size_t i = 0; i < L2.total; i++) untouched &= q2[i] == 42.0f;
    TU_CHECK(untouched, "a refused checkpoint wrote into the arena");

    // A checkpoint of another pattern: missing and unexpected tensors, named.
    c2 = c;
    strcpy(c2.layer_pattern, "LG");
    TU_CHECK(asa_config_validate(&c2, "c2") == ASA_OK, "%s", asa_err_msg());
    asa_param_layout L3;
    asa_layout_build(&c2, &L3);
    float *q3 = calloc(L3.total, sizeof(float));
    TU_CHECK(asa_weights_load(&L3, q3, f32) == ASA_ERR && msg_has("missing") && msg_has("unexpected") &&
             msg_has("model.layers.0.attn.g_proj.weight") && msg_has("belong to this config"),
             "pattern mismatch: %s", asa_err_msg());

    const char *v = tpath("variant.safetensors");
    int drop = L.count / 2;
    write_variant(v, &L, p, drop, NULL, ASA_ST_F32);
    TU_CHECK(asa_weights_load(&L, q, v) == ASA_ERR && msg_has(v) && msg_has(L.tensors[drop].name) &&
             msg_has("1 expected tensor missing"), "missing tensor: %s", asa_err_msg());
    write_variant(v, &L, p, -1, "model.layers.0.attn.extra.weight", ASA_ST_F32);
    TU_CHECK(asa_weights_load(&L, q, v) == ASA_ERR && msg_has(v) && msg_has("model.layers.0.attn.extra.weight") &&
             msg_has("1 unexpected tensor"), "extra tensor: %s", asa_err_msg());
    write_variant(v, &L, p, -1, NULL, ASA_ST_I32);
    TU_CHECK(asa_weights_load(&L, q, v) == ASA_ERR && msg_has(v) && msg_has(L.tensors[0].name) && msg_has("I32"),
             "integer weights: %s", asa_err_msg());
    TU_CHECK(asa_weights_load(&L, q, tpath("absent.safetensors")) == ASA_ERR && msg_has("absent.safetensors"),
             "absent checkpoint");

    asa_layout_free(&L);
    asa_layout_free(&L2);
    asa_layout_free(&L3);
    free(p);
    free(q);
    free(q2);
    free(q3);
    unlink(f32);
    unlink(bf);
    unlink(v);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/asa_test_st_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 2; }
    asa_rng r;
    asa_rng_seed(&r, 1234);
    test_fileio();
    test_f32_i32_roundtrip(&r);
    test_bf16(&r);
    test_f16_i64_read();
    test_malformed();
    test_truncated_while_open(&r);
    test_corruption(&r);
    test_weights();
    TU_CHECK(count_temp_files() == 0, "temp files left in %s", tmpdir);
    remove_tmpdir();
    return tu_finish("test_safetensors");
}
