/* lt_export.c -- Hugging Face and PEFT export, PEFT import (see lt_export.h). */
#define _POSIX_C_SOURCE 200809L
#include "lt_export.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt_family.h"
#include "lt_fs.h"
#include "lt_json.h"
#include "lt_lora.h"
#include "lt_model_spec.h"

static const char *const HF_COPY[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                      "generation_config.json"};

static lt_status check_finite(const char *name, const float *x, size_t n, lt_err *err) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return lt_fail(err, LT_ERR_NONFINITE, "export: tensor '%s' holds %s at element %zu of %zu", name,
                           isnan(x[i]) ? "NaN" : "Inf", i, n);
    return LT_OK;
}

static size_t numel_of(int ndim, const int64_t *shape) {
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
    return n;
}

/* "<out_dir>.tmp-<host>-<pid>", fresh */
static lt_status make_tmp(const char *out_dir, char *tmp, size_t cap, lt_err *err) {
    char parent[4096], tag[128];
    size_t n = strlen(out_dir);
    while (n > 1 && out_dir[n - 1] == '/') n--;
    lt_tmp_tag(tag, sizeof tag);
    if (snprintf(tmp, cap, "%.*s.tmp-%s", (int)n, out_dir, tag) >= (int)cap)
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", out_dir);
    lt_fs_dirname(tmp, parent, sizeof parent);
    lt_status st = lt_fs_mkdir_p(parent, err);
    if (st != LT_OK) return st;
    lt_fs_rm_rf(tmp);
    return lt_fs_mkdir_p(tmp, err);
}

/* ---- Hugging Face ---- */

static const char *const META_K[] = {"format"}, *const META_V[] = {"pt"};

/* the caller's progress reports (lt_export_progress_fn; fn NULL: none) */
typedef struct reporter {
    lt_export_progress_fn fn;
    void *ctx;
} reporter;

static lt_status say(const reporter *r, lt_err *err, const char *fmt, ...) {
    if (!r || !r->fn) return LT_OK;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return r->fn(r->ctx, what, err);
}

/* one tensor at a time: filled in f32, checked finite, converted to its dtype */
typedef struct shard_io {
    const lt_export_tensor *ts; /* the shard's first tensor */
    size_t count;               /* the shard's tensors */
    lt_export_fill_fn fill;
    void *ctx;
    size_t first, total; /* index of ts[0] in the caller's list; the list's length */
    const char *file;    /* the shard's file name (progress reports) */
    const reporter *rep;
    float *f32;
    uint16_t *half;
    size_t cap, hcap;
} shard_io;

static lt_status shard_data(void *vctx, size_t k, const void **bytes, lt_err *err) {
    shard_io *io = vctx;
    if (k == io->count) return say(io->rep, err, "syncing %s", io->file); /* all written, before the fsync */
    const lt_export_tensor *t = &io->ts[k];
    size_t n = numel_of(t->ndim, t->shape);
    const float *x = t->data;
    lt_status st = say(io->rep, err, "tensor %zu of %zu '%s'", io->first + k + 1, io->total, t->name);
    if (st) return st;
    if (t->raw) { /* copied through as it is */
        *bytes = t->raw;
        return LT_OK;
    }
    if (io->fill) {
        if (n > io->cap) {
            free(io->f32);
            io->cap = 0;
            if (!(io->f32 = malloc(n * sizeof *io->f32)))
                return lt_fail(err, LT_ERR_NOMEM, "export: out of memory for tensor '%s'", t->name);
            io->cap = n;
        }
        if ((st = io->fill(io->ctx, io->first + k, io->f32, err)) != LT_OK) return st;
        x = io->f32;
    }
    if ((st = check_finite(t->name, x, n, err)) != LT_OK) return st;
    if (t->dtype == LT_F32) {
        *bytes = x;
        return LT_OK;
    }
    if (n > io->hcap) {
        free(io->half);
        io->hcap = 0;
        if (!(io->half = malloc(n * sizeof *io->half)))
            return lt_fail(err, LT_ERR_NOMEM, "export: cannot convert tensor '%s'", t->name);
        io->hcap = n;
    }
    for (size_t j = 0; j < n; j++) io->half[j] = t->dtype == LT_BF16 ? lt_f32_to_bf16(x[j]) : lt_f32_to_f16(x[j]);
    *bytes = io->half;
    return LT_OK;
}

/* Write tensors [i0, i1) of the n in ts as one safetensors file, one tensor in memory at a time,
 * reporting each tensor and the sync to rep. */
static lt_status write_shard(const char *path, const lt_export_tensor *ts, size_t i0, size_t i1, size_t n,
                             lt_export_fill_fn fill, void *ctx, const reporter *rep, lt_err *err) {
    lt_st_write_tensor *w = calloc(i1 - i0 + 1, sizeof *w);
    if (!w) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = i0; i < i1; i++) {
        const lt_export_tensor *t = &ts[i];
        size_t k = i - i0;
        w[k].name = t->name;
        w[k].dtype = t->dtype;
        w[k].ndim = t->ndim;
        memcpy(w[k].shape, t->shape, sizeof w[k].shape);
    }
    const char *file = strrchr(path, '/');
    shard_io io = {ts + i0, i1 - i0, fill, ctx, i0, n, file ? file + 1 : path, rep, NULL, NULL, 0, 0};
    lt_status st = lt_st_write_stream(path, w, i1 - i0, META_K, META_V, 1, shard_data, &io, err);
    free(io.f32);
    free(io.half);
    free(w);
    return st;
}

lt_status lt_export_hf(const char *out_dir, const char *src_model_dir, const lt_export_tensor *ts, size_t n,
                       size_t max_shard_bytes, lt_err *err) {
    for (size_t i = 0; i < n; i++)
        if (!ts[i].data && numel_of(ts[i].ndim, ts[i].shape))
            return lt_fail(err, LT_ERR_INVALID, "export: tensor '%s' has no data", ts[i].name);
    return lt_export_hf_stream(out_dir, src_model_dir, ts, n, max_shard_bytes, NULL, NULL, NULL, NULL, err);
}

static lt_status export_hf_tensors(const char *out_dir, const char *src_model_dir, const lt_export_tensor *ts,
                                   size_t n, size_t max_shard_bytes, lt_export_fill_fn fill, void *ctx,
                                   const reporter *rep, lt_err *err);

/* The language model inside a multimodal class (lt_config.wrap): its tensors
 * under the names of the source checkpoint's layout, and the other towers'
 * tensors (set aside on load) copied through byte for byte after them, so
 * the folder is the whole model again. Plain sources: ts as given. */
lt_status lt_export_hf_stream(const char *out_dir, const char *src_model_dir, const lt_export_tensor *ts, size_t n,
                              size_t max_shard_bytes, lt_export_fill_fn fill, void *ctx,
                              lt_export_progress_fn progress, void *pctx, lt_err *err) {
    const reporter rep = {progress, pctx};
    lt_config scfg;
    lt_err ignored = {{0}};
    if (lt_config_load(src_model_dir, &scfg, &ignored) != LT_OK || !scfg.wrap)
        return export_hf_tensors(out_dir, src_model_dir, ts, n, max_shard_bytes, fill, ctx, &rep, err);
    lt_st_model *sm = NULL;
    int lay;
    lt_status st = lt_model_open_weights(src_model_dir, &scfg, &sm, &lay, err);
    if (st) return lt_wrap(err, st, "export to %s", out_dir);
    size_t na = lt_st_model_aside_count(sm), cap = 256;
    lt_export_tensor *all = calloc(n + na + 1, sizeof *all);
    char *names = calloc(n + 1, cap);
    if (!all || !names) st = lt_fail(err, LT_ERR_NOMEM, "export: out of memory");
    for (size_t i = 0; i < n && !st; i++) {
        all[i] = ts[i];
        all[i].name = names + i * cap;
        if (!lt_wrap_name(scfg.wrap, lay, ts[i].name, names + i * cap, cap))
            st = lt_fail(err, LT_ERR_INVALID, "export: tensor name '%s' too long", ts[i].name);
    }
    for (size_t j = 0; j < na && !st; j++) {
        const lt_st_tensor *t = lt_st_model_aside(sm, j);
        lt_export_tensor *x = &all[n + j];
        x->name = t->name;
        x->ndim = t->ndim;
        memcpy(x->shape, t->shape, sizeof x->shape);
        x->dtype = t->dtype;
        x->raw = t->data;
    }
    if (!st) st = export_hf_tensors(out_dir, src_model_dir, all, n + na, max_shard_bytes, fill, ctx, &rep, err);
    free(all);
    free(names);
    lt_st_close_model(sm);
    return st;
}

static lt_status export_hf_tensors(const char *out_dir, const char *src_model_dir, const lt_export_tensor *ts,
                                   size_t n, size_t max_shard_bytes, lt_export_fill_fn fill, void *ctx,
                                   const reporter *rep, lt_err *err) {
    char tmp[4096], src[4096], dst[4096];
    lt_status st;
    if (!max_shard_bytes) max_shard_bytes = (size_t)5000000000ull;
    if (!lt_path_join(src, sizeof src, src_model_dir, "config.json") || !lt_file_exists(src))
        return lt_fail(err, LT_ERR_IO, "export: %s: the source model folder has no config.json", src_model_dir);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const lt_export_tensor *t = &ts[i];
        if (!t->raw && t->dtype != LT_F32 && t->dtype != LT_BF16 && t->dtype != LT_F16)
            return lt_fail(err, LT_ERR_INVALID, "export: tensor '%s': dtype %s (expected F32, BF16 or F16)", t->name,
                           lt_dtype_name(t->dtype));
        for (size_t j = 0; j < i; j++)
            if (!strcmp(ts[j].name, t->name))
                return lt_fail(err, LT_ERR_INVALID, "export: tensor '%s' given twice", t->name);
        total += numel_of(t->ndim, t->shape) * lt_dtype_size(t->dtype);
    }
    if ((st = make_tmp(out_dir, tmp, sizeof tmp, err)) != LT_OK) return st;

    /* shards: consecutive tensors up to max_shard_bytes each (a bigger tensor alone) */
    size_t nshards = 0, *starts = calloc(n + 2, sizeof *starts);
    if (!starts) {
        st = lt_fail(err, LT_ERR_NOMEM, "export: out of memory");
        goto fail;
    }
    for (size_t i = 0, cur = 0; i < n; i++) {
        size_t b = numel_of(ts[i].ndim, ts[i].shape) * lt_dtype_size(ts[i].dtype);
        if (i == 0 || cur + b > max_shard_bytes) {
            starts[nshards++] = i;
            cur = 0;
        }
        cur += b;
    }
    if (n == 0) starts[nshards++] = 0;
    starts[nshards] = n;
    if (nshards == 1) {
        lt_path_join(dst, sizeof dst, tmp, "model.safetensors");
        st = write_shard(dst, ts, 0, n, n, fill, ctx, rep, err);
    } else {
        cJSON *idx = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(idx, "metadata"),
              *wm = cJSON_AddObjectToObject(idx, "weight_map");
        cJSON_AddNumberToObject(meta, "total_size", (double)total);
        for (size_t s = 0; s < nshards && st == LT_OK; s++) {
            char fname[96];
            snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", s + 1, nshards);
            lt_path_join(dst, sizeof dst, tmp, fname);
            st = write_shard(dst, ts, starts[s], starts[s + 1], n, fill, ctx, rep, err);
            for (size_t i = starts[s]; i < starts[s + 1]; i++) cJSON_AddStringToObject(wm, ts[i].name, fname);
        }
        char *text = cJSON_Print(idx);
        cJSON_Delete(idx);
        if (st == LT_OK) st = say(rep, err, "writing model.safetensors.index.json");
        if (st == LT_OK) {
            lt_path_join(dst, sizeof dst, tmp, "model.safetensors.index.json");
            st = text ? lt_write_file_atomic(dst, text, strlen(text), err)
                      : lt_fail(err, LT_ERR_NOMEM, "export: cannot format the index");
        }
        free(text);
    }
    free(starts);
    if (st != LT_OK) goto fail;
    lt_path_join(dst, sizeof dst, tmp, "config.json");
    if ((st = say(rep, err, "copying config.json")) || (st = lt_fs_copy_file(src, dst, err)) != LT_OK) goto fail;
    for (size_t k = 0; k < sizeof HF_COPY / sizeof HF_COPY[0]; k++) {
        lt_path_join(src, sizeof src, src_model_dir, HF_COPY[k]);
        if (!lt_file_exists(src)) continue;
        lt_path_join(dst, sizeof dst, tmp, HF_COPY[k]);
        if ((st = say(rep, err, "copying %s", HF_COPY[k])) || (st = lt_fs_copy_file(src, dst, err)) != LT_OK)
            goto fail;
    }
    if ((st = say(rep, err, "renaming it into place")) || (st = lt_fs_replace_dir(tmp, out_dir, err)) != LT_OK)
        goto fail;
    return LT_OK;
fail:
    lt_fs_rm_rf(tmp);
    return st == LT_ERR_NONFINITE ? st : lt_wrap(err, st, "export to %s", out_dir); /* the message names the tensor */
}

/* ---- PEFT adapter: writing ---- */

static cJSON *exact_number(double x) {
    if (x == floor(x) && fabs(x) < 1e15) {
        char buf[64];
        snprintf(buf, sizeof buf, "%.0f", x); /* Python writes an int alpha as an int */
        return cJSON_CreateRaw(buf);
    }
    return lt_json_exact_number(x);
}

/* target_modules for the language model inside a multimodal class: a
 * regular expression PEFT matches (re.fullmatch) against module names, e.g.
 * model\.language_model\.layers\.\d+\.\w+\.(q_proj|v_proj) -- a list of
 * names would also adapt the vision tower's q_proj / k_proj / v_proj */
static void peft_target_regex(const lt_family_wrapper *w, unsigned targets, char *out, size_t cap) {
    const char *canon[2], *file[2];
    size_t o = 0;
    lt_wrap_rules(w, 0, canon, file);
    for (const char *p = file[0]; *p && o + 4 < cap; p++) {
        if (*p == '.') out[o++] = '\\';
        out[o++] = *p;
    }
    o += (size_t)snprintf(out + o, cap - o, "layers\\.\\d+\\.\\w+\\.(");
    for (int t = 0, k = 0; t < LT_LORA_NTARGETS && o < cap; t++)
        if (targets & (1u << t)) o += (size_t)snprintf(out + o, cap - o, "%s%s", k++ ? "|" : "", lt_lora_target_hf(t));
    if (o < cap) snprintf(out + o, cap - o, ")");
}

/* The wrapper whose regular expression (peft_target_regex) `re` is, and its targets; NULL if none. */
static const lt_family_wrapper *peft_parse_regex(const char *re, unsigned *targets) {
    const char *open = strrchr(re, '(');
    size_t n = strlen(re);
    if (!open || n < 2 || re[n - 1] != ')') return NULL;
    char names[256], want[512];
    if ((size_t)(re + n - 1 - open) >= sizeof names) return NULL;
    memcpy(names, open + 1, (size_t)(re + n - 2 - open));
    names[re + n - 2 - open] = 0;
    unsigned mask = 0;
    lt_err ignored;
    for (char *save = NULL, *tok = strtok_r(names, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
        unsigned one = 0;
        if (lt_lora_parse_targets(tok, &one, &ignored) != LT_OK) return NULL;
        mask |= one;
    }
    for (size_t i = 0; i < lt_family_count(); i++) {
        const lt_family_wrapper *w = lt_family_at(i)->wrapper;
        if (!w || !mask) continue;
        peft_target_regex(w, mask, want, sizeof want);
        if (!strcmp(want, re)) {
            *targets = mask;
            return w;
        }
    }
    return NULL;
}

/* A float as Python's repr writes it (an integral value keeps ".0"). */
static cJSON *py_float(double x) {
    if (x == floor(x) && fabs(x) < 1e16) {
        char buf[64];
        snprintf(buf, sizeof buf, "%.1f", x);
        return cJSON_CreateRaw(buf);
    }
    return lt_json_exact_number(x);
}

/* s as a JSON string the way Python's json.dumps (ensure_ascii=True) writes
 * it: \" \\ \n \r \t \b \f, other control characters, DEL and every non-ASCII
 * code point as \u00XX (surrogate pairs above U+FFFF); a byte that is not
 * valid UTF-8 as \u00XX of the byte. */
static void py_json_string(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    while (*p) {
        unsigned c = *p, cp = c;
        int len = 1;
        if (c >= 0x80) {
            int more = c >= 0xf0 && c < 0xf5 ? 3 : c >= 0xe0 ? 2 : c >= 0xc2 && c < 0xe0 ? 1 : 0;
            cp = more == 3 ? c & 7u : more == 2 ? c & 15u : c & 31u;
            for (int k = 1; more && k <= more; k++) {
                if ((p[k] & 0xc0) != 0x80) {
                    more = 0;
                    break;
                }
                cp = cp << 6 | (p[k] & 0x3fu);
            }
            if (!more || (more == 2 && cp < 0x800) || (more == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
                (cp >= 0xd800 && cp < 0xe000))
                cp = c; /* not valid UTF-8: the byte itself */
            else
                len = 1 + more;
        }
        switch (cp) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (cp >= 0x10000)
                fprintf(f, "\\u%04x\\u%04x", 0xd800u + ((cp - 0x10000u) >> 10), 0xdc00u + ((cp - 0x10000u) & 0x3ffu));
            else if (cp < 0x20 || cp >= 0x7f)
                fprintf(f, "\\u%04x", cp);
            else
                fputc((int)cp, f);
        }
        p += len;
    }
    fputc('"', f);
}

/* v as Python's json.dumps(v, indent=2) writes it (members in v's order):
 * "key": value, "," at line ends, {} and [] when empty. Numbers: raw items
 * as they are, others as integers (r, token ids). */
static void py_json_dump(FILE *f, const cJSON *v, int ind) {
    if (cJSON_IsNull(v)) fputs("null", f);
    else if (cJSON_IsTrue(v)) fputs("true", f);
    else if (cJSON_IsFalse(v)) fputs("false", f);
    else if (cJSON_IsRaw(v)) fputs(v->valuestring, f);
    else if (cJSON_IsNumber(v)) fprintf(f, "%.0f", v->valuedouble);
    else if (cJSON_IsString(v)) py_json_string(f, v->valuestring);
    else {
        int obj = cJSON_IsObject(v);
        if (!v->child) {
            fputs(obj ? "{}" : "[]", f);
            return;
        }
        fputs(obj ? "{\n" : "[\n", f);
        for (const cJSON *m = v->child; m; m = m->next) {
            fprintf(f, "%*s", ind + 2, "");
            if (obj) {
                py_json_string(f, m->string);
                fputs(": ", f);
            }
            py_json_dump(f, m, ind + 2);
            fputs(m->next ? ",\n" : "\n", f);
        }
        fprintf(f, "%*s%c", ind, "", obj ? '}' : ']');
    }
}

/* The PEFT release whose adapter_config.json form the writer follows. */
#define LT_PEFT_VERSION "0.21.2"

/* adapter_config.json exactly as PEFT 0.21.2's save_pretrained writes it for a
 * LoraConfig(r, lora_alpha, lora_dropout, target_modules, use_rslora,
 * task_type="CAUSAL_LM") on a causal LM, with trainable_token_indices or
 * modules_to_save for trained embeddings: json.dumps(sort_keys=True,
 * indent=2), no final newline; every key at PEFT's default except those.
 * target_modules in our target order (PEFT writes a set's order). */
static char *peft_config_json(const lt_peft_config *c, const lt_peft_embed *e) {
    int mode = e ? e->mode : LT_TRAIN_EMB_NONE;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNullToObject(r, "alora_invocation_tokens");
    cJSON_AddItemToObject(r, "alpha_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(r, "arrow_config");
    cJSON_AddNullToObject(r, "auto_mapping");
    if (c->base_model[0]) cJSON_AddStringToObject(r, "base_model_name_or_path", c->base_model);
    else cJSON_AddNullToObject(r, "base_model_name_or_path");
    cJSON_AddStringToObject(r, "bias", "none");
    cJSON_AddNullToObject(r, "corda_config");
    cJSON_AddBoolToObject(r, "ensure_weight_tying", mode == LT_TRAIN_EMB_ALL && e->tie);
    cJSON_AddNullToObject(r, "eva_config");
    cJSON_AddNullToObject(r, "exclude_modules");
    cJSON_AddFalseToObject(r, "fan_in_fan_out");
    cJSON_AddTrueToObject(r, "inference_mode");
    cJSON_AddTrueToObject(r, "init_lora_weights");
    cJSON_AddNullToObject(r, "kasa_config");
    cJSON_AddNullToObject(r, "layer_replication");
    cJSON_AddNullToObject(r, "layers_pattern");
    cJSON_AddNullToObject(r, "layers_to_transform");
    cJSON_AddItemToObject(r, "loftq_config", cJSON_CreateObject());
    cJSON_AddItemToObject(r, "lora_alpha", exact_number(c->alpha));
    cJSON_AddFalseToObject(r, "lora_bias");
    cJSON_AddItemToObject(r, "lora_dropout", py_float(c->dropout));
    cJSON_AddNullToObject(r, "lora_ga_config");
    cJSON_AddNullToObject(r, "megatron_config");
    cJSON_AddStringToObject(r, "megatron_core", "megatron.core");
    if (mode == LT_TRAIN_EMB_ALL) {
        cJSON *ms = cJSON_AddArrayToObject(r, "modules_to_save");
        cJSON_AddItemToArray(ms, cJSON_CreateString("embed_tokens"));
        /* tied: PEFT 0.21 lists the module under both names and saves the head too */
        cJSON_AddItemToArray(ms, cJSON_CreateString(e->tie ? "model.embed_tokens" : "lm_head"));
    } else
        cJSON_AddNullToObject(r, "modules_to_save");
    cJSON_AddNullToObject(r, "monteclora_config");
    cJSON_AddStringToObject(r, "peft_type", "LORA");
    cJSON_AddStringToObject(r, "peft_version", LT_PEFT_VERSION);
    cJSON_AddNumberToObject(r, "qalora_group_size", 16);
    cJSON_AddNumberToObject(r, "r", c->r);
    cJSON_AddItemToObject(r, "rank_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(r, "revision");
    if (c->wrap) {
        char re[512];
        peft_target_regex(c->wrap, c->targets, re, sizeof re);
        cJSON_AddStringToObject(r, "target_modules", re);
    } else {
        cJSON *tm = cJSON_AddArrayToObject(r, "target_modules");
        for (int t = 0; t < LT_LORA_NTARGETS; t++)
            if (c->targets & (1u << t)) cJSON_AddItemToArray(tm, cJSON_CreateString(lt_lora_target_hf(t)));
    }
    cJSON_AddNullToObject(r, "target_parameters");
    cJSON_AddStringToObject(r, "task_type", "CAUSAL_LM");
    if (mode == LT_TRAIN_EMB_NEW) {
        cJSON *ids = cJSON_CreateArray();
        for (int64_t i = 0; i < e->rows; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(e->ids[i]));
        if (e->head) { /* untied: both layers, by name */
            cJSON *d = cJSON_AddObjectToObject(r, "trainable_token_indices");
            cJSON_AddItemToObject(d, "embed_tokens", ids);
            cJSON_AddItemToObject(d, "lm_head", cJSON_Duplicate(ids, 1));
        } else
            cJSON_AddItemToObject(r, "trainable_token_indices", ids);
    } else
        cJSON_AddNullToObject(r, "trainable_token_indices");
    cJSON_AddNullToObject(r, "use_bdlora");
    cJSON_AddFalseToObject(r, "use_dora");
    cJSON_AddFalseToObject(r, "use_qalora");
    cJSON_AddBoolToObject(r, "use_rslora", c->rslora ? 1 : 0);
    cJSON_AddNullToObject(r, "velora_config");
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    if (f) {
        py_json_dump(f, r, 0);
        if (fclose(f) != 0) {
            free(s);
            s = NULL;
        }
    }
    cJSON_Delete(r);
    return s;
}

static int cmp_peft(const void *a, const void *b) {
    const lt_peft_tensor *x = a, *y = b;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return x->target < y->target ? -1 : x->target > y->target;
}

static const char *const EMB_NAMES[2][2] = {
    {"base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta",
     "base_model.model.lm_head.token_adapter.trainable_tokens_delta"},
    {"base_model.model.model.embed_tokens.weight", "base_model.model.lm_head.weight"}};

lt_status lt_peft_export(const char *out_dir, const lt_peft_config *c, const lt_peft_tensor *ts, size_t n,
                         lt_err *err) {
    return lt_peft_export_embed(out_dir, c, ts, n, NULL, NULL, NULL, err);
}

lt_status lt_peft_export_embed(const char *out_dir, const lt_peft_config *c, const lt_peft_tensor *ts, size_t n,
                               const lt_peft_embed *emb, lt_export_progress_fn progress, void *pctx, lt_err *err) {
    const reporter rep = {progress, pctx};
    char tmp[4096], path[4096];
    if (emb && emb->mode == LT_TRAIN_EMB_NONE) emb = NULL;
    lt_status st;
    if (c->r < 1 || !(c->alpha > 0) || !(c->dropout >= 0 && c->dropout < 1) || !c->targets)
        return lt_fail(err, LT_ERR_INVALID, "PEFT export: bad LoRA configuration (r %d, alpha %g, dropout %g)", c->r,
                       c->alpha, c->dropout);
    if (emb && c->wrap)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "PEFT export: trained embeddings for the language model inside %s are not supported",
                       c->wrap->class_name);
    for (size_t i = 0; i < n; i++) {
        const lt_peft_tensor *t = &ts[i];
        char name[256];
        if (t->target < 0 || t->target >= LT_LORA_NTARGETS || !(c->targets & (1u << t->target)) || t->layer < 0)
            return lt_fail(err, LT_ERR_INVALID, "PEFT export: tensor %zu: layer %d module %d is not a configured target",
                           i, t->layer, t->target);
        for (size_t j = 0; j < i; j++)
            if (ts[j].layer == t->layer && ts[j].target == t->target)
                return lt_fail(err, LT_ERR_INVALID, "PEFT export: layer %d %s given twice", t->layer,
                               lt_lora_target_hf(t->target));
        lt_lora_peft_name(name, sizeof name, t->layer, t->target, 0);
        if ((st = check_finite(name, t->A, (size_t)c->r * (size_t)t->in, err)) != LT_OK) return st;
        lt_lora_peft_name(name, sizeof name, t->layer, t->target, 1);
        if ((st = check_finite(name, t->B, (size_t)t->out * (size_t)c->r, err)) != LT_OK) return st;
    }
    if (emb) {
        const char *const *nm = EMB_NAMES[emb->mode == LT_TRAIN_EMB_ALL];
        if ((emb->mode != LT_TRAIN_EMB_NEW && emb->mode != LT_TRAIN_EMB_ALL) || emb->rows < 1 || emb->cols < 1 ||
            !emb->embed || (emb->mode == LT_TRAIN_EMB_NEW && !emb->ids))
            return lt_fail(err, LT_ERR_INVALID, "PEFT export: bad trained-embeddings description");
        if ((st = check_finite(nm[0], emb->embed, (size_t)(emb->rows * emb->cols), err)) != LT_OK ||
            (emb->head && (st = check_finite(nm[1], emb->head, (size_t)(emb->rows * emb->cols), err)) != LT_OK))
            return st;
    }
    /* tensors sorted by name as safetensors' writer does not care, but keep (layer, module) order */
    lt_peft_tensor *sorted = malloc((n ? n : 1) * sizeof *sorted);
    lt_export_tensor *w = calloc(2 * n + 3, sizeof *w);
    char (*names)[160] = calloc(2 * n + 1, sizeof *names);
    if (!sorted || !w || !names) {
        free(sorted);
        free(w);
        free(names);
        return lt_fail(err, LT_ERR_NOMEM, "PEFT export: out of memory");
    }
    memcpy(sorted, ts, n * sizeof *ts);
    qsort(sorted, n, sizeof *sorted, cmp_peft);
    for (size_t i = 0; i < n; i++) {
        for (int b = 0; b < 2; b++) {
            lt_export_tensor *x = &w[2 * i + (size_t)b];
            char canon[sizeof names[0]];
            lt_lora_peft_name(canon, sizeof canon, sorted[i].layer, sorted[i].target, b);
            lt_wrap_name(c->wrap, -1, canon, names[2 * i + (size_t)b], sizeof names[0]);
            x->name = names[2 * i + (size_t)b];
            x->dtype = LT_F32;
            x->ndim = 2;
            x->shape[0] = b ? sorted[i].out : c->r;
            x->shape[1] = b ? c->r : sorted[i].in;
            x->data = b ? sorted[i].B : sorted[i].A;
        }
    }
    size_t nw = 2 * n;
    for (int k = 0; emb && k < 2; k++) {
        const float *x = k ? emb->head : emb->embed;
        if (k && emb->mode == LT_TRAIN_EMB_ALL && emb->tie) x = emb->embed; /* the tied head, as PEFT saves it */
        if (!x) continue;
        w[nw].name = EMB_NAMES[emb->mode == LT_TRAIN_EMB_ALL][k];
        w[nw].dtype = LT_F32;
        w[nw].ndim = 2;
        w[nw].shape[0] = emb->rows;
        w[nw].shape[1] = emb->cols;
        w[nw++].data = x;
    }
    char *cfg = peft_config_json(c, emb);
    st = cfg ? make_tmp(out_dir, tmp, sizeof tmp, err) : lt_fail(err, LT_ERR_NOMEM, "PEFT export: out of memory");
    if (st == LT_OK) {
        lt_path_join(path, sizeof path, tmp, "adapter_model.safetensors");
        st = write_shard(path, w, 0, nw, nw, NULL, NULL, &rep, err);
        if (st == LT_OK && !(st = say(&rep, err, "writing adapter_config.json"))) {
            lt_path_join(path, sizeof path, tmp, "adapter_config.json");
            st = lt_write_file_atomic(path, cfg, strlen(cfg), err);
        }
        if (st == LT_OK && !(st = say(&rep, err, "renaming it into place"))) st = lt_fs_replace_dir(tmp, out_dir, err);
        if (st != LT_OK) lt_fs_rm_rf(tmp);
    }
    free(cfg);
    free(sorted);
    free(w);
    free(names);
    return st == LT_OK ? st : lt_wrap(err, st, "PEFT export to %s", out_dir);
}

/* ---- PEFT adapter: reading ---- */

void lt_peft_free(lt_peft_adapter *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n; i++) {
        free((void *)a->t[i].A);
        free((void *)a->t[i].B);
    }
    free(a->t);
    free(a->emb.ids);
    free(a->emb.embed);
    free(a->emb.head);
    free(a);
}

const lt_peft_tensor *lt_peft_find(const lt_peft_adapter *a, int layer, int target) {
    for (size_t i = 0; i < a->n; i++)
        if (a->t[i].layer == layer && a->t[i].target == target) return &a->t[i];
    return NULL;
}

/* null, absent, false, {} and [] all count as "not used" */
static int unused(const cJSON *x) {
    return !x || cJSON_IsNull(x) || cJSON_IsFalse(x) || ((cJSON_IsObject(x) || cJSON_IsArray(x)) && !x->child);
}

/* adapter_config.json settings that change the math and that luxtrain does
 * not implement, refused by name when set (true, a value, a non-empty list or
 * object). Covers PEFT 0.15 to 0.21; any other key not listed here or in
 * PEFT_KNOWN is refused when set too (a later PEFT's variant). */
static const char *const PEFT_VARIANTS[] = {
    "use_dora",      "lora_bias",        "fan_in_fan_out",    "use_qalora",      "use_bdlora",
    "rank_pattern",  "alpha_pattern",    "layers_to_transform", "layer_replication", "exclude_modules",
    "target_parameters", "alora_invocation_tokens", "arrow_config", "kasa_config", "monteclora_config",
    "velora_config", "lora_ga_config"};
/* keys read by parse_peft_config, or that do not change the adapted model
 * (bookkeeping, or settings only used by an initialization refused below) */
static const char *const PEFT_KNOWN[] = {
    "peft_type", "r", "lora_alpha", "lora_dropout", "use_rslora", "bias", "target_modules", "modules_to_save",
    "trainable_token_indices", "ensure_weight_tying", "init_lora_weights", "base_model_name_or_path",
    "revision", "task_type", "inference_mode", "auto_mapping", "peft_version", "megatron_core",
    "megatron_config", "layers_pattern", "qalora_group_size", "loftq_config", "eva_config", "corda_config"};

static lt_status peft_refuse_variants(const cJSON *r, const char *path, lt_err *err) {
    for (const cJSON *m = r->child; m; m = m->next) {
        int variant = 0, known = 0;
        for (size_t k = 0; k < sizeof PEFT_VARIANTS / sizeof PEFT_VARIANTS[0]; k++)
            variant |= !strcmp(m->string, PEFT_VARIANTS[k]);
        for (size_t k = 0; k < sizeof PEFT_KNOWN / sizeof PEFT_KNOWN[0]; k++) known |= !strcmp(m->string, PEFT_KNOWN[k]);
        if (variant && !unused(m))
            return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: \"%s\" is set; luxtrain supports plain LoRA adapters only",
                           path, m->string);
        if (!variant && !known && !unused(m))
            return lt_fail(err, LT_ERR_UNSUPPORTED,
                           "%s: \"%s\" is set, a setting luxtrain does not know (a newer PEFT's?); refused as it may "
                           "change the adapter's math",
                           path, m->string);
    }
    /* an initialization that rewrites the base weights (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA, ...) makes the
     * adapter belong to a changed base model; the default and "gaussian" only set A and B, which are loaded */
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(r, "init_lora_weights");
    if (x && !cJSON_IsBool(x) && !(cJSON_IsString(x) && !strcmp(x->valuestring, "gaussian")))
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: \"init_lora_weights\" is %s; luxtrain supports adapters initialized with true, false or "
                       "\"gaussian\" only",
                       path, cJSON_IsString(x) ? x->valuestring : "not a boolean or string");
    return LT_OK;
}

static lt_status parse_peft_config(const char *path, lt_peft_config *c, lt_peft_embed *emb, lt_err *err) {
    cJSON *r = NULL;
    lt_status st = lt_json_load_file(path, &r, err);
    if (st != LT_OK) return st;
    if (!cJSON_IsObject(r)) {
        cJSON_Delete(r);
        return lt_fail(err, LT_ERR_FORMAT, "%s: not a JSON object", path);
    }
#define GET(k) cJSON_GetObjectItemCaseSensitive(r, k)
#define BAD(...)                                         \
    do {                                                 \
        st = lt_fail(err, LT_ERR_FORMAT, __VA_ARGS__);   \
        goto out;                                        \
    } while (0)
#define UNSUP(...)                                           \
    do {                                                     \
        st = lt_fail(err, LT_ERR_UNSUPPORTED, __VA_ARGS__);  \
        goto out;                                            \
    } while (0)
    memset(c, 0, sizeof *c);
    const cJSON *x = GET("peft_type");
    if (!cJSON_IsString(x) || strcmp(x->valuestring, "LORA"))
        UNSUP("%s: peft_type %s is not supported (expected \"LORA\")", path,
              cJSON_IsString(x) ? x->valuestring : "(missing)");
    x = GET("r");
    if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < 1 || x->valuedouble > 65536)
        BAD("%s: \"r\" must be a positive integer", path);
    c->r = (int)x->valuedouble;
    x = GET("lora_alpha");
    if (!cJSON_IsNumber(x) || !(x->valuedouble > 0)) BAD("%s: \"lora_alpha\" must be a number > 0", path);
    c->alpha = x->valuedouble;
    x = GET("lora_dropout");
    if (x && !cJSON_IsNull(x) && (!cJSON_IsNumber(x) || !(x->valuedouble >= 0 && x->valuedouble < 1)))
        BAD("%s: \"lora_dropout\" must be a number in [0, 1)", path);
    c->dropout = cJSON_IsNumber(x) ? x->valuedouble : 0.0;
    x = GET("use_rslora");
    if (x && !cJSON_IsBool(x)) BAD("%s: \"use_rslora\" must be true or false", path);
    c->rslora = cJSON_IsTrue(x);
    x = GET("bias");
    if (x && (!cJSON_IsString(x) || strcmp(x->valuestring, "none")))
        UNSUP("%s: bias %s is not supported (only \"none\")", path, cJSON_IsString(x) ? x->valuestring : "?");
    if ((st = peft_refuse_variants(r, path, err)) != LT_OK) goto out;
    x = GET("target_modules");
    if (cJSON_IsString(x) && (c->wrap = peft_parse_regex(x->valuestring, &c->targets))) {
        /* the language model's layers inside a multimodal class, as lt_peft_export writes it */
    } else if (cJSON_IsString(x)) { /* PEFT treats a string as a regex: accept only a plain module name */
        if ((st = lt_lora_parse_targets(x->valuestring, &c->targets, err)) != LT_OK || strchr(x->valuestring, ','))
            UNSUP("%s: target_modules \"%s\" is a regular expression; give a list of module names", path,
                  x->valuestring);
    } else if (cJSON_IsArray(x) && x->child) {
        const cJSON *m;
        cJSON_ArrayForEach(m, x) {
            unsigned one = 0;
            if (!cJSON_IsString(m) || lt_lora_parse_targets(m->valuestring, &one, err) != LT_OK)
                UNSUP("%s: target module %s is not supported (expected q_proj, k_proj, v_proj, o_proj, gate_proj, "
                      "up_proj, down_proj)",
                      path, cJSON_IsString(m) ? m->valuestring : "(not a string)");
            c->targets |= one;
        }
    } else {
        BAD("%s: \"target_modules\" must be a non-empty list", path);
    }
    /* trained embeddings (lt_peft_embed) */
    lt_peft_embed e;
    memset(&e, 0, sizeof e);
    x = GET("modules_to_save");
    if (!unused(x)) {
        const cJSON *m;
        int has_e = 0;
        if (!cJSON_IsArray(x)) UNSUP("%s: \"modules_to_save\" must be a list", path);
        cJSON_ArrayForEach(m, x) {
            if (cJSON_IsString(m) && (!strcmp(m->valuestring, "embed_tokens") ||
                                      !strcmp(m->valuestring, "model.embed_tokens")))
                has_e = 1;
            else if (cJSON_IsString(m) && !strcmp(m->valuestring, "lm_head"))
                e.head_listed = 1;
            else
                UNSUP("%s: modules_to_save %s is not supported (only embed_tokens and lm_head)", path,
                      cJSON_IsString(m) ? m->valuestring : "(not a string)");
        }
        if (!has_e) UNSUP("%s: modules_to_save without embed_tokens is not supported", path);
        e.mode = LT_TRAIN_EMB_ALL;
        e.tie = cJSON_IsTrue(GET("ensure_weight_tying"));
    }
    x = GET("trainable_token_indices");
    if (!unused(x)) {
        if (e.mode) UNSUP("%s: both modules_to_save and trainable_token_indices are set", path);
        const cJSON *ids = x, *hids = NULL, *m;
        if (cJSON_IsObject(x)) {
            ids = GET("trainable_token_indices") ? cJSON_GetObjectItemCaseSensitive(x, "embed_tokens") : NULL;
            hids = cJSON_GetObjectItemCaseSensitive(x, "lm_head");
            cJSON_ArrayForEach(m, x) if (strcmp(m->string, "embed_tokens") && strcmp(m->string, "lm_head"))
                UNSUP("%s: trainable_token_indices for '%s' is not supported (only embed_tokens and lm_head)", path,
                      m->string);
            if (!ids) UNSUP("%s: trainable_token_indices without embed_tokens is not supported", path);
            e.head_listed = hids != NULL;
        } else
            e.tie = 1; /* a list: the input embeddings, and a tied lm_head follows */
        if (!cJSON_IsArray(ids) || !ids->child) BAD("%s: trainable_token_indices must list token ids", path);
        if (hids && !cJSON_Compare(ids, hids, 1))
            UNSUP("%s: trainable_token_indices: different ids for embed_tokens and lm_head", path);
        e.rows = cJSON_GetArraySize(ids);
        e.ids = malloc((size_t)e.rows * sizeof *e.ids);
        if (!e.ids) {
            st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
            goto out;
        }
        int64_t k = 0;
        cJSON_ArrayForEach(m, ids) {
            int64_t v;
            if (!lt_json_int64(m, &v) || v < 0 || v > INT32_MAX) {
                free(e.ids);
                BAD("%s: trainable_token_indices: entry %lld is not a token id", path, (long long)k);
            }
            for (int64_t j = 0; j < k; j++)
                if (e.ids[j] == v) {
                    free(e.ids);
                    BAD("%s: trainable_token_indices: id %lld is listed twice", path, (long long)v);
                }
            e.ids[k++] = (int32_t)v;
        }
        e.mode = LT_TRAIN_EMB_NEW;
    }
    if (emb)
        *emb = e;
    else
        free(e.ids);
    x = GET("base_model_name_or_path");
    if (cJSON_IsString(x)) snprintf(c->base_model, sizeof c->base_model, "%s", x->valuestring);
    st = LT_OK;
out:
    cJSON_Delete(r);
    return st;
#undef GET
#undef BAD
#undef UNSUP
}

lt_status lt_peft_load_config(const char *dir, lt_peft_config *cfg, lt_err *err) {
    char path[4096];
    if (!lt_path_join(path, sizeof path, dir, "adapter_config.json"))
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", dir);
    if (!lt_file_exists(path))
        return lt_fail(err, LT_ERR_IO, "%s: no adapter_config.json (a PEFT LoRA adapter folder was expected)", dir);
    return parse_peft_config(path, cfg, NULL, err);
}

/* A LoRA tensor's layer and target: PEFT's name on a causal LM, or on the
 * language model inside a multimodal class (lt_family_wrapper; the adapter
 * then records which, and every tensor must agree). */
static lt_status peft_tensor_name(lt_peft_adapter *a, const char *name, int *layer, int *t, int *is_B, lt_err *err) {
    char canon[512];
    lt_err first;
    lt_status st = lt_lora_parse_peft_name(name, layer, t, is_B, &first);
    if (st == LT_OK && !a->cfg.wrap) return LT_OK;
    for (size_t i = 0; st != LT_OK && i < lt_family_count(); i++) {
        const lt_family_wrapper *w = lt_family_at(i)->wrapper;
        if (!w || !lt_wrap_unname(w, -1, name, canon, sizeof canon)) continue;
        if (lt_lora_parse_peft_name(canon, layer, t, is_B, err) != LT_OK) continue;
        if (a->cfg.wrap && a->cfg.wrap != w) break;
        if (!a->cfg.wrap && a->n) /* earlier tensors named as on a causal LM */
            return lt_fail(err, LT_ERR_FORMAT, "tensor '%s' names the language model inside %s, earlier ones a "
                           "causal LM's", name, w->class_name);
        a->cfg.wrap = w;
        return LT_OK;
    }
    if (st == LT_OK) /* a causal LM's name in an adapter of a multimodal class */
        return lt_fail(err, LT_ERR_FORMAT, "tensor '%s' names a causal LM's module, but the adapter is for the "
                       "language model inside %s", name, a->cfg.wrap->class_name);
    *err = first;
    return st;
}

lt_status lt_peft_load(const char *dir, lt_peft_adapter **out, lt_err *err) {
    char path[4096];
    *out = NULL;
    lt_peft_adapter *a = calloc(1, sizeof *a);
    if (!a) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", dir);
    if (!lt_path_join(path, sizeof path, dir, "adapter_config.json")) {
        free(a);
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", dir);
    }
    if (access(path, F_OK) != 0) { /* a run folder given instead of its export? */
        char fin[4096];
        free(a);
        if (lt_path_join(fin, sizeof fin, dir, "final/adapter_config.json") && access(fin, F_OK) == 0)
            return lt_fail(err, LT_ERR_INVALID,
                           "%s is a training run folder, not an adapter: its adapter is %s/final "
                           "(use --adapter %s/final)", dir, dir, dir);
        return lt_fail(err, LT_ERR_IO, "%s: no adapter_config.json (a PEFT LoRA adapter folder was expected)",
                       dir);
    }
    lt_status st = parse_peft_config(path, &a->cfg, &a->emb, err);
    if (st != LT_OK) {
        free(a);
        return st;
    }
    if (!lt_path_join(path, sizeof path, dir, "adapter_model.safetensors")) {
        free(a);
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", dir);
    }
    lt_st_file *f = NULL;
    if ((st = lt_st_open(path, &f, err)) != LT_OK) {
        free(a);
        return st;
    }
    size_t nt = lt_st_count(f);
    a->t = calloc(nt + 1, sizeof *a->t);
    if (!a->t) {
        st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    const int r = a->cfg.r;
    for (size_t i = 0; i < nt; i++) {
        const lt_st_tensor *t = lt_st_get(f, i);
        int layer, target, is_B, ek = -1;
        for (int k = 0; k < 2 && a->emb.mode; k++)
            if (!strcmp(t->name, EMB_NAMES[a->emb.mode == LT_TRAIN_EMB_ALL][k])) ek = k;
        if (ek >= 0) { /* trained embeddings */
            float **dst = ek ? &a->emb.head : &a->emb.embed;
            int64_t want = a->emb.mode == LT_TRAIN_EMB_NEW ? a->emb.rows : (a->emb.rows ? a->emb.rows : t->shape[0]);
            if (t->ndim != 2 || t->shape[0] != want || (a->emb.cols && t->shape[1] != a->emb.cols) || *dst) {
                st = lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' has shape [%lld, %lld] (expected %lld rows%s)",
                             path, t->name, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
                             (long long)want, *dst ? ", once" : "");
                goto fail;
            }
            a->emb.rows = t->shape[0];
            a->emb.cols = t->shape[1];
            if (!(*dst = malloc(t->numel * sizeof(float) + 1))) {
                st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
                goto fail;
            }
            if ((st = lt_st_to_f32(t, *dst, t->numel, err)) != LT_OK) goto fail;
            continue;
        }
        if ((st = peft_tensor_name(a, t->name, &layer, &target, &is_B, err)) != LT_OK) {
            lt_wrap(err, st, "%s", path);
            goto fail;
        }
        if (!(a->cfg.targets & (1u << target))) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' adapts %s, which is not in target_modules", path, t->name,
                         lt_lora_target_hf(target));
            goto fail;
        }
        if (t->ndim != 2 || (is_B ? t->shape[1] != r : t->shape[0] != r)) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' has shape [%lld, %lld] but r = %d needs %s", path,
                         t->name, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0), r,
                         is_B ? "[out, r]" : "[r, in]");
            goto fail;
        }
        lt_peft_tensor *p = (lt_peft_tensor *)lt_peft_find(a, layer, target);
        if (!p) {
            p = &a->t[a->n++];
            p->layer = layer;
            p->target = target;
        }
        if (is_B ? p->B != NULL : p->A != NULL) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' appears twice", path, t->name);
            goto fail;
        }
        float *buf = malloc(t->numel * sizeof(float) + 1);
        if (!buf) {
            st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        if ((st = lt_st_to_f32(t, buf, t->numel, err)) != LT_OK) {
            free(buf);
            goto fail;
        }
        if (is_B) {
            p->B = buf;
            p->out = (int)t->shape[0];
        } else {
            p->A = buf;
            p->in = (int)t->shape[1];
        }
    }
    for (size_t i = 0; i < a->n; i++) {
        if (!a->t[i].A || !a->t[i].B) {
            char name[256];
            lt_lora_peft_name(name, sizeof name, a->t[i].layer, a->t[i].target, a->t[i].A != NULL);
            st = lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' is missing (LoRA needs both A and B)", path, name);
            goto fail;
        }
    }
    if (a->n == 0) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: no LoRA tensors", path);
        goto fail;
    }
    if (a->emb.mode && !a->emb.embed) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' is missing (the config trains embed_tokens)", path,
                     EMB_NAMES[a->emb.mode == LT_TRAIN_EMB_ALL][0]);
        goto fail;
    }
    qsort(a->t, a->n, sizeof *a->t, cmp_peft);
    lt_st_close(f);
    *out = a;
    return LT_OK;
fail:
    lt_st_close(f);
    lt_peft_free(a);
    return st;
}

lt_status lt_peft_check(const lt_peft_adapter *a, const lt_config *m, lt_err *err) {
    if (a->cfg.wrap != m->wrap)
        return lt_fail(err, LT_ERR_FORMAT, "adapter: its tensors are named for %s%s, but the model is %s%s",
                       a->cfg.wrap ? "the language model inside " : "a causal LM",
                       a->cfg.wrap ? a->cfg.wrap->class_name : "", m->wrap ? "the language model inside " : "",
                       m->architecture);
    for (size_t i = 0; i < a->n; i++)
        if (a->t[i].layer >= m->num_layers)
            return lt_fail(err, LT_ERR_FORMAT, "adapter: layer %d %s, but the model has %d layers", a->t[i].layer,
                           lt_lora_target_hf(a->t[i].target), m->num_layers);
    for (int L = 0; L < m->num_layers; L++) {
        for (int t = 0; t < LT_LORA_NTARGETS; t++) {
            if (!(a->cfg.targets & (1u << t))) continue;
            const lt_peft_tensor *p = lt_peft_find(a, L, t);
            if (!p)
                return lt_fail(err, LT_ERR_FORMAT, "adapter: layer %d %s has no LoRA weights (target_modules lists it)",
                               L, lt_lora_target_hf(t));
            int in, out;
            lt_lora_target_dims(m, t, &in, &out);
            if (p->in != in || p->out != out)
                return lt_fail(err, LT_ERR_FORMAT,
                               "adapter: layer %d %s is %d -> %d features but the model's layer is %d -> %d", L,
                               lt_lora_target_hf(t), p->in, p->out, in, out);
        }
    }
    const lt_peft_embed *e = &a->emb;
    if (!e->mode) return LT_OK;
    if (e->cols != m->hidden_size || (e->mode == LT_TRAIN_EMB_ALL && e->rows != m->vocab_size))
        return lt_fail(err, LT_ERR_FORMAT, "adapter: trained embeddings of [%lld, %lld], but the model has %d x %d",
                       (long long)e->rows, (long long)e->cols, m->vocab_size, m->hidden_size);
    for (int64_t i = 0; e->mode == LT_TRAIN_EMB_NEW && i < e->rows; i++)
        if (e->ids[i] >= m->vocab_size)
            return lt_fail(err, LT_ERR_RANGE, "adapter: trainable token id %d, but the model has %d rows", (int)e->ids[i],
                           m->vocab_size);
    if (m->tie_word_embeddings && e->head &&
        (!e->tie || memcmp(e->head, e->embed, (size_t)(e->rows * e->cols) * sizeof(float))))
        return lt_fail(err, LT_ERR_UNSUPPORTED, "adapter: an lm_head of its own, but the model ties it to embed_tokens");
    if (m->tie_word_embeddings && e->mode == LT_TRAIN_EMB_ALL && !e->tie)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "adapter: modules_to_save embed_tokens on a tied model without ensure_weight_tying (PEFT then "
                       "unties lm_head from the trained copy; luxtrain keeps them tied)");
    if (!m->tie_word_embeddings && e->head_listed && !e->head)
        return lt_fail(err, LT_ERR_FORMAT, "adapter: the config trains lm_head but its tensor is missing");
    return LT_OK;
}

lt_status lt_peft_embed_apply(const lt_peft_embed *e, float *embed, float *head, int64_t V, int64_t C, lt_err *err) {
    if (!e || !e->mode) return LT_OK;
    if (e->cols != C) return lt_fail(err, LT_ERR_FORMAT, "adapter: embeddings of width %lld, model %lld", (long long)e->cols, (long long)C);
    for (int k = 0; k < 2; k++) {
        float *dst = k ? head : embed;
        const float *src = k ? e->head : e->embed;
        if (!dst) continue;
        if (!src) continue; /* an untied lm_head not trained: unchanged (tied: the caller passes head NULL) */
        for (int64_t i = 0; i < e->rows; i++) {
            int64_t r = e->mode == LT_TRAIN_EMB_NEW ? e->ids[i] : i;
            if (r >= V) return lt_fail(err, LT_ERR_RANGE, "adapter: embedding row %lld of %lld", (long long)r, (long long)V);
            memcpy(dst + r * C, src + i * C, (size_t)C * sizeof *dst);
        }
    }
    return LT_OK;
}

lt_status lt_vocab_record_ids(const char *model_dir, int32_t **ids, size_t *n_out, lt_err *err) {
    char path[4096];
    *ids = NULL;
    *n_out = 0;
    if (!lt_path_join(path, sizeof path, model_dir, LT_VOCAB_RECORD))
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", model_dir);
    if (!lt_file_exists(path))
        return lt_fail(err, LT_ERR_INVALID,
                       "%s has no %s (made by `luxtrain vocab add`); give --train-embeddings all to train every row",
                       model_dir, LT_VOCAB_RECORD);
    cJSON *r = NULL;
    lt_status st = lt_json_load_file(path, &r, err);
    if (st) return st;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(r, "added_ids"), *x;
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : -1;
    int32_t *v = n > 0 ? malloc((size_t)n * sizeof *v) : NULL;
    if (n < 0)
        st = lt_fail(err, LT_ERR_FORMAT, "%s: \"added_ids\" must be a list of token ids", path);
    else if (n == 0)
        st = lt_fail(err, LT_ERR_INVALID, "%s: vocab add added no new ids: no rows to train", path);
    else if (!v)
        st = lt_fail(err, LT_ERR_NOMEM, "out of memory");
    int k = 0;
    cJSON_ArrayForEach(x, list) {
        int64_t id;
        if (st) break;
        if (!lt_json_int64(x, &id) || id < 0 || id > INT32_MAX)
            st = lt_fail(err, LT_ERR_FORMAT, "%s: added_ids[%d] is not a token id", path, k);
        else
            v[k++] = (int32_t)id;
    }
    cJSON_Delete(r);
    if (st) {
        free(v);
        return st;
    }
    *ids = v;
    *n_out = (size_t)n;
    return LT_OK;
}
