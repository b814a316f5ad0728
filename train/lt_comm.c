/* lt_comm.c -- the launcher environment, the canonical shard split, the
 * rank-order fold, the "single" communicator, lt_comm_create and the
 * heartbeats of one rank's long job (lt_comm_watch_*). */
#define _POSIX_C_SOURCE 200809L
#include "lt_comm_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

/* ---- shards ---- */

void lt_comm_shard(size_t n, int rank, int world, size_t *off, size_t *len) {
    size_t w = world > 0 ? (size_t)world : 1, r = rank > 0 ? (size_t)rank : 0;
    size_t q = n / w, extra = n % w;
    *len = q + (r < extra ? 1 : 0);
    *off = r * q + (r < extra ? r : extra);
}

lt_status lt_comm_layout(const lt_comm *c, const char *what, size_t n, const size_t *counts, size_t *off,
                         size_t *len, lt_err *err) {
    size_t sum = 0;
    for (int r = 0; r < c->world; r++) {
        if (counts) {
            off[r] = sum;
            len[r] = counts[r];
        } else {
            lt_comm_shard(n, r, c->world, &off[r], &len[r]);
        }
        if (!lt_add_ok(sum, len[r], &sum)) return lt_fail(err, LT_ERR_RANGE, "%s: counts overflow", what);
    }
    if (sum != n)
        return lt_fail(err, LT_ERR_INVALID, "%s: the %d per-rank counts sum to %zu but n = %zu", what, c->world,
                       sum, n);
    return LT_OK;
}

/* ---- the fold ---- */

int lt_comm_dtype_ok(lt_dtype dt) {
    return dt == LT_F32 || dt == LT_F64 || dt == LT_I64 || dt == LT_I32 || dt == LT_BF16 || dt == LT_U8;
}

void lt_comm_add(lt_dtype dt, void *dst, const void *src, size_t m) {
    switch (dt) {
    case LT_F32: {
        float *d = dst;
        const float *s = src;
        for (size_t i = 0; i < m; i++) d[i] = d[i] + s[i];
        break;
    }
    case LT_F64: {
        double *d = dst;
        const double *s = src;
        for (size_t i = 0; i < m; i++) d[i] = d[i] + s[i];
        break;
    }
    case LT_I64: { /* two's complement wrap-around, without signed overflow */
        int64_t *d = dst;
        const int64_t *s = src;
        for (size_t i = 0; i < m; i++) d[i] = (int64_t)((uint64_t)d[i] + (uint64_t)s[i]);
        break;
    }
    case LT_I32: {
        int32_t *d = dst;
        const int32_t *s = src;
        for (size_t i = 0; i < m; i++) d[i] = (int32_t)((uint32_t)d[i] + (uint32_t)s[i]);
        break;
    }
    case LT_U8: { /* bytes (ZeRO-3's NF4 parts), modulo 256 */
        uint8_t *d = dst;
        const uint8_t *s = src;
        for (size_t i = 0; i < m; i++) d[i] = (uint8_t)(d[i] + s[i]);
        break;
    }
    case LT_BF16: { /* add in f32, bf16 rounding after every add */
        uint16_t *d = dst;
        const uint16_t *s = src;
        for (size_t i = 0; i < m; i++) d[i] = lt_f32_to_bf16(lt_bf16_to_f32(d[i]) + lt_bf16_to_f32(s[i]));
        break;
    }
    default:
        break; /* callers check lt_comm_dtype_ok first */
    }
}

/* ---- knobs, timeouts, printing ---- */

size_t lt_comm_chunk_elems(size_t dflt) {
    const char *s = getenv("LT_COMM_CHUNK_ELEMS");
    if (s && *s) {
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (*end == 0 && v > 0) return (size_t)v;
    }
    return dflt;
}

double lt_comm_timeout(const lt_comm_opts *opts) {
    if (opts && opts->timeout_s > 0) return opts->timeout_s;
    const char *s = getenv("LT_COMM_TIMEOUT_S");
    if (s && *s) {
        char *end;
        double v = strtod(s, &end);
        if (*end == 0 && v > 0) return v;
        fprintf(stderr, "luxtrain: ignoring LT_COMM_TIMEOUT_S='%s' (expected seconds > 0); using 300\n", s);
    }
    return 300.0;
}

void lt_comm_print_abort(const lt_comm *c, const char *msg) {
    fflush(stdout);
    fprintf(stderr, "luxtrain: rank %d of %d: %s\n", c->msg_world ? c->msg_rank : c->rank,
            c->msg_world ? c->msg_world : c->world, msg ? msg : "(no message)");
    fflush(stderr);
}

void lt_comm_timeout_abort(lt_comm *c, const char *what, int peer) {
    char msg[1024];
    if (peer >= 0)
        snprintf(msg, sizeof msg,
                 "collective %s timed out after %g s waiting for rank %d (a peer may have died or hung; "
                 "LT_COMM_TIMEOUT_S sets the limit)",
                 what, c->timeout_s, peer);
    else
        snprintf(msg, sizeof msg,
                 "collective %s timed out after %g s (a peer may have died or hung; LT_COMM_TIMEOUT_S sets "
                 "the limit)",
                 what, c->timeout_s);
    if (c->waiting_for) {
        size_t n = strlen(msg);
        snprintf(msg + n, sizeof msg - n, "; waiting for %s", c->waiting_for);
    }
    c->abort(c, msg);
}

/* ---- one rank's long job, watched by the others (lt_comm.h) ---- */

/* the record every report broadcasts: [0] 0 = progress, 1 = done; [1..4] the
 * root's status (done); then what it is doing and its progress (text) */
typedef struct {
    unsigned char done;
    int32_t status;
    char text[LT_COMM_WATCH_BYTES - 8];
} watch_msg;

static lt_status watch_send(lt_comm_watch *w, int done, lt_status status, const char *progress, lt_err *err) {
    unsigned char buf[LT_COMM_WATCH_BYTES];
    watch_msg m = {.done = (unsigned char)done, .status = (int32_t)status};
    snprintf(m.text, sizeof m.text, "%s%s%s", w->what, progress && *progress ? "; its last report: " : "",
             progress ? progress : "");
    memset(buf, 0, sizeof buf);
    memcpy(buf, &m, sizeof m < sizeof buf ? sizeof m : sizeof buf);
    w->last = lt_now_s();
    return w->c->broadcast(w->c, buf, sizeof buf, w->c->rank, err);
}

lt_status lt_comm_watch_begin(lt_comm_watch *w, lt_comm *c, const char *what, lt_err *err) {
    w->c = c;
    snprintf(w->what, sizeof w->what, "%s", what);
    return watch_send(w, 0, LT_OK, "started", err);
}

lt_status lt_comm_watch_report(lt_comm_watch *w, const char *progress, lt_err *err) {
    double every = w->c->timeout_s / 4 < 1.0 ? w->c->timeout_s / 4 : 1.0;
    return lt_now_s() - w->last < every ? LT_OK : watch_send(w, 0, LT_OK, progress, err);
}

lt_status lt_comm_watch_end(lt_comm_watch *w, lt_status result, lt_err *err) {
    lt_err e2 = {{0}};
    lt_status s = watch_send(w, 1, result, "", &e2);
    if (s && !result) return lt_fail(err, s, "%s: telling the other ranks: %s", w->what, e2.msg);
    return result;
}

lt_status lt_comm_watch_wait(lt_comm *c, int root, lt_err *err) {
    unsigned char buf[LT_COMM_WATCH_BYTES];
    char doing[LT_COMM_WATCH_BYTES + 32] = "";
    watch_msg m;
    snprintf(doing, sizeof doing, "rank %d (it has not reported yet)", root);
    for (;;) {
        c->waiting_for = doing;
        lt_status s = c->broadcast(c, buf, sizeof buf, root, err);
        c->waiting_for = NULL;
        if (s) return s;
        memcpy(&m, buf, sizeof m < sizeof buf ? sizeof m : sizeof buf);
        m.text[sizeof m.text - 1] = 0;
        snprintf(doing, sizeof doing, "rank %d, which was %s", root, m.text);
        if (m.done) break;
    }
    if (m.status != LT_OK)
        return lt_fail(err, (lt_status)m.status, "rank %d of %d failed %s (its own message says why)", root, c->world,
                       m.text);
    return LT_OK;
}

void lt_comm_backoff(unsigned *iter) {
    /* spin (short waits: latency), then yield (oversubscribed cores), then
     * sleep with a growing interval (a peer still computing: keep the cores
     * for it), never longer than 1 ms per poll */
    unsigned i = (*iter)++;
    if (i < 1000) return;
    if (i < 3000) {
        sched_yield();
        return;
    }
    long ns = i < 3100 ? 20000L : i < 3400 ? 200000L : 1000000L;
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* ---- the launcher environment ---- */

static int env_int(const char *name, int *out) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end != 0 || v < 0 || v > 1000000000L) return 0;
    *out = (int)v;
    return 1;
}

void lt_comm_env_read(lt_comm_env *e) {
    e->rank = 0;
    e->world = 1;
    e->local_rank = 0;
    e->local_world = 0;
    e->source = "none";
    e->mpi_launcher = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_RANK") || getenv("PMIX_RANK") ||
                      getenv("PMI_SIZE");

    if (env_int("OMPI_COMM_WORLD_RANK", &e->rank)) e->source = "OMPI";
    else if (env_int("PMIX_RANK", &e->rank)) e->source = "PMIX";
    else if (env_int("PMI_RANK", &e->rank)) e->source = "PMI";
    else if (env_int("SLURM_PROCID", &e->rank)) e->source = "SLURM";

    if (!env_int("OMPI_COMM_WORLD_SIZE", &e->world) && !env_int("PMI_SIZE", &e->world) &&
        !env_int("SLURM_NTASKS", &e->world) && !env_int("SLURM_NPROCS", &e->world))
        e->world = 1;
    if (e->world < 1) e->world = 1;

    if (!env_int("OMPI_COMM_WORLD_LOCAL_RANK", &e->local_rank) && !env_int("MPI_LOCALRANKID", &e->local_rank) &&
        !env_int("SLURM_LOCALID", &e->local_rank))
        e->local_rank = 0;
    if (!env_int("OMPI_COMM_WORLD_LOCAL_SIZE", &e->local_world) && !env_int("MPI_LOCALNRANKS", &e->local_world))
        e->local_world = e->world == 1 ? 1 : 0;
}

lt_comm_opts lt_comm_opts_default(void) {
    lt_comm_opts o;
    o.on_device = 0;
    o.device = -1;
    o.stream = NULL;
    o.timeout_s = 0;
    return o;
}

const char *lt_comm_kinds_built(void) {
#if defined(LT_HAVE_MPI) && defined(LT_HAVE_NCCL)
    return "single mpi nccl";
#elif defined(LT_HAVE_MPI)
    return "single mpi";
#elif defined(LT_HAVE_NCCL)
    return "single nccl";
#else
    return "single";
#endif
}

/* ---- "single": world 1, no MPI ---- */

typedef struct {
    int on_device;
} single_ctx;

static lt_status single_check(lt_comm *c, const char *what, size_t n, lt_dtype dt, lt_err *err) {
    if (!lt_comm_dtype_ok(dt))
        return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: element type %s is not supported", what, lt_dtype_name(dt));
    return LT_OK;
}

static lt_status single_all_reduce(lt_comm *c, void *buf, size_t n, lt_dtype dt, lt_err *err) {
    return single_check(c, "all_reduce_sum", n, dt, err);
}

static lt_status single_host_only(lt_comm *c, const char *what, lt_err *err) {
    if (((single_ctx *)c->ctx)->on_device)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: the 'single' communicator works on host buffers; use 'nccl' (world 1) for device "
                       "buffers",
                       what);
    return LT_OK;
}

static lt_status single_all_reduce_ordered(lt_comm *c, void *acc, const void *x, size_t n, lt_dtype dt,
                                           lt_err *err) {
    lt_status st = single_check(c, "all_reduce_sum_ordered", n, dt, err);
    if (!st) st = single_host_only(c, "all_reduce_sum_ordered", err);
    if (st) return st;
    if (n && acc == x) return lt_fail(err, LT_ERR_INVALID, "all_reduce_sum_ordered: acc and x are the same buffer");
    lt_comm_add(dt, acc, x, n);
    return LT_OK;
}

static lt_status single_reduce_scatter(lt_comm *c, void *shard, const void *x, size_t n, const size_t *counts,
                                       lt_dtype dt, lt_err *err) {
    size_t off, len;
    lt_status st = single_check(c, "reduce_scatter_sum", n, dt, err);
    if (!st) st = lt_comm_layout(c, "reduce_scatter_sum", n, counts, &off, &len, err);
    if (st) return st;
    if (shard == x || n == 0) return LT_OK;
    if ((st = single_host_only(c, "reduce_scatter_sum", err))) return st;
    memmove(shard, x, n * lt_dtype_size(dt));
    return LT_OK;
}

static lt_status single_reduce_scatter_ordered(lt_comm *c, void *acc, const void *x, size_t n,
                                               const size_t *counts, lt_dtype dt, lt_err *err) {
    size_t off, len;
    lt_status st = single_check(c, "reduce_scatter_sum_ordered", n, dt, err);
    if (!st) st = lt_comm_layout(c, "reduce_scatter_sum_ordered", n, counts, &off, &len, err);
    if (!st) st = single_host_only(c, "reduce_scatter_sum_ordered", err);
    if (st) return st;
    if (n && acc == x)
        return lt_fail(err, LT_ERR_INVALID, "reduce_scatter_sum_ordered: acc_shard and x are the same buffer");
    lt_comm_add(dt, acc, x, n);
    return LT_OK;
}

static lt_status single_all_gather(lt_comm *c, void *buf, size_t n, const size_t *counts, lt_dtype dt,
                                   lt_err *err) {
    size_t off, len;
    lt_status st = single_check(c, "all_gather", n, dt, err);
    if (!st) st = lt_comm_layout(c, "all_gather", n, counts, &off, &len, err);
    return st;
}

static lt_status single_broadcast(lt_comm *c, void *buf, size_t bytes, int root, lt_err *err) {
    if (root != 0) return lt_fail(err, LT_ERR_INVALID, "broadcast: root %d but world size is 1", root);
    return LT_OK;
}

static lt_status single_barrier(lt_comm *c, lt_err *err) { return LT_OK; }
static lt_status single_set_stream(lt_comm *c, void *stream, lt_err *err) { return LT_OK; }

static void single_abort(lt_comm *c, const char *msg) {
    lt_comm_print_abort(c, msg);
    exit(1);
}

static void single_destroy(lt_comm *c) {
    if (!c) return;
    free(c->ctx);
    free(c);
}

static lt_status single_split(lt_comm *c, int color, int key, lt_comm **out, lt_err *err) {
    (void)color, (void)key;
    lt_comm_opts o = lt_comm_opts_default();
    o.on_device = ((single_ctx *)c->ctx)->on_device;
    o.timeout_s = c->timeout_s;
    lt_status st = lt_comm_single_create(&o, out, err);
    if (!st) (*out)->msg_rank = 0, (*out)->msg_world = 1;
    return st;
}

lt_status lt_comm_single_create(const lt_comm_opts *opts, lt_comm **out, lt_err *err) {
    lt_comm *c = calloc(1, sizeof *c);
    single_ctx *x = calloc(1, sizeof *x);
    if (!c || !x) {
        free(c);
        free(x);
        return lt_fail(err, LT_ERR_NOMEM, "lt_comm_create: out of memory");
    }
    x->on_device = opts && opts->on_device;
    c->name = "single";
    c->rank = 0;
    c->world = 1;
    c->local_rank = 0;
    c->local_world = 1;
    c->device = -1;
    c->timeout_s = lt_comm_timeout(opts);
    c->ctx = x;
    c->all_reduce_sum = single_all_reduce;
    c->all_reduce_sum_ordered = single_all_reduce_ordered;
    c->reduce_scatter_sum = single_reduce_scatter;
    c->reduce_scatter_sum_ordered = single_reduce_scatter_ordered;
    c->all_gather = single_all_gather;
    c->broadcast = single_broadcast;
    c->barrier = single_barrier;
    c->set_stream = single_set_stream;
    c->abort = single_abort;
    c->destroy = single_destroy;
    c->split = single_split;
    *out = c;
    return LT_OK;
}

/* ---- stubs for what this build lacks ---- */

#ifndef LT_HAVE_MPI
int lt_comm_mpi_initialized(void) { return 0; }
lt_status lt_comm_mpi_create(const lt_comm_opts *opts, const lt_comm_env *env, lt_comm **out, lt_err *err) {
    *out = NULL;
    return lt_fail(err, LT_ERR_UNSUPPORTED,
                   "the MPI communicator is not built in (install Open MPI and configure with -DLUXTRAIN_MPI=ON)");
}
#endif
#ifndef LT_HAVE_NCCL
lt_status lt_comm_nccl_create(const lt_comm_opts *opts, const lt_comm_env *env, lt_comm **out, lt_err *err) {
    *out = NULL;
    return lt_fail(err, LT_ERR_UNSUPPORTED,
                   "the NCCL communicator is not built in (configure with -DLUXTRAIN_CUDA=ON where nccl.h and "
                   "libnccl are installed)");
}
#endif

/* ---- choosing one ---- */

lt_status lt_comm_create(const char *kind, const lt_comm_opts *opts, lt_comm **out, lt_err *err) {
    lt_comm_opts o = opts ? *opts : lt_comm_opts_default();
    lt_comm_env env;
    lt_comm_env_read(&env);
    *out = NULL;
    if (!kind) kind = "auto";
    if (env.rank >= env.world)
        return lt_fail(err, LT_ERR_INVALID, "launcher environment: rank %d (from %s) but world size %d",
                       env.rank, env.source, env.world);
    if (!strcmp(kind, "auto")) {
        if (env.world == 1 && !lt_comm_mpi_initialized())
            kind = o.on_device ? "nccl" : "single";
        else
            kind = o.on_device ? "nccl" : "mpi";
    }
    if (!strcmp(kind, "single")) {
        if (env.world != 1)
            return lt_fail(err, LT_ERR_INVALID,
                           "communicator 'single' but the launcher started %d ranks (this is rank %d, from %s); "
                           "use 'mpi' or 'nccl'",
                           env.world, env.rank, env.source);
        return lt_comm_single_create(&o, out, err);
    }
    if (!strcmp(kind, "mpi")) return lt_comm_mpi_create(&o, &env, out, err);
    if (!strcmp(kind, "nccl")) return lt_comm_nccl_create(&o, &env, out, err);
    return lt_fail(err, LT_ERR_INVALID, "unknown communicator '%s' (expected auto, mpi, nccl or single)", kind);
}
