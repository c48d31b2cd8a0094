// Input files for `asa prepare` and `asa tokenizer train`: files as given, directories walked
// recursively (hidden entries skipped), each directory's files sorted by path so runs are repeatable.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"

typedef struct {
    char **v;
    int n, cap;
} strlist;

static void push(strlist *l, const char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        char **nv = realloc(l->v, sizeof(char *) * (size_t)l->cap);
        if (!nv) { fprintf(stderr, "asa: out of memory\n"); exit(1); }
        l->v = nv;
    }
    l->v[l->n++] = strdup(s);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int walk(const char *cmd, const char *path, strlist *out, int depth) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "asa %s: %s: no such file or directory\n", cmd, path);
        return -1;
    }
    if (S_ISREG(st.st_mode)) {
        push(out, path);
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "asa %s: %s: not a regular file or directory\n", cmd, path);
        return -1;
    }
    if (depth > 64) {
        fprintf(stderr, "asa %s: %s: directories nested too deep\n", cmd, path);
        return -1;
    }
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "asa %s: %s: cannot open directory\n", cmd, path);
        return -1;
    }
    strlist names = {0};
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') push(&names, e->d_name);
    closedir(d);
    qsort(names.v, (size_t)names.n, sizeof(char *), cmp_str);
    int rc = 0;
    for (int i = 0; i < names.n && rc == 0; i++) {
        size_t len = strlen(path) + strlen(names.v[i]) + 2;
        char *child = malloc(len);
        snprintf(child, len, "%s/%s", path, names.v[i]);
        struct stat cst;
        if (stat(child, &cst) == 0 && (S_ISREG(cst.st_mode) || S_ISDIR(cst.st_mode))) rc = walk(cmd, child, out, depth + 1);
        free(child);
    }
    for (int i = 0; i < names.n; i++) free(names.v[i]);
    free(names.v);
    return rc;
}

int cli_collect_inputs(const char *cmd, char *const *inputs, int n, char ***files, int *nfiles) {
    strlist out = {0};
    for (int i = 0; i < n; i++) {
        if (walk(cmd, inputs[i], &out, 0) != 0) {
            cli_free_inputs(out.v, out.n);
            return -1;
        }
    }
    if (out.n == 0) {
        fprintf(stderr, "asa %s: no input files found\n", cmd);
        free(out.v);
        return -1;
    }
    *files = out.v;
    *nfiles = out.n;
    return 0;
}

void cli_free_inputs(char **files, int n) {
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
}
