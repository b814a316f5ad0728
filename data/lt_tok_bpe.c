/* lt_tok_bpe.c -- hash maps and the BPE merge loop of the tokenizer.
 * The merge loop follows tokenizers' Word::merge_all: a min-heap of
 * (rank, position) over adjacent symbol pairs, stale entries skipped. */
#include <stdlib.h>
#include <string.h>

#include "lt_tok_internal.h"
#include "lt_unicode.h"

/* ---- byte-level alphabet (GPT-2): printable Latin-1 bytes map to
 * themselves, the 68 others to U+0100.. in byte order ---- */
uint32_t lt_bytelevel_char(unsigned b) {
    static uint32_t map[256];
    static int ready = 0; /* benign race: every thread computes the same table */
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        uint32_t tmp[256];
        uint32_t n = 0;
        for (unsigned x = 0; x < 256; x++) {
            int keep = (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE);
            tmp[x] = keep ? x : 256 + n++;
        }
        memcpy(map, tmp, sizeof map);
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    return map[b & 0xFF];
}

int lt_bytelevel_byte(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return (int)cp;
    if (cp < 0x100 || cp >= 0x100 + 68) return -1;
    uint32_t n = cp - 0x100;
    for (unsigned x = 0; x < 256; x++) {
        int keep = (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE);
        if (!keep) {
            if (n == 0) return (int)x;
            n--;
        }
    }
    return -1;
}

/* ---- hashing ---- */
uint64_t lt_hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w ^ ((uint64_t)n << 56)) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    return h;
}

static size_t pow2_at_least(size_t x) {
    size_t c = 16;
    while (c < x) c <<= 1;
    return c;
}

int lt_strmap_init(lt_strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expected * 2 + 1);
    m->e = calloc(m->cap, sizeof *m->e);
    return m->e != NULL;
}

void lt_strmap_free(lt_strmap *m) {
    free(m->e);
    memset(m, 0, sizeof *m);
}

static int strmap_grow(lt_strmap *m) {
    lt_strmap nm;
    if (!lt_strmap_init(&nm, m->cap)) return 0;
    for (size_t i = 0; i < m->cap; i++)
        if (m->e[i].key) lt_strmap_put(&nm, m->e[i].key, m->e[i].len, m->e[i].val);
    lt_strmap_free(m);
    *m = nm;
    return 1;
}

int lt_strmap_put(lt_strmap *m, const char *key, size_t len, int32_t val) {
    if ((m->n + 1) * 2 > m->cap && !strmap_grow(m)) return 0;
    uint64_t hh = lt_hash_bytes(key, len);
    size_t mask = m->cap - 1, h = (size_t)hh & mask;
    uint32_t tag = (uint32_t)(hh >> 32);
    while (m->e[h].key) {
        lt_strmap_entry *x = &m->e[h];
        if (x->hash == tag && x->len == len && !memcmp(x->key, key, len)) {
            x->val = val;
            return 1;
        }
        h = (h + 1) & mask;
    }
    m->e[h].key = key;
    m->e[h].len = (uint32_t)len;
    m->e[h].val = val;
    m->e[h].hash = tag;
    m->n++;
    return 1;
}

int32_t lt_strmap_get(const lt_strmap *m, const char *key, size_t len) {
    if (!m->cap) return -1;
    uint64_t hh = lt_hash_bytes(key, len);
    size_t mask = m->cap - 1, h = (size_t)hh & mask;
    uint32_t tag = (uint32_t)(hh >> 32);
    for (;;) {
        const lt_strmap_entry *x = &m->e[h];
        if (!x->key) return -1;
        if (x->hash == tag && x->len == len && !memcmp(x->key, key, len)) return x->val;
        h = (h + 1) & mask;
    }
}

int lt_pairmap_init(lt_pairmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expected * 2 + 1);
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = calloc(m->cap, sizeof *m->vals);
    return m->keys && m->vals;
}

void lt_pairmap_free(lt_pairmap *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

int lt_pairmap_put(lt_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t new_id) {
    if ((m->n + 1) * 2 > m->cap) {
        lt_pairmap nm;
        if (!lt_pairmap_init(&nm, m->cap)) return 0;
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) {
                uint64_t k = m->keys[i] - 1;
                lt_pairmap_put(&nm, (uint32_t)(k >> 32), (uint32_t)k, (uint32_t)(m->vals[i] >> 32), (uint32_t)m->vals[i]);
            }
        lt_pairmap_free(m);
        *m = nm;
    }
    uint64_t k = (((uint64_t)a << 32) | b) + 1;
    size_t mask = m->cap - 1;
    size_t h = (size_t)((k * 0x9E3779B97F4A7C15ull) >> 20) & mask;
    while (m->keys[h] && m->keys[h] != k) h = (h + 1) & mask;
    if (!m->keys[h]) m->n++;
    m->keys[h] = k;
    m->vals[h] = ((uint64_t)rank << 32) | new_id;
    return 1;
}

/* ---- BPE ---- */
static inline int utf8_len_clamped(unsigned char b, size_t left) {
    int l = lt_utf8_len(b);
    return (size_t)l > left ? (int)left : l;
}

void lt_bpe_scratch_free(lt_bpe_scratch *s) {
    free(s->id);
    free(s->start);
    free(s->len);
    free(s->prev);
    free(s->next);
    free(s->heap);
    free(s->heap_val);
    free(s->cache);
    memset(s, 0, sizeof *s);
}

static int scratch_reserve(lt_bpe_scratch *s, size_t n) {
    if (n <= s->cap) return 1;
    size_t c = s->cap ? s->cap : 64;
    while (c < n) c *= 2;
    int32_t *a = realloc(s->id, c * sizeof *a);
    if (!a) return 0;
    s->id = a;
    if (!(a = realloc(s->start, c * sizeof *a))) return 0;
    s->start = a;
    if (!(a = realloc(s->len, c * sizeof *a))) return 0;
    s->len = a;
    if (!(a = realloc(s->prev, c * sizeof *a))) return 0;
    s->prev = a;
    if (!(a = realloc(s->next, c * sizeof *a))) return 0;
    s->next = a;
    s->cap = c;
    return 1;
}

/* heap entries: key = rank << 32 | pos (smaller first), value: the pair
 * (left id << 32 | right id) it was pushed for; an entry is stale when the
 * pair at pos changed (tokenizers compares the merged id instead, which is
 * equivalent: a merged token's string determines the pair at a position). */
typedef struct {
    uint64_t *key;
    uint64_t *val;
    size_t n, cap;
} bheap;

static int heap_push(bheap *h, uint64_t key, uint64_t val) {
    if (h->n == h->cap) {
        size_t c = h->cap ? h->cap * 2 : 64;
        uint64_t *k = realloc(h->key, c * sizeof *k);
        if (!k) return 0;
        h->key = k;
        uint64_t *v = realloc(h->val, c * sizeof *v);
        if (!v) return 0;
        h->val = v;
        h->cap = c;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->key[p] <= key) break;
        h->key[i] = h->key[p];
        h->val[i] = h->val[p];
        i = p;
    }
    h->key[i] = key;
    h->val[i] = val;
    return 1;
}

static void heap_pop(bheap *h, uint64_t *key, uint64_t *val) {
    *key = h->key[0];
    *val = h->val[0];
    uint64_t k = h->key[--h->n];
    uint64_t v = h->val[h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h->key[c + 1] < h->key[c]) c++;
        if (h->key[c] >= k) break;
        h->key[i] = h->key[c];
        h->val[i] = h->val[c];
        i = c;
    }
    if (n) {
        h->key[i] = k;
        h->val[i] = v;
    }
}

#define PAIR(a, b) (((uint64_t)(uint32_t)(a) << 32) | (uint32_t)(b))

/* id of the character w[0..cl) (char-level) or of the byte w[0] */
static inline int32_t char_id(const lt_bpe *m, const char *w, size_t cl) {
    if (cl == 1) return m->byte_id[(unsigned char)w[0]];
    if (m->bmp_id && cl <= 3) {
        size_t q = 0;
        return m->bmp_id[lt_utf8_next(w, &q)];
    }
    return lt_strmap_get(&m->vocab, w, cl);
}

/* BPE of one word into s->id / s->len (compacted); returns the count or -1
 * when out of memory. Follows tokenizers' BPE::merge_word + Word::merge_all. */
static long bpe_core(const lt_bpe *m, lt_bpe_scratch *s, const char *w, size_t n) {
    if (m->ignore_merges) {
        int32_t id = lt_strmap_get(&m->vocab, w, n);
        if (id >= 0) {
            if (!scratch_reserve(s, 2)) return -1;
            s->id[0] = id;
            s->len[0] = (int32_t)n;
            return 1;
        }
    }
    if (!scratch_reserve(s, n + 1)) return -1;
    int32_t *sid = s->id, *slen = s->len;
    size_t ns = 0;
    int32_t unk_len = -1; /* pending unknown token (fused) */
    size_t i = 0;
    while (i < n) {
        size_t cl = m->byte_level ? 1 : (size_t)utf8_len_clamped((unsigned char)w[i], n - i);
        int32_t id = char_id(m, w + i, cl);
        if (id >= 0) {
            if (unk_len >= 0) {
                sid[ns] = m->unk_id;
                slen[ns++] = unk_len;
                unk_len = -1;
            }
            sid[ns] = id;
            slen[ns++] = (int32_t)cl;
        } else {
            int done = 0;
            if (m->byte_fallback) {
                size_t k;
                for (k = 0; k < cl; k++)
                    if (m->fallback_id[(unsigned char)w[i + k]] < 0) break;
                if (k == cl) {
                    /* (tokenizers leaves a pending unknown token pending here) */
                    for (k = 0; k < cl; k++) {
                        sid[ns] = m->fallback_id[(unsigned char)w[i + k]];
                        slen[ns++] = 1;
                    }
                    done = 1;
                }
            }
            if (!done && m->unk_id >= 0) {
                if (unk_len >= 0 && m->fuse_unk)
                    unk_len += (int32_t)cl;
                else {
                    if (unk_len >= 0) {
                        sid[ns] = m->unk_id;
                        slen[ns++] = unk_len;
                    }
                    unk_len = (int32_t)cl;
                }
            }
            /* no unk token: the character is dropped */
        }
        i += cl;
    }
    if (unk_len >= 0) {
        sid[ns] = m->unk_id;
        slen[ns++] = unk_len;
    }
    if (ns < 2 || !m->merges.n) return (long)ns;
    int32_t *prev = s->prev, *next = s->next;
    for (size_t k = 0; k < ns; k++) {
        prev[k] = (int32_t)k - 1;
        next[k] = k + 1 < ns ? (int32_t)k + 1 : -1;
    }
    bheap h = {s->heap, s->heap_val, 0, s->heap_cap};
    int ok = 1;
    uint32_t rank = 0, nid = 0;
    for (size_t k = 0; k + 1 < ns; k++)
        if (lt_pairmap_get(&m->merges, (uint32_t)sid[k], (uint32_t)sid[k + 1], &rank, &nid))
            ok &= heap_push(&h, ((uint64_t)rank << 32) | k, PAIR(sid[k], sid[k + 1]));
    while (h.n && ok) {
        uint64_t key, pair;
        heap_pop(&h, &key, &pair);
        size_t pos = (size_t)(uint32_t)key;
        if (slen[pos] == 0) continue;
        int32_t nx = next[pos];
        if (nx < 0 || PAIR(sid[pos], sid[nx]) != pair) continue;
        lt_pairmap_get(&m->merges, (uint32_t)sid[pos], (uint32_t)sid[nx], &rank, &nid);
        /* merge pos with nx */
        sid[pos] = (int32_t)nid;
        slen[pos] += slen[nx];
        slen[nx] = 0;
        next[pos] = next[nx];
        if (next[nx] >= 0) prev[next[nx]] = (int32_t)pos;
        int32_t pv = prev[pos];
        if (pv >= 0 && lt_pairmap_get(&m->merges, (uint32_t)sid[pv], (uint32_t)sid[pos], &rank, &nid))
            ok &= heap_push(&h, ((uint64_t)rank << 32) | (uint32_t)pv, PAIR(sid[pv], sid[pos]));
        int32_t nn = next[pos];
        if (nn >= 0 && lt_pairmap_get(&m->merges, (uint32_t)sid[pos], (uint32_t)sid[nn], &rank, &nid))
            ok &= heap_push(&h, ((uint64_t)rank << 32) | pos, PAIR(sid[pos], sid[nn]));
    }
    s->heap = h.key;
    s->heap_val = h.val;
    s->heap_cap = h.cap;
    if (!ok) return -1;
    size_t w2 = 0;
    for (size_t k = 0; k < ns; k++)
        if (slen[k]) {
            sid[w2] = sid[k];
            slen[w2++] = slen[k];
        }
    return (long)w2;
}

/* one piece through the per-thread cache; offsets are cumulative lengths
 * (as tokenizers' Word::get_offsets) mapped through off[] */
static lt_status bpe_piece(const lt_bpe *m, lt_bpe_scratch *s, const char *w, size_t n, const int64_t *off,
                           lt_tok_ids *out, lt_err *err) {
    lt_bpe_centry *e = NULL;
    if (n <= LT_BPE_CACHE_KEY) {
        if (!s->cache) s->cache = calloc(LT_BPE_CACHE_SIZE, sizeof *s->cache);
        if (s->cache) {
            e = &s->cache[(lt_hash_bytes(w, n) ^ m->uid) & (LT_BPE_CACHE_SIZE - 1)];
            if (e->uid == m->uid && e->klen == n && !memcmp(e->key, w, n)) {
                for (int k = 0; k < e->ntok; k++) {
                    lt_status st = lt_tok_ids_push(out, e->ids[k], off[e->rel[k]], err);
                    if (st) return st;
                }
                return LT_OK;
            }
        }
    }
    long nt = bpe_core(m, s, w, n);
    if (nt < 0) return lt_fail(err, LT_ERR_NOMEM, "tokenizer: out of memory (word of %zu bytes)", n);
    size_t pos = 0;
    for (long k = 0; k < nt; k++) {
        lt_status st = lt_tok_ids_push(out, s->id[k], off[pos < n ? pos : n - 1], err);
        if (st) return st;
        pos += (size_t)s->len[k];
    }
    if (e && nt <= LT_BPE_CACHE_TOK) {
        e->uid = m->uid;
        e->klen = (uint8_t)n;
        e->ntok = (uint8_t)nt;
        memcpy(e->key, w, n);
        pos = 0;
        for (long k = 0; k < nt; k++) {
            e->ids[k] = s->id[k];
            e->rel[k] = (uint8_t)(pos < n ? pos : n - 1);
            pos += (size_t)s->len[k];
        }
    }
    return LT_OK;
}

lt_status lt_bpe_word(const lt_bpe *m, lt_bpe_scratch *s, const char *w, size_t n, const int64_t *off, lt_tok_ids *out,
                      lt_err *err) {
    if (n == 0) return LT_OK;
    if (!m->seg) return bpe_piece(m, s, w, n, off, out, err);
    /* cut before each U+2581 (E2 96 81) that follows a character after which
     * no merge can join; see lt_bpe.seg */
    size_t start = 0, i = 0;
    uint32_t prevc = 0x2581;
    while (i < n) {
        size_t q = i;
        uint32_t c = lt_utf8_next(w, &q);
        if (c == 0x2581 && prevc != 0x2581 && i > start) {
            int blocked = 0;
            for (int k = 0; k < m->n_seg_block; k++) blocked |= m->seg_block[k] == prevc;
            if (!blocked) {
                lt_status st = bpe_piece(m, s, w + start, i - start, off + start, out, err);
                if (st) return st;
                start = i;
            }
        }
        prevc = c;
        i = q;
    }
    return bpe_piece(m, s, w + start, n - start, off + start, out, err);
}
