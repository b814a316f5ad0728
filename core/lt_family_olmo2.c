/* lt_family_olmo2.c -- OLMo 2 (Olmo2Config defaults, transformers 5.24):
 * post-norm layer (post_attention_layernorm and post_feedforward_layernorm on
 * the sublayer outputs, no input_layernorm); q_norm / k_norm are RMSNorm over
 * the whole q / k projection (heads*head_dim wide) before RoPE;
 * attention_bias -> q/k/v/o; untied head by default. */
#include "lt_family.h"

static const char *const KEYS[] = {"attention_bias", NULL};
static const char *const FIXTURES[] = {"olmo2", NULL};

/* post-norm layer: llama.cpp's post_attention_norm / post_ffw_norm */
static const char *const GGUF_NAMES[][2] = {{"post_attention_layernorm", "post_attention_norm"},
                                            {"post_feedforward_layernorm", "post_ffw_norm"},
                                            {NULL, NULL}};

const lt_family lt_family_olmo2 = {
    .arch = LT_ARCH_OLMO2,
    .model_type = "olmo2",
    .class_name = "Olmo2ForCausalLM",
    .keys = KEYS,
    .kv_heads_default = 0,
    .head_dim_default = 0,
    .max_pos_default = 2048,
    .rms_eps_default = 1e-5,
    .window = LT_WINDOW_NONE,
    .attn_bias = LT_ATTN_BIAS_QKVO,
    .qk_norm = LT_QK_NORM_WHOLE,
    .post_norm = 1,
    .fixtures = FIXTURES,
    .gguf = {.arch = "olmo2", .output_always = 1, .head_dim_derived = 1, .names = GGUF_NAMES},
};
