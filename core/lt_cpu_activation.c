/*
 * lt_cpu_activation.c -- elementwise ops (CPU, fp32): SwiGLU and add.
 *   silu(g) = g * sigmoid(g) = g / (1 + exp(-g))
 *   swiglu:  out = silu(gate) * up
 * (exp is lt_cpu_expf, so the loops vectorize; see lt_cpu.h)
 */
#include <math.h>
#include <stddef.h>

#include "lt_cpu.h"

void lt_cpu_swiglu_fwd(lt_backend *be, void *out_, const void *gate_, const void *up_, size_t n) {
    float *out = (float *)out_;               // (n)
    const float *gate = (const float *)gate_; // (n)
    const float *up = (const float *)up_;     // (n)
    int nt = lt_cpu_threads_for(be, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float silu = g / (1.0f + lt_cpu_expf(-g));
        out[i] = silu * up[i];
    }
}

/* dup = dout * silu(g);  dgate = dout * up * silu'(g),
 * silu'(g) = sig(g) * (1 + g * (1 - sig(g))). Inputs are read before the
 * outputs are written, so dgate may alias gate and dup may alias up. */
void lt_cpu_swiglu_bwd(lt_backend *be, void *dgate_, void *dup_, const void *dout_, const void *gate_,
                       const void *up_, size_t n) {
    float *dgate = (float *)dgate_;           // (n)
    float *dup = (float *)dup_;               // (n)
    const float *dout = (const float *)dout_; // (n)
    const float *gate = (const float *)gate_; // (n)
    const float *up = (const float *)up_;     // (n)
    int nt = lt_cpu_threads_for(be, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], u = up[i], d = dout[i];
        float sig = 1.0f / (1.0f + lt_cpu_expf(-g));
        float silu = g * sig;
        float dsilu = sig * (1.0f + g * (1.0f - sig));
        dgate[i] = d * u * dsilu;
        dup[i] = d * silu;
    }
}

/* out = a + b (out may alias a or b) */
void lt_cpu_add(lt_backend *be, void *out_, const void *a_, const void *b_, size_t n) {
    float *out = (float *)out_;
    const float *a = (const float *)a_, *b = (const float *)b_;
    int nt = lt_cpu_threads_for(be, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}
