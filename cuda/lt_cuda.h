/*
 * lt_cuda.h -- internal header of the CUDA backend (cuda/*.cu only; C code
 * sees lt_cuda_backend_create in cuda/lt_backends.h and reaches the
 * backend through core's registry, lt_backend_create("cuda", ...)).
 *
 * The backend context: one device, one stream that every op is queued on (so
 * ops run in call order and a scratch buffer can be reused from op to op),
 * the cuBLAS / cuBLASLt handles, a growable scratch buffer, and the first
 * recorded failure (returned by be->sync).
 *
 * Precision policy (docs/cuda.md): activations and weights are bf16 in
 * memory; every kernel computes in fp32 (reductions, softmax statistics,
 * loss, matmul accumulation); parameter gradients, optimizer state, LoRA
 * adapters are fp32. Each place that rounds a result to bf16 says so in a
 * comment containing "bf16 rounding".
 */
#ifndef LT_CUDA_H
#define LT_CUDA_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "lt_backend.h"
#include "lt_backends.h"

typedef __nv_bfloat16 lt_bf16; /* the activation / weight element on the device */

typedef struct lt_cuda_ctx {
    int device;
    int num_sms;
    cudaStream_t stream;
    cublasHandle_t cublas;
    cublasLtHandle_t cublaslt;
    void *cublas_ws; /* cuBLAS workspace (set once, so its own allocations never sync) */
    size_t cublas_ws_bytes;
    void *scratch; /* lt_cuda_scratch: reused by every op (ops are stream-ordered) */
    size_t scratch_bytes;
    /* kernel choices: from the environment once at creation (LT_ATTN_VERSION,
     * LT_LORA_VERSION, LT_LORA_CHUNK_ROWS, LT_NF4_VERSION), then lt_backend_set_option */
    int attn_version;    /* 1 | 2 */
    int lora_version;    /* 1 | 2 */
    int nf4_version;     /* 1: dequantized tiles + cuBLAS | 2: fused kernel */
    long lora_chunk_rows; /* 0: automatic */
    int *doc_bad;  /* device int: first row where attention_bwd's doc_start decreased, INT_MAX if none */
    int doc_bad_T; /* T of the attention_bwd call that set it (for the message) */
    lt_status status; /* first failure, LT_OK if none */
    char msg[LT_ERR_MSG_MAX];
} lt_cuda_ctx;

static inline lt_cuda_ctx *lt_cuda(lt_backend *be) { return (lt_cuda_ctx *)be->ctx; }

/* Record a failure (only the first one is kept); printf-style message. */
void lt_cuda_record(lt_backend *be, lt_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Record `e` if it is an error; returns 1 if it was one. */
int lt_cuda_check(lt_backend *be, cudaError_t e, const char *what, const char *file, int line);
int lt_cuda_check_blas(lt_backend *be, cublasStatus_t s, const char *what, const char *file, int line);
#define LT_CUDA_CHECK(be, call, what) lt_cuda_check((be), (call), (what), __FILE__, __LINE__)
#define LT_CUBLAS_CHECK(be, call, what) lt_cuda_check_blas((be), (call), (what), __FILE__, __LINE__)
/* After every kernel launch: catches bad launch configurations at once. */
#define LT_CUDA_LAUNCHED(be, what) lt_cuda_check((be), cudaGetLastError(), (what), __FILE__, __LINE__)

/* A scratch buffer of at least `bytes` (NULL, failure recorded, if it cannot
 * be had). Valid until the next call of lt_cuda_scratch: an op asks once for
 * everything it needs and carves it up. Growing synchronizes the stream. */
void *lt_cuda_scratch(lt_backend *be, size_t bytes);

/* b rounded up to a multiple of 256 bytes (carving one scratch request into pieces) */
static inline size_t lt_align256(size_t b) { return (b + 255) / 256 * 256; }
static inline unsigned lt_cdiv(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }
/* Grid size for a grid-stride loop over n elements with `threads` per block. */
static inline unsigned lt_grid_1d(size_t n, int threads) {
    size_t g = (n + (size_t)threads - 1) / (size_t)threads;
    if (g > 65536u * 16u) g = 65536u * 16u;
    return g ? (unsigned)g : 1u;
}

/* ---- device helpers shared by the kernels ---- */
static __device__ __forceinline__ float lt_ld(const lt_bf16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ float lt_ld(const float *p) { return *p; }
/* bf16 rounding: round to nearest even (the one conversion used everywhere). */
static __device__ __forceinline__ void lt_st(lt_bf16 *p, float x) { *p = __float2bfloat16_rn(x); }
static __device__ __forceinline__ void lt_st(float *p, float x) { *p = x; }

static __device__ __forceinline__ float lt_warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
static __device__ __forceinline__ float lt_warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

/* ---- the op families (one file each); they fill their slots of the table ---- */
void lt_cuda_matmul_init(lt_backend *be);     /* lt_cuda_matmul.cu: matmul, lora */
void lt_cuda_attention_init(lt_backend *be);  /* lt_cuda_attention.cu */
void lt_cuda_norm_init(lt_backend *be);       /* lt_cuda_norm.cu: rmsnorm */
void lt_cuda_rope_init(lt_backend *be);       /* lt_cuda_rope.cu */
void lt_cuda_activation_init(lt_backend *be); /* lt_cuda_activation.cu: swiglu, add */
void lt_cuda_embedding_init(lt_backend *be);  /* lt_cuda_embedding.cu */
void lt_cuda_loss_init(lt_backend *be);       /* lt_cuda_loss.cu: cross_entropy */
void lt_cuda_optim_init(lt_backend *be);      /* lt_cuda_optim.cu: adamw */
void lt_cuda_sumsq_init(lt_backend *be);      /* lt_cuda_sumsq.cu: sumsq, sumsq_units */
void lt_cuda_nf4_init(lt_backend *be);        /* lt_cuda_nf4.cu: NF4 (QLoRA) dequant, matmul */

/* Column sums in a fixed order: out[c] += sum_r part[r * C + c] for r < R.
 * Used as the second pass of the deterministic two-pass reductions
 * (lt_cuda_norm.cu). */
void lt_cuda_colsum_acc(lt_backend *be, float *out, const float *part, int R, int C);

#endif
