/*
 * test_trainer_chains.c -- the trainer's non-blocking gradient reductions
 * (ZeRO-1 and ZeRO-2, flat and hybrid --shard-group 2) against the
 * communicator contract of lt_comm.h, on 4 MPI ranks (the test starts
 * itself under `mpirun --oversubscribe -np 4`; skipped without mpirun or
 * without the MPI communicator):
 *   - a wrapper around the MPI communicator (and its splits) records every
 *     start and wait_req; every rank must make the same sequence of them
 *     (a wait decided by timing -- a request that happened to be done --
 *     would differ between ranks, and NCCL delivers a chain's result at
 *     those calls only, so they must be at the same program point);
 *   - again with test_req never reporting LT_REQ_DONE (as NCCL may): the
 *     trainer must take every result with wait_req, in start order, and not
 *     wait for test_req to say so (it would hang until the timeout);
 *   - every request is completed by exactly one wait_req, some ran at all
 *     with the overlap on (lt_trainer_async_reductions, the same count) and
 *     none with it off;
 *   - every step's loss and gradient norm bitwise equal to the blocking
 *     run's (overlap off).
 * A random Llama-shaped model (lt_model_create), a different random batch
 * per rank, 3 steps of 2 micro-batches per rank.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_comm.h"
#include "lt_model.h"
#include "lt_test.h"
#include "lt_trainer.h"

enum { NP = 4, SEQ = 8, MICRO = 2, STEPS = 3, VOCAB = 256 };

/* ---- a communicator that records starts and waits, and may hide DONE ---- */

typedef struct events {
    uint64_t hash;         /* FNV-1a over the sequence of 'R' (start), 'S' (chain start), 'W' (wait_req) */
    int64_t starts, waits;
    int hide_done;         /* test_req never reports LT_REQ_DONE */
} events;

typedef struct wcomm {
    lt_comm base; /* first: what the trainer sees (a copy of the inner one, some calls replaced) */
    lt_comm *in;
    events *ev;
} wcomm;

#define IN(c) (((wcomm *)(c))->in)
#define EV(c) (((wcomm *)(c))->ev)

static void record(lt_comm *c, char what) {
    events *e = EV(c);
    e->hash = (e->hash ^ (unsigned char)what) * 1099511628211ull;
    if (what == 'W') e->waits++;
    else e->starts++;
}

static lt_status w_rs_start(lt_comm *c, void *acc, const void *x, size_t n, const size_t *counts, lt_dtype dt,
                            void **req, lt_err *err) {
    record(c, 'R');
    return IN(c)->reduce_scatter_sum_ordered_start(IN(c), acc, x, n, counts, dt, req, err);
}
static lt_status w_chain(lt_comm *c, lt_comm *cross, void *acc, const void *x, size_t n, const size_t *counts,
                         lt_dtype dt, void **req, lt_err *err) {
    record(c, 'S');
    return IN(c)->reduce_scatter_sum_ordered_chain_start(IN(c), IN(cross), acc, x, n, counts, dt, req, err);
}
static lt_status w_wait(lt_comm *c, void *req, lt_err *err) {
    record(c, 'W');
    return IN(c)->wait_req(IN(c), req, err);
}
static lt_status w_test(lt_comm *c, void *req, int *state, lt_err *err) {
    lt_status st = IN(c)->test_req(IN(c), req, state, err);
    if (EV(c)->hide_done) *state &= ~LT_REQ_DONE;
    return st;
}
static void w_destroy(lt_comm *c) { /* a split (the root's inner one is main's) */
    IN(c)->destroy(IN(c));
    free(c);
}
static lt_status w_split(lt_comm *c, int color, int key, lt_comm **out, lt_err *err);

static void wrap(wcomm *w, lt_comm *in, events *ev) {
    w->base = *in; /* the inner calls get the wrapper: they only read its copied fields */
    w->in = in;
    w->ev = ev;
    lt_comm *c = &w->base;
    c->reduce_scatter_sum_ordered_start = w_rs_start;
    c->reduce_scatter_sum_ordered_chain_start = w_chain;
    c->wait_req = w_wait;
    c->test_req = w_test;
    c->split = w_split;
    c->destroy = w_destroy;
}

static lt_status w_split(lt_comm *c, int color, int key, lt_comm **out, lt_err *err) {
    *out = NULL;
    wcomm *w = calloc(1, sizeof *w);
    if (!w) return lt_fail(err, LT_ERR_NOMEM, "test: out of memory");
    lt_comm *in = NULL;
    lt_status st = IN(c)->split(IN(c), color, key, &in, err);
    if (st) {
        free(w);
        return st;
    }
    wrap(w, in, EV(c));
    *out = &w->base;
    return LT_OK;
}

/* ---- one run: STEPS steps; losses and grad norms out ---- */

typedef struct run_cfg {
    int zero, group, overlap, hide_done;
} run_cfg;

static lt_status run(lt_comm *c, const run_cfg *rc, double *loss, double *gnorm, events *ev, int64_t *async,
                     lt_err *err) {
    char json[768];
    snprintf(json, sizeof json,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": %d,"
             " \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 3,"
             " \"num_attention_heads\": 1, \"num_key_value_heads\": 1, \"head_dim\": 64, \"hidden_act\": \"silu\","
             " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"max_position_embeddings\": 64,"
             " \"tie_word_embeddings\": false, \"torch_dtype\": \"float32\"}",
             VOCAB);
    memset(ev, 0, sizeof *ev);
    ev->hash = 14695981039346656037ull;
    ev->hide_done = rc->hide_done;
    wcomm w;
    wrap(&w, c, ev);
    lt_config cfg;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_trainer *tr = NULL;
    lt_status st = lt_config_parse(json, "the test shape", &cfg, err);
    if (!st) st = lt_backend_create("cpu", 1, &be, err);
    if (!st) st = lt_model_create(&cfg, be, 1234, &m, err);
    if (!st && rc->zero >= 2) st = lt_model_pool_grads(m, err);
    if (!st) st = lt_model_plan(m, 1, SEQ, err);
    lt_optim_cfg oc = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01, .clip = 1.0};
    oc.sched.lr = 1e-3;
    oc.sched.total_steps = STEPS;
    if (!st) st = lt_trainer_create(m, &oc, 0, 0, &tr, err);
    if (!st) {
        lt_trainer_set_overlap(tr, rc->overlap);
        lt_trainer_set_shard_group(tr, rc->group);
        st = lt_trainer_distribute(tr, &w.base, rc->zero, LT_F32, err);
    }
    /* micro-batches of one sequence, random per rank, the same every run */
    int32_t buf[4 * MICRO * SEQ];
    lt_batch mb[MICRO];
    lt_rng rng;
    lt_rng_seed(&rng, 11 + (uint64_t)c->rank);
    for (int j = 0; j < MICRO; j++) {
        int32_t *tok = buf + 4 * j * SEQ, *tg = tok + SEQ, *pos = tg + SEQ, *doc = pos + SEQ;
        for (int n = 0; n < SEQ; n++) {
            tok[n] = (int32_t)(lt_rng_u64(&rng) % VOCAB);
            tg[n] = (int32_t)(lt_rng_u64(&rng) % VOCAB);
            pos[n] = n;
            doc[n] = 0;
        }
        mb[j] = (lt_batch){1, SEQ, tok, tg, pos, doc};
    }
    for (int s = 0; s < STEPS && !st; s++) {
        lt_train_stats ts;
        st = lt_trainer_step(tr, mb, MICRO, &ts, err);
        loss[s] = ts.loss;
        gnorm[s] = ts.grad_norm;
    }
    if (!st) *async = lt_trainer_async_reductions(tr);
    lt_trainer_free(tr);
    lt_model_free(m);
    if (be) be->destroy(be);
    return st;
}

/* every rank's value of x equal to rank 0's (collective) */
static int same_on_all(lt_comm *c, uint64_t x, lt_err *err) {
    uint64_t r0 = x;
    int64_t differ = 0;
    if (c->broadcast(c, &r0, sizeof r0, 0, err)) return 0;
    differ = r0 != x;
    if (c->all_reduce_sum(c, &differ, 1, LT_I64, err)) return 0;
    return differ == 0;
}

static int ranks(void) {
    lt_err err = {{0}};
    lt_comm *c = NULL;
    if (lt_comm_create("mpi", NULL, &c, &err)) {
        fprintf(stderr, "FAIL: the MPI communicator: %s\n", err.msg);
        return 1;
    }
    LT_CHECK(c->world == NP, "world %d, want %d", c->world, NP);
    static const int zeros[2] = {1, 2}, groups[2] = {0, 2};
    for (int zi = 0; zi < 2; zi++)
        for (int gi = 0; gi < 2; gi++) {
            int zero = zeros[zi], group = groups[gi];
            double l0[STEPS], g0[STEPS];
            events ev;
            int64_t async = 0;
            run_cfg ref = {zero, group, 0, 0};
            lt_status st = run(c, &ref, l0, g0, &ev, &async, &err);
            if (st) c->abort(c, err.msg);
            LT_CHECK(ev.starts == 0 && async == 0, "ZeRO-%d group %d, overlap off: %lld starts, %lld counted", zero,
                     group, (long long)ev.starts, (long long)async);
            for (int hide = 0; hide < 2; hide++) {
                double l[STEPS], g[STEPS];
                run_cfg rc = {zero, group, 1, hide};
                int before = lt_test_failures;
                if ((st = run(c, &rc, l, g, &ev, &async, &err))) c->abort(c, err.msg);
                const char *how = hide ? "test_req hiding DONE" : "test_req as is";
                LT_CHECK(ev.starts > 0 && ev.starts == async, "ZeRO-%d group %d, %s: %lld starts, %lld counted",
                         zero, group, how, (long long)ev.starts, (long long)async);
                LT_CHECK(ev.waits == ev.starts, "ZeRO-%d group %d, %s: %lld wait_req for %lld requests", zero,
                         group, how, (long long)ev.waits, (long long)ev.starts);
                LT_CHECK(same_on_all(c, ev.hash, &err),
                         "ZeRO-%d group %d, %s: the ranks' sequences of starts and waits differ (this is rank %d)",
                         zero, group, how, c->rank);
                LT_CHECK(!memcmp(l, l0, sizeof l) && !memcmp(g, g0, sizeof g),
                         "ZeRO-%d group %d, %s: losses / grad norms differ from the blocking run's "
                         "(step 3: %.17g / %.17g vs %.17g / %.17g)",
                         zero, group, how, l[STEPS - 1], g[STEPS - 1], l0[STEPS - 1], g0[STEPS - 1]);
                if (c->rank == 0 && lt_test_failures == before)
                    printf("ok   ZeRO-%d%s, %s: %lld reductions non-blocking, each completed by one wait_req, the same "
                           "sequence on every rank, bitwise the blocking run\n",
                           zero, group ? " in groups of 2" : " flat", how, (long long)ev.starts);
            }
        }
    int64_t bad = lt_test_failures;
    c->all_reduce_sum(c, &bad, 1, LT_I64, &err);
    c->destroy(c);
    if (bad && !lt_test_failures) lt_test_failures = 1; /* another rank's failure fails this one too */
    return lt_test_finish("test_trainer_chains");
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--ranks")) return ranks();
    /* started alone (ctest): under mpirun, NP ranks */
    if (!strstr(lt_comm_kinds_built(), "mpi")) {
        fprintf(stderr, "SKIP: built without the MPI communicator (%s)\n", lt_comm_kinds_built());
        return LT_TEST_SKIP;
    }
    if (system("command -v mpirun > /dev/null 2>&1")) {
        fprintf(stderr, "SKIP: no mpirun\n");
        return LT_TEST_SKIP;
    }
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_btl", "self,vader,tcp", 1);
    setenv("OMPI_MCA_btl_base_warn_component_unused", "0", 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("LT_COMM_TIMEOUT_S", "30", 0); /* a trainer waiting for test_req to say DONE ends here */
    char cmd[4096];
    LT_FMT(cmd, "timeout 300 mpirun --oversubscribe -np %d '%s' --ranks", NP, argv[0]);
    int rc = system(cmd);
    if (rc) fprintf(stderr, "FAIL: %s: status %d\n", cmd, rc);
    return rc ? 1 : 0;
}
