/*
 * lt_cuda_mma.h -- the PTX wrappers of the tensor-core kernels (attention v2,
 * the fused NF4 GEMM): cp.async, ldmatrix, mma.sync m16n8k16 bf16 -> f32.
 * sm_80+; compiled for an older target the bodies trap. Included by .cu files
 * only (static device functions: each includer gets its own copies).
 */
#ifndef LT_CUDA_MMA_H
#define LT_CUDA_MMA_H

#include "lt_cuda.h"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define LT_MMA_OLD_ARCH 1
#endif

static __device__ __forceinline__ unsigned smem_u32(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

/* 16-byte global -> shared copy; valid == false writes 16 zero bytes */
static __device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
#ifdef LT_MMA_OLD_ARCH
    __trap();
#else
    unsigned d = smem_u32(dst);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
#endif
}
static __device__ __forceinline__ void cp_async_commit() {
#ifndef LT_MMA_OLD_ARCH
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N> static __device__ __forceinline__ void cp_async_wait() {
#ifndef LT_MMA_OLD_ARCH
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/* four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i,
 * register i receives matrix i: lane l holds row l/4, columns 2(l%4), +1 */
static __device__ __forceinline__ void ldsm_x4(unsigned r[4], const void *p) {
#ifdef LT_MMA_OLD_ARCH
    __trap();
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
#endif
}
/* same, transposed: lane l holds rows 2(l%4), +1 of column l/4 */
static __device__ __forceinline__ void ldsm_x4_t(unsigned r[4], const void *p) {
#ifdef LT_MMA_OLD_ARCH
    __trap();
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
#endif
}

/* c (16x8 f32) += a (16x16 bf16, row) * b (16x8 bf16, col). Fragments
 * (g = lane/4, q = lane%4):
 *   a[0] = A[g][2q..2q+1]   a[1] = A[g+8][2q..]   a[2] = A[g][2q+8..]   a[3] = A[g+8][2q+8..]
 *   b0 = B[2q..2q+1][g]     b1 = B[2q+8..2q+9][g]
 *   c[0..1] = C[g][2q..2q+1]   c[2..3] = C[g+8][2q..2q+1]                  */
static __device__ __forceinline__ void mma16816(float c[4], const unsigned a[4], unsigned b0, unsigned b1) {
#ifdef LT_MMA_OLD_ARCH
    __trap();
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* two floats -> one register of two bf16, `lo` in the low half (the lower
 * column index). bf16 rounding of a tensor-core operand. */
static __device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    union {
        __nv_bfloat162 h;
        unsigned u;
    } x;
    x.h = __floats2bfloat162_rn(lo, hi);
    return x.u;
}

#endif
