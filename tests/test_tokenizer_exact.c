/* test_tokenizer_exact.c -- lt_tokenizer against Hugging Face tokenizers
 * (the version pinned in tools/requirements-test.txt) on the four real tokenizers in shared/tokenizers/ over a >= 2 MB
 * generated corpus (tools/gen_tokenizer_corpus.py): ids with and without
 * special tokens, token start offsets, decode (both skip_special settings)
 * on a sample, vocab size, post-processor ids, sha256, id <-> token.
 * The comparison is done by tests/tokenizer_reference.py ($LT_PYTHON).
 * Offsets are also checked here: inside the record and non-decreasing. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_test.h"
#include "lt_tokenizer.h"

static const char *NAMES[] = {"llama3_1", "qwen3", "gemma3", "llama2"};

#include "lt_tok_testutil.h"

int main(void) {
    const char *py = tok_test_python();
    if (!py) return LT_TEST_SKIP;
    /* The real tokenizers live in ../shared (CI has it; a user's clone and the
     * GPU machine do not): skip only when the whole folder is absent; a folder
     * that lacks one of the four tokenizers fails below. */
    if (!lt_is_dir(lt_shared_path("tokenizers"))) {
        fprintf(stderr, "SKIP: no %s\n", lt_shared_path("tokenizers"));
        return LT_TEST_SKIP;
    }
    char cmd[8192];
    const char *tmp = lt_test_tmpdir("test_tokenizer_exact");
    char corpus_path[4096];
    snprintf(corpus_path, sizeof corpus_path, "%s/corpus.bin", tmp);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", py, lt_src_path("tools/gen_tokenizer_corpus.py"),
             lt_src_path("tests/fixtures/tokenizer/seed.txt"), corpus_path);
    LT_CHECK(lt_test_system(cmd) == 0, "corpus generator failed: %s", cmd);
    corpus c;
    if (!read_corpus(corpus_path, &c)) {
        LT_CHECK(0, "cannot read corpus %s", corpus_path);
        return lt_test_finish("test_tokenizer_exact");
    }
    printf("corpus: %zu records, %zu bytes\n", c.n, c.bytes);
    LT_CHECK(c.bytes >= 2000000, "corpus too small: %zu bytes", c.bytes);

    int ran = 0;
    for (int ti = 0; ti < 4; ti++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", NAMES[ti]);
        const char *path = lt_shared_path(rel);
        if (!lt_file_exists(path)) {
            fprintf(stderr, "missing %s\n", path);
            LT_CHECK(0, "tokenizer file %s is absent", path);
            continue;
        }
        if (tok_compare(NAMES[ti], path, &c, corpus_path, tmp, py)) ran++;
    }
    LT_CHECK(ran == 4, "only %d of 4 tokenizers ran", ran);
    corpus_free(&c);
    return lt_test_finish("test_tokenizer_exact");
}
