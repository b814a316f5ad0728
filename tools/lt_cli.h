/*
 * lt_cli.h -- the subcommands of the `luxtrain` binary (tools/luxtrain.c), one
 * file each in tools/ (lt_cmd_<name>.c; `bench` in bench/). Each returns a
 * process exit code: 0 success, 1 failure (message printed), 2 bad usage.
 * Their option parsing helpers are core's (lt_opt.h).
 */
#ifndef LT_CLI_H
#define LT_CLI_H

#include "lt_base.h"
#include "lt_opt.h"

int lt_cmd_inspect(int argc, char **argv);  /* tools/lt_cmd_model.c (shards: lt_cmd_tokenize.c) */
/* `luxtrain inspect`: a training run or checkpoint folder (tools/lt_cmd_inspect_run.c), else lt_cmd_inspect */
int lt_cmd_inspect_any(int argc, char **argv);
int lt_cmd_score(int argc, char **argv);    /* tools/lt_cmd_model.c */
int lt_cmd_tokenize(int argc, char **argv); /* tools/lt_cmd_tokenize.c */
int lt_cmd_eval(int argc, char **argv);     /* tools/lt_cmd_eval.c */
int lt_cmd_plot(int argc, char **argv);     /* tools/lt_cmd_eval.c */
int lt_cmd_train(int argc, char **argv);    /* tools/lt_cmd_train.c */
int lt_cmd_generate(int argc, char **argv); /* tools/lt_cmd_generate.c */
int lt_cmd_merge(int argc, char **argv);    /* tools/lt_cmd_merge.c */
int lt_cmd_export(int argc, char **argv);   /* tools/lt_cmd_export.c */
int lt_cmd_vocab(int argc, char **argv);    /* tools/lt_cmd_vocab.c: vocab add */
int lt_cmd_bench(int argc, char **argv);    /* bench/lt_bench_step.c: bench step (bench kernels: tools/luxtrain.c) */

/* `luxtrain inspect` on a path ending in .h5 forwards here (tools/lt_cmd_tokenize.c). */
int lt_cmd_inspect_shard(int argc, char **argv);

#endif
