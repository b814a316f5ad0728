/*
 * lt_backend.h -- the op interface. One table of function pointers that the
 * model calls for every op; the CPU backend (core/lt_cpu_*.c) fills it as the
 * readable fp32 reference, the CUDA backend (cuda/) fills the same table.
 *
 * Memory: every pointer handed to an op is backend memory (host memory for
 * the CPU backend, device memory for CUDA), allocated with be->alloc.
 * Element types of the buffers an op touches:
 *   act   : be->act_dtype   activations and activation gradients
 *           (F32 on the CPU, BF16 on CUDA)
 *   param : be->param_dtype model weights as the forward reads them
 *   f32   : always float    parameter gradients, rstd, lse, per-token loss
 *   i32   : int32_t         token ids, targets, positions, doc starts
 *
 * Shapes use N = B*T rows (B sequences of T tokens, row n = b*T + t).
 * Packed documents: doc_start[n] is the index t0 (0 <= t0 <= t) inside
 * sequence b of the first token of the document that token n belongs to.
 * Attention is causal inside a document only: query (b, t) sees keys
 * (b, j) with doc_start[b*T+t] <= j <= t. A padding token is a one-token
 * document (doc_start = t) that is never a target.
 * Order of doc_start inside a sequence:
 *   - attention_bwd (training) requires it never to decrease along t
 *     (doc_start[b*T+t] >= doc_start[b*T+t-1]): the backward kernels walk
 *     the queries that see a key in order and stop at the first that does
 *     not. The backends refuse a decreasing one (be->sync reports it);
 *     batches are checked where they enter the model (lt_model's
 *     validate_batch: every doc_start is t or the previous token's).
 *   - attention_fwd accepts any 0 <= doc_start <= t: each query row is
 *     computed on its own. The KV-cache decode (lt_model_decode) relies on
 *     this: its cached rows are one-token documents (doc_start = t) and the
 *     new rows start at 0, so the pattern decreases where they meet. Such a
 *     pattern must never reach attention_bwd.
 *
 * Ops return void; a backend records the first failure, and be->sync
 * returns it (as CUDA reports kernel errors asynchronously). Shapes are
 * validated by the caller (the model's planner) before any op runs.
 *
 * Gradient conventions: parameter gradients (f32) are always ACCUMULATED
 * (+=), so micro-batches add up. Activation gradients are written (=) unless
 * an `acc` argument says to add.
 */
#ifndef LT_BACKEND_H
#define LT_BACKEND_H

#include <math.h>

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_backend lt_backend;
struct lt_adamw_tensor; /* below */

struct lt_backend {
    const char *name; /* "cpu", "cuda" */
    lt_dtype act_dtype;
    lt_dtype param_dtype;
    void *ctx;

    /* ---- memory ---- */
    lt_status (*alloc)(lt_backend *be, size_t bytes, void **out, lt_err *err);
    void (*free)(lt_backend *be, void *p);
    /* host f32 -> backend buffer of dtype `dt` (converting), n elements */
    lt_status (*upload_f32)(lt_backend *be, void *dst, lt_dtype dt, const float *src, size_t n, lt_err *err);
    /* backend buffer of dtype `dt` -> host f32, n elements */
    lt_status (*download_f32)(lt_backend *be, float *dst, const void *src, lt_dtype dt, size_t n, lt_err *err);
    /* raw byte copies (ids, masks) */
    lt_status (*upload)(lt_backend *be, void *dst, const void *src, size_t bytes, lt_err *err);
    lt_status (*download)(lt_backend *be, void *dst, const void *src, size_t bytes, lt_err *err);
    void (*zero)(lt_backend *be, void *dst, size_t bytes);
    /* wait for queued work; returns the first recorded op failure */
    lt_status (*sync)(lt_backend *be, lt_err *err);
    void (*destroy)(lt_backend *be);
    /* Backend-specific settings by name (e.g. CUDA's kernel versions); NULL
     * if the backend has none. Called through lt_backend_set_option, which
     * documents the contract. */
    lt_status (*set_option)(lt_backend *be, const char *key, const char *value, lt_err *err);

    /* ---- ops ---- */

    /* out[n, :] = table[ids[n], :]          out (N, C) act, table (V, C) param */
    void (*embedding_fwd)(lt_backend *be, void *out, const void *table, const int32_t *ids, int N, int C);
    /* dtable[ids[n], :] += dout[n, :]       dtable (V, C) f32, deterministic order */
    void (*embedding_bwd)(lt_backend *be, float *dtable, const void *dout, const int32_t *ids, int N, int C);

    /* out = x @ w^T (+ bias)   out (M, Nout) act, x (M, K) act, w (Nout, K) param, bias (Nout) param or NULL */
    void (*matmul_fwd)(lt_backend *be, void *out, const void *x, const void *w, const void *bias, int M, int K,
                       int Nout);
    /* dx (=, or += if acc_dx) dout @ w        (M, K) act, may be NULL
     * dw += dout^T @ x                        (Nout, K) f32, may be NULL
     * dbias += sum over rows of dout          (Nout) f32, may be NULL */
    void (*matmul_bwd)(lt_backend *be, void *dx, int acc_dx, float *dw, float *dbias, const void *dout,
                       const void *x, const void *w, int M, int K, int Nout);

    /* rstd[r] = 1/sqrt(mean(x[r,:]^2) + eps); out[r,c] = x[r,c] * rstd[r] * w[c]
     * out, x (R, C) act; w (C) param; rstd (R) f32. Used for the layer norms
     * (R = N, C = hidden) and for qwen3's per-head q/k norm (R = N*H, C = D). */
    void (*rmsnorm_fwd)(lt_backend *be, void *out, float *rstd, const void *x, const void *w, int R, int C,
                        float eps);
    /* dx (=, or += if acc_dx) (R, C) act; dw += (C) f32 */
    void (*rmsnorm_bwd)(lt_backend *be, void *dx, int acc_dx, float *dw, const void *dout, const void *x,
                        const void *w, const float *rstd, int R, int C);

    /* Rotary embedding in place, Hugging Face "rotate_half" layout over the
     * first R dims of each head (partial rotary; R = D for most models): for
     * i < R/2 the pair (x[i], x[i + R/2]) is rotated by angle pos[n]*inv_freq[i]
     * and multiplied by `scale` (LongRoPE's attention factor, transformers'
     * attention_scaling on cos and sin; 1 otherwise); dims R..D-1 pass
     * through. x (N, H, D) act; pos (N) i32; inv_freq (R/2) f32 (llama3 /
     * LongRoPE scaling already folded in); R even, 2 <= R <= D. The angle is
     * the fp32 product (float)pos[n] * inv_freq[i], as transformers computes
     * it (this matters at large positions), and cos, sin are scaled in fp32.
     * rope_bwd applies the transposed map to the gradient (the inverse
     * rotation, times scale). */
    void (*rope_fwd)(lt_backend *be, void *x, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                     float scale);
    void (*rope_bwd)(lt_backend *be, void *dx, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                     float scale);

    /* Causal, document-separated, grouped-query attention.
     * q (N, Hq, D), k, v (N, Hkv, D), out (N, Hq, D) act; Hq % Hkv == 0, query
     * head h reads kv head h / (Hq/Hkv). lse (B, Hq, T) f32 = log-sum-exp of the
     * scaled scores of each query row, saved for the backward. */
    void (*attention_fwd)(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                          const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale);
    /* dq (N, Hq, D), dk, dv (N, Hkv, D) act, written (=). */
    void (*attention_bwd)(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                          const void *k, const void *v, const void *out, const float *lse,
                          const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale);

    /* out = silu(gate) * up, n elements (act) */
    void (*swiglu_fwd)(lt_backend *be, void *out, const void *gate, const void *up, size_t n);
    void (*swiglu_bwd)(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate, const void *up,
                       size_t n);

    /* out = a + b, n elements (act); out may alias a or b */
    void (*add)(lt_backend *be, void *out, const void *a, const void *b, size_t n);

    /* Cross-entropy over the vocabulary, fused with its gradient.
     * logits (N, V) act; targets (N) i32, < 0 means "not a target".
     * loss[n] = -log softmax(logits[n])[targets[n]] (0 for non-targets), f32.
     * If dlogits != NULL: dlogits[n] = grad_scale * (softmax(logits[n]) - onehot)
     * for targets, 0 for non-targets (act, may alias logits). */
    void (*cross_entropy)(lt_backend *be, float *loss, void *dlogits, const void *logits, const int32_t *targets,
                          int N, int V, float grad_scale);

    /* ---- LoRA linear: out = x @ w^T (+ bias) + scale * (x_lora @ A^T) @ B^T ----
     * x (M, K) act; x_lora (M, K) act = x, or x after adapter dropout;
     * w (Nout, K) param (frozen); A (r, K) f32; B (Nout, r) f32 (trainable);
     * xa (M, r) f32 receives x_lora @ A^T (saved for the backward). */
    void (*lora_fwd)(lt_backend *be, void *out, float *xa, const void *x, const void *x_lora, const void *w,
                     const void *bias, const float *A, const float *B, int M, int K, int Nout, int r, float scale);
    /* dx (=, or += if acc_dx) = dout @ w + scale * ((dout @ B) @ A) [the second
     * term is the gradient w.r.t. x_lora; with dropout the caller passes
     * dx_lora separately: if dx_lora != NULL it receives that term (=) and dx
     * gets only dout @ w]. dA += scale * (dout @ B)^T @ x_lora;
     * dB += scale * dout^T @ xa. No gradient for w. */
    void (*lora_bwd)(lt_backend *be, void *dx, int acc_dx, void *dx_lora, float *dA, float *dB, const void *dout,
                     const void *x_lora, const void *w, const float *A, const float *B, const float *xa, int M,
                     int K, int Nout, int r, float scale);

    /* ---- optimizer ---- */
    /* sum of x[i]^2 over n f32 values, accumulated in double in a fixed order
     * (deterministic); the result is returned to the host. */
    double (*sumsq)(lt_backend *be, const float *x, size_t n);
    /* One AdamW step over `count` tensors in one pass (see lt_adamw_tensor).
     * g = grad * grad_scale (the clipping factor); m = b1 m + (1-b1) g;
     * v = b2 v + (1-b2) g^2; mhat = m / (1-b1^step); vhat = v / (1-b2^step);
     * p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)   (torch.optim.AdamW).
     * step counts from 1. torch's order: p *= 1 - lr*wd first, then
     * p += (-lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps) with bc = 1 - b^step. */
    void (*adamw)(lt_backend *be, const struct lt_adamw_tensor *ts, int count, float lr, float beta1,
                  float beta2, float eps, int step, float grad_scale);

    /* ---- fused ops (added at the end so the slots above keep their place) ---- */

    /* Residual add fused with the RMSNorm that follows it:
     *   h = x + r                       (R, C) act: the new residual stream;
     *                                   h may alias x or r (in place)
     *   out = rmsnorm(h) * w, rstd      exactly rmsnorm_fwd(out, rstd, h, w):
     *                                   computed from h AS STORED (on CUDA h is
     *                                   rounded to bf16 once and the norm reads
     *                                   the rounded values; on the CPU h is f32
     *                                   and the result equals add + rmsnorm_fwd
     *                                   bitwise). out must not alias x, r or h.
     * x, r, h, out (R, C) act; w (C) param; rstd (R) f32.
     * Backward: no op of its own. With g_h = dL/dh from the later uses of the
     * residual stream, rmsnorm_bwd(dx = g_h, acc_dx = 1, dw, dout, h, w, rstd)
     * adds the norm's gradient onto g_h, which is then dL/dx = dL/dr. */
    void (*add_rmsnorm_fwd)(lt_backend *be, void *h, void *out, float *rstd, const void *x, const void *r,
                            const void *w, int R, int C, float eps);

    /* NEFTune noise on the input embeddings, in place (training steps only):
     *   x[n, c] += mag * lt_embed_noise_u(key, n * C + c)     x (N, C) act
     * The uniform draws are a counter-based hash of (key, element index), so
     * the CPU and CUDA backends add the very same values (the product mag * u
     * is one fp32 rounding, the sum is rounded to the act dtype once). No
     * backward op: the noise is additive, gradients pass through unchanged. */
    void (*embed_noise)(lt_backend *be, void *x, int N, int C, float mag, uint64_t key);

    /* ---- Gemma ops (added at the end so the slots above keep their place) ---- */

    /* RMSNorm with an offset on the weight (Gemma: w_off = 1, out = xhat * (1 + w),
     * in fp32, rounded once to the act dtype). With w_off = 0 these equal
     * rmsnorm_fwd / rmsnorm_bwd / add_rmsnorm_fwd bitwise (those are these
     * with w_off = 0). dw += sum_r dout * xhat, as without the offset. */
    void (*rmsnorm_off_fwd)(lt_backend *be, void *out, float *rstd, const void *x, const void *w, float w_off, int R,
                            int C, float eps);
    void (*rmsnorm_off_bwd)(lt_backend *be, void *dx, int acc_dx, float *dw, const void *dout, const void *x,
                            const void *w, float w_off, const float *rstd, int R, int C);
    void (*add_rmsnorm_off_fwd)(lt_backend *be, void *h, void *out, float *rstd, const void *x, const void *r,
                                const void *w, float w_off, int R, int C, float eps);

    /* GeGLU with the tanh GELU (transformers' gelu_pytorch_tanh):
     *   gelu(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)));  out = gelu(gate) * up
     * n elements (act); the backward as swiglu_bwd (dgate may alias gate, dup up). */
    void (*geglu_fwd)(lt_backend *be, void *out, const void *gate, const void *up, size_t n);
    void (*geglu_bwd)(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate, const void *up,
                      size_t n);

    /* attention_fwd / attention_bwd with soft-capped scores (Gemma 2): the
     * score of key j is softcap * tanh(scale * q.k / softcap) (softcap > 0;
     * softcap = 0: no cap, exactly attention_fwd / attention_bwd). lse is of
     * the capped scores; the backward multiplies dS by 1 - tanh^2.
     * Sliding windows need no op of their own: doc_start is the first key
     * each query sees, so the model passes max(doc_start, t - W + 1), which
     * keeps the backward's order contract (never decreasing along t). */
    void (*attention_cap_fwd)(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                              const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale,
                              float softcap);
    void (*attention_cap_bwd)(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                              const void *k, const void *v, const void *out, const float *lse,
                              const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale,
                              float softcap);

    /* cross_entropy on soft-capped logits z = softcap * tanh(logits / softcap)
     * (Gemma 2's final_logit_softcapping; softcap = 0: exactly cross_entropy):
     * loss from z; dlogits = grad_scale * (softmax(z) - onehot) * (1 - (z/softcap)^2),
     * the gradient with respect to the raw logits (may alias logits). */
    void (*cross_entropy_cap)(lt_backend *be, float *loss, void *dlogits, const void *logits,
                              const int32_t *targets, int N, int V, float grad_scale, float softcap);

    /* x[i] *= s, n elements (act), in place: Gemma's embedding normalizer
     * (the caller rounds s to the act dtype, as transformers does), forward
     * and backward. */
    void (*scale)(lt_backend *be, void *x, size_t n, float s);

    /* ---- NF4 weights (QLoRA, `train --quantize nf4`) ----
     * wq: a frozen weight w (Nout, K) quantized to NF4 with double
     * quantization, one buffer in backend memory laid out as core/lt_nf4.h
     * says (lt_nf4_layout_of(Nout * K); bitsandbytes' format and values).
     * Dequantized values are exact in fp32 (nf4[q] * absmax, lt_nf4.h) and
     * rounded once to the param dtype.
     * nf4_dequant: w (n elements, param) = dequantize(wq of n elements). */
    void (*nf4_dequant)(lt_backend *be, void *w, const void *wq, size_t n);
    /* out = x @ dequant(wq)^T (+ bias)      out (M, Nout) act, x (M, K) act,
     *                                       bias (Nout) param or NULL */
    void (*nf4_matmul_fwd)(lt_backend *be, void *out, const void *x, const void *wq, const void *bias, int M,
                           int K, int Nout);
    /* dx (=, or += if acc_dx) dout @ dequant(wq)   (M, K) act. The weight is
     * frozen: no weight gradient (a bias gradient, if any: matmul_bwd). */
    void (*nf4_matmul_bwd)(lt_backend *be, void *dx, int acc_dx, const void *dout, const void *wq, int M, int K,
                           int Nout);

    /* ---- device copies and the native stream (added at the end so the slots above keep their place) ---- */

    /* dst[0 .. bytes) = src[0 .. bytes), both backend memory, queued in order
     * with the ops (CPU: memcpy; CUDA: cudaMemcpyAsync device to device on
     * the backend's stream, no host synchronisation). The ranges must not
     * overlap; bytes = 0 does nothing. ZeRO-3 copies a rank's part of a
     * weight into the gather buffer with it (train/lt_trainer.c). */
    void (*copy)(lt_backend *be, void *dst, const void *src, size_t bytes);
    /* The stream every op of the backend is queued on, for a library that
     * queues work behind it (the NCCL communicator's set_stream,
     * train/lt_comm.h): CUDA: its cudaStream_t; NULL where there is none
     * (CPU). Valid until be->destroy. */
    void *(*native_stream)(lt_backend *be);

    /* ---- batched sum of squares (added at the end so the slots above keep their place) ---- */

    /* x (n f32 values) cut into units of `unit` elements, the last one
     * shorter when unit does not divide n: for each of the ceil(n / unit)
     * units k, out[k] = sumsq(be, x + k unit, min(unit, n - k unit)), the
     * very same double (bits) as that per-unit call on this backend. out is
     * HOST memory; the values are there when the op returns, after ONE host
     * synchronisation for all units (CUDA: one kernel, one download), where
     * per-unit sumsq calls synchronise once each. n = 0 writes nothing;
     * unit = 0 is refused (be->sync reports it). On a failure every out[k]
     * is NaN. The data-parallel gradient norm (train/lt_optim.c) uses it. */
    void (*sumsq_units)(lt_backend *be, const float *x, size_t n, size_t unit, double *out);
};

/* Soft-capping, cap * tanh(x / cap), in fp32 (the order transformers
 * computes it in); the one host definition (final logits of score/generate). */
static inline float lt_softcap(float x, float cap) { return cap * tanhf(x / cap); }

/* The uniform draw of embed_noise: u in (-1, 1), symmetric about 0, of
 * element `idx` of the stream `key`: k = the top 24 bits of the splitmix64
 * finalizer of key + (idx + 1) * golden, u = (2k + 1 - 2^24) / 2^24 (exact
 * in fp32; mean 0 and variance 1/3 up to 2^-48 over all k). Host and device
 * code share this one definition. */
#ifdef __CUDACC__
#define LT_NOISE_FN __host__ __device__ static inline
#else
#define LT_NOISE_FN static inline
#endif
LT_NOISE_FN float lt_embed_noise_u(uint64_t key, uint64_t idx) {
    uint64_t z = key + (idx + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    int32_t k = (int32_t)(z >> 40); /* 0 .. 2^24 - 1 */
    return (float)(2 * k + 1 - (1 << 24)) * (1.0f / 16777216.0f);
}
#undef LT_NOISE_FN

/* One tensor of an AdamW step (descriptor in host memory, buffers in backend
 * memory). master: f32 master weights when param is not f32 (CUDA full
 * fine-tuning), else NULL and `param` itself is f32 and updated. After the
 * update the backend writes param from master (rounding to param dtype). */
typedef struct lt_adamw_tensor {
    void *param;
    lt_dtype param_dtype;
    float *master;
    const float *grad;
    float *m, *v;
    size_t n;
    float weight_decay;
} lt_adamw_tensor;

/* The CPU backend (fp32 reference; OpenMP across rows/heads, BLAS matmuls).
 * threads <= 0: use the OpenMP default. */
lt_status lt_cpu_backend_create(int threads, lt_backend **out, lt_err *err);

/* ---- the backend registry ----
 * core knows only the CPU backend. Device backends live in libraries above
 * core (cuda/) and register here when the program starts: the lt_backends
 * library (lt_backends, cuda/lt_backends.c) links them and registers them (lt_backends_init), and
 * lt_train and the luxtrain binary link lt_backends. core never calls up into
 * a backend. */
typedef struct lt_backend_reg {
    const char *name; /* "cuda" */
    /* device: index of the device (0 = first); threads: CPU threads (<= 0:
     * default). LT_ERR_UNSUPPORTED when the backend cannot run here (no
     * device: the message says why). */
    lt_status (*create)(int device, int threads, lt_backend **out, lt_err *err);
} lt_backend_reg;

/* Add a backend (the struct must outlive the program, e.g. static). A second
 * registration of the same name is ignored; LT_ERR_NOMEM when the registry
 * is full. "cpu" is built in. */
lt_status lt_backend_register(const lt_backend_reg *reg, lt_err *err);
/* The registered backend of that name (or "cpu"), NULL if none. */
const lt_backend_reg *lt_backend_find(const char *name);
/* Number of registered backends ("cpu" included) and the i-th, in order of
 * registration ("cpu" first). */
int lt_backend_count(void);
const lt_backend_reg *lt_backend_get(int i);

/* "cpu" | "cuda" | ... (any registered name) | "auto" (the first registered
 * device backend that has a device, else cpu). An unknown name, or a known
 * one this build lacks ("cuda" in a build without CUDA), is an error that
 * lists what is registered. */
lt_status lt_backend_create(const char *name, int threads, lt_backend **out, lt_err *err);
/* The same, for device number `device` (multi-GPU ranks). */
lt_status lt_backend_create_device(const char *name, int device, int threads, lt_backend **out, lt_err *err);

/* Every op slot of the table is filled: a backend's create calls this last,
 * so a missing kernel is an error naming the op (LT_ERR_UNSUPPORTED), not a
 * crash at the first call. Also checks the memory slots. */
lt_status lt_backend_check_slots(const lt_backend *be, lt_err *err);
/* Number of slots checked and the name of the i-th (tests). */
int lt_backend_slot_count(void);
const char *lt_backend_slot_name(int i);

/* Change a backend setting by name, e.g. ("attn_version", "2") on CUDA.
 * Options a backend reads from the environment are set once at creation;
 * this overrides them for that backend. An option or value the backend does
 * not know is refused by name (LT_ERR_INVALID), never ignored. */
lt_status lt_backend_set_option(lt_backend *be, const char *key, const char *value, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
