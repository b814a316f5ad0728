/*
 * test_loader.c -- the shard loader on random documents written to shards:
 * every batch is checked against the documents themselves (each document's
 * first token encodes its index, so it can be found again): whole documents
 * packed greedily in the epoch's order, cut at T and counted, targets from
 * the loss mask, padding rows, every document exactly once per epoch, a
 * different order per epoch and the same order for the same seed, ranks
 * disjoint and covering the world_size=1 global batch, exact resume from a
 * saved state, a partial last batch that never wraps into the next epoch,
 * and validation failures (bad attributes, non-monotone offsets, token id >=
 * the model's vocabulary) naming the shard.
 */
#define _POSIX_C_SOURCE 200809L
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt_loader.h"
#include "lt_shard.h"
#include "lt_test.h"

#define VOCAB 100000
#define NDOCS 300
#define DOC_BASE 1000 /* first token of document d is DOC_BASE + d */

static int32_t *doc_tok[NDOCS];
static uint8_t *doc_mask[NDOCS];
static int doc_len[NDOCS];

static void make_docs(uint64_t seed) {
    lt_rng r;
    lt_rng_seed(&r, seed);
    for (int d = 0; d < NDOCS; d++) {
        int len = 1 + (int)(lt_rng_u64(&r) % 90);
        if (d % 37 == 5) len = 130 + (int)(lt_rng_u64(&r) % 50); /* longer than T = 64 */
        doc_len[d] = len;
        doc_tok[d] = malloc((size_t)len * 4);
        doc_mask[d] = malloc((size_t)len);
        for (int j = 0; j < len; j++) {
            doc_tok[d][j] = j == 0 ? DOC_BASE + d : (int32_t)(lt_rng_u64(&r) % VOCAB);
            doc_mask[d][j] = j > 0 && (lt_rng_u64(&r) % 3 != 0);
        }
    }
}

static void write_shards(const char *dir) {
    lt_err err = {{0}};
    lt_shard_meta meta = {0};
    meta.vocab_size = VOCAB;
    snprintf(meta.tokenizer_sha256, sizeof meta.tokenizer_sha256, "%064d", 1);
    snprintf(meta.template_name, sizeof meta.template_name, "test");
    int cuts[] = {0, 120, 121, NDOCS}; /* three shards, one holding a single document */
    for (int s = 0; s < 3; s++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/train-%05d.h5", dir, s);
        lt_shard_writer *w = NULL;
        LT_CHECK_OK(lt_shard_writer_open(p, &meta, &w, &err), &err);
        for (int d = cuts[s]; d < cuts[s + 1]; d++)
            LT_CHECK_OK(lt_shard_writer_add(w, doc_tok[d], doc_mask[d], (size_t)doc_len[d], &err), &err);
        LT_CHECK_OK(lt_shard_writer_finish(w, &err), &err);
    }
}

/* Parse one sequence row into documents and check it against the source
 * documents. Returns the number of documents; their ids into ids[]. */
static int check_row(const lt_batch *b, int row, int T, int *ids, int64_t *n_targets, const char *what) {
    const int32_t *tok = b->tokens + (size_t)row * T, *tg = b->targets + (size_t)row * T;
    const int32_t *pos = b->pos + (size_t)row * T, *ds = b->doc_start + (size_t)row * T;
    int n = 0, t = 0, ok = 1;
    while (t < T) {
        int d = tok[t] - DOC_BASE;
        if (pos[t] == 0 && ds[t] == t && d >= 0 && d < NDOCS && doc_tok[d][0] == tok[t] &&
            (doc_len[d] > 1 ? (t + 1 < T && pos[t + 1] == 1) : 1)) {
            /* a document: its tokens, positions, doc_start and targets */
            int len = doc_len[d] < T ? doc_len[d] : T;
            if (t + len > T) { ok = 0; break; }
            for (int j = 0; j < len; j++) {
                ok &= tok[t + j] == doc_tok[d][j] && pos[t + j] == j && ds[t + j] == t;
                int32_t want = (j + 1 < len && doc_mask[d][j + 1]) ? doc_tok[d][j + 1] : -1;
                ok &= tg[t + j] == want;
                *n_targets += want >= 0;
            }
            ids[n++] = d;
            t += len;
        } else {
            /* padding until the end of the row */
            for (; t < T; t++) ok &= tok[t] == 0 && tg[t] == -1 && pos[t] == 0 && ds[t] == t;
        }
    }
    LT_CHECK(ok, "%s: row %d does not match its documents", what, row);
    return n;
}

static lt_loader *open_loader(const char *dir, int B, int T, int rank, int world, uint64_t seed, int shuffle) {
    lt_err err = {{0}};
    lt_loader_opts o = {B, T, rank, world, seed, shuffle, VOCAB};
    lt_loader *L = NULL;
    const char *paths[1] = {dir};
    LT_CHECK_OK(lt_loader_open(paths, 1, NULL, &o, &L, &err), &err);
    return L;
}

/* one epoch's document order as the loader delivers it (world=1) */
static int epoch_docs(lt_loader *L, int B, int T, int *order, int *n_batches, int *last_nseqs) {
    lt_err err = {{0}};
    int n = 0, nb = 0;
    lt_loader_batch lb;
    int64_t ep = -1;
    for (;;) {
        LT_CHECK_OK(lt_loader_next(L, &lb, &err), &err);
        if (ep < 0) ep = lb.epoch;
        LT_CHECK(lb.epoch == ep, "epoch changed inside an epoch");
        int64_t nt = 0;
        int prev_fill_ok = 1;
        for (int r = 0; r < B; r++) {
            int ids[128];
            int k = check_row(&lb.batch, r, T, ids, &nt, "epoch");
            for (int i = 0; i < k; i++) order[n++] = ids[i];
            (void)prev_fill_ok;
        }
        LT_CHECK(nt == lb.n_targets && lb.n_targets == lb.global_targets, "target count %lld vs %lld / %lld",
                 (long long)nt, (long long)lb.n_targets, (long long)lb.global_targets);
        nb++;
        if (lb.last_in_epoch) {
            *last_nseqs = lb.n_seqs;
            break;
        }
        LT_CHECK(lb.n_seqs == B, "a batch before the last is not full (%d of %d)", lb.n_seqs, B);
        if (nb > 10000) break;
    }
    *n_batches = nb;
    return n;
}

int main(void) {
    lt_err err = {{0}};
    const char *dir = lt_test_tmpdir("test_loader");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "rm -f '%s'/*.h5", dir);
    lt_test_system(cmd);
    make_docs(77);
    write_shards(dir);
    const int B = 4, T = 64;
    int n_long = 0;
    for (int d = 0; d < NDOCS; d++) n_long += doc_len[d] > T;

    /* ---- unshuffled: file order, greedy packing, truncation count ---- */
    lt_loader *L = open_loader(dir, B, T, 0, 1, 5, 0);
    if (!L) return lt_test_finish("test_loader");
    LT_CHECK(lt_loader_num_docs(L) == NDOCS && lt_loader_num_shards(L) == 3, "docs %lld shards %d",
             (long long)lt_loader_num_docs(L), lt_loader_num_shards(L));
    LT_CHECK(lt_loader_num_truncated(L) == n_long, "truncated %lld, expected %d", (long long)lt_loader_num_truncated(L),
             n_long);
    {
        /* reference packing of the file order, by hand */
        int exp_rows = 0, fill = 0;
        for (int d = 0; d < NDOCS; d++) {
            int len = doc_len[d] < T ? doc_len[d] : T;
            if (fill + len > T || exp_rows == 0) {
                exp_rows++;
                fill = 0;
            }
            fill += len;
        }
        int order[NDOCS * 2], nb = 0, last = 0;
        int n = epoch_docs(L, B, T, order, &nb, &last);
        LT_CHECK(n == NDOCS, "epoch delivered %d documents", n);
        int inorder = 1;
        for (int i = 0; i < n && i < NDOCS; i++) inorder &= order[i] == i;
        LT_CHECK(inorder, "unshuffled order is not file order");
        LT_CHECK(nb == (exp_rows + B - 1) / B && last == exp_rows - (nb - 1) * B,
                 "%d batches (last %d rows) for %d packed rows", nb, last, exp_rows);
        LT_CHECK(nb == lt_loader_batches_per_epoch(L), "batches_per_epoch %lld vs %d",
                 (long long)lt_loader_batches_per_epoch(L), nb);
        LT_CHECK(last >= 1 && last <= B, "last batch has %d rows", last);
    }
    lt_loader_free(L);

    /* ---- shuffled: each epoch a permutation, different per epoch, same per seed ---- */
    int ord[3][NDOCS * 2], nb = 0, last = 0;
    L = open_loader(dir, B, T, 0, 1, 42, 1);
    for (int e = 0; e < 2; e++) {
        int n = epoch_docs(L, B, T, ord[e], &nb, &last);
        int seen[NDOCS] = {0}, dup = 0;
        for (int i = 0; i < n; i++) dup += seen[ord[e][i]]++ > 0;
        LT_CHECK(n == NDOCS && dup == 0, "epoch %d: %d documents, %d repeated", e, n, dup);
    }
    LT_CHECK(memcmp(ord[0], ord[1], sizeof(int) * NDOCS) != 0, "same order in epochs 0 and 1");
    lt_loader_free(L);
    L = open_loader(dir, B, T, 0, 1, 42, 1);
    epoch_docs(L, B, T, ord[2], &nb, &last);
    LT_CHECK(!memcmp(ord[0], ord[2], sizeof(int) * NDOCS), "same seed, different order");
    lt_loader_free(L);
    L = open_loader(dir, B, T, 0, 1, 43, 1);
    epoch_docs(L, B, T, ord[2], &nb, &last);
    LT_CHECK(memcmp(ord[0], ord[2], sizeof(int) * NDOCS) != 0, "different seed, same order");
    lt_loader_free(L);

    /* ---- ranks: disjoint, covering, equal to the world=1 global batch ---- */
    {
        const int W = 3;
        lt_loader *G = open_loader(dir, B * W, T, 0, 1, 9, 1);
        lt_loader *R[3];
        for (int r = 0; r < W; r++) R[r] = open_loader(dir, B, T, r, W, 9, 1);
        int steps = (int)lt_loader_batches_per_epoch(G) + 3; /* into the second epoch */
        int same = 1, cover = 1, tg_ok = 1;
        int seen[NDOCS] = {0};
        int64_t ep = 0;
        for (int s = 0; s < steps; s++) {
            lt_loader_batch g, lb[3];
            LT_CHECK_OK(lt_loader_next(G, &g, &err), &err);
            int64_t sum_t = 0;
            for (int r = 0; r < W; r++) {
                LT_CHECK_OK(lt_loader_next(R[r], &lb[r], &err), &err);
                size_t off = (size_t)r * B * T, n = (size_t)B * T;
                same &= !memcmp(g.batch.tokens + off, lb[r].batch.tokens, n * 4) &&
                        !memcmp(g.batch.targets + off, lb[r].batch.targets, n * 4) &&
                        !memcmp(g.batch.pos + off, lb[r].batch.pos, n * 4) &&
                        !memcmp(g.batch.doc_start + off, lb[r].batch.doc_start, n * 4);
                sum_t += lb[r].n_targets;
                tg_ok &= lb[r].global_targets == g.global_targets && lb[r].epoch == g.epoch &&
                         lb[r].last_in_epoch == g.last_in_epoch;
                if (g.epoch == 0)
                    for (int row = 0; row < B; row++) {
                        int ids[128];
                        int64_t nt = 0;
                        int k = check_row(&lb[r].batch, row, T, ids, &nt, "rank");
                        for (int i = 0; i < k; i++) seen[ids[i]]++;
                    }
            }
            tg_ok &= sum_t == g.global_targets && g.n_targets == g.global_targets;
            ep = g.epoch;
        }
        for (int d = 0; d < NDOCS; d++) cover &= seen[d] == 1;
        LT_CHECK(same, "rank batches differ from the world=1 global batch");
        LT_CHECK(cover, "ranks do not cover every document exactly once in epoch 0");
        LT_CHECK(tg_ok, "global target counts / epochs disagree across ranks");
        LT_CHECK(ep == 1, "did not reach epoch 1");
        lt_loader_free(G);
        for (int r = 0; r < W; r++) lt_loader_free(R[r]);
    }

    /* ---- resume: identical batches after restoring a saved state ---- */
    {
        lt_loader *A = open_loader(dir, B, T, 1, 2, 1234, 1);
        int per = (int)lt_loader_batches_per_epoch(A);
        lt_loader_batch lb;
        for (int s = 0; s < per - 2; s++) lt_loader_next(A, &lb, &err);
        lt_loader_state st;
        lt_loader_get_state(A, &st);
        lt_loader *C = open_loader(dir, B, T, 1, 2, 1234, 1);
        LT_CHECK_OK(lt_loader_set_state(C, &st, &err), &err);
        int same = 1;
        for (int s = 0; s < per + 3; s++) { /* crosses the epoch boundary */
            lt_loader_batch a, c;
            lt_loader_next(A, &a, &err);
            lt_loader_next(C, &c, &err);
            size_t n = (size_t)B * T * 4;
            same &= a.epoch == c.epoch && a.last_in_epoch == c.last_in_epoch &&
                    !memcmp(a.batch.tokens, c.batch.tokens, n) && !memcmp(a.batch.targets, c.batch.targets, n) &&
                    !memcmp(a.batch.pos, c.batch.pos, n) && !memcmp(a.batch.doc_start, c.batch.doc_start, n);
        }
        LT_CHECK(same, "restored loader gives different batches");
        lt_loader_state bad = st;
        bad.T = 128;
        LT_CHECK(lt_loader_set_state(C, &bad, &err) == LT_ERR_INVALID, "state for another T accepted");
        bad = st;
        bad.magic = 0;
        LT_CHECK(lt_loader_set_state(C, &bad, &err) != LT_OK, "state with bad magic accepted");
        lt_loader_free(A);
        lt_loader_free(C);
    }

    /* ---- partial last batch: padding rows, no wrap into the next epoch ---- */
    {
        /* find a seed whose epoch 0 ends with a partial batch */
        lt_loader *P = NULL;
        lt_loader_batch lb;
        for (uint64_t seed = 3; seed < 60; seed++) {
            lt_loader_free(P);
            P = open_loader(dir, B, T, 0, 1, seed, 1);
            int guard = 0;
            do {
                lt_loader_next(P, &lb, &err);
            } while (!lb.last_in_epoch && ++guard < 10000);
            if (lb.n_seqs < B) break;
        }
        LT_CHECK(lb.epoch == 0 && lb.n_seqs < B, "last batch: epoch %lld, %d rows", (long long)lb.epoch, lb.n_seqs);
        int pad_ok = 1;
        for (int r = lb.n_seqs; r < B; r++)
            for (int t = 0; t < T; t++) {
                size_t i = (size_t)r * T + t;
                pad_ok &= lb.batch.targets[i] == -1 && lb.batch.pos[i] == 0 && lb.batch.doc_start[i] == t &&
                          lb.batch.tokens[i] == 0;
            }
        LT_CHECK(pad_ok, "rows after the last sequence are not padding");
        lt_loader_next(P, &lb, &err);
        LT_CHECK(lb.epoch == 1 && lb.n_seqs == B, "after the last batch: epoch %lld, %d rows", (long long)lb.epoch,
                 lb.n_seqs);
        lt_loader_free(P);
    }

    /* ---- validation failures name the shard ---- */
    {
        char bad[2048], p[3072];
        snprintf(bad, sizeof bad, "%s/bad", dir);
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s/train-00000.h5' '%s/train-00000.h5'", bad, bad,
                 dir, bad);
        snprintf(p, sizeof p, "%s/train-00000.h5", bad);
        const char *what[] = {"format", "monotone", "token id"};
        for (int k = 0; k < 3; k++) {
            lt_test_system(cmd);
            hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
            LT_CHECK(f >= 0, "cannot reopen %s", p);
            if (f < 0) continue;
            if (k == 0) { /* format attribute -> "luxtrain-tokenz" */
                H5Adelete(f, "format");
                hid_t t = H5Tcopy(H5T_C_S1);
                H5Tset_size(t, 15);
                hid_t sp = H5Screate(H5S_SCALAR);
                hid_t a = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
                H5Awrite(a, t, "luxtrain-tokenz");
                H5Aclose(a);
                H5Sclose(sp);
                H5Tclose(t);
            } else {
                const char *ds = k == 1 ? "doc_offsets" : "tokens";
                hid_t d = H5Dopen2(f, ds, H5P_DEFAULT);
                hid_t fs = H5Dget_space(d);
                hsize_t start = k == 1 ? 3 : 17, one = 1;
                H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &one, NULL);
                hid_t ms = H5Screate_simple(1, &one, NULL);
                uint64_t v64 = 1; /* offsets[3] = 1 < offsets[2] */
                uint32_t v32 = VOCAB;
                H5Dwrite(d, k == 1 ? H5T_NATIVE_UINT64 : H5T_NATIVE_UINT32, ms, fs, H5P_DEFAULT,
                         k == 1 ? (void *)&v64 : (void *)&v32);
                H5Sclose(ms);
                H5Sclose(fs);
                H5Dclose(d);
            }
            /* without the checksums (as from a writer that stores none), so that the value
             * checks are the ones reached */
            for (int q = 0; q < 3; q++) {
                const char *dn[3] = {"tokens", "loss_mask", "doc_offsets"};
                H5Adelete_by_name(f, dn[q], "crc32", H5P_DEFAULT);
            }
            H5Fclose(f);
            lt_loader_opts o = {B, T, 0, 1, 1, 1, VOCAB};
            lt_loader *X = NULL;
            const char *paths[1] = {bad};
            err.msg[0] = 0;
            lt_status st = lt_loader_open(paths, 1, NULL, &o, &X, &err);
            LT_CHECK(st != LT_OK && X == NULL, "bad shard (%s) accepted", what[k]);
            LT_CHECK(strstr(err.msg, p) && strstr(err.msg, what[k]), "message '%s' lacks the shard or '%s'", err.msg,
                     what[k]);
            lt_loader_free(X);
        }
        /* the model's vocabulary is smaller than the ids in a good shard */
        lt_loader_opts o = {B, T, 0, 1, 1, 1, 50000};
        lt_loader *X = NULL;
        const char *paths[1] = {dir};
        LT_CHECK(lt_loader_open(paths, 1, NULL, &o, &X, &err) == LT_ERR_RANGE && strstr(err.msg, "train-00000.h5"),
                 "ids >= model vocab accepted: %s", err.msg);
        lt_loader_free(X);
        lt_loader_opts o2 = {B, T, 2, 2, 1, 1, VOCAB};
        LT_CHECK(lt_loader_open(paths, 1, NULL, &o2, &X, &err) == LT_ERR_INVALID, "rank >= world_size accepted");
    }
    for (int d = 0; d < NDOCS; d++) {
        free(doc_tok[d]);
        free(doc_mask[d]);
    }
    return lt_test_finish("test_loader");
}
