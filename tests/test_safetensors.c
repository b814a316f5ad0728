/* test_safetensors.c -- safetensors reading, validation, writing, model
 * folders (single file and sharded index), and a file written by Python's
 * `safetensors` library (tests/fixtures/safetensors, tools/gen_safetensors_fixture.py).
 * Every malformed input must be refused with the right status AND a message
 * naming the file and, where it applies, the tensor. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lt_safetensors.h"
#include "lt_test.h"

static const char *g_dir;

static const char *tpath(const char *name) {
    static char buf[8][4096];
    static int k = 0;
    k = (k + 1) & 7;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

/* [hlen as u64 LE][header][data_len bytes of data] ; hlen = strlen(header) unless hlen_override != 0 */
static void write_raw(const char *path, const char *header, uint64_t hlen_override, size_t data_len) {
    size_t hl = strlen(header);
    uint64_t hv = hlen_override ? hlen_override : hl;
    size_t total = 8 + hl + data_len;
    unsigned char *b = malloc(total);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hv >> (8 * i));
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = (unsigned char)(i * 37 + 11);
    write_bytes(path, b, total);
    free(b);
}

static int contains(const char *msg, const char *s) { return s == NULL || strstr(msg, s) != NULL; }

/* Open `path` expecting status `want` and a message containing a, b and c (NULL = skip). */
static void expect_open_fail(const char *what, const char *path, lt_status want, const char *a, const char *b,
                             const char *c) {
    lt_err err = {{0}};
    lt_st_file *f = NULL;
    lt_status st = lt_st_open(path, &f, &err);
    LT_CHECK(st == want, "%s: status %s, expected %s (msg: %s)", what, lt_status_name(st), lt_status_name(want),
             err.msg);
    LT_CHECK(f == NULL, "%s: handle not NULL on failure", what);
    LT_CHECK(contains(err.msg, path), "%s: message does not name the file: %s", what, err.msg);
    LT_CHECK(contains(err.msg, a) && contains(err.msg, b) && contains(err.msg, c),
             "%s: message lacks '%s' / '%s' / '%s': %s", what, a ? a : "", b ? b : "", c ? c : "", err.msg);
    if (getenv("LT_TEST_VERBOSE")) printf("  %-40s -> %s\n", what, err.msg);
    if (f) lt_st_close(f);
}

static void expect_model_fail(const char *what, const char *dir, lt_status want, const char *a, const char *b,
                              const char *c) {
    lt_err err = {{0}};
    lt_st_model *m = NULL;
    lt_status st = lt_st_open_model(dir, &m, &err);
    LT_CHECK(st == want, "%s: status %s, expected %s (msg: %s)", what, lt_status_name(st), lt_status_name(want),
             err.msg);
    LT_CHECK(m == NULL, "%s: handle not NULL on failure", what);
    LT_CHECK(contains(err.msg, a) && contains(err.msg, b) && contains(err.msg, c),
             "%s: message lacks '%s' / '%s' / '%s': %s", what, a ? a : "", b ? b : "", c ? c : "", err.msg);
    if (getenv("LT_TEST_VERBOSE")) printf("  %-40s -> %s\n", what, err.msg);
    if (m) lt_st_close_model(m);
}

/* ---- valid round trip through lt_st_write ---- */

static void test_round_trip(void) {
    float a[2 * 3];
    lt_fill_normal(a, 6, 1.0f, 7);
    /* known bit patterns and their exact values */
    const uint16_t bf_bits[7] = {0x3F80, 0xC040, 0x0000, 0x8000, 0x3E20, 0x7F7F, 0x0001};
    const float bf_want[7] = {1.0f, -3.0f, 0.0f, -0.0f, 0.15625f, 3.3895313892515355e38f, 9.183549615799121e-41f};
    const uint16_t h_bits[8] = {0x3C00, 0xC000, 0x0001, 0x7BFF, 0x3555, 0x8000, 0x0400, 0x03FF};
    const float h_want[8] = {1.0f, -2.0f, 5.9604644775390625e-8f, 65504.0f, 0.333251953125f, -0.0f,
                             6.103515625e-5f, 6.097555160522461e-5f};
    const int64_t ids[5] = {0, -1, 1LL << 40, 42, -(1LL << 50)};
    const uint8_t bytes[3] = {0, 200, 255};
    lt_st_write_tensor w[6] = {
        {"model.layers.0.self_attn.q_proj.weight", LT_F32, 2, {2, 3}, a},
        {"bf16.vec", LT_BF16, 1, {7}, bf_bits},
        {"f16.mat", LT_F16, 2, {2, 4}, h_bits},
        {"ids", LT_I64, 2, {1, 5}, ids},
        {"empty", LT_F32, 2, {0, 3}, NULL},
        {"u8 \"quoted\\name\"", LT_U8, 1, {3}, bytes},
    };
    const char *mk[2] = {"format", "note"}, *mv[2] = {"pt", "tab\there \"q\""};
    lt_err err = {{0}};
    const char *path = tpath("round.safetensors");
    LT_CHECK_OK(lt_st_write(path, w, 6, mk, mv, 2, &err), &err);

    /* header is padded to a multiple of 8 with spaces and starts with '{' */
    char *raw = NULL;
    size_t rlen = 0;
    LT_CHECK_OK(lt_read_file(path, &raw, &rlen, &err), &err);
    if (raw && rlen >= 9) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = (hl << 8) | (unsigned char)raw[i];
        LT_CHECK(hl % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hl);
        LT_CHECK(raw[8] == '{', "header starts with %c", raw[8]);
        LT_CHECK(8 + hl + 24 + 14 + 16 + 40 + 0 + 3 == rlen, "file length %zu", rlen);
        /* padding is spaces after the closing brace */
        size_t k = 8 + hl;
        while (k > 8 && raw[k - 1] == ' ') k--;
        LT_CHECK(raw[k - 1] == '}', "header does not end with '}' before padding");
    }
    free(raw);

    lt_st_file *f = NULL;
    LT_CHECK_OK(lt_st_open(path, &f, &err), &err);
    if (!f) return;
    LT_CHECK(lt_st_count(f) == 6, "count %zu", lt_st_count(f));
    LT_CHECK(lt_st_metadata(f, "format") && strcmp(lt_st_metadata(f, "format"), "pt") == 0, "metadata format");
    LT_CHECK(lt_st_metadata(f, "note") && strcmp(lt_st_metadata(f, "note"), mv[1]) == 0, "metadata note escaped");
    LT_CHECK(lt_st_metadata(f, "absent") == NULL, "absent metadata");
    LT_CHECK(lt_st_find(f, "nope") == NULL, "find of a missing name");
    /* data order = write order */
    for (size_t i = 0; i < 6; i++) {
        const lt_st_tensor *t = lt_st_get(f, i);
        LT_CHECK(t && strcmp(t->name, w[i].name) == 0, "tensor %zu is %s, expected %s", i, t ? t->name : "?",
                 w[i].name);
        LT_CHECK(t && t->dtype == w[i].dtype && t->ndim == w[i].ndim, "tensor %zu dtype/ndim", i);
        LT_CHECK(t && lt_st_find(f, w[i].name) == t, "find %s", w[i].name);
        LT_CHECK(t && strcmp(t->file, path) == 0, "tensor file");
        for (int d = 0; t && d < t->ndim; d++) LT_CHECK(t->shape[d] == w[i].shape[d], "tensor %zu shape[%d]", i, d);
        if (t && t->nbytes) LT_CHECK(memcmp(t->data, w[i].data, t->nbytes) == 0, "tensor %zu bytes", i);
    }
    LT_CHECK(lt_st_get(f, 6) == NULL, "get past the end");

    float got[8];
    lt_status st;
    const lt_st_tensor *t = lt_st_find(f, "model.layers.0.self_attn.q_proj.weight");
    lt_poison(got, 8);
    LT_CHECK_OK(lt_st_to_f32(t, got, 6, &err), &err);
    LT_CHECK(memcmp(got, a, sizeof a) == 0, "f32 values");
    t = lt_st_find(f, "bf16.vec");
    lt_poison(got, 8);
    LT_CHECK_OK(lt_st_to_f32(t, got, 7, &err), &err);
    for (int i = 0; i < 7; i++)
        LT_CHECK(memcmp(&got[i], &bf_want[i], 4) == 0, "bf16 bits 0x%04x -> %.9g, expected %.9g", bf_bits[i],
                 got[i], bf_want[i]);
    t = lt_st_find(f, "f16.mat");
    lt_poison(got, 8);
    LT_CHECK_OK(lt_st_to_f32(t, got, 8, &err), &err);
    for (int i = 0; i < 8; i++)
        LT_CHECK(memcmp(&got[i], &h_want[i], 4) == 0, "f16 bits 0x%04x -> %.9g, expected %.9g", h_bits[i], got[i],
                 h_want[i]);
    t = lt_st_find(f, "empty");
    LT_CHECK(t && t->numel == 0 && t->nbytes == 0, "empty tensor");
    LT_CHECK_OK(lt_st_to_f32(t, got, 0, &err), &err);

    /* element ranges (lt_st_read_f32): every [off, off + len) equals the whole conversion's elements,
     * also after the range's pages were dropped (read again from the file); outside the tensor refused */
    const char *ranged[] = {"model.layers.0.self_attn.q_proj.weight", "bf16.vec", "f16.mat"};
    for (int k = 0; k < 3; k++) {
        float whole[8], part[8];
        t = lt_st_find(f, ranged[k]);
        if (!t) continue;
        LT_CHECK_OK(lt_st_to_f32(t, whole, t->numel, &err), &err);
        for (size_t off = 0; off <= t->numel; off++)
            for (size_t len = 0; off + len <= t->numel; len++) {
                lt_poison(part, 8);
                LT_CHECK_OK(lt_st_read_f32(t, off, len, part, &err), &err);
                LT_CHECK(memcmp(part, whole + off, len * sizeof(float)) == 0, "%s: elements [%zu, %zu)", ranged[k],
                         off, off + len);
            }
        st = lt_st_read_f32(t, t->numel - 1, 2, part, &err);
        LT_CHECK(st == LT_ERR_RANGE && strstr(err.msg, ranged[k]), "range past the end: %s %s", lt_status_name(st),
                 err.msg);
    }
    st = lt_st_read_f32(lt_st_find(f, "ids"), 0, 1, got, &err);
    LT_CHECK(st == LT_ERR_UNSUPPORTED && strstr(err.msg, "'ids'"), "I64 range to f32: %s", err.msg);

    /* conversion refusals */
    t = lt_st_find(f, "ids");
    st = lt_st_to_f32(t, got, 5, &err);
    LT_CHECK(st == LT_ERR_UNSUPPORTED && strstr(err.msg, "'ids'") && strstr(err.msg, "I64") && strstr(err.msg, path),
             "I64 to f32: %s %s", lt_status_name(st), err.msg);
    t = lt_st_find(f, "bf16.vec");
    st = lt_st_to_f32(t, got, 6, &err);
    LT_CHECK(st == LT_ERR_INVALID && strstr(err.msg, "'bf16.vec'") && strstr(err.msg, "7"), "wrong n: %s", err.msg);
    lt_st_close(f);

    /* writer refusals: duplicate name, negative dim; nothing is created */
    lt_st_write_tensor dup[2] = {{"x", LT_F32, 1, {1}, a}, {"x", LT_F32, 1, {1}, a}};
    st = lt_st_write(tpath("dup_w.safetensors"), dup, 2, NULL, NULL, 0, &err);
    LT_CHECK(st == LT_ERR_INVALID && strstr(err.msg, "'x'"), "write duplicate: %s", err.msg);
    LT_CHECK(!lt_file_exists(tpath("dup_w.safetensors")), "refused write left a file");
    lt_st_write_tensor neg[1] = {{"n", LT_F32, 2, {2, -1}, a}};
    st = lt_st_write(tpath("neg_w.safetensors"), neg, 1, NULL, NULL, 0, &err);
    LT_CHECK(st == LT_ERR_INVALID && strstr(err.msg, "'n'"), "write negative dim: %s", err.msg);

    /* a file with no tensors and no metadata is valid */
    LT_CHECK_OK(lt_st_write(tpath("none.safetensors"), NULL, 0, NULL, NULL, 0, &err), &err);
    LT_CHECK_OK(lt_st_open(tpath("none.safetensors"), &f, &err), &err);
    if (f) {
        LT_CHECK(lt_st_count(f) == 0, "empty file count");
        lt_st_close(f);
    }
}

/* ---- malformed files ---- */

#define T1(dtype, shape, b, e) "{\"a\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]}}"

static void test_malformed(void) {
    const char *p;

    /* truncated: a valid file missing its last bytes */
    {
        float v[4] = {1, 2, 3, 4};
        lt_st_write_tensor w = {"trunc.w", LT_F32, 1, {4}, v};
        lt_err err;
        p = tpath("trunc.safetensors");
        LT_CHECK_OK(lt_st_write(p, &w, 1, NULL, NULL, 0, &err), &err);
        char *raw;
        size_t n;
        LT_CHECK_OK(lt_read_file(p, &raw, &n, &err), &err);
        write_bytes(p, raw, n - 5);
        expect_open_fail("truncated data", p, LT_ERR_FORMAT, "16", "11", NULL);
        write_bytes(p, raw, 30); /* cut inside the header */
        expect_open_fail("truncated header", p, LT_ERR_FORMAT, "past the end", NULL, NULL);
        write_bytes(p, raw, 5); /* not even the length */
        expect_open_fail("shorter than 8 bytes", p, LT_ERR_FORMAT, "too short", NULL, NULL);
        write_bytes(p, raw, 0);
        expect_open_fail("empty file", p, LT_ERR_FORMAT, "too short", NULL, NULL);
        free(raw);
    }
    expect_open_fail("missing file", tpath("does_not_exist.safetensors"), LT_ERR_IO, "cannot open", NULL, NULL);

    p = tpath("hlen_huge.safetensors");
    write_raw(p, T1("F32", "[1]", "0", "4"), 100000001ull, 4);
    expect_open_fail("header length > 100 MB", p, LT_ERR_FORMAT, "100000001", "100000000", NULL);
    write_raw(p, T1("F32", "[1]", "0", "4"), 0xFFFFFFFFFFFFFFF0ull, 4);
    expect_open_fail("header length near 2^64", p, LT_ERR_FORMAT, "100000000", NULL, NULL);

    p = tpath("hlen_past.safetensors");
    write_raw(p, T1("F32", "[1]", "0", "4"), 5000, 4);
    expect_open_fail("header length beyond file end", p, LT_ERR_FORMAT, "5000", "past the end", NULL);

    p = tpath("not_brace.safetensors");
    write_raw(p, "[{\"a\":1}]", 0, 0);
    expect_open_fail("header not starting with '{'", p, LT_ERR_FORMAT, "'{'", NULL, NULL);
    write_raw(p, " {}", 0, 0);
    expect_open_fail("header starting with a space", p, LT_ERR_FORMAT, "'{'", NULL, NULL);

    p = tpath("bad_json.safetensors");
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",", 0, 0);
    expect_open_fail("invalid JSON", p, LT_ERR_FORMAT, "not valid JSON", NULL, NULL);
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}xx", 0, 4);
    expect_open_fail("trailing bytes after the JSON", p, LT_ERR_FORMAT, "trailing", NULL, NULL);

    /* what the reference (serde_json in the safetensors crate) refuses and cJSON alone accepted */
    p = tpath("strict.safetensors");
    {
        const char *cases[][3] = {
            {"{\"a\xe9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "invalid UTF-8", "0xE9"},
            {"{\"a\xc0\xaf\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "invalid UTF-8", "0xC0"},
            {"{\"a\tb\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "raw control character (0x09)", "byte offset 3"},
            {"{\"__metadata__\":{\"k\":\"v\x01\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             "raw control character (0x01)", NULL},
            {"{\"a\":\f{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "invalid value", "byte offset 5"},
            {T1("F32", "[1.0]", "0", "4"), "the number 1.0 is not written as an integer", "byte offset 29"},
            {T1("F32", "[1e0]", "0", "4"), "the number 1e0", NULL},
            {T1("F32", "[1]", "0", "4.0"), "the number 4.0", NULL},
            {T1("F32", "[1]", "0", "0.4e1"), "the number 0.4e1", NULL},
            {T1("F32", "[1]", "-0", "4"), "the number -0 ", NULL},
            {T1("F32", "[01]", "0", "4"), "leading zero", NULL},
            {T1("F32", "[1]", "00", "4"), "leading zero", NULL},
            {T1("F32", "[1.]", "0", "4"), "no digit after '.'", NULL},
            {T1("F32", "[1]", "0", "4e"), "no digit in the exponent", NULL},
            {T1("F32", "[+1]", "0", "4"), "invalid value", NULL},
            {"{\"a\\x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "invalid escape", NULL},
            {"{\"a\\u00g0\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "4 hex digits", NULL},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],}}", "an object key that is not a string", NULL},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            write_raw(p, cases[i][0], 0, 4);
            char what[64];
            snprintf(what, sizeof what, "strict JSON case %zu", i);
            expect_open_fail(what, p, LT_ERR_FORMAT, "not valid JSON as safetensors reads it", cases[i][1],
                             cases[i][2]);
        }
        /* what the reference accepts stays accepted: escapes, UTF-8 names, plain integers, whitespace */
        const char *ok[] = {"{\"a\\t\\u00e9\\\"\\/\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                            "{\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\": {\"dtype\": \"F32\",\r\n\t\"shape\": [1], \"data_offsets\": [0, 4]}}   ",
                            "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}"};
        size_t ok_data[] = {4, 4, 16};
        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
            write_raw(p, ok[i], 0, ok_data[i]);
            lt_err err = {{0}};
            lt_st_file *f = NULL;
            LT_CHECK(lt_st_open(p, &f, &err) == LT_OK, "valid header %zu refused: %s", i, err.msg);
            lt_st_close(f);
        }
    }

    p = tpath("dtype.safetensors");
    write_raw(p, T1("F33", "[1]", "0", "4"), 0, 4);
    expect_open_fail("unknown dtype", p, LT_ERR_FORMAT, "'a'", "F33", NULL);
    write_raw(p, T1("I16", "[2]", "0", "4"), 0, 4);
    expect_open_fail("known but unsupported dtype", p, LT_ERR_UNSUPPORTED, "'a'", "I16", NULL);
    write_raw(p, "{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4);
    expect_open_fail("dtype not a string", p, LT_ERR_FORMAT, "'a'", "dtype", NULL);

    p = tpath("shape.safetensors");
    write_raw(p, T1("F32", "[-1,2]", "0", "8"), 0, 8);
    expect_open_fail("negative shape", p, LT_ERR_FORMAT, "'a'", "shape[0]", "-1");
    write_raw(p, T1("F32", "[2.5]", "0", "8"), 0, 8);
    expect_open_fail("non-integer shape", p, LT_ERR_FORMAT, "'a'", "shape[0]", "2.5");
    write_raw(p, T1("F32", "[2,\"3\"]", "0", "24"), 0, 24);
    expect_open_fail("string in shape", p, LT_ERR_FORMAT, "'a'", "shape[1]", NULL);
    write_raw(p, T1("F32", "4", "0", "16"), 0, 16);
    expect_open_fail("shape not an array", p, LT_ERR_FORMAT, "'a'", "shape", NULL);
    write_raw(p, T1("F32", "[1,1,1,1,1,1,1,1,1]", "0", "4"), 0, 4);
    expect_open_fail("too many dims", p, LT_ERR_UNSUPPORTED, "'a'", "9", NULL);
    write_raw(p, T1("F32", "[4294967296,4294967296,4294967296]", "0", "4"), 0, 4);
    expect_open_fail("numel overflow", p, LT_ERR_FORMAT, "'a'", "overflow", NULL);

    p = tpath("offsets.safetensors");
    write_raw(p, T1("F32", "[2,2]", "0", "12"), 0, 12);
    expect_open_fail("data_offsets span != shape x dtype", p, LT_ERR_FORMAT, "'a'", "12 bytes", "needs 16");
    write_raw(p, T1("BF16", "[3]", "0", "12"), 0, 12);
    expect_open_fail("BF16 span uses element size 2", p, LT_ERR_FORMAT, "'a'", "needs 6", NULL);
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 0, 4);
    expect_open_fail("data_offsets of length 1", p, LT_ERR_FORMAT, "'a'", "data_offsets", NULL);
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 0, 4);
    expect_open_fail("data_offsets of length 3", p, LT_ERR_FORMAT, "'a'", "data_offsets", NULL);
    write_raw(p, T1("F32", "[1]", "8", "4"), 0, 8);
    expect_open_fail("data_offsets end before begin", p, LT_ERR_FORMAT, "'a'", "[8, 4]", NULL);
    write_raw(p, T1("F32", "[1]", "-4", "0"), 0, 4);
    expect_open_fail("negative data_offsets", p, LT_ERR_FORMAT, "'a'", "data_offsets", NULL);
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, 4);
    expect_open_fail("data_offsets missing", p, LT_ERR_FORMAT, "'a'", "data_offsets", NULL);
    write_raw(p, "{\"a\":[1,2]}", 0, 0);
    expect_open_fail("entry not an object", p, LT_ERR_FORMAT, "'a'", "object", NULL);

    p = tpath("overlap.safetensors");
    write_raw(p,
              "{\"first\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"second\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
              0, 24);
    expect_open_fail("overlapping ranges", p, LT_ERR_FORMAT, "'second'", "overlapping", "first");
    write_raw(p,
              "{\"first\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"same\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
              0, 16);
    expect_open_fail("two tensors on the same range", p, LT_ERR_FORMAT, "overlapping", NULL, NULL);

    p = tpath("hole.safetensors");
    write_raw(p,
              "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
              0, 20);
    expect_open_fail("hole between ranges", p, LT_ERR_FORMAT, "'y'", "hole", "12");
    write_raw(p, T1("F32", "[1]", "4", "8"), 0, 8);
    expect_open_fail("hole at the start", p, LT_ERR_FORMAT, "'a'", "hole", NULL);

    p = tpath("datalen.safetensors");
    write_raw(p, T1("F32", "[4]", "0", "16"), 0, 12);
    expect_open_fail("data shorter than the ranges", p, LT_ERR_FORMAT, "cover 16", "holds 12", NULL);
    write_raw(p, T1("F32", "[4]", "0", "16"), 0, 20);
    expect_open_fail("data longer than the ranges", p, LT_ERR_FORMAT, "cover 16", "holds 20", NULL);

    p = tpath("dupname.safetensors");
    write_raw(p,
              "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              0, 8);
    expect_open_fail("duplicate tensor name", p, LT_ERR_FORMAT, "'w'", "twice", NULL);

    p = tpath("meta.safetensors");
    write_raw(p,
              "{\"__metadata__\":{\"format\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
              0, 4);
    expect_open_fail("metadata value not a string", p, LT_ERR_FORMAT, "__metadata__", "format", NULL);
    write_raw(p, "{\"__metadata__\":[\"x\"]}", 0, 0);
    expect_open_fail("metadata not an object", p, LT_ERR_FORMAT, "__metadata__", NULL, NULL);

    /* sanity: a hand-written valid header with padding and unsorted offsets opens */
    p = tpath("hand_ok.safetensors");
    write_raw(p,
              "{\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[4,7]},"
              "\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
              "\"z\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[7,7]}}   ",
              0, 7);
    lt_err err = {{0}};
    lt_st_file *f = NULL;
    LT_CHECK_OK(lt_st_open(p, &f, &err), &err);
    if (f) {
        LT_CHECK(lt_st_count(f) == 3 && strcmp(lt_st_get(f, 0)->name, "a") == 0 &&
                     strcmp(lt_st_get(f, 1)->name, "b") == 0,
                 "data order");
        const unsigned char *bd = lt_st_find(f, "b")->data;
        LT_CHECK(bd[0] == (unsigned char)(4 * 37 + 11), "b's bytes come from offset 4");
        lt_st_close(f);
    }
}

/* ---- random corruption: never crash; whatever opens is self-consistent ---- */

static void test_corruption(void) {
    lt_err err = {{0}};
    char *raw = NULL;
    size_t n = 0;
    LT_CHECK_OK(lt_read_file(tpath("round.safetensors"), &raw, &n, &err), &err);
    if (!raw) return;
    lt_rng r;
    lt_rng_seed(&r, 99);
    const char *p = tpath("corrupt.safetensors");
    int opened = 0, refused = 0, inconsistent = 0, no_message = 0;
    unsigned char *b = malloc(n);
    for (int it = 0; it < 400; it++) {
        memcpy(b, raw, n);
        size_t len = n;
        int kind = (int)(lt_rng_u64(&r) % 3);
        if (kind == 0) { /* flip 1-3 bytes in the length + header */
            int k = 1 + (int)(lt_rng_u64(&r) % 3);
            for (int j = 0; j < k; j++) b[lt_rng_u64(&r) % 200] ^= (unsigned char)(1 + lt_rng_u64(&r) % 255);
        } else if (kind == 1) { /* replace a digit in the header */
            size_t at = 8 + lt_rng_u64(&r) % 190;
            if (b[at] >= '0' && b[at] <= '9') b[at] = (unsigned char)('0' + lt_rng_u64(&r) % 10);
            else b[at] = (unsigned char)(lt_rng_u64(&r) & 0xff);
        } else { /* truncate or extend */
            len = (size_t)(lt_rng_u64(&r) % (n + 16));
            if (len > n) len = n;
        }
        write_bytes(p, b, len);
        lt_st_file *f = NULL;
        err.msg[0] = 0;
        if (lt_st_open(p, &f, &err) == LT_OK) {
            opened++;
            /* every tensor lies within the file, back to back */
            size_t total = 0;
            for (size_t i = 0; i < lt_st_count(f); i++) total += lt_st_get(f, i)->nbytes;
            const lt_st_tensor *last = lt_st_count(f) ? lt_st_get(f, lt_st_count(f) - 1) : NULL;
            if (last && (const char *)last->data + last->nbytes - (const char *)lt_st_get(f, 0)->data != (long)total)
                inconsistent++;
            lt_st_close(f);
        } else {
            refused++;
            if (!strstr(err.msg, p)) no_message++;
        }
    }
    free(b);
    free(raw);
    LT_CHECK(refused > 200, "corruption: only %d of 400 refused", refused);
    LT_CHECK(inconsistent == 0, "corruption: %d opened files inconsistent", inconsistent);
    LT_CHECK(no_message == 0, "corruption: %d refusals without the file name", no_message);
    if (getenv("LT_TEST_VERBOSE")) printf("  corruption: %d refused, %d opened\n", refused, opened);
}

/* ---- model folders ---- */

static void mkdir_p(const char *d) { mkdir(d, 0755); }

static void write_index(const char *dir, const char *weight_map_json) {
    char path[4096], buf[8192];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    snprintf(buf, sizeof buf, "{\"metadata\":{\"total_size\":0},\"weight_map\":%s}", weight_map_json);
    write_bytes(path, buf, strlen(buf));
}

static void test_model(void) {
    lt_err err = {{0}};
    float v6[6], v4[4], v3[3];
    lt_fill_normal(v6, 6, 1.0f, 11);
    lt_fill_normal(v4, 4, 1.0f, 12);
    lt_fill_normal(v3, 3, 1.0f, 13);
    uint16_t v4bf[4];
    for (int i = 0; i < 4; i++) v4bf[i] = lt_f32_to_bf16(v4[i]);

    /* single file */
    const char *d1 = tpath("model_single");
    mkdir_p(d1);
    char p[4096];
    snprintf(p, sizeof p, "%s/model.safetensors", d1);
    lt_st_write_tensor w[2] = {{"lm_head.weight", LT_F32, 2, {2, 3}, v6}, {"norm.weight", LT_BF16, 1, {4}, v4bf}};
    LT_CHECK_OK(lt_st_write(p, w, 2, NULL, NULL, 0, &err), &err);
    lt_st_model *m = NULL;
    LT_CHECK_OK(lt_st_open_model(d1, &m, &err), &err);
    if (m) {
        LT_CHECK(lt_st_model_count(m) == 2, "single: count");
        LT_CHECK(lt_st_model_get(m, 2) == NULL, "single: get past end");
        float got[6];
        lt_poison(got, 6);
        LT_CHECK_OK(lt_st_model_load_f32(m, "lm_head.weight", 2, (int64_t[]){2, 3}, got, &err), &err);
        LT_CHECK(memcmp(got, v6, sizeof v6) == 0, "single: lm_head values");
        lt_poison(got, 6);
        LT_CHECK_OK(lt_st_model_load_f32(m, "norm.weight", 1, (int64_t[]){4}, got, &err), &err);
        for (int i = 0; i < 4; i++) LT_CHECK(got[i] == lt_bf16_to_f32(v4bf[i]), "single: bf16 norm[%d]", i);
        lt_check_close("bf16 load vs f32 source", got, v4, 4, 4e-3);

        lt_status st = lt_st_model_load_f32(m, "model.embed_tokens.weight", 2, (int64_t[]){2, 3}, got, &err);
        LT_CHECK(st == LT_ERR_FORMAT && strstr(err.msg, "'model.embed_tokens.weight'") && strstr(err.msg, d1) &&
                     strstr(err.msg, "not found"),
                 "missing tensor: %s %s", lt_status_name(st), err.msg);
        st = lt_st_model_load_f32(m, "lm_head.weight", 2, (int64_t[]){3, 2}, got, &err);
        LT_CHECK(st == LT_ERR_FORMAT && strstr(err.msg, "'lm_head.weight'") && strstr(err.msg, "[2, 3]") &&
                     strstr(err.msg, "expected [3, 2]") && strstr(err.msg, "model.safetensors"),
                 "wrong shape: %s %s", lt_status_name(st), err.msg);
        st = lt_st_model_load_f32(m, "lm_head.weight", 1, (int64_t[]){6}, got, &err);
        LT_CHECK(st == LT_ERR_FORMAT && strstr(err.msg, "expected [6]"), "wrong ndim: %s", err.msg);
        lt_st_close_model(m);
    }

    /* sharded */
    const char *d2 = tpath("model_sharded");
    mkdir_p(d2);
    lt_st_write_tensor s1[2] = {{"a", LT_F32, 2, {2, 3}, v6}, {"b", LT_BF16, 1, {4}, v4bf}};
    lt_st_write_tensor s2[1] = {{"c", LT_F32, 1, {3}, v3}};
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", d2);
    LT_CHECK_OK(lt_st_write(p, s1, 2, NULL, NULL, 0, &err), &err);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d2);
    LT_CHECK_OK(lt_st_write(p, s2, 1, NULL, NULL, 0, &err), &err);
    write_index(d2, "{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\","
                    "\"b\":\"model-00001-of-00002.safetensors\"}");
    m = NULL;
    LT_CHECK_OK(lt_st_open_model(d2, &m, &err), &err);
    if (m) {
        LT_CHECK(lt_st_model_count(m) == 3, "sharded: count %zu", lt_st_model_count(m));
        const lt_st_tensor *tc = lt_st_model_find(m, "c"), *ta = lt_st_model_find(m, "a");
        LT_CHECK(tc && strstr(tc->file, "model-00002-of-00002.safetensors"), "sharded: c's file");
        LT_CHECK(ta && strstr(ta->file, "model-00001-of-00002.safetensors"), "sharded: a's file");
        float got[6];
        lt_poison(got, 6);
        LT_CHECK_OK(lt_st_model_load_f32(m, "c", 1, (int64_t[]){3}, got, &err), &err);
        LT_CHECK(memcmp(got, v3, sizeof v3) == 0, "sharded: c values");
        lt_poison(got, 6);
        LT_CHECK_OK(lt_st_model_load_f32(m, "a", 2, (int64_t[]){2, 3}, got, &err), &err);
        LT_CHECK(memcmp(got, v6, sizeof v6) == 0, "sharded: a values");
        lt_st_close_model(m);
    }

    /* shard file missing */
    write_index(d2, "{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00003-of-00003.safetensors\"}");
    expect_model_fail("shard missing", d2, LT_ERR_IO, "model-00003-of-00003.safetensors", "'c'", "index.json");
    /* tensor listed but absent from its shard */
    write_index(d2, "{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\","
                    "\"ghost\":\"model-00002-of-00002.safetensors\"}");
    expect_model_fail("tensor missing from shard", d2, LT_ERR_FORMAT, "'ghost'", "model-00002-of-00002.safetensors",
                      "absent");
    /* listed in the wrong shard */
    write_index(d2, "{\"a\":\"model-00002-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}");
    expect_model_fail("tensor in another shard than listed", d2, LT_ERR_FORMAT, "'a'", "model-00002", NULL);
    /* paths escaping the folder */
    write_index(d2, "{\"a\":\"../model_single/model.safetensors\"}");
    expect_model_fail("shard path with ..", d2, LT_ERR_FORMAT, "../model_single/model.safetensors", "'a'", "'..'");
    write_index(d2, "{\"a\":\"..\"}");
    expect_model_fail("shard path ..", d2, LT_ERR_FORMAT, "'..'", "'a'", NULL);
    write_index(d2, "{\"a\":\"/etc/passwd\"}");
    expect_model_fail("absolute shard path", d2, LT_ERR_FORMAT, "/etc/passwd", "'a'", NULL);
    write_index(d2, "{\"a\":3}");
    expect_model_fail("weight_map value not a string", d2, LT_ERR_FORMAT, "'a'", "weight_map", NULL);
    write_index(d2, "[]");
    expect_model_fail("weight_map not an object", d2, LT_ERR_FORMAT, "weight_map", NULL, NULL);
    write_index(d2, "{}");
    expect_model_fail("empty weight_map", d2, LT_ERR_FORMAT, "empty", NULL, NULL);
    /* a tensor in two shards */
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", d2);
    lt_st_write_tensor s2dup[2] = {{"a", LT_F32, 2, {2, 3}, v6}, {"c", LT_F32, 1, {3}, v3}};
    LT_CHECK_OK(lt_st_write(p, s2dup, 2, NULL, NULL, 0, &err), &err);
    write_index(d2, "{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}");
    expect_model_fail("duplicate across shards", d2, LT_ERR_FORMAT, "'a'", "model-00001", "model-00002");
    /* a malformed shard: its own message comes through */
    write_bytes(p, "xx", 2);
    expect_model_fail("malformed shard", d2, LT_ERR_FORMAT, "model-00002-of-00002.safetensors", "too short", NULL);

    /* neither file */
    const char *d3 = tpath("model_empty");
    mkdir_p(d3);
    expect_model_fail("empty folder", d3, LT_ERR_IO, d3, "model.safetensors", NULL);
}

/* ---- a file written by Python's safetensors ---- */

static void test_python_fixture(void) {
    const char *path = lt_src_path("tests/fixtures/safetensors/small.safetensors");
    const char *epath = lt_src_path("tests/fixtures/safetensors/small.expected.json");
    lt_err err = {{0}};
    char *text = NULL;
    LT_CHECK_OK(lt_read_file(epath, &text, NULL, &err), &err);
    if (!text) return;
    cJSON *exp = cJSON_Parse(text);
    free(text);
    LT_CHECK(exp != NULL, "expected JSON parses");
    if (!exp) return;
    lt_st_file *f = NULL;
    LT_CHECK_OK(lt_st_open(path, &f, &err), &err);
    if (!f) {
        cJSON_Delete(exp);
        return;
    }
    const cJSON *meta = cJSON_GetObjectItem(exp, "metadata"), *tens = cJSON_GetObjectItem(exp, "tensors"), *e;
    cJSON_ArrayForEach(e, meta) {
        const char *v = lt_st_metadata(f, e->string);
        LT_CHECK(v && strcmp(v, e->valuestring) == 0, "fixture metadata %s", e->string);
    }
    LT_CHECK(lt_st_count(f) == (size_t)cJSON_GetArraySize(tens), "fixture count %zu", lt_st_count(f));
    lt_st_write_tensor wt[32];
    size_t nw = 0;
    cJSON_ArrayForEach(e, tens) {
        const char *name = e->string;
        const lt_st_tensor *t = lt_st_find(f, name);
        LT_CHECK(t != NULL, "fixture tensor %s present", name);
        if (!t) continue;
        const char *dt = cJSON_GetObjectItem(e, "dtype")->valuestring;
        LT_CHECK(strcmp(lt_dtype_name(t->dtype), dt) == 0, "%s dtype %s vs %s", name, lt_dtype_name(t->dtype), dt);
        const cJSON *sh = cJSON_GetObjectItem(e, "shape"), *vals = cJSON_GetObjectItem(e, "values");
        LT_CHECK(t->ndim == cJSON_GetArraySize(sh), "%s ndim", name);
        for (int d = 0; d < t->ndim && d < cJSON_GetArraySize(sh); d++)
            LT_CHECK(t->shape[d] == (int64_t)cJSON_GetArrayItem(sh, d)->valuedouble, "%s shape[%d]", name, d);
        size_t n = (size_t)cJSON_GetArraySize(vals);
        LT_CHECK(t->numel == n, "%s numel %zu vs %zu", name, t->numel, n);
        if (t->numel != n) continue;
        const unsigned char *raw = t->data;
        if (t->dtype == LT_F32 || t->dtype == LT_BF16 || t->dtype == LT_F16 || t->dtype == LT_F64) {
            float *got = malloc((n ? n : 1) * sizeof *got);
            lt_poison(got, n);
            LT_CHECK_OK(lt_st_to_f32(t, got, n, &err), &err);
            for (size_t i = 0; i < n; i++) {
                float want = (float)cJSON_GetArrayItem(vals, (int)i)->valuedouble;
                /* exact: every F32/BF16/F16 value is representable; F64 rounds once */
                LT_CHECK(memcmp(&got[i], &want, 4) == 0 || (got[i] == want && want != 0.0f),
                         "%s[%zu] = %.9g, expected %.9g", name, i, got[i], want);
                LT_CHECK(signbit(got[i]) == signbit(want), "%s[%zu] sign", name, i);
            }
            const cJSON *bits = cJSON_GetObjectItem(e, "bits");
            for (size_t i = 0; bits && i < n; i++) {
                uint16_t h;
                memcpy(&h, raw + 2 * i, 2);
                LT_CHECK(h == (uint16_t)cJSON_GetArrayItem(bits, (int)i)->valuedouble, "%s bits[%zu]", name, i);
            }
            free(got);
        } else {
            for (size_t i = 0; i < n; i++) {
                double want = cJSON_GetArrayItem(vals, (int)i)->valuedouble;
                int64_t got = 0;
                if (t->dtype == LT_I64) memcpy(&got, raw + 8 * i, 8);
                if (t->dtype == LT_I32) {
                    int32_t x;
                    memcpy(&x, raw + 4 * i, 4);
                    got = x;
                }
                if (t->dtype == LT_U8 || t->dtype == LT_BOOL) got = raw[i];
                LT_CHECK((double)got == want, "%s[%zu] = %lld, expected %.0f", name, i, (long long)got, want);
            }
        }
        if (nw < 32) {
            lt_st_write_tensor *w = &wt[nw++];
            w->name = t->name;
            w->dtype = t->dtype;
            w->ndim = t->ndim;
            memcpy(w->shape, t->shape, sizeof w->shape);
            w->data = t->data;
        }
    }
    /* rewrite everything with lt_st_write and read it back identical */
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    const char *p2 = tpath("fixture_rewrite.safetensors");
    LT_CHECK_OK(lt_st_write(p2, wt, nw, mk, mv, 1, &err), &err);
    lt_st_file *g = NULL;
    LT_CHECK_OK(lt_st_open(p2, &g, &err), &err);
    if (g) {
        LT_CHECK(lt_st_count(g) == lt_st_count(f), "rewrite count");
        for (size_t i = 0; i < nw; i++) {
            const lt_st_tensor *a = lt_st_find(f, wt[i].name), *b = lt_st_find(g, wt[i].name);
            LT_CHECK(b && b->dtype == a->dtype && b->nbytes == a->nbytes &&
                         (a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0),
                     "rewrite %s", wt[i].name);
        }
        lt_st_close(g);
    }
    lt_st_close(f);
    cJSON_Delete(exp);
}

int main(void) {
    g_dir = lt_test_tmpdir("test_safetensors");
    test_round_trip();
    test_malformed();
    test_corruption();
    test_model();
    test_python_fixture();
    return lt_test_finish("test_safetensors");
}
