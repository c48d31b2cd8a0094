// Internals of the byte-level BPE tokenizer shared by src/text/*.c: the tokenizer struct, two hash
// maps (byte strings -> int64, uint64 -> int64), the pre-tokenizer and the tokenizer builder.
#ifndef ASA_TEXT_INTERNAL_H
#define ASA_TEXT_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "asa/tokenizer.h"

// GPT-2's pre-tokenizer (also Hugging Face's ByteLevel pre-tokenizer with use_regex):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with \s spelled out as the Unicode White_Space property, which is what \s means to tiktoken and
// Hugging Face (Rust regex). PCRE2's own \s also matches U+180E, which would split text differently.
#define TEXT_WS \
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define TEXT_GPT2_PATTERN                                                                                    \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" TEXT_WS "\\p{L}\\p{N}]+|[" TEXT_WS "]+(?![^" TEXT_WS \
    "])|[" TEXT_WS "]+"

uint64_t text_hash(const void *data, size_t len);

// Byte string -> int64. Keys are copied into an arena. Open addressing with linear probing; a slot's
// hash is never 0 (0 marks an empty slot).
typedef struct {
    uint64_t hash;
    size_t off;
    uint32_t len;
    int64_t val;
} strmap_slot;

typedef struct {
    strmap_slot *slots;
    size_t cap, n;  // cap is a power of two
    char *arena;
    size_t arena_len, arena_cap;
} strmap;

void strmap_init(strmap *m, size_t expected);
void strmap_free(strmap *m);
void strmap_clear(strmap *m);
// Pointer to the value of key, or NULL. h must be text_hash(key, len).
int64_t *strmap_get(const strmap *m, const char *key, size_t len, uint64_t h);
// Pointer to the value of key, inserting it with value init if absent. Valid until the next insert.
int64_t *strmap_put(strmap *m, const char *key, size_t len, uint64_t h, int64_t init);
static inline const char *strmap_key(const strmap *m, const strmap_slot *s) { return m->arena + s->off; }

// uint64 -> int64, for pairs of ids packed as (left << 32 | right). UINT64_MAX marks an empty slot.
typedef struct {
    uint64_t *keys;
    int64_t *vals;
    size_t cap, n;
} u64map;

void u64map_init(u64map *m, size_t expected);
void u64map_free(u64map *m);
int64_t *u64map_get(const u64map *m, uint64_t key);
int64_t *u64map_put(u64map *m, uint64_t key, int64_t init);

static inline uint64_t text_pair(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

typedef struct {
    int32_t left, right, id, rank;  // rank orders merges: lowest first
} bpe_merge;

struct asa_tokenizer {
    int n_vocab;
    size_t *tok_off;    // token bytes: blob[tok_off[i] .. + tok_len[i]]
    uint32_t *tok_len;
    char *blob;
    size_t blob_len, blob_cap;
    uint8_t *special;   // added tokens: matched in text with ASA_ENCODE_SPECIAL, never merged
    int *special_ids;   // the special ids, longest content first
    int n_special;
    int eot;
    int byte_id[256];   // the token of each single byte
    strmap vocab;       // bytes -> id, ordinary tokens only
    bpe_merge *merges;  // in rank order
    int n_merges, merges_cap;
    u64map pair_merge;  // text_pair(left, right) -> index into merges
    // tiktoken semantics: a piece that is a whole token is that token, without merging. Hugging Face
    // calls this ignore_merges.
    int ignore_merges;
    pcre2_code *re;
    int re_jit;         // 1 if the pattern was JIT-compiled
};

// Builder: tok_new, then tok_set for every id, then tok_finish (checks, vocab map, byte tokens, regex),
// then tok_add_merge in rank order. src names the file in messages.
asa_tokenizer *tok_new(int n_vocab);
int tok_set(asa_tokenizer *t, int id, const char *bytes, size_t len, int special, const char *src);
int tok_finish(asa_tokenizer *t, const char *src);
// Adds the merge left + right -> the token with their concatenated bytes. Returns ASA_ERR (message
// naming src and what) if that token does not exist or the pair was already added.
int tok_add_merge(asa_tokenizer *t, int left, int right, int rank, const char *src, const char *what);

// Pre-tokenizer: calls fn for each piece of text[0..len) in order; the pieces concatenate to the text.
// Runs of valid UTF-8 go through the GPT-2 regex; each byte that is not valid UTF-8 is a piece alone.
// Returns ASA_ERR only if PCRE2 itself fails.
typedef int (*text_piece_fn)(void *ctx, const char *piece, size_t len);
int text_pieces(const asa_tokenizer *t, pcre2_match_data *md, const char *text, size_t len, text_piece_fn fn,
                void *ctx);
// Splits text at the special tokens (when flags has ASA_ENCODE_SPECIAL): calls on_text for the text
// between them (possibly empty) and on_special with each special id, in order.
int text_split_special(const asa_tokenizer *t, const char *text, size_t len, int flags,
                       int (*on_text)(void *ctx, const char *s, size_t n), int (*on_special)(void *ctx, int id),
                       void *ctx);

// GPT-2's byte <-> unicode mapping for tokenizer.json strings: printable bytes map to themselves, the
// other 68 bytes, in order, to U+0100 onwards. text_char_byte inverts it (-1 for other code points).
// text_byte_order ranks bytes by their code point: GPT-2's ids of the 256 byte tokens.
uint32_t text_byte_char(int b);
int text_char_byte(uint32_t cp);
int text_byte_order(int b);

#endif
