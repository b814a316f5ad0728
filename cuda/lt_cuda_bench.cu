/*
 * lt_cuda_bench.cu -- what the kernel microbenchmark suite (cuda/lt_cuda_bench.h,
 * core/lt_bench_kernels.c) needs from CUDA and cannot say in C: event timing
 * on the backend's stream, an L2 flush, random fills on the device and a
 * plain cuBLAS GEMM (the TFLOP/s ceiling and the matmul / LoRA baseline; the
 * bandwidth ceiling is the backend's own copy op, be->copy).
 *
 * Only the stream and the cuBLAS handle of the backend context are used, so
 * the baseline GEMMs run on the same stream, workspace and math mode as the
 * backend's own matmuls.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lt_cuda_bench.h"
#include "lt_cuda.h"

/* ------------------------------------------------------------------------ */
/* timing                                                                   */

extern "C" lt_status lt_cuda_bench_time(lt_backend *be, lt_bench_fn fn, void *arg, int reps, void *flush,
                                        size_t flush_bytes, float *ms, lt_err *err) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (reps <= 0) return lt_fail(err, LT_ERR_INVALID, "cuda bench: %d repetitions (expected >= 1)", reps);
    cudaEvent_t *ev = (cudaEvent_t *)calloc((size_t)2 * reps, sizeof *ev);
    if (!ev) return lt_fail(err, LT_ERR_NOMEM, "cuda bench: out of host memory for %d events", 2 * reps);
    cudaError_t e = cudaSuccess;
    int made = 0;
    for (; made < 2 * reps; made++)
        if ((e = cudaEventCreate(&ev[made])) != cudaSuccess) break;
    if (e == cudaSuccess) {
        for (int i = 0; i < reps && e == cudaSuccess; i++) {
            /* a write over a buffer larger than L2 evicts the previous call's
             * data (outside the timed region) */
            if (flush && flush_bytes) e = cudaMemsetAsync(flush, i & 0xff, flush_bytes, c->stream);
            if (e == cudaSuccess) e = cudaEventRecord(ev[2 * i], c->stream);
            if (e == cudaSuccess) fn(arg);
            if (e == cudaSuccess) e = cudaEventRecord(ev[2 * i + 1], c->stream);
        }
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
        for (int i = 0; i < reps && e == cudaSuccess; i++) e = cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]);
    }
    for (int i = 0; i < made; i++) cudaEventDestroy(ev[i]);
    free(ev);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return lt_fail(err, LT_ERR_BACKEND, "cuda bench: timing: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    }
    return be->sync(be, err); /* the first failure of the timed ops, if any */
}

/* ------------------------------------------------------------------------ */
/* random fill: a counter-based hash, uniform in [-sqrt(3), sqrt(3)) * scale
 * (unit variance before scaling); never all zeros                          */

static __device__ __forceinline__ float hash_uniform(uint64_t seed, size_t i) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xBF58476D1CE4E5B9ull + 0x94D049BB133111EBull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f) * 2.f - 1.f; /* [-1, 1) */
}

template <typename T> static __device__ __forceinline__ void store_val(T *p, float x);
template <> __device__ __forceinline__ void store_val<float>(float *p, float x) { *p = x; }
/* bf16 rounding: random fill values only */
template <> __device__ __forceinline__ void store_val<lt_bf16>(lt_bf16 *p, float x) { *p = __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ void store_val<__half>(__half *p, float x) { *p = __float2half_rn(x); }

template <typename T> __global__ void fill_kernel(T *p, size_t n, uint64_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        store_val<T>(p + i, hash_uniform(seed, i) * 1.7320508f * scale);
}

extern "C" lt_status lt_cuda_bench_fill(lt_backend *be, void *p, lt_dtype dt, size_t n, uint64_t seed, float scale,
                                        lt_err *err) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (n == 0) return LT_OK;
    unsigned grid = lt_grid_1d(n, 256);
    if (dt == LT_F32)
        fill_kernel<float><<<grid, 256, 0, c->stream>>>((float *)p, n, seed, scale);
    else if (dt == LT_BF16)
        fill_kernel<lt_bf16><<<grid, 256, 0, c->stream>>>((lt_bf16 *)p, n, seed, scale);
    else if (dt == LT_F16)
        fill_kernel<__half><<<grid, 256, 0, c->stream>>>((__half *)p, n, seed, scale);
    else
        return lt_fail(err, LT_ERR_INVALID, "cuda bench: fill of dtype %d (expected F32, BF16 or F16)", (int)dt);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return lt_fail(err, LT_ERR_BACKEND, "cuda bench: fill launch: %s", cudaGetErrorString(e));
    return be->sync(be, err);
}

/* ------------------------------------------------------------------------ */
/* ceilings and baselines                                                   */

/* Row-major C (M, N) is the column-major (N, M) matrix C^T = op(B)^T op(A)^T:
 * cuBLAS gets m = N, n = M, the B buffer first and the A buffer second.
 * A row-major (R, C) buffer read as column-major is (C, R) with ld = C. */
extern "C" void lt_cuda_bench_gemm(lt_backend *be, int ta, int tb, int M, int N, int K, const void *A, const void *B,
                                   void *C, lt_dtype c_dtype, float beta) {
    lt_cuda_ctx *c = lt_cuda(be);
    float alpha = 1.f;
    cudaDataType ct = c_dtype == LT_F32 ? CUDA_R_32F : CUDA_R_16BF;
    LT_CUBLAS_CHECK(be,
                    cublasGemmEx(c->cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                                 &alpha, B, CUDA_R_16BF, tb ? K : N, A, CUDA_R_16BF, ta ? M : K, &beta, C, ct, N,
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                    "bench: cublasGemmEx");
}

extern "C" lt_status lt_cuda_bench_info_get(lt_backend *be, lt_cuda_bench_info *info, lt_err *err) {
    lt_cuda_ctx *c = lt_cuda(be);
    memset(info, 0, sizeof *info);
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, c->device);
    if (e != cudaSuccess) return lt_fail(err, LT_ERR_BACKEND, "cuda bench: device properties: %s", cudaGetErrorString(e));
    snprintf(info->name, sizeof info->name, "%s", prop.name);
    info->cc_major = prop.major;
    info->cc_minor = prop.minor;
    info->sms = prop.multiProcessorCount;
    info->l2_bytes = (size_t)prop.l2CacheSize;
    info->mem_bytes = prop.totalGlobalMem;
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) info->mem_free_bytes = fr;
    cudaDriverGetVersion(&info->driver_version);
    cudaRuntimeGetVersion(&info->runtime_version);
    cudaGetLastError();
    return LT_OK;
}
