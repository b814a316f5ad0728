/*
 * bench_kernels.c -- microbenchmarks of every op of the backend table at
 * realistic shapes, against measured ceilings and cuBLAS / PyTorch baselines.
 * The suite lives in bench/lt_bench_kernels.c (also `luxtrain bench kernels`);
 * this is its plain binary. bench_kernels --help for the options; the JSON
 * schema is in bench/README.md.
 */
#include "lt_bench_kernels.h"

int main(int argc, char **argv) { return lt_bench_kernels_main(argc, argv); }
