/*
 * lt_bench_step.h -- `luxtrain bench step`: tokens/s, model FLOPs
 * utilisation and peak memory of whole training steps (forward, backward,
 * gradient clipping and AdamW through lt_trainer_step, as `luxtrain train`
 * runs them) on random weights (lt_model_create) of the Llama-3.2-1B /
 * Llama-3.1-8B shapes, the sample model's config or any config.json; full
 * fine-tuning or LoRA. Prints a table and writes JSON (schema
 * luxtrain-bench-step/1 in bench/README.md). bench/lt_bench_step.c.
 *
 * Also home of `luxtrain bench` itself (lt_cmd_bench, tools/lt_cli.h): usage
 * and `bench step` (the step needs the trainer, which core/ cannot link);
 * tools/luxtrain.c sends `bench kernels` to bench/ (lt_bench_kernels.h).
 */
#ifndef LT_BENCH_STEP_H
#define LT_BENCH_STEP_H

#ifdef __cplusplus
extern "C" {
#endif

/* argv[0] is the subcommand name ("step"); returns 0 ok, 1 failure, 2 usage. */
int lt_bench_step_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
