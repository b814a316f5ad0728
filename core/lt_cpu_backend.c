/*
 * lt_cpu_backend.c -- the CPU backend: host memory, dtype conversion on
 * upload/download, the first-error record, and the op table filled from the
 * lt_cpu_<family>.c files. act_dtype = param_dtype = LT_F32.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "lt_cpu.h"

typedef struct lt_cpu_ctx {
    int threads;        /* OpenMP threads the ops use (>= 1) */
    lt_status first;    /* first recorded op failure (LT_OK if none) */
    float *scratch;     /* lt_cpu_scratch's buffer, scratch_n floats */
    size_t scratch_n;
    char msg[LT_ERR_MSG_MAX];
} lt_cpu_ctx;

int lt_cpu_threads(const lt_backend *be) { return ((const lt_cpu_ctx *)be->ctx)->threads; }

int lt_cpu_threads_for(const lt_backend *be, size_t work) {
    return work < LT_CPU_PAR_MIN ? 1 : lt_cpu_threads(be);
}

float *lt_cpu_scratch(lt_backend *be, size_t n) {
    lt_cpu_ctx *c = (lt_cpu_ctx *)be->ctx;
    if (n > c->scratch_n) {
        free(c->scratch);
        c->scratch = NULL;
        c->scratch_n = 0;
        size_t bytes;
        if (!lt_mul_ok(n, sizeof(float), &bytes) || !(c->scratch = malloc(bytes))) return NULL;
        c->scratch_n = n;
    }
    return c->scratch;
}

void lt_cpu_fail(lt_backend *be, lt_status st, const char *fmt, ...) {
    lt_cpu_ctx *c = (lt_cpu_ctx *)be->ctx;
#pragma omp critical(lt_cpu_fail)
    {
        if (c->first == LT_OK) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->msg, sizeof c->msg, fmt, ap);
            va_end(ap);
            c->first = st;
        }
    }
}

/* ---- memory ---- */

static lt_status cpu_alloc(lt_backend *be, size_t bytes, void **out, lt_err *err) {
    (void)be;
    *out = NULL;
    /* aligned_alloc wants a multiple of the alignment; 0 bytes still gives a
     * valid, freeable pointer */
    size_t rounded;
    if (!lt_add_ok(bytes, 63, &rounded))
        return lt_fail(err, LT_ERR_NOMEM, "cpu backend: allocation of %zu bytes overflows", bytes);
    rounded = rounded / 64 * 64;
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(64, rounded);
    if (!p) return lt_fail(err, LT_ERR_NOMEM, "cpu backend: out of memory allocating %zu bytes", bytes);
    *out = p;
    return LT_OK;
}

static void cpu_free(lt_backend *be, void *p) {
    (void)be;
    free(p);
}

static lt_status cpu_upload_f32(lt_backend *be, void *dst, lt_dtype dt, const float *src, size_t n, lt_err *err) {
    (void)be;
    switch (dt) {
    case LT_F32:
        if (n) memcpy(dst, src, n * sizeof(float));
        return LT_OK;
    case LT_BF16: {
        uint16_t *d = (uint16_t *)dst;
        for (size_t i = 0; i < n; i++) d[i] = lt_f32_to_bf16(src[i]);
        return LT_OK;
    }
    case LT_F16: {
        uint16_t *d = (uint16_t *)dst;
        for (size_t i = 0; i < n; i++) d[i] = lt_f32_to_f16(src[i]);
        return LT_OK;
    }
    default:
        return lt_fail(err, LT_ERR_INVALID, "cpu backend: upload_f32 to dtype %s (expected F32, BF16 or F16)",
                       lt_dtype_name(dt));
    }
}

static lt_status cpu_download_f32(lt_backend *be, float *dst, const void *src, lt_dtype dt, size_t n, lt_err *err) {
    (void)be;
    switch (dt) {
    case LT_F32:
        if (n) memcpy(dst, src, n * sizeof(float));
        return LT_OK;
    case LT_BF16: {
        const uint16_t *s = (const uint16_t *)src;
        for (size_t i = 0; i < n; i++) dst[i] = lt_bf16_to_f32(s[i]);
        return LT_OK;
    }
    case LT_F16: {
        const uint16_t *s = (const uint16_t *)src;
        for (size_t i = 0; i < n; i++) dst[i] = lt_f16_to_f32(s[i]);
        return LT_OK;
    }
    default:
        return lt_fail(err, LT_ERR_INVALID, "cpu backend: download_f32 from dtype %s (expected F32, BF16 or F16)",
                       lt_dtype_name(dt));
    }
}

static lt_status cpu_upload(lt_backend *be, void *dst, const void *src, size_t bytes, lt_err *err) {
    (void)be;
    (void)err;
    if (bytes) memcpy(dst, src, bytes);
    return LT_OK;
}

static lt_status cpu_download(lt_backend *be, void *dst, const void *src, size_t bytes, lt_err *err) {
    (void)be;
    (void)err;
    if (bytes) memcpy(dst, src, bytes);
    return LT_OK;
}

static void cpu_zero(lt_backend *be, void *dst, size_t bytes) {
    (void)be;
    if (bytes) memset(dst, 0, bytes);
}

static void cpu_copy(lt_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
}

/* no stream: every op has finished when it returns */
static void *cpu_native_stream(lt_backend *be) {
    (void)be;
    return NULL;
}

/* Ops run synchronously; sync only reports the first recorded failure. The
 * record is sticky (like a CUDA context error): every later sync reports it
 * again, since the buffers written after it are not to be trusted. */
static lt_status cpu_sync(lt_backend *be, lt_err *err) {
    lt_cpu_ctx *c = (lt_cpu_ctx *)be->ctx;
    if (c->first != LT_OK) return lt_fail(err, c->first, "cpu backend: %s", c->msg);
    return LT_OK;
}

static void cpu_destroy(lt_backend *be) {
    if (!be) return;
    if (be->ctx) free(((lt_cpu_ctx *)be->ctx)->scratch);
    free(be->ctx);
    free(be);
}

lt_status lt_cpu_backend_create(int threads, lt_backend **out, lt_err *err) {
    *out = NULL;
    lt_backend *be = calloc(1, sizeof *be);
    lt_cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return lt_fail(err, LT_ERR_NOMEM, "cpu backend: out of memory");
    }
    int omp_default = omp_get_max_threads();
    c->threads = threads > 0 ? threads : omp_default;
    if (c->threads < 1) c->threads = 1;
    c->first = LT_OK;
    /* OpenBLAS runs on the calling thread only (process-wide setting): the
     * ops split their products over the OpenMP threads themselves (see
     * lt_cpu.h). With OpenBLAS's own pool as well, its threads and OpenMP's
     * took turns spinning on the same cores. OpenBLAS's OpenMP build also
     * sets the OpenMP default here; it is put back. */
    openblas_set_num_threads(1);
    omp_set_num_threads(omp_default);

    be->name = "cpu";
    be->act_dtype = LT_F32;
    be->param_dtype = LT_F32;
    be->ctx = c;

    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload_f32 = cpu_upload_f32;
    be->download_f32 = cpu_download_f32;
    be->upload = cpu_upload;
    be->download = cpu_download;
    be->zero = cpu_zero;
    be->copy = cpu_copy;
    be->native_stream = cpu_native_stream;
    be->sync = cpu_sync;
    be->destroy = cpu_destroy;

    be->embedding_fwd = lt_cpu_embedding_fwd;
    be->embedding_bwd = lt_cpu_embedding_bwd;
    be->embed_noise = lt_cpu_embed_noise;
    be->matmul_fwd = lt_cpu_matmul_fwd;
    be->matmul_bwd = lt_cpu_matmul_bwd;
    be->rmsnorm_fwd = lt_cpu_rmsnorm_fwd;
    be->rmsnorm_bwd = lt_cpu_rmsnorm_bwd;
    be->rope_fwd = lt_cpu_rope_fwd;
    be->rope_bwd = lt_cpu_rope_bwd;
    be->attention_fwd = lt_cpu_attention_fwd;
    be->attention_bwd = lt_cpu_attention_bwd;
    be->swiglu_fwd = lt_cpu_swiglu_fwd;
    be->swiglu_bwd = lt_cpu_swiglu_bwd;
    be->add = lt_cpu_add;
    be->cross_entropy = lt_cpu_cross_entropy;
    be->lora_fwd = lt_cpu_lora_fwd;
    be->lora_bwd = lt_cpu_lora_bwd;
    be->sumsq = lt_cpu_sumsq;
    be->sumsq_units = lt_cpu_sumsq_units;
    be->adamw = lt_cpu_adamw;
    be->add_rmsnorm_fwd = lt_cpu_add_rmsnorm_fwd;
    be->rmsnorm_off_fwd = lt_cpu_rmsnorm_off_fwd;
    be->rmsnorm_off_bwd = lt_cpu_rmsnorm_off_bwd;
    be->add_rmsnorm_off_fwd = lt_cpu_add_rmsnorm_off_fwd;
    be->geglu_fwd = lt_cpu_geglu_fwd;
    be->geglu_bwd = lt_cpu_geglu_bwd;
    be->attention_cap_fwd = lt_cpu_attention_cap_fwd;
    be->attention_cap_bwd = lt_cpu_attention_cap_bwd;
    be->cross_entropy_cap = lt_cpu_cross_entropy_cap;
    be->scale = lt_cpu_scale;
    be->nf4_dequant = lt_cpu_nf4_dequant;
    be->nf4_matmul_fwd = lt_cpu_nf4_matmul_fwd;
    be->nf4_matmul_bwd = lt_cpu_nf4_matmul_bwd;

    lt_status st = lt_backend_check_slots(be, err);
    if (st != LT_OK) {
        cpu_destroy(be);
        return st;
    }
    *out = be;
    return LT_OK;
}
