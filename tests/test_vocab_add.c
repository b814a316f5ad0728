/* test_vocab_add.c -- `luxtrain vocab add`.
 * Tokenizer (needs $LT_PYTHON with tokenizers, else that part skips): the
 * tokens of tests/fixtures/vocab/tokens_lb.txt (new words, vocabulary tokens,
 * a repeated line, an empty line, an NFD spelling, special-looking strings)
 * added to the sample model's tokenizer and the real ones in
 * shared/tokenizers/ (where present), as plain and as special tokens: the
 * written tokenizer.json must equal tokenizers' own add_tokens result, and
 * luxtrain's tokenizer loading it must give tokenizers' ids on a corpus
 * (tests/vocab_reference.py).
 * Model (no Python): the CLI on a tied bf16 model (the sample) and an untied
 * f32 one (fixture llama + the sample tokenizer): config vocab_size, old rows
 * byte for byte, new rows = the mean of the old rows, no lm_head when tied,
 * pad-to-multiple, the result loads (score); bad tokens file named by
 * FILE:LINE with nothing written; --out refusals. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_config.h"
#include "lt_fs.h"
#include "lt_safetensors.h"
#include "lt_test.h"
#include "lt_tok_vocab.h"
#include "lt_tokenizer.h"

static char **read_lines(const char *path, size_t *n) {
    char *text;
    size_t len;
    lt_err err = {{0}};
    *n = 0;
    if (lt_read_file(path, &text, &len, &err)) return NULL;
    char **v = calloc(len + 2, sizeof *v);
    for (size_t p = 0; p < len;) {
        const char *nl = memchr(text + p, '\n', len - p);
        size_t e = nl ? (size_t)(nl - text) : len;
        size_t l = e > p && text[e - 1] == '\r' ? e - 1 - p : e - p;
        if (l) {
            v[*n] = malloc(l + 1);
            memcpy(v[*n], text + p, l);
            v[(*n)++][l] = 0;
        }
        p = nl ? e + 1 : len;
    }
    free(text);
    return v;
}

static void free_lines(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* the corpus: the Luxembourgish sample text, and every token in contexts */
static void write_corpus(const char *path, char **toks, size_t nt) {
    FILE *f = fopen(path, "w");
    size_t nl;
    char **lines = read_lines(lt_src_path("tools/sample_pretrain_lb.txt"), &nl);
    for (size_t i = 0; i < nl; i++) fprintf(f, "%s\n", lines[i]);
    free_lines(lines, nl);
    for (size_t i = 0; i < nt; i++) {
        const char *t = toks[i];
        fprintf(f, "%s\n %s \na%sb\n%s%s\nDe %s, an %s.\n  %s\t%s!\n", t, t, t, t, t, t, t, t, t);
    }
    fprintf(f, "Moien! Wéi geet et? Lëtzebuerg, Lëtzebuerger, Lëtzebuergesch an Le\xcc\x88tzebuergesch.\n");
    fclose(f);
}

static void tokenizer_case(const char *py, const char *name, const char *json_path, int special, const char *tmp,
                           const char *tokens_path, const char *corpus_path) {
    lt_err err = {{0}};
    size_t nt, nc;
    char **toks = read_lines(tokens_path, &nt);
    char *text;
    size_t len;
    LT_CHECK_OK(lt_read_file(json_path, &text, &len, &err), &err);
    if (err.msg[0]) return;
    lt_tok_add_result r;
    lt_status st = lt_tok_add_tokens(text, len, json_path, (const char *const *)toks, nt, special, &r, &err);
    LT_CHECK(st == LT_OK, "%s: %s", name, err.msg);
    if (st) {
        free(text);
        free_lines(toks, nt);
        return;
    }
    char dir[2048], out[4096], prefix[2048], path[4096];
    snprintf(dir, sizeof dir, "%s/%s-%d", tmp, name, special);
    LT_CHECK_OK(lt_fs_mkdir_p(dir, &err), &err);
    snprintf(out, sizeof out, "%s/tokenizer.json", dir);
    LT_CHECK_OK(lt_write_file_atomic(out, r.json, r.json_len, &err), &err);
    LT_FMT(prefix, "%s/ours", dir);
    snprintf(path, sizeof path, "%s.meta", prefix);
    FILE *f = fopen(path, "w");
    fprintf(f, "added %zu\nold_len %lld\nnew_len %lld\nids", r.n_added, (long long)r.old_len, (long long)r.new_len);
    for (size_t i = 0; i < nt; i++) fprintf(f, " %d", (int)r.ids[i]);
    fprintf(f, "\n");
    fclose(f);
    lt_tokenizer *t = NULL;
    LT_CHECK_OK(lt_tok_load(out, &t, &err), &err);
    if (t) {
        LT_CHECK(lt_tok_vocab_size(t) <= r.new_len + 1000000, "vocab size");
        char **corpus = read_lines(corpus_path, &nc);
        snprintf(path, sizeof path, "%s.ids", prefix);
        f = fopen(path, "w");
        for (size_t i = 0; i < nc; i++) {
            for (int add = 0; add < 2; add++) {
                lt_tok_ids v = {0};
                LT_CHECK_OK(lt_tok_encode(t, corpus[i], strlen(corpus[i]), add, &v, &err), &err);
                for (size_t k = 0; k < v.n; k++) fprintf(f, k ? " %d" : "%d", v.ids[k]);
                fputc(add ? '\n' : '\t', f);
                lt_tok_ids_free(&v);
            }
        }
        fclose(f);
        free_lines(corpus, nc);
        lt_tok_free(t);
        char cmd[16384];
        snprintf(cmd, sizeof cmd, "%s %s %s %s %s %d %s %s", py, lt_src_path("tests/vocab_reference.py"), json_path,
                 out, tokens_path, special, corpus_path, prefix);
        LT_CHECK(lt_test_system(cmd) == 0, "%s (special %d): luxtrain differs from tokenizers: %s", name, special, cmd);
    }
    lt_tok_add_result_free(&r);
    free(text);
    free_lines(toks, nt);
}

static int tokenizer_part(const char *tmp) {
    const char *py = getenv("LT_PYTHON");
    if (!py || !*py) py = LT_PYTHON;
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s -c 'import tokenizers' 2>/dev/null", py);
    if (lt_test_system(cmd) != 0) {
        fprintf(stderr, "skip (tokenizer part): %s with tokenizers is not available\n", py);
        return 0;
    }
    char tokens_path[4096], corpus_path[4096];
    snprintf(tokens_path, sizeof tokens_path, "%s", lt_src_path("tests/fixtures/vocab/tokens_lb.txt"));
    snprintf(corpus_path, sizeof corpus_path, "%s/corpus.txt", tmp);
    size_t nt;
    char **toks = read_lines(tokens_path, &nt);
    write_corpus(corpus_path, toks, nt);
    free_lines(toks, nt);
    static const char *shared[] = {"llama3_1", "qwen3", "gemma3", "llama2"};
    for (int special = 0; special < 2; special++) {
        tokenizer_case(py, "sample", lt_src_path("data/sample/model/tokenizer.json"), special, tmp, tokens_path,
                       corpus_path);
        for (int i = special ? 1 : 0; i < (special ? 2 : 4); i++) { /* special: qwen3 only (time) */
            char rel[256];
            snprintf(rel, sizeof rel, "tokenizers/%s/tokenizer.json", shared[i]);
            const char *p = lt_shared_path(rel);
            if (!lt_file_exists(p)) {
                fprintf(stderr, "note: no %s (only the sample tokenizer is compared)\n", p);
                continue;
            }
            char path[4096];
            snprintf(path, sizeof path, "%s", p);
            tokenizer_case(py, shared[i], path, special, tmp, tokens_path, corpus_path);
        }
    }
    return 1;
}

/* ---- model ---- */

static int run(const char *args) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s %s", LT_BIN, args);
    return lt_test_system(cmd);
}

static float *tensor_f32(const lt_st_model *m, const char *name, int64_t *rows, int64_t *cols) {
    const lt_st_tensor *t = lt_st_model_find(m, name);
    if (!t) return NULL;
    float *x = malloc(t->numel * sizeof *x);
    lt_err err = {{0}};
    lt_st_to_f32(t, x, t->numel, &err);
    *rows = t->shape[0];
    *cols = t->shape[1];
    return x;
}

static float round_to(lt_dtype d, float x) {
    if (d != LT_BF16) return x;
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* out/: vocab_size rows, old rows as in src, new rows the mean, tied: no head */
static void check_resized(const char *src, const char *out, int64_t want_rows, int tied) {
    lt_err err = {{0}};
    lt_config c;
    LT_CHECK_OK(lt_config_load(out, &c, &err), &err);
    LT_CHECK(c.vocab_size == want_rows, "%s: vocab_size %d, want %lld", out, c.vocab_size, (long long)want_rows);
    lt_st_model *a = NULL, *b = NULL;
    LT_CHECK_OK(lt_st_open_model(src, &a, &err), &err);
    LT_CHECK_OK(lt_st_open_model(out, &b, &err), &err);
    if (!a || !b) return;
    LT_CHECK(!tied || !lt_st_model_find(b, "lm_head.weight"), "%s: a tied model got an lm_head", out);
    const char *names[] = {"model.embed_tokens.weight", "lm_head.weight"};
    for (int k = 0; k < (tied ? 1 : 2); k++) {
        int64_t r0, c0, r1, c1;
        float *x = tensor_f32(a, names[k], &r0, &c0), *y = tensor_f32(b, names[k], &r1, &c1);
        LT_CHECK(x && y, "%s missing", names[k]);
        if (!x || !y) continue;
        const lt_st_tensor *ts = lt_st_model_find(b, names[k]);
        LT_CHECK(ts->dtype == lt_st_model_find(a, names[k])->dtype, "%s: dtype changed", names[k]);
        LT_CHECK(r1 == want_rows && c1 == c0, "%s: shape [%lld, %lld]", names[k], (long long)r1, (long long)c1);
        int64_t keep = r0 < r1 ? r0 : r1;
        LT_CHECK(!memcmp(x, y, (size_t)(keep * c0) * sizeof *x), "%s: old rows changed", names[k]);
        size_t bad = 0;
        for (int64_t j = 0; j < c0; j++) {
            double s = 0;
            for (int64_t i = 0; i < r0; i++) s += x[i * c0 + j];
            float mean = round_to(ts->dtype, (float)(s / (double)r0));
            for (int64_t i = r0; i < r1; i++) bad += y[i * c1 + j] != mean;
        }
        LT_CHECK(bad == 0, "%s: %zu new values differ from the mean of the old rows", names[k], bad);
        free(x);
        free(y);
    }
    /* every other tensor unchanged */
    for (size_t i = 0; i < lt_st_model_count(a); i++) {
        const lt_st_tensor *t = lt_st_model_get(a, i), *u = lt_st_model_find(b, t->name);
        if (!strcmp(t->name, names[0]) || !strcmp(t->name, names[1])) continue;
        LT_CHECK(u && u->nbytes == t->nbytes && !memcmp(u->data, t->data, t->nbytes), "%s changed", t->name);
    }
    lt_st_close_model(a);
    lt_st_close_model(b);
}

static void model_part(const char *tmp) {
    char args[16384], out[2048], toks[2048], m2[2048], path[4096];
    snprintf(toks, sizeof toks, "%s", lt_src_path("tests/fixtures/vocab/tokens_lb.txt"));
    /* tied bf16 sample model, padded to 64 */
    snprintf(out, sizeof out, "%s/sample-lb", tmp);
    lt_fs_rm_rf(out);
    snprintf(args, sizeof args, "vocab add --model %s --tokens %s --out %s --pad-to-multiple 64",
             lt_src_path("data/sample/model"), toks, out);
    LT_CHECK(run(args) == 0, "vocab add on the sample failed");
    lt_tokenizer *t = NULL;
    lt_err err = {{0}};
    snprintf(path, sizeof path, "%s/tokenizer.json", out);
    LT_CHECK_OK(lt_tok_load(path, &t, &err), &err);
    int32_t id = t ? lt_tok_token_to_id(t, "Gromperekichelcher") : -1;
    LT_CHECK(id >= 2048, "new token id %d", id);
    int64_t len = t ? lt_tok_vocab_size(t) : 0;
    if (t) lt_tok_free(t);
    check_resized(lt_src_path("data/sample/model"), out, (len + 63) / 64 * 64, 1);
    snprintf(args, sizeof args, "score --model %s --ids 5,%d,17 >/dev/null", out, (int)id);
    LT_CHECK(run(args) == 0, "score on the resized sample failed");
    /* untied f32: fixture llama (160 rows) with the sample tokenizer: grows to len(tokenizer) */
    snprintf(m2, sizeof m2, "%s/llama-tok", tmp);
    lt_fs_rm_rf(m2);
    LT_CHECK_OK(lt_fs_mkdir_p(m2, &err), &err);
    const char *files[] = {"config.json", "model.safetensors"};
    for (int k = 0; k < 2; k++) {
        char s[4096], d[4096];
        snprintf(s, sizeof s, "%s/%s", lt_src_path("tests/fixtures/models/llama"), files[k]);
        snprintf(d, sizeof d, "%s/%s", m2, files[k]);
        LT_CHECK_OK(lt_fs_copy_file(s, d, &err), &err);
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", m2);
    LT_CHECK_OK(lt_fs_copy_file(lt_src_path("data/sample/model/tokenizer.json"), path, &err), &err);
    snprintf(out, sizeof out, "%s/llama-lb", tmp);
    lt_fs_rm_rf(out);
    snprintf(args, sizeof args, "vocab add --model %s --tokens %s --out %s", m2, toks, out);
    LT_CHECK(run(args) == 0, "vocab add on the untied model failed");
    snprintf(path, sizeof path, "%s/tokenizer.json", out);
    LT_CHECK_OK(lt_tok_load(path, &t, &err), &err);
    len = t ? lt_tok_vocab_size(t) : 0;
    if (t) lt_tok_free(t);
    check_resized(m2, out, len, 0);
    /* refusals: existing --out, --out = --model */
    snprintf(args, sizeof args, "vocab add --model %s --tokens %s --out %s 2>/dev/null", m2, toks, out);
    LT_CHECK(run(args) != 0, "an existing --out was replaced without --overwrite");
    snprintf(args, sizeof args, "vocab add --model %s --tokens %s --out %s --overwrite >/dev/null", m2, toks, out);
    LT_CHECK(run(args) == 0, "--overwrite failed");
    snprintf(args, sizeof args, "vocab add --model %s --tokens %s --out %s --overwrite 2>/dev/null", m2, toks, m2);
    LT_CHECK(run(args) != 0, "--out = --model accepted");
    /* bad tokens file: FILE:LINE named, nothing written */
    snprintf(path, sizeof path, "%s/bad.txt", tmp);
    FILE *f = fopen(path, "w");
    fprintf(f, "Moien\nLëtzebuerg\nbad\xff\xfe\n");
    fclose(f);
    snprintf(out, sizeof out, "%s/bad-out", tmp);
    lt_fs_rm_rf(out);
    char log[4096];
    snprintf(log, sizeof log, "%s/bad.log", tmp);
    snprintf(args, sizeof args, "vocab add --model %s --tokens %s --out %s 2>%s", m2, path, out, log);
    LT_CHECK(run(args) != 0, "a bad tokens file was accepted");
    char *msg = NULL;
    size_t ml;
    LT_CHECK_OK(lt_read_file(log, &msg, &ml, &err), &err);
    char want[4200];
    snprintf(want, sizeof want, "%s:3:", path);
    LT_CHECK(msg && strstr(msg, want), "the error does not name %s: %s", want, msg ? msg : "");
    free(msg);
    LT_CHECK(!lt_file_exists(out), "a failed vocab add left %s", out);
}

int main(void) {
    const char *tmp = lt_test_tmpdir("test_vocab_add");
    int tok_ran = tokenizer_part(tmp);
    model_part(tmp);
    if (!tok_ran) fprintf(stderr, "note: the tokenizer comparison was skipped (no tokenizers in $LT_PYTHON)\n");
    return lt_test_finish("test_vocab_add");
}
