// The loss curve of a run as a self-contained SVG chart (loss.svg in the run directory): axes with
// tick labels, the training loss as a line and validation losses as points.
#ifndef ASA_TRAIN_SVG_H
#define ASA_TRAIN_SVG_H

// Train points (steps[i], loss[i]) i < n and validation points (vsteps[j], vloss[j]) j < nv, both in
// increasing step order; non-finite values are skipped. Written atomically to path.
int asa_svg_loss_chart(const char *path, const char *title, const int *steps, const float *loss, int n,
                       const int *vsteps, const float *vloss, int nv);

#endif
