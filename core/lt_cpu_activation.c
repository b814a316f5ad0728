/*
 * lt_cpu_activation.c -- elementwise ops (CPU, fp32): SwiGLU, GeGLU, add, scale.
 *   silu(g) = g * sigmoid(g) = g / (1 + exp(-g))
 *   swiglu:  out = silu(gate) * up
 *   gelu(g) = 0.5 g (1 + tanh(u)), u = sqrt(2/pi) (g + 0.044715 g^3)   (the tanh GELU)
 *   geglu:   out = gelu(gate) * up
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

/* the tanh GELU's constants, as torch's gelu(approximate="tanh") */
#define GELU_BETA 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_KAPPA 0.044715f

void lt_cpu_geglu_fwd(lt_backend *be, void *out_, const void *gate_, const void *up_, size_t n) {
    float *out = (float *)out_;               // (n)
    const float *gate = (const float *)gate_; // (n)
    const float *up = (const float *)up_;     // (n)
    int nt = lt_cpu_threads_for(be, n);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float gelu = 0.5f * g * (1.0f + tanhf(GELU_BETA * (g + GELU_KAPPA * g * g * g)));
        out[i] = gelu * up[i];
    }
}

/* dup = dout * gelu(g); dgate = dout * up * gelu'(g),
 * gelu'(g) = 0.5 (1 + t) + 0.5 g (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 g^2),
 * t = tanh(u). Inputs are read before the outputs are written (in place ok). */
void lt_cpu_geglu_bwd(lt_backend *be, void *dgate_, void *dup_, const void *dout_, const void *gate_,
                      const void *up_, size_t n) {
    float *dgate = (float *)dgate_;           // (n)
    float *dup = (float *)dup_;               // (n)
    const float *dout = (const float *)dout_; // (n)
    const float *gate = (const float *)gate_; // (n)
    const float *up = (const float *)up_;     // (n)
    int nt = lt_cpu_threads_for(be, n);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], u = up[i], d = dout[i];
        float t = tanhf(GELU_BETA * (g + GELU_KAPPA * g * g * g));
        float gelu = 0.5f * g * (1.0f + t);
        float dgelu = 0.5f * (1.0f + t) + 0.5f * g * (1.0f - t * t) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * g * g);
        dgate[i] = d * u * dgelu;
        dup[i] = d * gelu;
    }
}

/* x *= s in place */
void lt_cpu_scale(lt_backend *be, void *x_, size_t n, float s) {
    float *x = (float *)x_;
    int nt = lt_cpu_threads_for(be, n);
#pragma omp parallel for simd num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
