/* lt_eval_adapter.c -- merge a PEFT LoRA adapter into loaded weights for
 * evaluation (see lt_eval_adapter.h). */
#define _POSIX_C_SOURCE 200809L
#include "lt_eval_adapter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_export.h"
#include "lt_lora.h"
#include "lt_trainer.h"

const char *const lt_eval_quantize_names[] = {"none", "nf4", NULL};

lt_status lt_eval_load_model(const char *model_dir, const char *adapter, const char *quantize, lt_backend *be,
                             lt_model **out, lt_err *err) {
    *out = NULL;
    int nf4 = quantize && !strcmp(quantize, "nf4");
    if (quantize && !nf4 && strcmp(quantize, "none"))
        return lt_fail(err, LT_ERR_INVALID, "--quantize expects none or nf4, got '%s'", quantize);
    lt_model *m = NULL;
    lt_status st = lt_model_load(model_dir, be, &m, err);
    if (!st && adapter && !nf4) st = lt_eval_merge_adapter(m, adapter, err);
    if (!st && adapter && nf4) {
        lt_peft_config pc; /* the adapter's A and B as LoRA layers, its embeddings in the tables */
        st = lt_trainer_load_adapter(m, adapter, &pc, err);
    }
    if (!st && nf4 && (st = lt_model_quantize_nf4(m, err))) lt_wrap(err, st, "--quantize nf4");
    if (st) {
        lt_model_free(m);
        return st;
    }
    *out = m;
    return LT_OK;
}

lt_status lt_eval_merge_adapter(lt_model *m, const char *dir, lt_err *err) {
    /* the same reader as `luxtrain train --adapter`: it refuses what a plain
     * merge cannot reproduce (DoRA, lora_bias, bias, patterns, ...) */
    lt_peft_adapter *a = NULL;
    lt_status st = lt_peft_load(dir, &a, err);
    if (st != LT_OK) return st;
    const lt_config *cfg = lt_model_config(m);
    if ((st = lt_peft_check(a, cfg, err)) != LT_OK) {
        lt_peft_free(a);
        return lt_wrap(err, st, "%s", dir);
    }
    lt_backend *be = lt_model_backend(m);
    const int rank = a->cfg.r;
    const double scale = lt_lora_scale(a->cfg.alpha, rank, a->cfg.rslora);
    float *W = NULL;
    size_t wcap = 0;
    for (size_t i = 0; i < a->n && st == LT_OK; i++) {
        const lt_peft_tensor *t = &a->t[i];
        const int in = t->in, out = t->out; /* checked against the model by lt_peft_check */
        char base[256];
        snprintf(base, sizeof base, "model.layers.%d.%s.%s.weight", t->layer, lt_lora_target_block(t->target),
                 lt_lora_target_hf(t->target));
        lt_param *p = lt_model_find_param(m, base);
        if (!p || p->numel != (size_t)in * (size_t)out) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: the model has no weight '%s' of %d x %d", dir, base, out, in);
            break;
        }
        if (p->numel > wcap) {
            float *nw = realloc(W, p->numel * sizeof *W);
            if (!nw) {
                st = lt_fail(err, LT_ERR_NOMEM, "adapter: out of memory for '%s'", base);
                break;
            }
            W = nw;
            wcap = p->numel;
        }
        if ((st = be->download_f32(be, W, p->data, be->param_dtype, p->numel, err)) != LT_OK) break;
        // W (out, in) += scale * B (out, r) @ A (r, in)
        for (int o = 0; o < out; o++) {
            float *wr = W + (size_t)o * (size_t)in;
            for (int k = 0; k < rank; k++) {
                float b = (float)(scale * t->B[(size_t)o * (size_t)rank + (size_t)k]);
                const float *ar = t->A + (size_t)k * (size_t)in;
                for (int j = 0; j < in; j++) wr[j] += b * ar[j];
            }
        }
        st = be->upload_f32(be, p->data, be->param_dtype, W, p->numel, err);
    }
    if (st == LT_OK) st = be->sync(be, err);
    free(W);
    if (st == LT_OK) st = lt_model_apply_peft_embed(m, &a->emb, err);
    lt_peft_free(a);
    return st;
}

lt_status lt_model_apply_peft_embed(lt_model *m, const lt_peft_embed *e, lt_err *err) {
    if (!e || !e->mode) return LT_OK;
    const lt_config *c = lt_model_config(m);
    lt_backend *be = lt_model_backend(m);
    lt_param *emb = lt_model_find_param(m, "model.embed_tokens.weight");
    lt_param *head = c->tie_word_embeddings ? NULL : lt_model_find_param(m, "lm_head.weight");
    size_t n = (size_t)c->vocab_size * (size_t)c->hidden_size;
    float *E = malloc(n * sizeof *E), *H = head ? malloc(n * sizeof *H) : NULL;
    lt_status st = LT_OK;
    if (!emb || !E || (head && !H)) st = lt_fail(err, LT_ERR_NOMEM, "adapter: out of memory for the embeddings");
    if (!st) st = lt_model_param_load(m, emb, err); /* a deferred load (ZeRO-3): these two whole, now */
    if (!st && head) st = lt_model_param_load(m, head, err);
    if (!st) st = be->download_f32(be, E, emb->data, be->param_dtype, n, err);
    if (!st && H) st = be->download_f32(be, H, head->data, be->param_dtype, n, err);
    if (!st) st = be->sync(be, err);
    if (!st) st = lt_peft_embed_apply(e, E, H, c->vocab_size, c->hidden_size, err);
    if (!st) st = be->upload_f32(be, emb->data, be->param_dtype, E, n, err);
    if (!st && H) st = be->upload_f32(be, head->data, be->param_dtype, H, n, err);
    if (!st) st = be->sync(be, err);
    free(E);
    free(H);
    return st;
}
