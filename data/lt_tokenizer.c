/* lt_tokenizer.c -- loading tokenizer.json, the encode pipeline (added tokens,
 * normalizers, pre-tokenizers, BPE, post-processor) and decoding; the
 * semantics follow Hugging Face tokenizers 0.23 (the version pinned in
 * tools/requirements-test.txt) step by step. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_sha256.h"
#include "lt_tok_internal.h"
#include "lt_tokenizer.h"
#include "lt_unicode.h"

typedef struct {
    char *s;
    uint32_t n;
} lstr;

enum { NORM_NFC = 1, NORM_PREPEND, NORM_REPLACE };
typedef struct {
    int type;
    lstr a, b; /* prepend: a; replace: a -> b */
} norm_step;

enum { PRE_SPLIT = 1, PRE_METASPACE, PRE_BYTELEVEL };
enum { BEH_REMOVED, BEH_ISOLATED, BEH_MERGED_PREV, BEH_MERGED_NEXT, BEH_CONTIGUOUS };
enum { SCHEME_ALWAYS, SCHEME_FIRST, SCHEME_NEVER };
typedef struct {
    int type;
    int regex_kind; /* split: LT_RE_* or 0 for a literal string */
    lstr pat;       /* split literal / metaspace replacement */
    int behavior, invert;
    int scheme, split;
    int add_prefix_space, use_regex;
} pre_step;

enum { DEC_BYTELEVEL = 1, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE };
typedef struct {
    int type;
    lstr a, b;
    uint32_t ch;    /* strip content / metaspace replacement */
    int start, stop; /* strip */
    int prepend;    /* metaspace: prepend_scheme != never */
} dec_step;

typedef struct {
    lstr content;
    /* what tokenizers >= 0.23 matches (in the normalized text) and shows
     * (id_to_token, decode) for a `normalized` token: its content run through
     * the normalizer; else the content itself */
    lstr shown;
    char *shown_own; /* shown's storage when it differs from content */
    int32_t id;
    uint8_t single_word, lstrip, rstrip, normalized, special;
} added_tok;

typedef struct {
    int32_t root[256];
    struct tnode {
        int32_t first, sibling, tok;
        uint8_t byte;
    } *nodes;
    size_t n, cap;
    int used;
} trie;

#define MAX_STEPS 16
/* ids are below this (16.7M; real vocabularies have up to ~262k): an absurd id
 * in tokenizer.json must not size the id tables */
#define LT_TOK_MAX_IDS (1 << 24)
#define MAX_SPECIAL 16

struct lt_tokenizer {
    lt_bpe bpe;
    int bpe_vocab_shared;
    lt_strmap vocab; /* original token strings -> id */
    char *pool;      /* vocab strings */
    int32_t n_ids;   /* max id + 1 */
    lstr *id_tok;    /* id -> token string (added tokens override, normalized form) */
    uint8_t *id_special;
    uint8_t *id_skip; /* decode(skip_special) drops the id: its string is a special token's content */
    added_tok *added;
    size_t n_added;
    char *added_pool;
    lt_strmap added_map;
    trie raw_trie, norm_trie;
    norm_step norm[MAX_STEPS];
    int n_norm;
    pre_step pre[MAX_STEPS];
    int n_pre;
    dec_step dec[MAX_STEPS];
    int n_dec, has_decoder;
    int32_t prefix[MAX_SPECIAL], suffix[MAX_SPECIAL];
    int n_prefix, n_suffix;
    char sha[65];
    char *cfg_str[64]; /* config strings (patterns, replacements) */
    int n_cfg;
};

/* ------------------------------------------------------------------ */
/* ids                                                                 */

void lt_tok_ids_free(lt_tok_ids *v) {
    free(v->ids);
    free(v->offsets);
    memset(v, 0, sizeof *v);
}

lt_status lt_tok_ids_push(lt_tok_ids *v, int32_t id, int64_t offset, lt_err *err) {
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 256;
        int32_t *ni = realloc(v->ids, c * sizeof *ni);
        if (!ni) return lt_fail(err, LT_ERR_NOMEM, "tokenizer: cannot grow id buffer to %zu", c);
        v->ids = ni;
        int64_t *no = realloc(v->offsets, c * sizeof *no);
        if (!no) return lt_fail(err, LT_ERR_NOMEM, "tokenizer: cannot grow offset buffer to %zu", c);
        v->offsets = no;
        v->cap = c;
    }
    v->ids[v->n] = id;
    v->offsets[v->n] = offset;
    v->n++;
    return LT_OK;
}

/* ------------------------------------------------------------------ */
/* trie of added tokens (leftmost-longest matching)                    */

static void trie_init(trie *t) {
    memset(t, 0, sizeof *t);
    for (int i = 0; i < 256; i++) t->root[i] = -1;
}

static int trie_new_node(trie *t, uint8_t b) {
    if (t->n == t->cap) {
        size_t c = t->cap ? t->cap * 2 : 1024;
        struct tnode *nn = realloc(t->nodes, c * sizeof *nn);
        if (!nn) return -1;
        t->nodes = nn;
        t->cap = c;
    }
    t->nodes[t->n].first = t->nodes[t->n].sibling = t->nodes[t->n].tok = -1;
    t->nodes[t->n].byte = b;
    return (int)t->n++;
}

static int trie_insert(trie *t, const char *s, size_t n, int32_t tok) {
    if (n == 0) return 1;
    int32_t *slot = &t->root[(uint8_t)s[0]];
    int cur = -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        if (i > 0) {
            int c = t->nodes[cur].first;
            while (c >= 0 && t->nodes[c].byte != b) c = t->nodes[c].sibling;
            if (c < 0) {
                c = trie_new_node(t, b);
                if (c < 0) return 0;
                t->nodes[c].sibling = t->nodes[cur].first;
                t->nodes[cur].first = c;
            }
            cur = c;
        } else {
            if (*slot < 0) {
                int c = trie_new_node(t, b);
                if (c < 0) return 0;
                t->root[b] = c;
            }
            cur = t->root[b];
        }
    }
    if (t->nodes[cur].tok < 0) t->nodes[cur].tok = tok;
    t->used = 1;
    return 1;
}

/* leftmost-longest match at or after pos: returns 1 and [*ms, *me), *tok */
static int trie_find(const trie *t, const char *s, size_t n, size_t pos, size_t *ms, size_t *me, int32_t *tok) {
    for (size_t i = pos; i < n; i++) {
        int c = t->root[(uint8_t)s[i]];
        if (c < 0) continue;
        int32_t best = -1;
        size_t best_end = 0, j = i;
        for (;;) {
            if (t->nodes[c].tok >= 0) {
                best = t->nodes[c].tok;
                best_end = j + 1;
            }
            if (++j >= n) break;
            uint8_t b = (uint8_t)s[j];
            int d = t->nodes[c].first;
            while (d >= 0 && t->nodes[d].byte != b) d = t->nodes[d].sibling;
            if (d < 0) break;
            c = d;
        }
        if (best >= 0) {
            *ms = i;
            *me = best_end;
            *tok = best;
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* per-call scratch (one per thread; the tokenizer itself is immutable) */

typedef struct ablock {
    struct ablock *next;
    size_t used, cap;
    max_align_t data[];
} ablock;

typedef struct {
    ablock *blocks;
    lt_bpe_scratch bpe;
} enc_ctx;

static pthread_key_t g_ctx_key;
static pthread_once_t g_ctx_once = PTHREAD_ONCE_INIT;

static void ctx_destroy(void *p) {
    enc_ctx *c = p;
    if (!c) return;
    ablock *b = c->blocks;
    while (b) {
        ablock *nx = b->next;
        free(b);
        b = nx;
    }
    lt_bpe_scratch_free(&c->bpe);
    free(c);
}
static void ctx_key_init(void) { pthread_key_create(&g_ctx_key, ctx_destroy); }

static enc_ctx *ctx_get(void) {
    pthread_once(&g_ctx_once, ctx_key_init);
    enc_ctx *c = pthread_getspecific(g_ctx_key);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) return NULL;
        pthread_setspecific(g_ctx_key, c);
    }
    return c;
}

/* keep the first (largest) block, free the rest */
static void ctx_reset(enc_ctx *c) {
    ablock *keep = NULL, *b = c->blocks;
    while (b) {
        ablock *nx = b->next;
        if (!keep || b->cap > keep->cap) {
            if (keep) free(keep);
            keep = b;
        } else
            free(b);
        b = nx;
    }
    if (keep && keep->cap * sizeof(max_align_t) > ((size_t)64 << 20)) { /* don't hold on to huge blocks */
        free(keep);
        keep = NULL;
    }
    if (keep) {
        keep->next = NULL;
        keep->used = 0;
    }
    c->blocks = keep;
}

static void *ctx_alloc(enc_ctx *c, size_t bytes) {
    size_t units = (bytes + sizeof(max_align_t) - 1) / sizeof(max_align_t);
    for (ablock *b = c->blocks; b; b = b->next) {
        if (b->used + units <= b->cap) {
            void *p = b->data + b->used;
            b->used += units;
            return p;
        }
        break; /* only the newest block is open */
    }
    size_t cap = units * 2 > 16384 ? units * 2 : 16384;
    ablock *nb = malloc(sizeof(ablock) + cap * sizeof(max_align_t));
    if (!nb) return NULL;
    nb->cap = cap;
    nb->used = units;
    nb->next = c->blocks;
    c->blocks = nb;
    return nb->data;
}

/* ------------------------------------------------------------------ */
/* encode pipeline                                                     */

typedef struct {
    const lt_tokenizer *t;
    enc_ctx *c;
    lt_tok_ids *out;
    lt_err *err;
} enc;

#define NOMEM(e) lt_fail((e)->err, LT_ERR_NOMEM, "tokenizer: out of memory while encoding")

static lt_status pretok(enc *e, int k, const char *s, const int64_t *off, size_t n);

/* White_Space / \w tests on the character before / at a position */
static uint32_t cp_before(const char *s, size_t pos) {
    size_t k = pos;
    do k--;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80);
    size_t q = k;
    return lt_utf8_next(s, &q);
}

/* tokenizers' AddedVocabulary::find_matches + split: calls back for gaps */
typedef lt_status (*gap_fn)(enc *e, const char *s, const int64_t *off, size_t n);

static lt_status split_added(enc *e, const trie *tr, const char *s, const int64_t *off, size_t n, gap_fn gap) {
    const lt_tokenizer *t = e->t;
    size_t pos = 0, start_offset = 0, ms, me;
    int32_t ti;
    lt_status st;
    while (pos < n && trie_find(tr, s, n, pos, &ms, &me, &ti)) {
        const added_tok *a = &t->added[ti];
        pos = me;
        size_t start = ms, stop = me;
        if (a->single_word) {
            int start_space = start == 0 || !(lt_uni_flags(cp_before(s, start)) & LT_UNI_W);
            int stop_space = 1;
            if (stop < n) {
                size_t q = stop;
                stop_space = !(lt_uni_flags(lt_utf8_next(s, &q)) & LT_UNI_W);
            }
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t k = ns;
                do k--;
                while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80);
                size_t q = k;
                if (!(lt_uni_flags(lt_utf8_next(s, &q)) & LT_UNI_WS)) break;
                ns = k;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                size_t q = stop;
                if (!(lt_uni_flags(lt_utf8_next(s, &q)) & LT_UNI_WS)) break;
                stop = q;
            }
        }
        if (start_offset < start && (st = gap(e, s + start_offset, off + start_offset, start - start_offset))) return st;
        if (stop > start && (st = lt_tok_ids_push(e->out, a->id, off[start], e->err))) return st;
        start_offset = stop;
    }
    if (start_offset < n) return gap(e, s + start_offset, off + start_offset, n - start_offset);
    return LT_OK;
}

static lt_status gap_pretok(enc *e, const char *s, const int64_t *off, size_t n) { return pretok(e, 0, s, off, n); }

/* normalizers; then normalized added tokens; then the pre-tokenizer */
static lt_status gap_normalize(enc *e, const char *s, const int64_t *off, size_t n) {
    const lt_tokenizer *t = e->t;
    if (n == 0) return LT_OK;
    for (int k = 0; k < t->n_norm; k++) {
        const norm_step *ns = &t->norm[k];
        if (n == 0) break;
        if (ns->type == NORM_NFC) {
            if (lt_uni_nfc_quick(s, n)) continue;
            char *o = ctx_alloc(e->c, 3 * n + 16);
            int64_t *oo = ctx_alloc(e->c, (3 * n + 16) * sizeof *oo);
            if (!o || !oo) return NOMEM(e);
            n = lt_uni_nfc(s, n, off, o, oo);
            s = o;
            off = oo;
        } else if (ns->type == NORM_PREPEND) {
            size_t m = n + ns->a.n;
            char *o = ctx_alloc(e->c, m);
            int64_t *oo = ctx_alloc(e->c, m * sizeof *oo);
            if (!o || !oo) return NOMEM(e);
            memcpy(o, ns->a.s, ns->a.n);
            memcpy(o + ns->a.n, s, n);
            for (size_t q = 0; q < ns->a.n; q++) oo[q] = off[0];
            memcpy(oo + ns->a.n, off, n * sizeof *off);
            s = o;
            off = oo;
            n = m;
        } else { /* NORM_REPLACE (literal, non-overlapping, leftmost) */
            const char *pat = ns->a.s;
            size_t pl = ns->a.n, cl = ns->b.n;
            size_t cnt = 0;
            for (size_t q = 0; q + pl <= n;) {
                if (s[q] == pat[0] && !memcmp(s + q, pat, pl)) {
                    cnt++;
                    q += pl;
                } else
                    q++;
            }
            if (!cnt) continue;
            size_t m = n + cnt * cl;
            char *o = ctx_alloc(e->c, m + 1);
            int64_t *oo = ctx_alloc(e->c, (m + 1) * sizeof *oo);
            if (!o || !oo) return NOMEM(e);
            size_t w = 0, q = 0;
            while (q < n) {
                if (q + pl <= n && s[q] == pat[0] && !memcmp(s + q, pat, pl)) {
                    memcpy(o + w, ns->b.s, cl);
                    for (size_t r = 0; r < cl; r++) oo[w + r] = off[q + pl - 1];
                    w += cl;
                    q += pl;
                } else {
                    o[w] = s[q];
                    oo[w] = off[q];
                    w++;
                    q++;
                }
            }
            s = o;
            off = oo;
            n = w;
        }
    }
    if (n == 0) return LT_OK;
    if (t->norm_trie.used) return split_added(e, &t->norm_trie, s, off, n, gap_pretok);
    return pretok(e, 0, s, off, n);
}

/* find the matches of a split pattern: returns the end of the match starting
 * at or after *pos, with its start in *ms; 0 if none */
static int split_find(const pre_step *p, const char *s, size_t n, size_t pos, size_t *ms, size_t *me) {
    if (pos >= n) return 0;
    if (p->regex_kind) {
        *ms = pos;
        *me = lt_pretok_regex_match(p->regex_kind, s, n, pos);
        return 1;
    }
    size_t pl = p->pat.n;
    for (size_t q = pos; q + pl <= n; q++) {
        if (s[q] == p->pat.s[0] && !memcmp(s + q, p->pat.s, pl)) {
            *ms = q;
            *me = q + pl;
            return 1;
        }
    }
    return 0;
}

typedef struct {
    size_t a, b;
    int m;
} span;

/* apply a split behaviour to the (start, end, is_match) list; recurse */
static lt_status split_apply(enc *e, int k, const pre_step *p, span *sp, size_t ns, const char *s, const int64_t *off) {
    size_t w = 0;
    int prev = 0;
    switch (p->behavior) {
    case BEH_ISOLATED: w = ns; break;
    case BEH_REMOVED:
        for (size_t i = 0; i < ns; i++)
            if (!sp[i].m) sp[w++] = sp[i];
        break;
    case BEH_CONTIGUOUS:
        for (size_t i = 0; i < ns; i++) {
            if (sp[i].m == prev && w > 0)
                sp[w - 1].b = sp[i].b;
            else
                sp[w++] = sp[i];
            prev = sp[i].m;
        }
        break;
    case BEH_MERGED_PREV:
        for (size_t i = 0; i < ns; i++) {
            if (sp[i].m && !prev && w > 0)
                sp[w - 1].b = sp[i].b;
            else
                sp[w++] = sp[i];
            prev = sp[i].m;
        }
        break;
    case BEH_MERGED_NEXT: {
        /* fold from the right */
        size_t top = ns; /* results stored at sp[top..ns) in reverse build */
        for (size_t ii = ns; ii-- > 0;) {
            span x = sp[ii];
            if (x.m && !prev && top < ns)
                sp[top].a = x.a;
            else
                sp[--top] = x;
            prev = x.m;
        }
        memmove(sp, sp + top, (ns - top) * sizeof *sp);
        w = ns - top;
        break;
    }
    }
    for (size_t i = 0; i < w; i++) {
        if (sp[i].b <= sp[i].a) continue;
        lt_status st = pretok(e, k + 1, s + sp[i].a, off + sp[i].a, sp[i].b - sp[i].a);
        if (st) return st;
    }
    return LT_OK;
}

static lt_status do_split(enc *e, int k, const pre_step *p, const char *s, const int64_t *off, size_t n) {
    size_t pos = 0, ms, me;
    lt_status st;
    if (p->behavior == BEH_ISOLATED && !p->invert) { /* streaming: no list needed */
        while (split_find(p, s, n, pos, &ms, &me)) {
            if (ms > pos && (st = pretok(e, k + 1, s + pos, off + pos, ms - pos))) return st;
            if (me > ms && (st = pretok(e, k + 1, s + ms, off + ms, me - ms))) return st;
            pos = me;
        }
        if (pos < n) return pretok(e, k + 1, s + pos, off + pos, n - pos);
        return LT_OK;
    }
    size_t cap = 64, ns = 0;
    span *sp = ctx_alloc(e->c, cap * sizeof *sp);
    if (!sp) return NOMEM(e);
    while (1) {
        int found = split_find(p, s, n, pos, &ms, &me);
        if (ns + 2 > cap) {
            span *nsp = ctx_alloc(e->c, cap * 2 * sizeof *sp);
            if (!nsp) return NOMEM(e);
            memcpy(nsp, sp, ns * sizeof *sp);
            sp = nsp;
            cap *= 2;
        }
        if (!found) {
            if (pos < n) sp[ns++] = (span){pos, n, p->invert};
            break;
        }
        if (ms > pos) sp[ns++] = (span){pos, ms, p->invert};
        sp[ns++] = (span){ms, me, !p->invert};
        pos = me;
    }
    return split_apply(e, k, p, sp, ns, s, off);
}

static lt_status pretok(enc *e, int k, const char *s, const int64_t *off, size_t n) {
    const lt_tokenizer *t = e->t;
    if (n == 0) return LT_OK;
    if (k == t->n_pre) return lt_bpe_word(&t->bpe, &e->c->bpe, s, n, off, e->out, e->err);
    const pre_step *p = &t->pre[k];
    switch (p->type) {
    case PRE_SPLIT: return do_split(e, k, p, s, off, n);
    case PRE_BYTELEVEL: {
        if (p->add_prefix_space && s[0] != ' ') {
            char *o = ctx_alloc(e->c, n + 1);
            int64_t *oo = ctx_alloc(e->c, (n + 1) * sizeof *oo);
            if (!o || !oo) return NOMEM(e);
            o[0] = ' ';
            memcpy(o + 1, s, n);
            oo[0] = off[0];
            memcpy(oo + 1, off, n * sizeof *off);
            s = o;
            off = oo;
            n++;
        }
        if (!p->use_regex) return pretok(e, k + 1, s, off, n);
        size_t pos = 0;
        while (pos < n) {
            size_t me = lt_pretok_regex_match(LT_RE_GPT2, s, n, pos);
            lt_status st = pretok(e, k + 1, s + pos, off + pos, me - pos);
            if (st) return st;
            pos = me;
        }
        return LT_OK;
    }
    case PRE_METASPACE: {
        const char *rep = p->pat.s;
        size_t rl = p->pat.n, cnt = 0;
        for (size_t q = 0; q < n; q++) cnt += s[q] == ' ';
        int prepend = 0;
        int starts_rep = n >= rl && !memcmp(s, rep, rl);
        if (p->scheme == SCHEME_ALWAYS && !(cnt == 0 ? starts_rep : (s[0] == ' ' || starts_rep))) prepend = 1;
        if (p->scheme == SCHEME_FIRST && off[0] == 0 && !(s[0] == ' ' || starts_rep)) prepend = 1;
        size_t m = n + cnt * (rl - 1) + (prepend ? rl : 0);
        char *o = ctx_alloc(e->c, m + 1);
        int64_t *oo = ctx_alloc(e->c, (m + 1) * sizeof *oo);
        if (!o || !oo) return NOMEM(e);
        size_t w = 0;
        if (prepend) {
            memcpy(o, rep, rl);
            for (size_t r = 0; r < rl; r++) oo[r] = off[0];
            w = rl;
        }
        for (size_t q = 0; q < n; q++) {
            if (s[q] == ' ') {
                memcpy(o + w, rep, rl);
                for (size_t r = 0; r < rl; r++) oo[w + r] = off[q];
                w += rl;
            } else {
                o[w] = s[q];
                oo[w++] = off[q];
            }
        }
        if (!p->split) return pretok(e, k + 1, o, oo, w);
        /* split on the replacement, MergedWithNext */
        pre_step sp = *p;
        sp.type = PRE_SPLIT;
        sp.regex_kind = 0;
        sp.behavior = BEH_MERGED_NEXT;
        sp.invert = 0;
        return do_split(e, k, &sp, o, oo, w);
    }
    }
    return lt_fail(e->err, LT_ERR_INVALID, "tokenizer: bad pre-tokenizer step");
}

lt_status lt_tok_encode(const lt_tokenizer *t, const char *text, size_t len, int add_special, lt_tok_ids *out,
                        lt_err *err) {
    enc e = {t, ctx_get(), out, err};
    if (!e.c) return lt_fail(err, LT_ERR_NOMEM, "tokenizer: out of memory");
    ctx_reset(e.c);
    lt_status st;
    if (add_special)
        for (int i = 0; i < t->n_prefix; i++)
            if ((st = lt_tok_ids_push(out, t->prefix[i], -1, err))) return st;
    const char *s = text;
    size_t n = len;
    int64_t *off;
    if (lt_utf8_valid_prefix(text, len) == len) {
        off = ctx_alloc(e.c, (len + 1) * sizeof *off);
        if (!off) return NOMEM(&e);
        /* offsets name the start of the character (as tokenizers' alignments) */
        for (size_t i = 0; i < len;) {
            int cl = lt_utf8_len((unsigned char)text[i]);
            for (int q = 0; q < cl; q++) off[i + q] = (int64_t)i;
            i += (size_t)cl;
        }
    } else {
        char *o = ctx_alloc(e.c, 3 * len + 1);
        off = ctx_alloc(e.c, (3 * len + 1) * sizeof *off);
        if (!o || !off) return NOMEM(&e);
        n = lt_utf8_lossy(text, len, o, off);
        s = o;
    }
    if (n) {
        if (t->raw_trie.used)
            st = split_added(&e, &t->raw_trie, s, off, n, gap_normalize);
        else
            st = gap_normalize(&e, s, off, n);
        if (st) return st;
    }
    if (add_special)
        for (int i = 0; i < t->n_suffix; i++)
            if ((st = lt_tok_ids_push(out, t->suffix[i], -1, err))) return st;
    return LT_OK;
}

/* ------------------------------------------------------------------ */
/* decode                                                              */

typedef struct {
    char *s;
    size_t n;
} dstr;

static int dstr_set(dstr *d, const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return 0;
    memcpy(p, s, n);
    p[n] = 0;
    free(d->s);
    d->s = p;
    d->n = n;
    return 1;
}

static int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static int hexv(char c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

/* parse "<0xNN>" as Rust's u8::from_str_radix(token[3..5], 16) would */
static int byte_token(const dstr *d) {
    if (d->n != 6 || memcmp(d->s, "<0x", 3) || d->s[5] != '>') return -1;
    char a = d->s[3], b = d->s[4];
    if (is_hex(a) && is_hex(b)) return hexv(a) * 16 + hexv(b);
    if (a == '+' && is_hex(b)) return hexv(b);
    return -1;
}

lt_status lt_tok_decode(const lt_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **text,
                        size_t *len, lt_err *err) {
    *text = NULL;
    if (len) *len = 0;
    dstr *tok = calloc(n + 1, sizeof *tok);
    if (!tok) return lt_fail(err, LT_ERR_NOMEM, "tokenizer: out of memory decoding %zu ids", n);
    size_t m = 0;
    lt_status st = LT_OK;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->id_tok[id].s) continue;
        if (skip_special && t->id_skip[id]) continue;
        if (!dstr_set(&tok[m++], t->id_tok[id].s, t->id_tok[id].n)) goto nomem;
    }
    for (int k = 0; k < t->n_dec && st == LT_OK; k++) {
        const dec_step *d = &t->dec[k];
        switch (d->type) {
        case DEC_BYTELEVEL: {
            size_t total = 0;
            for (size_t i = 0; i < m; i++) total += tok[i].n;
            char *b = malloc(total + 1);
            if (!b) goto nomem;
            size_t w = 0;
            for (size_t i = 0; i < m; i++) {
                /* all chars in the byte alphabet -> bytes, else the raw text */
                size_t w0 = w, q = 0;
                int ok = 1;
                while (q < tok[i].n) {
                    int bb = lt_bytelevel_byte(lt_utf8_next(tok[i].s, &q));
                    if (bb < 0) {
                        ok = 0;
                        break;
                    }
                    b[w++] = (char)bb;
                }
                if (!ok) {
                    w = w0;
                    memcpy(b + w, tok[i].s, tok[i].n);
                    w += tok[i].n;
                }
                free(tok[i].s);
                tok[i].s = NULL;
            }
            char *o = malloc(3 * w + 1);
            if (!o) {
                free(b);
                goto nomem;
            }
            size_t on = lt_utf8_lossy(b, w, o, NULL);
            free(b);
            o[on] = 0;
            tok[0].s = o;
            tok[0].n = on;
            m = 1;
            break;
        }
        case DEC_REPLACE:
            for (size_t i = 0; i < m; i++) {
                size_t cnt = 0, pl = d->a.n;
                for (size_t q = 0; q + pl <= tok[i].n;) {
                    if (!memcmp(tok[i].s + q, d->a.s, pl)) {
                        cnt++;
                        q += pl;
                    } else
                        q++;
                }
                if (!cnt) continue;
                char *o = malloc(tok[i].n + cnt * d->b.n + 1);
                if (!o) goto nomem;
                size_t w = 0;
                for (size_t q = 0; q < tok[i].n;) {
                    if (q + pl <= tok[i].n && !memcmp(tok[i].s + q, d->a.s, pl)) {
                        memcpy(o + w, d->b.s, d->b.n);
                        w += d->b.n;
                        q += pl;
                    } else
                        o[w++] = tok[i].s[q++];
                }
                o[w] = 0;
                free(tok[i].s);
                tok[i].s = o;
                tok[i].n = w;
            }
            break;
        case DEC_BYTEFALLBACK: {
            dstr *nt = calloc(2 * m + 1, sizeof *nt);
            char *bytes = malloc(m + 1);
            if (!nt || !bytes) {
                free(nt);
                free(bytes);
                goto nomem;
            }
            size_t w = 0, nb = 0;
            for (size_t i = 0; i <= m; i++) {
                int b = i < m ? byte_token(&tok[i]) : -1;
                if (b >= 0) {
                    bytes[nb++] = (char)b;
                    free(tok[i].s);
                    continue;
                }
                if (nb) {
                    if (lt_utf8_valid_prefix(bytes, nb) == nb) {
                        if (!dstr_set(&nt[w++], bytes, nb)) goto bf_fail;
                    } else {
                        /* one U+FFFD per byte */
                        char *o = malloc(3 * nb + 1);
                        if (!o) goto bf_fail;
                        for (size_t q = 0; q < nb; q++) memcpy(o + 3 * q, "\xEF\xBF\xBD", 3);
                        o[3 * nb] = 0;
                        nt[w].s = o;
                        nt[w++].n = 3 * nb;
                    }
                    nb = 0;
                }
                if (i < m) nt[w++] = tok[i];
            }
            free(bytes);
            free(tok);
            tok = nt;
            m = w;
            break;
        bf_fail:
            free(bytes);
            for (size_t q = 0; q < w; q++) free(nt[q].s);
            free(nt);
            m = 0;
            goto nomem;
        }
        case DEC_FUSE: {
            size_t total = 0;
            for (size_t i = 0; i < m; i++) total += tok[i].n;
            char *o = malloc(total + 1);
            if (!o) goto nomem;
            size_t w = 0;
            for (size_t i = 0; i < m; i++) {
                memcpy(o + w, tok[i].s, tok[i].n);
                w += tok[i].n;
                free(tok[i].s);
                tok[i].s = NULL;
            }
            o[w] = 0;
            tok[0].s = o;
            tok[0].n = w;
            m = 1;
            break;
        }
        case DEC_STRIP:
            for (size_t i = 0; i < m; i++) {
                /* chars of the token */
                size_t nch = 0, q = 0;
                while (q < tok[i].n) {
                    lt_utf8_next(tok[i].s, &q);
                    nch++;
                }
                size_t *pos = malloc((nch + 1) * sizeof *pos);
                uint32_t *cps = malloc((nch + 1) * sizeof *cps);
                if (!pos || !cps) {
                    free(pos);
                    free(cps);
                    goto nomem;
                }
                q = 0;
                for (size_t c = 0; c < nch; c++) {
                    pos[c] = q;
                    cps[c] = lt_utf8_next(tok[i].s, &q);
                }
                pos[nch] = q;
                size_t sc = 0, ec = nch;
                for (size_t c = 0; c < (size_t)d->start && c < nch; c++) {
                    if (cps[c] == d->ch)
                        sc = c + 1;
                    else
                        break;
                }
                for (size_t c = 0; c < (size_t)d->stop && c < nch; c++) {
                    size_t idx = nch - c - 1;
                    if (cps[idx] == d->ch)
                        ec = idx;
                    else
                        break;
                }
                if (ec < sc) ec = sc; /* (tokenizers would panic here) */
                size_t a = pos[sc], b = pos[ec];
                memmove(tok[i].s, tok[i].s + a, b - a);
                tok[i].n = b - a;
                tok[i].s[tok[i].n] = 0;
                free(pos);
                free(cps);
            }
            break;
        case DEC_METASPACE:
            for (size_t i = 0; i < m; i++) {
                char rep[4];
                int rl = lt_utf8_encode(d->ch, rep);
                size_t w = 0;
                for (size_t q = 0; q < tok[i].n;) {
                    if (q + (size_t)rl <= tok[i].n && !memcmp(tok[i].s + q, rep, (size_t)rl)) {
                        if (!(i == 0 && d->prepend)) tok[i].s[w++] = ' ';
                        q += (size_t)rl;
                    } else
                        tok[i].s[w++] = tok[i].s[q++];
                }
                tok[i].n = w;
                tok[i].s[w] = 0;
            }
            break;
        }
    }
    {
        size_t total = 0;
        for (size_t i = 0; i < m; i++) total += tok[i].n + 1;
        char *o = malloc(total + 1);
        if (!o) goto nomem;
        size_t w = 0;
        for (size_t i = 0; i < m; i++) {
            if (!t->has_decoder && i > 0) o[w++] = ' ';
            memcpy(o + w, tok[i].s, tok[i].n);
            w += tok[i].n;
        }
        o[w] = 0;
        *text = o;
        if (len) *len = w;
    }
    for (size_t i = 0; i < m; i++) free(tok[i].s);
    free(tok);
    return st;
nomem:
    for (size_t i = 0; i < m; i++) free(tok[i].s);
    free(tok);
    return lt_fail(err, LT_ERR_NOMEM, "tokenizer: out of memory decoding %zu ids", n);
}

/* ------------------------------------------------------------------ */
/* loading                                                             */

typedef struct {
    const char *path;
    lt_err *err;
    lt_tokenizer *t;
} loader;

static lt_status unsup(loader *L, const char *what, const char *name) {
    return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: %s '%s' is not supported", L->path, what, name);
}

static int jbool(const lt_jval *v, int def) {
    if (!v || v->type == LT_JNULL) return def;
    return v->type == LT_JTRUE;
}

static const char *jtype_str(const lt_jval *v) {
    const lt_jval *ty = lt_json_get(v, "type");
    return ty && ty->type == LT_JSTR ? ty->u.str : NULL;
}

/* copy a config string (freed with the tokenizer); .s is NULL when out of room */
static lstr keep_str(loader *L, const char *s, size_t n) {
    lstr r = {NULL, 0};
    if (L->t->n_cfg >= 64) return r;
    r.s = malloc(n + 1);
    if (!r.s) return r;
    memcpy(r.s, s, n);
    r.s[n] = 0;
    r.n = (uint32_t)n;
    L->t->cfg_str[L->t->n_cfg++] = r.s;
    return r;
}

static lt_status need_str(loader *L, const lt_jval *obj, const char *key, const char *where, const lt_jval **out) {
    const lt_jval *v = lt_json_get(obj, key);
    if (!v || v->type != LT_JSTR)
        return lt_fail(L->err, LT_ERR_FORMAT, "%s: %s: field '%s' must be a string", L->path, where, key);
    *out = v;
    return LT_OK;
}

/* {"String": "..."} patterns only */
static lt_status string_pattern(loader *L, const lt_jval *obj, const char *where, lstr *out) {
    const lt_jval *pat = lt_json_get(obj, "pattern");
    if (!pat || pat->type != LT_JOBJ)
        return lt_fail(L->err, LT_ERR_FORMAT, "%s: %s: missing 'pattern'", L->path, where);
    const lt_jval *sv = lt_json_get(pat, "String");
    if (!sv) {
        if (lt_json_get(pat, "Regex")) {
            const lt_jval *rv = lt_json_get(pat, "Regex");
            return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: %s: Regex pattern '%s' is not supported", L->path, where,
                           rv->type == LT_JSTR ? rv->u.str : "?");
        }
        return lt_fail(L->err, LT_ERR_FORMAT, "%s: %s: pattern must be {\"String\": ...}", L->path, where);
    }
    if (sv->type != LT_JSTR) return lt_fail(L->err, LT_ERR_FORMAT, "%s: %s: pattern String is not a string", L->path, where);
    if (sv->len == 0) return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: %s: empty pattern is not supported", L->path, where);
    *out = keep_str(L, sv->u.str, sv->len);
    return LT_OK;
}

static lt_status load_normalizer(loader *L, const lt_jval *v) {
    lt_tokenizer *t = L->t;
    if (!v || v->type == LT_JNULL) return LT_OK;
    const char *ty = jtype_str(v);
    if (!ty) return lt_fail(L->err, LT_ERR_FORMAT, "%s: normalizer without a 'type'", L->path);
    if (!strcmp(ty, "Sequence")) {
        const lt_jval *list = lt_json_get(v, "normalizers");
        if (!list || list->type != LT_JARR)
            return lt_fail(L->err, LT_ERR_FORMAT, "%s: normalizer Sequence: 'normalizers' must be an array", L->path);
        for (uint32_t i = 0; i < list->len; i++) {
            lt_status st = load_normalizer(L, &list->u.items[i]);
            if (st) return st;
        }
        return LT_OK;
    }
    if (t->n_norm >= MAX_STEPS) return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: too many normalizers", L->path);
    norm_step *ns = &t->norm[t->n_norm];
    if (!strcmp(ty, "NFC")) {
        ns->type = NORM_NFC;
    } else if (!strcmp(ty, "Prepend")) {
        const lt_jval *p = NULL;
        lt_status st = need_str(L, v, "prepend", "normalizer Prepend", &p);
        if (st) return st;
        ns->type = NORM_PREPEND;
        ns->a = keep_str(L, p->u.str, p->len);
    } else if (!strcmp(ty, "Replace")) {
        const lt_jval *c = NULL;
        lt_status st = string_pattern(L, v, "normalizer Replace", &ns->a);
        if (st) return st;
        if ((st = need_str(L, v, "content", "normalizer Replace", &c))) return st;
        ns->type = NORM_REPLACE;
        ns->b = keep_str(L, c->u.str, c->len);
    } else
        return unsup(L, "normalizer type", ty);
    t->n_norm++;
    return LT_OK;
}

static int behavior_of(const char *s) {
    if (!strcmp(s, "Removed")) return BEH_REMOVED;
    if (!strcmp(s, "Isolated")) return BEH_ISOLATED;
    if (!strcmp(s, "MergedWithPrevious")) return BEH_MERGED_PREV;
    if (!strcmp(s, "MergedWithNext")) return BEH_MERGED_NEXT;
    if (!strcmp(s, "Contiguous")) return BEH_CONTIGUOUS;
    return -1;
}

static lt_status load_pretok(loader *L, const lt_jval *v) {
    lt_tokenizer *t = L->t;
    if (!v || v->type == LT_JNULL) return LT_OK;
    const char *ty = jtype_str(v);
    if (!ty) return lt_fail(L->err, LT_ERR_FORMAT, "%s: pre_tokenizer without a 'type'", L->path);
    if (!strcmp(ty, "Sequence")) {
        const lt_jval *list = lt_json_get(v, "pretokenizers");
        if (!list || list->type != LT_JARR)
            return lt_fail(L->err, LT_ERR_FORMAT, "%s: pre_tokenizer Sequence: 'pretokenizers' must be an array",
                           L->path);
        for (uint32_t i = 0; i < list->len; i++) {
            lt_status st = load_pretok(L, &list->u.items[i]);
            if (st) return st;
        }
        return LT_OK;
    }
    if (t->n_pre >= MAX_STEPS) return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: too many pre-tokenizers", L->path);
    if (t->n_pre > 0 && t->pre[t->n_pre - 1].type == PRE_BYTELEVEL)
        return lt_fail(L->err, LT_ERR_UNSUPPORTED,
                       "%s: pre_tokenizer '%s' after ByteLevel is not supported (ByteLevel must come last)", L->path,
                       ty);
    pre_step *p = &t->pre[t->n_pre];
    memset(p, 0, sizeof *p);
    if (!strcmp(ty, "Split")) {
        p->type = PRE_SPLIT;
        const lt_jval *pat = lt_json_get(v, "pattern");
        const lt_jval *re = pat ? lt_json_get(pat, "Regex") : NULL;
        if (re) {
            if (re->type != LT_JSTR) return lt_fail(L->err, LT_ERR_FORMAT, "%s: Split: Regex must be a string", L->path);
            p->regex_kind = lt_pretok_regex_kind(re->u.str);
            if (!p->regex_kind)
                return lt_fail(L->err, LT_ERR_UNSUPPORTED,
                               "%s: pre_tokenizer Split: regex '%s' is not supported (only the Llama 3, Qwen2 and "
                               "GPT-2 patterns are implemented)",
                               L->path, re->u.str);
        } else {
            lt_status st = string_pattern(L, v, "pre_tokenizer Split", &p->pat);
            if (st) return st;
        }
        const lt_jval *b = lt_json_get(v, "behavior");
        if (!b || b->type != LT_JSTR || (p->behavior = behavior_of(b->u.str)) < 0)
            return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: pre_tokenizer Split: behavior '%s' is not supported",
                           L->path, b && b->type == LT_JSTR ? b->u.str : "?");
        p->invert = jbool(lt_json_get(v, "invert"), 0);
    } else if (!strcmp(ty, "ByteLevel")) {
        p->type = PRE_BYTELEVEL;
        p->add_prefix_space = jbool(lt_json_get(v, "add_prefix_space"), 1);
        p->use_regex = jbool(lt_json_get(v, "use_regex"), 1);
    } else if (!strcmp(ty, "Metaspace")) {
        p->type = PRE_METASPACE;
        const lt_jval *r = NULL;
        lt_status st = need_str(L, v, "replacement", "pre_tokenizer Metaspace", &r);
        if (st) return st;
        size_t q = 0;
        if (r->len == 0 || (lt_utf8_next(r->u.str, &q), q != r->len))
            return lt_fail(L->err, LT_ERR_FORMAT, "%s: Metaspace: replacement must be one character", L->path);
        p->pat = keep_str(L, r->u.str, r->len);
        p->scheme = SCHEME_ALWAYS;
        const lt_jval *ps = lt_json_get(v, "prepend_scheme");
        if (ps && ps->type == LT_JSTR) {
            if (!strcmp(ps->u.str, "always"))
                p->scheme = SCHEME_ALWAYS;
            else if (!strcmp(ps->u.str, "first"))
                p->scheme = SCHEME_FIRST;
            else if (!strcmp(ps->u.str, "never"))
                p->scheme = SCHEME_NEVER;
            else
                return unsup(L, "Metaspace prepend_scheme", ps->u.str);
        }
        const lt_jval *aps = lt_json_get(v, "add_prefix_space");
        if (aps && aps->type == LT_JFALSE) {
            if (p->scheme != SCHEME_NEVER)
                return lt_fail(L->err, LT_ERR_FORMAT, "%s: Metaspace: add_prefix_space does not match prepend_scheme",
                               L->path);
        }
        p->split = jbool(lt_json_get(v, "split"), 1);
    } else
        return unsup(L, "pre_tokenizer type", ty);
    t->n_pre++;
    return LT_OK;
}

static lt_status load_decoder(loader *L, const lt_jval *v) {
    lt_tokenizer *t = L->t;
    if (!v || v->type == LT_JNULL) return LT_OK;
    t->has_decoder = 1;
    const char *ty = jtype_str(v);
    if (!ty) return lt_fail(L->err, LT_ERR_FORMAT, "%s: decoder without a 'type'", L->path);
    if (!strcmp(ty, "Sequence")) {
        const lt_jval *list = lt_json_get(v, "decoders");
        if (!list || list->type != LT_JARR)
            return lt_fail(L->err, LT_ERR_FORMAT, "%s: decoder Sequence: 'decoders' must be an array", L->path);
        for (uint32_t i = 0; i < list->len; i++) {
            lt_status st = load_decoder(L, &list->u.items[i]);
            if (st) return st;
        }
        return LT_OK;
    }
    if (t->n_dec >= MAX_STEPS) return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: too many decoders", L->path);
    dec_step *d = &t->dec[t->n_dec];
    memset(d, 0, sizeof *d);
    lt_status st;
    if (!strcmp(ty, "ByteLevel"))
        d->type = DEC_BYTELEVEL;
    else if (!strcmp(ty, "ByteFallback"))
        d->type = DEC_BYTEFALLBACK;
    else if (!strcmp(ty, "Fuse"))
        d->type = DEC_FUSE;
    else if (!strcmp(ty, "Replace")) {
        const lt_jval *c = NULL;
        if ((st = string_pattern(L, v, "decoder Replace", &d->a))) return st;
        if ((st = need_str(L, v, "content", "decoder Replace", &c))) return st;
        d->type = DEC_REPLACE;
        d->b = keep_str(L, c->u.str, c->len);
    } else if (!strcmp(ty, "Strip")) {
        const lt_jval *c = NULL;
        if ((st = need_str(L, v, "content", "decoder Strip", &c))) return st;
        size_t q = 0;
        if (c->len == 0) return lt_fail(L->err, LT_ERR_FORMAT, "%s: decoder Strip: empty content", L->path);
        d->ch = lt_utf8_next(c->u.str, &q);
        const lt_jval *a = lt_json_get(v, "start"), *b = lt_json_get(v, "stop");
        if (!a || a->type != LT_JNUM || !b || b->type != LT_JNUM || a->u.num < 0 || b->u.num < 0)
            return lt_fail(L->err, LT_ERR_FORMAT, "%s: decoder Strip: start/stop must be numbers", L->path);
        d->type = DEC_STRIP;
        d->start = (int)a->u.num;
        d->stop = (int)b->u.num;
    } else if (!strcmp(ty, "Metaspace")) {
        const lt_jval *r = NULL;
        if ((st = need_str(L, v, "replacement", "decoder Metaspace", &r))) return st;
        size_t q = 0;
        if (r->len == 0) return lt_fail(L->err, LT_ERR_FORMAT, "%s: decoder Metaspace: empty replacement", L->path);
        d->ch = lt_utf8_next(r->u.str, &q);
        d->type = DEC_METASPACE;
        d->prepend = 1;
        const lt_jval *ps = lt_json_get(v, "prepend_scheme");
        if (ps && ps->type == LT_JSTR && !strcmp(ps->u.str, "never")) d->prepend = 0;
        const lt_jval *aps = lt_json_get(v, "add_prefix_space");
        if (aps && aps->type == LT_JFALSE) d->prepend = 0;
    } else
        return unsup(L, "decoder type", ty);
    t->n_dec++;
    return LT_OK;
}

static lt_status template_ids(loader *L, const lt_jval *specials, const lt_jval *item, int32_t *ids, int *n) {
    const lt_jval *sp = lt_json_get(item, "SpecialToken");
    const lt_jval *idv = sp ? lt_json_get(sp, "id") : NULL;
    if (!idv || idv->type != LT_JSTR)
        return lt_fail(L->err, LT_ERR_FORMAT, "%s: TemplateProcessing: bad template item", L->path);
    const lt_jval *def = lt_json_get(specials, idv->u.str);
    const lt_jval *arr = def ? lt_json_get(def, "ids") : NULL;
    if (!arr || arr->type != LT_JARR)
        return lt_fail(L->err, LT_ERR_FORMAT, "%s: TemplateProcessing: special token '%s' has no ids", L->path,
                       idv->u.str);
    for (uint32_t i = 0; i < arr->len; i++) {
        const lt_jval *x = &arr->u.items[i];
        if (*n >= MAX_SPECIAL)
            return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: TemplateProcessing: more than %d special ids", L->path,
                           MAX_SPECIAL);
        if (x->type != LT_JNUM || !(x->u.num >= 0 && x->u.num < LT_TOK_MAX_IDS) || x->u.num != (double)(int32_t)x->u.num)
            return lt_fail(L->err, LT_ERR_FORMAT, "%s: TemplateProcessing: special token '%s': ids[%u] is not a token id "
                           "(an integer in [0, %d))", L->path, idv->u.str, i, LT_TOK_MAX_IDS);
        ids[(*n)++] = (int32_t)x->u.num;
    }
    return LT_OK;
}

static lt_status load_post(loader *L, const lt_jval *v) {
    lt_tokenizer *t = L->t;
    if (!v || v->type == LT_JNULL) return LT_OK;
    const char *ty = jtype_str(v);
    if (!ty) return lt_fail(L->err, LT_ERR_FORMAT, "%s: post_processor without a 'type'", L->path);
    if (!strcmp(ty, "Sequence")) {
        const lt_jval *list = lt_json_get(v, "processors");
        if (!list || list->type != LT_JARR)
            return lt_fail(L->err, LT_ERR_FORMAT, "%s: post_processor Sequence: 'processors' must be an array",
                           L->path);
        for (uint32_t i = 0; i < list->len; i++) {
            lt_status st = load_post(L, &list->u.items[i]);
            if (st) return st;
        }
        return LT_OK;
    }
    if (!strcmp(ty, "ByteLevel")) return LT_OK; /* changes offsets only (trim_offsets); ids unchanged */
    if (!strcmp(ty, "TemplateProcessing")) {
        if (t->n_prefix || t->n_suffix)
            return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: more than one TemplateProcessing is not supported",
                           L->path);
        const lt_jval *single = lt_json_get(v, "single");
        const lt_jval *specials = lt_json_get(v, "special_tokens");
        if (!single || single->type != LT_JARR)
            return lt_fail(L->err, LT_ERR_FORMAT, "%s: TemplateProcessing: 'single' must be an array", L->path);
        int seen_a = 0;
        for (uint32_t i = 0; i < single->len; i++) {
            const lt_jval *it = &single->u.items[i];
            const lt_jval *seq = lt_json_get(it, "Sequence");
            if (seq) {
                const lt_jval *sid = lt_json_get(seq, "id");
                if (seen_a || !sid || sid->type != LT_JSTR || strcmp(sid->u.str, "A"))
                    return lt_fail(L->err, LT_ERR_UNSUPPORTED,
                                   "%s: TemplateProcessing: single template must hold sequence A once", L->path);
                seen_a = 1;
                continue;
            }
            lt_status st = template_ids(L, specials, it, seen_a ? t->suffix : t->prefix, seen_a ? &t->n_suffix : &t->n_prefix);
            if (st) return st;
        }
        if (!seen_a)
            return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: TemplateProcessing: no sequence A in 'single'", L->path);
        return LT_OK;
    }
    return unsup(L, "post_processor type", ty);
}

static lt_status load_model(loader *L, const lt_jval *m, char **pool_out) {
    lt_tokenizer *t = L->t;
    lt_bpe *b = &t->bpe;
    if (!m || m->type != LT_JOBJ) return lt_fail(L->err, LT_ERR_FORMAT, "%s: missing 'model' object", L->path);
    const char *ty = jtype_str(m);
    if (!ty) {
        /* tokenizers infers BPE from vocab+merges without a type */
        if (!lt_json_get(m, "merges")) return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: model without a type", L->path);
    } else if (strcmp(ty, "BPE"))
        return unsup(L, "model type", ty);
    const lt_jval *dr = lt_json_get(m, "dropout");
    if (dr && dr->type != LT_JNULL && !(dr->type == LT_JNUM && dr->u.num == 0.0))
        return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: model BPE: dropout is not supported", L->path);
    const char *keys[2] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const lt_jval *x = lt_json_get(m, keys[k]);
        if (x && x->type == LT_JSTR && x->len > 0)
            return lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: model BPE: %s '%s' is not supported", L->path, keys[k],
                           x->u.str);
    }
    b->byte_fallback = jbool(lt_json_get(m, "byte_fallback"), 0);
    b->fuse_unk = jbool(lt_json_get(m, "fuse_unk"), 0);
    b->ignore_merges = jbool(lt_json_get(m, "ignore_merges"), 0);
    const lt_jval *vocab = lt_json_get(m, "vocab");
    const lt_jval *merges = lt_json_get(m, "merges");
    if (!vocab || vocab->type != LT_JOBJ || !merges || merges->type != LT_JARR)
        return lt_fail(L->err, LT_ERR_FORMAT, "%s: model BPE: missing vocab (object) or merges (array)", L->path);
    /* vocab strings into one pool */
    size_t total = 0;
    int64_t maxid = -1;
    for (uint32_t i = 0; i < vocab->len; i++) {
        const lt_jval *e = &vocab->u.items[i];
        if (e->type != LT_JNUM || !(e->u.num >= 0 && e->u.num < LT_TOK_MAX_IDS) ||
            e->u.num != (double)(int64_t)e->u.num)
            return lt_fail(L->err, LT_ERR_FORMAT, "%s: model vocab: token '%s' has a bad id (expected an integer in "
                           "[0, %d))", L->path, e->key, LT_TOK_MAX_IDS);
        total += e->key_len + 1;
        if ((int64_t)e->u.num > maxid) maxid = (int64_t)e->u.num;
    }
    char *pool = malloc(total + 1);
    *pool_out = pool;
    if (!pool || !lt_strmap_init(&t->vocab, vocab->len))
        return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory for the vocab", L->path);
    size_t w = 0;
    for (uint32_t i = 0; i < vocab->len; i++) {
        const lt_jval *e = &vocab->u.items[i];
        memcpy(pool + w, e->key, e->key_len);
        pool[w + e->key_len] = 0;
        if (!lt_strmap_put(&t->vocab, pool + w, e->key_len, (int32_t)e->u.num))
            return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory for the vocab", L->path);
        w += e->key_len + 1;
    }
    /* merges: (id, id) -> (rank, id of the concatenation) */
    if (!lt_pairmap_init(&b->merges, merges->len))
        return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory for the merges", L->path);
    char *cat = NULL;
    size_t catcap = 0;
    uint32_t rank = 0;
    for (uint32_t i = 0; i < merges->len; i++) {
        const lt_jval *e = &merges->u.items[i];
        const char *a, *c;
        size_t an, cn;
        if (e->type == LT_JSTR) {
            if (e->len >= 8 && !memcmp(e->u.str, "#version", 8)) continue;
            const char *sp = memchr(e->u.str, ' ', e->len);
            if (!sp || memchr(sp + 1, ' ', e->len - (size_t)(sp + 1 - e->u.str))) {
                free(cat);
                return lt_fail(L->err, LT_ERR_FORMAT, "%s: merges[%u] '%s' is not 'a b'", L->path, i, e->u.str);
            }
            a = e->u.str;
            an = (size_t)(sp - a);
            c = sp + 1;
            cn = e->len - an - 1;
        } else if (e->type == LT_JARR && e->len == 2 && e->u.items[0].type == LT_JSTR &&
                   e->u.items[1].type == LT_JSTR) {
            a = e->u.items[0].u.str;
            an = e->u.items[0].len;
            c = e->u.items[1].u.str;
            cn = e->u.items[1].len;
        } else {
            free(cat);
            return lt_fail(L->err, LT_ERR_FORMAT, "%s: merges[%u] must be \"a b\" or [a, b]", L->path, i);
        }
        int32_t ia = lt_strmap_get(&t->vocab, a, an), ic = lt_strmap_get(&t->vocab, c, cn);
        if (an + cn > catcap) {
            catcap = (an + cn) * 2 + 64;
            char *nc = realloc(cat, catcap);
            if (!nc) {
                free(cat);
                return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
            }
            cat = nc;
        }
        memcpy(cat, a, an);
        memcpy(cat + an, c, cn);
        int32_t inew = lt_strmap_get(&t->vocab, cat, an + cn);
        if (ia < 0 || ic < 0) {
            lt_status st = lt_fail(L->err, LT_ERR_FORMAT, "%s: merges[%u]: token '%.*s' is not in the vocab", L->path, i,
                                   (int)(ia < 0 ? an : cn), ia < 0 ? a : c);
            free(cat);
            return st;
        }
        if (inew < 0) {
            lt_status st = lt_fail(L->err, LT_ERR_FORMAT, "%s: merges[%u]: merged token '%.*s' is not in the vocab",
                                   L->path, i, (int)(an + cn), cat);
            free(cat);
            return st;
        }
        /* merges that join across a cut before U+2581 (see lt_bpe.seg) */
        if (cn >= 3 && !memcmp(c, "\xE2\x96\x81", 3) && !(an >= 3 && !memcmp(a + an - 3, "\xE2\x96\x81", 3))) {
            size_t k = an;
            while (k > 0 && ((unsigned char)a[k - 1] & 0xC0) == 0x80) k--;
            uint32_t last = 0;
            if (k > 0) {
                size_t q = k - 1;
                last = lt_utf8_next(a, &q);
            }
            int known = 0;
            for (int x = 0; x < b->n_seg_block && x < 16; x++) known |= b->seg_block[x] == last;
            if (!known) {
                if (b->n_seg_block < 16) b->seg_block[b->n_seg_block] = last;
                b->n_seg_block++;
            }
        }
        if (!lt_pairmap_put(&b->merges, (uint32_t)ia, (uint32_t)ic, rank, (uint32_t)inew)) {
            free(cat);
            return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory for the merges", L->path);
        }
        rank++;
    }
    free(cat);
    /* unk */
    b->unk_id = -1;
    const lt_jval *unk = lt_json_get(m, "unk_token");
    if (unk && unk->type == LT_JSTR) {
        b->unk_id = lt_strmap_get(&t->vocab, unk->u.str, unk->len);
        if (b->unk_id < 0)
            return lt_fail(L->err, LT_ERR_FORMAT, "%s: model: unk_token '%s' is not in the vocab", L->path, unk->u.str);
    }
    for (int x = 0; x < 256; x++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", x);
        b->fallback_id[x] = lt_strmap_get(&t->vocab, code, 6);
    }
    t->n_ids = (int32_t)(maxid + 1);
    return LT_OK;
}

/* byte-level: re-key the BPE vocab by raw bytes */
static lt_status build_byte_vocab(loader *L) {
    lt_tokenizer *t = L->t;
    lt_bpe *b = &t->bpe;
    size_t total = 0;
    for (size_t i = 0; i < t->vocab.cap; i++)
        if (t->vocab.e[i].key) total += t->vocab.e[i].len;
    b->key_pool = malloc(total + 1);
    if (!b->key_pool || !lt_strmap_init(&b->vocab, t->vocab.n))
        return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
    size_t w = 0;
    for (int x = 0; x < 256; x++) b->byte_id[x] = -1;
    for (size_t i = 0; i < t->vocab.cap; i++) {
        const char *k = t->vocab.e[i].key;
        if (!k) continue;
        size_t n = t->vocab.e[i].len, q = 0, w0 = w;
        int ok = 1;
        while (q < n) {
            int by = lt_bytelevel_byte(lt_utf8_next(k, &q));
            if (by < 0) {
                ok = 0;
                break;
            }
            b->key_pool[w++] = (char)by;
        }
        if (!ok || w == w0) {
            w = w0;
            continue;
        }
        if (!lt_strmap_put(&b->vocab, b->key_pool + w0, w - w0, t->vocab.e[i].val))
            return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
        if (w - w0 == 1) b->byte_id[(unsigned char)b->key_pool[w0]] = t->vocab.e[i].val;
    }
    return LT_OK;
}

static lt_status load_added(loader *L, const lt_jval *arr) {
    lt_tokenizer *t = L->t;
    if (!arr || arr->type == LT_JNULL) return LT_OK;
    if (arr->type != LT_JARR) return lt_fail(L->err, LT_ERR_FORMAT, "%s: 'added_tokens' must be an array", L->path);
    /* tokenizers adds the file's entries one by one (AddedVocabulary::add_tokens: the
     * file's "id" is not used -- it warns and keeps the id computed here) */
    lt_added_set s;
    if (!lt_added_set_init(&s, &t->vocab)) return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
    lt_status st = LT_OK;
    for (uint32_t i = 0; i < arr->len && !st; i++) {
        const lt_jval *o = &arr->u.items[i];
        const lt_jval *c = lt_json_get(o, "content");
        if (!c || c->type != LT_JSTR) {
            st = lt_fail(L->err, LT_ERR_FORMAT, "%s: added_tokens[%u]: 'content' must be a string", L->path, i);
            break;
        }
        if (memchr(c->u.str, 0, c->len)) {
            st = lt_fail(L->err, LT_ERR_UNSUPPORTED, "%s: added_tokens[%u]: a NUL character in 'content' is not supported",
                         L->path, i);
            break;
        }
        lt_tok_added a = {(char *)c->u.str, 0, 0, 0, 0, 0, 0};
        a.special = (uint8_t)jbool(lt_json_get(o, "special"), 0);
        a.single_word = (uint8_t)jbool(lt_json_get(o, "single_word"), 0);
        a.lstrip = (uint8_t)jbool(lt_json_get(o, "lstrip"), 0);
        a.rstrip = (uint8_t)jbool(lt_json_get(o, "rstrip"), 0);
        a.normalized = (uint8_t)jbool(lt_json_get(o, "normalized"), !a.special);
        int32_t id;
        int what;
        if (!lt_added_set_add(&s, &a, &id, &what)) st = lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
    }
    size_t total = 0;
    for (size_t i = 0; i < s.n; i++) total += strlen(s.a[i].content) + 1;
    if (!st) {
        t->added = calloc(s.n + 1, sizeof *t->added);
        t->added_pool = malloc(total + 1);
        if (!t->added || !t->added_pool || !lt_strmap_init(&t->added_map, s.n + 1))
            st = lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
    }
    size_t w = 0;
    for (size_t i = 0; i < s.n && !st; i++) {
        const lt_tok_added *e = &s.a[i];
        added_tok a;
        memset(&a, 0, sizeof a);
        size_t n = strlen(e->content);
        memcpy(t->added_pool + w, e->content, n + 1);
        a.content.s = t->added_pool + w;
        a.content.n = (uint32_t)n;
        w += n + 1;
        a.id = e->id;
        a.special = e->special;
        a.single_word = e->single_word;
        a.lstrip = e->lstrip;
        a.rstrip = e->rstrip;
        a.normalized = e->normalized;
        if (!lt_strmap_put(&t->added_map, a.content.s, a.content.n, a.id))
            st = lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
        t->added[t->n_added++] = a;
    }
    lt_added_set_free(&s);
    return st;
}

static lt_status build_added(loader *L) {
    lt_tokenizer *t = L->t;
    trie_init(&t->raw_trie);
    trie_init(&t->norm_trie);
    /* special tokens first, then the others (tokenizers' order) */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < t->n_added; i++) {
            added_tok *a = &t->added[i];
            if (a->special != (pass == 0)) continue;
            a->shown = a->content;
            if (!a->normalized) {
                if (!trie_insert(&t->raw_trie, a->content.s, a->content.n, (int32_t)i))
                    return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
                continue;
            }
            /* the pattern is the normalized content (tokenizers >= 0.23 also shows it) */
            const char *s = a->content.s;
            size_t n = a->content.n;
            char *buf = NULL;
            for (int k = 0; k < t->n_norm; k++) {
                const norm_step *ns = &t->norm[k];
                size_t cap = 3 * n + ns->a.n + (ns->b.n + 1) * n + 16;
                char *o = malloc(cap);
                int64_t *oo = ns->type == NORM_NFC ? malloc(cap * sizeof *oo) : NULL;
                if (!o || (ns->type == NORM_NFC && !oo)) {
                    free(o);
                    free(oo);
                    free(buf);
                    return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
                }
                size_t m = 0;
                if (ns->type == NORM_NFC)
                    m = lt_uni_nfc(s, n, NULL, o, oo);
                else if (ns->type == NORM_PREPEND) {
                    memcpy(o, ns->a.s, ns->a.n);
                    memcpy(o + ns->a.n, s, n);
                    m = n ? n + ns->a.n : 0;
                } else {
                    for (size_t q = 0; q < n;) {
                        if (q + ns->a.n <= n && !memcmp(s + q, ns->a.s, ns->a.n)) {
                            memcpy(o + m, ns->b.s, ns->b.n);
                            m += ns->b.n;
                            q += ns->a.n;
                        } else
                            o[m++] = s[q++];
                    }
                }
                free(buf);
                free(oo);
                buf = o;
                s = o;
                n = m;
            }
            a->shown = a->content;
            if (buf && (n != a->content.n || memcmp(buf, a->content.s, n))) {
                buf[n] = 0;
                a->shown_own = buf;
                a->shown.s = buf;
                a->shown.n = n;
                buf = NULL;
            }
            free(buf);
            int okk = trie_insert(&t->norm_trie, a->shown.s, a->shown.n, (int32_t)i);
            if (!okk) return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
        }
    }
    return LT_OK;
}

/* decode(skip_special_tokens) drops an id when the string it decodes from (the
 * normalized form for a `normalized` added token) is the content of a special
 * token -- tokenizers 0.23 tests the string, not the id: a special token with
 * `normalized: true` that its normalizer changes is kept. */
static lt_status build_skip(loader *L) {
    lt_tokenizer *t = L->t;
    lt_strmap special;
    if (!lt_strmap_init(&special, t->n_added + 1)) return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].special && !lt_strmap_put(&special, t->added[i].content.s, t->added[i].content.n, 1)) {
            lt_strmap_free(&special);
            return lt_fail(L->err, LT_ERR_NOMEM, "%s: out of memory", L->path);
        }
    /* an id whose string is a special content: an added token, or a model token of that content */
    for (size_t i = 0; i < t->n_added; i++) {
        const lstr *s = &t->id_tok[t->added[i].id];
        if (lt_strmap_get(&special, s->s, s->n) >= 0) t->id_skip[t->added[i].id] = 1;
        if (t->added[i].special) {
            int32_t v = lt_strmap_get(&t->vocab, t->added[i].content.s, t->added[i].content.n);
            if (v >= 0 && v < t->n_ids && t->id_tok[v].n == t->added[i].content.n &&
                !memcmp(t->id_tok[v].s, t->added[i].content.s, t->added[i].content.n))
                t->id_skip[v] = 1;
        }
    }
    lt_strmap_free(&special);
    return LT_OK;
}

typedef struct {
    const char *text;
    size_t len;
    char *hex;
} sha_job;

static void *sha_worker(void *arg) {
    sha_job *j = arg;
    lt_sha256_hex(j->text, j->len, j->hex);
    return NULL;
}

lt_status lt_tok_load(const char *path, lt_tokenizer **out, lt_err *err) {
    *out = NULL;
    char full[4096];
    if (lt_is_dir(path)) {
        if (!lt_path_join(full, sizeof full, path, "tokenizer.json"))
            return lt_fail(err, LT_ERR_INVALID, "%s: path too long", path);
    } else
        snprintf(full, sizeof full, "%s", path);
    char *text;
    size_t len;
    lt_status st = lt_read_file(full, &text, &len, err);
    if (st) return st;
    lt_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        free(text);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", full);
    }
    /* hash the file on a second thread while parsing */
    sha_job sj = {text, len, t->sha};
    pthread_t sha_th;
    int sha_threaded = pthread_create(&sha_th, NULL, sha_worker, &sj) == 0;
    if (!sha_threaded) sha_worker(&sj);
    lt_jdoc *doc = NULL;
    lt_jval *root = NULL;
    loader L = {full, err, t};
    st = lt_json_parse(text, len, full, &doc, &root, err);
    if (st) goto fail;
    if (root->type != LT_JOBJ) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: top level is not a JSON object", full);
        goto fail;
    }
    {
        const lt_jval *x;
        if ((x = lt_json_get(root, "truncation")) && x->type != LT_JNULL) {
            st = lt_fail(err, LT_ERR_UNSUPPORTED, "%s: truncation is not supported (must be null)", full);
            goto fail;
        }
        if ((x = lt_json_get(root, "padding")) && x->type != LT_JNULL) {
            st = lt_fail(err, LT_ERR_UNSUPPORTED, "%s: padding is not supported (must be null)", full);
            goto fail;
        }
    }
    if ((st = load_model(&L, lt_json_get(root, "model"), &t->pool))) goto fail;
    if ((st = load_normalizer(&L, lt_json_get(root, "normalizer")))) goto fail;
    if ((st = load_pretok(&L, lt_json_get(root, "pre_tokenizer")))) goto fail;
    if ((st = load_post(&L, lt_json_get(root, "post_processor")))) goto fail;
    if ((st = load_decoder(&L, lt_json_get(root, "decoder")))) goto fail;
    if ((st = load_added(&L, lt_json_get(root, "added_tokens")))) goto fail;
    if (t->n_cfg >= 64) {
        st = lt_fail(err, LT_ERR_UNSUPPORTED, "%s: too many configuration strings", full);
        goto fail;
    }
    if ((st = build_added(&L))) goto fail;
    t->bpe.byte_level = t->n_pre > 0 && t->pre[t->n_pre - 1].type == PRE_BYTELEVEL;
    if (t->bpe.byte_level) {
        if ((st = build_byte_vocab(&L))) goto fail;
    } else {
        t->bpe.vocab = t->vocab; /* shared */
        t->bpe_vocab_shared = 1;
        for (int x = 0; x < 256; x++) {
            char c = (char)x;
            t->bpe.byte_id[x] = x < 0x80 ? lt_strmap_get(&t->vocab, &c, 1) : -1;
        }
        t->bpe.bmp_id = malloc(0x10000 * sizeof *t->bpe.bmp_id);
        if (!t->bpe.bmp_id) {
            st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", full);
            goto fail;
        }
        for (int x = 0; x < 0x10000; x++) t->bpe.bmp_id[x] = -1;
        for (size_t i = 0; i < t->vocab.cap; i++) {
            const char *k = t->vocab.e[i].key;
            if (!k) continue;
            size_t n = t->vocab.e[i].len, q = 0;
            if (n < 2 || n > 3) continue;
            uint32_t cp = lt_utf8_next(k, &q);
            if (q == n && cp < 0x10000) t->bpe.bmp_id[cp] = t->vocab.e[i].val;
        }
        int complete = t->bpe.byte_fallback;
        for (int x = 0; x < 256; x++) complete &= t->bpe.fallback_id[x] >= 0;
        t->bpe.seg = complete && !t->bpe.ignore_merges && t->bpe.n_seg_block <= 16;
    }
    {
        static uint64_t next_uid = 0;
        t->bpe.uid = __atomic_add_fetch(&next_uid, 1, __ATOMIC_RELAXED) * 0x9E3779B97F4A7C15ull;
    }
    /* id tables */
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id + 1 > t->n_ids) t->n_ids = t->added[i].id + 1;
    t->id_tok = calloc((size_t)t->n_ids + 1, sizeof *t->id_tok);
    t->id_special = calloc((size_t)t->n_ids + 1, 1);
    t->id_skip = calloc((size_t)t->n_ids + 1, 1);
    if (!t->id_tok || !t->id_special || !t->id_skip) {
        st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", full);
        goto fail;
    }
    for (size_t i = 0; i < t->vocab.cap; i++)
        if (t->vocab.e[i].key) {
            t->id_tok[t->vocab.e[i].val].s = (char *)t->vocab.e[i].key;
            t->id_tok[t->vocab.e[i].val].n = t->vocab.e[i].len;
        }
    for (size_t i = 0; i < t->n_added; i++) t->id_tok[t->added[i].id] = t->added[i].shown;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].special) t->id_special[t->added[i].id] = 1;
    if ((st = build_skip(&L))) goto fail;
    for (int i = 0; i < t->n_prefix + t->n_suffix; i++) {
        int32_t id = i < t->n_prefix ? t->prefix[i] : t->suffix[i - t->n_prefix];
        if (id < 0 || id >= t->n_ids || !t->id_tok[id].s) {
            st = lt_fail(err, LT_ERR_RANGE, "%s: post_processor: special id %d is not in the vocabulary (%d ids)", full,
                         id, t->n_ids);
            goto fail;
        }
    }
    lt_json_free(doc);
    if (sha_threaded) pthread_join(sha_th, NULL);
    free(text);
    *out = t;
    return LT_OK;
fail:
    lt_json_free(doc);
    if (sha_threaded) pthread_join(sha_th, NULL);
    free(text);
    lt_tok_free(t);
    return st;
}

void lt_tok_free(lt_tokenizer *t) {
    if (!t) return;
    if (!t->bpe_vocab_shared) lt_strmap_free(&t->bpe.vocab);
    free(t->bpe.key_pool);
    free(t->bpe.bmp_id);
    lt_pairmap_free(&t->bpe.merges);
    lt_strmap_free(&t->vocab);
    free(t->pool);
    free(t->id_tok);
    free(t->id_special);
    free(t->id_skip);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].shown_own);
    free(t->added);
    free(t->added_pool);
    lt_strmap_free(&t->added_map);
    free(t->raw_trie.nodes);
    free(t->norm_trie.nodes);
    for (int i = 0; i < t->n_cfg; i++) free(t->cfg_str[i]);
    free(t);
}

int32_t lt_tok_vocab_size(const lt_tokenizer *t) { return t->n_ids; }

int32_t lt_tok_token_to_id(const lt_tokenizer *t, const char *token) {
    size_t n = strlen(token);
    int32_t id = lt_strmap_get(&t->added_map, token, n);
    return id >= 0 ? id : lt_strmap_get(&t->vocab, token, n);
}

const char *lt_tok_id_to_token(const lt_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_ids) return NULL;
    return t->id_tok[id].s;
}

int lt_tok_is_special(const lt_tokenizer *t, int32_t id) { return id >= 0 && id < t->n_ids && t->id_special[id]; }

int lt_tok_prefix_ids(const lt_tokenizer *t, int32_t *ids, int cap) {
    int n = t->n_prefix < cap ? t->n_prefix : cap;
    for (int i = 0; i < n; i++) ids[i] = t->prefix[i];
    return n;
}

int lt_tok_suffix_ids(const lt_tokenizer *t, int32_t *ids, int cap) {
    int n = t->n_suffix < cap ? t->n_suffix : cap;
    for (int i = 0; i < n; i++) ids[i] = t->suffix[i];
    return n;
}

const char *lt_tok_sha256(const lt_tokenizer *t) { return t->sha; }
