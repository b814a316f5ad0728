/* bench_overlap.c -- how much of ZeRO's communication the trainer hides
 * behind compute on the CPU (MPI communicator): for ZeRO stages 1, 2 and 3,
 * the optimizer step of a random Llama-shaped model (lt_model_create) timed
 * with the overlap off (LT_OVERLAP=0: every reduction completed in the
 * gradient hook, every ZeRO-3 gather at use) and on (the default:
 * reductions started non-blocking in the hook, the next layer's gather
 * prefetched). The communicator is wrapped so that the time spent inside its
 * calls is measured too: with the overlap off that is the whole cost of the
 * communication C; with it on, what is left exposed E. Printed (rank 0):
 * step time off / on, C, E, and hidden = 1 - E / C, the fraction of the
 * communication time taken off the critical path (of the fastest step of
 * each run, on rank 0); plus whether both runs
 * gave the same loss and gradient norm bits (they must). Figures only,
 * never asserted. Run under mpirun:
 *   mpirun -np 2 build/bench/bench_overlap [--layers 4] [--hidden 512]
 *     [--ffn 1536] [--vocab 4096] [--seq 16] [--micro 2] [--steps 3] [--repeat 2]
 *     [--shard-group N]  (HYBRID_SHARD: ZeRO inside groups of N ranks; the
 *     ZeRO-1/2/3 reductions then chain across the groups, see lt_comm.h)
 * (each mode runs --repeat times, alternating, each time --steps timed steps
 * after a warm-up; the fastest step counts)
 * Small --seq makes communication matter (its cost grows with the
 * parameters, the compute's with parameters x tokens). See
 * docs/distributed.md ("Overlap").
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_backend.h"
#include "lt_comm.h"
#include "lt_config.h"
#include "lt_model.h"
#include "lt_trainer.h"

/* ---- a communicator that times its calls ---- */

typedef struct tcomm {
    lt_comm base; /* first: the trainer sees this */
    lt_comm *in;
    double own;   /* the root's counter */
    double *busy; /* seconds inside the inner communicators' calls (the root's and its splits') */
    int sub;      /* a split: destroy frees the inner one and this */
} tcomm;

#define IN(c) (((tcomm *)(c))->in)
#define TIMED(call)                                   \
    do {                                              \
        double t0_ = lt_now_s();                      \
        lt_status st_ = (call);                       \
        *((tcomm *)c)->busy += lt_now_s() - t0_;      \
        return st_;                                   \
    } while (0)

static lt_status t_ar(lt_comm *c, void *b, size_t n, lt_dtype dt, lt_err *e) {
    TIMED(IN(c)->all_reduce_sum(IN(c), b, n, dt, e));
}
static lt_status t_aro(lt_comm *c, void *a, const void *x, size_t n, lt_dtype dt, lt_err *e) {
    TIMED(IN(c)->all_reduce_sum_ordered(IN(c), a, x, n, dt, e));
}
static lt_status t_rs(lt_comm *c, void *s, const void *x, size_t n, const size_t *k, lt_dtype dt, lt_err *e) {
    TIMED(IN(c)->reduce_scatter_sum(IN(c), s, x, n, k, dt, e));
}
static lt_status t_rso(lt_comm *c, void *s, const void *x, size_t n, const size_t *k, lt_dtype dt, lt_err *e) {
    TIMED(IN(c)->reduce_scatter_sum_ordered(IN(c), s, x, n, k, dt, e));
}
static lt_status t_ag(lt_comm *c, void *b, size_t n, const size_t *k, lt_dtype dt, lt_err *e) {
    TIMED(IN(c)->all_gather(IN(c), b, n, k, dt, e));
}
static lt_status t_bc(lt_comm *c, void *b, size_t n, int root, lt_err *e) {
    TIMED(IN(c)->broadcast(IN(c), b, n, root, e));
}
static lt_status t_bar(lt_comm *c, lt_err *e) { TIMED(IN(c)->barrier(IN(c), e)); }
static lt_status t_ss(lt_comm *c, void *s, lt_err *e) { return IN(c)->set_stream(IN(c), s, e); }
static void t_abort(lt_comm *c, const char *msg) { IN(c)->abort(IN(c), msg); }
static void t_destroy(lt_comm *c) { /* the root's inner one is destroyed by main */
    if (!((tcomm *)c)->sub) return;
    IN(c)->destroy(IN(c));
    free(c);
}
static lt_status t_ags(lt_comm *c, void *b, size_t n, const size_t *k, lt_dtype dt, void **r, lt_err *e) {
    TIMED(IN(c)->all_gather_start(IN(c), b, n, k, dt, r, e));
}
static lt_status t_rsos(lt_comm *c, void *s, const void *x, size_t n, const size_t *k, lt_dtype dt, void **r,
                        lt_err *e) {
    TIMED(IN(c)->reduce_scatter_sum_ordered_start(IN(c), s, x, n, k, dt, r, e));
}
static lt_status t_wait(lt_comm *c, void *r, lt_err *e) { TIMED(IN(c)->wait_req(IN(c), r, e)); }

static lt_status t_chain(lt_comm *c, lt_comm *cross, void *s, const void *x, size_t n, const size_t *k, lt_dtype dt,
                        void **r, lt_err *e) {
    TIMED(IN(c)->reduce_scatter_sum_ordered_chain_start(IN(c), IN(cross), s, x, n, k, dt, r, e));
}
/* (the trainer's polling between two test_req calls, waiting for a chain's
 * input to be free, is not inside a call: with --shard-group the "comm on"
 * column misses those waits; its waits for results are wait_req, timed) */
static lt_status t_test(lt_comm *c, void *r, int *state, lt_err *e) { TIMED(IN(c)->test_req(IN(c), r, state, e)); }
static lt_status t_split(lt_comm *c, int color, int key, lt_comm **out, lt_err *e);

static void tcomm_init(tcomm *w, lt_comm *in, double *busy) {
    w->base = *in;
    w->in = in;
    w->busy = busy;
    w->sub = 0;
    lt_comm *c = &w->base;
    c->all_reduce_sum = t_ar;
    c->all_reduce_sum_ordered = t_aro;
    c->reduce_scatter_sum = t_rs;
    c->reduce_scatter_sum_ordered = t_rso;
    c->all_gather = t_ag;
    c->broadcast = t_bc;
    c->barrier = t_bar;
    c->set_stream = t_ss;
    c->abort = t_abort;
    c->destroy = t_destroy;
    c->split = in->split ? t_split : NULL; /* --shard-group: the group and cross communicators, timed too */
    c->all_gather_start = in->all_gather_start ? t_ags : NULL;
    c->reduce_scatter_sum_ordered_start = in->reduce_scatter_sum_ordered_start ? t_rsos : NULL;
    c->wait_req = in->wait_req ? t_wait : NULL;
    c->reduce_scatter_sum_ordered_chain_start = in->reduce_scatter_sum_ordered_chain_start ? t_chain : NULL;
    c->test_req = in->test_req ? t_test : NULL;
}

static lt_status t_split(lt_comm *c, int color, int key, lt_comm **out, lt_err *e) {
    *out = NULL;
    tcomm *w = calloc(1, sizeof *w);
    if (!w) return lt_fail(e, LT_ERR_NOMEM, "bench_overlap: out of memory");
    lt_comm *in = NULL;
    lt_status st = IN(c)->split(IN(c), color, key, &in, e);
    if (st) {
        free(w);
        return st;
    }
    tcomm_init(w, in, ((tcomm *)c)->busy);
    w->sub = 1;
    *out = &w->base;
    return LT_OK;
}

/* ---- one timed run ---- */

typedef struct opts {
    int layers, hidden, ffn, vocab, seq, micro, steps, repeat;
    int shard_group; /* --shard-group N (0: none) */
} opts;

typedef struct result {
    double step_s, comm_s; /* per step: wall time, time inside the communicator */
    double loss, gnorm;    /* the last step's */
    int64_t async, prefetched;
} result;

static lt_status run(const opts *o, lt_comm *inner, int zero, int overlap, result *res, lt_err *err) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": %d,"
             " \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,"
             " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": 64, \"hidden_act\": \"silu\","
             " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"max_position_embeddings\": 4096,"
             " \"tie_word_embeddings\": false, \"torch_dtype\": \"float32\"}",
             o->vocab, o->hidden, o->ffn, o->layers, o->hidden / 64, o->hidden / 128 ? o->hidden / 128 : 1);
    lt_config cfg;
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_trainer *tr = NULL;
    tcomm w;
    w.own = 0;
    tcomm_init(&w, inner, &w.own);
    size_t N = (size_t)o->micro * o->seq;
    int32_t *buf = malloc(4 * N * sizeof(int32_t));
    lt_status st = buf ? LT_OK : lt_fail(err, LT_ERR_NOMEM, "out of memory");
    if (!st) st = lt_config_parse(json, "the bench shape", &cfg, err);
    if (!st) st = lt_backend_create("cpu", 1, &be, err);
    if (!st) st = lt_model_create(&cfg, be, 1234, &m, err);
    if (!st && zero >= 2) st = lt_model_pool_grads(m, err);
    lt_optim_cfg oc = {{LT_SCHED_CONSTANT, 1e-4, 0, 1000000, 0}, 0.9, 0.999, 1e-8, 0.01, 1.0};
    if (!st) st = lt_model_plan(m, 1, o->seq, err);
    if (!st) st = lt_trainer_create(m, &oc, 0, 0, &tr, err);
    if (!st) {
        lt_trainer_set_overlap(tr, overlap);
        lt_trainer_set_shard_group(tr, o->shard_group);
        st = lt_trainer_distribute(tr, &w.base, zero, LT_F32, err);
    }
    if (st) goto done;
    /* micro-batches of one sequence each; the same global batch every step */
    lt_batch *mb = calloc((size_t)o->micro, sizeof *mb);
    if (!mb) {
        st = lt_fail(err, LT_ERR_NOMEM, "out of memory");
        goto done;
    }
    lt_rng rng;
    lt_rng_seed(&rng, 7 + (uint64_t)inner->rank);
    int32_t *tok = buf, *tg = buf + N, *pos = buf + 2 * N, *doc = buf + 3 * N;
    for (size_t n = 0; n < N; n++) {
        tok[n] = (int32_t)(lt_rng_u64(&rng) % (uint64_t)o->vocab);
        tg[n] = (int32_t)(lt_rng_u64(&rng) % (uint64_t)o->vocab);
        pos[n] = (int32_t)(n % (size_t)o->seq);
        doc[n] = 0;
    }
    for (int j = 0; j < o->micro; j++) {
        size_t a = (size_t)j * o->seq;
        mb[j] = (lt_batch){1, o->seq, tok + a, tg + a, pos + a, doc + a};
    }
    lt_train_stats ts;
    st = lt_trainer_step(tr, mb, o->micro, &ts, err); /* warm-up */
    /* the fastest step (the machine's other load only ever adds time) and
     * the communicator's time in that step */
    res->step_s = 1e30;
    for (int s = 0; s < o->steps && !st; s++) {
        if ((st = inner->barrier(inner, err))) break;
        w.own = 0;
        double t0 = lt_now_s();
        st = lt_trainer_step(tr, mb, o->micro, &ts, err);
        double dt = lt_now_s() - t0;
        if (dt < res->step_s) res->step_s = dt, res->comm_s = w.own;
    }
    free(mb);
    if (st) goto done;
    res->loss = ts.loss;
    res->gnorm = ts.grad_norm;
    res->async = lt_trainer_async_reductions(tr);
    int64_t au;
    lt_trainer_gathers(tr, &res->prefetched, &au);
done:
    lt_trainer_free(tr);
    lt_model_free(m);
    if (be) be->destroy(be);
    free(buf);
    return st;
}

static int arg_int(int argc, char **argv, int *i, const char *name, int *out) {
    if (strcmp(argv[*i], name) || *i + 1 >= argc) return 0;
    *out = atoi(argv[++*i]);
    return 1;
}

int main(int argc, char **argv) {
    opts o = {4, 512, 1536, 4096, 16, 2, 3, 2, 0};
    for (int i = 1; i < argc; i++) {
        if (arg_int(argc, argv, &i, "--layers", &o.layers) || arg_int(argc, argv, &i, "--hidden", &o.hidden) ||
            arg_int(argc, argv, &i, "--ffn", &o.ffn) || arg_int(argc, argv, &i, "--vocab", &o.vocab) ||
            arg_int(argc, argv, &i, "--seq", &o.seq) || arg_int(argc, argv, &i, "--micro", &o.micro) ||
            arg_int(argc, argv, &i, "--steps", &o.steps) || arg_int(argc, argv, &i, "--repeat", &o.repeat) ||
            arg_int(argc, argv, &i, "--shard-group", &o.shard_group))
            continue;
        fprintf(stderr, "bench_overlap: unknown argument '%s' (see the head of bench/bench_overlap.c)\n", argv[i]);
        return 2;
    }
    if (o.hidden < 64 || o.hidden % 64 || o.layers < 1 || o.seq < 2 || o.micro < 1 || o.steps < 1 || o.vocab < 2 ||
        o.repeat < 1 || o.shard_group < 0) {
        fprintf(stderr,
                "bench_overlap: --hidden a multiple of 64, --layers/--micro/--steps/--repeat >= 1, --seq >= 2, "
                "--shard-group >= 0\n");
        return 2;
    }
    lt_comm *c;
    lt_err err = {{0}};
    if (lt_comm_create("auto", NULL, &c, &err)) {
        fprintf(stderr, "bench_overlap: %s\n", err.msg);
        return 1;
    }
    char grp[64] = "";
    if (o.shard_group) snprintf(grp, sizeof grp, ", hybrid sharding in groups of %d", o.shard_group);
    if (c->rank == 0)
        printf("communicator %s, world %d%s; llama %d layers, hidden %d, ffn %d, vocab %d; %d micro-batch(es) of %d "
               "tokens per rank; %d steps, best of %d runs\n"
               "%5s %12s %12s %12s %12s %9s %6s %s\n",
               c->name, c->world, grp, o.layers, o.hidden, o.ffn, o.vocab, o.micro, o.seq, o.steps, o.repeat, "zero",
               "step off ms", "step on ms", "comm off ms", "comm on ms", "hidden", "saved",
               "same bits / async reductions, prefetches");
    for (int zero = 1; zero <= 3; zero++) {
        /* off and on in turn, `repeat` times each; the fastest of each */
        result off = {0}, on = {0}, r;
        int same = 1;
        for (int k = 0; k < 2 * o.repeat; k++) {
            if (run(&o, c, zero, k & 1, &r, &err)) c->abort(c, err.msg);
            result *best = k & 1 ? &on : &off;
            if (k < 2 || r.step_s < best->step_s) *best = r;
            if (k) same &= !memcmp(&r.loss, &off.loss, sizeof r.loss) && !memcmp(&r.gnorm, &off.gnorm, sizeof r.gnorm);
        }
        if (c->rank) continue;
        printf("%5d %12.2f %12.2f %12.2f %12.2f %8.0f%% %5.0f%% %s / %lld, %lld\n", zero, off.step_s * 1e3,
               on.step_s * 1e3, off.comm_s * 1e3, on.comm_s * 1e3,
               off.comm_s > 0 ? 100.0 * (1.0 - on.comm_s / off.comm_s) : 0.0,
               off.step_s > 0 ? 100.0 * (1.0 - on.step_s / off.step_s) : 0.0, same ? "yes" : "NO",
               (long long)on.async, (long long)on.prefetched);
    }
    c->destroy(c);
    return 0;
}
