/* lt_trainer.c -- one optimizer step over a global batch, and the LoRA setup
 * helpers (see lt_trainer.h). */
#include "lt_trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "lt_lora.h"

struct lt_trainer {
    lt_model *m;
    lt_optim *opt;
    int skip_nonfinite;
    lt_comm *comm; /* NULL or world 1: no reductions */
};

void lt_trainer_set_comm(lt_trainer *t, lt_comm *c) { t->comm = c && c->world > 1 ? c : NULL; }

int lt_trainer_is_lora_param(const char *name) {
    size_t n = strlen(name);
    return n > 14 && (!strcmp(name + n - 14, ".lora_A.weight") || !strcmp(name + n - 14, ".lora_B.weight"));
}

lt_dtype lt_trainer_param_dtype(const lt_model *m, const lt_param *p) {
    return lt_trainer_is_lora_param(p->name) ? LT_F32 : lt_model_backend(m)->param_dtype;
}

lt_status lt_trainer_create(lt_model *m, const lt_optim_cfg *cfg, int decay_embeddings, int skip_nonfinite,
                            lt_trainer **out, lt_err *err) {
    *out = NULL;
    lt_trainer *t = calloc(1, sizeof *t);
    if (!t) return lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
    t->m = m;
    t->skip_nonfinite = skip_nonfinite;
    lt_status st = lt_model_alloc_grads(m, err);
    if (!st) st = lt_optim_create(lt_model_backend(m), cfg, &t->opt, err);
    for (size_t i = 0; !st && i < lt_model_num_params(m); i++) {
        lt_param *p = lt_model_param(m, i);
        if (!p->trainable) continue;
        if (!p->grad) {
            st = lt_fail(err, LT_ERR_INVALID, "trainer: trainable parameter '%s' has no gradient buffer", p->name);
            break;
        }
        st = lt_optim_add(t->opt, p->name, p->ndim, p->shape, p->data, lt_trainer_param_dtype(m, p), p->grad,
                          lt_optim_decay_default(p->name, p->ndim, decay_embeddings), err);
    }
    if (!st && lt_optim_count(t->opt) == 0) st = lt_fail(err, LT_ERR_INVALID, "trainer: no trainable parameters");
    if (st) {
        lt_trainer_free(t);
        return st;
    }
    *out = t;
    return LT_OK;
}

void lt_trainer_free(lt_trainer *t) {
    if (!t) return;
    lt_optim_free(t->opt);
    free(t);
}

lt_optim *lt_trainer_optim(lt_trainer *t) { return t->opt; }

static int64_t count_targets(const lt_batch *b) {
    int64_t n = 0;
    for (size_t i = 0; i < (size_t)b->B * b->T; i++) n += b->targets[i] >= 0;
    return n;
}

/* non-padding tokens: the loader pads a sequence's tail with one-token
 * documents of id 0 that are never targets */
static int64_t count_tokens(const lt_batch *b) {
    int64_t n = 0;
    for (int s = 0; s < b->B; s++) {
        size_t row = (size_t)s * b->T;
        int last = b->T;
        while (last > 0 && b->doc_start[row + last - 1] == last - 1 && b->targets[row + last - 1] < 0 &&
               b->tokens[row + last - 1] == 0)
            last--;
        n += last;
    }
    return n;
}

lt_status lt_trainer_step(lt_trainer *t, const lt_batch *micro, int n_micro, lt_train_stats *stats, lt_err *err) {
    lt_train_stats s = {0};
    s.grad_norm = NAN;
    int64_t step = lt_optim_steps_done(t->opt) + 1; /* 1-based, for messages */
    /* the loss normaliser: every micro-batch's targets (all ranks), counted first */
    int64_t cnt[2] = {0, 0}; /* targets, tokens */
    for (int j = 0; j < n_micro; j++) {
        cnt[0] += count_targets(&micro[j]);
        cnt[1] += count_tokens(&micro[j]);
    }
    lt_status st = LT_OK;
    if (t->comm && (st = t->comm->all_reduce_sum(t->comm, cnt, 2, LT_I64, err)))
        return lt_wrap(err, st, "step %lld: target count", (long long)step);
    int64_t n_tgt = cnt[0];
    s.tokens = cnt[1];
    s.target_tokens = n_tgt;
    s.step = lt_optim_steps_done(t->opt);
    s.lr = lt_lr_at(&lt_optim_config(t->opt)->sched, s.step);
    if (n_tgt == 0) { /* nothing to learn from: no update */
        s.skipped = 1;
        s.loss = NAN;
        s.grad_norm = NAN;
        if (stats) *stats = s;
        return LT_OK;
    }
    lt_model_zero_grads(t->m);
    double loss_sum = 0;
    for (int j = 0; j < n_micro; j++) {
        lt_step_result r;
        lt_status sj = lt_model_step(t->m, &micro[j], 1, (double)n_tgt, &r, err);
        if (!sj) loss_sum += r.loss_sum;
        else if (sj == LT_ERR_NONFINITE) { /* go on: the other ranks must see it too */
            loss_sum = NAN;
            if (!st) st = lt_wrap(err, sj, "step %lld, micro-batch %d", (long long)step, j + 1);
        } else {
            return lt_wrap(err, sj, "step %lld, micro-batch %d", (long long)step, j + 1);
        }
    }
    if (t->comm) { /* sum the loss and the gradients over the ranks */
        lt_status sc = t->comm->all_reduce_sum(t->comm, &loss_sum, 1, LT_F64, err);
        for (size_t i = 0; !sc && i < lt_model_num_params(t->m); i++) {
            lt_param *p = lt_model_param(t->m, i);
            if (p->trainable && p->grad) sc = t->comm->all_reduce_sum(t->comm, p->grad, p->numel, LT_F32, err);
        }
        if (sc) return lt_wrap(err, sc, "step %lld: gradient all-reduce", (long long)step);
        if (!isfinite(loss_sum) && !st)
            st = lt_fail(err, LT_ERR_NONFINITE, "step %lld: the loss is not finite on another rank", (long long)step);
    }
    s.loss = loss_sum / (double)n_tgt;
    if (!st) {
        lt_optim_stats os;
        st = lt_optim_step(t->opt, &os, err);
        if (!st) {
            s.step = os.step;
            s.lr = os.lr;
            s.grad_norm = os.grad_norm;
        } else if (st == LT_ERR_NONFINITE) {
            lt_wrap(err, st, "step %lld: non-finite gradient norm (loss %g)", (long long)step, s.loss);
            s.grad_norm = NAN;
        } else {
            return lt_wrap(err, st, "step %lld", (long long)step);
        }
    }
    if (st == LT_ERR_NONFINITE) {
        lt_model_zero_grads(t->m);
        if (!t->skip_nonfinite) return st;
        fprintf(stderr, "train: skipping step %lld: %s\n", (long long)step, err ? err->msg : "non-finite");
        s.skipped = 1;
        s.step = lt_optim_steps_done(t->opt);
    }
    if (stats) *stats = s;
    return LT_OK;
}

/* ---------------------------------------------------------------- LoRA */

static lt_status lora_spec_of(const lt_config *c, const lt_peft_config *cfg, lt_lora_spec *spec, lt_err *err) {
    if (cfg->r <= 0) return lt_fail(err, LT_ERR_INVALID, "LoRA: rank %d must be positive", cfg->r);
    if (!cfg->targets || (cfg->targets & ~LT_LORA_ALL_TARGETS))
        return lt_fail(err, LT_ERR_INVALID, "LoRA: no (or unknown) target modules");
    if (!(cfg->dropout >= 0 && cfg->dropout < 1))
        return lt_fail(err, LT_ERR_INVALID, "LoRA: dropout %g must be in [0, 1)", cfg->dropout);
    (void)c;
    memset(spec, 0, sizeof *spec);
    spec->r = cfg->r;
    spec->scale = (float)lt_lora_scale(cfg->alpha, cfg->r, cfg->rslora);
    spec->dropout = (float)cfg->dropout;
    spec->targets = cfg->targets;
    return LT_OK;
}

lt_status lt_trainer_add_lora(lt_model *m, const lt_peft_config *cfg, lt_rng *rng, lt_err *err) {
    const lt_config *c = lt_model_config(m);
    lt_lora_spec spec;
    lt_status st = lora_spec_of(c, cfg, &spec, err);
    if (st || (st = lt_model_add_lora(m, &spec, err))) return st;
    lt_backend *be = lt_model_backend(m);
    for (int l = 0; l < c->num_layers; l++) {
        for (int t = 0; t < LT_LORA_NTARGETS; t++) {
            if (!(cfg->targets & (1u << t))) continue;
            int in, outf;
            lt_lora_target_dims(c, t, &in, &outf);
            char name[160];
            lt_lora_peft_name(name, sizeof name, l, t, 0);
            lt_param *A = lt_model_find_param(m, name);
            if (!A) return lt_fail(err, LT_ERR_INVALID, "LoRA: the model has no parameter '%s'", name);
            float *host = malloc((size_t)cfg->r * in * sizeof *host);
            if (!host) return lt_fail(err, LT_ERR_NOMEM, "LoRA: out of memory");
            lt_lora_init_A(host, cfg->r, in, rng);
            st = be->upload_f32(be, A->data, LT_F32, host, (size_t)cfg->r * in, err);
            free(host);
            if (st) return lt_wrap(err, st, "LoRA: '%s'", name);
        }
    }
    return be->sync(be, err);
}

lt_status lt_trainer_load_adapter(lt_model *m, const char *dir, lt_peft_config *cfg, lt_err *err) {
    lt_peft_adapter *a = NULL;
    lt_status st = lt_peft_load(dir, &a, err);
    if (st) return lt_wrap(err, st, "adapter '%s'", dir);
    const lt_config *c = lt_model_config(m);
    if ((st = lt_peft_check(a, c, err))) {
        lt_wrap(err, st, "adapter '%s'", dir);
        goto done;
    }
    *cfg = a->cfg;
    lt_lora_spec spec;
    if ((st = lora_spec_of(c, cfg, &spec, err)) || (st = lt_model_add_lora(m, &spec, err))) goto done;
    lt_backend *be = lt_model_backend(m);
    for (size_t i = 0; i < a->n; i++) {
        const lt_peft_tensor *pt = &a->t[i];
        for (int isB = 0; isB < 2; isB++) {
            char name[160];
            lt_lora_peft_name(name, sizeof name, pt->layer, pt->target, isB);
            lt_param *p = lt_model_find_param(m, name);
            size_t n = (size_t)cfg->r * (isB ? pt->out : pt->in);
            if (!p || p->numel != n) {
                st = lt_fail(err, LT_ERR_FORMAT, "adapter '%s': tensor '%s' does not fit the model", dir, name);
                goto done;
            }
            if ((st = be->upload_f32(be, p->data, LT_F32, isB ? pt->B : pt->A, n, err))) goto done;
        }
    }
    st = be->sync(be, err);
done:
    lt_peft_free(a);
    return st;
}

lt_status lt_trainer_export_adapter(lt_model *m, const lt_peft_config *cfg, const char *out_dir, lt_err *err) {
    const lt_config *c = lt_model_config(m);
    lt_backend *be = lt_model_backend(m);
    size_t cap = (size_t)c->num_layers * LT_LORA_NTARGETS, n = 0;
    lt_peft_tensor *ts = calloc(cap, sizeof *ts);
    if (!ts) return lt_fail(err, LT_ERR_NOMEM, "export: out of memory");
    lt_status st = LT_OK;
    for (int l = 0; l < c->num_layers && !st; l++) {
        for (int t = 0; t < LT_LORA_NTARGETS && !st; t++) {
            if (!(cfg->targets & (1u << t))) continue;
            lt_peft_tensor *pt = &ts[n++];
            pt->layer = l;
            pt->target = t;
            lt_lora_target_dims(c, t, &pt->in, &pt->out);
            for (int isB = 0; isB < 2 && !st; isB++) {
                char name[160];
                lt_lora_peft_name(name, sizeof name, l, t, isB);
                lt_param *p = lt_model_find_param(m, name);
                size_t cnt = (size_t)cfg->r * (isB ? pt->out : pt->in);
                float *h = malloc(cnt * sizeof *h);
                if (!p || !h) {
                    free(h);
                    st = lt_fail(err, LT_ERR_INVALID, "export: no LoRA parameter '%s'", name);
                    break;
                }
                if (isB) pt->B = h;
                else pt->A = h;
                st = be->download_f32(be, h, p->data, LT_F32, cnt, err);
            }
        }
    }
    if (!st) st = be->sync(be, err);
    if (!st) st = lt_peft_export(out_dir, cfg, ts, n, err);
    for (size_t i = 0; i < n; i++) {
        free((void *)ts[i].A);
        free((void *)ts[i].B);
    }
    free(ts);
    return st;
}
