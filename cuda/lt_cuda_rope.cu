/*
 * lt_cuda_rope.cu -- rotary position embedding, Hugging Face "rotate_half"
 * layout over the first R dims of each head, in place on bf16 (N, H, D):
 *   for i < R/2, a = pos[n] * inv_freq[i] (fp32 product, as the CPU does),
 *   c = scale cos a, s = scale sin a (LongRoPE's attention factor; 1 otherwise),
 *   (x[i], x[i+R/2]) <- (x[i] c - x[i+R/2] s, x[i+R/2] c + x[i] s)
 * dims R..D-1 are not touched (partial rotary). The backward applies the
 * transpose (angle -a, same scale).
 * v1: one thread per (n, h, i) pair; accurate sincosf (full range reduction,
 * positions reach 1e5+). TODO v2: one thread per (n, i) looping the heads
 * (one sincos per position and frequency), 16-byte loads.
 */
#include "lt_cuda.h"

__global__ void rope_v1(lt_bf16 *x, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                        float scale, float sign) {
    int half = R / 2;
    size_t total = (size_t)N * H * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t nh = idx / half; // n * H + h
        int n = (int)(nh / H);
        float a = (float)pos[n] * inv_freq[i];
        float s, c;
        sincosf(a, &s, &c);
        c *= scale;
        s = sign * (s * scale);
        lt_bf16 *p = x + nh * D;
        float x0 = __bfloat162float(p[i]), x1 = __bfloat162float(p[i + half]);
        p[i] = __float2bfloat16_rn(x0 * c - x1 * s);        // bf16 rounding
        p[i + half] = __float2bfloat16_rn(x1 * c + x0 * s); // bf16 rounding
    }
}

static void rope(lt_backend *be, void *x, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                 float scale, float sign, const char *what) {
    size_t total = (size_t)N * H * (R / 2);
    if (total == 0) return;
    rope_v1<<<lt_grid_1d(total, 256), 256, 0, lt_cuda(be)->stream>>>((lt_bf16 *)x, pos, inv_freq, N, H, D, R, scale,
                                                                      sign);
    LT_CUDA_LAUNCHED(be, what);
}

static void cu_rope_fwd(lt_backend *be, void *x, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                        float scale) {
    rope(be, x, pos, inv_freq, N, H, D, R, scale, 1.f, "rope_fwd");
}
static void cu_rope_bwd(lt_backend *be, void *dx, const int32_t *pos, const float *inv_freq, int N, int H, int D,
                        int R, float scale) {
    rope(be, dx, pos, inv_freq, N, H, D, R, scale, -1.f, "rope_bwd");
}

void lt_cuda_rope_init(lt_backend *be) {
    be->rope_fwd = cu_rope_fwd;
    be->rope_bwd = cu_rope_bwd;
}
