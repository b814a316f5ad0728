/*
 * lt_cmd_train.c -- `luxtrain train`: full fine-tuning or LoRA on token
 * shards, with evaluation, checkpoints, --resume and the final export.
 *
 *   RUN_DIR/config.json     the resolved options (lt_train_opts_write)
 *   RUN_DIR/metrics.jsonl   one object per optimizer step: step, epoch, loss,
 *                           grad_norm (before clipping), lr, tokens,
 *                           target_tokens, tokens_per_s, elapsed_s; a skipped
 *                           step (--skip-nonfinite) writes step (steps done),
 *                           "skipped": true, epoch, tokens, target_tokens,
 *                           elapsed_s and no loss; one per
 *                           evaluation: step, eval_loss, eval_target_tokens
 *   RUN_DIR/checkpoints/    lt_ckpt.h; each complete step-N/ also gets hf/ (full:
 *                           a Hugging Face folder) or adapter/ (LoRA: a PEFT
 *                           folder) with the same weights, written after it
 *   RUN_DIR/final/          Hugging Face folder (full) or PEFT adapter (LoRA)
 *   RUN_DIR/loss.svg        loss / eval loss / lr against tokens (lt_plot.h; rank 0 at the
 *                           end, with loss.png when a converter exists; a failure warns)
 *
 * Steps: one optimizer step takes up to --grad-accum micro-batches from the
 * loader; it never spans an epoch boundary (the epoch's last step may use
 * fewer). Total steps for the schedule = min(--max-steps, epochs *
 * ceil(batches_per_epoch / grad_accum)) (whichever limits are on).
 *
 * --resume: the newest complete checkpoint's weights, optimizer state, step,
 * loader position and RNG are restored, metrics.jsonl is cut back to that
 * step, and training continues; the losses that follow are bitwise those of
 * an uninterrupted run (same build, same thread count).
 *
 * Data parallel: started by an MPI launcher (mpirun -np N, srun) the run uses
 * lt_comm ("mpi" for the CPU backend, "nccl" for CUDA, one GPU per process
 * on device local_rank; --zero 3 opens the model with lt_model_load_deferred
 * and each rank reads only its part of the weights, never the whole model;
 * the memory line of each rank gives its peak resident set after setup):
 * the loader gives rank r its part of every global
 * batch (--micro-batch sequences per rank), counts, loss and gradients are
 * summed over the ranks (lt_trainer.h), and rank 0 alone writes config.json,
 * metrics and the export and runs the evaluation. Checkpoints are sharded
 * (lt_ckpt_write_sharded): every rank writes the part it holds, rank 0 the
 * index and state; on --resume every rank reads the slices it now holds, at
 * any number of ranks (RUN_DIR must be on a shared filesystem). The exports
 * of a full fine-tuning run (step-N/hf, final/) are rank 0's offline export of
 * that sharded checkpoint (export_from_checkpoint): nothing is gathered.
 *
 * Signals: SIGINT, SIGTERM and SIGUSR1 during the training loop finish the
 * optimizer step in progress, write a checkpoint of it, print the step and
 * the command line that continues the run (--resume), and exit with status
 * 75 (EX_TEMPFAIL, docs/training.md); a second signal ends the process at
 * once (the signal's default action). Every rank sums a stop flag before
 * each step (one 8-byte all-reduce), so all ranks stop after the same step
 * whichever of them got the signal.
 *
 * Test hook: LT_TRAIN_TEST_KILL_AFTER=N sends SIGKILL to the process after
 * optimizer step N is done (and its checkpoint, if one is due, written).
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/time.h>
#include <time.h>

#include "lt_ckpt.h"
#include "lt_cli.h"
#include "lt_comm.h"
#include "lt_export.h"
#include "lt_fs.h"
#include "lt_json.h"
#include "lt_loader.h"
#include "lt_lora.h"
#include "lt_model.h"
#include "lt_model_spec.h"
#include "lt_plot.h"
#include "lt_safetensors.h"
#include "lt_train_opts.h"
#include "lt_trainer.h"

typedef struct run {
    const lt_train_opts *o;
    int lora;
    lt_peft_config peft;
    lt_backend *be;
    lt_model *m;
    lt_trainer *tr;
    lt_optim *opt;
    lt_loader *L, *E; /* training / evaluation loaders */
    lt_loader_state E0;
    lt_rng rng;
    int64_t total_steps, tokens_seen, epochs_done;
    lt_schedule sched; /* this run's learning-rate schedule */
    double elapsed0, t0; /* elapsed before this process; this process's start */
    int64_t tokens_here, steps_here;
    double last_loss, last_lr;
    FILE *metrics;
    int tty;
    lt_comm *comm; /* NULL: one process */
    int rank, world;
    int stopped;  /* the signal that stopped the loop (-1: another rank's), 0: none */
    int64_t stop_step, stop_saved; /* the step it stopped after; whether a checkpoint of it exists */
    char last_ckpt[4096];           /* the newest checkpoint this run wrote or resumed from ("" none) */
    int64_t last_ckpt_step;         /* its step (-1 none) */
    /* the step's micro-batches, copied from the loader */
    int32_t *buf;
    lt_batch *micro;
} run;

static lt_status export_to(run *r, const char *out, lt_err *err);
static lt_status export_from_checkpoint(run *r, const char *ckpt, const char *out, lt_err *err);

static double elapsed(const run *r) { return r->elapsed0 + (lt_now_s() - r->t0); }

/* ------------------------------------------------------------ metrics */

/* Keep only the lines of metrics.jsonl whose "step" <= keep_step. */
static lt_status cut_metrics(const char *path, int64_t keep_step, lt_err *err) {
    if (!lt_file_exists(path)) return LT_OK;
    char *data = NULL;
    size_t len = 0;
    lt_status st = lt_read_file(path, &data, &len, err);
    if (st) return st;
    char *out = malloc(len + 1);
    if (!out) {
        free(data);
        return lt_fail(err, LT_ERR_NOMEM, "out of memory");
    }
    size_t o = 0;
    char *line = data;
    while (line < data + len) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(data + len - line);
        cJSON *j = cJSON_ParseWithLength(line, ll);
        cJSON *s = j ? cJSON_GetObjectItemCaseSensitive(j, "step") : NULL;
        if (s && cJSON_IsNumber(s) && s->valuedouble <= (double)keep_step) {
            memcpy(out + o, line, ll);
            o += ll;
            out[o++] = '\n';
        }
        cJSON_Delete(j);
        line += ll + 1;
    }
    st = lt_write_file_atomic(path, out, o, err);
    free(out);
    free(data);
    return st;
}

/* shortest decimal that reads back to the same double ("null" for NaN/Inf) */
static void fmt_num(char *buf, size_t cap, double x) {
    if (!isfinite(x)) {
        snprintf(buf, cap, "null");
        return;
    }
    for (int p = 6; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, x);
        if (strtod(buf, NULL) == x) return;
    }
}

static void write_step_metrics(run *r, const lt_train_stats *s, int64_t epoch) {
    if (!r->metrics) return;
    char loss[40], gn[40], lr[40], tps[40], el[40];
    fmt_num(loss, sizeof loss, s->loss);
    fmt_num(gn, sizeof gn, s->grad_norm);
    fmt_num(lr, sizeof lr, s->lr);
    double e = lt_now_s() - r->t0;
    fmt_num(tps, sizeof tps, e > 0 ? (double)r->tokens_here / e : 0.0);
    fmt_num(el, sizeof el, elapsed(r));
    if (s->skipped) /* no update: no loss / grad_norm keys (plots skip the line) */
        fprintf(r->metrics,
                "{\"step\": %lld, \"skipped\": true, \"epoch\": %lld, \"tokens\": %lld, \"target_tokens\": %lld, "
                "\"elapsed_s\": %s}\n",
                (long long)s->step, (long long)epoch, (long long)r->tokens_seen, (long long)s->target_tokens, el);
    else
        fprintf(r->metrics,
                "{\"step\": %lld, \"epoch\": %lld, \"loss\": %s, \"grad_norm\": %s, \"lr\": %s, \"tokens\": %lld, "
                "\"target_tokens\": %lld, \"tokens_per_s\": %s, \"elapsed_s\": %s}\n",
                (long long)s->step, (long long)epoch, loss, gn, lr, (long long)r->tokens_seen,
                (long long)s->target_tokens, tps, el);
    fflush(r->metrics);
}

static void progress(run *r, const lt_train_stats *s, int force_line) {
    if (r->rank) return;
    double e = lt_now_s() - r->t0;
    double tps = e > 0 ? (double)r->tokens_here / e : 0;
    double left = r->steps_here > 0 ? (double)(r->total_steps - s->step) * e / (double)r->steps_here : 0;
    int h = (int)(left / 3600), mi = (int)(fmod(left, 3600) / 60), se = (int)fmod(left, 60);
    if (r->tty) {
        fprintf(stderr, "\rstep %lld/%lld  loss %.4f  lr %.3g  gnorm %.3g  %.0f tok/s  left %d:%02d:%02d   ",
                (long long)s->step, (long long)r->total_steps, s->loss, s->lr, s->grad_norm, tps, h, mi, se);
        if (force_line) fputc('\n', stderr);
    } else if (force_line) {
        fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.3g  %.0f tok/s  left %d:%02d:%02d\n",
                (long long)s->step, (long long)r->total_steps, s->loss, s->lr, s->grad_norm, tps, h, mi, se);
    }
    fflush(stderr);
}

/* ------------------------------------------------------------ evaluation */

static lt_status evaluate(run *r, int64_t step, lt_err *err) {
    /* rank 0 evaluates (the others wait in the next step's reduction); ZeRO-3:
     * every rank runs it, the weight gathers are collective */
    if (r->rank && !lt_model_weights_sharded(r->m)) return LT_OK;
    lt_status st = lt_loader_set_state(r->E, &r->E0, err);
    if (st) return lt_wrap(err, st, "eval");
    double sum = 0;
    int64_t nt = 0, nb = lt_loader_batches_per_epoch(r->E);
    for (int64_t i = 0; i < nb; i++) {
        lt_loader_batch lb;
        lt_step_result res;
        if ((st = lt_loader_next(r->E, &lb, err))) return lt_wrap(err, st, "eval");
        if ((st = lt_model_step(r->m, &lb.batch, 0, 1.0, &res, err))) return lt_wrap(err, st, "eval at step %lld", (long long)step);
        sum += res.loss_sum;
        nt += res.n_targets;
        if (lb.last_in_epoch) break;
    }
    double loss = nt ? sum / (double)nt : NAN;
    if (r->rank) return LT_OK;
    if (r->tty) fputc('\n', stderr);
    fprintf(stderr, "eval at step %lld: loss %.4f over %lld target tokens\n", (long long)step, loss, (long long)nt);
    if (r->metrics) {
        char l[40];
        fmt_num(l, sizeof l, loss);
        fprintf(r->metrics, "{\"step\": %lld, \"eval_loss\": %s, \"eval_target_tokens\": %lld}\n", (long long)step, l,
                (long long)nt);
        fflush(r->metrics);
    }
    return LT_OK;
}

/* ------------------------------------------------------------ checkpoints */

/* the options hash with --grad-accum counted over all ranks (micro-batches per
 * step): the same global batch at another world size resumes */
static void run_hash(const run *r, char out[17]) {
    lt_train_opts h = *r->o;
    h.grad_accum = r->o->grad_accum * r->world;
    lt_train_opts_hash(&h, out);
}

/* state.json's "extra": the fixed fields (a JSON object's text) plus, for a
 * mix of shard sets, "mix": [{"set", "weight" | "epochs", "target_share",
 * "docs", "tokens", "target_tokens"} ...] -- what the global batches so far
 * took from each set (luxtrain inspect RUN shows it). NULL: out of memory. */
static char *mix_extra_json(const lt_loader *L, const char *fixed) {
    cJSON *x = cJSON_Parse(fixed);
    cJSON *a = x && lt_loader_num_sets(L) ? cJSON_AddArrayToObject(x, "mix") : NULL;
    for (int i = 0; a && i < lt_loader_num_sets(L); i++) {
        lt_loader_set s;
        lt_loader_get_set(L, i, &s);
        cJSON *e = cJSON_CreateObject();
        if (!e) break;
        cJSON_AddItemToArray(a, e);
        cJSON_AddStringToObject(e, "set", s.spec);
        if (s.weight > 0) cJSON_AddItemToObject(e, "weight", lt_json_exact_number(s.weight));
        else cJSON_AddItemToObject(e, "epochs", lt_json_exact_number(s.epochs));
        cJSON_AddItemToObject(e, "target_share", lt_json_exact_number(s.target_share));
        cJSON_AddNumberToObject(e, "docs", (double)s.seen_docs);
        cJSON_AddNumberToObject(e, "tokens", (double)s.seen_tokens);
        cJSON_AddNumberToObject(e, "target_tokens", (double)s.seen_targets);
    }
    char *t = x ? cJSON_PrintUnformatted(x) : NULL;
    cJSON_Delete(x);
    return t;
}

/* One process: rank 0 writes weights.safetensors / optimizer.safetensors.
 * Several ranks: a sharded checkpoint (lt_ckpt_write_sharded: every rank
 * writes its own part, nothing is gathered; rank 0 adds the index, loader
 * position and state). */
static lt_status save_checkpoint(run *r, int64_t step, lt_err *err) {
    char dir[4096];
    lt_status gs = r->lora ? lt_trainer_gather_tables(r->tr, err) : LT_OK; /* step-N/adapter (ZeRO-3) */
    if (gs) return lt_wrap(err, gs, "checkpoint at step %lld", (long long)step);
    if (r->rank) {
        lt_ckpt_state cs = {.step = step};
        lt_status st = lt_ckpt_write_sharded(r->o->out, &cs, r->opt, r->comm, (int)r->o->keep_checkpoints, dir,
                                             sizeof dir, err);
        if (!st) {
            snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", dir);
            r->last_ckpt_step = step;
        }
        /* rank 0 writes step-N/hf from the checkpoint (full) or step-N/adapter (LoRA) alone, the others wait
         * for its result */
        if (!st) st = r->lora ? export_to(r, NULL, err) : export_from_checkpoint(r, dir, NULL, err);
        return st;
    }
    lt_tlist w = {0}, os = {0};
    lt_loader_state ls;
    lt_loader_get_state(r->L, &ls);
    /* loader.bin: the position, then a mix's sets' positions and counts */
    size_t mix_len = lt_loader_mix_state_size(r->L);
    unsigned char *lbytes = malloc(sizeof ls + mix_len);
    char extra0[256], *extra = NULL;
    snprintf(extra0, sizeof extra0,
             "{\"elapsed_s\": %.17g, \"epochs_done\": %lld, \"world\": %d, \"micro_batches_per_step\": %ld, "
             "\"zero\": %ld, \"shard_group\": %ld}",
             elapsed(r), (long long)r->epochs_done, r->world, r->o->grad_accum * r->world, r->o->zero,
             r->o->shard_group > 0 && r->o->shard_group < r->world ? r->o->shard_group : 0L);
    if (!lbytes || !(extra = mix_extra_json(r->L, extra0))) {
        free(lbytes);
        return lt_fail(err, LT_ERR_NOMEM, "checkpoint: out of memory");
    }
    memcpy(lbytes, &ls, sizeof ls);
    lt_loader_get_mix_state(r->L, lbytes + sizeof ls);
    lt_ckpt_state cs = {0};
    cs.step = step;
    cs.epoch = ls.epoch;
    cs.total_steps = r->total_steps;
    cs.tokens_seen = r->tokens_seen;
    cs.lr = r->last_lr;
    cs.loss = r->last_loss;
    snprintf(cs.mode, sizeof cs.mode, "%s", r->lora ? "lora" : "full");
    run_hash(r, cs.options_hash);
    cs.rng = r->rng;
    cs.loader = lbytes;
    cs.loader_len = sizeof ls + mix_len;
    cs.extra_json = extra;
    lt_status st;
    if (r->world > 1)
        st = lt_ckpt_write_sharded(r->o->out, &cs, r->opt, r->comm, (int)r->o->keep_checkpoints, dir, sizeof dir, err);
    else if (!(st = lt_optim_params_to_tlist(r->opt, &w, err)) && !(st = lt_optim_state_to_tlist(r->opt, &os, err)))
        st = lt_ckpt_write(r->o->out, &cs, &w, &os, (int)r->o->keep_checkpoints, dir, sizeof dir, err);
    lt_tlist_free(&w);
    lt_tlist_free(&os);
    free(lbytes);
    free(extra);
    if (st) return st;
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", dir);
    r->last_ckpt_step = step;
    /* the same weights as a usable folder: step-N/hf (full) or step-N/adapter (LoRA), written
     * (temporary name + rename) once the checkpoint itself is complete; several ranks (full):
     * from the sharded checkpoint just written, by rank 0 alone */
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/%s", dir, r->lora ? "adapter" : "hf");
    st = r->world > 1 && !r->lora ? export_from_checkpoint(r, dir, sub, err) : export_to(r, sub, err);
    if (st) return lt_wrap(err, st, "checkpoint %s", dir);
    if (r->tty) fputc('\n', stderr);
    fprintf(stderr, "checkpoint: %s\n", dir);
    return LT_OK;
}

static lt_status restore_checkpoint(run *r, const char *dir, lt_err *err) {
    lt_ckpt *c = NULL;
    lt_status st = lt_ckpt_open(dir, &c, err);
    if (st) return st;
    char hash[17];
    run_hash(r, hash);
    if (strcmp(hash, c->state.options_hash)) {
        st = lt_fail(err, LT_ERR_INVALID,
                     "%s: was written with different training options (options hash %s, now %s): model, data, LoRA, "
                     "batch shape, optimizer, schedule and seed must stay the same to resume (another number of "
                     "ranks needs --grad-accum such that micro-batch x grad-accum x ranks stays the same)",
                     dir, c->state.options_hash, hash);
        goto done;
    }
    if (strcmp(c->state.mode, r->lora ? "lora" : "full")) {
        st = lt_fail(err, LT_ERR_INVALID, "%s: is a '%s' checkpoint, this run is '%s'", dir, c->state.mode,
                     r->lora ? "lora" : "full");
        goto done;
    }
    if (c->state.loader_len != sizeof(lt_loader_state) + lt_loader_mix_state_size(r->L)) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: loader.bin has %zu bytes, expected %zu%s", dir, c->state.loader_len,
                     sizeof(lt_loader_state) + lt_loader_mix_state_size(r->L),
                     lt_loader_num_sets(r->L) ? " (a mix of shard sets)" : "");
        goto done;
    }
    if (!lt_ckpt_has_optim(c)) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: has no optimizer state", dir);
        goto done;
    }
    lt_loader_state ls;
    memcpy(&ls, c->state.loader, sizeof ls);
    /* written at another world size: the position (epoch, next document) is
     * the same packed-sequence stream; only the batch grouping differs */
    int64_t saved_world = 1;
    if (ls.global_B % r->o->micro_batch == 0) saved_world = ls.global_B / r->o->micro_batch;
    ls.global_B = (int32_t)(r->o->micro_batch * r->world);
    if ((st = lt_ckpt_load_optim(c, r->opt, err)) ||
        (st = lt_loader_set_state_mix(r->L, &ls, (const unsigned char *)c->state.loader + sizeof ls,
                                      lt_loader_mix_state_size(r->L), err)))
        goto done;
    lt_optim_set_steps_done(r->opt, c->state.step);
    r->rng = c->state.rng;
    r->tokens_seen = c->state.tokens_seen;
    r->last_loss = c->state.loss;
    r->last_lr = c->state.lr;
    r->epochs_done = ls.doc_pos >= ls.n_docs ? ls.epoch + 1 : ls.epoch;
    if (c->state.extra_json) {
        cJSON *x = cJSON_Parse(c->state.extra_json);
        cJSON *e = x ? cJSON_GetObjectItemCaseSensitive(x, "elapsed_s") : NULL;
        cJSON *ed = x ? cJSON_GetObjectItemCaseSensitive(x, "epochs_done") : NULL;
        int64_t edv = 0;
        if (cJSON_IsNumber(e) && isfinite(e->valuedouble) && e->valuedouble >= 0) r->elapsed0 = e->valuedouble;
        if (ed && (!lt_json_int64(ed, &edv) || edv < 0 || edv > ls.epoch + 1)) {
            cJSON_Delete(x);
            st = lt_fail(err, LT_ERR_FORMAT, "%s: state.json: extra.epochs_done is not an integer in [0, %lld]", dir,
                         (long long)ls.epoch + 1);
            goto done;
        }
        if (ed) r->epochs_done = edv;
        cJSON_Delete(x);
    }
    if (!r->rank)
        fprintf(stderr, "train: resuming from %s (step %lld%s%s)\n", dir, (long long)c->state.step,
                saved_world != r->world ? ", written by another number of ranks: optimizer state re-sharded" : "",
                c->world ? ", sharded: each rank read the slices it holds" : "");
    if (!r->rank && c->state.total_steps > 0 && c->state.total_steps != r->total_steps) {
        /* --max-steps / --epochs changed: the schedule is stretched or cut from here on */
        lt_schedule was = r->sched;
        was.total_steps = c->state.total_steps;
        int64_t s0 = c->state.step;
        double a = lt_lr_at(&was, s0), b = lt_lr_at(&r->sched, s0);
        fprintf(stderr,
                "train: --resume: the schedule now ends at step %lld instead of %lld (%s): the learning rate of "
                "the next step (%lld) is %.6g instead of %.6g%s\n",
                (long long)r->total_steps, (long long)c->state.total_steps, lt_sched_kind_name(r->sched.kind),
                (long long)s0 + 1, b, a,
                a == b ? " (unchanged)"
                       : (b > a ? "; it decays more slowly from here" : "; it decays faster from here"));
    }
done:
    lt_ckpt_close(c);
    return st;
}

/* ------------------------------------------------------------ export */

static void fault_in_export(const run *r, long long k);

/* rank 0's export: a heartbeat to the waiting ranks before each tensor and each step of the
 * export's tail (lt_export_progress_fn -> lt_comm_watch_report) */
typedef struct {
    const run *r;
    lt_comm_watch w;
    long long reports; /* made so far (LT_FAULT_EXPORT counts them) */
} export_watch;

static lt_status export_progress(void *ctx, const char *what, lt_err *err) {
    export_watch *x = ctx;
    fault_in_export(x->r, ++x->reports);
    return lt_comm_watch_report(&x->w, what, err);
}

/* Several ranks: rank 0 alone exports (job), the others wait for its result.
 * Rank 0 reports its progress before each tensor and each step of the tail
 * (the sync of each file, the index, the copied files, the rename); the
 * others wait for each report with the collective timeout (lt_comm_watch_*):
 * a rank 0 hung in its export ends the job within LT_COMM_TIMEOUT_S, naming
 * rank 0, the folder and its last report, while a long export that goes on
 * is never cut off. Every rank returns rank 0's result: its own message on
 * rank 0, "rank 0 of W failed exporting ..." on the others (the run then
 * aborts every rank, as for any failure). */
typedef lt_status (*export_job)(run *r, const char *src, const char *out, export_watch *x, lt_err *err);
static lt_status export_watched(run *r, export_job job, const char *src, const char *out, const char *how,
                                lt_err *err) {
    if (r->rank) return lt_comm_watch_wait(r->comm, 0, err);
    char what[4400];
    snprintf(what, sizeof what, "exporting %s%s", out, how);
    export_watch x = {.r = r};
    lt_status st = lt_comm_watch_begin(&x.w, r->comm, what, err);
    if (st) return st;
    if (!(st = job(r, src, out, &x, err))) fprintf(stderr, "train: rank 0 exported %s%s\n", out, how);
    return lt_comm_watch_end(&x.w, st, err);
}

static lt_status checkpoint_job(run *r, const char *ckpt, const char *out, export_watch *x, lt_err *err) {
    lt_ckpt *c = NULL;
    lt_status st = lt_ckpt_open(ckpt, &c, err);
    if (!st) st = lt_export_checkpoint_folder(c, r->o, r->o->model, out, export_progress, x, err);
    lt_ckpt_close(c);
    return st;
}

/* Several ranks, full fine-tuning: nothing is gathered. Rank 0 alone turns the
 * sharded checkpoint `ckpt` (complete: every rank wrote its slices) into the
 * Hugging Face folder `out` with the offline export (lt_export_checkpoint_folder,
 * what `luxtrain export` does: tensor by tensor from the ranks' files, bounded
 * memory, no collective), watched (export_watched). */
static lt_status export_from_checkpoint(run *r, const char *ckpt, const char *out, lt_err *err) {
    return export_watched(r, checkpoint_job, ckpt, out, " from the sharded checkpoint (nothing gathered)", err);
}

static lt_status adapter_job(run *r, const char *src, const char *out, export_watch *x, lt_err *err) {
    (void)src;
    return lt_trainer_export_adapter(r->m, &r->peft, out, x ? export_progress : NULL, x, err);
}

/* the trained model into `out`: Hugging Face folder (full) or PEFT adapter (LoRA: rank 0 writes
 * the adapter every rank holds whole; several ranks: watched, export_watched); one rank (full:
 * several ranks export from their sharded checkpoint, export_from_checkpoint) */
static lt_status export_to(run *r, const char *out, lt_err *err) {
    if (r->lora) return r->world > 1 ? export_watched(r, adapter_job, NULL, out, " (the adapter)", err)
                                     : adapter_job(r, NULL, out, NULL, err);
    if (r->rank) return LT_OK; /* rank 0 writes */
    /* full: every parameter, in the source checkpoint's dtype */
    lt_st_model *src = NULL;
    lt_status st = lt_model_open_weights(r->o->model, lt_model_config(r->m), &src, NULL, err);
    if (st) return st;
    size_t n = lt_optim_count(r->opt);
    lt_export_tensor *ts = calloc(n, sizeof *ts);
    if (!ts) {
        lt_st_close_model(src);
        return lt_fail(err, LT_ERR_NOMEM, "export: out of memory");
    }
    for (size_t i = 0; i < n && !st; i++) {
        lt_param *p = lt_model_find_param(r->m, lt_optim_name(r->opt, i));
        const lt_st_tensor *t = lt_st_model_find(src, lt_optim_name(r->opt, i));
        float *h = p ? malloc(p->numel * sizeof *h) : NULL;
        if (!h || !t) {
            free(h);
            st = lt_fail(err, LT_ERR_INVALID, "export: tensor '%s' not found", lt_optim_name(r->opt, i));
            break;
        }
        ts[i].name = p->name;
        ts[i].ndim = p->ndim;
        ts[i].shape[0] = p->shape[0];
        ts[i].shape[1] = p->shape[1];
        ts[i].dtype = t->dtype;
        ts[i].data = h;
        st = lt_optim_get_param(r->opt, i, h, err);
    }
    if (!st) st = lt_export_hf(out, r->o->model, ts, n, 0, err);
    for (size_t i = 0; i < n; i++) free((void *)ts[i].data);
    free(ts);
    lt_st_close_model(src);
    return st;
}

/* A run killed midway leaves temporary folders "<name>.tmp-<host>-<pid>" (and
 * "<name>.old-<host>-<pid>"): final.*, checkpoints/.tmp-step-N-*, and inside a
 * checkpoint step-N/hf.* or step-N/adapter.* (export_to above). Remove those of
 * this host whose process is gone; those of another host stay, with a note. */
static void remove_leftovers(const char *out) {
    char ck[4096], sub[4096];
    int gone = lt_fs_remove_stale_note(out, "final", stderr);
    DIR *d = lt_path_join(ck, sizeof ck, out, "checkpoints") ? opendir(ck) : NULL;
    if (d) {
        gone += lt_fs_remove_stale_note(ck, "", stderr);
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strncmp(e->d_name, "step-", 5) || strstr(e->d_name, ".tmp-") || strstr(e->d_name, ".old-") ||
                !lt_path_join(sub, sizeof sub, ck, e->d_name) || !lt_is_dir(sub))
                continue;
            gone += lt_fs_remove_stale_note(sub, "hf", stderr) + lt_fs_remove_stale_note(sub, "adapter", stderr);
        }
        closedir(d);
    }
    if (gone) fprintf(stderr, "train: removed %d unfinished folder(s) of processes that are gone\n", gone);
}

static lt_status export_final(run *r, lt_err *err) {
    char out[4096];
    if (!lt_path_join(out, sizeof out, r->o->out, "final")) return lt_fail(err, LT_ERR_INVALID, "path too long");
    lt_status st;
    if (r->lora && (st = lt_trainer_gather_tables(r->tr, err))) /* ZeRO-3: the trained tables after the last step */
        return lt_wrap(err, st, "export to %s", out);
    if (r->world == 1 || r->lora) return export_to(r, out, err);
    /* several ranks, full: from the checkpoint of the last step (the loop saves one after its last
     * step; written here if it did not) */
    int64_t step = lt_optim_steps_done(r->opt);
    if (r->last_ckpt_step != step && (st = save_checkpoint(r, step, err))) return st;
    return export_from_checkpoint(r, r->last_ckpt, out, err);
}

/* ------------------------------------------------------------ the run */

/* the shards' tokenizer against the model folder's tokenizer.json */
static lt_status check_tokenizer(const run *r, const lt_loader *L, const char *what, lt_err *err) {
    int checked = 0;
    lt_status st = lt_loader_check_tokenizer(L, r->o->model, &checked, err);
    if (!st) return LT_OK;
    if (st != LT_ERR_INVALID || !r->o->allow_tokenizer_mismatch) return lt_wrap(err, st, "%s", what);
    if (!r->rank) fprintf(stderr, "train: warning (--allow-tokenizer-mismatch): %s: %s\n", what, err->msg);
    return LT_OK;
}

static lt_status report_memory(run *r, lt_err *err);

/* NCCL on the CUDA backend: the communicator queues its collectives on the
 * backend's stream (set_stream, before lt_trainer_distribute so that the
 * --shard-group sub-communicators inherit it): the starts of the overlapped
 * ZeRO-2/3 collectives wait for the compute queued before them with an
 * event, not on the host, and wait_req is an event wait. LT_COMM_STREAM=0
 * keeps the communicator's own stream (every NCCL call first synchronises
 * the device): the path before, for comparisons (tools/gpu-check.sh). */
static lt_status comm_on_backend_stream(run *r, lt_err *err) {
    const char *v = getenv("LT_COMM_STREAM");
    if (v && *v && strcmp(v, "0") && strcmp(v, "1"))
        return lt_fail(err, LT_ERR_INVALID,
                       "LT_COMM_STREAM='%s' (1 or unset: NCCL on the backend's stream; 0: on its own stream)", v);
    void *stream = r->be->native_stream(r->be);
    if (strcmp(r->comm->name, "nccl") || !stream || (v && !strcmp(v, "0"))) return LT_OK;
    lt_status st = r->comm->set_stream(r->comm, stream, err);
    if (st) return lt_wrap(err, st, "communicator nccl: set_stream (the %s backend's stream)", r->be->name);
    if (!r->rank) fprintf(stderr, "train: communicator nccl queues on the %s backend's stream\n", r->be->name);
    return LT_OK;
}

/* LT_COMM_KIND (a test / diagnostic knob, docs/distributed.md): the
 * communicator's kind instead of the trainer's choice ("auto", or "single"
 * for one CPU rank): auto | mpi | nccl | single. NULL: unset (the choice
 * stands). tests/test_train_nccl_fake.sh runs the NCCL communicator with the
 * CPU backend through it. */
static lt_status comm_kind_env(const char **kind, lt_err *err) {
    static const char *const kinds[] = {"auto", "mpi", "nccl", "single"};
    const char *v = getenv("LT_COMM_KIND");
    *kind = NULL;
    if (!v || !*v) return LT_OK;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(v, kinds[i])) {
            *kind = kinds[i];
            return LT_OK;
        }
    return lt_fail(err, LT_ERR_INVALID, "LT_COMM_KIND='%s' (expected auto, mpi, nccl or single)", v);
}

static lt_status setup(run *r, lt_err *err) {
    const lt_train_opts *o = r->o;
    lt_status st;
    if (r->world > 1 && strcmp(o->device, "cpu")) { /* one GPU per process */
        lt_comm_env env;
        lt_comm_env_read(&env);
        st = lt_backend_create_device("cuda", env.local_rank, (int)o->threads, &r->be, err);
        if (st && !strcmp(o->device, "cuda")) return st;
    }
    if (!r->be && (st = lt_backend_create(o->device, (int)o->threads, &r->be, err))) return st;
    /* a communicator for more than one rank, and for one CPU rank too ("single":
     * the same calls as N ranks, so the results equal them bitwise) */
    if (r->world > 1 || !strcmp(r->be->name, "cpu") || o->zero >= 2) { /* ZeRO-2 on one GPU: nccl, world 1 */
        lt_comm_opts co = lt_comm_opts_default();
        co.on_device = strcmp(r->be->name, "cpu") != 0;
        const char *kind;
        if ((st = comm_kind_env(&kind, err))) return st;
        if (!kind) kind = r->world > 1 || co.on_device ? "auto" : "single";
        if ((st = lt_comm_create(kind, &co, &r->comm, err))) return st;
        r->rank = r->comm->rank;
        if ((st = comm_on_backend_stream(r, err))) return st;
    }
    /* ZeRO-3: every rank reads only its part of the weights (lt_model_load_deferred; the trainer's
     * shard_weights fills the parts from the files), never the whole model */
    if ((st = o->zero >= 3 && r->comm ? lt_model_load_deferred(o->model, r->be, &r->m, err)
                                      : lt_model_load(o->model, r->be, &r->m, err)))
        return st;
    lt_model_set_recompute(r->m, o->recompute);
    const lt_config *cfg = lt_model_config(r->m);
    lt_rng_seed(&r->rng, (uint64_t)o->seed);
    if (r->lora) {
        if (o->adapter) {
            if ((st = lt_trainer_load_adapter(r->m, o->adapter, &r->peft, err))) return st;
            if ((o->lora_rank > 0 && o->lora_rank != r->peft.r))
                return lt_fail(err, LT_ERR_INVALID, "--lora-rank %ld differs from the adapter's r = %d", o->lora_rank,
                               r->peft.r);
            r->peft.dropout = o->lora_dropout;
        } else {
            r->peft.r = (int)o->lora_rank;
            r->peft.alpha = o->lora_alpha;
            r->peft.dropout = o->lora_dropout;
            r->peft.targets = o->lora_targets;
            r->peft.rslora = o->rslora;
            if ((st = lt_trainer_add_lora(r->m, &r->peft, &r->rng, err))) return st;
        }
        if (strcmp(o->train_embeddings, "none")) {
            if (o->adapter)
                return lt_fail(err, LT_ERR_INVALID, "--train-embeddings with --adapter: the adapter decides (its "
                                                    "trained embeddings, if any, train on)");
            if ((st = lt_trainer_train_embeddings(r->m, o->model, o->train_embeddings, err))) return st;
        }
        snprintf(r->peft.base_model, sizeof r->peft.base_model, "%s", o->model);
        lt_model_set_rng(r->m, &r->rng);
        if (!strcmp(o->quantize, "nf4") && (st = lt_model_quantize_nf4(r->m, err))) /* QLoRA */
            return lt_wrap(err, st, "--quantize nf4");
    }
    lt_loader_opts lo = {(int)o->micro_batch, (int)o->seq_len, r->rank, r->world, (uint64_t)o->seed, 1,
                         cfg->vocab_size};
    if ((st = lt_loader_open((const char *const *)o->data, o->n_data, NULL, &lo, &r->L, err))) return st;
    if ((st = check_tokenizer(r, r->L, "--data", err))) return st;
    if (o->n_eval_data) {
        lt_loader_opts eo = lo;
        eo.shuffle = 0;
        eo.rank = 0; /* rank 0 evaluates the whole set */
        eo.world_size = 1;
        if (lt_loader_is_mix((const char *const *)o->eval_data, o->n_eval_data))
            return lt_fail(err, LT_ERR_INVALID, "--eval-data takes shards, folders or patterns, not weighted sets "
                                                "(PATTERN:W / PATTERN:xN): evaluation reads every document once");
        if ((st = lt_loader_open((const char *const *)o->eval_data, o->n_eval_data, NULL, &eo, &r->E, err)))
            return lt_wrap(err, st, "--eval-data");
        if ((st = check_tokenizer(r, r->E, "--eval-data", err))) return st;
        lt_loader_get_state(r->E, &r->E0);
    }
    if ((st = lt_model_plan(r->m, (int)o->micro_batch, (int)o->seq_len, err))) return st;

    int64_t bpe = lt_loader_batches_per_epoch(r->L), k = o->grad_accum;
    int64_t per_epoch = (bpe + k - 1) / k, total = 0;
    if (o->epochs > 0) total = per_epoch * o->epochs;
    if (o->max_steps > 0 && (total == 0 || o->max_steps < total)) total = o->max_steps;
    if (total <= 0) return lt_fail(err, LT_ERR_INVALID, "the training data hold no batches");
    r->total_steps = total;
    lt_optim_cfg oc = {0};
    oc.sched.kind = o->schedule;
    oc.sched.lr = o->lr;
    oc.sched.warmup_steps = o->warmup_steps;
    oc.sched.total_steps = total;
    oc.sched.min_lr_ratio = o->min_lr_ratio;
    r->sched = oc.sched;
    oc.beta1 = o->beta1;
    oc.beta2 = o->beta2;
    oc.eps = o->eps;
    oc.weight_decay = o->weight_decay;
    oc.clip = o->clip;
    /* ZeRO-2: the model never holds a full-size gradient (the trainer's pool gives it group by group) */
    if (o->zero >= 2 && (st = lt_model_pool_grads(r->m, err))) return st;
    if ((st = lt_trainer_create(r->m, &oc, o->decay_embeddings, o->skip_nonfinite, &r->tr, err))) return st;
    r->opt = lt_trainer_optim(r->tr);
    if (o->shard_group && !r->comm)
        return lt_fail(err, LT_ERR_INVALID, "--shard-group %ld needs a communicator (a data-parallel launch)",
                       o->shard_group);
    if (r->comm) {
        lt_trainer_set_shard_group(r->tr, (int)o->shard_group);
        if ((st = lt_trainer_distribute(r->tr, r->comm, (int)o->zero,
                                        strcmp(o->grad_reduce_dtype, "bf16") ? LT_F32 : LT_BF16, err)))
            return st;
        if (r->lora) lt_trainer_set_dropout_rng(r->tr, &r->rng);
    }
    lt_trainer_set_neftune(r->tr, o->neftune_alpha, (uint64_t)o->seed);
    if ((st = report_memory(r, err))) return st;
    size_t N = (size_t)o->micro_batch * o->seq_len;
    r->buf = malloc((size_t)k * 4 * N * sizeof(int32_t));
    r->micro = calloc((size_t)k, sizeof *r->micro);
    if (!r->buf || !r->micro) return lt_fail(err, LT_ERR_NOMEM, "out of memory for %lld micro-batches", (long long)k);
    size_t params = 0;
    for (size_t i = 0; i < lt_model_num_params(r->m); i++)
        if (lt_model_param(r->m, i)->trainable) params += lt_model_param(r->m, i)->numel;
    char group_txt[32];
    snprintf(group_txt, sizeof group_txt, "%ld ranks", o->shard_group);
    if (!r->rank)
        fprintf(stderr,
                "train: %s %s, %zu trainable parameters; %lld documents, %lld tokens, %lld batches of %d x %ld x "
                "%ld per epoch (%lld truncated); %lld optimizer steps of %ld x %ld micro-batches%s%s%s%s%s%s%s\n",
                lt_arch_name(cfg->arch),
                r->lora ? (lt_model_is_quantized(r->m) ? "QLoRA (NF4 base weights)" : "LoRA") : "full fine-tuning",
                params,
                (long long)lt_loader_num_docs(r->L), (long long)lt_loader_num_tokens(r->L), (long long)bpe, r->world,
                o->micro_batch, o->seq_len, (long long)lt_loader_num_truncated(r->L), (long long)total, o->grad_accum,
                (long)r->world, r->comm ? "; communicator " : "", r->comm ? r->comm->name : "",
                o->zero == 3 ? ", ZeRO-3" : o->zero == 2 ? ", ZeRO-2" : o->zero ? ", ZeRO-1" : "",
                o->shard_group && o->shard_group != r->world ? ", hybrid sharding in groups of " : "",
                o->shard_group && o->shard_group != r->world ? group_txt : "", strcmp(o->grad_reduce_dtype, "bf16") ? "" : ", bf16 gradient reduction",
                o->recompute ? "; recompute" : "");
    for (int i = 0; !r->rank && i < lt_loader_num_sets(r->L); i++) {
        lt_loader_set s;
        lt_loader_get_set(r->L, i, &s);
        fprintf(stderr, "train: mix set %d %s: %lld documents, %lld tokens (%lld targets); %.4g of each epoch's "
                        "tokens\n", i + 1, s.spec, (long long)s.n_docs, (long long)s.n_tokens, (long long)s.n_targets,
                s.target_share);
    }
    return LT_OK;
}

/* Every rank's memory for parameters, gradients and optimizer state (from
 * the buffers it holds) and its peak resident set size so far (VmHWM: what
 * setup cost the process -- the model load and the optimizer's setup --
 * including the runtime), gathered and printed by rank 0 -- one line per rank. */
static lt_status report_memory(run *r, lt_err *err) {
    lt_trainer_mem mm;
    lt_trainer_memory(r->tr, &mm);
    int W = r->comm ? r->comm->world : 1, me = r->comm ? r->comm->rank : 0;
    int64_t *all = calloc((size_t)W * 6, sizeof *all);
    if (!all) return lt_fail(err, LT_ERR_NOMEM, "out of memory");
    int64_t *mine = all + (size_t)me * 6;
    mine[0] = (int64_t)mm.params, mine[1] = (int64_t)mm.params_gathered, mine[2] = (int64_t)mm.grad_buffers;
    mine[3] = (int64_t)mm.grad_acc, mine[4] = (int64_t)mm.optim;
    long kib = lt_peak_rss_kib(); /* the whole process so far: model load, optimizer setup, runtime */
    mine[5] = kib < 0 ? -1 : (int64_t)kib * 1024;
    lt_status st = W > 1 ? r->comm->all_gather(r->comm, all, (size_t)W * 6, NULL, LT_I64, err) : LT_OK;
    for (int q = 0; !st && !r->rank && q < W; q++) {
        const int64_t *v = all + (size_t)q * 6;
        fprintf(stderr,
                "train: memory rank %d of %d: parameters %lld B, gathered weights %lld B, gradient buffers %lld B, "
                "gradient accumulator %lld B, optimizer state %lld B; peak resident %lld B after setup\n",
                q, W, (long long)v[0], (long long)v[1], (long long)v[2], (long long)v[3], (long long)v[4],
                (long long)v[5]);
    }
    free(all);
    return st ? lt_wrap(err, st, "gathering the memory figures") : LT_OK;
}

/* Copy the next micro-batches of one step (stopping at the epoch's end). */
static lt_status next_step_batches(run *r, int *n_micro, int64_t *epoch, lt_err *err) {
    size_t N = (size_t)r->o->micro_batch * r->o->seq_len;
    int n = 0;
    while (n < r->o->grad_accum) {
        lt_loader_batch lb;
        lt_status st = lt_loader_next(r->L, &lb, err);
        if (st) return st;
        int32_t *b = r->buf + (size_t)n * 4 * N;
        memcpy(b, lb.batch.tokens, N * 4);
        memcpy(b + N, lb.batch.targets, N * 4);
        memcpy(b + 2 * N, lb.batch.pos, N * 4);
        memcpy(b + 3 * N, lb.batch.doc_start, N * 4);
        lt_batch *mb = &r->micro[n++];
        mb->B = lb.batch.B;
        mb->T = lb.batch.T;
        mb->tokens = b;
        mb->targets = b + N;
        mb->pos = b + 2 * N;
        mb->doc_start = b + 3 * N;
        *epoch = lb.epoch;
        if (lb.last_in_epoch) {
            r->epochs_done = lb.epoch + 1;
            break;
        }
    }
    *n_micro = n;
    return LT_OK;
}

/* ------------------------------------------------------------ signals */

#define LT_TRAIN_EXIT_STOPPED 75 /* EX_TEMPFAIL: stopped by a signal, resumable */

static volatile sig_atomic_t g_stop_signal;
static const int g_stop_signals[] = {SIGINT, SIGTERM, SIGUSR1};

static void on_stop_signal(int sig) {
    if (g_stop_signal) { /* the second one: stop now, as if no handler were installed */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_stop_signal = sig;
    static const char m[] = "\ntrain: signal received: stopping after this optimizer step with a checkpoint "
                            "(send it again to stop at once)\n";
    ssize_t w = write(2, m, sizeof m - 1);
    (void)w;
}

/* on = 1: the loop's handlers; on = 0: the default actions back */
static void stop_signals(int on) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on ? on_stop_signal : SIG_DFL;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof g_stop_signals / sizeof g_stop_signals[0]; i++)
        sigaction(g_stop_signals[i], &sa, NULL);
}

static const char *signal_name(int sig) {
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGUSR1 ? "SIGUSR1" : "a signal on another rank";
}

/* Has any rank been asked to stop? (every rank calls this once per step) */
static lt_status stop_requested(run *r, int *stop, lt_err *err) {
    int64_t v = g_stop_signal ? 1 : 0;
    if (r->comm) {
        lt_status st = r->comm->all_reduce_sum(r->comm, &v, 1, LT_I64, err);
        if (st) return lt_wrap(err, st, "agreeing on a stop");
    }
    *stop = v > 0;
    return LT_OK;
}

/* argv as one shell line (single quotes where needed), with --resume added */
static void print_resume_line(FILE *f, int argc, char **argv) {
    int has_resume = 0;
    fputs("luxtrain", f);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--resume")) has_resume = 1;
        int plain = *a != 0;
        for (const char *c = a; *c; c++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=./,:@%", *c)) plain = 0;
        fputc(' ', f);
        if (plain) {
            fputs(a, f);
            continue;
        }
        fputc('\'', f);
        for (const char *c = a; *c; c++) {
            if (*c == '\'') fputs("'\\''", f);
            else fputc(*c, f);
        }
        fputc('\'', f);
    }
    if (!has_resume) fputs(" --resume", f);
    fputc('\n', f);
}

static int kill_after(void) {
    const char *s = getenv("LT_TRAIN_TEST_KILL_AFTER");
    return s ? atoi(s) : -1;
}

static void fault_kill(int sig) {
    (void)sig;
    raise(SIGKILL);
}

/* Fault injection for the data-parallel tests: LT_FAULT_RANK=R LT_FAULT_STEP=S
 * makes rank R stop before optimizer step S: exit(3) (LT_FAULT_MODE=exit, the
 * default), hang forever (LT_FAULT_MODE=hang: its peers time out) or be
 * killed by SIGKILL LT_FAULT_DELAY_MS (default 5) ms into the step
 * (LT_FAULT_MODE=kill: mid-step, its peers waiting in a collective).
 * LT_FAULT_RANK=0 LT_FAULT_EXPORT=K instead: the same in rank 0's watched
 * export under several ranks (export_watched: step-N/hf, step-N/adapter,
 * final/), before its K-th progress report (the reports come before each
 * tensor, then before each step of the tail: lt_export_progress_fn; a full
 * export's K-th report is its K-th tensor's); there LT_FAULT_MODE=slow makes
 * every step from the K-th report on take LT_FAULT_DELAY_MS (default 100) ms
 * longer (a slow but working export). */
static void fault_now(const run *r, const char *mode, const char *where, long long at) {
    int hang = mode && !strcmp(mode, "hang"), kill9 = mode && !strcmp(mode, "kill");
    fprintf(stderr, "luxtrain: rank %d of %d: fault injection: %s %s %lld\n", r->rank, r->world,
            hang ? "hanging before" : kill9 ? "SIGKILL a few ms into" : "exiting before", where, at);
    fflush(stderr);
    if (kill9) { /* SIGKILL a few ms into the step: its peers are then inside a collective with it */
        const char *d = getenv("LT_FAULT_DELAY_MS");
        long ms = d ? atol(d) : 5;
        struct itimerval it = {{0, 0}, {ms / 1000, (ms % 1000) * 1000}};
        signal(SIGALRM, fault_kill);
        setitimer(ITIMER_REAL, &it, NULL);
        return;
    }
    if (!hang) _exit(3);
    for (;;) sleep(1000);
}

static void maybe_fault(const run *r, int64_t next_step) {
    const char *fr = getenv("LT_FAULT_RANK"), *fs = getenv("LT_FAULT_STEP");
    if (fr && fs && atoi(fr) == r->rank && atoll(fs) == next_step)
        fault_now(r, getenv("LT_FAULT_MODE"), "step", (long long)next_step);
}

static void fault_in_export(const run *r, long long k) {
    const char *fr = getenv("LT_FAULT_RANK"), *fe = getenv("LT_FAULT_EXPORT"), *fm = getenv("LT_FAULT_MODE");
    if (!fr || !fe || atoi(fr) != r->rank || k < atoll(fe)) return;
    if (fm && !strcmp(fm, "slow")) {
        const char *d = getenv("LT_FAULT_DELAY_MS");
        long ms = d ? atol(d) : 100;
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    } else if (k == atoll(fe)) {
        fault_now(r, fm, "export progress report", k);
    }
}

static lt_status train_loop(run *r, lt_err *err) {
    const lt_train_opts *o = r->o;
    lt_status st;
    int64_t step = lt_optim_steps_done(r->opt), last_saved = step, last_eval = -1;
    int killat = kill_after(), skipped_in_row = 0;
    while (step < r->total_steps && !(o->epochs > 0 && r->epochs_done >= o->epochs)) {
        int stop = 0;
        if ((st = stop_requested(r, &stop, err))) return st;
        if (stop) {
            r->stopped = g_stop_signal ? g_stop_signal : -1;
            r->stop_step = step;
            if (step > last_saved) {
                if ((st = save_checkpoint(r, step, err))) return lt_wrap(err, st, "checkpoint on stopping");
                last_saved = step;
            }
            r->stop_saved = last_saved == step && step > 0;
            return LT_OK;
        }
        int n_micro = 0;
        int64_t epoch = 0;
        maybe_fault(r, step + 1);
        if ((st = next_step_batches(r, &n_micro, &epoch, err))) return st;
        lt_train_stats s;
        if ((st = lt_trainer_step(r->tr, r->micro, n_micro, &s, err))) {
            if (r->tty) fputc('\n', stderr);
            return st;
        }
        r->tokens_seen += s.tokens;
        r->tokens_here += s.tokens;
        if (s.skipped) {
            write_step_metrics(r, &s, epoch);
            if (++skipped_in_row >= 20)
                return lt_fail(err, LT_ERR_NONFINITE,
                               "%d steps in a row skipped after step %lld (non-finite or no targets): stopping",
                               skipped_in_row, (long long)step);
            continue;
        }
        skipped_in_row = 0;
        step = s.step;
        r->steps_here++;
        r->last_loss = s.loss;
        r->last_lr = s.lr;
        write_step_metrics(r, &s, epoch);
        int last = step >= r->total_steps || (o->epochs > 0 && r->epochs_done >= o->epochs);
        progress(r, &s, o->log_every > 0 && (step % o->log_every == 0 || last));
        if (r->E && ((o->eval_every > 0 && step % o->eval_every == 0) || last)) {
            if ((st = evaluate(r, step, err))) return st;
            last_eval = step;
        }
        if ((o->save_every > 0 && step % o->save_every == 0) || last) {
            if ((st = save_checkpoint(r, step, err))) return st;
            last_saved = step;
        }
        if (killat >= 0 && step == killat) raise(SIGKILL);
    }
    (void)last_saved;
    (void)last_eval;
    if (r->tty) fputc('\n', stderr);
    return LT_OK;
}

/* ------------------------------------------------------------ --dry-run */

static int dry_run(const lt_train_opts *o, int world) {
    lt_config c;
    lt_err err;
    if (lt_config_load(o->model, &c, &err)) {
        fprintf(stderr, "train: %s\n", err.msg);
        return 1;
    }
    lt_param_spec *sp = NULL;
    size_t ns = 0;
    if (lt_model_param_specs(&c, &sp, &ns, &err)) {
        fprintf(stderr, "train: %s\n", err.msg);
        return 1;
    }
    double P = 0, Pe = 0, Ph = 0, Pl = 0; /* all; the embedding's group; the head's group; the largest layer */
    {
        double *lay = calloc((size_t)c.num_layers + 1, sizeof *lay);
        for (size_t i = 0; i < ns; i++) {
            double n = (double)sp[i].shape[0] * (sp[i].ndim > 1 ? (double)sp[i].shape[1] : 1);
            const char *l = strstr(sp[i].name, "layers.");
            int li = l ? atoi(l + 7) : -1;
            P += n;
            if (lt_str_ends_with(sp[i].name, "embed_tokens.weight")) Pe += n;
            else if (li >= 0 && li < c.num_layers && lay) lay[li] += n;
            else Ph += n;
        }
        for (int l = 0; lay && l < c.num_layers; l++)
            if (lay[l] > Pl) Pl = lay[l];
        free(lay);
    }
    free(sp);
    int lora = lt_train_opts_lora(o);
    double Pt = P;
    if (lora) {
        Pt = 0;
        for (int t = 0; t < LT_LORA_NTARGETS; t++) {
            if (!(lt_lora_targets_for(&c, o->lora_targets) & (1u << t))) continue;
            int in, out;
            lt_lora_target_dims(&c, t, &in, &out);
            Pt += (double)c.num_layers * o->lora_rank * (in + out);
        }
    }
    /* --train-embeddings: the tables train too (in the parameter dtype, with f32 master weights on a GPU);
     * "new": the optimizer state (m, v, master) covers the added rows only (Pst): without ZeRO on every
     * rank, with ZeRO-1/2/3 each rank the rows inside its part (lt_optim_distribute); the gradient is the
     * whole tables */
    double tables = c.tie_word_embeddings ? 1 : 2;
    double Pemb = lora && strcmp(o->train_embeddings, "none") ? (double)c.vocab_size * c.hidden_size * tables : 0;
    double Pst = Pemb;
    const char *rows_note = "";
    if (Pemb > 0 && !strcmp(o->train_embeddings, "new")) {
        int32_t *ids = NULL;
        size_t nids = 0;
        lt_err e2;
        if (lt_vocab_record_ids(o->model, &ids, &nids, &e2) == LT_OK) Pst = (double)nids * c.hidden_size * tables;
        else rows_note = " (no vocabulary record in the model folder: the optimizer state counted for whole tables)";
        free(ids);
    }
    Pt += Pemb;
    /* the device the run would take: --device auto resolves here as it would there */
    const char *dev = o->device, *why = "";
    if (!strcmp(dev, "auto")) {
        lt_backend *be = NULL;
        lt_err e2;
        dev = lt_backend_create("auto", 1, &be, &e2) == LT_OK && be && !strcmp(be->name, "cuda") ? "cuda" : "cpu";
        if (be) be->destroy(be);
        why = !strcmp(dev, "cuda") ? " (--device auto: a GPU is present)"
                                   : " (--device auto: no NVIDIA GPU found, or CUDA not built in)";
    }
    int gpu = strcmp(dev, "cpu") != 0, bf16red = !strcmp(o->grad_reduce_dtype, "bf16");
    double wb = gpu ? 2 : 4, A = gpu ? 2 : 4, GB = 1e9, here = -1;
    /* the activation arena lt_model_plan would reserve (a shape the run would refuse is refused here, before any figure): its own layout pass, sizes only */
    size_t act_sz = 0;
    lt_lora_spec ls = {.r = lora ? (int)o->lora_rank : 0, .dropout = lora ? (float)o->lora_dropout : 0.0f,
                       .targets = lora ? o->lora_targets : 0};
    if (lt_model_plan_bytes(&c, gpu ? LT_BF16 : LT_F32, (int)o->micro_batch, (int)o->seq_len, o->recompute, &ls, 0,
                            &act_sz, &err)) {
        fprintf(stderr, "train: %s\n", err.msg);
        return 1;
    }
    printf("luxtrain train --dry-run: %s, %.3f B parameters (%.4g M trainable, %s)\n"
           "device %s%s: weights and activations in %s\n",
           lt_arch_name(c.arch), P / 1e9, Pt / 1e6,
           lora ? (strcmp(o->quantize, "nf4") ? "LoRA" : "QLoRA") : "full fine-tuning", gpu ? "CUDA" : "CPU", why,
           gpu ? "bf16" : "f32");
    printf("micro-batch %ld x %ld tokens%s; ZeRO-%ld; gradient reduction %s\n", o->micro_batch, o->seq_len,
           o->recompute ? ", --recompute" : "", o->zero, o->grad_reduce_dtype);
    if (Pemb > 0)
        printf("--train-embeddings %s: %.4g M table elements train; AdamW state for %.4g M of them%s%s\n",
               o->train_embeddings, Pemb / 1e6, Pst / 1e6, rows_note,
               Pst < Pemb ? " (ZeRO-1/2/3: each rank the added rows inside its part)" : "");
    double acts = (double)act_sz;
    /* QLoRA: the projections in NF4, the rest in the param dtype, one dequantized projection */
    int nf4 = !strcmp(o->quantize, "nf4");
    lt_nf4_bytes qb = {0};
    if (nf4 && lt_model_nf4_bytes(&c, (size_t)wb, &qb, &err)) {
        fprintf(stderr, "train: %s\n", err.msg);
        return 1;
    }
    if (nf4)
        printf("QLoRA (--quantize nf4): %.3f B parameters in NF4 (%.2f GB, %.3f bytes each), %.3f B in %s "
               "(%.2f GB: embeddings, norms, lm_head), one dequantized projection %.2f GB\n",
               qb.nf4_params / 1e9, qb.nf4_bytes / GB, qb.nf4_bytes / qb.nf4_params, qb.other_params / 1e9,
               gpu ? "bf16" : "f32", qb.other_bytes / GB, qb.scratch_bytes / GB);
    if (o->shard_group) printf("--shard-group %ld: the ZeRO state is sharded over groups of %ld ranks\n",
                               o->shard_group, o->shard_group);
    printf("\n%6s %10s %10s %10s %12s %12s %10s %8s  (GB = 1e9 bytes, per rank, ZeRO-%ld)\n", "ranks", "weights",
           "grads", "grad acc", "Adam m+v", "f32 master", "acts", "total", o->zero);
    int ws[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 0}, nw = 9;
    int in_list = 0;
    for (int k = 0; k < nw; k++) in_list |= ws[k] == world;
    if (!in_list) ws[nw++] = world;
    /* the gradient groups (lt_model.h): a layer's trainable elements, the head's and the embedding's */
    double tl = lora ? (Pt - Pemb) / c.num_layers : Pl, te = lora ? (Pemb ? Pe : 0) : Pe,
           th = lora ? Pemb - (Pemb ? Pe : 0) : Ph;
    double totals[10][4];
    for (int k = 0; k < nw; k++) {
        int W = ws[k];
        for (int z = 0; z < 4; z++) {
            double sh = z ? (double)(o->shard_group > 0 && o->shard_group < W && W % o->shard_group == 0
                                         ? o->shard_group : W) : 1.0;
            double base = nf4 ? qb.nf4_bytes + qb.other_bytes + qb.scratch_bytes : P * wb;
            double lw = lora ? (Pt - Pemb) * 4 : 0; /* LoRA A/B, f32 */
            double weights = base + lw;
            /* one layer group gathered: its weights (QLoRA: its NF4 projections, the norms in the param dtype) */
            double gl = nf4 ? (qb.nf4_bytes + (Pl * c.num_layers - qb.nf4_params) * wb) / c.num_layers : Pl * wb;
            if (z == 3 && sh > 1) /* this rank's part (NF4 in whole blocks; LoRA A/B and the dequantization buffer
                                     whole), plus the gathered groups: three layers (one in use, the next, one
                                     prefetched), the head and the embedding */
                weights = (base - qb.scratch_bytes) / sh + qb.scratch_bytes + lw + 3 * gl + (Pe + Ph) * wb;
            double grads = z >= 2 ? (2 * tl + te + th) * 4 : Pt * 4; /* ZeRO-2/3: the pool, else the whole gradient */
            double acc = bf16red && !z ? 0 : Pt * 4 / sh;
            /* the elements with AdamW state ("new": the added rows', Pst, not the whole tables'): ZeRO
             * gives each rank those inside its part of the flat vector (Pt / sh elements), so the rank
             * holding the most keeps at most its part and at most all of them (where the state is not
             * spread over the whole vector, as with "new", the rows and the LoRA matrices can land on
             * one rank) */
            double adam = fmin(Pt / sh, Pt - Pemb + Pst) * 8;
            double master = gpu ? (lora ? fmin(Pt / sh, Pst) : Pt / sh) * 4 : 0;
            double total = weights + grads + acc + adam + master + acts;
            totals[k][z] = total;
            if (z != o->zero) continue;
            if (W == world) here = total;
            printf("%6d %10.2f %10.2f %10.2f %12.2f %12.2f %10.2f %8.2f%s\n", W, weights / GB, grads / GB, acc / GB,
                   adam / GB, master / GB, acts / GB, total / GB, W == world ? "   <- this launch" : "");
        }
    }
    printf("\ntotal per rank by ZeRO stage (GB)\n%6s %9s %9s %9s %9s\n",
           "ranks", "ZeRO-0", "ZeRO-1", "ZeRO-2", "ZeRO-3");
    for (int k = 0; k < nw; k++)
        printf("%6d %9.2f %9.2f %9.2f %9.2f%s\n", ws[k], totals[k][0] / GB, totals[k][1] / GB, totals[k][2] / GB,
               totals[k][3] / GB, ws[k] == world ? "   <- this launch" : "");
    int R = lt_model_logits_chunk_for(c.vocab_size, (size_t)A, (size_t)o->micro_batch * o->seq_len, 0);
    printf("\nactivations: one micro-batch (logits %.2f GB of them: chunks of %d rows)%s\n"
           "See docs/distributed.md for the arithmetic.\n",
           (double)R * c.vocab_size * A / GB, R,
           gpu ? "; add the backend's workspace (CUDA context, cuBLAS: ~1-2 GB)." : ".");
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (here >= 0)
        printf("\nthis launch: about %.2f GB per rank of %s memory, in %s\n", here / GB, gpu ? "GPU" : "CPU",
               gpu ? "bf16 (plus the workspace above)" : "f32");
    if (here >= 0 && gpu) { /* with a 2 GB workspace, against cards of N GiB */
        const int cards[] = {16, 24, 40, 64, 80};
        printf("with ~2 GB of workspace this launch fits a GPU of");
        for (int k = 0; k < 5; k++)
            printf(" %d GB: %s%s", cards[k], here + 2e9 <= cards[k] * 1073741824.0 ? "yes" : "no", k < 4 ? "," : "\n");
    }
    if (here >= 0 && !gpu && pages > 0 && psz > 0)
        printf("this machine has %.2f GB of memory%s\n", (double)pages * psz / GB,
               here * world > (double)pages * psz ? ": NOT enough for this launch" : "");
    return 0;
}

int lt_cmd_train(int argc, char **argv) {
    lt_train_opts o;
    lt_err err = {{0}};
    if (lt_train_opts_parse(argc, argv, &o, &err) != LT_OK) {
        fprintf(stderr, "train: %s\n(luxtrain train --help lists the options)\n", err.msg);
        lt_train_opts_free(&o);
        return 2;
    }
    if (o.help) {
        lt_train_opts_help(stdout);
        lt_train_opts_free(&o);
        return 0;
    }
    if (o.dry_run) {
        lt_comm_env env;
        lt_comm_env_read(&env);
        int rc = env.rank > 0 ? 0 : dry_run(&o, o.world > 0 ? (int)o.world : env.world > 1 ? env.world : 1);
        lt_train_opts_free(&o);
        return rc;
    }
    run r;
    memset(&r, 0, sizeof r);
    r.o = &o;
    r.lora = lt_train_opts_lora(&o);
    r.tty = isatty(2);
    r.last_loss = NAN;
    r.last_ckpt_step = -1;
    lt_comm_env env;
    lt_comm_env_read(&env);
    r.world = env.world > 1 ? env.world : 1;
    r.rank = env.world > 1 ? env.rank : 0;
    if (r.rank) r.tty = 0;
    int rc = 1;
    char path[4096], ck[4096] = "";
    int64_t ck_step = -1;
    lt_status st;
    /* a run that fails before its first step leaves no folder or config.json it made */
    char made[4096] = ""; /* the outermost folder level of --out this run created */
    int cfg_made = 0, started = 0;
    if (o.resume && !lt_is_dir(o.out)) {
        st = lt_fail(&err, LT_ERR_IO, "--resume: %s does not exist (no run to continue; for a new run drop --resume)",
                     o.out);
        goto fail;
    }
    if ((st = lt_fs_mkdir_p_made(o.out, made, sizeof made, &err))) goto fail;
    if (!r.rank) remove_leftovers(o.out);
    if (o.resume) {
        if ((st = lt_ckpt_find_latest(o.out, ck, sizeof ck, &ck_step, &err))) goto fail;
        if (ck_step < 0 && !r.rank)
            fprintf(stderr, "train: warning: --resume: no complete checkpoint in %s: starting over from step 0\n",
                    o.out);
    } else {
        lt_path_join(path, sizeof path, o.out, "checkpoints");
        int64_t s = -1;
        char d[4096];
        if (lt_is_dir(path) && lt_ckpt_find_latest(o.out, d, sizeof d, &s, &err) == LT_OK && s >= 0) {
            lt_fail(&err, LT_ERR_INVALID,
                    "%s already holds checkpoints (newest: step %lld); use --resume to continue it, or another --out",
                    o.out, (long long)s);
            goto fail;
        }
    }
    lt_path_join(path, sizeof path, o.out, "config.json");
    cfg_made = lt_fs_file_size(path) < 0;
    if (!r.rank && (st = lt_train_opts_write(&o, path, &err))) goto fail;
    if ((st = setup(&r, &err))) goto fail;
    if (ck_step >= 0 && (st = restore_checkpoint(&r, ck, &err))) goto fail;
    if (ck_step >= 0) {
        snprintf(r.last_ckpt, sizeof r.last_ckpt, "%s", ck);
        r.last_ckpt_step = ck_step;
    }
    lt_path_join(path, sizeof path, o.out, "metrics.jsonl");
    if (!r.rank) {
        if (ck_step >= 0 && (st = cut_metrics(path, ck_step, &err))) goto fail;
        r.metrics = fopen(path, ck_step >= 0 ? "a" : "w"); /* a fresh start drops every old line */
        if (!r.metrics) {
            lt_fail(&err, LT_ERR_IO, "%s: cannot open for writing", path);
            goto fail;
        }
    }
    r.t0 = lt_now_s();
    started = 1;
    stop_signals(1);
    st = train_loop(&r, &err);
    stop_signals(0);
    if (st) goto fail;
    if (r.stopped) {
        if (!r.rank) {
            if (r.tty) fputc('\n', stderr);
            if (r.stop_saved) {
                char d[4096];
                int64_t s = -1;
                if (lt_ckpt_find_latest(o.out, d, sizeof d, &s, &err)) snprintf(d, sizeof d, "?");
                fprintf(stderr, "train: stopped by %s after step %lld of %lld; checkpoint: %s\n",
                        signal_name(r.stopped), (long long)r.stop_step, (long long)r.total_steps, d);
            } else
                fprintf(stderr, "train: stopped by %s before the first step of this run: nothing new to save\n",
                        signal_name(r.stopped));
            fprintf(stderr, "train: to continue (under the same launcher, if any): ");
            print_resume_line(stderr, argc, argv);
        }
        rc = LT_TRAIN_EXIT_STOPPED;
        goto done;
    }
    if ((st = export_final(&r, &err))) goto fail;
    if (!r.rank) { /* RUN_DIR/loss.svg (and .png with a converter); a plot that fails is only a warning */
        if (r.metrics) fflush(r.metrics);
        const char *runs[1] = {o.out};
        int png = 0;
        lt_err perr = {{0}};
        if (lt_plot_runs(runs, 1, NULL, &png, &perr))
            fprintf(stderr, "train: warning: no loss plot: %s\n", perr.msg);
    }
    lt_path_join(path, sizeof path, o.out, "final");
    if (o.zero >= 1 && !r.rank)
        fprintf(stderr, "train: ZeRO-%ld: %lld gradient reductions ran non-blocking behind the backward\n", o.zero,
                (long long)lt_trainer_async_reductions(r.tr));
    if (o.zero >= 3 && !r.rank) {
        int64_t pf, au;
        lt_trainer_gathers(r.tr, &pf, &au);
        fprintf(stderr, "train: ZeRO-3 weight gathers: %lld prefetched while the previous layer computed, %lld at use\n",
                (long long)pf, (long long)au);
    }
    if (!r.rank)
        fprintf(stderr, "train: done after %lld steps (%.1f s); final %s: %s\n",
                (long long)lt_optim_steps_done(r.opt), elapsed(&r), r.lora ? "adapter" : "model", path);
    rc = 0;
    goto done;
fail:
    if (r.comm && r.comm->world > 1) r.comm->abort(r.comm, err.msg); /* stops every rank */
    fprintf(stderr, "train: %s\n", err.msg);
    if (!started && !r.rank) {
        if (made[0]) {
            lt_fs_rm_made(o.out, made); /* every level it created, from a/b up to a */
        } else if (cfg_made && lt_path_join(path, sizeof path, o.out, "config.json")) {
            unlink(path);
        }
    }
done:
    /* the trainer first: it destroys the sub-communicators split from r.comm
     * (--shard-group), which lt_comm.h wants freed before their parent (the
     * parent's destroy may finalize MPI, which the stand-in's split NCCL
     * communicators still use) */
    lt_trainer_free(r.tr);
    if (r.comm) r.comm->destroy(r.comm);
    if (r.metrics) fclose(r.metrics);
    free(r.buf);
    free(r.micro);
    lt_loader_free(r.L);
    lt_loader_free(r.E);
    lt_model_free(r.m);
    if (r.be) r.be->destroy(r.be);
    lt_train_opts_free(&o);
    return rc;
}
