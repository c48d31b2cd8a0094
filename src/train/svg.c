// Hand-written SVG loss chart (svg.h). Long runs are drawn from bucket means so that the file stays
// small (at most MAX_POINTS vertices) however many steps the log holds.
#include "train/svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"

#define W 800
#define H 480
#define LEFT 72
#define RIGHT 24
#define TOP 44
#define BOTTOM 56
#define MAX_POINTS 1200

typedef struct {
    char *buf;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *s, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(s->buf + s->len, s->cap - s->len, fmt, ap);
        va_end(ap);
        ASA_CHECK(n >= 0);
        if ((size_t)n < s->cap - s->len) {
            s->len += (size_t)n;
            return;
        }
        s->cap = 2 * s->cap + (size_t)n;
        char *nb = realloc(s->buf, s->cap);
        if (!nb) asa_fatal("out of memory writing a chart");
        s->buf = nb;
    }
}

// A tick spacing of 1, 2 or 5 times a power of ten giving about `want` intervals over span.
static double nice_step(double span, int want) {
    double raw = span / want, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

// Tick label without trailing zeros: 0.5, 2, 1500, 1.2e+05.
static void tick_label(char *buf, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;
    if (fabs(v) >= 1e5) snprintf(buf, n, "%.3g", v);
    else {
        int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
        snprintf(buf, n, "%.*f", dec, v);
    }
}

int asa_svg_loss_chart(const char *path, const char *title, const int *steps, const float *loss, int n,
                       const int *vsteps, const float *vloss, int nv) {
    // Data ranges over finite values only.
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < n; i++)
        if (isfinite(loss[i])) {
            x0 = fmin(x0, steps[i]), x1 = fmax(x1, steps[i]);
            y0 = fmin(y0, loss[i]), y1 = fmax(y1, loss[i]);
        }
    for (int i = 0; i < nv; i++)
        if (isfinite(vloss[i])) {
            x0 = fmin(x0, vsteps[i]), x1 = fmax(x1, vsteps[i]);
            y0 = fmin(y0, vloss[i]), y1 = fmax(y1, vloss[i]);
        }
    int empty = !(x0 <= x1);
    if (!empty) x0 = fmin(x0, 0);  // steps count from 0: the axis starts there
    if (empty) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    if (x1 - x0 < 1) x1 = x0 + 1;
    if (y1 - y0 < 1e-3) y0 -= 0.5e-3, y1 += 0.5e-3;
    double ys = nice_step(y1 - y0, 6), xs = nice_step(x1 - x0, 8);
    y0 = floor(y0 / ys) * ys, y1 = ceil(y1 / ys) * ys;
    double pw = W - LEFT - RIGHT, ph = H - TOP - BOTTOM;
#define PX(x) (LEFT + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (TOP + (y1 - (y)) / (y1 - y0) * ph)

    sbuf s = {asa_malloc(65536), 0, 65536};
    sb_printf(&s,
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
              "font-family=\"sans-serif\" font-size=\"12\">\n"
              "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
              W, H, W, H, W, H);
    // Title: escape the characters XML reserves (a run directory name can hold any of them).
    sb_printf(&s, "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">", W / 2);
    for (const char *c = title; *c; c++) {
        if (*c == '<') sb_printf(&s, "&lt;");
        else if (*c == '>') sb_printf(&s, "&gt;");
        else if (*c == '&') sb_printf(&s, "&amp;");
        else sb_printf(&s, "%c", *c);
    }
    sb_printf(&s, "</text>\n");

    // Grid, ticks and tick labels.
    char lab[32];
    for (double y = y0; y <= y1 + ys * 1e-6; y += ys) {
        tick_label(lab, sizeof lab, y, ys);
        sb_printf(&s,
                  "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>"
                  "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                  LEFT, PY(y), W - RIGHT, PY(y), LEFT - 6, PY(y) + 4, lab);
    }
    for (double x = ceil(x0 / xs) * xs; x <= x1 + xs * 1e-6; x += xs) {
        tick_label(lab, sizeof lab, x, xs);
        sb_printf(&s,
                  "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e4e4e4\"/>"
                  "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                  PX(x), TOP, PX(x), H - BOTTOM, PX(x), H - BOTTOM + 18, lab);
    }
    // Axes and their labels.
    sb_printf(&s,
              "<polyline points=\"%d,%d %d,%d %d,%d\" fill=\"none\" stroke=\"black\"/>\n"
              "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">step</text>\n"
              "<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">loss</text>\n",
              LEFT, TOP, LEFT, H - BOTTOM, W - RIGHT, H - BOTTOM, LEFT + pw / 2, H - 14, TOP + ph / 2,
              TOP + ph / 2);

    // Training loss: bucket means of consecutive finite points.
    int finite = 0;
    for (int i = 0; i < n; i++) finite += isfinite(loss[i]) != 0;
    if (finite > 0) {
        int per = (finite + MAX_POINTS - 1) / MAX_POINTS;
        sb_printf(&s, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
        double sx = 0, sy = 0;
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (!isfinite(loss[i])) continue;
            sx += steps[i], sy += loss[i], k++;
            if (k == per) {
                sb_printf(&s, "%.1f,%.1f ", PX(sx / k), PY(sy / k));
                sx = sy = 0, k = 0;
            }
        }
        if (k > 0) sb_printf(&s, "%.1f,%.1f ", PX(sx / k), PY(sy / k));
        sb_printf(&s, "\"/>\n");
    }
    // Validation points, joined by a dashed line.
    if (nv > 0) {
        sb_printf(&s, "<polyline fill=\"none\" stroke=\"#d62728\" stroke-dasharray=\"4 3\" points=\"");
        for (int i = 0; i < nv; i++)
            if (isfinite(vloss[i])) sb_printf(&s, "%.1f,%.1f ", PX(vsteps[i]), PY(vloss[i]));
        sb_printf(&s, "\"/>\n");
        for (int i = 0; i < nv; i++)
            if (isfinite(vloss[i]))
                sb_printf(&s, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#d62728\"/>\n", PX(vsteps[i]),
                          PY(vloss[i]));
    }
    // Legend, top right.
    int lx = W - RIGHT - 150, ly = TOP + 12;
    sb_printf(&s,
              "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
              "<text x=\"%d\" y=\"%d\">train loss</text>\n"
              "<circle cx=\"%d\" cy=\"%d\" r=\"3.5\" fill=\"#d62728\"/><text x=\"%d\" y=\"%d\">validation loss</text>\n",
              lx, ly, lx + 24, ly, lx + 30, ly + 4, lx + 12, ly + 18, lx + 30, ly + 22);
    if (empty)
        sb_printf(&s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">no data yet</text>\n", LEFT + pw / 2,
                  TOP + ph / 2);
    sb_printf(&s, "</svg>\n");
#undef PX
#undef PY
    int rc = asa_file_write_atomic(path, s.buf, s.len);
    free(s.buf);
    return rc;
}
