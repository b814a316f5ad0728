/*
 * lt_comm.h -- the communicator used by data-parallel training: one table of
 * function pointers (like lt_backend) with three implementations:
 *
 *   "single"  world 1, host buffers, no MPI (every collective is a copy or a
 *             no-op; the ordered sums still add, see below).
 *   "mpi"     host buffers (the CPU backend), Open MPI / any MPI-3 library.
 *             Every floating-point reduction is the rank-order fold defined
 *             below (bitwise identical on every rank, independent of the MPI
 *             library's algorithms), done with point-to-point messages.
 *   "nccl"    device buffers (the CUDA backend), one process per GPU. Host
 *             pointers are accepted too (staged through the device: use them
 *             for scalars such as loss sums and token counts).
 *
 * ---- Quick use (the trainer) ------------------------------------------
 *
 *   lt_comm_env env;  lt_comm_env_read(&env);      // before the backend:
 *   // create the CUDA backend on device env.local_rank (one GPU per process)
 *   lt_comm_opts co = lt_comm_opts_default();
 *   co.on_device = (strcmp(be->name, "cuda") == 0);   // buffers in device memory
 *   co.stream = be->native_stream(be);                 // optional (or c->set_stream later)
 *   lt_comm *c;
 *   if (lt_comm_create("auto", &co, &c, &err)) ...      // "auto" | "mpi" | "nccl" | "single"
 *   if (c->rank == 0) print / write metrics / export
 *   ...
 *   // global number of target tokens of this optimizer step (exact, i64):
 *   int64_t ntok = local_targets;  c->all_reduce_sum(c, &ntok, 1, LT_I64, &err);
 *   // grad_scale = 1 / ntok for every micro-batch on every rank
 *   ...
 *   // any failure on any rank:  c->abort(c, err.msg);   (stops every rank)
 *   c->destroy(c);    // at the end (finalizes MPI if lt_comm_create started it)
 *
 * ---- Buffers, counts and shards ------------------------------------------
 *
 *   n is in elements of dt. Element types: LT_F32, LT_F64, LT_I64, LT_I32,
 *   LT_BF16 and LT_U8 (bytes: ZeRO-3's NF4 parts; sums wrap modulo 256)
 *   (mpi and single: everything; nccl: all of them for the plain ops; the
 *   ordered ops on device buffers take F32 and F64).
 *
 *   reduce_scatter and all_gather split a vector of n elements across the
 *   ranks: rank r owns [off_r, off_r + counts[r]), off_r = sum of counts[q]
 *   for q < r. counts (world entries, summing to n) may be NULL for the
 *   canonical split of lt_comm_shard(): the first n % world ranks get
 *   n / world + 1 elements, the others n / world (n < world and n = 0 are
 *   fine: some ranks then own nothing). ZeRO-1 uses the canonical split.
 *   Every rank must pass the same n, counts, dt, root (as in MPI).
 *
 * ---- Determinism contract -------------------------------------------------
 *
 *   fold(a, x_0, ..., x_{W-1}) = ((((a + x_0) + x_1) + x_2) + ... + x_{W-1})
 *   element by element, in rank order, every + rounded to dt (f32 adds in f32,
 *   bf16 adds in f32 rounded to bf16 after each add, f64 in f64, integers
 *   exactly). The result is bitwise identical on every rank.
 *
 *   all_reduce_sum_ordered(acc, x):   acc := fold(acc, x_0, ..., x_{W-1})
 *   reduce_scatter_sum_ordered(acc_shard, x): the same for this rank's shard.
 *   These are exact and identical on every implementation (nccl included).
 *   On "mpi" and "single" the plain all_reduce_sum / reduce_scatter_sum are
 *   the fold without an accumulator, x_0 + x_1 + ... (also bitwise fixed);
 *   on "nccl" they are NCCL's sums: identical on every rank, not in rank order.
 *
 *   How a trainer gets "N ranks == 1 rank, same global batch" bitwise:
 *   parameter gradients are accumulated with += (lt_backend.h), and
 *   ((g0 + g1) + (g2 + g3)) != (((g0 + g1) + g2) + g3) in floating point, so
 *   summing per-rank partial sums can never equal the serial run in general.
 *   The exact scheme is:
 *     - number the step's micro-batches j = 0 .. M-1 (M = world * accum);
 *       in round k = 0 .. accum-1 rank r takes micro-batch j = k * world + r
 *       (interleaved, so the serial order of j is the rank order in a round);
 *     - every micro-batch's gradient is computed into a ZEROED buffer x
 *       (be->zero, then backward), with the same grad_scale everywhere
 *       (1 / global target count, from an I64 all_reduce_sum);
 *     - after each round: c->all_reduce_sum_ordered(c, acc, x, n, LT_F32):
 *       acc (zeroed at the start of the step) becomes
 *       (((acc + g_{kW}) + g_{kW+1}) + ...), exactly the serial order;
 *     - the 1-rank run makes the same calls (world 1: acc := acc + x).
 *   This costs one reduction per micro-batch round instead of one per step;
 *   it is the mode for the CPU backend and the tests. The per-rank compute
 *   must itself be reproducible (same BLAS, same thread count).
 *   ZeRO-1: use reduce_scatter_sum_ordered(acc_shard, x) in each round, the
 *   optimizer updates its shard, then all_gather(params) -- the updated
 *   weights are identical to the 1-rank run for the same reason.
 *   The fast mode (one all_reduce_sum per step of the accumulated gradient,
 *   bf16 or f32 on nccl) is deterministic for a fixed world size and setup
 *   but differs from 1 rank in the last bits.
 *
 * ---- Failure and timeouts ---------------------------------------------------
 *
 *   Every collective waits at most c->timeout_s seconds (LT_COMM_TIMEOUT_S,
 *   default 300). On a timeout the communicator itself prints
 *     "luxtrain: rank R: collective all_reduce_sum timed out after T s
 *      waiting for rank Q (a peer may have died or hung)"
 *   (the rank waited for is named where the implementation knows it) and
 *   stops the whole job (MPI_Abort; without MPI, exit(1) after
 *   ncclCommAbort -- srun --kill-on-bad-exit=1 then stops the others). A
 *   collective cannot return with peers still writing into its buffers, so
 *   this is the one place a library call ends the process.
 *   Bad arguments (dtype, counts that do not sum to n, root out of range)
 *   return LT_ERR_INVALID / LT_ERR_UNSUPPORTED as usual; a library error
 *   returns LT_ERR_BACKEND. After any error, call c->abort.
 *   c->abort(c, msg) prints "luxtrain: rank R of W: msg" to stderr and stops
 *   every rank (MPI_Abort / ncclCommAbort + exit(1); "single": exit(1)).
 *   Under mpirun a rank that exits without lt_comm destroy, or is killed,
 *   also ends the job (Open MPI names the rank); under srun use
 *   --kill-on-bad-exit=1. One rank's long job (rank 0's export) is watched
 *   through its progress reports (lt_comm_watch_*, below): the timeout then
 *   applies between two reports, and its message says what the rank was
 *   doing (c->waiting_for).
 *
 * ---- Launcher environment -------------------------------------------------
 *
 *   rank:        OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK, SLURM_PROCID
 *   world:       OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_NTASKS, SLURM_NPROCS
 *   local rank:  OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID
 *   local world: OMPI_COMM_WORLD_LOCAL_SIZE, MPI_LOCALNRANKS
 *   (the first one set wins). When MPI is in use, MPI's rank and size are
 *   authoritative and must agree with the environment.
 *   LT_COMM_TIMEOUT_S   collective timeout in seconds (default 300)
 *   NCCL unique id: broadcast over MPI when the process was started by an
 *   MPI launcher (OMPI_* / PMI_* / PMIX_* set) or MPI is initialised; else
 *   from NCCL_COMM_ID=host:port (NCCL's own bootstrap; rank 0 must run on
 *   that host); else through the file LT_COMM_ID_FILE (default
 *   $SLURM_SUBMIT_DIR/.luxtrain-nccl-$SLURM_JOB_ID.$SLURM_STEP_ID.id, on a
 *   filesystem every node sees): rank 0 writes it, the others wait for it.
 *   See docs/distributed.md.
 */
#ifndef LT_COMM_H
#define LT_COMM_H

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_comm lt_comm;
enum { LT_REQ_INPUT_FREE = 1, LT_REQ_DONE = 2 }; /* test_req's states */

struct lt_comm {
    const char *name; /* "single" | "mpi" | "nccl" */
    int rank, world;
    int local_rank;   /* rank among the processes on this node */
    int local_world;  /* processes on this node; 0 if unknown */
    int device;       /* nccl: the CUDA device this rank uses; -1 otherwise */
    double timeout_s; /* per collective */
    void *ctx;

    /* buf (n of dt, in place) := sum over ranks of buf. */
    lt_status (*all_reduce_sum)(lt_comm *c, void *buf, size_t n, lt_dtype dt, lt_err *err);
    /* acc := fold(acc, x_0, ..., x_{W-1}) (see above). acc must hold the same
     * values on every rank on entry (e.g. zeroed); acc and x must not overlap. */
    lt_status (*all_reduce_sum_ordered)(lt_comm *c, void *acc, const void *x, size_t n, lt_dtype dt,
                                        lt_err *err);
    /* x: n elements (the whole vector) on every rank; shard: counts[rank]
     * elements := sum over ranks of x[off_rank .. off_rank + counts[rank]).
     * shard may be x + off_rank (the rank's own slot); no other overlap. */
    lt_status (*reduce_scatter_sum)(lt_comm *c, void *shard, const void *x, size_t n, const size_t *counts,
                                    lt_dtype dt, lt_err *err);
    /* acc_shard (counts[rank] elements) := fold(acc_shard, x_0[slot], ..., x_{W-1}[slot])
     * with slot = [off_rank, off_rank + counts[rank]). acc_shard must not overlap x. */
    lt_status (*reduce_scatter_sum_ordered)(lt_comm *c, void *acc_shard, const void *x, size_t n,
                                            const size_t *counts, lt_dtype dt, lt_err *err);
    /* In place: on entry buf[off_r .. off_r + counts[r]) holds rank r's shard
     * on rank r; on return every rank has the whole vector (n elements). */
    lt_status (*all_gather)(lt_comm *c, void *buf, size_t n, const size_t *counts, lt_dtype dt, lt_err *err);
    /* buf (bytes) := root's buf on every rank. */
    lt_status (*broadcast)(lt_comm *c, void *buf, size_t bytes, int root, lt_err *err);
    /* Returns once every rank has entered the barrier. */
    lt_status (*barrier)(lt_comm *c, lt_err *err);
    /* nccl: enqueue on this cudaStream_t from now on (NULL: the comm's own
     * stream after a device-wide sync). Other kinds ignore it. Every call
     * returns when its result is ready either way. */
    lt_status (*set_stream)(lt_comm *c, void *stream, lt_err *err);
    /* Print "luxtrain: rank R of W: msg" and stop every rank. Does not return. */
    void (*abort)(lt_comm *c, const char *msg);
    /* Free everything (and MPI_Finalize if lt_comm_create initialised MPI).
     * Collective: every rank calls it. NULL is fine. */
    void (*destroy)(lt_comm *c);    /* A sub-communicator, as MPI_Comm_split / ncclCommSplit: collective over
     * c; the ranks passing the same color form one, ranked by (key, rank).
     * Everything above holds inside it (the rank-order fold is over its own
     * ranks); its messages and timeouts name ranks of the world (msg_rank).
     * Free it with its destroy (collective over the sub-communicator) before
     * c's. "single": world 1, color/key ignored. nccl: LT_ERR_UNSUPPORTED
     * before NCCL 2.18; it takes c's stream (if set_stream gave one), and
     * its operations and c's run one at a time on the device, in the order
     * they were called (one event follows the whole family's starts). */
    lt_status (*split)(lt_comm *c, int color, int key, lt_comm **out, lt_err *err);
    /* Non-blocking all_gather (ZeRO-3's prefetch): the contract of all_gather,
     * but it returns once the transfer is posted; *req is completed by
     * wait_req (which returns when buf is whole, with the same timeout).
     * Other collectives may run while it is in flight (every rank starts
     * them in the same order); buf must stay untouched until wait_req. NULL
     * where not implemented (single): use all_gather. nccl, device buffers:
     * queued on the communicator's own stream behind an event on the compute
     * stream; wait_req then orders the compute stream after it (with
     * set_stream: an event wait, the host goes on) or waits on the host
     * (without: polled with the timeout). nccl, host buffers: the blocking
     * call (the request is then already complete; wait_req takes NULL). */
    lt_status (*all_gather_start)(lt_comm *c, void *buf, size_t n, const size_t *counts, lt_dtype dt, void **req,
                                  lt_err *err);
    /* Non-blocking reduce_scatter_sum_ordered (ZeRO-2/3's reductions behind
     * the backward): x must stay untouched and acc_shard unread until
     * wait_req, which folds in rank order (the same bits as the blocking
     * call). Requests are completed in the order they were started by a
     * caller that needs that order (the fold into the same acc). NULL where
     * not implemented (single). nccl: as all_gather_start (the fold is the
     * same cuBLAS axpy sequence, on the communicator's stream). */
    lt_status (*reduce_scatter_sum_ordered_start)(lt_comm *c, void *acc_shard, const void *x, size_t n,
                                                  const size_t *counts, lt_dtype dt, void **req, lt_err *err);
    lt_status (*wait_req)(lt_comm *c, void *req, lt_err *err);
    /* Hybrid (HYBRID_SHARD) reduce_scatter_sum_ordered, non-blocking. c is
     * one group of consecutive world ranks, cross joins the ranks with the
     * same place in every group (cross->rank = the group's index). Every
     * group's acc_shard (counts[c->rank] elements, the same split in every
     * group) := fold(acc_shard, x of world rank 0, 1, ..., W-1) -- the bits
     * of one flat reduce-scatter over the world. The pieces move inside the
     * group at once; the fold is a chain: group g's owner folds its ranks'
     * pieces onto group g-1's value and sends it to group g+1, the last
     * group sends the result to the others. The chain moves in test_req
     * (and wait_req): poll every request in flight (they fold in the order
     * they were started, on every rank). x must stay untouched until
     * test_req reports LT_REQ_INPUT_FREE; acc_shard is read by group 0's
     * fold and written by wait_req, so a request on the same acc_shard
     * starts after the earlier one's wait_req. NULL where not implemented
     * (single: the trainer then reduces hybrid gradients blocking).
     * nccl (device x; host x: the blocking turns, the request complete):
     * every step is queued on the group's communication stream at the start,
     * except the last group's result to the others, which is queued by the
     * start of a later chain (groups - 1 later, at least 1) or by wait_req,
     * never by test_req. So a caller that needs a result calls wait_req,
     * requests in the order they were started, on every rank at the same
     * point of its program -- it never waits for LT_REQ_DONE by polling
     * test_req (on nccl that can wait forever). */
    lt_status (*reduce_scatter_sum_ordered_chain_start)(lt_comm *c, lt_comm *cross, void *acc_shard,
                                                         const void *x, size_t n, const size_t *counts,
                                                         lt_dtype dt, void **req, lt_err *err);
    /* Advance req without blocking; *state := LT_REQ_INPUT_FREE and/or
     * LT_REQ_DONE (wait_req then returns at once). test_req may not report
     * LT_REQ_DONE until wait_req: callers that need the result call wait_req,
     * in start order, at the same program point on every rank (never on a
     * timing-dependent condition). NULL where not implemented.
     * nccl: moves nothing (the device does); with set_stream a state is
     * reported as soon as the compute stream waits for it; a chain is DONE
     * only after its result delivery was queued (see above). */
    lt_status (*test_req)(lt_comm *c, void *req, int *state, lt_err *err);
    int msg_rank, msg_world; /* what messages call this rank (the world's in a sub-communicator) */
    /* NULL, or what this rank is waiting for (lt_comm_watch_wait sets it):
     * a timeout's message ends with it */
    const char *waiting_for;
};

/* Print the timeout message (see above) and c->abort. peer < 0: unknown.
 * For a caller polling requests itself (test_req) past c->timeout_s. */
void lt_comm_timeout_abort(lt_comm *c, const char *what, int peer);
/* Sleep a little while polling: spins first, then backs off up to 1 ms. */
void lt_comm_backoff(unsigned *iter);
/* The canonical split of n elements across `world` ranks: rank `rank` owns
 * [*off, *off + *len). The first n % world ranks own n / world + 1. */
void lt_comm_shard(size_t n, int rank, int world, size_t *off, size_t *len);

/* What the launcher's environment says (see above); world 1 / rank 0 when
 * nothing is set. `source` names where rank came from: "OMPI", "PMIX",
 * "PMI", "SLURM" or "none". `mpi_launcher` is 1 when an MPI launcher's
 * variables (OMPI_*, PMI_*, PMIX_*) are present. */
typedef struct lt_comm_env {
    int rank, world, local_rank, local_world;
    int mpi_launcher;
    const char *source;
} lt_comm_env;
void lt_comm_env_read(lt_comm_env *e);

typedef struct lt_comm_opts {
    int on_device;    /* "auto": 1 -> nccl (buffers in CUDA device memory), 0 -> mpi */
    int device;       /* nccl: CUDA device; -1 = local_rank % device count */
    void *stream;     /* nccl: cudaStream_t (see set_stream); NULL = own stream */
    double timeout_s; /* 0 = LT_COMM_TIMEOUT_S or 300 */
} lt_comm_opts;
lt_comm_opts lt_comm_opts_default(void);

/* kind: "auto" | "mpi" | "nccl" | "single" (NULL = "auto"); opts may be NULL.
 * "auto": world 1 (per the environment) and MPI not initialised -> "single"
 * for host buffers, "nccl" when opts->on_device; world > 1 -> "nccl" if
 * opts->on_device else "mpi". LT_ERR_UNSUPPORTED when the kind was not
 * built in (message says how to build it) or no CUDA device is present;
 * LT_ERR_INVALID when the environment and the kind disagree (e.g. "single"
 * launched as 4 ranks, or MPI sees 1 rank where SLURM_NTASKS says 16). */
lt_status lt_comm_create(const char *kind, const lt_comm_opts *opts, lt_comm **out, lt_err *err);

/* Which kinds this build has: "single mpi nccl" or a subset. */
const char *lt_comm_kinds_built(void);

/* ---- One rank's long job, watched by the others (heartbeats) ----
 * Rank `root` does something long alone (rank 0 exporting a 70B model from
 * a sharded checkpoint) while the others wait for its result. One collective
 * would need a deadline longer than the job; instead the root reports its
 * progress and the others wait for each report with the collective timeout:
 * a root that stops reporting for c->timeout_s (hung) ends the job, the
 * message naming it, what it was doing and its last report; a root that
 * dies ends it through the launcher; a slow but working root is never cut
 * off, however long the job. Each report is one broadcast of
 * LT_COMM_WATCH_BYTES bytes from the root; the root sends one when
 * min(1 s, timeout / 4) has passed since the last, so reports must come at
 * least every timeout_s - that interval (one tensor of an export: see
 * docs/distributed.md).
 *
 *   root:   lt_comm_watch w;
 *           lt_comm_watch_begin(&w, c, "exporting final/", err);  // the first report
 *           ... lt_comm_watch_report(&w, "tensor 3 of 30 'name'", err); ...
 *           st = lt_comm_watch_end(&w, st, err);   // every rank learns st
 *   others: st = lt_comm_watch_wait(c, 0, err);  // the root's st (its failure named)
 * Every call is collective in the sense that the root's and the others'
 * sequences must pair up (begin/end on the root, one wait on each other). */
enum { LT_COMM_WATCH_BYTES = 512 };
typedef struct lt_comm_watch {
    lt_comm *c;
    double last;      /* when the last report went out */
    char what[200];   /* what the root is doing */
} lt_comm_watch;
lt_status lt_comm_watch_begin(lt_comm_watch *w, lt_comm *c, const char *what, lt_err *err);
lt_status lt_comm_watch_report(lt_comm_watch *w, const char *progress, lt_err *err);
lt_status lt_comm_watch_end(lt_comm_watch *w, lt_status result, lt_err *err);
lt_status lt_comm_watch_wait(lt_comm *c, int root, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
