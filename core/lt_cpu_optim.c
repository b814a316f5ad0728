/*
 * lt_cpu_optim.c -- optimizer ops (CPU): the deterministic sum of squares
 * used for gradient clipping, and AdamW in the exact order of PyTorch's
 * torch.optim.AdamW (_single_tensor_adamw, the CPU path of torch 2.5):
 *
 *   p  = p * (1 - lr*wd)                          decoupled weight decay first
 *   m  = lerp(m, g, 1 - b1) = m + (1-b1) (g - m)  (torch: fused multiply-add)
 *   v  = v * b2 + (1 - b2) * g * g               (torch: fma((1-b2) g, g, v b2))
 *   bc1 = 1 - b1^step,  bc2 = 1 - b2^step         (double, like Python floats)
 *   p  = p + (-lr/bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
 *
 * Scalars are formed in double and rounded to float where torch passes a
 * Python float to a float32 tensor op, so results agree with PyTorch to the
 * last bit or so (tests/test_cpu_ops.c compares with a torch fixture: m and v bitwise,
 * p bitwise for > 99% of the elements, else 1-2 ulp).
 */
#include <math.h>

#include "lt_cpu.h"

/* sum x[i]^2 in double: fixed chunks summed in order, then the chunk sums in
 * order, so the result does not depend on the thread count. */
double lt_cpu_sumsq(lt_backend *be, const float *x, size_t n) {
    enum { CHUNK = 1 << 16 };
    size_t nchunks = (n + CHUNK - 1) / CHUNK;
    double total = 0.0;
    int nt = lt_cpu_threads(be);
    // chunk sums in blocks of 256 chunks so the partials fit on the stack
    for (size_t c0 = 0; c0 < nchunks; c0 += 256) {
        size_t c1 = c0 + 256 < nchunks ? c0 + 256 : nchunks;
        double part[256];
#pragma omp parallel for num_threads(nt < (int)(c1 - c0) ? nt : (int)(c1 - c0)) schedule(static)
        for (size_t c = c0; c < c1; c++) {
            size_t i0 = c * CHUNK, i1 = i0 + CHUNK < n ? i0 + CHUNK : n;
            double s = 0.0;
            for (size_t i = i0; i < i1; i++) s += (double)x[i] * x[i];
            part[c - c0] = s;
        }
        for (size_t c = c0; c < c1; c++) total += part[c - c0];
    }
    return total;
}

/* sumsq of each unit of `unit` elements (the last one shorter), one call of
 * lt_cpu_sumsq per unit: the definition of sumsq_units. Ops on the CPU are
 * synchronous, so batching saves nothing here. */
void lt_cpu_sumsq_units(lt_backend *be, const float *x, size_t n, size_t unit, double *out) {
    if (!unit) {
        lt_cpu_fail(be, LT_ERR_INVALID, "sumsq_units: unit of 0 elements over n = %zu (expected unit >= 1)", n);
        return;
    }
    for (size_t k = 0, e0 = 0; e0 < n; k++, e0 += unit)
        out[k] = lt_cpu_sumsq(be, x + e0, n - e0 < unit ? n - e0 : unit);
}

static void store_param(void *p, lt_dtype dt, size_t i, float x) {
    switch (dt) {
    case LT_BF16: ((uint16_t *)p)[i] = lt_f32_to_bf16(x); break;
    case LT_F16: ((uint16_t *)p)[i] = lt_f32_to_f16(x); break;
    default: ((float *)p)[i] = x; break;
    }
}

void lt_cpu_adamw(lt_backend *be, const struct lt_adamw_tensor *ts, int count, float lr, float beta1, float beta2,
                  float eps, int step, float grad_scale) {
    if (step < 1) {
        lt_cpu_fail(be, LT_ERR_INVALID, "adamw: step %d (expected >= 1, counted from 1)", step);
        return;
    }
    const double bc1 = 1.0 - pow((double)beta1, (double)step);
    const double bc2 = 1.0 - pow((double)beta2, (double)step);
    const float neg_step_size = (float)(-((double)lr / bc1));
    const float bc2_sqrt = (float)sqrt(bc2);
    const float w1 = (float)(1.0 - (double)beta1); // lerp weight
    const float w2 = (float)(1.0 - (double)beta2);
    const float b2 = beta2;
    int nt = lt_cpu_threads(be);
    for (int t = 0; t < count; t++) {
        const lt_adamw_tensor *T = &ts[t];
        if (!T->master && T->param_dtype != LT_F32) {
            lt_cpu_fail(be, LT_ERR_INVALID, "adamw: tensor %d has param dtype %s but no f32 master weights", t,
                        lt_dtype_name(T->param_dtype));
            return;
        }
        float *p = T->master ? T->master : (float *)T->param; // (n) f32 weights updated
        const float *grad = T->grad;
        float *m = T->m, *v = T->v;
        const float decay = (float)(1.0 - (double)lr * (double)T->weight_decay);
        const size_t n = T->n;
#pragma omp parallel for num_threads(n < LT_CPU_PAR_MIN ? 1 : nt) schedule(static)
        for (size_t i = 0; i < n; i++) {
            float g = grad[i] * grad_scale;
            float pi = p[i] * decay;
            float mi = fmaf(w1, g - m[i], m[i]);
            float vi = fmaf(w2 * g, g, v[i] * b2);
            float denom = sqrtf(vi) / bc2_sqrt + eps;
            pi = pi + neg_step_size * mi / denom;
            p[i] = pi;
            m[i] = mi;
            v[i] = vi;
            if (T->master) store_param(T->param, T->param_dtype, i, pi);
        }
    }
}
