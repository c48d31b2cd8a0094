// Tests of the byte-level BPE tokenizer: GPT-2 (r50k) encodings against gpt-tokenizer's published
// vectors (when scripts/fetch_test_data.sh has fetched them) and a tokenizer.json copy of them, encode/decode
// round trips of random bytes (invalid UTF-8 included), encoding in parts at cut points, training against a
// plain recount-everything trainer, training determinism (repeated runs, one thread or two), tokenizer.json
// save -> load equality, and refused malformed tokenizer.json and tiktoken files.
#include <cjson/cJSON.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "asa/tokenizer.h"
#include "core/error.h"
#include "core/fileio.h"
#include "testutil.h"
#include "text/text_internal.h"

static char tmpdir[64];

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_file(const char *path, const char *data, size_t len) {
    if (asa_file_write_atomic(path, data, len)) {
        fprintf(stderr, "cannot write %s: %s\n", path, asa_err_msg());
        exit(2);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---- a small built-in corpus ----

static const char *BASE_TEXT =
    "It was the best of times, it was the worst of times; it was the age of wisdom, it was the age of\n"
    "foolishness. We'll see what they've done: I'm sure you'd agree it's 2024, not 1999!\n"
    "  Indented line with   several    spaces\tand a tab.\n\n\n"
    "Numbers 3.14159, 2,718 and 1e-9; e-mail: someone@example.org; path /usr/local/bin.\n"
    "Unicode: caf\xc3\xa9 na\xc3\xafve \xc3\xbc" "ber \xce\xb1\xce\xb2\xce\xb3 "
    "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 "
    "\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 \xf0\x9f\x87\xab\xf0\x9f\x87\xb7.\n"
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! the the the theme them there.\n";

static const char *WORDS[] = {"the", "of", "and", "a", "to", "in", "is", "was", "that", "it", "he", "for", "on",
                              "with", "as", "his", "they", "at", "be", "this", "from", "whale", "sea", "ship",
                              "captain", "Ahab", "white", "water", "boat", "men", "time", "old", "long", "great",
                              "into", "upon",
                              "\xc3\xa9t\xc3\xa9", "\xe6\xb5\xb7", "42", "1851", "don't", "I'll", "we're"};

static const char *SYLLABLES[] = {"ka", "lo", "mi", "ne", "su", "tor", "ran", "vel", "ish", "qu", "ex", "ph",
                                  "ing", "tion", "st", "re", "ab", "ou", "ze", "gr", "wa", "ly", "\xc3\xb8r", "do"};

// Random lines of words and punctuation: enough text for several training chunks.
static char *make_corpus(size_t target, uint64_t seed, size_t *len) {
    asa_rng r;
    asa_rng_seed(&r, seed);
    size_t cap = target + 256, n = 0;
    char *s = malloc(cap + 1);
    const int nw = (int)(sizeof WORDS / sizeof WORDS[0]), ns = (int)(sizeof SYLLABLES / sizeof SYLLABLES[0]);
    while (n < target) {
        int words = 3 + (int)asa_rng_below(&r, 12);
        for (int w = 0; w < words && n < target; w++) {
            if (w) s[n++] = ' ';
            if (asa_rng_below(&r, 2)) {
                const char *word = WORDS[asa_rng_below(&r, (uint64_t)nw)];
                size_t wl = strlen(word);
                memcpy(s + n, word, wl);
                n += wl;
            } else {  // an invented word of 1 to 4 syllables: many distinct pieces, as in real text
                for (int k = 1 + (int)asa_rng_below(&r, 4); k > 0; k--) {
                    const char *syl = SYLLABLES[asa_rng_below(&r, (uint64_t)ns)];
                    memcpy(s + n, syl, strlen(syl));
                    n += strlen(syl);
                }
            }
            if (asa_rng_below(&r, 8) == 0) s[n++] = ",;:!?."[asa_rng_below(&r, 6)];
        }
        s[n++] = '\n';
        if (asa_rng_below(&r, 50) == 0) {
            memcpy(s + n, "<|endoftext|>", 13);
            n += 13;
        }
    }
    s[n] = 0;
    *len = n;
    return s;
}

// ---- helpers ----

static int encode(const asa_tokenizer *t, const char *s, size_t n, int flags, asa_token_buf *out) {
    out->n = 0;
    int rc = asa_tokenizer_encode(t, s, n, flags, out);
    TU_CHECK(rc == ASA_OK, "encode failed: %s", asa_err_msg());
    return rc;
}

static int roundtrip(const asa_tokenizer *t, asa_encoder *e, const char *s, size_t n, int flags) {
    asa_token_buf ids = {0};
    int rc = asa_encoder_encode(e, s, n, flags, &ids);
    char *back = NULL;
    size_t bl = 0;
    if (rc == ASA_OK) rc = asa_tokenizer_decode(t, ids.ids, ids.n, &back, &bl);
    int ok = rc == ASA_OK && bl == n && memcmp(back, s, n) == 0;
    free(back);
    asa_token_buf_free(&ids);
    return ok;
}

static int same_ids(const asa_token_buf *a, const asa_token_buf *b) {
    return a->n == b->n && (a->n == 0 || memcmp(a->ids, b->ids, a->n * sizeof *a->ids) == 0);
}

static int same_tokenizers(const asa_tokenizer *a, const asa_tokenizer *b) {
    if (asa_tokenizer_vocab_size(a) != asa_tokenizer_vocab_size(b) ||
        asa_tokenizer_num_merges(a) != asa_tokenizer_num_merges(b) || asa_tokenizer_eot(a) != asa_tokenizer_eot(b))
        return 0;
    for (int id = 0; id < asa_tokenizer_vocab_size(a); id++) {
        size_t la, lb;
        const char *x = asa_tokenizer_token(a, id, &la), *y = asa_tokenizer_token(b, id, &lb);
        if (la != lb || memcmp(x, y, la) != 0) return 0;
    }
    return 1;
}

static int files_equal(const char *p, const char *q) {
    char *a, *b;
    size_t la, lb;
    if (asa_file_read_all(p, 1 << 28, &a, &la) || asa_file_read_all(q, 1 << 28, &b, &lb)) return 0;
    int eq = la == lb && memcmp(a, b, la) == 0;
    free(a);
    free(b);
    return eq;
}

// ---- training, round trips, save/load ----

typedef struct {
    int64_t read_done, read_total, merge_done, merge_total, calls;
} progress_log;

static void log_progress(void *ctx, const char *stage, int64_t done, int64_t total) {
    progress_log *p = ctx;
    p->calls++;
    if (strcmp(stage, "read") == 0) {
        TU_CHECK(done >= p->read_done, "read progress went back: %lld after %lld", (long long)done,
                 (long long)p->read_done);
        p->read_done = done, p->read_total = total;
    } else {
        TU_CHECK(strcmp(stage, "merge") == 0 && done >= p->merge_done, "progress stage %s, %lld", stage,
                 (long long)done);
        p->merge_done = done, p->merge_total = total;
    }
}

static asa_tokenizer *train_files(const char *const *files, int n, int vocab, const char *special) {
    asa_tokenizer_train_opts o = {.special_token = special};
    asa_tokenizer *t = NULL;
    int rc = asa_tokenizer_train(files, n, vocab, &o, &t);
    TU_CHECK(rc == ASA_OK, "train: %s", asa_err_msg());
    return t;
}

// Random strings of four kinds: raw bytes, ASCII-ish text, valid multi-byte UTF-8, and valid UTF-8 with
// stray continuation bytes, truncated sequences, overlongs and surrogates mixed in.
static size_t random_string(asa_rng *r, char *s, size_t max) {
    size_t n = 1 + asa_rng_below(r, max - 8);
    int kind = (int)asa_rng_below(r, 4);
    size_t i = 0;
    static const char *bad[] = {"\x80", "\xbf", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                "\xf8\x88\x80\x80\x80", "\xff", "\xe2\x82", "\xf0\x9f\x98"};
    while (i < n) {
        if (kind == 0) {
            s[i++] = (char)asa_rng_below(r, 256);
        } else if (kind == 1) {
            s[i++] = " \n\t'abcdefghijklmnopqrstuvwxyzTHE0123456789.,!<|>"[asa_rng_below(r, 49)];
        } else {
            uint32_t cp = (uint32_t)asa_rng_below(r, 4) == 0 ? 0x20 + (uint32_t)asa_rng_below(r, 0x60)
                                                           : 0x80 + (uint32_t)asa_rng_below(r, 0x10ff7f);
            if (cp >= 0xd800 && cp < 0xe000) cp = 0x2028;  // no surrogates in valid text
            if (i + 4 > n) break;
            if (cp < 0x80) s[i++] = (char)cp;
            else if (cp < 0x800) s[i++] = (char)(0xc0 | cp >> 6), s[i++] = (char)(0x80 | (cp & 0x3f));
            else if (cp < 0x10000)
                s[i++] = (char)(0xe0 | cp >> 12), s[i++] = (char)(0x80 | (cp >> 6 & 0x3f)),
                s[i++] = (char)(0x80 | (cp & 0x3f));
            else
                s[i++] = (char)(0xf0 | cp >> 18), s[i++] = (char)(0x80 | (cp >> 12 & 0x3f)),
                s[i++] = (char)(0x80 | (cp >> 6 & 0x3f)), s[i++] = (char)(0x80 | (cp & 0x3f));
            if (kind == 3 && asa_rng_below(r, 4) == 0) {
                const char *b = bad[asa_rng_below(r, 10)];
                size_t bl = strlen(b);
                if (i + bl > n) break;
                memcpy(s + i, b, bl);
                i += bl;
            }
        }
    }
    return i;
}

// Cut points: encoding the parts gives the ids of the whole, here with a cut at every cut point of a
// text of random strings, corpus lines and ragged whitespace.
static void check_cut_points(const asa_tokenizer *t, const char *corpus, size_t clen) {
    asa_rng r;
    asa_rng_seed(&r, 11);
    size_t n = 200000, parts = 0, bad = 0;
    char *txt = malloc(n);
    for (size_t i = 0; i < n;) {
        i += n - i >= 512 && asa_rng_below(&r, 2) ? random_string(&r, txt + i, 512) : 0;
        for (size_t k = asa_rng_below(&r, 4); k > 0 && i < n; k--) txt[i++] = "\n\n \tab"[asa_rng_below(&r, 6)];
        size_t k = asa_rng_below(&r, 80);
        if (i + k <= n) memcpy(txt + i, corpus + asa_rng_below(&r, clen - 100), k), i += k;
    }
    asa_encoder *e = asa_encoder_new(t);
    asa_token_buf whole = {0}, parted = {0};
    asa_encoder_encode(e, txt, n, ASA_ENCODE_SPECIAL, &whole);
    for (size_t b = 0; b < n; parts++) {
        size_t c = asa_tokenizer_cut_point(txt, n, b + 1);
        bad += !(c > b && c <= n);
        asa_encoder_encode(e, txt + b, c - b, ASA_ENCODE_SPECIAL, &parted);
        b = c;
    }
    TU_CHECK(bad == 0, "%zu cut points out of order", bad);
    TU_CHECK(parts > 100 && same_ids(&whole, &parted), "encoding in %zu parts differs from the whole", parts);
    asa_token_buf_free(&whole);
    asa_token_buf_free(&parted);
    asa_encoder_free(e);
    free(txt);
}

static void test_training(void) {
    size_t clen;
    char *corpus = make_corpus(3 << 20, 1, &clen);  // 3 MB: several 1 MB chunks for the threads
    char *both = malloc(clen + strlen(BASE_TEXT) + 1);
    memcpy(both, corpus, clen);
    memcpy(both + clen, BASE_TEXT, strlen(BASE_TEXT));
    write_file(tmp_path("corpus.txt"), both, clen + strlen(BASE_TEXT));
    write_file(tmp_path("base.txt"), BASE_TEXT, strlen(BASE_TEXT));
    free(both);
    const char *files[] = {tmp_path("corpus.txt"), tmp_path("base.txt")};
    const char *f1[] = {files[0]};

    int nt0 = omp_get_max_threads();
    omp_set_num_threads(2);
    double t0 = now_s();
    asa_tokenizer *t = train_files(files, 2, 600, NULL);
    printf("test_tokenizer: trained 600 tokens on %.1f MB in %.2f s\n", (double)clen / 1e6, now_s() - t0);
    if (!t) {
        free(corpus);
        return;
    }
    TU_CHECK(asa_tokenizer_vocab_size(t) == 600 && asa_tokenizer_eot(t) == 599, "vocab %d, eot %d",
             asa_tokenizer_vocab_size(t), asa_tokenizer_eot(t));
    TU_CHECK(asa_tokenizer_num_merges(t) == 600 - 257, "%d merges", asa_tokenizer_num_merges(t));
    // The most frequent pieces of the corpus became single tokens, and no token joins a special token.
    TU_CHECK(asa_tokenizer_find(t, " the", 4) >= 256, "\" the\" is not a token");
    TU_CHECK(asa_tokenizer_find(t, "<|endoftext|>", 13) == 599, "the special token");
    // "endoftext" occurs in the corpus only inside special tokens, which training cuts out.
    int joined = 0;
    for (int id = 0; id < asa_tokenizer_vocab_size(t); id++) {
        size_t l;
        if (id == asa_tokenizer_eot(t)) continue;
        const char *b = asa_tokenizer_token(t, id, &l);
        for (size_t k = 0; k + 5 <= l; k++) joined |= memcmp(b + k, "endof", 5) == 0;
    }
    TU_CHECK(!joined, "a token was learnt from inside <|endoftext|>");

    // Determinism: again (with a progress callback, which must not change anything), and with one thread.
    progress_log plog = {0};
    asa_tokenizer_train_opts popts = {.progress = log_progress, .progress_ctx = &plog};
    asa_tokenizer *t2 = NULL;
    TU_CHECK(asa_tokenizer_train(files, 2, 600, &popts, &t2) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(plog.read_done == plog.read_total && plog.read_total == (int64_t)(clen + 2 * strlen(BASE_TEXT)) &&
                 plog.merge_done == 599 && plog.merge_total == 599 && plog.calls > 3,
             "progress: read %lld/%lld, merge %lld/%lld, %lld calls", (long long)plog.read_done,
             (long long)plog.read_total, (long long)plog.merge_done, (long long)plog.merge_total,
             (long long)plog.calls);
    omp_set_num_threads(1);
    asa_tokenizer *t1 = train_files(files, 2, 600, NULL);
    omp_set_num_threads(nt0);
    TU_CHECK(t2 && same_tokenizers(t, t2), "a second training run differs");
    TU_CHECK(t1 && same_tokenizers(t, t1), "training on one thread differs from two");
    asa_tokenizer_save(t, tmp_path("a.json"));
    if (t2) asa_tokenizer_save(t2, tmp_path("b.json"));
    TU_CHECK(files_equal(tmp_path("a.json"), tmp_path("b.json")), "saved files of two runs differ");
    asa_tokenizer_free(t1);
    asa_tokenizer_free(t2);

    // Stops early when the text runs out of pairs; and without a special token.
    asa_tokenizer *ts = train_files((const char *[]){tmp_path("base.txt")}, 1, 100000, "");
    TU_CHECK(ts && asa_tokenizer_vocab_size(ts) < 100000 && asa_tokenizer_eot(ts) == -1,
             "early stop: vocab %d", ts ? asa_tokenizer_vocab_size(ts) : -1);
    if (ts) {
        // Every piece of the training text is one token then (all its pairs were merged).
        asa_token_buf ids = {0};
        encode(ts, " quick", 6, 0, &ids);
        TU_CHECK(ids.n == 1, "\" quick\" after full training: %zu tokens", ids.n);
        asa_token_buf_free(&ids);
    }
    asa_tokenizer_free(ts);

    // Round trips of random bytes, with and without special-token recognition.
    asa_rng r;
    asa_rng_seed(&r, 3);
    asa_encoder *e = asa_encoder_new(t);
    char s[512];
    int bad = 0;
    for (int it = 0; it < 3000; it++) {
        size_t n = random_string(&r, s, sizeof s);
        if (!roundtrip(t, e, s, n, it & 1)) bad++;
    }
    TU_CHECK(bad == 0, "%d of 3000 random strings did not round trip", bad);
    TU_CHECK(roundtrip(t, e, corpus, clen, ASA_ENCODE_SPECIAL), "the training corpus does not round trip");
    TU_CHECK(roundtrip(t, e, "", 0, 0), "empty text");

    check_cut_points(t, corpus, clen);

    // Encoder cache: the same text twice through one encoder, and through fresh ones, gives the same ids.
    asa_token_buf x = {0}, y = {0};
    asa_encoder_encode(e, corpus, 100000, ASA_ENCODE_SPECIAL, &x);
    asa_encoder_encode(e, corpus, 100000, ASA_ENCODE_SPECIAL, &y);
    TU_CHECK(same_ids(&x, &y), "cached encoding differs");
    y.n = 0;
    asa_tokenizer_encode(t, corpus, 100000, ASA_ENCODE_SPECIAL, &y);
    TU_CHECK(same_ids(&x, &y), "fresh encoder differs");
    TU_CHECK(x.n < 100000 / 2, "100 kB of corpus in %zu tokens: merges do not compress", x.n);
    // Special tokens: one id when asked, plain text otherwise.
    encode(t, "a<|endoftext|>b", 15, ASA_ENCODE_SPECIAL, &x);
    TU_CHECK(x.n == 3 && x.ids[1] == 599, "special token split: %zu ids", x.n);
    encode(t, "a<|endoftext|>b", 15, 0, &x);
    int plain = x.n > 3;
    for (size_t i = 0; i < x.n; i++) plain &= x.ids[i] != 599;
    TU_CHECK(plain, "special token without the flag");

    // Decoding errors.
    char *out;
    size_t ol;
    int32_t bad_ids[] = {5, 600};
    TU_CHECK(asa_tokenizer_decode(t, bad_ids, 2, &out, &ol) == ASA_ERR && strstr(asa_err_msg(), "600"),
             "out-of-range id accepted: %s", asa_err_msg());
    bad_ids[1] = -1;
    TU_CHECK(asa_tokenizer_decode(t, bad_ids, 2, &out, &ol) == ASA_ERR, "negative id accepted");

    // Save -> load: the same vocabulary and the same encodings; saving again gives the same file.
    asa_tokenizer *tl = NULL;
    TU_CHECK(asa_tokenizer_load(tmp_path("a.json"), &tl) == ASA_OK, "load saved: %s", asa_err_msg());
    if (tl) {
        TU_CHECK(same_tokenizers(t, tl), "loaded tokenizer differs from the saved one");
        asa_encoder *el = asa_encoder_new(tl);
        asa_rng_seed(&r, 5);
        int diff = 0;
        for (int it = 0; it < 500; it++) {
            size_t n = random_string(&r, s, sizeof s);
            x.n = y.n = 0;
            asa_encoder_encode(e, s, n, ASA_ENCODE_SPECIAL, &x);
            asa_encoder_encode(el, s, n, ASA_ENCODE_SPECIAL, &y);
            diff += !(same_ids(&x, &y));
        }
        x.n = y.n = 0;
        asa_encoder_encode(e, corpus, clen, ASA_ENCODE_SPECIAL, &x);
        asa_encoder_encode(el, corpus, clen, ASA_ENCODE_SPECIAL, &y);
        diff += !(same_ids(&x, &y));
        TU_CHECK(diff == 0, "%d encodings differ after save -> load", diff);
        asa_encoder_free(el);
        TU_CHECK(asa_tokenizer_save(tl, tmp_path("c.json")) == ASA_OK, "%s", asa_err_msg());
        TU_CHECK(files_equal(tmp_path("a.json"), tmp_path("c.json")), "save of a loaded tokenizer differs");
    }
    asa_tokenizer_free(tl);
    asa_token_buf_free(&x);
    asa_token_buf_free(&y);
    asa_encoder_free(e);
    asa_tokenizer_free(t);

    // Training errors name the file or the problem.
    asa_tokenizer *none = NULL;
    const char *missing[] = {tmp_path("no-such-file.txt")};
    TU_CHECK(asa_tokenizer_train(missing, 1, 300, NULL, &none) == ASA_ERR && strstr(asa_err_msg(), "no-such-file") &&
                 none == NULL,
             "missing training file: %s", asa_err_msg());
    TU_CHECK(asa_tokenizer_train(f1, 1, 200, NULL, &none) == ASA_ERR && strstr(asa_err_msg(), "vocab size"),
             "vocab size 200 accepted: %s", asa_err_msg());
    write_file(tmp_path("empty.txt"), "", 0);
    const char *empty[] = {tmp_path("empty.txt")};
    TU_CHECK(asa_tokenizer_train(empty, 1, 300, NULL, &none) == ASA_ERR && strstr(asa_err_msg(), "no text"),
             "empty training file: %s", asa_err_msg());
    free(corpus);
}

// ---- GPT-2 vectors ----

// More GPT-2 encodings, made with gpt-tokenizer 4.0.0 (encoding r50k_base, special tokens as plain text):
// whitespace runs, contractions, digits, CRLF and Unicode spaces, which TestPlans.txt barely covers.
static const struct {
    const char *text;
    int32_t ids[20];
    int n;
} GPT2_EXTRA[] = {
    {"Hello   world", {15496, 220, 220, 995}, 4},
    {"a\n\n b", {64, 628, 275}, 3},
    {"  leading spaces", {220, 3756, 9029}, 3},
    {"trailing spaces  ", {9535, 4386, 9029, 220, 220}, 5},
    {"tabs\t\there\t", {8658, 82, 197, 197, 1456, 197}, 6},
    {"line one\r\nline two\r\n", {1370, 530, 201, 198, 1370, 734, 201, 198}, 8},
    {"don't I'll we're they've she'd I'm it's",
     {9099, 470, 314, 1183, 356, 821, 484, 1053, 673, 1549, 314, 1101, 340, 338}, 14},
    {"'S 'T 'RE DON'T", {6, 50, 705, 51, 705, 2200, 23917, 6, 51}, 9},
    {"12345 678901 3.14159", {10163, 2231, 718, 40401, 486, 513, 13, 1415, 19707}, 9},
    {"x    \n    y", {87, 220, 220, 220, 220, 198, 220, 220, 220, 331}, 10},
    {"\n\n\n", {628, 198}, 2},
    {"   ", {220, 220, 220}, 3},
    {"a  b   c    d", {64, 220, 275, 220, 220, 269, 220, 220, 220, 288}, 10},
    {"caf\xc3\xa9 na\xc3\xafve \xc3\xbc" "ber", {66, 1878, 2634, 41492, 6184, 120, 527}, 7},
    {"non\xc2\xa0" "breaking\xe3\x80\x80ideographic", {13159, 1849, 13395, 5099, 222, 485, 6826}, 7},
    {"emoji \xf0\x9f\x98\x80\xf0\x9f\x98\x80 ok", {368, 31370, 30325, 222, 47249, 222, 12876}, 7},
    {"<|endoftext|>", {27, 91, 437, 1659, 5239, 91, 29}, 7},
    {"====== ------ ******", {50155, 40103, 25998, 1174}, 4},
    {"foo_bar-baz.qux", {21943, 62, 5657, 12, 65, 1031, 13, 421, 87}, 9},
    {"    def f(x):\n        return x\n",
     {220, 220, 220, 825, 277, 7, 87, 2599, 198, 220, 220, 220, 220, 220, 220, 220, 1441, 2124, 198}, 19},
    {"\xe2\x80\xa8sep\xe2\x80\xa9", {447, 101, 325, 79, 447, 102}, 6},
    {"mixed123abc456", {76, 2966, 10163, 39305, 29228}, 5},
    {"\xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7 \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d",
     {25405, 26897, 148, 255, 39848, 12919, 14360, 102, 40010, 27072, 147, 251}, 12},
    {"\xc2\xbd \xe2\x85\x93 \xe2\x91\xa0 \xd9\xa1\xd9\xa2",
     {23141, 2343, 227, 241, 2343, 239, 254, 18923, 94, 149, 95}, 11},
    // U+180E is not White_Space (tiktoken's \s), though PCRE2's own \s matches it.
    {"( \xe1\xa0\x8egl", {7, 28053, 254, 236, 4743}, 5},
    {"a\xe1\xa0\x8e\xe1\xa0\x8e b", {64, 157, 254, 236, 157, 254, 236, 275}, 8},
    {"x\xe2\x80\x83\xe2\x80\x83y \xe3\x80\x80\xe3\x80\x80z",
     {87, 447, 225, 447, 225, 88, 220, 5099, 222, 5099, 222, 89}, 12},
    {"v\vt\f \xe2\x80\xa9" "end", {85, 199, 83, 200, 220, 447, 102, 437}, 8},
};

static void test_gpt2(void) {
    const char *vocab = "tests/.data/r50k_base.tiktoken", *plans = "tests/.data/TestPlans.txt";
    if (access(vocab, R_OK) != 0 || access(plans, R_OK) != 0) {
        printf("test_tokenizer: GPT-2 vectors SKIPPED: run scripts/fetch_test_data.sh\n");
        return;
    }
    asa_tokenizer *t;
    double t0 = now_s();
    int rc = asa_tokenizer_load_tiktoken(vocab, &t);
    TU_CHECK(rc == ASA_OK, "%s", asa_err_msg());
    if (rc) return;
    printf("test_tokenizer: r50k_base loaded in %.2f s, %d merges\n", now_s() - t0, asa_tokenizer_num_merges(t));
    TU_CHECK(asa_tokenizer_vocab_size(t) == 50257 && asa_tokenizer_eot(t) == 50256, "vocab %d eot %d",
             asa_tokenizer_vocab_size(t), asa_tokenizer_eot(t));

    // The same vocabulary through tokenizer.json: save, load, and every vector again.
    asa_tokenizer *tj = NULL;
    rc = asa_tokenizer_save(t, tmp_path("gpt2.json"));
    TU_CHECK(rc == ASA_OK, "save gpt2: %s", asa_err_msg());
    if (rc == ASA_OK) {
        rc = asa_tokenizer_load(tmp_path("gpt2.json"), &tj);
        TU_CHECK(rc == ASA_OK, "load gpt2 json: %s", asa_err_msg());
        TU_CHECK(tj && same_tokenizers(t, tj), "tokenizer.json round trip of r50k changed the vocabulary");
    }

    char *data;
    size_t n;
    if (asa_file_read_all(plans, 1 << 24, &data, &n)) {
        TU_CHECK(0, "%s", asa_err_msg());
        asa_tokenizer_free(t);
        asa_tokenizer_free(tj);
        return;
    }
    // Blocks "EncodingName: x\nSample: text\nEncoded: [ids]" separated by blank lines.
    int n_cases = 0;
    asa_token_buf got = {0}, want = {0};
    for (char *blk = data; blk && *blk;) {
        char *end = strstr(blk, "\n\n");
        if (end) *end = 0;
        char *name = blk, *sample = strchr(name, '\n'), *enc = NULL;
        if (sample) {
            *sample++ = 0;
            enc = strchr(sample, '\n');
            if (enc) *enc++ = 0;
        }
        blk = end ? end + 2 : NULL;
        if (!enc || strcmp(name, "EncodingName: r50k_base") != 0) continue;
        if (strncmp(sample, "Sample: ", 8) != 0 || strncmp(enc, "Encoded: [", 10) != 0) continue;
        sample += 8;
        want.n = 0;
        for (char *p = enc + 10; *p && *p != ']';) {
            char *q;
            long v = strtol(p, &q, 10);
            if (q == p) break;
            asa_token_buf_push(&want, (int32_t)v);
            p = q;
            while (*p == ',' || *p == ' ') p++;
        }
        size_t sl = strlen(sample);
        n_cases++;
        encode(t, sample, sl, 0, &got);
        int same = same_ids(&got, &want);
        TU_CHECK(same, "r50k vector %d (\"%.40s\"): %zu ids, expected %zu", n_cases, sample, got.n, want.n);
        char *back;
        size_t bl;
        TU_CHECK(asa_tokenizer_decode(t, want.ids, want.n, &back, &bl) == ASA_OK && bl == sl &&
                     (sl == 0 || memcmp(back, sample, sl) == 0),
                 "r50k vector %d: decode differs", n_cases);
        free(back);
        if (tj) {
            encode(tj, sample, sl, 0, &got);
            TU_CHECK(same_ids(&got, &want),
                     "r50k vector %d through tokenizer.json differs", n_cases);
        }
    }
    free(data);
    TU_CHECK(n_cases >= 60, "only %d r50k_base vectors found in %s", n_cases, plans);
    for (size_t i = 0; i < sizeof GPT2_EXTRA / sizeof GPT2_EXTRA[0]; i++) {
        want.n = 0;
        for (int k = 0; k < GPT2_EXTRA[i].n; k++) asa_token_buf_push(&want, GPT2_EXTRA[i].ids[k]);
        encode(t, GPT2_EXTRA[i].text, strlen(GPT2_EXTRA[i].text), 0, &got);
        TU_CHECK(same_ids(&got, &want), "GPT-2 extra vector %zu (\"%s\"): %zu ids, expected %zu", i,
                 GPT2_EXTRA[i].text, got.n, want.n);
        n_cases++;
    }
    printf("test_tokenizer: %d GPT-2 vectors compared\n", n_cases);

    size_t clen;
    char *corpus = make_corpus(1 << 16, 2, &clen);
    check_cut_points(t, corpus, clen);
    free(corpus);

    // Special tokens: recognised only when asked.
    const char *s = "Hello<|endoftext|> world";
    encode(t, s, strlen(s), ASA_ENCODE_SPECIAL, &got);
    int32_t with[] = {15496, 50256, 995};
    TU_CHECK(got.n == 3 && memcmp(got.ids, with, sizeof with) == 0, "special token: %zu ids", got.n);
    encode(t, s, strlen(s), 0, &got);
    int has_eot = 0;
    for (size_t i = 0; i < got.n; i++) has_eot |= got.ids[i] == 50256;
    TU_CHECK(!has_eot && got.n > 3, "<|endoftext|> as plain text must not give the special id");

    // Long runs (a quadratic merge loop would show here) and random bytes round trip through GPT-2 too.
    size_t big = 1 << 20;
    char *run = malloc(big);
    asa_rng r;
    asa_rng_seed(&r, 7);
    for (size_t i = 0; i < big; i++) run[i] = i < big / 2 ? ' ' : "=-"[asa_rng_below(&r, 2)];
    asa_encoder *e = asa_encoder_new(t);
    t0 = now_s();
    TU_CHECK(roundtrip(t, e, run, big, 0), "1 MB runs of spaces and punctuation");
    double dt = now_s() - t0;
    TU_CHECK(dt < 5, "1 MB of long runs took %.1f s", dt);
    for (size_t i = 0; i < 4096; i++) run[i] = (char)asa_rng_below(&r, 256);
    TU_CHECK(roundtrip(t, e, run, 4096, 0), "random bytes through r50k");
    asa_encoder_free(e);
    free(run);
    asa_token_buf_free(&got);
    asa_token_buf_free(&want);
    asa_tokenizer_free(t);
    asa_tokenizer_free(tj);
}

// ---- training against a plain reference ----

// The reference: whole pair counts recomputed at every merge, no incremental updates, no heap.
typedef struct {
    const char **p;
    size_t *n;
    size_t len, cap;
} piece_list;

static int collect_piece(void *ctx, const char *p, size_t n) {
    piece_list *l = ctx;
    if (l->len == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->p = realloc(l->p, l->cap * sizeof *l->p);
        l->n = realloc(l->n, l->cap * sizeof *l->n);
    }
    l->p[l->len] = p;
    l->n[l->len++] = n;
    return ASA_OK;
}

static void test_training_reference(void) {
    size_t clen;
    char *corpus = make_corpus(40000, 9, &clen);
    write_file(tmp_path("ref.txt"), corpus, clen);
    const char *files[] = {tmp_path("ref.txt")};
    const int vocab = 256 + 250;
    asa_tokenizer *t = train_files(files, 1, vocab, "");
    if (!t) {
        free(corpus);
        return;
    }
    // Pieces from the library's own pre-tokenizer (its regex is tested on the GPT-2 vectors).
    piece_list pl = {0};
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->re, NULL);
    text_pieces(t, md, corpus, clen, collect_piece, &pl);
    pcre2_match_data_free(md);
    size_t total = 0;
    for (size_t i = 0; i < pl.len; i++) total += pl.n[i];
    TU_CHECK(total == clen, "pieces cover %zu of %zu bytes", total, clen);

    // Words: every piece occurrence separately (counting them is the library's business, not the reference's).
    int32_t *sym = malloc(clen * sizeof *sym);
    size_t *start = malloc((pl.len + 1) * sizeof *start), *wlen = malloc(pl.len * sizeof *wlen), off = 0;
    for (size_t w = 0; w < pl.len; w++) {
        start[w] = off;
        wlen[w] = pl.n[w];
        for (size_t i = 0; i < pl.n[w]; i++) sym[off + i] = text_byte_order((unsigned char)pl.p[w][i]);
        off += pl.n[w];
    }
    char *bytes[vocab];
    size_t blen[vocab];
    int ntok = 256;
    for (int b = 0; b < 256; b++) {
        bytes[text_byte_order(b)] = malloc(1);
        bytes[text_byte_order(b)][0] = (char)b;
        blen[text_byte_order(b)] = 1;
    }
    int64_t *cnt = malloc((size_t)vocab * vocab * sizeof *cnt);
    while (ntok < vocab) {
        memset(cnt, 0, (size_t)vocab * vocab * sizeof *cnt);
        for (size_t w = 0; w < pl.len; w++)
            for (size_t i = 0; i + 1 < wlen[w]; i++) cnt[sym[start[w] + i] * vocab + sym[start[w] + i + 1]]++;
        int ba = -1, bb = -1;
        int64_t best = 0;
        for (int a = 0; a < ntok; a++)
            for (int b = 0; b < ntok; b++)
                if (cnt[a * vocab + b] > best) best = cnt[a * vocab + b], ba = a, bb = b;
        if (best == 0) break;
        size_t n = blen[ba] + blen[bb];
        char *nb = malloc(n);
        memcpy(nb, bytes[ba], blen[ba]);
        memcpy(nb + blen[ba], bytes[bb], blen[bb]);
        int x = -1;
        for (int k = 0; k < ntok && x < 0; k++)
            if (blen[k] == n && memcmp(bytes[k], nb, n) == 0) x = k;
        if (x < 0) {
            x = ntok++;
            bytes[x] = nb;
            blen[x] = n;
        } else {
            free(nb);
        }
        for (size_t w = 0; w < pl.len; w++) {
            int32_t *s = sym + start[w];
            size_t o = 0;
            for (size_t i = 0; i < wlen[w];) {
                if (i + 1 < wlen[w] && s[i] == ba && s[i + 1] == bb) s[o++] = x, i += 2;
                else s[o++] = s[i++];
            }
            wlen[w] = o;
        }
    }
    TU_CHECK(ntok == asa_tokenizer_vocab_size(t), "reference made %d tokens, the library %d", ntok,
             asa_tokenizer_vocab_size(t));
    int first_diff = -1;
    for (int id = 0; id < ntok && id < asa_tokenizer_vocab_size(t) && first_diff < 0; id++) {
        size_t l;
        const char *b = asa_tokenizer_token(t, id, &l);
        if (l != blen[id] || memcmp(b, bytes[id], l) != 0) first_diff = id;
    }
    TU_CHECK(first_diff < 0, "token %d differs from the reference trainer's", first_diff);
    for (int k = 0; k < ntok; k++) free(bytes[k]);
    free(cnt);
    free(sym);
    free(start);
    free(wlen);
    free(pl.p);
    free(pl.n);
    free(corpus);
    asa_tokenizer_free(t);
}

// ---- malformed files ----

// The valid base for malformed variants: the byte tokens, "ab", " ab" and <|endoftext|>.
static cJSON *base_json(void) {
    asa_tokenizer *t = NULL;
    write_file(tmp_path("tiny.txt"), "abc abc abc ab ab", 17);
    const char *f[] = {tmp_path("tiny.txt")};
    asa_tokenizer_train(f, 1, 259, NULL, &t);
    if (!t || asa_tokenizer_save(t, tmp_path("tiny.json"))) {
        fprintf(stderr, "cannot make the base tokenizer: %s\n", asa_err_msg());
        exit(2);
    }
    asa_tokenizer_free(t);
    char *data;
    size_t n;
    asa_file_read_all(tmp_path("tiny.json"), 1 << 24, &data, &n);
    cJSON *j = cJSON_Parse(data);
    free(data);
    return j;
}

// Loading text must fail with a message that names the file and contains each given substring.
static void expect_refused(const char *what, const char *text, ...) {
    const char *path = tmp_path("bad.json");
    write_file(path, text, strlen(text));
    asa_tokenizer *t = (asa_tokenizer *)&t;  // must be reset to NULL
    asa_err_clear();
    int rc = asa_tokenizer_load(path, &t);
    TU_CHECK(rc == ASA_ERR && t == NULL, "%s: accepted", what);
    TU_CHECK(strstr(asa_err_msg(), path) != NULL, "%s: message does not name the file: %s", what, asa_err_msg());
    va_list ap;
    va_start(ap, text);
    const char *sub;
    while ((sub = va_arg(ap, const char *)))
        TU_CHECK(strstr(asa_err_msg(), sub) != NULL, "%s: message lacks '%s': %s", what, sub, asa_err_msg());
    va_end(ap);
    if (rc == ASA_OK) asa_tokenizer_free(t);
}

static void expect_refused_json(const char *what, cJSON *j, const char *sub) {
    char *s = cJSON_Print(j);
    expect_refused(what, s, sub, NULL);
    cJSON_free(s);
    cJSON_Delete(j);
}

static cJSON *model_of(cJSON *j) { return cJSON_GetObjectItemCaseSensitive(j, "model"); }

static void test_malformed(void) {
    cJSON *base = base_json();
    {
        char *s = cJSON_Print(base);
        write_file(tmp_path("ok.json"), s, strlen(s));
        cJSON_free(s);
        asa_tokenizer *t = NULL;
        TU_CHECK(asa_tokenizer_load(tmp_path("ok.json"), &t) == ASA_OK && asa_tokenizer_vocab_size(t) == 259,
                 "the base of the malformed files must load: %s", asa_err_msg());
        asa_tokenizer_free(t);
    }
    expect_refused("bad JSON", "{\"model\": {\"type\": \"BPE\", ", "not valid JSON", NULL);
    expect_refused("not an object", "[1, 2]", "object", NULL);
    expect_refused("empty file", "", "not valid JSON", NULL);
    expect_refused("non-string vocab key", "{\"model\": {\"type\": \"BPE\", \"vocab\": {1: 0}}}", "not valid JSON",
                   NULL);

    cJSON *j = cJSON_Duplicate(base, 1);
    cJSON_ReplaceItemInObject(model_of(j), "type", cJSON_CreateString("WordPiece"));
    expect_refused_json("wrong model type", j, "WordPiece");

    j = cJSON_Duplicate(base, 1);
    cJSON_DeleteItemFromObject(j, "model");
    expect_refused_json("no model", j, "'model'");

    j = cJSON_Duplicate(base, 1);
    cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(j), "merges"), cJSON_CreateString("a zz"));
    expect_refused_json("merge of an unknown token", j, "\"zz\" is not in the vocabulary");

    j = cJSON_Duplicate(base, 1);
    cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(j), "merges"), cJSON_CreateString("b c"));
    expect_refused_json("merge whose result is not a token", j, "merged token is not in the vocabulary");

    j = cJSON_Duplicate(base, 1);
    cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(j), "merges"), cJSON_CreateString("abc"));
    expect_refused_json("merge without a space", j, "merges[2]");

    j = cJSON_Duplicate(base, 1);
    cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(j), "merges"), cJSON_CreateNumber(3));
    expect_refused_json("merge that is a number", j, "merges[2]");

    j = cJSON_Duplicate(base, 1);
    cJSON_AddNumberToObject(cJSON_GetObjectItem(model_of(j), "vocab"), "zz", 5);
    expect_refused_json("duplicate id", j, "id 5");

    j = cJSON_Duplicate(base, 1);
    cJSON_AddNumberToObject(cJSON_GetObjectItem(model_of(j), "vocab"), "zz", 1000);
    expect_refused_json("gap in the ids", j, "contiguous");

    // Found by fuzz_tokenizer_json (fuzz/regressions/fuzz_tokenizer_json/oom-large-id): one large id made
    // the loader allocate tables for that many tokens (gigabytes from a small file) before finding the gap.
    j = cJSON_Duplicate(base, 1);
    cJSON_AddNumberToObject(cJSON_GetObjectItem(model_of(j), "vocab"), "zz", (1 << 30) - 1);
    expect_refused_json("one id near the limit", j, "id 1073741823 is given");

    j = cJSON_Duplicate(base, 1);
    cJSON_AddStringToObject(cJSON_GetObjectItem(model_of(j), "vocab"), "zz", "7");
    expect_refused_json("id that is a string", j, "\"zz\"");

    j = cJSON_Duplicate(base, 1);
    cJSON_ReplaceItemInObject(model_of(j), "vocab", cJSON_CreateArray());
    expect_refused_json("vocab that is an array", j, "model.vocab");

    j = cJSON_Duplicate(base, 1);
    cJSON *v = cJSON_GetObjectItem(model_of(j), "vocab");
    int a_id = cJSON_GetObjectItem(v, "A")->valueint;
    cJSON_DeleteItemFromObject(v, "A");
    cJSON_AddNumberToObject(v, "AA", a_id);
    expect_refused_json("missing byte token", j, "byte 0x41");

    j = cJSON_Duplicate(base, 1);
    cJSON_AddNumberToObject(cJSON_GetObjectItem(model_of(j), "vocab"), "a b", 259);
    expect_refused_json("vocab string outside the byte-level alphabet", j, "byte-level");

    j = cJSON_Duplicate(base, 1);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "pre_tokenizer"), "type", cJSON_CreateString("Whitespace"));
    expect_refused_json("pre-tokenizer not ByteLevel", j, "pre_tokenizer");

    j = cJSON_Duplicate(base, 1);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "pre_tokenizer"), "add_prefix_space", cJSON_CreateTrue());
    expect_refused_json("prefix space", j, "add_prefix_space");

    j = cJSON_Duplicate(base, 1);
    cJSON_ReplaceItemInObject(j, "decoder", cJSON_CreateNull());
    expect_refused_json("no decoder", j, "decoder");

    j = cJSON_Duplicate(base, 1);
    cJSON_ReplaceItemInObject(j, "normalizer", cJSON_CreateObject());
    expect_refused_json("normalizer", j, "normalizer");

    j = cJSON_Duplicate(base, 1);
    cJSON *eot = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "added_tokens"), 0);
    cJSON_ReplaceItemInObject(eot, "content", cJSON_CreateString("<|other|>"));
    expect_refused_json("added token differs from the vocab entry", j, "added_tokens");

    // Merges as ["a", "b"] pairs load like "a b" strings.
    j = cJSON_Duplicate(base, 1);
    cJSON *ms = cJSON_GetObjectItem(model_of(j), "merges"), *pairs = cJSON_CreateArray();
    for (cJSON *m = ms->child; m; m = m->next) {
        char *sp = strchr(m->valuestring, ' ');
        *sp = 0;
        const char *two[] = {m->valuestring, sp + 1};
        cJSON_AddItemToArray(pairs, cJSON_CreateStringArray(two, 2));
    }
    cJSON_ReplaceItemInObject(model_of(j), "merges", pairs);
    char *s = cJSON_Print(j);
    write_file(tmp_path("pairs.json"), s, strlen(s));
    cJSON_free(s);
    cJSON_Delete(j);
    asa_tokenizer *a = NULL, *b = NULL;
    TU_CHECK(asa_tokenizer_load(tmp_path("pairs.json"), &a) == ASA_OK, "pair merges refused: %s", asa_err_msg());
    TU_CHECK(asa_tokenizer_load(tmp_path("ok.json"), &b) == ASA_OK, "%s", asa_err_msg());
    if (a && b) {
        asa_token_buf x = {0}, y = {0};
        encode(a, "abc abcab", 9, 0, &x);
        encode(b, "abc abcab", 9, 0, &y);
        // "abc" -> ab c; " abcab" -> " ab" c ab
        TU_CHECK(same_ids(&x, &y) && x.n == 5, "pair merges encode differently");
        asa_token_buf_free(&x);
        asa_token_buf_free(&y);
    }
    asa_tokenizer_free(a);
    asa_tokenizer_free(b);
    cJSON_Delete(base);

    asa_tokenizer *t = (asa_tokenizer *)&t;
    TU_CHECK(asa_tokenizer_load(tmp_path("missing.json"), &t) == ASA_ERR && t == NULL &&
                 strstr(asa_err_msg(), "missing.json"),
             "missing file: %s", asa_err_msg());

    // tiktoken files.
    struct {
        const char *what, *text, *sub;
    } tt[] = {
        {"bad base64", "QQ== 0\nQg 1\n", "line 2"},
        {"rank out of range", "QQ== 0\nQg== 7\n", "rank 7"},
        {"repeated rank", "QQ== 0\nQg== 0\n", "appears twice"},
        {"no rank", "QQ==\n", "line 1"},
        {"empty", "", "empty"},
        {"missing bytes", "QQ== 0\nQg== 1\n", "byte 0x00"},
    };
    for (size_t i = 0; i < sizeof tt / sizeof tt[0]; i++) {
        const char *path = tmp_path("bad.tiktoken");
        write_file(path, tt[i].text, strlen(tt[i].text));
        t = (asa_tokenizer *)&t;
        int rc = asa_tokenizer_load_tiktoken(path, &t);
        TU_CHECK(rc == ASA_ERR && t == NULL && strstr(asa_err_msg(), path) && strstr(asa_err_msg(), tt[i].sub),
                 "tiktoken %s: %s", tt[i].what, asa_err_msg());
    }

    // Found by fuzz_tiktoken (fuzz/regressions/fuzz_tiktoken/bytes-only): a file of the 256 byte tokens and
    // nothing else implies no merges, and the empty merge list went to qsort as NULL (undefined behaviour
    // that a sanitizer build reports).
    {
        static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        char lines[256 * 24], *w = lines;
        for (int c = 0; c < 256; c++) w += sprintf(w, "%c%c== %d\n", b64[c >> 2], b64[(c & 3) << 4], c);
        const char *path = tmp_path("bytes.tiktoken");
        write_file(path, lines, (size_t)(w - lines));
        t = NULL;
        TU_CHECK(asa_tokenizer_load_tiktoken(path, &t) == ASA_OK, "tiktoken of bytes only: %s", asa_err_msg());
        if (t) {
            TU_CHECK(asa_tokenizer_vocab_size(t) == 257 && asa_tokenizer_num_merges(t) == 0 &&
                         asa_tokenizer_eot(t) == 256,
                     "tiktoken of bytes only: %d tokens, %d merges", asa_tokenizer_vocab_size(t),
                     asa_tokenizer_num_merges(t));
            asa_tokenizer_free(t);
        }
    }
}

// ---- size limits on untrusted files ----

// Writes head, then n copies of item (the last without its trailing comma, if any), then tail.
static void write_repeated(const char *path, const char *head, const char *item, size_t n, const char *tail) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    size_t il = strlen(item);
    fputs(head, f);
    for (size_t i = 0; i < n; i++) fwrite(item, 1, i + 1 < n || item[il - 1] != ',' ? il : il - 1, f);
    fputs(tail, f);
    if (fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static long peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

// Each refused with a message naming the file and the limit, before anything of the claimed size is built.
// Runs first, so that the peak memory of the process is that of these loads: the files are tens of MB, and
// the refusals must not cost much more than reading them.
static void test_limits(void) {
    asa_tokenizer *t = NULL;
    const char *p = tmp_path("10M-merges.json");
    write_repeated(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [", "\"a a\",", 10000000,
                   "]}}\n");
    TU_CHECK(asa_tokenizer_load(p, &t) == ASA_ERR && t == NULL, "10M merges: accepted");
    TU_CHECK(strstr(asa_err_msg(), p) && strstr(asa_err_msg(), "more than 2097152 elements") &&
                 strstr(asa_err_msg(), "280,147 merges"),
             "10M merges: %s", asa_err_msg());
    unlink(p);
    // 2^21 pairs of 4 numbers: no array is too long, but the values (~10.5M) are too many.
    p = tmp_path("many-values.json");
    write_repeated(p, "{\"model\": {\"merges\": [", "[0,0,0,0],", ((size_t)1 << 21) - 1, "]}}\n");
    TU_CHECK(asa_tokenizer_load(p, &t) == ASA_ERR && strstr(asa_err_msg(), p) &&
                 strstr(asa_err_msg(), "more than 8388608 JSON values"),
             "8M values: %s", asa_err_msg());
    unlink(p);
    p = tmp_path("10M-ranks.tiktoken");
    write_repeated(p, "", "QQ== 0\n", 10000000, "");
    TU_CHECK(asa_tokenizer_load_tiktoken(p, &t) == ASA_ERR && t == NULL && strstr(asa_err_msg(), p) &&
                 strstr(asa_err_msg(), "10000000 lines, more than the limit of 2097152 ranks"),
             "10M ranks: %s", asa_err_msg());
    unlink(p);
    long rss = peak_rss_mb();
    TU_CHECK(rss < 600, "refusing 60-70 MB files took %ld MB", rss);
    // Nested 10,000 deep: cJSON's limit refuses it; the message says so rather than "not valid JSON".
    p = tmp_path("deep.json");
    FILE *f = fopen(p, "wb");
    fputs("{\"model\": ", f);
    for (int i = 0; i < 10000; i++) fputc('[', f);
    for (int i = 0; i < 10000; i++) fputc(']', f);
    fputs("}\n", f);
    fclose(f);
    TU_CHECK(asa_tokenizer_load(p, &t) == ASA_ERR && strstr(asa_err_msg(), p) &&
                 strstr(asa_err_msg(), "JSON nested more than 1000 levels deep (at line 1)"),
             "10,000 deep: %s", asa_err_msg());
}

// A 1 MB vocabulary string that is not byte-level: the message quotes it, cut short by the fixed-size
// message buffer (no overflow, and the file is still named).
static void test_long_token(void) {
    cJSON *j = base_json();
    char *tok = malloc((1 << 20) + 1);
    memset(tok, 1, 1 << 20);
    tok[1 << 20] = 0;
    cJSON *vocab = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "model"), "vocab");
    cJSON_AddNumberToObject(vocab, tok, cJSON_GetArraySize(vocab));
    free(tok);
    char *s = cJSON_Print(j);
    const char *p = tmp_path("long-token.json");
    write_file(p, s, strlen(s));
    cJSON_free(s);
    cJSON_Delete(j);
    asa_tokenizer *t = NULL;
    TU_CHECK(asa_tokenizer_load(p, &t) == ASA_ERR && strstr(asa_err_msg(), p) &&
                 strstr(asa_err_msg(), "is not a byte-level string") == NULL && strlen(asa_err_msg()) == 1023,
             "long token: %.200s", asa_err_msg());
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/asa_test_tokenizer.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_limits();
    test_long_token();
    test_malformed();
    test_training();
    test_training_reference();
    test_gpt2();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return tu_finish("test_tokenizer");
}
