/* lt_eval_compare.c -- two evaluations of the same task side by side, per
 * category, with an exact McNemar test on the per-question correctness
 * (see lt_eval.h). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lt_eval.h"
#include "lt_json.h"

double lt_eval_mcnemar_exact(long b, long c) {
    if (b < 0 || c < 0) return NAN;
    long n = b + c;
    if (n == 0) return 1.0;
    long k = b < c ? b : c;
    /* P(X <= k), X ~ Bin(n, 1/2), summed in log space (n may be large) */
    double lf = lgamma((double)n + 1), ln2 = log(2.0), tail = 0;
    for (long i = 0; i <= k; i++)
        tail += exp(lf - lgamma((double)i + 1) - lgamma((double)(n - i) + 1) - (double)n * ln2);
    double p = 2.0 * tail;
    return p > 1.0 ? 1.0 : p;
}

typedef struct {
    char *id;
    char *category; /* NULL: none */
    int correct[LT_EVAL_NMETRIC];
} cmp_q;

typedef struct {
    cmp_q *q;
    size_t n;
} cmp_run;

static void run_free(cmp_run *r) {
    for (size_t i = 0; i < r->n; i++) {
        free(r->q[i].id);
        free(r->q[i].category);
    }
    free(r->q);
    r->q = NULL;
    r->n = 0;
}

/* A results file, or the eval results inside a run folder. */
static lt_status resolve_path(const char *in, char *out, size_t cap, lt_err *err) {
    if (!lt_is_dir(in)) {
        if (!lt_file_exists(in)) return lt_fail(err, LT_ERR_IO, "%s: no such file or folder", in);
        snprintf(out, cap, "%s", in);
        return LT_OK;
    }
    if (lt_path_join(out, cap, in, "eval.json") && lt_file_exists(out)) return LT_OK;
    DIR *d = opendir(in);
    if (!d) return lt_fail(err, LT_ERR_IO, "%s: cannot list the folder", in);
    struct dirent *e;
    double best = -1;
    char path[4096];
    out[0] = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "eval", 4) || l < 9 || strcmp(e->d_name + l - 5, ".json")) continue;
        struct stat sb;
        if (!lt_path_join(path, sizeof path, in, e->d_name) || stat(path, &sb) || !S_ISREG(sb.st_mode)) continue;
        double t = (double)sb.st_mtim.tv_sec + 1e-9 * (double)sb.st_mtim.tv_nsec;
        if (t > best) {
            best = t;
            snprintf(out, cap, "%s", path);
        }
    }
    closedir(d);
    if (!out[0]) return lt_fail(err, LT_ERR_IO, "%s: the folder holds no eval.json (nor eval*.json)", in);
    return LT_OK;
}

static lt_status load_run(const char *path, cmp_run *run, lt_err *err) {
    memset(run, 0, sizeof *run);
    cJSON *root = NULL;
    lt_status st = lt_json_load_file(path, &root, err);
    if (st != LT_OK) return st;
    cJSON *qs = cJSON_GetObjectItemCaseSensitive(root, "questions");
    int n = cJSON_IsArray(qs) ? cJSON_GetArraySize(qs) : -1;
    if (n <= 0) {
        cJSON_Delete(root);
        return lt_fail(err, LT_ERR_FORMAT, "%s: expected a non-empty \"questions\" array (a luxtrain eval --output file)",
                       path);
    }
    run->q = calloc((size_t)n, sizeof *run->q);
    if (!run->q) {
        cJSON_Delete(root);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    }
    static const char *const pred_keys[LT_EVAL_NMETRIC] = {"pred", "pred_norm", "pred_bytes"};
    for (int i = 0; i < n && st == LT_OK; i++) {
        cJSON *o = cJSON_GetArrayItem(qs, i);
        cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
        cJSON *cat = cJSON_GetObjectItemCaseSensitive(o, "category");
        cJSON *ans = cJSON_GetObjectItemCaseSensitive(o, "answer");
        char buf[64];
        const char *ids = NULL;
        if (cJSON_IsString(id))
            ids = id->valuestring;
        else if (cJSON_IsNumber(id)) {
            snprintf(buf, sizeof buf, "%.17g", id->valuedouble);
            ids = buf;
        }
        if (!ids || !cJSON_IsNumber(ans) || (cat && !cJSON_IsNull(cat) && !cJSON_IsString(cat))) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: questions[%d]: expected \"id\", \"answer\" and a string or null \"category\"",
                         path, i);
            break;
        }
        cmp_q *q = &run->q[run->n];
        q->id = lt_strdup(ids);
        q->category = cJSON_IsString(cat) ? lt_strdup(cat->valuestring) : NULL;
        run->n++;
        if (!q->id || (cJSON_IsString(cat) && !q->category)) {
            st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        for (int k = 0; k < LT_EVAL_NMETRIC; k++) {
            cJSON *p = cJSON_GetObjectItemCaseSensitive(o, pred_keys[k]);
            if (!cJSON_IsNumber(p)) {
                st = lt_fail(err, LT_ERR_FORMAT, "%s: questions[%d] ('%s'): missing number \"%s\"", path, i, q->id,
                             pred_keys[k]);
                break;
            }
            q->correct[k] = p->valuedouble == ans->valuedouble;
        }
    }
    cJSON_Delete(root);
    if (st != LT_OK) run_free(run);
    return st;
}

static int cmp_q_id(const void *a, const void *b) { return strcmp(((const cmp_q *)a)->id, ((const cmp_q *)b)->id); }
static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void lt_eval_compare_free(lt_eval_cmp *c) {
    if (!c) return;
    free(c->rows);
    c->rows = NULL;
    c->n_rows = 0;
}

lt_status lt_eval_compare(const char *a, const char *b, int metric, lt_eval_cmp *out, lt_err *err) {
    memset(out, 0, sizeof *out);
    if (metric < 0 || metric >= LT_EVAL_NMETRIC) return lt_fail(err, LT_ERR_INVALID, "compare: unknown metric %d", metric);
    out->metric = metric;
    lt_status st = resolve_path(a, out->path_a, sizeof out->path_a, err);
    if (st == LT_OK) st = resolve_path(b, out->path_b, sizeof out->path_b, err);
    if (st != LT_OK) return st;
    cmp_run ra, rb;
    st = load_run(out->path_a, &ra, err);
    if (st != LT_OK) return st;
    st = load_run(out->path_b, &rb, err);
    if (st != LT_OK) {
        run_free(&ra);
        return st;
    }
    qsort(rb.q, rb.n, sizeof *rb.q, cmp_q_id);
    for (size_t i = 1; i < rb.n; i++)
        if (!strcmp(rb.q[i - 1].id, rb.q[i].id)) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: question id '%s' occurs twice", out->path_b, rb.q[i].id);
            goto done;
        }
    /* pair by id: match[i] = index in rb of A's question i, or -1 */
    long *match = malloc(ra.n * sizeof *match);
    char **cats = malloc((ra.n + 1) * sizeof *cats);
    if (!match || !cats) {
        free(match);
        free(cats);
        st = lt_fail(err, LT_ERR_NOMEM, "compare: out of memory");
        goto done;
    }
    size_t n_cats = 0;
    for (size_t i = 0; i < ra.n; i++) {
        cmp_q key = {ra.q[i].id, NULL, {0}};
        cmp_q *hit = bsearch(&key, rb.q, rb.n, sizeof *rb.q, cmp_q_id);
        match[i] = hit ? (long)(hit - rb.q) : -1;
        if (hit) {
            out->n_paired++;
            if (ra.q[i].category) {
                size_t c = 0;
                while (c < n_cats && strcmp(cats[c], ra.q[i].category)) c++;
                if (c == n_cats) cats[n_cats++] = ra.q[i].category;
            }
        } else
            out->only_a++;
    }
    out->only_b = rb.n - out->n_paired;
    if (out->n_paired == 0) {
        free(match);
        free(cats);
        st = lt_fail(err, LT_ERR_INVALID, "compare: %s and %s share no question id", out->path_a, out->path_b);
        goto done;
    }
    qsort(cats, n_cats, sizeof *cats, cmp_strp);
    out->rows = calloc(n_cats + 1, sizeof *out->rows);
    if (!out->rows) {
        free(match);
        free(cats);
        st = lt_fail(err, LT_ERR_NOMEM, "compare: out of memory");
        goto done;
    }
    out->n_rows = n_cats + 1;
    for (size_t r = 0; r <= n_cats; r++) {
        lt_eval_cmp_row *row = &out->rows[r];
        const char *cat = r < n_cats ? cats[r] : NULL;
        snprintf(row->name, sizeof row->name, "%s", cat ? cat : "overall");
        long ka = 0, kb = 0;
        for (size_t i = 0; i < ra.n; i++) {
            if (match[i] < 0) continue;
            if (cat && (!ra.q[i].category || strcmp(ra.q[i].category, cat))) continue;
            int x = ra.q[i].correct[metric], y = rb.q[match[i]].correct[metric];
            row->n++;
            ka += x;
            kb += y;
            row->a_only += x && !y;
            row->b_only += y && !x;
        }
        row->acc_a = (double)ka / (double)row->n;
        row->acc_b = (double)kb / (double)row->n;
        row->p_value = lt_eval_mcnemar_exact(row->a_only, row->b_only);
    }
    free(match);
    free(cats);
done:
    run_free(&ra);
    run_free(&rb);
    if (st != LT_OK) lt_eval_compare_free(out);
    return st;
}

void lt_eval_compare_print(FILE *f, const lt_eval_cmp *c, double alpha) {
    fprintf(f, "paired comparison of %s (exact McNemar test on the questions only one run gets right)\n",
            lt_eval_metric_names[c->metric]);
    fprintf(f, "  A: %s\n  B: %s\n", c->path_a, c->path_b);
    fprintf(f, "  %zu questions paired by id", c->n_paired);
    if (c->only_a || c->only_b) fprintf(f, " (%zu only in A, %zu only in B: left out)", c->only_a, c->only_b);
    fprintf(f, "\n\n%-20s %5s  %7s  %7s  %8s  %6s  %6s  %9s\n", "category", "n", "A", "B", "B - A", "A only",
            "B only", "p-value");
    for (size_t r = 0; r < c->n_rows; r++) {
        const lt_eval_cmp_row *w = &c->rows[r];
        fprintf(f, "%-20s %5zu  %7.4f  %7.4f  %+8.4f  %6ld  %6ld  %9.3g%s\n", w->name, w->n, w->acc_a, w->acc_b,
                w->acc_b - w->acc_a, w->a_only, w->b_only, w->p_value, w->p_value < alpha ? " *" : "");
    }
    fprintf(f, "\n* significant at p < %g (two-sided)\n", alpha);
}
