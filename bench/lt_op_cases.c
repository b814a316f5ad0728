/*
 * lt_op_cases.c -- the op table of lt_op_cases.h: per op its test shapes,
 * and the FLOP / byte formulas of its benchmark results; the tolerances per
 * class and dtype; the --op / --list-ops helpers; the kernel variant
 * switches.
 */
#include "lt_op_cases.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- tolerances ---------------------------------------------------------
 * A bf16 output carries its own rounding, about 1.1e-3 rms relative; f32
 * outputs differ only in summation order. */
static const struct {
    const char *name;
    double f32, bf16;
} TOLS[LT_TOL_COUNT] = {
    [LT_TOL_EXACT] = {"exact", 0.0, 0.0},
    [LT_TOL_ROUND] = {"round", 1e-5, 5e-3},
    [LT_TOL_ROUND2] = {"round2", 1e-5, 1e-2},
    [LT_TOL_F32] = {"f32", 1e-5, 1e-5},
    [LT_TOL_F32ACC] = {"f32acc", 1e-4, 1e-4},
    [LT_TOL_OPT] = {"opt", 1e-6, 1e-6},
    [LT_TOL_SUMSQ] = {"sumsq", 1e-12, 1e-12},
};

double lt_op_tol(lt_op_tol_class c, lt_dtype dt) {
    if ((int)c < 0 || c >= LT_TOL_COUNT) return 0.0;
    return dt == LT_BF16 || dt == LT_F16 ? TOLS[c].bf16 : TOLS[c].f32;
}

const char *lt_op_tol_name(lt_op_tol_class c) { return (int)c >= 0 && c < LT_TOL_COUNT ? TOLS[c].name : "?"; }

/* ---- FLOP and byte formulas (a, p: bytes per activation / parameter) ---- */

#define V(i) (d->v[i])
/* attention: B T Hq Hkv D */
static double att_nq(const lt_op_dims *d) { return V(0) * V(1) * V(2) * V(4); }
static double att_nk(const lt_op_dims *d) { return V(0) * V(1) * V(3) * V(4); }
static double att_fwd_flop(const lt_op_dims *d) { return 4.0 * V(0) * V(2) * V(4) * V(1) * V(1) / 2; }
static double att_fwd_bytes(const lt_op_dims *d) {
    return (2 * att_nq(d) + 2 * att_nk(d)) * d->a + V(0) * V(2) * V(1) * 4;
}
static double att_bwd_flop(const lt_op_dims *d) { return 2.5 * att_fwd_flop(d); }
static double att_bwd_bytes(const lt_op_dims *d) { return att_fwd_bytes(d) + (2 * att_nq(d) + 2 * att_nk(d)) * d->a; }
/* rmsnorm, add_rmsnorm: R C */
static double rms_fwd_bytes(const lt_op_dims *d) { return 2 * V(0) * V(1) * d->a + V(1) * d->p + 4 * V(0); }
static double rms_bwd_bytes(const lt_op_dims *d) {
    return 3 * V(0) * V(1) * d->a + V(1) * d->p + 4 * V(0) + 8 * V(1);
}
static double arms_bytes(const lt_op_dims *d) { return 4 * V(0) * V(1) * d->a + V(1) * d->p + 4 * V(0); }
/* rope: N H D R (the first R dims of each head rotated, the rest untouched) */
static double rope_bytes(const lt_op_dims *d) { return 2.0 * V(0) * V(1) * V(3) * d->a + 4 * V(0) + 2 * V(3); }
/* swiglu: N F */
static double swi_fwd_bytes(const lt_op_dims *d) { return 3.0 * V(0) * V(1) * d->a; }
static double swi_bwd_bytes(const lt_op_dims *d) { return 5.0 * V(0) * V(1) * d->a; }
/* embedding: N C V; extra = distinct ids U */
static double emb_fwd_bytes(const lt_op_dims *d) { return 2.0 * V(0) * V(1) * d->a + 4 * V(0); }
static double emb_bwd_bytes(const lt_op_dims *d) { return V(0) * V(1) * d->a + 8 * d->extra * V(1) + 4 * V(0); }
/* embed_noise: N C */
static double noise_bytes(const lt_op_dims *d) { return 2.0 * V(0) * V(1) * d->a; }
/* matmul: M K N */
static double mm_fwd_flop(const lt_op_dims *d) { return 2.0 * V(0) * V(1) * V(2); }
static double mm_fwd_bytes(const lt_op_dims *d) { return (V(0) * V(1) + V(2) * V(1) + V(0) * V(2)) * d->a; }
static double mm_bwd_flop(const lt_op_dims *d) { return 2 * mm_fwd_flop(d); }
static double mm_bwd_bytes(const lt_op_dims *d) {
    return (2 * V(0) * V(2) + V(2) * V(1) + 2 * V(0) * V(1)) * d->a + 8 * V(2) * V(1);
}
/* lora: M K N r */
static double lora_flop(const lt_op_dims *d) { return 4.0 * V(0) * V(1) * V(2) + 2.0 * V(0) * V(3) * (3 * V(1) + 3 * V(2)); }
static double lora_bytes(const lt_op_dims *d) {
    return (2 * V(0) * V(1) + V(2) * V(1) + 2 * V(0) * V(2)) * d->a + 8 * V(0) * V(3);
}
/* nf4_matmul: M K N; the NF4 weight is 0.5 byte per element + one absmax
 * code per 64 + 4 bytes per 64 * 256 */
static double nf4_wbytes(const lt_op_dims *d) { return V(2) * V(1) * (0.5 + 1.0 / 64 + 4.0 / 16384); }
static double nf4_fwd_bytes(const lt_op_dims *d) { return (V(0) * V(1) + V(0) * V(2)) * d->a + nf4_wbytes(d); }
/* cross_entropy: N V */
static double ce_bytes(const lt_op_dims *d) { return 2.0 * V(0) * V(1) * d->a + 8 * V(0); }
/* adamw: tensors elements r master */
static double adamw_bytes(const lt_op_dims *d) { return V(1) * (V(3) ? 16 + 14 : 28); }
#undef V

static const lt_op_metric MET_EMB[] = {
    {"embedding_fwd", "N C V", "bytes = 2 a N C + 4 N", NULL, emb_fwd_bytes},
    {"embedding_bwd", "N C V", "bytes = a N C + 8 U C + 4 N (U distinct ids)", NULL, emb_bwd_bytes},
};
static const lt_op_metric MET_NOISE[] = {
    {"embed_noise", "N C", "bytes = 2 a N C (in place)", NULL, noise_bytes},
};
static const lt_op_metric MET_MM[] = {
    {"matmul_fwd", "M K N", "flop = 2 M K N; bytes = a (M K + N K + M N)", mm_fwd_flop, mm_fwd_bytes},
    {"matmul_bwd", "M K N", "flop = 4 M K N (dx and dw); bytes = a (2 M N + N K + 2 M K) + 8 N K", mm_bwd_flop,
     mm_bwd_bytes},
};
static const lt_op_metric MET_NF4[] = {
    {"nf4_matmul_fwd", "M K N", "flop = 2 M K N; bytes = a (M K + M N) + N K (0.5 + 1/64 + 4/16384)", mm_fwd_flop,
     nf4_fwd_bytes},
    {"nf4_matmul_bwd", "M K N", "flop = 2 M K N (dx only); bytes = a (M N + M K) + N K (0.5 + 1/64 + 4/16384)",
     mm_fwd_flop, nf4_fwd_bytes},
};
static const lt_op_metric MET_RMS[] = {
    {"rmsnorm_fwd", "R C", "bytes = a (2 R C) + p C + 4 R", NULL, rms_fwd_bytes},
    {"rmsnorm_bwd", "R C", "bytes = a (3 R C) + p C + 4 R + 8 C", NULL, rms_bwd_bytes},
};
static const lt_op_metric MET_ARMS[] = {
    {"add_rmsnorm_fwd", "R C", "bytes = a (4 R C) + p C + 4 R (read x, r; write h, out)", NULL, arms_bytes},
};
static const lt_op_metric MET_ROPE[] = {
    {"rope_fwd", "N H D R", "bytes = 2 a N H R + 4 N + 2 R", NULL, rope_bytes},
    {"rope_bwd", "N H D R", "bytes = 2 a N H R + 4 N + 2 R", NULL, rope_bytes},
};
static const lt_op_metric MET_ATT[] = {
    {"attention_fwd", "B T Hq Hkv D", "flop = 4 B Hq D T^2 / 2 (causal); bytes = a (2 Nq + 2 Nkv) + 4 B Hq T",
     att_fwd_flop, att_fwd_bytes},
    {"attention_bwd", "B T Hq Hkv D", "flop = 2.5 x forward; bytes = a (4 Nq + 4 Nkv) + 4 B Hq T", att_bwd_flop,
     att_bwd_bytes},
};
static const lt_op_metric MET_SWI[] = {
    {"swiglu_fwd", "N F", "bytes = 3 a N F", NULL, swi_fwd_bytes},
    {"swiglu_bwd", "N F", "bytes = 5 a N F", NULL, swi_bwd_bytes},
};
static const lt_op_metric MET_CE[] = {
    {"cross_entropy", "N V", "bytes = 2 a N V + 8 N", NULL, ce_bytes},
};
static const lt_op_metric MET_LORA[] = {
    {"lora_fwd+bwd", "M K N r", "flop = 4 M K N + 2 M r (3 K + 3 N); bytes = a (2 M K + N K + 2 M N) + 8 M r",
     lora_flop, lora_bytes},
};
static const lt_op_metric MET_ADAMW[] = {
    {"adamw", "tensors elements r master",
     "bytes = elements x (28 with f32 params, 30 with bf16 params + f32 master)", NULL, adamw_bytes},
};

/* ---- test shapes (the test mode: CUDA against the CPU) ------------------ */

static const long SH_EMB[][LT_OP_MAXP] = {{50, 64, 37, 50}, {1000, 257, 300, 40} /* many repeats */, {7, 6, 1, 7}};
/* x: 0 = zero input (the draws themselves, bitwise after rounding), 1 = random */
static const long SH_NOISE[][LT_OP_MAXP] = {{1, 1, 0}, {37, 257, 0}, {37, 257, 1}, {1000, 4096, 1}, {3, 70000, 0}};
static const long SH_MM[][LT_OP_MAXP] = {{1, 64, 32, 1}, {37, 96, 51, 0}, {37, 96, 51, 1}, {257, 512, 384, 1}};
/* nf4: M K N bias; N K not a multiple of 64 (a short last block) in some,
 * more than 256 blocks (several nested blocks) in others. The fused kernel's
 * tiles are 128 x 128 outputs x 32 (k): M, N, K past and short of them; K % 8
 * != 0 (element-wise weights and activations; odd K: rows start mid-byte);
 * N % 8 != 0 (dx reads dout element-wise). */
static const long SH_NF4[][LT_OP_MAXP] = {{1, 64, 32, 0},     {37, 96, 51, 1},     {33, 70, 65, 0},
                                          {257, 512, 384, 1}, {5, 4096, 96, 0},    {130, 200, 136, 1},
                                          {129, 33, 257, 1},  {200, 72, 129, 0},   {3, 1032, 1000, 1},
                                          {300, 264, 520, 0}};
static const long SH_RMS[][LT_OP_MAXP] = {{1, 64}, {37, 257}, {300, 1024}, {1000, 128} /* q/k norm: R = N*H */};
/* C picks the CUDA kernel: the vector one for C % 8 == 0 up to 8192 (1..32
 * vectors per lane), scalar otherwise */
static const long SH_ARMS[][LT_OP_MAXP] = {
    {1, 64},   {37, 257} /* scalar */, {1000, 128} /* 1 vector per lane */, {5, 136} /* a partial warp */,
    {300, 1024}, {64, 2048}, {9, 3584} /* 14 per lane of 16 */, {33, 4096}, {17, 5120}, {3, 8192},
    {4, 8200} /* past the vector kernel */};
/* R: rotary dims (partial rotary when < D); f1000: LongRoPE's cos/sin scale x 1000 */
static const long SH_ROPE[][LT_OP_MAXP] = {{5, 2, 64, 64, 1000},   {37, 3, 128, 128, 1000}, {20, 4, 256, 256, 1000},
                                           {9, 2, 6, 6, 1000},     {37, 3, 128, 96, 1190} /* Phi-4-mini */,
                                           {11, 5, 96, 24, 1000},  {6, 2, 6, 2, 1500}};
/* docs: 0 one document per sequence, 1 many (one-token ones too), 2 a
 * padding tail, 3 documents up to 300 tokens (spanning tiles) */
static const long SH_ATT[][LT_OP_MAXP] = {
    {1, 1, 2, 1, 64, 0} /* one token */,       {2, 37, 4, 1, 64, 0} /* GQA 4, odd T */,
    {1, 70, 8, 1, 128, 1} /* GQA 8 */,         {2, 45, 2, 2, 256, 1} /* GQA 1, D = 256 */,
    {1, 130, 8, 2, 128, 2} /* padding tail */, {2, 33, 4, 2, 6, 1} /* small D: v2 falls back */,
    {1, 50, 4, 4, 16, 0},
    /* v2 tile edges: T = 1, 17, 64 (one tile), 200, 1000; D = 64/128/256 */
    {1, 1, 8, 1, 128, 0}, {1, 1, 4, 4, 256, 0}, {2, 17, 4, 1, 128, 1}, {1, 17, 2, 2, 256, 2},
    {2, 64, 8, 2, 64, 1}, {1, 64, 4, 1, 256, 0}, {2, 200, 8, 1, 64, 1}, {1, 200, 4, 4, 128, 2},
    {1, 200, 2, 1, 256, 3}, {1, 1000, 8, 2, 128, 3} /* long documents */, {1, 1000, 4, 1, 64, 1},
    {1, 1000, 2, 2, 256, 0}, {2, 1000, 8, 8, 128, 0}};
static const long SH_N[][LT_OP_MAXP] = {{1}, {1001}, {65537}};
/* neg_inf: -inf logits (a masked vocabulary): the first 600 of every row (so
 * every thread of a 512-thread row starts on -inf) and every 7th, never the
 * target */
static const long SH_CE[][LT_OP_MAXP] = {{1, 10, 0}, {37, 1000, 0}, {8, 50001, 0}, {5, 1000, 1}, {3, 50001, 1}};
/* chunk: v2 row chunks (0 automatic) */
static const long SH_LORA[][LT_OP_MAXP] = {
    {1, 64, 32, 4, 0, 0, 0},         {37, 96, 51, 8, 1, 0, 0},  {130, 256, 200, 16, 0, 1, 0},
    {65, 128, 70, 64, 1, 1, 0},      {130, 200, 96, 33, 1, 0, 32} /* 5 chunks, the last ragged */,
    {100, 64, 300, 1, 0, 1, 7} /* r = 1, chunks of 7 rows */, {512, 1024, 768, 16, 0, 0, 0}};
static const long SH_SUMSQ[][LT_OP_MAXP] = {{1}, {1000}, {(1L << 20) + 3}};
static const long SH_ADAMW[][LT_OP_MAXP] = {{3}};

/* ---- cpu shapes (the cpu mode: the CPU backend against float64
 * references, finite differences and PyTorch fixtures) -------------------- */

static const long CS_EMB[][LT_OP_MAXP] = {{7, 19, 37}, {50, 5, 130} /* C spans several column blocks */};
/* the distribution (bounds, mean, variance) and the formula's sums */
static const long CS_NOISE[][LT_OP_MAXP] = {{1, 1}, {64, 1024}, {513, 77}};
/* panels: C cut into panels of rows (M large) or columns (N large) */
static const long CS_MM[][LT_OP_MAXP] = {{7, 13, 5, 1, 0},    {1, 1, 1, 1, 0},       {33, 17, 9, 0, 0},
                                         {4, 70, 67, 1, 0} /* bias over column blocks */,
                                         {1030, 128, 96, 0, 1}, {40, 96, 1100, 0, 1}};
/* nf4: M K N bias; dequantization bit for bit against core/lt_nf4.c, the
 * forward against a double reference, dx by finite differences */
static const long CS_NF4[][LT_OP_MAXP] = {{7, 13, 5, 1}, {5, 70, 33, 0}, {3, 64, 300, 1}};
static const long CS_LORA[][LT_OP_MAXP] = {{6, 11, 7, 3, 1}, {9, 8, 5, 1, 0}, {3, 16, 12, 4, 1}};
static const long CS_RMS[][LT_OP_MAXP] = {{5, 16}, {7, 33}, {3, 2}, {2, 130}};
static const long CS_ARMS[][LT_OP_MAXP] = {{5, 16}, {7, 33}, {1, 1}, {3, 130}};
static const long CS_ROPE[][LT_OP_MAXP] = {{7, 3, 8, 8192, 8, 1000},    {5, 2, 2, 100, 2, 1000},
                                           {4, 1, 34, 131071, 34, 1000}, {6, 3, 16, 9000, 12, 1190} /* partial, LongRoPE */,
                                           {5, 2, 10, 300, 2, 1000},     {3, 2, 12, 50, 6, 1500}};
/* LA = 0: the fixed document layouts of test_cpu_ops.c (one-token
 * documents, GQA 1/2/4, 64-row query blocks); else two documents of LA and
 * LB tokens packed in one sequence equal separate runs */
static const long CS_ATT[][LT_OP_MAXP] = {{0, 0, 0, 0, 0},     {130, 70, 4, 2, 8} /* blocks at other offsets */,
                                          {1, 129, 2, 1, 5},   {450, 77, 2, 1, 4} /* long rows of keys */,
                                          {5, 4, 4, 2, 6},     {1, 7, 2, 2, 3},
                                          {6, 1, 4, 1, 8}};
static const long CS_SWI[][LT_OP_MAXP] = {{101}, {1}};
static const long CS_ADD[][LT_OP_MAXP] = {{77}};
/* shift: added to every logit (large positive / negative logits) */
static const long CS_CE[][LT_OP_MAXP] = {{6, 29, 0}, {4, 7, 60}, {3, 1, 0}, {40, 300, -5}};
static const long CS_SUMSQ[][LT_OP_MAXP] = {{1}, {1000}, {3L * 65536 + 17}};
/* 0: AdamW against the formula in double, 1: against torch.optim.AdamW
 * (tests/fixtures/cpu_ops/adamw_torch.bin) */
static const long CS_ADAMW[][LT_OP_MAXP] = {{0}, {1}};

/* Gemma ops. rmsnorm_off: w_off_x10 = the weight offset times 10 (Gemma: 10). */
static const long CS_RMSO[][LT_OP_MAXP] = {{5, 16, 10}, {7, 33, 10}, {2, 130, 5}};
/* attention_cap: cap_x10 = the soft-cap times 10 (0: none), window (0: none) */
static const long CS_ATTC[][LT_OP_MAXP] = {{50, 0}, {0, 4}, {15, 3}, {20, 70} /* window past a 64-row block */};
static const long CS_CEC[][LT_OP_MAXP] = {{6, 29, 0, 3}, {4, 7, 60, 30}, {40, 300, -5, 2}};
static const long SH_RMSO[][LT_OP_MAXP] = {{1, 64, 10}, {37, 257, 10}, {300, 1024, 10}, {9, 3584, 10}};
/* B T Hq Hkv D docs cap_x10 window (docs as in SH_ATT). The random scores
 * scale q.k are about 0.3 in size, so caps of 30 / 50 are nearly linear and
 * the caps 0.3 - 1 below are the ones that bind (tanh well past linear).
 * Head dims 64 / 128 / 256 run v2 (tensor cores) and v1, capped or not. */
static const long SH_ATTC[][LT_OP_MAXP] = {
    {2, 37, 4, 1, 64, 0, 500, 0},  {1, 70, 8, 1, 128, 1, 500, 16}, {2, 45, 2, 2, 256, 1, 300, 8},
    {1, 130, 8, 2, 128, 2, 0, 33}, {1, 200, 4, 2, 256, 3, 500, 64}, {1, 1000, 8, 4, 256, 3, 500, 100},
    {1, 1, 2, 1, 128, 0, 3, 1} /* one token */,
    {2, 64, 8, 1, 64, 1, 3, 16} /* GQA 8, binding cap, window inside a tile */,
    {2, 17, 4, 4, 256, 0, 5, 0} /* cap only, D = 256, a partial tile */,
    {1, 300, 8, 2, 128, 3, 5, 100} /* long documents, window across key tiles */,
    {1, 200, 8, 4, 256, 1, 10, 1} /* window 1: each query sees itself */,
    {1, 1000, 4, 1, 64, 1, 5, 128} /* GQA 4, many key tiles skipped by the window */,
    {1, 600, 8, 4, 256, 0, 500, 256} /* Gemma 2 2B's attention: 8 / 4 heads of 256, cap 50, window < T */};
/* N V neg_inf cap_x10 */
static const long SH_CEC[][LT_OP_MAXP] = {{37, 1000, 0, 300}, {8, 50001, 0, 300}, {5, 1000, 1, 30}};
static const lt_op_metric MET_RMSO[] = {
    {"rmsnorm_off_fwd", "R C", "bytes = a (2 R C) + p C + 4 R", NULL, rms_fwd_bytes},
    {"rmsnorm_off_bwd", "R C", "bytes = a (3 R C) + p C + 4 R + 8 C", NULL, rms_bwd_bytes},
};
static const lt_op_metric MET_GEGLU[] = {
    {"geglu_fwd", "N F", "bytes = 3 a N F", NULL, swi_fwd_bytes},
    {"geglu_bwd", "N F", "bytes = 5 a N F", NULL, swi_bwd_bytes},
};
static const lt_op_metric MET_ATTC[] = {
    {"attention_cap_fwd", "B T Hq Hkv D", "flop = 4 B Hq D T^2 / 2 (causal, no window); bytes as attention_fwd",
     att_fwd_flop, att_fwd_bytes},
    {"attention_cap_bwd", "B T Hq Hkv D", "flop = 2.5 x forward; bytes as attention_bwd", att_bwd_flop,
     att_bwd_bytes},
};
static const lt_op_metric MET_CEC[] = {
    {"cross_entropy_cap", "N V", "bytes = 2 a N V + 8 N", NULL, ce_bytes},
};
static const lt_op_metric MET_SCALE[] = {
    {"scale", "N C", "bytes = 2 a N C (in place)", NULL, noise_bytes},
};
static const lt_op_metric MET_COPY[] = {
    {"copy", "N C", "bytes = 2 a N C (read and write)", NULL, noise_bytes},
};
/* copy: bytes, and the offsets (bytes) of dst and src in their buffers
 * (unaligned starts and lengths) */
static const long SH_COPY[][LT_OP_MAXP] = {{1, 0, 0}, {1001, 3, 5}, {65537, 0, 0}, {(1L << 20) + 7, 1, 255}};
static const long CS_COPY[][LT_OP_MAXP] = {{1, 0, 0}, {77, 3, 1}, {4099, 0, 6}};
/* sumsq_units: n unit (units not dividing n, one unit, a unit of 1, units
 * across the CPU's 65536-element chunks, > 4096 units) */
static double sumsq_units_bytes(const lt_op_dims *d) { return 4 * d->v[0] + 8 * ceil(d->v[0] / d->v[1]); }
static const lt_op_metric MET_SUMSQU[] = {
    {"sumsq_units", "n unit", "bytes = 4 n + 8 ceil(n / unit) (f32 read, one double per unit)", NULL,
     sumsq_units_bytes},
};
static const long SH_SUMSQU[][LT_OP_MAXP] = {{1, 256},     {1000, 256},  {5, 1000},          {1000, 1},
                                             {300000, 70000}, {3L * 65536 + 17, 65536}, {4100L * 256 + 5, 256}};
static const long CS_SUMSQU[][LT_OP_MAXP] = {{1, 256}, {1000, 256}, {5, 1000}, {300000, 70000}};

#define N_(a) (int)(sizeof(a) / sizeof((a)[0]))
#define NONE NULL, 0

const lt_op_entry lt_op_table[] = {
    {"embedding", "embedding_fwd embedding_bwd", "token embedding lookup and its scatter-add gradient",
     "V C N id_range", SH_EMB, N_(SH_EMB), "", "V N C", CS_EMB, N_(CS_EMB), MET_EMB, N_(MET_EMB)},
    {"embed_noise", "embed_noise", "NEFTune: uniform noise on the embedding output, in place", "N C x", SH_NOISE,
     N_(SH_NOISE), "", "N C", CS_NOISE, N_(CS_NOISE), MET_NOISE, N_(MET_NOISE)},
    {"matmul", "matmul_fwd matmul_bwd", "x W^T (+ bias) and dx, dW, dbias", "M K N bias", SH_MM, N_(SH_MM), "",
     "M K N bias panels", CS_MM, N_(CS_MM), MET_MM, N_(MET_MM)},
    {"rmsnorm", "rmsnorm_fwd rmsnorm_bwd", "RMSNorm and its gradients", "R C", SH_RMS, N_(SH_RMS), "", "R C", CS_RMS,
     N_(CS_RMS), MET_RMS, N_(MET_RMS)},
    {"add_rmsnorm", "add_rmsnorm_fwd", "residual add fused with RMSNorm (in place too)", "R C", SH_ARMS, N_(SH_ARMS),
     "", "R C", CS_ARMS, N_(CS_ARMS), MET_ARMS, N_(MET_ARMS)},
    {"rope", "rope_fwd rope_bwd", "rotary position embedding (partial, scaled cos/sin), in place", "N H D R f1000",
     SH_ROPE, N_(SH_ROPE), "", "N H D max_pos R f1000", CS_ROPE, N_(CS_ROPE), MET_ROPE, N_(MET_ROPE)},
    {"attention", "attention_fwd attention_bwd", "causal GQA attention over packed documents",
     "B T Hq Hkv D docs", SH_ATT, N_(SH_ATT), "attention v1, v2", "LA LB Hq Hkv D", CS_ATT, N_(CS_ATT), MET_ATT,
     N_(MET_ATT)},
    {"swiglu", "swiglu_fwd swiglu_bwd", "silu(gate) * up and its gradients", "n", SH_N, N_(SH_N), "", "n", CS_SWI,
     N_(CS_SWI), MET_SWI, N_(MET_SWI)},
    {"add", "add", "elementwise add (in place too)", "n", SH_N, N_(SH_N), "", "n", CS_ADD, N_(CS_ADD), NONE},
    {"cross_entropy", "cross_entropy", "softmax cross-entropy: loss and dlogits (in place too)", "N V neg_inf", SH_CE,
     N_(SH_CE), "", "N V shift", CS_CE, N_(CS_CE), MET_CE, N_(MET_CE)},
    {"lora", "lora_fwd lora_bwd", "frozen x W^T + scale (x A^T) B^T and its gradients",
     "M K N r bias dropout chunk", SH_LORA, N_(SH_LORA), "lora v1, v2", "M K N r bias", CS_LORA, N_(CS_LORA),
     MET_LORA, N_(MET_LORA)},
    {"sumsq", "sumsq", "sum of squares in double (global-norm clipping)", "n", SH_SUMSQ, N_(SH_SUMSQ), "", "n",
     CS_SUMSQ, N_(CS_SUMSQ), NONE},
    {"adamw", "adamw", "fused multi-tensor AdamW (f32, bf16 + f32 master)", "steps", SH_ADAMW, N_(SH_ADAMW), "",
     "reference", CS_ADAMW, N_(CS_ADAMW), MET_ADAMW, N_(MET_ADAMW)},
    {"rmsnorm_off", "rmsnorm_off_fwd rmsnorm_off_bwd add_rmsnorm_off_fwd",
     "RMSNorm with a weight offset, x * rstd * (w_off + w) (Gemma), and its fused residual add", "R C w_off_x10",
     SH_RMSO, N_(SH_RMSO), "", "R C w_off_x10", CS_RMSO, N_(CS_RMSO), MET_RMSO, N_(MET_RMSO)},
    {"geglu", "geglu_fwd geglu_bwd", "gelu_tanh(gate) * up and its gradients", "n", SH_N, N_(SH_N), "", "n", CS_SWI,
     N_(CS_SWI), MET_GEGLU, N_(MET_GEGLU)},
    {"attention_cap", "attention_cap_fwd attention_cap_bwd",
     "attention with soft-capped scores (tanh) and sliding-window lower bounds", "B T Hq Hkv D docs cap_x10 window",
     SH_ATTC, N_(SH_ATTC), "attention v1, v2", "cap_x10 window", CS_ATTC, N_(CS_ATTC), MET_ATTC, N_(MET_ATTC)},
    {"cross_entropy_cap", "cross_entropy_cap", "cross-entropy on soft-capped logits (fused tanh, loss and dlogits)",
     "N V neg_inf cap_x10", SH_CEC, N_(SH_CEC), "", "N V shift cap", CS_CEC, N_(CS_CEC), MET_CEC, N_(MET_CEC)},
    {"scale", "scale", "x *= s in place (embedding normalizer)", "n", SH_N, N_(SH_N), "", "n", CS_ADD, N_(CS_ADD),
     MET_SCALE, N_(MET_SCALE)},
    {"nf4_matmul", "nf4_dequant nf4_matmul_fwd nf4_matmul_bwd",
     "QLoRA: x W^T with an NF4 weight (bitsandbytes' double quantization) and dx", "M K N bias", SH_NF4,
     N_(SH_NF4), "nf4 v1, v2", "M K N bias", CS_NF4, N_(CS_NF4), MET_NF4, N_(MET_NF4)},
    {"copy", "copy", "device-to-device byte copy on the backend's stream (ZeRO-3's own part)",
     "bytes dst_off src_off", SH_COPY, N_(SH_COPY), "", "bytes dst_off src_off", CS_COPY, N_(CS_COPY), MET_COPY,
     N_(MET_COPY)},
    {"sumsq_units", "sumsq_units",
     "sum of squares per unit of a vector, one host synchronisation (data-parallel gradient norm)", "n unit",
     SH_SUMSQU, N_(SH_SUMSQU), "", "n unit", CS_SUMSQU, N_(CS_SUMSQU), MET_SUMSQU, N_(MET_SUMSQU)},
};
const int lt_op_count = N_(lt_op_table);

const lt_op_entry *lt_op_find(const char *name) {
    for (int i = 0; name && i < lt_op_count; i++)
        if (!strcmp(lt_op_table[i].name, name)) return &lt_op_table[i];
    return NULL;
}

const lt_op_metric *lt_op_metric_find(const char *result, const lt_op_entry **op) {
    for (int i = 0; result && i < lt_op_count; i++)
        for (int j = 0; j < lt_op_table[i].n_metrics; j++)
            if (!strcmp(lt_op_table[i].metrics[j].result, result)) {
                if (op) *op = &lt_op_table[i];
                return &lt_op_table[i].metrics[j];
            }
    return NULL;
}

double lt_op_flop(const char *result, const lt_op_dims *d) {
    const lt_op_metric *m = lt_op_metric_find(result, NULL);
    return m && m->flop ? m->flop(d) : 0.0;
}

double lt_op_bytes(const char *result, const lt_op_dims *d) {
    const lt_op_metric *m = lt_op_metric_find(result, NULL);
    return m && m->bytes ? m->bytes(d) : 0.0;
}

int lt_op_check_name(const char *prog, const char *name) {
    if (!name || lt_op_find(name)) return 1;
    fprintf(stderr, "%s: unknown op '%s' (--op expects one of:", prog, name);
    for (int i = 0; i < lt_op_count; i++) fprintf(stderr, " %s", lt_op_table[i].name);
    fprintf(stderr, ")\n");
    return 0;
}

int lt_op_selected(const char *sel, const char *op) { return !sel || !strcmp(sel, op); }

void lt_op_list(FILE *f) {
    for (int i = 0; i < lt_op_count; i++) {
        const lt_op_entry *e = &lt_op_table[i];
        fprintf(f, "%-14s %-30s %s\n", e->name, e->slots, e->what);
    }
}

int lt_op_parse_args(const char *prog, int argc, char **argv, const char **only) {
    *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--op") && i + 1 < argc) {
            *only = argv[++i];
            if (!lt_op_check_name(prog, *only)) return 2;
        } else if (!strcmp(argv[i], "--list-ops")) {
            lt_op_list(stdout);
            return 0;
        } else {
            int help = !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
            if (!help) fprintf(stderr, "%s: unknown or incomplete option '%s'\n", prog, argv[i]);
            fprintf(help ? stdout : stderr,
                    "usage: %s [--op NAME] [--list-ops]\n  the ops of the op case table (bench/lt_op_cases.c; "
                    "bench/README.md), or one of them\n",
                    prog);
            return help ? 0 : 2;
        }
    }
    return -1;
}

int lt_op_run_table(const char *prog, lt_op_mode mode, const lt_op_runner *runners, int n, const char *only,
                    const int *failures) {
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (!lt_op_find(runners[i].op)) {
            fprintf(stderr, "%s: runner '%s' has no entry in bench/lt_op_cases.c\n", prog, runners[i].op);
            bad++;
        }
    for (int o = 0; o < lt_op_count; o++) {
        const lt_op_entry *e = &lt_op_table[o];
        const long(*shapes)[LT_OP_MAXP] = mode == LT_OP_MODE_TEST ? e->test_shapes : e->cpu_shapes;
        int ns = mode == LT_OP_MODE_TEST ? e->n_test_shapes : e->n_cpu_shapes, r = 0;
        if (!lt_op_selected(only, e->name)) continue;
        while (r < n && strcmp(runners[r].op, e->name)) r++;
        if (r == n || ns == 0) {
            fprintf(stderr, "%s: op '%s' of bench/lt_op_cases.c has no %s here\n", prog, e->name,
                    r == n ? "runner" : "shapes for this mode");
            bad++;
            continue;
        }
        int before = *failures;
        for (int k = 0; k < ns; k++) runners[r].run(shapes[k]);
        int vars = mode == LT_OP_MODE_TEST && *e->variants;
        printf("  %-14s %2d shapes%s%s: %s\n", e->name, ns, vars ? ", " : "", vars ? e->variants : "",
               *failures == before ? "ok" : "FAILED");
    }
    return bad;
}

/* ---- kernel variants: the one place the checks and benchmarks pick one */

#define LT_OP_DEFAULT_VERSION 2 /* the CUDA backend's default (backends/lt_backends.h) */

lt_status lt_op_att_variant(lt_backend *be, int version, lt_err *err) {
    char v[16];
    if (!be->set_option) return LT_OK;
    snprintf(v, sizeof v, "%d", version > 0 ? version : LT_OP_DEFAULT_VERSION);
    return lt_backend_set_option(be, "attn_version", v, err);
}

lt_status lt_op_nf4_variant(lt_backend *be, int version, lt_err *err) {
    char v[16];
    if (!be->set_option) return LT_OK;
    snprintf(v, sizeof v, "%d", version > 0 ? version : LT_OP_DEFAULT_VERSION);
    return lt_backend_set_option(be, "nf4_version", v, err);
}

lt_status lt_op_lora_variant(lt_backend *be, int version, int chunk_rows, lt_err *err) {
    char v[16];
    if (!be->set_option) return LT_OK;
    snprintf(v, sizeof v, "%d", chunk_rows > 0 ? chunk_rows : 0);
    lt_status st = lt_backend_set_option(be, "lora_chunk_rows", v, err);
    if (st != LT_OK) return st;
    snprintf(v, sizeof v, "%d", version > 0 ? version : LT_OP_DEFAULT_VERSION);
    return lt_backend_set_option(be, "lora_version", v, err);
}
