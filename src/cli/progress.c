#include "cli/progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_progress_start(cli_progress *p, const char *label, const char *unit, int64_t total) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->unit = unit;
    p->total = total > 0 ? total : 1;
    p->start = cli_now();
    p->last_decile = -1;
    p->tty = isatty(2);
}

static void draw(cli_progress *p, int64_t done, int final) {
    double el = cli_now() - p->start, frac = (double)done / (double)p->total;
    if (frac > 1) frac = 1;
    double scale = strcmp(p->unit, "MB") == 0 ? 1e6 : 1.0;
    double rate = el > 0 ? done / scale / el : 0;
    double eta = (frac > 0 && !final) ? el * (1 - frac) / frac : 0;
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    int prec = scale > 1 ? 1 : 0;
    fprintf(stderr, "%s%s [%s] %3.0f%%  %.*f/%.*f %s  %.*f %s/s  %s %d:%02d%s", p->tty ? "\r" : "", p->label, bar,
            100 * frac, prec, done / scale, prec, p->total / scale, p->unit, prec + 1, rate, p->unit,
            final ? "took" : "ETA", (int)((final ? el : eta) / 60), (int)(final ? el : eta) % 60,
            (p->tty && !final) ? "" : "\n");
    fflush(stderr);
}

void cli_progress_update(cli_progress *p, int64_t done) {
    double now = cli_now();
    if (p->tty) {
        if (now - p->last_draw < 0.1) return;
        p->last_draw = now;
        draw(p, done, 0);
    } else {
        int decile = (int)(10 * (double)done / (double)p->total);
        if (decile <= p->last_decile || decile >= 10) return;
        p->last_decile = decile;
        draw(p, done, 0);
    }
}

void cli_progress_finish(cli_progress *p, int64_t done) { draw(p, done, 1); }
