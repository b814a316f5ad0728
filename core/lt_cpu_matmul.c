/*
 * lt_cpu_matmul.c -- linear layers (CPU, fp32): matmul with optional bias and
 * the LoRA linear, forward and backward. The products go to OpenBLAS sgemm
 * (row-major, single-threaded), cut into panels of the output that the
 * OpenMP threads share (lt_cpu_sgemm_par); bias sums are plain loops in a
 * fixed row order.
 */
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "lt_cpu.h"

void lt_cpu_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda, const float *B,
                  int ldb, float beta, float *C, int ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, m, n, k, alpha,
                A, lda, B, ldb, beta, C, ldc);
}

/* Panels: the longer side of C is cut into pieces of a multiple of 16 rows
 * (or columns), at least MIN_WIDTH wide (sgemm repacks the other operand for
 * every panel), about PANEL_FLOPS of work each, at most MAX_PANELS. Each
 * element of C is computed by exactly one sgemm call on one panel, and the
 * panels depend only on (m, n, k): the result is the same for any number of
 * threads. */
enum { PANEL_FLOPS = 1 << 23, MAX_PANELS = 16, MIN_WIDTH = 64, PANEL_ALIGN = 16 };

void lt_cpu_sgemm_par(lt_backend *be, int transA, int transB, int m, int n, int k, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (m <= 0 || n <= 0) return;
    int by_rows = m >= n;
    int len = by_rows ? m : n; // the side that is cut
    double flops = 2.0 * m * n * (k > 0 ? k : 1);
    int np = (int)(flops / PANEL_FLOPS);
    if (np > MAX_PANELS) np = MAX_PANELS;
    if (np > len / MIN_WIDTH) np = len / MIN_WIDTH;
    if (np <= 1) {
        lt_cpu_sgemm(transA, transB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int width = (len + np - 1) / np;
    width = (width + PANEL_ALIGN - 1) / PANEL_ALIGN * PANEL_ALIGN;
    np = (len + width - 1) / width;
    int nt = lt_cpu_threads(be);
#pragma omp parallel for num_threads(nt < np ? nt : np) schedule(dynamic, 1)
    for (int p = 0; p < np; p++) {
        int lo = p * width, w = len - lo < width ? len - lo : width;
        if (by_rows) { // rows lo.. of op(A) and of C
            const float *Ap = transA ? A + lo : A + (size_t)lo * lda;
            lt_cpu_sgemm(transA, transB, w, n, k, alpha, Ap, lda, B, ldb, beta, C + (size_t)lo * ldc, ldc);
        } else { // columns lo.. of op(B) and of C
            const float *Bp = transB ? B + (size_t)lo * ldb : B + lo;
            lt_cpu_sgemm(transA, transB, m, w, k, alpha, A, lda, Bp, ldb, beta, C + lo, ldc);
        }
    }
}

/* out = x @ w^T (+ bias) */
void lt_cpu_matmul_fwd(lt_backend *be, void *out_, const void *x_, const void *w_, const void *bias_, int M, int K,
                       int Nout) {
    float *out = (float *)out_;              // (M, Nout)
    const float *x = (const float *)x_;      // (M, K)
    const float *w = (const float *)w_;      // (Nout, K)
    const float *bias = (const float *)bias_; // (Nout) or NULL
    float beta = 0.0f;
    if (bias) {
        int nt = lt_cpu_threads_for(be, (size_t)M * Nout);
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int m = 0; m < M; m++) memcpy(out + (size_t)m * Nout, bias, (size_t)Nout * sizeof(float));
        beta = 1.0f;
    }
    lt_cpu_sgemm_par(be, 0, 1, M, Nout, K, 1.0f, x, K, w, K, beta, out, Nout);
}

/* dbias[o] += sum over m of dout[m, o]  (rows in order; threads split columns) */
static void bias_grad(lt_backend *be, float *dbias, const float *dout, int M, int Nout) {
    const int CB = 64;
    int nblocks = (Nout + CB - 1) / CB;
    int nt = lt_cpu_threads_for(be, (size_t)M * Nout);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int o0 = blk * CB, o1 = o0 + CB < Nout ? o0 + CB : Nout;
        float acc[64];
        for (int o = o0; o < o1; o++) acc[o - o0] = 0.0f;
        for (int m = 0; m < M; m++) {
            const float *g = dout + (size_t)m * Nout;
            for (int o = o0; o < o1; o++) acc[o - o0] += g[o];
        }
        for (int o = o0; o < o1; o++) dbias[o] += acc[o - o0];
    }
}

/* dx (= or +=) dout @ w;  dw += dout^T @ x;  dbias += colsum(dout) */
void lt_cpu_matmul_bwd(lt_backend *be, void *dx_, int acc_dx, float *dw, float *dbias, const void *dout_,
                       const void *x_, const void *w_, int M, int K, int Nout) {
    float *dx = (float *)dx_;                // (M, K) or NULL
    const float *dout = (const float *)dout_; // (M, Nout)
    const float *x = (const float *)x_;      // (M, K)
    const float *w = (const float *)w_;      // (Nout, K)
    if (dx) // (M,Nout) @ (Nout,K)
        lt_cpu_sgemm_par(be, 0, 0, M, K, Nout, 1.0f, dout, Nout, w, K, acc_dx ? 1.0f : 0.0f, dx, K);
    if (dw) lt_cpu_sgemm_par(be, 1, 0, Nout, K, M, 1.0f, dout, Nout, x, K, 1.0f, dw, K); // (Nout,M) @ (M,K)
    if (dbias) bias_grad(be, dbias, dout, M, Nout);
}

/* out = x @ w^T (+ bias) + scale * xa @ B^T,  xa = x_lora @ A^T */
void lt_cpu_lora_fwd(lt_backend *be, void *out_, float *xa, const void *x, const void *x_lora_, const void *w,
                     const void *bias, const float *A, const float *B, int M, int K, int Nout, int r, float scale) {
    float *out = (float *)out_;                    // (M, Nout)
    const float *x_lora = (const float *)x_lora_;  // (M, K)
    // A (r, K), B (Nout, r), xa (M, r)
    lt_cpu_matmul_fwd(be, out, x, w, bias, M, K, Nout);
    lt_cpu_sgemm_par(be, 0, 1, M, r, K, 1.0f, x_lora, K, A, K, 0.0f, xa, r);         // (M,K) @ (K,r)
    lt_cpu_sgemm_par(be, 0, 1, M, Nout, r, scale, xa, r, B, r, 1.0f, out, Nout);     // (M,r) @ (r,Nout)
}

/* dx (= or +=) dout @ w  [+ scale * (dout @ B) @ A unless dx_lora takes it]
 * dx_lora = scale * (dout @ B) @ A;  dA += scale * (dout @ B)^T @ x_lora;
 * dB += scale * dout^T @ xa */
void lt_cpu_lora_bwd(lt_backend *be, void *dx_, int acc_dx, void *dx_lora_, float *dA, float *dB, const void *dout_,
                     const void *x_lora_, const void *w_, const float *A, const float *B, const float *xa, int M,
                     int K, int Nout, int r, float scale) {
    float *dx = (float *)dx_;                      // (M, K) or NULL
    float *dx_lora = (float *)dx_lora_;            // (M, K) or NULL
    const float *dout = (const float *)dout_;      // (M, Nout)
    const float *x_lora = (const float *)x_lora_;  // (M, K)
    const float *w = (const float *)w_;            // (Nout, K)
    // A (r, K), B (Nout, r), xa (M, r)
    if (dx) lt_cpu_sgemm_par(be, 0, 0, M, K, Nout, 1.0f, dout, Nout, w, K, acc_dx ? 1.0f : 0.0f, dx, K);
    if (dB) lt_cpu_sgemm_par(be, 1, 0, Nout, r, M, scale, dout, Nout, xa, r, 1.0f, dB, r); // (Nout,M) @ (M,r)

    int need_g = dA || dx_lora || dx;
    if (!need_g || M <= 0 || r <= 0) {
        if (dx_lora && M > 0 && K > 0) memset(dx_lora, 0, (size_t)M * K * sizeof(float));
        return;
    }
    float *g = lt_cpu_scratch(be, (size_t)M * r); // (M, r) = dout @ B
    if (!g) {
        lt_cpu_fail(be, LT_ERR_NOMEM, "lora_bwd: out of memory for a (%d, %d) scratch", M, r);
        return;
    }
    lt_cpu_sgemm_par(be, 0, 0, M, r, Nout, 1.0f, dout, Nout, B, r, 0.0f, g, r); // (M,Nout) @ (Nout,r)
    if (dx_lora)
        lt_cpu_sgemm_par(be, 0, 0, M, K, r, scale, g, r, A, K, 0.0f, dx_lora, K); // (M,r) @ (r,K)
    else if (dx)
        lt_cpu_sgemm_par(be, 0, 0, M, K, r, scale, g, r, A, K, 1.0f, dx, K);
    if (dA) lt_cpu_sgemm_par(be, 1, 0, r, K, M, scale, g, r, x_lora, K, 1.0f, dA, K); // (r,M) @ (M,K)
}
