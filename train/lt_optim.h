/*
 * lt_optim.h -- the learning-rate schedule and the AdamW optimizer over the
 * trainable tensors (global gradient-norm clipping included), written against
 * the backend's sumsq and adamw ops.
 *
 * Learning-rate schedule. `step` counts optimizer steps already taken (0 for
 * the first update), exactly like torch.optim.lr_scheduler.LambdaLR with
 * scheduler.step() called after each optimizer.step(), and like transformers'
 * get_{constant,linear,cosine_with_min_lr}_schedule_with_warmup:
 *
 *   W = warmup_steps, N = total_steps, r = min_lr_ratio
 *   step < W:     factor = step / W                  (first update: lr 0)
 *   otherwise:    p = clamp((step - W) / max(1, N - W), 0, 1)
 *     constant:   factor = 1
 *     linear:     factor = r + (1 - r) * (1 - p)
 *     cosine:     factor = r + (1 - r) * 0.5 * (1 + cos(pi * p))
 *   lr(step) = lr * factor                            (computed in double)
 *
 * With r = 0 these are transformers' linear / cosine schedules; cosine with r
 * is get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate = r).
 *
 * One optimizer step (lt_optim_step):
 *   norm  = sqrt(sum over tensors of be->sumsq(grad))      (double)
 *   scale = clip > 0 ? min(1, clip / (norm + 1e-6)) : 1    (torch clip_grad_norm_)
 *   be->adamw(all tensors, lr(step), b1, b2, eps, step + 1, scale) with each
 *   tensor's weight decay = weight_decay if its decay flag is set, else 0.
 * A non-finite norm updates nothing and returns LT_ERR_NONFINITE naming the
 * first tensor whose gradient is not finite (the trainer then stops, or with
 * --skip-nonfinite zeroes the gradients and carries on).
 */
#ifndef LT_OPTIM_H
#define LT_OPTIM_H

#include "lt_backend.h"
#include "lt_comm.h"
#include "lt_safetensors.h"
#include "lt_tlist.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { LT_SCHED_CONSTANT = 0, LT_SCHED_LINEAR, LT_SCHED_COSINE } lt_sched_kind;

typedef struct lt_schedule {
    lt_sched_kind kind;
    double lr;            /* peak learning rate */
    int64_t warmup_steps; /* >= 0 */
    int64_t total_steps;  /* optimizer steps of the whole run, >= 1 */
    double min_lr_ratio;  /* in [0, 1]; unused by constant */
} lt_schedule;

double lt_lr_factor(const lt_schedule *s, int64_t step);
double lt_lr_at(const lt_schedule *s, int64_t step); /* s->lr * lt_lr_factor */
/* "constant" | "linear" | "cosine" */
lt_status lt_sched_kind_parse(const char *name, lt_sched_kind *out, lt_err *err);
const char *lt_sched_kind_name(lt_sched_kind k);

/* The default weight-decay rule: decay a tensor iff it is a matrix (ndim >= 2)
 * and not the token embedding (name ends in "embed_tokens.weight"), unless
 * decay_embeddings. Norm weights and biases (ndim 1) never decay. lm_head
 * and LoRA A/B are matrices and decay. */
int lt_optim_decay_default(const char *name, int ndim, int decay_embeddings);

typedef struct lt_optim_cfg {
    lt_schedule sched;
    double beta1, beta2, eps;
    double weight_decay; /* applied to tensors added with decay = 1 */
    double clip;         /* max global grad norm; 0 = no clipping */
} lt_optim_cfg;

typedef struct lt_optim lt_optim;

lt_status lt_optim_create(lt_backend *be, const lt_optim_cfg *cfg, lt_optim **out, lt_err *err);
void lt_optim_free(lt_optim *o);

/* Add a trainable tensor: param (backend memory, param_dtype) and grad
 * (backend memory, f32), both of numel = prod(shape). The optimizer keeps m
 * and v (zeroed) and, when param_dtype is not F32, f32 master weights
 * initialized from param -- allocated lazily: by lt_optim_distribute (with
 * ZeRO this rank's part only, the master from the part of param: no
 * whole-tensor buffer, device or host, ever exists), else at the first call
 * that needs them (step, get/set, load, *_to_tlist, part_*: the whole
 * tensor's, the master from param as it is then). grad may be NULL when
 * lt_optim_distribute gives the gradients (ZeRO-1/2: this rank's shard of
 * the accumulator) -- then a step before it fails. param may be NULL when
 * ZeRO-3 gives the parameter as parts later (lt_optim_set_param_part; the
 * weights of a deferred model load, lt_model_load_deferred). Names must be
 * unique (they name the state in checkpoints). ndim 1 or 2. */
lt_status lt_optim_add(lt_optim *o, const char *name, int ndim, const int64_t *shape, void *param,
                       lt_dtype param_dtype, float *grad, int decay, lt_err *err);
/* A matrix of which only `rows` (sorted, distinct) train (`train
 * --train-embeddings new`): m, v and master weights are kept for those rows
 * only. The other rows' gradient must be zero and the tensor does not decay,
 * so AdamW would leave them exactly as they are: the update of the rows is
 * bitwise the one lt_optim_add's full state gives, and checkpoints hold the
 * whole tensor's state (zeros in the other rows), as with it. The gradient
 * norm still reads the whole gradient. Under ZeRO-1/2/3 (lt_optim_distribute)
 * a rank keeps state for the rows' elements inside its part only (none when
 * its part holds none of them; a part may cut a row): each rank's step,
 * checkpoint slices and gathered values are those of the whole state. */
lt_status lt_optim_add_rows(lt_optim *o, const char *name, const int64_t shape[2], void *param, lt_dtype param_dtype,
                            float *grad, const int32_t *rows, size_t nrows, lt_err *err);
/* elements of m (= of v) the optimizer keeps on this rank (a row subset:
 * its rows' elements, under ZeRO those inside this rank's part) */
size_t lt_optim_state_numel(const lt_optim *o);
size_t lt_optim_count(const lt_optim *o);
const char *lt_optim_name(const lt_optim *o, size_t i);
int lt_optim_decays(const lt_optim *o, size_t i);
const lt_optim_cfg *lt_optim_config(const lt_optim *o);
/* Change the schedule (e.g. total_steps known only after the data is opened). */
void lt_optim_set_schedule(lt_optim *o, const lt_schedule *s);

typedef struct lt_optim_stats {
    int64_t step;      /* optimizer steps completed after this one */
    double lr;         /* learning rate used */
    double grad_norm;  /* global norm before clipping */
    double clip_scale; /* factor the gradients were multiplied by */
} lt_optim_stats;

/* ---- data parallel (lt_optim_distribute) ----
 * The tensors, in the order they were added, form one flattened vector of
 * lt_optim_numel elements. It is cut into units of lt_optim_granule(numel)
 * elements (256 or a power of two above, so that there are at most ~4096
 * units; it depends on numel only). With a communicator:
 *   - the gradient norm is the sum over units, in unit order, of be->sumsq
 *     of the unit (all of a rank's units by one be->sumsq_units, the same
 *     bits in one host synchronisation): the same bits for every world size
 *     and sharding;
 *   - zero = 0: `grad` is the whole flattened gradient (numel floats), every
 *     rank updates every tensor;
 *   - zero = 1 (ZeRO-1): rank r owns the units lt_comm_shard(units, r, world)
 *     gives it, i.e. the flat range lt_optim_flat_shard(r, world) (uneven
 *     allowed, possibly empty); `grad` holds the gradient of that range only;
 *     m, v (and master weights) are kept for that range only (a row subset:
 *     for its rows' elements inside it only); a step updates
 *     the owned parts of the tensors (weight decay per the tensor each
 *     element belongs to) and all-gathers the updated parameters. Reading
 *     whole tensors (lt_optim_get_param, *_to_tlist) gathers the parts and is
 *     then collective: every rank must call it. Loading (set_param,
 *     params_load, state_load) takes whole tensors and keeps this rank's part,
 *     so a checkpoint written at one world size loads at any other.
 * Call after the last lt_optim_add and before the first step. */
lt_status lt_optim_distribute(lt_optim *o, lt_comm *c, int zero, float *grad, lt_err *err);
size_t lt_optim_numel(const lt_optim *o);
size_t lt_optim_granule(size_t numel);
/* Rank `rank`'s flat range under ZeRO-1 (a whole number of units). */
void lt_optim_flat_shard(const lt_optim *o, int rank, int world, size_t *start, size_t *len);
/* Offset of tensor i in the flattened vector. */
size_t lt_optim_flat_offset(const lt_optim *o, size_t i);
lt_comm *lt_optim_comm(const lt_optim *o); /* NULL until distributed */
/* ZeRO-3 (after lt_optim_distribute with zero): tensor i's parameter is only
 * this rank's part (len elements of the param dtype at `part`, borrowed):
 * a step updates the part and gathers nothing; lt_optim_get_param and
 * *_to_tlist gather the parts (collective), set_param keeps the part, and
 * lt_optim_part_of reports param_off / param_len = that part. The master
 * weights (16-bit parameters) are set to the part's values here. */
lt_status lt_optim_set_param_part(lt_optim *o, size_t i, void *part, lt_err *err);
/* Bytes of optimizer state this rank holds: m, v (and f32 master weights),
 * counted when still to be allocated (lazily) too. */
size_t lt_optim_state_bytes(const lt_optim *o);
int lt_optim_zero(const lt_optim *o);

/* Global gradient norm (sqrt of the sum of be->sumsq, in double). On a
 * non-finite value returns LT_ERR_NONFINITE naming the tensor; *norm is set. */
lt_status lt_optim_grad_norm(lt_optim *o, double *norm, lt_err *err);
/* One update (see the top of this file). stats may be NULL. Does not zero
 * the gradients. Returns be->sync's status. */
lt_status lt_optim_step(lt_optim *o, lt_optim_stats *stats, lt_err *err);

int64_t lt_optim_steps_done(const lt_optim *o);
void lt_optim_set_steps_done(lt_optim *o, int64_t step); /* on resume */

/* The current f32 weights of tensor i (master weights when present), to the
 * host: n = its numel. */
lt_status lt_optim_get_param(lt_optim *o, size_t i, float *host, lt_err *err);
/* Set tensor i from host f32 (master and param, param rounded to its dtype). */
lt_status lt_optim_set_param(lt_optim *o, size_t i, const float *host, lt_err *err);

/* The trainable tensors' current f32 values (master weights when present)
 * as host tensors under their names, appended to `out` (checkpoint weights).
 * Collective under ZeRO-1: out = NULL takes part in the gathers and keeps
 * nothing (the ranks that do not write; the same for state_to_tlist). */
lt_status lt_optim_params_to_tlist(lt_optim *o, lt_tlist *out, lt_err *err);
/* Set every trainable tensor from a safetensors file written from the list
 * above (names and shapes must match; errors name the tensor). */
lt_status lt_optim_params_load(lt_optim *o, const lt_st_file *f, lt_err *err);

/* Optimizer state to host tensors "<name>.exp_avg" and "<name>.exp_avg_sq"
 * (F32, the parameter's shape), appended to `out`. */
lt_status lt_optim_state_to_tlist(lt_optim *o, lt_tlist *out, lt_err *err);
/* Load the state written above from a safetensors file: every tensor's two
 * entries must be present with the parameter's shape (errors name them). */
lt_status lt_optim_state_load(lt_optim *o, const lt_st_file *f, lt_err *err);

/* What this rank holds of tensor i: the accessor sharded checkpoints are
 * written and loaded through (lt_ckpt.h). Every sharding scheme keeps it
 * correct:
 *   [off, off + len)             the elements whose AdamW state (m, v and
 *                                master weights) lives here (ZeRO >= 1: this
 *                                rank's part, possibly empty; else all n);
 *   master, m, v                 that state (backend memory, len f32 each;
 *                                master NULL: param holds the f32 weights;
 *                                a row subset holds less: read and write it
 *                                through lt_optim_part_get / _put);
 *   [param_off, param_off + param_len)  the elements of the parameter buffer
 *                                held here (all n unless parameters are
 *                                sharded), param pointing at param_off. */
typedef struct lt_optim_part {
    const char *name;
    int ndim;
    int64_t shape[2];
    size_t n;
    size_t off, len;
    float *master, *m, *v;
    void *param;
    lt_dtype param_dtype;
    size_t param_off, param_len;
} lt_optim_part;
void lt_optim_part_of(lt_optim *o, size_t i, lt_optim_part *p); /* allocates a lazy state (see lt_optim_add) */
/* Elements [a, b) of tensor i's state to host (get) or from host (put), a
 * range inside [off, off + len): which = 0 the f32 weights (master where
 * kept, else the parameter), 1 exp_avg, 2 exp_avg_sq. A row subset
 * (lt_optim_add_rows) keeps state for its runs only: get gives zeros (m, v)
 * or the parameter's values (weights) elsewhere, put stores the runs and
 * ignores the rest. Asynchronous on the backend: sync before reusing host. */
lt_status lt_optim_part_get(lt_optim *o, size_t i, int which, size_t a, size_t b, float *host, lt_err *err);
lt_status lt_optim_part_put(lt_optim *o, size_t i, int which, size_t a, size_t b, const float *host, lt_err *err);
lt_backend *lt_optim_backend(const lt_optim *o); /* where the parts live */

#ifdef __cplusplus
}
#endif
#endif
