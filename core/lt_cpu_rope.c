/*
 * lt_cpu_rope.c -- rotary position embedding, Hugging Face "rotate_half"
 * layout over the first R dims of each head (CPU, fp32, in place). For
 * i < R/2, with a = pos[n] * inv_freq[i] computed in fp32 (as transformers
 * does: inv_freq @ position_ids in fp32) and c = f cos a, s = f sin a (f the
 * LongRoPE attention factor, 1 otherwise; transformers scales cos and sin in
 * fp32):
 *   forward:  x1' = x1 c - x2 s,   x2' = x2 c + x1 s
 *   backward: the transpose, dx1 = dy1 c + dy2 s, dx2 = dy2 c - dy1 s
 * where x1 = x[n, h, i] and x2 = x[n, h, i + R/2]; dims R..D-1 pass through
 * (partial rotary).
 */
#include <math.h>

#include "lt_cpu.h"

static void rope(lt_backend *be, float *x, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                 float scale, float sign) {
    int half = R / 2;
    int nt = lt_cpu_threads_for(be, (size_t)N * H * R);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int n = 0; n < N; n++) {
        float p = (float)pos[n];
        for (int i = 0; i < half; i++) {
            float a = p * inv_freq[i];
            float c = cosf(a) * scale, s = sign * (sinf(a) * scale);
            for (int h = 0; h < H; h++) {
                float *xh = x + ((size_t)n * H + h) * D; // (D)
                float x1 = xh[i], x2 = xh[i + half];
                xh[i] = x1 * c - x2 * s;
                xh[i + half] = x2 * c + x1 * s;
            }
        }
    }
}

void lt_cpu_rope_fwd(lt_backend *be, void *x, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                     float scale) {
    rope(be, (float *)x, pos, inv_freq, N, H, D, R, scale, 1.0f); // x (N, H, D)
}

void lt_cpu_rope_bwd(lt_backend *be, void *dx, const int32_t *pos, const float *inv_freq, int N, int H, int D, int R,
                     float scale) {
    rope(be, (float *)dx, pos, inv_freq, N, H, D, R, scale, -1.0f); // dx (N, H, D)
}
