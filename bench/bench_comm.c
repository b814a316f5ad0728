/* bench_comm.c -- throughput of the communicator's f32 all-reduce (the
 * rank-order fold of train/lt_comm_mpi.c) against the MPI library's own
 * MPI_Allreduce, on host buffers. Run under mpirun:
 *   mpirun -np 2 build/bench/bench_comm [max_elems]
 * Prints one line per size (rank 0): milliseconds per call and the
 * "bus bandwidth" 2 (W-1)/W * bytes / time of a ring all-reduce.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_comm.h"
#ifdef LT_HAVE_MPI
#include <mpi.h>
#endif

int main(int argc, char **argv) {
    size_t maxn = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : (size_t)1 << 24;
    lt_comm *c;
    lt_err err = {{0}};
    if (lt_comm_create("auto", NULL, &c, &err)) {
        fprintf(stderr, "bench_comm: %s\n", err.msg);
        return 1;
    }
    float *buf = malloc(maxn * sizeof(float));
    for (size_t i = 0; i < maxn; i++) buf[i] = (float)((i * 7 + (size_t)c->rank) % 13) * 0.25f;
    if (c->rank == 0)
        printf("communicator %s, world %d\n%12s %14s %12s %14s %12s\n", c->name, c->world, "elements", "fold ms",
               "fold GB/s", "MPI_Allreduce ms", "GB/s");
    for (size_t n = 1024; n <= maxn; n *= 8) {
        int reps = n <= 65536 ? 50 : n <= (1u << 21) ? 10 : 3;
        double bus = 2.0 * (c->world - 1) / (c->world > 0 ? c->world : 1) * (double)n * sizeof(float);
        c->barrier(c, &err);
        double t0 = lt_now_s();
        for (int r = 0; r < reps; r++)
            if (c->all_reduce_sum(c, buf, n, LT_F32, &err)) c->abort(c, err.msg);
        double tf = (lt_now_s() - t0) / reps;
        double tm = 0;
#ifdef LT_HAVE_MPI
        if (!strcmp(c->name, "mpi")) {
            MPI_Barrier(MPI_COMM_WORLD);
            t0 = lt_now_s();
            for (int r = 0; r < reps; r++) MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            tm = (lt_now_s() - t0) / reps;
        }
#endif
        if (c->rank == 0)
            printf("%12zu %14.3f %12.3f %14.3f %12.3f\n", n, tf * 1e3, bus / tf / 1e9, tm * 1e3,
                   tm > 0 ? bus / tm / 1e9 : 0.0);
    }
    free(buf);
    c->destroy(c);
    return 0;
}
