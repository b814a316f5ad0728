/* lt_family_gemma2.c -- Gemma 2 (Gemma2Config defaults, transformers 5.24):
 * four RMSNorms per layer, each x * (1 + w) in fp32 (input_layernorm,
 * post_attention_layernorm on the attention output, pre_feedforward_layernorm,
 * post_feedforward_layernorm on the MLP output); embeddings * sqrt(hidden_size);
 * GeGLU with the tanh GELU (hidden_activation); attention scale
 * query_pre_attn_scalar^-0.5; attention scores and final logits soft-capped
 * (cap * tanh(x / cap)); sliding window on the layers layer_types marks (v5),
 * else on every other layer from layer 0 (v4); attention_bias -> q/k/v/o;
 * tied head by default. */
#include "lt_family.h"

static const char *const KEYS[] = {"attention_bias", "hidden_activation", "query_pre_attn_scalar",
                                   "attn_logit_softcapping", "final_logit_softcapping", "sliding_window",
                                   "layer_types", "use_bidirectional_attention", "cache_implementation", NULL};
static const char *const FIXTURES[] = {"gemma2", NULL};

/* the sandwich norms: llama.cpp's post_attention_norm / ffn_norm / post_ffw_norm */
static const char *const GGUF_NAMES[][2] = {{"post_attention_layernorm", "post_attention_norm"},
                                            {"pre_feedforward_layernorm", "ffn_norm"},
                                            {"post_feedforward_layernorm", "post_ffw_norm"},
                                            {NULL, NULL}};

const lt_family lt_family_gemma2 = {
    .arch = LT_ARCH_GEMMA2,
    .model_type = "gemma2",
    .class_name = "Gemma2ForCausalLM",
    .keys = KEYS,
    .kv_heads_default = 4,
    .head_dim_default = 256,
    .max_pos_default = 8192,
    .window_default = 4096,
    .rms_eps_default = 1e-6,
    .window = LT_WINDOW_LAYERS,
    .attn_bias = LT_ATTN_BIAS_QKVO,
    .fixtures = FIXTURES,
    .gguf = {.arch = "gemma2", .names = GGUF_NAMES, .swa = 1, .softcaps = 1, .tied_only = 1, .no_attn_bias = 1,
             .scale_27b_layers = 46},
    .norm_offset = 1.0f,
    .sandwich_norm = 1,
    .embed_scale = 1,
    .act_key = "hidden_activation",
    .act_default = "gelu_pytorch_tanh",
    .softcaps = 1,
    .attn_scalar_default = 256,
    .attn_softcap_default = 50.0,
    .final_softcap_default = 30.0,
    .tie_default = 1,
};
