/*
 * lt_cuda_loss.cu -- cross-entropy over the vocabulary fused with softmax and
 * its gradient.
 * v1: one block (512 threads) per row. Pass 1: each thread keeps an online
 *     (max, sum of exp) over its strided share of the row in fp32; the block
 *     combines the pairs -> lse in fp32; loss = lse - logit[target] (f32).
 *     Pass 2: dlogits = grad_scale * (exp(x - lse) - onehot), rounded to bf16.
 *     -inf logits (masked tokens) count as exp(-inf) = 0 and get a zero
 *     gradient; a row whose logits are all -inf has no softmax (NaN loss).
 *     dlogits may alias logits: each element is read and then written by the
 *     same thread, and the target logit is read by every thread before the
 *     block-wide reduction (a barrier) that precedes any write.
 * Soft-capped logits (cross_entropy_cap, cap > 0): every logit is read as
 *     z = cap * tanh(x / cap) (fp32), and the gradient is taken with respect
 *     to x: grad_scale * (exp(z - lse) - onehot) * (1 - (z / cap)^2). cap = 0
 *     is the plain op (the same kernel).
 * TODO v2: 16-byte loads; one read of the row instead of two when V fits in
 *     shared memory.
 */
#include <math.h>

#include "lt_cuda.h"

#define CE_THREADS 512

/* combine two online-softmax partials (m = max, s = sum exp(x - m)) */
static __device__ __forceinline__ void ms_combine(float &m, float &s, float m2, float s2) {
    if (m2 == -INFINITY) return;
    if (m == -INFINITY) {
        m = m2;
        s = s2;
        return;
    }
    float M = fmaxf(m, m2);
    s = s * expf(m - M) + s2 * expf(m2 - M);
    m = M;
}

/* a logit as the loss reads it: soft-capped when cap > 0 */
static __device__ __forceinline__ float ce_logit(lt_bf16 x, float cap) {
    float v = __bfloat162float(x);
    return cap > 0.f ? cap * tanhf(v / cap) : v;
}

__global__ void __launch_bounds__(CE_THREADS)
    cross_entropy_v1(float *loss, lt_bf16 *dlogits, const lt_bf16 *logits, const int32_t *targets, int V,
                     float grad_scale, float cap) {
    __shared__ float sm[CE_THREADS / 32], ss[CE_THREADS / 32];
    __shared__ float s_lse;
    int row = blockIdx.x;
    int tid = threadIdx.x;
    int tgt = targets[row];
    const lt_bf16 *x = logits + (size_t)row * V;
    lt_bf16 *dx = dlogits ? dlogits + (size_t)row * V : NULL;
    if (tgt < 0) { // not a target: loss 0, gradient 0
        if (tid == 0) loss[row] = 0.f;
        if (dx)
            for (int v = tid; v < V; v += blockDim.x) dx[v] = __float2bfloat16_rn(0.f);
        return;
    }
    float xt = ce_logit(x[tgt], cap); // read before any thread writes dx (aliasing)
    float m = -INFINITY, s = 0.f;
    for (int v = tid; v < V; v += blockDim.x) {
        float xv = ce_logit(x[v], cap);
        // a -inf logit (masked token) adds exp(-inf) = 0: skipped, so that a
        // thread whose first values are -inf never computes -inf - (-inf)
        if (xv == -INFINITY) continue;
        if (xv > m) {
            s = s * expf(m - xv) + 1.f; // expf(-inf) = 0 on the first finite element
            m = xv;
        } else {
            s += expf(xv - m);
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        ms_combine(m, s, m2, s2);
    }
    int warp = tid / 32, lane = tid % 32;
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        int nw = blockDim.x / 32;
        m = lane < nw ? sm[lane] : -INFINITY;
        s = lane < nw ? ss[lane] : 0.f;
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o);
            float s2 = __shfl_xor_sync(0xffffffffu, s, o);
            ms_combine(m, s, m2, s2);
        }
        if (lane == 0) {
            float lse = m + logf(s);
            s_lse = lse;
            loss[row] = lse - xt;
        }
    }
    __syncthreads();
    if (!dx) return;
    float lse = s_lse;
    for (int v = tid; v < V; v += blockDim.x) {
        float z = ce_logit(x[v], cap);
        float p = expf(z - lse);
        if (v == tgt) p -= 1.f;
        if (cap > 0.f) p *= 1.f - (z / cap) * (z / cap);
        dx[v] = __float2bfloat16_rn(grad_scale * p); // bf16 rounding
    }
}

static void cu_cross_entropy_cap(lt_backend *be, float *loss, void *dlogits, const void *logits,
                                 const int32_t *targets, int N, int V, float grad_scale, float cap) {
    if (N <= 0 || V <= 0) return;
    cross_entropy_v1<<<N, CE_THREADS, 0, lt_cuda(be)->stream>>>(loss, (lt_bf16 *)dlogits, (const lt_bf16 *)logits,
                                                               targets, V, grad_scale, cap);
    LT_CUDA_LAUNCHED(be, "cross_entropy");
}
static void cu_cross_entropy(lt_backend *be, float *loss, void *dlogits, const void *logits, const int32_t *targets,
                             int N, int V, float grad_scale) {
    cu_cross_entropy_cap(be, loss, dlogits, logits, targets, N, V, grad_scale, 0.f);
}

void lt_cuda_loss_init(lt_backend *be) {
    be->cross_entropy = cu_cross_entropy;
    be->cross_entropy_cap = cu_cross_entropy_cap;
}
