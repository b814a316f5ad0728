/* lt_cli.c -- option parsing helpers shared by the subcommands. */
#include "lt_cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int lt_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out) {
    char *end = NULL;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "%s: %s expects an integer in [%ld, %ld], got '%s'\n", cmd, opt, lo, hi, s ? s : "(nothing)");
        return 0;
    }
    *out = v;
    return 1;
}

int lt_parse_double(const char *cmd, const char *opt, const char *s, double *out) {
    char *end = NULL;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !isfinite(v)) {
        fprintf(stderr, "%s: %s expects a number, got '%s'\n", cmd, opt, s ? s : "(nothing)");
        return 0;
    }
    *out = v;
    return 1;
}
