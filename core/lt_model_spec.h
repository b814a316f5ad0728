/*
 * lt_model_spec.h -- which tensors an architecture needs: the Hugging Face
 * name and shape of every parameter a config implies, and the check of a
 * checkpoint against that list (used by lt_model_load and `luxtrain inspect`,
 * which validates a folder without loading its weights).
 *
 * Checkpoint policy: every required tensor must be present with exactly the
 * expected shape. Tensors the runtime does not use are refused (the message
 * lists them), except two that Hugging Face itself ignores on load:
 *   *.rotary_emb.inv_freq   (old checkpoints; recomputed from the config)
 *   lm_head.weight          when tie_word_embeddings is true (the head is the
 *                           embedding table; a stored copy is not used)
 */
#ifndef LT_MODEL_SPEC_H
#define LT_MODEL_SPEC_H

#include "lt_config.h"
#include "lt_safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_param_spec {
    char name[96];
    int ndim;
    int64_t shape[2];
} lt_param_spec;

/* Parameters the config implies, in load order (embedding, layers, final
 * norm, lm_head unless tied). Returns a malloc'd array in *out, count in *n. */
lt_status lt_model_param_specs(const lt_config *cfg, lt_param_spec **out, size_t *n, lt_err *err);

/* Check a checkpoint against the specs: presence, shape, dtype (F32/BF16/F16)
 * and no unused tensors (see the policy above). */
lt_status lt_model_check_tensors(const lt_st_model *stm, const lt_param_spec *specs, size_t n, int tied,
                                 lt_err *err);

/* Whether `--quantize nf4` (QLoRA) quantizes projection t (lt_lora_target)
 * of every layer of a model of this configuration: all its linear layers
 * (a fused model's qkv_proj / gate_up_proj whole), as bitsandbytes'
 * Linear4bit replaces every nn.Linear but lm_head. */
int lt_model_nf4_quantizes(const lt_config *cfg, int t);

#ifdef __cplusplus
}
#endif
#endif
