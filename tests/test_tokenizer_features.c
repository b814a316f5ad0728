/* test_tokenizer_features.c -- the tokenizer.json features the four real
 * tokenizers do not use (ByteLevel with add_prefix_space and the GPT-2 regex,
 * legacy "a b" merges with a #version line, TemplateProcessing with BOS and
 * EOS, Metaspace with each prepend_scheme / split, unk and fuse_unk, Split on
 * strings with every behaviour and invert, added tokens with single_word /
 * lstrip / rstrip / normalized, Strip / Fuse / ByteFallback / Metaspace
 * decoders) on synthetic tokenizers that tests/tokenizer_features.py trains
 * with Hugging Face tokenizers, compared with it over a generated corpus. */
#define _POSIX_C_SOURCE 200809L
#include "lt_tok_testutil.h"

int main(void) {
    const char *py = tok_test_python();
    if (!py) return LT_TEST_SKIP;
    char cmd[8192];
    const char *tmp = lt_test_tmpdir("test_tokenizer_features");
    char corpus_path[4096], list_path[4096];
    snprintf(corpus_path, sizeof corpus_path, "%s/corpus.bin", tmp);
    snprintf(list_path, sizeof list_path, "%s/variants.txt", tmp);
    snprintf(cmd, sizeof cmd, "%s %s %s %s --bytes 300000 --seed 99", py, lt_src_path("tools/gen_tokenizer_corpus.py"),
             lt_src_path("tests/fixtures/tokenizer/seed.txt"), corpus_path);
    LT_CHECK(lt_test_system(cmd) == 0, "corpus generator failed: %s", cmd);
    snprintf(cmd, sizeof cmd, "%s %s %s %s > %s", py, lt_src_path("tests/tokenizer_features.py"),
             lt_src_path("tests/fixtures/tokenizer/seed.txt"), tmp, list_path);
    LT_CHECK(lt_test_system(cmd) == 0, "variant generator failed: %s", cmd);
    corpus c;
    if (!read_corpus(corpus_path, &c)) {
        LT_CHECK(0, "cannot read corpus %s", corpus_path);
        return lt_test_finish("test_tokenizer_features");
    }
    FILE *f = fopen(list_path, "r");
    LT_CHECK(f != NULL, "no variant list");
    if (!f) return lt_test_finish("test_tokenizer_features");
    char line[4096];
    int n = 0, ran = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!*line) continue;
        const char *base = strrchr(line, '/');
        base = base ? base + 1 : line;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(strcspn(base, ".")), base);
        n++;
        ran += tok_compare(name, line, &c, corpus_path, tmp, py);
    }
    fclose(f);
    LT_CHECK(n >= 10 && ran == n, "%d of %d variants loaded", ran, n);
    corpus_free(&c);
    return lt_test_finish("test_tokenizer_features");
}
