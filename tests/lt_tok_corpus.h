/* lt_tok_corpus.h -- the tokenizer corpus reader shared by the tokenizer
 * tests (lt_tok_testutil.h) and bench/bench_tokenizer.c: records
 * "<decimal byte length>\n<bytes>\n" as written by
 * tools/gen_tokenizer_corpus.py. Static functions; include once. */
#ifndef LT_TOK_CORPUS_H
#define LT_TOK_CORPUS_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_base.h"

typedef struct {
    char **text;
    size_t *len;
    size_t n, bytes;
    char *buf; /* the file (text[] points into it) */
} corpus;

static void corpus_free(corpus *c) {
    free(c->text);
    free(c->len);
    free(c->buf);
    memset(c, 0, sizeof *c);
}

static int read_corpus(const char *path, corpus *c) {
    char *d;
    size_t n;
    lt_err err;
    if (lt_read_file(path, &d, &n, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 0;
    }
    size_t cap = 1024;
    c->buf = d;
    c->text = malloc(cap * sizeof *c->text);
    c->len = malloc(cap * sizeof *c->len);
    c->n = c->bytes = 0;
    size_t i = 0;
    while (i < n) {
        char *nl = memchr(d + i, '\n', n - i);
        if (!nl) break;
        size_t l = strtoull(d + i, NULL, 10);
        i = (size_t)(nl - d) + 1;
        if (i + l > n) break;
        if (c->n == cap) {
            cap *= 2;
            c->text = realloc(c->text, cap * sizeof *c->text);
            c->len = realloc(c->len, cap * sizeof *c->len);
        }
        c->text[c->n] = d + i; /* the buffer stays alive */
        c->len[c->n++] = l;
        c->bytes += l;
        i += l + 1;
    }
    return c->n > 0;
}

#endif
