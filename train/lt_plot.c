/* lt_plot.c -- training / evaluation loss and learning rate against tokens,
 * as SVG (see lt_plot.h). */
#define _POSIX_C_SOURCE 200809L
#include "lt_plot.h"

#include "lt_json.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct {
    double x, y;
} pt;

typedef struct {
    pt *p;
    size_t n, cap;
} series;

typedef struct {
    char name[256];
    series train, lr, eval;
    series steps;     /* (step, tokens) of the training lines */
    series eval_step; /* (step, eval_loss) waiting for a token count; x = NaN-free */
} run_data;

static int push(series *s, double x, double y) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 256;
        pt *p = realloc(s->p, nc * sizeof *p);
        if (!p) return 0;
        s->p = p;
        s->cap = nc;
    }
    s->p[s->n++] = (pt){x, y};
    return 1;
}

static void run_free(run_data *r) {
    free(r->train.p);
    free(r->lr.p);
    free(r->eval.p);
    free(r->steps.p);
    free(r->eval_step.p);
}

static int num(cJSON *o, const char *key, double *out) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return 0;
    *out = v->valuedouble;
    return 1;
}

/* a loss key: 1 and the value (NaN for null), 0 absent, -1 another type */
static int loss_value(cJSON *o, const char *key, double *out) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return 0;
    if (cJSON_IsNull(v)) {
        *out = NAN;
        return 1;
    }
    return num(o, key, out) ? 1 : -1;
}

/* tokens at a step: the training line of that step, else linear
 * interpolation between the neighbouring ones (step 0 = 0 tokens), else the
 * last training line's count. steps sorted by step (x). */
static double tokens_at(const series *steps, double step) {
    double x0 = 0, y0 = 0;
    for (size_t i = 0; i < steps->n; i++) {
        double x1 = steps->p[i].x, y1 = steps->p[i].y;
        if (x1 == step) return y1;
        if (x1 > step) return x1 > x0 ? y0 + (y1 - y0) * (step - x0) / (x1 - x0) : y1;
        x0 = x1;
        y0 = y1;
    }
    return steps->n ? steps->p[steps->n - 1].y : 0;
}

static int cmp_pt_x(const void *a, const void *b) {
    double x = ((const pt *)a)->x, y = ((const pt *)b)->x;
    return x < y ? -1 : x > y;
}

static void sort_series(series *s) {
    if (s->n > 1) qsort(s->p, s->n, sizeof *s->p, cmp_pt_x);
}

static lt_status load_run(const char *dir, run_data *r, lt_err *err) {
    memset(r, 0, sizeof *r);
    /* name: the last path component */
    size_t l = strlen(dir);
    while (l > 1 && dir[l - 1] == '/') l--;
    size_t s = l;
    while (s > 0 && dir[s - 1] != '/') s--;
    snprintf(r->name, sizeof r->name, "%.*s", (int)(l - s), dir + s);
    char path[4096];
    if (!lt_path_join(path, sizeof path, dir, "metrics.jsonl"))
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", dir);
    char *data = NULL;
    size_t len = 0;
    lt_status st = lt_read_file(path, &data, &len, err);
    if (st != LT_OK) return st;
    long line = 0;
    size_t i = 0;
    while (i < len && st == LT_OK) {
        size_t j = i;
        while (j < len && data[j] != '\n') j++;
        line++;
        size_t a = i, b = j;
        i = j + 1;
        while (a < b && (data[a] == ' ' || data[a] == '\t' || data[a] == '\r')) a++;
        while (b > a && (data[b - 1] == ' ' || data[b - 1] == '\t' || data[b - 1] == '\r')) b--;
        if (a == b) continue;
        char why[160];
        cJSON *o = lt_json_parse_exact(data + a, b - a, why, sizeof why);
        if (!cJSON_IsObject(o)) {
            if (o) snprintf(why, sizeof why, "%s", "a JSON value that is not an object");
            cJSON_Delete(o);
            st = lt_fail(err, LT_ERR_FORMAT, "%s:%ld: %s (expected one JSON object per line; a loss that is not a "
                         "number is written null, not NaN)", path, line, why);
            break;
        }
        double step, tokens, loss, lr, ev;
        int ok = 1, has_ev, has_loss = 0;
        /* a loss may be null: the trainer writes a non-finite loss (or an
         * evaluation without targets) so; such a point is left out */
        if ((has_ev = loss_value(o, "eval_loss", &ev)) > 0) {
            if (!num(o, "step", &step))
                st = lt_fail(err, LT_ERR_FORMAT, "%s:%ld: evaluation line without a number \"step\"", path, line);
            else if (num(o, "tokens", &tokens)) {
                if (isfinite(ev)) ok = push(&r->eval, tokens, ev);
            } else if (isfinite(ev))
                ok = push(&r->eval_step, step, ev);
        } else if (has_ev == 0 && (has_loss = loss_value(o, "loss", &loss)) > 0) {
            if (!num(o, "step", &step) || !num(o, "tokens", &tokens))
                st = lt_fail(err, LT_ERR_FORMAT, "%s:%ld: training line without numbers \"step\" and \"tokens\"", path,
                             line);
            else {
                ok = push(&r->steps, step, tokens);
                if (ok && isfinite(loss)) ok = push(&r->train, tokens, loss);
                if (ok && num(o, "lr", &lr) && isfinite(lr)) ok = push(&r->lr, tokens, lr);
            }
        } else if (has_ev < 0 || has_loss < 0) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s:%ld: \"loss\"/\"eval_loss\" must be a number or null", path, line);
        }
        cJSON_Delete(o);
        if (!ok) st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    }
    free(data);
    if (st != LT_OK) {
        run_free(r);
        return st;
    }
    if (r->train.n == 0 && r->eval.n == 0 && r->eval_step.n == 0) {
        run_free(r);
        return lt_fail(err, LT_ERR_FORMAT, "%s: no training or evaluation lines with a finite loss", path);
    }
    sort_series(&r->steps);
    for (size_t k = 0; k < r->eval_step.n; k++)
        if (!push(&r->eval, tokens_at(&r->steps, r->eval_step.p[k].x), r->eval_step.p[k].y)) {
            run_free(r);
            return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
        }
    sort_series(&r->train);
    sort_series(&r->lr);
    sort_series(&r->eval);
    return LT_OK;
}

/* ------------------------------------------------------------------ svg */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void out(sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void out(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t nc = b->cap ? b->cap * 2 : 65536;
        while (nc < b->n + (size_t)k + 1) nc *= 2;
        char *p = realloc(b->s, nc);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = nc;
    }
}

static void out_escaped(sbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': out(b, "&amp;"); break;
        case '<': out(b, "&lt;"); break;
        case '>': out(b, "&gt;"); break;
        case '"': out(b, "&quot;"); break;
        case '\'': out(b, "&apos;"); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') out(b, "%c", *s);
        }
    }
}

/* a "nice" tick step (1, 2, 5 x 10^k) for about n ticks over [lo, hi] */
static double nice_step(double lo, double hi, int n) {
    double range = hi - lo;
    if (!(range > 0)) range = fabs(hi) > 0 ? fabs(hi) : 1;
    double raw = range / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

/* ticks lo, lo + step, ... up to hi; 1 where the step is lost in rounding
 * (values that differ by a few ulps), at most 100 */
static int n_ticks(double lo, double hi, double step) {
    if (!(step > 0) || !(hi >= lo) || lo + step == lo || hi - step == hi) return 1;
    double n = floor((hi - lo) / step + 1e-9) + 1;
    return n < 1 ? 1 : n > 100 ? 100 : (int)n;
}

static void fmt_tokens(char *buf, size_t cap, double v) {
    double a = fabs(v);
    if (a >= 1e9)
        snprintf(buf, cap, "%gB", v / 1e9);
    else if (a >= 1e6)
        snprintf(buf, cap, "%gM", v / 1e6);
    else if (a >= 1e3)
        snprintf(buf, cap, "%gk", v / 1e3);
    else
        snprintf(buf, cap, "%g", v);
}

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

enum { W = 960, H = 560, ML = 80, MR = 96, MT = 48, MB = 64 };

typedef struct {
    double x0, x1, y0, y1, r0, r1; /* data ranges: tokens, loss, lr */
} frame;

static double px(const frame *f, double x) { return ML + (x - f->x0) / (f->x1 - f->x0) * (W - ML - MR); }
static double py(const frame *f, double y) { return H - MB - (y - f->y0) / (f->y1 - f->y0) * (H - MT - MB); }
static double pr(const frame *f, double r) { return H - MB - (r - f->r0) / (f->r1 - f->r0) * (H - MT - MB); }

static void polyline(sbuf *b, const series *s, const frame *f, int right_axis, const char *cls, const char *run,
                     const char *color, const char *style) {
    if (s->n == 0) return;
    size_t stride = s->n > 4000 ? (s->n + 3999) / 4000 : 1;
    out(b, "<polyline class=\"%s\" data-run=\"", cls);
    out_escaped(b, run);
    out(b, "\" fill=\"none\" stroke=\"%s\" %s points=\"", color, style);
    for (size_t i = 0; i < s->n; i += stride) {
        size_t k = (i + stride >= s->n) ? s->n - 1 : i;
        double y = right_axis ? pr(f, s->p[k].y) : py(f, s->p[k].y);
        out(b, "%s%.2f,%.2f", i ? " " : "", px(f, s->p[k].x), y);
        if (k == s->n - 1) break;
    }
    out(b, "\"/>\n");
}

static lt_status render(run_data *runs, int n, sbuf *b, lt_err *err) {
    frame f = {0, 0, INFINITY, -INFINITY, 0, 0};
    int have_lr = 0, have_eval = 0;
    for (int r = 0; r < n; r++) {
        const series *ss[2] = {&runs[r].train, &runs[r].eval};
        for (int k = 0; k < 2; k++)
            for (size_t i = 0; i < ss[k]->n; i++) {
                if (ss[k]->p[i].x > f.x1) f.x1 = ss[k]->p[i].x;
                if (ss[k]->p[i].y < f.y0) f.y0 = ss[k]->p[i].y;
                if (ss[k]->p[i].y > f.y1) f.y1 = ss[k]->p[i].y;
            }
        for (size_t i = 0; i < runs[r].lr.n; i++)
            if (runs[r].lr.p[i].y > f.r1) f.r1 = runs[r].lr.p[i].y;
        have_lr |= runs[r].lr.n > 0;
        have_eval |= runs[r].eval.n > 0;
    }
    if (!isfinite(f.y0)) return lt_fail(err, LT_ERR_FORMAT, "no finite loss values to plot");
    if (!isfinite(f.y1 - f.y0) || !isfinite(f.x1) || !isfinite(f.r1) || f.x1 < 0)
        return lt_fail(err, LT_ERR_RANGE, "loss %g .. %g, tokens up to %g, learning rate up to %g: out of the "
                       "range a plot can show", f.y0, f.y1, f.x1, f.r1);
    /* nice ranges */
    double xs = nice_step(0, f.x1 > 0 ? f.x1 : 1, 6);
    f.x1 = ceil((f.x1 > 0 ? f.x1 : 1) / xs) * xs;
    double pad = (f.y1 - f.y0) * 0.05;
    if (!(pad > 0)) pad = fabs(f.y0) * 0.05 + 0.05;
    double ys = nice_step(f.y0 - pad, f.y1 + pad, 6);
    f.y0 = floor((f.y0 - pad) / ys) * ys;
    f.y1 = ceil((f.y1 + pad) / ys) * ys;
    if (f.y0 < 0 && f.y0 + pad >= 0) f.y0 = 0; /* losses are >= 0: keep the axis from going negative */
    double rs = nice_step(0, f.r1 > 0 ? f.r1 : 1, 5);
    f.r1 = ceil((f.r1 > 0 ? f.r1 : 1) * 1.05 / rs) * rs;

    out(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
           "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n",
        W, H, W, H);
    out(b, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    out(b, "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">loss against tokens seen</text>\n", W / 2);
    /* grid + x axis */
    out(b, "<g id=\"x-axis\" stroke=\"#000\">\n");
    for (int i = 0, nt = n_ticks(0, f.x1, xs); i < nt; i++) {
        double x = i * xs;
        char lab[32];
        fmt_tokens(lab, sizeof lab, x);
        out(b, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\" stroke=\"#e5e5e5\"/>\n", px(&f, x), MT, px(&f, x),
            H - MB);
        out(b, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\"/>\n", px(&f, x), H - MB, px(&f, x), H - MB + 5);
        out(b, "<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\" stroke=\"none\">%s</text>\n", px(&f, x), H - MB + 19,
            lab);
    }
    out(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n", ML, H - MB, W - MR, H - MB);
    out(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" stroke=\"none\">tokens</text>\n</g>\n", (ML + W - MR) / 2,
        H - 18);
    /* left axis: loss */
    out(b, "<g id=\"loss-axis\" stroke=\"#000\">\n");
    for (int i = 0, nt = n_ticks(f.y0, f.y1, ys); i < nt; i++) {
        double y = f.y0 + i * ys;
        out(b, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" stroke=\"#e5e5e5\"/>\n", ML, py(&f, y), W - MR,
            py(&f, y));
        out(b, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\"/>\n", ML - 5, py(&f, y), ML, py(&f, y));
        out(b, "<text x=\"%d\" y=\"%.2f\" text-anchor=\"end\" stroke=\"none\">%.4g</text>\n", ML - 8, py(&f, y) + 4,
            fabs(y) < ys * 1e-6 ? 0.0 : y);
    }
    out(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n", ML, MT, ML, H - MB);
    out(b, "<text transform=\"translate(22,%d) rotate(-90)\" text-anchor=\"middle\" stroke=\"none\">loss</text>\n</g>\n",
        (MT + H - MB) / 2);
    /* right axis: learning rate */
    if (have_lr) {
        out(b, "<g id=\"lr-axis\" stroke=\"#555\">\n");
        for (int i = 0, nt = n_ticks(0, f.r1, rs); i < nt; i++) {
            double r = i * rs;
            out(b, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\"/>\n", W - MR, pr(&f, r), W - MR + 5, pr(&f, r));
            out(b, "<text x=\"%d\" y=\"%.2f\" stroke=\"none\" fill=\"#555\">%.3g</text>\n", W - MR + 8, pr(&f, r) + 4,
                r);
        }
        out(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n", W - MR, MT, W - MR, H - MB);
        out(b, "<text transform=\"translate(%d,%d) rotate(90)\" text-anchor=\"middle\" stroke=\"none\" "
               "fill=\"#555\">learning rate</text>\n</g>\n",
            W - 16, (MT + H - MB) / 2);
    }
    /* curves */
    out(b, "<g id=\"curves\" stroke-linejoin=\"round\">\n");
    for (int r = 0; r < n; r++) {
        const char *c = colors[r % (int)(sizeof colors / sizeof colors[0])];
        polyline(b, &runs[r].lr, &f, 1, "lr", runs[r].name, c, "stroke-width=\"1\" stroke-dasharray=\"1,3\" opacity=\"0.8\"");
        polyline(b, &runs[r].train, &f, 0, "train-loss", runs[r].name, c, "stroke-width=\"1.5\"");
        polyline(b, &runs[r].eval, &f, 0, "eval-loss", runs[r].name, c, "stroke-width=\"2\" stroke-dasharray=\"6,4\"");
        for (size_t i = 0; i < runs[r].eval.n; i++)
            out(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>\n", px(&f, runs[r].eval.p[i].x),
                py(&f, runs[r].eval.p[i].y), c);
    }
    out(b, "</g>\n");
    /* legend (top right inside the plot) */
    int rows = n * (1 + have_eval + have_lr) , lw = 250, lh = 8 + 18 * rows;
    int lx = W - MR - lw - 8, ly = MT + 8;
    out(b, "<g id=\"legend\">\n<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"white\" fill-opacity=\"0.85\" "
           "stroke=\"#999\"/>\n",
        lx, ly, lw, lh);
    int row = 0;
    for (int r = 0; r < n; r++) {
        const char *c = colors[r % (int)(sizeof colors / sizeof colors[0])];
        const char *what[3] = {"training loss", "eval loss", "learning rate"};
        const char *dash[3] = {"", " stroke-dasharray=\"6,4\"", " stroke-dasharray=\"1,3\""};
        int show[3] = {1, runs[r].eval.n > 0, runs[r].lr.n > 0};
        for (int k = 0; k < 3; k++) {
            if (!show[k]) continue;
            int y = ly + 16 + 18 * row++;
            out(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"%s/>\n", lx + 8, y - 4,
                lx + 38, y - 4, c, dash[k]);
            out(b, "<text x=\"%d\" y=\"%d\">", lx + 46, y);
            out_escaped(b, runs[r].name);
            out(b, ": %s</text>\n", what[k]);
        }
    }
    out(b, "</g>\n</svg>\n");
    if (b->oom) return lt_fail(err, LT_ERR_NOMEM, "plot: out of memory");
    return LT_OK;
}

/* Run argv quietly; 0 on exit status 0. */
static int run_quiet(char *const argv[]) {
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa)) return -1;
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) return -1;
    int status;
    if (waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int is_png(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char m[8];
    size_t k = fread(m, 1, 8, f);
    fclose(f);
    return k == 8 && !memcmp(m, "\x89PNG\r\n\x1a\n", 8);
}

static int on_path(const char *name) {
    const char *p = getenv("PATH");
    if (!p) return 0;
    char buf[4096];
    while (*p) {
        const char *e = strchr(p, ':');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l && l < sizeof buf - strlen(name) - 2) {
            snprintf(buf, sizeof buf, "%.*s/%s", (int)l, p, name);
            if (access(buf, X_OK) == 0) return 1;
        }
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static int convert_png(const char *svg) {
    char png[4096];
    size_t l = strlen(svg);
    int w = l >= 4 && !strcmp(svg + l - 4, ".svg") ? snprintf(png, sizeof png, "%.*s.png", (int)(l - 4), svg)
                                                   : snprintf(png, sizeof png, "%s.png", svg);
    if (w < 0 || (size_t)w >= sizeof png) return 0; /* no room for the .png name */
    char *rsvg[] = {"rsvg-convert", "-o", png, (char *)svg, NULL};
    char *magick[] = {"magick", (char *)svg, png, NULL};
    char *conv[] = {"convert", (char *)svg, png, NULL};
    char **tries[] = {rsvg, magick, conv};
    for (int i = 0; i < 3; i++) {
        if (!on_path(tries[i][0])) continue;
        if (run_quiet(tries[i]) == 0 && is_png(png)) return 1;
        remove(png);
    }
    return 0;
}

lt_status lt_plot_runs(const char *const *run_dirs, int n_runs, const char *out_svg, int *png_written,
                       lt_err *err) {
    if (png_written) *png_written = 0;
    if (n_runs < 1) return lt_fail(err, LT_ERR_INVALID, "plot: no run folders given");
    char def[4096];
    if (!out_svg) {
        if (!lt_path_join(def, sizeof def, run_dirs[0], "loss.svg"))
            return lt_fail(err, LT_ERR_INVALID, "plot: path too long");
        out_svg = def;
    }
    run_data *runs = calloc((size_t)n_runs, sizeof *runs);
    if (!runs) return lt_fail(err, LT_ERR_NOMEM, "plot: out of memory");
    lt_status st = LT_OK;
    int loaded = 0;
    for (; loaded < n_runs && st == LT_OK; loaded++) {
        st = load_run(run_dirs[loaded], &runs[loaded], err);
        if (st != LT_OK) break;
    }
    /* two runs with the same folder name: use the paths as given */
    for (int a = 0; st == LT_OK && a < n_runs; a++)
        for (int b = a + 1; b < n_runs; b++)
            if (!strcmp(runs[a].name, runs[b].name)) {
                snprintf(runs[a].name, sizeof runs[a].name, "%s", run_dirs[a]);
                snprintf(runs[b].name, sizeof runs[b].name, "%s", run_dirs[b]);
            }
    sbuf b = {0};
    if (st == LT_OK) st = render(runs, n_runs, &b, err);
    if (st == LT_OK) st = lt_write_file_atomic(out_svg, b.s, b.n, err);
    if (st == LT_OK && convert_png(out_svg) && png_written) *png_written = 1;
    free(b.s);
    for (int r = 0; r < loaded && r < n_runs; r++) run_free(&runs[r]);
    free(runs);
    return st;
}
