/* lt_train_opts.c -- options of `luxtrain train` (see lt_train_opts.h). */
#define _POSIX_C_SOURCE 200809L
#include "lt_train_opts.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "lt_opt.h"
#include "lt_lora.h"
#include "lt_json.h"

typedef enum { K_SECTION, K_STR, K_LIST, K_LONG, K_DBL, K_FLAG, K_SCHED, K_TARGETS, K_DEVICE } kind;

typedef struct optdef {
    const char *name; /* without "--" */
    kind k;
    size_t off;   /* field */
    size_t off_n; /* K_LIST: the count field */
    const char *def;  /* default, as text (NULL = none) */
    const char *meta; /* value placeholder in --help */
    double lo, hi;    /* K_LONG / K_DBL range */
    int lo_open, hi_open;
    int hashed; /* part of the trajectory hash (2: only when not the default, so that runs from
                   before the option existed keep their hash; K_DBL and K_STR only) */
    const char *help;
} optdef;

#define F(x) offsetof(lt_train_opts, x)
#define BIG 1e18
static const optdef OPTS[] = {
    {"Inputs and outputs", K_SECTION, 0, 0, NULL, NULL, 0, 0, 0, 0, 0, NULL},
    {"model", K_STR, F(model), 0, NULL, "DIR", 0, 0, 0, 0, 1, "Hugging Face model folder (required)"},
    {"data", K_LIST, F(data), F(n_data), NULL, "SHARD...", 0, 0, 0, 0, 1, "training token shards (.h5; required)"},
    {"out", K_STR, F(out), 0, NULL, "RUN_DIR", 0, 0, 0, 0, 0,
     "run folder: config.json, checkpoints/, final export (required)"},
    {"config", K_STR, F(config), 0, NULL, "FILE", 0, 0, 0, 0, 0,
     "JSON file of options (keys = option names); flags override it"},
    {"adapter", K_STR, F(adapter), 0, NULL, "DIR", 0, 0, 0, 0, 1,
     "PEFT LoRA adapter folder to continue training from (implies LoRA)"},
    {"eval-data", K_LIST, F(eval_data), F(n_eval_data), NULL, "SHARD...", 0, 0, 0, 0, 0, "evaluation token shards"},
    {"LoRA (full fine-tuning unless --lora-rank or --adapter is given)", K_SECTION, 0, 0, NULL, NULL, 0, 0, 0, 0, 0,
     NULL},
    {"lora-rank", K_LONG, F(lora_rank), 0, "0", "R", 0, 65536, 0, 0, 1, "LoRA rank r; 0 = full fine-tuning"},
    {"lora-alpha", K_DBL, F(lora_alpha), 0, "16", "A", 0, BIG, 1, 0, 1, "LoRA alpha (scale = alpha / r)"},
    {"lora-dropout", K_DBL, F(lora_dropout), 0, "0", "P", 0, 1, 0, 1, 1,
     "dropout on the adapter's input, in [0, 1)"},
    {"lora-targets", K_TARGETS, F(lora_targets), 0, "q,k,v,o,gate,up,down", "LIST", 0, 0, 0, 0, 1,
     "modules to adapt, comma-separated from q,k,v,o,gate,up,down"},
    {"rslora", K_FLAG, F(rslora), 0, "false", NULL, 0, 0, 0, 0, 1, "rank-stabilized LoRA: scale = alpha / sqrt(r)"},
    {"quantize", K_STR, F(quantize), 0, "none", "Q", 0, 0, 0, 0, 2,
     "none, or nf4 = QLoRA: the frozen linear weights in bitsandbytes' NF4 with double quantization (LoRA only)"},
    {"Batches and length", K_SECTION, 0, 0, NULL, NULL, 0, 0, 0, 0, 0, NULL},
    {"seq-len", K_LONG, F(seq_len), 0, "1024", "T", 2, 1048576, 0, 0, 1, "tokens per sequence"},
    {"micro-batch", K_LONG, F(micro_batch), 0, "4", "B", 1, 65536, 0, 0, 1, "sequences per forward/backward"},
    {"grad-accum", K_LONG, F(grad_accum), 0, "1", "K", 1, 65536, 0, 0, 1,
     "micro-batches per optimizer step on each rank (global batch = B * K * ranks sequences)"},
    {"epochs", K_LONG, F(epochs), 0, "1", "N", 0, 1000000, 0, 0, 0,
     "passes over the data; 0 = no limit (needs --max-steps)"},
    {"max-steps", K_LONG, F(max_steps), 0, "0", "N", 0, BIG, 0, 0, 0,
     "optimizer steps; 0 = no limit; training ends at whichever limit comes first"},
    {"Optimizer (AdamW) and schedule", K_SECTION, 0, 0, NULL, NULL, 0, 0, 0, 0, 0, NULL},
    {"lr", K_DBL, F(lr), 0, "0.0001", "X", 0, BIG, 1, 0, 1, "peak learning rate"},
    {"warmup-steps", K_LONG, F(warmup_steps), 0, "0", "N", 0, BIG, 0, 0, 1,
     "linear warmup from 0 over N optimizer steps"},
    {"schedule", K_SCHED, F(schedule), 0, "cosine", "S", 0, 0, 0, 0, 1,
     "after warmup: constant, linear or cosine (decay to min-lr-ratio * lr at the last step)"},
    {"min-lr-ratio", K_DBL, F(min_lr_ratio), 0, "0.1", "R", 0, 1, 0, 0, 1,
     "final learning rate / peak for linear and cosine, in [0, 1]"},
    {"beta1", K_DBL, F(beta1), 0, "0.9", "B1", 0, 1, 0, 1, 1, "AdamW beta1, in [0, 1)"},
    {"beta2", K_DBL, F(beta2), 0, "0.999", "B2", 0, 1, 0, 1, 1, "AdamW beta2, in [0, 1)"},
    {"eps", K_DBL, F(eps), 0, "1e-08", "E", 0, 1, 1, 0, 1, "AdamW epsilon"},
    {"weight-decay", K_DBL, F(weight_decay), 0, "0.01", "W", 0, 1e3, 0, 0, 1,
     "decoupled weight decay on matrices (not norms, biases, embeddings)"},
    {"decay-embeddings", K_FLAG, F(decay_embeddings), 0, "false", NULL, 0, 0, 0, 0, 1,
     "apply weight decay to the token embeddings too"},
    {"clip", K_DBL, F(clip), 0, "1", "C", 0, BIG, 0, 0, 1, "clip the global gradient norm to C; 0 = no clipping"},
    {"neftune-alpha", K_DBL, F(neftune_alpha), 0, "0", "A", 0, BIG, 0, 0, 2,
     "NEFTune: uniform noise in [-m, m], m = A / sqrt(T * hidden), on the input embeddings of training steps "
     "(never eval or generation); 0 = off"},
    {"Run control", K_SECTION, 0, 0, NULL, NULL, 0, 0, 0, 0, 0, NULL},
    {"seed", K_LONG, F(seed), 0, "42", "S", 0, BIG, 0, 0, 1,
     "seed for data order, LoRA init and dropout"},
    {"eval-every", K_LONG, F(eval_every), 0, "100", "N", 0, BIG, 0, 0, 0,
     "evaluate on --eval-data every N steps (and at the end); 0 = only at the end"},
    {"save-every", K_LONG, F(save_every), 0, "500", "N", 0, BIG, 0, 0, 0,
     "write a checkpoint every N steps (and at the end); 0 = only at the end"},
    {"keep-checkpoints", K_LONG, F(keep_checkpoints), 0, "0", "N", 0, 1000000, 0, 0, 0,
     "keep only the newest N checkpoints; 0 = keep all"},
    {"log-every", K_LONG, F(log_every), 0, "10", "N", 1, BIG, 0, 0, 0, "print loss, lr and grad norm every N steps"},
    {"resume", K_FLAG, F(resume), 0, "false", NULL, 0, 0, 0, 0, 0,
     "continue from the newest complete checkpoint in RUN_DIR"},
    {"device", K_DEVICE, F(device), 0, "auto", "D", 0, 0, 0, 0, 0, "cpu, cuda or auto (cuda if a GPU is present)"},
    {"threads", K_LONG, F(threads), 0, "0", "N", 0, 4096, 0, 0, 0, "CPU threads; 0 = OpenMP default"},
    {"allow-tokenizer-mismatch", K_FLAG, F(allow_tokenizer_mismatch), 0, "false", NULL, 0, 0, 0, 0, 0,
     "train on shards made by another tokenizer than the model's (tokenizer_sha256 differs; a warning)"},
    {"skip-nonfinite", K_FLAG, F(skip_nonfinite), 0, "false", NULL, 0, 0, 0, 0, 0,
     "skip an optimizer step whose gradient is NaN/Inf instead of stopping"},
    {"Memory and data parallelism (docs/distributed.md)", K_SECTION, 0, 0, NULL, NULL, 0, 0, 0, 0, 0, NULL},
    {"recompute", K_FLAG, F(recompute), 0, "false", NULL, 0, 0, 0, 0, 0,
     "activation recomputation: keep only each layer's input, recompute the layer in the backward"},
    {"zero", K_LONG, F(zero), 0, "0", "S", 0, 1, 0, 0, 0,
     "1 = ZeRO-1: shard the AdamW state and fp32 master weights across the ranks"},
    {"grad-reduce-dtype", K_STR, F(grad_reduce_dtype), 0, "f32", "D", 0, 0, 0, 0, 0,
     "f32 (exact: N ranks = 1 rank bitwise) or bf16 (once per step, half the traffic; for GPUs)"},
    {"dry-run", K_FLAG, F(dry_run), 0, "false", NULL, 0, 0, 0, 0, 0,
     "print the per-rank memory estimate for this configuration and exit"},
};
#define NOPTS (sizeof OPTS / sizeof OPTS[0])

/* the option name closest to an unknown one, when it looks like a typo of it */
static const char *nearest_opt(const char *given) {
    /* what Hugging Face's Trainer and PEFT call some of them */
    static const char *const alias[][2] = {
        {"learning-rate", "lr"},         {"output-dir", "out"},
        {"model-name-or-path", "model"}, {"max-seq-length", "seq-len"},
        {"num-train-epochs", "epochs"},  {"per-device-train-batch-size", "micro-batch"},
        {"lora-r", "lora-rank"},         {"gradient-accumulation-steps", "grad-accum"},
        {"max-grad-norm", "clip"},       {"gradient-checkpointing", "recompute"},
        {"lr-scheduler-type", "schedule"}};
    lt_nearest n = {0};
    for (size_t i = 0; i < NOPTS; i++)
        if (OPTS[i].k != K_SECTION) lt_nearest_offer(&n, given, OPTS[i].name);
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++) lt_nearest_offer_alias(&n, given, alias[i][0], alias[i][1]);
    return lt_nearest_best(&n, given);
}

#define FIELD(o, d, T) ((T *)((char *)(o) + (d)->off))
#define CFIELD(o, d, T) ((const T *)((const char *)(o) + (d)->off))

static const optdef *find_opt(const char *name, size_t n) {
    for (size_t i = 0; i < NOPTS; i++) {
        if (OPTS[i].k == K_SECTION || strlen(OPTS[i].name) != n) continue;
        size_t j = 0;
        for (; j < n; j++) {
            char c = name[j] == '_' ? '-' : name[j];
            if (c != OPTS[i].name[j]) break;
        }
        if (j == n) return &OPTS[i];
    }
    return NULL;
}

static void free_list(char **l, int n) {
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

static void range_text(const optdef *d, char *buf, size_t cap, int integer) {
    const char *lb = d->lo_open ? "(" : "[", *rb = d->hi_open ? ")" : "]";
    if (d->hi >= BIG)
        snprintf(buf, cap, "%s %s %.15g", integer ? "an integer" : "a number", d->lo_open ? ">" : ">=", d->lo);
    else
        snprintf(buf, cap, "%s in %s%.15g, %.15g%s", integer ? "an integer" : "a number", lb, d->lo, d->hi, rb);
}

/* Set a scalar option from text; `src` names where it came from ("--lr", "run.json: lr"). */
static lt_status set_text(lt_train_opts *o, const optdef *d, const char *v, const char *src, lt_err *err) {
    char want[96];
    switch (d->k) {
    case K_STR: {
        char *s = strdup(v);
        if (!s) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
        free(*FIELD(o, d, char *));
        *FIELD(o, d, char *) = s;
        return LT_OK;
    }
    case K_DEVICE:
        if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto"))
            return lt_fail(err, LT_ERR_INVALID, "%s: unknown device '%s' (expected cpu, cuda or auto)", src, v);
        {
            char *s = strdup(v);
            if (!s) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
            free(*FIELD(o, d, char *));
            *FIELD(o, d, char *) = s;
        }
        return LT_OK;
    case K_LONG: {
        char *end = NULL;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        range_text(d, want, sizeof want, 1);
        if (!*v || *end || errno || (double)x < d->lo || (double)x > d->hi)
            return lt_fail(err, LT_ERR_INVALID, "%s expects %s, got '%s'", src, want, v);
        *FIELD(o, d, long) = (long)x;
        return LT_OK;
    }
    case K_DBL: {
        char *end = NULL;
        errno = 0;
        double x = strtod(v, &end);
        range_text(d, want, sizeof want, 0);
        if (!*v || *end || errno || !isfinite(x) || x < d->lo || x > d->hi || (d->lo_open && x == d->lo) ||
            (d->hi_open && x == d->hi))
            return lt_fail(err, LT_ERR_INVALID, "%s expects %s, got '%s'", src, want, v);
        *FIELD(o, d, double) = x;
        return LT_OK;
    }
    case K_FLAG:
        if (!strcmp(v, "true") || !strcmp(v, "1")) *FIELD(o, d, int) = 1;
        else if (!strcmp(v, "false") || !strcmp(v, "0")) *FIELD(o, d, int) = 0;
        else return lt_fail(err, LT_ERR_INVALID, "%s expects true or false, got '%s'", src, v);
        return LT_OK;
    case K_SCHED: {
        lt_status st = lt_sched_kind_parse(v, FIELD(o, d, lt_sched_kind), err);
        return st == LT_OK ? st : lt_wrap(err, st, "%s", src);
    }
    case K_TARGETS: {
        lt_status st = lt_lora_parse_targets(v, FIELD(o, d, unsigned), err);
        return st == LT_OK ? st : lt_wrap(err, st, "%s", src);
    }
    case K_LIST: {
        /* a single path (config string) */
        char **l = malloc(sizeof *l);
        if (!l || !(l[0] = strdup(v))) {
            free(l);
            return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
        }
        free_list(*FIELD(o, d, char **), *(int *)((char *)o + d->off_n));
        *FIELD(o, d, char **) = l;
        *(int *)((char *)o + d->off_n) = 1;
        return LT_OK;
    }
    case K_SECTION: break;
    }
    return LT_OK;
}

static lt_status set_list(lt_train_opts *o, const optdef *d, char *const *vals, int n, const char *src, lt_err *err) {
    if (n < 0) return lt_fail(err, LT_ERR_INVALID, "%s needs at least one value", src);
    char **l = calloc((size_t)n + 1, sizeof *l);
    if (!l) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
    for (int i = 0; i < n; i++) {
        if (!vals[i][0]) {
            free_list(l, n);
            return lt_fail(err, LT_ERR_INVALID, "%s: empty path", src);
        }
        if (!(l[i] = strdup(vals[i]))) {
            free_list(l, n);
            return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
        }
    }
    free_list(*FIELD(o, d, char **), *(int *)((char *)o + d->off_n));
    *FIELD(o, d, char **) = l;
    *(int *)((char *)o + d->off_n) = n;
    return LT_OK;
}

void lt_train_opts_free(lt_train_opts *o) {
    if (!o) return;
    for (size_t i = 0; i < NOPTS; i++) {
        const optdef *d = &OPTS[i];
        if (d->k == K_STR || d->k == K_DEVICE) free(*FIELD(o, d, char *));
        if (d->k == K_LIST) free_list(*FIELD(o, d, char **), *(int *)((char *)o + d->off_n));
    }
    memset(o, 0, sizeof *o);
}

lt_status lt_train_opts_defaults(lt_train_opts *o, lt_err *err) {
    memset(o, 0, sizeof *o);
    for (size_t i = 0; i < NOPTS; i++) {
        if (!OPTS[i].def) continue;
        lt_status st = set_text(o, &OPTS[i], OPTS[i].def, OPTS[i].name, err);
        if (st != LT_OK) return lt_wrap(err, st, "built-in default");
    }
    return LT_OK;
}

int lt_train_opts_lora(const lt_train_opts *o) { return o->lora_rank > 0 || (o->adapter && *o->adapter); }

static uint64_t bit(const optdef *d) { return 1ull << (d - OPTS); }

/* ---- JSON ---- */

static lt_status apply_item(lt_train_opts *o, const optdef *d, const cJSON *it, const char *origin, lt_err *err) {
    char src[320], num[64];
    snprintf(src, sizeof src, "%s: \"%s\"", origin, it->string);
    if (d->k == K_LIST || d->k == K_TARGETS) {
        if (cJSON_IsString(it)) return set_text(o, d, it->valuestring, src, err);
        if (!cJSON_IsArray(it)) return lt_fail(err, LT_ERR_INVALID, "%s expects a list of strings", src);
        int n = cJSON_GetArraySize(it);
        char **vals = calloc((size_t)n + 1, sizeof *vals);
        if (!vals) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
        const cJSON *x;
        int k = 0;
        cJSON_ArrayForEach(x, it) {
            if (!cJSON_IsString(x)) {
                free(vals);
                return lt_fail(err, LT_ERR_INVALID, "%s: element %d is not a string", src, k);
            }
            vals[k++] = x->valuestring;
        }
        lt_status st;
        if (d->k == K_LIST) {
            st = set_list(o, d, vals, n, src, err);
        } else { /* join for the targets parser */
            size_t len = 1;
            for (int i = 0; i < n; i++) len += strlen(vals[i]) + 1;
            char *csv = calloc(len, 1);
            if (!csv) {
                free(vals);
                return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
            }
            for (int i = 0; i < n; i++) {
                if (i) strcat(csv, ",");
                strcat(csv, vals[i]);
            }
            st = set_text(o, d, csv, src, err);
            free(csv);
        }
        free(vals);
        return st;
    }
    if (d->k == K_FLAG) {
        if (!cJSON_IsBool(it)) return lt_fail(err, LT_ERR_INVALID, "%s expects true or false", src);
        *FIELD(o, d, int) = cJSON_IsTrue(it) ? 1 : 0;
        return LT_OK;
    }
    if (cJSON_IsNumber(it)) {
        if (d->k != K_LONG && d->k != K_DBL) return lt_fail(err, LT_ERR_INVALID, "%s expects a string", src);
        snprintf(num, sizeof num, "%.17g", it->valuedouble);
        return set_text(o, d, num, src, err);
    }
    if (cJSON_IsString(it)) return set_text(o, d, it->valuestring, src, err);
    if (cJSON_IsNull(it) && (d->k == K_STR)) { /* null = unset */
        free(*FIELD(o, d, char *));
        *FIELD(o, d, char *) = NULL;
        return LT_OK;
    }
    return lt_fail(err, LT_ERR_INVALID, "%s has the wrong type", src);
}

lt_status lt_train_opts_apply_json(lt_train_opts *o, const char *json, const char *origin, lt_err *err) {
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        return lt_fail(err, LT_ERR_FORMAT, "%s: not valid JSON (near '%.20s')", origin, at ? at : "?");
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lt_fail(err, LT_ERR_FORMAT, "%s: expected a JSON object of options", origin);
    }
    lt_status st = LT_OK;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        const optdef *d = find_opt(it->string, strlen(it->string));
        if (!d) {
            const char *near = nearest_opt(it->string);
            st = lt_fail(err, LT_ERR_INVALID, "%s: unknown option \"%s\"%s%s%s", origin, it->string,
                         near ? "; did you mean \"" : "", near ? near : "", near ? "\"?" : "");
            break;
        }
        if (d->k == K_STR && !strcmp(d->name, "config")) {
            st = lt_fail(err, LT_ERR_INVALID, "%s: \"config\" cannot be set inside a config file", origin);
            break;
        }
        if ((st = apply_item(o, d, it, origin, err)) != LT_OK) break;
        o->given |= bit(d);
    }
    cJSON_Delete(root);
    return st;
}

/* ---- command line ---- */

lt_status lt_train_opts_parse(int argc, char **argv, lt_train_opts *o, lt_err *err) {
    lt_status st = lt_train_opts_defaults(o, err);
    if (st != LT_OK) return st;
    /* --help anywhere wins; --config is applied before the other flags */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            o->help = 1;
            return LT_OK;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *path = NULL;
        if (!strcmp(a, "--config")) {
            if (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2))
                return lt_fail(err, LT_ERR_INVALID, "--config needs a value (a JSON file)");
            path = argv[++i];
        } else if (!strncmp(a, "--config=", 9)) {
            path = a + 9;
        }
        if (!path) continue;
        char *text = NULL;
        if ((st = lt_read_file(path, &text, NULL, err)) != LT_OK) return lt_wrap(err, st, "--config");
        st = lt_train_opts_apply_json(o, text, path, err);
        free(text);
        if (st != LT_OK) return st;
        if ((st = set_text(o, find_opt("config", 6), path, "--config", err)) != LT_OK) return st;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || !a[2])
            return lt_fail(err, LT_ERR_INVALID, "unexpected argument '%s' (options start with --)", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const optdef *d = find_opt(name, nlen);
        if (!d || strchr(name, '_')) {
            const char *near = nearest_opt(a);
            return lt_fail(err, LT_ERR_INVALID, "unknown option '--%.*s'%s%s%s", (int)nlen, name,
                           near ? "; did you mean '--" : "", near ? near : "", near ? "'?" : "");
        }
        char src[96];
        snprintf(src, sizeof src, "--%s", d->name);
        if (!strcmp(d->name, "config")) {
            if (!eq) i++;
            continue; /* applied above */
        }
        if (d->k == K_FLAG) {
            if (eq) st = set_text(o, d, eq + 1, src, err);
            else *FIELD(o, d, int) = 1;
        } else if (d->k == K_LIST && !eq) {
            int j = i + 1;
            while (j < argc && strncmp(argv[j], "--", 2) != 0) j++;
            if (j == i + 1) return lt_fail(err, LT_ERR_INVALID, "%s needs a value (one or more paths)", src);
            st = set_list(o, d, argv + i + 1, j - i - 1, src, err);
            i = j - 1;
        } else if (d->k == K_LIST) {
            st = set_text(o, d, eq + 1, src, err);
        } else {
            const char *v;
            if (eq) {
                v = eq + 1;
            } else {
                /* a value may look like a negative number, never like another option */
                if (i + 1 >= argc || (!strncmp(argv[i + 1], "--", 2)))
                    return lt_fail(err, LT_ERR_INVALID, "%s needs a value (%s)", src, d->meta ? d->meta : "?");
                v = argv[++i];
            }
            st = set_text(o, d, v, src, err);
        }
        if (st != LT_OK) return st;
        o->given |= bit(d);
    }
    return lt_train_opts_validate(o, err);
}

lt_status lt_train_opts_validate(const lt_train_opts *o, lt_err *err) {
    if (!o->model || !*o->model) return lt_fail(err, LT_ERR_INVALID, "--model DIR is required");
    if (!o->quantize || (strcmp(o->quantize, "none") && strcmp(o->quantize, "nf4")))
        return lt_fail(err, LT_ERR_INVALID, "--quantize expects none or nf4, got '%s'",
                       o->quantize ? o->quantize : "(null)");
    if (!strcmp(o->quantize, "nf4") && !lt_train_opts_lora(o))
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "--quantize nf4 is QLoRA: it quantizes the frozen base weights under LoRA adapters (give "
                       "--lora-rank R or --adapter DIR); full fine-tuning trains those weights and cannot quantize "
                       "them");
    if (o->dry_run) return LT_OK; /* the memory estimate needs the model's config only */
    if (o->n_data < 1) return lt_fail(err, LT_ERR_INVALID, "--data SHARD... is required");
    if (!o->out || !*o->out) return lt_fail(err, LT_ERR_INVALID, "--out RUN_DIR is required");
    if (o->epochs == 0 && o->max_steps == 0)
        return lt_fail(err, LT_ERR_INVALID,
                       "--epochs 0 and --max-steps 0: training would never end (set --epochs N or --max-steps N)");
    if (o->max_steps > 0 && o->warmup_steps > o->max_steps)
        return lt_fail(err, LT_ERR_INVALID, "--warmup-steps %ld exceeds --max-steps %ld", o->warmup_steps,
                       o->max_steps);
    if (!o->lora_targets) return lt_fail(err, LT_ERR_INVALID, "--lora-targets is empty");
    if (!lt_train_opts_lora(o)) {
        static const char *const lora_only[] = {"lora-alpha", "lora-dropout", "lora-targets", "rslora"};
        for (size_t k = 0; k < 4; k++) {
            const optdef *d = find_opt(lora_only[k], strlen(lora_only[k]));
            if (o->given & bit(d))
                return lt_fail(err, LT_ERR_INVALID,
                               "--%s is a LoRA option, but this is full fine-tuning (give --lora-rank R or --adapter DIR)",
                               d->name);
        }
    }
    if (!o->grad_reduce_dtype || (strcmp(o->grad_reduce_dtype, "f32") && strcmp(o->grad_reduce_dtype, "bf16")))
        return lt_fail(err, LT_ERR_INVALID, "--grad-reduce-dtype expects f32 or bf16, got '%s'",
                       o->grad_reduce_dtype ? o->grad_reduce_dtype : "(null)");
    if (o->seq_len * o->micro_batch > (long)INT32_MAX)
        return lt_fail(err, LT_ERR_INVALID, "--seq-len %ld x --micro-batch %ld is too large", o->seq_len,
                       o->micro_batch);
    return LT_OK;
}

/* ---- help, docs ---- */

void lt_train_opts_help(FILE *f) {
    fprintf(f, "usage: luxtrain train --model DIR --data SHARD... --out RUN_DIR [options]\n"
               "       luxtrain train --config run.json [options]\n\n"
               "Fine-tunes a model on token shards (full fine-tuning, or LoRA with --lora-rank).\n"
               "Options come from --config (a JSON object) and the command line, which wins.\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const optdef *d = &OPTS[i];
        if (d->k == K_SECTION) {
            fprintf(f, "\n%s:\n", d->name);
            continue;
        }
        char lhs[64];
        snprintf(lhs, sizeof lhs, "--%s%s%s", d->name, d->meta ? " " : "", d->meta ? d->meta : "");
        fprintf(f, "  %-24s %s", lhs, d->help);
        if (d->def) fprintf(f, " [default: %s]", d->def);
        fprintf(f, "\n");
    }
}

void lt_train_opts_markdown(FILE *f) {
    for (size_t i = 0; i < NOPTS; i++) {
        const optdef *d = &OPTS[i];
        if (d->k == K_SECTION) {
            fprintf(f, "%s| **%s** | | |\n", i ? "" : "| Option | Default | Meaning |\n|---|---|---|\n", d->name);
            continue;
        }
        fprintf(f, "| `--%s%s%s` | %s | %s |\n", d->name, d->meta ? " " : "", d->meta ? d->meta : "",
                d->def ? d->def : "-", d->help);
    }
}

/* ---- resolved configuration ---- */

static void add_json(cJSON *root, const lt_train_opts *o, const optdef *d) {
    char key[64], buf[128];
    snprintf(key, sizeof key, "%s", d->name);
    for (char *p = key; *p; p++)
        if (*p == '-') *p = '_';
    switch (d->k) {
    case K_STR:
    case K_DEVICE: {
        const char *s = *CFIELD(o, d, char *);
        if (s) cJSON_AddStringToObject(root, key, s);
        else cJSON_AddNullToObject(root, key);
        break;
    }
    case K_LIST: {
        cJSON *a = cJSON_AddArrayToObject(root, key);
        char **l = *(char **const *)((const char *)o + d->off);
        int n = *(const int *)((const char *)o + d->off_n);
        for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(l[i]));
        break;
    }
    case K_LONG: cJSON_AddNumberToObject(root, key, (double)*CFIELD(o, d, long)); break;
    case K_DBL: cJSON_AddItemToObject(root, key, lt_json_exact_number(*CFIELD(o, d, double))); break;
    case K_FLAG: cJSON_AddBoolToObject(root, key, *CFIELD(o, d, int)); break;
    case K_SCHED: cJSON_AddStringToObject(root, key, lt_sched_kind_name(*CFIELD(o, d, lt_sched_kind))); break;
    case K_TARGETS:
        lt_lora_targets_str(*CFIELD(o, d, unsigned), buf, sizeof buf);
        cJSON_AddStringToObject(root, key, buf);
        break;
    case K_SECTION: break;
    }
}

static char *to_json(const lt_train_opts *o, int hashed_only, int formatted) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    for (size_t i = 0; i < NOPTS; i++) {
        const optdef *d = &OPTS[i];
        if (d->k == K_SECTION || !strcmp(d->name, "config")) continue;
        if (hashed_only && !d->hashed) continue;
        if (hashed_only && d->hashed == 2 && d->k == K_DBL && *CFIELD(o, d, double) == strtod(d->def, NULL))
            continue;
        if (hashed_only && d->hashed == 2 && d->k == K_STR && !strcmp(*CFIELD(o, d, char *), d->def))
            continue;
        add_json(root, o, d);
    }
    char *s = formatted ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

char *lt_train_opts_to_json(const lt_train_opts *o) { return to_json(o, 0, 1); }

lt_status lt_train_opts_write(const lt_train_opts *o, const char *path, lt_err *err) {
    char *s = lt_train_opts_to_json(o);
    if (!s) return lt_fail(err, LT_ERR_NOMEM, "%s: cannot format the configuration", path);
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    }
    t[n] = '\n';
    t[n + 1] = 0;
    lt_status st = lt_write_file_atomic(path, t, n + 1, err);
    free(t);
    return st;
}

void lt_train_opts_hash(const lt_train_opts *o, char out[17]) {
    char *s = to_json(o, 1, 0);
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = s ? s : ""; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3ull;
    }
    free(s);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}
