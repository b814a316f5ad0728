/* lt_opt.c -- option parsing helpers shared by the commands (lt_opt.h). */
#include "lt_opt.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* the option's name: no leading dashes, nothing from '=' on */
static const char *opt_name(const char *s, size_t *len) {
    while (*s == '-') s++;
    const char *eq = strchr(s, '=');
    *len = eq ? (size_t)(eq - s) : strlen(s);
    return s;
}

/* optimal string alignment distance: insertions, deletions, substitutions and
 * swaps of two neighbouring letters cost 1 each */
static size_t edit_distance(const char *a, size_t na, const char *b, size_t nb) {
    enum { CAP = 64 };
    size_t d[3][CAP + 1]; /* rows i-2, i-1, i */
    if (nb > CAP || na > 4 * CAP) return (size_t)-1;
    for (size_t j = 0; j <= nb; j++) d[0][j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t *prev2 = d[(i + 1) % 3], *prev = d[(i - 1) % 3], *cur = d[i % 3]; /* (i + 1) % 3 == (i - 2) % 3 */
        cur[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t best = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < best) best = prev[j] + 1;
            if (cur[j - 1] + 1 < best) best = cur[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && prev2[j - 2] + 1 < best)
                best = prev2[j - 2] + 1;
            cur[j] = best;
        }
    }
    return d[na % 3][nb];
}

void lt_nearest_offer_alias(lt_nearest *n, const char *given, const char *compared, const char *suggested) {
    size_t ng, nc;
    const char *g = opt_name(given, &ng), *c = opt_name(compared, &nc);
    size_t d = edit_distance(g, ng, c, nc);
    if (!n->best || d < n->dist) {
        n->best = suggested;
        n->dist = d;
        n->len = nc;
    }
}

void lt_nearest_offer(lt_nearest *n, const char *given, const char *candidate) {
    lt_nearest_offer_alias(n, given, candidate, candidate);
}

const char *lt_nearest_best(const lt_nearest *n, const char *given) {
    if (!n->best) return NULL;
    size_t ng;
    opt_name(given, &ng);
    size_t longer = ng > n->len ? ng : n->len;
    /* a typo, not another word: at most a third of the letters, and at most 3
     * (an alias typed exactly, distance 0, is suggested too) */
    return n->dist <= 3 && 3 * n->dist <= longer && (n->dist > 0 || strcmp(n->best, given)) ? n->best : NULL;
}

int lt_opt_unknown_option(const char *cmd, const char *arg, const char *const *valid) {
    lt_nearest n = {0};
    for (size_t i = 0; valid && valid[i]; i++) lt_nearest_offer(&n, arg, valid[i]);
    const char *near = lt_nearest_best(&n, arg);
    if (near)
        fprintf(stderr, "%s: unknown option '%s'; did you mean '%s'?\n", cmd, arg, near);
    else
        fprintf(stderr, "%s: unknown option '%s'\n", cmd, arg);
    fprintf(stderr, "(luxtrain %s --help lists the options)\n", cmd);
    return 2;
}
