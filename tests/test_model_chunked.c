/*
 * test_model_chunked.c -- the lm_head + cross-entropy in chunks of rows
 * (lt_model_set_logits_chunk, LT_LOGITS_CHUNK_ROWS) against one chunk of the
 * whole batch, on the fixture models (llama: untied head, llama_tied and
 * qwen3: tied embeddings, qwen2: biases), full fine-tuning and LoRA, with and
 * without --recompute. Batches of B = 2 x T = 7 (N = 14 rows: chunks of 1, 3
 * and 5 rows leave a partial last chunk), random packed documents and masks.
 *
 *   - forward-only: per-token losses and lt_model_get_logits (recomputed
 *     chunk by chunk into a NaN-poisoned buffer) within 1e-6 relative (the
 *     largest logit / the loss);
 *   - forward + backward: losses within 1e-6 relative; every gradient
 *     tensor within ||a - b|| <= 5e-6 ||b|| and max|a - b| <= 5e-6 max|b|.
 *   Not bitwise on the CPU backend: OpenBLAS's sgemm does not compute a row
 *   of x @ w^T the same way for every M (its edge micro-kernels), so the
 *   head products of 3 rows and of 14 rows can differ in the last bit, and
 *   the head's weight gradient is summed over the rows chunk by chunk (a
 *   different summation order). Measured: a few 1e-7, worst ~2e-6
 *   normwise (printed per case);
 *   - gradients finite and mostly nonzero (the comparison can fail);
 *   - LT_LOGITS_CHUNK_ROWS sets the chunk; an explicit setting wins.
 * Reference: the unchunked step, itself checked against transformers by
 * test_model_fixtures (one chunk covers N there).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_lora.h"
#include "lt_model.h"
#include "lt_test.h"
#include "lt_trainer.h"

enum { B = 2, T = 7, N = B * T };

static void make_batch(lt_rng *r, int V, int32_t *tok, int32_t *tgt, int32_t *pos, int32_t *doc) {
    lt_test_random_batch(r, B, T, V, 1, 5, 0, tok, tgt, pos, doc);
}

typedef struct result {
    float losses_fwd[N], losses_bwd[N];
    float *logits; /* (N, V) */
    float *grads;  /* flat */
    size_t n_grads;
    int chunk;
} result;

/* one forward-only step (losses, logits) and one forward + backward (grads) */
static int run(const char *dir, int lora, int recompute, int chunk, const lt_batch *bt, result *res) {
    lt_err err;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    int ok = 0;
    if (lt_cpu_backend_create(1, &be, &err) || lt_model_load(dir, be, &m, &err)) {
        fprintf(stderr, "%s: %s\n", dir, err.msg);
        goto done;
    }
    const lt_config *cfg = lt_model_config(m);
    lt_rng rng;
    lt_rng_seed(&rng, 4321);
    if (lora && !lt_test_add_lora(m, 0.0, &rng)) goto done; /* B != 0: A gets a gradient too */
    lt_model_set_recompute(m, recompute);
    lt_model_set_logits_chunk(m, chunk);
    if (lt_model_plan(m, B, T, &err) || lt_model_alloc_grads(m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    res->chunk = lt_model_logits_chunk(m);
    size_t V = (size_t)cfg->vocab_size;
    res->logits = malloc(N * V * sizeof(float));
    lt_poison(res->logits, N * V);
    lt_poison(res->losses_fwd, N);
    lt_poison(res->losses_bwd, N);
    lt_step_result sr;
    if (lt_model_step(m, bt, 0, 1.0, &sr, &err) || lt_model_get_token_losses(m, res->losses_fwd, &err) ||
        lt_model_get_logits(m, res->logits, &err)) {
        fprintf(stderr, "forward: %s\n", err.msg);
        goto done;
    }
    if (lt_model_step(m, bt, 1, 10.0, &sr, &err) || lt_model_get_token_losses(m, res->losses_bwd, &err)) {
        fprintf(stderr, "backward: %s\n", err.msg);
        goto done;
    }
    float *g = lt_model_grads_flat(m, &res->n_grads);
    res->grads = malloc(res->n_grads * sizeof(float));
    memcpy(res->grads, g, res->n_grads * sizeof(float));
    ok = 1;
done:
    lt_model_free(m);
    if (be) be->destroy(be);
    return ok;
}

/* the gradient comparison, per tensor (parameter order = flat layout) */
static void compare_grads(const char *dir, const char *tag, int lora, const result *a, const result *b) {
    lt_err err;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    if (lt_cpu_backend_create(1, &be, &err) || lt_model_load(dir, be, &m, &err)) {
        LT_CHECK(0, "%s: %s", dir, err.msg);
        goto done;
    }
    if (lora) {
        lt_peft_config pc = {0};
        pc.r = 4;
        pc.alpha = 8;
        pc.targets = LT_LORA_ALL_TARGETS;
        lt_rng rng;
        lt_rng_seed(&rng, 4321);
        if (lt_trainer_add_lora(m, &pc, &rng, &err)) {
            LT_CHECK(0, "%s", err.msg);
            goto done;
        }
    }
    LT_CHECK(a->n_grads == b->n_grads, "%s: %zu vs %zu gradient values", tag, a->n_grads, b->n_grads);
    if (a->n_grads != b->n_grads) goto done;
    const char *head = lt_model_config(m)->tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    size_t off = 0, nonzero = 0, total = 0, head_diff = 0, other_diff = 0;
    double worst = 0, worst_norm = 0;
    for (size_t i = 0; i < lt_model_num_params(m); i++) {
        lt_param *p = lt_model_param(m, i);
        if (!p->trainable) continue;
        const float *x = a->grads + off, *y = b->grads + off;
        double mx = 0, md = 0, dd = 0, yy = 0;
        size_t diff = 0;
        int finite = 1;
        for (size_t k = 0; k < p->numel; k++) {
            finite &= isfinite(x[k]) && isfinite(y[k]);
            if (fabs(y[k]) > mx) mx = fabs(y[k]);
            double d = fabs((double)x[k] - y[k]);
            if (d > md) md = d;
            dd += d * d;
            yy += (double)y[k] * y[k];
            diff += memcmp(&x[k], &y[k], sizeof(float)) != 0;
            nonzero += y[k] != 0;
        }
        total += p->numel;
        int is_head = !strcmp(p->name, head);
        if (is_head) head_diff = diff;
        LT_CHECK(finite, "%s: %s: non-finite gradient", tag, p->name);
        LT_CHECK(md <= 5e-6 * mx, "%s: %s: max |diff| %.3g > 5e-6 x max |g| %.3g", tag, p->name, md, mx);
        LT_CHECK(dd <= 25e-12 * yy, "%s: %s: ||diff|| / ||g|| = %.3g > 5e-6", tag, p->name, yy > 0 ? sqrt(dd / yy) : 0.0);
        if (!is_head) other_diff += diff;
        if (mx > 0 && md / mx > worst) worst = md / mx;
        if (yy > 0 && sqrt(dd / yy) > worst_norm) worst_norm = sqrt(dd / yy);
        off += p->numel;
    }
    LT_CHECK(nonzero > total / 2, "%s: gradients mostly zero (%zu of %zu nonzero)", tag, nonzero, total);
    printf("  %-26s chunk %d: gradient values not bitwise equal: head %zu, others %zu of %zu; worst tensor: "
           "max|diff|/max|g| %.2g, ||diff||/||g|| %.2g\n", tag, a->chunk, head_diff, other_diff, total, worst,
           worst_norm);
done:
    lt_model_free(m);
    if (be) be->destroy(be);
}

int main(void) {
    const char *models[] = {"llama", "llama_tied", "qwen3", "qwen2", "olmo2", "gemma2", "gemma3", "phi3"};
    const int chunks[] = {3, 1, 5};
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", lt_src_path("tests/fixtures/models"), models[mi]);
        lt_config cfg;
        lt_err err;
        if (lt_config_load(dir, &cfg, &err)) {
            LT_CHECK(0, "%s: %s", dir, err.msg);
            continue;
        }
        size_t V = (size_t)cfg.vocab_size;
        int32_t tok[N], tgt[N], pos[N], doc[N];
        lt_rng r;
        lt_rng_seed(&r, 99 + mi);
        make_batch(&r, cfg.vocab_size, tok, tgt, pos, doc);
        lt_batch bt = {.B = B, .T = T, .tokens = tok, .targets = tgt, .pos = pos, .doc_start = doc};
        for (int lora = 0; lora < 2; lora++) {
            for (int rc = 0; rc < 2; rc++) {
                if (lora && rc) continue; /* recompute x LoRA: test_model_recompute */
                result ref = {0};
                int ok = run(dir, lora, rc, 0, &bt, &ref);
                LT_CHECK(ok && ref.chunk == N, "%s: reference step failed or chunked (%d rows)", models[mi], ref.chunk);
                for (size_t ci = 0; ok && ci < sizeof chunks / sizeof chunks[0]; ci++) {
                    int chunk = chunks[ci];
                    if ((lora || rc) && ci) continue; /* one chunk size is enough there */
                    char tag[128];
                    snprintf(tag, sizeof tag, "%s%s%s", models[mi], lora ? " LoRA" : " full",
                             rc ? " recompute" : "");
                    result c = {0};
                    if (!run(dir, lora, rc, chunk, &bt, &c)) {
                        LT_CHECK(0, "%s chunk %d: the step failed", tag, chunk);
                        continue;
                    }
                    LT_CHECK(c.chunk == chunk, "%s: plan chunk %d, expected %d", tag, c.chunk, chunk);
                    double ld = 0, gmax = 0, gd = 0;
                    size_t lnan = 0;
                    for (int k = 0; k < N; k++) {
                        lnan += !isfinite(c.losses_fwd[k]) || !isfinite(c.losses_bwd[k]);
                        double d1 = fabs((double)c.losses_fwd[k] - ref.losses_fwd[k]);
                        double d2 = fabs((double)c.losses_bwd[k] - ref.losses_bwd[k]);
                        ld = fmax(ld, fmax(d1, d2) / fmax(1e-3, fabs(ref.losses_fwd[k])));
                    }
                    for (size_t k = 0; k < N * V; k++) {
                        lnan += !isfinite(c.logits[k]) || !isfinite(ref.logits[k]);
                        gmax = fmax(gmax, fabs(ref.logits[k]));
                        gd = fmax(gd, fabs((double)c.logits[k] - ref.logits[k]));
                    }
                    LT_CHECK(lnan == 0, "%s chunk %d: %zu losses / logits not finite", tag, chunk, lnan);
                    LT_CHECK(ld <= 1e-6, "%s chunk %d: losses differ by %.3g relative", tag, chunk, ld);
                    LT_CHECK(gd <= 1e-6 * gmax, "%s chunk %d: logits differ by %.3g (largest %.3g)", tag, chunk, gd,
                             gmax);
                    printf("  %-26s chunk %d: losses within %.2g relative, logits max|diff| / max|logit| %.2g\n",
                           tag, chunk, ld, gmax > 0 ? gd / gmax : 0.0);
                    compare_grads(dir, tag, lora, &c, &ref);
                    free(c.logits);
                    free(c.grads);
                }
                free(ref.logits);
                free(ref.grads);
            }
        }
    }
    /* the environment variable, and an explicit setting over it */
    {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/llama", lt_src_path("tests/fixtures/models"));
        lt_err err;
        lt_backend *be = NULL;
        lt_model *m = NULL;
        setenv("LT_LOGITS_CHUNK_ROWS", "4", 1);
        if (!lt_cpu_backend_create(1, &be, &err) && !lt_model_load(dir, be, &m, &err) &&
            !lt_model_plan(m, B, T, &err)) {
            LT_CHECK(lt_model_logits_chunk(m) == 4, "LT_LOGITS_CHUNK_ROWS=4: chunk %d", lt_model_logits_chunk(m));
            lt_model_set_logits_chunk(m, 6);
            LT_CHECK(lt_model_logits_chunk(m) == 0, "set_logits_chunk did not drop the plan");
            LT_CHECK_OK(lt_model_plan(m, B, T, &err), &err);
            LT_CHECK(lt_model_logits_chunk(m) == 6, "explicit chunk 6: got %d", lt_model_logits_chunk(m));
        } else {
            LT_CHECK(0, "%s", err.msg);
        }
        unsetenv("LT_LOGITS_CHUNK_ROWS");
        LT_CHECK(lt_model_logits_chunk_for(128256, 2, 4096, 0) == 1046 &&
                     lt_model_logits_chunk_for(128256, 4, 100, 0) == 100 &&
                     lt_model_logits_chunk_for(262144, 2, 1 << 20, 0) == 512,
                 "default chunk rows (256 MiB of logits): %d %d %d", lt_model_logits_chunk_for(128256, 2, 4096, 0),
                 lt_model_logits_chunk_for(128256, 4, 100, 0), lt_model_logits_chunk_for(262144, 2, 1 << 20, 0));
        lt_model_free(m);
        if (be) be->destroy(be);
    }
    return lt_test_finish("test_model_chunked");
}
