/* lt_tok_pretok.c -- hand-written matchers for the pre-tokenizer regexes we
 * accept (exact pattern strings only), with the semantics of Oniguruma (what
 * tokenizers uses): leftmost alternative wins, greedy with backtracking.
 *
 * Llama 3 / Qwen2 (N = 3 or 1):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,N}|
 *    ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * GPT-2 (ByteLevel use_regex):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * \s is White_Space; (?i) folds U+017F (long s) to 's' as well. */
#include <string.h>

#include "lt_tok_internal.h"
#include "lt_unicode.h"

static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
static const char RE_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

int lt_pretok_regex_kind(const char *pattern) {
    if (!strcmp(pattern, RE_LLAMA3)) return LT_RE_LLAMA3;
    if (!strcmp(pattern, RE_QWEN2)) return LT_RE_QWEN2;
    if (!strcmp(pattern, RE_GPT2)) return LT_RE_GPT2;
    return 0;
}

/* class of the character at s[i]: LT_UNI_* flags; *cl = its byte length */
static inline unsigned cls_at(const char *s, size_t n, size_t i, size_t *cl) {
    unsigned char b = (unsigned char)s[i];
    if (b < 0x80) {
        static const unsigned char ascii[128] = {
            /* 0x00-0x1F: \t \n \v \f \r are White_Space */
            0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            /* ' ' .. '/' */
            4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            /* 0-9 */
            2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0,
            /* @ A-O */
            0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
            /* P-Z [ \ ] ^ _ */
            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
            /* ` a-o */
            0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
            /* p-z { | } ~ DEL */
            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
        *cl = 1;
        return ascii[b];
    }
    size_t k = i;
    uint32_t cp = lt_utf8_next(s, &k);
    if (k > n) k = n;
    *cl = k - i;
    return lt_uni_flags(cp) & (LT_UNI_L | LT_UNI_N | LT_UNI_WS);
}

#define IS_OTHER(f) (((f) & (LT_UNI_L | LT_UNI_N | LT_UNI_WS)) == 0)

static inline int is_crlf(char c) { return c == '\r' || c == '\n'; }

/* contraction at s[i] == '\'': returns the match length or 0 */
static size_t contraction(const char *s, size_t n, size_t i, int icase) {
    if (i + 1 >= n) return 0;
    unsigned char c = (unsigned char)s[i + 1];
    if (icase && c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
    if (c == 's' || c == 't' || c == 'm' || c == 'd') return 2;
    if (icase && c == 0xC5 && i + 2 < n && (unsigned char)s[i + 2] == 0xBF) return 3; /* U+017F */
    if (i + 2 >= n) return 0;
    unsigned char d = (unsigned char)s[i + 2];
    if (icase && d >= 'A' && d <= 'Z') d = (unsigned char)(d + 32);
    if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l')) return 3;
    return 0;
}

/* end of the whitespace run starting at i; *last = start of its last char,
 * *last_crlf = end of its last \r or \n (0 if none) */
static size_t ws_run(const char *s, size_t n, size_t i, size_t *last, size_t *last_crlf) {
    size_t j = i, cl;
    *last_crlf = 0;
    *last = i;
    while (j < n && (cls_at(s, n, j, &cl) & LT_UNI_WS)) {
        *last = j;
        if (is_crlf(s[j])) *last_crlf = j + 1;
        j += cl;
    }
    return j;
}

size_t lt_pretok_regex_match(int kind, const char *s, size_t n, size_t i) {
    size_t cl0, cl1 = 0;
    unsigned f0 = cls_at(s, n, i, &cl0);
    unsigned f1 = i + cl0 < n ? cls_at(s, n, i + cl0, &cl1) : 0xFF; /* 0xFF: end */
    int icase = kind != LT_RE_GPT2;
    /* contractions */
    if (s[i] == '\'') {
        size_t k = contraction(s, n, i, icase);
        if (k) return i + k;
    }
    size_t j, cl;
    if (kind == LT_RE_GPT2) {
        /*  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+ */
        size_t p = i;
        unsigned f = f0;
        if (s[i] == ' ' && f1 != 0xFF) {
            p = i + 1;
            f = f1;
        }
        for (int pass = 0; pass < 2; pass++) {
            unsigned want = (f & LT_UNI_L) ? LT_UNI_L : (f & LT_UNI_N) ? LT_UNI_N : IS_OTHER(f) ? 0 : 0xFF;
            if (want != 0xFF) {
                j = p;
                while (j < n) {
                    unsigned g = cls_at(s, n, j, &cl);
                    if (want ? !(g & want) : !IS_OTHER(g)) break;
                    j += cl;
                }
                return j;
            }
            if (p == i) break;
            p = i; /* backtrack over the optional space */
            f = f0;
        }
    } else {
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (f0 & LT_UNI_L) {
            j = i + cl0;
            while (j < n && (cls_at(s, n, j, &cl) & LT_UNI_L)) j += cl;
            return j;
        }
        if (!(f0 & (LT_UNI_N)) && !is_crlf(s[i]) && f1 != 0xFF && (f1 & LT_UNI_L)) {
            j = i + cl0 + cl1;
            while (j < n && (cls_at(s, n, j, &cl) & LT_UNI_L)) j += cl;
            return j;
        }
        /* \p{N}{1,3} or \p{N} */
        if (f0 & LT_UNI_N) {
            int maxd = kind == LT_RE_LLAMA3 ? 3 : 1;
            j = i + cl0;
            for (int d = 1; d < maxd && j < n && (cls_at(s, n, j, &cl) & LT_UNI_N); d++) j += cl;
            return j;
        }
        /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
        size_t p = IS_OTHER(f0) ? i : (s[i] == ' ' && f1 != 0xFF && IS_OTHER(f1)) ? i + 1 : n + 1;
        if (p <= n) {
            j = p;
            while (j < n && IS_OTHER(cls_at(s, n, j, &cl))) j += cl;
            while (j < n && is_crlf(s[j])) j++;
            return j;
        }
    }
    if (f0 & LT_UNI_WS) {
        size_t last, last_crlf;
        j = ws_run(s, n, i, &last, &last_crlf);
        /* \s*[\r\n]+ (Llama 3 / Qwen2 only) */
        if (kind != LT_RE_GPT2 && last_crlf) return last_crlf;
        /* \s+(?!\S) */
        if (j == n) return j;
        if (last > i) return last;
        /* \s+ */
        return j;
    }
    return i + cl0; /* not reached: every character is L, N, \s or other */
}
