/*
 * lt_cmd_generate.c -- `luxtrain generate`: render a one-turn conversation
 * with the model's chat template (data/lt_chat.h) up to the assistant's
 * header (the generation prompt), then decode with the KV cache
 * (lt_model_decode): greedy by default, or temperature / top-p sampling from
 * --seed. Stops at the template's end-of-turn token (or the model's eos) and
 * streams the text to stdout as it is produced.
 *
 * The generation prompt is what apply_chat_template(add_generation_prompt=
 * True) renders (lt_chat_render_prompt).
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_chat.h"
#include "lt_cli.h"
#include "lt_eval_adapter.h"
#include "lt_model.h"
#include "lt_tokenizer.h"

typedef struct gen_opts {
    char *model, *adapter, *prompt, *system, *tmpl, *device, *quantize;
    long max_new, seed, threads;
    double temperature, top_p;
    int help;
} gen_opts;

static void template_help(FILE *f) {
    fprintf(f, "\nchat templates: %s (default: recognised from tokenizer_config.json)\n", lt_chat_template_names());
}

#define F(x) offsetof(gen_opts, x)
static const lt_optdef OPTS[] = {
    {.name = "model", .k = LT_OPT_STR, .off = F(model), .meta = "DIR", .required = 1,
     .help = "Hugging Face model folder (with tokenizer.json)"},
    {.name = "adapter", .k = LT_OPT_STR, .off = F(adapter), .meta = "DIR",
     .help = "PEFT LoRA adapter (merged into the weights; unmerged with --quantize nf4)"},
    LT_EVAL_QUANTIZE_ROW(gen_opts, quantize),
    {.name = "prompt", .k = LT_OPT_STR, .off = F(prompt), .meta = "TEXT", .required = 1, .help = "the user message"},
    {.name = "system", .k = LT_OPT_STR, .off = F(system), .meta = "TEXT", .help = "a system message"},
    {.name = "template", .k = LT_OPT_STR, .off = F(tmpl), .meta = "NAME", .help = "chat template (listed below)"},
    {.name = "max-new-tokens", .k = LT_OPT_LONG, .off = F(max_new), .def = "256", .meta = "N", .lo = 1, .hi = 1 << 20,
     .help = "at most N generated tokens"},
    {.name = "temperature", .k = LT_OPT_DBL, .off = F(temperature), .def = "0", .meta = "T", .lo = 0, .hi = LT_OPT_BIG,
     .help = "0 = greedy; > 0 samples"},
    {.name = "top-p", .k = LT_OPT_DBL, .off = F(top_p), .def = "1", .meta = "P", .lo = 0, .hi = 1, .lo_open = 1,
     .help = "nucleus sampling mass"},
    {.name = "seed", .k = LT_OPT_LONG, .off = F(seed), .def = "0", .meta = "S", .lo = 0, .hi = LT_OPT_BIG,
     .help = "sampling seed"},
    LT_OPT_ROW_DEVICE(gen_opts, device, "auto"),
    LT_OPT_ROW_THREADS(gen_opts, threads),
};
static const lt_optset SET = {
    .cmd = "generate",
    .usage = "usage: luxtrain generate --model DIR --prompt TEXT [options]\n"
             "Answers one user message with the model's chat template (KV cache; greedy or sampled),\n"
             "streaming the text to stdout.\n",
    .defs = OPTS,
    .n = sizeof OPTS / sizeof OPTS[0],
    .off_help = F(help),
    .more_help = template_help,
};
#undef F

/* tokenizer_config.json: bos/eos strings and the chat template */
static const char *tok_string(const cJSON *x) {
    if (cJSON_IsString(x)) return x->valuestring;
    const cJSON *c = cJSON_IsObject(x) ? cJSON_GetObjectItemCaseSensitive(x, "content") : NULL;
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

static lt_status resolve_template(const char *model, const char *name, lt_chat_template *tpl, char *eos, size_t cap,
                                  lt_err *err) {
    char path[4096];
    cJSON *j = NULL;
    eos[0] = 0;
    if (lt_path_join(path, sizeof path, model, "tokenizer_config.json") && lt_file_exists(path)) {
        char *data = NULL;
        size_t len = 0;
        lt_status st = lt_read_file(path, &data, &len, err);
        if (st) return st;
        j = cJSON_ParseWithLength(data, len);
        free(data);
        if (!j) return lt_fail(err, LT_ERR_FORMAT, "%s: not valid JSON", path);
    }
    lt_status st;
    if (name) {
        st = lt_chat_template_by_name(name, tpl, err);
    } else {
        char *jinja = NULL; /* tokenizer_config.json's, or chat_template.jinja */
        st = lt_chat_template_text(path, &jinja, err);
        if (!st)
            st = jinja ? lt_chat_template_detect(jinja, tpl, err)
                       : lt_fail(err, LT_ERR_INVALID, "%s has no chat_template; name one with --template (%s)", path,
                                 lt_chat_template_names());
        free(jinja);
    }
    if (!st && j) {
        const char *b = tok_string(cJSON_GetObjectItemCaseSensitive(j, "bos_token"));
        const char *e = tok_string(cJSON_GetObjectItemCaseSensitive(j, "eos_token"));
        lt_chat_template_set_tokens(tpl, b, e);
        if (e) snprintf(eos, cap, "%s", e);
    }
    cJSON_Delete(j);
    return st;
}

typedef struct cand {
    double p;
    int32_t id;
} cand;

static int cand_cmp(const void *x, const void *y) { /* probability descending, then id */
    const cand *a = x, *b = y;
    if (a->p != b->p) return a->p < b->p ? 1 : -1;
    return (a->id > b->id) - (a->id < b->id);
}

/* argmax, or a draw from softmax(logits / temperature) restricted to the
 * smallest set of most likely tokens whose mass reaches top_p */
static int32_t pick(const float *logits, int V, double temperature, double top_p, lt_rng *rng, cand *c) {
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (!(temperature > 0)) return best;
    double z = 0;
    for (int i = 0; i < V; i++) {
        c[i].id = i;
        z += (c[i].p = exp(((double)logits[i] - logits[best]) / temperature));
    }
    for (int i = 0; i < V; i++) c[i].p /= z;
    qsort(c, (size_t)V, sizeof *c, cand_cmp);
    int n = 0;
    double mass = 0;
    while (n < V && (n == 0 || mass < top_p)) mass += c[n++].p;
    double u = (double)lt_rng_uniform(rng) * mass, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += c[i].p;
        if (u < acc) return c[i].id;
    }
    return c[n - 1].id;
}

static int run_generate(void *arg) {
    const gen_opts *o = arg;
    lt_err err = {{0}};
    lt_tokenizer *tok = NULL;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_chat_text ct = {0};
    lt_tok_ids ids = {0}, out = {0};
    float *logits = NULL;
    cand *cands = NULL;
    char *text = NULL;
    int rc = 1;
    lt_status st;
    lt_chat_template tpl;
    char eos_str[128];
    if ((st = lt_tok_load(o->model, &tok, &err))) goto fail;
    if ((st = resolve_template(o->model, o->tmpl, &tpl, eos_str, sizeof eos_str, &err))) goto fail;
    lt_chat_msg msgs[2];
    size_t nm = 0;
    if (o->system) msgs[nm++] = (lt_chat_msg){LT_ROLE_SYSTEM, o->system, strlen(o->system)};
    msgs[nm++] = (lt_chat_msg){LT_ROLE_USER, o->prompt, strlen(o->prompt)};
    if ((st = lt_chat_render_prompt(&tpl, msgs, nm, &ct, &err))) goto fail; /* add_generation_prompt=True */
    if ((st = lt_tok_encode(tok, ct.text, ct.len, 0, &ids, &err))) goto fail;
    int32_t stop[3] = {lt_tok_token_to_id(tok, lt_chat_end_of_turn(&tpl)),
                       eos_str[0] ? lt_tok_token_to_id(tok, eos_str) : -1, -1};

    if ((st = lt_backend_create(o->device, (int)o->threads, &be, &err))) goto fail;
    if ((st = lt_eval_load_model(o->model, o->adapter, o->quantize, be, &m, &err))) goto fail;
    const lt_config *cfg = lt_model_config(m);
    stop[2] = cfg->eos_token_id;
    int V = cfg->vocab_size;
    long max_len = (long)ids.n + o->max_new;
    if (max_len > cfg->max_position_embeddings) {
        max_len = cfg->max_position_embeddings;
        if ((long)ids.n < max_len)
            fprintf(stderr, "generate: at most %ld new tokens fit: the prompt has %zu tokens and the model takes %d\n",
                    max_len - (long)ids.n, ids.n, cfg->max_position_embeddings);
    }
    if ((long)ids.n >= max_len) {
        lt_fail(&err, LT_ERR_RANGE, "the prompt has %zu tokens; the model takes at most %d", ids.n,
                cfg->max_position_embeddings);
        goto fail;
    }
    for (size_t i = 0; i < ids.n; i++)
        if (ids.ids[i] >= V) {
            lt_fail(&err, LT_ERR_RANGE, "prompt token id %d is outside the model's vocabulary (%d)", ids.ids[i], V);
            goto fail;
        }
    logits = malloc((size_t)V * sizeof *logits);
    cands = malloc((size_t)V * sizeof *cands);
    if (!logits || !cands) {
        lt_fail(&err, LT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = lt_model_kv_init(m, (int)max_len, &err))) goto fail;
    lt_rng rng;
    lt_rng_seed(&rng, (uint64_t)o->seed);
    if ((st = lt_model_decode(m, ids.ids, (int)ids.n, logits, 0, &err))) goto fail;
    size_t printed = 0;
    for (long k = 0; k < o->max_new && (long)ids.n + k < max_len; k++) {
        int32_t t = pick(logits, V, o->temperature, o->top_p, &rng, cands);
        if (t == stop[0] || t == stop[1] || t == stop[2]) break;
        if ((st = lt_tok_ids_push(&out, t, -1, &err))) goto fail;
        size_t len = 0;
        free(text);
        text = NULL;
        if ((st = lt_tok_decode(tok, out.ids, out.n, 1, &text, &len, &err))) goto fail;
        /* hold back a trailing U+FFFD: it may be an incomplete byte sequence */
        size_t show = len;
        if (show >= 3 && !memcmp(text + show - 3, "\xEF\xBF\xBD", 3)) show -= 3;
        if (show > printed) {
            fwrite(text + printed, 1, show - printed, stdout);
            fflush(stdout);
            printed = show;
        }
        if ((long)ids.n + k + 1 >= max_len) break;
        if ((st = lt_model_decode(m, &t, 1, logits, 0, &err))) goto fail;
    }
    if (text) {
        size_t len = strlen(text);
        if (len > printed) fwrite(text + printed, 1, len - printed, stdout);
    }
    fputc('\n', stdout);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "generate: %s\n", err.msg);
done:
    free(text);
    free(logits);
    free(cands);
    lt_tok_ids_free(&ids);
    lt_tok_ids_free(&out);
    lt_chat_text_free(&ct);
    lt_model_free(m);
    if (be) be->destroy(be);
    lt_tok_free(tok);
    return rc;
}

int lt_cmd_generate(int argc, char **argv) {
    gen_opts o = {0};
    return lt_opts_main(&SET, argc, argv, &o, run_generate);
}
