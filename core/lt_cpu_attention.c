/*
 * lt_cpu_attention.c -- causal, document-separated, grouped-query attention
 * (CPU, fp32), forward and backward.
 *
 * For sequence b, query head h (reading kv head kh = h / (Hq/Hkv)) and query
 * position t, with t0 = doc_start[b*T + t] the start of t's document:
 *   s[j]  = scale * q[b,t,h,:] . k[b,j,kh,:]          for t0 <= j <= t
 *   lse   = log sum_j exp(s[j])                        saved, (B, Hq, T)
 *   p[j]  = exp(s[j] - lse)
 *   out[b,t,h,:] = sum_j p[j] v[b,j,kh,:]
 *
 * Backward (probabilities recomputed from lse), with g = dout[b,t,h,:]:
 *   Dt     = g . out[b,t,h,:]                          (= sum_j p[j] (g . v_j))
 *   ds[j]  = p[j] * (g . v[b,j,kh,:] - Dt)
 *   dq[b,t,h,:]  = scale * sum_j ds[j] k[b,j,kh,:]
 *   dk[b,j,kh,:] = scale * sum over (h in group, t seeing j) ds q[b,t,h,:]
 *   dv[b,j,kh,:] =         sum over (h in group, t seeing j) p  g
 *
 * Soft-capping (attention_cap_*, softcap c > 0): s[j] = c * tanh(s0[j] / c)
 * with s0 = scale * q . k, and in the backward ds0[j] = ds[j] * (1 - tanh^2).
 * The plain ops are the capped ones with c = 0 (no cap, the same code path).
 * Sliding windows arrive as doc_start (the first key a query sees).
 *
 * Blocking. The rows of one sequence are cut into query blocks of at most BQ
 * rows; a block starts at a document start or BQ rows after the previous
 * block's start, so blocks never straddle two documents and sit at the same
 * offsets inside a document wherever the document is packed. A block of rows
 * [i0, i1) sees the keys [j0, i1), j0 = the smallest doc_start of its rows
 * (its document's start). Per block, with Q = q[b, i0:i1, h, :] (bq, D),
 * K = k[b, j0:i1, kh, :] and V = v[b, j0:i1, kh, :] (nk, D):
 *   S  = scale * Q @ K^T                 (bq, nk)   sgemm
 *   P  = softmax of each row over its own keys [doc_start, t], 0 elsewhere
 *   O  = P @ V                           (bq, D)    sgemm
 * and in the backward, with G = dout rows (bq, D):
 *   dP = G @ V^T,  dS = P * (dP - Dt)    (bq, nk)
 *   dQ = scale * dS @ K                  (bq, D)
 *   dK_h[j0:i1] += scale * dS^T @ Q,  dV_h[j0:i1] += P^T @ G      (nk, D)
 * The products are single-threaded sgemm calls with strided rows: K and V are
 * read in place for every query head of the group, never copied.
 *
 * Threads and determinism: one task per (b, h) runs its blocks in order. The
 * backward's per-head dK_h, dV_h go to a scratch (B, Hq, T, D) and are then
 * summed over the group's heads in head order. Every output element has one
 * writer and a fixed order of operations, so the result does not depend on
 * the thread count; and a document packed with others is computed exactly
 * as it would be alone.
 */
#include <math.h>

#include <omp.h>

#include "lt_cpu.h"

enum { BQ = 64 }; // query rows per block

/* End of the query block starting at row i0 (see the header). */
static int block_end(const int32_t *ds, int T, int i0) {
    int i1 = i0 + 1;
    while (i1 < T && i1 - i0 < BQ && ds[i1] != i1) i1++;
    return i1;
}

/* Start of the keys that rows [i0, i1) see: the smallest doc_start. */
static int block_keys(const int32_t *ds, int i0, int i1) {
    int j0 = ds[i0];
    for (int t = i0 + 1; t < i1; t++)
        if (ds[t] < j0) j0 = ds[t];
    return j0;
}

/* 0 <= doc_start[n] <= t everywhere, else records the failure and returns 0 */
static int check_doc_start(lt_backend *be, const char *op, const int32_t *doc_start, int B, int T) {
    for (int n = 0; n < B * T; n++) {
        int t = n % T;
        if (doc_start[n] < 0 || doc_start[n] > t) {
            lt_cpu_fail(be, LT_ERR_RANGE, "%s: doc_start %d at sequence %d position %d (expected 0..%d)", op,
                        (int)doc_start[n], n / T, t, t);
            return 0;
        }
    }
    return 1;
}

/* attention_bwd's contract (lt_backend.h): inside a sequence doc_start never
 * decreases; else records the failure and returns 0 */
static int check_doc_order(lt_backend *be, const int32_t *doc_start, int B, int T) {
    for (int n = 0; n < B * T; n++) {
        int t = n % T;
        if (t > 0 && doc_start[n] < doc_start[n - 1]) {
            lt_cpu_fail(be, LT_ERR_INVALID,
                        "attention_bwd: doc_start decreases at sequence %d position %d (%d after %d); the "
                        "backward needs it non-decreasing inside a sequence (a decode pattern is for "
                        "attention_fwd only)",
                        n / T, t, (int)doc_start[n], (int)doc_start[n - 1]);
            return 0;
        }
    }
    return 1;
}

/* one thread below about a million flops (Q K^T and P V over the causal
 * half): a parallel region costs more than it saves there */
static int threads_for(const lt_backend *be, int B, int T, int Hq, int D) {
    double flops = 4.0 * B * Hq * ((double)T * (T + 1) / 2) * D;
    return flops < 1e6 ? 1 : lt_cpu_threads(be);
}

static void fill_nan(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

void lt_cpu_attention_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                          const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale) {
    lt_cpu_attention_cap_fwd(be, out, lse, q, k, v, doc_start, B, T, Hq, Hkv, D, scale, 0.0f);
}

void lt_cpu_attention_cap_fwd(lt_backend *be, void *out_, float *lse, const void *q_, const void *k_,
                              const void *v_, const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D,
                              float scale, float softcap) {
    float *out = (float *)out_;         // (B, T, Hq, D)
    const float *q = (const float *)q_; // (B, T, Hq, D)
    const float *k = (const float *)k_; // (B, T, Hkv, D)
    const float *v = (const float *)v_; // (B, T, Hkv, D)
    // lse (B, Hq, T), doc_start (B, T)
    size_t nq = (size_t)B * T * Hq * D;
    if (B <= 0 || T <= 0) return;
    if (!check_doc_start(be, "attention_fwd", doc_start, B, T)) {
        fill_nan(out, nq), fill_nan(lse, (size_t)B * Hq * T);
        return;
    }
    int group = Hq / Hkv, ldq = Hq * D, ldk = Hkv * D; // row strides of q / out and of k / v
    int nt = threads_for(be, B, T, Hq, D);
    float *scratch = lt_cpu_scratch(be, (size_t)nt * BQ * T); // per thread: S (BQ, T)
    if (!scratch) {
        lt_cpu_fail(be, LT_ERR_NOMEM, "attention_fwd: out of memory for a (%d, %d, %d) scratch", nt, BQ, T);
        fill_nan(out, nq), fill_nan(lse, (size_t)B * Hq * T);
        return;
    }
#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++) {
            float *S = scratch + (size_t)omp_get_thread_num() * BQ * T; // (BQ, T)
            const int32_t *ds = doc_start + (size_t)b * T;              // (T)
            size_t qoff = (size_t)b * T * ldq + (size_t)h * D, koff = (size_t)b * T * ldk + (size_t)(h / group) * D;
            const float *qh = q + qoff;                 // (T, D), row stride ldq
            float *oh = out + qoff;                     // (T, D), row stride ldq
            const float *kh = k + koff, *vh = v + koff; // (T, D), row stride ldk
            float *lh = lse + ((size_t)b * Hq + h) * T; // (T)
            for (int i0 = 0; i0 < T;) {
                int i1 = block_end(ds, T, i0), j0 = block_keys(ds, i0, i1);
                int bq = i1 - i0, nk = i1 - j0;
                // S (bq, nk) = scale * Q (bq, D) @ K^T (D, nk)
                lt_cpu_sgemm(0, 1, bq, nk, D, scale, qh + (size_t)i0 * ldq, ldq, kh + (size_t)j0 * ldk, ldk, 0.0f,
                             S, nk);
                // row r (query t) keeps its keys j = ds[t] .. t as probabilities
                for (int r = 0; r < bq; r++) {
                    int t = i0 + r, c0 = ds[t] - j0, c1 = t - j0; // columns of its keys, inclusive
                    float *s = S + (size_t)r * nk;
                    if (softcap > 0)
                        for (int c = c0; c <= c1; c++) s[c] = lt_softcap(s[c], softcap);
                    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
                    for (int c = c0; c <= c1; c++) mx = s[c] > mx ? s[c] : mx;
#pragma omp simd
                    for (int c = c0; c <= c1; c++) s[c] = lt_cpu_expf(s[c] - mx);
                    float sum = lt_cpu_sum(s + c0, c1 - c0 + 1), inv = 1.0f / sum;
                    for (int c = 0; c < c0; c++) s[c] = 0.0f;
#pragma omp simd
                    for (int c = c0; c <= c1; c++) s[c] *= inv;
                    for (int c = c1 + 1; c < nk; c++) s[c] = 0.0f;
                    lh[t] = mx + logf(sum);
                }
                // O (bq, D) = P (bq, nk) @ V (nk, D)
                lt_cpu_sgemm(0, 0, bq, D, nk, 1.0f, S, nk, vh + (size_t)j0 * ldk, ldk, 0.0f, oh + (size_t)i0 * ldq,
                             ldq);
                i0 = i1;
            }
        }
}

void lt_cpu_attention_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                          const void *k, const void *v, const void *out, const float *lse,
                          const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale) {
    lt_cpu_attention_cap_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, doc_start, B, T, Hq, Hkv, D, scale, 0.0f);
}

void lt_cpu_attention_cap_bwd(lt_backend *be, void *dq_, void *dk_, void *dv_, const void *dout_, const void *q_,
                              const void *k_, const void *v_, const void *out_, const float *lse,
                              const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale,
                              float softcap) {
    float *dq = (float *)dq_;                 // (B, T, Hq, D)
    float *dk = (float *)dk_;                 // (B, T, Hkv, D)
    float *dv = (float *)dv_;                 // (B, T, Hkv, D)
    const float *dout = (const float *)dout_; // (B, T, Hq, D)
    const float *q = (const float *)q_;       // (B, T, Hq, D)
    const float *k = (const float *)k_;       // (B, T, Hkv, D)
    const float *v = (const float *)v_;       // (B, T, Hkv, D)
    const float *out = (const float *)out_;   // (B, T, Hq, D)
    // lse (B, Hq, T), doc_start (B, T)
    if (B <= 0 || T <= 0) return;
    if (!check_doc_start(be, "attention_bwd", doc_start, B, T) || !check_doc_order(be, doc_start, B, T)) {
        fill_nan(dq, (size_t)B * T * Hq * D), fill_nan(dk, (size_t)B * T * Hkv * D), fill_nan(dv, (size_t)B * T * Hkv * D);
        return;
    }
    int group = Hq / Hkv, ldq = Hq * D, ldk = Hkv * D;
    int nt = threads_for(be, B, T, Hq, D);
    size_t per_thread = (size_t)2 * BQ * T + T; // P, dS (BQ, T) and Dt (T)
    size_t nh = (size_t)B * Hq * T * D;         // dK_h, dV_h (B, Hq, T, D)
    float *scratch = lt_cpu_scratch(be, (size_t)nt * per_thread + 2 * nh);
    if (!scratch) {
        lt_cpu_fail(be, LT_ERR_NOMEM, "attention_bwd: out of memory for a (%d, %d, %d) scratch", B, Hq, T);
        return;
    }
    float *dkh_all = scratch + (size_t)nt * per_thread, *dvh_all = dkh_all + nh;

#pragma omp parallel for num_threads(nt) collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++) {
            float *P = scratch + (size_t)omp_get_thread_num() * per_thread; // (BQ, T)
            float *dS = P + (size_t)BQ * T;                                 // (BQ, T)
            float *Dt = dS + (size_t)BQ * T;                                // (T)
            const int32_t *ds = doc_start + (size_t)b * T;                  // (T)
            size_t qoff = (size_t)b * T * ldq + (size_t)h * D, koff = (size_t)b * T * ldk + (size_t)(h / group) * D;
            const float *qh = q + qoff, *gh = dout + qoff, *oh = out + qoff; // (T, D), row stride ldq
            float *dqh = dq + qoff;                                          // (T, D), row stride ldq
            const float *kh = k + koff, *vh = v + koff;                      // (T, D), row stride ldk
            const float *lh = lse + ((size_t)b * Hq + h) * T;                // (T)
            float *dkh = dkh_all + ((size_t)b * Hq + h) * T * D;             // (T, D): this head's part of dK
            float *dvh = dvh_all + ((size_t)b * Hq + h) * T * D;             // (T, D): this head's part of dV
            for (int t = 0; t < T; t++) {
                const float *g = gh + (size_t)t * ldq, *o = oh + (size_t)t * ldq;
                float s = 0.0f;
                for (int d = 0; d < D; d++) s += g[d] * o[d];
                Dt[t] = s;
            }
            for (size_t i = 0; i < (size_t)T * D; i++) dkh[i] = 0.0f, dvh[i] = 0.0f;
            for (int i0 = 0; i0 < T;) {
                int i1 = block_end(ds, T, i0), j0 = block_keys(ds, i0, i1);
                int bq = i1 - i0, nk = i1 - j0;
                const float *Q = qh + (size_t)i0 * ldq, *G = gh + (size_t)i0 * ldq; // (bq, D)
                const float *K = kh + (size_t)j0 * ldk, *V = vh + (size_t)j0 * ldk; // (nk, D)
                // P (bq, nk) = exp(scale * Q @ K^T - lse) on each row's keys, 0 elsewhere
                lt_cpu_sgemm(0, 1, bq, nk, D, scale, Q, ldq, K, ldk, 0.0f, P, nk);
                // dP (bq, nk) = G (bq, D) @ V^T (D, nk), into dS
                lt_cpu_sgemm(0, 1, bq, nk, D, 1.0f, G, ldq, V, ldk, 0.0f, dS, nk);
                for (int r = 0; r < bq; r++) {
                    int t = i0 + r, c0 = ds[t] - j0, c1 = t - j0;
                    float *p = P + (size_t)r * nk, *dsr = dS + (size_t)r * nk;
                    float l = lh[t], Dv = Dt[t];
                    for (int c = 0; c < c0; c++) p[c] = 0.0f, dsr[c] = 0.0f;
                    if (softcap > 0) {
                        for (int c = c0; c <= c1; c++) {
                            float th = tanhf(p[c] / softcap);
                            p[c] = lt_cpu_expf(softcap * th - l);
                            dsr[c] = p[c] * (dsr[c] - Dv) * (1.0f - th * th);
                        }
                    } else {
#pragma omp simd
                        for (int c = c0; c <= c1; c++) {
                            p[c] = lt_cpu_expf(p[c] - l);
                            dsr[c] = p[c] * (dsr[c] - Dv);
                        }
                    }
                    for (int c = c1 + 1; c < nk; c++) p[c] = 0.0f, dsr[c] = 0.0f;
                }
                // dQ (bq, D) = scale * dS (bq, nk) @ K (nk, D)
                lt_cpu_sgemm(0, 0, bq, D, nk, scale, dS, nk, K, ldk, 0.0f, dqh + (size_t)i0 * ldq, ldq);
                // dK_h[j0:i1] (nk, D) += scale * dS^T (nk, bq) @ Q (bq, D)
                lt_cpu_sgemm(1, 0, nk, D, bq, scale, dS, nk, Q, ldq, 1.0f, dkh + (size_t)j0 * D, D);
                // dV_h[j0:i1] (nk, D) += P^T (nk, bq) @ G (bq, D)
                lt_cpu_sgemm(1, 0, nk, D, bq, 1.0f, P, nk, G, ldq, 1.0f, dvh + (size_t)j0 * D, D);
                i0 = i1;
            }
        }

    // dk[b, j, kh, :] = sum over the group's heads h (in order) of dK_h[b, h, j, :]; dv alike
    int nt2 = lt_cpu_threads_for(be, (size_t)B * T * Hq * D);
#pragma omp parallel for num_threads(nt2) collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int j = 0; j < T; j++)
            for (int kh = 0; kh < Hkv; kh++) {
                float *dkj = dk + ((size_t)b * T + j) * ldk + (size_t)kh * D; // (D)
                float *dvj = dv + ((size_t)b * T + j) * ldk + (size_t)kh * D; // (D)
                int h0 = kh * group;
                const float *a = dkh_all + (((size_t)b * Hq + h0) * T + j) * D;
                const float *c = dvh_all + (((size_t)b * Hq + h0) * T + j) * D;
                for (int d = 0; d < D; d++) dkj[d] = a[d], dvj[d] = c[d];
                for (int h = h0 + 1; h < h0 + group; h++) {
                    a = dkh_all + (((size_t)b * Hq + h) * T + j) * D;
                    c = dvh_all + (((size_t)b * Hq + h) * T + j) * D;
                    for (int d = 0; d < D; d++) dkj[d] += a[d], dvj[d] += c[d];
                }
            }
}
