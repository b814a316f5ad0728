/*
 * lt_cmd_export.c -- `luxtrain export RUN_DIR/checkpoints/step-N --out DIR`:
 * a training checkpoint (lt_ckpt.h) into what the run's final/ holds had it
 * ended at that step: a Hugging Face folder (full fine-tuning; each tensor in
 * the base model's dtype, config.json and the tokenizer files copied from
 * it) or a PEFT LoRA adapter folder (adapter_config.json as the run writes
 * it, adapter_model.safetensors). Offline, one process, no backend, no
 * collective.
 *
 * What it reads: the checkpoint (weights.safetensors, or a sharded
 * checkpoint's index.json and weights-rank-R-of-W.safetensors; state.json), the run's
 * resolved options RUN_DIR/config.json (RUN_DIR = the folder above
 * checkpoints/; its options hash must equal the checkpoint's, so the options
 * are those the checkpoint was trained with), and the base model folder it
 * names (a relative path is taken from here, else from the folder train ran
 * in, inferred from RUN_DIR and the recorded --out; --model DIR when it has
 * moved): config.json, tokenizer files and the
 * tensors' dtypes and shapes (full), the layer shapes (LoRA); a base model
 * that no longer fits the checkpoint is refused by tensor name. A LoRA run
 * that continued an --adapter takes r, alpha, targets and rsLoRA from that
 * adapter's adapter_config.json, as the run did.
 *
 * Memory: the checkpoint is memory-mapped and read one tensor at a time
 * (lt_ckpt_read: a sharded checkpoint's tensor from the slices of every rank
 * that hold it); the pages read are dropped (madvise) at once, so the peak is
 * one tensor in f32 plus its 16-bit form, not the model (LoRA: the adapter's
 * matrices, small, are read whole). The peak resident size is printed.
 *
 * The folder is written as DIR.tmp-<pid>/ and renamed to DIR; an existing
 * non-empty DIR is refused unless --overwrite (then replaced only once the new
 * folder is complete).
 *
 * `luxtrain export --gguf OUT.gguf --model DIR [--adapter A] [--type T]`: a
 * Hugging Face folder (with a PEFT adapter merged in) as one GGUF file for
 * llama.cpp (train/lt_gguf.h); `luxtrain export CHECKPOINT --gguf OUT.gguf`:
 * the checkpoint's weights (full) or adapter (LoRA) on its base model, found
 * as above.
 */
#define _DEFAULT_SOURCE /* realpath */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt_ckpt.h"
#include "lt_cli.h"
#include "lt_export.h"
#include "lt_fs.h"
#include "lt_gguf.h"
#include "lt_json.h"
#include "lt_lora.h"
#include "lt_model_spec.h"
#include "lt_safetensors.h"
#include "lt_train_opts.h"

typedef struct {
    char **ckpt, *out, *model, *gguf, *adapter, *type;
    int n_ckpt, overwrite, help;
} export_opts;

#define F(x) offsetof(export_opts, x)
static const char *const GGUF_TYPES[] = {"f16", "bf16", "q8_0", "f32", NULL};
static const lt_optdef OPTS[] = {
    {.name = "out", .k = LT_OPT_STR, .off = F(out), .meta = "DIR",
     .help = "write what RUN_DIR/final/ would hold after step N: a Hugging Face folder (full fine-tuning) or a "
             "PEFT adapter folder (LoRA)"},
    {.name = "model", .k = LT_OPT_STR, .off = F(model), .meta = "DIR",
     .help = "the base model folder (a checkpoint: when it is no longer where RUN_DIR/config.json says)"},
    {.name = "overwrite", .k = LT_OPT_FLAG, .off = F(overwrite),
     .help = "replace DIR (or OUT.gguf) if it exists and is not empty"},
    {.name = "GGUF (docs/export.md)", .k = LT_OPT_SECTION},
    {.name = "gguf", .k = LT_OPT_STR, .off = F(gguf), .meta = "OUT.gguf",
     .help = "one GGUF v3 file for llama.cpp: --model DIR with --adapter A merged in (or the checkpoint's weights / "
             "adapter on its base model), tokenizer and chat template in the metadata"},
    {.name = "adapter", .k = LT_OPT_STR, .off = F(adapter), .meta = "A", .help = "a PEFT adapter to merge (--gguf)"},
    {.name = "type", .k = LT_OPT_CHOICE, .off = F(type), .meta = "T", .choices = GGUF_TYPES,
     .help = "weight type (--gguf; default: bf16 for a bf16 model, else f16)"},
};
static const lt_optset SET = {
    .cmd = "export",
    .usage = "usage: luxtrain export CHECKPOINT --out DIR [--model DIR] [--overwrite]\n"
             "       luxtrain export --gguf OUT.gguf --model DIR [--adapter A] [--type T] [--overwrite]\n"
             "       luxtrain export CHECKPOINT --gguf OUT.gguf [--model DIR] [--type T] [--overwrite]\n"
             "CHECKPOINT is RUN_DIR/checkpoints/step-N (a complete checkpoint of a luxtrain train run).\n"
             "Offline, one process, no GPU; one tensor in memory at a time.\n",
    .defs = OPTS,
    .n = sizeof OPTS / sizeof OPTS[0],
    .off_help = F(help),
    .off_pos = F(ckpt),
    .off_npos = F(n_ckpt),
    .pos_max = 1,
    .pos_meta = "CHECKPOINT",
};
#undef F

/* RUN_DIR/config.json of the checkpoint's run, checked against its options hash */
static lt_status load_run_opts(const lt_ckpt *c, lt_train_opts *o, char *run_dir, size_t cap, lt_err *err) {
    char parent[4096], path[4096], absdir[PATH_MAX], *text = NULL;
    for (int pass = 0; pass < 2; pass++) { /* as given, then resolved ("step-N" given inside checkpoints/) */
        const char *d = c->dir;
        if (pass && !(d = realpath(c->dir, absdir))) break;
        lt_fs_dirname(d, parent, sizeof parent);
        lt_fs_dirname(parent, run_dir, cap);
        if (!lt_path_join(path, sizeof path, run_dir, "config.json"))
            return lt_fail(err, LT_ERR_INVALID, "path too long");
        if (lt_file_exists(path)) break;
    }
    if (!lt_file_exists(path))
        return lt_fail(err, LT_ERR_IO,
                       "%s: the run's options are missing (export reads RUN_DIR/config.json next to "
                       "RUN_DIR/checkpoints/; give the checkpoint inside its run folder)",
                       path);
    lt_status st = lt_read_file(path, &text, NULL, err);
    if (st) return st;
    st = lt_train_opts_apply_json(o, text, path, err);
    free(text);
    if (st) return st;
    /* the hash as the run computed it: micro-batches per step over all ranks */
    long world = 1;
    int64_t mb = 0; /* micro-batches per step over all ranks, as the checkpoint recorded it */
    if (c->state.extra_json) {
        cJSON *x = cJSON_Parse(c->state.extra_json);
        int64_t w = 0;
        if (lt_json_int64(cJSON_GetObjectItemCaseSensitive(x, "world"), &w) && w >= 1) world = (long)w;
        if (!lt_json_int64(cJSON_GetObjectItemCaseSensitive(x, "micro_batches_per_step"), &mb) || mb < 1) mb = 0;
        cJSON_Delete(x);
    }
    lt_train_opts h = *o;
    h.grad_accum = o->grad_accum * world;
    char hash[17];
    lt_train_opts_hash(&h, hash);
    /* config.json holds the per-rank --grad-accum of the run's latest launch, which may have
     * resumed at another number of ranks: the same global batch is the same run */
    if (strcmp(hash, c->state.options_hash) && mb > 0 && mb % o->grad_accum == 0) {
        h.grad_accum = (long)mb;
        lt_train_opts_hash(&h, hash);
    }
    if (strcmp(hash, c->state.options_hash))
        return lt_fail(err, LT_ERR_INVALID,
                       "%s: these options (hash %s) are not those checkpoint %s was trained with (hash %s): the run "
                       "folder's config.json was replaced or the checkpoint belongs to another run",
                       path, hash, c->dir, c->state.options_hash);
    if (strcmp(c->state.mode, lt_train_opts_lora(o) ? "lora" : "full"))
        return lt_fail(err, LT_ERR_FORMAT, "%s: is a '%s' checkpoint, but %s describes a %s run", c->dir, c->state.mode,
                       path, lt_train_opts_lora(o) ? "LoRA" : "full fine-tuning");
    return LT_OK;
}

/* ---- full fine-tuning: a Hugging Face folder ---- */

typedef struct full_src {
    const lt_ckpt *c;
    const lt_st_tensor **t; /* the checkpoint's tensors, in the order written */
    size_t n;
} full_src;

/* tensor i, read from the checkpoint's file (or the slices of a sharded one) */
static lt_status fill_full(void *ctx, size_t i, float *dst, lt_err *err) {
    const full_src *fs = ctx;
    return lt_ckpt_read(fs->c, LT_CKPT_WEIGHTS, fs->t[i]->name, 0, fs->t[i]->numel, dst, err);
}

static lt_status export_full(const lt_ckpt *c, const char *model, const char *out, lt_export_progress_fn progress,
                             void *pctx, lt_err *err) {
    lt_config cfg;
    lt_st_model *src = NULL;
    lt_param_spec *specs = NULL;
    size_t nspec = 0, n = lt_ckpt_count(c, LT_CKPT_WEIGHTS);
    lt_export_tensor *ts = calloc(n + 1, sizeof *ts);
    full_src fs = {c, calloc(n + 1, sizeof *fs.t), n};
    lt_status st = (!ts || !fs.t) ? lt_fail(err, LT_ERR_NOMEM, "export: out of memory") : LT_OK;
    if (!st && ((st = lt_config_load(model, &cfg, err)) || (st = lt_model_open_weights(model, &cfg, &src, NULL, err)) ||
                (st = lt_model_param_specs(&cfg, &specs, &nspec, err))))
        lt_wrap(err, st, "base model %s", model);
    /* the base model is consistent (its config.json against its tensors), and every
     * parameter its config implies is in the checkpoint with that shape */
    if (!st && (st = lt_model_check_tensors(src, specs, nspec, cfg.tie_word_embeddings, err)))
        lt_wrap(err, st, "base model %s (changed since the checkpoint was trained?)", model);
    size_t matched = 0;
    for (size_t k = 0; k < nspec && !st; k++) {
        const lt_st_tensor *t = lt_ckpt_find(c, LT_CKPT_WEIGHTS, specs[k].name);
        if (!t && !lt_st_model_find(src, specs[k].name)) continue; /* not trained (tied lm_head) */
        if (!t || t->ndim != specs[k].ndim || t->shape[0] != specs[k].shape[0] ||
            (t->ndim > 1 && t->shape[1] != specs[k].shape[1]))
            st = lt_fail(err, LT_ERR_FORMAT,
                         "%s: weights.safetensors %s tensor '%s' as base model %s's config.json implies: the base "
                         "model changed",
                         c->dir, t ? "does not shape" : "has no", specs[k].name, model);
        matched++;
    }
    if (!st && matched != n)
        st = lt_fail(err, LT_ERR_FORMAT,
                     "%s: weights.safetensors holds %zu tensors, base model %s's config.json implies %zu: the base "
                     "model changed",
                     c->dir, n, model, matched);
    for (size_t i = 0; i < n && !st; i++) {
        const lt_st_tensor *t = lt_ckpt_get(c, LT_CKPT_WEIGHTS, i);
        const lt_st_tensor *b = lt_st_model_find(src, t->name);
        if (!b) {
            st = lt_fail(err, LT_ERR_FORMAT,
                         "base model %s has no tensor '%s', which the checkpoint holds: the base model changed "
                         "(or --model names another model)",
                         model, t->name);
            break;
        }
        if (b->ndim != t->ndim || memcmp(b->shape, t->shape, (size_t)t->ndim * sizeof *t->shape)) {
            char s1[64], s2[64];
            lt_st_shape_str(s1, sizeof s1, t->ndim, t->shape);
            lt_st_shape_str(s2, sizeof s2, b->ndim, b->shape);
            st = lt_fail(err, LT_ERR_FORMAT,
                         "tensor '%s' is %s in the checkpoint but %s in base model %s: the base model changed", t->name,
                         s1, s2, model);
            break;
        }
        if (t->dtype != LT_F32) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' is %s (checkpoints hold F32)", c->dir, t->name,
                         lt_dtype_name(t->dtype));
            break;
        }
        fs.t[i] = t;
        ts[i].name = t->name;
        ts[i].ndim = t->ndim;
        memcpy(ts[i].shape, t->shape, sizeof ts[i].shape);
        ts[i].dtype = b->dtype; /* the run exports in the base model's dtype */
    }
    if (!st) st = lt_export_hf_stream(out, model, ts, n, 0, fill_full, &fs, progress, pctx, err);
    free(specs);
    free(fs.t);
    free(ts);
    if (src) lt_st_close_model(src);
    return st;
}

/* ---- LoRA: a PEFT adapter folder ---- */

/* the trained embeddings of a --train-embeddings run, as the run exports them */
static lt_status checkpoint_embed(const lt_ckpt *c, const lt_train_opts *o, const char *model, const lt_config *cfg,
                                  const lt_st_tensor *const tab[2], lt_peft_embed *e, lt_err *err) {
    lt_status st = LT_OK;
    int all = o->train_embeddings && !strcmp(o->train_embeddings, "all");
    size_t n = 0;
    if (!tab[0] || (!cfg->tie_word_embeddings && !tab[1]) || (cfg->tie_word_embeddings && tab[1]))
        return lt_fail(err, LT_ERR_FORMAT, "%s: embed_tokens / lm_head do not match the model's tying", c->dir);
    if (o->adapter && !all && (!o->train_embeddings || strcmp(o->train_embeddings, "new"))) {
        /* a run that continued an adapter with trained embeddings: its mode and rows */
        lt_peft_adapter *ad = NULL;
        if ((st = lt_peft_load(o->adapter, &ad, err))) return lt_wrap(err, st, "the adapter the run continued");
        all = ad->emb.mode == LT_TRAIN_EMB_ALL;
        if (ad->emb.mode == LT_TRAIN_EMB_NEW) {
            e->ids = ad->emb.ids;
            n = (size_t)ad->emb.rows;
            ad->emb.ids = NULL;
        }
        int none = ad->emb.mode == LT_TRAIN_EMB_NONE;
        lt_peft_free(ad);
        if (none) return lt_fail(err, LT_ERR_FORMAT, "%s: the checkpoint holds embeddings, the run's adapter none", c->dir);
    } else if (!all && (!o->train_embeddings || strcmp(o->train_embeddings, "new")))
        return lt_fail(err, LT_ERR_FORMAT, "%s: the checkpoint holds embeddings but the run has no --train-embeddings",
                       c->dir);
    else if (!all && (st = lt_vocab_record_ids(model, &e->ids, &n, err)))
        return st;
    const int64_t V = cfg->vocab_size, C = cfg->hidden_size;
    e->mode = all ? LT_TRAIN_EMB_ALL : LT_TRAIN_EMB_NEW;
    e->tie = cfg->tie_word_embeddings;
    e->rows = all ? V : (int64_t)n;
    e->cols = C;
    float *full = malloc((size_t)(V * C) * sizeof *full);
    if (!full) return lt_fail(err, LT_ERR_NOMEM, "export: out of memory");
    for (int k = 0; k < 2 && !st; k++) {
        if (!tab[k]) continue;
        if (tab[k]->ndim != 2 || tab[k]->shape[0] != V || tab[k]->shape[1] != C) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' is not [%lld, %lld]", c->dir, tab[k]->name,
                         (long long)V, (long long)C);
            break;
        }
        float *dst = malloc((size_t)(e->rows * C) * sizeof *dst);
        if (!dst) {
            st = lt_fail(err, LT_ERR_NOMEM, "export: out of memory");
            break;
        }
        *(k ? &e->head : &e->embed) = dst;
        if ((st = lt_ckpt_read(c, LT_CKPT_WEIGHTS, tab[k]->name, 0, (size_t)(V * C), full, err))) break;
        for (int64_t i = 0; i < e->rows; i++) {
            int64_t r = all ? i : e->ids[i];
            if (r >= V) {
                st = lt_fail(err, LT_ERR_RANGE, "%s: trained row %lld of %lld", model, (long long)r, (long long)V);
                break;
            }
            memcpy(dst + i * C, full + r * C, (size_t)C * sizeof *dst);
        }
    }
    free(full);
    return st;
}

/* an adapter ckpt_adapter made: its matrices and list */
static void adapter_free(lt_peft_adapter *a) {
    for (size_t i = 0; a->t && i < a->n; i++) {
        free((void *)a->t[i].A);
        free((void *)a->t[i].B);
    }
    free(a->t);
    a->t = NULL;
}

/* the checkpoint's LoRA tensors as an adapter (a->t and its matrices owned: adapter_free); tab[0..1]
 * receive the trained embed_tokens / lm_head of a --train-embeddings run (NULL when none) */
static lt_status ckpt_adapter(const lt_ckpt *c, const lt_train_opts *o, lt_peft_adapter *out,
                              const lt_st_tensor *tab[2], lt_err *err) {
    lt_peft_adapter a = {0};
    lt_status st = LT_OK;
    if (o->adapter) { /* the run continued an adapter: its configuration, the run's dropout */
        if ((st = lt_peft_load_config(o->adapter, &a.cfg, err)))
            return lt_wrap(err, st, "the adapter the run continued (RUN_DIR/config.json \"adapter\")");
        a.cfg.dropout = o->lora_dropout;
    } else {
        a.cfg.r = (int)o->lora_rank;
        a.cfg.alpha = o->lora_alpha;
        a.cfg.dropout = o->lora_dropout;
        a.cfg.targets = o->lora_targets;
        a.cfg.rslora = o->rslora;
    }
    snprintf(a.cfg.base_model, sizeof a.cfg.base_model, "%s", o->model); /* as the run recorded it */
    size_t nt = lt_ckpt_count(c, LT_CKPT_WEIGHTS);
    a.t = calloc(nt + 1, sizeof *a.t);
    if (!a.t) return lt_fail(err, LT_ERR_NOMEM, "export: out of memory");
    tab[0] = tab[1] = NULL;
    for (size_t i = 0; i < nt && !st; i++) {
        const lt_st_tensor *t = lt_ckpt_get(c, LT_CKPT_WEIGHTS, i);
        int layer, target, is_B;
        if (!strcmp(t->name, "model.embed_tokens.weight") || !strcmp(t->name, "lm_head.weight")) {
            tab[t->name[0] == 'l'] = t;
            continue;
        }
        if ((st = lt_lora_parse_peft_name(t->name, &layer, &target, &is_B, err))) {
            lt_wrap(err, st, "%s/weights.safetensors", c->dir);
            break;
        }
        if (t->dtype != LT_F32 || t->ndim != 2 || t->shape[is_B ? 1 : 0] != a.cfg.r) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' is not an F32 %s matrix with r = %d", c->dir, t->name,
                         is_B ? "(out, r)" : "(r, in)", a.cfg.r);
            break;
        }
        lt_peft_tensor *p = (lt_peft_tensor *)lt_peft_find(&a, layer, target);
        if (!p) {
            p = &a.t[a.n++];
            p->layer = layer;
            p->target = target;
        }
        float *m = malloc(t->numel * sizeof *m); /* LoRA matrices are small: each is read whole */
        if (!m) {
            st = lt_fail(err, LT_ERR_NOMEM, "export: out of memory");
            break;
        }
        if (is_B) {
            free((void *)p->B);
            p->B = m;
            p->out = (int)t->shape[0];
        } else {
            free((void *)p->A);
            p->A = m;
            p->in = (int)t->shape[1];
        }
        st = lt_ckpt_read(c, LT_CKPT_WEIGHTS, t->name, 0, t->numel, m, err);
    }
    for (size_t i = 0; i < a.n && !st; i++)
        if (!a.t[i].A || !a.t[i].B)
            st = lt_fail(err, LT_ERR_FORMAT, "%s: layer %d %s has only its lora_%s matrix", c->dir, a.t[i].layer,
                         lt_lora_target_hf(a.t[i].target), a.t[i].A ? "A" : "B");
    if (st) adapter_free(&a);
    else *out = a;
    return st;
}

static lt_status export_lora(const lt_ckpt *c, const lt_train_opts *o, const char *model, const char *out,
                             lt_export_progress_fn progress, void *pctx, lt_err *err) {
    lt_peft_adapter a = {0};
    lt_config cfg;
    lt_status st;
    const lt_st_tensor *tab[2];
    if ((st = lt_config_load(model, &cfg, err)))
        return lt_wrap(err, st, "base model %s (adapter_config.json names it; its shapes check the adapter)", model);
    if ((st = ckpt_adapter(c, o, &a, tab, err))) return st;
    a.cfg.targets = lt_lora_targets_for(&cfg, a.cfg.targets); /* fused modules (phi3): qkv, gate_up */
    a.cfg.wrap = cfg.wrap; /* the language model inside a multimodal class: PEFT's names for it */
    if ((st = lt_peft_check(&a, &cfg, err)))
        lt_wrap(err, st, "checkpoint %s against base model %s (the base model changed?)", c->dir, model);
    if (!st && (tab[0] || tab[1])) st = checkpoint_embed(c, o, model, &cfg, tab, &a.emb, err);
    if (!st) st = lt_peft_export_embed(out, &a.cfg, a.t, a.n, a.emb.mode ? &a.emb : NULL, progress, pctx, err);
    adapter_free(&a);
    free(a.emb.ids);
    free(a.emb.embed);
    free(a.emb.head);
    return st;
}

lt_status lt_export_checkpoint_folder(const lt_ckpt *c, const lt_train_opts *o, const char *model, const char *out,
                                      lt_export_progress_fn progress, void *pctx, lt_err *err) {
    return lt_train_opts_lora(o) ? export_lora(c, o, model, out, progress, pctx, err)
                                 : export_full(c, model, out, progress, pctx, err);
}

/* a checkpoint -> one GGUF file: the base model with the checkpoint's weights (full) or its adapter merged (LoRA) */
static lt_status export_ckpt_gguf(const lt_ckpt *c, const lt_train_opts *o, const char *model, const lt_gguf_opts *g0,
                                  lt_err *err) {
    lt_gguf_opts g = *g0;
    lt_peft_adapter a = {0};
    lt_status st;
    g.model_dir = model;
    if (lt_train_opts_lora(o)) {
        const lt_st_tensor *tab[2];
        lt_config cfg;
        if ((st = lt_config_load(model, &cfg, err))) return lt_wrap(err, st, "base model %s", model);
        if ((st = ckpt_adapter(c, o, &a, tab, err))) return st;
        a.cfg.targets = lt_lora_targets_for(&cfg, a.cfg.targets); /* fused modules (phi3): qkv, gate_up */
        a.cfg.wrap = cfg.wrap; /* the language model inside a multimodal class (lt_peft_check) */
        /* trained embeddings (--train-embeddings): the rows the run's adapter would hold, merged in */
        if ((tab[0] || tab[1]) && (st = checkpoint_embed(c, o, model, &cfg, tab, &a.emb, err))) goto done;
        g.adapter = &a;
    } else if (!(g.weights = c->weights))
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "checkpoint %s is sharded (written by %d ranks): export the Hugging Face folder (luxtrain "
                       "export CHECKPOINT --out DIR) and that folder with --gguf OUT.gguf --model DIR",
                       c->dir, c->world);
    st = lt_gguf_export(&g, err);
    if (st) lt_wrap(err, st, "checkpoint %s", c->dir);
done:
    adapter_free(&a);
    free(a.emb.ids);
    free(a.emb.embed);
    free(a.emb.head);
    return st;
}

/* A relative base model path is relative to where `train` ran. When it is not
 * found from here, that folder is inferred from the run folder: its real path
 * minus the relative --out the run recorded (RUN/config.json "out"). */
static const char *find_model(const lt_train_opts *o, const char *run_dir, char *buf, size_t cap) {
    char abs[PATH_MAX], out[4096];
    if (!o->model || o->model[0] == '/' || lt_is_dir(o->model) || !o->out || o->out[0] == '/') return o->model;
    const char *rel = o->out;
    while (rel[0] == '.' && rel[1] == '/') rel += 2;
    snprintf(out, sizeof out, "%s", rel);
    size_t n = strlen(out), a;
    while (n > 1 && out[n - 1] == '/') out[--n] = 0;
    if (!n || !realpath(run_dir, abs) || (a = strlen(abs)) <= n || abs[a - n - 1] != '/' || strcmp(abs + a - n, out))
        return o->model;
    abs[a - n - 1] = 0;
    if (snprintf(buf, cap, "%s/%s", abs, o->model) >= (int)cap || !lt_is_dir(buf)) return o->model;
    return buf;
}

static lt_status export_checkpoint(const char *ckpt, const char *model_arg, const char *out, const lt_gguf_opts *gguf,
                                   lt_err *err) {
    lt_ckpt *c = NULL;
    lt_train_opts o;
    char run_dir[4096];
    lt_status st = lt_ckpt_check(ckpt, err);
    if (st) return st;
    if ((st = lt_ckpt_open(ckpt, &c, err))) return st;
    if ((st = lt_train_opts_defaults(&o, err))) {
        lt_ckpt_close(c);
        return st;
    }
    if ((st = load_run_opts(c, &o, run_dir, sizeof run_dir, err))) goto done;
    char found[4096];
    const char *model = model_arg ? model_arg : find_model(&o, run_dir, found, sizeof found);
    char cfgp[4096];
    if (!model || !lt_is_dir(model) || !lt_path_join(cfgp, sizeof cfgp, model, "config.json") ||
        !lt_file_exists(cfgp)) {
        st = lt_fail(err, LT_ERR_IO,
                     "base model folder %s (%s) is missing or has no config.json; export needs it (%s); give "
                     "--model DIR if it has moved",
                     model ? model : "(none)", model_arg ? "--model" : "named in RUN_DIR/config.json",
                     lt_train_opts_lora(&o) ? "the adapter's shapes and base_model_name_or_path"
                                            : "config.json, tokenizer files and each tensor's dtype");
        goto done;
    }
    long rss0 = lt_peak_rss_kib();
    st = gguf ? export_ckpt_gguf(c, &o, model, gguf, err) : lt_export_checkpoint_folder(c, &o, model, out, NULL, NULL, err);
    if (!st) {
        size_t total = 0, largest = 0;
        for (size_t i = 0; i < lt_ckpt_count(c, LT_CKPT_WEIGHTS); i++) {
            size_t b = lt_ckpt_get(c, LT_CKPT_WEIGHTS, i)->numel * sizeof(float);
            total += b;
            if (b > largest) largest = b;
        }
        fprintf(stderr,
                "export: peak resident memory %ld KiB (%ld KiB before the tensors were read, +%ld KiB); the "
                "checkpoint's weights: %zu KiB in f32, the largest tensor %zu KiB%s\n",
                lt_peak_rss_kib(), rss0, lt_peak_rss_kib() - rss0, total / 1024, largest / 1024,
                c->world ? " (sharded checkpoint)" : "");
    }
done:
    lt_train_opts_free(&o);
    lt_ckpt_close(c);
    return st;
}

/* export --gguf: from a model folder (--model [--adapter]) or a checkpoint */
static int export_gguf(const char *gguf, const char *ckpt, const char *out, const char *model, const char *adapter,
                       const char *type, int force) {
    lt_err err = {{0}};
    lt_gguf_type t = LT_GGUF_F16;
    if (out) {
        fprintf(stderr, "export: --gguf writes one file; --out (a folder) is not used with it\n");
        return 2;
    }
    if (ckpt && adapter) {
        fprintf(stderr, "export: --adapter is for --model; a LoRA checkpoint holds its adapter\n");
        return 2;
    }
    if (!ckpt && !model) {
        fprintf(stderr, "export: --gguf needs --model DIR or a checkpoint\n");
        return 2;
    }
    if (type && lt_gguf_parse_type(type, &t, &err)) {
        fprintf(stderr, "export: --type: %s\n", err.msg);
        return 2;
    }
    lt_gguf_opts o = {.model_dir = model, .adapter_dir = adapter, .out_path = gguf, .type = type ? (int)t : -1,
                      .overwrite = force};
    if (ckpt ? export_checkpoint(ckpt, model, NULL, &o, &err) : lt_gguf_export(&o, &err)) {
        fprintf(stderr, "export: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "export: wrote %s\n", gguf);
    return 0;
}

static int export_run(void *arg) {
    const export_opts *o = arg;
    const char *ckpt = o->n_ckpt ? o->ckpt[0] : NULL, *out = o->out, *model = o->model, *gguf = o->gguf,
               *adapter = o->adapter, *type = o->type;
    int force = o->overwrite;
    if (gguf) return export_gguf(gguf, ckpt, out, model, adapter, type, force);
    if (adapter || type) {
        fprintf(stderr, "export: %s is an option of export --gguf\n", adapter ? "--adapter" : "--type");
        return 2;
    }
    if (!ckpt || !out) {
        fprintf(stderr, "export: a checkpoint folder and --out are required\n(luxtrain export --help lists the options)\n");
        return 2;
    }
    if (lt_file_exists(out) && !lt_is_dir(out)) {
        fprintf(stderr, "export: --out %s exists and is not a folder\n", out);
        return 1;
    }
    if (lt_fs_nonempty_dir(out) && !force) {
        fprintf(stderr, "export: --out %s exists and is not empty; use --overwrite to replace it\n", out);
        return 1;
    }
    lt_err err = {{0}};
    if (export_checkpoint(ckpt, model, out, NULL, &err)) {
        fprintf(stderr, "export: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "export: wrote %s\n", out);
    return 0;
}

int lt_cmd_export(int argc, char **argv) {
    export_opts o = {0};
    return lt_opts_main(&SET, argc, argv, &o, export_run);
}
