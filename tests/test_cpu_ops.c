/*
 * test_cpu_ops.c -- the CPU backend's ops (core/lt_cpu_*.c) against
 *   (1) naive double-precision references written plainly here (forward),
 *   (2) central finite differences of the backend's own forward (backward):
 *       L = sum(out * R) with random R, accumulated in double; the analytic
 *       gradient is the backward applied to dout = R,
 *   (3) PyTorch's torch.optim.AdamW (fixture tests/fixtures/cpu_ops/adamw_torch.bin
 *       written by tools/gen_cpu_ops_fixtures.py),
 * the CPU backend's exp (lt_cpu_expf, core/lt_cpu.h) against double exp,
 * matmuls large enough to be split into panels against double references,
 * add_rmsnorm_fwd also equals add + rmsnorm_fwd bitwise (in place too), and
 * its documented backward (rmsnorm_bwd with acc_dx) matches finite differences;
 * plus: packed documents equal separate runs (bitwise), outputs poisoned with
 * NaN before every op, parameter gradients and acc_dx accumulate onto random
 * nonzero values, aliasing (dlogits = logits, add in place), and bitwise
 * determinism between 1 and 2 threads.
 *
 * Tolerances (normalized error ||got - want|| / ||want||, see lt_compare):
 *   TOL_FWD  forward vs double reference                      (fp32 rounding)
 *   TOL_FD   backward vs finite differences of the fp32 forward (step h;
 *            fp32 noise / h plus the O(h^2) truncation)
 *   TOL_ACC  "accumulated minus initial" vs the plain result
 *   TOL_GRAD_EXACT  an fp32 backward vs its exact gradient in double (cross-entropy)
 * This is the cpu mode of the op case table (bench/lt_op_cases.h): the ops
 * and their cpu shapes come from the table (one runner per op below; an op
 * of the table without a cpu check fails), `--op NAME` runs one op (without
 * the checks that span ops: exp, thread determinism, errors), `--list-ops`
 * lists them.
 * Set LT_TEST_VERBOSE=1 to print every comparison.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_backend.h"
#include "lt_cpu.h" /* lt_cpu_expf */
#include "lt_nf4.h"
#include "lt_op_cases.h"
#include "lt_test.h"

#define TOL_FWD 2e-6
#define TOL_FD 2e-3
#define TOL_ACC 1e-6
#define TOL_GRAD_EXACT 1e-5 /* an fp32 backward vs its exact double value */
#define FD_H 1e-2f

static lt_backend *be;
static uint64_t seed = 1;

/* ---- buffers: backend memory, freed together at the end of each test ---- */
static void *arena[1024];
static int narena;

static void *bbuf(size_t bytes) {
    void *p;
    lt_err e;
    if (be->alloc(be, bytes, &p, &e) != LT_OK || narena == 1024) {
        fprintf(stderr, "test_cpu_ops: alloc failed: %s\n", e.msg);
        exit(1);
    }
    arena[narena++] = p;
    return p;
}
static float *fbuf(size_t n) { return (float *)bbuf(n * sizeof(float)); }
static float *frand(size_t n, float scale) {
    float *p = fbuf(n);
    lt_fill_normal(p, n, scale, seed++);
    return p;
}
static float *fpoison(size_t n) {
    float *p = fbuf(n);
    lt_poison(p, n);
    return p;
}
static float *fdup(const float *x, size_t n) {
    float *p = fbuf(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}
static int32_t *ibuf(size_t n) { return (int32_t *)bbuf(n * sizeof(int32_t)); }
static void arena_free(void) {
    for (int i = 0; i < narena; i++) be->free(be, arena[i]);
    narena = 0;
}
/* a - b elementwise (what an accumulating op added) */
static float *fdiff(const float *a, const float *b, size_t n) {
    float *p = fbuf(n);
    for (size_t i = 0; i < n; i++) p[i] = a[i] - b[i];
    return p;
}
static float *from_double(const double *x, size_t n) {
    float *p = fbuf(n);
    for (size_t i = 0; i < n; i++) p[i] = (float)x[i];
    return p;
}
static double *dbuf(size_t n) {
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p) exit(1);
    return p;
}

static void check(const char *what, const float *got, const float *want, size_t n, double tol) {
    lt_check_close(what, got, want, n, tol);
}
static void check_bitwise(const char *what, const float *got, const float *want, size_t n) {
    int same = memcmp(got, want, n * sizeof(float)) == 0;
    LT_CHECK(same, "%s: not bitwise equal", what);
    if (same && getenv("LT_TEST_VERBOSE")) printf("  ok %-48s bitwise equal\n", what);
}
static int sync_ok(const char *what) {
    lt_err e;
    lt_status st = be->sync(be, &e);
    LT_CHECK(st == LT_OK, "%s: sync: %s", what, e.msg);
    return st == LT_OK;
}

/* sum(out * R) in double */
static double objective(const float *out, const float *R, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * R[i];
    return s;
}

/* Central differences of f with respect to each x[i] (using the actual
 * rounded step), into fd[i]. */
typedef double (*obj_fn)(void *ctx);
static void fd_grad(obj_fn f, void *ctx, float *x, size_t n, float h, float *fd) {
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i], xp = x0 + h, xm = x0 - h;
        x[i] = xp;
        double lp = f(ctx);
        x[i] = xm;
        double lm = f(ctx);
        x[i] = x0;
        fd[i] = (float)((lp - lm) / ((double)xp - (double)xm));
    }
}
static void check_fd(const char *what, obj_fn f, void *ctx, float *x, size_t n, const float *analytic) {
    float *fd = fbuf(n);
    fd_grad(f, ctx, x, n, FD_H, fd);
    check(what, analytic, fd, n, TOL_FD);
}

/* =========================== embedding =========================== */
typedef struct {
    float *out, *table, *R;
    int32_t *ids;
    int N, C;
} emb_ctx;
static double emb_obj(void *p) {
    emb_ctx *c = p;
    be->embedding_fwd(be, c->out, c->table, c->ids, c->N, c->C);
    return objective(c->out, c->R, (size_t)c->N * c->C);
}

static void test_embedding(int V, int N, int C) {
    char w[96];
    emb_ctx c = {.N = N, .C = C};
    c.table = frand((size_t)V * C, 1.0f);
    c.ids = ibuf(N);
    lt_rng r;
    lt_rng_seed(&r, seed++);
    for (int n = 0; n < N; n++) c.ids[n] = (int32_t)(lt_rng_u64(&r) % (uint64_t)V); // repeats when N > V
    c.out = fpoison((size_t)N * C);
    c.R = frand((size_t)N * C, 1.0f);

    be->embedding_fwd(be, c.out, c.table, c.ids, N, C);
    float *ref = fbuf((size_t)N * C);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < C; j++) ref[(size_t)n * C + j] = c.table[(size_t)c.ids[n] * C + j];
    snprintf(w, sizeof w, "embedding_fwd V%d N%d C%d", V, N, C);
    check_bitwise(w, c.out, ref, (size_t)N * C);

    // backward onto random nonzero dtable: bitwise equal to the in-order float sum
    float *d0 = frand((size_t)V * C, 1.0f), *dt = fdup(d0, (size_t)V * C);
    be->embedding_bwd(be, dt, c.R, c.ids, N, C);
    float *want = fdup(d0, (size_t)V * C);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < C; j++) want[(size_t)c.ids[n] * C + j] += c.R[(size_t)n * C + j];
    snprintf(w, sizeof w, "embedding_bwd in-order sum V%d N%d C%d", V, N, C);
    check_bitwise(w, dt, want, (size_t)V * C);
    snprintf(w, sizeof w, "embedding_bwd vs FD V%d N%d C%d", V, N, C);
    check_fd(w, emb_obj, &c, c.table, (size_t)V * C, fdiff(dt, d0, (size_t)V * C));
    sync_ok("embedding");
    arena_free();
}

/* =========================== embed_noise (NEFTune) =========================== */
/* From zero input the output is the noise itself: bounds |d| < mag (TRL's
 * uniform_(-mag, mag)), mean 0, variance mag^2/3 and no correlation between
 * neighbours (columns and rows) within 6 standard errors; on random input
 * the result is x + d bitwise (additive: gradients pass through); the same
 * key gives the same bits, another key other values. */
static void test_embed_noise(int N, int C) {
    char w[128];
    size_t n = (size_t)N * C;
    const float mag = 0.25f;
    const uint64_t key = 0xabcdef12345ull + n;
    float *d = fbuf(n), *d2 = fbuf(n), *d3 = fbuf(n);
    memset(d, 0, n * sizeof(float)), memset(d2, 0, n * sizeof(float)), memset(d3, 0, n * sizeof(float));
    be->embed_noise(be, d, N, C, mag, key);
    be->embed_noise(be, d2, N, C, mag, key);
    be->embed_noise(be, d3, N, C, mag, key + 1);
    snprintf(w, sizeof w, "embed_noise N%d C%d: same key", N, C);
    check_bitwise(w, d2, d, n);
    double sum = 0, sq = 0, cc = 0, cr = 0, mx = 0;
    size_t out_of = 0, other = 0, ncr = 0;
    for (size_t i = 0; i < n; i++) {
        double v = d[i];
        out_of += !(fabs(v) < mag);
        mx = fabs(v) > mx ? fabs(v) : mx;
        sum += v, sq += v * v;
        other += d3[i] != d[i];
        if ((i + 1) % (size_t)C) cc += v * d[i + 1];
        if (i + C < n) cr += v * d[i + C], ncr++;
    }
    LT_CHECK(out_of == 0, "embed_noise N%d C%d: %zu values outside (-%g, %g)", N, C, out_of, mag, mag);
    LT_CHECK(other >= n * 99 / 100, "embed_noise N%d C%d: another key changed only %zu of %zu", N, C, other, n);
    if (n >= 10000) {
        double var = mag * (double)mag / 3, mean = sum / n, v2 = sq / n;
        double se_mean = sqrt(var / n), se_var = mag * (double)mag * sqrt(4.0 / 45.0 / n), se_cov = var / sqrt((double)n);
        LT_CHECK(fabs(mean) < 6 * se_mean, "embed_noise N%d C%d: mean %.3g (se %.3g)", N, C, mean, se_mean);
        LT_CHECK(fabs(v2 - var) < 6 * se_var, "embed_noise N%d C%d: variance %.6g, want mag^2/3 = %.6g (se %.3g)", N,
                 C, v2, var, se_var);
        LT_CHECK(mx > 0.999 * mag, "embed_noise N%d C%d: max |d| %.6g, want close to %g", N, C, mx, mag);
        LT_CHECK(fabs(cc / n) < 6 * se_cov && fabs(cr / (ncr ? ncr : 1)) < 6 * se_cov,
                 "embed_noise N%d C%d: neighbours correlate (%.3g, %.3g; se %.3g)", N, C, cc / n, cr / ncr, se_cov);
    }
    float *x = frand(n, 1.0f), *y = fdup(x, n), *want = fbuf(n);
    be->embed_noise(be, y, N, C, mag, key);
    for (size_t i = 0; i < n; i++) want[i] = x[i] + d[i];
    snprintf(w, sizeof w, "embed_noise N%d C%d: x + noise", N, C);
    check_bitwise(w, y, want, n);
    sync_ok("embed_noise");
    arena_free();
}

/* =========================== matmul =========================== */
typedef struct {
    float *out, *x, *w, *b, *R;
    int M, K, N;
} mm_ctx;
static double mm_obj(void *p) {
    mm_ctx *c = p;
    be->matmul_fwd(be, c->out, c->x, c->w, c->b, c->M, c->K, c->N);
    return objective(c->out, c->R, (size_t)c->M * c->N);
}

/* x (M, K) @ w (N, K)^T (+ b) in double (free the result) */
static double *ref_linear(const float *x, const float *w, const float *b, int M, int K, int N) {
    double *ref = dbuf((size_t)M * N);
    for (int m = 0; m < M; m++)
        for (int o = 0; o < N; o++) {
            double s = b ? b[o] : 0.0;
            for (int k = 0; k < K; k++) s += (double)x[(size_t)m * K + k] * w[(size_t)o * K + k];
            ref[(size_t)m * N + o] = s;
        }
    return ref;
}

static void test_matmul(int M, int K, int N, int with_bias) {
    char w[96];
    mm_ctx c = {.M = M, .K = K, .N = N};
    c.x = frand((size_t)M * K, 1.0f);
    c.w = frand((size_t)N * K, 0.5f);
    c.b = with_bias ? frand(N, 1.0f) : NULL;
    c.out = fpoison((size_t)M * N);
    c.R = frand((size_t)M * N, 1.0f);

    be->matmul_fwd(be, c.out, c.x, c.w, c.b, M, K, N);
    double *ref = ref_linear(c.x, c.w, c.b, M, K, N);
    snprintf(w, sizeof w, "matmul_fwd M%d K%d N%d bias%d", M, K, N, with_bias);
    check(w, c.out, from_double(ref, (size_t)M * N), (size_t)M * N, TOL_FWD);
    free(ref);

    float *dx = fpoison((size_t)M * K);
    float *dw0 = frand((size_t)N * K, 1.0f), *dw = fdup(dw0, (size_t)N * K);
    float *db0 = frand(N, 1.0f), *db = fdup(db0, N);
    be->matmul_bwd(be, dx, 0, dw, with_bias ? db : NULL, c.R, c.x, c.w, M, K, N);
    snprintf(w, sizeof w, "matmul_bwd dx M%d K%d N%d", M, K, N);
    check_fd(w, mm_obj, &c, c.x, (size_t)M * K, dx);
    snprintf(w, sizeof w, "matmul_bwd dw (+=) M%d K%d N%d", M, K, N);
    check_fd(w, mm_obj, &c, c.w, (size_t)N * K, fdiff(dw, dw0, (size_t)N * K));
    if (with_bias) {
        snprintf(w, sizeof w, "matmul_bwd dbias (+=) M%d K%d N%d", M, K, N);
        check_fd(w, mm_obj, &c, c.b, N, fdiff(db, db0, N));
    }
    // acc_dx = 1 adds onto random values; NULL dw / dbias are skipped
    float *dx0 = frand((size_t)M * K, 1.0f), *dxa = fdup(dx0, (size_t)M * K);
    be->matmul_bwd(be, dxa, 1, NULL, NULL, c.R, c.x, c.w, M, K, N);
    snprintf(w, sizeof w, "matmul_bwd acc_dx M%d K%d N%d", M, K, N);
    check(w, fdiff(dxa, dx0, (size_t)M * K), dx, (size_t)M * K, TOL_ACC);
    // dx = NULL: only the weight gradient
    float *dw2 = fdup(dw0, (size_t)N * K);
    be->matmul_bwd(be, NULL, 0, dw2, NULL, c.R, c.x, c.w, M, K, N);
    snprintf(w, sizeof w, "matmul_bwd dw with dx=NULL M%d K%d N%d", M, K, N);
    check(w, dw2, dw, (size_t)N * K, TOL_ACC);
    sync_ok("matmul");
    arena_free();
}

/* =========================== nf4_matmul (QLoRA) =========================== */
typedef struct {
    float *out, *x, *b, *R;
    void *wq;
    int M, K, N;
} nf4_ctx;
static double nf4_obj(void *p) {
    nf4_ctx *c = p;
    be->nf4_matmul_fwd(be, c->out, c->x, c->wq, c->b, c->M, c->K, c->N);
    return objective(c->out, c->R, (size_t)c->M * c->N);
}

/* The NF4 linear: the weight quantized by core/lt_nf4.c (checked against
 * bitsandbytes by test_nf4); nf4_dequant gives its dequantization bit for
 * bit; the forward equals a double reference over the dequantized weight;
 * dx by finite differences through the forward, and += with acc_dx. */
static void test_nf4_matmul(int M, int K, int N, int with_bias) {
    char w[96];
    size_t nk = (size_t)N * K;
    nf4_ctx c = {.M = M, .K = K, .N = N};
    float *wf = frand(nk, 0.05f);
    lt_nf4_layout L = lt_nf4_layout_of(nk);
    c.wq = bbuf(L.bytes);
    lt_err e;
    LT_CHECK_OK(lt_nf4_quantize(wf, nk, c.wq, &e), &e);
    float *wd = fbuf(nk), *wref = fbuf(nk);
    lt_nf4_dequantize_f32(c.wq, nk, wref);
    be->nf4_dequant(be, wd, c.wq, nk);
    snprintf(w, sizeof w, "nf4_dequant n%zu", nk);
    check_bitwise(w, wd, wref, nk);

    c.x = frand((size_t)M * K, 1.0f);
    c.b = with_bias ? frand(N, 1.0f) : NULL;
    c.out = fpoison((size_t)M * N);
    c.R = frand((size_t)M * N, 1.0f);
    be->nf4_matmul_fwd(be, c.out, c.x, c.wq, c.b, M, K, N);
    double *ref = ref_linear(c.x, wref, c.b, M, K, N);
    snprintf(w, sizeof w, "nf4_matmul_fwd M%d K%d N%d bias%d", M, K, N, with_bias);
    check(w, c.out, from_double(ref, (size_t)M * N), (size_t)M * N, TOL_FWD);
    free(ref);

    float *dx = fpoison((size_t)M * K);
    be->nf4_matmul_bwd(be, dx, 0, c.R, c.wq, M, K, N);
    snprintf(w, sizeof w, "nf4_matmul_bwd dx M%d K%d N%d", M, K, N);
    check_fd(w, nf4_obj, &c, c.x, (size_t)M * K, dx);
    float *dx0 = frand((size_t)M * K, 1.0f), *dxa = fdup(dx0, (size_t)M * K);
    be->nf4_matmul_bwd(be, dxa, 1, c.R, c.wq, M, K, N);
    snprintf(w, sizeof w, "nf4_matmul_bwd acc_dx M%d K%d N%d", M, K, N);
    check(w, fdiff(dxa, dx0, (size_t)M * K), dx, (size_t)M * K, TOL_ACC);
    /* the same as matmul over the dequantized weight, bit for bit */
    float *out2 = fpoison((size_t)M * N), *dx2 = fpoison((size_t)M * K);
    be->nf4_matmul_fwd(be, c.out, c.x, c.wq, c.b, M, K, N); /* (the finite differences left it perturbed) */
    be->matmul_fwd(be, out2, c.x, wref, c.b, M, K, N);
    be->matmul_bwd(be, dx2, 0, NULL, NULL, c.R, c.x, wref, M, K, N);
    snprintf(w, sizeof w, "nf4_matmul_fwd = matmul_fwd(dequant) M%d K%d N%d", M, K, N);
    check_bitwise(w, c.out, out2, (size_t)M * N);
    snprintf(w, sizeof w, "nf4_matmul_bwd = matmul_bwd(dequant) M%d K%d N%d", M, K, N);
    check_bitwise(w, dx, dx2, (size_t)M * K);
    sync_ok("nf4_matmul");
    arena_free();
}

/* Shapes large enough that the backend splits C into panels (of rows when
 * M >= N, else of columns): forward and both gradients against double
 * references (no finite differences at this size). */
static void test_matmul_panels(int M, int K, int N) {
    char w[96];
    float *x = frand((size_t)M * K, 1.0f), *wt = frand((size_t)N * K, 0.5f), *g = frand((size_t)M * N, 1.0f);
    float *out = fpoison((size_t)M * N), *dx = fpoison((size_t)M * K);
    float *dw0 = frand((size_t)N * K, 1.0f), *dw = fdup(dw0, (size_t)N * K);
    be->matmul_fwd(be, out, x, wt, NULL, M, K, N);
    be->matmul_bwd(be, dx, 0, dw, NULL, g, x, wt, M, K, N);
    double *ro = dbuf((size_t)M * N), *rdx = dbuf((size_t)M * K), *rdw = dbuf((size_t)N * K);
    for (int m = 0; m < M; m++)
        for (int o = 0; o < N; o++) {
            double s = 0.0, gm = g[(size_t)m * N + o];
            for (int k = 0; k < K; k++) {
                s += (double)x[(size_t)m * K + k] * wt[(size_t)o * K + k];
                rdx[(size_t)m * K + k] += gm * wt[(size_t)o * K + k];
                rdw[(size_t)o * K + k] += gm * x[(size_t)m * K + k];
            }
            ro[(size_t)m * N + o] = s;
        }
    snprintf(w, sizeof w, "matmul_fwd (panels) M%d K%d N%d", M, K, N);
    check(w, out, from_double(ro, (size_t)M * N), (size_t)M * N, TOL_FWD);
    snprintf(w, sizeof w, "matmul_bwd dx (panels) M%d K%d N%d", M, K, N);
    check(w, dx, from_double(rdx, (size_t)M * K), (size_t)M * K, TOL_FWD);
    snprintf(w, sizeof w, "matmul_bwd dw (+=, panels) M%d K%d N%d", M, K, N);
    check(w, fdiff(dw, dw0, (size_t)N * K), from_double(rdw, (size_t)N * K), (size_t)N * K, TOL_FWD);
    free(ro), free(rdx), free(rdw);
    sync_ok("matmul panels");
    arena_free();
}

/* =========================== LoRA linear =========================== */
typedef struct {
    float *out, *xa, *x, *xl, *w, *b, *A, *B, *R;
    int M, K, N, r;
    float scale;
} lora_ctx;
static double lora_obj(void *p) {
    lora_ctx *c = p;
    be->lora_fwd(be, c->out, c->xa, c->x, c->xl, c->w, c->b, c->A, c->B, c->M, c->K, c->N, c->r, c->scale);
    return objective(c->out, c->R, (size_t)c->M * c->N);
}

static void test_lora(int M, int K, int N, int r, int with_bias) {
    char w[112];
    lora_ctx c = {.M = M, .K = K, .N = N, .r = r, .scale = 1.75f};
    c.x = frand((size_t)M * K, 1.0f);
    c.xl = frand((size_t)M * K, 1.0f); // "x after dropout": a different tensor
    c.w = frand((size_t)N * K, 0.5f);
    c.b = with_bias ? frand(N, 1.0f) : NULL;
    c.A = frand((size_t)r * K, 0.5f);
    c.B = frand((size_t)N * r, 0.5f);
    c.out = fpoison((size_t)M * N);
    c.xa = fpoison((size_t)M * r);
    c.R = frand((size_t)M * N, 1.0f);

    be->lora_fwd(be, c.out, c.xa, c.x, c.xl, c.w, c.b, c.A, c.B, M, K, N, r, c.scale);
    double *xa = dbuf((size_t)M * r), *ref = dbuf((size_t)M * N);
    for (int m = 0; m < M; m++)
        for (int i = 0; i < r; i++)
            for (int k = 0; k < K; k++) xa[(size_t)m * r + i] += (double)c.xl[(size_t)m * K + k] * c.A[(size_t)i * K + k];
    for (int m = 0; m < M; m++)
        for (int o = 0; o < N; o++) {
            double s = c.b ? c.b[o] : 0.0, l = 0.0;
            for (int k = 0; k < K; k++) s += (double)c.x[(size_t)m * K + k] * c.w[(size_t)o * K + k];
            for (int i = 0; i < r; i++) l += xa[(size_t)m * r + i] * c.B[(size_t)o * r + i];
            ref[(size_t)m * N + o] = s + (double)c.scale * l;
        }
    snprintf(w, sizeof w, "lora_fwd out M%d K%d N%d r%d", M, K, N, r);
    check(w, c.out, from_double(ref, (size_t)M * N), (size_t)M * N, TOL_FWD);
    snprintf(w, sizeof w, "lora_fwd xa M%d K%d N%d r%d", M, K, N, r);
    check(w, c.xa, from_double(xa, (size_t)M * r), (size_t)M * r, TOL_FWD);
    free(xa);
    free(ref);

    // (a) dropout: x and x_lora differ, dx_lora receives the adapter term
    float *dx = fpoison((size_t)M * K), *dxl = fpoison((size_t)M * K);
    float *dA0 = frand((size_t)r * K, 1.0f), *dA = fdup(dA0, (size_t)r * K);
    float *dB0 = frand((size_t)N * r, 1.0f), *dB = fdup(dB0, (size_t)N * r);
    be->lora_bwd(be, dx, 0, dxl, dA, dB, c.R, c.xl, c.w, c.A, c.B, c.xa, M, K, N, r, c.scale);
    snprintf(w, sizeof w, "lora_bwd dx (dropout) M%d K%d N%d r%d", M, K, N, r);
    check_fd(w, lora_obj, &c, c.x, (size_t)M * K, dx);
    snprintf(w, sizeof w, "lora_bwd dx_lora M%d K%d N%d r%d", M, K, N, r);
    check_fd(w, lora_obj, &c, c.xl, (size_t)M * K, dxl);
    snprintf(w, sizeof w, "lora_bwd dA (+=) M%d K%d N%d r%d", M, K, N, r);
    check_fd(w, lora_obj, &c, c.A, (size_t)r * K, fdiff(dA, dA0, (size_t)r * K));
    snprintf(w, sizeof w, "lora_bwd dB (+=) M%d K%d N%d r%d", M, K, N, r);
    check_fd(w, lora_obj, &c, c.B, (size_t)N * r, fdiff(dB, dB0, (size_t)N * r));

    // (b) no dropout: x_lora is x, dx_lora NULL, dx is the whole gradient
    c.xl = c.x;
    lora_obj(&c); // xa for this x
    float *dxt = fpoison((size_t)M * K);
    be->lora_bwd(be, dxt, 0, NULL, NULL, NULL, c.R, c.x, c.w, c.A, c.B, c.xa, M, K, N, r, c.scale);
    snprintf(w, sizeof w, "lora_bwd dx (x_lora = x) M%d K%d N%d r%d", M, K, N, r);
    check_fd(w, lora_obj, &c, c.x, (size_t)M * K, dxt);
    // acc_dx adds the same
    float *dx0 = frand((size_t)M * K, 1.0f), *dxa = fdup(dx0, (size_t)M * K);
    be->lora_bwd(be, dxa, 1, NULL, NULL, NULL, c.R, c.x, c.w, c.A, c.B, c.xa, M, K, N, r, c.scale);
    snprintf(w, sizeof w, "lora_bwd acc_dx M%d K%d N%d r%d", M, K, N, r);
    check(w, fdiff(dxa, dx0, (size_t)M * K), dxt, (size_t)M * K, TOL_ACC);
    sync_ok("lora");
    arena_free();
}

/* =========================== RMSNorm =========================== */
/* The rmsnorm tests run the plain ops, or (rmsnorm_off) the _off ops with
 * weight offset g_woff (Gemma: 1); the references use g_woff + w. */
static int g_offop;
static float g_woff;
static void t_rms_fwd(void *out, float *rstd, const void *x, const void *w, int R, int C, float eps) {
    if (g_offop) be->rmsnorm_off_fwd(be, out, rstd, x, w, g_woff, R, C, eps);
    else be->rmsnorm_fwd(be, out, rstd, x, w, R, C, eps);
}
static void t_rms_bwd(void *dx, int acc, float *dw, const void *dout, const void *x, const void *w, const float *rstd,
                      int R, int C) {
    if (g_offop) be->rmsnorm_off_bwd(be, dx, acc, dw, dout, x, w, g_woff, rstd, R, C);
    else be->rmsnorm_bwd(be, dx, acc, dw, dout, x, w, rstd, R, C);
}
static void t_arms_fwd(void *h, void *out, float *rstd, const void *x, const void *r, const void *w, int R, int C,
                       float eps) {
    if (g_offop) be->add_rmsnorm_off_fwd(be, h, out, rstd, x, r, w, g_woff, R, C, eps);
    else be->add_rmsnorm_fwd(be, h, out, rstd, x, r, w, R, C, eps);
}

typedef struct {
    float *out, *rstd, *x, *w, *R;
    int Rr, C;
    float eps;
} rms_ctx;
static double rms_obj(void *p) {
    rms_ctx *c = p;
    t_rms_fwd(c->out, c->rstd, c->x, c->w, c->Rr, c->C, c->eps);
    return objective(c->out, c->R, (size_t)c->Rr * c->C);
}

static void test_rmsnorm(int R, int C) {
    char w[96];
    rms_ctx c = {.Rr = R, .C = C, .eps = 1e-5f};
    c.x = frand((size_t)R * C, 1.5f);
    c.w = frand(C, 1.0f);
    c.out = fpoison((size_t)R * C);
    c.rstd = fpoison(R);
    c.R = frand((size_t)R * C, 1.0f);

    t_rms_fwd(c.out, c.rstd, c.x, c.w, R, C, c.eps);
    double *ref = dbuf((size_t)R * C), *rs = dbuf(R);
    for (int r = 0; r < R; r++) {
        double ss = 0.0;
        for (int j = 0; j < C; j++) ss += (double)c.x[(size_t)r * C + j] * c.x[(size_t)r * C + j];
        rs[r] = 1.0 / sqrt(ss / C + (double)c.eps);
        for (int j = 0; j < C; j++) ref[(size_t)r * C + j] = c.x[(size_t)r * C + j] * rs[r] * (g_woff + c.w[j]);
    }
    snprintf(w, sizeof w, "%srmsnorm_fwd out R%d C%d", g_offop ? "off " : "", R, C);
    check(w, c.out, from_double(ref, (size_t)R * C), (size_t)R * C, TOL_FWD);
    snprintf(w, sizeof w, "%srmsnorm_fwd rstd R%d C%d", g_offop ? "off " : "", R, C);
    check(w, c.rstd, from_double(rs, R), R, TOL_FWD);
    free(ref);
    free(rs);

    float *dx = fpoison((size_t)R * C);
    float *dw0 = frand(C, 1.0f), *dw = fdup(dw0, C);
    t_rms_bwd(dx, 0, dw, c.R, c.x, c.w, c.rstd, R, C);
    snprintf(w, sizeof w, "%srmsnorm_bwd dx R%d C%d", g_offop ? "off " : "", R, C);
    check_fd(w, rms_obj, &c, c.x, (size_t)R * C, dx);
    snprintf(w, sizeof w, "%srmsnorm_bwd dw (+=) R%d C%d", g_offop ? "off " : "", R, C);
    check_fd(w, rms_obj, &c, c.w, C, fdiff(dw, dw0, C));
    float *dx0 = frand((size_t)R * C, 1.0f), *dxa = fdup(dx0, (size_t)R * C);
    t_rms_bwd(dxa, 1, NULL, c.R, c.x, c.w, c.rstd, R, C);
    snprintf(w, sizeof w, "%srmsnorm_bwd acc_dx R%d C%d", g_offop ? "off " : "", R, C);
    check(w, fdiff(dxa, dx0, (size_t)R * C), dx, (size_t)R * C, TOL_ACC);
    sync_ok("rmsnorm");
    arena_free();
}

/* ===================== residual add + RMSNorm ===================== */
typedef struct {
    float *h, *out, *rstd, *x, *r, *w, *R1, *R2;
    int Rr, C;
    float eps;
} arms_ctx;
/* L = sum(out * R1) + sum(h * R2): h also feeds the rest of the network */
static double arms_obj(void *p) {
    arms_ctx *c = p;
    t_arms_fwd(c->h, c->out, c->rstd, c->x, c->r, c->w, c->Rr, c->C, c->eps);
    size_t n = (size_t)c->Rr * c->C;
    return objective(c->out, c->R1, n) + objective(c->h, c->R2, n);
}

static void test_add_rmsnorm(int R, int C) {
    char w[112];
    size_t n = (size_t)R * C;
    arms_ctx c = {.Rr = R, .C = C, .eps = 1e-5f};
    c.x = frand(n, 1.5f);
    c.r = frand(n, 1.0f);
    c.w = frand(C, 1.0f);
    c.h = fpoison(n), c.out = fpoison(n), c.rstd = fpoison(R);
    c.R1 = frand(n, 1.0f), c.R2 = frand(n, 1.0f);

    t_arms_fwd(c.h, c.out, c.rstd, c.x, c.r, c.w, R, C, c.eps);
    // (1) against a double reference: h = x + r, then the norm of h
    double *ref = dbuf(n), *rs = dbuf(R), *href = dbuf(n);
    for (int i = 0; i < R; i++) {
        double ss = 0.0;
        for (int j = 0; j < C; j++) {
            size_t k = (size_t)i * C + j;
            href[k] = (double)c.x[k] + (double)c.r[k];
            ss += href[k] * href[k];
        }
        rs[i] = 1.0 / sqrt(ss / C + (double)c.eps);
        for (int j = 0; j < C; j++) ref[(size_t)i * C + j] = href[(size_t)i * C + j] * rs[i] * (g_woff + c.w[j]);
    }
    snprintf(w, sizeof w, "%sadd_rmsnorm_fwd h R%d C%d", g_offop ? "off " : "", R, C);
    check(w, c.h, from_double(href, n), n, TOL_FWD);
    snprintf(w, sizeof w, "%sadd_rmsnorm_fwd out R%d C%d", g_offop ? "off " : "", R, C);
    check(w, c.out, from_double(ref, n), n, TOL_FWD);
    snprintf(w, sizeof w, "%sadd_rmsnorm_fwd rstd R%d C%d", g_offop ? "off " : "", R, C);
    check(w, c.rstd, from_double(rs, R), R, TOL_FWD);
    free(ref), free(rs), free(href);

    // (2) bitwise equal to the unfused pair add + rmsnorm_fwd
    float *h2 = fpoison(n), *o2 = fpoison(n), *rs2 = fpoison(R);
    be->add(be, h2, c.x, c.r, n);
    t_rms_fwd(o2, rs2, h2, c.w, R, C, c.eps);
    snprintf(w, sizeof w, "%sadd_rmsnorm_fwd h == add R%d C%d", g_offop ? "off " : "", R, C);
    check_bitwise(w, c.h, h2, n);
    snprintf(w, sizeof w, "%sadd_rmsnorm_fwd out == rmsnorm_fwd(add) R%d C%d", g_offop ? "off " : "", R, C);
    check_bitwise(w, c.out, o2, n);
    snprintf(w, sizeof w, "%sadd_rmsnorm_fwd rstd == rmsnorm_fwd(add) R%d C%d", g_offop ? "off " : "", R, C);
    check_bitwise(w, c.rstd, rs2, R);

    // (3) in place: h aliases x, then h aliases r
    for (int alias = 0; alias < 2; alias++) {
        float *hx = fdup(alias ? c.r : c.x, n), *o3 = fpoison(n), *rs3 = fpoison(R);
        t_arms_fwd(hx, o3, rs3, alias ? c.x : hx, alias ? hx : c.r, c.w, R, C, c.eps);
        snprintf(w, sizeof w, "%sadd_rmsnorm_fwd in place (h = %s) h R%d C%d", g_offop ? "off " : "", alias ? "r" : "x", R, C);
        check_bitwise(w, hx, h2, n);
        snprintf(w, sizeof w, "%sadd_rmsnorm_fwd in place (h = %s) out R%d C%d", g_offop ? "off " : "", alias ? "r" : "x", R, C);
        check_bitwise(w, o3, o2, n);
        snprintf(w, sizeof w, "%sadd_rmsnorm_fwd in place (h = %s) rstd R%d C%d", g_offop ? "off " : "", alias ? "r" : "x", R, C);
        check_bitwise(w, rs3, rs2, R);
    }

    // (4) the backward the header documents: g = dL/dh from the later uses
    // (here R2), rmsnorm_bwd(g, acc_dx = 1, ...) makes it dL/dx = dL/dr
    t_arms_fwd(c.h, c.out, c.rstd, c.x, c.r, c.w, R, C, c.eps);
    float *g = fdup(c.R2, n), *dw0 = frand(C, 1.0f), *dw = fdup(dw0, C);
    t_rms_bwd(g, 1, dw, c.R1, c.h, c.w, c.rstd, R, C);
    snprintf(w, sizeof w, "%sadd_rmsnorm bwd dx (rmsnorm_bwd acc_dx) R%d C%d", g_offop ? "off " : "", R, C);
    check_fd(w, arms_obj, &c, c.x, n, g);
    snprintf(w, sizeof w, "%sadd_rmsnorm bwd dr (= dx) R%d C%d", g_offop ? "off " : "", R, C);
    check_fd(w, arms_obj, &c, c.r, n, g);
    snprintf(w, sizeof w, "%sadd_rmsnorm bwd dw (+=) R%d C%d", g_offop ? "off " : "", R, C);
    check_fd(w, arms_obj, &c, c.w, C, fdiff(dw, dw0, C));
    sync_ok("add_rmsnorm");
    arena_free();
}

/* =========================== RoPE =========================== */
typedef struct {
    float *x, *work, *R, *inv_freq;
    int32_t *pos;
    int N, H, D, Rd;
    float sc;
} rope_ctx;
static double rope_obj(void *p) {
    rope_ctx *c = p;
    size_t n = (size_t)c->N * c->H * c->D;
    memcpy(c->work, c->x, n * sizeof(float));
    be->rope_fwd(be, c->work, c->pos, c->inv_freq, c->N, c->H, c->D, c->Rd, c->sc);
    return objective(c->work, c->R, n);
}

/* Rd: rotary dims (the first Rd of each head; the rest pass through), sc:
 * the cos/sin scale (LongRoPE's attention factor) */
static void test_rope(int N, int H, int D, int max_pos, int Rd, float sc) {
    char w[128];
    size_t n = (size_t)N * H * D;
    rope_ctx c = {.N = N, .H = H, .D = D, .Rd = Rd, .sc = sc};
    c.x = frand(n, 1.0f);
    c.R = frand(n, 1.0f);
    c.work = fbuf(n);
    c.pos = ibuf(N);
    c.inv_freq = fbuf(Rd / 2);
    lt_rng r;
    lt_rng_seed(&r, seed++);
    for (int i = 0; i < N; i++) c.pos[i] = (int32_t)(lt_rng_u64(&r) % (uint64_t)(max_pos + 1)); // arbitrary order
    for (int i = 0; i < Rd / 2; i++) c.inv_freq[i] = (float)pow(10000.0, -2.0 * i / Rd);

    float *y = fdup(c.x, n);
    be->rope_fwd(be, y, c.pos, c.inv_freq, N, H, D, Rd, sc);
    // reference: the angle is the fp32 product pos * inv_freq (as transformers
    // computes it), then everything in double; dims Rd.. unchanged
    double *ref = dbuf(n);
    for (size_t i = 0; i < n; i++) ref[i] = c.x[i];
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Rd / 2; i++) {
                double a = (double)((float)c.pos[t] * c.inv_freq[i]);
                size_t o = ((size_t)t * H + h) * D;
                double x1 = c.x[o + i], x2 = c.x[o + i + Rd / 2];
                ref[o + i] = sc * (x1 * cos(a) - x2 * sin(a));
                ref[o + i + Rd / 2] = sc * (x2 * cos(a) + x1 * sin(a));
            }
    snprintf(w, sizeof w, "rope_fwd N%d H%d D%d maxpos%d R%d scale%g", N, H, D, max_pos, Rd, sc);
    check(w, y, from_double(ref, n), n, TOL_FWD);
    free(ref);

    float *g = fdup(c.R, n); // dL/dy = R, mapped back in place
    be->rope_bwd(be, g, c.pos, c.inv_freq, N, H, D, Rd, sc);
    snprintf(w, sizeof w, "rope_bwd N%d H%d D%d maxpos%d R%d scale%g", N, H, D, max_pos, Rd, sc);
    check_fd(w, rope_obj, &c, c.x, n, g);
    be->rope_bwd(be, y, c.pos, c.inv_freq, N, H, D, Rd, sc); // the inverse rotation, times sc
    for (int t = 0; t < N; t++) // the rotated dims come back scaled by sc^2
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Rd; i++) y[((size_t)t * H + h) * D + i] /= sc * sc;
    snprintf(w, sizeof w, "rope_bwd(rope_fwd(x)) = sc^2 x N%d H%d D%d R%d", N, H, D, Rd);
    check(w, y, c.x, n, TOL_FWD);
    sync_ok("rope");
    arena_free();
}

/* =========================== attention =========================== */
/* Documents as lengths per sequence (each sequence's lengths sum to T). */
typedef struct {
    int B, T, Hq, Hkv, D;
    float scale;
    int ndocs[4], lens[4][16];
    float softcap; /* attention_cap: > 0 caps the scores */
    int window;    /* > 0: query t sees keys from max(doc start, t - window + 1) */
} attn_shape;
/* the attention tests run attention_fwd/bwd, or (attention_cap) the capped
 * ops with the shape's softcap */
static int g_attcap;

static void doc_starts(const attn_shape *s, int32_t *ds) {
    for (int b = 0; b < s->B; b++) {
        int t = 0;
        for (int d = 0; d < s->ndocs[b]; d++)
            for (int i = 0; i < s->lens[b][d]; i++, t++)
                ds[b * s->T + t] = s->window > 0 && i >= s->window ? t - s->window + 1 : t - i;
    }
}

/* Reference: every document on its own, as plain causal softmax attention in
 * double (it never looks at doc_start). */
static void attn_ref(const attn_shape *s, const float *q, const float *k, const float *v, double *out, double *lse) {
    int B = s->B, T = s->T, Hq = s->Hq, Hkv = s->Hkv, D = s->D;
    double *sc = dbuf(T);
    for (int b = 0; b < B; b++) {
        int start = 0;
        for (int d = 0; d < s->ndocs[b]; d++) {
            int L = s->lens[b][d];
            for (int h = 0; h < Hq; h++) {
                int kh = h / (Hq / Hkv);
                for (int t = 0; t < L; t++) {
                    const float *qt = q + (((size_t)b * T + start + t) * Hq + h) * D;
                    double mx = -INFINITY, sum = 0.0;
                    int j0 = s->window > 0 && t - s->window + 1 > 0 ? t - s->window + 1 : 0;
                    for (int j = j0; j <= t; j++) {
                        const float *kj = k + (((size_t)b * T + start + j) * Hkv + kh) * D;
                        double dp = 0.0;
                        for (int e = 0; e < D; e++) dp += (double)qt[e] * kj[e];
                        sc[j] = dp * s->scale;
                        if (s->softcap > 0) sc[j] = s->softcap * tanh(sc[j] / s->softcap);
                        if (sc[j] > mx) mx = sc[j];
                    }
                    for (int j = j0; j <= t; j++) sum += exp(sc[j] - mx);
                    double *ot = out + (((size_t)b * T + start + t) * Hq + h) * D;
                    for (int e = 0; e < D; e++) ot[e] = 0.0;
                    for (int j = j0; j <= t; j++) {
                        const float *vj = v + (((size_t)b * T + start + j) * Hkv + kh) * D;
                        double p = exp(sc[j] - mx) / sum;
                        for (int e = 0; e < D; e++) ot[e] += p * vj[e];
                    }
                    lse[((size_t)b * Hq + h) * T + start + t] = mx + log(sum);
                }
            }
            start += L;
        }
    }
    free(sc);
}

typedef struct {
    const attn_shape *s;
    float *out, *lse, *q, *k, *v, *R;
    int32_t *ds;
} attn_ctx;
static double attn_obj(void *p) {
    attn_ctx *c = p;
    const attn_shape *s = c->s;
    if (g_attcap)
        be->attention_cap_fwd(be, c->out, c->lse, c->q, c->k, c->v, c->ds, s->B, s->T, s->Hq, s->Hkv, s->D, s->scale,
                              s->softcap);
    else
        be->attention_fwd(be, c->out, c->lse, c->q, c->k, c->v, c->ds, s->B, s->T, s->Hq, s->Hkv, s->D, s->scale);
    return objective(c->out, c->R, (size_t)s->B * s->T * s->Hq * s->D);
}

static void test_attention(const attn_shape *s, const char *label) {
    char w[128];
    int B = s->B, T = s->T, Hq = s->Hq, Hkv = s->Hkv, D = s->D;
    size_t nq = (size_t)B * T * Hq * D, nk = (size_t)B * T * Hkv * D, nl = (size_t)B * Hq * T;
    attn_ctx c = {.s = s};
    c.q = frand(nq, 1.0f);
    c.k = frand(nk, 1.0f);
    c.v = frand(nk, 1.0f);
    c.R = frand(nq, 1.0f);
    c.out = fpoison(nq);
    c.lse = fpoison(nl);
    c.ds = ibuf((size_t)B * T);
    doc_starts(s, c.ds);

    attn_obj(&c);
    double *ro = dbuf(nq), *rl = dbuf(nl);
    attn_ref(s, c.q, c.k, c.v, ro, rl);
    snprintf(w, sizeof w, "attention_fwd out %s", label);
    check(w, c.out, from_double(ro, nq), nq, TOL_FWD);
    snprintf(w, sizeof w, "attention_fwd lse %s", label);
    check(w, c.lse, from_double(rl, nl), nl, TOL_FWD);
    free(ro);
    free(rl);

    float *dq = fpoison(nq), *dk = fpoison(nk), *dv = fpoison(nk);
    if (g_attcap)
        be->attention_cap_bwd(be, dq, dk, dv, c.R, c.q, c.k, c.v, c.out, c.lse, c.ds, B, T, Hq, Hkv, D, s->scale,
                              s->softcap);
    else
        be->attention_bwd(be, dq, dk, dv, c.R, c.q, c.k, c.v, c.out, c.lse, c.ds, B, T, Hq, Hkv, D, s->scale);
    snprintf(w, sizeof w, "attention_bwd dq %s", label);
    check_fd(w, attn_obj, &c, c.q, nq, dq);
    snprintf(w, sizeof w, "attention_bwd dk %s", label);
    check_fd(w, attn_obj, &c, c.k, nk, dk);
    snprintf(w, sizeof w, "attention_bwd dv %s", label);
    check_fd(w, attn_obj, &c, c.v, nk, dv);
    sync_ok("attention");
    arena_free();
}

/* Two documents packed into one sequence == each document alone (bitwise). */
static void test_attention_packing(int LA, int LB, int Hq, int Hkv, int D) {
    char w[128];
    int T = LA + LB;
    size_t rq = (size_t)Hq * D, rk = (size_t)Hkv * D; // per token
    float *q = frand(T * rq, 1.0f), *k = frand(T * rk, 1.0f), *v = frand(T * rk, 1.0f), *g = frand(T * rq, 1.0f);
    int32_t *ds = ibuf(T);
    for (int t = 0; t < T; t++) ds[t] = t < LA ? 0 : LA;
    float *out = fpoison(T * rq), *lse = fpoison((size_t)Hq * T);
    float *dq = fpoison(T * rq), *dk = fpoison(T * rk), *dv = fpoison(T * rk);
    float scale = 1.0f / sqrtf((float)D);
    be->attention_fwd(be, out, lse, q, k, v, ds, 1, T, Hq, Hkv, D, scale);
    be->attention_bwd(be, dq, dk, dv, g, q, k, v, out, lse, ds, 1, T, Hq, Hkv, D, scale);

    for (int part = 0; part < 2; part++) {
        int t0 = part ? LA : 0, L = part ? LB : LA;
        int32_t *ds1 = ibuf(L);
        for (int t = 0; t < L; t++) ds1[t] = 0;
        float *o1 = fpoison(L * rq), *l1 = fpoison((size_t)Hq * L);
        float *dq1 = fpoison(L * rq), *dk1 = fpoison(L * rk), *dv1 = fpoison(L * rk);
        be->attention_fwd(be, o1, l1, q + t0 * rq, k + t0 * rk, v + t0 * rk, ds1, 1, L, Hq, Hkv, D, scale);
        be->attention_bwd(be, dq1, dk1, dv1, g + t0 * rq, q + t0 * rq, k + t0 * rk, v + t0 * rk, o1, l1, ds1, 1, L,
                          Hq, Hkv, D, scale);
        float *lp = fbuf((size_t)Hq * L); // the packed lse of this document, (Hq, L)
        for (int h = 0; h < Hq; h++)
            for (int t = 0; t < L; t++) lp[(size_t)h * L + t] = lse[(size_t)h * T + t0 + t];
        snprintf(w, sizeof w, "attention packed = alone: out doc%d (%d+%d, Hq%d Hkv%d)", part, LA, LB, Hq, Hkv);
        check_bitwise(w, out + t0 * rq, o1, L * rq);
        snprintf(w, sizeof w, "attention packed = alone: lse doc%d", part);
        check_bitwise(w, lp, l1, (size_t)Hq * L);
        snprintf(w, sizeof w, "attention packed = alone: dq doc%d", part);
        check_bitwise(w, dq + t0 * rq, dq1, L * rq);
        snprintf(w, sizeof w, "attention packed = alone: dk doc%d", part);
        check_bitwise(w, dk + t0 * rk, dk1, L * rk);
        snprintf(w, sizeof w, "attention packed = alone: dv doc%d", part);
        check_bitwise(w, dv + t0 * rk, dv1, L * rk);
    }
    sync_ok("attention packing");
    arena_free();
}

/* =========================== SwiGLU and add =========================== */
typedef struct {
    float *out, *gate, *up, *R;
    size_t n;
} swi_ctx;
static double swi_obj(void *p) {
    swi_ctx *c = p;
    be->swiglu_fwd(be, c->out, c->gate, c->up, c->n);
    return objective(c->out, c->R, c->n);
}

static void test_swiglu(size_t n) {
    char w[96];
    swi_ctx c = {.n = n};
    c.gate = frand(n, 2.5f);
    c.up = frand(n, 1.0f);
    c.R = frand(n, 1.0f);
    c.out = fpoison(n);
    c.gate[0] = -30.0f; // saturated sigmoid, both ends
    if (n > 1) c.gate[1] = 30.0f;
    be->swiglu_fwd(be, c.out, c.gate, c.up, n);
    double *ref = dbuf(n);
    for (size_t i = 0; i < n; i++) {
        double g = c.gate[i];
        ref[i] = g / (1.0 + exp(-g)) * c.up[i];
    }
    snprintf(w, sizeof w, "swiglu_fwd n%zu", n);
    check(w, c.out, from_double(ref, n), n, TOL_FWD);
    free(ref);

    float *dg = fpoison(n), *du = fpoison(n);
    be->swiglu_bwd(be, dg, du, c.R, c.gate, c.up, n);
    snprintf(w, sizeof w, "swiglu_bwd dgate n%zu", n);
    check_fd(w, swi_obj, &c, c.gate, n, dg);
    snprintf(w, sizeof w, "swiglu_bwd dup n%zu", n);
    check_fd(w, swi_obj, &c, c.up, n, du);
    // in place: dgate over gate, dup over up
    float *g2 = fdup(c.gate, n), *u2 = fdup(c.up, n);
    be->swiglu_bwd(be, g2, u2, c.R, g2, u2, n);
    check_bitwise("swiglu_bwd in place dgate", g2, dg, n);
    check_bitwise("swiglu_bwd in place dup", u2, du, n);
    sync_ok("swiglu");
    arena_free();
}

static void test_add(size_t n) {
    float *a = frand(n, 1.0f), *b = frand(n, 3.0f), *out = fpoison(n);
    be->add(be, out, a, b, n);
    float *ref = fbuf(n);
    for (size_t i = 0; i < n; i++) ref[i] = (float)((double)a[i] + (double)b[i]); // exactly rounded
    check_bitwise("add", out, ref, n);
    float *a2 = fdup(a, n), *b2 = fdup(b, n);
    be->add(be, a2, a2, b, n);
    check_bitwise("add in place (out = a)", a2, ref, n);
    be->add(be, b2, a, b2, n);
    check_bitwise("add in place (out = b)", b2, ref, n);
    sync_ok("add");
    arena_free();
}

/* =========================== GeGLU and scale =========================== */
static double geglu_obj(void *p) {
    swi_ctx *c = p;
    be->geglu_fwd(be, c->out, c->gate, c->up, c->n);
    return objective(c->out, c->R, c->n);
}

static void test_geglu(size_t n) {
    char w[96];
    swi_ctx c = {.n = n};
    c.gate = frand(n, 2.5f);
    c.up = frand(n, 1.0f);
    c.R = frand(n, 1.0f);
    c.out = fpoison(n);
    c.gate[0] = -30.0f; // saturated tanh, both ends
    if (n > 1) c.gate[1] = 30.0f;
    be->geglu_fwd(be, c.out, c.gate, c.up, n);
    double *ref = dbuf(n);
    for (size_t i = 0; i < n; i++) {
        double g = c.gate[i];
        ref[i] = 0.5 * g * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (g + 0.044715 * g * g * g))) * c.up[i];
    }
    snprintf(w, sizeof w, "geglu_fwd n%zu", n);
    check(w, c.out, from_double(ref, n), n, TOL_FWD);
    free(ref);
    float *dg = fpoison(n), *du = fpoison(n);
    be->geglu_bwd(be, dg, du, c.R, c.gate, c.up, n);
    snprintf(w, sizeof w, "geglu_bwd dgate n%zu", n);
    check_fd(w, geglu_obj, &c, c.gate, n, dg);
    snprintf(w, sizeof w, "geglu_bwd dup n%zu", n);
    check_fd(w, geglu_obj, &c, c.up, n, du);
    float *g2 = fdup(c.gate, n), *u2 = fdup(c.up, n);
    be->geglu_bwd(be, g2, u2, c.R, g2, u2, n);
    check_bitwise("geglu_bwd in place dgate", g2, dg, n);
    check_bitwise("geglu_bwd in place dup", u2, du, n);
    sync_ok("geglu");
    arena_free();
}

static void test_scale(size_t n) {
    float *x = frand(n, 3.0f), *y = fdup(x, n), *ref = fbuf(n);
    float s = sqrtf(2304.0f);
    for (size_t i = 0; i < n; i++) ref[i] = (float)((double)x[i] * s); // exactly rounded
    be->scale(be, y, n, s);
    check_bitwise("scale (in place)", y, ref, n);
    sync_ok("scale");
    arena_free();
}

/* =========================== copy =========================== */
/* bytes from src + soff to dst + doff, against memcpy on the host: dst's
 * bytes outside the range stay, the range is overwritten from a poison that
 * differs from every byte it must receive; 0 bytes change nothing */
static void test_copy(size_t bytes, size_t doff, size_t soff) {
    size_t nd = doff + bytes + 16, ns = soff + bytes;
    unsigned char *src = bbuf(ns), *dst = bbuf(nd), *want = malloc(nd);
    lt_rng r;
    lt_rng_seed(&r, seed++);
    for (size_t i = 0; i < ns; i++) src[i] = (unsigned char)lt_rng_u64(&r);
    for (size_t i = 0; i < nd; i++) dst[i] = (unsigned char)lt_rng_u64(&r);
    for (size_t i = 0; i < bytes; i++) dst[doff + i] = (unsigned char)~src[soff + i];
    memcpy(want, dst, nd);
    memcpy(want + doff, src + soff, bytes);
    be->copy(be, dst + doff, src + soff, bytes);
    char what[96];
    snprintf(what, sizeof what, "copy bytes=%zu dst_off=%zu src_off=%zu", bytes, doff, soff);
    LT_CHECK(memcmp(dst, want, nd) == 0, "%s: not the bytes of memcpy", what);
    be->copy(be, dst, src, 0);
    LT_CHECK(memcmp(dst, want, nd) == 0, "%s: a copy of 0 bytes changed dst", what);
    if (getenv("LT_TEST_VERBOSE")) printf("  ok %-48s bytes equal\n", what);
    LT_CHECK(be->native_stream(be) == NULL, "the CPU backend has no native stream");
    sync_ok("copy");
    free(want);
    arena_free();
}

/* =========================== cross-entropy =========================== */
typedef struct {
    float *loss, *logits;
    int32_t *tg;
    int N, V;
    float gs, cap; /* cap > 0: cross_entropy_cap */
} ce_ctx;
static void t_ce(const ce_ctx *c, float *loss, float *dl, const float *logits, float gs) {
    if (c->cap > 0) be->cross_entropy_cap(be, loss, dl, logits, c->tg, c->N, c->V, gs, c->cap);
    else be->cross_entropy(be, loss, dl, logits, c->tg, c->N, c->V, gs);
}
static double ce_obj(void *p) { // grad_scale * sum of the losses
    ce_ctx *c = p;
    t_ce(c, c->loss, NULL, c->logits, 1.0f);
    double s = 0.0;
    for (int n = 0; n < c->N; n++) s += c->loss[n];
    return c->gs * s;
}

static void test_cross_entropy(int N, int V, float shift, float cap) {
    char w[96];
    ce_ctx c = {.N = N, .V = V, .gs = 0.37f, .cap = cap};
    c.logits = frand((size_t)N * V, 2.0f);
    for (size_t i = 0; i < (size_t)N * V; i++) c.logits[i] += shift; // softmax must not care
    c.tg = ibuf(N);
    lt_rng r;
    lt_rng_seed(&r, seed++);
    for (int n = 0; n < N; n++) c.tg[n] = (n % 3 == 1) ? -1 : (int32_t)(lt_rng_u64(&r) % (uint64_t)V);
    c.loss = fpoison(N);
    float *dl = fpoison((size_t)N * V);
    t_ce(&c, c.loss, dl, c.logits, c.gs);
    float *loss1 = fdup(c.loss, N); // (the finite differences below rewrite c.loss)

    double *ref = dbuf(N);
    for (int n = 0; n < N; n++) {
        if (c.tg[n] < 0) continue; // 0
        const float *l = c.logits + (size_t)n * V;
        double mx = -INFINITY, s = 0.0, *z = dbuf(V);
        for (int i = 0; i < V; i++) z[i] = cap > 0 ? cap * tanh(l[i] / (double)cap) : l[i];
        for (int i = 0; i < V; i++) mx = z[i] > mx ? z[i] : mx;
        for (int i = 0; i < V; i++) s += exp(z[i] - mx);
        ref[n] = -(z[c.tg[n]] - mx - log(s)); // -log_softmax
        free(z);
    }
    snprintf(w, sizeof w, "cross_entropy loss N%d V%d shift%g cap%g", N, V, shift, cap);
    check(w, c.loss, from_double(ref, N), N, TOL_FWD);
    free(ref);
    int zero_rows_ok = 1;
    for (int n = 0; n < N; n++)
        if (c.tg[n] < 0)
            for (int i = 0; i < V; i++) zero_rows_ok &= dl[(size_t)n * V + i] == 0.0f && c.loss[n] == 0.0f;
    LT_CHECK(zero_rows_ok, "cross_entropy: rows without a target must have loss 0 and zero gradient");

    /* dlogits against the exact gradient in double: gs * (softmax(z) - onehot) * dz/dl, with
     * dz/dl = 1 - tanh^2(l / cap) when capped */
    double *gref = dbuf((size_t)N * V);
    for (int n = 0; n < N; n++) {
        if (c.tg[n] < 0) continue;
        const float *l = c.logits + (size_t)n * V;
        double mx = -INFINITY, s = 0.0, *z = dbuf(V);
        for (int i = 0; i < V; i++) z[i] = cap > 0 ? cap * tanh(l[i] / (double)cap) : l[i];
        for (int i = 0; i < V; i++) mx = z[i] > mx ? z[i] : mx;
        for (int i = 0; i < V; i++) s += exp(z[i] - mx);
        for (int i = 0; i < V; i++) {
            double th = cap > 0 ? tanh(l[i] / (double)cap) : 0.0;
            gref[(size_t)n * V + i] = c.gs * (exp(z[i] - mx) / s - (i == c.tg[n])) * (1.0 - th * th);
        }
        free(z);
    }
    snprintf(w, sizeof w, "cross_entropy dlogits exact N%d V%d shift%g cap%g", N, V, shift, cap);
    check(w, dl, from_double(gref, (size_t)N * V), (size_t)N * V, TOL_GRAD_EXACT);
    free(gref);
    /* and against finite differences of the fp32 forward where those resolve the gradient: a
     * cap that saturates the shifted logits leaves derivatives below the fp32 noise of the
     * differences (their check is the exact one above) */
    snprintf(w, sizeof w, "cross_entropy dlogits N%d V%d shift%g cap%g", N, V, shift, cap);
    if (cap == 0 || fabsf(shift) < cap) check_fd(w, ce_obj, &c, c.logits, (size_t)N * V, dl);

    // dlogits aliasing logits gives the same, bitwise
    float *alias = fdup(c.logits, (size_t)N * V), *loss2 = fpoison(N);
    t_ce(&c, loss2, alias, alias, c.gs);
    snprintf(w, sizeof w, "cross_entropy dlogits = logits (alias) N%d V%d", N, V);
    check_bitwise(w, alias, dl, (size_t)N * V);
    check_bitwise("cross_entropy loss with aliasing", loss2, loss1, N);
    sync_ok("cross_entropy");
    arena_free();
}

/* =========================== exp =========================== */
/* lt_cpu_expf (the exp of the softmaxes and SiLU) against double exp: within
 * 1.5 ulp of the exact value wherever the result is a normal float, within
 * one subnormal step below that, and exact at the special values. */
static void test_expf(void) {
    double worst = 0.0, worst_x = 0.0;
    int sub_ok = 1;
    for (int i = 0; i <= 4000000; i++) {
        float x = -110.0f + 200.0f * (float)i / 4000000.0f; // -110 .. 90
        double want = exp((double)x);
        float got = lt_cpu_expf(x);
        if (want >= 0x1p-126 && want <= 0x1.fffffep127) {
            float wf = (float)want;
            double ulp = ldexp(1.0, ilogb(wf) - 23);
            double e = fabs((double)got - want) / ulp;
            if (!(e <= worst)) worst = e, worst_x = x;
        } else if (want < 0x1p-126) {
            sub_ok &= fabs((double)got - want) <= 0x1p-149;
        } else {
            sub_ok &= isinf(got) && got > 0;
        }
    }
    LT_CHECK(worst <= 1.5, "lt_cpu_expf: %.3g ulp at x = %.9g (want <= 1.5)", worst, worst_x);
    LT_CHECK(sub_ok, "lt_cpu_expf: subnormal / overflow range");
    LT_CHECK(lt_cpu_expf(0.0f) == 1.0f && lt_cpu_expf(-0.0f) == 1.0f, "lt_cpu_expf(0) = 1");
    LT_CHECK(lt_cpu_expf(-INFINITY) == 0.0f && isinf(lt_cpu_expf(INFINITY)), "lt_cpu_expf(-inf) = 0, (inf) = inf");
    LT_CHECK(isnan(lt_cpu_expf(NAN)), "lt_cpu_expf(NaN) = NaN");
    if (getenv("LT_TEST_VERBOSE")) printf("  ok %-48s max %.3g ulp\n", "lt_cpu_expf vs exp", worst);
}

/* =========================== sum of squares =========================== */
static void test_sumsq(size_t n) {
    float *x = frand(n, 0.01f);
    double got = be->sumsq(be, x, n);
    double want = 0.0; // different order: from the end
    for (size_t i = n; i-- > 0;) want += (double)x[i] * x[i];
    double rel = fabs(got - want) / (want > 0 ? want : 1.0);
    LT_CHECK(rel <= 1e-12, "sumsq n=%zu: %.17g vs %.17g (rel %.3g, tol 1e-12)", n, got, want, rel);
    if (getenv("LT_TEST_VERBOSE")) printf("  ok %-48s rel err %.3g\n", "sumsq", rel);
    arena_free();
}

/* sumsq_units: per unit, bitwise the per-unit sumsq (its definition), and
 * within 1e-12 of a float64 sum in another order; units not dividing n; the
 * output poisoned with NaN, a guard after the last unit; unit = 0 refused
 * (on a backend of its own: the failure is sticky) */
static void test_sumsq_units(size_t n, size_t unit) {
    size_t nu = (n + unit - 1) / unit;
    const double guard = -12345.0;
    float *x = frand(n, 0.01f);
    double *got = dbuf(nu + 1);
    for (size_t k = 0; k < nu; k++) got[k] = NAN;
    got[nu] = guard;
    be->sumsq_units(be, x, n, unit, got);
    char what[96];
    snprintf(what, sizeof what, "sumsq_units n=%zu unit=%zu", n, unit);
    double worst = 0.0;
    for (size_t k = 0; k < nu; k++) {
        size_t e0 = k * unit, len = n - e0 < unit ? n - e0 : unit;
        double one = be->sumsq(be, x + e0, len), want = 0.0;
        for (size_t i = e0 + len; i-- > e0;) want += (double)x[i] * x[i];
        double rel = fabs(got[k] - want) / (want > 0 ? want : 1.0);
        if (rel > worst) worst = rel;
        LT_CHECK(memcmp(&got[k], &one, sizeof one) == 0, "%s: unit %zu: %.17g, per-unit sumsq %.17g", what, k, got[k],
                 one);
        LT_CHECK(rel <= 1e-12, "%s: unit %zu: %.17g vs %.17g (rel %.3g, tol 1e-12)", what, k, got[k], want, rel);
    }
    LT_CHECK(got[nu] == guard, "%s: wrote past its %zu units", what, nu);
    sync_ok(what);
    if (getenv("LT_TEST_VERBOSE")) printf("  ok %-48s rel err %.3g, bitwise per unit\n", what, worst);
    free(got);
    arena_free();
    if (n != 1) return;
    lt_backend *b0;
    lt_err e;
    LT_CHECK_OK(lt_cpu_backend_create(1, &b0, &e), &e);
    double untouched = guard;
    b0->sumsq_units(b0, NULL, 0, 0, &untouched);
    lt_status st = b0->sync(b0, &e);
    LT_CHECK(st == LT_ERR_INVALID && strstr(e.msg, "sumsq_units") && untouched == guard,
             "sumsq_units with unit 0: %s '%s' (expected invalid, naming the op, nothing written)", lt_status_name(st),
             st ? e.msg : "");
    b0->destroy(b0);
}

/* =========================== AdamW =========================== */
/* Reference in double, the textbook form (torch.optim.AdamW's documentation):
 * p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps). */
static void test_adamw(void) {
    enum { NT = 3, STEPS = 4 };
    size_t sizes[NT] = {37, 1, 130};
    float wds[NT] = {0.1f, 0.0f, 0.01f};
    float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, gscale = 0.625f;
    lt_adamw_tensor ts[NT];
    double *rp[NT], *rm[NT], *rv[NT];
    // one tensor keeps bf16 params with f32 master weights (CUDA's full fine-tune layout)
    uint16_t *bf = NULL;
    for (int t = 0; t < NT; t++) {
        size_t n = sizes[t];
        ts[t] = (lt_adamw_tensor){.param = frand(n, 1.0f), .param_dtype = LT_F32, .grad = fbuf(n),
                                  .m = fbuf(n), .v = fbuf(n), .n = n, .weight_decay = wds[t]};
        memset(ts[t].m, 0, n * sizeof(float));
        memset(ts[t].v, 0, n * sizeof(float));
        rp[t] = dbuf(n), rm[t] = dbuf(n), rv[t] = dbuf(n);
        for (size_t i = 0; i < n; i++) rp[t][i] = ((float *)ts[t].param)[i];
    }
    bf = bbuf(sizes[2] * 2);
    ts[2].master = (float *)ts[2].param;
    ts[2].param = bf;
    ts[2].param_dtype = LT_BF16;
    for (size_t i = 0; i < sizes[2]; i++) bf[i] = 0x7fc0; // NaN: must be overwritten

    for (int step = 1; step <= STEPS; step++) {
        for (int t = 0; t < NT; t++) lt_fill_normal((float *)ts[t].grad, sizes[t], 0.5f * step, seed++);
        be->adamw(be, ts, NT, lr, b1, b2, eps, step, gscale);
        double bc1 = 1.0 - pow(b1, step), bc2 = 1.0 - pow(b2, step);
        for (int t = 0; t < NT; t++)
            for (size_t i = 0; i < sizes[t]; i++) {
                double g = (double)ts[t].grad[i] * gscale;
                rp[t][i] -= (double)lr * wds[t] * rp[t][i];
                rm[t][i] = b1 * rm[t][i] + (1.0 - b1) * g;
                rv[t][i] = b2 * rv[t][i] + (1.0 - b2) * g * g;
                rp[t][i] -= lr * (rm[t][i] / bc1) / (sqrt(rv[t][i] / bc2) + eps);
            }
    }
    char w[96];
    for (int t = 0; t < NT; t++) {
        const float *p = ts[t].master ? ts[t].master : (const float *)ts[t].param;
        snprintf(w, sizeof w, "adamw param (tensor %d, %d steps)", t, STEPS);
        check(w, p, from_double(rp[t], sizes[t]), sizes[t], TOL_FWD);
        snprintf(w, sizeof w, "adamw exp_avg (tensor %d)", t);
        check(w, ts[t].m, from_double(rm[t], sizes[t]), sizes[t], TOL_FWD);
        snprintf(w, sizeof w, "adamw exp_avg_sq (tensor %d)", t);
        check(w, ts[t].v, from_double(rv[t], sizes[t]), sizes[t], TOL_FWD);
        free(rp[t]), free(rm[t]), free(rv[t]);
    }
    int bf_ok = 1;
    for (size_t i = 0; i < sizes[2]; i++) bf_ok &= bf[i] == lt_f32_to_bf16(ts[2].master[i]);
    LT_CHECK(bf_ok, "adamw: bf16 param must be the rounded f32 master weights");
    sync_ok("adamw");
    arena_free();
}

/* AdamW against PyTorch: tests/fixtures/cpu_ops/adamw_torch.bin (see
 * tools/gen_cpu_ops_fixtures.py for the layout). */
static void test_adamw_torch(void) {
    const char *path = lt_src_path("tests/fixtures/cpu_ops/adamw_torch.bin");
    char *data;
    size_t len;
    lt_err e;
    if (lt_read_file(path, &data, &len, &e) != LT_OK) {
        LT_CHECK(0, "%s", e.msg);
        return;
    }
    const char *cur = data, *end = data + len;
#define TAKE(dst, bytes)                                                         \
    do {                                                                         \
        if ((size_t)(end - cur) < (size_t)(bytes)) goto truncated;               \
        memcpy((dst), cur, (bytes));                                             \
        cur += (bytes);                                                          \
    } while (0)
    char magic[8];
    int32_t hdr[3]; // count, steps, reserved
    float hp[5];    // lr, beta1, beta2, eps, grad_scale
    TAKE(magic, 8);
    LT_CHECK(memcmp(magic, "LTADAMW1", 8) == 0, "%s: bad magic", path);
    TAKE(hdr, sizeof hdr);
    TAKE(hp, sizeof hp);
    int count = hdr[0], steps = hdr[1];
    if (count <= 0 || count > 8 || steps <= 0 || steps > 100) goto truncated;
    lt_adamw_tensor ts[8];
    float *want_p[8], *want_m[8], *want_v[8];
    for (int t = 0; t < count; t++) {
        int32_t n;
        float wd;
        TAKE(&n, 4);
        TAKE(&wd, 4);
        if (n <= 0 || n > 1 << 20) goto truncated;
        ts[t] = (lt_adamw_tensor){.param = fbuf(n), .param_dtype = LT_F32, .grad = fbuf(n), .m = fbuf(n),
                                  .v = fbuf(n), .n = (size_t)n, .weight_decay = wd};
        TAKE(ts[t].param, (size_t)n * 4);
        memset(ts[t].m, 0, (size_t)n * 4);
        memset(ts[t].v, 0, (size_t)n * 4);
        want_p[t] = fbuf(n), want_m[t] = fbuf(n), want_v[t] = fbuf(n);
    }
    size_t n_same = 0, n_total = 0;
    double max_ulp = 0;
    double worst = 0.0;
    for (int step = 1; step <= steps; step++) {
        for (int t = 0; t < count; t++) TAKE((float *)ts[t].grad, ts[t].n * 4);
        for (int t = 0; t < count; t++) {
            TAKE(want_p[t], ts[t].n * 4);
            TAKE(want_m[t], ts[t].n * 4);
            TAKE(want_v[t], ts[t].n * 4);
        }
        be->adamw(be, ts, count, hp[0], hp[1], hp[2], hp[3], step, hp[4]);
        for (int t = 0; t < count; t++) {
            const float *p = ts[t].param;
            for (size_t i = 0; i < ts[t].n; i++) {
                // difference in units of the last place of max(|p|, lr) (the
                // size of the terms added: near 0 the sum cancels)
                double unit = ldexp(1.0, ilogb(fmax(fabs(want_p[t][i]), hp[0])) - 23);
                double ulp = fabs((double)p[i] - want_p[t][i]) / unit;
                if (ulp > max_ulp) max_ulp = ulp;
                n_total++;
                n_same += p[i] == want_p[t][i];
            }
            lt_cmp c = lt_compare(p, want_p[t], ts[t].n);
            if (c.norm_err > worst) worst = c.norm_err;
            char w[96];
            snprintf(w, sizeof w, "adamw vs torch: param (tensor %d, step %d)", t, step);
            check(w, p, want_p[t], ts[t].n, TOL_ACC);
            snprintf(w, sizeof w, "adamw vs torch: exp_avg (tensor %d, step %d)", t, step);
            check_bitwise(w, ts[t].m, want_m[t], ts[t].n);
            snprintf(w, sizeof w, "adamw vs torch: exp_avg_sq (tensor %d, step %d)", t, step);
            check_bitwise(w, ts[t].v, want_v[t], ts[t].n);
        }
    }
    // the operations are torch's, in torch's order; the parameter may still
    // differ in the last bit now and then (how torch's kernel rounds m/denom)
    LT_CHECK(n_same >= n_total * 99 / 100 && max_ulp <= 4,
             "adamw vs torch: %zu of %zu params bitwise equal (want >= 99%%), max %.3g ulp (want <= 4)", n_same,
             n_total, max_ulp);
    printf("  adamw vs torch: %zu of %zu params bitwise equal, max %.3g ulp, worst norm err %.3g\n", n_same, n_total,
           max_ulp, worst);
    free(data);
    arena_free();
    return;
truncated:
    LT_CHECK(0, "%s: truncated or malformed", path);
    free(data);
    arena_free();
#undef TAKE
}

/* =========================== threads =========================== */
/* The reductions split work so that 1 and 2 threads give the same bits. */
static void test_thread_determinism(void) {
    lt_backend *b1, *b2, *keep = be;
    lt_err e;
    if (lt_cpu_backend_create(1, &b1, &e) != LT_OK || lt_cpu_backend_create(2, &b2, &e) != LT_OK) {
        LT_CHECK(0, "create: %s", e.msg);
        return;
    }
    attn_shape s = {.B = 2, .T = 23, .Hq = 4, .Hkv = 2, .D = 8, .scale = 0.35f, .ndocs = {3, 2}};
    s.lens[0][0] = 7, s.lens[0][1] = 1, s.lens[0][2] = 15, s.lens[1][0] = 20, s.lens[1][1] = 3;
    size_t nq = (size_t)s.B * s.T * s.Hq * s.D, nk = (size_t)s.B * s.T * s.Hkv * s.D;
    int V = 13, N = s.B * s.T, C = 200;
    float *res[2][7];
    double ss[2];
    for (int which = 0; which < 2; which++) {
        lt_backend *bx = which ? b2 : b1;
        seed = 4242; // same inputs for both
        float *q = frand(nq, 1.0f), *k = frand(nk, 1.0f), *v = frand(nk, 1.0f), *g = frand(nq, 1.0f);
        int32_t *ds = ibuf(N), *ids = ibuf(N);
        doc_starts(&s, ds);
        for (int n = 0; n < N; n++) ids[n] = (n * 7) % V;
        float *out = fbuf(nq), *lse = fbuf((size_t)s.B * s.Hq * s.T);
        float *dq = fbuf(nq), *dk = fbuf(nk), *dv = fbuf(nk);
        bx->attention_fwd(bx, out, lse, q, k, v, ds, s.B, s.T, s.Hq, s.Hkv, s.D, s.scale);
        bx->attention_bwd(bx, dq, dk, dv, g, q, k, v, out, lse, ds, s.B, s.T, s.Hq, s.Hkv, s.D, s.scale);
        float *x = frand((size_t)N * C, 1.0f), *gx = frand((size_t)N * C, 1.0f), *wn = frand(C, 1.0f);
        float *rstd = fbuf(N), *y = fbuf((size_t)N * C), *dx = fbuf((size_t)N * C), *dw = frand(C, 1.0f);
        bx->rmsnorm_fwd(bx, y, rstd, x, wn, N, C, 1e-6f);
        bx->rmsnorm_bwd(bx, dx, 0, dw, gx, x, wn, rstd, N, C);
        float *dt = frand((size_t)V * C, 1.0f);
        bx->embedding_bwd(bx, dt, gx, ids, N, C);
        float *db = frand(C, 1.0f), *wm = frand((size_t)C * 3, 1.0f);
        bx->matmul_bwd(bx, NULL, 0, NULL, db, gx, x, wm, N, 3, C);
        float *big = frand(300000, 1.0f);
        ss[which] = bx->sumsq(bx, big, 300000);
        float *r[7] = {out, lse, dq, dk, dv, dw, dt};
        for (int i = 0; i < 7; i++) res[which][i] = r[i];
        (void)db;
    }
    const char *names[7] = {"attention out", "attention lse", "attention dq", "attention dk",
                            "attention dv",  "rmsnorm dw",    "embedding dtable"};
    size_t lens[7] = {nq, (size_t)s.B * s.Hq * s.T, nq, nk, nk, (size_t)C, (size_t)V * C};
    char w[96];
    for (int i = 0; i < 7; i++) {
        snprintf(w, sizeof w, "1 vs 2 threads: %s", names[i]);
        check_bitwise(w, res[1][i], res[0][i], lens[i]);
    }
    LT_CHECK(ss[0] == ss[1], "1 vs 2 threads: sumsq %.17g vs %.17g", ss[0], ss[1]);
    arena_free(); // (buffers came from `be`'s allocator; all CPU backends share malloc)
    b1->destroy(b1);
    b2->destroy(b2);
    be = keep;
}

/* 1 vs 2 threads at sizes where the work is split into many pieces: attention
 * with several query blocks per document, matmuls cut into panels (by rows
 * and by columns), cross-entropy and SwiGLU over many rows. */
static void test_thread_determinism_large(void) {
    lt_backend *bs[2], *keep = be;
    lt_err e;
    if (lt_cpu_backend_create(1, &bs[0], &e) != LT_OK || lt_cpu_backend_create(2, &bs[1], &e) != LT_OK) {
        LT_CHECK(0, "create: %s", e.msg);
        return;
    }
    attn_shape s = {.B = 2, .T = 200, .Hq = 4, .Hkv = 2, .D = 16, .scale = 0.25f, .ndocs = {3, 1}};
    s.lens[0][0] = 70, s.lens[0][1] = 1, s.lens[0][2] = 129, s.lens[1][0] = 200;
    size_t nq = (size_t)s.B * s.T * s.Hq * s.D, nk = (size_t)s.B * s.T * s.Hkv * s.D, nl = (size_t)s.B * s.Hq * s.T;
    int M = 1030, K = 128, N = 96, M2 = 64, N2 = 1000, V = 300;
    size_t n_sw = 70001;
    enum { NR = 12 };
    float *res[2][NR];
    for (int which = 0; which < 2; which++) {
        be = bs[which]; // (all CPU backends share malloc; buffers outlive the loop)
        seed = 777;
        float *q = frand(nq, 1.0f), *k = frand(nk, 1.0f), *v = frand(nk, 1.0f), *g = frand(nq, 1.0f);
        int32_t *ds = ibuf((size_t)s.B * s.T);
        doc_starts(&s, ds);
        float *out = fbuf(nq), *lse = fbuf(nl), *dq = fbuf(nq), *dk = fbuf(nk), *dv = fbuf(nk);
        be->attention_fwd(be, out, lse, q, k, v, ds, s.B, s.T, s.Hq, s.Hkv, s.D, s.scale);
        be->attention_bwd(be, dq, dk, dv, g, q, k, v, out, lse, ds, s.B, s.T, s.Hq, s.Hkv, s.D, s.scale);
        float *x = frand((size_t)M * K, 1.0f), *wt = frand((size_t)N * K, 1.0f), *gy = frand((size_t)M * N, 1.0f);
        float *y = fbuf((size_t)M * N), *dx = fbuf((size_t)M * K), *dw = frand((size_t)N * K, 1.0f);
        be->matmul_fwd(be, y, x, wt, NULL, M, K, N);
        be->matmul_bwd(be, dx, 0, dw, NULL, gy, x, wt, M, K, N);
        float *x2 = frand((size_t)M2 * K, 1.0f), *w2 = frand((size_t)N2 * K, 1.0f), *y2 = fbuf((size_t)M2 * N2);
        be->matmul_fwd(be, y2, x2, w2, NULL, M2, K, N2);
        float *logits = frand((size_t)M * V, 3.0f), *loss = fbuf(M);
        int32_t *tg = ibuf(M);
        for (int i = 0; i < M; i++) tg[i] = (i * 37) % V;
        be->cross_entropy(be, loss, logits, logits, tg, M, V, 0.5f);
        float *gate = frand(n_sw, 3.0f), *up = frand(n_sw, 1.0f), *sw = fbuf(n_sw);
        be->swiglu_fwd(be, sw, gate, up, n_sw);
        float *r[NR] = {out, lse, dq, dk, dv, y, dx, dw, y2, loss, logits, sw};
        for (int i = 0; i < NR; i++) res[which][i] = r[i];
        sync_ok("determinism (large)");
    }
    const char *names[NR] = {"attention out", "attention lse", "attention dq", "attention dk",
                             "attention dv",  "matmul out",    "matmul dx",    "matmul dw",
                             "matmul out (column panels)", "cross_entropy loss", "cross_entropy dlogits",
                             "swiglu out"};
    size_t lens[NR] = {nq, nl, nq, nk, nk, (size_t)M * N, (size_t)M * K, (size_t)N * K, (size_t)M2 * N2, (size_t)M,
                       (size_t)M * V, n_sw};
    char w[96];
    for (int i = 0; i < NR; i++) {
        snprintf(w, sizeof w, "1 vs 2 threads (large): %s", names[i]);
        check_bitwise(w, res[1][i], res[0][i], lens[i]);
    }
    be = keep;
    arena_free();
    bs[0]->destroy(bs[0]);
    bs[1]->destroy(bs[1]);
}

/* errors are recorded and reported by sync, not crashed on */
static void test_errors(void) {
    lt_backend *bx;
    lt_err e;
    if (lt_cpu_backend_create(0, &bx, &e) != LT_OK) {
        LT_CHECK(0, "create: %s", e.msg);
        return;
    }
    LT_CHECK(bx->act_dtype == LT_F32 && bx->param_dtype == LT_F32, "cpu backend dtypes must be F32");
    float logits[6] = {1, 2, 3, 4, 5, 6}, loss[2];
    int32_t tg[2] = {1, 3}; // 3 >= V = 3
    bx->cross_entropy(bx, loss, NULL, logits, tg, 2, 3, 1.0f);
    lt_status st = bx->sync(bx, &e);
    LT_CHECK(st == LT_ERR_RANGE, "sync after a bad target: %s (%s)", lt_status_name(st), e.msg);
    LT_CHECK(strstr(e.msg, "target 3") != NULL, "message names the target: %s", e.msg);

    // upload/download conversions
    float src[5] = {1.0f, -2.5f, 3.14159f, 65504.0f, 1e-3f}, back[5];
    uint16_t h[5];
    LT_CHECK_OK(bx->upload_f32(bx, h, LT_BF16, src, 5, &e), &e);
    LT_CHECK_OK(bx->download_f32(bx, back, h, LT_BF16, 5, &e), &e);
    int ok = 1;
    for (int i = 0; i < 5; i++) ok &= back[i] == lt_bf16_to_f32(lt_f32_to_bf16(src[i]));
    LT_CHECK(ok, "bf16 upload/download round trip");
    LT_CHECK_OK(bx->upload_f32(bx, h, LT_F16, src, 5, &e), &e);
    LT_CHECK_OK(bx->download_f32(bx, back, h, LT_F16, 5, &e), &e);
    ok = 1;
    for (int i = 0; i < 5; i++) ok &= back[i] == lt_f16_to_f32(lt_f32_to_f16(src[i]));
    LT_CHECK(ok, "f16 upload/download round trip");
    LT_CHECK(bx->upload_f32(bx, h, LT_I32, src, 5, &e) == LT_ERR_INVALID, "upload_f32 to I32 must fail");
    void *p;
    LT_CHECK_OK(bx->alloc(bx, 100, &p, &e), &e);
    LT_CHECK(((uintptr_t)p & 63) == 0, "alloc must be 64-byte aligned");
    bx->free(bx, p);
    bx->destroy(bx);
}

/* the fixed document layouts (shape LA = 0 of the table's cpu shapes) */
static void test_attention_layouts(void) {
    {
        // seq 0: documents 3, 1, 5; seq 1: one of 6 and three padding tokens (one-token documents)
        attn_shape s = {.B = 2, .T = 9, .Hq = 4, .D = 5, .scale = 0.45f, .ndocs = {3, 4}};
        int l0[] = {3, 1, 5}, l1[] = {6, 1, 1, 1};
        memcpy(s.lens[0], l0, sizeof l0);
        memcpy(s.lens[1], l1, sizeof l1);
        int hkv[3] = {4, 2, 1}; // GQA ratios 1, 2, 4
        for (int i = 0; i < 3; i++) {
            s.Hkv = hkv[i];
            char label[64];
            snprintf(label, sizeof label, "B2 T9 docs[3,1,5|6,1,1,1] Hq4 Hkv%d D5", s.Hkv);
            test_attention(&s, label);
        }
        // one sequence, one document, odd head size
        attn_shape s2 = {.B = 1, .T = 11, .Hq = 2, .Hkv = 1, .D = 3, .scale = 0.8f, .ndocs = {1}};
        s2.lens[0][0] = 11;
        test_attention(&s2, "B1 T11 one doc Hq2 Hkv1 D3");
        // T = 1, and a sequence made only of one-token documents
        attn_shape s3 = {.B = 3, .T = 1, .Hq = 2, .Hkv = 2, .D = 4, .scale = 0.5f, .ndocs = {1, 1, 1}};
        s3.lens[0][0] = s3.lens[1][0] = s3.lens[2][0] = 1;
        test_attention(&s3, "B3 T1 Hq2 Hkv2 D4");
        attn_shape s4 = {.B = 1, .T = 4, .Hq = 3, .Hkv = 1, .D = 2, .scale = 1.1f, .ndocs = {4}};
        s4.lens[0][0] = s4.lens[0][1] = s4.lens[0][2] = s4.lens[0][3] = 1;
        test_attention(&s4, "B1 T4 all one-token docs Hq3 Hkv1 D2");
    }
    {
        // query blocks of 64 rows: T not a multiple of 64; a document ending on a
        // block edge, followed by two one-token documents; a document spanning
        // three blocks; a last block of 21 rows
        attn_shape s = {.B = 2, .T = 150, .Hq = 2, .Hkv = 1, .D = 3, .scale = 0.6f, .ndocs = {5, 2}};
        int l0[] = {64, 1, 1, 63, 21}, l1[] = {129, 21};
        memcpy(s.lens[0], l0, sizeof l0);
        memcpy(s.lens[1], l1, sizeof l1);
        test_attention(&s, "B2 T150 docs[64,1,1,63,21|129,21] Hq2 Hkv1 D3");
    }
}

/* ------------------------------------------------------------------------ */
/* the cpu mode of the op case table (bench/lt_op_cases.h): one runner per
 * op, called with each of the op's cpu shapes */

static void run_embedding(const long *s) { test_embedding((int)s[0], (int)s[1], (int)s[2]); }
static void run_matmul(const long *s) {
    if (s[4])
        test_matmul_panels((int)s[0], (int)s[1], (int)s[2]);
    else
        test_matmul((int)s[0], (int)s[1], (int)s[2], (int)s[3]);
}
static void run_nf4_matmul(const long *s) { test_nf4_matmul((int)s[0], (int)s[1], (int)s[2], (int)s[3]); }
static void run_lora(const long *s) { test_lora((int)s[0], (int)s[1], (int)s[2], (int)s[3], (int)s[4]); }
static void run_rmsnorm(const long *s) { test_rmsnorm((int)s[0], (int)s[1]); }
static void run_add_rmsnorm(const long *s) { test_add_rmsnorm((int)s[0], (int)s[1]); }
static void run_rope(const long *s) {
    test_rope((int)s[0], (int)s[1], (int)s[2], (int)s[3], (int)s[4], (float)s[5] / 1000.0f);
}
static void run_attention(const long *s) {
    if (s[0] == 0)
        test_attention_layouts();
    else
        test_attention_packing((int)s[0], (int)s[1], (int)s[2], (int)s[3], (int)s[4]);
}
static void run_swiglu(const long *s) { test_swiglu((size_t)s[0]); }
static void run_add(const long *s) { test_add((size_t)s[0]); }
static void run_cross_entropy(const long *s) { test_cross_entropy((int)s[0], (int)s[1], (float)s[2], 0.0f); }
static void run_cross_entropy_cap(const long *s) {
    test_cross_entropy((int)s[0], (int)s[1], (float)s[2], (float)s[3]);
}
static void run_rmsnorm_off(const long *s) {
    g_offop = 1;
    g_woff = (float)s[2] / 10.0f;
    test_rmsnorm((int)s[0], (int)s[1]);
    test_add_rmsnorm((int)s[0], (int)s[1]);
    g_offop = 0;
    g_woff = 0.0f;
}
static void run_geglu(const long *s) { test_geglu((size_t)s[0]); }
static void run_scale(const long *s) { test_scale((size_t)s[0]); }
static void run_copy(const long *s) { test_copy((size_t)s[0], (size_t)s[1], (size_t)s[2]); }
static void run_sumsq_units(const long *s) { test_sumsq_units((size_t)s[0], (size_t)s[1]); }
/* cap_x10 window: the document layouts of test_attention_layouts' first
 * block (short documents, GQA 1/2/4) and a 150-token one spanning query
 * blocks, with soft-capping cap_x10 / 10 and a sliding window */
static void run_attention_cap(const long *sh) {
    float cap = (float)sh[0] / 10.0f;
    int W = (int)sh[1];
    char label[128];
    g_attcap = 1;
    attn_shape s = {.B = 2, .T = 9, .Hq = 4, .D = 5, .scale = 0.9f, .ndocs = {3, 4}, .softcap = cap, .window = W};
    int l0[] = {3, 1, 5}, l1[] = {6, 1, 1, 1};
    memcpy(s.lens[0], l0, sizeof l0);
    memcpy(s.lens[1], l1, sizeof l1);
    int hkv[3] = {4, 2, 1};
    for (int i = 0; i < 3; i++) {
        s.Hkv = hkv[i];
        snprintf(label, sizeof label, "cap%g window%d B2 T9 docs[3,1,5|6,1,1,1] Hq4 Hkv%d D5", cap, W, s.Hkv);
        test_attention(&s, label);
    }
    attn_shape s2 = {.B = 1, .T = 150, .Hq = 2, .Hkv = 1, .D = 3, .scale = 1.3f, .ndocs = {3}, .softcap = cap,
                     .window = W};
    int l2[] = {100, 1, 49};
    memcpy(s2.lens[0], l2, sizeof l2);
    snprintf(label, sizeof label, "cap%g window%d B1 T150 docs[100,1,49] Hq2 Hkv1 D3", cap, W);
    test_attention(&s2, label);
    g_attcap = 0;
}
static void run_sumsq(const long *s) { test_sumsq((size_t)s[0]); }
static void run_adamw(const long *s) {
    if (s[0])
        test_adamw_torch();
    else
        test_adamw();
}

static void run_embed_noise(const long *s) { test_embed_noise((int)s[0], (int)s[1]); }

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

int main(int argc, char **argv) {
    const char *only;
    int rc = lt_op_parse_args("test_cpu_ops", argc, argv, &only);
    if (rc >= 0) return rc;
    lt_err e;
    if (lt_cpu_backend_create(0, &be, &e) != LT_OK) {
        fprintf(stderr, "test_cpu_ops: %s\n", e.msg);
        return 1;
    }
    LT_CHECK(lt_op_run_table("test_cpu_ops", LT_OP_MODE_CPU, RUNNERS, NRUNNERS, only, &lt_test_failures) == 0,
             "the runners here and the op case table (bench/lt_op_cases.c) disagree");
    if (!only) { /* checks that span ops */
        test_expf();
        test_thread_determinism();
        test_thread_determinism_large();
        test_errors();
    }

    be->destroy(be);
    return lt_test_finish("test_cpu_ops");
}
