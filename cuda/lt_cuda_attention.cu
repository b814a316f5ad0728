/*
 * lt_cuda_attention.cu -- causal, document-separated, grouped-query attention
 * (flash-attention style: no T x T matrix in memory).
 *
 * Layout: q, out (N, Hq, D), k, v (N, Hkv, D) bf16 with N = B*T; lse
 * (B, Hq, T) f32; query (b, t) sees keys j with doc_start[b*T+t] <= j <= t;
 * query head h reads kv head h / (Hq/Hkv). Any even D <= 256.
 *
 * v1 (this file): fp32 math on CUDA cores, everything staged as bf16 in
 * shared memory (lossless: the inputs are bf16).
 *   attn_fwd_v1   block = 8 warps = 8 consecutive queries of one (b, h).
 *                 K/V tiles of 32 keys are loaded once per block; inside a
 *                 tile lane j computes the score of key j (the full dot
 *                 product), the warp does one online-softmax update per tile
 *                 (max, rescale, sum in fp32), then each lane accumulates its
 *                 D/32 output dims over the tile's keys (p broadcast by
 *                 shuffle). lse = m + log(l) saved per row.
 *   attn_bwd      three kernels, no atomics (deterministic):
 *     attn_delta_v1  Delta[row] = dout . out (fp32), one warp per row.
 *     attn_dq_v1     like the forward, per query row: recompute
 *                    p = exp(s - lse), dp = dout . v_j, ds = p (dp - Delta),
 *                    dq = scale * sum_j ds_j k_j.
 *     attn_dkdv_v1   block = 8 warps = 8 consecutive keys of one (b, kv head);
 *                    loops over the query heads of the group and over tiles
 *                    of 32 queries from the key onwards (until the queries'
 *                    documents start after the block's keys): lane i handles
 *                    query i, dv_j += p_ij dout_i, dk_j += scale ds_ij q_i.
 *                    Documents are contiguous runs of tokens, so doc_start is
 *                    non-decreasing along t -- that is what ends the scan.
 * v2 (lt_cuda_attention_v2.cu): tensor cores (mma.sync), head dims 64, 128,
 *   256; dispatched first, v1 runs for other head dims or LT_ATTN_VERSION=1.
 * Soft-capped scores (attention_cap_*, Gemma 2): both versions compute
 *   s = cap * tanh(scale q.k / cap) and multiply ds by 1 - tanh^2; the
 *   dispatch is the same with or without a cap. Sliding windows are doc_start
 *   lower bounds (max(doc start, t - W + 1), still non-decreasing): both
 *   versions run them as they are.
 */
#include <limits.h>
#include <math.h>

#include "lt_cuda.h"

/* v2 (lt_cuda_attention_v2.cu, tensor cores): run first; 0 = not handled
 * (other head dim, LT_ATTN_VERSION=1, too little shared memory) -> v1 */
int lt_cuda_attention_v2_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                             const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale,
                             float cap);
int lt_cuda_attention_v2_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                             const void *k, const void *v, const void *out, const float *lse,
                             const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale,
                             float cap);

#define ATT_WARPS 8
#define ATT_THREADS (ATT_WARPS * 32)
#define KT 32 /* keys (or queries, in dkdv) per shared-memory tile */

typedef __nv_bfloat162 bf162;

/* dot product of two bf16 rows of even length D held in shared memory, fp32 */
static __device__ __forceinline__ float dot_bf16(const lt_bf16 *a, const lt_bf16 *b, int D) {
    const bf162 *a2 = (const bf162 *)a;
    const bf162 *b2 = (const bf162 *)b;
    float acc = 0.f;
    for (int d2 = 0; d2 < D / 2; d2++) {
        float2 x = __bfloat1622float2(a2[d2]);
        float2 y = __bfloat1622float2(b2[d2]);
        acc = fmaf(x.x, y.x, acc);
        acc = fmaf(x.y, y.y, acc);
    }
    return acc;
}

/* cooperative copy of rows [r0, r0 + KT) (only those <= rmax) of a (N, H, D)
 * bf16 tensor, head `hh`, sequence b, into smem rows of stride `ss` elements */
static __device__ __forceinline__ void load_tile(lt_bf16 *s, int ss, const lt_bf16 *g, int b, int T, int H, int hh,
                                                 int D, int r0, int rmax) {
    int half = D / 2;
    for (int e = threadIdx.x; e < KT * half; e += blockDim.x) {
        int rr = e / half, d = (e % half) * 2;
        int r = r0 + rr;
        if (r <= rmax)
            *(bf162 *)(s + rr * ss + d) = *(const bf162 *)(g + (((size_t)b * T + r) * H + hh) * D + d);
    }
}

/* ------------------------------------------------------------------------ */
/* forward                                                                  */

/* Soft-capped score (attention_cap_*): cap * tanh(s / cap), and tanh itself
 * for the backward's 1 - tanh^2; cap = 0: s unchanged, th = 0. */
static __device__ __forceinline__ float att_cap_t(float s, float cap, float *th) {
    if (cap > 0.f) {
        *th = tanhf(s / cap);
        return cap * *th;
    }
    *th = 0.f;
    return s;
}
static __device__ __forceinline__ float att_cap(float s, float cap) {
    float th;
    return att_cap_t(s, cap, &th);
}

template <int DPL>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_fwd_v1(lt_bf16 *out, float *lse, const lt_bf16 *q, const lt_bf16 *k, const lt_bf16 *v,
                const int32_t *doc_start, int T, int Hq, int Hkv, int D, float scale, float cap) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ int s_lo[ATT_WARPS], s_hi[ATT_WARPS];
    const int SS = D + 2; // padded row stride: lane-per-row reads hit distinct banks
    lt_bf16 *Ks = (lt_bf16 *)smem_raw; // [KT][SS]
    lt_bf16 *Vs = Ks + KT * SS;        // [KT][SS]
    lt_bf16 *Qs = Vs + KT * SS;        // [ATT_WARPS][D]

    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int b = blockIdx.z, h = blockIdx.y, t = blockIdx.x * ATT_WARPS + warp;
    int hk = h / (Hq / Hkv);
    bool active = t < T;
    int ds = active ? doc_start[(size_t)b * T + t] : INT_MAX;
    lt_bf16 *qs = Qs + warp * D;
    if (active)
        for (int d = lane; d < D; d += 32) qs[d] = q[(((size_t)b * T + t) * Hq + h) * D + d];
    if (lane == 0) {
        s_lo[warp] = active ? ds : INT_MAX;
        s_hi[warp] = active ? t : -1;
    }
    __syncthreads();
    int lo = INT_MAX, hi = -1; // keys any row of the block can see
    for (int w = 0; w < ATT_WARPS; w++) {
        lo = min(lo, s_lo[w]);
        hi = max(hi, s_hi[w]);
    }

    float o[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) o[i] = 0.f;
    float m = -INFINITY, l = 0.f;

    for (int j0 = lo; j0 <= hi; j0 += KT) {
        __syncthreads(); // the previous tile is consumed
        load_tile(Ks, SS, k, b, T, Hkv, hk, D, j0, hi);
        load_tile(Vs, SS, v, b, T, Hkv, hk, D, j0, hi);
        __syncthreads();
        if (!active || j0 > t || j0 + KT - 1 < ds) continue; // no key of this tile for this row (warp-uniform)
        int j = j0 + lane;
        bool valid = j >= ds && j <= t;
        float s = valid ? att_cap(scale * dot_bf16(qs, Ks + lane * SS, D), cap) : -INFINITY;
        float mnew = fmaxf(m, lt_warp_max(s)); // finite: the tile holds a key of this row
        float alpha = expf(m - mnew);          // 0 on the first tile (m = -inf)
        float p = valid ? expf(s - mnew) : 0.f;
        l = l * alpha + lt_warp_sum(p);
#pragma unroll
        for (int i = 0; i < DPL; i++) o[i] *= alpha;
        int jlo = max(ds - j0, 0), jhi = min(t - j0, KT - 1); // this row's keys in the tile
        for (int jj = jlo; jj <= jhi; jj++) {
            float pj = __shfl_sync(0xffffffffu, p, jj);
            const lt_bf16 *vr = Vs + jj * SS;
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                int d = lane + 32 * i;
                if (d < D) o[i] = fmaf(pj, __bfloat162float(vr[d]), o[i]);
            }
        }
        m = mnew;
    }
    if (!active) return;
    float inv = 1.f / l;
    lt_bf16 *orow = out + (((size_t)b * T + t) * Hq + h) * D;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        if (d < D) orow[d] = __float2bfloat16_rn(o[i] * inv); // bf16 rounding of the output
    }
    if (lane == 0) lse[((size_t)b * Hq + h) * T + t] = m + logf(l); // f32
}

/* ------------------------------------------------------------------------ */
/* backward                                                                 */

/* Delta[(b, h, t)] = sum_d dout * out, one warp per (b, t, h) row */
__global__ void attn_delta_v1(float *delta, const lt_bf16 *dout, const lt_bf16 *out, int B, int T, int Hq, int D) {
    size_t row = (size_t)blockIdx.x * ATT_WARPS + threadIdx.x / 32; // row = (b*T + t)*Hq + h
    int lane = threadIdx.x % 32;
    if (row >= (size_t)B * T * Hq) return;
    const lt_bf16 *g = dout + row * D, *o = out + row * D;
    float s = 0.f;
    for (int d = lane; d < D; d += 32) s += __bfloat162float(g[d]) * __bfloat162float(o[d]);
    s = lt_warp_sum(s);
    int h = (int)(row % Hq);
    size_t bt = row / Hq;
    int t = (int)(bt % T), b = (int)(bt / T);
    if (lane == 0) delta[((size_t)b * Hq + h) * T + t] = s;
}

template <int DPL>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_dq_v1(lt_bf16 *dq, const lt_bf16 *dout, const lt_bf16 *q, const lt_bf16 *k, const lt_bf16 *v,
               const float *lse, const float *delta, const int32_t *doc_start, int T, int Hq, int Hkv, int D,
               float scale, float cap) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ int s_lo[ATT_WARPS], s_hi[ATT_WARPS];
    const int SS = D + 2;
    lt_bf16 *Ks = (lt_bf16 *)smem_raw; // [KT][SS]
    lt_bf16 *Vs = Ks + KT * SS;        // [KT][SS]
    lt_bf16 *Qs = Vs + KT * SS;        // [ATT_WARPS][D]
    lt_bf16 *Gs = Qs + ATT_WARPS * D;  // [ATT_WARPS][D]  dout rows

    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int b = blockIdx.z, h = blockIdx.y, t = blockIdx.x * ATT_WARPS + warp;
    int hk = h / (Hq / Hkv);
    bool active = t < T;
    int ds = active ? doc_start[(size_t)b * T + t] : INT_MAX;
    lt_bf16 *qs = Qs + warp * D, *gs = Gs + warp * D;
    float row_lse = 0.f, row_delta = 0.f;
    if (active) {
        size_t base = (((size_t)b * T + t) * Hq + h) * D;
        for (int d = lane; d < D; d += 32) {
            qs[d] = q[base + d];
            gs[d] = dout[base + d];
        }
        row_lse = lse[((size_t)b * Hq + h) * T + t];
        row_delta = delta[((size_t)b * Hq + h) * T + t];
    }
    if (lane == 0) {
        s_lo[warp] = active ? ds : INT_MAX;
        s_hi[warp] = active ? t : -1;
    }
    __syncthreads();
    int lo = INT_MAX, hi = -1;
    for (int w = 0; w < ATT_WARPS; w++) {
        lo = min(lo, s_lo[w]);
        hi = max(hi, s_hi[w]);
    }
    float acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = 0.f;

    for (int j0 = lo; j0 <= hi; j0 += KT) {
        __syncthreads();
        load_tile(Ks, SS, k, b, T, Hkv, hk, D, j0, hi);
        load_tile(Vs, SS, v, b, T, Hkv, hk, D, j0, hi);
        __syncthreads();
        if (!active || j0 > t || j0 + KT - 1 < ds) continue;
        int j = j0 + lane;
        float dsc = 0.f; // dS_ij = P_ij (dP_ij - Delta_i)
        if (j >= ds && j <= t) {
            float th, p = expf(att_cap_t(scale * dot_bf16(qs, Ks + lane * SS, D), cap, &th) - row_lse);
            float dp = dot_bf16(gs, Vs + lane * SS, D);
            dsc = p * (dp - row_delta) * (1.f - th * th); // th = 0 without a cap
        }
        int jlo = max(ds - j0, 0), jhi = min(t - j0, KT - 1);
        for (int jj = jlo; jj <= jhi; jj++) {
            float dj = __shfl_sync(0xffffffffu, dsc, jj);
            const lt_bf16 *kr = Ks + jj * SS;
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                int d = lane + 32 * i;
                if (d < D) acc[i] = fmaf(dj, __bfloat162float(kr[d]), acc[i]);
            }
        }
    }
    if (!active) return;
    lt_bf16 *r = dq + (((size_t)b * T + t) * Hq + h) * D;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        if (d < D) r[d] = __float2bfloat16_rn(scale * acc[i]); // bf16 rounding
    }
}

template <int DPL>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_dkdv_v1(lt_bf16 *dk, lt_bf16 *dv, const lt_bf16 *dout, const lt_bf16 *q, const lt_bf16 *k,
                 const lt_bf16 *v, const float *lse, const float *delta, const int32_t *doc_start, int T, int Hq,
                 int Hkv, int D, float scale, float cap) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ float s_lse[KT], s_delta[KT];
    __shared__ int s_ds[KT];
    const int SS = D + 2;
    lt_bf16 *Qs = (lt_bf16 *)smem_raw; // [KT][SS] query rows of the tile
    lt_bf16 *Gs = Qs + KT * SS;        // [KT][SS] dout rows of the tile
    lt_bf16 *Kw = Gs + KT * SS;        // [ATT_WARPS][D] this warp's key row
    lt_bf16 *Vw = Kw + ATT_WARPS * D;  // [ATT_WARPS][D] this warp's value row

    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int b = blockIdx.z, hk = blockIdx.y;
    int jlo_blk = blockIdx.x * ATT_WARPS;
    int jhi_blk = min(T - 1, jlo_blk + ATT_WARPS - 1);
    int j = jlo_blk + warp;
    bool active = j < T;
    int G = Hq / Hkv;
    lt_bf16 *kw = Kw + warp * D, *vw = Vw + warp * D;
    if (active) {
        size_t base = (((size_t)b * T + j) * Hkv + hk) * D;
        for (int d = lane; d < D; d += 32) {
            kw[d] = k[base + d];
            vw[d] = v[base + d];
        }
    }
    float dka[DPL], dva[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) dka[i] = dva[i] = 0.f;

    for (int hh = 0; hh < G; hh++) {
        int h = hk * G + hh;
        for (int i0 = jlo_blk; i0 < T; i0 += KT) {
            // documents are contiguous: once the tile's first query starts its
            // document after the block's last key, no later query sees them
            if (doc_start[(size_t)b * T + i0] > jhi_blk) break; // block-uniform
            __syncthreads(); // the previous tile is consumed
            int imax = min(T - 1, i0 + KT - 1);
            load_tile(Qs, SS, q, b, T, Hq, h, D, i0, imax);
            load_tile(Gs, SS, dout, b, T, Hq, h, D, i0, imax);
            if (threadIdx.x < KT) {
                int i = i0 + threadIdx.x;
                if (i < T) {
                    s_lse[threadIdx.x] = lse[((size_t)b * Hq + h) * T + i];
                    s_delta[threadIdx.x] = delta[((size_t)b * Hq + h) * T + i];
                    s_ds[threadIdx.x] = doc_start[(size_t)b * T + i];
                }
            }
            __syncthreads();
            if (!active || i0 + KT - 1 < j) continue; // every query of the tile is before this key
            int i = i0 + lane;
            float p = 0.f, dsc = 0.f;
            if (i <= imax && i >= j && s_ds[lane] <= j) {
                float th;
                p = expf(att_cap_t(scale * dot_bf16(Qs + lane * SS, kw, D), cap, &th) - s_lse[lane]);
                float dp = dot_bf16(Gs + lane * SS, vw, D);
                dsc = p * (dp - s_delta[lane]) * (1.f - th * th); // th = 0 without a cap
            }
            int ilo = max(j - i0, 0), ihi = imax - i0; // loaded rows that can see key j
            for (int ii = ilo; ii <= ihi; ii++) {
                float pi = __shfl_sync(0xffffffffu, p, ii);
                float di = __shfl_sync(0xffffffffu, dsc, ii);
                const lt_bf16 *gr = Gs + ii * SS, *qr = Qs + ii * SS;
#pragma unroll
                for (int x = 0; x < DPL; x++) {
                    int d = lane + 32 * x;
                    if (d < D) {
                        dva[x] = fmaf(pi, __bfloat162float(gr[d]), dva[x]);
                        dka[x] = fmaf(di, __bfloat162float(qr[d]), dka[x]);
                    }
                }
            }
        }
    }
    if (!active) return;
    size_t base = (((size_t)b * T + j) * Hkv + hk) * D;
#pragma unroll
    for (int x = 0; x < DPL; x++) {
        int d = lane + 32 * x;
        if (d < D) {
            dk[base + d] = __float2bfloat16_rn(scale * dka[x]); // bf16 rounding
            dv[base + d] = __float2bfloat16_rn(dva[x]);         // bf16 rounding
        }
    }
}

/* ------------------------------------------------------------------------ */

static int check_shape(lt_backend *be, const char *what, int B, int T, int Hq, int Hkv, int D) {
    if (D <= 0 || D > 256 || D % 2 || Hkv <= 0 || Hq % Hkv) {
        lt_cuda_record(be, LT_ERR_UNSUPPORTED,
                       "cuda: %s: head dim %d, %d query heads, %d kv heads (needs an even head dim <= 256 and "
                       "query heads a multiple of kv heads)",
                       what, D, Hq, Hkv);
        return 0;
    }
    if (B > 65535 || Hq > 65535) {
        lt_cuda_record(be, LT_ERR_UNSUPPORTED, "cuda: %s: batch %d / %d heads exceed the grid", what, B, Hq);
        return 0;
    }
    return 1;
}

/* v2 first (soft-capped or not), v1 where v2 does not apply */
static void cu_attention_cap_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                                 const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale,
                                 float cap) {
    if (B <= 0 || T <= 0 || Hq <= 0) return;
    if (!check_shape(be, "attention_fwd", B, T, Hq, Hkv, D)) return;
    if (lt_cuda_attention_v2_fwd(be, out, lse, q, k, v, doc_start, B, T, Hq, Hkv, D, scale, cap)) return;
    cudaStream_t st = lt_cuda(be)->stream;
    dim3 grid(lt_cdiv(T, ATT_WARPS), Hq, B);
    size_t smem = (size_t)(2 * KT * (D + 2) + ATT_WARPS * D) * sizeof(lt_bf16);
    const lt_bf16 *Q = (const lt_bf16 *)q, *K = (const lt_bf16 *)k, *V = (const lt_bf16 *)v;
    if (D <= 32) attn_fwd_v1<1><<<grid, ATT_THREADS, smem, st>>>((lt_bf16 *)out, lse, Q, K, V, doc_start, T, Hq, Hkv, D, scale, cap);
    else if (D <= 64) attn_fwd_v1<2><<<grid, ATT_THREADS, smem, st>>>((lt_bf16 *)out, lse, Q, K, V, doc_start, T, Hq, Hkv, D, scale, cap);
    else if (D <= 128) attn_fwd_v1<4><<<grid, ATT_THREADS, smem, st>>>((lt_bf16 *)out, lse, Q, K, V, doc_start, T, Hq, Hkv, D, scale, cap);
    else attn_fwd_v1<8><<<grid, ATT_THREADS, smem, st>>>((lt_bf16 *)out, lse, Q, K, V, doc_start, T, Hq, Hkv, D, scale, cap);
    LT_CUDA_LAUNCHED(be, "attention_fwd");
}
static void cu_attention_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                             const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale) {
    cu_attention_cap_fwd(be, out, lse, q, k, v, doc_start, B, T, Hq, Hkv, D, scale, 0.f);
}

/* attention_bwd's contract (core/lt_backend.h): inside a sequence doc_start
 * never decreases. The smallest row n where it does goes to *bad (atomicMin;
 * INT_MAX when none); be->sync reports it (lt_cuda_backend.cu). */
__global__ void doc_order_check(const int32_t *doc_start, int B, int T, int *bad) {
    size_t N = (size_t)B * T;
    for (size_t n = blockIdx.x * (size_t)blockDim.x + threadIdx.x; n < N; n += (size_t)gridDim.x * blockDim.x)
        if (n % T && doc_start[n] < doc_start[n - 1]) atomicMin(bad, (int)n);
}

static void cu_attention_cap_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                 const void *k, const void *v, const void *out, const float *lse,
                                 const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale,
                                 float cap) {
    if (B <= 0 || T <= 0 || Hq <= 0) return;
    if (!check_shape(be, "attention_bwd", B, T, Hq, Hkv, D)) return;
    lt_cuda_ctx *c = lt_cuda(be);
    if ((size_t)B * T > (size_t)INT_MAX) {
        lt_cuda_record(be, LT_ERR_UNSUPPORTED, "cuda: attention_bwd: %d x %d rows exceed the int range", B, T);
        return;
    }
    c->doc_bad_T = T;
    doc_order_check<<<lt_grid_1d((size_t)B * T, 256), 256, 0, c->stream>>>(doc_start, B, T, c->doc_bad);
    if (LT_CUDA_LAUNCHED(be, "attention_bwd: doc_start order check")) return;
    if (lt_cuda_attention_v2_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, doc_start, B, T, Hq, Hkv, D, scale, cap))
        return;
    cudaStream_t st = lt_cuda(be)->stream;
    size_t rows = (size_t)B * T * Hq;
    float *delta = (float *)lt_cuda_scratch(be, rows * sizeof(float));
    if (!delta) return;
    const lt_bf16 *G = (const lt_bf16 *)dout, *Q = (const lt_bf16 *)q, *K = (const lt_bf16 *)k,
                  *V = (const lt_bf16 *)v;
    attn_delta_v1<<<lt_cdiv(rows, ATT_WARPS), ATT_THREADS, 0, st>>>(delta, G, (const lt_bf16 *)out, B, T, Hq, D);
    LT_CUDA_LAUNCHED(be, "attention_bwd delta");

    dim3 gq(lt_cdiv(T, ATT_WARPS), Hq, B);
    size_t smem_q = (size_t)(2 * KT * (D + 2) + 2 * ATT_WARPS * D) * sizeof(lt_bf16);
    lt_bf16 *DQ = (lt_bf16 *)dq;
    if (D <= 32) attn_dq_v1<1><<<gq, ATT_THREADS, smem_q, st>>>(DQ, G, Q, K, V, lse, delta, doc_start, T, Hq, Hkv, D, scale, cap);
    else if (D <= 64) attn_dq_v1<2><<<gq, ATT_THREADS, smem_q, st>>>(DQ, G, Q, K, V, lse, delta, doc_start, T, Hq, Hkv, D, scale, cap);
    else if (D <= 128) attn_dq_v1<4><<<gq, ATT_THREADS, smem_q, st>>>(DQ, G, Q, K, V, lse, delta, doc_start, T, Hq, Hkv, D, scale, cap);
    else attn_dq_v1<8><<<gq, ATT_THREADS, smem_q, st>>>(DQ, G, Q, K, V, lse, delta, doc_start, T, Hq, Hkv, D, scale, cap);
    LT_CUDA_LAUNCHED(be, "attention_bwd dq");

    dim3 gk(lt_cdiv(T, ATT_WARPS), Hkv, B);
    size_t smem_k = (size_t)(2 * KT * (D + 2) + 2 * ATT_WARPS * D) * sizeof(lt_bf16);
    lt_bf16 *DK = (lt_bf16 *)dk, *DV = (lt_bf16 *)dv;
    if (D <= 32) attn_dkdv_v1<1><<<gk, ATT_THREADS, smem_k, st>>>(DK, DV, G, Q, K, V, lse, delta, doc_start, T, Hq, Hkv, D, scale, cap);
    else if (D <= 64) attn_dkdv_v1<2><<<gk, ATT_THREADS, smem_k, st>>>(DK, DV, G, Q, K, V, lse, delta, doc_start, T, Hq, Hkv, D, scale, cap);
    else if (D <= 128) attn_dkdv_v1<4><<<gk, ATT_THREADS, smem_k, st>>>(DK, DV, G, Q, K, V, lse, delta, doc_start, T, Hq, Hkv, D, scale, cap);
    else attn_dkdv_v1<8><<<gk, ATT_THREADS, smem_k, st>>>(DK, DV, G, Q, K, V, lse, delta, doc_start, T, Hq, Hkv, D, scale, cap);
    LT_CUDA_LAUNCHED(be, "attention_bwd dk dv");
}
static void cu_attention_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                             const void *k, const void *v, const void *out, const float *lse,
                             const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale) {
    cu_attention_cap_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, doc_start, B, T, Hq, Hkv, D, scale, 0.f);
}

void lt_cuda_attention_init(lt_backend *be) {
    be->attention_fwd = cu_attention_fwd;
    be->attention_bwd = cu_attention_bwd;
    be->attention_cap_fwd = cu_attention_cap_fwd;
    be->attention_cap_bwd = cu_attention_cap_bwd;
}
