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
 *              for the adapter products. TODO v2: fuse the B-product into the
 *              epilogue of the frozen GEMM (one bf16 rounding instead of two),
 *              and a split-K (deterministic) version for dA / dB whose
 *              reduction runs over all M rows.
 */
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

void lt_cuda_matmul_init(lt_backend *be) {
    be->matmul_fwd = cu_matmul_fwd;
    be->matmul_bwd = cu_matmul_bwd;
    be->lora_fwd = cu_lora_fwd;
    be->lora_bwd = cu_lora_bwd;
}
