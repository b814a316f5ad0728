/*
 * lt_cuda_bench.h -- CUDA timing helpers for the benchmarks above core
 * (`luxtrain bench kernels`: bench/lt_bench_kernels.c, `luxtrain bench step`:
 * bench/lt_bench_step.c). (cuda/ is on their include path through lt_backends.)
 *
 * They live in cuda/lt_cuda_bench.cu and exist only in a build with
 * LT_HAVE_CUDA; `be` must be a CUDA backend.
 */
#ifndef LT_CUDA_BENCH_H
#define LT_CUDA_BENCH_H

#include "lt_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*lt_bench_fn)(void *arg);

/* Time `fn(arg)` reps times on the backend's stream: each call is bracketed
 * by its own pair of CUDA events; before each call (outside the events), if
 * flush != NULL, flush_bytes of it are overwritten to evict the L2 cache.
 * ms[i] receives the time of call i. Returns the first CUDA or op failure. */
lt_status lt_cuda_bench_time(lt_backend *be, lt_bench_fn fn, void *arg, int reps, void *flush, size_t flush_bytes,
                             float *ms, lt_err *err);
/* Fill n elements of dtype dt (F32, BF16, F16) with scale * N(0,1)-ish
 * values (a hash of seed and index; never zeros), on the device. */
lt_status lt_cuda_bench_fill(lt_backend *be, void *p, lt_dtype dt, size_t n, uint64_t seed, float scale, lt_err *err);
/* Queue a plain cuBLAS GEMM on the backend's stream, row-major view:
 * C (M, N) = op(A) @ op(B) (+ beta * C); A is (M, K), or (K, M) if ta;
 * B is (K, N), or (N, K) if tb. A, B bf16; C bf16 or f32 (c_dtype);
 * fp32 accumulation (CUBLAS_COMPUTE_32F). Failures are recorded in the
 * backend (returned by be->sync). */
void lt_cuda_bench_gemm(lt_backend *be, int ta, int tb, int M, int N, int K, const void *A, const void *B, void *C,
                        lt_dtype c_dtype, float beta);
/* Device facts: name, compute capability, SM count, L2 and memory size. */
typedef struct lt_cuda_bench_info {
    char name[128];
    int cc_major, cc_minor, sms;
    size_t l2_bytes, mem_bytes, mem_free_bytes;
    int driver_version, runtime_version;
} lt_cuda_bench_info;
lt_status lt_cuda_bench_info_get(lt_backend *be, lt_cuda_bench_info *info, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
