/*
 * test_train_torch.c -- training steps against PyTorch + transformers + PEFT
 * (tests/fixtures/train/<model>/, written by tools/gen_train_fixtures.py).
 *
 * For each fixture model (every family's, lt_family_fixtures),
 * on the CPU backend through lt_trainer_step (2 micro-batches per step,
 * AdamW, warmup 2 + cosine, clip 1, weight decay 0.1):
 *   full fine-tuning  loss and grad norm of every step  relative   <= 1e-5 / 1e-4
 *                     every weight after 4 steps        normalized <= 1e-6,
 *                     and its change (w4 - w0)          normalized <= 1e-3
 *   LoRA              logits of a PEFT-made adapter loaded with
 *                     lt_trainer_load_adapter (the LoRA forward path),
 *                     normalized <= 1e-5; the same step checks as above
 *                     for the adapter (base frozen: only A/B have gradients)
 * and on llama: one micro-batch of 4 sequences gives the step of 2 x 2
 * (loss and grad norm relative 1e-6, weights after one step normalized 2e-6), and reordering the
 * documents of a batch (sequences swapped, documents reversed inside each)
 * leaves the loss sum unchanged (relative 1e-6).
 * The change test is the sharp one: w4 - w0 is ~4 * lr per element.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_family.h"
#include "lt_model.h"
#include "lt_safetensors.h"
#include "lt_test.h"
#include "lt_trainer.h"

static const char *MODELS[32];

typedef struct fixture {
    int S, M, B, T;
    int32_t *tokens, *targets, *pos, *doc_start; /* (S, M, B, T) */
    cJSON *exp;
    lt_st_file *full, *lora;
} fixture;

static int32_t *get_i32(const lt_st_file *f, const char *name, size_t n) {
    const lt_st_tensor *t = lt_st_find(f, name);
    if (!t || t->dtype != LT_I32 || t->numel != n) return NULL;
    int32_t *p = malloc(t->nbytes);
    memcpy(p, t->data, t->nbytes);
    return p;
}

static double jnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static double jarr(const cJSON *o, const char *mode, const char *k, int i) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, mode);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(m, k);
    const cJSON *v = cJSON_GetArrayItem(a, i);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static lt_batch micro(const fixture *f, int s, int m) {
    size_t off = ((size_t)s * f->M + m) * f->B * f->T;
    lt_batch b = {f->B, f->T, f->tokens + off, f->targets + off, f->pos + off, f->doc_start + off};
    return b;
}

static lt_optim_cfg optim_cfg(const cJSON *e, int lora) {
    lt_optim_cfg c = {0};
    c.sched.kind = LT_SCHED_COSINE;
    c.sched.lr = jnum(e, lora ? "lr_lora" : "lr_full");
    c.sched.warmup_steps = (int64_t)jnum(e, "warmup_steps");
    c.sched.total_steps = (int64_t)jnum(e, "total_steps");
    c.sched.min_lr_ratio = jnum(e, "min_lr_ratio");
    c.beta1 = jnum(e, "beta1");
    c.beta2 = jnum(e, "beta2");
    c.eps = jnum(e, "eps");
    c.weight_decay = jnum(e, "weight_decay");
    c.clip = jnum(e, "clip");
    return c;
}

static int load_fixture(const char *name, fixture *f) {
    char path[4096];
    lt_err err;
    memset(f, 0, sizeof *f);
    snprintf(path, sizeof path, "%s/%s/expected.json", lt_src_path("tests/fixtures/train"), name);
    char *txt = NULL;
    size_t len;
    if (lt_read_file(path, &txt, &len, &err)) return 0;
    f->exp = cJSON_Parse(txt);
    free(txt);
    f->S = (int)jnum(f->exp, "steps");
    f->M = (int)jnum(f->exp, "micro");
    f->B = (int)jnum(f->exp, "B");
    f->T = (int)jnum(f->exp, "T");
    lt_st_file *bf;
    snprintf(path, sizeof path, "%s/%s/batches.safetensors", lt_src_path("tests/fixtures/train"), name);
    if (lt_st_open(path, &bf, &err)) return 0;
    size_t n = (size_t)f->S * f->M * f->B * f->T;
    f->tokens = get_i32(bf, "tokens", n);
    f->targets = get_i32(bf, "targets", n);
    f->pos = get_i32(bf, "pos", n);
    f->doc_start = get_i32(bf, "doc_start", n);
    lt_st_close(bf);
    snprintf(path, sizeof path, "%s/%s/full.safetensors", lt_src_path("tests/fixtures/train"), name);
    if (lt_st_open(path, &f->full, &err)) return 0;
    snprintf(path, sizeof path, "%s/%s/lora.safetensors", lt_src_path("tests/fixtures/train"), name);
    if (lt_st_open(path, &f->lora, &err)) return 0;
    return f->tokens && f->targets && f->pos && f->doc_start;
}

static void free_fixture(fixture *f) {
    free(f->tokens);
    free(f->targets);
    free(f->pos);
    free(f->doc_start);
    cJSON_Delete(f->exp);
    lt_st_close(f->full);
    lt_st_close(f->lora);
}

static double rel(double a, double b) { return fabs(a - b) / fabs(b); }

/* run the fixture's steps; compare losses / norms; returns max rel errors */
static void run_steps(const char *name, const char *mode, lt_trainer *tr, const fixture *f, double *lmax,
                      double *gmax) {
    for (int s = 0; s < f->S; s++) {
        lt_batch mb[8];
        for (int m = 0; m < f->M; m++) mb[m] = micro(f, s, m);
        lt_train_stats st = {0};
        st.loss = NAN;
        lt_err err = {{0}};
        LT_CHECK_OK(lt_trainer_step(tr, mb, f->M, &st, &err), &err);
        double el = rel(st.loss, jarr(f->exp, mode, "loss", s)), eg = rel(st.grad_norm, jarr(f->exp, mode, "grad_norm", s));
        double elr = fabs(st.lr - jarr(f->exp, mode, "lr", s));
        LT_CHECK(el <= 1e-5, "%s %s step %d: loss %.9g vs torch %.9g", name, mode, s + 1, st.loss,
                 jarr(f->exp, mode, "loss", s));
        LT_CHECK(eg <= 1e-4, "%s %s step %d: grad norm %.9g vs torch %.9g", name, mode, s + 1, st.grad_norm,
                 jarr(f->exp, mode, "grad_norm", s));
        LT_CHECK(elr <= 1e-12, "%s %s step %d: lr %.17g vs torch %.17g", name, mode, s + 1, st.lr,
                 jarr(f->exp, mode, "lr", s));
        if (!(el <= *lmax)) *lmax = el;
        if (!(eg <= *gmax)) *gmax = eg;
    }
}

/* compare the optimizer's tensors with the reference file (values and change from w0) */
static void check_weights(const char *name, const char *mode, lt_trainer *tr, const lt_st_file *ref,
                          float *const *w0, double *werr, double *derr) {
    lt_optim *o = lt_trainer_optim(tr);
    double num = 0, den = 0, dnum = 0, dden = 0;
    for (size_t i = 0; i < lt_optim_count(o); i++) {
        const lt_st_tensor *t = lt_st_find(ref, lt_optim_name(o, i));
        LT_CHECK(t != NULL, "%s %s: reference lacks '%s'", name, mode, lt_optim_name(o, i));
        if (!t) continue;
        float *got = malloc(t->numel * sizeof *got), *want = malloc(t->numel * sizeof *want);
        lt_poison(got, t->numel);
        lt_err err;
        LT_CHECK_OK(lt_optim_get_param(o, i, got, &err), &err);
        LT_CHECK_OK(lt_st_to_f32(t, want, t->numel, &err), &err);
        for (size_t j = 0; j < t->numel; j++) {
            double d = (double)got[j] - want[j], dw = (double)want[j] - w0[i][j], dg = (double)got[j] - w0[i][j];
            if (!isfinite(d)) d = INFINITY;
            num += d * d;
            den += (double)want[j] * want[j];
            dnum += (dg - dw) * (dg - dw);
            dden += dw * dw;
        }
        free(got);
        free(want);
    }
    *werr = sqrt(num / den);
    *derr = sqrt(dnum / dden);
    LT_CHECK(*werr <= 1e-6, "%s %s: weights after the steps: normalized error %.3g", name, mode, *werr);
    LT_CHECK(*derr <= 1e-3, "%s %s: weight change: normalized error %.3g", name, mode, *derr);
}

/* the trainable tensors' values now (f32 host copies, optimizer order) */
static float **snapshot(lt_trainer *tr) {
    lt_optim *o = lt_trainer_optim(tr);
    float **w = calloc(lt_optim_count(o), sizeof *w);
    lt_tlist l = {0};
    lt_err err;
    LT_CHECK_OK(lt_optim_params_to_tlist(o, &l, &err), &err);
    for (size_t i = 0; i < l.n; i++) {
        w[i] = malloc(l.items[i].numel * sizeof(float));
        memcpy(w[i], l.items[i].data, l.items[i].numel * sizeof(float));
    }
    lt_tlist_free(&l);
    return w;
}

static void free_snapshot(float **w, size_t n) {
    for (size_t i = 0; i < n; i++) free(w[i]);
    free(w);
}

static lt_model *load_model(lt_backend *be, const char *name) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", lt_src_path("tests/fixtures/models"), name);
    lt_model *m = NULL;
    lt_err err;
    LT_CHECK_OK(lt_model_load(dir, be, &m, &err), &err);
    return m;
}

/* reverse the documents of every sequence and swap sequences 0 and 1 */
static void reorder(const lt_batch *b, int32_t *tok, int32_t *tg, int32_t *pos, int32_t *ds) {
    int T = b->T;
    for (int s = 0; s < b->B; s++) {
        int src = b->B - 1 - s, o = 0;
        const int32_t *st = b->doc_start + (size_t)src * T;
        for (int end = T; end > 0;) {
            int start = st[end - 1];
            for (int j = start; j < end; j++, o++) {
                size_t d = (size_t)s * T + o, x = (size_t)src * T + j;
                tok[d] = b->tokens[x];
                tg[d] = b->targets[x];
                pos[d] = j - start;
                ds[d] = o - (j - start);
            }
            end = start;
        }
    }
}

int main(void) {
    lt_backend *be = NULL;
    lt_err err = {{0}};
    if (lt_cpu_backend_create(2, &be, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    printf("%-11s %-5s %10s %10s %10s %10s %10s\n", "model", "mode", "loss rel", "gnorm rel", "weights", "change",
           "logits");
    const size_t NM = lt_family_fixtures(MODELS, sizeof MODELS / sizeof MODELS[0]);
    for (size_t k = 0; k < NM; k++) {
        const char *name = MODELS[k];
        fixture f;
        if (!load_fixture(name, &f)) {
            LT_CHECK(0, "%s: cannot read the fixture", name);
            continue;
        }
        /* ---- full fine-tuning */
        lt_model *m = load_model(be, name);
        lt_trainer *tr = NULL;
        lt_optim_cfg oc = optim_cfg(f.exp, 0);
        if (m && !lt_model_plan(m, f.B, f.T, &err) && !lt_trainer_create(m, &oc, 0, 0, &tr, &err)) {
            float **w0 = snapshot(tr);
            double lmax = 0, gmax = 0, we, de;
            run_steps(name, "full", tr, &f, &lmax, &gmax);
            check_weights(name, "full", tr, f.full, w0, &we, &de);
            printf("%-11s %-5s %10.2g %10.2g %10.2g %10.2g %10s\n", name, "full", lmax, gmax, we, de, "-");
            free_snapshot(w0, lt_optim_count(lt_trainer_optim(tr)));
        } else {
            LT_CHECK(0, "%s full: setup: %s", name, err.msg);
        }
        lt_trainer_free(tr);
        lt_model_free(m);

        /* ---- LoRA from the PEFT adapter */
        m = load_model(be, name);
        tr = NULL;
        char adir[4096];
        snprintf(adir, sizeof adir, "%s/%s/adapter", lt_src_path("tests/fixtures/train"), name);
        lt_peft_config pc;
        oc = optim_cfg(f.exp, 1);
        if (m && !lt_trainer_load_adapter(m, adir, &pc, &err) && !lt_model_plan(m, f.B, f.T, &err)) {
            size_t nl = (size_t)f.B * f.T * lt_model_config(m)->vocab_size;
            float *lg = malloc(nl * sizeof *lg);
            lt_poison(lg, nl);
            lt_batch b0 = micro(&f, 0, 0);
            lt_step_result r;
            LT_CHECK_OK(lt_model_step(m, &b0, 0, 1.0, &r, &err), &err);
            LT_CHECK_OK(lt_model_get_logits(m, lg, &err), &err);
            const lt_st_tensor *t = lt_st_find(f.lora, "logits0");
            float *want = malloc(nl * sizeof *want);
            lt_cmp c = {0};
            if (t && t->numel == nl && !lt_st_to_f32(t, want, nl, &err)) {
                c = lt_compare(lg, want, nl);
                char what[128];
                snprintf(what, sizeof what, "%s: logits with the PEFT adapter", name);
                lt_check_close(what, lg, want, nl, 1e-5);
            } else {
                LT_CHECK(0, "%s: logits0 missing", name);
            }
            free(lg);
            free(want);
            /* only the adapter is trainable */
            size_t ntrain = 0;
            for (size_t i = 0; i < lt_model_num_params(m); i++) {
                lt_param *p = lt_model_param(m, i);
                if (p->trainable) {
                    ntrain++;
                    LT_CHECK(lt_trainer_is_lora_param(p->name), "%s: '%s' trainable in LoRA mode", name, p->name);
                }
            }
            if (!lt_trainer_create(m, &oc, 0, 0, &tr, &err)) {
                LT_CHECK(lt_optim_count(lt_trainer_optim(tr)) == ntrain, "%s: optimizer holds %zu tensors", name,
                         lt_optim_count(lt_trainer_optim(tr)));
                for (size_t i = 0; i < lt_model_num_params(m); i++) {
                    lt_param *p = lt_model_param(m, i);
                    LT_CHECK(p->trainable || !p->grad, "%s: frozen '%s' has a gradient buffer", name, p->name);
                }
                float **w0 = snapshot(tr);
                double lmax = 0, gmax = 0, we, de;
                run_steps(name, "lora", tr, &f, &lmax, &gmax);
                check_weights(name, "lora", tr, f.lora, w0, &we, &de);
                printf("%-11s %-5s %10.2g %10.2g %10.2g %10.2g %10.2g\n", name, "lora", lmax, gmax, we, de,
                       c.norm_err);
                free_snapshot(w0, lt_optim_count(lt_trainer_optim(tr)));
            } else {
                LT_CHECK(0, "%s lora: %s", name, err.msg);
            }
        } else {
            LT_CHECK(0, "%s lora: setup: %s", name, err.msg);
        }
        lt_trainer_free(tr);
        lt_model_free(m);

        /* ---- accumulation and packing order (llama) */
        if (k == 0) {
            lt_model *a = load_model(be, name), *b = load_model(be, name);
            lt_trainer *ta = NULL, *tb = NULL;
            oc = optim_cfg(f.exp, 0);
            oc.sched.warmup_steps = 0; /* a real update at step 1 */
            int ok = a && b && !lt_model_plan(a, f.B, f.T, &err) && !lt_model_plan(b, 2 * f.B, f.T, &err) &&
                     !lt_trainer_create(a, &oc, 0, 0, &ta, &err) && !lt_trainer_create(b, &oc, 0, 0, &tb, &err);
            LT_CHECK(ok, "accumulation setup: %s", err.msg);
            if (ok) {
                lt_batch mb[2] = {micro(&f, 0, 0), micro(&f, 0, 1)};
                size_t N = (size_t)f.B * f.T;
                /* one batch of 2B sequences = the two micro-batches one after the other */
                int32_t *big = malloc(4 * 2 * N * sizeof *big);
                lt_batch one = {2 * f.B, f.T, big, big + 2 * N, big + 4 * N, big + 6 * N};
                for (int j = 0; j < 2; j++) {
                    memcpy(big + j * N, mb[j].tokens, N * 4);
                    memcpy(big + 2 * N + j * N, mb[j].targets, N * 4);
                    memcpy(big + 4 * N + j * N, mb[j].pos, N * 4);
                    memcpy(big + 6 * N + j * N, mb[j].doc_start, N * 4);
                }
                lt_train_stats sa, sb;
                LT_CHECK_OK(lt_trainer_step(ta, mb, 2, &sa, &err), &err);
                LT_CHECK_OK(lt_trainer_step(tb, &one, 1, &sb, &err), &err);
                LT_CHECK(rel(sa.loss, sb.loss) <= 1e-6 && rel(sa.grad_norm, sb.grad_norm) <= 1e-6 &&
                             sa.target_tokens == sb.target_tokens,
                         "accumulation: 2 x %d: loss %.9g gnorm %.9g; 1 x %d: loss %.9g gnorm %.9g", f.B, sa.loss,
                         sa.grad_norm, 2 * f.B, sb.loss, sb.grad_norm);
                lt_optim *oa = lt_trainer_optim(ta), *ob = lt_trainer_optim(tb);
                double num = 0, den = 0;
                for (size_t i = 0; i < lt_optim_count(oa); i++) {
                    lt_param *p = lt_model_find_param(a, lt_optim_name(oa, i));
                    float *x = malloc(p->numel * 4), *y = malloc(p->numel * 4);
                    lt_optim_get_param(oa, i, x, &err);
                    lt_optim_get_param(ob, i, y, &err);
                    for (size_t j = 0; j < p->numel; j++) {
                        num += ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
                        den += (double)y[j] * y[j];
                    }
                    free(x);
                    free(y);
                }
                double acc_err = sqrt(num / den);
                LT_CHECK(acc_err <= 2e-6, "accumulation: weights differ, normalized %.3g", acc_err);
                printf("accumulation 2 x %d vs 1 x %d: loss rel %.2g, grad norm rel %.2g, weights %.2g\n", f.B,
                       2 * f.B, rel(sa.loss, sb.loss), rel(sa.grad_norm, sb.grad_norm), acc_err);
                /* packing order: forward-only loss sums */
                int32_t *re = malloc(4 * N * sizeof *re);
                reorder(&mb[0], re, re + N, re + 2 * N, re + 3 * N);
                lt_batch rb = {f.B, f.T, re, re + N, re + 2 * N, re + 3 * N};
                lt_step_result r1, r2;
                LT_CHECK_OK(lt_model_step(a, &mb[0], 0, 1.0, &r1, &err), &err);
                LT_CHECK_OK(lt_model_step(a, &rb, 0, 1.0, &r2, &err), &err);
                LT_CHECK(r1.n_targets == r2.n_targets && rel(r2.loss_sum, r1.loss_sum) <= 1e-6,
                         "packing order: loss sum %.9g (%lld targets) vs reordered %.9g (%lld)", r1.loss_sum,
                         (long long)r1.n_targets, r2.loss_sum, (long long)r2.n_targets);
                printf("packing order: loss sum rel %.2g\n", rel(r2.loss_sum, r1.loss_sum));
                free(re);
                free(big);
            }
            lt_trainer_free(ta);
            lt_trainer_free(tb);
            lt_model_free(a);
            lt_model_free(b);
        }
        free_fixture(&f);
    }
    be->destroy(be);
    return lt_test_finish("test_train_torch");
}
