// Multiple-choice parsing (one builder per format) and scoring.
#include "eval/mc.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/json_limits.h"

#define MC_MAX_FILE_BYTES ((size_t)1 << 31)

// Concatenation of the strings up to a NULL, in a new buffer.
static char *cat(const char *first, ...) {
    va_list ap;
    size_t len = 0;
    va_start(ap, first);
    for (const char *p = first; p; p = va_arg(ap, const char *)) len += strlen(p);
    va_end(ap);
    char *out = asa_malloc(len + 1), *w = out;
    va_start(ap, first);
    for (const char *p = first; p; p = va_arg(ap, const char *)) {
        size_t l = strlen(p);
        memcpy(w, p, l);
        w += l;
    }
    va_end(ap);
    *w = 0;
    return out;
}

static char *dup_n(const char *s, size_t n) {
    char *out = asa_malloc(n + 1);
    memcpy(out, s, n);
    out[n] = 0;
    return out;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Python's str.strip() for ASCII whitespace, as a new string.
static char *strip(const char *s) {
    size_t a = 0, b = strlen(s);
    while (a < b && is_space(s[a])) a++;
    while (b > a && is_space(s[b - 1])) b--;
    return dup_n(s + a, b - a);
}

char *asa_hellaswag_preprocess(const char *text) {
    char *s = strip(text);
    size_t n = strlen(s);
    // " [title]" -> ". " never lengthens the text, so every pass can write in place.
    char *out = asa_malloc(n + 1);
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        if (!strncmp(s + i, " [title]", 8)) {
            out[w++] = '.';
            out[w++] = ' ';
            i += 8;
        } else {
            out[w++] = s[i++];
        }
    }
    out[w] = 0;
    // re.sub("\\[.*?\\]", "", text): a '[' up to the first ']' after it, on one line.
    size_t r = 0;
    w = 0;
    while (out[r]) {
        if (out[r] == '[') {
            size_t j = r + 1;
            while (out[j] && out[j] != ']' && out[j] != '\n') j++;
            if (out[j] == ']') {
                r = j + 1;
                continue;
            }
        }
        out[w++] = out[r++];
    }
    out[w] = 0;
    // str.replace("  ", " "): non-overlapping pairs, left to right.
    r = 0;
    w = 0;
    while (out[r]) {
        if (out[r] == ' ' && out[r + 1] == ' ') {
            out[w++] = ' ';
            r += 2;
        } else {
            out[w++] = out[r++];
        }
    }
    out[w] = 0;
    free(s);
    return out;
}

// Python's str.capitalize() on ASCII: first character upper case, the rest lower case.
static char *capitalize(const char *s) {
    char *out = dup_n(s, strlen(s));
    for (size_t i = 0; out[i]; i++) out[i] = (char)(i == 0 ? toupper((unsigned char)out[i]) : tolower((unsigned char)out[i]));
    return out;
}

// ----------------------------------------------------------------------------
// records

typedef struct {
    const char *path;
    int line;
} where;

static int bad(const where *at, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const where *at, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return asa_err_set("%s:%d: %s", at->path, at->line, msg);
}

static const char *get_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int need_str(const cJSON *o, const char *key, const where *at, const char **out) {
    if (!(*out = get_str(o, key))) return bad(at, "key '%s': missing or not a string", key);
    return ASA_OK;
}

// An integer field given as a JSON number or a string of digits.
static int need_int(const cJSON *o, const char *key, const where *at, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    // The range test comes first: casting a double outside int's range is undefined.
    if (cJSON_IsNumber(v) && v->valuedouble >= -1000000 && v->valuedouble <= 1000000 &&
        v->valuedouble == (double)(int)v->valuedouble) {
        *out = (int)v->valuedouble;
        return ASA_OK;
    }
    if (cJSON_IsString(v) && v->valuestring[0]) {
        char *end;
        long x = strtol(v->valuestring, &end, 10);
        if (!*end && x >= -1000000 && x <= 1000000) {
            *out = (int)x;
            return ASA_OK;
        }
    }
    return bad(at, "key '%s': missing or not an integer", key);
}

static void set_choice(asa_mc_example *e, int i, char *ctx, const char *choice) {
    e->ctx[i] = ctx;
    e->cont[i] = cat(" ", choice, NULL);
    e->norm_len[i] = (int)strlen(choice);
}

static int check_gold(asa_mc_example *e, const where *at) {
    if (e->gold < 0 || e->gold >= e->n_choices) {
        return bad(at, "gold answer %d is not one of the %d choices", e->gold, e->n_choices);
    }
    return ASA_OK;
}

// Fills e from one JSON record of the task (label_from_file >= 0 when a labels file gives it).
static int build_json(const char *task, const cJSON *o, const where *at, int label_from_file, asa_mc_example *e) {
    const char *a, *b, *c;
    if (!strcmp(task, "piqa")) {
        if (need_str(o, "goal", at, &a) || need_str(o, "sol1", at, &b) || need_str(o, "sol2", at, &c)) return ASA_ERR;
        e->n_choices = 2;
        set_choice(e, 0, cat("Question: ", a, "\nAnswer:", NULL), b);
        set_choice(e, 1, cat("Question: ", a, "\nAnswer:", NULL), c);
        if (label_from_file >= 0) e->gold = label_from_file;
        else if (cJSON_GetObjectItemCaseSensitive(o, "label")) {
            if (need_int(o, "label", at, &e->gold)) return ASA_ERR;
        } else {
            return bad(at, "no 'label' key: give the labels file with --labels");
        }
        return check_gold(e, at);
    }
    if (!strcmp(task, "hellaswag")) {
        const char *act, *ca, *cb;
        if (need_str(o, "activity_label", at, &act) || need_str(o, "ctx_a", at, &ca) || need_str(o, "ctx_b", at, &cb) ||
            need_int(o, "label", at, &e->gold))
            return ASA_ERR;
        const cJSON *ends = cJSON_GetObjectItemCaseSensitive(o, "endings");
        int n = cJSON_IsArray(ends) ? cJSON_GetArraySize(ends) : 0;
        if (n < 2 || n > ASA_MC_MAX_CHOICES) return bad(at, "key 'endings': not an array of 2 to 8 strings");
        for (int i = 0; i < n; i++)
            if (!cJSON_IsString(cJSON_GetArrayItem(ends, i))) return bad(at, "key 'endings': not an array of 2 to 8 strings");
        char *cap = capitalize(cb), *raw = cat(act, ": ", ca, " ", cap, NULL);
        char *ctx = asa_hellaswag_preprocess(raw);
        free(cap);
        free(raw);
        for (int i = 0; i < n; i++) {
            char *end = asa_hellaswag_preprocess(cJSON_GetArrayItem(ends, i)->valuestring);
            set_choice(e, i, i == 0 ? ctx : cat(ctx, NULL), end);
            e->n_choices = i + 1;
            free(end);
        }
        return check_gold(e, at);
    }
    if (!strcmp(task, "winogrande")) {
        if (cJSON_GetObjectItemCaseSensitive(o, "context_options")) {  // MosaicML
            const cJSON *opts = cJSON_GetObjectItemCaseSensitive(o, "context_options");
            int n = cJSON_IsArray(opts) ? cJSON_GetArraySize(opts) : 0;
            if (n < 2 || n > ASA_MC_MAX_CHOICES)
                return bad(at, "key 'context_options': not an array of 2 to 8 strings");
            if (need_str(o, "continuation", at, &a) || need_int(o, "gold", at, &e->gold)) return ASA_ERR;
            for (int i = 0; i < n; i++) {
                const cJSON *s = cJSON_GetArrayItem(opts, i);
                if (!cJSON_IsString(s)) return bad(at, "key 'context_options': not an array of 2 to 8 strings");
                e->ctx[i] = cat(s->valuestring, NULL);
                e->cont[i] = cat(" ", a, NULL);
                e->norm_len[i] = (int)strlen(a);
                e->n_choices = i + 1;
            }
            return check_gold(e, at);
        }
        const char *sent, *o1, *o2, *ans;
        if (need_str(o, "sentence", at, &sent) || need_str(o, "option1", at, &o1) || need_str(o, "option2", at, &o2) ||
            need_str(o, "answer", at, &ans))
            return ASA_ERR;
        const char *blank = strchr(sent, '_');
        if (!blank) return bad(at, "key 'sentence': no '_' blank");
        if (strcmp(ans, "1") && strcmp(ans, "2")) return bad(at, "key 'answer': '%s' is not \"1\" or \"2\"", ans);
        char *after = strip(blank + 1), *before = dup_n(sent, (size_t)(blank - sent));
        e->n_choices = 2;
        const char *opt[2] = {o1, o2};
        for (int i = 0; i < 2; i++) {
            e->ctx[i] = cat(before, opt[i], NULL);
            e->cont[i] = cat(" ", after, NULL);
            e->norm_len[i] = (int)strlen(after);
        }
        free(after);
        free(before);
        e->gold = ans[0] - '1';
        return ASA_OK;
    }
    if (!strcmp(task, "arc_easy") || !strcmp(task, "arc_challenge")) {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "question");
        if (cJSON_IsObject(q)) {  // AI2
            const char *stem, *key;
            if (need_str(q, "stem", at, &stem) || need_str(o, "answerKey", at, &key)) return ASA_ERR;
            const cJSON *ch = cJSON_GetObjectItemCaseSensitive(q, "choices");
            int n = cJSON_IsArray(ch) ? cJSON_GetArraySize(ch) : 0;
            if (n < 2 || n > ASA_MC_MAX_CHOICES)
                return bad(at, "key 'question.choices': not an array of 2 to 8 choices");
            e->gold = -1;
            for (int i = 0; i < n; i++) {
                const cJSON *ci = cJSON_GetArrayItem(ch, i);
                const char *text, *label;
                if (need_str(ci, "text", at, &text) || need_str(ci, "label", at, &label)) return ASA_ERR;
                set_choice(e, i, cat("Question: ", stem, "\nAnswer:", NULL), text);
                e->n_choices = i + 1;
                if (!strcmp(label, key)) e->gold = i;
            }
            if (e->gold < 0) return bad(at, "answerKey '%s' is not the label of any choice", key);
            return ASA_OK;
        }
        const char *query;  // MosaicML: "Question: <stem>"
        if (need_str(o, "query", at, &query) || need_int(o, "gold", at, &e->gold)) return ASA_ERR;
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "choices");
        int n = cJSON_IsArray(ch) ? cJSON_GetArraySize(ch) : 0;
        if (n < 2 || n > ASA_MC_MAX_CHOICES) return bad(at, "key 'choices': not an array of 2 to 8 strings");
        const char *prefix = strncmp(query, "Question: ", 10) ? "Question: " : "";
        for (int i = 0; i < n; i++) {
            const cJSON *s = cJSON_GetArrayItem(ch, i);
            if (!cJSON_IsString(s)) return bad(at, "key 'choices': not an array of 2 to 8 strings");
            set_choice(e, i, cat(prefix, query, "\nAnswer:", NULL), s->valuestring);
            e->n_choices = i + 1;
        }
        return check_gold(e, at);
    }
    // boolq
    const char *passage, *question;
    if (need_str(o, "passage", at, &passage) || need_str(o, "question", at, &question)) return ASA_ERR;
    const cJSON *ans = cJSON_GetObjectItemCaseSensitive(o, "answer");
    if (!ans) ans = cJSON_GetObjectItemCaseSensitive(o, "label");
    if (cJSON_IsBool(ans)) e->gold = cJSON_IsTrue(ans);
    else if (cJSON_IsString(ans) && (!strcmp(ans->valuestring, "true") || !strcmp(ans->valuestring, "false")))
        e->gold = !strcmp(ans->valuestring, "true");
    else
        return bad(at, "key 'answer' or 'label': missing or not true/false");
    e->n_choices = 2;
    set_choice(e, 0, cat(passage, "\nQuestion: ", question, "?\nAnswer:", NULL), "no");
    set_choice(e, 1, cat(passage, "\nQuestion: ", question, "?\nAnswer:", NULL), "yes");
    return ASA_OK;
}

static const char *const mc_tasks[] = {"piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "boolq"};

int asa_mc_is_task(const char *task) {
    for (size_t i = 0; i < sizeof mc_tasks / sizeof *mc_tasks; i++)
        if (!strcmp(task, mc_tasks[i])) return 1;
    return 0;
}

// Splits text in place into lines (the '\n' become NULs); returns the count.
static int split_lines(char *text, size_t len, char ***lines) {
    int n = 0, cap = 1024;
    char **l = asa_malloc(sizeof *l * cap);
    size_t i = 0;
    while (i < len) {
        if (n == cap) {
            cap *= 2;
            char **nl = realloc(l, sizeof *l * cap);
            ASA_CHECK(nl);
            l = nl;
        }
        l[n++] = text + i;
        char *nlp = memchr(text + i, '\n', len - i);
        if (!nlp) break;
        *nlp = 0;
        if (nlp > text + i && nlp[-1] == '\r') nlp[-1] = 0;
        i = (size_t)(nlp - text) + 1;
    }
    *lines = l;
    return n;
}

static int blank_line(const char *s) {
    while (*s && is_space(*s)) s++;
    return !*s;
}

// A labels file: one integer per non-empty line.
static int read_labels(const char *path, int **labels, int *n) {
    char *text;
    size_t len;
    if (asa_file_read_all(path, MC_MAX_FILE_BYTES, &text, &len) != ASA_OK) return ASA_ERR;
    char **lines;
    int nl = split_lines(text, len, &lines);
    *labels = asa_malloc(sizeof(int) * (nl + 1));
    *n = 0;
    for (int i = 0; i < nl; i++) {
        if (blank_line(lines[i])) continue;
        char *end;
        long v = strtol(lines[i], &end, 10);
        while (*end && is_space(*end)) end++;
        if (*end || end == lines[i] || v < 0 || v >= ASA_MC_MAX_CHOICES) {
            asa_err_set("%s:%d: '%.40s' is not a label (an integer 0..%d)", path, i + 1, lines[i], ASA_MC_MAX_CHOICES - 1);
            free(lines);
            free(text);
            free(*labels);
            *labels = NULL;
            return ASA_ERR;
        }
        (*labels)[(*n)++] = (int)v;
    }
    free(lines);
    free(text);
    return ASA_OK;
}

static asa_mc_example *push_example(asa_mc_set *set, int *cap) {
    if (set->n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        asa_mc_example *ne = realloc(set->ex, sizeof *ne * (size_t)*cap);
        ASA_CHECK(ne);
        set->ex = ne;
    }
    asa_mc_example *e = &set->ex[set->n++];
    memset(e, 0, sizeof *e);
    return e;
}

// llama.cpp's HellaSwag text: 6 lines per task.
static int load_hellaswag_text(char **lines, int nl, const char *path, asa_mc_set *set, int *cap) {
    while (nl > 0 && blank_line(lines[nl - 1])) nl--;
    if (nl % 6) return asa_err_set("%s:%d: HellaSwag text file: %d lines is not a multiple of 6 (context, label, 4 endings)", path, nl, nl);
    for (int i = 0; i < nl; i += 6) {
        where at = {path, i + 2};
        char *end;
        long g = strtol(lines[i + 1], &end, 10);
        if (end == lines[i + 1] || *end || g < 0 || g > 3) return bad(&at, "'%.40s' is not a gold label 0..3", lines[i + 1]);
        asa_mc_example *e = push_example(set, cap);
        e->line = i + 1;
        e->gold = (int)g;
        e->n_choices = 4;
        char *ctx = asa_hellaswag_preprocess(lines[i]);
        for (int c = 0; c < 4; c++) {
            char *endc = asa_hellaswag_preprocess(lines[i + 2 + c]);
            set_choice(e, c, c == 0 ? ctx : cat(ctx, NULL), endc);
            free(endc);
        }
    }
    set->lines = nl;
    return ASA_OK;
}

int asa_mc_load(const char *task, const char *path, const char *labels_path, asa_mc_set *set) {
    memset(set, 0, sizeof *set);
    if (!asa_mc_is_task(task)) return asa_err_set("'%s' is not a multiple-choice task", task);
    if (labels_path && strcmp(task, "piqa"))
        return asa_err_set("%s: a separate labels file is only read for piqa; %s records carry their answers", labels_path, task);
    size_t tl = strlen(task) < sizeof set->task - 1 ? strlen(task) : sizeof set->task - 1;
    memcpy(set->task, task, tl);
    set->task[tl] = 0;
    set->has_norm = strcmp(task, "winogrande") && strcmp(task, "boolq");
    char *text;
    size_t len;
    if (asa_file_read_all(path, MC_MAX_FILE_BYTES, &text, &len) != ASA_OK) return ASA_ERR;
    int *labels = NULL, n_labels = 0, cap = 0;
    if (labels_path && read_labels(labels_path, &labels, &n_labels) != ASA_OK) {
        free(text);
        return ASA_ERR;
    }
    char **lines;
    int nl = split_lines(text, len, &lines), rc = ASA_OK;
    size_t first = 0;
    while (first < len && is_space(text[first])) first++;
    if (!strcmp(task, "hellaswag") && first < len && text[first] != '{') {
        rc = load_hellaswag_text(lines, nl, path, set, &cap);
    } else {
        for (int i = 0; i < nl && rc == ASA_OK; i++) {
            if (blank_line(lines[i])) continue;
            where at = {path, i + 1};
            set->lines++;
            char src[4200];
            snprintf(src, sizeof src, "%s:%d", path, i + 1);
            const asa_json_limits lim = ASA_JSON_RECORD_LIMITS;
            if (asa_json_check(lines[i], strlen(lines[i]), src, &lim)) {
                rc = ASA_ERR;
                break;
            }
            cJSON *o = cJSON_Parse(lines[i]);
            if (!cJSON_IsObject(o)) {
                rc = bad(&at, "not a JSON object");
                cJSON_Delete(o);
                break;
            }
            int label = -1;
            if (labels) {
                if (set->n >= n_labels) {
                    rc = asa_err_set("%s: %d labels for more examples (%s:%d)", labels_path, n_labels, path, i + 1);
                    cJSON_Delete(o);
                    break;
                }
                label = labels[set->n];
            }
            asa_mc_example *e = push_example(set, &cap);
            e->line = i + 1;
            rc = build_json(task, o, &at, label, e);
            cJSON_Delete(o);
        }
        if (rc == ASA_OK && labels && n_labels != set->n)
            rc = asa_err_set("%s: %d labels for the %d examples of %s", labels_path, n_labels, set->n, path);
    }
    if (rc == ASA_OK && set->n == 0) rc = asa_err_set("%s: no examples", path);
    free(lines);
    free(labels);
    free(text);
    if (rc != ASA_OK) asa_mc_free(set);
    return rc;
}

void asa_mc_free(asa_mc_set *set) {
    for (int i = 0; i < set->n; i++)
        for (int c = 0; c < ASA_MC_MAX_CHOICES; c++) {
            free(set->ex[i].ctx[c]);
            free(set->ex[i].cont[c]);
        }
    free(set->ex);
    memset(set, 0, sizeof *set);
}

// ----------------------------------------------------------------------------
// scoring

static int argmax_d(const double *x, int n) {
    int a = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[a]) a = i;
    return a;
}

int asa_mc_eval(const asa_mc_set *set, const asa_tokenizer *tok, asa_scorer *s, int limit,
                asa_eval_progress_fn progress, void *user, asa_mc_result *out, int *pred, int *pred_norm) {
    memset(out, 0, sizeof *out);
    const int n = limit > 0 && limit < set->n ? limit : set->n;
    const int cap = s->max_batch > ASA_MC_MAX_CHOICES ? s->max_batch : ASA_MC_MAX_CHOICES;
    asa_token_buf *ctx = asa_calloc((size_t)cap, sizeof *ctx), *cont = asa_calloc((size_t)cap, sizeof *cont);
    asa_score_req *req = asa_malloc(sizeof *req * cap);
    asa_score_res *res = asa_malloc(sizeof *res * cap);
    asa_encoder *enc = asa_encoder_new(tok);
    int correct = 0, correct_norm = 0, rc = ASA_OK;
    for (int i0 = 0; i0 < n && rc == ASA_OK;) {
        // Whole examples, as many as fit one batch (at least one).
        int i1 = i0, nr = 0;
        while (i1 < n && (i1 == i0 || nr + set->ex[i1].n_choices <= s->max_batch)) nr += set->ex[i1++].n_choices;
        int r = 0;
        for (int i = i0; i < i1 && rc == ASA_OK; i++) {
            const asa_mc_example *e = &set->ex[i];
            for (int c = 0; c < e->n_choices && rc == ASA_OK; c++, r++) {
                rc = asa_encode_pair(enc, tok, e->ctx[c], e->cont[c], &ctx[r], &cont[r]);
                if (rc != ASA_OK) {
                    asa_err_prefix("%s example at line %d: ", set->task, e->line);
                    break;
                }
                req[r] = (asa_score_req){ctx[r].ids, (int)ctx[r].n, cont[r].ids, (int)cont[r].n};
            }
        }
        if (rc == ASA_OK) rc = s->score(s, req, nr, res);
        r = 0;
        for (int i = i0; i < i1 && rc == ASA_OK; i++) {
            const asa_mc_example *e = &set->ex[i];
            double lp[ASA_MC_MAX_CHOICES], lpn[ASA_MC_MAX_CHOICES];
            for (int c = 0; c < e->n_choices; c++, r++) {
                lp[c] = res[r].logprob;
                lpn[c] = res[r].logprob / (e->norm_len[c] > 0 ? e->norm_len[c] : 1);
            }
            int p = argmax_d(lp, e->n_choices), pn = argmax_d(lpn, e->n_choices);
            correct += p == e->gold;
            correct_norm += pn == e->gold;
            if (pred) pred[i] = p;
            if (pred_norm) pred_norm[i] = pn;
        }
        i0 = i1;
        if (progress && rc == ASA_OK) progress(user, i0, n);
    }
    for (int i = 0; i < cap; i++) {
        asa_token_buf_free(&ctx[i]);
        asa_token_buf_free(&cont[i]);
    }
    free(ctx);
    free(cont);
    free(req);
    free(res);
    asa_encoder_free(enc);
    if (rc != ASA_OK) return ASA_ERR;
    out->n = n;
    out->acc = (double)correct / n;
    out->acc_stderr = asa_mean_stderr(correct, correct, n);
    out->acc_norm = (double)correct_norm / n;
    out->acc_norm_stderr = asa_mean_stderr(correct_norm, correct_norm, n);
    return ASA_OK;
}
