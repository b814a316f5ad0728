/*
 * test_loader_mix.c -- the loader's mix of shard sets (--data PATTERN:W /
 * PATTERN:xN, lt_loader.h) on random documents of two sets written to
 * shards: set A ("raw text": every token after the first a target, two
 * shards, matched by a glob) and set B ("chat": some tokens targets, a
 * folder). Each document's first token names it, so the batches are decoded
 * back into documents and checked against the sources:
 *   - weights 0.25 / 0.75: the token shares achieved over many batches are
 *     within 0.005 of the weights, every epoch holds as many tokens as the
 *     two sets, each set's documents come in whole passes (each document
 *     once per pass), and the loader's own counts (lt_loader_get_set) equal
 *     what the batches held, targets included;
 *   - determinism: the same seed gives the same batches, another seed others;
 *   - epochs x2 / x1: every document of A exactly twice, of B exactly once
 *     per epoch, for three epochs;
 *   - ranks: world 2 slices equal the world 1 global batch;
 *   - resume: state + mix state saved mid-epoch and restored in a new loader
 *     give bitwise the same batches and counts across epoch boundaries;
 *   - a set given as a ','-separated list reads as the same set's glob; the
 *     plain form (no suffix) is no mix and expands a quoted glob;
 *   - bad input: weights that are not positive numbers, an empty glob,
 *     weights mixed with epoch counts or with no suffix, a set of another
 *     tokenizer or vocabulary, a mix state of another loader: refused naming
 *     the set and what was expected.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lt_loader.h"
#include "lt_shard.h"
#include "lt_test.h"

#define VOCAB 50000
#define NA 90
#define NB 40
#define BASE_A 1000
#define BASE_B 5000
#define SEQ 48
#define MB 3

static int32_t *doc_tok[NA + NB];
static uint8_t *doc_mask[NA + NB];
static int doc_len[NA + NB];
static char dir[4096];

static int set_of(int d) { return d < NA ? 0 : 1; }

static void make_docs(void) {
    lt_rng r;
    lt_rng_seed(&r, 77);
    for (int d = 0; d < NA + NB; d++) {
        int len = d < NA ? 2 + (int)(lt_rng_u64(&r) % 30) : 5 + (int)(lt_rng_u64(&r) % 60); /* some longer than SEQ */
        doc_len[d] = len;
        doc_tok[d] = malloc((size_t)len * 4);
        doc_mask[d] = malloc((size_t)len);
        for (int j = 0; j < len; j++) {
            doc_tok[d][j] = j == 0 ? (d < NA ? BASE_A + d : BASE_B + d - NA) : 10000 + (int32_t)(lt_rng_u64(&r) % 30000);
            doc_mask[d][j] = j > 0 && (d < NA || j > len / 2);
        }
    }
}

static void write_shard(const char *path, int d0, int d1, const char *sha, int64_t vocab) {
    lt_err err = {{0}};
    lt_shard_meta meta = {0};
    meta.vocab_size = vocab;
    snprintf(meta.tokenizer_sha256, sizeof meta.tokenizer_sha256, "%s", sha);
    snprintf(meta.template_name, sizeof meta.template_name, "test");
    lt_shard_writer *w = NULL;
    LT_CHECK_OK(lt_shard_writer_open(path, &meta, &w, &err), &err);
    for (int d = d0; d < d1; d++)
        LT_CHECK_OK(lt_shard_writer_add(w, doc_tok[d], doc_mask[d], (size_t)doc_len[d], &err), &err);
    LT_CHECK_OK(lt_shard_writer_finish(w, &err), &err);
}

static lt_loader *open_mix(const char *a_suffix, const char *b_suffix, int Bn, int rank, int world, uint64_t seed) {
    char pa[4200], pb[4200];
    snprintf(pa, sizeof pa, "%s/a/train-*.h5%s", dir, a_suffix);
    snprintf(pb, sizeof pb, "%s/b%s", dir, b_suffix);
    const char *paths[2] = {pa, pb};
    lt_loader_opts o = {Bn, SEQ, rank, world, seed, 1, VOCAB};
    lt_loader *L = NULL;
    lt_err err = {{0}};
    LT_CHECK_OK(lt_loader_open(paths, 2, NULL, &o, &L, &err), &err);
    return L;
}

/* the documents of one batch (whole global batch when world = 1): per set
 * tokens / documents / targets, and per document the count */
typedef struct {
    int64_t tokens[2], docs[2], targets[2];
    int count[NA + NB];
} tally;

static int decode(const lt_batch *b, tally *t) {
    int ok = 1;
    for (int row = 0; row < b->B; row++) {
        const int32_t *tok = b->tokens + (size_t)row * b->T, *tg = b->targets + (size_t)row * b->T;
        const int32_t *pos = b->pos + (size_t)row * b->T;
        for (int i = 0; i < b->T; i++) {
            if (pos[i] != 0) continue;
            int d = tok[i] >= BASE_B && tok[i] < BASE_B + NB ? NA + tok[i] - BASE_B
                    : tok[i] >= BASE_A && tok[i] < BASE_A + NA ? tok[i] - BASE_A : -1;
            if (d < 0) continue; /* padding */
            int len = doc_len[d] < SEQ ? doc_len[d] : SEQ, s = set_of(d);
            for (int j = 0; j < len; j++) ok &= i + j < b->T && tok[i + j] == doc_tok[d][j];
            for (int j = 0; j + 1 < len; j++) {
                int want = doc_mask[d][j + 1] ? doc_tok[d][j + 1] : -1;
                ok &= tg[i + j] == want;
                t->targets[s] += want >= 0;
            }
            t->tokens[s] += len;
            t->docs[s]++;
            t->count[d]++;
        }
    }
    return ok;
}

static int same_batch(const lt_loader_batch *x, const lt_loader_batch *y) {
    size_t n = (size_t)x->batch.B * SEQ * 4;
    return !memcmp(x->batch.tokens, y->batch.tokens, n) && !memcmp(x->batch.targets, y->batch.targets, n) &&
           !memcmp(x->batch.pos, y->batch.pos, n) && !memcmp(x->batch.doc_start, y->batch.doc_start, n) &&
           x->epoch == y->epoch && x->last_in_epoch == y->last_in_epoch && x->global_targets == y->global_targets;
}

static void expect_fail(const char *const *paths, int n, const char *want1, const char *want2, const char *what) {
    lt_loader_opts o = {MB, SEQ, 0, 1, 1, 1, VOCAB};
    lt_loader *L = NULL;
    lt_err err = {{0}};
    lt_status st = lt_loader_open(paths, n, NULL, &o, &L, &err);
    LT_CHECK(st != LT_OK && strstr(err.msg, want1) && (!want2 || strstr(err.msg, want2)),
             "%s: status %d, message '%s' (expected '%s'%s%s)", what, (int)st, err.msg, want1, want2 ? ", " : "",
             want2 ? want2 : "");
    if (st == LT_OK) lt_loader_free(L);
    else printf("ok   refused: %s: %s\n", what, err.msg);
}

int main(void) {
    lt_err err = {{0}};
    snprintf(dir, sizeof dir, "%s/test_loader_mix", LT_TEST_TMP);
    char cmd[5 * 4096 + 64], p[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/a' '%s/b' '%s/c' '%s/d'", dir, dir, dir, dir, dir);
    LT_CHECK(system(cmd) == 0, "cannot make %s", dir);
    make_docs();
    char sha[65], sha2[65];
    snprintf(sha, sizeof sha, "%064d", 7);
    snprintf(sha2, sizeof sha2, "%064d", 8);
    snprintf(p, sizeof p, "%s/a/train-00000.h5", dir);
    write_shard(p, 0, 50, sha, VOCAB);
    snprintf(p, sizeof p, "%s/a/train-00001.h5", dir);
    write_shard(p, 50, NA, sha, VOCAB);
    snprintf(p, sizeof p, "%s/b/train-00000.h5", dir);
    write_shard(p, NA, NA + NB, sha, VOCAB);
    snprintf(p, sizeof p, "%s/c/train-00000.h5", dir); /* another tokenizer */
    write_shard(p, NA, NA + NB, sha2, VOCAB);
    snprintf(p, sizeof p, "%s/d/train-00000.h5", dir); /* another vocabulary */
    write_shard(p, NA, NA + NB, sha, VOCAB + 1);
    int64_t tokA = 0, tokB = 0, tgtA = 0, tgtB = 0;
    for (int d = 0; d < NA + NB; d++) {
        int len = doc_len[d] < SEQ ? doc_len[d] : SEQ, tg = 0;
        for (int j = 1; j < len; j++) tg += doc_mask[d][j];
        *(d < NA ? &tokA : &tokB) += len;
        *(d < NA ? &tgtA : &tgtB) += tg;
    }

    /* ---- weights: shares achieved, whole passes, counts ---- */
    {
        lt_loader *L = open_mix(":0.25", ":0.75", MB, 0, 1, 5);
        LT_CHECK(lt_loader_num_sets(L) == 2, "expected 2 sets, got %d", lt_loader_num_sets(L));
        lt_loader_set s0, s1;
        lt_loader_get_set(L, 0, &s0);
        lt_loader_get_set(L, 1, &s1);
        LT_CHECK(s0.n_docs == NA && s1.n_docs == NB && s0.n_tokens == tokA && s1.n_tokens == tokB &&
                     s0.n_targets == tgtA && s1.n_targets == tgtB,
                 "set sizes: %lld/%lld docs, %lld/%lld tokens", (long long)s0.n_docs, (long long)s1.n_docs,
                 (long long)s0.n_tokens, (long long)s1.n_tokens);
        LT_CHECK(fabs(s0.target_share - 0.25) < 1e-12 && s0.weight == 0.25 && s0.epochs == 0, "set 0 target %g",
                 s0.target_share);
        tally t;
        memset(&t, 0, sizeof t);
        int ok = 1, epochs = 8, got_epochs = 0;
        int64_t ep_tokens = 0, max_dev_ep = 0;
        while (got_epochs < epochs) {
            lt_loader_batch lb;
            LT_CHECK_OK(lt_loader_next(L, &lb, &err), &err);
            int64_t before = t.tokens[0] + t.tokens[1];
            ok &= decode(&lb.batch, &t);
            ep_tokens += t.tokens[0] + t.tokens[1] - before;
            if (lb.last_in_epoch) {
                /* one mix epoch holds as many tokens as both sets, up to one document per set */
                int64_t dev = llabs(ep_tokens - (tokA + tokB));
                if (dev > max_dev_ep) max_dev_ep = dev;
                ep_tokens = 0;
                got_epochs++;
            }
        }
        LT_CHECK(ok, "batches do not hold the source documents / targets");
        LT_CHECK(max_dev_ep <= 2 * SEQ, "an epoch's tokens differ from the sets' total by %lld", (long long)max_dev_ep);
        double share = (double)t.tokens[0] / (double)(t.tokens[0] + t.tokens[1]);
        LT_CHECK(fabs(share - 0.25) < 0.005, "set A's token share %.4f, weight 0.25", share);
        printf("ok   weights 0.25 / 0.75 over %d epochs: A's token share %.4f (%lld / %lld tokens)\n", epochs, share,
               (long long)t.tokens[0], (long long)t.tokens[1]);
        /* whole passes: set A's documents each seen floor or ceil of the mean */
        int lo = 1 << 30, hi = 0;
        for (int d = 0; d < NA; d++) {
            lo = t.count[d] < lo ? t.count[d] : lo;
            hi = t.count[d] > hi ? t.count[d] : hi;
        }
        LT_CHECK(hi - lo <= 1 && lo >= 1, "set A's documents seen between %d and %d times", lo, hi);
        lo = 1 << 30, hi = 0;
        for (int d = NA; d < NA + NB; d++) {
            lo = t.count[d] < lo ? t.count[d] : lo;
            hi = t.count[d] > hi ? t.count[d] : hi;
        }
        LT_CHECK(hi - lo <= 1 && lo >= 1, "set B's documents seen between %d and %d times", lo, hi);
        lt_loader_get_set(L, 0, &s0);
        lt_loader_get_set(L, 1, &s1);
        LT_CHECK(s0.seen_tokens == t.tokens[0] && s1.seen_tokens == t.tokens[1] && s0.seen_docs == t.docs[0] &&
                     s1.seen_docs == t.docs[1] && s0.seen_targets == t.targets[0] && s1.seen_targets == t.targets[1],
                 "the loader's counts (%lld/%lld tokens, %lld/%lld targets) differ from the batches' (%lld/%lld, "
                 "%lld/%lld)",
                 (long long)s0.seen_tokens, (long long)s1.seen_tokens, (long long)s0.seen_targets,
                 (long long)s1.seen_targets, (long long)t.tokens[0], (long long)t.tokens[1], (long long)t.targets[0],
                 (long long)t.targets[1]);
        lt_loader_free(L);
    }

    /* ---- determinism ---- */
    {
        lt_loader *X = open_mix(":0.3", ":0.7", MB, 0, 1, 11), *Y = open_mix(":0.3", ":0.7", MB, 0, 1, 11);
        lt_loader *Z = open_mix(":0.3", ":0.7", MB, 0, 1, 12);
        int same = 1, differ = 0, n = 3 * (int)lt_loader_batches_per_epoch(X);
        for (int i = 0; i < n; i++) {
            lt_loader_batch x, y, z;
            LT_CHECK_OK(lt_loader_next(X, &x, &err), &err);
            LT_CHECK_OK(lt_loader_next(Y, &y, &err), &err);
            same &= same_batch(&x, &y);
            LT_CHECK_OK(lt_loader_next(Z, &z, &err), &err);
            differ |= !same_batch(&x, &z);
        }
        LT_CHECK(same, "the same seed gave different batches");
        LT_CHECK(differ, "another seed gave the same batches");
        printf("ok   determinism: same seed, same %d batches; another seed, others\n", n);
        lt_loader_free(X);
        lt_loader_free(Y);
        lt_loader_free(Z);
    }

    /* ---- epochs x2 / x1 ---- */
    {
        lt_loader *L = open_mix(":x2", "", MB, 0, 1, 3);
        lt_loader_set s0;
        lt_loader_get_set(L, 0, &s0);
        double want = 2.0 * (double)tokA / (2.0 * (double)tokA + (double)tokB);
        LT_CHECK(s0.epochs == 2 && fabs(s0.target_share - want) < 1e-12, "x2: epochs %g share %g (want %g)", s0.epochs,
                 s0.target_share, want);
        int ok = 1;
        for (int e = 0; e < 3; e++) {
            tally t;
            memset(&t, 0, sizeof t);
            for (;;) {
                lt_loader_batch lb;
                LT_CHECK_OK(lt_loader_next(L, &lb, &err), &err);
                ok &= decode(&lb.batch, &t) && lb.epoch == e;
                if (lb.last_in_epoch) break;
            }
            for (int d = 0; d < NA + NB; d++) ok &= t.count[d] == (d < NA ? 2 : 1);
        }
        LT_CHECK(ok, "epochs x2 / x1: a document of A not exactly twice or of B not exactly once in an epoch");
        printf("ok   epochs x2 / x1: every document of A twice and of B once in each of 3 epochs\n");
        lt_loader_free(L);
    }

    /* ---- ranks ---- */
    {
        lt_loader *G = open_mix(":1", ":2", 2 * MB, 0, 1, 9), *R0 = open_mix(":1", ":2", MB, 0, 2, 9),
                  *R1 = open_mix(":1", ":2", MB, 1, 2, 9);
        int same = 1, n = 2 * (int)lt_loader_batches_per_epoch(G) + 1;
        size_t half = (size_t)MB * SEQ;
        for (int i = 0; i < n; i++) {
            lt_loader_batch g, a, b;
            LT_CHECK_OK(lt_loader_next(G, &g, &err), &err);
            LT_CHECK_OK(lt_loader_next(R0, &a, &err), &err);
            LT_CHECK_OK(lt_loader_next(R1, &b, &err), &err);
            same &= !memcmp(g.batch.tokens, a.batch.tokens, half * 4) &&
                    !memcmp(g.batch.tokens + half, b.batch.tokens, half * 4) &&
                    !memcmp(g.batch.targets, a.batch.targets, half * 4) &&
                    !memcmp(g.batch.targets + half, b.batch.targets, half * 4) &&
                    a.global_targets == g.global_targets && b.global_targets == g.global_targets &&
                    a.n_targets + b.n_targets == g.n_targets;
        }
        lt_loader_set gs, as;
        lt_loader_get_set(G, 1, &gs);
        lt_loader_get_set(R1, 1, &as);
        LT_CHECK(same, "ranks' slices differ from the world 1 global batch");
        LT_CHECK(gs.seen_tokens == as.seen_tokens && gs.seen_docs == as.seen_docs,
                 "rank 1 counts the mix differently from world 1 (%lld vs %lld tokens)", (long long)as.seen_tokens,
                 (long long)gs.seen_tokens);
        printf("ok   ranks: 2 ranks' slices are the world-1 global batch for %d batches; same counts\n", n);
        lt_loader_free(G);
        lt_loader_free(R0);
        lt_loader_free(R1);
    }

    /* ---- resume: state round trip ---- */
    {
        lt_loader *A = open_mix(":0.4", ":0.6", MB, 1, 2, 21);
        int per = (int)lt_loader_batches_per_epoch(A), k = per + per / 2; /* in the middle of epoch 1 */
        for (int i = 0; i < k; i++) {
            lt_loader_batch lb;
            LT_CHECK_OK(lt_loader_next(A, &lb, &err), &err);
        }
        lt_loader_state st;
        lt_loader_get_state(A, &st);
        size_t ml = lt_loader_mix_state_size(A);
        LT_CHECK(ml > 0, "a mix has no mix state");
        unsigned char *mix = malloc(ml);
        lt_loader_get_mix_state(A, mix);
        lt_loader *C = open_mix(":0.4", ":0.6", MB, 1, 2, 21);
        LT_CHECK(lt_loader_set_state(C, &st, &err) != LT_OK && strstr(err.msg, "mix"),
                 "a mix restored without its mix state: '%s'", err.msg);
        LT_CHECK(lt_loader_set_state_mix(C, &st, mix, ml - 8, &err) != LT_OK, "a short mix state was accepted");
        LT_CHECK_OK(lt_loader_set_state_mix(C, &st, mix, ml, &err), &err);
        int same = 1;
        for (int i = 0; i < 3 * per; i++) { /* across two epoch boundaries */
            lt_loader_batch a, c;
            LT_CHECK_OK(lt_loader_next(A, &a, &err), &err);
            LT_CHECK_OK(lt_loader_next(C, &c, &err), &err);
            same &= same_batch(&a, &c);
        }
        lt_loader_set sa, sc;
        for (int s = 0; s < 2; s++) {
            lt_loader_get_set(A, s, &sa);
            lt_loader_get_set(C, s, &sc);
            same &= sa.seen_tokens == sc.seen_tokens && sa.seen_docs == sc.seen_docs &&
                    sa.seen_targets == sc.seen_targets;
        }
        LT_CHECK(same, "the restored loader's batches or counts differ from the uninterrupted one's");
        printf("ok   resume: state + %zu bytes of mix state restored after %d batches; the next %d batches and the "
               "counts are identical\n", ml, k, 3 * per);
        /* a plain loader refuses a mix state; a mix of other sets refuses this one */
        lt_loader *E = open_mix(":0.4", ":0.6", MB, 1, 2, 21);
        ((int64_t *)mix)[2] += 1; /* set 1's documents */
        LT_CHECK(lt_loader_set_state_mix(E, &st, mix, ml, &err) != LT_OK && strstr(err.msg, "set 1"),
                 "a mix state of other sets: '%s'", err.msg);
        free(mix);
        lt_loader_free(A);
        lt_loader_free(C);
        lt_loader_free(E);
    }

    /* ---- a set as a comma-separated list: the same as its glob ---- */
    {
        char pa[9000], pb[4200];
        snprintf(pa, sizeof pa, "%s/a/train-00000.h5,%s/a/train-00001.h5:0.25", dir, dir);
        snprintf(pb, sizeof pb, "%s/b:0.75", dir);
        const char *paths[2] = {pa, pb};
        lt_loader_opts o = {MB, SEQ, 0, 1, 5, 1, VOCAB};
        lt_loader *L = NULL, *G = open_mix(":0.25", ":0.75", MB, 0, 1, 5);
        LT_CHECK_OK(lt_loader_open(paths, 2, NULL, &o, &L, &err), &err);
        int same = lt_loader_num_sets(L) == 2;
        for (int i = 0; same && i < 2 * (int)lt_loader_batches_per_epoch(G); i++) {
            lt_loader_batch x, y;
            LT_CHECK_OK(lt_loader_next(L, &x, &err), &err);
            LT_CHECK_OK(lt_loader_next(G, &y, &err), &err);
            same &= same_batch(&x, &y);
        }
        LT_CHECK(same, "a set given as a list differs from the same set given as a glob");
        printf("ok   a set given as 'a/train-00000.h5,a/train-00001.h5:0.25' reads as 'a/train-*.h5:0.25'\n");
        lt_loader_free(L);
        lt_loader_free(G);
    }

    /* ---- the plain form is not a mix (and expands a quoted glob) ---- */
    {
        char pa[4200], pb[4200];
        snprintf(pa, sizeof pa, "%s/a/train-*.h5", dir);
        snprintf(pb, sizeof pb, "%s/b/train-00000.h5", dir);
        const char *paths[2] = {pa, pb};
        LT_CHECK(!lt_loader_is_mix(paths, 2), "plain paths taken for a mix");
        lt_loader_opts o = {MB, SEQ, 0, 1, 1, 1, VOCAB};
        lt_loader *L = NULL;
        LT_CHECK_OK(lt_loader_open(paths, 2, NULL, &o, &L, &err), &err);
        LT_CHECK(lt_loader_num_sets(L) == 0 && lt_loader_mix_state_size(L) == 0 && lt_loader_num_docs(L) == NA + NB,
                 "the plain form made a mix");
        lt_loader_free(L);
    }

    /* ---- bad input ---- */
    {
        char a[4200], b[4200], c[4200];
        const char *paths[2] = {a, b};
        static const char *const bad[] = {":0", ":-1", ":abc", ":x0", ":x", ":inf", ":"};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            snprintf(a, sizeof a, "%s/a/train-*.h5%s", dir, bad[i]);
            snprintf(b, sizeof b, "%s/b:0.5", dir);
            snprintf(c, sizeof c, "is not a positive %s", bad[i][1] == 'x' ? "epoch count" : "weight");
            expect_fail(paths, 2, a, c, bad[i]);
        }
        snprintf(a, sizeof a, "%s/nothing-*.h5:0.5", dir);
        expect_fail(paths, 2, "--data set 1", "nothing-*.h5: no file matches", "an empty glob");
        snprintf(a, sizeof a, "%s/a:0.5", dir);
        snprintf(b, sizeof b, "%s/b:x2", dir);
        expect_fail(paths, 2, "some sets have weights and others epoch counts", NULL, "weights and epochs");
        snprintf(b, sizeof b, "%s/b", dir);
        expect_fail(paths, 2, "some sets have weights and others none", NULL, "weights and no suffix");
        snprintf(b, sizeof b, "%s/c:0.5", dir);
        snprintf(c, sizeof c, "expected %s as in set 1", sha);
        expect_fail(paths, 2, "--data set 2", c, "another tokenizer");
        snprintf(b, sizeof b, "%s/d:0.5", dir);
        snprintf(c, sizeof c, "vocab_size %d, expected %d as in set 1", VOCAB + 1, VOCAB);
        expect_fail(paths, 2, "--data set 2", c, "another vocabulary");
    }
    return lt_test_finish("test_loader_mix");
}
