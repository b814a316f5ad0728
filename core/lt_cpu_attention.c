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
 * K and V are indexed per group, never copied per query head.
 *
 * Backward (probabilities recomputed from lse), with g = dout[b,t,h,:]:
 *   Dt     = g . out[b,t,h,:]                          (= sum_j p[j] (g . v_j))
 *   ds[j]  = p[j] * (g . v[b,j,kh,:] - Dt)
 *   dq[b,t,h,:]  = scale * sum_j ds[j] k[b,j,kh,:]
 *   dk[b,j,kh,:] = scale * sum over (h in group, t seeing j) ds q[b,t,h,:]
 *   dv[b,j,kh,:] =         sum over (h in group, t seeing j) p  g
 * dq is computed per query row, dk/dv per key row, so every output has one
 * owner: no atomics, and the result does not depend on the thread count.
 */
#include <math.h>
#include <stdlib.h>

#include "lt_cpu.h"

/* a . b; the simd reduction splits the sum into vector lanes (a fixed order
 * for a given build, independent of the thread count) */
static float dot(const float *a, const float *b, int D) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int d = 0; d < D; d++) s += a[d] * b[d];
    return s;
}

void lt_cpu_attention_fwd(lt_backend *be, void *out_, float *lse, const void *q_, const void *k_, const void *v_,
                          const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale) {
    float *out = (float *)out_;         // (B, T, Hq, D)
    const float *q = (const float *)q_; // (B, T, Hq, D)
    const float *k = (const float *)k_; // (B, T, Hkv, D)
    const float *v = (const float *)v_; // (B, T, Hkv, D)
    // lse (B, Hq, T), doc_start (B, T)
    int group = Hq / Hkv;
    int nt = lt_cpu_threads(be);
#pragma omp parallel num_threads(nt)
    {
        float *s = malloc((size_t)(T > 0 ? T : 1) * sizeof(float)); // scores of one query row
        if (!s) lt_cpu_fail(be, LT_ERR_NOMEM, "attention_fwd: out of memory for a (%d) scratch", T);
#pragma omp for collapse(3) schedule(dynamic, 8)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < Hq; h++)
                for (int t = 0; t < T; t++) {
                    int kh = h / group;
                    int t0 = doc_start[b * T + t];
                    const float *qt = q + (((size_t)b * T + t) * Hq + h) * D; // (D)
                    float *ot = out + (((size_t)b * T + t) * Hq + h) * D;    // (D)
                    float *lse_t = lse + ((size_t)b * Hq + h) * T + t;
                    if (!s || t0 < 0 || t0 > t) {
                        if (s)
                            lt_cpu_fail(be, LT_ERR_RANGE,
                                        "attention_fwd: doc_start %d at sequence %d position %d (expected 0..%d)",
                                        t0, b, t, t);
                        for (int d = 0; d < D; d++) ot[d] = NAN;
                        *lse_t = NAN;
                        continue;
                    }
                    // s[j] = scale * q_t . k_j, running max
                    float mx = -INFINITY;
                    for (int j = t0; j <= t; j++) {
                        const float *kj = k + (((size_t)b * T + j) * Hkv + kh) * D;
                        s[j] = scale * dot(qt, kj, D);
                        if (s[j] > mx) mx = s[j];
                    }
                    // p[j] = exp(s[j] - mx) / sum
                    float sum = 0.0f;
                    for (int j = t0; j <= t; j++) {
                        s[j] = expf(s[j] - mx);
                        sum += s[j];
                    }
                    float inv = 1.0f / sum;
                    for (int d = 0; d < D; d++) ot[d] = 0.0f;
                    for (int j = t0; j <= t; j++) {
                        const float *vj = v + (((size_t)b * T + j) * Hkv + kh) * D;
                        float p = s[j] * inv;
                        for (int d = 0; d < D; d++) ot[d] += p * vj[d];
                    }
                    *lse_t = mx + logf(sum);
                }
        free(s);
    }
}

void lt_cpu_attention_bwd(lt_backend *be, void *dq_, void *dk_, void *dv_, const void *dout_, const void *q_,
                          const void *k_, const void *v_, const void *out_, const float *lse,
                          const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale) {
    float *dq = (float *)dq_;                 // (B, T, Hq, D)
    float *dk = (float *)dk_;                 // (B, T, Hkv, D)
    float *dv = (float *)dv_;                 // (B, T, Hkv, D)
    const float *dout = (const float *)dout_; // (B, T, Hq, D)
    const float *q = (const float *)q_;       // (B, T, Hq, D)
    const float *k = (const float *)k_;       // (B, T, Hkv, D)
    const float *v = (const float *)v_;       // (B, T, Hkv, D)
    const float *out = (const float *)out_;   // (B, T, Hq, D)
    // lse (B, Hq, T), doc_start (B, T)
    int group = Hq / Hkv;
    int nt = lt_cpu_threads(be);
    for (int n = 0; n < B * T; n++) {
        int t = n % T;
        if (doc_start[n] < 0 || doc_start[n] > t) {
            lt_cpu_fail(be, LT_ERR_RANGE, "attention_bwd: doc_start %d at sequence %d position %d (expected 0..%d)",
                        (int)doc_start[n], n / T, t, t);
            return;
        }
    }
    float *Dt = malloc(((size_t)B * Hq * T > 0 ? (size_t)B * Hq * T : 1) * sizeof(float)); // (B, Hq, T)
    if (!Dt) {
        lt_cpu_fail(be, LT_ERR_NOMEM, "attention_bwd: out of memory for a (%d, %d, %d) scratch", B, Hq, T);
        return;
    }

    // pass 1, per query row: Dt and dq
#pragma omp parallel for num_threads(nt) collapse(3) schedule(dynamic, 8)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++)
            for (int t = 0; t < T; t++) {
                int kh = h / group;
                int t0 = doc_start[b * T + t];
                size_t row = ((size_t)b * T + t) * Hq + h;
                const float *qt = q + row * D, *gt = dout + row * D;
                float *dqt = dq + row * D;
                float l = lse[((size_t)b * Hq + h) * T + t];
                float Dv = dot(gt, out + row * D, D);
                Dt[((size_t)b * Hq + h) * T + t] = Dv;
                for (int d = 0; d < D; d++) dqt[d] = 0.0f;
                for (int j = t0; j <= t; j++) {
                    const float *kj = k + (((size_t)b * T + j) * Hkv + kh) * D;
                    const float *vj = v + (((size_t)b * T + j) * Hkv + kh) * D;
                    float p = expf(scale * dot(qt, kj, D) - l);
                    float ds = p * (dot(gt, vj, D) - Dv);
                    for (int d = 0; d < D; d++) dqt[d] += scale * ds * kj[d];
                }
            }

    // pass 2, per key row j of kv head kh: every (query head in the group,
    // query t >= j of the same document) that saw it
#pragma omp parallel for num_threads(nt) collapse(3) schedule(dynamic, 8)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < Hkv; kh++)
            for (int j = 0; j < T; j++) {
                size_t krow = ((size_t)b * T + j) * Hkv + kh;
                const float *kj = k + krow * D, *vj = v + krow * D;
                float *dkj = dk + krow * D, *dvj = dv + krow * D;
                for (int d = 0; d < D; d++) dkj[d] = 0.0f, dvj[d] = 0.0f;
                for (int h = kh * group; h < (kh + 1) * group; h++)
                    for (int t = j; t < T; t++) {
                        if (doc_start[b * T + t] > j) continue; // j is outside t's document
                        size_t row = ((size_t)b * T + t) * Hq + h;
                        const float *qt = q + row * D, *gt = dout + row * D;
                        float l = lse[((size_t)b * Hq + h) * T + t];
                        float p = expf(scale * dot(qt, kj, D) - l);
                        float ds = p * (dot(gt, vj, D) - Dt[((size_t)b * Hq + h) * T + t]);
                        for (int d = 0; d < D; d++) {
                            dvj[d] += p * gt[d];
                            dkj[d] += scale * ds * qt[d];
                        }
                    }
            }
    free(Dt);
}
