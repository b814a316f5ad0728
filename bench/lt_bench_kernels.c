/*
 * lt_bench_kernels.c -- `luxtrain bench kernels` / bench/bench_kernels: the
 * op table's kernels at realistic shapes, against the device's measured
 * ceilings and against baselines timed in the same run (see lt_cuda_bench.h and
 * bench/README.md for the JSON schema).
 *
 * Timing: every measurement runs the op twice to warm up (module load,
 * cuBLAS heuristics, scratch growth), then `reps` more times, reps chosen so
 * the measurement takes about --budget seconds (clamped to [min, max]; 3
 * when one call takes over 0.5 s); the median is reported. On CUDA each call is bracketed by CUDA events on the
 * backend's stream and preceded (outside the events) by a write over a
 * buffer of 4x the L2 size, so no call reads what the previous one left in
 * L2. On the CPU each call is followed by be->sync and timed with the
 * monotonic clock (a smoke test only).
 *
 * FLOP and byte counts come from the op case table (bench/lt_op_cases.c,
 * the `formula` of every JSON result): bf16 act/param: a = 2 bytes, f32 =
 * 4 (CPU: a = 4); p likewise for parameters:
 *   matmul fwd      2 M K N FLOP                 bytes a (MK + NK + MN)
 *   matmul bwd      4 M K N (dx and dw)          a (2 MN + NK + 2 MK) + 8 NK (dw f32 read+write)
 *   lora fwd+bwd    4 M K N (frozen fwd + dx)    + adapter 2 M r (3K + 3N)
 *                   (fwd: x A^T, (xA) B^T; bwd: dout B, (dout B) A, dA, dB)
 *   attention fwd   4 B Hq D T^2 / 2 (causal; QK^T and PV, FlashAttention convention)
 *   attention bwd   2.5 x the forward
 *   rmsnorm fwd     bytes a (2 R C) + a C + 4 R
 *   rmsnorm bwd     bytes a (3 R C) + a C + 4 R + 8 C
 *   add_rmsnorm fwd bytes a (4 R C) + a C + 4 R    (read x, r; write h, out; baseline: add + rmsnorm_fwd)
 *   rope fwd/bwd    bytes 2 a N H D + 4 N + 2 D        (in place: read + write)
 *   swiglu fwd      bytes 3 a n;  bwd 5 a n
 *   embedding fwd   bytes 2 a N C + 4 N;  bwd a N C + 8 U C + 4 N (U distinct ids)
 *   embed_noise     bytes 2 a N C (in place)
 *   cross-entropy   bytes 2 a N V + 8 N (logits read once, dlogits written once)
 *   adamw           bytes per element: f32 param 28 (read p g m v, write p m v);
 *                   bf16 param + f32 master 30 (read master g m v, write master m v, param)
 *   sumsq_units     bytes 4 n + 8 ceil(n / unit) (baseline: one sumsq per unit)
 * Memory-bound ops report GB/s as a % of the measured copy bandwidth
 * (bytes read + bytes written); compute-bound ones TFLOP/s as a % of the
 * measured GEMM rate (bf16 cuBLAS on CUDA, sgemm on the CPU).
 */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lt_cuda_bench.h" /* the CUDA timing helpers */
#include "lt_bench_kernels.h"
#include "lt_cli.h"
#include "lt_nf4.h"
#include "lt_op_cases.h"
#include "lt_optim.h"

/* ------------------------------------------------------------------------ */
/* shapes                                                                   */

typedef struct {
    const char *name;
    int hidden, hq, hkv, hd, ffn, vocab, layers;
} mshape;

static const mshape M_1B = {"llama-3.2-1b", 2048, 32, 8, 64, 8192, 128256, 16};
static const mshape M_8B = {"llama-3.1-8b", 4096, 32, 8, 128, 14336, 128256, 32};
static const mshape M_14B = {"qwen2.5-14b", 5120, 40, 8, 128, 13824, 152064, 48};
static const mshape M_TINY = {"tiny", 64, 4, 2, 16, 176, 1000, 2};
static const mshape M_SMALL = {"small", 256, 8, 2, 32, 688, 8000, 2};
static const mshape M_GEMMA2 = {"gemma-2-2b", 2304, 8, 4, 256, 9216, 256000, 26};
static const mshape M_PHI4 = {"phi-4-mini", 3072, 24, 8, 128, 8192, 200064, 32}; /* partial rotary 0.75, LongRoPE */

/* ------------------------------------------------------------------------ */
/* results                                                                  */

enum { GOAL_NONE, GOAL_SDPA, GOAL_BW90, GOAL_LORA };
enum { BOUND_MEM, BOUND_FLOP };
#define MAX_BASE 4
#define MAX_KEYS 8

typedef struct {
    char name[64];
    double ms;
    int torch;
} base_t;

typedef struct {
    char op[24], model[32], shape[96], id[160];
    const char *keys[MAX_KEYS];
    long vals[MAX_KEYS];
    int nkeys;
    long *sizes; /* adamw: tensor sizes (for the torch baseline) */
    int nsizes;
    double ms, ms_min, ms_max;
    int reps;
    double flop, bytes;
    int bound, goal, want_torch;
    base_t base[MAX_BASE];
    int nbase;
    cJSON *torch; /* the torch script's object for this case */
    char error[300];
} result;

typedef struct {
    lt_backend *be;
    int cuda, quick, act_size, param_size;
    double budget_s;
    int min_reps, max_reps;
    void *flush;
    size_t flush_bytes;
    double peak_gbps, peak_tflops, peak_copy_bytes;
    char peak_gemm[64];
    lt_cuda_bench_info info;
    lt_dtype act_dtype;
    const char *filter;
    const char *op; /* --op NAME: one op of the table (NULL: all) */
    int dead; /* the backend recorded a failure: later cases are skipped */
    result *res;
    int nres, cap;
    float *msbuf;
} bench;

/* ------------------------------------------------------------------------ */
/* buffers: every case allocates into a pool and frees it at its end        */

typedef struct {
    void *p[64];
    int n;
} pool;

static void pool_free(bench *b, pool *pl) {
    for (int i = 0; i < pl->n; i++) b->be->free(b->be, pl->p[i]);
    pl->n = 0;
}

static void *pool_alloc(bench *b, pool *pl, size_t bytes, lt_err *err) {
    if (pl->n == (int)(sizeof pl->p / sizeof pl->p[0])) {
        lt_fail(err, LT_ERR_NOMEM, "bench: more than %d buffers in one case", pl->n);
        return NULL;
    }
    void *p = NULL;
    if (b->be->alloc(b->be, bytes ? bytes : 1, &p, err) != LT_OK) return NULL;
    pl->p[pl->n++] = p;
    return p;
}

/* n elements of dtype dt filled with scale * (unit-variance random values) */
static void *pool_rand(bench *b, pool *pl, size_t n, lt_dtype dt, uint64_t seed, float scale, lt_err *err) {
    void *p = pool_alloc(b, pl, n * lt_dtype_size(dt), err);
    if (!p) return NULL;
#ifdef LT_HAVE_CUDA
    if (b->cuda) return lt_cuda_bench_fill(b->be, p, dt, n, seed, scale, err) == LT_OK ? p : NULL;
#endif
    lt_rng r;
    lt_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        float v = lt_rng_normal(&r) * scale;
        if (dt == LT_F32)
            ((float *)p)[i] = v;
        else if (dt == LT_BF16)
            ((uint16_t *)p)[i] = lt_f32_to_bf16(v);
        else
            ((uint16_t *)p)[i] = lt_f32_to_f16(v);
    }
    return p;
}

static void *pool_zero(bench *b, pool *pl, size_t bytes, lt_err *err) {
    void *p = pool_alloc(b, pl, bytes, err);
    if (p) b->be->zero(b->be, p, bytes);
    return p;
}

static void *pool_upload(bench *b, pool *pl, const void *src, size_t bytes, lt_err *err) {
    void *p = pool_alloc(b, pl, bytes, err);
    if (p && b->be->upload(b->be, p, src, bytes, err) != LT_OK) return NULL;
    return p;
}

/* ------------------------------------------------------------------------ */
/* timing                                                                   */

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static lt_status time_reps(bench *b, lt_bench_fn fn, void *arg, int reps, float *ms, lt_err *err) {
#ifdef LT_HAVE_CUDA
    if (b->cuda) return lt_cuda_bench_time(b->be, fn, arg, reps, b->flush, b->flush_bytes, ms, err);
#endif
    for (int i = 0; i < reps; i++) {
        if (b->flush) memset(b->flush, i & 0xff, b->flush_bytes);
        double t0 = lt_now_s();
        fn(arg);
        lt_status st = b->be->sync(b->be, err);
        if (st != LT_OK) return st;
        ms[i] = (float)((lt_now_s() - t0) * 1e3);
    }
    return LT_OK;
}

typedef struct {
    double med, min, max;
    int reps;
} timing;

/* two warm-up calls (the second one estimates the time), then enough calls
 * to fill the budget; median, min and max */
static lt_status measure(bench *b, lt_bench_fn fn, void *arg, timing *t, lt_err *err) {
    float est;
    lt_status st;
    if ((st = time_reps(b, fn, arg, 1, &est, err)) != LT_OK) return st;
    if ((st = time_reps(b, fn, arg, 1, &est, err)) != LT_OK) return st;
    int reps = est > 0 ? (int)ceil(b->budget_s * 1e3 / est) : b->max_reps;
    if (reps < b->min_reps) reps = b->min_reps;
    if (reps > b->max_reps) reps = b->max_reps;
    if (est > 500.0 && reps > 3) reps = 3; /* a slow kernel: the median of 3 is enough, keep the run short */
    if ((st = time_reps(b, fn, arg, reps, b->msbuf, err)) != LT_OK) return st;
    qsort(b->msbuf, (size_t)reps, sizeof(float), cmp_float);
    t->reps = reps;
    t->min = b->msbuf[0];
    t->max = b->msbuf[reps - 1];
    t->med = reps % 2 ? b->msbuf[reps / 2] : 0.5 * (b->msbuf[reps / 2 - 1] + b->msbuf[reps / 2]);
    return LT_OK;
}

/* ------------------------------------------------------------------------ */
/* result bookkeeping                                                       */

static result *new_result(bench *b, const char *op, const char *model) {
    if (b->nres == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        result *r = realloc(b->res, (size_t)cap * sizeof *r);
        if (!r) return NULL;
        b->res = r;
        b->cap = cap;
    }
    result *r = &b->res[b->nres++];
    memset(r, 0, sizeof *r);
    snprintf(r->op, sizeof r->op, "%s", op);
    snprintf(r->model, sizeof r->model, "%s", model);
    return r;
}

static void set_key(result *r, const char *k, long v) {
    if (r->nkeys < MAX_KEYS) {
        r->keys[r->nkeys] = k;
        r->vals[r->nkeys++] = v;
    }
}

static void finish_id(result *r) {
    size_t o = 0;
    r->shape[0] = 0;
    for (int i = 0; i < r->nkeys && o < sizeof r->shape; i++)
        o += (size_t)snprintf(r->shape + o, sizeof r->shape - o, "%s%s=%ld", i ? " " : "", r->keys[i], r->vals[i]);
    snprintf(r->id, sizeof r->id, "%s %s %s", r->op, r->model, r->shape);
}

static void add_base(result *r, const char *name, double ms, int torch) {
    if (r->nbase < MAX_BASE) {
        snprintf(r->base[r->nbase].name, sizeof r->base[r->nbase].name, "%s", name);
        r->base[r->nbase].ms = ms;
        r->base[r->nbase++].torch = torch;
    }
}

/* Is this result selected by --op (its op of the table) and --only
 * (substring of the id)? */
static int selected(bench *b, const result *r) {
    const lt_op_entry *e = NULL;
    if (b->op && (!lt_op_metric_find(r->op, &e) || !lt_op_selected(b->op, e->name))) return 0;
    return !b->filter || strstr(r->id, b->filter);
}

/* FLOPs, bytes and bound of r by the table's formula for its op, from its
 * shape keys (which must be the formula's keys, in order); extra: the
 * op-specific count of lt_op_dims. */
static void metrics(bench *b, result *r, double extra) {
    const lt_op_metric *m = lt_op_metric_find(r->op, NULL);
    char keys[96] = "";
    size_t o = 0;
    lt_op_dims d = {.a = b->act_size, .p = b->param_size, .extra = extra};
    for (int i = 0; i < r->nkeys && i < LT_OP_MAXP; i++) {
        d.v[i] = (double)r->vals[i];
        o += (size_t)snprintf(keys + o, o < sizeof keys ? sizeof keys - o : 0, "%s%s", i ? " " : "", r->keys[i]);
    }
    if (!m || strcmp(m->keys, keys)) { /* a case out of step with the table: say so, count nothing */
        snprintf(r->error, sizeof r->error, "no formula in bench/lt_op_cases.c for %s with keys '%s'", r->op, keys);
        r->flop = r->bytes = 0;
        return;
    }
    r->flop = m->flop ? m->flop(&d) : 0;
    r->bytes = m->bytes(&d);
    r->bound = m->flop ? BOUND_FLOP : BOUND_MEM;
}

/* Measure `fn` for result r; on failure the error goes into r (and the
 * backend is marked dead when the failure was the backend's). */
static int run_main(bench *b, result *r, lt_bench_fn fn, void *arg) {
    lt_err e = {{0}};
    timing t;
    if (measure(b, fn, arg, &t, &e) != LT_OK) {
        snprintf(r->error, sizeof r->error, "%.290s", e.msg);
        b->dead = 1;
        return 0;
    }
    r->ms = t.med, r->ms_min = t.min, r->ms_max = t.max, r->reps = t.reps;
    fprintf(stderr, "bench: %-60s %10.4f ms (%d reps)\n", r->id, r->ms, r->reps);
    return 1;
}

static void run_base(bench *b, result *r, const char *name, lt_bench_fn fn, void *arg) {
    lt_err e = {{0}};
    timing t;
    if (measure(b, fn, arg, &t, &e) != LT_OK) {
        snprintf(r->error, sizeof r->error, "baseline %s: %.200s", name, e.msg);
        b->dead = 1;
        return;
    }
    add_base(r, name, t.med, 0);
}

/* a case could not be set up (allocation): record why, keep going */
static void setup_failed(bench *b, result *r, lt_err *e) {
    snprintf(r->error, sizeof r->error, "setup: %.280s", e->msg);
    lt_err e2;
    if (b->be->sync(b->be, &e2) != LT_OK) b->dead = 1;
    fprintf(stderr, "bench: %s: %s\n", r->id, r->error);
}

/* ------------------------------------------------------------------------ */
/* GEMM baseline (cuBLAS on CUDA, BLAS sgemm on the CPU), row-major:
 * C (M, N) = op(A) op(B) (+ beta C), A (M, K) or (K, M) if ta, B (K, N) or (N, K) if tb */

typedef struct {
    lt_backend *be;
    int cuda, ta, tb, M, N, K;
    const void *A, *B;
    void *C;
    lt_dtype ct;
    float beta;
} gemm_arg;

static void do_gemm(const gemm_arg *g) {
#ifdef LT_HAVE_CUDA
    if (g->cuda) {
        lt_cuda_bench_gemm(g->be, g->ta, g->tb, g->M, g->N, g->K, g->A, g->B, g->C, g->ct, g->beta);
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, g->M, g->N, g->K,
                1.f, g->A, g->ta ? g->M : g->K, g->B, g->tb ? g->K : g->N, g->beta, g->C, g->N);
}
static void fn_gemm(void *a) { do_gemm(a); }
static void fn_gemm2(void *a) {
    do_gemm(a);
    do_gemm((const gemm_arg *)a + 1);
}

static gemm_arg mk_gemm(bench *b, int ta, int tb, int M, int N, int K, const void *A, const void *B, void *C,
                        lt_dtype ct, float beta) {
    gemm_arg g = {b->be, b->cuda, ta, tb, M, N, K, A, B, C, ct, beta};
    return g;
}

/* ------------------------------------------------------------------------ */
/* ceilings                                                                 */

/* the backend's copy op (CPU: memcpy; CUDA: device to device on its
 * stream): the bandwidth ceiling, and the copy op's own benchmark */
typedef struct {
    lt_backend *be;
    void *dst;
    const void *src;
    size_t bytes;
} copy_arg;

static void fn_copy(void *a) {
    copy_arg *c = a;
    c->be->copy(c->be, c->dst, c->src, c->bytes);
}

static lt_status measure_peaks(bench *b, lt_err *err) {
    pool pl = {0};
    timing t;
    lt_status st = LT_OK;
    /* copy: two buffers far larger than any cache */
    size_t bytes = b->cuda ? ((size_t)1 << 30) : b->quick ? ((size_t)16 << 20) : ((size_t)64 << 20);
    void *src = pool_rand(b, &pl, bytes / 4, LT_F32, 11, 1.f, err), *dst = src ? pool_alloc(b, &pl, bytes, err) : NULL;
    if (!dst) {
        pool_free(b, &pl);
        return lt_wrap(err, LT_ERR_NOMEM, "peak copy");
    }
    copy_arg ca = {b->be, dst, src, bytes};
    void *flush = b->flush;
    b->flush = NULL; /* the copy is its own flush */
    st = measure(b, fn_copy, &ca, &t, err);
    b->flush = flush;
    pool_free(b, &pl);
    if (st != LT_OK) return lt_wrap(err, st, "peak copy");
    b->peak_copy_bytes = 2.0 * (double)bytes;
    b->peak_gbps = b->peak_copy_bytes / (t.med * 1e-3) * 1e-9;
    fprintf(stderr, "bench: peak copy %.0f MB read + written: %.4f ms, %.1f GB/s\n", b->peak_copy_bytes * 1e-6, t.med,
            b->peak_gbps);

    /* GEMM: bf16 in, fp32 accumulation, bf16 out on CUDA; sgemm on the CPU */
    int n = b->cuda ? 8192 : b->quick ? 256 : 512;
    lt_dtype dt = b->cuda ? LT_BF16 : LT_F32;
    size_t nn = (size_t)n * n;
    void *A = pool_rand(b, &pl, nn, dt, 12, 1.f, err), *B = A ? pool_rand(b, &pl, nn, dt, 13, 1.f, err) : NULL;
    void *C = B ? pool_alloc(b, &pl, nn * lt_dtype_size(dt), err) : NULL;
    if (!C) {
        pool_free(b, &pl);
        return lt_wrap(err, LT_ERR_NOMEM, "peak gemm");
    }
    gemm_arg g = mk_gemm(b, 0, 1, n, n, n, A, B, C, dt, 0.f);
    st = measure(b, fn_gemm, &g, &t, err);
    pool_free(b, &pl);
    if (st != LT_OK) return lt_wrap(err, st, "peak gemm");
    b->peak_tflops = 2.0 * n * n * (double)n / (t.med * 1e-3) * 1e-12;
    snprintf(b->peak_gemm, sizeof b->peak_gemm, "%s %dx%dx%d %s", b->cuda ? "cublasGemmEx" : "cblas_sgemm", n, n, n,
             b->cuda ? "bf16 (fp32 accumulate)" : "f32");
    fprintf(stderr, "bench: peak gemm %s: %.4f ms, %.2f TFLOP/s\n", b->peak_gemm, t.med, b->peak_tflops);
    return LT_OK;
}

/* Start two results that share a setup (fwd and bwd); returns how many of
 * them --only selected; unselected ones are dropped again. */
static int two_results(bench *b, const char *op1, const char *op2, const char *model, const char **keys,
                       const long *vals, int nk, result **r1, result **r2) {
    *r1 = *r2 = NULL;
    const char *ops[2] = {op1, op2};
    result *out[2] = {NULL, NULL};
    int idx[2] = {-1, -1};
    for (int i = 0; i < 2; i++) {
        if (!ops[i]) continue;
        result *r = new_result(b, ops[i], model);
        if (!r) continue;
        for (int k = 0; k < nk; k++) set_key(r, keys[k], vals[k]);
        finish_id(r);
        if (!selected(b, r)) {
            b->nres--;
            continue;
        }
        idx[i] = b->nres - 1;
    }
    for (int i = 0; i < 2; i++) out[i] = idx[i] >= 0 ? &b->res[idx[i]] : NULL;
    *r1 = out[0], *r2 = out[1];
    return (out[0] != NULL) + (out[1] != NULL);
}

/* ------------------------------------------------------------------------ */
/* attention                                                                */

/* The Gemma variants of the attention, rmsnorm, swiglu and cross-entropy
 * cases (attention_cap, rmsnorm_off, geglu, cross_entropy_cap): the same
 * setup, the Gemma op. */
typedef struct {
    int on;
    float cap; /* attention / final-logit soft-cap */
    int window; /* attention: sliding window (0: none) */
} gemma_opt;

typedef struct {
    lt_backend *be;
    void *q, *k, *v, *o, *dout, *dq, *dk, *dv;
    float *lse;
    int32_t *doc;
    int B, T, Hq, Hkv, D;
    float scale;
    gemma_opt g;
} att_arg;

static void fn_att_fwd(void *p) {
    att_arg *a = p;
    if (a->g.on)
        a->be->attention_cap_fwd(a->be, a->o, a->lse, a->q, a->k, a->v, a->doc, a->B, a->T, a->Hq, a->Hkv, a->D,
                                 a->scale, a->g.cap);
    else
        a->be->attention_fwd(a->be, a->o, a->lse, a->q, a->k, a->v, a->doc, a->B, a->T, a->Hq, a->Hkv, a->D,
                             a->scale);
}
static void fn_att_bwd(void *p) {
    att_arg *a = p;
    if (a->g.on)
        a->be->attention_cap_bwd(a->be, a->dq, a->dk, a->dv, a->dout, a->q, a->k, a->v, a->o, a->lse, a->doc, a->B,
                                 a->T, a->Hq, a->Hkv, a->D, a->scale, a->g.cap);
    else
        a->be->attention_bwd(a->be, a->dq, a->dk, a->dv, a->dout, a->q, a->k, a->v, a->o, a->lse, a->doc, a->B,
                             a->T, a->Hq, a->Hkv, a->D, a->scale);
}

static void case_attention_g(bench *b, const mshape *m, int B, int T, gemma_opt g) {
    result *rf, *rb;
    const char *k[] = {"B", "T", "Hq", "Hkv", "D"};
    long kv[] = {B, T, m->hq, m->hkv, m->hd};
    if (!two_results(b, g.on ? "attention_cap_fwd" : "attention_fwd", g.on ? "attention_cap_bwd" : "attention_bwd",
                     m->name, k, kv, 5, &rf, &rb))
        return;
    pool pl = {0};
    lt_err e = {{0}};
    int N = B * T, a = b->act_size;
    size_t nq = (size_t)N * m->hq * m->hd, nk = (size_t)N * m->hkv * m->hd;
    lt_dtype ad = b->be->act_dtype;
    att_arg x = {.be = b->be};
    x.B = B, x.T = T, x.Hq = m->hq, x.Hkv = m->hkv, x.D = m->hd, x.scale = 1.f / sqrtf((float)m->hd), x.g = g;
    int32_t *doc = calloc((size_t)N, sizeof *doc); /* one document per sequence (sliding: its window) */
    for (int n = 0; doc && g.window > 0 && n < N; n++) doc[n] = n % T >= g.window ? n % T - g.window + 1 : 0;
    if (!doc || !(x.q = pool_rand(b, &pl, nq, ad, 21, 1.f, &e)) || !(x.k = pool_rand(b, &pl, nk, ad, 22, 1.f, &e)) ||
        !(x.v = pool_rand(b, &pl, nk, ad, 23, 1.f, &e)) || !(x.o = pool_rand(b, &pl, nq, ad, 24, 1.f, &e)) ||
        !(x.lse = pool_zero(b, &pl, (size_t)B * m->hq * T * 4, &e)) ||
        !(x.doc = pool_upload(b, &pl, doc ? doc : (void *)&e, (size_t)N * 4, &e)) ||
        (rb && (!(x.dout = pool_rand(b, &pl, nq, ad, 25, 1.f, &e)) || !(x.dq = pool_alloc(b, &pl, nq * a, &e)) ||
                !(x.dk = pool_alloc(b, &pl, nk * a, &e)) || !(x.dv = pool_alloc(b, &pl, nk * a, &e))))) {
        if (!doc) lt_fail(&e, LT_ERR_NOMEM, "out of host memory");
        if (rf) setup_failed(b, rf, &e);
        if (rb) setup_failed(b, rb, &e);
        free(doc);
        pool_free(b, &pl);
        return;
    }
    free(doc);
    if (rf) {
        metrics(b, rf, 0);
        rf->goal = g.on ? GOAL_NONE : GOAL_SDPA, rf->want_torch = !g.on;
        run_main(b, rf, fn_att_fwd, &x);
    }
    if (rb && !b->dead) {
        fn_att_fwd(&x); /* out and lse for the backward */
        metrics(b, rb, 0);
        rb->goal = g.on ? GOAL_NONE : GOAL_SDPA, rb->want_torch = !g.on;
        run_main(b, rb, fn_att_bwd, &x);
    }
    pool_free(b, &pl);
}
static void case_attention(bench *b, const mshape *m, int B, int T) { case_attention_g(b, m, B, T, (gemma_opt){0}); }

/* ------------------------------------------------------------------------ */
/* rmsnorm                                                                  */

typedef struct {
    lt_backend *be;
    void *out, *x, *w, *dout, *dx;
    float *rstd, *dw;
    int R, C;
    int off; /* rmsnorm_off with w_off = 1 (Gemma) */
} rms_arg;

static void fn_rms_fwd(void *p) {
    rms_arg *a = p;
    if (a->off) a->be->rmsnorm_off_fwd(a->be, a->out, a->rstd, a->x, a->w, 1.0f, a->R, a->C, 1e-5f);
    else a->be->rmsnorm_fwd(a->be, a->out, a->rstd, a->x, a->w, a->R, a->C, 1e-5f);
}
static void fn_rms_bwd(void *p) {
    rms_arg *a = p;
    if (a->off) a->be->rmsnorm_off_bwd(a->be, a->dx, 0, a->dw, a->dout, a->x, a->w, 1.0f, a->rstd, a->R, a->C);
    else a->be->rmsnorm_bwd(a->be, a->dx, 0, a->dw, a->dout, a->x, a->w, a->rstd, a->R, a->C);
}

static void case_rmsnorm_g(bench *b, const mshape *m, int N, int off) {
    result *rf, *rb;
    const char *k[] = {"R", "C"};
    long v[] = {N, m->hidden};
    if (!two_results(b, off ? "rmsnorm_off_fwd" : "rmsnorm_fwd", off ? "rmsnorm_off_bwd" : "rmsnorm_bwd", m->name, k,
                     v, 2, &rf, &rb))
        return;
    pool pl = {0};
    lt_err e = {{0}};
    size_t n = (size_t)N * m->hidden;
    int a = b->act_size;
    rms_arg x = {.be = b->be, .off = off};
    x.R = N, x.C = m->hidden;
    if (!(x.x = pool_rand(b, &pl, n, b->be->act_dtype, 31, 1.f, &e)) ||
        !(x.w = pool_rand(b, &pl, (size_t)m->hidden, b->be->param_dtype, 32, 1.f, &e)) ||
        !(x.out = pool_alloc(b, &pl, n * a, &e)) || !(x.rstd = pool_zero(b, &pl, (size_t)N * 4, &e)) ||
        (rb && (!(x.dout = pool_rand(b, &pl, n, b->be->act_dtype, 33, 1.f, &e)) ||
                !(x.dx = pool_alloc(b, &pl, n * a, &e)) || !(x.dw = pool_zero(b, &pl, (size_t)m->hidden * 4, &e))))) {
        if (rf) setup_failed(b, rf, &e);
        if (rb) setup_failed(b, rb, &e);
        pool_free(b, &pl);
        return;
    }
    if (rf) {
        metrics(b, rf, 0);
        rf->goal = GOAL_BW90, rf->want_torch = 1;
        run_main(b, rf, fn_rms_fwd, &x);
    }
    if (rb && !b->dead) {
        fn_rms_fwd(&x);
        metrics(b, rb, 0);
        rb->goal = GOAL_BW90, rb->want_torch = 1;
        run_main(b, rb, fn_rms_bwd, &x);
    }
    pool_free(b, &pl);
}
static void case_rmsnorm(bench *b, const mshape *m, int N) { case_rmsnorm_g(b, m, N, 0); }

/* residual add + rmsnorm (add_rmsnorm_fwd), against the unfused pair */

typedef struct {
    lt_backend *be;
    void *h, *out, *x, *r, *w;
    float *rstd;
    int R, C;
} arms_arg;

static void fn_arms(void *p) {
    arms_arg *a = p;
    a->be->add_rmsnorm_fwd(a->be, a->h, a->out, a->rstd, a->x, a->r, a->w, a->R, a->C, 1e-5f);
}
static void fn_arms_unfused(void *p) {
    arms_arg *a = p;
    a->be->add(a->be, a->h, a->x, a->r, (size_t)a->R * a->C);
    a->be->rmsnorm_fwd(a->be, a->out, a->rstd, a->h, a->w, a->R, a->C, 1e-5f);
}

static void case_add_rmsnorm(bench *b, const mshape *m, int N) {
    result *rf, *unused;
    const char *k[] = {"R", "C"};
    long v[] = {N, m->hidden};
    if (!b->be->add_rmsnorm_fwd) return;
    if (!two_results(b, "add_rmsnorm_fwd", NULL, m->name, k, v, 2, &rf, &unused)) return;
    pool pl = {0};
    lt_err e = {{0}};
    size_t n = (size_t)N * m->hidden;
    int a = b->act_size;
    arms_arg x = {.be = b->be};
    x.R = N, x.C = m->hidden;
    /* h is its own buffer (not x): every call then reads the same x */
    if (!(x.x = pool_rand(b, &pl, n, b->be->act_dtype, 34, 1.f, &e)) ||
        !(x.r = pool_rand(b, &pl, n, b->be->act_dtype, 35, 1.f, &e)) ||
        !(x.w = pool_rand(b, &pl, (size_t)m->hidden, b->be->param_dtype, 36, 1.f, &e)) ||
        !(x.h = pool_alloc(b, &pl, n * a, &e)) || !(x.out = pool_alloc(b, &pl, n * a, &e)) ||
        !(x.rstd = pool_zero(b, &pl, (size_t)N * 4, &e))) {
        setup_failed(b, rf, &e);
        pool_free(b, &pl);
        return;
    }
    metrics(b, rf, 0);
    rf->goal = GOAL_BW90, rf->want_torch = 1;
    if (run_main(b, rf, fn_arms, &x)) run_base(b, rf, "add + rmsnorm_fwd (unfused)", fn_arms_unfused, &x);
    pool_free(b, &pl);
}

/* ------------------------------------------------------------------------ */
/* embed_noise (NEFTune, in place on the embedding output)                  */

typedef struct {
    lt_backend *be;
    void *x;
    int N, C;
} noise_arg;

static void fn_noise(void *p) {
    noise_arg *a = p;
    a->be->embed_noise(a->be, a->x, a->N, a->C, 1e-3f, 12345); /* tiny: x stays bounded over the repeats */
}

static void case_embed_noise(bench *b, const mshape *m, int N) {
    result *rf, *unused;
    const char *k[] = {"N", "C"};
    long v[] = {N, m->hidden};
    if (!two_results(b, "embed_noise", NULL, m->name, k, v, 2, &rf, &unused)) return;
    pool pl = {0};
    lt_err e = {{0}};
    noise_arg x = {.be = b->be, .N = N, .C = m->hidden};
    if (!(x.x = pool_rand(b, &pl, (size_t)N * m->hidden, b->be->act_dtype, 37, 1.f, &e))) {
        setup_failed(b, rf, &e);
        pool_free(b, &pl);
        return;
    }
    metrics(b, rf, 0);
    rf->goal = GOAL_BW90;
    run_main(b, rf, fn_noise, &x);
    pool_free(b, &pl);
}

/* ------------------------------------------------------------------------ */
/* rope                                                                     */

typedef struct {
    lt_backend *be;
    void *x;
    int32_t *pos;
    float *inv_freq;
    int N, H, D, R;
    float scale;
} rope_arg;

static void fn_rope_fwd(void *p) {
    rope_arg *a = p;
    a->be->rope_fwd(a->be, a->x, a->pos, a->inv_freq, a->N, a->H, a->D, a->R, a->scale);
}
static void fn_rope_bwd(void *p) {
    rope_arg *a = p;
    a->be->rope_bwd(a->be, a->x, a->pos, a->inv_freq, a->N, a->H, a->D, a->R, a->scale);
}

/* R: rotary dims (m->hd: full rotary; fewer: partial, as Phi-4-mini), scale:
 * LongRoPE's cos/sin factor */
static void case_rope(bench *b, const mshape *m, int N, int T, int R, float scale) {
    result *rf, *rb;
    const char *k[] = {"N", "H", "D", "R"};
    long v[] = {N, m->hq, m->hd, R};
    if (!two_results(b, "rope_fwd", "rope_bwd", m->name, k, v, 4, &rf, &rb)) return;
    pool pl = {0};
    lt_err e = {{0}};
    rope_arg x = {.be = b->be};
    x.N = N, x.H = m->hq, x.D = m->hd, x.R = R, x.scale = scale;
    int32_t *pos = malloc((size_t)N * 4);
    float *inv = malloc((size_t)R / 2 * 4);
    if (pos && inv) {
        for (int n = 0; n < N; n++) pos[n] = n % T;
        for (int i = 0; i < R / 2; i++) inv[i] = (float)pow(500000.0, -2.0 * i / R);
    }
    if (!pos || !inv || !(x.x = pool_rand(b, &pl, (size_t)N * m->hq * m->hd, b->be->act_dtype, 41, 1.f, &e)) ||
        !(x.pos = pool_upload(b, &pl, pos, (size_t)N * 4, &e)) ||
        !(x.inv_freq = pool_upload(b, &pl, inv, (size_t)R / 2 * 4, &e))) {
        if (!pos || !inv) lt_fail(&e, LT_ERR_NOMEM, "out of host memory");
        if (rf) setup_failed(b, rf, &e);
        if (rb) setup_failed(b, rb, &e);
        free(pos), free(inv);
        pool_free(b, &pl);
        return;
    }
    free(pos), free(inv);
    if (rf) {
        metrics(b, rf, 0);
        run_main(b, rf, fn_rope_fwd, &x);
    }
    if (rb && !b->dead) {
        metrics(b, rb, 0);
        run_main(b, rb, fn_rope_bwd, &x);
    }
    pool_free(b, &pl);
}

/* ------------------------------------------------------------------------ */
/* swiglu                                                                   */

typedef struct {
    lt_backend *be;
    void *out, *gate, *up, *dout, *dgate, *dup;
    size_t n;
    int gelu; /* geglu (Gemma) */
} swi_arg;

static void fn_swi_fwd(void *p) {
    swi_arg *a = p;
    if (a->gelu) a->be->geglu_fwd(a->be, a->out, a->gate, a->up, a->n);
    else a->be->swiglu_fwd(a->be, a->out, a->gate, a->up, a->n);
}
static void fn_swi_bwd(void *p) {
    swi_arg *a = p;
    if (a->gelu) a->be->geglu_bwd(a->be, a->dgate, a->dup, a->dout, a->gate, a->up, a->n);
    else a->be->swiglu_bwd(a->be, a->dgate, a->dup, a->dout, a->gate, a->up, a->n);
}

static void case_swiglu_g(bench *b, const mshape *m, int N, int gelu) {
    result *rf, *rb;
    const char *k[] = {"N", "F"};
    long v[] = {N, m->ffn};
    if (!two_results(b, gelu ? "geglu_fwd" : "swiglu_fwd", gelu ? "geglu_bwd" : "swiglu_bwd", m->name, k, v, 2, &rf,
                     &rb))
        return;
    pool pl = {0};
    lt_err e = {{0}};
    swi_arg x = {.be = b->be, .gelu = gelu};
    x.n = (size_t)N * m->ffn;
    size_t by = x.n * b->act_size;
    lt_dtype ad = b->be->act_dtype;
    if (!(x.gate = pool_rand(b, &pl, x.n, ad, 51, 2.f, &e)) || !(x.up = pool_rand(b, &pl, x.n, ad, 52, 1.f, &e)) ||
        !(x.out = pool_alloc(b, &pl, by, &e)) ||
        (rb && (!(x.dout = pool_rand(b, &pl, x.n, ad, 53, 1.f, &e)) || !(x.dgate = pool_alloc(b, &pl, by, &e)) ||
                !(x.dup = pool_alloc(b, &pl, by, &e))))) {
        if (rf) setup_failed(b, rf, &e);
        if (rb) setup_failed(b, rb, &e);
        pool_free(b, &pl);
        return;
    }
    if (rf) {
        metrics(b, rf, 0);
        rf->want_torch = !gelu;
        run_main(b, rf, fn_swi_fwd, &x);
    }
    if (rb && !b->dead) {
        metrics(b, rb, 0);
        run_main(b, rb, fn_swi_bwd, &x);
    }
    pool_free(b, &pl);
}
static void case_swiglu(bench *b, const mshape *m, int N) { case_swiglu_g(b, m, N, 0); }

/* scale (Gemma's embedding normalizer), in place */
typedef struct {
    lt_backend *be;
    void *x;
    size_t n;
} scale_arg;
static void fn_scale(void *p) {
    scale_arg *a = p;
    a->be->scale(a->be, a->x, a->n, 48.0f);
}
static void case_scale(bench *b, const mshape *m, int N) {
    result *r, *unused;
    const char *k[] = {"N", "C"};
    long v[] = {N, m->hidden};
    if (!two_results(b, "scale", NULL, m->name, k, v, 2, &r, &unused)) return;
    pool pl = {0};
    lt_err e = {{0}};
    scale_arg x = {.be = b->be, .n = (size_t)N * m->hidden};
    if (!(x.x = pool_rand(b, &pl, x.n, b->be->act_dtype, 57, 1.f, &e))) {
        setup_failed(b, r, &e);
        pool_free(b, &pl);
        return;
    }
    metrics(b, r, 0);
    run_main(b, r, fn_scale, &x);
    pool_free(b, &pl);
}

/* copy: a device-to-device copy of N x C activations (ZeRO-3 copies its
 * part of each weight into the gather buffer with it) */
static void case_copy(bench *b, const mshape *m, int N) {
    result *r, *unused;
    const char *k[] = {"N", "C"};
    long v[] = {N, m->hidden};
    if (!two_results(b, "copy", NULL, m->name, k, v, 2, &r, &unused)) return;
    pool pl = {0};
    lt_err e = {{0}};
    size_t n = (size_t)N * m->hidden;
    copy_arg x = {.be = b->be, .bytes = n * b->act_size};
    if (!(x.src = pool_rand(b, &pl, n, b->be->act_dtype, 58, 1.f, &e)) || !(x.dst = pool_alloc(b, &pl, x.bytes, &e))) {
        setup_failed(b, r, &e);
        pool_free(b, &pl);
        return;
    }
    metrics(b, r, 0);
    run_main(b, r, fn_copy, &x);
    pool_free(b, &pl);
}

/* ------------------------------------------------------------------------ */
/* embedding                                                                */

typedef struct {
    lt_backend *be;
    void *out, *table, *dout;
    float *dtable;
    int32_t *ids;
    int N, C;
} emb_arg;

static void fn_emb_fwd(void *p) {
    emb_arg *a = p;
    a->be->embedding_fwd(a->be, a->out, a->table, a->ids, a->N, a->C);
}
static void fn_emb_bwd(void *p) {
    emb_arg *a = p;
    a->be->embedding_bwd(a->be, a->dtable, a->dout, a->ids, a->N, a->C);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static void case_embedding(bench *b, const mshape *m, int N) {
    result *rf, *rb;
    const char *k[] = {"N", "C", "V"};
    long v[] = {N, m->hidden, m->vocab};
    if (!two_results(b, "embedding_fwd", "embedding_bwd", m->name, k, v, 3, &rf, &rb)) return;
    pool pl = {0};
    lt_err e = {{0}};
    emb_arg x = {.be = b->be};
    x.N = N, x.C = m->hidden;
    size_t nt = (size_t)m->vocab * m->hidden, no = (size_t)N * m->hidden;
    int32_t *ids = malloc((size_t)N * 4), *srt = malloc((size_t)N * 4);
    long uniq = 0;
    if (ids && srt) {
        lt_rng r;
        lt_rng_seed(&r, 61);
        for (int n = 0; n < N; n++) ids[n] = srt[n] = (int32_t)(lt_rng_u64(&r) % (uint64_t)m->vocab);
        qsort(srt, (size_t)N, 4, cmp_i32);
        for (int n = 0; n < N; n++) uniq += n == 0 || srt[n] != srt[n - 1];
    }
    if (!ids || !srt || !(x.table = pool_rand(b, &pl, nt, b->be->param_dtype, 62, 1.f, &e)) ||
        !(x.ids = pool_upload(b, &pl, ids, (size_t)N * 4, &e)) || !(x.out = pool_alloc(b, &pl, no * b->act_size, &e)) ||
        (rb && (!(x.dout = pool_rand(b, &pl, no, b->be->act_dtype, 63, 1.f, &e)) ||
                !(x.dtable = pool_zero(b, &pl, nt * 4, &e))))) {
        if (!ids || !srt) lt_fail(&e, LT_ERR_NOMEM, "out of host memory");
        if (rf) setup_failed(b, rf, &e);
        if (rb) setup_failed(b, rb, &e);
        free(ids), free(srt);
        pool_free(b, &pl);
        return;
    }
    free(ids), free(srt);
    if (rf) {
        metrics(b, rf, 0);
        rf->want_torch = 1;
        run_main(b, rf, fn_emb_fwd, &x);
    }
    if (rb && !b->dead) {
        metrics(b, rb, (double)uniq);
        run_main(b, rb, fn_emb_bwd, &x);
    }
    pool_free(b, &pl);
}

/* ------------------------------------------------------------------------ */
/* matmul and LoRA                                                          */

typedef struct {
    lt_backend *be;
    void *x, *w, *out, *dout, *dx;
    float *dw, *A, *B, *xa, *dA, *dB;
    int M, K, N, r;
    float scale;
} mm_arg;

static void fn_mm_fwd(void *p) {
    mm_arg *a = p;
    a->be->matmul_fwd(a->be, a->out, a->x, a->w, NULL, a->M, a->K, a->N);
}
static void fn_mm_bwd(void *p) {
    mm_arg *a = p;
    a->be->matmul_bwd(a->be, a->dx, 0, a->dw, NULL, a->dout, a->x, a->w, a->M, a->K, a->N);
}
/* the frozen-weight GEMMs of a LoRA layer alone: forward + dx */
static void fn_frozen(void *p) {
    mm_arg *a = p;
    a->be->matmul_fwd(a->be, a->out, a->x, a->w, NULL, a->M, a->K, a->N);
    a->be->matmul_bwd(a->be, a->dx, 0, NULL, NULL, a->dout, a->x, a->w, a->M, a->K, a->N);
}
static void fn_lora(void *p) {
    mm_arg *a = p;
    a->be->lora_fwd(a->be, a->out, a->xa, a->x, a->x, a->w, NULL, a->A, a->B, a->M, a->K, a->N, a->r, a->scale);
    a->be->lora_bwd(a->be, a->dx, 0, NULL, a->dA, a->dB, a->dout, a->x, a->w, a->A, a->B, a->xa, a->M, a->K, a->N,
                    a->r, a->scale);
}

/* QLoRA's frozen NF4 linear: forward and dx (no weight gradient) */
static void fn_nf4_fwd(void *p) {
    mm_arg *a = p;
    a->be->nf4_matmul_fwd(a->be, a->out, a->x, a->w, NULL, a->M, a->K, a->N);
}
static void fn_nf4_bwd(void *p) {
    mm_arg *a = p;
    a->be->nf4_matmul_bwd(a->be, a->dx, 0, a->dout, a->w, a->M, a->K, a->N);
}

/* The NF4 op with the other kernel variant as a baseline: v1 (dequantized
 * tiles + cuBLAS) next to the default fused kernel (lt_op_nf4_variant; a
 * backend without variants, the CPU, has none to time). */
static void run_nf4_v1_base(bench *b, result *r, lt_bench_fn fn, mm_arg *x) {
    lt_err e = {{0}};
    if (!b->be->set_option || b->dead) return;
    if (lt_op_nf4_variant(b->be, 1, &e) == LT_OK) run_base(b, r, "nf4 v1: dequantized tiles + cuBLAS", fn, x);
    else snprintf(r->error, sizeof r->error, "nf4 v1 baseline: %.260s", e.msg);
    if (lt_op_nf4_variant(b->be, 0, &e) != LT_OK) {
        snprintf(r->error, sizeof r->error, "nf4 default variant: %.260s", e.msg);
        b->dead = 1;
    }
}

/* A random NF4 weight of n elements (random codes, nested absmaxes 0.02,
 * offset 0.01): a valid layout (core/lt_nf4.h) without quantizing a large
 * matrix here. NULL (e set) if out of memory. */
static void *pool_nf4(bench *b, pool *pl, size_t n, lt_err *e) {
    lt_nf4_layout L = lt_nf4_layout_of(n);
    unsigned char *h = malloc(L.bytes);
    if (!h) {
        lt_fail(e, LT_ERR_NOMEM, "out of host memory for an NF4 weight of %zu bytes", L.bytes);
        return NULL;
    }
    lt_rng r;
    lt_rng_seed(&r, 74);
    for (size_t i = 0; i < L.off_absmax2; i++) h[i] = (unsigned char)lt_rng_u64(&r);
    for (size_t j = 0; j <= L.nblocks2; j++) { /* the nested absmaxes, then the offset */
        float f = j < L.nblocks2 ? 0.02f : 0.01f;
        memcpy(h + L.off_absmax2 + j * sizeof(float), &f, sizeof f);
    }
    void *d = pool_upload(b, pl, h, L.bytes, e);
    free(h);
    return d;
}

/* A linear layer: matmul (fwd; bwd = dx and dW) or, nf4 = 1, QLoRA's frozen
 * NF4 linear (fwd; bwd = dx only) against the same GEMMs on the unquantized
 * weight. tag names the layer: "q/o" (hidden -> hidden), "up" (hidden ->
 * ffn), "down" (ffn -> hidden), "lm_head" */
static void case_linear(bench *b, const mshape *m, const char *tag, int M, int K, int N, int nf4) {
    result *rf, *rb;
    const char *k[] = {"M", "K", "N"};
    long v[] = {M, K, N};
    char model[32];
    snprintf(model, sizeof model, "%s %s", m->name, tag);
    if (!two_results(b, nf4 ? "nf4_matmul_fwd" : "matmul_fwd", nf4 ? "nf4_matmul_bwd" : "matmul_bwd", model, k, v,
                     3, &rf, &rb))
        return;
    pool pl = {0};
    lt_err e = {{0}};
    mm_arg x = {.be = b->be};
    x.M = M, x.K = K, x.N = N;
    int a = b->act_size;
    lt_dtype ad = b->be->act_dtype, pd = b->be->param_dtype;
    size_t mk = (size_t)M * K, nk = (size_t)N * K, mn = (size_t)M * N;
    void *wfull = NULL; /* the unquantized weight (the baselines') */
    if (!(x.x = pool_rand(b, &pl, mk, ad, 71, 1.f, &e)) || !(wfull = pool_rand(b, &pl, nk, pd, 72, 0.02f, &e)) ||
        !(x.w = nf4 ? pool_nf4(b, &pl, nk, &e) : wfull) || !(x.out = pool_alloc(b, &pl, mn * a, &e)) ||
        (rb && (!(x.dout = pool_rand(b, &pl, mn, ad, 73, 1.f, &e)) || !(x.dx = pool_alloc(b, &pl, mk * a, &e)) ||
                (!nf4 && !(x.dw = pool_zero(b, &pl, nk * 4, &e)))))) {
        if (rf) setup_failed(b, rf, &e);
        if (rb) setup_failed(b, rb, &e);
        pool_free(b, &pl);
        return;
    }
    const char *bn = nf4 ? (b->cuda ? "cuBLAS GemmEx (bf16 weight)" : "BLAS sgemm (f32 weight)")
                         : (b->cuda ? "cuBLAS GemmEx" : "BLAS sgemm");
    int base_ok = b->cuda || (ad == LT_F32 && pd == LT_F32);
    if (rf) {
        metrics(b, rf, 0);
        if (run_main(b, rf, nf4 ? fn_nf4_fwd : fn_mm_fwd, &x) && base_ok) {
            gemm_arg g = mk_gemm(b, 0, 1, M, N, K, x.x, wfull, x.out, ad, 0.f);
            run_base(b, rf, bn, fn_gemm, &g);
            if (nf4) run_nf4_v1_base(b, rf, fn_nf4_fwd, &x);
        }
    }
    if (rb && !b->dead) {
        metrics(b, rb, 0);
        if (run_main(b, rb, nf4 ? fn_nf4_bwd : fn_mm_bwd, &x) && base_ok) {
            gemm_arg g[2] = {mk_gemm(b, 0, 0, M, K, N, x.dout, wfull, x.dx, ad, 0.f), /* dx */
                             mk_gemm(b, 1, 0, N, K, M, x.dout, x.x, x.dw, LT_F32, 1.f)}; /* dW (not nf4) */
            run_base(b, rb, bn, nf4 ? fn_gemm : fn_gemm2, g);
            if (nf4) run_nf4_v1_base(b, rb, fn_nf4_bwd, &x);
        }
    }
    pool_free(b, &pl);
}
static void case_matmul(bench *b, const mshape *m, const char *tag, int M, int K, int N) {
    case_linear(b, m, tag, M, K, N, 0);
}
static void case_nf4(bench *b, const mshape *m, const char *tag, int M, int K, int N) {
    case_linear(b, m, tag, M, K, N, 1);
}

static void case_lora(bench *b, const mshape *m, const char *tag, int M, int K, int N, int r) {
    result *rl, *unused;
    const char *k[] = {"M", "K", "N", "r"};
    long v[] = {M, K, N, r};
    char model[32];
    snprintf(model, sizeof model, "%s %s", m->name, tag);
    if (!two_results(b, "lora_fwd+bwd", NULL, model, k, v, 4, &rl, &unused)) return;
    pool pl = {0};
    lt_err e = {{0}};
    mm_arg x = {.be = b->be};
    x.M = M, x.K = K, x.N = N, x.r = r, x.scale = 2.f; /* alpha / r = 32 / 16 */
    int a = b->act_size;
    lt_dtype ad = b->be->act_dtype, pd = b->be->param_dtype;
    size_t mk = (size_t)M * K, nk = (size_t)N * K, mn = (size_t)M * N;
    if (!(x.x = pool_rand(b, &pl, mk, ad, 81, 1.f, &e)) || !(x.w = pool_rand(b, &pl, nk, pd, 82, 0.02f, &e)) ||
        !(x.out = pool_alloc(b, &pl, mn * a, &e)) || !(x.dout = pool_rand(b, &pl, mn, ad, 83, 1.f, &e)) ||
        !(x.dx = pool_alloc(b, &pl, mk * a, &e)) ||
        !(x.A = pool_rand(b, &pl, (size_t)r * K, LT_F32, 84, 1.f / sqrtf((float)K), &e)) ||
        !(x.B = pool_rand(b, &pl, (size_t)N * r, LT_F32, 85, 0.01f, &e)) ||
        !(x.xa = pool_zero(b, &pl, (size_t)M * r * 4, &e)) || !(x.dA = pool_zero(b, &pl, (size_t)r * K * 4, &e)) ||
        !(x.dB = pool_zero(b, &pl, (size_t)N * r * 4, &e))) {
        setup_failed(b, rl, &e);
        pool_free(b, &pl);
        return;
    }
    metrics(b, rl, 0);
    rl->goal = GOAL_LORA;
    if (run_main(b, rl, fn_lora, &x)) {
        run_base(b, rl, "frozen GEMMs (matmul fwd+dx)", fn_frozen, &x);
        if (!b->dead && (b->cuda || (ad == LT_F32 && pd == LT_F32))) {
            gemm_arg g[2] = {mk_gemm(b, 0, 1, M, N, K, x.x, x.w, x.out, ad, 0.f),
                             mk_gemm(b, 0, 0, M, K, N, x.dout, x.w, x.dx, ad, 0.f)};
            run_base(b, rl, b->cuda ? "cuBLAS fwd+dx" : "BLAS fwd+dx", fn_gemm2, g);
        }
    }
    pool_free(b, &pl);
}

/* ------------------------------------------------------------------------ */
/* cross-entropy                                                            */

typedef struct {
    lt_backend *be;
    float *loss;
    void *dlogits, *logits;
    int32_t *targets;
    int N, V;
    float cap; /* > 0: cross_entropy_cap (Gemma 2's final-logit soft-cap) */
} ce_arg;

static void fn_ce(void *p) {
    ce_arg *a = p;
    if (a->cap > 0)
        a->be->cross_entropy_cap(a->be, a->loss, a->dlogits, a->logits, a->targets, a->N, a->V, 1.f / (float)a->N,
                                 a->cap);
    else
        a->be->cross_entropy(a->be, a->loss, a->dlogits, a->logits, a->targets, a->N, a->V, 1.f / (float)a->N);
}

static void case_ce_g(bench *b, const char *model, int N, int V, float cap) {
    result *r, *unused;
    const char *k[] = {"N", "V"};
    long v[] = {N, V};
    if (!two_results(b, cap > 0 ? "cross_entropy_cap" : "cross_entropy", NULL, model, k, v, 2, &r, &unused)) return;
    pool pl = {0};
    lt_err e = {{0}};
    ce_arg x = {.be = b->be, .cap = cap};
    x.N = N, x.V = V;
    size_t nv = (size_t)N * V;
    int32_t *tg = malloc((size_t)N * 4);
    if (tg) {
        lt_rng g;
        lt_rng_seed(&g, 91);
        for (int n = 0; n < N; n++) tg[n] = (int32_t)(lt_rng_u64(&g) % (uint64_t)V);
    }
    if (!tg || !(x.logits = pool_rand(b, &pl, nv, b->be->act_dtype, 92, 2.f, &e)) ||
        !(x.dlogits = pool_alloc(b, &pl, nv * b->act_size, &e)) || !(x.loss = pool_zero(b, &pl, (size_t)N * 4, &e)) ||
        !(x.targets = pool_upload(b, &pl, tg, (size_t)N * 4, &e))) {
        if (!tg) lt_fail(&e, LT_ERR_NOMEM, "out of host memory");
        setup_failed(b, r, &e);
        free(tg);
        pool_free(b, &pl);
        return;
    }
    free(tg);
    metrics(b, r, 0);
    r->want_torch = !(cap > 0);
    run_main(b, r, fn_ce, &x);
    pool_free(b, &pl);
}
static void case_ce(bench *b, const char *model, int N, int V) { case_ce_g(b, model, N, V, 0.0f); }

/* Gemma 2's ops at a model's shape: capped attention over sliding windows,
 * the offset norm, GeGLU, the normalizer, the capped loss */
static void run_gemma(bench *b, const mshape *m, int N, int T, int window) {
    gemma_opt g = {.on = 1, .cap = 50.0f, .window = window};
    if (!b->dead) case_attention_g(b, m, N / T, T, g);
    if (!b->dead) case_rmsnorm_g(b, m, N, 1);
    if (!b->dead) case_swiglu_g(b, m, N, 1);
    if (!b->dead) case_scale(b, m, N);
    if (!b->dead) case_ce_g(b, m->name, N, m->vocab, 30.0f);
}

/* ------------------------------------------------------------------------ */
/* AdamW: every tensor of a parameter set in one call                       */

typedef struct {
    lt_backend *be;
    lt_adamw_tensor *ts;
    int count, step;
} adamw_arg;

static void fn_adamw(void *p) {
    adamw_arg *a = p;
    a->step++;
    a->be->adamw(a->be, a->ts, a->count, 1e-4f, 0.9f, 0.999f, 1e-8f, a->step, 1.f);
}

/* tensor sizes of a model's parameters: full fine-tuning (every weight,
 * tied embedding) or LoRA adapters (A and B for the 7 linears per layer) */
static long *param_sizes(const mshape *m, int lora_r, int *count) {
    long h = m->hidden, kv = (long)m->hkv * m->hd, q = (long)m->hq * m->hd, f = m->ffn;
    long in[7] = {h, h, h, q, h, h, f}, out[7] = {q, kv, kv, h, f, f, h}; /* q k v o gate up down */
    int per = lora_r ? 14 : 9, n = m->layers * per + (lora_r ? 0 : 2);
    long *s = malloc((size_t)n * sizeof *s);
    if (!s) return NULL;
    int i = 0;
    if (!lora_r) s[i++] = (long)m->vocab * h; /* embedding (tied with the head) */
    for (int l = 0; l < m->layers; l++) {
        for (int j = 0; j < 7; j++) {
            if (lora_r) {
                s[i++] = (long)lora_r * in[j];  /* A (r, in) */
                s[i++] = out[j] * (long)lora_r; /* B (out, r) */
            } else
                s[i++] = out[j] * in[j];
        }
        if (!lora_r) s[i++] = h, s[i++] = h; /* the two norms */
    }
    if (!lora_r) s[i++] = h; /* final norm */
    *count = i;
    return s;
}

static void case_adamw(bench *b, const mshape *m, int lora_r) {
    result *r, *unused;
    int count = 0;
    long *sizes = param_sizes(m, lora_r, &count);
    char model[32];
    snprintf(model, sizeof model, "%s %s", m->name, lora_r ? "lora" : "full");
    long total = 0;
    for (int i = 0; sizes && i < count; i++) total += sizes[i];
    /* full fine-tuning keeps bf16 weights + f32 master weights where the
     * backend's weights are not f32; LoRA adapters are f32 */
    int master = !lora_r && b->be->param_dtype != LT_F32;
    const char *k[] = {"tensors", "elements", "r", "master"};
    long v[] = {count, total, lora_r, master};
    if (!two_results(b, "adamw", NULL, model, k, v, 4, &r, &unused)) {
        free(sizes);
        return;
    }
    r->sizes = sizes, r->nsizes = count;
    pool pl = {0};
    lt_err e = {{0}};
    lt_dtype pd = master ? b->be->param_dtype : LT_F32;
    size_t ps = lt_dtype_size(pd);
    /* one arena per kind of buffer, each tensor 256-byte aligned in it */
    size_t nal = 0;
    for (int i = 0; i < count; i++) nal += ((size_t)sizes[i] + 63) / 64 * 64;
    adamw_arg x = {.be = b->be};
    x.count = count;
    x.ts = calloc((size_t)count, sizeof *x.ts);
    char *P = NULL, *Mw = NULL, *G = NULL, *Mm = NULL, *Vv = NULL;
    if (!sizes || !x.ts || !(P = pool_rand(b, &pl, nal, pd, 101, 0.02f, &e)) ||
        (master && !(Mw = pool_rand(b, &pl, nal, LT_F32, 102, 0.02f, &e))) ||
        !(G = pool_rand(b, &pl, nal, LT_F32, 103, 1e-3f, &e)) || !(Mm = pool_zero(b, &pl, nal * 4, &e)) ||
        !(Vv = pool_zero(b, &pl, nal * 4, &e))) {
        if (!sizes || !x.ts) lt_fail(&e, LT_ERR_NOMEM, "out of host memory");
        setup_failed(b, r, &e);
        free(x.ts);
        pool_free(b, &pl);
        return;
    }
    size_t off = 0;
    for (int i = 0; i < count; i++) {
        lt_adamw_tensor *t = &x.ts[i];
        t->param = P + off * ps, t->param_dtype = pd;
        t->master = master ? (float *)Mw + off : NULL;
        t->grad = (float *)G + off, t->m = (float *)Mm + off, t->v = (float *)Vv + off;
        t->n = (size_t)sizes[i];
        t->weight_decay = sizes[i] == m->hidden ? 0.f : 0.01f; /* no decay on norms */
        off += ((size_t)sizes[i] + 63) / 64 * 64;
    }
    metrics(b, r, 0);
    r->goal = GOAL_BW90, r->want_torch = 1;
    run_main(b, r, fn_adamw, &x);
    free(x.ts);
    pool_free(b, &pl);
}

/* ------------------------------------------------------------------------ */
/* sumsq_units: the data-parallel gradient norm's per-unit sums             */

typedef struct {
    lt_backend *be;
    const float *g;
    size_t n, unit;
    double *out; /* host, ceil(n / unit) */
} sumsq_units_arg;

static void fn_sumsq_units(void *p) {
    sumsq_units_arg *a = p;
    a->be->sumsq_units(a->be, a->g, a->n, a->unit, a->out);
}

/* the loop it replaces: one sumsq (one host synchronisation) per unit */
static void fn_sumsq_per_unit(void *p) {
    sumsq_units_arg *a = p;
    for (size_t k = 0, e0 = 0; e0 < a->n; k++, e0 += a->unit)
        a->out[k] = a->be->sumsq(a->be, a->g + e0, a->n - e0 < a->unit ? a->n - e0 : a->unit);
}

/* the flattened gradient of a parameter set (param_sizes) in the units of
 * lt_optim_granule, as lt_optim_grad_norm cuts it */
static void case_sumsq_units(bench *b, const mshape *m, int lora_r) {
    result *r, *unused;
    int count = 0;
    long *sizes = param_sizes(m, lora_r, &count), total = 0;
    for (int i = 0; sizes && i < count; i++) total += sizes[i];
    free(sizes);
    char model[32];
    snprintf(model, sizeof model, "%s %s", m->name, lora_r ? "lora" : "full");
    sumsq_units_arg x = {.be = b->be, .n = (size_t)total, .unit = lt_optim_granule((size_t)total)};
    const char *k[] = {"n", "unit"};
    long v[] = {total, (long)x.unit};
    if (!two_results(b, "sumsq_units", NULL, model, k, v, 2, &r, &unused)) return;
    pool pl = {0};
    lt_err e = {{0}};
    x.out = malloc(((x.n + x.unit - 1) / x.unit) * sizeof(double));
    if (!x.out || !(x.g = pool_rand(b, &pl, x.n, LT_F32, 104, 1e-3f, &e))) {
        if (!x.out) lt_fail(&e, LT_ERR_NOMEM, "out of host memory");
        setup_failed(b, r, &e);
        free(x.out);
        pool_free(b, &pl);
        return;
    }
    metrics(b, r, 0);
    if (run_main(b, r, fn_sumsq_units, &x)) run_base(b, r, "sumsq per unit (one synchronisation each)", fn_sumsq_per_unit, &x);
    free(x.out);
    pool_free(b, &pl);
}

/* ------------------------------------------------------------------------ */
/* the suite                                                                */

static void run_model(bench *b, const mshape *m, int N, int T, const int (*att)[2], int natt, int lora, int mm) {
    for (int i = 0; i < natt && !b->dead; i++) case_attention(b, m, att[i][0], att[i][1]);
    if (!b->dead) case_rmsnorm(b, m, N);
    if (!b->dead) case_add_rmsnorm(b, m, N);
    if (!b->dead) case_rope(b, m, N, T, m->hd, 1.0f);
    if (!b->dead) case_swiglu(b, m, N);
    if (!b->dead) case_embedding(b, m, N);
    if (!b->dead) case_embed_noise(b, m, N);
    if (!b->dead) case_copy(b, m, N);
    if (mm) {
        if (!b->dead) case_matmul(b, m, "q/o", N, m->hidden, m->hq * m->hd);
        if (!b->dead) case_matmul(b, m, "up", N, m->hidden, m->ffn);
        if (!b->dead) case_matmul(b, m, "down", N, m->ffn, m->hidden);
    }
    if (lora) {
        if (!b->dead) case_nf4(b, m, "q/o", N, m->hidden, m->hq * m->hd);
        if (!b->dead) case_nf4(b, m, "down", N, m->ffn, m->hidden);
        if (!b->dead) case_lora(b, m, "q/o", N, m->hidden, m->hq * m->hd, 16);
        if (!b->dead) case_lora(b, m, "up", N, m->hidden, m->ffn, 16);
        if (!b->dead) case_lora(b, m, "down", N, m->ffn, m->hidden, 16);
    }
}

static void run_suite(bench *b) {
    if (!b->cuda) {
        const mshape *m = b->quick ? &M_TINY : &M_SMALL;
        int T = b->quick ? 32 : 128, B = 2;
        const int att[1][2] = {{B, T}};
        run_model(b, m, B * T, T, att, 1, 1, 1);
        if (!b->dead) case_matmul(b, m, "lm_head", B * T, m->hidden, m->vocab);
        if (!b->dead) case_ce(b, m->name, B * T, m->vocab);
        if (!b->dead) case_adamw(b, m, 0);
        if (!b->dead) case_adamw(b, m, 16);
        if (!b->dead) case_sumsq_units(b, m, 0);
        run_gemma(b, m, B * T, T, T / 2);
        return;
    }
    if (b->quick) {
        const int att[1][2] = {{4, 2048}};
        run_model(b, &M_1B, 8192, 2048, att, 1, 1, 1);
        if (!b->dead) case_ce(b, "llama-3 vocab", 8192, M_1B.vocab);
        if (!b->dead) case_adamw(b, &M_1B, 16);
        if (!b->dead) case_sumsq_units(b, &M_1B, 16);
        run_gemma(b, &M_GEMMA2, 4096, 4096, 2048);
        return;
    }
    /* N = 16384 tokens per step for the row-wise ops and the GEMMs */
    const int att1[2][2] = {{8, 2048}, {2, 8192}};
    const int att8[2][2] = {{4, 4096}, {1, 8192}};
    const int att14[1][2] = {{2, 4096}};
    run_model(b, &M_1B, 16384, 2048, att1, 2, 1, 1);
    run_model(b, &M_8B, 16384, 4096, att8, 2, 1, 1);
    run_model(b, &M_14B, 16384, 4096, att14, 1, 1, 1);
    if (!b->dead) case_matmul(b, &M_1B, "lm_head", 16384, M_1B.hidden, M_1B.vocab);
    if (!b->dead) case_ce(b, "llama-3 vocab", 16384, M_1B.vocab);
    if (!b->dead) case_ce(b, "qwen2.5 vocab", 8192, M_14B.vocab);
    if (!b->dead) case_ce(b, "gemma-3 vocab", 4096, 262144);
    if (!b->dead) case_rope(b, &M_PHI4, 16384, 4096, 96, 1.19f);
    if (!b->dead) case_adamw(b, &M_1B, 0);
    if (!b->dead) case_adamw(b, &M_8B, 16);
    if (!b->dead) case_sumsq_units(b, &M_1B, 0);
    if (!b->dead) case_sumsq_units(b, &M_8B, 16);
    run_gemma(b, &M_GEMMA2, 8192, 8192, 4096);
}

/* ------------------------------------------------------------------------ */
/* PyTorch baselines (bench/bench_kernels_torch.py)                          */

static const char *torch_python(void) {
    const char *p = getenv("LT_TORCH_PYTHON");
    return p && *p ? p : "python3";
}

/* bench/bench_kernels_torch.py: $LT_SOURCE_DIR/bench/, else next to this
 * source file's folder (the build records its absolute path) */
static int torch_script(char *out, size_t cap) {
    const char *src = getenv("LT_SOURCE_DIR");
    if (src && *src) {
        snprintf(out, cap, "%s/bench/bench_kernels_torch.py", src);
        if (lt_file_exists(out)) return 1;
    }
    const char *f = __FILE__, *slash = strrchr(f, '/');
    if (slash) {
        snprintf(out, cap, "%.*s/../bench/bench_kernels_torch.py", (int)(slash - f), f);
        if (lt_file_exists(out)) return 1;
    }
    snprintf(out, cap, "bench/bench_kernels_torch.py");
    return lt_file_exists(out);
}

static int shell_safe(const char *s) { return !strchr(s, '\''); }

typedef struct {
    int tried, ok;
    char python[512], status[512];
    cJSON *json; /* the script's whole output */
} torch_run;

static void run_torch(bench *b, torch_run *tr, const char *device) {
    char script[4096], cases[256], outp[256], cmd[8192];
    const char *py = torch_python();
    snprintf(tr->python, sizeof tr->python, "%s", py);
    tr->tried = 1;
    int want = 0;
    for (int i = 0; i < b->nres; i++) want += b->res[i].want_torch && !b->res[i].error[0];
    if (!want) {
        snprintf(tr->status, sizeof tr->status, "no case asks for a PyTorch baseline");
        return;
    }
    if (!torch_script(script, sizeof script)) {
        snprintf(tr->status, sizeof tr->status, "bench/bench_kernels_torch.py not found (set LT_SOURCE_DIR)");
        return;
    }
    if (!shell_safe(py) || !shell_safe(script)) {
        snprintf(tr->status, sizeof tr->status, "a quote in the python or script path");
        return;
    }
    snprintf(cmd, sizeof cmd, "'%s' -c 'import torch' >/dev/null 2>&1", py);
    if (system(cmd) != 0) {
        snprintf(tr->status, sizeof tr->status, "'%s -c \"import torch\"' failed (set LT_TORCH_PYTHON)", py);
        return;
    }
    /* the cases, as JSON */
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "cases");
    cJSON_AddStringToObject(root, "device", device);
    cJSON_AddStringToObject(root, "dtype", b->cuda ? "bf16" : "f32");
    cJSON_AddNumberToObject(root, "budget_s", b->budget_s);
    cJSON_AddNumberToObject(root, "min_reps", b->min_reps);
    cJSON_AddNumberToObject(root, "max_reps", b->max_reps);
    cJSON_AddNumberToObject(root, "flush_bytes", (double)b->flush_bytes);
    cJSON_AddNumberToObject(root, "max_seconds", b->quick ? 120 : 240);
    for (int i = 0; i < b->nres; i++) {
        result *r = &b->res[i];
        if (!r->want_torch || r->error[0]) continue;
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "id", r->id);
        cJSON_AddStringToObject(c, "op", r->op);
        for (int k = 0; k < r->nkeys; k++) cJSON_AddNumberToObject(c, r->keys[k], (double)r->vals[k]);
        if (r->sizes) {
            cJSON *s = cJSON_AddArrayToObject(c, "sizes");
            for (int k = 0; k < r->nsizes; k++) cJSON_AddItemToArray(s, cJSON_CreateNumber((double)r->sizes[k]));
        }
        cJSON_AddItemToArray(arr, c);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(cases, sizeof cases, "%s/lt_bench_cases.%d.json", tmp, (int)getpid());
    snprintf(outp, sizeof outp, "%s/lt_bench_torch.%d.json", tmp, (int)getpid());
    lt_err e = {{0}};
    if (!text || lt_write_file_atomic(cases, text, strlen(text), &e) != LT_OK) {
        snprintf(tr->status, sizeof tr->status, "writing the cases: %.400s", text ? e.msg : "out of memory");
        free(text);
        return;
    }
    free(text);
    snprintf(cmd, sizeof cmd, "'%s' '%s' --cases '%s' --out '%s' 1>&2", py, script, cases, outp);
    fprintf(stderr, "bench: PyTorch baselines: %s\n", cmd);
    fflush(stderr);
    int rc = system(cmd);
    char *data = NULL;
    size_t len = 0;
    if (rc != 0) {
        snprintf(tr->status, sizeof tr->status, "the torch script exited with status %d", rc);
    } else if (lt_read_file(outp, &data, &len, &e) != LT_OK) {
        snprintf(tr->status, sizeof tr->status, "reading its output: %.400s", e.msg);
    } else if (!(tr->json = cJSON_Parse(data))) {
        snprintf(tr->status, sizeof tr->status, "%s is not JSON", outp);
    } else {
        tr->ok = 1;
        snprintf(tr->status, sizeof tr->status, "ok");
    }
    free(data);
    remove(cases);
    remove(outp);
    if (!tr->ok) return;
    cJSON *res = cJSON_GetObjectItemCaseSensitive(tr->json, "results");
    for (int i = 0; i < b->nres; i++) {
        result *r = &b->res[i];
        cJSON *c = cJSON_GetObjectItemCaseSensitive(res, r->id);
        if (!c) continue;
        r->torch = c;
        cJSON *ms = cJSON_GetObjectItemCaseSensitive(c, "ms"), *impl = cJSON_GetObjectItemCaseSensitive(c, "impl");
        if (cJSON_IsNumber(ms) && ms->valuedouble > 0) {
            char name[64];
            snprintf(name, sizeof name, "torch %s", cJSON_IsString(impl) ? impl->valuestring : "");
            add_base(r, name, ms->valuedouble, 1);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* goals, table, JSON                                                       */

static const char *goal_text(int g) {
    switch (g) {
    case GOAL_SDPA: return "<= best torch SDPA time";
    case GOAL_BW90: return ">= 90% of copy GB/s";
    case GOAL_LORA: return "<= 1.10 x frozen GEMMs";
    default: return "";
    }
}

static double rate(const result *r) { /* TFLOP/s or GB/s */
    if (r->ms <= 0) return 0;
    return r->bound == BOUND_FLOP ? r->flop / (r->ms * 1e-3) * 1e-12 : r->bytes / (r->ms * 1e-3) * 1e-9;
}
/* the table's rate column for r's work done in `ms` (the result's or a
 * baseline's time): TF/s and GB/s for a compute-bound op, GB/s otherwise */
static void rate_text(char *out, size_t n, const result *r, double ms) {
    double gbps = ms > 0 ? r->bytes / (ms * 1e-3) * 1e-9 : 0;
    if (r->bound == BOUND_FLOP) snprintf(out, n, "%.2f TF/s %.0f GB/s", ms > 0 ? r->flop / (ms * 1e-3) * 1e-12 : 0, gbps);
    else snprintf(out, n, "%.1f GB/s", gbps);
}
static double pct_peak(const bench *b, const result *r) {
    double pk = r->bound == BOUND_FLOP ? b->peak_tflops : b->peak_gbps;
    return pk > 0 ? 100.0 * rate(r) / pk : 0;
}

/* 1 met, 0 missed, -1 cannot say (no baseline / failed) */
static int goal_met(const bench *b, const result *r, double *value) {
    *value = 0;
    if (r->goal == GOAL_NONE || r->ms <= 0) return -1;
    if (r->goal == GOAL_BW90) {
        *value = pct_peak(b, r);
        return *value >= 90.0;
    }
    for (int i = 0; i < r->nbase; i++) {
        if (r->goal == GOAL_SDPA && r->base[i].torch) {
            *value = r->base[i].ms / r->ms; /* speed-up over torch */
            return r->ms <= r->base[i].ms;
        }
        if (r->goal == GOAL_LORA && !r->base[i].torch && !strncmp(r->base[i].name, "frozen", 6)) {
            *value = r->ms / r->base[i].ms; /* time over the frozen GEMMs */
            return r->ms <= 1.10 * r->base[i].ms;
        }
    }
    return -1;
}

static void print_table(const bench *b, FILE *f) {
    fprintf(f, "\n%-15s %-22s %-40s %10s %22s %6s  %-34s %10s %6s  %s\n", "op", "model", "shape", "median ms", "rate",
            "%peak", "baseline", "base ms", "x", "goal");
    for (int i = 0; i < b->nres; i++) {
        const result *r = &b->res[i];
        char rt[48] = "", pk[16] = "", gl[64] = "";
        if (r->error[0]) {
            fprintf(f, "%-15s %-22s %-40s  ERROR: %s\n", r->op, r->model, r->shape, r->error);
            continue;
        }
        rate_text(rt, sizeof rt, r, r->ms);
        snprintf(pk, sizeof pk, "%.1f", pct_peak(b, r));
        double val;
        int met = goal_met(b, r, &val);
        if (r->goal != GOAL_NONE)
            snprintf(gl, sizeof gl, "%s %s", met < 0 ? "n/a " : met ? "MET " : "MISS", goal_text(r->goal));
        const base_t *b0 = r->nbase ? &r->base[0] : NULL;
        fprintf(f, "%-15s %-22s %-40s %10.4f %22s %6s  %-34s", r->op, r->model, r->shape, r->ms, rt, pk,
                b0 ? b0->name : "-");
        if (b0)
            fprintf(f, " %10.4f %6.2f", b0->ms, b0->ms / r->ms);
        else
            fprintf(f, " %10s %6s", "", "");
        fprintf(f, "  %s\n", gl);
        for (int k = 1; k < r->nbase; k++) { /* the baseline's own rate for the same work */
            rate_text(rt, sizeof rt, r, r->base[k].ms);
            fprintf(f, "%-15s %-22s %-40s %10s %22s %6s  %-34s %10.4f %6.2f\n", "", "", "", "", rt, "", r->base[k].name,
                    r->base[k].ms, r->base[k].ms / r->ms);
        }
    }
    fprintf(f, "(x = baseline time / our time: > 1 means luxtrain is faster; %%peak against the measured ceilings)\n");
}

static void print_goals(const bench *b, FILE *f) {
    static const struct {
        int goal;
        const char *text;
    } gs[] = {{GOAL_SDPA, "attention fwd/bwd >= best PyTorch SDPA"},
              {GOAL_BW90, "RMSNorm (+fused add) and AdamW >= 90% of copy bandwidth"},
              {GOAL_LORA, "LoRA (r=16) fwd+bwd within 10% of frozen GEMMs"}};
    fprintf(f, "peak: copy %.1f GB/s, gemm %.2f TFLOP/s (%s)\n", b->peak_gbps, b->peak_tflops, b->peak_gemm);
    for (size_t g = 0; g < sizeof gs / sizeof gs[0]; g++) {
        int n = 0, met = 0, na = 0;
        double worst = 0;
        const char *wid = "";
        for (int i = 0; i < b->nres; i++) {
            const result *r = &b->res[i];
            if (r->goal != gs[g].goal) continue;
            n++;
            double v;
            int m = goal_met(b, r, &v);
            if (m < 0) {
                na++;
                continue;
            }
            met += m;
            /* worst: lowest speed-up / % of bandwidth, highest LoRA overhead */
            int worse = gs[g].goal == GOAL_LORA ? v > worst : (worst == 0 || v < worst);
            if (worse) worst = v, wid = r->id;
        }
        if (!n) continue;
        fprintf(f, "goal %-48s met %d/%d", gs[g].text, met, n - na);
        if (na) fprintf(f, " (%d without baseline)", na);
        if (n - na > 0)
            fprintf(f, gs[g].goal == GOAL_BW90   ? ", worst %.1f%% (%s)\n"
                       : gs[g].goal == GOAL_LORA ? ", worst %.3fx frozen (%s)\n"
                                                 : ", worst %.3fx torch speed (%s)\n",
                    worst, wid);
        else
            fprintf(f, "\n");
    }
}

static const char *formula(const char *op) {
    const lt_op_metric *m = lt_op_metric_find(op, NULL);
    return m ? m->formula : "";
}

static lt_status write_json(const bench *b, const torch_run *tr, const char *path, const char *device,
                            lt_err *err) {
    cJSON *root = cJSON_CreateObject();
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    cJSON_AddStringToObject(root, "schema", "luxtrain-bench-kernels/1");
    cJSON_AddStringToObject(root, "date", date);
    cJSON_AddBoolToObject(root, "quick", b->quick);
    cJSON *dev = cJSON_AddObjectToObject(root, "device");
    cJSON_AddStringToObject(dev, "backend", device);
    cJSON_AddStringToObject(dev, "act_dtype", lt_dtype_name(b->act_dtype));
    if (b->cuda) {
        char cc[16];
        snprintf(cc, sizeof cc, "%d.%d", b->info.cc_major, b->info.cc_minor);
        cJSON_AddStringToObject(dev, "name", b->info.name);
        cJSON_AddStringToObject(dev, "compute_capability", cc);
        cJSON_AddNumberToObject(dev, "sms", b->info.sms);
        cJSON_AddNumberToObject(dev, "l2_bytes", (double)b->info.l2_bytes);
        cJSON_AddNumberToObject(dev, "memory_bytes", (double)b->info.mem_bytes);
        cJSON_AddNumberToObject(dev, "driver_version", b->info.driver_version);
        cJSON_AddNumberToObject(dev, "runtime_version", b->info.runtime_version);
    } else {
        cJSON_AddStringToObject(dev, "name", "cpu");
    }
    cJSON *t = cJSON_AddObjectToObject(root, "timing");
    cJSON_AddStringToObject(t, "method", b->cuda ? "cuda events on the backend stream, L2 flushed before each call"
                                                 : "be->sync + monotonic clock (smoke test only)");
    cJSON_AddNumberToObject(t, "budget_s", b->budget_s);
    cJSON_AddNumberToObject(t, "min_reps", b->min_reps);
    cJSON_AddNumberToObject(t, "max_reps", b->max_reps);
    cJSON_AddNumberToObject(t, "flush_bytes", (double)b->flush_bytes);
    cJSON *pk = cJSON_AddObjectToObject(root, "peak");
    cJSON_AddNumberToObject(pk, "copy_gbps", b->peak_gbps);
    cJSON_AddNumberToObject(pk, "copy_bytes", b->peak_copy_bytes);
    cJSON_AddNumberToObject(pk, "gemm_tflops", b->peak_tflops);
    cJSON_AddStringToObject(pk, "gemm", b->peak_gemm);
    cJSON *tj = cJSON_AddObjectToObject(root, "torch");
    cJSON_AddBoolToObject(tj, "used", tr->ok);
    cJSON_AddStringToObject(tj, "python", tr->python);
    cJSON_AddStringToObject(tj, "status", tr->status);
    if (tr->json) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(tr->json, "torch_version");
        cJSON *d = cJSON_GetObjectItemCaseSensitive(tr->json, "device_name");
        if (cJSON_IsString(v)) cJSON_AddStringToObject(tj, "version", v->valuestring);
        if (cJSON_IsString(d)) cJSON_AddStringToObject(tj, "device_name", d->valuestring);
    }
    cJSON *goals = cJSON_AddArrayToObject(root, "goals");
    for (int g = GOAL_SDPA; g <= GOAL_LORA; g++) {
        cJSON *o = cJSON_CreateObject();
        int n = 0, met = 0;
        for (int i = 0; i < b->nres; i++) {
            double v;
            int m = b->res[i].goal == g ? goal_met(b, &b->res[i], &v) : -1;
            if (m >= 0) n++, met += m;
        }
        cJSON_AddStringToObject(o, "goal", goal_text(g));
        cJSON_AddNumberToObject(o, "evaluated", n);
        cJSON_AddNumberToObject(o, "met", met);
        cJSON_AddItemToArray(goals, o);
    }
    cJSON *arr = cJSON_AddArrayToObject(root, "results");
    for (int i = 0; i < b->nres; i++) {
        const result *r = &b->res[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", r->id);
        cJSON_AddStringToObject(o, "op", r->op);
        cJSON_AddStringToObject(o, "model", r->model);
        cJSON *sh = cJSON_AddObjectToObject(o, "shape");
        for (int k = 0; k < r->nkeys; k++) cJSON_AddNumberToObject(sh, r->keys[k], (double)r->vals[k]);
        if (r->error[0]) {
            cJSON_AddStringToObject(o, "error", r->error);
            cJSON_AddItemToArray(arr, o);
            continue;
        }
        cJSON_AddNumberToObject(o, "ms", r->ms);
        cJSON_AddNumberToObject(o, "ms_min", r->ms_min);
        cJSON_AddNumberToObject(o, "ms_max", r->ms_max);
        cJSON_AddNumberToObject(o, "reps", r->reps);
        cJSON_AddStringToObject(o, "bound", r->bound == BOUND_FLOP ? "compute" : "memory");
        cJSON_AddNumberToObject(o, "flop", r->flop);
        cJSON_AddNumberToObject(o, "bytes", r->bytes);
        cJSON_AddStringToObject(o, "formula", formula(r->op));
        if (r->flop > 0) cJSON_AddNumberToObject(o, "tflops", r->flop / (r->ms * 1e-3) * 1e-12);
        cJSON_AddNumberToObject(o, "gbps", r->bytes / (r->ms * 1e-3) * 1e-9);
        cJSON_AddNumberToObject(o, "pct_peak", pct_peak(b, r));
        cJSON *ba = cJSON_AddArrayToObject(o, "baselines");
        for (int k = 0; k < r->nbase; k++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "name", r->base[k].name);
            cJSON_AddNumberToObject(x, "ms", r->base[k].ms);
            cJSON_AddNumberToObject(x, "ratio", r->base[k].ms / r->ms);
            if (r->flop > 0) cJSON_AddNumberToObject(x, "tflops", r->flop / (r->base[k].ms * 1e-3) * 1e-12);
            cJSON_AddNumberToObject(x, "gbps", r->bytes / (r->base[k].ms * 1e-3) * 1e-9);
            cJSON_AddItemToArray(ba, x);
        }
        if (r->torch) cJSON_AddItemReferenceToObject(o, "torch", r->torch);
        if (r->goal != GOAL_NONE) {
            double v;
            int m = goal_met(b, r, &v);
            cJSON *g = cJSON_AddObjectToObject(o, "goal");
            cJSON_AddStringToObject(g, "text", goal_text(r->goal));
            if (m < 0)
                cJSON_AddNullToObject(g, "met");
            else
                cJSON_AddBoolToObject(g, "met", m);
            if (m >= 0) cJSON_AddNumberToObject(g, "value", v);
        }
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory printing the JSON", path);
    size_t len = strlen(text);
    text[len] = '\n'; /* cJSON_Print's buffer holds the terminating NUL: room for one newline */
    lt_status st = lt_write_file_atomic(path, text, len + 1, err);
    free(text);
    return st;
}

/* ------------------------------------------------------------------------ */
/* command line                                                             */

typedef struct kernels_args {
    const char *prog; /* for messages: "luxtrain bench kernels" or this program's name */
    char *device, *json, *only, *op;
    int quick, no_torch, list_ops, help;
    long threads;
    double budget;
} kernels_args;

#define F(x) offsetof(kernels_args, x)
static const lt_optdef OPTS[] = {
    LT_OPT_ROW_DEVICE(kernels_args, device, "auto"),
    {.name = "json", .k = LT_OPT_STR, .off = F(json), .meta = "FILE",
     .help = "also write the results as JSON (schema: bench/README.md)"},
    {.name = "quick", .k = LT_OPT_FLAG, .off = F(quick), .help = "a reduced set (CPU: tiny shapes, a few seconds)"},
    {.name = "no-torch", .k = LT_OPT_FLAG, .off = F(no_torch),
     .help = "skip the PyTorch baselines (bench/bench_kernels_torch.py, run with $LT_TORCH_PYTHON or python3 "
             "when it can import torch)"},
    {.name = "op", .k = LT_OPT_STR, .off = F(op), .meta = "NAME",
     .help = "run one op of the op case table (bench/lt_op_cases.c; --list-ops)"},
    {.name = "list-ops", .k = LT_OPT_FLAG, .off = F(list_ops), .help = "list the ops of the table and exit"},
    {.name = "only", .k = LT_OPT_STR, .off = F(only), .meta = "TEXT",
     .help = "run only cases whose id contains TEXT (e.g. attention, llama-3.1-8b)"},
    {.name = "budget", .k = LT_OPT_DBL, .off = F(budget), .meta = "SECONDS", .lo = 0, .hi = 3600, .lo_open = 1,
     .help = "seconds of timed calls per measurement [default: 0.25 cuda, 0.1 cpu]"},
    LT_OPT_ROW_THREADS(kernels_args, threads),
};
static const lt_optset SET = {
    .cmd = "bench kernels",
    .usage = "usage: luxtrain bench kernels [options]\n"
             "Times every op of the backend at realistic shapes (Llama-3.2-1B, Llama-3.1-8B,\n"
             "Qwen2.5-14B on CUDA; small shapes on the CPU), against the copy bandwidth and\n"
             "GEMM rate measured in the same run and against cuBLAS / PyTorch baselines.\n",
    .defs = OPTS,
    .n = sizeof OPTS / sizeof OPTS[0],
    .off_help = F(help),
};
#undef F

static int kernels_run(void *arg);

int lt_bench_kernels_main(int argc, char **argv) {
    kernels_args a = {0};
    a.prog = argc > 0 ? argv[0] : "bench_kernels";
    return lt_opts_main(&SET, argc, argv, &a, kernels_run);
}

static int kernels_run(void *arg) {
    const kernels_args *a = arg;
    const char *prog = a->prog;
    if (a->list_ops) {
        lt_op_list(stdout);
        return 0;
    }
    const char *device = a->device, *json = a->json;
    bench b;
    memset(&b, 0, sizeof b);
    b.quick = a->quick;
    b.filter = a->only;
    b.op = a->op;
    int no_torch = a->no_torch;
    long threads = a->threads;
    double budget = a->budget > 0 ? a->budget : -1;
    if (b.op) {
        if (!lt_op_check_name(prog, b.op)) return 2;
        if (lt_op_find(b.op)->n_metrics == 0) {
            fprintf(stderr, "%s: op '%s' has no benchmark (no metrics in bench/lt_op_cases.c)\n", prog, b.op);
            return 2;
        }
    }
    lt_err err = {{0}};
    if (lt_backend_create(device, (int)threads, &b.be, &err) != LT_OK) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return 1;
    }
    b.cuda = !strcmp(b.be->name, "cuda");
    b.act_dtype = b.be->act_dtype;
    b.act_size = (int)lt_dtype_size(b.be->act_dtype);
    b.param_size = (int)lt_dtype_size(b.be->param_dtype);
    if (b.cuda) {
        b.budget_s = b.quick ? 0.05 : 0.25;
        b.min_reps = b.quick ? 3 : 5;
        b.max_reps = b.quick ? 20 : 100;
    } else {
        b.budget_s = b.quick ? 0.01 : 0.1;
        b.min_reps = 3;
        b.max_reps = b.quick ? 20 : 50;
    }
    if (budget > 0) b.budget_s = budget;
    b.msbuf = malloc((size_t)b.max_reps * sizeof(float));
    int rc = 0;
#ifdef LT_HAVE_CUDA
    if (b.cuda && lt_cuda_bench_info_get(b.be, &b.info, &err) != LT_OK) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        rc = 1;
        goto done;
    }
#endif
    /* the L2 flush buffer: 4x L2 on CUDA; a few MB on the CPU */
    b.flush_bytes = b.cuda ? (b.info.l2_bytes ? 4 * b.info.l2_bytes : ((size_t)256 << 20))
                           : ((size_t)(b.quick ? 4 : 16) << 20);
    if (b.cuda) {
        if (b.be->alloc(b.be, b.flush_bytes, &b.flush, &err) != LT_OK) {
            fprintf(stderr, "%s: flush buffer: %s\n", prog, err.msg);
            rc = 1;
            goto done;
        }
    } else if (!(b.flush = malloc(b.flush_bytes))) {
        fprintf(stderr, "%s: out of memory for the flush buffer\n", prog);
        rc = 1;
        goto done;
    }
    if (!b.msbuf) {
        fprintf(stderr, "%s: out of memory\n", prog);
        rc = 1;
        goto done;
    }
    fprintf(stderr, "bench: device %s%s%s, %s shapes, budget %.3g s per measurement\n", b.be->name,
            b.cuda ? " " : "", b.cuda ? b.info.name : "", b.quick ? "quick" : "full", b.budget_s);
    if (measure_peaks(&b, &err) != LT_OK) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        rc = 1;
        goto done;
    }
    double t0 = lt_now_s();
    run_suite(&b);
    fprintf(stderr, "bench: %d cases in %.1f s\n", b.nres, lt_now_s() - t0);
    if (b.dead) rc = 1;

    /* give every byte back before PyTorch runs in its own process */
    char devname[16];
    snprintf(devname, sizeof devname, "%s", b.be->name);
    lt_dtype act = b.be->act_dtype;
    if (b.cuda)
        b.be->free(b.be, b.flush);
    else
        free(b.flush);
    b.flush = NULL;
    b.be->destroy(b.be);
    b.be = NULL;
    torch_run tr;
    memset(&tr, 0, sizeof tr);
    if (no_torch)
        snprintf(tr.status, sizeof tr.status, "skipped (--no-torch)");
    else
        run_torch(&b, &tr, devname);
    if (!tr.ok) fprintf(stderr, "bench: no PyTorch baselines: %s\n", tr.status);

    printf("luxtrain bench kernels: %s%s%s, %s shapes, act %s, torch: %s\n", devname, b.cuda ? " " : "",
           b.cuda ? b.info.name : "", b.quick ? "quick" : "full", lt_dtype_name(act), tr.ok ? "yes" : tr.status);
    print_table(&b, stdout);
    if (json) {
        if (write_json(&b, &tr, json, devname, &err) != LT_OK) {
            fprintf(stderr, "%s: %s\n", prog, err.msg);
            rc = 1;
        } else
            printf("json: %s\n", json);
    }
    print_goals(&b, stdout);
    cJSON_Delete(tr.json);
done:
    if (b.be) {
        if (b.flush) {
            if (b.cuda)
                b.be->free(b.be, b.flush);
            else
                free(b.flush);
        }
        b.be->destroy(b.be);
    }
    for (int i = 0; i < b.nres; i++) free(b.res[i].sizes);
    free(b.res);
    free(b.msbuf);
    return rc;
}

/* `luxtrain bench` itself (lt_cmd_bench) lives in bench/lt_bench_step.c: `bench step` needs the trainer. */
