/*
 * test_model_cuda.c -- whole-model forward / backward / decode on the CUDA
 * backend against the CPU backend (the fp32 reference that
 * test_model_fixtures checks against transformers).
 *
 * Models: every fixture under tests/fixtures/models/ (llama with llama3 rope
 * scaling, llama_tied, mistral, qwen2 with q/k/v biases, qwen3 with q/k norm;
 * GQA 2 or 4, head dims 8-16: CUDA attention v1), with the packed batch of
 * its expected.safetensors, plus two synthetic models (random weights of
 * fixture-like scale, no files) with head dims 64 and 128 so the tensor-core
 * attention (v2) runs inside a model: llama GQA 4 and qwen3 GQA 2 + tied,
 * T = 80 (past one 64-row tile), packed documents, one-token ones, padding.
 *
 * Both sides get the SAME weights: the CPU model's values rounded to bf16
 * (what CUDA stores), uploaded into both, so only compute error is measured.
 * Per model:
 *   forward-only step: logits (N, V), per-token losses (N), loss;
 *   backward step:     loss, the gradient of every parameter;
 *                      a second CUDA backward gives the same bits
 *                      (the backend's ops are deterministic);
 *   KV-cache decode:   prefill 7 tokens (all logits), then 5 single tokens;
 *   LoRA (r 4, scale 2, all seven projections, fixed-seed A and nonzero B,
 *   no dropout): forward logits, loss, the A/B gradients, and decode.
 * Then a short training run (lt_trainer_step: clipping, AdamW, f32 master
 * weights on CUDA) of the sample model (data/sample/model), full and LoRA,
 * 20 steps: the per-step losses agree within TOL_TRAIN and fall on both.
 * Host buffers are poisoned (NaN) before every download; NaN never passes.
 *
 * Tolerances: normalized error ||cuda - cpu|| / ||cpu|| (lt_compare).
 * bf16 keeps 8 significant bits: one rounding has relative error <= 2^-9
 * (1.95e-3), about 1.1e-3 rms. CUDA rounds every activation it stores (about
 * ten per layer forward, as many backward) while the CPU keeps f32; the
 * errors are independent and add in quadrature, and the network's gain
 * (residual stream, softmax, SwiGLU, weights of std 1/sqrt(in) on inputs of
 * rms 1) grows them with depth. The bf16 emulation below (every activation
 * of a CPU run rounded to bf16, exactly where CUDA rounds) measures on these
 * 2-layer models (see the report in the self-check): logits 0.5-1.6e-2,
 * decode 0.5-1.8e-2, per-token losses <= 3.1e-3, loss <= 1e-3 relative,
 * all gradients together <= 3.4e-2, and single tensors up to 5.4e-2 (the
 * k_proj weights / biases: the gradient of k goes through the softmax
 * backward dS = P (dP - delta), a difference of nearly equal terms, and a
 * bias sums it over only 20 rows). The tolerances leave about 3x for what
 * the emulation does not model (CUDA's summation order, the bf16 P and dS
 * operands of the tensor-core attention v2):
 *   logits, decode logits        5e-2
 *   per-token losses             1e-2
 *   loss                         5e-3 relative
 *   all gradients (one vector)   7.5e-2
 *   each parameter's gradient    1.5e-1
 * and still catch real bugs with a wide margin: the self-check faults below
 * (rotary embedding turned the wrong way, a GQA query head reading the wrong
 * kv head, the LoRA scale off by 25%) give logits errors 0.17-1.2, decode
 * 0.2-1.35, all gradients together 0.44-1.45 (LoRA: A/B gradients), and
 * per-token losses >= 2.8e-2 (the loss itself
 * moves less, 7e-4-0.2: it is not what catches a bug).
 * Training: the emulation drifts by at most 7.8e-4 (relative per-step loss,
 * 20 steps, full and LoRA); TOL_TRAIN = 1e-2 leaves ~13x for bf16 parameter
 * storage (rounded from the f32 master after each step) and still flags an
 * optimizer step 1.5x too large (per-step errors up to 5-7e-2).
 *
 * Without a CUDA device (or built without CUDA): exit 77.
 * LT_MODEL_CUDA_SELFTEST=<mode> checks this test itself without a GPU: the
 * "CUDA" side is a second CPU backend whose op table is wrapped:
 *   cpu   identical ops (every error ~0; must pass)
 *   bf16  every activation output rounded to bf16, as CUDA stores it (must
 *         pass: calibrates the tolerances)
 *   rope  bf16 + rotary embedding rotating the wrong way (must fail)
 *   gqa   bf16 + query head h reading kv head h % Hkv instead of
 *         h / (Hq / Hkv) (must fail)
 *   lora  bf16 + the LoRA adapter term scaled by 1.25 (must fail)
 *   adamw bf16 + AdamW with 1.5x the learning rate (must fail: training only)
 * tests/test_model_cuda_selftest.sh runs every mode. LT_TEST_VERBOSE=1
 * prints every comparison.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_family.h"
#include "lt_lora.h"
#include "lt_model.h"
#include "lt_safetensors.h"
#include "lt_test.h"
#include "lt_trainer.h"

#define TOL_LOGITS 5e-2   /* logits and decode logits */
#define TOL_LOSSES 1e-2   /* per-token losses */
#define TOL_LOSS 5e-3     /* loss, relative */
#define TOL_GRAD_ALL 7.5e-2 /* every gradient, as one vector */
#define TOL_GRAD 1.5e-1   /* each parameter's gradient */

#define TOL_TRAIN 1e-2  /* per-step loss of a short training run, relative */
#define TRAIN_STEPS 20

#define N_PREFILL 7
#define N_DECODE 12


/* ------------------------------------------------------------------------ */
/* self-check: a second CPU backend with a wrapped op table                 */

static struct {
    int bf16, rope, gqa, lora, adamw;
} F;
static lt_backend ORIG; /* the wrapped backend's table before wrapping */

static void rnd(void *x, size_t n) {
    if (!F.bf16 || !x) return;
    float *f = x;
    for (size_t i = 0; i < n; i++) f[i] = lt_bf16_to_f32(lt_f32_to_bf16(f[i]));
}

static void w_embedding_fwd(lt_backend *be, void *out, const void *table, const int32_t *ids, int N, int C) {
    ORIG.embedding_fwd(be, out, table, ids, N, C);
    rnd(out, (size_t)N * C);
}
static void w_matmul_fwd(lt_backend *be, void *out, const void *x, const void *w, const void *bias, int M, int K,
                         int Nout) {
    ORIG.matmul_fwd(be, out, x, w, bias, M, K, Nout);
    rnd(out, (size_t)M * Nout);
}
static void w_matmul_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, float *dbias, const void *dout,
                         const void *x, const void *w, int M, int K, int Nout) {
    ORIG.matmul_bwd(be, dx, acc_dx, dw, dbias, dout, x, w, M, K, Nout);
    rnd(dx, (size_t)M * K);
}
static void w_rmsnorm_fwd(lt_backend *be, void *out, float *rstd, const void *x, const void *w, int R, int C,
                          float eps) {
    ORIG.rmsnorm_fwd(be, out, rstd, x, w, R, C, eps);
    rnd(out, (size_t)R * C);
}
static void w_rmsnorm_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, const void *dout, const void *x,
                          const void *w, const float *rstd, int R, int C) {
    ORIG.rmsnorm_bwd(be, dx, acc_dx, dw, dout, x, w, rstd, R, C);
    rnd(dx, (size_t)R * C);
}
/* the wrong-sign fault: the forward applies the inverse rotation and back */
static void w_rope_fwd(lt_backend *be, void *x, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                       float sc) {
    (F.rope ? ORIG.rope_bwd : ORIG.rope_fwd)(be, x, pos, inv_freq, N, H, D, R, sc);
    rnd(x, (size_t)N * H * D);
}
static void w_rope_bwd(lt_backend *be, void *dx, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                       float sc) {
    (F.rope ? ORIG.rope_fwd : ORIG.rope_bwd)(be, dx, pos, inv_freq, N, H, D, R, sc);
    rnd(dx, (size_t)N * H * D);
}

/* the GQA fault: expand k, v (N, Hkv, D) to (N, Hq, D) with head h taking kv
 * head h % Hkv (the repeat-vs-repeat_interleave mix-up), run plain MHA */
static float *gqa_expand(const float *k, int N, int Hq, int Hkv, int D) {
    float *e = malloc((size_t)N * Hq * D * sizeof(float));
    for (int n = 0; n < N; n++)
        for (int h = 0; h < Hq; h++)
            memcpy(e + ((size_t)n * Hq + h) * D, k + ((size_t)n * Hkv + h % Hkv) * D, (size_t)D * sizeof(float));
    return e;
}
static void gqa_reduce(float *dk, const float *de, int N, int Hq, int Hkv, int D) {
    memset(dk, 0, (size_t)N * Hkv * D * sizeof(float));
    for (int n = 0; n < N; n++)
        for (int h = 0; h < Hq; h++)
            for (int d = 0; d < D; d++)
                dk[((size_t)n * Hkv + h % Hkv) * D + d] += de[((size_t)n * Hq + h) * D + d];
}
static void w_attention_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                            const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale) {
    int N = B * T;
    if (F.gqa && Hq != Hkv) {
        float *ke = gqa_expand(k, N, Hq, Hkv, D), *ve = gqa_expand(v, N, Hq, Hkv, D);
        ORIG.attention_fwd(be, out, lse, q, ke, ve, doc_start, B, T, Hq, Hq, D, scale);
        free(ke);
        free(ve);
    } else {
        ORIG.attention_fwd(be, out, lse, q, k, v, doc_start, B, T, Hq, Hkv, D, scale);
    }
    rnd(out, (size_t)N * Hq * D);
}
static void w_attention_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                            const void *k, const void *v, const void *out, const float *lse,
                            const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale) {
    int N = B * T;
    if (F.gqa && Hq != Hkv) {
        size_t ne = (size_t)N * Hq * D;
        float *ke = gqa_expand(k, N, Hq, Hkv, D), *ve = gqa_expand(v, N, Hq, Hkv, D);
        float *dke = malloc(ne * sizeof(float)), *dve = malloc(ne * sizeof(float));
        ORIG.attention_bwd(be, dq, dke, dve, dout, q, ke, ve, out, lse, doc_start, B, T, Hq, Hq, D, scale);
        gqa_reduce(dk, dke, N, Hq, Hkv, D);
        gqa_reduce(dv, dve, N, Hq, Hkv, D);
        free(ke);
        free(ve);
        free(dke);
        free(dve);
    } else {
        ORIG.attention_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, doc_start, B, T, Hq, Hkv, D, scale);
    }
    rnd(dq, (size_t)N * Hq * D);
    rnd(dk, (size_t)N * Hkv * D);
    rnd(dv, (size_t)N * Hkv * D);
}
static void w_swiglu_fwd(lt_backend *be, void *out, const void *gate, const void *up, size_t n) {
    ORIG.swiglu_fwd(be, out, gate, up, n);
    rnd(out, n);
}
static void w_swiglu_bwd(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate, const void *up,
                         size_t n) {
    ORIG.swiglu_bwd(be, dgate, dup, dout, gate, up, n);
    rnd(dgate, n);
    rnd(dup, n);
}
static void w_add(lt_backend *be, void *out, const void *a, const void *b, size_t n) {
    ORIG.add(be, out, a, b, n);
    rnd(out, n);
}
static void w_cross_entropy(lt_backend *be, float *loss, void *dlogits, const void *logits, const int32_t *targets,
                            int N, int V, float grad_scale) {
    ORIG.cross_entropy(be, loss, dlogits, logits, targets, N, V, grad_scale);
    rnd(dlogits, (size_t)N * V);
}
static void w_lora_fwd(lt_backend *be, void *out, float *xa, const void *x, const void *x_lora, const void *w,
                       const void *bias, const float *A, const float *B, int M, int K, int Nout, int r,
                       float scale) {
    ORIG.lora_fwd(be, out, xa, x, x_lora, w, bias, A, B, M, K, Nout, r, F.lora ? 1.25f * scale : scale);
    rnd(out, (size_t)M * Nout);
}
static void w_lora_bwd(lt_backend *be, void *dx, int acc_dx, void *dx_lora, float *dA, float *dB, const void *dout,
                       const void *x_lora, const void *w, const float *A, const float *B, const float *xa, int M,
                       int K, int Nout, int r, float scale) {
    ORIG.lora_bwd(be, dx, acc_dx, dx_lora, dA, dB, dout, x_lora, w, A, B, xa, M, K, Nout, r,
                  F.lora ? 1.25f * scale : scale);
    rnd(dx, (size_t)M * K);
    rnd(dx_lora, (size_t)M * K);
}
/* as CUDA: h rounded once, the norm reads the rounded h */
static void w_add_rmsnorm_fwd(lt_backend *be, void *h, void *out, float *rstd, const void *x, const void *r,
                              const void *w, int R, int C, float eps) {
    ORIG.add(be, h, x, r, (size_t)R * C);
    rnd(h, (size_t)R * C);
    ORIG.rmsnorm_fwd(be, out, rstd, h, w, R, C, eps);
    rnd(out, (size_t)R * C);
}

/* the optimizer fault: the step size 1.5x (e.g. a missing bias correction) */
static void w_adamw(lt_backend *be, const struct lt_adamw_tensor *ts, int count, float lr, float beta1, float beta2,
                    float eps, int step, float grad_scale) {
    ORIG.adamw(be, ts, count, F.adamw ? 1.5f * lr : lr, beta1, beta2, eps, step, grad_scale);
}

static void wrap(lt_backend *be) {
    ORIG = *be;
    be->embedding_fwd = w_embedding_fwd;
    be->matmul_fwd = w_matmul_fwd;
    be->matmul_bwd = w_matmul_bwd;
    be->rmsnorm_fwd = w_rmsnorm_fwd;
    be->rmsnorm_bwd = w_rmsnorm_bwd;
    be->rope_fwd = w_rope_fwd;
    be->rope_bwd = w_rope_bwd;
    be->attention_fwd = w_attention_fwd;
    be->attention_bwd = w_attention_bwd;
    be->swiglu_fwd = w_swiglu_fwd;
    be->swiglu_bwd = w_swiglu_bwd;
    be->add = w_add;
    be->cross_entropy = w_cross_entropy;
    if (be->lora_fwd) be->lora_fwd = w_lora_fwd;
    if (be->lora_bwd) be->lora_bwd = w_lora_bwd;
    if (be->add_rmsnorm_fwd) be->add_rmsnorm_fwd = w_add_rmsnorm_fwd;
    be->adamw = w_adamw;
}

/* ------------------------------------------------------------------------ */

static lt_err err;
static FILE *REPORT; /* $LT_TMP/report.txt: the summary, also printed (tools/gpu-check.sh keeps it) */
#define SAY(...)                                        \
    do {                                                \
        printf(__VA_ARGS__);                            \
        if (REPORT) fprintf(REPORT, __VA_ARGS__);       \
    } while (0)
static const char *SIDE = "cuda";
static const char *MODEL = ""; /* the model being compared (messages) */
static int g_is_cuda = 0;

typedef struct {
    char name[32];
    double logits, losses, loss_rel, grads_all, grads, decode;
    double lora_logits, lora_loss_rel, lora_grads_all, lora_grads, lora_decode;
    char worst[96], lora_worst[96];
    int det_ok; /* -1 not checked */
} row;

static double cmp(const char *what, const float *got, const float *want, size_t n, double tol) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s %s: %s vs cpu", MODEL, what, SIDE);
    lt_check_close(buf, got, want, n, tol);
    lt_cmp c = lt_compare(got, want, n);
    return c.n_nonfinite ? INFINITY : c.norm_err;
}

static double rel(double a, double b) {
    return isfinite(a) && isfinite(b) ? fabs(a - b) / fmax(fabs(b), 1e-30) : INFINITY;
}

/* both models get the reference's values rounded to bf16 (f32 parameters --
 * LoRA A/B -- as they are) */
static void sync_weights(lt_model *ref, lt_model *tst, const char *name) {
    lt_backend *br = lt_model_backend(ref), *bt = lt_model_backend(tst);
    LT_CHECK(lt_model_num_params(ref) == lt_model_num_params(tst), "%s: %zu vs %zu parameters", name,
             lt_model_num_params(ref), lt_model_num_params(tst));
    for (size_t i = 0; i < lt_model_num_params(ref) && i < lt_model_num_params(tst); i++) {
        lt_param *pr = lt_model_param(ref, i), *pt = lt_model_param(tst, i);
        LT_CHECK(!strcmp(pr->name, pt->name) && pr->numel == pt->numel, "%s: parameter %zu is %s / %s", name, i,
                 pr->name, pt->name);
        if (strcmp(pr->name, pt->name) || pr->numel != pt->numel) continue;
        float *h = malloc(pr->numel * sizeof(float));
        LT_CHECK_OK(br->download_f32(br, h, pr->data, pr->dtype, pr->numel, &err), &err);
        if (!strstr(pr->name, "lora_"))
            for (size_t k = 0; k < pr->numel; k++) h[k] = lt_bf16_to_f32(lt_f32_to_bf16(h[k]));
        LT_CHECK_OK(br->upload_f32(br, pr->data, pr->dtype, h, pr->numel, &err), &err);
        LT_CHECK_OK(bt->upload_f32(bt, pt->data, pt->dtype, h, pt->numel, &err), &err);
        free(h);
    }
}

/* parameter values from a seeded RNG, of fixture-like scale: norms 1 + N(0,
 * 0.1^2), embeddings N(0, 1), matrices and biases N(0, (1/sqrt(in))^2); LoRA
 * A N(0, 1/in), B N(0, 0.3^2) (nonzero so A gets a gradient) */
static void set_random(lt_model *m, int lora_only, uint64_t seed) {
    lt_backend *be = lt_model_backend(m);
    lt_rng r;
    lt_rng_seed(&r, seed);
    for (size_t i = 0; i < lt_model_num_params(m); i++) {
        lt_param *p = lt_model_param(m, i);
        int is_lora = strstr(p->name, "lora_") != NULL;
        if (lora_only && !is_lora) continue;
        float *h = malloc(p->numel * sizeof(float));
        int in = p->ndim == 2 ? (int)p->shape[1] : 1;
        float s;
        if (strstr(p->name, "lora_B")) s = 0.3f;
        else if (strstr(p->name, "norm")) s = 0.1f;
        else if (strstr(p->name, "embed_tokens")) s = 1.0f;
        else if (p->ndim == 2) s = 1.0f / sqrtf((float)in);
        else s = 0.1f; /* biases */
        for (size_t k = 0; k < p->numel; k++) {
            float v = s * lt_rng_normal(&r);
            if (strstr(p->name, "norm")) v += 1.0f;
            h[k] = v;
        }
        LT_CHECK_OK(be->upload_f32(be, p->data, p->dtype, h, p->numel, &err), &err);
        free(h);
    }
}

typedef struct {
    int B, T;
    int32_t *tokens, *targets, *pos, *doc;
} batch_buf;

static void batch_free(batch_buf *b) {
    free(b->tokens);
    free(b->targets);
    free(b->pos);
    free(b->doc);
    memset(b, 0, sizeof *b);
}

/* copy an i32 tensor of the expected file out (alignment-safe) */
static int32_t *get_i32(const lt_st_file *f, const char *name, size_t numel) {
    const lt_st_tensor *t = lt_st_find(f, name);
    if (!t || t->dtype != LT_I32 || t->numel != numel) {
        fprintf(stderr, "FAIL expected.safetensors: '%s' missing or not I32[%zu]\n", name, numel);
        return NULL;
    }
    int32_t *p = malloc(t->nbytes);
    memcpy(p, t->data, t->nbytes);
    return p;
}

/* the fixture's packed batch (tokens, mask, documents) through lt_batch_fill_sequence */
static int fixture_batch(const char *dir, batch_buf *out) {
    char path[4200];
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    lt_st_file *ex = NULL;
    LT_CHECK_OK(lt_st_open(path, &ex, &err), &err);
    if (!ex) return 0;
    const lt_st_tensor *tt = lt_st_find(ex, "tokens"), *dl = lt_st_find(ex, "doc_lens");
    LT_CHECK(tt && tt->ndim == 2 && dl && dl->ndim == 2, "%s: tokens (B, T) / doc_lens (B, D)", path);
    int ok = 0;
    int32_t *mask32 = NULL, *n_docs = NULL, *doc_lens = NULL;
    if (!tt || tt->ndim != 2 || !dl || dl->ndim != 2) goto done;
    int B = (int)tt->shape[0], T = (int)tt->shape[1], N = B * T, maxdoc = (int)dl->shape[1];
    out->B = B;
    out->T = T;
    out->tokens = get_i32(ex, "tokens", (size_t)N);
    mask32 = get_i32(ex, "mask", (size_t)N);
    n_docs = get_i32(ex, "n_docs", (size_t)B);
    doc_lens = get_i32(ex, "doc_lens", (size_t)B * maxdoc);
    if (!out->tokens || !mask32 || !n_docs || !doc_lens) goto done;
    out->targets = malloc((size_t)N * 4);
    out->pos = malloc((size_t)N * 4);
    out->doc = malloc((size_t)N * 4);
    uint8_t *mask = malloc((size_t)N);
    for (int n = 0; n < N; n++) mask[n] = (uint8_t)mask32[n];
    ok = 1;
    for (int b = 0; b < B; b++) {
        int lens[64], nd = n_docs[b] < 64 ? n_docs[b] : 64;
        for (int d = 0; d < nd; d++) lens[d] = doc_lens[b * maxdoc + d];
        lt_status st = lt_batch_fill_sequence(T, out->tokens + b * T, mask + b * T, lens, nd, out->targets + b * T,
                                              out->pos + b * T, out->doc + b * T, &err);
        LT_CHECK_OK(st, &err);
        ok &= st == LT_OK;
    }
    free(mask);
done:
    free(mask32);
    free(n_docs);
    free(doc_lens);
    lt_st_close(ex);
    return ok;
}

/* B = 2, T = 80: [37, 1, 42] and [70] + 10 padding tokens; random tokens,
 * mask 1 with probability 0.85 */
static int synthetic_batch(int V, uint64_t seed, batch_buf *out) {
    int B = 2, T = 80, N = B * T;
    static const int lens0[] = {37, 1, 42}, lens1[] = {70};
    out->B = B;
    out->T = T;
    out->tokens = malloc((size_t)N * 4);
    out->targets = malloc((size_t)N * 4);
    out->pos = malloc((size_t)N * 4);
    out->doc = malloc((size_t)N * 4);
    uint8_t *mask = malloc((size_t)N);
    lt_rng r;
    lt_rng_seed(&r, seed);
    for (int n = 0; n < N; n++) {
        out->tokens[n] = (int32_t)(lt_rng_u64(&r) % (uint64_t)V);
        mask[n] = lt_rng_uniform(&r) < 0.85f;
    }
    int ok = 1;
    for (int b = 0; b < B; b++) {
        const int *lens = b ? lens1 : lens0;
        int nd = b ? 1 : 3;
        lt_status st = lt_batch_fill_sequence(T, out->tokens + b * T, mask + b * T, lens, nd, out->targets + b * T,
                                              out->pos + b * T, out->doc + b * T, &err);
        LT_CHECK_OK(st, &err);
        ok &= st == LT_OK;
    }
    free(mask);
    return ok;
}

/* forward-only step on both sides: logits, per-token losses, loss */
static int64_t compare_forward(lt_model *mr, lt_model *mt, const lt_batch *b, const char *tag, double *e_logits,
                               double *e_losses, double *e_loss) {
    int N = b->B * b->T, V = lt_model_config(mr)->vocab_size;
    float *lr = malloc((size_t)N * V * 4), *lt = malloc((size_t)N * V * 4), *sr = malloc((size_t)N * 4),
          *st = malloc((size_t)N * 4);
    lt_poison(lr, (size_t)N * V);
    lt_poison(lt, (size_t)N * V);
    lt_poison(sr, N);
    lt_poison(st, N);
    lt_step_result rr = {0}, rt = {0};
    LT_CHECK_OK(lt_model_step(mr, b, 0, 1.0, &rr, &err), &err);
    LT_CHECK_OK(lt_model_step(mt, b, 0, 1.0, &rt, &err), &err);
    LT_CHECK_OK(lt_model_get_logits(mr, lr, &err), &err);
    LT_CHECK_OK(lt_model_get_logits(mt, lt, &err), &err);
    LT_CHECK_OK(lt_model_get_token_losses(mr, sr, &err), &err);
    LT_CHECK_OK(lt_model_get_token_losses(mt, st, &err), &err);
    char what[128];
    snprintf(what, sizeof what, "%s logits", tag);
    *e_logits = cmp(what, lt, lr, (size_t)N * V, TOL_LOGITS);
    if (e_losses) {
        snprintf(what, sizeof what, "%s per-token losses", tag);
        *e_losses = cmp(what, st, sr, N, TOL_LOSSES);
    }
    LT_CHECK(rr.n_targets == rt.n_targets && rr.n_targets > 0, "%s: %lld vs %lld targets", tag,
             (long long)rt.n_targets, (long long)rr.n_targets);
    *e_loss = rel(rt.loss_sum / (double)rt.n_targets, rr.loss_sum / (double)rr.n_targets);
    LT_CHECK(*e_loss <= TOL_LOSS, "%s: loss %.6f on %s, %.6f on cpu (relative error %.3g, tol %.3g)", tag,
             rt.loss_sum / (double)rt.n_targets, SIDE, rr.loss_sum / (double)rr.n_targets, *e_loss, TOL_LOSS);
    free(lr);
    free(lt);
    free(sr);
    free(st);
    return rr.n_targets;
}

/* backward step on both sides; compares the loss and every trainable
 * parameter's gradient; returns the largest gradient error */
static double compare_backward(lt_model *mr, lt_model *mt, const lt_batch *b, double norm, const char *tag,
                               char *worst, double *all, int *det_ok) {
    lt_backend *br = lt_model_backend(mr), *bt = lt_model_backend(mt);
    lt_step_result rr = {0}, rt = {0};
    lt_model_zero_grads(mr);
    lt_model_zero_grads(mt);
    LT_CHECK_OK(lt_model_step(mr, b, 1, norm, &rr, &err), &err);
    LT_CHECK_OK(lt_model_step(mt, b, 1, norm, &rt, &err), &err);
    double lrel = rel(rt.loss_sum, rr.loss_sum);
    LT_CHECK(lrel <= TOL_LOSS, "%s: loss sum with backward %.6f on %s, %.6f on cpu (relative error %.3g)", tag,
             rt.loss_sum, SIDE, rr.loss_sum, lrel);
    double maxerr = 0, num = 0, den = 0;
    int n_cmp = 0, nonfinite = 0;
    for (size_t i = 0; i < lt_model_num_params(mr) && i < lt_model_num_params(mt); i++) {
        lt_param *pr = lt_model_param(mr, i), *pt = lt_model_param(mt, i);
        LT_CHECK(!!pr->grad == !!pt->grad, "%s: %s trainable on one side only", tag, pr->name);
        if (!pr->grad || !pt->grad) continue;
        float *gr = malloc(pr->numel * 4), *gt = malloc(pt->numel * 4);
        lt_poison(gr, pr->numel);
        lt_poison(gt, pt->numel);
        LT_CHECK_OK(br->download_f32(br, gr, pr->grad, LT_F32, pr->numel, &err), &err);
        LT_CHECK_OK(bt->download_f32(bt, gt, pt->grad, LT_F32, pt->numel, &err), &err);
        char what[192];
        snprintf(what, sizeof what, "%s d%s", tag, pr->name);
        double e = cmp(what, gt, gr, pr->numel, TOL_GRAD);
        n_cmp++;
        for (size_t k = 0; k < pr->numel; k++) {
            if (!isfinite(gt[k]) || !isfinite(gr[k])) nonfinite = 1;
            double d = (double)gt[k] - gr[k];
            num += d * d;
            den += (double)gr[k] * gr[k];
        }
        if (!(e <= maxerr)) {
            maxerr = e;
            snprintf(worst, 96, "%s", pr->name);
        }
        free(gr);
        free(gt);
    }
    LT_CHECK(n_cmp > 0, "%s: no trainable parameters compared", tag);
    *all = nonfinite ? INFINITY : sqrt(num / fmax(den, 1e-300));
    LT_CHECK(*all <= TOL_GRAD_ALL, "%s %s: all gradients as one vector: normalized error %.3g (tol %.3g)", MODEL,
             tag, *all, TOL_GRAD_ALL);
    /* determinism: the same step again gives the same gradient bits */
    if (det_ok) {
        size_t n1 = 0, n2 = 0;
        float *flat = lt_model_grads_flat(mt, &n1);
        float *g1 = malloc(n1 * 4 + 4), *g2 = malloc(n1 * 4 + 4);
        LT_CHECK_OK(bt->download(bt, g1, flat, n1 * 4, &err), &err);
        lt_model_zero_grads(mt);
        LT_CHECK_OK(lt_model_step(mt, b, 1, norm, &rt, &err), &err);
        flat = lt_model_grads_flat(mt, &n2);
        LT_CHECK_OK(bt->download(bt, g2, flat, n2 * 4, &err), &err);
        *det_ok = n1 == n2 && !memcmp(g1, g2, n1 * 4);
        LT_CHECK(*det_ok, "%s: a second identical backward step on %s gives different gradient bits", tag, SIDE);
        free(g1);
        free(g2);
    }
    return maxerr;
}

/* KV-cache decode on both sides: prefill N_PREFILL tokens (all logits), then
 * one token at a time; compares the (N_DECODE, V) logits */
static double compare_decode(lt_model *mr, lt_model *mt, const int32_t *tokens, const char *tag) {
    int V = lt_model_config(mr)->vocab_size;
    float *dr = malloc((size_t)N_DECODE * V * 4), *dt = malloc((size_t)N_DECODE * V * 4);
    lt_poison(dr, (size_t)N_DECODE * V);
    lt_poison(dt, (size_t)N_DECODE * V);
    lt_model *ms[2] = {mr, mt};
    float *outs[2] = {dr, dt};
    for (int s = 0; s < 2; s++) {
        LT_CHECK_OK(lt_model_kv_init(ms[s], N_DECODE, &err), &err);
        LT_CHECK_OK(lt_model_decode(ms[s], tokens, N_PREFILL, outs[s], 1, &err), &err);
        for (int t = N_PREFILL; t < N_DECODE; t++)
            LT_CHECK_OK(lt_model_decode(ms[s], tokens + t, 1, outs[s] + (size_t)t * V, 0, &err), &err);
        LT_CHECK(lt_model_kv_len(ms[s]) == N_DECODE, "%s: cache holds %d tokens", tag, lt_model_kv_len(ms[s]));
    }
    char what[128];
    snprintf(what, sizeof what, "%s decode (prefill %d + %d single)", tag, N_PREFILL, N_DECODE - N_PREFILL);
    double e = cmp(what, dt, dr, (size_t)N_DECODE * V, TOL_LOGITS);
    free(dr);
    free(dt);
    return e;
}

/* a synthetic model's config: head dim 64 (llama, GQA 4) or 128 (qwen3, GQA 2, tied) */
static const char *SYNTH[] = {
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": 192,"
    " \"hidden_size\": 256, \"intermediate_size\": 384, \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
    " \"num_key_value_heads\": 2, \"head_dim\": 64, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0,"
    " \"max_position_embeddings\": 256, \"tie_word_embeddings\": false}",
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", \"vocab_size\": 160,"
    " \"hidden_size\": 256, \"intermediate_size\": 320, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    " \"num_key_value_heads\": 2, \"head_dim\": 128, \"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000.0,"
    " \"max_position_embeddings\": 256, \"tie_word_embeddings\": true}",
};
static const char *SYNTH_NAME[] = {"synth_llama_d64", "synth_qwen3_d128"};

/* one model: `fixture` names a folder under tests/fixtures/models, else synth
 * is an index into SYNTH */
static void run_model(lt_backend *bref, lt_backend *btst, const char *fixture, int synth, row *out) {
    char dir[4096];
    lt_model *mr = NULL, *mt = NULL;
    batch_buf bb = {0};
    out->det_ok = -1;
    snprintf(out->name, sizeof out->name, "%s", fixture ? fixture : SYNTH_NAME[synth]);
    MODEL = out->name;
    if (fixture) {
        snprintf(dir, sizeof dir, "%s/%s", lt_src_path("tests/fixtures/models"), fixture);
        LT_CHECK_OK(lt_model_load(dir, bref, &mr, &err), &err);
        LT_CHECK_OK(lt_model_load(dir, btst, &mt, &err), &err);
    } else {
        lt_config cfg;
        LT_CHECK_OK(lt_config_parse(SYNTH[synth], SYNTH_NAME[synth], &cfg, &err), &err);
        LT_CHECK_OK(lt_model_create(&cfg, bref, 1, &mr, &err), &err);
        LT_CHECK_OK(lt_model_create(&cfg, btst, 2, &mt, &err), &err);
        if (mr) set_random(mr, 0, 100 + (uint64_t)synth);
    }
    if (!mr || !mt) goto done;
    sync_weights(mr, mt, out->name);
    const lt_config *cfg = lt_model_config(mr);
    int ok = fixture ? fixture_batch(dir, &bb) : synthetic_batch(cfg->vocab_size, 7 + (uint64_t)synth, &bb);
    if (!ok) goto done;
    lt_batch b = {.B = bb.B, .T = bb.T, .tokens = bb.tokens, .targets = bb.targets, .pos = bb.pos,
                  .doc_start = bb.doc};
    LT_CHECK_OK(lt_model_plan(mr, bb.B, bb.T, &err), &err);
    LT_CHECK_OK(lt_model_plan(mt, bb.B, bb.T, &err), &err);
    LT_CHECK_OK(lt_model_alloc_grads(mr, &err), &err);
    LT_CHECK_OK(lt_model_alloc_grads(mt, &err), &err);

    /* gradients of the mean loss: loss_norm = the batch's target count */
    double norm = (double)compare_forward(mr, mt, &b, "full", &out->logits, &out->losses, &out->loss_rel);
    if (!(norm > 0)) norm = 1;
    int det = 0;
    out->grads = compare_backward(mr, mt, &b, norm, "full", out->worst, &out->grads_all, g_is_cuda ? &det : NULL);
    if (g_is_cuda) out->det_ok = det;

    /* decode: random tokens (not the batch's: a fresh sequence from position 0) */
    int32_t dtok[N_DECODE];
    lt_rng r;
    lt_rng_seed(&r, 31 + (uint64_t)synth);
    for (int t = 0; t < N_DECODE; t++) dtok[t] = (int32_t)(lt_rng_u64(&r) % (uint64_t)cfg->vocab_size);
    out->decode = compare_decode(mr, mt, dtok, "full");

    /* LoRA on every projection, A / B from a fixed seed (same values both sides) */
    lt_lora_spec spec = {.r = 4, .scale = 2.0f, .dropout = 0.0f, .targets = 0x7fu};
    LT_CHECK_OK(lt_model_add_lora(mr, &spec, &err), &err);
    LT_CHECK_OK(lt_model_add_lora(mt, &spec, &err), &err);
    set_random(mr, 1, 555);
    sync_weights(mr, mt, out->name); /* LoRA A/B are f32: copied unrounded */
    LT_CHECK_OK(lt_model_plan(mr, bb.B, bb.T, &err), &err);
    LT_CHECK_OK(lt_model_plan(mt, bb.B, bb.T, &err), &err);
    LT_CHECK_OK(lt_model_alloc_grads(mr, &err), &err);
    LT_CHECK_OK(lt_model_alloc_grads(mt, &err), &err);
    compare_forward(mr, mt, &b, "lora", &out->lora_logits, NULL, &out->lora_loss_rel);
    out->lora_grads = compare_backward(mr, mt, &b, norm, "lora", out->lora_worst, &out->lora_grads_all, NULL);
    out->lora_decode = compare_decode(mr, mt, dtok, "lora");
done:
    batch_free(&bb);
    if (mr) lt_model_free(mr);
    if (mt) lt_model_free(mt);
}

/* ------------------------------------------------------------------------ */
/* a short training run (lt_trainer_step, as `luxtrain train` without a
 * communicator): the sample model (data/sample/model: llama, 4 layers, bf16
 * weights), TRAIN_STEPS AdamW steps of 2 micro-batches of 4 x 64 tokens of
 * learnable sequences (arithmetic progressions), warmup 2, cosine, clip 1;
 * full (lr 1e-3) or LoRA r 8 alpha 16 (lr 5e-3). The per-step losses on
 * both sides must agree within TOL_TRAIN (relative) and fall. */
typedef struct {
    double max_rel, first[2], last[2];
    int steps;
} train_row;

static int train_side(lt_backend *be, lt_model *ref_for_weights, int lora, double *losses, lt_model **keep) {
    lt_model *m = NULL;
    lt_trainer *tr = NULL;
    int ok = 0, B = 4, T = 64, K = 2;
    LT_CHECK_OK(lt_model_load(lt_src_path("data/sample/model"), be, &m, &err), &err);
    if (!m) return 0;
    lt_rng rng;
    lt_rng_seed(&rng, 77);
    if (lora) {
        lt_peft_config pc;
        memset(&pc, 0, sizeof pc);
        pc.r = 8;
        pc.alpha = 16;
        pc.targets = LT_LORA_ALL_TARGETS;
        LT_CHECK_OK(lt_trainer_add_lora(m, &pc, &rng, &err), &err);
    }
    if (ref_for_weights) sync_weights(ref_for_weights, m, "sample");
    lt_optim_cfg oc;
    memset(&oc, 0, sizeof oc);
    oc.sched.kind = LT_SCHED_COSINE;
    oc.sched.lr = lora ? 5e-3 : 1e-3;
    oc.sched.warmup_steps = 2;
    oc.sched.total_steps = TRAIN_STEPS;
    oc.sched.min_lr_ratio = 0.1;
    oc.beta1 = 0.9;
    oc.beta2 = 0.999;
    oc.eps = 1e-8;
    oc.weight_decay = 0.01;
    oc.clip = 1.0;
    LT_CHECK_OK(lt_model_plan(m, B, T, &err), &err);
    LT_CHECK_OK(lt_trainer_create(m, &oc, 0, 0, &tr, &err), &err);
    if (!tr) goto done;
    int V = lt_model_config(m)->vocab_size, N = B * T;
    int32_t *tok = malloc((size_t)K * N * 4), *tgt = malloc((size_t)K * N * 4), *pos = malloc((size_t)K * N * 4),
            *doc = malloc((size_t)K * N * 4);
    lt_rng data;
    lt_rng_seed(&data, 2024);
    ok = 1;
    for (int step = 0; step < TRAIN_STEPS && ok; step++) {
        lt_batch mb[2];
        for (int k = 0; k < K; k++) {
            for (int b = 0; b < B; b++) {
                int32_t *t = tok + (size_t)k * N + b * T;
                int s0 = (int)(lt_rng_u64(&data) % 500), st = 1 + (int)(lt_rng_u64(&data) % 4);
                for (int j = 0; j < T; j++) t[j] = 3 + (s0 + j * st) % 500;
                for (int j = 0; j < T; j++) {
                    tgt[(size_t)k * N + b * T + j] = j + 1 < T ? t[j + 1] : -1;
                    pos[(size_t)k * N + b * T + j] = j;
                    doc[(size_t)k * N + b * T + j] = 0;
                }
            }
            mb[k] = (lt_batch){.B = B, .T = T, .tokens = tok + (size_t)k * N, .targets = tgt + (size_t)k * N,
                               .pos = pos + (size_t)k * N, .doc_start = doc + (size_t)k * N};
        }
        (void)V;
        lt_train_stats stt;
        memset(&stt, 0, sizeof stt);
        lt_status st = lt_trainer_step(tr, mb, K, &stt, &err);
        LT_CHECK_OK(st, &err);
        ok = st == LT_OK;
        losses[step] = ok ? stt.loss : NAN;
    }
    free(tok);
    free(tgt);
    free(pos);
    free(doc);
done:
    if (tr) lt_trainer_free(tr);
    if (keep && m && ok) *keep = m;
    else if (m) lt_model_free(m);
    return ok;
}

static void compare_training(lt_backend *bref, lt_backend *btst, int lora, train_row *out) {
    double lr_[TRAIN_STEPS], lt_[TRAIN_STEPS];
    for (int i = 0; i < TRAIN_STEPS; i++) lr_[i] = lt_[i] = NAN;
    MODEL = lora ? "sample lora" : "sample full";
    /* the reference's initial weights (bf16 on disk: the same on both sides;
     * the LoRA A from the same seed) are copied over anyway */
    lt_model *init = NULL;
    {
        lt_model *m = NULL;
        LT_CHECK_OK(lt_model_load(lt_src_path("data/sample/model"), bref, &m, &err), &err);
        if (!m) return;
        if (lora) {
            lt_rng rng;
            lt_rng_seed(&rng, 77);
            lt_peft_config pc;
            memset(&pc, 0, sizeof pc);
            pc.r = 8;
            pc.alpha = 16;
            pc.targets = LT_LORA_ALL_TARGETS;
            LT_CHECK_OK(lt_trainer_add_lora(m, &pc, &rng, &err), &err);
        }
        init = m;
    }
    int ok = train_side(bref, NULL, lora, lr_, NULL) & train_side(btst, init, lora, lt_, NULL);
    lt_model_free(init);
    out->max_rel = 0;
    out->steps = TRAIN_STEPS;
    for (int i = 0; i < TRAIN_STEPS; i++) {
        double e = rel(lt_[i], lr_[i]);
        if (!(e <= out->max_rel)) out->max_rel = e;
        LT_CHECK(e <= TOL_TRAIN, "%s: step %d loss %.5f on %s, %.5f on cpu (relative %.3g, tol %.3g)", MODEL, i + 1,
                 lt_[i], SIDE, lr_[i], e, TOL_TRAIN);
    }
    double *side[2] = {lr_, lt_};
    for (int s = 0; s < 2; s++) {
        out->first[s] = out->last[s] = 0;
        for (int i = 0; i < 5; i++) {
            out->first[s] += side[s][i] / 5;
            out->last[s] += side[s][TRAIN_STEPS - 5 + i] / 5;
        }
        LT_CHECK(out->last[s] < out->first[s] - 0.25, "%s: %s loss does not fall: first 5 steps %.4f, last 5 %.4f",
                 MODEL, s ? SIDE : "cpu", out->first[s], out->last[s]);
    }
    for (int i = 0; i < TRAIN_STEPS; i++)
        if (getenv("LT_TEST_VERBOSE") || REPORT)
            SAY("  %s step %2d: cpu %.5f  %s %.5f  rel %.2e\n", MODEL, i + 1, lr_[i], SIDE, lt_[i],
                   rel(lt_[i], lr_[i]));
    (void)ok;
}

int main(void) {
    const char *mode = getenv("LT_MODEL_CUDA_SELFTEST");
    lt_backend *bref = NULL, *btst = NULL;
    lt_status st;
    if (mode && *mode) {
        if (!strcmp(mode, "cpu")) {
        } else if (!strcmp(mode, "bf16")) {
            F.bf16 = 1;
        } else if (!strcmp(mode, "rope")) {
            F.bf16 = F.rope = 1;
        } else if (!strcmp(mode, "gqa")) {
            F.bf16 = F.gqa = 1;
        } else if (!strcmp(mode, "lora")) {
            F.bf16 = F.lora = 1;
        } else if (!strcmp(mode, "adamw")) {
            F.bf16 = F.adamw = 1;
        } else {
            fprintf(stderr, "test_model_cuda: LT_MODEL_CUDA_SELFTEST=%s: expected cpu, bf16, rope, gqa, lora or adamw\n",
                    mode);
            return 2;
        }
        static char side[64];
        snprintf(side, sizeof side, "cpu#2[%s]", mode);
        SIDE = side;
        st = lt_cpu_backend_create(1, &btst, &err);
        if (st == LT_OK) wrap(btst);
    } else {
        st = lt_backend_create("cuda", 0, &btst, &err);
        if (st == LT_ERR_UNSUPPORTED) {
            printf("test_model_cuda: skipped: %s\n", err.msg);
            return LT_TEST_SKIP;
        }
        g_is_cuda = 1;
    }
    LT_CHECK_OK(st, &err);
    if (st != LT_OK) return lt_test_finish("test_model_cuda");
    st = lt_cpu_backend_create(2, &bref, &err);
    LT_CHECK_OK(st, &err);
    if (st != LT_OK) return lt_test_finish("test_model_cuda");
    char rpath[4200];
    snprintf(rpath, sizeof rpath, "%s/report.txt", lt_test_tmpdir("test_model_cuda"));
    REPORT = fopen(rpath, "w");

    enum { MAXM = 32, NS = sizeof SYNTH / sizeof SYNTH[0] };
    const char *MODELS[MAXM];
    const int NM = (int)lt_family_fixtures(MODELS, MAXM); /* the families' fixture models */
    row rows[MAXM + NS];
    memset(rows, 0, sizeof rows);
    for (int i = 0; i < NM; i++) run_model(bref, btst, MODELS[i], 0, &rows[i]);
    for (int i = 0; i < NS; i++) run_model(bref, btst, NULL, i, &rows[NM + i]);

    SAY("test_model_cuda: %s vs cpu, normalized errors (tolerances: logits/decode %.2g, losses %.2g, loss "
           "%.2g rel, grads all %.2g / max per tensor %.2g); L. = with LoRA\n",
           SIDE, TOL_LOGITS, TOL_LOSSES, TOL_LOSS, TOL_GRAD_ALL, TOL_GRAD);
    SAY("%-17s %8s %8s %8s %8s %8s %8s | %8s %8s %8s %8s %8s  %s\n", "model", "logits", "losses", "loss",
           "grads", "grad max", "decode", "L.logits", "L.loss", "L.grads", "L.gr max", "L.decode",
           "worst grad / worst LoRA grad");
    for (int i = 0; i < NM + NS; i++) {
        row *w = &rows[i];
        SAY("%-17s %8.2e %8.2e %8.2e %8.2e %8.2e %8.2e | %8.2e %8.2e %8.2e %8.2e %8.2e  %s / %s%s\n", w->name,
               w->logits, w->losses, w->loss_rel, w->grads_all, w->grads, w->decode, w->lora_logits,
               w->lora_loss_rel, w->lora_grads_all, w->lora_grads, w->lora_decode, w->worst, w->lora_worst,
               w->det_ok < 0 ? "" : w->det_ok ? "  (backward deterministic)" : "  (backward NOT deterministic)");
    }
    train_row tr[2];
    memset(tr, 0, sizeof tr);
    /* LT_MODEL_CUDA_NO_TRAINING=1 (the self-check's model-only fault modes)
     * leaves the training runs out */
    const char *no_train = getenv("LT_MODEL_CUDA_NO_TRAINING");
    int train = !(no_train && *no_train == '1');
    for (int lora = 0; train && lora < 2; lora++) compare_training(bref, btst, lora, &tr[lora]);
    for (int lora = 0; train && lora < 2; lora++)
        SAY("training %-4s %d steps: per-step loss max relative error %.2e (tol %.2g); mean loss of the first / "
               "last 5 steps: cpu %.4f -> %.4f, %s %.4f -> %.4f\n",
               lora ? "LoRA" : "full", tr[lora].steps, tr[lora].max_rel, TOL_TRAIN, tr[lora].first[0],
               tr[lora].last[0], SIDE, tr[lora].first[1], tr[lora].last[1]);
    fflush(stdout);
    btst->destroy(btst);
    bref->destroy(bref);
    int rc = lt_test_finish("test_model_cuda");
    if (REPORT) {
        fprintf(REPORT, "test_model_cuda: %s (%d of %d checks failed)\n", rc ? "FAILED" : "passed", lt_test_failures,
                lt_test_checks);
        fclose(REPORT);
    }
    return rc;
}
