/* test_model_plan.c -- lt_model_plan_bytes (the --dry-run estimate) equals
 * what lt_model_plan reserves, for every fixture family and several option
 * sets (recompute, LoRA with and without dropout, target subsets, logits
 * chunks), and LoRA dropout's input copies are in it (the N * in * A bytes
 * per adapted projection and layer the old --dry-run mirror left out). */
#include <stdio.h>
#include <string.h>

#include "lt_family.h"
#include "lt_lora_target.h"
#include "lt_model.h"
#include "lt_test.h"

typedef struct {
    int recompute, r, chunk;
    float dropout;
    unsigned targets;
} opts;

static void check(const char *name, const opts *o, int B, int T) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s", lt_src_path("tests/fixtures/models/"), name);
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    LT_CHECK_OK(lt_cpu_backend_create(0, &be, &err), &err);
    if (be) LT_CHECK_OK(lt_model_load(dir, be, &m, &err), &err);
    if (!m) goto done;
    lt_lora_spec ls = {.r = o->r, .scale = 1.0f, .dropout = o->dropout, .targets = o->targets};
    if (o->r) LT_CHECK_OK(lt_model_add_lora(m, &ls, &err), &err);
    lt_model_set_recompute(m, o->recompute);
    lt_model_set_logits_chunk(m, o->chunk);
    LT_CHECK_OK(lt_model_plan(m, B, T, &err), &err);
    size_t want = lt_model_planned_bytes(m), got = 0;
    LT_CHECK_OK(lt_model_plan_bytes(lt_model_config(m), be->act_dtype, B, T, o->recompute, o->r ? &ls : NULL,
                                    o->chunk, &got, &err),
                &err);
    LT_CHECK(want > 0 && got == want, "%s (recompute %d, r %d, dropout %g, targets %#x, chunk %d, %dx%d): estimate %zu, plan %zu",
             name, o->recompute, o->r, o->dropout, o->targets, o->chunk, B, T, got, want);
    if (o->r && o->dropout > 0) { /* dropout keeps each adapted projection's input: at least N * in * A per layer */
        size_t nod = 0;
        lt_lora_spec l0 = ls;
        l0.dropout = 0;
        LT_CHECK_OK(lt_model_plan_bytes(lt_model_config(m), be->act_dtype, B, T, o->recompute, &l0, o->chunk, &nod,
                                        &err),
                    &err);
        const lt_config *c = lt_model_config(m);
        size_t extra = 0, layers = o->recompute ? 1 : (size_t)c->num_layers;
        const unsigned tm = lt_lora_targets_for(c, o->targets); /* the modules adapted (phi3: fused) */
        for (int t = 0; t < LT_LORA_NTARGETS; t++) {
            int in, out;
            lt_lora_target_dims(c, t, &in, &out);
            if ((tm >> t) & 1) extra += layers * (size_t)B * T * in * lt_dtype_size(be->act_dtype);
        }
        LT_CHECK(got >= nod + extra, "%s: dropout adds %zu bytes, expected at least %zu", name, got - nod, extra);
    }
done:
    if (m) lt_model_free(m);
    if (be) be->destroy(be);
}

int main(void) {
    const opts sets[] = {
        {0, 0, 0, 0.0f, 0},
        {1, 0, 0, 0.0f, 0},
        {0, 4, 0, 0.0f, LT_LORA_ALL_TARGETS},
        {0, 4, 0, 0.1f, LT_LORA_ALL_TARGETS},
        {1, 8, 0, 0.05f, (1u << LT_LORA_Q) | (1u << LT_LORA_V) | (1u << LT_LORA_DOWN)},
        {0, 2, 7, 0.2f, (1u << LT_LORA_O) | (1u << LT_LORA_UP)},
        {1, 0, 16, 0.0f, 0},
    };
    const char *models[32];
    size_t nm = lt_family_fixtures(models, 32);
    for (size_t i = 0; i < nm; i++)
        for (size_t k = 0; k < sizeof sets / sizeof sets[0]; k++) {
            check(models[i], &sets[k], 2, 16);
            check(models[i], &sets[k], 1, 33);
        }
    /* sizes that overflow are refused */
    lt_config c;
    lt_err err = {{0}};
    size_t b = 0;
    LT_CHECK_OK(lt_config_load(lt_src_path("tests/fixtures/models/mistral"), &c, &err), &err);
    LT_CHECK(lt_model_plan_bytes(&c, LT_F32, 1 << 20, 1 << 20, 0, NULL, 0, &b, &err) == LT_ERR_NOMEM &&
                 strstr(err.msg, "too large"),
             "estimate of a huge batch: %s", err.msg);
    return lt_test_finish("test_model_plan");
}
