/*
 * lt_train_opts.h -- the options of `luxtrain train`: defaults, parsing from
 * argv and from a JSON config file (--config run.json; flags given on the
 * command line override it), validation with messages naming the option, the
 * --help text and the docs table (both generated from the one option table,
 * so every printed default is the real one), and the resolved configuration
 * as JSON (written to RUN_DIR/config.json; it is itself a valid --config).
 *
 * Command line: `--name value`, `--name=value`; flags (--resume, --rslora,
 * --decay-embeddings, --skip-nonfinite, --recompute, --dry-run) take no value on the command line
 * and true/false in JSON. --data and --eval-data take one or more paths
 * (every following argument up to the next one starting with "--").
 * JSON keys are the option names without the leading dashes, with '-' or
 * '_' ("lora-rank" or "lora_rank"); lists may be JSON arrays or strings
 * (--lora-targets "q,v" or ["q", "v"]).
 */
#ifndef LT_TRAIN_OPTS_H
#define LT_TRAIN_OPTS_H

#include <stdio.h>

#include "lt_base.h"
#include "lt_optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_train_opts {
    /* inputs / outputs */
    char *model;      /* HF model folder (required) */
    char **data;      /* token shards (required, >= 1) */
    int n_data;
    char *out;        /* run folder (required) */
    char *config;     /* the --config file, if any (not written back) */
    char *adapter;    /* PEFT adapter folder to continue from / evaluate */
    char **eval_data; /* evaluation shards */
    int n_eval_data;
    /* LoRA (enabled when lora_rank > 0 or adapter is set) */
    long lora_rank;
    double lora_alpha;
    double lora_dropout;
    unsigned lora_targets; /* mask of 1u << lt_lora_target */
    int rslora;
    char *train_embeddings; /* "none" | "new" | "all" (LoRA only) */
    char *quantize; /* "none" | "nf4" (QLoRA: NF4 base weights) */
    /* batch and length */
    long seq_len, micro_batch, grad_accum, epochs, max_steps;
    /* optimizer and schedule */
    double lr;
    long warmup_steps;
    lt_sched_kind schedule;
    double min_lr_ratio;
    double beta1, beta2, eps, weight_decay;
    int decay_embeddings;
    double clip;
    double neftune_alpha; /* 0 = off */
    /* run control */
    long seed;
    long eval_every, save_every, keep_checkpoints, log_every;
    int resume;
    int allow_tokenizer_mismatch;
    char *device; /* "cpu" | "cuda" | "auto" */
    long threads;
    int skip_nonfinite;
    /* memory and data parallelism */
    int recompute;
    long zero;               /* 0, 1 (ZeRO-1) or 2 (ZeRO-2) */
    long shard_group;        /* --shard-group N (0: all ranks) */
    long world;              /* --dry-run --world N (0: the launcher's) */
    char *grad_reduce_dtype; /* "f32" | "bf16" */
    int dry_run;
    int help; /* --help / -h seen: print lt_train_opts_help, nothing validated */
    unsigned char given[128]; /* internal: which options were set by the config or a flag (LT_OPT_MAX) */
} lt_train_opts;

/* Fill with the defaults (allocated strings; free with lt_train_opts_free). */
lt_status lt_train_opts_defaults(lt_train_opts *o, lt_err *err);
void lt_train_opts_free(lt_train_opts *o);

/* Parse argv (argv[0] is the subcommand name and skipped): defaults, then
 * the --config file if one is given, then every flag in order, then
 * validation. `o` is initialized here (free it even on failure). */
lt_status lt_train_opts_parse(int argc, char **argv, lt_train_opts *o, lt_err *err);
/* Apply a JSON config (object) given as text; `origin` names it in errors. */
lt_status lt_train_opts_apply_json(lt_train_opts *o, const char *json, const char *origin, lt_err *err);
/* Cross-option checks (required options, ranges, epochs/max-steps). */
lt_status lt_train_opts_validate(const lt_train_opts *o, lt_err *err);

int lt_train_opts_lora(const lt_train_opts *o); /* LoRA run? */

/* The --help text, every option with its default. */
void lt_train_opts_help(FILE *f);
/* The same as a Markdown table (docs/training.md holds it verbatim). */
void lt_train_opts_markdown(FILE *f);

/* The resolved configuration as a JSON object (malloc'd string). */
char *lt_train_opts_to_json(const lt_train_opts *o);
/* ... written atomically to path. */
lt_status lt_train_opts_write(const lt_train_opts *o, const char *path, lt_err *err);
/* FNV-1a 64 hash of the options that define the training trajectory (model,
 * data, LoRA setup, batch shape, optimizer, schedule, seed) -- not those a
 * resumed run may change (out, config, device, threads, eval/save/log
 * cadence, keep-checkpoints, resume, max-steps, epochs). As 16 hex digits. */
void lt_train_opts_hash(const lt_train_opts *o, char out[17]);

#ifdef __cplusplus
}
#endif
#endif
