/*
 * lt_bench_kernels.h -- the perf mode of the op case table (lt_op_cases.h):
 * `luxtrain bench kernels` and bench/bench_kernels (a thin main around it).
 *
 * For every op of the table at realistic shapes (Llama-3.2-1B, Llama-3.1-8B,
 * Qwen2.5-14B; tiny shapes on the CPU) it measures the median time over warm
 * runs, the achieved TFLOP/s or GB/s (FLOPs and bytes by the table's
 * formulas), the percentage of the device's peak measured in the same run (a
 * large device-to-device copy, a large cuBLAS bf16 GEMM), and the ratio to a
 * baseline measured in the same run (cuBLAS, the frozen-weight GEMMs for
 * LoRA, PyTorch through bench/bench_kernels_torch.py). Prints a table and
 * writes JSON (schema in bench/README.md). bench/lt_bench_kernels.c; the
 * CUDA timing helpers it uses are declared in cuda/lt_cuda_bench.h (implemented
 * in cuda/lt_cuda_bench.cu).
 */
#ifndef LT_BENCH_KERNELS_H
#define LT_BENCH_KERNELS_H

#ifdef __cplusplus
extern "C" {
#endif

/* argv[0] is the program or subcommand name. --op NAME runs one op of the
 * table, --list-ops lists them. Returns a process exit code (0 ok, 1
 * failure, 2 usage). */
int lt_bench_kernels_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
