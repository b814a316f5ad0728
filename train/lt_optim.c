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

int lt_optim_decay_default(const char *name, int ndim, int decay_embeddings) {
    if (ndim < 2) return 0; /* biases, norm weights */
    if (!decay_embeddings && lt_str_ends_with(name, "embed_tokens.weight")) return 0;
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
    float *grad;           /* the gradient of [off, off + len) (len elements) */
    float *m, *v, *master; /* backend memory owned by the optimizer, len elements each */
    int decay;
    size_t flat;     /* offset in the flattened trainable vector */
    size_t off, len; /* this rank's part of the tensor (ZeRO-1; else 0, n) */
    size_t *counts;  /* ZeRO-1: (world) every rank's part of this tensor, for all_gather */
    size_t *seg;     /* lt_optim_add_rows: (2 * nseg) runs [start, start + len) of elements (of the whole
                        tensor) that train, inside [off, off + len) (ZeRO: the runs cut to this rank's part,
                        possibly none); m, v, master hold them back to back. NULL: the state covers
                        [off, off + len) */
    size_t nseg;
    int part;        /* ZeRO-3: param holds this rank's part only ([off, off + len) of the tensor) */
    int ready;       /* m, v (and master) allocated: at lt_optim_distribute (the part) or first use (whole) */
} opt_tensor;

struct lt_optim {
    lt_backend *be;
    lt_optim_cfg cfg;
    opt_tensor *t;
    size_t n, cap;
    lt_adamw_tensor *desc; /* rebuilt per step */
    size_t desc_cap;       /* its length: tensors plus the extra runs of row subsets */
    int64_t steps_done;
    /* lt_optim_distribute */
    lt_comm *comm;          /* NULL: per-tensor gradients, nothing distributed */
    int zero;               /* 1: ZeRO-1 sharded state */
    size_t numel;           /* flattened length */
    size_t granule, units;  /* norm chunks / shard units */
    size_t unit0, nunits;   /* this rank's units (ZeRO-1), else 0, units */
    size_t *unit_counts;    /* (world) units per rank */
    double *partials;       /* (units) sum of squares per unit */
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
        free(t->counts);
        free(t->seg);
    }
    free(o->t);
    free(o->desc);
    free(o->unit_counts);
    free(o->partials);
    free(o);
}

/* a zeroed f32 buffer of len elements (backend memory) */
static lt_status alloc_state(lt_backend *be, float **p, size_t len, lt_err *err) {
    *p = NULL;
    size_t bytes = (len ? len : 1) * sizeof(float);
    lt_status st = be->alloc(be, bytes, (void **)p, err);
    if (!st) be->zero(be, *p, bytes);
    return st;
}

/* the elements of tensor t's state: its runs (row subset) or its part */
static size_t state_len(const opt_tensor *t) {
    if (!t->seg) return t->len;
    size_t n = 0;
    for (size_t k = 0; k < t->nseg; k++) n += t->seg[2 * k + 1];
    return n;
}

/* rows (sorted, distinct; NULL: the whole tensor) -> runs of whole rows of `cols` elements */
static lt_status row_runs(const int32_t *rows, size_t nrows, int64_t nr, size_t cols, size_t **seg, size_t *nseg,
                          lt_err *err) {
    *seg = NULL;
    *nseg = 0;
    if (!rows) return LT_OK;
    size_t *s = malloc(2 * (nrows ? nrows : 1) * sizeof *s), k = 0;
    if (!s) return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
    for (size_t i = 0; i < nrows; i++) {
        if (rows[i] < 0 || rows[i] >= nr || (i && rows[i] <= rows[i - 1])) {
            free(s);
            return lt_fail(err, LT_ERR_INVALID, "optimizer: row %d of %lld is out of order or out of range",
                           (int)rows[i], (long long)nr);
        }
        if (k && (size_t)rows[i] * cols == s[2 * (k - 1)] + s[2 * (k - 1) + 1]) {
            s[2 * (k - 1) + 1] += cols;
        } else {
            s[2 * k] = (size_t)rows[i] * cols;
            s[2 * k + 1] = cols;
            k++;
        }
    }
    *seg = s;
    *nseg = k;
    return LT_OK;
}

/* cut the runs of t to its part [off, off + len) (ZeRO): at most as many runs, possibly none */
static void runs_to_part(opt_tensor *t) {
    size_t k = 0;
    for (size_t j = 0; j < t->nseg; j++) {
        size_t r0 = t->seg[2 * j], r1 = r0 + t->seg[2 * j + 1];
        size_t x = r0 > t->off ? r0 : t->off, y = r1 < t->off + t->len ? r1 : t->off + t->len;
        if (y <= x) continue;
        t->seg[2 * k] = x;
        t->seg[2 * k + 1] = y - x;
        k++;
    }
    t->nseg = k;
}

/* t's state buffer dst (NULL: nothing) from host, which holds the tensor's elements from `base` on:
 * a row subset's runs, else the part [off, off + len) */
static lt_status put_state(lt_backend *be, const opt_tensor *t, float *dst, const float *host, size_t base,
                           lt_err *err) {
    if (!dst) return LT_OK;
    if (!t->seg) return t->len ? be->upload_f32(be, dst, LT_F32, host + (t->off - base), t->len, err) : LT_OK;
    lt_status st = LT_OK;
    for (size_t k = 0, c = 0; !st && k < t->nseg; c += t->seg[2 * k + 1], k++)
        st = be->upload_f32(be, dst + c, LT_F32, host + (t->seg[2 * k] - base), t->seg[2 * k + 1], err);
    return st;
}

/* whole state for tensor t at its first use (not distributed, or ZeRO-0): m = v = 0 and, for a
 * 16-bit parameter, master = its f32 values (of the runs), staged through the host */
static lt_status tensor_ready(lt_optim *o, opt_tensor *t, lt_err *err) {
    if (t->ready) return LT_OK;
    lt_backend *be = o->be;
    if (!t->param) return lt_fail(err, LT_ERR_INVALID, "optimizer: tensor '%s' has no param buffer", t->name);
    size_t sl = state_len(t);
    lt_status st = alloc_state(be, &t->m, sl, err);
    if (st == LT_OK) st = alloc_state(be, &t->v, sl, err);
    if (st == LT_OK && t->param_dtype != LT_F32) {
        float *host = malloc(t->n * sizeof *host);
        if (!host) st = lt_fail(err, LT_ERR_NOMEM, "optimizer: cannot stage tensor '%s'", t->name);
        if (st == LT_OK) st = alloc_state(be, &t->master, sl, err);
        if (st == LT_OK) st = be->download_f32(be, host, t->param, t->param_dtype, t->n, err);
        if (st == LT_OK) st = be->sync(be, err);
        if (st == LT_OK) st = put_state(be, t, t->master, host, 0, err);
        if (st == LT_OK) st = be->sync(be, err);
        free(host);
    }
    if (st != LT_OK) {
        if (t->m) be->free(be, t->m);
        if (t->v) be->free(be, t->v);
        if (t->master) be->free(be, t->master);
        t->m = t->v = t->master = NULL;
        return lt_wrap(err, st, "optimizer: tensor '%s'", t->name);
    }
    t->ready = 1;
    return LT_OK;
}

/* every tensor's state exists (lazily: see lt_optim_add) */
static lt_status state_ready(lt_optim *o, lt_err *err) {
    for (size_t i = 0; i < o->n; i++) {
        lt_status st = tensor_ready(o, &o->t[i], err);
        if (st) return st;
    }
    return LT_OK;
}

static lt_status add_tensor(lt_optim *o, const char *name, int ndim, const int64_t *shape, void *param,
                            lt_dtype param_dtype, float *grad, int decay, const int32_t *rows, size_t nrows,
                            lt_err *err) {
    if (ndim < 1 || ndim > 2) return lt_fail(err, LT_ERR_INVALID, "optimizer: tensor '%s' has rank %d (1 or 2)", name, ndim);
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->t[i].name, name)) return lt_fail(err, LT_ERR_INVALID, "optimizer: tensor '%s' added twice", name);
    size_t n = 1, bytes;
    for (int d = 0; d < ndim; d++)
        if (shape[d] <= 0 || !lt_mul_ok(n, (size_t)shape[d], &n))
            return lt_fail(err, LT_ERR_INVALID, "optimizer: tensor '%s' has a bad shape", name);
    if (!lt_mul_ok(n, sizeof(float), &bytes)) return lt_fail(err, LT_ERR_NOMEM, "optimizer: tensor '%s' too large", name);
    if (rows && (ndim != 2 || decay))
        return lt_fail(err, LT_ERR_INVALID, "optimizer: tensor '%s': a row subset needs a matrix without weight decay "
                                            "(the other rows must not change)", name);
    opt_tensor t = {0};
    lt_status st = row_runs(rows, nrows, shape[0], (size_t)(ndim > 1 ? shape[1] : 1), &t.seg, &t.nseg, err);
    if (st) return lt_wrap(err, st, "optimizer: tensor '%s'", name);
    size_t need = o->n + 1 + (t.nseg ? t.nseg - 1 : 0);
    for (size_t i = 0; i < o->n; i++) need += o->t[i].nseg ? o->t[i].nseg - 1 : 0;
    if (o->n == o->cap || need > o->desc_cap) {
        size_t cap = o->n == o->cap ? (o->cap ? 2 * o->cap : 64) : o->cap;
        opt_tensor *tt = realloc(o->t, cap * sizeof *tt);
        if (tt) o->t = tt;
        size_t dcap = need > cap ? need : cap;
        lt_adamw_tensor *d = tt ? realloc(o->desc, dcap * sizeof *d) : NULL;
        if (!d) {
            free(t.seg);
            return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
        }
        o->desc = d;
        o->cap = cap;
        o->desc_cap = dcap;
    }
    t.name = strdup(name);
    if (!t.name) {
        free(t.seg);
        return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
    }
    t.ndim = ndim;
    for (int d = 0; d < ndim; d++) t.shape[d] = shape[d];
    t.n = n;
    t.param = param;
    t.param_dtype = param_dtype;
    t.grad = grad;
    t.decay = decay ? 1 : 0;
    t.off = 0;
    t.len = n;
    o->t[o->n++] = t;
    return LT_OK;
}

lt_status lt_optim_add(lt_optim *o, const char *name, int ndim, const int64_t *shape, void *param,
                       lt_dtype param_dtype, float *grad, int decay, lt_err *err) {
    return add_tensor(o, name, ndim, shape, param, param_dtype, grad, decay, NULL, 0, err);
}

lt_status lt_optim_add_rows(lt_optim *o, const char *name, const int64_t shape[2], void *param, lt_dtype param_dtype,
                            float *grad, const int32_t *rows, size_t nrows, lt_err *err) {
    if (!rows || !nrows) return lt_fail(err, LT_ERR_INVALID, "optimizer: tensor '%s': no rows given", name);
    return add_tensor(o, name, 2, shape, param, param_dtype, grad, 0, rows, nrows, err);
}

size_t lt_optim_state_numel(const lt_optim *o) {
    size_t n = 0;
    for (size_t i = 0; i < o->n; i++) n += state_len(&o->t[i]);
    return n;
}

size_t lt_optim_count(const lt_optim *o) { return o->n; }
const char *lt_optim_name(const lt_optim *o, size_t i) { return i < o->n ? o->t[i].name : NULL; }
int lt_optim_decays(const lt_optim *o, size_t i) { return i < o->n ? o->t[i].decay : 0; }
const lt_optim_cfg *lt_optim_config(const lt_optim *o) { return &o->cfg; }
void lt_optim_set_schedule(lt_optim *o, const lt_schedule *s) { o->cfg.sched = *s; }
int64_t lt_optim_steps_done(const lt_optim *o) { return o->steps_done; }
void lt_optim_set_steps_done(lt_optim *o, int64_t step) { o->steps_done = step; }

/* ---- distribution (data parallel, ZeRO-1) ---- */

size_t lt_optim_granule(size_t numel) {
    size_t g = 256;
    while (numel / g > 4096) g *= 2;
    return g;
}

size_t lt_optim_numel(const lt_optim *o) {
    size_t n = 0;
    for (size_t i = 0; i < o->n; i++) n += o->t[i].n;
    return n;
}

void lt_optim_flat_shard(const lt_optim *o, int rank, int world, size_t *start, size_t *len) {
    size_t n = lt_optim_numel(o), g = lt_optim_granule(n), units = (n + g - 1) / g, u0, ul;
    lt_comm_shard(units, rank, world, &u0, &ul);
    size_t s0 = u0 * g, s1 = (u0 + ul) * g;
    if (s0 > n) s0 = n;
    if (s1 > n) s1 = n;
    *start = s0;
    *len = s1 - s0;
}

size_t lt_optim_flat_offset(const lt_optim *o, size_t i) { return i < o->n ? o->t[i].flat : 0; }

lt_status lt_optim_distribute(lt_optim *o, lt_comm *c, int zero, float *grad, lt_err *err) {
    lt_backend *be = o->be;
    if (!c) return lt_fail(err, LT_ERR_INVALID, "optimizer: distribute without a communicator");
    if (o->comm) return lt_fail(err, LT_ERR_INVALID, "optimizer: already distributed");
    o->comm = c;
    o->zero = zero ? 1 : 0;
    o->numel = lt_optim_numel(o);
    o->granule = lt_optim_granule(o->numel);
    o->units = (o->numel + o->granule - 1) / o->granule;
    o->unit_counts = calloc((size_t)c->world, sizeof *o->unit_counts);
    o->partials = calloc(o->units ? o->units : 1, sizeof *o->partials);
    if (!o->unit_counts || !o->partials) return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
    for (int r = 0; r < c->world; r++) {
        size_t u0, ul;
        lt_comm_shard(o->units, r, c->world, &u0, &ul);
        o->unit_counts[r] = o->zero ? ul : (r == 0 ? o->units : 0);
        if (r == c->rank) {
            o->unit0 = o->zero ? u0 : 0;
            o->nunits = o->zero ? ul : o->units;
        }
    }
    size_t flat = 0, s0 = 0, sl = o->numel;
    if (o->zero) lt_optim_flat_shard(o, c->rank, c->world, &s0, &sl);
    for (size_t i = 0; i < o->n; i++) {
        opt_tensor *t = &o->t[i];
        t->flat = flat;
        flat += t->n;
        if (!o->zero) { /* every rank updates the whole tensor: its whole state, now */
            t->grad = grad + t->flat;
            lt_status st = tensor_ready(o, t, err);
            if (st) return st;
            continue;
        }
        /* this rank's part of the tensor: [s0, s0+sl) intersected with [flat, flat+n) */
        size_t a = t->flat > s0 ? t->flat : s0, b = t->flat + t->n < s0 + sl ? t->flat + t->n : s0 + sl;
        t->off = b > a ? a - t->flat : 0;
        t->len = b > a ? b - a : 0;
        t->grad = grad + (b > a ? a - s0 : 0);
        t->counts = calloc((size_t)c->world, sizeof *t->counts);
        if (!t->counts) return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
        for (int r = 0; r < c->world; r++) {
            size_t r0, rl;
            lt_optim_flat_shard(o, r, c->world, &r0, &rl);
            size_t x = t->flat > r0 ? t->flat : r0, y = t->flat + t->n < r0 + rl ? t->flat + t->n : r0 + rl;
            t->counts[r] = y > x ? y - x : 0;
        }
        /* state for the part only, never the whole tensor's: m = v = 0, master = the part of the
         * weights -- of the whole master when one exists already (used before distribute), else of the
         * parameter; a row subset keeps state for its runs inside the part only (none when the part
         * holds none of its rows; before the first step its master weights are the parameter's
         * values); no parameter yet (ZeRO-3 over a deferred model): lt_optim_set_param_part fills it.
         * Staged through a host buffer of the part's size. */
        int rows = t->seg != NULL;
        if (rows) runs_to_part(t);
        size_t sl_t = state_len(t);
        float *whole = t->master; /* a ready tensor's master (NULL: none) */
        if (t->m) be->free(be, t->m);
        if (t->v) be->free(be, t->v);
        t->m = t->v = t->master = NULL;
        lt_status st = alloc_state(be, &t->m, sl_t, err);
        if (!st) st = alloc_state(be, &t->v, sl_t, err);
        if (!st && t->param_dtype != LT_F32) st = alloc_state(be, &t->master, sl_t, err);
        if (!st && t->master && sl_t && (t->param || (whole && !rows))) {
            float *host = malloc(t->len * sizeof *host);
            if (!host) st = lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
            else if (whole && !rows) st = be->download_f32(be, host, whole + t->off, LT_F32, t->len, err);
            else st = be->download_f32(be, host, (const char *)t->param + t->off * lt_dtype_size(t->param_dtype),
                                       t->param_dtype, t->len, err);
            if (!st) st = be->sync(be, err);
            if (!st) st = put_state(be, t, t->master, host, t->off, err);
            if (!st) st = be->sync(be, err);
            free(host);
        }
        if (whole) be->free(be, whole);
        t->ready = 1;
        if (st) return lt_wrap(err, st, "optimizer: shard of '%s'", t->name);
    }
    return be->sync(be, err);
}

lt_comm *lt_optim_comm(const lt_optim *o) { return o->comm; }

lt_status lt_optim_set_param_part(lt_optim *o, size_t i, void *part, lt_err *err) {
    if (i >= o->n || !o->zero)
        return lt_fail(err, LT_ERR_INVALID, "optimizer: a parameter part for tensor %zu needs ZeRO after distribute", i);
    opt_tensor *t = &o->t[i];
    t->param = part;
    t->part = 1;
    if (!t->master || !state_len(t)) return LT_OK;
    /* master = the part's f32 values (a part-sized host round trip; a row subset: its runs) */
    lt_backend *be = o->be;
    float *host = malloc(t->len * sizeof *host);
    if (!host) return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
    lt_status st = be->download_f32(be, host, part, t->param_dtype, t->len, err);
    if (!st) st = be->sync(be, err);
    if (!st) st = put_state(be, t, t->master, host, t->off, err);
    if (!st) st = be->sync(be, err);
    free(host);
    return st ? lt_wrap(err, st, "optimizer: master weights of '%s'", t->name) : LT_OK;
}

size_t lt_optim_state_bytes(const lt_optim *o) {
    size_t b = 0;
    for (size_t i = 0; i < o->n; i++) /* allocated or still to be (lazily) */
        b += state_len(&o->t[i]) * sizeof(float) * (o->t[i].param_dtype != LT_F32 ? 3 : 2);
    return b;
}
int lt_optim_zero(const lt_optim *o) { return o->zero; }

/* the tensor holding flat element e */
static const char *tensor_at(const lt_optim *o, size_t e) {
    for (size_t i = 0; i < o->n; i++)
        if (e < o->t[i].flat + o->t[i].n) return o->t[i].name;
    return o->n ? o->t[o->n - 1].name : "?";
}

lt_status lt_optim_grad_norm(lt_optim *o, double *norm, lt_err *err) {
    double total = 0.0;
    const char *bad = NULL;
    if (o->comm) {
        /* sum of squares per unit of the flattened gradient (this rank's units
         * under ZeRO-1, gathered), folded in unit order: the same bits for
         * every world size and sharding */
        const float *g0 = o->zero ? NULL : (o->n ? o->t[0].grad : NULL);
        size_t s0 = 0, sl = 0;
        if (o->zero) {
            lt_optim_flat_shard(o, o->comm->rank, o->comm->world, &s0, &sl);
            for (size_t i = 0; i < o->n && !g0; i++)
                if (o->t[i].len) g0 = o->t[i].grad - (o->t[i].flat + o->t[i].off - s0);
        }
        /* this rank's units in one op (one host synchronisation on a GPU):
         * partials[u] = be->sumsq of unit u, the same bits */
        if (o->nunits) {
            size_t e0 = o->unit0 * o->granule, e1 = (o->unit0 + o->nunits) * o->granule;
            if (e1 > o->numel) e1 = o->numel;
            o->be->sumsq_units(o->be, g0 + (e0 - s0), e1 - e0, o->granule, o->partials + o->unit0);
        }
        lt_status st = o->be->sync(o->be, err);
        if (st != LT_OK) return lt_wrap(err, st, "optimizer: gradient norm");
        if (o->zero && o->comm->world > 1 &&
            (st = o->comm->all_gather(o->comm, o->partials, o->units, o->unit_counts, LT_F64, err)))
            return lt_wrap(err, st, "optimizer: gradient norm (gathering the partial sums)");
        for (size_t u = 0; u < o->units; u++) {
            if (!isfinite(o->partials[u]) && !bad) bad = tensor_at(o, u * o->granule);
            total += o->partials[u];
        }
        *norm = sqrt(total);
    } else {
        for (size_t i = 0; i < o->n; i++) {
            double s = o->be->sumsq(o->be, o->t[i].grad, o->t[i].n);
            if (!isfinite(s) && !bad) bad = o->t[i].name;
            total += s;
        }
        *norm = sqrt(total);
        lt_status st = o->be->sync(o->be, err);
        if (st != LT_OK) return lt_wrap(err, st, "optimizer: gradient norm");
    }
    if (bad)
        return lt_fail(err, LT_ERR_NONFINITE, "optimizer: the gradient of '%s' is not finite (global norm %g)", bad,
                       *norm);
    return LT_OK;
}

/* ZeRO-1: every rank's updated part of every tensor to every rank */
static lt_status gather_params(lt_optim *o, lt_err *err) {
    lt_comm *c = o->comm;
    for (size_t i = 0; i < o->n; i++) {
        opt_tensor *t = &o->t[i];
        if (t->part) continue; /* ZeRO-3: gathered when the model needs it */
        lt_status st = c->all_gather(c, t->param, t->n, t->counts, t->param_dtype, err);
        if (st) return lt_wrap(err, st, "optimizer: gathering '%s'", t->name);
    }
    return LT_OK;
}

lt_status lt_optim_step(lt_optim *o, lt_optim_stats *stats, lt_err *err) {
    double norm = 0.0;
    for (size_t i = 0; i < o->n; i++)
        if (!o->t[i].grad && o->t[i].len)
            return lt_fail(err, LT_ERR_INVALID, "optimizer: tensor '%s' has no gradient (distribute first)", o->t[i].name);
    lt_status st = state_ready(o, err);
    if (st) return st;
    st = lt_optim_grad_norm(o, &norm, err);
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
    int nd = 0;
    for (size_t i = 0; i < o->n; i++) {
        const opt_tensor *t = &o->t[i];
        if (!t->len) continue; /* ZeRO-1: no part of this tensor here */
        for (size_t k = 0, c = 0; t->seg && k < t->nseg; k++) { /* a row subset: its runs (in this part) */
            size_t s0 = t->seg[2 * k], len = t->seg[2 * k + 1];
            o->desc[nd++] = (lt_adamw_tensor){.param = (char *)t->param + (s0 - (t->part ? t->off : 0)) *
                                                                              lt_dtype_size(t->param_dtype),
                                              .param_dtype = t->param_dtype,
                                              .master = t->master ? t->master + c : NULL,
                                              .grad = t->grad + (s0 - t->off), /* grad: [off, off + len) */
                                              .m = t->m + c,
                                              .v = t->v + c,
                                              .n = len,
                                              .weight_decay = 0.0f};
            c += len;
        }
        if (t->seg) continue;
        o->desc[nd++] = (lt_adamw_tensor){.param = (char *)t->param + (t->part ? 0 : t->off) * lt_dtype_size(t->param_dtype),
                                          .param_dtype = t->param_dtype,
                                          .master = t->master,
                                          .grad = t->grad,
                                          .m = t->m,
                                          .v = t->v,
                                          .n = t->len,
                                          .weight_decay = t->decay ? (float)o->cfg.weight_decay : 0.0f};
    }
    if (o->steps_done + 1 > INT32_MAX) return lt_fail(err, LT_ERR_RANGE, "optimizer: step count overflows");
    if (nd)
        o->be->adamw(o->be, o->desc, nd, (float)lr, (float)o->cfg.beta1, (float)o->cfg.beta2, (float)o->cfg.eps,
                     (int)(o->steps_done + 1), (float)scale);
    st = o->be->sync(o->be, err);
    if (st != LT_OK) return lt_wrap(err, st, "optimizer: AdamW step %lld", (long long)(o->steps_done + 1));
    if (o->zero && o->comm->world > 1 && (st = gather_params(o, err)) != LT_OK) return st;
    o->steps_done++;
    if (stats) {
        stats->step = o->steps_done;
        stats->lr = lr;
        stats->clip_scale = scale;
    }
    return LT_OK;
}

/* which: 0 = f32 weights (master when present), 1 = exp_avg, 2 = exp_avg_sq.
 * The whole tensor to host (n floats); under ZeRO-1 with more than one rank
 * the parts are gathered (collective). */
static lt_status get_full(lt_optim *o, size_t i, int which, float *host, lt_err *err) {
    opt_tensor *t = &o->t[i];
    lt_backend *be = o->be;
    lt_status rs = tensor_ready(o, t, err);
    if (rs) return rs;
    if (which == 0 && !t->master && !t->part) return be->download_f32(be, host, t->param, t->param_dtype, t->n, err);
    /* this rank's part (a row subset: its runs, elsewhere the weights as they are and a state of
     * zeros; ZeRO-3 without master weights: the part of the parameter itself), then the others' */
    lt_status st = t->len ? lt_optim_part_get(o, i, which, t->off, t->off + t->len, host + t->off, err) : LT_OK;
    if (!st) st = be->sync(be, err);
    if (!st && o->zero && o->comm->world > 1) st = o->comm->all_gather(o->comm, host, t->n, t->counts, LT_F32, err);
    return st;
}

lt_status lt_optim_get_param(lt_optim *o, size_t i, float *host, lt_err *err) {
    if (i >= o->n) return lt_fail(err, LT_ERR_RANGE, "optimizer: tensor index %zu of %zu", i, o->n);
    return get_full(o, i, 0, host, err);
}

lt_status lt_optim_set_param(lt_optim *o, size_t i, const float *host, lt_err *err) {
    if (i >= o->n) return lt_fail(err, LT_ERR_RANGE, "optimizer: tensor index %zu of %zu", i, o->n);
    opt_tensor *t = &o->t[i];
    lt_status st = tensor_ready(o, t, err);
    if (st) return st;
    st = put_state(o->be, t, t->master, host, 0, err); /* the whole tensor's values: this rank's state of them */
    if (st == LT_OK && t->part && t->len) st = o->be->upload_f32(o->be, t->param, t->param_dtype, host + t->off, t->len, err);
    else if (st == LT_OK && !t->part) st = o->be->upload_f32(o->be, t->param, t->param_dtype, host, t->n, err);
    return st;
}

/* a host buffer for the largest tensor: the gathers of a rank that does not keep them */
static float *scratch_for(const lt_optim *o) {
    size_t mx = 1;
    for (size_t i = 0; i < o->n; i++)
        if (o->t[i].n > mx) mx = o->t[i].n;
    return malloc(mx * sizeof(float));
}

lt_status lt_optim_params_to_tlist(lt_optim *o, lt_tlist *out, lt_err *err) {
    float *scratch = out ? NULL : scratch_for(o);
    if (!out && !scratch) return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
    lt_status st = LT_OK;
    for (size_t i = 0; i < o->n && !st; i++) {
        opt_tensor *t = &o->t[i];
        if (!out && !((t->master || t->part) && o->zero)) continue; /* nothing collective for this one */
        float *dst = out ? lt_tlist_new(out, t->name, LT_F32, t->ndim, t->shape, err) : scratch;
        if (!dst) {
            st = LT_ERR_INVALID;
            break;
        }
        st = lt_optim_get_param(o, i, dst, err);
        if (st != LT_OK) lt_wrap(err, st, "tensor '%s'", t->name);
    }
    free(scratch);
    return st;
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
    float *scratch = out ? NULL : scratch_for(o);
    if (!out && !scratch) return lt_fail(err, LT_ERR_NOMEM, "optimizer: out of memory");
    lt_status st = LT_OK;
    for (size_t i = 0; i < o->n && !st; i++) {
        opt_tensor *t = &o->t[i];
        if (!out && !o->zero) break; /* nothing collective */
        for (int k = 0; k < 2 && !st; k++) {
            snprintf(name, sizeof name, "%s.%s", t->name, k ? "exp_avg_sq" : "exp_avg");
            float *dst = out ? lt_tlist_new(out, name, LT_F32, t->ndim, t->shape, err) : scratch;
            if (!dst) {
                st = LT_ERR_INVALID;
                break;
            }
            st = get_full(o, i, k + 1, dst, err);
            if (st != LT_OK) lt_wrap(err, st, "optimizer state '%s'", name);
        }
    }
    free(scratch);
    return st;
}

lt_status lt_optim_state_load(lt_optim *o, const lt_st_file *f, lt_err *err) {
    char name[512];
    for (size_t i = 0; i < o->n; i++) {
        opt_tensor *t = &o->t[i];
        lt_status rs = tensor_ready(o, t, err);
        if (rs) return rs;
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "%s.%s", t->name, k ? "exp_avg_sq" : "exp_avg");
            float *host;
            lt_status st = load_f32(f, name, t, &host, err);
            /* this rank's part of the whole tensor (ZeRO-1 re-shards any layout) */
            if (st == LT_OK) st = put_state(o->be, t, k ? t->v : t->m, host, 0, err);
            free(host);
            if (st != LT_OK) return lt_wrap(err, st, "optimizer state");
        }
    }
    return LT_OK;
}

/* ---- what this rank holds (sharded checkpoints, lt_ckpt.h) ---- */
lt_backend *lt_optim_backend(const lt_optim *o) { return o->be; }

void lt_optim_part_of(lt_optim *o, size_t i, lt_optim_part *p) {
    opt_tensor *t = &o->t[i];
    lt_err e;
    (void)tensor_ready(o, t, &e); /* on failure the buffers stay NULL: part_get / part_put report it */
    *p = (lt_optim_part){.name = t->name, .ndim = t->ndim, .shape = {t->shape[0], t->ndim > 1 ? t->shape[1] : 0},
                         .n = t->n, .off = t->off, .len = t->len, .master = t->master, .m = t->m, .v = t->v,
                         .param = t->param, .param_dtype = t->param_dtype, .param_off = t->part ? t->off : 0,
                         .param_len = t->part ? t->len : t->n}; /* ZeRO-3: the parameter is the part only */
}

/* the state buffer of `which` (master may be NULL) */
static float *state_of(const opt_tensor *t, int which) { return which == 0 ? t->master : which == 1 ? t->m : t->v; }

lt_status lt_optim_part_get(lt_optim *o, size_t i, int which, size_t a, size_t b, float *host, lt_err *err) {
    const opt_tensor *t = &o->t[i];
    lt_backend *be = o->be;
    lt_status rs = tensor_ready(o, &o->t[i], err);
    if (rs) return rs;
    float *src = state_of(t, which);
    if (a > b || a < t->off || b > t->off + t->len)
        return lt_fail(err, LT_ERR_RANGE, "optimizer: '%s': elements [%zu, %zu) are not held here", t->name, a, b);
    if (!t->seg) {
        if (src) return be->download_f32(be, host, src + (a - t->off), LT_F32, b - a, err);
        if (which) return lt_fail(err, LT_ERR_INVALID, "optimizer: '%s' has no state %d", t->name, which);
        return be->download_f32(be, host, (const char *)t->param + (a - (t->part ? t->off : 0)) * lt_dtype_size(t->param_dtype),
                                t->param_dtype, b - a, err);
    }
    lt_status st = LT_OK;
    if (which) memset(host, 0, (b - a) * sizeof *host);
    else if (!(st = be->download_f32(be, host,
                                     (const char *)t->param + (a - (t->part ? t->off : 0)) * lt_dtype_size(t->param_dtype),
                                     t->param_dtype, b - a, err)))
        st = be->sync(be, err); /* the runs below overwrite parts of it */
    if (!src && which == 0) return st;
    for (size_t k = 0, c = 0; !st && k < t->nseg; c += t->seg[2 * k + 1], k++) {
        size_t r0 = t->seg[2 * k], r1 = r0 + t->seg[2 * k + 1];
        size_t x = r0 > a ? r0 : a, y = r1 < b ? r1 : b;
        if (y > x) st = be->download_f32(be, host + (x - a), src + c + (x - r0), LT_F32, y - x, err);
    }
    return st;
}

lt_status lt_optim_part_put(lt_optim *o, size_t i, int which, size_t a, size_t b, const float *host, lt_err *err) {
    const opt_tensor *t = &o->t[i];
    lt_backend *be = o->be;
    lt_status rs = tensor_ready(o, &o->t[i], err);
    if (rs) return rs;
    float *dst = state_of(t, which);
    if (a > b || a < t->off || b > t->off + t->len)
        return lt_fail(err, LT_ERR_RANGE, "optimizer: '%s': elements [%zu, %zu) are not held here", t->name, a, b);
    if (!dst) return which ? lt_fail(err, LT_ERR_INVALID, "optimizer: '%s' has no state %d", t->name, which) : LT_OK;
    if (!t->seg) return be->upload_f32(be, dst + (a - t->off), LT_F32, host, b - a, err);
    lt_status st = LT_OK;
    for (size_t k = 0, c = 0; !st && k < t->nseg; c += t->seg[2 * k + 1], k++) {
        size_t r0 = t->seg[2 * k], r1 = r0 + t->seg[2 * k + 1];
        size_t x = r0 > a ? r0 : a, y = r1 < b ? r1 : b;
        if (y > x) st = be->upload_f32(be, dst + c + (x - r0), LT_F32, host + (x - a), y - x, err);
    }
    return st;
}
