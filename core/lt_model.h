/*
 * lt_model.h -- the transformer runtime: a decoder-only model (llama,
 * mistral, qwen2, qwen3) loaded from a Hugging Face folder onto a backend,
 * with forward, loss and backward written once against the op table.
 *
 * Parameter names are the Hugging Face names ("model.layers.0.self_attn.q_proj.weight").
 * Activation memory is planned once per (B, T) in lt_model_plan; the step
 * itself allocates nothing.
 */
#ifndef LT_MODEL_H
#define LT_MODEL_H

#include "lt_backend.h"
#include "lt_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A packed batch on the host. N = B*T. */
typedef struct lt_batch {
    int B, T;
    const int32_t *tokens;    /* (N) input ids, each < vocab_size */
    const int32_t *targets;   /* (N) id to predict at this position, or -1 */
    const int32_t *pos;       /* (N) position inside the token's document */
    const int32_t *doc_start; /* (N) see lt_backend.h */
} lt_batch;

/* Build pos/doc_start/targets for one sequence of T tokens from document
 * lengths (sum <= T; the rest is padding, each pad its own document), and a
 * per-token loss mask (1 = token is a target, predicted from the tokens
 * before it in its document; mask of a document's first token is ignored).
 * targets[t] = tokens[t+1] if t+1 is in the same document and mask[t+1]. */
lt_status lt_batch_fill_sequence(int T, const int32_t *tokens, const uint8_t *mask, const int *doc_lens,
                                 int n_docs, int32_t *targets, int32_t *pos, int32_t *doc_start, lt_err *err);

typedef struct lt_param {
    char name[96];
    int ndim;
    int64_t shape[2];
    size_t numel;
    void *data;  /* backend memory, be->param_dtype */
    float *grad; /* backend memory, f32, NULL if frozen / not allocated */
    int trainable;
    lt_dtype dtype; /* element type of data: be->param_dtype, F32 for LoRA A/B */
} lt_param;

typedef struct lt_model lt_model;

lt_status lt_model_load(const char *dir, lt_backend *be, lt_model **out, lt_err *err);
/* ---- deferred loading (ZeRO-3 ranks: each rank reads only its part) ----
 * lt_model_load_deferred does what lt_model_load does -- config.json, every
 * parameter registered (name, shape, dtype, gradient group), the
 * checkpoint's tensors checked against the config, the rotary tables -- but
 * reads and allocates no weight: every p->data is NULL and the safetensors
 * file(s) stay mapped, none of their pages resident. Then:
 *   lt_model_load_range(m, i, off, len, dst): elements [off, off + len) of
 *     parameter i into dst (backend memory, len elements of p->dtype) exactly
 *     as lt_model_load would hold them (the file's values to f32, rounded to
 *     the param dtype by be->upload_f32), through a host staging buffer of
 *     at most 4 Mi floats; the pages read are dropped again (lt_st_read_f32),
 *     and then all of the tensor's (other ranks' reads of the neighbouring
 *     parts would leave them resident here);
 *   lt_model_param_load(m, p): p->data := the whole parameter, read now (a
 *     setup step that needs a whole tensor before ZeRO-3 takes the parts,
 *     e.g. an adapter's trained embeddings); nothing when p->data is set.
 * lt_model_shard_weights closes the files once every parameter is loaded or
 * the provider's; lt_model_free closes them in any case. A step or decode
 * with a parameter neither loaded nor sharded is refused (LT_ERR_INVALID,
 * naming it); NF4 quantization quantizes the loaded projections and leaves
 * the others to ZeRO-3 (lt_model_nf4_slot). Everything else (LoRA, plans,
 * gradients) works on a deferred model as on a loaded one. */
lt_status lt_model_load_deferred(const char *dir, lt_backend *be, lt_model **out, lt_err *err);
int lt_model_weights_deferred(const lt_model *m); /* the files are still open */
lt_status lt_model_load_range(lt_model *m, size_t i, size_t off, size_t len, void *dst, lt_err *err);
/* A model with random weights and no files (benchmarks): the parameters of
 * `cfg` built directly on the backend (be->param_dtype), norm weights 1,
 * every other tensor (matrices, biases) N(0, 0.02^2) drawn from a counter
 * hash of (seed, tensor, index) -- the same values for any thread count. */
lt_status lt_model_create(const lt_config *cfg, lt_backend *be, uint64_t seed, lt_model **out, lt_err *err);
void lt_model_free(lt_model *m);
const lt_config *lt_model_config(const lt_model *m);
lt_backend *lt_model_backend(const lt_model *m);
size_t lt_model_num_params(const lt_model *m);
lt_param *lt_model_param(lt_model *m, size_t i);
lt_param *lt_model_find_param(lt_model *m, const char *name);
lt_status lt_model_param_load(lt_model *m, lt_param *p, lt_err *err); /* deferred loading, above */
size_t lt_model_num_elements(const lt_model *m); /* total parameter count */

/* Allocate the gradients of the trainable parameters (zeroed): ONE buffer
 * (lt_model_grads_flat) holding them in parameter order, p->grad pointing
 * into it. A no-op when already allocated. */
lt_status lt_model_alloc_grads(lt_model *m, lt_err *err);
void lt_model_zero_grads(lt_model *m);
/* The gradient buffer (backend memory, f32) and its length in floats. */
float *lt_model_grads_flat(lt_model *m, size_t *n);

/* ---- per-layer gradient hook (data-parallel reductions overlapping the backward) ----
 * During a backward step the model calls hook(ctx, group) as soon as the
 * gradients of a group of parameters are final for this micro-batch, in
 * this order: LT_GRAD_GROUP_HEAD (final norm and an untied lm_head), layer
 * L-1, ..., layer 0 (every parameter of that layer, base and LoRA), then
 * LT_GRAD_GROUP_EMBED (the token embedding; with tied embeddings also the
 * head). lt_model_grad_group tells which group parameter i belongs to;
 * lt_model_grad_group_at(m, k), k = 0 .. lt_model_num_grad_groups(m)-1,
 * lists the groups in the order they are called. The hook runs on the host
 * between ops (on CUDA the ops before it are queued, not finished). */
#define LT_GRAD_GROUP_EMBED (-1)
#define LT_GRAD_GROUP_HEAD (-2)
typedef void (*lt_grad_hook)(void *ctx, int group);
void lt_model_set_grad_hook(lt_model *m, lt_grad_hook fn, void *ctx);
int lt_model_grad_group(const lt_model *m, size_t param_index);
int lt_model_num_grad_groups(const lt_model *m);
int lt_model_grad_group_at(const lt_model *m, int k);

/* ---- pooled gradients (ZeRO-2 / ZeRO-3: no full-size gradient buffer) ----
 * lt_model_pool_grads switches the model to gradients handed out group by
 * group (frees the flat buffer; lt_model_grads_flat is then NULL and every
 * p->grad is NULL outside a backward; lt_model_zero_grads does nothing). In
 * a backward step the model asks provider(ctx, group, n) for a ZEROED f32
 * buffer (backend memory) of n = lt_model_group_grad_numel(group) floats
 * before it writes the group's first gradient: the group's trainable
 * gradients in parameter order. The buffer holds the group's final
 * gradients when the hook is called for that group; after the hook returns
 * the model no longer touches it (the p->grad of the group are NULL again),
 * so the provider may hand it out again. When a group is asked for:
 * LT_GRAD_GROUP_HEAD before the forward's head chunks (they write the
 * head's gradient), LT_GRAD_GROUP_EMBED then too when the head is tied,
 * else just before the embedding's backward; layer l at the start of its
 * backward. Groups without trainable parameters are never asked for (their
 * hook is still called). A provider that returns NULL fails the step. Once,
 * before the first backward; the provider may be set (or replaced) later. */
typedef float *(*lt_grad_provider)(void *ctx, int group, size_t n);
lt_status lt_model_pool_grads(lt_model *m, lt_err *err);
void lt_model_set_grad_provider(lt_model *m, lt_grad_provider fn, void *ctx);
int lt_model_grads_pooled(const lt_model *m);
/* trainable elements of a gradient group (the provider's n) */
size_t lt_model_group_grad_numel(const lt_model *m, int group);

/* ---- sharded weights (ZeRO-3) ----
 * lt_model_shard_weights hands the storage of the parameters marked in
 * `sharded` (n_params flags; NULL = every one) to the caller: the model
 * frees their data (the caller has copied what it keeps first; a deferred
 * load's parameters never loaded have none: the caller read its parts with
 * lt_model_load_range, and the files are closed here) and from
 * then on calls fn(ctx, group, 1) before it reads the weights of a group
 * (lt_model_grad_group's groups; only the marked parameters are the
 * caller's, the others keep their own data) -- fn points those p->data at
 * whole values -- and fn(ctx, group, 0) when it no longer needs them until
 * the next acquire (the caller may then reuse the memory). A step's order,
 * the same on every rank (the caller's gathers are collective):
 *   forward:  EMBED; layer 0; then for l = 0 .. L-1: acquire l+1 (or HEAD
 *             after the last layer: the fused norm at the end of layer l
 *             reads the next layer's ln1 / the final norm), layer l's
 *             forward, release l; the head chunks (HEAD; EMBED too when
 *             tied, held from the start); forward-only steps then release
 *             HEAD (and a tied EMBED);
 *   backward: the final norm (HEAD, then released with a tied EMBED); layer
 *             L-1 .. 0: acquire l, its backward (and recompute), release l.
 * Prefetch hints: fn(ctx, group, 2) says the group will be acquired soon
 * (the provider may start gathering it; nothing is read yet): in the
 * forward layer l+2 while layer l runs, in the backward layer l-1 while
 * layer l runs.
 * A provider failure fails the step. lt_model_decode and
 * lt_model_get_logits refuse a sharded model; lt_model_free leaves the
 * marked data to the caller. */
typedef lt_status (*lt_weight_provider)(void *ctx, int group, int acquire);
lt_status lt_model_shard_weights(lt_model *m, const unsigned char *sharded, lt_weight_provider fn, void *ctx,
                                 lt_err *err);
int lt_model_weights_sharded(const lt_model *m);

/* Activation recomputation: on = keep only each layer's input during the
 * forward and recompute the layer's other activations during the backward,
 * one layer at a time (one layer's activations of scratch instead of L).
 * Gradients are bitwise the same as without (the same ops on the same
 * inputs; LoRA dropout masks are replayed). Frees the plan when it changes
 * (call lt_model_plan again). */
void lt_model_set_recompute(lt_model *m, int on);

/* Plan activation memory for batches of B x T (frees a previous plan). */
lt_status lt_model_plan(lt_model *m, int B, int T, lt_err *err);

/* ---- logits in chunks of rows ----
 * The lm_head and the cross-entropy run over chunks of R rows of the final
 * norm output: per chunk, logits (R, V) = hf @ Whead^T, the loss and (in a
 * backward step) the fused dlogits in place, then at once its backward:
 * dhf rows = dlogits @ Whead, Whead.grad += dlogits^T @ hf rows. Only one
 * (R, V) buffer exists, never the whole batch's (N, V) logits (128k-262k
 * vocabularies). R = the rows set here, else $LT_LOGITS_CHUNK_ROWS, else
 * the most rows whose logits fit in LT_LOGITS_CHUNK_BYTES (256 MiB) of
 * act_dtype (>= 1), capped at N.
 * Results: each row's logits, loss and dhf come from the same per-row math
 * as one chunk; only the head's weight gradient (and, tied, the embedding's)
 * is summed over the rows chunk by chunk, a different float summation order
 * (a few ulp; see tests/test_model_chunked.c). lt_model_get_logits after a
 * forward-only step recomputes the head products chunk by chunk into the
 * caller's (N, V) buffer. */
#define LT_LOGITS_CHUNK_BYTES ((size_t)256 << 20)
/* rows = 0: the default above. Frees the plan when it changes (plan again). */
void lt_model_set_logits_chunk(lt_model *m, int rows);
/* R of the current plan (0 without a plan). */
int lt_model_logits_chunk(const lt_model *m);
/* R for a vocabulary, act element size and N rows (rows: an explicit setting
 * or 0) -- what lt_model_plan reserves; used by `train --dry-run` too. */
int lt_model_logits_chunk_for(int vocab_size, size_t act_size, size_t N, int rows);

typedef struct lt_step_result {
    double loss_sum;   /* sum over target tokens of -log p */
    int64_t n_targets; /* number of target tokens in this batch */
} lt_step_result;

/* Forward (and backward when `backward`): validates the batch (token ids <
 * vocab, shapes match the plan, doc_start/pos consistent), computes the
 * per-token cross-entropy and, with backward, accumulates into the grads the
 * gradient of (loss_sum / loss_norm). loss_norm = number of target tokens of
 * the whole global batch (all micro-batches, all ranks). */
lt_status lt_model_step(lt_model *m, const lt_batch *b, int backward, double loss_norm, lt_step_result *res,
                        lt_err *err);

/* After a step: copy logits (N, V) and per-token losses (N) to the host.
 * Logits: after a forward-only step only (recomputed from the saved final
 * norm output when the plan's chunk is smaller than N). */
lt_status lt_model_get_logits(lt_model *m, float *host, lt_err *err);
lt_status lt_model_get_token_losses(lt_model *m, float *host, lt_err *err);

/* ---- LoRA ----
 * An adapter on projection W (out, in) of every layer: y = x W^T (+ b) +
 * scale * (drop(x) A^T) B^T, A (r, in) and B (out, r) f32 parameters named as
 * PEFT names them (lt_lora_peft_name). targets: bit t = 1 adapts target t
 * (lt_lora_target: order, names and shapes in core/lt_lora_target.h). */
typedef struct lt_lora_spec {
    int r;
    float scale;      /* alpha / r, or alpha / sqrt(r) (rsLoRA) */
    float dropout;    /* in [0, 1): on the adapter's input, in backward (training) steps only */
    unsigned targets; /* bit mask, see above */
} lt_lora_spec;

/* Freeze every base parameter (trainable = 0, gradients freed) and add the
 * A/B parameters (trainable, zero-filled: the caller sets A). Frees a plan
 * and a KV cache (plan / lt_model_kv_init again). Once per model. */
lt_status lt_model_add_lora(lt_model *m, const lt_lora_spec *spec, lt_err *err);

/* Backend bytes lt_model_plan(B, T) reserves for activations and scratch, for
 * a model of `cfg` with activations of `act_dtype`, --recompute on/off, LoRA
 * `lora` (NULL or r = 0: none) and logits chunk rows (0 = the default, see
 * lt_model_set_logits_chunk): the plan's own layout pass, sizes only (no
 * model, no memory). --dry-run prints it. Refuses only sizes that overflow;
 * the model's limits (max_position_embeddings, sliding_window) are
 * lt_model_plan's to refuse. */
lt_status lt_model_plan_bytes(const lt_config *cfg, lt_dtype act_dtype, int B, int T, int recompute,
                              const lt_lora_spec *lora, int chunk_rows, size_t *bytes, lt_err *err);
/* What the current plan reserved (0 if none). */
size_t lt_model_planned_bytes(const lt_model *m);
/* The RNG the LoRA dropout masks are drawn from (borrowed; NULL = no
 * dropout). Each adapted projection of a backward step draws rows*in
 * uniforms in layer order (q, k, v, o, gate, up, down), keep = u >= p, kept
 * values scaled by 1/(1-p) as torch.nn.Dropout. */
void lt_model_set_rng(lt_model *m, lt_rng *rng);
/* NEFTune (Jain et al. 2023, as TRL/transformers apply it): in steps with a
 * backward pass only, the embedding output gets uniform noise in [-m, m],
 * m = alpha / sqrt(L * d), d = hidden size and L = T, the planned row length
 * (TRL's output.size(1): the batch's padded length; luxtrain's rows are all
 * T tokens, packed). Forward-only steps (eval, score) and lt_model_decode
 * never add noise. The draws are element n*d + c of the stream `key`
 * (be->embed_noise); the caller picks a new key per micro-batch. alpha <= 0:
 * off, bitwise the same as never calling this. */
void lt_model_set_neftune(lt_model *m, float alpha, uint64_t key);

/* ---- inference with a KV cache ----
 * lt_model_kv_init allocates keys/values for max_len positions (one
 * sequence) and empties the cache; lt_model_decode appends n tokens at the
 * positions that follow the cached ones (a prompt, then one token at a
 * time) and writes the logits of all n tokens (all_logits: (n, V)) or of the
 * last one ((1, V)) to host memory. Written against the op table: the
 * attention op runs over the whole cached sequence (B = 1, T = cached + n)
 * with doc_start = t for the already cached query rows (they attend only to
 * themselves and are ignored) and 0 for the new ones. Independent of the
 * training plan. */
lt_status lt_model_kv_init(lt_model *m, int max_len, lt_err *err);
void lt_model_kv_reset(lt_model *m);
int lt_model_kv_len(const lt_model *m);
lt_status lt_model_decode(lt_model *m, const int32_t *tokens, int n, float *logits, int all_logits, lt_err *err);

/* ---- trainable embeddings next to LoRA (`train --train-embeddings`) ----
 * After lt_model_add_lora, before the gradients are allocated (it frees
 * them): embed_tokens and an untied lm_head train again. rows NULL: every
 * row (PEFT's modules_to_save); else only those rows (PEFT's
 * trainable_token_indices): the other rows' gradients are zeroed as soon as
 * the table's gradient is final (before the gradient hook, so reductions,
 * clipping and the optimizer see zeros; AdamW then leaves them exactly as
 * they are unless the table decays). lt_model_trained_rows: the rows (0: all
 * or none). */
lt_status lt_model_train_embeddings(lt_model *m, const int32_t *rows, size_t n, lt_err *err);
size_t lt_model_trained_rows(const lt_model *m, const int32_t **rows);

/* ---- vocabulary resize (`luxtrain vocab add`) ----
 * transformers 5's resize_token_embeddings(new_len, pad_to_multiple_of=N):
 * lt_vocab_resized_rows = new_len rounded up to a multiple of N (N <= 0: as
 * is); the embedding (and an untied lm_head) keep their first
 * min(old, new) rows and every added row is the mean of all old rows (f64
 * sums, rounded to f32; the caller rounds to the stored dtype).
 * transformers' mean_resizing draws the added rows from N(mean, 1e-9 *
 * covariance of the old rows) -- the mean plus noise of about 3e-5 of the
 * rows' spread, seeded by torch's global RNG; luxtrain writes the mean itself
 * (docs/vocab.md). Fewer rows than old_rows: the rows are cut, as there. */
void lt_embed_resize_rows(const float *old, int64_t old_rows, int64_t cols, float *out, int64_t new_rows);
int64_t lt_vocab_resized_rows(int64_t new_len, int pad_to_multiple_of);
/* ---- QLoRA: NF4 base weights (`--quantize nf4` of train, eval, generate, score) ----
 * Quantize the frozen weights of every linear layer of the transformer (the
 * q/k/v/o and gate/up/down projections of each layer, or a fused model's
 * qkv_proj / gate_up_proj whole, as bitsandbytes' Linear4bit replaces every
 * nn.Linear but lm_head; embeddings, norms, biases and lm_head stay) to NF4
 * with double quantization (core/lt_nf4.h: bitsandbytes' format and
 * values). Each weight's param-dtype copy is freed; adapted projections and
 * the parts of fused ones dequantize into one shared buffer before the
 * (LoRA) linear, the others use the nf4_matmul ops. With LoRA adapters
 * (lt_model_add_lora first) the adapters train (QLoRA); without, every
 * parameter is frozen: the model is for inference. Before
 * lt_model_alloc_grads (LT_ERR_INVALID after). On failure the model has lost
 * weights and must be freed. */
lt_status lt_model_quantize_nf4(lt_model *m, lt_err *err);
/* ZeRO-3 with NF4 (lt_trainer_distribute): the NF4 buffer of parameter i
 * (a quantized projection's weight; NULL for any other parameter or an
 * unquantized model). On a deferred model (lt_model_load_deferred)
 * lt_model_quantize_nf4 quantizes only the projections already loaded; the
 * others are marked quantized (frozen, no data, *slot NULL) and their bytes
 * come from the caller: each rank quantizes its blocks from its file range
 * (lt_nf4_quantize_part) and lt_model_shard_weights' provider points *slot
 * at the gathered buffer before the group runs, as it points p->data for
 * the other weights. lt_model_shard_weights frees a buffer already there. */
void **lt_model_nf4_slot(lt_model *m, size_t i);
/* (lt_model_nf4_quantizes, the projections it quantizes: lt_model_spec.h) */
int lt_model_is_quantized(const lt_model *m);
/* What --quantize nf4 keeps in backend memory for a model of `cfg` with
 * weights of param_size bytes (--dry-run; bytes as double). */
typedef struct lt_nf4_bytes {
    double nf4_params, nf4_bytes;     /* the quantized projections: elements, NF4 bytes */
    double other_params, other_bytes; /* embeddings, norms, biases, lm_head in the param dtype */
    double scratch_bytes;             /* the one dequantized projection */
} lt_nf4_bytes;
lt_status lt_model_nf4_bytes(const lt_config *cfg, size_t param_size, lt_nf4_bytes *out, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
