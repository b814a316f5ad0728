/*
 * test_eval_compare.c -- the paired comparison of two evaluations.
 *
 * McNemar p-values: exact two-sided binomial test on the discordant pairs,
 * checked against values computed with Python's math.comb
 * (p = min(1, 2 * sum_{i<=min(b,c)} C(b+c, i) / 2^(b+c))), e.g. b=6, c=2:
 * 2 * (1 + 8 + 28) / 256 = 0.2890625. Relative tolerance 1e-9 (the C code sums
 * in log space with lgamma).
 * The table: tests/fixtures/eval/compare_{a,b}.json (60 questions, B listed
 * in reverse order so pairing must go by id) against expected_compare.json
 * written by tools/gen_eval_fixtures.py; then `luxtrain eval --compare` on the
 * files and on run folders, and its errors.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_eval.h"
#include "lt_test.h"

static void check_p(long b, long c, double want) {
    double got = lt_eval_mcnemar_exact(b, c);
    LT_CHECK(fabs(got - want) <= 1e-9 * want, "mcnemar(%ld, %ld) = %.17g, want %.17g", b, c, got, want);
}

static double jnum(cJSON *o, const char *k) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void check_row(const lt_eval_cmp_row *r, cJSON *ref) {
    LT_CHECK(ref != NULL, "row %s: not in the reference", r->name);
    if (!ref) return;
    LT_CHECK((double)r->n == jnum(ref, "n"), "%s: n %zu vs %g", r->name, r->n, jnum(ref, "n"));
    LT_CHECK(fabs(r->acc_a - jnum(ref, "acc_a")) < 1e-12, "%s: acc_a %g vs %g", r->name, r->acc_a, jnum(ref, "acc_a"));
    LT_CHECK(fabs(r->acc_b - jnum(ref, "acc_b")) < 1e-12, "%s: acc_b %g vs %g", r->name, r->acc_b, jnum(ref, "acc_b"));
    LT_CHECK(r->a_only == (long)jnum(ref, "a_only") && r->b_only == (long)jnum(ref, "b_only"), "%s: discordant %ld/%ld",
             r->name, r->a_only, r->b_only);
    double p = jnum(ref, "p_value");
    LT_CHECK(fabs(r->p_value - p) <= 1e-9 * p, "%s: p %.17g vs %.17g", r->name, r->p_value, p);
}

static int file_has(const char *path, const char *needle) {
    char *d = NULL;
    size_t n;
    lt_err e;
    if (lt_read_file(path, &d, &n, &e) != LT_OK) return 0;
    int r = strstr(d, needle) != NULL;
    free(d);
    return r;
}

int main(void) {
    /* known values */
    check_p(0, 0, 1.0);
    check_p(0, 12, 0.00048828125); /* 2 / 2^12 */
    check_p(6, 2, 0.2890625);
    check_p(2, 6, 0.2890625);
    check_p(1, 1, 1.0);
    check_p(1, 0, 1.0);
    check_p(3, 10, 0.09228515625); /* 2 * 378 / 8192 */
    check_p(17, 17, 1.0);
    check_p(40, 60, 0.05688793364098079);
    check_p(400, 500, 0.0009564441369189461);

    lt_err err = {{0}};
    const char *a = lt_src_path("tests/fixtures/eval/compare_a.json");
    const char *b = lt_src_path("tests/fixtures/eval/compare_b.json");
    char *exps = NULL;
    size_t n;
    LT_CHECK_OK(lt_read_file(lt_src_path("tests/fixtures/eval/expected_compare.json"), &exps, &n, &err), &err);
    cJSON *exp = exps ? cJSON_Parse(exps) : NULL;
    free(exps);
    lt_eval_cmp c;
    lt_status st = lt_eval_compare(a, b, LT_EVAL_ACC, &c, &err);
    LT_CHECK(st == LT_OK, "compare: %s", err.msg);
    const char *tmp = lt_test_tmpdir("test_eval_compare");
    char table[4096], cmd[8192];
    snprintf(table, sizeof table, "%s/table.txt", tmp);
    if (st == LT_OK && exp) {
        cJSON *cats = cJSON_GetObjectItemCaseSensitive(exp, "categories");
        LT_CHECK(c.n_rows == (size_t)cJSON_GetArraySize(cats) + 1, "rows %zu", c.n_rows);
        LT_CHECK(c.n_paired == 60 && c.only_a == 0 && c.only_b == 0, "paired %zu", c.n_paired);
        for (size_t r = 0; r < c.n_rows; r++)
            check_row(&c.rows[r], r + 1 == c.n_rows ? cJSON_GetObjectItemCaseSensitive(exp, "overall")
                                                    : cJSON_GetObjectItemCaseSensitive(cats, c.rows[r].name));
        LT_CHECK(!strcmp(c.rows[c.n_rows - 1].name, "overall"), "overall last");
        FILE *f = fopen(table, "w");
        if (f) {
            lt_eval_compare_print(f, &c, 0.05);
            fclose(f);
        }
        LT_CHECK(file_has(table, "grammar") && file_has(table, "+0.4000") && file_has(table, "0.000488 *"),
                 "table rows (see %s)", table);
        LT_CHECK(file_has(table, "0.289\n"), "non-significant row has no star");
        lt_eval_compare_free(&c);
    }
    /* another metric: acc_norm is identical in both files -> no discordant pairs */
    if (lt_eval_compare(a, b, LT_EVAL_ACC_NORM, &c, &err) == LT_OK) {
        LT_CHECK(c.rows[c.n_rows - 1].a_only == 0 && c.rows[c.n_rows - 1].p_value == 1.0, "acc_norm: equal");
        lt_eval_compare_free(&c);
    } else
        LT_CHECK(0, "acc_norm compare: %s", err.msg);

    /* the command, on files and on run folders */
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/runA' '%s/runB' && cp '%s' '%s/runA/eval.json' && cp '%s' '%s/runB/eval_lb.json' && "
             "'%s' eval --compare '%s/runA' '%s/runB' > '%s/cli.txt' 2>&1",
             tmp, tmp, a, tmp, b, tmp, LT_BIN, tmp, tmp, tmp);
    LT_CHECK(lt_test_system(cmd) == 0, "luxtrain eval --compare on run folders");
    snprintf(table, sizeof table, "%s/cli.txt", tmp);
    LT_CHECK(file_has(table, "overall") && file_has(table, "0.115") && file_has(table, "runB/eval_lb.json"),
             "cli table (see %s)", table);
    snprintf(cmd, sizeof cmd, "'%s' eval --compare '%s' '%s' --metric acc_bytes > /dev/null 2>&1", LT_BIN, a, b);
    LT_CHECK(lt_test_system(cmd) == 0, "files + --metric");
    snprintf(cmd, sizeof cmd, "'%s' eval --compare '%s' '%s/nothing' > '%s/err.txt' 2>&1", LT_BIN, a, tmp, tmp);
    LT_CHECK(lt_test_system(cmd) == 1, "missing B: exit 1");
    snprintf(cmd, sizeof cmd, "'%s' eval --compare '%s' > /dev/null 2>&1", LT_BIN, a);
    LT_CHECK(lt_test_system(cmd) == 2, "one path: usage error");
    snprintf(cmd, sizeof cmd, "'%s' eval --compare '%s' '%s' --metric f1 > /dev/null 2>&1", LT_BIN, a, b);
    LT_CHECK(lt_test_system(cmd) == 2, "unknown metric: usage error");
    /* a file without questions */
    snprintf(table, sizeof table, "%s/empty.json", tmp);
    FILE *f = fopen(table, "w");
    if (f) {
        fputs("{\"questions\": []}\n", f);
        fclose(f);
    }
    LT_CHECK(lt_eval_compare(a, table, LT_EVAL_ACC, &c, &err) == LT_ERR_FORMAT && strstr(err.msg, "empty.json"),
             "empty file: %s", err.msg);
    cJSON_Delete(exp);
    return lt_test_finish("test_eval_compare");
}
