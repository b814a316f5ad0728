/*
 * test_packing.c -- packed documents behave like separate sequences.
 *
 * With fixture models (tests/fixtures/models/{llama,qwen2,qwen3}) on the CPU backend:
 *   - two documents packed into one sequence (plus padding) give the same
 *     logits and per-token losses as each document run alone, and the same
 *     accumulated gradients (normalized error <= 1e-6 for logits and losses,
 *     1e-5 for gradients, which sum rows in another order);
 *   - padding changes nothing: the same documents with no padding, or with
 *     other padding token ids, give the same losses;
 *   - the comparison is sensitive: running both documents as ONE document
 *     changes the second one's losses;
 *   - bad batches are refused with clear errors before any op runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_model.h"
#include "lt_test.h"

#define TOL 1e-6      /* logits, losses */
#define TOL_GRAD 1e-5 /* gradients: summed in another order (rows of one vs two matmuls) */

typedef struct run {
    float *logits, *losses;
    float **grads;
    lt_step_result res;
} run;

static float **download_grads(lt_model *m) {
    lt_backend *be = lt_model_backend(m);
    size_t np = lt_model_num_params(m);
    float **g = calloc(np, sizeof *g);
    for (size_t i = 0; i < np; i++) {
        lt_param *p = lt_model_param(m, i);
        g[i] = malloc(p->numel * sizeof(float));
        lt_poison(g[i], p->numel);
        lt_err err = {{0}};
        LT_CHECK_OK(be->download_f32(be, g[i], p->grad, LT_F32, p->numel, &err), &err);
    }
    return g;
}

static void free_grads(lt_model *m, float **g) {
    if (!g) return;
    for (size_t i = 0; i < lt_model_num_params(m); i++) free(g[i]);
    free(g);
}

/* One sequence of T tokens holding the given documents; forward-only for
 * logits/losses, then (if loss_norm > 0) forward+backward accumulating grads. */
static void step_seq(lt_model *m, int T, const int32_t *tokens, const int *lens, int n_docs, double loss_norm,
                     run *r) {
    lt_err err = {{0}};
    int V = lt_model_config(m)->vocab_size;
    int32_t *targets = malloc(T * sizeof(int32_t)), *pos = malloc(T * sizeof(int32_t)),
            *doc = malloc(T * sizeof(int32_t));
    LT_CHECK_OK(lt_batch_fill_sequence(T, tokens, NULL, lens, n_docs, targets, pos, doc, &err), &err);
    lt_batch b = {.B = 1, .T = T, .tokens = tokens, .targets = targets, .pos = pos, .doc_start = doc};
    r->logits = malloc((size_t)T * V * sizeof(float));
    r->losses = malloc(T * sizeof(float));
    lt_poison(r->logits, (size_t)T * V);
    lt_poison(r->losses, T);
    LT_CHECK_OK(lt_model_plan(m, 1, T, &err), &err);
    LT_CHECK_OK(lt_model_step(m, &b, 0, 1.0, &r->res, &err), &err);
    LT_CHECK_OK(lt_model_get_logits(m, r->logits, &err), &err);
    LT_CHECK_OK(lt_model_get_token_losses(m, r->losses, &err), &err);
    if (loss_norm > 0) LT_CHECK_OK(lt_model_step(m, &b, 1, loss_norm, &r->res, &err), &err);
    free(targets);
    free(pos);
    free(doc);
}

static void free_run(run *r) {
    free(r->logits);
    free(r->losses);
}

static void packing_model(const char *name) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s", lt_src_path("tests/fixtures/models/"), name);
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    LT_CHECK_OK(lt_cpu_backend_create(0, &be, &err), &err);
    LT_CHECK_OK(lt_model_load(dir, be, &m, &err), &err);
    if (!m) {
        if (be) be->destroy(be);
        return;
    }
    LT_CHECK_OK(lt_model_alloc_grads(m, &err), &err);
    int V = lt_model_config(m)->vocab_size;
    enum { LA = 6, LB = 7, T = 16 };
    int32_t toks[T], toks2[T];
    lt_rng rng;
    lt_rng_seed(&rng, 42);
    for (int t = 0; t < T; t++) toks[t] = (int32_t)(lt_rng_u64(&rng) % (uint64_t)V);
    memcpy(toks2, toks, sizeof toks);
    for (int t = LA + LB; t < T; t++) toks2[t] = (int32_t)((toks[t] + 1 + t) % V); /* other padding ids */
    double norm = (LA - 1) + (LB - 1);
    char what[160];

    /* packed: [A | B | pad pad pad] */
    run packed = {0}, a = {0}, b = {0}, nopad = {0}, otherpad = {0}, merged = {0};
    int lens[2] = {LA, LB};
    lt_model_zero_grads(m);
    step_seq(m, T, toks, lens, 2, norm, &packed);
    packed.grads = download_grads(m);
    LT_CHECK(packed.res.n_targets == (int64_t)norm, "%s: %lld targets packed", name, (long long)packed.res.n_targets);

    /* each document alone, gradients accumulated */
    lt_model_zero_grads(m);
    step_seq(m, LA, toks, &lens[0], 1, norm, &a);
    step_seq(m, LB, toks + LA, &lens[1], 1, norm, &b);
    a.grads = download_grads(m);
    snprintf(what, sizeof what, "%s packed vs alone: logits of A", name);
    lt_check_close(what, packed.logits, a.logits, (size_t)LA * V, TOL);
    snprintf(what, sizeof what, "%s packed vs alone: logits of B", name);
    lt_check_close(what, packed.logits + (size_t)LA * V, b.logits, (size_t)LB * V, TOL);
    snprintf(what, sizeof what, "%s packed vs alone: losses of A", name);
    lt_check_close(what, packed.losses, a.losses, LA, TOL);
    snprintf(what, sizeof what, "%s packed vs alone: losses of B", name);
    lt_check_close(what, packed.losses + LA, b.losses, LB, TOL);
    for (int t = LA + LB; t < T; t++) LT_CHECK(packed.losses[t] == 0.0f, "%s: padding has a loss", name);
    for (size_t i = 0; i < lt_model_num_params(m); i++) {
        lt_param *p = lt_model_param(m, i);
        snprintf(what, sizeof what, "%s packed vs alone: d%s", name, p->name);
        lt_check_close(what, packed.grads[i], a.grads[i], p->numel, TOL_GRAD);
    }

    /* padding changes nothing */
    step_seq(m, LA + LB, toks, lens, 2, 0, &nopad);
    step_seq(m, T, toks2, lens, 2, 0, &otherpad);
    snprintf(what, sizeof what, "%s no padding vs padding: losses", name);
    lt_check_close(what, nopad.losses, packed.losses, LA + LB, TOL);
    snprintf(what, sizeof what, "%s no padding vs padding: logits", name);
    lt_check_close(what, nopad.logits, packed.logits, (size_t)(LA + LB) * V, TOL);
    snprintf(what, sizeof what, "%s other padding ids: losses", name);
    lt_check_close(what, otherpad.losses, packed.losses, T, TOL);
    snprintf(what, sizeof what, "%s other padding ids: logits", name);
    lt_check_close(what, otherpad.logits, packed.logits, (size_t)(LA + LB) * V, TOL);

    /* the check is sensitive: one merged document changes B's predictions */
    int one = LA + LB;
    step_seq(m, LA + LB, toks, &one, 1, 0, &merged);
    lt_cmp c = lt_compare(merged.logits + (size_t)LA * V, b.logits, (size_t)LB * V);
    LT_CHECK(c.norm_err > 1e-3, "%s: merging the documents did not change B's logits (err %.3g)", name, c.norm_err);

    free_grads(m, packed.grads);
    free_grads(m, a.grads);
    free_run(&packed);
    free_run(&a);
    free_run(&b);
    free_run(&nopad);
    free_run(&otherpad);
    free_run(&merged);
    lt_model_free(m);
    be->destroy(be);
}

static int contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static void bad_batches(void) {
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    LT_CHECK_OK(lt_cpu_backend_create(0, &be, &err), &err);
    LT_CHECK_OK(lt_model_load(lt_src_path("tests/fixtures/models/llama"), be, &m, &err), &err);
    if (!m) {
        if (be) be->destroy(be);
        return;
    }
    const lt_config *cfg = lt_model_config(m);
    int V = cfg->vocab_size;
    enum { T = 8 };
    int32_t tok[T] = {5, 9, 3, 7, 1, 2, 4, 6}, tg[T], pos[T], doc[T];
    int lens[2] = {5, 3};
    LT_CHECK_OK(lt_batch_fill_sequence(T, tok, NULL, lens, 2, tg, pos, doc, &err), &err);
    LT_CHECK(tg[4] == -1 && tg[3] == tok[4] && doc[5] == 5 && pos[7] == 2, "fill_sequence layout");
    int badlens[2] = {5, 4};
    LT_CHECK(lt_batch_fill_sequence(T, tok, NULL, badlens, 2, tg, pos, doc, &err) != LT_OK,
             "documents longer than T accepted");
    int zero[1] = {0};
    LT_CHECK(lt_batch_fill_sequence(T, tok, NULL, zero, 1, tg, pos, doc, &err) != LT_OK, "empty document accepted");
    LT_CHECK_OK(lt_batch_fill_sequence(T, tok, NULL, lens, 2, tg, pos, doc, &err), &err);

    lt_batch b = {.B = 1, .T = T, .tokens = tok, .targets = tg, .pos = pos, .doc_start = doc};
    lt_step_result r;
    LT_CHECK(lt_model_step(m, &b, 0, 1, &r, &err) != LT_OK && contains(err.msg, "plan"), "step without plan: %s",
             err.msg);
    LT_CHECK_OK(lt_model_plan(m, 1, T, &err), &err);
    LT_CHECK_OK(lt_model_step(m, &b, 0, 1, &r, &err), &err);
    LT_CHECK(lt_model_step(m, &b, 1, 5, &r, &err) != LT_OK && contains(err.msg, "alloc_grads"),
             "backward without grads: %s", err.msg);

    tok[2] = V;
    LT_CHECK(lt_model_step(m, &b, 0, 1, &r, &err) == LT_ERR_RANGE && contains(err.msg, "token id"),
             "token id == vocab: %s", err.msg);
    tok[2] = -1;
    LT_CHECK(lt_model_step(m, &b, 0, 1, &r, &err) == LT_ERR_RANGE, "negative token id: %s", err.msg);
    tok[2] = 3;
    tg[1] = V + 7;
    LT_CHECK(lt_model_step(m, &b, 0, 1, &r, &err) == LT_ERR_RANGE && contains(err.msg, "target"),
             "target out of range: %s", err.msg);
    tg[1] = tok[2];
    doc[6] = 3; /* jumps back into the first document */
    LT_CHECK(lt_model_step(m, &b, 0, 1, &r, &err) == LT_ERR_INVALID && contains(err.msg, "doc_start"),
             "inconsistent doc_start: %s", err.msg);
    doc[6] = 5;
    pos[6] = 4;
    LT_CHECK(lt_model_step(m, &b, 0, 1, &r, &err) == LT_ERR_INVALID && contains(err.msg, "pos"),
             "inconsistent pos: %s", err.msg);
    pos[6] = 1;
    b.T = 7;
    LT_CHECK(lt_model_step(m, &b, 0, 1, &r, &err) == LT_ERR_INVALID && contains(err.msg, "plan"),
             "batch shape differs from the plan: %s", err.msg);
    b.T = T;
    LT_CHECK_OK(lt_model_step(m, &b, 0, 1, &r, &err), &err);
    LT_CHECK(lt_model_plan(m, 1, cfg->max_position_embeddings + 1, &err) != LT_OK &&
                 contains(err.msg, "max_position_embeddings"),
             "T > max_position_embeddings: %s", err.msg);
    lt_model_free(m);

    /* mistral: sequences longer than the sliding window are refused */
    LT_CHECK_OK(lt_model_load(lt_src_path("tests/fixtures/models/mistral"), be, &m, &err), &err);
    if (m) {
        int w = lt_model_config(m)->sliding_window;
        LT_CHECK(w > 0, "mistral fixture has a sliding window");
        LT_CHECK(lt_model_plan(m, 1, w + 1, &err) == LT_ERR_UNSUPPORTED && contains(err.msg, "sliding_window"),
                 "T > sliding_window: %s", err.msg);
        LT_CHECK_OK(lt_model_plan(m, 1, w, &err), &err);
        lt_model_free(m);
    }
    be->destroy(be);
}

int main(void) {
    packing_model("llama");
    packing_model("qwen2");
    packing_model("qwen3");
    bad_batches();
    return lt_test_finish("test_packing");
}
