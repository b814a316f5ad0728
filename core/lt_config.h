/*
 * lt_config.h -- a Hugging Face config.json, parsed (cJSON) and checked into
 * the architecture description the runtime supports.
 *
 * Supported: model_type / architectures
 *   llama   (LlamaForCausalLM: Llama 2, 3, 3.1, 3.2; rope_scaling null or
 *            {"rope_type"/"type": "llama3"}; tie_word_embeddings)
 *   mistral (MistralForCausalLM; sliding_window must be null or >= the
 *            longest sequence used -- refused otherwise at plan time)
 *   qwen2   (Qwen2ForCausalLM: bias on q/k/v projections)
 *   qwen3   (Qwen3ForCausalLM: RMSNorm on q and k per head)
 *   olmo2   (Olmo2ForCausalLM: post-norm layer), gemma2 (Gemma2ForCausalLM:
 *            four (1 + w) norms, soft-caps, sliding windows on alternate
 *            layers; see docs/models.md), gemma3_text (Gemma3ForCausalLM:
 *            gemma2's layer, per-head q/k norm, two rotary tables);
 *   gemma3  (Gemma3ForConditionalGeneration: its language model, the
 *            gemma3_text settings under text_config; lt_family_wrapper,
 *            lt_config.wrap, docs/models.md)
 * llama attention_bias / mlp_bias and qwen3 attention_bias set the bias
 * flags below (the model builds what transformers builds). Anything else
 * (other architectures, hidden_act other than silu, rope types other than
 * default and llama3, partial_rotary_factor != 1, attention_dropout != 0,
 * ...) is refused with a message naming the field and value.
 *
 * Both config forms are read: transformers 4 (rope_theta + rope_scaling,
 * torch_dtype) and transformers 5 (rope_parameters, flat or one dict per
 * layer type, which must then agree; dtype; layer_types). Where a file gives
 * both forms they must agree, or it is refused. A key that is neither read
 * by the family nor known to be harmless bookkeeping (transformers_version,
 * use_cache, pad_token_id, ...) is refused by name: it may change the math.
 * Defaults for absent keys: see lt_config.c.
 */
#ifndef LT_CONFIG_H
#define LT_CONFIG_H

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { LT_ARCH_LLAMA = 0, LT_ARCH_MISTRAL, LT_ARCH_QWEN2, LT_ARCH_QWEN3, LT_ARCH_OLMO2, LT_ARCH_GEMMA2,
               LT_ARCH_GEMMA3, LT_ARCH_PHI3 } lt_arch;

/* layers whose sliding window the attention applies (layer_sliding) */
#define LT_MAX_LAYERS 256

/* the MLP's activation (lt_config.mlp_act) */
typedef enum { LT_ACT_SILU = 0, LT_ACT_GELU_TANH } lt_mlp_act;

/* lt_config.rope_scaling_type */
typedef enum { LT_ROPE_NONE = 0, LT_ROPE_LLAMA3, LT_ROPE_LINEAR, LT_ROPE_LONGROPE } lt_rope_type;

/* the most LongRoPE factors (rotary pairs) a config may give */
#define LT_ROPE_MAX_PAIRS 512

typedef struct lt_config {
    lt_arch arch;
    char model_type[32];   /* as in config.json */
    char architecture[64]; /* architectures[0] */
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_layers;
    int num_heads;
    int num_kv_heads;
    int head_dim; /* config "head_dim" or hidden_size / num_heads */
    float rms_norm_eps;
    double rope_theta;
    int max_position_embeddings;
    int tie_word_embeddings;
    int qkv_bias; /* qwen2; llama/mistral "attention_bias": true */
    int o_bias;   /* llama "attention_bias" also puts a bias on o_proj */
    int mlp_bias; /* llama "mlp_bias" */
    int qk_norm;  /* lt_qk_norm: 1 per head over head_dim (qwen3), 2 over the whole projection (olmo2) */
    int post_norm; /* olmo2: no input norm; RMSNorm on the attention and MLP outputs before the residual add */
    int sliding_window; /* 0 = none */
    /* rope scaling; rope_scaling_type (lt_rope_type) 0 = none, 1 = llama3, 2 = linear (inv_freq / rope_factor),
     * 3 = longrope (phi3) */
    int rope_scaling_type;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    int bos_token_id, eos_token_id; /* -1 if absent (first of a list) */
    lt_dtype torch_dtype;           /* F32/BF16/F16; F32 if absent */
    /* Gemma 2 (lt_family: norm_offset, sandwich_norm, embed_scale, LT_WINDOW_LAYERS) */
    float norm_offset;   /* every RMSNorm is xhat * (norm_offset + w) (gemma2: 1) */
    int sandwich_norm;   /* input_layernorm, then post_attention_layernorm on the attention output,
                            pre_feedforward_layernorm on the MLP input, post_feedforward_layernorm
                            on the MLP output */
    int embed_scale;     /* embeddings * sqrt(hidden_size), rounded to the activation dtype */
    int mlp_act;         /* lt_mlp_act: SwiGLU or GeGLU */
    float attn_scale;    /* query_pre_attn_scalar^-0.5 (0: head_dim^-0.5) */
    float attn_softcap;  /* attn_logit_softcapping (0: none) */
    float final_softcap; /* final_logit_softcapping (0: none) */
    int window_layers;   /* 1: the attention applies sliding_window on the layers marked in layer_sliding
                            (0: sliding_window is only recorded, longer sequences are refused) */
    unsigned char layer_sliding[LT_MAX_LAYERS];
    /* Gemma 3: two rotary tables. rope_tables = 2: the sliding layers rotate
     * with theta rope_local_theta and linear factor rope_local_factor (1: none);
     * the full layers with rope_theta and the scaling above. */
    int rope_tables;
    double rope_local_theta, rope_local_factor;
    /* phi3: partial rotary, fused projections, LongRoPE */
    int rotary_dim; /* dims of each head the rotary embedding turns: int(head_dim * partial_rotary_factor);
                     * 0 = head_dim */
    int fused_proj; /* self_attn.qkv_proj (q rows, then k, then v) and mlp.gate_up_proj (gate rows, then up) */
    /* LongRoPE (rope_scaling_type 3): per-pair divisors of inv_freq for batches whose largest position + 1
     * is <= rope_original_max_pos (short) or past it (long), and the cos/sin factor (transformers'
     * attention_scaling; 0 = 1) */
    int rope_n_factors;
    float rope_short_factor[LT_ROPE_MAX_PAIRS], rope_long_factor[LT_ROPE_MAX_PAIRS];
    double rope_attention_factor;
    /* the multimodal class whose language model this is (lt_family_wrapper:
     * Gemma3ForConditionalGeneration; architecture then names that class),
     * NULL for a causal LM's own config.json */
    const struct lt_family_wrapper *wrap;
} lt_config;

/* The sliding window of layer l (0: full attention). */
int lt_config_layer_window(const lt_config *cfg, int l);

/* Parse and validate DIR/config.json (or a path to a .json file). */
lt_status lt_config_load(const char *path, lt_config *cfg, lt_err *err);
/* Parse from a JSON string; `origin` names it in error messages. */
lt_status lt_config_parse(const char *json, const char *origin, lt_config *cfg, lt_err *err);
/* inv_freq[i] for i < rotary dims / 2 (lt_config_rotary_dim), with llama3
 * scaling applied (as transformers' _compute_llama3_parameters does), or
 * LongRoPE's short factors. */
void lt_config_rope_inv_freq(const lt_config *cfg, float *inv_freq);
/* The sliding layers' table when rope_tables = 2 (else the same as above). */
void lt_config_rope_inv_freq_local(const lt_config *cfg, float *inv_freq);
/* LongRoPE: the table for sequences past rope_original_max_pos (long
 * factors; = lt_config_rope_inv_freq for other rope types). */
void lt_config_rope_inv_freq_long(const lt_config *cfg, float *inv_freq);
/* the rotated dims of each head (even, <= head_dim) and the cos/sin factor */
int lt_config_rotary_dim(const lt_config *cfg);
float lt_config_rope_scale(const lt_config *cfg);
const char *lt_arch_name(lt_arch a);

#ifdef __cplusplus
}
#endif
#endif
