/*
 * test_eval_mc.c -- multiple-choice evaluation against transformers.
 *
 * Reference: tools/gen_eval_fixtures.py (tests/fixtures/eval/): a tiny random
 * Llama with the real Llama 2 vocabulary, a task file of edge cases, and the
 * per-choice log-likelihoods / accuracies that transformers + HF tokenizers
 * give following lm-evaluation-harness's algorithm, for three settings:
 * delimiter " ", delimiter "" (continuations merge into the context's last
 * token), max length 12 (left truncation) and --chat with the ChatML template
 * (contexts rendered as a user turn + generation prompt, delimiter "").
 *
 * Checked:
 *   - the context / continuation token ids of every request: exact
 *   - the log-likelihood of every choice, packed in several B x T layouts:
 *     |ll - ref| <= 2e-4 + 2e-6 |ref|  (fp32 forward on both sides; the sums
 *     are over 1-11 tokens with log-probabilities of about -5..-30 each)
 *   - continuation tokens / chars / bytes, predictions: exact
 *   - acc, acc_norm, acc_bytes and their standard errors per category and
 *     overall: 1e-12 (they are ratios of small integers)
 *   - `luxtrain eval` end to end (--output JSON) and its error messages.
 *   - `luxtrain eval --adapter` (PEFT LoRA, rsLoRA scaling, merged into the
 *     weights) against PEFT's forward: same tolerance as above.
 *   - `luxtrain eval --data` (after `luxtrain tokenize` of the reference texts):
 *     the mean loss, relative 1e-5; target tokens exact.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_chat.h"
#include "lt_eval.h"
#include "lt_model.h"
#include "lt_test.h"
#include "lt_tokenizer.h"

static cJSON *load_json(const char *path) {
    char *data = NULL;
    size_t len = 0;
    lt_err err;
    if (lt_read_file(path, &data, &len, &err) != LT_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(data, len);
    free(data);
    return j;
}

static double jnum(cJSON *o, const char *key) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN; /* null -> NaN */
}

static int same(double a, double b, double tol) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return fabs(a - b) <= tol;
}

static void check_summary(const char *what, const lt_eval_summary *s, cJSON *ref) {
    LT_CHECK(ref != NULL, "%s: missing in the reference", what);
    if (!ref) return;
    LT_CHECK((double)s->n == jnum(ref, "n"), "%s: n %zu vs %g", what, s->n, jnum(ref, "n"));
    for (int k = 0; k < LT_EVAL_NMETRIC; k++) {
        char key[32];
        snprintf(key, sizeof key, "%s_stderr", lt_eval_metric_names[k]);
        LT_CHECK(same(s->mean[k], jnum(ref, lt_eval_metric_names[k]), 1e-12), "%s %s: %.17g vs %.17g", what,
                 lt_eval_metric_names[k], s->mean[k], jnum(ref, lt_eval_metric_names[k]));
        LT_CHECK(same(s->stderr_[k], jnum(ref, key), 1e-12), "%s %s: %.17g vs %.17g", what, key, s->stderr_[k],
                 jnum(ref, key));
    }
}

static double max_ll_err = 0;

/* Score rq with (B, T), compare with the reference; fill results. */
static void check_scores(const char *cfgname, const lt_eval_task *task, const lt_eval_requests *rq, cJSON *qref,
                         lt_model *m, int B, int T) {
    double *ll = malloc(rq->n * sizeof *ll);
    for (size_t i = 0; i < rq->n; i++) ll[i] = NAN; /* poison */
    lt_err err = {{0}};
    int64_t stats[3];
    LT_CHECK_OK(lt_eval_score(m, rq, B, T, ll, NULL, NULL, stats, &err), &err);
    LT_CHECK(stats[0] >= 1 && stats[1] > 0 && stats[1] <= stats[2], "%s: stats %lld %lld %lld", cfgname,
             (long long)stats[0], (long long)stats[1], (long long)stats[2]);
    for (size_t q = 0; q < task->n; q++) {
        cJSON *ref = cJSON_GetObjectItemCaseSensitive(qref, task->q[q].id);
        cJSON *rl = cJSON_GetObjectItemCaseSensitive(ref, "ll");
        for (int c = 0; c < task->q[q].n_choices; c++) {
            double want = cJSON_GetArrayItem(rl, c)->valuedouble, got = ll[rq->first[q] + (size_t)c];
            double d = fabs(got - want);
            if (isfinite(d) && d > max_ll_err) max_ll_err = d;
            LT_CHECK(isfinite(got) && d <= 2e-4 + 2e-6 * fabs(want), "%s B=%d T=%d question %s choice %d: ll %.9g vs %.9g",
                     cfgname, B, T, task->q[q].id, c, got, want);
        }
    }
    lt_eval_results res;
    LT_CHECK_OK(lt_eval_results_compute(task, rq, ll, &res, &err), &err);
    for (size_t q = 0; q < task->n && res.first; q++) {
        cJSON *ref = cJSON_GetObjectItemCaseSensitive(qref, task->q[q].id);
        const char *keys[3] = {"tokens", "chars", "bytes"};
        int *arrs[3] = {res.n_tokens, res.n_chars, res.n_bytes};
        for (int k = 0; k < 3; k++)
            for (int c = 0; c < task->q[q].n_choices; c++) {
                int want = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ref, keys[k]), c)->valueint;
                LT_CHECK(arrs[k][res.first[q] + (size_t)c] == want, "%s question %s choice %d: %s %d vs %d", cfgname,
                         task->q[q].id, c, keys[k], arrs[k][res.first[q] + (size_t)c], want);
            }
        const char *pk[3] = {"pred", "pred_norm", "pred_bytes"};
        for (int k = 0; k < LT_EVAL_NMETRIC; k++)
            LT_CHECK(res.pred[k][q] == (int)jnum(ref, pk[k]), "%s question %s: %s %d vs %g", cfgname, task->q[q].id,
                     pk[k], res.pred[k][q], jnum(ref, pk[k]));
    }
    lt_eval_results_free(&res);
    free(ll);
}

static void check_config(const char *cfgname, cJSON *cfg, const lt_eval_task *task, const lt_tokenizer *tok,
                         lt_model *m) {
    const char *delim = cJSON_GetObjectItemCaseSensitive(cfg, "delimiter")->valuestring;
    int seq_len = (int)jnum(cfg, "seq_len");
    cJSON *qref = cJSON_GetObjectItemCaseSensitive(cfg, "questions");
    lt_err err = {{0}};
    lt_eval_encoder enc;
    LT_CHECK_OK(lt_eval_encoder_init(&enc, tok, lt_shared_path("tokenizers/llama2/tokenizer_config.json"), 1, 2, &err),
                &err);
    LT_CHECK(enc.prefix_token == 1 && !strcmp(enc.bos_text, "<s>"), "encoder: prefix %d bos '%s'", enc.prefix_token,
             enc.bos_text);
    /* chat configurations: the contexts rendered by the template first */
    lt_eval_task chat_task = {0};
    cJSON *tmpl = cJSON_GetObjectItemCaseSensitive(cfg, "template");
    if (cJSON_IsString(tmpl)) {
        lt_chat_template tpl;
        LT_CHECK_OK(lt_eval_task_load(lt_src_path("tests/fixtures/eval/tasks.jsonl"), &chat_task, &err), &err);
        LT_CHECK_OK(lt_chat_template_by_name(tmpl->valuestring, &tpl, &err), &err);
        lt_status cs = lt_eval_apply_chat(&chat_task, &tpl, &err);
        LT_CHECK(cs == LT_OK, "%s: apply chat: %s", cfgname, err.msg);
        if (cs != LT_OK) {
            lt_eval_task_free(&chat_task);
            return;
        }
        task = &chat_task;
    }
    lt_eval_requests rq;
    lt_status st = lt_eval_build_requests(task, delim, &enc, seq_len, &rq, &err);
    LT_CHECK(st == LT_OK, "%s: build requests: %s", cfgname, err.msg);
    if (st != LT_OK) {
        lt_eval_task_free(&chat_task);
        return;
    }
    /* the split: exact ids */
    int longest = 0;
    for (size_t i = 0; i < rq.n; i++) {
        const lt_eval_request *r = &rq.r[i];
        const lt_eval_question *Q = &task->q[r->question];
        cJSON *ref = cJSON_GetObjectItemCaseSensitive(qref, Q->id);
        cJSON *ci = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ref, "ctx_ids"), r->choice);
        cJSON *ki = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ref, "cont_ids"), r->choice);
        int ok = cJSON_GetArraySize(ci) == r->n_ctx && cJSON_GetArraySize(ki) == r->n_cont;
        for (int j = 0; ok && j < r->n_ctx; j++) ok = cJSON_GetArrayItem(ci, j)->valueint == r->tokens[j];
        for (int j = 0; ok && j < r->n_cont; j++) ok = cJSON_GetArrayItem(ki, j)->valueint == r->tokens[r->n_ctx + j];
        LT_CHECK(ok, "%s question %s choice %d: ids differ (n_ctx %d vs %d, n_cont %d vs %d)", cfgname, Q->id,
                 r->choice, r->n_ctx, cJSON_GetArraySize(ci), r->n_cont, cJSON_GetArraySize(ki));
        if (r->n_ctx + r->n_cont - 1 > longest) longest = r->n_ctx + r->n_cont - 1;
    }
    /* several packings: one request per row, many per row, several rows */
    int layouts[4][2] = {{1, seq_len}, {3, seq_len}, {2, 64}, {5, 72}};
    for (int k = 0; k < 4; k++) {
        int B = layouts[k][0], T = layouts[k][1];
        if (T != seq_len && (T < longest || seq_len < longest)) continue; /* T also truncates */
        check_scores(cfgname, task, &rq, qref, m, B, T);
    }
    /* metrics from the full pipeline at the reference layout */
    double *ll = malloc(rq.n * sizeof *ll);
    for (size_t i = 0; i < rq.n; i++) ll[i] = NAN;
    LT_CHECK_OK(lt_eval_score(m, &rq, 2, seq_len, ll, NULL, NULL, NULL, &err), &err);
    lt_eval_results res;
    if (lt_eval_results_compute(task, &rq, ll, &res, &err) == LT_OK) {
        char what[96];
        snprintf(what, sizeof what, "%s overall", cfgname);
        check_summary(what, &res.overall, cJSON_GetObjectItemCaseSensitive(cfg, "overall"));
        cJSON *cats = cJSON_GetObjectItemCaseSensitive(cfg, "categories");
        LT_CHECK((int)res.n_cats == cJSON_GetArraySize(cats), "%s: %zu categories vs %d", cfgname, res.n_cats,
                 cJSON_GetArraySize(cats));
        for (size_t c = 0; c < res.n_cats; c++) {
            snprintf(what, sizeof what, "%s category %s", cfgname, res.cat_names[c]);
            check_summary(what, &res.cats[c], cJSON_GetObjectItemCaseSensitive(cats, res.cat_names[c]));
        }
        lt_eval_results_free(&res);
    } else
        LT_CHECK(0, "%s: results: %s", cfgname, err.msg);
    free(ll);
    lt_eval_requests_free(&rq);
    lt_eval_task_free(&chat_task);
}

static void unit_checks(void) {
    /* Python str.rstrip whitespace, code points */
    LT_CHECK(lt_eval_trailing_ws("ab \t\n", 5) == 3, "ascii ws");
    LT_CHECK(lt_eval_trailing_ws("a\xe3\x80\x80 ", 5) == 4, "U+3000 is whitespace");
    LT_CHECK(lt_eval_trailing_ws("a\xc2\xa0", 3) == 2, "U+00A0 is whitespace");
    LT_CHECK(lt_eval_trailing_ws("\xc3\xa4", 2) == 0, "a-umlaut is not whitespace");
    LT_CHECK(lt_eval_trailing_ws("   ", 3) == 3, "all whitespace");
    LT_CHECK(lt_eval_utf8_chars("L\xc3\xabtz \xf0\x9f\x98\x80", 10) == 6, "code points");
    /* stderr of 0/1 values: k = 1 of n = 4 -> sqrt(0.25) / 2 = 0.25 ... sample var = 0.25 */
    LT_CHECK(fabs(lt_eval_stderr01(1, 4) - 0.25) < 1e-15, "stderr01(1,4) = %.17g", lt_eval_stderr01(1, 4));
    LT_CHECK(isnan(lt_eval_stderr01(1, 1)), "stderr of one value is NaN");
    LT_CHECK(lt_eval_stderr01(3, 3) == 0, "stderr of constant values");
    /* task parsing errors name file and line */
    lt_eval_task t;
    lt_err err = {{0}};
    const char *bad = "{\"id\": 1, \"context\": \"a\", \"choices\": [\"x\", \"y\"], \"answer\": 1}\n\n"
                      "{\"id\": 2, \"question\": \"b\", \"choices\": [\"x\", \"y\"], \"answer\": 2}\n";
    LT_CHECK(lt_eval_task_parse(bad, strlen(bad), "t.jsonl", &t, &err) == LT_ERR_FORMAT &&
                 strstr(err.msg, "t.jsonl:3") && strstr(err.msg, "answer"),
             "bad answer: %s", err.msg);
    const char *dup = "{\"id\": \"a\", \"context\": \"a\", \"choices\": [\"x\", \"y\"], \"answer\": 0}\n"
                      "{\"id\": \"a\", \"context\": \"a\", \"choices\": [\"x\", \"y\"], \"answer\": 0}\n";
    LT_CHECK(lt_eval_task_parse(dup, strlen(dup), "d.jsonl", &t, &err) == LT_ERR_FORMAT && strstr(err.msg, "twice"),
             "duplicate id: %s", err.msg);
    const char *nj = "{\"id\": \"a\", \"context\": \"a\", \"choices\": [\"x\", \"y\"], \"answer\": 0}\n{oops\n";
    LT_CHECK(lt_eval_task_parse(nj, strlen(nj), "n.jsonl", &t, &err) == LT_ERR_FORMAT && strstr(err.msg, "n.jsonl:2"),
             "bad json: %s", err.msg);
    /* two questions on one line: the second was dropped without a word */
    const char *two = "{\"id\": \"a\", \"context\": \"a\", \"choices\": [\"x\", \"y\"], \"answer\": 0} "
                      "{\"id\": \"b\", \"context\": \"b\", \"choices\": [\"x\", \"y\"], \"answer\": 1}\n";
    LT_CHECK(lt_eval_task_parse(two, strlen(two), "two.jsonl", &t, &err) == LT_ERR_FORMAT &&
                 strstr(err.msg, "two.jsonl:1: text after the JSON value"),
             "two questions on a line: %s", err.msg);
    const char *good = "{\"id\": 7, \"question\": \"Q?\", \"choices\": [\"x\", \"y\"], \"answer\": 1, \"category\": \"c\"}\n";
    if (lt_eval_task_parse(good, strlen(good), "g.jsonl", &t, &err) == LT_OK) {
        LT_CHECK(!strcmp(t.q[0].id, "7") && !strcmp(t.q[0].context, "Q?") && t.q[0].answer == 1 &&
                     !strcmp(t.q[0].category, "c"),
                 "parsed fields");
        char *fs = NULL;
        LT_CHECK_OK(lt_eval_fewshot_prefix(&t, " ", &fs, &err), &err);
        LT_CHECK(fs && !strcmp(fs, "Q? y\n\n"), "few-shot prefix '%s'", fs ? fs : "(null)");
        free(fs);
        lt_eval_task_free(&t);
    } else
        LT_CHECK(0, "good task: %s", err.msg);
}

static void cli_checks(cJSON *exp_root, cJSON *space, const char *tmp) {
    char cmd[8192], out[4096], badf[4096];
    snprintf(out, sizeof out, "%s/eval.json", tmp);
    remove(out);
    snprintf(cmd, sizeof cmd,
             "'%s' eval --model '%s' --tasks '%s' --tokenizer '%s' --device cpu --threads 2 --batch 2 --seq-len 256 "
             "--output '%s' > '%s/stdout.txt' 2>&1",
             LT_BIN, lt_src_path("tests/fixtures/eval/model"), lt_src_path("tests/fixtures/eval/tasks.jsonl"),
             lt_shared_path("tokenizers/llama2"), out, tmp);
    int rc = lt_test_system(cmd);
    LT_CHECK(rc == 0, "luxtrain eval exit %d (see %s/stdout.txt)", rc, tmp);
    cJSON *j = load_json(out);
    LT_CHECK(j != NULL, "luxtrain eval: no JSON output");
    if (j) {
        cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
        LT_CHECK(cJSON_IsString(fmt) && !strcmp(fmt->valuestring, "luxtrain-eval-1"), "format");
        cJSON *qs = cJSON_GetObjectItemCaseSensitive(j, "questions"), *q;
        cJSON *qref = cJSON_GetObjectItemCaseSensitive(space, "questions");
        int nq = 0;
        cJSON_ArrayForEach(q, qs) {
            nq++;
            const char *id = cJSON_GetObjectItemCaseSensitive(q, "id")->valuestring;
            cJSON *ref = cJSON_GetObjectItemCaseSensitive(qref, id);
            cJSON *a = cJSON_GetObjectItemCaseSensitive(q, "ll"), *b = cJSON_GetObjectItemCaseSensitive(ref, "ll");
            LT_CHECK(ref && cJSON_GetArraySize(a) == cJSON_GetArraySize(b), "question %s: choices", id);
            for (int c = 0; ref && c < cJSON_GetArraySize(a); c++) {
                double x = cJSON_GetArrayItem(a, c)->valuedouble, y = cJSON_GetArrayItem(b, c)->valuedouble;
                LT_CHECK(fabs(x - y) <= 2e-4 + 2e-6 * fabs(y), "cli question %s choice %d: %.9g vs %.9g", id, c, x, y);
            }
        }
        LT_CHECK(nq == cJSON_GetArraySize(qref), "cli: %d questions", nq);
        cJSON *ov = cJSON_GetObjectItemCaseSensitive(j, "overall"), *ro = cJSON_GetObjectItemCaseSensitive(space, "overall");
        LT_CHECK(same(jnum(ov, "acc"), jnum(ro, "acc"), 1e-12) && same(jnum(ov, "acc_norm_stderr"), jnum(ro, "acc_norm_stderr"), 1e-12),
                 "cli overall");
        cJSON_Delete(j);
    }
    /* --adapter: merged PEFT LoRA adapter against PEFT's forward */
    cJSON *ada = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(exp_root, "adapter"), "ll");
    snprintf(cmd, sizeof cmd,
             "'%s' eval --model '%s' --tasks '%s' --tokenizer '%s' --adapter '%s' --device cpu --threads 2 "
             "--output '%s' > '%s/stdout_adapter.txt' 2>&1",
             LT_BIN, lt_src_path("tests/fixtures/eval/model"), lt_src_path("tests/fixtures/eval/tasks.jsonl"),
             lt_shared_path("tokenizers/llama2"), lt_src_path("tests/fixtures/eval/adapter"), out, tmp);
    rc = lt_test_system(cmd);
    LT_CHECK(rc == 0 && ada, "luxtrain eval --adapter exit %d (see %s/stdout_adapter.txt)", rc, tmp);
    j = ada ? load_json(out) : NULL;
    if (j) {
        cJSON *q;
        int nq = 0;
        cJSON_ArrayForEach(q, cJSON_GetObjectItemCaseSensitive(j, "questions")) {
            const char *id = cJSON_GetObjectItemCaseSensitive(q, "id")->valuestring;
            cJSON *a = cJSON_GetObjectItemCaseSensitive(q, "ll"), *b = cJSON_GetObjectItemCaseSensitive(ada, id);
            LT_CHECK(b && cJSON_GetArraySize(a) == cJSON_GetArraySize(b), "adapter question %s", id);
            for (int c = 0; b && c < cJSON_GetArraySize(a); c++) {
                double x = cJSON_GetArrayItem(a, c)->valuedouble, y = cJSON_GetArrayItem(b, c)->valuedouble;
                LT_CHECK(fabs(x - y) <= 2e-4 + 2e-6 * fabs(y), "adapter question %s choice %d: %.9g vs %.9g", id, c, x, y);
            }
            nq++;
        }
        LT_CHECK(nq == cJSON_GetArraySize(ada), "adapter: %d questions", nq);
        cJSON_Delete(j);
    }
    /* an adapter with lora_bias (a bias on B that a plain merge would drop)
     * is refused, as `luxtrain train --adapter` refuses it */
    {
        char lb[4096];
        snprintf(lb, sizeof lb, "%s/adapter_lora_bias", tmp);
        LT_FMT(cmd,
                 "rm -rf '%s' && cp -r '%s' '%s' && sed -i 's/\"lora_bias\": false/\"lora_bias\": true/' "
                 "'%s/adapter_config.json' && grep -q '\"lora_bias\": true' '%s/adapter_config.json'",
                 lb, lt_src_path("tests/fixtures/eval/adapter"), lb, lb, lb);
        LT_CHECK(lt_test_system(cmd) == 0, "cannot make %s", lb);
        snprintf(cmd, sizeof cmd,
                 "'%s' eval --model '%s' --tasks '%s' --tokenizer '%s' --adapter '%s' --device cpu --threads 2 "
                 "> '%s/stdout_lora_bias.txt' 2>&1",
                 LT_BIN, lt_src_path("tests/fixtures/eval/model"), lt_src_path("tests/fixtures/eval/tasks.jsonl"),
                 lt_shared_path("tokenizers/llama2"), lb, tmp);
        rc = lt_test_system(cmd);
        char msg[4096];
        snprintf(msg, sizeof msg, "%s/stdout_lora_bias.txt", tmp);
        char *txt = NULL;
        size_t tl = 0;
        lt_err e2 = {{0}};
        LT_CHECK(rc == 1 && lt_read_file(msg, &txt, &tl, &e2) == LT_OK && strstr(txt, "lora_bias"),
                 "eval --adapter with lora_bias: exit %d, %s", rc, txt ? txt : "(no output)");
        free(txt);
    }
    /* errors: a malformed task line, a missing file, no mode */
    snprintf(badf, sizeof badf, "%s/bad.jsonl", tmp);
    FILE *f = fopen(badf, "w");
    if (f) {
        fprintf(f, "{\"id\": \"a\", \"context\": \"x\", \"choices\": [\"p\", \"q\"], \"answer\": 0}\n{\"id\": \"b\", \"context\": 3}\n");
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "'%s' eval --model '%s' --tasks '%s' --device cpu > '%s/err.txt' 2>&1", LT_BIN,
             lt_src_path("tests/fixtures/eval/model"), badf, tmp);
    rc = lt_test_system(cmd);
    LT_CHECK(rc == 1, "malformed task file: exit %d", rc);
    snprintf(cmd, sizeof cmd, "grep -q 'bad.jsonl:2' '%s/err.txt'", tmp);
    LT_CHECK(lt_test_system(cmd) == 0, "the message names file:line");
    snprintf(cmd, sizeof cmd, "'%s' eval --model '%s' > /dev/null 2>&1", LT_BIN, lt_src_path("tests/fixtures/eval/model"));
    LT_CHECK(lt_test_system(cmd) == 2, "no mode: usage error");
    snprintf(cmd, sizeof cmd, "'%s' eval --model x --tasks '%s/missing.jsonl' > /dev/null 2>&1", LT_BIN, tmp);
    LT_CHECK(lt_test_system(cmd) == 1, "missing task file");
}

/* `luxtrain eval --data`: tokenize the reference texts with `luxtrain tokenize`
 * and compare the mean loss with transformers' (relative 1e-5, fp32). */
static void loss_checks(cJSON *ref, const char *tmp) {
    char path[4096], cmd[8192];
    snprintf(path, sizeof path, "%s/docs.jsonl", tmp);
    FILE *f = fopen(path, "w");
    LT_CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(ref, "texts")) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", t->valuestring);
        char *line = cJSON_PrintUnformatted(o);
        fprintf(f, "%s\n", line);
        cJSON_free(line);
        cJSON_Delete(o);
    }
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s/shards' && '%s' tokenize --tokenizer '%s' --input '%s' --out '%s/shards' --quiet > /dev/null 2>&1 "
             "&& '%s' eval --model '%s' --data '%s/shards' --seq-len %d --batch 2 --device cpu --threads 2 > '%s/loss.txt'",
             tmp, LT_BIN, lt_shared_path("tokenizers/llama2"), path, tmp, LT_BIN,
             lt_src_path("tests/fixtures/eval/model"), tmp, (int)jnum(ref, "seq_len"), tmp);
    int rc = lt_test_system(cmd);
    LT_CHECK(rc == 0, "tokenize + eval --data: exit %d", rc);
    snprintf(path, sizeof path, "%s/loss.txt", tmp);
    cJSON *j = load_json(path);
    LT_CHECK(j != NULL, "eval --data printed no JSON line");
    if (!j) return;
    double loss = jnum(j, "loss"), want = jnum(ref, "loss");
    LT_CHECK(fabs(loss - want) <= 1e-5 * fabs(want), "eval --data: loss %.9g vs %.9g", loss, want);
    LT_CHECK(jnum(j, "target_tokens") == jnum(ref, "target_tokens"), "eval --data: target_tokens %g vs %g",
             jnum(j, "target_tokens"), jnum(ref, "target_tokens"));
    LT_CHECK(fabs(jnum(j, "ppl") - exp(loss)) <= 1e-6 * exp(loss), "eval --data: ppl %g", jnum(j, "ppl"));
    cJSON_Delete(j);
}

int main(void) {
    unit_checks();
    const char *tokpath = lt_shared_path("tokenizers/llama2/tokenizer.json");
    if (!lt_file_exists(tokpath)) {
        fprintf(stderr, "test_eval_mc: %s absent: skipping\n", tokpath);
        return LT_TEST_SKIP;
    }
    const char *tmp = lt_test_tmpdir("test_eval_mc");
    lt_err err = {{0}};
    cJSON *exp = load_json(lt_src_path("tests/fixtures/eval/expected.json"));
    LT_CHECK(exp != NULL, "expected.json");
    lt_eval_task task;
    LT_CHECK_OK(lt_eval_task_load(lt_src_path("tests/fixtures/eval/tasks.jsonl"), &task, &err), &err);
    lt_tokenizer *tok = NULL;
    LT_CHECK_OK(lt_tok_load(tokpath, &tok, &err), &err);
    lt_backend *be = NULL;
    lt_model *m = NULL;
    LT_CHECK_OK(lt_cpu_backend_create(2, &be, &err), &err);
    if (be) LT_CHECK_OK(lt_model_load(lt_src_path("tests/fixtures/eval/model"), be, &m, &err), &err);
    if (exp && tok && m) {
        cJSON *cfgs = cJSON_GetObjectItemCaseSensitive(exp, "configs"), *c;
        cJSON_ArrayForEach(c, cfgs) check_config(c->string, c, &task, tok, m);
        printf("largest |ll - ref|: %.3g\n", max_ll_err);
        cli_checks(exp, cJSON_GetObjectItemCaseSensitive(cfgs, "space"), tmp);
        loss_checks(cJSON_GetObjectItemCaseSensitive(exp, "loss"), tmp);
    }
    lt_model_free(m);
    if (be) be->destroy(be);
    lt_tok_free(tok);
    lt_eval_task_free(&task);
    cJSON_Delete(exp);
    return lt_test_finish("test_eval_mc");
}
