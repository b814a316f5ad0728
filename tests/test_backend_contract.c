/*
 * test_backend_contract.c -- what every backend promises beyond its kernels'
 * numbers (core/lt_backend.h):
 *   - the registry: "cpu" built in, device backends registered by
 *     cuda/lt_backends.c before main, unknown or absent names refused by name;
 *   - creating a backend checks every op slot (a hole is a message naming the
 *     op, tested with a registered fake backend whose table has one);
 *   - lt_backend_set_option refuses unknown options and values by name;
 *   - attention_bwd refuses a doc_start that decreases inside a sequence,
 *     attention_fwd takes the decode (KV cache) pattern;
 *   - cross_entropy with -inf logits (masked tokens), including rows whose
 *     first values are all -inf, against a double-precision reference.
 *
 * `test_backend_contract` runs this on the CPU backend;
 * `test_backend_contract cuda` (ctest test_backend_contract_cuda, label gpu)
 * on the CUDA backend, and skips (77) where it cannot be created.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_backend.h"
#include "lt_test.h"

static int has(const char *msg, const char *part) { return strstr(msg, part) != NULL; }

/* ---- a fake backend: the CPU table with one op slot emptied ---- */

static const char *fake_hole = "attention_bwd";

static lt_status fake_set_option(lt_backend *be, const char *key, const char *value, lt_err *err) {
    (void)be;
    if (!strcmp(key, "knob") && !strcmp(value, "on")) return LT_OK;
    return lt_fail(err, LT_ERR_INVALID, "fake: unknown option '%s' = '%s'", key, value);
}

static lt_status fake_create(int device, int threads, lt_backend **out, lt_err *err) {
    (void)device;
    lt_backend *be = NULL;
    lt_status st = lt_cpu_backend_create(threads, &be, err);
    if (st) return st;
    be->name = "fake";
    be->set_option = fake_set_option;
    if (fake_hole && !strcmp(fake_hole, "attention_bwd")) be->attention_bwd = NULL;
    if ((st = lt_backend_check_slots(be, err)) != LT_OK) {
        be->destroy(be);
        return st;
    }
    *out = be;
    return LT_OK;
}

static const lt_backend_reg fake_reg = {"fake", fake_create};

static void test_registry(void) {
    lt_err err;
    LT_CHECK(lt_backend_find("cpu") != NULL, "cpu is built in");
    LT_CHECK(lt_backend_get(0) && !strcmp(lt_backend_get(0)->name, "cpu"), "cpu comes first");
#ifdef LT_HAVE_CUDA
    LT_CHECK(lt_backend_find("cuda") != NULL, "a CUDA build registers cuda before main (cuda/lt_backends.c)");
#else
    lt_backend *be = NULL;
    lt_status st = lt_backend_create("cuda", 1, &be, &err);
    LT_CHECK(st == LT_ERR_UNSUPPORTED && !be, "cuda without the CUDA backend: %s", lt_status_name(st));
    LT_CHECK(has(err.msg, "no CUDA backend") && has(err.msg, "cpu"), "message: %s", err.msg);
#endif
    lt_backend *bad = NULL;
    lt_status st2 = lt_backend_create("tpu", 1, &bad, &err);
    LT_CHECK(st2 == LT_ERR_INVALID && !bad, "unknown device: %s", lt_status_name(st2));
    LT_CHECK(has(err.msg, "'tpu'") && has(err.msg, "cpu"), "message names it and lists the registered: %s", err.msg);

    int n0 = lt_backend_count();
    LT_CHECK_OK(lt_backend_register(&fake_reg, &err), &err);
    LT_CHECK(lt_backend_count() == n0 + 1, "registered: %d -> %d", n0, lt_backend_count());
    LT_CHECK_OK(lt_backend_register(&fake_reg, &err), &err);
    LT_CHECK(lt_backend_count() == n0 + 1, "a second registration is ignored");
    LT_CHECK(lt_backend_find("fake") == &fake_reg, "found by name");
    static const lt_backend_reg nameless = {NULL, fake_create};
    LT_CHECK(lt_backend_register(&nameless, &err) == LT_ERR_INVALID, "a registration without a name is refused");

    /* creating it runs the slot check: the hole is named */
    lt_backend *fk = NULL;
    lt_status st3 = lt_backend_create("fake", 1, &fk, &err);
    LT_CHECK(st3 == LT_ERR_UNSUPPORTED && !fk, "a table with a hole: %s", lt_status_name(st3));
    LT_CHECK(has(err.msg, "'attention_bwd'") && has(err.msg, "fake"), "message names the op: %s", err.msg);
    fake_hole = NULL;
    LT_CHECK_OK(lt_backend_create("fake", 1, &fk, &err), &err);
    if (fk) {
        LT_CHECK_OK(lt_backend_set_option(fk, "knob", "on", &err), &err);
        LT_CHECK(lt_backend_set_option(fk, "knob", "off", &err) == LT_ERR_INVALID, "the backend refuses a value");
        fk->destroy(fk);
    }
}

/* every slot, emptied one at a time in a copy of a real table */
static void test_slots(lt_backend *be) {
    lt_err err;
    LT_CHECK_OK(lt_backend_check_slots(be, &err), &err);
    int n = lt_backend_slot_count();
    LT_CHECK(n >= 28, "%d slots", n);
    for (int i = 0; i < n; i++) {
        const char *name = lt_backend_slot_name(i);
        lt_backend copy = *be;
        /* find the slot by the message of its own hole: empty each pointer-
         * sized field after ctx until the check names `name` */
        int found = 0;
        for (size_t off = offsetof(lt_backend, alloc); off + sizeof(void (*)(void)) <= sizeof copy && !found;
             off += sizeof(void (*)(void))) {
            copy = *be;
            void (*zero)(void) = NULL;
            memcpy((char *)&copy + off, &zero, sizeof zero);
            if (lt_backend_check_slots(&copy, &err) != LT_OK) {
                char want[128];
                snprintf(want, sizeof want, "'%s'", name);
                found = has(err.msg, want);
            }
        }
        LT_CHECK(found, "emptying slot %s is reported by name", name);
    }
    LT_CHECK(lt_backend_slot_name(n) == NULL && lt_backend_slot_name(-1) == NULL, "slot names out of range");
}

static void test_options(lt_backend *be, int is_cuda) {
    lt_err err;
    LT_CHECK(lt_backend_set_option(be, "no_such_option", "1", &err) == LT_ERR_INVALID, "unknown option refused");
    LT_CHECK(has(err.msg, "no_such_option"), "message names it: %s", err.msg);
    if (!is_cuda) {
        LT_CHECK(lt_backend_set_option(be, "attn_version", "2", &err) == LT_ERR_INVALID, "cpu has no options");
        return;
    }
    static const char *ok[][2] = {{"attn_version", "1"},    {"attn_version", "2"},      {"lora_version", "1"},
                                  {"lora_version", "2"},    {"lora_chunk_rows", "64"}, {"lora_chunk_rows", "0"},
                                  {"nf4_version", "1"},     {"nf4_version", "2"}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        LT_CHECK_OK(lt_backend_set_option(be, ok[i][0], ok[i][1], &err), &err);
    static const char *bad[][2] = {{"attn_version", "3"}, {"attn_version", ""},       {"lora_version", "v1"},
                                   {"lora_chunk_rows", "-1"}, {"lora_chunk_rows", "12x"}, {"nf4_version", "0"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        LT_CHECK(lt_backend_set_option(be, bad[i][0], bad[i][1], &err) == LT_ERR_INVALID, "%s = '%s' refused",
                 bad[i][0], bad[i][1]);
        LT_CHECK(has(err.msg, bad[i][0]), "message names the option: %s", err.msg);
    }
    /* the environment is read once, at creation, and checked like the option */
    setenv("LT_ATTN_VERSION", "7", 1);
    lt_backend *b2 = NULL;
    lt_status st = lt_backend_create("cuda", 0, &b2, &err);
    unsetenv("LT_ATTN_VERSION");
    LT_CHECK(st == LT_ERR_INVALID && !b2, "LT_ATTN_VERSION=7 refused at creation: %s", lt_status_name(st));
    LT_CHECK(has(err.msg, "LT_ATTN_VERSION") && has(err.msg, "'7'"), "message: %s", err.msg);
    if (b2) b2->destroy(b2);
}

/* ---- device buffers from host values ---- */

static void *dev_f32(lt_backend *be, const float *x, size_t n, lt_dtype dt) {
    lt_err err;
    void *p = NULL;
    LT_CHECK_OK(be->alloc(be, n * lt_dtype_size(dt), &p, &err), &err);
    if (p) LT_CHECK_OK(be->upload_f32(be, p, dt, x, n, &err), &err);
    return p;
}

static void *dev_i32(lt_backend *be, const int32_t *x, size_t n) {
    lt_err err;
    void *p = NULL;
    LT_CHECK_OK(be->alloc(be, n * 4, &p, &err), &err);
    if (p) LT_CHECK_OK(be->upload(be, p, x, n * 4, &err), &err);
    return p;
}

/* attention_bwd refuses a decreasing doc_start; attention_fwd takes the
 * decode pattern */
static void test_doc_start(lt_backend *be) {
    enum { B = 1, T = 6, H = 2, D = 64 };
    lt_err err;
    size_t nq = (size_t)B * T * H * D;
    float *hx = malloc(nq * sizeof *hx);
    lt_fill_normal(hx, nq, 1.0f, 7);
    lt_dtype A = be->act_dtype;
    void *q = dev_f32(be, hx, nq, A), *k = dev_f32(be, hx, nq, A), *v = dev_f32(be, hx, nq, A);
    void *out = dev_f32(be, hx, nq, A), *dout = dev_f32(be, hx, nq, A);
    void *dq = dev_f32(be, hx, nq, A), *dk = dev_f32(be, hx, nq, A), *dv = dev_f32(be, hx, nq, A);
    float lse0[B * H * T] = {0};
    float *lse = dev_f32(be, lse0, (size_t)B * H * T, LT_F32);
    /* decode: rows 0..2 cached (one-token documents), rows 3..5 new from 0 */
    const int32_t decode[T] = {0, 1, 2, 0, 0, 0};
    const int32_t packed[T] = {0, 0, 0, 3, 3, 5};
    int32_t *dd = dev_i32(be, decode, T), *dp = dev_i32(be, packed, T);
    float scale = 0.125f;
    be->attention_fwd(be, out, lse, q, k, v, dd, B, T, H, H, D, scale);
    LT_CHECK_OK(be->sync(be, &err), &err);
    be->attention_fwd(be, out, lse, q, k, v, dp, B, T, H, H, D, scale);
    be->attention_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, dp, B, T, H, H, D, scale);
    LT_CHECK_OK(be->sync(be, &err), &err);
    /* the refusal (the failure is sticky: this runs last) */
    be->attention_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, dd, B, T, H, H, D, scale);
    lt_status st = be->sync(be, &err);
    LT_CHECK(st == LT_ERR_INVALID, "a decreasing doc_start is refused by attention_bwd: %s", lt_status_name(st));
    LT_CHECK(has(err.msg, "attention_bwd") && has(err.msg, "decreases") && has(err.msg, "position 3"),
             "message: %s", err.msg);
    void *bufs[] = {q, k, v, out, dout, dq, dk, dv, lse, dd, dp};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->free(be, bufs[i]);
    free(hx);
}

/* cross_entropy with -inf logits, against double precision */
static void test_loss_neg_inf(lt_backend *be, int is_cuda) {
    enum { N = 4, V = 1500 };
    lt_err err;
    float *hl = malloc((size_t)N * V * sizeof *hl);
    lt_fill_normal(hl, (size_t)N * V, 2.0f, 11);
    if (is_cuda) /* compare against the same bf16-rounded logits */
        for (size_t i = 0; i < (size_t)N * V; i++) hl[i] = lt_bf16_to_f32(lt_f32_to_bf16(hl[i]));
    int32_t tg[N] = {1499, 700, -1, 1023};
    for (int n = 0; n < N; n++)
        for (int v = 0; v < V; v++) {
            int masked = n == 0 ? v < 1024                     /* every thread's first two values */
                         : n == 1 ? (v < 600 || v % 3 == 0)    /* first values and a comb */
                         : n == 2 ? v < 1400                   /* not a target */
                                  : v % 512 < 300;             /* some threads all -inf */
            if (masked && v != tg[n]) hl[(size_t)n * V + v] = -INFINITY;
        }
    double want[N], *pw = malloc((size_t)N * V * sizeof *pw);
    float gs = 0.25f;
    for (int n = 0; n < N; n++) {
        const float *l = hl + (size_t)n * V;
        double mx = -INFINITY, Z = 0;
        for (int v = 0; v < V; v++) mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < V; v++) Z += exp((double)l[v] - mx);
        want[n] = tg[n] < 0 ? 0.0 : mx + log(Z) - l[tg[n]];
        for (int v = 0; v < V; v++)
            pw[(size_t)n * V + v] = tg[n] < 0 ? 0.0 : gs * (exp((double)l[v] - mx) / Z - (v == tg[n]));
    }
    void *lg = dev_f32(be, hl, (size_t)N * V, be->act_dtype), *dl = dev_f32(be, hl, (size_t)N * V, be->act_dtype);
    float z[N] = {0};
    float *loss = dev_f32(be, z, N, LT_F32);
    int32_t *dt = dev_i32(be, tg, N);
    be->cross_entropy(be, loss, dl, lg, dt, N, V, gs);
    LT_CHECK_OK(be->sync(be, &err), &err);
    float got[N], *gd = malloc((size_t)N * V * sizeof *gd);
    LT_CHECK_OK(be->download_f32(be, got, loss, LT_F32, N, &err), &err);
    LT_CHECK_OK(be->download_f32(be, gd, dl, be->act_dtype, (size_t)N * V, &err), &err);
    double tol_d = is_cuda ? 1e-2 * gs : 1e-6;
    for (int n = 0; n < N; n++) {
        LT_CHECK(isfinite(got[n]) && fabs(got[n] - want[n]) <= 1e-5 * (1 + fabs(want[n])),
                 "row %d: loss %.9g, want %.9g", n, got[n], want[n]);
        int bad = 0;
        for (int v = 0; v < V; v++) {
            double g = gd[(size_t)n * V + v], w = pw[(size_t)n * V + v];
            if (!isfinite(g) || fabs(g - w) > tol_d * (1 + fabs(w) / gs) ||
                (hl[(size_t)n * V + v] == -INFINITY && g != 0.0))
                bad++;
        }
        LT_CHECK(bad == 0, "row %d: %d dlogits wrong (a -inf logit has gradient 0)", n, bad);
    }
    be->free(be, lg), be->free(be, dl), be->free(be, loss), be->free(be, dt);
    free(hl), free(pw), free(gd);
}

int main(int argc, char **argv) {
    int is_cuda = argc > 1 && !strcmp(argv[1], "cuda");
    lt_err err;
    lt_backend *be = NULL;
    if (is_cuda) {
        lt_status st = lt_backend_create("cuda", 0, &be, &err);
        if (st == LT_ERR_UNSUPPORTED) {
            printf("test_backend_contract cuda: skipped: %s\n", err.msg);
            return LT_TEST_SKIP;
        }
        LT_CHECK_OK(st, &err);
        if (!be) return lt_test_finish("test_backend_contract cuda");
    } else {
        test_registry();
        LT_CHECK_OK(lt_backend_create("cpu", 1, &be, &err), &err);
        if (!be) return lt_test_finish("test_backend_contract");
    }
    test_slots(be);
    test_options(be, is_cuda);
    test_loss_neg_inf(be, is_cuda);
    test_doc_start(be); /* last: it leaves the backend's sticky failure */
    be->destroy(be);
    return lt_test_finish(is_cuda ? "test_backend_contract cuda" : "test_backend_contract");
}
