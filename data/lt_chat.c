/* lt_chat.c -- chat template renderers and loss masks (see lt_chat.h). */
#include "lt_chat.h"
#include "lt_unicode.h"

#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------------ */
/* Python str.strip() on UTF-8                                          */

/* decode one code point at s[0..len); returns its byte length (1 for
 * invalid bytes, cp = -1) */
static int utf8_at(const unsigned char *s, size_t len, int32_t *cp) {
    unsigned c = s[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || (size_t)n > len) {
        *cp = -1;
        return 1;
    }
    int32_t v = n == 1 ? (int32_t)c : n == 2 ? (int32_t)(c & 0x1f) : n == 3 ? (int32_t)(c & 0x0f) : (int32_t)(c & 7);
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            *cp = -1;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3f);
    }
    *cp = v;
    return n;
}

void lt_chat_py_strip(const char *str, size_t len, size_t *start, size_t *end) {
    const unsigned char *s = (const unsigned char *)str;
    size_t a = 0, b = len;
    while (a < b) {
        int32_t cp;
        int n = utf8_at(s + a, b - a, &cp);
        if (!lt_uni_py_isspace((uint32_t)cp)) break;
        a += (size_t)n;
    }
    while (b > a) {
        /* step back to the start of the last code point (at most 4 bytes) */
        size_t k = b - 1;
        while (k > a && b - k < 4 && (s[k] & 0xc0) == 0x80) k--;
        int32_t cp;
        int n = utf8_at(s + k, b - k, &cp);
        if (k + (size_t)n != b) { /* not a whole code point ending at b */
            break;
        }
        if (!lt_uni_py_isspace((uint32_t)cp)) break;
        b = k;
    }
    *start = a;
    *end = b;
}

/* ------------------------------------------------------------------ */
/* output buffer                                                        */

void lt_chat_text_free(lt_chat_text *t) {
    if (!t) return;
    free(t->text);
    free(t->spans);
    memset(t, 0, sizeof *t);
}

typedef struct {
    lt_chat_text *t;
    int oom;
    int gen; /* add_generation_prompt */
} out_t;

static void put(out_t *o, const char *s, size_t n) {
    lt_chat_text *t = o->t;
    if (o->oom) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1) cap *= 2;
        char *p = realloc(t->text, cap);
        if (!p) {
            o->oom = 1;
            return;
        }
        t->text = p;
        t->cap = cap;
    }
    memcpy(t->text + t->len, s, n);
    t->len += n;
    t->text[t->len] = 0;
}
static void puts_(out_t *o, const char *s) { put(o, s, strlen(s)); }
static void put_trim(out_t *o, const lt_chat_msg *m) {
    size_t a, b;
    lt_chat_py_strip(m->content, m->len, &a, &b);
    put(o, m->content + a, b - a);
}
static void span_begin(out_t *o) {
    lt_chat_text *t = o->t;
    if (o->oom) return;
    if (t->n_spans == t->spans_cap) {
        size_t cap = t->spans_cap ? 2 * t->spans_cap : 8;
        lt_chat_span *p = realloc(t->spans, cap * sizeof *p);
        if (!p) {
            o->oom = 1;
            return;
        }
        t->spans = p;
        t->spans_cap = cap;
    }
    t->spans[t->n_spans].start = t->len;
    t->spans[t->n_spans].end = t->len;
    t->n_spans++;
}
static void span_end(out_t *o) {
    if (!o->oom) o->t->spans[o->t->n_spans - 1].end = o->t->len;
}

static const char *role_name(lt_chat_role r) {
    return r == LT_ROLE_SYSTEM ? "system" : r == LT_ROLE_USER ? "user" : "assistant";
}

static int has_prefix(const lt_chat_msg *m, const char *p) {
    size_t n = strlen(p);
    return m->len >= n && memcmp(m->content, p, n) == 0;
}
static int has_suffix(const lt_chat_msg *m, const char *p) {
    size_t n = strlen(p);
    return m->len >= n && memcmp(m->content + m->len - n, p, n) == 0;
}
/* first / last occurrence of needle in [s, s+n); -1 if none */
static long find_first(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(s + i, needle, k) == 0) return (long)i;
    return -1;
}
static long find_last(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    if (k > n) return -1;
    for (size_t i = n - k + 1; i-- > 0;)
        if (memcmp(s + i, needle, k) == 0) return (long)i;
    return -1;
}

/* ------------------------------------------------------------------ */
/* templates                                                            */

static const struct {
    const char *name, *bos, *eos;
} known[LT_CHAT_COUNT] = {
    [LT_CHAT_LLAMA3] = {"llama3", "<|begin_of_text|>", "<|eot_id|>"},
    [LT_CHAT_LLAMA31] = {"llama3.1", "<|begin_of_text|>", "<|eot_id|>"},
    [LT_CHAT_CHATML] = {"chatml", "", "<|im_end|>"},
    [LT_CHAT_QWEN25] = {"qwen2.5", "", "<|im_end|>"},
    [LT_CHAT_QWEN3] = {"qwen3", "", "<|im_end|>"},
    [LT_CHAT_GEMMA3] = {"gemma3", "<bos>", "<end_of_turn>"},
    [LT_CHAT_MISTRAL] = {"mistral", "<s>", "</s>"},
    [LT_CHAT_PHI3] = {"phi3", "", "<|endoftext|>"},
    [LT_CHAT_PHI35] = {"phi3.5", "", "<|endoftext|>"},
    [LT_CHAT_PHI4MINI] = {"phi4-mini", "", "<|endoftext|>"},
    [LT_CHAT_OLMO2] = {"olmo2", "<|endoftext|>", "<|endoftext|>"},
    [LT_CHAT_LLAMA2] = {"llama2", "<s>", "</s>"},
    [LT_CHAT_MISTRAL_NEMO] = {"mistral-nemo", "<s>", "</s>"},
};

const char *lt_chat_template_names(void) {
    return "llama3, llama3.1, chatml, qwen2.5, qwen3, gemma3, mistral, phi3, phi3.5, phi4-mini, olmo2, llama2, "
           "mistral-nemo";
}

const char *lt_chat_end_of_turn(const lt_chat_template *t) {
    switch (t->kind) {
    case LT_CHAT_LLAMA3:
    case LT_CHAT_LLAMA31: return "<|eot_id|>";
    case LT_CHAT_CHATML:
    case LT_CHAT_QWEN25:
    case LT_CHAT_QWEN3: return "<|im_end|>";
    case LT_CHAT_GEMMA3: return "<end_of_turn>";
    case LT_CHAT_PHI3:
    case LT_CHAT_PHI35:
    case LT_CHAT_PHI4MINI: return "<|end|>";
    default: return t->eos;
    }
}

lt_status lt_chat_template_by_name(const char *name, lt_chat_template *out, lt_err *err) {
    for (int k = 0; k < LT_CHAT_COUNT; k++)
        if (!strcmp(name, known[k].name)) {
            memset(out, 0, sizeof *out);
            out->kind = (lt_chat_kind)k;
            snprintf(out->name, sizeof out->name, "%s", known[k].name);
            snprintf(out->bos, sizeof out->bos, "%s", known[k].bos);
            snprintf(out->eos, sizeof out->eos, "%s", known[k].eos);
            return LT_OK;
        }
    return lt_fail(err, LT_ERR_INVALID, "unknown chat template '%s' (known: %s)", name, lt_chat_template_names());
}

void lt_chat_template_set_tokens(lt_chat_template *t, const char *bos, const char *eos) {
    /* only templates that print bos_token / eos_token use them */
    lt_chat_kind k = t->kind;
    if (bos && (k == LT_CHAT_LLAMA3 || k == LT_CHAT_LLAMA31 || k == LT_CHAT_GEMMA3 || k == LT_CHAT_MISTRAL ||
                k == LT_CHAT_OLMO2 || k == LT_CHAT_LLAMA2 || k == LT_CHAT_MISTRAL_NEMO))
        snprintf(t->bos, sizeof t->bos, "%s", bos);
    if (eos && (k == LT_CHAT_MISTRAL || k == LT_CHAT_PHI3 || k == LT_CHAT_PHI35 || k == LT_CHAT_PHI4MINI ||
                k == LT_CHAT_OLMO2 || k == LT_CHAT_LLAMA2 || k == LT_CHAT_MISTRAL_NEMO))
        snprintf(t->eos, sizeof t->eos, "%s", eos);
}

lt_status lt_chat_template_detect(const char *j, lt_chat_template *out, lt_err *err) {
#define HAS(s) (strstr(j, (s)) != NULL)
    const char *name = NULL;
    if (HAS("<|start_header_id|>") && HAS("<|eot_id|>")) {
        if (HAS("Cutting Knowledge Date: December 2023") && HAS("26 Jul 2024") && !HAS("strftime_now") &&
            HAS("system_message"))
            name = "llama3.1";
        else if (!HAS("Cutting Knowledge") && HAS("bos_token + content") && HAS("loop.index0 == 0") &&
                 !HAS("tools"))
            name = "llama3";
    } else if (HAS("<|im_start|>") && HAS("<|im_end|>")) {
        if (HAS("</think>") && HAS("last_query_index") && HAS("reasoning_content"))
            name = "qwen3";
        else if (HAS("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.") && !HAS("<think>"))
            name = "qwen2.5";
        else if (!HAS("You are") && !HAS("think") && !HAS("tool") && !HAS("system") &&
                 HAS("'<|im_start|>' + message['role'] + '"))
            name = "chatml";
    } else if (HAS("<start_of_turn>") && HAS("first_user_prefix") && HAS("\"model\"") && HAS("<end_of_turn>")) {
        name = "gemma3";
    } else if (HAS("[INST]") && HAS("[/INST]")) {
        if (HAS("loop.last and system_message is defined") && HAS("[AVAILABLE_TOOLS] [") &&
            HAS("\" \" + message[\"content\"]|trim + eos_token"))
            name = "mistral";
        else if (HAS("loop.last and system_message is defined") && HAS("\"[AVAILABLE_TOOLS][\"") &&
                 HAS("\"[INST]\" + message[\"content\"] + \"[/INST]\"") && HAS("message[\"content\"] + eos_token}}"))
            name = "mistral-nemo";
        else if (HAS("'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content']") &&
                 HAS("bos_token + '[INST] ' + content.strip() + ' [/INST]'") &&
                 HAS("' '  + content.strip() + ' ' + eos_token") && HAS("system_message = false") &&
                 !HAS("message['role'] == 'system'") && !HAS("true == true"))
            name = "llama2";
    } else if (HAS("'<|assistant|>\n' + message['content'] + '<|end|>\n'") && HAS("'<|user|>\n' + message['content']") &&
               HAS("'<|system|>\n' + message['content'] + '<|end|>\n'") &&
               HAS("{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}") && !HAS("bos_token")) {
        name = HAS("message['role'] == 'system' and message['content']") ? "phi3.5" : "phi3";
    } else if (HAS("'<|' + message['role'] + '|>' + message['content'] + '<|end|>'") &&
               HAS("{{ '<|assistant|>' }}{% else %}{{ eos_token }}") && !HAS("bos_token") && !HAS("Your name is")) {
        name = "phi4-mini";
    } else if (HAS("{{ bos_token }}") && HAS("'<|assistant|>\n'  + message['content'] + eos_token + '\n'") &&
               HAS("'<|user|>\n' + message['content'] + '\n'") && HAS("loop.last and add_generation_prompt")) {
        name = "olmo2";
    }
#undef HAS
    if (!name)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "the chat_template in tokenizer_config.json is not one luxtrain knows; name one with "
                       "--template (%s)",
                       lt_chat_template_names());
    return lt_chat_template_by_name(name, out, err);
}

/* ------------------------------------------------------------------ */
/* renderers                                                            */

static lt_status bad(lt_err *err, const char *what) { return lt_fail(err, LT_ERR_INVALID, "%s", what); }

/* The optional leading system message (*sys; NULL: none) and the index of the
 * first turn after it (*first); 1 when the turns from there alternate user,
 * assistant, user, ... (the check the gemma3, mistral and llama2 templates make). */
static int alternating_turns(const lt_chat_msg *m, size_t n, const lt_chat_msg **sys, size_t *first) {
    *sys = n > 0 && m[0].role == LT_ROLE_SYSTEM ? &m[0] : NULL;
    *first = *sys ? 1 : 0;
    for (size_t i = *first; i < n; i++)
        if ((m[i].role == LT_ROLE_USER) != ((i - *first) % 2 == 0)) return 0;
    return 1;
}

#define LLAMA3_PROMPT "<|start_header_id|>assistant<|end_header_id|>\n\n"
#define CHATML_PROMPT "<|im_start|>assistant\n"

static void llama3_turn(out_t *o, const lt_chat_msg *m) {
    puts_(o, "<|start_header_id|>");
    puts_(o, role_name(m->role));
    puts_(o, "<|end_header_id|>\n\n");
    if (m->role == LT_ROLE_ASSISTANT) span_begin(o);
    put_trim(o, m);
    puts_(o, "<|eot_id|>");
    if (m->role == LT_ROLE_ASSISTANT) span_end(o);
}

static lt_status render_llama3(const lt_chat_template *t, const lt_chat_msg *m, size_t n, out_t *o, lt_err *err) {
    puts_(o, t->bos);
    for (size_t i = 0; i < n; i++) llama3_turn(o, &m[i]);
    if (o->gen) puts_(o, LLAMA3_PROMPT);
    (void)err;
    return LT_OK;
}

static lt_status render_llama31(const lt_chat_template *t, const lt_chat_msg *m, size_t n, out_t *o, lt_err *err) {
    puts_(o, t->bos);
    size_t i = 0;
    puts_(o, "<|start_header_id|>system<|end_header_id|>\n\n");
    puts_(o, "Cutting Knowledge Date: December 2023\n");
    puts_(o, "Today Date: 26 Jul 2024\n\n");
    if (n > 0 && m[0].role == LT_ROLE_SYSTEM) {
        put_trim(o, &m[0]);
        i = 1;
    }
    puts_(o, "<|eot_id|>");
    for (; i < n; i++) llama3_turn(o, &m[i]);
    if (o->gen) puts_(o, LLAMA3_PROMPT);
    (void)err;
    return LT_OK;
}

static void chatml_turn(out_t *o, const lt_chat_msg *m) {
    puts_(o, "<|im_start|>");
    puts_(o, role_name(m->role));
    puts_(o, "\n");
    if (m->role == LT_ROLE_ASSISTANT) span_begin(o);
    put(o, m->content, m->len);
    puts_(o, "<|im_end|>");
    if (m->role == LT_ROLE_ASSISTANT) span_end(o);
    puts_(o, "\n");
}

static lt_status render_chatml(const lt_chat_template *t, const lt_chat_msg *m, size_t n, out_t *o, lt_err *err) {
    if (t->kind == LT_CHAT_QWEN25) {
        if (m[0].role == LT_ROLE_SYSTEM) {
            puts_(o, "<|im_start|>system\n");
            put(o, m[0].content, m[0].len);
            puts_(o, "<|im_end|>\n");
        } else {
            puts_(o, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                     "assistant.<|im_end|>\n");
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (t->kind == LT_CHAT_QWEN25 && i == 0 && m[i].role == LT_ROLE_SYSTEM) continue;
        chatml_turn(o, &m[i]);
    }
    if (o->gen) puts_(o, CHATML_PROMPT);
    (void)err;
    return LT_OK;
}

static void put_strip_nl(out_t *o, const char *s, size_t n, int left, int right) {
    size_t a = 0, b = n;
    if (left)
        while (a < b && s[a] == '\n') a++;
    if (right)
        while (b > a && s[b - 1] == '\n') b--;
    put(o, s + a, b - a);
}

static lt_status render_qwen3(const lt_chat_template *t, const lt_chat_msg *m, size_t n, out_t *o, lt_err *err) {
    if (m[0].role == LT_ROLE_SYSTEM) {
        puts_(o, "<|im_start|>system\n");
        put(o, m[0].content, m[0].len);
        puts_(o, "<|im_end|>\n");
    }
    /* index of the last user message that is not a wrapped tool response */
    size_t last_query = n - 1;
    for (size_t k = n; k-- > 0;)
        if (m[k].role == LT_ROLE_USER && !(has_prefix(&m[k], "<tool_response>") && has_suffix(&m[k], "</tool_response>"))) {
            last_query = k;
            break;
        }
    for (size_t i = 0; i < n; i++) {
        if (m[i].role == LT_ROLE_USER || (m[i].role == LT_ROLE_SYSTEM && i > 0)) {
            chatml_turn(o, &m[i]);
        } else if (m[i].role == LT_ROLE_ASSISTANT) {
            const char *c = m[i].content;
            size_t clen = m[i].len;
            const char *r = "";
            size_t rlen = 0;
            long close_first = find_first(c, clen, "</think>");
            if (close_first >= 0) {
                /* reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
                size_t e = (size_t)close_first;
                while (e > 0 && c[e - 1] == '\n') e--;
                long open = find_last(c, e, "<think>");
                size_t s = open >= 0 ? (size_t)open + 7 : 0;
                while (s < e && c[s] == '\n') s++;
                r = c + s;
                rlen = e - s;
                /* content = content.split('</think>')[-1].lstrip('\n') */
                size_t after = (size_t)find_last(c, clen, "</think>") + 8;
                while (after < clen && c[after] == '\n') after++;
                c += after;
                clen -= after;
            }
            puts_(o, "<|im_start|>assistant\n");
            span_begin(o);
            if (i > last_query && (i == n - 1 || rlen > 0)) {
                puts_(o, "<think>\n");
                put_strip_nl(o, r, rlen, 1, 1);
                puts_(o, "\n</think>\n\n");
                put_strip_nl(o, c, clen, 1, 0);
            } else {
                put(o, c, clen);
            }
            puts_(o, "<|im_end|>");
            span_end(o);
            puts_(o, "\n");
        }
    }
    if (o->gen) puts_(o, CHATML_PROMPT);
    (void)t;
    (void)err;
    return LT_OK;
}

static lt_status render_gemma3(const lt_chat_template *t, const lt_chat_msg *m, size_t n, out_t *o, lt_err *err) {
    const lt_chat_msg *sys;
    size_t first;
    if (!alternating_turns(m, n, &sys, &first))
        return bad(err, "Conversation roles must alternate user/assistant/user/assistant/... (gemma3 template)");
    puts_(o, t->bos);
    for (size_t i = first; i < n; i++) {
        size_t k = i - first;
        puts_(o, "<start_of_turn>");
        puts_(o, m[i].role == LT_ROLE_ASSISTANT ? "model" : role_name(m[i].role));
        puts_(o, "\n");
        if (m[i].role == LT_ROLE_ASSISTANT) span_begin(o);
        if (k == 0 && sys) {
            put(o, sys->content, sys->len);
            puts_(o, "\n\n");
        }
        put_trim(o, &m[i]);
        puts_(o, "<end_of_turn>");
        if (m[i].role == LT_ROLE_ASSISTANT) span_end(o);
        puts_(o, "\n");
    }
    if (o->gen) puts_(o, "<start_of_turn>model\n");
    return LT_OK;
}

/* mistral (v3) and mistral-nemo (v3-tekken): the same logic, tekken without
 * the spaces around the contents and without trimming the answer */
static lt_status render_mistral(const lt_chat_template *t, const lt_chat_msg *m, size_t n, out_t *o, lt_err *err) {
    int tekken = t->kind == LT_CHAT_MISTRAL_NEMO;
    const lt_chat_msg *sys;
    size_t first;
    if (!alternating_turns(m, n, &sys, &first))
        return lt_fail(err, LT_ERR_INVALID,
                       "After the optional system message, conversation roles must alternate "
                       "user/assistant/user/assistant/... (%s template)",
                       t->name);
    puts_(o, t->bos);
    for (size_t i = first; i < n; i++) {
        if (m[i].role == LT_ROLE_USER) {
            puts_(o, tekken ? "[INST]" : "[INST] ");
            if (i == n - 1 && sys) {
                put(o, sys->content, sys->len);
                puts_(o, "\n\n");
            }
            put(o, m[i].content, m[i].len);
            puts_(o, "[/INST]");
        } else if (m[i].role == LT_ROLE_ASSISTANT) {
            span_begin(o);
            if (tekken) {
                put(o, m[i].content, m[i].len);
            } else {
                puts_(o, " ");
                put_trim(o, &m[i]);
            }
            puts_(o, t->eos);
            span_end(o);
        } else {
            return lt_fail(err, LT_ERR_INVALID,
                           "Only user and assistant roles are supported, with the exception of an initial optional "
                           "system message! (%s template)",
                           t->name);
        }
    }
    return LT_OK;
}

/* phi3 / phi3.5: "<|role|>\n" content "<|end|>\n"; phi4-mini: the same without
 * the newlines. After the last turn: eos_token, or the generation prompt. */
static lt_status render_phi(const lt_chat_template *t, const lt_chat_msg *m, size_t n, out_t *o, lt_err *err) {
    const char *nl = t->kind == LT_CHAT_PHI4MINI ? "" : "\n";
    for (size_t i = 0; i < n; i++) {
        int asst = m[i].role == LT_ROLE_ASSISTANT;
        if (t->kind == LT_CHAT_PHI35 && m[i].role == LT_ROLE_SYSTEM && m[i].len == 0) continue;
        puts_(o, "<|");
        puts_(o, role_name(m[i].role));
        puts_(o, "|>");
        puts_(o, nl);
        if (asst) span_begin(o);
        put(o, m[i].content, m[i].len);
        puts_(o, "<|end|>");
        if (asst) span_end(o);
        puts_(o, nl);
    }
    if (o->gen) {
        puts_(o, "<|assistant|>");
        puts_(o, nl);
    } else {
        puts_(o, t->eos);
    }
    (void)err;
    return LT_OK;
}

/* olmo2: bos_token, then "<|role|>\n" content "\n"; an assistant turn ends
 * with eos_token (plus "\n" unless it is the last message); the generation
 * prompt comes after the last message. */
static lt_status render_olmo2(const lt_chat_template *t, const lt_chat_msg *m, size_t n, out_t *o, lt_err *err) {
    puts_(o, t->bos);
    for (size_t i = 0; i < n; i++) {
        puts_(o, "<|");
        puts_(o, role_name(m[i].role));
        puts_(o, "|>\n");
        if (m[i].role == LT_ROLE_ASSISTANT) {
            span_begin(o);
            put(o, m[i].content, m[i].len);
            puts_(o, t->eos);
            span_end(o);
            if (i + 1 < n) puts_(o, "\n");
        } else {
            put(o, m[i].content, m[i].len);
            puts_(o, "\n");
        }
        if (i + 1 == n && o->gen) puts_(o, "<|assistant|>\n");
    }
    (void)err;
    return LT_OK;
}

/* llama2: the system message goes into the first turn as
 * "<<SYS>>\n...\n<</SYS>>\n\n"; each turn's content (with that prefix) is
 * str.strip()ped; a user turn is bos_token "[INST] ... [/INST]", an answer
 * " ... " eos_token. A system message after the first, where a user turn is
 * not expected, prints nothing (the template has no branch for it). */
static lt_status render_llama2(const lt_chat_template *t, const lt_chat_msg *m, size_t n, out_t *o, lt_err *err) {
    const lt_chat_msg *sys;
    size_t first;
    if (!alternating_turns(m, n, &sys, &first))
        return bad(err, "Conversation roles must alternate user/assistant/user/assistant/... (llama2 template)");
    for (size_t i = first; i < n; i++) {
        if (m[i].role == LT_ROLE_SYSTEM) continue;
        int asst = m[i].role == LT_ROLE_ASSISTANT;
        /* content = ['<<SYS>>\n' + system + '\n<</SYS>>\n\n'] + message, stripped */
        lt_chat_text c = {0};
        out_t oc = {&c, 0, 0};
        if (i == first && sys) {
            puts_(&oc, "<<SYS>>\n");
            put(&oc, sys->content, sys->len);
            puts_(&oc, "\n<</SYS>>\n\n");
        }
        put(&oc, m[i].content, m[i].len);
        if (oc.oom) {
            lt_chat_text_free(&c);
            o->oom = 1;
            return LT_OK;
        }
        lt_chat_msg whole = {m[i].role, c.text ? c.text : "", c.len};
        if (asst) {
            span_begin(o);
            puts_(o, " ");
            put_trim(o, &whole);
            puts_(o, " ");
            puts_(o, t->eos);
            span_end(o);
        } else {
            puts_(o, t->bos);
            puts_(o, "[INST] ");
            put_trim(o, &whole);
            puts_(o, " [/INST]");
        }
        lt_chat_text_free(&c);
    }
    return LT_OK;
}

static lt_status render(const lt_chat_template *t, const lt_chat_msg *msgs, size_t n, int gen, lt_chat_text *out,
                        lt_err *err) {
    out->len = 0;
    out->n_spans = 0;
    if (n == 0) return bad(err, "empty conversation");
    int has_assistant = 0;
    for (size_t i = 0; i < n; i++) has_assistant |= msgs[i].role == LT_ROLE_ASSISTANT;
    if (!has_assistant && !gen) return bad(err, "conversation has no assistant turn (nothing to train on)");
    out_t o = {out, 0, gen};
    put(&o, "", 0);
    lt_status st;
    switch (t->kind) {
    case LT_CHAT_LLAMA3: st = render_llama3(t, msgs, n, &o, err); break;
    case LT_CHAT_LLAMA31: st = render_llama31(t, msgs, n, &o, err); break;
    case LT_CHAT_CHATML:
    case LT_CHAT_QWEN25: st = render_chatml(t, msgs, n, &o, err); break;
    case LT_CHAT_QWEN3: st = render_qwen3(t, msgs, n, &o, err); break;
    case LT_CHAT_GEMMA3: st = render_gemma3(t, msgs, n, &o, err); break;
    case LT_CHAT_MISTRAL:
    case LT_CHAT_MISTRAL_NEMO: st = render_mistral(t, msgs, n, &o, err); break;
    case LT_CHAT_PHI3:
    case LT_CHAT_PHI35:
    case LT_CHAT_PHI4MINI: st = render_phi(t, msgs, n, &o, err); break;
    case LT_CHAT_OLMO2: st = render_olmo2(t, msgs, n, &o, err); break;
    case LT_CHAT_LLAMA2: st = render_llama2(t, msgs, n, &o, err); break;
    default: return lt_fail(err, LT_ERR_INVALID, "bad template kind %d", (int)t->kind);
    }
    if (st) return st;
    if (o.oom) return lt_fail(err, LT_ERR_NOMEM, "out of memory rendering a conversation");
    return LT_OK;
}

lt_status lt_chat_render(const lt_chat_template *t, const lt_chat_msg *msgs, size_t n, lt_chat_text *out,
                         lt_err *err) {
    return render(t, msgs, n, 0, out, err);
}

lt_status lt_chat_render_prompt(const lt_chat_template *t, const lt_chat_msg *msgs, size_t n, lt_chat_text *out,
                                lt_err *err) {
    return render(t, msgs, n, 1, out, err);
}
