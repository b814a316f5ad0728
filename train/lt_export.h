/*
 * lt_export.h -- exporting a trained model: a Hugging Face model folder (full
 * fine-tuning) or a PEFT LoRA adapter folder, and reading a PEFT adapter back
 * (to continue training or to evaluate with --adapter).
 *
 * Hugging Face folder (lt_export_hf):
 *   config.json                 copied byte for byte from the source model
 *                               (a multimodal source, lt_config.wrap: the
 *                               language model's tensors under the names of
 *                               the source's layout, the other towers'
 *                               tensors copied through byte for byte)
 *   model.safetensors           every tensor under its original name and in
 *                               the dtype asked for (normally the source's:
 *                               F32 as is, BF16 rounded to nearest even, F16),
 *                               metadata {"format": "pt"}; above
 *                               max_shard_bytes (default 5 GB, as
 *                               save_pretrained) model-0000i-of-0000n.safetensors
 *                               + model.safetensors.index.json instead
 *   tokenizer.json, tokenizer_config.json, special_tokens_map.json,
 *   generation_config.json      copied from the source where present
 * PEFT adapter folder (lt_peft_export), as PEFT 0.21.2's save_pretrained:
 *   adapter_config.json         the 41 keys PEFT 0.21.2 writes, byte for byte
 *                               as its json.dumps(sort_keys=True, indent=2)
 *                               (ASCII, no final newline): peft_type LORA,
 *                               peft_version, task_type CAUSAL_LM, r,
 *                               lora_alpha, lora_dropout, target_modules,
 *                               use_rslora, base_model_name_or_path, bias
 *                               "none", ... (the rest at PEFT's defaults)
 *   adapter_model.safetensors   F32 base_model.model.model.layers.N.<block>.
 *                               <module>.lora_A.weight (r, in) / lora_B.weight
 *                               (out, r), metadata {"format": "pt"}
 * Both are written into "<out_dir>.tmp-<host>-<pid>" and renamed into place (an
 * existing out_dir is replaced only once the new folder is complete).
 * Non-finite values are refused (LT_ERR_NONFINITE naming the tensor; nothing
 * is left behind and an existing out_dir is kept).
 */
#ifndef LT_EXPORT_H
#define LT_EXPORT_H

#include "lt_base.h"
#include "lt_config.h"
#include "lt_safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Hugging Face model folder ---- */

typedef struct lt_export_tensor {
    const char *name; /* the Hugging Face name */
    int ndim;
    int64_t shape[LT_ST_MAX_DIMS];
    const float *data; /* host f32 */
    lt_dtype dtype;    /* written as: LT_F32, LT_BF16 or LT_F16 */
    const void *raw;   /* or: these bytes, in dtype, written as they are (data, fill unused) */
} lt_export_tensor;

/* max_shard_bytes 0 = 5 GB. src_model_dir must hold config.json. */
lt_status lt_export_hf(const char *out_dir, const char *src_model_dir, const lt_export_tensor *ts, size_t n,
                       size_t max_shard_bytes, lt_err *err);
/* Progress of a long export, for a caller that must show it is alive (rank
 * 0's export under several ranks: tools/lt_cmd_train.c's heartbeats):
 * progress(ctx, what, err) before each step, `what` naming it -- each tensor
 * ("tensor 3 of 30 'name'", before it is filled and written), the sync of
 * each file once its tensors are written ("syncing model.safetensors"), then
 * the tail: "writing model.safetensors.index.json", "copying config.json"
 * (and each other copied file), "renaming it into place". A failure stops
 * the export with it (nothing is left behind). NULL: no reports. */
typedef lt_status (*lt_export_progress_fn)(void *ctx, const char *what, lt_err *err);
/* The same folder (byte for byte), with the tensors' values asked for one at a
 * time as they are written: fill(ctx, i, dst, err) writes tensor i's f32
 * values into dst (ts[i].data unused). Holds one tensor (f32, and its 16-bit
 * form) in memory at a time. progress (may be NULL): as above, with pctx. */
typedef lt_status (*lt_export_fill_fn)(void *ctx, size_t i, float *dst, lt_err *err);
lt_status lt_export_hf_stream(const char *out_dir, const char *src_model_dir, const lt_export_tensor *ts, size_t n,
                              size_t max_shard_bytes, lt_export_fill_fn fill, void *ctx,
                              lt_export_progress_fn progress, void *pctx, lt_err *err);

/* ---- PEFT LoRA adapter ---- */

typedef struct lt_peft_config {
    int r;
    double alpha;
    double dropout;
    unsigned targets; /* mask of 1u << lt_lora_target */
    int rslora;
    char base_model[1024]; /* base_model_name_or_path ("" = null) */
    /* the language model inside this multimodal class (lt_config.wrap; NULL:
     * a causal LM): tensors named after its module paths in transformers 5
     * (base_model.model.model.language_model.layers.N... for Gemma 3) and
     * target_modules a regular expression over the language model's layers,
     * so the vision tower's q/k/v are not adapted */
    const struct lt_family_wrapper *wrap;
} lt_peft_config;

typedef struct lt_peft_tensor {
    int layer;
    int target;     /* lt_lora_target */
    int in, out;    /* A is (r, in), B is (out, r) */
    const float *A; /* export: borrowed; loaded adapter: owned */
    const float *B;
} lt_peft_tensor;

lt_status lt_peft_export(const char *out_dir, const lt_peft_config *cfg, const lt_peft_tensor *ts, size_t n,
                         lt_err *err);

/* Trained embeddings next to the LoRA (`train --train-embeddings`), as PEFT
 * 0.21 writes them:
 *   new: "trainable_token_indices": [ids] (tied base: lm_head follows) or
 *        {"embed_tokens": ids, "lm_head": ids} (untied), tensors
 *        base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta
 *        and base_model.model.lm_head.token_adapter.trainable_tokens_delta
 *        (n_ids, hidden) F32: the rows' values (they replace the base rows);
 *   all: "modules_to_save": ["embed_tokens", "lm_head"] (untied) or
 *        ["embed_tokens"] with "ensure_weight_tying": true (tied), tensors
 *        base_model.model.model.embed_tokens.weight / base_model.model.lm_head.weight
 *        (vocab, hidden) F32. */
enum { LT_TRAIN_EMB_NONE = 0, LT_TRAIN_EMB_NEW, LT_TRAIN_EMB_ALL };
/* `luxtrain vocab add` records the ids it added in this file of the model
 * folder: {"added_ids": [...], "base_vocab_size": N, "vocab_size": M};
 * `train --train-embeddings new` trains those rows. */
#define LT_VOCAB_RECORD "luxtrain_vocab.json"
/* the added_ids of model_dir/LT_VOCAB_RECORD (malloc'd); errors name the file */
lt_status lt_vocab_record_ids(const char *model_dir, int32_t **ids, size_t *n, lt_err *err);
typedef struct lt_peft_embed {
    int mode;           /* LT_TRAIN_EMB_* */
    int tie;            /* lm_head follows embed_tokens (tied base; "all": ensure_weight_tying) */
    int head_listed;    /* loaded: the config names lm_head */
    int64_t rows, cols; /* new: rows = n ids; all: the vocabulary rows */
    int32_t *ids;       /* new: ascending token ids (export: borrowed; loaded: owned) */
    float *embed;       /* (rows, cols) */
    float *head;        /* (rows, cols) or NULL: lm_head unchanged (or tied) */
} lt_peft_embed;

typedef struct lt_peft_adapter {
    lt_peft_config cfg;
    lt_peft_tensor *t; /* sorted by (layer, target) */
    size_t n;
    lt_peft_embed emb; /* mode 0: none */
} lt_peft_adapter;

/* lt_peft_export plus trained embeddings (emb NULL or mode 0: none), with
 * progress reports (may be NULL: lt_export_progress_fn; each tensor of
 * adapter_model.safetensors, its sync, "writing adapter_config.json",
 * "renaming it into place"). */
lt_status lt_peft_export_embed(const char *out_dir, const lt_peft_config *cfg, const lt_peft_tensor *ts, size_t n,
                               const lt_peft_embed *emb, lt_export_progress_fn progress, void *pctx, lt_err *err);
/* Write an adapter's embeddings into host f32 tables: embed (V, C) and head
 * (V, C, NULL when tied) -- what PEFT's forward and merge_and_unload use. */
lt_status lt_peft_embed_apply(const lt_peft_embed *e, float *embed, float *head, int64_t V, int64_t C, lt_err *err);

/* Read DIR/adapter_config.json (as PEFT 0.15 to 0.21 write it) and
 * DIR/adapter_model.safetensors. Refuses by name what we cannot reproduce
 * exactly (DoRA, lora_bias, bias != "none", rank/alpha patterns,
 * fan_in_fan_out, layers_to_transform, layer_replication, exclude_modules,
 * target_parameters, aLoRA, QALoRA, BD-LoRA, Arrow, KaSA, MonteCLoRA,
 * VeLoRA, LoRA-GA, an init_lora_weights that rewrites the base weights,
 * any unknown key that is set,
 * modules_to_save / trainable_token_indices other than the embeddings above,
 * target_modules given as a regex, unknown modules), and
 * checks every pair of A/B is present with shapes (r, in) / (out, r). */
lt_status lt_peft_load(const char *dir, lt_peft_adapter **out, lt_err *err);
/* DIR/adapter_config.json alone (the same checks), no tensors read. */
lt_status lt_peft_load_config(const char *dir, lt_peft_config *cfg, lt_err *err);
void lt_peft_free(lt_peft_adapter *a);
const lt_peft_tensor *lt_peft_find(const lt_peft_adapter *a, int layer, int target);
/* Check the adapter fits a model: every layer < num_layers, every target in
 * cfg.targets present in every layer, in/out equal lt_lora_target_dims;
 * embeddings: shapes and ids within the vocabulary, and tying as the model's. */
lt_status lt_peft_check(const lt_peft_adapter *a, const lt_config *model, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
