// Tests of token shards: writer -> reader round trips in both widths and the exact bytes of the format,
// one refused file per header/size rule (each message must name the file), ids the writer or reader must
// refuse, and the training loader's stream: targets, shard boundaries, coverage, determinism, exact
// resume and the split between ranks.
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "data/shard.h"
#include "testutil.h"

static char dir[64];
static char *made[64];
static int n_made;

// A path in the temp dir, remembered for cleanup.
static const char *tmp_path(const char *name) {
    ASA_CHECK(n_made < 64);
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = asa_malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    made[n_made++] = p;
    return p;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int write_shard(const char *path, int width, uint32_t vocab, const int32_t *ids, size_t n) {
    asa_shard_writer w;
    if (asa_shard_writer_open(&w, path, width, vocab)) return ASA_ERR;
    // Uneven chunks so that the writer's staging buffer fills and flushes mid-chunk.
    size_t at = 0, chunk = 1;
    while (at < n) {
        size_t k = chunk < n - at ? chunk : n - at;
        if (asa_shard_writer_append(&w, ids + at, k)) return ASA_ERR;
        at += k;
        chunk = chunk * 3 + 7;
    }
    return asa_shard_writer_commit(&w);
}

static void check_msg(const char *what, const char *path, const char *want) {
    const char *m = asa_err_msg();
    TU_CHECK(strstr(m, path) != NULL, "%s: message does not name the file: %s", what, m);
    TU_CHECK(strstr(m, want) != NULL, "%s: message lacks '%s': %s", what, want, m);
}

static void test_round_trip(int width, uint32_t vocab, int32_t max_id, size_t n, const char *name) {
    asa_rng r;
    asa_rng_seed(&r, 11 + (uint64_t)n);
    int32_t *ids = asa_malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(asa_rng_u64(&r) % ((uint64_t)max_id + 1));
    if (n > 2) ids[0] = 0, ids[1] = max_id;
    const char *path = tmp_path(name);
    TU_CHECK(write_shard(path, width, vocab, ids, n) == ASA_OK, "%s: write: %s", name, asa_err_msg());
    int want_width = width ? width : asa_shard_width_for_vocab(vocab);

    // The bytes on disk are exactly the documented format.
    char *data;
    size_t len;
    TU_CHECK(asa_file_read_all(path, (size_t)1 << 30, &data, &len) == ASA_OK, "%s: read_all", name);
    TU_CHECK(len == ASA_SHARD_HEADER_BYTES + n * (size_t)want_width, "%s: file size %zu", name, len);
    const uint8_t *b = (const uint8_t *)data;
    TU_CHECK(memcmp(b, "ASATOKS\0", 8) == 0, "%s: magic", name);
    TU_CHECK(b[8] == 1 && b[9] == 0 && b[10] == 0 && b[11] == 0, "%s: version bytes", name);
    TU_CHECK(b[12] == want_width && b[13] == 0, "%s: width bytes", name);
    uint64_t cnt = 0;
    for (int i = 7; i >= 0; i--) cnt = cnt << 8 | b[16 + i];
    TU_CHECK(cnt == n, "%s: count %llu", name, (unsigned long long)cnt);
    TU_CHECK((uint32_t)(b[24] | b[25] << 8 | b[26] << 16 | (uint32_t)b[27] << 24) == vocab, "%s: vocab", name);
    int pad_zero = 1;
    for (int i = 28; i < ASA_SHARD_HEADER_BYTES; i++) pad_zero &= b[i] == 0;
    TU_CHECK(pad_zero, "%s: header padding not zero", name);
    int le_ok = 1;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = b + ASA_SHARD_HEADER_BYTES + i * (size_t)want_width;
        uint32_t v = p[0] | (uint32_t)p[1] << 8;
        if (want_width == 4) v |= (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        le_ok &= v == (uint32_t)ids[i];
    }
    TU_CHECK(le_ok, "%s: token bytes are not little-endian ids", name);
    free(data);

    asa_shard s;
    TU_CHECK(asa_shard_open(path, &s) == ASA_OK, "%s: open: %s", name, asa_err_msg());
    TU_CHECK(s.width == want_width && s.count == n && s.vocab == vocab, "%s: header fields w=%d n=%llu v=%u",
             name, s.width, (unsigned long long)s.count, s.vocab);
    int32_t *back = asa_malloc((n + 1) * sizeof *back);
    back[n] = -7;
    TU_CHECK(asa_shard_read(&s, 0, n, back) == ASA_OK, "%s: read: %s", name, asa_err_msg());
    TU_CHECK(n == 0 || memcmp(back, ids, n * sizeof *ids) == 0, "%s: tokens differ after round trip", name);
    TU_CHECK(back[n] == -7, "%s: read wrote past n", name);
    if (n >= 10) {
        TU_CHECK(asa_shard_read(&s, n - 5, 5, back) == ASA_OK && memcmp(back, ids + n - 5, 5 * sizeof *ids) == 0,
                 "%s: tail read", name);
    }
    TU_CHECK(asa_shard_read(&s, n, 0, back) == ASA_OK, "%s: empty read at the end", name);
    TU_CHECK(asa_shard_read(&s, n, 1, back) == ASA_ERR, "%s: read past the end accepted", name);
    check_msg("read past end", path, "past the end");
    TU_CHECK(asa_shard_read(&s, UINT64_MAX, 2, back) == ASA_ERR, "%s: wrapping offset accepted", name);
    asa_shard_close(&s);
    free(back);
    free(ids);
}

// A shard file written byte by byte, so that any header field can be wrong.
static const char *write_raw(const char *name, const char *magic, uint32_t version, uint32_t width, uint64_t count,
                             uint32_t vocab, const uint32_t *toks, size_t n_toks, size_t extra_bytes) {
    size_t len = ASA_SHARD_HEADER_BYTES + n_toks * (width == 2 ? 2 : 4) + extra_bytes;
    uint8_t *b = calloc(1, len);
    memcpy(b, magic, 8);
    for (int i = 0; i < 4; i++) {
        b[8 + i] = (uint8_t)(version >> 8 * i);
        b[12 + i] = (uint8_t)(width >> 8 * i);
        b[24 + i] = (uint8_t)(vocab >> 8 * i);
    }
    for (int i = 0; i < 8; i++) b[16 + i] = (uint8_t)(count >> 8 * i);
    for (size_t t = 0; t < n_toks; t++) {
        uint8_t *p = b + ASA_SHARD_HEADER_BYTES + t * (width == 2 ? 2 : 4);
        for (int i = 0; i < (width == 2 ? 2 : 4); i++) p[i] = (uint8_t)(toks ? toks[t] >> 8 * i : t);
    }
    const char *path = tmp_path(name);
    ASA_CHECK(asa_file_write_atomic(path, b, len) == ASA_OK);
    free(b);
    return path;
}

static void expect_refused(const char *path, const char *want) {
    asa_shard s;
    asa_err_clear();
    int rc = asa_shard_open(path, &s);
    TU_CHECK(rc == ASA_ERR, "%s: malformed shard accepted", path);
    if (rc == ASA_OK) asa_shard_close(&s);
    else check_msg(path, path, want);
}

static void test_malformed(void) {
    const char *M = "ASATOKS\0";
    const char *good = write_raw("good.tok", M, 1, 2, 100, 0, NULL, 100, 0);
    asa_shard s;
    TU_CHECK(asa_shard_open(good, &s) == ASA_OK, "raw good shard refused: %s", asa_err_msg());
    if (s.map) asa_shard_close(&s);

    // Shorter than the header (also the empty file).
    const char *short_p = tmp_path("short.tok");
    ASA_CHECK(asa_file_write_atomic(short_p, M, 8) == ASA_OK);
    expect_refused(short_p, "not an asa token shard");
    const char *empty = tmp_path("empty.tok");
    ASA_CHECK(asa_file_write_atomic(empty, "", 0) == ASA_OK);
    expect_refused(empty, "shorter than the 256-byte header");
    expect_refused(write_raw("magic.tok", "GPT2TOKS", 1, 2, 100, 0, NULL, 100, 0), "not an asa token shard");
    expect_refused(write_raw("version.tok", M, 2, 2, 100, 0, NULL, 100, 0), "version 2 is not supported");
    expect_refused(write_raw("width.tok", M, 1, 3, 100, 0, NULL, 100, 0), "token width 3");
    expect_refused(write_raw("width0.tok", M, 1, 0, 0, 0, NULL, 0, 0), "token width 0");
    // Truncated: one token missing (2 bytes) and half a token missing (1 byte).
    expect_refused(write_raw("trunc.tok", M, 1, 2, 100, 0, NULL, 99, 0), "2 bytes short");
    expect_refused(write_raw("trunc1.tok", M, 1, 4, 100, 0, NULL, 99, 3), "1 bytes short");
    // Trailing bytes: three past the last token, and a whole extra token.
    expect_refused(write_raw("trail.tok", M, 1, 2, 100, 0, NULL, 100, 3), "3 trailing bytes");
    expect_refused(write_raw("trail4.tok", M, 1, 4, 100, 0, NULL, 101, 0), "4 trailing bytes");
    // Count mismatch both ways, and a count so large that count * width overflows.
    expect_refused(write_raw("count.tok", M, 1, 4, 1000, 0, NULL, 100, 0), "truncated");
    expect_refused(write_raw("count0.tok", M, 1, 4, 0, 0, NULL, 100, 0), "400 trailing bytes");
    expect_refused(write_raw("count_huge.tok", M, 1, 4, UINT64_MAX / 2, 0, NULL, 100, 0), "truncated");
    expect_refused(tmp_path("missing.tok"), "cannot open");
    expect_refused(dir, "not a regular file");

    // Ids the header allows in the bytes but the reader must refuse: >= the vocab hint, >= 2^31.
    uint32_t toks[4] = {1, 2, 10, 3};
    const char *over_vocab = write_raw("vocab.tok", M, 1, 2, 4, 10, toks, 4, 0);
    TU_CHECK(asa_shard_open(over_vocab, &s) == ASA_OK, "vocab.tok open: %s", asa_err_msg());
    int32_t out[4];
    TU_CHECK(asa_shard_read(&s, 0, 2, out) == ASA_OK, "ids below the vocab refused: %s", asa_err_msg());
    TU_CHECK(asa_shard_read(&s, 1, 3, out) == ASA_ERR, "id 10 with vocab 10 accepted");
    check_msg("id >= vocab", over_vocab, "token 2: id 10 is not below the vocabulary size 10");
    asa_shard_close(&s);
    uint32_t big[2] = {5, 0x80000000u};
    const char *neg = write_raw("neg.tok", M, 1, 4, 2, 0, big, 2, 0);
    TU_CHECK(asa_shard_open(neg, &s) == ASA_OK, "neg.tok open: %s", asa_err_msg());
    TU_CHECK(asa_shard_read(&s, 0, 2, out) == ASA_ERR, "id 2^31 accepted");
    check_msg("id 2^31", neg, "does not fit in a signed 32-bit id");
    asa_shard_close(&s);
}

static void expect_append_refused(const char *name, int width, uint32_t vocab, int32_t bad, const char *want) {
    const char *path = tmp_path(name);
    asa_shard_writer w;
    TU_CHECK(asa_shard_writer_open(&w, path, width, vocab) == ASA_OK, "%s: open: %s", name, asa_err_msg());
    int32_t ids[3] = {1, bad, 2};
    TU_CHECK(asa_shard_writer_append(&w, ids, 1) == ASA_OK, "%s: good id refused", name);
    TU_CHECK(asa_shard_writer_append(&w, ids, 3) == ASA_ERR, "%s: id %d accepted", name, bad);
    check_msg(name, path, want);
    TU_CHECK(asa_shard_writer_append(&w, ids, 1) == ASA_ERR, "%s: append after a refused append", name);
    TU_CHECK(asa_shard_writer_commit(&w) == ASA_ERR, "%s: commit after a refused append succeeded", name);
    check_msg(name, path, want);  // the first error is what the caller reports
    asa_shard_writer_abort(&w);  // already aborted: must be a no-op
    TU_CHECK(!file_exists(path), "%s: a refused shard was left on disk", name);
}

static void test_writer_refuses(void) {
    expect_append_refused("w2_big.tok", 2, 0, 65536, "token 2: id 65536 does not fit in a 2-byte token");
    expect_append_refused("w2_neg.tok", 2, 0, -1, "id -1 does not fit");
    expect_append_refused("w4_neg.tok", 4, 0, -5, "id -5 does not fit in a 4-byte token");
    expect_append_refused("w_vocab.tok", 0, 100, 100, "id 100 is not below the vocabulary size 100");
    expect_append_refused("w4_vocab.tok", 4, 70000, 70000, "not below the vocabulary size 70000");

    asa_shard_writer w;
    const char *p = tmp_path("w_open.tok");
    TU_CHECK(asa_shard_writer_open(&w, p, 2, 70000) == ASA_ERR, "width 2 with vocab 70000 accepted");
    check_msg("width 2 vocab 70000", p, "cannot hold a vocabulary of 70000");
    asa_shard_writer_abort(&w);
    TU_CHECK(asa_shard_writer_open(&w, p, 3, 0) == ASA_ERR, "width 3 accepted");
    check_msg("width 3", p, "must be 2 or 4");
    TU_CHECK(!file_exists(p), "refused open left a file");
    TU_CHECK(asa_shard_width_for_vocab(65536) == 2 && asa_shard_width_for_vocab(65537) == 4 &&
                 asa_shard_width_for_vocab(0) == 4 && asa_shard_width_for_vocab(1) == 2,
             "width_for_vocab");

    // An aborted rewrite leaves the previous shard intact.
    int32_t old_ids[5] = {1, 2, 3, 4, 5};
    const char *keep = tmp_path("keep.tok");
    TU_CHECK(write_shard(keep, 2, 0, old_ids, 5) == ASA_OK, "keep.tok: %s", asa_err_msg());
    TU_CHECK(asa_shard_writer_open(&w, keep, 4, 0) == ASA_OK, "reopen keep.tok");
    TU_CHECK(asa_shard_writer_append(&w, old_ids, 3) == ASA_OK, "append to keep.tok");
    asa_shard_writer_abort(&w);
    asa_shard s;
    TU_CHECK(asa_shard_open(keep, &s) == ASA_OK && s.count == 5 && s.width == 2, "previous shard damaged");
    if (s.map) asa_shard_close(&s);

    // A write that fails (file size limit standing in for a full disk) reports the file and leaves no
    // temp file (checked by the final rmdir) and the previous shard in place.
    struct rlimit old_lim, lim;
    ASA_CHECK(getrlimit(RLIMIT_FSIZE, &old_lim) == 0);
    lim = old_lim;
    lim.rlim_cur = 100000;
    signal(SIGXFSZ, SIG_IGN);
    ASA_CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    size_t n_big = 300000;
    int32_t *big = calloc(n_big, sizeof *big);
    asa_err_clear();
    TU_CHECK(write_shard(keep, 2, 0, big, n_big) == ASA_ERR, "write past the file size limit succeeded");
    ASA_CHECK(setrlimit(RLIMIT_FSIZE, &old_lim) == 0);
    signal(SIGXFSZ, SIG_DFL);
    check_msg("write failure", keep, "write failed");
    TU_CHECK(asa_shard_open(keep, &s) == ASA_OK && s.count == 5, "failed write damaged the previous shard");
    if (s.map) asa_shard_close(&s);
    free(big);
}

// ---------------------------------------------------------------------------------------------------
// Loader. Token values encode (shard, position) as shard * 100000 + position, so every window tells
// where it came from.

#define TAG 100000

static const char *make_tagged(const char *name, int shard, int n) {
    int32_t *ids = asa_malloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++) ids[i] = shard * TAG + i;
    const char *path = tmp_path(name);
    ASA_CHECK(write_shard(path, 4, 0, ids, (size_t)n) == ASA_OK);
    free(ids);
    return path;
}

// Reads n_steps batches; window starts (the first token of each window) go to starts[n_steps * B].
static int run_loader(asa_loader *ld, int n_steps, int32_t *starts) {
    int B = ld->B, T = ld->T;
    int32_t *tok = asa_malloc((size_t)B * T * sizeof *tok), *tgt = asa_malloc((size_t)B * T * sizeof *tgt);
    int ok = 1;
    for (int s = 0; s < n_steps && ok; s++) {
        if (asa_loader_next(ld, tok, tgt)) {
            ok = 0;
            break;
        }
        for (int b = 0; b < B; b++) {
            const int32_t *x = tok + (size_t)b * T, *y = tgt + (size_t)b * T;
            int pos = x[0] % TAG;
            // targets are the tokens shifted by one; all T + 1 tokens come from one shard, consecutive,
            // and the window starts at a multiple of T.
            for (int t = 0; t < T; t++) ok &= x[t] == x[0] + t && y[t] == x[0] + t + 1;
            ok &= pos % T == 0 && x[0] / TAG == y[T - 1] / TAG;
            starts[(size_t)s * B + b] = x[0];
        }
    }
    free(tok);
    free(tgt);
    return ok;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

// Number of distinct values in v (sorted in place).
static int n_distinct(int32_t *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_i32);
    int d = n > 0;
    for (int i = 1; i < n; i++) d += v[i] != v[i - 1];
    return d;
}

static void test_loader(void) {
    // T = 16: shard sizes give (n - 1) / 16 windows: 1000 -> 62, 40 -> 2, 17 -> 1, 16 -> 0, 529 -> 33;
    // 98 in all. The 16-token shard has no full window and 17 tokens exactly one.
    enum { T = 16, NW = 98 };
    const char *paths[5] = {make_tagged("l0.tok", 0, 1000), make_tagged("l1.tok", 1, 40), make_tagged("l2.tok", 2, 17),
                            make_tagged("l3.tok", 3, 16), make_tagged("l4.tok", 4, 529)};
    asa_loader a, b;

    // One epoch with B = 7 (98 = 14 * 7, nothing skipped): every window exactly once, none cross a shard.
    TU_CHECK(asa_loader_init(&a, paths, 5, 7, T, 42, 0, 1) == ASA_OK, "loader init: %s", asa_err_msg());
    TU_CHECK(a.n_windows == NW && a.steps_per_epoch == 14, "windows %llu steps %llu",
             (unsigned long long)a.n_windows, (unsigned long long)a.steps_per_epoch);
    int32_t e0[NW], e1[NW], e0s[NW], e1s[NW];
    TU_CHECK(run_loader(&a, 14, e0), "epoch 0: windows not consecutive, misaligned or crossing shards");
    memcpy(e0s, e0, sizeof e0);
    TU_CHECK(n_distinct(e0s, NW) == NW, "epoch 0 repeats a window");
    int32_t all[NW];
    int k = 0;
    const int sizes[5] = {1000, 40, 17, 16, 529};
    for (int s = 0; s < 5; s++)
        for (int w = 0; w < (sizes[s] - 1) / T; w++) all[k++] = s * TAG + w * T;
    TU_CHECK(k == NW && memcmp(all, e0s, sizeof all) == 0, "epoch 0 is not exactly the set of windows");
    asa_loader_state st = asa_loader_get_state(&a);
    TU_CHECK(st.epoch == 0 && st.index == 14, "state after an epoch: %llu %llu", (unsigned long long)st.epoch,
             (unsigned long long)st.index);
    // Epoch 1: the same windows in another order.
    TU_CHECK(run_loader(&a, 14, e1), "epoch 1 windows");
    st = asa_loader_get_state(&a);
    TU_CHECK(st.epoch == 1 && st.index == 14, "state after two epochs");
    memcpy(e1s, e1, sizeof e1);
    TU_CHECK(n_distinct(e1s, NW) == NW && memcmp(e1s, all, sizeof all) == 0, "epoch 1 coverage");
    TU_CHECK(memcmp(e0, e1, sizeof e0) != 0, "epoch 1 was not reshuffled");
    TU_CHECK(memcmp(e0, all, sizeof e0) != 0, "epoch 0 is not shuffled");

    // Determinism: same seed, same stream; another seed, another order.
    int32_t again[2 * NW];
    TU_CHECK(asa_loader_init(&b, paths, 5, 7, T, 42, 0, 1) == ASA_OK, "init b");
    run_loader(&b, 28, again);
    TU_CHECK(memcmp(again, e0, sizeof e0) == 0 && memcmp(again + NW, e1, sizeof e1) == 0, "same seed differs");
    asa_loader_free(&b);
    TU_CHECK(asa_loader_init(&b, paths, 5, 7, T, 43, 0, 1) == ASA_OK, "init seed 43");
    run_loader(&b, 14, again);
    TU_CHECK(memcmp(again, e0, sizeof e0) != 0, "seed 43 gives the order of seed 42");
    asa_loader_free(&b);

    // Save / restore: 11 steps, save, 20 more (crossing into epoch 1 and 2); a fresh loader set to the
    // saved state continues identically. Also restore at an epoch's end (index == steps_per_epoch).
    asa_loader_free(&a);
    TU_CHECK(asa_loader_init(&a, paths, 5, 7, T, 42, 0, 1) == ASA_OK, "init a");
    int32_t head[11 * 7], cont_a[20 * 7], cont_b[20 * 7];
    run_loader(&a, 11, head);
    asa_loader_state saved = asa_loader_get_state(&a);
    run_loader(&a, 9, cont_a);
    asa_loader_state saved1 = asa_loader_get_state(&a);
    TU_CHECK(saved1.epoch == 1 && saved1.index == 6, "state after 20 steps");
    run_loader(&a, 11, cont_a + 9 * 7);
    TU_CHECK(asa_loader_init(&b, paths, 5, 7, T, 42, 0, 1) == ASA_OK, "init b");
    TU_CHECK(asa_loader_set_state(&b, saved) == ASA_OK, "set_state: %s", asa_err_msg());
    run_loader(&b, 20, cont_b);
    TU_CHECK(memcmp(cont_a, cont_b, sizeof cont_a) == 0, "restored loader continues differently");
    asa_loader_free(&b);
    TU_CHECK(asa_loader_init(&b, paths, 5, 7, T, 42, 0, 1) == ASA_OK, "init b");
    TU_CHECK(asa_loader_set_state(&b, saved1) == ASA_OK, "set_state in epoch 1: %s", asa_err_msg());
    run_loader(&b, 11, cont_b);
    TU_CHECK(memcmp(cont_a + 9 * 7, cont_b, 11 * 7 * sizeof(int32_t)) == 0,
             "a fresh loader restored into epoch 1 continues differently");
    TU_CHECK(memcmp(cont_a + 3 * 7, e1, 14 * 7 * sizeof(int32_t)) == 0, "steps 14..27 are not epoch 1");
    asa_loader_state end0 = {0, 14};
    TU_CHECK(asa_loader_set_state(&b, end0) == ASA_OK, "set_state at the end of an epoch");
    run_loader(&b, 14, cont_b);
    TU_CHECK(memcmp(cont_b, e1, sizeof e1) == 0, "restore at an epoch's end does not continue with epoch 1");
    asa_loader_state bad = {0, 15};
    TU_CHECK(asa_loader_set_state(&b, bad) == ASA_ERR, "index past steps_per_epoch accepted");
    TU_CHECK(strstr(asa_err_msg(), "past the 14 steps per epoch") != NULL, "set_state message: %s", asa_err_msg());
    asa_loader_free(&b);
    asa_loader_free(&a);

    // Ranks: world 2 with B = 7 has 7 steps per epoch; rank r's step i is world 1's batch 2i + r, so the
    // two ranks together cover epoch 0 of world 1 exactly, without overlap.
    asa_loader r0, r1;
    TU_CHECK(asa_loader_init(&r0, paths, 5, 7, T, 42, 0, 2) == ASA_OK, "init rank 0");
    TU_CHECK(asa_loader_init(&r1, paths, 5, 7, T, 42, 1, 2) == ASA_OK, "init rank 1");
    TU_CHECK(r0.steps_per_epoch == 7 && r1.steps_per_epoch == 7, "steps per epoch with 2 ranks");
    int32_t w0[2 * 7 * 7], w1[2 * 7 * 7];
    run_loader(&r0, 14, w0);
    run_loader(&r1, 14, w1);
    int split_ok = 1;
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < 7; i++) {
            const int32_t *ref = (e ? e1 : e0) + (size_t)(2 * i) * 7;
            split_ok &= memcmp(w0 + (size_t)(e * 7 + i) * 7, ref, 7 * sizeof(int32_t)) == 0;
            split_ok &= memcmp(w1 + (size_t)(e * 7 + i) * 7, ref + 7, 7 * sizeof(int32_t)) == 0;
        }
    TU_CHECK(split_ok, "ranks do not take alternate batches of the single-rank stream");
    int32_t both[NW];
    memcpy(both, w0, 49 * sizeof(int32_t));
    memcpy(both + 49, w1, 49 * sizeof(int32_t));
    TU_CHECK(n_distinct(both, NW) == NW && memcmp(both, all, sizeof all) == 0,
             "two ranks do not cover the epoch exactly once");
    asa_loader_free(&r0);
    asa_loader_free(&r1);

    // B = 10: 9 full batches per epoch, 8 windows skipped, none repeated.
    TU_CHECK(asa_loader_init(&a, paths, 5, 10, T, 1, 0, 1) == ASA_OK && a.steps_per_epoch == 9, "B=10 init");
    int32_t w10[90];
    TU_CHECK(run_loader(&a, 9, w10), "B=10 windows");
    TU_CHECK(n_distinct(w10, 90) == 90, "B=10 epoch repeats a window");
    asa_loader_free(&a);

    // Too little data for one batch per rank; shards of different vocabularies; bad arguments.
    TU_CHECK(asa_loader_init(&a, paths, 5, 50, T, 1, 0, 2) == ASA_ERR, "98 windows for 2 x 50 accepted");
    check_msg("too few windows", paths[0], "fewer than one batch");
    const char *bad_paths[2] = {paths[0], tmp_path("nope.tok")};
    TU_CHECK(asa_loader_init(&a, bad_paths, 2, 1, T, 1, 0, 1) == ASA_ERR, "missing shard accepted");
    check_msg("missing shard", bad_paths[1], "cannot open");
    TU_CHECK(asa_loader_init(&a, paths, 5, 1, T, 1, 2, 2) == ASA_ERR, "rank 2 of 2 accepted");
    int32_t v_ids[40];
    for (int i = 0; i < 40; i++) v_ids[i] = i % 20;
    const char *v100 = tmp_path("v100.tok"), *v200 = tmp_path("v200.tok");
    ASA_CHECK(write_shard(v100, 0, 100, v_ids, 40) == ASA_OK && write_shard(v200, 0, 200, v_ids, 40) == ASA_OK);
    const char *mixed[3] = {paths[0], v100, v200};
    TU_CHECK(asa_loader_init(&a, mixed, 3, 1, T, 1, 0, 1) == ASA_ERR, "shards of vocab 100 and 200 accepted");
    check_msg("vocab mismatch", v200, "differs from the 100 of");
    TU_CHECK(asa_loader_init(&a, mixed, 2, 1, T, 1, 0, 1) == ASA_OK && a.vocab == 100, "vocab hint 100 + none");
    asa_loader_free(&a);

    // A shard whose header claims vocab 10 but holds larger ids: the loader refuses at the batch that
    // reads one, naming the file.
    uint32_t raw[40];
    for (int i = 0; i < 40; i++) raw[i] = (uint32_t)(i % 20);
    const char *lying = write_raw("lying.tok", "ASATOKS\0", 1, 2, 40, 10, raw, 40, 0);
    const char *lp[1] = {lying};
    TU_CHECK(asa_loader_init(&a, lp, 1, 2, T, 1, 0, 1) == ASA_OK, "lying.tok init: %s", asa_err_msg());
    int32_t tk[32], tg[32];
    TU_CHECK(asa_loader_next(&a, tk, tg) == ASA_ERR, "ids >= the vocab hint reached a batch");
    check_msg("loader id >= vocab", lying, "not below the vocabulary size 10");
    asa_loader_free(&a);
}

// A larger stream with T = 1 and B = 1: 100000 windows, every one visited exactly once per epoch, which
// checks that the shuffle is a bijection on a domain that is not a power of two.
static void test_loader_bijection(void) {
    const int n = 100001;
    const char *p = make_tagged("big.tok", 0, n);
    const char *paths[1] = {p};
    asa_loader ld;
    TU_CHECK(asa_loader_init(&ld, paths, 1, 1, 1, 7, 0, 1) == ASA_OK, "big init: %s", asa_err_msg());
    char *seen = calloc((size_t)n, 1);
    int ok = 1, dup = 0;
    int32_t x, y;
    for (int i = 0; i < n - 1 && ok; i++) {
        ok = asa_loader_next(&ld, &x, &y) == ASA_OK && x >= 0 && x < n - 1 && y == x + 1;
        if (ok) dup += seen[x]++ != 0;
    }
    TU_CHECK(ok && dup == 0, "100000-window epoch: ok=%d, %d repeats", ok, dup);
    free(seen);
    asa_loader_free(&ld);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/asa_test_shard_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_round_trip(2, 1000, 999, 200003, "rt2.tok");
    test_round_trip(0, 65536, 65535, 5000, "rt_auto2.tok");
    test_round_trip(4, 0, INT32_MAX, 100000, "rt4.tok");
    test_round_trip(0, 70000, 69999, 3000, "rt_auto4.tok");
    test_round_trip(2, 0, 65535, 0, "rt_empty.tok");
    test_malformed();
    test_writer_refuses();
    test_loader();
    test_loader_bijection();
    for (int i = 0; i < n_made; i++) {
        unlink(made[i]);
        free(made[i]);
    }
    TU_CHECK(rmdir(dir) == 0, "temp dir %s not empty: a writer left a temp file behind", dir);
    return tu_finish("test_shard");
}
