// The tokenizer object: building it (tokens, checks, merges, the compiled pre-tokenizer regex),
// accessors, decoding, GPT-2's byte <-> unicode mapping, and loading tiktoken rank files.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "text/text_internal.h"

// ---- GPT-2 byte <-> unicode mapping ----

static int byte_printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

// Index of a non-printable byte among the 68 non-printable bytes (0..32, 127..160, 173).
static int byte_unprintable_index(int b) { return b <= 32 ? b : b <= 160 ? 33 + (b - 127) : 67; }

uint32_t text_byte_char(int b) { return byte_printable(b) ? (uint32_t)b : 256u + (uint32_t)byte_unprintable_index(b); }

int text_char_byte(uint32_t cp) {
    if (cp < 256) return byte_printable((int)cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    int n = (int)cp - 256;
    return n < 33 ? n : n < 67 ? 127 + (n - 33) : 173;
}

int text_byte_order(int b) {
    if (!byte_printable(b)) return 188 + byte_unprintable_index(b);
    return b <= 126 ? b - 33 : b <= 172 ? 94 + (b - 161) : 106 + (b - 174);
}

// ---- building ----

asa_tokenizer *tok_new(int n_vocab) {
    ASA_CHECK(n_vocab > 0);
    asa_tokenizer *t = asa_calloc(1, sizeof *t);
    t->n_vocab = n_vocab;
    t->tok_off = asa_malloc((size_t)n_vocab * sizeof *t->tok_off);
    t->tok_len = asa_malloc((size_t)n_vocab * sizeof *t->tok_len);
    t->special = asa_calloc((size_t)n_vocab, 1);
    for (int i = 0; i < n_vocab; i++) t->tok_off[i] = SIZE_MAX;  // not yet set
    t->eot = -1;
    return t;
}

int tok_set(asa_tokenizer *t, int id, const char *bytes, size_t len, int special, const char *src) {
    ASA_CHECK(id >= 0 && id < t->n_vocab);
    if (t->tok_off[id] != SIZE_MAX) return asa_err_set("%s: id %d is given to two tokens", src, id);
    if (len == 0) return asa_err_set("%s: token %d is empty", src, id);
    if (len > UINT32_MAX) return asa_err_set("%s: token %d is too long", src, id);
    if (t->blob_len + len > t->blob_cap) {
        size_t cap = t->blob_cap ? t->blob_cap : 1 << 16;
        while (cap < t->blob_len + len) cap *= 2;
        char *b = realloc(t->blob, cap);
        if (!b) asa_fatal("out of memory for token bytes (%zu bytes)", cap);
        t->blob = b;
        t->blob_cap = cap;
    }
    memcpy(t->blob + t->blob_len, bytes, len);
    t->tok_off[id] = t->blob_len;
    t->tok_len[id] = (uint32_t)len;
    t->special[id] = special ? 1 : 0;
    t->blob_len += len;
    return ASA_OK;
}

static int tok_compile_regex(asa_tokenizer *t) {
    int err;
    PCRE2_SIZE erroff;
    t->re = pcre2_compile((PCRE2_SPTR)TEXT_GPT2_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &erroff,
                          NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        asa_fatal("PCRE2 rejects the GPT-2 pattern at offset %zu: %s", (size_t)erroff, (const char *)msg);
    }
    // Without JIT (a PCRE2 built without it) matching is slower but the same.
    t->re_jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    return ASA_OK;
}

int tok_finish(asa_tokenizer *t, const char *src) {
    for (int i = 0; i < t->n_vocab; i++)
        if (t->tok_off[i] == SIZE_MAX)
            return asa_err_set("%s: ids must be contiguous from 0, but id %d has no token (%d tokens)", src, i,
                               t->n_vocab);
    strmap_init(&t->vocab, (size_t)t->n_vocab);
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    t->special_ids = asa_malloc((size_t)t->n_vocab * sizeof *t->special_ids);
    for (int i = 0; i < t->n_vocab; i++) {
        const char *b = t->blob + t->tok_off[i];
        size_t n = t->tok_len[i];
        if (t->special[i]) {
            t->special_ids[t->n_special++] = i;
            if (n == 13 && memcmp(b, "<|endoftext|>", 13) == 0) t->eot = i;
            continue;
        }
        int64_t *v = strmap_put(&t->vocab, b, n, text_hash(b, n), i);
        if (*v != i) return asa_err_set("%s: tokens %d and %d have the same bytes", src, (int)*v, i);
        if (n == 1) t->byte_id[(unsigned char)b[0]] = i;
    }
    // Longest first, so that where two special tokens start at the same place the longer one wins.
    for (int i = 1; i < t->n_special; i++)
        for (int j = i; j > 0 && t->tok_len[t->special_ids[j]] > t->tok_len[t->special_ids[j - 1]]; j--) {
            int tmp = t->special_ids[j];
            t->special_ids[j] = t->special_ids[j - 1];
            t->special_ids[j - 1] = tmp;
        }
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] < 0)
            return asa_err_set("%s: the vocabulary has no token for the byte 0x%02x (a byte-level BPE needs all 256)",
                               src, b);
    u64map_init(&t->pair_merge, 1024);
    return tok_compile_regex(t);
}

int tok_add_merge(asa_tokenizer *t, int left, int right, int rank, const char *src, const char *what) {
    ASA_CHECK(left >= 0 && left < t->n_vocab && right >= 0 && right < t->n_vocab);
    if (t->special[left] || t->special[right])
        return asa_err_set("%s: %s: merges a special token", src, what);
    size_t la = t->tok_len[left], lb = t->tok_len[right];
    char stack[256], *buf = la + lb <= sizeof stack ? stack : asa_malloc(la + lb);
    memcpy(buf, t->blob + t->tok_off[left], la);
    memcpy(buf + la, t->blob + t->tok_off[right], lb);
    int64_t *id = strmap_get(&t->vocab, buf, la + lb, text_hash(buf, la + lb));
    if (buf != stack) free(buf);
    if (!id) return asa_err_set("%s: %s: the merged token is not in the vocabulary", src, what);
    int64_t *m = u64map_put(&t->pair_merge, text_pair(left, right), -1);
    if (*m >= 0) return asa_err_set("%s: %s: the same pair is merged twice", src, what);
    *m = t->n_merges;
    if (t->n_merges == t->merges_cap) {
        t->merges_cap = t->merges_cap ? 2 * t->merges_cap : 1024;
        bpe_merge *mm = realloc(t->merges, (size_t)t->merges_cap * sizeof *mm);
        if (!mm) asa_fatal("out of memory for %d merges", t->merges_cap);
        t->merges = mm;
    }
    t->merges[t->n_merges++] = (bpe_merge){left, right, (int32_t)*id, rank};
    return ASA_OK;
}

void asa_tokenizer_free(asa_tokenizer *t) {
    if (!t) return;
    free(t->tok_off);
    free(t->tok_len);
    free(t->blob);
    free(t->special);
    free(t->special_ids);
    strmap_free(&t->vocab);
    free(t->merges);
    if (t->pair_merge.keys) u64map_free(&t->pair_merge);
    if (t->re) pcre2_code_free(t->re);
    free(t);
}

// ---- accessors and decoding ----

int asa_tokenizer_vocab_size(const asa_tokenizer *t) { return t->n_vocab; }
int asa_tokenizer_num_merges(const asa_tokenizer *t) { return t->n_merges; }
int asa_tokenizer_eot(const asa_tokenizer *t) { return t->eot; }

const char *asa_tokenizer_token(const asa_tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    *len = t->tok_len[id];
    return t->blob + t->tok_off[id];
}

int asa_tokenizer_find(const asa_tokenizer *t, const char *bytes, size_t len) {
    int64_t *v = strmap_get(&t->vocab, bytes, len, text_hash(bytes, len));
    if (v) return (int)*v;
    for (int i = 0; i < t->n_special; i++) {
        int id = t->special_ids[i];
        if (t->tok_len[id] == len && memcmp(t->blob + t->tok_off[id], bytes, len) == 0) return id;
    }
    return -1;
}

int asa_tokenizer_decode(const asa_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return asa_err_set("decode: token id %d at position %zu is out of range (vocabulary of %d)", (int)ids[i],
                               i, t->n_vocab);
        total += t->tok_len[ids[i]];
    }
    char *out = asa_malloc(total + 1), *p = out;
    for (size_t i = 0; i < n; i++) {
        memcpy(p, t->blob + t->tok_off[ids[i]], t->tok_len[ids[i]]);
        p += t->tok_len[ids[i]];
    }
    *p = 0;
    *text = out;
    *len = total;
    return ASA_OK;
}

void asa_token_buf_push(asa_token_buf *b, int32_t id) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        int32_t *ids = realloc(b->ids, cap * sizeof *ids);
        if (!ids) asa_fatal("out of memory for %zu token ids", cap);
        b->ids = ids;
        b->cap = cap;
    }
    b->ids[b->n++] = id;
}

void asa_token_buf_free(asa_token_buf *b) {
    free(b->ids);
    b->ids = NULL;
    b->n = b->cap = 0;
}

// ---- tiktoken rank files ----

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

// Decodes standard base64 with padding into out (capacity >= 3 * n / 4); returns the length or -1.
static long b64_decode(const char *s, size_t n, unsigned char *out) {
    if (n == 0 || n % 4) return -1;
    size_t pad = s[n - 1] == '=' ? (s[n - 2] == '=' ? 2 : 1) : 0;
    long len = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        for (size_t k = 0; k < 4; k++) {
            int d = (i + k >= n - pad) ? 0 : b64_value((unsigned char)s[i + k]);
            if (d < 0) return -1;
            v = v << 6 | (uint32_t)d;
        }
        unsigned char b[3] = {(unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
        size_t keep = i + 4 < n ? 3 : 3 - pad;
        for (size_t k = 0; k < keep; k++) out[len++] = b[k];
    }
    return len;
}

static int merge_cmp(const void *a, const void *b) {
    const bpe_merge *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return (x->right > y->right) - (x->right < y->right);
}

// Limits on a tiktoken file, the same as tokenizer.json's: o200k_base, the largest OpenAI ships, is 3.6 MB
// with 199,998 ranks, a tenth of the 2^21 allowed. The ranks are counted before any table is made.
#define TIKTOKEN_MAX_BYTES ((size_t)256 << 20)
#define TIKTOKEN_MAX_RANKS ((size_t)1 << 21)

int asa_tokenizer_load_tiktoken(const char *path, asa_tokenizer **out) {
    *out = NULL;
    char *data;
    size_t n;
    if (asa_file_read_all(path, TIKTOKEN_MAX_BYTES, &data, &n)) return ASA_ERR;
    // Pass 1: count the lines so the ranks can be checked against them.
    size_t n_lines = 0;
    for (size_t i = 0; i < n; i++) n_lines += data[i] == '\n';
    if (n && data[n - 1] != '\n') n_lines++;
    if (n_lines == 0) {
        free(data);
        return asa_err_set("%s: empty file, expected lines of \"<base64 token> <rank>\"", path);
    }
    if (n_lines > TIKTOKEN_MAX_RANKS) {
        free(data);
        return asa_err_set("%s: %zu lines, more than the limit of %zu ranks (real files have at most ~200,000)", path,
                           n_lines, TIKTOKEN_MAX_RANKS);
    }
    int nv = (int)n_lines;
    asa_tokenizer *t = tok_new(nv + 1);
    unsigned char *buf = asa_malloc(n + 4);
    size_t lineno = 0;
    int rc = ASA_OK;
    for (char *p = data, *end = data + n; p < end && rc == ASA_OK;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        lineno++;
        char *sp = memchr(p, ' ', (size_t)(le - p));
        long blen = sp ? b64_decode(p, (size_t)(sp - p), buf) : -1;
        char *num_end = NULL;
        long rank = sp ? strtol(sp + 1, &num_end, 10) : -1;
        if (!sp || num_end != le || sp + 1 == le)
            rc = asa_err_set("%s: line %zu: expected \"<base64 token> <rank>\"", path, lineno);
        else if (blen <= 0)
            rc = asa_err_set("%s: line %zu: the token is not valid base64", path, lineno);
        else if (rank < 0 || rank >= nv)
            rc = asa_err_set("%s: line %zu: rank %ld is out of range (the file has %d lines, ranks are 0..%d)", path,
                             lineno, rank, nv, nv - 1);
        else if (t->tok_off[rank] != SIZE_MAX)
            rc = asa_err_set("%s: line %zu: rank %ld appears twice", path, lineno, rank);
        else
            rc = tok_set(t, (int)rank, (const char *)buf, (size_t)blen, 0, path);
        p = le + 1;
    }
    free(buf);
    free(data);
    if (rc == ASA_OK) rc = tok_set(t, nv, "<|endoftext|>", 13, 1, path);
    if (rc == ASA_OK) rc = tok_finish(t, path);
    if (rc != ASA_OK) {
        asa_tokenizer_free(t);
        return ASA_ERR;
    }
    // Merges implied by ranks: tiktoken merges any two adjacent parts whose concatenation is a token, lowest
    // rank first, so every split of a token into two tokens is a merge with that token's rank.
    t->ignore_merges = 1;
    bpe_merge *ms = NULL;
    size_t n_ms = 0, cap = 0;
    for (int id = 0; id < nv; id++) {
        const char *b = t->blob + t->tok_off[id];
        size_t len = t->tok_len[id];
        for (size_t k = 1; k < len; k++) {
            int a = asa_tokenizer_find(t, b, k), c = asa_tokenizer_find(t, b + k, len - k);
            if (a < 0 || c < 0 || t->special[a] || t->special[c]) continue;
            if (n_ms == cap) {
                cap = cap ? 2 * cap : 1 << 16;
                bpe_merge *m2 = realloc(ms, cap * sizeof *m2);
                if (!m2) asa_fatal("out of memory for %zu merges", cap);
                ms = m2;
            }
            ms[n_ms++] = (bpe_merge){a, c, id, id};
        }
    }
    if (n_ms) qsort(ms, n_ms, sizeof *ms, merge_cmp);  // ms is NULL when there are none: qsort(NULL) is undefined
    for (size_t i = 0; i < n_ms && rc == ASA_OK; i++)
        rc = tok_add_merge(t, ms[i].left, ms[i].right, ms[i].rank, path, "implied merge");
    free(ms);
    if (rc != ASA_OK) {
        asa_tokenizer_free(t);
        return ASA_ERR;
    }
    *out = t;
    return ASA_OK;
}
