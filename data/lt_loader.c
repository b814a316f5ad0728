/* lt_loader.c -- token shards -> packed batches (see lt_loader.h). */
#define _POSIX_C_SOURCE 200809L
#include "lt_loader.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_sha256.h"
#include "lt_shard.h"

/* one shard set of a mix: documents [d0, d0 + nd) of the document table */
typedef struct mixset {
    char *spec;          /* the --data entry as given */
    double weight;       /* PATTERN:W (0 when the epochs form is used) */
    double x;            /* PATTERN:xN (0 when the weights form is used) */
    double target;       /* document tokens of this set per mix epoch */
    int64_t d0, nd, tokens, targets;
    int64_t *perm;       /* (nd) the order of the set's pass perm_pass */
    int64_t perm_pass;
    int64_t pass0, pos0; /* the set's cursor at the start of the current epoch (order_epoch) */
    int64_t pass1, pos1; /* ... and at its end */
    int64_t seen_docs, seen_tokens, seen_targets; /* global batches produced so far */
} mixset;

struct lt_loader {
    lt_loader_opts o;
    int n_shards;
    lt_shard *shards;
    int64_t n_docs, n_tokens, n_truncated;
    /* document table, global index = shard order, then file order */
    uint32_t *doc_shard;
    uint64_t *doc_off; /* offset inside its shard */
    uint32_t *doc_len; /* tokens, cut to T */
    uint32_t *doc_tgt; /* target tokens within the (cut) document */
    int64_t *order;    /* this epoch's document order (n_order entries) */
    int64_t n_order, order_cap;
    int64_t batches_per_epoch;
    /* position */
    int64_t epoch, doc_pos, batches, order_epoch;
    /* a mix of shard sets (n_sets > 0; 0 = the plain form) */
    int n_sets;
    mixset *sets;
    uint32_t *shard_set; /* (n_shards) the set of each shard */
    /* batch buffers (B*T) */
    int32_t *tokens, *targets, *pos, *doc_start;
    uint8_t *mask;
    int *lens;        /* (T) doc lengths of one sequence */
    int *fill, *ndocs; /* (B) per sequence: tokens / documents placed */
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* expand folders into sorted <prefix>*.h5 files */
static lt_status collect_paths(const char *const *paths, int n, const char *prefix, char ***out, int *n_out,
                               lt_err *err) {
    char **list = NULL;
    int cnt = 0, cap = 0;
    lt_status st = LT_OK;
    for (int i = 0; i < n && !st; i++) {
        if (!lt_is_dir(paths[i]) && !lt_file_exists(paths[i]) && strpbrk(paths[i], "*?[")) {
            /* a pattern the shell did not expand (quoted, or inside PATTERN:WEIGHT) */
            glob_t g;
            int rc = glob(paths[i], 0, NULL, &g);
            if (rc == GLOB_NOMATCH) {
                st = lt_fail(err, LT_ERR_IO, "%s: no file matches this pattern", paths[i]);
                break;
            }
            if (rc != 0) {
                st = lt_fail(err, LT_ERR_IO, "%s: cannot expand this pattern", paths[i]);
                break;
            }
            for (size_t k = 0; k < g.gl_pathc && !st; k++) { /* sorted by glob */
                if (lt_is_dir(g.gl_pathv[k])) continue;
                if (cnt == cap) {
                    cap = cap ? 2 * cap : 16;
                    char **p = realloc(list, (size_t)cap * sizeof *p);
                    if (!p) { st = lt_fail(err, LT_ERR_NOMEM, "out of memory"); break; }
                    list = p;
                }
                if (!(list[cnt] = strdup(g.gl_pathv[k]))) st = lt_fail(err, LT_ERR_NOMEM, "out of memory");
                else cnt++;
            }
            globfree(&g);
            continue;
        }
        if (!lt_is_dir(paths[i])) {
            if (cnt == cap) {
                cap = cap ? 2 * cap : 16;
                char **p = realloc(list, (size_t)cap * sizeof *p);
                if (!p) { st = lt_fail(err, LT_ERR_NOMEM, "out of memory"); break; }
                list = p;
            }
            if (!(list[cnt] = strdup(paths[i]))) {
                st = lt_fail(err, LT_ERR_NOMEM, "out of memory");
                break;
            }
            cnt++;
            continue;
        }
        DIR *d = opendir(paths[i]);
        if (!d) { st = lt_fail(err, LT_ERR_IO, "%s: cannot read folder", paths[i]); break; }
        struct dirent *e;
        int first = cnt;
        size_t pl = strlen(prefix);
        while ((e = readdir(d))) {
            size_t l = strlen(e->d_name);
            if (strncmp(e->d_name, prefix, pl) != 0 || l < 3 || strcmp(e->d_name + l - 3, ".h5") != 0) continue;
            if (cnt == cap) {
                cap = cap ? 2 * cap : 16;
                char **p = realloc(list, (size_t)cap * sizeof *p);
                if (!p) { st = lt_fail(err, LT_ERR_NOMEM, "out of memory"); break; }
                list = p;
            }
            char buf[4096];
            if (!lt_path_join(buf, sizeof buf, paths[i], e->d_name)) {
                st = lt_fail(err, LT_ERR_INVALID, "%s/%s: path too long", paths[i], e->d_name);
                break;
            }
            if (!(list[cnt] = strdup(buf))) {
                st = lt_fail(err, LT_ERR_NOMEM, "out of memory");
                break;
            }
            cnt++;
        }
        closedir(d);
        if (cnt == first && !st) st = lt_fail(err, LT_ERR_IO, "%s: no %s*.h5 shards in this folder", paths[i], prefix);
        if (cnt - first > 1) qsort(list + first, (size_t)(cnt - first), sizeof *list, cmp_str);
    }
    if (!st && cnt == 0) st = lt_fail(err, LT_ERR_INVALID, "loader: no shards given");
    if (st) {
        for (int i = 0; i < cnt; i++) free(list[i]);
        free(list);
        return st;
    }
    *out = list;
    *n_out = cnt;
    return LT_OK;
}

void lt_loader_free(lt_loader *L) {
    if (!L) return;
    for (int i = 0; i < L->n_shards; i++) lt_shard_free(&L->shards[i]);
    free(L->shards);
    free(L->doc_shard);
    free(L->doc_off);
    free(L->doc_len);
    free(L->doc_tgt);
    free(L->order);
    free(L->tokens);
    free(L->targets);
    free(L->pos);
    free(L->doc_start);
    free(L->mask);
    free(L->lens);
    free(L->fill);
    free(L->ndocs);
    for (int i = 0; i < L->n_sets; i++) {
        free(L->sets[i].spec);
        free(L->sets[i].perm);
    }
    free(L->sets);
    free(L->shard_set);
    free(L);
}

/* ---- epoch order ---- */

/* the order of set s's documents in its pass `pass` (shuffled from seed, set, pass) */
static void make_perm(lt_loader *L, int s, int64_t pass) {
    mixset *m = &L->sets[s];
    for (int64_t i = 0; i < m->nd; i++) m->perm[i] = i;
    if (L->o.shuffle && m->nd > 1) {
        lt_rng r;
        lt_rng_seed(&r, L->o.seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(pass + 1)) ^
                            (0xbf58476d1ce4e5b9ull * (uint64_t)(s + 1)));
        for (int64_t i = m->nd - 1; i > 0; i--) {
            int64_t j = (int64_t)(lt_rng_u64(&r) % (uint64_t)(i + 1));
            int64_t t = m->perm[i];
            m->perm[i] = m->perm[j];
            m->perm[j] = t;
        }
    }
    m->perm_pass = pass;
}

/* A mix epoch: from each set's cursor (pass0, pos0), documents are taken
 * from the set whose tokens so far are the smallest fraction of its target
 * (ties: the first set), until every set has reached its target. Each set
 * walks through its own passes, each pass a fresh shuffle. The cursors at
 * the end go to (pass1, pos1). */
static lt_status make_mix_order(lt_loader *L) {
    double taken[64] = {0};
    for (int s = 0; s < L->n_sets; s++) {
        L->sets[s].pass1 = L->sets[s].pass0;
        L->sets[s].pos1 = L->sets[s].pos0;
    }
    int64_t n = 0;
    for (;;) {
        int best = -1;
        double best_r = 0;
        for (int s = 0; s < L->n_sets; s++) {
            if (taken[s] >= L->sets[s].target) continue;
            double r = taken[s] / L->sets[s].target;
            if (best < 0 || r < best_r) {
                best = s;
                best_r = r;
            }
        }
        if (best < 0) break;
        mixset *m = &L->sets[best];
        if (m->perm_pass != m->pass1) make_perm(L, best, m->pass1);
        int64_t d = m->d0 + m->perm[m->pos1];
        if (++m->pos1 == m->nd) {
            m->pass1++;
            m->pos1 = 0;
        }
        if (n == L->order_cap) {
            int64_t cap = L->order_cap ? 2 * L->order_cap : 1024;
            int64_t *p = realloc(L->order, (size_t)cap * sizeof *p);
            if (!p) return LT_ERR_NOMEM;
            L->order = p;
            L->order_cap = cap;
        }
        L->order[n++] = d;
        taken[best] += L->doc_len[d];
    }
    L->n_order = n;
    return LT_OK;
}

/* epoch `epoch`'s order; a mix continues each set's cursor from where the
 * previous epoch left it when advance = 1 (else regenerates from pass0/pos0) */
static lt_status make_order(lt_loader *L, int64_t epoch, int advance) {
    if (L->n_sets) {
        for (int s = 0; advance && s < L->n_sets; s++) {
            L->sets[s].pass0 = L->sets[s].pass1;
            L->sets[s].pos0 = L->sets[s].pos1;
        }
        lt_status st = make_mix_order(L);
        if (!st) L->order_epoch = epoch;
        return st;
    }
    L->n_order = L->n_docs;
    for (int64_t i = 0; i < L->n_docs; i++) L->order[i] = i;
    if (L->o.shuffle && L->n_docs > 1) {
        lt_rng r;
        lt_rng_seed(&r, L->o.seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(epoch + 1)));
        for (int64_t i = L->n_docs - 1; i > 0; i--) { /* Fisher-Yates */
            int64_t j = (int64_t)(lt_rng_u64(&r) % (uint64_t)(i + 1));
            int64_t t = L->order[i];
            L->order[i] = L->order[j];
            L->order[j] = t;
        }
    }
    L->order_epoch = epoch;
    return LT_OK;
}

/* Pack the global batch starting at doc_pos: seq_of_doc is implied by the
 * walk; calls visit(seq, doc) for every placed document. Returns the number
 * of sequences used and the new doc_pos. */
typedef void (*visit_fn)(lt_loader *L, int seq, int64_t doc, void *ctx);
static int pack(lt_loader *L, int64_t *doc_pos, visit_fn visit, void *ctx) {
    int G = L->o.B * L->o.world_size, T = L->o.T;
    int seq = 0, fill = 0, used = 0;
    int64_t p = *doc_pos;
    while (p < L->n_order) {
        int64_t d = L->order[p];
        int len = (int)L->doc_len[d];
        if (len == 0) { p++; continue; }
        if (fill + len > T) {
            seq++;
            fill = 0;
            if (seq == G) break;
        }
        if (visit) visit(L, seq, d, ctx);
        fill += len;
        used = seq + 1;
        p++;
    }
    *doc_pos = p;
    return used;
}

/* ---- shard sets: PATTERN[:WEIGHT | :xEPOCHS] ---- */

/* Split a --data entry into its pattern and suffix. *kind: 0 no suffix, 1 a
 * weight, 2 an epoch count; *plen: the pattern's length. An entry naming an
 * existing file or folder has no suffix (even with a ':' in its name). */
static lt_status parse_spec(const char *spec, size_t *plen, int *kind, double *val, lt_err *err) {
    *plen = strlen(spec);
    *kind = 0;
    *val = 0;
    const char *c = strrchr(spec, ':');
    if (!c || strchr(c, '/') || lt_file_exists(spec) || lt_is_dir(spec)) return LT_OK;
    const char *v = c + 1;
    int ep = *v == 'x' || *v == 'X';
    char *end = NULL;
    errno = 0;
    double x = strtod(v + ep, &end);
    if (c == spec || !v[ep] || *end || errno || !isfinite(x) || x <= 0)
        return lt_fail(err, LT_ERR_INVALID,
                       "--data '%s': '%s' is not a positive %s (a shard set is PATTERN:WEIGHT, e.g. "
                       "'corpus/*.h5:0.3', or PATTERN:xEPOCHS, e.g. 'instr/*.h5:x2')",
                       spec, v, ep ? "epoch count" : "weight");
    *plen = (size_t)(c - spec);
    *kind = ep ? 2 : 1;
    *val = x;
    return LT_OK;
}

int lt_loader_is_mix(const char *const *paths, int n) {
    for (int i = 0; i < n; i++) {
        size_t pl;
        int kind;
        double v;
        lt_err e = {{0}};
        if (parse_spec(paths[i], &pl, &kind, &v, &e) || kind) return 1;
    }
    return 0;
}

/* the files of one set: its pattern split at ',' (files, folders, globs) */
static lt_status collect_set(const char *spec, size_t plen, const char *prefix, char ***out, int *n_out, lt_err *err) {
    char *pat = strndup(spec, plen);
    char **parts = calloc(plen + 1, sizeof *parts);
    if (!pat || !parts) {
        free(pat);
        free(parts);
        return lt_fail(err, LT_ERR_NOMEM, "out of memory");
    }
    int np = 0;
    for (char *save = NULL, *t = strtok_r(pat, ",", &save); t; t = strtok_r(NULL, ",", &save)) parts[np++] = t;
    lt_status st = np ? collect_paths((const char *const *)parts, np, prefix, out, n_out, err)
                      : lt_fail(err, LT_ERR_INVALID, "empty pattern");
    free(parts);
    free(pat);
    return st;
}

lt_status lt_loader_open(const char *const *paths, int n_paths, const char *prefix, const lt_loader_opts *o,
                         lt_loader **out, lt_err *err) {
    *out = NULL;
    if (o->B < 1 || o->T < 2 || o->world_size < 1 || o->rank < 0 || o->rank >= o->world_size)
        return lt_fail(err, LT_ERR_INVALID, "loader: bad options B=%d T=%d rank=%d world_size=%d (need B>=1, T>=2, "
                       "0<=rank<world_size)", o->B, o->T, o->rank, o->world_size);
    if (!prefix) prefix = "train-";
    char **files = NULL;
    int nf = 0;
    lt_status st = LT_OK;
    lt_loader *L = calloc(1, sizeof *L);
    if (!L) return lt_fail(err, LT_ERR_NOMEM, "out of memory");
    L->o = *o;
    int *set_nf = NULL; /* files per set */
    if (!lt_loader_is_mix(paths, n_paths)) {
        if ((st = collect_paths(paths, n_paths, prefix, &files, &nf, err))) goto fail;
    } else {
        if (n_paths > LT_LOADER_MAX_SETS) {
            st = lt_fail(err, LT_ERR_INVALID, "--data: %d shard sets, at most %d", n_paths, LT_LOADER_MAX_SETS);
            goto fail;
        }
        L->sets = calloc((size_t)n_paths, sizeof *L->sets);
        set_nf = calloc((size_t)n_paths, sizeof *set_nf);
        if (!L->sets || !set_nf) { st = lt_fail(err, LT_ERR_NOMEM, "out of memory"); goto fail; }
        int forms = 0; /* bit 1: weights, bit 2: epochs, bit 4: no suffix */
        for (int i = 0; i < n_paths; i++) {
            size_t pl;
            int kind;
            double v;
            if ((st = parse_spec(paths[i], &pl, &kind, &v, err))) goto fail;
            forms |= kind == 1 ? 1 : kind == 2 ? 2 : 4;
            mixset *m = &L->sets[L->n_sets++];
            m->perm_pass = -1;
            if (!(m->spec = strdup(paths[i]))) { st = lt_fail(err, LT_ERR_NOMEM, "out of memory"); goto fail; }
            if (kind == 1) m->weight = v;
            else m->x = kind == 2 ? v : 1; /* no suffix among epoch counts: one pass */
            char **sf = NULL;
            int ns = 0;
            if ((st = collect_set(paths[i], pl, prefix, &sf, &ns, err))) {
                st = lt_wrap(err, st, "--data set %d '%s'", i + 1, paths[i]);
                goto fail;
            }
            char **p = realloc(files, (size_t)(nf + ns) * sizeof *p);
            if (!p) {
                for (int k = 0; k < ns; k++) free(sf[k]);
                free(sf);
                st = lt_fail(err, LT_ERR_NOMEM, "out of memory");
                goto fail;
            }
            files = p;
            memcpy(files + nf, sf, (size_t)ns * sizeof *sf);
            free(sf);
            nf += ns;
            set_nf[i] = ns;
        }
        if (forms & 1 && forms & 6) {
            st = lt_fail(err, LT_ERR_INVALID,
                         "--data: %s; give every set a weight (PATTERN:W) or every set an epoch count (PATTERN:xN)",
                         forms & 2 ? "some sets have weights and others epoch counts"
                                   : "some sets have weights and others none");
            goto fail;
        }
        L->shard_set = malloc((size_t)nf * sizeof *L->shard_set);
        if (!L->shard_set) { st = lt_fail(err, LT_ERR_NOMEM, "out of memory"); goto fail; }
        for (int s = 0, k = 0; s < L->n_sets; s++)
            for (int j = 0; j < set_nf[s]; j++) L->shard_set[k++] = (uint32_t)s;
    }
    L->shards = calloc((size_t)nf, sizeof *L->shards);
    if (!L->shards) { st = lt_fail(err, LT_ERR_NOMEM, "out of memory"); goto fail; }
    for (int i = 0; i < nf; i++) {
        st = lt_shard_read(files[i], o->model_vocab, &L->shards[i], err);
        if (st) goto fail;
        L->n_shards = i + 1;
        L->n_docs += L->shards[i].num_docs;
        L->n_tokens += L->shards[i].num_tokens;
        const lt_shard_meta *a = &L->shards[i].meta, *z = &L->shards[0].meta;
        if (L->n_sets && i > 0 && (strcmp(a->tokenizer_sha256, z->tokenizer_sha256) || a->vocab_size != z->vocab_size)) {
            int s = (int)L->shard_set[i];
            if (a->vocab_size != z->vocab_size)
                st = lt_fail(err, LT_ERR_INVALID,
                             "--data set %d '%s': %s has vocab_size %lld, expected %lld as in set 1 '%s' (%s): every "
                             "set must be tokenized with the same tokenizer",
                             s + 1, L->sets[s].spec, files[i], (long long)a->vocab_size, (long long)z->vocab_size,
                             L->sets[0].spec, files[0]);
            else
                st = lt_fail(err, LT_ERR_INVALID,
                             "--data set %d '%s': %s has tokenizer_sha256 %s, expected %s as in set 1 '%s' (%s): "
                             "every set must be tokenized with the same tokenizer",
                             s + 1, L->sets[s].spec, files[i], a->tokenizer_sha256, z->tokenizer_sha256,
                             L->sets[0].spec, files[0]);
            goto fail;
        }
        if (i > 0 && strcmp(a->tokenizer_sha256, z->tokenizer_sha256) != 0) {
            st = lt_fail(err, LT_ERR_INVALID, "%s: tokenizer_sha256 %s differs from %s's (%s): shards of different "
                         "tokenizers", files[i], a->tokenizer_sha256, files[0], z->tokenizer_sha256);
            goto fail;
        }
    }
    if (L->n_docs == 0) { st = lt_fail(err, LT_ERR_INVALID, "loader: the shards hold no documents"); goto fail; }
    size_t nd = (size_t)L->n_docs, N = (size_t)o->B * (size_t)o->T;
    L->doc_shard = malloc(nd * sizeof *L->doc_shard);
    L->doc_off = malloc(nd * sizeof *L->doc_off);
    L->doc_len = malloc(nd * sizeof *L->doc_len);
    L->doc_tgt = malloc(nd * sizeof *L->doc_tgt);
    L->order_cap = (int64_t)nd;
    L->order = malloc(nd * sizeof *L->order);
    L->tokens = malloc(N * sizeof(int32_t));
    L->targets = malloc(N * sizeof(int32_t));
    L->pos = malloc(N * sizeof(int32_t));
    L->doc_start = malloc(N * sizeof(int32_t));
    L->mask = malloc(N);
    L->lens = malloc((size_t)o->T * sizeof(int));
    L->fill = malloc((size_t)o->B * sizeof(int));
    L->ndocs = malloc((size_t)o->B * sizeof(int));
    if (!L->doc_shard || !L->doc_off || !L->doc_len || !L->doc_tgt || !L->order || !L->tokens || !L->targets || !L->pos ||
        !L->doc_start || !L->mask || !L->lens || !L->fill || !L->ndocs) {
        st = lt_fail(err, LT_ERR_NOMEM, "loader: out of memory for %lld documents", (long long)L->n_docs);
        goto fail;
    }
    int64_t k = 0;
    for (int s = 0; s < L->n_shards; s++) {
        const lt_shard *sh = &L->shards[s];
        mixset *m = L->n_sets ? &L->sets[L->shard_set[s]] : NULL;
        if (m && !m->nd) m->d0 = k;
        for (int64_t i = 0; i < sh->num_docs; i++, k++) {
            uint64_t len = sh->doc_offsets[i + 1] - sh->doc_offsets[i];
            if (len > (uint64_t)o->T) {
                len = (uint64_t)o->T;
                L->n_truncated++;
            }
            L->doc_shard[k] = (uint32_t)s;
            L->doc_off[k] = sh->doc_offsets[i];
            L->doc_len[k] = (uint32_t)len;
            uint32_t tg = 0;
            const uint8_t *msk = sh->loss_mask + sh->doc_offsets[i];
            for (uint64_t j = 1; j < len; j++) tg += msk[j];
            L->doc_tgt[k] = tg;
            if (m) {
                m->nd++;
                m->tokens += (int64_t)len;
                m->targets += tg;
            }
        }
    }
    if (L->n_sets) {
        double wsum = 0, total = 0;
        for (int s = 0; s < L->n_sets; s++) {
            mixset *m = &L->sets[s];
            if (m->tokens == 0) {
                st = lt_fail(err, LT_ERR_INVALID, "--data set %d '%s': its shards hold no tokens", s + 1, m->spec);
                goto fail;
            }
            wsum += m->weight;
            total += (double)m->tokens;
            if (!(m->perm = malloc((size_t)m->nd * sizeof *m->perm))) {
                st = lt_fail(err, LT_ERR_NOMEM, "out of memory");
                goto fail;
            }
        }
        /* weights: one mix epoch holds as many tokens as all sets together;
         * epoch counts: every set's documents x times */
        for (int s = 0; s < L->n_sets; s++) {
            mixset *m = &L->sets[s];
            m->target = m->weight > 0 ? m->weight / wsum * total : m->x * (double)m->tokens;
        }
    }
    /* batches per epoch: packing does not depend on the order's content for
     * the count only when unshuffled; count it on epoch 0's order */
    if ((st = make_order(L, 0, 0))) { st = lt_fail(err, st, "loader: out of memory for the mix's order"); goto fail; }
    int64_t p = 0;
    while (p < L->n_order) {
        int64_t before = p;
        pack(L, &p, NULL, NULL);
        if (p == before) break;
        L->batches_per_epoch++;
    }
    for (int i = 0; i < nf; i++) free(files[i]);
    free(files);
    free(set_nf);
    *out = L;
    return LT_OK;
fail:
    for (int i = 0; i < nf; i++) free(files[i]);
    free(files);
    free(set_nf);
    lt_loader_free(L);
    return st;
}

/* per-sequence document lists for this rank, built while packing */
typedef struct {
    lt_loader *L;
    int first, B;
    int *fill;     /* (B) tokens placed */
    int *ndocs;    /* (B) documents placed */
    int64_t global_targets, targets;
    int global_seqs;
} batch_ctx;

/* place document d into sequence seq of the global batch */
static void visit_doc(lt_loader *L, int seq, int64_t d, void *vctx) {
    batch_ctx *c = vctx;
    c->global_targets += L->doc_tgt[d];
    if (L->n_sets) { /* the mix achieved, over the global batches */
        mixset *m = &L->sets[L->shard_set[L->doc_shard[d]]];
        m->seen_docs++;
        m->seen_tokens += L->doc_len[d];
        m->seen_targets += L->doc_tgt[d];
    }
    if (seq + 1 > c->global_seqs) c->global_seqs = seq + 1;
    if (seq < c->first || seq >= c->first + c->B) return;
    c->targets += L->doc_tgt[d];
    int b = seq - c->first, T = L->o.T;
    const lt_shard *sh = &L->shards[L->doc_shard[d]];
    uint32_t len = L->doc_len[d];
    const uint32_t *src = sh->tokens + L->doc_off[d];
    const uint8_t *msk = sh->loss_mask + L->doc_off[d];
    int32_t *dst = L->tokens + (size_t)b * T + c->fill[b];
    uint8_t *mdst = L->mask + (size_t)b * T + c->fill[b];
    for (uint32_t j = 0; j < len; j++) dst[j] = (int32_t)src[j];
    memcpy(mdst, msk, len);
    mdst[0] = 0;
    /* lengths go into the tail of this sequence's pos row for now */
    L->doc_start[(size_t)b * T + c->ndocs[b]] = (int32_t)len;
    c->fill[b] += (int)len;
    c->ndocs[b]++;
}

lt_status lt_loader_next(lt_loader *L, lt_loader_batch *out, lt_err *err) {
    int B = L->o.B, T = L->o.T;
    if (L->doc_pos >= L->n_order) { /* epoch done: next epoch */
        L->epoch++;
        L->doc_pos = 0;
    }
    if (L->order_epoch != L->epoch && make_order(L, L->epoch, L->order_epoch + 1 == L->epoch))
        return lt_fail(err, LT_ERR_NOMEM, "loader: out of memory for epoch %lld's order", (long long)L->epoch);
    int *fill = L->fill, *ndocs = L->ndocs;
    memset(fill, 0, (size_t)B * sizeof *fill);
    memset(ndocs, 0, (size_t)B * sizeof *ndocs);
    batch_ctx c = {L, L->o.rank * B, B, fill, ndocs, 0, 0, 0};
    int64_t p = L->doc_pos;
    pack(L, &p, visit_doc, &c);
    memset(out, 0, sizeof *out);
    out->epoch = L->epoch;
    out->global_seqs = c.global_seqs;
    out->global_targets = c.global_targets;
    L->doc_pos = p;
    out->last_in_epoch = L->doc_pos >= L->n_order;
    for (int b = 0; b < B; b++) {
        size_t row = (size_t)b * T;
        for (int t = fill[b]; t < T; t++) { /* padding */
            L->tokens[row + t] = 0;
            L->mask[row + t] = 0;
        }
        for (int i = 0; i < ndocs[b]; i++) L->lens[i] = L->doc_start[row + i];
        lt_status st = lt_batch_fill_sequence(T, L->tokens + row, L->mask + row, L->lens, ndocs[b], L->targets + row,
                                              L->pos + row, L->doc_start + row, err);
        if (st) return lt_wrap(err, st, "loader");
        if (ndocs[b]) out->n_seqs++;
        out->n_tokens += fill[b];
    }
    out->n_targets = c.targets;
    L->batches++;
    out->batch.B = B;
    out->batch.T = T;
    out->batch.tokens = L->tokens;
    out->batch.targets = L->targets;
    out->batch.pos = L->pos;
    out->batch.doc_start = L->doc_start;
    return LT_OK;
}

void lt_loader_get_state(const lt_loader *L, lt_loader_state *s) {
    memset(s, 0, sizeof *s);
    s->magic = LT_LOADER_STATE_MAGIC;
    s->seed = L->o.seed;
    s->epoch = L->epoch;
    s->doc_pos = L->doc_pos;
    s->batches = L->batches;
    s->n_docs = L->n_docs;
    s->T = L->o.T;
    s->global_B = L->o.B * L->o.world_size;
}

/* the mix's part of the state: int64 words [magic, n_sets, then per set
 * nd, tokens, pass0, pos0, seen_docs, seen_tokens, seen_targets] */
#define MIX_MAGIC 0x31786d746c78756cll /* "luxtlmx1" */
#define MIX_WORDS 7
size_t lt_loader_mix_state_size(const lt_loader *L) {
    return L->n_sets ? (size_t)(2 + MIX_WORDS * L->n_sets) * sizeof(int64_t) : 0;
}

void lt_loader_get_mix_state(const lt_loader *L, void *buf) {
    if (!L->n_sets) return;
    int64_t w[2 + MIX_WORDS * LT_LOADER_MAX_SETS], *p = w;
    *p++ = MIX_MAGIC;
    *p++ = L->n_sets;
    for (int s = 0; s < L->n_sets; s++) {
        const mixset *m = &L->sets[s];
        int64_t v[MIX_WORDS] = {m->nd, m->tokens, m->pass0, m->pos0, m->seen_docs, m->seen_tokens, m->seen_targets};
        memcpy(p, v, sizeof v);
        p += MIX_WORDS;
    }
    memcpy(buf, w, lt_loader_mix_state_size(L));
}

lt_status lt_loader_set_state_mix(lt_loader *L, const lt_loader_state *s, const void *mix, size_t mix_len,
                                  lt_err *err) {
    if (s->magic != LT_LOADER_STATE_MAGIC) return lt_fail(err, LT_ERR_FORMAT, "loader state: bad magic");
    if (s->n_docs != L->n_docs || s->T != L->o.T || s->global_B != L->o.B * L->o.world_size || s->seed != L->o.seed)
        return lt_fail(err, LT_ERR_INVALID,
                       "loader state is for %lld documents, T=%d, global batch %d, seed %llu; this loader has %lld, "
                       "T=%d, %d, seed %llu",
                       (long long)s->n_docs, s->T, s->global_B, (unsigned long long)s->seed, (long long)L->n_docs,
                       L->o.T, L->o.B * L->o.world_size, (unsigned long long)L->o.seed);
    if (mix_len != lt_loader_mix_state_size(L))
        return lt_fail(err, LT_ERR_FORMAT, "loader state: %zu bytes of mix state, this loader %s %zu", mix_len,
                       L->n_sets ? "mixes shard sets and needs" : "is not a mix and needs",
                       lt_loader_mix_state_size(L));
    if (s->epoch < 0 || s->doc_pos < 0 || (!L->n_sets && s->doc_pos > L->n_docs))
        return lt_fail(err, LT_ERR_RANGE, "loader state: epoch %lld / position %lld out of range",
                       (long long)s->epoch, (long long)s->doc_pos);
    if (L->n_sets) {
        int64_t w[2 + MIX_WORDS * LT_LOADER_MAX_SETS];
        memcpy(w, mix, mix_len);
        if (w[0] != MIX_MAGIC || w[1] != L->n_sets)
            return lt_fail(err, LT_ERR_FORMAT, "loader state: not the mix state of %d shard sets", L->n_sets);
        for (int i = 0; i < L->n_sets; i++) {
            const int64_t *v = w + 2 + MIX_WORDS * i;
            const mixset *m = &L->sets[i];
            if (v[0] != m->nd || v[1] != m->tokens)
                return lt_fail(err, LT_ERR_INVALID,
                               "loader state: set %d '%s' had %lld documents / %lld tokens, now %lld / %lld", i + 1,
                               m->spec, (long long)v[0], (long long)v[1], (long long)m->nd, (long long)m->tokens);
            if (v[2] < 0 || v[3] < 0 || v[3] >= m->nd || v[4] < 0 || v[5] < 0 || v[6] < 0)
                return lt_fail(err, LT_ERR_RANGE, "loader state: set %d '%s': position out of range", i + 1, m->spec);
        }
        for (int i = 0; i < L->n_sets; i++) {
            const int64_t *v = w + 2 + MIX_WORDS * i;
            mixset *m = &L->sets[i];
            m->pass0 = v[2];
            m->pos0 = v[3];
            m->seen_docs = v[4];
            m->seen_tokens = v[5];
            m->seen_targets = v[6];
        }
    }
    if (make_order(L, s->epoch, 0))
        return lt_fail(err, LT_ERR_NOMEM, "loader: out of memory for epoch %lld's order", (long long)s->epoch);
    if (s->doc_pos > L->n_order)
        return lt_fail(err, LT_ERR_RANGE, "loader state: position %lld past the end of epoch %lld (%lld documents)",
                       (long long)s->doc_pos, (long long)s->epoch, (long long)L->n_order);
    L->epoch = s->epoch;
    L->doc_pos = s->doc_pos;
    L->batches = s->batches;
    return LT_OK;
}

lt_status lt_loader_set_state(lt_loader *L, const lt_loader_state *s, lt_err *err) {
    return lt_loader_set_state_mix(L, s, NULL, 0, err);
}

int lt_loader_num_sets(const lt_loader *L) { return L->n_sets; }

void lt_loader_get_set(const lt_loader *L, int s, lt_loader_set *out) {
    memset(out, 0, sizeof *out);
    if (s < 0 || s >= L->n_sets) return;
    const mixset *m = &L->sets[s];
    double total = 0;
    for (int i = 0; i < L->n_sets; i++) total += L->sets[i].target;
    out->spec = m->spec;
    out->weight = m->weight;
    out->epochs = m->x;
    out->target_share = m->target / total;
    out->n_docs = m->nd;
    out->n_tokens = m->tokens;
    out->n_targets = m->targets;
    out->seen_docs = m->seen_docs;
    out->seen_tokens = m->seen_tokens;
    out->seen_targets = m->seen_targets;
}

int64_t lt_loader_num_docs(const lt_loader *L) { return L->n_docs; }
int64_t lt_loader_num_tokens(const lt_loader *L) { return L->n_tokens; }
int64_t lt_loader_num_truncated(const lt_loader *L) { return L->n_truncated; }
int64_t lt_loader_batches_per_epoch(const lt_loader *L) { return L->batches_per_epoch; }
int lt_loader_num_shards(const lt_loader *L) { return L->n_shards; }
const char *lt_loader_shard_path(const lt_loader *L, int i) {
    return i >= 0 && i < L->n_shards ? L->shards[i].path : NULL;
}

lt_status lt_loader_check_tokenizer(const lt_loader *L, const char *tok, int *checked, lt_err *err) {
    char path[4096];
    *checked = 0;
    if (lt_is_dir(tok)) {
        if (!lt_path_join(path, sizeof path, tok, "tokenizer.json"))
            return lt_fail(err, LT_ERR_INVALID, "%s: path too long", tok);
    } else
        snprintf(path, sizeof path, "%s", tok);
    if (!lt_file_exists(path)) return LT_OK;
    char *text = NULL;
    size_t len = 0;
    lt_status st = lt_read_file(path, &text, &len, err);
    if (st) return st;
    char hex[65];
    lt_sha256_hex(text, len, hex);
    free(text);
    *checked = 1;
    const char *have = L->shards[0].meta.tokenizer_sha256;
    if (strcmp(hex, have) != 0)
        return lt_fail(err, LT_ERR_INVALID,
                       "%s was tokenized by another tokenizer than %s (shard tokenizer_sha256 %s, this tokenizer's "
                       "sha256 %s): the token ids would be trained / scored as other text; tokenize the data again "
                       "with this model's tokenizer, or pass --allow-tokenizer-mismatch if the two are known to agree",
                       L->shards[0].path, path, have[0] ? have : "(none recorded)", hex);
    return LT_OK;
}
