/*
 * lt_cpu.h -- internal to core/: the CPU backend's op functions, one group per
 * file (lt_cpu_<family>.c), and the small helpers they share. The public entry
 * point is lt_cpu_backend_create in lt_backend.h; nothing here is exported
 * beyond core/.
 *
 * Every buffer is host memory. act and param buffers are float (act_dtype =
 * param_dtype = LT_F32), so the op functions cast their void pointers to
 * float. Signatures and semantics are exactly those of the op table in
 * lt_backend.h (read the comments there).
 */
#ifndef LT_CPU_H
#define LT_CPU_H

#include "lt_backend.h"

/* ---- shared helpers (lt_cpu_backend.c) ---- */
/* Threading: the backend's OpenMP threads are the only worker threads.
 * OpenBLAS is set to one thread at creation (its own pool would compete with
 * OpenMP's for the cores), and the BLAS products are split into panels that
 * the OpenMP threads share (lt_cpu_sgemm_par). Every op divides its work into
 * pieces that depend on the shapes only, never on the thread count, so the
 * results are bitwise the same for any number of threads. */

/* Number of OpenMP threads the ops use (the `threads` given at creation, or
 * the OpenMP default at creation). */
int lt_cpu_threads(const lt_backend *be);
/* A float buffer of at least n elements owned by the backend, kept between
 * calls (so large scratch is not mapped and faulted in again by every op);
 * NULL if out of memory. Valid until the next call. Ops of one backend run one
 * at a time, and an op takes it once, outside its parallel regions. */
float *lt_cpu_scratch(lt_backend *be, size_t n);
/* Threads for a loop of `work` elementwise steps: 1 below LT_CPU_PAR_MIN (a
 * parallel region costs more than it saves there), else lt_cpu_threads. */
#define LT_CPU_PAR_MIN 16384
int lt_cpu_threads_for(const lt_backend *be, size_t work);
/* Record an op failure; only the first one is kept and be->sync returns it.
 * Safe to call from inside an OpenMP parallel region. */
void lt_cpu_fail(lt_backend *be, lt_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* exp(x) in fp32 as plain arithmetic, so that the loops calling it vectorize
 * (libm's expf is a call GCC cannot vectorize without -ffast-math). Within
 * 1.5 ulp of the exact value for normal results (tests/test_cpu_ops.c checks
 * it over the whole range); exp(+inf) = +inf, exp(-inf) = 0, NaN stays NaN.
 *   n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2]   (ln 2 in two
 *   parts, so n * LN2_HI is exact), exp(r) by its Taylor series to r^7
 *   (truncation error < 6e-9), times 2^n as two powers of two (2^n1 * 2^n2,
 *   both normal floats) so that results down to the subnormals are right.
 * The loops over it compile with -fno-trapping-math (core/CMakeLists.txt):
 * with GCC's default, the comparisons below keep a loop from vectorizing. */
static inline float lt_cpu_expf(float x) {
    const float LOG2E = 1.44269504f, LN2_HI = 0.693145752f, LN2_LO = 1.42860677e-6f;
    const float ROUND = 12582912.0f; // 1.5 * 2^23: x + ROUND - ROUND rounds x to an integer
    x = x > 88.8f ? 88.8f : x;       // exp overflows above 88.73, underflows to 0 below -103.98
    x = x < -104.0f ? -104.0f : x;   // (a NaN passes both)
    float n = (x * LOG2E + ROUND) - ROUND;
    float r = (x - n * LN2_HI) - n * LN2_LO;
    float p = 1.0f + r * (1.0f + r * (1.0f / 2 + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 +
                                                     r * (1.0f / 720 + r * (1.0f / 5040)))))));
    int32_t ni = (int32_t)(n == n ? n : 0.0f), n1 = ni / 2, n2 = ni - n1; // (a NaN x stays in p)
    union { uint32_t u; float f; } s1 = {(uint32_t)(n1 + 127) << 23}, s2 = {(uint32_t)(n2 + 127) << 23};
    return p * s1.f * s2.f;
}

/* sum of x[0..n) in 8 interleaved partial sums (x[i] goes to sum i % 8),
 * added up in order at the end: vectorizes, and the order is fixed by the
 * code, not by the compiler's vector width or the data's alignment. */
static inline float lt_cpu_sum(const float *x, int n) {
    float part[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
#pragma omp simd
        for (int u = 0; u < 8; u++) part[u] += x[i + u];
    for (int u = 0; i + u < n; u++) part[u] += x[i + u];
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

/* ---- lt_cpu_embedding.c ---- */
void lt_cpu_embedding_fwd(lt_backend *be, void *out, const void *table, const int32_t *ids, int N, int C);
void lt_cpu_embedding_bwd(lt_backend *be, float *dtable, const void *dout, const int32_t *ids, int N, int C);
void lt_cpu_embed_noise(lt_backend *be, void *x, int N, int C, float mag, uint64_t key);

/* ---- lt_cpu_matmul.c ---- */
/* C (m, n) = alpha * op(A) @ op(B) + beta * C, row-major (op(A) (m, k),
 * op(B) (k, n)), on the calling thread. Handles empty shapes itself (k = 0
 * leaves beta * C; beta = 0 writes C without reading it). */
void lt_cpu_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda, const float *B,
                  int ldb, float beta, float *C, int ldc);
/* The same, with C split into panels of rows (or columns) whose sizes depend
 * only on (m, n, k); the backend's threads share the panels. */
void lt_cpu_sgemm_par(lt_backend *be, int transA, int transB, int m, int n, int k, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc);
void lt_cpu_matmul_fwd(lt_backend *be, void *out, const void *x, const void *w, const void *bias, int M, int K,
                       int Nout);
void lt_cpu_matmul_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, float *dbias, const void *dout,
                       const void *x, const void *w, int M, int K, int Nout);
void lt_cpu_lora_fwd(lt_backend *be, void *out, float *xa, const void *x, const void *x_lora, const void *w,
                     const void *bias, const float *A, const float *B, int M, int K, int Nout, int r, float scale);
void lt_cpu_lora_bwd(lt_backend *be, void *dx, int acc_dx, void *dx_lora, float *dA, float *dB, const void *dout,
                     const void *x_lora, const void *w, const float *A, const float *B, const float *xa, int M,
                     int K, int Nout, int r, float scale);

/* ---- lt_cpu_nf4.c ---- */
void lt_cpu_nf4_dequant(lt_backend *be, void *w, const void *wq, size_t n);
void lt_cpu_nf4_matmul_fwd(lt_backend *be, void *out, const void *x, const void *wq, const void *bias, int M, int K,
                           int Nout);
void lt_cpu_nf4_matmul_bwd(lt_backend *be, void *dx, int acc_dx, const void *dout, const void *wq, int M, int K,
                           int Nout);

/* ---- lt_cpu_norm.c ---- */
void lt_cpu_rmsnorm_fwd(lt_backend *be, void *out, float *rstd, const void *x, const void *w, int R, int C,
                        float eps);
void lt_cpu_rmsnorm_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, const void *dout, const void *x,
                        const void *w, const float *rstd, int R, int C);
void lt_cpu_add_rmsnorm_fwd(lt_backend *be, void *h, void *out, float *rstd, const void *x, const void *r,
                            const void *w, int R, int C, float eps);
void lt_cpu_rmsnorm_off_fwd(lt_backend *be, void *out, float *rstd, const void *x, const void *w, float w_off, int R,
                            int C, float eps);
void lt_cpu_rmsnorm_off_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, const void *dout, const void *x,
                            const void *w, float w_off, const float *rstd, int R, int C);
void lt_cpu_add_rmsnorm_off_fwd(lt_backend *be, void *h, void *out, float *rstd, const void *x, const void *r,
                                const void *w, float w_off, int R, int C, float eps);

/* ---- lt_cpu_rope.c ---- */
void lt_cpu_rope_fwd(lt_backend *be, void *x, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                     float scale);
void lt_cpu_rope_bwd(lt_backend *be, void *dx, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                     float scale);

/* ---- lt_cpu_attention.c ---- */
void lt_cpu_attention_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                          const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale);
void lt_cpu_attention_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                          const void *k, const void *v, const void *out, const float *lse,
                          const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale);
void lt_cpu_attention_cap_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                              const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale,
                              float softcap);
void lt_cpu_attention_cap_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                              const void *k, const void *v, const void *out, const float *lse,
                              const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale,
                              float softcap);

/* ---- lt_cpu_activation.c ---- */
void lt_cpu_swiglu_fwd(lt_backend *be, void *out, const void *gate, const void *up, size_t n);
void lt_cpu_swiglu_bwd(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate, const void *up,
                       size_t n);
void lt_cpu_add(lt_backend *be, void *out, const void *a, const void *b, size_t n);
void lt_cpu_geglu_fwd(lt_backend *be, void *out, const void *gate, const void *up, size_t n);
void lt_cpu_geglu_bwd(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate, const void *up,
                      size_t n);
void lt_cpu_scale(lt_backend *be, void *x, size_t n, float s);

/* ---- lt_cpu_loss.c ---- */
void lt_cpu_cross_entropy(lt_backend *be, float *loss, void *dlogits, const void *logits, const int32_t *targets,
                          int N, int V, float grad_scale);
void lt_cpu_cross_entropy_cap(lt_backend *be, float *loss, void *dlogits, const void *logits,
                              const int32_t *targets, int N, int V, float grad_scale, float softcap);

/* ---- lt_cpu_optim.c ---- */
double lt_cpu_sumsq(lt_backend *be, const float *x, size_t n);
void lt_cpu_sumsq_units(lt_backend *be, const float *x, size_t n, size_t unit, double *out);
void lt_cpu_adamw(lt_backend *be, const struct lt_adamw_tensor *ts, int count, float lr, float beta1, float beta2,
                  float eps, int step, float grad_scale);

#endif
