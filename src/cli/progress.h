// A progress bar on stderr: "label [#####.....]  45%  12.3/27.1 MB  3.2 MB/s  ETA 0:05". Redrawn at most
// ten times a second on a terminal; when stderr is not a terminal (logs, CI) a plain line every 10%.
#ifndef ASA_CLI_PROGRESS_H
#define ASA_CLI_PROGRESS_H

#include <stdint.h>

typedef struct {
    const char *label;
    const char *unit;    // "MB" scales by 1e6, anything else is printed as a count
    int64_t total;
    double start, last_draw;
    int last_decile;
    int tty;
} cli_progress;

void cli_progress_start(cli_progress *p, const char *label, const char *unit, int64_t total);
void cli_progress_update(cli_progress *p, int64_t done);
void cli_progress_finish(cli_progress *p, int64_t done);
double cli_now(void);  // monotonic seconds

#endif
