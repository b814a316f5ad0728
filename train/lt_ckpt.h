/*
 * lt_ckpt.h -- training checkpoints: written atomically, found again after a
 * crash, loaded back.
 *
 * Layout: RUN_DIR/checkpoints/step-000123/ (6+ digits: optimizer steps done)
 *   weights.safetensors    the trainable tensors (F32; full fine-tuning: every
 *                          parameter under its HF name, the f32 master values;
 *                          LoRA: the A/B matrices under PEFT's names)
 *   optimizer.safetensors  AdamW state, "<name>.exp_avg" / "<name>.exp_avg_sq"
 *   loader.bin             the data loader's exact position (opaque bytes)
 *   state.json             {"format": "luxtrain-checkpoint-1", "step",
 *                          "epoch", "total_steps", "tokens_seen", "lr",
 *                          "loss", "mode", "options_hash", "rng": [4 x
 *                          16 hex digits], "loader_bytes", "extra": {...}}
 *   COMPLETE               manifest written last: {"step": N, "files":
 *                          {name: size in bytes, ...}}
 *
 * Writing: every tensor is checked first (NaN/Inf -> LT_ERR_NONFINITE naming
 * the tensor, nothing written); the files go into
 * checkpoints/.tmp-step-000123-<host>-<pid>/ (each written to a temporary name,
 * fsync'd, renamed), then COMPLETE, the folder is fsync'd and renamed to
 * step-000123, and checkpoints/ is fsync'd. A crash at any moment leaves
 * either no step-000123 or a complete one; earlier checkpoints are never
 * touched (except by pruning, after a successful write).
 *
 * Finding: lt_ckpt_find_latest picks the highest step-N folder whose COMPLETE
 * manifest parses and whose files exist with the listed sizes; temporary and
 * damaged folders are ignored.
 *
 * Test hook: with the environment variable LT_CKPT_TEST_KILL_AT=k the writer
 * SIGKILLs its own process at stage k (1 temp folder made, 2 weights written,
 * 3 optimizer written, 4 loader written, 5 state written, 6 COMPLETE written,
 * 7 renamed into place), to simulate crashes. In a sharded write (below) every
 * rank passes stages 1-3 and rank 0 alone 4-7; LT_CKPT_TEST_KILL_RANK=r kills
 * only rank r (unset: whichever rank reaches the stage).
 *
 * Sharded checkpoints (lt_ckpt_write_sharded, a run of W > 1 ranks): instead
 * of weights.safetensors / optimizer.safetensors the folder holds
 *   weights-rank-R-of-W.safetensors    (R, W: 5 digits) rank R's slices of the
 *                                      weights: per tensor it holds a part of,
 *                                      a 1-D F32 entry under the tensor's name
 *                                      with its elements [start, end) (row-major
 *                                      flattened); __metadata__
 *                                      "luxtrain_slices" = JSON {name: [start, end]}
 *   optimizer-rank-R-of-W.safetensors  the same for "<name>.exp_avg" and
 *                                      "<name>.exp_avg_sq"
 *   index.json  {"format": "luxtrain-sharded-1", "world": W,
 *                "weights":   [{"name", "shape": [d0(, d1)], "slices":
 *                               [[file, start, end], ...]}, ...],
 *                "optimizer": [... the same ...]}
 *               tensors in the optimizer's order; the slices of a tensor
 *               cover [0, numel) (they may overlap: replicas hold the same)
 *   loader.bin, state.json, COMPLETE as above (COMPLETE lists every file).
 * What rank R writes: per tensor, the part lt_optim_part_of says it holds
 * ([off, off + len): its optimizer state, and the f32 weights of the same
 * range); without ZeRO (every rank holds everything) the part of the flat
 * range lt_optim_flat_shard(R, W) gives it. No rank writes or gathers the
 * whole model; a rank stages its slices in host memory (its part of the
 * weights, then of m and v) and checks them for NaN / Inf like lt_ckpt_write.
 * Atomicity: rank 0 names the temporary folder (its host and pid, broadcast)
 * and creates it; after an agreement (a W-double all-reduce: which ranks
 * failed) every rank writes its two files into it (temporary name, fsync,
 * rename); after a second agreement rank 0 reads the files' headers, writes
 * index.json, loader.bin, state.json and COMPLETE and renames the folder to
 * step-N; a third agreement gives every rank the same result. A crash of any
 * rank before the rename leaves no step-N (mpirun ends the job; rank 0 never
 * writes COMPLETE without every rank's files), so lt_ckpt_find_latest falls
 * back to the previous checkpoint.
 * Reading (any format): lt_ckpt_count / lt_ckpt_get / lt_ckpt_find list the
 * tensors (data NULL for a sharded checkpoint) and lt_ckpt_read copies any
 * element range of one, touching only the slices that overlap it;
 * lt_ckpt_load_optim loads a run's optimizer at any world size and sharding.
 */
#ifndef LT_CKPT_H
#define LT_CKPT_H

#include "lt_base.h"
#include "lt_safetensors.h"
#include "lt_tlist.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_ckpt_state {
    int64_t step;        /* optimizer steps completed */
    int64_t epoch;       /* epoch in progress (information; the loader bytes are exact) */
    int64_t total_steps; /* the schedule's total steps when saved */
    int64_t tokens_seen;
    double lr;   /* last learning rate used */
    double loss; /* last training loss (may be NaN: written as null) */
    char mode[8];          /* "full" or "lora" */
    char options_hash[17]; /* lt_train_opts_hash */
    lt_rng rng;            /* the trainer's RNG (dropout, ...) */
    const void *loader;    /* loader position bytes (writing: borrowed; open: owned by lt_ckpt) */
    size_t loader_len;
    const char *extra_json; /* optional JSON object stored as "extra" (writing: borrowed; open: owned) */
} lt_ckpt_state;

/* Write checkpoint `st->step` of a run. optim may be NULL (no optimizer
 * state). On success the final folder's path goes to out_dir (may be NULL).
 * keep_last > 0 then prunes older complete checkpoints (lt_ckpt_prune). */
lt_status lt_ckpt_write(const char *run_dir, const lt_ckpt_state *st, const lt_tlist *weights,
                        const lt_tlist *optim, int keep_last, char *out_dir, size_t cap, lt_err *err);

/* Newest complete checkpoint of a run: its folder into out_dir and its step
 * into *step; *step = -1 and out_dir = "" when there is none (LT_OK). */
lt_status lt_ckpt_find_latest(const char *run_dir, char *out_dir, size_t cap, int64_t *step, lt_err *err);

/* Is `dir` a complete checkpoint (manifest present, sizes match)? */
int lt_ckpt_is_complete(const char *dir);

/* The same check, saying what is wrong: not a folder, not a checkpoint (which
 * files are missing), incomplete (no COMPLETE marker), a file missing or of
 * another size than the manifest lists. LT_OK when complete. */
lt_status lt_ckpt_check(const char *dir, lt_err *err);

/* Remove complete checkpoints older than the newest keep_last, and
 * temporary folders left by processes that no longer run. */
lt_status lt_ckpt_prune(const char *run_dir, int keep_last, lt_err *err);

typedef struct lt_ckpt_index lt_ckpt_index;

typedef struct lt_ckpt {
    char dir[4096];
    lt_ckpt_state state; /* loader/extra_json point into this struct's buffers */
    lt_st_file *weights; /* gathered format; NULL for a sharded checkpoint */
    lt_st_file *optim; /* NULL if the checkpoint has no optimizer state (or is sharded) */
    void *loader_buf;
    char *extra_buf;
    int world;           /* sharded: the ranks that wrote it; 0: gathered format */
    lt_ckpt_index *index[2]; /* sharded: weights, optimizer (NULL: none) */
} lt_ckpt;

/* Open a checkpoint folder (must be complete): state, loader bytes and both
 * safetensors files (memory-mapped). */
lt_status lt_ckpt_open(const char *dir, lt_ckpt **out, lt_err *err);
void lt_ckpt_close(lt_ckpt *c);

struct lt_optim;
struct lt_comm;

/* Write checkpoint `st->step` as a sharded checkpoint (above): collective,
 * every rank of comm calls it with the same step; st's other fields are used
 * on rank 0 only. Every rank returns the same status; out_dir: the final
 * folder. keep_last as lt_ckpt_write (rank 0 prunes). */
lt_status lt_ckpt_write_sharded(const char *run_dir, const lt_ckpt_state *st, struct lt_optim *o,
                                struct lt_comm *comm, int keep_last, char *out_dir, size_t cap, lt_err *err);

/* Every rank's status to every rank (collective): LT_OK when all of comm's
 * ranks passed LT_OK; else this rank's own error, or one naming the first
 * rank that failed `what` (its own message says why). */
lt_status lt_ckpt_agree(struct lt_comm *comm, lt_status mine, const char *what, lt_err *err);

enum { LT_CKPT_WEIGHTS = 0, LT_CKPT_OPTIM = 1 };
/* The tensors of kind LT_CKPT_WEIGHTS or LT_CKPT_OPTIM (names, dtype, shape;
 * data is NULL for a sharded checkpoint), in the order written. */
size_t lt_ckpt_count(const lt_ckpt *c, int kind);
const lt_st_tensor *lt_ckpt_get(const lt_ckpt *c, int kind, size_t i);
const lt_st_tensor *lt_ckpt_find(const lt_ckpt *c, int kind, const char *name);
int lt_ckpt_has_optim(const lt_ckpt *c);
/* Elements [start, start + len) of tensor `name` (F32) into dst, read from
 * the slices that overlap them only; the file pages read are dropped
 * afterwards, so streaming a checkpoint keeps its memory bounded. */
lt_status lt_ckpt_read(const lt_ckpt *c, int kind, const char *name, size_t start, size_t len, float *dst,
                       lt_err *err);
/* Set the optimizer's weights and AdamW state from the checkpoint (either
 * format, written at any world size): each rank reads what lt_optim_part_of
 * says it holds. Errors name the tensor. */
lt_status lt_ckpt_load_optim(const lt_ckpt *c, struct lt_optim *o, lt_err *err);

/* ---- describing a checkpoint folder (`luxtrain inspect`) ----
 * What the folder holds and what is wrong with it, for a complete, an
 * incomplete or a damaged checkpoint alike (nothing needs to be there; no
 * tensor data is read, only sizes, index.json, COMPLETE and the safetensors
 * headers). The files: every one COMPLETE lists, every rank file index.json
 * names, and the rank files its "world" implies (weights- and
 * optimizer-rank-R-of-W for each R), then loader.bin, state.json, index.json
 * and COMPLETE. A file's problem says, by name, what is wrong: missing, a
 * size other than COMPLETE lists (truncated), an unreadable safetensors
 * header, or not holding a slice index.json assigns it. */
typedef struct lt_ckpt_file_info {
    char name[96];
    int rank;           /* the rank that wrote it (a rank file); -1: not a rank file */
    int kind;           /* LT_CKPT_WEIGHTS / LT_CKPT_OPTIM for tensor files; -1 otherwise */
    int64_t size;       /* bytes on disk; -1: missing */
    int64_t listed;     /* bytes COMPLETE lists; -1: not listed (or no COMPLETE) */
    int in_index;       /* index.json names it */
    size_t tensors;     /* tensors it holds (a slice of) */
    size_t whole;       /* ... of which whole */
    size_t elements;    /* elements in those slices */
    char first[256];    /* its first slice, "name [start, end)" ("" none) */
    char last[256];     /* its last one */
    char problem[600];  /* "" or what is wrong, naming the file */
} lt_ckpt_file_info;

typedef struct lt_ckpt_info {
    int sharded;          /* index.json present */
    int world;            /* ranks that wrote it (index.json "world"; 1 for the whole form) */
    int zero;             /* ZeRO stage (state.json extra.zero, `train --zero`); -1: not recorded */
    int shard_group;      /* hybrid sharding: ranks per group (extra.shard_group); 0: none */
    int complete;         /* COMPLETE is present and parses */
    int64_t step;         /* state.json's step; -1: unreadable */
    char mode[8];         /* state.json's "full" / "lora"; "" unreadable */
    size_t tensors[2];    /* LT_CKPT_WEIGHTS / LT_CKPT_OPTIM: tensors (index.json or the files) */
    size_t elements[2];   /* their elements */
    lt_ckpt_file_info *files;
    size_t n_files;
    char problem[600];    /* "" or what is wrong with the folder (COMPLETE, index.json) */
    int n_problems;       /* files with a problem, plus one for `problem` */
} lt_ckpt_info;

/* Fill *out (lt_ckpt_info_free frees it). Fails only when dir is not a
 * folder or memory runs out; everything else is reported in *out. */
lt_status lt_ckpt_info_read(const char *dir, lt_ckpt_info *out, lt_err *err);
void lt_ckpt_info_free(lt_ckpt_info *in);

#ifdef __cplusplus
}
#endif
#endif
