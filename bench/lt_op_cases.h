/*
 * lt_op_cases.h -- the one list of op cases that drives the three modes of
 * the op checks (bench/README.md), as ggml's test-backend-ops does:
 *   test  tests/test_backend_ops.c: CUDA against the CPU backend (or a second
 *         CPU backend with LT_BACKEND_OPS_SELFTEST=1), the test shapes below;
 *   cpu   tests/test_cpu_ops.c: the CPU backend against PyTorch / float64
 *         fixtures and finite differences;
 *   perf  `luxtrain bench kernels` (bench/lt_bench_kernels.c): realistic
 *         shapes, FLOPs and bytes by the formulas below.
 * Each op (the --op NAME of every mode) has one entry: the backend slots it
 * covers, its test shapes, the tolerance class of each output, and the
 * FLOP / byte formulas of its benchmark results. A new op needs one entry
 * here plus its CPU and CUDA code and the op's body in each mode's runner;
 * every mode refuses an --op NAME not in this list.
 *
 * Kernel variants (attention v1/v2, LoRA v1/v2 and row chunks, NF4 v1/v2)
 * are chosen by lt_op_att_variant / lt_op_lora_variant / lt_op_nf4_variant
 * only.
 */
#ifndef LT_OP_CASES_H
#define LT_OP_CASES_H

#include <stdio.h>

#include "lt_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LT_OP_MAXP 8

/* Tolerance classes (normalized error ||got - ref|| / ||ref||), stated per
 * dtype of the compared buffer in lt_op_tol. */
typedef enum {
    LT_TOL_EXACT,   /* pure copies (embedding_fwd) */
    LT_TOL_ROUND,   /* one rounding of an fp32 result to the output dtype */
    LT_TOL_ROUND2,  /* two roundings (lora v1) or a long chain (attention bwd) */
    LT_TOL_F32,     /* f32 results of exact inputs, fp32 accumulation (rstd, lse, loss, xa) */
    LT_TOL_F32ACC,  /* f32 parameter gradients summed over many rows (dw, dA, dB) */
    LT_TOL_OPT,     /* AdamW: same formula, same rounding order */
    LT_TOL_SUMSQ,   /* double accumulation */
    LT_TOL_COUNT
} lt_op_tol_class;

/* The tolerance of class c for an output stored as dt (F32 or BF16; I32 and
 * other dtypes get the F32 figure). */
double lt_op_tol(lt_op_tol_class c, lt_dtype dt);
const char *lt_op_tol_name(lt_op_tol_class c);

/* Dimensions of one benchmark result: v[] in the order of the result's keys
 * (lt_op_metric.keys), a / p bytes per activation / parameter element, extra
 * an op-specific count (embedding_bwd: distinct ids U). */
typedef struct lt_op_dims {
    double v[LT_OP_MAXP];
    double a, p, extra;
} lt_op_dims;

/* One benchmark result kind of an op (matmul: matmul_fwd and matmul_bwd). */
typedef struct lt_op_metric {
    const char *result;  /* result "op" in the bench JSON */
    const char *keys;    /* its shape keys, space separated */
    const char *formula; /* the text of flop / bytes below (JSON "formula") */
    double (*flop)(const lt_op_dims *d); /* 0: memory-bound */
    double (*bytes)(const lt_op_dims *d);
} lt_op_metric;

/* One op: the unit of --op NAME. */
typedef struct lt_op_entry {
    const char *name;        /* --op NAME */
    const char *slots;       /* the lt_backend slots it covers, space separated */
    const char *what;        /* one line for --list-ops */
    const char *test_keys;   /* the test shapes' parameters, space separated */
    const long (*test_shapes)[LT_OP_MAXP];
    int n_test_shapes;
    const char *variants;    /* kernel variants the test mode runs ("" if none) */
    const char *cpu_keys;    /* the cpu mode's shapes (small: finite differences, fixtures) */
    const long (*cpu_shapes)[LT_OP_MAXP];
    int n_cpu_shapes;
    const lt_op_metric *metrics;
    int n_metrics;
} lt_op_entry;

extern const lt_op_entry lt_op_table[];
extern const int lt_op_count;

/* The entry named `name` (NULL if none). */
const lt_op_entry *lt_op_find(const char *name);
/* The metric whose result is `result` (e.g. "matmul_bwd"), and its op. */
const lt_op_metric *lt_op_metric_find(const char *result, const lt_op_entry **op);
/* FLOPs / bytes of a benchmark result by its formula (0 if unknown). */
double lt_op_flop(const char *result, const lt_op_dims *d);
double lt_op_bytes(const char *result, const lt_op_dims *d);

/* `--op NAME` of every mode: 1 if name is NULL or an op of the table, else
 * an error naming the known ops on stderr (prog: the program) and 0. */
int lt_op_check_name(const char *prog, const char *name);
/* 1 if `op` is selected by the --op filter `sel` (NULL: all). */
int lt_op_selected(const char *sel, const char *op);
/* `--list-ops`: one line per op (name, slots, description). */
void lt_op_list(FILE *f);

/* The runners of the test and cpu modes: one per op, called with each of
 * the op's shapes of that mode. */
typedef enum { LT_OP_MODE_TEST, LT_OP_MODE_CPU } lt_op_mode;
typedef struct lt_op_runner {
    const char *op;
    void (*run)(const long *shape);
} lt_op_runner;

/* [--op NAME] [--list-ops] [--help] of a mode's program: -1 to go on (*only
 * = the op or NULL), else the exit code (0 after --list-ops / --help, 2 on
 * a bad option or an unknown op, with a message). */
int lt_op_parse_args(const char *prog, int argc, char **argv, const char **only);
/* Every op of the table selected by `only`: its runner over its shapes of
 * `mode`, then a line "  NAME  N shapes: ok | FAILED" (failures: the
 * caller's failure counter, read before and after). Returns the number of
 * disagreements with the table (a runner without an op, an op without a
 * runner or shapes), each named on stderr. */
int lt_op_run_table(const char *prog, lt_op_mode mode, const lt_op_runner *runners, int n, const char *only,
                    const int *failures);

/* Kernel variants, set before a run through lt_backend_set_option (the
 * CUDA backend's options attn_version, lora_version, lora_chunk_rows,
 * nf4_version); a
 * backend without options (the CPU) has no variants: nothing to set.
 * attention: version 1 (CUDA cores) or 2 (tensor cores); lora: version 1 or
 * 2, chunk_rows > 0 forces v2's row chunks that small. version 0 = the
 * default (2, automatic chunks). */
lt_status lt_op_att_variant(lt_backend *be, int version, lt_err *err);
lt_status lt_op_lora_variant(lt_backend *be, int version, int chunk_rows, lt_err *err);
/* nf4_matmul: version 1 (dequantized tiles + cuBLAS) or 2 (fused kernel). */
lt_status lt_op_nf4_variant(lt_backend *be, int version, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
