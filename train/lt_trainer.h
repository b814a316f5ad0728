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
 * Data parallelism (lt_trainer_set_comm, world > 1): every rank runs its own
 * micro-batches (the loader's rank split of each global batch); the target
 * and token counts are summed over the ranks before any forward, and after the
 * micro-batches the loss sums and every trainable gradient are all-reduced
 * (lt_comm all_reduce_sum, bitwise identical on every rank), so every rank
 * takes the same AdamW step. Without a communicator (or world 1) nothing is
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
/* Reduce over this communicator's ranks (borrowed; NULL = none). */
void lt_trainer_set_comm(lt_trainer *t, lt_comm *c);

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
/* Export the model's LoRA matrices as a PEFT adapter folder. */
lt_status lt_trainer_export_adapter(lt_model *m, const lt_peft_config *cfg, const char *out_dir, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
