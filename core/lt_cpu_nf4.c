/*
 * lt_cpu_nf4.c -- the NF4 linear (QLoRA's frozen base weights) on the CPU:
 * dequantize the weight (core/lt_nf4.c, bitsandbytes' values exactly), then
 * the fp32 matmul of lt_cpu_matmul.c. The dequantization is split into a
 * fixed number of block ranges that the threads share (every value is
 * computed on its own, so the result does not depend on the thread count).
 */
#include <stdint.h>

#include "lt_cpu.h"
#include "lt_nf4.h"

enum { DQ_PIECES = 64 };

void lt_cpu_nf4_dequant(lt_backend *be, void *w_, const void *wq, size_t n) {
    float *w = (float *)w_;
    size_t nblocks = lt_nf4_layout_of(n).nblocks;
    size_t per = (nblocks + DQ_PIECES - 1) / DQ_PIECES;
    float map[256];
    lt_nf4_dynamic_map(map);
    int nt = lt_cpu_threads_for(be, n);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int p = 0; p < DQ_PIECES; p++)
        lt_nf4_dequantize_blocks(wq, n, (size_t)p * per, (size_t)(p + 1) * per, map, w);
}

/* the dequantized weight (Nout, K) in the backend's scratch, or NULL (failure recorded) */
static float *dequant_scratch(lt_backend *be, const void *wq, int K, int Nout, const char *op) {
    size_t n = (size_t)Nout * (size_t)K;
    float *w = lt_cpu_scratch(be, n ? n : 1);
    if (!w) {
        lt_cpu_fail(be, LT_ERR_NOMEM, "%s: out of memory for the dequantized (%d, %d) weight", op, Nout, K);
        return NULL;
    }
    if (n) lt_cpu_nf4_dequant(be, w, wq, n);
    return w;
}

/* out = x @ dequant(wq)^T (+ bias) */
void lt_cpu_nf4_matmul_fwd(lt_backend *be, void *out, const void *x, const void *wq, const void *bias, int M, int K,
                           int Nout) {
    const float *w = dequant_scratch(be, wq, K, Nout, "nf4_matmul_fwd");
    if (w) lt_cpu_matmul_fwd(be, out, x, w, bias, M, K, Nout);
}

/* dx (= or +=) dout @ dequant(wq) */
void lt_cpu_nf4_matmul_bwd(lt_backend *be, void *dx, int acc_dx, const void *dout, const void *wq, int M, int K,
                           int Nout) {
    const float *w = dequant_scratch(be, wq, K, Nout, "nf4_matmul_bwd");
    if (w) lt_cpu_matmul_bwd(be, dx, acc_dx, NULL, NULL, dout, NULL, w, M, K, Nout);
}
