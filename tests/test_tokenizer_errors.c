/* test_tokenizer_errors.c -- lt_tok_load refuses what it does not implement
 * (naming the feature), malformed JSON (naming line/column), missing vocab,
 * merges with unknown tokens, and bad files; a minimal valid file loads. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_sha256.h"
#include "lt_test.h"
#include "lt_tokenizer.h"

static const char *tmpdir;

/* a small valid BPE tokenizer with one field replaced */
static const char *BASE =
    "{\"version\":\"1.0\",\"truncation\":%s,\"padding\":null,\"added_tokens\":[{\"id\":5,\"content\":\"<s>\","
    "\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}],"
    "\"normalizer\":%s,\"pre_tokenizer\":%s,\"post_processor\":%s,\"decoder\":%s,"
    "\"model\":%s}";
static const char *MODEL_OK =
    "{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,"
    "\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_fallback\":false,"
    "\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"c\":3,\"abc\":4,\"<s>\":5},\"merges\":[\"a b\",[\"ab\",\"c\"]]}";

static const char *write_tmp(const char *name, const char *text) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

static char *make(const char *trunc, const char *norm, const char *pre, const char *post, const char *dec,
                  const char *model) {
    static char buf[8192];
    snprintf(buf, sizeof buf, BASE, trunc ? trunc : "null", norm ? norm : "null", pre ? pre : "null",
             post ? post : "null", dec ? dec : "null", model ? model : MODEL_OK);
    return buf;
}

/* load text; expect status st and every needle in the message */
static void expect(const char *what, const char *text, lt_status want, const char *needle1, const char *needle2) {
    const char *path = write_tmp("tokenizer.json", text);
    LT_CHECK(path != NULL, "cannot write under %s", tmpdir);
    if (!path) return;
    lt_tokenizer *t = NULL;
    lt_err err = {{0}};
    strcpy(err.msg, "(no message)");
    lt_status st = lt_tok_load(path, &t, &err);
    LT_CHECK(st == want, "%s: status %s, expected %s (%s)", what, lt_status_name(st), lt_status_name(want), err.msg);
    if (st == LT_OK) {
        LT_CHECK(t != NULL, "%s: no tokenizer", what);
        lt_tok_free(t);
        return;
    }
    LT_CHECK(t == NULL, "%s: tokenizer returned on failure", what);
    if (needle1) LT_CHECK(strstr(err.msg, needle1) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, needle1);
    if (needle2) LT_CHECK(strstr(err.msg, needle2) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, needle2);
    if (getenv("LT_TEST_VERBOSE")) printf("  %-34s -> %s\n", what, err.msg);
}

/* SHA-256: FIPS 180-4 example vectors, and chunked updates equal one shot
 * (the tokenizer files themselves are checked against Python's hashlib in
 * test_tokenizer_exact / test_tokenizer_features). */
static void sha_checks(void) {
    static const char *msg[] = {"", "abc", "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"};
    static const char *want[] = {"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                                 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                                 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"};
    char hex[65];
    for (int i = 0; i < 3; i++) {
        lt_sha256_hex(msg[i], strlen(msg[i]), hex);
        LT_CHECK(!strcmp(hex, want[i]), "sha256('%s') = %s", msg[i], hex);
    }
    static unsigned char buf[1000];
    lt_rng r;
    lt_rng_seed(&r, 3);
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)lt_rng_u64(&r);
    for (size_t n = 0; n <= sizeof buf; n += 37) {
        char a[65], b[65];
        lt_sha256_hex(buf, n, a);
        lt_sha256 c;
        uint8_t d[32];
        lt_sha256_init(&c);
        for (size_t k = 0; k < n;) {
            size_t step = 1 + lt_rng_u64(&r) % 70;
            if (step > n - k) step = n - k;
            lt_sha256_update(&c, buf + k, step);
            k += step;
        }
        lt_sha256_final(&c, d);
        for (int q = 0; q < 32; q++) snprintf(b + 2 * q, 3, "%02x", d[q]);
        LT_CHECK(!strcmp(a, b), "sha256 chunked != one shot for %zu bytes", n);
    }
}

int main(void) {
    tmpdir = lt_test_tmpdir("test_tokenizer_errors");
    sha_checks();

    /* the base file is valid, and encodes as the merges say */
    expect("valid base", make(0, 0, 0, 0, 0, 0), LT_OK, NULL, NULL);
    {
        const char *path = write_tmp("tokenizer.json", make(0, 0, 0, 0, 0, 0));
        lt_tokenizer *t = NULL;
        lt_err err;
        LT_CHECK_OK(lt_tok_load(tmpdir, &t, &err), &err); /* a folder holding tokenizer.json */
        if (t) {
            lt_tok_ids v = {0};
            LT_CHECK_OK(lt_tok_encode(t, "abcab<s>c", 9, 1, &v, &err), &err);
            /* abc -> 4, ab -> 2, <s> -> 5 (added token), c -> 3 */
            LT_CHECK(v.n == 4 && v.ids[0] == 4 && v.ids[1] == 2 && v.ids[2] == 5 && v.ids[3] == 3,
                     "base encode gave %zu ids", v.n);
            LT_CHECK(v.n == 4 && v.offsets[0] == 0 && v.offsets[1] == 3 && v.offsets[2] == 5 && v.offsets[3] == 8,
                     "base offsets");
            lt_tok_ids_free(&v);
            LT_CHECK(lt_tok_token_to_id(t, "abc") == 4 && lt_tok_token_to_id(t, "zz") == -1, "token_to_id");
            LT_CHECK(lt_tok_is_special(t, 5) && !lt_tok_is_special(t, 4), "is_special");
            LT_CHECK(lt_tok_vocab_size(t) == 6, "vocab size %d", lt_tok_vocab_size(t));
            lt_tok_free(t);
        }
        (void)path;
    }

    /* unsupported features, named */
    expect("model WordPiece",
           make(0, 0, 0, 0, 0, "{\"type\":\"WordPiece\",\"vocab\":{\"a\":0},\"unk_token\":\"a\"}"),
           LT_ERR_UNSUPPORTED, "model type", "WordPiece");
    expect("model Unigram", make(0, 0, 0, 0, 0, "{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}"), LT_ERR_UNSUPPORTED,
           "Unigram", NULL);
    expect("normalizer Lowercase", make(0, "{\"type\":\"Lowercase\"}", 0, 0, 0, 0), LT_ERR_UNSUPPORTED,
           "normalizer type 'Lowercase' is not supported", NULL);
    expect("normalizer NFKC in a Sequence",
           make(0, "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"NFKC\"}]}", 0, 0, 0, 0),
           LT_ERR_UNSUPPORTED, "NFKC", NULL);
    expect("normalizer Replace regex",
           make(0, "{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"content\":\" \"}", 0, 0, 0, 0),
           LT_ERR_UNSUPPORTED, "Regex", "\\s+");
    expect("pre_tokenizer Whitespace", make(0, 0, "{\"type\":\"Whitespace\"}", 0, 0, 0), LT_ERR_UNSUPPORTED,
           "pre_tokenizer type 'Whitespace' is not supported", NULL);
    expect("pre_tokenizer Digits in a Sequence",
           make(0, 0, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true}]}", 0,
                0, 0),
           LT_ERR_UNSUPPORTED, "Digits", NULL);
    expect("Split unknown regex",
           make(0, 0,
                "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\w+|[^\\\\w\\\\s]+\"},\"behavior\":\"Isolated\","
                "\"invert\":false}",
                0, 0, 0),
           LT_ERR_UNSUPPORTED, "regex", "\\w+");
    expect("Split unknown behavior",
           make(0, 0, "{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Sideways\",\"invert\":false}",
                0, 0, 0),
           LT_ERR_UNSUPPORTED, "Sideways", NULL);
    expect("ByteLevel not last",
           make(0, 0,
                "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\",\"add_prefix_space\":false},"
                "{\"type\":\"Metaspace\",\"replacement\":\"_\"}]}",
                0, 0, 0),
           LT_ERR_UNSUPPORTED, "ByteLevel", NULL);
    expect("post_processor Roberta", make(0, 0, 0, "{\"type\":\"RobertaProcessing\",\"sep\":[\"b\",1],\"cls\":[\"a\",0]}", 0, 0),
           LT_ERR_UNSUPPORTED, "post_processor type 'RobertaProcessing'", NULL);
    expect("decoder WordPiece", make(0, 0, 0, 0, "{\"type\":\"WordPiece\",\"prefix\":\"##\"}", 0), LT_ERR_UNSUPPORTED,
           "decoder type 'WordPiece'", NULL);
    expect("decoder CTC in a Sequence", make(0, 0, 0, 0, "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"CTC\"}]}", 0),
           LT_ERR_UNSUPPORTED, "CTC", NULL);
    expect("truncation", make("{\"max_length\":512,\"strategy\":\"LongestFirst\",\"stride\":0}", 0, 0, 0, 0, 0),
           LT_ERR_UNSUPPORTED, "truncation", NULL);
    expect("dropout",
           make(0, 0, 0, 0, 0,
                "{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}"),
           LT_ERR_UNSUPPORTED, "dropout", NULL);
    expect("continuing_subword_prefix",
           make(0, 0, 0, 0, 0,
                "{\"type\":\"BPE\",\"continuing_subword_prefix\":\"##\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
                "\"merges\":[]}"),
           LT_ERR_UNSUPPORTED, "continuing_subword_prefix", "##");

    /* malformed files */
    char trunc_json[8192];
    snprintf(trunc_json, sizeof trunc_json, "%s", make(0, 0, 0, 0, 0, 0));
    trunc_json[strlen(trunc_json) / 2] = 0;
    expect("truncated JSON", trunc_json, LT_ERR_FORMAT, "malformed JSON", "line 1");
    expect("trailing comma", "{\n  \"model\": {\"type\": \"BPE\",},\n}", LT_ERR_FORMAT, "line 2", NULL);
    expect("bad escape", "{\"model\": \"\\q\"}", LT_ERR_FORMAT, "bad escape", NULL);
    expect("lone surrogate", "{\"model\": \"\\ud800\"}", LT_ERR_FORMAT, "surrogate", NULL);
    expect("not an object", "[1, 2, 3]", LT_ERR_FORMAT, "object", NULL);
    expect("empty file", "", LT_ERR_FORMAT, "malformed JSON", NULL);
    expect("garbage after value", "{} x", LT_ERR_FORMAT, "trailing", NULL);
    expect("missing model", "{\"added_tokens\": []}", LT_ERR_FORMAT, "model", NULL);
    expect("missing vocab", make(0, 0, 0, 0, 0, "{\"type\":\"BPE\",\"merges\":[]}"), LT_ERR_FORMAT, "vocab", NULL);
    expect("vocab id not a number", make(0, 0, 0, 0, 0, "{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},\"merges\":[]}"),
           LT_ERR_FORMAT, "'a'", NULL);
    expect("merge with unknown token",
           make(0, 0, 0, 0, 0, "{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a zz\"]}"),
           LT_ERR_FORMAT, "merges[0]", "'zz'");
    expect("merge result not in vocab",
           make(0, 0, 0, 0, 0, "{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[[\"a\",\"b\"]]}"),
           LT_ERR_FORMAT, "merges[0]", "not in the vocab");
    expect("merge not 'a b'",
           make(0, 0, 0, 0, 0, "{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b c\"]}"),
           LT_ERR_FORMAT, "merges[0]", NULL);
    expect("unk_token not in vocab",
           make(0, 0, 0, 0, 0, "{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"vocab\":{\"a\":0},\"merges\":[]}"),
           LT_ERR_FORMAT, "<unk>", NULL);

    /* absurd sizes: an id must not size the id tables (was a 32 GB calloc) */
    expect("vocab id 2e9",
           make(0, 0, 0, 0, 0, "{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":2000000000},\"merges\":[]}"),
           LT_ERR_FORMAT, "'b'", "bad id");
    /* post-processor ids: integers inside the vocabulary, suffix ids too (a
     * suffix id out of range used to reach the shards) */
    static const char *TP =
        "{\"type\":\"TemplateProcessing\",\"single\":[%s{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}%s],"
        "\"pair\":[],\"special_tokens\":{\"X\":{\"id\":\"X\",\"ids\":[%s],\"tokens\":[\"X\"]}}}";
    char post[1024], pre_x[128], suf_x[128];
    snprintf(pre_x, sizeof pre_x, "%s,", "{\"SpecialToken\":{\"id\":\"X\",\"type_id\":0}}");
    snprintf(suf_x, sizeof suf_x, ",%.*s", (int)strlen(pre_x) - 1, pre_x);
    snprintf(post, sizeof post, TP, "", suf_x, "999999");
    expect("suffix id out of range", make(0, 0, 0, post, 0, 0), LT_ERR_RANGE, "999999", "post_processor");
    snprintf(post, sizeof post, TP, pre_x, "", "1.5e300");
    expect("prefix id not an integer", make(0, 0, 0, post, 0, 0), LT_ERR_FORMAT, "ids[0]", "'X'");
    snprintf(post, sizeof post, TP, "", suf_x, "-1");
    expect("suffix id negative", make(0, 0, 0, post, 0, 0), LT_ERR_FORMAT, "ids[0]", NULL);
    snprintf(post, sizeof post, TP, "", suf_x, "5");
    expect("suffix id 5 (<s>) is fine", make(0, 0, 0, post, 0, 0), LT_OK, NULL, NULL);

    /* no such file */
    {
        lt_tokenizer *t = NULL;
        lt_err err = {{0}};
        char path[4096];
        snprintf(path, sizeof path, "%s/does-not-exist.json", tmpdir);
        LT_CHECK(lt_tok_load(path, &t, &err) == LT_ERR_IO && t == NULL, "missing file: %s", err.msg);
        LT_CHECK(strstr(err.msg, "does-not-exist.json") != NULL, "missing file message '%s'", err.msg);
    }
    return lt_test_finish("test_tokenizer_errors");
}
