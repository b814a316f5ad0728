/*
 * lt_cuda_norm.cu -- RMSNorm forward/backward (fp32 statistics).
 *
 * v1: one warp per row (8 rows per 256-thread block), lanes stride over the
 *     columns; the row is read twice (statistic, then output) -- the second
 *     read mostly hits L1/L2. dw is reduced without atomics: a first kernel
 *     writes per-chunk-of-rows partial sums (each thread one column, rows in
 *     order), lt_cuda_colsum_acc adds the chunks in order: deterministic.
 * Every kernel takes the weight offset woff (Gemma's x * (1 + w): the
 * rmsnorm_off_* slots); the plain slots pass 0 (0 + w is w exactly).
 * TODO v2: 16-byte loads, the row kept in registers for C <= 8192, a
 *     block per row for large C (add_rmsnorm_fwd below already does the
 *     first two).
 */
#include "lt_cuda.h"

#define ROWS_PER_BLOCK 8

__global__ void rmsnorm_fwd_v1(lt_bf16 *out, float *rstd, const lt_bf16 *x, const lt_bf16 *w, float woff, int R,
                               int C, float eps) {
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
        orow[c] = __float2bfloat16_rn(__bfloat162float(xr[c]) * rs * (woff + __bfloat162float(w[c]))); // bf16 rounding
}

/* dx = rs * w*g - rs^3 / C * x * sum_c(w*g*x)   (per row; g = dout) */
__global__ void rmsnorm_bwd_dx_v1(lt_bf16 *dx, int acc_dx, const lt_bf16 *dout, const lt_bf16 *x,
                                  const lt_bf16 *w, float woff, const float *rstd, int R, int C) {
    int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= R) return;
    const lt_bf16 *xr = x + (size_t)row * C;
    const lt_bf16 *gr = dout + (size_t)row * C;
    float dot = 0.f;
    for (int c = lane; c < C; c += 32)
        dot += __bfloat162float(gr[c]) * (woff + __bfloat162float(w[c])) * __bfloat162float(xr[c]);
    dot = lt_warp_sum(dot);
    float rs = rstd[row];
    float k = rs * rs * rs * dot / (float)C;
    lt_bf16 *dr = dx + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float v = rs * (woff + __bfloat162float(w[c])) * __bfloat162float(gr[c]) - k * __bfloat162float(xr[c]);
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

static void cu_rmsnorm_off_fwd(lt_backend *be, void *out, float *rstd, const void *x, const void *w, float woff,
                               int R, int C, float eps) {
    if (R <= 0 || C <= 0) return;
    rmsnorm_fwd_v1<<<lt_cdiv(R, ROWS_PER_BLOCK), 32 * ROWS_PER_BLOCK, 0, lt_cuda(be)->stream>>>(
        (lt_bf16 *)out, rstd, (const lt_bf16 *)x, (const lt_bf16 *)w, woff, R, C, eps);
    LT_CUDA_LAUNCHED(be, "rmsnorm_fwd");
}
static void cu_rmsnorm_fwd(lt_backend *be, void *out, float *rstd, const void *x, const void *w, int R, int C,
                           float eps) {
    cu_rmsnorm_off_fwd(be, out, rstd, x, w, 0.f, R, C, eps);
}

static void cu_rmsnorm_off_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, const void *dout, const void *x,
                               const void *w, float woff, const float *rstd, int R, int C) {
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
            (lt_bf16 *)dx, acc_dx, (const lt_bf16 *)dout, (const lt_bf16 *)x, (const lt_bf16 *)w, woff, rstd, R, C);
        LT_CUDA_LAUNCHED(be, "rmsnorm_bwd dx");
    }
}
static void cu_rmsnorm_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, const void *dout, const void *x,
                           const void *w, const float *rstd, int R, int C) {
    cu_rmsnorm_off_bwd(be, dx, acc_dx, dw, dout, x, w, 0.f, rstd, R, C);
}

/* ------------------------------------------------------------------------ */
/* residual add + RMSNorm (add_rmsnorm_fwd)                                 */
/*
 * h = bf16(x + r) (bf16 rounding, once), then out = rmsnorm(h) * w computed
 * from the ROUNDED h, so out and rstd are what rmsnorm_fwd(h) gives (same
 * formula: rs = 1/sqrtf(ss/C + eps), out = bf16((h * rs) * w)); only the
 * order of the fp32 sum of squares differs from rmsnorm_fwd_v1.
 *
 * Bytes: read x, r (2 a R C) + w, write h, out (2 a R C) + rstd -- versus
 * add (3 a R C) + rmsnorm_fwd (2 a R C) unfused: 4 instead of 5 passes, and
 * h is never read back from DRAM.
 *
 * Vector path (C % 8 == 0, C <= 8 * 32 * 32 = 8192, all pointers 16-byte
 * aligned): one warp per row, 16-byte loads/stores (8 bf16), the rounded row
 * kept in registers (VPL 16-byte vectors per lane, a template parameter
 * picked from C) between the statistic and the output. The loads of x and r
 * are all issued before any store of h (h may alias x or r: a lane reads
 * and writes only its own vectors, and reads them before it writes).
 * Fallback (other C or alignment): warp per row, scalar, h re-read from
 * memory by the lane that wrote it.
 */
#define ARN_WARPS 4 /* rows (warps) per block */

union lt_vec8 { /* 8 bf16 in one 16-byte load */
    uint4 u;
    __nv_bfloat162 h2[4];
};

template <int VPL>
__global__ void __launch_bounds__(32 * ARN_WARPS)
    add_rmsnorm_fwd_vec(lt_bf16 *h, lt_bf16 *__restrict__ out, float *__restrict__ rstd, const lt_bf16 *x,
                        const lt_bf16 *r, const lt_bf16 *__restrict__ w, float woff, int R, int C, float eps) {
    int row = blockIdx.x * ARN_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= R) return; // whole warps leave together
    int nv = C / 8;       // 16-byte vectors per row
    const uint4 *xv = (const uint4 *)(x + (size_t)row * C), *rv = (const uint4 *)(r + (size_t)row * C);
    uint4 *hv = (uint4 *)(h + (size_t)row * C);
    lt_vec8 v[VPL];
    // all loads first (independent, in flight together); then add, round, store
#pragma unroll
    for (int i = 0; i < VPL; i++) {
        int k = lane + 32 * i;
        if (k < nv) v[i].u = xv[k];
    }
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < VPL; i++) {
        int k = lane + 32 * i;
        if (k < nv) {
            lt_vec8 b;
            b.u = rv[k];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float2 a2 = __bfloat1622float2(v[i].h2[j]), b2 = __bfloat1622float2(b.h2[j]);
                v[i].h2[j] = __floats2bfloat162_rn(a2.x + b2.x, a2.y + b2.y); // bf16 rounding of h (the only one)
                float2 q = __bfloat1622float2(v[i].h2[j]);                    // the norm reads the rounded h
                ss += q.x * q.x;
                ss += q.y * q.y;
            }
        }
    }
#pragma unroll
    for (int i = 0; i < VPL; i++) {
        int k = lane + 32 * i;
        if (k < nv) hv[k] = v[i].u;
    }
    ss = lt_warp_sum(ss);
    float rs = 1.f / sqrtf(ss / (float)C + eps); // fp32, IEEE sqrt and division (as rmsnorm_fwd)
    if (lane == 0) rstd[row] = rs;
    const uint4 *wv = (const uint4 *)w;
    uint4 *ov = (uint4 *)(out + (size_t)row * C);
#pragma unroll
    for (int i = 0; i < VPL; i++) {
        int k = lane + 32 * i;
        if (k < nv) {
            lt_vec8 wk, o;
            wk.u = __ldg(wv + k);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float2 q = __bfloat1622float2(v[i].h2[j]), w2 = __bfloat1622float2(wk.h2[j]);
                o.h2[j] = __floats2bfloat162_rn(q.x * rs * (woff + w2.x), q.y * rs * (woff + w2.y)); // bf16 rounding
            }
            ov[k] = o.u;
        }
    }
}

__global__ void add_rmsnorm_fwd_scalar(lt_bf16 *h, lt_bf16 *out, float *rstd, const lt_bf16 *x, const lt_bf16 *r,
                                       const lt_bf16 *w, float woff, int R, int C, float eps) {
    int row = blockIdx.x * ARN_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= R) return;
    size_t o = (size_t)row * C;
    float ss = 0.f;
    for (int c = lane; c < C; c += 32) {
        lt_bf16 hb = __float2bfloat16_rn(__bfloat162float(x[o + c]) + __bfloat162float(r[o + c])); // bf16 rounding
        h[o + c] = hb;
        float q = __bfloat162float(hb);
        ss += q * q;
    }
    ss = lt_warp_sum(ss);
    float rs = 1.f / sqrtf(ss / (float)C + eps);
    if (lane == 0) rstd[row] = rs;
    for (int c = lane; c < C; c += 32) // h[o + c] was written by this lane
        out[o + c] = __float2bfloat16_rn(__bfloat162float(h[o + c]) * rs * (woff + __bfloat162float(w[c]))); // bf16 rounding
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

static void cu_add_rmsnorm_off_fwd(lt_backend *be, void *h, void *out, float *rstd, const void *x, const void *r,
                                   const void *w, float woff, int R, int C, float eps) {
    if (R <= 0 || C <= 0) return;
    cudaStream_t st = lt_cuda(be)->stream;
    unsigned grid = lt_cdiv(R, ARN_WARPS);
    int vpl = (C / 8 + 31) / 32; // 16-byte vectors per lane
    int vec = C % 8 == 0 && vpl <= 32 && aligned16(h) && aligned16(out) && aligned16(x) && aligned16(r) &&
              aligned16(w);
    lt_bf16 *H = (lt_bf16 *)h, *O = (lt_bf16 *)out;
    const lt_bf16 *X = (const lt_bf16 *)x, *Rr = (const lt_bf16 *)r, *W = (const lt_bf16 *)w;
#define ARN_LAUNCH(V) add_rmsnorm_fwd_vec<V><<<grid, 32 * ARN_WARPS, 0, st>>>(H, O, rstd, X, Rr, W, woff, R, C, eps)
    if (!vec) add_rmsnorm_fwd_scalar<<<grid, 32 * ARN_WARPS, 0, st>>>(H, O, rstd, X, Rr, W, woff, R, C, eps);
    else if (vpl <= 1) ARN_LAUNCH(1);   /* C <= 256 */
    else if (vpl <= 2) ARN_LAUNCH(2);   /* C <= 512 */
    else if (vpl <= 4) ARN_LAUNCH(4);   /* C <= 1024 (qwen 0.5b: 896) */
    else if (vpl <= 8) ARN_LAUNCH(8);   /* C <= 2048 (llama 1b) */
    else if (vpl <= 12) ARN_LAUNCH(12); /* C <= 3072 (llama 3b) */
    else if (vpl <= 16) ARN_LAUNCH(16); /* C <= 4096 (8b; qwen 7b: 3584) */
    else if (vpl <= 20) ARN_LAUNCH(20); /* C <= 5120 (qwen 14b) */
    else if (vpl <= 24) ARN_LAUNCH(24); /* C <= 6144 */
    else ARN_LAUNCH(32);                /* C <= 8192 (70b) */
#undef ARN_LAUNCH
    LT_CUDA_LAUNCHED(be, "add_rmsnorm_fwd");
}
static void cu_add_rmsnorm_fwd(lt_backend *be, void *h, void *out, float *rstd, const void *x, const void *r,
                               const void *w, int R, int C, float eps) {
    cu_add_rmsnorm_off_fwd(be, h, out, rstd, x, r, w, 0.f, R, C, eps);
}

void lt_cuda_norm_init(lt_backend *be) {
    be->rmsnorm_fwd = cu_rmsnorm_fwd;
    be->rmsnorm_bwd = cu_rmsnorm_bwd;
    be->add_rmsnorm_fwd = cu_add_rmsnorm_fwd;
    be->rmsnorm_off_fwd = cu_rmsnorm_off_fwd;
    be->rmsnorm_off_bwd = cu_rmsnorm_off_bwd;
    be->add_rmsnorm_off_fwd = cu_add_rmsnorm_off_fwd;
}
