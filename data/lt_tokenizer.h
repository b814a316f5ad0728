/*
 * lt_tokenizer.h -- a Hugging Face tokenizer.json, implemented exactly.
 *
 * Models: byte-level BPE with regex pre-tokenization (Llama 3.x, Qwen2/2.5/3,
 * GPT-2 style; ignore_merges, NFC) and SentencePiece-style BPE with byte
 * fallback (Llama 2, Mistral, Gemma: Prepend/Replace normalizers, Metaspace,
 * Split on spaces). Added/special tokens are matched before normalization,
 * longest first, honouring their flags (single_word, lstrip, rstrip,
 * normalized, special). Anything else in tokenizer.json is refused with a
 * message naming the feature.
 *
 * Invalid UTF-8 in the input: replaced by U+FFFD, one per maximal invalid
 * subpart (what Python's bytes.decode("utf-8", "replace") and Rust's
 * String::from_utf8_lossy do), then tokenized; so the ids equal the reference
 * run on the lossily decoded string.
 *
 * A loaded tokenizer is immutable: lt_tok_encode may be called from many
 * threads at once.
 */
#ifndef LT_TOKENIZER_H
#define LT_TOKENIZER_H

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_tokenizer lt_tokenizer;

/* Growable output of lt_tok_encode (appended to; free with lt_tok_ids_free).
 * offsets[i] = byte offset in the input text where token i starts, or -1 for
 * tokens that stand for no input text (BOS/EOS added by the post-processor). */
typedef struct lt_tok_ids {
    int32_t *ids;
    int64_t *offsets;
    size_t n, cap;
} lt_tok_ids;
void lt_tok_ids_free(lt_tok_ids *v);
lt_status lt_tok_ids_push(lt_tok_ids *v, int32_t id, int64_t offset, lt_err *err);

/* path: a tokenizer.json, or a folder holding one. */
lt_status lt_tok_load(const char *path, lt_tokenizer **out, lt_err *err);
void lt_tok_free(lt_tokenizer *t);

/* Encode len bytes of text and append to out. add_special: apply the
 * post-processor (e.g. the BOS that Llama tokenizers add), as
 * tokenizers' encode(text, add_special_tokens=...) does. */
lt_status lt_tok_encode(const lt_tokenizer *t, const char *text, size_t len, int add_special, lt_tok_ids *out,
                        lt_err *err);

/* Decode ids to a malloc'd UTF-8 string (as tokenizers' decode(ids,
 * skip_special_tokens=skip_special)). */
lt_status lt_tok_decode(const lt_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **text,
                        size_t *len, lt_err *err);

/* Number of ids (max id + 1, added tokens included). */
int32_t lt_tok_vocab_size(const lt_tokenizer *t);
/* id of a token string (vocabulary or added token), -1 if absent */
int32_t lt_tok_token_to_id(const lt_tokenizer *t, const char *token);
/* token string of an id (NULL if out of range) */
const char *lt_tok_id_to_token(const lt_tokenizer *t, int32_t id);
/* 1 if id is an added token flagged special */
int lt_tok_is_special(const lt_tokenizer *t, int32_t id);
/* The ids the post-processor adds before / after a single sequence
 * (e.g. BOS for llama); returns the count (<= cap). */
int lt_tok_prefix_ids(const lt_tokenizer *t, int32_t *ids, int cap);
int lt_tok_suffix_ids(const lt_tokenizer *t, int32_t *ids, int cap);
/* hex SHA-256 of the tokenizer.json bytes (65 bytes with NUL) */
const char *lt_tok_sha256(const lt_tokenizer *t);

#ifdef __cplusplus
}
#endif
#endif
