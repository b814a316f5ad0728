/*
 * bench_model_step.c -- time of one forward and one forward+backward step of
 * a model on a backend. Prints figures; asserts nothing.
 *
 *   bench_model_step [MODEL_DIR] [B] [T] [ITERS] [DEVICE] [THREADS]
 * defaults: tests/fixtures/models/llama, 2, 20, 50, cpu, 0 (OpenMP default).
 * Tokens are random, each sequence one document, every position a target.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lt_model.h"


int main(int argc, char **argv) {
    char def[4096];
    snprintf(def, sizeof def, "%s/tests/fixtures/models/llama", getenv("LT_SOURCE_DIR") ? getenv("LT_SOURCE_DIR") : ".");
    const char *dir = argc > 1 ? argv[1] : def;
    int B = argc > 2 ? atoi(argv[2]) : 2, T = argc > 3 ? atoi(argv[3]) : 20, iters = argc > 4 ? atoi(argv[4]) : 50;
    const char *device = argc > 5 ? argv[5] : "cpu";
    int threads = argc > 6 ? atoi(argv[6]) : 0;
    if (B <= 0 || T <= 0 || iters <= 0) {
        fprintf(stderr, "usage: bench_model_step [MODEL_DIR] [B] [T] [ITERS] [DEVICE] [THREADS]\n");
        return 2;
    }
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    if (lt_backend_create(device, threads, &be, &err) || lt_model_load(dir, be, &m, &err) ||
        lt_model_alloc_grads(m, &err) || lt_model_plan(m, B, T, &err)) {
        fprintf(stderr, "bench_model_step: %s\n", err.msg);
        return 1;
    }
    const lt_config *cfg = lt_model_config(m);
    int N = B * T;
    int32_t *tok = malloc(N * sizeof *tok), *tg = malloc(N * sizeof *tg), *pos = malloc(N * sizeof *pos),
            *doc = malloc(N * sizeof *doc);
    lt_rng rng;
    lt_rng_seed(&rng, 1);
    for (int n = 0; n < N; n++) tok[n] = (int32_t)(lt_rng_u64(&rng) % (uint64_t)cfg->vocab_size);
    for (int b = 0; b < B; b++) lt_batch_fill_sequence(T, tok + b * T, NULL, &T, 1, tg + b * T, pos + b * T, doc + b * T, &err);
    lt_batch batch = {.B = B, .T = T, .tokens = tok, .targets = tg, .pos = pos, .doc_start = doc};
    lt_step_result r;
    double ms[2];
    for (int bw = 0; bw < 2; bw++) {
        for (int w = 0; w < 3; w++) lt_model_step(m, &batch, bw, N, &r, &err); /* warm-up */
        double t0 = lt_now_s();
        for (int i = 0; i < iters; i++)
            if (lt_model_step(m, &batch, bw, N, &r, &err)) {
                fprintf(stderr, "bench_model_step: %s\n", err.msg);
                return 1;
            }
        ms[bw] = (lt_now_s() - t0) * 1e3 / iters;
    }
    printf("bench_model_step: %s (%s, %zu params) on %s, B=%d T=%d: forward %.3f ms, forward+backward %.3f ms "
           "(%.0f tokens/s), loss %.4f\n",
           dir, cfg->architecture, lt_model_num_elements(m), be->name, B, T, ms[0], ms[1], N / (ms[1] / 1e3),
           r.loss_sum / (double)r.n_targets);
    lt_model_free(m);
    be->destroy(be);
    free(tok);
    free(tg);
    free(pos);
    free(doc);
    return 0;
}
