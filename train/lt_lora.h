/*
 * lt_lora.h -- LoRA bookkeeping shared by the trainer, the options and the
 * PEFT exporter: the target modules, their shapes, the scaling, PEFT's
 * tensor names, and the initialization of A.
 *
 * A LoRA adapter on a linear layer W (out, in) adds scale * B @ A with
 * A (r, in) and B (out, r): y = x W^T + scale * (x A^T) B^T.
 *   scale = alpha / r            (LoRA)
 *   scale = alpha / sqrt(r)      (rsLoRA, --rslora)
 * Initialization as PEFT 0.15.2 (init_lora_weights=True):
 *   A ~ kaiming_uniform_(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)),  B = 0.
 * (gain = sqrt(2 / (1 + 5)) = 1/sqrt(3), bound = gain * sqrt(3 / fan_in).)
 */
#ifndef LT_LORA_H
#define LT_LORA_H

#include "lt_base.h"
#include "lt_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LT_LORA_Q = 0,
    LT_LORA_K,
    LT_LORA_V,
    LT_LORA_O,
    LT_LORA_GATE,
    LT_LORA_UP,
    LT_LORA_DOWN,
    LT_LORA_NTARGETS
} lt_lora_target;

#define LT_LORA_ALL_TARGETS ((1u << LT_LORA_NTARGETS) - 1u)

const char *lt_lora_target_short(int t); /* "q", ..., "down" */
const char *lt_lora_target_hf(int t);    /* "q_proj", ..., "down_proj" */
const char *lt_lora_target_block(int t); /* "self_attn" or "mlp" */

/* Comma-separated list of targets, short ("q") or Hugging Face ("q_proj")
 * spelling, into a bit mask (1u << lt_lora_target). Rejects unknown names,
 * duplicates and an empty list with a message naming the entry. */
lt_status lt_lora_parse_targets(const char *csv, unsigned *mask, lt_err *err);
/* Mask to "q,k,v" (short spelling, canonical order). */
void lt_lora_targets_str(unsigned mask, char *out, size_t cap);

/* in/out features of the target's linear layer for a model configuration. */
void lt_lora_target_dims(const lt_config *cfg, int t, int *in_features, int *out_features);

double lt_lora_scale(double alpha, int r, int rslora);

/* A (r, in) ~ U(-1/sqrt(in), 1/sqrt(in)) from the rng (row-major). */
void lt_lora_init_A(float *A, int r, int in, lt_rng *rng);

/* PEFT's tensor name: base_model.model.model.layers.<L>.<block>.<t>_proj.lora_<A|B>.weight */
void lt_lora_peft_name(char *out, size_t cap, int layer, int t, int is_B);
/* Parse a PEFT tensor name; LT_ERR_FORMAT (naming it) if it is not one. */
lt_status lt_lora_parse_peft_name(const char *name, int *layer, int *t, int *is_B, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
