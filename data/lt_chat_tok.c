/* lt_chat_tok.c -- render + tokenize + loss mask (see lt_chat.h); kept apart
 * from the renderers so that they link without the tokenizer. */
#include <stdlib.h>

#include "lt_chat.h"

lt_status lt_chat_tokenize(const lt_tokenizer *tok, const lt_chat_template *t, const lt_chat_msg *msgs, size_t n,
                           lt_tok_ids *ids, uint8_t **mask, size_t *mask_cap, lt_err *err) {
    lt_chat_text txt = {0};
    lt_status st = lt_chat_render(t, msgs, n, &txt, err);
    if (st) {
        lt_chat_text_free(&txt);
        return st;
    }
    ids->n = 0;
    st = lt_tok_encode(tok, txt.text, txt.len, 0, ids, err);
    if (st) {
        lt_chat_text_free(&txt);
        return st;
    }
    if (*mask_cap < ids->n + 1) {
        uint8_t *p = realloc(*mask, ids->n + 1);
        if (!p) {
            lt_chat_text_free(&txt);
            return lt_fail(err, LT_ERR_NOMEM, "out of memory");
        }
        *mask = p;
        *mask_cap = ids->n + 1;
    }
    size_t s = 0;
    for (size_t i = 0; i < ids->n; i++) {
        int64_t off = ids->offsets[i];
        uint8_t v = 0;
        if (off >= 0) {
            while (s < txt.n_spans && txt.spans[s].end <= (size_t)off) s++;
            v = s < txt.n_spans && (size_t)off >= txt.spans[s].start && (size_t)off < txt.spans[s].end;
        }
        (*mask)[i] = v;
    }
    if (ids->n) (*mask)[0] = 0;
    lt_chat_text_free(&txt);
    return LT_OK;
}
