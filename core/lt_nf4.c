/*
 * lt_nf4.c -- NF4 quantization with double quantization (bitsandbytes'
 * format and math; see lt_nf4.h for the formulas).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lt_nf4.h"

/* QLoRA's NF4 values (quantiles of N(0, 1) scaled to [-1, 1], with an exact 0),
 * the fp32 values bitsandbytes uses. */
const float lt_nf4_code[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

lt_nf4_layout lt_nf4_layout_of(size_t n) {
    lt_nf4_layout L;
    L.n = n;
    L.nblocks = (n + LT_NF4_BLOCK - 1) / LT_NF4_BLOCK;
    L.nblocks2 = (L.nblocks + LT_NF4_BLOCK2 - 1) / LT_NF4_BLOCK2;
    L.off_absq = (n + 1) / 2;
    L.off_absmax2 = (L.off_absq + L.nblocks + 3) / 4 * 4;
    L.off_offset = L.off_absmax2 + L.nblocks2 * sizeof(float);
    L.bytes = L.off_offset + sizeof(float);
    return L;
}

/* torch.linspace(start, end, steps) in fp32 as torch computes it on the CPU:
 * step = (end - start) / (steps - 1) in fp32; the first half from start, the
 * second half back from end, each product and sum rounded once (torch's
 * vectorized kernel fuses them). */
static float linspace_at(float start, float end, int steps, int i) {
    float step = (end - start) / (float)(steps - 1);
    return i < steps / 2 ? (float)((double)start + (double)step * i)
                         : (float)((double)end - (double)step * (steps - i - 1));
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for
 * exponent e = 0..6, 2^e + 1 points of linspace(0.1, 1) give 2^e midpoints,
 * scaled by 10^(e-6), with both signs; then 0 and 1; sorted. */
void lt_nf4_dynamic_map(float map[256]) {
    int k = 0;
    for (int e = 0; e < 7; e++) {
        int items = (1 << e) + 1;
        float scale = (float)pow(10.0, (double)(e - 6));
        for (int i = 0; i + 1 < items; i++) {
            float mid = (linspace_at(0.1f, 1.0f, items, i) + linspace_at(0.1f, 1.0f, items, i + 1)) / 2.0f;
            map[k++] = scale * mid;
            map[k++] = -scale * mid;
        }
    }
    map[k++] = 0.0f;
    map[k++] = 1.0f;
    qsort(map, 256, sizeof(float), cmp_float);
}

/* index of the NF4 value for a scaled s: count of midpoints below s */
static uint8_t nf4_index(float s, const float mid[15]) {
    uint8_t q = 0;
    for (int i = 0; i < 15; i++) q += mid[i] < s;
    return q;
}

/* the nearest map entry, ties to the lower one (bitsandbytes' CPU search:
 * the entry at or below x, then the next one if strictly closer) */
static uint8_t dyn_index(float x, const float map[256]) {
    int lo = 0, hi = 255; /* largest i with map[i] <= x, or 0 below map[0] */
    while (lo < hi) {
        int m = (lo + hi + 1) / 2;
        if (map[m] <= x) lo = m;
        else hi = m - 1;
    }
    if (lo < 255 && fabsf(x - map[lo + 1]) < fabsf(x - map[lo])) lo++;
    return (uint8_t)lo;
}

/* torch's float32 sum of a contiguous tensor on the CPU, single-threaded
 * (at::native's cascade_sum; bitsandbytes' offset is absmax.mean(), i.e.
 * this sum / n): elements of L lanes (8 floats: one 256-bit vector, or 1 for
 * fewer than 8 values) summed by 4 interleaved accumulators, each a cascade
 * of 4 levels that carry up every 2^p elements (p = max(4, ceil(log2(n / 4))
 * / 4)); the leftover elements go to accumulator 0, then accumulators 1..3
 * are added to it. For L = 8 the < 8 trailing values are summed first, then
 * the 8 lanes in order. Checked against torch through the offsets of the
 * fixture (tests/test_nf4.c). Above 32768 values torch splits the sum over
 * its threads, so bitsandbytes' own offset then depends on torch's thread
 * count; this is its one-thread value. */
enum { SUM_LANES = 8, SUM_ILP = 4, SUM_LEVELS = 4 };

static void cascade_sum(const float *x, size_t nel, int L, float out[SUM_LANES]) {
    float acc[SUM_LEVELS][SUM_ILP][SUM_LANES];
    memset(acc, 0, sizeof acc);
    size_t size = nel / SUM_ILP; /* rows of SUM_ILP elements */
    int clog = 0;
    while (((size_t)1 << clog) < size) clog++;
    int lp = clog / SUM_LEVELS > 4 ? clog / SUM_LEVELS : 4;
    size_t step = (size_t)1 << lp, mask = step - 1, i = 0;
#define ADD_ROW(i_)                                                                                                   \
    for (int k = 0; k < SUM_ILP; k++)                                                                                 \
        for (int l = 0; l < L; l++) acc[0][k][l] += x[((i_) * SUM_ILP + k) * L + l];
    while (i + step <= size) {
        for (size_t j = 0; j < step; j++, i++) ADD_ROW(i)
        for (int j = 1; j < SUM_LEVELS; j++) {
            for (int k = 0; k < SUM_ILP; k++)
                for (int l = 0; l < L; l++) {
                    acc[j][k][l] += acc[j - 1][k][l];
                    acc[j - 1][k][l] = 0.0f;
                }
            if (i & (mask << (j * lp))) break;
        }
    }
    for (; i < size; i++) ADD_ROW(i)
#undef ADD_ROW
    for (int j = 1; j < SUM_LEVELS; j++)
        for (int k = 0; k < SUM_ILP; k++)
            for (int l = 0; l < L; l++) acc[0][k][l] += acc[j][k][l];
    for (size_t e = size * SUM_ILP; e < nel; e++)
        for (int l = 0; l < L; l++) acc[0][0][l] += x[e * L + l];
    for (int k = 1; k < SUM_ILP; k++)
        for (int l = 0; l < L; l++) acc[0][0][l] += acc[0][k][l];
    memcpy(out, acc[0][0], sizeof acc[0][0]);
}

static float torch_sum_f32(const float *x, size_t n) {
    float v[SUM_LANES];
    if (n < SUM_LANES) {
        cascade_sum(x, n, 1, v);
        return v[0];
    }
    size_t nv = n / SUM_LANES;
    cascade_sum(x, nv, SUM_LANES, v);
    float s = 0.0f;
    for (size_t k = nv * SUM_LANES; k < n; k++) s += x[k];
    for (int l = 0; l < SUM_LANES; l++) s += v[l];
    return s;
}

float lt_nf4_mean(const float *x, size_t n) { return torch_sum_f32(x, n) / (float)n; }

lt_nf4_part lt_nf4_part_of(size_t n, size_t blk0, size_t blk1, int last) {
    lt_nf4_layout L = lt_nf4_layout_of(n);
    lt_nf4_part P;
    size_t g0 = (blk0 + LT_NF4_BLOCK2 - 1) / LT_NF4_BLOCK2, g1 = (blk1 + LT_NF4_BLOCK2 - 1) / LT_NF4_BLOCK2;
    size_t half = LT_NF4_BLOCK / 2;
    P.off[0] = blk0 * half < L.off_absq ? blk0 * half : L.off_absq;
    P.len[0] = (last ? L.off_absq : blk1 * half < L.off_absq ? blk1 * half : L.off_absq) - P.off[0];
    P.off[1] = L.off_absq + blk0;
    P.len[1] = (last ? L.off_absmax2 : L.off_absq + blk1) - P.off[1];
    P.off[2] = L.off_absmax2 + g0 * sizeof(float);
    P.len[2] = (last ? L.bytes : L.off_absmax2 + g1 * sizeof(float)) - P.off[2];
    P.bytes = P.len[0] + P.len[1] + P.len[2];
    return P;
}

void lt_nf4_block_absmax(const float *w, size_t n, size_t blk0, size_t blk1, float *absmax) {
    for (size_t blk = blk0; blk < blk1; blk++) {
        size_t i0 = blk * LT_NF4_BLOCK, i1 = i0 + LT_NF4_BLOCK < n ? i0 + LT_NF4_BLOCK : n;
        float am = 0.0f;
        int finite = 1;
        for (size_t i = i0; i < i1; i++) {
            float a = fabsf(w[i - blk0 * LT_NF4_BLOCK]);
            finite &= isfinite(a) != 0;
            am = a > am ? a : am;
        }
        absmax[blk - blk0] = finite ? am : NAN;
    }
}

/* absmax2 of nested block j: max |absmax - offset| over its blocks */
static float nested_absmax(const float *absmax, size_t nblocks, size_t j, float off) {
    size_t b0 = j * LT_NF4_BLOCK2, b1 = b0 + LT_NF4_BLOCK2 < nblocks ? b0 + LT_NF4_BLOCK2 : nblocks;
    float am = 0.0f;
    for (size_t k = b0; k < b1; k++) {
        float a = fabsf(absmax[k] - off);
        if (a > am) am = a;
    }
    return am;
}

lt_status lt_nf4_quantize_part(const float *w, size_t n, size_t blk0, size_t blk1, int last, const float *absmax,
                               void *part, lt_err *err) {
    if (n == 0) return lt_fail(err, LT_ERR_INVALID, "nf4: cannot quantize an empty tensor");
    lt_nf4_layout L = lt_nf4_layout_of(n);
    if (blk0 > blk1 || blk1 > L.nblocks || (last && blk1 != L.nblocks))
        return lt_fail(err, LT_ERR_RANGE, "nf4: part of blocks [%zu, %zu)%s of a tensor of %zu blocks", blk0, blk1,
                       last ? " (the last part)" : "", L.nblocks);
    for (size_t blk = 0; blk < L.nblocks; blk++) /* every part sees every block's absmax: all fail alike */
        if (!isfinite(absmax[blk])) {
            size_t i1 = (blk + 1) * LT_NF4_BLOCK < n ? (blk + 1) * LT_NF4_BLOCK : n;
            return lt_fail(err, LT_ERR_NONFINITE, "nf4: block %zu (elements %zu..%zu) holds a NaN or Inf", blk,
                           blk * LT_NF4_BLOCK, i1 - 1);
        }
    lt_nf4_part P = lt_nf4_part_of(n, blk0, blk1, last);
    uint8_t *packed = (uint8_t *)part, *absq = packed + P.len[0], *nest = absq + P.len[1];
    memset(part, 0, P.bytes);
    float mid[15];
    for (int i = 0; i < 15; i++) mid[i] = (lt_nf4_code[i] + lt_nf4_code[i + 1]) / 2.0f;
    size_t full = n / LT_NF4_BLOCK, e0 = blk0 * LT_NF4_BLOCK; /* w[0] is element e0; packed[0] its byte */
    for (size_t blk = blk0; blk < blk1; blk++) {
        size_t i0 = blk * LT_NF4_BLOCK, i1 = i0 + LT_NF4_BLOCK < n ? i0 + LT_NF4_BLOCK : n;
        float am = absmax[blk], den = am < 1e-38f ? 1e-38f : am, inv = 1.0f / den;
        for (size_t i = i0; i < i1; i++) {
            float s = blk < full ? w[i - e0] * inv : w[i - e0] / den;
            s = s < -1.0f ? -1.0f : s > 1.0f ? 1.0f : s;
            uint8_t q = nf4_index(s, mid);
            packed[(i - e0) / 2] |= (uint8_t)(i % 2 ? q : q << 4);
        }
    }
    if (n % 2 && blk1 == L.nblocks && blk0 < blk1) packed[(n - e0) / 2] |= nf4_index(0.0f, mid); /* the pad element */

    /* nested: the mean as torch computes it (its float32 sum, then / n) */
    float off = lt_nf4_mean(absmax, L.nblocks);
    float map[256];
    lt_nf4_dynamic_map(map);
    size_t jc = SIZE_MAX;
    float a2 = 0.0f;
    for (size_t blk = blk0; blk < blk1; blk++) {
        if (blk / LT_NF4_BLOCK2 != jc) a2 = nested_absmax(absmax, L.nblocks, jc = blk / LT_NF4_BLOCK2, off);
        absq[blk - blk0] = dyn_index((absmax[blk] - off) / a2, map);
    }
    size_t g0 = (P.off[2] - L.off_absmax2) / sizeof(float), g1 = g0 + P.len[2] / sizeof(float);
    if (last) g1--; /* the offset */
    for (size_t j = g0; j < g1; j++) {
        float v = nested_absmax(absmax, L.nblocks, j, off);
        memcpy(nest + (j - g0) * sizeof(float), &v, sizeof v);
    }
    if (last) memcpy(nest + P.len[2] - sizeof(float), &off, sizeof off);
    return LT_OK;
}

lt_status lt_nf4_quantize(const float *w, size_t n, void *buf, lt_err *err) {
    if (n == 0) return lt_fail(err, LT_ERR_INVALID, "nf4: cannot quantize an empty tensor");
    lt_nf4_layout L = lt_nf4_layout_of(n);
    float *absmax = (float *)malloc(L.nblocks * sizeof(float));
    if (!absmax) return lt_fail(err, LT_ERR_NOMEM, "nf4: out of memory for %zu block scales", L.nblocks);
    lt_nf4_block_absmax(w, n, 0, L.nblocks, absmax);
    /* the whole tensor as one part: its three ranges are the layout, in order */
    lt_status st = lt_nf4_quantize_part(w, n, 0, L.nblocks, 1, absmax, buf, err);
    free(absmax);
    return st;
}

/* the fp32 absmax of block k: dyn[code] * absmax2 + offset (two roundings) */
static float block_absmax(const uint8_t *b, const lt_nf4_layout *L, size_t k, const float map[256]) {
    float a2, off;
    memcpy(&a2, b + L->off_absmax2 + (k / LT_NF4_BLOCK2) * sizeof(float), sizeof a2);
    memcpy(&off, b + L->off_offset, sizeof off);
    float v = map[b[L->off_absq + k]] * a2;
    return v + off;
}

void lt_nf4_absmax(const void *buf, size_t n, float *absmax) {
    lt_nf4_layout L = lt_nf4_layout_of(n);
    float map[256];
    lt_nf4_dynamic_map(map);
    for (size_t k = 0; k < L.nblocks; k++) absmax[k] = block_absmax((const uint8_t *)buf, &L, k, map);
}

/* out = nf4[q] * absmax of its block for the blocks [blk0, blk1), fp32 or
 * rounded to bf16 */
static void dequant_loop(const void *buf, size_t n, size_t blk0, size_t blk1, const float map[256], float *out32,
                         uint16_t *out16) {
    lt_nf4_layout L = lt_nf4_layout_of(n);
    const uint8_t *packed = (const uint8_t *)buf;
    for (size_t blk = blk0; blk < blk1 && blk < L.nblocks; blk++) {
        float am = block_absmax(packed, &L, blk, map);
        size_t i0 = blk * LT_NF4_BLOCK, i1 = i0 + LT_NF4_BLOCK < n ? i0 + LT_NF4_BLOCK : n;
        for (size_t i = i0; i < i1; i++) {
            uint8_t q = i % 2 ? packed[i / 2] & 15 : packed[i / 2] >> 4;
            float v = lt_nf4_code[q] * am;
            if (out32) out32[i] = v;
            else out16[i] = lt_f32_to_bf16(v);
        }
    }
}

void lt_nf4_dequantize_f32(const void *buf, size_t n, float *out) {
    float map[256];
    lt_nf4_dynamic_map(map);
    dequant_loop(buf, n, 0, SIZE_MAX, map, out, NULL);
}
void lt_nf4_dequantize_bf16(const void *buf, size_t n, uint16_t *out) {
    float map[256];
    lt_nf4_dynamic_map(map);
    dequant_loop(buf, n, 0, SIZE_MAX, map, NULL, out);
}
void lt_nf4_dequantize_blocks(const void *buf, size_t n, size_t blk0, size_t blk1, const float map[256],
                              float *out) {
    dequant_loop(buf, n, blk0, blk1, map, out, NULL);
}
