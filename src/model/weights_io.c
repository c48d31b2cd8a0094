// Saving and loading the parameter arena as safetensors, checked tensor by tensor against the layout.
#include "model/weights_io.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define LIST_MAX 4  // names quoted in one message; the rest are counted

int asa_weights_save(const asa_param_layout *layout, const float *host_params, const char *path, int dtype) {
    if (dtype != ASA_ST_F32 && dtype != ASA_ST_BF16)
        return asa_err_set("%s: weights are stored as F32 or BF16, not %s", path, asa_st_dtype_name((asa_st_dtype)dtype));
    asa_st_out *outs = asa_calloc((size_t)(layout->count ? layout->count : 1), sizeof(asa_st_out));
    for (int i = 0; i < layout->count; i++) {
        const asa_tensor_info *t = &layout->tensors[i];
        outs[i].name = t->name;
        outs[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) outs[i].shape[d] = t->shape[d];
        outs[i].dtype = (asa_st_dtype)dtype;
        outs[i].f32 = host_params + t->offset;
    }
    static const char *const meta[] = {"format", "pt", NULL};
    int rc = asa_st_write(path, outs, layout->count, meta);
    free(outs);
    return rc;
}

typedef struct {
    char buf[900];
    size_t len;
} msg_buf;

static void msg_add(msg_buf *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg_add(msg_buf *m, const char *fmt, ...) {
    if (m->len >= sizeof m->buf - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(m->buf + m->len, sizeof m->buf - m->len, fmt, ap);
    va_end(ap);
    if (r > 0) m->len += (size_t)r < sizeof m->buf - m->len ? (size_t)r : sizeof m->buf - m->len - 1;
}

static void shape_str(char *s, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(s, n, "[");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(s + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < n) snprintf(s + k, n - k, "]");
}

static int same_shape(const asa_tensor_info *e, const asa_st_tensor *t) {
    if (e->ndim != t->ndim) return 0;
    for (int d = 0; d < e->ndim; d++) if (e->shape[d] != t->shape[d]) return 0;
    return 1;
}

// Names, shapes and dtypes, all before any data is read; one message lists what is missing and what is
// unexpected, since a wrong config usually produces both.
static int check_against_layout(const asa_param_layout *layout, const asa_st_file *f, const char *path) {
    msg_buf m = {{0}, 0};
    int missing = 0, found = 0;
    for (int i = 0; i < layout->count; i++) {
        const asa_st_tensor *t = asa_st_find(f, layout->tensors[i].name);
        if (t) { found++; continue; }
        if (missing < LIST_MAX) msg_add(&m, "%s\"%s\"", missing ? ", " : "", layout->tensors[i].name);
        missing++;
    }
    int extra = f->count - found;
    if (missing || extra) {
        msg_buf out = {{0}, 0};
        if (missing) msg_add(&out, "%d expected tensor%s missing (%s%s)", missing, missing > 1 ? "s" : "", m.buf,
                             missing > LIST_MAX ? ", ..." : "");
        if (extra) {
            msg_add(&out, "%s%d unexpected tensor%s (", missing ? "; " : "", extra, extra > 1 ? "s" : "");
            int listed = 0;
            for (int i = 0; i < f->count && listed < LIST_MAX; i++)
                if (!asa_layout_find(layout, f->tensors[i].name))
                    msg_add(&out, "%s\"%s\"", listed++ ? ", " : "", f->tensors[i].name);
            msg_add(&out, "%s)", extra > LIST_MAX ? ", ..." : "");
        }
        return asa_err_set("%s: %s: does this checkpoint belong to this config?", path, out.buf);
    }
    for (int i = 0; i < layout->count; i++) {
        const asa_tensor_info *e = &layout->tensors[i];
        const asa_st_tensor *t = asa_st_find(f, e->name);
        if (!same_shape(e, t)) {
            char want[64], got[160];
            shape_str(want, sizeof want, e->ndim, e->shape);
            shape_str(got, sizeof got, t->ndim, t->shape);
            return asa_err_set("%s: tensor \"%s\": expected shape %s, found %s: does this checkpoint belong to this "
                               "config?", path, e->name, want, got);
        }
        if (t->dtype != ASA_ST_F32 && t->dtype != ASA_ST_BF16 && t->dtype != ASA_ST_F16)
            return asa_err_set("%s: tensor \"%s\" is %s; weights must be F32, BF16 or F16", path, e->name,
                               asa_st_dtype_name(t->dtype));
    }
    return ASA_OK;
}

int asa_weights_load(const asa_param_layout *layout, float *host_params, const char *path) {
    asa_st_file f;
    if (asa_st_open(path, &f)) return ASA_ERR;
    int rc = check_against_layout(layout, &f, path);
    for (int i = 0; i < layout->count && !rc; i++) {
        const asa_tensor_info *e = &layout->tensors[i];
        rc = asa_st_read_f32(&f, asa_st_find(&f, e->name), host_params + e->offset, e->numel);
    }
    asa_st_close(&f);
    return rc;
}
