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
 * 7 renamed into place), to simulate crashes.
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

typedef struct lt_ckpt {
    char dir[4096];
    lt_ckpt_state state; /* loader/extra_json point into this struct's buffers */
    lt_st_file *weights;
    lt_st_file *optim; /* NULL if the checkpoint has no optimizer state */
    void *loader_buf;
    char *extra_buf;
} lt_ckpt;

/* Open a checkpoint folder (must be complete): state, loader bytes and both
 * safetensors files (memory-mapped). */
lt_status lt_ckpt_open(const char *dir, lt_ckpt **out, lt_err *err);
void lt_ckpt_close(lt_ckpt *c);

#ifdef __cplusplus
}
#endif
#endif
