/*
 * lt_cuda_matmul.cu -- linear layers: matmul fwd/bwd through cuBLAS (bf16
 * operands, fp32 compute), and the LoRA linear (frozen bf16 weight through
 * cuBLAS; the thin fp32 adapter products through a small tiled kernel that
 * reads bf16 or f32 operands and accumulates in fp32).
 *
 * Row-major to cuBLAS (column-major): a row-major (R, C) buffer is the
 * column-major (C, R) matrix, i.e. its transpose. So out = x @ w^T becomes
 * out^T = w^T-buffer ... spelled out at each call below.
 *
 * Versions:
 *   matmul v1  cublasGemmEx, bias by pre-filling out and beta = 1 (one
 *              rounding of acc + bias). TODO v2: cuBLASLt with the BIAS
 *              epilogue (saves a pass over out) and BGRADB for dbias.
 *   lora v1    cuBLAS for x @ w^T, gemm_v1 (64x64 tile, 4x4 per thread, fp32)
 *              for the adapter products; out (and dx without dropout) is
 *              rounded to bf16 twice. Selected by LT_LORA_VERSION=1.
 *   lora v2    (default) the frozen product in fp32 chunks + an epilogue
 *              kernel adding the r-wide adapter term: ONE bf16 rounding;
 *              adapter products as bf16x3-split cuBLAS GEMMs (fp32-accurate,
 *              tensor cores, fixed-order reductions over M). See the LoRA v2
 *              section for the design and its memory / time trade-off.
 */
#include <stdlib.h>
#include <string.h>

#include "lt_cuda.h"

/* ------------------------------------------------------------------------ */
/* small kernels                                                            */

/* out[m, n] = bias[n]   (a bf16 copy, no rounding) */
__global__ void bias_fill_kernel(lt_bf16 *out, const lt_bf16 *bias, size_t M, int Nout) {
    size_t total = M * (size_t)Nout;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] = bias[i % Nout];
}

/* First pass of a deterministic column sum: part[chunk, c] = sum of x[r, c]
 * over the rows r of chunk `blockIdx.y` (rows_per_chunk rows), in row order. */
__global__ void colsum_partial_kernel(float *part, const lt_bf16 *x, int R, int C, int rows_per_chunk) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(R, r0 + rows_per_chunk);
    float s = 0.f;
    for (int r = r0; r < r1; r++) s += __bfloat162float(x[(size_t)r * C + c]);
    part[(size_t)blockIdx.y * C + c] = s;
}

/* ------------------------------------------------------------------------ */
/* gemm_v1: C(i, j) = alpha * sum_k A(i, k) B(k, j)  (+ C(i, j) if beta)
 * A(i, k) = A[i*a_i + k*a_k], B(k, j) = B[k*b_k + j*b_j] (any transpose),
 * C row-major with leading dimension ldc. Operands bf16 or f32, math fp32.
 * 256 threads, a 64x64 tile of C per block, 4x4 per thread, k in steps of 16. */
#define G_BM 64
#define G_BN 64
#define G_BK 16
template <typename TA, typename TB, typename TC>
__global__ void __launch_bounds__(256) gemm_v1(TC *C, long ldc, const TA *A, long a_i, long a_k, const TB *B,
                                               long b_k, long b_j, int Mr, int Nc, int Kd, float alpha, int beta) {
    __shared__ float As[G_BK][G_BM + 1]; // [k][i]
    __shared__ float Bs[G_BK][G_BN + 1]; // [k][j]
    int tid = threadIdx.x;
    int i0 = blockIdx.y * G_BM, j0 = blockIdx.x * G_BN;
    int ti = tid / 16, tj = tid % 16; // rows i0 + ti*4 + r, cols j0 + tj + 16*q
    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[r][q] = 0.f;

    for (int k0 = 0; k0 < Kd; k0 += G_BK) {
#pragma unroll
        for (int q = 0; q < 4; q++) {
            int e = tid + 256 * q;
            int ii, kk;
            if (a_k == 1) { ii = e / G_BK; kk = e % G_BK; } // k contiguous: walk along k
            else { ii = e % G_BM; kk = e / G_BM; }          // i contiguous (or neither)
            int i = i0 + ii, k = k0 + kk;
            As[kk][ii] = (i < Mr && k < Kd) ? lt_ld(A + (long)i * a_i + (long)k * a_k) : 0.f;
            int jj, kb;
            if (b_j == 1) { jj = e % G_BN; kb = e / G_BN; }
            else { jj = e / G_BK; kb = e % G_BK; }
            int j = j0 + jj, kq = k0 + kb;
            Bs[kb][jj] = (j < Nc && kq < Kd) ? lt_ld(B + (long)kq * b_k + (long)j * b_j) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < G_BK; kk++) {
            float a[4], b[4];
#pragma unroll
            for (int r = 0; r < 4; r++) a[r] = As[kk][ti * 4 + r];
#pragma unroll
            for (int q = 0; q < 4; q++) b[q] = Bs[kk][tj + 16 * q];
#pragma unroll
            for (int r = 0; r < 4; r++)
#pragma unroll
                for (int q = 0; q < 4; q++) acc[r][q] = fmaf(a[r], b[q], acc[r][q]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        int i = i0 + ti * 4 + r;
        if (i >= Mr) continue;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            int j = j0 + tj + 16 * q;
            if (j >= Nc) continue;
            TC *p = C + (long)i * ldc + j;
            float v = alpha * acc[r][q];
            if (beta) v += lt_ld(p); // C is never read when beta == 0 (it may be poisoned)
            lt_st(p, v);             // bf16 rounding when TC is bf16 (fp32 C: none)
        }
    }
}

template <typename TA, typename TB, typename TC>
static void gemm(lt_backend *be, TC *C, long ldc, const TA *A, long a_i, long a_k, const TB *B, long b_k, long b_j,
                 int Mr, int Nc, int Kd, float alpha, int beta, const char *what) {
    if (Mr <= 0 || Nc <= 0) return;
    dim3 grid(lt_cdiv(Nc, G_BN), lt_cdiv(Mr, G_BM));
    if (grid.y > 65535u) {
        lt_cuda_record(be, LT_ERR_UNSUPPORTED, "cuda: %s: %d rows exceed the gemm_v1 grid", what, Mr);
        return;
    }
    gemm_v1<TA, TB, TC><<<grid, 256, 0, lt_cuda(be)->stream>>>(C, ldc, A, a_i, a_k, B, b_k, b_j, Mr, Nc, Kd, alpha,
                                                                beta);
    LT_CUDA_LAUNCHED(be, what);
}

/* ------------------------------------------------------------------------ */
/* matmul                                                                   */

static void cu_matmul_fwd(lt_backend *be, void *out, const void *x, const void *w, const void *bias, int M, int K,
                          int Nout) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (M <= 0 || Nout <= 0) return;
    float alpha = 1.f, beta = 0.f;
    if (bias) {
        size_t total = (size_t)M * Nout;
        bias_fill_kernel<<<lt_grid_1d(total, 256), 256, 0, c->stream>>>((lt_bf16 *)out, (const lt_bf16 *)bias, M,
                                                                       Nout);
        LT_CUDA_LAUNCHED(be, "matmul_fwd: bias fill");
        beta = 1.f; // out = acc + bias in fp32, then one bf16 rounding (cuBLAS epilogue)
    }
    // column-major: out^T (Nout x M, ld Nout) = w (buffer = K x Nout col-major, op T) * x^T (buffer K x M, op N)
    // bf16 rounding: cuBLAS writes the fp32 accumulator to the bf16 out
    LT_CUBLAS_CHECK(be,
                    cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, Nout, M, K, &alpha, w, CUDA_R_16BF, K, x,
                                 CUDA_R_16BF, K, &beta, out, CUDA_R_16BF, Nout, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT),
                    "matmul_fwd");
}

static void matmul_dx(lt_backend *be, void *dx, int acc_dx, const void *dout, const void *w, int M, int K,
                      int Nout, const char *what) {
    lt_cuda_ctx *c = lt_cuda(be);
    float alpha = 1.f, beta = acc_dx ? 1.f : 0.f;
    // dx^T (K x M, ld K) = w-buffer (K x Nout col-major, op N) * dout-buffer (Nout x M, op N)
    // bf16 rounding: the fp32 accumulator (+ the old dx when acc_dx) is written to bf16 dx
    LT_CUBLAS_CHECK(be,
                    cublasGemmEx(c->cublas, CUBLAS_OP_N, CUBLAS_OP_N, K, M, Nout, &alpha, w, CUDA_R_16BF, K, dout,
                                 CUDA_R_16BF, Nout, &beta, dx, CUDA_R_16BF, K, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT),
                    what);
}

static void cu_matmul_bwd(lt_backend *be, void *dx, int acc_dx, float *dw, float *dbias, const void *dout,
                          const void *x, const void *w, int M, int K, int Nout) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (M <= 0 || Nout <= 0 || K <= 0) return;
    if (dx) matmul_dx(be, dx, acc_dx, dout, w, M, K, Nout, "matmul_bwd dx");
    if (dw) {
        float alpha = 1.f, beta = 1.f; // dw is f32 and accumulated: no rounding to bf16
        // dw^T (K x Nout, ld K) = x-buffer (K x M, op N) * dout-buffer (Nout x M, op T)
        LT_CUBLAS_CHECK(be,
                        cublasGemmEx(c->cublas, CUBLAS_OP_N, CUBLAS_OP_T, K, Nout, M, &alpha, x, CUDA_R_16BF, K,
                                     dout, CUDA_R_16BF, Nout, &beta, dw, CUDA_R_32F, K, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT),
                        "matmul_bwd dw");
    }
    if (dbias) {
        // two passes, fixed order: per chunk of rows, then over the chunks
        int rows_per_chunk = 64;
        int chunks = (int)lt_cdiv(M, rows_per_chunk);
        if (chunks > 1024) {
            chunks = 1024;
            rows_per_chunk = (int)lt_cdiv(M, chunks);
            chunks = (int)lt_cdiv(M, rows_per_chunk);
        }
        float *part = (float *)lt_cuda_scratch(be, (size_t)chunks * Nout * sizeof(float));
        if (!part) return;
        dim3 grid(lt_cdiv(Nout, 256), chunks);
        colsum_partial_kernel<<<grid, 256, 0, c->stream>>>(part, (const lt_bf16 *)dout, M, Nout, rows_per_chunk);
        LT_CUDA_LAUNCHED(be, "matmul_bwd dbias partial");
        lt_cuda_colsum_acc(be, dbias, part, chunks, Nout);
    }
}

/* ------------------------------------------------------------------------ */
/* LoRA linear                                                              */

static void cu_lora_fwd(lt_backend *be, void *out, float *xa, const void *x, const void *x_lora, const void *w,
                        const void *bias, const float *A, const float *B, int M, int K, int Nout, int r,
                        float scale) {
    if (M <= 0 || Nout <= 0) return;
    // out = x @ w^T (+ bias)                         bf16 rounding #1 (cuBLAS epilogue)
    cu_matmul_fwd(be, out, x, w, bias, M, K, Nout);
    if (r <= 0) return;
    // xa (M, r) f32 = x_lora (M, K) @ A^T            A (r, K) f32; no rounding
    gemm<lt_bf16, float, float>(be, xa, r, (const lt_bf16 *)x_lora, K, 1, A, 1, K, M, r, K, 1.f, 0,
                                "lora_fwd xa");
    // out += scale * xa @ B^T                         B (Nout, r) f32; bf16 rounding #2 (TODO v2: fuse, one rounding)
    gemm<float, float, lt_bf16>(be, (lt_bf16 *)out, Nout, xa, r, 1, B, 1, r, M, Nout, r, scale, 1,
                                "lora_fwd out");
}

static void cu_lora_bwd(lt_backend *be, void *dx, int acc_dx, void *dx_lora, float *dA, float *dB,
                        const void *dout, const void *x_lora, const void *w, const float *A, const float *B,
                        const float *xa, int M, int K, int Nout, int r, float scale) {
    if (M <= 0 || K <= 0 || Nout <= 0) return;
    // dx (=, += if acc_dx) dout @ w                   bf16 rounding (cuBLAS epilogue)
    if (dx) matmul_dx(be, dx, acc_dx, dout, w, M, K, Nout, "lora_bwd dx");
    if (r <= 0) return;
    // t (M, r) f32 = scale * dout (M, Nout) @ B (Nout, r)     (scratch; no rounding)
    float *t = (float *)lt_cuda_scratch(be, (size_t)M * r * sizeof(float));
    if (!t) return;
    gemm<lt_bf16, float, float>(be, t, r, (const lt_bf16 *)dout, Nout, 1, B, r, 1, M, r, Nout, scale, 0,
                                "lora_bwd t");
    // the x_lora gradient t @ A (M, K): into dx_lora (=), or added to dx
    if (dx_lora)
        gemm<float, float, lt_bf16>(be, (lt_bf16 *)dx_lora, K, t, r, 1, A, K, 1, M, K, r, 1.f, 0,
                                    "lora_bwd dx_lora"); // bf16 rounding
    else if (dx)
        gemm<float, float, lt_bf16>(be, (lt_bf16 *)dx, K, t, r, 1, A, K, 1, M, K, r, 1.f, 1,
                                    "lora_bwd dx (adapter term)"); // bf16 rounding #2 of dx (TODO v2: fuse)
    // dA (r, K) += t^T (r, M) @ x_lora (M, K)          f32
    if (dA)
        gemm<float, lt_bf16, float>(be, dA, K, t, 1, r, (const lt_bf16 *)x_lora, K, 1, r, K, M, 1.f, 1,
                                    "lora_bwd dA");
    // dB (Nout, r) += scale * dout^T (Nout, M) @ xa (M, r)   f32
    if (dB)
        gemm<lt_bf16, float, float>(be, dB, r, (const lt_bf16 *)dout, 1, Nout, xa, r, 1, Nout, r, M, scale, 1,
                                    "lora_bwd dB");
}

/* ------------------------------------------------------------------------ */
/* LoRA v2: one bf16 rounding of out / dx, adapter products on tensor cores  */
/*
 * Forward  out = x w^T (+ bias) + s (x_lora A^T) B^T:
 *   (1) xa (M, r) f32 = x_lora A^T: one cuBLAS GEMM against A split into
 *       three bf16 pieces (below), summed per element -> fp32-accurate xa.
 *   (2) per chunk of Mc rows: cuBLAS writes the frozen product x w^T in fp32
 *       into a scratch chunk (Mc, Nout) (beta = 0, no rounding), then
 *       lora_epilogue_v2 adds bias + s * xa[m,:] . B[n,:] (an r-wide fp32 dot
 *       per element, xa and B slices in shared memory) and rounds to bf16
 *       once.
 * Backward (dout (M, Nout) bf16):
 *   t (M, r) f32 = s dout B            (cuBLAS, B split in three pieces)
 *   dB += s dout^T xa                  (cuBLAS, xa split; reduction over M in
 *                                       cuBLAS, fixed order)
 *   dA += t^T x_lora                   (cuBLAS, t split)
 *   dx (=, +=) dout w + t A: per chunk cuBLAS writes dout w in fp32, the
 *       epilogue adds the old dx (acc_dx) and t[m,:] . A[:,k], rounds once.
 *       With dx_lora: dx = dout w straight from cuBLAS (one rounding) and
 *       dx_lora = bf16(t A) by the epilogue without a frozen part.
 *   No gradient for w. Nothing wider than r is materialised besides the
 *   bounded fp32 chunk of the frozen product.
 *
 * bf16x3 split: an f32 value v = p0 + p1 + p2 with p0 = bf16(v),
 * p1 = bf16(v - p0), p2 = bf16(v - p0 - p1) (each difference exact in fp32),
 * so 3 x 8 significant bits cover fp32's 24 (error ~2^-24 |v|). A bf16 x f32
 * product becomes three bf16 x bf16 tensor-core GEMMs fused into one by
 * stacking the pieces along the thin (r) dimension: N = 3r columns instead
 * of r, which costs nothing measurable -- these GEMMs are bound by reading
 * the wide operand (x or dout) once. The products of bf16 values are exact
 * in the fp32 accumulator, so the adapter products never round to bf16
 * (the precision policy) and match an fp32 GEMM.
 *
 * What "x is read once" means with cuBLAS: the frozen GEMM streams x from
 * DRAM once (its tiles are re-read from L2 by the CTAs along N, as in any
 * GEMM) and the thin xa GEMM streams x_lora once more: 2 M K bytes, e.g.
 * M = 16384, K = 4096: 128 MB, ~0.04 ms at 3.3 TB/s next to ~0.8 ms for a
 * 4096-wide frozen GEMM. Reading it once literally needs xa computed in the
 * frozen GEMM's main loop (A's rows appended to w: a custom GEMM, or w and A
 * stored concatenated in bf16, which the precision policy rules out).
 *
 * Memory / time trade-off of the fp32 chunk: cuBLAS cannot add an r-wide
 * product per element in its epilogue (cuBLASLt epilogues add a bias vector,
 * not a matrix, and D must have C's type), so the frozen product goes
 * through fp32: +4 B written and +4 B read per output element versus
 * writing bf16 directly (v1 instead wrote bf16, then read and rewrote it:
 * +4 B, but rounded twice). The chunk (LORA_CHUNK_BYTES, 32 MiB: about
 * 2048 rows of a 4096-wide output) is sized to stay in L2 (40 MB on A100,
 * 50 MB on H100) between the GEMM writing it and the epilogue reading it,
 * and still gives cuBLAS >= 2 waves of tiles; the scratch stays bounded
 * whatever M is. The lora_chunk_rows option (LT_LORA_CHUNK_ROWS=n at
 * creation) overrides the rows per chunk (tests, tuning).
 *
 * lora_version 1 (option, or LT_LORA_VERSION=1 at creation) selects v1; 2: v2.
 */
#define LORA_NS 3                          /* bf16 pieces per f32 value */
#define LORA_CHUNK_BYTES ((size_t)32 << 20) /* fp32 chunk of the frozen product */

/* dst (rows, 3w) bf16, row i = [p0 | p1 | p2] of src row i; src (rows, w) f32 */
__global__ void lora_split3_kernel(lt_bf16 *dst, const float *src, size_t rows, int w) {
    size_t total = rows * (size_t)w;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / (size_t)w;
        int c = (int)(i % (size_t)w);
        float v = src[i];
        lt_bf16 p0 = __float2bfloat16_rn(v); // bf16 rounding, exact in sum: pieces of an f32 value
        float r1 = v - __bfloat162float(p0);
        lt_bf16 p1 = __float2bfloat16_rn(r1);
        float r2 = r1 - __bfloat162float(p1);
        lt_bf16 *d = dst + row * (size_t)(LORA_NS * w) + c;
        d[0] = p0;
        d[w] = p1;
        d[2 * (size_t)w] = __float2bfloat16_rn(r2);
    }
}

/* out[i, c] (=, += if acc) alpha * (S[b + 2 sp] + S[b + sp] + S[b]), b = i*s_row + c*s_col:
 * the three piece products of one element, smallest first. out (rows, cols) f32 row-major. */
__global__ void lora_combine3_kernel(float *out, const float *S, int rows, int cols, long s_row, long s_col,
                                     long s_piece, float alpha, int acc) {
    size_t total = (size_t)rows * cols;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        long i = (long)(e / (size_t)cols), c = (long)(e % (size_t)cols);
        const float *b = S + i * s_row + c * s_col;
        float v = alpha * ((b[2 * s_piece] + b[s_piece]) + b[0]);
        out[e] = acc ? out[e] + v : v;
    }
}

/* out[m, n] (bf16, ld ldo) = bf16( S[m, n] (f32, ld lds; 0 when S == NULL) + bias[n] (if bias)
 *                                  + out[m, n] (if acc) + alpha * sum_j P[m, j] Q(n, j) )
 * P (rows, r) f32 row-major; Q(n, j) = Q[n*q_n + j*q_j] f32. A 32 x 64 tile of out per block
 * (256 threads, 4 rows x 2 columns each, columns tx and tx + 32 so a warp's accesses to S and
 * out are contiguous), r in slices of 32 through shared memory. */
#define EP_TM 32
#define EP_TN 64
#define EP_RJ 32
__global__ void __launch_bounds__(256)
    lora_epilogue_v2(lt_bf16 *out, long ldo, const float *S, long lds, const lt_bf16 *bias, int acc, const float *P,
                     const float *Q, long q_n, long q_j, int rows, int cols, int r, float alpha) {
    __shared__ float Ps[EP_TM][EP_RJ + 1];
    __shared__ float Qs[EP_RJ][EP_TN + 1];
    int tid = threadIdx.x, tx = tid % 32, ty = tid / 32;
    int m0 = blockIdx.y * EP_TM, n0 = blockIdx.x * EP_TN;
    float a[4][2];
#pragma unroll
    for (int i = 0; i < 4; i++) a[i][0] = a[i][1] = 0.f;
    for (int j0 = 0; j0 < r; j0 += EP_RJ) {
#pragma unroll
        for (int q = 0; q < (EP_TM * EP_RJ) / 256; q++) { // j fastest: P's rows are contiguous
            int e = tid + 256 * q, i = e / EP_RJ, j = e % EP_RJ, m = m0 + i, jj = j0 + j;
            Ps[i][j] = (m < rows && jj < r) ? P[(long)m * r + jj] : 0.f;
        }
#pragma unroll
        for (int q = 0; q < (EP_RJ * EP_TN) / 256; q++) { // walk Q's contiguous direction
            int e = tid + 256 * q, j, nn;
            if (q_j == 1) { j = e % EP_RJ; nn = e / EP_RJ; }
            else { nn = e % EP_TN; j = e / EP_TN; }
            int n = n0 + nn, jj = j0 + j;
            Qs[j][nn] = (n < cols && jj < r) ? Q[(long)n * q_n + (long)jj * q_j] : 0.f;
        }
        __syncthreads();
        int jn = min(EP_RJ, r - j0);
        for (int j = 0; j < jn; j++) {
            float q0 = Qs[j][tx], q1 = Qs[j][tx + 32];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float pv = Ps[ty + 8 * i][j];
                a[i][0] = fmaf(pv, q0, a[i][0]);
                a[i][1] = fmaf(pv, q1, a[i][1]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int m = m0 + ty + 8 * i;
        if (m >= rows) continue;
#pragma unroll
        for (int c = 0; c < 2; c++) {
            int n = n0 + tx + 32 * c;
            if (n >= cols) continue;
            lt_bf16 *o = out + (long)m * ldo + n;
            float v = S ? S[(long)m * lds + n] : 0.f;
            if (bias) v += __bfloat162float(bias[n]);
            if (acc) v += __bfloat162float(*o); // out is never read unless acc (it may be poisoned)
            v += alpha * a[i][c];
            *o = __float2bfloat16_rn(v); // bf16 rounding: the only one of this output
        }
    }
}

/* row-major C (m, n) f32 = op(A) op(B) (+ beta C), bf16 operands, fp32 accumulation:
 * A stored (m, k) with row length lda, or (k, m) if ta; B stored (k, n), or (n, k) if tb.
 * (cuBLAS is column-major: it computes C^T = op(B)^T op(A)^T on the same buffers.) */
static void gemm_bf16_f32(lt_backend *be, int ta, int tb, int m, int n, int k, const void *A, int lda, const void *B,
                          int ldb, float *C, int ldc, float beta, const char *what) {
    if (m <= 0 || n <= 0) return;
    float alpha = 1.f;
    LT_CUBLAS_CHECK(be,
                    cublasGemmEx(lt_cuda(be)->cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 n, m, k, &alpha, B, CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, C, CUDA_R_32F, ldc,
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                    what);
}

static void lora_split3(lt_backend *be, lt_bf16 *dst, const float *src, size_t rows, int w) {
    size_t total = rows * (size_t)w;
    if (!total) return;
    lora_split3_kernel<<<lt_grid_1d(total, 256), 256, 0, lt_cuda(be)->stream>>>(dst, src, rows, w);
    LT_CUDA_LAUNCHED(be, "lora v2: bf16x3 split");
}

static void lora_combine3(lt_backend *be, float *out, const float *S, int rows, int cols, long s_row, long s_col,
                          long s_piece, float alpha, int acc) {
    size_t total = (size_t)rows * cols;
    if (!total) return;
    lora_combine3_kernel<<<lt_grid_1d(total, 256), 256, 0, lt_cuda(be)->stream>>>(out, S, rows, cols, s_row, s_col,
                                                                                 s_piece, alpha, acc);
    LT_CUDA_LAUNCHED(be, "lora v2: piece sum");
}

static void lora_epilogue(lt_backend *be, lt_bf16 *out, long ldo, const float *S, long lds, const lt_bf16 *bias,
                          int acc, const float *P, const float *Q, long q_n, long q_j, int rows, int cols, int r,
                          float alpha) {
    if (rows <= 0 || cols <= 0) return;
    dim3 grid(lt_cdiv(cols, EP_TN), lt_cdiv(rows, EP_TM)); // rows <= the chunk size: grid.y < 65536
    lora_epilogue_v2<<<grid, 256, 0, lt_cuda(be)->stream>>>(out, ldo, S, lds, bias, acc, P, Q, q_n, q_j, rows, cols,
                                                           r, alpha);
    LT_CUDA_LAUNCHED(be, "lora v2: epilogue (one bf16 rounding)");
}

/* rows per chunk of the fp32 frozen product of width `cols` */
static int lora_chunk_rows(lt_backend *be, int M, int cols) {
    long set = lt_cuda(be)->lora_chunk_rows; // 0: automatic
    long rows = set > 0 ? set : (long)(LORA_CHUNK_BYTES / ((size_t)(cols > 0 ? cols : 1) * 4));
    if (rows < 1) rows = 1;
    if (rows > 65535L * EP_TM) rows = 65535L * EP_TM;
    return rows < M ? (int)rows : M;
}


static int lora_version(lt_backend *be) { return lt_cuda(be)->lora_version == 1 ? 1 : 2; }

static void cu_lora_fwd_v2(lt_backend *be, void *out, float *xa, const void *x, const void *x_lora, const void *w,
                           const void *bias, const float *A, const float *B, int M, int K, int Nout, int r,
                           float scale) {
    if (M <= 0 || Nout <= 0) return;
    if (r <= 0) { // no adapter: the frozen linear, one rounding
        cu_matmul_fwd(be, out, x, w, bias, M, K, Nout);
        return;
    }
    int mc = lora_chunk_rows(be, M, Nout);
    size_t bA3 = lt_align256((size_t)LORA_NS * r * K * sizeof(lt_bf16)), bS1 = lt_align256((size_t)M * LORA_NS * r * 4);
    size_t bF = lt_align256((size_t)mc * Nout * 4);
    char *sc = (char *)lt_cuda_scratch(be, bA3 + bS1 + bF);
    if (!sc) return;
    lt_bf16 *A3 = (lt_bf16 *)sc;        // (r, 3K) = (3r, K): row 3j + p is piece p of A's row j
    float *S1 = (float *)(sc + bA3);    // (M, 3r)
    float *F = (float *)(sc + bA3 + bS1); // (mc, Nout) fp32 frozen product
    // (1) xa (M, r) = x_lora (M, K) @ A^T: S1 = x_lora @ A3^T, xa[m, j] = sum_p S1[m, 3j + p]
    lora_split3(be, A3, A, (size_t)r, K);
    gemm_bf16_f32(be, 0, 1, M, LORA_NS * r, K, x_lora, K, A3, K, S1, LORA_NS * r, 0.f, "lora_fwd v2: xa");
    lora_combine3(be, xa, S1, M, r, (long)LORA_NS * r, LORA_NS, 1, 1.f, 0);
    // (2) per chunk: F = x @ w^T (fp32), out = bf16(F + bias + scale * xa @ B^T)
    for (int m0 = 0; m0 < M; m0 += mc) {
        int rows = M - m0 < mc ? M - m0 : mc;
        gemm_bf16_f32(be, 0, 1, rows, Nout, K, (const lt_bf16 *)x + (size_t)m0 * K, K, w, K, F, Nout, 0.f,
                      "lora_fwd v2: frozen x @ w^T (fp32)");
        lora_epilogue(be, (lt_bf16 *)out + (size_t)m0 * Nout, Nout, F, Nout, (const lt_bf16 *)bias, 0,
                      xa + (size_t)m0 * r, B, r, 1, rows, Nout, r, scale);
    }
}

static void cu_lora_bwd_v2(lt_backend *be, void *dx, int acc_dx, void *dx_lora, float *dA, float *dB,
                           const void *dout, const void *x_lora, const void *w, const float *A, const float *B,
                           const float *xa, int M, int K, int Nout, int r, float scale) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (M <= 0 || K <= 0 || Nout <= 0) return;
    if (r <= 0) {
        if (dx) matmul_dx(be, dx, acc_dx, dout, w, M, K, Nout, "lora_bwd v2 dx (no adapter)");
        if (dx_lora)
            LT_CUDA_CHECK(be, cudaMemsetAsync(dx_lora, 0, (size_t)M * K * sizeof(lt_bf16), c->stream),
                          "lora_bwd v2: zero dx_lora");
        return;
    }
    const int R3 = LORA_NS * r;
    int fused_dx = dx && !dx_lora; // dx gets the adapter term: through the fp32 chunk
    int mc = lora_chunk_rows(be, M, K);
    size_t bB3 = lt_align256((size_t)Nout * R3 * 2), bS2 = lt_align256((size_t)M * R3 * 4), bt = lt_align256((size_t)M * r * 4);
    size_t bT3 = lt_align256((size_t)M * R3 * 2), bS3 = lt_align256((size_t)R3 * K * 4), bX3 = bT3, bS4 = lt_align256((size_t)Nout * R3 * 4);
    size_t bF = fused_dx ? lt_align256((size_t)mc * K * 4) : 0;
    char *sc = (char *)lt_cuda_scratch(be, bB3 + bS2 + bt + bT3 + bS3 + bX3 + bS4 + bF);
    if (!sc) return;
    lt_bf16 *B3 = (lt_bf16 *)sc;           // (Nout, 3r): pieces of B, [p0 | p1 | p2] per row
    float *S2 = (float *)(sc += bB3);      // (M, 3r)
    float *t = (float *)(sc += bS2);       // (M, r) = scale * dout @ B
    lt_bf16 *T3 = (lt_bf16 *)(sc += bt);   // (M, 3r): pieces of t
    float *S3 = (float *)(sc += bT3);      // (3r, K)
    lt_bf16 *X3 = (lt_bf16 *)(sc += bS3);  // (M, 3r): pieces of xa
    float *S4 = (float *)(sc += bX3);      // (Nout, 3r)
    float *F = (float *)(sc += bS4);       // (mc, K) fp32 frozen dx product
    const lt_bf16 *g = (const lt_bf16 *)dout;

    // dB (Nout, r) += scale * dout^T (Nout, M) @ xa (M, r)
    if (dB) {
        lora_split3(be, X3, xa, (size_t)M, r);
        gemm_bf16_f32(be, 1, 0, Nout, R3, M, g, Nout, X3, R3, S4, R3, 0.f, "lora_bwd v2: dout^T @ xa");
        lora_combine3(be, dB, S4, Nout, r, R3, 1, r, scale, 1);
    }
    if (!dA && !dx && !dx_lora) return;
    // t (M, r) = scale * dout (M, Nout) @ B (Nout, r)
    lora_split3(be, B3, B, (size_t)Nout, r);
    gemm_bf16_f32(be, 0, 0, M, R3, Nout, g, Nout, B3, R3, S2, R3, 0.f, "lora_bwd v2: dout @ B");
    lora_combine3(be, t, S2, M, r, R3, 1, r, scale, 0);
    // dA (r, K) += t^T (r, M) @ x_lora (M, K)
    if (dA) {
        lora_split3(be, T3, t, (size_t)M, r);
        gemm_bf16_f32(be, 1, 0, R3, K, M, T3, R3, x_lora, K, S3, K, 0.f, "lora_bwd v2: t^T @ x_lora");
        lora_combine3(be, dA, S3, r, K, K, 1, (long)r * K, 1.f, 1);
    }
    // the x_lora gradient t @ A (M, K); A (r, K): Q(k, j) = A[j*K + k]
    if (dx_lora) {
        if (dx) matmul_dx(be, dx, acc_dx, dout, w, M, K, Nout, "lora_bwd v2 dx"); // bf16 rounding (cuBLAS, once)
        for (int m0 = 0; m0 < M; m0 += mc) {
            int rows = M - m0 < mc ? M - m0 : mc;
            lora_epilogue(be, (lt_bf16 *)dx_lora + (size_t)m0 * K, K, NULL, 0, NULL, 0, t + (size_t)m0 * r, A, 1, K,
                          rows, K, r, 1.f);
        }
    } else if (fused_dx) {
        for (int m0 = 0; m0 < M; m0 += mc) {
            int rows = M - m0 < mc ? M - m0 : mc;
            // F (rows, K) = dout[m0:] (rows, Nout) @ w (Nout, K), fp32
            gemm_bf16_f32(be, 0, 0, rows, K, Nout, g + (size_t)m0 * Nout, Nout, w, K, F, K, 0.f,
                          "lora_bwd v2: frozen dout @ w (fp32)");
            lora_epilogue(be, (lt_bf16 *)dx + (size_t)m0 * K, K, F, K, NULL, acc_dx, t + (size_t)m0 * r, A, 1, K,
                          rows, K, r, 1.f);
        }
    }
}

static void cu_lora_fwd_sel(lt_backend *be, void *out, float *xa, const void *x, const void *x_lora, const void *w,
                            const void *bias, const float *A, const float *B, int M, int K, int Nout, int r,
                            float scale) {
    if (lora_version(be) == 1)
        cu_lora_fwd(be, out, xa, x, x_lora, w, bias, A, B, M, K, Nout, r, scale);
    else
        cu_lora_fwd_v2(be, out, xa, x, x_lora, w, bias, A, B, M, K, Nout, r, scale);
}

static void cu_lora_bwd_sel(lt_backend *be, void *dx, int acc_dx, void *dx_lora, float *dA, float *dB,
                            const void *dout, const void *x_lora, const void *w, const float *A, const float *B,
                            const float *xa, int M, int K, int Nout, int r, float scale) {
    if (lora_version(be) == 1)
        cu_lora_bwd(be, dx, acc_dx, dx_lora, dA, dB, dout, x_lora, w, A, B, xa, M, K, Nout, r, scale);
    else
        cu_lora_bwd_v2(be, dx, acc_dx, dx_lora, dA, dB, dout, x_lora, w, A, B, xa, M, K, Nout, r, scale);
}

void lt_cuda_matmul_init(lt_backend *be) {
    be->matmul_fwd = cu_matmul_fwd;
    be->matmul_bwd = cu_matmul_bwd;
    be->lora_fwd = cu_lora_fwd_sel;
    be->lora_bwd = cu_lora_bwd_sel;
}
