/*
 * lt_cli.h -- the subcommands of the `luxtrain` binary (tools/luxtrain.c) and
 * small helpers for their option parsing. Each returns a process exit code:
 * 0 success, 1 failure (message printed), 2 bad usage.
 */
#ifndef LT_CLI_H
#define LT_CLI_H

#include "lt_base.h"

int lt_cmd_inspect(int argc, char **argv);  /* core/lt_cmd_model.c (shards: data/) */
/* `luxtrain inspect`: a training run or checkpoint folder (train/lt_cmd_inspect_run.c), else lt_cmd_inspect */
int lt_cmd_inspect_any(int argc, char **argv);
int lt_cmd_score(int argc, char **argv);    /* core/lt_cmd_model.c */
int lt_cmd_tokenize(int argc, char **argv); /* data/lt_cmd_tokenize.c */
int lt_cmd_eval(int argc, char **argv);     /* train/lt_cmd_eval.c */
int lt_cmd_plot(int argc, char **argv);     /* train/lt_cmd_eval.c */
int lt_cmd_train(int argc, char **argv);    /* train/lt_cmd_train.c */
int lt_cmd_generate(int argc, char **argv); /* train/lt_cmd_generate.c */
int lt_cmd_merge(int argc, char **argv);    /* train/lt_cmd_merge.c */
int lt_cmd_export(int argc, char **argv);   /* train/lt_cmd_export.c */
int lt_cmd_bench(int argc, char **argv);    /* train/lt_bench_step.c: bench step (bench kernels: tools/luxtrain.c) */

/* `luxtrain inspect` on a path ending in .h5 forwards here (data/). */
int lt_cmd_inspect_shard(int argc, char **argv);

/* Option parsing helpers: parse a whole string as a number, else print
 * "<cmd>: <opt> expects <what>, got '<s>'" and return 0. */
int lt_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int lt_parse_double(const char *cmd, const char *opt, const char *s, double *out);

/* Unknown options. lt_nearest collects the candidate option closest to what
 * was typed (Levenshtein distance over the names without leading dashes and
 * without a "=value" tail); lt_nearest_best returns it when
 * it is close enough to be a plausible typo, else NULL. */
typedef struct {
    const char *best;
    size_t dist, len;
} lt_nearest;
void lt_nearest_offer(lt_nearest *n, const char *given, const char *candidate);
/* compare with `compared` (another tool's name for the option), suggest `suggested` */
void lt_nearest_offer_alias(lt_nearest *n, const char *given, const char *compared, const char *suggested);
const char *lt_nearest_best(const lt_nearest *n, const char *given);

/* Prints, once: "<cmd>: unknown option '<arg>'; did you mean '<nearest>'?"
 * and "(luxtrain <cmd> --help lists the options)". valid: the command's
 * options ("--name"), NULL-terminated. Returns 2 (bad usage). */
int lt_cli_unknown_option(const char *cmd, const char *arg, const char *const *valid);

#endif
