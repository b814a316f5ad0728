/* lt_comm_mpi.c -- the MPI communicator on host buffers (lt_comm.h).
 *
 * Floating-point reductions never use MPI_Allreduce / MPI_Reduce_scatter:
 * their summation order belongs to the MPI library (and may even differ
 * between ranks), while lt_comm.h promises the rank-order fold. So:
 *
 *   reduce-scatter  rank r receives slot r of every rank's vector
 *                   (point-to-point, chunked) and folds them in rank order:
 *                   shard = ((x_0[slot] + x_1[slot]) + x_2[slot]) + ...
 *   all-gather      every rank sends its slot to every other rank.
 *   all-reduce      reduce-scatter over the canonical split, then all-gather
 *                   (the same traffic as a ring all-reduce: ~2n per rank).
 *
 * Every wait polls with MPI_Testsome until c->timeout_s, and names a rank
 * whose message has not arrived when it gives up.
 */
#define _POSIX_C_SOURCE 200809L
#include "lt_comm_internal.h"

#ifdef LT_HAVE_MPI
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LT_COMM_TAG 0x17c
#define LT_COMM_MAX_MSG ((size_t)1 << 30) /* bytes per MPI message (counts are int) */

typedef struct {
    MPI_Comm comm;
    int we_init; /* lt_comm_create called MPI_Init: destroy finalizes */
    size_t chunk; /* elements per reduce-scatter piece */
    unsigned char *tmp;
    size_t tmp_bytes;
    MPI_Request *reqs;
    int *peer; /* peer of reqs[i]; >= 0 for a receive, -1 - peer for a send */
    int *idx;
    int cap;
    size_t *off, *len; /* world entries */
    int *wrank;        /* a sub-communicator: the world rank of each of its ranks (NULL: the world) */
    uint64_t chain_started, chain_folded; /* hybrid chains (see mpi_rs_chain_start) */
} mpi_ctx;

static mpi_ctx *X(lt_comm *c) { return (mpi_ctx *)c->ctx; }

int lt_comm_mpi_initialized(void) {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    return init && !fin;
}

static lt_status mpi_fail(lt_err *err, int rc, const char *what) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, s, &len);
    s[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = 0;
    return lt_fail(err, LT_ERR_BACKEND, "%s: MPI error: %s", what, s);
}

/* ---- requests and the timed wait ---- */

static lt_status reqs_reserve(lt_comm *c, int n, lt_err *err) {
    mpi_ctx *x = X(c);
    if (n <= x->cap) return LT_OK;
    MPI_Request *r = realloc(x->reqs, (size_t)n * sizeof *r);
    if (r) x->reqs = r;
    int *p = realloc(x->peer, (size_t)n * sizeof *p);
    if (p) x->peer = p;
    int *i = realloc(x->idx, (size_t)n * sizeof *i);
    if (i) x->idx = i;
    if (!r || !p || !i) return lt_fail(err, LT_ERR_NOMEM, "lt_comm: out of memory for %d MPI requests", n);
    x->cap = n;
    return LT_OK;
}

/* Wait for x->reqs[0 .. n) with the deadline; on a timeout abort naming a
 * peer whose receive is still pending (else one whose send is). */
static lt_status wait_reqs(lt_comm *c, const char *what, int n, lt_err *err) {
    mpi_ctx *x = X(c);
    double t0 = lt_now_s();
    unsigned iter = 0;
    for (;;) {
        int outcount = 0;
        int rc = MPI_Testsome(n, x->reqs, &outcount, x->idx, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
        if (outcount == MPI_UNDEFINED) return LT_OK; /* every request done */
        if (outcount > 0) continue;
        if (lt_now_s() - t0 > c->timeout_s) {
            int suspect = -1;
            for (int i = 0; i < n && suspect < 0; i++)
                if (x->reqs[i] != MPI_REQUEST_NULL && x->peer[i] >= 0) suspect = x->peer[i];
            for (int i = 0; i < n && suspect < 0; i++)
                if (x->reqs[i] != MPI_REQUEST_NULL) suspect = -1 - x->peer[i];
            if (suspect >= 0 && x->wrank) suspect = x->wrank[suspect];
            lt_comm_timeout_abort(c, what, suspect);
        }
        lt_comm_backoff(&iter);
    }
}

static lt_status check_args(lt_comm *c, const char *what, size_t n, const size_t *counts, lt_dtype dt,
                            lt_err *err);

/* ---- non-blocking all-gather (its own tag: never matched with the others) ---- */

typedef struct {
    int n;
    MPI_Request *reqs;
    int *peer, *idx;
    /* an ordered reduce-scatter: fold tmp's W pieces into acc at the wait */
    void *acc;
    unsigned char *tmp;
    size_t len;
    lt_dtype dt;
    int world;
    struct mpi_chain *chain; /* a hybrid chain (the fields above unused) */
} mpi_async;

static lt_status chain_wait(lt_comm *c, mpi_async *a, lt_err *err);

static lt_status mpi_all_gather_start(lt_comm *c, void *bufv, size_t n, const size_t *counts, lt_dtype dt, void **req,
                                      lt_err *err) {
    const char *what = "all_gather (prefetch)";
    *req = NULL;
    mpi_ctx *x = X(c);
    lt_status st = check_args(c, what, n, counts, dt, err);
    if (st) return st;
    const int W = c->world, me = c->rank;
    const size_t es = lt_dtype_size(dt);
    unsigned char *buf = bufv;
    size_t nmsg = 0;
    for (int q = 0; q < W; q++)
        if (q != me) nmsg += (x->len[q] * es + LT_COMM_MAX_MSG - 1) / LT_COMM_MAX_MSG +
                             (x->len[me] * es + LT_COMM_MAX_MSG - 1) / LT_COMM_MAX_MSG;
    mpi_async *a = calloc(1, sizeof *a);
    if (a) a->reqs = calloc(nmsg + 1, sizeof *a->reqs), a->peer = calloc(nmsg + 1, sizeof(int)),
           a->idx = calloc(nmsg + 1, sizeof(int));
    if (!a || !a->reqs || !a->peer || !a->idx) {
        if (a) free(a->reqs), free(a->peer), free(a->idx);
        free(a);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", what);
    }
    for (int q = 0; q < W; q++) {
        if (q == me) continue;
        for (size_t b = 0; b < x->len[q] * es; b += LT_COMM_MAX_MSG) {
            size_t m = x->len[q] * es - b < LT_COMM_MAX_MSG ? x->len[q] * es - b : LT_COMM_MAX_MSG;
            int rc = MPI_Irecv(buf + x->off[q] * es + b, (int)m, MPI_BYTE, q, LT_COMM_TAG + 1, x->comm,
                               &a->reqs[a->n]);
            if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what); /* (the job stops: the requests do not matter) */
            a->peer[a->n++] = q;
        }
        for (size_t b = 0; b < x->len[me] * es; b += LT_COMM_MAX_MSG) {
            size_t m = x->len[me] * es - b < LT_COMM_MAX_MSG ? x->len[me] * es - b : LT_COMM_MAX_MSG;
            int rc = MPI_Isend(buf + x->off[me] * es + b, (int)m, MPI_BYTE, q, LT_COMM_TAG + 1, x->comm,
                               &a->reqs[a->n]);
            if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
            a->peer[a->n++] = -1 - q;
        }
    }
    *req = a;
    return LT_OK;
}

static lt_status mpi_wait_req(lt_comm *c, void *req, lt_err *err) {
    mpi_async *a = req;
    const char *what = a && a->acc ? "reduce_scatter_sum_ordered (non-blocking)" : "all_gather (prefetch)";
    if (!a) return LT_OK;
    if (a->chain) return chain_wait(c, a, err);
    double t0 = lt_now_s();
    unsigned iter = 0;
    lt_status st = LT_OK;
    for (;;) {
        int outcount = 0;
        int rc = a->n ? MPI_Testsome(a->n, a->reqs, &outcount, a->idx, MPI_STATUSES_IGNORE) : MPI_SUCCESS;
        if (rc != MPI_SUCCESS) {
            st = mpi_fail(err, rc, what);
            break;
        }
        if (!a->n || outcount == MPI_UNDEFINED) break;
        if (outcount > 0) continue;
        if (lt_now_s() - t0 > c->timeout_s) {
            int suspect = -1;
            for (int i = 0; i < a->n && suspect < 0; i++)
                if (a->reqs[i] != MPI_REQUEST_NULL) suspect = a->peer[i] >= 0 ? a->peer[i] : -1 - a->peer[i];
            if (suspect >= 0 && X(c)->wrank) suspect = X(c)->wrank[suspect];
            lt_comm_timeout_abort(c, what, suspect);
        }
        lt_comm_backoff(&iter);
    }
    if (!st && a->acc)
        for (int q = 0; q < a->world; q++) lt_comm_add(a->dt, a->acc, a->tmp + (size_t)q * a->len * lt_dtype_size(a->dt), a->len);
    free(a->tmp);
    free(a->reqs);
    free(a->peer);
    free(a->idx);
    free(a);
    return st;
}

/* Non-blocking reduce_scatter_sum_ordered: every piece of this rank's slot
 * arrives in tmp (own piece copied now), the fold in rank order runs in
 * wait_req -- the same bits as the blocking call. Its own tag. */
static lt_status mpi_rs_ordered_start(lt_comm *c, void *acc, const void *xv, size_t n, const size_t *counts,
                                      lt_dtype dt, void **req, lt_err *err) {
    const char *what = "reduce_scatter_sum_ordered (non-blocking)";
    *req = NULL;
    mpi_ctx *x = X(c);
    lt_status st = check_args(c, what, n, counts, dt, err);
    if (st) return st;
    const int W = c->world, me = c->rank;
    const size_t es = lt_dtype_size(dt), mine = x->len[me];
    const unsigned char *src = xv;
    size_t nmsg = 0;
    for (int q = 0; q < W; q++)
        if (q != me) nmsg += (x->len[q] * es + LT_COMM_MAX_MSG - 1) / LT_COMM_MAX_MSG + (mine * es + LT_COMM_MAX_MSG - 1) / LT_COMM_MAX_MSG;
    mpi_async *a = calloc(1, sizeof *a);
    if (a) a->reqs = calloc(nmsg + 1, sizeof *a->reqs), a->peer = calloc(nmsg + 1, sizeof(int)),
           a->idx = calloc(nmsg + 1, sizeof(int)), a->tmp = malloc((size_t)W * mine * es + 1);
    if (!a || !a->reqs || !a->peer || !a->idx || !a->tmp) {
        if (a) free(a->reqs), free(a->peer), free(a->idx), free(a->tmp);
        free(a);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", what);
    }
    a->acc = acc, a->len = mine, a->dt = dt, a->world = W;
    memcpy(a->tmp + (size_t)me * mine * es, src + x->off[me] * es, mine * es);
    for (int q = 0; q < W; q++) {
        if (q == me) continue;
        for (size_t b = 0; b < mine * es; b += LT_COMM_MAX_MSG) {
            size_t m = mine * es - b < LT_COMM_MAX_MSG ? mine * es - b : LT_COMM_MAX_MSG;
            int rc = MPI_Irecv(a->tmp + (size_t)q * mine * es + b, (int)m, MPI_BYTE, q, LT_COMM_TAG + 2, x->comm,
                               &a->reqs[a->n]);
            if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
            a->peer[a->n++] = q;
        }
        for (size_t b = 0; b < x->len[q] * es; b += LT_COMM_MAX_MSG) {
            size_t m = x->len[q] * es - b < LT_COMM_MAX_MSG ? x->len[q] * es - b : LT_COMM_MAX_MSG;
            int rc = MPI_Isend(src + x->off[q] * es + b, (int)m, MPI_BYTE, q, LT_COMM_TAG + 2, x->comm, &a->reqs[a->n]);
            if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
            a->peer[a->n++] = -1 - q;
        }
    }
    *req = a;
    return LT_OK;
}

/* ---- hybrid chain (reduce_scatter_sum_ordered_chain_start, lt_comm.h) ----
 * Tags: +5 the pieces inside the group, +6 the running value from group
 * g-1 to g, +7 the result from the last group to the others. Messages
 * between two ranks with one tag match in posting order, so every rank
 * folds (and so posts its chain messages) in the order the requests were
 * started: seq against the group communicator's folded counter. */
typedef struct {
    MPI_Request *r;
    int *peer; /* >= 0 receive from, -1 - q send to (the comm's ranks) */
    int n, cap;
} mpi_reqset;

typedef struct mpi_chain {
    lt_comm *cross;
    void *acc;
    size_t len;          /* this rank's shard (elements) */
    lt_dtype dt;
    int me, gsize;       /* place in the group, group size */
    unsigned char *tmp;  /* (gsize x len) the pieces; then the last group's result */
    unsigned char *run;  /* (len) the running value */
    mpi_reqset snd, rcv; /* inside the group: sends of x, pieces in */
    mpi_reqset chn;      /* on cross: value in, value out, result in/out */
    uint64_t seq;
    int stage;           /* 0 pieces (and value) coming; 1 passed on; 2 done */
} mpi_chain;

static lt_status reqset_post(mpi_reqset *s, int send, void *buf, size_t bytes, int peer, int tag, MPI_Comm comm,
                             const char *what, lt_err *err) {
    for (size_t b = 0; b < bytes; b += LT_COMM_MAX_MSG) {
        if (s->n == s->cap) {
            int cap = s->cap ? 2 * s->cap : 8;
            MPI_Request *r = realloc(s->r, (size_t)cap * sizeof *r);
            if (r) s->r = r;
            int *p = realloc(s->peer, (size_t)cap * sizeof *p);
            if (p) s->peer = p;
            if (!r || !p) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", what);
            s->cap = cap;
        }
        size_t m = bytes - b < LT_COMM_MAX_MSG ? bytes - b : LT_COMM_MAX_MSG;
        int rc = send ? MPI_Isend((unsigned char *)buf + b, (int)m, MPI_BYTE, peer, tag, comm, &s->r[s->n])
                      : MPI_Irecv((unsigned char *)buf + b, (int)m, MPI_BYTE, peer, tag, comm, &s->r[s->n]);
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
        s->peer[s->n++] = send ? -1 - peer : peer;
    }
    return LT_OK;
}

/* every request of s complete (then s is emptied) */
static lt_status reqset_test(mpi_reqset *s, int *done, const char *what, lt_err *err) {
    int flag = 1;
    if (s->n) {
        int rc = MPI_Testall(s->n, s->r, &flag, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
    }
    if (flag) s->n = 0;
    *done = flag;
    return LT_OK;
}

/* a peer of s still pending, as a world rank (-1: none) */
static int reqset_suspect(const mpi_reqset *s, lt_comm *c) {
    for (int i = 0; i < s->n; i++)
        if (s->r[i] != MPI_REQUEST_NULL) {
            int q = s->peer[i] >= 0 ? s->peer[i] : -1 - s->peer[i];
            return X(c)->wrank ? X(c)->wrank[q] : q;
        }
    return -1;
}

static void chain_free(mpi_async *a) {
    mpi_chain *h = a->chain;
    free(h->tmp), free(h->run);
    free(h->snd.r), free(h->snd.peer), free(h->rcv.r), free(h->rcv.peer), free(h->chn.r), free(h->chn.peer);
    free(h);
    free(a);
}

static lt_status mpi_rs_chain_start(lt_comm *c, lt_comm *cross, void *acc, const void *xv, size_t n,
                                    const size_t *counts, lt_dtype dt, void **req, lt_err *err) {
    const char *what = "reduce_scatter_sum_ordered (hybrid chain)";
    *req = NULL;
    mpi_ctx *x = X(c);
    lt_status st = check_args(c, what, n, counts, dt, err);
    if (st) return st;
    if (!cross || strcmp(cross->name, "mpi"))
        return lt_fail(err, LT_ERR_INVALID, "%s: the cross communicator must be an 'mpi' one", what);
    const int W = c->world, me = c->rank;
    const size_t es = lt_dtype_size(dt), mine = x->len[me];
    mpi_async *a = calloc(1, sizeof *a);
    mpi_chain *h = calloc(1, sizeof *h);
    if (h) h->tmp = malloc((size_t)W * mine * es + 1), h->run = malloc(mine * es + 1);
    if (!a || !h || !h->tmp || !h->run) {
        if (h) free(h->tmp), free(h->run);
        free(h), free(a);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory for %zu elements", what, (size_t)W * mine);
    }
    a->chain = h;
    h->cross = cross, h->acc = acc, h->len = mine, h->dt = dt, h->me = me, h->gsize = W;
    h->seq = x->chain_started++;
    const unsigned char *src = xv;
    memcpy(h->tmp + (size_t)me * mine * es, src + x->off[me] * es, mine * es);
    for (int q = 0; q < W && !st; q++) {
        if (q == me) continue;
        st = reqset_post(&h->rcv, 0, h->tmp + (size_t)q * mine * es, mine * es, q, LT_COMM_TAG + 5, x->comm, what, err);
        if (!st) st = reqset_post(&h->snd, 1, (void *)(src + x->off[q] * es), x->len[q] * es, q, LT_COMM_TAG + 5,
                                  x->comm, what, err);
    }
    if (!st && cross->rank > 0) /* the running value from group g-1 */
        st = reqset_post(&h->chn, 0, h->run, mine * es, cross->rank - 1, LT_COMM_TAG + 6, X(cross)->comm, what, err);
    if (st) return st; /* (the job stops: the requests do not matter) */
    *req = a;
    return LT_OK;
}

/* advance a chain as far as it goes without waiting */
static lt_status chain_step(lt_comm *c, mpi_async *a, int *state, lt_err *err) {
    const char *what = "reduce_scatter_sum_ordered (hybrid chain)";
    mpi_chain *h = a->chain;
    mpi_ctx *x = X(c);
    lt_comm *cr = h->cross;
    const int G = cr->world, g = cr->rank;
    const size_t es = lt_dtype_size(h->dt), bytes = h->len * es;
    int sdone, rdone, cdone;
    lt_status st = reqset_test(&h->snd, &sdone, what, err);
    if (!st) st = reqset_test(&h->rcv, &rdone, what, err);
    if (!st) st = reqset_test(&h->chn, &cdone, what, err);
    if (st) return st;
    if (h->stage == 0 && rdone && cdone && h->seq == x->chain_folded) { /* fold this group's pieces on */
        if (g == 0) memcpy(h->run, h->acc, bytes);
        for (int q = 0; q < h->gsize; q++) lt_comm_add(h->dt, h->run, h->tmp + (size_t)q * bytes, h->len);
        MPI_Comm cc = X(cr)->comm;
        if (g < G - 1) {
            st = reqset_post(&h->chn, 1, h->run, bytes, g + 1, LT_COMM_TAG + 6, cc, what, err);
            if (!st) st = reqset_post(&h->chn, 0, h->tmp, bytes, G - 1, LT_COMM_TAG + 7, cc, what, err);
        } else {
            for (int q = 0; q < G - 1 && !st; q++) st = reqset_post(&h->chn, 1, h->run, bytes, q, LT_COMM_TAG + 7, cc, what, err);
        }
        if (st) return st;
        x->chain_folded++;
        h->stage = 1;
        if ((st = reqset_test(&h->chn, &cdone, what, err))) return st;
    }
    if (h->stage == 1 && cdone) h->stage = 2;
    *state = (sdone ? LT_REQ_INPUT_FREE : 0) | (h->stage == 2 && sdone && rdone ? LT_REQ_DONE : 0);
    return LT_OK;
}

static lt_status mpi_test_req(lt_comm *c, void *req, int *state, lt_err *err) {
    mpi_async *a = req;
    *state = 0;
    if (!a) {
        *state = LT_REQ_INPUT_FREE | LT_REQ_DONE;
        return LT_OK;
    }
    if (a->chain) return chain_step(c, a, state, err);
    int flag = 1; /* a plain request: done when all of its transfers are */
    if (a->n) {
        int rc = MPI_Testall(a->n, a->reqs, &flag, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "test_req");
        if (flag) a->n = 0;
    }
    *state = flag ? LT_REQ_INPUT_FREE | LT_REQ_DONE : 0;
    return LT_OK;
}

/* complete a chain (polling this one only: the caller polls the others
 * with test_req first when they matter) and write the result to acc */
static lt_status chain_wait(lt_comm *c, mpi_async *a, lt_err *err) {
    mpi_chain *h = a->chain;
    double t0 = lt_now_s();
    unsigned iter = 0;
    int state = 0;
    lt_status st;
    while (!(st = chain_step(c, a, &state, err)) && !(state & LT_REQ_DONE)) {
        if (lt_now_s() - t0 > c->timeout_s) {
            int s = reqset_suspect(&h->rcv, c);
            if (s < 0) s = reqset_suspect(&h->snd, c);
            lt_comm_timeout_abort(c, "reduce_scatter_sum_ordered (hybrid chain)", s); /* (the cross peer: unknown) */
        }
        lt_comm_backoff(&iter);
    }
    if (!st) memcpy(h->acc, h->cross->rank == h->cross->world - 1 ? h->run : h->tmp, h->len * lt_dtype_size(h->dt));
    chain_free(a);
    return st;
}

/* Wait for one collective request (the peer at fault is not known). */
static lt_status wait_one(lt_comm *c, const char *what, MPI_Request req, lt_err *err) {
    double t0 = lt_now_s();
    unsigned iter = 0;
    for (;;) {
        int done = 0;
        int rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
        if (done) return LT_OK;
        if (lt_now_s() - t0 > c->timeout_s) lt_comm_timeout_abort(c, what, -1);
        lt_comm_backoff(&iter);
    }
}

static lt_status tmp_reserve(lt_comm *c, size_t bytes, lt_err *err) {
    mpi_ctx *x = X(c);
    if (bytes <= x->tmp_bytes) return LT_OK;
    unsigned char *t = realloc(x->tmp, bytes);
    if (!t) return lt_fail(err, LT_ERR_NOMEM, "lt_comm: out of memory for a %zu-byte scratch buffer", bytes);
    x->tmp = t;
    x->tmp_bytes = bytes;
    return LT_OK;
}

static int overlaps(const void *a, size_t an, const void *b, size_t bn) {
    const char *pa = a, *pb = b;
    return an && bn && pa < pb + bn && pb < pa + an;
}

static lt_status check_args(lt_comm *c, const char *what, size_t n, const size_t *counts, lt_dtype dt,
                            lt_err *err) {
    if (!lt_comm_dtype_ok(dt))
        return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: element type %s is not supported", what, lt_dtype_name(dt));
    size_t bytes;
    if (!lt_mul_ok(n, lt_dtype_size(dt), &bytes)) return lt_fail(err, LT_ERR_RANGE, "%s: n = %zu overflows", what, n);
    return lt_comm_layout(c, what, n, counts, X(c)->off, X(c)->len, err);
}

/* ---- reduce-scatter by rank-order fold ----
 * dst (len[me] elements) := fold over q of x_q[off[me] ..] (accumulate: dst is
 * the fold's starting value; else the fold starts from x_0). Pieces of at
 * most x->chunk elements of every slot go out per round. */
static lt_status rs_fold(lt_comm *c, const char *what, void *dst, const void *xv, lt_dtype dt, int accumulate,
                         lt_err *err) {
    mpi_ctx *x = X(c);
    const int W = c->world, me = c->rank;
    const size_t es = lt_dtype_size(dt), C = x->chunk;
    const unsigned char *src = xv;
    unsigned char *d = dst;
    size_t maxlen = 0;
    for (int q = 0; q < W; q++)
        if (x->len[q] > maxlen) maxlen = x->len[q];
    size_t mine = x->len[me] < C ? x->len[me] : C;
    lt_status st = tmp_reserve(c, (size_t)W * mine * es, err);
    if (!st) st = reqs_reserve(c, 2 * W, err);
    if (st) return st;

    for (size_t a = 0; a < maxlen; a += C) {
        size_t m = x->len[me] > a ? x->len[me] - a : 0;
        if (m > C) m = C;
        int nr = 0;
        for (int q = 0; q < W; q++) {
            if (q == me) continue;
            size_t qm = x->len[q] > a ? x->len[q] - a : 0;
            if (qm > C) qm = C;
            if (qm) {
                int rc = MPI_Isend(src + (x->off[q] + a) * es, (int)(qm * es), MPI_BYTE, q, LT_COMM_TAG, x->comm,
                                   &x->reqs[nr]);
                if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
                x->peer[nr++] = -1 - q;
            }
            if (m) {
                int rc = MPI_Irecv(x->tmp + (size_t)q * m * es, (int)(m * es), MPI_BYTE, q, LT_COMM_TAG, x->comm,
                                   &x->reqs[nr]);
                if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
                x->peer[nr++] = q;
            }
        }
        /* own slot copied before dst (which may be that very slot) is written */
        if (m) memcpy(x->tmp + (size_t)me * m * es, src + (x->off[me] + a) * es, m * es);
        if ((st = wait_reqs(c, what, nr, err))) return st;
        if (!m) continue;
        unsigned char *da = d + a * es;
        int q0 = 0;
        if (!accumulate) {
            memcpy(da, x->tmp, m * es);
            q0 = 1;
        }
        for (int q = q0; q < W; q++) lt_comm_add(dt, da, x->tmp + (size_t)q * m * es, m);
    }
    return LT_OK;
}

/* In place: slot q of buf arrives from rank q; this rank's slot goes to all. */
static lt_status ag_p2p(lt_comm *c, const char *what, void *bufv, size_t es, lt_err *err) {
    mpi_ctx *x = X(c);
    const int W = c->world, me = c->rank;
    unsigned char *buf = bufv;
    size_t maxlen = 0;
    for (int q = 0; q < W; q++)
        if (x->len[q] * es > maxlen) maxlen = x->len[q] * es;
    lt_status st = reqs_reserve(c, 2 * W, err);
    if (st) return st;
    for (size_t a = 0; a < maxlen; a += LT_COMM_MAX_MSG) { /* a, m in bytes */
        size_t mb = x->len[me] * es > a ? x->len[me] * es - a : 0;
        if (mb > LT_COMM_MAX_MSG) mb = LT_COMM_MAX_MSG;
        int nr = 0;
        for (int q = 0; q < W; q++) {
            if (q == me) continue;
            size_t qb = x->len[q] * es > a ? x->len[q] * es - a : 0;
            if (qb > LT_COMM_MAX_MSG) qb = LT_COMM_MAX_MSG;
            if (qb) {
                int rc = MPI_Irecv(buf + x->off[q] * es + a, (int)qb, MPI_BYTE, q, LT_COMM_TAG, x->comm,
                                   &x->reqs[nr]);
                if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
                x->peer[nr++] = q;
            }
            if (mb) {
                int rc = MPI_Isend(buf + x->off[me] * es + a, (int)mb, MPI_BYTE, q, LT_COMM_TAG, x->comm,
                                   &x->reqs[nr]);
                if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
                x->peer[nr++] = -1 - q;
            }
        }
        if ((st = wait_reqs(c, what, nr, err))) return st;
    }
    return LT_OK;
}

/* ---- the table ---- */

static lt_status mpi_all_reduce(lt_comm *c, void *buf, size_t n, lt_dtype dt, lt_err *err) {
    const char *what = "all_reduce_sum";
    lt_status st = check_args(c, what, n, NULL, dt, err);
    if (st || n == 0) return st;
    size_t es = lt_dtype_size(dt);
    if ((st = rs_fold(c, what, (unsigned char *)buf + X(c)->off[c->rank] * es, buf, dt, 0, err))) return st;
    return ag_p2p(c, what, buf, es, err);
}

static lt_status mpi_all_reduce_ordered(lt_comm *c, void *acc, const void *xv, size_t n, lt_dtype dt,
                                        lt_err *err) {
    const char *what = "all_reduce_sum_ordered";
    lt_status st = check_args(c, what, n, NULL, dt, err);
    if (st || n == 0) return st;
    size_t es = lt_dtype_size(dt);
    if (overlaps(acc, n * es, xv, n * es)) return lt_fail(err, LT_ERR_INVALID, "%s: acc and x overlap", what);
    if ((st = rs_fold(c, what, (unsigned char *)acc + X(c)->off[c->rank] * es, xv, dt, 1, err))) return st;
    return ag_p2p(c, what, acc, es, err);
}

static lt_status mpi_reduce_scatter(lt_comm *c, void *shard, const void *xv, size_t n, const size_t *counts,
                                    lt_dtype dt, lt_err *err) {
    const char *what = "reduce_scatter_sum";
    lt_status st = check_args(c, what, n, counts, dt, err);
    if (st || n == 0) return st;
    size_t es = lt_dtype_size(dt), off = X(c)->off[c->rank], len = X(c)->len[c->rank];
    if ((const unsigned char *)shard != (const unsigned char *)xv + off * es && overlaps(shard, len * es, xv, n * es))
        return lt_fail(err, LT_ERR_INVALID, "%s: shard overlaps x (other than at this rank's own slot)", what);
    return rs_fold(c, what, shard, xv, dt, 0, err);
}

static lt_status mpi_reduce_scatter_ordered(lt_comm *c, void *acc, const void *xv, size_t n, const size_t *counts,
                                            lt_dtype dt, lt_err *err) {
    const char *what = "reduce_scatter_sum_ordered";
    lt_status st = check_args(c, what, n, counts, dt, err);
    if (st || n == 0) return st;
    size_t es = lt_dtype_size(dt), len = X(c)->len[c->rank];
    if (overlaps(acc, len * es, xv, n * es)) return lt_fail(err, LT_ERR_INVALID, "%s: acc_shard overlaps x", what);
    return rs_fold(c, what, acc, xv, dt, 1, err);
}

static lt_status mpi_all_gather(lt_comm *c, void *buf, size_t n, const size_t *counts, lt_dtype dt, lt_err *err) {
    const char *what = "all_gather";
    lt_status st = check_args(c, what, n, counts, dt, err);
    if (st || n == 0) return st;
    return ag_p2p(c, what, buf, lt_dtype_size(dt), err);
}

static lt_status mpi_broadcast(lt_comm *c, void *buf, size_t bytes, int root, lt_err *err) {
    const char *what = "broadcast";
    if (root < 0 || root >= c->world)
        return lt_fail(err, LT_ERR_INVALID, "%s: root %d out of range (world size %d)", what, root, c->world);
    for (size_t a = 0; a < bytes; a += LT_COMM_MAX_MSG) {
        size_t m = bytes - a < LT_COMM_MAX_MSG ? bytes - a : LT_COMM_MAX_MSG;
        MPI_Request req;
        int rc = MPI_Ibcast((unsigned char *)buf + a, (int)m, MPI_BYTE, root, X(c)->comm, &req);
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
        lt_status st = wait_one(c, what, req, err);
        if (st) return st;
    }
    return LT_OK;
}

static lt_status mpi_barrier(lt_comm *c, lt_err *err) {
    MPI_Request req;
    int rc = MPI_Ibarrier(X(c)->comm, &req);
    if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "barrier");
    return wait_one(c, "barrier", req, err);
}

static lt_status mpi_set_stream(lt_comm *c, void *stream, lt_err *err) { return LT_OK; }

void lt_comm_mpi_world_abort(int code) {
    if (lt_comm_mpi_initialized()) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

static void mpi_abort(lt_comm *c, const char *msg) {
    lt_comm_print_abort(c, msg);
    lt_comm_mpi_world_abort(1);
}

void lt_comm_mpi_finalize(void) {
    if (lt_comm_mpi_initialized()) MPI_Finalize();
}

static void mpi_destroy(lt_comm *c) {
    if (!c) return;
    mpi_ctx *x = X(c);
    if (x) {
        if (x->comm != MPI_COMM_NULL && lt_comm_mpi_initialized()) MPI_Comm_free(&x->comm);
        if (x->we_init) lt_comm_mpi_finalize();
        free(x->tmp);
        free(x->reqs);
        free(x->peer);
        free(x->idx);
        free(x->off);
        free(x->len);
        free(x->wrank);
        free(x);
    }
    free(c);
}

/* ---- bootstrap (also used by the NCCL communicator) ---- */

lt_status lt_comm_mpi_boot(const lt_comm_env *env, int *rank, int *world, int *local_rank, int *local_world,
                           int *we_init, lt_err *err) {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    *we_init = 0;
    if (fin) return lt_fail(err, LT_ERR_INVALID, "lt_comm_create: MPI was already finalized");
    if (!init) {
        int provided = 0;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return lt_fail(err, LT_ERR_BACKEND, "lt_comm_create: MPI_Init_thread failed");
        *we_init = 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, world);
    if (strcmp(env->source, "none") && (env->world != *world || env->rank != *rank)) {
        lt_status st = lt_fail(err, LT_ERR_INVALID,
                               "MPI sees rank %d of %d but the launcher environment (%s) says rank %d of %d; under "
                               "Slurm launch with `srun --mpi=pmix` (or use mpirun)",
                               *rank, *world, env->source, env->rank, env->world);
        if (*we_init) MPI_Finalize();
        *we_init = 0;
        return st;
    }
    MPI_Comm node;
    *local_rank = env->local_rank;
    *local_world = env->local_world;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, *rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, local_rank);
        MPI_Comm_size(node, local_world);
        MPI_Comm_free(&node);
    }
    return LT_OK;
}

lt_status lt_comm_mpi_boot_bcast(void *buf, size_t bytes, double timeout_s, int rank, lt_err *err) {
    MPI_Request req;
    if (MPI_Ibcast(buf, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD, &req) != MPI_SUCCESS)
        return lt_fail(err, LT_ERR_BACKEND, "lt_comm_create: MPI_Ibcast of the NCCL id failed");
    double t0 = lt_now_s();
    unsigned iter = 0;
    for (;;) {
        int done = 0;
        MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (done) return LT_OK;
        if (lt_now_s() - t0 > timeout_s) {
            fprintf(stderr,
                    "luxtrain: rank %d: broadcast of the NCCL unique id timed out after %g s (a peer may have died "
                    "or hung)\n",
                    rank, timeout_s);
            lt_comm_mpi_world_abort(1);
        }
        lt_comm_backoff(&iter);
    }
}

static lt_status mpi_split(lt_comm *c, int color, int key, lt_comm **out, lt_err *err);

/* the table and the scratch layout for x->comm (c->rank / c->world set) */
static lt_status mpi_fill(lt_comm *c, lt_err *err) {
    mpi_ctx *x = X(c);
    MPI_Comm_set_errhandler(x->comm, MPI_ERRORS_RETURN);
    x->off = calloc((size_t)c->world, sizeof *x->off);
    x->len = calloc((size_t)c->world, sizeof *x->len);
    if (!x->off || !x->len) return lt_fail(err, LT_ERR_NOMEM, "lt_comm_create: out of memory");
    /* pieces of ~16M elements in all (x world) keep the scratch near 64 MB */
    size_t dflt = ((size_t)1 << 24) / (size_t)c->world;
    if (dflt < 4096) dflt = 4096;
    x->chunk = lt_comm_chunk_elems(dflt);
    if (x->chunk > LT_COMM_MAX_MSG / 8) x->chunk = LT_COMM_MAX_MSG / 8;
    c->name = "mpi";
    c->device = -1;
    c->all_reduce_sum = mpi_all_reduce;
    c->all_reduce_sum_ordered = mpi_all_reduce_ordered;
    c->reduce_scatter_sum = mpi_reduce_scatter;
    c->reduce_scatter_sum_ordered = mpi_reduce_scatter_ordered;
    c->all_gather = mpi_all_gather;
    c->broadcast = mpi_broadcast;
    c->barrier = mpi_barrier;
    c->set_stream = mpi_set_stream;
    c->abort = mpi_abort;
    c->split = mpi_split;
    c->all_gather_start = mpi_all_gather_start;
    c->reduce_scatter_sum_ordered_start = mpi_rs_ordered_start;
    c->wait_req = mpi_wait_req;
    c->reduce_scatter_sum_ordered_chain_start = mpi_rs_chain_start;
    c->test_req = mpi_test_req;
    return LT_OK;
}

/* an MPI communicator without its MPI_Comm yet (MPI_COMM_NULL): mpi_destroy frees it */
static lt_comm *mpi_new(void) {
    lt_comm *c = calloc(1, sizeof *c);
    mpi_ctx *x = calloc(1, sizeof *x);
    if (!c || !x) {
        free(c);
        free(x);
        return NULL;
    }
    x->comm = MPI_COMM_NULL;
    c->ctx = x;
    c->destroy = mpi_destroy;
    return c;
}

static lt_status mpi_split(lt_comm *c, int color, int key, lt_comm **out, lt_err *err) {
    *out = NULL;
    lt_comm *s = mpi_new();
    if (!s) return lt_fail(err, LT_ERR_NOMEM, "communicator split: out of memory");
    mpi_ctx *x = s->ctx;
    int rc = MPI_Comm_split(X(c)->comm, color < 0 ? 0 : color, key, &x->comm);
    if (rc != MPI_SUCCESS) {
        mpi_destroy(s);
        return mpi_fail(err, rc, "communicator split");
    }
    MPI_Comm_rank(x->comm, &s->rank);
    MPI_Comm_size(x->comm, &s->world);
    s->local_rank = c->local_rank;
    s->local_world = c->local_world;
    s->timeout_s = c->timeout_s;
    s->msg_rank = c->msg_world ? c->msg_rank : c->rank;
    s->msg_world = c->msg_world ? c->msg_world : c->world;
    /* the world rank of every member, for the messages */
    int me = s->msg_rank;
    x->wrank = calloc((size_t)s->world, sizeof *x->wrank);
    lt_status st = x->wrank ? mpi_fill(s, err) : lt_fail(err, LT_ERR_NOMEM, "communicator split: out of memory");
    MPI_Request req;
    if (!st && (rc = MPI_Iallgather(&me, 1, MPI_INT, x->wrank, 1, MPI_INT, x->comm, &req)) != MPI_SUCCESS)
        st = mpi_fail(err, rc, "communicator split");
    else if (!st)
        st = wait_one(s, "communicator split", req, err);
    if (st) {
        mpi_destroy(s);
        return st;
    }
    *out = s;
    return LT_OK;
}

lt_status lt_comm_mpi_create(const lt_comm_opts *opts, const lt_comm_env *env, lt_comm **out, lt_err *err) {
    *out = NULL;
    lt_comm *c = mpi_new();
    if (!c) return lt_fail(err, LT_ERR_NOMEM, "lt_comm_create: out of memory");
    mpi_ctx *x = c->ctx;
    lt_status st = lt_comm_mpi_boot(env, &c->rank, &c->world, &c->local_rank, &c->local_world, &x->we_init, err);
    if (st) {
        mpi_destroy(c);
        return lt_wrap(err, st, "communicator 'mpi'");
    }
    /* A private communicator: our point-to-point traffic never meets anyone
     * else's; errors come back as codes instead of aborting inside MPI. */
    if (MPI_Comm_dup(MPI_COMM_WORLD, &x->comm) != MPI_SUCCESS) {
        mpi_destroy(c);
        return lt_fail(err, LT_ERR_BACKEND, "communicator 'mpi': MPI_Comm_dup failed");
    }
    c->timeout_s = lt_comm_timeout(opts);
    if ((st = mpi_fill(c, err))) {
        mpi_destroy(c);
        return st;
    }
    *out = c;
    return LT_OK;
}

#else
typedef int lt_comm_mpi_unused; /* built without MPI: see the stubs in lt_comm.c */
#endif
