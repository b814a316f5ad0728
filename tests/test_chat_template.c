/*
 * test_chat_template.c -- the built-in chat template renderers against
 * transformers' apply_chat_template (tests/fixtures/templates/ files, from
 * tools/gen_template_fixtures.py), template detection on the real
 * tokenizer_config.json files, and loss masks with real tokenizers: the
 * tokens marked as targets, decoded run by run, are exactly each assistant
 * turn's content and end-of-turn marker, and nothing else is marked.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_chat.h"
#include "lt_test.h"
#include "lt_tok_vocab.h"
#include "lt_tokenizer.h"

static const char *TEMPLATES[] = {"llama3", "llama3.1", "chatml",    "qwen2.5", "qwen3",  "gemma3",      "mistral",
                                  "phi3",   "phi3.5",   "phi4-mini", "olmo2",   "llama2", "mistral-nemo"};
#define N_TEMPLATES (sizeof TEMPLATES / sizeof TEMPLATES[0])

static cJSON *load_json(const char *path) {
    char *data = NULL;
    size_t len = 0;
    lt_err err;
    if (lt_read_file(path, &data, &len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(data, len);
    free(data);
    return j;
}

static int to_msgs(cJSON *arr, lt_chat_msg *m, int cap) {
    int n = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (n == cap) return -1;
        const char *role = cJSON_GetObjectItem(it, "role")->valuestring;
        const char *content = cJSON_GetObjectItem(it, "content")->valuestring;
        m[n].role = !strcmp(role, "system") ? LT_ROLE_SYSTEM : !strcmp(role, "user") ? LT_ROLE_USER : LT_ROLE_ASSISTANT;
        m[n].content = content;
        m[n].len = strlen(content);
        n++;
    }
    return n;
}

/* Which real tokenizer checks each template's masks (rendering does not
 * depend on the vocabulary; the markers must be special tokens of it). */
static const char *mask_tokenizer(const char *tpl) {
    if (!strncmp(tpl, "llama3", 6)) return "tokenizers/llama3_1/tokenizer.json";
    if (!strcmp(tpl, "gemma3")) return "tokenizers/gemma3/tokenizer.json";
    /* <s>, </s>, SentencePiece BPE ([INST] is plain text there) */
    if (!strcmp(tpl, "mistral") || !strcmp(tpl, "llama2") || !strcmp(tpl, "mistral-nemo"))
        return "tokenizers/llama2/tokenizer.json";
    /* qwen's byte-level BPE: <|endoftext|> (olmo2's bos/eos) is special there;
     * phi's <|user|> / <|end|> markers are plain text */
    return "tokenizers/qwen3/tokenizer.json";
}

/* The markers that are special tokens in the model's own tokenizer but plain
 * text in the stand-in above (Phi's <|user|> / <|end|> are added special
 * tokens of its tokenizer, [INST] / [/INST] control tokens of tekken): the
 * stand-in gets them added as special tokens (like HF's add_special_tokens),
 * so that, as in the real tokenizer, no token straddles a turn's boundary. */
static const char *const PHI_MARKERS[] = {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"};
static const char *const OLMO_MARKERS[] = {"<|system|>", "<|user|>", "<|assistant|>"};
static const char *const INST_MARKERS[] = {"[INST]", "[/INST]"};

static lt_status load_mask_tokenizer(const char *tpl, const char *path, lt_tokenizer **tok, lt_err *err) {
    const char *const *mk = NULL;
    size_t n = 0;
    if (!strncmp(tpl, "phi", 3)) mk = PHI_MARKERS, n = sizeof PHI_MARKERS / sizeof *PHI_MARKERS;
    else if (!strcmp(tpl, "olmo2")) mk = OLMO_MARKERS, n = sizeof OLMO_MARKERS / sizeof *OLMO_MARKERS;
    else if (!strcmp(tpl, "mistral-nemo")) mk = INST_MARKERS, n = sizeof INST_MARKERS / sizeof *INST_MARKERS;
    if (!mk) return lt_tok_load(path, tok, err);
    char *text = NULL;
    size_t len = 0;
    lt_status st = lt_read_file(path, &text, &len, err);
    if (st) return st;
    lt_tok_add_result res;
    st = lt_tok_add_tokens(text, len, path, mk, n, 1, &res, err);
    free(text);
    if (st) return st;
    char out[4096], file[64];
    snprintf(file, sizeof file, "%s-tokenizer.json", tpl);
    if (!lt_path_join(out, sizeof out, lt_test_tmpdir("test_chat_template"), file)) {
        lt_tok_add_result_free(&res);
        return lt_fail(err, LT_ERR_INVALID, "scratch path too long");
    }
    st = lt_write_file_atomic(out, res.json, res.json_len, err);
    lt_tok_add_result_free(&res);
    return st ? st : lt_tok_load(out, tok, err);
}

/* Leading whitespace of a turn can be inside a token that starts before the
 * span (e.g. qwen's "\n\n\n" right after "assistant"): such a token is not a
 * target (marking goes by a token's start offset), so compare without it. */
static void strip_spaces(const char **s, size_t *n) {
    while (*n && ((*s)[0] == ' ' || (*s)[0] == '\n' || (*s)[0] == '\t')) (*s)++, (*n)--;
}

/* marked runs decoded == the rendered spans (modulo a leading space that
 * SentencePiece decoders drop at the start of a decode; see strip_spaces) */
static void check_masks(const char *tpl_name, const lt_chat_template *tpl, const lt_tokenizer *tok, const char *case_name,
                        const lt_chat_msg *m, int n) {
    lt_err err = {{0}};
    lt_chat_text txt = {0};
    if (lt_chat_render(tpl, m, (size_t)n, &txt, &err)) return;
    lt_tok_ids ids = {0};
    uint8_t *mask = NULL;
    size_t mcap = 0;
    LT_CHECK_OK(lt_chat_tokenize(tok, tpl, m, (size_t)n, &ids, &mask, &mcap, &err), &err);
    /* the whole text tokenized plainly gives the same ids (tokenized once) */
    lt_tok_ids ref = {0};
    LT_CHECK_OK(lt_tok_encode(tok, txt.text, txt.len, 0, &ref, &err), &err);
    LT_CHECK(ref.n == ids.n && !memcmp(ref.ids, ids.ids, ids.n * sizeof(int32_t)), "%s/%s: ids differ from a plain encode",
             tpl_name, case_name);
    /* no BOS twice */
    if (ids.n > 1) LT_CHECK(ids.ids[0] != ids.ids[1] || !lt_tok_is_special(tok, ids.ids[0]), "%s/%s: doubled special at start", tpl_name, case_name);
    size_t run = 0, i = 0;
    while (i < ids.n) {
        if (!mask[i]) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < ids.n && mask[j]) j++;
        char *dec = NULL;
        size_t dlen = 0;
        LT_CHECK_OK(lt_tok_decode(tok, ids.ids + i, j - i, 0, &dec, &dlen, &err), &err);
        LT_CHECK(run < txt.n_spans, "%s/%s: more marked runs than assistant turns", tpl_name, case_name);
        if (run < txt.n_spans && dec) {
            const char *want = txt.text + txt.spans[run].start;
            size_t wlen = txt.spans[run].end - txt.spans[run].start;
            const char *got = dec;
            size_t glen = dlen;
            strip_spaces(&want, &wlen);
            strip_spaces(&got, &glen);
            LT_CHECK(wlen == glen && !memcmp(want, got, wlen), "%s/%s: marked run %zu decodes to '%.*s', expected '%.*s'",
                     tpl_name, case_name, run, (int)glen, got, (int)wlen, want);
        }
        free(dec);
        run++;
        i = j;
    }
    LT_CHECK(run == txt.n_spans, "%s/%s: %zu marked runs for %zu assistant turns", tpl_name, case_name, run, txt.n_spans);
    /* every assistant turn ends with the end-of-turn token, marked */
    lt_tok_ids_free(&ids);
    lt_tok_ids_free(&ref);
    free(mask);
    lt_chat_text_free(&txt);
}

int main(void) {
    lt_err err = {{0}};
    int have_tok = getenv("LT_NO_TOKENIZER") == NULL;
    for (size_t k = 0; k < N_TEMPLATES; k++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tests/fixtures/templates/%s.json", TEMPLATES[k]);
        cJSON *doc = load_json(lt_src_path(rel));
        LT_CHECK(doc != NULL, "cannot load %s", rel);
        if (!doc) continue;
        lt_chat_template tpl;
        LT_CHECK_OK(lt_chat_template_by_name(TEMPLATES[k], &tpl, &err), &err);
        const char *bos = cJSON_GetObjectItem(doc, "bos_token")->valuestring;
        const char *eos = cJSON_GetObjectItem(doc, "eos_token")->valuestring;
        lt_chat_template_set_tokens(&tpl, bos, eos);
        lt_tokenizer *tok = NULL;
        if (have_tok) {
            const char *tp = lt_shared_path(mask_tokenizer(TEMPLATES[k]));
            if (!lt_file_exists(tp)) {
                /* no ../shared at all (a user's clone, the GPU machine): masks
                 * are not checked; a shared folder missing a file fails */
                fprintf(stderr, "note: no tokenizer %s: masks not checked\n", tp);
                LT_CHECK(!lt_is_dir(lt_shared_path("tokenizers")), "tokenizer %s missing from the shared folder", tp);
            } else {
                LT_CHECK_OK(load_mask_tokenizer(TEMPLATES[k], tp, &tok, &err), &err);
            }
        }
        int n_cases = 0, n_prompts = 0;
        cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "cases")) {
            const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
            lt_chat_msg m[16];
            int n = to_msgs(cJSON_GetObjectItem(c, "messages"), m, 16);
            lt_chat_text out = {0};
            lt_status st = lt_chat_render(&tpl, m, (size_t)n, &out, &err);
            cJSON *want = cJSON_GetObjectItem(c, "text");
            if (want) {
                LT_CHECK(st == LT_OK, "%s/%s: render failed: %s", TEMPLATES[k], name, err.msg);
                if (st == LT_OK) {
                    LT_CHECK(out.len == strlen(want->valuestring) && !strcmp(out.text, want->valuestring),
                             "%s/%s: rendered\n[%s]\nexpected\n[%s]", TEMPLATES[k], name, out.text, want->valuestring);
                    /* spans: one per assistant turn, in order, inside the text */
                    int n_asst = 0;
                    for (int i = 0; i < n; i++) n_asst += m[i].role == LT_ROLE_ASSISTANT;
                    LT_CHECK((int)out.n_spans == n_asst, "%s/%s: %zu spans for %d assistant turns", TEMPLATES[k], name,
                             out.n_spans, n_asst);
                    for (size_t s = 0; s < out.n_spans; s++) {
                        LT_CHECK(out.spans[s].start < out.spans[s].end && out.spans[s].end <= out.len &&
                                     (s == 0 || out.spans[s - 1].end <= out.spans[s].start),
                                 "%s/%s: span %zu bad", TEMPLATES[k], name, s);
                        /* a span ends with the end-of-turn marker */
                        const char *eot = lt_chat_end_of_turn(&tpl);
                        size_t el = strlen(eot);
                        LT_CHECK(out.spans[s].end - out.spans[s].start >= el &&
                                     !memcmp(out.text + out.spans[s].end - el, eot, el),
                                 "%s/%s: span %zu does not end with %s", TEMPLATES[k], name, s, eot);
                    }
                }
                if (tok && st == LT_OK) check_masks(TEMPLATES[k], &tpl, tok, name, m, n);
            } else {
                LT_CHECK(st != LT_OK, "%s/%s: the template raises (%s) but luxtrain rendered it", TEMPLATES[k], name,
                         cJSON_GetObjectItem(c, "error")->valuestring);
            }
            /* add_generation_prompt=True on the first prompt_messages messages */
            cJSON *pn = cJSON_GetObjectItem(c, "prompt_messages");
            if (pn) {
                cJSON *pwant = cJSON_GetObjectItem(c, "prompt_text");
                lt_status pst = lt_chat_render_prompt(&tpl, m, (size_t)pn->valueint, &out, &err);
                if (pwant) {
                    LT_CHECK(pst == LT_OK, "%s/%s: prompt render failed: %s", TEMPLATES[k], name, err.msg);
                    if (pst == LT_OK)
                        LT_CHECK(out.len == strlen(pwant->valuestring) && !strcmp(out.text, pwant->valuestring),
                                 "%s/%s: prompt rendered\n[%s]\nexpected\n[%s]", TEMPLATES[k], name, out.text,
                                 pwant->valuestring);
                } else {
                    LT_CHECK(pst != LT_OK, "%s/%s: the template raises (%s) for the prompt but luxtrain rendered it",
                             TEMPLATES[k], name, cJSON_GetObjectItem(c, "prompt_error")->valuestring);
                }
                n_prompts++;
            }
            lt_chat_text_free(&out);
            n_cases++;
        }
        LT_CHECK(n_cases >= 10, "%s: only %d cases", TEMPLATES[k], n_cases);
        /* fixtures written before prompts were recorded have none */
        if (k >= 7 || !strcmp(TEMPLATES[k], "llama3") || !strcmp(TEMPLATES[k], "qwen3") || !strcmp(TEMPLATES[k], "qwen2.5") ||
            !strcmp(TEMPLATES[k], "gemma3") || !strcmp(TEMPLATES[k], "chatml"))
            LT_CHECK(n_prompts >= 10, "%s: only %d generation prompts", TEMPLATES[k], n_prompts);
        lt_tok_free(tok);
        cJSON_Delete(doc);
    }

    /* no assistant turn / empty conversation: refused */
    {
        lt_chat_template tpl;
        lt_chat_template_by_name("qwen3", &tpl, &err);
        lt_chat_msg m[1] = {{LT_ROLE_USER, "x", 1}};
        lt_chat_text out = {0};
        LT_CHECK(lt_chat_render(&tpl, m, 1, &out, &err) == LT_ERR_INVALID, "no assistant turn accepted");
        LT_CHECK(lt_chat_render(&tpl, m, 0, &out, &err) == LT_ERR_INVALID, "empty conversation accepted");
        lt_chat_text_free(&out);
        LT_CHECK(lt_chat_template_by_name("vicuna", &tpl, &err) == LT_ERR_INVALID, "unknown name accepted");
    }

    /* detection from the real tokenizer_config.json files */
    const char *det[][2] = {{"tokenizers/llama3_1/tokenizer_config.json", "llama3"},
                            {"tokenizers/qwen3/tokenizer_config.json", "qwen3"},
                            {"tokenizers/gemma3/tokenizer_config.json", "gemma3"}};
    for (int i = 0; i < 3; i++) {
        cJSON *cfg = load_json(lt_shared_path(det[i][0]));
        if (!cfg) {
            fprintf(stderr, "note: %s absent, detection not checked\n", det[i][0]);
            LT_CHECK(!lt_is_dir(lt_shared_path("tokenizers")), "%s missing from the shared folder", det[i][0]);
            continue;
        }
        lt_chat_template tpl;
        cJSON *ct = cJSON_GetObjectItem(cfg, "chat_template");
        LT_CHECK_OK(lt_chat_template_detect(ct->valuestring, &tpl, &err), &err);
        LT_CHECK(!strcmp(tpl.name, det[i][1]), "%s detected as %s, expected %s", det[i][0], tpl.name, det[i][1]);
        cJSON_Delete(cfg);
    }
    {
        lt_chat_template tpl;
        LT_CHECK(lt_chat_template_detect("{{ messages[0]['content'] }}", &tpl, &err) == LT_ERR_UNSUPPORTED,
                 "unknown template accepted");
        LT_CHECK(strstr(err.msg, "--template") != NULL, "message does not point to --template: %s", err.msg);
    }

    /* where the template text is read: chat_template.jinja (transformers 5)
     * before tokenizer_config.json's key; the key as a string or as the
     * "default" entry of a list; none at all */
    {
        const char *dir = lt_test_tmpdir("test_chat_template");
        char cfg[4096], jin[4096];
        LT_CHECK(lt_path_join(cfg, sizeof cfg, dir, "tokenizer_config.json") &&
                     lt_path_join(jin, sizeof jin, dir, "chat_template.jinja"),
                 "path too long");
        remove(jin);
        remove(cfg);
        char *text = (char *)"x";
        LT_CHECK_OK(lt_chat_template_text(cfg, &text, &err), &err);
        LT_CHECK(text == NULL, "a template without any file");
        const char *c1 = "{\"chat_template\": \"A\", \"eos_token\": \"</s>\"}";
        LT_CHECK_OK(lt_write_file_atomic(cfg, c1, strlen(c1), &err), &err);
        LT_CHECK_OK(lt_chat_template_text(cfg, &text, &err), &err);
        LT_CHECK(text && !strcmp(text, "A"), "string chat_template: %s", text ? text : "(null)");
        free(text);
        const char *c2 = "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, "
                         "{\"name\": \"default\", \"template\": \"D\"}]}";
        LT_CHECK_OK(lt_write_file_atomic(cfg, c2, strlen(c2), &err), &err);
        LT_CHECK_OK(lt_chat_template_text(cfg, &text, &err), &err);
        LT_CHECK(text && !strcmp(text, "D"), "list chat_template: %s", text ? text : "(null)");
        free(text);
        const char *j = "{{ bos_token }}J\n";
        LT_CHECK_OK(lt_write_file_atomic(jin, j, strlen(j), &err), &err);
        LT_CHECK_OK(lt_chat_template_text(cfg, &text, &err), &err);
        LT_CHECK(text && !strcmp(text, j), "chat_template.jinja first: %s", text ? text : "(null)");
        free(text);
        remove(cfg); /* a transformers 5 folder may have the .jinja only */
        LT_CHECK_OK(lt_chat_template_text(cfg, &text, &err), &err);
        LT_CHECK(text && !strcmp(text, j), "chat_template.jinja without a config: %s", text ? text : "(null)");
        free(text);
        /* the real texts are recognised from a .jinja as from the config */
        cJSON *q = load_json(lt_shared_path("tokenizers/qwen3/tokenizer_config.json"));
        if (q) {
            const char *qt = cJSON_GetObjectItem(q, "chat_template")->valuestring;
            LT_CHECK_OK(lt_write_file_atomic(jin, qt, strlen(qt), &err), &err);
            LT_CHECK_OK(lt_chat_template_text(cfg, &text, &err), &err);
            lt_chat_template tpl;
            LT_CHECK(text && lt_chat_template_detect(text, &tpl, &err) == LT_OK && !strcmp(tpl.name, "qwen3"),
                     "qwen3 from chat_template.jinja: %s", err.msg);
            free(text);
            cJSON_Delete(q);
        }
        remove(jin);
    }

    /* Python str.strip() semantics on UTF-8 */
    {
        const char *s = "\xc2\xa0\t x\xe3\x80\x80y \xe2\x80\x83\n";
        size_t a, b;
        lt_chat_py_strip(s, strlen(s), &a, &b);
        LT_CHECK(b - a == 5 && !memcmp(s + a, "x\xe3\x80\x80y", 5), "strip gave [%.*s]", (int)(b - a), s + a);
        const char *z = "\xe2\x80\x8bx\xe2\x80\x8b"; /* zero-width space is not whitespace for Python */
        lt_chat_py_strip(z, strlen(z), &a, &b);
        LT_CHECK(a == 0 && b == strlen(z), "zero-width space stripped");
    }
    return lt_test_finish("test_chat_template");
}
