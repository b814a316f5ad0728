/*
 * lt_cpu_embedding.c -- token embedding lookup and its gradient (CPU, fp32).
 */
#include <math.h>

#include "lt_cpu.h"

/* out[n, :] = table[ids[n], :] */
void lt_cpu_embedding_fwd(lt_backend *be, void *out_, const void *table_, const int32_t *ids, int N, int C) {
    float *out = (float *)out_;           // (N, C)
    const float *table = (const float *)table_; // (V, C)
    int nt = lt_cpu_threads_for(be, (size_t)N * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * C;
        if (ids[n] < 0) { // the table size is not passed; the caller checks ids < V
            lt_cpu_fail(be, LT_ERR_RANGE, "embedding_fwd: token id %d at row %d is negative", (int)ids[n], n);
            for (int c = 0; c < C; c++) o[c] = NAN;
            continue;
        }
        const float *row = table + (size_t)ids[n] * C;
        for (int c = 0; c < C; c++) o[c] = row[c];
    }
}

/* dtable[ids[n], :] += dout[n, :]
 * Deterministic: the threads split the columns, and every element of dtable
 * receives its rows in the order n = 0, 1, ..., N-1 whatever the thread count. */
void lt_cpu_embedding_bwd(lt_backend *be, float *dtable, const void *dout_, const int32_t *ids, int N, int C) {
    const float *dout = (const float *)dout_; // (N, C)
    for (int n = 0; n < N; n++) {
        if (ids[n] < 0) {
            lt_cpu_fail(be, LT_ERR_RANGE, "embedding_bwd: token id %d at row %d is negative", (int)ids[n], n);
            return;
        }
    }
    const int CB = 64; // columns per block
    int nblocks = (C + CB - 1) / CB;
    int nt = lt_cpu_threads_for(be, (size_t)N * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * CB, c1 = c0 + CB < C ? c0 + CB : C;
        for (int n = 0; n < N; n++) {
            float *drow = dtable + (size_t)ids[n] * C;   // (C)
            const float *g = dout + (size_t)n * C;       // (C)
#pragma omp simd
            for (int c = c0; c < c1; c++) drow[c] += g[c];
        }
    }
}

/* x[n, c] += mag * u(key, n * C + c): NEFTune's uniform noise (lt_backend.h) */
void lt_cpu_embed_noise(lt_backend *be, void *x_, int N, int C, float mag, uint64_t key) {
    float *x = (float *)x_; // (N, C)
    int nt = lt_cpu_threads_for(be, (size_t)N * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        float *row = x + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            volatile float d = mag * lt_embed_noise_u(key, (uint64_t)n * C + c); // one rounding, never fused
            row[c] += d;
        }
    }
}
