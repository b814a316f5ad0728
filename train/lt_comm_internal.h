/*
 * lt_comm_internal.h -- shared by the communicator implementations
 * (lt_comm.c, lt_comm_mpi.c, lt_comm_nccl.c); not for other modules.
 */
#ifndef LT_COMM_INTERNAL_H
#define LT_COMM_INTERNAL_H

#include "lt_comm.h"

/* Element types a fold understands (F32, F64, I64, I32, BF16). */
int lt_comm_dtype_ok(lt_dtype dt);

/* dst[i] := dst[i] + src[i] for i < m, one add rounded to dt (see lt_comm.h). */
void lt_comm_add(lt_dtype dt, void *dst, const void *src, size_t m);

/* Fill off[] / len[] (world entries each) from counts (NULL = canonical
 * split); LT_ERR_INVALID if they do not sum to n. `what` names the op. */
lt_status lt_comm_layout(const lt_comm *c, const char *what, size_t n, const size_t *counts, size_t *off,
                         size_t *len, lt_err *err);

/* Elements per message / scratch chunk: LT_COMM_CHUNK_ELEMS (a test knob,
 * to exercise the chunking with small vectors) or `dflt`. */
size_t lt_comm_chunk_elems(size_t dflt);

/* Timeout from opts / LT_COMM_TIMEOUT_S / 300. */
double lt_comm_timeout(const lt_comm_opts *opts);

/* lt_comm_timeout_abort and lt_comm_backoff: in lt_comm.h (the trainer polls hybrid chains too) */

/* Print "luxtrain: rank R of W: msg" to stderr (flushed). */
void lt_comm_print_abort(const lt_comm *c, const char *msg);

/* The implementations (lt_comm_create picks one). */
lt_status lt_comm_single_create(const lt_comm_opts *opts, lt_comm **out, lt_err *err);
lt_status lt_comm_mpi_create(const lt_comm_opts *opts, const lt_comm_env *env, lt_comm **out, lt_err *err);
lt_status lt_comm_nccl_create(const lt_comm_opts *opts, const lt_comm_env *env, lt_comm **out, lt_err *err);
/* 1 if MPI is built in and MPI_Initialized says yes. */
int lt_comm_mpi_initialized(void);
/* MPI helpers for the nccl bootstrap (MPI builds only): initialise MPI if
 * needed (*we_init set to 1 if we did), read rank/size, check them against
 * the environment, broadcast bytes from rank 0 with a timeout, abort. */
lt_status lt_comm_mpi_boot(const lt_comm_env *env, int *rank, int *world, int *local_rank, int *local_world,
                           int *we_init, lt_err *err);
lt_status lt_comm_mpi_boot_bcast(void *buf, size_t bytes, double timeout_s, int rank, lt_err *err);
void lt_comm_mpi_world_abort(int code);
void lt_comm_mpi_finalize(void);

#endif
