/*
 * lt_loader.h -- the shard loader: token shards (lt_shard.h) -> packed
 * training batches (lt_batch, lt_model.h conventions).
 *
 * Every shard is read whole into memory (5 bytes per token) and validated
 * when the loader opens (format, dataset lengths, monotone offsets, every
 * token id < the model's vocabulary), so no bad id can reach a kernel.
 *
 * An epoch visits every document once, in an order shuffled from
 * (seed, epoch) -- the same on every machine -- or in file order without
 * shuffling. Documents are packed whole, greedily and in that order, into
 * sequences of T tokens; a document longer than T is cut to its first T
 * tokens (and counted). The rest of a sequence is padding (one-token
 * documents of id 0 with target -1). A global batch is world_size * B
 * sequences: rank r gets sequences [r*B, (r+1)*B), so ranks never overlap
 * and together cover every packed sequence. The last batch of an epoch may
 * hold fewer sequences (the missing rows are all padding); it never takes
 * documents from the next epoch.
 *
 * targets[t] = tokens[t+1] where t+1 is in the same document and
 * loss_mask[t+1] = 1, else -1.
 *
 * A mix of shard sets (docs/training.md, "Mixing corpora and instructions"):
 * when any path has a suffix, PATTERN:W (a weight) or PATTERN:xN (an epoch
 * count), every path is one set -- files, folders or glob patterns, several
 * separated by ',' -- and an epoch is a "mix epoch": its document order
 * takes, one document at a time, from the set whose document tokens so far
 * are the smallest fraction of its target for the epoch (ties: the earlier
 * set). Targets: weights split the tokens of all sets together in the
 * weights' proportions; epoch counts take every document of a set N times
 * (a set without a suffix among epoch counts: x1). Each set walks through
 * its own passes, every pass a fresh shuffle from (seed, set, pass), and
 * carries its position over to the next mix epoch. Packing, ranks and
 * batches then work as above on that order. Sets must share tokenizer_sha256
 * and vocab_size. The loss mask of each shard applies as it is (raw text:
 * every token after the first; chats: the assistant turns).
 */
#ifndef LT_LOADER_H
#define LT_LOADER_H

#include "lt_base.h"
#include "lt_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_loader_opts {
    int B, T;              /* this rank's micro-batch: B sequences of T tokens */
    int rank, world_size;  /* data-parallel split (0, 1 for one process) */
    uint64_t seed;         /* shuffling seed */
    int shuffle;           /* 1: shuffle documents every epoch; 0: file order */
    int64_t model_vocab;   /* token ids must be < this (0: shard vocab_size only) */
} lt_loader_opts;

/* The exact position, to save with a checkpoint and restore (plain data). */
typedef struct lt_loader_state {
    uint64_t magic;     /* LT_LOADER_STATE_MAGIC */
    uint64_t seed;
    int64_t epoch;      /* 0-based */
    int64_t doc_pos;    /* next document in the epoch's order */
    int64_t batches;    /* batches produced so far, all epochs */
    int64_t n_docs;     /* checks on restore: same data ... */
    int32_t T, global_B; /* ... and same packing */
} lt_loader_state;
#define LT_LOADER_STATE_MAGIC 0x31646c746c78756cull /* "luxtldl1" */

typedef struct lt_loader_batch {
    lt_batch batch;          /* B x T arrays owned by the loader (valid until the next call) */
    int n_seqs;              /* sequences of this rank holding documents (rest: padding) */
    int global_seqs;         /* sequences in the whole global batch */
    int64_t n_targets;       /* target tokens on this rank */
    int64_t global_targets;  /* target tokens of the global batch (the loss normaliser) */
    int64_t n_tokens;        /* document tokens on this rank */
    int64_t epoch;           /* epoch this batch belongs to */
    int last_in_epoch;       /* 1 if this batch ends the epoch */
} lt_loader_batch;

typedef struct lt_loader lt_loader;

#define LT_LOADER_MAX_SETS 64

/* one set of a mix, as given and as achieved so far */
typedef struct lt_loader_set {
    const char *spec;    /* the --data entry (owned by the loader) */
    double weight;       /* PATTERN:W, else 0 */
    double epochs;       /* PATTERN:xN (or 1 for a set without a suffix), else 0 */
    double target_share; /* the set's share of the document tokens of a mix epoch */
    int64_t n_docs, n_tokens, n_targets;           /* the set's shards (tokens cut to T) */
    int64_t seen_docs, seen_tokens, seen_targets;  /* in the global batches produced so far */
} lt_loader_set;

/* paths: shard files, or folders (all files named <prefix>*.h5 in them,
 * sorted; prefix NULL = "train-"). */
lt_status lt_loader_open(const char *const *paths, int n_paths, const char *prefix, const lt_loader_opts *o,
                         lt_loader **out, lt_err *err);
void lt_loader_free(lt_loader *L);

/* The next batch (an epoch boundary moves to the next epoch's order). */
lt_status lt_loader_next(lt_loader *L, lt_loader_batch *out, lt_err *err);

void lt_loader_get_state(const lt_loader *L, lt_loader_state *s);
lt_status lt_loader_set_state(lt_loader *L, const lt_loader_state *s, lt_err *err);
/* A mix's position goes beyond lt_loader_state: every set's place in its
 * passes and the counts achieved (lt_loader_mix_state_size bytes; 0 for a
 * loader that is not a mix). Restore with both parts. */
size_t lt_loader_mix_state_size(const lt_loader *L);
void lt_loader_get_mix_state(const lt_loader *L, void *buf);
lt_status lt_loader_set_state_mix(lt_loader *L, const lt_loader_state *s, const void *mix, size_t mix_len,
                                  lt_err *err);

/* 1 when any of the paths has a :W / :xN suffix (or a malformed one) */
int lt_loader_is_mix(const char *const *paths, int n);
int lt_loader_num_sets(const lt_loader *L); /* 0: not a mix */
void lt_loader_get_set(const lt_loader *L, int s, lt_loader_set *out);

int64_t lt_loader_num_docs(const lt_loader *L);
int64_t lt_loader_num_tokens(const lt_loader *L);
int64_t lt_loader_num_truncated(const lt_loader *L);    /* documents longer than T (cut every epoch) */
/* global batches in epoch 0 (a shuffled epoch packs differently and can
 * differ by a batch or so) */
int64_t lt_loader_batches_per_epoch(const lt_loader *L);
int lt_loader_num_shards(const lt_loader *L);
/* Compare the shards' tokenizer_sha256 with the SHA-256 of the tokenizer.json
 * at `tok` (the file or its folder): LT_ERR_INVALID naming the first shard,
 * the tokenizer file and both hashes when they differ (train / eval refuse
 * unless --allow-tokenizer-mismatch). *checked = 0 (LT_OK) when `tok` holds no
 * tokenizer.json, 1 otherwise. */
lt_status lt_loader_check_tokenizer(const lt_loader *L, const char *tok, int *checked, lt_err *err);
const char *lt_loader_shard_path(const lt_loader *L, int i);

#ifdef __cplusplus
}
#endif
#endif
