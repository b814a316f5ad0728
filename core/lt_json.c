/* lt_json.c -- see lt_json.h */
#include "lt_json.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lt_json_kind(const cJSON *v) {
    if (!v) return "absent";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    return "an invalid value";
}

cJSON *lt_json_exact_number(double x) {
    char buf[64];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    return cJSON_CreateRaw(buf);
}

int lt_json_int64(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double x = v->valuedouble;
    if (!(x > -0x1p53 && x < 0x1p53) || x != floor(x)) return 0; /* NaN and inf fail the first test */
    *out = (int64_t)x;
    return 1;
}

typedef struct jchk {
    const char *s;
    size_t n, i;
    int depth, integers;
    char *why;
    size_t cap;
} jchk;

static int jc_fail(jchk *c, const char *what) {
    if (c->why && c->cap) snprintf(c->why, c->cap, "%s at byte offset %zu", what, c->i);
    return 0;
}

static void jc_ws(jchk *c) {
    while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r'))
        c->i++;
}

static int jc_digit(const jchk *c) { return c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9'; }

static int jc_string(jchk *c) {
    c->i++; /* the opening quote */
    while (c->i < c->n) {
        unsigned char ch = (unsigned char)c->s[c->i];
        if (ch == '"') {
            c->i++;
            return 1;
        }
        if (ch < 0x20) {
            char m[96];
            snprintf(m, sizeof m, "a raw control character (0x%02X) inside a string", ch);
            return jc_fail(c, m);
        }
        if (ch == '\\') {
            c->i++;
            if (c->i >= c->n) break;
            char e = c->s[c->i];
            if (e == 'u') {
                for (int k = 1; k <= 4; k++)
                    if (c->i + (size_t)k >= c->n || !isxdigit((unsigned char)c->s[c->i + (size_t)k]))
                        return jc_fail(c, "a \\u escape without 4 hex digits");
                c->i += 5;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || !e) return jc_fail(c, "an invalid escape in a string");
        }
        c->i++;
    }
    return jc_fail(c, "an unterminated string");
}

static int jc_number(jchk *c) {
    size_t a = c->i;
    int neg = 0, frac = 0, exp = 0;
    if (c->s[c->i] == '-') {
        neg = 1;
        c->i++;
    }
    if (!jc_digit(c)) return jc_fail(c, "a malformed number");
    if (c->s[c->i] == '0') {
        c->i++;
        if (jc_digit(c)) return jc_fail(c, "a number with a leading zero");
    } else
        while (jc_digit(c)) c->i++;
    if (c->i < c->n && c->s[c->i] == '.') {
        frac = 1;
        c->i++;
        if (!jc_digit(c)) return jc_fail(c, "a malformed number (no digit after '.')");
        while (jc_digit(c)) c->i++;
    }
    if (c->i < c->n && (c->s[c->i] == 'e' || c->s[c->i] == 'E')) {
        exp = 1;
        c->i++;
        if (c->i < c->n && (c->s[c->i] == '+' || c->s[c->i] == '-')) c->i++;
        if (!jc_digit(c)) return jc_fail(c, "a malformed number (no digit in the exponent)");
        while (jc_digit(c)) c->i++;
    }
    if (c->integers && (frac || exp || neg)) {
        char buf[64];
        size_t len = c->i - a < sizeof buf - 1 ? c->i - a : sizeof buf - 1;
        memcpy(buf, c->s + a, len);
        buf[len] = 0;
        double v = strtod(buf, NULL);
        int zero_neg = neg && !frac && !exp && v == 0; /* "-0" */
        if ((frac || exp || zero_neg) && isfinite(v) && v == floor(v)) {
            char m[128];
            snprintf(m, sizeof m, "the number %s is not written as an integer (expected one)", buf);
            size_t at = c->i;
            c->i = a;
            jc_fail(c, m);
            c->i = at;
            return 0;
        }
    }
    return 1;
}

static int jc_value(jchk *c);

/* '{' or '[' at c->i */
static int jc_container(jchk *c) {
    char close = c->s[c->i] == '{' ? '}' : ']';
    if (++c->depth > 128) return jc_fail(c, "nesting deeper than 128 levels");
    c->i++;
    jc_ws(c);
    if (c->i < c->n && c->s[c->i] == close) {
        c->i++;
        c->depth--;
        return 1;
    }
    for (;;) {
        if (close == '}') {
            if (c->i >= c->n || c->s[c->i] != '"') return jc_fail(c, "an object key that is not a string");
            if (!jc_string(c)) return 0;
            jc_ws(c);
            if (c->i >= c->n || c->s[c->i] != ':') return jc_fail(c, "a missing ':' after an object key");
            c->i++;
            jc_ws(c);
        }
        if (!jc_value(c)) return 0;
        jc_ws(c);
        if (c->i < c->n && c->s[c->i] == ',') {
            c->i++;
            jc_ws(c);
            continue;
        }
        if (c->i < c->n && c->s[c->i] == close) {
            c->i++;
            c->depth--;
            return 1;
        }
        return jc_fail(c, close == '}' ? "a missing ',' or '}' in an object" : "a missing ',' or ']' in an array");
    }
}

static int jc_value(jchk *c) {
    if (c->i >= c->n) return jc_fail(c, "the end of the text where a value was expected");
    char ch = c->s[c->i];
    if (ch == '{' || ch == '[') return jc_container(c);
    if (ch == '"') return jc_string(c);
    if (ch == '-' || (ch >= '0' && ch <= '9')) return jc_number(c);
    const char *lits[3] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t l = strlen(lits[k]);
        if (c->n - c->i >= l && !memcmp(c->s + c->i, lits[k], l)) {
            c->i += l;
            return 1;
        }
    }
    return jc_fail(c, "an invalid value");
}

int lt_json_check_strict(const char *s, size_t n, int integers, char *why, size_t cap) {
    jchk c = {s, n, 0, 0, integers, why, cap};
    size_t bad = lt_utf8_invalid_at(s, n);
    if (bad < n) {
        char m[64];
        snprintf(m, sizeof m, "invalid UTF-8 (byte 0x%02X)", (unsigned char)s[bad]);
        c.i = bad;
        return jc_fail(&c, m);
    }
    jc_ws(&c);
    if (!jc_value(&c)) return 0;
    jc_ws(&c);
    if (c.i < n) return jc_fail(&c, "trailing text after the JSON value");
    return 1;
}

static void set_why(char *why, size_t cap, const char *fmt, size_t at) {
    if (why && cap) snprintf(why, cap, fmt, at);
}

/* offset of a \u0000 escape inside a string of s[0..n), or n if none */
static size_t nul_escape_at(const char *s, size_t n) {
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        if (!in_str) {
            in_str = s[i] == '"';
            continue;
        }
        if (s[i] == '"') {
            in_str = 0;
        } else if (s[i] == '\\' && i + 1 < n) {
            if (s[i + 1] == 'u' && i + 5 < n && s[i + 2] == '0' && s[i + 3] == '0' && s[i + 4] == '0' &&
                s[i + 5] == '0')
                return i;
            i++; /* skip the escaped character */
        }
    }
    return n;
}

size_t lt_utf8_invalid_at(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0; /* overlong */
            if (c == 0xED) hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90; /* overlong */
            if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
        } else
            return i;
        if (n - i < len || u[i + 1] < lo || u[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if ((u[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return n;
}

cJSON *lt_json_parse_exact(const char *s, size_t n, char *why, size_t cap) {
    size_t bad = lt_utf8_invalid_at(s, n);
    if (bad < n) {
        if (why && cap)
            snprintf(why, cap, "not UTF-8 at byte offset %zu (byte 0x%02X): the input must be UTF-8 (convert it, "
                     "e.g. with iconv -f latin1 -t utf-8)", bad, (unsigned char)s[bad]);
        return NULL;
    }
    const char *nul = memchr(s, 0, n);
    if (nul) {
        set_why(why, cap, "a raw NUL byte (0x00) at byte offset %zu, which JSON does not allow", (size_t)(nul - s));
        return NULL;
    }
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!v) {
        /* cJSON sets end to the error position (not cJSON_GetErrorPtr: a global, and
         * records are parsed on several threads) */
        size_t at = end && end >= s && end <= s + n ? (size_t)(end - s) : 0;
        set_why(why, cap, "malformed JSON (near byte %zu)", at + 1);
        return NULL;
    }
    for (const char *p = end; p < s + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(v);
            set_why(why, cap, "text after the JSON value (at byte %zu)", (size_t)(p - s) + 1);
            return NULL;
        }
    size_t z = nul_escape_at(s, (size_t)(end - s));
    if (z < (size_t)(end - s)) {
        cJSON_Delete(v);
        set_why(why, cap, "a string holds the character \\u0000 (at byte %zu), which is not supported", z + 1);
        return NULL;
    }
    return v;
}

lt_status lt_json_load_file(const char *path, cJSON **out, lt_err *err) {
    *out = NULL;
    char *data = NULL;
    size_t len = 0;
    lt_status st = lt_read_file(path, &data, &len, err);
    if (st != LT_OK) return st;
    char why[160];
    *out = lt_json_parse_exact(data, len, why, sizeof why);
    free(data);
    if (!*out) return lt_fail(err, LT_ERR_FORMAT, "%s: %s", path, why);
    return LT_OK;
}
