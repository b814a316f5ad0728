/* lt_family_qwen3.c -- Qwen3 (Qwen3Config defaults): per-head RMSNorm on q
 * and k; attention_bias -> q/k/v/o; head_dim absent -> 128. */
#include "lt_family.h"

static const char *const KEYS[] = {"attention_bias", "sliding_window", "use_sliding_window", "max_window_layers",
                                   "layer_types", NULL};
static const char *const FIXTURES[] = {"qwen3", NULL};

const lt_family lt_family_qwen3 = {
    .arch = LT_ARCH_QWEN3,
    .model_type = "qwen3",
    .class_name = "Qwen3ForCausalLM",
    .keys = KEYS,
    .kv_heads_default = 32,
    .head_dim_default = 128,
    .max_pos_default = 32768,
    .window = LT_WINDOW_QWEN,
    .attn_bias = LT_ATTN_BIAS_QKVO,
    .qk_norm = LT_QK_NORM_HEAD,
    .fixtures = FIXTURES,
    .gguf = {.arch = "qwen3"},
};
