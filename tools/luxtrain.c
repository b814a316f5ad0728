/*
 * luxtrain.c -- the `luxtrain` command: dispatches a subcommand to the module
 * that implements it. Each module exports `int lt_cmd_<name>(int argc, char **argv)`
 * (argv[0] is the subcommand name) returning a process exit code.
 */
#include <stdio.h>
#include <string.h>

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
    if (argc >= 2 && !strcmp(argv[1], "kernels")) return lt_bench_kernels_main(argc - 1, argv + 1);
    return lt_cmd_bench(argc, argv);
}

static const command commands[] = {
    {"inspect", lt_cmd_inspect, "describe a model folder (or a token shard .h5)"},
    {"score", lt_cmd_score, "log-probabilities of a token sequence under a model"},
    {"tokenize", lt_cmd_tokenize, "JSONL instruction sets / corpora -> HDF5 token shards"},
    {"eval", lt_cmd_eval, "multiple-choice evaluation, loss on shards, paired comparison"},
    {"plot", lt_cmd_plot, "SVG of training / eval loss and learning rate against tokens"},
    {"train", lt_cmd_train, "full fine-tuning or LoRA on token shards (checkpoints, --resume, export)"},
    {"generate", lt_cmd_generate, "chat with a model (KV cache; greedy or temperature / top-p)"},
    {"merge", lt_cmd_merge, "fold a PEFT LoRA adapter into its base model (Hugging Face folder)"},
    {"bench", cmd_bench, "bench kernels (vs measured peaks, cuBLAS, PyTorch) | bench step (tokens/s, MFU)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: luxtrain <command> [options]   (luxtrain <command> --help; luxtrain --version)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
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
    fprintf(stderr, "luxtrain: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
