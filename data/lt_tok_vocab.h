/*
 * lt_tok_vocab.h -- adding tokens to a tokenizer.json exactly as Hugging Face
 * tokenizers 0.23 does (what transformers 5's tokenizer.add_tokens(list)
 * calls), and writing the result back.
 *
 * tokenizers' AddedVocabulary::add_tokens, for each token in order:
 *   - an empty content is ignored;
 *   - a token identical to an added token (content and every flag) is ignored;
 *   - otherwise its id is the id of an added token of that content, else of the
 *     model vocabulary entry of that content, else the next free id (max added
 *     id + 1 when that is >= the model's size, else the model's size); the
 *     added-token entry of that id is created or replaced (so a token already
 *     in the model vocabulary becomes an added token with its model id, and
 *     re-adding an added token replaces its flags), and it counts as added.
 * Flags of a plain string: add_tokens: special false, normalized true;
 * add_special_tokens (special = 1): special true, normalized false;
 * single_word / lstrip / rstrip false.
 * len(tokenizer) (get_vocab_size(with_added_tokens=True)) is the number of
 * distinct strings in the model vocabulary and the added tokens.
 *
 * The new tokenizer.json is the original text with only the top-level
 * "added_tokens" array replaced: every entry sorted by id (tokenizers'
 * serialization), in the file's layout (pretty, 2-space indent, or compact).
 */
#ifndef LT_TOK_VOCAB_H
#define LT_TOK_VOCAB_H

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_tok_added {
    char *content;
    int32_t id;
    uint8_t single_word, lstrip, rstrip, normalized, special;
} lt_tok_added;

/* what happened to each requested token */
enum {
    LT_TOK_ADD_NEW = 0,     /* a new id */
    LT_TOK_ADD_IN_VOCAB,    /* in the model vocabulary: an added token with that id, no new id */
    LT_TOK_ADD_REFLAGGED,   /* an added token of that content with other flags: its flags replaced */
    LT_TOK_ADD_UNCHANGED,   /* identical to an added token (or empty): ignored */
};

typedef struct lt_tok_add_result {
    char *json; /* the new tokenizer.json text */
    size_t json_len;
    int64_t old_len, new_len; /* len(tokenizer) before / after */
    size_t n_added;           /* what add_tokens returns */
    int32_t *ids;             /* per requested token: its id (-1 if empty) */
    int *what;                /* per requested token: LT_TOK_ADD_* */
    lt_tok_added *added;      /* every added token afterwards, sorted by id */
    size_t n_entries;
} lt_tok_add_result;

/* text[0..len): a tokenizer.json's text (name: for messages); tokens[0..n)
 * NUL-terminated UTF-8. res: see above (free with lt_tok_add_result_free). */
lt_status lt_tok_add_tokens(const char *text, size_t len, const char *name, const char *const *tokens, size_t n,
                            int special, lt_tok_add_result *res, lt_err *err);
void lt_tok_add_result_free(lt_tok_add_result *r);

/* The byte range [*begin, *end) of the value of top-level member `key` (the
 * last one if repeated) of the JSON object in text[0..n) (already known to be
 * valid JSON); *found = 0 when absent; LT_ERR_FORMAT (naming `name`) if the
 * text is not an object. */
lt_status lt_json_member_span(const char *text, size_t n, const char *name, const char *key, int *found,
                              size_t *begin, size_t *end, lt_err *err);
/* text with [begin, end) replaced by repl: a malloc'd string (NUL-terminated) */
char *lt_text_splice(const char *text, size_t n, size_t begin, size_t end, const char *repl, size_t rlen,
                     size_t *out_len);
/* Append s as a JSON string (quotes, escapes as serde_json / Python's
 * json.dumps(ensure_ascii=False) write them) to a growable buffer. Returns 0
 * on allocation failure. */
typedef struct lt_sbuf {
    char *s;
    size_t n, cap;
} lt_sbuf;
int lt_sbuf_add(lt_sbuf *b, const char *s, size_t n);
int lt_sbuf_printf(lt_sbuf *b, const char *fmt, ...);
int lt_sbuf_json_string(lt_sbuf *b, const char *s, size_t n);

/* tokenizer_config.json's "added_tokens_decoder" (as transformers 4.x writes
 * it: keys sorted as strings, indent 2) for the added tokens; indent =
 * the member's own indentation in spaces. */
int lt_tok_added_decoder_json(lt_sbuf *b, const lt_tok_added *a, size_t n, int indent);

#ifdef __cplusplus
}
#endif
#endif
