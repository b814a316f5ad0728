/*
 * lt_tok_internal.h -- pieces shared by the tokenizer's files (not exported):
 * a small JSON reader (lt_tok_json.c), string/pair hash maps and the BPE
 * model (lt_tok_bpe.c), pre-tokenizer matchers (lt_tok_pretok.c) and the
 * tokenizer object itself (lt_tokenizer.c).
 */
#ifndef LT_TOK_INTERNAL_H
#define LT_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "lt_base.h"
#include "lt_tok_vocab.h"
#include "lt_tokenizer.h"

/* ---- JSON (lt_tok_json.c) ---- */
typedef enum { LT_JNULL, LT_JFALSE, LT_JTRUE, LT_JNUM, LT_JSTR, LT_JARR, LT_JOBJ } lt_jtype;
typedef struct lt_jval lt_jval;
struct lt_jval {
    uint8_t type;
    uint32_t len;     /* string bytes / number of items */
    uint32_t key_len; /* object members: key */
    const char *key;
    union {
        double num;
        const char *str; /* NUL-terminated, may hold NULs (use len) */
        lt_jval *items;  /* arrays and objects (members in file order) */
    } u;
};
typedef struct lt_jdoc lt_jdoc;
/* Parse text[0..n); `name` is used in error messages. */
lt_status lt_json_parse(const char *text, size_t n, const char *name, lt_jdoc **doc, lt_jval **root, lt_err *err);
void lt_json_free(lt_jdoc *doc);
/* member of an object by key (last one if repeated), NULL if absent */
const lt_jval *lt_json_get(const lt_jval *obj, const char *key);
const char *lt_json_type_name(int type);

/* ---- string -> int32 hash map (open addressing, keys not owned) ---- */
typedef struct lt_strmap_entry {
    const char *key; /* NULL: empty slot */
    uint32_t len;
    int32_t val;
    uint32_t hash; /* low bits of the key's hash (skips most compares) */
} lt_strmap_entry;
typedef struct lt_strmap {
    lt_strmap_entry *e;
    size_t cap, n; /* cap: power of two */
} lt_strmap;
uint64_t lt_hash_bytes(const void *p, size_t n);
int lt_strmap_init(lt_strmap *m, size_t expected);
void lt_strmap_free(lt_strmap *m);
/* insert or overwrite; returns 0 on allocation failure */
int lt_strmap_put(lt_strmap *m, const char *key, size_t len, int32_t val);
int32_t lt_strmap_get(const lt_strmap *m, const char *key, size_t len); /* -1 if absent */

/* ---- added tokens as tokenizers' AddedVocabulary::add_tokens assigns them
 * (lt_tok_vocab.c; rules in lt_tok_vocab.h): one entry per id, in the order
 * first added; both the loader (the file's entries) and vocab add use it ---- */
typedef struct lt_added_set {
    lt_tok_added *a;
    size_t n, cap;
    lt_strmap by_content; /* content -> index into a */
    const lt_strmap *vocab; /* the model's (borrowed) */
    int64_t model_size, max_id;
} lt_added_set;
int lt_added_set_init(lt_added_set *s, const lt_strmap *vocab); /* 0: out of memory */
/* tok->content (NUL-terminated) is copied; *id: its id (-1 if empty); *what:
 * LT_TOK_ADD_*. Returns 0 on allocation failure. */
int lt_added_set_add(lt_added_set *s, const lt_tok_added *tok, int32_t *id, int *what);
void lt_added_set_free(lt_added_set *s);

/* ---- (id, id) -> (rank, new id) hash map ---- */
typedef struct lt_pairmap {
    uint64_t *keys; /* (a << 32 | b) + 1; 0 = empty */
    uint64_t *vals; /* rank << 32 | new_id */
    size_t cap, n;
} lt_pairmap;
int lt_pairmap_init(lt_pairmap *m, size_t expected);
void lt_pairmap_free(lt_pairmap *m);
int lt_pairmap_put(lt_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t new_id);
static inline int lt_pairmap_get(const lt_pairmap *m, uint32_t a, uint32_t b, uint32_t *rank, uint32_t *new_id) {
    if (!m->cap) return 0;
    uint64_t k = (((uint64_t)a << 32) | b) + 1;
    size_t mask = m->cap - 1;
    size_t h = (size_t)((k * 0x9E3779B97F4A7C15ull) >> 20) & mask;
    for (;;) {
        uint64_t kk = m->keys[h];
        if (kk == k) {
            *rank = (uint32_t)(m->vals[h] >> 32);
            *new_id = (uint32_t)m->vals[h];
            return 1;
        }
        if (kk == 0) return 0;
        h = (h + 1) & mask;
    }
}

/* ---- BPE model (lt_tok_bpe.c) ---- */
typedef struct lt_bpe {
    lt_strmap vocab;         /* token (model alphabet) -> id */
    lt_pairmap merges;       /* (left id, right id) -> (rank, merged id) */
    int byte_level;          /* symbols are bytes; keys are byte-level decoded */
    int32_t byte_id[256];    /* byte-level: id of each byte; char-level: id of 1-byte chars */
    int32_t fallback_id[256]; /* id of "<0xNN>" or -1 */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;          /* -1: none */
    char *key_pool;          /* storage of byte-level decoded keys */
    int32_t *bmp_id;         /* char-level: id of each single-character token in the BMP, -1 */
    uint64_t uid;            /* unique per loaded tokenizer (tags cache entries) */
    /* SentencePiece-style words may be cut before U+2581 when no merge can
     * cross such a cut (checked at load); seg_block: characters after which
     * a cut is not allowed */
    int seg;
    uint32_t seg_block[16];
    int n_seg_block;
} lt_bpe;

/* per-thread cache of short words */
#define LT_BPE_CACHE_SIZE 4096
#define LT_BPE_CACHE_KEY 32
#define LT_BPE_CACHE_TOK 8
typedef struct lt_bpe_centry {
    uint64_t uid;
    uint8_t klen, ntok;
    uint8_t rel[LT_BPE_CACHE_TOK];
    int32_t ids[LT_BPE_CACHE_TOK];
    char key[LT_BPE_CACHE_KEY];
} lt_bpe_centry;

/* scratch for one word (per call, so the model stays immutable) */
typedef struct lt_bpe_scratch {
    int32_t *id;
    int32_t *start, *len, *prev, *next;
    uint64_t *heap; /* (rank << 32 | pos) */
    uint64_t *heap_val; /* the pair (left id << 32 | right id) when pushed */
    size_t cap, heap_cap;
    lt_bpe_centry *cache; /* LT_BPE_CACHE_SIZE entries, allocated on first use */
} lt_bpe_scratch;

void lt_bpe_scratch_free(lt_bpe_scratch *s);
/* Tokenize one word w[0..n); appends (id, offset[start of token]) to out. */
lt_status lt_bpe_word(const lt_bpe *m, lt_bpe_scratch *s, const char *w, size_t n, const int64_t *off, lt_tok_ids *out,
                      lt_err *err);

/* ---- pre-tokenizer regexes (lt_tok_pretok.c) ---- */
enum {
    LT_RE_LLAMA3 = 1, /* tiktoken cl100k-style, digits {1,3} */
    LT_RE_QWEN2,      /* same with single digits */
    LT_RE_GPT2,       /* ByteLevel's built-in regex */
};
/* which known regex a pattern string is (0 = unknown) */
int lt_pretok_regex_kind(const char *pattern);
/* end of the match starting at s[i] (i < n), or i if none starts there */
size_t lt_pretok_regex_match(int kind, const char *s, size_t n, size_t i);

/* byte-level alphabet: byte -> code point, code point -> byte (-1) */
uint32_t lt_bytelevel_char(unsigned b);
int lt_bytelevel_byte(uint32_t cp);

#endif
