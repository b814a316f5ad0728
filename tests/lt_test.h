/*
 * lt_test.h -- helpers shared by the C tests: checks that count failures,
 * normalized error comparison, poisoning, scratch folders and skip.
 * A test's main returns lt_test_finish(): 0 if every check passed, 1 if not.
 * Return LT_TEST_SKIP (77) where a prerequisite is absent (ctest: skipped).
 */
#ifndef LT_TEST_H
#define LT_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "lt_base.h"
#include "lt_config.h"

#define LT_TEST_SKIP 77

extern int lt_test_failures;
extern int lt_test_checks;

#define LT_CHECK(cond, ...)                                                     \
    do {                                                                        \
        lt_test_checks++;                                                       \
        if (!(cond)) {                                                          \
            lt_test_failures++;                                                 \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

/* Check an lt_status is LT_OK, printing the error message otherwise. */
#define LT_CHECK_OK(expr, errp)                                                         \
    do {                                                                                \
        lt_status _st = (expr);                                                         \
        LT_CHECK(_st == LT_OK, "%s: %s", lt_status_name(_st), (errp)->msg);             \
    } while (0)

/* snprintf into an array that must hold the whole text: a test whose paths
 * or commands do not fit stops with a message instead of running a cut one. */
#define LT_FMT(arr, ...)                                                                          \
    do {                                                                                          \
        if (snprintf((arr), sizeof(arr), __VA_ARGS__) >= (int)sizeof(arr)) {                     \
            fprintf(stderr, "FAIL %s:%d: %s (%zu bytes) is too small\n", __FILE__, __LINE__, #arr, \
                    sizeof(arr));                                                                 \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

int lt_test_finish(const char *name);

/* Max over i of |a-b| / (|b| + atol_floor) is not what we use; instead the
 * normalized error  ||a - b||_2 / max(||b||_2, tiny)  and the max abs error.
 * Returns 1 if the normalized error <= tol and nothing is NaN/Inf. */
typedef struct lt_cmp {
    double norm_err;  /* ||a-b|| / ||b|| */
    double max_abs;   /* max |a-b| */
    double max_rel;   /* max |a-b| / (|b| + 1e-6 * max|b|) */
    size_t n_nonfinite;
} lt_cmp;
lt_cmp lt_compare(const float *a, const float *b, size_t n);
int lt_check_close(const char *what, const float *got, const float *want, size_t n, double tol);

/* Fill with N(0, scale^2) from a seeded RNG. */
void lt_fill_normal(float *x, size_t n, float scale, uint64_t seed);
/* Poison: fill with NaN so an unwritten output never passes. */
void lt_poison(float *x, size_t n);

/* A random packed batch of B sequences x T tokens with vocabulary V: each
 * sequence holds documents of min_len..max_len tokens back to back until at
 * most `pad` tokens are left (those become padding), random ids, and a
 * random loss mask (3 in 4 tokens are targets); targets/pos/doc_start from
 * lt_batch_fill_sequence. Counts a failed check if the layout is refused. */
void lt_test_random_batch(lt_rng *r, int B, int T, int V, int min_len, int max_len, int pad, int32_t *tok,
                          int32_t *tgt, int32_t *pos, int32_t *doc);

/* Scratch folder for this test ($LT_TMP or LT_TEST_TMP/<name>), created. */
const char *lt_test_tmpdir(const char *name);
/* Path of a file under the source tree / shared folder (static buffer). */
const char *lt_src_path(const char *rel);
const char *lt_shared_path(const char *rel);
/* The fixture model tests/fixtures/models/NAME: its folder into dir (cap
 * bytes) and its config; 0 and a failed check if the config does not load. */
int lt_test_fixture_model(const char *name, char *dir, size_t cap, lt_config *cfg);
/* Run a shell command, return its exit status (-1 if it could not run). */
int lt_test_system(const char *cmd);

/* A copy of the multimodal model folder `src` (a config lt_config.wrap
 * names, e.g. tests/fixtures/models/gemma3_cg) in `dst` with its tensors
 * renamed into layout `lay` of the wrapper (the language model's and the
 * other towers' prefixes; data byte for byte), config.json copied. Prints
 * the error and returns 0 on failure. */
int lt_test_relayout(const char *src, const char *dst, int lay);

/* LoRA r=4 alpha=8 on every target (dropout as given) added to m, then every
 * lora_B set to uniform values in [-0.025, 0.025) drawn from rng (B = 0 after
 * init would give A no gradient). Prints the error and returns 0 on failure. */
struct lt_model;
int lt_test_add_lora(struct lt_model *m, double dropout, lt_rng *rng);

#endif
