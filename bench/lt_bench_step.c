/*
 * lt_bench_step.c -- `luxtrain bench step` (lt_bench_step.h) and the
 * `luxtrain bench` dispatcher.
 *
 * One configuration per run: a model shape with random weights
 * (lt_model_create), full fine-tuning or LoRA (all seven projections, alpha =
 * 2r), one micro-batch of B x T random tokens per optimizer step (each
 * sequence one document, every position a target), --recompute optional.
 * The trainer's step (lt_trainer_step: forward, loss, backward, global-norm
 * clipping, AdamW; f32 master weights for full fine-tuning on CUDA) is what
 * `luxtrain train` runs per step without a communicator. One warm-up step,
 * then --steps timed steps, each timed alone (wall clock around the call; it
 * returns after the backend's sync). tokens/s = B*T / median step time.
 *
 * Model FLOPs (PaLM convention, Chowdhery et al. 2022, appendix B; no
 * recomputation counted, so MFU is the same with and without --recompute):
 *   per token = 6 * P_mm  + 12 * L * Hq * D * T          full fine-tuning
 *             = 4 * P_mm + 6 * P_lora + 12 * L * Hq * D * T   LoRA
 *   P_mm = the weights of every matrix product a token goes through: the
 *   layers' q, k, v, o, gate, up, down projections and the lm_head (V x C,
 *   tied or not); the embedding lookup and the norms are not matmuls. The
 *   frozen weights of LoRA get no weight gradient (forward 2, input gradient
 *   2 FLOPs per weight); P_lora = the adapters' A and B. The attention term
 *   counts the full T x T score and value products (forward 4 L Hq D T,
 *   backward twice that), as PaLM does, though causal attention skips half.
 * MFU = model FLOPs per step / step time / peak, peak = a plain bf16 cuBLAS
 * GEMM 8192^3 (fp32 accumulate) timed in the same run on CUDA
 * (lt_cuda_bench_gemm), cblas_sgemm 1024^3 f32 on the CPU.
 *
 * Memory: CUDA: device memory in use (total - free, cudaMemGetInfo through
 * lt_cuda_bench_info_get) sampled after the backend, model, plan and
 * optimizer exist and after every step (the model plans every buffer
 * up front; the backend's scratch only grows); reported as the peak and as
 * the peak minus the use right after the backend was created (the context).
 * CPU: the process's peak resident set (getrusage).
 */
#define _POSIX_C_SOURCE 200809L
#include "lt_bench_step.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "lt_cuda_bench.h"
#include "lt_cli.h"
#include "lt_lora.h"
#include "lt_model.h"
#include "lt_model_spec.h"
#include "lt_trainer.h"

/* Llama-3.2-1B and Llama-3.1-8B as their config.json files have them */
static const char *const CFG_1B =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": 128256,"
    " \"hidden_size\": 2048, \"intermediate_size\": 8192, \"num_hidden_layers\": 16,"
    " \"num_attention_heads\": 32, \"num_key_value_heads\": 8, \"head_dim\": 64, \"hidden_act\": \"silu\","
    " \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, \"max_position_embeddings\": 131072,"
    " \"rope_scaling\": {\"factor\": 32.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
    " \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}, \"tie_word_embeddings\": true,"
    " \"bos_token_id\": 128000, \"eos_token_id\": 128001, \"torch_dtype\": \"bfloat16\"}";
static const char *const CFG_8B =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": 128256,"
    " \"hidden_size\": 4096, \"intermediate_size\": 14336, \"num_hidden_layers\": 32,"
    " \"num_attention_heads\": 32, \"num_key_value_heads\": 8, \"head_dim\": 128, \"hidden_act\": \"silu\","
    " \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, \"max_position_embeddings\": 131072,"
    " \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
    " \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}, \"tie_word_embeddings\": false,"
    " \"bos_token_id\": 128000, \"eos_token_id\": 128001, \"torch_dtype\": \"bfloat16\"}";

typedef struct opts {
    const char *device, *shape, *json;
    int lora_rank, T, B, steps, recompute, threads;
} opts;

typedef struct step_args {
    char *device, *shape, *json;
    long lora_rank, T, B, steps, threads;
    int recompute, help;
} step_args;

#define F(x) offsetof(step_args, x)
static const lt_optdef OPTS[] = {
    LT_OPT_ROW_DEVICE(step_args, device, "auto"),
    {.name = "shape", .k = LT_OPT_STR, .off = F(shape), .meta = "S",
     .help = "1b = Llama-3.2-1B, 8b = Llama-3.1-8B, sample = data/sample/model's config, or a folder / config.json "
             "(weights never read) [default: 1b on cuda, sample on cpu]"},
    {.name = "lora-rank", .k = LT_OPT_LONG, .off = F(lora_rank), .def = "0", .meta = "R", .lo = 0, .hi = 65536,
     .help = "LoRA rank on every projection; 0 = full fine-tuning"},
    {.name = "seq-len", .k = LT_OPT_LONG, .off = F(T), .meta = "T", .lo = 1, .hi = 1 << 20,
     .help = "tokens per sequence [default: cuda 2048 (8b: 4096), cpu 128]"},
    {.name = "micro-batch", .k = LT_OPT_LONG, .off = F(B), .meta = "B", .lo = 1, .hi = 1 << 16,
     .help = "sequences per step [default: cuda 4 (8b: 1), cpu 4]"},
    {.name = "steps", .k = LT_OPT_LONG, .off = F(steps), .meta = "N", .lo = 1, .hi = 100000,
     .help = "timed steps after one warm-up step [default: cuda 10, cpu 3]"},
    {.name = "recompute", .k = LT_OPT_FLAG, .off = F(recompute), .help = "activation recomputation"},
    LT_OPT_ROW_THREADS(step_args, threads),
    {.name = "json", .k = LT_OPT_STR, .off = F(json), .meta = "FILE", .help = "also write the results as JSON"},
};
static const lt_optset SET = {
    .cmd = "bench step",
    .usage = "usage: luxtrain bench step [options]\n"
             "Tokens/s, model FLOPs utilisation and peak memory of whole training steps (forward, backward,\n"
             "clip, AdamW) on random weights. Formulas and JSON schema: bench/README.md.\n",
    .defs = OPTS,
    .n = sizeof OPTS / sizeof OPTS[0],
    .off_help = F(help),
};
#undef F

/* the sample model's folder: $LT_SOURCE_DIR/data/sample/model, else the
 * source tree this file was built from, else ./data/sample/model */
static void sample_dir(char *out, size_t cap) {
    const char *src = getenv("LT_SOURCE_DIR");
    if (src && *src) {
        snprintf(out, cap, "%s/data/sample/model", src);
        if (lt_is_dir(out)) return;
    }
    const char *f = __FILE__, *slash = strrchr(f, '/');
    if (slash) {
        snprintf(out, cap, "%.*s/../data/sample/model", (int)(slash - f), f);
        if (lt_is_dir(out)) return;
    }
    snprintf(out, cap, "data/sample/model");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------ peak */

#ifdef LT_HAVE_CUDA
typedef struct {
    lt_backend *be;
    int n;
    void *A, *B, *C;
} peak_arg;
static void fn_peak(void *a) {
    peak_arg *p = a;
    lt_cuda_bench_gemm(p->be, 0, 1, p->n, p->n, p->n, p->A, p->B, p->C, LT_BF16, 0.f);
}
#endif

/* Peak TFLOP/s of a plain GEMM on this backend (median of timed calls). */
static lt_status measure_peak(lt_backend *be, int cuda, double *tflops, char *what, size_t cap, lt_err *err) {
    *tflops = 0;
#ifdef LT_HAVE_CUDA
    if (cuda) {
        int n = 8192, reps = 12;
        size_t nn = (size_t)n * n;
        peak_arg p = {be, n, NULL, NULL, NULL};
        float ms[12];
        lt_status st;
        if ((st = be->alloc(be, nn * 2, &p.A, err)) || (st = be->alloc(be, nn * 2, &p.B, err)) ||
            (st = be->alloc(be, nn * 2, &p.C, err)) || (st = lt_cuda_bench_fill(be, p.A, LT_BF16, nn, 12, 1.f, err)) ||
            (st = lt_cuda_bench_fill(be, p.B, LT_BF16, nn, 13, 1.f, err)) ||
            (st = lt_cuda_bench_time(be, fn_peak, &p, reps, NULL, 0, ms, err))) {
            if (p.A) be->free(be, p.A);
            if (p.B) be->free(be, p.B);
            if (p.C) be->free(be, p.C);
            return lt_wrap(err, st, "peak GEMM");
        }
        be->free(be, p.A);
        be->free(be, p.B);
        be->free(be, p.C);
        double d[12];
        for (int i = 0; i < reps; i++) d[i] = ms[i];
        qsort(d + 2, (size_t)reps - 2, sizeof *d, cmp_double); /* the first two calls warm up */
        double med = d[2 + (reps - 2) / 2];
        *tflops = 2.0 * n * n * (double)n / (med * 1e-3) * 1e-12;
        snprintf(what, cap, "cublasGemmEx %dx%dx%d bf16 (fp32 accumulate), median of %d", n, n, n, reps - 2);
        return LT_OK;
    }
#endif
    (void)be;
    (void)cuda;
    int n = 1024, reps = 7;
    size_t nn = (size_t)n * n;
    float *A = malloc(nn * sizeof *A), *B = malloc(nn * sizeof *B), *C = malloc(nn * sizeof *C);
    if (!A || !B || !C) {
        free(A);
        free(B);
        free(C);
        return lt_fail(err, LT_ERR_NOMEM, "peak GEMM: out of memory");
    }
    lt_rng r;
    lt_rng_seed(&r, 12);
    for (size_t i = 0; i < nn; i++) {
        A[i] = lt_rng_uniform(&r) - 0.5f;
        B[i] = lt_rng_uniform(&r) - 0.5f;
    }
    double d[7];
    for (int i = 0; i < reps; i++) {
        double t0 = lt_now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.f, A, n, B, n, 0.f, C, n);
        d[i] = lt_now_s() - t0;
    }
    free(A);
    free(B);
    free(C);
    qsort(d + 1, (size_t)reps - 1, sizeof *d, cmp_double);
    *tflops = 2.0 * n * n * (double)n / d[1 + (reps - 1) / 2] * 1e-12;
    snprintf(what, cap, "cblas_sgemm %dx%dx%d f32, median of %d", n, n, n, reps - 1);
    return LT_OK;
}

/* --------------------------------------------------------------- memory */

typedef struct mem {
    int cuda;
    double total, base, peak; /* bytes */
} mem;

static void mem_sample(mem *mm, lt_backend *be, int is_base) {
#ifdef LT_HAVE_CUDA
    if (mm->cuda) {
        lt_cuda_bench_info info;
        lt_err e;
        if (lt_cuda_bench_info_get(be, &info, &e) == LT_OK && info.mem_bytes) {
            double used = (double)info.mem_bytes - (double)info.mem_free_bytes;
            mm->total = (double)info.mem_bytes;
            if (is_base) mm->base = used;
            if (used > mm->peak) mm->peak = used;
        }
        return;
    }
#endif
    (void)be;
    (void)is_base;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    mm->peak = (double)ru.ru_maxrss * 1024.0;
}

/* ---------------------------------------------------------------- FLOPs */

typedef struct flops {
    double p_total, p_trainable, p_mm, p_lora, per_token_mm, per_token_attn, per_token;
} flops;

static void count_flops(const lt_config *c, lt_model *m, int lora, int T, flops *f) {
    memset(f, 0, sizeof *f);
    double C = c->hidden_size, ffn = c->intermediate_size, V = c->vocab_size, L = c->num_layers;
    double HqD = (double)c->num_heads * c->head_dim, HkvD = (double)c->num_kv_heads * c->head_dim;
    f->p_mm = L * (C * HqD * 2 + C * HkvD * 2 + 3 * C * ffn) + V * C; /* q, o; k, v; gate, up, down; head */
    for (size_t i = 0; i < lt_model_num_params(m); i++) {
        lt_param *p = lt_model_param(m, i);
        f->p_total += (double)p->numel;
        if (p->trainable) f->p_trainable += (double)p->numel;
        if (lt_trainer_is_lora_param(p->name)) f->p_lora += (double)p->numel;
    }
    f->per_token_mm = lora ? 4 * f->p_mm + 6 * f->p_lora : 6 * f->p_mm;
    f->per_token_attn = 12.0 * L * HqD * T;
    f->per_token = f->per_token_mm + f->per_token_attn;
}

/* ----------------------------------------------------------------- main */

static lt_status write_json(const char *path, cJSON *root, lt_err *err) {
    char *s = cJSON_Print(root);
    if (!s) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory for the JSON", path);
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (t) {
        s = t;
        s[n++] = '\n';
        s[n] = 0;
    }
    lt_status st = lt_write_file_atomic(path, s, n, err);
    cJSON_free(s);
    return st;
}

static int step_run(opts o) {
    int rc;
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_trainer *tr = NULL;
    int32_t *tok = NULL, *tg = NULL, *pos = NULL, *doc = NULL;
    double *times = NULL;
    cJSON *root = NULL;
    rc = 1;
    if (lt_backend_create(o.device, o.threads, &be, &err)) goto fail;
    int cuda = !strcmp(be->name, "cuda");
    mem mm = {cuda, 0, 0, 0};
    mem_sample(&mm, be, 1);
    if (!o.shape) o.shape = cuda ? "1b" : "sample";
    int is8b = !strcmp(o.shape, "8b");
    if (o.T <= 0) o.T = cuda ? (is8b ? 4096 : 2048) : 128;
    if (o.B <= 0) o.B = cuda ? (is8b ? 1 : 4) : 4;
    if (o.steps <= 0) o.steps = cuda ? 10 : 3;

    /* config */
    lt_config cfg;
    char dir[4096];
    const char *shape_name = o.shape;
    if (!strcmp(o.shape, "1b")) {
        shape_name = "llama-3.2-1b";
        if (lt_config_parse(CFG_1B, "the Llama-3.2-1B shape", &cfg, &err)) goto fail;
    } else if (is8b) {
        shape_name = "llama-3.1-8b";
        if (lt_config_parse(CFG_8B, "the Llama-3.1-8B shape", &cfg, &err)) goto fail;
    } else {
        if (!strcmp(o.shape, "sample")) sample_dir(dir, sizeof dir);
        else snprintf(dir, sizeof dir, "%s", o.shape);
        if (lt_config_load(dir, &cfg, &err)) goto fail;
    }
    if (o.T > cfg.max_position_embeddings) {
        lt_fail(&err, LT_ERR_RANGE, "--seq-len %d exceeds the shape's max_position_embeddings %d", o.T,
                cfg.max_position_embeddings);
        goto fail;
    }

    /* peak first, while the device is empty */
    double peak = 0;
    char peak_what[128];
    if (measure_peak(be, cuda, &peak, peak_what, sizeof peak_what, &err)) goto fail;
    fprintf(stderr, "bench step: peak %s: %.2f TFLOP/s\n", peak_what, peak);

    double t0 = lt_now_s();
    if (lt_model_create(&cfg, be, 1234, &m, &err)) goto fail;
    double create_s = lt_now_s() - t0;
    lt_rng rng;
    lt_rng_seed(&rng, 1);
    int lora = o.lora_rank > 0;
    if (lora) {
        lt_peft_config pc = {o.lora_rank, 2.0 * o.lora_rank, 0.0, LT_LORA_ALL_TARGETS, 0, "", NULL};
        if (lt_trainer_add_lora(m, &pc, &rng, &err)) goto fail;
    }
    lt_model_set_recompute(m, o.recompute);
    lt_optim_cfg oc = {{LT_SCHED_CONSTANT, 1e-5, 0, 1000000, 0}, 0.9, 0.999, 1e-8, 0.01, 1.0};
    if (lt_model_plan(m, o.B, o.T, &err) || lt_trainer_create(m, &oc, 0, 0, &tr, &err)) goto fail;
    mem_sample(&mm, be, 0);

    size_t N = (size_t)o.B * o.T;
    tok = malloc(N * 4), tg = malloc(N * 4), pos = malloc(N * 4), doc = malloc(N * 4);
    times = malloc((size_t)o.steps * sizeof *times);
    if (!tok || !tg || !pos || !doc || !times) {
        lt_fail(&err, LT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t n = 0; n < N; n++) {
        tok[n] = (int32_t)(lt_rng_u64(&rng) % (uint64_t)cfg.vocab_size);
        tg[n] = (int32_t)(lt_rng_u64(&rng) % (uint64_t)cfg.vocab_size);
        pos[n] = (int32_t)(n % (size_t)o.T);
        doc[n] = 0;
    }
    lt_batch b = {o.B, o.T, tok, tg, pos, doc};
    lt_train_stats ts;
    t0 = lt_now_s();
    if (lt_trainer_step(tr, &b, 1, &ts, &err)) goto fail; /* warm-up */
    double warm_s = lt_now_s() - t0;
    mem_sample(&mm, be, 0);
    double loss0 = ts.loss;
    for (int i = 0; i < o.steps; i++) {
        t0 = lt_now_s();
        if (lt_trainer_step(tr, &b, 1, &ts, &err)) goto fail;
        times[i] = lt_now_s() - t0;
        mem_sample(&mm, be, 0);
    }
    double *sorted = malloc((size_t)o.steps * sizeof *sorted);
    if (!sorted) {
        lt_fail(&err, LT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    memcpy(sorted, times, (size_t)o.steps * sizeof *sorted);
    qsort(sorted, (size_t)o.steps, sizeof *sorted, cmp_double);
    double med = o.steps % 2 ? sorted[o.steps / 2] : 0.5 * (sorted[o.steps / 2 - 1] + sorted[o.steps / 2]);
    double tmin = sorted[0], tmax = sorted[o.steps - 1];
    free(sorted);
    flops f;
    count_flops(&cfg, m, lora, o.T, &f);
    double tps = (double)N / med, achieved = f.per_token * tps * 1e-12, mfu = peak > 0 ? 100.0 * achieved / peak : 0;
    char formula[256];
    snprintf(formula, sizeof formula, "%s + 12*L*Hq*D*T per token (PaLM convention, no recomputation)",
             lora ? "4*P_mm + 6*P_lora" : "6*P_mm");

    /* table */
    printf("luxtrain bench step: %s %s, %s, batch %d x %d%s, %d steps (+1 warm-up)\n", shape_name,
           lora ? "LoRA" : "full fine-tuning", be->name, o.B, o.T, o.recompute ? ", --recompute" : "", o.steps);
    printf("  parameters %.4g M (trainable %.4g M; in matmuls %.4g M), logits in chunks of %d rows\n",
           f.p_total / 1e6, f.p_trainable / 1e6, f.p_mm / 1e6, lt_model_logits_chunk(m));
    printf("  %-12s %10s %10s %10s %12s %12s %8s %10s %8s\n", "mode", "step ms", "min ms", "max ms", "tokens/s",
           "TFLOP/s", "MFU %", "peak GB", "loss");
    printf("  %-12s %10.1f %10.1f %10.1f %12.0f %12.3f %8.1f %10.2f %8.4f\n", lora ? "lora" : "full", med * 1e3,
           tmin * 1e3, tmax * 1e3, tps, achieved, mfu, mm.peak / 1e9, ts.loss);
    printf("  model FLOPs/token %.4g = %s; peak %.2f TFLOP/s (%s)\n", f.per_token, formula, peak, peak_what);
    if (cuda)
        printf("  memory: device in use at peak %.2f GB of %.2f GB (cudaMemGetInfo, sampled per step), %.2f GB "
               "above the backend's start\n",
               mm.peak / 1e9, mm.total / 1e9, (mm.peak - mm.base) / 1e9);
    else
        printf("  memory: peak RSS %.2f GB\n", mm.peak / 1e9);
    printf("  model creation %.1f s, warm-up step %.1f s, first loss %.4f\n", create_s, warm_s, loss0);

    if (o.json) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "schema", "luxtrain-bench-step/1");
        char date[32];
        time_t now = time(NULL);
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        cJSON_AddStringToObject(root, "date", date);
        cJSON *dv = cJSON_AddObjectToObject(root, "device");
        cJSON_AddStringToObject(dv, "backend", be->name);
        cJSON_AddStringToObject(dv, "act_dtype", lt_dtype_name(be->act_dtype));
#ifdef LT_HAVE_CUDA
        if (cuda) {
            lt_cuda_bench_info info;
            if (lt_cuda_bench_info_get(be, &info, &err) == LT_OK) {
                cJSON_AddStringToObject(dv, "name", info.name);
                char cc[16];
                snprintf(cc, sizeof cc, "%d.%d", info.cc_major, info.cc_minor);
                cJSON_AddStringToObject(dv, "compute_capability", cc);
                cJSON_AddNumberToObject(dv, "memory_bytes", (double)info.mem_bytes);
            }
        }
#endif
        cJSON_AddNumberToObject(dv, "threads", o.threads);
        cJSON *pk = cJSON_AddObjectToObject(root, "peak");
        cJSON_AddNumberToObject(pk, "gemm_tflops", peak);
        cJSON_AddStringToObject(pk, "gemm", peak_what);
        cJSON *cf = cJSON_AddObjectToObject(root, "config");
        cJSON_AddStringToObject(cf, "shape", shape_name);
        cJSON_AddStringToObject(cf, "mode", lora ? "lora" : "full");
        cJSON_AddNumberToObject(cf, "lora_rank", o.lora_rank);
        cJSON_AddNumberToObject(cf, "lora_alpha", 2.0 * o.lora_rank);
        cJSON_AddNumberToObject(cf, "micro_batch", o.B);
        cJSON_AddNumberToObject(cf, "seq_len", o.T);
        cJSON_AddBoolToObject(cf, "recompute", o.recompute);
        cJSON_AddNumberToObject(cf, "steps", o.steps);
        cJSON_AddNumberToObject(cf, "logits_chunk_rows", lt_model_logits_chunk(m));
        cJSON *md = cJSON_AddObjectToObject(cf, "model");
        cJSON_AddStringToObject(md, "arch", lt_arch_name(cfg.arch));
        cJSON_AddNumberToObject(md, "layers", cfg.num_layers);
        cJSON_AddNumberToObject(md, "hidden", cfg.hidden_size);
        cJSON_AddNumberToObject(md, "ffn", cfg.intermediate_size);
        cJSON_AddNumberToObject(md, "heads", cfg.num_heads);
        cJSON_AddNumberToObject(md, "kv_heads", cfg.num_kv_heads);
        cJSON_AddNumberToObject(md, "head_dim", cfg.head_dim);
        cJSON_AddNumberToObject(md, "vocab", cfg.vocab_size);
        cJSON_AddBoolToObject(md, "tied", cfg.tie_word_embeddings);
        cJSON *pa = cJSON_AddObjectToObject(root, "params");
        cJSON_AddNumberToObject(pa, "total", f.p_total);
        cJSON_AddNumberToObject(pa, "trainable", f.p_trainable);
        cJSON_AddNumberToObject(pa, "matmul", f.p_mm);
        cJSON_AddNumberToObject(pa, "lora", f.p_lora);
        cJSON *fl = cJSON_AddObjectToObject(root, "flops");
        cJSON_AddNumberToObject(fl, "per_token", f.per_token);
        cJSON_AddNumberToObject(fl, "per_token_matmul", f.per_token_mm);
        cJSON_AddNumberToObject(fl, "per_token_attention", f.per_token_attn);
        cJSON_AddNumberToObject(fl, "per_step", f.per_token * (double)N);
        cJSON_AddStringToObject(fl, "formula", formula);
        cJSON *rs = cJSON_AddObjectToObject(root, "result");
        cJSON_AddNumberToObject(rs, "step_ms", med * 1e3);
        cJSON_AddNumberToObject(rs, "step_ms_min", tmin * 1e3);
        cJSON_AddNumberToObject(rs, "step_ms_max", tmax * 1e3);
        cJSON *arr = cJSON_AddArrayToObject(rs, "step_ms_all");
        for (int i = 0; i < o.steps; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(times[i] * 1e3));
        cJSON_AddNumberToObject(rs, "tokens_per_step", (double)N);
        cJSON_AddNumberToObject(rs, "tokens_per_s", tps);
        cJSON_AddNumberToObject(rs, "tflops", achieved);
        cJSON_AddNumberToObject(rs, "mfu_pct", mfu);
        cJSON_AddNumberToObject(rs, "loss_first", loss0);
        cJSON_AddNumberToObject(rs, "loss_last", ts.loss);
        cJSON_AddNumberToObject(rs, "grad_norm_last", ts.grad_norm);
        cJSON_AddNumberToObject(rs, "warmup_s", warm_s);
        cJSON_AddNumberToObject(rs, "model_create_s", create_s);
        cJSON *me = cJSON_AddObjectToObject(root, "memory");
        cJSON_AddStringToObject(me, "method", cuda ? "cudaMemGetInfo total - free, sampled after setup and every step"
                                                   : "getrusage peak RSS");
        cJSON_AddNumberToObject(me, "peak_bytes", mm.peak);
        if (cuda) {
            cJSON_AddNumberToObject(me, "device_bytes", mm.total);
            cJSON_AddNumberToObject(me, "backend_start_bytes", mm.base);
            cJSON_AddNumberToObject(me, "peak_above_start_bytes", mm.peak - mm.base);
        }
        if (write_json(o.json, root, &err)) goto fail;
        fprintf(stderr, "bench step: wrote %s\n", o.json);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench step: %s\n", err.msg);
done:
    cJSON_Delete(root);
    free(tok);
    free(tg);
    free(pos);
    free(doc);
    free(times);
    lt_trainer_free(tr);
    lt_model_free(m);
    if (be) be->destroy(be);
    return rc;
}

/* ---------------------------------------------------------------------- */

static int step_main_run(void *arg) {
    const step_args *a = arg;
    opts o = {a->device, a->shape, a->json, (int)a->lora_rank, (int)a->T, (int)a->B, (int)a->steps, a->recompute,
              (int)a->threads};
    return step_run(o);
}

int lt_bench_step_main(int argc, char **argv) {
    step_args a = {0};
    return lt_opts_main(&SET, argc, argv, &a, step_main_run);
}

int lt_cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: luxtrain bench kernels [options]   microbenchmarks of every op (--help for options)\n"
                   "       luxtrain bench step [options]      tokens/s, MFU and peak memory of whole training steps\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "step")) return lt_bench_step_main(argc - 1, argv + 1);
    fprintf(stderr, "luxtrain bench: unknown benchmark '%s' (expected kernels or step)\n", argv[1]);
    return 2;
}
