/* lt_train_opts.c -- options of `luxtrain train` (see lt_train_opts.h): the
 * table, read by core's option parser (lt_opt.h), and what only train checks. */
#define _POSIX_C_SOURCE 200809L
#include "lt_train_opts.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "lt_lora.h"
#include "lt_opt.h"

/* the table's kinds (short names keep the rows readable) */
typedef lt_optdef optdef;
#define K_SECTION LT_OPT_SECTION
#define K_STR LT_OPT_STR
#define K_LIST LT_OPT_LIST
#define K_LONG LT_OPT_LONG
#define K_DBL LT_OPT_DBL
#define K_FLAG LT_OPT_FLAG
#define K_CHOICE LT_OPT_CHOICE
#define K_CUSTOM LT_OPT_CUSTOM

static lt_status parse_sched(const char *v, void *field, lt_err *err) {
    return lt_sched_kind_parse(v, (lt_sched_kind *)field, err);
}
static void format_sched(const void *field, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", lt_sched_kind_name(*(const lt_sched_kind *)field));
}
static lt_status parse_targets(const char *v, void *field, lt_err *err) {
    return lt_lora_parse_targets(v, (unsigned *)field, err);
}
static void format_targets(const void *field, char *buf, size_t cap) {
    lt_lora_targets_str(*(const unsigned *)field, buf, cap);
}
static const char *const REDUCE_DTYPES[] = {"f32", "bf16", NULL};
static const char *const TRAIN_EMBEDDINGS[] = {"none", "new", "all", NULL};
static const char *const QUANTIZE[] = {"none", "nf4", NULL};

/* rows list the fields up to the help text (custom and choice rows go on) */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define F(x) offsetof(lt_train_opts, x)
#define BIG LT_OPT_BIG
static const optdef OPTS[] = {
    {"Inputs and outputs", K_SECTION, 0, 0, NULL, NULL, 0, 0, 0, 0, 0, NULL},
    {"model", K_STR, F(model), 0, NULL, "DIR", 0, 0, 0, 0, 1, "Hugging Face model folder", NULL, NULL, NULL, 1},
    {"data", K_LIST, F(data), F(n_data), NULL, "SHARD...", 0, 0, 0, 0, 1,
     "training token shards (.h5 files, folders, patterns; required); PATTERN:W or PATTERN:xN entries mix shard sets "
     "by weight or epochs"},
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
    {"lora-targets", K_CUSTOM, F(lora_targets), 0, "q,k,v,o,gate,up,down", "LIST", 0, 0, 0, 0, 1,
     "modules to adapt, comma-separated from q,k,v,o,gate,up,down", NULL, parse_targets, format_targets, 0},
    {"rslora", K_FLAG, F(rslora), 0, "false", NULL, 0, 0, 0, 0, 1, "rank-stabilized LoRA: scale = alpha / sqrt(r)"},
    {"train-embeddings", K_CHOICE, F(train_embeddings), 0, "none", "M", 0, 0, 0, 0, 2,
     "with LoRA, also train: new = the rows `luxtrain vocab add` added (PEFT trainable_token_indices), all = "
     "embed_tokens and lm_head (PEFT modules_to_save); none", TRAIN_EMBEDDINGS},
    {"quantize", K_CHOICE, F(quantize), 0, "none", "Q", 0, 0, 0, 0, 2,
     "none, or nf4 = QLoRA: the frozen linear weights in bitsandbytes' NF4 with double quantization (LoRA only)",
     QUANTIZE},
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
    {"schedule", K_CUSTOM, F(schedule), 0, "cosine", "S", 0, 0, 0, 0, 1,
     "after warmup: constant, linear or cosine (decay to min-lr-ratio * lr at the last step)", NULL, parse_sched,
     format_sched, 0},
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
    LT_OPT_ROW_DEVICE(lt_train_opts, device, "auto"),
    LT_OPT_ROW_THREADS(lt_train_opts, threads),
    {"allow-tokenizer-mismatch", K_FLAG, F(allow_tokenizer_mismatch), 0, "false", NULL, 0, 0, 0, 0, 0,
     "train on shards made by another tokenizer than the model's (tokenizer_sha256 differs; a warning)"},
    {"skip-nonfinite", K_FLAG, F(skip_nonfinite), 0, "false", NULL, 0, 0, 0, 0, 0,
     "skip an optimizer step whose gradient is NaN/Inf instead of stopping"},
    {"Memory and data parallelism (docs/distributed.md)", K_SECTION, 0, 0, NULL, NULL, 0, 0, 0, 0, 0, NULL},
    {"recompute", K_FLAG, F(recompute), 0, "false", NULL, 0, 0, 0, 0, 0,
     "activation recomputation: keep only each layer's input, recompute the layer in the backward"},
    {"zero", K_LONG, F(zero), 0, "0", "S", 0, 3, 0, 0, 0,
     "1 = ZeRO-1: shard the AdamW state and fp32 master weights across the ranks; 2 = ZeRO-2: the gradients "
     "too (reduce-scattered per layer during the backward, no full-size gradient buffer); 3 = ZeRO-3: the "
     "parameters too (each layer's gathered before its forward and its backward)"},
    {"shard-group", K_LONG, F(shard_group), 0, "0", "N", 0, 1048576, 0, 0, 0,
     "HYBRID_SHARD: shard the --zero state inside groups of N consecutive ranks (a node), replicate across the "
     "groups; the world size must be a multiple of N; 0 = all ranks"},
    {"grad-reduce-dtype", K_CHOICE, F(grad_reduce_dtype), 0, "f32", "D", 0, 0, 0, 0, 0,
     "f32 (exact: N ranks = 1 rank bitwise) or bf16 (once per step, half the traffic; for GPUs)", REDUCE_DTYPES},
    {"dry-run", K_FLAG, F(dry_run), 0, "false", NULL, 0, 0, 0, 0, 0,
     "print the per-rank memory estimate for this configuration and exit"},
    {"world", K_LONG, F(world), 0, "0", "N", 0, 1048576, 0, 0, 0,
     "--dry-run: the world size to mark as this launch (default: the launcher's, else 1)"},
};
#define NOPTS (sizeof OPTS / sizeof OPTS[0])

/* what Hugging Face's Trainer and PEFT call some of them */
static const char *const ALIAS[][2] = {
    {"learning-rate", "lr"},         {"output-dir", "out"},
    {"model-name-or-path", "model"}, {"max-seq-length", "seq-len"},
    {"num-train-epochs", "epochs"},  {"per-device-train-batch-size", "micro-batch"},
    {"lora-r", "lora-rank"},         {"gradient-accumulation-steps", "grad-accum"},
    {"max-grad-norm", "clip"},       {"gradient-checkpointing", "recompute"},
    {"lr-scheduler-type", "schedule"}};

static const lt_optset SET = {
    .cmd = "train",
    .usage = "usage: luxtrain train --model DIR --data SHARD... --out RUN_DIR [options]\n"
             "       luxtrain train --config run.json [options]\n\n"
             "Fine-tunes a model on token shards (full fine-tuning, or LoRA with --lora-rank).\n"
             "Options come from --config (a JSON object) and the command line, which wins.\n",
    .defs = OPTS,
    .n = NOPTS,
    .alias = ALIAS,
    .n_alias = sizeof ALIAS / sizeof ALIAS[0],
    .off_given = offsetof(lt_train_opts, given),
    .off_help = offsetof(lt_train_opts, help),
    .json_config = 1,
};

void lt_train_opts_free(lt_train_opts *o) {
    if (!o) return;
    lt_opts_free(&SET, o);
    memset(o, 0, sizeof *o);
}

lt_status lt_train_opts_defaults(lt_train_opts *o, lt_err *err) {
    memset(o, 0, sizeof *o);
    return lt_opts_defaults(&SET, o, err);
}

int lt_train_opts_lora(const lt_train_opts *o) { return o->lora_rank > 0 || (o->adapter && *o->adapter); }

lt_status lt_train_opts_apply_json(lt_train_opts *o, const char *json, const char *origin, lt_err *err) {
    return lt_opts_apply_json(&SET, o, json, origin, err);
}

lt_status lt_train_opts_parse(int argc, char **argv, lt_train_opts *o, lt_err *err) {
    memset(o, 0, sizeof *o);
    lt_status st = lt_opts_parse(&SET, argc, argv, o, err);
    if (st != LT_OK || o->help) return st;
    return lt_train_opts_validate(o, err);
}

lt_status lt_train_opts_validate(const lt_train_opts *o, lt_err *err) {
    if (!o->model || !*o->model) return lt_fail(err, LT_ERR_INVALID, "--model DIR is required");
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
        static const char *const lora_only[] = {"lora-alpha", "lora-dropout", "lora-targets", "rslora",
                                                "train-embeddings"};
        for (size_t k = 0; k < 5; k++)
            if (lt_opts_given(&SET, o, lora_only[k]))
                return lt_fail(err, LT_ERR_INVALID,
                               "--%s is a LoRA option, but this is full fine-tuning (give --lora-rank R or --adapter DIR)",
                               lora_only[k]);
    }
    if (o->seq_len * o->micro_batch > (long)INT32_MAX)
        return lt_fail(err, LT_ERR_INVALID, "--seq-len %ld x --micro-batch %ld is too large", o->seq_len,
                       o->micro_batch);
    return LT_OK;
}

/* ---- help, docs ---- */

void lt_train_opts_help(FILE *f) { lt_opts_help(&SET, f); }

void lt_train_opts_markdown(FILE *f) { lt_opts_markdown(&SET, f); }

/* ---- resolved configuration ---- */

char *lt_train_opts_to_json(const lt_train_opts *o) { return lt_opts_to_json(&SET, o, 0, 1); }

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
    char *s = lt_opts_to_json(&SET, o, 1, 0);
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = s ? s : ""; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3ull;
    }
    free(s);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}
