/* lt_opt.c -- the option tables' parser and the number helpers (lt_opt.h). */
#define _POSIX_C_SOURCE 200809L
#include "lt_opt.h"
#include "lt_json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
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

/* ---- option tables ---- */

#define FIELD(o, d, T) ((T *)((char *)(o) + (d)->off))
#define CFIELD(o, d, T) ((const T *)((const char *)(o) + (d)->off))
#define COUNT(o, d) ((int *)((char *)(o) + (d)->off_n))

static unsigned char *given_of(const lt_optset *s, void *o) { return (unsigned char *)o + s->off_given; }

static const lt_optdef *find_n(const lt_optset *s, const char *name, size_t n) {
    for (size_t i = 0; i < s->n; i++) {
        const lt_optdef *d = &s->defs[i];
        if (d->k == LT_OPT_SECTION || strlen(d->name) != n) continue;
        size_t j = 0;
        for (; j < n; j++) {
            char c = name[j] == '_' ? '-' : name[j];
            if (c != d->name[j]) break;
        }
        if (j == n) return d;
    }
    return NULL;
}

const lt_optdef *lt_opts_find(const lt_optset *s, const char *name) { return find_n(s, name, strlen(name)); }

int lt_opts_given(const lt_optset *s, const void *o, const char *name) {
    const lt_optdef *d = lt_opts_find(s, name);
    return d && s->off_given ? ((const unsigned char *)o + s->off_given)[d - s->defs] : 0;
}

/* the option closest to an unknown one ("--lr"), when it looks like a typo of it */
static const char *nearest(const lt_optset *s, const char *given, char *buf, size_t cap) {
    lt_nearest n = {0};
    for (size_t i = 0; i < s->n; i++)
        if (s->defs[i].k != LT_OPT_SECTION) lt_nearest_offer(&n, given, s->defs[i].name);
    lt_nearest_offer(&n, given, "help");
    for (size_t i = 0; i < s->n_alias; i++) lt_nearest_offer_alias(&n, given, s->alias[i][0], s->alias[i][1]);
    const char *best = lt_nearest_best(&n, given);
    if (!best) return NULL;
    snprintf(buf, cap, "--%s", best);
    return buf;
}

static void free_list(char **l, int n) {
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

static void range_text(const lt_optdef *d, char *buf, size_t cap, int integer) {
    const char *lb = d->lo_open ? "(" : "[", *rb = d->hi_open ? ")" : "]";
    if (d->hi >= LT_OPT_BIG)
        snprintf(buf, cap, "%s %s %.15g", integer ? "an integer" : "a number", d->lo_open ? ">" : ">=", d->lo);
    else
        snprintf(buf, cap, "%s in %s%.15g, %.15g%s", integer ? "an integer" : "a number", lb, d->lo, d->hi, rb);
}

static lt_status set_str(char **field, const char *v, const char *src, lt_err *err) {
    char *s = strdup(v);
    if (!s) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
    free(*field);
    *field = s;
    return LT_OK;
}

/* Set an option from text; `src` names where it came from ("--lr", "run.json: \"lr\""). */
static lt_status set_text(void *o, const lt_optdef *d, const char *v, const char *src, lt_err *err) {
    char want[96];
    switch (d->k) {
    case LT_OPT_STR: return set_str(FIELD(o, d, char *), v, src, err);
    case LT_OPT_CHOICE: {
        char list[256] = "";
        size_t used = 0;
        for (size_t i = 0; d->choices && d->choices[i]; i++) {
            if (!strcmp(v, d->choices[i])) return set_str(FIELD(o, d, char *), v, src, err);
            int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", d->choices[i]);
            if (w > 0 && (size_t)w < sizeof list - used) used += (size_t)w;
        }
        return lt_fail(err, LT_ERR_INVALID, "%s expects one of %s, got '%s'", src, list, v);
    }
    case LT_OPT_LONG: {
        char *end = NULL;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        range_text(d, want, sizeof want, 1);
        if (!*v || *end || errno || (double)x < d->lo || (double)x > d->hi || (d->lo_open && (double)x == d->lo) ||
            (d->hi_open && (double)x == d->hi) || x < LONG_MIN || x > LONG_MAX)
            return lt_fail(err, LT_ERR_INVALID, "%s expects %s, got '%s'", src, want, v);
        *FIELD(o, d, long) = (long)x;
        return LT_OK;
    }
    case LT_OPT_DBL: {
        char *end = NULL;
        errno = 0;
        double x = strtod(v, &end);
        range_text(d, want, sizeof want, 0);
        if (!*v || *end || errno || !isfinite(x) || x < d->lo || x > d->hi || (d->lo_open && x == d->lo) ||
            (d->hi_open && x == d->hi))
            return lt_fail(err, LT_ERR_INVALID, "%s expects %s, got '%s'", src, want, v);
        *FIELD(o, d, double) = x;
        return LT_OK;
    }
    case LT_OPT_FLAG:
        if (!strcmp(v, "true") || !strcmp(v, "1")) *FIELD(o, d, int) = 1;
        else if (!strcmp(v, "false") || !strcmp(v, "0")) *FIELD(o, d, int) = 0;
        else return lt_fail(err, LT_ERR_INVALID, "%s expects true or false, got '%s'", src, v);
        return LT_OK;
    case LT_OPT_CUSTOM: {
        lt_status st = d->parse(v, FIELD(o, d, char), err);
        return st == LT_OK ? st : lt_wrap(err, st, "%s", src);
    }
    case LT_OPT_LIST: {
        /* a single value (a JSON string, or --name=value) */
        char **l = malloc(sizeof *l);
        if (!l || !(l[0] = strdup(v))) {
            free(l);
            return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
        }
        free_list(*FIELD(o, d, char **), *COUNT(o, d));
        *FIELD(o, d, char **) = l;
        *COUNT(o, d) = 1;
        return LT_OK;
    }
    case LT_OPT_SECTION: break;
    }
    return LT_OK;
}

static lt_status set_list(void *o, const lt_optdef *d, char *const *vals, int n, const char *src, lt_err *err) {
    char **l = calloc((size_t)n + 1, sizeof *l);
    if (!l) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
    for (int i = 0; i < n; i++) {
        if (!vals[i][0]) {
            free_list(l, n);
            return lt_fail(err, LT_ERR_INVALID, "%s: empty value", src);
        }
        if (!(l[i] = strdup(vals[i]))) {
            free_list(l, n);
            return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
        }
    }
    free_list(*FIELD(o, d, char **), *COUNT(o, d));
    *FIELD(o, d, char **) = l;
    *COUNT(o, d) = n;
    return LT_OK;
}

void lt_opts_free(const lt_optset *s, void *o) {
    if (!o) return;
    for (size_t i = 0; i < s->n; i++) {
        const lt_optdef *d = &s->defs[i];
        if (d->k == LT_OPT_STR || d->k == LT_OPT_CHOICE) {
            free(*FIELD(o, d, char *));
            *FIELD(o, d, char *) = NULL;
        } else if (d->k == LT_OPT_LIST) {
            free_list(*FIELD(o, d, char **), *COUNT(o, d));
            *FIELD(o, d, char **) = NULL;
            *COUNT(o, d) = 0;
        }
    }
    if (s->pos_max > 0) {
        free_list(*(char ***)((char *)o + s->off_pos), *(int *)((char *)o + s->off_npos));
        *(char ***)((char *)o + s->off_pos) = NULL;
        *(int *)((char *)o + s->off_npos) = 0;
    }
}

lt_status lt_opts_defaults(const lt_optset *s, void *o, lt_err *err) {
    if (s->n > LT_OPT_MAX) return lt_fail(err, LT_ERR_INVALID, "%s: option table too long", s->cmd);
    for (size_t i = 0; i < s->n; i++) {
        const lt_optdef *d = &s->defs[i];
        if (!d->def) continue;
        lt_status st = set_text(o, d, d->def, d->name, err);
        if (st != LT_OK) return lt_wrap(err, st, "built-in default");
    }
    return LT_OK;
}

/* ---- JSON ---- */

static lt_status apply_item(void *o, const lt_optdef *d, const cJSON *it, const char *origin, lt_err *err) {
    char src[320], num[64];
    snprintf(src, sizeof src, "%s: \"%s\"", origin, it->string);
    if (cJSON_IsArray(it) && (d->k == LT_OPT_LIST || d->k == LT_OPT_CUSTOM)) {
        int n = cJSON_GetArraySize(it);
        char **vals = calloc((size_t)n + 1, sizeof *vals);
        if (!vals) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
        const cJSON *x;
        int k = 0;
        size_t len = 1;
        cJSON_ArrayForEach(x, it) {
            if (!cJSON_IsString(x)) {
                free(vals);
                return lt_fail(err, LT_ERR_INVALID, "%s: element %d is not a string", src, k);
            }
            len += strlen(x->valuestring) + 1;
            vals[k++] = x->valuestring;
        }
        lt_status st;
        if (d->k == LT_OPT_LIST) {
            st = set_list(o, d, vals, n, src, err); /* [] = none (a resolved config's unset list) */
        } else { /* a custom value given as a list: comma-joined, as on the command line */
            char *csv = calloc(len, 1);
            if (!csv) {
                free(vals);
                return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", src);
            }
            for (int i = 0; i < n; i++) {
                if (i) strcat(csv, ",");
                strcat(csv, vals[i]);
            }
            st = set_text(o, d, csv, src, err);
            free(csv);
        }
        free(vals);
        return st;
    }
    if (d->k == LT_OPT_LIST && !cJSON_IsString(it))
        return lt_fail(err, LT_ERR_INVALID, "%s expects a list of strings", src);
    if (d->k == LT_OPT_FLAG) {
        if (!cJSON_IsBool(it)) return lt_fail(err, LT_ERR_INVALID, "%s expects true or false", src);
        *FIELD(o, d, int) = cJSON_IsTrue(it) ? 1 : 0;
        return LT_OK;
    }
    if (cJSON_IsNumber(it)) {
        if (d->k != LT_OPT_LONG && d->k != LT_OPT_DBL) return lt_fail(err, LT_ERR_INVALID, "%s expects a string", src);
        snprintf(num, sizeof num, "%.17g", it->valuedouble);
        return set_text(o, d, num, src, err);
    }
    if (cJSON_IsString(it)) {
        if (d->k == LT_OPT_LONG) range_text(d, num, sizeof num, 1);
        else if (d->k == LT_OPT_DBL) range_text(d, num, sizeof num, 0);
        if (d->k == LT_OPT_LONG || d->k == LT_OPT_DBL) return lt_fail(err, LT_ERR_INVALID, "%s expects %s", src, num);
        return set_text(o, d, it->valuestring, src, err);
    }
    if (cJSON_IsNull(it) && d->k == LT_OPT_STR) { /* null = unset */
        free(*FIELD(o, d, char *));
        *FIELD(o, d, char *) = NULL;
        return LT_OK;
    }
    return lt_fail(err, LT_ERR_INVALID, "%s has the wrong type", src);
}

lt_status lt_opts_apply_json(const lt_optset *s, void *o, const char *json, const char *origin, lt_err *err) {
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        return lt_fail(err, LT_ERR_FORMAT, "%s: not valid JSON (near '%.20s')", origin, at ? at : "?");
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lt_fail(err, LT_ERR_FORMAT, "%s: expected a JSON object of options", origin);
    }
    lt_status st = LT_OK;
    const cJSON *it;
    char near[96];
    cJSON_ArrayForEach(it, root) {
        const lt_optdef *d = find_n(s, it->string, strlen(it->string));
        if (!d) {
            const char *n = nearest(s, it->string, near, sizeof near);
            st = lt_fail(err, LT_ERR_INVALID, "%s: unknown option \"%s\"%s%s%s", origin, it->string,
                         n ? "; did you mean \"" : "", n ? n + 2 : "", n ? "\"?" : "");
            break;
        }
        if (s->json_config && !strcmp(d->name, "config")) {
            st = lt_fail(err, LT_ERR_INVALID, "%s: \"config\" cannot be set inside a config file", origin);
            break;
        }
        if ((st = apply_item(o, d, it, origin, err)) != LT_OK) break;
        if (s->off_given) given_of(s, o)[d - s->defs] = 1;
    }
    cJSON_Delete(root);
    return st;
}

/* ---- command line ---- */

static int is_opt(const char *a) { return !strncmp(a, "--", 2) && a[2]; }

lt_status lt_opts_parse(const lt_optset *s, int argc, char **argv, void *o, lt_err *err) {
    lt_status st = lt_opts_defaults(s, o, err);
    if (st != LT_OK) return st;
    for (int i = 1; i < argc; i++) /* --help anywhere wins */
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (s->off_help) *(int *)((char *)o + s->off_help) = 1;
            return LT_OK;
        }
    const lt_optdef *cfg = s->json_config ? lt_opts_find(s, "config") : NULL;
    for (int i = 1; cfg && i < argc; i++) { /* the JSON file first: the flags override it */
        const char *a = argv[i], *path = NULL;
        if (!strcmp(a, "--config")) {
            if (i + 1 >= argc || is_opt(argv[i + 1]))
                return lt_fail(err, LT_ERR_INVALID, "--config needs a value (a JSON file)");
            path = argv[++i];
        } else if (!strncmp(a, "--config=", 9)) {
            path = a + 9;
        }
        if (!path) continue;
        char *text = NULL;
        if ((st = lt_read_file(path, &text, NULL, err)) != LT_OK) return lt_wrap(err, st, "--config");
        st = lt_opts_apply_json(s, o, text, path, err);
        free(text);
        if (st != LT_OK) return st;
        if ((st = set_text(o, cfg, path, "--config", err)) != LT_OK) return st;
    }
    char **pos = NULL;
    int npos = 0;
    if (s->pos_max > 0) {
        pos = calloc((size_t)argc + 1, sizeof *pos);
        if (!pos) return lt_fail(err, LT_ERR_NOMEM, "out of memory");
        *(char ***)((char *)o + s->off_pos) = pos;
    }
    char near[96], src[96];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!is_opt(a)) {
            if (npos >= s->pos_max)
                return s->pos_max ? lt_fail(err, LT_ERR_INVALID, "unexpected argument '%s' (one %s only)", a,
                                            s->pos_meta ? s->pos_meta : "argument")
                                  : lt_fail(err, LT_ERR_INVALID, "unexpected argument '%s' (options start with --)", a);
            if (!(pos[npos] = strdup(a))) return lt_fail(err, LT_ERR_NOMEM, "out of memory");
            *(int *)((char *)o + s->off_npos) = ++npos;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const lt_optdef *d = find_n(s, name, nlen);
        if (!d || memchr(name, '_', nlen)) {
            const char *n = nearest(s, a, near, sizeof near);
            return lt_fail(err, LT_ERR_INVALID, "unknown option '--%.*s'%s%s%s", (int)nlen, name,
                           n ? "; did you mean '" : "", n ? n : "", n ? "'?" : "");
        }
        snprintf(src, sizeof src, "--%s", d->name);
        if (d == cfg) {
            if (!eq) i++;
            continue; /* applied above */
        }
        if (d->k == LT_OPT_FLAG) {
            if (eq) st = set_text(o, d, eq + 1, src, err);
            else *FIELD(o, d, int) = 1;
        } else if (d->k == LT_OPT_LIST && !eq) {
            int j = i + 1;
            while (j < argc && !is_opt(argv[j])) j++;
            if (j == i + 1)
                return lt_fail(err, LT_ERR_INVALID, "%s needs a value (one or more: %s)", src, d->meta ? d->meta : "?");
            st = set_list(o, d, argv + i + 1, j - i - 1, src, err);
            i = j - 1;
        } else {
            const char *v;
            if (eq) {
                v = eq + 1;
            } else {
                /* a value may look like a negative number, never like another option */
                if (i + 1 >= argc || is_opt(argv[i + 1]))
                    return lt_fail(err, LT_ERR_INVALID, "%s needs a value (%s)", src, d->meta ? d->meta : "?");
                v = argv[++i];
            }
            st = set_text(o, d, v, src, err);
        }
        if (st != LT_OK) return st;
        if (s->off_given) given_of(s, o)[d - s->defs] = 1;
    }
    for (size_t i = 0; i < s->n; i++) {
        const lt_optdef *d = &s->defs[i];
        if (!d->required) continue;
        int have = d->k == LT_OPT_LIST ? *COUNT(o, d) > 0
                   : d->k == LT_OPT_STR || d->k == LT_OPT_CHOICE ? *FIELD(o, d, char *) && **FIELD(o, d, char *)
                   : s->off_given ? given_of(s, o)[i] : 1;
        if (!have)
            return lt_fail(err, LT_ERR_INVALID, "--%s%s%s is required", d->name, d->meta ? " " : "",
                           d->meta ? d->meta : "");
    }
    if (npos < s->pos_min)
        return lt_fail(err, LT_ERR_INVALID, "needs %s", s->pos_meta ? s->pos_meta : "an argument");
    return LT_OK;
}

int lt_opts_cli(const lt_optset *s, int argc, char **argv, void *o) {
    lt_err err = {{0}};
    lt_status st = lt_opts_parse(s, argc, argv, o, &err);
    if (st == LT_OK && s->off_help && *(int *)((char *)o + s->off_help)) {
        lt_opts_help(s, stdout);
        return 0;
    }
    if (st == LT_OK) return -1;
    fprintf(stderr, "%s: %s\n(luxtrain %s --help lists the options)\n", s->cmd, err.msg, s->cmd);
    return 2;
}

int lt_opts_main(const lt_optset *s, int argc, char **argv, void *o, int (*run)(void *o)) {
    int rc = lt_opts_cli(s, argc, argv, o);
    if (rc < 0) rc = run(o);
    lt_opts_free(s, o);
    return rc;
}

const char *const lt_opt_devices[] = {"cpu", "cuda", "auto", NULL};

/* ---- help, docs ---- */

void lt_opts_help(const lt_optset *s, FILE *f) {
    if (s->usage) fputs(s->usage, f);
    int sections = 0;
    for (size_t i = 0; i < s->n; i++) sections += s->defs[i].k == LT_OPT_SECTION;
    if (!sections) fprintf(f, "\noptions:\n");
    for (size_t i = 0; i < s->n; i++) {
        const lt_optdef *d = &s->defs[i];
        if (d->k == LT_OPT_SECTION) {
            fprintf(f, "\n%s:\n", d->name);
            continue;
        }
        char lhs[64];
        snprintf(lhs, sizeof lhs, "--%s%s%s", d->name, d->meta ? " " : "", d->meta ? d->meta : "");
        fprintf(f, "  %-24s %s", lhs, d->help ? d->help : "");
        if (d->k == LT_OPT_CHOICE && d->choices) {
            fprintf(f, " (");
            for (size_t k = 0; d->choices[k]; k++) fprintf(f, "%s%s", k ? ", " : "", d->choices[k]);
            fprintf(f, ")");
        }
        if (d->required) fprintf(f, " (required)");
        if (d->def) fprintf(f, " [default: %s]", d->def);
        fprintf(f, "\n");
    }
    fprintf(f, "  %-24s %s\n", "--help", "this text");
    if (s->more_help) s->more_help(f);
}

void lt_opts_markdown(const lt_optset *s, FILE *f) {
    for (size_t i = 0; i < s->n; i++) {
        const lt_optdef *d = &s->defs[i];
        if (d->k == LT_OPT_SECTION) {
            fprintf(f, "%s| **%s** | | |\n", i ? "" : "| Option | Default | Meaning |\n|---|---|---|\n", d->name);
            continue;
        }
        fprintf(f, "| `--%s%s%s` | %s | %s%s |\n", d->name, d->meta ? " " : "", d->meta ? d->meta : "",
                d->def ? d->def : "-", d->help ? d->help : "", d->required ? " (required)" : "");
    }
}

/* ---- the options as JSON ---- */

static void add_json(cJSON *root, const void *o, const lt_optdef *d) {
    char key[64], buf[256];
    snprintf(key, sizeof key, "%s", d->name);
    for (char *p = key; *p; p++)
        if (*p == '-') *p = '_';
    switch (d->k) {
    case LT_OPT_STR:
    case LT_OPT_CHOICE: {
        const char *v = *CFIELD(o, d, char *);
        if (v) cJSON_AddStringToObject(root, key, v);
        else cJSON_AddNullToObject(root, key);
        break;
    }
    case LT_OPT_LIST: {
        cJSON *a = cJSON_AddArrayToObject(root, key);
        char **l = *(char **const *)((const char *)o + d->off);
        int n = *(const int *)((const char *)o + d->off_n);
        for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(l[i]));
        break;
    }
    case LT_OPT_LONG: cJSON_AddNumberToObject(root, key, (double)*CFIELD(o, d, long)); break;
    case LT_OPT_DBL: cJSON_AddItemToObject(root, key, lt_json_exact_number(*CFIELD(o, d, double))); break;
    case LT_OPT_FLAG: cJSON_AddBoolToObject(root, key, *CFIELD(o, d, int)); break;
    case LT_OPT_CUSTOM:
        d->format(CFIELD(o, d, char), buf, sizeof buf);
        cJSON_AddStringToObject(root, key, buf);
        break;
    case LT_OPT_SECTION: break;
    }
}

char *lt_opts_to_json(const lt_optset *s, const void *o, int hashed_only, int formatted) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    for (size_t i = 0; i < s->n; i++) {
        const lt_optdef *d = &s->defs[i];
        if (d->k == LT_OPT_SECTION || (s->json_config && !strcmp(d->name, "config"))) continue;
        if (hashed_only && !d->hashed) continue;
        if (hashed_only && d->hashed == 2 && d->k == LT_OPT_DBL && d->def && *CFIELD(o, d, double) == strtod(d->def, NULL))
            continue;
        if (hashed_only && d->hashed == 2 && (d->k == LT_OPT_STR || d->k == LT_OPT_CHOICE) && d->def &&
            *CFIELD(o, d, char *) && !strcmp(*CFIELD(o, d, char *), d->def))
            continue;
        add_json(root, o, d);
    }
    char *txt = formatted ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return txt;
}
