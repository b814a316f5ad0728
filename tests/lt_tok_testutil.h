/* lt_tok_testutil.h -- shared by the tokenizer tests: the length-prefixed
 * corpus reader (lt_tok_corpus.h), the Python-with-tokenizers check and the
 * encode / decode / compare-with-reference driver
 * (tests/tokenizer_reference.py). Static functions; include once per test. */
#ifndef LT_TOK_TESTUTIL_H
#define LT_TOK_TESTUTIL_H
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_test.h"
#include "lt_tok_corpus.h"
#include "lt_tokenizer.h"

/* $LT_PYTHON (else the LT_PYTHON compile definition) if it can import
 * tokenizers; otherwise says so and returns NULL (the test skips). */
static const char *tok_test_python(void) {
    const char *py = getenv("LT_PYTHON");
    if (!py || !*py) py = LT_PYTHON;
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s -c 'import tokenizers' 2>/dev/null", py);
    if (lt_test_system(cmd) != 0) {
        fprintf(stderr, "skip: %s with tokenizers is not available\n", py);
        return NULL;
    }
    return py;
}

static void write_ids(FILE *f, const lt_tok_ids *v) {
    for (size_t k = 0; k < v->n; k++) fprintf(f, k ? " %d" : "%d", v->ids[k]);
    fputc('\t', f);
    for (size_t k = 0; k < v->n; k++) fprintf(f, k ? " %lld" : "%lld", (long long)v->offsets[k]);
    fputc('\n', f);
}

static uint64_t ids_hash(const lt_tok_ids *v) {
    uint64_t h = 1469598103934665603ull ^ v->n;
    for (size_t k = 0; k < v->n; k++) {
        h = (h ^ (uint32_t)v->ids[k]) * 1099511628211ull;
        h = (h ^ (uint64_t)v->offsets[k]) * 1099511628211ull;
    }
    return h;
}

typedef struct {
    const lt_tokenizer *t;
    const corpus *c;
    const uint64_t *want;
    int tid, nthreads;
    size_t bad;
} mt_job;

static void *mt_worker(void *arg) {
    mt_job *j = arg;
    lt_tok_ids v = {0};
    lt_err err;
    for (size_t r = (size_t)j->tid; r < j->c->n; r += (size_t)j->nthreads) {
        v.n = 0;
        if (lt_tok_encode(j->t, j->c->text[r], j->c->len[r], 0, &v, &err) || ids_hash(&v) != j->want[r]) j->bad++;
    }
    lt_tok_ids_free(&v);
    return NULL;
}

/* Encode every record with and without special tokens, decode a sample,
 * write metadata, check offsets, and compare with the reference (returns 1
 * if the tokenizer loaded). */
static int tok_compare(const char *name, const char *path, const corpus *cp, const char *corpus_path, const char *tmp,
                   const char *py) {
    const corpus c = *cp;
    char cmd[16384];
    lt_tokenizer *t = NULL;
    lt_err err = {{0}};
    double t0 = lt_now_s();
    lt_status st = lt_tok_load(path, &t, &err);
    double t_load = lt_now_s() - t0;
    LT_CHECK_OK(st, &err);
    if (st) return 0;
    char prefix[4096];
    snprintf(prefix, sizeof prefix, "%s/%s", tmp, name);
    char fn[4200];
    FILE *f[2], *fd, *fm;
    for (int s = 0; s < 2; s++) {
        snprintf(fn, sizeof fn, "%s.ids%d", prefix, s);
        f[s] = fopen(fn, "wb");
    }
    snprintf(fn, sizeof fn, "%s.dec", prefix);
    fd = fopen(fn, "wb");
    snprintf(fn, sizeof fn, "%s.meta", prefix);
    fm = fopen(fn, "wb");
    if (!f[0] || !f[1] || !fd || !fm) {
        LT_CHECK(0, "cannot write under %s", tmp);
        return 0;
    }
    lt_tok_ids v = {0};
    size_t ntok = 0, bad_off = 0;
    uint64_t *want = calloc(c.n + 1, sizeof *want);
    double t_enc = 0;
    for (size_t r = 0; r < c.n; r++) {
        for (int s = 0; s < 2; s++) {
            v.n = 0;
            double a = lt_now_s();
            st = lt_tok_encode(t, c.text[r], c.len[r], s, &v, &err);
            t_enc += lt_now_s() - a;
            LT_CHECK_OK(st, &err);
            write_ids(f[s], &v);
            if (s == 0) {
                want[r] = ids_hash(&v);
                ntok += v.n;
                int64_t prev = 0;
                for (size_t k = 0; k < v.n; k++) {
                    int64_t o = v.offsets[k];
                    if (o < prev || o >= (int64_t)c.len[r]) bad_off++;
                    prev = o;
                }
            }
            if (r % 5 == 0) { /* decode sample: both skip settings */
                for (int skip = 0; skip < 2; skip++) {
                    char *txt = NULL;
                    size_t tl = 0;
                    st = lt_tok_decode(t, v.ids, v.n, skip, &txt, &tl, &err);
                    LT_CHECK_OK(st, &err);
                    fprintf(fd, "%zu %d %zu\n", r, skip + 2 * s, tl);
                    if (txt) fwrite(txt, 1, tl, fd);
                    fputc('\n', fd);
                    free(txt);
                }
            }
        }
    }
    LT_CHECK(bad_off == 0, "%s: %zu offsets outside the record or decreasing", name, bad_off);
    /* the same tokenizer from 4 threads at once gives the same results */
    {
        mt_job jobs[4];
        pthread_t th[4];
        for (int k = 0; k < 4; k++) {
            jobs[k] = (mt_job){t, &c, want, k, 4, 0};
            pthread_create(&th[k], NULL, mt_worker, &jobs[k]);
        }
        size_t bad = 0;
        for (int k = 0; k < 4; k++) {
            pthread_join(th[k], NULL);
            bad += jobs[k].bad;
        }
        LT_CHECK(bad == 0, "%s: %zu records differ when encoded from 4 threads", name, bad);
    }
    free(want);
    printf("%-8s load %.3f s, encode (both settings) %.3f s, %zu tokens (no specials), vocab %d\n", name,
           t_load, t_enc, ntok, lt_tok_vocab_size(t));
    /* metadata */
    int32_t ids[16];
    int np = lt_tok_prefix_ids(t, ids, 16);
    fprintf(fm, "vocab_size %d\nprefix", lt_tok_vocab_size(t));
    for (int k = 0; k < np; k++) fprintf(fm, " %d", ids[k]);
    int ns = lt_tok_suffix_ids(t, ids, 16);
    fprintf(fm, "\nsuffix");
    for (int k = 0; k < ns; k++) fprintf(fm, " %d", ids[k]);
    fprintf(fm, "\nsha256 %s\n", lt_tok_sha256(t));
    lt_rng rng;
    lt_rng_seed(&rng, 7 + (uint64_t)strlen(name));
    for (int k = 0; k < 400; k++) {
        int32_t id = k < 20 ? k : (int32_t)(lt_rng_u64(&rng) % (uint64_t)lt_tok_vocab_size(t));
        if (k >= 20 && k < 40) id = lt_tok_vocab_size(t) - 1 - (k - 20);
        const char *tk = lt_tok_id_to_token(t, id);
        fprintf(fm, "id %d ", id);
        if (tk) {
            for (const unsigned char *p = (const unsigned char *)tk; *p; p++) fprintf(fm, "%02x", *p);
        } else
            fputc('-', fm);
        /* (tokenizers 0.23: token_to_id(id_to_token(id)) need not be id -- a `normalized`
         * added token shows its normalized form, but is looked up by its content) */
        fprintf(fm, " %d %d\n", lt_tok_is_special(t, id), tk ? lt_tok_token_to_id(t, tk) : -1);
    }
    LT_CHECK(lt_tok_id_to_token(t, -1) == NULL && lt_tok_id_to_token(t, lt_tok_vocab_size(t)) == NULL,
             "id_to_token out of range must be NULL");
    fclose(f[0]);
    fclose(f[1]);
    fclose(fd);
    fclose(fm);
    lt_tok_ids_free(&v);
    lt_tok_free(t);
    snprintf(cmd, sizeof cmd, "%s %s %s %s %s", py, lt_src_path("tests/tokenizer_reference.py"), corpus_path, path,
             prefix);
    int rc = lt_test_system(cmd);
    LT_CHECK(rc == 0, "%s: reference comparison failed (rc %d)", name, rc);
    return 1;
}

#endif
