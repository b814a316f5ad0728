/* bench_tokenizer.c -- lt_tokenizer throughput (MB/s, tokens/s) on the
 * tokenizer corpus, one thread and N threads, and Hugging Face tokenizers
 * single-threaded on the same texts when $LT_PYTHON has it (default:
 * python3 from PATH; the pinned versions are in tools/requirements-test.txt).
 *
 *   bench_tokenizer [--corpus FILE] [--threads N] [--repeats R] [--no-hf]
 *                   [--tokenizers DIR] [name ...]
 * Without --corpus the corpus is generated (tools/gen_tokenizer_corpus.py)
 * into /tmp. Names: llama3_1 qwen3 gemma3 llama2 (default: all).
 * MB = 1e6 bytes of input; encode with add_special = 0. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lt_tokenizer.h"
#include "../tests/lt_tok_corpus.h"

#ifndef LT_SOURCE_DIR_BENCH
#define LT_SOURCE_DIR_BENCH "."
#endif

typedef struct {
    const lt_tokenizer *t;
    const corpus *c;
    size_t next; /* atomic */
    size_t tokens; /* atomic */
    int failed;
} job;

static void *worker(void *arg) {
    job *j = arg;
    lt_tok_ids v = {0};
    lt_err err;
    size_t ntok = 0;
    for (;;) {
        size_t r = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (r >= j->c->n) break;
        v.n = 0;
        if (lt_tok_encode(j->t, j->c->text[r], j->c->len[r], 0, &v, &err)) {
            fprintf(stderr, "encode failed: %s\n", err.msg);
            j->failed = 1;
            break;
        }
        ntok += v.n;
    }
    lt_tok_ids_free(&v);
    __atomic_fetch_add(&j->tokens, ntok, __ATOMIC_RELAXED);
    return NULL;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* best of `reps` runs: wall seconds (and process CPU seconds), tokens */
static double run(const lt_tokenizer *t, const corpus *c, int threads, int reps, size_t *tokens, double *cpu) {
    double best = 1e30;
    *cpu = 1e30;
    for (int rep = 0; rep < reps; rep++) {
        job j = {t, c, 0, 0, 0};
        pthread_t th[256];
        double t0 = lt_now_s(), c0 = cpu_now();
        for (int k = 1; k < threads; k++) pthread_create(&th[k], NULL, worker, &j);
        worker(&j);
        for (int k = 1; k < threads; k++) pthread_join(th[k], NULL);
        double dt = lt_now_s() - t0, dc = cpu_now() - c0;
        if (j.failed) return -1;
        if (dt < best) best = dt;
        if (dc < *cpu) *cpu = dc;
        *tokens = j.tokens;
    }
    return best;
}

int main(int argc, char **argv) {
    const char *corpus_path = NULL, *tokdir = NULL;
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN), reps = 3, hf = 1;
    const char *names[8];
    int nn = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--corpus") && i + 1 < argc)
            corpus_path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokenizers") && i + 1 < argc)
            tokdir = argv[++i];
        else if (!strcmp(argv[i], "--no-hf"))
            hf = 0;
        else if (argv[i][0] != '-' && nn < 8)
            names[nn++] = argv[i];
        else {
            fprintf(stderr, "usage: %s [--corpus FILE] [--threads N] [--repeats R] [--no-hf] [--tokenizers DIR] "
                            "[name ...]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    if (!nn) {
        static const char *all[] = {"llama3_1", "qwen3", "gemma3", "llama2"};
        for (int i = 0; i < 4; i++) names[nn++] = all[i];
    }
    const char *src = getenv("LT_SOURCE_DIR");
    char exe_src[4096];
    if (!src || !*src) {
        /* the source tree: ./ or two levels above the binary (build-x/bench/) */
        src = LT_SOURCE_DIR_BENCH;
        char exe[4096];
        ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (access("tools/gen_tokenizer_corpus.py", R_OK) != 0 && k > 0) {
            exe[k] = 0;
            for (int up = 0; up < 3; up++) {
                char *sl = strrchr(exe, '/');
                if (sl) *sl = 0;
            }
            snprintf(exe_src, sizeof exe_src, "%s", exe);
            src = exe_src;
        }
    }
    char shared_default[8192];
    snprintf(shared_default, sizeof shared_default, "%s/../shared/tokenizers", src);
    if (!tokdir) tokdir = getenv("LT_TOKENIZERS_DIR") ? getenv("LT_TOKENIZERS_DIR") : shared_default;
    /* the Python with tokenizers: $LT_PYTHON (the test harness sets it; see
     * tools/requirements-test.txt), else python3 from PATH */
    const char *py = getenv("LT_PYTHON");
    if (!py || !*py) {
        py = "python3";
        fprintf(stderr, "LT_PYTHON is not set: using python3 from PATH for the corpus and Hugging Face tokenizers\n");
    }
    char cmd[32768];
    char gen_path[256];
    if (!corpus_path) {
        snprintf(gen_path, sizeof gen_path, "/tmp/lt_bench_tokenizer_corpus.%d.bin", (int)getpid());
        snprintf(cmd, sizeof cmd, "%s %s/tools/gen_tokenizer_corpus.py %s/tests/fixtures/tokenizer/seed.txt %s", py, src,
                 src, gen_path);
        if (system(cmd) != 0) {
            fprintf(stderr, "cannot generate the corpus (%s); pass --corpus FILE\n", cmd);
            return 1;
        }
        corpus_path = gen_path;
    }
    corpus c;
    if (!read_corpus(corpus_path, &c)) return 1;
    snprintf(cmd, sizeof cmd, "%s -c 'import tokenizers' 2>/dev/null", py);
    if (hf && system(cmd) != 0) {
        fprintf(stderr, "%s cannot import tokenizers: the Hugging Face columns are left out\n", py);
        hf = 0;
    }
    printf("corpus %s: %zu records, %.2f MB; %d threads; best of %d\n", corpus_path, c.n, c.bytes / 1e6, threads, reps);
    printf("MB/s by wall clock and (cpu) by process CPU time; HF: tokenizers, 1 thread (RAYON_NUM_THREADS=1)\n");
    printf("%-9s %7s | %7s %7s %10s | %7s %10s | %7s %7s %10s | %6s %6s\n", "tokenizer", "load s", "1T MB/s",
           "(cpu)", "1T tok/s", "NT MB/s", "NT tok/s", "HF MB/s", "(cpu)", "HF tok/s", "1T/HF", "(cpu)");
    for (int i = 0; i < nn; i++) {
        char path[8192 + 512];
        snprintf(path, sizeof path, "%s/%s/tokenizer.json", tokdir, names[i]);
        lt_tokenizer *t;
        lt_err err;
        double t0 = lt_now_s();
        if (lt_tok_load(path, &t, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double tl = lt_now_s() - t0;
        size_t tok1 = 0, tokn = 0;
        double c1, cn;
        double d1 = run(t, &c, 1, reps, &tok1, &c1);
        double dn = run(t, &c, threads, reps, &tokn, &cn);
        if (d1 < 0 || dn < 0) return 1;
        double hf_mb = 0, hf_tok = 0, hf_s = 0, hf_cpu_mb = 0;
        if (hf) {
            snprintf(cmd, sizeof cmd, "RAYON_NUM_THREADS=1 %s %s/bench/bench_tokenizer_hf.py %s %s 1", py, src,
                     corpus_path, path);
            FILE *p = popen(cmd, "r");
            char line[256];
            if (p) {
                while (fgets(line, sizeof line, p))
                    if (sscanf(line, "hf %lf %lf %lf %lf", &hf_mb, &hf_tok, &hf_s, &hf_cpu_mb) == 4) break;
                pclose(p);
            }
        }
        double mb1 = c.bytes / d1 / 1e6, mbc = c.bytes / c1 / 1e6;
        printf("%-9s %7.3f | %7.2f %7.2f %10.0f | %7.2f %10.0f | ", names[i], tl, mb1, mbc, tok1 / d1,
               c.bytes / dn / 1e6, tokn / dn);
        if (hf_mb > 0)
            printf("%7.2f %7.2f %10.0f | %5.1fx %5.1fx\n", hf_mb, hf_cpu_mb, hf_tok, mb1 / hf_mb, mbc / hf_cpu_mb);
        else
            printf("%7s %7s %10s | %6s %6s\n", "-", "-", "-", "-", "-");
        fflush(stdout);
        lt_tok_free(t);
    }
    corpus_free(&c);
    if (corpus_path == gen_path) remove(gen_path);
    return 0;
}
