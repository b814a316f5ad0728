/* lt_comm_nccl.c -- the NCCL communicator (lt_comm.h): one process per GPU,
 * buffers in device memory (host pointers are staged through the device).
 *
 *   plain ops    ncclAllReduce; ncclReduceScatter / ncclAllGather when the
 *                split is even, else grouped ncclReduce / ncclBroadcast per
 *                rank (uneven ZeRO-1 shards); ncclBroadcast.
 *   ordered ops  rank r receives slot r of every rank's vector (grouped
 *                ncclSend / ncclRecv, in pieces) and folds the pieces in rank
 *                order with cublas{S,D}axpy(alpha = 1), which is exactly
 *                y = y + x per element; the all-reduce then all-gathers the
 *                folded slots. Same result bits as "mpi" and "single".
 *
 * Non-blocking starts (reduce_scatter_sum_ordered_start, all_gather_start;
 * device buffers): the op is queued on a communication stream of its own
 * (cs) behind an event recorded on the compute stream (with set_stream: the
 * backend's stream, an event only; without: after a device-wide sync, as
 * every op here), and an event recorded on cs after it is the request.
 * wait_req makes the compute stream wait for that event (set_stream), or
 * polls it with the timeout. One event, the "tail", follows the last op
 * queued on any cs of a communicator and the sub-communicators split from it
 * (they share it): every blocking op first waits for it, and every start
 * queues behind it, so at most one NCCL op of the whole family is in flight
 * on the device at a time, in the order every rank queued them (NCCL
 * kernels of two communicators running at once can deadlock when GPUs
 * schedule them in different orders: --shard-group's sub-communicators with
 * ZeRO-3's prefetch), and the scratch buffers are never shared by two ops
 * at once. Without set_stream the device-wide sync before every op gives
 * the same order. The ordered fold is the same cuBLAS axpy sequence on cs:
 * the same bits as the blocking call. Host buffers: the blocking call, and
 * a request that is already complete. Every request in flight is on its
 * communicator's list: destroy releases those never waited for (a failed
 * step), after waiting (with the timeout) for what is queued; past it the
 * communicator is aborted instead of finalized.
 *
 * The hybrid chain (reduce_scatter_sum_ordered_chain_start; c = the group
 * of gs consecutive world ranks, cross = the ranks with the same place in
 * every group, G groups, g = cross->rank). Every op of it goes on c's cs in
 * an async block (also the cross communicator's sends and receives: one
 * stream, never two communicators in one ncclGroupStart/End), so the tail
 * keeps the whole family's NCCL ops one at a time in program order. For
 * chain c, per chunk of the slot (as the ordered reduce-scatter):
 *   E  the exchange inside the group (the owner gets its group's pieces);
 *   R  (g > 0) the running value from cross rank g-1 into acc_shard;
 *   F  fold the pieces in group-rank order onto acc_shard (cuBLAS axpy;
 *      group 0 starts from acc_shard as given);
 *   S  (g < G-1) acc_shard to cross rank g+1;
 * the request's input event follows the last chunk's E. Then, later,
 *   D  cross rank G-1 sends acc_shard to every other cross rank,
 * queued at the start of chain c+d (d = G-1, at least 1; before its E) or
 * by wait_req of chain c or a later one (every pending D up to it, in chain
 * order; behind the family's last op, not the compute stream), whichever
 * comes first; never by test_req, which runs a
 * timing-dependent number of times. test_req reports DONE only once D is
 * queued (and its event reached; with set_stream the compute stream then
 * waits for it, as for INPUT_FREE). Group g's fold is
 * (((value after groups 0 .. g-1) + x_{g*gs}) + ...) + x_{g*gs+gs-1}: the
 * world's rank-order fold, the bits of "mpi" and of one rank. The ranks
 * with the same place in every group own the same number of elements, so
 * they skip the same R, S and D.
 * Why it cannot deadlock: every rank issues the same sequence of starts,
 * waits and blocking ops (the program), and every NCCL op queued inside
 * it gets a key: (program position, then for a chain's chunk k: E (0, k),
 * the S of group g-1 = the R of group g (g, k)); a D gets the position of
 * the start or wait_req that queues it, which is the same on every rank
 * because it depends only on the program. Each rank's stream runs its ops
 * in increasing key order (group g: E, R (g), F, S (g+1) per chunk), every
 * transfer has one key on all of its parties, and everything an op waits
 * for -- the compute stream up to its start (the ready event), the tail,
 * a peer's matching op -- has a smaller key or the same op's. So the
 * smallest-key op not yet complete has every party at it and runs: every
 * dependency points to an earlier chain, or an earlier group of the same
 * chain. The acc_shard of a chain is written by R, F and D until its
 * wait_req: a chain on the same acc_shard must start after that
 * (lt_comm.h), else group 0 would fold onto a value D has not delivered.
 *
 * The communicator is created non-blocking (ncclConfig_t.blocking = 0), so
 * no NCCL call can block forever: every wait polls ncclCommGetAsyncError and
 * cudaStreamQuery until c->timeout_s, then aborts the communicator and the job.
 * The NCCL unique id comes from rank 0 over MPI, NCCL_COMM_ID, or a file
 * (lt_comm.h). Built only with -DLUXTRAIN_CUDA=ON where NCCL is found.
 */
#define _POSIX_C_SOURCE 200809L
#include "lt_comm_internal.h"

#ifdef LT_HAVE_NCCL
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { S_X = 0, S_P, S_O, S_COUNT }; /* device scratch: staged input, pieces, staged output */

/* the event after the last op queued on the communication stream of any
 * communicator of a family (a communicator and those split from it) */
typedef struct {
    cudaEvent_t ev;
    int used; /* an op was recorded */
    int refs;
} nc_tail;

/* a request (lt_comm.h's void *req) of a non-blocking start */
typedef struct nc_req {
    struct nc_req *prev, *next; /* the communicator's requests in flight, in start order */
    cudaEvent_t done;           /* after the op on cs; a chain: after its last op, then after its D */
    cudaEvent_t input;          /* a chain: after the last read of x (NULL: another start) */
    int in_waited, done_waited; /* input / done reached (with set_stream: the compute stream waits for it) */
    /* a chain (cross != NULL): its number among the communicator's chains,
     * D queued, and what D needs */
    lt_comm *cross;
    uint64_t seq;
    int d_queued;
    void *acc;      /* the shard on the device (a copy when the caller's is host memory) */
    void *host_acc; /* the caller's shard in host memory (wait_req copies the result there), or NULL */
    size_t len;     /* elements */
    lt_dtype dt;
    ncclDataType_t ndt;
} nc_req;

typedef struct {
    ncclComm_t nccl;
    cudaStream_t own, stream;
    int user_stream;
    cublasHandle_t blas;
    /* non-blocking starts: their stream, its cuBLAS handle, the family's
     * tail (shared), and while an op is being queued there (async) the
     * compute stream and handle it replaces */
    cudaStream_t cs;
    cublasHandle_t blas_cs;
    nc_tail *tail;
    cudaEvent_t ready;
    int async;
    int starting; /* check_args of a start: the compute stream must not wait for cs */
    cudaStream_t saved_stream;
    cublasHandle_t saved_blas;
    nc_req *reqs, *reqs_last; /* requests in flight (started on this communicator) */
    uint64_t chains;          /* hybrid chains started */
    void *scratch[S_COUNT];
    size_t scratch_bytes[S_COUNT];
    unsigned char *host; /* host copy of the pieces (ordered ops on host buffers) */
    size_t host_bytes;
    size_t chunk;
    size_t *off, *len;
    int we_init_mpi;
    int owns_id_file;
    char id_file[4096];
} nccl_ctx;

static nccl_ctx *X(lt_comm *c) { return (nccl_ctx *)c->ctx; }

static int nccl_dtype(lt_dtype dt, ncclDataType_t *out) {
    switch (dt) {
    case LT_F32: *out = ncclFloat32; return 1;
    case LT_BF16: *out = ncclBfloat16; return 1;
    case LT_F64: *out = ncclFloat64; return 1;
    case LT_I64: *out = ncclInt64; return 1;
    case LT_I32: *out = ncclInt32; return 1;
    case LT_U8: *out = ncclUint8; return 1;
    default: return 0;
    }
}

static lt_status cuda_fail(lt_err *err, cudaError_t e, const char *what) {
    return lt_fail(err, LT_ERR_BACKEND, "%s: CUDA error: %s", what, cudaGetErrorString(e));
}

static lt_status nccl_fail(lt_comm *c, lt_err *err, ncclResult_t r, const char *what) {
    const char *last = (c && X(c) && X(c)->nccl) ? ncclGetLastError(X(c)->nccl) : NULL;
    return lt_fail(err, LT_ERR_BACKEND, "%s: NCCL error: %s%s%s", what, ncclGetErrorString(r),
                   last && *last ? ": " : "", last ? last : "");
}

/* 1 for device (or managed) memory, 0 for host memory */
static int on_device(const void *p) {
    struct cudaPointerAttributes a;
    if (!p || cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError(); /* clear */
        return 0;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

static lt_status scratch(lt_comm *c, int slot, size_t bytes, void **out, lt_err *err) {
    nccl_ctx *x = X(c);
    if (bytes > x->scratch_bytes[slot]) { /* (a device-wide sync: an op on cs may still use it) */
        cudaError_t e = cudaDeviceSynchronize();
        if (e != cudaSuccess) return cuda_fail(err, e, "lt_comm scratch");
        cudaFree(x->scratch[slot]);
        x->scratch[slot] = NULL;
        x->scratch_bytes[slot] = 0;
        if ((e = cudaMalloc(&x->scratch[slot], bytes)) != cudaSuccess)
            return lt_fail(err, LT_ERR_NOMEM, "lt_comm: cannot allocate %zu bytes of device scratch: %s", bytes,
                           cudaGetErrorString(e));
        x->scratch_bytes[slot] = bytes;
    }
    *out = x->scratch[slot];
    return LT_OK;
}

/* ---- the timed wait ---- */

/* After enqueuing on NCCL communicator nc (c's own, or a chain's cross one
 * queued on c's stream): r is what the NCCL call (or ncclGroupEnd) returned. */
static lt_status wait_done_on(lt_comm *c, ncclComm_t nc, const char *what, ncclResult_t r, lt_err *err) {
    nccl_ctx *x = X(c);
    if (r != ncclSuccess && r != ncclInProgress) return nccl_fail(c, err, r, what);
    double t0 = lt_now_s();
    unsigned iter = 0;
    for (;;) {
        ncclResult_t a = ncclSuccess;
        ncclResult_t q = ncclCommGetAsyncError(nc, &a);
        if (q != ncclSuccess) return nccl_fail(c, err, q, what);
        if (a != ncclSuccess && a != ncclInProgress) return nccl_fail(c, err, a, what);
        if (a == ncclSuccess && x->async) return LT_OK; /* queued on cs (the next call may follow): wait_req waits */
        if (a == ncclSuccess) {
            cudaError_t e = cudaStreamQuery(x->stream);
            if (e == cudaSuccess) return LT_OK;
            if (e != cudaErrorNotReady) return cuda_fail(err, e, what);
        }
        if (lt_now_s() - t0 > c->timeout_s) lt_comm_timeout_abort(c, what, -1);
        lt_comm_backoff(&iter);
    }
}

static lt_status wait_done(lt_comm *c, const char *what, ncclResult_t r, lt_err *err) {
    return wait_done_on(c, X(c)->nccl, what, r, err);
}

/* Before an op: without the backend's stream, let every queued kernel finish
 * (the backend may use another stream). */
static lt_status prologue(lt_comm *c, const char *what, lt_err *err) {
    nccl_ctx *x = X(c);
    cudaError_t e;
    if (x->user_stream) /* behind every op queued on the family's cs (one NCCL op in flight at a
                         * time); a start queues behind them in async_begin */
        e = x->tail->used && !x->starting ? cudaStreamWaitEvent(x->stream, x->tail->ev, 0) : cudaSuccess;
    else
        e = cudaDeviceSynchronize();
    return e == cudaSuccess ? LT_OK : cuda_fail(err, e, what);
}

static lt_status copy(lt_comm *c, void *dst, const void *src, size_t bytes, const char *what, lt_err *err) {
    if (!bytes) return LT_OK;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, X(c)->stream);
    if (e == cudaSuccess && !X(c)->async) e = cudaStreamSynchronize(X(c)->stream); /* (cs: stream-ordered) */
    return e == cudaSuccess ? LT_OK : cuda_fail(err, e, what);
}

static lt_status check_args(lt_comm *c, const char *what, size_t n, const size_t *counts, lt_dtype dt,
                            ncclDataType_t *ndt, lt_err *err) {
    if (!nccl_dtype(dt, ndt))
        return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: element type %s is not supported by NCCL", what,
                       lt_dtype_name(dt));
    size_t bytes;
    if (!lt_mul_ok(n, lt_dtype_size(dt), &bytes)) return lt_fail(err, LT_ERR_RANGE, "%s: n = %zu overflows", what, n);
    lt_status st = lt_comm_layout(c, what, n, counts, X(c)->off, X(c)->len, err);
    if (st) return st;
    return prologue(c, what, err);
}

static int even_split(lt_comm *c) {
    for (int q = 1; q < c->world; q++)
        if (X(c)->len[q] != X(c)->len[0]) return 0;
    return 1;
}

/* ---- device primitives (every pointer is device memory) ---- */

/* shard (len[me]) := sum over ranks of x[off[me] ..]; shard may be x + off[me] */
static lt_status dev_reduce_scatter(lt_comm *c, const char *what, void *shard, const void *xv, ncclDataType_t ndt,
                                    size_t es, lt_err *err) {
    nccl_ctx *x = X(c);
    const unsigned char *src = xv;
    if (even_split(c)) {
        if (!x->len[0]) return LT_OK;
        return wait_done(c, what, ncclReduceScatter(xv, shard, x->len[0], ndt, ncclSum, x->nccl, x->stream), err);
    }
    ncclResult_t r = ncclGroupStart();
    for (int q = 0; q < c->world && r == ncclSuccess; q++) {
        if (!x->len[q]) continue; /* every rank skips the same ones */
        void *recv = q == c->rank ? shard : (void *)(src + x->off[q] * es); /* recvbuff: root only */
        r = ncclReduce(src + x->off[q] * es, recv, x->len[q], ndt, ncclSum, q, x->nccl, x->stream);
    }
    ncclResult_t r2 = ncclGroupEnd();
    return wait_done(c, what, r != ncclSuccess ? r : r2, err);
}

/* in place: slot q of buf from rank q */
static lt_status dev_all_gather(lt_comm *c, const char *what, void *bufv, ncclDataType_t ndt, size_t es,
                                lt_err *err) {
    nccl_ctx *x = X(c);
    unsigned char *buf = bufv;
    if (even_split(c)) {
        if (!x->len[0]) return LT_OK;
        return wait_done(c, what,
                         ncclAllGather(buf + x->off[c->rank] * es, buf, x->len[0], ndt, x->nccl, x->stream), err);
    }
    ncclResult_t r = ncclGroupStart();
    for (int q = 0; q < c->world && r == ncclSuccess; q++) {
        if (!x->len[q]) continue;
        r = ncclBroadcast(buf + x->off[q] * es, buf + x->off[q] * es, x->len[q], ndt, q, x->nccl, x->stream);
    }
    ncclResult_t r2 = ncclGroupEnd();
    return wait_done(c, what, r != ncclSuccess ? r : r2, err);
}

/* Ordered sums fold on the device with cublas axpy: F32 and F64 only. The
 * check must come out the same on every rank (else some ranks would wait for
 * the others forever), so it looks only at dt and where x lives. */
static lt_status ordered_dtype_ok(const char *what, lt_dtype dt, int x_on_device, int acc_on_device, lt_err *err) {
    if ((x_on_device || acc_on_device) && dt != LT_F32 && dt != LT_F64)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: ordered sums on device buffers take F32 or F64, not %s (host buffers take any type)",
                       what, lt_dtype_name(dt));
    return LT_OK;
}

/* the pieces scratch of an ordered reduce-scatter (W x min(len[me], chunk)
 * elements) and the longest slot, which every rank loops over in chunks */
static lt_status pieces_scratch(lt_comm *c, size_t es, unsigned char **pieces, size_t *maxlen, lt_err *err) {
    nccl_ctx *x = X(c);
    const int W = c->world;
    *maxlen = 0;
    for (int q = 0; q < W; q++)
        if (x->len[q] > *maxlen) *maxlen = x->len[q];
    size_t mine = x->len[c->rank] < x->chunk ? x->len[c->rank] : x->chunk;
    return scratch(c, S_P, (size_t)W * mine * es + 1, (void **)pieces, err);
}

/* elements of a slot of len elements in the chunk starting at a */
static size_t chunk_len(size_t len, size_t a, size_t C) {
    size_t m = len > a ? len - a : 0;
    return m > C ? C : m;
}

/* One chunk's exchange: every rank sends its elements [a, a + C) of slot q
 * to rank q; this rank's m elements from rank q land in pieces[q] (its own
 * piece copied from x). x (src) is device memory. */
static lt_status exchange_chunk(lt_comm *c, const char *what, const unsigned char *src, size_t a, unsigned char *pieces,
                                size_t m, ncclDataType_t ndt, size_t es, lt_err *err) {
    nccl_ctx *x = X(c);
    const int W = c->world, me = c->rank;
    ncclResult_t r = ncclGroupStart();
    for (int q = 0; q < W && r == ncclSuccess; q++) {
        if (q == me) continue;
        size_t qm = chunk_len(x->len[q], a, x->chunk);
        if (qm) r = ncclSend(src + (x->off[q] + a) * es, qm, ndt, q, x->nccl, x->stream);
        if (m && r == ncclSuccess) r = ncclRecv(pieces + (size_t)q * m * es, m, ndt, q, x->nccl, x->stream);
    }
    ncclResult_t r2 = ncclGroupEnd();
    lt_status st = wait_done(c, what, r != ncclSuccess ? r : r2, err);
    if (st || !m) return st;
    return copy(c, pieces + (size_t)me * m * es, src + (x->off[me] + a) * es, m * es, what, err);
}

/* da (m elements, device) := fold(da, pieces[q0], ..., pieces[W-1]) on the
 * device, y = 1 * x + y being exactly y + x */
static lt_status fold_pieces(lt_comm *c, const char *what, unsigned char *da, const unsigned char *pieces, int q0,
                             size_t m, lt_dtype dt, lt_err *err) {
    nccl_ctx *x = X(c);
    const size_t es = lt_dtype_size(dt);
    for (int q = q0; q < c->world; q++) {
        cublasStatus_t bs;
        if (dt == LT_F32) {
            const float one = 1.0f;
            bs = cublasSaxpy(x->blas, (int)m, &one, (const float *)(pieces + (size_t)q * m * es), 1, (float *)da, 1);
        } else {
            const double one = 1.0;
            bs = cublasDaxpy(x->blas, (int)m, &one, (const double *)(pieces + (size_t)q * m * es), 1, (double *)da,
                             1);
        }
        if (bs != CUBLAS_STATUS_SUCCESS)
            return lt_fail(err, LT_ERR_BACKEND, "%s: cublas axpy failed (status %d)", what, (int)bs);
    }
    return LT_OK;
}

/* The ordered reduce-scatter: dst (len[me], device or host) := fold over q of
 * x_q[slot me] (accumulate: starting from dst). x is device memory. */
static lt_status ordered_rs(lt_comm *c, const char *what, void *dst, int dst_host, const void *xv, lt_dtype dt,
                            ncclDataType_t ndt, int accumulate, lt_err *err) {
    nccl_ctx *x = X(c);
    const int W = c->world, me = c->rank;
    const size_t es = lt_dtype_size(dt), C = x->chunk;
    unsigned char *d = dst, *pieces;
    size_t maxlen;
    lt_status st = pieces_scratch(c, es, &pieces, &maxlen, err);
    if (st) return st;
    size_t mine = chunk_len(x->len[me], 0, C);
    if (dst_host && x->host_bytes < (size_t)W * mine * es) {
        unsigned char *h = realloc(x->host, (size_t)W * mine * es);
        if (!h) return lt_fail(err, LT_ERR_NOMEM, "%s: out of host memory", what);
        x->host = h;
        x->host_bytes = (size_t)W * mine * es;
    }
    for (size_t a = 0; a < maxlen; a += C) {
        size_t m = chunk_len(x->len[me], a, C);
        if ((st = exchange_chunk(c, what, xv, a, pieces, m, ndt, es, err))) return st;
        if (!m) continue;
        unsigned char *da = d + a * es;
        if (dst_host) { /* fold on the host */
            if ((st = copy(c, x->host, pieces, (size_t)W * m * es, what, err))) return st;
            int q0 = 0;
            if (!accumulate) {
                memcpy(da, x->host, m * es);
                q0 = 1;
            }
            for (int q = q0; q < W; q++) lt_comm_add(dt, da, x->host + (size_t)q * m * es, m);
            continue;
        }
        int q0 = 0;
        if (!accumulate) {
            if ((st = copy(c, da, pieces, m * es, what, err))) return st;
            q0 = 1;
        }
        if ((st = fold_pieces(c, what, da, pieces, q0, m, dt, err))) return st;
        cudaError_t e = x->async ? cudaSuccess : cudaStreamSynchronize(x->stream);
        if (e != cudaSuccess) return cuda_fail(err, e, what);
    }
    return LT_OK;
}

/* ---- the table ---- */

static lt_status nc_all_reduce(lt_comm *c, void *buf, size_t n, lt_dtype dt, lt_err *err) {
    const char *what = "all_reduce_sum";
    ncclDataType_t ndt;
    lt_status st = check_args(c, what, n, NULL, dt, &ndt, err);
    if (st || n == 0) return st;
    size_t bytes = n * lt_dtype_size(dt);
    void *d = buf;
    if (!on_device(buf)) {
        if ((st = scratch(c, S_X, bytes, &d, err)) || (st = copy(c, d, buf, bytes, what, err))) return st;
    }
    st = wait_done(c, what, ncclAllReduce(d, d, n, ndt, ncclSum, X(c)->nccl, X(c)->stream), err);
    if (!st && d != buf) st = copy(c, buf, d, bytes, what, err);
    return st;
}

static lt_status nc_all_reduce_ordered(lt_comm *c, void *acc, const void *xv, size_t n, lt_dtype dt, lt_err *err) {
    const char *what = "all_reduce_sum_ordered";
    ncclDataType_t ndt;
    lt_status st = check_args(c, what, n, NULL, dt, &ndt, err);
    if (st || n == 0) return st;
    if (acc == xv) return lt_fail(err, LT_ERR_INVALID, "%s: acc and x are the same buffer", what);
    size_t es = lt_dtype_size(dt), bytes = n * es;
    const void *dx = xv;
    void *dacc = acc;
    if ((st = ordered_dtype_ok(what, dt, on_device(xv), on_device(acc), err))) return st;
    if (!on_device(xv)) {
        void *s;
        if ((st = scratch(c, S_X, bytes, &s, err)) || (st = copy(c, s, xv, bytes, what, err))) return st;
        dx = s;
    }
    int acc_host = !on_device(acc);
    if (acc_host) { /* fold on the host into acc, then gather on the device */
        if ((st = scratch(c, S_O, bytes, &dacc, err))) return st;
    }
    unsigned char *slot = (unsigned char *)acc + X(c)->off[c->rank] * es;
    if ((st = ordered_rs(c, what, slot, acc_host, dx, dt, ndt, 1, err))) return st;
    if (acc_host && (st = copy(c, (unsigned char *)dacc + X(c)->off[c->rank] * es, slot, X(c)->len[c->rank] * es,
                               what, err)))
        return st;
    if ((st = dev_all_gather(c, what, dacc, ndt, es, err))) return st;
    if (acc_host) st = copy(c, acc, dacc, bytes, what, err);
    return st;
}

static lt_status nc_reduce_scatter(lt_comm *c, void *shard, const void *xv, size_t n, const size_t *counts,
                                   lt_dtype dt, lt_err *err) {
    const char *what = "reduce_scatter_sum";
    ncclDataType_t ndt;
    lt_status st = check_args(c, what, n, counts, dt, &ndt, err);
    if (st || n == 0) return st;
    size_t es = lt_dtype_size(dt), bytes = n * es, lb = X(c)->len[c->rank] * es;
    if (on_device(xv) && (lb == 0 || on_device(shard))) return dev_reduce_scatter(c, what, shard, xv, ndt, es, err);
    /* host buffers: stage both */
    void *dx, *ds;
    if ((st = scratch(c, S_X, bytes, &dx, err)) || (st = scratch(c, S_O, lb + 1, &ds, err))) return st;
    if ((st = copy(c, dx, xv, bytes, what, err))) return st;
    if ((st = dev_reduce_scatter(c, what, ds, dx, ndt, es, err))) return st;
    return copy(c, shard, ds, lb, what, err);
}

static lt_status nc_reduce_scatter_ordered(lt_comm *c, void *acc, const void *xv, size_t n, const size_t *counts,
                                           lt_dtype dt, lt_err *err) {
    const char *what = "reduce_scatter_sum_ordered";
    ncclDataType_t ndt;
    lt_status st = check_args(c, what, n, counts, dt, &ndt, err);
    if (st || n == 0) return st;
    size_t bytes = n * lt_dtype_size(dt);
    const void *dx = xv;
    int acc_host = X(c)->len[c->rank] == 0 ? 1 : !on_device(acc);
    if ((st = ordered_dtype_ok(what, dt, on_device(xv), !acc_host, err))) return st;
    if (!on_device(xv)) {
        void *s;
        if ((st = scratch(c, S_X, bytes, &s, err)) || (st = copy(c, s, xv, bytes, what, err))) return st;
        dx = s;
    }
    return ordered_rs(c, what, acc, acc_host, dx, dt, ndt, 1, err);
}

static lt_status nc_all_gather(lt_comm *c, void *buf, size_t n, const size_t *counts, lt_dtype dt, lt_err *err) {
    const char *what = "all_gather";
    ncclDataType_t ndt;
    lt_status st = check_args(c, what, n, counts, dt, &ndt, err);
    if (st || n == 0) return st;
    size_t es = lt_dtype_size(dt), bytes = n * es;
    if (on_device(buf)) return dev_all_gather(c, what, buf, ndt, es, err);
    void *d;
    if ((st = scratch(c, S_X, bytes, &d, err)) || (st = copy(c, d, buf, bytes, what, err))) return st;
    if ((st = dev_all_gather(c, what, d, ndt, es, err))) return st;
    return copy(c, buf, d, bytes, what, err);
}

/* ---- non-blocking starts (see the head of the file) ---- */

/* from here until async_end, ops are queued on cs behind the family's last
 * op and (behind_compute) the compute stream */
static lt_status async_begin(lt_comm *c, const char *what, int behind_compute, lt_err *err) {
    nccl_ctx *x = X(c);
    cudaError_t e = cudaSuccess;
    if (!x->cs) {
        if ((e = cudaStreamCreateWithFlags(&x->cs, cudaStreamNonBlocking)) != cudaSuccess) {
            x->cs = NULL;
            return cuda_fail(err, e, what);
        }
        if ((e = cudaEventCreateWithFlags(&x->ready, cudaEventDisableTiming)) != cudaSuccess)
            return cuda_fail(err, e, what);
        if (cublasCreate(&x->blas_cs) != CUBLAS_STATUS_SUCCESS) {
            x->blas_cs = NULL;
            return lt_fail(err, LT_ERR_BACKEND, "%s: cublasCreate failed", what);
        }
        if (cublasSetStream(x->blas_cs, x->cs) != CUBLAS_STATUS_SUCCESS)
            return lt_fail(err, LT_ERR_BACKEND, "%s: cublasSetStream failed", what);
    }
    if (!x->ready || !x->blas_cs)
        return lt_fail(err, LT_ERR_BACKEND, "%s: the communication stream is not set up", what);
    /* cs behind everything queued on the compute stream so far (without
     * set_stream, check_args' device-wide sync did that) and behind the
     * family's last start (on another communicator's cs: a split's) */
    if (behind_compute && x->user_stream && (e = cudaEventRecord(x->ready, x->stream)) == cudaSuccess)
        e = cudaStreamWaitEvent(x->cs, x->ready, 0);
    if (e == cudaSuccess && x->tail->used) e = cudaStreamWaitEvent(x->cs, x->tail->ev, 0);
    if (e != cudaSuccess) return cuda_fail(err, e, what);
    x->saved_stream = x->stream;
    x->saved_blas = x->blas;
    x->stream = x->cs;
    x->blas = x->blas_cs;
    x->async = 1;
    return LT_OK;
}

/* back to the compute stream; the family's tail follows what was queued on
 * cs (also after a failure part way: the next op still queues behind it);
 * ev (may be NULL): a new event after it */
static lt_status async_end(lt_comm *c, lt_status st, cudaEvent_t *ev, const char *what, lt_err *err) {
    nccl_ctx *x = X(c);
    x->stream = x->saved_stream;
    x->blas = x->saved_blas;
    x->async = 0;
    cudaEvent_t e_out = NULL;
    cudaError_t e = cudaSuccess;
    if (!st && ev && (e = cudaEventCreateWithFlags(&e_out, cudaEventDisableTiming)) == cudaSuccess)
        e = cudaEventRecord(e_out, x->cs);
    cudaError_t et = cudaEventRecord(x->tail->ev, x->cs);
    if (et == cudaSuccess) x->tail->used = 1;
    if (st) return st;
    if (e == cudaSuccess) e = et;
    if (e != cudaSuccess) {
        if (e_out) cudaEventDestroy(e_out);
        return cuda_fail(err, e, what);
    }
    if (ev) *ev = e_out;
    return LT_OK;
}

/* ---- requests: every one in flight is on its communicator's list, in
 * start order (destroy releases those never waited for: a failed step) ---- */

static nc_req *req_new(lt_comm *c, lt_err *err) {
    nccl_ctx *x = X(c);
    nc_req *r = calloc(1, sizeof *r);
    if (!r) {
        lt_fail(err, LT_ERR_NOMEM, "lt_comm nccl: out of memory for a request");
        return NULL;
    }
    r->prev = x->reqs_last;
    if (x->reqs_last) x->reqs_last->next = r;
    else x->reqs = r;
    x->reqs_last = r;
    return r;
}

/* unlink and free r: its events (released by CUDA once the device passed
 * them and the waits on them are done) and a chain's device copy of a host
 * accumulator (cudaFree waits for the device) */
static void req_free(lt_comm *c, nc_req *r) {
    nccl_ctx *x = X(c);
    if (r->prev) r->prev->next = r->next;
    else x->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    else x->reqs_last = r->prev;
    if (r->done) cudaEventDestroy(r->done);
    if (r->input) cudaEventDestroy(r->input);
    if (r->host_acc && r->acc) cudaFree(r->acc);
    free(r);
}

/* *req := a request completed by ev (ev is owned by it from here) */
static lt_status async_end_req(lt_comm *c, lt_status st, void **req, const char *what, lt_err *err) {
    cudaEvent_t ev = NULL;
    if ((st = async_end(c, st, &ev, what, err))) return st;
    nc_req *r = req_new(c, err);
    if (!r) {
        cudaEventDestroy(ev);
        return LT_ERR_NOMEM;
    }
    r->done = ev;
    *req = r;
    return LT_OK;
}

static lt_status nc_reduce_scatter_ordered_start(lt_comm *c, void *acc, const void *xv, size_t n,
                                                 const size_t *counts, lt_dtype dt, void **req, lt_err *err) {
    const char *what = "reduce_scatter_sum_ordered (non-blocking)";
    *req = NULL;
    ncclDataType_t ndt;
    X(c)->starting = 1;
    lt_status st = check_args(c, what, n, counts, dt, &ndt, err);
    X(c)->starting = 0;
    if (st || n == 0) return st;
    int acc_host = X(c)->len[c->rank] == 0 ? 0 : !on_device(acc);
    if (!on_device(xv) || acc_host) /* host buffers: blocking, the request is complete */
        return nc_reduce_scatter_ordered(c, acc, xv, n, counts, dt, err);
    if ((st = ordered_dtype_ok(what, dt, 1, 1, err)) || (st = async_begin(c, what, 1, err))) return st;
    st = ordered_rs(c, what, acc, 0, xv, dt, ndt, 1, err);
    return async_end_req(c, st, req, what, err);
}

static lt_status nc_all_gather_start(lt_comm *c, void *buf, size_t n, const size_t *counts, lt_dtype dt, void **req,
                                     lt_err *err) {
    const char *what = "all_gather (prefetch)";
    *req = NULL;
    if (!on_device(buf)) return nc_all_gather(c, buf, n, counts, dt, err); /* blocking, complete */
    ncclDataType_t ndt;
    X(c)->starting = 1;
    lt_status st = check_args(c, what, n, counts, dt, &ndt, err);
    X(c)->starting = 0;
    if (st || n == 0) return st;
    if ((st = async_begin(c, what, 1, err))) return st;
    st = dev_all_gather(c, what, buf, ndt, lt_dtype_size(dt), err);
    return async_end_req(c, st, req, what, err);
}

/* ---- the hybrid chain (see the head of the file) ---- */

static lt_status nc_broadcast(lt_comm *c, void *buf, size_t bytes, int root, lt_err *err);

/* D of a chain is queued when the chain started d chains after it starts
 * (d = groups - 1, at least 1), or by a wait_req, whichever comes first */
static uint64_t chain_lag(const nc_req *r) { return r->cross->world > 2 ? (uint64_t)r->cross->world - 1 : 1; }

/* D of chain r, inside an async block: the last group's result (cross rank
 * G-1) to every other group's owner, into acc; r->done := an event after it */
static lt_status chain_deliver(lt_comm *c, nc_req *r, lt_err *err) {
    const char *what = "reduce_scatter_sum_ordered (hybrid chain: the result to the other groups)";
    nccl_ctx *x = X(c);
    lt_comm *cr = r->cross;
    const int G = cr->world, g = cr->rank;
    r->d_queued = 1;
    if (G == 1 || r->len == 0) return LT_OK; /* nothing moves: done stays the chain's last op */
    ncclComm_t nc = X(cr)->nccl;
    ncclResult_t rr;
    if (g == G - 1) { /* (a group of sends on one communicator) */
        rr = ncclGroupStart();
        for (int q = 0; q < G - 1 && rr == ncclSuccess; q++) rr = ncclSend(r->acc, r->len, r->ndt, q, nc, x->stream);
        ncclResult_t r2 = ncclGroupEnd();
        if (rr == ncclSuccess) rr = r2;
    } else {
        rr = ncclRecv(r->acc, r->len, r->ndt, G - 1, nc, x->stream);
    }
    lt_status st = wait_done_on(c, nc, what, rr, err);
    if (st) return st;
    cudaEvent_t ev = NULL;
    cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventRecord(ev, x->stream);
    if (e != cudaSuccess) {
        if (ev) cudaEventDestroy(ev);
        return cuda_fail(err, e, what);
    }
    cudaEventDestroy(r->done);
    r->done = ev;
    return LT_OK;
}

/* inside an async block: D, in start order, of every chain in flight whose D
 * is not queued yet: up to chain `upto` (wait_req), or (upto NULL) those
 * due before chain number `starting` (a start) */
static lt_status chains_deliver(lt_comm *c, const nc_req *upto, uint64_t starting, lt_err *err) {
    for (nc_req *r = X(c)->reqs; r; r = r->next) {
        if (!r->cross || r->d_queued) continue;
        if (upto ? r->seq > upto->seq : r->seq + chain_lag(r) > starting) break;
        lt_status st = chain_deliver(c, r, err);
        if (st) return st;
    }
    return LT_OK;
}

/* E, R, F, S of chain r per chunk on cs (x: device memory); r->input :=
 * an event after the last read of x (the last chunk's exchange) */
static lt_status chain_queue(lt_comm *c, nc_req *r, const unsigned char *src, unsigned char *pieces, size_t maxlen,
                             lt_err *err) {
    const char *what = "reduce_scatter_sum_ordered (hybrid chain)";
    nccl_ctx *x = X(c);
    lt_comm *cr = r->cross;
    const int G = cr->world, g = cr->rank;
    ncclComm_t nc = X(cr)->nccl;
    const size_t es = lt_dtype_size(r->dt), C = x->chunk;
    unsigned char *acc = r->acc;
    lt_status st = LT_OK;
    for (size_t a = 0; a < maxlen && !st; a += C) {
        size_t m = chunk_len(x->len[c->rank], a, C);
        if ((st = exchange_chunk(c, what, src, a, pieces, m, r->ndt, es, err))) break; /* E */
        if (a + C >= maxlen) {
            cudaError_t e = cudaEventRecord(r->input, x->stream);
            if (e != cudaSuccess) st = cuda_fail(err, e, what);
        }
        if (st || !m) continue; /* (the ranks with this place in every group skip the same chunks) */
        unsigned char *da = acc + a * es;
        if (g > 0) st = wait_done_on(c, nc, what, ncclRecv(da, m, r->ndt, g - 1, nc, x->stream), err); /* R */
        if (!st) st = fold_pieces(c, what, da, pieces, 0, m, r->dt, err);                            /* F */
        if (!st && g < G - 1) st = wait_done_on(c, nc, what, ncclSend(da, m, r->ndt, g + 1, nc, x->stream), err); /* S */
    }
    return st;
}

/* host x: the groups take turns, blocking (group g folds its ranks onto the
 * value after groups 0 .. g-1, then sends it to the other groups) */
static lt_status chain_turns(lt_comm *c, lt_comm *cross, void *acc, const void *xv, size_t n, const size_t *counts,
                             lt_dtype dt, lt_err *err) {
    size_t bytes = X(c)->len[c->rank] * lt_dtype_size(dt);
    for (int g = 0; g < cross->world; g++) {
        lt_status st = g == cross->rank ? nc_reduce_scatter_ordered(c, acc, xv, n, counts, dt, err) : LT_OK;
        if (!st && bytes) st = nc_broadcast(cross, acc, bytes, g, err);
        if (st) return st;
    }
    return LT_OK;
}

static lt_status nc_rs_chain_start(lt_comm *c, lt_comm *cross, void *acc, const void *xv, size_t n,
                                   const size_t *counts, lt_dtype dt, void **req, lt_err *err) {
    const char *what = "reduce_scatter_sum_ordered (hybrid chain)";
    *req = NULL;
    nccl_ctx *x = X(c);
    if (!cross || !cross->name || strcmp(cross->name, "nccl") || !X(cross) || X(cross)->tail != x->tail)
        return lt_fail(err, LT_ERR_INVALID,
                       "%s: the cross communicator must be an 'nccl' one split from the group's parent", what);
    ncclDataType_t ndt;
    x->starting = 1;
    lt_status st = check_args(c, what, n, counts, dt, &ndt, err);
    x->starting = 0;
    if (st || n == 0) return st;
    const size_t es = lt_dtype_size(dt), mine = x->len[c->rank];
    if ((st = ordered_dtype_ok(what, dt, on_device(xv), mine && on_device(acc), err))) return st;
    if (!on_device(xv)) return chain_turns(c, cross, acc, xv, n, counts, dt, err); /* complete: no request */
    unsigned char *pieces;
    size_t maxlen;
    if ((st = pieces_scratch(c, es, &pieces, &maxlen, err))) return st;
    nc_req *r = req_new(c, err); /* (last in the list: chains_deliver below stops at it) */
    if (!r) return LT_ERR_NOMEM;
    r->cross = cross, r->acc = acc, r->len = mine, r->dt = dt, r->ndt = ndt;
    cudaError_t e = cudaEventCreateWithFlags(&r->input, cudaEventDisableTiming);
    if (e == cudaSuccess && mine && !on_device(acc)) { /* a host accumulator: the chain runs on a device copy */
        r->host_acc = acc;
        r->acc = NULL;
        e = cudaMalloc(&r->acc, mine * es);
    }
    if (e != cudaSuccess) st = cuda_fail(err, e, what);
    if (st || (st = async_begin(c, what, 1, err))) {
        req_free(c, r);
        return st;
    }
    r->seq = x->chains++;
    st = chains_deliver(c, NULL, r->seq, err); /* D of the chain d before this one, before its E */
    if (!st && r->host_acc) st = copy(c, r->acc, r->host_acc, mine * es, what, err);
    if (!st) st = chain_queue(c, r, xv, pieces, maxlen, err);
    if ((st = async_end(c, st, &r->done, what, err))) { /* done: the chain's last op until D is queued */
        req_free(c, r);
        return st;
    }
    *req = r;
    return LT_OK;
}

/* with set_stream the compute stream waits for ev (once per request: *waited)
 * and the answer is yes at once; without, yes once ev has completed */
static lt_status ev_reached(lt_comm *c, cudaEvent_t ev, int *waited, int *yes, const char *what, lt_err *err) {
    nccl_ctx *x = X(c);
    *yes = 0;
    if (*waited) {
        *yes = 1;
        return LT_OK;
    }
    cudaError_t e = x->user_stream ? cudaStreamWaitEvent(x->stream, ev, 0) : cudaEventQuery(ev);
    if (e == cudaErrorNotReady) return LT_OK;
    if (e != cudaSuccess) return cuda_fail(err, e, what);
    *waited = *yes = 1;
    return LT_OK;
}

/* a failure NCCL reported on c or a chain's cross communicator */
static lt_status async_error(lt_comm *c, const nc_req *r, const char *what, lt_err *err) {
    ncclComm_t nc[2] = {X(c)->nccl, r && r->cross ? X(r->cross)->nccl : NULL};
    for (int i = 0; i < 2 && nc[i]; i++) {
        ncclResult_t a = ncclSuccess, q = ncclCommGetAsyncError(nc[i], &a);
        if (q != ncclSuccess || (a != ncclSuccess && a != ncclInProgress))
            return nccl_fail(c, err, q != ncclSuccess ? q : a, what);
    }
    return LT_OK;
}

/* Never queues anything on NCCL (it is called a timing-dependent number of
 * times): a chain is DONE only once its D was queued by a later start or a
 * wait_req */
static lt_status nc_test_req(lt_comm *c, void *req, int *state, lt_err *err) {
    const char *what = "test_req";
    nc_req *r = req;
    *state = 0;
    if (!r) {
        *state = LT_REQ_INPUT_FREE | LT_REQ_DONE;
        return LT_OK;
    }
    lt_status st = async_error(c, r, what, err);
    int in = 0, done = 0; /* (done follows input on cs) */
    if (!st && r->input) st = ev_reached(c, r->input, &r->in_waited, &in, what, err);
    if (!st && (!r->cross || r->d_queued)) st = ev_reached(c, r->done, &r->done_waited, &done, what, err);
    if (st) return st;
    *state = (in || done ? LT_REQ_INPUT_FREE : 0) | (done ? LT_REQ_DONE : 0);
    return LT_OK;
}

/* a chain: first D of every chain up to it that is not queued yet. Then
 * with set_stream (and the result in device memory) the compute stream
 * waits for the request's event (the host goes on; a peer that never comes
 * is caught by the next blocking op's timed wait); without: the host polls
 * the event with the timeout */
static lt_status nc_wait_req(lt_comm *c, void *req, lt_err *err) {
    nc_req *r = req;
    if (!r) return LT_OK;
    /* (names the op in a timeout's "collective ... timed out") */
    const char *what = r->cross ? "reduce_scatter_sum_ordered (hybrid chain; its wait_req)"
                                : "started non-blocking (its wait_req)";
    nccl_ctx *x = X(c);
    lt_status st = LT_OK;
    /* (D needs no compute: the accumulators are the chains' until their
     * wait_req, and a blocking op on the compute stream has completed when
     * it returned) */
    if (r->cross && !r->d_queued && !(st = async_begin(c, what, 0, err)))
        st = async_end(c, chains_deliver(c, r, 0, err), NULL, what, err);
    double t0 = lt_now_s();
    unsigned iter = 0;
    while (!st) {
        if ((st = async_error(c, r, what, err))) break;
        cudaError_t e = x->user_stream && !r->host_acc ? cudaStreamWaitEvent(x->stream, r->done, 0)
                                                       : cudaEventQuery(r->done);
        if (e == cudaSuccess) break;
        if (e != cudaErrorNotReady) {
            st = cuda_fail(err, e, what);
            break;
        }
        if (lt_now_s() - t0 > c->timeout_s) lt_comm_timeout_abort(c, what, -1);
        lt_comm_backoff(&iter);
    }
    if (!st && r->host_acc) { /* the device copy is complete (polled above) */
        cudaError_t e = cudaMemcpy(r->host_acc, r->acc, r->len * lt_dtype_size(r->dt), cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) st = cuda_fail(err, e, what);
    }
    req_free(c, r);
    return st;
}

static lt_status nc_broadcast(lt_comm *c, void *buf, size_t bytes, int root, lt_err *err) {
    const char *what = "broadcast";
    if (root < 0 || root >= c->world)
        return lt_fail(err, LT_ERR_INVALID, "%s: root %d out of range (world size %d)", what, root, c->world);
    lt_status st = prologue(c, what, err);
    if (st || bytes == 0) return st;
    void *d = buf;
    if (!on_device(buf)) {
        if ((st = scratch(c, S_X, bytes, &d, err)) || (st = copy(c, d, buf, bytes, what, err))) return st;
    }
    st = wait_done(c, what, ncclBroadcast(d, d, bytes, ncclUint8, root, X(c)->nccl, X(c)->stream), err);
    if (!st && d != buf) st = copy(c, buf, d, bytes, what, err);
    return st;
}

static lt_status nc_barrier(lt_comm *c, lt_err *err) {
    int32_t one = 1;
    return nc_all_reduce(c, &one, 1, LT_I32, err);
}

static lt_status nc_set_stream(lt_comm *c, void *stream, lt_err *err) {
    nccl_ctx *x = X(c);
    cudaError_t e = cudaStreamSynchronize(x->stream);
    if (e == cudaSuccess && x->cs) e = cudaStreamSynchronize(x->cs);
    if (e != cudaSuccess) return cuda_fail(err, e, "set_stream");
    x->user_stream = stream != NULL;
    x->stream = stream ? (cudaStream_t)stream : x->own;
    if (cublasSetStream(x->blas, x->stream) != CUBLAS_STATUS_SUCCESS)
        return lt_fail(err, LT_ERR_BACKEND, "set_stream: cublasSetStream failed");
    return LT_OK;
}

static void nc_abort(lt_comm *c, const char *msg) {
    lt_comm_print_abort(c, msg);
    if (X(c) && X(c)->nccl) ncclCommAbort(X(c)->nccl);
#ifdef LT_HAVE_MPI
    lt_comm_mpi_world_abort(1);
#endif
    exit(1);
}

/* 1 once the compute stream, cs and the family's last op have completed,
 * 0 after c->timeout_s */
static int drained(lt_comm *c) {
    nccl_ctx *x = X(c);
    double t0 = lt_now_s();
    unsigned iter = 0;
    for (;;) {
        cudaError_t e = x->stream ? cudaStreamQuery(x->stream) : cudaSuccess;
        if (e == cudaSuccess && x->cs) e = cudaStreamQuery(x->cs);
        if (e == cudaSuccess && x->tail && x->tail->used) e = cudaEventQuery(x->tail->ev);
        if (e != cudaErrorNotReady) return 1; /* (an error: the device is gone, the finalize reports it) */
        if (lt_now_s() - t0 > c->timeout_s) return 0;
        lt_comm_backoff(&iter);
    }
}

static void nc_destroy(lt_comm *c) {
    if (!c) return;
    nccl_ctx *x = X(c);
    if (x) {
        if (x->nccl && !drained(c)) { /* a peer gone with ops in flight (an error path): nothing to flush */
            fprintf(stderr, "luxtrain: rank %d: communicator nccl: operations still queued after %g s at its "
                    "destroy; aborting it\n", c->msg_world ? c->msg_rank : c->rank, c->timeout_s);
            ncclCommAbort(x->nccl);
            x->nccl = NULL;
        }
        if (x->nccl) { /* finalize (flushes pending work) with the deadline, then free */
            ncclResult_t r = ncclCommFinalize(x->nccl), a = r;
            double t0 = lt_now_s();
            unsigned iter = 0;
            while (r == ncclSuccess || r == ncclInProgress) {
                if (ncclCommGetAsyncError(x->nccl, &a) != ncclSuccess || a != ncclInProgress) break;
                if (lt_now_s() - t0 > c->timeout_s) break;
                lt_comm_backoff(&iter);
            }
            if (a == ncclSuccess) ncclCommDestroy(x->nccl);
            else ncclCommAbort(x->nccl);
        }
        while (x->reqs) req_free(c, x->reqs); /* the requests never waited for */
        for (int s = 0; s < S_COUNT; s++) cudaFree(x->scratch[s]);
        if (x->blas) cublasDestroy(x->blas);
        if (x->blas_cs) cublasDestroy(x->blas_cs);
        if (x->ready) cudaEventDestroy(x->ready);
        if (x->tail && --x->tail->refs == 0) {
            if (x->tail->ev) cudaEventDestroy(x->tail->ev);
            free(x->tail);
        }
        if (x->cs) cudaStreamDestroy(x->cs);
        if (x->own) cudaStreamDestroy(x->own);
        if (x->owns_id_file) remove(x->id_file);
#ifdef LT_HAVE_MPI
        if (x->we_init_mpi) lt_comm_mpi_finalize();
#endif
        free(x->host);
        free(x->off);
        free(x->len);
        free(x);
    }
    free(c);
}

static lt_status nc_split(lt_comm *c, int color, int key, lt_comm **out, lt_err *err);

/* an empty nccl communicator (NULL: out of memory, err set) */
static lt_comm *nc_new(lt_err *err) {
    lt_comm *c = calloc(1, sizeof *c);
    nccl_ctx *x = calloc(1, sizeof *x);
    if (!c || !x) {
        free(c);
        free(x);
        lt_fail(err, LT_ERR_NOMEM, "lt_comm_create: out of memory");
        return NULL;
    }
    c->ctx = x;
    c->name = "nccl";
    c->destroy = nc_destroy;
    c->abort = nc_abort;
    return c;
}

/* after the NCCL communicator exists: the stream, the tail (family: the
 * parent's, for a split; NULL: a new one), cuBLAS and the table */
static lt_status nc_finish(lt_comm *c, void *stream, nc_tail *family, lt_err *err) {
    nccl_ctx *x = X(c);
    cudaError_t e;
    if (family) {
        family->refs++;
        x->tail = family;
    } else {
        if (!(x->tail = calloc(1, sizeof *x->tail)))
            return lt_fail(err, LT_ERR_NOMEM, "communicator 'nccl': out of memory");
        x->tail->refs = 1;
        if ((e = cudaEventCreateWithFlags(&x->tail->ev, cudaEventDisableTiming)) != cudaSuccess)
            return cuda_fail(err, e, "communicator 'nccl': cudaEventCreate");
    }
    if ((e = cudaStreamCreateWithFlags(&x->own, cudaStreamNonBlocking)) != cudaSuccess)
        return cuda_fail(err, e, "communicator 'nccl': cudaStreamCreate");
    x->stream = x->own;
    if (cublasCreate(&x->blas) != CUBLAS_STATUS_SUCCESS) {
        x->blas = NULL;
        return lt_fail(err, LT_ERR_BACKEND, "communicator 'nccl': cublasCreate failed");
    }
    c->all_reduce_sum = nc_all_reduce;
    c->all_reduce_sum_ordered = nc_all_reduce_ordered;
    c->reduce_scatter_sum = nc_reduce_scatter;
    c->reduce_scatter_sum_ordered = nc_reduce_scatter_ordered;
    c->all_gather = nc_all_gather;
    c->broadcast = nc_broadcast;
    c->barrier = nc_barrier;
    c->set_stream = nc_set_stream;
    c->split = nc_split;
    c->all_gather_start = nc_all_gather_start;
    c->reduce_scatter_sum_ordered_start = nc_reduce_scatter_ordered_start;
    c->wait_req = nc_wait_req;
    c->reduce_scatter_sum_ordered_chain_start = nc_rs_chain_start;
    c->test_req = nc_test_req;
    return nc_set_stream(c, stream, err);
}

/* a sub-communicator: ncclCommSplit (NCCL >= 2.18), non-blocking like the parent */
static lt_status nc_split(lt_comm *c, int color, int key, lt_comm **out, lt_err *err) {
    *out = NULL;
#if defined(NCCL_VERSION_CODE) && NCCL_VERSION_CODE >= NCCL_VERSION(2, 18, 0)
    lt_comm *s = nc_new(err);
    if (!s) return lt_wrap(err, LT_ERR_NOMEM, "communicator split");
    nccl_ctx *x = X(s);
    s->timeout_s = c->timeout_s;
    s->device = c->device;
    s->local_rank = c->local_rank;
    s->local_world = c->local_world;
    s->msg_rank = c->msg_world ? c->msg_rank : c->rank;
    s->msg_world = c->msg_world ? c->msg_world : c->world;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommSplit(X(c)->nccl, color < 0 ? 0 : color, key, &x->nccl, &cfg);
    lt_status st = LT_OK;
    if (r != ncclSuccess && r != ncclInProgress) {
        x->nccl = NULL;
        st = nccl_fail(NULL, err, r, "ncclCommSplit");
    }
    double t0 = lt_now_s();
    unsigned iter = 0;
    while (!st) {
        ncclResult_t a = ncclInProgress;
        ncclCommGetAsyncError(x->nccl, &a);
        if (a == ncclSuccess) break;
        if (a != ncclInProgress) st = nccl_fail(s, err, a, "ncclCommSplit");
        else if (lt_now_s() - t0 > c->timeout_s) lt_comm_timeout_abort(c, "split (ncclCommSplit)", -1);
        else lt_comm_backoff(&iter);
    }
    if (!st && (ncclCommCount(x->nccl, &s->world) != ncclSuccess || ncclCommUserRank(x->nccl, &s->rank) != ncclSuccess))
        st = lt_fail(err, LT_ERR_BACKEND, "ncclCommSplit: no rank / size");
    if (!st) {
        x->off = calloc((size_t)s->world, sizeof *x->off);
        x->len = calloc((size_t)s->world, sizeof *x->len);
        if (!x->off || !x->len) st = lt_fail(err, LT_ERR_NOMEM, "communicator split: out of memory");
        x->chunk = X(c)->chunk;
    }
    if (!st) st = nc_finish(s, X(c)->user_stream ? X(c)->stream : NULL, X(c)->tail, err);
    if (st) {
        nc_destroy(s);
        return lt_wrap(err, st, "communicator split");
    }
    *out = s;
    return LT_OK;
#else
    (void)c, (void)color, (void)key;
    return lt_fail(err, LT_ERR_UNSUPPORTED, "nccl: sub-communicators (--shard-group) need NCCL 2.18 or newer");
#endif
}

/* ---- the unique id without MPI: NCCL_COMM_ID or a shared file ---- */

static lt_status id_by_file(lt_comm *c, ncclUniqueId *id, lt_err *err) {
    nccl_ctx *x = X(c);
    const char *p = getenv("LT_COMM_ID_FILE");
    if (p && *p) {
        snprintf(x->id_file, sizeof x->id_file, "%s", p);
    } else {
        const char *dir = getenv("SLURM_SUBMIT_DIR"), *job = getenv("SLURM_JOB_ID"), *step = getenv("SLURM_STEP_ID");
        if (!dir || !job)
            return lt_fail(err, LT_ERR_INVALID,
                           "nccl: %d ranks but no way to share the NCCL unique id: launch with mpirun (or srun "
                           "--mpi=pmix), or set NCCL_COMM_ID=host:port of rank 0, or LT_COMM_ID_FILE=<path on a "
                           "shared filesystem, unique per run>",
                           c->world);
        snprintf(x->id_file, sizeof x->id_file, "%s/.luxtrain-nccl-%s.%s.id", dir, job, step ? step : "0");
    }
    if (c->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(id);
        if (r != ncclSuccess) return nccl_fail(NULL, err, r, "ncclGetUniqueId");
        lt_status st = lt_write_file_atomic(x->id_file, id, sizeof *id, err);
        if (st) return lt_wrap(err, st, "nccl: writing the unique id");
        x->owns_id_file = 1;
        return LT_OK;
    }
    double t0 = lt_now_s();
    for (;;) {
        if (lt_file_exists(x->id_file)) {
            char *data = NULL;
            size_t len = 0;
            if (lt_read_file(x->id_file, &data, &len, NULL) == LT_OK && len == sizeof *id) {
                memcpy(id, data, sizeof *id);
                free(data);
                return LT_OK;
            }
            free(data);
        }
        if (lt_now_s() - t0 > c->timeout_s)
            return lt_fail(err, LT_ERR_IO, "nccl: rank %d waited %g s for rank 0 to write the NCCL id to %s", c->rank,
                           c->timeout_s, x->id_file);
        struct timespec ts = {0, 50000000L};
        nanosleep(&ts, NULL);
    }
}

lt_status lt_comm_nccl_create(const lt_comm_opts *opts, const lt_comm_env *env, lt_comm **out, lt_err *err) {
    *out = NULL;
    lt_comm *c = nc_new(err);
    if (!c) return LT_ERR_NOMEM;
    nccl_ctx *x = X(c);
    c->timeout_s = lt_comm_timeout(opts);
    c->rank = env->rank;
    c->world = env->world;
    c->local_rank = env->local_rank;
    c->local_world = env->local_world;
    lt_status st = LT_OK;
    int use_mpi = 0;
#ifdef LT_HAVE_MPI
    use_mpi = env->world > 1 && (lt_comm_mpi_initialized() || env->mpi_launcher);
    if (use_mpi &&
        (st = lt_comm_mpi_boot(env, &c->rank, &c->world, &c->local_rank, &c->local_world, &x->we_init_mpi, err))) {
        nc_destroy(c);
        return lt_wrap(err, st, "communicator 'nccl'");
    }
#endif
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        cudaGetLastError();
        nc_destroy(c);
        return lt_fail(err, LT_ERR_UNSUPPORTED, "communicator 'nccl': no CUDA device (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "device count 0");
    }
    c->device = opts && opts->device >= 0 ? opts->device : c->local_rank % ndev;
    if ((e = cudaSetDevice(c->device)) != cudaSuccess) {
        nc_destroy(c);
        return cuda_fail(err, e, "communicator 'nccl': cudaSetDevice");
    }
    x->off = calloc((size_t)c->world, sizeof *x->off);
    x->len = calloc((size_t)c->world, sizeof *x->len);
    if (!x->off || !x->len) {
        nc_destroy(c);
        return lt_fail(err, LT_ERR_NOMEM, "lt_comm_create: out of memory");
    }
    size_t dflt = ((size_t)1 << 26) / (size_t)c->world;
    x->chunk = lt_comm_chunk_elems(dflt < 65536 ? 65536 : dflt);
    if (x->chunk > (size_t)1 << 30) x->chunk = (size_t)1 << 30; /* cublas counts are int */

    /* the unique id */
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t r = ncclSuccess;
    if (c->world == 1 || (c->rank == 0 && use_mpi) || getenv("NCCL_COMM_ID")) r = ncclGetUniqueId(&id);
    else if (!use_mpi) st = id_by_file(c, &id, err);
    if (r != ncclSuccess) st = nccl_fail(NULL, err, r, "ncclGetUniqueId");
#ifdef LT_HAVE_MPI
    if (!st && use_mpi) st = lt_comm_mpi_boot_bcast(&id, sizeof id, c->timeout_s, c->rank, err);
#endif
    if (st) {
        nc_destroy(c);
        return lt_wrap(err, st, "communicator 'nccl'");
    }

    /* non-blocking communicator: no call can hang past our deadline */
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    r = ncclCommInitRankConfig(&x->nccl, c->world, id, c->rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress) {
        x->nccl = NULL;
        st = nccl_fail(NULL, err, r, "ncclCommInitRankConfig");
        nc_destroy(c);
        return lt_wrap(err, st, "communicator 'nccl' (rank %d of %d, device %d)", c->rank, c->world, c->device);
    }
    double t0 = lt_now_s();
    unsigned iter = 0;
    for (;;) {
        ncclResult_t a = ncclInProgress;
        ncclCommGetAsyncError(x->nccl, &a);
        if (a == ncclSuccess) break;
        if (a != ncclInProgress) {
            st = nccl_fail(c, err, a, "ncclCommInitRankConfig");
            nc_destroy(c);
            return st;
        }
        if (lt_now_s() - t0 > c->timeout_s) lt_comm_timeout_abort(c, "init (ncclCommInitRankConfig)", -1);
        lt_comm_backoff(&iter);
    }

    if ((st = nc_finish(c, opts ? opts->stream : NULL, NULL, err))) {
        nc_destroy(c);
        return st;
    }
    *out = c;
    return LT_OK;
}

#else
typedef int lt_comm_nccl_unused; /* built without NCCL: see the stub in lt_comm.c */
#endif
