/*
 * test_chat_template_detect.c -- lt_chat_template_detect on the publishers'
 * own chat_template texts (the .jinja files listed with their sources and
 * sha256 in tools/gen_template_fixtures.py), and near variants of them that
 * render differently and so must not be taken for them.
 *
 * The texts are not part of the tree: the test reads them from the folder
 * $LT_CHAT_TEMPLATES (else <shared>/chat-templates) and skips (77) without it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_chat.h"
#include "lt_test.h"

static const char *const FILES[][2] = {
    {"phi-3-mini-4k-instruct.jinja", "phi3"},     {"phi-3.5-mini-instruct.jinja", "phi3.5"},
    {"phi-4-mini-instruct.jinja", "phi4-mini"},   {"olmo-2-1124-instruct.jinja", "olmo2"},
    {"llama-2-7b-chat-hf.jinja", "llama2"},       {"mistral-nemo-instruct-2407.jinja", "mistral-nemo"},
};
#define N_FILES (sizeof FILES / sizeof FILES[0])

/* s with the first occurrence of a replaced by b (NULL if a is absent) */
static char *replace1(const char *s, const char *a, const char *b) {
    const char *p = strstr(s, a);
    if (!p) return NULL;
    size_t la = strlen(a), lb = strlen(b), n = strlen(s);
    char *r = malloc(n - la + lb + 1);
    if (!r) return NULL;
    memcpy(r, s, (size_t)(p - s));
    memcpy(r + (p - s), b, lb);
    memcpy(r + (p - s) + lb, p + la, n - (size_t)(p - s) - la + 1);
    return r;
}

/* a variant of the real text must be refused (or named differently) */
static void check_not(const char *text, const char *a, const char *b, const char *name, const char *why) {
    char *v = replace1(text, a, b);
    LT_CHECK(v != NULL, "%s: '%s' not in the real text", name, a);
    if (!v) return;
    lt_chat_template t;
    lt_err err = {{0}};
    lt_status st = lt_chat_template_detect(v, &t, &err);
    LT_CHECK(st != LT_OK || strcmp(t.name, name) != 0, "%s: a variant (%s) was detected as %s", name, why, name);
    free(v);
}

int main(void) {
    const char *dir = getenv("LT_CHAT_TEMPLATES");
    if (!dir || !*dir) dir = lt_shared_path("chat-templates");
    if (!lt_is_dir(dir)) {
        fprintf(stderr, "skip: no chat template folder %s (set LT_CHAT_TEMPLATES; see tools/gen_template_fixtures.py)\n",
                dir);
        return 77;
    }
    char *text[N_FILES] = {0};
    for (size_t i = 0; i < N_FILES; i++) {
        char path[4096];
        lt_err err = {{0}};
        size_t len = 0;
        LT_CHECK(lt_path_join(path, sizeof path, dir, FILES[i][0]), "path too long");
        if (lt_read_file(path, &text[i], &len, &err)) {
            LT_CHECK(0, "%s", err.msg);
            continue;
        }
        lt_chat_template t;
        LT_CHECK_OK(lt_chat_template_detect(text[i], &t, &err), &err);
        LT_CHECK(!strcmp(t.name, FILES[i][1]), "%s detected as %s, expected %s", FILES[i][0], t.name, FILES[i][1]);
    }
    /* variants that render differently */
    if (text[0]) {
        check_not(text[0], "{% for message in messages %}", "{{ bos_token }}{% for message in messages %}", "phi3",
                  "bos_token first (llama.cpp's Phi-3 variant)");
        check_not(text[0], "{% else %}{{ eos_token }}", "{% else %}", "phi3", "no eos_token after the last turn");
    }
    if (text[1]) check_not(text[1], "{% else %}{{ eos_token }}", "{% else %}", "phi3.5", "no eos_token");
    if (text[2]) {
        check_not(text[2], "{% for message in messages %}",
                  "{{ '<|system|>Your name is Phi.' }}{% for message in messages %}", "phi4-mini", "a vendor preamble");
        check_not(text[2], "{% else %}{{ eos_token }}", "{% endif %}{% if false %}", "phi4-mini", "no eos_token");
    }
    if (text[3]) check_not(text[3], "{{ bos_token }}", "", "olmo2", "the Tulu 3 template without bos_token");
    if (text[4]) {
        check_not(text[4], "{% if message['role'] == 'user' %}",
                  "{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + content.strip() + '\\n<</SYS>>\\n\\n' }}"
                  "{% elif message['role'] == 'user' %}",
                  "llama2", "a branch for later system messages");
        check_not(text[4], "content.strip() + ' [/INST]'", "content.strip() + ' [/INST] '", "llama2",
                  "another space after [/INST]");
    }
    if (text[5]) {
        check_not(text[5], "\"[INST]\" + message[\"content\"] + \"[/INST]\"",
                  "\"[INST] \" + message[\"content\"] + \"[/INST]\"", "mistral-nemo", "v3 spacing");
        check_not(text[5], "{{- message[\"content\"] + eos_token}}", "{{- \" \" + message[\"content\"]|trim + eos_token}}",
                  "mistral-nemo", "v3's trimmed answer");
    }
    for (size_t i = 0; i < N_FILES; i++) free(text[i]);
    return lt_test_finish("test_chat_template_detect");
}
