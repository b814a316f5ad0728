/*
 * test_json.c -- core/lt_json: the UTF-8 validator (RFC 3629, the decoder
 * Python's bytes.decode("utf-8") strictly applies: overlong forms, surrogates,
 * code points above U+10FFFF and cut sequences are invalid) and
 * lt_json_parse_exact's refusals (not UTF-8, raw NUL, \u0000, trailing text)
 * with the byte offset in the message.
 */
#include <string.h>

#include "lt_json.h"
#include "lt_test.h"

static void check_utf8(const char *s, size_t n, size_t want, const char *what) {
    size_t got = lt_utf8_invalid_at(s, n);
    LT_CHECK(got == want, "%s: invalid at %zu, expected %zu", what, got, want);
}

static void test_utf8(void) {
    check_utf8("", 0, 0, "empty");
    check_utf8("abc", 3, 3, "ASCII");
    check_utf8("caf\xc3\xa9", 5, 5, "2-byte");
    check_utf8("\xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf", 13, 13, "3-, 4-byte, U+10FFFF");
    check_utf8("\xed\x9f\xbf\xee\x80\x80", 6, 6, "U+D7FF, U+E000 around the surrogates");
    check_utf8("caf\xe9", 4, 3, "Latin-1 e acute");
    check_utf8("caf\xe9 x", 6, 3, "Latin-1 before ASCII");
    check_utf8("a\xc0\xaf", 3, 1, "overlong 2-byte (C0)");
    check_utf8("a\xc1\xbf", 3, 1, "overlong 2-byte (C1)");
    check_utf8("\xe0\x80\xaf", 3, 0, "overlong 3-byte");
    check_utf8("\xf0\x80\x80\xaf", 4, 0, "overlong 4-byte");
    check_utf8("x\xed\xa0\x80", 4, 1, "high surrogate D800");
    check_utf8("\xed\xbf\xbf", 3, 0, "low surrogate DFFF");
    check_utf8("\xf4\x90\x80\x80", 4, 0, "U+110000");
    check_utf8("\xf5\x80\x80\x80", 4, 0, "F5 lead byte");
    check_utf8("ab\xe2\x82", 4, 2, "cut 3-byte sequence at the end");
    check_utf8("\xe2\x82x", 3, 0, "3-byte sequence with an ASCII third byte");
    check_utf8("\x80", 1, 0, "lone continuation byte");
    check_utf8("\xff", 1, 0, "FF");
}

static void expect_refused(const char *s, size_t n, const char *want, const char *what) {
    char why[200] = "";
    cJSON *j = lt_json_parse_exact(s, n, why, sizeof why);
    LT_CHECK(!j, "%s: accepted", what);
    LT_CHECK(strstr(why, want) != NULL, "%s: message '%s' lacks '%s'", what, why, want);
    cJSON_Delete(j);
}

static void test_parse_exact(void) {
    const char ok[] = "{\"text\": \"caf\xc3\xa9\"}";
    cJSON *j = lt_json_parse_exact(ok, sizeof ok - 1, NULL, 0);
    LT_CHECK(j && !strcmp(cJSON_GetObjectItem(j, "text")->valuestring, "caf\xc3\xa9"), "valid UTF-8 record refused");
    cJSON_Delete(j);
    const char latin1[] = "{\"text\": \"caf\xe9\"}";
    expect_refused(latin1, sizeof latin1 - 1, "not UTF-8 at byte offset 13 (byte 0xE9)", "Latin-1 record");
    const char nul[] = "{\"text\": \"ab\0cd\"}";
    expect_refused(nul, sizeof nul - 1, "raw NUL byte (0x00) at byte offset 12", "raw NUL in a string");
    const char esc[] = "{\"text\": \"ab\\u0000cd\"}";
    expect_refused(esc, sizeof esc - 1, "\\u0000", "escaped NUL");
    const char two[] = "{\"a\": 1} {\"a\": 2}";
    expect_refused(two, sizeof two - 1, "text after the JSON value", "two values");
}

static void test_int64(void) {
    const char *good[] = {"0", "7", "-12", "9007199254740991", "1e3"};
    const int64_t want[] = {0, 7, -12, 9007199254740991LL, 1000};
    for (int i = 0; i < 5; i++) {
        cJSON *v = cJSON_Parse(good[i]);
        int64_t x = -99;
        LT_CHECK(lt_json_int64(v, &x) && x == want[i], "%s: %lld", good[i], (long long)x);
        cJSON_Delete(v);
    }
    const char *bad[] = {"1e300", "-1e300", "1e999", "2.5", "9007199254740992", "9223372036854775807",
                         "9223372036854775808", "\"5\"", "true", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *v = cJSON_Parse(bad[i]);
        int64_t x = -99;
        LT_CHECK(!lt_json_int64(v, &x) && x == -99, "%s accepted as %lld", bad[i], (long long)x);
        cJSON_Delete(v);
    }
    LT_CHECK(!lt_json_int64(NULL, NULL), "NULL accepted");
}

int main(void) {
    test_int64();
    test_utf8();
    test_parse_exact();
    return lt_test_finish("test_json");
}
