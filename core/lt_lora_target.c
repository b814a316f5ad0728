/* lt_lora_target.c -- LoRA target names and shapes (see lt_lora_target.h). */
#include "lt_lora_target.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const SHORT[LT_LORA_NTARGETS] = {"q", "k", "v", "o", "gate", "up", "down", "qkv", "gate_up"};
static const char *const HF[LT_LORA_NTARGETS] = {"q_proj",    "k_proj",  "v_proj",    "o_proj",      "gate_proj",
                                                 "up_proj",   "down_proj", "qkv_proj", "gate_up_proj"};
static const char *const MODULE[LT_LORA_NTARGETS] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",   "self_attn.o_proj",  "mlp.gate_proj",
    "mlp.up_proj",      "mlp.down_proj",    "self_attn.qkv_proj", "mlp.gate_up_proj"};
/* PEFT's prefix for a decoder layer of a causal LM */
static const char PEFT_LAYER_PREFIX[] = "base_model.model.model.layers.";

const char *lt_lora_target_short(int t) { return (unsigned)t < LT_LORA_NTARGETS ? SHORT[t] : "?"; }
const char *lt_lora_target_hf(int t) { return (unsigned)t < LT_LORA_NTARGETS ? HF[t] : "?"; }
const char *lt_lora_target_block(int t) { return t <= LT_LORA_O || t == LT_LORA_QKV ? "self_attn" : "mlp"; }

unsigned lt_lora_targets_for(const lt_config *c, unsigned mask) {
    const unsigned qkv = (1u << LT_LORA_Q) | (1u << LT_LORA_K) | (1u << LT_LORA_V);
    const unsigned gu = (1u << LT_LORA_GATE) | (1u << LT_LORA_UP);
    const unsigned fq = 1u << LT_LORA_QKV, fg = 1u << LT_LORA_GATE_UP;
    if (c->fused_proj) {
        if (mask & qkv) mask = (mask & ~qkv) | fq;
        if (mask & gu) mask = (mask & ~gu) | fg;
    } else {
        if (mask & fq) mask = (mask & ~fq) | qkv;
        if (mask & fg) mask = (mask & ~fg) | gu;
    }
    return mask;
}
const char *lt_lora_target_module(int t) { return (unsigned)t < LT_LORA_NTARGETS ? MODULE[t] : "?"; }

void lt_lora_target_dims(const lt_config *c, int t, int *in, int *out) {
    const int q = c->num_heads * c->head_dim, kv = c->num_kv_heads * c->head_dim;
    switch (t) {
    case LT_LORA_Q: *in = c->hidden_size, *out = q; break;
    case LT_LORA_K:
    case LT_LORA_V: *in = c->hidden_size, *out = kv; break;
    case LT_LORA_O: *in = q, *out = c->hidden_size; break;
    case LT_LORA_GATE:
    case LT_LORA_UP: *in = c->hidden_size, *out = c->intermediate_size; break;
    case LT_LORA_QKV: *in = c->hidden_size, *out = q + 2 * kv; break;
    case LT_LORA_GATE_UP: *in = c->hidden_size, *out = 2 * c->intermediate_size; break;
    default: *in = c->intermediate_size, *out = c->hidden_size; break;
    }
}

void lt_lora_peft_name(char *out, size_t cap, int layer, int t, int is_B) {
    snprintf(out, cap, "%s%d.%s.lora_%c.weight", PEFT_LAYER_PREFIX, layer, lt_lora_target_module(t), is_B ? 'B' : 'A');
}

lt_status lt_lora_parse_peft_name(const char *name, int *layer, int *t, int *is_B, lt_err *err) {
    const char *p = name;
    if (strncmp(p, PEFT_LAYER_PREFIX, sizeof PEFT_LAYER_PREFIX - 1) != 0) goto bad;
    p += sizeof PEFT_LAYER_PREFIX - 1;
    char *end;
    long L = strtol(p, &end, 10);
    if (end == p || *end != '.' || L < 0 || L > 100000) goto bad;
    for (int k = 0; k < LT_LORA_NTARGETS; k++)
        for (int b = 0; b < 2; b++) {
            char want[128];
            lt_lora_peft_name(want, sizeof want, (int)L, k, b);
            if (!strcmp(name, want)) {
                *layer = (int)L;
                *t = k;
                *is_B = b;
                return LT_OK;
            }
        }
bad:
    return lt_fail(err, LT_ERR_FORMAT,
                   "tensor '%s' is not a LoRA weight of the form "
                   "%sN.{self_attn|mlp}.<module>.lora_{A|B}.weight",
                   name, PEFT_LAYER_PREFIX);
}
