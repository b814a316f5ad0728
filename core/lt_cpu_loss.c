/*
 * lt_cpu_loss.c -- cross-entropy over the vocabulary fused with its gradient
 * (CPU, fp32; the softmax normalizer is summed in double). Per row n with
 * target y = targets[n] >= 0 and m = max_i logits[n,i]:
 *   e[i]    = exp(logits[n,i] - m),  Z = sum_i e[i]
 *   loss[n] = m + log Z - logits[n,y]
 *   dlogits[n,i] = grad_scale * (e[i] / Z - [i == y])
 * Rows with y < 0 get loss 0 and a zero gradient row. dlogits may alias
 * logits: each row reads what it needs before it writes (e[i] is stored in
 * dlogits[n,i] over logits[n,i], then scaled by grad_scale / Z).
 */
#include <math.h>

#include "lt_cpu.h"

static void ce_capped(lt_backend *be, float *loss, float *dlogits, const float *logits, const int32_t *targets,
                      int N, int V, float grad_scale, float cap);

/* A row without a target (y < 0: padding; loss 0) or with one outside the
 * vocabulary (the op fails, loss NaN): its gradient is zero. Returns 1 then. */
static int ce_no_target(lt_backend *be, float *loss, float *d, int y, int n, int V) {
    if (y >= 0 && y < V) return 0;
    if (y >= V)
        lt_cpu_fail(be, LT_ERR_RANGE, "cross_entropy: target %d at row %d is not below the vocabulary size %d", y, n, V);
    loss[n] = y < 0 ? 0.0f : NAN;
    if (d)
        for (int i = 0; i < V; i++) d[i] = 0.0f;
    return 1;
}

void lt_cpu_cross_entropy(lt_backend *be, float *loss, void *dlogits, const void *logits, const int32_t *targets,
                          int N, int V, float grad_scale) {
    lt_cpu_cross_entropy_cap(be, loss, dlogits, logits, targets, N, V, grad_scale, 0.0f);
}

void lt_cpu_cross_entropy_cap(lt_backend *be, float *loss, void *dlogits_, const void *logits_,
                              const int32_t *targets, int N, int V, float grad_scale, float softcap) {
    if (softcap > 0) {
        ce_capped(be, loss, (float *)dlogits_, (const float *)logits_, targets, N, V, grad_scale, softcap);
        return;
    }
    float *dlogits = (float *)dlogits_;           // (N, V) or NULL
    const float *logits = (const float *)logits_; // (N, V)
    // loss (N), targets (N)
    int nt = lt_cpu_threads_for(be, (size_t)N * V);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *d = dlogits ? dlogits + (size_t)n * V : NULL;
        int y = targets[n];
        if (ce_no_target(be, loss, d, y, n, V)) continue;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        float ly = l[y];
        // Z in double; the simd reduction sums in vector lanes (a fixed order
        // for a given build, whatever the thread count)
        double Z = 0.0;
        if (d) {
#pragma omp simd reduction(+ : Z)
            for (int i = 0; i < V; i++) {
                float e = lt_cpu_expf(l[i] - mx);
                d[i] = e; // over l[i] when aliased: l[i] is not read again
                Z += e;
            }
        } else {
#pragma omp simd reduction(+ : Z)
            for (int i = 0; i < V; i++) Z += lt_cpu_expf(l[i] - mx);
        }
        loss[n] = (mx + (float)log(Z)) - ly;
        if (d) {
            float g = (float)(grad_scale / Z); // dlogits = e * grad_scale / Z
#pragma omp simd
            for (int i = 0; i < V; i++) d[i] *= g;
            d[y] -= grad_scale;
        }
    }
}

/* Soft-capped logits z[i] = cap * tanh(l[i] / cap) (lt_softcap), then the
 * same as above on z; the gradient with respect to l is
 *   grad_scale * (e[i] / Z - [i == y]) * (1 - (z[i] / cap)^2).
 * Aliasing: z is stored over l (pass 1), e is recomputed from z in the last
 * pass, each element read before it is written. */
static void ce_capped(lt_backend *be, float *loss, float *dlogits, const float *logits, const int32_t *targets,
                      int N, int V, float grad_scale, float cap) {
    int nt = lt_cpu_threads_for(be, (size_t)N * V);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *d = dlogits ? dlogits + (size_t)n * V : NULL;
        int y = targets[n];
        if (ce_no_target(be, loss, d, y, n, V)) continue;
        float mx = -INFINITY, zy = lt_softcap(l[y], cap);
        double Z = 0.0;
        if (d) {
            for (int i = 0; i < V; i++) {
                float z = lt_softcap(l[i], cap);
                d[i] = z; // over l[i] when aliased
                mx = z > mx ? z : mx;
            }
            for (int i = 0; i < V; i++) Z += lt_cpu_expf(d[i] - mx);
            float g = (float)(grad_scale / Z);
            for (int i = 0; i < V; i++) {
                float z = d[i], t = z / cap;
                d[i] = (lt_cpu_expf(z - mx) * g - (i == y ? grad_scale : 0.0f)) * (1.0f - t * t);
            }
        } else {
            for (int i = 0; i < V; i++) {
                float z = lt_softcap(l[i], cap);
                mx = z > mx ? z : mx;
            }
            for (int i = 0; i < V; i++) Z += lt_cpu_expf(lt_softcap(l[i], cap) - mx);
        }
        loss[n] = (mx + (float)log(Z)) - zy;
    }
}
