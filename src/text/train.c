// Byte-level BPE training. The text is cut at special tokens and split into pieces by the GPT-2 regex
// (in parallel over chunks cut where no piece can straddle: asa_tokenizer_cut_point), pieces are counted
// in a hash map, and merges are chosen by the highest pair count (ties: smallest left id, then right id)
// with counts updated incrementally: each merge only revisits the words that contain the merged pair.
// The ids and the tie rule are those of Hugging Face's BpeTrainer with the full byte alphabet.
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/fileio.h"
#include "text/text_internal.h"

#define CHUNK_BYTES ((size_t)1 << 20)

typedef struct {
    const asa_tokenizer *base;  // bytes + special tokens: the pre-tokenizer and the special-token split
    pcre2_match_data *md;
    strmap counts;              // piece -> count
} counter;

static int count_piece(void *ctx, const char *p, size_t n) {
    counter *c = ctx;
    if (n >= INT32_MAX) return asa_err_set("tokenizer training: a single piece of %zu bytes is too long", n);
    (*strmap_put(&c->counts, p, n, text_hash(p, n), 0))++;
    return ASA_OK;
}

static int count_text(void *ctx, const char *s, size_t n) {
    counter *c = ctx;
    return text_pieces(c->base, c->md, s, n, count_piece, c);
}

static int skip_special(void *ctx, int id) {
    (void)ctx;
    (void)id;
    return ASA_OK;
}

// Counts the pieces of one file into the threads' counters. chunk_bytes is the target chunk size; a special
// token with '\n' in it could straddle a chunk boundary, so the caller then passes SIZE_MAX (no chunks).
static int count_file(const char *path, counter *ctr, int nt, size_t chunk_bytes, int64_t *done, int64_t total,
                      const asa_tokenizer_train_opts *o) {
    char *data;
    size_t n;
    if (asa_file_read_all(path, (size_t)1 << 40, &data, &n)) return ASA_ERR;
    size_t n_chunks = 0, cap = 64;
    size_t *starts = asa_malloc(cap * sizeof *starts);
    for (size_t pos = 0; pos < n;) {
        if (n_chunks + 1 >= cap) {
            cap *= 2;
            size_t *s2 = realloc(starts, cap * sizeof *s2);
            if (!s2) asa_fatal("out of memory splitting %s", path);
            starts = s2;
        }
        starts[n_chunks++] = pos;
        pos = n - pos <= chunk_bytes ? n : asa_tokenizer_cut_point(data, n, pos + chunk_bytes);
    }
    starts[n_chunks] = n;
    int failed = 0;
    // Batches of a few chunks per thread, with progress reported between them.
    for (size_t c0 = 0; c0 < n_chunks && !failed; c0 += 4 * (size_t)nt) {
        size_t c1 = c0 + 4 * (size_t)nt < n_chunks ? c0 + 4 * (size_t)nt : n_chunks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (size_t c = c0; c < c1; c++) {
            counter *me = &ctr[omp_get_thread_num()];
            if (text_split_special(me->base, data + starts[c], starts[c + 1] - starts[c], ASA_ENCODE_SPECIAL,
                                   count_text, skip_special, me)) {
#pragma omp atomic write
                failed = 1;
            }
        }
        if (o->progress) o->progress(o->progress_ctx, "read", *done + (int64_t)starts[c1], total);
    }
    free(starts);
    free(data);
    // The message of a failing thread stays in that thread; PCRE2 failing at all would be a bug.
    if (failed) return asa_err_set("%s: the pre-tokenizer (PCRE2) failed on this file", path);
    *done += (int64_t)n;
    return ASA_OK;
}

// ---- merging ----

typedef struct {
    int32_t *w;
    int32_t n, cap;
} word_list;

typedef struct {
    int64_t count;
    int32_t a, b;
} pair_entry;

typedef struct {
    // words: unique pieces as token sequences, shrinking in place as merges apply
    int32_t *syms;
    size_t *start;
    int32_t *len;
    int64_t *wcount;
    int32_t *stamp;  // last merge step that visited the word
    size_t n_words;
    // pairs: text_pair(a, b) -> index into the arrays below
    u64map index;
    int64_t *count;
    int32_t *pa, *pb;  // the pair's left and right ids
    word_list *words;  // words that contain (or once contained) the pair
    int32_t *pushed;   // last merge step that queued the pair
    size_t n_pairs, pairs_cap;
    pair_entry *heap;  // max-heap of (count, then smallest a, b), with stale entries checked when popped
    size_t heap_n, heap_cap;
    int32_t *fresh;    // pairs created by the current merge step
    size_t fresh_n, fresh_cap;
} trainer;

static inline int entry_before(const pair_entry *x, const pair_entry *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static void heap_push(trainer *tr, pair_entry e) {
    if (tr->heap_n == tr->heap_cap) {
        tr->heap_cap = tr->heap_cap ? 2 * tr->heap_cap : 1 << 16;
        pair_entry *h = realloc(tr->heap, tr->heap_cap * sizeof *h);
        if (!h) asa_fatal("out of memory for the pair heap");
        tr->heap = h;
    }
    size_t i = tr->heap_n++;
    while (i > 0 && entry_before(&e, &tr->heap[(i - 1) / 2])) {
        tr->heap[i] = tr->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    tr->heap[i] = e;
}

static pair_entry heap_pop(trainer *tr) {
    pair_entry *h = tr->heap, top = h[0], last = h[--tr->heap_n];
    size_t i = 0, n = tr->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && entry_before(&h[c + 1], &h[c])) c++;
        if (!entry_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static int32_t pair_index(trainer *tr, int32_t a, int32_t b) {
    int64_t *v = u64map_put(&tr->index, text_pair(a, b), -1);
    if (*v >= 0) return (int32_t)*v;
    if (tr->n_pairs == tr->pairs_cap) {
        tr->pairs_cap = tr->pairs_cap ? 2 * tr->pairs_cap : 1 << 16;
        tr->count = realloc(tr->count, tr->pairs_cap * sizeof *tr->count);
        tr->words = realloc(tr->words, tr->pairs_cap * sizeof *tr->words);
        tr->pushed = realloc(tr->pushed, tr->pairs_cap * sizeof *tr->pushed);
        tr->pa = realloc(tr->pa, tr->pairs_cap * sizeof *tr->pa);
        tr->pb = realloc(tr->pb, tr->pairs_cap * sizeof *tr->pb);
        if (!tr->count || !tr->words || !tr->pushed || !tr->pa || !tr->pb)
            asa_fatal("out of memory for %zu pairs", tr->pairs_cap);
    }
    ASA_CHECK(tr->n_pairs < INT32_MAX);
    int32_t p = (int32_t)tr->n_pairs++;
    tr->count[p] = 0;
    tr->words[p] = (word_list){0};
    tr->pushed[p] = -1;
    tr->pa[p] = a;
    tr->pb[p] = b;
    *v = p;
    return p;
}

static void list_add(word_list *l, int32_t w) {
    if (l->n && l->w[l->n - 1] == w) return;  // a word's additions come together, so repeats are adjacent
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 4;
        int32_t *x = realloc(l->w, (size_t)l->cap * sizeof *x);
        if (!x) asa_fatal("out of memory for pair occurrences");
        l->w = x;
    }
    l->w[l->n++] = w;
}

// Adds delta to the count of (a, b); for an increase, records word w and, at merge step `step`, queues the
// pair once the step is over.
static void pair_add(trainer *tr, int32_t a, int32_t b, int64_t delta, int32_t w, int32_t step) {
    int32_t p = pair_index(tr, a, b);
    tr->count[p] += delta;
    if (delta <= 0) return;
    list_add(&tr->words[p], w);
    if (step >= 0 && tr->pushed[p] != step) {
        tr->pushed[p] = step;
        if (tr->fresh_n == tr->fresh_cap) {
            tr->fresh_cap = tr->fresh_cap ? 2 * tr->fresh_cap : 1024;
            tr->fresh = realloc(tr->fresh, tr->fresh_cap * sizeof *tr->fresh);
            if (!tr->fresh) asa_fatal("out of memory for new pairs");
        }
        tr->fresh[tr->fresh_n++] = p;
    }
}

// Applies merge (a, b) -> x to every word that contains it; step numbers the merge.
static void apply_merge(trainer *tr, int32_t a, int32_t b, int32_t x, int32_t step) {
    int32_t p = pair_index(tr, a, b);
    word_list list = tr->words[p];
    tr->words[p] = (word_list){0};
    tr->fresh_n = 0;
    for (int32_t k = 0; k < list.n; k++) {
        int32_t w = list.w[k];
        if (tr->stamp[w] == step) continue;
        tr->stamp[w] = step;
        int32_t *s = tr->syms + tr->start[w], n = tr->len[w], o = 0;
        int64_t c = tr->wcount[w];
        for (int32_t i = 0; i < n;) {
            if (i + 1 < n && s[i] == a && s[i + 1] == b) {
                // Left neighbour from the output (it may be x already), right neighbour from the input.
                if (o > 0) {
                    pair_add(tr, s[o - 1], a, -c, w, step);
                    pair_add(tr, s[o - 1], x, c, w, step);
                }
                if (i + 2 < n) {
                    pair_add(tr, b, s[i + 2], -c, w, step);
                    pair_add(tr, x, s[i + 2], c, w, step);
                }
                tr->count[p] -= c;
                s[o++] = x;
                i += 2;
            } else {
                s[o++] = s[i++];
            }
        }
        tr->len[w] = o;
    }
    free(list.w);
    ASA_CHECK(tr->count[p] == 0);
    for (size_t k = 0; k < tr->fresh_n; k++) {
        int32_t q = tr->fresh[k];
        if (tr->count[q] > 0) heap_push(tr, (pair_entry){tr->count[q], tr->pa[q], tr->pb[q]});
    }
}

static void trainer_free(trainer *tr) {
    free(tr->syms);
    free(tr->start);
    free(tr->len);
    free(tr->wcount);
    free(tr->stamp);
    u64map_free(&tr->index);
    for (size_t p = 0; p < tr->n_pairs; p++) free(tr->words[p].w);
    free(tr->count);
    free(tr->words);
    free(tr->pushed);
    free(tr->pa);
    free(tr->pb);
    free(tr->heap);
    free(tr->fresh);
}

typedef struct {
    const char *key;
    uint32_t len;
    int64_t count;
} piece;

static int piece_cmp(const void *x, const void *y) {
    const piece *a = x, *b = y;
    int c = memcmp(a->key, b->key, a->len < b->len ? a->len : b->len);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

// Words from the piece counts, in a fixed order (by bytes) so that nothing depends on hash-map layout;
// then every adjacent pair counted and queued.
static void trainer_init(trainer *tr, const strmap *counts) {
    memset(tr, 0, sizeof *tr);
    piece *pieces = asa_malloc((counts->n + 1) * sizeof *pieces);
    size_t np = 0, total = 0;
    for (size_t i = 0; i < counts->cap; i++) {
        const strmap_slot *sl = &counts->slots[i];
        if (!sl->hash) continue;
        pieces[np++] = (piece){strmap_key(counts, sl), sl->len, sl->val};
        total += sl->len;
    }
    qsort(pieces, np, sizeof *pieces, piece_cmp);
    ASA_CHECK(np < INT32_MAX);
    tr->n_words = np;
    tr->syms = asa_malloc((total + 1) * sizeof *tr->syms);
    tr->start = asa_malloc((np + 1) * sizeof *tr->start);
    tr->len = asa_malloc((np + 1) * sizeof *tr->len);
    tr->wcount = asa_malloc((np + 1) * sizeof *tr->wcount);
    tr->stamp = asa_malloc((np + 1) * sizeof *tr->stamp);
    size_t off = 0;
    for (size_t w = 0; w < np; w++) {
        const unsigned char *k = (const unsigned char *)pieces[w].key;
        tr->start[w] = off;
        tr->len[w] = (int32_t)pieces[w].len;
        tr->wcount[w] = pieces[w].count;
        tr->stamp[w] = -1;
        for (uint32_t i = 0; i < pieces[w].len; i++) tr->syms[off + i] = text_byte_order(k[i]);
        off += pieces[w].len;
    }
    free(pieces);
    u64map_init(&tr->index, 1 << 16);
    for (size_t w = 0; w < np; w++) {
        const int32_t *s = tr->syms + tr->start[w];
        for (int32_t i = 0; i + 1 < tr->len[w]; i++) pair_add(tr, s[i], s[i + 1], tr->wcount[w], (int32_t)w, -1);
    }
    for (size_t p = 0; p < tr->n_pairs; p++) heap_push(tr, (pair_entry){tr->count[p], tr->pa[p], tr->pb[p]});
}

// The pair to merge next, or 0 if no pair is left.
static int trainer_best(trainer *tr, int32_t *a, int32_t *b) {
    while (tr->heap_n) {
        pair_entry e = heap_pop(tr);
        int32_t p = (int32_t)*u64map_get(&tr->index, text_pair(e.a, e.b));
        if (tr->count[p] == e.count) {
            *a = e.a;
            *b = e.b;
            return 1;
        }
        // Counts of existing pairs only fall, so a stale entry is too high: requeue it at its count.
        if (tr->count[p] > 0) heap_push(tr, (pair_entry){tr->count[p], e.a, e.b});
    }
    return 0;
}

// Token bytes as they are made: ids 0..255 are the bytes in GPT-2's order, merges append.
typedef struct {
    char *blob;
    size_t *off;
    uint32_t *len;
    size_t blob_len, blob_cap;
    int n;
    strmap ids;  // bytes -> id
} token_table;

static void token_table_reserve(token_table *tt, size_t n) {
    if (tt->blob_len + n <= tt->blob_cap) return;
    tt->blob_cap = 2 * (tt->blob_len + n);
    char *nb = realloc(tt->blob, tt->blob_cap);
    if (!nb) asa_fatal("out of memory for token bytes");
    tt->blob = nb;
}

// Adds the token whose bytes were just written at blob + blob_len, or returns the id it already has (a
// merge can remake an existing token; Hugging Face's trainer reuses the id too).
static int token_table_commit(token_table *tt, size_t n) {
    const char *p = tt->blob + tt->blob_len;
    int64_t *id = strmap_put(&tt->ids, p, n, text_hash(p, n), tt->n);
    if (*id != tt->n) return (int)*id;
    tt->off[tt->n] = tt->blob_len;
    tt->len[tt->n] = (uint32_t)n;
    tt->blob_len += n;
    return tt->n++;
}

static int token_table_merge(token_table *tt, int a, int b) {
    size_t la = tt->len[a], lb = tt->len[b];
    token_table_reserve(tt, la + lb);
    memcpy(tt->blob + tt->blob_len, tt->blob + tt->off[a], la);
    memcpy(tt->blob + tt->blob_len + la, tt->blob + tt->off[b], lb);
    return token_table_commit(tt, la + lb);
}

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

int asa_tokenizer_train(const char *const *files, int n_files, int vocab_size, const asa_tokenizer_train_opts *opts,
                        asa_tokenizer **out) {
    *out = NULL;
    asa_tokenizer_train_opts o = opts ? *opts : (asa_tokenizer_train_opts){0};
    const char *special = o.special_token ? o.special_token : "<|endoftext|>";
    const char *src = "tokenizer training";
    int n_special = special[0] ? 1 : 0;
    if (n_files <= 0) return asa_err_set("%s: no input files", src);
    if (vocab_size < 256 + n_special || vocab_size > (1 << 24))
        return asa_err_set("%s: vocab size %d must be between %d (256 byte tokens%s) and %d", src, vocab_size,
                           256 + n_special, n_special ? " and the special token" : "", 1 << 24);

    // The 256 byte tokens and the special token: enough for the pre-tokenizer and the special-token split.
    asa_tokenizer *base = tok_new(256 + n_special);
    int rc = ASA_OK;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        rc |= tok_set(base, text_byte_order(b), &c, 1, 0, src);
    }
    if (n_special) rc |= tok_set(base, 256, special, strlen(special), 1, src);
    if (rc == ASA_OK) rc = tok_finish(base, src);
    ASA_CHECK(rc == ASA_OK);

    int64_t total = 0, done = 0;
    for (int f = 0; f < n_files; f++) total += file_size(files[f]);
    int nt = omp_get_max_threads();
    counter *ctr = asa_calloc((size_t)nt, sizeof *ctr);
    for (int i = 0; i < nt; i++) {
        ctr[i].base = base;
        ctr[i].md = pcre2_match_data_create_from_pattern(base->re, NULL);
        if (!ctr[i].md) asa_fatal("out of memory for PCRE2 match data");
        strmap_init(&ctr[i].counts, 1 << 16);
    }
    size_t chunk_bytes = strchr(special, '\n') ? SIZE_MAX : CHUNK_BYTES;
    for (int f = 0; f < n_files && rc == ASA_OK; f++)
        rc = count_file(files[f], ctr, nt, chunk_bytes, &done, total, &o);
    for (int i = 1; i < nt && rc == ASA_OK; i++) {
        const strmap *m = &ctr[i].counts;
        for (size_t k = 0; k < m->cap; k++) {
            const strmap_slot *s = &m->slots[k];
            if (s->hash) *strmap_put(&ctr[0].counts, strmap_key(m, s), s->len, s->hash, 0) += s->val;
        }
        strmap_free(&ctr[i].counts);
    }
    if (rc == ASA_OK && ctr[0].counts.n == 0) rc = asa_err_set("%s: the input files hold no text", src);

    int target = vocab_size - n_special, n_merges = 0;
    token_table tt = {0};
    int32_t *ma = NULL, *mb = NULL;
    if (rc == ASA_OK) {
        trainer tr;
        trainer_init(&tr, &ctr[0].counts);
        strmap_free(&ctr[0].counts);
        tt.off = asa_malloc((size_t)target * sizeof *tt.off);
        tt.len = asa_malloc((size_t)target * sizeof *tt.len);
        strmap_init(&tt.ids, (size_t)target);
        for (int id = 0; id < 256; id++) {
            size_t len;
            const char *bytes = asa_tokenizer_token(base, id, &len);
            token_table_reserve(&tt, len);
            memcpy(tt.blob + tt.blob_len, bytes, len);
            token_table_commit(&tt, len);
        }
        ma = asa_malloc(((size_t)target + 1) * sizeof *ma);
        mb = asa_malloc(((size_t)target + 1) * sizeof *mb);
        u64map merged;  // pairs merged so far: a merge that remakes a token can bring one back
        u64map_init(&merged, (size_t)target);
        int32_t a, b;
        for (int32_t step = 0; tt.n < target && trainer_best(&tr, &a, &b); step++) {
            apply_merge(&tr, a, b, token_table_merge(&tt, a, b), step);
            int64_t *seen = u64map_put(&merged, text_pair(a, b), 0);
            if (*seen) continue;  // already in the merge list, at a lower rank
            *seen = 1;
            ma[n_merges] = a;
            mb[n_merges] = b;
            n_merges++;
            if (o.progress && (n_merges % 256 == 0 || tt.n == target))
                o.progress(o.progress_ctx, "merge", tt.n, target);
        }
        u64map_free(&merged);
        trainer_free(&tr);
    }
    for (int i = 0; i < nt; i++) {
        pcre2_match_data_free(ctr[i].md);
        strmap_free(&ctr[i].counts);  // already freed unless counting failed
    }
    free(ctr);
    asa_tokenizer_free(base);

    asa_tokenizer *t = NULL;
    if (rc == ASA_OK) {
        t = tok_new(tt.n + n_special);
        for (int id = 0; id < tt.n; id++) rc |= tok_set(t, id, tt.blob + tt.off[id], tt.len[id], 0, src);
        if (n_special) rc |= tok_set(t, tt.n, special, strlen(special), 1, src);
        if (rc == ASA_OK) rc = tok_finish(t, src);
        for (int m = 0; m < n_merges && rc == ASA_OK; m++) rc = tok_add_merge(t, ma[m], mb[m], m, src, "merge");
        ASA_CHECK(rc == ASA_OK);  // the tokens and merges were built consistent above
    }
    free(ma);
    free(mb);
    free(tt.blob);
    free(tt.off);
    free(tt.len);
    if (tt.ids.slots) strmap_free(&tt.ids);
    if (rc != ASA_OK) {
        asa_tokenizer_free(t);
        return ASA_ERR;
    }
    *out = t;
    return ASA_OK;
}
