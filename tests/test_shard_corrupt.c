/*
 * test_shard_corrupt.c -- corrupted token shards are clean errors:
 *   1. one bit flipped inside the raw bytes of tokens, loss_mask and
 *      doc_offsets (found in the file by their content): lt_shard_read fails
 *      with "dataset <name>: CRC-32 ... corrupt", naming the file;
 *   2. 300 shards with one random bit flipped anywhere, and 300 with one
 *      flipped in the file's metadata (its first 4 KiB: superblock, object
 *      headers, attributes; seeded), each read in
 *      a child process under a 20 s alarm: no crash, no hang, and no shard is
 *      accepted with tokens, mask or offsets that differ from the original
 *      (before the checksums and the fixed-length attributes, random flips
 *      crashed libhdf5 1.10.8 in its global heap, hung it, or were accepted
 *      with other tokens).
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lt_shard.h"
#include "lt_test.h"

static char good[4096], bad[4200];
static lt_shard ref;

static int write_shard(void) {
    lt_err err;
    lt_shard_meta meta = {0};
    meta.vocab_size = 3000;
    snprintf(meta.tokenizer_sha256, sizeof meta.tokenizer_sha256, "%064d", 5);
    snprintf(meta.template_name, sizeof meta.template_name, "chatml");
    snprintf(meta.sources, sizeof meta.sources, "a.jsonl\nsecond.jsonl");
    lt_shard_writer *w;
    if (lt_shard_writer_open(good, &meta, &w, &err)) return 0;
    lt_rng r;
    lt_rng_seed(&r, 99);
    for (int d = 0; d < 40; d++) {
        int32_t tok[200];
        uint8_t mask[200];
        int n = 20 + (int)(lt_rng_u64(&r) % 150);
        for (int i = 0; i < n; i++) {
            tok[i] = (int32_t)(lt_rng_u64(&r) % 3000);
            mask[i] = (uint8_t)(lt_rng_u64(&r) & 1);
        }
        if (lt_shard_writer_add(w, tok, mask, (size_t)n, &err)) return 0;
    }
    return lt_shard_writer_finish(w, &err) == LT_OK;
}

static int same_content(const lt_shard *s) {
    return s->num_tokens == ref.num_tokens && s->num_docs == ref.num_docs &&
           !memcmp(s->tokens, ref.tokens, (size_t)ref.num_tokens * 4) &&
           !memcmp(s->loss_mask, ref.loss_mask, (size_t)ref.num_tokens) &&
           !memcmp(s->doc_offsets, ref.doc_offsets, (size_t)(ref.num_docs + 1) * 8);
}

static void write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

/* flip a bit inside the bytes of `what` (found by content) and expect the CRC error */
static void flip_in(const char *file, size_t len, const void *needle, size_t nlen, const char *what) {
    const char *at = NULL;
    for (size_t i = 0; i + nlen <= len && !at; i++)
        if (!memcmp(file + i, needle, nlen)) at = file + i;
    LT_CHECK(at != NULL, "%s: its bytes were not found in the file", what);
    if (!at) return;
    char *copy = malloc(len);
    memcpy(copy, file, len);
    copy[(at - file) + nlen / 2] ^= 0x10;
    write_file(bad, copy, len);
    free(copy);
    lt_err err = {{0}};
    lt_shard s;
    memset(&s, 0, sizeof s);
    lt_status st = lt_shard_read(bad, 0, &s, &err);
    char want[128];
    snprintf(want, sizeof want, "dataset %s: CRC-32", what);
    LT_CHECK(st == LT_ERR_FORMAT && strstr(err.msg, bad) && strstr(err.msg, want) && strstr(err.msg, "corrupt"),
             "bit flipped in %s: %s", what, st ? err.msg : "accepted");
    if (!st) lt_shard_free(&s);
    printf("  %s bit flip -> %s\n", what, st ? err.msg : "accepted");
}

int main(void) {
    const char *dir = lt_test_tmpdir("test_shard_corrupt");
    lt_err err = {{0}};
    snprintf(good, sizeof good, "%s/good.h5", dir);
    snprintf(bad, sizeof bad, "%s/bad.h5", dir);
    LT_CHECK(write_shard(), "writing the shard");
    LT_CHECK_OK(lt_shard_read(good, 0, &ref, &err), &err);
    if (!ref.tokens) return lt_test_finish("test_shard_corrupt");
    char *file = NULL;
    size_t len = 0;
    LT_CHECK_OK(lt_read_file(good, &file, &len, &err), &err);
    if (!file) return lt_test_finish("test_shard_corrupt");

    /* 1. flips inside each dataset */
    flip_in(file, len, ref.tokens + 100, 64, "tokens");
    flip_in(file, len, ref.loss_mask + 200, 64, "loss_mask");
    flip_in(file, len, ref.doc_offsets + 10, 64, "doc_offsets");

    /* 2. random flips anywhere */
    int crashes = 0, hangs = 0, accepted_diff = 0, accepted_same = 0, refused = 0;
    lt_rng r;
    lt_rng_seed(&r, 2024);
    char *copy = malloc(len);
    size_t meta_len = len < 4096 ? len : 4096;
    for (int k = 0; k < 600; k++) {
        memcpy(copy, file, len);
        size_t bit = (size_t)(lt_rng_u64(&r) % ((k < 300 ? len : meta_len) * 8));
        copy[bit / 8] ^= (char)(1u << (bit % 8));
        write_file(bad, copy, len);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(20);
            lt_shard s;
            lt_err e2 = {{0}};
            memset(&s, 0, sizeof s);
            if (lt_shard_read(bad, 0, &s, &e2) != LT_OK) _exit(2);
            _exit(same_content(&s) ? 0 : 3);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFSIGNALED(status)) {
            if (WTERMSIG(status) == SIGALRM) hangs++;
            else crashes++;
            printf("  flip of bit %zu (byte %zu): %s\n", bit % 8, bit / 8,
                   WTERMSIG(status) == SIGALRM ? "hang" : "crash");
        } else if (WEXITSTATUS(status) == 3) {
            accepted_diff++;
            printf("  flip of bit %zu (byte %zu): accepted with other content\n", bit % 8, bit / 8);
        } else if (WEXITSTATUS(status) == 0)
            accepted_same++;
        else
            refused++;
    }
    free(copy);
    printf("600 random bit flips in a %zu-byte shard (300 in its first 4 KiB): %d refused, %d accepted with the same content, %d accepted "
           "with other content, %d crashes, %d hangs\n",
           len, refused, accepted_same, accepted_diff, crashes, hangs);
    LT_CHECK(crashes == 0 && hangs == 0 && accepted_diff == 0, "%d crashes, %d hangs, %d accepted with other content",
             crashes, hangs, accepted_diff);
    free(file);
    lt_shard_free(&ref);
    return lt_test_finish("test_shard_corrupt");
}
