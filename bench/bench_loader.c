/*
 * bench_loader.c -- shard loader throughput: writes synthetic shards (random
 * documents of 20..2000 tokens), then measures reading + validating them
 * (lt_loader_open) and packing shuffled batches (lt_loader_next) over whole
 * epochs. Prints tokens/s; the goal for packing is >= 100M tokens/s.
 *
 *   bench_loader [MILLION_TOKENS=20] [T=2048] [B=8] [DIR=/tmp]
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt_loader.h"
#include "lt_shard.h"

int main(int argc, char **argv) {
    long mtok = argc > 1 ? atol(argv[1]) : 20;
    int T = argc > 2 ? atoi(argv[2]) : 2048, B = argc > 3 ? atoi(argv[3]) : 8;
    const char *base = argc > 4 ? argv[4] : "/tmp";
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/lt_bench_loader_%ld", base, (long)getpid());
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    if (system(cmd) != 0) return 1;
    lt_err err = {{0}};
    lt_rng r;
    lt_rng_seed(&r, 1);
    const int V = 128256, per_shard = 5000000;
    int64_t total = mtok * 1000000, written = 0;
    int32_t *doc = malloc(2000 * sizeof *doc);
    uint8_t *mask = malloc(2000);
    lt_shard_meta meta = {0};
    meta.vocab_size = V;
    snprintf(meta.tokenizer_sha256, sizeof meta.tokenizer_sha256, "%064d", 0);
    snprintf(meta.template_name, sizeof meta.template_name, "bench");
    double t0 = lt_now_s();
    int shard = 0;
    while (written < total) {
        char p[4200];
        snprintf(p, sizeof p, "%s/train-%05d.h5", dir, shard++);
        lt_shard_writer *w;
        if (lt_shard_writer_open(p, &meta, &w, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        int64_t in_shard = 0;
        while (in_shard < per_shard && written < total) {
            int len = 20 + (int)(lt_rng_u64(&r) % 1981);
            for (int j = 0; j < len; j++) {
                doc[j] = (int32_t)(lt_rng_u64(&r) % V);
                mask[j] = j > len / 3;
            }
            if (lt_shard_writer_add(w, doc, mask, (size_t)len, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
            in_shard += len;
            written += len;
        }
        if (lt_shard_writer_finish(w, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    }
    double t_write = lt_now_s() - t0;
    printf("bench_loader: %.1fM tokens in %d shards, T=%d, B=%d\n", written / 1e6, shard, T, B);
    printf("  write shards         %8.1f M tokens/s\n", written / 1e6 / t_write);

    lt_loader_opts o = {B, T, 0, 1, 42, 1, V};
    const char *paths[1] = {dir};
    lt_loader *L;
    t0 = lt_now_s();
    if (lt_loader_open(paths, 1, NULL, &o, &L, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    double t_open = lt_now_s() - t0;
    printf("  open (read+validate) %8.1f M tokens/s  (%.2f s)\n", written / 1e6 / t_open, t_open);

    for (int pass = 0; pass < 2; pass++) { /* two epochs, shuffled */
        int64_t toks = 0, nb = 0;
        lt_loader_batch lb;
        t0 = lt_now_s();
        do {
            if (lt_loader_next(L, &lb, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
            toks += lb.n_tokens;
            nb++;
        } while (!lb.last_in_epoch);
        double dt = lt_now_s() - t0;
        printf("  pack epoch %d         %8.1f M tokens/s  (%lld batches, %.1f%% of positions filled)\n", pass,
               toks / 1e6 / dt, (long long)nb, 100.0 * toks / ((double)nb * B * T));
    }
    lt_loader_free(L);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    free(doc);
    free(mask);
    return 0;
}
