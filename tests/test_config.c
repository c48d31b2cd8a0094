// Tests of config.json loading: the shipped configs (and their parameter counts), layer_kinds
// expansion, defaults, save -> load round trips, and one refused config per validation rule, each
// checked for a message that names the file and the key.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "asa/config.h"
#include "core/error.h"
#include "core/fileio.h"
#include "model/params.h"
#include "testutil.h"

static const char *shipped[] = {"asa-tiny", "transformer-340M", "nsa-340M", "asa-340M",
                                "transformer-1.3B", "nsa-1.3B", "asa-1.3B"};
#define N_SHIPPED ((int)(sizeof shipped / sizeof shipped[0]))

static const char *SRC = "configs/x.json";  // the source name given to asa_config_parse

static const char *BASE_GQA = "{\"vocab_size\": 256, \"hidden_size\": 64, \"num_hidden_layers\": 3,"
                              " \"num_heads\": 4, \"num_kv_heads\": 2, \"head_dim\": 16, \"layer_pattern\": \"FWN\","
                              " \"window_size\": 32, \"block_size\": 8, \"block_counts\": 4,"
                              " \"architectures\": [\"X\"], \"torch_dtype\": \"bfloat16\"}";
static const char *BASE_LAT = "{\"vocab_size\": 256, \"hidden_size\": 64, \"num_hidden_layers\": 4,"
                              " \"num_heads\": 4, \"qk_nope_head_dim\": 16, \"qk_rope_head_dim\": 8,"
                              " \"v_head_dim\": 16, \"kv_lora_rank\": 32, \"latent_groups\": 2, \"latent_dim\": 16,"
                              " \"layer_pattern\": \"GL\", \"window_size\": 32, \"block_size\": 8,"
                              " \"block_counts\": 4}";

// base with keys replaced by JSON values ("<del>" removes the key); pairs end with NULL.
static char *edit_json(const char *base, ...) {
    cJSON *root = cJSON_Parse(base);
    if (!root) { fprintf(stderr, "bad base json\n"); exit(2); }
    va_list ap;
    va_start(ap, base);
    const char *key;
    while ((key = va_arg(ap, const char *))) {
        const char *val = va_arg(ap, const char *);
        cJSON_DeleteItemFromObjectCaseSensitive(root, key);
        if (strcmp(val, "<del>") != 0) {
            cJSON *v = cJSON_Parse(val);
            if (!v) { fprintf(stderr, "bad value %s\n", val); exit(2); }
            cJSON_AddItemToObject(root, key, v);
        }
    }
    va_end(ap);
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    return s;
}

// Loading must fail, and the message must name the source and contain each given substring.
static void expect_fail(const char *what, char *json, ...) {
    asa_config c;
    asa_err_clear();
    int rc = asa_config_parse(json, SRC, &c);
    TU_CHECK(rc == ASA_ERR, "%s: invalid config accepted", what);
    TU_CHECK(strstr(asa_err_msg(), SRC) != NULL, "%s: message does not name the file: %s", what, asa_err_msg());
    va_list ap;
    va_start(ap, json);
    const char *sub;
    while ((sub = va_arg(ap, const char *)))
        TU_CHECK(strstr(asa_err_msg(), sub) != NULL, "%s: message lacks '%s': %s", what, sub, asa_err_msg());
    va_end(ap);
    cJSON_free(json);
}

static int parse_ok(const char *what, char *json, asa_config *c) {
    int rc = asa_config_parse(json, SRC, c);
    TU_CHECK(rc == ASA_OK, "%s: valid config refused: %s", what, asa_err_msg());
    cJSON_free(json);
    return rc == ASA_OK;
}

static void test_shipped(void) {
    // Every file under configs/ loads, and the named set is all there.
    DIR *d = opendir("configs");
    TU_CHECK(d != NULL, "no configs/ directory (run from the repository root)");
    if (!d) return;
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".json") != 0) continue;
        char path[512];
        snprintf(path, sizeof path, "configs/%s", e->d_name);
        asa_config c;
        TU_CHECK(asa_config_load(path, &c) == ASA_OK, "%s: %s", path, asa_err_msg());
        files++;
    }
    closedir(d);
    TU_CHECK(files >= N_SHIPPED, "%d configs found", files);
    for (int i = 0; i < N_SHIPPED; i++) {
        char path[128];
        snprintf(path, sizeof path, "configs/%s.json", shipped[i]);
        TU_CHECK(access(path, R_OK) == 0, "%s missing", path);
    }

    asa_config c;
    TU_CHECK(asa_config_load("configs/asa-tiny.json", &c) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(c.hidden_size == 128 && c.num_hidden_layers == 4 && c.num_heads == 4 && c.qk_nope_head_dim == 32 &&
             c.qk_rope_head_dim == 16 && c.v_head_dim == 32 && c.window_size == 64 && c.block_size == 16 &&
             c.block_counts == 4 && c.selection_share == 4 && c.kv_lora_rank == 64 && c.latent_groups == 2 &&
             c.latent_dim == 32 && c.vocab_size == 4096 && c.max_position_embeddings == 2048 &&
             c.selection_block_size == 16 && strcmp(c.layer_kinds, "GLGL") == 0, "asa-tiny values");
    TU_CHECK(asa_config_load("configs/nsa-340M.json", &c) == ASA_OK && c.num_heads == 32 && c.num_kv_heads == 2 &&
             c.head_dim == 64 && c.block_size == 64 && c.block_counts == 16 && c.window_size == 512 &&
             c.selection_share == 1 && c.intermediate_size == 2816 && c.max_position_embeddings == 8192,
             "nsa-340M values");
    TU_CHECK(asa_config_load("configs/asa-1.3B.json", &c) == ASA_OK && c.hidden_size == 2048 && c.num_heads == 32 &&
             c.kv_lora_rank == 512 && c.latent_groups == 4 && c.latent_dim == 128 && c.intermediate_size == 5632,
             "asa-1.3B values");
}

static void test_param_counts(void) {
    // The names promise a size: 340M and 1.3B, within 10%.
    for (int i = 1; i < N_SHIPPED; i++) {
        char path[128];
        snprintf(path, sizeof path, "configs/%s.json", shipped[i]);
        asa_config c;
        if (asa_config_load(path, &c) != ASA_OK) continue;  // reported by test_shipped
        asa_param_layout L;
        asa_param_counts pc;
        asa_layout_build(&c, &L);
        asa_param_counts_get(&L, &c, &pc);
        double target = strstr(shipped[i], "340M") ? 340e6 : 1.3e9;
        printf("%-18s %12zu parameters (%.1fM; embedding %zu, lm_head %zu, mlp %zu, attention %zu)\n", shipped[i],
               pc.total, pc.total / 1e6, pc.embedding, pc.lm_head, pc.mlp,
               pc.per_kind[0] + pc.per_kind[1] + pc.per_kind[2] + pc.per_kind[3] + pc.per_kind[4]);
        TU_CHECK(fabs(pc.total - target) <= 0.1 * target, "%s: %zu parameters, not within 10%% of %.0f", shipped[i],
                 pc.total, target);
        asa_layout_free(&L);
    }
}

static void test_kinds_and_defaults(void) {
    asa_config c;
    if (parse_ok("GLL x7", edit_json(BASE_LAT, "layer_pattern", "\"GLL\"", "num_hidden_layers", "7", NULL), &c))
        TU_CHECK(strcmp(c.layer_kinds, "GLLGLLG") == 0, "kinds %s", c.layer_kinds);
    // A pattern longer than the model: only the letters in use count, so a key only the unused kind
    // needs is not required.
    if (parse_ok("LG x1", edit_json(BASE_LAT, "layer_pattern", "\"LG\"", "num_hidden_layers", "1", "latent_groups",
                                    "<del>", "latent_dim", "<del>", NULL), &c)) {
        TU_CHECK(strcmp(c.layer_kinds, "L") == 0, "kinds %s", c.layer_kinds);
        TU_CHECK(c.latent_groups == 0 && c.block_size == 0, "unused keys should be left unset");
    }
    // F only: window and block keys are not needed; given anyway (even null or mistyped) they are ignored.
    if (parse_ok("F only", edit_json(BASE_GQA, "layer_pattern", "\"F\"", "block_size", "<del>", "block_counts",
                                     "<del>", "window_size", "null", "latent_dim", "\"unused\"", NULL), &c)) {
        TU_CHECK(strcmp(c.layer_kinds, "FFF") == 0 && c.window_size == 0, "F only kinds %s", c.layer_kinds);
        TU_CHECK(c.selection_share == 1, "selection_share default without G: %d", c.selection_share);
    }

    // Defaults.
    if (parse_ok("defaults GL", edit_json(BASE_LAT, NULL), &c)) {
        TU_CHECK(strcmp(c.model_type, "asa") == 0, "model_type %s", c.model_type);
        TU_CHECK(c.intermediate_size == 256, "intermediate_size for D 64: %d", c.intermediate_size);
        TU_CHECK(c.max_position_embeddings == 2048, "max_position_embeddings %d", c.max_position_embeddings);
        TU_CHECK(c.norm_eps == 1e-6f && c.rope_theta == 10000.0f && c.initializer_range == 0.02f, "float defaults");
        TU_CHECK(c.tie_word_embeddings == 0, "tie default");
        TU_CHECK(c.selection_block_size == 8, "selection_block_size default %d", c.selection_block_size);
        TU_CHECK(c.selection_share == 4, "selection_share default with G: %d", c.selection_share);
        TU_CHECK(strcmp(c.compress, "mean") == 0, "compress default %s", c.compress);
    }
    if (parse_ok("defaults N", edit_json(BASE_GQA, "layer_pattern", "\"N\"", NULL), &c))
        TU_CHECK(c.selection_share == 1 && c.selection_block_size == 8, "N defaults: share %d, b_s %d",
                 c.selection_share, c.selection_block_size);
    // I = 256 * ceil(8/3 * D / 256) at several widths, and explicit values and nulls.
    const int D[] = {96, 128, 1000, 1024, 2048, 4096}, I[] = {256, 512, 2816, 2816, 5632, 11008};
    for (int i = 0; i < 6; i++) {
        char d[16];
        snprintf(d, sizeof d, "%d", D[i]);
        if (parse_ok("I default", edit_json(BASE_LAT, "hidden_size", d, NULL), &c))
            TU_CHECK(c.intermediate_size == I[i], "D %d: intermediate_size %d, expected %d", D[i], c.intermediate_size,
                     I[i]);
    }
    if (parse_ok("explicit", edit_json(BASE_LAT, "intermediate_size", "null", "selection_block_size", "32",
                                       "selection_share", "8", "tie_word_embeddings", "true", "num_heads", "4.0",
                                       "rope_theta", "500000", "model_type", "\"asa-x\"", NULL), &c))
        TU_CHECK(c.intermediate_size == 256 && c.selection_block_size == 32 && c.selection_share == 8 &&
                 c.tie_word_embeddings == 1 && c.num_heads == 4 && c.rope_theta == 500000.0f &&
                 strcmp(c.model_type, "asa-x") == 0, "explicit values");
}

static int configs_equal(const asa_config *a, const asa_config *b) { return memcmp(a, b, sizeof *a) == 0; }

static void test_roundtrip(void) {
    char dir[] = "/tmp/asa_test_cfg_XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); exit(2); }
    char out[256];
    snprintf(out, sizeof out, "%s/config.json", dir);
    asa_config a, b;
    for (int i = 0; i < N_SHIPPED + 3; i++) {
        int ok;
        if (i < N_SHIPPED) {
            char path[128];
            snprintf(path, sizeof path, "configs/%s.json", shipped[i]);
            ok = asa_config_load(path, &a) == ASA_OK;
        } else if (i == N_SHIPPED) {
            ok = parse_ok("rt gqa", edit_json(BASE_GQA, "norm_eps", "1e-5", "initializer_range", "0.006",
                                              "selection_block_size", "16", "selection_share", "2", NULL), &a);
        } else if (i == N_SHIPPED + 1) {
            ok = parse_ok("rt lat", edit_json(BASE_LAT, "layer_pattern", "\"LLLG\"", "num_hidden_layers", "9",
                                              "tie_word_embeddings", "true", "rope_theta", "123456.7", NULL), &a);
        } else {
            // Keys of unused kinds given in the input are dropped on save, and the result still matches.
            ok = parse_ok("rt unused", edit_json(BASE_GQA, "layer_pattern", "\"W\"", "kv_lora_rank", "77", NULL), &a);
        }
        if (!ok) continue;
        TU_CHECK(asa_config_save(&a, out) == ASA_OK, "save %d: %s", i, asa_err_msg());
        TU_CHECK(asa_config_load(out, &b) == ASA_OK, "reload %d: %s", i, asa_err_msg());
        TU_CHECK(configs_equal(&a, &b), "round trip %d changed the config", i);
    }
    // The file is pretty JSON with one key per line, and no temp file is left behind.
    char *text;
    size_t len;
    TU_CHECK(asa_file_read_all(out, 1 << 20, &text, &len) == ASA_OK && text[0] == '{' &&
             strstr(text, "\n  \"rope_theta\": 10000,\n") &&
             strstr(text, "\n  \"norm_eps\": 1e-06,\n") && strstr(text, "\n  \"window_size\": 32\n}\n") && !strstr(text, "kv_lora_rank") &&
             !strstr(text, "block_size"), "saved text:\n%s", text);
    free(text);
    DIR *d = opendir(dir);
    struct dirent *e;
    int entries = 0;
    while ((e = readdir(d))) entries += e->d_name[0] != '.';
    closedir(d);
    TU_CHECK(entries == 1, "%d files in the output directory (temp file left?)", entries);
    // Saving an invalid config is refused and leaves the previous file.
    a.num_heads = 3;
    TU_CHECK(asa_config_save(&a, out) == ASA_ERR && strstr(asa_err_msg(), "num_kv_heads"), "invalid save: %s",
             asa_err_msg());
    TU_CHECK(asa_config_load(out, &b) == ASA_OK, "previous file damaged");
    unlink(out);
    rmdir(dir);
}

static void test_errors(void) {
    const char *G = BASE_GQA, *L = BASE_LAT;
    // Missing required keys (model-wide, and required by a layer kind of the pattern).
    expect_fail("missing vocab_size", edit_json(L, "vocab_size", "<del>", NULL), "\"vocab_size\"", "missing", NULL);
    expect_fail("missing hidden_size", edit_json(G, "hidden_size", "<del>", NULL), "\"hidden_size\"", NULL);
    expect_fail("missing num_hidden_layers", edit_json(G, "num_hidden_layers", "<del>", NULL), "\"num_hidden_layers\"", NULL);
    expect_fail("missing num_heads", edit_json(G, "num_heads", "<del>", NULL), "\"num_heads\"", NULL);
    expect_fail("missing layer_pattern", edit_json(G, "layer_pattern", "<del>", NULL), "\"layer_pattern\"", NULL);
    expect_fail("missing num_kv_heads", edit_json(G, "num_kv_heads", "<del>", NULL), "\"num_kv_heads\"", NULL);
    expect_fail("null head_dim", edit_json(G, "head_dim", "null", NULL), "\"head_dim\"", "missing", NULL);
    expect_fail("missing qk_nope", edit_json(L, "qk_nope_head_dim", "<del>", NULL), "\"qk_nope_head_dim\"", NULL);
    expect_fail("missing qk_rope", edit_json(L, "qk_rope_head_dim", "<del>", NULL), "\"qk_rope_head_dim\"", NULL);
    expect_fail("missing v_head_dim", edit_json(L, "v_head_dim", "<del>", NULL), "\"v_head_dim\"", NULL);
    expect_fail("missing kv_lora_rank", edit_json(L, "kv_lora_rank", "<del>", NULL), "\"kv_lora_rank\"", "L layers", NULL);
    expect_fail("missing latent_groups", edit_json(L, "latent_groups", "<del>", NULL), "\"latent_groups\"", NULL);
    expect_fail("missing latent_dim", edit_json(L, "latent_dim", "<del>", NULL), "\"latent_dim\"", NULL);
    expect_fail("missing window (L)", edit_json(L, "window_size", "<del>", NULL), "\"window_size\"", NULL);
    expect_fail("missing window (W)", edit_json(G, "layer_pattern", "\"W\"", "window_size", "<del>", NULL),
                "\"window_size\"", NULL);
    expect_fail("missing block_size (N)", edit_json(G, "block_size", "<del>", NULL), "\"block_size\"", NULL);
    expect_fail("missing block_counts (G)", edit_json(L, "block_counts", "<del>", NULL), "\"block_counts\"", NULL);

    // Wrong JSON types.
    expect_fail("string for int", edit_json(G, "hidden_size", "\"64\"", NULL), "\"hidden_size\"", "integer", NULL);
    expect_fail("float for int", edit_json(G, "num_heads", "12.5", NULL), "\"num_heads\"", "integer", NULL);
    expect_fail("bool for int", edit_json(G, "vocab_size", "true", NULL), "\"vocab_size\"", NULL);
    expect_fail("huge int", edit_json(G, "vocab_size", "1e12", NULL), "\"vocab_size\"", NULL);
    expect_fail("array for int", edit_json(L, "latent_dim", "[16]", NULL), "\"latent_dim\"", NULL);
    expect_fail("number for bool", edit_json(G, "tie_word_embeddings", "1", NULL), "\"tie_word_embeddings\"", NULL);
    expect_fail("string for bool", edit_json(G, "tie_word_embeddings", "\"true\"", NULL), "\"tie_word_embeddings\"", NULL);
    expect_fail("string for float", edit_json(G, "norm_eps", "\"1e-6\"", NULL), "\"norm_eps\"", NULL);
    expect_fail("float overflow", edit_json(G, "rope_theta", "1e300", NULL), "\"rope_theta\"", NULL);
    expect_fail("number for string", edit_json(G, "layer_pattern", "5", NULL), "\"layer_pattern\"", NULL);
    expect_fail("number for compress", edit_json(G, "compress", "0", NULL), "\"compress\"", NULL);
    expect_fail("long model_type", edit_json(G, "model_type", "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", NULL),
                "\"model_type\"", NULL);
    expect_fail("empty model_type", edit_json(G, "model_type", "\"\"", NULL), "\"model_type\"", NULL);

    // Zero or negative sizes.
    expect_fail("zero hidden", edit_json(G, "hidden_size", "0", NULL), "\"hidden_size\"", "> 0", NULL);
    expect_fail("negative vocab", edit_json(G, "vocab_size", "-5", NULL), "\"vocab_size\"", NULL);
    expect_fail("zero intermediate", edit_json(G, "intermediate_size", "0", NULL), "\"intermediate_size\"", NULL);
    expect_fail("zero max_pos", edit_json(G, "max_position_embeddings", "0", NULL), "\"max_position_embeddings\"", NULL);
    expect_fail("zero layers", edit_json(G, "num_hidden_layers", "0", NULL), "\"num_hidden_layers\"", NULL);
    expect_fail("zero heads", edit_json(G, "num_heads", "0", NULL), "\"num_heads\"", NULL);
    expect_fail("zero kv heads", edit_json(G, "num_kv_heads", "0", NULL), "\"num_kv_heads\"", NULL);
    expect_fail("negative window", edit_json(G, "window_size", "-1", NULL), "\"window_size\"", NULL);
    expect_fail("zero block", edit_json(G, "block_size", "0", NULL), "\"block_size\"", NULL);
    expect_fail("zero sel block", edit_json(G, "selection_block_size", "0", NULL), "\"selection_block_size\"", NULL);
    expect_fail("zero share", edit_json(L, "selection_share", "0", NULL), "\"selection_share\"", NULL);
    expect_fail("zero latent_dim", edit_json(L, "latent_dim", "0", NULL), "\"latent_dim\"", NULL);
    expect_fail("zero kv_lora", edit_json(L, "kv_lora_rank", "0", NULL), "\"kv_lora_rank\"", NULL);
    expect_fail("zero v_head", edit_json(L, "v_head_dim", "-16", NULL), "\"v_head_dim\"", NULL);
    expect_fail("zero qk_nope", edit_json(L, "qk_nope_head_dim", "0", NULL), "\"qk_nope_head_dim\"", NULL);
    expect_fail("negative init range", edit_json(G, "initializer_range", "-0.02", NULL), "\"initializer_range\"", NULL);

    // Cross-key rules.
    expect_fail("h % g", edit_json(G, "num_heads", "12", "num_kv_heads", "5", NULL),
                "configs/x.json: key \"num_kv_heads\": num_heads (12) is not divisible by num_kv_heads (5)", NULL);
    expect_fail("h % latent_groups", edit_json(L, "latent_groups", "3", NULL), "\"latent_groups\"", "divisible", NULL);
    expect_fail("b_s % b", edit_json(G, "selection_block_size", "12", NULL), "\"selection_block_size\"", "multiple",
                NULL);
    expect_fail("b_s % R", edit_json(L, "selection_block_size", "16", "selection_share", "3", NULL),
                "\"selection_share\"", "divisible", NULL);
    expect_fail("odd qk_rope", edit_json(L, "qk_rope_head_dim", "7", NULL), "\"qk_rope_head_dim\"", "even", NULL);
    expect_fail("odd head_dim", edit_json(G, "head_dim", "15", NULL), "\"head_dim\"", "even", NULL);
    expect_fail("unknown letter", edit_json(L, "layer_pattern", "\"GXL\"", NULL), "\"layer_pattern\"", "'X'",
                "position 1", NULL);
    expect_fail("lowercase letter", edit_json(L, "layer_pattern", "\"Gl\"", NULL), "\"layer_pattern\"", "'l'", NULL);
    expect_fail("empty pattern", edit_json(L, "layer_pattern", "\"\"", NULL), "\"layer_pattern\"", "empty", NULL);
    char longpat[300 + 3];
    longpat[0] = '"';
    memset(longpat + 1, 'G', 300);
    strcpy(longpat + 301, "\"");
    expect_fail("long pattern", edit_json(L, "layer_pattern", longpat, NULL), "\"layer_pattern\"", NULL);
    expect_fail("too many layers", edit_json(L, "num_hidden_layers", "257", NULL), "\"num_hidden_layers\"", "256", NULL);
    expect_fail("block_counts < 3", edit_json(L, "block_counts", "2", NULL), "\"block_counts\"", ">= 3", NULL);
    expect_fail("block_counts < 3 (N)", edit_json(G, "block_counts", "1", NULL), "\"block_counts\"", NULL);
    expect_fail("compress", edit_json(L, "compress", "\"mlp\"", NULL), "\"compress\"", "mean", NULL);
    expect_fail("norm_eps 0", edit_json(L, "norm_eps", "0", NULL), "\"norm_eps\"", NULL);
    expect_fail("norm_eps < 0", edit_json(L, "norm_eps", "-1e-6", NULL), "\"norm_eps\"", NULL);
    expect_fail("norm_eps underflow", edit_json(L, "norm_eps", "1e-60", NULL), "\"norm_eps\"", NULL);
    expect_fail("rope_theta 0", edit_json(L, "rope_theta", "0", NULL), "\"rope_theta\"", NULL);
    expect_fail("rope_theta < 0", edit_json(G, "rope_theta", "-10000", NULL), "\"rope_theta\"", NULL);
    expect_fail("dims too large", edit_json(G, "num_heads", "65536", "num_kv_heads", "1", "head_dim", "65536", NULL),
                "\"head_dim\"", "too large", NULL);
    expect_fail("duplicate key", strdup("{\"vocab_size\": 1, \"vocab_size\": 2}"), "\"vocab_size\"", "2 times", NULL);

    // JSON syntax errors (with the line), and a document that is not an object.
    expect_fail("syntax", strdup("{\n  \"vocab_size\": 256,\n  \"hidden_size\" 64\n}\n"), "line 3", NULL);
    expect_fail("trailing comma", strdup("{\n\"a\": 1,\n}"), "line 3", NULL);
    expect_fail("empty text", strdup(""), "syntax", NULL);
    expect_fail("trailing garbage", strdup("{} {}"), "syntax", NULL);
    // Nested 10,000 deep (on line 2): refused by cJSON's depth limit, and the message says that, not "syntax".
    char *deep = malloc(20000 + 32);
    int k = sprintf(deep, "{\"vocab_size\":\n");
    for (int i = 0; i < 10000; i++) deep[k++] = '[';
    for (int i = 0; i < 10000; i++) deep[k++] = ']';
    strcpy(deep + k, "}");
    expect_fail("10,000 deep", deep, "JSON nested more than 1000 levels deep (at line 2)", NULL);
    // 1000 levels (the object and 999 arrays) are within the limit: then it is the key's type that is wrong.
    deep = malloc(2000 + 32);
    k = sprintf(deep, "{\"vocab_size\":");
    for (int i = 0; i < 999; i++) deep[k++] = '[';
    for (int i = 0; i < 999; i++) deep[k++] = ']';
    strcpy(deep + k, "}");
    expect_fail("1000 deep", deep, "\"vocab_size\"", "must be an integer, found an array", NULL);
    expect_fail("not an object", strdup("[1, 2]"), "object", NULL);

    // asa_config_load errors name the path: missing file, directory, bad file on disk.
    asa_config c;
    TU_CHECK(asa_config_load("configs/no-such-config.json", &c) == ASA_ERR &&
             strstr(asa_err_msg(), "configs/no-such-config.json"), "missing file: %s", asa_err_msg());
    TU_CHECK(asa_config_load("configs", &c) == ASA_ERR && strstr(asa_err_msg(), "configs") &&
             strstr(asa_err_msg(), "directory"), "directory: %s", asa_err_msg());
    char dir[] = "/tmp/asa_test_cfg_XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); exit(2); }
    char path[256];
    snprintf(path, sizeof path, "%s/bad.json", dir);
    char *bad = edit_json(L, "latent_groups", "3", NULL);
    TU_CHECK(asa_file_write_atomic(path, bad, strlen(bad)) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(asa_config_load(path, &c) == ASA_ERR && strstr(asa_err_msg(), path) &&
             strstr(asa_err_msg(), "\"latent_groups\""), "bad file: %s", asa_err_msg());
    TU_CHECK(asa_file_write_atomic(path, "{\"a\":\0}", 7) == ASA_OK, "%s", asa_err_msg());
    TU_CHECK(asa_config_load(path, &c) == ASA_ERR && strstr(asa_err_msg(), path), "NUL byte: %s", asa_err_msg());
    cJSON_free(bad);
    unlink(path);
    rmdir(dir);

    // Validation of a config built in code (as tests and the CLI do).
    asa_config v;
    if (parse_ok("base", edit_json(L, NULL), &v)) {
        v.latent_groups = 3;
        TU_CHECK(asa_config_validate(&v, "code") == ASA_ERR && strstr(asa_err_msg(), "\"latent_groups\""), "validate");
        v.latent_groups = 2;
        strcpy(v.layer_pattern, "LLG");
        v.num_hidden_layers = 5;
        TU_CHECK(asa_config_validate(&v, "code") == ASA_OK && strcmp(v.layer_kinds, "LLGLL") == 0,
                 "validate fills layer_kinds: %s", v.layer_kinds);
    }
}

int main(void) {
    test_shipped();
    test_param_counts();
    test_kinds_and_defaults();
    test_roundtrip();
    test_errors();
    return tu_finish("test_config");
}
