// Hash maps for the tokenizer: byte strings -> int64 (vocabulary, piece counts, the encoder's piece
// cache) and uint64 -> int64 (pairs of ids). Open addressing with linear probing, kept at most half full.
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/text_internal.h"

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t text_hash(const void *data, size_t len) {
    const unsigned char *p = data;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (len * 0x100000001b3ULL);
    while (len >= 8) {
        uint64_t k;
        memcpy(&k, p, 8);
        h = (h ^ mix64(k)) * 0x9e3779b97f4a7c15ULL;
        h = (h << 31) | (h >> 33);
        p += 8;
        len -= 8;
    }
    uint64_t k = 0;
    for (size_t i = 0; i < len; i++) k |= (uint64_t)p[i] << (8 * i);
    h = mix64(h ^ mix64(k + len));
    return h ? h : 1;
}

static size_t cap_for(size_t expected) {
    size_t cap = 16;
    while (cap < 2 * expected) cap *= 2;
    return cap;
}

void strmap_init(strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = cap_for(expected);
    m->slots = asa_calloc(m->cap, sizeof *m->slots);
}

void strmap_free(strmap *m) {
    free(m->slots);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

void strmap_clear(strmap *m) {
    memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->n = 0;
    m->arena_len = 0;
}

int64_t *strmap_get(const strmap *m, const char *key, size_t len, uint64_t h) {
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const strmap_slot *s = &m->slots[i];
        if (!s->hash) return NULL;
        if (s->hash == h && s->len == len && memcmp(m->arena + s->off, key, len) == 0) return (int64_t *)&s->val;
    }
}

static void strmap_grow(strmap *m) {
    size_t cap = m->cap * 2, mask = cap - 1;
    strmap_slot *slots = asa_calloc(cap, sizeof *slots);
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].hash) continue;
        size_t j = m->slots[i].hash & mask;
        while (slots[j].hash) j = (j + 1) & mask;
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
}

int64_t *strmap_put(strmap *m, const char *key, size_t len, uint64_t h, int64_t init) {
    ASA_CHECK(len <= UINT32_MAX);
    if (2 * (m->n + 1) > m->cap) strmap_grow(m);
    size_t mask = m->cap - 1, i = h & mask;
    for (;; i = (i + 1) & mask) {
        strmap_slot *s = &m->slots[i];
        if (!s->hash) break;
        if (s->hash == h && s->len == len && memcmp(m->arena + s->off, key, len) == 0) return &s->val;
    }
    if (m->arena_len + len > m->arena_cap) {
        size_t cap = m->arena_cap ? m->arena_cap : 4096;
        while (cap < m->arena_len + len) cap *= 2;
        char *a = realloc(m->arena, cap);
        if (!a) asa_fatal("out of memory growing a string map to %zu bytes", cap);
        m->arena = a;
        m->arena_cap = cap;
    }
    memcpy(m->arena + m->arena_len, key, len);
    strmap_slot *s = &m->slots[i];
    s->hash = h;
    s->off = m->arena_len;
    s->len = (uint32_t)len;
    s->val = init;
    m->arena_len += len;
    m->n++;
    return &s->val;
}

#define U64_EMPTY UINT64_MAX

void u64map_init(u64map *m, size_t expected) {
    m->cap = cap_for(expected);
    m->n = 0;
    m->keys = asa_malloc(m->cap * sizeof *m->keys);
    m->vals = asa_malloc(m->cap * sizeof *m->vals);
    memset(m->keys, 0xff, m->cap * sizeof *m->keys);
}

void u64map_free(u64map *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

int64_t *u64map_get(const u64map *m, uint64_t key) {
    ASA_CHECK(key != U64_EMPTY);
    size_t mask = m->cap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->keys[i] == key) return &m->vals[i];
        if (m->keys[i] == U64_EMPTY) return NULL;
    }
}

static void u64map_grow(u64map *m) {
    u64map g;
    u64map_init(&g, m->cap);  // doubles: cap_for(cap) = 2 * cap
    size_t mask = g.cap - 1;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == U64_EMPTY) continue;
        size_t j = mix64(m->keys[i]) & mask;
        while (g.keys[j] != U64_EMPTY) j = (j + 1) & mask;
        g.keys[j] = m->keys[i];
        g.vals[j] = m->vals[i];
    }
    g.n = m->n;
    u64map_free(m);
    *m = g;
}

int64_t *u64map_put(u64map *m, uint64_t key, int64_t init) {
    ASA_CHECK(key != U64_EMPTY);
    if (2 * (m->n + 1) > m->cap) u64map_grow(m);
    size_t mask = m->cap - 1, i = mix64(key) & mask;
    for (;; i = (i + 1) & mask) {
        if (m->keys[i] == key) return &m->vals[i];
        if (m->keys[i] == U64_EMPTY) break;
    }
    m->keys[i] = key;
    m->vals[i] = init;
    m->n++;
    return &m->vals[i];
}
