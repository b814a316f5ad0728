/*
 * lt_cuda_nf4.cu -- the NF4 linear (QLoRA's frozen base weights): weights in
 * bitsandbytes' NF4 format with double quantization (core/lt_nf4.h), a fused
 * dequantize + cuBLAS path:
 *   - a dequantization kernel writes a rectangle of the weight as bf16 into
 *     the backend's scratch (bf16 rounding: once, of the exact fp32 value
 *     nf4[q] * absmax, computed with __fmul_rn / __fadd_rn like the CPU
 *     reference, so the bf16 weight equals the CPU's rounded to bf16);
 *   - cuBLAS GemmEx (bf16 operands, fp32 compute) on that tile.
 * The weight is dequantized in tiles of at most TILE_ELEMS elements, so the
 * scratch stays bounded for any layer: the forward takes tiles of whole rows
 * (out columns n0..n1, no reduction split: one rounding of out), dx tiles of
 * whole columns (dx columns k0..k1, again one rounding). Each tile is
 * dequantized on the fly for the GEMM that reads it and never kept.
 */
#include <stdint.h>

#include "lt_cuda.h"
#include "lt_nf4.h"

enum { TILE_ELEMS = 1 << 25 }; /* 32 Mi elements: 64 MiB of bf16 scratch at most */

__constant__ float c_nf4_code[16];
__constant__ float c_nf4_dyn[256];

/* the dequantized weight rectangle rows r0.., columns c0.. of the (rows, K)
 * weight (codes: the packed 4-bit codes; absq, absmax2, offset: its parts,
 * lt_nf4_layout_of), row-major into out (nr, nc). One thread per element
 * (grid-stride). */
__global__ void nf4_dequant_kernel(lt_bf16 *out, const uint8_t *codes, const uint8_t *absq, const float *absmax2,
                                   const float *offset, size_t K, size_t r0, size_t nr, size_t c0, size_t nc) {
    float off = *offset;
    size_t total = nr * nc;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
        size_t i = (r0 + t / nc) * K + c0 + t % nc;
        size_t blk = i / LT_NF4_BLOCK;
        uint8_t byte = codes[i / 2];
        int q = (i & 1) ? (byte & 15) : (byte >> 4);
        float am = __fadd_rn(__fmul_rn(c_nf4_dyn[absq[blk]], absmax2[blk / LT_NF4_BLOCK2]), off);
        lt_st(&out[t], __fmul_rn(c_nf4_code[q], am)); /* bf16 rounding of the exact fp32 weight */
    }
}

/* rows r0..r0+nr, columns c0..c0+nc of the (n / K, K) NF4 weight wq into out */
static void dequant_rect(lt_backend *be, lt_bf16 *out, const void *wq, size_t n, size_t K, size_t r0, size_t nr,
                         size_t c0, size_t nc, const char *what) {
    if (!nr || !nc) return;
    lt_nf4_layout L = lt_nf4_layout_of(n);
    const uint8_t *b = (const uint8_t *)wq;
    nf4_dequant_kernel<<<lt_grid_1d(nr * nc, 256), 256, 0, lt_cuda(be)->stream>>>(
        out, b, b + L.off_absq, (const float *)(b + L.off_absmax2), (const float *)(b + L.off_offset), K, r0, nr,
        c0, nc);
    LT_CUDA_LAUNCHED(be, what);
}

static void cu_nf4_dequant(lt_backend *be, void *w, const void *wq, size_t n) {
    if (!n) return;
    dequant_rect(be, (lt_bf16 *)w, wq, n, n, 0, 1, 0, n, "nf4_dequant");
}

/* out[m, n] = bias[n] (bf16 copies) before a beta = 1 GEMM */
__global__ void nf4_bias_fill_kernel(lt_bf16 *out, const lt_bf16 *bias, size_t M, int Nout) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < M * (size_t)Nout;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = bias[i % Nout];
}

/* The tile buffer for `count` rows (or columns) of `len` weights each: *per
 * of them per tile (at most TILE_ELEMS weights, at least one row); NULL if
 * the scratch cannot be had (failure recorded). */
static lt_bf16 *tile_scratch(lt_backend *be, size_t len, size_t count, size_t *per) {
    size_t k = TILE_ELEMS / len;
    k = k < 1 ? 1 : k > count ? count : k;
    *per = k;
    return (lt_bf16 *)lt_cuda_scratch(be, k * len * sizeof(lt_bf16));
}

/* out = x @ W^T (+ bias): tiles of whole rows of W = columns of out */
static void cu_nf4_matmul_fwd(lt_backend *be, void *out, const void *x, const void *wq, const void *bias, int M,
                              int K, int Nout) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (M <= 0 || Nout <= 0 || K <= 0) return;
    size_t rows;
    lt_bf16 *tile = tile_scratch(be, (size_t)K, (size_t)Nout, &rows);
    if (!tile) return;
    float alpha = 1.f, beta = bias ? 1.f : 0.f;
    if (bias) {
        nf4_bias_fill_kernel<<<lt_grid_1d((size_t)M * Nout, 256), 256, 0, c->stream>>>(
            (lt_bf16 *)out, (const lt_bf16 *)bias, (size_t)M, Nout);
        LT_CUDA_LAUNCHED(be, "nf4_matmul_fwd bias");
    }
    size_t n = (size_t)Nout * K;
    for (size_t n0 = 0; n0 < (size_t)Nout; n0 += rows) {
        int nr = (int)((size_t)Nout - n0 < rows ? (size_t)Nout - n0 : rows);
        dequant_rect(be, tile, wq, n, (size_t)K, n0, (size_t)nr, 0, (size_t)K, "nf4_matmul_fwd dequant");
        // out^T rows n0.. (nr x M, ld Nout) = tile (row-major (nr, K) = col-major K x nr, op T) * x^T (K x M)
        // bf16 rounding: the fp32 accumulator (+ bias) is written to bf16 out
        LT_CUBLAS_CHECK(be,
                        cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, nr, M, K, &alpha, tile, CUDA_R_16BF, K, x,
                                     CUDA_R_16BF, K, &beta, (lt_bf16 *)out + n0, CUDA_R_16BF, Nout,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                        "nf4_matmul_fwd");
    }
}

/* dx (= or +=) dout @ W: tiles of whole columns of W = columns of dx */
static void cu_nf4_matmul_bwd(lt_backend *be, void *dx, int acc_dx, const void *dout, const void *wq, int M, int K,
                              int Nout) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (M <= 0 || Nout <= 0 || K <= 0 || !dx) return;
    size_t cols;
    lt_bf16 *tile = tile_scratch(be, (size_t)Nout, (size_t)K, &cols);
    if (!tile) return;
    float alpha = 1.f, beta = acc_dx ? 1.f : 0.f;
    size_t n = (size_t)Nout * K;
    for (size_t k0 = 0; k0 < (size_t)K; k0 += cols) {
        int nc = (int)((size_t)K - k0 < cols ? (size_t)K - k0 : cols);
        dequant_rect(be, tile, wq, n, (size_t)K, 0, (size_t)Nout, k0, (size_t)nc, "nf4_matmul_bwd dequant");
        // dx^T columns k0.. (nc x M, ld K) = tile (row-major (Nout, nc) = col-major nc x Nout) * dout^T (Nout x M)
        // bf16 rounding: the fp32 accumulator (+ the old dx when acc_dx) is written to bf16 dx
        LT_CUBLAS_CHECK(be,
                        cublasGemmEx(c->cublas, CUBLAS_OP_N, CUBLAS_OP_N, nc, M, Nout, &alpha, tile, CUDA_R_16BF,
                                     nc, dout, CUDA_R_16BF, Nout, &beta, (lt_bf16 *)dx + k0, CUDA_R_16BF, K,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                        "nf4_matmul_bwd dx");
    }
}

/* the slots, and the constant tables into this device's constant memory (a
 * failure is recorded: be->sync reports it) */
void lt_cuda_nf4_init(lt_backend *be) {
    float dyn[256];
    lt_nf4_dynamic_map(dyn);
    LT_CUDA_CHECK(be, cudaMemcpyToSymbol(c_nf4_code, lt_nf4_code, sizeof(float) * 16), "nf4: code table");
    LT_CUDA_CHECK(be, cudaMemcpyToSymbol(c_nf4_dyn, dyn, sizeof dyn), "nf4: dynamic map");
    be->nf4_dequant = cu_nf4_dequant;
    be->nf4_matmul_fwd = cu_nf4_matmul_fwd;
    be->nf4_matmul_bwd = cu_nf4_matmul_bwd;
}
