/* test_tokenizer_unicode.c -- data/lt_unicode.c against Hugging Face
 * tokenizers (the version pinned in tools/requirements-test.txt) on every code
 * point: the classes its regexes use (\p{L}, \p{N}, \s in the pre-tokenizer;
 * \w and \s in the added-token single_word / lstrip / rstrip tests) and its
 * NFC normalizer (combining classes, decomposition, composition).
 * tests/tokenizer_unicode.py ($LT_PYTHON) writes what tokenizers does. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_base.h"
/* (only tok_test_python is used from the shared tokenizer-test helpers) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "lt_tok_testutil.h"
#pragma GCC diagnostic pop
#include "lt_unicode.h"

static void show_line(const char *what, const char *s, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t q = 0; q < n;) fprintf(stderr, " U+%04X", (unsigned)lt_utf8_next(s, &q));
    fputc('\n', stderr);
}

int main(void) {
    const char *py = tok_test_python();
    if (!py) return LT_TEST_SKIP;
    const char *tmp = lt_test_tmpdir("test_tokenizer_unicode");
    char cmd[8192], path[4096];
    snprintf(cmd, sizeof cmd, "%s %s %s", py, lt_src_path("tests/tokenizer_unicode.py"), tmp);
    LT_CHECK(lt_test_system(cmd) == 0, "reference generator failed: %s", cmd);
    printf("lt_unicode tables: Unicode %s\n", lt_uni_version_str());

    /* classes */
    char *cls = NULL;
    size_t ncls = 0;
    lt_err err;
    snprintf(path, sizeof path, "%s/classes.bin", tmp);
    LT_CHECK_OK(lt_read_file(path, &cls, &ncls, &err), &err);
    if (!cls || ncls != 0x110000) {
        LT_CHECK(0, "%s: %zu bytes, expected %d", path, ncls, 0x110000);
        free(cls);
        return lt_test_finish("test_tokenizer_unicode");
    }
    static const struct {
        unsigned ref_bit, flag;
        const char *name;
    } classes[] = {{1, LT_UNI_L, "\\p{L} (pre-tokenizer regex)"},
                   {2, LT_UNI_N, "\\p{N} (pre-tokenizer regex)"},
                   {4, LT_UNI_WS, "\\s (pre-tokenizer regex)"},
                   {8, LT_UNI_W, "\\w (added token single_word)"},
                   {16, LT_UNI_WS, "\\s (added token rstrip)"}};
    for (size_t k = 0; k < sizeof classes / sizeof classes[0]; k++) {
        size_t bad = 0, members = 0;
        for (uint32_t cp = 0; cp < 0x110000; cp++) {
            if (cp >= 0xD800 && cp < 0xE000) continue;
            int want = ((unsigned char)cls[cp] & classes[k].ref_bit) != 0;
            int got = (lt_uni_flags(cp) & classes[k].flag) != 0;
            members += (size_t)want;
            if (want != got && ++bad <= 5)
                fprintf(stderr, "%s: U+%04X: ours %d, tokenizers %d\n", classes[k].name, (unsigned)cp, got, want);
        }
        printf("%-32s %7zu code points in the class, %zu differ\n", classes[k].name, members, bad);
        LT_CHECK(bad == 0, "%s: %zu code points differ from tokenizers", classes[k].name, bad);
    }
    free(cls);

    /* NFC, line by line */
    char *in = NULL, *want = NULL;
    size_t nin = 0, nwant = 0;
    snprintf(path, sizeof path, "%s/nfc_in.txt", tmp);
    LT_CHECK_OK(lt_read_file(path, &in, &nin, &err), &err);
    snprintf(path, sizeof path, "%s/nfc_out.txt", tmp);
    LT_CHECK_OK(lt_read_file(path, &want, &nwant, &err), &err);
    char *got = malloc(3 * nin + 16);
    int64_t *goff = malloc((3 * nin + 16) * sizeof *goff);
    if (in && want && got && goff) {
        size_t ngot = lt_uni_nfc(in, nin, NULL, got, goff);
        size_t lines = 0, bad = 0, a = 0, b = 0, i = 0;
        while (a <= ngot && b <= nwant) {
            const char *ea = memchr(got + a, '\n', ngot - a), *eb = memchr(want + b, '\n', nwant - b);
            const char *ei = memchr(in + i, '\n', nin - i);
            size_t la = ea ? (size_t)(ea - got) - a : ngot - a, lb = eb ? (size_t)(eb - want) - b : nwant - b;
            size_t li = ei ? (size_t)(ei - in) - i : nin - i;
            lines++;
            if ((la != lb || memcmp(got + a, want + b, la)) && ++bad <= 5) {
                fprintf(stderr, "NFC line %zu differs\n", lines);
                show_line("input     ", in + i, li);
                show_line("ours      ", got + a, la);
                show_line("tokenizers", want + b, lb);
            }
            if (!ea || !eb) {
                LT_CHECK(!ea && !eb, "NFC: line counts differ after line %zu", lines);
                break;
            }
            a += la + 1;
            b += lb + 1;
            i += li + 1;
        }
        printf("NFC: %zu probe lines, %zu differ\n", lines, bad);
        LT_CHECK(bad == 0, "NFC: %zu probe lines differ from tokenizers", bad);
    } else
        LT_CHECK(0, "NFC probe files missing or out of memory");
    free(in);
    free(want);
    free(got);
    free(goff);
    return lt_test_finish("test_tokenizer_unicode");
}
