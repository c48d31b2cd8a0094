// The training run (trainer.h): option resolution, run directory, checkpoints and the loop.
#include "train/trainer.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/json_limits.h"
#include "core/safetensors.h"
#include "data/synthetic.h"
#include "model/weights_io.h"
#include "train/svg.h"

#define SMALL_FILE_MAX ((size_t)16 << 20)  // trainer_state.json, latest, log lines, tokenizer.json copies
#define LOG_FILE_MAX ((size_t)1 << 30)
#define CKPT_NAME_LEN 12                   // "step-" + 7 digits

// ------------------------------------------------------------------------------------------- helpers

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *path_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *p = asa_malloc(na + nb + 2);
    memcpy(p, a, na);
    p[na] = '/';
    memcpy(p + na + 1, b, nb + 1);
    return p;
}

static int path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int mkdir_p(const char *path) {
    size_t n = strlen(path);
    char *p = asa_malloc(n + 1);
    memcpy(p, path, n + 1);
    int rc = ASA_OK;
    for (size_t i = 1; i <= n && rc == ASA_OK; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char c = p[i];
        p[i] = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) rc = asa_err_set("%s: cannot create directory: %s", p, strerror(errno));
        else if (!is_dir(p)) rc = asa_err_set("%s: exists and is not a directory", p);
        p[i] = c;
    }
    free(p);
    return rc;
}

// 1 if the directory has no entries besides . and .., 0 if it has some, ASA_ERR if it cannot be read.
static int dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return asa_err_set("%s: cannot read directory: %s", path, strerror(errno));
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    return empty;
}

static int fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return asa_err_set("%s: cannot open directory to sync it: %s", path, strerror(errno));
    int rc = ASA_OK;
    if (fsync(fd) != 0 && errno != EINVAL) rc = asa_err_set("%s: cannot sync directory: %s", path, strerror(errno));
    close(fd);
    return rc;
}

// Removes a checkpoint directory: it holds plain files only (ours, and temp files of an interrupted
// atomic write), so one level suffices and anything else is left for the user to see.
static int rm_flat_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) return errno == ENOENT ? ASA_OK : asa_err_set("%s: cannot read directory: %s", path, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *f = path_join(path, e->d_name);
        unlink(f);
        free(f);
    }
    closedir(d);
    if (rmdir(path) != 0) return asa_err_set("%s: cannot remove directory: %s", path, strerror(errno));
    return ASA_OK;
}

// Removes the files of dir whose names start with prefix (temp files of an interrupted atomic write).
static void remove_temp_files(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = strlen(prefix);
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, prefix, n)) continue;
        char *p = path_join(dir, e->d_name);
        unlink(p);
        free(p);
    }
    if (d) closedir(d);
}

static int copy_file(const char *src, const char *dst) {
    char *data;
    size_t len;
    if (asa_file_read_all(src, SMALL_FILE_MAX, &data, &len)) return ASA_ERR;
    int rc = asa_file_write_atomic(dst, data, len);
    free(data);
    return rc;
}

static int write_json(const char *path, cJSON *root) {
    char *text = cJSON_Print(root);
    ASA_CHECK(text != NULL);
    size_t n = strlen(text);
    char *buf = asa_malloc(n + 2);
    memcpy(buf, text, n);
    buf[n] = '\n';
    cJSON_free(text);
    int rc = asa_file_write_atomic(path, buf, n + 1);
    free(buf);
    return rc;
}

static cJSON *read_json(const char *path) {
    char *text;
    size_t len;
    if (asa_file_read_all(path, SMALL_FILE_MAX, &text, &len)) return NULL;
    if (asa_json_check(text, len, path, NULL)) {  // the file is small: only its nesting needs a check
        free(text);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j) asa_err_set("%s: not valid JSON", path);
    return j;
}

// 64-bit integers as decimal strings: JSON numbers are doubles and lose bits past 2^53.
static void json_add_u64(cJSON *o, const char *key, uint64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    cJSON_AddStringToObject(o, key, b);
}

// The shortest decimal that reads back as the same float: options stay readable ("lr": 0.003).
static void json_add_float(cJSON *o, const char *key, float v) {
    char b[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, v);
        if (strtof(b, NULL) == v) break;
    }
    cJSON_AddRawToObject(o, key, b);
}

static int json_get_u64(const cJSON *o, const char *key, const char *path, uint64_t *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    char *end;
    if (!cJSON_IsString(it) || !it->valuestring[0])
        return asa_err_set("%s: key '%s': missing or not a decimal string", path, key);
    errno = 0;
    unsigned long long x = strtoull(it->valuestring, &end, 10);
    if (errno || *end || it->valuestring[0] == '-')
        return asa_err_set("%s: key '%s': '%s' is not an unsigned integer", path, key, it->valuestring);
    *v = x;
    return ASA_OK;
}

static int json_get_num(const cJSON *o, const char *key, const char *path, double *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    *v = 0;
    if (!cJSON_IsNumber(it)) return asa_err_set("%s: key '%s': missing or not a number", path, key);
    *v = it->valuedouble;
    return ASA_OK;
}

static int json_get_str(const cJSON *o, const char *key, const char *path, char *dst, size_t cap) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(it)) return asa_err_set("%s: key '%s': missing or not a string", path, key);
    if (strlen(it->valuestring) >= cap) return asa_err_set("%s: key '%s': longer than %zu bytes", path, key, cap - 1);
    strcpy(dst, it->valuestring);
    return ASA_OK;
}

// ------------------------------------------------------------------------------------------- options

typedef enum { OPT_INT, OPT_FLOAT, OPT_SCHED } opt_type;

// The numeric options as saved in trainer_state.json. may_change: a resumed run accepts a new value
// (they do not alter the update sequence, except `steps`, which stretches the schedule on purpose).
typedef struct {
    const char *name;
    opt_type type;
    size_t off;
    int may_change;
} opt_def;

#define O(f) offsetof(asa_train_options, f)
static const opt_def opt_defs[] = {
    {"alphabet", OPT_INT, O(alphabet), 0},        {"steps", OPT_INT, O(steps), 1},
    {"batch", OPT_INT, O(batch), 0},              {"seq", OPT_INT, O(seq), 0},
    {"batch_tokens", OPT_INT, O(batch_tokens), 0}, {"lr", OPT_FLOAT, O(lr), 0},
    {"min_lr_ratio", OPT_FLOAT, O(min_lr_ratio), 0}, {"warmup", OPT_INT, O(warmup), 0},
    {"schedule", OPT_SCHED, O(schedule), 0},      {"decay_frac", OPT_FLOAT, O(decay_frac), 0},
    {"weight_decay", OPT_FLOAT, O(weight_decay), 0}, {"clip", OPT_FLOAT, O(clip), 0},
    {"seed", OPT_INT, O(seed), 0},                {"log_every", OPT_INT, O(log_every), 1},
    {"val_every", OPT_INT, O(val_every), 1},      {"val_batches", OPT_INT, O(val_batches), 1},
    {"ckpt_every", OPT_INT, O(ckpt_every), 1},    {"keep", OPT_INT, O(keep), 1},
    {"sample_every", OPT_INT, O(sample_every), 1},
};
#undef O
#define N_OPTS ((int)(sizeof opt_defs / sizeof opt_defs[0]))

static const char *sched_names[] = {"cosine", "wsd", "constant"};

static int *opt_int(asa_train_options *o, const opt_def *d) { return (int *)((char *)o + d->off); }
static float *opt_float(asa_train_options *o, const opt_def *d) { return (float *)((char *)o + d->off); }
static int opt_is_set(asa_train_options *o, const opt_def *d) {
    return d->type == OPT_FLOAT ? !isnan(*opt_float(o, d)) : *opt_int(o, d) != ASA_TRAIN_UNSET;
}

// "--batch-tokens" for "batch_tokens".
static const char *opt_flag(const opt_def *d, char *buf, size_t n) {
    snprintf(buf, n, "--%s", d->name);
    for (char *c = buf; *c; c++)
        if (*c == '_') *c = '-';
    return buf;
}

static void opt_value_str(asa_train_options *o, const opt_def *d, char *buf, size_t n) {
    if (d->type == OPT_FLOAT) snprintf(buf, n, "%g", *opt_float(o, d));
    else if (d->type == OPT_SCHED) snprintf(buf, n, "%s", sched_names[*opt_int(o, d)]);
    else snprintf(buf, n, "%d", *opt_int(o, d));
}

void asa_train_options_init(asa_train_options *o) {
    memset(o, 0, sizeof *o);
    for (int i = 0; i < N_OPTS; i++) {
        if (opt_defs[i].type == OPT_FLOAT) *opt_float(o, &opt_defs[i]) = NAN;
        else *opt_int(o, &opt_defs[i]) = ASA_TRAIN_UNSET;
    }
    o->zero = ASA_TRAIN_UNSET;
}

// Defaults for a new run; warmup and batch_tokens depend on other options, so they come last.
static void opts_fill_defaults(asa_train_options *o) {
#define DEF_I(f, v) if (o->f == ASA_TRAIN_UNSET) o->f = (v)
#define DEF_F(f, v) if (isnan(o->f)) o->f = (v)
    DEF_I(alphabet, 32);
    DEF_I(steps, 300);
    DEF_I(batch, 8);
    DEF_I(seq, 256);
    DEF_F(lr, o->synthetic ? 3e-3f : 3e-4f);
    DEF_F(min_lr_ratio, 0.1f);
    DEF_I(schedule, ASA_SCHED_COSINE);
    DEF_F(decay_frac, 0.2f);
    DEF_F(weight_decay, 0.01f);
    DEF_F(clip, 1.0f);
    DEF_I(seed, 1);
    DEF_I(log_every, 10);
    DEF_I(val_every, 100);
    DEF_I(val_batches, 10);
    DEF_I(ckpt_every, 500);
    DEF_I(keep, 3);
    DEF_I(sample_every, 0);
    DEF_I(warmup, o->steps / 20);
    DEF_I(batch_tokens, o->batch * o->seq);
#undef DEF_I
#undef DEF_F
}

static cJSON *opts_to_json(asa_train_options *o) {
    cJSON *j = cJSON_CreateObject();
    for (int i = 0; i < N_OPTS; i++) {
        const opt_def *d = &opt_defs[i];
        if (d->type == OPT_FLOAT) json_add_float(j, d->name, *opt_float(o, d));
        else if (d->type == OPT_SCHED) cJSON_AddStringToObject(j, d->name, sched_names[*opt_int(o, d)]);
        else cJSON_AddNumberToObject(j, d->name, *opt_int(o, d));
    }
    return j;
}

static int opts_from_json(const cJSON *j, const char *path, asa_train_options *o) {
    asa_train_options_init(o);
    if (!cJSON_IsObject(j)) return asa_err_set("%s: key 'options': missing or not an object", path);
    for (int i = 0; i < N_OPTS; i++) {
        const opt_def *d = &opt_defs[i];
        if (d->type == OPT_SCHED) {
            char name[16];
            if (json_get_str(j, d->name, path, name, sizeof name)) return ASA_ERR;
            int k = 0;
            while (k < 3 && strcmp(name, sched_names[k])) k++;
            if (k == 3) return asa_err_set("%s: options.schedule: unknown schedule '%s'", path, name);
            *opt_int(o, d) = k;
            continue;
        }
        double v;
        if (json_get_num(j, d->name, path, &v)) return ASA_ERR;
        if (d->type == OPT_FLOAT) *opt_float(o, d) = (float)v;
        else {
            if (v != floor(v) || v < 0 || v > INT_MAX)
                return asa_err_set("%s: options.%s: %g is not a non-negative integer", path, d->name, v);
            *opt_int(o, d) = (int)v;
        }
    }
    return ASA_OK;
}

// Cross-option rules of a resolved option set (the CLI already checked each value's range).
static int opts_validate(const asa_train_options *o, const asa_config *cfg, int world) {
    long bt = (long)o->batch * o->seq;
    if (o->batch < 1 || o->seq < 2) return asa_err_set("--batch must be >= 1 and --seq >= 2");
    if (o->seq > cfg->max_position_embeddings)
        return asa_err_set("--seq %d exceeds the model's max_position_embeddings %d", o->seq,
                           cfg->max_position_embeddings);
    if (o->batch_tokens < bt || o->batch_tokens % bt != 0)
        return asa_err_set("--batch-tokens %d must be a positive multiple of --batch x --seq = %ld", o->batch_tokens, bt);
    if (o->batch_tokens % (bt * world) != 0)
        return asa_err_set("--batch-tokens %d is not a multiple of --batch x --seq x ranks = %ld x %d: every rank "
                           "must take the same number of micro-batches per step", o->batch_tokens, bt, world);
    if (o->steps < 1) return asa_err_set("--steps must be >= 1");
    if (o->warmup > o->steps) return asa_err_set("--warmup %d exceeds --steps %d", o->warmup, o->steps);
    if (o->log_every < 1) return asa_err_set("--log-every must be >= 1");
    if (o->keep < 1) return asa_err_set("--keep must be >= 1");
    if (o->schedule < 0 || o->schedule > 2) return asa_err_set("unknown schedule %d", o->schedule);
    return ASA_OK;
}

// --------------------------------------------------------------------------------------- config diff

// The config in its saved form, so that defaults and unused keys compare the way the file reads.
static cJSON *config_canonical(const asa_config *c) {
    static int counter;
    const char *tmp = getenv("TMPDIR");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/asa-config-%ld-%d.json", tmp && tmp[0] ? tmp : "/tmp", (long)getpid(), counter++);
    if (asa_config_save(c, path)) return NULL;
    cJSON *j = read_json(path);
    unlink(path);
    return j;
}

int asa_config_diff(const asa_config *a, const asa_config *b, char *buf, size_t cap) {
    // Equal structs are equal configs: the common case, every resume, writes no temp files (which a crash
    // would leave behind in $TMPDIR) and syncs nothing. Unequal bytes may still be equal configs.
    if (memcmp(a, b, sizeof *a) == 0) {
        if (cap) buf[0] = 0;
        return 0;
    }
    cJSON *ja = config_canonical(a), *jb = ja ? config_canonical(b) : NULL;
    if (!ja || !jb) {
        cJSON_Delete(ja);
        return asa_err_prefix("comparing model configs: ");
    }
    int n = 0;
    size_t len = 0;
    buf[0] = 0;
    for (int pass = 0; pass < 2; pass++) {
        const cJSON *from = pass == 0 ? ja : jb, *other = pass == 0 ? jb : ja, *it;
        cJSON_ArrayForEach(it, from) {
            const cJSON *o = cJSON_GetObjectItemCaseSensitive(other, it->string);
            if (pass == 1 && o) continue;  // keys in both were compared in the first pass
            if (o && cJSON_Compare(it, o, 1)) continue;
            char *va = cJSON_PrintUnformatted(pass == 0 ? it : o), *vb = cJSON_PrintUnformatted(pass == 0 ? o : it);
            if (len < cap)
                len += (size_t)snprintf(buf + len, cap - len, "%s%s (%s vs %s)", n ? ", " : "", it->string,
                                        va ? va : "absent", vb ? vb : "absent");
            cJSON_free(va);
            cJSON_free(vb);
            n++;
        }
    }
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    return n;
}

// --------------------------------------------------------------------------------------- checkpoints

static cJSON *state_to_json(const asa_train_state *st) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "step", st->step);
    json_add_u64(j, "tokens_seen", st->tokens_seen);
    json_add_float(j, "last_loss", st->last_loss);
    cJSON_AddNumberToObject(j, "elapsed_s", st->elapsed_s);
    cJSON_AddStringToObject(j, "data_dir", st->data_dir);
    cJSON_AddStringToObject(j, "synthetic", st->synthetic);
    cJSON *ld = cJSON_AddObjectToObject(j, "train_loader");
    json_add_u64(ld, "epoch", st->train_pos.epoch);
    json_add_u64(ld, "index", st->train_pos.index);
    cJSON *rng = cJSON_AddObjectToObject(j, "train_rng");
    for (int i = 0; i < 4; i++) {
        char k[8];
        snprintf(k, sizeof k, "s%d", i);
        json_add_u64(rng, k, st->train_rng.s[i]);
    }
    asa_train_options o = st->opts;
    cJSON_AddItemToObject(j, "options", opts_to_json(&o));
    return j;
}

static int state_from_json(const cJSON *j, const char *path, asa_train_state *st) {
    memset(st, 0, sizeof *st);
    double v;
    if (!cJSON_IsObject(j)) return asa_err_set("%s: not a JSON object", path);
    if (json_get_num(j, "step", path, &v)) return ASA_ERR;
    if (v != floor(v) || v < 0 || v > INT_MAX) return asa_err_set("%s: key 'step': %g is not a step count", path, v);
    st->step = (int)v;
    if (json_get_u64(j, "tokens_seen", path, &st->tokens_seen)) return ASA_ERR;
    if (json_get_num(j, "last_loss", path, &v)) return ASA_ERR;
    st->last_loss = (float)v;
    if (json_get_num(j, "elapsed_s", path, &st->elapsed_s)) return ASA_ERR;
    if (json_get_str(j, "data_dir", path, st->data_dir, sizeof st->data_dir) ||
        json_get_str(j, "synthetic", path, st->synthetic, sizeof st->synthetic))
        return ASA_ERR;
    if (!st->data_dir[0] == !st->synthetic[0])
        return asa_err_set("%s: exactly one of 'data_dir' and 'synthetic' must be set", path);
    const cJSON *ld = cJSON_GetObjectItemCaseSensitive(j, "train_loader");
    const cJSON *rng = cJSON_GetObjectItemCaseSensitive(j, "train_rng");
    if (!cJSON_IsObject(ld) || !cJSON_IsObject(rng))
        return asa_err_set("%s: 'train_loader' and 'train_rng' must be objects", path);
    if (json_get_u64(ld, "epoch", path, &st->train_pos.epoch) || json_get_u64(ld, "index", path, &st->train_pos.index))
        return ASA_ERR;
    for (int i = 0; i < 4; i++) {
        char k[8];
        snprintf(k, sizeof k, "s%d", i);
        if (json_get_u64(rng, k, path, &st->train_rng.s[i])) return ASA_ERR;
    }
    return opts_from_json(cJSON_GetObjectItemCaseSensitive(j, "options"), path, &st->opts);
}

static int is_ckpt_name(const char *s) {
    if (strlen(s) != CKPT_NAME_LEN || strncmp(s, "step-", 5) != 0) return 0;
    for (int i = 5; i < CKPT_NAME_LEN; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

static int cmp_name_desc(const void *a, const void *b) {
    return strcmp(*(char *const *)b, *(char *const *)a);
}

// Checkpoint directory names under ckdir, newest first (names sort by step: fixed-width digits).
static int list_ckpts(const char *ckdir, char ***names, int *n) {
    *names = NULL;
    *n = 0;
    DIR *d = opendir(ckdir);
    if (!d) return errno == ENOENT ? ASA_OK : asa_err_set("%s: cannot read directory: %s", ckdir, strerror(errno));
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_ckpt_name(e->d_name)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(*names, (size_t)cap * sizeof *nn);
            if (!nn) asa_fatal("out of memory listing %s", ckdir);
            *names = nn;
        }
        size_t l = strlen(e->d_name) + 1;
        (*names)[*n] = asa_malloc(l);
        memcpy((*names)[(*n)++], e->d_name, l);
    }
    closedir(d);
    qsort(*names, (size_t)*n, sizeof **names, cmp_name_desc);
    return ASA_OK;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

// moments: the full moments on the host (gathered from the ranks under ZeRO-1), or NULL to read them
// from opt.
static int save_optimizer(const char *path, const asa_model *m, const asa_adamw *opt, const float *const *moments) {
    const asa_param_layout *L = &m->layout;
    size_t bytes = L->total * sizeof(float);
    float *hm = NULL, *hv = NULL;
    if (!moments) {
        hm = asa_malloc(bytes);
        hv = asa_malloc(bytes);
        asa_adamw_get_moments(opt, m, hm, hv);
    }
    const float *mm = moments ? moments[0] : hm, *mv = moments ? moments[1] : hv;
    int n = 2 * L->count + 1;
    asa_st_out *outs = asa_calloc((size_t)n, sizeof *outs);
    char *names = asa_malloc((size_t)2 * L->count * 104);
    for (int i = 0; i < L->count; i++) {
        const asa_tensor_info *t = &L->tensors[i];
        for (int k = 0; k < 2; k++) {
            char *nm = names + (size_t)(2 * i + k) * 104;
            snprintf(nm, 104, "%s.%s", k ? "v" : "m", t->name);
            asa_st_out *o = &outs[2 * i + k];
            o->name = nm;
            o->ndim = t->ndim;
            o->shape[0] = t->shape[0];
            o->shape[1] = t->shape[1];
            o->dtype = ASA_ST_F32;
            o->f32 = (k ? mv : mm) + t->offset;
        }
    }
    int32_t step = opt->step;
    outs[n - 1] = (asa_st_out){.name = "step", .ndim = 0, .dtype = ASA_ST_I32, .i32 = &step};
    const char *meta[] = {"format", "pt", NULL};
    int rc = asa_st_write(path, outs, n, meta);
    free(names);
    free(outs);
    free(hm);
    free(hv);
    return rc;
}

// Reads the moments into host buffers hm, hv (layout.total floats) and the step; checks every name,
// shape and dtype and that nothing else is present.
static int load_optimizer(const char *path, const asa_param_layout *L, float *hm, float *hv, int *step) {
    asa_st_file f;
    if (asa_st_open(path, &f)) return ASA_ERR;
    int rc = ASA_OK;
    if (f.count != 2 * L->count + 1)
        rc = asa_err_set("%s: %d tensors, expected %d (m and v for each of the model's %d tensors, and step)", path,
                         f.count, 2 * L->count + 1, L->count);
    for (int i = 0; i < L->count && rc == ASA_OK; i++) {
        const asa_tensor_info *t = &L->tensors[i];
        for (int k = 0; k < 2 && rc == ASA_OK; k++) {
            char nm[104];
            snprintf(nm, sizeof nm, "%s.%s", k ? "v" : "m", t->name);
            const asa_st_tensor *s = asa_st_find(&f, nm);
            if (!s) rc = asa_err_set("%s: tensor '%s' is missing", path, nm);
            else if (s->dtype != ASA_ST_F32 || s->ndim != t->ndim || s->shape[0] != t->shape[0] ||
                     (t->ndim == 2 && s->shape[1] != t->shape[1]))
                rc = asa_err_set("%s: tensor '%s' is not F32 of the parameter's shape", path, nm);
            else rc = asa_st_read_f32(&f, s, (k ? hv : hm) + t->offset, t->numel);
        }
    }
    const asa_st_tensor *s = rc == ASA_OK ? asa_st_find(&f, "step") : NULL;
    if (rc == ASA_OK && (!s || s->dtype != ASA_ST_I32 || s->numel != 1))
        rc = asa_err_set("%s: tensor 'step' is missing or not one I32", path);
    if (rc == ASA_OK) rc = asa_st_read_i32(&f, s, step, 1);
    asa_st_close(&f);
    return rc;
}

int asa_checkpoint_latest(const char *run_dir, char **dir) {
    *dir = NULL;
    char *ckdir = path_join(run_dir, "checkpoints"), *latest = path_join(ckdir, "latest");
    char *text = NULL;
    size_t len;
    int rc = ASA_OK;
    if (!path_exists(latest)) rc = asa_err_set("%s: no checkpoint to resume from (%s does not exist)", run_dir, latest);
    else if (asa_file_read_all(latest, 256, &text, &len)) rc = ASA_ERR;
    else {
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' ')) text[--len] = 0;
        if (!is_ckpt_name(text)) rc = asa_err_set("%s: does not name a checkpoint ('%s')", latest, text);
        else {
            *dir = path_join(ckdir, text);
            if (!is_dir(*dir)) {
                rc = asa_err_set("%s: names %s, which is not a directory", latest, *dir);
                free(*dir);
                *dir = NULL;
            }
        }
    }
    free(text);
    free(latest);
    free(ckdir);
    return rc;
}

int asa_checkpoint_save(const char *run_dir, const asa_model *m, const asa_adamw *opt, const float *const *moments,
                        const asa_train_state *st, int keep, char **written) {
    char name[32], tmpname[48];
    snprintf(name, sizeof name, "step-%07d", st->step);
    snprintf(tmpname, sizeof tmpname, ".tmp-%s", name);
    ASA_CHECK(is_ckpt_name(name));
    char *ckdir = path_join(run_dir, "checkpoints"), *tmp = path_join(ckdir, tmpname), *final = path_join(ckdir, name);
    char *p_model = path_join(tmp, "model.safetensors"), *p_opt = path_join(tmp, "optimizer.safetensors");
    char *p_state = path_join(tmp, "trainer_state.json"), *p_cfg = path_join(tmp, "config.json");
    char *p_tok = path_join(tmp, "tokenizer.json"), *run_tok = path_join(run_dir, "tokenizer.json");
    char *latest = path_join(ckdir, "latest");
    float *host = asa_malloc(m->layout.total * sizeof(float));
    asa_model_get_params((asa_model *)m, host);
    cJSON *sj = state_to_json(st);
    char latest_text[32];
    int latest_len = snprintf(latest_text, sizeof latest_text, "%s\n", name);

    // A crash at any point leaves either the previous checkpoints untouched or a .tmp- directory that the
    // next resume removes; `latest` moves only once the new directory is complete and durable.
    int rc = mkdir_p(ckdir);
    if (!rc && path_exists(tmp)) rc = rm_flat_dir(tmp);
    if (!rc && mkdir(tmp, 0777) != 0) rc = asa_err_set("%s: cannot create directory: %s", tmp, strerror(errno));
    if (!rc) rc = asa_weights_save(&m->layout, host, p_model, ASA_ST_F32);
    if (!rc) rc = save_optimizer(p_opt, m, opt, moments);
    if (!rc) rc = write_json(p_state, sj);
    if (!rc) rc = asa_config_save(&m->cfg, p_cfg);
    if (!rc && path_exists(run_tok)) rc = copy_file(run_tok, p_tok);
    if (!rc) rc = fsync_dir(tmp);
    // A directory of this step can exist only from a run that crashed before moving `latest` to it.
    if (!rc && path_exists(final)) rc = rm_flat_dir(final);
    if (!rc && rename(tmp, final) != 0) rc = asa_err_set("%s: cannot rename into place: %s", final, strerror(errno));
    if (!rc) rc = fsync_dir(ckdir);
    if (!rc) rc = asa_file_write_atomic(latest, latest_text, (size_t)latest_len);
    if (rc && path_exists(tmp)) rm_flat_dir(tmp);  // keep the first message; the temp dir is best-effort
    if (rc) asa_err_prefix("checkpoint %s not written, the previous ones are kept: ", name);
    if (!rc) {
        char **names;
        int n;
        if (list_ckpts(ckdir, &names, &n) == ASA_OK) {
            for (int i = keep; i < n; i++) {
                if (!strcmp(names[i], name)) continue;
                // Renamed out of the checkpoint namespace first, so that a crash mid-removal leaves a .tmp-
                // directory (removed on resume), never a step directory with files missing.
                char del[48];
                snprintf(del, sizeof del, ".tmp-del-%s", names[i]);
                char *old = path_join(ckdir, names[i]), *gone = path_join(ckdir, del);
                if (path_exists(gone)) rm_flat_dir(gone);
                if (rename(old, gone) == 0) rm_flat_dir(gone);  // one that cannot be pruned costs disk only
                free(gone);
                free(old);
            }
            free_names(names, n);
        }
    }
    if (!rc && written) {
        *written = final;
        final = NULL;
    }
    cJSON_Delete(sj);
    free(host);
    free(latest);
    free(run_tok);
    free(p_tok);
    free(p_cfg);
    free(p_state);
    free(p_opt);
    free(p_model);
    free(final);
    free(tmp);
    free(ckdir);
    return rc;
}

int asa_checkpoint_load(const char *dir, asa_model *m, asa_adamw *opt, asa_train_state *st) {
    char *p_model = path_join(dir, "model.safetensors"), *p_opt = path_join(dir, "optimizer.safetensors");
    char *p_state = path_join(dir, "trainer_state.json"), *p_cfg = path_join(dir, "config.json");
    size_t total = m->layout.total;
    float *hp = asa_malloc(total * sizeof(float)), *hm = asa_calloc(total, sizeof(float)),
          *hv = asa_calloc(total, sizeof(float));
    asa_train_state s;
    asa_config cfg;
    int step = 0, rc = ASA_OK;
    cJSON *sj = read_json(p_state);
    if (!sj) rc = ASA_ERR;
    if (!rc) rc = state_from_json(sj, p_state, &s);
    if (!rc) rc = asa_config_load(p_cfg, &cfg);
    if (!rc) {
        char diff[2048];
        int nd = asa_config_diff(&cfg, &m->cfg, diff, sizeof diff);
        if (nd < 0) rc = ASA_ERR;
        else if (nd > 0) rc = asa_err_set("%s: the checkpoint's model differs from this run's config: %s", p_cfg, diff);
    }
    if (!rc) rc = asa_weights_load(&m->layout, hp, p_model);
    if (!rc) rc = load_optimizer(p_opt, &m->layout, hm, hv, &step);
    if (!rc && step != s.step)
        rc = asa_err_set("%s: optimizer step %d does not match step %d of %s", p_opt, step, s.step, p_state);
    if (!rc) {
        asa_model_set_params(m, hp);
        asa_adamw_set_moments(opt, m, hm, hv);
        opt->step = step;
        *st = s;
    }
    cJSON_Delete(sj);
    free(hp);
    free(hm);
    free(hv);
    free(p_model);
    free(p_opt);
    free(p_state);
    free(p_cfg);
    return rc;
}

// --------------------------------------------------------------------------------- run directory

// Bytes of one checkpoint of cfg: the data of model.safetensors and optimizer.safetensors (weights, m
// and v), their headers (each tensor's name and at most ~100 bytes of dtype, shape and offsets, three
// times: the weights, "m." and "v."), trainer_state.json and config.json (16 KB each at most), latest,
// and the copy of tokenizer.json (tokenizer: its path, or NULL).
static uint64_t ckpt_bytes(const asa_config *cfg, const char *tokenizer) {
    asa_param_layout L;
    asa_layout_build(cfg, &L);
    uint64_t b = 2 * 1024 + 4 + 32 * 1024 + 16;
    for (int i = 0; i < L.count; i++) b += 3 * (L.tensors[i].numel * sizeof(float) + strlen(L.tensors[i].name) + 104);
    asa_layout_free(&L);
    struct stat st;
    if (tokenizer && stat(tokenizer, &st) == 0) b += (uint64_t)st.st_size;
    return b;
}

static void fmt_bytes(double b, char *buf, size_t n) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (b >= 1024 && u < 5) b /= 1024, u++;
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", b, units[u]);
}

// Refuses to start a run whose file system has no room for two checkpoints: the next one is written in
// full beside those already there before the oldest is pruned, and a run should not start only to fail
// at its second checkpoint. `run` may not exist yet: its nearest existing ancestor is asked.
static int check_disk_space(const char *run, const asa_config *cfg, const char *tokenizer) {
    uint64_t one = ckpt_bytes(cfg, tokenizer), need = 2 * one;
    size_t n = strlen(run);
    char *dir = asa_malloc(n + 2);
    memcpy(dir, run, n + 1);
    while (n > 1 && dir[n - 1] == '/') dir[--n] = 0;
    struct stat st;
    // Up to the nearest ancestor that exists (a path through a regular file is left to trainer_setup_dir,
    // which names the culprit).
    while (stat(dir, &st) != 0 && strcmp(dir, ".") && strcmp(dir, "/")) {
        char *slash = strrchr(dir, '/');
        if (!slash) strcpy(dir, ".");
        else if (slash == dir) dir[1] = 0;
        else *slash = 0;
    }
    struct statvfs vs;
    int rc = ASA_OK;
    if (statvfs(dir, &vs) != 0) rc = asa_err_set("%s: cannot query free disk space: %s", dir, strerror(errno));
    else {
        uint64_t avail = (uint64_t)vs.f_bavail * (uint64_t)vs.f_frsize;
        if (avail < need) {
            char hn[32], ha[32];
            fmt_bytes((double)need, hn, sizeof hn);
            fmt_bytes((double)avail, ha, sizeof ha);
            rc = asa_err_set("%s: not enough free disk space for checkpoints: needs %llu bytes (%s: twice the %llu "
                             "bytes of one checkpoint of this model), but the file system of %s has %llu bytes (%s) "
                             "free", run, (unsigned long long)need, hn, (unsigned long long)one, dir,
                             (unsigned long long)avail, ha);
        }
    }
    free(dir);
    return rc;
}

// What a start of a run writes before its first checkpoint is published (trainer_setup_dir, the first
// steps' log and chart, the temp files of their atomic writes), and the probe of trainer_setup_dir.
static int is_start_file(const char *name) {
    static const char *const files[] = {"config.json", "tokenizer.json", "log.jsonl", "loss.svg"};
    if (!strncmp(name, ".write-test.", 12)) return 1;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t n = strlen(files[i]);
        if (!strncmp(name, files[i], n) && (!name[n] || !strncmp(name + n, ".tmp.", 5))) return 1;
    }
    return 0;
}

// 1 when there is nothing to resume at `run` and nothing but asa's own files to lose by starting it anew:
// it does not exist, or it is empty, or it is what a start stopped before its first checkpoint leaves
// (checkpoints/ without `latest`, holding at most temp directories and a checkpoint directory that
// `latest` never named, beside the files of is_start_file). checkpoints/ is created first, so it marks
// a directory that asa started; a directory holding only probes is empty by the same token.
static int run_never_checkpointed(const char *run) {
    if (!path_exists(run)) return 1;
    DIR *d = opendir(run);
    if (!d) return 0;
    int ok = 1, marked = 0, others = 0;
    struct dirent *e;
    while (ok && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (!strcmp(e->d_name, "checkpoints")) marked = 1;
        else if (is_start_file(e->d_name)) others += strncmp(e->d_name, ".write-test.", 12) != 0;
        else ok = 0;
    }
    closedir(d);
    if (!ok || (!marked && others)) return 0;
    if (!marked) return 1;
    char *ckdir = path_join(run, "checkpoints");
    d = opendir(ckdir);
    ok = d != NULL;
    while (ok && (e = readdir(d)))
        ok = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || is_ckpt_name(e->d_name) ||
             !strncmp(e->d_name, ".tmp-", 5) || !strncmp(e->d_name, "latest.tmp.", 11);
    if (d) closedir(d);
    free(ckdir);
    return ok;
}

// Empties a directory run_never_checkpointed accepted, checkpoints/ last: a crash half way leaves one
// that it still accepts.
static int clear_never_checkpointed(const char *run) {
    DIR *d = opendir(run);
    if (!d) return asa_err_set("%s: cannot read directory: %s", run, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)))
        if (is_start_file(e->d_name)) {
            char *p = path_join(run, e->d_name);
            unlink(p);
            free(p);
        }
    closedir(d);
    char *ckdir = path_join(run, "checkpoints");
    int rc = ASA_OK;
    d = opendir(ckdir);
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = path_join(ckdir, e->d_name);
        int r = is_dir(p) ? rm_flat_dir(p)
                          : unlink(p) == 0 ? ASA_OK : asa_err_set("%s: cannot remove: %s", p, strerror(errno));
        if (r) rc = ASA_ERR;
        free(p);
    }
    if (d) closedir(d);
    free(ckdir);
    return rc;
}

// ---------------------------------------------------------------------------------------------- data

typedef struct {
    int synthetic, alphabet, V;
    asa_rng rng;          // key of the synthetic training stream
    uint64_t val_seed;    // synthetic validation stream: restarted at every evaluation
    asa_loader train, val;
    int have_train, have_val;
} data_src;

static void data_free(data_src *d) {
    if (d->have_train) asa_loader_free(&d->train);
    if (d->have_val) asa_loader_free(&d->val);
}

static int shard_list(const char *dir, const char *prefix, glob_t *g) {
    char name[32];
    snprintf(name, sizeof name, "%s-*.shard", prefix);
    char *pat = path_join(dir, name);
    int r = glob(pat, 0, NULL, g);  // glob sorts by name
    free(pat);
    if (r == GLOB_NOMATCH) g->gl_pathc = 0;
    else if (r != 0) return asa_err_set("%s: cannot list %s-*.shard", dir, prefix);
    return ASA_OK;
}

static int check_vocab(const asa_loader *ld, int V, const char *cfg_name) {
    for (int i = 0; i < ld->n_shards; i++)
        if (ld->shards[i].vocab > (uint32_t)V)
            return asa_err_set("%s: the shard's vocabulary of %u tokens exceeds the model's vocab_size %d (%s): "
                               "the data was tokenized for a larger model", ld->shards[i].path, ld->shards[i].vocab, V,
                               cfg_name);
    return ASA_OK;
}

static int data_open(data_src *d, const asa_train_options *o, const char *data_dir, const asa_config *cfg,
                     const char *cfg_name, const asa_dist *dist) {
    memset(d, 0, sizeof *d);
    d->V = cfg->vocab_size;
    if (!data_dir) {
        d->synthetic = 1;
        d->alphabet = o->alphabet;
        if (o->alphabet < 1 || o->alphabet >= cfg->vocab_size)
            return asa_err_set("--alphabet %d must be in [1, %d) (below the model's vocab_size)", o->alphabet,
                               cfg->vocab_size);
        asa_rng_seed(&d->rng, (uint64_t)o->seed * 7919u + 1);
        d->val_seed = (uint64_t)o->seed * 7919u + 2;
        return ASA_OK;
    }
    if (!is_dir(data_dir))
        return asa_err_set("%s: data directory does not exist (expected train-*.shard files from asa prepare)",
                           data_dir);
    glob_t gt, gv;
    if (shard_list(data_dir, "train", &gt)) return ASA_ERR;
    if (shard_list(data_dir, "val", &gv)) {
        globfree(&gt);
        return ASA_ERR;
    }
    int rc = ASA_OK;
    if (gt.gl_pathc == 0) rc = asa_err_set("%s: no train-*.shard files (run asa prepare first)", data_dir);
    if (!rc) rc = asa_loader_init(&d->train, (const char *const *)gt.gl_pathv, (int)gt.gl_pathc, o->batch, o->seq,
                                  (uint64_t)o->seed, dist->rank, dist->world);
    if (!rc) d->have_train = 1;
    if (!rc) rc = check_vocab(&d->train, d->V, cfg_name);
    if (!rc && gv.gl_pathc > 0) {
        rc = asa_loader_init(&d->val, (const char *const *)gv.gl_pathv, (int)gv.gl_pathc, o->batch, o->seq,
                             (uint64_t)o->seed + 1, 0, 1);
        if (rc) asa_err_prefix("validation shards: ");
        else d->have_val = 1;
        if (!rc) rc = check_vocab(&d->val, d->V, cfg_name);
    }
    globfree(&gt);
    globfree(&gv);
    if (rc) data_free(d);
    return rc;
}

// Shards without a vocabulary hint are not checked by the loader against the model: every id is.
static int check_tokens(const data_src *d, const int32_t *tok, const int32_t *tgt, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (tok[i] >= d->V || tgt[i] >= d->V)
            return asa_err_set("training data: token id %d is not below the model's vocab_size %d",
                               tok[i] >= d->V ? tok[i] : tgt[i], d->V);
    return ASA_OK;
}

// `index`: the global micro-batch of the synthetic stream; shard loaders already know their rank's share.
static int data_next(data_src *d, uint64_t index, int32_t *tok, int32_t *tgt, int B, int T) {
    if (d->synthetic) {
        asa_synthetic_copy_at(&d->rng, index * (uint64_t)B, tok, tgt, B, T, d->alphabet);
        return ASA_OK;
    }
    if (asa_loader_next(&d->train, tok, tgt)) return ASA_ERR;
    return check_tokens(d, tok, tgt, (size_t)B * T);
}

// Mean loss over the first k validation batches (the same batches at every evaluation, so that the
// numbers are comparable along the run). NaN when there is no validation data.
static int data_val_loss(data_src *d, asa_model *m, int k, int32_t *tok, int32_t *tgt, int B, int T, double *out) {
    *out = NAN;
    if (!d->synthetic && !d->have_val) return ASA_OK;
    asa_rng r;
    asa_rng_seed(&r, d->val_seed);
    if (!d->synthetic) {
        asa_loader_state zero = {0, 0};
        if (asa_loader_set_state(&d->val, zero)) return ASA_ERR;
    }
    double sum = 0;
    for (int i = 0; i < k; i++) {
        if (d->synthetic) asa_synthetic_copy(&r, tok, tgt, B, T, d->alphabet);
        else if (asa_loader_next(&d->val, tok, tgt) || check_tokens(d, tok, tgt, (size_t)B * T)) return ASA_ERR;
        sum += asa_model_forward(m, tok, tgt, B, T);
    }
    *out = k > 0 ? sum / k : NAN;
    return ASA_OK;
}

// ----------------------------------------------------------------------------------------------- log

typedef struct {
    int *steps, *vsteps;
    float *loss, *vloss;
    int n, nv, cap, vcap;
} curve;

static void curve_add(curve *c, int step, float loss, double vloss) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        c->steps = realloc(c->steps, (size_t)c->cap * sizeof *c->steps);
        c->loss = realloc(c->loss, (size_t)c->cap * sizeof *c->loss);
        if (!c->steps || !c->loss) asa_fatal("out of memory for the loss curve");
    }
    c->steps[c->n] = step;
    c->loss[c->n++] = loss;
    if (isnan(vloss)) return;
    if (c->nv == c->vcap) {
        c->vcap = c->vcap ? 2 * c->vcap : 64;
        c->vsteps = realloc(c->vsteps, (size_t)c->vcap * sizeof *c->vsteps);
        c->vloss = realloc(c->vloss, (size_t)c->vcap * sizeof *c->vloss);
        if (!c->vsteps || !c->vloss) asa_fatal("out of memory for the loss curve");
    }
    c->vsteps[c->nv] = step;
    c->vloss[c->nv++] = (float)vloss;
}

static void curve_free(curve *c) {
    free(c->steps);
    free(c->loss);
    free(c->vsteps);
    free(c->vloss);
}

// Keeps the log lines of steps <= step (a line from a crash mid-write does not parse and is dropped),
// rewrites log.jsonl atomically with them and refills the curve.
static int log_truncate(const char *path, int step, curve *c) {
    if (!path_exists(path)) return asa_file_write_atomic(path, "", 0);
    char *text;
    size_t len;
    if (asa_file_read_all(path, LOG_FILE_MAX, &text, &len)) return ASA_ERR;
    char *out = asa_malloc(len + 1);
    size_t olen = 0;
    for (char *line = text; line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        if (!nl) break;  // unterminated: cut off by a crash
        cJSON *j = cJSON_ParseWithLength(line, (size_t)(nl - line));
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step"), *l = cJSON_GetObjectItemCaseSensitive(j, "loss");
        int skipped = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "skipped"));
        if (cJSON_IsNumber(s) && (cJSON_IsNumber(l) || skipped) && s->valuedouble <= step) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "val_loss");
            if (!skipped) curve_add(c, s->valueint, (float)l->valuedouble, cJSON_IsNumber(v) ? v->valuedouble : NAN);
            memcpy(out + olen, line, (size_t)(nl - line) + 1);
            olen += (size_t)(nl - line) + 1;
        }
        cJSON_Delete(j);
        line = nl + 1;
    }
    int rc = asa_file_write_atomic(path, out, olen);
    free(out);
    free(text);
    return rc;
}

// ---------------------------------------------------------------------------------------------- loop

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    stop_signal = sig;
}

// Whether to stop after the current step. With several ranks only a request every rank has seen at the
// step's reduction counts (`agreed`), so that all of them stop, and checkpoint, at the same step.
static int stop_requested(const asa_dist *d, int agreed) {
    return d->world > 1 ? agreed : stop_signal != 0;
}

static void fmt_duration(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e8) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

// Resolves the options of this invocation against a resumed run's saved ones: training options must
// agree (or be left unset); the "may change" ones take the new value.
static int opts_resolve_resume(const asa_train_options *given, asa_train_options *saved) {
    asa_train_options g = *given;
    for (int i = 0; i < N_OPTS; i++) {
        const opt_def *d = &opt_defs[i];
        if (!opt_is_set(&g, d)) continue;
        int same = d->type == OPT_FLOAT ? *opt_float(&g, d) == *opt_float(saved, d) : *opt_int(&g, d) == *opt_int(saved, d);
        if (d->may_change) {
            if (d->type == OPT_FLOAT) *opt_float(saved, d) = *opt_float(&g, d);
            else *opt_int(saved, d) = *opt_int(&g, d);
        } else if (!same) {
            char flag[40], a[40], b[40];
            opt_value_str(&g, d, a, sizeof a);
            opt_value_str(saved, d, b, sizeof b);
            return asa_err_set("--resume: %s %s differs from the run's %s (a resumed run keeps its training options; "
                               "leave it out)", opt_flag(d, flag, sizeof flag), a, b);
        }
    }
    return ASA_OK;
}

typedef struct {
    const asa_train_options *given;
    asa_train_options o;
    asa_config cfg;
    char cfg_name[256];
    const char *run;
    char *ckpt_dir;         // resume: the checkpoint to continue from
    asa_backend *be;
    const asa_dist *d;      // never NULL: opts->dist or `one`
    asa_dist one;
    asa_model model;
    asa_adamw opt;
    int zero;               // the moments are sharded across the ranks (ZeRO-1)
    int have_model;
    asa_train_state st;
    data_src data;
    int have_data;
    curve curve;
    FILE *log;
    char *last_ckpt;        // the newest checkpoint this run can fall back to
    int restart;            // the run directory has no checkpoint (run_never_checkpointed)
} trainer;

static void trainer_free(trainer *t) {
    if (t->log) fclose(t->log);
    if (t->have_data) data_free(&t->data);
    if (t->have_model) {
        asa_adamw_free(&t->opt, &t->model);
        asa_model_free(&t->model);
    }
    curve_free(&t->curve);
    free(t->ckpt_dir);
    free(t->last_ckpt);
}

// ZeRO-1 needs collectives (an attached asa_dist); by default it is on whenever there are several ranks.
static int zero_wanted(const trainer *t) {
    int z = t->given->zero == ASA_TRAIN_UNSET ? t->d->world > 1 : t->given->zero;
    return z && t->d->impl != NULL;
}

static void trainer_model_init(trainer *t) {
    t->be = t->given->backend;
    asa_model_init(&t->model, &t->cfg, t->be, (uint64_t)(t->o.seed >= 0 ? t->o.seed : 1));
    t->model.recompute = t->given->recompute;
    asa_adamw_config oc = asa_adamw_defaults();
    t->zero = zero_wanted(t);
    if (t->zero) {
        size_t lo, n;
        asa_dist_shard(t->d, t->d->rank, t->model.layout.total, &lo, &n);
        asa_adamw_init_shard(&t->opt, &t->model, oc, lo, n);
    } else {
        asa_adamw_init(&t->opt, &t->model, oc);
    }
    t->have_model = 1;
}

// Everything that can fail on bad input runs here, before the run directory is created or changed.
static int trainer_prepare(trainer *t) {
    const asa_train_options *g = t->given;
    char *run_cfg = path_join(t->run, "config.json");
    int rc = ASA_OK;
    // --resume of a run without a checkpoint starts it when given all that a new run needs, so that one
    // command starts or continues a run, whichever it finds (a preempted job that is simply rerun).
    t->restart = run_never_checkpointed(t->run);
    int resume = g->resume && !(t->restart && g->config_path && (g->data_dir || g->synthetic));
    if (resume) {
        if (!is_dir(t->run)) rc = asa_err_set("%s: no such run directory to resume", t->run);
        if (!rc) rc = asa_checkpoint_latest(t->run, &t->ckpt_dir);
        if (rc && t->restart && is_dir(t->run))
            asa_err_set("%s: no checkpoint to resume from: the run stopped before its first checkpoint; to start it "
                        "again give its --config and --data or --synthetic (with or without --resume)", t->run);
        if (!rc) rc = asa_config_load(run_cfg, &t->cfg);
        if (!rc && g->config_path) {
            asa_config c;
            char diff[2048];
            rc = asa_config_load(g->config_path, &c);
            int nd = rc ? 0 : asa_config_diff(&c, &t->cfg, diff, sizeof diff);
            if (nd < 0) rc = ASA_ERR;
            else if (nd > 0) rc = asa_err_set("--resume: %s differs from the run's %s: %s", g->config_path, run_cfg, diff);
        }
        snprintf(t->cfg_name, sizeof t->cfg_name, "%s", run_cfg);
        if (!rc && t->d->rank == 0) {  // rank 0 alone writes checkpoints
            char *tok = path_join(t->run, "tokenizer.json");
            rc = check_disk_space(t->run, &t->cfg, tok);
            free(tok);
        }
        if (!rc) {
            t->o = *g;
            trainer_model_init(t);
            rc = asa_checkpoint_load(t->ckpt_dir, &t->model, &t->opt, &t->st);
        }
        if (!rc) {
            asa_train_options saved = t->st.opts;
            rc = opts_resolve_resume(g, &saved);
            saved.resume = 1;
            saved.exit_after = g->exit_after;
            saved.zero = g->zero;
            saved.on_nan = g->on_nan;
            saved.sample = g->sample;
            saved.sample_user = g->sample_user;
            saved.quiet = g->quiet;
            saved.backend = g->backend;
            t->o = saved;
            if (!rc && asa_model_check_memory(t->be, &t->cfg, t->o.batch, t->o.seq, 1, 1, g->recompute) != ASA_OK)
                rc = asa_err_prefix("%s: ", t->cfg_name);
        }
        if (!rc && g->synthetic && (!t->st.synthetic[0] || strcmp(g->synthetic, t->st.synthetic)))
            rc = asa_err_set("--resume: --synthetic %s, but the run trained on %s", g->synthetic,
                             t->st.synthetic[0] ? t->st.synthetic : t->st.data_dir);
        if (!rc && g->data_dir) {
            char real[PATH_MAX];
            if (!realpath(g->data_dir, real))
                rc = asa_err_set("%s: data directory does not exist: %s", g->data_dir, strerror(errno));
            else if (strcmp(real, t->st.data_dir))
                rc = asa_err_set("--resume: --data %s is not the run's data directory (%s)", g->data_dir,
                                 t->st.data_dir[0] ? t->st.data_dir : "synthetic data");
        }
    } else {
        if (!g->config_path) rc = asa_err_set("--config FILE is required for a new run");
        if (!rc) rc = asa_config_load(g->config_path, &t->cfg);
        snprintf(t->cfg_name, sizeof t->cfg_name, "%s", g->config_path ? g->config_path : "");
        if (!rc && path_exists(t->run)) {
            int e = is_dir(t->run) ? dir_is_empty(t->run) : asa_err_set("%s: exists and is not a directory", t->run);
            if (e == 0 && !t->restart)
                rc = asa_err_set("%s: run directory exists and is not empty; pass --resume to continue it, or choose "
                                 "another --out", t->run);
            else if (e < 0) rc = ASA_ERR;
        }
        if (!rc && t->d->rank == 0) {
            char *tok = g->data_dir ? path_join(g->data_dir, "tokenizer.json") : NULL;
            rc = check_disk_space(t->run, &t->cfg, tok);
            free(tok);
        }
        if (!rc) {
            t->o = *g;
            t->o.resume = 0;
            opts_fill_defaults(&t->o);
            rc = asa_model_check_memory(g->backend, &t->cfg, t->o.batch, t->o.seq, zero_wanted(t) ? t->d->world : 1, 0,
                                        g->recompute);
            if (rc) asa_err_prefix("%s: ", t->cfg_name);
        }
        if (!rc) {
            trainer_model_init(t);
            memset(&t->st, 0, sizeof t->st);
            if (g->data_dir && !realpath(g->data_dir, t->st.data_dir))
                rc = asa_err_set("%s: data directory does not exist: %s", g->data_dir, strerror(errno));
            if (g->synthetic) snprintf(t->st.synthetic, sizeof t->st.synthetic, "%s", g->synthetic);
        }
    }
    if (!rc) rc = opts_validate(&t->o, &t->cfg, t->d->world);
    if (!rc) {
        t->opt.cfg.lr = t->o.lr;
        t->opt.cfg.weight_decay = t->o.weight_decay;
        t->opt.cfg.clip = t->o.clip;
    }
    if (!rc) {
        rc = data_open(&t->data, &t->o, t->st.data_dir[0] ? t->st.data_dir : NULL, &t->cfg, t->cfg_name, t->d);
        t->have_data = rc == ASA_OK;
    }
    if (!rc && resume) {
        asa_loader_state pos = t->st.train_pos;
        pos.index /= (uint64_t)t->d->world;
        if (t->data.synthetic) t->data.rng = t->st.train_rng;
        else if (t->st.train_pos.index % (uint64_t)t->d->world != 0)
            rc = asa_err_set("the loader position (%llu micro-batches into epoch %llu) does not divide among %d ranks",
                             (unsigned long long)t->st.train_pos.index, (unsigned long long)t->st.train_pos.epoch,
                             t->d->world);
        else rc = asa_loader_set_state(&t->data.train, pos);
        if (rc) asa_err_prefix("%s/trainer_state.json: ", t->ckpt_dir);
    }
    free(run_cfg);
    return rc;
}

// First changes to the run directory: for a new run create it with config.json (and tokenizer.json),
// after clearing what a start stopped before its first checkpoint left; for a resume drop what the
// crashed or stopped invocation left after its checkpoint.
static int trainer_setup_dir(trainer *t) {
    // Ignored, a file-size limit (ulimit -f) fails the write with EFBIG, reported with the file's name and
    // the previous checkpoint kept, instead of killing the process.
    signal(SIGXFSZ, SIG_IGN);
    int leftovers = !t->o.resume && t->restart && is_dir(t->run) && dir_is_empty(t->run) == 0;
    char *ckdir = path_join(t->run, "checkpoints");
    int rc = mkdir_p(t->run);
    char probe[64];
    snprintf(probe, sizeof probe, ".write-test.%ld", (long)getpid());
    char *probe_path = path_join(t->run, probe), *log_path = path_join(t->run, "log.jsonl");
    if (!rc) {
        FILE *f = fopen(probe_path, "w");
        if (!f || fputs("ok\n", f) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0)
            rc = asa_err_set("%s: run directory is not writable: %s", t->run, strerror(errno));
        if (f) fclose(f);
        unlink(probe_path);
    }
    // checkpoints/ before any other file: it marks the directory as one that asa started
    // (run_never_checkpointed).
    if (!rc) rc = mkdir_p(ckdir);
    if (!rc && leftovers) {
        if (!t->o.quiet)
            printf("%s: no checkpoint yet (its last start stopped before the first one): starting anew\n", t->run);
        rc = clear_never_checkpointed(t->run);
    }
    if (!rc && !t->o.resume) {
        char *cfg = path_join(t->run, "config.json");
        rc = asa_config_save(&t->cfg, cfg);
        free(cfg);
        if (!rc && t->st.data_dir[0]) {
            char *src = path_join(t->st.data_dir, "tokenizer.json"), *dst = path_join(t->run, "tokenizer.json");
            if (path_exists(src)) rc = copy_file(src, dst);
            free(src);
            free(dst);
        }
        if (!rc) rc = asa_file_write_atomic(log_path, "", 0);
    }
    if (!rc && t->o.resume) {
        // Checkpoint directories newer than the one resumed from were never published by `latest`, and
        // .tmp- directories are interrupted writes: both are leftovers of a crash.
        // Temp files of atomic writes cut short are leftovers too.
        DIR *d = opendir(ckdir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            int stale = !strncmp(e->d_name, ".tmp-", 5) || (is_ckpt_name(e->d_name) && atoi(e->d_name + 5) > t->st.step);
            char *p = path_join(ckdir, e->d_name);
            if (stale) rm_flat_dir(p);
            else if (!strncmp(e->d_name, "latest.tmp.", 11)) unlink(p);
            free(p);
        }
        if (d) closedir(d);
        remove_temp_files(t->run, "log.jsonl.tmp.");
        remove_temp_files(t->run, "loss.svg.tmp.");
        remove_temp_files(t->run, ".write-test.");
        rc = log_truncate(log_path, t->st.step, &t->curve);
        if (!rc) t->last_ckpt = strdup(t->ckpt_dir);
    }
    if (!rc) {
        t->log = fopen(log_path, "a");
        if (!t->log) rc = asa_err_set("%s: cannot open for appending: %s", log_path, strerror(errno));
    }
    free(probe_path);
    free(log_path);
    free(ckdir);
    return rc;
}

// The log lines of the steps a checkpoint covers must be on disk before it is published: a resume keeps
// the lines up to its step, so a write that failed (a full disk) or a power loss would leave gaps.
static int log_sync(trainer *t) {
    if (!t->log) return ASA_OK;  // ranks other than 0
    errno = 0;
    if (fflush(t->log) == 0 && !ferror(t->log) && fsync(fileno(t->log)) == 0) return ASA_OK;
    return asa_err_set("%s/log.jsonl: write failed: %s; no checkpoint of step %d written (the last good checkpoint "
                       "is %s)", t->run, errno ? strerror(errno) : "an earlier write to it failed", t->st.step,
                       t->last_ckpt ? t->last_ckpt : "none: no checkpoint was written yet");
}

static int trainer_checkpoint(trainer *t) {
    t->st.opts = t->o;
    t->st.opts.config_path = t->st.opts.run_dir = t->st.opts.data_dir = t->st.opts.synthetic = NULL;
    t->st.opts.sample = NULL;
    t->st.opts.sample_user = NULL;
    t->st.opts.backend = NULL;
    t->st.opts.dist = NULL;
    t->st.train_rng = t->data.rng;
    if (!t->data.synthetic) {
        t->st.train_pos = asa_loader_get_state(&t->data.train);
        t->st.train_pos.index *= (uint64_t)t->d->world;
    }
    // Every rank holds the same weights and state: rank 0 alone writes them. Sharded moments are gathered
    // on rank 0 first.
    char *dir = NULL;
    float *moments[2] = {NULL, NULL};
    if (t->zero) {
        size_t total = t->model.layout.total;
        if (t->d->rank == 0) {
            moments[0] = asa_malloc(sizeof(float) * total);
            moments[1] = asa_malloc(sizeof(float) * total);
        }
        asa_dist_gather_to_root(t->d, moments[0], t->opt.m, total);
        asa_dist_gather_to_root(t->d, moments[1], t->opt.v, total);
    }
    int rc = log_sync(t);
    if (!rc) rc = t->d->rank == 0 ? asa_checkpoint_save(t->run, &t->model, &t->opt, t->zero ? (const float *const *)moments : NULL,
                                                   &t->st, t->o.keep, &dir)
                             : ASA_OK;
    free(moments[0]);
    free(moments[1]);
    rc = asa_dist_agree(t->d, rc);
    if (rc) {
        free(dir);
        return rc;
    }
    free(t->last_ckpt);
    t->last_ckpt = dir;
    return ASA_OK;
}

static const char *nonfinite_name(double v) { return isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf"; }

// After a step whose loss is not finite: which tensor went bad first, as "<what>; first non-finite: <where>".
// Each rank looks at its own micro-batch (bad_index: the one whose loss was not finite, or -1); the lowest
// rank that found one speaks for all.
static void diagnose_loss(trainer *t, float loss, long long bad_index, char *out, size_t cap) {
    int rc = ASA_OK;
    if (bad_index >= 0) {
        char where[256];
        asa_model_find_nonfinite(&t->model, where, sizeof where);
        rc = asa_err_set("loss is %s (global micro-batch %lld); first non-finite: %s", nonfinite_name(t->model.loss),
                         bad_index, where[0] ? where : "the loss itself (every tensor before it is finite)");
    }
    if (asa_dist_agree(t->d, rc) != ASA_OK) snprintf(out, cap, "%s", asa_err_msg());
    else snprintf(out, cap, "loss is %s (the sum over micro-batches overflowed)", nonfinite_name(loss));
}

// After a step whose gradient norm is not finite: the first non-finite gradient in backward order. Under
// ZeRO-1 each rank holds the reduced gradients of its shard only.
static void diagnose_grads(trainer *t, double gnorm, char *out, size_t cap) {
    asa_model *m = &t->model;
    int idx = t->zero ? asa_model_find_nonfinite_grad(m, t->opt.lo, t->opt.n)
                      : asa_model_find_nonfinite_grad(m, 0, m->layout.total);
    if (t->zero) idx = asa_dist_max(t->d, idx);  // backward order runs from the highest index down
    snprintf(out, cap, "gradient norm is %s; first non-finite gradient (in backward order): %s", nonfinite_name(gnorm),
             idx >= 0 ? m->layout.tensors[idx].name : "none (the norm's sum of squares overflowed)");
}

static void log_skipped(trainer *t, int step, float lr, const char *why) {
    if (!t->log) return;
    cJSON *j = cJSON_CreateString(why);  // printed quoted and escaped
    char *text = cJSON_PrintUnformatted(j);
    if (text) fprintf(t->log, "{\"step\": %d, \"skipped\": %s, \"lr\": %.9g}\n", step, text, lr);
    fflush(t->log);
    free(text);
    cJSON_Delete(j);
}

static int trainer_loop(trainer *t) {
    asa_train_options *o = &t->o;
    asa_model *m = &t->model;
    int B = o->batch, T = o->seq, accum = o->batch_tokens / (B * T);
    const asa_dist *d = t->d;
    int local = accum / d->world;  // this rank's micro-batches of every step
    size_t n_grads = m->layout.total;
    int stop = 0;  // a stop request every rank has seen at the last reduction
    int32_t *tok = asa_malloc(sizeof(int32_t) * (size_t)B * T), *tgt = asa_malloc(sizeof(int32_t) * (size_t)B * T);
    char *svg_path = path_join(t->run, "loss.svg");
    char title[512];
    snprintf(title, sizeof title, "%s: %s, %d-token batches", base_name(t->run), t->cfg.layer_pattern, o->batch_tokens);
    int start = t->st.step, status = ASA_OK, stop_at = o->steps;
    if (o->exit_after > 0 && start + o->exit_after < stop_at) stop_at = start + o->exit_after;
    double t0 = now_sec(), elapsed0 = t->st.elapsed_s, t_log = t0;
    int log_step0 = start, ckpt_step = start;
    float first_loss = NAN;
    double last_val = NAN;
    int skipped_run = 0;  // consecutive steps skipped for a NaN/Inf (--on-nan skip)

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;  // a second Ctrl-C kills the process the usual way
    sigemptyset(&sa.sa_mask);
    stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    while (t->st.step < stop_at && !stop_requested(d, stop)) {
        int step = t->st.step;  // 0-based index of the step being taken
        double ts = now_sec();
        asa_model_zero_grad(m);
        // Rank r takes global micro-batches r, r + world, ... of the step, as the shard loader does.
        double red[3] = {0, 0, 0};  // loss sum, ranks whose data failed, ranks asked to stop
        long long bad_index = -1;   // the micro-batch whose loss was not finite (its activations are kept)
        // A log line that failed to write (full disk) stops the run now rather than at the next checkpoint;
        // the step's reduction below carries the failure to every rank, with this message.
        if (t->log && ferror(t->log)) {
            log_sync(t);
            red[1] = 1;
        }
        for (int k = 0; k < local && !red[1]; k++) {
            uint64_t index = (uint64_t)step * (uint64_t)accum + (uint64_t)k * (uint64_t)d->world + (uint64_t)d->rank;
            if (data_next(&t->data, index, tok, tgt, B, T)) {
                red[1] = 1;
                break;
            }
            float l = asa_model_forward(m, tok, tgt, B, T);
            red[0] += l;
            if (!isfinite(l)) {  // the sum carries it to every rank
                bad_index = (long long)index;
                break;
            }
            asa_model_backward(m, 1.0f / local);
        }
        red[2] = stop_signal != 0;
        asa_dist_allreduce_sum(d, red, 3);
        if (red[1] > 0) {
            status = asa_dist_agree(d, ASA_ERR);
            break;
        }
        stop = red[2] > 0;
        float loss = (float)(red[0] / accum);
        float lr = asa_lr_at((asa_sched_kind)o->schedule, o->lr, step, o->warmup, o->steps, o->min_lr_ratio, o->decay_frac);
        char bad[768] = "";  // what went non-finite, and where
        double gnorm = NAN;
        if (!isfinite(loss)) {
            diagnose_loss(t, loss, bad_index, bad, sizeof bad);
        } else if (t->zero) {
            asa_dist_reduce_scatter_mean(d, m->grads, n_grads);
            double ss = asa_grad_sum_squares(m, t->opt.lo, t->opt.n);
            asa_dist_allreduce_sum(d, &ss, 1);
            gnorm = sqrt(ss);
        } else {
            asa_dist_allreduce_mean(d, m->grads, n_grads);
            gnorm = asa_grad_norm(m);
        }
        if (!bad[0] && !isfinite(gnorm)) diagnose_grads(t, gnorm, bad, sizeof bad);
        if (bad[0]) {
            const char *last_ckpt = t->last_ckpt ? t->last_ckpt : "none: no checkpoint was written yet";
            if (o->on_nan != ASA_ON_NAN_SKIP) {
                status = asa_err_set("step %d: %s; stopping without a checkpoint of this state (the last good checkpoint "
                                     "is %s; --on-nan skip would skip such steps)", step + 1, bad, last_ckpt);
                break;
            }
            if (++skipped_run > ASA_MAX_SKIPPED_STEPS) {
                status = asa_err_set("step %d: %s; %d steps in a row were skipped: the run has diverged; stopping (the "
                                     "last good checkpoint is %s)", step + 1, bad, ASA_MAX_SKIPPED_STEPS + 1, last_ckpt);
                break;
            }
            // The step's data is consumed and the schedule moves on; weights and AdamW state stay as they were.
            if (!o->quiet) printf("step %6d/%d | skipped: %s\n", step + 1, o->steps, bad);
            log_skipped(t, step + 1, lr, bad);
            t->st.step = step + 1;
            t->st.tokens_seen += (uint64_t)o->batch_tokens;
            continue;
        }
        skipped_run = 0;
        asa_adamw_update(&t->opt, m, lr, gnorm);
        if (t->zero) asa_dist_allgather(d, m->params, n_grads);
        double step_time = now_sec() - ts;
        t->st.step = step + 1;
        t->st.tokens_seen += (uint64_t)o->batch_tokens;
        t->st.last_loss = loss;
        if (isnan(first_loss)) first_loss = loss;

        double vloss = NAN;
        if ((o->val_every > 0 && t->st.step % o->val_every == 0) || t->st.step == o->steps) {
            if ((status = data_val_loss(&t->data, m, o->val_batches, tok, tgt, B, T, &vloss))) break;
            if (!isnan(vloss)) last_val = vloss;
        }
        double now = now_sec();
        t->st.elapsed_s = elapsed0 + (now - t0);
        if (t->log) {  // rank 0 only
            fprintf(t->log, "{\"step\": %d, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, "
                            "\"tokens_per_sec\": %.1f, \"elapsed_s\": %.3f",
                    t->st.step, loss, lr, gnorm, o->batch_tokens / step_time, t->st.elapsed_s);
            if (!isnan(vloss)) fprintf(t->log, ", \"val_loss\": %.9g", vloss);
            fprintf(t->log, "}\n");
            fflush(t->log);
        }
        curve_add(&t->curve, t->st.step, loss, vloss);

        int last = t->st.step == stop_at;
        if (t->st.step % o->log_every == 0 || step == start || last || stop_requested(d, stop)) {
            double rate = (double)(t->st.step - log_step0) * o->batch_tokens / (now - t_log);
            double per_step = (now - t0) / (t->st.step - start);
            char eta[32];
            fmt_duration(per_step * (o->steps - t->st.step), eta, sizeof eta);
            if (!o->quiet) {
                printf("step %6d/%d | loss %.4f | lr %.2e | grad norm %7.3f | %7.0f tok/s | ETA %s", t->st.step,
                       o->steps, loss, lr, gnorm, rate, eta);
                if (!isnan(vloss)) printf(" | val loss %.4f", vloss);
                printf("\n");
                fflush(stdout);
            }
            t_log = now;
            log_step0 = t->st.step;
            if (d->rank == 0)  // a chart that fails to write does not stop training
                asa_svg_loss_chart(svg_path, title, t->curve.steps, t->curve.loss, t->curve.n, t->curve.vsteps,
                                   t->curve.vloss, t->curve.nv);
        } else if (!isnan(vloss) && !o->quiet) {
            printf("  val loss %.4f at step %d\n", vloss, t->st.step);
        }
        if (o->sample && d->rank == 0 && o->sample_every > 0 && t->st.step % o->sample_every == 0)
            o->sample(o->sample_user, m, t->st.step);
        if ((o->ckpt_every > 0 && t->st.step % o->ckpt_every == 0) || last || stop_requested(d, stop)) {
            if ((status = trainer_checkpoint(t))) break;
            ckpt_step = t->st.step;
        }
    }
    // A signal that arrived after this step's checkpoint decision still gets its checkpoint.
    if (!status && ckpt_step != t->st.step) status = trainer_checkpoint(t);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);

    if (!status && !o->quiet) {
        double el = now_sec() - t0;
        if (stop_requested(d, stop) && stop_signal)
            printf("interrupted by signal %d after step %d: checkpoint written to %s; continue with --resume\n",
                   (int)stop_signal, t->st.step, t->last_ckpt ? t->last_ckpt : "(none)");
        else if (stop_requested(d, stop))
            printf("interrupted by a signal to another rank after step %d: checkpoint written to %s; continue "
                   "with --resume\n", t->st.step, t->last_ckpt ? t->last_ckpt : "(none)");
        else if (t->st.step < o->steps)
            printf("stopped after %d steps of this invocation (--exit-after) at step %d/%d: checkpoint %s\n",
                   t->st.step - start, t->st.step, o->steps, t->last_ckpt ? t->last_ckpt : "(none)");
        if (t->st.step > start) {
            printf("done: steps %d-%d in %.1f s, loss %.4f -> %.4f", start + 1, t->st.step, el, first_loss,
                   t->st.last_loss);
            if (!isnan(last_val)) printf(", val loss %.4f", last_val);
            printf(", %.0f tok/s; run directory %s\n", (double)(t->st.step - start) * o->batch_tokens / el, t->run);
        }
    }
    free(svg_path);
    free(tok);
    free(tgt);
    return status;
}

int asa_train_run(const asa_train_options *opts) {
    if (!opts->run_dir || !opts->run_dir[0]) return asa_err_set("a run directory (--out) is required");
    ASA_CHECK(opts->backend != NULL);
    if (!opts->resume && !opts->data_dir == !opts->synthetic)
        return asa_err_set("give exactly one data source: --data DIR or --synthetic copy");
    if (opts->resume && opts->data_dir && opts->synthetic)
        return asa_err_set("give at most one data source: --data DIR or --synthetic copy");
    if (opts->synthetic && strcmp(opts->synthetic, "copy") != 0)
        return asa_err_set("--synthetic: unknown task '%s' (known: copy)", opts->synthetic);
    trainer t;
    memset(&t, 0, sizeof t);
    t.given = opts;
    t.run = opts->run_dir;
    t.one = (asa_dist){.rank = 0, .world = 1};
    t.d = opts->dist ? opts->dist : &t.one;
    // Every rank checks its input before rank 0 creates or changes the run directory, and every rank
    // learns whether that worked: no rank goes on to wait in a reduction the others never reach.
    int rc = asa_dist_agree(t.d, trainer_prepare(&t));
    if (t.d->rank > 0) t.o.quiet = 1;
    if (!rc && t.st.step >= t.o.steps) {
        if (!t.o.quiet)
            printf("%s: the run is already at step %d of %d; pass a larger --steps to continue it\n", t.run,
                   t.st.step, t.o.steps);
        trainer_free(&t);
        return ASA_OK;
    }
    if (!rc) rc = asa_dist_agree(t.d, t.d->rank == 0 ? trainer_setup_dir(&t) : ASA_OK);
    if (!rc && !t.o.quiet) {
        char b[32];
        double n = (double)t.model.layout.total;
        const char *unit = n >= 1e6 ? "M" : "K";
        snprintf(b, sizeof b, "%.2f%s", n >= 1e6 ? n / 1e6 : n / 1e3, unit);
        printf("asa train: %s (pattern %s, %s parameters), %s, batch %d x %d tokens x %d accumulation",
               t.cfg_name, t.cfg.layer_pattern, b, t.data.synthetic ? "synthetic copy task" : t.st.data_dir,
               t.o.batch, t.o.seq, t.o.batch_tokens / (t.o.batch * t.o.seq * t.d->world));
        if (t.d->world > 1) printf(" x %d ranks", t.d->world);
        printf(" = %d tokens/step\n", t.o.batch_tokens);
        if (t.d->world > 1 || t.d->impl)
            printf("  data-parallel: %d rank%s started by %s, gradients over %s\n", t.d->world, t.d->world > 1 ? "s" : "",
                   t.d->launcher, t.d->transport);
        if (t.zero) {
            double mib = 1024.0 * 1024, full = 2.0 * sizeof(float) * (double)t.model.layout.total;
            printf("  ZeRO-1: AdamW moments sharded over %d ranks: %.2f MiB per rank instead of %.2f MiB\n",
                   t.d->world, 2.0 * sizeof(float) * (double)t.opt.n / mib, full / mib);
        }
        if (t.o.resume) printf("  resuming %s at step %d of %d\n", t.ckpt_dir, t.st.step, t.o.steps);
        printf("  %s schedule, peak lr %g, warmup %d, %d steps; run directory %s\n", sched_names[t.o.schedule], t.o.lr,
               t.o.warmup, t.o.steps, t.run);
        if (!t.data.synthetic && !t.data.have_val) printf("  no val-*.shard files: no validation loss\n");
        fflush(stdout);
    }
    if (!rc) rc = trainer_loop(&t);
    trainer_free(&t);
    return rc;
}
