/* lt_tok_json.c -- a small, fast JSON reader for tokenizer.json (DOM in an
 * arena; strings unescaped into one buffer). Errors name the line/column. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_tok_internal.h"
#include "lt_unicode.h"

typedef struct jblock {
    struct jblock *next;
    size_t used, cap;
    lt_jval v[];
} jblock;

struct lt_jdoc {
    jblock *blocks;
    char *strbuf;
};

typedef struct {
    const char *s, *end, *p;
    const char *name;
    lt_jdoc *doc;
    char *sout;        /* next free byte in doc->strbuf */
    lt_jval *stack;    /* children being collected */
    size_t sp, scap;
    lt_err *err;
    int depth;
} jparser;

static lt_status jfail(jparser *j, const char *what) {
    size_t line = 1, col = 1;
    for (const char *q = j->s; q < j->p && q < j->end; q++) {
        if (*q == '\n') {
            line++;
            col = 1;
        } else
            col++;
    }
    return lt_fail(j->err, LT_ERR_FORMAT, "%s: malformed JSON at line %zu, column %zu: %s", j->name, line, col, what);
}

static lt_jval *jalloc(jparser *j, size_t n) {
    jblock *b = j->doc->blocks;
    if (!b || b->used + n > b->cap) {
        size_t cap = n > 65536 ? n : 65536;
        jblock *nb = malloc(sizeof(jblock) + cap * sizeof(lt_jval));
        if (!nb) return NULL;
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        j->doc->blocks = nb;
        b = nb;
    }
    lt_jval *r = b->v + b->used;
    b->used += n;
    return r;
}

static int jpush(jparser *j, const lt_jval *v) {
    if (j->sp == j->scap) {
        size_t nc = j->scap ? j->scap * 2 : 1024;
        lt_jval *ns = realloc(j->stack, nc * sizeof *ns);
        if (!ns) return 0;
        j->stack = ns;
        j->scap = nc;
    }
    j->stack[j->sp++] = *v;
    return 1;
}

static void skip_ws(jparser *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t')) j->p++;
}

static int hex4(const char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

/* parse a string at j->p (on the opening quote) into the string buffer */
static lt_status jstring(jparser *j, const char **out, uint32_t *len) {
    j->p++; /* opening quote */
    char *o = j->sout, *start = o;
    for (;;) {
        /* fast copy of plain bytes */
        const char *q = j->p;
        while (q < j->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20) q++;
        memcpy(o, j->p, (size_t)(q - j->p));
        o += q - j->p;
        j->p = q;
        if (j->p >= j->end) return jfail(j, "unterminated string");
        char c = *j->p;
        if (c == '"') {
            j->p++;
            break;
        }
        if ((unsigned char)c < 0x20) return jfail(j, "control character in string");
        /* escape */
        if (j->p + 1 >= j->end) return jfail(j, "unterminated escape");
        char e = j->p[1];
        j->p += 2;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (j->end - j->p < 4 || !hex4(j->p, &cp)) return jfail(j, "bad \\u escape");
            j->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                uint32_t lo;
                if (j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' && hex4(j->p + 2, &lo) && lo >= 0xDC00 &&
                    lo < 0xE000) {
                    j->p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else
                    return jfail(j, "lone surrogate in \\u escape");
            } else if (cp >= 0xDC00 && cp < 0xE000)
                return jfail(j, "lone surrogate in \\u escape");
            o += lt_utf8_encode(cp, o);
            break;
        }
        default: return jfail(j, "bad escape");
        }
    }
    size_t n = (size_t)(o - start);
    /* the text must be valid UTF-8 (serde_json requires it) */
    if (lt_utf8_valid_prefix(start, n) != n) return jfail(j, "invalid UTF-8 in string");
    *o++ = 0;
    j->sout = o;
    *out = start;
    *len = (uint32_t)n;
    return LT_OK;
}

static lt_status jvalue(jparser *j, lt_jval *v);

static lt_status jcontainer(jparser *j, lt_jval *v, int is_obj) {
    if (++j->depth > 256) return jfail(j, "nesting too deep");
    j->p++;
    size_t base = j->sp;
    skip_ws(j);
    char close = is_obj ? '}' : ']';
    if (j->p < j->end && *j->p == close) {
        j->p++;
    } else {
        for (;;) {
            lt_jval item;
            memset(&item, 0, sizeof item);
            if (is_obj) {
                skip_ws(j);
                if (j->p >= j->end || *j->p != '"') return jfail(j, "expected a string key");
                lt_status st = jstring(j, &item.key, &item.key_len);
                if (st) return st;
                skip_ws(j);
                if (j->p >= j->end || *j->p != ':') return jfail(j, "expected ':'");
                j->p++;
            }
            const char *key = item.key;
            uint32_t kl = item.key_len;
            lt_status st = jvalue(j, &item);
            if (st) return st;
            item.key = key;
            item.key_len = kl;
            if (!jpush(j, &item)) return lt_fail(j->err, LT_ERR_NOMEM, "%s: out of memory", j->name);
            skip_ws(j);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == close) {
                j->p++;
                break;
            }
            return jfail(j, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    size_t n = j->sp - base;
    v->type = is_obj ? LT_JOBJ : LT_JARR;
    v->len = (uint32_t)n;
    v->u.items = NULL;
    if (n) {
        lt_jval *dst = jalloc(j, n);
        if (!dst) return lt_fail(j->err, LT_ERR_NOMEM, "%s: out of memory", j->name);
        memcpy(dst, j->stack + base, n * sizeof *dst);
        v->u.items = dst;
    }
    j->sp = base;
    j->depth--;
    return LT_OK;
}

static lt_status jvalue(jparser *j, lt_jval *v) {
    skip_ws(j);
    if (j->p >= j->end) return jfail(j, "unexpected end of input");
    char c = *j->p;
    v->key = NULL;
    v->key_len = 0;
    switch (c) {
    case '{': return jcontainer(j, v, 1);
    case '[': return jcontainer(j, v, 0);
    case '"':
        v->type = LT_JSTR;
        return jstring(j, &v->u.str, &v->len);
    case 't':
        if (j->end - j->p >= 4 && !memcmp(j->p, "true", 4)) {
            v->type = LT_JTRUE;
            j->p += 4;
            return LT_OK;
        }
        break;
    case 'f':
        if (j->end - j->p >= 5 && !memcmp(j->p, "false", 5)) {
            v->type = LT_JFALSE;
            j->p += 5;
            return LT_OK;
        }
        break;
    case 'n':
        if (j->end - j->p >= 4 && !memcmp(j->p, "null", 4)) {
            v->type = LT_JNULL;
            j->p += 4;
            return LT_OK;
        }
        break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            /* integers (the common case) without strtod */
            const char *q = j->p;
            int neg = 0;
            if (*q == '-') {
                neg = 1;
                q++;
            }
            if (q >= j->end || *q < '0' || *q > '9') return jfail(j, "bad number");
            double x = 0;
            const char *ds = q;
            while (q < j->end && *q >= '0' && *q <= '9') x = x * 10 + (*q++ - '0');
            if (*ds == '0' && q - ds > 1) return jfail(j, "leading zero in number");
            if (q < j->end && (*q == '.' || *q == 'e' || *q == 'E')) {
                char tmp[64];
                const char *e = q;
                while (e < j->end && ((*e >= '0' && *e <= '9') || *e == '.' || *e == 'e' || *e == 'E' || *e == '+' ||
                                      *e == '-'))
                    e++;
                size_t l = (size_t)(e - j->p);
                if (l >= sizeof tmp) return jfail(j, "number too long");
                memcpy(tmp, j->p, l);
                tmp[l] = 0;
                char *ep;
                x = strtod(tmp, &ep);
                if (ep != tmp + l) return jfail(j, "bad number");
                q = e;
                neg = 0;
            }
            v->type = LT_JNUM;
            v->u.num = neg ? -x : x;
            j->p = q;
            return LT_OK;
        }
    }
    return jfail(j, "unexpected character");
}

lt_status lt_json_parse(const char *text, size_t n, const char *name, lt_jdoc **doc, lt_jval **root, lt_err *err) {
    *doc = NULL;
    *root = NULL;
    jparser j;
    memset(&j, 0, sizeof j);
    j.s = j.p = text;
    j.end = text + n;
    j.name = name;
    j.err = err;
    j.doc = calloc(1, sizeof *j.doc);
    if (!j.doc) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", name);
    j.doc->strbuf = malloc(n + 1);
    lt_jval *r = NULL;
    lt_status st = LT_OK;
    if (!j.doc->strbuf) st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", name);
    if (!st) {
        j.sout = j.doc->strbuf;
        r = jalloc(&j, 1);
        if (!r) st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", name);
    }
    if (!st) st = jvalue(&j, r);
    if (!st) {
        skip_ws(&j);
        if (j.p != j.end) st = jfail(&j, "trailing characters after the JSON value");
    }
    free(j.stack);
    if (st) {
        lt_json_free(j.doc);
        return st;
    }
    *doc = j.doc;
    *root = r;
    return LT_OK;
}

void lt_json_free(lt_jdoc *doc) {
    if (!doc) return;
    jblock *b = doc->blocks;
    while (b) {
        jblock *nx = b->next;
        free(b);
        b = nx;
    }
    free(doc->strbuf);
    free(doc);
}

const lt_jval *lt_json_get(const lt_jval *obj, const char *key) {
    if (!obj || obj->type != LT_JOBJ) return NULL;
    size_t kl = strlen(key);
    const lt_jval *found = NULL;
    for (uint32_t i = 0; i < obj->len; i++) {
        const lt_jval *m = &obj->u.items[i];
        if (m->key_len == kl && !memcmp(m->key, key, kl)) found = m;
    }
    return found;
}

const char *lt_json_type_name(int type) {
    static const char *names[] = {"null", "false", "true", "number", "string", "array", "object"};
    return type >= 0 && type <= LT_JOBJ ? names[type] : "?";
}
