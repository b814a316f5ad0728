/*
 * lt_nf4.h -- NF4 4-bit weights with double quantization, in bitsandbytes'
 * format and arithmetic (quantize_4bit(quant_type='nf4', blocksize=64,
 * compress_statistics=True) and dequantize_4bit on the CPU), for QLoRA
 * (`train --quantize nf4`). Checked bit for bit against bitsandbytes by
 * tests/test_nf4.c (fixture: tools/gen_nf4_fixture.py).
 *
 * A weight of n elements (rows x cols, flattened row-major) is cut into
 * blocks of LT_NF4_BLOCK along the flat index (the last block may be short):
 *   absmax[b]  = max |w| over block b (fp32)
 *   s          = clamp(w * (1/absmax[b]), -1, 1)   (full blocks: times the
 *                fp32 reciprocal; a short last block: w / absmax, as
 *                bitsandbytes does; absmax floored at 1e-38)
 *   q          = number of midpoints (c[i] + c[i+1]) / 2 of the NF4 table
 *                below s (ties go to the lower code), 0..15
 *   packed[i]  = q[2i] << 4 | q[2i+1]   (an odd n pads with the code of 0)
 * Double quantization of the fp32 absmaxes:
 *   offset     = mean(absmax) (fp32, torch's summation order: lt_nf4_mean)
 *   absmax2[j] = max |absmax - offset| over nested block j (LT_NF4_BLOCK2)
 *   absmax_q   = the nearest entry of the signed dynamic 8-bit map to
 *                (absmax - offset) / absmax2[j] (ties to the lower entry)
 * Dequantization (fp32, no fused multiply-add):
 *   absmax'[b] = dyn[absmax_q[b]] * absmax2[b / 256] + offset
 *   w'         = nf4[q] * absmax'[b]      (bf16: rounded to nearest even)
 *
 * Storage: one contiguous buffer per weight (host or backend memory), laid
 * out by lt_nf4_layout: packed bytes, the absmax codes, then (4-aligned) the
 * fp32 absmax2 values and the fp32 offset.
 */
#ifndef LT_NF4_H
#define LT_NF4_H

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LT_NF4_BLOCK 64
#define LT_NF4_BLOCK2 256

/* The 16 NF4 values (QLoRA's normal-float table, as bitsandbytes stores it). */
extern const float lt_nf4_code[16];

/* Byte offsets of the parts of an n-element NF4 buffer. */
typedef struct lt_nf4_layout {
    size_t n;          /* elements */
    size_t nblocks;    /* blocks of 64 */
    size_t nblocks2;   /* nested blocks of 256 */
    size_t off_absq;   /* uint8 absmax codes, nblocks */
    size_t off_absmax2; /* float, nblocks2 */
    size_t off_offset; /* float, 1 */
    size_t bytes;      /* total */
} lt_nf4_layout;
lt_nf4_layout lt_nf4_layout_of(size_t n);

/* The signed dynamic 8-bit map (256 increasing values) that bitsandbytes'
 * blockwise quantization uses for the nested absmaxes: create_dynamic_map
 * (signed, 7 exponent bits): map[0] = -0.99296875, map[255] = 1. */
void lt_nf4_dynamic_map(float map[256]);

/* The offset of the double quantization: mean(x) in fp32 as torch computes
 * absmax.mean() on the CPU in one thread (its float32 summation order, then
 * / n). torch sums more than 32768 values over its threads, so bitsandbytes'
 * offset for weights of more than 2 Mi elements depends on torch's thread
 * count (by an ulp or so); this is the one-thread value. */
float lt_nf4_mean(const float *x, size_t n);

/* Quantize n fp32 values into `buf` (lt_nf4_layout_of(n).bytes, host). */
lt_status lt_nf4_quantize(const float *w, size_t n, void *buf, lt_err *err);
/* Parts of a quantized tensor (ZeRO-3: each rank quantizes and keeps the
 * blocks [blk0, blk1) of lt_comm_shard(nblocks), the whole tensor never on
 * one rank). A part owns three byte ranges of the layout:
 *   [0] packed bytes [blk0 * 32, blk1 * 32)           (clipped to off_absq)
 *   [1] absmax codes [off_absq + blk0, off_absq + blk1)
 *   [2] the absmax2 of the nested blocks that START in [blk0, blk1)
 * and the last part (last = 1, blk1 = nblocks) also the ends: the padding
 * before off_absmax2 and the offset. Consecutive parts tile the buffer: each
 * range, gathered in part order, is the unsharded quantization's bytes. A
 * part's own buffer is the three ranges back to back (P.bytes). */
typedef struct lt_nf4_part {
    size_t off[3], len[3]; /* byte ranges in the whole buffer */
    size_t bytes;          /* len[0] + len[1] + len[2] */
} lt_nf4_part;
lt_nf4_part lt_nf4_part_of(size_t n, size_t blk0, size_t blk1, int last);
/* absmax[b - blk0] := max |w| over block b in [blk0, blk1), NaN for a block
 * holding a NaN or Inf; w holds the elements from blk0 * 64 on. */
void lt_nf4_block_absmax(const float *w, size_t n, size_t blk0, size_t blk1, float *absmax);
/* The part's bytes (lt_nf4_part_of(n, blk0, blk1, last).bytes) from its
 * elements (w: from blk0 * 64 on) and EVERY block's absmax (nblocks, e.g.
 * gathered from every part's lt_nf4_block_absmax): the offset (their mean)
 * and the nested absmax2 need them all, so every part computes them from the
 * same values and the bytes equal lt_nf4_quantize's. Fails (the same on
 * every part) when any block holds a NaN or Inf. lt_nf4_quantize is the one
 * part [0, nblocks). */
lt_status lt_nf4_quantize_part(const float *w, size_t n, size_t blk0, size_t blk1, int last, const float *absmax,
                               void *part, lt_err *err);
/* The fp32 absmax of each block of 64 from the nested codes (host buffer). */
void lt_nf4_absmax(const void *buf, size_t n, float *absmax);
/* Dequantize a host buffer: fp32, or bf16 bits. */
void lt_nf4_dequantize_f32(const void *buf, size_t n, float *out);
void lt_nf4_dequantize_bf16(const void *buf, size_t n, uint16_t *out);
/* fp32 dequantization of the blocks [blk0, blk1) only (out indexed like the
 * whole tensor; map from lt_nf4_dynamic_map): the pieces of a parallel
 * dequantization. */
void lt_nf4_dequantize_blocks(const void *buf, size_t n, size_t blk0, size_t blk1, const float map[256],
                              float *out);

#ifdef __cplusplus
}
#endif
#endif
