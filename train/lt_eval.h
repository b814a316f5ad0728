/*
 * lt_eval.h -- multiple-choice evaluation by log-likelihood, the way
 * lm-evaluation-harness (HFLM, v0.4) scores "multiple_choice" tasks, and the
 * paired comparison of two evaluations.
 *
 * Task file (JSONL, one question per line):
 *   {"id": "g1", "context": "...", "choices": ["..", ".."], "answer": 0,
 *    "category": "grammar"}
 *   "question" may stand for "context"; "category" is optional; "id" may be
 *   a string or a number (missing: "line N").
 *
 * Requests: for every choice, continuation = delimiter + choice. The split is
 * computed on the tokenization of the whole string:
 *   - trailing whitespace of the context (Python's str.rstrip: Unicode
 *     whitespace) moves to the front of the continuation;
 *   - whole = enc(context + continuation), ctx = enc(context),
 *     continuation tokens = whole[len(ctx):]  (may differ from enc(cont));
 *   - enc() applies the tokenizer's post-processor (HF's default
 *     add_special_tokens=True: Llama 2/3 and Mistral prepend BOS, Qwen adds
 *     nothing), except for a string that already begins with the BOS text
 *     (a rendered chat template), which is encoded without special tokens;
 *   - an empty context becomes [BOS] (else EOS) and the continuation is
 *     encoded without special tokens (if it already starts with that token,
 *     its first token becomes the context).
 * Scoring: input = (ctx + cont)[-(T+1):][:-1] (left truncation to T tokens),
 * log-likelihood = sum over the continuation tokens of log p(token | prefix).
 * Requests are packed into B x T batches (each request is one document,
 * attention never crosses documents, only continuation tokens are targets),
 * so evaluation runs at training-forward speed.
 *
 * Metrics per question: acc = [argmax ll == answer], acc_norm uses
 * ll / (number of Unicode code points of the choice), acc_bytes uses
 * ll / (UTF-8 bytes of the choice) -- the choice without the delimiter, as
 * the harness does; ties go to the first choice (numpy argmax). Means per
 * category and overall, with stderr = sample std (n - 1) / sqrt(n) (NaN for
 * n < 2; written as null).
 */
#ifndef LT_EVAL_H
#define LT_EVAL_H

#include <stdio.h>

#include "lt_base.h"
#include "lt_model.h"
#include "lt_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- tasks ---- */
typedef struct lt_eval_question {
    char *id;
    char *context;
    char *category; /* NULL when the record has none */
    char **choices;
    int n_choices;
    int answer;
} lt_eval_question;

typedef struct lt_eval_task {
    lt_eval_question *q;
    size_t n;
} lt_eval_task;

/* Parse JSONL text (origin names it in messages: "tasks.jsonl:12: ..."). */
lt_status lt_eval_task_parse(const char *text, size_t len, const char *origin, lt_eval_task *task, lt_err *err);
lt_status lt_eval_task_load(const char *path, lt_eval_task *task, lt_err *err);
void lt_eval_task_free(lt_eval_task *task);

/* The harness's few-shot context: for each shot, context + delimiter +
 * choices[answer], joined and terminated by "\n\n" (malloc'd). */
lt_status lt_eval_fewshot_prefix(const lt_eval_task *shots, const char *delimiter, char **out, lt_err *err);

/* --chat: replace every context by the chat template's rendering of one user
 * turn holding it, up to where the assistant's answer starts -- what
 * transformers' apply_chat_template(add_generation_prompt=True) gives.
 * tpl: a const lt_chat_template * (data/lt_chat.h). */
struct lt_chat_template;
lt_status lt_eval_apply_chat(lt_eval_task *task, const struct lt_chat_template *tpl, lt_err *err);

/* ---- requests ---- */

/* A tokenizer-shaped encoder: encode(ctx, text, len, add_special, out, err)
 * appends the ids of text to out (see lt_tok_encode). */
typedef lt_status (*lt_eval_encode_fn)(void *ctx, const char *text, size_t len, int add_special, lt_tok_ids *out,
                                       lt_err *err);
typedef struct lt_eval_encoder {
    lt_eval_encode_fn encode;
    void *ctx;
    int32_t prefix_token; /* what an empty context becomes (BOS, else EOS), -1 = none */
    char bos_text[64];    /* text of the BOS token ("" = none) */
} lt_eval_encoder;

/* Encoder over an lt_tokenizer. BOS: the id the post-processor prepends,
 * else tokenizer_config.json's bos_token (config_path may be NULL), else
 * fallback_bos; the empty-context prefix falls back to eos_token /
 * fallback_eos when there is no BOS (as the harness's prefix_token_id). */
lt_status lt_eval_encoder_init(lt_eval_encoder *enc, const lt_tokenizer *tok, const char *config_path,
                               int32_t fallback_bos, int32_t fallback_eos, lt_err *err);

/* Split one (context, continuation) pair as described above; ctx and cont
 * are cleared first. */
lt_status lt_eval_encode_pair(const lt_eval_encoder *enc, const char *context, size_t clen,
                              const char *continuation, size_t klen, lt_tok_ids *ctx, lt_tok_ids *cont,
                              lt_err *err);

typedef struct lt_eval_request {
    int32_t *tokens; /* ctx tokens then continuation tokens (n_ctx + n_cont) */
    int n_ctx, n_cont;
    size_t question;
    int choice;
} lt_eval_request;

typedef struct lt_eval_requests {
    lt_eval_request *r;
    size_t n;
    size_t *first; /* (n_questions + 1): question q's requests are first[q] .. first[q+1]-1 */
} lt_eval_requests;

/* One request per choice of every question (contexts as given: the caller
 * prepends few-shot text / applies the chat template first). Refuses a
 * continuation with no tokens of its own and one longer than max_len. */
lt_status lt_eval_build_requests(const lt_eval_task *task, const char *delimiter, const lt_eval_encoder *enc,
                                 int max_len, lt_eval_requests *out, lt_err *err);
void lt_eval_requests_free(lt_eval_requests *rq);

/* ---- scoring ---- */
typedef void (*lt_eval_progress_fn)(void *user, size_t done, size_t total);

/* Log-likelihood of every request (ll[i], natural log) with the model, in
 * packed batches of B sequences of T tokens (plans the model for (B, T)).
 * stats (may be NULL): [0] forward steps, [1] tokens placed, [2] slots. */
lt_status lt_eval_score(lt_model *m, const lt_eval_requests *rq, int B, int T, double *ll,
                        lt_eval_progress_fn progress, void *user, int64_t stats[3], lt_err *err);

/* ---- metrics ---- */
enum { LT_EVAL_ACC = 0, LT_EVAL_ACC_NORM, LT_EVAL_ACC_BYTES, LT_EVAL_NMETRIC };
extern const char *const lt_eval_metric_names[LT_EVAL_NMETRIC]; /* "acc", "acc_norm", "acc_bytes" */

typedef struct lt_eval_summary {
    size_t n;
    double mean[LT_EVAL_NMETRIC];
    double stderr_[LT_EVAL_NMETRIC]; /* NaN when n < 2 */
} lt_eval_summary;

typedef struct lt_eval_results {
    size_t n_questions;
    size_t *first; /* (n_questions + 1) offsets into the per-choice arrays */
    double *ll;
    int *n_tokens, *n_chars, *n_bytes;
    int *pred[LT_EVAL_NMETRIC]; /* (n_questions) predicted choice per metric */
    lt_eval_summary overall;
    size_t n_cats;
    char **cat_names; /* sorted (strcmp) */
    lt_eval_summary *cats;
} lt_eval_results;

/* Number of Unicode code points / whether c is whitespace for str.rstrip. */
size_t lt_eval_utf8_chars(const char *s, size_t len);
/* Bytes of trailing whitespace (Python str.isspace) at the end of s. */
size_t lt_eval_trailing_ws(const char *s, size_t len);
/* sample std / sqrt(n) of 0/1 values with k ones out of n (NaN if n < 2) */
double lt_eval_stderr01(size_t k, size_t n);

lt_status lt_eval_results_compute(const lt_eval_task *task, const lt_eval_requests *rq, const double *ll,
                                  lt_eval_results *res, lt_err *err);
void lt_eval_results_free(lt_eval_results *res);
void lt_eval_results_print(FILE *f, const lt_eval_results *res);
/* JSON: {"format": "luxtrain-eval-1", "meta": <meta_json or {}>, "overall",
 * "categories", "questions": [{id, category, answer, pred, pred_norm,
 * pred_bytes, ll[], tokens[], chars[], bytes[]}]}, written atomically. */
lt_status lt_eval_results_write(const char *path, const lt_eval_task *task, const lt_eval_results *res,
                                const char *meta_json, lt_err *err);

/* ---- comparison of two evaluations (lt_eval_compare.c) ---- */

/* Two-sided exact McNemar test: 2 * P(X <= min(b, c)), X ~ Bin(b + c, 1/2),
 * capped at 1 (1 when b + c = 0). b, c = the discordant pair counts. */
double lt_eval_mcnemar_exact(long b, long c);

typedef struct lt_eval_cmp_row {
    char name[128]; /* category, or "overall" */
    size_t n;
    double acc_a, acc_b; /* diff = acc_b - acc_a */
    long a_only, b_only;  /* right in A only / in B only */
    double p_value;
} lt_eval_cmp_row;

typedef struct lt_eval_cmp {
    int metric; /* LT_EVAL_ACC... */
    char path_a[4096], path_b[4096];
    size_t n_paired, only_a, only_b; /* questions matched by id / unmatched */
    lt_eval_cmp_row *rows;           /* categories (sorted), then "overall" last */
    size_t n_rows;
} lt_eval_cmp;

/* a, b: result files, or run folders holding one (eval.json, else the
 * newest eval*.json). Questions are paired by id. */
lt_status lt_eval_compare(const char *a, const char *b, int metric, lt_eval_cmp *out, lt_err *err);
void lt_eval_compare_print(FILE *f, const lt_eval_cmp *c, double alpha);
void lt_eval_compare_free(lt_eval_cmp *c);

#ifdef __cplusplus
}
#endif
#endif
