/* lt_fakegpu.c -- a CPU stand-in ("fake GPU") for the CUDA runtime, cuBLAS and
 * NCCL functions that train/lt_comm_nccl.c and tests/test_comm_nccl.c call, so
 * that the NCCL communicator runs on machines without a GPU (CI) under
 * mpirun. A test double: linked instead of libcudart / libcublas / libnccl
 * into test_comm_nccl_fake only (tests/CMakeLists.txt).
 *
 * What it models (where the communicator's correctness depends on it):
 *   device memory  host malloc, registered in a table: cudaPointerGetAttributes
 *                  says "device" for it and "unregistered host" otherwise;
 *                  cudaMalloc fills it with a pattern (not zeros).
 *   streams        FIFO queues; nothing runs when it is queued (the progress
 *                  run at an enqueue call advances earlier work only). Ops:
 *                  memcpy / memset (async), cuBLAS S/D axpy (on the handle's
 *                  stream), event records, stream waits on events, NCCL ops.
 *                  Every fake call that queries, waits or enqueues advances
 *                  every stream's head while it can. Events complete when
 *                  their stream reaches the record; cudaStreamWaitEvent holds
 *                  that stream's head until the record captured at the call
 *                  completes (an event never recorded: no wait, as CUDA).
 *                  cudaMemcpy / cudaMemset run on the legacy default stream,
 *                  behind the work of every blocking stream (not of streams
 *                  made with cudaStreamNonBlocking), and return when done.
 *                  Synchronous calls (cudaMemcpy, cudaMemset,
 *                  cudaStreamSynchronize, cudaDeviceSynchronize, cudaFree)
 *                  loop until done; with work queued and nothing moving for
 *                  FAKEGPU_TIMEOUT_S (default 120) seconds -- in those or any
 *                  polling call -- it prints "fakegpu: no progress ...
 *                  (deadlock?)" with every stream's head op and aborts the job.
 *   NCCL           over MPI (MPI launches; world 1 may run without mpirun): a
 *                  communicator is three dups of an MPI communicator (p2p,
 *                  collectives, admin), so p2p and collectives never mix.
 *                  ncclCommInitRankConfig dups MPI_COMM_WORLD and checks
 *                  nranks / rank / the unique id against it; ncclCommSplit is
 *                  MPI_Comm_split (NCCL_SPLIT_NOCOLOR: no communicator), entered
 *                  only once every rank has reached it (an MPI_Ibarrier polled
 *                  while the streams progress, as a GPU runs on while its host
 *                  waits). An NCCL op -- everything between ncclGroupStart and
 *                  ncclGroupEnd is one op -- posts its MPI calls only when it
 *                  reaches its stream's head and completes when they all test
 *                  complete: sends are MPI_Issend (rendezvous: complete only
 *                  once the peer's receive matched, as NCCL's large sends),
 *                  receives MPI_Irecv (the size must match exactly),
 *                  collectives MPI_I* non-blocking collectives on staged
 *                  copies (in place and out of place alike; sum over the
 *                  NCCL type, bf16 by a user MPI_Op rounding each add to
 *                  nearest-even). One NCCL op per process is in flight at a
 *                  time (a GPU may not run two NCCL kernels at once): two
 *                  streams' ops in different orders on two ranks deadlock,
 *                  as they can on GPUs. Non-blocking configs: calls return
 *                  ncclSuccess, ncclCommGetAsyncError ncclSuccess unless
 *                  aborted (ncclInProgress while a finalize has ops queued).
 *   checks         a device range used past its allocation's end, host
 *                  memory handed to cuBLAS / NCCL, cudaMemcpy kinds that do
 *                  not match the pointers, NCCL buffers overlapping outside
 *                  NCCL's in-place layouts, a group's receive buffer
 *                  overlapping another of its buffers, unequal send / receive
 *                  sizes: a message and the job ends (or the call fails).
 *   misc           cudaGetDeviceCount = the launcher's local world size (or
 *                  1), cudaSetDevice checks the number, a sticky last error.
 *
 * Knobs (environment):
 *   FAKEGPU_TIMEOUT_S=s        the stall report's timeout (default 120)
 *   FAKEGPU_NCCL_EXCLUSIVE=1   two NCCL ops at the heads of two streams at
 *                              once is an error (lt_comm_nccl.c's "one NCCL op
 *                              of the family at a time": its tail event)
 *   FAKEGPU_NCCL_PICK=random   which of two such ops is posted: any (default:
 *                              the one queued first)
 *   FAKEGPU_NCCL_INPROGRESS=1  every non-blocking NCCL call returns
 *                              ncclInProgress and its op reaches the stream
 *                              only after ncclCommGetAsyncError was polled to
 *                              ncclSuccess (1 to 3 polls); using that stream,
 *                              or the communicator, before is an error
 *   FAKEGPU_SLOW=1             a slow device: calls that do not wait advance
 *                              one op every third call (waits run all), and
 *                              each copy / memset / axpy stays at its
 *                              stream's head for 0 to 7 progress passes, so
 *                              streams overtake each other
 *   FAKEGPU_VERBOSE=1          at exit, how often two NCCL ops were at heads
 *   FAKEGPU_FAULT=nowait|droprecv|stuck  a broken device (selftest.sh)
 *   FAKEGPU_HOST_IS_DEVICE=1   every pointer is device memory: host
 *                              allocations (malloc, the stack) count as
 *                              device memory for cudaPointerGetAttributes,
 *                              the memcpy kinds, cudaMemset, cuBLAS and NCCL,
 *                              so a caller with host buffers (luxtrain's CPU
 *                              backend: tests/test_train_nccl_fake.sh) takes
 *                              the device paths a GPU run takes. The range
 *                              check then covers only cudaMalloc'd memory (a
 *                              host allocation's size is unknown here)
 *
 * What it does not model: kernels (no compute but axpy, memcpy, memset),
 * NCCL's real algorithms, protocols, timing and its summation order (MPI's is
 * used), eager small sends, ops of two communicators in one group (refused),
 * device memory semantics beyond "another allocation" (no separate address
 * space, no page faults, no unified memory, host memory is never pinned, a
 * host pointer handed to a device op is simply used), several devices per
 * process, graphs, callbacks, timing events, stream priorities. Passing here
 * proves the communicator's stream / event / NCCL call order and its data
 * movement and folds, not its speed or its behaviour on a real GPU.
 */
#define _POSIX_C_SOURCE 200809L
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <limits.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers ---- */

static double fg_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *fg_xalloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "fakegpu: out of host memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static int fg_mpi_rank(void) {
    int init = 0, fin = 0, r = -1;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

static void fg_die(void) {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    fflush(stderr);
    if (init && !fin) MPI_Abort(MPI_COMM_WORLD, 3);
    abort();
}

/* FAKEGPU_FAULT (the selftest: tests/fakegpu/selftest.sh): a broken device
 * the test must notice. nowait: cudaStreamWaitEvent waits for nothing;
 * droprecv: the 3rd ncclRecv completes but leaves its buffer unchanged;
 * stuck: rank 0 never posts its 20th NCCL op */
static int fg_fault(const char *name) {
    const char *e = getenv("FAKEGPU_FAULT");
    return e && !strcmp(e, name);
}

/* ---- device memory ---- */

typedef struct fg_alloc {
    struct fg_alloc *next;
    unsigned char *p;
    size_t n;
} fg_alloc;
static fg_alloc *g_allocs;

static fg_alloc *fg_find(const void *p) {
    const unsigned char *q = p;
    for (fg_alloc *a = g_allocs; a; a = a->next)
        if (q >= a->p && q < a->p + (a->n ? a->n : 1)) return a;
    return NULL;
}

/* FAKEGPU_HOST_IS_DEVICE=1: every pointer counts as device memory */
static int fg_host_is_device(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("FAKEGPU_HOST_IS_DEVICE");
        v = e && !strcmp(e, "1");
    }
    return v;
}

/* 1 when p is device memory (a cudaMalloc'd allocation, or any pointer with
 * FAKEGPU_HOST_IS_DEVICE=1) */
static int fg_is_device(const void *p) { return fg_find(p) != NULL || (p && fg_host_is_device()); }

/* [p, p + bytes) used by `what`: inside one allocation when it starts in
 * device memory (an overrun a GPU might not even fault on); device memory
 * required when `device` (a kernel cannot touch pageable host memory) */
static void fg_check_range(const char *what, const void *p, size_t bytes, int device) {
    if (!bytes) return;
    const fg_alloc *a = fg_find(p);
    if (!a && (!device || fg_host_is_device())) return; /* (a host allocation: its size is unknown) */
    if (!a) {
        fprintf(stderr, "fakegpu: rank %d: %s: %zu bytes at %p: not device memory\n", fg_mpi_rank(), what, bytes, p);
        fg_die();
    }
    size_t off = (size_t)((const unsigned char *)p - a->p);
    if (bytes > a->n - off) {
        fprintf(stderr, "fakegpu: rank %d: %s: %zu bytes at offset %zu of a device allocation of %zu bytes: past "
                "its end\n", fg_mpi_rank(), what, bytes, off, a->n);
        fg_die();
    }
}

/* ---- the sticky last error ---- */

static cudaError_t g_last = cudaSuccess;
static cudaError_t fg_err(cudaError_t e) {
    if (e != cudaSuccess) g_last = e;
    return e;
}

/* ---- events: a record instance completes when its stream reaches it ---- */

typedef struct {
    int done;
    int refs;
} fg_inst;

static void fg_inst_unref(fg_inst *i) {
    if (i && --i->refs == 0) free(i);
}

struct CUevent_st {
    fg_inst *last; /* the latest record (NULL: never recorded) */
    int id;
};

/* ---- NCCL communicators and ops ---- */

struct ncclComm {
    struct ncclComm *next; /* every communicator */
    MPI_Comm p2p, coll, admin;
    int rank, nranks;
    int aborted, finalizing;
    int id;
    char last_err[256];
    /* FAKEGPU_NCCL_INPROGRESS: the op whose call returned ncclInProgress, on
     * its stream only once ncclCommGetAsyncError said ncclSuccess; polls left */
    struct fg_op *pend;
    struct CUstream_st *pend_stream;
    int pend_polls, init_polls;
};
static struct ncclComm *g_comms;

/* FAKEGPU_NCCL_INPROGRESS=1: non-blocking NCCL calls return ncclInProgress
 * and the op reaches its stream only when ncclCommGetAsyncError (polled)
 * says ncclSuccess, as NCCL may enqueue in the background */
static int fg_inprogress_mode(void) {
    static int m = -1;
    if (m < 0) {
        const char *e = getenv("FAKEGPU_NCCL_INPROGRESS");
        m = e && *e && *e != '0';
    }
    return m;
}

enum { P_SEND, P_RECV, P_ALLREDUCE, P_REDUCESCATTER, P_ALLGATHER, P_REDUCE, P_BCAST };
static const char *const g_part_name[] = {"ncclSend",   "ncclRecv",      "ncclAllReduce", "ncclReduceScatter",
                                          "ncclAllGather", "ncclReduce", "ncclBroadcast"};

static const char *fg_part_name(int kind) {
    return kind >= P_SEND && kind <= P_BCAST ? g_part_name[kind] : "NCCL op";
}

typedef struct {
    int kind;
    const void *send;
    void *recv;
    size_t count; /* elements (a collective: the count NCCL was given) */
    ncclDataType_t dt;
    int peer; /* send / recv: the peer; reduce / bcast: the root */
    ncclComm_t comm;
    void *stage_in, *stage_out; /* collectives: staged copies */
    size_t out_bytes;           /* bytes of stage_out copied to recv at completion */
} fg_part;

typedef struct {
    fg_part *parts;
    int n, cap;
    MPI_Request *reqs;
    int posted;
} fg_nccl;

/* ---- stream ops ---- */

enum { O_COPY, O_SET, O_AXPY, O_RECORD, O_WAIT, O_NCCL };

typedef struct fg_op {
    struct fg_op *next;
    int kind;
    uint64_t seq; /* enqueue order over all streams */
    void *dst;
    const void *src;
    size_t bytes;
    int value;
    /* axpy */
    int dbl, n, incx, incy;
    int delay; /* FAKEGPU_SLOW: progress passes at the head before a copy / memset / axpy completes */
    double alpha;
    /* record / wait */
    fg_inst *inst;
    int ev_id;
    fg_nccl *nccl;
} fg_op;

struct CUstream_st {
    struct CUstream_st *next;
    fg_op *head, *tail;
    int nonblocking, dead, id;
};

struct cublasContext {
    cudaStream_t stream;
};

static struct CUstream_st g_legacy_st = {0};
static struct CUstream_st *g_streams = &g_legacy_st; /* every stream, the legacy one first */
static int g_stream_ids = 1, g_event_ids, g_comm_ids;
static uint64_t g_seq;
static fg_op *g_inflight; /* the NCCL op posted and not complete (one per process) */
static double g_stall_since = -1;
static unsigned long g_nccl_choices; /* times two streams' heads held NCCL ops at once */

static cudaStream_t fg_stream(cudaStream_t s) {
    return (s == NULL || s == cudaStreamLegacy || s == cudaStreamPerThread) ? &g_legacy_st : s;
}

static size_t fg_dt_size(ncclDataType_t dt) {
    switch (dt) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
    }
}

/* bf16 sum: each add in f32, rounded to nearest even (NaN kept quiet) */
static uint16_t fg_bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float fg_bf16_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static void fg_bf16_sum(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = fg_bf16_round(fg_bf16_f32(a[i]) + fg_bf16_f32(b[i]));
}
static MPI_Op g_bf16_op = MPI_OP_NULL;

static int fg_mpi_type(ncclDataType_t dt, MPI_Datatype *t, MPI_Op *op) {
    *op = MPI_SUM;
    switch (dt) {
    case ncclInt8: *t = MPI_INT8_T; return 1;
    case ncclUint8: *t = MPI_UINT8_T; return 1;
    case ncclInt32: *t = MPI_INT32_T; return 1;
    case ncclUint32: *t = MPI_UINT32_T; return 1;
    case ncclInt64: *t = MPI_INT64_T; return 1;
    case ncclUint64: *t = MPI_UINT64_T; return 1;
    case ncclFloat32: *t = MPI_FLOAT; return 1;
    case ncclFloat64: *t = MPI_DOUBLE; return 1;
    case ncclBfloat16:
        if (g_bf16_op == MPI_OP_NULL) MPI_Op_create(fg_bf16_sum, 1, &g_bf16_op);
        *t = MPI_UINT16_T;
        *op = g_bf16_op;
        return 1;
    default: return 0; /* f16 and others: refused at enqueue */
    }
}

/* ---- describing ops (the deadlock report) ---- */

static void fg_describe(const fg_op *o, char *buf, size_t cap) {
    switch (o->kind) {
    case O_COPY: snprintf(buf, cap, "memcpy of %zu bytes", o->bytes); break;
    case O_SET: snprintf(buf, cap, "memset of %zu bytes", o->bytes); break;
    case O_AXPY: snprintf(buf, cap, "cublas%caxpy n=%d", o->dbl ? 'D' : 'S', o->n); break;
    case O_RECORD: snprintf(buf, cap, "cudaEventRecord(event %d)", o->ev_id); break;
    case O_WAIT:
        snprintf(buf, cap, "cudaStreamWaitEvent(event %d): its record has not completed", o->ev_id);
        break;
    case O_NCCL: {
        const fg_nccl *g = o->nccl;
        int k = snprintf(buf, cap, "NCCL op of %d part%s (%s): ", g->n, g->n == 1 ? "" : "s",
                         g->posted ? "posted, waiting for its peers" : "not posted: another NCCL op is in flight");
        for (int i = 0; i < g->n && k > 0 && (size_t)k < cap; i++) {
            const fg_part *p = &g->parts[i];
            k += snprintf(buf + k, cap - (size_t)k, "%s%s %zu elem %s %d on comm %d (rank %d of %d)", i ? "; " : "",
                          fg_part_name(p->kind), p->count,
                          p->kind == P_SEND ? "to" : p->kind == P_RECV ? "from" : "root", p->peer, p->comm->id,
                          p->comm->rank, p->comm->nranks);
        }
        break;
    }
    default: snprintf(buf, cap, "op %d", o->kind);
    }
}

static void fg_report_stall(double secs) {
    char d[2048];
    int r = fg_mpi_rank();
    fprintf(stderr, "fakegpu: no progress for %.0f s with work queued (deadlock?) on rank %d (NCCL ops of two "
            "streams at their heads at once: %lu times):\n", secs, r, g_nccl_choices);
    for (struct CUstream_st *s = g_streams; s; s = s->next) {
        if (!s->head) continue;
        int n = 0;
        for (fg_op *o = s->head; o; o = o->next) n++;
        fg_describe(s->head, d, sizeof d);
        fprintf(stderr, "fakegpu:   rank %d stream %d%s: %d op%s queued, head (op #%llu): %s\n", r, s->id,
                s == &g_legacy_st ? " (legacy default)" : "", n, n == 1 ? "" : "s", (unsigned long long)s->head->seq,
                d);
    }
    fg_die();
}

/* ---- running ops ---- */

static void fg_nccl_free(fg_nccl *g) {
    for (int i = 0; i < g->n; i++) free(g->parts[i].stage_in), free(g->parts[i].stage_out);
    free(g->parts);
    free(g->reqs);
    free(g);
}

static void fg_nccl_post(fg_nccl *g) {
    g->reqs = fg_xalloc((size_t)(g->n ? g->n : 1) * sizeof *g->reqs);
    for (int i = 0; i < g->n; i++) {
        fg_part *p = &g->parts[i];
        const size_t es = fg_dt_size(p->dt), W = (size_t)p->comm->nranks;
        MPI_Datatype t;
        MPI_Op op;
        fg_mpi_type(p->dt, &t, &op);
        int cnt = (int)p->count;
        switch (p->kind) {
        case P_SEND:
            MPI_Issend(p->send, (int)(p->count * es), MPI_BYTE, p->peer, 7, p->comm->p2p, &g->reqs[i]);
            break;
        case P_RECV:
            if (fg_fault("droprecv")) { /* (keep the buffer's old bytes) */
                p->stage_out = fg_xalloc(p->count * es);
                memcpy(p->stage_out, p->recv, p->count * es);
            }
            MPI_Irecv(p->recv, (int)(p->count * es), MPI_BYTE, p->peer, 7, p->comm->p2p, &g->reqs[i]);
            break;
        case P_ALLREDUCE:
            p->stage_in = fg_xalloc(p->count * es), p->stage_out = fg_xalloc(p->count * es);
            memcpy(p->stage_in, p->send, p->count * es);
            p->out_bytes = p->count * es;
            MPI_Iallreduce(p->stage_in, p->stage_out, cnt, t, op, p->comm->coll, &g->reqs[i]);
            break;
        case P_REDUCESCATTER:
            p->stage_in = fg_xalloc(p->count * es * W), p->stage_out = fg_xalloc(p->count * es);
            memcpy(p->stage_in, p->send, p->count * es * W);
            p->out_bytes = p->count * es;
            MPI_Ireduce_scatter_block(p->stage_in, p->stage_out, cnt, t, op, p->comm->coll, &g->reqs[i]);
            break;
        case P_ALLGATHER:
            p->stage_in = fg_xalloc(p->count * es), p->stage_out = fg_xalloc(p->count * es * W);
            memcpy(p->stage_in, p->send, p->count * es);
            p->out_bytes = p->count * es * W;
            MPI_Iallgather(p->stage_in, cnt, t, p->stage_out, cnt, t, p->comm->coll, &g->reqs[i]);
            break;
        case P_REDUCE:
            p->stage_in = fg_xalloc(p->count * es), p->stage_out = fg_xalloc(p->count * es);
            memcpy(p->stage_in, p->send, p->count * es);
            p->out_bytes = p->comm->rank == p->peer ? p->count * es : 0; /* recvbuff: root only */
            MPI_Ireduce(p->stage_in, p->stage_out, cnt, t, op, p->peer, p->comm->coll, &g->reqs[i]);
            break;
        case P_BCAST:
            p->stage_out = fg_xalloc(p->count * es);
            if (p->comm->rank == p->peer) memcpy(p->stage_out, p->send, p->count * es);
            p->out_bytes = p->count * es;
            MPI_Ibcast(p->stage_out, (int)(p->count * es), MPI_BYTE, p->peer, p->comm->coll, &g->reqs[i]);
            break;
        }
    }
    g->posted = 1;
}

/* 1 once every part completed (results copied out) */
static int fg_nccl_test(fg_nccl *g) {
    int flag = 0;
    MPI_Status *sts = fg_xalloc((size_t)(g->n ? g->n : 1) * sizeof *sts);
    MPI_Testall(g->n, g->reqs, &flag, sts);
    if (flag) {
        for (int i = 0; i < g->n; i++) {
            fg_part *p = &g->parts[i];
            if (p->kind == P_RECV) {
                int got = 0;
                MPI_Get_count(&sts[i], MPI_BYTE, &got);
                if ((size_t)got != p->count * fg_dt_size(p->dt)) {
                    fprintf(stderr, "fakegpu: rank %d: ncclRecv of %zu bytes from peer %d on comm %d got %d bytes "
                            "(NCCL needs matching counts)\n", fg_mpi_rank(), p->count * fg_dt_size(p->dt), p->peer,
                            p->comm->id, got);
                    fg_die();
                }
            }
            if (p->out_bytes) memcpy(p->recv, p->stage_out, p->out_bytes);
            static int recvs;
            if (p->kind == P_RECV && fg_fault("droprecv") && ++recvs == 3 && p->count)
                memcpy(p->recv, p->stage_out, p->count * fg_dt_size(p->dt)); /* the buffer as before */
        }
    }
    free(sts);
    return flag;
}

/* 1 if the head op completed (and was run) */
static int fg_try(fg_op *o) {
    if (o->delay > 0 && o->kind <= O_AXPY) {
        o->delay--;
        return 0;
    }
    switch (o->kind) {
    case O_COPY: memmove(o->dst, o->src, o->bytes); return 1;
    case O_SET: memset(o->dst, o->value, o->bytes); return 1;
    case O_AXPY:
        for (int i = 0; i < o->n; i++) {
            if (o->dbl) {
                double *y = (double *)o->dst + (size_t)i * (size_t)o->incy;
                *y = o->alpha * ((const double *)o->src)[(size_t)i * (size_t)o->incx] + *y;
            } else {
                float *y = (float *)o->dst + (size_t)i * (size_t)o->incy;
                *y = (float)o->alpha * ((const float *)o->src)[(size_t)i * (size_t)o->incx] + *y;
            }
        }
        return 1;
    case O_RECORD: o->inst->done = 1; return 1;
    case O_WAIT: return o->inst->done;
    case O_NCCL: /* (posted by fg_pick_nccl) */
        if (!o->nccl->posted || !fg_nccl_test(o->nccl)) return 0;
        g_inflight = NULL;
        return 1;
    }
    return 1;
}

static void fg_op_free(fg_op *o) {
    if (o->inst) fg_inst_unref(o->inst);
    if (o->nccl) fg_nccl_free(o->nccl);
    free(o);
}

/* two NCCL ops at stream heads at once (one may be in flight): which runs
 * first is the GPU's choice, so ranks may pick differently and deadlock;
 * FAKEGPU_NCCL_EXCLUSIVE=1 makes that an error */
static void fg_overlap(void) {
    char a[1024], b[1024];
    int n = 0;
    const fg_op *ops[2] = {0};
    for (struct CUstream_st *s = g_streams; s && n < 2; s = s->next)
        if (s->head && s->head->kind == O_NCCL) ops[n++] = s->head;
    g_nccl_choices++;
    const char *e = getenv("FAKEGPU_NCCL_EXCLUSIVE");
    if (!e || !*e || *e == '0') return;
    fg_describe(ops[0], a, sizeof a);
    fg_describe(ops[1], b, sizeof b);
    fprintf(stderr, "fakegpu: rank %d: two NCCL ops at the heads of two streams at once (their order is the GPU's "
            "choice):\nfakegpu:   op #%llu: %s\nfakegpu:   op #%llu: %s\n", fg_mpi_rank(),
            (unsigned long long)ops[0]->seq, a, (unsigned long long)ops[1]->seq, b);
    fg_die();
}

static void fg_say_choices(void) {
    fprintf(stderr, "fakegpu: pid %d: NCCL ops of two streams at their heads at once: %lu times\n", (int)getpid(),
            g_nccl_choices);
}

/* With no NCCL op in flight, post one of those at a stream's head: the one
 * queued first, or (FAKEGPU_NCCL_PICK=random) any, as a GPU may schedule
 * either: a program whose ranks can see two at once is order-dependent. */
static void fg_pick_nccl(void) {
    static int mode = -1;
    static unsigned rng;
    if (mode < 0) {
        if (getenv("FAKEGPU_VERBOSE")) atexit(fg_say_choices);
        const char *e = getenv("FAKEGPU_NCCL_PICK");
        mode = e && !strcmp(e, "random");
        rng = (unsigned)getpid() * 2654435761u;
    }
    fg_op *pick = NULL;
    int n = 0;
    for (struct CUstream_st *s = g_streams; s; s = s->next) {
        fg_op *o = s->head;
        if (!o || o->kind != O_NCCL) continue;
        n++;
        if (!pick || (mode ? (rng = rng * 1103515245u + 12345u) >> 16 < 65536u / (unsigned)n : o->seq < pick->seq))
            pick = o;
    }
    if (n > 1) fg_overlap();
    if (!pick || g_inflight) return;
    static int posts;
    if (fg_fault("stuck") && fg_mpi_rank() == 0 && ++posts >= 20) return;
    fg_nccl_post(pick->nccl);
    g_inflight = pick;
}

static int fg_pending(void) {
    for (struct CUstream_st *s = g_streams; s; s = s->next)
        if (s->head) return 1;
    return 0;
}

static double fg_timeout(void) {
    const char *e = getenv("FAKEGPU_TIMEOUT_S");
    double t = e && *e ? atof(e) : 120.0;
    return t > 0 ? t : 120.0;
}

/* a head op still counting its delay down (it will move without any peer) */
static int fg_delayed_heads(void) {
    for (struct CUstream_st *s = g_streams; s; s = s->next)
        if (s->head && s->head->delay > 0 && s->head->kind <= O_AXPY) return 1;
    return 0;
}

/* advance every stream's head while it can (at most budget ops); free
 * dead streams once empty; report a stall (work queued, nothing moved)
 * longer than the timeout */
static void fg_advance(long budget) {
    int moved, any = 0;
    do {
        moved = 0;
        fg_pick_nccl();
        for (struct CUstream_st *s = g_streams; s && budget > 0; s = s->next) {
            while (s->head && budget > 0 && fg_try(s->head)) {
                budget--;
                fg_op *o = s->head;
                s->head = o->next;
                if (!s->head) s->tail = NULL;
                fg_op_free(o);
                moved = any = 1;
            }
        }
    } while ((moved || fg_delayed_heads()) && budget > 0);
    for (struct CUstream_st **pp = &g_streams; *pp;) {
        struct CUstream_st *s = *pp;
        if (s->dead && !s->head) {
            *pp = s->next;
            free(s);
        } else {
            pp = &s->next;
        }
    }
    if (any || !fg_pending()) {
        g_stall_since = -1;
        return;
    }
    double now = fg_now();
    if (g_stall_since < 0) g_stall_since = now;
    else if (now - g_stall_since > fg_timeout()) fg_report_stall(now - g_stall_since);
}

/* the progress run by calls that do not wait (enqueues, queries): all it
 * can, or with FAKEGPU_SLOW=1 (a slow device) one op every third call */
static int fg_slow(void) {
    static int slow = -1;
    if (slow < 0) {
        const char *e = getenv("FAKEGPU_SLOW");
        slow = e && *e && *e != '0';
    }
    return slow;
}

static void fg_progress(void) {
    static unsigned calls;
    if (!fg_slow()) fg_advance(LONG_MAX);
    else if (++calls % 3 == 0) fg_advance(1);
}

/* loop progress until done() says yes (the stall report ends a deadlock) */
static void fg_wait_until(int (*done)(void *), void *arg) {
    unsigned spin = 0;
    for (;;) {
        fg_advance(LONG_MAX);
        if (done(arg)) return;
        if (++spin > 64) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
}

static int fg_stream_empty(void *s) { return ((struct CUstream_st *)s)->head == NULL; }
static int fg_all_empty(void *unused) { return !fg_pending(); }

static fg_op *fg_new_op(int kind) {
    fg_op *o = fg_xalloc(sizeof *o);
    o->kind = kind;
    return o;
}

/* s (NULL: any stream) used by `what` while an NCCL op for it is still
 * being enqueued (ncclInProgress not yet polled to ncclSuccess): the use
 * would not be ordered after that op */
static void fg_check_pending_nccl(const char *what, struct CUstream_st *s) {
    for (struct ncclComm *c = g_comms; c; c = c->next) {
        if (!c->pend || (s && c->pend_stream != s)) continue;
        fprintf(stderr, "fakegpu: rank %d: %s on stream %d while an NCCL op of comm %d for it returned ncclInProgress "
                "and ncclCommGetAsyncError has not yet said ncclSuccess (the op may not be on the stream yet)\n",
                fg_mpi_rank(), what, c->pend_stream->id, c->id);
        fg_die();
    }
}

static void fg_push(cudaStream_t s, fg_op *o) {
    fg_progress(); /* earlier work only: the new op does not run at its enqueue */
    s = fg_stream(s);
    fg_check_pending_nccl("an enqueue", s);
    o->seq = ++g_seq;
    if (fg_slow()) o->delay = (int)((g_seq * 2654435761u) >> 7) % 8;
    if (s->tail) s->tail->next = o;
    else s->head = o;
    s->tail = o;
}

/* the legacy default stream behind every blocking stream's work so far */
static void fg_legacy_barrier(void) {
    for (struct CUstream_st *s = g_streams; s; s = s->next) {
        if (s == &g_legacy_st || s->nonblocking || !s->head) continue;
        fg_inst *i = fg_xalloc(sizeof *i);
        i->refs = 2;
        fg_op *r = fg_new_op(O_RECORD), *w = fg_new_op(O_WAIT);
        r->inst = w->inst = i;
        r->ev_id = w->ev_id = -1;
        fg_push(s, r);
        fg_push(&g_legacy_st, w);
    }
}

/* ================= CUDA runtime ================= */

cudaError_t cudaGetDeviceCount(int *count) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE",
                                       "SLURM_NTASKS_PER_NODE"};
    int n = 1;
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 0) {
            n = atoi(v);
            break;
        }
    }
    *count = n;
    return cudaSuccess;
}

static int g_device;
cudaError_t cudaSetDevice(int device) {
    int n;
    cudaGetDeviceCount(&n);
    if (device < 0 || device >= n) return fg_err(cudaErrorInvalidDevice);
    g_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last;
    g_last = cudaSuccess;
    return e;
}

const char *cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "no error (fakegpu)";
    case cudaErrorInvalidValue: return "invalid argument (fakegpu)";
    case cudaErrorMemoryAllocation: return "out of memory (fakegpu)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (fakegpu)";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle (fakegpu)";
    case cudaErrorNotReady: return "device not ready (fakegpu)";
    default: return "unknown error (fakegpu)";
    }
}

cudaError_t cudaMalloc(void **devPtr, size_t size) {
    if (!devPtr) return fg_err(cudaErrorInvalidValue);
    fg_alloc *a = malloc(sizeof *a);
    unsigned char *p = malloc(size ? size : 1);
    if (!a || !p) {
        free(a), free(p);
        *devPtr = NULL;
        return fg_err(cudaErrorMemoryAllocation);
    }
    memset(p, 0xa5, size); /* not zeros: device memory is uninitialised */
    a->p = p, a->n = size, a->next = g_allocs;
    g_allocs = a;
    *devPtr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *devPtr) {
    if (!devPtr) return cudaSuccess;
    fg_check_pending_nccl("cudaFree", NULL);
    fg_wait_until(fg_all_empty, NULL); /* cudaFree synchronizes the device */
    for (fg_alloc **pp = &g_allocs; *pp; pp = &(*pp)->next) {
        if ((*pp)->p == devPtr) {
            fg_alloc *a = *pp;
            *pp = a->next;
            free(a->p);
            free(a);
            return cudaSuccess;
        }
    }
    return fg_err(cudaErrorInvalidValue);
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attributes, const void *ptr) {
    if (!attributes) return fg_err(cudaErrorInvalidValue);
    memset(attributes, 0, sizeof *attributes);
    const int a = fg_is_device(ptr);
    attributes->type = a ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
    attributes->device = a ? g_device : -2;
    attributes->devicePointer = a ? (void *)ptr : NULL;
    attributes->hostPointer = a ? NULL : (void *)ptr;
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream) {
    if (count && (!dst || !src)) return fg_err(cudaErrorInvalidValue);
    if (!count) return cudaSuccess;
    int dd = fg_is_device(dst), sd = fg_is_device(src);
    if ((kind == cudaMemcpyHostToDevice && (!dd || sd)) || (kind == cudaMemcpyDeviceToHost && (dd || !sd)) ||
        (kind == cudaMemcpyDeviceToDevice && (!dd || !sd)) || (kind == cudaMemcpyHostToHost && (dd || sd))) {
        fprintf(stderr, "fakegpu: rank %d: cudaMemcpy kind %d does not match the pointers (dst %s, src %s)\n",
                fg_mpi_rank(), (int)kind, dd ? "device" : "host", sd ? "device" : "host");
        return fg_err(cudaErrorInvalidValue);
    }
    fg_check_range("cudaMemcpy destination", dst, count, 0);
    fg_check_range("cudaMemcpy source", src, count, 0);
    fg_op *o = fg_new_op(O_COPY);
    o->dst = dst, o->src = src, o->bytes = count;
    fg_push(stream, o);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
    if (count && (!dst || !src)) return fg_err(cudaErrorInvalidValue);
    fg_legacy_barrier();
    cudaError_t e = cudaMemcpyAsync(dst, src, count, kind, NULL);
    if (e == cudaSuccess) fg_wait_until(fg_stream_empty, &g_legacy_st);
    return e;
}

cudaError_t cudaMemset(void *devPtr, int value, size_t count) {
    if (count && !fg_is_device(devPtr)) return fg_err(cudaErrorInvalidValue);
    if (!count) return cudaSuccess;
    fg_check_range("cudaMemset", devPtr, count, 1);
    fg_legacy_barrier();
    fg_op *o = fg_new_op(O_SET);
    o->dst = devPtr, o->value = value, o->bytes = count;
    fg_push(NULL, o);
    fg_wait_until(fg_stream_empty, &g_legacy_st);
    return cudaSuccess;
}

static cudaError_t fg_stream_new(cudaStream_t *pStream, int nonblocking) {
    if (!pStream) return fg_err(cudaErrorInvalidValue);
    struct CUstream_st *s = fg_xalloc(sizeof *s);
    s->nonblocking = nonblocking;
    s->id = g_stream_ids++;
    struct CUstream_st *t = g_streams; /* at the end: the report lists streams in creation order */
    while (t->next) t = t->next;
    t->next = s;
    *pStream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *pStream) { return fg_stream_new(pStream, 0); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *pStream, unsigned int flags) {
    return fg_stream_new(pStream, (flags & cudaStreamNonBlocking) != 0);
}

/* returns at once; the queued work still runs, the stream is freed once empty */
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (fg_stream(stream) == &g_legacy_st) return fg_err(cudaErrorInvalidResourceHandle);
    stream->dead = 1;
    fg_progress();
    return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
    fg_check_pending_nccl("cudaStreamQuery", fg_stream(stream));
    fg_progress();
    return fg_stream(stream)->head ? cudaErrorNotReady : cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    fg_check_pending_nccl("cudaStreamSynchronize", fg_stream(stream));
    fg_wait_until(fg_stream_empty, fg_stream(stream));
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    fg_check_pending_nccl("cudaDeviceSynchronize", NULL);
    fg_wait_until(fg_all_empty, NULL);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    if (!event) return fg_err(cudaErrorInvalidValue);
    struct CUevent_st *e = fg_xalloc(sizeof *e);
    e->id = ++g_event_ids;
    *event = e;
    return cudaSuccess;
}

/* CUDA releases an event's resources once the device is done with it: the
 * queued records and waits hold their own reference */
cudaError_t cudaEventDestroy(cudaEvent_t event) {
    if (!event) return fg_err(cudaErrorInvalidResourceHandle);
    fg_inst_unref(event->last);
    free(event);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    if (!event) return fg_err(cudaErrorInvalidResourceHandle);
    fg_inst *i = fg_xalloc(sizeof *i);
    i->refs = 2; /* the event's and the record op's */
    fg_inst_unref(event->last);
    event->last = i;
    fg_op *o = fg_new_op(O_RECORD);
    o->inst = i, o->ev_id = event->id;
    fg_push(stream, o);
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
    if (!event) return fg_err(cudaErrorInvalidResourceHandle);
    fg_progress();
    return !event->last || event->last->done ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
    if (!event) return fg_err(cudaErrorInvalidResourceHandle);
    if (!event->last || fg_fault("nowait")) { /* never recorded: nothing to wait for */
        fg_progress();
        return cudaSuccess;
    }
    fg_op *o = fg_new_op(O_WAIT);
    o->inst = event->last, o->ev_id = event->id;
    event->last->refs++;
    fg_push(stream, o);
    return cudaSuccess;
}

/* ================= cuBLAS ================= */

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = fg_xalloc(sizeof **handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t streamId) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = streamId;
    return CUBLAS_STATUS_SUCCESS;
}

/* y := alpha * x + y, alpha read now (host pointer mode, cuBLAS's default) */
static cublasStatus_t fg_axpy(cublasHandle_t h, int dbl, int n, double alpha, const void *x, int incx, void *y,
                              int incy) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (n < 0 || incx <= 0 || incy <= 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (n == 0) return CUBLAS_STATUS_SUCCESS;
    size_t es = dbl ? 8 : 4;
    fg_check_range("cublas axpy x", x, ((size_t)(n - 1) * (size_t)incx + 1) * es, 1);
    fg_check_range("cublas axpy y", y, ((size_t)(n - 1) * (size_t)incy + 1) * es, 1);
    fg_op *o = fg_new_op(O_AXPY);
    o->dbl = dbl, o->n = n, o->alpha = alpha, o->src = x, o->incx = incx, o->dst = y, o->incy = incy;
    fg_push(h->stream, o);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSaxpy(cublasHandle_t handle, int n, const float *alpha, const float *x, int incx, float *y,
                           int incy) {
    return alpha ? fg_axpy(handle, 0, n, *alpha, x, incx, y, incy) : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasDaxpy(cublasHandle_t handle, int n, const double *alpha, const double *x, int incx, double *y,
                           int incy) {
    return alpha ? fg_axpy(handle, 1, n, *alpha, x, incx, y, incy) : CUBLAS_STATUS_INVALID_VALUE;
}

/* ================= NCCL ================= */

static int g_group_depth;
static fg_nccl *g_group;          /* the op being built between ncclGroupStart / End */
static cudaStream_t g_group_stream;
static ncclComm_t g_group_comm;
static ncclResult_t g_group_err = ncclSuccess;

static ncclResult_t fg_nccl_fail(ncclComm_t comm, ncclResult_t r, const char *fmt, const char *arg) {
    if (comm) snprintf(comm->last_err, sizeof comm->last_err, fmt, arg);
    fprintf(stderr, "fakegpu: rank %d: ", fg_mpi_rank());
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    return r;
}

/* an NCCL op onto its stream, or (FAKEGPU_NCCL_INPROGRESS) held until polled */
static ncclResult_t fg_nccl_enqueue(ncclComm_t c, cudaStream_t stream, fg_nccl *g) {
    fg_op *o = fg_new_op(O_NCCL);
    o->nccl = g;
    if (!fg_inprogress_mode()) {
        fg_push(stream, o);
        return ncclSuccess;
    }
    fg_progress();
    c->pend = o, c->pend_stream = fg_stream(stream), c->pend_polls = 1 + (int)(g_seq % 3);
    return ncclInProgress;
}

/* queue one part: inside a group it joins the group's op, else it is an op */
static ncclResult_t fg_nccl_part(const fg_part *p, cudaStream_t stream) {
    ncclComm_t c = p->comm;
    if (!c) return ncclInvalidArgument;
    if (c->aborted) return fg_nccl_fail(c, ncclInvalidUsage, "%s on an aborted communicator", fg_part_name(p->kind));
    if (c->pend || c->init_polls)
        return fg_nccl_fail(c, ncclInvalidUsage, "%s on a communicator whose last call returned ncclInProgress: poll "
                            "ncclCommGetAsyncError until ncclSuccess first", fg_part_name(p->kind));
    MPI_Datatype t;
    MPI_Op op;
    if (!fg_dt_size(p->dt) || !fg_mpi_type(p->dt, &t, &op))
        return fg_nccl_fail(c, ncclInvalidArgument, "%s: this element type is not modelled by fakegpu",
                            fg_part_name(p->kind));
    if (p->count > (size_t)0x7fffffff / 8)
        return fg_nccl_fail(c, ncclInvalidArgument, "%s: count too large for fakegpu's MPI calls",
                            fg_part_name(p->kind));
    if (p->peer < 0 || p->peer >= c->nranks)
        return fg_nccl_fail(c, ncclInvalidArgument, "%s: peer / root out of range", fg_part_name(p->kind));
    const char *name = fg_part_name(p->kind);
    const size_t es = fg_dt_size(p->dt), W = (size_t)c->nranks, me = (size_t)c->rank, n = p->count * es;
    size_t sb = 0, rb = 0; /* bytes read from send, written to recv on this rank */
    const unsigned char *inplace = NULL; /* the send pointer NCCL's in-place layout allows */
    switch (p->kind) {
    case P_SEND: sb = n; break;
    case P_RECV: rb = n; break;
    case P_ALLREDUCE: sb = rb = n, inplace = p->recv; break;
    case P_REDUCESCATTER: sb = n * W, rb = n, inplace = (const unsigned char *)p->recv - me * n; break;
    case P_ALLGATHER: sb = n, rb = n * W, inplace = (const unsigned char *)p->recv + me * n; break;
    case P_REDUCE: sb = n, rb = me == (size_t)p->peer ? n : 0, inplace = p->recv; break;
    case P_BCAST: sb = me == (size_t)p->peer ? n : 0, rb = n, inplace = p->recv; break;
    }
    fg_check_range(name, p->send, sb, 1);
    fg_check_range(name, p->recv, rb, 1);
    const unsigned char *s0 = p->send, *r0 = p->recv;
    if (sb && rb && s0 < r0 + rb && r0 < s0 + sb && s0 != inplace)
        return fg_nccl_fail(c, ncclInvalidArgument, "%s: the send and receive buffers overlap, not in NCCL's in-place "
                            "layout", name);
    fg_nccl *g = g_group_depth ? g_group : NULL;
    for (int i = 0; g && p->kind <= P_RECV && i < g->n; i++) { /* a group's receive buffers overlap nothing in it */
        const fg_part *q = &g->parts[i];
        if (q->kind > P_RECV || (p->kind != P_RECV && q->kind != P_RECV)) continue;
        const unsigned char *a = p->kind == P_RECV ? r0 : s0, *b = q->kind == P_RECV ? q->recv : q->send;
        size_t bn = q->count * fg_dt_size(q->dt);
        if (n && bn && a < b + bn && b < a + n)
            return fg_nccl_fail(c, ncclInvalidArgument, "%s: its buffer overlaps a receive buffer of the same group",
                                name);
    }
    if (g_group_depth) {
        if (!g) {
            g = g_group = fg_xalloc(sizeof *g);
            g_group_stream = stream, g_group_comm = c;
        } else if (g_group_comm != c || g_group_stream != stream) {
            g_group_err = ncclInvalidUsage;
            return fg_nccl_fail(c, ncclInvalidUsage, "%s: two communicators or streams in one group (fakegpu models "
                                "one)", fg_part_name(p->kind));
        }
    } else {
        g = fg_xalloc(sizeof *g);
    }
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 4;
        fg_part *np = realloc(g->parts, (size_t)g->cap * sizeof *np);
        if (!np) abort();
        g->parts = np;
    }
    g->parts[g->n++] = *p;
    if (!g_group_depth) return fg_nccl_enqueue(c, stream, g);
    fg_progress();
    return ncclSuccess;
}

ncclResult_t ncclGroupStart(void) {
    if (g_group_depth++ == 0) g_group_err = ncclSuccess;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
    if (g_group_depth == 0) return ncclInvalidUsage;
    if (--g_group_depth) return ncclSuccess;
    fg_nccl *g = g_group;
    g_group = NULL;
    ncclResult_t r = g_group_err;
    g_group_err = ncclSuccess;
    if (!g) return r;
    if (r != ncclSuccess) {
        fg_nccl_free(g);
        return r;
    }
    return fg_nccl_enqueue(g_group_comm, g_group_stream, g);
}

ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
    fg_part p = {.kind = P_SEND, .send = sendbuff, .count = count, .dt = datatype, .peer = peer, .comm = comm};
    return fg_nccl_part(&p, stream);
}

ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
    fg_part p = {.kind = P_RECV, .recv = recvbuff, .count = count, .dt = datatype, .peer = peer, .comm = comm};
    return fg_nccl_part(&p, stream);
}

static ncclResult_t fg_coll(int kind, const void *s, void *r, size_t count, ncclDataType_t dt, ncclRedOp_t op,
                            int root, ncclComm_t comm, cudaStream_t stream) {
    if (op != ncclSum) return fg_nccl_fail(comm, ncclInvalidArgument, "%s: fakegpu models ncclSum only",
                                           fg_part_name(kind));
    fg_part p = {.kind = kind, .send = s, .recv = r, .count = count, .dt = dt, .peer = root, .comm = comm};
    return fg_nccl_part(&p, stream);
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
    return fg_coll(P_ALLREDUCE, sendbuff, recvbuff, count, datatype, op, 0, comm, stream);
}

ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    return fg_coll(P_REDUCESCATTER, sendbuff, recvbuff, recvcount, datatype, op, 0, comm, stream);
}

ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
    return fg_coll(P_ALLGATHER, sendbuff, recvbuff, sendcount, datatype, ncclSum, 0, comm, stream);
}

ncclResult_t ncclReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                        int root, ncclComm_t comm, cudaStream_t stream) {
    return fg_coll(P_REDUCE, sendbuff, recvbuff, count, datatype, op, root, comm, stream);
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
    return fg_coll(P_BCAST, sendbuff, recvbuff, count, datatype, ncclSum, root, comm, stream);
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId) {
    if (!uniqueId) return ncclInvalidArgument;
    uint64_t x = (uint64_t)fg_now() * 1000003u ^ ((uint64_t)getpid() << 20) ^ (uint64_t)(uintptr_t)uniqueId;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(uniqueId->internal, 1, sizeof uniqueId->internal, f) != sizeof uniqueId->internal) {
        for (size_t i = 0; i < sizeof uniqueId->internal; i++) { /* splitmix64 bytes */
            x += 0x9e3779b97f4a7c15ull;
            uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            uniqueId->internal[i] = (char)(z ^ (z >> 31));
        }
    }
    if (f) fclose(f);
    return ncclSuccess;
}

static void fg_mpi_finalize_at_exit(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

/* a communicator over the ranks of base (three dups; base stays the caller's) */
static ncclComm_t fg_comm_new(MPI_Comm base) {
    ncclComm_t c = fg_xalloc(sizeof *c);
    MPI_Comm_dup(base, &c->p2p);
    MPI_Comm_dup(base, &c->coll);
    MPI_Comm_dup(base, &c->admin);
    MPI_Comm_rank(base, &c->rank);
    MPI_Comm_size(base, &c->nranks);
    c->id = ++g_comm_ids;
    c->init_polls = fg_inprogress_mode() ? 2 : 0;
    c->next = g_comms;
    g_comms = c;
    return c;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank,
                                    ncclConfig_t *config) {
    if (!comm) return ncclInvalidArgument;
    *comm = NULL;
    int init = 0;
    MPI_Initialized(&init);
    if (!init) { /* world 1 run without mpirun */
        if (nranks != 1)
            return fg_nccl_fail(NULL, ncclInvalidUsage, "%s", "ncclCommInitRankConfig: fakegpu needs an MPI launch "
                                "(MPI initialized) for more than one rank");
        int provided;
        MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        atexit(fg_mpi_finalize_at_exit);
    }
    int wr, ws;
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    MPI_Comm_size(MPI_COMM_WORLD, &ws);
    if (ws != nranks || wr != rank) {
        char m[160];
        snprintf(m, sizeof m, "rank %d of %d, but MPI_COMM_WORLD has rank %d of %d", rank, nranks, wr, ws);
        return fg_nccl_fail(NULL, ncclInvalidArgument, "ncclCommInitRankConfig: %s", m);
    }
    /* the same unique id on every rank (else NCCL would never connect) */
    uint64_t h = 1469598103934665603ull, lo, hi;
    for (size_t i = 0; i < sizeof commId.internal; i++) h = (h ^ (unsigned char)commId.internal[i]) * 1099511628211ull;
    MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    if (lo != hi)
        return fg_nccl_fail(NULL, ncclInvalidArgument, "%s", "ncclCommInitRankConfig: the ranks passed different "
                            "unique ids");
    *comm = fg_comm_new(MPI_COMM_WORLD);
    return (*comm)->init_polls ? ncclInProgress : ncclSuccess;
}

static int fg_req_done(void *rq) {
    int flag = 0;
    MPI_Test((MPI_Request *)rq, &flag, MPI_STATUS_IGNORE);
    return flag;
}

ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm, ncclConfig_t *config) {
    if (!comm || !newcomm) return ncclInvalidArgument;
    *newcomm = NULL;
    if (comm->aborted) return fg_nccl_fail(comm, ncclInvalidUsage, "%s", "ncclCommSplit of an aborted communicator");
    /* every rank in the split before the blocking MPI_Comm_split (the streams run on meanwhile) */
    MPI_Request rq;
    MPI_Ibarrier(comm->admin, &rq);
    fg_wait_until(fg_req_done, &rq);
    MPI_Comm s;
    MPI_Comm_split(comm->admin, color == NCCL_SPLIT_NOCOLOR ? MPI_UNDEFINED : color, key, &s);
    if (s == MPI_COMM_NULL) return ncclSuccess;
    *newcomm = fg_comm_new(s);
    MPI_Comm_free(&s);
    return (*newcomm)->init_polls ? ncclInProgress : ncclSuccess;
}

static int fg_comm_busy(ncclComm_t c) {
    for (struct CUstream_st *s = g_streams; s; s = s->next)
        for (fg_op *o = s->head; o; o = o->next)
            if (o->kind == O_NCCL && o->nccl->n && o->nccl->parts[0].comm == c) return 1;
    return 0;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError) {
    if (!comm || !asyncError) return ncclInvalidArgument;
    fg_progress();
    if (comm->init_polls) {
        comm->init_polls--;
        *asyncError = ncclInProgress;
        return ncclSuccess;
    }
    if (comm->pend && comm->pend_polls > 0) {
        comm->pend_polls--;
        *asyncError = ncclInProgress;
        return ncclSuccess;
    }
    if (comm->pend) { /* enqueued now */
        fg_op *o = comm->pend;
        comm->pend = NULL;
        fg_push(comm->pend_stream, o);
    }
    *asyncError = comm->aborted ? ncclSystemError : comm->finalizing && fg_comm_busy(comm) ? ncclInProgress
                                                                                           : ncclSuccess;
    return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int *count) {
    if (!comm || !count) return ncclInvalidArgument;
    *count = comm->nranks;
    return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank) {
    if (!comm || !rank) return ncclInvalidArgument;
    *rank = comm->rank;
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    comm->finalizing = 1;
    fg_progress();
    return fg_inprogress_mode() ? ncclInProgress : ncclSuccess;
}

static void fg_comm_free(ncclComm_t comm) {
    for (struct ncclComm **pp = &g_comms; *pp; pp = &(*pp)->next)
        if (*pp == comm) {
            *pp = comm->next;
            break;
        }
    MPI_Comm_free(&comm->p2p);
    MPI_Comm_free(&comm->coll);
    MPI_Comm_free(&comm->admin);
    free(comm);
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    if (fg_comm_busy(comm) || comm->pend) /* NCCL: destroy after the ops completed (finalize first) */
        return fg_nccl_fail(comm, ncclInvalidUsage, "%s", "ncclCommDestroy with operations still queued "
                            "(ncclCommFinalize and wait first)");
    fg_comm_free(comm);
    return ncclSuccess;
}

/* the queued ops of comm are dropped; its MPI communicators are freed unless
 * an MPI request of it is still posted (then they are left to MPI_Finalize) */
ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (!comm) return ncclSuccess;
    int posted = 0;
    for (struct CUstream_st *s = g_streams; s; s = s->next) {
        fg_op *prev = NULL;
        for (fg_op *o = s->head; o;) {
            fg_op *next = o->next;
            if (o->kind == O_NCCL && o->nccl->n && o->nccl->parts[0].comm == comm) {
                if (o->nccl->posted) {
                    posted = 1;
                    g_inflight = NULL;
                }
                if (prev) prev->next = next;
                else s->head = next;
                if (s->tail == o) s->tail = prev;
                if (!o->nccl->posted) fg_op_free(o); /* (a posted op's buffers stay with MPI) */
            } else {
                prev = o;
            }
            o = next;
        }
    }
    if (comm->pend) fg_op_free(comm->pend);
    comm->pend = NULL;
    comm->aborted = 1;
    if (!posted) fg_comm_free(comm);
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess: return "no error (fakegpu)";
    case ncclUnhandledCudaError: return "unhandled cuda error (fakegpu)";
    case ncclSystemError: return "unhandled system error (fakegpu)";
    case ncclInternalError: return "internal error (fakegpu)";
    case ncclInvalidArgument: return "invalid argument (fakegpu)";
    case ncclInvalidUsage: return "invalid usage (fakegpu)";
    case ncclRemoteError: return "remote process exited or there was a network error (fakegpu)";
    case ncclInProgress: return "NCCL operation in progress (fakegpu)";
    default: return "unknown result code (fakegpu)";
    }
}

const char *ncclGetLastError(ncclComm_t comm) { return comm ? comm->last_err : ""; }
