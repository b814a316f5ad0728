/* lt_loader.c -- token shards -> packed batches (see lt_loader.h). */
#define _POSIX_C_SOURCE 200809L
#include "lt_loader.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_sha256.h"
#include "lt_shard.h"

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
    int64_t *order;    /* this epoch's document order (n_docs) */
    int64_t batches_per_epoch;
    /* position */
    int64_t epoch, doc_pos, batches, order_epoch;
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
    free(L);
}

/* ---- epoch order ---- */
static void make_order(lt_loader *L, int64_t epoch) {
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
}

/* Pack the global batch starting at doc_pos: seq_of_doc is implied by the
 * walk; calls visit(seq, doc) for every placed document. Returns the number
 * of sequences used and the new doc_pos. */
typedef void (*visit_fn)(lt_loader *L, int seq, int64_t doc, void *ctx);
static int pack(lt_loader *L, int64_t *doc_pos, visit_fn visit, void *ctx) {
    int G = L->o.B * L->o.world_size, T = L->o.T;
    int seq = 0, fill = 0, used = 0;
    int64_t p = *doc_pos;
    while (p < L->n_docs) {
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

lt_status lt_loader_open(const char *const *paths, int n_paths, const char *prefix, const lt_loader_opts *o,
                         lt_loader **out, lt_err *err) {
    *out = NULL;
    if (o->B < 1 || o->T < 2 || o->world_size < 1 || o->rank < 0 || o->rank >= o->world_size)
        return lt_fail(err, LT_ERR_INVALID, "loader: bad options B=%d T=%d rank=%d world_size=%d (need B>=1, T>=2, "
                       "0<=rank<world_size)", o->B, o->T, o->rank, o->world_size);
    char **files = NULL;
    int nf = 0;
    lt_status st = collect_paths(paths, n_paths, prefix ? prefix : "train-", &files, &nf, err);
    if (st) return st;
    lt_loader *L = calloc(1, sizeof *L);
    if (!L) { st = lt_fail(err, LT_ERR_NOMEM, "out of memory"); goto fail; }
    L->o = *o;
    L->shards = calloc((size_t)nf, sizeof *L->shards);
    if (!L->shards) { st = lt_fail(err, LT_ERR_NOMEM, "out of memory"); goto fail; }
    for (int i = 0; i < nf; i++) {
        st = lt_shard_read(files[i], o->model_vocab, &L->shards[i], err);
        if (st) goto fail;
        L->n_shards = i + 1;
        L->n_docs += L->shards[i].num_docs;
        L->n_tokens += L->shards[i].num_tokens;
        if (i > 0 && strcmp(L->shards[i].meta.tokenizer_sha256, L->shards[0].meta.tokenizer_sha256) != 0) {
            st = lt_fail(err, LT_ERR_INVALID, "%s: tokenizer_sha256 %s differs from %s's (%s): shards of different "
                         "tokenizers", files[i], L->shards[i].meta.tokenizer_sha256, files[0],
                         L->shards[0].meta.tokenizer_sha256);
            goto fail;
        }
    }
    if (L->n_docs == 0) { st = lt_fail(err, LT_ERR_INVALID, "loader: the shards hold no documents"); goto fail; }
    size_t nd = (size_t)L->n_docs, N = (size_t)o->B * (size_t)o->T;
    L->doc_shard = malloc(nd * sizeof *L->doc_shard);
    L->doc_off = malloc(nd * sizeof *L->doc_off);
    L->doc_len = malloc(nd * sizeof *L->doc_len);
    L->doc_tgt = malloc(nd * sizeof *L->doc_tgt);
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
            const uint8_t *m = sh->loss_mask + sh->doc_offsets[i];
            for (uint64_t j = 1; j < len; j++) tg += m[j];
            L->doc_tgt[k] = tg;
        }
    }
    /* batches per epoch: packing does not depend on the order's content for
     * the count only when unshuffled; count it on epoch 0's order */
    make_order(L, 0);
    int64_t p = 0;
    while (p < L->n_docs) {
        int64_t before = p;
        pack(L, &p, NULL, NULL);
        if (p == before) break;
        L->batches_per_epoch++;
    }
    for (int i = 0; i < nf; i++) free(files[i]);
    free(files);
    *out = L;
    return LT_OK;
fail:
    for (int i = 0; i < nf; i++) free(files[i]);
    free(files);
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
    if (L->doc_pos >= L->n_docs) { /* epoch done: next epoch */
        L->epoch++;
        L->doc_pos = 0;
    }
    if (L->order_epoch != L->epoch) make_order(L, L->epoch);
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
    out->last_in_epoch = L->doc_pos >= L->n_docs;
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

lt_status lt_loader_set_state(lt_loader *L, const lt_loader_state *s, lt_err *err) {
    if (s->magic != LT_LOADER_STATE_MAGIC) return lt_fail(err, LT_ERR_FORMAT, "loader state: bad magic");
    if (s->n_docs != L->n_docs || s->T != L->o.T || s->global_B != L->o.B * L->o.world_size || s->seed != L->o.seed)
        return lt_fail(err, LT_ERR_INVALID,
                       "loader state is for %lld documents, T=%d, global batch %d, seed %llu; this loader has %lld, "
                       "T=%d, %d, seed %llu",
                       (long long)s->n_docs, s->T, s->global_B, (unsigned long long)s->seed, (long long)L->n_docs,
                       L->o.T, L->o.B * L->o.world_size, (unsigned long long)L->o.seed);
    if (s->epoch < 0 || s->doc_pos < 0 || s->doc_pos > L->n_docs)
        return lt_fail(err, LT_ERR_RANGE, "loader state: epoch %lld / position %lld out of range",
                       (long long)s->epoch, (long long)s->doc_pos);
    L->epoch = s->epoch;
    L->doc_pos = s->doc_pos;
    L->batches = s->batches;
    make_order(L, L->epoch);
    return LT_OK;
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
