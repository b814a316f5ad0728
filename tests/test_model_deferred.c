/*
 * test_model_deferred.c -- lt_model_load_deferred / lt_model_load_range /
 * lt_model_param_load (core/lt_model.h: what a ZeRO-3 rank loads) on every
 * fixture family and the sample model, CPU backend, with the backend's
 * param dtype F32 and F16 (the rounding of the file's values, as
 * lt_model_load does it):
 *   - the deferred model registers the same parameters (names, shapes,
 *     dtypes, gradient groups) with no data, its files still open;
 *   - every parameter's element ranges [0, n), a middle one, [n-1, n) and an
 *     empty one read into a buffer are BITWISE the loaded model's elements;
 *     a range past the end is refused (LT_ERR_RANGE, naming the tensor);
 *   - a step on the deferred model is refused naming a parameter not loaded;
 *     after lt_model_param_load of every parameter, a forward step's loss is
 *     bitwise the loaded model's (F32 only: the CPU computes in F32);
 *   - the optimizer over a deferred parameter (F16 weights: master weights
 *     kept): lt_optim_add with no param, lt_optim_distribute (ZeRO, one rank
 *     of the "single" communicator) gives the part's state only, and
 *     lt_optim_set_param_part with the part read from the file sets the master
 *     weights to the loaded parameter's f32 values, bitwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_comm.h"
#include "lt_family.h"
#include "lt_model.h"
#include "lt_optim.h"
#include "lt_test.h"

enum { T = 12 };

/* one sequence of T tokens, one document, every token a target but the first */
static void batch_of(int vocab, int32_t *tok, int32_t *tgt, int32_t *pos, int32_t *doc, lt_batch *b) {
    uint8_t mask[T];
    int len = T;
    lt_err err;
    for (int t = 0; t < T; t++) tok[t] = (int32_t)((7 * t + 3) % vocab), mask[t] = 1;
    LT_CHECK_OK(lt_batch_fill_sequence(T, tok, mask, &len, 1, tgt, pos, doc, &err), &err);
    *b = (lt_batch){.B = 1, .T = T, .tokens = tok, .targets = tgt, .pos = pos, .doc_start = doc};
}

static double forward_loss(lt_model *m, const lt_batch *b) {
    lt_err err;
    lt_step_result r = {0};
    LT_CHECK_OK(lt_model_plan(m, 1, T, &err), &err);
    LT_CHECK_OK(lt_model_step(m, b, 0, 1.0, &r, &err), &err);
    return r.loss_sum;
}

/* the optimizer over parameter i of the deferred model d (16-bit weights: master weights kept) */
static void check_optim(lt_backend *be, lt_model *a, lt_model *d, size_t i, const char *dir) {
    lt_err err;
    lt_param *pa = lt_model_param(a, i), *pd = lt_model_param(d, i);
    lt_optim_cfg oc = {{LT_SCHED_CONSTANT, 1e-3, 0, 10, 0}, 0.9, 0.999, 1e-8, 0.0, 0.0};
    lt_optim *o = NULL;
    lt_comm *c = NULL;
    lt_comm_opts co = lt_comm_opts_default();
    float *grad = NULL, *want = malloc(pa->numel * sizeof *want), *got = malloc(pa->numel * sizeof *got);
    void *part = NULL;
    LT_CHECK_OK(lt_optim_create(be, &oc, &o, &err), &err);
    LT_CHECK_OK(lt_comm_create("single", &co, &c, &err), &err);
    LT_CHECK_OK(be->alloc(be, pa->numel * sizeof(float), (void **)&grad, &err), &err);
    if (!o || !c || !grad || !want || !got) goto done;
    LT_CHECK(pd->data == NULL, "%s: '%s' loaded before use", dir, pd->name);
    LT_CHECK_OK(lt_optim_add(o, pd->name, pd->ndim, pd->shape, pd->data, pd->dtype, grad, 1, &err), &err);
    LT_CHECK(lt_optim_state_bytes(o) == pd->numel * 12, "%s: state bytes %zu before distribute", dir,
             lt_optim_state_bytes(o));
    LT_CHECK_OK(lt_optim_distribute(o, c, 1, grad, &err), &err);
    lt_optim_part p;
    lt_optim_part_of(o, 0, &p);
    LT_CHECK(p.off == 0 && p.len == pd->numel && p.master && p.m && p.v, "%s: the part of '%s'", dir, pd->name);
    size_t es = lt_dtype_size(pd->dtype);
    LT_CHECK_OK(be->alloc(be, pd->numel * es, &part, &err), &err);
    if (!part) goto done;
    LT_CHECK_OK(lt_model_load_range(d, i, 0, pd->numel, part, &err), &err);
    LT_CHECK_OK(lt_optim_set_param_part(o, 0, part, &err), &err);
    LT_CHECK_OK(be->download_f32(be, want, pa->data, pa->dtype, pa->numel, &err), &err);
    LT_CHECK_OK(lt_optim_part_get(o, 0, 0, 0, pd->numel, got, &err), &err);
    LT_CHECK_OK(be->sync(be, &err), &err);
    LT_CHECK(memcmp(want, got, pa->numel * sizeof(float)) == 0, "%s: master weights of '%s' from the part", dir,
             pd->name);
done:
    lt_optim_free(o);
    if (c) c->destroy(c);
    if (grad) be->free(be, grad);
    if (part) be->free(be, part);
    free(want);
    free(got);
}

static void check(const char *dir, lt_dtype pdt) {
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *a = NULL, *d = NULL;
    void *buf = NULL;
    LT_CHECK_OK(lt_cpu_backend_create(1, &be, &err), &err);
    if (!be) return;
    be->param_dtype = pdt; /* F16: loading only (the CPU computes in F32) */
    LT_CHECK_OK(lt_model_load(dir, be, &a, &err), &err);
    LT_CHECK_OK(lt_model_load_deferred(dir, be, &d, &err), &err);
    if (!a || !d) goto done;
    LT_CHECK(!lt_model_weights_deferred(a) && lt_model_weights_deferred(d), "%s: deferred flags", dir);
    size_t np = lt_model_num_params(a);
    LT_CHECK(np == lt_model_num_params(d), "%s: %zu parameters, deferred %zu", dir, np, lt_model_num_params(d));
    size_t mx = 1;
    for (size_t i = 0; i < np; i++) mx = lt_model_param(a, i)->numel > mx ? lt_model_param(a, i)->numel : mx;
    size_t es = lt_dtype_size(pdt);
    LT_CHECK_OK(be->alloc(be, mx * es, &buf, &err), &err);
    if (!buf) goto done;
    for (size_t i = 0; i < np && i < lt_model_num_params(d); i++) {
        lt_param *pa = lt_model_param(a, i), *pd = lt_model_param(d, i);
        LT_CHECK(!strcmp(pa->name, pd->name) && pa->ndim == pd->ndim && pa->shape[0] == pd->shape[0] &&
                     pa->shape[1] == pd->shape[1] && pa->numel == pd->numel && pa->dtype == pd->dtype &&
                     lt_model_grad_group(a, i) == lt_model_grad_group(d, i) && !pd->data,
                 "%s: parameter %zu: '%s' / '%s'", dir, i, pa->name, pd->name);
        size_t n = pa->numel, ranges[4][2] = {{0, n}, {n / 3, n / 2}, {n - 1, 1}, {n / 2, 0}};
        for (int k = 0; k < 4; k++) {
            memset(buf, 0xA5, mx * es);
            LT_CHECK_OK(lt_model_load_range(d, i, ranges[k][0], ranges[k][1], buf, &err), &err);
            LT_CHECK(!memcmp(buf, (const char *)pa->data + ranges[k][0] * es, ranges[k][1] * es),
                     "%s: '%s' elements [%zu, %zu) differ from the loaded model's", dir, pa->name, ranges[k][0],
                     ranges[k][0] + ranges[k][1]);
        }
        lt_status st = lt_model_load_range(d, i, n - 1, 2, buf, &err);
        LT_CHECK(st == LT_ERR_RANGE && strstr(err.msg, pa->name), "%s: a range past the end: %s", dir, err.msg);
    }
    if (pdt != LT_F32) {
        check_optim(be, a, d, 1, dir);
        goto done;
    }
    int32_t tok[T], tgt[T], pos[T], doc[T];
    lt_batch b;
    batch_of(lt_model_config(a)->vocab_size, tok, tgt, pos, doc, &b);
    lt_step_result r;
    LT_CHECK_OK(lt_model_plan(d, 1, T, &err), &err);
    lt_status st = lt_model_step(d, &b, 0, 1.0, &r, &err);
    LT_CHECK(st == LT_ERR_INVALID && strstr(err.msg, "not loaded") && strstr(err.msg, lt_model_param(d, 0)->name),
             "%s: a step before the weights are loaded: %s %s", dir, lt_status_name(st), err.msg);
    for (size_t i = 0; i < np; i++) LT_CHECK_OK(lt_model_param_load(d, lt_model_param(d, i), &err), &err);
    double la = forward_loss(a, &b), ld = forward_loss(d, &b);
    LT_CHECK(memcmp(&la, &ld, sizeof la) == 0, "%s: loss %.17g, after lt_model_param_load %.17g", dir, la, ld);
done:
    if (buf) be->free(be, buf);
    lt_model_free(a);
    lt_model_free(d);
    be->destroy(be);
}

int main(void) {
    const char *models[32];
    size_t nm = lt_family_fixtures(models, 32);
    char dir[4096];
    for (size_t i = 0; i < nm; i++) {
        snprintf(dir, sizeof dir, "%s%s", lt_src_path("tests/fixtures/models/"), models[i]);
        check(dir, LT_F32);
        check(dir, LT_F16);
    }
    snprintf(dir, sizeof dir, "%s", lt_src_path("data/sample/model"));
    check(dir, LT_F32);
    check(dir, LT_F16);
    return lt_test_finish("test_model_deferred");
}
