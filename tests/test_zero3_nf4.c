/*
 * test_zero3_nf4.c -- QLoRA under ZeRO-3 in the library (lt_trainer_distribute
 * with zero = 3 on a model with NF4 weights), one process ("single"
 * communicator), CPU: the two ways the trainer gets the NF4 parts --
 *   whole:    lt_model_load, lt_model_quantize_nf4 (every weight quantized
 *             whole), then the trainer cuts each NF4 buffer into its part;
 *   deferred: lt_model_load_deferred, lt_model_quantize_nf4 (only marks the
 *             weights), then the trainer quantizes its blocks from the file
 *             (lt_nf4_quantize_part) --
 * train three steps with the same losses and gradient norms, bit for bit, as
 * the same QLoRA model without ZeRO (llama: separate projections; phi3: the
 * fused qkv_proj / gate_up_proj quantized whole). The multi-rank runs (parts
 * cut at nested-block boundaries and inside them) are
 * tests/test_train_zero.sh's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_comm.h"
#include "lt_lora.h"
#include "lt_model.h"
#include "lt_test.h"
#include "lt_trainer.h"

enum { B = 2, T = 16, STEPS = 3 };
enum { PLAIN, WHOLE, DEFERRED };

/* STEPS optimizer steps of two micro-batches; losses and grad norms out */
static int run(const char *dir, int mode, const lt_batch *bt, double *loss, double *gnorm) {
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_comm *c = NULL;
    lt_trainer *t = NULL;
    int ok = 0;
    lt_status st = lt_cpu_backend_create(1, &be, &err);
    if (!st) st = mode == DEFERRED ? lt_model_load_deferred(dir, be, &m, &err) : lt_model_load(dir, be, &m, &err);
    lt_lora_spec ls = {.r = 4, .scale = 2.0f, .dropout = 0.0f, .targets = LT_LORA_ALL_TARGETS};
    if (!st) st = lt_model_add_lora(m, &ls, &err);
    lt_rng rng;
    lt_rng_seed(&rng, 5);
    for (size_t i = 0; !st && i < lt_model_num_params(m); i++) { /* A and B random, the same in every mode */
        lt_param *p = lt_model_param(m, i);
        if (!p->trainable) continue;
        float *h = malloc(p->numel * sizeof(float));
        for (size_t k = 0; k < p->numel; k++) h[k] = 0.05f * (float)(lt_rng_uniform(&rng) - 0.5);
        st = be->upload_f32(be, p->data, LT_F32, h, p->numel, &err);
        free(h);
    }
    if (!st) st = lt_model_quantize_nf4(m, &err);
    if (!st) st = lt_model_plan(m, B, T, &err);
    if (!st && mode != PLAIN) st = lt_model_pool_grads(m, &err);
    lt_optim_cfg oc = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
    oc.sched.lr = 1e-2;
    oc.sched.total_steps = STEPS;
    if (!st) st = lt_trainer_create(m, &oc, 0, 0, &t, &err);
    if (!st) st = lt_comm_create("single", NULL, &c, &err);
    if (!st) st = lt_trainer_distribute(t, c, mode == PLAIN ? 0 : 3, LT_F32, &err);
    for (int s = 0; !st && s < STEPS; s++) {
        lt_train_stats ts;
        st = lt_trainer_step(t, bt, 2, &ts, &err);
        loss[s] = ts.loss;
        gnorm[s] = ts.grad_norm;
    }
    if (st) fprintf(stderr, "%s, mode %d: %s\n", dir, mode, err.msg);
    else ok = 1;
    if (!st && mode != PLAIN) LT_CHECK(lt_model_weights_sharded(m), "%s, mode %d: not sharded", dir, mode);
    lt_trainer_free(t);
    if (c) c->destroy(c);
    lt_model_free(m);
    if (be) be->destroy(be);
    return ok;
}

int main(void) {
    const char *models[] = {"llama", "phi3"};
    for (size_t mi = 0; mi < 2; mi++) {
        char dir[1024];
        lt_config cfg;
        if (!lt_test_fixture_model(models[mi], dir, sizeof dir, &cfg)) continue;
        int32_t tok[2][B * T], tgt[2][B * T], pos[2][B * T], doc[2][B * T];
        lt_batch bt[2];
        lt_rng r;
        lt_rng_seed(&r, 11 + mi);
        for (int k = 0; k < 2; k++) {
            lt_test_random_batch(&r, B, T, cfg.vocab_size, 2, 10, 2, tok[k], tgt[k], pos[k], doc[k]);
            bt[k] = (lt_batch){.B = B, .T = T, .tokens = tok[k], .targets = tgt[k], .pos = pos[k], .doc_start = doc[k]};
        }
        double l[3][STEPS], g[3][STEPS];
        int ok = 1;
        for (int mode = PLAIN; mode <= DEFERRED; mode++) ok &= run(dir, mode, bt, l[mode], g[mode]);
        LT_CHECK(ok, "%s: a run failed", models[mi]);
        if (!ok) continue;
        for (int mode = WHOLE; mode <= DEFERRED; mode++)
            for (int s = 0; s < STEPS; s++)
                LT_CHECK(l[mode][s] == l[PLAIN][s] && g[mode][s] == g[PLAIN][s] && isfinite(l[mode][s]),
                         "%s, %s: step %d loss %.17g grad norm %.17g, without ZeRO %.17g %.17g", models[mi],
                         mode == WHOLE ? "quantized whole, then cut" : "deferred, quantized by parts", s + 1,
                         l[mode][s], g[mode][s], l[PLAIN][s], g[PLAIN][s]);
        LT_CHECK(l[PLAIN][STEPS - 1] < l[PLAIN][0], "%s: the loss does not fall (%g -> %g)", models[mi], l[PLAIN][0],
                 l[PLAIN][STEPS - 1]);
    }
    return lt_test_finish("test_zero3_nf4");
}
