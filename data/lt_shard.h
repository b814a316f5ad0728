/*
 * lt_shard.h -- HDF5 token shards: the files `luxtrain tokenize` writes and
 * the loader reads. The layout is fixed and documented in docs/shards.md:
 *
 *   root attributes  format = "luxtrain-tokens", format_version = 1,
 *                    vocab_size, tokenizer_sha256, template, num_docs,
 *                    num_tokens, sources (source file names)
 *   /tokens          (num_tokens)  uint32, chunked
 *   /loss_mask       (num_tokens)  uint8, 1 = the token is a target
 *   /doc_offsets     (num_docs+1)  uint64, starts at 0, ends at num_tokens
 *
 * Writing goes to a hidden temporary name next to the shard and is renamed
 * when the shard is complete, so a file named like a shard is always whole.
 * HDF5 calls are made from one thread at a time.
 */
#ifndef LT_SHARD_H
#define LT_SHARD_H

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LT_SHARD_FORMAT "luxtrain-tokens"
#define LT_SHARD_FORMAT_VERSION 1

typedef struct lt_shard_meta {
    int64_t vocab_size;
    char tokenizer_sha256[65];
    char template_name[64];
    char sources[2048]; /* source file names, '\n'-separated */
} lt_shard_meta;

/* ---- writer ---- */
typedef struct lt_shard_writer lt_shard_writer;

/* The hidden temporary name a writer for `path` uses (same folder):
 * DIR/.NAME.tmp-<host>-<pid> (lt_tmp_tag) */
void lt_shard_tmp_path(const char *path, char *out, size_t cap);
/* Create the temporary file for `path` (the hidden name is returned by
 * lt_shard_writer_tmp_path). */
lt_status lt_shard_writer_open(const char *path, const lt_shard_meta *meta, lt_shard_writer **out, lt_err *err);
/* Append one document of n >= 1 tokens (mask[0] is stored as 0). */
lt_status lt_shard_writer_add(lt_shard_writer *w, const int32_t *tokens, const uint8_t *mask, size_t n, lt_err *err);
int64_t lt_shard_writer_num_tokens(const lt_shard_writer *w);
int64_t lt_shard_writer_num_docs(const lt_shard_writer *w);
const char *lt_shard_writer_tmp_path(const lt_shard_writer *w);
/* Write the counts, close and rename to the final path; frees w. */
lt_status lt_shard_writer_finish(lt_shard_writer *w, lt_err *err);
/* Close and delete the temporary file; frees w (NULL is fine). */
void lt_shard_writer_abort(lt_shard_writer *w);

/* ---- reader: a whole shard in memory (5 bytes per token) ---- */
typedef struct lt_shard {
    char path[1024];
    lt_shard_meta meta;
    char format[64];
    int64_t format_version;
    int64_t num_docs, num_tokens;
    uint32_t *tokens;     /* (num_tokens) */
    uint8_t *loss_mask;   /* (num_tokens) */
    uint64_t *doc_offsets; /* (num_docs + 1) */
} lt_shard;

/* Open and validate: format attributes, dataset types and lengths,
 * offsets starting at 0, non-decreasing, ending at num_tokens, mask values
 * 0/1, every token id < vocab_size attribute and < model_vocab (if > 0).
 * Every failure names the shard and what is wrong. */
lt_status lt_shard_read(const char *path, int64_t model_vocab, lt_shard *out, lt_err *err);
void lt_shard_free(lt_shard *s);

#ifdef __cplusplus
}
#endif
#endif
