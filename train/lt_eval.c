/* lt_eval.c -- multiple-choice tasks, requests, packed scoring and metrics
 * (see lt_eval.h for the algorithm and where it follows lm-evaluation-harness). */
#define _POSIX_C_SOURCE 200809L
#include "lt_eval.h"

#include "lt_chat.h"
#include "lt_json.h"
#include "lt_unicode.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const lt_eval_metric_names[LT_EVAL_NMETRIC] = {"acc", "acc_norm", "acc_bytes"};

/* ------------------------------------------------------------------ tasks */

static void question_free(lt_eval_question *q) {
    free(q->id);
    free(q->context);
    free(q->category);
    for (int i = 0; i < q->n_choices; i++) free(q->choices[i]);
    free(q->choices);
    memset(q, 0, sizeof *q);
}

void lt_eval_task_free(lt_eval_task *task) {
    if (!task) return;
    for (size_t i = 0; i < task->n; i++) question_free(&task->q[i]);
    free(task->q);
    task->q = NULL;
    task->n = 0;
}

/* One JSON record -> question (line = 1-based line number for messages). */
static lt_status parse_question(cJSON *o, const char *origin, long line, lt_eval_question *q, lt_err *err) {
    memset(q, 0, sizeof *q);
    if (!cJSON_IsObject(o)) return lt_fail(err, LT_ERR_FORMAT, "%s:%ld: expected a JSON object", origin, line);
    char buf[64];
    cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    if (cJSON_IsString(id))
        q->id = lt_strdup(id->valuestring);
    else if (cJSON_IsNumber(id)) {
        if (id->valuedouble == floor(id->valuedouble) && fabs(id->valuedouble) < 1e15)
            snprintf(buf, sizeof buf, "%.0f", id->valuedouble);
        else
            snprintf(buf, sizeof buf, "%.17g", id->valuedouble);
        q->id = lt_strdup(buf);
    } else if (!id) {
        snprintf(buf, sizeof buf, "line %ld", line);
        q->id = lt_strdup(buf);
    } else
        return lt_fail(err, LT_ERR_FORMAT, "%s:%ld: \"id\" must be a string or a number", origin, line);
    cJSON *ctx = cJSON_GetObjectItemCaseSensitive(o, "context");
    if (!ctx) ctx = cJSON_GetObjectItemCaseSensitive(o, "question");
    if (!cJSON_IsString(ctx)) {
        question_free(q);
        return lt_fail(err, LT_ERR_FORMAT, "%s:%ld: expected a string \"context\" (or \"question\")", origin, line);
    }
    q->context = lt_strdup(ctx->valuestring);
    cJSON *cat = cJSON_GetObjectItemCaseSensitive(o, "category");
    if (cat && !cJSON_IsNull(cat)) {
        if (!cJSON_IsString(cat)) {
            question_free(q);
            return lt_fail(err, LT_ERR_FORMAT, "%s:%ld: \"category\" must be a string", origin, line);
        }
        q->category = lt_strdup(cat->valuestring);
    }
    cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "choices");
    int nc = cJSON_IsArray(ch) ? cJSON_GetArraySize(ch) : 0;
    if (nc < 2) {
        question_free(q);
        return lt_fail(err, LT_ERR_FORMAT, "%s:%ld: \"choices\" must be an array of at least 2 strings", origin,
                       line);
    }
    q->choices = calloc((size_t)nc, sizeof *q->choices);
    if (!q->choices) {
        question_free(q);
        return lt_fail(err, LT_ERR_NOMEM, "%s:%ld: out of memory", origin, line);
    }
    for (int i = 0; i < nc; i++) {
        cJSON *c = cJSON_GetArrayItem(ch, i);
        if (!cJSON_IsString(c) || !c->valuestring[0]) {
            q->n_choices = i;
            question_free(q);
            return lt_fail(err, LT_ERR_FORMAT, "%s:%ld: choices[%d] must be a non-empty string", origin, line, i);
        }
        q->choices[i] = lt_strdup(c->valuestring);
        q->n_choices = i + 1;
    }
    cJSON *ans = cJSON_GetObjectItemCaseSensitive(o, "answer");
    if (!cJSON_IsNumber(ans) || ans->valuedouble != floor(ans->valuedouble) || ans->valuedouble < 0 ||
        ans->valuedouble >= nc) {
        question_free(q);
        return lt_fail(err, LT_ERR_FORMAT, "%s:%ld: \"answer\" must be an index in [0, %d)", origin, line, nc);
    }
    q->answer = (int)ans->valuedouble;
    int ok = q->id && q->context && (!cat || cJSON_IsNull(cat) || q->category);
    for (int i = 0; i < q->n_choices; i++) ok = ok && q->choices[i];
    if (!ok) {
        question_free(q);
        return lt_fail(err, LT_ERR_NOMEM, "%s:%ld: out of memory", origin, line);
    }
    return LT_OK;
}

lt_status lt_eval_task_parse(const char *text, size_t len, const char *origin, lt_eval_task *task, lt_err *err) {
    memset(task, 0, sizeof *task);
    size_t cap = 0;
    long line = 0;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && text[j] != '\n') j++;
        line++;
        size_t a = i, b = j;
        while (a < b && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r')) a++;
        while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t' || text[b - 1] == '\r')) b--;
        i = j + 1;
        if (a == b) continue;
        char why[160];
        cJSON *o = lt_json_parse_exact(text + a, b - a, why, sizeof why);
        if (!o) {
            lt_eval_task_free(task);
            return lt_fail(err, LT_ERR_FORMAT, "%s:%ld: %s", origin, line, why);
        }
        if (task->n == cap) {
            size_t nc = cap ? 2 * cap : 64;
            lt_eval_question *nq = realloc(task->q, nc * sizeof *nq);
            if (!nq) {
                cJSON_Delete(o);
                lt_eval_task_free(task);
                return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", origin);
            }
            task->q = nq;
            cap = nc;
        }
        lt_status st = parse_question(o, origin, line, &task->q[task->n], err);
        cJSON_Delete(o);
        if (st != LT_OK) {
            lt_eval_task_free(task);
            return st;
        }
        task->n++;
    }
    if (task->n == 0) return lt_fail(err, LT_ERR_FORMAT, "%s: no questions", origin);
    /* ids must be unique (the comparison pairs questions by id) */
    for (size_t a = 0; a < task->n; a++)
        for (size_t b = a + 1; b < task->n; b++)
            if (!strcmp(task->q[a].id, task->q[b].id)) {
                lt_status st =
                    lt_fail(err, LT_ERR_FORMAT, "%s: id '%s' occurs twice (questions %zu and %zu)", origin,
                            task->q[a].id, a + 1, b + 1);
                lt_eval_task_free(task);
                return st;
            }
    return LT_OK;
}

lt_status lt_eval_task_load(const char *path, lt_eval_task *task, lt_err *err) {
    char *data = NULL;
    size_t len = 0;
    memset(task, 0, sizeof *task);
    lt_status st = lt_read_file(path, &data, &len, err);
    if (st != LT_OK) return st;
    st = lt_eval_task_parse(data, len, path, task, err);
    free(data);
    return st;
}

/* growable string */
typedef struct {
    char *s;
    size_t n, cap;
} sbuf;
static int sb_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *p = realloc(b->s, nc);
        if (!p) return 0;
        b->s = p;
        b->cap = nc;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
    return 1;
}
static int sb_str(sbuf *b, const char *s) { return sb_put(b, s, strlen(s)); }

lt_status lt_eval_fewshot_prefix(const lt_eval_task *shots, const char *delimiter, char **out, lt_err *err) {
    sbuf b = {0};
    int ok = sb_put(&b, "", 0);
    for (size_t i = 0; ok && i < shots->n; i++) {
        const lt_eval_question *q = &shots->q[i];
        ok = sb_str(&b, q->context) && sb_str(&b, delimiter) && sb_str(&b, q->choices[q->answer]) &&
             sb_str(&b, "\n\n");
    }
    if (!ok) {
        free(b.s);
        return lt_fail(err, LT_ERR_NOMEM, "few-shot prefix: out of memory");
    }
    *out = b.s;
    return LT_OK;
}

lt_status lt_eval_apply_chat(lt_eval_task *task, const lt_chat_template *tpl, lt_err *err) {
    for (size_t q = 0; q < task->n; q++) {
        const char *user = task->q[q].context;
        /* render [user, assistant ""]; the assistant span starts after its header */
        lt_chat_msg msgs[2] = {{LT_ROLE_USER, user, strlen(user)}, {LT_ROLE_ASSISTANT, "", 0}};
        lt_chat_text t = {0};
        lt_status st = lt_chat_render(tpl, msgs, 2, &t, err);
        if (st != LT_OK) return lt_wrap(err, st, "question '%s'", task->q[q].id);
        if (t.n_spans < 1) {
            lt_chat_text_free(&t);
            return lt_fail(err, LT_ERR_UNSUPPORTED, "chat template %s: no assistant turn in the rendering", tpl->name);
        }
        size_t n = t.spans[t.n_spans - 1].start;
        char *c = malloc(n + 1);
        if (!c) {
            lt_chat_text_free(&t);
            return lt_fail(err, LT_ERR_NOMEM, "chat: out of memory");
        }
        memcpy(c, t.text, n);
        c[n] = 0;
        lt_chat_text_free(&t);
        free(task->q[q].context);
        task->q[q].context = c;
    }
    return LT_OK;
}

/* ---------------------------------------------------------------- unicode */

/* Decode one code point ending at s[end-1]; returns its byte length (1 for an
 * invalid byte, whose value is then returned as-is). */
static size_t utf8_last(const char *s, size_t end, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    size_t k = end - 1, n = 1;
    while (k > 0 && n < 4 && (u[k] & 0xC0) == 0x80) k--, n++;
    unsigned c = u[k];
    size_t want = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (want != n) {
        *cp = u[end - 1];
        return 1;
    }
    uint32_t v = want == 1 ? c : want == 2 ? c & 0x1F : want == 3 ? c & 0x0F : c & 0x07;
    for (size_t i = 1; i < n; i++) v = (v << 6) | (u[k + i] & 0x3F);
    *cp = v;
    return n;
}

size_t lt_eval_trailing_ws(const char *s, size_t len) {
    size_t end = len;
    while (end > 0) {
        uint32_t cp;
        size_t n = utf8_last(s, end, &cp);
        if (!lt_uni_py_isspace(cp)) break;
        end -= n;
    }
    return len - end;
}

size_t lt_eval_utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) n++;
    return n;
}

/* --------------------------------------------------------------- encoders */

static lt_status tok_encode_cb(void *ctx, const char *text, size_t len, int add_special, lt_tok_ids *out,
                               lt_err *err) {
    return lt_tok_encode((const lt_tokenizer *)ctx, text, len, add_special, out, err);
}

/* tokenizer_config.json "bos_token"/"eos_token": a string or {"content": ...} */
static int config_token(cJSON *root, const char *key, char *out, size_t cap) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap) return 0;
    snprintf(out, cap, "%s", v->valuestring);
    return 1;
}

lt_status lt_eval_encoder_init(lt_eval_encoder *enc, const lt_tokenizer *tok, const char *config_path,
                               int32_t fallback_bos, int32_t fallback_eos, lt_err *err) {
    memset(enc, 0, sizeof *enc);
    enc->encode = tok_encode_cb;
    enc->ctx = (void *)tok;
    enc->prefix_token = -1;
    int32_t bos = -1, eos = -1;
    int32_t pre[8];
    if (lt_tok_prefix_ids(tok, pre, 8) > 0) bos = pre[0];
    if (config_path && lt_file_exists(config_path)) {
        cJSON *root = NULL;
        lt_status st = lt_json_load_file(config_path, &root, err);
        if (st != LT_OK) return st;
        char name[64];
        if (bos < 0 && config_token(root, "bos_token", name, sizeof name)) bos = lt_tok_token_to_id(tok, name);
        if (config_token(root, "eos_token", name, sizeof name)) eos = lt_tok_token_to_id(tok, name);
        cJSON_Delete(root);
    }
    if (bos < 0) bos = fallback_bos;
    if (eos < 0) eos = fallback_eos;
    int32_t V = lt_tok_vocab_size(tok);
    if (bos >= V) bos = -1;
    if (eos >= V) eos = -1;
    enc->prefix_token = bos >= 0 ? bos : eos;
    if (bos >= 0) {
        const char *t = lt_tok_id_to_token(tok, bos);
        if (t && strlen(t) < sizeof enc->bos_text) snprintf(enc->bos_text, sizeof enc->bos_text, "%s", t);
    }
    return LT_OK;
}

/* enc(text) with the harness's rule: special tokens unless text already
 * starts with the BOS text. */
static lt_status encode_auto(const lt_eval_encoder *enc, const char *text, size_t len, lt_tok_ids *out,
                             lt_err *err) {
    size_t bl = strlen(enc->bos_text);
    int has_bos = bl > 0 && len >= bl && !memcmp(text, enc->bos_text, bl);
    return enc->encode(enc->ctx, text, len, !has_bos, out, err);
}

lt_status lt_eval_encode_pair(const lt_eval_encoder *enc, const char *context, size_t clen,
                              const char *continuation, size_t klen, lt_tok_ids *ctx, lt_tok_ids *cont,
                              lt_err *err) {
    ctx->n = 0;
    cont->n = 0;
    lt_status st;
    if (clen == 0) {
        st = enc->encode(enc->ctx, continuation, klen, 0, cont, err);
        if (st != LT_OK) return st;
        if (cont->n == 0) return lt_fail(err, LT_ERR_INVALID, "the continuation encodes to no tokens");
        if (enc->prefix_token < 0)
            return lt_fail(err, LT_ERR_INVALID, "empty context, and the tokenizer has neither BOS nor EOS");
        if (cont->ids[0] != enc->prefix_token) return lt_tok_ids_push(ctx, enc->prefix_token, -1, err);
        /* the continuation starts with the prefix token: it becomes the context */
        st = lt_tok_ids_push(ctx, cont->ids[0], cont->offsets ? cont->offsets[0] : -1, err);
        if (st != LT_OK) return st;
        memmove(cont->ids, cont->ids + 1, (cont->n - 1) * sizeof *cont->ids);
        if (cont->offsets) memmove(cont->offsets, cont->offsets + 1, (cont->n - 1) * sizeof *cont->offsets);
        cont->n--;
        return LT_OK;
    }
    /* trailing whitespace of the context moves into the continuation */
    size_t ws = lt_eval_trailing_ws(context, clen);
    size_t c0 = clen - ws;
    char *whole = malloc(clen + klen + 1);
    if (!whole) return lt_fail(err, LT_ERR_NOMEM, "out of memory");
    memcpy(whole, context, clen);
    memcpy(whole + clen, continuation, klen);
    whole[clen + klen] = 0;
    lt_tok_ids all = {0};
    st = encode_auto(enc, whole, clen + klen, &all, err);
    if (st == LT_OK) st = encode_auto(enc, whole, c0, ctx, err);
    free(whole);
    if (st == LT_OK && all.n > ctx->n)
        for (size_t i = ctx->n; i < all.n && st == LT_OK; i++)
            st = lt_tok_ids_push(cont, all.ids[i], all.offsets ? all.offsets[i] : -1, err);
    lt_tok_ids_free(&all);
    return st;
}

/* --------------------------------------------------------------- requests */

void lt_eval_requests_free(lt_eval_requests *rq) {
    if (!rq) return;
    for (size_t i = 0; i < rq->n; i++) free(rq->r[i].tokens);
    free(rq->r);
    free(rq->first);
    memset(rq, 0, sizeof *rq);
}

lt_status lt_eval_build_requests(const lt_eval_task *task, const char *delimiter, const lt_eval_encoder *enc,
                                 int max_len, lt_eval_requests *out, lt_err *err) {
    memset(out, 0, sizeof *out);
    size_t total = 0;
    for (size_t q = 0; q < task->n; q++) total += (size_t)task->q[q].n_choices;
    out->r = calloc(total ? total : 1, sizeof *out->r);
    out->first = calloc(task->n + 1, sizeof *out->first);
    if (!out->r || !out->first) {
        lt_eval_requests_free(out);
        return lt_fail(err, LT_ERR_NOMEM, "requests: out of memory");
    }
    size_t dl = strlen(delimiter);
    lt_tok_ids ctx = {0}, cont = {0};
    char *kbuf = NULL;
    size_t kcap = 0;
    lt_status st = LT_OK;
    for (size_t q = 0; q < task->n && st == LT_OK; q++) {
        const lt_eval_question *Q = &task->q[q];
        out->first[q] = out->n;
        for (int c = 0; c < Q->n_choices && st == LT_OK; c++) {
            size_t kl = dl + strlen(Q->choices[c]);
            if (kl + 1 > kcap) {
                char *p = realloc(kbuf, kl + 1);
                if (!p) {
                    st = lt_fail(err, LT_ERR_NOMEM, "requests: out of memory");
                    break;
                }
                kbuf = p;
                kcap = kl + 1;
            }
            memcpy(kbuf, delimiter, dl);
            memcpy(kbuf + dl, Q->choices[c], kl - dl + 1);
            st = lt_eval_encode_pair(enc, Q->context, strlen(Q->context), kbuf, kl, &ctx, &cont, err);
            if (st != LT_OK) {
                st = lt_wrap(err, st, "question '%s' choice %d", Q->id, c);
                break;
            }
            if (cont.n == 0) {
                st = lt_fail(err, LT_ERR_INVALID,
                             "question '%s' choice %d: the continuation has no tokens of its own (it merges into "
                             "the context's last token; try another --delimiter)",
                             Q->id, c);
                break;
            }
            if (ctx.n == 0) {
                st = lt_fail(err, LT_ERR_INVALID,
                             "question '%s' choice %d: the context encodes to no tokens (a whitespace-only "
                             "context with a tokenizer that adds no BOS)",
                             Q->id, c);
                break;
            }
            if (cont.n > (size_t)max_len) {
                st = lt_fail(err, LT_ERR_RANGE,
                             "question '%s' choice %d: the continuation has %zu tokens, more than --seq-len %d",
                             Q->id, c, cont.n, max_len);
                break;
            }
            lt_eval_request *r = &out->r[out->n];
            r->tokens = malloc((ctx.n + cont.n) * sizeof *r->tokens);
            if (!r->tokens) {
                st = lt_fail(err, LT_ERR_NOMEM, "requests: out of memory");
                break;
            }
            memcpy(r->tokens, ctx.ids, ctx.n * sizeof *r->tokens);
            memcpy(r->tokens + ctx.n, cont.ids, cont.n * sizeof *r->tokens);
            r->n_ctx = (int)ctx.n;
            r->n_cont = (int)cont.n;
            r->question = q;
            r->choice = c;
            out->n++;
        }
    }
    out->first[task->n] = out->n;
    lt_tok_ids_free(&ctx);
    lt_tok_ids_free(&cont);
    free(kbuf);
    if (st != LT_OK) lt_eval_requests_free(out);
    return st;
}

/* ---------------------------------------------------------------- scoring */

/* The model input of request r for sequence length T: the last T+1 tokens
 * minus the final one. *start = index (in r->tokens) of the first input
 * token, returns the input length. */
static int request_span(const lt_eval_request *r, int T, int *start) {
    int L = r->n_ctx + r->n_cont;
    int s = L - (T + 1);
    if (s < 0) s = 0;
    *start = s;
    return L - 1 - s;
}

typedef struct {
    size_t req;
    int seq, off, len, start;
} placement;

static _Thread_local size_t *g_sort_len_base; /* qsort context (qsort has none in C11) */
static int cmp_len_desc(const void *a, const void *b) {
    size_t ia = *(const size_t *)a, ib = *(const size_t *)b;
    size_t la = g_sort_len_base[ia], lb = g_sort_len_base[ib];
    if (la != lb) return la > lb ? -1 : 1;
    return ia < ib ? -1 : ia > ib;
}

lt_status lt_eval_score(lt_model *m, const lt_eval_requests *rq, int B, int T, double *ll,
                        lt_eval_progress_fn progress, void *user, int64_t stats[3], lt_err *err) {
    if (B < 1 || T < 2) return lt_fail(err, LT_ERR_INVALID, "eval: batch %d x seq_len %d: need B >= 1, T >= 2", B, T);
    if (stats) stats[0] = stats[1] = stats[2] = 0;
    if (rq->n == 0) return LT_OK;
    size_t N = (size_t)B * (size_t)T;
    size_t *order = malloc(rq->n * sizeof *order);
    size_t *lens = malloc(rq->n * sizeof *lens);
    int32_t *tokens = malloc(N * sizeof *tokens), *targets = malloc(N * sizeof *targets);
    int32_t *pos = malloc(N * sizeof *pos), *doc_start = malloc(N * sizeof *doc_start);
    float *losses = malloc(N * sizeof *losses);
    int *fill = malloc((size_t)B * sizeof *fill);
    placement *pl = malloc(N * sizeof *pl); /* at most one request per token slot */
    lt_status st = LT_OK;
    if (!order || !lens || !tokens || !targets || !pos || !doc_start || !losses || !fill || !pl) {
        st = lt_fail(err, LT_ERR_NOMEM, "eval: out of memory for a %d x %d batch", B, T);
        goto done;
    }
    for (size_t i = 0; i < rq->n; i++) {
        int s;
        order[i] = i;
        lens[i] = (size_t)request_span(&rq->r[i], T, &s);
        ll[i] = NAN;
    }
    /* longest first, first fit into the B sequences of the current batch */
    g_sort_len_base = lens;
    qsort(order, rq->n, sizeof *order, cmp_len_desc);
    st = lt_model_plan(m, B, T, err);
    if (st != LT_OK) goto done;

    size_t next = 0, done_n = 0;
    while (next < rq->n) {
        size_t n_pl = 0;
        for (int b = 0; b < B; b++) fill[b] = 0;
        /* place requests until one does not fit anywhere */
        while (next < rq->n) {
            size_t i = order[next];
            int len = (int)lens[i], b = 0;
            while (b < B && fill[b] + len > T) b++;
            if (b == B) break;
            int s;
            request_span(&rq->r[i], T, &s);
            pl[n_pl++] = (placement){i, b, fill[b], len, s};
            fill[b] += len;
            next++;
        }
        /* pack: documents back to back, the rest of a row is one-token padding documents */
        for (size_t n = 0; n < N; n++) {
            int t = (int)(n % (size_t)T);
            tokens[n] = 0;
            targets[n] = -1;
            pos[n] = 0;
            doc_start[n] = t;
        }
        int64_t placed = 0;
        for (size_t k = 0; k < n_pl; k++) {
            const lt_eval_request *r = &rq->r[pl[k].req];
            const int32_t *src = r->tokens + pl[k].start; /* input tokens */
            size_t row = (size_t)pl[k].seq * (size_t)T;
            for (int j = 0; j < pl[k].len; j++) {
                size_t n = row + (size_t)pl[k].off + (size_t)j;
                int abs_next = pl[k].start + j + 1; /* index of the token predicted here */
                tokens[n] = src[j];
                pos[n] = j;
                doc_start[n] = pl[k].off;
                targets[n] = abs_next >= r->n_ctx ? r->tokens[abs_next] : -1;
            }
            placed += pl[k].len;
        }
        lt_batch batch = {B, T, tokens, targets, pos, doc_start};
        lt_step_result res;
        st = lt_model_step(m, &batch, 0, 1.0, &res, err);
        if (st != LT_OK) goto done;
        for (size_t n = 0; n < N; n++) losses[n] = NAN;
        st = lt_model_get_token_losses(m, losses, err);
        if (st != LT_OK) goto done;
        for (size_t k = 0; k < n_pl; k++) {
            const lt_eval_request *r = &rq->r[pl[k].req];
            size_t row = (size_t)pl[k].seq * (size_t)T + (size_t)pl[k].off;
            double sum = 0;
            for (int j = 0; j < pl[k].len; j++)
                if (pl[k].start + j + 1 >= r->n_ctx) sum += losses[row + (size_t)j];
            if (!isfinite(sum)) {
                st = lt_fail(err, LT_ERR_NONFINITE, "eval: request %zu (question %zu choice %d): log-likelihood is %g",
                             pl[k].req, r->question, r->choice, -sum);
                goto done;
            }
            ll[pl[k].req] = -sum;
        }
        done_n += n_pl;
        if (stats) {
            stats[0]++;
            stats[1] += placed;
            stats[2] += (int64_t)N;
        }
        if (progress) progress(user, done_n, rq->n);
    }
done:
    free(order);
    free(lens);
    free(tokens);
    free(targets);
    free(pos);
    free(doc_start);
    free(losses);
    free(fill);
    free(pl);
    return st;
}

/* ---------------------------------------------------------------- metrics */

double lt_eval_stderr01(size_t k, size_t n) {
    if (n < 2) return NAN;
    double mu = (double)k / (double)n;
    /* sum (x - mu)^2 over k ones and n - k zeros */
    double ss = (double)k * (1 - mu) * (1 - mu) + (double)(n - k) * mu * mu;
    return sqrt(ss / (double)(n - 1)) / sqrt((double)n);
}

void lt_eval_results_free(lt_eval_results *res) {
    if (!res) return;
    free(res->first);
    free(res->ll);
    free(res->n_tokens);
    free(res->n_chars);
    free(res->n_bytes);
    for (int k = 0; k < LT_EVAL_NMETRIC; k++) free(res->pred[k]);
    for (size_t c = 0; c < res->n_cats; c++) free(res->cat_names[c]);
    free(res->cat_names);
    free(res->cats);
    memset(res, 0, sizeof *res);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void summarize(lt_eval_summary *s, const size_t *ones, size_t n) {
    s->n = n;
    for (int k = 0; k < LT_EVAL_NMETRIC; k++) {
        s->mean[k] = n ? (double)ones[k] / (double)n : NAN;
        s->stderr_[k] = lt_eval_stderr01(ones[k], n);
    }
}

/* first index of the maximum of x[i] / div[i] (div NULL: x itself) */
static int argmax_div(const double *x, const int *div, size_t n) {
    int best = 0;
    double bv = div ? x[0] / div[0] : x[0];
    for (size_t i = 1; i < n; i++) {
        double v = div ? x[i] / div[i] : x[i];
        if (v > bv) best = (int)i, bv = v;
    }
    return best;
}

lt_status lt_eval_results_compute(const lt_eval_task *task, const lt_eval_requests *rq, const double *ll,
                                  lt_eval_results *res, lt_err *err) {
    memset(res, 0, sizeof *res);
    size_t nq = task->n, nr = rq->n;
    res->n_questions = nq;
    res->first = malloc((nq + 1) * sizeof *res->first);
    res->ll = malloc((nr ? nr : 1) * sizeof *res->ll);
    res->n_tokens = malloc((nr ? nr : 1) * sizeof(int));
    res->n_chars = malloc((nr ? nr : 1) * sizeof(int));
    res->n_bytes = malloc((nr ? nr : 1) * sizeof(int));
    int ok = res->first && res->ll && res->n_tokens && res->n_chars && res->n_bytes;
    for (int k = 0; k < LT_EVAL_NMETRIC; k++) ok = ok && (res->pred[k] = malloc((nq ? nq : 1) * sizeof(int)));
    res->cat_names = calloc(nq ? nq : 1, sizeof *res->cat_names);
    res->cats = calloc(nq ? nq : 1, sizeof *res->cats);
    if (!ok || !res->cat_names || !res->cats) {
        lt_eval_results_free(res);
        return lt_fail(err, LT_ERR_NOMEM, "eval results: out of memory");
    }
    memcpy(res->first, rq->first, (nq + 1) * sizeof *res->first);
    for (size_t q = 0; q < nq; q++) {
        const lt_eval_question *Q = &task->q[q];
        size_t f = rq->first[q];
        if (rq->first[q + 1] - f != (size_t)Q->n_choices) {
            lt_eval_results_free(res);
            return lt_fail(err, LT_ERR_INVALID, "eval results: question '%s' has %d choices but %zu requests", Q->id,
                           Q->n_choices, rq->first[q + 1] - f);
        }
        for (int c = 0; c < Q->n_choices; c++) {
            size_t i = f + (size_t)c;
            if (!isfinite(ll[i])) {
                lt_status st = lt_fail(err, LT_ERR_NONFINITE, "eval results: question '%s' choice %d: log-likelihood %g",
                                       Q->id, c, ll[i]);
                lt_eval_results_free(res);
                return st;
            }
            res->ll[i] = ll[i];
            res->n_tokens[i] = rq->r[i].n_cont;
            size_t bl = strlen(Q->choices[c]);
            res->n_chars[i] = (int)lt_eval_utf8_chars(Q->choices[c], bl);
            res->n_bytes[i] = (int)bl;
        }
        res->pred[LT_EVAL_ACC][q] = argmax_div(res->ll + f, NULL, (size_t)Q->n_choices);
        res->pred[LT_EVAL_ACC_NORM][q] = argmax_div(res->ll + f, res->n_chars + f, (size_t)Q->n_choices);
        res->pred[LT_EVAL_ACC_BYTES][q] = argmax_div(res->ll + f, res->n_bytes + f, (size_t)Q->n_choices);
        if (Q->category) {
            size_t c = 0;
            while (c < res->n_cats && strcmp(res->cat_names[c], Q->category)) c++;
            if (c == res->n_cats) {
                if (!(res->cat_names[c] = lt_strdup(Q->category))) {
                    lt_eval_results_free(res);
                    return lt_fail(err, LT_ERR_NOMEM, "eval results: out of memory");
                }
                res->n_cats++;
            }
        }
    }
    qsort(res->cat_names, res->n_cats, sizeof *res->cat_names, cmp_str);
    size_t all[LT_EVAL_NMETRIC] = {0};
    for (size_t q = 0; q < nq; q++)
        for (int k = 0; k < LT_EVAL_NMETRIC; k++) all[k] += res->pred[k][q] == task->q[q].answer;
    summarize(&res->overall, all, nq);
    for (size_t c = 0; c < res->n_cats; c++) {
        size_t ones[LT_EVAL_NMETRIC] = {0}, n = 0;
        for (size_t q = 0; q < nq; q++) {
            if (!task->q[q].category || strcmp(task->q[q].category, res->cat_names[c])) continue;
            n++;
            for (int k = 0; k < LT_EVAL_NMETRIC; k++) ones[k] += res->pred[k][q] == task->q[q].answer;
        }
        summarize(&res->cats[c], ones, n);
    }
    return LT_OK;
}

static void print_summary(FILE *f, const char *name, const lt_eval_summary *s) {
    fprintf(f, "%-20s %5zu", name, s->n);
    for (int k = 0; k < LT_EVAL_NMETRIC; k++) {
        if (isnan(s->stderr_[k]))
            fprintf(f, "   %6.4f ±    n/a", s->mean[k]);
        else
            fprintf(f, "   %6.4f ± %6.4f", s->mean[k], s->stderr_[k]);
    }
    fprintf(f, "\n");
}

void lt_eval_results_print(FILE *f, const lt_eval_results *res) {
    fprintf(f, "%-20s %5s   %-15s   %-15s   %-15s\n", "category", "n", "acc", "acc_norm", "acc_bytes");
    for (size_t c = 0; c < res->n_cats; c++) print_summary(f, res->cat_names[c], &res->cats[c]);
    print_summary(f, "overall", &res->overall);
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

static cJSON *summary_json(const lt_eval_summary *s) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddItemToObject(o, "n", cJSON_CreateNumber((double)s->n));
    for (int k = 0; k < LT_EVAL_NMETRIC; k++) {
        char key[32];
        cJSON_AddItemToObject(o, lt_eval_metric_names[k], num_or_null(s->mean[k]));
        snprintf(key, sizeof key, "%s_stderr", lt_eval_metric_names[k]);
        cJSON_AddItemToObject(o, key, num_or_null(s->stderr_[k]));
    }
    return o;
}

lt_status lt_eval_results_write(const char *path, const lt_eval_task *task, const lt_eval_results *res,
                                const char *meta_json, lt_err *err) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    cJSON_AddStringToObject(root, "format", "luxtrain-eval-1");
    cJSON *meta = meta_json ? cJSON_Parse(meta_json) : cJSON_CreateObject();
    if (!meta) meta = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "meta", meta);
    cJSON_AddItemToObject(root, "overall", summary_json(&res->overall));
    cJSON *cats = cJSON_AddObjectToObject(root, "categories");
    for (size_t c = 0; c < res->n_cats; c++) cJSON_AddItemToObject(cats, res->cat_names[c], summary_json(&res->cats[c]));
    cJSON *qs = cJSON_AddArrayToObject(root, "questions");
    for (size_t q = 0; q < res->n_questions; q++) {
        const lt_eval_question *Q = &task->q[q];
        size_t f = res->first[q], n = res->first[q + 1] - f;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", Q->id);
        if (Q->category)
            cJSON_AddStringToObject(o, "category", Q->category);
        else
            cJSON_AddNullToObject(o, "category");
        cJSON_AddNumberToObject(o, "answer", Q->answer);
        cJSON_AddNumberToObject(o, "pred", res->pred[LT_EVAL_ACC][q]);
        cJSON_AddNumberToObject(o, "pred_norm", res->pred[LT_EVAL_ACC_NORM][q]);
        cJSON_AddNumberToObject(o, "pred_bytes", res->pred[LT_EVAL_ACC_BYTES][q]);
        cJSON *a_ll = cJSON_AddArrayToObject(o, "ll"), *a_t = cJSON_AddArrayToObject(o, "tokens");
        cJSON *a_c = cJSON_AddArrayToObject(o, "chars"), *a_b = cJSON_AddArrayToObject(o, "bytes");
        for (size_t i = 0; i < n; i++) {
            cJSON_AddItemToArray(a_ll, cJSON_CreateNumber(res->ll[f + i]));
            cJSON_AddItemToArray(a_t, cJSON_CreateNumber(res->n_tokens[f + i]));
            cJSON_AddItemToArray(a_c, cJSON_CreateNumber(res->n_chars[f + i]));
            cJSON_AddItemToArray(a_b, cJSON_CreateNumber(res->n_bytes[f + i]));
        }
        cJSON_AddItemToArray(qs, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    size_t len = strlen(text);
    text[len] = '\n'; /* replace NUL: the buffer is written with its length */
    lt_status st = lt_write_file_atomic(path, text, len + 1, err);
    free(text);
    return st;
}
