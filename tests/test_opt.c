/*
 * test_opt.c -- core's option table parser (lt_opt.h), on a table with every
 * kind: defaults, "--name value" and "--name=value", flags, lists up to the
 * next option, positional arguments (count limits), required options, ranges
 * with open ends, choices, custom values, the typo suggestion, --help, a JSON
 * object of options and the options written back as JSON. (train's own rules:
 * test_train_opts.c; each command's: the test_cli_*.sh scripts.)
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_opt.h"
#include "lt_test.h"

typedef struct {
    char *name, *mode, **files, **pos;
    int n_files, n_pos, flag, help;
    long count;
    double rate;
    unsigned mask; /* custom: "a,b" -> bits */
    unsigned char given[LT_OPT_MAX];
} topts;

static lt_status parse_mask(const char *v, void *field, lt_err *err) {
    unsigned m = 0;
    for (const char *p = v; *p; p++) {
        if (*p == ',') continue;
        if (*p < 'a' || *p > 'h') return lt_fail(err, LT_ERR_INVALID, "'%c' is not a letter from a to h", *p);
        m |= 1u << (*p - 'a');
    }
    *(unsigned *)field = m;
    return LT_OK;
}
static void format_mask(const void *field, char *buf, size_t cap) {
    size_t k = 0;
    for (int i = 0; i < 8 && k + 2 < cap; i++)
        if (*(const unsigned *)field & (1u << i)) {
            if (k) buf[k++] = ',';
            buf[k++] = (char)('a' + i);
        }
    buf[k] = 0;
}

#define F(x) offsetof(topts, x)
static const char *const MODES[] = {"fast", "exact", NULL};
static const lt_optdef OPTS[] = {
    {.name = "name", .k = LT_OPT_STR, .off = F(name), .meta = "NAME", .required = 1, .help = "a name"},
    {.name = "Numbers", .k = LT_OPT_SECTION},
    {.name = "count", .k = LT_OPT_LONG, .off = F(count), .def = "3", .meta = "N", .lo = 1, .hi = 10, .help = "count"},
    {.name = "rate", .k = LT_OPT_DBL, .off = F(rate), .def = "0.5", .meta = "R", .lo = 0, .hi = 1, .lo_open = 1,
     .help = "rate"},
    {.name = "Others", .k = LT_OPT_SECTION},
    {.name = "mode", .k = LT_OPT_CHOICE, .off = F(mode), .def = "fast", .meta = "M", .choices = MODES, .help = "mode"},
    {.name = "files", .k = LT_OPT_LIST, .off = F(files), .off_n = F(n_files), .meta = "FILE...", .help = "files"},
    {.name = "flag", .k = LT_OPT_FLAG, .off = F(flag), .help = "a flag"},
    {.name = "mask", .k = LT_OPT_CUSTOM, .off = F(mask), .def = "a,c", .meta = "LIST", .help = "letters",
     .parse = parse_mask, .format = format_mask},
};
static const char *const ALIAS[][2] = {{"learning-rate", "rate"}};
static const lt_optset SET = {
    .cmd = "demo",
    .usage = "usage: luxtrain demo ARG [ARG] --name NAME [options]\n",
    .defs = OPTS,
    .n = sizeof OPTS / sizeof OPTS[0],
    .alias = ALIAS,
    .n_alias = 1,
    .off_given = F(given),
    .off_help = F(help),
    .off_pos = F(pos),
    .off_npos = F(n_pos),
    .pos_min = 1,
    .pos_max = 2,
    .pos_meta = "ARG",
};

#define ARGV(...) ((char *[]){"demo", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"demo", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(o, e, ...) lt_opts_parse(&SET, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (o), (e))

/* parsing fails, and the message holds `want` */
#define REJECT(want, ...)                                                                                   \
    do {                                                                                                    \
        topts r_ = {0};                                                                                     \
        lt_err e_ = {{0}};                                                                                  \
        lt_status st_ = PARSE(&r_, &e_, __VA_ARGS__);                                                       \
        LT_CHECK(st_ != LT_OK && strstr(e_.msg, want), "expected an error with \"%s\", got %s: %s", want,     \
                 lt_status_name(st_), e_.msg);                                                              \
        lt_opts_free(&SET, &r_);                                                                            \
    } while (0)

int main(void) {
    lt_err e = {{0}};
    topts o = {0};
    /* defaults, and every kind from the command line */
    LT_CHECK_OK(PARSE(&o, &e, "in.txt", "--name", "x"), &e);
    LT_CHECK(o.count == 3 && o.rate == 0.5 && !strcmp(o.mode, "fast") && o.mask == 5u && !o.flag && !o.n_files,
             "defaults: count %ld rate %g mode %s mask %u", o.count, o.rate, o.mode, o.mask);
    LT_CHECK(o.n_pos == 1 && !strcmp(o.pos[0], "in.txt"), "one positional argument");
    LT_CHECK(lt_opts_given(&SET, &o, "name") && !lt_opts_given(&SET, &o, "count"), "given: only --name");
    lt_opts_free(&SET, &o);
    memset(&o, 0, sizeof o);
    LT_CHECK_OK(PARSE(&o, &e, "--count=7", "a", "--rate", "1", "--files", "f1", "-", "f3", "--flag", "--mode",
                      "exact", "b", "--mask", "b,h", "--name=y"),
                &e);
    LT_CHECK(o.count == 7 && o.rate == 1 && o.n_files == 3 && !strcmp(o.files[1], "-") && o.flag &&
                 !strcmp(o.mode, "exact") && o.mask == (2u | 128u) && !strcmp(o.name, "y"),
             "values: count %ld rate %g files %d flag %d mode %s mask %u", o.count, o.rate, o.n_files, o.flag,
             o.mode, o.mask);
    LT_CHECK(o.n_pos == 2 && !strcmp(o.pos[0], "a") && !strcmp(o.pos[1], "b"), "two positional arguments");
    LT_CHECK(lt_opts_given(&SET, &o, "mask") && lt_opts_given(&SET, &o, "files"), "given: mask, files");
    /* written back as JSON and read again: the same options */
    char *js = lt_opts_to_json(&SET, &o, 0, 0);
    LT_CHECK(js && strstr(js, "\"mask\":\"b,h\"") && strstr(js, "\"files\":[\"f1\",\"-\",\"f3\"]") &&
                 strstr(js, "\"rate\":1") && strstr(js, "\"flag\":true"),
             "to_json: %s", js ? js : "(null)");
    topts p = {0};
    LT_CHECK_OK(lt_opts_defaults(&SET, &p, &e), &e);
    LT_CHECK_OK(lt_opts_apply_json(&SET, &p, js, "inline", &e), &e);
    char *js2 = lt_opts_to_json(&SET, &p, 0, 0);
    LT_CHECK(js && js2 && !strcmp(js, js2), "JSON round trip:\n%s\n%s", js, js2 ? js2 : "");
    free(js);
    free(js2);
    lt_opts_free(&SET, &p);
    lt_opts_free(&SET, &o);

    /* JSON: names with '_' or '-', lists as arrays, custom values as arrays, wrong types named */
    memset(&p, 0, sizeof p);
    LT_CHECK_OK(lt_opts_defaults(&SET, &p, &e), &e);
    LT_CHECK_OK(lt_opts_apply_json(&SET, &p, "{\"count\": 9, \"mask\": [\"d\", \"e\"], \"files\": \"one\"}", "cfg",
                                   &e),
                &e);
    LT_CHECK(p.count == 9 && p.mask == (8u | 16u) && p.n_files == 1, "JSON values");
    LT_CHECK(lt_opts_apply_json(&SET, &p, "{\"count\": \"9\"}", "cfg", &e) != LT_OK &&
                 strstr(e.msg, "cfg: \"count\" expects an integer in [1, 10]"),
             "a number as a string: %s", e.msg);
    LT_CHECK(lt_opts_apply_json(&SET, &p, "{\"cuont\": 2}", "cfg", &e) != LT_OK &&
                 strstr(e.msg, "unknown option \"cuont\"; did you mean \"count\"?"),
             "unknown JSON key: %s", e.msg);
    LT_CHECK(lt_opts_apply_json(&SET, &p, "[1]", "cfg", &e) != LT_OK && strstr(e.msg, "a JSON object"),
             "not an object: %s", e.msg);
    lt_opts_free(&SET, &p);

    /* --help anywhere: nothing else is checked */
    memset(&o, 0, sizeof o);
    LT_CHECK_OK(PARSE(&o, &e, "--count", "99", "--help"), &e);
    LT_CHECK(o.help == 1, "--help seen");
    lt_opts_free(&SET, &o);

    /* bad input, named */
    REJECT("--name NAME is required", "in.txt");
    REJECT("needs ARG", "--name", "x");
    REJECT("unexpected argument 'c' (one ARG only)", "a", "b", "c", "--name", "x");
    REJECT("--count expects an integer in [1, 10], got '11'", "a", "--name", "x", "--count", "11");
    REJECT("--count expects an integer in [1, 10], got '2.5'", "a", "--name", "x", "--count", "2.5");
    REJECT("--rate expects a number in (0, 1], got '0'", "a", "--name", "x", "--rate", "0");
    REJECT("--rate expects a number in (0, 1], got 'nan'", "a", "--name", "x", "--rate", "nan");
    REJECT("--mode expects one of fast, exact, got 'slow'", "a", "--name", "x", "--mode", "slow");
    REJECT("--mask: 'z' is not a letter from a to h", "a", "--name", "x", "--mask", "a,z");
    REJECT("--flag expects true or false, got 'maybe'", "a", "--name", "x", "--flag=maybe");
    REJECT("--files needs a value", "a", "--name", "x", "--files", "--flag");
    REJECT("--count needs a value (N)", "a", "--name", "x", "--count");
    REJECT("unknown option '--cuont'; did you mean '--count'?", "a", "--name", "x", "--cuont", "2");
    REJECT("unknown option '--learning-rate'; did you mean '--rate'?", "a", "--name", "x", "--learning-rate", "2");
    REJECT("unknown option '--na_me'", "a", "--na_me", "x");
    REJECT("unknown option '--frobnicate'", "a", "--name", "x", "--frobnicate");

    /* --help text: usage, sections, defaults, choices, required */
    FILE *f = tmpfile();
    lt_opts_help(&SET, f);
    rewind(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    LT_CHECK(!strncmp(buf, "usage: luxtrain demo", 20) && strstr(buf, "\nNumbers:\n") &&
                 strstr(buf, "--count N") && strstr(buf, "[default: 3]") && strstr(buf, "(fast, exact)") &&
                 strstr(buf, "a name (required)") && strstr(buf, "--help"),
             "help text:\n%s", buf);
    return lt_test_finish("test_opt");
}
