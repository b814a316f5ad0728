/*
 * test_nf4.c -- NF4 quantization with double quantization (core/lt_nf4.c)
 * against bitsandbytes on the CPU: tests/fixtures/nf4/nf4.safetensors from
 * tools/gen_nf4_fixture.py. Everything is compared bit for bit: the NF4 and
 * dynamic code tables, the packed 4-bit codes, the 8-bit absmax codes, the
 * nested absmaxes and the offset, and the dequantized weights in fp32 and
 * bf16 (sizes include short last blocks, an odd last dimension, a single
 * block and an all-zero weight).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_nf4.h"
#include "lt_safetensors.h"
#include "lt_test.h"

static const lt_st_tensor *need(const lt_st_file *f, const char *name, lt_dtype dt) {
    const lt_st_tensor *t = lt_st_find(f, name);
    if (!t || t->dtype != dt) {
        fprintf(stderr, "fixture tensor '%s' missing or not %s\n", name, lt_dtype_name(dt));
        exit(1);
    }
    return t;
}

/* number of positions where two byte strings differ (and the first one) */
static size_t ndiff(const void *a, const void *b, size_t bytes, size_t elem, size_t *first) {
    size_t d = 0;
    *first = (size_t)-1;
    for (size_t i = 0; i < bytes / elem; i++)
        if (memcmp((const char *)a + i * elem, (const char *)b + i * elem, elem)) {
            if (!d) *first = i;
            d++;
        }
    return d;
}

static void test_case(const lt_st_file *f, const char *name) {
    char key[64];
    snprintf(key, sizeof key, "%s.w", name);
    const lt_st_tensor *w = lt_st_find(f, key);
    LT_CHECK(w != NULL, "case %s: no input", name);
    if (!w) return;
    size_t n = w->numel;
    float *wf = malloc(n * sizeof(float));
    lt_err err;
    LT_CHECK_OK(lt_st_to_f32(w, wf, n, &err), &err);
    lt_nf4_layout L = lt_nf4_layout_of(n);
    uint8_t *buf = malloc(L.bytes);
    LT_CHECK_OK(lt_nf4_quantize(wf, n, buf, &err), &err);

    size_t first, d;
    snprintf(key, sizeof key, "%s.packed", name);
    const lt_st_tensor *t = need(f, key, LT_U8);
    LT_CHECK(t->numel == (n + 1) / 2, "%s: packed bytes %zu, fixture %zu", name, (n + 1) / 2, t->numel);
    d = ndiff(buf, t->data, t->numel, 1, &first);
    LT_CHECK(d == 0, "%s: %zu of %zu packed bytes differ (first at %zu: %02x, bitsandbytes %02x)", name, d, t->numel,
             first, d ? buf[first] : 0, d ? ((const uint8_t *)t->data)[first] : 0);

    snprintf(key, sizeof key, "%s.offset", name);
    t = need(f, key, LT_F32);
    float off;
    memcpy(&off, buf + L.off_offset, 4);
    LT_CHECK(memcmp(&off, t->data, 4) == 0, "%s: offset %.9g, bitsandbytes %.9g", name, off, *(const float *)t->data);

    snprintf(key, sizeof key, "%s.absmax2", name);
    t = need(f, key, LT_F32);
    LT_CHECK(t->numel == L.nblocks2, "%s: %zu nested blocks, fixture %zu", name, L.nblocks2, t->numel);
    d = ndiff(buf + L.off_absmax2, t->data, t->nbytes, 4, &first);
    LT_CHECK(d == 0, "%s: %zu nested absmaxes differ (first %zu)", name, d, first);

    snprintf(key, sizeof key, "%s.absmax_q", name);
    t = need(f, key, LT_U8);
    LT_CHECK(t->numel == L.nblocks, "%s: %zu blocks, fixture %zu", name, L.nblocks, t->numel);
    d = ndiff(buf + L.off_absq, t->data, t->numel, 1, &first);
    LT_CHECK(d == 0, "%s: %zu of %zu absmax codes differ (first at %zu: %d, bitsandbytes %d)", name, d, t->numel,
             first, d ? buf[L.off_absq + first] : 0, d ? ((const uint8_t *)t->data)[first] : 0);

    /* dequantize the fixture's own state (so a quantizer bug shows above, not here) */
    uint8_t *ref = malloc(L.bytes);
    memset(ref, 0, L.bytes);
    snprintf(key, sizeof key, "%s.packed", name);
    memcpy(ref, need(f, key, LT_U8)->data, (n + 1) / 2);
    snprintf(key, sizeof key, "%s.absmax_q", name);
    memcpy(ref + L.off_absq, need(f, key, LT_U8)->data, L.nblocks);
    snprintf(key, sizeof key, "%s.absmax2", name);
    memcpy(ref + L.off_absmax2, need(f, key, LT_F32)->data, L.nblocks2 * 4);
    snprintf(key, sizeof key, "%s.offset", name);
    memcpy(ref + L.off_offset, need(f, key, LT_F32)->data, 4);

    float *out = malloc(n * sizeof(float));
    uint16_t *out16 = malloc(n * sizeof(uint16_t));
    lt_nf4_dequantize_f32(ref, n, out);
    snprintf(key, sizeof key, "%s.deq_f32", name);
    t = need(f, key, LT_F32);
    d = ndiff(out, t->data, n * 4, 4, &first);
    LT_CHECK(d == 0, "%s: %zu of %zu fp32 dequantized values differ (first at %zu: %.9g, bitsandbytes %.9g)", name, d,
             n, first, d ? out[first] : 0, d ? ((const float *)t->data)[first] : 0);
    lt_nf4_dequantize_bf16(ref, n, out16);
    snprintf(key, sizeof key, "%s.deq_bf16", name);
    t = need(f, key, LT_BF16);
    d = ndiff(out16, t->data, n * 2, 2, &first);
    LT_CHECK(d == 0, "%s: %zu of %zu bf16 dequantized values differ (first %zu)", name, d, n, first);
    /* and our own quantization dequantizes the same way */
    lt_nf4_dequantize_f32(buf, n, out);
    snprintf(key, sizeof key, "%s.deq_f32", name);
    d = ndiff(out, need(f, key, LT_F32)->data, n * 4, 4, &first);
    LT_CHECK(d == 0, "%s: own quantization: %zu dequantized values differ", name, d);
    printf("  case %s: %zu elements, %zu blocks, %zu nested: ok\n", name, n, L.nblocks, L.nblocks2);
    free(out), free(out16), free(ref), free(buf), free(wf);
}

static void test_tables(const lt_st_file *f) {
    const lt_st_tensor *t = need(f, "code_nf4", LT_F32);
    LT_CHECK(t->numel == 16 && memcmp(t->data, lt_nf4_code, 64) == 0, "NF4 table differs from bitsandbytes'");
    float map[256];
    lt_nf4_dynamic_map(map);
    t = need(f, "code_dynamic", LT_F32);
    size_t first, d = ndiff(map, t->data, 1024, 4, &first);
    LT_CHECK(t->numel == 256 && d == 0, "dynamic map: %zu of 256 entries differ (first %zu: %.9g, bitsandbytes %.9g)",
             d, first, d ? map[first] : 0, d ? ((const float *)t->data)[first] : 0);
}

/* the offset's mean against torch's on vectors long enough for every level
 * of its cascade summation */
static void test_means(const lt_st_file *f) {
    const int sizes[] = {5, 7, 8, 100, 513, 2049, 8191, 20001};
    for (int i = 0; i < 8; i++) {
        char key[32];
        snprintf(key, sizeof key, "mean%d.x", sizes[i]);
        const lt_st_tensor *x = need(f, key, LT_F32);
        snprintf(key, sizeof key, "mean%d.mean", sizes[i]);
        const float want = *(const float *)need(f, key, LT_F32)->data;
        float got = lt_nf4_mean((const float *)x->data, x->numel);
        LT_CHECK(x->numel == (size_t)sizes[i] && memcmp(&got, &want, 4) == 0, "mean of %d values: %.9g, torch %.9g",
                 sizes[i], got, want);
    }
}

static void test_errors(void) {
    float w[70];
    for (int i = 0; i < 70; i++) w[i] = (float)i;
    w[66] = NAN;
    lt_nf4_layout L = lt_nf4_layout_of(70);
    uint8_t *buf = malloc(L.bytes);
    lt_err err;
    LT_CHECK(lt_nf4_quantize(w, 70, buf, &err) == LT_ERR_NONFINITE && strstr(err.msg, "block 1"),
             "NaN weight accepted: %s", err.msg);
    LT_CHECK(lt_nf4_quantize(w, 0, buf, &err) == LT_ERR_INVALID, "empty tensor accepted");
    /* an all-zero block dequantizes to zeros */
    memset(w, 0, sizeof w);
    w[69] = 1.0f;
    LT_CHECK_OK(lt_nf4_quantize(w, 70, buf, &err), &err);
    float out[70];
    lt_nf4_dequantize_f32(buf, 70, out);
    int zeros = 1;
    for (int i = 0; i < 64; i++) zeros &= fabsf(out[i]) < 1e-6f;
    LT_CHECK(zeros && fabsf(out[69] - 1.0f) < 0.02f, "zero block / last block: %g %g", out[0], out[69]);
    LT_CHECK(L.bytes == 35 + 2 + 3 /* pad to 4 */ + 4 + 4 && L.nblocks == 2 && L.nblocks2 == 1, "layout %zu", L.bytes);
    free(buf);
}

/* Parts (ZeRO-3): a tensor cut into parts along its blocks, each part
 * quantized from its own elements and every block's absmax; the parts'
 * three byte ranges, laid back at their offsets, are lt_nf4_quantize's bytes
 * (odd n with a short last block; more than one nested block; splits that
 * end inside a nested block, empty parts, a last part with no blocks). */
static void test_parts(void) {
    const size_t sizes[] = {64 * 700 + 37, 64 * 513, 99, 64 * 256};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si];
        lt_nf4_layout L = lt_nf4_layout_of(n);
        float *w = malloc(n * sizeof *w), *absmax = malloc(L.nblocks * sizeof *absmax);
        uint8_t *whole = malloc(L.bytes), *tiled = malloc(L.bytes), *part = malloc(L.bytes);
        uint64_t x = 88172645463325252ull + si;
        for (size_t i = 0; i < n; i++) { /* xorshift, blocks of different scales */
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            w[i] = ((float)(x >> 40) / (float)(1 << 24) - 0.5f) * (float)(1 + (i / 64) % 7);
        }
        lt_err err;
        LT_CHECK_OK(lt_nf4_quantize(w, n, whole, &err), &err);
        for (int world = 1; world <= 4; world++)
            for (int skew = 0; skew < 2; skew++) {
                memset(tiled, 0xAB, L.bytes);
                size_t covered = 0;
                for (int r = 0; r < world; r++) { /* an even split, or everything on rank 0 (the others empty) */
                    size_t b0 = L.nblocks * (size_t)r / (size_t)world, b1 = L.nblocks * (size_t)(r + 1) / (size_t)world;
                    if (skew) b0 = r ? L.nblocks : 0, b1 = L.nblocks;
                    lt_nf4_block_absmax(w + b0 * LT_NF4_BLOCK, n, b0, b1, absmax + b0);
                }
                for (int r = 0; r < world; r++) {
                    size_t b0 = L.nblocks * (size_t)r / (size_t)world, b1 = L.nblocks * (size_t)(r + 1) / (size_t)world;
                    if (skew) b0 = r ? L.nblocks : 0, b1 = L.nblocks;
                    int last = r == world - 1;
                    lt_nf4_part P = lt_nf4_part_of(n, b0, b1, last);
                    LT_CHECK_OK(lt_nf4_quantize_part(w + b0 * LT_NF4_BLOCK, n, b0, b1, last, absmax, part, &err), &err);
                    size_t at = 0;
                    for (int k = 0; k < 3; k++) {
                        memcpy(tiled + P.off[k], part + at, P.len[k]);
                        at += P.len[k];
                        covered += P.len[k];
                    }
                }
                size_t first, nd = ndiff(whole, tiled, L.bytes, 1, &first);
                LT_CHECK(covered == L.bytes && !nd,
                         "n = %zu, %d parts%s: %zu of %zu bytes covered, first differing byte %zu", n, world,
                         skew ? " (skewed)" : "", covered, L.bytes, first);
            }
        absmax[1] = NAN; /* a NaN block anywhere fails every part alike */
        LT_CHECK(lt_nf4_quantize_part(w, n, 0, 1, 0, absmax, part, &err) == LT_ERR_NONFINITE && strstr(err.msg, "block 1"),
                 "a NaN absmax of another part accepted: %s", err.msg);
        free(w), free(absmax), free(whole), free(tiled), free(part);
    }
}

int main(void) {
    lt_st_file *f;
    lt_err err;
    if (lt_st_open(LT_SOURCE_DIR "/tests/fixtures/nf4/nf4.safetensors", &f, &err) != LT_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_tables(f);
    const char *names[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    for (int i = 0; i < 8; i++) test_case(f, names[i]);
    test_means(f);
    test_errors();
    test_parts();
    lt_st_close(f);
    return lt_test_finish("test_nf4");
}
