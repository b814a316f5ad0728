/* lt_optim.c -- learning-rate schedule and AdamW over backend tensors (see lt_optim.h). */
#define _POSIX_C_SOURCE 200809L
#include "lt_optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- schedule ---- */

double lt_lr_factor(const lt_schedule *s, int64_t step) {
    const int64_t W = s->warmup_steps, N = s->total_steps;
    const double r = s->min_lr_ratio;
    if (step < 0) step = 0;
    if (step < W) return (double)step / (double)W;
    int64_t span = N - W > 1 ? N - W : 1;
    double p = (double)(step - W) / (double)span;
    if (p < 0) p = 0;
    if (p > 1) p = 1;
    switch (s->kind) {
    case LT_SCHED_CONSTANT: return 1.0;
    case LT_SCHED_LINEAR: return r + (1.0 - r) * (1.0 - p);
    case LT_SCHED_COSINE: return r + (1.0 - r) * 0.5 * (1.0 + cos(3.14159265358979323846 * p));
    }
    return 1.0;
}

double lt_lr_at(const lt_schedule *s, int64_t step) { return s->lr * lt_lr_factor(s, step); }

static const char *const sched_names[] = {"constant", "linear", "cosine"};

lt_status lt_sched_kind_parse(const char *name, lt_sched_kind *out, lt_err *err) {
    for (int k = 0; k < 3; k++)
        if (name && !strcmp(name, sched_names[k])) {
            *out = (lt_sched_kind)k;
            return LT_OK;
        }
    return lt_fail(err, LT_ERR_INVALID, "unknown schedule '%s' (expected constant, linear or cosine)",
                   name ? name : "(null)");
}

const char *lt_sched_kind_name(lt_sched_kind k) { return (unsigned)k < 3 ? sched_names[k] : "?"; }

/* ---- decay mask ---- */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

int lt_optim_decay_default(const char *name, int ndim, int decay_embeddings) {
    if (ndim < 2) return 0; /* biases, norm weights */
    if (!decay_embeddings && ends_with(name, "embed_tokens.weight")) return 0;
    return 1;
}

/* ---- optimizer ---- */

typedef struct opt_tensor {
    char *name;
    int ndim;
    int64_t shape[2];
    size_t n;
    void *param;
    lt_dtype param_dtype;
    float *grad;
    float *m, *v, *master; /* backend memory owned by the optimizer */
    int decay;
} opt_tensor;

struct lt_optim {
    lt_backend *be;
    lt_optim_cfg cfg;
    opt_tensor *t;
    size_t n, cap;
    lt_adamw_tensor *desc; /* rebuilt per step */
    int64_t steps_done;
};

lt_status lt_optim_create(lt_backend *be, const lt_optim_cfg *cfg, lt_optim **out, lt_err *err) {
    *out = NULL;
    const lt_schedule *s = &cfg->sched;
    if (!(s->lr > 0) || !isfinite(s->lr)) return lt_fail(err, LT_ERR_INVALID, "optimizer: lr %g must be > 0", s->lr);
    if (s->warmup_steps < 0 || s->total_steps < 1)
        return lt_fail(err, LT_ERR_INVALID, "optimizer: warmup_steps %lld must be >= 0 and total_steps %lld >= 1",
                       (long long)s->warmup_steps, (long long)s->total_steps);
    if (!(s->min_lr_ratio >= 0 && s->min_lr_ratio <= 1))
        return lt_fail(err, LT_ERR_INVALID, "optimizer: min_lr_ratio %g must be in [0, 1]", s->min_lr_ratio);
    if (!(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1))
        return lt_fail(err, LT_ERR_INVALID, "optimizer: betas (%g, %g) must be in [0, 1)", cfg->beta1, cfg->beta2);
    if (!(cfg->eps > 0) || !(cfg->weight_decay >= 0) || !(cfg->clip >= 0))
        return lt_fail(err, LT_ERR_INVALID, "optimizer: eps %g must be > 0, weight_decay %g and clip %g >= 0",
                       cfg->eps, cfg->weight_decay, cfg->clip);
    lt_optim *o = calloc(1, sizeof *o);
    if (!o) return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
    o->be = be;
    o->cfg = *cfg;
    *out = o;
    return LT_OK;
}

void lt_optim_free(lt_optim *o) {
    if (!o) return;
    for (size_t i = 0; i < o->n; i++) {
        opt_tensor *t = &o->t[i];
        if (t->m) o->be->free(o->be, t->m);
        if (t->v) o->be->free(o->be, t->v);
        if (t->master) o->be->free(o->be, t->master);
        free(t->name);
    }
    free(o->t);
    free(o->desc);
    free(o);
}

lt_status lt_optim_add(lt_optim *o, const char *name, int ndim, const int64_t *shape, void *param,
                       lt_dtype param_dtype, float *grad, int decay, lt_err *err) {
    lt_backend *be = o->be;
    if (ndim < 1 || ndim > 2) return lt_fail(err, LT_ERR_INVALID, "optimizer: tensor '%s' has rank %d (1 or 2)", name, ndim);
    if (!param || !grad) return lt_fail(err, LT_ERR_INVALID, "optimizer: tensor '%s' has no %s buffer", name, param ? "grad" : "param");
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->t[i].name, name)) return lt_fail(err, LT_ERR_INVALID, "optimizer: tensor '%s' added twice", name);
    size_t n = 1, bytes;
    for (int d = 0; d < ndim; d++)
        if (shape[d] <= 0 || !lt_mul_ok(n, (size_t)shape[d], &n))
            return lt_fail(err, LT_ERR_INVALID, "optimizer: tensor '%s' has a bad shape", name);
    if (!lt_mul_ok(n, sizeof(float), &bytes)) return lt_fail(err, LT_ERR_NOMEM, "optimizer: tensor '%s' too large", name);
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 64;
        opt_tensor *t = realloc(o->t, cap * sizeof *t);
        if (!t) return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
        o->t = t;
        lt_adamw_tensor *d = realloc(o->desc, cap * sizeof *d);
        if (!d) return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
        o->desc = d;
        o->cap = cap;
    }
    opt_tensor t = {0};
    t.name = strdup(name);
    if (!t.name) return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
    t.ndim = ndim;
    for (int d = 0; d < ndim; d++) t.shape[d] = shape[d];
    t.n = n;
    t.param = param;
    t.param_dtype = param_dtype;
    t.grad = grad;
    t.decay = decay ? 1 : 0;
    lt_status st = be->alloc(be, bytes, (void **)&t.m, err);
    if (st == LT_OK) st = be->alloc(be, bytes, (void **)&t.v, err);
    if (st == LT_OK) {
        be->zero(be, t.m, bytes);
        be->zero(be, t.v, bytes);
    }
    if (st == LT_OK && param_dtype != LT_F32) {
        /* master = f32 copy of the current weights, via the host */
        float *host = malloc(bytes);
        if (!host) st = lt_fail(err, LT_ERR_NOMEM, "optimizer: cannot stage tensor '%s'", name);
        if (st == LT_OK) st = be->alloc(be, bytes, (void **)&t.master, err);
        if (st == LT_OK) st = be->download_f32(be, host, param, param_dtype, n, err);
        if (st == LT_OK) st = be->upload_f32(be, t.master, LT_F32, host, n, err);
        free(host);
    }
    if (st != LT_OK) {
        if (t.m) be->free(be, t.m);
        if (t.v) be->free(be, t.v);
        if (t.master) be->free(be, t.master);
        free(t.name);
        return lt_wrap(err, st, "optimizer: tensor '%s'", name);
    }
    o->t[o->n++] = t;
    return LT_OK;
}

size_t lt_optim_count(const lt_optim *o) { return o->n; }
const char *lt_optim_name(const lt_optim *o, size_t i) { return i < o->n ? o->t[i].name : NULL; }
int lt_optim_decays(const lt_optim *o, size_t i) { return i < o->n ? o->t[i].decay : 0; }
const lt_optim_cfg *lt_optim_config(const lt_optim *o) { return &o->cfg; }
void lt_optim_set_schedule(lt_optim *o, const lt_schedule *s) { o->cfg.sched = *s; }
int64_t lt_optim_steps_done(const lt_optim *o) { return o->steps_done; }
void lt_optim_set_steps_done(lt_optim *o, int64_t step) { o->steps_done = step; }

lt_status lt_optim_grad_norm(lt_optim *o, double *norm, lt_err *err) {
    double total = 0.0;
    const char *bad = NULL;
    for (size_t i = 0; i < o->n; i++) {
        double s = o->be->sumsq(o->be, o->t[i].grad, o->t[i].n);
        if (!isfinite(s) && !bad) bad = o->t[i].name;
        total += s;
    }
    *norm = sqrt(total);
    lt_status st = o->be->sync(o->be, err);
    if (st != LT_OK) return lt_wrap(err, st, "optimizer: gradient norm");
    if (bad)
        return lt_fail(err, LT_ERR_NONFINITE, "optimizer: the gradient of '%s' is not finite (global norm %g)", bad,
                       *norm);
    return LT_OK;
}

lt_status lt_optim_step(lt_optim *o, lt_optim_stats *stats, lt_err *err) {
    double norm = 0.0;
    lt_status st = lt_optim_grad_norm(o, &norm, err);
    if (stats) {
        stats->step = o->steps_done;
        stats->grad_norm = norm;
        stats->lr = 0;
        stats->clip_scale = 0;
    }
    if (st != LT_OK) return st;
    double scale = 1.0;
    if (o->cfg.clip > 0) {
        scale = o->cfg.clip / (norm + 1e-6);
        if (scale > 1.0) scale = 1.0;
    }
    const double lr = lt_lr_at(&o->cfg.sched, o->steps_done);
    for (size_t i = 0; i < o->n; i++) {
        const opt_tensor *t = &o->t[i];
        o->desc[i] = (lt_adamw_tensor){.param = t->param,
                                       .param_dtype = t->param_dtype,
                                       .master = t->master,
                                       .grad = t->grad,
                                       .m = t->m,
                                       .v = t->v,
                                       .n = t->n,
                                       .weight_decay = t->decay ? (float)o->cfg.weight_decay : 0.0f};
    }
    if (o->steps_done + 1 > INT32_MAX) return lt_fail(err, LT_ERR_RANGE, "optimizer: step count overflows");
    o->be->adamw(o->be, o->desc, (int)o->n, (float)lr, (float)o->cfg.beta1, (float)o->cfg.beta2, (float)o->cfg.eps,
                 (int)(o->steps_done + 1), (float)scale);
    st = o->be->sync(o->be, err);
    if (st != LT_OK) return lt_wrap(err, st, "optimizer: AdamW step %lld", (long long)(o->steps_done + 1));
    o->steps_done++;
    if (stats) {
        stats->step = o->steps_done;
        stats->lr = lr;
        stats->clip_scale = scale;
    }
    return LT_OK;
}

lt_status lt_optim_get_param(lt_optim *o, size_t i, float *host, lt_err *err) {
    if (i >= o->n) return lt_fail(err, LT_ERR_RANGE, "optimizer: tensor index %zu of %zu", i, o->n);
    opt_tensor *t = &o->t[i];
    if (t->master) return o->be->download_f32(o->be, host, t->master, LT_F32, t->n, err);
    return o->be->download_f32(o->be, host, t->param, t->param_dtype, t->n, err);
}

lt_status lt_optim_set_param(lt_optim *o, size_t i, const float *host, lt_err *err) {
    if (i >= o->n) return lt_fail(err, LT_ERR_RANGE, "optimizer: tensor index %zu of %zu", i, o->n);
    opt_tensor *t = &o->t[i];
    lt_status st = LT_OK;
    if (t->master) st = o->be->upload_f32(o->be, t->master, LT_F32, host, t->n, err);
    if (st == LT_OK) st = o->be->upload_f32(o->be, t->param, t->param_dtype, host, t->n, err);
    return st;
}

lt_status lt_optim_params_to_tlist(lt_optim *o, lt_tlist *out, lt_err *err) {
    for (size_t i = 0; i < o->n; i++) {
        opt_tensor *t = &o->t[i];
        float *dst = lt_tlist_new(out, t->name, LT_F32, t->ndim, t->shape, err);
        if (!dst) return LT_ERR_INVALID;
        lt_status st = lt_optim_get_param(o, i, dst, err);
        if (st != LT_OK) return lt_wrap(err, st, "tensor '%s'", t->name);
    }
    return LT_OK;
}

/* f32 host copy of checkpoint tensor `name`, checked against tensor t's shape */
static lt_status load_f32(const lt_st_file *f, const char *name, const opt_tensor *t, float **out, lt_err *err) {
    *out = NULL;
    const lt_st_tensor *s = lt_st_find(f, name);
    if (!s) return lt_fail(err, LT_ERR_FORMAT, "checkpoint: tensor '%s' is missing", name);
    int same = s->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = s->shape[d] == t->shape[d];
    if (!same)
        return lt_fail(err, LT_ERR_FORMAT, "checkpoint: tensor '%s' has shape [%lld%s%lld] but expected [%lld%s%lld]",
                       name, (long long)(s->ndim ? s->shape[0] : 0), s->ndim > 1 ? ", " : "",
                       (long long)(s->ndim > 1 ? s->shape[1] : 0), (long long)t->shape[0], t->ndim > 1 ? ", " : "",
                       (long long)(t->ndim > 1 ? t->shape[1] : 0));
    float *host = malloc(t->n * sizeof(float));
    if (!host) return lt_fail(err, LT_ERR_NOMEM, "checkpoint: cannot stage '%s'", name);
    lt_status st = lt_st_to_f32(s, host, t->n, err);
    if (st != LT_OK) {
        free(host);
        return st;
    }
    *out = host;
    return LT_OK;
}

lt_status lt_optim_params_load(lt_optim *o, const lt_st_file *f, lt_err *err) {
    for (size_t i = 0; i < o->n; i++) {
        float *host;
        lt_status st = load_f32(f, o->t[i].name, &o->t[i], &host, err);
        if (st == LT_OK) st = lt_optim_set_param(o, i, host, err);
        free(host);
        if (st != LT_OK) return st;
    }
    return LT_OK;
}

lt_status lt_optim_state_to_tlist(lt_optim *o, lt_tlist *out, lt_err *err) {
    char name[512];
    for (size_t i = 0; i < o->n; i++) {
        opt_tensor *t = &o->t[i];
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "%s.%s", t->name, k ? "exp_avg_sq" : "exp_avg");
            float *dst = lt_tlist_new(out, name, LT_F32, t->ndim, t->shape, err);
            if (!dst) return LT_ERR_INVALID;
            lt_status st = o->be->download_f32(o->be, dst, k ? t->v : t->m, LT_F32, t->n, err);
            if (st != LT_OK) return lt_wrap(err, st, "optimizer state '%s'", name);
        }
    }
    return LT_OK;
}

lt_status lt_optim_state_load(lt_optim *o, const lt_st_file *f, lt_err *err) {
    char name[512];
    for (size_t i = 0; i < o->n; i++) {
        opt_tensor *t = &o->t[i];
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "%s.%s", t->name, k ? "exp_avg_sq" : "exp_avg");
            float *host;
            lt_status st = load_f32(f, name, t, &host, err);
            if (st == LT_OK) st = o->be->upload_f32(o->be, k ? t->v : t->m, LT_F32, host, t->n, err);
            free(host);
            if (st != LT_OK) return lt_wrap(err, st, "optimizer state");
        }
    }
    return LT_OK;
}
