/* lt_tok_vocab.c -- tokenizers' add_tokens on a tokenizer.json, and the
 * JSON text surgery that writes it back (see lt_tok_vocab.h). */
#include "lt_tok_vocab.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_tok_internal.h"

/* ---- growable text ---- */

int lt_sbuf_add(lt_sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        char *ns = realloc(b->s, c);
        if (!ns) return 0;
        b->s = ns;
        b->cap = c;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
    return 1;
}

int lt_sbuf_printf(lt_sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof tmp) return 0;
    return lt_sbuf_add(b, tmp, (size_t)k);
}

int lt_sbuf_json_string(lt_sbuf *b, const char *s, size_t n) {
    if (!lt_sbuf_add(b, "\"", 1)) return 0;
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", c);
                esc = u;
            }
        }
        if (!esc) continue;
        if (!lt_sbuf_add(b, s + run, i - run) || !lt_sbuf_add(b, esc, strlen(esc))) return 0;
        run = i + 1;
    }
    return lt_sbuf_add(b, s + run, n - run) && lt_sbuf_add(b, "\"", 1);
}

/* ---- top-level member spans ---- */

static size_t ws(const char *s, size_t n, size_t i) {
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++;
    return i;
}

/* end of the string starting at s[i] == '"', or 0 */
static size_t skip_string(const char *s, size_t n, size_t i) {
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

/* end of the value starting at s[i], or 0 (the text was parsed before: only
 * the structure matters here) */
static size_t skip_value(const char *s, size_t n, size_t i) {
    if (i >= n) return 0;
    if (s[i] == '"') return skip_string(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < n) {
            char c = s[i];
            if (c == '"') {
                size_t e = skip_string(s, n, i);
                if (!e) return 0;
                i = e;
                continue;
            }
            if (c == '{' || c == '[') depth++;
            if (c == '}' || c == ']') {
                if (--depth == 0) return i + 1;
            }
            i++;
        }
        return 0;
    }
    while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n' && s[i] != '\r' &&
           s[i] != '\t')
        i++;
    return i;
}

lt_status lt_json_member_span(const char *text, size_t n, const char *name, const char *key, int *found,
                              size_t *begin, size_t *end, lt_err *err) {
    *found = 0;
    size_t i = ws(text, n, 0), kl = strlen(key);
    if (i >= n || text[i] != '{') return lt_fail(err, LT_ERR_FORMAT, "%s: top level is not a JSON object", name);
    i = ws(text, n, i + 1);
    while (i < n && text[i] != '}') {
        if (text[i] != '"') return lt_fail(err, LT_ERR_FORMAT, "%s: malformed JSON near byte %zu", name, i);
        size_t ke = skip_string(text, n, i);
        if (!ke) return lt_fail(err, LT_ERR_FORMAT, "%s: unterminated string at byte %zu", name, i);
        int match = ke - i - 2 == kl && !memcmp(text + i + 1, key, kl);
        i = ws(text, n, ke);
        if (i >= n || text[i] != ':') return lt_fail(err, LT_ERR_FORMAT, "%s: expected ':' at byte %zu", name, i);
        i = ws(text, n, i + 1);
        size_t ve = skip_value(text, n, i);
        if (!ve) return lt_fail(err, LT_ERR_FORMAT, "%s: malformed JSON value at byte %zu", name, i);
        if (match) { /* the last one wins, as in the parsers */
            *found = 1;
            *begin = i;
            *end = ve;
        }
        i = ws(text, n, ve);
        if (i < n && text[i] == ',') i = ws(text, n, i + 1);
    }
    return LT_OK;
}

char *lt_text_splice(const char *text, size_t n, size_t begin, size_t end, const char *repl, size_t rlen,
                     size_t *out_len) {
    size_t m = n - (end - begin) + rlen;
    char *o = malloc(m + 1);
    if (!o) return NULL;
    memcpy(o, text, begin);
    memcpy(o + begin, repl, rlen);
    memcpy(o + begin + rlen, text + end, n - end);
    o[m] = 0;
    if (out_len) *out_len = m;
    return o;
}

/* ---- add_tokens ---- */

int lt_added_set_init(lt_added_set *s, const lt_strmap *vocab) {
    memset(s, 0, sizeof *s);
    s->vocab = vocab;
    s->model_size = (int64_t)vocab->n;
    s->max_id = -1;
    return lt_strmap_init(&s->by_content, 16);
}

void lt_added_set_free(lt_added_set *s) {
    for (size_t i = 0; i < s->n; i++) free(s->a[i].content);
    free(s->a);
    lt_strmap_free(&s->by_content);
    memset(s, 0, sizeof *s);
}

static int same_token(const lt_tok_added *x, const lt_tok_added *y) {
    return !strcmp(x->content, y->content) && x->single_word == y->single_word && x->lstrip == y->lstrip &&
           x->rstrip == y->rstrip && x->normalized == y->normalized && x->special == y->special;
}

int lt_added_set_add(lt_added_set *s, const lt_tok_added *tok, int32_t *id_out, int *what) {
    size_t cl = strlen(tok->content);
    *id_out = -1;
    *what = LT_TOK_ADD_UNCHANGED;
    if (cl == 0) return 1;
    int32_t k = lt_strmap_get(&s->by_content, tok->content, cl);
    if (k >= 0 && same_token(&s->a[k], tok)) { /* identical: ignored */
        *id_out = s->a[k].id;
        return 1;
    }
    int32_t id;
    size_t slot = s->n;
    if (k >= 0) {
        id = s->a[k].id;
        slot = (size_t)k;
        *what = LT_TOK_ADD_REFLAGGED;
    } else if ((id = lt_strmap_get(s->vocab, tok->content, cl)) >= 0) {
        *what = LT_TOK_ADD_IN_VOCAB;
        for (size_t i = 0; i < s->n; i++) /* an added token of other content holding that id */
            if (s->a[i].id == id) slot = i;
    } else {
        id = (int32_t)(s->max_id < 0 ? s->model_size : s->max_id >= s->model_size ? s->max_id + 1 : s->model_size);
        *what = LT_TOK_ADD_NEW;
    }
    /* the entry of that id: replaced or created */
    char *c = lt_strdup(tok->content);
    if (!c) return 0;
    int rebuild = 0;
    if (slot == s->n) {
        if (s->n == s->cap) {
            size_t nc = s->cap ? s->cap * 2 : 64;
            lt_tok_added *na = realloc(s->a, nc * sizeof *na);
            if (!na) {
                free(c);
                return 0;
            }
            s->a = na;
            s->cap = nc;
        }
        s->n++;
    } else {
        rebuild = 1; /* the map's key pointed at the old content */
        free(s->a[slot].content);
    }
    s->a[slot] = *tok;
    s->a[slot].content = c;
    s->a[slot].id = id;
    if (rebuild) {
        lt_strmap_free(&s->by_content);
        if (!lt_strmap_init(&s->by_content, s->n)) return 0;
        for (size_t i = 0; i < s->n; i++)
            if (!lt_strmap_put(&s->by_content, s->a[i].content, strlen(s->a[i].content), (int32_t)i)) return 0;
    } else if (!lt_strmap_put(&s->by_content, c, cl, (int32_t)slot))
        return 0;
    if (id > s->max_id) s->max_id = id;
    *id_out = id;
    return 1;
}

static int jflag(const lt_jval *o, const char *key, int def) {
    const lt_jval *v = lt_json_get(o, key);
    if (!v || v->type == LT_JNULL) return def;
    return v->type == LT_JTRUE;
}

static int cmp_added(const void *x, const void *y) {
    const lt_tok_added *a = x, *b = y;
    return (a->id > b->id) - (a->id < b->id);
}

static int64_t distinct_len(const lt_added_set *s) {
    int64_t n = (int64_t)s->vocab->n;
    for (size_t i = 0; i < s->n; i++)
        if (lt_strmap_get(s->vocab, s->a[i].content, strlen(s->a[i].content)) < 0) n++;
    return n;
}

/* the new "added_tokens" value in the original's layout */
static int write_added(lt_sbuf *b, const lt_tok_added *a, size_t n, int pretty) {
    static const char *const flag[] = {"single_word", "lstrip", "rstrip", "normalized", "special"};
    if (n == 0) return lt_sbuf_add(b, "[]", 2);
    if (!lt_sbuf_add(b, "[", 1)) return 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t v[] = {a[i].single_word, a[i].lstrip, a[i].rstrip, a[i].normalized, a[i].special};
        if (!lt_sbuf_printf(b, "%s%s{%s\"id\":%s%d,%s\"content\":%s", i ? "," : "", pretty ? "\n    " : "",
                            pretty ? "\n      " : "", pretty ? " " : "", (int)a[i].id, pretty ? "\n      " : "",
                            pretty ? " " : "") ||
            !lt_sbuf_json_string(b, a[i].content, strlen(a[i].content)))
            return 0;
        for (int f = 0; f < 5; f++)
            if (!lt_sbuf_printf(b, ",%s\"%s\":%s%s", pretty ? "\n      " : "", flag[f], pretty ? " " : "",
                                v[f] ? "true" : "false"))
                return 0;
        if (!lt_sbuf_add(b, pretty ? "\n    }" : "}", pretty ? 6 : 1)) return 0;
    }
    return lt_sbuf_add(b, pretty ? "\n  ]" : "]", pretty ? 4 : 1);
}

void lt_tok_add_result_free(lt_tok_add_result *r) {
    free(r->json);
    free(r->ids);
    free(r->what);
    for (size_t i = 0; i < r->n_entries; i++) free(r->added[i].content);
    free(r->added);
    memset(r, 0, sizeof *r);
}

lt_status lt_tok_add_tokens(const char *text, size_t len, const char *name, const char *const *tokens, size_t n,
                            int special, lt_tok_add_result *res, lt_err *err) {
    memset(res, 0, sizeof *res);
    lt_jdoc *doc = NULL;
    lt_jval *root = NULL;
    lt_strmap vocab = {0};
    lt_added_set s;
    memset(&s, 0, sizeof s);
    lt_sbuf b = {0};
    lt_status st = lt_json_parse(text, len, name, &doc, &root, err);
    if (st) return st;
    const lt_jval *model = lt_json_get(root, "model"), *v = model ? lt_json_get(model, "vocab") : NULL;
    const lt_jval *arr = lt_json_get(root, "added_tokens");
    if (root->type != LT_JOBJ || !v || v->type != LT_JOBJ) {
        st = lt_fail(err, LT_ERR_UNSUPPORTED, "%s: no model vocab object (a BPE tokenizer.json is expected)", name);
        goto done;
    }
    if (!arr || arr->type != LT_JARR) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: 'added_tokens' must be an array", name);
        goto done;
    }
    if (!lt_strmap_init(&vocab, v->len)) goto nomem;
    for (uint32_t i = 0; i < v->len; i++) {
        const lt_jval *e = &v->u.items[i];
        if (e->type != LT_JNUM || !(e->u.num >= 0 && e->u.num < 2147483647.0)) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: model vocab: token '%s' has a bad id", name, e->key);
            goto done;
        }
        if (!lt_strmap_put(&vocab, e->key, e->key_len, (int32_t)e->u.num)) goto nomem;
    }
    if (!lt_added_set_init(&s, &vocab)) goto nomem;
    /* the file's entries, as tokenizers loads them */
    for (uint32_t i = 0; i < arr->len; i++) {
        const lt_jval *o = &arr->u.items[i], *c = lt_json_get(o, "content");
        if (!c || c->type != LT_JSTR) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: added_tokens[%u]: 'content' must be a string", name, i);
            goto done;
        }
        if (memchr(c->u.str, 0, c->len)) {
            st = lt_fail(err, LT_ERR_UNSUPPORTED, "%s: added_tokens[%u]: content holds a NUL character", name, i);
            goto done;
        }
        lt_tok_added t = {(char *)c->u.str, 0, 0, 0, 0, 0, 0};
        t.special = (uint8_t)jflag(o, "special", 0);
        t.single_word = (uint8_t)jflag(o, "single_word", 0);
        t.lstrip = (uint8_t)jflag(o, "lstrip", 0);
        t.rstrip = (uint8_t)jflag(o, "rstrip", 0);
        t.normalized = (uint8_t)jflag(o, "normalized", !t.special);
        int32_t id;
        int what;
        if (!lt_added_set_add(&s, &t, &id, &what)) goto nomem;
    }
    res->old_len = distinct_len(&s);
    res->ids = malloc((n + 1) * sizeof *res->ids);
    res->what = malloc((n + 1) * sizeof *res->what);
    if (!res->ids || !res->what) goto nomem;
    for (size_t i = 0; i < n; i++) {
        lt_tok_added t = {(char *)tokens[i], 0, 0, 0, 0, (uint8_t)!special, (uint8_t)(special != 0)};
        if (!lt_added_set_add(&s, &t, &res->ids[i], &res->what[i])) goto nomem;
        if (res->what[i] != LT_TOK_ADD_UNCHANGED) res->n_added++;
    }
    res->new_len = distinct_len(&s);
    qsort(s.a, s.n, sizeof *s.a, cmp_added);
    /* splice the new array into the original text */
    int found;
    size_t b0, b1;
    if ((st = lt_json_member_span(text, len, name, "added_tokens", &found, &b0, &b1, err))) goto done;
    if (!found) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: no top-level 'added_tokens'", name);
        goto done;
    }
    int pretty = b1 - b0 > 1 && (text[b0 + 1] == '\n' || text[b0 + 1] == '\r');
    if (!write_added(&b, s.a, s.n, pretty)) goto nomem;
    res->json = lt_text_splice(text, len, b0, b1, b.s, b.n, &res->json_len);
    if (!res->json) goto nomem;
    res->added = s.a;
    res->n_entries = s.n;
    s.a = NULL;
    s.n = s.cap = 0;
    goto done;
nomem:
    st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory adding tokens", name);
done:
    lt_added_set_free(&s);
    lt_strmap_free(&vocab);
    free(b.s);
    lt_json_free(doc);
    if (st) lt_tok_add_result_free(res);
    return st;
}

/* ---- tokenizer_config.json ---- */

static int cmp_id_str(const void *x, const void *y) {
    char a[16], b[16];
    snprintf(a, sizeof a, "%d", (int)((const lt_tok_added *)x)->id);
    snprintf(b, sizeof b, "%d", (int)((const lt_tok_added *)y)->id);
    return strcmp(a, b);
}

int lt_tok_added_decoder_json(lt_sbuf *b, const lt_tok_added *a, size_t n, int indent) {
    if (n == 0) return lt_sbuf_add(b, "{}", 2);
    lt_tok_added *s = malloc(n * sizeof *s);
    if (!s) return 0;
    memcpy(s, a, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_id_str); /* Python's sort_keys: the keys are strings */
    int ok = lt_sbuf_add(b, "{", 1);
    for (size_t i = 0; ok && i < n; i++) {
        ok = lt_sbuf_printf(b, "%s\n%*s\"%d\": {\n%*s\"content\": ", i ? "," : "", indent + 2, "", (int)s[i].id,
                            indent + 4, "") &&
             lt_sbuf_json_string(b, s[i].content, strlen(s[i].content)) &&
             lt_sbuf_printf(b, ",\n%*s\"lstrip\": %s,\n%*s\"normalized\": %s,\n%*s\"rstrip\": %s,", indent + 4, "",
                            s[i].lstrip ? "true" : "false", indent + 4, "", s[i].normalized ? "true" : "false",
                            indent + 4, "", s[i].rstrip ? "true" : "false") &&
             lt_sbuf_printf(b, "\n%*s\"single_word\": %s,\n%*s\"special\": %s\n%*s}", indent + 4, "",
                            s[i].single_word ? "true" : "false", indent + 4, "", s[i].special ? "true" : "false",
                            indent + 2, "");
    }
    ok = ok && lt_sbuf_printf(b, "\n%*s}", indent, "");
    free(s);
    return ok;
}
