/*
 * lt_cuda_norm.cu -- RMSNorm forward/backward (fp32 statistics).
 *
 * v1: one warp per row (8 rows per 256-thread block), lanes stride over the
 *     columns; the row is read twice (statistic, then output) -- the second
 *     read mostly hits L1/L2. dw is reduced without atomics: a first kernel
 *     writes per-chunk-of-rows partial sums (each thread one column, rows in
 *     order), lt_cuda_colsum_acc adds the chunks in order: deterministic.
 * TODO v2: 16-byte loads, the row kept in registers for C <= 8192, a
 *     block per row for large C.
 */
#include "lt_cuda.h"

#define ROWS_PER_BLOCK 8

__global__ void rmsnorm_fwd_v1(lt_bf16 *out, float *rstd, const lt_bf16 *x, const lt_bf16 *w, int R, int C,
                               float eps) {
    int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= R) return; // whole warps leave together
    const lt_bf16 *xr = x + (size_t)row * C;
    float ss = 0.f;
    for (int c = lane; c < C; c += 32) {
        float v = __bfloat162float(xr[c]);
        ss += v * v;
    }
    ss = lt_warp_sum(ss);
    float rs = 1.f / sqrtf(ss / (float)C + eps); // fp32, IEEE sqrt and division
    if (lane == 0) rstd[row] = rs;
    lt_bf16 *orow = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32)
        orow[c] = __float2bfloat16_rn(__bfloat162float(xr[c]) * rs * __bfloat162float(w[c])); // bf16 rounding
}

/* dx = rs * w*g - rs^3 / C * x * sum_c(w*g*x)   (per row; g = dout) */
__global__ void rmsnorm_bwd_dx_v1(lt_bf16 *dx, int acc_dx, const lt_bf16 *dout, const lt_bf16 *x,
                                  const lt_bf16 *w, const float *rstd, int R, int C) {
    int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= R) return;
    const lt_bf16 *xr = x + (size_t)row * C;
    const lt_bf16 *gr = dout + (size_t)row * C;
    float dot = 0.f;
    for (int c = lane; c < C; c += 32)
        dot += __bfloat162float(gr[c]) * __bfloat162float(w[c]) * __bfloat162float(xr[c]);
    dot = lt_warp_sum(dot);
    float rs = rstd[row];
    float k = rs * rs * rs * dot / (float)C;
    lt_bf16 *dr = dx + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float v = rs * __bfloat162float(w[c]) * __bfloat162float(gr[c]) - k * __bfloat162float(xr[c]);
        if (acc_dx) v += __bfloat162float(dr[c]);
        dr[c] = __float2bfloat16_rn(v); // bf16 rounding (once, after the accumulation)
    }
}

/* part[chunk, c] = sum over the chunk's rows r (in order) of dout[r,c] * x[r,c] * rstd[r] */
__global__ void rmsnorm_dw_partial_v1(float *part, const lt_bf16 *dout, const lt_bf16 *x, const float *rstd, int R,
                                      int C, int rows_per_chunk) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(R, r0 + rows_per_chunk);
    float s = 0.f;
    for (int r = r0; r < r1; r++) {
        size_t i = (size_t)r * C + c;
        s += __bfloat162float(dout[i]) * __bfloat162float(x[i]) * rstd[r];
    }
    part[(size_t)blockIdx.y * C + c] = s;
}

/* out[c] += sum_r part[r, c], r in order */
__global__ void colsum_acc_kernel(float *out, const float *part, int R, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.f;
    for (int r = 0; r < R; r++) s += part[(size_t)r * C + c];
    out[c] += s;
}

void lt_cuda_colsum_acc(lt_backend *be, float *out, const float *part, int R, int C) {
    if (R <= 0 || C <= 0) return;
    colsum_acc_kernel<<<lt_cdiv(C, 256), 256, 0, lt_cuda(be)->stream>>>(out, part, R, C);
    LT_CUDA_LAUNCHED(be, "column sum (second pass)");
}

static void cu_rmsnorm_fwd(lt_backend *be, void *out, float *rstd, const void *x, const void *w, int R, int C,
                           float eps) {
    if (R <= 0 || C <= 0) return;
    rmsnorm_fwd_v1<<<lt_cdiv(R, ROWS_PER_BLOCK), 32 * ROWS_PER_BLOCK, 0, lt_cuda(be)->stream>>>(
        (lt_bf16 *)out, rstd, (const lt_bf16 *)x, (const lt_bf16 *)w, R, C, eps);
    LT_CUDA_LAUNCHED(be, "rmsnorm_fwd");
}

static void cu_rmsnorm_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, const void *dout, const void *x,
                           const void *w, const float *rstd, int R, int C) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (R <= 0 || C <= 0) return;
    if (dw) {
        /* before dx: dx may alias dout */
        int rows_per_chunk = 64;
        int chunks = (int)lt_cdiv(R, rows_per_chunk);
        if (chunks > 1024) {
            rows_per_chunk = (int)lt_cdiv(R, 1024);
            chunks = (int)lt_cdiv(R, rows_per_chunk);
        }
        float *part = (float *)lt_cuda_scratch(be, (size_t)chunks * C * sizeof(float));
        if (part) {
            dim3 grid(lt_cdiv(C, 128), chunks);
            rmsnorm_dw_partial_v1<<<grid, 128, 0, c->stream>>>(part, (const lt_bf16 *)dout, (const lt_bf16 *)x,
                                                                rstd, R, C, rows_per_chunk);
            LT_CUDA_LAUNCHED(be, "rmsnorm_bwd dw partial");
            lt_cuda_colsum_acc(be, dw, part, chunks, C);
        }
    }
    if (dx) {
        rmsnorm_bwd_dx_v1<<<lt_cdiv(R, ROWS_PER_BLOCK), 32 * ROWS_PER_BLOCK, 0, c->stream>>>(
            (lt_bf16 *)dx, acc_dx, (const lt_bf16 *)dout, (const lt_bf16 *)x, (const lt_bf16 *)w, rstd, R, C);
        LT_CUDA_LAUNCHED(be, "rmsnorm_bwd dx");
    }
}

void lt_cuda_norm_init(lt_backend *be) {
    be->rmsnorm_fwd = cu_rmsnorm_fwd;
    be->rmsnorm_bwd = cu_rmsnorm_bwd;
}
