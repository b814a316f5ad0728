/*
 * test_model_fixtures.c -- the transformer runtime against transformers.
 *
 * For each tiny random model under tests/fixtures/models/ (written by
 * tools/gen_fixtures.py with transformers 4.51.3, eager attention, fp32; the
 * reference runs every document alone and never packs), load it through the
 * normal path on the CPU backend and compare:
 *   - the packed batch layout built by lt_batch_fill_sequence (exact),
 *   - logits (N, V) and per-token losses (N)       normalized error <= 1e-5,
 *   - the loss (sum / n_targets)                    relative error   <= 1e-5,
 *   - the gradient of every parameter               normalized error <= 1e-5,
 *   - the same gradients accumulated over two micro-batches (one sequence
 *     each, loss_norm = the whole batch's target count).
 * Outputs are poisoned (NaN) on the host before every download.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_family.h"
#include "lt_model.h"
#include "lt_safetensors.h"
#include "lt_test.h"

#define TOL 1e-5


/* copy a tensor of the expected file out (alignment-safe), checking dtype and size */
static void *get(const lt_st_file *f, const char *name, lt_dtype dt, size_t numel) {
    const lt_st_tensor *t = lt_st_find(f, name);
    if (!t || t->dtype != dt || t->numel != numel) {
        fprintf(stderr, "FAIL expected.safetensors: '%s' missing or not %s[%zu]\n", name, lt_dtype_name(dt), numel);
        return NULL;
    }
    void *p = malloc(t->nbytes);
    memcpy(p, t->data, t->nbytes);
    return p;
}

static double json_number(const char *path, const char *key) {
    char *txt = NULL;
    size_t len = 0;
    lt_err err;
    if (lt_read_file(path, &txt, &len, &err)) return NAN;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    double r = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    cJSON_Delete(j);
    return r;
}

typedef struct {
    double logits, losses, loss_rel, grad_max, grad_micro_max;
    char worst[96];
} summary;

/* compare every parameter's gradient with grad.<name>; returns max norm err */
static double check_grads(lt_model *m, const lt_st_file *ex, const char *model, const char *tag, char *worst) {
    lt_backend *be = lt_model_backend(m);
    double maxerr = 0;
    size_t n_expected = 0;
    for (size_t i = 0; i < lt_st_count(ex); i++)
        if (!strncmp(lt_st_get(ex, i)->name, "grad.", 5)) n_expected++;
    LT_CHECK(n_expected == lt_model_num_params(m), "%s: %zu reference gradients but %zu parameters", model,
             n_expected, lt_model_num_params(m));
    for (size_t i = 0; i < lt_model_num_params(m); i++) {
        lt_param *p = lt_model_param(m, i);
        char key[128], what[192];
        snprintf(key, sizeof key, "grad.%s", p->name);
        float *want = get(ex, key, LT_F32, p->numel);
        LT_CHECK(want != NULL, "%s: no reference gradient for %s", model, p->name);
        if (!want) continue;
        float *got = malloc(p->numel * sizeof *got);
        lt_poison(got, p->numel);
        lt_err err = {{0}};
        LT_CHECK_OK(be->download_f32(be, got, p->grad, LT_F32, p->numel, &err), &err);
        snprintf(what, sizeof what, "%s %s d%s", model, tag, p->name);
        lt_check_close(what, got, want, p->numel, TOL);
        lt_cmp c = lt_compare(got, want, p->numel);
        if (c.n_nonfinite) c.norm_err = INFINITY;
        if (c.norm_err > maxerr) {
            maxerr = c.norm_err;
            if (worst) snprintf(worst, 96, "%s", p->name);
        }
        free(got);
        free(want);
    }
    return maxerr;
}

/* Run the fixture `name` loading the model from `load_dir` (the fixture
 * folder itself, or a folder with the same weights and another form of its
 * config.json); the expected outputs always come from the fixture. */
static void run_model(const char *name, const char *load_dir, summary *sum) {
    char dir[4096], expath[4200], jpath[4200];
    snprintf(dir, sizeof dir, "%s", lt_src_path("tests/fixtures/models/"));
    strncat(dir, name, sizeof dir - strlen(dir) - 1);
    if (!load_dir) load_dir = dir;
    snprintf(expath, sizeof expath, "%s/expected.safetensors", dir);
    snprintf(jpath, sizeof jpath, "%s/expected.json", dir);
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_st_file *ex = NULL;
    int32_t *tokens = NULL, *mask32 = NULL, *w_targets = NULL, *w_pos = NULL, *w_doc = NULL, *n_docs = NULL,
            *doc_lens = NULL;
    float *w_logits = NULL, *w_losses = NULL;
    LT_CHECK_OK(lt_cpu_backend_create(0, &be, &err), &err);
    LT_CHECK_OK(lt_model_load(load_dir, be, &m, &err), &err);
    LT_CHECK_OK(lt_st_open(expath, &ex, &err), &err);
    if (!be || !m || !ex) goto done;
    const lt_config *cfg = lt_model_config(m);
    double want_loss = json_number(jpath, "loss"), want_nt = json_number(jpath, "n_targets");
    double want_np = json_number(jpath, "num_parameters");
    LT_CHECK(lt_model_num_elements(m) == (size_t)want_np, "%s: %zu parameters, transformers counts %.0f", name,
             lt_model_num_elements(m), want_np);

    const lt_st_tensor *tt = lt_st_find(ex, "tokens");
    LT_CHECK(tt && tt->ndim == 2, "%s: tokens (B, T)", name);
    if (!tt || tt->ndim != 2) goto done;
    int B = (int)tt->shape[0], T = (int)tt->shape[1], N = B * T, V = cfg->vocab_size;
    tokens = get(ex, "tokens", LT_I32, (size_t)N);
    mask32 = get(ex, "mask", LT_I32, (size_t)N);
    w_targets = get(ex, "targets", LT_I32, (size_t)N);
    w_pos = get(ex, "pos", LT_I32, (size_t)N);
    w_doc = get(ex, "doc_start", LT_I32, (size_t)N);
    n_docs = get(ex, "n_docs", LT_I32, (size_t)B);
    const lt_st_tensor *dl = lt_st_find(ex, "doc_lens");
    int maxdoc = dl ? (int)dl->shape[1] : 0;
    doc_lens = get(ex, "doc_lens", LT_I32, (size_t)B * maxdoc);
    w_logits = get(ex, "logits", LT_F32, (size_t)N * V);
    w_losses = get(ex, "losses", LT_F32, (size_t)N);
    if (!tokens || !mask32 || !w_targets || !w_pos || !w_doc || !n_docs || !doc_lens || !w_logits || !w_losses) {
        LT_CHECK(0, "%s: expected.safetensors incomplete", name);
        goto done;
    }

    /* the batch, built by our packing code */
    int32_t *targets = malloc(N * sizeof(int32_t)), *pos = malloc(N * sizeof(int32_t)),
            *doc = malloc(N * sizeof(int32_t));
    uint8_t *mask = malloc((size_t)N);
    for (int n = 0; n < N; n++) mask[n] = (uint8_t)mask32[n];
    for (int b = 0; b < B; b++) {
        int lens[16];
        for (int d = 0; d < n_docs[b]; d++) lens[d] = doc_lens[b * maxdoc + d];
        LT_CHECK_OK(lt_batch_fill_sequence(T, tokens + b * T, mask + b * T, lens, n_docs[b], targets + b * T,
                                           pos + b * T, doc + b * T, &err),
                    &err);
    }
    int layout_ok = 1;
    for (int n = 0; n < N; n++)
        layout_ok &= targets[n] == w_targets[n] && pos[n] == w_pos[n] && doc[n] == w_doc[n];
    LT_CHECK(layout_ok, "%s: lt_batch_fill_sequence disagrees with the generator's layout", name);
    lt_batch batch = {.B = B, .T = T, .tokens = tokens, .targets = targets, .pos = pos, .doc_start = doc};

    /* forward only: logits and losses */
    float *logits = malloc((size_t)N * V * sizeof(float)), *losses = malloc(N * sizeof(float));
    lt_poison(logits, (size_t)N * V);
    lt_poison(losses, N);
    lt_step_result res = {0};
    LT_CHECK_OK(lt_model_plan(m, B, T, &err), &err);
    LT_CHECK_OK(lt_model_alloc_grads(m, &err), &err);
    LT_CHECK_OK(lt_model_step(m, &batch, 0, 1.0, &res, &err), &err);
    LT_CHECK_OK(lt_model_get_logits(m, logits, &err), &err);
    LT_CHECK_OK(lt_model_get_token_losses(m, losses, &err), &err);
    char what[128];
    snprintf(what, sizeof what, "%s logits", name);
    lt_check_close(what, logits, w_logits, (size_t)N * V, TOL);
    snprintf(what, sizeof what, "%s per-token losses", name);
    lt_check_close(what, losses, w_losses, N, TOL);
    sum->logits = lt_compare(logits, w_logits, (size_t)N * V).norm_err;
    sum->losses = lt_compare(losses, w_losses, N).norm_err;
    LT_CHECK(res.n_targets == (int64_t)want_nt, "%s: %lld targets, expected %.0f", name, (long long)res.n_targets,
             want_nt);
    double loss = res.loss_sum / (double)res.n_targets;
    sum->loss_rel = fabs(loss - want_loss) / fabs(want_loss);
    LT_CHECK(sum->loss_rel <= TOL, "%s: loss %.8f, transformers %.8f", name, loss, want_loss);

    /* forward + backward over the whole batch */
    lt_model_zero_grads(m);
    LT_CHECK_OK(lt_model_step(m, &batch, 1, (double)res.n_targets, &res, &err), &err);
    LT_CHECK(fabs(res.loss_sum / res.n_targets - want_loss) <= TOL * fabs(want_loss), "%s: loss with backward",
             name);
    LT_CHECK(lt_model_get_logits(m, logits, &err) != LT_OK, "%s: logits readable after a backward step", name);
    sum->grad_max = check_grads(m, ex, name, "full", sum->worst);

    /* two micro-batches (one sequence each) accumulate to the same gradient */
    lt_model_zero_grads(m);
    LT_CHECK_OK(lt_model_plan(m, 1, T, &err), &err);
    int64_t total = 0;
    for (int b = 0; b < B; b++) {
        lt_batch half = {.B = 1, .T = T, .tokens = tokens + b * T, .targets = targets + b * T, .pos = pos + b * T,
                         .doc_start = doc + b * T};
        LT_CHECK_OK(lt_model_step(m, &half, 1, want_nt, &res, &err), &err);
        total += res.n_targets;
    }
    LT_CHECK(total == (int64_t)want_nt, "%s: micro-batches hold %lld targets", name, (long long)total);
    sum->grad_micro_max = check_grads(m, ex, name, "micro", NULL);

    free(targets);
    free(pos);
    free(doc);
    free(mask);
    free(logits);
    free(losses);
done:
    free(tokens);
    free(mask32);
    free(w_targets);
    free(w_pos);
    free(w_doc);
    free(n_docs);
    free(doc_lens);
    free(w_logits);
    free(w_losses);
    if (ex) lt_st_close(ex);
    if (m) lt_model_free(m);
    if (be) be->destroy(be);
}

/* The transformers 5 form of the fixture's config.json
 * (tests/fixtures/config/v5/<name>/config.json, written by transformers 5 by
 * tools/gen_config_fixture.py v5-configs) next to links to the fixture's
 * weights, in a scratch folder; NULL if it cannot be built. */
static const char *v5_folder(const char *name) {
    static char out[4096];
    char v5cfg[4096], src[4096];
    static char cmd[7 * 4096 + 256];
    snprintf(v5cfg, sizeof v5cfg, "%s%s/config.json", lt_src_path("tests/fixtures/config/v5/"), name);
    snprintf(src, sizeof src, "%s%s", lt_src_path("tests/fixtures/models/"), name);
    snprintf(out, sizeof out, "%s/%s_v5", lt_test_tmpdir("test_model_fixtures"), name);
    /* the v5 form really is the v5 form: rope_parameters and dtype, none of the v4 keys */
    char *text = NULL;
    lt_err err = {{0}};
    LT_CHECK_OK(lt_read_file(v5cfg, &text, NULL, &err), &err);
    if (!text) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    /* a multimodal config (gemma3_cg) has the language model's rope settings under text_config */
    const cJSON *t = cJSON_GetObjectItem(j, "text_config") ? cJSON_GetObjectItem(j, "text_config") : j;
    int v5 = j && cJSON_GetObjectItem(t, "rope_parameters") && cJSON_GetObjectItem(j, "dtype") &&
             !cJSON_GetObjectItem(t, "rope_theta") && !cJSON_GetObjectItem(t, "rope_scaling") &&
             !cJSON_GetObjectItem(j, "torch_dtype") && !cJSON_GetObjectItem(t, "torch_dtype");
    cJSON_Delete(j);
    LT_CHECK(v5, "%s: %s is not in the transformers 5 form", name, v5cfg);
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s' && mkdir -p '%s' && for f in '%s'/model*; do ln -s \"$f\" '%s'/; done && cp '%s' '%s'/config.json",
             out, out, src, out, v5cfg, out);
    int rc = lt_test_system(cmd);
    LT_CHECK(rc == 0, "%s: could not build the v5 folder (%s)", name, cmd);
    return rc == 0 ? out : NULL;
}

int main(void) {
    enum { MAXM = 32 };
    const char *MODELS[MAXM];
    const size_t NM = lt_family_fixtures(MODELS, MAXM);
    LT_CHECK(NM >= 5 && NM <= MAXM, "the families list %zu fixture models", NM);
    summary s[3 * MAXM];
    int relaid[MAXM] = {0};
    memset(s, 0, sizeof s);
    for (size_t i = 0; i < NM; i++) {
        run_model(MODELS[i], NULL, &s[i]);
        const char *v5 = v5_folder(MODELS[i]);
        if (v5) run_model(MODELS[i], v5, &s[NM + i]);
        /* a multimodal model (gemma3_cg, saved in the legacy layout transformers' save_pretrained writes):
         * the same tensors under transformers 5's module names load as the same model */
        char fix[4096], other[4096];
        lt_config c;
        lt_err err = {{0}};
        snprintf(fix, sizeof fix, "%s%s", lt_src_path("tests/fixtures/models/"), MODELS[i]);
        snprintf(other, sizeof other, "%s/%s_layout0", lt_test_tmpdir("test_model_fixtures"), MODELS[i]);
        if (lt_config_load(fix, &c, &err) == LT_OK && c.wrap) {
            LT_CHECK(lt_test_relayout(fix, other, 0), "%s: relayout", MODELS[i]);
            run_model(MODELS[i], other, &s[2 * NM + i]);
            relaid[i] = 1;
        }
    }
    printf("%-14s %10s %10s %10s %10s %10s  worst grad\n", "model", "logits", "losses", "loss rel", "grads",
           "grads 2mb");
    static const char *const form[3] = {"v4", "v5", "v5 names"};
    for (size_t i = 0; i < 3 * NM; i++)
        if (i < 2 * NM || relaid[i % NM])
            printf("%-11s %-2s %10.2e %10.2e %10.2e %10.2e %10.2e  %s\n", MODELS[i % NM], form[i / NM], s[i].logits,
                   s[i].losses, s[i].loss_rel, s[i].grad_max, s[i].grad_micro_max, s[i].worst);
    return lt_test_finish("test_model_fixtures");
}
