/*
 * lt_lora.h -- LoRA bookkeeping shared by the trainer, the options and the
 * PEFT exporter: the target modules, their shapes, the scaling, PEFT's
 * tensor names, and the initialization of A.
 *
 * A LoRA adapter on a linear layer W (out, in) adds scale * B @ A with
 * A (r, in) and B (out, r): y = x W^T + scale * (x A^T) B^T.
 *   scale = alpha / r            (LoRA)
 *   scale = alpha / sqrt(r)      (rsLoRA, --rslora)
 * Initialization as PEFT 0.21.2 (init_lora_weights=True; unchanged since 0.15):
 *   A ~ kaiming_uniform_(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)),  B = 0.
 * (gain = sqrt(2 / (1 + 5)) = 1/sqrt(3), bound = gain * sqrt(3 / fan_in).)
 */
#ifndef LT_LORA_H
#define LT_LORA_H

#include "lt_base.h"
#include "lt_config.h"
#include "lt_lora_target.h" /* targets, their names and shapes */

#ifdef __cplusplus
extern "C" {
#endif

/* Comma-separated list of targets, short ("q") or Hugging Face ("q_proj")
 * spelling, into a bit mask (1u << lt_lora_target). Rejects unknown names,
 * duplicates and an empty list with a message naming the entry. */
lt_status lt_lora_parse_targets(const char *csv, unsigned *mask, lt_err *err);
/* Mask to "q,k,v" (short spelling, canonical order). */
void lt_lora_targets_str(unsigned mask, char *out, size_t cap);

double lt_lora_scale(double alpha, int r, int rslora);

/* A (r, in) ~ U(-1/sqrt(in), 1/sqrt(in)) from the rng (row-major). */
void lt_lora_init_A(float *A, int r, int in, lt_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
