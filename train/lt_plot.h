/*
 * lt_plot.h -- loss curves of one or more training runs as an SVG (and a PNG
 * next to it when rsvg-convert or ImageMagick can convert it).
 *
 * Input: RUN_DIR/metrics.jsonl, one JSON object per line, as the trainer
 * writes it:
 *   training lines   {"step", "epoch", "loss", "grad_norm", "lr", "tokens",
 *                     "target_tokens", "tokens_per_s", "elapsed_s"}
 *   evaluation lines {"step", "eval_loss"}   (tokens taken from the training
 *                     line of the same step, interpolated between steps
 *                     otherwise; an eval line may also carry "tokens")
 * Other objects (no "loss" and no "eval_loss") are skipped; a line that is not
 * a JSON object, or a training line without "step"/"tokens", is an error that
 * names the file and line. Non-finite losses are left out of the curve.
 *
 * Output: x = tokens seen, left y = loss (training: solid, evaluation: dashed
 * with markers), right y = learning rate (dotted), ticks and labels on all
 * three axes, one colour per run, a legend. Polylines carry
 * class="train-loss" / "eval-loss" / "lr" and data-run="<run name>"; the
 * right axis is <g id="lr-axis">.
 */
#ifndef LT_PLOT_H
#define LT_PLOT_H

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Plot the runs into out_svg (NULL: <run_dirs[0]>/loss.svg), written
 * atomically. Afterwards, quietly, a PNG with the same stem if a converter
 * is on PATH; *png_written (may be NULL) says whether one was. */
lt_status lt_plot_runs(const char *const *run_dirs, int n_runs, const char *out_svg, int *png_written,
                       lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
