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

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: luxtrain eval --model DIR --tasks FILE.jsonl [options]   multiple choice by log-likelihood\n"
            "       luxtrain eval --model DIR --data SHARD.h5... [options]    loss on token shards\n"
            "       luxtrain eval --compare A B [--metric acc|acc_norm|acc_bytes] [--alpha 0.05]\n"
            "\n"
            "multiple choice (scored as lm-evaluation-harness does; see docs/evaluation.md):\n"
            "  --tasks FILE.jsonl     {\"id\", \"context\"|\"question\", \"choices\": [..], \"answer\": i, \"category\"}\n"
            "  --tokenizer PATH       tokenizer.json or its folder (default: the model folder)\n"
            "  --adapter DIR          PEFT LoRA adapter, merged into the weights for the evaluation\n"
            "  --chat                 render each context as a user turn of the chat template\n"
            "  --template NAME        chat template (default: detected from tokenizer_config.json)\n"
            "  --fewshot FILE.jsonl   solved examples prepended to every context\n"
            "  --fewshot-prefix TEXT  literal text prepended to every context\n"
            "  --delimiter TEXT       between context and choice (default \" \"; \"\" with --chat)\n"
            "  --seq-len N            sequence length; longer requests are cut from the left\n"
            "                         (default: min(max_position_embeddings, 2048))\n"
            "  --batch N              sequences per forward pass (default 1)\n"
            "  --device cpu|cuda|auto (default auto)   --threads N (CPU threads)\n"
            "  --output FILE.json     results: overall, per category, per question\n"
            "loss: --data SHARD... [--prefix P (files in folders, default train-)] --seq-len --batch\n"
            "      the shards' tokenizer_sha256 must be --tokenizer's (default: the model folder's tokenizer.json)\n"
            "      unless --allow-tokenizer-mismatch\n"
            "compare: A and B are result files or run folders holding eval.json (or eval*.json)\n");
}

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

static const char *need_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "eval: %s expects a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

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
    if (lt_json_load_file(config_path, &root, err) != LT_OK) return NULL;
    const char *keys[2] = {"bos_token", "eos_token"};
    char *outs[2] = {bos, eos};
    for (int k = 0; k < 2; k++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
        if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(v)) snprintf(outs[k], cap, "%s", v->valuestring);
    }
    cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    char *res = NULL;
    if (cJSON_IsString(t)) {
        size_t n = strlen(t->valuestring);
        res = malloc(n + 1);
        if (res) memcpy(res, t->valuestring, n + 1);
    } else
        lt_fail(err, LT_ERR_UNSUPPORTED, "%s: no \"chat_template\" (give --template NAME)", config_path);
    cJSON_Delete(root);
    return res;
}

typedef struct {
    const char *model, *tasks, *tokenizer, *adapter, *fewshot, *fewshot_prefix, *delimiter, *device, *output;
    const char *tmpl, *compare_a, *compare_b, *prefix;
    const char **data;
    int n_data, chat, metric, allow_tok_mismatch;
    long seq_len, batch, threads;
    double alpha;
} eval_opts;

/* ------------------------------------------------------------ loss mode */

static int eval_loss(const eval_opts *o) {
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_loader *L = NULL;
    int rc = 1;
    if (lt_backend_create(o->device, (int)o->threads, &be, &err) != LT_OK) goto fail;
    if (lt_model_load(o->model, be, &m, &err) != LT_OK) goto fail;
    if (o->adapter && lt_eval_merge_adapter(m, o->adapter, &err) != LT_OK) goto fail;
    const lt_config *cfg = lt_model_config(m);
    int T = (int)(o->seq_len > 0 ? o->seq_len : (cfg->max_position_embeddings < 2048 ? cfg->max_position_embeddings : 2048));
    int B = (int)(o->batch > 0 ? o->batch : 1);
    lt_loader_opts lo = {B, T, 0, 1, 0, 0, cfg->vocab_size};
    if (lt_loader_open(o->data, o->n_data, o->prefix, &lo, &L, &err) != LT_OK) goto fail;
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
    if (lt_model_load(o->model, be, &m, &err) != LT_OK) goto fail;
    if (o->adapter && lt_eval_merge_adapter(m, o->adapter, &err) != LT_OK) goto fail;
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
    if (lt_eval_compare(o->compare_a, o->compare_b, o->metric, &c, &err) != LT_OK) {
        fprintf(stderr, "eval --compare: %s\n", err.msg);
        return 1;
    }
    lt_eval_compare_print(stdout, &c, o->alpha);
    lt_eval_compare_free(&c);
    return 0;
}

int lt_cmd_eval(int argc, char **argv) {
    eval_opts o = {0};
    o.device = "auto";
    o.alpha = 0.05;
    o.data = calloc((size_t)argc, sizeof *o.data);
    if (!o.data) return 1;
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        long n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            eval_usage(stdout);
            rc = 0;
            goto out;
        }
#define STR_OPT(name, field)                                 \
    if (!strcmp(a, name)) {                                  \
        if (!(v = need_value(argc, argv, &i))) goto out;     \
        o.field = v;                                         \
        continue;                                            \
    }
        STR_OPT("--model", model)
        STR_OPT("--tasks", tasks)
        STR_OPT("--tokenizer", tokenizer)
        STR_OPT("--adapter", adapter)
        STR_OPT("--fewshot", fewshot)
        STR_OPT("--fewshot-prefix", fewshot_prefix)
        STR_OPT("--delimiter", delimiter)
        STR_OPT("--device", device)
        STR_OPT("--output", output)
        STR_OPT("--template", tmpl)
        STR_OPT("--prefix", prefix)
#undef STR_OPT
        if (!strcmp(a, "--chat")) {
            o.chat = 1;
        } else if (!strcmp(a, "--allow-tokenizer-mismatch")) {
            o.allow_tok_mismatch = 1;
        } else if (!strcmp(a, "--seq-len") || !strcmp(a, "--batch") || !strcmp(a, "--threads")) {
            if (!(v = need_value(argc, argv, &i))) goto out;
            long lo = !strcmp(a, "--threads") ? 0 : (!strcmp(a, "--seq-len") ? 2 : 1);
            if (!lt_parse_int("eval", a, v, lo, 1L << 20, &n)) goto out;
            if (!strcmp(a, "--seq-len"))
                o.seq_len = n;
            else if (!strcmp(a, "--batch"))
                o.batch = n;
            else
                o.threads = n;
        } else if (!strcmp(a, "--alpha")) {
            if (!(v = need_value(argc, argv, &i)) || !lt_parse_double("eval", a, v, &o.alpha)) goto out;
            if (!(o.alpha > 0 && o.alpha < 1)) {
                fprintf(stderr, "eval: --alpha expects a number in (0, 1), got '%s'\n", v);
                goto out;
            }
        } else if (!strcmp(a, "--metric")) {
            if (!(v = need_value(argc, argv, &i))) goto out;
            o.metric = -1;
            for (int k = 0; k < LT_EVAL_NMETRIC; k++)
                if (!strcmp(v, lt_eval_metric_names[k])) o.metric = k;
            if (o.metric < 0) {
                fprintf(stderr, "eval: --metric expects acc, acc_norm or acc_bytes, got '%s'\n", v);
                goto out;
            }
        } else if (!strcmp(a, "--compare")) {
            if (i + 2 >= argc) {
                fprintf(stderr, "eval: --compare expects two result files or run folders\n");
                goto out;
            }
            o.compare_a = argv[++i];
            o.compare_b = argv[++i];
        } else if (!strcmp(a, "--data")) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) o.data[o.n_data++] = argv[++i];
            if (!o.n_data) {
                fprintf(stderr, "eval: --data expects one or more shard files or folders\n");
                goto out;
            }
        } else if (a[0] == '-') {
            static const char *const valid[] = {
                "--model", "--tasks", "--tokenizer", "--adapter", "--fewshot", "--fewshot-prefix", "--delimiter",
                "--device", "--output", "--template", "--prefix", "--chat", "--seq-len", "--batch", "--threads",
                "--alpha", "--metric", "--compare", "--data", "--help", NULL};
            lt_opt_unknown_option("eval", a, valid);
            goto out;
        } else {
            fprintf(stderr, "eval: unexpected argument '%s'\n", a);
            eval_usage(stderr);
            goto out;
        }
    }
    int modes = !!o.tasks + !!o.n_data + !!o.compare_a;
    if (modes != 1) {
        fprintf(stderr, "eval: give exactly one of --tasks, --data, --compare\n");
        eval_usage(stderr);
        goto out;
    }
    if (o.fewshot && o.fewshot_prefix) {
        fprintf(stderr, "eval: --fewshot and --fewshot-prefix exclude each other\n");
        goto out;
    }
    if (o.compare_a) {
        rc = eval_compare(&o);
        goto out;
    }
    if (!o.model) {
        fprintf(stderr, "eval: --model DIR is required\n");
        goto out;
    }
    rc = o.tasks ? eval_tasks(&o) : eval_loss(&o);
out:
    free(o.data);
    return rc;
}

/* ------------------------------------------------------------------- plot */

static void plot_usage(FILE *f) {
    fprintf(f, "usage: luxtrain plot RUN_DIR... [--out FILE.svg]\n"
               "Training loss (and eval loss) against tokens, learning rate on a second axis, from\n"
               "RUN_DIR/metrics.jsonl of each run. Default output: RUN_DIR/loss.svg of the first run;\n"
               "a PNG is written next to it when rsvg-convert or ImageMagick is available.\n");
}

int lt_cmd_plot(int argc, char **argv) {
    const char *out = NULL;
    const char **dirs = calloc((size_t)argc, sizeof *dirs);
    int n = 0, rc = 2;
    if (!dirs) return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            plot_usage(stdout);
            rc = 0;
            goto done;
        }
        if (!strcmp(argv[i], "--out")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "plot: --out expects a file name\n");
                goto done;
            }
            out = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            static const char *const valid[] = {"--out", "--help", NULL};
            lt_opt_unknown_option("plot", argv[i], valid);
            goto done;
        } else
            dirs[n++] = argv[i];
    }
    if (n == 0) {
        plot_usage(stderr);
        goto done;
    }
    lt_err err = {{0}};
    int png = 0;
    char def[4096];
    if (!out && lt_path_join(def, sizeof def, dirs[0], "loss.svg")) out = def;
    if (lt_plot_runs(dirs, n, out, &png, &err) != LT_OK) {
        fprintf(stderr, "plot: %s\n", err.msg);
        rc = 1;
        goto done;
    }
    printf("wrote %s%s\n", out, png ? " (and a PNG next to it)" : "");
    rc = 0;
done:
    free(dirs);
    return rc;
}
