/* lt_family_gemma3.c -- Gemma 3 text (Gemma3TextConfig defaults, transformers
 * 5.24; model_type gemma3_text, Gemma3ForCausalLM): Gemma 2's layer (four
 * (1 + w) norms, embeddings * sqrt(hidden_size), GeGLU, query_pre_attn_scalar,
 * soft-caps when given -- none by default) plus per-head q/k RMSNorm with
 * (1 + w); sliding windows on the layers layer_types marks (v5), else every
 * layer but each sliding_window_pattern-th (default 6: 5 local : 1 global);
 * two rotary tables: the global layers rope_theta (default 1e6) with
 * rope_scaling (linear), the local layers rope_local_base_freq (default 1e4)
 * -- per layer type in v5's rope_parameters. Tied head by default.
 *
 * The same language model inside Gemma3ForConditionalGeneration (model_type
 * gemma3, Gemma3Config): the text settings under text_config, the SigLIP
 * vision tower and the projector beside it. transformers 5 names the modules
 * model.language_model.*, lm_head, model.vision_tower.*,
 * model.multi_modal_projector.*; checkpoints saved by transformers 4.5x (and
 * by 5.x's save_pretrained, which writes the legacy names back) hold
 * language_model.model.*, language_model.lm_head.*, vision_tower.*,
 * multi_modal_projector.*; both load (conversion_mapping.py "llava"). */
#include "lt_family.h"

static const char *const KEYS[] = {"attention_bias",        "hidden_activation",      "query_pre_attn_scalar",
                                   "attn_logit_softcapping", "final_logit_softcapping", "sliding_window",
                                   "layer_types",           "use_bidirectional_attention", "cache_implementation",
                                   "rope_local_base_freq",  "sliding_window_pattern", NULL};
static const char *const FIXTURES[] = {"gemma3", "gemma3_cg", NULL};

/* the sandwich norms: llama.cpp's post_attention_norm / ffn_norm / post_ffw_norm */
static const char *const GGUF_NAMES[][2] = {{"post_attention_layernorm", "post_attention_norm"},
                                            {"pre_feedforward_layernorm", "ffn_norm"},
                                            {"post_feedforward_layernorm", "post_ffw_norm"},
                                            {NULL, NULL}};

static const char *const WRAP_KEYS[] = {"vision_config", "mm_tokens_per_image", "boi_token_index",
                                        "eoi_token_index", "image_token_index", NULL};
static const char *const OTHERS_V5[] = {"model.vision_tower.", "model.multi_modal_projector.", NULL};
static const char *const OTHERS_V4[] = {"vision_tower.", "multi_modal_projector.", NULL};

static const lt_family_wrapper WRAPPER = {
    .model_type = "gemma3",
    .class_name = "Gemma3ForConditionalGeneration",
    .text_key = "text_config",
    .keys = WRAP_KEYS,
    /* Gemma3TextConfig's sizes (gemma-3-4b-it's text_config leaves out vocab_size and num_attention_heads) */
    .text_defaults = "{\"vocab_size\": 262208, \"hidden_size\": 2304, \"intermediate_size\": 9216, "
                     "\"num_hidden_layers\": 26, \"num_attention_heads\": 8}",
    .layouts = {{.body = "model.language_model.", .head = "lm_head.", .others = OTHERS_V5},
                {.body = "language_model.model.", .head = "language_model.lm_head.", .others = OTHERS_V4}},
};

const lt_family lt_family_gemma3 = {
    .arch = LT_ARCH_GEMMA3,
    .model_type = "gemma3_text",
    .class_name = "Gemma3ForCausalLM",
    .keys = KEYS,
    .kv_heads_default = 4,
    .head_dim_default = 256,
    .max_pos_default = 131072,
    .window_default = 4096,
    .rms_eps_default = 1e-6,
    .window = LT_WINDOW_LAYERS,
    .attn_bias = LT_ATTN_BIAS_QKVO,
    .qk_norm = LT_QK_NORM_HEAD,
    .fixtures = FIXTURES,
    .gguf = {.arch = "gemma3", .names = GGUF_NAMES, .swa = 1, .no_attn_bias = 1,
             .scale_27b_layers = 62},
    .norm_offset = 1.0f,
    .sandwich_norm = 1,
    .embed_scale = 1,
    .act_key = "hidden_activation",
    .act_default = "gelu_pytorch_tanh",
    .softcaps = 1,
    .attn_scalar_default = 256,
    .attn_softcap_default = 0,
    .final_softcap_default = 0,
    .tie_default = 1,
    .window_pattern = 6,
    .rope_per_type = 1,
    .rope_theta_default = 1000000.0,
    .rope_local_theta_default = 10000.0,
    .wrapper = &WRAPPER,
};
