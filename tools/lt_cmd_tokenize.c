/*
 * lt_cmd_tokenize.c -- `luxtrain tokenize` (JSONL -> HDF5 token shards) and
 * `luxtrain inspect SHARD.h5` (lt_inspect_shard).
 *
 * tokenize reads the input files in order, a block of records at a time;
 * worker threads parse, render (chat templates, lt_chat.h) and tokenize the
 * records of a block, and the main thread writes the results in input order,
 * so the shards are the same whatever the thread count. Shards are written
 * under a hidden temporary name and renamed when complete (lt_shard.h); a
 * failed run removes every shard it wrote.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lt_chat.h"
#include "lt_fs.h"
#include "lt_cli.h"
#include "lt_json.h"
#include "lt_shard.h"
#include "lt_tokenizer.h"

typedef enum { FMT_AUTO = 0, FMT_MESSAGES, FMT_CONVERSATIONS, FMT_INSTRUCTION, FMT_TEXT } rec_format;
static const char *fmt_name[] = {"auto", "messages", "conversations", "instruction", "text"};

/* ------------------------------------------------------------------ */
/* tokenizer folder: tokenizer.json + tokenizer_config.json             */

typedef struct {
    lt_tokenizer *tok;
    char bos[128], eos[128]; /* from tokenizer_config.json ("" if absent) */
    char *chat_template;     /* lt_chat_template_text (NULL if absent) */
    int have_config;
} tok_bundle;

static const char *json_token_string(cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        cJSON *c = cJSON_GetObjectItem(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

static void free_bundle(tok_bundle *b);

static lt_status load_bundle(const char *path, tok_bundle *b, lt_err *err) {
    memset(b, 0, sizeof *b);
    char tj[4096], cfg[4096];
    if (lt_is_dir(path)) {
        if (!lt_path_join(tj, sizeof tj, path, "tokenizer.json") ||
            !lt_path_join(cfg, sizeof cfg, path, "tokenizer_config.json"))
            return lt_fail(err, LT_ERR_INVALID, "%s: path too long", path);
    } else {
        snprintf(tj, sizeof tj, "%s", path);
        const char *slash = strrchr(path, '/');
        snprintf(cfg, sizeof cfg, "%.*stokenizer_config.json", slash ? (int)(slash - path + 1) : 0, path);
    }
    lt_status st = lt_tok_load(tj, &b->tok, err);
    if (!st) st = lt_chat_template_text(cfg, &b->chat_template, err); /* or chat_template.jinja */
    if (st) {
        lt_tok_free(b->tok);
        b->tok = NULL;
        return st;
    }
    if (!lt_file_exists(cfg)) return LT_OK;
    cJSON *j = NULL;
    if ((st = lt_json_load_file(cfg, &j, err))) {
        free_bundle(b);
        memset(b, 0, sizeof *b);
        return st;
    }
    b->have_config = 1;
    const char *s;
    if ((s = json_token_string(cJSON_GetObjectItem(j, "bos_token")))) snprintf(b->bos, sizeof b->bos, "%s", s);
    if ((s = json_token_string(cJSON_GetObjectItem(j, "eos_token")))) snprintf(b->eos, sizeof b->eos, "%s", s);
    cJSON_Delete(j);
    return LT_OK;
}

static void free_bundle(tok_bundle *b) {
    lt_tok_free(b->tok);
    free(b->chat_template);
}

/* ------------------------------------------------------------------ */
/* records                                                              */

typedef struct {
    int file;
    long line;
    char *json;
    size_t len;
    rec_format fmt;
    /* results */
    int32_t *ids;
    uint8_t *mask;
    size_t n;
    int64_t n_targets;
    char err[LT_ERR_MSG_MAX];
    int failed;
    uint64_t hash;
} rec;

typedef struct {
    const tok_bundle *tb;
    const lt_chat_template *tpl; /* NULL if none */
    int32_t eos_id;              /* appended to text documents, -1 if the post-processor adds it */
    rec *recs;
    size_t n_recs;
    atomic_size_t next;
} work;

static int role_of(const char *s, lt_chat_role *r) {
    if (!strcmp(s, "system")) *r = LT_ROLE_SYSTEM;
    else if (!strcmp(s, "user") || !strcmp(s, "human")) *r = LT_ROLE_USER;
    else if (!strcmp(s, "assistant") || !strcmp(s, "gpt")) *r = LT_ROLE_ASSISTANT;
    else return 0;
    return 1;
}

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static int fail_rec(rec *r, const char *fmt, const char *a, const char *b) {
    snprintf(r->err, sizeof r->err, fmt, a ? a : "", b ? b : "");
    r->failed = 1;
    return 0;
}

static int is_blank(const char *s) {
    size_t a, b;
    lt_chat_py_strip(s, strlen(s), &a, &b);
    return a == b;
}

/* detect the form of a parsed record; FMT_AUTO if none */
static rec_format detect_format(cJSON *j) {
    if (!cJSON_IsObject(j)) return FMT_AUTO;
    if (cJSON_GetObjectItem(j, "messages")) return FMT_MESSAGES;
    if (cJSON_GetObjectItem(j, "conversations")) return FMT_CONVERSATIONS;
    if (cJSON_GetObjectItem(j, "instruction")) return FMT_INSTRUCTION;
    if (cJSON_GetObjectItem(j, "text")) return FMT_TEXT;
    return FMT_AUTO;
}

static void process(work *w, rec *r) {
    lt_err err = {{0}};
    char why[160];
    r->hash = fnv1a(r->json, r->len);
    cJSON *j = lt_json_parse_exact(r->json, r->len, why, sizeof why);
    if (!j) {
        fail_rec(r, "%s%s", why, "");
        return;
    }
    if (!cJSON_IsObject(j)) {
        fail_rec(r, "the record is not a JSON object%s%s", "", "");
        cJSON_Delete(j);
        return;
    }
    lt_chat_msg msgs[256];
    lt_chat_msg *m = msgs;
    size_t n = 0, cap = 256;
    lt_tok_ids ids = {0};
    if (r->fmt == FMT_TEXT) {
        cJSON *t = cJSON_GetObjectItem(j, "text");
        if (!cJSON_IsString(t)) {
            fail_rec(r, t ? "field 'text' is not a string%s%s" : "missing field 'text'%s%s", "", "");
            goto done;
        }
        if (t->valuestring[0] == 0) {
            fail_rec(r, "empty 'text'%s%s", "", "");
            goto done;
        }
        if (lt_tok_encode(w->tb->tok, t->valuestring, strlen(t->valuestring), 1, &ids, &err) ||
            (w->eos_id >= 0 && lt_tok_ids_push(&ids, w->eos_id, -1, &err))) {
            fail_rec(r, "%s%s", err.msg, "");
            goto done;
        }
        r->mask = malloc(ids.n + 1);
        if (!r->mask) {
            fail_rec(r, "out of memory for %s%s tokens", "the", "");
            goto done;
        }
        for (size_t i = 0; i < ids.n; i++) r->mask[i] = i > 0;
    } else {
        if (!w->tpl) {
            fail_rec(r, "no chat template (give --template)%s%s", "", "");
            goto done;
        }
        if (r->fmt == FMT_INSTRUCTION) {
            cJSON *ins = cJSON_GetObjectItem(j, "instruction"), *inp = cJSON_GetObjectItem(j, "input");
            cJSON *out = cJSON_GetObjectItem(j, "output"), *sys = cJSON_GetObjectItem(j, "system");
            if (!out) out = cJSON_GetObjectItem(j, "answer");
            if (!out) out = cJSON_GetObjectItem(j, "response");
            if (!cJSON_IsString(ins)) {
                fail_rec(r, ins ? "field 'instruction' is not a string%s%s" : "missing field 'instruction'%s%s", "", "");
                goto done;
            }
            if (!cJSON_IsString(out)) {
                fail_rec(r, out ? "field 'output' is not a string%s%s" : "missing field 'output' (or 'answer')%s%s", "", "");
                goto done;
            }
            if (inp && !cJSON_IsString(inp)) {
                fail_rec(r, "field 'input' is not a string%s%s", "", "");
                goto done;
            }
            if (is_blank(out->valuestring)) {
                fail_rec(r, "empty assistant turn ('output' is empty)%s%s", "", "");
                goto done;
            }
            /* user turn: instruction, then a blank line and the input if any */
            static const char sep[] = "\n\n";
            size_t li = strlen(ins->valuestring), lp = inp ? strlen(inp->valuestring) : 0;
            char *user = malloc(li + lp + 3);
            memcpy(user, ins->valuestring, li);
            size_t ul = li;
            if (lp) {
                memcpy(user + ul, sep, 2);
                memcpy(user + ul + 2, inp->valuestring, lp);
                ul += 2 + lp;
            }
            user[ul] = 0;
            if (cJSON_IsString(sys) && sys->valuestring[0]) m[n++] = (lt_chat_msg){LT_ROLE_SYSTEM, sys->valuestring, strlen(sys->valuestring)};
            m[n++] = (lt_chat_msg){LT_ROLE_USER, user, ul};
            m[n++] = (lt_chat_msg){LT_ROLE_ASSISTANT, out->valuestring, strlen(out->valuestring)};
            lt_status st = lt_chat_tokenize(w->tb->tok, w->tpl, m, n, &ids, &r->mask, &(size_t){0}, &err);
            free(user);
            if (st) {
                fail_rec(r, "%s%s", err.msg, "");
                goto done;
            }
        } else {
            int conv = r->fmt == FMT_CONVERSATIONS;
            const char *key = conv ? "conversations" : "messages";
            cJSON *arr = cJSON_GetObjectItem(j, key);
            if (!cJSON_IsArray(arr)) {
                fail_rec(r, arr ? "field '%s' is not an array%s" : "missing field '%s'%s", key, "");
                goto done;
            }
            size_t cnt = (size_t)cJSON_GetArraySize(arr);
            if (cnt > cap) {
                if (!(m = malloc(cnt * sizeof *m))) {
                    m = msgs;
                    fail_rec(r, "out of memory for %s turns%s", "the", "");
                    goto done;
                }
                cap = cnt;
            }
            cJSON *it;
            int k = 0;
            cJSON_ArrayForEach(it, arr) {
                char idx[32];
                snprintf(idx, sizeof idx, "%d", k);
                if (!cJSON_IsObject(it)) {
                    fail_rec(r, "turn %s is %s, not an object", idx, lt_json_kind(it));
                    goto done;
                }
                cJSON *ro = cJSON_GetObjectItem(it, "role"), *co = cJSON_GetObjectItem(it, "content");
                const char *rk = "role", *ck = "content";
                if (!ro && !co) {
                    ro = cJSON_GetObjectItem(it, "from");
                    co = cJSON_GetObjectItem(it, "value");
                    rk = "from";
                    ck = "value";
                }
                if (!cJSON_IsString(ro)) {
                    fail_rec(r, "turn %s: missing field '%s'", idx, rk);
                    goto done;
                }
                if (!cJSON_IsString(co)) {
                    fail_rec(r, "turn %s: missing field '%s' (or not a string)", idx, ck);
                    goto done;
                }
                lt_chat_role role;
                if (!role_of(ro->valuestring, &role)) {
                    char msg[160];
                    snprintf(msg, sizeof msg, "turn %d: unknown role '%.80s'", k, ro->valuestring);
                    fail_rec(r, "%s (expected system, user/human, assistant/gpt)%s", msg, "");
                    goto done;
                }
                if (role == LT_ROLE_ASSISTANT && is_blank(co->valuestring)) {
                    fail_rec(r, "turn %s: empty assistant turn%s", idx, "");
                    goto done;
                }
                m[n++] = (lt_chat_msg){role, co->valuestring, strlen(co->valuestring)};
                k++;
            }
            if (lt_chat_tokenize(w->tb->tok, w->tpl, m, n, &ids, &r->mask, &(size_t){0}, &err)) {
                fail_rec(r, "%s%s", err.msg, "");
                goto done;
            }
        }
    }
    if (ids.n == 0) {
        fail_rec(r, "the record tokenizes to nothing%s%s", "", "");
        goto done;
    }
    r->ids = ids.ids;
    ids.ids = NULL;
    r->n = ids.n;
    r->mask[0] = 0;
    for (size_t i = 1; i < r->n; i++) r->n_targets += r->mask[i];
done:
    if (m != msgs) free(m);
    lt_tok_ids_free(&ids);
    cJSON_Delete(j);
    if (r->failed) {
        free(r->mask);
        r->mask = NULL;
    }
}

static void *worker(void *arg) {
    work *w = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&w->next, 1);
        if (i >= w->n_recs) break;
        process(w, &w->recs[i]);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* the run: shards, cleanup on failure and signals                      */

#define MAX_DONE 100000
static char sig_tmp[2][1200]; /* temporary files to delete on SIGINT/SIGTERM */

static void on_signal(int sig) {
    for (int i = 0; i < 2; i++)
        if (sig_tmp[i][0]) unlink(sig_tmp[i]);
    _exit(128 + sig);
}

typedef struct {
    const char *dir, *prefix;
    int index;
    lt_shard_writer *w;
    int64_t shard_tokens;
    int slot; /* sig_tmp slot */
    int64_t docs, tokens, targets;
} split;

typedef struct {
    char **done;
    int n_done;
} done_list;

static lt_status split_add(split *s, const lt_shard_meta *meta, done_list *dl, const int32_t *ids, const uint8_t *mask,
                           size_t n, lt_err *err) {
    lt_status st;
    if (s->w && lt_shard_writer_num_docs(s->w) > 0 && lt_shard_writer_num_tokens(s->w) + (int64_t)n > s->shard_tokens) {
        char *final = NULL;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s-%05d.h5", s->dir, s->prefix, s->index);
        st = lt_shard_writer_finish(s->w, err); /* sig_tmp stays set: unlinking a renamed tmp is harmless */
        s->w = NULL;
        if (st) return st;
        final = strdup(path);
        dl->done = realloc(dl->done, (size_t)(dl->n_done + 1) * sizeof(char *));
        dl->done[dl->n_done++] = final;
        s->index++;
    }
    if (!s->w) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s-%05d.h5", s->dir, s->prefix, s->index);
        /* register the temporary name for the signal handler before it exists */
        char tmp[sizeof sig_tmp[0]];
        lt_shard_tmp_path(path, tmp, sizeof tmp);
        memcpy(sig_tmp[s->slot], tmp, sizeof tmp);
        if ((st = lt_shard_writer_open(path, meta, &s->w, err))) return st;
    }
    if ((st = lt_shard_writer_add(s->w, ids, mask, n, err))) return st;
    s->docs++;
    s->tokens += (int64_t)n;
    for (size_t i = 1; i < n; i++) s->targets += mask[i];
    return LT_OK;
}

static lt_status split_finish(split *s, done_list *dl, lt_err *err) {
    if (!s->w) return LT_OK;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%05d.h5", s->dir, s->prefix, s->index);
    lt_status st = lt_shard_writer_finish(s->w, err);
    s->w = NULL;
    if (st) return st;
    dl->done = realloc(dl->done, (size_t)(dl->n_done + 1) * sizeof(char *));
    dl->done[dl->n_done++] = strdup(path);
    s->index++;
    return LT_OK;
}

typedef struct {
    char *tokenizer, *out, *tmpl, *format, **input;
    int n_input, skip_bad, overwrite, quiet, help;
    long shard_tokens, max_doc, threads;
    double val_frac;
} tok_opts;

static void template_help(FILE *f) {
    fprintf(f,
            "\nrecords, one JSON object per line:\n"
            "  {\"messages\": [{\"role\", \"content\"}, ...]}\n"
            "  {\"conversations\": [{\"from\": human|gpt|system, \"value\"}, ...]}\n"
            "  {\"instruction\", \"input\", \"output\"} or {\"instruction\", \"answer\"}\n"
            "  {\"text\"}   (raw text: BOS where the tokenizer adds one, EOS at the end; trained on every token)\n"
            "chat templates: %s\n"
            "  (default: recognised from tokenizer_config.json's chat_template)\n",
            lt_chat_template_names());
}

#define F(x) offsetof(tok_opts, x)
static const char *const FORMATS[] = {"messages", "conversations", "instruction", "text", NULL};
static const lt_optdef OPTS[] = {
    {.name = "tokenizer", .k = LT_OPT_STR, .off = F(tokenizer), .meta = "PATH", .required = 1,
     .help = "model folder with tokenizer.json + tokenizer_config.json, or a tokenizer.json"},
    {.name = "input", .k = LT_OPT_LIST, .off = F(input), .off_n = F(n_input), .meta = "FILE...", .required = 1,
     .help = "JSONL files in order ('-' = stdin)"},
    {.name = "out", .k = LT_OPT_STR, .off = F(out), .meta = "DIR", .required = 1, .help = "output folder (created)"},
    {.name = "template", .k = LT_OPT_STR, .off = F(tmpl), .meta = "NAME", .help = "chat template (listed below)"},
    {.name = "format", .k = LT_OPT_CHOICE, .off = F(format), .meta = "F", .choices = FORMATS,
     .help = "force the record form (default: detected per file from its first record)"},
    {.name = "shard-tokens", .k = LT_OPT_LONG, .off = F(shard_tokens), .def = "50000000", .meta = "N", .lo = 1,
     .hi = 1L << 40, .help = "start a new shard past N tokens"},
    {.name = "val-fraction", .k = LT_OPT_DBL, .off = F(val_frac), .def = "0", .meta = "F", .lo = 0, .hi = 1,
     .hi_open = 1, .help = "hold out this fraction of documents (chosen by a hash of the record) in val-*.h5"},
    {.name = "max-doc-tokens", .k = LT_OPT_LONG, .off = F(max_doc), .def = "0", .meta = "N", .lo = 0, .hi = 1L << 40,
     .help = "cut documents longer than N tokens (counted); 0 = no limit"},
    {.name = "threads", .k = LT_OPT_LONG, .off = F(threads), .def = "0", .meta = "N", .lo = 0, .hi = 1024,
     .help = "tokenizer threads; 0 = all cores"},
    {.name = "skip-bad", .k = LT_OPT_FLAG, .off = F(skip_bad), .help = "skip and count malformed records instead of stopping"},
    {.name = "overwrite", .k = LT_OPT_FLAG, .off = F(overwrite), .help = "delete existing train-*.h5 / val-*.h5 in DIR first"},
    {.name = "quiet", .k = LT_OPT_FLAG, .off = F(quiet), .help = "no progress bar"},
};
static const lt_optset SET = {
    .cmd = "tokenize",
    .usage = "usage: luxtrain tokenize --tokenizer PATH --input FILE.jsonl [FILE ...] --out DIR [options]\n"
             "Tokenizes JSONL instruction sets / conversations / raw text into HDF5 token shards\n"
             "(DIR/train-00000.h5, ..., DIR/val-00000.h5; layout in docs/shards.md).\n",
    .defs = OPTS,
    .n = sizeof OPTS / sizeof OPTS[0],
    .off_help = F(help),
    .more_help = template_help,
};
#undef F

static int is_shard_name(const char *n) {
    size_t l = strlen(n);
    return l > 3 && !strcmp(n + l - 3, ".h5") && (!strncmp(n, "train-", 6) || !strncmp(n, "val-", 4));
}

static const char *base_name(const char *p) {
    if (!strcmp(p, "-")) return "<stdin>";
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void human_count(double v, char *buf, size_t cap) {
    if (v >= 1e9) snprintf(buf, cap, "%.2fG", v / 1e9);
    else if (v >= 1e6) snprintf(buf, cap, "%.2fM", v / 1e6);
    else if (v >= 1e4) snprintf(buf, cap, "%.1fk", v / 1e3);
    else snprintf(buf, cap, "%.0f", v);
}

static int tokenize_run(void *arg) {
    const tok_opts *o = arg;
    const char *tok_path = o->tokenizer, *out_dir = o->out, *tpl_name = o->tmpl;
    char *const *inputs = o->input;
    int n_inputs = o->n_input, skip_bad = o->skip_bad, overwrite = o->overwrite, quiet = o->quiet, made_out = 0;
    long threads = o->threads ? o->threads : sysconf(_SC_NPROCESSORS_ONLN), shard_tokens = o->shard_tokens,
         max_doc = o->max_doc;
    double val_frac = o->val_frac;
    rec_format force = !o->format ? FMT_AUTO
                       : !strcmp(o->format, "messages") ? FMT_MESSAGES
                       : !strcmp(o->format, "conversations") ? FMT_CONVERSATIONS
                       : !strcmp(o->format, "instruction") ? FMT_INSTRUCTION
                                                             : FMT_TEXT;
    if (threads < 1) threads = 1;
    lt_err err = {{0}};
    int rc = 1;
    tok_bundle tb;
    if (load_bundle(tok_path, &tb, &err)) {
        fprintf(stderr, "tokenize: %s\n", err.msg);
        return 1;
    }
    /* template: named, or recognised from tokenizer_config.json (resolved
     * lazily: raw text needs none) */
    lt_chat_template tpl;
    int have_tpl = 0;
    char tpl_err[LT_ERR_MSG_MAX] = "";
    if (tpl_name) {
        if (lt_chat_template_by_name(tpl_name, &tpl, &err)) {
            fprintf(stderr, "tokenize: %s\n", err.msg);
            goto out_early;
        }
        have_tpl = 1;
    } else if (tb.chat_template) {
        if (lt_chat_template_detect(tb.chat_template, &tpl, &err) == LT_OK)
            have_tpl = 1;
        else
            snprintf(tpl_err, sizeof tpl_err, "%s", err.msg);
    } else {
        snprintf(tpl_err, sizeof tpl_err, "%s has no chat_template; name one with --template (%s)", tok_path,
                 lt_chat_template_names());
    }
    if (have_tpl) lt_chat_template_set_tokens(&tpl, tb.bos[0] ? tb.bos : NULL, tb.eos[0] ? tb.eos : NULL);
    /* EOS for raw text: nothing if the post-processor already ends with it */
    int32_t eos_id = -1;
    {
        int32_t suf[8];
        int ns = lt_tok_suffix_ids(tb.tok, suf, 8);
        const char *eos = tb.eos[0] ? tb.eos : have_tpl ? tpl.eos : NULL;
        if (ns == 0 && eos) eos_id = lt_tok_token_to_id(tb.tok, eos);
        if (ns == 0 && eos && eos_id < 0) {
            fprintf(stderr, "tokenize: eos_token '%s' is not in the vocabulary\n", eos);
            goto out_early;
        }
    }
    /* output folder (removed again if this run made it and fails) */
    made_out = mkdir(out_dir, 0755) == 0;
    if (!lt_is_dir(out_dir)) {
        fprintf(stderr, "tokenize: cannot create folder %s\n", out_dir);
        goto out_early;
    }
    /* shards a killed tokenize of this host left half-written (".NAME.h5.tmp-<host>-<pid>") */
    lt_fs_remove_stale_note(out_dir, NULL, stderr);
    {
        DIR *d = opendir(out_dir);
        struct dirent *e;
        int existing = 0;
        while (d && (e = readdir(d))) {
            if (!is_shard_name(e->d_name)) continue;
            if (overwrite) {
                char p[4096];
                if (lt_path_join(p, sizeof p, out_dir, e->d_name)) unlink(p);
            } else
                existing++;
        }
        if (d) closedir(d);
        if (existing) {
            fprintf(stderr, "tokenize: %s already holds %d shard(s); use --overwrite to replace them\n", out_dir,
                    existing);
            goto out_early;
        }
    }

    lt_shard_meta meta = {0};
    meta.vocab_size = lt_tok_vocab_size(tb.tok);
    snprintf(meta.tokenizer_sha256, sizeof meta.tokenizer_sha256, "%s", lt_tok_sha256(tb.tok));
    {
        size_t used = 0;
        for (int i = 0; i < n_inputs; i++) {
            int w = snprintf(meta.sources + used, sizeof meta.sources - used, "%s%s", i ? "\n" : "",
                             base_name(inputs[i]));
            if (w < 0 || (size_t)w >= sizeof meta.sources - used) break;
            used += (size_t)w;
        }
    }
    snprintf(meta.template_name, sizeof meta.template_name, "%s", have_tpl ? tpl.name : "none");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    split train = {out_dir, "train", 0, NULL, shard_tokens, 0, 0, 0, 0};
    split val = {out_dir, "val", 0, NULL, shard_tokens, 1, 0, 0, 0};
    done_list dl = {NULL, 0};
    const size_t BLOCK = 4096;
    rec *recs = calloc(BLOCK, sizeof *recs);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    int64_t n_records = 0, n_skipped = 0, n_truncated = 0, bytes = 0;
    /* test hooks: crash (SIGKILL) or stop and wait for a signal after N documents */
    long fail_after = getenv("LT_TOKENIZE_FAIL_AFTER_DOCS") ? atol(getenv("LT_TOKENIZE_FAIL_AFTER_DOCS")) : -1;
    long pause_after = getenv("LT_TOKENIZE_PAUSE_AFTER_DOCS") ? atol(getenv("LT_TOKENIZE_PAUSE_AFTER_DOCS")) : -1;
    int tty = !quiet && isatty(2);
    double t0 = lt_now_s(), last_draw = 0;
    int failed = 0;
    char *line = NULL;
    size_t line_cap = 0;

    for (int fi = 0; fi < n_inputs && !failed; fi++) {
        const char *name = inputs[fi];
        FILE *in = strcmp(name, "-") ? fopen(name, "rb") : stdin;
        if (!in) {
            fprintf(stderr, "tokenize: %s: cannot open\n", name);
            failed = 1;
            break;
        }
        rec_format ffmt = force;
        long lineno = 0;
        int eof = 0;
        while (!eof && !failed) {
            /* read a block of records */
            size_t nb = 0;
            while (nb < BLOCK) {
                ssize_t got = getline(&line, &line_cap, in);
                if (got < 0) {
                    eof = 1;
                    break;
                }
                lineno++;
                bytes += got;
                while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) got--;
                size_t a = 0;
                while (a < (size_t)got && (line[a] == ' ' || line[a] == '\t')) a++;
                if (a == (size_t)got) continue; /* blank line */
                if (ffmt == FMT_AUTO) {
                    cJSON *j = cJSON_ParseWithLength(line, (size_t)got);
                    ffmt = detect_format(j);
                    cJSON_Delete(j);
                    if (ffmt == FMT_AUTO) {
                        fprintf(stderr,
                                "tokenize: %s:%ld: cannot tell the record form from the first record (expected a JSON "
                                "object with messages, conversations, instruction or text; or give --format)\n",
                                name, lineno);
                        failed = 1;
                        break;
                    }
                    if (ffmt != FMT_TEXT && !have_tpl) {
                        fprintf(stderr, "tokenize: %s: %s records need a chat template: %s\n", name, fmt_name[ffmt],
                                tpl_err);
                        failed = 1;
                        break;
                    }
                }
                rec *r = &recs[nb++];
                memset(r, 0, sizeof *r);
                r->file = fi;
                r->line = lineno;
                r->json = malloc((size_t)got + 1);
                if (!r->json) {
                    fprintf(stderr, "tokenize: %s:%ld: out of memory for a %zd-byte record\n", name, lineno, got);
                    nb--;
                    failed = 1;
                    break;
                }
                memcpy(r->json, line, (size_t)got);
                r->json[got] = 0;
                r->len = (size_t)got;
                r->fmt = ffmt;
            }
            if (failed) {
                for (size_t i = 0; i < nb; i++) free(recs[i].json);
                break;
            }
            /* tokenize the block on all threads */
            work w = {&tb, have_tpl ? &tpl : NULL, eos_id, recs, nb, 0};
            atomic_init(&w.next, 0);
            long nt = threads < (long)nb ? threads : (long)nb;
            for (long t = 1; t < nt; t++) pthread_create(&tids[t], NULL, worker, &w);
            if (nb) worker(&w);
            for (long t = 1; t < nt; t++) pthread_join(tids[t], NULL);
            /* write in input order */
            for (size_t i = 0; i < nb; i++) {
                rec *r = &recs[i];
                if (!failed) {
                    n_records++;
                    if (r->failed) {
                        if (skip_bad) {
                            n_skipped++;
                            if (n_skipped <= 20)
                                fprintf(stderr, "%stokenize: %s:%ld: %s (skipped)\n", tty ? "\r\033[K" : "", name,
                                        r->line, r->err);
                        } else {
                            fprintf(stderr, "%stokenize: %s:%ld: %s\n", tty ? "\r\033[K" : "", name, r->line, r->err);
                            fprintf(stderr, "tokenize: stopped (use --skip-bad to skip bad records)\n");
                            failed = 1;
                        }
                    } else {
                        size_t n = r->n;
                        if (max_doc > 0 && n > (size_t)max_doc) {
                            n = (size_t)max_doc;
                            n_truncated++;
                        }
                        int to_val = 0;
                        if (val_frac > 0) {
                            uint64_t h = r->hash ^ 0x6c7578766c303031ull; /* splitmix64 finaliser */
                            h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
                            h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
                            h ^= h >> 31;
                            to_val = (double)(h >> 11) * 0x1.0p-53 < val_frac;
                        }
                        if (split_add(to_val ? &val : &train, &meta, &dl, r->ids, r->mask, n, &err)) {
                            fprintf(stderr, "tokenize: %s\n", err.msg);
                            failed = 1;
                        }
                        if (fail_after >= 0 && train.docs + val.docs >= fail_after) {
                            fprintf(stderr, "tokenize: LT_TOKENIZE_FAIL_AFTER_DOCS=%ld: simulating a crash\n", fail_after);
                            fflush(stderr);
                            raise(SIGKILL);
                        }
                        if (pause_after >= 0 && train.docs + val.docs >= pause_after) {
                            fprintf(stderr, "tokenize: LT_TOKENIZE_PAUSE_AFTER_DOCS=%ld: waiting for a signal\n",
                                    pause_after);
                            fflush(stderr);
                            for (;;) pause();
                        }
                    }
                }
                free(r->json);
                free(r->ids);
                free(r->mask);
            }
            double now = lt_now_s();
            if (tty && (now - last_draw > 0.2 || eof)) {
                char a[32], b[32];
                human_count((double)(train.docs + val.docs), a, sizeof a);
                human_count((double)(train.tokens + val.tokens), b, sizeof b);
                fprintf(stderr, "\r\033[K  %s  %s documents  %s tokens  %.1f MB/s", base_name(name), a, b,
                        (double)bytes / 1e6 / (now - t0 + 1e-9));
                last_draw = now;
            }
        }
        if (in != stdin) fclose(in);
    }
    if (!failed && train.docs + val.docs == 0) {
        fprintf(stderr, "tokenize: no documents to write (%lld records, %lld skipped)\n", (long long)n_records,
                (long long)n_skipped);
        failed = 1;
    }
    if (!failed && (split_finish(&train, &dl, &err) || split_finish(&val, &dl, &err))) {
        fprintf(stderr, "tokenize: %s\n", err.msg);
        failed = 1;
    }
    if (tty) fprintf(stderr, "\r\033[K");
    if (failed) {
        lt_shard_writer_abort(train.w);
        lt_shard_writer_abort(val.w);
        sig_tmp[0][0] = sig_tmp[1][0] = 0;
        for (int i = 0; i < dl.n_done; i++) unlink(dl.done[i]);
        if (made_out && rmdir(out_dir) == 0)
            fprintf(stderr, "tokenize: failed; %s removed (this run had created it)\n", out_dir);
        else
            fprintf(stderr, "tokenize: failed; no shards left in %s\n", out_dir);
    } else {
        double dt = lt_now_s() - t0;
        printf("tokenize: %lld records from %d file(s) in %.2f s (%.1f MB/s, %ld threads)\n", (long long)n_records,
               n_inputs, dt, (double)bytes / 1e6 / (dt + 1e-9), threads);
        printf("  template      %s\n", meta.template_name);
        printf("  documents     %lld train, %lld val\n", (long long)train.docs, (long long)val.docs);
        printf("  tokens        %lld train, %lld val\n", (long long)train.tokens, (long long)val.tokens);
        printf("  target tokens %lld train, %lld val\n", (long long)train.targets, (long long)val.targets);
        printf("  truncated     %lld documents (--max-doc-tokens)\n", (long long)n_truncated);
        printf("  skipped       %lld bad records\n", (long long)n_skipped);
        printf("  shards        %d train, %d val in %s\n", train.index, val.index, out_dir);
        if (val_frac > 0 && val.docs == 0) printf("  note: no document fell into the validation split\n");
        rc = 0;
    }
    for (int i = 0; i < dl.n_done; i++) free(dl.done[i]);
    free(dl.done);
    free(line);
    free(recs);
    free(tids);
out_early:
    free_bundle(&tb);
    return rc;
}

int lt_cmd_tokenize(int argc, char **argv) {
    tok_opts o = {0};
    return lt_opts_main(&SET, argc, argv, &o, tokenize_run);
}

/* ------------------------------------------------------------------ */
/* inspect SHARD.h5                                                     */

int lt_inspect_shard(const char *path, long show, const char *tok_path) {
    if (show > 0 && !tok_path) {
        fprintf(stderr, "inspect: --show needs --tokenizer PATH to decode the tokens\n");
        return 2;
    }
    lt_err err = {{0}};
    lt_shard s;
    if (lt_shard_read(path, 0, &s, &err)) {
        fprintf(stderr, "inspect: %s\n", err.msg);
        return 1;
    }
    int64_t targets = 0, minl = INT64_MAX, maxl = 0;
    for (int64_t i = 0; i < s.num_tokens; i++) targets += s.loss_mask[i];
    for (int64_t d = 0; d < s.num_docs; d++) {
        int64_t l = (int64_t)(s.doc_offsets[d + 1] - s.doc_offsets[d]);
        minl = l < minl ? l : minl;
        maxl = l > maxl ? l : maxl;
    }
    printf("%s\n", path);
    printf("  format            %s (version %lld)\n", s.format, (long long)s.format_version);
    printf("  vocab_size        %lld\n", (long long)s.meta.vocab_size);
    printf("  tokenizer_sha256  %s\n", s.meta.tokenizer_sha256);
    printf("  template          %s\n", s.meta.template_name);
    printf("  sources           ");
    for (const char *p = s.meta.sources; *p; p++) fputs(*p == '\n' ? ", " : (char[2]){*p, 0}, stdout);
    printf("\n  num_docs          %lld\n", (long long)s.num_docs);
    printf("  num_tokens        %lld\n", (long long)s.num_tokens);
    printf("  target tokens     %lld (%.1f%%)\n", (long long)targets,
           s.num_tokens ? 100.0 * (double)targets / (double)s.num_tokens : 0.0);
    if (s.num_docs)
        printf("  document length   min %lld, mean %.1f, max %lld tokens\n", (long long)minl,
               (double)s.num_tokens / (double)s.num_docs, (long long)maxl);
    int rc = 0;
    if (show > 0) {
        tok_bundle tb;
        if (load_bundle(tok_path, &tb, &err)) {
            fprintf(stderr, "inspect: %s\n", err.msg);
            lt_shard_free(&s);
            return 1;
        }
        if (strcmp(lt_tok_sha256(tb.tok), s.meta.tokenizer_sha256) != 0)
            fprintf(stderr, "inspect: warning: this tokenizer (sha256 %s) is not the shard's\n", lt_tok_sha256(tb.tok));
        for (int64_t d = 0; d < s.num_docs && d < show; d++) {
            size_t a = (size_t)s.doc_offsets[d], n = (size_t)(s.doc_offsets[d + 1] - s.doc_offsets[d]);
            int32_t *ids = malloc((n + 1) * sizeof *ids);
            for (size_t i = 0; i < n; i++) ids[i] = (int32_t)s.tokens[a + i];
            printf("\n--- document %lld (%zu tokens) ---\n", (long long)d, n);
            /* decode prefixes at each mask boundary, so every piece keeps the
             * spacing it has in context */
            size_t prev_len = 0, i = 0;
            char *prev = NULL;
            while (i < n) {
                size_t j = i;
                uint8_t v = s.loss_mask[a + i];
                while (j < n && s.loss_mask[a + j] == v) j++;
                char *txt = NULL;
                size_t len = 0;
                if (lt_tok_decode(tb.tok, ids, j, 0, &txt, &len, &err)) {
                    fprintf(stderr, "inspect: %s\n", err.msg);
                    rc = 1;
                    break;
                }
                size_t from = prev && len >= prev_len && !memcmp(txt, prev, prev_len) ? prev_len : 0;
                if (v) fputs("\xe2\x9f\xa6", stdout);
                fwrite(txt + from, 1, len - from, stdout);
                if (v) fputs("\xe2\x9f\xa7", stdout);
                free(prev);
                prev = txt;
                prev_len = len;
                i = j;
            }
            free(prev);
            free(ids);
            printf("\n");
        }
        free_bundle(&tb);
    }
    lt_shard_free(&s);
    return rc;
}
