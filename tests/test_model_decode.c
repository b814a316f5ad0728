/*
 * test_model_decode.c -- inference with the KV cache (lt_model_decode) gives
 * the logits of the full forward (lt_model_step on the whole sequence, which
 * test_model_fixtures checks against transformers).
 *
 * For every fixture model, plain and with the PEFT adapter of
 * tests/fixtures/train/<model>/adapter (the LoRA forward path): a random
 * sequence of n tokens; the cache is filled by a prefill of p tokens (all
 * logits), then one token at a time (last logits), and compared row by row
 * with the full forward: normalized error <= 1e-5 (only the summation order
 * of the attention differs). On llama the prefill crosses the decode chunk
 * (64 rows) and the cache is reset and refilled. Outputs are poisoned first.
 * LongRoPE (phi3): transformers picks the rotary table by the length a call
 * reaches (the short factors up to original_max_position_embeddings), so a
 * row decoded while the sequence was no longer than that is compared with
 * the full forward of that prefix; once it grows past, the cache is computed
 * again with the long factors and the rows equal the full forward of all n.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_family.h"
#include "lt_model.h"
#include "lt_test.h"
#include "lt_trainer.h"


static void check(lt_backend *be, const char *name, int lora, int n, int prefill) {
    char dir[4096], adir[4096], what[256];
    snprintf(dir, sizeof dir, "%s/%s", lt_src_path("tests/fixtures/models"), name);
    snprintf(adir, sizeof adir, "%s/%s/adapter", lt_src_path("tests/fixtures/train"), name);
    lt_model *m = NULL;
    lt_err err = {{0}};
    LT_CHECK_OK(lt_model_load(dir, be, &m, &err), &err);
    if (!m) return;
    lt_peft_config pc;
    if (lora) LT_CHECK_OK(lt_trainer_load_adapter(m, adir, &pc, &err), &err);
    int V = lt_model_config(m)->vocab_size;
    int32_t *tok = malloc((size_t)n * 4), *tg = malloc((size_t)n * 4), *pos = malloc((size_t)n * 4),
            *ds = malloc((size_t)n * 4);
    lt_rng r;
    lt_rng_seed(&r, 11 + (uint64_t)n);
    for (int t = 0; t < n; t++) {
        tok[t] = 3 + (int32_t)(lt_rng_u64(&r) % (uint64_t)(V - 3));
        pos[t] = t;
        ds[t] = 0;
    }
    for (int t = 0; t < n; t++) tg[t] = t + 1 < n ? tok[t + 1] : -1;
    float *full = malloc((size_t)n * V * 4), *dec = malloc((size_t)n * V * 4);
    lt_poison(full, (size_t)n * V);
    lt_poison(dec, (size_t)n * V);
    lt_batch b = {1, n, tok, tg, pos, ds};
    lt_step_result res;
    LT_CHECK_OK(lt_model_plan(m, 1, n, &err), &err);
    LT_CHECK_OK(lt_model_step(m, &b, 0, 1.0, &res, &err), &err);
    LT_CHECK_OK(lt_model_get_logits(m, full, &err), &err);
    const lt_config *cfg = lt_model_config(m);
    int S = cfg->rope_scaling_type == LT_ROPE_LONGROPE && n > cfg->rope_original_max_pos ? cfg->rope_original_max_pos : 0;
    if (S > 0) { /* LongRoPE: the rows of calls that end within the original length, from the short prefix */
        float *pre = malloc((size_t)S * V * 4);
        lt_batch bs = {1, S, tok, tg, pos, ds};
        LT_CHECK_OK(lt_model_plan(m, 1, S, &err), &err);
        LT_CHECK_OK(lt_model_step(m, &bs, 0, 1.0, &res, &err), &err);
        LT_CHECK_OK(lt_model_get_logits(m, pre, &err), &err);
        int changed = 0;
        for (int t = 0; t < n; t++) {
            int len = t < prefill ? prefill : t + 1; /* the length the decode call producing row t reaches */
            if (len > S) continue;
            for (int v = 0; v < V; v++) changed |= full[(size_t)t * V + v] != pre[(size_t)t * V + v];
            memcpy(full + (size_t)t * V, pre + (size_t)t * V, (size_t)V * 4);
        }
        LT_CHECK(changed || prefill > S, "%s: the short and long LongRoPE tables give the same rows", name);
        free(pre);
    }
    for (int round = 0; round < 2; round++) { /* second round: reset and refill */
        if (round == 0) LT_CHECK_OK(lt_model_kv_init(m, n, &err), &err);
        else lt_model_kv_reset(m);
        lt_poison(dec, (size_t)n * V);
        LT_CHECK_OK(lt_model_decode(m, tok, prefill, dec, 1, &err), &err);
        for (int t = prefill; t < n; t++) LT_CHECK_OK(lt_model_decode(m, tok + t, 1, dec + (size_t)t * V, 0, &err), &err);
        LT_CHECK(lt_model_kv_len(m) == n, "%s: cache holds %d of %d", name, lt_model_kv_len(m), n);
        snprintf(what, sizeof what, "%s%s: cached decode (prefill %d of %d, round %d) vs full forward", name,
                 lora ? " + LoRA" : "", prefill, n, round);
        lt_check_close(what, dec, full, (size_t)n * V, 1e-5);
    }
    /* past the cache: refused */
    LT_CHECK(lt_model_decode(m, tok, 1, dec, 0, &err) == LT_ERR_RANGE, "%s: decoding past the cache accepted", name);
    free(tok);
    free(tg);
    free(pos);
    free(ds);
    free(full);
    free(dec);
    lt_model_free(m);
}

int main(void) {
    lt_backend *be = NULL;
    lt_err err;
    if (lt_cpu_backend_create(2, &be, &err)) return 1;
    const char *MODELS[32];
    size_t nm = lt_family_fixtures(MODELS, 32);
    for (size_t k = 0; k < nm; k++) {
        check(be, MODELS[k], 0, 40, 7);
        check(be, MODELS[k], 1, 40, 1);
    }
    check(be, "llama", 0, 100, 70);
    check(be, "llama", 1, 100, 70);
    be->destroy(be);
    return lt_test_finish("test_model_decode");
}
