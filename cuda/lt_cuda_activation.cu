/*
 * lt_cuda_activation.cu -- elementwise ops on bf16: swiglu and geglu (tanh GELU)
 * fwd/bwd, add, scale.
 * fp32 math, one bf16 rounding per output element.
 * v1: grid-stride loops, one element per thread step.
 * TODO v2: 16-byte (8 x bf16) loads and stores.
 */
#include "lt_cuda.h"

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* out = silu(gate) * up, silu(g) = g * sigmoid(g) */
__global__ void swiglu_fwd_v1(lt_bf16 *out, const lt_bf16 *gate, const lt_bf16 *up, size_t n) {
    GRID_STRIDE(i, n) {
        float g = __bfloat162float(gate[i]);
        float sig = 1.f / (1.f + expf(-g));
        out[i] = __float2bfloat16_rn(g * sig * __bfloat162float(up[i])); // bf16 rounding
    }
}

/* dgate = dout * up * sig * (1 + g (1 - sig)),  dup = dout * silu(g).
 * Every element is read before it is written, so dgate/dup may alias inputs. */
__global__ void swiglu_bwd_v1(lt_bf16 *dgate, lt_bf16 *dup, const lt_bf16 *dout, const lt_bf16 *gate,
                              const lt_bf16 *up, size_t n) {
    GRID_STRIDE(i, n) {
        float g = __bfloat162float(gate[i]);
        float u = __bfloat162float(up[i]);
        float d = __bfloat162float(dout[i]);
        float sig = 1.f / (1.f + expf(-g));
        dgate[i] = __float2bfloat16_rn(d * u * sig * (1.f + g * (1.f - sig))); // bf16 rounding
        dup[i] = __float2bfloat16_rn(d * g * sig);                            // bf16 rounding
    }
}

__global__ void add_v1(lt_bf16 *out, const lt_bf16 *a, const lt_bf16 *b, size_t n) {
    GRID_STRIDE(i, n) out[i] = __float2bfloat16_rn(__bfloat162float(a[i]) + __bfloat162float(b[i])); // bf16 rounding
}

/* out = gelu(gate) * up, gelu(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) */
#define GELU_BETA 0.7978845608028654f
#define GELU_KAPPA 0.044715f
__global__ void geglu_fwd_v1(lt_bf16 *out, const lt_bf16 *gate, const lt_bf16 *up, size_t n) {
    GRID_STRIDE(i, n) {
        float g = __bfloat162float(gate[i]);
        float t = tanhf(GELU_BETA * (g + GELU_KAPPA * g * g * g));
        out[i] = __float2bfloat16_rn(0.5f * g * (1.f + t) * __bfloat162float(up[i])); // bf16 rounding
    }
}

/* dgate = dout * up * (0.5 (1 + t) + 0.5 g (1 - t^2) sqrt(2/pi) (1 + 3 kappa g^2)), dup = dout * gelu(g) */
__global__ void geglu_bwd_v1(lt_bf16 *dgate, lt_bf16 *dup, const lt_bf16 *dout, const lt_bf16 *gate,
                             const lt_bf16 *up, size_t n) {
    GRID_STRIDE(i, n) {
        float g = __bfloat162float(gate[i]);
        float u = __bfloat162float(up[i]);
        float d = __bfloat162float(dout[i]);
        float t = tanhf(GELU_BETA * (g + GELU_KAPPA * g * g * g));
        float dg = 0.5f * (1.f + t) + 0.5f * g * (1.f - t * t) * GELU_BETA * (1.f + 3.f * GELU_KAPPA * g * g);
        dgate[i] = __float2bfloat16_rn(d * u * dg);          // bf16 rounding
        dup[i] = __float2bfloat16_rn(d * 0.5f * g * (1.f + t)); // bf16 rounding
    }
}

__global__ void scale_v1(lt_bf16 *x, size_t n, float s) {
    GRID_STRIDE(i, n) x[i] = __float2bfloat16_rn(__bfloat162float(x[i]) * s); // bf16 rounding
}

static void cu_geglu_fwd(lt_backend *be, void *out, const void *gate, const void *up, size_t n) {
    if (!n) return;
    geglu_fwd_v1<<<lt_grid_1d(n, 256), 256, 0, lt_cuda(be)->stream>>>((lt_bf16 *)out, (const lt_bf16 *)gate,
                                                                     (const lt_bf16 *)up, n);
    LT_CUDA_LAUNCHED(be, "geglu_fwd");
}

static void cu_geglu_bwd(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate, const void *up,
                         size_t n) {
    if (!n) return;
    geglu_bwd_v1<<<lt_grid_1d(n, 256), 256, 0, lt_cuda(be)->stream>>>(
        (lt_bf16 *)dgate, (lt_bf16 *)dup, (const lt_bf16 *)dout, (const lt_bf16 *)gate, (const lt_bf16 *)up, n);
    LT_CUDA_LAUNCHED(be, "geglu_bwd");
}

static void cu_scale(lt_backend *be, void *x, size_t n, float s) {
    if (!n) return;
    scale_v1<<<lt_grid_1d(n, 256), 256, 0, lt_cuda(be)->stream>>>((lt_bf16 *)x, n, s);
    LT_CUDA_LAUNCHED(be, "scale");
}

static void cu_swiglu_fwd(lt_backend *be, void *out, const void *gate, const void *up, size_t n) {
    if (!n) return;
    swiglu_fwd_v1<<<lt_grid_1d(n, 256), 256, 0, lt_cuda(be)->stream>>>((lt_bf16 *)out, (const lt_bf16 *)gate,
                                                                      (const lt_bf16 *)up, n);
    LT_CUDA_LAUNCHED(be, "swiglu_fwd");
}

static void cu_swiglu_bwd(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate,
                          const void *up, size_t n) {
    if (!n) return;
    swiglu_bwd_v1<<<lt_grid_1d(n, 256), 256, 0, lt_cuda(be)->stream>>>(
        (lt_bf16 *)dgate, (lt_bf16 *)dup, (const lt_bf16 *)dout, (const lt_bf16 *)gate, (const lt_bf16 *)up, n);
    LT_CUDA_LAUNCHED(be, "swiglu_bwd");
}

static void cu_add(lt_backend *be, void *out, const void *a, const void *b, size_t n) {
    if (!n) return;
    add_v1<<<lt_grid_1d(n, 256), 256, 0, lt_cuda(be)->stream>>>((lt_bf16 *)out, (const lt_bf16 *)a,
                                                               (const lt_bf16 *)b, n);
    LT_CUDA_LAUNCHED(be, "add");
}

void lt_cuda_activation_init(lt_backend *be) {
    be->swiglu_fwd = cu_swiglu_fwd;
    be->swiglu_bwd = cu_swiglu_bwd;
    be->add = cu_add;
    be->geglu_fwd = cu_geglu_fwd;
    be->geglu_bwd = cu_geglu_bwd;
    be->scale = cu_scale;
}
