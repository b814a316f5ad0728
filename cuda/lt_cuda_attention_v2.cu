/*
 * lt_cuda_attention_v2.cu -- attention v2: tensor-core flash attention
 * (FlashAttention-2 work partitioning) for head dims 64, 128 and 256 on
 * sm_80+ (Ampere and Hopper, through mma.sync; no wgmma/TMA yet).
 *
 * Same contract as v1 (lt_cuda_attention.cu, core/lt_backend.h): q, out
 * (N, Hq, D), k, v (N, Hkv, D) bf16, N = B*T; lse (B, Hq, T) f32; query (b, t)
 * sees keys j with doc_start[b*T+t] <= j <= t; query head h reads kv head
 * h / (Hq/Hkv) (the K/V rows are read in place, never copied per head).
 * lt_cuda_attention.cu calls lt_cuda_attention_v2_fwd/_bwd first; they return
 * 0 (and v1 runs) for other head dims, when LT_ATTN_VERSION=1, or when the
 * device cannot give a block the shared memory a configuration needs.
 *
 * Building blocks (one warp computes 16 rows of every product):
 *   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 -- bf16 operands,
 *   fp32 accumulators; operands come from shared memory by ldmatrix (x4; the
 *   .trans form for the right operand of P.V-shaped products), or, for the
 *   probabilities / dS, straight from the accumulator registers of the
 *   previous product (the m16n8 accumulator layout of two adjacent n-tiles
 *   is the m16k16 A-operand layout, after bf16 rounding).
 *   Tiles live in shared memory as [rows][D] bf16 with the 16-byte chunk
 *   index XOR-swizzled by (row % 8): the 8 row addresses of one ldmatrix
 *   8x8 matrix then hit 8 different 16-byte bank groups (no conflicts).
 *   Global -> shared copies are cp.async (16 bytes, .cg), double-buffered:
 *   tile i+1 is in flight while tile i is used. Rows past the end are
 *   zero-filled (cp.async src-size 0), so 0 * garbage never makes a NaN.
 *
 * attn_fwd_v2   CTA = (query tile of BM rows, head, batch), BM/16 warps, each
 *               warp owns 16 query rows. Keys from the smallest doc_start of
 *               the tile to its last row, in tiles of BN (only the key tiles
 *               that a row of the CTA can see are loaded; a warp skips the
 *               tiles none of its rows can see). S = Q K^T, mask (document,
 *               causal), online softmax in fp32 (base 2, scale * log2(e)
 *               folded in), O += P V; out = O / l, lse = m + log(l).
 * attn_delta_v2 Delta[(b, h, t)] = dout . out (fp32), one warp per row.
 * attn_dq_v2    CTA = (query tile, head, batch), like the forward: recompute
 *               P = exp(S - lse), dP = dO V^T, dS = P (dP - Delta),
 *               dQ += dS K; dq = scale * dQ. Deterministic (no atomics).
 * attn_dkdv_v2  CTA = (key tile of BN = 16 * warps keys, kv head, batch); the
 *               tile's K and V stay in shared memory; loops over the query
 *               heads of the GQA group and over query tiles of BMQ rows from
 *               the tile's first key until the queries' documents start after
 *               its last key (documents are contiguous, so doc_start is
 *               non-decreasing along t). Per warp (16 keys): S^T = K Q^T,
 *               P^T = exp(S^T - lse), dV += P^T dO, dP^T = V dO^T,
 *               dS^T = P^T (dP^T - Delta), dK += dS^T Q; dk = scale * dK.
 *               For D = 256 dK and dV (128 fp32 registers per thread each)
 *               do not fit together: two launches (MODE 1: dV, MODE 2: dK)
 *               that both recompute S.
 * Configurations (D: forward BMxBN / dq BMxBN / dkdv BNxBMQ, smem bytes):
 *   64:  128x64 (48K) / 128x64 (64K) / 128x64 (64K)
 *   128: 128x64 (96K) / 128x32 (96K) / 128x16 (80K)
 *   256:  64x32 (96K) /  64x16 (96K) /  64x16 (96K)
 * so every configuration fits the 99 KB a block can have on sm_86/sm_89 too.
 * Registers per thread (ptxas, sm_80 / sm_90, no spills, soft-cap code
 * included): fwd 128/127, 192/172, 243/245; dq 174/171, 173/174, 251/253;
 * dkdv 230/225, 224/226, 225/223 (dV) + 244/244 (dK). (dkdv D=128 with
 * BMQ=32 spilled on sm_90.)
 * Soft-capped scores (attention_cap_*, Gemma 2; a runtime parameter, uniform
 * over a launch): every score goes through v2_capped, cap * tanh(scale s / cap)
 * instead of scale s (the tanhf of v1 and the CPU); the backward multiplies
 * dS (dS^T) by 1 - tanh^2 where it forms it from P and dP. dkdv computes
 * dP^T before P^T for that (the same registers live as before). Sliding
 * windows are doc_start lower bounds (core/lt_backend.h): no code of their own.
 * Precision: as v1 plus two bf16 roundings of tensor-core operands: P before
 * P V (fwd; l sums the fp32 p) and dS / P^T before dS K, dS^T Q, P^T dO (bwd).
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lt_cuda.h"
#include "lt_cuda_mma.h"

#define V2_LOG2E 1.4426950408889634f
#define V2_LN2 0.6931471805599453f

/* ------------------------------------------------------------------------ */
/* shared-memory tiles: [rows][D] bf16, 16-byte chunk c of row r stored at  */
/* chunk c ^ (r % 8) (D / 8 is a multiple of 8, so the row is closed)       */

template <int D> static __device__ __forceinline__ int swz(int row, int chunk) {
    return row * D + ((chunk ^ (row & 7)) << 3);
}

/* rows [0, ROWS) of a strided bf16 matrix (row r at g + r * gstride) into the
 * tile s; rows >= nvalid (>= 1) are zero-filled and never read */
template <int ROWS, int D, int NT>
static __device__ __forceinline__ void load_rows(lt_bf16 *s, const lt_bf16 *g, size_t gstride, int nvalid) {
    constexpr int CH = D / 8;
#pragma unroll
    for (int e = threadIdx.x; e < ROWS * CH; e += NT) {
        int r = e / CH, c = e % CH;
        bool ok = r < nvalid;
        const lt_bf16 *src = ok ? g + (size_t)r * gstride + c * 8 : g;
        cp_async16(s + swz<D>(r, c), src, ok);
    }
}

/* acc (16 x N) += A (rows ar0..ar0+15 of tile As) . B^T (rows 0..N-1 of tile
 * Bs), contraction over D. Used for S = Q K^T, dP = dO V^T, S^T = K Q^T,
 * dP^T = V dO^T. */
template <int D, int N>
static __device__ __forceinline__ void mm_abt(float (&acc)[N / 8][4], const lt_bf16 *As, int ar0, const lt_bf16 *Bs) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        unsigned a[4];
        // matrices: (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
        ldsm_x4(a, As + swz<D>(ar0 + (lane & 15), kk * 2 + (lane >> 4)));
#pragma unroll
        for (int nn = 0; nn < N / 16; nn++) {
            unsigned bq[4];
            // matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
            ldsm_x4(bq, Bs + swz<D>(nn * 16 + ((lane >> 4) << 3) + (lane & 7), kk * 2 + ((lane >> 3) & 1)));
            mma16816(acc[2 * nn], a, bq[0], bq[1]);
            mma16816(acc[2 * nn + 1], a, bq[2], bq[3]);
        }
    }
}

/* acc (16 x D) += P (16 x N, as the accumulators of a previous mm_abt) .
 * Bs (rows 0..N-1 of a [N][D] tile). Used for O += P V, dQ += dS K,
 * dV += P^T dO, dK += dS^T Q. */
template <int D, int N>
static __device__ __forceinline__ void mm_pv(float (&acc)[D / 8][4], const float (&p)[N / 8][4], const lt_bf16 *Bs) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int kk = 0; kk < N / 16; kk++) {
        unsigned a[4]; // bf16 rounding of the probabilities / dS (tensor-core operand)
        a[0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]);         // row g,   k 2q..
        a[1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);         // row g+8, k 2q..
        a[2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]); // row g,   k 8+2q..
        a[3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]); // row g+8, k 8+2q..
        const int br = kk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7);
#pragma unroll
        for (int dd = 0; dd < D / 16; dd++) {
            unsigned bq[4];
            // transposed matrices: (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15)
            ldsm_x4_t(bq, Bs + swz<D>(br, dd * 2 + (lane >> 4)));
            mma16816(acc[2 * dd], a, bq[0], bq[1]);
            mma16816(acc[2 * dd + 1], a, bq[2], bq[3]);
        }
    }
}

template <int N> static __device__ __forceinline__ void zero_acc(float (&a)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; i++) a[i][0] = a[i][1] = a[i][2] = a[i][3] = 0.f;
}

static __device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
static __device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
static __device__ __forceinline__ int warp_min_int(int x) {
    for (int o = 16; o > 0; o >>= 1) x = min(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

/* The score in base-2 units from a raw dot product s = q . k: s * scale *
 * log2(e), or with a soft-cap (attention_cap_*, Gemma 2; inv_cap = 1 / cap > 0)
 * cap * tanh(scale s / cap) * log2(e), the fp32 tanhf of v1 and the CPU. *dcap
 * receives d(capped) / d(uncapped) = 1 - tanh^2 (1 without a cap), the factor
 * of dS in the backward. */
struct v2_score {
    float sl2;     /* scale * log2(e) */
    float scale;   /* scale */
    float inv_cap; /* 1 / cap, 0: no cap */
    float cap_l2;  /* cap * log2(e) */
};
static __device__ __forceinline__ float v2_capped(float s, const v2_score &c, float *dcap) {
    if (c.inv_cap > 0.f) { // uniform over the launch
        const float th = tanhf(s * c.scale * c.inv_cap);
        *dcap = 1.f - th * th;
        return c.cap_l2 * th;
    }
    *dcap = 1.f;
    return s * c.sl2;
}

/* write the two rows (g, g+8) of a 16 x D accumulator times a per-row factor */
template <int D>
static __device__ __forceinline__ void store_rows(lt_bf16 *rowA, lt_bf16 *rowB, const float (&acc)[D / 8][4], float fA,
                                                  float fB) {
    const int q2 = (threadIdx.x & 3) * 2;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
        // bf16 rounding of the result
        if (rowA) *(__nv_bfloat162 *)(rowA + dt * 8 + q2) = __floats2bfloat162_rn(acc[dt][0] * fA, acc[dt][1] * fA);
        if (rowB) *(__nv_bfloat162 *)(rowB + dt * 8 + q2) = __floats2bfloat162_rn(acc[dt][2] * fB, acc[dt][3] * fB);
    }
}

/* ------------------------------------------------------------------------ */
/* forward                                                                  */

template <int D, int BM, int BN>
__global__ void __launch_bounds__(BM / 16 * 32)
    attn_fwd_v2(lt_bf16 *out, float *lse, const lt_bf16 *q, const lt_bf16 *k, const lt_bf16 *v,
                const int32_t *doc_start, int T, int Hq, int Hkv, v2_score sc) {
    constexpr int NT = BM / 16 * 32;
    extern __shared__ __align__(128) unsigned char smem_raw[];
    lt_bf16 *Qs = (lt_bf16 *)smem_raw; // [BM][D]
    lt_bf16 *Ks = Qs + BM * D;         // [2][BN][D]
    lt_bf16 *Vs = Ks + 2 * BN * D;     // [2][BN][D]
    __shared__ int s_ds[BM];
    __shared__ int s_lo;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, qd = lane & 3;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * BM, hk = h / (Hq / Hkv);
    const int qn = min(BM, T - q0); // valid query rows of the tile
    const int32_t *dsb = doc_start + (size_t)b * T;
    if (threadIdx.x == 0) s_lo = INT_MAX;
    __syncthreads();
    for (int i = threadIdx.x; i < BM; i += NT) {
        int d = i < qn ? dsb[q0 + i] : INT_MAX;
        s_ds[i] = d;
        if (i < qn) atomicMin(&s_lo, d);
    }
    __syncthreads();
    const int lo = s_lo, hi = q0 + qn - 1; // keys any row of the tile can see
    const int nkt = (hi - lo + BN) / BN;

    const size_t qstride = (size_t)Hq * D, kstride = (size_t)Hkv * D;
    const lt_bf16 *qg = q + ((size_t)b * T + q0) * qstride + (size_t)h * D;
    const lt_bf16 *kg = k + (size_t)b * T * kstride + (size_t)hk * D; // key j at kg + j * kstride
    const lt_bf16 *vg = v + (size_t)b * T * kstride + (size_t)hk * D;

    load_rows<BM, D, NT>(Qs, qg, qstride, qn);
    load_rows<BN, D, NT>(Ks, kg + (size_t)lo * kstride, kstride, min(BN, hi + 1 - lo));
    load_rows<BN, D, NT>(Vs, vg + (size_t)lo * kstride, kstride, min(BN, hi + 1 - lo));
    cp_async_commit();

    // this thread's rows of the warp's 16: A = g, B = g + 8 (masks: rows past T have ds = INT_MAX)
    const int rA = warp * 16 + g, rB = rA + 8;
    const int tA = q0 + rA, tB = q0 + rB;
    const int dsA = s_ds[rA], dsB = s_ds[rB];
    const int wlo = warp_min_int(min(dsA, dsB));    // first key a row of the warp sees (INT_MAX: no rows)
    const int whi = min(q0 + warp * 16 + 15, hi);   // last one

    float o[D / 8][4];
    zero_acc(o);
    float mA = -INFINITY, mB = -INFINITY, lA = 0.f, lB = 0.f; // running max (base-2 units), partial sums

    for (int it = 0; it < nkt; it++) {
        const int st = it & 1;
        if (it + 1 < nkt) { // prefetch the next key tile into the other stage
            const int kb1 = lo + (it + 1) * BN, n1 = min(BN, hi + 1 - kb1);
            load_rows<BN, D, NT>(Ks + (st ^ 1) * BN * D, kg + (size_t)kb1 * kstride, kstride, n1);
            load_rows<BN, D, NT>(Vs + (st ^ 1) * BN * D, vg + (size_t)kb1 * kstride, kstride, n1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const int kb = lo + it * BN;
        if (kb <= whi && kb + BN - 1 >= wlo) { // warp-uniform: some row of the warp sees a key of the tile
            float s[BN / 8][4];
            zero_acc(s);
            mm_abt<D, BN>(s, Qs, warp * 16, Ks + st * BN * D);
            float mxA = -INFINITY, mxB = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int j = kb + nt * 8 + 2 * qd + (e & 1);
                    const bool ok = e < 2 ? (j >= dsA && j <= tA) : (j >= dsB && j <= tB);
                    float dc;
                    const float x = ok ? v2_capped(s[nt][e], sc, &dc) : -INFINITY;
                    s[nt][e] = x;
                    if (e < 2) mxA = fmaxf(mxA, x);
                    else mxB = fmaxf(mxB, x);
                }
            }
            const float mnA = fmaxf(mA, quad_max(mxA)), mnB = fmaxf(mB, quad_max(mxB));
            const float muA = mnA == -INFINITY ? 0.f : mnA, muB = mnB == -INFINITY ? 0.f : mnB;
            const float alA = exp2f(mA - muA), alB = exp2f(mB - muB); // 0 while the row had no key
            mA = mnA, mB = mnB;
            float sumA = 0.f, sumB = 0.f;
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) {
                s[nt][0] = exp2f(s[nt][0] - muA), s[nt][1] = exp2f(s[nt][1] - muA);
                s[nt][2] = exp2f(s[nt][2] - muB), s[nt][3] = exp2f(s[nt][3] - muB);
                sumA += s[nt][0] + s[nt][1];
                sumB += s[nt][2] + s[nt][3];
            }
            lA = lA * alA + sumA, lB = lB * alB + sumB;
#pragma unroll
            for (int dt = 0; dt < D / 8; dt++) o[dt][0] *= alA, o[dt][1] *= alA, o[dt][2] *= alB, o[dt][3] *= alB;
            mm_pv<D, BN>(o, s, Vs + st * BN * D);
        }
        __syncthreads(); // the stage is consumed before the next prefetch overwrites it
    }

    lA = quad_sum(lA), lB = quad_sum(lB);
    const bool vA = rA < qn, vB = rB < qn; // every valid row saw at least its own key: l > 0
    lt_bf16 *oA = vA ? out + (((size_t)b * T + tA) * Hq + h) * D : NULL;
    lt_bf16 *oB = vB ? out + (((size_t)b * T + tB) * Hq + h) * D : NULL;
    store_rows<D>(oA, oB, o, vA ? 1.f / lA : 0.f, vB ? 1.f / lB : 0.f);
    if (qd == 0) {
        float *lrow = lse + ((size_t)b * Hq + h) * T;
        if (vA) lrow[tA] = (mA + log2f(lA)) * V2_LN2; // f32
        if (vB) lrow[tB] = (mB + log2f(lB)) * V2_LN2;
    }
}

/* ------------------------------------------------------------------------ */
/* backward                                                                 */

/* Delta[(b, h, t)] = sum_d dout * out (fp32), one warp per (b, t, h) row */
__global__ void attn_delta_v2(float *delta, const lt_bf16 *dout, const lt_bf16 *out, size_t rows, int T, int Hq,
                              int D) {
    size_t row = (size_t)blockIdx.x * 8 + threadIdx.x / 32; // row = (b*T + t)*Hq + h
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const __nv_bfloat162 *g2 = (const __nv_bfloat162 *)(dout + row * D), *o2 = (const __nv_bfloat162 *)(out + row * D);
    float s = 0.f;
    for (int d2 = lane; d2 < D / 2; d2 += 32) {
        float2 a = __bfloat1622float2(g2[d2]), c = __bfloat1622float2(o2[d2]);
        s = fmaf(a.x, c.x, s);
        s = fmaf(a.y, c.y, s);
    }
    s = lt_warp_sum(s);
    int h = (int)(row % Hq);
    size_t bt = row / Hq;
    int t = (int)(bt % T), b = (int)(bt / T);
    if (lane == 0) delta[((size_t)b * Hq + h) * T + t] = s;
}

template <int D, int BM, int BN>
__global__ void __launch_bounds__(BM / 16 * 32)
    attn_dq_v2(lt_bf16 *dq, const lt_bf16 *dout, const lt_bf16 *q, const lt_bf16 *k, const lt_bf16 *v,
               const float *lse, const float *delta, const int32_t *doc_start, int T, int Hq, int Hkv, float scale,
               v2_score sc) {
    constexpr int NT = BM / 16 * 32;
    extern __shared__ __align__(128) unsigned char smem_raw[];
    lt_bf16 *Qs = (lt_bf16 *)smem_raw; // [BM][D]
    lt_bf16 *Gs = Qs + BM * D;         // [BM][D] dout
    lt_bf16 *Ks = Gs + BM * D;         // [2][BN][D]
    lt_bf16 *Vs = Ks + 2 * BN * D;     // [2][BN][D]
    __shared__ int s_ds[BM];
    __shared__ int s_lo;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, qd = lane & 3;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * BM, hk = h / (Hq / Hkv);
    const int qn = min(BM, T - q0);
    const int32_t *dsb = doc_start + (size_t)b * T;
    if (threadIdx.x == 0) s_lo = INT_MAX;
    __syncthreads();
    for (int i = threadIdx.x; i < BM; i += NT) {
        int d = i < qn ? dsb[q0 + i] : INT_MAX;
        s_ds[i] = d;
        if (i < qn) atomicMin(&s_lo, d);
    }
    __syncthreads();
    const int lo = s_lo, hi = q0 + qn - 1;
    const int nkt = (hi - lo + BN) / BN;

    const size_t qstride = (size_t)Hq * D, kstride = (size_t)Hkv * D;
    const size_t qoff = ((size_t)b * T + q0) * qstride + (size_t)h * D;
    const lt_bf16 *kg = k + (size_t)b * T * kstride + (size_t)hk * D;
    const lt_bf16 *vg = v + (size_t)b * T * kstride + (size_t)hk * D;

    load_rows<BM, D, NT>(Qs, q + qoff, qstride, qn);
    load_rows<BM, D, NT>(Gs, dout + qoff, qstride, qn);
    load_rows<BN, D, NT>(Ks, kg + (size_t)lo * kstride, kstride, min(BN, hi + 1 - lo));
    load_rows<BN, D, NT>(Vs, vg + (size_t)lo * kstride, kstride, min(BN, hi + 1 - lo));
    cp_async_commit();

    const int rA = warp * 16 + g, rB = rA + 8;
    const int tA = q0 + rA, tB = q0 + rB;
    const int dsA = s_ds[rA], dsB = s_ds[rB];
    const bool vA = rA < qn, vB = rB < qn;
    const float *lrow = lse + ((size_t)b * Hq + h) * T, *drow = delta + ((size_t)b * Hq + h) * T;
    const float lseA = vA ? lrow[tA] * V2_LOG2E : 0.f, lseB = vB ? lrow[tB] * V2_LOG2E : 0.f;
    const float dlA = vA ? drow[tA] : 0.f, dlB = vB ? drow[tB] : 0.f;
    const int wlo = warp_min_int(min(dsA, dsB));
    const int whi = min(q0 + warp * 16 + 15, hi);

    float acc[D / 8][4];
    zero_acc(acc);
    for (int it = 0; it < nkt; it++) {
        const int st = it & 1;
        if (it + 1 < nkt) {
            const int kb1 = lo + (it + 1) * BN, n1 = min(BN, hi + 1 - kb1);
            load_rows<BN, D, NT>(Ks + (st ^ 1) * BN * D, kg + (size_t)kb1 * kstride, kstride, n1);
            load_rows<BN, D, NT>(Vs + (st ^ 1) * BN * D, vg + (size_t)kb1 * kstride, kstride, n1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const int kb = lo + it * BN;
        if (kb <= whi && kb + BN - 1 >= wlo) {
            float s[BN / 8][4], dp[BN / 8][4];
            zero_acc(s);
            zero_acc(dp);
            mm_abt<D, BN>(s, Qs, warp * 16, Ks + st * BN * D);  // S = Q K^T
            mm_abt<D, BN>(dp, Gs, warp * 16, Vs + st * BN * D); // dP = dO V^T
#pragma unroll
            for (int nt = 0; nt < BN / 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int j = kb + nt * 8 + 2 * qd + (e & 1);
                    const bool ok = e < 2 ? (j >= dsA && j <= tA) : (j >= dsB && j <= tB);
                    float dc = 1.f; // 1 - tanh^2 with a cap
                    const float p = ok ? exp2f(v2_capped(s[nt][e], sc, &dc) - (e < 2 ? lseA : lseB)) : 0.f;
                    s[nt][e] = p * (dp[nt][e] - (e < 2 ? dlA : dlB)) * dc; // dS
                }
            }
            mm_pv<D, BN>(acc, s, Ks + st * BN * D); // dQ += dS K
        }
        __syncthreads();
    }
    lt_bf16 *rowA = vA ? dq + (((size_t)b * T + tA) * Hq + h) * D : NULL;
    lt_bf16 *rowB = vB ? dq + (((size_t)b * T + tB) * Hq + h) * D : NULL;
    store_rows<D>(rowA, rowB, acc, scale, scale);
}

/* MODE: 1 = dV only, 2 = dK only, 3 = both */
template <int D, int BN, int BMQ, int MODE>
__global__ void __launch_bounds__(BN / 16 * 32)
    attn_dkdv_v2(lt_bf16 *dk, lt_bf16 *dv, const lt_bf16 *dout, const lt_bf16 *q, const lt_bf16 *k,
                 const lt_bf16 *v, const float *lse, const float *delta, const int32_t *doc_start, int T, int Hq,
                 int Hkv, float scale, v2_score sc) {
    constexpr int NT = BN / 16 * 32;
    extern __shared__ __align__(128) unsigned char smem_raw[];
    lt_bf16 *Ks = (lt_bf16 *)smem_raw; // [BN][D]
    lt_bf16 *Vs = Ks + BN * D;         // [BN][D]
    lt_bf16 *Qs = Vs + BN * D;         // [2][BMQ][D]
    lt_bf16 *Gs = Qs + 2 * BMQ * D;    // [2][BMQ][D] dout
    __shared__ float s_lse[2][BMQ], s_dl[2][BMQ]; // lse (base-2 units), Delta of the query rows
    __shared__ int s_dsq[2][BMQ];                  // their doc starts (INT_MAX past T)

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, qd = lane & 3;
    const int b = blockIdx.z, hk = blockIdx.y, k0 = blockIdx.x * BN;
    const int kn = min(BN, T - k0), kmax = k0 + kn - 1;
    const int G = Hq / Hkv;
    const int32_t *dsb = doc_start + (size_t)b * T;

    // number of query tiles (from k0, step BMQ) whose first row's document
    // starts at or before kmax: a prefix, as doc_start is non-decreasing
    int nq = 0;
    for (int base = 0;; base += NT) {
        const long long i0 = (long long)k0 + (long long)(base + threadIdx.x) * BMQ;
        const int need = i0 < T && dsb[i0] <= kmax;
        const int cnt = __syncthreads_count(need);
        nq += cnt;
        if (cnt < NT) break;
    }
    const int total = G * nq;

    const size_t qstride = (size_t)Hq * D, kstride = (size_t)Hkv * D;
    const size_t koff = ((size_t)b * T + k0) * kstride + (size_t)hk * D;
    load_rows<BN, D, NT>(Ks, k + koff, kstride, kn);
    if (MODE & 2) load_rows<BN, D, NT>(Vs, v + koff, kstride, kn);

    // query tile `it` (head hk*G + it/nq, rows from k0 + (it%nq)*BMQ) into stage st
    auto issue = [&](int it, int st) {
        const int h = hk * G + it / nq, i0 = k0 + (it % nq) * BMQ, qn = min(BMQ, T - i0);
        const size_t qoff = ((size_t)b * T + i0) * qstride + (size_t)h * D;
        load_rows<BMQ, D, NT>(Qs + st * BMQ * D, q + qoff, qstride, qn);
        load_rows<BMQ, D, NT>(Gs + st * BMQ * D, dout + qoff, qstride, qn);
        const float *lrow = lse + ((size_t)b * Hq + h) * T, *drow = delta + ((size_t)b * Hq + h) * T;
        for (int i = threadIdx.x; i < BMQ; i += NT) {
            const bool ok = i < qn;
            s_lse[st][i] = ok ? lrow[i0 + i] * V2_LOG2E : 0.f;
            s_dl[st][i] = ok ? drow[i0 + i] : 0.f;
            s_dsq[st][i] = ok ? dsb[i0 + i] : INT_MAX;
        }
    };
    issue(0, 0);
    cp_async_commit();

    const int kr0 = warp * 16;                    // the warp's 16 keys within the tile
    const int jA = k0 + kr0 + g, jB = jA + 8;     // this thread's two keys (rows of S^T)
    const int wk_lo = k0 + kr0, wk_hi = wk_lo + 15;
    float dka[D / 8][4], dva[D / 8][4];
    zero_acc(dka);
    zero_acc(dva);

    for (int it = 0; it < total; it++) {
        const int st = it & 1;
        if (it + 1 < total) {
            issue(it + 1, st ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const int i0 = k0 + (it % nq) * BMQ, qn = min(BMQ, T - i0);
        // warp-uniform: a query of the tile is at or after the warp's first key,
        // and the first query's document starts at or before its last key
        if (i0 + qn - 1 >= wk_lo && s_dsq[st][0] <= wk_hi && wk_lo <= kmax) {
            const lt_bf16 *Qt = Qs + st * BMQ * D, *Gt = Gs + st * BMQ * D;
            float s[BMQ / 8][4], dp[BMQ / 8][4];
            zero_acc(s);
            mm_abt<D, BMQ>(s, Ks, kr0, Qt); // S^T = K Q^T (16 keys x BMQ queries)
            if (MODE & 2) {
                zero_acc(dp);
                mm_abt<D, BMQ>(dp, Vs, kr0, Gt); // dP^T = V dO^T
            }
#pragma unroll
            for (int nt = 0; nt < BMQ / 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int ii = nt * 8 + 2 * qd + (e & 1), i = i0 + ii;
                    const int j = e < 2 ? jA : jB;
                    const bool ok = ii < qn && i >= j && s_dsq[st][ii] <= j;
                    float dc = 1.f; // 1 - tanh^2 with a cap
                    const float p = ok ? exp2f(v2_capped(s[nt][e], sc, &dc) - s_lse[st][ii]) : 0.f;
                    s[nt][e] = p; // P^T
                    if (MODE & 2) dp[nt][e] = p * (dp[nt][e] - s_dl[st][ii]) * dc; // dS^T (0 where masked)
                }
            }
            if (MODE & 1) mm_pv<D, BMQ>(dva, s, Gt);  // dV += P^T dO
            if (MODE & 2) mm_pv<D, BMQ>(dka, dp, Qt); // dK += dS^T Q
        }
        __syncthreads();
    }
    const bool vA = kr0 + g < kn, vB = kr0 + g + 8 < kn;
    const size_t rowA = (((size_t)b * T + jA) * Hkv + hk) * D, rowB = (((size_t)b * T + jB) * Hkv + hk) * D;
    if (MODE & 1) store_rows<D>(vA ? dv + rowA : NULL, vB ? dv + rowB : NULL, dva, 1.f, 1.f);
    if (MODE & 2) store_rows<D>(vA ? dk + rowA : NULL, vB ? dk + rowB : NULL, dka, scale, scale);
}

/* ------------------------------------------------------------------------ */
/* host side                                                                */

/* attn_version 1 (option, or LT_ATTN_VERSION at creation) forces v1; 2: v2
 * where it applies */
static int v2_enabled(lt_backend *be) { return lt_cuda(be)->attn_version != 1; }

/* the largest dynamic shared memory a block may have on the current device
 * (minus a margin for the kernels' static shared memory) */
static size_t smem_limit(void) {
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                                                     dev) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return optin > 2048 ? (size_t)optin - 2048 : 0;
}

template <typename K> static int allow_smem(lt_backend *be, K kern, size_t smem) {
    return !LT_CUDA_CHECK(be, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                          "attention v2: shared memory attribute");
}

template <int D, int BM, int BN> static size_t fwd_smem() { return (size_t)(BM + 4 * BN) * D * sizeof(lt_bf16); }
template <int D, int BM, int BN> static size_t dq_smem() { return (size_t)(2 * BM + 4 * BN) * D * sizeof(lt_bf16); }
template <int D, int BN, int BMQ> static size_t dkdv_smem() {
    return (size_t)(2 * BN + 4 * BMQ) * D * sizeof(lt_bf16);
}

/* the kernels' score parameters for scale and soft-cap (0: none) */
static v2_score make_score(float scale, float cap) {
    v2_score c;
    c.sl2 = scale * V2_LOG2E;
    c.scale = scale;
    c.inv_cap = cap > 0.f ? 1.f / cap : 0.f;
    c.cap_l2 = cap > 0.f ? cap * V2_LOG2E : 0.f;
    return c;
}

template <int D, int BM, int BN>
static int fwd_launch(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                      const int32_t *doc_start, int B, int T, int Hq, int Hkv, float scale, float cap) {
    const size_t smem = fwd_smem<D, BM, BN>();
    if (smem > smem_limit()) return 0;
    auto kern = attn_fwd_v2<D, BM, BN>;
    if (!allow_smem(be, kern, smem)) return 1;
    dim3 grid(lt_cdiv(T, BM), Hq, B);
    kern<<<grid, BM / 16 * 32, smem, lt_cuda(be)->stream>>>((lt_bf16 *)out, lse, (const lt_bf16 *)q,
                                                          (const lt_bf16 *)k, (const lt_bf16 *)v, doc_start, T, Hq,
                                                          Hkv, make_score(scale, cap));
    LT_CUDA_LAUNCHED(be, "attention_fwd v2");
    return 1;
}

int lt_cuda_attention_v2_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                             const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale,
                             float cap) {
    if (!v2_enabled(be)) return 0;
    switch (D) {
    case 64: return fwd_launch<64, 128, 64>(be, out, lse, q, k, v, doc_start, B, T, Hq, Hkv, scale, cap);
    case 128: return fwd_launch<128, 128, 64>(be, out, lse, q, k, v, doc_start, B, T, Hq, Hkv, scale, cap);
    case 256: return fwd_launch<256, 64, 32>(be, out, lse, q, k, v, doc_start, B, T, Hq, Hkv, scale, cap);
    default: return 0;
    }
}

template <int D, int QBM, int QBN, int KBN, int KBMQ>
static int bwd_launch(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q, const void *k,
                      const void *v, const void *out, const float *lse, const int32_t *doc_start, int B, int T,
                      int Hq, int Hkv, float scale, float cap) {
    const size_t smem_q = dq_smem<D, QBM, QBN>(), smem_k = dkdv_smem<D, KBN, KBMQ>();
    const size_t lim = smem_limit();
    if (smem_q > lim || smem_k > lim) return 0;
    cudaStream_t st = lt_cuda(be)->stream;
    const size_t rows = (size_t)B * T * Hq;
    float *delta = (float *)lt_cuda_scratch(be, rows * sizeof(float));
    if (!delta) return 1;
    const lt_bf16 *G = (const lt_bf16 *)dout, *Q = (const lt_bf16 *)q, *K = (const lt_bf16 *)k,
                  *V = (const lt_bf16 *)v;
    attn_delta_v2<<<lt_cdiv(rows, 8), 256, 0, st>>>(delta, G, (const lt_bf16 *)out, rows, T, Hq, D);
    LT_CUDA_LAUNCHED(be, "attention_bwd v2 delta");

    const v2_score sl2 = make_score(scale, cap);
    auto kq = attn_dq_v2<D, QBM, QBN>;
    if (!allow_smem(be, kq, smem_q)) return 1;
    kq<<<dim3(lt_cdiv(T, QBM), Hq, B), QBM / 16 * 32, smem_q, st>>>((lt_bf16 *)dq, G, Q, K, V, lse, delta,
                                                                     doc_start, T, Hq, Hkv, scale, sl2);
    LT_CUDA_LAUNCHED(be, "attention_bwd v2 dq");

    dim3 gk(lt_cdiv(T, KBN), Hkv, B);
    lt_bf16 *DK = (lt_bf16 *)dk, *DV = (lt_bf16 *)dv;
    if constexpr (D <= 128) {
        auto kk = attn_dkdv_v2<D, KBN, KBMQ, 3>;
        if (!allow_smem(be, kk, smem_k)) return 1;
        kk<<<gk, KBN / 16 * 32, smem_k, st>>>(DK, DV, G, Q, K, V, lse, delta, doc_start, T, Hq, Hkv, scale, sl2);
        LT_CUDA_LAUNCHED(be, "attention_bwd v2 dk dv");
    } else { // dV and dK accumulators do not fit in registers together: two passes
        auto k1 = attn_dkdv_v2<D, KBN, KBMQ, 1>;
        auto k2 = attn_dkdv_v2<D, KBN, KBMQ, 2>;
        if (!allow_smem(be, k1, smem_k) || !allow_smem(be, k2, smem_k)) return 1;
        k1<<<gk, KBN / 16 * 32, smem_k, st>>>(DK, DV, G, Q, K, V, lse, delta, doc_start, T, Hq, Hkv, scale, sl2);
        LT_CUDA_LAUNCHED(be, "attention_bwd v2 dv");
        k2<<<gk, KBN / 16 * 32, smem_k, st>>>(DK, DV, G, Q, K, V, lse, delta, doc_start, T, Hq, Hkv, scale, sl2);
        LT_CUDA_LAUNCHED(be, "attention_bwd v2 dk");
    }
    return 1;
}

int lt_cuda_attention_v2_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                             const void *k, const void *v, const void *out, const float *lse,
                             const int32_t *doc_start, int B, int T, int Hq, int Hkv, int D, float scale,
                             float cap) {
    if (!v2_enabled(be)) return 0;
    switch (D) {
    case 64:
        return bwd_launch<64, 128, 64, 128, 64>(be, dq, dk, dv, dout, q, k, v, out, lse, doc_start, B, T, Hq, Hkv,
                                                scale, cap);
    case 128:
        return bwd_launch<128, 128, 32, 128, 16>(be, dq, dk, dv, dout, q, k, v, out, lse, doc_start, B, T, Hq, Hkv,
                                                 scale, cap);
    case 256:
        return bwd_launch<256, 64, 16, 64, 16>(be, dq, dk, dv, dout, q, k, v, out, lse, doc_start, B, T, Hq, Hkv,
                                               scale, cap);
    default: return 0;
    }
}
