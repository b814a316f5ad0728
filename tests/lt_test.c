/* lt_test.c -- see lt_test.h */
#define _POSIX_C_SOURCE 200809L
#include "lt_test.h"

#include "lt_family.h"
#include "lt_safetensors.h"
#include "lt_model.h"
#include "lt_lora.h"
#include "lt_trainer.h"

#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

int lt_test_failures = 0;
int lt_test_checks = 0;

int lt_test_finish(const char *name) {
    if (lt_test_failures) {
        fprintf(stderr, "%s: %d of %d checks FAILED\n", name, lt_test_failures, lt_test_checks);
        return 1;
    }
    if (lt_test_checks == 0) {
        fprintf(stderr, "%s: no checks ran\n", name);
        return 1;
    }
    printf("%s: all %d checks passed\n", name, lt_test_checks);
    return 0;
}

lt_cmp lt_compare(const float *a, const float *b, size_t n) {
    lt_cmp c = {0};
    double num = 0, den = 0, bmax = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) {
            c.n_nonfinite++;
            continue;
        }
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
        if (fabs(b[i]) > bmax) bmax = fabs(b[i]);
        if (fabs(d) > c.max_abs) c.max_abs = fabs(d);
    }
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) continue;
        double r = fabs((double)a[i] - b[i]) / (fabs(b[i]) + 1e-6 * bmax + 1e-30);
        if (r > c.max_rel) c.max_rel = r;
    }
    c.norm_err = den > 0 ? sqrt(num / den) : sqrt(num);
    return c;
}

int lt_check_close(const char *what, const float *got, const float *want, size_t n, double tol) {
    lt_cmp c = lt_compare(got, want, n);
    int ok = c.n_nonfinite == 0 && c.norm_err <= tol;
    lt_test_checks++;
    if (!ok) {
        lt_test_failures++;
        fprintf(stderr, "FAIL %s: normalized error %.3g (tol %.3g), max abs %.3g, %zu non-finite of %zu\n", what,
                c.norm_err, tol, c.max_abs, c.n_nonfinite, n);
    } else if (getenv("LT_TEST_VERBOSE")) {
        printf("  ok %-48s norm err %.3g  max abs %.3g\n", what, c.norm_err, c.max_abs);
    }
    return ok;
}

void lt_fill_normal(float *x, size_t n, float scale, uint64_t seed) {
    lt_rng r;
    lt_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * lt_rng_normal(&r);
}

void lt_poison(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

static void mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    }
    mkdir(buf, 0755);
}

const char *lt_test_tmpdir(const char *name) {
    static char buf[4096];
    const char *env = getenv("LT_TMP");
    if (env && *env)
        snprintf(buf, sizeof buf, "%s", env);
    else
        snprintf(buf, sizeof buf, "%s/%s", LT_TEST_TMP, name);
    mkdirs(buf);
    return buf;
}

int lt_test_fixture_model(const char *name, char *dir, size_t cap, lt_config *cfg) {
    snprintf(dir, cap, "%s/%s", lt_src_path("tests/fixtures/models"), name);
    lt_err err;
    if (lt_config_load(dir, cfg, &err) == LT_OK) return 1;
    LT_CHECK(0, "%s: %s", dir, err.msg);
    return 0;
}

const char *lt_src_path(const char *rel) {
    static char buf[4][4096];
    static int k = 0;
    k = (k + 1) & 3;
    const char *env = getenv("LT_SOURCE_DIR");
    snprintf(buf[k], sizeof buf[k], "%s/%s", env && *env ? env : LT_SOURCE_DIR, rel);
    return buf[k];
}

const char *lt_shared_path(const char *rel) {
    static char buf[4][4096];
    static int k = 0;
    k = (k + 1) & 3;
    const char *env = getenv("LT_SHARED_DIR");
    snprintf(buf[k], sizeof buf[k], "%s/%s", env && *env ? env : LT_SHARED_DIR, rel);
    return buf[k];
}

int lt_test_system(const char *cmd) {
    int st = system(cmd);
    if (st == -1) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void lt_test_random_batch(lt_rng *r, int B, int T, int V, int min_len, int max_len, int pad, int32_t *tok,
                          int32_t *tgt, int32_t *pos, int32_t *doc) {
    int *lens = malloc((size_t)T * sizeof *lens);
    uint8_t *mask = malloc((size_t)T);
    if (!lens || !mask) {
        LT_CHECK(0, "out of memory for a %d-token batch", T);
        free(lens);
        free(mask);
        return;
    }
    for (int b = 0; b < B; b++) {
        int nd = 0, s = 0;
        while (s < T - pad) {
            int len = min_len + (int)(lt_rng_u64(r) % (uint64_t)(max_len - min_len + 1));
            if (len > T - s) len = T - s;
            lens[nd++] = len;
            s += len;
        }
        for (int t = 0; t < T; t++) {
            tok[b * T + t] = (int32_t)(lt_rng_u64(r) % (uint64_t)V);
            mask[t] = (uint8_t)(lt_rng_u64(r) % 4 != 0);
        }
        lt_err err;
        lt_status st = lt_batch_fill_sequence(T, tok + b * T, mask, lens, nd, tgt + b * T, pos + b * T,
                                              doc + b * T, &err);
        LT_CHECK(st == LT_OK, "random batch refused: %s", err.msg);
    }
    free(lens);
    free(mask);
}

int lt_test_add_lora(lt_model *m, double dropout, lt_rng *rng) {
    lt_err err;
    lt_peft_config pc = {0};
    pc.r = 4;
    pc.alpha = 8;
    pc.dropout = dropout;
    pc.targets = LT_LORA_ALL_TARGETS;
    if (lt_trainer_add_lora(m, &pc, rng, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 0;
    }
    lt_backend *be = lt_model_backend(m);
    for (size_t i = 0; i < lt_model_num_params(m); i++) {
        lt_param *p = lt_model_param(m, i);
        if (!strstr(p->name, "lora_B")) continue;
        float *h = malloc(p->numel * sizeof *h);
        if (!h) return 0;
        for (size_t k = 0; k < p->numel; k++) h[k] = 0.05f * (lt_rng_uniform(rng) - 0.5f);
        lt_status st = be->upload_f32(be, p->data, LT_F32, h, p->numel, &err);
        free(h);
        if (st != LT_OK) {
            fprintf(stderr, "%s: %s\n", p->name, err.msg);
            return 0;
        }
    }
    return 1;
}

int lt_test_relayout(const char *src, const char *dst, int lay) {
    lt_err err = {{0}};
    lt_config cfg;
    lt_st_file *f = NULL;
    char path[4096], cmd[8400];
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s/config.json' '%s/'", dst, dst, src, dst);
    if (lt_config_load(src, &cfg, &err) || !cfg.wrap || lt_st_open(path, &f, &err) || lt_test_system(cmd)) {
        fprintf(stderr, "relayout %s: %s\n", src, cfg.wrap || err.msg[0] ? err.msg : "not a multimodal model");
        if (f) lt_st_close(f);
        return 0;
    }
    size_t n = lt_st_count(f);
    lt_st_write_tensor *w = calloc(n + 1, sizeof *w);
    char (*names)[256] = calloc(n + 1, sizeof *names);
    int ok = w && names;
    for (size_t i = 0; ok && i < n; i++) {
        const lt_st_tensor *t = lt_st_get(f, i);
        char canon[256];
        snprintf(names[i], sizeof names[i], "%s", t->name);
        for (int from = 0; from < LT_WRAP_LAYOUTS; from++) { /* from whichever layout names it */
            const lt_family_layout *a = &cfg.wrap->layouts[from], *b = &cfg.wrap->layouts[lay];
            if (lt_wrap_unname(cfg.wrap, from, t->name, canon, sizeof canon)) {
                lt_wrap_name(cfg.wrap, lay, canon, names[i], sizeof names[i]);
                break;
            }
            for (int k = 0; a->others[k]; k++)
                if (!strncmp(t->name, a->others[k], strlen(a->others[k]))) {
                    snprintf(names[i], sizeof names[i], "%s%s", b->others[k], t->name + strlen(a->others[k]));
                    from = LT_WRAP_LAYOUTS;
                    break;
                }
        }
        w[i].name = names[i];
        w[i].dtype = t->dtype;
        w[i].ndim = t->ndim;
        memcpy(w[i].shape, t->shape, sizeof w[i].shape);
        w[i].data = t->data;
    }
    static const char *const mk[] = {"format"}, *const mv[] = {"pt"};
    snprintf(path, sizeof path, "%s/model.safetensors", dst);
    if (ok && lt_st_write(path, w, n, mk, mv, 1, &err)) {
        fprintf(stderr, "relayout %s: %s\n", src, err.msg);
        ok = 0;
    }
    free(w);
    free(names);
    lt_st_close(f);
    return ok;
}
