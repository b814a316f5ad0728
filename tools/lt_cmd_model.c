/*
 * lt_cmd_model.c -- `luxtrain inspect MODEL_DIR [--json]` and
 * `luxtrain score --model DIR --ids 5,17,3 [--logits FILE.npy]
 *  [--device cpu|cuda|auto] [--threads N]`.
 *
 * inspect reads config.json and the safetensors headers only (no weights are
 * loaded) and checks every tensor the architecture needs against the config.
 * score runs one forward pass and prints one JSON line: the log-probability of
 * each token after the first given the tokens before it, their sum and mean.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_cli.h"
#include "lt_eval_adapter.h"
#include "lt_model.h"
#include "lt_model_spec.h"
#include "lt_safetensors.h"

/* ---------------------------------------------------------------------- */
/* inspect                                                                 */


static const char *human(double n, char *buf, size_t cap) {
    if (n >= 1e9)
        snprintf(buf, cap, "%.2f B", n / 1e9);
    else if (n >= 1e6)
        snprintf(buf, cap, "%.2f M", n / 1e6);
    else if (n >= 1e3)
        snprintf(buf, cap, "%.1f K", n / 1e3);
    else
        snprintf(buf, cap, "%.0f", n);
    return buf;
}

int lt_inspect_model(const char *dir, int json) {
    if (!lt_is_dir(dir)) {
        fprintf(stderr, "inspect: '%s' is not a model folder (no such directory)\n", dir);
        return 1;
    }
    lt_err err = {{0}};
    lt_config cfg;
    lt_st_model *stm = NULL;
    lt_param_spec *specs = NULL;
    size_t n = 0;
    if (lt_config_load(dir, &cfg, &err) || lt_model_param_specs(&cfg, &specs, &n, &err) ||
        lt_st_open_model(dir, &stm, &err) || lt_model_check_tensors(stm, specs, n, cfg.tie_word_embeddings, &err)) {
        fprintf(stderr, "inspect: %s\n", err.msg);
        free(specs);
        if (stm) lt_st_close_model(stm);
        return 1;
    }
    size_t nparams = 0;
    for (size_t i = 0; i < n; i++) nparams += (size_t)specs[i].shape[0] * (specs[i].ndim > 1 ? (size_t)specs[i].shape[1] : 1);
    int dt_count[LT_DTYPE_COUNT] = {0};
    size_t nbytes = 0;
    for (size_t i = 0; i < n; i++) {
        const lt_st_tensor *t = lt_st_model_find(stm, specs[i].name);
        dt_count[t->dtype]++;
        nbytes += t->nbytes;
    }
    size_t ntensors = lt_st_model_count(stm);
    lt_st_close_model(stm);
    free(specs);

    if (json) {
        cJSON *o = cJSON_CreateObject(), *dts = cJSON_CreateArray();
        cJSON_AddStringToObject(o, "path", dir);
        cJSON_AddStringToObject(o, "architecture", cfg.architecture);
        cJSON_AddStringToObject(o, "model_type", cfg.model_type);
        cJSON_AddNumberToObject(o, "num_parameters", (double)nparams);
        cJSON_AddNumberToObject(o, "num_layers", cfg.num_layers);
        cJSON_AddNumberToObject(o, "hidden_size", cfg.hidden_size);
        cJSON_AddNumberToObject(o, "intermediate_size", cfg.intermediate_size);
        cJSON_AddNumberToObject(o, "num_heads", cfg.num_heads);
        cJSON_AddNumberToObject(o, "num_kv_heads", cfg.num_kv_heads);
        cJSON_AddNumberToObject(o, "head_dim", cfg.head_dim);
        cJSON_AddNumberToObject(o, "vocab_size", cfg.vocab_size);
        cJSON_AddNumberToObject(o, "max_position_embeddings", cfg.max_position_embeddings);
        cJSON_AddBoolToObject(o, "tied_embeddings", cfg.tie_word_embeddings);
        cJSON_AddBoolToObject(o, "qkv_bias", cfg.qkv_bias);
        cJSON_AddBoolToObject(o, "qk_norm", cfg.qk_norm);
        char eps[32]; /* the float as written in config.json, not its binary expansion */
        snprintf(eps, sizeof eps, "%.7g", cfg.rms_norm_eps);
        cJSON_AddNumberToObject(o, "rms_norm_eps", strtod(eps, NULL));
        cJSON_AddNumberToObject(o, "rope_theta", cfg.rope_theta);
        if (cfg.rope_scaling_type == 1) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "rope_type", "llama3");
            cJSON_AddNumberToObject(r, "factor", cfg.rope_factor);
            cJSON_AddNumberToObject(r, "low_freq_factor", cfg.rope_low_freq_factor);
            cJSON_AddNumberToObject(r, "high_freq_factor", cfg.rope_high_freq_factor);
            cJSON_AddNumberToObject(r, "original_max_position_embeddings", cfg.rope_original_max_pos);
            cJSON_AddItemToObject(o, "rope_scaling", r);
        } else if (cfg.rope_scaling_type == LT_ROPE_LONGROPE) { /* phi3 */
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "rope_type", "longrope");
            cJSON_AddNumberToObject(r, "factor", cfg.rope_factor);
            cJSON_AddNumberToObject(r, "attention_factor", cfg.rope_attention_factor);
            cJSON_AddNumberToObject(r, "original_max_position_embeddings", cfg.rope_original_max_pos);
            cJSON_AddItemToObject(o, "rope_scaling", r);
        } else {
            cJSON_AddNullToObject(o, "rope_scaling");
        }
        cJSON_AddNumberToObject(o, "rotary_dim", lt_config_rotary_dim(&cfg));
        if (cfg.sliding_window > 0)
            cJSON_AddNumberToObject(o, "sliding_window", cfg.sliding_window);
        else
            cJSON_AddNullToObject(o, "sliding_window");
        for (int d = 0; d < LT_DTYPE_COUNT; d++)
            if (dt_count[d]) cJSON_AddItemToArray(dts, cJSON_CreateString(lt_dtype_name((lt_dtype)d)));
        cJSON_AddItemToObject(o, "dtypes", dts);
        cJSON_AddNumberToObject(o, "num_tensors", (double)ntensors);
        cJSON_AddNumberToObject(o, "weight_bytes", (double)nbytes);
        char *s = cJSON_PrintUnformatted(o);
        printf("%s\n", s ? s : "{}");
        cJSON_free(s);
        cJSON_Delete(o);
        return 0;
    }
    char hb[32];
    printf("model:          %s\n", dir);
    printf("architecture:   %s (%s)\n", cfg.architecture, cfg.model_type);
    printf("layers:         %d\n", cfg.num_layers);
    printf("hidden size:    %d\n", cfg.hidden_size);
    printf("heads:          %d query, %d key/value (head_dim %d)%s\n", cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
           cfg.qk_norm ? ", q/k norm" : "");
    printf("intermediate:   %d\n", cfg.intermediate_size);
    printf("vocab size:     %d\n", cfg.vocab_size);
    printf("parameters:     %zu (%s)\n", nparams, human((double)nparams, hb, sizeof hb));
    printf("embeddings:     %s\n", cfg.tie_word_embeddings ? "tied (lm_head = embed_tokens)" : "untied");
    printf("biases:         %s%s%s%s\n", cfg.qkv_bias ? "q/k/v " : "", cfg.o_bias ? "o " : "",
           cfg.mlp_bias ? "mlp " : "", cfg.qkv_bias || cfg.o_bias || cfg.mlp_bias ? "" : "none");
    if (cfg.rope_scaling_type == 1)
        printf("rope:           theta %g, llama3 scaling (factor %g, low_freq_factor %g, high_freq_factor %g, "
               "original_max_position_embeddings %d)\n",
               cfg.rope_theta, cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor,
               cfg.rope_original_max_pos);
    else if (cfg.rope_scaling_type == LT_ROPE_LONGROPE)
        printf("rope:           theta %g, longrope (factor %g, attention factor %.6g, long factors past "
               "original_max_position_embeddings %d)\n",
               cfg.rope_theta, cfg.rope_factor, cfg.rope_attention_factor, cfg.rope_original_max_pos);
    else
        printf("rope:           theta %g, no scaling\n", cfg.rope_theta);
    if (lt_config_rotary_dim(&cfg) < cfg.head_dim)
        printf("rotary dims:    %d of %d (partial_rotary_factor)\n", lt_config_rotary_dim(&cfg), cfg.head_dim);
    printf("max positions:  %d\n", cfg.max_position_embeddings);
    if (cfg.sliding_window > 0) printf("sliding window: %d\n", cfg.sliding_window);
    printf("rms_norm_eps:   %g\n", cfg.rms_norm_eps);
    printf("stored dtypes: ");
    for (int d = 0; d < LT_DTYPE_COUNT; d++)
        if (dt_count[d]) printf(" %s (%d tensors)", lt_dtype_name((lt_dtype)d), dt_count[d]);
    printf("\ntensors:        %zu, %s bytes of weights\n", ntensors, human((double)nbytes, hb, sizeof hb));
    return 0;
}

/* ---------------------------------------------------------------------- */
/* score                                                                   */

typedef struct {
    char *model, *ids, *logits, *device, *adapter, *quantize;
    long threads;
    int help;
} score_opts;

#define F(x) offsetof(score_opts, x)
static const lt_optdef SCORE_OPTS[] = {
    {.name = "model", .k = LT_OPT_STR, .off = F(model), .meta = "DIR", .required = 1, .help = "model folder"},
    {.name = "ids", .k = LT_OPT_STR, .off = F(ids), .meta = "ID,ID,...", .required = 1, .help = "the token ids"},
    {.name = "logits", .k = LT_OPT_STR, .off = F(logits), .meta = "FILE.npy",
     .help = "also write the logits, (tokens x vocab) float32"},
    {.name = "adapter", .k = LT_OPT_STR, .off = F(adapter), .meta = "DIR",
     .help = "PEFT LoRA adapter (merged into the weights; unmerged with --quantize nf4)"},
    LT_EVAL_QUANTIZE_ROW(score_opts, quantize),
    LT_OPT_ROW_DEVICE(score_opts, device, "cpu"),
    LT_OPT_ROW_THREADS(score_opts, threads),
};
static const lt_optset SCORE_SET = {
    .cmd = "score",
    .usage = "usage: luxtrain score --model DIR --ids ID,ID,... [--logits FILE.npy] [options]\n"
             "Prints one JSON line with the log-probability of each token after the first given\n"
             "the tokens before it, their sum and mean.\n",
    .defs = SCORE_OPTS,
    .n = sizeof SCORE_OPTS / sizeof SCORE_OPTS[0],
    .off_help = F(help),
};
#undef F

/* Parse "5,17,3" into a malloc'd array; errors name the offending item. */
static int parse_ids(const char *s, int32_t **out, int *n) {
    int cap = 16, k = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) return 0;
    const char *p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[32];
        if (len == 0 || len >= sizeof item) {
            fprintf(stderr, "score: --ids expects comma-separated token ids, got an %s item in '%s'\n",
                    len ? "overlong" : "empty", s);
            free(ids);
            return 0;
        }
        memcpy(item, p, len);
        item[len] = 0;
        char *e = NULL;
        errno = 0;
        long v = strtol(item, &e, 10);
        if (item[0] < '0' || item[0] > '9' || *e || errno || v < 0 || v > INT32_MAX) { /* no sign, no blanks */
            fprintf(stderr, "score: --ids: '%s' is not a token id (a non-negative integer)\n", item);
            free(ids);
            return 0;
        }
        if (k == cap) {
            cap *= 2;
            int32_t *r = realloc(ids, (size_t)cap * sizeof *ids);
            if (!r) {
                free(ids);
                return 0;
            }
            ids = r;
        }
        ids[k++] = (int32_t)v;
        if (!end) break;
        p = end + 1;
    }
    *out = ids;
    *n = k;
    return 1;
}

/* NumPy .npy v1.0: magic, version, header length (u16 LE), a Python dict
 * literal padded with spaces to a multiple of 64 bytes and ended by '\n'. */
static lt_status write_npy_f32(const char *path, const float *x, int rows, int cols, lt_err *err) {
    char hdr[128];
    int hl = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols);
    size_t total_hdr = 10 + (size_t)hl + 1;
    size_t padded = (total_hdr + 63) / 64 * 64;
    size_t hlen = padded - 10, data = (size_t)rows * cols * sizeof(float);
    unsigned char *buf = malloc(padded + data);
    if (!buf) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (unsigned char)(hlen & 0xff);
    buf[9] = (unsigned char)(hlen >> 8);
    memset(buf + 10, ' ', hlen);
    memcpy(buf + 10, hdr, (size_t)hl);
    buf[padded - 1] = '\n';
    memcpy(buf + padded, x, data); /* little-endian hosts only (x86-64, aarch64) */
    lt_status st = lt_write_file_atomic(path, buf, padded + data, err);
    free(buf);
    return st;
}

static int score_run(void *arg) {
    const score_opts *o = arg;
    const char *dir = o->model, *ids_s = o->ids, *logits_path = o->logits, *device = o->device;
    long threads = o->threads;
    int32_t *ids = NULL;
    int S = 0;
    if (!parse_ids(ids_s, &ids, &S)) return 2;
    if (S < 2) {
        fprintf(stderr, "score: --ids needs at least 2 token ids (the first one is only context)\n");
        free(ids);
        return 2;
    }
    if (!lt_is_dir(dir)) {
        fprintf(stderr, "score: model folder '%s' does not exist\n", dir);
        free(ids);
        return 1;
    }
    int rc = 1;
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    int32_t *targets = NULL, *pos = NULL, *doc = NULL;
    float *losses = NULL, *logits = NULL;
    if (lt_backend_create(device, (int)threads, &be, &err) ||
        lt_eval_load_model(dir, o->adapter, o->quantize, be, &m, &err)) {
        fprintf(stderr, "score: %s\n", err.msg);
        goto done;
    }
    const lt_config *cfg = lt_model_config(m);
    for (int i = 0; i < S; i++)
        if (ids[i] >= cfg->vocab_size) {
            fprintf(stderr, "score: token id %d (item %d of --ids) is outside the vocabulary [0, %d)\n", ids[i], i + 1,
                    cfg->vocab_size);
            goto done;
        }
    targets = malloc((size_t)S * sizeof *targets);
    pos = malloc((size_t)S * sizeof *pos);
    doc = malloc((size_t)S * sizeof *doc);
    losses = malloc((size_t)S * sizeof *losses);
    if (!targets || !pos || !doc || !losses) {
        fprintf(stderr, "score: out of memory\n");
        goto done;
    }
    int len = S;
    lt_batch b = {.B = 1, .T = S, .tokens = ids, .targets = targets, .pos = pos, .doc_start = doc};
    lt_step_result res;
    if (lt_batch_fill_sequence(S, ids, NULL, &len, 1, targets, pos, doc, &err) || lt_model_plan(m, 1, S, &err) ||
        lt_model_step(m, &b, 0, 1.0, &res, &err) || lt_model_get_token_losses(m, losses, &err)) {
        fprintf(stderr, "score: %s\n", err.msg);
        goto done;
    }
    if (logits_path) {
        logits = malloc((size_t)S * cfg->vocab_size * sizeof *logits);
        if (!logits) {
            fprintf(stderr, "score: out of memory for logits\n");
            goto done;
        }
        if (lt_model_get_logits(m, logits, &err) || write_npy_f32(logits_path, logits, S, cfg->vocab_size, &err)) {
            fprintf(stderr, "score: %s\n", err.msg);
            goto done;
        }
    }
    double sum = 0;
    printf("{\"model\": ");
    {
        cJSON *js = cJSON_CreateString(dir);
        char *s = cJSON_PrintUnformatted(js);
        printf("%s", s ? s : "\"\"");
        cJSON_free(s);
        cJSON_Delete(js);
    }
    printf(", \"device\": \"%s\", \"n_tokens\": %d, \"ids\": [", be->name, S);
    for (int i = 0; i < S; i++) printf("%s%d", i ? ", " : "", ids[i]);
    printf("], \"logprobs\": [");
    for (int i = 0; i + 1 < S; i++) {
        double lp = -(double)losses[i];
        sum += lp;
        printf("%s%.9g", i ? ", " : "", lp);
    }
    printf("], \"sum\": %.9g, \"mean\": %.9g}\n", sum, sum / (S - 1));
    rc = 0;
done:
    free(ids);
    free(targets);
    free(pos);
    free(doc);
    free(losses);
    free(logits);
    if (m) lt_model_free(m);
    if (be) be->destroy(be);
    return rc;
}

int lt_cmd_score(int argc, char **argv) {
    score_opts o = {0};
    return lt_opts_main(&SCORE_SET, argc, argv, &o, score_run);
}
