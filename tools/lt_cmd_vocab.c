/*
 * lt_cmd_vocab.c -- `luxtrain vocab add --model DIR --tokens FILE --out DIR
 * [--pad-to-multiple N] [--special] [--overwrite]`: what transformers 5.24's
 *   tok.add_tokens(list)          (or add_tokens(list, special_tokens=True))
 *   model.resize_token_embeddings(len(tok), pad_to_multiple_of=N)
 *   save_pretrained
 * computes, written as a Hugging Face folder:
 *   tokenizer.json     the source's text with "added_tokens" replaced
 *                      (data/lt_tok_vocab.h: the same entries, ids and flags
 *                      tokenizers 0.23 writes)
 *   tokenizer_config.json  the source's, its "added_tokens_decoder" (when it
 *                      has one) rewritten for the new entries
 *   config.json        the source's with vocab_size = the new row count
 *   model*.safetensors every tensor in its source dtype; embed_tokens and an
 *                      untied lm_head resized (lt_embed_resize_rows: added
 *                      rows = the mean of the old rows); a tied model stays
 *                      tied (no lm_head written)
 *   chat_template.jinja, generation_config.json, special_tokens_map.json
 *                      copied where present
 *   luxtrain_vocab.json  LT_VOCAB_RECORD (lt_export.h): the ids added, for
 *                      `train --train-embeddings new`
 * into "<out>.tmp-<host>-<pid>" and renamed into place once complete.
 * Tokens file: one token per line, taken verbatim (UTF-8; "\n" or "\r\n" ends
 * a line; empty lines are skipped, as add_tokens skips ""); errors name
 * FILE:LINE.
 */
#define _XOPEN_SOURCE 700
#include <cjson/cJSON.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_cli.h"
#include "lt_export.h"
#include "lt_fs.h"
#include "lt_json.h"
#include "lt_model.h"
#include "lt_model_spec.h"
#include "lt_safetensors.h"
#include "lt_tok_vocab.h"

typedef struct vocab_opts {
    char *model, *tokens, *out;
    long pad;
    int special, overwrite, help;
    char **pos;
    int npos;
} vocab_opts;

#define F(x) offsetof(vocab_opts, x)
static const lt_optdef OPTS[] = {
    {.name = "model", .k = LT_OPT_STR, .off = F(model), .meta = "DIR", .required = 1,
     .help = "the Hugging Face model folder (config.json, safetensors, tokenizer.json)"},
    {.name = "tokens", .k = LT_OPT_STR, .off = F(tokens), .meta = "FILE", .required = 1,
     .help = "the tokens to add, one per line (UTF-8, verbatim; empty lines skipped)"},
    {.name = "out", .k = LT_OPT_STR, .off = F(out), .meta = "DIR", .required = 1,
     .help = "the extended model's folder (written whole, or not at all)"},
    {.name = "pad-to-multiple", .k = LT_OPT_LONG, .off = F(pad), .def = "0", .meta = "N", .lo = 0, .hi = 1 << 20,
     .help = "round the embedding rows up to a multiple of N (resize_token_embeddings' pad_to_multiple_of); 0 = no"},
    {.name = "special", .k = LT_OPT_FLAG, .off = F(special), .def = "false",
     .help = "add them as special tokens (add_tokens(..., special_tokens=True))"},
    {.name = "overwrite", .k = LT_OPT_FLAG, .off = F(overwrite), .def = "false",
     .help = "replace --out if it exists and is not empty"},
};
static const lt_optset SET = {
    .cmd = "vocab",
    .usage = "usage: luxtrain vocab add --model DIR --tokens FILE --out DIR [--pad-to-multiple N] [--special]\n"
             "Adds the tokens as transformers' tokenizer.add_tokens does and resizes the embeddings as\n"
             "resize_token_embeddings(len(tokenizer), pad_to_multiple_of=N): new rows of embed_tokens (and an\n"
             "untied lm_head) are the mean of the old rows (docs/vocab.md).\n",
    .defs = OPTS,
    .n = sizeof OPTS / sizeof OPTS[0],
    .off_help = F(help),
    .off_pos = F(pos),
    .off_npos = F(npos),
    .pos_min = 1,
    .pos_max = 1,
    .pos_meta = "add",
};
#undef F

/* tokens file -> array of strings (lines), errors FILE:LINE */
static lt_status read_tokens(const char *path, char ***out, size_t *n_out, size_t *n_empty, lt_err *err) {
    char *text;
    size_t len;
    lt_status st = lt_read_file(path, &text, &len, err);
    if (st) return st;
    size_t cap = 64, n = 0;
    char **v = malloc(cap * sizeof *v);
    *n_empty = 0;
    if (!v) {
        free(text);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t line = 0;
    for (size_t p = 0; p < len;) {
        line++;
        const char *nl = memchr(text + p, '\n', len - p);
        size_t e = nl ? (size_t)(nl - text) : len, next = nl ? e + 1 : len;
        if (e > p && text[e - 1] == '\r') e--;
        size_t l = e - p;
        if (memchr(text + p, 0, l)) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s:%zu: the token holds a NUL byte", path, line);
            break;
        }
        size_t bad = lt_utf8_invalid_at(text + p, l);
        if (bad < l) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s:%zu: invalid UTF-8 at byte %zu of the line (tokens must be UTF-8)",
                         path, line, bad + 1);
            break;
        }
        if (memchr(text + p, '\r', l)) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s:%zu: a carriage return inside the token", path, line);
            break;
        }
        p = next;
        if (l == 0) {
            (*n_empty)++;
            continue;
        }
        if (n == cap) {
            char **nv = realloc(v, (cap *= 2) * sizeof *nv);
            if (!nv) {
                st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            v = nv;
        }
        if (!(v[n] = malloc(l + 1))) {
            st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        memcpy(v[n], text + e - l, l);
        v[n++][l] = 0;
    }
    free(text);
    if (!st && n == 0) st = lt_fail(err, LT_ERR_INVALID, "%s: no tokens (one token per line expected)", path);
    if (st) {
        for (size_t i = 0; i < n; i++) free(v[i]);
        free(v);
        return st;
    }
    *out = v;
    *n_out = n;
    return LT_OK;
}

typedef struct {
    const lt_st_model *stm;
    const lt_export_tensor *ts;
    int64_t old_rows;
} fill_ctx;

static int is_vocab_tensor(const char *name) {
    return !strcmp(name, "model.embed_tokens.weight") || !strcmp(name, "lm_head.weight");
}

static lt_status fill(void *vctx, size_t i, float *dst, lt_err *err) {
    fill_ctx *c = vctx;
    const lt_export_tensor *t = &c->ts[i];
    const lt_st_tensor *src = lt_st_model_find(c->stm, t->name);
    if (!src) return lt_fail(err, LT_ERR_FORMAT, "vocab: tensor '%s' is missing", t->name);
    if (!is_vocab_tensor(t->name)) return lt_st_to_f32(src, dst, src->numel, err);
    float *old = malloc(src->numel * sizeof *old);
    if (!old) return lt_fail(err, LT_ERR_NOMEM, "vocab: out of memory for '%s'", t->name);
    lt_status st = lt_st_to_f32(src, old, src->numel, err);
    if (!st) lt_embed_resize_rows(old, c->old_rows, t->shape[1], dst, t->shape[0]);
    free(old);
    return st;
}

/* DIR/name read into a string (NULL, no error, when absent) */
static lt_status read_opt(const char *dir, const char *name, char **text, size_t *len, lt_err *err) {
    char p[4096];
    *text = NULL;
    *len = 0;
    if (!lt_path_join(p, sizeof p, dir, name)) return lt_fail(err, LT_ERR_INVALID, "%s: path too long", dir);
    if (!lt_file_exists(p)) return LT_OK;
    return lt_read_file(p, text, len, err);
}

static lt_status write_in(const char *dir, const char *name, const char *text, size_t len, lt_err *err) {
    char p[4096];
    if (!lt_path_join(p, sizeof p, dir, name)) return lt_fail(err, LT_ERR_INVALID, "%s: path too long", dir);
    return lt_write_file_atomic(p, text, len, err);
}

/* config.json with vocab_size replaced */
static lt_status new_config(const char *model, int64_t rows, char **out, size_t *out_len, lt_err *err) {
    char *text;
    size_t len;
    char name[4096];
    lt_path_join(name, sizeof name, model, "config.json");
    lt_status st = lt_read_file(name, &text, &len, err);
    if (st) return st;
    int found;
    size_t b0, b1;
    if (!(st = lt_json_member_span(text, len, name, "vocab_size", &found, &b0, &b1, err)) && !found)
        st = lt_fail(err, LT_ERR_FORMAT, "%s: no top-level vocab_size", name);
    if (!st) {
        char num[32];
        int k = snprintf(num, sizeof num, "%lld", (long long)rows);
        if (!(*out = lt_text_splice(text, len, b0, b1, num, (size_t)k, out_len)))
            st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", name);
    }
    free(text);
    return st;
}

/* tokenizer_config.json with added_tokens_decoder rewritten (when present) */
static lt_status new_tok_config(const char *text, size_t len, const char *name, const lt_tok_add_result *r, char **out,
                                size_t *out_len, lt_err *err) {
    int found;
    size_t b0, b1;
    *out = NULL;
    lt_status st = lt_json_member_span(text, len, name, "added_tokens_decoder", &found, &b0, &b1, err);
    if (st || !found) return st;
    size_t ls = b0; /* the member's indentation: spaces before its key on its line */
    while (ls > 0 && text[ls - 1] != '\n') ls--;
    int indent = 0;
    while (ls + (size_t)indent < b0 && text[ls + indent] == ' ') indent++;
    lt_sbuf b = {0};
    if (!lt_tok_added_decoder_json(&b, r->added, r->n_entries, indent) ||
        !(*out = lt_text_splice(text, len, b0, b1, b.s, b.n, out_len)))
        st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", name);
    free(b.s);
    return st;
}

/* LT_VOCAB_RECORD: the new ids (and those a record of the source lists, when
 * the source was made by vocab add too), for `train --train-embeddings new` */
static lt_status write_record(const char *model, const char *dir, const lt_tok_add_result *r, size_t n, int64_t old_rows,
                              int64_t rows, lt_err *err) {
    char path[4096];
    cJSON *prev = NULL, *o = cJSON_CreateObject(), *ids = cJSON_AddArrayToObject(o, "added_ids"), *x;
    lt_status st = LT_OK;
    int64_t base = old_rows;
    lt_path_join(path, sizeof path, model, LT_VOCAB_RECORD);
    if (lt_file_exists(path) && !(st = lt_json_load_file(path, &prev, err))) {
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(prev, "added_ids")) {
            int64_t v;
            if (lt_json_int64(x, &v) && v >= 0 && v < rows) cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)v));
        }
        int64_t b;
        if (lt_json_int64(cJSON_GetObjectItemCaseSensitive(prev, "base_vocab_size"), &b)) base = b;
    }
    for (size_t i = 0; i < n && !st; i++)
        if (r->what[i] == LT_TOK_ADD_NEW) cJSON_AddItemToArray(ids, cJSON_CreateNumber(r->ids[i]));
    cJSON_AddNumberToObject(o, "base_vocab_size", (double)base);
    cJSON_AddNumberToObject(o, "vocab_size", (double)rows);
    char *text = st ? NULL : cJSON_Print(o);
    if (!st && !text) st = lt_fail(err, LT_ERR_NOMEM, "vocab: out of memory");
    if (!st) st = write_in(dir, LT_VOCAB_RECORD, text, strlen(text), err);
    free(text);
    cJSON_Delete(o);
    cJSON_Delete(prev);
    return st;
}

static lt_status vocab_add(const vocab_opts *a, lt_err *err) {
    char **toks = NULL, tok_path[4096], tmp[4096], tag[128];
    size_t n_tok = 0, n_empty = 0, n_specs = 0;
    char *tok_text = NULL, *cfg_text = NULL, *tc_text = NULL, *tc_new = NULL;
    size_t tok_len = 0, cfg_len = 0, tc_len = 0, tc_new_len = 0;
    lt_tok_add_result r;
    memset(&r, 0, sizeof r);
    lt_st_model *stm = NULL;
    lt_param_spec *old_specs = NULL, *specs = NULL;
    lt_export_tensor *ts = NULL;
    lt_config cfg;
    int made_tmp = 0;
    lt_status st;
    if ((st = read_tokens(a->tokens, &toks, &n_tok, &n_empty, err))) return st;
    lt_path_join(tok_path, sizeof tok_path, a->model, "tokenizer.json");
    if ((st = lt_config_load(a->model, &cfg, err))) goto done;
    if (cfg.wrap) { /* its vocab_size is text_config's, and the projector's image tokens sit past it */
        st = lt_fail(err, LT_ERR_UNSUPPORTED, "vocab add: %s is a %s; adding tokens to it is not supported",
                     a->model, cfg.architecture);
        goto done;
    }
    if ((st = lt_read_file(tok_path, &tok_text, &tok_len, err))) goto done;
    if ((st = lt_tok_add_tokens(tok_text, tok_len, tok_path, (const char *const *)toks, n_tok, a->special, &r, err)))
        goto done;
    int64_t old_rows = cfg.vocab_size, rows = lt_vocab_resized_rows(r.new_len, (int)a->pad);
    if (rows > INT_MAX / 2) {
        st = lt_fail(err, LT_ERR_RANGE, "vocab: %lld rows is too many", (long long)rows);
        goto done;
    }
    for (size_t i = 0; i < n_tok; i++)
        if (r.ids[i] >= rows) {
            st = lt_fail(err, LT_ERR_RANGE, "vocab: token '%s' got id %d, beyond the %lld embedding rows", toks[i],
                         (int)r.ids[i], (long long)rows);
            goto done;
        }
    /* tensors: the checkpoint checked against the old config, written with the new one */
    if ((st = lt_model_open_weights(a->model, &cfg, &stm, NULL, err)) || (st = lt_model_param_specs(&cfg, &old_specs, &n_specs, err)) ||
        (st = lt_model_check_tensors(stm, old_specs, n_specs, cfg.tie_word_embeddings, err)))
        goto done;
    lt_config ncfg = cfg;
    ncfg.vocab_size = (int)rows;
    size_t n2;
    if ((st = lt_model_param_specs(&ncfg, &specs, &n2, err))) goto done;
    if (!(ts = calloc(n2, sizeof *ts))) {
        st = lt_fail(err, LT_ERR_NOMEM, "vocab: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n2; i++) {
        const lt_st_tensor *t = lt_st_model_find(stm, specs[i].name);
        ts[i].name = specs[i].name;
        ts[i].ndim = specs[i].ndim;
        ts[i].shape[0] = specs[i].shape[0];
        ts[i].shape[1] = specs[i].shape[1];
        ts[i].dtype = t->dtype;
    }
    if ((st = new_config(a->model, rows, &cfg_text, &cfg_len, err)) ||
        (st = read_opt(a->model, "tokenizer_config.json", &tc_text, &tc_len, err)))
        goto done;
    if (tc_text && (st = new_tok_config(tc_text, tc_len, "tokenizer_config.json", &r, &tc_new, &tc_new_len, err)))
        goto done;
    /* everything into <out>.tmp-<tag>, then renamed */
    {
        size_t ol = strlen(a->out);
        while (ol > 1 && a->out[ol - 1] == '/') ol--;
        lt_tmp_tag(tag, sizeof tag);
        if (snprintf(tmp, sizeof tmp, "%.*s.tmp-%s", (int)ol, a->out, tag) >= (int)sizeof tmp) {
            st = lt_fail(err, LT_ERR_INVALID, "%s: path too long", a->out);
            goto done;
        }
    }
    made_tmp = 1;
    fill_ctx fc = {stm, ts, old_rows};
    if ((st = lt_export_hf_stream(tmp, a->model, ts, n2, 0, fill, &fc, NULL, NULL, err))) goto done;
    if ((st = write_in(tmp, "config.json", cfg_text, cfg_len, err)) ||
        (st = write_in(tmp, "tokenizer.json", r.json, r.json_len, err)) ||
        (tc_new && (st = write_in(tmp, "tokenizer_config.json", tc_new, tc_new_len, err))))
        goto done;
    {
        char src[4096], dst[4096];
        lt_path_join(src, sizeof src, a->model, "chat_template.jinja");
        lt_path_join(dst, sizeof dst, tmp, "chat_template.jinja");
        if (lt_file_exists(src) && (st = lt_fs_copy_file(src, dst, err))) goto done;
    }
    if ((st = write_record(a->model, tmp, &r, n_tok, old_rows, rows, err))) goto done;
    if ((st = lt_fs_replace_dir(tmp, a->out, err))) goto done;
    made_tmp = 0;
    /* the report */
    size_t cnt[4] = {0};
    int32_t lo = INT32_MAX, hi = -1;
    for (size_t i = 0; i < n_tok; i++) {
        cnt[r.what[i]]++;
        if (r.what[i] == LT_TOK_ADD_NEW) {
            lo = r.ids[i] < lo ? r.ids[i] : lo;
            hi = r.ids[i] > hi ? r.ids[i] : hi;
        }
    }
    printf("vocab: %zu tokens read from %s (%zu empty lines skipped): add_tokens returned %zu\n", n_tok, a->tokens,
           n_empty, r.n_added);
    if (cnt[LT_TOK_ADD_NEW]) printf("  %zu new ids %d..%d\n", cnt[LT_TOK_ADD_NEW], (int)lo, (int)hi);
    if (cnt[LT_TOK_ADD_UNCHANGED]) printf("  %zu already added tokens (or repeated lines): unchanged\n", cnt[3]);
    for (size_t i = 0, shown = 0; i < n_tok; i++) {
        if (r.what[i] != LT_TOK_ADD_IN_VOCAB && r.what[i] != LT_TOK_ADD_REFLAGGED) continue;
        if (shown++ == 10) {
            printf("  ...\n");
            break;
        }
        if (r.what[i] == LT_TOK_ADD_IN_VOCAB)
            printf("  note: '%s' is vocabulary id %d: no new row; tokenizers now matches it as an added token\n",
                   toks[i], (int)r.ids[i]);
        else
            printf("  note: '%s' was an added token (id %d) with other flags: its flags are replaced (special %s)\n",
                   toks[i], (int)r.ids[i], a->special ? "true" : "false");
    }
    printf("  len(tokenizer) %lld -> %lld; embedding rows %lld -> %lld%s%s\n", (long long)r.old_len,
           (long long)r.new_len, (long long)old_rows, (long long)rows,
           cfg.tie_word_embeddings ? " (tied lm_head)" : " (embed_tokens and lm_head)",
           rows < old_rows ? "; rows cut, as resize_token_embeddings(len(tokenizer)) does" : "");
    printf("vocab: wrote %s\n", a->out);
done:
    if (made_tmp) lt_fs_rm_rf(tmp);
    for (size_t i = 0; i < n_tok; i++) free(toks[i]);
    free(toks);
    free(tok_text);
    free(cfg_text);
    free(tc_text);
    free(tc_new);
    free(ts);
    free(specs);
    free(old_specs);
    lt_tok_add_result_free(&r);
    if (stm) lt_st_close_model(stm);
    return st;
}

int lt_cmd_vocab(int argc, char **argv) {
    vocab_opts o = {0};
    int rc = lt_opts_cli(&SET, argc, argv, &o);
    if (rc >= 0) {
        lt_opts_free(&SET, &o);
        return rc;
    }
    char rm[PATH_MAX], ro[PATH_MAX];
    lt_err err = {{0}};
    rc = 2;
    if (strcmp(o.pos[0], "add"))
        fprintf(stderr, "vocab: unknown subcommand '%s' (expected: add)\n", o.pos[0]);
    else if (realpath(o.model, rm) && realpath(o.out, ro) && !strcmp(rm, ro))
        fprintf(stderr, "vocab add: --out must not be the --model folder\n");
    else if (lt_file_exists(o.out) && !lt_is_dir(o.out))
        fprintf(stderr, "vocab add: --out %s exists and is not a folder\n", o.out);
    else if (!o.overwrite && lt_fs_nonempty_dir(o.out))
        fprintf(stderr, "vocab add: --out %s exists and is not empty; use --overwrite to replace it\n", o.out);
    else if (vocab_add(&o, &err)) {
        fprintf(stderr, "vocab add: %s\n", err.msg);
        rc = 1;
    } else
        rc = 0;
    lt_opts_free(&SET, &o);
    return rc;
}
