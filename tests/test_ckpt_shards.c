/*
 * test_ckpt_shards.c -- reading sharded checkpoints (lt_ckpt.h) without MPI:
 * a checkpoint "written by 2 ranks" is built by hand (rank files with uneven
 * and overlapping slices, index.json, COMPLETE), then
 *   - lt_ckpt_read returns any element range, across slice and file
 *     boundaries, equal to the values written;
 *   - lt_ckpt_load_optim into an optimizer sharded as rank 1 of 3 under ZeRO-1
 *     (another world size, other cut points) sets the whole parameters and
 *     exactly this rank's part of m and v (read back with lt_optim_part_of);
 *   - a slice whose length differs from its file's entry, a tensor whose
 *     slices leave a gap, and a missing rank file are refused, naming the
 *     tensor or file;
 *   - lt_ckpt_info_read (luxtrain inspect) gives each rank file's rank, size
 *     and slices (counts, first slice) and names a bad slice, a missing and a
 *     truncated rank file, with and without COMPLETE;
 *   - the writer (lt_ckpt_write_sharded) over a one-rank stand-in
 *     communicator: its files and index read back to the optimizer's values,
 *     and a NaN in a weight is refused naming the tensor, leaving neither
 *     step-N nor a temporary folder.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt_ckpt.h"
#include "lt_comm.h"
#include "lt_fs.h"
#include "lt_optim.h"
#include "lt_test.h"

static char DIR_[2048];

/* the value element i of tensor k (0 = A [40, 16], 1 = B [300]) has in kind q (0 weights, 1 exp_avg, 2 exp_avg_sq) */
static float val(int k, int q, size_t i) { return (float)(k * 10000 + q * 1000) + (float)i * 0.5f; }

static const char *const TN[2] = {"A", "B"};
static const size_t TNUM[2] = {640, 300};
/* slices [start, end) per file (rank 0, rank 1) and tensor */
static const size_t SL[2][2][2] = {{{0, 400}, {0, 10}}, {{400, 640}, {5, 300}}};

static void write_rank_files(void) {
    lt_err err = {{0}};
    for (int r = 0; r < 2; r++)
        for (int kind = 0; kind < 2; kind++) {
            lt_tlist l = {0};
            for (int k = 0; k < 2; k++)
                for (int q = kind ? 1 : 0; q < (kind ? 3 : 1); q++) {
                    char nm[64];
                    snprintf(nm, sizeof nm, "%s%s", TN[k], q == 0 ? "" : q == 1 ? ".exp_avg" : ".exp_avg_sq");
                    int64_t len = (int64_t)(SL[r][k][1] - SL[r][k][0]);
                    float *d = lt_tlist_new(&l, nm, LT_F32, 1, &len, &err);
                    for (int64_t i = 0; i < len; i++) d[i] = val(k, q, SL[r][k][0] + (size_t)i);
                }
            char path[4200];
            snprintf(path, sizeof path, "%s/%s-rank-%05d-of-00002.safetensors", DIR_, kind ? "optimizer" : "weights", r);
            LT_CHECK_OK(lt_tlist_write(&l, path, NULL, NULL, 0, &err), &err);
            lt_tlist_free(&l);
        }
    char path[4200];
    snprintf(path, sizeof path, "%s/loader.bin", DIR_);
    LT_CHECK_OK(lt_write_file_atomic(path, "", 0, &err), &err);
    snprintf(path, sizeof path, "%s/state.json", DIR_);
    const char *state = "{\"format\": \"luxtrain-checkpoint-1\", \"step\": 4, \"epoch\": 0, \"total_steps\": 10, "
                        "\"tokens_seen\": 0, \"lr\": null, \"loss\": null, \"mode\": \"full\", \"options_hash\": "
                        "\"0123456789abcdef\", \"rng\": [\"0000000000000001\", \"0000000000000002\", "
                        "\"0000000000000003\", \"0000000000000004\"], \"loader_bytes\": 0}";
    LT_CHECK_OK(lt_write_file_atomic(path, state, strlen(state), &err), &err);
}

/* index.json with `drop` (file r, tensor k; -1: none) left out, and B's rank-1 slice starting at b1; then COMPLETE */
static void write_index(int drop_r, int drop_k, size_t b1) {
    char text[8192];
    size_t n = 0;
    n += (size_t)snprintf(text + n, sizeof text - n, "{\"format\": \"luxtrain-sharded-1\", \"world\": 2");
    for (int kind = 0; kind < 2; kind++) {
        n += (size_t)snprintf(text + n, sizeof text - n, ", \"%s\": [", kind ? "optimizer" : "weights");
        int first = 1;
        for (int k = 0; k < 2; k++)
            for (int q = kind ? 1 : 0; q < (kind ? 3 : 1); q++) {
                n += (size_t)snprintf(text + n, sizeof text - n, "%s{\"name\": \"%s%s\", \"shape\": %s, \"slices\": [",
                                      first ? "" : ", ", TN[k], q == 0 ? "" : q == 1 ? ".exp_avg" : ".exp_avg_sq",
                                      k ? "[300]" : "[40, 16]");
                first = 0;
                int fs = 1;
                for (int r = 0; r < 2; r++) {
                    if (r == drop_r && k == drop_k) continue;
                    size_t a = SL[r][k][0], b = SL[r][k][1];
                    if (r == 1 && k == 1) a = b1;
                    n += (size_t)snprintf(text + n, sizeof text - n, "%s[\"%s-rank-%05d-of-00002.safetensors\", %zu, %zu]",
                                          fs ? "" : ", ", kind ? "optimizer" : "weights", r, a, b);
                    fs = 0;
                }
                n += (size_t)snprintf(text + n, sizeof text - n, "]}");
            }
        n += (size_t)snprintf(text + n, sizeof text - n, "]");
    }
    snprintf(text + n, sizeof text - n, "}");
    lt_err err = {{0}};
    char path[4200], man[4096];
    snprintf(path, sizeof path, "%s/index.json", DIR_);
    LT_CHECK_OK(lt_write_file_atomic(path, text, strlen(text), &err), &err);
    size_t m = (size_t)snprintf(man, sizeof man, "{\"step\": 4, \"files\": {");
    const char *files[] = {"index.json", "loader.bin", "state.json", "weights-rank-00000-of-00002.safetensors",
                           "weights-rank-00001-of-00002.safetensors", "optimizer-rank-00000-of-00002.safetensors",
                           "optimizer-rank-00001-of-00002.safetensors"};
    for (int i = 0; i < 7; i++) {
        snprintf(path, sizeof path, "%s/%s", DIR_, files[i]);
        m += (size_t)snprintf(man + m, sizeof man - m, "%s\"%s\": %lld", i ? ", " : "", files[i],
                              (long long)lt_fs_file_size(path));
    }
    snprintf(man + m, sizeof man - m, "}}");
    snprintf(path, sizeof path, "%s/COMPLETE", DIR_);
    LT_CHECK_OK(lt_write_file_atomic(path, man, strlen(man), &err), &err);
}

/* open must fail with a message containing `want` */
static void expect_open_error(const char *what, const char *want) {
    lt_ckpt *c = NULL;
    lt_err err = {{0}};
    lt_status st = lt_ckpt_open(DIR_, &c, &err);
    LT_CHECK(st != LT_OK && strstr(err.msg, want), "%s: expected an error with '%s', got %s", what, want,
             st ? err.msg : "success");
    lt_ckpt_close(c);
}

static lt_status no_reduce(lt_comm *c, void *buf, size_t n, lt_dtype dt, lt_err *err) {
    (void)c, (void)buf, (void)n, (void)dt, (void)err;
    return LT_OK;
}
static lt_status no_bcast(lt_comm *c, void *buf, size_t bytes, int root, lt_err *err) {
    (void)c, (void)buf, (void)bytes, (void)root, (void)err;
    return LT_OK;
}

static int count_prefix(const char *dir, const char *prefix) {
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c '^%s' >/dev/null", dir, prefix);
    return system(cmd) == 0;
}

/* lt_ckpt_write_sharded with one rank: round trip, and a NaN refused */
static void test_writer(lt_backend *be, const char *run) {
    lt_err err = {{0}};
    lt_optim *o = NULL;
    lt_optim_cfg oc = {{LT_SCHED_CONSTANT, 1e-3, 0, 10, 0}, 0.9, 0.999, 1e-8, 0.0, 0.0};
    LT_CHECK_OK(lt_optim_create(be, &oc, &o, &err), &err);
    float *param[2], *grad = NULL;
    const int64_t shp[2][2] = {{40, 16}, {300, 0}};
    for (int k = 0; k < 2; k++) LT_CHECK_OK(be->alloc(be, TNUM[k] * 4, (void **)&param[k], &err), &err);
    LT_CHECK_OK(be->alloc(be, 940 * 4, (void **)&grad, &err), &err);
    for (int k = 0; k < 2; k++)
        LT_CHECK_OK(lt_optim_add(o, TN[k], k ? 1 : 2, shp[k], param[k], LT_F32, grad, 1, &err), &err);
    lt_comm one = {.name = "stand-in", .rank = 0, .world = 1, .all_reduce_sum = no_reduce, .broadcast = no_bcast};
    LT_CHECK_OK(lt_optim_distribute(o, &one, 1, grad, &err), &err);
    float h[640];
    for (size_t i = 0; i < 2; i++) {
        lt_optim_part p;
        lt_optim_part_of(o, i, &p);
        for (int q = 0; q < 3; q++) {
            for (size_t e = 0; e < p.n; e++) h[e] = val((int)i, q, e);
            LT_CHECK_OK(be->upload_f32(be, q == 0 ? p.param : q == 1 ? p.m : p.v, LT_F32, h, p.n, &err), &err);
        }
    }
    lt_ckpt_state st = {.step = 7, .mode = "full", .options_hash = "0123456789abcdef"};
    char out[4096] = "";
    LT_CHECK_OK(lt_ckpt_write_sharded(run, &st, o, &one, 0, out, sizeof out, &err), &err);
    lt_ckpt *c = NULL;
    LT_CHECK_OK(lt_ckpt_open(out, &c, &err), &err);
    if (c) {
        LT_CHECK(c->world == 1 && lt_ckpt_count(c, LT_CKPT_WEIGHTS) == 2 && lt_ckpt_count(c, LT_CKPT_OPTIM) == 4,
                 "written checkpoint: world %d", c->world);
        for (int k = 0; k < 2; k++)
            for (int q = 0; q < 3; q++) {
                char nm[64];
                snprintf(nm, sizeof nm, "%s%s", TN[k], q == 0 ? "" : q == 1 ? ".exp_avg" : ".exp_avg_sq");
                LT_CHECK_OK(lt_ckpt_read(c, q ? LT_CKPT_OPTIM : LT_CKPT_WEIGHTS, nm, 0, TNUM[k], h, &err), &err);
                size_t bad = 0;
                for (size_t e = 0; e < TNUM[k]; e++) bad += h[e] != val(k, q, e);
                LT_CHECK(!bad, "written %s: %zu wrong values", nm, bad);
            }
        lt_ckpt_close(c);
    }
    /* a NaN in B's weights: refused by name, nothing left */
    for (size_t e = 0; e < 300; e++) h[e] = e == 17 ? NAN : val(1, 0, e);
    LT_CHECK_OK(be->upload_f32(be, param[1], LT_F32, h, 300, &err), &err);
    st.step = 8;
    lt_status s = lt_ckpt_write_sharded(run, &st, o, &one, 0, out, sizeof out, &err);
    LT_CHECK(s == LT_ERR_NONFINITE && strstr(err.msg, "'B'"), "a NaN written: %s", s ? err.msg : "accepted");
    char ck[4200];
    snprintf(ck, sizeof ck, "%s/checkpoints", run);
    LT_CHECK(count_prefix(ck, "step-000007"), "step-000007 not found by the listing");
    LT_CHECK(!count_prefix(ck, "step-000008") && !count_prefix(ck, ".tmp-step-000008"),
             "a refused checkpoint left a folder behind");
    lt_optim_free(o);
    for (int k = 0; k < 2; k++) be->free(be, param[k]);
    be->free(be, grad);
}

/* lt_ckpt_info_read: the entry of file `name` ("" problem when it has none) */
static const lt_ckpt_file_info *info_of(const lt_ckpt_info *in, const char *name) {
    for (size_t i = 0; i < in->n_files; i++)
        if (!strcmp(in->files[i].name, name)) return &in->files[i];
    return NULL;
}

/* what inspect shows of the hand-made checkpoint: per rank file its slices (SL) and size; problems none */
static void test_info_whole(void) {
    lt_err err = {{0}};
    lt_ckpt_info in;
    LT_CHECK_OK(lt_ckpt_info_read(DIR_, &in, &err), &err);
    LT_CHECK(in.sharded && in.world == 2 && in.zero == -1 && in.complete && !in.n_problems && in.step == 4 &&
                 !strcmp(in.mode, "full"),
             "info: sharded %d world %d zero %d complete %d problems %d (%s) step %lld", in.sharded, in.world, in.zero,
             in.complete, in.n_problems, in.problem, (long long)in.step);
    LT_CHECK(in.tensors[0] == 2 && in.elements[0] == 940 && in.tensors[1] == 4 && in.elements[1] == 1880,
             "info: %zu / %zu tensors, %zu / %zu elements", in.tensors[0], in.tensors[1], in.elements[0], in.elements[1]);
    for (int r = 0; r < 2; r++)
        for (int kind = 0; kind < 2; kind++) {
            char fn[96], path[4300];
            snprintf(fn, sizeof fn, "%s-rank-%05d-of-00002.safetensors", kind ? "optimizer" : "weights", r);
            snprintf(path, sizeof path, "%s/%s", DIR_, fn);
            const lt_ckpt_file_info *f = info_of(&in, fn);
            size_t el = (SL[r][0][1] - SL[r][0][0]) + (SL[r][1][1] - (r ? 5 : SL[r][1][0]));
            char first[64];
            snprintf(first, sizeof first, "A%s [%zu, %zu)", kind ? ".exp_avg" : "", SL[r][0][0], SL[r][0][1]);
            LT_CHECK(f && f->rank == r && f->kind == kind && f->in_index && f->size == lt_fs_file_size(path) &&
                         f->listed == f->size && f->tensors == (kind ? 4u : 2u) && f->whole == 0 &&
                         f->elements == (kind ? 2 : 1) * el && !strcmp(f->first, first) && !f->problem[0],
                     "info %s: rank %d kind %d size %lld/%lld tensors %zu whole %zu elements %zu first '%s' problem '%s'",
                     fn, f ? f->rank : -9, f ? f->kind : -9, f ? (long long)f->size : -9LL,
                     f ? (long long)f->listed : -9LL, f ? f->tensors : 0, f ? f->whole : 0, f ? f->elements : 0,
                     f ? f->first : "", f ? f->problem : "(no entry)");
        }
    lt_ckpt_info_free(&in);
}

/* lt_ckpt_info_read: file `name` has a problem containing `want` */
static void expect_info_problem(const char *what, const char *name, const char *want) {
    lt_err err = {{0}};
    lt_ckpt_info in;
    LT_CHECK_OK(lt_ckpt_info_read(DIR_, &in, &err), &err);
    const lt_ckpt_file_info *f = info_of(&in, name);
    LT_CHECK(f && in.n_problems >= 1 && strstr(f->problem, want), "%s: %s: expected a problem with '%s', got '%s'",
             what, name, want, f ? f->problem : "(no entry)");
    lt_ckpt_info_free(&in);
}

int main(void) {
    lt_err err = {{0}};
    snprintf(DIR_, sizeof DIR_, "%s/run/checkpoints/step-000004", lt_test_tmpdir("test_ckpt_shards"));
    LT_CHECK_OK(lt_fs_mkdir_p(DIR_, &err), &err);
    write_rank_files();
    write_index(-1, -1, 5);

    test_info_whole();
    lt_ckpt *c = NULL;
    LT_CHECK_OK(lt_ckpt_open(DIR_, &c, &err), &err);
    if (!c) return lt_test_finish("test_ckpt_shards");
    LT_CHECK(c->world == 2 && !c->weights && lt_ckpt_has_optim(c), "world %d", c->world);
    LT_CHECK(lt_ckpt_count(c, LT_CKPT_WEIGHTS) == 2 && lt_ckpt_count(c, LT_CKPT_OPTIM) == 4, "counts %zu %zu",
             lt_ckpt_count(c, LT_CKPT_WEIGHTS), lt_ckpt_count(c, LT_CKPT_OPTIM));
    const lt_st_tensor *t = lt_ckpt_get(c, LT_CKPT_WEIGHTS, 0);
    LT_CHECK(t && !strcmp(t->name, "A") && t->ndim == 2 && t->shape[0] == 40 && t->shape[1] == 16 && t->numel == 640,
             "tensor 0");
    /* ranges across the files' boundaries and the overlap */
    const size_t ranges[][3] = {{0, 0, 640}, {0, 390, 20}, {0, 639, 1}, {1, 0, 300}, {1, 3, 9}, {1, 299, 1}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        float buf[640];
        for (int q = 0; q < 3; q++) {
            int k = (int)ranges[r][0];
            char nm[64];
            snprintf(nm, sizeof nm, "%s%s", TN[k], q == 0 ? "" : q == 1 ? ".exp_avg" : ".exp_avg_sq");
            LT_CHECK_OK(lt_ckpt_read(c, q ? LT_CKPT_OPTIM : LT_CKPT_WEIGHTS, nm, ranges[r][1], ranges[r][2], buf, &err),
                        &err);
            size_t bad = 0;
            for (size_t i = 0; i < ranges[r][2]; i++) bad += buf[i] != val(k, q, ranges[r][1] + i);
            LT_CHECK(!bad, "%s [%zu, +%zu): %zu wrong values", nm, ranges[r][1], ranges[r][2], bad);
        }
    }
    float one;
    LT_CHECK(lt_ckpt_read(c, LT_CKPT_WEIGHTS, "B", 299, 2, &one, &err) == LT_ERR_RANGE, "a range past the end read");
    LT_CHECK(lt_ckpt_read(c, LT_CKPT_WEIGHTS, "C", 0, 1, &one, &err) != LT_OK && strstr(err.msg, "'C' is missing"),
             "missing tensor: %s", err.msg);

    /* load into an optimizer sharded as rank 1 of 3 (ZeRO-1) */
    lt_backend *be = NULL;
    LT_CHECK_OK(lt_backend_create("cpu", 1, &be, &err), &err);
    lt_optim *o = NULL;
    lt_optim_cfg oc = {{LT_SCHED_CONSTANT, 1e-3, 0, 10, 0}, 0.9, 0.999, 1e-8, 0.0, 0.0};
    LT_CHECK_OK(lt_optim_create(be, &oc, &o, &err), &err);
    float *param[2], *grad = NULL;
    const int64_t shp[2][2] = {{40, 16}, {300, 0}};
    for (int k = 0; k < 2; k++) {
        LT_CHECK_OK(be->alloc(be, TNUM[k] * 4, (void **)&param[k], &err), &err);
        be->zero(be, param[k], TNUM[k] * 4);
    }
    LT_CHECK_OK(be->alloc(be, 940 * 4, (void **)&grad, &err), &err);
    for (int k = 0; k < 2; k++)
        LT_CHECK_OK(lt_optim_add(o, TN[k], k ? 1 : 2, shp[k], param[k], LT_F32, grad, 1, &err), &err);
    lt_comm fake = {.name = "fake", .rank = 1, .world = 3}; /* distribute calls no collective */
    LT_CHECK_OK(lt_optim_distribute(o, &fake, 1, grad, &err), &err);
    LT_CHECK_OK(lt_ckpt_load_optim(c, o, &err), &err);
    size_t held = 0;
    for (size_t i = 0; i < 2; i++) {
        lt_optim_part p;
        lt_optim_part_of(o, i, &p);
        held += p.len;
        float *h = malloc(p.n * sizeof *h);
        LT_CHECK_OK(be->download_f32(be, h, p.param, p.param_dtype, p.param_len, &err), &err);
        size_t bad = 0;
        for (size_t e = 0; e < p.param_len; e++) bad += h[e] != val((int)i, 0, p.param_off + e);
        for (int q = 1; q < 3 && p.len; q++) {
            LT_CHECK_OK(be->download_f32(be, h, q == 1 ? p.m : p.v, LT_F32, p.len, &err), &err);
            for (size_t e = 0; e < p.len; e++) bad += h[e] != val((int)i, q, p.off + e);
        }
        LT_CHECK(!bad, "tensor %s (part [%zu, +%zu)): %zu wrong values after loading", p.name, p.off, p.len, bad);
        free(h);
    }
    /* rank 1 of 3 owns unit 2 of 4 (256 elements): A [512, 640) and B [0, 128) */
    LT_CHECK(held == 256, "rank 1 of 3 holds %zu elements", held);
    lt_ckpt_close(c);
    lt_optim_free(o);
    for (int k = 0; k < 2; k++) be->free(be, param[k]);
    be->free(be, grad);
    char run[2200];
    snprintf(run, sizeof run, "%s/writer", lt_test_tmpdir("test_ckpt_shards"));
    test_writer(be, run);
    be->destroy(be);

    /* damaged indexes */
    write_index(-1, -1, 6);
    expect_open_error("a slice longer than its entry", "does not hold tensor 'B' as 294 F32 elements");
    expect_info_problem("a slice longer than its entry", "weights-rank-00001-of-00002.safetensors",
                        "does not hold tensor 'B' as 294 F32 elements");
    write_index(0, 1, 5);
    expect_open_error("a gap", "tensor 'B': elements from 0 on are in no shard file");
    write_index(-1, -1, 5);
    char path[4200];
    snprintf(path, sizeof path, "%s/weights-rank-00001-of-00002.safetensors", DIR_);
    remove(path);
    lt_status st = lt_ckpt_check(DIR_, &err);
    LT_CHECK(st != LT_OK && strstr(err.msg, "weights-rank-00001-of-00002.safetensors: missing (listed in COMPLETE"),
             "a missing rank file: %s", st ? err.msg : "accepted");
    LT_CHECK(!lt_ckpt_is_complete(DIR_), "a checkpoint missing a rank file is complete");
    expect_info_problem("a missing rank file", "weights-rank-00001-of-00002.safetensors",
                        "weights-rank-00001-of-00002.safetensors: missing (COMPLETE lists it with");
    snprintf(path, sizeof path, "%s/optimizer-rank-00000-of-00002.safetensors", DIR_);
    LT_CHECK(truncate(path, 64) == 0, "truncate %s", path);
    expect_info_problem("a truncated rank file", "optimizer-rank-00000-of-00002.safetensors",
                        "optimizer-rank-00000-of-00002.safetensors: 64 bytes, but COMPLETE lists");
    snprintf(path, sizeof path, "%s/COMPLETE", DIR_);
    remove(path);
    expect_info_problem("no COMPLETE, a truncated rank file", "optimizer-rank-00000-of-00002.safetensors",
                        "optimizer-rank-00000-of-00002.safetensors: header length");
    expect_info_problem("no COMPLETE, a missing rank file", "weights-rank-00001-of-00002.safetensors",
                        "missing (rank 1 of 2 writes it)");
    return lt_test_finish("test_ckpt_shards");
}
