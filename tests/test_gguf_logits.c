/*
 * test_gguf_logits.c -- llama.cpp runs what `luxtrain export --gguf` writes
 * and computes the logits luxtrain computes: for every model of
 * tests/fixtures/gguf/models.txt, luxtrain's own forward pass (CPU, f32, the
 * Hugging Face folder) on the fixture's tokens against the logits llama.cpp
 * (llama-cpp-python, tools/requirements-gguf.txt) computed from the GGUF in
 * each type (tests/fixtures/gguf/llama_cpp_logits.safetensors, made by
 * tools/gen_gguf_fixtures.py logits). A model with an adapter (the 4th
 * column: LoRA with trained embeddings, --train-embeddings new / all; the
 * PEFT adapter trained on Gemma3ForConditionalGeneration, gemma3_cg_lora) is
 * exported with --adapter and compared with luxtrain's forward with the
 * adapter merged (lt_eval_merge_adapter, as eval --adapter).
 *
 * Error measure: max |luxtrain - llama.cpp| over all positions and the
 * vocabulary, relative to max |luxtrain logit|. The fixture ran llama.cpp
 * on the CPU with an f32 KV cache, so the difference comes from the weights'
 * type and from ggml's CPU matmul, which rounds the activations to the
 * weights' dot-product type (f16, bf16, or Q8_0 blocks for q8_0). Tolerances
 * (measured on these random tiny models, whose logits reach 5-9: f32 <= 1.2e-6,
 * f16 <= 3.3e-3, bf16 <= 4.6e-2, q8_0 <= 5.8e-2, phi_long's q8_0 1.42e-1):
 *   f32 1e-5 (the same weights: any mapping error -- names, q/k permutation,
 *   rope_freqs, LongRoPE's factors and attn_factor, norms, tied head -- shows
 *   here), f16 1e-2, bf16 8e-2, q8_0 2e-1. phi_long (LongRoPE's long factors,
 *   up to 17.5) is the q8_0 outlier: llama.cpp's own q8_0 logits differ from
 *   its own f32 ones (which match luxtrain's to 8.7e-7) by 1.42e-1 of the
 *   largest logit, so that difference is llama.cpp's Q8_0 arithmetic.
 * GeGLU models (gemma2, gemma3) in f32: 2e-3. ggml's CPU GELU reads a table
 * indexed by the input rounded to f16 and holding f16 values (GGML_GELU_FP16),
 * so llama.cpp's own f32 graph is off by that rounding (measured 7.1e-4 gemma2,
 * 1.7e-4 gemma3; an independent numpy forward with the table's rounding
 * matches llama.cpp to 3.4e-5). Every mapping error tried on these fixtures
 * (norms without 1 + w, the local RoPE base, the linear RoPE factor, the
 * sliding window, the attention soft-cap, the attention scale) moves the
 * logits by 4e-2 or more.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_backend.h"
#include "lt_eval_adapter.h"
#include "lt_model.h"
#include "lt_safetensors.h"
#include "lt_test.h"

static const struct {
    const char *type;
    double tol;
} TYPES[] = {{"f32", 1e-5}, {"f16", 1e-2}, {"bf16", 8e-2}, {"q8_0", 2e-1}};
#define GEGLU_F32_TOL 2e-3 /* ggml's f16-table GELU (above) */

static void run(const char *name, const char *mdir, const char *adir, const lt_st_file *fx) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", lt_src_path(mdir));
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    const lt_st_tensor *tt = lt_st_find(fx, "tokens");
    LT_CHECK(tt && tt->dtype == LT_I32 && tt->ndim == 1, "fixture: tokens (T) int32");
    if (!tt) return;
    int T = (int)tt->shape[0];
    int32_t *tokens = malloc((size_t)T * sizeof *tokens), *targets = malloc((size_t)T * sizeof *targets),
            *pos = malloc((size_t)T * sizeof *pos), *doc = malloc((size_t)T * sizeof *doc);
    memcpy(tokens, tt->data, (size_t)T * sizeof *tokens);
    float *logits = NULL, *ref = NULL;
    LT_CHECK_OK(lt_cpu_backend_create(1, &be, &err), &err);
    LT_CHECK_OK(lt_model_load(dir, be, &m, &err), &err);
    if (!m) goto done;
    if (adir) /* the adapter merged as luxtrain evaluates with --adapter (trained embeddings included) */
        LT_CHECK_OK(lt_eval_merge_adapter(m, lt_src_path(adir), &err), &err);
    int V = lt_model_config(m)->vocab_size, len = T;
    lt_batch b = {.B = 1, .T = T, .tokens = tokens, .targets = targets, .pos = pos, .doc_start = doc};
    lt_step_result res;
    logits = malloc((size_t)T * V * sizeof *logits);
    ref = malloc((size_t)T * V * sizeof *ref);
    LT_CHECK_OK(lt_batch_fill_sequence(T, tokens, NULL, &len, 1, targets, pos, doc, &err), &err);
    LT_CHECK_OK(lt_model_plan(m, 1, T, &err), &err);
    LT_CHECK_OK(lt_model_step(m, &b, 0, 1.0, &res, &err), &err);
    LT_CHECK_OK(lt_model_get_logits(m, logits, &err), &err);
    double scale = 0;
    for (size_t i = 0; i < (size_t)T * V; i++) scale = fmax(scale, fabs(logits[i]));
    printf("%-13s max |logit| %.3f; error / max |logit|:", name, scale);
    for (size_t k = 0; k < sizeof TYPES / sizeof TYPES[0]; k++) {
        char key[256];
        snprintf(key, sizeof key, "%s.%s", name, TYPES[k].type);
        const lt_st_tensor *t = lt_st_find(fx, key);
        LT_CHECK(t && t->ndim == 2 && t->shape[0] == T && t->shape[1] == V, "fixture %s: (%d, %d) logits", key, T, V);
        if (!t || t->ndim != 2 || t->shape[0] != T || t->shape[1] != V) continue;
        LT_CHECK_OK(lt_st_to_f32(t, ref, (size_t)T * V, &err), &err);
        double worst = 0;
        for (size_t i = 0; i < (size_t)T * V; i++) worst = fmax(worst, fabs((double)logits[i] - ref[i]));
        double rel = worst / fmax(scale, 1e-30);
        double tol = !strcmp(TYPES[k].type, "f32") && lt_model_config(m)->mlp_act == LT_ACT_GELU_TANH ? GEGLU_F32_TOL : TYPES[k].tol;
        printf(" %s %.2e", TYPES[k].type, rel);
        LT_CHECK(rel <= tol, "%s: llama.cpp's logits from the %s GGUF differ from luxtrain's by %.3e "
                             "(relative %.2e > %.0e)",
                 name, TYPES[k].type, worst, rel, tol);
    }
    printf("\n");
done:
    free(tokens);
    free(targets);
    free(pos);
    free(doc);
    free(logits);
    free(ref);
    lt_model_free(m);
    if (be) be->destroy(be);
}

int main(void) {
    char path[4096], line[1024];
    snprintf(path, sizeof path, "%s", lt_src_path("tests/fixtures/gguf/llama_cpp_logits.safetensors"));
    lt_err err = {{0}};
    lt_st_file *fx = NULL;
    LT_CHECK_OK(lt_st_open(path, &fx, &err), &err);
    FILE *f = fopen(lt_src_path("tests/fixtures/gguf/models.txt"), "r");
    LT_CHECK(f != NULL, "tests/fixtures/gguf/models.txt");
    int n = 0;
    while (fx && f && fgets(line, sizeof line, f)) {
        char name[128], mdir[512], tdir[512], adir[512];
        int k = line[0] == '#' ? 0 : sscanf(line, "%127s %511s %511s %511s", name, mdir, tdir, adir);
        if (k < 3) continue;
        run(name, mdir, k == 4 ? adir : NULL, fx);
        n++;
    }
    LT_CHECK(n >= 10, "models.txt lists %d models", n);
    if (f) fclose(f);
    lt_st_close(fx);
    return lt_test_finish("test_gguf_logits");
}
