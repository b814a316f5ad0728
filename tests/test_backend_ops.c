/*
 * test_backend_ops.c -- every op of the CUDA backend against the CPU backend
 * (the fp32 reference, itself tested against PyTorch / finite differences in
 * test_cpu_ops.c), in the style of ggml's test-backend-ops:
 *   - fresh random inputs (never zeros) for every shape: odd lengths,
 *     one-token documents, many documents per sequence, GQA ratios 1/4/8,
 *     head dims 64/128/256 and small ones;
 *   - inputs rounded to bf16 on the host first and given to both backends,
 *     so only compute error is measured (CUDA keeps activations and weights
 *     in bf16, the CPU in f32);
 *   - written outputs poisoned with NaN before the run, accumulated ones
 *     (parameter gradients, acc_dx) start from random values;
 *   - a guard region of sentinel bytes before and after every buffer, on
 *     both backends, checked untouched after each op;
 *   - NaN never passes; normalized error ||cuda - cpu|| / ||cpu|| against a
 *     tolerance stated per output class and dtype (lt_op_tol,
 *     bench/lt_op_cases.c);
 *   - ops designed to be deterministic (embedding_bwd, rmsnorm dw,
 *     attention_bwd, sumsq, matmul dbias) give identical bits on a rerun.
 * This is the test mode of the op case table (bench/lt_op_cases.h): the ops
 * and their shapes come from the table (one runner below per op; an op of
 * the table without a runner fails), `--op NAME` runs one, `--list-ops`
 * lists them.
 * Attention runs twice per shape: v1 (CUDA cores) and v2 (tensor cores, head
 * dims 64/128/256; other head dims fall back to v1). LoRA likewise with v1
 * (two bf16 roundings of out / dx) and v2 (one rounding: tighter
 * tolerance), v2 also with small row chunks (lt_op_att_variant,
 * lt_op_lora_variant: lt_backend_set_option on the CUDA backend).
 * add_rmsnorm_fwd in place (h = x, h = r) too. Cross-entropy also with -inf
 * logits (a masked vocabulary). copy (bytes) is compared exactly, byte by
 * byte, against the expected bytes on both sides. sumsq_units equals the
 * per-unit sumsq bitwise on each side (and the sides agree within sumsq's
 * tolerance).
 * Skips (77) when the build has no CUDA backend or no device is present.
 * LT_TEST_VERBOSE=1 prints every comparison. LT_BACKEND_OPS_SELFTEST=1 runs the
 * harness with a second CPU backend in place of CUDA (no GPU needed; f32 on
 * both sides, so the f32 tolerances apply); LT_BACKEND_OPS_FAULT=NAME then
 * breaks that backend on purpose (see inject_fault), and the run must fail
 * (tests/backend_ops_selftest.sh).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_backend.h"
#include "lt_nf4.h"
#include "lt_op_cases.h"
#include "lt_test.h"

/* Tolerance classes (bench/lt_op_cases.h; the figure per dtype: lt_op_tol) */
#define TOL_EXACT LT_TOL_EXACT
#define TOL_BF16 LT_TOL_ROUND    /* one rounding of an fp32 result */
#define TOL_BF16X LT_TOL_ROUND2  /* two roundings (lora v1) or a long chain (attention bwd) */
#define TOL_F32 LT_TOL_F32       /* f32 results, fp32 accumulation (rstd, lse, loss, xa) */
#define TOL_F32ACC LT_TOL_F32ACC /* f32 parameter gradients summed over many rows */
#define TOL_OPT LT_TOL_OPT       /* AdamW */
#define TOL_SUMSQ LT_TOL_SUMSQ   /* double accumulation */

enum { CPU = 0, GPU = 1 };
static lt_backend *BE[2];
static const char *SIDE[2] = {"cpu", "cuda"};
static lt_err err;
static uint64_t seed = 12345;

/* ------------------------------------------------------------------------ */
/* paired buffers: the same logical tensor on both backends, with guards    */

typedef enum { K_ACT, K_PARAM, K_F32, K_I32, K_BF16, K_U8 } kind;

#define GUARD 256 /* bytes before and after (keeps the 256-byte alignment) */
#define SENTINEL 0xA5

typedef struct buf {
    kind k;
    size_t n;
    void *base[2], *p[2];
    size_t bytes[2];
} buf;

static lt_dtype dtype_of(int s, kind k) {
    switch (k) {
    case K_ACT: return BE[s]->act_dtype;
    case K_PARAM: return BE[s]->param_dtype;
    case K_F32: return LT_F32;
    case K_I32: return LT_I32;
    case K_U8: return LT_U8;
    default: return LT_BF16;
    }
}

static buf bnew(kind k, size_t n) {
    buf b;
    memset(&b, 0, sizeof b);
    b.k = k;
    b.n = n;
    unsigned char *g = malloc(GUARD);
    memset(g, SENTINEL, GUARD);
    for (int s = 0; s < 2; s++) {
        b.bytes[s] = n * lt_dtype_size(dtype_of(s, k));
        LT_CHECK_OK(BE[s]->alloc(BE[s], b.bytes[s] + 2 * GUARD, &b.base[s], &err), &err);
        b.p[s] = (char *)b.base[s] + GUARD;
        LT_CHECK_OK(BE[s]->upload(BE[s], b.base[s], g, GUARD, &err), &err);
        LT_CHECK_OK(BE[s]->upload(BE[s], (char *)b.p[s] + b.bytes[s], g, GUARD, &err), &err);
    }
    free(g);
    return b;
}

static void bfree(buf *b) {
    for (int s = 0; s < 2; s++)
        if (b->base[s]) BE[s]->free(BE[s], b->base[s]);
    memset(b, 0, sizeof *b);
}

/* host values -> both backends (the caller rounds act/param values to bf16) */
static void bset(buf *b, const float *x) {
    for (int s = 0; s < 2; s++)
        LT_CHECK_OK(BE[s]->upload_f32(BE[s], b->p[s], dtype_of(s, b->k), x, b->n, &err), &err);
}
static void bset_i32(buf *b, const int32_t *x) {
    for (int s = 0; s < 2; s++) LT_CHECK_OK(BE[s]->upload(BE[s], b->p[s], x, b->n * 4, &err), &err);
}
static void bpoison(buf *b) {
    float *x = malloc(b->n * sizeof(float) + 1);
    lt_poison(x, b->n);
    bset(b, x);
    free(x);
}
/* an output before an op: poisoned when written (acc = 0), random when
 * accumulated onto (acc = 1) */
static float *rnd(size_t n, float scale);
static void bstart(buf *b, int acc) {
    if (!acc) {
        bpoison(b);
        return;
    }
    float *r = rnd(b->n, 1.0f);
    bset(b, r);
    free(r);
}
static float *bget(buf *b, int s) {
    float *x = malloc(b->n * sizeof(float) + 1);
    LT_CHECK_OK(BE[s]->download_f32(BE[s], x, b->p[s], dtype_of(s, b->k), b->n, &err), &err);
    return x;
}

/* the sentinel bytes around the buffer are untouched, on both backends */
static void bguard(buf *b, const char *what) {
    unsigned char *g = malloc(2 * GUARD);
    for (int s = 0; s < 2; s++) {
        LT_CHECK_OK(BE[s]->download(BE[s], g, b->base[s], GUARD, &err), &err);
        LT_CHECK_OK(BE[s]->download(BE[s], g + GUARD, (char *)b->p[s] + b->bytes[s], GUARD, &err), &err);
        int bad = 0;
        for (int i = 0; i < 2 * GUARD; i++) bad += g[i] != SENTINEL;
        LT_CHECK(bad == 0, "%s: %s wrote %d guard bytes around its buffer", what, SIDE[s], bad);
    }
    free(g);
}

/* compare the two sides against the tolerance of class tc for the dtype the
 * checked side stores, check the guards */
static void bcmp(buf *b, lt_op_tol_class tc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void bcmp(buf *b, lt_op_tol_class tc, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    float *want = bget(b, CPU), *got = bget(b, GPU);
    lt_check_close(what, got, want, b->n, lt_op_tol(tc, dtype_of(GPU, b->k)));
    free(want);
    free(got);
    bguard(b, what);
}

/* the CUDA side's current content, to compare bitwise with a rerun */
static float *snap(buf *b) { return bget(b, GPU); }
static void same_bits(buf *b, const float *before, const char *what) {
    float *now = bget(b, GPU);
    LT_CHECK(memcmp(now, before, b->n * sizeof(float)) == 0, "%s: %s rerun gave different bits (not deterministic)",
             what, SIDE[GPU]);
    free(now);
}

static void sync_both(const char *what) {
    for (int s = 0; s < 2; s++) {
        lt_status st = BE[s]->sync(BE[s], &err);
        LT_CHECK(st == LT_OK, "%s on %s: %s: %s", what, SIDE[s], lt_status_name(st), err.msg);
    }
}

/* random values rounded to bf16 (exact in both backends' formats) */
static float *rnd(size_t n, float scale) {
    float *x = malloc(n * sizeof(float) + 1);
    lt_fill_normal(x, n, scale, seed++);
    for (size_t i = 0; i < n; i++) {
        x[i] = lt_bf16_to_f32(lt_f32_to_bf16(x[i]));
        if (x[i] == 0.0f) x[i] = scale * 0.5f; // never zeros
    }
    return x;
}

static buf brnd(kind k, size_t n, float scale) {
    buf b = bnew(k, n);
    float *x = rnd(n, scale);
    bset(&b, x);
    free(x);
    return b;
}

static uint32_t urand(uint32_t n) {
    static lt_rng r;
    static int init = 0;
    if (!init) {
        lt_rng_seed(&r, 777);
        init = 1;
    }
    return (uint32_t)(lt_rng_u64(&r) % n);
}

#define BOTH(call_cpu_gpu)                                                                                        \
    do {                                                                                                          \
        for (int s_ = 0; s_ < 2; s_++) {                                                                          \
            lt_backend *be = BE[s_];                                                                              \
            int S = s_;                                                                                           \
            (void)S;                                                                                              \
            call_cpu_gpu;                                                                                         \
        }                                                                                                         \
    } while (0)
#define P(b) ((b).p[S])

/* ------------------------------------------------------------------------ */

static void test_embedding(int V, int C, int N, int id_range) {
    buf table = brnd(K_PARAM, (size_t)V * C, 1.0f);
    buf ids = bnew(K_I32, N);
    int32_t *h = malloc(N * sizeof *h);
    for (int n = 0; n < N; n++) h[n] = (int32_t)urand((uint32_t)id_range); // repeats when id_range < N
    h[N - 1] = V - 1;
    bset_i32(&ids, h);
    buf out = bnew(K_ACT, (size_t)N * C);
    bpoison(&out);
    BOTH(be->embedding_fwd(be, P(out), P(table), (const int32_t *)P(ids), N, C));
    sync_both("embedding_fwd");
    bcmp(&out, TOL_EXACT, "embedding_fwd V=%d C=%d N=%d", V, C, N);

    buf dout = brnd(K_ACT, (size_t)N * C, 1.0f);
    float *init = rnd((size_t)V * C, 0.1f);
    buf dtable = bnew(K_F32, (size_t)V * C);
    bset(&dtable, init);
    BOTH(be->embedding_bwd(be, (float *)P(dtable), P(dout), (const int32_t *)P(ids), N, C));
    sync_both("embedding_bwd");
    bcmp(&dtable, TOL_F32, "embedding_bwd V=%d C=%d N=%d", V, C, N);
    float *first = snap(&dtable);
    bset(&dtable, init);
    BE[GPU]->embedding_bwd(BE[GPU], (float *)dtable.p[GPU], dout.p[GPU], (const int32_t *)ids.p[GPU], N, C);
    sync_both("embedding_bwd rerun");
    same_bits(&dtable, first, "embedding_bwd");
    free(first);
    free(init);
    free(h);
    bfree(&table), bfree(&ids), bfree(&out), bfree(&dout), bfree(&dtable);
}

/* NEFTune noise: the draws are the same counter-based values on both sides.
 * x = 0: the output is mag * u itself, which after rounding to the second
 * side's act dtype must match bitwise; random x: one rounding of the sum. */
static void test_embed_noise(int N, int C, int random_x) {
    size_t n = (size_t)N * C;
    buf x = random_x ? brnd(K_ACT, n, 1.0f) : bnew(K_ACT, n);
    if (!random_x) {
        float *z = calloc(n + 1, sizeof(float));
        bset(&x, z);
        free(z);
    }
    float mag = 0.0371f;
    uint64_t key = 0x1234567890abcdefull + (uint64_t)n;
    BOTH(be->embed_noise(be, P(x), N, C, mag, key));
    sync_both("embed_noise");
    bcmp(&x, TOL_BF16, "embed_noise N=%d C=%d x=%d", N, C, random_x);
    if (!random_x) {
        float *want = bget(&x, CPU), *got = bget(&x, GPU);
        int bf = dtype_of(GPU, K_ACT) == LT_BF16;
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            float w = bf ? lt_bf16_to_f32(lt_f32_to_bf16(want[i])) : want[i];
            if (memcmp(&w, &got[i], sizeof w)) bad++;
        }
        LT_CHECK(bad == 0, "embed_noise N=%d C=%d: %zu of %zu draws differ from the CPU's", N, C, bad, n);
        free(want);
        free(got);
    }
    float *first = snap(&x);
    if (!random_x) { /* rerun from zero: the same bits (the draws depend on nothing but key and index) */
        float *z = calloc(n + 1, sizeof(float));
        bset(&x, z);
        free(z);
        BE[GPU]->embed_noise(BE[GPU], x.p[GPU], N, C, mag, key);
        sync_both("embed_noise rerun");
        same_bits(&x, first, "embed_noise");
    }
    free(first);
    bfree(&x);
}

/* Identity inputs make the NF4 products exact: nf4_matmul_fwd with x = I
 * (K x K) gives out = W^T, and nf4_matmul_bwd with dout = I (Nout x Nout)
 * gives dx = W (one nonzero product per sum), so the weights the GEMM used
 * (dequantized inside it, in the fused kernel) are checked bit for bit
 * against the CPU's values rounded once (wref: Nout x K, as the param dtype
 * of the device side). The device side only; small shapes. */
static void nf4_identity_check(const buf *wq, const float *wref, int K, int Nout, int ver) {
    if ((size_t)K * K > (1u << 20) || (size_t)Nout * Nout > (1u << 20)) return;
    for (int bwd = 0; bwd <= 1; bwd++) {
        int n = bwd ? Nout : K; /* the identity's size */
        float *eye = calloc((size_t)n * n, sizeof *eye);
        for (int i = 0; i < n; i++) eye[(size_t)i * n + i] = 1.0f;
        buf id = bnew(K_ACT, (size_t)n * n), out = bnew(K_ACT, (size_t)K * Nout);
        bset(&id, eye);
        bpoison(&out);
        if (bwd) BE[GPU]->nf4_matmul_bwd(BE[GPU], out.p[GPU], 0, id.p[GPU], wq->p[GPU], Nout, K, Nout);
        else BE[GPU]->nf4_matmul_fwd(BE[GPU], out.p[GPU], id.p[GPU], wq->p[GPU], NULL, K, K, Nout);
        sync_both(bwd ? "nf4_matmul_bwd (dout = I)" : "nf4_matmul_fwd (x = I)");
        float *got = bget(&out, GPU);
        size_t bad = 0;
        for (int r = 0; r < Nout; r++)
            for (int c = 0; c < K; c++) { /* fwd: out[c][r] = W[r][c]; bwd: dx[r][c] = W[r][c] */
                float g = bwd ? got[(size_t)r * K + c] : got[(size_t)c * Nout + r];
                bad += !(g == wref[(size_t)r * K + c]);
            }
        LT_CHECK(bad == 0, "nf4_matmul_%s v%d with an identity K=%d N=%d: %zu weights differ from the CPU's",
                 bwd ? "bwd" : "fwd", ver, K, Nout, bad);
        free(got), free(eye);
        bfree(&id), bfree(&out);
    }
}

/* The NF4 linear: one NF4 buffer (quantized on the host by core/lt_nf4.c)
 * given to both backends as bytes. nf4_dequant must give the CPU's exact
 * fp32 values rounded once to the param dtype (bit for bit); the forward and
 * dx within one rounding, with each NF4 variant (v1 dequantized tiles +
 * cuBLAS, v2 the fused kernel), and the same bits on a rerun. */
static void test_nf4_matmul(int M, int K, int Nout, int with_bias) {
    size_t nk = (size_t)Nout * K;
    float *wf = rnd(nk, 0.05f);
    lt_nf4_layout L = lt_nf4_layout_of(nk);
    unsigned char *q = malloc(L.bytes);
    LT_CHECK_OK(lt_nf4_quantize(wf, nk, q, &err), &err);
    buf wq = bnew(K_U8, L.bytes);
    for (int s = 0; s < 2; s++) LT_CHECK_OK(BE[s]->upload(BE[s], wq.p[s], q, L.bytes, &err), &err);
    buf wd = bnew(K_PARAM, nk);
    bpoison(&wd);
    BOTH(be->nf4_dequant(be, P(wd), P(wq), nk));
    sync_both("nf4_dequant");
    float *want = bget(&wd, CPU), *got = bget(&wd, GPU);
    size_t bad = 0;
    int bf = dtype_of(GPU, K_PARAM) == LT_BF16;
    for (size_t i = 0; i < nk; i++) {
        float r = bf ? lt_bf16_to_f32(lt_f32_to_bf16(want[i])) : want[i];
        bad += memcmp(&r, &got[i], 4) != 0;
    }
    LT_CHECK(bad == 0, "nf4_dequant n=%zu: %zu values are not the CPU's rounded once", nk, bad);
    bguard(&wd, "nf4_dequant");
    for (size_t i = 0; bf && i < nk; i++) want[i] = lt_bf16_to_f32(lt_f32_to_bf16(want[i]));
    free(got);

    buf x = brnd(K_ACT, (size_t)M * K, 1.0f);
    buf bias = brnd(K_PARAM, Nout, 0.5f);
    buf out = bnew(K_ACT, (size_t)M * Nout);
    buf dout = brnd(K_ACT, (size_t)M * Nout, 1.0f);
    buf dx = bnew(K_ACT, (size_t)M * K);
    for (int ver = 1; ver <= 2; ver++) {
        LT_CHECK_OK(lt_op_nf4_variant(BE[GPU], ver, &err), &err);
        nf4_identity_check(&wq, want, K, Nout, ver);
        bpoison(&out);
        BOTH(be->nf4_matmul_fwd(be, P(out), P(x), P(wq), with_bias ? P(bias) : NULL, M, K, Nout));
        sync_both("nf4_matmul_fwd");
        bcmp(&out, TOL_BF16, "nf4_matmul_fwd v%d M=%d K=%d N=%d bias=%d", ver, M, K, Nout, with_bias);
        float *first = snap(&out);
        bpoison(&out);
        BE[GPU]->nf4_matmul_fwd(BE[GPU], out.p[GPU], x.p[GPU], wq.p[GPU], with_bias ? bias.p[GPU] : NULL, M, K,
                                Nout);
        sync_both("nf4_matmul_fwd rerun");
        same_bits(&out, first, "nf4_matmul_fwd");
        free(first);
        for (int acc = 0; acc <= 1; acc++) {
            bstart(&dx, acc);
            BOTH(be->nf4_matmul_bwd(be, P(dx), acc, P(dout), P(wq), M, K, Nout));
            sync_both("nf4_matmul_bwd");
            bcmp(&dx, TOL_BF16, "nf4_matmul_bwd v%d dx acc=%d M=%d K=%d N=%d", ver, acc, M, K, Nout);
        }
    }
    LT_CHECK_OK(lt_op_nf4_variant(BE[GPU], 0, &err), &err);
    bguard(&wq, "nf4 weight (read only)");
    free(q), free(wf), free(want);
    bfree(&wq), bfree(&wd), bfree(&x), bfree(&bias), bfree(&out), bfree(&dout), bfree(&dx);
}

static void test_matmul(int M, int K, int Nout, int with_bias) {
    buf x = brnd(K_ACT, (size_t)M * K, 1.0f);
    buf w = brnd(K_PARAM, (size_t)Nout * K, 0.05f);
    buf bias = brnd(K_PARAM, Nout, 0.5f);
    buf out = bnew(K_ACT, (size_t)M * Nout);
    bpoison(&out);
    BOTH(be->matmul_fwd(be, P(out), P(x), P(w), with_bias ? P(bias) : NULL, M, K, Nout));
    sync_both("matmul_fwd");
    bcmp(&out, TOL_BF16, "matmul_fwd M=%d K=%d N=%d bias=%d", M, K, Nout, with_bias);

    buf dout = brnd(K_ACT, (size_t)M * Nout, 1.0f);
    buf dx = bnew(K_ACT, (size_t)M * K);
    buf dw = brnd(K_F32, (size_t)Nout * K, 0.5f);
    buf db = brnd(K_F32, Nout, 0.5f);
    for (int acc = 0; acc <= 1; acc++) {
        bstart(&dx, acc);
        BOTH(be->matmul_bwd(be, P(dx), acc, (float *)P(dw), with_bias ? (float *)P(db) : NULL, P(dout), P(x), P(w),
                            M, K, Nout));
        sync_both("matmul_bwd");
        bcmp(&dx, TOL_BF16, "matmul_bwd dx acc=%d M=%d K=%d N=%d", acc, M, K, Nout);
        bcmp(&dw, TOL_F32ACC, "matmul_bwd dw M=%d K=%d N=%d", M, K, Nout);
        if (with_bias) bcmp(&db, TOL_F32ACC, "matmul_bwd dbias M=%d N=%d", M, Nout);
    }
    if (with_bias) { // dbias is deterministic
        float *init = rnd(Nout, 0.5f), *first;
        bset(&db, init);
        BE[GPU]->matmul_bwd(BE[GPU], NULL, 0, NULL, (float *)db.p[GPU], dout.p[GPU], x.p[GPU], w.p[GPU], M, K, Nout);
        sync_both("matmul_bwd dbias");
        first = snap(&db);
        bset(&db, init);
        BE[GPU]->matmul_bwd(BE[GPU], NULL, 0, NULL, (float *)db.p[GPU], dout.p[GPU], x.p[GPU], w.p[GPU], M, K, Nout);
        sync_both("matmul_bwd dbias rerun");
        same_bits(&db, first, "matmul_bwd dbias");
        free(first);
        free(init);
    }
    bfree(&x), bfree(&w), bfree(&bias), bfree(&out), bfree(&dout), bfree(&dx), bfree(&dw), bfree(&db);
}

/* the rmsnorm tests run the plain ops, or (rmsnorm_off) the _off ops with
 * weight offset g_woff */
static int g_offop;
static float g_woff;
static void t_rms_fwd(lt_backend *be, void *out, float *rstd, const void *x, const void *w, int R, int C, float eps) {
    if (g_offop) be->rmsnorm_off_fwd(be, out, rstd, x, w, g_woff, R, C, eps);
    else be->rmsnorm_fwd(be, out, rstd, x, w, R, C, eps);
}
static void t_rms_bwd(lt_backend *be, void *dx, int acc, float *dw, const void *dout, const void *x, const void *w,
                      const float *rstd, int R, int C) {
    if (g_offop) be->rmsnorm_off_bwd(be, dx, acc, dw, dout, x, w, g_woff, rstd, R, C);
    else be->rmsnorm_bwd(be, dx, acc, dw, dout, x, w, rstd, R, C);
}
static void t_arms_fwd(lt_backend *be, void *h, void *out, float *rstd, const void *x, const void *r, const void *w,
                       int R, int C, float eps) {
    if (g_offop) be->add_rmsnorm_off_fwd(be, h, out, rstd, x, r, w, g_woff, R, C, eps);
    else be->add_rmsnorm_fwd(be, h, out, rstd, x, r, w, R, C, eps);
}

static void test_rmsnorm(int R, int C) {
    float eps = 1e-6f;
    float *hx = rnd((size_t)R * C, 1.0f);
    buf x = bnew(K_ACT, (size_t)R * C);
    bset(&x, hx);
    buf w = brnd(K_PARAM, C, 1.0f);
    buf out = bnew(K_ACT, (size_t)R * C);
    buf rstd = bnew(K_F32, R);
    bpoison(&out), bpoison(&rstd);
    BOTH(t_rms_fwd(be, P(out), (float *)P(rstd), P(x), P(w), R, C, eps));
    sync_both("rmsnorm_fwd");
    bcmp(&out, TOL_BF16, "rmsnorm_fwd out R=%d C=%d", R, C);
    bcmp(&rstd, TOL_F32, "rmsnorm_fwd rstd R=%d C=%d", R, C);

    /* the backward reads the same rstd on both sides (computed here in double) */
    float *hr = malloc(R * sizeof *hr);
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)hx[(size_t)r * C + c] * hx[(size_t)r * C + c];
        hr[r] = (float)(1.0 / sqrt(ss / C + eps));
    }
    bset(&rstd, hr);
    buf dout = brnd(K_ACT, (size_t)R * C, 1.0f);
    buf dx = bnew(K_ACT, (size_t)R * C);
    float *dwinit = rnd(C, 0.5f);
    buf dw = bnew(K_F32, C);
    bset(&dw, dwinit);
    for (int acc = 0; acc <= 1; acc++) {
        bstart(&dx, acc);
        BOTH(t_rms_bwd(be, P(dx), acc, (float *)P(dw), P(dout), P(x), P(w), (const float *)P(rstd), R, C));
        sync_both("rmsnorm_bwd");
        bcmp(&dx, TOL_BF16, "rmsnorm_bwd dx acc=%d R=%d C=%d", acc, R, C);
        bcmp(&dw, TOL_F32ACC, "rmsnorm_bwd dw R=%d C=%d", R, C);
    }
    /* dw deterministic */
    bset(&dw, dwinit);
    t_rms_bwd(BE[GPU], NULL, 0, (float *)dw.p[GPU], dout.p[GPU], x.p[GPU], w.p[GPU],
                         (const float *)rstd.p[GPU], R, C);
    sync_both("rmsnorm_bwd dw");
    float *first = snap(&dw);
    bset(&dw, dwinit);
    t_rms_bwd(BE[GPU], NULL, 0, (float *)dw.p[GPU], dout.p[GPU], x.p[GPU], w.p[GPU],
                         (const float *)rstd.p[GPU], R, C);
    sync_both("rmsnorm_bwd dw rerun");
    same_bits(&dw, first, "rmsnorm_bwd dw");
    free(first), free(dwinit), free(hr), free(hx);
    bfree(&x), bfree(&w), bfree(&out), bfree(&rstd), bfree(&dout), bfree(&dx), bfree(&dw);
}

/* add_rmsnorm_fwd: h = x + r (CUDA: bf16, rounded once), out/rstd = rmsnorm of
 * h as stored. Checked (1) against the CPU's fused op (h and out: one bf16
 * rounding each, out's error includes h's: TOL_BF16), (2) out and rstd
 * against the CPU's rmsnorm_fwd of the CUDA side's own h (TOL_BF16 / TOL_F32:
 * the norm must read the rounded h), (3) in place (h = x, h = r): the same
 * bits as out of place. C picks the kernel: C % 8 == 0 and C <= 8192 the
 * vector one (VPL = 1..32 vectors per lane, partial ones too), else scalar. */
static void test_add_rmsnorm(int R, int C) {
    float eps = 1e-5f;
    size_t n = (size_t)R * C;
    float *hx = rnd(n, 1.0f), *hrr = rnd(n, 1.0f);
    buf x = bnew(K_ACT, n), r = bnew(K_ACT, n), w = brnd(K_PARAM, C, 1.0f);
    bset(&x, hx), bset(&r, hrr);
    buf h = bnew(K_ACT, n), out = bnew(K_ACT, n), rstd = bnew(K_F32, R);
    bpoison(&h), bpoison(&out), bpoison(&rstd);
    BOTH(t_arms_fwd(be, P(h), P(out), (float *)P(rstd), P(x), P(r), P(w), R, C, eps));
    sync_both("add_rmsnorm_fwd");
    bcmp(&h, TOL_BF16, "add_rmsnorm_fwd h R=%d C=%d", R, C);
    bcmp(&out, TOL_BF16, "add_rmsnorm_fwd out R=%d C=%d", R, C);
    float *gh = snap(&h), *gout = snap(&out), *grstd = snap(&rstd);

    /* (2) the CPU's rmsnorm_fwd of the CUDA side's h */
    buf h2 = bnew(K_ACT, n);
    bset(&h2, gh);
    t_rms_fwd(BE[CPU], out.p[CPU], (float *)rstd.p[CPU], h2.p[CPU], w.p[CPU], R, C, eps);
    sync_both("rmsnorm_fwd of the cuda h");
    bcmp(&out, TOL_BF16, "add_rmsnorm_fwd out vs rmsnorm_fwd(h as stored) R=%d C=%d", R, C);
    bcmp(&rstd, TOL_F32, "add_rmsnorm_fwd rstd vs rmsnorm_fwd(h as stored) R=%d C=%d", R, C);

    /* (3) in place: h aliases x, then r */
    for (int alias = 0; alias < 2; alias++) {
        buf hi = bnew(K_ACT, n);
        bset(&hi, alias ? hrr : hx);
        bpoison(&out), bpoison(&rstd);
        BOTH(t_arms_fwd(be, P(hi), P(out), (float *)P(rstd), alias ? P(x) : P(hi), alias ? P(hi) : P(r),
                                 P(w), R, C, eps));
        sync_both("add_rmsnorm_fwd in place");
        const char *nm = alias ? "r" : "x";
        bcmp(&hi, TOL_BF16, "add_rmsnorm_fwd in place (h = %s) h R=%d C=%d", nm, R, C);
        bcmp(&out, TOL_BF16, "add_rmsnorm_fwd in place (h = %s) out R=%d C=%d", nm, R, C);
        same_bits(&hi, gh, alias ? "add_rmsnorm_fwd h = r: h" : "add_rmsnorm_fwd h = x: h");
        same_bits(&out, gout, alias ? "add_rmsnorm_fwd h = r: out" : "add_rmsnorm_fwd h = x: out");
        same_bits(&rstd, grstd, alias ? "add_rmsnorm_fwd h = r: rstd" : "add_rmsnorm_fwd h = x: rstd");
        bfree(&hi);
    }
    free(hx), free(hrr), free(gh), free(gout), free(grstd);
    bfree(&x), bfree(&r), bfree(&w), bfree(&h), bfree(&out), bfree(&rstd), bfree(&h2);
}

static void test_rope(int N, int H, int D, int R, float sc) {
    buf x = brnd(K_ACT, (size_t)N * H * D, 1.0f);
    buf pos = bnew(K_I32, N);
    int32_t *hp = malloc(N * sizeof *hp);
    for (int n = 0; n < N; n++) hp[n] = n % 3 == 2 ? (int32_t)urand(131072) : n; // large positions too
    bset_i32(&pos, hp);
    float *hf = malloc((R / 2) * sizeof *hf);
    for (int i = 0; i < R / 2; i++) hf[i] = (float)(1.0 / pow(500000.0, 2.0 * i / R));
    buf inv = bnew(K_F32, R / 2);
    bset(&inv, hf);
    BOTH(be->rope_fwd(be, P(x), (const int32_t *)P(pos), (const float *)P(inv), N, H, D, R, sc));
    sync_both("rope_fwd");
    bcmp(&x, TOL_BF16, "rope_fwd N=%d H=%d D=%d R=%d scale=%g", N, H, D, R, sc);
    float *g = rnd((size_t)N * H * D, 1.0f);
    bset(&x, g);
    BOTH(be->rope_bwd(be, P(x), (const int32_t *)P(pos), (const float *)P(inv), N, H, D, R, sc));
    sync_both("rope_bwd");
    bcmp(&x, TOL_BF16, "rope_bwd N=%d H=%d D=%d R=%d scale=%g", N, H, D, R, sc);
    free(g), free(hf), free(hp);
    bfree(&x), bfree(&pos), bfree(&inv);
}

/* doc layout: 0 = one document per sequence, 1 = many random documents
 * (lengths 1..maxlen, one-token documents included), 2 = padding tail,
 * 3 = like 1 with documents up to 300 tokens (spanning attention tiles) */
static void make_docs(int32_t *ds, int B, int T, int layout, int maxlen) {
    for (int b = 0; b < B; b++) {
        int t0 = 0, len = 0;
        for (int t = 0; t < T; t++) {
            if ((layout == 1 || layout == 3) && len == 0) {
                t0 = t;
                len = 1 + (int)urand((uint32_t)maxlen);
                if (urand(4) == 0) len = 1; // one-token documents
            }
            if (layout == 2 && t >= T - T / 4) t0 = t; // padding: one-token documents
            ds[b * T + t] = t0;
            if (len) len--;
        }
    }
}

static const char *attn_ver = ""; /* the attention variant of the current run */
/* attention_cap: the capped ops with g_cap, lower bounds max(doc start, t - g_window + 1) */
static int g_attcap, g_window;
static float g_cap;
static void t_att_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                      const int32_t *ds, int B, int T, int Hq, int Hkv, int D, float scale) {
    if (g_attcap) be->attention_cap_fwd(be, out, lse, q, k, v, ds, B, T, Hq, Hkv, D, scale, g_cap);
    else be->attention_fwd(be, out, lse, q, k, v, ds, B, T, Hq, Hkv, D, scale);
}
static void t_att_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q, const void *k,
                      const void *v, const void *out, const float *lse, const int32_t *ds, int B, int T, int Hq,
                      int Hkv, int D, float scale) {
    if (g_attcap) be->attention_cap_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, ds, B, T, Hq, Hkv, D, scale, g_cap);
    else be->attention_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, ds, B, T, Hq, Hkv, D, scale);
}

static void test_attention(int B, int T, int Hq, int Hkv, int D, int layout) {
    size_t N = (size_t)B * T;
    float scale = 1.0f / sqrtf((float)D);
    buf q = brnd(K_ACT, N * Hq * D, 1.0f), k = brnd(K_ACT, N * Hkv * D, 1.0f), v = brnd(K_ACT, N * Hkv * D, 1.0f);
    buf ds = bnew(K_I32, N);
    int32_t *hd = malloc(N * sizeof *hd);
    make_docs(hd, B, T, layout, layout == 3 ? 300 : 9);
    for (size_t n = 0; g_window > 0 && n < N; n++) { // sliding window: the first key each query sees
        int t = (int)(n % T);
        if (hd[n] < t - g_window + 1) hd[n] = t - g_window + 1;
    }
    bset_i32(&ds, hd);
    buf out = bnew(K_ACT, N * Hq * D), lse = bnew(K_F32, (size_t)B * Hq * T);
    bpoison(&out), bpoison(&lse);
    BOTH(t_att_fwd(be, P(out), (float *)P(lse), P(q), P(k), P(v), (const int32_t *)P(ds), B, T, Hq, Hkv, D,
                           scale));
    sync_both("attention_fwd");
    bcmp(&out, TOL_BF16, "attention_fwd out cap%g W%d v%s B=%d T=%d Hq=%d Hkv=%d D=%d docs=%d", g_cap, g_window, attn_ver, B, T, Hq, Hkv, D, layout);
    bcmp(&lse, TOL_F32, "attention_fwd lse cap%g W%d v%s B=%d T=%d Hq=%d Hkv=%d D=%d docs=%d", g_cap, g_window, attn_ver, B, T, Hq, Hkv, D, layout);

    /* backward on identical inputs: the CPU's out (rounded to bf16) and lse */
    float *ho = bget(&out, CPU), *hl = bget(&lse, CPU);
    for (size_t i = 0; i < out.n; i++) ho[i] = lt_bf16_to_f32(lt_f32_to_bf16(ho[i]));
    bset(&out, ho), bset(&lse, hl);
    buf dout = brnd(K_ACT, N * Hq * D, 1.0f);
    buf dq = bnew(K_ACT, N * Hq * D), dk = bnew(K_ACT, N * Hkv * D), dv = bnew(K_ACT, N * Hkv * D);
    bpoison(&dq), bpoison(&dk), bpoison(&dv);
    BOTH(t_att_bwd(be, P(dq), P(dk), P(dv), P(dout), P(q), P(k), P(v), P(out), (const float *)P(lse),
                           (const int32_t *)P(ds), B, T, Hq, Hkv, D, scale));
    sync_both("attention_bwd");
    bcmp(&dq, TOL_BF16X, "attention_bwd dq cap%g W%d v%s B=%d T=%d Hq=%d Hkv=%d D=%d docs=%d", g_cap, g_window, attn_ver, B, T, Hq, Hkv, D, layout);
    bcmp(&dk, TOL_BF16X, "attention_bwd dk cap%g W%d v%s B=%d T=%d Hq=%d Hkv=%d D=%d docs=%d", g_cap, g_window, attn_ver, B, T, Hq, Hkv, D, layout);
    bcmp(&dv, TOL_BF16X, "attention_bwd dv cap%g W%d v%s B=%d T=%d Hq=%d Hkv=%d D=%d docs=%d", g_cap, g_window, attn_ver, B, T, Hq, Hkv, D, layout);
    float *f1 = snap(&dq), *f2 = snap(&dk), *f3 = snap(&dv);
    bpoison(&dq), bpoison(&dk), bpoison(&dv);
    t_att_bwd(BE[GPU], dq.p[GPU], dk.p[GPU], dv.p[GPU], dout.p[GPU], q.p[GPU], k.p[GPU], v.p[GPU],
                           out.p[GPU], (const float *)lse.p[GPU], (const int32_t *)ds.p[GPU], B, T, Hq, Hkv, D, scale);
    sync_both("attention_bwd rerun");
    same_bits(&dq, f1, "attention_bwd dq"), same_bits(&dk, f2, "attention_bwd dk"),
        same_bits(&dv, f3, "attention_bwd dv");
    free(f1), free(f2), free(f3), free(ho), free(hl), free(hd);
    bfree(&q), bfree(&k), bfree(&v), bfree(&ds), bfree(&out), bfree(&lse), bfree(&dout), bfree(&dq), bfree(&dk),
        bfree(&dv);
}

/* every attention shape with v1 and v2 (the CPU side has no variants) */
static void test_attention_versions(int B, int T, int Hq, int Hkv, int D, int layout) {
    static const char *vers[2] = {"1", "2"};
    for (int i = 0; i < 2; i++) {
        LT_CHECK_OK(lt_op_att_variant(BE[GPU], i + 1, &err), &err);
        attn_ver = vers[i];
        test_attention(B, T, Hq, Hkv, D, layout);
    }
    LT_CHECK_OK(lt_op_att_variant(BE[GPU], 0, &err), &err);
    attn_ver = "";
}

static void test_swiglu(size_t n) {
    buf g = brnd(K_ACT, n, 2.0f), u = brnd(K_ACT, n, 1.0f), out = bnew(K_ACT, n);
    bpoison(&out);
    BOTH(be->swiglu_fwd(be, P(out), P(g), P(u), n));
    sync_both("swiglu_fwd");
    bcmp(&out, TOL_BF16, "swiglu_fwd n=%zu", n);
    buf dout = brnd(K_ACT, n, 1.0f), dg = bnew(K_ACT, n), du = bnew(K_ACT, n);
    bpoison(&dg), bpoison(&du);
    BOTH(be->swiglu_bwd(be, P(dg), P(du), P(dout), P(g), P(u), n));
    sync_both("swiglu_bwd");
    bcmp(&dg, TOL_BF16, "swiglu_bwd dgate n=%zu", n);
    bcmp(&du, TOL_BF16, "swiglu_bwd dup n=%zu", n);
    bfree(&g), bfree(&u), bfree(&out), bfree(&dout), bfree(&dg), bfree(&du);
}

static void test_geglu(size_t n) {
    buf g = brnd(K_ACT, n, 2.0f), u = brnd(K_ACT, n, 1.0f), out = bnew(K_ACT, n);
    bpoison(&out);
    BOTH(be->geglu_fwd(be, P(out), P(g), P(u), n));
    sync_both("geglu_fwd");
    bcmp(&out, TOL_BF16, "geglu_fwd n=%zu", n);
    buf dout = brnd(K_ACT, n, 1.0f), dg = bnew(K_ACT, n), du = bnew(K_ACT, n);
    bpoison(&dg), bpoison(&du);
    BOTH(be->geglu_bwd(be, P(dg), P(du), P(dout), P(g), P(u), n));
    sync_both("geglu_bwd");
    bcmp(&dg, TOL_BF16, "geglu_bwd dgate n=%zu", n);
    bcmp(&du, TOL_BF16, "geglu_bwd dup n=%zu", n);
    bfree(&g), bfree(&u), bfree(&out), bfree(&dout), bfree(&dg), bfree(&du);
}

static void test_scale(size_t n) {
    buf x = brnd(K_ACT, n, 2.0f);
    float s = lt_bf16_to_f32(lt_f32_to_bf16(sqrtf(2304.0f))); /* the normalizer as the model rounds it */
    BOTH(be->scale(be, P(x), n, s));
    sync_both("scale");
    bcmp(&x, TOL_BF16, "scale (in place) n=%zu", n);
    bfree(&x);
}

/* every byte of dst on side s equals want (n bytes) */
static void check_bytes(buf *b, int s, const unsigned char *want, const char *what) {
    unsigned char *got = malloc(b->n + 1);
    LT_CHECK_OK(BE[s]->download(BE[s], got, b->p[s], b->n, &err), &err);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < b->n; i++)
        if (got[i] != want[i] && !bad++) first = i;
    LT_CHECK(bad == 0, "%s on %s: %zu of %zu bytes differ (first at %zu: 0x%02x, expected 0x%02x)", what, SIDE[s], bad,
             b->n, first, bad ? got[first] : 0, bad ? want[first] : 0);
    if (!bad && getenv("LT_TEST_VERBOSE")) { /* (the comparison line gpu_check_report.py reads: every byte equal) */
        char line[160];
        snprintf(line, sizeof line, "%s (%s, %zu bytes)", what, SIDE[s], b->n);
        printf("  ok %-48s norm err 0  max abs 0\n", line);
    }
    free(got);
}

/* copy: random bytes from src + soff to dst + doff; dst is poisoned first
 * with the complement of what the copy must write (so every byte it skips
 * shows), its other bytes must stay; exact on both sides (the expectation
 * is computed on the host, not taken from the CPU backend), guards intact,
 * src unchanged; a 0-byte copy changes nothing */
static void test_copy(size_t bytes, size_t doff, size_t soff) {
    char what[96];
    snprintf(what, sizeof what, "copy bytes=%zu dst_off=%zu src_off=%zu", bytes, doff, soff);
    buf src = bnew(K_U8, soff + bytes), dst = bnew(K_U8, doff + bytes);
    unsigned char *hs = malloc(src.n + 1), *want = malloc(dst.n + 1);
    for (size_t i = 0; i < src.n; i++) hs[i] = (unsigned char)urand(256);
    for (size_t i = 0; i < doff; i++) want[i] = (unsigned char)urand(256);
    for (size_t i = 0; i < bytes; i++) want[doff + i] = (unsigned char)~hs[soff + i]; /* the poison */
    for (int s = 0; s < 2; s++) {
        LT_CHECK_OK(BE[s]->upload(BE[s], src.p[s], hs, src.n, &err), &err);
        LT_CHECK_OK(BE[s]->upload(BE[s], dst.p[s], want, dst.n, &err), &err);
    }
    BOTH(be->copy(be, (char *)P(dst) + doff, (const char *)P(src) + soff, bytes));
    sync_both("copy");
    memcpy(want + doff, hs + soff, bytes);
    for (int s = 0; s < 2; s++) check_bytes(&dst, s, want, what), check_bytes(&src, s, hs, "copy: its source");
    bguard(&dst, what);
    bguard(&src, what);
    BOTH(be->copy(be, P(dst), P(src), 0));
    sync_both("copy of 0 bytes");
    for (int s = 0; s < 2; s++) check_bytes(&dst, s, want, "copy of 0 bytes");
    free(hs), free(want);
    bfree(&src), bfree(&dst);
}

static void test_add(size_t n) {
    buf g = brnd(K_ACT, n, 2.0f), u = brnd(K_ACT, n, 1.0f), out = bnew(K_ACT, n);
    bpoison(&out);
    BOTH(be->add(be, P(out), P(g), P(u), n));
    sync_both("add");
    bcmp(&out, TOL_BF16, "add n=%zu", n);
    BOTH(be->add(be, P(g), P(g), P(u), n)); // in place: out aliases a
    sync_both("add in place");
    bcmp(&g, TOL_BF16, "add in place n=%zu", n);
    bfree(&g), bfree(&u), bfree(&out);
}

/* 1: logits with -inf (masked vocabulary): the first 600 of every row (so
 * every thread of a 512-thread row starts on -inf) and every 7th, never the
 * target */
static int ce_neg_inf = 0;
static float g_cecap; /* > 0: cross_entropy_cap */
static void t_ce(lt_backend *be, float *loss, void *dl, const void *logits, const int32_t *tg, int N, int V, float gs) {
    if (g_cecap > 0) be->cross_entropy_cap(be, loss, dl, logits, tg, N, V, gs, g_cecap);
    else be->cross_entropy(be, loss, dl, logits, tg, N, V, gs);
}

static void test_cross_entropy(int N, int V) {
    float gs = 1.0f / (float)N;
    float *hl = rnd((size_t)N * V, 2.0f);
    buf logits = bnew(K_ACT, (size_t)N * V);
    bset(&logits, hl);
    buf tg = bnew(K_I32, N);
    int32_t *ht = malloc(N * sizeof *ht);
    for (int n = 0; n < N; n++) ht[n] = urand(5) == 0 ? -1 : (int32_t)urand((uint32_t)V);
    ht[0] = V - 1;
    bset_i32(&tg, ht);
    for (int n = 0; ce_neg_inf && n < N; n++)
        for (int v = 0; v < V - 1; v++)
            if ((v < 600 || v % 7 == 0) && v != ht[n]) hl[(size_t)n * V + v] = -INFINITY;
    bset(&logits, hl);
    buf loss = bnew(K_F32, N), dl = bnew(K_ACT, (size_t)N * V);
    bpoison(&loss), bpoison(&dl);
    BOTH(t_ce(be, (float *)P(loss), P(dl), P(logits), (const int32_t *)P(tg), N, V, gs));
    sync_both("cross_entropy");
    bcmp(&loss, TOL_F32, "cross_entropy loss N=%d V=%d cap=%g", N, V, g_cecap);
    bcmp(&dl, TOL_BF16, "cross_entropy dlogits N=%d V=%d cap=%g", N, V, g_cecap);
    bpoison(&loss);
    BOTH(t_ce(be, (float *)P(loss), NULL, P(logits), (const int32_t *)P(tg), N, V, gs));
    sync_both("cross_entropy (loss only)");
    bcmp(&loss, TOL_F32, "cross_entropy loss only N=%d V=%d cap=%g", N, V, g_cecap);
    bpoison(&loss);
    BOTH(t_ce(be, (float *)P(loss), P(logits), P(logits), (const int32_t *)P(tg), N, V, gs));
    sync_both("cross_entropy (in place)");
    bcmp(&loss, TOL_F32, "cross_entropy loss in place N=%d V=%d cap=%g", N, V, g_cecap);
    bcmp(&logits, TOL_BF16, "cross_entropy dlogits in place N=%d V=%d cap=%g", N, V, g_cecap);
    free(hl), free(ht);
    bfree(&logits), bfree(&tg), bfree(&loss), bfree(&dl);
}

static const char *lora_ver = ""; /* the LoRA variant of the current run */

/* v1 rounds out (and dx without dropout) twice: TOL_BF16X; v2 once: TOL_BF16 */
static void test_lora(int M, int K, int Nout, int r, int with_bias, int dropout) {
    float scale = 2.0f;
    int v1 = !strcmp(lora_ver, "1");
    lt_op_tol_class tol_out = v1 ? TOL_BF16X : TOL_BF16;
    buf x = brnd(K_ACT, (size_t)M * K, 1.0f);
    buf xl = brnd(K_ACT, (size_t)M * K, 1.0f); // stands for x after adapter dropout
    buf w = brnd(K_PARAM, (size_t)Nout * K, 0.05f), bias = brnd(K_PARAM, Nout, 0.5f);
    buf A = brnd(K_F32, (size_t)r * K, 0.05f), Bm = brnd(K_F32, (size_t)Nout * r, 0.05f);
    buf out = bnew(K_ACT, (size_t)M * Nout), xa = bnew(K_F32, (size_t)M * r);
    bpoison(&out), bpoison(&xa);
#define XL (dropout ? P(xl) : P(x))
    BOTH(be->lora_fwd(be, P(out), (float *)P(xa), P(x), XL, P(w), with_bias ? P(bias) : NULL, (const float *)P(A),
                      (const float *)P(Bm), M, K, Nout, r, scale));
    sync_both("lora_fwd");
    bcmp(&out, tol_out, "lora_fwd out v%s M=%d K=%d N=%d r=%d bias=%d dropout=%d", lora_ver, M, K, Nout, r,
         with_bias, dropout);
    bcmp(&xa, TOL_F32, "lora_fwd xa v%s M=%d K=%d r=%d", lora_ver, M, K, r);

    float *hxa = bget(&xa, CPU); // the backward reads the same xa on both sides
    bset(&xa, hxa);
    free(hxa);
    buf dout = brnd(K_ACT, (size_t)M * Nout, 1.0f);
    buf dx = bnew(K_ACT, (size_t)M * K), dxl = bnew(K_ACT, (size_t)M * K);
    buf dA = brnd(K_F32, (size_t)r * K, 0.5f), dB = brnd(K_F32, (size_t)Nout * r, 0.5f);
    for (int acc = 0; acc <= 1; acc++) {
        bstart(&dx, acc);
        bpoison(&dxl);
        BOTH(be->lora_bwd(be, P(dx), acc, dropout ? P(dxl) : NULL, (float *)P(dA), (float *)P(dB), P(dout), XL, P(w),
                          (const float *)P(A), (const float *)P(Bm), (const float *)P(xa), M, K, Nout, r, scale));
        sync_both("lora_bwd");
        bcmp(&dx, dropout ? TOL_BF16 : tol_out, "lora_bwd dx v%s acc=%d M=%d K=%d N=%d r=%d dropout=%d", lora_ver,
             acc, M, K, Nout, r, dropout);
        if (dropout) bcmp(&dxl, TOL_BF16, "lora_bwd dx_lora v%s M=%d K=%d r=%d", lora_ver, M, K, r);
        bcmp(&dA, TOL_F32ACC, "lora_bwd dA v%s M=%d K=%d r=%d", lora_ver, M, K, r);
        bcmp(&dB, TOL_F32ACC, "lora_bwd dB v%s M=%d N=%d r=%d", lora_ver, M, Nout, r);
    }
    /* the CUDA side reruns: same bits (fixed-order reductions) */
    {
        lt_backend *g = BE[GPU];
        float *f_out = snap(&out);
        bpoison(&out);
        g->lora_fwd(g, out.p[GPU], (float *)xa.p[GPU], x.p[GPU], dropout ? xl.p[GPU] : x.p[GPU], w.p[GPU],
                    with_bias ? bias.p[GPU] : NULL, (const float *)A.p[GPU], (const float *)Bm.p[GPU], M, K, Nout, r,
                    scale);
        sync_both("lora_fwd rerun");
        same_bits(&out, f_out, "lora_fwd out rerun");
        float *a0 = rnd((size_t)r * K, 0.5f), *b0 = rnd((size_t)Nout * r, 0.5f);
        float *f[4] = {NULL, NULL, NULL, NULL};
        for (int rep = 0; rep < 2; rep++) {
            bset(&dA, a0), bset(&dB, b0), bpoison(&dx), bpoison(&dxl);
            g->lora_bwd(g, dx.p[GPU], 0, dropout ? dxl.p[GPU] : NULL, (float *)dA.p[GPU], (float *)dB.p[GPU],
                        dout.p[GPU], dropout ? xl.p[GPU] : x.p[GPU], w.p[GPU], (const float *)A.p[GPU],
                        (const float *)Bm.p[GPU], (const float *)xa.p[GPU], M, K, Nout, r, scale);
            sync_both("lora_bwd rerun");
            if (rep == 0) {
                f[0] = snap(&dx), f[1] = snap(&dA), f[2] = snap(&dB);
                if (dropout) f[3] = snap(&dxl);
            } else {
                same_bits(&dx, f[0], "lora_bwd dx rerun");
                same_bits(&dA, f[1], "lora_bwd dA rerun");
                same_bits(&dB, f[2], "lora_bwd dB rerun");
                if (dropout) same_bits(&dxl, f[3], "lora_bwd dx_lora rerun");
            }
        }
        free(f_out), free(a0), free(b0), free(f[0]), free(f[1]), free(f[2]), free(f[3]);
    }
#undef XL
    bfree(&x), bfree(&xl), bfree(&w), bfree(&bias), bfree(&A), bfree(&Bm), bfree(&out), bfree(&xa), bfree(&dout),
        bfree(&dx), bfree(&dxl), bfree(&dA), bfree(&dB);
}

/* every LoRA shape with v1 and v2 (the CPU side ignores the variables);
 * chunk_rows > 0 forces v2's row chunks of the f32 scratch that small */
static void test_lora_versions(int M, int K, int Nout, int r, int with_bias, int dropout, int chunk_rows) {
    static const char *vers[2] = {"1", "2"};
    for (int i = 0; i < 2; i++) {
        LT_CHECK_OK(lt_op_lora_variant(BE[GPU], i + 1, chunk_rows, &err), &err);
        lora_ver = vers[i];
        test_lora(M, K, Nout, r, with_bias, dropout);
    }
    LT_CHECK_OK(lt_op_lora_variant(BE[GPU], 0, 0, &err), &err);
    lora_ver = "";
}

static void test_sumsq(size_t n) {
    float *h = rnd(n, 1.5f);
    buf x = bnew(K_F32, n);
    bset(&x, h);
    double want = 0;
    for (size_t i = 0; i < n; i++) want += (double)h[i] * h[i];
    double c = BE[CPU]->sumsq(BE[CPU], (const float *)x.p[CPU], n);
    double g1 = BE[GPU]->sumsq(BE[GPU], (const float *)x.p[GPU], n);
    double g2 = BE[GPU]->sumsq(BE[GPU], (const float *)x.p[GPU], n);
    sync_both("sumsq");
    lt_test_checks++;
    double e = fabs(g1 - want) / want, tol = lt_op_tol(TOL_SUMSQ, LT_F32);
    if (!(e <= tol) || !(fabs(c - want) / want <= tol)) {
        lt_test_failures++;
        fprintf(stderr, "FAIL sumsq n=%zu: cuda %.17g cpu %.17g host %.17g (rel err %.3g)\n", n, g1, c, want, e);
    } else if (getenv("LT_TEST_VERBOSE")) {
        printf("  ok sumsq n=%zu rel err %.3g\n", n, e);
    }
    LT_CHECK(memcmp(&g1, &g2, sizeof g1) == 0, "sumsq n=%zu: rerun differs (%.17g vs %.17g)", n, g1, g2);
    free(h);
    bfree(&x);
}

/* sumsq_units of x (n f32 values) in units of `unit` (the last unit short
 * when unit does not divide n): on each side, every unit's double equals
 * that side's per-unit sumsq bitwise; the two sides agree per unit within
 * TOL_SUMSQ (relative); the CUDA side is bitwise the same on a rerun. The
 * host output is poisoned with NaN before every call (NaN never passes) and
 * has a guard value after the last unit that must stay. */
static void test_sumsq_units(size_t n, size_t unit) {
    size_t nu = (n + unit - 1) / unit;
    const double guard = -12345.0;
    char what[96];
    snprintf(what, sizeof what, "sumsq_units n=%zu unit=%zu (%zu units)", n, unit, nu);
    float *h = rnd(n, 1.5f);
    buf x = bnew(K_F32, n);
    bset(&x, h);
    double *got[2], *one[2], *again = malloc((nu + 1) * sizeof(double));
    for (int s = 0; s < 2; s++) {
        got[s] = malloc((nu + 1) * sizeof(double));
        one[s] = malloc(nu * sizeof(double));
        for (size_t k = 0; k <= nu; k++) got[s][k] = k < nu ? NAN : guard;
        BE[s]->sumsq_units(BE[s], (const float *)x.p[s], n, unit, got[s]);
        for (size_t k = 0; k < nu; k++) {
            size_t e0 = k * unit, len = n - e0 < unit ? n - e0 : unit;
            one[s][k] = BE[s]->sumsq(BE[s], (const float *)x.p[s] + e0, len);
        }
    }
    for (size_t k = 0; k <= nu; k++) again[k] = k < nu ? NAN : guard;
    BE[GPU]->sumsq_units(BE[GPU], (const float *)x.p[GPU], n, unit, again);
    sync_both(what);
    double maxrel = 0.0, maxabs = 0.0;
    for (int s = 0; s < 2; s++) {
        size_t bad = 0, first = 0;
        for (size_t k = 0; k < nu; k++)
            if ((isnan(got[s][k]) || memcmp(&got[s][k], &one[s][k], sizeof(double))) && !bad++) first = k;
        LT_CHECK(bad == 0, "%s on %s: %zu units differ from the per-unit sumsq (first %zu: %.17g vs %.17g)", what,
                 SIDE[s], bad, first, got[s][bad ? first : 0], one[s][bad ? first : 0]);
        LT_CHECK(got[s][nu] == guard, "%s on %s: wrote past its %zu units", what, SIDE[s], nu);
    }
    size_t bad = 0, first = 0;
    for (size_t k = 0; k < nu; k++) {
        double d = fabs(got[GPU][k] - got[CPU][k]), rel = d / got[CPU][k];
        if (!(rel <= lt_op_tol(TOL_SUMSQ, LT_F32)) && !bad++) first = k;
        if (rel > maxrel) maxrel = rel;
        if (d > maxabs) maxabs = d;
    }
    lt_test_checks++;
    if (bad) {
        lt_test_failures++;
        fprintf(stderr, "FAIL %s: %zu units of %s off %s by more than %g (first %zu: %.17g vs %.17g)\n", what, bad,
                SIDE[GPU], SIDE[CPU], lt_op_tol(TOL_SUMSQ, LT_F32), first, got[GPU][first], got[CPU][first]);
    } else if (getenv("LT_TEST_VERBOSE")) {
        printf("  ok %-48s norm err %.3g  max abs %.3g\n", what, maxrel, maxabs);
    }
    LT_CHECK(memcmp(again, got[GPU], (nu + 1) * sizeof(double)) == 0, "%s: %s rerun gave different bits", what,
             SIDE[GPU]);
    bguard(&x, what);
    for (int s = 0; s < 2; s++) free(got[s]), free(one[s]);
    free(again), free(h);
    bfree(&x);
}

static void test_adamw(int steps) {
    enum { NT = 3 };
    size_t n[NT] = {1000, 4097, 3};
    float wd[NT] = {0.1f, 0.0f, 0.01f};
    int bf[NT] = {0, 1, 0}; /* tensor 1: bf16 weights with f32 master weights */
    buf param[NT], master[NT], grad[NT], m[NT], v[NT];
    for (int t = 0; t < NT; t++) {
        float *h = rnd(n[t], 0.5f);
        param[t] = bnew(bf[t] ? K_BF16 : K_F32, n[t]);
        if (bf[t]) {
            bpoison(&param[t]);
            master[t] = bnew(K_F32, n[t]);
            float *hm = rnd(n[t], 0.5f);
            bset(&master[t], hm);
            free(hm);
        } else {
            bset(&param[t], h);
            memset(&master[t], 0, sizeof master[t]);
        }
        grad[t] = brnd(K_F32, n[t], 0.01f);
        m[t] = brnd(K_F32, n[t], 0.001f);
        float *hv = rnd(n[t], 0.001f);
        for (size_t i = 0; i < n[t]; i++) hv[i] = hv[i] * hv[i]; // v >= 0
        v[t] = bnew(K_F32, n[t]);
        bset(&v[t], hv);
        free(hv), free(h);
    }
    for (int step = 1; step <= steps; step++) {
        for (int s = 0; s < 2; s++) {
            lt_adamw_tensor ts[NT];
            for (int t = 0; t < NT; t++) {
                ts[t].param = param[t].p[s];
                ts[t].param_dtype = bf[t] ? LT_BF16 : LT_F32;
                ts[t].master = bf[t] ? (float *)master[t].p[s] : NULL;
                ts[t].grad = (const float *)grad[t].p[s];
                ts[t].m = (float *)m[t].p[s];
                ts[t].v = (float *)v[t].p[s];
                ts[t].n = n[t];
                ts[t].weight_decay = wd[t];
            }
            BE[s]->adamw(BE[s], ts, NT, 1e-3f, 0.9f, 0.999f, 1e-8f, step, step == 2 ? 0.5f : 1.0f);
        }
        sync_both("adamw");
        for (int t = 0; t < NT; t++) {
            bcmp(&param[t], TOL_OPT, "adamw step %d tensor %d param (%s)", step, t, bf[t] ? "bf16" : "f32");
            if (bf[t]) bcmp(&master[t], TOL_OPT, "adamw step %d tensor %d master", step, t);
            bcmp(&m[t], TOL_OPT, "adamw step %d tensor %d m", step, t);
            bcmp(&v[t], TOL_OPT, "adamw step %d tensor %d v", step, t);
        }
    }
    for (int t = 0; t < NT; t++) {
        bfree(&param[t]), bfree(&grad[t]), bfree(&m[t]), bfree(&v[t]);
        if (bf[t]) bfree(&master[t]);
    }
}

/* ------------------------------------------------------------------------ */
/* the runners: one per op of the table, called with each of its test shapes */

static void run_embedding(const long *s) { test_embedding((int)s[0], (int)s[1], (int)s[2], (int)s[3]); }
static void run_embed_noise(const long *s) { test_embed_noise((int)s[0], (int)s[1], (int)s[2]); }
static void run_matmul(const long *s) { test_matmul((int)s[0], (int)s[1], (int)s[2], (int)s[3]); }
static void run_rmsnorm(const long *s) { test_rmsnorm((int)s[0], (int)s[1]); }
static void run_add_rmsnorm(const long *s) { test_add_rmsnorm((int)s[0], (int)s[1]); }
static void run_rope(const long *s) { test_rope((int)s[0], (int)s[1], (int)s[2], (int)s[3], (float)s[4] / 1000.0f); }
static void run_attention(const long *s) {
    test_attention_versions((int)s[0], (int)s[1], (int)s[2], (int)s[3], (int)s[4], (int)s[5]);
}
static void run_swiglu(const long *s) { test_swiglu((size_t)s[0]); }
static void run_add(const long *s) { test_add((size_t)s[0]); }
static void run_cross_entropy(const long *s) {
    ce_neg_inf = (int)s[2];
    test_cross_entropy((int)s[0], (int)s[1]);
    ce_neg_inf = 0;
}
static void run_lora(const long *s) {
    test_lora_versions((int)s[0], (int)s[1], (int)s[2], (int)s[3], (int)s[4], (int)s[5], (int)s[6]);
}
static void run_sumsq(const long *s) { test_sumsq((size_t)s[0]); }
static void run_rmsnorm_off(const long *s) {
    g_offop = 1, g_woff = (float)s[2] / 10.0f;
    test_rmsnorm((int)s[0], (int)s[1]);
    test_add_rmsnorm((int)s[0], (int)s[1]);
    g_offop = 0, g_woff = 0.0f;
}
static void run_geglu(const long *s) { test_geglu((size_t)s[0]); }
static void run_scale(const long *s) { test_scale((size_t)s[0]); }
static void run_attention_cap(const long *s) {
    g_attcap = 1, g_cap = (float)s[6] / 10.0f, g_window = (int)s[7];
    test_attention_versions((int)s[0], (int)s[1], (int)s[2], (int)s[3], (int)s[4], (int)s[5]);
    g_attcap = 0, g_cap = 0.0f, g_window = 0;
}
static void run_cross_entropy_cap(const long *s) {
    ce_neg_inf = (int)s[2], g_cecap = (float)s[3] / 10.0f;
    test_cross_entropy((int)s[0], (int)s[1]);
    ce_neg_inf = 0, g_cecap = 0.0f;
}
static void run_adamw(const long *s) { test_adamw((int)s[0]); }
static void run_nf4_matmul(const long *s) { test_nf4_matmul((int)s[0], (int)s[1], (int)s[2], (int)s[3]); }
static void run_copy(const long *s) { test_copy((size_t)s[0], (size_t)s[1], (size_t)s[2]); }
static void run_sumsq_units(const long *s) { test_sumsq_units((size_t)s[0], (size_t)s[1]); }

static const lt_op_runner RUNNERS[] = {
    {"embedding", run_embedding}, {"embed_noise", run_embed_noise}, {"matmul", run_matmul},   {"rmsnorm", run_rmsnorm},
    {"add_rmsnorm", run_add_rmsnorm}, {"rope", run_rope},   {"attention", run_attention},
    {"swiglu", run_swiglu},       {"add", run_add},         {"cross_entropy", run_cross_entropy},
    {"lora", run_lora},           {"sumsq", run_sumsq},     {"adamw", run_adamw},
    {"rmsnorm_off", run_rmsnorm_off}, {"geglu", run_geglu}, {"attention_cap", run_attention_cap},
    {"cross_entropy_cap", run_cross_entropy_cap}, {"scale", run_scale},
    {"nf4_matmul", run_nf4_matmul}, {"copy", run_copy}, {"sumsq_units", run_sumsq_units},
};
#define NRUNNERS (int)(sizeof RUNNERS / sizeof RUNNERS[0])

/* ------------------------------------------------------------------------ */
/* LT_BACKEND_OPS_FAULT: a broken second CPU backend (selftest only), so the
 * harness is shown to catch each kind of fault:
 *   nan      swiglu_fwd writes one NaN        (NaN never passes)
 *   skip     swiglu_fwd writes nothing        (outputs poisoned before the run)
 *   guard    swiglu_fwd writes one past the end (guard bytes)
 *   perturb  swiglu_fwd scales out by 1.001  (the f32 tolerance, not bf16's)
 *   nondet   embedding_bwd moves one value by one ulp on every other call
 *            (determinism reruns)
 *   short    copy leaves out its last byte     (exact byte comparison)
 *   lastunit sumsq_units leaves its last unit unwritten (NaN never passes) */
static const char *fault;
static void (*real_swiglu_fwd)(lt_backend *, void *, const void *, const void *, size_t);
static void (*real_embedding_bwd)(lt_backend *, float *, const void *, const int32_t *, int, int);

static void faulty_swiglu_fwd(lt_backend *be, void *out, const void *gate, const void *up, size_t n) {
    float *o = out; /* the stand-in is a CPU backend: f32 in host memory */
    if (!strcmp(fault, "skip")) return;
    real_swiglu_fwd(be, out, gate, up, n);
    if (!strcmp(fault, "nan")) o[n - 1] = NAN;
    if (!strcmp(fault, "guard")) o[n] = o[0];
    if (!strcmp(fault, "perturb"))
        for (size_t i = 0; i < n; i++) o[i] *= 1.001f;
}

static void (*real_copy)(lt_backend *, void *, const void *, size_t);
static void faulty_copy(lt_backend *be, void *dst, const void *src, size_t bytes) {
    real_copy(be, dst, src, bytes ? bytes - 1 : 0);
}

static void (*real_sumsq_units)(lt_backend *, const float *, size_t, size_t, double *);
static void faulty_sumsq_units(lt_backend *be, const float *x, size_t n, size_t unit, double *out) {
    size_t last = n ? (n - 1) / unit * unit : 0; /* the last unit's first element */
    real_sumsq_units(be, x, last, unit, out);
}

static void faulty_embedding_bwd(lt_backend *be, float *dtable, const void *dout, const int32_t *ids, int N, int C) {
    static int calls;
    real_embedding_bwd(be, dtable, dout, ids, N, C);
    if (++calls % 2 == 0) dtable[(size_t)ids[0] * C] = nextafterf(dtable[(size_t)ids[0] * C], INFINITY);
}

static int inject_fault(lt_backend *be, const char *name) {
    fault = name;
    if (!strcmp(name, "nan") || !strcmp(name, "skip") || !strcmp(name, "guard") || !strcmp(name, "perturb")) {
        real_swiglu_fwd = be->swiglu_fwd;
        be->swiglu_fwd = faulty_swiglu_fwd;
    } else if (!strcmp(name, "nondet")) {
        real_embedding_bwd = be->embedding_bwd;
        be->embedding_bwd = faulty_embedding_bwd;
    } else if (!strcmp(name, "short")) {
        real_copy = be->copy;
        be->copy = faulty_copy;
    } else if (!strcmp(name, "lastunit")) {
        real_sumsq_units = be->sumsq_units;
        be->sumsq_units = faulty_sumsq_units;
    } else {
        fprintf(stderr, "test_backend_ops: unknown LT_BACKEND_OPS_FAULT '%s' (nan skip guard perturb nondet short lastunit)\n",
                name);
        return 0;
    }
    printf("test_backend_ops: fault '%s' injected into the second backend: this run must fail\n", name);
    return 1;
}

int main(int argc, char **argv) {
    const char *only;
    int rc = lt_op_parse_args("test_backend_ops", argc, argv, &only);
    if (rc >= 0) return rc;
    lt_status st;
    if (getenv("LT_BACKEND_OPS_SELFTEST")) {
        /* harness check without a GPU: a second CPU backend stands in for
         * CUDA (f32 both sides, so it exercises buffers, guards, shapes and
         * the comparisons, not bf16) */
        SIDE[GPU] = "cpu#2";
        st = lt_cpu_backend_create(1, &BE[GPU], &err);
        const char *f = getenv("LT_BACKEND_OPS_FAULT");
        if (st == LT_OK && f && *f && !inject_fault(BE[GPU], f)) return 2;
    } else {
#ifndef LT_HAVE_CUDA
        printf("test_backend_ops: skipped: built without the CUDA backend\n");
        return LT_TEST_SKIP;
#else
        st = lt_backend_create_device("cuda", 0, 0, &BE[GPU], &err);
        if (st == LT_ERR_UNSUPPORTED) {
            printf("test_backend_ops: skipped: %s\n", err.msg);
            return LT_TEST_SKIP;
        }
#endif
    }
    LT_CHECK_OK(st, &err);
    if (st != LT_OK) return lt_test_finish("test_backend_ops");
    st = lt_cpu_backend_create(2, &BE[CPU], &err);
    LT_CHECK_OK(st, &err);
    if (st != LT_OK) return lt_test_finish("test_backend_ops");

    LT_CHECK(lt_op_run_table("test_backend_ops", LT_OP_MODE_TEST, RUNNERS, NRUNNERS, only, &lt_test_failures) == 0,
             "the runners here and the op case table (bench/lt_op_cases.c) disagree");

    BE[CPU]->destroy(BE[CPU]);
    BE[GPU]->destroy(BE[GPU]);
    return lt_test_finish("test_backend_ops");
}
