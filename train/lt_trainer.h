/*
 * lt_trainer.h -- one optimizer step of training, over the trainable
 * parameters of a model (every parameter for full fine-tuning, the LoRA A/B
 * matrices after lt_model_add_lora), and the LoRA / adapter setup helpers the
 * commands share (train, generate, merge, tests).
 *
 * One step (lt_trainer_step) over the micro-batches of the global batch:
 *   n_tgt = target tokens of ALL micro-batches (and, data-parallel, all ranks)
 *           -- counted before any forward, it is the loss normaliser;
 *   grads = 0; for each micro-batch: forward + backward accumulating the
 *           gradient of loss_sum / n_tgt (lt_model_step, loss_norm = n_tgt);
 *   loss  = sum of the micro-batches' loss sums / n_tgt (the mean
 *           cross-entropy over the global batch's target tokens);
 *   AdamW (lt_optim_step): grad_norm = norm of that loss's gradient over the
 *           trainable parameters, before clipping.
 * So k micro-batches of B sequences give the update of one batch of k*B
 * sequences (up to float summation order).
 *
 * Data parallelism (lt_trainer_distribute): every rank runs its own
 * micro-batches; the target and token counts are summed over the ranks
 * (exact, i64) before any forward, so every micro-batch on every rank uses
 * grad_scale = 1 / (global target count). Round j of a step is this rank's
 * j-th micro-batch, global micro-batch index g = j * world + rank (the loader
 * gives rank r sequences [r*B, (r+1)*B) of each global batch, so g numbers
 * the sequences of the step in order). Gradient reduction dtype:
 *   f32 (exact, the default): each micro-batch's gradient is computed into
 *     the zeroed model gradient x; as the backward makes a group's gradients
 *     final (lt_model_set_grad_hook: the head, layer L-1 .. 0, the
 *     embedding) the trainer reduces that group's range at once:
 *     acc := fold(acc, x_0, ..., x_{W-1}) (lt_comm all_reduce_sum_ordered,
 *     or reduce_scatter_sum_ordered into this rank's shard under ZeRO-1).
 *     acc then adds the micro-batches' gradients in the order of g, exactly
 *     as one rank would; the loss sums are folded the same way (f64). So the
 *     losses, gradient norms (lt_optim.h: per-unit sums, world-independent)
 *     and weights of W ranks x K rounds equal one rank x W*K micro-batches
 *     bitwise, with or without ZeRO-1 (same backend, same thread count).
 *   bf16: the micro-batches accumulate into x locally; during the last one's
 *     backward each group is rounded to bf16 and summed over the ranks in
 *     bf16 (all_reduce_sum, or reduce_scatter_sum under ZeRO-1) -- half the
 *     traffic, once per step, not equal to one rank in the last bits.
 * The reductions block inside the hook (lt_comm calls return when the result
 * is ready), between one layer's backward and the next -- except ZeRO-2/3 on
 * MPI and NCCL (below: started non-blocking, completed in order; on NCCL
 * with the backend's stream given to set_stream the start and the wait are
 * events on the compute stream, see docs/distributed.md). A micro-batch that is all padding (an
 * epoch's uneven tail on the higher ranks) is not computed: its gradient is
 * 0 and the trainer launches the same reductions itself. LoRA dropout with
 * lt_trainer_set_dropout_rng: micro-batch g draws its masks from a stream
 * seeded by (one draw of the base RNG per step, g), independent of the world
 * size. Without a communicator (library use, CUDA on one GPU) the
 * micro-batches accumulate straight into the gradients and nothing is
 * reduced. A non-finite loss on one rank still takes part in every
 * collective, so all ranks see it and stop (or skip) together.
 *
 * Non-finite loss or gradient norm: LT_ERR_NONFINITE with a message naming
 * the step (and the tensor); with skip_nonfinite the gradients are zeroed,
 * nothing is updated, stats->skipped = 1 and LT_OK is returned.
 */
#ifndef LT_TRAINER_H
#define LT_TRAINER_H

#include "lt_base.h"
#include "lt_comm.h"
#include "lt_export.h"
#include "lt_model.h"
#include "lt_optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_trainer lt_trainer;

/* Allocates the gradients of the model's trainable parameters only and
 * registers them with a new optimizer (weight decay by
 * lt_optim_decay_default). */
lt_status lt_trainer_create(lt_model *m, const lt_optim_cfg *cfg, int decay_embeddings, int skip_nonfinite,
                            lt_trainer **out, lt_err *err);
void lt_trainer_free(lt_trainer *t);
lt_optim *lt_trainer_optim(lt_trainer *t);
/* Train data-parallel over this communicator (borrowed; NULL = none; world
 * 1 is fine and makes the calls a W-rank run makes): zero = 1 shards the
 * optimizer state (ZeRO-1, lt_optim_distribute), 2 also the gradients (below); reduce_dtype LT_F32 (exact)
 * or LT_BF16 (see above). Installs the model's gradient hook. Once, before
 * the first step. */
lt_status lt_trainer_distribute(lt_trainer *t, lt_comm *c, int zero, lt_dtype reduce_dtype, lt_err *err);
/* zero = 2 (ZeRO-2): as 1, and the full-size gradient is gone too
 * (lt_model_pool_grads; call it before lt_trainer_create so the flat buffer
 * is never allocated, else lt_trainer_distribute frees it): the model asks
 * the trainer for each gradient group's buffer (lt_model_set_grad_provider)
 * from a pool of the head group's, the embedding group's and two layer
 * groups' sizes; each micro-batch's group is reduce-scattered from it into
 * this rank's shard of the accumulator (the same ordered fold as ZeRO-1, so
 * the same bits) and the buffer is reused by a later group. f32 only.
 * zero = 3 (ZeRO-3): as 2, and every parameter but the LoRA matrices is
 * kept as this rank's part only (trainable: lt_optim_part, updated in place
 * by the optimizer; frozen: lt_comm_shard of the tensor; a parameter of a
 * model opened with lt_model_load_deferred and not loaded since is read
 * from the file range of the part, lt_model_load_range, so the whole tensor
 * never exists on this rank; the optimizer's master weights are set from
 * the part), gathered per group
 * into five buffers when the model asks (lt_model_shard_weights: this rank's
 * part put in place with be->copy, then an all-gather), with the
 * model's prefetch hints started as non-blocking all-gathers where the
 * communicator has them (lt_trainer_gathers counts them). Trained
 * embeddings (all or a row subset) are sharded trainable tensors; the
 * adapter export needs lt_trainer_gather_tables first. NF4 weights (QLoRA,
 * lt_model_quantize_nf4) are sharded in whole blocks of 64
 * (lt_nf4_part_of: rank r owns lt_comm_shard(nblocks)) and gathered as
 * three byte ranges into the model's NF4 slot (lt_model_nf4_slot); a
 * deferred model's weights are quantized here, each rank its blocks from
 * its file range with every block's absmax gathered first
 * (lt_nf4_quantize_part), so the gathered bytes are one process's.
 */
/* HYBRID_SHARD (--shard-group N; before lt_trainer_distribute, with zero
 * 1 or 2 and f32 reduction): the state is sharded inside groups of N
 * consecutive ranks and replicated across the groups (two sub-communicators,
 * lt_comm split: the group, and the ranks with the same place in every
 * group). A group's reduction: the groups take turns, each folding its
 * ranks' values into the running shard (a reduce-scatter inside the group)
 * and broadcasting it to the other groups; since the groups are consecutive
 * ranks this is fold(acc, x_0, ..., x_{W-1}) in world rank order -- the same
 * bits as one rank. ZeRO-1/2/3 on MPI with the overlap on: the same fold as
 * a non-blocking chain per range (reduce_scatter_sum_ordered_chain_start,
 * lt_comm.h), polled at the hooks, the pool's hand-out and (ZeRO-1) before
 * the flat gradient is zeroed, pipelined across the layer groups
 * (docs/distributed.md, "--shard-group"). The optimizer works on the group (lt_optim_comm is the
 * group's communicator; ranks with the same place in different groups hold
 * the same parts). The world size must be a multiple of N (refused by
 * name). 0 or the world size: plain sharding over all ranks. */
void lt_trainer_set_shard_group(lt_trainer *t, int n);
/* What this rank holds, in bytes, from the buffers themselves: the model's
 * parameters (in their dtypes; ZeRO-3: its parts, and the gathered groups'
 * buffers apart), the backward's gradient buffers (the flat
 * gradient, or ZeRO-2's pool), the step accumulator (whole, or this rank's
 * shard) and the optimizer state (lt_optim_state_bytes). */
typedef struct lt_trainer_mem {
    size_t params;          /* whole parameters (QLoRA: the NF4 buffers' bytes), and ZeRO-3's parts of the sharded ones */
    size_t params_gathered; /* ZeRO-3: the buffers the groups are gathered into */
    size_t grad_buffers, grad_acc, optim;
} lt_trainer_mem;
void lt_trainer_memory(const lt_trainer *t, lt_trainer_mem *out);
/* ZeRO-3: how many group gathers were started ahead of use (the model's
 * prefetch hints, non-blocking on MPI and NCCL) and how many ran when the group was
 * acquired (blocking; also where the communicator has no non-blocking
 * gather). A group still gathered since the last optimizer step counts in
 * neither. */
void lt_trainer_gathers(const lt_trainer *t, int64_t *prefetched, int64_t *at_use);
/* ZeRO-1/2/3 over MPI or NCCL (overlap on, f32; hybrid: where the
 * communicator has chains): the gradient reductions were started
 * non-blocking in the hook (reduce_scatter_sum_ordered_start, or a hybrid
 * chain: completed once the last group's result is in) and completed,
 * oldest first, when their buffer is needed again (ZeRO-2/3: the pool
 * buffer handed out again; ZeRO-1: the flat gradient zeroed for the next
 * micro-batch) or before the optimizer step -- so a layer's reduction runs
 * while the next layers do their backward. How many so far. */
int64_t lt_trainer_async_reductions(const lt_trainer *t);
/* Communication/compute overlap (before lt_trainer_distribute): on (the
 * default) = ZeRO-1/2/3's reductions started non-blocking in the hook and
 * ZeRO-3's prefetched gathers, as above; off = every reduction completed in
 * the hook and every gather at use (blocking), the same bits. Unset, the
 * environment decides: LT_OVERLAP=0 turns it off, 1 or unset on, anything
 * else is refused by lt_trainer_distribute. lt_trainer_overlap: the setting
 * in force (after lt_trainer_distribute). */
void lt_trainer_set_overlap(lt_trainer *t, int on);
int lt_trainer_overlap(const lt_trainer *t);
/* Base RNG of the per-micro-batch LoRA dropout streams (borrowed; advanced
 * by one draw per step; only used with a communicator). */
void lt_trainer_set_dropout_rng(lt_trainer *t, lt_rng *base);
/* NEFTune noise alpha (0: off) on the input embeddings of every training
 * micro-batch (lt_model_set_neftune): micro-batch g (global index, as for
 * the dropout) of step s draws from a stream keyed by (seed, s, g). */
void lt_trainer_set_neftune(lt_trainer *t, double alpha, uint64_t seed);

typedef struct lt_train_stats {
    int64_t step;          /* optimizer steps done after this one */
    double loss;           /* mean cross-entropy over the step's target tokens */
    double grad_norm;      /* before clipping */
    double lr;             /* learning rate used */
    int64_t tokens;        /* non-padding tokens of the step */
    int64_t target_tokens; /* target tokens of the step (the normaliser) */
    int skipped;           /* 1: non-finite (skip_nonfinite) or no targets: no update */
} lt_train_stats;

/* One optimizer step over n_micro micro-batches (each planned B x T). */
lt_status lt_trainer_step(lt_trainer *t, const lt_batch *micro, int n_micro, lt_train_stats *stats, lt_err *err);

/* ---- LoRA helpers ---- */

/* Which parameters are LoRA matrices (PEFT names, f32 on every backend). */
int lt_trainer_is_lora_param(const char *name);
/* The element type of a parameter's data (F32 for LoRA, else be->param_dtype). */
lt_dtype lt_trainer_param_dtype(const lt_model *m, const lt_param *p);

/* Add LoRA (lt_model_add_lora) with A initialised as PEFT (lt_lora_init_A
 * from rng, layer by layer, targets in lt_lora_target order) and B = 0. */
lt_status lt_trainer_add_lora(lt_model *m, const lt_peft_config *cfg, lt_rng *rng, lt_err *err);
/* Add LoRA from a PEFT adapter folder (its config: r, alpha, targets, rslora)
 * and load its A/B values; *cfg receives the adapter's configuration. */
lt_status lt_trainer_load_adapter(lt_model *m, const char *dir, lt_peft_config *cfg, lt_err *err);
/* --train-embeddings: mode "new" (the rows model_dir/LT_VOCAB_RECORD lists)
 * or "all"; after the LoRA is added (lt_model_train_embeddings). */
lt_status lt_trainer_train_embeddings(lt_model *m, const char *model_dir, const char *mode, lt_err *err);
/* Export the model's LoRA matrices and trained embeddings (read from the
 * parameters' data) as a PEFT adapter folder. Under ZeRO-3 the embedding and
 * head are sharded and their data is a gathered buffer that may predate the
 * last optimizer step: call lt_trainer_gather_tables on every rank first.
 * progress (may be NULL, lt_export_progress_fn): a report before each
 * tensor is read from the model and each step of writing the folder. */
lt_status lt_trainer_export_adapter(lt_model *m, const lt_peft_config *cfg, const char *out_dir,
                                    lt_export_progress_fn progress, void *pctx, lt_err *err);
/* ZeRO-3: all-gather the embedding and head groups now when a trainable
 * tensor is in them (--train-embeddings, an --adapter's trained embeddings),
 * so that their data holds the values after the last optimizer step, as one
 * process's does (the next forward then finds them gathered). Collective:
 * every rank calls it. Nothing otherwise. */
lt_status lt_trainer_gather_tables(lt_trainer *t, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
