/*
 * lt_cpu_loss.c -- cross-entropy over the vocabulary fused with its gradient
 * (CPU, fp32; the softmax normalizer is summed in double). Per row n with
 * target y = targets[n] >= 0:
 *   lse     = log sum_i exp(logits[n,i])
 *   loss[n] = lse - logits[n,y]
 *   dlogits[n,i] = grad_scale * (exp(logits[n,i] - lse) - [i == y])
 * Rows with y < 0 get loss 0 and a zero gradient row. dlogits may alias
 * logits: each row reads what it needs before it writes.
 */
#include <math.h>

#include "lt_cpu.h"

void lt_cpu_cross_entropy(lt_backend *be, float *loss, void *dlogits_, const void *logits_, const int32_t *targets,
                          int N, int V, float grad_scale) {
    float *dlogits = (float *)dlogits_;           // (N, V) or NULL
    const float *logits = (const float *)logits_; // (N, V)
    // loss (N), targets (N)
    int nt = lt_cpu_threads(be);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *d = dlogits ? dlogits + (size_t)n * V : NULL;
        int y = targets[n];
        if (y < 0 || y >= V) {
            if (y >= V)
                lt_cpu_fail(be, LT_ERR_RANGE, "cross_entropy: target %d at row %d is not below the vocabulary size %d",
                            y, n, V);
            loss[n] = y < 0 ? 0.0f : NAN;
            if (d)
                for (int i = 0; i < V; i++) d[i] = 0.0f;
            continue;
        }
        float mx = -INFINITY;
        for (int i = 0; i < V; i++)
            if (l[i] > mx) mx = l[i];
        double sum = 0.0;
        for (int i = 0; i < V; i++) sum += expf(l[i] - mx);
        float lse = mx + (float)log(sum);
        loss[n] = lse - l[y];
        if (d)
            for (int i = 0; i < V; i++) {
                float p = expf(l[i] - lse);
                d[i] = grad_scale * (i == y ? p - 1.0f : p);
            }
    }
}
