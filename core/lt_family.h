/*
 * lt_family.h -- one descriptor per model family: everything luxtrain knows
 * about a family that is not shared by all of them. Config parsing
 * (lt_config.c), the parameter list (lt_model_param_specs) and the tests'
 * family list read these; nothing else switches on the family.
 *
 * Adding a family whose layer is the Llama layer with the flags below: write
 * core/lt_family_<name>.c (one `const lt_family lt_family_<name>`), add it to
 * the enum in lt_config.h and the table in lt_family.c, add a fixture under
 * tests/fixtures/models/ (tools/gen_fixtures.py) and its transformers 5
 * config (tools/gen_config_fixture.py v5-configs). See docs/models.md.
 */
#ifndef LT_FAMILY_H
#define LT_FAMILY_H

#include "lt_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How the family's config says which layers use a sliding window. */
typedef enum {
    LT_WINDOW_NONE = 0, /* no sliding window key */
    LT_WINDOW_ALL,      /* sliding_window (absent -> window_default, null -> none) on every layer */
    LT_WINDOW_QWEN,     /* use_sliding_window + max_window_layers (v4) or layer_types (v5) */
    LT_WINDOW_LAYERS,   /* gemma2: layer_types (v5), else every other layer from layer 0 (v4);
                           sliding_window (absent -> window_default) applied by the attention */
} lt_window_rule;

/* How config "attention_bias" maps to projection biases. */
typedef enum {
    LT_ATTN_BIAS_IGNORED = 0, /* the family's module ignores it (mistral) */
    LT_ATTN_BIAS_QKVO,        /* attention_bias -> q/k/v/o biases */
    LT_ATTN_BIAS_QKV_ALWAYS,  /* q/k/v always have a bias, o never (qwen2) */
} lt_attn_bias_rule;

/* q/k RMSNorm (the values of lt_config.qk_norm). */
typedef enum {
    LT_QK_NORM_NONE = 0,
    LT_QK_NORM_HEAD,  /* per head, weight (head_dim) (qwen3) */
    LT_QK_NORM_WHOLE, /* over the whole q / k projection, weight (heads*head_dim) (olmo2) */
} lt_qk_norm;

/* How a family is written to GGUF for llama.cpp (train/lt_gguf.c). */
typedef struct lt_family_gguf {
    const char *arch; /* llama.cpp's architecture name (general.architecture) */
    int permute_qk;   /* q/k rows reordered for llama.cpp's interleaved RoPE (arch "llama") */
    int output_always; /* llama.cpp requires output.weight even when the head is tied */
    int head_dim_derived; /* llama.cpp's graph takes head_dim = hidden_size / heads (olmo2) */
    /* layer tensors named unlike the Llama layer: {HF name after "model.layers.N.",
     * GGUF name after "blk.N."} without ".weight"/".bias"; NULL-terminated, may be NULL */
    const char *const (*names)[2];
    /* Gemma (0 elsewhere) */
    int swa;            /* llama.cpp applies the sliding window itself: attention.sliding_window and
                           sliding_window_pattern written, context_length not capped by the window */
    int softcaps;       /* the graph always soft-caps attention and final logits: both written, and
                           required (without it, a config with a soft-cap is refused) */
    int tied_only;      /* the graph reads its head from token_embd: an untied head is refused */
    int no_attn_bias;   /* the graph has no attention biases: attention_bias is refused */
    int scale_27b_layers; /* llama.cpp's attention scale is head_dim^-0.5, or (hidden / heads)^-0.5 at
                             this block count (its "27B"); another query_pre_attn_scalar is refused */
} lt_family_gguf;

/* Where a checkpoint keeps the language model's tensors when it wraps it
 * (lt_family_wrapper): the file name of luxtrain's "model.<rest>" is
 * body + rest, of "lm_head.<rest>" head + rest; tensors under the other prefixes
 * belong to the other towers (vision, projector): set aside on load, copied
 * through byte for byte on export. */
typedef struct lt_family_layout {
    const char *body;
    const char *head;
    const char *const *others; /* NULL-terminated */
} lt_family_layout;

#define LT_WRAP_LAYOUTS 2

/* A multimodal class that holds the family's language model (Gemma 3's
 * Gemma3ForConditionalGeneration): config.json gives the language model's
 * settings under text_key; its tensors are in one of the layouts. Read by
 * lt_config.c (the config), lt_model.c (lt_model_open_weights), the HF and
 * PEFT export (train/lt_export.c). */
typedef struct lt_family_wrapper {
    const char *model_type; /* config.json model_type ("gemma3") */
    const char *class_name; /* architectures[0] */
    const char *text_key;   /* the language model's config ("text_config") */
    /* top-level keys beside text_key that leave the language model's math
     * alone (the other towers' settings, image token ids); NULL-terminated */
    const char *const *keys;
    /* the text config class's values for size keys a saved text_key may
     * leave out (transformers writes sub-configs as a diff to their class
     * defaults): JSON object text */
    const char *text_defaults;
    /* layouts[0]: the module paths of transformers 5's class, which PEFT's
     * names follow ("base_model.model." + the module's name) */
    lt_family_layout layouts[LT_WRAP_LAYOUTS];
} lt_family_wrapper;

typedef struct lt_family {
    lt_arch arch;
    const char *model_type; /* config.json model_type */
    const char *class_name; /* architectures[0] */
    /* config keys this family reads beyond the ones every family reads
     * (lt_config.c COMMON_KEYS); NULL-terminated. Others are refused. */
    const char *const *keys;
    /* defaults for absent keys (the transformers config class defaults) */
    int kv_heads_default;     /* absent num_key_value_heads; 0 = num_attention_heads */
    int head_dim_default;     /* absent head_dim; 0 = hidden_size / num_attention_heads */
    int head_dim_zero_derive; /* head_dim 0 means "derive" (MistralConfig) */
    int max_pos_default;      /* absent max_position_embeddings */
    int window_default;       /* absent sliding_window (LT_WINDOW_ALL) */
    double rms_eps_default;   /* absent rms_norm_eps; 0 = 1e-6 */
    lt_window_rule window;
    /* feature flags */
    lt_attn_bias_rule attn_bias;
    int reads_mlp_bias; /* "mlp_bias" -> gate/up/down biases */
    lt_qk_norm qk_norm; /* RMSNorm on q and k, before RoPE */
    /* post-norm layer (olmo2): no input_layernorm; x += RMSNorm(attn(x)) with
     * post_attention_layernorm, x += RMSNorm(mlp(x)) with post_feedforward_layernorm */
    int post_norm;
    /* the tests' fixture folders (tests/fixtures/models/<name>), NULL-terminated */
    const char *const *fixtures;
    /* GGUF export (train/lt_gguf.c, docs/export.md); gguf.arch NULL = not exported */
    lt_family_gguf gguf;
    /* Gemma 2 (0 / NULL elsewhere) */
    float norm_offset;        /* RMSNorm weight offset (1: x * (1 + w)) */
    int sandwich_norm;        /* four norms per layer (lt_config.sandwich_norm) */
    int embed_scale;          /* embeddings * sqrt(hidden_size) */
    const char *act_key;      /* the key naming the MLP activation (NULL: "hidden_act") */
    const char *act_default;  /* its value when absent (NULL: "silu") */
    int softcaps;             /* reads query_pre_attn_scalar, attn_logit_softcapping, final_logit_softcapping */
    double attn_scalar_default, attn_softcap_default, final_softcap_default;
    int tie_default;          /* absent tie_word_embeddings (gemma2: true) */
    /* Gemma 3 (0 elsewhere) */
    int window_pattern;       /* LT_WINDOW_LAYERS without layer_types: layer i slides unless (i + 1) %
                                 pattern == 0 (sliding_window_pattern; 0: 2, gemma2's alternation) */
    int rope_per_type;        /* two rotary tables: rope_parameters.{full,sliding}_attention (v5) or
                                 rope_theta + rope_scaling and rope_local_base_freq (v4) */
    double rope_theta_default, rope_local_theta_default; /* absent thetas (0: 10000) */
    /* phi3: fused self_attn.qkv_proj and mlp.gate_up_proj weights (and LoRA targets) */
    int fused_proj;
    /* phi3: partial_rotary_factor (top level and inside the rope dict), rope type
     * "longrope" (legacy "su"), and a top-level original_max_position_embeddings
     * (absent -> omp_default) that LongRoPE uses over the rope dict's, as
     * transformers' standardize_rope_params does */
    int reads_rope_extras;
    int omp_default;
    /* keys accepted only at one value (or null), {key, JSON value},
     * NULL-terminated: transformers' module ignores them or they are dropout
     * (training noise luxtrain does not apply); another value would mean a
     * model or a training luxtrain does not build */
    const char *const (*fixed)[2];
    /* the multimodal class that may hold this family's language model (NULL: none) */
    const lt_family_wrapper *wrapper;
} lt_family;

/* NULL if no family has this model_type. */
const lt_family *lt_family_find(const char *model_type);
/* The family whose wrapper has this model_type (NULL: none). */
const lt_family *lt_family_find_wrapper(const char *model_type);
/* The name `name` (luxtrain's: "model.<rest>", "lm_head.weight", or PEFT's
 * "base_model.model.model.<rest>") takes in layout `lay` of wrapper `w`
 * (file names; PEFT's names follow layouts[0]): written into out, which gets
 * `name` itself when no rule applies or w is NULL. lay: a layout index, or
 * -1 for the PEFT form. Returns 0 if the name did not fit. */
/* The two renaming rules of layout `lay` (-1: layouts[0]): luxtrain's
 * prefixes canon[k] ("model.", "lm_head.") and the layout's file[k]. */
void lt_wrap_rules(const lt_family_wrapper *w, int lay, const char *canon[2], const char *file[2]);
int lt_wrap_name(const lt_family_wrapper *w, int lay, const char *name, char *out, size_t cap);
/* The reverse: luxtrain's name for a file name of layout `lay` (or PEFT's
 * name for -1). Returns 1 and writes out when a rule applies, else 0. */
int lt_wrap_unname(const lt_family_wrapper *w, int lay, const char *file, char *out, size_t cap);
const lt_family *lt_family_get(lt_arch a);
size_t lt_family_count(void);
const lt_family *lt_family_at(size_t i);
/* Every family's fixture folder names, in family order, into out[0..cap);
 * returns the count (the tests' model list). */
size_t lt_family_fixtures(const char **out, size_t cap);
/* "llama, mistral, ..." for messages (static buffer) */
const char *lt_family_list(void);

#ifdef __cplusplus
}
#endif
#endif
