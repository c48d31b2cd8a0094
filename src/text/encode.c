// Encoding: special-token splitting, the pre-tokenizer (GPT-2 regex over valid UTF-8, invalid bytes as
// pieces of their own), and byte-level BPE inside each piece with a cache of piece -> ids.
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/text_internal.h"

// Length of the longest valid UTF-8 prefix of s[0..n), with the rules PCRE2 checks in UTF mode (no
// overlong forms, no surrogates, nothing above U+10FFFF), so matching can skip PCRE2's own check.
static size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xbf;  // range of the second byte
        if (c >= 0xc2 && c <= 0xdf) need = 1;
        else if (c == 0xe0) need = 2, lo = 0xa0;
        else if (c >= 0xe1 && c <= 0xef) need = 2, hi = c == 0xed ? 0x9f : 0xbf;
        else if (c == 0xf0) need = 3, lo = 0x90;
        else if (c >= 0xf1 && c <= 0xf3) need = 3;
        else if (c == 0xf4) need = 3, hi = 0x8f;
        else return i;
        if (i + need >= n) return i;  // truncated sequence
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xc0) != 0x80) return i;
        i += need + 1;
    }
    return n;
}

static int regex_pieces(const asa_tokenizer *t, pcre2_match_data *md, const char *s, size_t n, text_piece_fn fn,
                        void *ctx) {
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    for (size_t off = 0; off < n;) {
        int rc = t->re_jit ? pcre2_jit_match(t->re, (PCRE2_SPTR)s, n, off, 0, md, NULL) : PCRE2_ERROR_JIT_STACKLIMIT;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // no JIT, or a match too deep for its stack: the interpreter
            rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return asa_err_set("tokenizer: PCRE2 failed at byte %zu of a %zu-byte text: %s", off, n, (const char *)msg);
        }
        // Every character is white space, a letter, a digit or none of these, so each match starts at off.
        ASA_CHECK(ov[0] == off && ov[1] > off);
        if (fn(ctx, s + off, ov[1] - off)) return ASA_ERR;
        off = ov[1];
    }
    return ASA_OK;
}

int text_pieces(const asa_tokenizer *t, pcre2_match_data *md, const char *text, size_t len, text_piece_fn fn,
                void *ctx) {
    size_t i = 0;
    while (i < len) {
        size_t v = utf8_valid_prefix((const unsigned char *)text + i, len - i);
        if (v && regex_pieces(t, md, text + i, v, fn, ctx)) return ASA_ERR;
        i += v;
        if (i < len) {
            if (fn(ctx, text + i, 1)) return ASA_ERR;
            i++;
        }
    }
    return ASA_OK;
}

static int ascii_graph(unsigned char c) { return c > 0x20 && c < 0x7f; }

// Why this is exact: the regex makes such a '\n' a piece of its own whatever follows it (no alternative puts
// '\n' with a non-space, and "\n" then end of text also gives "\n"), it has no look-behind, and both
// neighbours are single-byte characters, so the pieces of the parts are the pieces of the whole.
size_t asa_tokenizer_cut_point(const char *text, size_t len, size_t from) {
    for (size_t i = from < 2 ? 2 : from; i < len;) {
        const char *nl = memchr(text + i - 1, '\n', len - (i - 1));
        if (!nl) return len;
        i = (size_t)(nl - text) + 1;
        if (i < len && ascii_graph((unsigned char)text[i - 2]) && ascii_graph((unsigned char)text[i])) return i;
        i++;
    }
    return len;
}

// First occurrence of needle in text[pos..len), or len.
static size_t find_bytes(const char *text, size_t pos, size_t len, const char *needle, size_t nl) {
    while (pos + nl <= len) {
        const char *f = memchr(text + pos, needle[0], len - nl + 1 - pos);
        if (!f) break;
        pos = (size_t)(f - text);
        if (memcmp(f, needle, nl) == 0) return pos;
        pos++;
    }
    return len;
}

int text_split_special(const asa_tokenizer *t, const char *text, size_t len, int flags,
                       int (*on_text)(void *ctx, const char *s, size_t n), int (*on_special)(void *ctx, int id),
                       void *ctx) {
    if (!(flags & ASA_ENCODE_SPECIAL) || t->n_special == 0) return on_text(ctx, text, len);
    // next[k]: where special k next occurs at or after pos (len if nowhere), searched again only once passed.
    size_t stack[8], *next = t->n_special <= 8 ? stack : asa_malloc((size_t)t->n_special * sizeof *next);
    for (int k = 0; k < t->n_special; k++) {
        int id = t->special_ids[k];
        next[k] = find_bytes(text, 0, len, t->blob + t->tok_off[id], t->tok_len[id]);
    }
    int rc = ASA_OK;
    size_t pos = 0;
    while (rc == ASA_OK) {
        int best = -1;
        for (int k = 0; k < t->n_special; k++) {
            int id = t->special_ids[k];
            if (next[k] < pos) next[k] = find_bytes(text, pos, len, t->blob + t->tok_off[id], t->tok_len[id]);
            if (next[k] < len && (best < 0 || next[k] < next[best])) best = k;  // ties: the longer, listed first
        }
        if (best < 0) {
            rc = on_text(ctx, text + pos, len - pos);
            break;
        }
        int id = t->special_ids[best];
        rc = on_text(ctx, text + pos, next[best] - pos);
        if (rc == ASA_OK) rc = on_special(ctx, id);
        pos = next[best] + t->tok_len[id];
    }
    if (next != stack) free(next);
    return rc;
}

// ---- BPE inside one piece ----

typedef struct {
    int32_t rank, pos, left, right;
} bpe_cand;

struct asa_encoder {
    const asa_tokenizer *tok;
    pcre2_match_data *md;
    strmap cache;       // piece -> offset into cache_ids, where [count, ids...] are stored
    int32_t *cache_ids;
    size_t cache_n, cache_cap;
    int32_t *sym, *next, *prev;  // the piece's current tokens as a linked list over byte positions
    bpe_cand *heap;
    size_t scratch_cap, heap_cap;
    asa_token_buf *out;
};

// Pieces longer than this are encoded every time: rare, and they would crowd the cache.
#define CACHE_MAX_PIECE 256
// The cache is dropped and refilled once it holds this many pieces or ids: an encoder stays under ~30 MB.
#define CACHE_MAX_PIECES ((size_t)1 << 18)
#define CACHE_MAX_IDS ((size_t)1 << 21)

asa_encoder *asa_encoder_new(const asa_tokenizer *tok) {
    asa_encoder *e = asa_calloc(1, sizeof *e);
    e->tok = tok;
    e->md = pcre2_match_data_create_from_pattern(tok->re, NULL);
    if (!e->md) asa_fatal("out of memory for PCRE2 match data");
    strmap_init(&e->cache, 1 << 12);
    return e;
}

void asa_encoder_free(asa_encoder *e) {
    if (!e) return;
    pcre2_match_data_free(e->md);
    strmap_free(&e->cache);
    free(e->cache_ids);
    free(e->sym);
    free(e->next);
    free(e->prev);
    free(e->heap);
    free(e);
}

static inline int cand_less(const bpe_cand *a, const bpe_cand *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(asa_encoder *e, size_t *n, bpe_cand c) {
    if (*n == e->heap_cap) {
        e->heap_cap = e->heap_cap ? 2 * e->heap_cap : 64;
        bpe_cand *h = realloc(e->heap, e->heap_cap * sizeof *h);
        if (!h) asa_fatal("out of memory for the BPE heap");
        e->heap = h;
    }
    bpe_cand *h = e->heap;
    size_t i = (*n)++;
    while (i > 0 && cand_less(&c, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

static bpe_cand heap_pop(asa_encoder *e, size_t *n) {
    bpe_cand *h = e->heap, top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c])) c++;
        if (!cand_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static void push_pair(asa_encoder *e, size_t *nh, int32_t i) {
    const asa_tokenizer *t = e->tok;
    if (i < 0 || e->next[i] < 0) return;
    int32_t j = e->next[i];
    int64_t *m = u64map_get(&t->pair_merge, text_pair(e->sym[i], e->sym[j]));
    if (m) heap_push(e, nh, (bpe_cand){t->merges[*m].rank, i, e->sym[i], e->sym[j]});
}

// Merges inside one piece: repeatedly the adjacent pair of lowest rank, leftmost on ties (the order of
// both tiktoken and Hugging Face), through a heap of candidates checked when popped.
static void bpe_encode(asa_encoder *e, const unsigned char *p, size_t n, asa_token_buf *out) {
    const asa_tokenizer *t = e->tok;
    if (n == 1) {
        asa_token_buf_push(out, t->byte_id[p[0]]);
        return;
    }
    if (t->ignore_merges) {
        int64_t *id = strmap_get(&t->vocab, (const char *)p, n, text_hash(p, n));
        if (id) {
            asa_token_buf_push(out, (int32_t)*id);
            return;
        }
    }
    if (n > e->scratch_cap) {
        e->scratch_cap = n > 2 * e->scratch_cap ? n : 2 * e->scratch_cap;
        free(e->sym);
        free(e->next);
        free(e->prev);
        e->sym = asa_malloc(e->scratch_cap * sizeof *e->sym);
        e->next = asa_malloc(e->scratch_cap * sizeof *e->next);
        e->prev = asa_malloc(e->scratch_cap * sizeof *e->prev);
    }
    int32_t *sym = e->sym, *next = e->next, *prev = e->prev;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[p[i]];
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        prev[i] = (int32_t)i - 1;
    }
    size_t nh = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair(e, &nh, (int32_t)i);
    while (nh) {
        bpe_cand c = heap_pop(e, &nh);
        int32_t i = c.pos, j = next[i];
        if (sym[i] != c.left || j < 0 || sym[j] != c.right) continue;  // stale: one side was merged since
        sym[i] = t->merges[*u64map_get(&t->pair_merge, text_pair(c.left, c.right))].id;
        sym[j] = -1;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = i;
        push_pair(e, &nh, prev[i]);
        push_pair(e, &nh, i);
    }
    for (int32_t i = 0; i >= 0; i = next[i]) asa_token_buf_push(out, sym[i]);
}

static int encode_piece(void *ctx, const char *piece, size_t n) {
    asa_encoder *e = ctx;
    asa_token_buf *out = e->out;
    if (n >= INT32_MAX) return asa_err_set("tokenizer: a single piece of %zu bytes is too long to encode", n);
    if (n > CACHE_MAX_PIECE || n == 1) {
        bpe_encode(e, (const unsigned char *)piece, n, out);
        return ASA_OK;
    }
    uint64_t h = text_hash(piece, n);
    int64_t *hit = strmap_get(&e->cache, piece, n, h);
    if (hit) {
        const int32_t *c = e->cache_ids + *hit;
        for (int32_t k = 1; k <= c[0]; k++) asa_token_buf_push(out, c[k]);
        return ASA_OK;
    }
    size_t before = out->n;
    bpe_encode(e, (const unsigned char *)piece, n, out);
    size_t cnt = out->n - before;
    if (e->cache.n >= CACHE_MAX_PIECES || e->cache_n + cnt + 1 > CACHE_MAX_IDS) {
        strmap_clear(&e->cache);
        e->cache_n = 0;
    }
    if (e->cache_n + cnt + 1 > e->cache_cap) {
        size_t cap = e->cache_cap ? e->cache_cap : 1 << 14;
        while (cap < e->cache_n + cnt + 1) cap *= 2;
        int32_t *ids = realloc(e->cache_ids, cap * sizeof *ids);
        if (!ids) asa_fatal("out of memory for the encoder cache");
        e->cache_ids = ids;
        e->cache_cap = cap;
    }
    int32_t *c = e->cache_ids + e->cache_n;
    c[0] = (int32_t)cnt;
    memcpy(c + 1, out->ids + before, cnt * sizeof *c);
    *strmap_put(&e->cache, piece, n, h, 0) = (int64_t)e->cache_n;
    e->cache_n += cnt + 1;
    return ASA_OK;
}

static int encode_text(void *ctx, const char *s, size_t n) {
    asa_encoder *e = ctx;
    return text_pieces(e->tok, e->md, s, n, encode_piece, e);
}

static int encode_special(void *ctx, int id) {
    asa_encoder *e = ctx;
    asa_token_buf_push(e->out, id);
    return ASA_OK;
}

int asa_encoder_encode(asa_encoder *e, const char *text, size_t len, int flags, asa_token_buf *out) {
    e->out = out;
    int rc = text_split_special(e->tok, text, len, flags, encode_text, encode_special, e);
    e->out = NULL;
    return rc;
}

int asa_tokenizer_encode(const asa_tokenizer *tok, const char *text, size_t len, int flags, asa_token_buf *out) {
    asa_encoder *e = asa_encoder_new(tok);
    int rc = asa_encoder_encode(e, text, len, flags, out);
    asa_encoder_free(e);
    return rc;
}
