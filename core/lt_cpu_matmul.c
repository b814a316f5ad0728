/*
 * lt_cpu_matmul.c -- linear layers (CPU, fp32): matmul with optional bias and
 * the LoRA linear, forward and backward. The products go to OpenBLAS sgemm
 * (row-major); bias sums are plain loops in a fixed row order.
 */
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "lt_cpu.h"

/* C (m, n) = alpha * op(A) @ op(B) + beta * C, row-major. Handles empty
 * shapes itself (k = 0 leaves beta * C; beta = 0 writes zeros, never reads C). */
static void gemm(int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda, const float *B,
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

/* out = x @ w^T (+ bias) */
void lt_cpu_matmul_fwd(lt_backend *be, void *out_, const void *x_, const void *w_, const void *bias_, int M, int K,
                       int Nout) {
    float *out = (float *)out_;              // (M, Nout)
    const float *x = (const float *)x_;      // (M, K)
    const float *w = (const float *)w_;      // (Nout, K)
    const float *bias = (const float *)bias_; // (Nout) or NULL
    float beta = 0.0f;
    if (bias) {
        int nt = lt_cpu_threads(be);
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int m = 0; m < M; m++) memcpy(out + (size_t)m * Nout, bias, (size_t)Nout * sizeof(float));
        beta = 1.0f;
    }
    gemm(0, 1, M, Nout, K, 1.0f, x, K, w, K, beta, out, Nout);
}

/* dbias[o] += sum over m of dout[m, o]  (rows in order; threads split columns) */
static void bias_grad(lt_backend *be, float *dbias, const float *dout, int M, int Nout) {
    const int CB = 64;
    int nblocks = (Nout + CB - 1) / CB;
    int nt = lt_cpu_threads(be);
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
    if (dx) gemm(0, 0, M, K, Nout, 1.0f, dout, Nout, w, K, acc_dx ? 1.0f : 0.0f, dx, K); // (M,Nout) @ (Nout,K)
    if (dw) gemm(1, 0, Nout, K, M, 1.0f, dout, Nout, x, K, 1.0f, dw, K);                  // (Nout,M) @ (M,K)
    if (dbias) bias_grad(be, dbias, dout, M, Nout);
}

/* out = x @ w^T (+ bias) + scale * xa @ B^T,  xa = x_lora @ A^T */
void lt_cpu_lora_fwd(lt_backend *be, void *out_, float *xa, const void *x, const void *x_lora_, const void *w,
                     const void *bias, const float *A, const float *B, int M, int K, int Nout, int r, float scale) {
    float *out = (float *)out_;                    // (M, Nout)
    const float *x_lora = (const float *)x_lora_;  // (M, K)
    // A (r, K), B (Nout, r), xa (M, r)
    lt_cpu_matmul_fwd(be, out, x, w, bias, M, K, Nout);
    gemm(0, 1, M, r, K, 1.0f, x_lora, K, A, K, 0.0f, xa, r);         // (M,K) @ (K,r)
    gemm(0, 1, M, Nout, r, scale, xa, r, B, r, 1.0f, out, Nout);     // (M,r) @ (r,Nout)
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
    if (dx) gemm(0, 0, M, K, Nout, 1.0f, dout, Nout, w, K, acc_dx ? 1.0f : 0.0f, dx, K);
    if (dB) gemm(1, 0, Nout, r, M, scale, dout, Nout, xa, r, 1.0f, dB, r); // (Nout,M) @ (M,r)

    int need_g = dA || dx_lora || dx;
    if (!need_g || M <= 0 || r <= 0) {
        if (dx_lora && M > 0 && K > 0) memset(dx_lora, 0, (size_t)M * K * sizeof(float));
        return;
    }
    float *g = malloc((size_t)M * r * sizeof(float)); // (M, r) = dout @ B
    if (!g) {
        lt_cpu_fail(be, LT_ERR_NOMEM, "lora_bwd: out of memory for a (%d, %d) scratch", M, r);
        return;
    }
    gemm(0, 0, M, r, Nout, 1.0f, dout, Nout, B, r, 0.0f, g, r); // (M,Nout) @ (Nout,r)
    if (dx_lora)
        gemm(0, 0, M, K, r, scale, g, r, A, K, 0.0f, dx_lora, K); // (M,r) @ (r,K)
    else if (dx)
        gemm(0, 0, M, K, r, scale, g, r, A, K, 1.0f, dx, K);
    if (dA) gemm(1, 0, r, K, M, scale, g, r, x_lora, K, 1.0f, dA, K); // (r,M) @ (M,K)
    free(g);
}
