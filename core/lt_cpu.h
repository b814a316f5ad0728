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
/* Number of OpenMP threads the ops use (the `threads` given at creation, or
 * the OpenMP default). */
int lt_cpu_threads(const lt_backend *be);
/* Record an op failure; only the first one is kept and be->sync returns it.
 * Safe to call from inside an OpenMP parallel region. */
void lt_cpu_fail(lt_backend *be, lt_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- lt_cpu_embedding.c ---- */
void lt_cpu_embedding_fwd(lt_backend *be, void *out, const void *table, const int32_t *ids, int N, int C);
void lt_cpu_embedding_bwd(lt_backend *be, float *dtable, const void *dout, const int32_t *ids, int N, int C);

/* ---- lt_cpu_matmul.c ---- */
void lt_cpu_matmul_fwd(lt_backend *be, void *out, const void *x, const void *w, const void *bias, int M, int K,
                       int Nout);
void lt_cpu_matmul_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, float *dbias, const void *dout,
                       const void *x, const void *w, int M, int K, int Nout);
void lt_cpu_lora_fwd(lt_backend *be, void *out, float *xa, const void *x, const void *x_lora, const void *w,
                     const void *bias, const float *A, const float *B, int M, int K, int Nout, int r, float scale);
void lt_cpu_lora_bwd(lt_backend *be, void *dx, int acc_dx, void *dx_lora, float *dA, float *dB, const void *dout,
                     const void *x_lora, const void *w, const float *A, const float *B, const float *xa, int M,
                     int K, int Nout, int r, float scale);

/* ---- lt_cpu_norm.c ---- */
void lt_cpu_rmsnorm_fwd(lt_backend *be, void *out, float *rstd, const void *x, const void *w, int R, int C,
                        float eps);
void lt_cpu_rmsnorm_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, const void *dout, const void *x,
                        const void *w, const float *rstd, int R, int C);
void lt_cpu_add_rmsnorm_fwd(lt_backend *be, void *h, void *out, float *rstd, const void *x, const void *r,
                            const void *w, int R, int C, float eps);

/* ---- lt_cpu_rope.c ---- */
void lt_cpu_rope_fwd(lt_backend *be, void *x, const int32_t *pos, const float *inv_freq, int N, int H, int D);
void lt_cpu_rope_bwd(lt_backend *be, void *dx, const int32_t *pos, const float *inv_freq, int N, int H, int D);

/* ---- lt_cpu_attention.c ---- */
void lt_cpu_attention_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                          const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale);
void lt_cpu_attention_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                          const void *k, const void *v, const void *out, const float *lse,
                          const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale);

/* ---- lt_cpu_activation.c ---- */
void lt_cpu_swiglu_fwd(lt_backend *be, void *out, const void *gate, const void *up, size_t n);
void lt_cpu_swiglu_bwd(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate, const void *up,
                       size_t n);
void lt_cpu_add(lt_backend *be, void *out, const void *a, const void *b, size_t n);

/* ---- lt_cpu_loss.c ---- */
void lt_cpu_cross_entropy(lt_backend *be, float *loss, void *dlogits, const void *logits, const int32_t *targets,
                          int N, int V, float grad_scale);

/* ---- lt_cpu_optim.c ---- */
double lt_cpu_sumsq(lt_backend *be, const float *x, size_t n);
void lt_cpu_adamw(lt_backend *be, const struct lt_adamw_tensor *ts, int count, float lr, float beta1, float beta2,
                  float eps, int step, float grad_scale);

#endif
