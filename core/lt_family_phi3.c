/* lt_family_phi3.c -- Phi-3 / Phi-3.5 / Phi-4-mini (Phi3Config defaults,
 * transformers 5.24): the Llama layer with fused projections
 * (self_attn.qkv_proj = q, k, v rows; mlp.gate_up_proj = gate, up rows; no
 * biases), partial rotary (partial_rotary_factor, 0.75 in Phi-4-mini) and
 * LongRoPE (short / long factors, chosen per batch by its largest position
 * against original_max_position_embeddings). resid_pdrop / embd_pdrop /
 * attention_dropout are training-time dropout: accepted at 0 only. The keys
 * Phi-4-mini's config carries for its remote code (attention_bias,
 * mlp_bias, lm_head_bias, full_attn_mod, interpolate_factor) are ignored by
 * transformers' Phi3 module: accepted at the values that mean the model it
 * builds, refused otherwise. */
#include "lt_family.h"

static const char *const KEYS[] = {"original_max_position_embeddings", "sliding_window", "auto_map", NULL};
static const char *const FIXED[][2] = {{"resid_pdrop", "0"},      {"embd_pdrop", "0"},    {"attention_bias", "false"},
                                       {"mlp_bias", "false"},     {"lm_head_bias", "false"},
                                       {"full_attn_mod", "1"},    {"interpolate_factor", "1"},
                                       {NULL, NULL}};
static const char *const FIXTURES[] = {"phi3", "phi3_short", NULL};
/* llama.cpp's phi3 reads the fused weights whole: attn_qkv (q, k, v rows) and ffn_up (gate, up rows) */
static const char *const GGUF_NAMES[][2] = {{"self_attn.qkv_proj", "attn_qkv"}, {"mlp.gate_up_proj", "ffn_up"}, {NULL, NULL}};

const lt_family lt_family_phi3 = {
    .arch = LT_ARCH_PHI3,
    .model_type = "phi3",
    .class_name = "Phi3ForCausalLM",
    .keys = KEYS,
    .kv_heads_default = 0,
    .head_dim_default = 0,
    .max_pos_default = 4096,
    .window_default = 0, /* sliding_window absent: None */
    .rms_eps_default = 1e-5,
    .window = LT_WINDOW_ALL,
    .attn_bias = LT_ATTN_BIAS_IGNORED,
    .fixtures = FIXTURES,
    .fused_proj = 1,
    .reads_rope_extras = 1,
    .omp_default = 4096,
    .fixed = FIXED,
    .gguf = {.arch = "phi3", .names = GGUF_NAMES},
};
