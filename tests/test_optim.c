/*
 * test_optim.c -- the learning-rate schedule and the AdamW optimizer
 * (train/lt_optim.c over the CPU backend's sumsq/adamw) against PyTorch:
 * tests/fixtures/optim/ from tools/gen_optim_fixture.py (torch.optim.AdamW,
 * clip_grad_norm_, LambdaLR; transformers' schedule functions).
 *
 * Tolerances: lr factors 1e-12 abs (both are double formulas); global grad
 * norm 1e-6 relative (torch sums f32 per-tensor norms, we sum squares in
 * double); parameters after each step normalized error <= 2e-6 and max
 * relative error <= 1e-5 (f32 arithmetic in a slightly different order);
 * optimizer state after the last step the same.
 *
 * Row subsets (lt_optim_add_rows, `--train-embeddings new`): a (10, 16)
 * matrix whose gradient is zero outside rows {1, 2, 3, 7}, next to a vector,
 * f32 and bf16 weights (master weights), clipping on: the rows' state only
 * gives BITWISE the weights and the saved state (zeros elsewhere) of the full
 * state, also after a save / load round trip of the state; the state holds
 * those rows only; bad row lists are refused. Under ZeRO-1 and ZeRO-3 (each
 * rank simulated alone, 1-4 ranks, parts that cut a row or hold none of the
 * rows): a rank keeps state for the rows inside its part only (0 for a part
 * without them) and its part of the weights and state after 4 steps is
 * bitwise one process's.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_backend.h"
#include "lt_comm.h"
#include "lt_optim.h"
#include "lt_safetensors.h"
#include "lt_test.h"

#define NP 3
static const char *const PN[NP] = {"W", "b", "n"};

static const float *fx(const lt_st_file *f, const char *name) {
    const lt_st_tensor *t = lt_st_find(f, name);
    if (!t || t->dtype != LT_F32) {
        fprintf(stderr, "fixture tensor '%s' missing\n", name);
        exit(1);
    }
    return (const float *)t->data;
}

static double jnum(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(x)) {
        fprintf(stderr, "fixture json: '%s' missing\n", k);
        exit(1);
    }
    return x->valuedouble;
}

static void test_schedules(const cJSON *meta) {
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(meta, "schedules"), *c;
    int ncase = 0;
    cJSON_ArrayForEach(c, cases) {
        lt_schedule s = {0};
        lt_err err;
        LT_CHECK_OK(lt_sched_kind_parse(cJSON_GetObjectItem(c, "schedule")->valuestring, &s.kind, &err), &err);
        s.lr = 1.0;
        s.warmup_steps = (int64_t)jnum(c, "warmup");
        s.total_steps = (int64_t)jnum(c, "total");
        s.min_lr_ratio = jnum(c, "min_lr_ratio");
        const cJSON *f = cJSON_GetObjectItem(c, "factors"), *x;
        int step = 0;
        double maxd = 0;
        cJSON_ArrayForEach(x, f) {
            double d = fabs(lt_lr_factor(&s, step) - x->valuedouble);
            if (d > maxd) maxd = d;
            step++;
        }
        LT_CHECK(step == s.total_steps && maxd < 1e-12, "%s warmup %lld total %lld: max |diff| %g over %d steps",
                 lt_sched_kind_name(s.kind), (long long)s.warmup_steps, (long long)s.total_steps, maxd, step);
        ncase++;
    }
    LT_CHECK(ncase >= 8, "only %d schedule cases", ncase);
    /* linear with a floor (no transformers function for it): ends at min ratio */
    lt_schedule s = {LT_SCHED_LINEAR, 2.0, 2, 12, 0.25};
    LT_CHECK(lt_lr_at(&s, 0) == 0.0 && fabs(lt_lr_at(&s, 1) - 1.0) < 1e-15, "warmup");
    LT_CHECK(fabs(lt_lr_at(&s, 2) - 2.0) < 1e-15 && fabs(lt_lr_at(&s, 7) - 2.0 * (0.25 + 0.75 * 0.5)) < 1e-15,
             "linear mid %g", lt_lr_at(&s, 7));
    LT_CHECK(fabs(lt_lr_at(&s, 12) - 0.5) < 1e-15 && fabs(lt_lr_at(&s, 100) - 0.5) < 1e-15, "linear floor");
    lt_sched_kind k;
    lt_err err;
    LT_CHECK(lt_sched_kind_parse("cosin", &k, &err) == LT_ERR_INVALID && strstr(err.msg, "cosin"), "bogus schedule");
}

typedef struct run {
    lt_backend *be;
    lt_optim *opt;
    void *param[NP];
    float *grad[NP];
    size_t n[NP];
    int64_t shape[NP][2];
    int ndim[NP];
} run;

/* Build the fixture's three tensors (param dtype pdt) and an optimizer. */
static void run_setup(run *r, lt_backend *be, const lt_st_file *f, const cJSON *meta, lt_dtype pdt, double clip) {
    lt_err err;
    memset(r, 0, sizeof *r);
    r->be = be;
    lt_optim_cfg cfg = {
        .sched = {LT_SCHED_COSINE, jnum(meta, "lr"), (int64_t)jnum(meta, "warmup"), (int64_t)jnum(meta, "total"),
                  jnum(meta, "min_lr_ratio")},
        .beta1 = jnum(meta, "beta1"),
        .beta2 = jnum(meta, "beta2"),
        .eps = jnum(meta, "eps"),
        .weight_decay = jnum(meta, "weight_decay"),
        .clip = clip,
    };
    LT_CHECK_OK(lt_optim_create(be, &cfg, &r->opt, &err), &err);
    const cJSON *decay = cJSON_GetObjectItem(meta, "decay");
    for (int p = 0; p < NP; p++) {
        char nm[64];
        snprintf(nm, sizeof nm, "%s.init", PN[p]);
        const lt_st_tensor *t = lt_st_find(f, nm);
        r->ndim[p] = t->ndim;
        r->n[p] = t->numel;
        for (int d = 0; d < t->ndim; d++) r->shape[p][d] = t->shape[d];
        LT_CHECK_OK(be->alloc(be, r->n[p] * lt_dtype_size(pdt), &r->param[p], &err), &err);
        LT_CHECK_OK(be->alloc(be, r->n[p] * 4, (void **)&r->grad[p], &err), &err);
        LT_CHECK_OK(be->upload_f32(be, r->param[p], pdt, (const float *)t->data, r->n[p], &err), &err);
        int dec = lt_optim_decay_default(PN[p], t->ndim, 0);
        LT_CHECK(dec == cJSON_IsTrue(cJSON_GetObjectItem(decay, PN[p])), "decay rule for %s", PN[p]);
        LT_CHECK_OK(lt_optim_add(r->opt, PN[p], t->ndim, t->shape, r->param[p], pdt, r->grad[p], dec, &err), &err);
        /* with a bf16 param the master starts from the rounded param; give it the exact f32 start */
        if (pdt != LT_F32) LT_CHECK_OK(lt_optim_set_param(r->opt, (size_t)p, (const float *)t->data, &err), &err);
    }
}

static void run_free(run *r) {
    for (int p = 0; p < NP; p++) {
        r->be->free(r->be, r->param[p]);
        r->be->free(r->be, r->grad[p]);
    }
    lt_optim_free(r->opt);
}

static void upload_grads(run *r, const lt_st_file *f, int s) {
    lt_err err;
    for (int p = 0; p < NP; p++) {
        char nm[64];
        snprintf(nm, sizeof nm, "%s.grad.%d", PN[p], s);
        LT_CHECK_OK(r->be->upload_f32(r->be, r->grad[p], LT_F32, fx(f, nm), r->n[p], &err), &err);
    }
}

/* Run all steps and compare with torch. bf16: params are BF16 with f32 master. */
static void test_adamw(lt_backend *be, const lt_st_file *f, const cJSON *meta, lt_dtype pdt) {
    run r;
    lt_err err;
    const char *tag = pdt == LT_F32 ? "f32" : "bf16+master";
    run_setup(&r, be, f, meta, pdt, jnum(meta, "clip"));
    const int steps = (int)jnum(meta, "steps");
    const cJSON *lrs = cJSON_GetObjectItem(meta, "lrs"), *norms = cJSON_GetObjectItem(meta, "grad_norms");
    int nclipped = 0, nunclipped = 0;
    for (int s = 0; s < steps; s++) {
        upload_grads(&r, f, s);
        lt_optim_stats st;
        LT_CHECK_OK(lt_optim_step(r.opt, &st, &err), &err);
        double want_lr = cJSON_GetArrayItem(lrs, s)->valuedouble, want_norm = cJSON_GetArrayItem(norms, s)->valuedouble;
        LT_CHECK(fabs(st.lr - want_lr) <= 1e-12, "%s step %d: lr %.17g vs torch %.17g", tag, s, st.lr, want_lr);
        LT_CHECK(fabs(st.grad_norm - want_norm) <= 1e-6 * want_norm, "%s step %d: grad norm %.9g vs torch %.9g", tag,
                 s, st.grad_norm, want_norm);
        LT_CHECK(st.step == s + 1 && lt_optim_steps_done(r.opt) == s + 1, "step count");
        double want_scale = want_norm > 1.0 ? 1.0 / (want_norm + 1e-6) : 1.0;
        LT_CHECK(fabs(st.clip_scale - want_scale) <= 1e-6 * want_scale, "clip scale %g vs %g", st.clip_scale,
                 want_scale);
        if (st.clip_scale < 1) nclipped++; else nunclipped++;
        for (int p = 0; p < NP; p++) {
            char nm[64], what[96];
            snprintf(nm, sizeof nm, "%s.after.%d", PN[p], s);
            float *got = malloc(r.n[p] * 4);
            lt_poison(got, r.n[p]);
            LT_CHECK_OK(lt_optim_get_param(r.opt, (size_t)p, got, &err), &err);
            snprintf(what, sizeof what, "%s %s after step %d", tag, PN[p], s);
            lt_check_close(what, got, fx(f, nm), r.n[p], 2e-6);
            lt_cmp c = lt_compare(got, fx(f, nm), r.n[p]);
            LT_CHECK(c.max_rel <= 1e-5, "%s: max rel %g", what, c.max_rel);
            if (pdt != LT_F32) { /* the forward copy is the master rounded to bf16 */
                float *fwd = malloc(r.n[p] * 4);
                LT_CHECK_OK(be->download_f32(be, fwd, r.param[p], pdt, r.n[p], &err), &err);
                size_t bad = 0;
                for (size_t i = 0; i < r.n[p]; i++) bad += fwd[i] != lt_bf16_to_f32(lt_f32_to_bf16(got[i]));
                LT_CHECK(bad == 0, "%s: %zu bf16 params are not the rounded master", what, bad);
                free(fwd);
            }
            free(got);
        }
    }
    LT_CHECK(nclipped >= 2 && nunclipped >= 2, "fixture should clip some steps (%d) and not others (%d)", nclipped,
             nunclipped);
    /* optimizer state after the last step */
    lt_tlist state = {0};
    LT_CHECK_OK(lt_optim_state_to_tlist(r.opt, &state, &err), &err);
    LT_CHECK(state.n == 2 * NP, "state has %zu tensors", state.n);
    for (int p = 0; p < NP; p++) {
        const char *suf[2] = {"exp_avg", "exp_avg_sq"};
        for (int k = 0; k < 2; k++) {
            char nm[64];
            snprintf(nm, sizeof nm, "%s.%s", PN[p], suf[k]);
            const lt_tlist_item *it = lt_tlist_find(&state, nm);
            LT_CHECK(it && it->numel == r.n[p], "state tensor %s", nm);
            if (it) lt_check_close(nm, it->data, fx(f, nm), r.n[p], 2e-6);
        }
    }
    lt_tlist_free(&state);
    run_free(&r);
}

/* State save/load: run 3 steps, save, load into a fresh optimizer, run the
 * remaining steps in both; results must be bitwise equal. Plus NaN refusal
 * and clip = 0. */
static void test_state_and_nan(lt_backend *be, const lt_st_file *f, const cJSON *meta) {
    lt_err err;
    run a, b;
    run_setup(&a, be, f, meta, LT_F32, 1.0);
    for (int s = 0; s < 3; s++) {
        upload_grads(&a, f, s);
        LT_CHECK_OK(lt_optim_step(a.opt, NULL, &err), &err);
    }
    lt_tlist state = {0}, weights = {0};
    LT_CHECK_OK(lt_optim_state_to_tlist(a.opt, &state, &err), &err);
    LT_CHECK_OK(lt_optim_params_to_tlist(a.opt, &weights, &err), &err);
    char path[4096], wpath[4096];
    snprintf(path, sizeof path, "%s/optim_state.safetensors", lt_test_tmpdir("test_optim"));
    snprintf(wpath, sizeof wpath, "%s/weights.safetensors", lt_test_tmpdir("test_optim"));
    LT_CHECK_OK(lt_tlist_write(&state, path, NULL, NULL, 0, &err), &err);
    LT_CHECK_OK(lt_tlist_write(&weights, wpath, NULL, NULL, 0, &err), &err);
    LT_CHECK(weights.n == NP && lt_tlist_find(&weights, "W") && lt_tlist_find(&weights, "W")->numel == 48,
             "params to tlist");
    lt_tlist_free(&state);
    lt_tlist_free(&weights);

    run_setup(&b, be, f, meta, LT_F32, 1.0);
    lt_st_file *sf = NULL;
    LT_CHECK_OK(lt_st_open(path, &sf, &err), &err);
    if (sf) LT_CHECK_OK(lt_optim_state_load(b.opt, sf, &err), &err);
    lt_st_close(sf);
    lt_optim_set_steps_done(b.opt, lt_optim_steps_done(a.opt));
    LT_CHECK_OK(lt_st_open(wpath, &sf, &err), &err);
    if (sf) LT_CHECK_OK(lt_optim_params_load(b.opt, sf, &err), &err);
    lt_st_close(sf);
    for (int s = 3; s < 6; s++) {
        upload_grads(&a, f, s);
        upload_grads(&b, f, s);
        LT_CHECK_OK(lt_optim_step(a.opt, NULL, &err), &err);
        LT_CHECK_OK(lt_optim_step(b.opt, NULL, &err), &err);
    }
    for (int p = 0; p < NP; p++) {
        float *x = malloc(a.n[p] * 4), *y = malloc(a.n[p] * 4);
        lt_optim_get_param(a.opt, (size_t)p, x, &err);
        lt_optim_get_param(b.opt, (size_t)p, y, &err);
        LT_CHECK(!memcmp(x, y, a.n[p] * 4), "%s differs after resuming from saved state", PN[p]);
        char nm[64];
        snprintf(nm, sizeof nm, "%s.after.5", PN[p]);
        lt_check_close("resumed vs torch", y, fx(f, nm), a.n[p], 2e-6);
        free(x);
        free(y);
    }
    /* a state file missing a tensor is refused by name */
    lt_tlist partial = {0};
    int64_t shp[1] = {8};
    float zeros[8] = {0};
    lt_tlist_add(&partial, "b.exp_avg", LT_F32, 1, shp, zeros, &err);
    snprintf(path, sizeof path, "%s/partial.safetensors", lt_test_tmpdir("test_optim"));
    LT_CHECK_OK(lt_tlist_write(&partial, path, NULL, NULL, 0, &err), &err);
    lt_tlist_free(&partial);
    LT_CHECK_OK(lt_st_open(path, &sf, &err), &err);
    if (sf) {
        lt_status st = lt_optim_state_load(b.opt, sf, &err);
        LT_CHECK(st == LT_ERR_FORMAT && strstr(err.msg, "W.exp_avg"), "partial state: %s", err.msg);
        st = lt_optim_params_load(b.opt, sf, &err);
        LT_CHECK(st == LT_ERR_FORMAT && strstr(err.msg, "'W'"), "missing weights: %s", err.msg);
        lt_st_close(sf);
    }

    /* NaN in a gradient: refused by name, nothing updated */
    float before[48], after[48];
    lt_optim_get_param(a.opt, 0, before, &err);
    upload_grads(&a, f, 0);
    float *g = malloc(a.n[1] * 4);
    lt_fill_normal(g, a.n[1], 1.0f, 7);
    g[3] = NAN;
    be->upload_f32(be, a.grad[1], LT_F32, g, a.n[1], &err);
    lt_optim_stats st;
    lt_status rs = lt_optim_step(a.opt, &st, &err);
    LT_CHECK(rs == LT_ERR_NONFINITE && strstr(err.msg, "'b'"), "NaN grad: %s (%s)", lt_status_name(rs), err.msg);
    LT_CHECK(lt_optim_steps_done(a.opt) == 6, "step advanced on NaN");
    lt_optim_get_param(a.opt, 0, after, &err);
    LT_CHECK(!memcmp(before, after, sizeof before), "params changed on a NaN gradient");
    g[3] = INFINITY;
    be->upload_f32(be, a.grad[1], LT_F32, g, a.n[1], &err);
    LT_CHECK(lt_optim_step(a.opt, &st, &err) == LT_ERR_NONFINITE, "Inf grad accepted");
    free(g);
    run_free(&a);
    run_free(&b);

    /* clip = 0: no clipping even for a big gradient */
    run c;
    run_setup(&c, be, f, meta, LT_F32, 0.0);
    upload_grads(&c, f, 5);
    LT_CHECK_OK(lt_optim_step(c.opt, &st, &err), &err);
    LT_CHECK(st.clip_scale == 1.0 && st.grad_norm > 4, "clip 0: scale %g norm %g", st.clip_scale, st.grad_norm);
    run_free(&c);

    /* bad configurations */
    lt_optim *o = NULL;
    lt_optim_cfg bad = {.sched = {LT_SCHED_COSINE, -1.0, 0, 10, 0.0}, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    LT_CHECK(lt_optim_create(be, &bad, &o, &err) == LT_ERR_INVALID && strstr(err.msg, "lr"), "negative lr: %s",
             err.msg);
    bad.sched.lr = 1e-3;
    bad.beta2 = 1.0;
    LT_CHECK(lt_optim_create(be, &bad, &o, &err) == LT_ERR_INVALID, "beta2 = 1 accepted");
}

static void test_decay_rule(void) {
    LT_CHECK(lt_optim_decay_default("model.layers.0.self_attn.q_proj.weight", 2, 0) == 1, "q_proj");
    LT_CHECK(lt_optim_decay_default("model.layers.0.self_attn.q_proj.bias", 1, 0) == 0, "bias");
    LT_CHECK(lt_optim_decay_default("model.layers.3.input_layernorm.weight", 1, 0) == 0, "norm");
    LT_CHECK(lt_optim_decay_default("model.norm.weight", 1, 0) == 0, "final norm");
    LT_CHECK(lt_optim_decay_default("model.embed_tokens.weight", 2, 0) == 0, "embeddings");
    LT_CHECK(lt_optim_decay_default("model.embed_tokens.weight", 2, 1) == 1, "--decay-embeddings");
    LT_CHECK(lt_optim_decay_default("lm_head.weight", 2, 0) == 1, "lm_head");
}

/* two tensors ("E" (10, 16) with rows, "c" (16)), 4 steps; rows = NULL: full state */
static void rows_run(lt_backend *be, lt_dtype pdt, const int32_t *rows, size_t nrows, int reload, int zero,
                     float *out_w, lt_tlist *state, size_t *state_numel) {
    enum { R = 10, C = 16 };
    lt_err err = {{0}};
    lt_optim_cfg cfg = {.sched = {.kind = LT_SCHED_LINEAR, .lr = 3e-2, .warmup_steps = 1, .total_steps = 6},
                        .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.0, .clip = 0.05};
    lt_optim *o = NULL;
    void *w = NULL, *c = NULL;
    float *g = NULL, *gc = NULL;
    const int64_t shE[2] = {R, C}, shc[1] = {C};
    LT_CHECK_OK(lt_optim_create(be, &cfg, &o, &err), &err);
    LT_CHECK_OK(be->alloc(be, R * C * lt_dtype_size(pdt), &w, &err), &err);
    LT_CHECK_OK(be->alloc(be, C * lt_dtype_size(pdt), &c, &err), &err);
    LT_CHECK_OK(be->alloc(be, (R + 1) * C * sizeof(float), (void **)&g, &err), &err); /* one flat gradient */
    gc = g + R * C;
    float hw[R * C], hg[R * C], hc[C];
    lt_rng r;
    lt_rng_seed(&r, 3);
    for (int i = 0; i < R * C; i++) hw[i] = (float)(lt_rng_uniform(&r) - 0.5);
    for (int i = 0; i < C; i++) hc[i] = (float)(lt_rng_uniform(&r) - 0.5);
    LT_CHECK_OK(be->upload_f32(be, w, pdt, hw, R * C, &err), &err);
    LT_CHECK_OK(be->upload_f32(be, c, pdt, hc, C, &err), &err);
    if (rows) LT_CHECK_OK(lt_optim_add_rows(o, "E", shE, w, pdt, g, rows, nrows, &err), &err);
    else LT_CHECK_OK(lt_optim_add(o, "E", 2, shE, w, pdt, g, 0, &err), &err);
    LT_CHECK_OK(lt_optim_add(o, "c", 1, shc, c, pdt, gc, 0, &err), &err);
    lt_comm *cm = NULL;
    if (zero) { /* ZeRO-1 on one rank: the part is the whole tensor, the state the rows' */
        lt_comm_opts co = lt_comm_opts_default();
        LT_CHECK_OK(lt_comm_create("single", &co, &cm, &err), &err);
        if (cm) LT_CHECK_OK(lt_optim_distribute(o, cm, 1, g, &err), &err);
    }
    const int32_t trained[] = {1, 2, 3, 7};
    for (int s = 0; s < 4; s++) {
        for (int i = 0; i < R * C; i++) {
            int row = i / C, on = 0;
            for (int k = 0; k < 4; k++) on |= row == trained[k];
            hg[i] = on ? (float)(lt_rng_uniform(&r) - 0.5) : 0.0f;
        }
        for (int i = 0; i < C; i++) hc[i] = (float)(lt_rng_uniform(&r) - 0.5);
        LT_CHECK_OK(be->upload_f32(be, g, LT_F32, hg, R * C, &err), &err);
        LT_CHECK_OK(be->upload_f32(be, gc, LT_F32, hc, C, &err), &err);
        LT_CHECK_OK(lt_optim_step(o, NULL, &err), &err);
        if (reload && s == 1) { /* the state through a file and back */
            lt_tlist st = {0};
            char path[4096];
            snprintf(path, sizeof path, "%s/rows_state.safetensors", lt_test_tmpdir("test_optim"));
            LT_CHECK_OK(lt_optim_state_to_tlist(o, &st, &err), &err);
            LT_CHECK_OK(lt_tlist_write(&st, path, NULL, NULL, 0, &err), &err);
            lt_tlist_free(&st);
            lt_st_file *f = NULL;
            LT_CHECK_OK(lt_st_open(path, &f, &err), &err);
            if (f) LT_CHECK_OK(lt_optim_state_load(o, f, &err), &err);
            lt_st_close(f);
        }
    }
    LT_CHECK_OK(lt_optim_get_param(o, 0, out_w, &err), &err);
    LT_CHECK_OK(lt_optim_state_to_tlist(o, state, &err), &err);
    *state_numel = lt_optim_state_numel(o);
    lt_optim_free(o);
    if (cm) cm->destroy(cm);
    be->free(be, w), be->free(be, c), be->free(be, g);
}

static void test_rows(lt_backend *be) {
    const int32_t rows[] = {1, 2, 3, 7};
    for (int bf = 0; bf < 2; bf++) {
        lt_dtype pdt = bf ? LT_BF16 : LT_F32;
        for (int mode = 0; mode < 3; mode++) {
            int reload = mode == 1, zero = mode == 2;
            float wf[160], wr[160];
            lt_tlist sf = {0}, sr = {0};
            size_t nf = 0, nr = 0;
            rows_run(be, pdt, NULL, 0, reload, 0, wf, &sf, &nf);
            rows_run(be, pdt, rows, 4, reload, zero, wr, &sr, &nr);
            LT_CHECK(!memcmp(wf, wr, sizeof wf), "rows (%s, mode %d): weights differ from the full state's",
                     lt_dtype_name(pdt), mode);
            LT_CHECK(nf == 160 + 16 && nr == 4 * 16 + 16, "state elements: full %zu, rows %zu", nf, nr);
            int same = sf.n == sr.n && sf.n == 4;
            for (size_t i = 0; same && i < sf.n; i++)
                same = !strcmp(sf.items[i].name, sr.items[i].name) && sf.items[i].numel == sr.items[i].numel &&
                       !memcmp(sf.items[i].data, sr.items[i].data, sf.items[i].numel * sizeof(float));
            LT_CHECK(same, "rows (%s, mode %d): saved state differs from the full state's", lt_dtype_name(pdt), mode);
            lt_tlist_free(&sf);
            lt_tlist_free(&sr);
        }
    }
    lt_err err = {{0}};
    lt_optim_cfg cfg = {.sched = {.lr = 1e-3, .total_steps = 1}, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8};
    lt_optim *o = NULL;
    float dummy[32];
    const int64_t sh[2] = {4, 8};
    const int32_t bad1[] = {2, 1}, bad2[] = {0, 4};
    LT_CHECK_OK(lt_optim_create(be, &cfg, &o, &err), &err);
    LT_CHECK(o && lt_optim_add_rows(o, "x", sh, dummy, LT_F32, dummy, bad1, 2, &err) == LT_ERR_INVALID &&
                 strstr(err.msg, "out of order"),
             "unsorted rows: %s", err.msg);
    LT_CHECK(o && lt_optim_add_rows(o, "y", sh, dummy, LT_F32, dummy, bad2, 2, &err) == LT_ERR_INVALID,
             "row 4 of 4: %s", err.msg);
    lt_optim_free(o);
}

/* ---- a row subset under ZeRO-1/3, one rank at a time ----
 * E (40, 24) trains rows {1, 21} next to c (24): 984 elements, 4 units of 256, so the parts cut
 * row 21 (2 ranks) and leave a part of E without any of the rows (3 ranks: rank 1 or 2). Each rank
 * r of W runs alone over a stand-in communicator whose gathers do nothing, without clipping (the
 * other ranks' units of the norm do not matter): its part of the weights, exp_avg and exp_avg_sq
 * after 4 steps equal BITWISE that part of one process with the whole state; its state holds the
 * rows' elements inside its part only (state_numel / state_bytes, counted here per element). */
enum { QR = 40, QC = 24, QE = QR * QC, QN = QE + QC };
static const int32_t QROWS[2] = {1, 21};

static lt_status gather_none(lt_comm *c, void *buf, size_t n, const size_t *counts, lt_dtype dt, lt_err *err) {
    (void)c, (void)buf, (void)n, (void)counts, (void)dt, (void)err;
    return LT_OK;
}

/* W = 0: one process with the whole state; else rank r of W under ZeRO `zero` (1 or 3) with the
 * row subset. out (3 * QN): weights, exp_avg, exp_avg_sq of the flat vector, set on this rank's
 * part [*a, *b); *numel, *bytes: lt_optim_state_numel / _bytes */
static void parts_run(lt_backend *be, lt_dtype pdt, int W, int r, int zero, float *out, size_t *a, size_t *b,
                      size_t *numel, size_t *bytes) {
    lt_err err = {{0}};
    lt_optim_cfg cfg = {.sched = {.kind = LT_SCHED_LINEAR, .lr = 3e-2, .warmup_steps = 1, .total_steps = 6},
                        .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.0, .clip = 0.0};
    const int64_t shE[2] = {QR, QC}, shc[1] = {QC};
    const size_t off[2] = {0, QE}, num[2] = {QE, QC};
    float hw[QN], hg[QN];
    lt_rng rng;
    lt_rng_seed(&rng, 11);
    for (int i = 0; i < QN; i++) hw[i] = (float)(lt_rng_uniform(&rng) - 0.5);
    lt_optim *o = NULL;
    void *w[2] = {NULL, NULL}, *part[2] = {NULL, NULL};
    float *g = NULL;
    LT_CHECK_OK(lt_optim_create(be, &cfg, &o, &err), &err);
    for (int k = 0; k < 2; k++) {
        LT_CHECK_OK(be->alloc(be, num[k] * lt_dtype_size(pdt), &w[k], &err), &err);
        LT_CHECK_OK(be->upload_f32(be, w[k], pdt, hw + off[k], num[k], &err), &err);
    }
    size_t s0 = 0, sl = QN;
    lt_comm fake = {.name = "stand-in", .rank = r, .world = W ? W : 1, .all_gather = gather_none};
    if (W) {
        LT_CHECK_OK(lt_optim_add_rows(o, "E", shE, w[0], pdt, NULL, QROWS, 2, &err), &err);
        LT_CHECK_OK(lt_optim_add(o, "c", 1, shc, w[1], pdt, NULL, 0, &err), &err);
        lt_optim_flat_shard(o, r, W, &s0, &sl);
        LT_CHECK_OK(be->alloc(be, (sl ? sl : 1) * sizeof(float), (void **)&g, &err), &err);
        LT_CHECK_OK(lt_optim_distribute(o, &fake, 1, g, &err), &err);
        for (size_t i = 0; zero == 3 && i < 2; i++) { /* ZeRO-3: the parameter is the part only */
            lt_optim_part p;
            lt_optim_part_of(o, i, &p);
            LT_CHECK_OK(be->alloc(be, (p.len ? p.len : 1) * lt_dtype_size(pdt), &part[i], &err), &err);
            LT_CHECK_OK(be->upload_f32(be, part[i], pdt, hw + off[i] + p.off, p.len, &err), &err);
            LT_CHECK_OK(lt_optim_set_param_part(o, i, part[i], &err), &err);
        }
    } else {
        LT_CHECK_OK(be->alloc(be, QN * sizeof(float), (void **)&g, &err), &err);
        LT_CHECK_OK(lt_optim_add(o, "E", 2, shE, w[0], pdt, g, 0, &err), &err);
        LT_CHECK_OK(lt_optim_add(o, "c", 1, shc, w[1], pdt, g + QE, 0, &err), &err);
    }
    for (int s = 0; s < 4; s++) {
        for (int i = 0; i < QN; i++) {
            int row = i / QC, on = i >= QE || row == QROWS[0] || row == QROWS[1];
            hg[i] = on ? (float)(lt_rng_uniform(&rng) - 0.5) : 0.0f;
        }
        LT_CHECK_OK(be->upload_f32(be, g, LT_F32, hg + s0, sl, &err), &err);
        LT_CHECK_OK(lt_optim_step(o, NULL, &err), &err);
    }
    for (size_t i = 0; i < 2; i++) {
        lt_optim_part p;
        lt_optim_part_of(o, i, &p);
        for (int q = 0; q < 3 && p.len; q++)
            LT_CHECK_OK(lt_optim_part_get(o, i, q, p.off, p.off + p.len, out + q * QN + off[i] + p.off, &err), &err);
    }
    LT_CHECK_OK(be->sync(be, &err), &err);
    *a = s0;
    *b = s0 + sl;
    *numel = lt_optim_state_numel(o);
    *bytes = lt_optim_state_bytes(o);
    lt_optim_free(o);
    for (int k = 0; k < 2; k++) {
        be->free(be, w[k]);
        if (part[k]) be->free(be, part[k]);
    }
    be->free(be, g);
}

static void test_rows_parts(lt_backend *be) {
    static float ref[3 * QN], got[3 * QN];
    int empty = 0, cut = 0;
    for (int bf = 0; bf < 2; bf++) {
        lt_dtype pdt = bf ? LT_BF16 : LT_F32;
        size_t a, b, n, nb;
        parts_run(be, pdt, 0, 0, 0, ref, &a, &b, &n, &nb);
        for (int zero = 1; zero <= 3; zero += 2)
            for (int W = 1; W <= 4; W++)
                for (int r = 0; r < W; r++) {
                    memset(got, 0, sizeof got);
                    parts_run(be, pdt, W, r, zero, got, &a, &b, &n, &nb);
                    size_t want = 0, inE = 0;
                    for (size_t e = a; e < b; e++) {
                        int row = (int)(e / QC);
                        want += e >= QE || row == QROWS[0] || row == QROWS[1];
                        inE += e < QE;
                    }
                    if (inE && want == (b > QE ? b - (a > QE ? a : QE) : 0)) empty++; /* E here, none of its rows */
                    for (int k = 0; k < 2; k++) {
                        size_t e = (size_t)QROWS[k] * QC;
                        cut += e < a && e + QC > a && a > 0;
                    }
                    LT_CHECK(n == want && nb == want * (bf ? 12 : 8),
                             "rows under ZeRO-%d, rank %d of %d (%s, part [%zu, %zu)): state %zu elements / %zu B, "
                             "expected the rows' %zu in the part", zero, r, W, lt_dtype_name(pdt), a, b, n, nb, want);
                    int same = 1;
                    for (int q = 0; q < 3 && same; q++)
                        same = !memcmp(ref + q * QN + a, got + q * QN + a, (b - a) * sizeof(float));
                    LT_CHECK(same, "rows under ZeRO-%d, rank %d of %d (%s): the part's weights or state differ from "
                             "one process's", zero, r, W, lt_dtype_name(pdt));
                }
    }
    LT_CHECK(empty > 0 && cut > 0, "the cases hold a part without rows (%d) and a cut row (%d)", empty, cut);
}

int main(void) {
    lt_err err;
    lt_backend *be = NULL;
    if (lt_cpu_backend_create(1, &be, &err) != LT_OK) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    lt_st_file *f = NULL;
    char *js = NULL;
    if (lt_st_open(lt_src_path("tests/fixtures/optim/adamw.safetensors"), &f, &err) != LT_OK ||
        lt_read_file(lt_src_path("tests/fixtures/optim/adamw.json"), &js, NULL, &err) != LT_OK) {
        fprintf(stderr, "fixture: %s\n", err.msg);
        return 1;
    }
    cJSON *meta = cJSON_Parse(js);
    test_schedules(meta);
    test_decay_rule();
    test_adamw(be, f, meta, LT_F32);
    test_adamw(be, f, meta, LT_BF16);
    test_state_and_nan(be, f, meta);
    test_rows(be);
    test_rows_parts(be);
    cJSON_Delete(meta);
    free(js);
    lt_st_close(f);
    be->destroy(be);
    return lt_test_finish("test_optim");
}
