/*
 * test_export.c -- exporting and importing (train/lt_export.c, lt_lora.c)
 * against PEFT 0.21.2 and transformers, without torch at test time:
 * tests/fixtures/peft/ from tools/gen_peft_fixture.py.
 *   - import PEFT's adapter folder; re-export it with our writer: the same
 *     tensor names, shapes, dtypes and bytes, and an adapter_config.json with
 *     PEFT's text byte for byte (target_modules, which PEFT writes in a set's
 *     order, compared as a set); PEFT 0.15.2's form (v0_15/) still loads;
 *   - every adapter setting that changes the math and that luxtrain does not
 *     implement is refused by name, in both forms;
 *   - our LoRA init against PEFT's: bound 1/sqrt(in), distribution of A
 *     (histogram within 0.02 per bin of PEFT's own init_A; std within 3%),
 *     B zero, scaling alpha/r;
 *   - Hugging Face export round trip: names, dtypes (F32 exact, BF16 equal
 *     to round-to-nearest-even, ties checked by hand), config.json and
 *     tokenizer files copied byte for byte, sharded output readable by our
 *     reader, replacement of an existing folder, no temp folders left, and a
 *     failed export leaving the previous folder intact; NaN refused;
 *   - progress reports (lt_export_progress_fn) of both exports: each tensor,
 *     each file's sync, the tail's steps in order; a failing one stops the
 *     export, the previous folder intact.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_config.h"
#include "lt_export.h"
#include "lt_family.h"
#include "lt_lora.h"
#include "lt_model.h"
#include "lt_model_spec.h"
#include "lt_safetensors.h"
#include "lt_test.h"

static char TMP[1024];

static cJSON *read_json(const char *path) {
    char *text = NULL;
    lt_err err;
    if (lt_read_file(path, &text, NULL, &err) != LT_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int ok = lt_read_file(a, &x, &nx, NULL) == LT_OK && lt_read_file(b, &y, &ny, NULL) == LT_OK && nx == ny &&
             !memcmp(x, y, nx);
    free(x);
    free(y);
    return ok;
}

static int count_tmp(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp-") || strstr(e->d_name, ".old-")) n++;
    if (d) closedir(d);
    return n;
}

/* ---- PEFT ---- */

/* f's bytes (malloc'd, NUL-terminated) */
static char *slurp(const char *f) {
    FILE *fp = fopen(f, "rb");
    char *s = NULL;
    if (fp && fseek(fp, 0, SEEK_END) == 0) {
        long n = ftell(fp);
        rewind(fp);
        s = n >= 0 ? malloc((size_t)n + 1) : NULL;
        if (s && fread(s, 1, (size_t)n, fp) == (size_t)n) s[n] = 0;
        else {
            free(s);
            s = NULL;
        }
    }
    if (fp) fclose(fp);
    return s;
}

/* PEFT's folder src re-exported by our writer into out: the same tensors
 * (names, shapes, dtypes, bytes) and adapter_config.json keys and values
 * (target_modules as a set) as PEFT 0.21.2 wrote, the same keys in the same
 * order; bytes: the file's text equals PEFT's byte for byte once
 * target_modules (PEFT writes a set's order) is written in PEFT's order. */
static void same_as_peft(const char *src, const char *out, int bytes) {
    lt_err err;
    char path[8192];
    lt_st_file *pf = NULL;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", src);
    LT_CHECK_OK(lt_st_open(path, &pf, &err), &err);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", out);
    lt_st_file *of = NULL;
    LT_CHECK_OK(lt_st_open(path, &of, &err), &err);
    if (pf && of) {
        LT_CHECK(lt_st_count(of) == lt_st_count(pf), "%zu vs %zu tensors", lt_st_count(of), lt_st_count(pf));
        for (size_t i = 0; i < lt_st_count(pf); i++) {
            const lt_st_tensor *p = lt_st_get(pf, i), *o = lt_st_find(of, p->name);
            LT_CHECK(o && o->dtype == p->dtype && o->ndim == p->ndim && o->shape[0] == p->shape[0] &&
                         o->shape[1] == p->shape[1] && o->nbytes == p->nbytes && !memcmp(o->data, p->data, p->nbytes),
                     "re-exported %s differs", p->name);
        }
        const char *fmt = lt_st_metadata(of, "format");
        LT_CHECK(fmt && !strcmp(fmt, "pt"), "metadata format");
    }
    lt_st_close(of);
    lt_st_close(pf);
    char opath[8192], ppath[8192];
    snprintf(opath, sizeof opath, "%s/adapter_config.json", out);
    cJSON *ours = read_json(opath);
    snprintf(ppath, sizeof ppath, "%s/adapter_config.json", src);
    cJSON *peft = read_json(ppath);
    int nkeys = 0, same_order = 1;
    const cJSON *k, *o = ours ? ours->child : NULL;
    cJSON_ArrayForEach(k, peft) {
        same_order &= o && !strcmp(o->string, k->string);
        o = o ? o->next : NULL;
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(ours, k->string);
        nkeys++;
        if (!strcmp(k->string, "target_modules")) {
            int same = ok && cJSON_GetArraySize(ok) == cJSON_GetArraySize(k);
            const cJSON *m;
            cJSON_ArrayForEach(m, k) {
                int found = 0;
                const cJSON *q;
                cJSON_ArrayForEach(q, ok) found |= !strcmp(q->valuestring, m->valuestring);
                same &= found;
            }
            LT_CHECK(same, "target_modules differ");
            continue;
        }
        LT_CHECK(ok && cJSON_Compare(ok, k, 1), "adapter_config key '%s' differs (ours %s)", k->string,
                 ok ? cJSON_PrintUnformatted(ok) : "missing");
    }
    LT_CHECK(nkeys == 41 && cJSON_GetArraySize(ours) == nkeys, "key count: ours %d, PEFT %d",
             cJSON_GetArraySize(ours), nkeys);
    LT_CHECK(same_order, "adapter_config.json keys not in PEFT's order");
    if (bytes) {
        char *ot = slurp(opath), *pt = slurp(ppath);
        char *os = ot ? strstr(ot, "\"target_modules\": [") : NULL, *ps = pt ? strstr(pt, "\"target_modules\": [") : NULL;
        char *oe = os ? strchr(os, ']') : NULL, *pe = ps ? strchr(ps, ']') : NULL;
        LT_CHECK(oe && pe && oe - os == pe - ps, "target_modules text lengths differ");
        if (oe && pe && oe - os == pe - ps) {
            memcpy(os, ps, (size_t)(pe - ps)); /* PEFT's order (same set, checked above) */
            LT_CHECK(!strcmp(ot, pt), "adapter_config.json is not PEFT's text:\n--- ours\n%s\n--- PEFT\n%s", ot, pt);
        }
        free(ot);
        free(pt);
    }
    cJSON_Delete(ours);
    cJSON_Delete(peft);
}

/* lt_export_progress_fn: the reports a watched export makes (tools/lt_cmd_train.c's heartbeats),
 * recorded; fail_at: the report that fails (the export stops with its error) */
typedef struct {
    char what[64][128];
    int n, fail_at;
} report_log;

static lt_status record_report(void *ctx, const char *what, lt_err *err) {
    report_log *l = ctx;
    if (l->n < 64) snprintf(l->what[l->n], sizeof l->what[0], "%s", what);
    if (++l->n == l->fail_at) return lt_fail(err, LT_ERR_IO, "report %d refused", l->n);
    return LT_OK;
}

/* the reports of an export with `tensors` tensors end with the steps `tail` (the last file's sync first) */
static void check_reports(const report_log *l, int tensors, const char *const *tail, int ntail, const char *what) {
    int k = 0, seen = 0;
    for (int i = 0; i < l->n && i < 64; i++) {
        char want[64];
        snprintf(want, sizeof want, "tensor %d of %d '", seen + 1, tensors);
        if (!strncmp(l->what[i], want, strlen(want))) seen++;
    }
    LT_CHECK(seen == tensors, "%s: %d tensor reports of %d", what, seen, tensors);
    for (int i = l->n - ntail; i < l->n && k < ntail; i++, k++)
        LT_CHECK(i >= 0 && !strcmp(l->what[i], tail[k]), "%s: report %d is '%s', expected '%s'", what, i,
                 i >= 0 ? l->what[i] : "", tail[k]);
}

static void test_peft_roundtrip(void) {
    lt_err err;
    const char *src = lt_src_path("tests/fixtures/peft/adapter");
    lt_peft_adapter *a = NULL;
    LT_CHECK_OK(lt_peft_load(src, &a, &err), &err);
    if (!a) return;
    LT_CHECK(a->cfg.r == 4 && a->cfg.alpha == 8 && a->cfg.dropout == 0.05 && !a->cfg.rslora, "config values");
    LT_CHECK(a->cfg.targets == ((1u << LT_LORA_Q) | (1u << LT_LORA_V) | (1u << LT_LORA_DOWN)), "targets %x",
             a->cfg.targets);
    LT_CHECK(!strcmp(a->cfg.base_model, "base"), "base model '%s'", a->cfg.base_model);
    LT_CHECK(a->n == 6, "%zu adapted modules", a->n);
    /* fits the base model it was made for, not another shape */
    lt_config cfg;
    LT_CHECK_OK(lt_config_load(lt_src_path("tests/fixtures/peft/base"), &cfg, &err), &err);
    LT_CHECK_OK(lt_peft_check(a, &cfg, &err), &err);
    lt_config wrong = cfg;
    wrong.intermediate_size = 64;
    LT_CHECK(lt_peft_check(a, &wrong, &err) == LT_ERR_FORMAT && strstr(err.msg, "down_proj"), "wrong dims: %s",
             err.msg);
    wrong = cfg;
    wrong.num_layers = 3;
    LT_CHECK(lt_peft_check(a, &wrong, &err) == LT_ERR_FORMAT && strstr(err.msg, "layer 2"), "missing layer: %s",
             err.msg);

    /* values: the loaded arrays equal PEFT's file */
    lt_st_file *pf = NULL;
    char path[8192], out[2048];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", src);
    LT_CHECK_OK(lt_st_open(path, &pf, &err), &err);
    for (size_t i = 0; pf && i < a->n; i++) {
        char name[256];
        for (int b = 0; b < 2; b++) {
            lt_lora_peft_name(name, sizeof name, a->t[i].layer, a->t[i].target, b);
            const lt_st_tensor *t = lt_st_find(pf, name);
            LT_CHECK(t != NULL, "PEFT file lacks %s", name);
            if (t) LT_CHECK(!memcmp(t->data, b ? a->t[i].B : a->t[i].A, t->nbytes), "%s values", name);
        }
    }

    /* re-export and compare with PEFT's folder */
    snprintf(out, sizeof out, "%s/adapter_out", TMP);
    static const char *const tail[] = {"syncing adapter_model.safetensors", "writing adapter_config.json",
                                       "renaming it into place"};
    report_log l = {.fail_at = -1};
    LT_CHECK_OK(lt_peft_export_embed(out, &a->cfg, a->t, a->n, NULL, record_report, &l, &err), &err);
    check_reports(&l, 2 * (int)a->n, tail, 3, "adapter export");
    LT_CHECK(l.n == 2 * (int)a->n + 3, "adapter export: %d reports", l.n);
    lt_st_close(pf);
    same_as_peft(src, out, 1);
    LT_CHECK(count_tmp(TMP) == 0, "temp folders left");

    /* strings as Python's json.dumps (ensure_ascii) writes them: the text below is its output for
     * 'dir/"\u00e9\U0001F600\t\x7f'; the name loads back unchanged */
    {
        lt_peft_config c2 = a->cfg;
        snprintf(c2.base_model, sizeof c2.base_model, "dir/\"\xc3\xa9\xf0\x9f\x98\x80\t\x7f");
        LT_CHECK_OK(lt_peft_export(out, &c2, a->t, a->n, &err), &err);
        snprintf(path, sizeof path, "%s/adapter_config.json", out);
        char *txt = slurp(path);
        LT_CHECK(txt && strstr(txt, "\n  \"base_model_name_or_path\": \"dir/\\\"\\u00e9\\ud83d\\ude00\\t\\u007f\",\n"),
                 "escaped base model name: %s", txt ? txt : "(none)");
        free(txt);
        lt_peft_config c3;
        LT_CHECK_OK(lt_peft_load_config(out, &c3, &err), &err);
        LT_CHECK(!strcmp(c3.base_model, c2.base_model), "base model name read back as '%s'", c3.base_model);
    }
    /* our export loads back to the same adapter, also with rsLoRA / no base name */
    a->cfg.rslora = 1;
    a->cfg.alpha = 12.5;
    a->cfg.base_model[0] = 0;
    LT_CHECK_OK(lt_peft_export(out, &a->cfg, a->t, a->n, &err), &err);
    lt_peft_adapter *b = NULL;
    LT_CHECK_OK(lt_peft_load(out, &b, &err), &err);
    if (b) {
        LT_CHECK(b->cfg.rslora && b->cfg.alpha == 12.5 && !b->cfg.base_model[0] && b->n == a->n, "reloaded config");
        for (size_t i = 0; i < b->n && i < a->n; i++)
            LT_CHECK(b->t[i].layer == a->t[i].layer && b->t[i].target == a->t[i].target &&
                         !memcmp(b->t[i].A, a->t[i].A, (size_t)a->cfg.r * (size_t)a->t[i].in * 4) &&
                         !memcmp(b->t[i].B, a->t[i].B, (size_t)a->cfg.r * (size_t)a->t[i].out * 4),
                     "reloaded tensor %zu", i);
        lt_peft_free(b);
    }
    /* NaN refused, previous export intact */
    float *A0 = (float *)a->t[2].A;
    float keep = A0[5];
    A0[5] = NAN;
    LT_CHECK(lt_peft_export(out, &a->cfg, a->t, a->n, &err) == LT_ERR_NONFINITE && strstr(err.msg, "lora_A"),
             "NaN adapter: %s", err.msg);
    A0[5] = keep;
    LT_CHECK_OK(lt_peft_load(out, &b, &err), &err);
    lt_peft_free(b);
    lt_peft_free(a);

    /* adapters we refuse */
    static const struct {
        const char *json, *needle;
    } bad[] = {
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"], \"use_dora\": true}",
         "use_dora"},
        {"{\"peft_type\": \"IA3\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}", "IA3"},
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"lm_head\"]}", "lm_head"},
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": \".*proj\"}",
         "regular expression"},
        {"{\"peft_type\": \"LORA\", \"r\": -1, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}", "\"r\""},
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"], \"bias\": \"all\"}",
         "bias"},
        {"{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"], "
         "\"rank_pattern\": {\"q_proj\": 8}}",
         "rank_pattern"},
    };
    char bdir[2048];
    snprintf(bdir, sizeof bdir, "%s/bad_adapter", TMP);
    snprintf(path, sizeof path, "mkdir -p '%s' && cp '%s/adapter_model.safetensors' '%s/'", bdir, src, bdir);
    lt_test_system(path);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(path, sizeof path, "%s/adapter_config.json", bdir);
        lt_write_file_atomic(path, bad[i].json, strlen(bad[i].json), &err);
        lt_status s = lt_peft_load(bdir, &b, &err);
        LT_CHECK(s != LT_OK && strstr(err.msg, bad[i].needle), "bad adapter %zu: %s", i, err.msg);
    }
    /* PEFT 0.21.2's own config with one setting that changes the math: refused by name, also in the
     * 0.15 form (PEFT 0.15.2's file, tests/fixtures/peft/v0_15) */
    static const struct {
        const char *key, *value, *needle;
    } variant[] = {
        {"use_dora", "true", "use_dora"},
        {"lora_bias", "true", "lora_bias"},
        {"fan_in_fan_out", "true", "fan_in_fan_out"},
        {"use_qalora", "true", "use_qalora"},
        {"use_bdlora", "{\"target_a\": true, \"nblocks\": 2}", "use_bdlora"},
        {"rank_pattern", "{\"q_proj\": 8}", "rank_pattern"},
        {"alpha_pattern", "{\"v_proj\": 16}", "alpha_pattern"},
        {"layers_to_transform", "[0]", "layers_to_transform"},
        {"layer_replication", "[[0, 2], [1, 2]]", "layer_replication"},
        {"exclude_modules", "[\"layers.0.self_attn.q_proj\"]", "exclude_modules"},
        {"target_parameters", "[\"experts.gate_up_proj\"]", "target_parameters"},
        {"alora_invocation_tokens", "[5, 9]", "alora_invocation_tokens"},
        {"arrow_config", "{\"top_k\": 3}", "arrow_config"},
        {"kasa_config", "{\"beta\": 0.01}", "kasa_config"},
        {"monteclora_config", "{\"n_samples\": 4}", "monteclora_config"},
        {"velora_config", "{\"num_groups\": 32}", "velora_config"},
        {"lora_ga_config", "{\"bsz\": 2}", "lora_ga_config"},
        {"init_lora_weights", "\"pissa\"", "init_lora_weights"},
        {"init_lora_weights", "\"loftq\"", "init_lora_weights"},
        {"some_future_config", "{\"x\": 1}", "some_future_config"},
        {"bias", "\"lora_only\"", "bias"},
    };
    const char *const forms[2] = {"tests/fixtures/peft/adapter/adapter_config.json",
                                  "tests/fixtures/peft/v0_15/adapter_config.json"};
    snprintf(path, sizeof path, "%s/adapter_config.json", bdir);
    for (int fm = 0; fm < 2; fm++)
        for (size_t i = 0; i < sizeof variant / sizeof variant[0]; i++) {
            cJSON *j = read_json(lt_src_path(forms[fm]));
            if (!j) continue;
            cJSON_DeleteItemFromObjectCaseSensitive(j, variant[i].key);
            cJSON_AddItemToObject(j, variant[i].key, cJSON_Parse(variant[i].value));
            char *txt = cJSON_Print(j);
            lt_write_file_atomic(path, txt, strlen(txt), &err);
            lt_status s = lt_peft_load(bdir, &b, &err);
            LT_CHECK(s == LT_ERR_UNSUPPORTED && strstr(err.msg, variant[i].needle), "%s %s = %s: %s", forms[fm],
                     variant[i].key, variant[i].value, s == LT_OK ? "accepted" : err.msg);
            lt_peft_config pc;
            s = lt_peft_load_config(bdir, &pc, &err);
            LT_CHECK(s == LT_ERR_UNSUPPORTED && strstr(err.msg, variant[i].needle), "config only: %s = %s",
                     variant[i].key, variant[i].value);
            free(txt);
            cJSON_Delete(j);
        }
    /* both forms load as the same adapter; settings that do not change the math, and rsLoRA, are accepted */
    static const struct {
        const char *key, *value;
    } fine[] = {{"init_lora_weights", "\"gaussian\""}, {"init_lora_weights", "false"}, {"use_rslora", "true"},
                {"use_qalora", "false"}, {"qalora_group_size", "32"}, {"layers_pattern", "\"layers\""},
                {"revision", "\"main\""}, {"use_bdlora", "null"}, {"rank_pattern", "{}"}, {NULL, NULL}};
    for (int fm = 0; fm < 2; fm++)
        for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
            cJSON *j = read_json(lt_src_path(forms[fm]));
            if (!j) continue;
            if (fine[i].key) {
                cJSON_DeleteItemFromObjectCaseSensitive(j, fine[i].key);
                cJSON_AddItemToObject(j, fine[i].key, cJSON_Parse(fine[i].value));
            }
            char *txt = cJSON_Print(j);
            lt_write_file_atomic(path, txt, strlen(txt), &err);
            b = NULL;
            LT_CHECK_OK(lt_peft_load(bdir, &b, &err), &err);
            if (b) {
                int rs = fine[i].key && !strcmp(fine[i].key, "use_rslora");
                LT_CHECK(b->cfg.r == 4 && b->cfg.alpha == 8 && b->cfg.dropout == 0.05 && b->cfg.rslora == rs &&
                             b->n == 6 && !strcmp(b->cfg.base_model, "base") &&
                             b->cfg.targets == ((1u << LT_LORA_Q) | (1u << LT_LORA_V) | (1u << LT_LORA_DOWN)),
                         "%s with %s = %s: loaded config", forms[fm], fine[i].key ? fine[i].key : "(as is)",
                         fine[i].value ? fine[i].value : "");
                lt_peft_free(b);
            }
            free(txt);
            cJSON_Delete(j);
        }
    /* tensors for a module that target_modules does not list */
    const char *only_q = "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}";
    lt_write_file_atomic(path, only_q, strlen(only_q), &err);
    LT_CHECK(lt_peft_load(bdir, &b, &err) == LT_ERR_FORMAT && strstr(err.msg, "not in target_modules"),
             "unlisted module: %s", err.msg);
}

/* ---- LoRA init vs PEFT ---- */

/* Every family's PEFT adapter (tests/fixtures/train/<model>/adapter, made by
 * PEFT on that family's tiny model: all its projections, phi3's fused
 * qkv_proj and gate_up_proj) loads, fits its base model, and re-exports as
 * PEFT wrote it. */
static void test_peft_families(void) {
    const char *models[32];
    size_t nm = lt_family_fixtures(models, 32);
    for (size_t i = 0; i < nm; i++) {
        char src[4096], base[4096], out[2048];
        snprintf(src, sizeof src, "%s%s/adapter", lt_src_path("tests/fixtures/train/"), models[i]);
        snprintf(base, sizeof base, "%s%s", lt_src_path("tests/fixtures/models/"), models[i]);
        snprintf(out, sizeof out, "%s/adapter_%s", TMP, models[i]);
        lt_err err;
        lt_peft_adapter *a = NULL;
        lt_config cfg;
        LT_CHECK_OK(lt_peft_load(src, &a, &err), &err);
        LT_CHECK_OK(lt_config_load(base, &cfg, &err), &err);
        if (!a) continue;
        LT_CHECK(a->cfg.targets == lt_lora_targets_for(&cfg, LT_LORA_ALL_TARGETS), "%s: targets %x", models[i],
                 a->cfg.targets);
        LT_CHECK(a->n == (size_t)cfg.num_layers * (cfg.fused_proj ? 4 : 7), "%s: %zu adapted modules", models[i],
                 a->n);
        LT_CHECK_OK(lt_peft_check(a, &cfg, &err), &err);
        LT_CHECK_OK(lt_peft_export(out, &a->cfg, a->t, a->n, &err), &err);
        same_as_peft(src, out, 0); /* values: PEFT's lora_alpha 8.0 reads back as 8 */
        lt_peft_free(a);
    }
}

static void test_lora_init(void) {
    lt_err err;
    cJSON *j = read_json(lt_src_path("tests/fixtures/peft/expected.json"));
    lt_st_file *f = NULL;
    LT_CHECK_OK(lt_st_open(lt_src_path("tests/fixtures/peft/expected.safetensors"), &f, &err), &err);
    if (!j || !f) return;
    const cJSON *probe = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "init_probe"), 0);
    int in = cJSON_GetObjectItem(probe, "in_features")->valueint, r = cJSON_GetObjectItem(probe, "r")->valueint;
    double peft_std = cJSON_GetObjectItem(probe, "std_A")->valuedouble,
           peft_max = cJSON_GetObjectItem(probe, "max_abs_A")->valuedouble,
           bound = cJSON_GetObjectItem(probe, "bound")->valuedouble;
    LT_CHECK(fabs(bound - 1.0 / sqrt((double)in)) < 1e-12, "bound");
    LT_CHECK(peft_max <= bound && peft_max > 0.99 * bound, "PEFT's own max |A| %g vs bound %g", peft_max, bound);
    const lt_st_tensor *pa = lt_st_find(f, "init_A");
    LT_CHECK(pa && pa->numel == (size_t)r * (size_t)in, "init_A");
    size_t n = (size_t)r * (size_t)in;
    float *A = malloc(n * 4);
    lt_poison(A, n);
    lt_rng rng;
    lt_rng_seed(&rng, 7);
    lt_lora_init_A(A, r, in, &rng);
    double s = 0, s2 = 0, mx = 0;
    enum { NB = 10 };
    double hist_ours[NB] = {0}, hist_peft[NB] = {0};
    const float *P = pa ? (const float *)pa->data : A;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        finite &= isfinite(A[i]) != 0;
        s += A[i];
        s2 += (double)A[i] * A[i];
        if (fabs(A[i]) > mx) mx = fabs(A[i]);
        int bo = (int)((A[i] / bound + 1.0) * 0.5 * NB), bp = (int)((P[i] / bound + 1.0) * 0.5 * NB);
        hist_ours[bo < 0 ? 0 : bo >= NB ? NB - 1 : bo] += 1.0 / (double)n;
        hist_peft[bp < 0 ? 0 : bp >= NB ? NB - 1 : bp] += 1.0 / (double)n;
    }
    double mean = s / (double)n, std = sqrt(s2 / (double)n - mean * mean);
    LT_CHECK(finite && mx <= bound && mx > 0.99 * bound, "our max |A| %g vs bound %g", mx, bound);
    LT_CHECK(fabs(std - peft_std) < 0.03 * peft_std, "our std %g vs PEFT %g", std, peft_std);
    LT_CHECK(fabs(mean) < 0.05 * bound, "mean %g", mean);
    for (int b = 0; b < NB; b++)
        LT_CHECK(fabs(hist_ours[b] - hist_peft[b]) < 0.02, "histogram bin %d: ours %.4f PEFT %.4f", b, hist_ours[b],
                 hist_peft[b]);
    free(A);
    /* the tiny model's modules: PEFT's bound is 1/sqrt(in) with our dims, B zero, scaling alpha/r */
    lt_config cfg;
    LT_CHECK_OK(lt_config_load(lt_src_path("tests/fixtures/peft/base"), &cfg, &err), &err);
    const cJSON *m;
    int nm = 0;
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(j, "init_tiny")) {
        const char *mod = cJSON_GetObjectItem(m, "module")->valuestring;
        int t = -1;
        for (int k = 0; k < LT_LORA_NTARGETS; k++)
            if (strstr(mod, lt_lora_target_hf(k))) t = k;
        int din = 0, dout = 0;
        if (t >= 0) lt_lora_target_dims(&cfg, t, &din, &dout);
        LT_CHECK(t >= 0 && cJSON_GetObjectItem(m, "in_features")->valueint == din, "%s in_features", mod);
        LT_CHECK(cJSON_GetObjectItem(m, "max_abs_A")->valuedouble <= 1.0 / sqrt((double)din), "%s bound", mod);
        LT_CHECK(cJSON_IsTrue(cJSON_GetObjectItem(m, "B_all_zero")), "%s B zero", mod);
        LT_CHECK(cJSON_GetObjectItem(m, "scaling")->valuedouble == lt_lora_scale(8, 4, 0), "%s scaling", mod);
        nm++;
    }
    LT_CHECK(nm == 6, "%d tiny modules", nm);
    LT_CHECK(lt_lora_scale(16, 4, 1) == 8.0 && lt_lora_scale(16, 4, 0) == 4.0, "rslora scale");
    cJSON_Delete(j);
    lt_st_close(f);
}

/* ---- Hugging Face export ---- */

static void test_hf_export(void) {
    lt_err err;
    char src[2048], out[2048], cmd[16384], a[4096], b[4096];
    /* a source folder: the fixture base model + tokenizer files (no special_tokens_map.json) */
    snprintf(src, sizeof src, "%s/hf_src", TMP);
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s' && mkdir -p '%s' && cp '%s'/* '%s/' && printf '{\"model\": {\"type\": \"BPE\"}}' > "
             "'%s/tokenizer.json' && printf '{\"bos_token\": \"<s>\"}' > '%s/tokenizer_config.json'",
             src, src, lt_src_path("tests/fixtures/peft/base"), src, src, src);
    LT_CHECK(lt_test_system(cmd) == 0, "prepare source");
    lt_st_model *m = NULL;
    LT_CHECK_OK(lt_st_open_model(src, &m, &err), &err);
    if (!m) return;
    size_t n = lt_st_model_count(m);
    lt_export_tensor *ts = calloc(n + 1, sizeof *ts);
    float **data = calloc(n + 1, sizeof *data);
    for (size_t i = 0; i < n; i++) {
        const lt_st_tensor *t = lt_st_model_get(m, i);
        data[i] = malloc(t->numel * 4);
        LT_CHECK_OK(lt_st_to_f32(t, data[i], t->numel, &err), &err);
        for (size_t j = 0; j < t->numel; j++) data[i][j] += 0.001f * (float)(j % 7); /* "trained" */
        ts[i].name = t->name;
        ts[i].ndim = t->ndim;
        memcpy(ts[i].shape, t->shape, sizeof ts[i].shape);
        ts[i].data = data[i];
        /* matrices keep the source dtype (F32); norms go out as BF16 to test conversion */
        ts[i].dtype = t->ndim == 1 ? LT_BF16 : t->dtype;
    }
    /* an extra tensor with hand-made rounding cases: ties go to even */
    static const float rne_in[6] = {1.00390625f, 1.01171875f, -1.00390625f, 0x1.010002p0f, 3.0e38f, 1e-40f};
    static const uint16_t rne_want[6] = {0x3f80, 0x3f82, 0xbf80, 0x3f81, 0x7f62, 0x0001};
    ts[n].name = "test.rne";
    ts[n].ndim = 1;
    ts[n].shape[0] = 6;
    ts[n].data = rne_in;
    ts[n].dtype = LT_BF16;

    snprintf(out, sizeof out, "%s/hf_out", TMP);
    lt_test_system("true");
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && echo stale > '%s/stale.txt'", out, out, out);
    lt_test_system(cmd);
    LT_CHECK_OK(lt_export_hf(out, src, ts, n + 1, 0, &err), &err);
    snprintf(a, sizeof a, "%s/stale.txt", out);
    LT_CHECK(!lt_file_exists(a), "the previous folder's files survived the replacement");
    static const char *const copied[] = {"config.json", "generation_config.json", "tokenizer.json",
                                         "tokenizer_config.json"};
    for (int k = 0; k < 4; k++) {
        snprintf(a, sizeof a, "%s/%s", src, copied[k]);
        snprintf(b, sizeof b, "%s/%s", out, copied[k]);
        LT_CHECK(same_file(a, b), "%s not copied byte for byte", copied[k]);
    }
    snprintf(b, sizeof b, "%s/special_tokens_map.json", out);
    LT_CHECK(!lt_file_exists(b), "special_tokens_map.json appeared from nowhere");
    LT_CHECK(count_tmp(TMP) == 0, "temp folders left");

    for (int sharded = 0; sharded < 2; sharded++) {
        if (sharded) { /* small shards: index + several files, read back through the model reader */
            LT_CHECK_OK(lt_export_hf(out, src, ts, n + 1, 40000, &err), &err);
            snprintf(b, sizeof b, "%s/model.safetensors.index.json", out);
            cJSON *idx = read_json(b);
            LT_CHECK(idx && cJSON_GetArraySize(cJSON_GetObjectItem(idx, "weight_map")) == (int)n + 1, "index");
            snprintf(b, sizeof b, "%s/model-00002-of-", out);
            cJSON_Delete(idx);
            snprintf(b, sizeof b, "%s/model.safetensors", out);
            LT_CHECK(!lt_file_exists(b), "single file next to shards");
        }
        lt_st_model *o = NULL;
        LT_CHECK_OK(lt_st_open_model(out, &o, &err), &err);
        if (!o) continue;
        LT_CHECK(lt_st_model_count(o) == n + 1, "%zu tensors", lt_st_model_count(o));
        for (size_t i = 0; i <= n; i++) {
            const lt_st_tensor *t = lt_st_model_find(o, ts[i].name);
            LT_CHECK(t && t->dtype == ts[i].dtype && t->ndim == ts[i].ndim && t->shape[0] == ts[i].shape[0],
                     "tensor %s name/dtype/shape", ts[i].name);
            if (!t) continue;
            size_t bad = 0;
            for (size_t j = 0; j < t->numel; j++) {
                if (t->dtype == LT_F32) bad += ((const float *)t->data)[j] != ts[i].data[j];
                else bad += ((const uint16_t *)t->data)[j] != lt_f32_to_bf16(ts[i].data[j]);
            }
            LT_CHECK(bad == 0, "%s: %zu values differ", ts[i].name, bad);
            if (t->dtype == LT_BF16 && i < n) { /* and they are close to the f32 values */
                float *back = malloc(t->numel * 4);
                lt_st_to_f32(t, back, t->numel, &err);
                lt_cmp c = lt_compare(back, ts[i].data, t->numel);
                LT_CHECK(c.max_rel <= 1.0 / 256, "%s: bf16 max rel %g", ts[i].name, c.max_rel);
                free(back);
            }
        }
        const lt_st_tensor *r = lt_st_model_find(o, "test.rne");
        for (int k = 0; r && k < 6; k++)
            LT_CHECK(((const uint16_t *)r->data)[k] == rne_want[k], "bf16(%.9g) = 0x%04x, expected 0x%04x",
                     rne_in[k], ((const uint16_t *)r->data)[k], rne_want[k]);
        lt_st_close_model(o);
    }

    /* progress reports: each tensor, each shard's sync, then the tail's steps in order; a failing
     * report stops the export with its error, the previous folder intact, nothing left behind */
    {
        static const char *const tail[] = {"writing model.safetensors.index.json", "copying config.json",
                                           "copying tokenizer.json", "copying tokenizer_config.json",
                                           "copying generation_config.json", "renaming it into place"};
        report_log u = {.fail_at = -1}; /* one file: its sync, then the tail without an index */
        LT_CHECK_OK(lt_export_hf_stream(out, src, ts, n + 1, 0, NULL, NULL, record_report, &u, &err), &err);
        const char *const one[] = {"syncing model.safetensors", tail[1], tail[2], tail[3], tail[4], tail[5]};
        check_reports(&u, (int)n + 1, one, 6, "one-file export");
        LT_CHECK(u.n == (int)n + 1 + 6, "one-file export: %d reports", u.n);
        report_log l = {.fail_at = -1};
        LT_CHECK_OK(lt_export_hf_stream(out, src, ts, n + 1, 40000, NULL, NULL, record_report, &l, &err), &err);
        check_reports(&l, (int)n + 1, tail, 6, "sharded export");
        int syncs = 0;
        for (int i = 0; i < l.n && i < 64; i++) syncs += !strncmp(l.what[i], "syncing model-0000", 18);
        LT_CHECK(syncs >= 2 && !strncmp(l.what[l.n - 7], "syncing model-0000", 18),
                 "sharded export: %d shard syncs, the last before the index", syncs);
        report_log f = {.fail_at = l.n};
        LT_CHECK(lt_export_hf_stream(out, src, ts, n + 1, 40000, NULL, NULL, record_report, &f, &err) == LT_ERR_IO &&
                     strstr(err.msg, "refused"),
                 "a failing report (the rename's): %s", err.msg);
        snprintf(b, sizeof b, "%s/model.safetensors.index.json", out);
        LT_CHECK(lt_file_exists(b) && count_tmp(TMP) == 0, "a failed report damaged the previous export / left temp");
    }

    /* a failing export (NaN; source without config.json) leaves the previous folder intact */
    data[0][3] = NAN;
    LT_CHECK(lt_export_hf(out, src, ts, n + 1, 0, &err) == LT_ERR_NONFINITE && strstr(err.msg, ts[0].name),
             "NaN export: %s", err.msg);
    data[0][3] = 0;
    snprintf(b, sizeof b, "%s/model.safetensors.index.json", out);
    LT_CHECK(lt_file_exists(b), "previous export damaged by a refused one");
    LT_CHECK(lt_export_hf(out, TMP, ts, n + 1, 0, &err) == LT_ERR_IO && strstr(err.msg, "config.json"),
             "no config: %s", err.msg);
    LT_CHECK(lt_file_exists(b) && count_tmp(TMP) == 0, "previous export damaged / temp left");
    ts[1].dtype = LT_I32;
    LT_CHECK(lt_export_hf(out, src, ts, n + 1, 0, &err) == LT_ERR_INVALID, "I32 export accepted");

    for (size_t i = 0; i < n; i++) free(data[i]);
    free(data);
    free(ts);
    lt_st_close_model(m);
}

/* The language model inside Gemma3ForConditionalGeneration (gemma3_cg),
 * in either tensor layout: loaded, one weight changed ("trained"), exported
 * with lt_export_hf from the model's parameters. The folder holds the same
 * tensor names as the source (the layout it came in: the language model's
 * prefix, the vision tower and projector's), the vision tower and
 * projector byte for byte, the language model's tensors as the parameters
 * (the changed one changed), config.json byte for byte; and it loads again. */
static void test_hf_export_wrapped(void) {
    const char *fix = lt_src_path("tests/fixtures/models/gemma3_cg");
    for (int lay = -1; lay < LT_WRAP_LAYOUTS; lay++) {
        char src[2048], out[2048], a[4200], b[4200];
        snprintf(src, sizeof src, "%s", fix);
        if (lay >= 0) { /* the fixture's tensors under layout lay's names */
            snprintf(src, sizeof src, "%s/cg_layout%d", TMP, lay);
            LT_CHECK(lt_test_relayout(fix, src, lay), "relayout %d", lay);
        }
        snprintf(out, sizeof out, "%s/cg_out%d", TMP, lay);
        lt_err err = {{0}};
        lt_backend *be = NULL;
        lt_model *m = NULL;
        LT_CHECK_OK(lt_cpu_backend_create(0, &be, &err), &err);
        LT_CHECK_OK(lt_model_load(src, be, &m, &err), &err);
        if (!m) {
            if (be) be->destroy(be);
            continue;
        }
        size_t n = lt_model_num_params(m);
        lt_export_tensor *ts = calloc(n, sizeof *ts);
        float **data = calloc(n, sizeof *data);
        for (size_t i = 0; i < n; i++) {
            lt_param *p = lt_model_param(m, i);
            data[i] = malloc(p->numel * sizeof(float));
            LT_CHECK_OK(be->download_f32(be, data[i], p->data, be->param_dtype, p->numel, &err), &err);
            ts[i] = (lt_export_tensor){.name = p->name, .ndim = p->ndim, .data = data[i], .dtype = LT_F32};
            ts[i].shape[0] = p->shape[0];
            ts[i].shape[1] = p->shape[1];
        }
        const char *changed = "model.layers.1.mlp.up_proj.weight";
        for (size_t i = 0; i < n; i++)
            if (!strcmp(ts[i].name, changed)) data[i][5] += 0.25f;
        LT_CHECK_OK(lt_export_hf(out, src, ts, n, 0, &err), &err);
        snprintf(a, sizeof a, "%s/config.json", src);
        snprintf(b, sizeof b, "%s/config.json", out);
        LT_CHECK(same_file(a, b), "layout %d: config.json not copied byte for byte", lay);
        lt_st_file *fs = NULL, *fo = NULL;
        snprintf(a, sizeof a, "%s/model.safetensors", src);
        snprintf(b, sizeof b, "%s/model.safetensors", out);
        LT_CHECK_OK(lt_st_open(a, &fs, &err), &err);
        LT_CHECK_OK(lt_st_open(b, &fo, &err), &err);
        if (fs && fo) {
            LT_CHECK(lt_st_count(fs) == lt_st_count(fo), "layout %d: %zu tensors written, the source has %zu", lay,
                     lt_st_count(fo), lt_st_count(fs));
            size_t vision = 0, n_changed = 0;
            for (size_t i = 0; i < lt_st_count(fs); i++) {
                const lt_st_tensor *t = lt_st_get(fs, i), *o = lt_st_find(fo, t->name);
                LT_CHECK(o != NULL, "layout %d: '%s' not in the export", lay, t->name);
                if (!o) continue;
                int lm = !strstr(t->name, "vision_tower.") && !strstr(t->name, "multi_modal_projector.");
                vision += !lm;
                int same = o->dtype == t->dtype && o->nbytes == t->nbytes && !memcmp(o->data, t->data, t->nbytes);
                if (strstr(t->name, "layers.1.mlp.up_proj.weight")) {
                    n_changed++;
                    LT_CHECK(!same && ((const float *)o->data)[5] == ((const float *)t->data)[5] + 0.25f,
                             "layout %d: '%s' does not hold the trained value", lay, t->name);
                } else {
                    LT_CHECK(same, "layout %d: '%s' not written byte for byte", lay, t->name);
                }
            }
            LT_CHECK(vision == 34 && n_changed == 1, "layout %d: %zu vision / projector tensors, %zu changed", lay,
                     vision, n_changed);
        }
        if (fs) lt_st_close(fs);
        if (fo) lt_st_close(fo);
        lt_model *m2 = NULL; /* and the export loads again */
        LT_CHECK_OK(lt_model_load(out, be, &m2, &err), &err);
        if (m2) lt_model_free(m2);
        for (size_t i = 0; i < n; i++) free(data[i]);
        free(data);
        free(ts);
        lt_model_free(m);
        be->destroy(be);
    }
}

/* A Gemma3ForConditionalGeneration config.json over weights in neither
 * layout (the llama fixture's), or in both at once: refused, naming the
 * prefixes. */
static void test_wrapped_layout_refusals(void) {
    char dir[2048], cmd[20000], path[2100], cg[4096], llama[4096];
    lt_err err = {{0}};
    lt_config cfg;
    lt_st_model *m = NULL;
    snprintf(cg, sizeof cg, "%s", lt_src_path("tests/fixtures/models/gemma3_cg"));
    snprintf(llama, sizeof llama, "%s", lt_src_path("tests/fixtures/models/llama"));
    snprintf(dir, sizeof dir, "%s/cg_neither", TMP);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s/config.json' '%s/' && cp '%s/model.safetensors' '%s/'",
             dir, dir, cg, dir, llama, dir);
    LT_CHECK(lt_test_system(cmd) == 0, "prepare %s", dir);
    LT_CHECK_OK(lt_config_load(dir, &cfg, &err), &err);
    LT_CHECK(lt_model_open_weights(dir, &cfg, &m, NULL, &err) == LT_ERR_FORMAT &&
                 strstr(err.msg, "no tensor is under 'model.language_model.' or 'language_model.model.'"),
             "weights in neither layout: %s", err.msg);
    /* both: the fixture's tensors plus one under transformers 5's names */
    snprintf(dir, sizeof dir, "%s/cg_both", TMP);
    LT_CHECK(lt_test_relayout(cg, dir, 1), "relayout");
    lt_st_file *f = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    LT_CHECK_OK(lt_st_open(path, &f, &err), &err);
    if (!f) return;
    size_t n = lt_st_count(f);
    lt_st_write_tensor *w = calloc(n + 1, sizeof *w);
    for (size_t i = 0; i < n; i++) {
        const lt_st_tensor *t = lt_st_get(f, i);
        w[i] = (lt_st_write_tensor){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(w[i].shape, t->shape, sizeof w[i].shape);
    }
    w[n] = w[0];
    w[n].name = "model.language_model.extra.weight";
    static const char *const mk[] = {"format"}, *const mv[] = {"pt"};
    snprintf(path, sizeof path, "%s/model-both.safetensors", dir);
    LT_CHECK_OK(lt_st_write(path, w, n + 1, mk, mv, 1, &err), &err);
    lt_st_close(f);
    free(w);
    snprintf(cmd, sizeof cmd, "mv '%s/model-both.safetensors' '%s/model.safetensors'", dir, dir);
    lt_test_system(cmd);
    LT_CHECK(lt_model_open_weights(dir, &cfg, &m, NULL, &err) == LT_ERR_FORMAT &&
                 strstr(err.msg, "tensors under both 'model.language_model.' and 'language_model.model.'"),
             "weights in both layouts: %s", err.msg);
}

static void test_names(void) {
    char name[256];
    lt_err err;
    lt_lora_peft_name(name, sizeof name, 11, LT_LORA_GATE, 1);
    LT_CHECK(!strcmp(name, "base_model.model.model.layers.11.mlp.gate_proj.lora_B.weight"), "%s", name);
    int L, t, isB;
    LT_CHECK_OK(lt_lora_parse_peft_name("base_model.model.model.layers.3.self_attn.o_proj.lora_A.weight", &L, &t,
                                        &isB, &err),
                &err);
    LT_CHECK(L == 3 && t == LT_LORA_O && !isB, "parsed");
    LT_CHECK(lt_lora_parse_peft_name("base_model.model.model.layers.3.mlp.o_proj.lora_A.weight", &L, &t, &isB,
                                     &err) == LT_ERR_FORMAT,
             "o_proj under mlp accepted");
    LT_CHECK(lt_lora_parse_peft_name("base_model.model.lm_head.lora_A.weight", &L, &t, &isB, &err) == LT_ERR_FORMAT,
             "lm_head accepted");
    unsigned mask;
    char s[64];
    LT_CHECK_OK(lt_lora_parse_targets("down, q_proj ,v", &mask, &err), &err);
    lt_lora_targets_str(mask, s, sizeof s);
    LT_CHECK(!strcmp(s, "q,v,down"), "%s", s);
}

int main(void) {
    snprintf(TMP, sizeof TMP, "%s", lt_test_tmpdir("test_export"));
    test_names();
    test_peft_roundtrip();
    test_peft_families();
    test_lora_init();
    test_hf_export();
    test_hf_export_wrapped();
    test_wrapped_layout_refusals();
    return lt_test_finish("test_export");
}
