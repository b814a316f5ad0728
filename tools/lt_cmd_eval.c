/*
 * lt_cmd_eval.c -- `luxtrain eval` and `luxtrain plot`.
 *
 * eval has three modes, picked by the options:
 *   --tasks FILE.jsonl   multiple choice by log-likelihood (lt_eval.h)
 *   --data SHARD...      loss of a model on token shards (one JSON line:
 *                        loss, target_tokens, ppl)
 *   --compare A B        two evaluations side by side with McNemar p-values
 * plot draws the loss curves of run folders (lt_plot.h).
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt_chat.h"
#include "lt_cli.h"
#include "lt_eval.h"
#include "lt_eval_adapter.h"
#include "lt_json.h"
#include "lt_loader.h"
#include "lt_model.h"
#include "lt_plot.h"
#include "lt_tokenizer.h"

/* ---------------------------------------------------------------- progress */

typedef struct {
    int tty;
    double t0, last;
} progress_state;

static void progress_cb(void *user, size_t done, size_t total) {
    progress_state *p = user;
    if (!p->tty) return;
    double now = lt_now_s();
    if (done < total && now - p->last < 0.1) return; /* redraw at most 10 times a second */
    p->last = now;
    int w = 30, k = total ? (int)((double)w * (double)done / (double)total) : w;
    char bar[64];
    for (int i = 0; i < w; i++) bar[i] = i < k ? '=' : (i == k ? '>' : ' ');
    bar[w] = 0;
    fprintf(stderr, "\reval [%s] %3.0f%% %zu/%zu requests %.1f s", bar, total ? 100.0 * done / total : 100.0, done,
            total, lt_now_s() - p->t0);
    if (done == total) fprintf(stderr, "\n");
    fflush(stderr);
}

/* ----------------------------------------------------------------- helpers */

/* tokenizer_config.json next to a tokenizer path (file or folder) */
static void tokenizer_config_path(const char *tok, char *out, size_t cap) {
    if (lt_is_dir(tok)) {
        if (!lt_path_join(out, cap, tok, "tokenizer_config.json")) out[0] = 0;
        return;
    }
    const char *slash = strrchr(tok, '/');
    if (slash)
        snprintf(out, cap, "%.*s/tokenizer_config.json", (int)(slash - tok), tok);
    else
        snprintf(out, cap, "tokenizer_config.json");
}

static char *read_chat_template(const char *config_path, char *bos, char *eos, size_t cap, lt_err *err) {
    cJSON *root = NULL;
    bos[0] = eos[0] = 0;
    if (lt_file_exists(config_path)) {
        if (lt_json_load_file(config_path, &root, err) != LT_OK) return NULL;
        const char *keys[2] = {"bos_token", "eos_token"};
        char *outs[2] = {bos, eos};
        for (int k = 0; k < 2; k++) {
            cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
            if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
            if (cJSON_IsString(v)) snprintf(outs[k], cap, "%s", v->valuestring);
        }
        cJSON_Delete(root);
    }
    char *res = NULL; /* the config's chat_template, or chat_template.jinja */
    if (lt_chat_template_text(config_path, &res, err) != LT_OK) return NULL;
    if (!res) lt_fail(err, LT_ERR_UNSUPPORTED, "%s: no \"chat_template\" (give --template NAME)", config_path);
    return res;
}

typedef struct {
    char *model, *tasks, *tokenizer, *adapter, *fewshot, *fewshot_prefix, *delimiter, *device, *output;
    char *tmpl, *prefix, *metric_name, *quantize;
    char **compare, **data;
    int n_compare, n_data, chat, metric, allow_tok_mismatch, help;
    long seq_len, batch, threads;
    double alpha;
} eval_opts;

#define F(x) offsetof(eval_opts, x)
static const char *const METRICS[] = {"acc", "acc_norm", "acc_bytes", NULL}; /* lt_eval_metric_names' order */
static const lt_optdef EVAL_OPTS[] = {
    {.name = "model", .k = LT_OPT_STR, .off = F(model), .meta = "DIR", .help = "model folder (--tasks, --data)"},
    {.name = "Multiple choice, scored as lm-evaluation-harness does (docs/evaluation.md)", .k = LT_OPT_SECTION},
    {.name = "tasks", .k = LT_OPT_STR, .off = F(tasks), .meta = "FILE.jsonl",
     .help = "{\"id\", \"context\"|\"question\", \"choices\": [..], \"answer\": i, \"category\"} per line"},
    {.name = "tokenizer", .k = LT_OPT_STR, .off = F(tokenizer), .meta = "PATH",
     .help = "tokenizer.json or its folder (default: the model folder); --data: the shards must have been made by it"},
    {.name = "adapter", .k = LT_OPT_STR, .off = F(adapter), .meta = "DIR",
     .help = "PEFT LoRA adapter, merged into the weights for the evaluation (unmerged with --quantize nf4)"},
    LT_EVAL_QUANTIZE_ROW(eval_opts, quantize),
    {.name = "chat", .k = LT_OPT_FLAG, .off = F(chat), .help = "render each context as a user turn of the chat template"},
    {.name = "template", .k = LT_OPT_STR, .off = F(tmpl), .meta = "NAME",
     .help = "chat template (default: detected from tokenizer_config.json)"},
    {.name = "fewshot", .k = LT_OPT_STR, .off = F(fewshot), .meta = "FILE.jsonl",
     .help = "solved examples prepended to every context"},
    {.name = "fewshot-prefix", .k = LT_OPT_STR, .off = F(fewshot_prefix), .meta = "TEXT",
     .help = "literal text prepended to every context"},
    {.name = "delimiter", .k = LT_OPT_STR, .off = F(delimiter), .meta = "TEXT",
     .help = "between context and choice (default \" \"; \"\" with --chat)"},
    {.name = "output", .k = LT_OPT_STR, .off = F(output), .meta = "FILE.json",
     .help = "results: overall, per category, per question"},
    {.name = "Loss on token shards", .k = LT_OPT_SECTION},
    {.name = "data", .k = LT_OPT_LIST, .off = F(data), .off_n = F(n_data), .meta = "SHARD...",
     .help = "shard files or folders"},
    {.name = "prefix", .k = LT_OPT_STR, .off = F(prefix), .meta = "P", .help = "shard files in folders (default train-)"},
    {.name = "allow-tokenizer-mismatch", .k = LT_OPT_FLAG, .off = F(allow_tok_mismatch),
     .help = "evaluate shards made by another tokenizer (a warning)"},
    {.name = "Both", .k = LT_OPT_SECTION},
    {.name = "seq-len", .k = LT_OPT_LONG, .off = F(seq_len), .meta = "N", .lo = 2, .hi = 1 << 20,
     .help = "sequence length; longer requests are cut from the left (default: min(max_position_embeddings, 2048))"},
    {.name = "batch", .k = LT_OPT_LONG, .off = F(batch), .def = "1", .meta = "N", .lo = 1, .hi = 1 << 20,
     .help = "sequences per forward pass"},
    LT_OPT_ROW_DEVICE(eval_opts, device, "auto"),
    LT_OPT_ROW_THREADS(eval_opts, threads),
    {.name = "Paired comparison (exact McNemar test)", .k = LT_OPT_SECTION},
    {.name = "compare", .k = LT_OPT_LIST, .off = F(compare), .off_n = F(n_compare), .meta = "A B",
     .help = "two result files, or run folders holding eval.json (or eval*.json)"},
    {.name = "metric", .k = LT_OPT_CHOICE, .off = F(metric_name), .def = "acc", .meta = "M", .choices = METRICS,
     .help = "the per-question score compared"},
    {.name = "alpha", .k = LT_OPT_DBL, .off = F(alpha), .def = "0.05", .meta = "A", .lo = 0, .hi = 1, .lo_open = 1,
     .hi_open = 1, .help = "significance level"},
};
static const lt_optset EVAL_SET = {
    .cmd = "eval",
    .usage = "usage: luxtrain eval --model DIR --tasks FILE.jsonl [options]   multiple choice by log-likelihood\n"
             "       luxtrain eval --model DIR --data SHARD.h5... [options]    loss on token shards\n"
             "       luxtrain eval --compare A B [--metric M] [--alpha A]      paired comparison of two results\n",
    .defs = EVAL_OPTS,
    .n = sizeof EVAL_OPTS / sizeof EVAL_OPTS[0],
    .off_help = F(help),
};
#undef F

/* ------------------------------------------------------------ loss mode */

static int eval_loss(const eval_opts *o) {
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_loader *L = NULL;
    int rc = 1;
    if (lt_backend_create(o->device, (int)o->threads, &be, &err) != LT_OK) goto fail;
    if (lt_eval_load_model(o->model, o->adapter, o->quantize, be, &m, &err) != LT_OK) goto fail;
    const lt_config *cfg = lt_model_config(m);
    int T = (int)(o->seq_len > 0 ? o->seq_len : (cfg->max_position_embeddings < 2048 ? cfg->max_position_embeddings : 2048));
    int B = (int)(o->batch > 0 ? o->batch : 1);
    lt_loader_opts lo = {B, T, 0, 1, 0, 0, cfg->vocab_size};
    if (lt_loader_open((const char *const *)o->data, o->n_data, o->prefix, &lo, &L, &err) != LT_OK) goto fail;
    int checked = 0; /* the shards' tokenizer against --tokenizer (default: the model folder's) */
    if (lt_loader_check_tokenizer(L, o->tokenizer ? o->tokenizer : o->model, &checked, &err) != LT_OK) {
        if (!o->allow_tok_mismatch) goto fail;
        fprintf(stderr, "eval: warning (--allow-tokenizer-mismatch): %s\n", err.msg);
    }
    if (lt_model_plan(m, B, T, &err) != LT_OK) goto fail;
    double loss_sum = 0;
    int64_t n_targets = 0, steps = lt_loader_batches_per_epoch(L);
    progress_state ps = {isatty(2), lt_now_s(), 0};
    for (int64_t s = 0; s < steps; s++) {
        lt_loader_batch lb;
        if (lt_loader_next(L, &lb, &err) != LT_OK) goto fail;
        lt_step_result res;
        if (lt_model_step(m, &lb.batch, 0, 1.0, &res, &err) != LT_OK) goto fail;
        loss_sum += res.loss_sum;
        n_targets += res.n_targets;
        progress_cb(&ps, (size_t)(s + 1), (size_t)steps);
        if (lb.last_in_epoch) break;
    }
    if (n_targets == 0) {
        lt_fail(&err, LT_ERR_INVALID, "the shards hold no target tokens");
        goto fail;
    }
    double loss = loss_sum / (double)n_targets;
    if (!isfinite(loss)) {
        lt_fail(&err, LT_ERR_NONFINITE, "the loss is %g", loss);
        goto fail;
    }
    printf("{\"loss\": %.9g, \"target_tokens\": %lld, \"ppl\": %.9g, \"documents\": %lld, \"truncated\": %lld}\n",
           loss, (long long)n_targets, exp(loss), (long long)lt_loader_num_docs(L),
           (long long)lt_loader_num_truncated(L));
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "eval: %s\n", err.msg);
done:
    lt_loader_free(L);
    lt_model_free(m);
    if (be) be->destroy(be);
    return rc;
}

/* ------------------------------------------------------ multiple choice */

static int eval_tasks(const eval_opts *o) {
    lt_err err = {{0}};
    lt_eval_task task = {0}, shots = {0};
    lt_tokenizer *tok = NULL;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_eval_requests rq = {0};
    lt_eval_results res = {0};
    double *ll = NULL;
    char *prefix = NULL, *jinja = NULL;
    int rc = 1;
    double t0 = lt_now_s();
    const char *delim = o->delimiter ? o->delimiter : (o->chat ? "" : " ");
    const char *tokpath = o->tokenizer ? o->tokenizer : o->model;
    char tcfg[4096];
    tokenizer_config_path(tokpath, tcfg, sizeof tcfg);
    lt_chat_template tpl;

    if (lt_eval_task_load(o->tasks, &task, &err) != LT_OK) goto fail;
    if (o->fewshot) {
        if (lt_eval_task_load(o->fewshot, &shots, &err) != LT_OK) goto fail;
        if (lt_eval_fewshot_prefix(&shots, delim, &prefix, &err) != LT_OK) goto fail;
    } else if (o->fewshot_prefix) {
        prefix = strdup(o->fewshot_prefix);
    }
    if (o->chat) {
        if (o->tmpl) {
            if (lt_chat_template_by_name(o->tmpl, &tpl, &err) != LT_OK) goto fail;
        } else {
            char bos[64], eos[64];
            jinja = read_chat_template(tcfg, bos, eos, sizeof bos, &err);
            if (!jinja) goto fail;
            if (lt_chat_template_detect(jinja, &tpl, &err) != LT_OK) goto fail;
            lt_chat_template_set_tokens(&tpl, bos[0] ? bos : NULL, eos[0] ? eos : NULL);
        }
    }
    /* contexts: few-shot prefix, then the chat template */
    for (size_t q = 0; q < task.n; q++) {
        char *c = task.q[q].context, *nc = NULL;
        if (prefix) {
            size_t a = strlen(prefix), b = strlen(c);
            nc = malloc(a + b + 1);
            if (!nc) {
                lt_fail(&err, LT_ERR_NOMEM, "out of memory");
                goto fail;
            }
            memcpy(nc, prefix, a);
            memcpy(nc + a, c, b + 1);
            free(c);
            task.q[q].context = c = nc;
        }
    }
    if (o->chat && lt_eval_apply_chat(&task, &tpl, &err) != LT_OK) goto fail;

    if (lt_tok_load(tokpath, &tok, &err) != LT_OK) goto fail;
    if (lt_backend_create(o->device, (int)o->threads, &be, &err) != LT_OK) goto fail;
    if (lt_eval_load_model(o->model, o->adapter, o->quantize, be, &m, &err) != LT_OK) goto fail;
    const lt_config *cfg = lt_model_config(m);
    if (lt_tok_vocab_size(tok) > cfg->vocab_size) {
        lt_fail(&err, LT_ERR_INVALID, "the tokenizer has %d ids but the model's vocabulary is %d",
                (int)lt_tok_vocab_size(tok), cfg->vocab_size);
        goto fail;
    }
    int T = (int)(o->seq_len > 0 ? o->seq_len : (cfg->max_position_embeddings < 2048 ? cfg->max_position_embeddings : 2048));
    int B = (int)(o->batch > 0 ? o->batch : 1);
    lt_eval_encoder enc;
    if (lt_eval_encoder_init(&enc, tok, tcfg, cfg->bos_token_id, cfg->eos_token_id, &err) != LT_OK) goto fail;
    if (lt_eval_build_requests(&task, delim, &enc, T, &rq, &err) != LT_OK) goto fail;
    ll = malloc((rq.n ? rq.n : 1) * sizeof *ll);
    if (!ll) {
        lt_fail(&err, LT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    progress_state ps = {isatty(2), lt_now_s(), 0};
    int64_t stats[3];
    double ts = lt_now_s();
    if (lt_eval_score(m, &rq, B, T, ll, progress_cb, &ps, stats, &err) != LT_OK) goto fail;
    double score_s = lt_now_s() - ts;
    if (lt_eval_results_compute(&task, &rq, ll, &res, &err) != LT_OK) goto fail;

    size_t truncated = 0;
    for (size_t i = 0; i < rq.n; i++) truncated += rq.r[i].n_ctx + rq.r[i].n_cont > T + 1;
    printf("tasks %s: %zu questions, %zu requests (%zu cut from the left), %lld forward passes of %d x %d "
           "(%.0f%% of slots used), %.1f s, %.0f tokens/s\n",
           o->tasks, task.n, rq.n, truncated, (long long)stats[0], B, T,
           stats[2] ? 100.0 * (double)stats[1] / (double)stats[2] : 0.0, score_s,
           score_s > 0 ? (double)stats[1] / score_s : 0.0);
    lt_eval_results_print(stdout, &res);
    if (o->output) {
        cJSON *meta = cJSON_CreateObject();
        cJSON_AddStringToObject(meta, "model", o->model);
        cJSON_AddStringToObject(meta, "tasks", o->tasks);
        cJSON_AddStringToObject(meta, "tokenizer", tokpath);
        cJSON_AddStringToObject(meta, "tokenizer_sha256", lt_tok_sha256(tok));
        if (o->adapter) cJSON_AddStringToObject(meta, "adapter", o->adapter);
        if (strcmp(o->quantize, "none")) cJSON_AddStringToObject(meta, "quantize", o->quantize);
        cJSON_AddStringToObject(meta, "delimiter", delim);
        if (o->fewshot) cJSON_AddStringToObject(meta, "fewshot", o->fewshot);
        if (o->fewshot_prefix) cJSON_AddStringToObject(meta, "fewshot_prefix", o->fewshot_prefix);
        if (o->chat) cJSON_AddStringToObject(meta, "chat_template", tpl.name);
        cJSON_AddStringToObject(meta, "bos", enc.bos_text[0] ? "tokenizer default (post-processor), not when the text starts with it"
                                                               : "none");
        cJSON_AddNumberToObject(meta, "seq_len", T);
        cJSON_AddNumberToObject(meta, "batch", B);
        cJSON_AddStringToObject(meta, "device", be->name);
        cJSON_AddNumberToObject(meta, "requests", (double)rq.n);
        cJSON_AddNumberToObject(meta, "truncated_requests", (double)truncated);
        cJSON_AddNumberToObject(meta, "forward_passes", (double)stats[0]);
        cJSON_AddNumberToObject(meta, "tokens_packed", (double)stats[1]);
        cJSON_AddNumberToObject(meta, "elapsed_s", lt_now_s() - t0);
        char *mj = cJSON_PrintUnformatted(meta);
        cJSON_Delete(meta);
        lt_status st = lt_eval_results_write(o->output, &task, &res, mj, &err);
        cJSON_free(mj);
        if (st != LT_OK) goto fail;
        printf("wrote %s\n", o->output);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "eval: %s\n", err.msg);
done:
    lt_eval_results_free(&res);
    free(ll);
    lt_eval_requests_free(&rq);
    lt_model_free(m);
    if (be) be->destroy(be);
    lt_tok_free(tok);
    lt_eval_task_free(&task);
    lt_eval_task_free(&shots);
    free(prefix);
    free(jinja);
    return rc;
}

/* ---------------------------------------------------------------- compare */

static int eval_compare(const eval_opts *o) {
    lt_err err = {{0}};
    lt_eval_cmp c;
    if (lt_eval_compare(o->compare[0], o->compare[1], o->metric, &c, &err) != LT_OK) {
        fprintf(stderr, "eval --compare: %s\n", err.msg);
        return 1;
    }
    lt_eval_compare_print(stdout, &c, o->alpha);
    lt_eval_compare_free(&c);
    return 0;
}

static int eval_run(void *arg) {
    eval_opts *o = arg;
    for (int k = 0; METRICS[k]; k++)
        if (!strcmp(o->metric_name, METRICS[k])) o->metric = k;
    int modes = !!o->tasks + !!o->n_data + !!o->n_compare;
    if (modes != 1) {
        fprintf(stderr, "eval: give exactly one of --tasks, --data, --compare\n(luxtrain eval --help lists the options)\n");
        return 2;
    }
    if (o->n_compare != 2) {
        if (o->n_compare) {
            fprintf(stderr, "eval: --compare expects two result files or run folders, got %d\n", o->n_compare);
            return 2;
        }
    } else {
        if (strcmp(o->quantize, "none") || o->adapter || o->model) {
            fprintf(stderr, "eval: --compare reads two result files; --model, --adapter and --quantize belong to "
                            "--tasks / --data\n");
            return 2;
        }
        return eval_compare(o);
    }
    if (o->fewshot && o->fewshot_prefix) {
        fprintf(stderr, "eval: --fewshot and --fewshot-prefix exclude each other\n");
        return 2;
    }
    if (!o->model) {
        fprintf(stderr, "eval: --model DIR is required\n");
        return 2;
    }
    return o->tasks ? eval_tasks(o) : eval_loss(o);
}

int lt_cmd_eval(int argc, char **argv) {
    eval_opts o = {0};
    return lt_opts_main(&EVAL_SET, argc, argv, &o, eval_run);
}

/* ------------------------------------------------------------------- plot */

typedef struct {
    char *out, **runs;
    int n_runs, help;
} plot_opts;

#define F(x) offsetof(plot_opts, x)
static const lt_optdef PLOT_OPTS[] = {
    {.name = "out", .k = LT_OPT_STR, .off = F(out), .meta = "FILE.svg",
     .help = "the SVG (default: RUN_DIR/loss.svg of the first run)"},
};
static const lt_optset PLOT_SET = {
    .cmd = "plot",
    .usage = "usage: luxtrain plot RUN_DIR... [--out FILE.svg]\n"
             "Training loss (and eval loss) against tokens, learning rate on a second axis, from\n"
             "RUN_DIR/metrics.jsonl of each run; a PNG is written next to the SVG when rsvg-convert\n"
             "or ImageMagick is available.\n",
    .defs = PLOT_OPTS,
    .n = sizeof PLOT_OPTS / sizeof PLOT_OPTS[0],
    .off_help = F(help),
    .off_pos = F(runs),
    .off_npos = F(n_runs),
    .pos_min = 1,
    .pos_max = 1 << 20,
    .pos_meta = "RUN_DIR...",
};
#undef F

static int plot_run(void *arg) {
    const plot_opts *o = arg;
    lt_err err = {{0}};
    int png = 0;
    char def[4096];
    const char *out = o->out;
    if (!out && lt_path_join(def, sizeof def, o->runs[0], "loss.svg")) out = def;
    if (lt_plot_runs((const char **)o->runs, o->n_runs, out, &png, &err) != LT_OK) {
        fprintf(stderr, "plot: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s%s\n", out, png ? " (and a PNG next to it)" : "");
    return 0;
}

int lt_cmd_plot(int argc, char **argv) {
    plot_opts o = {0};
    return lt_opts_main(&PLOT_SET, argc, argv, &o, plot_run);
}
