/*
 * lt_cuda_sumsq.cu -- the sum of squares in double (gradient norm): sumsq
 * and its batched form sumsq_units, which must give the same bits per unit.
 *
 * The order, for a sum over n elements (one order, two kernels):
 *   - the n elements are cut into SUMSQ_BLOCKS chunks of ceil(n / 512)
 *     (the last ones short or empty);
 *   - a chunk is summed as a block of SUMSQ_THREADS threads would: thread t
 *     adds x[lo + t], x[lo + t + 256], ... in order from 0.0, each step
 *     fma(v, v, s) in double (sumsq_step); then the fixed tree
 *     s[t] += s[t + w] for t < w, w = 128, 64, ..., 1;
 *   - the 512 chunk sums are added the same way: thread t forms
 *     (0.0 + p[t]) + p[t + 256], then the same tree.
 * Same n -> same order -> same bits, run after run.
 *   sumsq v1: 512 blocks of 256 threads, one chunk each (shared-memory
 *     tree), then one block for the chunk sums, one download, one host
 *     synchronisation.
 *   sumsq_units v1: one block of 8 warps per unit (a grid-stride loop over
 *     the units); a warp sums a chunk with lane l playing threads l + 32 j
 *     (j < 8): the same additions in the same order (the tree's steps
 *     w >= 32 in registers, w <= 16 by shuffles), so each unit's result is
 *     bitwise sumsq's over that unit. The per-unit sums go to a device
 *     buffer, then to the host in one download and one synchronisation.
 */
#include <math.h>

#include "lt_cuda.h"

#define SUMSQ_BLOCKS 512
#define SUMSQ_THREADS 256
#define SUMSQ_LANES (SUMSQ_THREADS / 32) /* threads each lane plays in sumsq_units */
#define UNITS_WARPS 8

/* one step of a thread's sum: s + v^2 with one rounding (explicit fma, so
 * both kernels do the same whatever the compiler's contraction flags) */
static __device__ __forceinline__ double sumsq_step(double s, float x) {
    double v = (double)x;
    return fma(v, v, s);
}

/* ---- sumsq v1 ---- */

/* the fixed tree over sh[0 .. SUMSQ_THREADS) (every thread of the block) */
static __device__ __forceinline__ double sumsq_block_tree(double *sh) {
    __syncthreads();
    for (int w = SUMSQ_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    return sh[0];
}

__global__ void __launch_bounds__(SUMSQ_THREADS) sumsq_partial_v1(double *part, const float *x, size_t n,
                                                                  size_t chunk) {
    __shared__ double sh[SUMSQ_THREADS];
    size_t lo = blockIdx.x * chunk;
    size_t hi = lo + chunk < n ? lo + chunk : n;
    double s = 0.0;
    for (size_t i = lo + threadIdx.x; i < hi; i += SUMSQ_THREADS) s = sumsq_step(s, x[i]);
    sh[threadIdx.x] = s;
    double r = sumsq_block_tree(sh);
    if (threadIdx.x == 0) part[blockIdx.x] = r;
}

__global__ void __launch_bounds__(SUMSQ_THREADS) sumsq_final_v1(double *out, const double *part) {
    __shared__ double sh[SUMSQ_THREADS];
    double s = 0.0;
    for (int i = threadIdx.x; i < SUMSQ_BLOCKS; i += SUMSQ_THREADS) s += part[i];
    sh[threadIdx.x] = s;
    double r = sumsq_block_tree(sh);
    if (threadIdx.x == 0) out[0] = r;
}

static double cu_sumsq(lt_backend *be, const float *x, size_t n) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (n == 0) return 0.0;
    double *part = (double *)lt_cuda_scratch(be, (SUMSQ_BLOCKS + 1) * sizeof(double));
    if (!part) return NAN;
    size_t chunk = (n + SUMSQ_BLOCKS - 1) / SUMSQ_BLOCKS;
    sumsq_partial_v1<<<SUMSQ_BLOCKS, SUMSQ_THREADS, 0, c->stream>>>(part, x, n, chunk);
    LT_CUDA_LAUNCHED(be, "sumsq partial");
    sumsq_final_v1<<<1, SUMSQ_THREADS, 0, c->stream>>>(part + SUMSQ_BLOCKS, part);
    LT_CUDA_LAUNCHED(be, "sumsq final");
    double r = NAN;
    if (LT_CUDA_CHECK(be, cudaMemcpyAsync(&r, part + SUMSQ_BLOCKS, sizeof r, cudaMemcpyDeviceToHost, c->stream),
                      "sumsq: copy result"))
        return NAN;
    if (LT_CUDA_CHECK(be, cudaStreamSynchronize(c->stream), "sumsq: synchronize")) return NAN;
    return r;
}

/* ---- sumsq_units v1 ---- */

/* sumsq_block_tree by one warp: s[j] is thread lane + 32 j's value; the
 * result is in lane 0 */
static __device__ __forceinline__ double sumsq_warp_tree(double s[SUMSQ_LANES]) {
#pragma unroll
    for (int h = SUMSQ_LANES / 2; h > 0; h >>= 1) /* w = 32 h: threads lane + 32 j, j < h */
#pragma unroll
        for (int j = 0; j < h; j++) s[j] += s[j + h];
    for (int w = 16; w > 0; w >>= 1) s[0] += __shfl_down_sync(0xffffffffu, s[0], w);
    return s[0];
}

/* sumsq_partial_v1's chunk [lo, hi) of x, by one warp (result in lane 0) */
static __device__ __forceinline__ double sumsq_warp_chunk(const float *x, size_t lo, size_t hi, int lane) {
    double s[SUMSQ_LANES];
#pragma unroll
    for (int j = 0; j < SUMSQ_LANES; j++) s[j] = 0.0;
    for (size_t b = lo; b < hi; b += SUMSQ_THREADS)
#pragma unroll
        for (int j = 0; j < SUMSQ_LANES; j++) {
            size_t i = b + (size_t)(lane + 32 * j);
            if (i < hi) s[j] = sumsq_step(s[j], x[i]);
        }
    return sumsq_warp_tree(s);
}

/* out[k] = sumsq of unit k of x (n elements, units of `unit`), k < nunits */
__global__ void __launch_bounds__(32 * UNITS_WARPS) sumsq_units_v1(double *out, const float *x, size_t n,
                                                                   size_t unit, size_t nunits) {
    __shared__ double part[SUMSQ_BLOCKS];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (size_t k = blockIdx.x; k < nunits; k += gridDim.x) {
        const float *xu = x + k * unit;
        size_t len = n - k * unit < unit ? n - k * unit : unit;
        size_t chunk = (len + SUMSQ_BLOCKS - 1) / SUMSQ_BLOCKS;
        for (int b = warp; b < SUMSQ_BLOCKS; b += UNITS_WARPS) {
            size_t lo = (size_t)b * chunk, hi = lo + chunk < len ? lo + chunk : len;
            double r = sumsq_warp_chunk(xu, lo, hi, lane);
            if (lane == 0) part[b] = r;
        }
        __syncthreads();
        if (warp == 0) {
            double s[SUMSQ_LANES];
#pragma unroll
            for (int j = 0; j < SUMSQ_LANES; j++) { /* sumsq_final_v1's thread lane + 32 j */
                int t = lane + 32 * j;
                s[j] = 0.0;
                for (int i = t; i < SUMSQ_BLOCKS; i += SUMSQ_THREADS) s[j] += part[i];
            }
            double r = sumsq_warp_tree(s);
            if (lane == 0) out[k] = r;
        }
        __syncthreads(); /* part is reused by the next unit */
    }
}

static void cu_sumsq_units(lt_backend *be, const float *x, size_t n, size_t unit, double *out) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (!unit) {
        lt_cuda_record(be, LT_ERR_INVALID, "sumsq_units: unit of 0 elements over n = %zu (expected unit >= 1)", n);
        return;
    }
    if (n == 0) return;
    size_t nunits = (n - 1) / unit + 1;
    for (size_t k = 0; k < nunits; k++) out[k] = NAN; /* what a failure leaves */
    double *d = (double *)lt_cuda_scratch(be, nunits * sizeof(double));
    if (!d) return;
    size_t grid = nunits < 65536u * 16u ? nunits : 65536u * 16u;
    sumsq_units_v1<<<(unsigned)grid, 32 * UNITS_WARPS, 0, c->stream>>>(d, x, n, unit, nunits);
    if (LT_CUDA_LAUNCHED(be, "sumsq_units")) return;
    if (LT_CUDA_CHECK(be, cudaMemcpyAsync(out, d, nunits * sizeof(double), cudaMemcpyDeviceToHost, c->stream),
                      "sumsq_units: copy results"))
        return;
    if (LT_CUDA_CHECK(be, cudaStreamSynchronize(c->stream), "sumsq_units: synchronize"))
        for (size_t k = 0; k < nunits; k++) out[k] = NAN;
}

void lt_cuda_sumsq_init(lt_backend *be) {
    be->sumsq = cu_sumsq;
    be->sumsq_units = cu_sumsq_units;
}
