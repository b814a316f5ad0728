/*
 * test_model_recompute.c -- activation recomputation (lt_model_set_recompute)
 * and the per-layer gradient hook (lt_model_set_grad_hook), on the fixture
 * models (llama, llama_tied, qwen3: qk-norm, qwen2: biases, olmo2: post-norm, gemma2: four norms and
 * windows, gemma3: two rotary tables, phi3: fused projections, LongRoPE):
 *   - the gradients of a forward + backward with --recompute are BITWISE the
 *     gradients without it (full fine-tuning, and LoRA with dropout: the
 *     masks are replayed), on random packed batches; the losses too;
 *   - the gradients are not all zero and are finite (the comparison can fail);
 *   - the hook is called once per group in the documented order (head,
 *     layer L-1 .. 0, embedding), and when it is called for a group the
 *     group's gradients already have their final values (checked against
 *     a copy taken after the step).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_lora.h"
#include "lt_model.h"
#include "lt_test.h"
#include "lt_trainer.h"

enum { B = 2, T = 24 };

typedef struct hook_log {
    lt_model *m;
    int calls[64], n;
    float *snap; /* copy of each group's gradients at hook time (flat layout) */
} hook_log;

static void on_group(void *ctx, int group) {
    hook_log *h = ctx;
    if (h->n < 64) h->calls[h->n] = group;
    h->n++;
    size_t n = 0, off = 0;
    float *g = lt_model_grads_flat(h->m, &n);
    for (size_t i = 0; i < lt_model_num_params(h->m); i++) {
        lt_param *p = lt_model_param(h->m, i);
        if (!p->trainable) continue;
        if (lt_model_grad_group(h->m, i) == group) memcpy(h->snap + off, g + off, p->numel * sizeof(float));
        off += p->numel;
    }
}

static void make_batch(lt_rng *r, int V, int32_t *tok, int32_t *tgt, int32_t *pos, int32_t *doc) {
    lt_test_random_batch(r, B, T, V, 2, 10, 2, tok, tgt, pos, doc);
}

/* gradients (flat copy) and loss of one step; recompute on/off */
static int run_step(const char *dir, int lora, int recompute, const lt_batch *bt, float **grads, size_t *n,
                    double *loss, hook_log *hl) {
    lt_err err;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    int ok = 0;
    if (lt_cpu_backend_create(1, &be, &err) || lt_model_load(dir, be, &m, &err)) {
        fprintf(stderr, "%s: %s\n", dir, err.msg);
        goto done;
    }
    lt_rng rng;
    lt_rng_seed(&rng, 1234);
    if (lora) {
        if (!lt_test_add_lora(m, 0.2, &rng)) goto done; /* B != 0: A gets a gradient too */
        lt_model_set_rng(m, &rng);
    }
    lt_model_set_recompute(m, recompute);
    if (lt_model_plan(m, B, T, &err) || lt_model_alloc_grads(m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    float *g = lt_model_grads_flat(m, n);
    if (hl) {
        hl->m = m;
        hl->n = 0;
        hl->snap = malloc(*n * sizeof(float));
        lt_poison(hl->snap, *n);
        lt_model_set_grad_hook(m, on_group, hl);
    }
    lt_step_result res;
    if (lt_model_step(m, bt, 1, 100.0, &res, &err)) {
        fprintf(stderr, "step: %s\n", err.msg);
        goto done;
    }
    *grads = malloc(*n * sizeof(float));
    memcpy(*grads, g, *n * sizeof(float));
    *loss = res.loss_sum;
    if (hl) { /* groups the hook never saw stay NaN and fail the comparison */
        LT_CHECK(hl->n == lt_model_num_grad_groups(m), "%s: hook called %d times, expected %d", dir, hl->n,
                 lt_model_num_grad_groups(m));
        for (int k = 0; k < hl->n && k < 64; k++)
            LT_CHECK(hl->calls[k] == lt_model_grad_group_at(m, k), "%s: hook call %d for group %d, expected %d", dir,
                     k, hl->calls[k], lt_model_grad_group_at(m, k));
        LT_CHECK(!memcmp(hl->snap, g, *n * sizeof(float)),
                 "%s: a group's gradients changed after its hook was called", dir);
        free(hl->snap);
    }
    ok = 1;
done:
    lt_model_free(m);
    if (be) be->destroy(be);
    return ok;
}

int main(void) {
    const char *models[] = {"llama", "llama_tied", "qwen3", "qwen2", "olmo2", "gemma2", "gemma3", "phi3"};
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", lt_src_path("tests/fixtures/models"));
        snprintf(dir + strlen(dir), sizeof dir - strlen(dir), "/%s", models[mi]);
        lt_config cfg;
        lt_err err;
        if (lt_config_load(dir, &cfg, &err)) {
            LT_CHECK(0, "%s: %s", dir, err.msg);
            continue;
        }
        int32_t tok[B * T], tgt[B * T], pos[B * T], doc[B * T];
        lt_rng r;
        lt_rng_seed(&r, 77 + mi);
        make_batch(&r, cfg.vocab_size, tok, tgt, pos, doc);
        lt_batch bt = {.B = B, .T = T, .tokens = tok, .targets = tgt, .pos = pos, .doc_start = doc};
        for (int lora = 0; lora < 2; lora++) {
            float *g0 = NULL, *g1 = NULL;
            size_t n0 = 0, n1 = 0;
            double l0 = NAN, l1 = NAN;
            hook_log hl;
            int ok = run_step(dir, lora, 0, &bt, &g0, &n0, &l0, &hl) && run_step(dir, lora, 1, &bt, &g1, &n1, &l1, NULL);
            LT_CHECK(ok, "%s%s: the steps failed", models[mi], lora ? " LoRA" : "");
            if (ok) {
                size_t diff = 0, nonzero = 0, finite = 1;
                for (size_t i = 0; i < n0; i++) {
                    diff += memcmp(&g0[i], &g1[i], sizeof(float)) != 0;
                    nonzero += g0[i] != 0;
                    finite &= isfinite(g0[i]) != 0;
                }
                LT_CHECK(n0 == n1 && diff == 0, "%s%s: %zu of %zu gradient values differ with --recompute",
                         models[mi], lora ? " LoRA" : "", diff, n0);
                LT_CHECK(finite && nonzero > n0 / 2, "%s%s: gradients not finite or mostly zero (%zu of %zu nonzero)",
                         models[mi], lora ? " LoRA" : "", nonzero, n0);
                LT_CHECK(l0 == l1 && isfinite(l0), "%s%s: loss %.17g vs %.17g with --recompute", models[mi],
                         lora ? " LoRA" : "", l0, l1);
                printf("%s%s: %zu gradient values bitwise equal with and without recompute (loss sum %.9g)\n",
                       models[mi], lora ? " LoRA+dropout" : "", n0, l0);
            }
            free(g0);
            free(g1);
        }
    }
    return lt_test_finish("test_model_recompute");
}
