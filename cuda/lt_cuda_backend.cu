/*
 * lt_cuda_backend.cu -- creating the CUDA backend: device, stream, cuBLAS
 * handles, memory ops, f32 <-> bf16/f16 conversion on upload/download, error
 * recording and sync. The op kernels live in one file per family
 * (lt_cuda_<family>.cu), each filling its slots of the table.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_cuda.h"

/* ------------------------------------------------------------------------ */
/* error recording                                                          */

void lt_cuda_record(lt_backend *be, lt_status st, const char *fmt, ...) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (c->status != LT_OK) return; /* keep the first failure */
    c->status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
}

int lt_cuda_check(lt_backend *be, cudaError_t e, const char *what, const char *file, int line) {
    if (e == cudaSuccess) return 0;
    lt_cuda_record(be, LT_ERR_BACKEND, "cuda: %s failed (%s:%d): %s (%s)", what, file, line, cudaGetErrorString(e),
                   cudaGetErrorName(e));
    return 1;
}

int lt_cuda_check_blas(lt_backend *be, cublasStatus_t s, const char *what, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    lt_cuda_record(be, LT_ERR_BACKEND, "cuda: cuBLAS %s failed (%s:%d): %s", what, file, line,
                   cublasGetStatusString(s));
    return 1;
}

void *lt_cuda_scratch(lt_backend *be, size_t bytes) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (bytes <= c->scratch_bytes) return c->scratch;
    /* queued ops may still read the old buffer: wait for them first */
    if (LT_CUDA_CHECK(be, cudaStreamSynchronize(c->stream), "scratch: stream synchronize")) return NULL;
    if (c->scratch) cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    size_t want = bytes + bytes / 4; /* some headroom against many small growths */
    if (want < ((size_t)1 << 20)) want = (size_t)1 << 20;
    if (LT_CUDA_CHECK(be, cudaMalloc(&c->scratch, want), "scratch: cudaMalloc")) {
        c->scratch = NULL;
        return NULL;
    }
    c->scratch_bytes = want;
    return c->scratch;
}

/* ------------------------------------------------------------------------ */
/* memory                                                                   */

static lt_status cu_alloc(lt_backend *be, size_t bytes, void **out, lt_err *err) {
    *out = NULL;
    if (bytes == 0) return LT_OK;
    cudaError_t e = cudaMalloc(out, bytes);
    if (e != cudaSuccess) {
        *out = NULL;
        cudaGetLastError(); /* out-of-memory is not sticky: clear it */
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        return lt_fail(err, e == cudaErrorMemoryAllocation ? LT_ERR_NOMEM : LT_ERR_BACKEND,
                    "cuda: cudaMalloc of %zu bytes failed: %s (device has %zu of %zu bytes free)", bytes,
                    cudaGetErrorString(e), free_b, total_b);
    }
    return LT_OK;
}

static void cu_free(lt_backend *be, void *p) {
    if (p) LT_CUDA_CHECK(be, cudaFree(p), "cudaFree");
}

/* upload_f32 / download_f32: the host side is f32; the device buffer is f32,
 * bf16 or f16. Converted on the device through a staging area in scratch, in
 * chunks so the staging area stays bounded. */
template <typename T> static __device__ __forceinline__ T conv_from_f32(float x);
/* bf16 rounding (round to nearest even; NaN stays NaN) */
template <> __device__ __forceinline__ lt_bf16 conv_from_f32<lt_bf16>(float x) { return __float2bfloat16_rn(x); }
/* f16 rounding (round to nearest even) */
template <> __device__ __forceinline__ __half conv_from_f32<__half>(float x) { return __float2half_rn(x); }
static __device__ __forceinline__ float conv_to_f32(lt_bf16 x) { return __bfloat162float(x); }
static __device__ __forceinline__ float conv_to_f32(__half x) { return __half2float(x); }

template <typename T> __global__ void f32_to_kernel(T *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = conv_from_f32<T>(src[i]);
}
template <typename T> __global__ void to_f32_kernel(float *dst, const T *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = conv_to_f32(src[i]);
}

static const size_t STAGE_ELEMS = (size_t)16 << 20; /* 64 MiB of f32 staging per chunk */

static lt_status take_status(lt_backend *be, lt_err *err) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (c->status != LT_OK) {
        return lt_fail(err, c->status, "%s", c->msg);
    }
    return LT_OK;
}

static lt_status cu_upload_f32(lt_backend *be, void *dst, lt_dtype dt, const float *src, size_t n, lt_err *err) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (n == 0) return LT_OK;
    if (dt == LT_F32) {
        if (LT_CUDA_CHECK(be, cudaMemcpyAsync(dst, src, n * 4, cudaMemcpyHostToDevice, c->stream), "upload_f32"))
            return take_status(be, err);
        LT_CUDA_CHECK(be, cudaStreamSynchronize(c->stream), "upload_f32: synchronize");
        return take_status(be, err);
    }
    if (dt != LT_BF16 && dt != LT_F16)
        return lt_fail(err, LT_ERR_INVALID, "cuda: upload_f32 into a %s buffer (expected F32, BF16 or F16)",
                    lt_dtype_name(dt));
    size_t chunk = n < STAGE_ELEMS ? n : STAGE_ELEMS;
    float *stage = (float *)lt_cuda_scratch(be, chunk * 4);
    if (!stage) return take_status(be, err);
    for (size_t off = 0; off < n; off += chunk) {
        size_t m = n - off < chunk ? n - off : chunk;
        if (LT_CUDA_CHECK(be, cudaMemcpyAsync(stage, src + off, m * 4, cudaMemcpyHostToDevice, c->stream),
                          "upload_f32: copy"))
            break;
        if (dt == LT_BF16)
            f32_to_kernel<lt_bf16><<<lt_grid_1d(m, 256), 256, 0, c->stream>>>((lt_bf16 *)dst + off, stage, m);
        else
            f32_to_kernel<__half><<<lt_grid_1d(m, 256), 256, 0, c->stream>>>((__half *)dst + off, stage, m);
        if (LT_CUDA_LAUNCHED(be, "upload_f32: convert")) break;
        /* the next chunk's copy overwrites the staging area: stream order
         * guarantees the conversion ran first */
    }
    LT_CUDA_CHECK(be, cudaStreamSynchronize(c->stream), "upload_f32: synchronize");
    return take_status(be, err);
}

static lt_status cu_download_f32(lt_backend *be, float *dst, const void *src, lt_dtype dt, size_t n, lt_err *err) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (n == 0) return LT_OK;
    if (dt == LT_F32) {
        LT_CUDA_CHECK(be, cudaMemcpyAsync(dst, src, n * 4, cudaMemcpyDeviceToHost, c->stream), "download_f32");
        LT_CUDA_CHECK(be, cudaStreamSynchronize(c->stream), "download_f32: synchronize");
        return take_status(be, err);
    }
    if (dt != LT_BF16 && dt != LT_F16)
        return lt_fail(err, LT_ERR_INVALID, "cuda: download_f32 from a %s buffer (expected F32, BF16 or F16)",
                    lt_dtype_name(dt));
    size_t chunk = n < STAGE_ELEMS ? n : STAGE_ELEMS;
    float *stage = (float *)lt_cuda_scratch(be, chunk * 4);
    if (!stage) return take_status(be, err);
    for (size_t off = 0; off < n; off += chunk) {
        size_t m = n - off < chunk ? n - off : chunk;
        if (dt == LT_BF16)
            to_f32_kernel<lt_bf16><<<lt_grid_1d(m, 256), 256, 0, c->stream>>>(stage, (const lt_bf16 *)src + off, m);
        else
            to_f32_kernel<__half><<<lt_grid_1d(m, 256), 256, 0, c->stream>>>(stage, (const __half *)src + off, m);
        if (LT_CUDA_LAUNCHED(be, "download_f32: convert")) break;
        if (LT_CUDA_CHECK(be, cudaMemcpyAsync(dst + off, stage, m * 4, cudaMemcpyDeviceToHost, c->stream),
                          "download_f32: copy"))
            break;
    }
    LT_CUDA_CHECK(be, cudaStreamSynchronize(c->stream), "download_f32: synchronize");
    return take_status(be, err);
}

static lt_status cu_upload(lt_backend *be, void *dst, const void *src, size_t bytes, lt_err *err) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (bytes == 0) return LT_OK;
    LT_CUDA_CHECK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "upload");
    LT_CUDA_CHECK(be, cudaStreamSynchronize(c->stream), "upload: synchronize");
    return take_status(be, err);
}

static lt_status cu_download(lt_backend *be, void *dst, const void *src, size_t bytes, lt_err *err) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (bytes == 0) return LT_OK;
    LT_CUDA_CHECK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download");
    LT_CUDA_CHECK(be, cudaStreamSynchronize(c->stream), "download: synchronize");
    return take_status(be, err);
}

static void cu_zero(lt_backend *be, void *dst, size_t bytes) {
    if (bytes == 0) return;
    LT_CUDA_CHECK(be, cudaMemsetAsync(dst, 0, bytes, lt_cuda(be)->stream), "zero");
}

/* device to device on the stream: in order with the ops, the host goes on */
static void cu_copy(lt_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return;
    LT_CUDA_CHECK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, lt_cuda(be)->stream), "copy");
}

static void *cu_native_stream(lt_backend *be) { return (void *)lt_cuda(be)->stream; }

/* attention_bwd's doc_start order check (lt_cuda_attention.cu): reported
 * here, then reset */
static void check_doc_order(lt_backend *be) {
    lt_cuda_ctx *c = lt_cuda(be);
    int bad = INT_MAX;
    if (LT_CUDA_CHECK(be, cudaMemcpyAsync(&bad, c->doc_bad, sizeof bad, cudaMemcpyDeviceToHost, c->stream),
                      "sync: doc_start check") ||
        LT_CUDA_CHECK(be, cudaStreamSynchronize(c->stream), "sync: doc_start check"))
        return;
    if (bad == INT_MAX) return;
    int T = c->doc_bad_T > 0 ? c->doc_bad_T : 1;
    lt_cuda_record(be, LT_ERR_INVALID,
                   "cuda: attention_bwd: doc_start decreases at sequence %d position %d; the backward needs it "
                   "non-decreasing inside a sequence (a decode pattern is for attention_fwd only)",
                   bad / T, bad % T);
    bad = INT_MAX;
    LT_CUDA_CHECK(be, cudaMemcpy(c->doc_bad, &bad, sizeof bad, cudaMemcpyHostToDevice), "sync: doc_start reset");
}

static lt_status cu_sync(lt_backend *be, lt_err *err) {
    lt_cuda_ctx *c = lt_cuda(be);
    LT_CUDA_CHECK(be, cudaStreamSynchronize(c->stream), "sync: stream synchronize");
    LT_CUDA_CHECK(be, cudaGetLastError(), "sync: a queued kernel");
    if (c->status == LT_OK) check_doc_order(be);
    return take_status(be, err);
}

static void cu_destroy(lt_backend *be) {
    if (!be) return;
    lt_cuda_ctx *c = lt_cuda(be);
    if (c) {
        cudaSetDevice(c->device);
        if (c->stream) cudaStreamSynchronize(c->stream);
        if (c->cublaslt) cublasLtDestroy(c->cublaslt);
        if (c->cublas) cublasDestroy(c->cublas);
        if (c->cublas_ws) cudaFree(c->cublas_ws);
        if (c->scratch) cudaFree(c->scratch);
        if (c->doc_bad) cudaFree(c->doc_bad);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
    }
    free(be);
}

/* ------------------------------------------------------------------------ */
/* options (lt_backend_set_option; the environment once at creation)        */

static lt_status parse_version(const char *key, const char *value, int *out, lt_err *err) {
    if (!strcmp(value, "1") || !strcmp(value, "2")) {
        *out = value[0] - '0';
        return LT_OK;
    }
    return lt_fail(err, LT_ERR_INVALID, "cuda: option %s = '%s' (expected 1 or 2)", key, value);
}

static lt_status cu_set_option(lt_backend *be, const char *key, const char *value, lt_err *err) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (!strcmp(key, "attn_version")) return parse_version(key, value, &c->attn_version, err);
    if (!strcmp(key, "lora_version")) return parse_version(key, value, &c->lora_version, err);
    if (!strcmp(key, "nf4_version")) return parse_version(key, value, &c->nf4_version, err);
    if (!strcmp(key, "lora_chunk_rows")) {
        char *end = NULL;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (!*value || *end || errno || v < 0 || v > INT_MAX)
            return lt_fail(err, LT_ERR_INVALID, "cuda: option lora_chunk_rows = '%s' (expected a row count >= 1, "
                           "or 0 for automatic)", value);
        c->lora_chunk_rows = v;
        return LT_OK;
    }
    return lt_fail(err, LT_ERR_INVALID,
                   "cuda: unknown option '%s' (known: attn_version, lora_version, lora_chunk_rows, nf4_version)", key);
}

/* the defaults, then the environment variables of the options (each refused
 * by name when its value is not understood) */
static lt_status read_env_options(lt_backend *be, lt_err *err) {
    static const struct {
        const char *env, *key;
    } vars[] = {{"LT_ATTN_VERSION", "attn_version"},
                {"LT_LORA_VERSION", "lora_version"},
                {"LT_LORA_CHUNK_ROWS", "lora_chunk_rows"},
                {"LT_NF4_VERSION", "nf4_version"}};
    lt_cuda_ctx *c = lt_cuda(be);
    c->attn_version = 2;
    c->lora_version = 2;
    c->lora_chunk_rows = 0;
    c->nf4_version = 2;
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i].env);
        if (v && *v) {
            lt_status st = cu_set_option(be, vars[i].key, v, err);
            if (st != LT_OK) return lt_wrap(err, st, "environment variable %s", vars[i].env);
        }
    }
    return LT_OK;
}

/* ------------------------------------------------------------------------ */

extern "C" lt_status lt_cuda_backend_create(int device, lt_backend **out, lt_err *err) {
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "cuda: no NVIDIA GPU was found (cudaGetDeviceCount: %s); use --device cpu", cudaGetErrorString(e));
    }
    if (count == 0)
        return lt_fail(err, LT_ERR_UNSUPPORTED, "cuda: no NVIDIA GPU was found (CUDA sees no device); use --device cpu");
    if (device < 0 || device >= count)
        return lt_fail(err, LT_ERR_INVALID, "cuda: device %d requested but only %d present", device, count);
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
        return lt_fail(err, LT_ERR_BACKEND, "cuda: device %d: %s", device, cudaGetErrorString(e));
    if (prop.major < 8)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                    "cuda: device %d (%s) has compute capability %d.%d; the bf16 kernels need 8.0 or newer",
                    device, prop.name, prop.major, prop.minor);

    lt_backend *be = (lt_backend *)calloc(1, sizeof *be);
    lt_cuda_ctx *c = (lt_cuda_ctx *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return lt_fail(err, LT_ERR_NOMEM, "cuda: out of host memory creating the backend");
    }
    be->name = "cuda";
    be->act_dtype = LT_BF16;
    be->param_dtype = LT_BF16;
    be->ctx = c;
    c->device = device;
    c->num_sms = prop.multiProcessorCount;
    c->status = LT_OK;

    lt_status st = LT_OK;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        st = lt_fail(err, LT_ERR_BACKEND, "cuda: cudaStreamCreate: %s", cudaGetErrorString(e));
        goto fail_out;
    }
    {
        cublasStatus_t s;
        static const char *step[3] = {"cublasCreate", "cublasSetStream", "cublasLtCreate"};
        int k = 0;
        if ((s = cublasCreate(&c->cublas)) != CUBLAS_STATUS_SUCCESS ||
            (++k, s = cublasSetStream(c->cublas, c->stream)) != CUBLAS_STATUS_SUCCESS ||
            (++k, s = cublasLtCreate(&c->cublaslt)) != CUBLAS_STATUS_SUCCESS) {
            st = lt_fail(err, LT_ERR_BACKEND, "cuda: cuBLAS initialisation: %s: %s", step[k],
                         cublasGetStatusString(s));
            goto fail_out;
        }
        /* A fixed workspace, so cuBLAS never allocates (and syncs) on its own;
         * 32 MiB is what Hopper's largest kernels ask for. */
        c->cublas_ws_bytes = (size_t)32 << 20;
        if ((e = cudaMalloc(&c->cublas_ws, c->cublas_ws_bytes)) != cudaSuccess) {
            st = lt_fail(err, LT_ERR_NOMEM, "cuda: cuBLAS workspace: %s", cudaGetErrorString(e));
            goto fail_out;
        }
        if ((s = cublasSetWorkspace(c->cublas, c->cublas_ws, c->cublas_ws_bytes)) != CUBLAS_STATUS_SUCCESS) {
            st = lt_fail(err, LT_ERR_BACKEND, "cuda: cublasSetWorkspace: %s", cublasGetStatusString(s));
            goto fail_out;
        }
        /* no reduced-precision shortcuts: fp32 accumulation (CUBLAS_COMPUTE_32F
         * in every call) and, with bf16/f16 outputs, no split-K reduction in
         * the output's precision (which CUBLAS_DEFAULT_MATH alone allows) */
        if ((s = cublasSetMathMode(c->cublas, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                                              CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION))) !=
            CUBLAS_STATUS_SUCCESS) {
            st = lt_fail(err, LT_ERR_BACKEND, "cuda: cublasSetMathMode: %s", cublasGetStatusString(s));
            goto fail_out;
        }
    }
    if ((st = read_env_options(be, err)) != LT_OK) goto fail_out;
    {
        int none = INT_MAX;
        if ((e = cudaMalloc(&c->doc_bad, sizeof(int))) != cudaSuccess ||
            (e = cudaMemcpy(c->doc_bad, &none, sizeof none, cudaMemcpyHostToDevice)) != cudaSuccess) {
            st = lt_fail(err, LT_ERR_BACKEND, "cuda: doc_start check flag: %s", cudaGetErrorString(e));
            goto fail_out;
        }
    }

    be->alloc = cu_alloc;
    be->free = cu_free;
    be->upload_f32 = cu_upload_f32;
    be->download_f32 = cu_download_f32;
    be->upload = cu_upload;
    be->download = cu_download;
    be->zero = cu_zero;
    be->copy = cu_copy;
    be->native_stream = cu_native_stream;
    be->sync = cu_sync;
    be->destroy = cu_destroy;
    lt_cuda_matmul_init(be);
    lt_cuda_attention_init(be);
    lt_cuda_norm_init(be);
    lt_cuda_rope_init(be);
    lt_cuda_activation_init(be);
    lt_cuda_embedding_init(be);
    lt_cuda_loss_init(be);
    lt_cuda_optim_init(be);
    lt_cuda_sumsq_init(be);
    lt_cuda_nf4_init(be);
    be->set_option = cu_set_option;
    if ((st = lt_backend_check_slots(be, err)) != LT_OK) goto fail_out;
    *out = be;
    return LT_OK;

fail_out:
    cu_destroy(be);
    return st;
}

/* ------------------------------------------------------------------------ */
/* registration into core's registry (cuda/lt_backends.c calls this)    */

static lt_status cu_reg_create(int device, int threads, lt_backend **out, lt_err *err) {
    (void)threads;
    return lt_cuda_backend_create(device, out, err);
}

static const lt_backend_reg cuda_reg = {"cuda", cu_reg_create};

extern "C" lt_status lt_cuda_backend_register(lt_err *err) { return lt_backend_register(&cuda_reg, err); }
