/*
 * luxtrain.c -- the `luxtrain` command: dispatches a subcommand to the module
 * that implements it. Each module exports `int lt_cmd_<name>(int argc, char **argv)`
 * (argv[0] is the subcommand name) returning a process exit code.
 *
 * OpenMP's idle threads spin by default, which slows a run several times when
 * another process shares the cores. Unless the user set OMP_WAIT_POLICY,
 * main() sets it to "passive" and executes itself again once (the OpenMP
 * runtime reads its environment when it is loaded, before main), so the
 * process and its children run with idle threads that sleep.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt_bench_kernels.h" /* bench/: `bench kernels` */
#include "lt_cli.h"
#include "lt_version.h" /* LT_COMMIT, written at build time */

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

/* `bench kernels` is the perf mode of the op table (bench/, lt_bench); the
 * rest of `bench` (`bench step` needs the trainer) is train's lt_cmd_bench. */
static int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "kernels")) {
        char prog[] = "luxtrain bench kernels"; /* its usage and messages name the real command line */
        argv[1] = prog;
        return lt_bench_kernels_main(argc - 1, argv + 1);
    }
    return lt_cmd_bench(argc, argv);
}

static const command commands[] = {
    {"inspect", lt_cmd_inspect, "describe a model folder, a token shard .h5, a run or a checkpoint"},
    {"score", lt_cmd_score, "log-probabilities of a token sequence under a model"},
    {"tokenize", lt_cmd_tokenize, "JSONL instruction sets / corpora -> HDF5 token shards"},
    {"eval", lt_cmd_eval, "multiple-choice evaluation, loss on shards, paired comparison"},
    {"plot", lt_cmd_plot, "SVG of training / eval loss and learning rate against tokens"},
    {"train", lt_cmd_train, "full fine-tuning or LoRA on token shards (checkpoints, --resume, export)"},
    {"generate", lt_cmd_generate, "chat with a model (KV cache; greedy or temperature / top-p)"},
    {"merge", lt_cmd_merge, "fold a PEFT LoRA adapter into its base model (Hugging Face folder)"},
    {"export", lt_cmd_export, "a training checkpoint -> what final/ holds at its step (HF folder or PEFT adapter)"},
    {"vocab", lt_cmd_vocab, "vocab add: new tokens as tokenizer.add_tokens + resize_token_embeddings (mean rows)"},
    {"bench", cmd_bench, "bench kernels (vs measured peaks, cuBLAS, PyTorch) | bench step (tokens/s, MFU)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: luxtrain <command> [options]   (luxtrain <command> --help; luxtrain --version)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
}

/* OMP_WAIT_POLICY=passive unless the user chose; re-executes this program
 * (returns only when it is set already or the re-execution failed) */
static void default_passive_omp(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* no /proc: the OpenMP runtime keeps its default policy; children still get passive */
}

int main(int argc, char **argv) {
    default_passive_omp(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("luxtrain %s (commit %s)\nbuild: %s\n", LT_VERSION, LT_COMMIT, LT_BUILD_OPTIONS);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    lt_nearest near = {0};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) lt_nearest_offer(&near, argv[1], commands[i].name);
    const char *best = lt_nearest_best(&near, argv[1]);
    fprintf(stderr, "luxtrain: unknown command '%s'%s%s%s\n", argv[1], best ? "; did you mean '" : "", best ? best : "",
            best ? "'?" : "");
    usage(stderr);
    return 2;
}
