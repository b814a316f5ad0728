/* lt_unicode.c -- UTF-8, character classes and NFC (see lt_unicode.h). */
#include "lt_unicode.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* generated tables (lt_unicode_tables.c) */
extern const char lt_uni_version[];
extern const lt_uni_range lt_uni_class_ranges[];
extern const size_t lt_uni_class_ranges_n;
extern const lt_uni_range lt_uni_ccc_ranges[];
extern const size_t lt_uni_ccc_ranges_n;
extern const uint32_t lt_uni_decomp_cp[];
extern const size_t lt_uni_decomp_n;
extern const uint16_t lt_uni_decomp_off[];
extern const uint32_t lt_uni_decomp_data[];
extern const uint32_t lt_uni_comp_pairs[][3];
extern const size_t lt_uni_comp_n;

const char *lt_uni_version_str(void) { return lt_uni_version; }

static unsigned range_lookup(const lt_uni_range *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid].lo)
            hi = mid;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return r[mid].v;
    }
    return 0;
}

/* direct tables for the BMP, built once */
static uint8_t g_bmp_flags[0x10000];
static uint8_t g_bmp_ccc[0x10000];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void build_bmp(void) {
    for (size_t k = 0; k < lt_uni_class_ranges_n; k++) {
        const lt_uni_range *r = &lt_uni_class_ranges[k];
        for (uint32_t c = r->lo; c <= r->hi && c < 0x10000; c++) g_bmp_flags[c] = (uint8_t)r->v;
    }
    for (size_t k = 0; k < lt_uni_ccc_ranges_n; k++) {
        const lt_uni_range *r = &lt_uni_ccc_ranges[k];
        for (uint32_t c = r->lo; c <= r->hi && c < 0x10000; c++) g_bmp_ccc[c] = (uint8_t)r->v;
    }
}

unsigned lt_uni_flags(uint32_t cp) {
    if (cp < 0x10000) {
        pthread_once(&g_once, build_bmp);
        return g_bmp_flags[cp];
    }
    return range_lookup(lt_uni_class_ranges, lt_uni_class_ranges_n, cp);
}

int lt_uni_ccc(uint32_t cp) {
    if (cp < 0x300) return 0;
    if (cp < 0x10000) {
        pthread_once(&g_once, build_bmp);
        return g_bmp_ccc[cp];
    }
    return (int)range_lookup(lt_uni_ccc_ranges, lt_uni_ccc_ranges_n, cp);
}

int lt_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at p[0..n) (n >= 1), or -(length of the
 * maximal invalid subpart) (Unicode "maximal subpart" practice). */
static int utf8_seq(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return -1;
    size_t k = 1;
    for (int j = 0; j < need; j++, k++) {
        if (k >= n) return -(int)k;
        unsigned b = p[k];
        if (j == 0 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -(int)k;
    }
    return (int)k;
}

size_t lt_utf8_valid_prefix(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        int k = utf8_seq(p + i, n - i);
        if (k < 0) return i;
        i += (size_t)k;
    }
    return n;
}

size_t lt_utf8_lossy(const char *in, size_t n, char *out, int64_t *map) {
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0, o = 0;
    while (i < n) {
        int k = utf8_seq(p + i, n - i);
        if (k > 0) {
            memcpy(out + o, in + i, (size_t)k);
            if (map)
                for (int j = 0; j < k; j++) map[o + j] = (int64_t)i;
            o += (size_t)k;
            i += (size_t)k;
        } else {
            out[o] = (char)0xEF;
            out[o + 1] = (char)0xBF;
            out[o + 2] = (char)0xBD;
            if (map) map[o] = map[o + 1] = map[o + 2] = (int64_t)i;
            o += 3;
            i += (size_t)(-k);
        }
    }
    return o;
}

/* ---- NFC ---- */
#define SBASE 0xAC00u
#define LBASE 0x1100u
#define VBASE 0x1161u
#define TBASE 0x11A7u
#define LCOUNT 19u
#define VCOUNT 21u
#define TCOUNT 28u
#define NCOUNT (VCOUNT * TCOUNT)
#define SCOUNT (LCOUNT * NCOUNT)

int lt_uni_nfc_quick(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    /* everything below U+0300 is NFC-stable and composes with nothing below U+0300 */
    for (size_t i = 0; i < n; i++)
        if (p[i] >= 0xCC) return 0; /* lead bytes of U+0300 and above */
    return 1;
}

static int decomp_find(uint32_t cp) {
    size_t lo = 0, hi = lt_uni_decomp_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (lt_uni_decomp_cp[mid] < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < lt_uni_decomp_n && lt_uni_decomp_cp[lo] == cp) ? (int)lo : -1;
}

static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
        return a + (b - TBASE);
    size_t lo = 0, hi = lt_uni_comp_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *q = lt_uni_comp_pairs[mid];
        if (q[0] < a || (q[0] == a && q[1] < b))
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < lt_uni_comp_n && lt_uni_comp_pairs[lo][0] == a && lt_uni_comp_pairs[lo][1] == b)
        return lt_uni_comp_pairs[lo][2];
    return 0;
}

/* change: as tokenizers' NFC (crate unicode-normalization-alignments) reports
 * it: 0 = replaces the next source character, +1 = inserted, -k = replaces
 * the next source character and k more. Offsets follow from it positionally. */
typedef struct {
    uint32_t cp;
    int ccc;
    int change;
} nfc_ch;

/* a boundary before cp: nothing before it can interact with it */
static int nfc_boundary(uint32_t cp) {
    if (cp < 0x300) return 1;
    return lt_uni_ccc(cp) == 0 && !(lt_uni_flags(cp) & (LT_UNI_NFC_MAYBE | LT_UNI_NFC_NO));
}

/* Decompose, reorder and compose one chunk buf[0..m); returns the new count. */
static size_t nfc_chunk(nfc_ch *buf, size_t m) {
    /* canonical ordering: stable insertion sort of runs of nonzero ccc */
    for (size_t i = 1; i < m; i++) {
        if (buf[i].ccc == 0) continue;
        size_t j = i;
        nfc_ch t = buf[i];
        while (j > 0 && buf[j - 1].ccc > t.ccc) {
            buf[j] = buf[j - 1];
            j--;
        }
        buf[j] = t;
    }
    /* composition */
    size_t out = 0;
    long starter = -1;
    int last_ccc = 0; /* ccc of the last kept char after the starter (-1: none) */
    for (size_t i = 0; i < m; i++) {
        nfc_ch c = buf[i];
        if (starter >= 0) {
            int blocked = !((size_t)starter == out - 1 ? 1 : (last_ccc != 0 && last_ccc < c.ccc));
            if (!blocked) {
                uint32_t k = compose_pair(buf[starter].cp, c.cp);
                if (k) {
                    buf[starter].cp = k;
                    buf[starter].ccc = 0;
                    buf[starter].change += c.change - 1;
                    continue;
                }
            }
        }
        buf[out++] = c;
        if (c.ccc == 0) {
            starter = (long)out - 1;
            last_ccc = 0;
        } else {
            last_ccc = c.ccc;
        }
    }
    return out;
}

static void push_decomp(nfc_ch **buf, size_t *m, size_t *cap, uint32_t cp) {
    uint32_t tmp[4];
    const uint32_t *d = tmp;
    size_t dn = 1;
    tmp[0] = cp;
    if (cp >= SBASE && cp < SBASE + SCOUNT) {
        uint32_t si = cp - SBASE;
        tmp[0] = LBASE + si / NCOUNT;
        tmp[1] = VBASE + (si % NCOUNT) / TCOUNT;
        dn = 2;
        if (si % TCOUNT) tmp[dn++] = TBASE + si % TCOUNT;
    } else if (cp >= 0xC0) {
        int k = decomp_find(cp);
        if (k >= 0) {
            d = lt_uni_decomp_data + lt_uni_decomp_off[k];
            dn = (size_t)(lt_uni_decomp_off[k + 1] - lt_uni_decomp_off[k]);
        }
    }
    if (*m + dn > *cap) {
        size_t nc = (*cap ? *cap * 2 : 64) + dn;
        nfc_ch *nb = realloc(*buf, nc * sizeof *nb);
        if (!nb) return; /* out of memory: drop (never happens for sane inputs) */
        *buf = nb;
        *cap = nc;
    }
    for (size_t j = 0; j < dn; j++) {
        (*buf)[*m].cp = d[j];
        (*buf)[*m].ccc = lt_uni_ccc(d[j]);
        (*buf)[*m].change = j == 0 ? 0 : 1;
        (*m)++;
    }
}

static size_t char_start(const char *s, size_t i) {
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    return i;
}

size_t lt_uni_nfc(const char *s, size_t n, const int64_t *off, char *out, int64_t *out_off) {
    nfc_ch stack_buf[64];
    nfc_ch *buf = NULL;
    size_t cap = 0, m = 0, o = 0;
    size_t i = 0;
    while (i < n) {
        /* chunk: [i, j) where j is the next boundary after i */
        size_t j = i;
        lt_utf8_next(s, &j);
        while (j < n) {
            size_t k = j;
            uint32_t c = lt_utf8_next(s, &k);
            if (nfc_boundary(c)) break;
            j = k;
        }
        size_t clen = j - i;
        if (clen == (size_t)lt_utf8_len((unsigned char)s[i])) {
            /* single character chunk: unchanged unless it decomposes */
            size_t k = i;
            uint32_t c = lt_utf8_next(s, &k);
            if (c < 0xC0 || !(lt_uni_flags(c) & LT_UNI_NFC_NO)) {
                memcpy(out + o, s + i, clen);
                for (size_t q = 0; q < clen; q++) out_off[o + q] = off ? off[i] : (int64_t)i;
                o += clen;
                i = j;
                continue;
            }
        }
        m = 0;
        if (!buf) {
            buf = stack_buf;
            cap = 64;
        }
        size_t k = i;
        while (k < j) {
            uint32_t c = lt_utf8_next(s, &k);
            if (buf == stack_buf && m + 4 > cap) { /* move to the heap */
                nfc_ch *nb = malloc(2 * cap * sizeof *nb);
                if (!nb) break;
                memcpy(nb, stack_buf, m * sizeof *nb);
                buf = nb;
                cap *= 2;
            }
            push_decomp(&buf, &m, &cap, c);
        }
        m = nfc_chunk(buf, m);
        /* offsets: walk the source characters of the chunk as the changes say */
        size_t src = i;       /* next source character */
        int64_t last = i > 0 ? (off ? off[i - 1] : (int64_t)char_start(s, i - 1)) : 0;
        for (size_t q = 0; q < m; q++) {
            int64_t al;
            if (buf[q].change > 0) {
                al = last;
            } else {
                al = src < j ? (off ? off[src] : (int64_t)src) : last;
                for (int r = 0; r < 1 - buf[q].change && src < j; r++) {
                    last = off ? off[src] : (int64_t)src;
                    src += (size_t)lt_utf8_len((unsigned char)s[src]);
                }
            }
            int len = lt_utf8_encode(buf[q].cp, out + o);
            for (int r = 0; r < len; r++) out_off[o + r] = al;
            o += (size_t)len;
        }
        i = j;
    }
    if (buf && buf != stack_buf) free(buf);
    return o;
}
