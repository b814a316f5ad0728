/* lt_json.c -- see lt_json.h */
#include "lt_json.h"

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
