/*
 * bench_cpu_ops.c -- throughput of the CPU backend's heavy ops (figures only,
 * no asserts): matmul forward/backward and attention forward/backward at a
 * few sizes. Usage: bench_cpu_ops [threads]   (default: the OpenMP default)
 */
#include <stdio.h>
#include <stdlib.h>

#include "lt_backend.h"

static float *buf(lt_backend *be, size_t n, uint64_t seed) {
    void *p;
    lt_err e;
    if (be->alloc(be, n * sizeof(float), &p, &e) != LT_OK) {
        fprintf(stderr, "bench_cpu_ops: %s\n", e.msg);
        exit(1);
    }
    lt_rng r;
    lt_rng_seed(&r, seed);
    float *f = p;
    for (size_t i = 0; i < n; i++) f[i] = lt_rng_normal(&r) * 0.5f;
    return f;
}

/* seconds per call: repeat until at least 0.5 s has passed */
#define TIME(stmt, secs)                                                  \
    do {                                                                  \
        stmt;                                                             \
        int _reps = 0;                                                    \
        double _t0 = lt_now_s(), _t;                                      \
        do {                                                              \
            stmt;                                                         \
            _reps++;                                                      \
        } while ((_t = lt_now_s() - _t0) < 0.5);                          \
        secs = _t / _reps;                                                \
    } while (0)

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    lt_backend *be;
    lt_err e;
    if (lt_cpu_backend_create(threads, &be, &e) != LT_OK) {
        fprintf(stderr, "bench_cpu_ops: %s\n", e.msg);
        return 1;
    }
    printf("cpu backend, threads %d (0 = OpenMP default)\n", threads);

    int mm[][3] = {{512, 512, 512}, {1024, 2048, 2048}, {2048, 1024, 4096}};
    for (int i = 0; i < 3; i++) {
        int M = mm[i][0], K = mm[i][1], N = mm[i][2];
        float *x = buf(be, (size_t)M * K, 1), *w = buf(be, (size_t)N * K, 2), *out = buf(be, (size_t)M * N, 3);
        float *dx = buf(be, (size_t)M * K, 4), *dw = buf(be, (size_t)N * K, 5);
        double tf, tb;
        TIME(be->matmul_fwd(be, out, x, w, NULL, M, K, N), tf);
        TIME(be->matmul_bwd(be, dx, 0, dw, NULL, out, x, w, M, K, N), tb);
        double fl = 2.0 * M * K * N;
        printf("matmul    M %5d K %5d N %5d   fwd %8.2f ms %7.1f GFLOP/s   bwd %8.2f ms %7.1f GFLOP/s\n", M, K, N,
               tf * 1e3, fl / tf * 1e-9, tb * 1e3, 2 * fl / tb * 1e-9);
        be->free(be, x), be->free(be, w), be->free(be, out), be->free(be, dx), be->free(be, dw);
    }

    int at[][5] = {{1, 256, 8, 2, 64}, {1, 1024, 8, 2, 64}, {2, 512, 16, 4, 128}}; // B T Hq Hkv D
    for (int i = 0; i < 3; i++) {
        int B = at[i][0], T = at[i][1], Hq = at[i][2], Hkv = at[i][3], D = at[i][4];
        size_t nq = (size_t)B * T * Hq * D, nk = (size_t)B * T * Hkv * D;
        float *q = buf(be, nq, 1), *k = buf(be, nk, 2), *v = buf(be, nk, 3), *o = buf(be, nq, 4), *g = buf(be, nq, 5);
        float *dq = buf(be, nq, 6), *dk = buf(be, nk, 7), *dv = buf(be, nk, 8), *lse = buf(be, (size_t)B * Hq * T, 9);
        int32_t *ds = malloc((size_t)B * T * sizeof(int32_t));
        for (int n = 0; n < B * T; n++) ds[n] = 0; // one document per sequence
        float sc = 0.125f;
        double tf, tb;
        TIME(be->attention_fwd(be, o, lse, q, k, v, ds, B, T, Hq, Hkv, D, sc), tf);
        TIME(be->attention_bwd(be, dq, dk, dv, g, q, k, v, o, lse, ds, B, T, Hq, Hkv, D, sc), tb);
        double fl = 2.0 * 2.0 * B * Hq * ((double)T * (T + 1) / 2) * D; // QK^T and PV, causal half
        printf("attention B %d T %5d Hq %2d Hkv %d D %3d   fwd %8.2f ms %7.1f GFLOP/s   bwd %8.2f ms %7.1f GFLOP/s\n",
               B, T, Hq, Hkv, D, tf * 1e3, fl / tf * 1e-9, tb * 1e3, 2.5 * fl / tb * 1e-9);
        be->free(be, q), be->free(be, k), be->free(be, v), be->free(be, o), be->free(be, g);
        be->free(be, dq), be->free(be, dk), be->free(be, dv), be->free(be, lse);
        free(ds);
    }
    be->destroy(be);
    return 0;
}
