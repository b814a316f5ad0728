/*
 * lt_json.h -- small helpers over cJSON for the modules that read JSON files
 * and JSONL records: a whole file parsed with a message naming it, one JSONL
 * record parsed strictly, type names for error messages, and a number written
 * so that it reads back exactly.
 *
 * Strict record parsing: cJSON_Parse / cJSON_ParseWithLength stop after the
 * first value and ignore what follows, so `{"a": 1} {"a": 2}` on one line
 * would lose the second record without a word; and a string holding \u0000
 * is cut there (cJSON strings are NUL-terminated). lt_json_parse_exact
 * refuses both, and text that is not UTF-8 (RFC 8259 section 8.1: a Latin-1
 * byte would otherwise reach the tokenizer as U+FFFD) or holds a raw NUL byte
 * (cJSON would end the string there).
 */
#ifndef LT_JSON_H
#define LT_JSON_H

#include <cjson/cJSON.h>

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "a number", "a string", "an array", "an object", "a boolean", "null";
 * "absent" for NULL. */
const char *lt_json_kind(const cJSON *v);

/* Offset of the first byte of s[0..n) that is not part of valid UTF-8
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), or n
 * when all of it is valid. */
size_t lt_utf8_invalid_at(const char *s, size_t n);

/* Strict RFC 8259 syntax check of s[0..n), as serde_json (the parser of the
 * reference `safetensors` crate) applies it, where cJSON is lenient: valid
 * UTF-8; whitespace only space, tab, LF, CR (cJSON skips any byte <= 0x20);
 * no raw control character (< 0x20) inside a string; escapes only \" \\ \/
 * \b \f \n \r \t \uXXXX; numbers -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
 * (no leading zeros, no "1.", no "+1"); nesting at most 128 deep; one value,
 * then only whitespace. With integers = 1 a number whose value is an integer
 * must also be written as one (8.0, 8e0, 1.5e1 and -0 are refused: serde_json
 * reads them as floats, which an integer field rejects); other numbers pass
 * (their consumers check range and type). Returns 1, or 0 with the reason
 * and byte offset in why. */
int lt_json_check_strict(const char *s, size_t n, int integers, char *why, size_t cap);

/* Parse exactly one JSON value from s[0..n): valid UTF-8 without NUL bytes,
 * only whitespace may follow the value, and no string may hold \u0000. Returns NULL on failure and writes the
 * reason into why (cap bytes; why may be NULL), e.g. "malformed JSON (near
 * byte 12)" or "text after the JSON value (at byte 18)". */
cJSON *lt_json_parse_exact(const char *s, size_t n, char *why, size_t cap);

/* An integer from JSON: v is a number with an integral value of magnitude
 * below 2^53 (so the double cJSON holds is the integer written; 1e300, inf,
 * 8.5, 2^53 + 1 and 2^63 are refused and nothing is cast out of range). 1 and *out set,
 * or 0. */
int lt_json_int64(const cJSON *v, int64_t *out);

/* Read a whole file and parse it with lt_json_parse_exact; the message names
 * the file. *out is the caller's to cJSON_Delete. */
lt_status lt_json_load_file(const char *path, cJSON **out, lt_err *err);

/* A JSON number that reads back as exactly x: the shortest of %.15g..%.17g
 * (cJSON's own printing may drop the last digits). A raw item; NULL if out
 * of memory. */
cJSON *lt_json_exact_number(double x);

#ifdef __cplusplus
}
#endif
#endif
