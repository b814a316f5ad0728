/* test_comm.c -- the communicators of train/lt_comm.h.
 *
 * Run as a plain binary (ctest): world 1 ("single"), the launcher
 * environment parser, the shard arithmetic and one rank's progress reports
 * (lt_comm_watch_*: a stand-in communicator records the root's reports and
 * replays them to a waiting rank; what a timeout then says).
 * Run under mpirun (tests/test_comm_mpi.sh, -np 2 and -np 3): every
 * collective of the "mpi" communicator on random data (uneven sizes, n <
 * world, n = 0, ranks that own nothing, explicit counts), each result compared
 * BITWISE with a serial rank-order fold computed here from every rank's
 * regenerated inputs (the contract in lt_comm.h), plus broadcast and barrier,
 * sub-communicators (split: rank order by key, the fold inside a group,
 * messages naming world ranks), the non-blocking all_gather with a
 * reduction running beside it, the non-blocking ordered reduce-scatter
 * (bitwise the blocking one) and the hybrid chain (groups of 1 and 2 ranks,
 * three chains in flight: bitwise the world's ordered fold).
 *
 *   test_comm dead=hang|exit|exit0|kill|abort|killmid
 *     the last rank fails (sleeps instead of joining, exits with 3 or with 0
 *     without lt_comm destroy, is killed, calls c->abort, or is killed in the
 *     middle of a long collective); the others
 *     run collectives. The job must end with an error naming a rank (the
 *     script checks that and the time).
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "lt_comm.h"
#include "lt_comm_internal.h" /* lt_comm_timeout_abort */
#include "lt_test.h"

static int g_rank = 0, g_world = 1;

/* ---- inputs: rank q's contribution to case k, regenerable on every rank ---- */

static uint64_t seed_of(uint64_t k, int q) { return 0x9e3779b97f4a7c15ull * (k + 1) ^ (0xabcdefull * (uint64_t)(q + 7)); }

/* random values over many magnitudes, so that the summation order shows */
static void gen(lt_dtype dt, void *buf, size_t n, uint64_t seed) {
    lt_rng r;
    lt_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        double mag = pow(10.0, 6.0 * lt_rng_uniform(&r) - 3.0);
        double v = mag * lt_rng_normal(&r);
        switch (dt) {
        case LT_F32: ((float *)buf)[i] = (float)v; break;
        case LT_F64: ((double *)buf)[i] = v * (1.0 + 1e-9 * lt_rng_uniform(&r)); break;
        case LT_BF16: ((uint16_t *)buf)[i] = lt_f32_to_bf16((float)v); break;
        case LT_I64: ((int64_t *)buf)[i] = (int64_t)lt_rng_u64(&r); break; /* wraps when summed */
        case LT_I32: ((int32_t *)buf)[i] = (int32_t)(lt_rng_u64(&r) >> 33) - (1 << 30); break;
        case LT_U8: ((uint8_t *)buf)[i] = (uint8_t)(lt_rng_u64(&r) >> 56); break;
        default: break;
        }
    }
}

/* d += s in the arithmetic of dt (written here independently of lt_comm.c) */
static void add_ref(lt_dtype dt, void *d, const void *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case LT_F32: ((float *)d)[i] += ((const float *)s)[i]; break;
        case LT_F64: ((double *)d)[i] += ((const double *)s)[i]; break;
        case LT_BF16: {
            float a = lt_bf16_to_f32(((uint16_t *)d)[i]), b = lt_bf16_to_f32(((const uint16_t *)s)[i]);
            ((uint16_t *)d)[i] = lt_f32_to_bf16(a + b);
            break;
        }
        case LT_I64: ((uint64_t *)d)[i] += ((const uint64_t *)s)[i]; break;
        case LT_I32: ((uint32_t *)d)[i] += ((const uint32_t *)s)[i]; break;
        case LT_U8: ((uint8_t *)d)[i] = (uint8_t)(((uint8_t *)d)[i] + ((const uint8_t *)s)[i]); break;
        default: break;
        }
    }
}

/* want = fold(acc or x_0, x_q for q in order) over [lo, lo + m) of each rank's
 * case-k vector of n elements. reverse: fold in the opposite order (to show
 * that the order matters for this data). */
static void fold_ref(lt_dtype dt, void *want, const void *acc, uint64_t k, size_t n, size_t lo, size_t m,
                     int reverse) {
    size_t es = lt_dtype_size(dt);
    unsigned char *xq = malloc(n * es + 1);
    int first = 1;
    if (acc) {
        memcpy(want, acc, m * es);
        first = 0;
    }
    for (int i = 0; i < g_world; i++) {
        int q = reverse ? g_world - 1 - i : i;
        gen(dt, xq, n, seed_of(k, q));
        if (first) memcpy(want, xq + lo * es, m * es);
        else add_ref(dt, want, xq + lo * es, m);
        first = 0;
    }
    free(xq);
}

static void poison(void *p, size_t bytes) { memset(p, 0xff, bytes); } /* NaN for floats, -1 for ints */

static int same(const void *a, const void *b, size_t bytes) { return bytes == 0 || memcmp(a, b, bytes) == 0; }

/* counts with zeros: a random split of n (same on every rank) */
static void random_counts(size_t *counts, size_t n, uint64_t seed) {
    lt_rng r;
    lt_rng_seed(&r, seed);
    size_t left = n;
    for (int q = 0; q < g_world; q++) {
        if (q == g_world - 1) {
            counts[q] = left;
            break;
        }
        size_t c = (lt_rng_u64(&r) % 3 == 0) ? 0 : (size_t)(lt_rng_u64(&r) % (left + 1));
        counts[q] = c;
        left -= c;
    }
}

static const char *dtn(lt_dtype dt) { return lt_dtype_name(dt); }

/* ---- shard arithmetic and the environment (no communication) ---- */

static void test_shard(void) {
    size_t ns[] = {0, 1, 2, 3, 5, 7, 8, 100, 1001, 123457};
    for (int w = 1; w <= 9; w++)
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            size_t n = ns[i], next = 0, mn = (size_t)-1, mx = 0;
            int ok = 1;
            for (int r = 0; r < w; r++) {
                size_t off, len;
                lt_comm_shard(n, r, w, &off, &len);
                ok &= off == next;
                next = off + len;
                if (len < mn) mn = len;
                if (len > mx) mx = len;
                /* the first n % w ranks hold the extra element */
                ok &= len == n / (size_t)w + ((size_t)r < n % (size_t)w ? 1 : 0);
            }
            LT_CHECK(ok && next == n && mx - mn <= 1, "lt_comm_shard(n=%zu, world=%d): not a canonical split", n, w);
        }
    size_t off, len;
    lt_comm_shard(10, 0, 4, &off, &len);
    LT_CHECK(off == 0 && len == 3, "shard(10, 0, 4) = (%zu, %zu)", off, len);
    lt_comm_shard(10, 3, 4, &off, &len);
    LT_CHECK(off == 8 && len == 2, "shard(10, 3, 4) = (%zu, %zu)", off, len);
    lt_comm_shard(2, 2, 3, &off, &len);
    LT_CHECK(off == 2 && len == 0, "shard(2, 2, 3) = (%zu, %zu)", off, len);
}

static void test_env_parse(void) {
    /* only in a plain run (no launcher variables to disturb) */
    lt_comm_env e;
    lt_comm_env_read(&e);
    LT_CHECK(e.rank == 0 && e.world == 1 && !strcmp(e.source, "none") && !e.mpi_launcher,
             "plain run: rank %d world %d source %s", e.rank, e.world, e.source);
    setenv("SLURM_PROCID", "5", 1);
    setenv("SLURM_NTASKS", "16", 1);
    setenv("SLURM_LOCALID", "1", 1);
    lt_comm_env_read(&e);
    LT_CHECK(e.rank == 5 && e.world == 16 && e.local_rank == 1 && !strcmp(e.source, "SLURM") && !e.mpi_launcher,
             "slurm: rank %d world %d local %d source %s", e.rank, e.world, e.local_rank, e.source);
    /* "single" must refuse a multi-rank launch */
    lt_comm *c = NULL;
    lt_err err = {{0}};
    lt_status st = lt_comm_create("single", NULL, &c, &err);
    LT_CHECK(st == LT_ERR_INVALID && strstr(err.msg, "16") && c == NULL, "single under 16 ranks: %s (%s)",
             lt_status_name(st), err.msg);
    /* Open MPI's variables win over Slurm's */
    setenv("OMPI_COMM_WORLD_RANK", "2", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "0", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
    lt_comm_env_read(&e);
    LT_CHECK(e.rank == 2 && e.world == 4 && e.local_rank == 0 && e.local_world == 2 && !strcmp(e.source, "OMPI") &&
                 e.mpi_launcher,
             "ompi: rank %d world %d local %d/%d source %s", e.rank, e.world, e.local_rank, e.local_world, e.source);
    unsetenv("OMPI_COMM_WORLD_RANK");
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    setenv("PMI_RANK", "3", 1);
    setenv("PMI_SIZE", "6", 1);
    lt_comm_env_read(&e);
    LT_CHECK(e.rank == 3 && e.world == 6 && !strcmp(e.source, "PMI") && e.mpi_launcher, "pmi: rank %d world %d %s",
             e.rank, e.world, e.source);
    setenv("PMI_RANK", "9", 1);
    st = lt_comm_create("auto", NULL, &c, &err);
    LT_CHECK(st == LT_ERR_INVALID && c == NULL, "rank 9 of 6 accepted: %s", lt_status_name(st));
    unsetenv("PMI_RANK");
    unsetenv("PMI_SIZE");
    unsetenv("SLURM_PROCID");
    unsetenv("SLURM_NTASKS");
    unsetenv("SLURM_LOCALID");
}

/* ---- collectives ---- */

static uint64_t g_case = 0;

static void test_dtype_n(lt_comm *c, lt_dtype dt, size_t n) {
    const int W = c->world, me = c->rank;
    const size_t es = lt_dtype_size(dt);
    const size_t nb = n * es;
    unsigned char *x = malloc(nb + 1), *x0 = malloc(nb + 1), *buf = malloc(nb + 1), *want = malloc(nb + 1);
    unsigned char *acc = malloc(nb + 1);
    size_t *counts = malloc(sizeof(size_t) * (size_t)W);
    lt_err err = {{0}};
    size_t off, len;
    lt_comm_shard(n, me, W, &off, &len);

    /* all_reduce_sum: x_0 + x_1 + ... in rank order */
    uint64_t k = ++g_case;
    gen(dt, buf, n, seed_of(k, me));
    LT_CHECK_OK(c->all_reduce_sum(c, buf, n, dt, &err), &err);
    fold_ref(dt, want, NULL, k, n, 0, n, 0);
    LT_CHECK(same(buf, want, nb), "all_reduce_sum %s n=%zu: not the rank-order fold", dtn(dt), n);
    if (W >= 3 && n >= 100 && dt != LT_I64 && dt != LT_I32 && dt != LT_U8) {
        /* the data is such that the order shows (else the check above is weak) */
        fold_ref(dt, x, NULL, k, n, 0, n, 1);
        LT_CHECK(!same(x, want, nb), "%s n=%zu: reverse-order fold equals the forward one (test data too tame)",
                 dtn(dt), n);
    }

    /* all_reduce_sum_ordered: acc := fold(acc, x_0, ...) */
    k = ++g_case;
    gen(dt, acc, n, seed_of(k, 1000)); /* the same acc on every rank */
    gen(dt, x, n, seed_of(k, me));
    memcpy(x0, x, nb);
    fold_ref(dt, want, acc, k, n, 0, n, 0);
    LT_CHECK_OK(c->all_reduce_sum_ordered(c, acc, x, n, dt, &err), &err);
    LT_CHECK(same(acc, want, nb), "all_reduce_sum_ordered %s n=%zu: not fold(acc, x_0, ...)", dtn(dt), n);
    LT_CHECK(same(x, x0, nb), "all_reduce_sum_ordered %s n=%zu: x was modified", dtn(dt), n);

    /* reduce_scatter_sum, canonical split, out of place and into the own slot */
    k = ++g_case;
    gen(dt, x, n, seed_of(k, me));
    memcpy(x0, x, nb);
    poison(buf, len * es);
    fold_ref(dt, want, NULL, k, n, off, len, 0);
    LT_CHECK_OK(c->reduce_scatter_sum(c, buf, x, n, NULL, dt, &err), &err);
    LT_CHECK(same(buf, want, len * es), "reduce_scatter_sum %s n=%zu rank %d [%zu, +%zu)", dtn(dt), n, me, off, len);
    LT_CHECK(same(x, x0, nb), "reduce_scatter_sum %s n=%zu: x was modified", dtn(dt), n);
    LT_CHECK_OK(c->reduce_scatter_sum(c, x + off * es, x, n, NULL, dt, &err), &err);
    LT_CHECK(same(x + off * es, want, len * es), "reduce_scatter_sum in place %s n=%zu rank %d", dtn(dt), n, me);

    /* reduce_scatter_sum_ordered with explicit counts (some ranks own nothing) */
    k = ++g_case;
    random_counts(counts, n, seed_of(k, 2000));
    size_t coff = 0;
    for (int q = 0; q < me; q++) coff += counts[q];
    gen(dt, x, n, seed_of(k, me));
    gen(dt, acc, n, seed_of(k, 1000)); /* acc_shard = the same slot of one shared vector */
    fold_ref(dt, want, acc + coff * es, k, n, coff, counts[me], 0);
    memcpy(buf, acc + coff * es, counts[me] * es);
    LT_CHECK_OK(c->reduce_scatter_sum_ordered(c, buf, x, n, counts, dt, &err), &err);
    LT_CHECK(same(buf, want, counts[me] * es), "reduce_scatter_sum_ordered %s n=%zu counts[%d]=%zu", dtn(dt), n, me,
             counts[me]);

    /* all_gather: canonical split, then the explicit counts */
    for (int pass = 0; pass < 2; pass++) {
        k = ++g_case;
        const size_t *cn = pass ? counts : NULL;
        size_t o = pass ? coff : off, l = pass ? counts[me] : len;
        gen(dt, want, n, seed_of(k, 3000)); /* the gathered vector */
        poison(buf, nb);
        memcpy(buf + o * es, want + o * es, l * es);
        LT_CHECK_OK(c->all_gather(c, buf, n, cn, dt, &err), &err);
        LT_CHECK(same(buf, want, nb), "all_gather %s n=%zu (%s counts)", dtn(dt), n, pass ? "explicit" : "canonical");
    }

    /* broadcast from every root */
    for (int root = 0; root < W; root++) {
        k = ++g_case;
        gen(dt, want, n, seed_of(k, 4000 + root));
        if (me == root) memcpy(buf, want, nb);
        else poison(buf, nb);
        LT_CHECK_OK(c->broadcast(c, buf, nb, root, &err), &err);
        LT_CHECK(same(buf, want, nb), "broadcast %s n=%zu root %d", dtn(dt), n, root);
    }
    free(x);
    free(x0);
    free(buf);
    free(want);
    free(acc);
    free(counts);
}

static void test_errors(lt_comm *c) {
    lt_err err = {{0}};
    float v[4] = {1, 2, 3, 4};
    size_t counts[64] = {0};
    counts[0] = 3; /* sums to 3, not 4 */
    lt_status st = c->reduce_scatter_sum(c, v, v, 4, counts, LT_F32, &err);
    LT_CHECK(st == LT_ERR_INVALID && strstr(err.msg, "sum to 3"), "bad counts: %s (%s)", lt_status_name(st), err.msg);
    st = c->all_gather(c, v, 4, counts, LT_F32, &err);
    LT_CHECK(st == LT_ERR_INVALID, "all_gather bad counts: %s", lt_status_name(st));
    st = c->all_reduce_sum(c, v, 4, LT_F16, &err);
    LT_CHECK(st == LT_ERR_UNSUPPORTED && strstr(err.msg, "F16"), "f16: %s (%s)", lt_status_name(st), err.msg);
    st = c->broadcast(c, v, sizeof v, c->world, &err);
    LT_CHECK(st == LT_ERR_INVALID, "broadcast root = world: %s", lt_status_name(st));
    st = c->all_reduce_sum_ordered(c, v, v, 4, LT_F32, &err);
    LT_CHECK(st == LT_ERR_INVALID, "acc == x accepted: %s", lt_status_name(st));
}

static void test_barrier(lt_comm *c) {
    lt_err err = {{0}};
    const char *dir = lt_test_tmpdir("test_comm");
    uint64_t id = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
    LT_CHECK_OK(c->broadcast(c, &id, sizeof id, 0, &err), &err);
    char path[4096];
    for (int round = 0; round < 3; round++) {
        /* the later ranks arrive later: a barrier that does not wait fails */
        struct timespec ts = {0, 40000000L * c->rank};
        nanosleep(&ts, NULL);
        snprintf(path, sizeof path, "%s/barrier.%llx.%d.%d", dir, (unsigned long long)id, round, c->rank);
        FILE *f = fopen(path, "w");
        LT_CHECK(f != NULL, "cannot create %s", path);
        if (f) fclose(f);
        LT_CHECK_OK(c->barrier(c, &err), &err);
        int seen = 0;
        for (int q = 0; q < c->world; q++) {
            snprintf(path, sizeof path, "%s/barrier.%llx.%d.%d", dir, (unsigned long long)id, round, q);
            seen += lt_file_exists(path);
        }
        LT_CHECK(seen == c->world, "after barrier round %d rank %d sees %d of %d files", round, c->rank, seen,
                 c->world);
        LT_CHECK_OK(c->barrier(c, &err), &err);
        snprintf(path, sizeof path, "%s/barrier.%llx.%d.%d", dir, (unsigned long long)id, round, c->rank);
        remove(path);
    }
}

/* The determinism scenario of lt_comm.h: interleaved micro-batches, each
 * gradient folded with all_reduce_sum_ordered, equals the serial sum over
 * micro-batches in order (what the 1-rank run computes). */
static void test_microbatch_contract(lt_comm *c) {
    const int W = c->world, accum = 3;
    const size_t n = 777;
    float *acc = calloc(n, sizeof(float)), *g = malloc(n * sizeof(float)), *serial = calloc(n, sizeof(float));
    lt_err err = {{0}};
    for (int kr = 0; kr < accum; kr++) {
        gen(LT_F32, g, n, seed_of(99999, kr * W + c->rank)); /* gradient of micro-batch j = k*W + r */
        LT_CHECK_OK(c->all_reduce_sum_ordered(c, acc, g, n, LT_F32, &err), &err);
    }
    for (int j = 0; j < accum * W; j++) { /* the 1-rank run: acc += g_j, j = 0, 1, ... */
        gen(LT_F32, g, n, seed_of(99999, j));
        for (size_t i = 0; i < n; i++) serial[i] += g[i];
    }
    LT_CHECK(same(acc, serial, n * sizeof(float)), "interleaved ordered reduction != serial micro-batch sum");
    free(acc);
    free(g);
    free(serial);
}

/* split: groups of 2 consecutive ranks (the last alone when the world is
 * odd) and the ranks with the same place in every group; inside each the
 * ordered fold runs over its own ranks, messages name world ranks. Then the
 * non-blocking all_gather with an ordered reduction in flight beside it. */
static void test_split_and_async(lt_comm *c) {
    lt_err err = {{0}};
    const int me = c->rank, W = c->world;
    lt_comm *g = NULL, *x = NULL;
    LT_CHECK_OK(c->split(c, me / 2, me, &g, &err), &err);
    LT_CHECK_OK(c->split(c, me % 2, -me, &x, &err), &err); /* key -rank: reversed order */
    if (!g || !x) return;
    int gw = (me / 2) * 2 + 1 < W ? 2 : 1, xw = (W - me % 2 + 1) / 2;
    LT_CHECK(g->world == gw && g->rank == me % 2, "split group: rank %d of %d, expected %d of %d", g->rank, g->world,
             me % 2, gw);
    LT_CHECK(x->world == xw && x->rank == xw - 1 - me / 2, "split by key: rank %d of %d (world rank %d)", x->rank,
             x->world, me);
    LT_CHECK(g->msg_rank == me && g->msg_world == W, "split: messages name rank %d of %d", g->msg_rank, g->msg_world);
    /* the fold inside the group: acc + x_(2k) + x_(2k+1) in f32 */
    float acc[3] = {1e8f, 0.5f, -3.0f}, v[3] = {(float)(me + 1), 0.25f * (float)me, 1.0f}, want[3];
    for (int i = 0; i < 3; i++) {
        want[i] = acc[i];
        for (int q = (me / 2) * 2; q < (me / 2) * 2 + gw; q++) {
            float vq[3] = {(float)(q + 1), 0.25f * (float)q, 1.0f};
            want[i] += vq[i];
        }
    }
    LT_CHECK_OK(g->all_reduce_sum_ordered(g, acc, v, 3, LT_F32, &err), &err);
    LT_CHECK(same(acc, want, sizeof acc), "split: the group's ordered fold differs");
    /* non-blocking gather, an ordered reduction on the parent while it is in flight */
    if (c->all_gather_start) {
        size_t n = 1003, off, len;
        lt_comm_shard(n, me, W, &off, &len);
        int32_t *buf = malloc(n * sizeof *buf), *ref = malloc(n * sizeof *ref);
        for (size_t i = 0; i < n; i++) buf[i] = -1, ref[i] = (int32_t)(i * 7 + 3);
        memcpy(buf + off, ref + off, len * sizeof *buf);
        void *req = NULL;
        LT_CHECK_OK(c->all_gather_start(c, buf, n, NULL, LT_I32, &req, &err), &err);
        int64_t one = 1;
        LT_CHECK_OK(c->all_reduce_sum(c, &one, 1, LT_I64, &err), &err);
        LT_CHECK(one == W, "a reduction beside a gather in flight: %lld", (long long)one);
        LT_CHECK_OK(c->wait_req(c, req, &err), &err);
        LT_CHECK(same(buf, ref, n * sizeof *buf), "all_gather_start: not the whole vector after wait_req");
        free(buf);
        free(ref);
    }
    if (c->reduce_scatter_sum_ordered_start) { /* the same bits as the blocking call */
        size_t n = 2001, off, len;
        lt_comm_shard(n, me, W, &off, &len);
        float *xv = malloc(n * sizeof *xv), *a1 = malloc((len + 1) * sizeof *a1), *a2 = malloc((len + 1) * sizeof *a2);
        gen(LT_F32, xv, n, seed_of(++g_case, me));
        for (size_t i = 0; i < len; i++) a1[i] = a2[i] = 1.0f + (float)i;
        void *req = NULL;
        LT_CHECK_OK(c->reduce_scatter_sum_ordered_start(c, a1, xv, n, NULL, LT_F32, &req, &err), &err);
        int64_t one = 1;
        LT_CHECK_OK(c->all_reduce_sum(c, &one, 1, LT_I64, &err), &err);
        int s = 0; /* test_req on a plain request: done once its transfers are; the fold still in wait_req */
        for (double t0 = lt_now_s(); c->test_req && !(s & LT_REQ_DONE) && lt_now_s() - t0 < 60;)
            LT_CHECK_OK(c->test_req(c, req, &s, &err), &err);
        LT_CHECK(!c->test_req || s == (LT_REQ_INPUT_FREE | LT_REQ_DONE), "test_req: state %d after 60 s", s);
        LT_CHECK_OK(c->wait_req(c, req, &err), &err);
        LT_CHECK_OK(c->reduce_scatter_sum_ordered(c, a2, xv, n, NULL, LT_F32, &err), &err);
        LT_CHECK(same(a1, a2, len * sizeof *a1), "reduce_scatter_sum_ordered_start: differs from the blocking call");
        free(xv);
        free(a1);
        free(a2);
    }
    x->destroy(x);
    g->destroy(g);
}

/* the hybrid chain (reduce_scatter_sum_ordered_chain_start): groups of gs
 * consecutive ranks, K chains in flight at once, polled newest first (the
 * fold order must not depend on the polling); each group's shard equals
 * that slot of the world's ordered fold over the whole vector, bitwise */
static void test_chain(lt_comm *c, int gs) {
    lt_err err = {{0}};
    const int me = c->rank, W = c->world;
    if (!c->reduce_scatter_sum_ordered_chain_start || !c->test_req || W % gs) return;
    lt_comm *g = NULL, *x = NULL;
    LT_CHECK_OK(c->split(c, me / gs, me, &g, &err), &err);
    LT_CHECK_OK(c->split(c, me % gs, me, &x, &err), &err);
    if (!g || !x) return;
    enum { K = 3 };
    size_t n = 1999, off, len;
    lt_comm_shard(n, g->rank, g->world, &off, &len);
    float *xv[K], *acc[K], *ref[K];
    void *req[K];
    for (int k = 0; k < K; k++) {
        xv[k] = malloc(n * sizeof(float)), acc[k] = malloc((len + 1) * sizeof(float)), ref[k] = malloc(n * sizeof(float));
        gen(LT_F32, xv[k], n, seed_of(++g_case, me));
        for (size_t i = 0; i < n; i++) ref[k][i] = 0.5f * (float)(i % 7) + (float)k;
        memcpy(acc[k], ref[k] + off, len * sizeof(float));
        LT_CHECK_OK(c->reduce_scatter_sum_ordered_chain_start(g, x, acc[k], xv[k], n, NULL, LT_F32, &req[k], &err),
                    &err);
    }
    int done = 0;
    double t0 = lt_now_s();
    while (done != (1 << K) - 1 && lt_now_s() - t0 < 60)
        for (int k = K - 1; k >= 0; k--) {
            int s = 0;
            LT_CHECK_OK(g->test_req(g, req[k], &s, &err), &err);
            if (s & LT_REQ_DONE) done |= 1 << k;
        }
    LT_CHECK(done == (1 << K) - 1, "chains (groups of %d): not complete after 60 s (done mask %d)", gs, done);
    for (int k = 0; k < K; k++) {
        LT_CHECK_OK(g->wait_req(g, req[k], &err), &err);
        LT_CHECK_OK(c->all_reduce_sum_ordered(c, ref[k], xv[k], n, LT_F32, &err), &err);
        LT_CHECK(same(acc[k], ref[k] + off, len * sizeof(float)),
                 "chain %d (groups of %d, rank %d of its group): differs from the world's ordered fold", k, gs, g->rank);
        free(xv[k]), free(acc[k]), free(ref[k]);
    }
    x->destroy(x);
    g->destroy(g);
}

static int dead_peer(lt_comm *c, const char *mode) {
    lt_err err = {{0}};
    const size_t n = 1 << 20;
    float *buf = malloc(n * sizeof(float));
    lt_fill_normal(buf, n, 1.0f, 7 + (uint64_t)c->rank);
    if (c->all_reduce_sum(c, buf, 1000, LT_F32, &err)) c->abort(c, err.msg); /* everyone is alive here */
    int victim = c->world - 1;
    if (c->rank == victim) {
        fprintf(stderr, "test_comm: rank %d simulates '%s'\n", c->rank, mode);
        if (!strcmp(mode, "hang")) sleep(600);
        else if (!strcmp(mode, "exit")) exit(3);
        else if (!strcmp(mode, "exit0")) exit(0); /* "success" without lt_comm destroy */
        else if (!strcmp(mode, "kill")) raise(SIGKILL);
        else if (!strcmp(mode, "abort")) c->abort(c, "simulated failure in the data loader");
        else if (!strcmp(mode, "killmid")) {
            /* killed by a timer while inside a long chunked collective */
            signal(SIGALRM, SIG_DFL); /* default action of SIGALRM: terminate */
            struct itimerval it = {{0, 0}, {0, 30000}};
            setitimer(ITIMER_REAL, &it, NULL);
            for (;;) c->all_reduce_sum(c, buf, n, LT_F32, &err);
        }
    } else {
        for (int i = 0; i < 1000000; i++)
            if (c->all_reduce_sum(c, buf, n, LT_F32, &err)) c->abort(c, err.msg);
    }
    fprintf(stderr, "test_comm: rank %d: the job survived a dead peer ('%s')\n", c->rank, mode);
    return 1;
}

/* lt_comm_watch_*: what a root reports, recorded by a stand-in broadcast, replayed to a waiting rank */
static unsigned char g_msg[8][LT_COMM_WATCH_BYTES];
static int g_nmsg, g_next;
static char g_seen[8][1200], g_abort[1200];
static lt_status rec_bcast(lt_comm *c, void *buf, size_t bytes, int root, lt_err *err) {
    if (bytes != LT_COMM_WATCH_BYTES || (c->rank == root ? g_nmsg : g_next) >= 8)
        return lt_fail(err, LT_ERR_INVALID, "stand-in broadcast: %zu bytes, message %d", bytes, g_nmsg);
    if (c->rank == root) {
        memcpy(g_msg[g_nmsg++], buf, bytes);
    } else {
        snprintf(g_seen[g_next], sizeof g_seen[0], "%s", c->waiting_for ? c->waiting_for : "(nothing)");
        memcpy(buf, g_msg[g_next++], bytes);
    }
    return LT_OK;
}
static void rec_abort(lt_comm *c, const char *msg) {
    (void)c;
    snprintf(g_abort, sizeof g_abort, "%s", msg);
}

static void test_watch(void) {
    lt_err err = {{0}};
    /* timeout 2 s: a report is due 0.5 s after the last */
    lt_comm root = {.name = "stand-in", .rank = 0, .world = 2, .timeout_s = 2, .broadcast = rec_bcast};
    lt_comm other = root;
    other.rank = 1;
    other.abort = rec_abort;
    lt_comm_watch w;
    for (int fail = 0; fail < 2; fail++) {
        g_nmsg = g_next = 0;
        LT_CHECK_OK(lt_comm_watch_begin(&w, &root, "exporting out/hf", &err), &err);
        LT_CHECK_OK(lt_comm_watch_report(&w, "tensor 1 of 3 'A'", &err), &err); /* not due yet */
        struct timespec ts = {0, 600 * 1000000L};
        nanosleep(&ts, NULL);
        LT_CHECK_OK(lt_comm_watch_report(&w, "tensor 2 of 3 'B'", &err), &err);
        lt_status st = lt_comm_watch_end(&w, fail ? LT_ERR_IO : LT_OK, &err);
        LT_CHECK(st == (fail ? LT_ERR_IO : LT_OK) && g_nmsg == 3, "root: status %d, %d reports (expected 3)", st, g_nmsg);
        st = lt_comm_watch_wait(&other, 0, &err);
        if (fail)
            LT_CHECK(st == LT_ERR_IO && strstr(err.msg, "rank 0 of 2 failed exporting out/hf"), "waiter: %s",
                     st ? err.msg : "success");
        else
            LT_CHECK(st == LT_OK, "waiter: %s", err.msg);
        LT_CHECK(g_next == 3 && !other.waiting_for && strstr(g_seen[0], "rank 0 (it has not reported yet)") &&
                     strstr(g_seen[1], "rank 0, which was exporting out/hf; its last report: started") &&
                     strstr(g_seen[2], "rank 0, which was exporting out/hf; its last report: tensor 2 of 3 'B'"),
                 "waiter: %d reports; waiting for: '%s' / '%s' / '%s'", g_next, g_seen[0], g_seen[1], g_seen[2]);
    }
    /* a timeout names what the rank was waiting for */
    other.waiting_for = "rank 0, which was exporting out/hf";
    lt_comm_timeout_abort(&other, "broadcast", -1);
    LT_CHECK(strstr(g_abort, "collective broadcast timed out after 2 s") &&
                 strstr(g_abort, "; waiting for rank 0, which was exporting out/hf"),
             "timeout message: %s", g_abort);
}

int main(int argc, char **argv) {
    const char *dead = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "dead=", 5)) dead = argv[i] + 5;
        if (!strcmp(argv[i], "kinds")) { /* for the script: which communicators are built in */
            printf("%s\n", lt_comm_kinds_built());
            return 0;
        }
    }

    lt_comm_env env;
    lt_comm_env_read(&env);
    if (!strcmp(env.source, "none") && !dead) test_env_parse(), test_watch();
    test_shard();

    lt_comm *c = NULL;
    lt_err err = {{0}};
    lt_status st = lt_comm_create("auto", NULL, &c, &err);
    if (st) {
        fprintf(stderr, "test_comm: lt_comm_create: %s\n", err.msg);
        return 1;
    }
    g_rank = c->rank;
    g_world = c->world;
    if (dead) return dead_peer(c, dead);

    const char *ew = getenv("LT_TEST_EXPECT_WORLD");
    if (ew) LT_CHECK(c->world == atoi(ew), "world %d, expected %s", c->world, ew);
    LT_CHECK(c->world == env.world && c->rank == env.rank, "comm rank %d/%d vs environment %d/%d", c->rank, c->world,
             env.rank, env.world);
    LT_CHECK(!strcmp(c->name, env.world > 1 ? "mpi" : "single"), "auto picked '%s' for world %d", c->name, env.world);
    LT_CHECK(c->timeout_s > 0, "timeout %g", c->timeout_s);
    if (env.world > 1) {
        lt_comm *s = NULL;
        st = lt_comm_create("single", NULL, &s, &err);
        LT_CHECK(st == LT_ERR_INVALID && s == NULL, "'single' accepted under %d ranks", env.world);
    }

    const lt_dtype dts[] = {LT_F32, LT_F64, LT_BF16, LT_I64, LT_I32, LT_U8};
    size_t ns[] = {0, 1, 2, (size_t)c->world - 1, (size_t)c->world, (size_t)c->world + 1, 7, 1000, 4099, 100003};
    for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++)
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) test_dtype_n(c, dts[d], ns[i]);
    test_errors(c);
    test_barrier(c);
    test_microbatch_contract(c);
    test_split_and_async(c);
    test_chain(c, 1);
    test_chain(c, 2);

    char name[64];
    snprintf(name, sizeof name, "test_comm[%s rank %d/%d]", c->name, c->rank, c->world);
    int rc = lt_test_finish(name);
    c->destroy(c);
    return rc;
}
