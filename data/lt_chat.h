/*
 * lt_chat.h -- chat templates with loss masks.
 *
 * Built-in renderers reproduce, byte for byte, what transformers'
 * apply_chat_template renders (add_generation_prompt False: lt_chat_render;
 * True: lt_chat_render_prompt; no tools) for the templates of these model
 * families:
 *
 *   llama3    Meta-Llama-3-*-Instruct
 *   llama3.1  Llama-3.1-*-Instruct (system header with "Cutting Knowledge
 *             Date: December 2023\nToday Date: 26 Jul 2024\n\n", always)
 *   chatml    the plain ChatML template (no default system prompt)
 *   qwen2.5   Qwen2.5-*-Instruct (default system prompt "You are Qwen, ...")
 *   qwen3     Qwen3 (the final assistant turn after the last user query gets
 *             the empty "<think>\n\n</think>\n\n" block; reasoning in earlier
 *             assistant turns is dropped)
 *   gemma3    Gemma 3 (system prompt folded into the first user turn, role
 *             "model", roles must alternate)
 *   mistral   Mistral-7B-Instruct-v0.3 (v3 template: the system prompt goes
 *             before the LAST user message only when that message is the last
 *             message -- so a conversation ending with an assistant turn
 *             renders no system prompt, exactly as the template does)
 *   phi3      Phi-3-mini-*-instruct ("<|user|>\n...<|end|>\n"; eos_token after
 *             the last turn unless a generation prompt follows)
 *   phi3.5    Phi-3.5-mini-instruct (phi3, but a system message with empty
 *             content is left out)
 *   phi4-mini Phi-4-mini-instruct ("<|user|>...<|end|>", no newlines)
 *   olmo2     OLMo-2-1124-{7B,13B}-Instruct (Tulu format after bos_token;
 *             every assistant turn ends with eos_token, a "\n" follows all
 *             turns but the last)
 *   llama2    Llama-2-*-chat ("<s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST]
 *             answer </s>"; contents are str.strip()ped, roles must
 *             alternate after the optional system message)
 *   mistral-nemo  Mistral-Nemo-Instruct-2407 (v3-tekken: "[INST]...[/INST]"
 *             without spaces, the answer untrimmed; system prompt as mistral)
 *
 * The templates' own texts are not part of luxtrain; where each one was taken
 * from (repository, path, commit, sha256) is listed in
 * tools/gen_template_fixtures.py.
 *
 * Rendering also records byte spans of what the model is trained to produce:
 * each assistant turn from the end of its header to the end of its
 * end-of-turn marker (content + <|eot_id|> / <|im_end|> / <end_of_turn> /
 * <|end|> / eos_token; for qwen3's last turn the empty think block is inside the span; for
 * mistral and llama2 the space after [/INST] is, since it merges into the
 * first token).
 * lt_chat_tokenize tokenizes the whole rendered text once (add_special = 0:
 * the templates emit BOS themselves, as apply_chat_template(tokenize=True)
 * does) and marks the tokens whose start offset lies in a span.
 */
#ifndef LT_CHAT_H
#define LT_CHAT_H

#include "lt_base.h"
#include "lt_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LT_CHAT_LLAMA3 = 0,
    LT_CHAT_LLAMA31,
    LT_CHAT_CHATML,
    LT_CHAT_QWEN25,
    LT_CHAT_QWEN3,
    LT_CHAT_GEMMA3,
    LT_CHAT_MISTRAL,
    LT_CHAT_PHI3,
    LT_CHAT_PHI35,
    LT_CHAT_PHI4MINI,
    LT_CHAT_OLMO2,
    LT_CHAT_LLAMA2,
    LT_CHAT_MISTRAL_NEMO,
    LT_CHAT_COUNT
} lt_chat_kind;

typedef struct lt_chat_template {
    lt_chat_kind kind;
    char name[16];
    char bos[64]; /* bos_token string the template emits ("" if none) */
    char eos[64]; /* eos_token string (mistral's end of turn) */
} lt_chat_template;

typedef enum { LT_ROLE_SYSTEM = 0, LT_ROLE_USER, LT_ROLE_ASSISTANT } lt_chat_role;

typedef struct lt_chat_msg {
    lt_chat_role role;
    const char *content; /* UTF-8, not necessarily NUL-terminated */
    size_t len;
} lt_chat_msg;

typedef struct lt_chat_span {
    size_t start, end; /* [start, end) byte range of the rendered text */
} lt_chat_span;

typedef struct lt_chat_text {
    char *text; /* NUL-terminated */
    size_t len, cap;
    lt_chat_span *spans;
    size_t n_spans, spans_cap;
} lt_chat_text;
void lt_chat_text_free(lt_chat_text *t);

/* Names: "llama3", "llama3.1", "chatml", "qwen2.5", "qwen3", "gemma3",
 * "mistral", "phi3", "phi3.5", "phi4-mini", "olmo2", "llama2", "mistral-nemo".
 * bos/eos get the family's defaults (override them from
 * tokenizer_config.json with lt_chat_template_set_tokens). */
lt_status lt_chat_template_by_name(const char *name, lt_chat_template *out, lt_err *err);
/* Recognise a tokenizer_config.json chat_template by distinctive substrings;
 * LT_ERR_UNSUPPORTED (asking for --template) if it matches no known one. */
lt_status lt_chat_template_detect(const char *jinja, lt_chat_template *out, lt_err *err);
void lt_chat_template_set_tokens(lt_chat_template *t, const char *bos, const char *eos);
/* The chat_template text of a tokenizer, as transformers 5 loads it: the
 * chat_template.jinja in the folder of cfg_path (a tokenizer_config.json path;
 * it need not exist) when there is one, else the config's "chat_template" (a
 * string, or the entry named "default" of a list of {"name", "template"}).
 * *text: malloc'd, or NULL when there is none (still LT_OK). */
lt_status lt_chat_template_text(const char *cfg_path, char **text, lt_err *err);
const char *lt_chat_template_names(void); /* "llama3, llama3.1, ..." */

/* Render a conversation (no generation prompt). Errors (LT_ERR_INVALID)
 * where the template raises (roles not alternating, system not first, ...),
 * for an empty conversation and for one with no assistant turn. */
lt_status lt_chat_render(const lt_chat_template *t, const lt_chat_msg *msgs, size_t n, lt_chat_text *out,
                         lt_err *err);
/* The same with add_generation_prompt=True: the conversation (usually ending
 * with a user turn; no assistant turn needed) followed by what the template
 * adds to prompt an answer ("<|im_start|>assistant\n", "<|assistant|>", ...;
 * nothing for llama2 / mistral / mistral-nemo, whose templates add none). */
lt_status lt_chat_render_prompt(const lt_chat_template *t, const lt_chat_msg *msgs, size_t n, lt_chat_text *out,
                                lt_err *err);
/* The string that ends an assistant turn (<|eot_id|>, <|im_end|>,
 * <end_of_turn>, <|end|>, or the eos_token). */
const char *lt_chat_end_of_turn(const lt_chat_template *t);

/* Render + tokenize once + mark. ids/offsets are appended to `ids` (cleared
 * first); *mask is (re)allocated to ids->n entries, 1 = target. */
lt_status lt_chat_tokenize(const lt_tokenizer *tok, const lt_chat_template *t, const lt_chat_msg *msgs, size_t n,
                           lt_tok_ids *ids, uint8_t **mask, size_t *mask_cap, lt_err *err);

/* Python's str.strip() (Unicode whitespace), as jinja's |trim. */
void lt_chat_py_strip(const char *s, size_t len, size_t *start, size_t *end);

#ifdef __cplusplus
}
#endif
#endif
