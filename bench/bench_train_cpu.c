/*
 * bench_train_cpu.c -- tokens per second and peak memory of full optimizer
 * steps (forward + backward + clip + AdamW through lt_trainer_step) on a
 * backend, full fine-tuning or LoRA. Prints figures; asserts nothing.
 * Compare with bench/bench_train_torch.py (the same step in PyTorch).
 *
 *   bench_train_cpu [MODEL_DIR] [B] [T] [ITERS] [full|lora] [THREADS] [DEVICE]
 * defaults: data/sample/model, 4, 256, 10, full, 0 (OpenMP default), cpu.
 * LoRA: r 8, alpha 16, all seven projections. Tokens are random; each
 * sequence is one document, every position a target. The first step is a
 * warm-up and not timed. Peak RSS is the process's maximum resident set
 * (getrusage), model + activations + gradients + optimizer state.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "lt_lora.h"
#include "lt_model.h"
#include "lt_trainer.h"

int main(int argc, char **argv) {
    char def[4096];
    snprintf(def, sizeof def, "%s/data/sample/model", getenv("LT_SOURCE_DIR") ? getenv("LT_SOURCE_DIR") : ".");
    const char *dir = argc > 1 ? argv[1] : def;
    int B = argc > 2 ? atoi(argv[2]) : 4, T = argc > 3 ? atoi(argv[3]) : 256, iters = argc > 4 ? atoi(argv[4]) : 10;
    int lora = argc > 5 && !strcmp(argv[5], "lora");
    int threads = argc > 6 ? atoi(argv[6]) : 0;
    const char *device = argc > 7 ? argv[7] : "cpu";
    if (B <= 0 || T <= 0 || iters <= 0) {
        fprintf(stderr, "usage: bench_train_cpu [MODEL_DIR] [B] [T] [ITERS] [full|lora] [THREADS] [DEVICE]\n");
        return 2;
    }
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_trainer *tr = NULL;
    lt_rng rng;
    lt_rng_seed(&rng, 1);
    lt_peft_config pc = {8, 16.0, 0.0, LT_LORA_ALL_TARGETS, 0, "", NULL};
    lt_optim_cfg oc = {{LT_SCHED_CONSTANT, 1e-4, 0, 1000, 0}, 0.9, 0.999, 1e-8, 0.01, 1.0};
    if (lt_backend_create(device, threads, &be, &err) || lt_model_load(dir, be, &m, &err) ||
        (lora && lt_trainer_add_lora(m, &pc, &rng, &err)) || lt_model_plan(m, B, T, &err) ||
        lt_trainer_create(m, &oc, 0, 0, &tr, &err)) {
        fprintf(stderr, "bench_train_cpu: %s\n", err.msg);
        return 1;
    }
    const lt_config *cfg = lt_model_config(m);
    size_t N = (size_t)B * T;
    int32_t *tok = malloc(N * 4), *tg = malloc(N * 4), *pos = malloc(N * 4), *doc = malloc(N * 4);
    for (size_t n = 0; n < N; n++) {
        tok[n] = (int32_t)(lt_rng_u64(&rng) % (uint64_t)cfg->vocab_size);
        pos[n] = (int32_t)(n % T);
        doc[n] = 0;
    }
    for (size_t n = 0; n < N; n++) tg[n] = (int32_t)(lt_rng_u64(&rng) % (uint64_t)cfg->vocab_size);
    lt_batch b = {B, T, tok, tg, pos, doc};
    lt_train_stats st;
    if (lt_trainer_step(tr, &b, 1, &st, &err)) { /* warm-up */
        fprintf(stderr, "bench_train_cpu: %s\n", err.msg);
        return 1;
    }
    double t0 = lt_now_s();
    for (int i = 0; i < iters; i++)
        if (lt_trainer_step(tr, &b, 1, &st, &err)) {
            fprintf(stderr, "bench_train_cpu: %s\n", err.msg);
            return 1;
        }
    double dt = (lt_now_s() - t0) / iters;
    size_t trainable = 0;
    for (size_t i = 0; i < lt_model_num_params(m); i++)
        if (lt_model_param(m, i)->trainable) trainable += lt_model_param(m, i)->numel;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("luxtrain %s %s: %s, %zu parameters (%zu trainable), batch %d x %d, threads %d\n", be->name,
           lora ? "lora" : "full", dir, lt_model_num_elements(m) - (lora ? trainable : 0), trainable, B, T, threads);
    printf("  step %.1f ms, %.0f tokens/s, peak RSS %.1f MiB, loss %.4f\n", dt * 1e3, (double)N / dt,
           ru.ru_maxrss / 1024.0, st.loss);
    lt_trainer_free(tr);
    lt_model_free(m);
    be->destroy(be);
    free(tok);
    free(tg);
    free(pos);
    free(doc);
    return 0;
}
