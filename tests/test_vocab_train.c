/* test_vocab_train.c -- LoRA with trained embeddings (`train
 * --train-embeddings new|all`) against PEFT 0.21.2
 * (tests/fixtures/vocab_peft, tools/gen_vocab_peft_fixture.py), on a tied and
 * an untied tiny llama:
 *  - PEFT's own adapters (trainable_token_indices / modules_to_save) applied
 *    by luxtrain (lt_eval_merge_adapter) give PEFT's logits; `luxtrain merge`
 *    of them gives PEFT's merge_and_unload logits;
 *  - luxtrain's export of those adapters holds what PEFT wrote (config keys,
 *    tensor names, shapes, values), so PEFT reads it as its own;
 *  - training: with "new" only rows 60..63 of embed_tokens / lm_head get a
 *    gradient and change (the others bitwise equal, even with
 *    --decay-embeddings and weight decay), with "all" other rows change too;
 *    the exported adapter applied to a fresh base gives the trained model's
 *    logits; with "new" the optimizer keeps m and v for those rows only (the
 *    trained tables are bitwise those of a whole-table state: test_optim
 *    checks the row-subset optimizer against the full one; the digests
 *    printed here are the same as before the row subset). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_backend.h"
#include "lt_lora_target.h"
#include "lt_eval_adapter.h"
#include "lt_export.h"
#include "lt_json.h"
#include "lt_model.h"
#include "lt_safetensors.h"
#include "lt_test.h"
#include "lt_trainer.h"

#define SEQ 12
#define VOC 64
static const char *CASES[] = {"untied_new", "untied_all", "tied_new", "tied_all"};

static const char *fx(const char *rel) {
    static char buf[8][4096];
    static int k;
    char r[512];
    snprintf(r, sizeof r, "tests/fixtures/vocab_peft/%s", rel);
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s", lt_src_path(r));
    return buf[k];
}

static int32_t IDS[SEQ];
static lt_st_file *EXP;

/* logits (SEQ, VOC) of ids under model dir (+ adapter) */
static int logits_of(const char *dir, const char *adapter, float *out) {
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    int ok = 0;
    if (lt_cpu_backend_create(1, &be, &err) || lt_model_load(dir, be, &m, &err) ||
        (adapter && lt_eval_merge_adapter(m, adapter, &err)) || lt_model_kv_init(m, SEQ, &err) ||
        lt_model_decode(m, IDS, SEQ, out, 1, &err))
        fprintf(stderr, "%s (+%s): %s\n", dir, adapter ? adapter : "-", err.msg);
    else
        ok = 1;
    lt_model_free(m);
    if (be) be->destroy(be);
    return ok;
}

static void check_logits(const char *what, const float *got, const char *key) {
    const lt_st_tensor *t = lt_st_find(EXP, key);
    LT_CHECK(t && t->numel == (size_t)SEQ * VOC, "%s: no %s", what, key);
    if (!t) return;
    double mx = 0;
    for (size_t i = 0; i < t->numel; i++) {
        double d = fabs(got[i] - ((const float *)t->data)[i]);
        mx = d > mx ? d : mx;
    }
    printf("%-28s max |luxtrain - PEFT| = %.3g\n", what, mx);
    LT_CHECK(mx < 2e-5, "%s: logits differ from PEFT's %s by %g", what, key, mx);
}

/* PEFT's adapter folder vs ours: the embedding keys and every tensor */
static void same_adapter(const char *name, const char *peft_dir, const char *ours_dir) {
    char p1[4096], p2[4096];
    lt_err err = {{0}};
    cJSON *a = NULL, *b = NULL;
    snprintf(p1, sizeof p1, "%s/adapter_config.json", peft_dir);
    LT_FMT(p2, "%s/adapter_config.json", ours_dir);
    LT_CHECK_OK(lt_json_load_file(p1, &a, &err), &err);
    LT_CHECK_OK(lt_json_load_file(p2, &b, &err), &err);
    static const char *keys[] = {"modules_to_save", "trainable_token_indices", "r", "lora_alpha", "target_modules"};
    for (int k = 0; a && b && k < 5; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(a, keys[k]), *y = cJSON_GetObjectItemCaseSensitive(b, keys[k]);
        LT_CHECK(x && y && cJSON_Compare(x, y, 1), "%s: adapter_config %s differs from PEFT's", name, keys[k]);
    }
    const cJSON *ta = a ? cJSON_GetObjectItemCaseSensitive(a, "ensure_weight_tying") : NULL;
    const cJSON *tb = b ? cJSON_GetObjectItemCaseSensitive(b, "ensure_weight_tying") : NULL;
    LT_CHECK(cJSON_IsTrue(ta) == cJSON_IsTrue(tb), "%s: ensure_weight_tying differs", name);
    cJSON_Delete(a);
    cJSON_Delete(b);
    lt_st_file *f = NULL, *g = NULL;
    snprintf(p1, sizeof p1, "%s/adapter_model.safetensors", peft_dir);
    LT_FMT(p2, "%s/adapter_model.safetensors", ours_dir);
    LT_CHECK_OK(lt_st_open(p1, &f, &err), &err);
    LT_CHECK_OK(lt_st_open(p2, &g, &err), &err);
    if (!f || !g) return;
    LT_CHECK(lt_st_count(f) == lt_st_count(g), "%s: %zu tensors, PEFT %zu", name, lt_st_count(g), lt_st_count(f));
    for (size_t i = 0; i < lt_st_count(f); i++) {
        const lt_st_tensor *x = lt_st_get(f, i), *y = lt_st_find(g, x->name);
        LT_CHECK(y && y->dtype == x->dtype && y->nbytes == x->nbytes && !memcmp(x->data, y->data, x->nbytes),
                 "%s: tensor %s differs from PEFT's", name, x->name);
    }
    lt_st_close(f);
    lt_st_close(g);
}

static void peft_part(const char *tmp) {
    float *lg = malloc((size_t)SEQ * VOC * sizeof *lg);
    for (int c = 0; c < 4; c++) {
        const char *base = fx(c < 2 ? "base_untied" : "base_tied"), *ad = fx(CASES[c]);
        char key[128], out[4096], args[12288];
        snprintf(key, sizeof key, "logits_%s", CASES[c]);
        if (logits_of(base, ad, lg)) check_logits(CASES[c], lg, key);
        else LT_CHECK(0, "%s: PEFT's adapter was not applied", CASES[c]);
        /* luxtrain merge == merge_and_unload */
        snprintf(out, sizeof out, "%s/merged-%s", tmp, CASES[c]);
        snprintf(args, sizeof args, "%s merge --model %s --adapter %s --out %s 2>/dev/null", LT_BIN, base, ad, out);
        LT_CHECK(lt_test_system(args) == 0, "merge of %s failed", CASES[c]);
        snprintf(key, sizeof key, "logits_merged_%s", CASES[c]);
        char what[64];
        snprintf(what, sizeof what, "%s merged", CASES[c]);
        if (logits_of(out, NULL, lg)) check_logits(what, lg, key);
        /* our export of PEFT's adapter == PEFT's files */
        lt_peft_adapter *a = NULL;
        lt_err err = {{0}};
        LT_CHECK_OK(lt_peft_load(ad, &a, &err), &err);
        if (!a) continue;
        LT_CHECK(a->emb.mode == (strstr(CASES[c], "new") ? LT_TRAIN_EMB_NEW : LT_TRAIN_EMB_ALL), "%s: mode %d",
                 CASES[c], a->emb.mode);
        snprintf(out, sizeof out, "%s/reexport-%s", tmp, CASES[c]);
        LT_CHECK_OK(lt_peft_export_embed(out, &a->cfg, a->t, a->n, &a->emb, NULL, NULL, &err), &err);
        same_adapter(CASES[c], ad, out);
        lt_peft_free(a);
    }
    free(lg);
}

/* ---- training ---- */

static void fill_batch(lt_batch *b, int32_t *tok, int32_t *tgt, int32_t *pos, int32_t *ds) {
    uint8_t mask[SEQ];
    int len = SEQ;
    memset(mask, 1, sizeof mask);
    memcpy(tok, IDS, sizeof IDS);
    lt_err err = {{0}};
    lt_batch_fill_sequence(SEQ, tok, mask, &len, 1, tgt, pos, ds, &err);
    b->B = 1;
    b->T = SEQ;
    b->tokens = tok;
    b->targets = tgt;
    b->pos = pos;
    b->doc_start = ds;
}

static float *table(lt_model *m, const char *name) {
    lt_param *p = lt_model_find_param(m, name);
    lt_backend *be = lt_model_backend(m);
    float *x = malloc(p->numel * sizeof *x);
    lt_err err = {{0}};
    be->download_f32(be, x, p->data, be->param_dtype, p->numel, &err);
    return x;
}

static void train_case(const char *tmp, int tied, int all) {
    const char *base = fx(tied ? "base_tied" : "base_untied");
    char name[64], out[4096];
    snprintf(name, sizeof name, "%s %s", tied ? "tied" : "untied", all ? "all" : "new");
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_trainer *tr = NULL;
    lt_rng rng;
    lt_rng_seed(&rng, 99);
    static const int32_t rows[] = {63, 60, 61, 62};
    if (lt_cpu_backend_create(1, &be, &err) || lt_model_load(base, be, &m, &err)) {
        LT_CHECK(0, "%s: %s", name, err.msg);
        goto done;
    }
    LT_CHECK(lt_test_add_lora(m, 0.0, &rng), "%s: LoRA", name);
    LT_CHECK_OK(lt_model_train_embeddings(m, all ? NULL : rows, all ? 0 : 4, &err), &err);
    const char *names[2] = {"model.embed_tokens.weight", "lm_head.weight"};
    float *before[2] = {table(m, names[0]), tied ? NULL : table(m, names[1])};
    lt_optim_cfg oc = {0};
    oc.sched.kind = LT_SCHED_CONSTANT;
    oc.sched.lr = 1e-2;
    oc.sched.total_steps = 10;
    oc.beta1 = 0.9;
    oc.beta2 = 0.999;
    oc.eps = 1e-8;
    oc.weight_decay = 0.1;
    oc.clip = 1.0;
    if (lt_model_plan(m, 1, SEQ, &err) || lt_trainer_create(m, &oc, 1, 0, &tr, &err)) {
        LT_CHECK(0, "%s: %s", name, err.msg);
        goto done;
    }
    { /* the optimizer's state: LoRA plus the trained rows only ("new"), or the whole tables */
        size_t lora = 0, C0 = (size_t)lt_model_config(m)->hidden_size, tables = tied ? 1 : 2;
        for (size_t i = 0; i < lt_model_num_params(m); i++)
            if (lt_trainer_is_lora_param(lt_model_param(m, i)->name)) lora += lt_model_param(m, i)->numel;
        size_t want = lora + (all ? (size_t)VOC : 4) * C0 * tables, got = lt_optim_state_numel(lt_trainer_optim(tr));
        LT_CHECK(got == want, "%s: optimizer state of %zu elements, expected %zu", name, got, want);
    }
    int32_t tok[SEQ], tgt[SEQ], pos[SEQ], ds[SEQ];
    lt_batch b;
    fill_batch(&b, tok, tgt, pos, ds);
    lt_train_stats stats;
    for (int s = 0; s < 2; s++) LT_CHECK_OK(lt_trainer_step(tr, &b, 1, &stats, &err), &err);
    int C = lt_model_config(m)->hidden_size;
    for (int k = 0; k < (tied ? 1 : 2); k++) {
        float *after = table(m, names[k]);
        int new_changed = 0, old_changed = 0;
        for (int r = 0; r < VOC; r++) {
            int changed = memcmp(after + r * C, before[k] + r * C, (size_t)C * sizeof(float)) != 0;
            if (r >= 60) new_changed += changed;
            else old_changed += changed;
        }
        printf("%-12s %s: %d of 4 trained rows changed, %d of 60 others\n", name, names[k], new_changed, old_changed);
        LT_CHECK(new_changed == 4, "%s: %s: only %d of the 4 trained rows changed", name, names[k], new_changed);
        LT_CHECK(all ? old_changed > 0 : old_changed == 0, "%s: %s: %d other rows changed", name, names[k],
                 old_changed);
        uint64_t h = 1469598103934665603ull; /* FNV-1a of the trained table's bits */
        for (size_t i = 0; i < (size_t)VOC * C * sizeof(float); i++) h = (h ^ ((const uint8_t *)after)[i]) * 1099511628211ull;
        printf("%-12s %s: digest %016llx\n", name, names[k], (unsigned long long)h);
        free(after);
    }
    /* export, then a fresh base + the adapter = the trained model */
    snprintf(out, sizeof out, "%s/trained-%s-%s", tmp, tied ? "tied" : "untied", all ? "all" : "new");
    lt_peft_config pc;
    memset(&pc, 0, sizeof pc);
    pc.r = 4;
    pc.alpha = 8;
    pc.targets = LT_LORA_ALL_TARGETS;
    LT_CHECK_OK(lt_trainer_export_adapter(m, &pc, out, NULL, NULL, &err), &err);
    float *want = malloc((size_t)SEQ * VOC * sizeof *want), *got = malloc((size_t)SEQ * VOC * sizeof *got);
    if (lt_model_kv_init(m, SEQ, &err) || lt_model_decode(m, IDS, SEQ, want, 1, &err)) LT_CHECK(0, "%s", err.msg);
    if (logits_of(base, out, got)) {
        double mx = 0;
        for (int i = 0; i < SEQ * VOC; i++) mx = fmax(mx, fabs(got[i] - want[i]));
        printf("%-12s exported adapter on a fresh base: max |diff| %.3g\n", name, mx);
        LT_CHECK(mx < 2e-5, "%s: the exported adapter gives other logits (%g)", name, mx);
    } else
        LT_CHECK(0, "%s: the exported adapter does not load", name);
    free(want);
    free(got);
    free(before[0]);
    free(before[1]);
done:
    lt_trainer_free(tr);
    lt_model_free(m);
    if (be) be->destroy(be);
}

int main(void) {
    const char *tmp = lt_test_tmpdir("test_vocab_train");
    lt_err err = {{0}};
    LT_CHECK_OK(lt_st_open(fx("expected.safetensors"), &EXP, &err), &err);
    if (!EXP) return lt_test_finish("test_vocab_train");
    const lt_st_tensor *ids = lt_st_find(EXP, "ids");
    LT_CHECK(ids && ids->numel == SEQ, "ids");
    memcpy(IDS, ids->data, sizeof IDS);
    peft_part(tmp);
    for (int tied = 0; tied < 2; tied++)
        for (int all = 0; all < 2; all++) train_case(tmp, tied, all);
    lt_st_close(EXP);
    return lt_test_finish("test_vocab_train");
}
