/* test_comm_nccl.c -- the NCCL communicator (train/lt_comm_nccl.c) on device
 * buffers. Skips (77) when built without NCCL or without a CUDA device.
 * Run plainly it is world 1 (one GPU, no MPI): every collective on random
 * data, the ordered sums bitwise against a host fold, the plain sums exactly
 * (world 1: the sum is the input), host-pointer staging, uneven / explicit
 * counts, pieces (LT_COMM_CHUNK_ELEMS=1000 so the ordered path is chunked),
 * the non-blocking starts (reduce_scatter_sum_ordered_start, all_gather_start
 * + wait_req on the communicator's own stream) bitwise against the blocking
 * calls, without and with set_stream; with set_stream also a split that
 * shares the stream and the order (a gather started on it while c works);
 * a broadcast of host memory and the export heartbeats on it (lt_comm_watch_*),
 * on both streams; the hybrid chain (test_chain: at world 1 one group, the
 * cross communicator a split of the world-1 communicator).
 * Under `mpirun -np G` on G GPUs the same checks run with world G (plain
 * float sums then compared with a stated tolerance, NCCL's order being its
 * own), and the chain also in several groups (never run on GPUs: one GPU
 * here). ctest's test_comm_nccl_fake_* run this file on the CPU stand-in
 * for CUDA / cuBLAS / NCCL (tests/fakegpu/lt_fakegpu.c) at 1 to 4 ranks.
 * `test_comm_nccl hang` (several ranks): the last rank stops answering and
 * the others must end the job with the timeout's message (tests/fakegpu/
 * selftest.sh runs it with LT_COMM_TIMEOUT_S=2).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lt_comm.h"
#include "lt_test.h"

#ifndef LT_HAVE_NCCL
int main(void) {
    printf("test_comm_nccl: built without NCCL (%s); skipping\n", lt_comm_kinds_built());
    return LT_TEST_SKIP;
}
#else
#include <cuda_runtime_api.h>

static int g_world = 1;

static uint64_t seed_of(uint64_t k, int q) { return 0x9e3779b97f4a7c15ull * (k + 1) ^ (0xabcdefull * (uint64_t)(q + 7)); }

static void gen(lt_dtype dt, void *buf, size_t n, uint64_t seed) {
    lt_rng r;
    lt_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        double v = pow(10.0, 6.0 * lt_rng_uniform(&r) - 3.0) * lt_rng_normal(&r);
        switch (dt) {
        case LT_F32: ((float *)buf)[i] = (float)v; break;
        case LT_F64: ((double *)buf)[i] = v; break;
        case LT_BF16: ((uint16_t *)buf)[i] = lt_f32_to_bf16((float)v); break;
        case LT_I64: ((int64_t *)buf)[i] = (int64_t)(lt_rng_u64(&r) >> 4); break;
        case LT_I32: ((int32_t *)buf)[i] = (int32_t)(lt_rng_u64(&r) >> 40); break;
        default: break;
        }
    }
}

static void add_ref(lt_dtype dt, void *d, const void *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case LT_F32: ((float *)d)[i] += ((const float *)s)[i]; break;
        case LT_F64: ((double *)d)[i] += ((const double *)s)[i]; break;
        case LT_BF16:
            ((uint16_t *)d)[i] =
                lt_f32_to_bf16(lt_bf16_to_f32(((uint16_t *)d)[i]) + lt_bf16_to_f32(((const uint16_t *)s)[i]));
            break;
        case LT_I64: ((uint64_t *)d)[i] += ((const uint64_t *)s)[i]; break;
        case LT_I32: ((uint32_t *)d)[i] += ((const uint32_t *)s)[i]; break;
        default: break;
        }
    }
}

/* fold over ranks of case k's vectors, slice [lo, lo + m), starting from acc (or x_0) */
static void fold_ref(lt_dtype dt, void *want, const void *acc, uint64_t k, size_t n, size_t lo, size_t m) {
    size_t es = lt_dtype_size(dt);
    unsigned char *xq = malloc(n * es + 1);
    if (acc) memcpy(want, acc, m * es);
    for (int q = 0; q < g_world; q++) {
        gen(dt, xq, n, seed_of(k, q));
        if (!acc && q == 0) memcpy(want, xq + lo * es, m * es);
        else add_ref(dt, want, xq + lo * es, m);
    }
    free(xq);
}

/* exact for world 1, integers and the ordered ops; else a stated tolerance */
static void check_eq(const char *what, lt_dtype dt, const void *got, const void *want, size_t n, int exact) {
    size_t bytes = n * lt_dtype_size(dt);
    if (exact || g_world == 1 || dt == LT_I64 || dt == LT_I32) {
        LT_CHECK(bytes == 0 || !memcmp(got, want, bytes), "%s %s n=%zu: not bitwise equal", what,
                 lt_dtype_name(dt), n);
        return;
    }
    float *a = malloc(n * sizeof(float) + 4), *b = malloc(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) {
        if (dt == LT_F32) a[i] = ((const float *)got)[i], b[i] = ((const float *)want)[i];
        if (dt == LT_F64) a[i] = (float)((const double *)got)[i], b[i] = (float)((const double *)want)[i];
        if (dt == LT_BF16) a[i] = lt_bf16_to_f32(((const uint16_t *)got)[i]), b[i] = lt_bf16_to_f32(((const uint16_t *)want)[i]);
    }
    char name[128];
    snprintf(name, sizeof name, "%s %s n=%zu", what, lt_dtype_name(dt), n);
    lt_check_close(name, a, b, n, dt == LT_BF16 ? 2e-2 : 1e-6); /* NCCL's own summation order */
    free(a);
    free(b);
}

static void *dev(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes + 16) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc(%zu) failed\n", bytes);
        exit(1);
    }
    cudaMemset(p, 0xff, bytes + 16); /* poison */
    return p;
}
static void up(void *d, const void *h, size_t bytes) { cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice); }
static void down(void *h, const void *d, size_t bytes) { cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost); }

/* the stream given to set_stream (NULL: none). A start's inputs are written
 * on it just before the start (up_on_compute: h must stay unchanged until the
 * start's request completes), so a start that does not queue behind the
 * compute stream reads stale data */
static cudaStream_t g_cstream;
static void up_on_compute(void *d, const void *h, size_t bytes) {
    if (g_cstream) cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, g_cstream);
    else up(d, h, bytes);
}
/* a result after its wait_req: read on the compute stream (which wait_req
 * made wait for it), or after a device-wide sync without set_stream */
static void down_after_wait(void *h, const void *d, size_t bytes) {
    if (g_cstream) {
        cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, g_cstream);
        cudaStreamSynchronize(g_cstream);
        return;
    }
    cudaDeviceSynchronize();
    down(h, d, bytes);
}

static uint64_t g_case = 0;

static void test_dtype_n(lt_comm *c, lt_dtype dt, size_t n) {
    const int me = c->rank, W = c->world;
    const size_t es = lt_dtype_size(dt), nb = n * es;
    unsigned char *h = malloc(nb + 16), *want = malloc(nb + 16), *acc = malloc(nb + 16);
    unsigned char *d = dev(nb), *dacc = dev(nb), *ds = dev(nb);
    lt_err err = {{0}};
    size_t off, len;
    lt_comm_shard(n, me, W, &off, &len);
    int ordered_dev = dt == LT_F32 || dt == LT_F64;

    /* all_reduce_sum on the device */
    uint64_t k = ++g_case;
    gen(dt, h, n, seed_of(k, me));
    up(d, h, nb);
    LT_CHECK_OK(c->all_reduce_sum(c, d, n, dt, &err), &err);
    memset(h, 0xff, nb);
    down(h, d, nb);
    fold_ref(dt, want, NULL, k, n, 0, n);
    check_eq("all_reduce_sum (device)", dt, h, want, n, 0);

    /* all_reduce_sum on a host pointer (staged) */
    k = ++g_case;
    gen(dt, h, n, seed_of(k, me));
    LT_CHECK_OK(c->all_reduce_sum(c, h, n, dt, &err), &err);
    fold_ref(dt, want, NULL, k, n, 0, n);
    check_eq("all_reduce_sum (host)", dt, h, want, n, 0);

    /* all_reduce_sum_ordered: device (F32/F64) and host (every type) */
    k = ++g_case;
    gen(dt, acc, n, seed_of(k, 1000));
    gen(dt, h, n, seed_of(k, me));
    fold_ref(dt, want, acc, k, n, 0, n);
    up(d, h, nb);
    up(dacc, acc, nb);
    lt_status st = c->all_reduce_sum_ordered(c, dacc, d, n, dt, &err);
    if (ordered_dev || n == 0) {
        LT_CHECK_OK(st, &err);
        memset(h, 0xff, nb);
        down(h, dacc, nb);
        check_eq("all_reduce_sum_ordered (device)", dt, h, want, n, 1);
    } else {
        LT_CHECK(st == LT_ERR_UNSUPPORTED, "ordered %s on the device: %s", lt_dtype_name(dt), lt_status_name(st));
    }
    gen(dt, h, n, seed_of(k, me));
    LT_CHECK_OK(c->all_reduce_sum_ordered(c, acc, h, n, dt, &err), &err);
    check_eq("all_reduce_sum_ordered (host)", dt, acc, want, n, 1);

    /* reduce_scatter_sum, canonical split: device out of place, in place; host */
    k = ++g_case;
    gen(dt, h, n, seed_of(k, me));
    up(d, h, nb);
    fold_ref(dt, want, NULL, k, n, off, len);
    LT_CHECK_OK(c->reduce_scatter_sum(c, ds, d, n, NULL, dt, &err), &err);
    memset(acc, 0xff, nb);
    down(acc, ds, len * es);
    check_eq("reduce_scatter_sum (device)", dt, acc, want, len, 0);
    LT_CHECK_OK(c->reduce_scatter_sum(c, d + off * es, d, n, NULL, dt, &err), &err);
    down(acc, d + off * es, len * es);
    check_eq("reduce_scatter_sum (device, in place)", dt, acc, want, len, 0);
    memset(acc, 0xff, nb);
    LT_CHECK_OK(c->reduce_scatter_sum(c, acc, h, n, NULL, dt, &err), &err);
    check_eq("reduce_scatter_sum (host)", dt, acc, want, len, 0);

    /* uneven explicit counts: rank 0 owns nothing when n > 1 */
    size_t *counts = calloc((size_t)W, sizeof(size_t));
    for (int q = 0; q < W; q++) counts[q] = n / (size_t)W;
    counts[W - 1] += n % (size_t)W;
    if (W > 1 && n > 1) {
        counts[W - 1] += counts[0];
        counts[0] = 0;
    }
    size_t coff = 0;
    for (int q = 0; q < me; q++) coff += counts[q];
    if (ordered_dev) {
        k = ++g_case;
        gen(dt, h, n, seed_of(k, me));
        up(d, h, nb);
        gen(dt, acc, n, seed_of(k, 1000));
        fold_ref(dt, want, acc + coff * es, k, n, coff, counts[me]);
        up(ds, acc + coff * es, counts[me] * es);
        LT_CHECK_OK(c->reduce_scatter_sum_ordered(c, ds, d, n, counts, dt, &err), &err);
        memset(acc, 0xff, nb);
        down(acc, ds, counts[me] * es);
        check_eq("reduce_scatter_sum_ordered (device, counts)", dt, acc, want, counts[me], 1);
        if (c->reduce_scatter_sum_ordered_start && c->wait_req) { /* non-blocking: the same bits */
            void *rq = NULL;
            gen(dt, acc, n, seed_of(k, 1000));
            cudaMemset(ds, 0xff, counts[me] * es);
            up_on_compute(ds, acc + coff * es, counts[me] * es);
            LT_CHECK_OK(c->reduce_scatter_sum_ordered_start(c, ds, d, n, counts, dt, &rq, &err), &err);
            LT_CHECK_OK(c->wait_req(c, rq, &err), &err);
            memset(acc, 0xff, nb);
            down_after_wait(acc, ds, counts[me] * es);
            check_eq("reduce_scatter_sum_ordered_start (device, counts)", dt, acc, want, counts[me], 1);
        }
    }

    /* all_gather: canonical and explicit counts, device and host */
    for (int pass = 0; pass < 2; pass++) {
        k = ++g_case;
        size_t o = pass ? coff : off, l = pass ? counts[me] : len;
        gen(dt, want, n, seed_of(k, 3000));
        memset(h, 0xff, nb);
        memcpy(h + o * es, want + o * es, l * es);
        up(d, h, nb);
        LT_CHECK_OK(c->all_gather(c, d, n, pass ? counts : NULL, dt, &err), &err);
        memset(acc, 0xff, nb);
        down(acc, d, nb);
        check_eq(pass ? "all_gather (device, counts)" : "all_gather (device)", dt, acc, want, n, 1);
        LT_CHECK_OK(c->all_gather(c, h, n, pass ? counts : NULL, dt, &err), &err);
        check_eq(pass ? "all_gather (host, counts)" : "all_gather (host)", dt, h, want, n, 1);
        if (c->all_gather_start && c->wait_req) { /* non-blocking: the same bits */
            void *rq = NULL;
            memset(acc, 0xff, nb);
            memcpy(acc + o * es, want + o * es, l * es);
            cudaMemset(d, 0xee, nb);
            up_on_compute(d, acc, nb);
            LT_CHECK_OK(c->all_gather_start(c, d, n, pass ? counts : NULL, dt, &rq, &err), &err);
            LT_CHECK_OK(c->wait_req(c, rq, &err), &err);
            memset(acc, 0xff, nb);
            down_after_wait(acc, d, nb);
            check_eq(pass ? "all_gather_start (device, counts)" : "all_gather_start (device)", dt, acc, want, n, 1);
        }
    }

    /* broadcast from every root */
    for (int root = 0; root < W; root++) {
        k = ++g_case;
        gen(dt, want, n, seed_of(k, 4000 + root));
        if (me == root) up(d, want, nb);
        else cudaMemset(d, 0xff, nb);
        LT_CHECK_OK(c->broadcast(c, d, nb, root, &err), &err);
        memset(h, 0xff, nb);
        down(h, d, nb);
        check_eq("broadcast", dt, h, want, n, 1);
    }
    free(counts);
    free(h);
    free(want);
    free(acc);
    cudaFree(d);
    cudaFree(dacc);
    cudaFree(ds);
}

/* host memory: a broadcast of bytes (staged through the device) from every
 * root, and the export heartbeats on it (lt_comm_watch_*: rank 0 reports,
 * the others wait for its records; a failure it ends with reaches them) */
static void test_host_broadcast_watch(lt_comm *c) {
    lt_err err = {{0}};
    const size_t nb = 1003; /* not a multiple of any word */
    unsigned char *h = malloc(nb), *want = malloc(nb);
    LT_CHECK(h && want, "out of memory");
    if (!h || !want) return;
    for (int root = 0; root < c->world; root++) {
        for (size_t i = 0; i < nb; i++) want[i] = (unsigned char)(i * 7 + (size_t)root * 13 + (size_t)++g_case);
        if (c->rank == root) memcpy(h, want, nb);
        else memset(h, 0xff, nb);
        LT_CHECK_OK(c->broadcast(c, h, nb, root, &err), &err);
        LT_CHECK(!memcmp(h, want, nb), "broadcast of host memory from root %d: bytes differ", root);
    }
    for (int fail = 0; fail < 2; fail++) {
        lt_status want_st = fail ? LT_ERR_IO : LT_OK, st;
        if (c->rank == 0) {
            lt_comm_watch w;
            LT_CHECK_OK(lt_comm_watch_begin(&w, c, "exporting a test folder", &err), &err);
            LT_CHECK_OK(lt_comm_watch_report(&w, "tensor 1 of 1", &err), &err);
            st = lt_comm_watch_end(&w, want_st, &err);
        } else {
            st = lt_comm_watch_wait(c, 0, &err);
        }
        LT_CHECK(st == want_st, "heartbeats ending with %s: rank %d got %s (%s)", lt_status_name(want_st), c->rank,
                 lt_status_name(st), err.msg);
        LT_CHECK(!fail || c->rank == 0 || strstr(err.msg, "exporting a test folder"),
                 "rank %d: the failure does not name what rank 0 did: %s", c->rank, err.msg);
        err.msg[0] = 0;
    }
    free(h);
    free(want);
}

/* with set_stream: a sub-communicator (split) shares c's stream and its
 * order (one event follows the family's starts): a prefetch-like gather
 * started on the split, a blocking sum on c and an ordered reduction started
 * on c while the gather is in flight, then both requests completed: every
 * result bitwise (what ZeRO-3 with --shard-group does) */
static void test_split_on_stream(lt_comm *c) {
    lt_err err;
    lt_comm *g = NULL;
    lt_status st = c->split(c, 0, c->rank, &g, &err);
    if (st == LT_ERR_UNSUPPORTED) {
        printf("test_comm_nccl: split on the stream not checked: %s\n", err.msg);
        return;
    }
    LT_CHECK_OK(st, &err);
    if (st) return;
    LT_CHECK(g->world == c->world && g->rank == c->rank, "split: rank %d of %d", g->rank, g->world);
    const size_t n = 100003, nb = n * sizeof(float);
    int me = c->rank;
    size_t off, len;
    lt_comm_shard(n, me, g->world, &off, &len);
    float *want = malloc(nb), *h = malloc(nb), *got = malloc(nb), *acc_want = malloc(nb);
    uint64_t kg = ++g_case, kr = ++g_case;
    gen(LT_F32, want, n, seed_of(kg, 3000));
    memset(h, 0xff, nb);
    memcpy(h + off, want + off, len * sizeof(float));
    float *d = dev(nb), *x = dev(nb), *ds = dev(nb);
    up(d, h, nb);
    gen(LT_F32, h, n, seed_of(kr, me));
    up(x, h, nb);
    cudaMemset(ds, 0, nb);
    memset(got, 0, nb); /* the accumulator's start */
    fold_ref(LT_F32, acc_want, got, kr, n, off, len);
    void *rg = NULL, *rr = NULL;
    LT_CHECK_OK(g->all_gather_start(g, d, n, NULL, LT_F32, &rg, &err), &err);
    int64_t cnt = 1;
    LT_CHECK_OK(c->all_reduce_sum(c, &cnt, 1, LT_I64, &err), &err);
    LT_CHECK(cnt == c->world, "the sum on c while the split's gather is in flight: %lld", (long long)cnt);
    LT_CHECK_OK(c->reduce_scatter_sum_ordered_start(c, ds, x, n, NULL, LT_F32, &rr, &err), &err);
    LT_CHECK_OK(g->wait_req(g, rg, &err), &err);
    LT_CHECK_OK(c->wait_req(c, rr, &err), &err);
    down_after_wait(got, d, nb);
    check_eq("all_gather_start on a split, with set_stream", LT_F32, got, want, n, 1);
    down_after_wait(got, ds, len * sizeof(float));
    check_eq("reduce_scatter_sum_ordered_start on c behind it", LT_F32, got, acc_want, len, 1);
    g->destroy(g);
    cudaFree(d), cudaFree(x), cudaFree(ds);
    free(want), free(h), free(got), free(acc_want);
}

/* ---- the hybrid chain (reduce_scatter_sum_ordered_chain_start) ---- */

/* the blocking reference of a chain on group g (cross xc): acc (this rank's
 * shard, len elements; on entry the start values) := fold(acc, x of world
 * rank 0 .. W-1) over its slot of the group's split. One group: the
 * group's reduce_scatter_sum_ordered; several: the world's
 * all_reduce_sum_ordered on the whole vector (start values `full`, the same
 * on every rank), then the slot */
static void chain_ref(lt_comm *c, lt_comm *g, lt_comm *xc, lt_dtype dt, void *dacc, const void *dx, size_t n,
                      const size_t *counts, const void *full, size_t off, size_t len) {
    lt_err err = {{0}};
    size_t es = lt_dtype_size(dt);
    if (xc->world == 1) {
        LT_CHECK_OK(g->reduce_scatter_sum_ordered(g, dacc, dx, n, counts, dt, &err), &err);
        return;
    }
    unsigned char *d = dev(n * es);
    up(d, full, n * es);
    LT_CHECK_OK(c->all_reduce_sum_ordered(c, d, dx, n, dt, &err), &err);
    cudaMemcpy(dacc, d + off * es, len * es, cudaMemcpyDeviceToDevice);
    cudaFree(d);
}

/* one chain's data: x (device, n elements of this rank's vector), the
 * accumulator's start for the whole vector (the same on every rank), this
 * rank's slot, its poisoned device accumulator and the reference result */
typedef struct {
    size_t n, off, len;
    size_t *counts; /* NULL: canonical */
    unsigned char *x, *full, *acc, *ref;
} chain_data;

static void chain_data_make(chain_data *d, lt_comm *c, lt_comm *g, lt_comm *xc, lt_dtype dt, size_t n, int uneven) {
    const size_t es = lt_dtype_size(dt);
    const int gw = g->world;
    uint64_t k = ++g_case;
    memset(d, 0, sizeof *d);
    d->n = n;
    if (uneven) { /* group rank 0 owns nothing when it can */
        d->counts = calloc((size_t)gw, sizeof(size_t));
        for (int q = 0; q < gw; q++) d->counts[q] = n / (size_t)gw;
        d->counts[gw - 1] += n % (size_t)gw;
        if (gw > 1 && n > 1) d->counts[gw - 1] += d->counts[0], d->counts[0] = 0;
        for (int q = 0; q < g->rank; q++) d->off += d->counts[q];
        d->len = d->counts[g->rank];
    } else {
        lt_comm_shard(n, g->rank, gw, &d->off, &d->len);
    }
    unsigned char *h = malloc(n * es + 1);
    d->full = malloc(n * es + 1);
    d->ref = malloc(d->len * es + 16);
    gen(dt, h, n, seed_of(k, c->rank));
    gen(dt, d->full, n, seed_of(k, 1000));
    d->x = dev(n * es);
    up(d->x, h, n * es);
    unsigned char *dref = dev(d->len * es);
    up(dref, d->full + d->off * es, d->len * es);
    chain_ref(c, g, xc, dt, dref, d->x, n, d->counts, d->full, d->off, d->len);
    down(d->ref, dref, d->len * es);
    cudaFree(dref);
    d->acc = dev(d->len * es); /* poisoned, 16 bytes more */
    up(d->acc, d->full + d->off * es, d->len * es);
    free(h);
}

/* the chain's result bitwise the reference, the 16 bytes after it untouched */
static void chain_data_check(chain_data *d, lt_dtype dt, const char *what, const char *tag) {
    const size_t es = lt_dtype_size(dt);
    unsigned char *got = malloc(d->len * es + 16);
    down_after_wait(got, d->acc, d->len * es + 16);
    char name[160];
    snprintf(name, sizeof name, "chain %s (%s)", what, tag);
    check_eq(name, dt, got, d->ref, d->len, 1);
    int poison = 1;
    for (size_t i = 0; i < 16; i++) poison &= got[d->len * es + i] == 0xff;
    LT_CHECK(poison, "%s: the bytes after the shard (%zu elements) were written", name, d->len);
    free(got);
}

static void chain_data_free(chain_data *d) {
    cudaFree(d->x), cudaFree(d->acc);
    free(d->full), free(d->ref), free(d->counts);
}

/* Chains on group g with cross xc, device buffers, n = 4099 (in pieces of
 * LT_COMM_CHUNK_ELEMS = 1000): A the whole vector; B a sub-range of another
 * x with explicit counts (group rank 0 owns nothing), started while A is in
 * flight; C the whole vector into a third accumulator; then A's wait_req and
 * D the whole vector into A's accumulator again (a chain on the same shard
 * starts after the earlier one's wait_req), while B and C are in flight;
 * then B, C, D waited in start order. Each bitwise against the blocking
 * ordered fold, the bytes after each shard untouched. The states: INPUT_FREE
 * once the exchange ran (at once with set_stream), no DONE before the
 * result delivery is queued -- by the start d = max(groups - 1, 1) chains
 * later, or a wait_req. Last, C again with its x overwritten on the compute
 * stream as soon as test_req says INPUT_FREE. With set_stream, A's x and the
 * starts' inputs are written on the compute stream just before the start
 * and the results read on it after wait_req (up_on_compute,
 * down_after_wait). */
static void chain_cases(lt_comm *c, lt_comm *g, lt_comm *xc, lt_dtype dt, const char *tag) {
    lt_err err = {{0}};
    const size_t n = 4099, lo = 517, hi = 3901;
    const int d_lag = xc->world > 2 ? xc->world - 1 : 1;
    chain_data A, B, C, D;
    chain_data_make(&A, c, g, xc, dt, n, 0);
    chain_data_make(&B, c, g, xc, dt, hi - lo, 1);
    chain_data_make(&C, c, g, xc, dt, n, 0);
    chain_data_make(&D, c, g, xc, dt, n, 0);
    /* B's x is a sub-range of a longer vector; D folds onto A's result */
    unsigned char *bx = dev(n * lt_dtype_size(dt));
    cudaMemcpy(bx + lo * lt_dtype_size(dt), B.x, (hi - lo) * lt_dtype_size(dt), cudaMemcpyDeviceToDevice);
    {
        unsigned char *dref = dev(D.len * lt_dtype_size(dt)), *full = malloc(n * lt_dtype_size(dt) + 1);
        /* D's start is A's result: every rank needs the whole vector's A result for the world reference */
        unsigned char *afull = dev(n * lt_dtype_size(dt));
        up(afull, A.full, n * lt_dtype_size(dt));
        LT_CHECK_OK(c->all_reduce_sum_ordered(c, afull, A.x, n, dt, &err), &err);
        down(full, afull, n * lt_dtype_size(dt));
        up(dref, full + D.off * lt_dtype_size(dt), D.len * lt_dtype_size(dt));
        chain_ref(c, g, xc, dt, dref, D.x, n, NULL, full, D.off, D.len);
        down(D.ref, dref, D.len * lt_dtype_size(dt));
        cudaFree(dref), cudaFree(afull), free(full);
    }
    void *ra = NULL, *rb = NULL, *rc = NULL, *rd = NULL;
    int s = 0;
    unsigned char *ax = malloc(n * lt_dtype_size(dt)); /* A's x: poisoned, then written on the compute stream */
    down(ax, A.x, n * lt_dtype_size(dt));
    cudaMemset(A.x, 0xff, n * lt_dtype_size(dt));
    up_on_compute(A.x, ax, n * lt_dtype_size(dt));
    LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, A.acc, A.x, n, NULL, dt, &ra, &err), &err);
    LT_CHECK(ra != NULL, "chain A (%s): no request for device buffers", tag);
    cudaDeviceSynchronize(); /* (every rank started A: its exchange and hops ran) */
    LT_CHECK_OK(g->test_req(g, ra, &s, &err), &err);
    LT_CHECK(s == LT_REQ_INPUT_FREE, "chain A (%s) after the sync, before any other start: state %d, expected "
             "INPUT_FREE only (no DONE before its delivery is queued)", tag, s);
    LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, B.acc, bx + lo * lt_dtype_size(dt), hi - lo, B.counts,
                                                          dt, &rb, &err),
                &err);
    cudaDeviceSynchronize();
    LT_CHECK_OK(g->test_req(g, ra, &s, &err), &err);
    int want = LT_REQ_INPUT_FREE | (d_lag == 1 ? LT_REQ_DONE : 0);
    LT_CHECK(s == want, "chain A (%s) after one more start (d = %d): state %d, expected %d", tag, d_lag, s, want);
    LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, C.acc, C.x, n, NULL, dt, &rc, &err), &err);
    LT_CHECK_OK(g->wait_req(g, ra, &err), &err);
    LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, A.acc, D.x, n, NULL, dt, &rd, &err), &err);
    LT_CHECK_OK(g->test_req(g, rb, &s, &err), &err); /* (a poll in between changes nothing) */
    LT_CHECK_OK(g->wait_req(g, rb, &err), &err);
    LT_CHECK_OK(g->wait_req(g, rc, &err), &err);
    LT_CHECK_OK(g->wait_req(g, rd, &err), &err);
    chain_data_check(&B, dt, "B (sub-range, counts)", tag);
    chain_data_check(&C, dt, "C (whole, third accumulator)", tag);
    memcpy(A.ref, D.ref, D.len * lt_dtype_size(dt));
    chain_data_check(&A, dt, "A then D (the same shard after A's wait_req)", tag);
    free(ax);

    /* host x: the blocking turns (no request); device x with a host
     * accumulator: a request, the result copied back by wait_req */
    const size_t es = lt_dtype_size(dt);
    unsigned char *hx = malloc(n * es + 1), *hacc = malloc(C.len * es + 16);
    down(hx, C.x, n * es);
    memcpy(hacc, C.full + C.off * es, C.len * es);
    void *rh = (void *)1;
    LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, hacc, hx, n, NULL, dt, &rh, &err), &err);
    LT_CHECK(rh == NULL, "chain on host x (%s): a request (expected the blocking turns)", tag);
    LT_CHECK_OK(g->wait_req(g, rh, &err), &err);
    check_eq("chain, host x and accumulator", dt, hacc, C.ref, C.len, 1);
    memcpy(hacc, C.full + C.off * es, C.len * es);
    memset(hacc + C.len * es, 0xee, 16);
    LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, hacc, C.x, n, NULL, dt, &rh, &err), &err);
    LT_CHECK_OK(g->wait_req(g, rh, &err), &err);
    check_eq("chain, device x, host accumulator", dt, hacc, C.ref, C.len, 1);
    int kept = 1;
    for (size_t i = 0; i < 16; i++) kept &= hacc[C.len * es + i] == 0xee;
    LT_CHECK(kept, "chain, host accumulator (%s): written past its %zu elements", tag, C.len);
    free(hx), free(hacc);
    cudaFree(bx);

    /* x overwritten (on the compute stream, as the trainer's next gradients)
     * as soon as test_req reports INPUT_FREE: the result must not change */
    up(C.acc, C.full + C.off * es, C.len * es);
    void *re = NULL;
    LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, C.acc, C.x, n, NULL, dt, &re, &err), &err);
    double t0 = lt_now_s();
    lt_status st = LT_OK; /* (one check, however often it polls) */
    for (s = 0; !st && !(s & LT_REQ_INPUT_FREE) && lt_now_s() - t0 < 60;) st = g->test_req(g, re, &s, &err);
    LT_CHECK_OK(st, &err);
    LT_CHECK(s & LT_REQ_INPUT_FREE, "chain (%s): no INPUT_FREE within 60 s of polling test_req", tag);
    unsigned char *poison = malloc(n * es);
    memset(poison, 0xff, n * es);
    up_on_compute(C.x, poison, n * es);
    LT_CHECK_OK(g->wait_req(g, re, &err), &err);
    chain_data_check(&C, dt, "C again, x overwritten at INPUT_FREE", tag);
    free(poison);
    chain_data_free(&A), chain_data_free(&B), chain_data_free(&C), chain_data_free(&D);
}

/* one rank's slot of want (n floats, this communicator's canonical split) on
 * the device, the rest poisoned */
static float *gather_input(lt_comm *c, const float *want, size_t n) {
    size_t off, len;
    lt_comm_shard(n, c->rank, c->world, &off, &len);
    float *h = malloc(n * sizeof(float) + 1), *d = dev(n * sizeof(float));
    memset(h, 0xff, n * sizeof(float));
    memcpy(h + off, want + off, len * sizeof(float));
    up(d, h, n * sizeof(float));
    free(h);
    return d;
}

/* The trainer's mix (ZeRO-3 prefetch with --shard-group): chains on g and
 * gathers on c and on g started in between, each communicator's requests
 * waited in start order, the two communicators' waits interleaved: every
 * result bitwise. */
static void mixed_cases(lt_comm *c, lt_comm *g, lt_comm *xc, const char *tag) {
    lt_err err = {{0}};
    const size_t n = 3001, nb = n * sizeof(float);
    chain_data A, B;
    chain_data_make(&A, c, g, xc, LT_F32, n, 0);
    chain_data_make(&B, c, g, xc, LT_F32, n, 1);
    float *wc = malloc(nb), *wg = malloc(nb), *got = malloc(nb);
    gen(LT_F32, wc, n, seed_of(++g_case, 3000));
    gen(LT_F32, wg, n, seed_of(++g_case, 3000));
    float *dc = gather_input(c, wc, n), *dg = gather_input(g, wg, n);
    void *ra = NULL, *rb = NULL, *rgc = NULL, *rgg = NULL;
    LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, A.acc, A.x, n, NULL, LT_F32, &ra, &err), &err);
    LT_CHECK_OK(c->all_gather_start(c, dc, n, NULL, LT_F32, &rgc, &err), &err);
    LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, B.acc, B.x, n, B.counts, LT_F32, &rb, &err), &err);
    LT_CHECK_OK(g->all_gather_start(g, dg, n, NULL, LT_F32, &rgg, &err), &err);
    LT_CHECK_OK(c->wait_req(c, rgc, &err), &err);
    LT_CHECK_OK(g->wait_req(g, ra, &err), &err);
    LT_CHECK_OK(g->wait_req(g, rb, &err), &err);
    LT_CHECK_OK(g->wait_req(g, rgg, &err), &err);
    char name[160];
    snprintf(name, sizeof name, "mixed (%s): gather on the world between chains", tag);
    down_after_wait(got, dc, nb);
    check_eq(name, LT_F32, got, wc, n, 1);
    snprintf(name, sizeof name, "mixed (%s): gather on the group after the chains", tag);
    down_after_wait(got, dg, nb);
    check_eq(name, LT_F32, got, wg, n, 1);
    chain_data_check(&A, LT_F32, "mixed A", tag);
    chain_data_check(&B, LT_F32, "mixed B (counts)", tag);
    cudaFree(dc), cudaFree(dg);
    free(wc), free(wg), free(got);
    chain_data_free(&A), chain_data_free(&B);
}

/* One group (the whole world; cross: every rank alone -- at world 1 a
 * split of the world-1 communicator): the chain is the group's ordered
 * reduce-scatter, checked bitwise against it. Then, with more than one
 * rank (never on one GPU: `mpirun -np 2` or more on as many GPUs), groups
 * of gs = 1 .. W/2 consecutive ranks (world % gs == 0), checked against
 * the world's ordered fold, then mixed_cases, then two chains left in flight
 * across the groups and both splits destroyed. Last, two chains left in
 * flight on a split and the splits destroyed (destroy releases the
 * requests). */
static void test_chain(lt_comm *c, const char *tag) {
    lt_err err = {{0}};
    if (!c->reduce_scatter_sum_ordered_chain_start || !c->test_req) {
        LT_CHECK(0, "nccl has no reduce_scatter_sum_ordered_chain_start / test_req");
        return;
    }
    lt_comm *xc = NULL;
    lt_status st = c->split(c, c->rank, 0, &xc, &err);
    if (st == LT_ERR_UNSUPPORTED) {
        printf("test_comm_nccl: the chain not checked: %s\n", err.msg);
        return;
    }
    LT_CHECK_OK(st, &err);
    if (st) return;
    LT_CHECK(xc->world == 1, "cross of one group: world %d", xc->world);
    char name[96];
    snprintf(name, sizeof name, "%s, one group", tag);
    chain_cases(c, c, xc, LT_F32, name);
    chain_cases(c, c, xc, LT_F64, name);
    mixed_cases(c, c, xc, name);
    xc->destroy(xc);

    for (int gs = 1; gs <= c->world / 2; gs++) { /* several groups: world > 1 only */
        if (c->world % gs) continue;
        lt_comm *g = NULL;
        xc = NULL;
        LT_CHECK_OK(c->split(c, c->rank / gs, c->rank, &g, &err), &err);
        LT_CHECK_OK(c->split(c, c->rank % gs, c->rank, &xc, &err), &err);
        if (!g || !xc) return;
        LT_CHECK(g->world == gs && xc->world == c->world / gs && xc->rank == c->rank / gs,
                 "groups of %d: group world %d, cross world %d rank %d", gs, g->world, xc->world, xc->rank);
        snprintf(name, sizeof name, "%s, %d groups of %d", tag, xc->world, gs);
        chain_cases(c, g, xc, LT_F32, name);
        mixed_cases(c, g, xc, name);
        { /* two chains left in flight across the groups, then both splits destroyed */
            const size_t n = 2500;
            float *x = dev(n * sizeof(float)), *acc = dev(2 * n * sizeof(float));
            void *r1 = NULL, *r2 = NULL;
            LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, acc, x, n, NULL, LT_F32, &r1, &err), &err);
            LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, acc + n, x, n, NULL, LT_F32, &r2, &err), &err);
            xc->destroy(xc);
            g->destroy(g);
            cudaFree(x), cudaFree(acc);
        }
    }

    lt_comm *g = NULL; /* left in flight, then destroyed */
    xc = NULL;
    LT_CHECK_OK(c->split(c, 0, c->rank, &g, &err), &err);
    LT_CHECK_OK(c->split(c, c->rank, 0, &xc, &err), &err);
    if (!g || !xc) return;
    const size_t n = 2500;
    float *x = dev(n * sizeof(float)), *acc = dev(2 * n * sizeof(float));
    void *r1 = NULL, *r2 = NULL;
    LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, acc, x, n, NULL, LT_F32, &r1, &err), &err);
    LT_CHECK_OK(g->reduce_scatter_sum_ordered_chain_start(g, xc, acc + n, x, n, NULL, LT_F32, &r2, &err), &err);
    LT_CHECK(r1 && r2, "chains on device buffers without requests");
    xc->destroy(xc);
    g->destroy(g);
    int64_t one = 1; /* c still works */
    LT_CHECK_OK(c->all_reduce_sum(c, &one, 1, LT_I64, &err), &err);
    LT_CHECK(one == c->world, "a sum after destroying splits with chains in flight: %lld", (long long)one);
    cudaFree(x), cudaFree(acc);
}

/* `hang` (argument): the last rank stops answering after the setup; the
 * others' next collective (a sum on the device; `hang-chain`: a chain's
 * wait_req, groups of one) must end the job with the timeout's message
 * (LT_COMM_TIMEOUT_S) instead of hanging. 0 = the job survived (a failure). */
static int dead_peer(lt_comm *c, int chain) {
    lt_err err = {{0}};
    float *d = dev(1000 * sizeof(float)), *acc = dev(1000 * sizeof(float));
    cudaMemset(d, 0, 1000 * sizeof(float));
    lt_comm *g = NULL, *xc = NULL; /* chain: groups of one, the hops across every rank */
    if (chain && (c->split(c, c->rank, 0, &g, &err) || c->split(c, 0, c->rank, &xc, &err))) {
        fprintf(stderr, "test_comm_nccl: split: %s\n", err.msg);
        return 1;
    }
    if (c->rank == c->world - 1) {
        fprintf(stderr, "test_comm_nccl: rank %d simulates a hung peer\n", c->rank);
        for (;;) {
            struct timespec ts = {1, 0};
            nanosleep(&ts, NULL);
        }
    }
    void *r = NULL;
    lt_status st = chain ? g->reduce_scatter_sum_ordered_chain_start(g, xc, acc, d, 1000, NULL, LT_F32, &r, &err)
                         : c->all_reduce_sum(c, d, 1000, LT_F32, &err);
    if (!st && chain) st = g->wait_req(g, r, &err);
    fprintf(stderr, "test_comm_nccl: rank %d: the job survived a hung peer (%s: %s)\n", c->rank,
            lt_status_name(st), err.msg);
    return 0;
}

int main(int argc, char **argv) {
    setenv("LT_COMM_CHUNK_ELEMS", "1000", 0); /* the ordered path in pieces */
    lt_comm_opts o = lt_comm_opts_default();
    o.on_device = 1;
    lt_comm *c = NULL;
    lt_err err = {{0}};
    lt_status st = lt_comm_create("auto", &o, &c, &err);
    if (st == LT_ERR_UNSUPPORTED) {
        printf("test_comm_nccl: %s; skipping\n", err.msg);
        return LT_TEST_SKIP;
    }
    if (st) {
        fprintf(stderr, "test_comm_nccl: lt_comm_create: %s\n", err.msg);
        return 1;
    }
    g_world = c->world;
    if (argc > 1 && !strncmp(argv[1], "hang", 4)) return dead_peer(c, !strcmp(argv[1], "hang-chain")) == 0 ? 1 : 0;
    LT_CHECK(!strcmp(c->name, "nccl"), "auto with on_device picked '%s'", c->name);
    LT_CHECK(c->device >= 0, "device %d", c->device);

    const lt_dtype dts[] = {LT_F32, LT_BF16, LT_F64, LT_I64, LT_I32};
    size_t ns[] = {0, 1, 2, 7, 1000, 4099, 100003};
    for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++)
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) test_dtype_n(c, dts[d], ns[i]);
    test_host_broadcast_watch(c);
    test_chain(c, "own stream");

    /* scalars the trainer reduces: target counts (i64) and loss sums (f64) on the host */
    int64_t ntok = 1000 + c->rank;
    LT_CHECK_OK(c->all_reduce_sum(c, &ntok, 1, LT_I64, &err), &err);
    int64_t want_tok = 0;
    for (int q = 0; q < c->world; q++) want_tok += 1000 + q;
    LT_CHECK(ntok == want_tok, "i64 token count %lld, expected %lld", (long long)ntok, (long long)want_tok);

    /* the stream setter, barrier, argument errors */
    cudaStream_t s;
    cudaStreamCreate(&s);
    LT_CHECK_OK(c->set_stream(c, s, &err), &err);
    g_cstream = s;
    LT_CHECK_OK(c->barrier(c, &err), &err);
    /* on that stream (the non-blocking starts then order it by events) */
    test_dtype_n(c, LT_F32, 4099);
    test_dtype_n(c, LT_F64, 100003);
    test_split_on_stream(c);
    test_host_broadcast_watch(c);
    test_chain(c, "set_stream");
    float *d = NULL;
    cudaMalloc((void **)&d, 64);
    st = c->all_reduce_sum(c, d, 4, LT_F16, &err);
    LT_CHECK(st == LT_ERR_UNSUPPORTED, "f16 accepted: %s", lt_status_name(st));
    size_t bad[64] = {3};
    st = c->all_gather(c, d, 4, bad, LT_F32, &err);
    LT_CHECK(st == LT_ERR_INVALID, "counts summing to 3 for n = 4 accepted: %s", lt_status_name(st));
    st = c->broadcast(c, d, 16, c->world, &err);
    LT_CHECK(st == LT_ERR_INVALID, "root = world accepted: %s", lt_status_name(st));
    LT_CHECK_OK(c->set_stream(c, NULL, &err), &err);
    g_cstream = NULL;
    cudaFree(d);
    cudaStreamDestroy(s);

    char name[64];
    snprintf(name, sizeof name, "test_comm_nccl[rank %d/%d, device %d]", c->rank, c->world, c->device);
    int rc = lt_test_finish(name);
    c->destroy(c);
    return rc;
}
#endif
