/*
 * lt_eval_adapter.h -- evaluate a model with a PEFT LoRA adapter by merging
 * it into the loaded weights: W += scale * B @ A for every adapted linear
 * layer (scale = lora_alpha / r, or / sqrt(r) with use_rslora), which is
 * what PEFT's merge_and_unload computes. Exact in fp32 (the CPU backend);
 * with BF16 weights (CUDA) the merged weight is rounded to BF16 once.
 *
 * The adapter is read and checked by lt_peft_load / lt_peft_check
 * (lt_export.h), as `luxtrain train --adapter` does: refused (naming the
 * field) are peft_type other than LORA, use_dora, lora_bias, bias other than
 * "none", modules_to_save / trainable_token_indices other than embed_tokens
 * and lm_head, rank_pattern / alpha_pattern, fan_in_fan_out,
 * layers_to_transform, target_modules as a regex, tensors that are not
 * lora_A / lora_B of q/k/v/o/gate/up/down projections, and adapters whose
 * layers or shapes do not fit the model.
 */
#ifndef LT_EVAL_ADAPTER_H
#define LT_EVAL_ADAPTER_H

#include "lt_base.h"
#include "lt_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dir: a folder with adapter_config.json and adapter_model.safetensors.
 * Trained embeddings (lt_peft_embed) replace their rows of embed_tokens /
 * lm_head, as PEFT's forward uses them. */
lt_status lt_eval_merge_adapter(lt_model *m, const char *dir, lt_err *err);

/* The model of `model_dir` for inference (eval, generate, score), with an
 * optional adapter (NULL: none) and base quantization quantize ("none" or
 * NULL, "nf4"):
 *   none: the adapter merged into the weights (lt_eval_merge_adapter);
 *   nf4:  the adapter added as LoRA layers unmerged, then the base weights
 *         quantized to NF4 (lt_model_quantize_nf4): the model a QLoRA run
 *         trains and evaluates, computed the same way, so its losses are the
 *         run's (merging into an NF4 weight would change them). Without an
 *         adapter, the NF4 base itself.
 * Anything else is refused by name. */
extern const char *const lt_eval_quantize_names[]; /* "none", "nf4", NULL: --quantize's values */
/* the --quantize row of an inference command's option table */
#define LT_EVAL_QUANTIZE_ROW(type, field)                                                                             \
    {.name = "quantize", .k = LT_OPT_CHOICE, .off = offsetof(type, field), .def = "none", .meta = "Q",                 \
     .choices = lt_eval_quantize_names,                                                                                \
     .help = "nf4: the base weights in NF4 as `train --quantize nf4` (QLoRA) has them, the adapter unmerged on top"}
lt_status lt_eval_load_model(const char *model_dir, const char *adapter, const char *quantize, lt_backend *be,
                             lt_model **out, lt_err *err);

/* Write an adapter's trained embeddings into the model's tables (backend
 * memory, in the parameter dtype; a deferred model's tables are read whole
 * first, lt_model_param_load). */
struct lt_peft_embed;
lt_status lt_model_apply_peft_embed(lt_model *m, const struct lt_peft_embed *e, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
