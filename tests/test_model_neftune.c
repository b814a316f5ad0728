/*
 * test_model_neftune.c -- NEFTune (lt_model_set_neftune) on the fixture
 * models, full fine-tuning and LoRA, CPU backend:
 *   - formula and place: a training step with alpha A and stream `key` is
 *     BITWISE the same step without noise on a model whose embedding rows
 *     were moved by the noise beforehand (every token id of the batch is
 *     distinct, so row n of the lookup is row tok[n] of the table). The
 *     noise there is written from TRL's neftune_post_forward_hook:
 *     mag_norm = alpha / sqrt(L * d) in fp32, L = the row length T (the
 *     padded length, output.size(1)), d = hidden size, uniform in
 *     [-mag_norm, mag_norm) -- here with the backend's shared draws
 *     lt_embed_noise_u. So the noise lands after the lookup, before the first
 *     layer, with TRL's scale, and the gradients (embedding, head, LoRA A/B)
 *     pass through it unchanged;
 *   - alpha 0 is bitwise no NEFTune, and alpha > 0 does change the step;
 *   - with --recompute the step is bitwise the same (the noisy embedding
 *     output is the saved input of layer 0, never redrawn);
 *   - forward-only steps (eval, score) and KV-cache decoding (generate) are
 *     untouched by it.
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
static const float ALPHA = 5.0f;
static const uint64_t KEY = 0x5eed0fa11u;

typedef struct run {
    float *grads;
    size_t n;
    double loss;
    float *logits; /* decode logits of the first 5 tokens (last row) */
} run;

/* mode: 0 no NEFTune, 1 NEFTune alpha, 2 NEFTune alpha 0, 3 no NEFTune on
 * the table moved by the noise, 4 NEFTune alpha with --recompute; backward:
 * a training step, else forward only */
static int run_step(const char *dir, int lora, int mode, int backward, const lt_batch *bt, run *out) {
    lt_err err;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    int ok = 0;
    memset(out, 0, sizeof *out);
    if (lt_cpu_backend_create(1, &be, &err) || lt_model_load(dir, be, &m, &err)) {
        fprintf(stderr, "%s: %s\n", dir, err.msg);
        goto done;
    }
    const lt_config *c = lt_model_config(m);
    int C = c->hidden_size;
    if (mode == 3) { /* TRL's hook, applied by hand to the rows the batch looks up */
        lt_param *e = lt_model_find_param(m, "model.embed_tokens.weight");
        float *tab = malloc(e->numel * sizeof(float));
        be->download_f32(be, tab, e->data, LT_F32, e->numel, &err);
        float dims = (float)(T * C); /* torch.tensor(output.size(1) * output.size(2)) */
        float mag_norm = ALPHA / sqrtf(dims);
        for (int n = 0; n < B * T; n++)
            for (int j = 0; j < C; j++) {
                float d = mag_norm * lt_embed_noise_u(KEY, (uint64_t)n * C + j); /* uniform_(-mag_norm, mag_norm) */
                tab[(size_t)bt->tokens[n] * C + j] += d;
            }
        be->upload_f32(be, e->data, LT_F32, tab, e->numel, &err);
        free(tab);
    }
    lt_rng rng;
    lt_rng_seed(&rng, 4321);
    if (lora && !lt_test_add_lora(m, 0.0, &rng)) goto done; /* B != 0: A gets a gradient too */
    if (mode == 1 || mode == 2 || mode == 4) lt_model_set_neftune(m, mode == 2 ? 0.0f : ALPHA, KEY);
    lt_model_set_recompute(m, mode == 4);
    if (lt_model_plan(m, B, T, &err) || lt_model_alloc_grads(m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        goto done;
    }
    float *g = lt_model_grads_flat(m, &out->n);
    lt_step_result res;
    if (lt_model_step(m, bt, backward, 100.0, &res, &err)) {
        fprintf(stderr, "step: %s\n", err.msg);
        goto done;
    }
    out->loss = res.loss_sum;
    out->grads = malloc(out->n * sizeof(float));
    memcpy(out->grads, g, out->n * sizeof(float));
    /* generate's path: the KV-cache decode of the first 5 tokens */
    out->logits = malloc((size_t)c->vocab_size * sizeof(float));
    if (lt_model_kv_init(m, 16, &err) || lt_model_decode(m, bt->tokens, 5, out->logits, 0, &err)) {
        fprintf(stderr, "decode: %s\n", err.msg);
        goto done;
    }
    ok = 1;
done:
    lt_model_free(m);
    if (be) be->destroy(be);
    return ok;
}

static void run_free(run *r) {
    free(r->grads);
    free(r->logits);
}

static int same(const run *a, const run *b, int V) {
    return a->n == b->n && a->loss == b->loss && !memcmp(a->grads, b->grads, a->n * sizeof(float)) &&
           !memcmp(a->logits, b->logits, (size_t)V * sizeof(float));
}

int main(void) {
    const char *models[] = {"llama", "qwen2"}; /* untied heads: moving embedding rows leaves the head alone */
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", lt_src_path("tests/fixtures/models"), models[mi]);
        lt_config cfg;
        lt_err err;
        if (lt_config_load(dir, &cfg, &err)) {
            LT_CHECK(0, "%s: %s", dir, err.msg);
            continue;
        }
        if (cfg.tie_word_embeddings) {
            LT_CHECK(0, "%s: the fixture is tied; this test needs an untied head", models[mi]);
            continue;
        }
        LT_CHECK(cfg.vocab_size >= B * T, "%s: vocab %d < %d distinct tokens", models[mi], cfg.vocab_size, B * T);
        /* distinct token ids (a shuffled range); two documents in the first row */
        int32_t tok[B * T], tgt[B * T], pos[B * T], doc[B * T];
        lt_rng r;
        lt_rng_seed(&r, 99 + mi);
        int V = cfg.vocab_size;
        int32_t *perm = malloc((size_t)V * sizeof *perm);
        for (int i = 0; i < V; i++) perm[i] = i;
        for (int i = V - 1; i > 0; i--) {
            int j = (int)(lt_rng_u64(&r) % (uint64_t)(i + 1)), t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        for (int n = 0; n < B * T; n++) {
            int t = n % T, d0 = (n < T && t >= 10) ? 10 : 0;
            tok[n] = perm[n];
            pos[n] = t - d0;
            doc[n] = d0;
            tgt[n] = t + 1 < T ? (int32_t)(lt_rng_u64(&r) % (uint64_t)V) : -1;
        }
        free(perm);
        lt_batch bt = {.B = B, .T = T, .tokens = tok, .targets = tgt, .pos = pos, .doc_start = doc};
        for (int lora = 0; lora < 2; lora++) {
            const char *nm = lora ? " LoRA" : "";
            run plain, noisy, zero, moved, evp, evn, rec;
            int ok = run_step(dir, lora, 0, 1, &bt, &plain) && run_step(dir, lora, 1, 1, &bt, &noisy) &&
                     run_step(dir, lora, 4, 1, &bt, &rec) &&
                     run_step(dir, lora, 2, 1, &bt, &zero) && run_step(dir, lora, 3, 1, &bt, &moved) &&
                     run_step(dir, lora, 0, 0, &bt, &evp) && run_step(dir, lora, 1, 0, &bt, &evn);
            LT_CHECK(ok, "%s%s: the steps failed", models[mi], nm);
            if (ok) {
                size_t nz = 0, diff = 0;
                for (size_t i = 0; i < noisy.n; i++) {
                    nz += noisy.grads[i] != 0;
                    diff += noisy.grads[i] != plain.grads[i];
                }
                LT_CHECK(nz > noisy.n / 2 && isfinite(noisy.loss), "%s%s: gradients mostly zero (%zu of %zu)",
                         models[mi], nm, nz, noisy.n);
                LT_CHECK(noisy.loss == moved.loss && !memcmp(noisy.grads, moved.grads, noisy.n * sizeof(float)),
                         "%s%s: NEFTune step differs from the step on TRL's noisy embeddings (loss %.17g vs %.17g)",
                         models[mi], nm, noisy.loss, moved.loss);
                LT_CHECK(noisy.loss != plain.loss && diff > 0, "%s%s: alpha %g changed nothing", models[mi], nm,
                         ALPHA);
                LT_CHECK(same(&rec, &noisy, V), "%s%s: NEFTune with --recompute differs from without", models[mi],
                         nm);
                LT_CHECK(same(&zero, &plain, V), "%s%s: alpha 0 is not bitwise no NEFTune", models[mi], nm);
                LT_CHECK(same(&evn, &evp, V), "%s%s: NEFTune changed a forward-only step or decoding", models[mi],
                         nm);
                LT_CHECK(!memcmp(noisy.logits, plain.logits, (size_t)V * sizeof(float)),
                         "%s%s: NEFTune changed decoding after a training step", models[mi], nm);
                printf("%s%s: NEFTune alpha %g step = step on TRL's noisy embeddings, bitwise (%zu grads, %zu "
                       "changed); alpha 0, eval and decode untouched\n",
                       models[mi], nm, ALPHA, noisy.n, diff);
            }
            run_free(&plain), run_free(&noisy), run_free(&zero), run_free(&moved), run_free(&evp), run_free(&evn), run_free(&rec);
        }
    }
    return lt_test_finish("test_model_neftune");
}
