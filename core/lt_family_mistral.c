/* lt_family_mistral.c -- Mistral (MistralConfig defaults). MistralAttention
 * builds no biases whatever attention_bias says; sliding_window applies to
 * every layer (absent -> 4096, null -> none). */
#include "lt_family.h"

static const char *const KEYS[] = {"sliding_window", "attention_bias", NULL};
static const char *const FIXTURES[] = {"mistral", "mistral_nemo", NULL};

const lt_family lt_family_mistral = {
    .arch = LT_ARCH_MISTRAL,
    .model_type = "mistral",
    .class_name = "MistralForCausalLM",
    .keys = KEYS,
    .kv_heads_default = 8,
    .head_dim_default = 0,
    .head_dim_zero_derive = 1,
    .max_pos_default = 4096 * 32,
    .window_default = 4096,
    .window = LT_WINDOW_ALL,
    .attn_bias = LT_ATTN_BIAS_IGNORED,
    .fixtures = FIXTURES,
    .gguf = {.arch = "llama", .permute_qk = 1},
};
