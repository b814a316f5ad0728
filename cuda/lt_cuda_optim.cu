/*
 * lt_cuda_optim.cu -- the AdamW step (the sum of squares of the gradient
 * norm: lt_cuda_sumsq.cu).
 *   adamw v1: every tensor of the step in one launch. The descriptors are
 *     copied to the device; block b finds its tensor by binary search over
 *     the tensors' first-block numbers; each thread updates ADAMW_PER_THREAD
 *     elements. fp32 math and state, in torch.optim.AdamW's order (the
 *     CPU backend's); with master weights, the bf16 (or f16) parameter is
 *     written from the updated master.
 */
#include <math.h>
#include <stdlib.h>

#include "lt_cuda.h"

#define ADAMW_THREADS 256
#define ADAMW_PER_THREAD 4
#define ADAMW_PER_BLOCK (ADAMW_THREADS * ADAMW_PER_THREAD)

typedef struct adamw_desc {
    void *param;
    float *master;
    const float *grad;
    float *m, *v;
    size_t n;
    size_t block0; /* first block of this tensor in the launch */
    float decay; /* 1 - lr * weight_decay */
    int dtype; /* lt_dtype of param */
} adamw_desc;

__global__ void __launch_bounds__(ADAMW_THREADS)
    adamw_v1(const adamw_desc *ds, int count, float neg_step_size, float bc2_sqrt, float w1, float w2, float b2,
             float eps, float grad_scale) {
    size_t b = blockIdx.x;
    int lo = 0, hi = count - 1; // last tensor with block0 <= b
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (ds[mid].block0 <= b) lo = mid;
        else hi = mid - 1;
    }
    const adamw_desc d = ds[lo];
    size_t base = (b - d.block0) * ADAMW_PER_BLOCK;
#pragma unroll
    for (int k = 0; k < ADAMW_PER_THREAD; k++) {
        size_t i = base + (size_t)k * ADAMW_THREADS + threadIdx.x;
        if (i >= d.n) break;
        // torch.optim.AdamW's order (as lt_cpu_optim.c), with explicit
        // roundings (__f*_rn) so nvcc contracts nothing into an FMA the CPU
        // does not do: the result matches the CPU to the bit.
        float g = __fmul_rn(d.grad[i], grad_scale);
        float p = __fmul_rn(d.master ? d.master[i] : ((float *)d.param)[i], d.decay); // p *= 1 - lr*wd
        float mo = d.m[i];
        float m = fmaf(w1, __fsub_rn(g, mo), mo);                   // lerp(m, g, 1 - b1)
        float v = fmaf(__fmul_rn(w2, g), g, __fmul_rn(d.v[i], b2)); // v b2 + (1 - b2) g^2
        float denom = __fadd_rn(__fdiv_rn(sqrtf(v), bc2_sqrt), eps);
        p = __fadd_rn(p, __fdiv_rn(__fmul_rn(neg_step_size, m), denom));
        d.m[i] = m;
        d.v[i] = v;
        if (d.master) d.master[i] = p;
        if (d.dtype == LT_F32) ((float *)d.param)[i] = p;
        else if (d.dtype == LT_BF16) ((lt_bf16 *)d.param)[i] = __float2bfloat16_rn(p); // bf16 rounding of the weight
        else ((__half *)d.param)[i] = __float2half_rn(p);                               // f16 rounding of the weight
    }
}

static void cu_adamw(lt_backend *be, const lt_adamw_tensor *ts, int count, float lr, float beta1, float beta2,
                     float eps, int step, float grad_scale) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (count <= 0) return;
    if (step < 1) {
        lt_cuda_record(be, LT_ERR_INVALID, "cuda: adamw: step %d (expected >= 1)", step);
        return;
    }
    adamw_desc *h = (adamw_desc *)malloc((size_t)count * sizeof *h);
    if (!h) {
        lt_cuda_record(be, LT_ERR_NOMEM, "cuda: adamw: out of host memory for %d descriptors", count);
        return;
    }
    size_t blocks = 0;
    int k = 0;
    for (int i = 0; i < count; i++) {
        const lt_adamw_tensor *t = &ts[i];
        if (t->n == 0) continue;
        if (t->param_dtype != LT_F32 && t->param_dtype != LT_BF16 && t->param_dtype != LT_F16) {
            lt_cuda_record(be, LT_ERR_INVALID, "cuda: adamw: tensor %d has parameter dtype %d (F32, BF16 or F16)",
                           i, (int)t->param_dtype);
            free(h);
            return;
        }
        if (t->param_dtype != LT_F32 && !t->master) {
            lt_cuda_record(be, LT_ERR_INVALID, "cuda: adamw: tensor %d is not f32 but has no master weights", i);
            free(h);
            return;
        }
        h[k].param = t->param;
        h[k].master = t->master;
        h[k].grad = t->grad;
        h[k].m = t->m;
        h[k].v = t->v;
        h[k].n = t->n;
        h[k].block0 = blocks;
        h[k].decay = (float)(1.0 - (double)lr * (double)t->weight_decay);
        h[k].dtype = (int)t->param_dtype;
        blocks += (t->n + ADAMW_PER_BLOCK - 1) / ADAMW_PER_BLOCK;
        k++;
    }
    if (k == 0) {
        free(h);
        return;
    }
    if (blocks > 0x7fffffffu) {
        lt_cuda_record(be, LT_ERR_UNSUPPORTED, "cuda: adamw: %zu blocks exceed one launch", blocks);
        free(h);
        return;
    }
    adamw_desc *d = (adamw_desc *)lt_cuda_scratch(be, (size_t)k * sizeof *d);
    if (!d) {
        free(h);
        return;
    }
    /* from pageable memory: returns once the data is staged, so h can go */
    LT_CUDA_CHECK(be, cudaMemcpyAsync(d, h, (size_t)k * sizeof *d, cudaMemcpyHostToDevice, c->stream),
                  "adamw: descriptors");
    free(h);
    /* scalars in double, rounded to float where torch does (lt_cpu_optim.c) */
    double bc1 = 1.0 - pow((double)beta1, (double)step);
    double bc2 = 1.0 - pow((double)beta2, (double)step);
    float neg_step_size = (float)(-((double)lr / bc1));
    float bc2_sqrt = (float)sqrt(bc2);
    float w1 = (float)(1.0 - (double)beta1), w2 = (float)(1.0 - (double)beta2);
    adamw_v1<<<(unsigned)blocks, ADAMW_THREADS, 0, c->stream>>>(d, k, neg_step_size, bc2_sqrt, w1, w2, beta2, eps,
                                                                grad_scale);
    LT_CUDA_LAUNCHED(be, "adamw");
}

void lt_cuda_optim_init(lt_backend *be) {
    be->adamw = cu_adamw;
}
