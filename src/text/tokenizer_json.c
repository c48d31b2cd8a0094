// Hugging Face tokenizer.json for byte-level BPE: loading (with a message naming the file and the key
// for every refused input) and atomic saving in the layout `tokenizers` writes for GPT-2.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/json_limits.h"
#include "text/text_internal.h"

// Decodes a tokenizer.json string (UTF-8 of GPT-2's byte <-> unicode mapping) into bytes; out must hold
// strlen(s) bytes. Returns the length, or -1 if a character is outside the mapping.
static long bytelevel_decode(const char *s, unsigned char *out) {
    const unsigned char *p = (const unsigned char *)s;
    long n = 0;
    while (*p) {
        uint32_t cp;
        if (p[0] < 0x80) {
            cp = p[0];
            p += 1;
        } else if ((p[0] & 0xe0) == 0xc0 && (p[1] & 0xc0) == 0x80) {
            cp = (uint32_t)(p[0] & 0x1f) << 6 | (p[1] & 0x3f);
            p += 2;
        } else {
            return -1;  // every mapped character is below U+0800
        }
        int b = text_char_byte(cp);
        if (b < 0) return -1;
        out[n++] = (unsigned char)b;
    }
    return n;
}

// Appends the UTF-8 of the byte-level string of bytes[0..n) to out (capacity >= 2 * n + 1).
static void bytelevel_encode(const unsigned char *bytes, size_t n, char *out) {
    char *o = out;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = text_byte_char(bytes[i]);
        if (cp < 0x80) {
            *o++ = (char)cp;
        } else {
            *o++ = (char)(0xc0 | (cp >> 6));
            *o++ = (char)(0x80 | (cp & 0x3f));
        }
    }
    *o = 0;
}

static const char *json_kind(const cJSON *v) {
    if (!v) return "missing";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    return "an object";
}

static const cJSON *get(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static int get_id(const cJSON *v, int *id) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < (1 << 30)) ||
        v->valuedouble != (double)(int)v->valuedouble)
        return ASA_ERR;
    *id = (int)v->valuedouble;
    return ASA_OK;
}

// Checks a pre_tokenizer or decoder object: ByteLevel, no prefix space, and (pre-tokenizer) the regex on.
static int check_bytelevel(const cJSON *root, const char *key, int need_regex, const char *src) {
    const cJSON *o = get(root, key);
    if (!cJSON_IsObject(o))
        return asa_err_set("%s: key '%s': must be a ByteLevel object, found %s", src, key, json_kind(o));
    const cJSON *type = get(o, "type");
    if (!cJSON_IsString(type))
        return asa_err_set("%s: key '%s.type': must be \"ByteLevel\", found %s", src, key, json_kind(type));
    if (strcmp(type->valuestring, "ByteLevel") != 0)
        return asa_err_set("%s: key '%s.type': \"%s\" is not supported, only \"ByteLevel\"", src, key,
                           type->valuestring);
    if (need_regex) {
        if (cJSON_IsTrue(get(o, "add_prefix_space")))
            return asa_err_set("%s: key '%s.add_prefix_space': true is not supported (GPT-2 uses false)", src, key);
        if (cJSON_IsFalse(get(o, "use_regex")))
            return asa_err_set("%s: key '%s.use_regex': false is not supported (the GPT-2 regex is always used)", src,
                               key);
    }
    return ASA_OK;
}

typedef struct {
    int id;
    const char *content;
} added_token;

static int load_json(const cJSON *root, const char *src, asa_tokenizer **out) {
    if (!cJSON_IsObject(root)) return asa_err_set("%s: must be a JSON object, found %s", src, json_kind(root));
    const cJSON *model = get(root, "model");
    if (!cJSON_IsObject(model))
        return asa_err_set("%s: key 'model': must be an object, found %s", src, json_kind(model));
    const cJSON *type = get(model, "type");
    if (!cJSON_IsString(type))
        return asa_err_set("%s: key 'model.type': must be the string \"BPE\", found %s", src, json_kind(type));
    if (strcmp(type->valuestring, "BPE") != 0)
        return asa_err_set("%s: key 'model.type': \"%s\" is not supported, only \"BPE\"", src, type->valuestring);
    const cJSON *norm = get(root, "normalizer");
    if (norm) return asa_err_set("%s: key 'normalizer': must be null (byte-level BPE), found %s", src, json_kind(norm));
    if (check_bytelevel(root, "pre_tokenizer", 1, src) || check_bytelevel(root, "decoder", 0, src)) return ASA_ERR;
    const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *a = get(model, affixes[i]);
        if (a && !(cJSON_IsString(a) && a->valuestring[0] == 0))
            return asa_err_set("%s: key 'model.%s': must be null or \"\" for byte-level BPE", src, affixes[i]);
    }
    const cJSON *ign = get(model, "ignore_merges");
    if (ign && !cJSON_IsBool(ign))
        return asa_err_set("%s: key 'model.ignore_merges': must be true or false, found %s", src, json_kind(ign));

    // added_tokens: special tokens, possibly also listed in model.vocab under the same id.
    const cJSON *added = get(root, "added_tokens");
    if (added && !cJSON_IsArray(added))
        return asa_err_set("%s: key 'added_tokens': must be an array, found %s", src, json_kind(added));
    int n_added = added ? cJSON_GetArraySize(added) : 0, max_id = -1;
    added_token *adds = asa_calloc((size_t)n_added + 1, sizeof *adds);
    int i = 0, rc = ASA_OK;
    for (const cJSON *a = added ? added->child : NULL; a && rc == ASA_OK; a = a->next, i++) {
        const cJSON *id = cJSON_IsObject(a) ? get(a, "id") : NULL;
        const cJSON *content = cJSON_IsObject(a) ? get(a, "content") : NULL;
        if (!cJSON_IsObject(a) || get_id(id, &adds[i].id) || !cJSON_IsString(content) || !content->valuestring[0])
            rc = asa_err_set("%s: key 'added_tokens[%d]': must be an object with an integer 'id' >= 0 and a non-empty "
                             "string 'content'",
                             src, i);
        else
            adds[i].content = content->valuestring;
        if (rc == ASA_OK && adds[i].id > max_id) max_id = adds[i].id;
    }

    const cJSON *vocab = get(model, "vocab");
    if (rc == ASA_OK && !cJSON_IsObject(vocab))
        rc = asa_err_set("%s: key 'model.vocab': must be an object of token -> id, found %s", src, json_kind(vocab));
    for (const cJSON *v = rc == ASA_OK ? vocab->child : NULL; v && rc == ASA_OK; v = v->next) {
        int id;
        if (get_id(v, &id))
            rc = asa_err_set("%s: key 'model.vocab': token \"%s\": the id must be an integer >= 0, found %s", src,
                             v->string, json_kind(v));
        else if (id > max_id)
            max_id = id;
    }
    if (rc == ASA_OK && max_id < 0) rc = asa_err_set("%s: key 'model.vocab': is empty", src);
    // Ids are dense, so the largest id is bounded by the tokens given; checked before the id-indexed
    // tables are allocated, so a small file cannot ask for gigabytes with one large id.
    int n_given = rc == ASA_OK ? cJSON_GetArraySize(vocab) + n_added : 0;
    if (rc == ASA_OK && max_id >= n_given)
        rc = asa_err_set("%s: ids must be contiguous from 0, but id %d is given and there are %d tokens", src, max_id,
                         n_given);
    if (rc != ASA_OK) {
        free(adds);
        return ASA_ERR;
    }

    asa_tokenizer *t = tok_new(max_id + 1);
    int *added_of = asa_malloc((size_t)(max_id + 1) * sizeof *added_of);  // id -> index in adds, or -1
    for (int k = 0; k <= max_id; k++) added_of[k] = -1;
    for (int k = 0; k < n_added && rc == ASA_OK; k++) {
        if (added_of[adds[k].id] >= 0)
            rc = asa_err_set("%s: key 'added_tokens': id %d is given to two tokens", src, adds[k].id);
        added_of[adds[k].id] = k;
        if (rc == ASA_OK) rc = tok_set(t, adds[k].id, adds[k].content, strlen(adds[k].content), 1, src);
    }
    unsigned char *buf = NULL;
    size_t buf_cap = 0;
    for (const cJSON *v = vocab->child; v && rc == ASA_OK; v = v->next) {
        int id = (int)v->valuedouble;
        if (added_of[id] >= 0) {
            if (strcmp(adds[added_of[id]].content, v->string) != 0)
                rc = asa_err_set("%s: id %d is \"%s\" in model.vocab but \"%s\" in added_tokens", src, id, v->string,
                                 adds[added_of[id]].content);
            added_of[id] = -2;  // a second vocab entry with this id is a duplicate
            continue;
        }
        if (added_of[id] == -2) {
            rc = asa_err_set("%s: key 'model.vocab': id %d is given to two tokens", src, id);
            break;
        }
        size_t sl = strlen(v->string);
        if (sl + 1 > buf_cap) {
            buf_cap = 2 * (sl + 1);
            free(buf);
            buf = asa_malloc(buf_cap);
        }
        long n = bytelevel_decode(v->string, buf);
        if (n <= 0)
            rc = asa_err_set("%s: key 'model.vocab': token \"%s\" (id %d) is not a byte-level string", src,
                             v->string, id);
        else if (t->tok_off[id] != SIZE_MAX)
            rc = asa_err_set("%s: key 'model.vocab': id %d is given to two tokens", src, id);
        else
            rc = tok_set(t, id, (const char *)buf, (size_t)n, 0, src);
    }
    free(added_of);
    free(adds);
    if (rc == ASA_OK) rc = tok_finish(t, src);
    t->ignore_merges = cJSON_IsTrue(ign);

    const cJSON *merges = get(model, "merges");
    if (rc == ASA_OK && merges && !cJSON_IsArray(merges))
        rc = asa_err_set("%s: key 'model.merges': must be an array, found %s", src, json_kind(merges));
    int rank = 0;
    for (const cJSON *m = merges ? merges->child : NULL; m && rc == ASA_OK; m = m->next, rank++) {
        // "a b" (older files) or ["a", "b"] (tokenizers >= 0.20)
        const char *a = NULL, *b = NULL;
        char *split = NULL;
        if (cJSON_IsString(m)) {
            const char *sp = strchr(m->valuestring, ' ');
            if (sp && sp != m->valuestring && sp[1] && !strchr(sp + 1, ' ')) {
                size_t sl = strlen(m->valuestring);
                split = asa_malloc(sl + 1);
                memcpy(split, m->valuestring, sl + 1);
                split[sp - m->valuestring] = 0;
                a = split;
                b = split + (sp - m->valuestring) + 1;
            }
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            b = m->child->next->valuestring;
        }
        char what[64];
        snprintf(what, sizeof what, "key 'model.merges[%d]'", rank);
        int ids[2] = {-1, -1};
        const char *parts[2] = {a, b};
        if (!a) {
            rc = asa_err_set("%s: %s: must be a string \"a b\" or a pair [\"a\", \"b\"] of tokens", src, what);
        } else {
            for (int k = 0; k < 2 && rc == ASA_OK; k++) {
                size_t sl = strlen(parts[k]);
                if (sl + 1 > buf_cap) {
                    buf_cap = 2 * (sl + 1);
                    free(buf);
                    buf = asa_malloc(buf_cap);
                }
                long n = bytelevel_decode(parts[k], buf);
                ids[k] = n > 0 ? asa_tokenizer_find(t, (const char *)buf, (size_t)n) : -1;
                if (ids[k] < 0) rc = asa_err_set("%s: %s: token \"%s\" is not in the vocabulary", src, what, parts[k]);
            }
        }
        if (rc == ASA_OK) rc = tok_add_merge(t, ids[0], ids[1], rank, src, what);
        free(split);
    }
    free(buf);
    if (rc != ASA_OK) {
        asa_tokenizer_free(t);
        return ASA_ERR;
    }
    *out = t;
    return ASA_OK;
}

// Limits on a tokenizer.json, checked before cJSON builds its tree. Real files are far below them: Llama
// 3's is 9 MB with 128,256 tokens and 280,147 merges, Gemma 3's 33 MB with 262,144 tokens. 2^21 entries
// in the vocabulary or the merge list, and 2^23 values in all (2^21 merges as pairs are 3 values each,
// plus the vocabulary), keep a hostile file's tree under ~600 MB; 256 MB of text holds any such file.
#define TOK_JSON_MAX_BYTES ((size_t)256 << 20)
#define TOK_JSON_MAX_ENTRIES ((size_t)1 << 21)
#define TOK_JSON_MAX_VALUES ((size_t)1 << 23)

int asa_tokenizer_load(const char *path, asa_tokenizer **out) {
    *out = NULL;
    char *data;
    size_t n;
    if (asa_file_read_all(path, TOK_JSON_MAX_BYTES, &data, &n)) return ASA_ERR;
    const asa_json_limits lim = {TOK_JSON_MAX_ENTRIES, TOK_JSON_MAX_VALUES,
                                 " (real tokenizers are far smaller: Llama 3 has 128,256 tokens and 280,147 merges)"};
    if (asa_json_check(data, n, path, &lim)) {
        free(data);
        return ASA_ERR;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(data, &end, 1);
    if (!root) {
        size_t off = end ? (size_t)(end - data) : 0, line = 1;
        for (size_t i = 0; i < off && i < n; i++) line += data[i] == '\n';
        free(data);
        return asa_err_set("%s: not valid JSON (line %zu, byte %zu)", path, line, off);
    }
    free(data);
    int rc = load_json(root, path, out);
    cJSON_Delete(root);
    return rc;
}

static cJSON *bytelevel_object(int add_prefix_space, int trim_offsets) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", trim_offsets);
    cJSON_AddBoolToObject(o, "use_regex", 1);
    return o;
}

int asa_tokenizer_save(const asa_tokenizer *t, const char *path) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int id = 0; id < t->n_vocab; id++) {
        if (!t->special[id]) continue;
        char *content = asa_malloc(t->tok_len[id] + 1);
        memcpy(content, t->blob + t->tok_off[id], t->tok_len[id]);
        content[t->tok_len[id]] = 0;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", id);
        cJSON_AddStringToObject(a, "content", content);
        cJSON_AddBoolToObject(a, "single_word", 0);
        cJSON_AddBoolToObject(a, "lstrip", 0);
        cJSON_AddBoolToObject(a, "rstrip", 0);
        cJSON_AddBoolToObject(a, "normalized", 0);
        cJSON_AddBoolToObject(a, "special", 1);
        cJSON_AddItemToArray(added, a);
        free(content);
    }
    cJSON_AddNullToObject(root, "normalizer");
    // The pre-tokenizer, post-processor and decoder of GPT-2's own tokenizer.json.
    cJSON_AddItemToObject(root, "pre_tokenizer", bytelevel_object(0, 1));
    cJSON_AddItemToObject(root, "post_processor", bytelevel_object(1, 0));
    cJSON_AddItemToObject(root, "decoder", bytelevel_object(1, 1));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddStringToObject(model, "continuing_subword_prefix", "");
    cJSON_AddStringToObject(model, "end_of_word_suffix", "");
    cJSON_AddBoolToObject(model, "fuse_unk", 0);
    cJSON_AddBoolToObject(model, "byte_fallback", 0);
    // Written only when set: older `tokenizers` releases do not know the key.
    if (t->ignore_merges) cJSON_AddBoolToObject(model, "ignore_merges", 1);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    size_t max_len = 0;
    for (int id = 0; id < t->n_vocab; id++)
        if (t->tok_len[id] > max_len) max_len = t->tok_len[id];
    char *s = asa_malloc(4 * max_len + 2), *s2 = asa_malloc(2 * max_len + 1);
    for (int id = 0; id < t->n_vocab; id++) {
        const unsigned char *b = (const unsigned char *)t->blob + t->tok_off[id];
        if (t->special[id]) {
            memcpy(s, b, t->tok_len[id]);
            s[t->tok_len[id]] = 0;
        } else {
            bytelevel_encode(b, t->tok_len[id], s);
        }
        cJSON_AddNumberToObject(vocab, s, id);
    }
    // "a b" strings: readable by every `tokenizers` release, and unambiguous since byte-level strings never
    // contain a space (the byte 0x20 is written as U+0120).
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < t->n_merges; i++) {
        const bpe_merge *m = &t->merges[i];
        bytelevel_encode((const unsigned char *)t->blob + t->tok_off[m->left], t->tok_len[m->left], s);
        bytelevel_encode((const unsigned char *)t->blob + t->tok_off[m->right], t->tok_len[m->right], s2);
        size_t la = strlen(s);
        s[la] = ' ';
        strcpy(s + la + 1, s2);
        cJSON_AddItemToArray(merges, cJSON_CreateString(s));
    }
    free(s);
    free(s2);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) asa_fatal("out of memory printing %s", path);
    int rc = asa_file_write_atomic(path, text, strlen(text));
    cJSON_free(text);
    return rc;
}
