// config.json parsing, validation and saving (include/asa/config.h). One table lists every key with its
// type, its field and the layer kinds that use it, so that reading, the required-key rules, the
// positivity checks and saving all follow the same list.
#include "asa/config.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/json_limits.h"

#define CONFIG_MAX_BYTES ((size_t)1 << 20)
#define KNOWN_KINDS "FWNLG"

typedef enum { T_INT, T_FLOAT, T_BOOL, T_STR } key_type;

typedef struct {
    const char *name;
    key_type type;
    size_t off;
    size_t size;        // T_STR: capacity of the char array
    const char *kinds;  // layer kinds that use the key; NULL: every model
    int required;       // when used; otherwise a default applies
} key_def;

#define F(field) offsetof(asa_config, field)
#define S(field) sizeof(((asa_config *)0)->field)
static const key_def keys[] = {
    {"model_type", T_STR, F(model_type), S(model_type), NULL, 0},
    {"vocab_size", T_INT, F(vocab_size), 0, NULL, 1},
    {"hidden_size", T_INT, F(hidden_size), 0, NULL, 1},
    {"intermediate_size", T_INT, F(intermediate_size), 0, NULL, 0},
    {"num_hidden_layers", T_INT, F(num_hidden_layers), 0, NULL, 1},
    {"max_position_embeddings", T_INT, F(max_position_embeddings), 0, NULL, 0},
    {"norm_eps", T_FLOAT, F(norm_eps), 0, NULL, 0},
    {"rope_theta", T_FLOAT, F(rope_theta), 0, NULL, 0},
    {"initializer_range", T_FLOAT, F(initializer_range), 0, NULL, 0},
    {"tie_word_embeddings", T_BOOL, F(tie_word_embeddings), 0, NULL, 0},
    {"layer_pattern", T_STR, F(layer_pattern), S(layer_pattern), NULL, 1},
    {"num_heads", T_INT, F(num_heads), 0, NULL, 1},
    {"num_kv_heads", T_INT, F(num_kv_heads), 0, "FWN", 1},
    {"head_dim", T_INT, F(head_dim), 0, "FWN", 1},
    {"qk_nope_head_dim", T_INT, F(qk_nope_head_dim), 0, "LG", 1},
    {"qk_rope_head_dim", T_INT, F(qk_rope_head_dim), 0, "LG", 1},
    {"v_head_dim", T_INT, F(v_head_dim), 0, "LG", 1},
    {"kv_lora_rank", T_INT, F(kv_lora_rank), 0, "L", 1},
    {"latent_groups", T_INT, F(latent_groups), 0, "G", 1},
    {"latent_dim", T_INT, F(latent_dim), 0, "G", 1},
    {"window_size", T_INT, F(window_size), 0, "WNL", 1},
    {"block_size", T_INT, F(block_size), 0, "NG", 1},
    {"selection_block_size", T_INT, F(selection_block_size), 0, "NG", 0},
    {"block_counts", T_INT, F(block_counts), 0, "NG", 1},
    {"selection_share", T_INT, F(selection_share), 0, "NG", 0},
    {"compress", T_STR, F(compress), S(compress), "NG", 0},
};
#undef F
#undef S
#define N_KEYS ((int)(sizeof keys / sizeof keys[0]))

static int *int_at(asa_config *c, const key_def *k) { return (int *)((char *)c + k->off); }
static float *float_at(asa_config *c, const key_def *k) { return (float *)((char *)c + k->off); }
static char *str_at(asa_config *c, const key_def *k) { return (char *)c + k->off; }

static int key_err(const char *src, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int key_err(const char *src, const char *key, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return asa_err_set("%s: key \"%s\": %s", src, key, msg);
}

static const char *json_type(const cJSON *v) {
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "null";
}

// Does any layer of cfg->layer_kinds use a key of these kinds?
static int kinds_used(const asa_config *c, const char *kinds) {
    if (!kinds) return 1;
    for (const char *k = kinds; *k; k++) if (asa_config_has_kind(c, *k)) return 1;
    return 0;
}

static int read_key(const cJSON *v, const key_def *k, const char *src, asa_config *c) {
    switch (k->type) {
    case T_INT: {
        if (!cJSON_IsNumber(v)) return key_err(src, k->name, "must be an integer, found %s", json_type(v));
        double d = v->valuedouble;
        if (d != floor(d) || d < INT_MIN || d > INT_MAX)
            return key_err(src, k->name, "must be an integer, found %g", d);
        *int_at(c, k) = (int)d;
        return ASA_OK;
    }
    case T_FLOAT:
        if (!cJSON_IsNumber(v)) return key_err(src, k->name, "must be a number, found %s", json_type(v));
        if (!isfinite((float)v->valuedouble)) return key_err(src, k->name, "%g is out of range", v->valuedouble);
        *float_at(c, k) = (float)v->valuedouble;
        return ASA_OK;
    case T_BOOL:
        if (!cJSON_IsBool(v)) return key_err(src, k->name, "must be true or false, found %s", json_type(v));
        *int_at(c, k) = cJSON_IsTrue(v);
        return ASA_OK;
    case T_STR:
        if (!cJSON_IsString(v)) return key_err(src, k->name, "must be a string, found %s", json_type(v));
        if (strlen(v->valuestring) >= k->size)
            return key_err(src, k->name, "longer than %zu characters", k->size - 1);
        strcpy(str_at(c, k), v->valuestring);
        return ASA_OK;
    }
    return ASA_ERR;
}

// The value of a key, or NULL when absent or null (HF configs write null for "use the default").
static const cJSON *get_key(const cJSON *root, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static int read_keys(const cJSON *root, const char *src, asa_config *c, int model_wide) {
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &keys[i];
        if ((k->kinds == NULL) != model_wide || !kinds_used(c, k->kinds)) continue;
        const cJSON *v = get_key(root, k->name);
        if (!v) {
            if (!k->required) continue;
            if (!k->kinds) return key_err(src, k->name, "missing (required for every model)");
            char used[16] = "";
            for (const char *l = k->kinds; *l; l++)
                if (asa_config_has_kind(c, *l)) snprintf(used + strlen(used), sizeof used - strlen(used), "%s%c",
                                                         used[0] ? ", " : "", *l);
            return key_err(src, k->name, "missing (required by the %s layers of layer_pattern \"%s\")", used,
                           c->layer_pattern);
        }
        if (read_key(v, k, src, c)) return ASA_ERR;
    }
    return ASA_OK;
}

// Expands layer_pattern into layer_kinds after checking the pattern and the layer count.
static int fill_kinds(asa_config *c, const char *src) {
    size_t n = strnlen(c->layer_pattern, sizeof c->layer_pattern);
    if (n == 0) return key_err(src, "layer_pattern", "is empty");
    if (n > ASA_MAX_LAYERS) return key_err(src, "layer_pattern", "longer than %d letters", ASA_MAX_LAYERS);
    for (size_t i = 0; i < n; i++)
        if (!strchr(KNOWN_KINDS, c->layer_pattern[i])) {
            unsigned char ch = (unsigned char)c->layer_pattern[i];
            if (ch > ' ' && ch < 127)
                return key_err(src, "layer_pattern", "unknown layer letter '%c' at position %zu (known: F W N L G)", ch, i);
            return key_err(src, "layer_pattern", "unknown layer byte 0x%02x at position %zu (known: F W N L G)", ch, i);
        }
    if (c->num_hidden_layers <= 0)
        return key_err(src, "num_hidden_layers", "must be > 0, found %d", c->num_hidden_layers);
    if (c->num_hidden_layers > ASA_MAX_LAYERS)
        return key_err(src, "num_hidden_layers", "%d is more than the maximum of %d", c->num_hidden_layers,
                       ASA_MAX_LAYERS);
    for (int l = 0; l < c->num_hidden_layers; l++) c->layer_kinds[l] = c->layer_pattern[(size_t)l % n];
    memset(c->layer_kinds + c->num_hidden_layers, 0, sizeof c->layer_kinds - (size_t)c->num_hidden_layers);
    return ASA_OK;
}

// Products that become int tensor dimensions in the parameter layout must fit an int.
static int check_product(const char *src, const char *key, const char *what, int64_t v) {
    if (v > INT_MAX) return key_err(src, key, "%s = %lld is too large", what, (long long)v);
    return ASA_OK;
}

int asa_config_validate(asa_config *c, const char *src) {
    if (strnlen(c->model_type, sizeof c->model_type) == sizeof c->model_type || !c->model_type[0])
        return key_err(src, "model_type", "must be a non-empty string");
    if (fill_kinds(c, src)) return ASA_ERR;
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &keys[i];
        if (k->type != T_INT || !kinds_used(c, k->kinds)) continue;
        int v = *int_at(c, k);
        if (strcmp(k->name, "block_counts") == 0) {
            if (v < 3)
                return key_err(src, k->name, "must be >= 3 (blocks 0, c-1 and c are always selected), found %d", v);
        } else if (v <= 0) {
            return key_err(src, k->name, "must be > 0, found %d", v);
        }
    }
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps)) return key_err(src, "norm_eps", "must be > 0, found %g", c->norm_eps);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return key_err(src, "rope_theta", "must be > 0, found %g", c->rope_theta);
    if (!(c->initializer_range >= 0) || !isfinite(c->initializer_range))
        return key_err(src, "initializer_range", "must be >= 0, found %g", c->initializer_range);

    const int64_t h = c->num_heads;
    if (kinds_used(c, "FWN")) {
        if (h % c->num_kv_heads)
            return key_err(src, "num_kv_heads", "num_heads (%d) is not divisible by num_kv_heads (%d)", c->num_heads,
                           c->num_kv_heads);
        if (c->head_dim % 2)
            return key_err(src, "head_dim", "must be even (RoPE rotates the whole head), found %d", c->head_dim);
        if (check_product(src, "head_dim", "num_heads * head_dim", h * c->head_dim) ||
            check_product(src, "num_heads", "3 * num_heads", 3 * h))
            return ASA_ERR;
    }
    if (kinds_used(c, "LG")) {
        if (c->qk_rope_head_dim % 2)
            return key_err(src, "qk_rope_head_dim", "must be even (RoPE rotates pairs), found %d", c->qk_rope_head_dim);
        int64_t dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
        if (check_product(src, "qk_nope_head_dim", "num_heads * (qk_nope_head_dim + qk_rope_head_dim)", h * (dn + dr)) ||
            check_product(src, "v_head_dim", "num_heads * (qk_nope_head_dim + v_head_dim)", h * (dn + dv)))
            return ASA_ERR;
    }
    if (kinds_used(c, "G")) {
        if (h % c->latent_groups)
            return key_err(src, "latent_groups", "num_heads (%d) is not divisible by latent_groups (%d)", c->num_heads,
                           c->latent_groups);
        if (check_product(src, "latent_dim", "latent_groups * latent_dim", (int64_t)c->latent_groups * c->latent_dim))
            return ASA_ERR;
    }
    if (kinds_used(c, "NG")) {
        if (c->selection_block_size % c->block_size)
            return key_err(src, "selection_block_size", "%d is not a multiple of block_size (%d)",
                           c->selection_block_size, c->block_size);
        if (c->selection_block_size % c->selection_share)
            return key_err(src, "selection_share", "selection_block_size (%d) is not divisible by selection_share (%d)",
                           c->selection_block_size, c->selection_share);
        if (strcmp(c->compress, "mean") != 0)
            return key_err(src, "compress", "\"%.15s\" is not supported (only \"mean\")", c->compress);
    }
    return ASA_OK;
}

// Line and column of a byte offset, for JSON syntax errors.
static void line_col(const char *text, size_t pos, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < pos && text[i]; i++) {
        if (text[i] == '\n') { (*line)++; *col = 1; }
        else (*col)++;
    }
}

int asa_config_parse(const char *json_text, const char *src, asa_config *c) {
    memset(c, 0, sizeof *c);
    // config.json is at most CONFIG_MAX_BYTES, so only the nesting needs a check of its own.
    if (asa_json_check(json_text, strlen(json_text), src, NULL)) return ASA_ERR;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json_text, &end, 1);
    if (!root) {
        int line, col;
        line_col(json_text, end && end >= json_text ? (size_t)(end - json_text) : 0, &line, &col);
        return asa_err_set("%s: JSON syntax error at line %d, column %d", src, line, col);
    }
    int rc = ASA_ERR;
    if (!cJSON_IsObject(root)) {
        asa_err_set("%s: the config must be a JSON object, found %s", src, json_type(root));
        goto done;
    }
    // A key given twice is ambiguous (parsers disagree on which one wins): refuse it.
    for (int i = 0; i < N_KEYS; i++) {
        int seen = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, root) seen += strcmp(v->string, keys[i].name) == 0;
        if (seen > 1) { key_err(src, keys[i].name, "appears %d times", seen); goto done; }
    }
    strcpy(c->model_type, "asa");
    c->max_position_embeddings = 2048;
    c->norm_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->initializer_range = 0.02f;
    strcpy(c->compress, "mean");
    // Model-wide keys first: the pattern decides which of the other keys are required.
    if (read_keys(root, src, c, 1) || fill_kinds(c, src) || read_keys(root, src, c, 0)) goto done;
    // Defaults that depend on other keys. Keys of kinds the pattern does not use were not read, so
    // their defaults apply too: a saved config (which omits them) then loads back identical.
    if (!get_key(root, "intermediate_size")) {
        int64_t units = ((int64_t)8 * c->hidden_size + 767) / 768;  // ceil(8/3 * D / 256)
        c->intermediate_size = units * 256 > INT_MAX ? INT_MAX : (int)(units * 256);
    }
    if (!kinds_used(c, "NG") || !get_key(root, "selection_block_size")) c->selection_block_size = c->block_size;
    if (!kinds_used(c, "NG") || !get_key(root, "selection_share"))
        c->selection_share = asa_config_has_kind(c, 'G') ? 4 : 1;
    rc = asa_config_validate(c, src);
done:
    cJSON_Delete(root);
    return rc;
}

int asa_config_load(const char *path, asa_config *cfg) {
    char *text;
    size_t len;
    if (asa_file_read_all(path, CONFIG_MAX_BYTES, &text, &len)) return ASA_ERR;
    int rc;
    if (strlen(text) != len) rc = asa_err_set("%s: contains a NUL byte; a config is JSON text", path);
    else rc = asa_config_parse(text, path, cfg);
    free(text);
    return rc;
}

// The shortest decimal that reads back as the same float ("1e-06", not "9.99999997e-07"), and whole
// numbers as such ("10000", not "1e+04").
static void float_str(char *buf, size_t n, float x) {
    if (x == floorf(x) && fabsf(x) < 1e15f) {
        snprintf(buf, n, "%.0f", (double)x);
        return;
    }
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, n, "%.*g", p, (double)x);
        if (strtof(buf, NULL) == x) return;
    }
}

int asa_config_save(const asa_config *cfg, const char *path) {
    asa_config c = *cfg;
    if (asa_config_validate(&c, path)) return ASA_ERR;
    size_t cap = 16384, len = 0;
    char *out = asa_malloc(cap);
    len += (size_t)snprintf(out, cap, "{");
    int first = 1;
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &keys[i];
        if (!kinds_used(&c, k->kinds)) continue;
        cJSON *item;
        char num[32];
        switch (k->type) {
        case T_INT: item = cJSON_CreateNumber(*int_at(&c, k)); break;
        case T_FLOAT: float_str(num, sizeof num, *float_at(&c, k)); item = cJSON_CreateRaw(num); break;
        case T_BOOL: item = cJSON_CreateBool(*int_at(&c, k)); break;
        default: item = cJSON_CreateString(str_at(&c, k)); break;
        }
        char *val = cJSON_PrintUnformatted(item);
        ASA_CHECK(val != NULL);
        len += (size_t)snprintf(out + len, cap - len, "%s\n  \"%s\": %s", first ? "" : ",", k->name, val);
        ASA_CHECK(len < cap);  // the longest value is layer_pattern, 256 letters
        first = 0;
        cJSON_free(val);
        cJSON_Delete(item);
    }
    len += (size_t)snprintf(out + len, cap - len, "\n}\n");
    ASA_CHECK(len < cap);
    int rc = asa_file_write_atomic(path, out, len);
    free(out);
    return rc;
}
