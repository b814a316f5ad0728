/*
 * lt_lora_target.h -- the linear layers LoRA can adapt: their order, names
 * (short, Hugging Face module, module path inside a layer, PEFT tensor name)
 * and shapes. The one place for this knowledge: the runtime (core/lt_model.c),
 * the trainer and the PEFT exporter (train/) all read it.
 */
#ifndef LT_LORA_TARGET_H
#define LT_LORA_TARGET_H

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
    LT_LORA_QKV,     /* fused self_attn.qkv_proj (phi3) */
    LT_LORA_GATE_UP, /* fused mlp.gate_up_proj (phi3) */
    LT_LORA_NTARGETS
} lt_lora_target;

/* every projection of a layer (q, k, v, o, gate, up, down: the fused
 * modules of a fused model, see lt_lora_targets_for) */
#define LT_LORA_ALL_TARGETS ((1u << LT_LORA_QKV) - 1u)
/* every target bit that means something */
#define LT_LORA_ANY_TARGETS ((1u << LT_LORA_NTARGETS) - 1u)

const char *lt_lora_target_short(int t);  /* "q", ..., "down" */
const char *lt_lora_target_hf(int t);     /* "q_proj", ..., "down_proj" */
const char *lt_lora_target_block(int t);  /* "self_attn" or "mlp" */
const char *lt_lora_target_module(int t); /* "self_attn.q_proj", ..., "mlp.down_proj" */

/* The targets a model of this configuration adapts for `mask`: with fused
 * projections (cfg->fused_proj) any of q, k, v means qkv and any of gate, up
 * means gate_up (PEFT adapts the fused module whole); without, qkv means q,
 * k, v and gate_up means gate, up. */
unsigned lt_lora_targets_for(const lt_config *cfg, unsigned mask);

/* in/out features of the target's linear layer for a model configuration. */
void lt_lora_target_dims(const lt_config *cfg, int t, int *in_features, int *out_features);

/* PEFT's tensor name: base_model.model.model.layers.<L>.<block>.<t>_proj.lora_<A|B>.weight */
void lt_lora_peft_name(char *out, size_t cap, int layer, int t, int is_B);
/* Parse a PEFT tensor name; LT_ERR_FORMAT (naming it) if it is not one. */
lt_status lt_lora_parse_peft_name(const char *name, int *layer, int *t, int *is_B, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
