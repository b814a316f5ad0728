/*
 * bench_ckpt.c -- checkpoint write time and bytes per rank: the sharded
 * checkpoint of a run of W ranks (lt_ckpt_write_sharded: each rank writes its
 * own slices) against the gathered one (rank 0 gathers every tensor and
 * writes weights.safetensors / optimizer.safetensors, as one process does),
 * for the trainable tensors of a model folder under ZeRO-1 (full fine-tuning,
 * f32 AdamW state). Prints figures; asserts nothing. Run under mpirun:
 *   for n in 1 2 3; do mpirun -np $n build/bench/bench_ckpt [MODEL_DIR] [REPS] [RUN_DIR]; done
 * defaults: data/sample/model, 5, /tmp/bench_ckpt-<pid of rank 0> (removed at
 * the end; on several nodes give a shared folder). One process writes only
 * the gathered form (what a 1-process run writes). Times are medians over
 * REPS writes (each a new step); bytes are the files each rank wrote.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt_ckpt.h"
#include "lt_comm.h"
#include "lt_fs.h"
#include "lt_model.h"
#include "lt_optim.h"
#include "lt_trainer.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(lt_comm *c, const char *msg) {
    fprintf(stderr, "bench_ckpt: %s\n", msg);
    if (c && c->world > 1) c->abort(c, msg);
    exit(1);
}

/* bytes of the files of checkpoint `dir` whose names contain `part` */
static long long bytes_of(const char *dir, const char *part) {
    static const char *const names[] = {"weights", "optimizer"};
    long long n = 0;
    char p[4096];
    for (int k = 0; k < 2; k++) {
        if (strstr(part, "rank-")) snprintf(p, sizeof p, "%s/%s-%s.safetensors", dir, names[k], part);
        else snprintf(p, sizeof p, "%s/%s.safetensors", dir, names[k]);
        int64_t s = lt_fs_file_size(p);
        if (s > 0) n += s;
    }
    return n;
}

int main(int argc, char **argv) {
    char def[4096], run[4096];
    snprintf(def, sizeof def, "%s/data/sample/model", getenv("LT_SOURCE_DIR") ? getenv("LT_SOURCE_DIR") : ".");
    const char *dir = argc > 1 ? argv[1] : def;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    if (reps < 1) reps = 1;
    lt_err err = {{0}};
    lt_comm *c = NULL;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_trainer *tr = NULL;
    lt_optim_cfg oc = {{LT_SCHED_CONSTANT, 1e-4, 0, 1000, 0}, 0.9, 0.999, 1e-8, 0.01, 1.0};
    if (lt_comm_create("auto", NULL, &c, &err) || lt_backend_create("cpu", 1, &be, &err) ||
        lt_model_load(dir, be, &m, &err) || lt_trainer_create(m, &oc, 0, 0, &tr, &err) ||
        (c->world > 1 && lt_trainer_distribute(tr, c, 1, LT_F32, &err)))
        die(c, err.msg);
    lt_optim *o = lt_trainer_optim(tr);
    long pid = (long)getpid();
    if (c->world > 1 && c->broadcast(c, &pid, sizeof pid, 0, &err)) die(c, err.msg);
    if (argc > 3) snprintf(run, sizeof run, "%s", argv[3]);
    else snprintf(run, sizeof run, "/tmp/bench_ckpt-%ld", pid);
    if (!c->rank) lt_fs_mkdir_p(run, &err);
    double *ts = calloc((size_t)reps, sizeof *ts), *tg = calloc((size_t)reps, sizeof *tg);
    lt_ckpt_state st = {0};
    snprintf(st.mode, sizeof st.mode, "full");
    snprintf(st.options_hash, sizeof st.options_hash, "0000000000000000");
    char out[4096] = "", part[64];
    for (int r = 0; r < reps; r++) {
        if (c->world > 1) { /* sharded */
            st.step = 2 * r + 1;
            c->barrier(c, &err);
            double t0 = lt_now_s();
            if (lt_ckpt_write_sharded(run, &st, o, c, 0, out, sizeof out, &err)) die(c, err.msg);
            ts[r] = lt_now_s() - t0;
        }
        /* gathered: rank 0 collects every tensor and writes */
        st.step = 2 * r + 2;
        if (c->world > 1) c->barrier(c, &err);
        double t0 = lt_now_s();
        if (c->rank) {
            if (lt_optim_params_to_tlist(o, NULL, &err) || lt_optim_state_to_tlist(o, NULL, &err)) die(c, err.msg);
        } else {
            lt_tlist w = {0}, os = {0};
            if (lt_optim_params_to_tlist(o, &w, &err) || lt_optim_state_to_tlist(o, &os, &err) ||
                lt_ckpt_write(run, &st, &w, &os, 0, NULL, 0, &err))
                die(c, err.msg);
            lt_tlist_free(&w);
            lt_tlist_free(&os);
        }
        if (c->world > 1) c->barrier(c, &err);
        tg[r] = lt_now_s() - t0;
    }
    qsort(ts, (size_t)reps, sizeof *ts, cmp_d);
    qsort(tg, (size_t)reps, sizeof *tg, cmp_d);
    /* bytes per rank of the last sharded checkpoint, gathered on rank 0 for printing */
    char last_s[4200], last_g[4200];
    snprintf(last_s, sizeof last_s, "%s/checkpoints/step-%06d", run, 2 * reps - 1);
    snprintf(last_g, sizeof last_g, "%s/checkpoints/step-%06d", run, 2 * reps);
    if (!c->rank) {
        size_t n = lt_optim_numel(o);
        printf("bench_ckpt: %s, %zu trainable f32 elements (weights %.2f MiB, + AdamW m and v), %d rank%s, "
               "median of %d\n",
               dir, n, n * 4.0 / 1048576, c->world, c->world > 1 ? "s" : "", reps);
        printf("  gathered (rank 0 writes all): %8.1f ms, rank 0 wrote %lld bytes\n", tg[reps / 2] * 1e3,
               bytes_of(last_g, ""));
        if (c->world > 1) {
            printf("  sharded (every rank its own): %8.1f ms; bytes per rank:", ts[reps / 2] * 1e3);
            for (int r = 0; r < c->world; r++) {
                snprintf(part, sizeof part, "rank-%05d-of-%05d", r, c->world);
                printf(" %lld", bytes_of(last_s, part));
            }
            char ip[4300];
            snprintf(ip, sizeof ip, "%s/index.json", last_s);
            printf(" (+ index.json %lld on rank 0)\n", (long long)lt_fs_file_size(ip));
        }
        if (argc <= 3) lt_fs_rm_rf(run);
    }
    free(ts);
    free(tg);
    lt_trainer_free(tr);
    lt_model_free(m);
    be->destroy(be);
    if (c->destroy) c->destroy(c);
    return 0;
}
