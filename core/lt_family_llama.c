/* lt_family_llama.c -- Llama 2/3/3.1/3.2 and EuroLLM (LlamaConfig defaults, transformers 4.51.3 / 5). */
#include "lt_family.h"

static const char *const KEYS[] = {"attention_bias", "mlp_bias", "pretraining_tp", NULL};
static const char *const FIXTURES[] = {"llama", "llama_tied", "eurollm", NULL};

const lt_family lt_family_llama = {
    .arch = LT_ARCH_LLAMA,
    .model_type = "llama",
    .class_name = "LlamaForCausalLM",
    .keys = KEYS,
    .kv_heads_default = 0,
    .head_dim_default = 0,
    .max_pos_default = 2048,
    .window = LT_WINDOW_NONE,
    .attn_bias = LT_ATTN_BIAS_QKVO, /* attention_bias -> q/k/v/o */
    .reads_mlp_bias = 1,
    .fixtures = FIXTURES,
    .gguf = {.arch = "llama", .permute_qk = 1},
};
