/*
 * lt_cmd_merge.c -- `luxtrain merge --model DIR --adapter DIR --out DIR`:
 * fold a PEFT LoRA adapter into its base model and write a Hugging Face
 * folder (lt_export_hf): for every adapted projection
 *   W' = W + scale * B @ A        (f32; W read in f32 from the source dtype)
 * stored in the source tensor's dtype (BF16/F16 rounded to nearest even),
 * every other tensor unchanged; config.json and the tokenizer files copied.
 * Trained embeddings (trainable_token_indices / modules_to_save of
 * embed_tokens, lm_head) replace their rows / tables.
 * This is PEFT's merge_and_unload computed in f32. Works on the host without
 * a backend; holds the whole model in f32 memory.
 *
 * --quantize nf4 (an adapter trained by QLoRA, on the base it saw): every
 * projection `train --quantize nf4` quantizes is replaced by its NF4 round
 * trip (core/lt_nf4.h, bitsandbytes' values), the adapted ones then get the
 * delta:  W' = dequant(nf4(W)) + scale * B @ A  -- the weight PEFT's merge
 * computes on a bitsandbytes 4-bit base (dequantize_bnb_weight + the delta)
 * before it re-quantizes it to 4 bits, which would lose most of the delta
 * (docs/training.md). Written in the source dtype: the full-precision model
 * that computes what the QLoRA run trained and evaluated.
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_cli.h"
#include "lt_export.h"
#include "lt_lora.h"
#include "lt_model_spec.h"
#include "lt_nf4.h"
#include "lt_safetensors.h"

typedef struct merge_opts {
    char *model, *adapter, *out, *quantize;
    int help;
} merge_opts;

static const char *const QUANTIZE[] = {"none", "nf4", NULL};

#define F(x) offsetof(merge_opts, x)
static const lt_optdef OPTS[] = {
    {.name = "model", .k = LT_OPT_STR, .off = F(model), .meta = "DIR", .required = 1, .help = "the base model folder"},
    {.name = "adapter", .k = LT_OPT_STR, .off = F(adapter), .meta = "DIR", .required = 1,
     .help = "the PEFT LoRA adapter folder"},
    {.name = "out", .k = LT_OPT_STR, .off = F(out), .meta = "DIR", .required = 1,
     .help = "the merged model's folder (written whole, or not at all)"},
    {.name = "quantize", .k = LT_OPT_CHOICE, .off = F(quantize), .def = "none", .meta = "Q", .choices = QUANTIZE,
     .help = "nf4: merge into the NF4 round trip of the base (the weights a `--quantize nf4` run trained on), "
             "written in full precision"},
};
static const lt_optset SET = {
    .cmd = "merge",
    .usage = "usage: luxtrain merge --model DIR --adapter DIR --out DIR [--quantize nf4]\n"
             "Writes the model with the LoRA adapter folded into its weights, in the source dtype,\n"
             "as a Hugging Face folder.\n",
    .defs = OPTS,
    .n = sizeof OPTS / sizeof OPTS[0],
    .off_help = F(help),
};
#undef F

/* "model.layers.<l>.<block>.<proj>.weight" -> (layer, target), or 0 */
static int adapted(const char *name, int *layer, int *target) {
    int l, n = 0;
    if (sscanf(name, "model.layers.%d.%n", &l, &n) != 1 || n == 0) return 0;
    for (int t = 0; t < LT_LORA_NTARGETS; t++) {
        char want[96];
        snprintf(want, sizeof want, "%s.%s.weight", lt_lora_target_block(t), lt_lora_target_hf(t));
        if (!strcmp(name + n, want)) {
            *layer = l;
            *target = t;
            return 1;
        }
    }
    return 0;
}

/* w (n) := dequant(nf4(w)), bitsandbytes' round trip */
static lt_status nf4_round_trip(float *w, size_t n, const char *name, lt_err *err) {
    void *q = malloc(lt_nf4_layout_of(n).bytes);
    if (!q) return lt_fail(err, LT_ERR_NOMEM, "merge: out of memory for the NF4 copy of '%s'", name);
    lt_status st = lt_nf4_quantize(w, n, q, err);
    if (!st) lt_nf4_dequantize_f32(q, n, w);
    free(q);
    return st ? lt_wrap(err, st, "merge --quantize nf4: '%s'", name) : LT_OK;
}

static lt_status lt_merge_adapter_folder(const char *model, const char *adapter, const char *out, int nf4,
                                         lt_err *err) {
    lt_config cfg;
    lt_st_model *stm = NULL;
    lt_peft_adapter *a = NULL;
    lt_param_spec *specs = NULL;
    lt_export_tensor *ts = NULL;
    size_t n = 0;
    lt_status st;
    if ((st = lt_config_load(model, &cfg, err)) || (st = lt_st_open_model(model, &stm, err))) goto done;
    if ((st = lt_peft_load(adapter, &a, err))) {
        lt_wrap(err, st, "adapter '%s'", adapter);
        goto done;
    }
    if ((st = lt_peft_check(a, &cfg, err))) {
        lt_wrap(err, st, "adapter '%s' does not fit model '%s'", adapter, model);
        goto done;
    }
    if ((st = lt_model_param_specs(&cfg, &specs, &n, err)) ||
        (st = lt_model_check_tensors(stm, specs, n, cfg.tie_word_embeddings, err)))
        goto done;
    ts = calloc(n, sizeof *ts);
    if (!ts) {
        st = lt_fail(err, LT_ERR_NOMEM, "merge: out of memory");
        goto done;
    }
    float scale = (float)lt_lora_scale(a->cfg.alpha, a->cfg.r, a->cfg.rslora);
    for (size_t i = 0; i < n; i++) {
        const lt_param_spec *sp = &specs[i];
        const lt_st_tensor *t = lt_st_model_find(stm, sp->name);
        size_t numel = (size_t)sp->shape[0] * (size_t)(sp->ndim > 1 ? sp->shape[1] : 1);
        float *w = malloc(numel * sizeof *w);
        if (!w) {
            st = lt_fail(err, LT_ERR_NOMEM, "merge: out of memory for '%s'", sp->name);
            goto done;
        }
        ts[i].name = sp->name;
        ts[i].ndim = sp->ndim;
        ts[i].shape[0] = sp->shape[0];
        ts[i].shape[1] = sp->shape[1];
        ts[i].dtype = t->dtype;
        ts[i].data = w;
        if ((st = lt_st_to_f32(t, w, numel, err))) goto done;
        int layer, target;
        const lt_peft_tensor *pt;
        int proj = adapted(sp->name, &layer, &target);
        if (proj && nf4 && lt_model_nf4_quantizes(&cfg, target) && (st = nf4_round_trip(w, numel, sp->name, err)))
            goto done;
        if (proj && (pt = lt_peft_find(a, layer, target))) {
            // W (out, in) += scale * B (out, r) @ A (r, in)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, pt->out, pt->in, a->cfg.r, scale, pt->B, a->cfg.r,
                        pt->A, pt->in, 1.0f, w, pt->in);
        }
    }
    if (a->emb.mode) { /* trained embeddings replace their rows (PEFT's merge_and_unload) */
        float *E = NULL, *H = NULL;
        for (size_t i = 0; i < n; i++) {
            if (!strcmp(ts[i].name, "model.embed_tokens.weight")) E = (float *)ts[i].data;
            if (!strcmp(ts[i].name, "lm_head.weight")) H = (float *)ts[i].data;
        }
        if ((st = lt_peft_embed_apply(&a->emb, E, H, cfg.vocab_size, cfg.hidden_size, err))) goto done;
    }
    st = lt_export_hf(out, model, ts, n, 0, err);
done:
    if (ts)
        for (size_t i = 0; i < n; i++) free((void *)ts[i].data);
    free(ts);
    free(specs);
    lt_peft_free(a);
    if (stm) lt_st_close_model(stm);
    return st;
}

static int merge_run(void *arg) {
    const merge_opts *o = arg;
    lt_err err = {{0}};
    if (lt_merge_adapter_folder(o->model, o->adapter, o->out, !strcmp(o->quantize, "nf4"), &err)) {
        fprintf(stderr, "merge: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "merge: wrote %s%s\n", o->out,
            strcmp(o->quantize, "nf4") ? "" : " (the adapter merged into the NF4 round trip of the base)");
    return 0;
}

int lt_cmd_merge(int argc, char **argv) {
    merge_opts o = {0};
    return lt_opts_main(&SET, argc, argv, &o, merge_run);
}
