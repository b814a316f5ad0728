/*
 * lt_cli.h -- the subcommands of the `luxtrain` binary (tools/luxtrain.c), one
 * file each in tools/ (lt_cmd_<name>.c; `bench` in bench/). Each returns a
 * process exit code: 0 success, 1 failure (message printed), 2 bad usage.
 * Their option parsing helpers are core's (lt_opt.h).
 */
#ifndef LT_CLI_H
#define LT_CLI_H

#include "lt_base.h"
#include "lt_export.h"
#include "lt_opt.h"

/* `luxtrain inspect PATH` (tools/lt_cmd_inspect_run.c): a training run or checkpoint folder there, a
 * model folder lt_inspect_model (tools/lt_cmd_model.c), a shard lt_inspect_shard (tools/lt_cmd_tokenize.c) */
int lt_cmd_inspect(int argc, char **argv);
int lt_inspect_model(const char *dir, int json);
int lt_inspect_shard(const char *path, long show, const char *tokenizer);
int lt_cmd_score(int argc, char **argv);    /* tools/lt_cmd_model.c */
int lt_cmd_tokenize(int argc, char **argv); /* tools/lt_cmd_tokenize.c */
int lt_cmd_eval(int argc, char **argv);     /* tools/lt_cmd_eval.c */
int lt_cmd_plot(int argc, char **argv);     /* tools/lt_cmd_eval.c */
int lt_cmd_train(int argc, char **argv);    /* tools/lt_cmd_train.c */
int lt_cmd_generate(int argc, char **argv); /* tools/lt_cmd_generate.c */
int lt_cmd_merge(int argc, char **argv);    /* tools/lt_cmd_merge.c */
int lt_cmd_export(int argc, char **argv);   /* tools/lt_cmd_export.c */
/* tools/lt_cmd_export.c: what `luxtrain export CHECKPOINT --out DIR` does once the run's options `o`
 * and the base model folder are known -- a Hugging Face folder (full) or a PEFT adapter (LoRA) from the
 * checkpoint, tensor by tensor, one process, no collective; also the run's own step-N/hf and final/
 * under several ranks (tools/lt_cmd_train.c) */
struct lt_ckpt;
struct lt_train_opts;
/* progress (may be NULL): lt_export_progress_fn (train/lt_export.h), before each tensor and each step
 * of the tail of a full fine-tuning export or of an adapter's; a failure stops the export with it */
lt_status lt_export_checkpoint_folder(const struct lt_ckpt *c, const struct lt_train_opts *o, const char *model,
                                      const char *out, lt_export_progress_fn progress, void *pctx, lt_err *err);
int lt_cmd_vocab(int argc, char **argv);    /* tools/lt_cmd_vocab.c: vocab add */
int lt_cmd_bench(int argc, char **argv);    /* bench/lt_bench_step.c: bench step (bench kernels: tools/luxtrain.c) */

#endif
