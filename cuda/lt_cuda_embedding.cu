/*
 * lt_cuda_embedding.cu -- token embedding lookup and its deterministic
 * backward.
 *   fwd v1: out[n, :] = table[ids[n], :], a bf16 copy (no rounding).
 *   noise v1: NEFTune's x += mag * u, u the shared counter-based draws.
 *   bwd v1: sort the positions by token id (cub radix sort: stable, so equal
 *           ids keep ascending n), then one block per run of equal ids adds
 *           that run's dout rows in ascending n into an fp32 accumulator that
 *           starts from dtable's value -- the same sequence of additions as
 *           the CPU's loop over n, with no atomics: deterministic, and
 *           parallel over distinct tokens x columns.
 * TODO v2: several short runs per block (most runs are 1-3 tokens long).
 */
#include <cub/device/device_radix_sort.cuh>

#include "lt_cuda.h"

__global__ void embedding_fwd_v1(lt_bf16 *out, const lt_bf16 *table, const int32_t *ids, int N, int C) {
    size_t total = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / C, c = i % C;
        out[i] = table[(size_t)ids[n] * C + c];
    }
}

__global__ void iota_kernel(int32_t *v, int N) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) v[i] = i;
}

/* Block i works only if sorted position i starts a run of equal ids. */
__global__ void embedding_bwd_runs_v1(float *dtable, const lt_bf16 *dout, const int32_t *keys, const int32_t *rows,
                                      int N, int C) {
    int i = blockIdx.x;
    int id = keys[i];
    if (i > 0 && keys[i - 1] == id) return;
    int end = i + 1;
    while (end < N && keys[end] == id) end++;
    float *drow = dtable + (size_t)id * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = drow[c];
        for (int j = i; j < end; j++) acc += __bfloat162float(dout[(size_t)rows[j] * C + c]);
        drow[c] = acc; // f32: no rounding to bf16
    }
}

static void cu_embedding_fwd(lt_backend *be, void *out, const void *table, const int32_t *ids, int N, int C) {
    size_t total = (size_t)N * C;
    if (!total) return;
    embedding_fwd_v1<<<lt_grid_1d(total, 256), 256, 0, lt_cuda(be)->stream>>>((lt_bf16 *)out,
                                                                             (const lt_bf16 *)table, ids, N, C);
    LT_CUDA_LAUNCHED(be, "embedding_fwd");
}

static void cu_embedding_bwd(lt_backend *be, float *dtable, const void *dout, const int32_t *ids, int N, int C) {
    lt_cuda_ctx *c = lt_cuda(be);
    if (N <= 0 || C <= 0) return;
    size_t temp_bytes = 0;
    if (LT_CUDA_CHECK(be,
                      cub::DeviceRadixSort::SortPairs(NULL, temp_bytes, (const int32_t *)NULL, (int32_t *)NULL,
                                                      (const int32_t *)NULL, (int32_t *)NULL, N, 0, 32, c->stream),
                      "embedding_bwd: sort size"))
        return;
    size_t vec = lt_align256((size_t)N * sizeof(int32_t));
    char *s = (char *)lt_cuda_scratch(be, 3 * vec + lt_align256(temp_bytes));
    if (!s) return;
    int32_t *keys = (int32_t *)s, *rows_in = (int32_t *)(s + vec), *rows = (int32_t *)(s + 2 * vec);
    void *temp = s + 3 * vec;
    iota_kernel<<<lt_cdiv(N, 256), 256, 0, c->stream>>>(rows_in, N);
    LT_CUDA_LAUNCHED(be, "embedding_bwd: iota");
    if (LT_CUDA_CHECK(be,
                      cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ids, keys, (const int32_t *)rows_in, rows,
                                                      N, 0, 32, c->stream),
                      "embedding_bwd: sort"))
        return;
    int threads = C >= 256 ? 256 : (C + 31) / 32 * 32;
    embedding_bwd_runs_v1<<<N, threads, 0, c->stream>>>(dtable, (const lt_bf16 *)dout, keys, rows, N, C);
    LT_CUDA_LAUNCHED(be, "embedding_bwd");
}

/* x[n, c] += mag * u(key, n * C + c) (lt_backend.h): the same draws as the
 * CPU; the product rounded once to fp32 (no fma), the sum once to bf16 */
__global__ void embed_noise_v1(lt_bf16 *x, size_t total, float mag, uint64_t key) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float d = __fmul_rn(mag, lt_embed_noise_u(key, (uint64_t)i));
        x[i] = __float2bfloat16(__fadd_rn(__bfloat162float(x[i]), d));
    }
}

static void cu_embed_noise(lt_backend *be, void *x, int N, int C, float mag, uint64_t key) {
    size_t total = (size_t)N * C;
    if (!total) return;
    embed_noise_v1<<<lt_grid_1d(total, 256), 256, 0, lt_cuda(be)->stream>>>((lt_bf16 *)x, total, mag, key);
    LT_CUDA_LAUNCHED(be, "embed_noise");
}

void lt_cuda_embedding_init(lt_backend *be) {
    be->embed_noise = cu_embed_noise;
    be->embedding_fwd = cu_embedding_fwd;
    be->embedding_bwd = cu_embedding_bwd;
}
