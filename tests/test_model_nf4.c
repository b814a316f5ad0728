/*
 * test_model_nf4.c -- QLoRA in the model (lt_model_quantize_nf4), on the
 * fixture models llama, qwen2 (q/k/v biases) and phi3 (fused qkv_proj and
 * gate_up_proj, quantized whole as bitsandbytes does; q/v adapters mean one
 * on qkv_proj, gate_up_proj is a frozen fused NF4 weight read in parts), CPU:
 *   - a LoRA model (adapters on q, v and down: the other projections take
 *     the nf4_matmul ops, the adapted ones the dequantized weight) after
 *     quantization gives BITWISE the loss and adapter gradients of the same
 *     model whose projection weights were replaced on the host by their NF4
 *     round trip (core/lt_nf4.c, checked against bitsandbytes in test_nf4):
 *     the quantized path computes exactly "dequantize, then the fp32 model";
 *     with --recompute too;
 *   - the quantized model differs from the unquantized one (the test can fail);
 *   - the quantized model's adapter gradients agree with central finite
 *     differences of its own loss (the largest gradient of each adapter
 *     tensor of the first layer);
 *   - quantizing without adapters freezes the whole model (inference: eval,
 *     generate, score --quantize nf4), twice is refused, after the gradients
 *     are allocated too; lt_model_nf4_bytes (--dry-run) counts exactly the
 *     projection weights as NF4 and the others at the param size.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_lora.h"
#include "lt_model.h"
#include "lt_nf4.h"
#include "lt_test.h"

enum { B = 2, T = 24 };
static const unsigned TARGETS = (1u << LT_LORA_Q) | (1u << LT_LORA_V) | (1u << LT_LORA_DOWN);

static int is_proj_weight(const char *name) {
    static const char *const suf[] = {"q_proj.weight",   "k_proj.weight",  "v_proj.weight",
                                      "o_proj.weight",   "gate_proj.weight", "up_proj.weight",
                                      "down_proj.weight", "qkv_proj.weight", "gate_up_proj.weight"};
    size_t n = strlen(name);
    for (int i = 0; i < 9; i++) {
        size_t k = strlen(suf[i]);
        if (n > k && !strcmp(name + n - k, suf[i]) && name[n - k - 1] == '.' && !strstr(name, "lora_")) return 1;
    }
    return 0;
}

/* loss_sum of a forward pass */
static double fwd_loss(lt_model *m, const lt_batch *bt) {
    lt_err err;
    lt_step_result res;
    if (lt_model_step(m, bt, 0, 1.0, &res, &err)) {
        LT_CHECK(0, "forward: %s", err.msg);
        return NAN;
    }
    return res.loss_sum;
}

/* d(loss_sum / 100)/dtheta against central differences, for the largest
 * gradient of each adapter tensor of layer 0 (g: the step's gradients) */
static void check_fd(lt_model *m, const lt_batch *bt, const float *g, const char *dir) {
    lt_backend *be = lt_model_backend(m);
    lt_err err;
    size_t off = 0;
    for (size_t i = 0; i < lt_model_num_params(m); i++) {
        lt_param *p = lt_model_param(m, i);
        if (!p->trainable) continue;
        const float *pg = g + off;
        off += p->numel;
        if (strncmp(p->name, "model.layers.0.", 15) && strncmp(p->name, "base_model.model.model.layers.0.", 32)) continue;
        size_t k = 0;
        for (size_t j = 1; j < p->numel; j++)
            if (fabsf(pg[j]) > fabsf(pg[k])) k = j;
        float *h = malloc(p->numel * sizeof(float));
        LT_CHECK_OK(be->download_f32(be, h, p->data, LT_F32, p->numel, &err), &err);
        const float x0 = h[k], eps = 1e-2f;
        double lp, lm;
        h[k] = x0 + eps;
        LT_CHECK_OK(be->upload_f32(be, p->data, LT_F32, h, p->numel, &err), &err);
        lp = fwd_loss(m, bt);
        h[k] = x0 - eps;
        LT_CHECK_OK(be->upload_f32(be, p->data, LT_F32, h, p->numel, &err), &err);
        lm = fwd_loss(m, bt);
        h[k] = x0;
        LT_CHECK_OK(be->upload_f32(be, p->data, LT_F32, h, p->numel, &err), &err);
        free(h);
        double fd = (lp - lm) / (2.0 * eps) / 100.0;
        LT_CHECK(fabs(fd - pg[k]) <= 5e-3 * fabs(pg[k]) + 1e-6, "%s: %s[%zu]: gradient %.7g, finite differences %.7g",
                 dir, p->name, k, pg[k], fd);
    }
}

/* mode 0: plain LoRA; 1: quantized; 2: weights replaced by their NF4 round trip */
static int run(const char *dir, int mode, int recompute, const lt_batch *bt, float **grads, size_t *n, double *loss) {
    lt_err err;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    int ok = 0;
    if (lt_cpu_backend_create(1, &be, &err) || lt_model_load(dir, be, &m, &err)) {
        fprintf(stderr, "%s: %s\n", dir, err.msg);
        goto done;
    }
    if (mode == 2) { /* the host round trip of every projection weight */
        for (size_t i = 0; i < lt_model_num_params(m); i++) {
            lt_param *p = lt_model_param(m, i);
            if (!is_proj_weight(p->name)) continue;
            float *h = malloc(p->numel * sizeof(float));
            void *q = malloc(lt_nf4_layout_of(p->numel).bytes);
            LT_CHECK_OK(be->download_f32(be, h, p->data, be->param_dtype, p->numel, &err), &err);
            LT_CHECK_OK(lt_nf4_quantize(h, p->numel, q, &err), &err);
            lt_nf4_dequantize_f32(q, p->numel, h);
            LT_CHECK_OK(be->upload_f32(be, p->data, be->param_dtype, h, p->numel, &err), &err);
            free(h), free(q);
        }
    }
    lt_lora_spec ls = {.r = 4, .scale = 2.0f, .dropout = 0.0f, .targets = TARGETS};
    if (lt_model_add_lora(m, &ls, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    lt_rng rng;
    lt_rng_seed(&rng, 99);
    for (size_t i = 0; i < lt_model_num_params(m); i++) { /* A and B random (B = 0 gives A no gradient) */
        lt_param *p = lt_model_param(m, i);
        if (!p->trainable) continue;
        float *h = malloc(p->numel * sizeof(float));
        for (size_t k = 0; k < p->numel; k++) h[k] = 0.05f * (float)(lt_rng_uniform(&rng) - 0.5);
        LT_CHECK_OK(be->upload_f32(be, p->data, LT_F32, h, p->numel, &err), &err);
        free(h);
    }
    if (mode == 1) {
        if (lt_model_quantize_nf4(m, &err)) {
            fprintf(stderr, "quantize: %s\n", err.msg);
            goto done;
        }
        LT_CHECK(lt_model_is_quantized(m), "not quantized");
        LT_CHECK(lt_model_quantize_nf4(m, &err) == LT_ERR_INVALID, "quantized twice");
        for (size_t i = 0; i < lt_model_num_params(m); i++) {
            lt_param *p = lt_model_param(m, i);
            LT_CHECK(!is_proj_weight(p->name) || (!p->data && !p->trainable), "%s: '%s' is not replaced by NF4", dir,
                     p->name);
        }
    }
    lt_model_set_recompute(m, recompute);
    if (lt_model_plan(m, B, T, &err) || lt_model_alloc_grads(m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    float *g = lt_model_grads_flat(m, n);
    lt_step_result res;
    if (lt_model_step(m, bt, 1, 100.0, &res, &err)) {
        fprintf(stderr, "step: %s\n", err.msg);
        goto done;
    }
    *grads = malloc(*n * sizeof(float));
    memcpy(*grads, g, *n * sizeof(float));
    *loss = res.loss_sum;
    ok = 1;
    if (mode == 1 && !recompute) check_fd(m, bt, *grads, dir);
done:
    lt_model_free(m);
    if (be) be->destroy(be);
    return ok;
}

/* without adapters: every parameter frozen, the forward runs; after the
 * gradients are allocated quantizing is refused */
static void check_inference(const char *dir, const lt_batch *bt, double lq_ref) {
    lt_err err;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    LT_CHECK_OK(lt_cpu_backend_create(1, &be, &err), &err);
    LT_CHECK_OK(lt_model_load(dir, be, &m, &err), &err);
    if (!m) return;
    LT_CHECK_OK(lt_model_quantize_nf4(m, &err), &err);
    size_t trainable = 0;
    for (size_t i = 0; i < lt_model_num_params(m); i++) trainable += lt_model_param(m, i)->trainable;
    LT_CHECK(trainable == 0, "%s: %zu parameters still train after quantizing without adapters", dir, trainable);
    LT_CHECK_OK(lt_model_plan(m, B, T, &err), &err);
    double l = fwd_loss(m, bt);
    LT_CHECK(isfinite(l) && l != lq_ref, "%s: NF4 inference loss %.17g (adapted: %.17g)", dir, l, lq_ref);
    lt_model_free(m);
    LT_CHECK_OK(lt_model_load(dir, be, &m, &err), &err);
    LT_CHECK_OK(lt_model_plan(m, B, T, &err), &err);
    LT_CHECK_OK(lt_model_alloc_grads(m, &err), &err);
    LT_CHECK(lt_model_quantize_nf4(m, &err) == LT_ERR_INVALID && strstr(err.msg, "gradients"),
             "%s: quantizing after the gradients: %s", dir, err.msg);
    lt_model_free(m);
    be->destroy(be);
}

static void check_bytes(const char *dir) {
    lt_config cfg;
    lt_err err;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    LT_CHECK_OK(lt_config_load(dir, &cfg, &err), &err);
    LT_CHECK_OK(lt_cpu_backend_create(1, &be, &err), &err);
    LT_CHECK_OK(lt_model_load(dir, be, &m, &err), &err);
    if (!m) return;
    double proj = 0, other = 0, proj_bytes = 0;
    for (size_t i = 0; i < lt_model_num_params(m); i++) {
        lt_param *p = lt_model_param(m, i);
        if (is_proj_weight(p->name)) {
            proj += (double)p->numel;
            proj_bytes += (double)lt_nf4_layout_of(p->numel).bytes;
        } else {
            other += (double)p->numel;
        }
    }
    lt_nf4_bytes qb;
    LT_CHECK_OK(lt_model_nf4_bytes(&cfg, 2, &qb, &err), &err);
    LT_CHECK(qb.nf4_params == proj && qb.nf4_bytes == proj_bytes && qb.other_params == other &&
                 qb.other_bytes == 2 * other && qb.scratch_bytes > 0,
             "%s: nf4_bytes %g params / %g bytes, other %g; model: %g / %g, %g", dir, qb.nf4_params, qb.nf4_bytes,
             qb.other_params, proj, proj_bytes, other);
    LT_CHECK(qb.nf4_bytes < 0.53 * proj && qb.nf4_bytes > 0.5 * proj, "%s: %g NF4 bytes for %g weights", dir,
             qb.nf4_bytes, proj);
    lt_model_free(m);
    be->destroy(be);
}

int main(void) {
    const char *models[] = {"llama", "qwen2", "phi3"};
    for (size_t mi = 0; mi < 3; mi++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", lt_src_path("tests/fixtures/models"), models[mi]);
        lt_config cfg;
        lt_err err;
        if (lt_config_load(dir, &cfg, &err)) {
            LT_CHECK(0, "%s: %s", dir, err.msg);
            continue;
        }
        check_bytes(dir);
        int32_t tok[B * T], tgt[B * T], pos[B * T], doc[B * T];
        lt_rng r;
        lt_rng_seed(&r, 7 + mi);
        lt_test_random_batch(&r, B, T, cfg.vocab_size, 2, 10, 2, tok, tgt, pos, doc);
        lt_batch bt = {.B = B, .T = T, .tokens = tok, .targets = tgt, .pos = pos, .doc_start = doc};
        float *g0 = NULL, *gq = NULL, *gr = NULL, *gq2 = NULL;
        size_t n0 = 0, nq = 0, nr = 0, nq2 = 0;
        double l0 = NAN, lq = NAN, lr = NAN, lq2 = NAN;
        int ok = run(dir, 0, 0, &bt, &g0, &n0, &l0) && run(dir, 1, 0, &bt, &gq, &nq, &lq) &&
                 run(dir, 2, 0, &bt, &gr, &nr, &lr) && run(dir, 1, 1, &bt, &gq2, &nq2, &lq2);
        LT_CHECK(ok, "%s: the steps failed", models[mi]);
        if (ok) {
            LT_CHECK(nq == nr && nq == n0 && nq2 == nq && !memcmp(gq, gr, nq * sizeof(float)),
                     "%s: quantized gradients differ from the NF4 round-trip model's", models[mi]);
            LT_CHECK(!memcmp(gq, gq2, nq * sizeof(float)) && lq == lq2, "%s: --recompute changes the QLoRA step",
                     models[mi]);
            LT_CHECK(lq == lr && isfinite(lq), "%s: loss %.17g (quantized) vs %.17g (round trip)", models[mi], lq, lr);
            LT_CHECK(lq != l0, "%s: quantization did not change the loss (%.17g)", models[mi], l0);
            size_t nonzero = 0;
            for (size_t i = 0; i < nq; i++) nonzero += gq[i] != 0;
            LT_CHECK(nonzero > nq / 2, "%s: %zu of %zu adapter gradients nonzero", models[mi], nonzero, nq);
            check_inference(dir, &bt, lq);
        }
        free(g0), free(gq), free(gr), free(gq2);
    }
    return lt_test_finish("test_model_nf4");
}
