/* lt_family_qwen2.c -- Qwen2 / Qwen2.5 (Qwen2Config defaults): bias on q/k/v. */
#include "lt_family.h"

static const char *const KEYS[] = {"sliding_window", "use_sliding_window", "max_window_layers", "layer_types", NULL};
static const char *const FIXTURES[] = {"qwen2", NULL};

const lt_family lt_family_qwen2 = {
    .arch = LT_ARCH_QWEN2,
    .model_type = "qwen2",
    .class_name = "Qwen2ForCausalLM",
    .keys = KEYS,
    .kv_heads_default = 32,
    .head_dim_default = 0,
    .max_pos_default = 32768,
    .window = LT_WINDOW_QWEN,
    .attn_bias = LT_ATTN_BIAS_QKV_ALWAYS,
    .fixtures = FIXTURES,
    .gguf = {.arch = "qwen2"},
};
