/*
 * lt_cpu_norm.c -- RMSNorm forward and backward (CPU, fp32).
 *   rstd[r] = 1 / sqrt(mean_c x[r,c]^2 + eps)
 *   out[r,c] = (x[r,c] * rstd[r]) * w[c]          (the order of Hugging Face's LlamaRMSNorm)
 * and the residual add fused with it (add_rmsnorm_fwd: h = x + r, then the
 * same on h). The _off ops (Gemma) multiply by (w_off + w[c]) instead of w[c]
 * (fp32); the plain ops are them with w_off = 0 (0 + w is w exactly).
 */
#include <math.h>

#include "lt_cpu.h"

/* one row: rstd = 1/sqrt(mean(x^2) + eps), out = (x * rstd) * w. The sum of
 * squares is in double, in the vector lanes of the simd reduction (a fixed
 * order for a given build). Shared by rmsnorm_fwd and add_rmsnorm_fwd, so
 * the two agree bitwise. */
static inline float norm_row(float *o, const float *xr, const float *w, float w_off, int C, float eps) {
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
    float s = 1.0f / sqrtf((float)(ss / C) + eps);
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] = (xr[c] * s) * (w_off + w[c]);
    return s;
}

void lt_cpu_rmsnorm_fwd(lt_backend *be, void *out, float *rstd, const void *x, const void *w, int R, int C,
                        float eps) {
    lt_cpu_rmsnorm_off_fwd(be, out, rstd, x, w, 0.0f, R, C, eps);
}

void lt_cpu_rmsnorm_off_fwd(lt_backend *be, void *out_, float *rstd, const void *x_, const void *w_, float w_off,
                            int R, int C, float eps) {
    float *out = (float *)out_;         // (R, C)
    const float *x = (const float *)x_; // (R, C)
    const float *w = (const float *)w_; // (C)
    int nt = lt_cpu_threads_for(be, (size_t)R * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int r = 0; r < R; r++) rstd[r] = norm_row(out + (size_t)r * C, x + (size_t)r * C, w, w_off, C, eps);
}

/* Residual add + RMSNorm in one pass over each row:
 *   h[r,c] = x[r,c] + r[r,c]   (f32, stored first: h may alias x or r)
 *   then exactly lt_cpu_rmsnorm_fwd's row computation on the stored h, so the
 *   result equals add + rmsnorm_fwd bitwise. */
void lt_cpu_add_rmsnorm_fwd(lt_backend *be, void *h, void *out, float *rstd, const void *x, const void *r,
                            const void *w, int R, int C, float eps) {
    lt_cpu_add_rmsnorm_off_fwd(be, h, out, rstd, x, r, w, 0.0f, R, C, eps);
}

void lt_cpu_add_rmsnorm_off_fwd(lt_backend *be, void *h_, void *out_, float *rstd, const void *x_, const void *r_,
                                const void *w_, float w_off, int R, int C, float eps) {
    float *h = (float *)h_;               // (R, C)
    float *out = (float *)out_;           // (R, C)
    const float *x = (const float *)x_;   // (R, C)
    const float *res = (const float *)r_; // (R, C)
    const float *w = (const float *)w_;   // (C)
    int nt = lt_cpu_threads_for(be, (size_t)R * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int r = 0; r < R; r++) {
        const float *xr = x + (size_t)r * C, *rr = res + (size_t)r * C;
        float *hr = h + (size_t)r * C;
#pragma omp simd
        for (int c = 0; c < C; c++) hr[c] = xr[c] + rr[c];
        rstd[r] = norm_row(out + (size_t)r * C, hr, w, w_off, C, eps);
    }
}

/* With xhat = x * rstd and g = dout:
 *   dx[r,c] = rstd * (w[c] g[c] - xhat[c] * mean_j(w[j] g[j] xhat[j]))   (w[c]: w_off + w[c])
 *   dw[c]  += sum_r g[r,c] xhat[r,c] */
void lt_cpu_rmsnorm_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, const void *dout, const void *x,
                        const void *w, const float *rstd, int R, int C) {
    lt_cpu_rmsnorm_off_bwd(be, dx, acc_dx, dw, dout, x, w, 0.0f, rstd, R, C);
}

void lt_cpu_rmsnorm_off_bwd(lt_backend *be, void *dx_, int acc_dx, float *dw, const void *dout_, const void *x_,
                            const void *w_, float w_off, const float *rstd, int R, int C) {
    float *dx = (float *)dx_;                 // (R, C) or NULL
    const float *dout = (const float *)dout_; // (R, C)
    const float *x = (const float *)x_;       // (R, C)
    const float *w = (const float *)w_;       // (C)
    int nt = lt_cpu_threads_for(be, (size_t)R * C);
    if (dx) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int r = 0; r < R; r++) {
            const float *g = dout + (size_t)r * C, *xr = x + (size_t)r * C;
            float *d = dx + (size_t)r * C;
            float s = rstd[r];
            double dot = 0.0; // sum_j w[j] g[j] xhat[j] (simd lanes: a fixed order for a given build)
#pragma omp simd reduction(+ : dot)
            for (int c = 0; c < C; c++) dot += (double)(w_off + w[c]) * g[c] * (xr[c] * s);
            float mean = (float)(dot / C);
#pragma omp simd
            for (int c = 0; c < C; c++) {
                float v = s * ((w_off + w[c]) * g[c] - (xr[c] * s) * mean);
                d[c] = acc_dx ? d[c] + v : v;
            }
        }
    }
    if (dw) { // threads split the columns; rows are summed in order
        const int CB = 64;
        int nblocks = (C + CB - 1) / CB;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int blk = 0; blk < nblocks; blk++) {
            int c0 = blk * CB, c1 = c0 + CB < C ? c0 + CB : C;
            float acc[64];
            for (int c = c0; c < c1; c++) acc[c - c0] = 0.0f;
            for (int r = 0; r < R; r++) {
                const float *g = dout + (size_t)r * C, *xr = x + (size_t)r * C;
                float s = rstd[r];
#pragma omp simd
                for (int c = c0; c < c1; c++) acc[c - c0] += g[c] * (xr[c] * s);
            }
            for (int c = c0; c < c1; c++) dw[c] += acc[c - c0];
        }
    }
}
