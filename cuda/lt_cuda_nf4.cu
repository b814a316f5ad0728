/*
 * lt_cuda_nf4.cu -- the NF4 linear (QLoRA's frozen base weights): weights in
 * bitsandbytes' NF4 format with double quantization (core/lt_nf4.h). Every
 * dequantized value is nf4[q] * (dyn[absq] * absmax2 + offset) in fp32 with
 * __fmul_rn / __fadd_rn (no fma: the CPU reference's values, nf4_value),
 * rounded once to bf16.
 *
 * v2 (default): nf4_gemm_v2, one kernel that dequantizes inside the GEMM.
 *   CTA = 128 x 128 output tile, 8 warps (2 x 4, 64 x 32 each), k steps of 32.
 *   Load stage: each thread fetches two 8-element chunks of the activation
 *   tile (16-byte loads where aligned) and two 8-weight chunks of W (one
 *   32-bit word of codes + its absmax code + nested absmax when the chunk is
 *   8-aligned in the flat index; element by element otherwise) into registers
 *   while the warps run the tensor cores on the previous stage; then it
 *   dequantizes them to bf16 in shared memory (the other of two stages).
 *   Math: ldmatrix + mma.sync m16n8k16 bf16 -> fp32 (lt_cuda_mma.h). The
 *   forward reads W's rows as the B operand ([n][k] tile, ldmatrix); dx reads
 *   them transposed ([n][k] tile with n the contraction, ldmatrix.trans), so
 *   both dequantize the same 8-consecutive-column chunks of W. Epilogue: +
 *   bias (forward) or + old dx (acc_dx) in fp32, one bf16 rounding. Edges of
 *   every dimension are zero-filled (no shape restriction). Weight traffic:
 *   the 0.52 bytes per weight of the NF4 buffer, read once per 128 rows of x.
 * v1 (LT_NF4_VERSION=1 / option nf4_version=1; also where the grid would
 *   exceed 65535 row tiles): a dequantize + cuBLAS path:
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
#include "lt_cuda_mma.h"
#include "lt_nf4.h"

enum { TILE_ELEMS = 1 << 25 }; /* 32 Mi elements: 64 MiB of bf16 scratch at most */

__constant__ float c_nf4_code[16];
__constant__ float c_nf4_dyn[256];

/* The one formula of a dequantized weight (core/lt_nf4.h): the block's
 * absmax dyn * absmax2 + offset, times the NF4 value, fp32 without fma, as
 * the CPU computes it. */
static __device__ __forceinline__ float nf4_absmax(float dyn, float absmax2, float offset) {
    return __fadd_rn(__fmul_rn(dyn, absmax2), offset);
}
static __device__ __forceinline__ float nf4_value(float code, float absmax) { return __fmul_rn(code, absmax); }

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
        float am = nf4_absmax(c_nf4_dyn[absq[blk]], absmax2[blk / LT_NF4_BLOCK2], off);
        lt_st(&out[t], nf4_value(c_nf4_code[q], am)); /* bf16 rounding of the exact fp32 weight */
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

/* ------------------------------------------------------------------------ */
/* v2: the fused kernel                                                     */

enum { FB_M = 128, FB_N = 128, FB_K = 32, F_THREADS = 256 };
/* shared-memory row strides (bf16): [rows][FB_K] tiles 80 bytes, the
 * transposed W tile [FB_K][FB_N] 272 bytes; both put the 8 rows of an
 * ldmatrix in 8 different 16-byte bank groups */
#define F_LDK (FB_K + 8)
#define F_LDN (FB_N + 8)

/* W = the (nw, kw) NF4 weight, parts of its buffer (lt_nf4_layout_of) */
typedef struct {
    const uint8_t *codes, *absq;
    const float *absmax2, *offset;
    int nw, kw;
    int vec; /* codes 4-byte aligned: whole-word loads allowed */
} nf4_src;

/* one chunk of 8 consecutive weights W[n][k0..k0+7] between its fetch and
 * its dequantization: raw parts (fast) or the finished bf16 values */
typedef struct {
    unsigned codes, aq;
    float a2;
    uint4 v;
    int fast;
} nf4_chunk;

static __device__ __forceinline__ uint4 pack8(const float f[8]) {
    return make_uint4(pack_bf16(f[0], f[1]), pack_bf16(f[2], f[3]), pack_bf16(f[4], f[5]), pack_bf16(f[6], f[7]));
}

/* issue the loads of chunk (n, k0); zeros outside W */
static __device__ __forceinline__ void nf4_fetch(nf4_chunk &c, const nf4_src &w, int n, int k0, const float *s_dyn,
                                                 const float *s_code, float off) {
    c.fast = 0;
    c.v = make_uint4(0u, 0u, 0u, 0u);
    if (n >= w.nw || k0 >= w.kw) return;
    const size_t i0 = (size_t)n * w.kw + k0;
    if (w.vec && k0 + 8 <= w.kw && (i0 & 7) == 0) {
        // 8 weights in one block of 64 (64 % 8 == 0), their codes in one aligned word
        const size_t blk = i0 / LT_NF4_BLOCK;
        c.fast = 1;
        c.codes = __ldg((const unsigned *)(w.codes + i0 / 2));
        c.aq = __ldg(w.absq + blk);
        c.a2 = __ldg(w.absmax2 + blk / LT_NF4_BLOCK2);
        return;
    }
    float f[8];
#pragma unroll
    for (int j = 0; j < 8; j++) { // element by element (kw % 8 != 0, or the row's end)
        f[j] = 0.f;
        if (k0 + j < w.kw) {
            const size_t i = i0 + j, blk = i / LT_NF4_BLOCK;
            const unsigned byte = __ldg(w.codes + i / 2);
            const unsigned q = (i & 1) ? (byte & 15u) : (byte >> 4);
            f[j] = nf4_value(s_code[q], nf4_absmax(s_dyn[__ldg(w.absq + blk)], __ldg(w.absmax2 + blk / LT_NF4_BLOCK2),
                                                   off));
        }
    }
    c.v = pack8(f); // bf16 rounding of the exact fp32 weights
}

/* the chunk's 8 weights as bf16 (a fetched fast chunk is dequantized here) */
static __device__ __forceinline__ uint4 nf4_finish(const nf4_chunk &c, const float *s_dyn, const float *s_code,
                                                   float off) {
    if (!c.fast) return c.v;
    const float am = nf4_absmax(s_dyn[c.aq], c.a2, off);
    float f[8];
#pragma unroll
    for (int j = 0; j < 4; j++) { // byte j of the little-endian word: weights 2j (high nibble), 2j + 1
        const unsigned byte = (c.codes >> (8 * j)) & 255u;
        f[2 * j] = nf4_value(s_code[byte >> 4], am);
        f[2 * j + 1] = nf4_value(s_code[byte & 15u], am);
    }
    return pack8(f); // bf16 rounding of the exact fp32 weights
}

/* A[m][k0..k0+7] of the (rows, cols) bf16 matrix A (row stride cols), zeros
 * outside; vec: 16-byte loads allowed (cols % 8 == 0, A 16-byte aligned) */
static __device__ __forceinline__ uint4 load_a8(const lt_bf16 *A, int vec, int m, int k0, int rows, int cols) {
    if (m >= rows || k0 >= cols) return make_uint4(0u, 0u, 0u, 0u);
    const lt_bf16 *p = A + (size_t)m * cols + k0;
    if (vec && k0 + 8 <= cols) return __ldg((const uint4 *)p);
    unsigned h[8];
#pragma unroll
    for (int j = 0; j < 8; j++) h[j] = k0 + j < cols ? (unsigned)__bfloat16_as_ushort(p[j]) : 0u;
    return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

/* out (M, Nc) = A (M, Kc) . B (+ bias[n] | + out when accum), bf16 out, fp32
 * accumulation; B from the NF4 weight W (nw, kw):
 *   BWD = false (forward): B[k][n] = W[n][k], Nc = nw, Kc = kw;
 *   BWD = true  (dx):      B[k][n] = W[k][n], Nc = kw, Kc = nw.
 * grid (cdiv(Nc, FB_N), cdiv(M, FB_M)), F_THREADS threads. */
template <bool BWD>
__global__ void __launch_bounds__(F_THREADS)
    nf4_gemm_v2(lt_bf16 *out, const lt_bf16 *A, int a_vec, nf4_src w, const lt_bf16 *bias, int accum, int M, int Nc,
                int Kc) {
    constexpr int A_STAGE = FB_M * F_LDK;
    constexpr int W_STAGE = BWD ? FB_K * F_LDN : FB_N * F_LDK;
    __shared__ __align__(16) lt_bf16 As[2 * A_STAGE];
    __shared__ __align__(16) lt_bf16 Ws[2 * W_STAGE];
    __shared__ float s_dyn[256], s_code[16];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
    const int wm = warp >> 2, wn = warp & 3; // the warp's 64 x 32 piece of the tile
    const int m0 = blockIdx.y * FB_M, n0 = blockIdx.x * FB_N;
    for (int i = tid; i < 256; i += F_THREADS) s_dyn[i] = c_nf4_dyn[i];
    if (tid < 16) s_code[tid] = c_nf4_code[tid];
    const float off = __ldg(w.offset);
    __syncthreads();

    // per thread: chunks c = tid and tid + F_THREADS of each tile (512 chunks of 8)
    uint4 ar[2];
    nf4_chunk wr[2];
    auto fetch = [&](int kt) {
        const int kb = kt * FB_K;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int c = tid + r * F_THREADS;
            ar[r] = load_a8(A, a_vec, m0 + (c >> 2), kb + (c & 3) * 8, M, Kc);
            if (!BWD) nf4_fetch(wr[r], w, n0 + (c >> 2), kb + (c & 3) * 8, s_dyn, s_code, off); // W rows n, k in the step
            else nf4_fetch(wr[r], w, kb + (c >> 4), n0 + (c & 15) * 8, s_dyn, s_code, off);    // W rows k in the step
        }
    };
    auto store = [&](int st) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int c = tid + r * F_THREADS;
            *(uint4 *)(As + st * A_STAGE + (c >> 2) * F_LDK + (c & 3) * 8) = ar[r];
            const uint4 v = nf4_finish(wr[r], s_dyn, s_code, off);
            if (!BWD) *(uint4 *)(Ws + st * W_STAGE + (c >> 2) * F_LDK + (c & 3) * 8) = v;
            else *(uint4 *)(Ws + st * W_STAGE + (c >> 4) * F_LDN + (c & 15) * 8) = v;
        }
    };

    float acc[4][4][4]; // [m16 tile][n8 tile][fragment]
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

    const int nk = (Kc + FB_K - 1) / FB_K;
    fetch(0);
    store(0);
    __syncthreads();
    for (int kt = 0; kt < nk; kt++) {
        const int st = kt & 1;
        if (kt + 1 < nk) fetch(kt + 1); // loads in flight during the mma below
        const lt_bf16 *as = As + st * A_STAGE, *ws = Ws + st * W_STAGE;
#pragma unroll
        for (int kk = 0; kk < FB_K / 16; kk++) {
            unsigned a[4][4];
#pragma unroll
            for (int mi = 0; mi < 4; mi++) // (rows 0-7 | 8-15) x (k 0-7 | 8-15)
                ldsm_x4(a[mi], as + (wm * 64 + mi * 16 + (lane & 15)) * F_LDK + kk * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int nn = 0; nn < 2; nn++) {
                unsigned b[4]; // (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
                if (!BWD)
                    ldsm_x4(b, ws + (wn * 32 + nn * 16 + ((lane >> 4) << 3) + (lane & 7)) * F_LDK + kk * 16 +
                                   ((lane >> 3) & 1) * 8);
                else
                    ldsm_x4_t(b, ws + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * F_LDN + wn * 32 + nn * 16 +
                                     (lane >> 4) * 8);
#pragma unroll
                for (int mi = 0; mi < 4; mi++) {
                    mma16816(acc[mi][2 * nn], a[mi], b[0], b[1]);
                    mma16816(acc[mi][2 * nn + 1], a[mi], b[2], b[3]);
                }
            }
        }
        if (kt + 1 < nk) store(st ^ 1); // the other stage: read in step kt - 1, done before the last barrier
        __syncthreads();
    }

#pragma unroll
    for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int e = 0; e < 4; e++) { // c[0..1]: row g, cols 2q, 2q+1; c[2..3]: row g + 8
                const int m = m0 + wm * 64 + mi * 16 + g + (e >> 1) * 8;
                const int n = n0 + wn * 32 + ni * 8 + 2 * qd + (e & 1);
                if (m < M && n < Nc) {
                    lt_bf16 *o = out + (size_t)m * Nc + n;
                    float v = acc[mi][ni][e];
                    if (bias) v += __bfloat162float(bias[n]);
                    if (accum) v += __bfloat162float(*o);
                    *o = __float2bfloat16_rn(v); // bf16 rounding of the fp32 result
                }
            }
}

/* the fused kernel for out (M, Nc) = A (M, Kc) . B; 0 if it does not apply
 * (option nf4_version = 1, or more row tiles than a grid has) */
template <bool BWD>
static int nf4_gemm_launch(lt_backend *be, lt_bf16 *out, const lt_bf16 *A, const void *wq, int Nout, int K,
                           const lt_bf16 *bias, int accum, int M, int Nc, int Kc, const char *what) {
    if (lt_cuda(be)->nf4_version == 1 || lt_cdiv((size_t)M, FB_M) > 65535) return 0;
    lt_nf4_layout L = lt_nf4_layout_of((size_t)Nout * K);
    const uint8_t *b = (const uint8_t *)wq;
    nf4_src w;
    w.codes = b;
    w.absq = b + L.off_absq;
    w.absmax2 = (const float *)(b + L.off_absmax2);
    w.offset = (const float *)(b + L.off_offset);
    w.nw = Nout;
    w.kw = K;
    w.vec = ((uintptr_t)b & 3) == 0;
    const int a_vec = Kc % 8 == 0 && ((uintptr_t)A & 15) == 0;
    dim3 grid(lt_cdiv((size_t)Nc, FB_N), lt_cdiv((size_t)M, FB_M));
    nf4_gemm_v2<BWD><<<grid, F_THREADS, 0, lt_cuda(be)->stream>>>(out, A, a_vec, w, bias, accum, M, Nc, Kc);
    LT_CUDA_LAUNCHED(be, what);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* v1: dequantized tiles + cuBLAS                                           */

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
    if (nf4_gemm_launch<false>(be, (lt_bf16 *)out, (const lt_bf16 *)x, wq, Nout, K, (const lt_bf16 *)bias, 0, M,
                               Nout, K, "nf4_matmul_fwd v2"))
        return;
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
    if (nf4_gemm_launch<true>(be, (lt_bf16 *)dx, (const lt_bf16 *)dout, wq, Nout, K, NULL, acc_dx, M, K, Nout,
                              "nf4_matmul_bwd v2"))
        return;
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
