/* lt_gguf.c -- GGUF v3 export for llama.cpp. See lt_gguf.h and docs/export.md. */
#define _POSIX_C_SOURCE 200809L
#include "lt_gguf.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt_config.h"
#include "lt_export.h"
#include "lt_family.h"
#include "lt_fs.h"
#include "lt_json.h"
#include "lt_lora.h"
#include "lt_lora_target.h"
#include "lt_model_spec.h"
#include "lt_safetensors.h"
#include "lt_tok_internal.h" /* lt_pretok_regex_kind: which pre-tokenizer regex */
#include "lt_tokenizer.h"

#define GGUF_ALIGN 32

/* GGUF metadata value types (the spec's gguf_metadata_value_type) */
enum { GV_U8 = 0, GV_I8, GV_U16, GV_I16, GV_U32, GV_I32, GV_F32, GV_BOOL, GV_STR, GV_ARR, GV_U64, GV_I64, GV_F64 };
/* llama.cpp's token types */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };
/* general.file_type (llama_ftype) */
enum { FT_ALL_F32 = 0, FT_MOSTLY_F16 = 1, FT_MOSTLY_Q8_0 = 7, FT_MOSTLY_BF16 = 32 };

lt_status lt_gguf_parse_type(const char *s, lt_gguf_type *t, lt_err *err) {
    static const struct {
        const char *name;
        lt_gguf_type t;
    } T[] = {{"f32", LT_GGUF_F32}, {"f16", LT_GGUF_F16}, {"bf16", LT_GGUF_BF16}, {"q8_0", LT_GGUF_Q8_0}};
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
        if (!strcmp(s, T[i].name)) {
            *t = T[i].t;
            return LT_OK;
        }
    return lt_fail(err, LT_ERR_INVALID, "GGUF type '%s' is not supported (f32, f16, bf16, q8_0)", s);
}

const char *lt_gguf_type_name(lt_gguf_type t) {
    switch (t) {
    case LT_GGUF_F32: return "f32";
    case LT_GGUF_F16: return "f16";
    case LT_GGUF_BF16: return "bf16";
    case LT_GGUF_Q8_0: return "q8_0";
    }
    return "?";
}

void lt_gguf_quantize_q8_0(const float *x, size_t n, uint8_t *out) {
    for (size_t b = 0; b < n / LT_GGUF_Q8_0_BLOCK; b++, x += LT_GGUF_Q8_0_BLOCK, out += LT_GGUF_Q8_0_BYTES) {
        float amax = 0.0f;
        for (int j = 0; j < LT_GGUF_Q8_0_BLOCK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = lt_f32_to_f16(d);
        out[0] = (uint8_t)(h & 0xff);
        out[1] = (uint8_t)(h >> 8);
        for (int j = 0; j < LT_GGUF_Q8_0_BLOCK; j++) out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

/* ---- a growable little-endian byte buffer (the metadata section) ---- */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
    int oom;
    uint64_t count; /* key/value pairs written */
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->n + n) c *= 2;
        uint8_t *q = realloc(b->p, c);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}
static void put_u64(buf *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}
static void put_str(buf *b, const char *s, size_t n) {
    put_u64(b, n);
    put(b, s, n);
}
static void kv_key(buf *b, const char *key, uint32_t type) {
    put_str(b, key, strlen(key));
    put_u32(b, type);
    b->count++;
}
static void kv_u32(buf *b, const char *key, uint32_t v) {
    kv_key(b, key, GV_U32);
    put_u32(b, v);
}
static void kv_f32(buf *b, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    kv_key(b, key, GV_F32);
    put_u32(b, u);
}
static void kv_bool(buf *b, const char *key, int v) {
    uint8_t x = v ? 1 : 0;
    kv_key(b, key, GV_BOOL);
    put(b, &x, 1);
}
static void kv_str(buf *b, const char *key, const char *v) {
    kv_key(b, key, GV_STR);
    put_str(b, v, strlen(v));
}
static void kv_arch_u32(buf *b, const char *arch, const char *key, uint32_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    kv_u32(b, k, v);
}
static void kv_arch_f32(buf *b, const char *arch, const char *key, float v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    kv_f32(b, k, v);
}
static void kv_arch_str(buf *b, const char *arch, const char *key, const char *v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    kv_str(b, k, v);
}

/* ---- tensor plan ---- */

/* where a tensor's values come from: the model's safetensors, or derived from config.json (Llama 3's
 * rope_freqs divisors, LongRoPE's long / short factor lists) */
typedef enum { SRC_MODEL = 0, SRC_ROPE_FREQS, SRC_ROPE_LONG, SRC_ROPE_SHORT } src_kind;

typedef struct plan_tensor {
    char name[96];    /* GGUF name */
    char hf[96];      /* source tensor (Hugging Face name) */
    src_kind src;
    int ndim;
    int64_t shape[2]; /* Hugging Face order: (out, in) */
    lt_gguf_type type;
    int permute_heads; /* > 0: q/k rows permuted with this many heads */
    float add;         /* added to every value (Gemma's norms: llama.cpp multiplies by the stored weight) */
    int layer, target; /* LoRA target of a projection weight, else -1 */
    uint64_t offset, nbytes;
} plan_tensor;

/* the Llama layer's tensors: {HF name after "model.layers.N.", GGUF name after "blk.N."} */
static const char *const LLAMA_LAYER[][2] = {
    {"input_layernorm", "attn_norm"},     {"self_attn.q_proj", "attn_q"},     {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},       {"self_attn.o_proj", "attn_output"}, {"self_attn.q_norm", "attn_q_norm"},
    {"self_attn.k_norm", "attn_k_norm"},  {"post_attention_layernorm", "ffn_norm"}, {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},            {"mlp.down_proj", "ffn_down"},     {NULL, NULL}};

static const char *lookup(const char *const (*t)[2], const char *hf, size_t n) {
    for (; t && t[0][0]; t++)
        if (strlen(t[0][0]) == n && !strncmp(t[0][0], hf, n)) return t[0][1];
    return NULL;
}

/* HF tensor name -> GGUF name */
static lt_status map_name(const lt_family *fam, const char *hf, char *out, size_t cap, int *layer, lt_err *err) {
    *layer = -1;
    if (!strcmp(hf, "model.embed_tokens.weight")) return snprintf(out, cap, "token_embd.weight"), LT_OK;
    if (!strcmp(hf, "model.norm.weight")) return snprintf(out, cap, "output_norm.weight"), LT_OK;
    if (!strcmp(hf, "lm_head.weight")) return snprintf(out, cap, "output.weight"), LT_OK;
    int l, n = 0;
    if (sscanf(hf, "model.layers.%d.%n", &l, &n) == 1 && n > 0) {
        const char *rest = hf + n, *dot = strrchr(rest, '.');
        if (dot && (!strcmp(dot, ".weight") || !strcmp(dot, ".bias"))) {
            size_t k = (size_t)(dot - rest);
            const char *g = lookup(fam->gguf.names, rest, k);
            if (!g) g = lookup(LLAMA_LAYER, rest, k);
            if (g) {
                *layer = l;
                snprintf(out, cap, "blk.%d.%s%s", l, g, dot);
                return LT_OK;
            }
        }
    }
    return lt_fail(err, LT_ERR_UNSUPPORTED, "tensor '%s' has no GGUF name for family %s (lt_family_gguf names)", hf,
                   fam->model_type);
}

/* (layer, LoRA target) of a projection weight "model.layers.L.<block>.<proj>.weight", else target -1 */
static int lora_target_of(const char *hf, int layer) {
    char want[128];
    for (int t = 0; t < LT_LORA_NTARGETS; t++) {
        snprintf(want, sizeof want, "model.layers.%d.%s.weight", layer, lt_lora_target_module(t));
        if (!strcmp(hf, want)) return t;
    }
    return -1;
}

static uint64_t tensor_bytes(const plan_tensor *t) {
    uint64_t numel = (uint64_t)t->shape[0] * (uint64_t)(t->ndim > 1 ? t->shape[1] : 1);
    switch (t->type) {
    case LT_GGUF_F32: return numel * 4;
    case LT_GGUF_F16:
    case LT_GGUF_BF16: return numel * 2;
    case LT_GGUF_Q8_0: return numel / LT_GGUF_Q8_0_BLOCK * LT_GGUF_Q8_0_BYTES;
    }
    return 0;
}

/* ---- tokenizer metadata ---- */

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* the Split regex of the pre-tokenizer (one level of Sequence), or NULL */
static const char *split_regex(const cJSON *pre, int *byte_level) {
    const char *type = jstr(pre, "type");
    if (!type) return NULL;
    if (!strcmp(type, "ByteLevel")) {
        *byte_level = 1;
        return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pre, "use_regex")) ? "gpt2" : NULL;
    }
    if (!strcmp(type, "Split")) return jstr(cJSON_GetObjectItemCaseSensitive(pre, "pattern"), "Regex");
    if (!strcmp(type, "Sequence")) {
        const char *r = NULL;
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers")) {
            const char *x = split_regex(it, byte_level);
            if (x && !r) r = x;
        }
        return r;
    }
    return NULL;
}

/* pad_token of tokenizer_config.json (a string or {"content": ...}) -> id, or -1 */
static int32_t config_token(const cJSON *tc, const char *key, const lt_tokenizer *tok) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(tc, key);
    const char *s = cJSON_IsString(v) ? v->valuestring : jstr(v, "content");
    return s ? lt_tok_token_to_id(tok, s) : -1;
}

#define SPM_SPACE "\xe2\x96\x81" /* U+2581, SentencePiece's space */

static int is_replace_space(const cJSON *n) { /* Replace " " -> U+2581 */
    return jstr(n, "type") && !strcmp(jstr(n, "type"), "Replace") &&
           jstr(cJSON_GetObjectItemCaseSensitive(n, "pattern"), "String") &&
           !strcmp(jstr(cJSON_GetObjectItemCaseSensitive(n, "pattern"), "String"), " ") && jstr(n, "content") &&
           !strcmp(jstr(n, "content"), SPM_SPACE);
}

/* A SentencePiece-style tokenizer.json (BPE with byte_fallback on U+2581-escaped text, as Hugging Face
 * converts SentencePiece BPE models), which llama.cpp runs as its "llama" (SPM) tokenizer: llama.cpp
 * replaces spaces by U+2581 itself and prepends one to each text fragment (the text, and what follows
 * a special or user-defined token) when add_space_prefix. The forms read (others are refused by name):
 *   normalizer Sequence[Prepend U+2581, Replace " " -> U+2581], no pre-tokenizer (Llama 2, Mistral
 *     v0.1): space prefix;
 *   normalizer Replace " " -> U+2581, no pre-tokenizer or Split on " " (Gemma: the split never
 *     matches once the normalizer ran): no space prefix;
 *   no normalizer, pre-tokenizer Metaspace (U+2581, split false; prepend_scheme first / always:
 *     space prefix, never: none) (Mistral v0.3 and other "legacy: false" conversions).
 * Returns 1 (and *space_prefix) for these, 0 for what is no SentencePiece-style tokenizer, -1 (with
 * *why) for one llama.cpp cannot run alike. */
static int spm_form(const cJSON *tj, int *space_prefix, const char **why) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(tj, "normalizer");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(tj, "pre_tokenizer");
    if (!jstr(model, "type") || strcmp(jstr(model, "type"), "BPE") ||
        !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")))
        return 0;
    const char *nt = jstr(norm, "type"), *pt = jstr(pre, "type");
    *why = NULL;
    if (jstr(model, "continuing_subword_prefix") || jstr(model, "end_of_word_suffix"))
        *why = "a continuing_subword_prefix / end_of_word_suffix";
    else if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(model, "dropout")))
        *why = "BPE dropout";
    else if (nt && !strcmp(nt, "Sequence") && !pt) {
        const cJSON *ns = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
        const cJSON *n0 = cJSON_GetArrayItem(ns, 0), *n1 = cJSON_GetArrayItem(ns, 1);
        if (cJSON_GetArraySize(ns) == 2 && jstr(n0, "type") && !strcmp(jstr(n0, "type"), "Prepend") &&
            jstr(n0, "prepend") && !strcmp(jstr(n0, "prepend"), SPM_SPACE) && is_replace_space(n1)) {
            *space_prefix = 1;
            return 1;
        }
        *why = "a normalizer other than Prepend(U+2581) + Replace(' ', U+2581)";
    } else if (nt && is_replace_space(norm)) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(pre, "pattern");
        if (!pt || (!strcmp(pt, "Split") && jstr(pat, "String") && !strcmp(jstr(pat, "String"), " "))) {
            *space_prefix = 0;
            return 1;
        }
        *why = "a pre-tokenizer after the Replace(' ', U+2581) normalizer";
    } else if (!nt && pt && !strcmp(pt, "Metaspace")) {
        /* tokenizers' defaults: split true; prepend_scheme always (or as the older add_prefix_space) */
        const char *ps = jstr(pre, "prepend_scheme");
        if (!ps) ps = cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "add_prefix_space")) ? "never" : "always";
        if (jstr(pre, "replacement") && !strcmp(jstr(pre, "replacement"), SPM_SPACE) &&
            cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "split")) &&
            (!strcmp(ps, "first") || !strcmp(ps, "always") || !strcmp(ps, "never"))) {
            *space_prefix = strcmp(ps, "never") != 0;
            return 1;
        }
        *why = "a Metaspace pre-tokenizer that splits or replaces by another character";
    } else
        *why = "a normalizer / pre-tokenizer other than SentencePiece's space escaping";
    return -1;
}

/* the score of each id for llama.cpp's SPM tokenizer, from the BPE merges: llama.cpp merges the adjacent
 * pair whose concatenation is the best-scoring token, BPE the pair of the lowest merge rank, so a token
 * scores minus the rank of the first merge that makes it (the merges of a converted SentencePiece model
 * are ordered by the piece they make). Tokens no merge makes score below every merge. A vocabulary
 * token llama.cpp could make from two tokens but no merge makes is refused: BPE never emits it. */
static lt_status spm_scores(const cJSON *model, const lt_tokenizer *tok, char **tokens, const int32_t *types, int V,
                            float *scores, const char *path, lt_err *err) {
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges"), *it;
    int nm = cJSON_GetArraySize(merges), rank = 0;
    char *cat = NULL;
    size_t cap = 0;
    for (int i = 0; i < V; i++) scores[i] = NAN;
    cJSON_ArrayForEach(it, merges) {
        const char *l, *r, *sp = NULL;
        size_t nl, nr;
        if (cJSON_IsString(it) && (sp = strchr(it->valuestring, ' '))) {
            l = it->valuestring;
            nl = (size_t)(sp - l);
            r = sp + 1;
        } else if (cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            l = cJSON_GetArrayItem(it, 0)->valuestring;
            nl = strlen(l);
            r = cJSON_GetArrayItem(it, 1)->valuestring;
        } else {
            free(cat);
            return lt_fail(err, LT_ERR_FORMAT, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", path, rank);
        }
        nr = strlen(r);
        if (nl + nr + 1 > cap) {
            cap = 2 * (nl + nr + 1);
            char *c = realloc(cat, cap);
            if (!c) {
                free(cat);
                return lt_fail(err, LT_ERR_NOMEM, "out of memory");
            }
            cat = c;
        }
        memcpy(cat, l, nl);
        memcpy(cat + nl, r, nr + 1);
        int32_t id = lt_tok_token_to_id(tok, cat);
        if (id >= 0 && id < V && isnan(scores[id])) scores[id] = -(float)rank;
        rank++;
    }
    free(cat);
    for (int i = 0; i < V; i++) {
        if (!isnan(scores[i])) continue;
        scores[i] = -(float)nm - 1.0f;
        if (types[i] != TT_NORMAL || !tokens[i]) continue;
        /* a token of two or more characters that two tokens concatenate to */
        const char *t = tokens[i];
        size_t n = strlen(t);
        char part[512];
        for (size_t k = 1; k < n && n < sizeof part; k++) {
            if (((unsigned char)t[k] & 0xC0) == 0x80) continue; /* inside a UTF-8 sequence */
            memcpy(part, t, k);
            part[k] = 0;
            if (lt_tok_token_to_id(tok, part) >= 0 && lt_tok_token_to_id(tok, t + k) >= 0)
                return lt_fail(err, LT_ERR_UNSUPPORTED,
                               "%s: token '%s' (id %d) is no merge's result but '%s' + '%s' are tokens: llama.cpp's "
                               "SentencePiece tokenizer would make it where BPE does not",
                               path, t, i, part, t + k);
        }
    }
    return LT_OK;
}

static lt_status add_tokenizer(buf *b, const char *dir, const lt_config *cfg, lt_err *err) {
    char path[4096];
    cJSON *tj = NULL, *tc = NULL;
    lt_tokenizer *tok = NULL;
    char **tokens = NULL;
    int32_t *types = NULL;
    float *scores = NULL;
    char *jinja = NULL;
    int V = cfg->vocab_size;
    lt_status st;
    if (!lt_path_join(path, sizeof path, dir, "tokenizer.json")) return lt_fail(err, LT_ERR_INVALID, "path too long");
    if (!lt_file_exists(path))
        return lt_fail(err, LT_ERR_IO, "%s: missing; GGUF holds the tokenizer, export needs the model's tokenizer.json",
                       path);
    if ((st = lt_tok_load(path, &tok, err)) || (st = lt_json_load_file(path, &tj, err))) goto done;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    const char *mtype = jstr(model, "type");
    int byte_level = 0, space_prefix = 0;
    const char *regex = split_regex(cJSON_GetObjectItemCaseSensitive(tj, "pre_tokenizer"), &byte_level), *why = NULL;
    int spm = byte_level ? 0 : spm_form(tj, &space_prefix, &why);
    if (spm < 0) {
        st = lt_fail(err, LT_ERR_UNSUPPORTED,
                     "%s: a SentencePiece-style BPE (byte_fallback) with %s: llama.cpp's SentencePiece tokenizer "
                     "would split text otherwise",
                     path, why);
        goto done;
    }
    if (!spm && (!mtype || strcmp(mtype, "BPE") || !byte_level)) {
        st = lt_fail(err, LT_ERR_UNSUPPORTED,
                     "%s: GGUF export writes byte-level BPE tokenizers (Llama 3, Qwen, OLMo 2: llama.cpp's \"gpt2\" "
                     "model) and SentencePiece-style BPE ones with byte_fallback (Llama 2, Mistral, Gemma: its "
                     "\"llama\" model); this one is %s%s",
                     path, mtype ? mtype : "of no known model type", byte_level ? "" : " without ByteLevel or byte_fallback");
        goto done;
    }
    int kind = !regex ? 0 : !strcmp(regex, "gpt2") ? LT_RE_GPT2 : lt_pretok_regex_kind(regex);
    int ignore = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    /* llama.cpp's pre-tokenizer name for each (regex, ignore_merges) luxtrain knows: the name
     * selects both in llama-vocab.cpp (SentencePiece: none, "default") */
    const char *pre = spm                   ? "default"
                      : kind == LT_RE_LLAMA3 ? (ignore ? "llama-bpe" : "dbrx")
                      : ignore             ? NULL
                      : kind == LT_RE_QWEN2 ? "qwen2"
                      : kind == LT_RE_GPT2  ? "gpt-2"
                                            : NULL;
    if (!pre) {
        st = lt_fail(err, LT_ERR_UNSUPPORTED,
                     "%s: llama.cpp names no pre-tokenizer for this regex%s (it has Llama 3 / cl100k with or "
                     "without ignore_merges, Qwen2 and GPT-2 without)",
                     path, kind ? " with ignore_merges" : "");
        goto done;
    }
    tokens = calloc((size_t)V, sizeof *tokens);
    types = calloc((size_t)V, sizeof *types);
    if (!tokens || !types) {
        st = lt_fail(err, LT_ERR_NOMEM, "out of memory for %d tokens", V);
        goto done;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(model, "vocab")) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= V) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: token '%s' has id %g, outside the model's vocab_size %d", path,
                         it->string, it->valuedouble, V);
            goto done;
        }
        tokens[(int)it->valuedouble] = it->string;
        types[(int)it->valuedouble] = TT_NORMAL;
        unsigned hex;
        char end;
        /* byte fallback pieces <0xXX> */
        if (spm && strlen(it->string) == 6 && sscanf(it->string, "<0x%2X%c", &hex, &end) == 2 && end == '>')
            types[(int)it->valuedouble] = TT_BYTE;
    }
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(tj, "added_tokens")) {
        const cJSON *idv = cJSON_GetObjectItemCaseSensitive(it, "id");
        const char *content = jstr(it, "content");
        if (!cJSON_IsNumber(idv) || !content || idv->valuedouble < 0 || idv->valuedouble >= V) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: added token '%s' has no id below the model's vocab_size %d", path,
                         content ? content : "?", V);
            goto done;
        }
        int id = (int)idv->valuedouble;
        tokens[id] = (char *)content;
        types[id] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special")) ? TT_CONTROL : TT_USER_DEFINED;
        if (spm && jstr(model, "unk_token") && !strcmp(content, jstr(model, "unk_token"))) types[id] = TT_UNKNOWN;
    }
    kv_str(b, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    kv_str(b, "tokenizer.ggml.pre", pre);
    kv_key(b, "tokenizer.ggml.tokens", GV_ARR);
    put_u32(b, GV_STR);
    put_u64(b, (uint64_t)V);
    for (int i = 0; i < V; i++) {
        char pad[32];
        if (tokens[i]) put_str(b, tokens[i], strlen(tokens[i]));
        else { /* ids the model has and the tokenizer does not, as llama.cpp's converter names them */
            snprintf(pad, sizeof pad, "[PAD%d]", i);
            put_str(b, pad, strlen(pad));
            types[i] = TT_UNUSED;
        }
    }
    kv_key(b, "tokenizer.ggml.token_type", GV_ARR);
    put_u32(b, GV_I32);
    put_u64(b, (uint64_t)V);
    for (int i = 0; i < V; i++) put_u32(b, (uint32_t)types[i]);
    if (spm) {
        if (!(scores = malloc((size_t)V * sizeof *scores))) {
            st = lt_fail(err, LT_ERR_NOMEM, "out of memory for %d scores", V);
            goto done;
        }
        if ((st = spm_scores(model, tok, tokens, types, V, scores, path, err))) goto done;
        kv_key(b, "tokenizer.ggml.scores", GV_ARR);
        put_u32(b, GV_F32);
        put_u64(b, (uint64_t)V);
        for (int i = 0; i < V; i++) {
            uint32_t u;
            memcpy(&u, &scores[i], 4);
            put_u32(b, u);
        }
        kv_bool(b, "tokenizer.ggml.add_space_prefix", space_prefix);
        int32_t unk = jstr(model, "unk_token") ? lt_tok_token_to_id(tok, jstr(model, "unk_token")) : -1;
        if (unk >= 0) kv_u32(b, "tokenizer.ggml.unknown_token_id", (uint32_t)unk);
    }
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!spm) { /* byte-level BPE: the merges ("a b") */
        kv_key(b, "tokenizer.ggml.merges", GV_ARR);
        put_u32(b, GV_STR);
        put_u64(b, (uint64_t)cJSON_GetArraySize(merges));
    }
    const cJSON *written = spm ? NULL : merges;
    cJSON_ArrayForEach(it, written) {
        if (cJSON_IsString(it)) put_str(b, it->valuestring, strlen(it->valuestring));
        else if (cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                 cJSON_IsString(cJSON_GetArrayItem(it, 1))) { /* ["a", "b"] -> "a b" */
            const char *l = cJSON_GetArrayItem(it, 0)->valuestring, *r = cJSON_GetArrayItem(it, 1)->valuestring;
            size_t nl = strlen(l), nr = strlen(r);
            put_u64(b, nl + 1 + nr);
            put(b, l, nl);
            put(b, " ", 1);
            put(b, r, nr);
        } else {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: a merge is neither \"a b\" nor [\"a\", \"b\"]", path);
            goto done;
        }
    }
    /* BOS / EOS the post-processor adds; ids from config.json otherwise */
    int32_t pre_ids[4], suf_ids[4];
    int npre = lt_tok_prefix_ids(tok, pre_ids, 4), nsuf = lt_tok_suffix_ids(tok, suf_ids, 4);
    int32_t bos = npre ? pre_ids[0] : cfg->bos_token_id, eos = cfg->eos_token_id;
    if (lt_path_join(path, sizeof path, dir, "tokenizer_config.json") && lt_file_exists(path) &&
        (st = lt_json_load_file(path, &tc, err)))
        goto done;
    if (eos < 0) eos = config_token(tc, "eos_token", tok);
    if (bos < 0) bos = config_token(tc, "bos_token", tok);
    int32_t pad = config_token(tc, "pad_token", tok);
    if (bos >= 0) kv_u32(b, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0) kv_u32(b, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (pad >= 0) kv_u32(b, "tokenizer.ggml.padding_token_id", (uint32_t)pad);
    kv_bool(b, "tokenizer.ggml.add_bos_token", npre > 0);
    kv_bool(b, "tokenizer.ggml.add_eos_token", nsuf > 0);
    /* the chat template: tokenizer_config.json, else chat_template.jinja (transformers 5) */
    const char *tmpl = jstr(tc, "chat_template");
    const cJSON *named = cJSON_GetObjectItemCaseSensitive(tc, "chat_template");
    if (!tmpl && cJSON_IsArray(named)) /* [{"name": "default", "template": ...}, ...] */
        cJSON_ArrayForEach(it, named) if (jstr(it, "name") && !strcmp(jstr(it, "name"), "default")) tmpl =
            jstr(it, "template");
    if (!tmpl && lt_path_join(path, sizeof path, dir, "chat_template.jinja") && lt_file_exists(path)) {
        if ((st = lt_read_file(path, &jinja, NULL, err))) goto done;
        tmpl = jinja;
    }
    if (tmpl) kv_str(b, "tokenizer.chat_template", tmpl);
done:
    free(jinja);
    free(tokens);
    free(types);
    free(scores);
    cJSON_Delete(tj);
    cJSON_Delete(tc);
    lt_tok_free(tok);
    return st;
}

/* ---- the export ---- */

static lt_status write_all(FILE *f, const void *p, size_t n, const char *path, lt_err *err) {
    if (n && fwrite(p, 1, n, f) != n) return lt_fail(err, LT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return LT_OK;
}

static lt_status pad_to(FILE *f, uint64_t pos, const char *path, lt_err *err) {
    static const uint8_t zeros[GGUF_ALIGN];
    uint64_t r = pos % GGUF_ALIGN;
    return r ? write_all(f, zeros, GGUF_ALIGN - r, path, err) : LT_OK;
}

/* rows of a q/k projection (weight or bias), rows = heads * head_dim, from the
 * Hugging Face layout (per head: the first half of the rotary pairs, then the
 * second) to llama.cpp's (per head: pairs interleaved): new row h*hd + 2i + j
 * is old row h*hd + j*hd/2 + i. */
static void permute_rows(const float *src, float *dst, int heads, int64_t rows, int64_t cols) {
    int64_t hd = rows / heads, half = hd / 2;
    for (int h = 0; h < heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(dst + (h * hd + 2 * i + j) * cols, src + (h * hd + j * half + i) * cols,
                       (size_t)cols * sizeof *dst);
}

/* llama.cpp's sliding_window_pattern for the config's sliding layers (layer il slides iff
 * pattern == 0 or il % pattern < pattern - 1, llama_hparams::set_swa_pattern), or -1 */
static int swa_pattern(const lt_config *cfg) {
    for (int p = 0; p <= cfg->num_layers + 1; p++) {
        int ok = 1;
        for (int l = 0; l < cfg->num_layers && ok; l++)
            ok = (lt_config_layer_window(cfg, l) > 0) == (p == 0 || l % p < p - 1);
        if (ok) return p;
    }
    return -1;
}

/* what llama.cpp's graph for the family cannot express is refused by name */
static lt_status check_llama_cpp(const char *dir, const lt_family *fam, const lt_config *cfg, lt_err *err) {
    const lt_family_gguf *g = &fam->gguf;
    const char *a = g->arch;
    if (g->head_dim_derived && cfg->head_dim * cfg->num_heads != cfg->hidden_size)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: head_dim %d with %d heads is not hidden_size %d: llama.cpp's %s graph assumes "
                       "head_dim = hidden_size / num_attention_heads",
                       dir, cfg->head_dim, cfg->num_heads, cfg->hidden_size, a);
    if (cfg->attn_scale > 0) {
        int big = g->scale_27b_layers && cfg->num_layers == g->scale_27b_layers;
        double want = big ? (double)cfg->hidden_size / cfg->num_heads : cfg->head_dim;
        if (fabs(cfg->attn_scale * sqrt(want) - 1.0) > 1e-5)
            return lt_fail(err, LT_ERR_UNSUPPORTED,
                           "%s: query_pre_attn_scalar %g: llama.cpp's %s graph scales attention by %s^-0.5 = %g^-0.5 "
                           "for %d layers and reads no query_pre_attn_scalar",
                           dir, 1.0 / ((double)cfg->attn_scale * cfg->attn_scale), a,
                           big ? "(hidden_size / heads)" : "head_dim", want, cfg->num_layers);
    }
    if (g->softcaps && (cfg->attn_softcap <= 0 || cfg->final_softcap <= 0))
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: attn_logit_softcapping and final_logit_softcapping must both be set: llama.cpp's %s graph "
                       "always soft-caps", dir, a);
    if (!g->softcaps && (cfg->attn_softcap > 0 || cfg->final_softcap > 0))
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: %s is set: llama.cpp's %s graph has no logit soft-capping", dir,
                       cfg->attn_softcap > 0 ? "attn_logit_softcapping" : "final_logit_softcapping", a);
    if (g->tied_only && !cfg->tie_word_embeddings)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: tie_word_embeddings is false: llama.cpp's %s graph reads the head from token_embd", dir, a);
    if (g->no_attn_bias && (cfg->qkv_bias || cfg->o_bias))
        return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: attention_bias is true: llama.cpp's %s graph has no attention biases",
                       dir, a);
    if (g->swa && cfg->sliding_window > 0 && swa_pattern(cfg) < 0)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: the sliding layers (layer_types) repeat with no period llama.cpp's "
                       "sliding_window_pattern can state (every layer but each n-th slides)", dir);
    if (cfg->rope_tables == 2 && cfg->rope_local_factor != 1.0)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: the sliding layers' rope scaling (factor %g): llama.cpp scales only the full layers' RoPE",
                       dir, cfg->rope_local_factor);
    return LT_OK;
}

lt_status lt_gguf_export(const lt_gguf_opts *o, lt_err *err) {
    lt_config cfg;
    lt_st_model *stm = NULL;
    lt_peft_adapter *ad = NULL;
    lt_param_spec *specs = NULL;
    plan_tensor *pt = NULL;
    size_t nspec = 0, np = 0;
    buf kv = {0}, ti = {0};
    float *w = NULL, *tmp = NULL;
    void *conv = NULL;
    FILE *f = NULL;
    char tmp_path[4200] = "";
    lt_status st;
    if ((st = lt_config_load(o->model_dir, &cfg, err))) return st;
    const lt_family *fam = lt_family_get(cfg.arch);
    if (!fam || !fam->gguf.arch)
        return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: GGUF export does not support model family '%s' yet",
                       o->model_dir, cfg.model_type);
    if ((st = check_llama_cpp(o->model_dir, fam, &cfg, err))) return st;
    if (!o->overwrite && lt_file_exists(o->out_path))
        return lt_fail(err, LT_ERR_IO, "%s exists; use --overwrite to replace it", o->out_path);
    lt_gguf_type type = o->type >= 0 ? (lt_gguf_type)o->type : cfg.torch_dtype == LT_BF16 ? LT_GGUF_BF16 : LT_GGUF_F16;
    if ((st = lt_model_open_weights(o->model_dir, &cfg, &stm, NULL, err)) ||
        (st = lt_model_param_specs(&cfg, &specs, &nspec, err)) ||
        (st = lt_model_check_tensors(stm, specs, nspec, cfg.tie_word_embeddings, err))) {
        lt_wrap(err, st, "model %s", o->model_dir);
        goto done;
    }
    const lt_peft_adapter *adp = o->adapter;
    if (o->adapter && (st = lt_peft_check(o->adapter, &cfg, err))) {
        lt_wrap(err, st, "the checkpoint's adapter against model %s", o->model_dir);
        goto done;
    }
    if (o->adapter_dir) {
        if ((st = lt_peft_load(o->adapter_dir, &ad, err)) || (st = lt_peft_check(ad, &cfg, err))) {
            lt_wrap(err, st, "adapter %s (for model %s)", o->adapter_dir, o->model_dir);
            goto done;
        }
        adp = ad;
    }
    const char *arch = fam->gguf.arch;
    /* a multimodal class: its language model, as llama.cpp's converter writes it (text only; the vision
     * tower and projector belong in llama.cpp's separate mmproj file, which is not written) */
    if (cfg.wrap)
        fprintf(stderr, "%s: %s: the language model exported as a %s GGUF; the vision tower and projector are "
                        "not included (llama.cpp reads them from a separate mmproj file)\n",
                o->model_dir, cfg.wrap->class_name, arch);
    pt = calloc(nspec + 3, sizeof *pt);
    if (!pt) {
        st = lt_fail(err, LT_ERR_NOMEM, "out of memory");
        goto done;
    }
    int64_t max_numel = 1;
    for (size_t i = 0; i < nspec; i++) {
        plan_tensor *t = &pt[np++];
        if ((st = map_name(fam, specs[i].name, t->name, sizeof t->name, &t->layer, err))) goto done;
        snprintf(t->hf, sizeof t->hf, "%s", specs[i].name);
        t->ndim = specs[i].ndim;
        t->shape[0] = specs[i].shape[0];
        t->shape[1] = t->ndim > 1 ? specs[i].shape[1] : 1;
        t->target = t->layer >= 0 ? lora_target_of(t->hf, t->layer) : -1;
        const lt_st_tensor *cw = o->weights ? lt_st_find(o->weights, t->hf) : NULL;
        if (o->weights && (!cw || cw->ndim != t->ndim || cw->shape[0] != t->shape[0] ||
                           (t->ndim > 1 && cw->shape[1] != t->shape[1]))) {
            st = lt_fail(err, LT_ERR_FORMAT, "the checkpoint %s tensor '%s' as model %s's config.json implies",
                         cw ? "does not shape" : "has no", t->hf, o->model_dir);
            goto done;
        }
        t->type = t->ndim == 1 ? LT_GGUF_F32 : type;
        if (t->ndim == 1 && strstr(t->hf, "norm.weight")) t->add = fam->norm_offset;
        if (t->type == LT_GGUF_Q8_0 && t->shape[1] % LT_GGUF_Q8_0_BLOCK) t->type = LT_GGUF_F16;
        if (fam->gguf.permute_qk && t->layer >= 0) {
            char q[64], k[64];
            snprintf(q, sizeof q, "blk.%d.attn_q.", t->layer);
            snprintf(k, sizeof k, "blk.%d.attn_k.", t->layer);
            if (!strncmp(t->name, q, strlen(q))) t->permute_heads = cfg.num_heads;
            if (!strncmp(t->name, k, strlen(k))) t->permute_heads = cfg.num_kv_heads;
        }
        if (t->shape[0] * t->shape[1] > max_numel) max_numel = t->shape[0] * t->shape[1];
        /* a tied head that llama.cpp still wants as output.weight: the embedding again */
        if (!strcmp(t->hf, "model.embed_tokens.weight") && cfg.tie_word_embeddings && fam->gguf.output_always) {
            plan_tensor *h = &pt[np++];
            *h = *t;
            snprintf(h->name, sizeof h->name, "output.weight");
        }
    }
    /* Llama 3: the divisor of each rotary frequency (rope_freqs); LongRoPE: its two factor lists, which
     * llama.cpp divides the frequencies by (long when its context is past the original length) */
    static const struct {
        int rope_type;
        src_kind src;
        const char *name;
    } DERIVED[] = {{LT_ROPE_LLAMA3, SRC_ROPE_FREQS, "rope_freqs.weight"},
                   {LT_ROPE_LONGROPE, SRC_ROPE_LONG, "rope_factors_long.weight"},
                   {LT_ROPE_LONGROPE, SRC_ROPE_SHORT, "rope_factors_short.weight"}};
    for (size_t k = 0; k < sizeof DERIVED / sizeof DERIVED[0]; k++) {
        if (cfg.rope_scaling_type != DERIVED[k].rope_type) continue;
        plan_tensor *t = &pt[np++];
        snprintf(t->name, sizeof t->name, "%s", DERIVED[k].name);
        t->src = DERIVED[k].src;
        t->ndim = 1;
        t->shape[0] = lt_config_rotary_dim(&cfg) / 2;
        t->shape[1] = 1;
        t->type = LT_GGUF_F32;
        t->layer = t->target = -1;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < np; i++) {
        pt[i].offset = off;
        pt[i].nbytes = tensor_bytes(&pt[i]);
        off += (pt[i].nbytes + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
    }

    /* metadata */
    const char *base = strrchr(o->model_dir, '/');
    char name[256];
    snprintf(name, sizeof name, "%s", base && base[1] ? base + 1 : o->model_dir);
    size_t nl = strlen(name);
    while (nl > 1 && name[nl - 1] == '/') name[--nl] = 0;
    kv_str(&kv, "general.architecture", arch);
    kv_str(&kv, "general.name", name);
    kv_u32(&kv, "general.alignment", GGUF_ALIGN);
    kv_u32(&kv, "general.file_type",
           type == LT_GGUF_F32 ? FT_ALL_F32 : type == LT_GGUF_F16 ? FT_MOSTLY_F16
                                          : type == LT_GGUF_BF16 ? FT_MOSTLY_BF16
                                                                 : FT_MOSTLY_Q8_0);
    if (type == LT_GGUF_Q8_0) kv_u32(&kv, "general.quantization_version", 2);
    /* a sliding window (when set) bounds the context: llama.cpp's llama / qwen2 graphs attend to all
     * positions, which equals the model's attention only within the window */
    int ctx = cfg.max_position_embeddings;
    if (!fam->gguf.swa && cfg.sliding_window > 0 && cfg.sliding_window < ctx) ctx = cfg.sliding_window;
    kv_arch_u32(&kv, arch, "context_length", (uint32_t)ctx);
    kv_arch_u32(&kv, arch, "embedding_length", (uint32_t)cfg.hidden_size);
    kv_arch_u32(&kv, arch, "block_count", (uint32_t)cfg.num_layers);
    kv_arch_u32(&kv, arch, "feed_forward_length", (uint32_t)cfg.intermediate_size);
    kv_arch_u32(&kv, arch, "attention.head_count", (uint32_t)cfg.num_heads);
    kv_arch_u32(&kv, arch, "attention.head_count_kv", (uint32_t)cfg.num_kv_heads);
    kv_arch_u32(&kv, arch, "attention.key_length", (uint32_t)cfg.head_dim);
    kv_arch_u32(&kv, arch, "attention.value_length", (uint32_t)cfg.head_dim);
    kv_arch_f32(&kv, arch, "attention.layer_norm_rms_epsilon", cfg.rms_norm_eps);
    kv_arch_u32(&kv, arch, "rope.dimension_count", (uint32_t)lt_config_rotary_dim(&cfg)); /* partial rotary: phi3 */
    kv_arch_f32(&kv, arch, "rope.freq_base", (float)cfg.rope_theta);
    if (cfg.rope_tables == 2) kv_arch_f32(&kv, arch, "rope.freq_base_swa", (float)cfg.rope_local_theta);
    if (cfg.rope_scaling_type == LT_ROPE_LONGROPE) {
        /* llama.cpp multiplies cos / sin by attn_factor (transformers' attention_factor) and takes the long
         * factors when its context per sequence is past original_context_length */
        kv_arch_f32(&kv, arch, "rope.scaling.attn_factor", lt_config_rope_scale(&cfg));
        kv_arch_u32(&kv, arch, "rope.scaling.original_context_length", (uint32_t)cfg.rope_original_max_pos);
    }
    if (cfg.rope_scaling_type == LT_ROPE_LINEAR) { /* linear: llama.cpp divides the positions by the factor */
        kv_arch_str(&kv, arch, "rope.scaling.type", "linear");
        kv_arch_f32(&kv, arch, "rope.scaling.factor", (float)cfg.rope_factor);
    }
    if (fam->gguf.swa && cfg.sliding_window > 0) {
        kv_arch_u32(&kv, arch, "attention.sliding_window", (uint32_t)cfg.sliding_window);
        kv_arch_u32(&kv, arch, "attention.sliding_window_pattern", (uint32_t)swa_pattern(&cfg));
    }
    if (fam->gguf.softcaps) {
        kv_arch_f32(&kv, arch, "attn_logit_softcapping", cfg.attn_softcap);
        kv_arch_f32(&kv, arch, "final_logit_softcapping", cfg.final_softcap);
    }
    kv_arch_u32(&kv, arch, "vocab_size", (uint32_t)cfg.vocab_size);
    if ((st = add_tokenizer(&kv, o->model_dir, &cfg, err))) goto done;

    /* tensor infos */
    for (size_t i = 0; i < np; i++) {
        put_str(&ti, pt[i].name, strlen(pt[i].name));
        put_u32(&ti, (uint32_t)pt[i].ndim);
        if (pt[i].ndim == 1) put_u64(&ti, (uint64_t)pt[i].shape[0]);
        else { /* innermost first */
            put_u64(&ti, (uint64_t)pt[i].shape[1]);
            put_u64(&ti, (uint64_t)pt[i].shape[0]);
        }
        put_u32(&ti, (uint32_t)pt[i].type);
        put_u64(&ti, pt[i].offset);
    }
    if (kv.oom || ti.oom) {
        st = lt_fail(err, LT_ERR_NOMEM, "out of memory for the GGUF metadata");
        goto done;
    }
    buf hd = {0};
    put(&hd, "GGUF", 4);
    put_u32(&hd, 3);
    put_u64(&hd, (uint64_t)np);
    put_u64(&hd, kv.count);

    char tag[128];
    lt_tmp_tag(tag, sizeof tag);
    snprintf(tmp_path, sizeof tmp_path, "%s.tmp-%s", o->out_path, tag);
    f = fopen(tmp_path, "wb");
    w = malloc((size_t)max_numel * sizeof *w);
    tmp = malloc((size_t)max_numel * sizeof *tmp);
    conv = malloc((size_t)max_numel * 4);
    if (!f || !w || !tmp || !conv || hd.oom) {
        st = f ? lt_fail(err, LT_ERR_NOMEM, "out of memory")
               : lt_fail(err, LT_ERR_IO, "%s: cannot create: %s", tmp_path, strerror(errno));
        free(hd.p);
        goto done;
    }
    st = write_all(f, hd.p, hd.n, tmp_path, err);
    free(hd.p);
    if (st || (st = write_all(f, kv.p, kv.n, tmp_path, err)) || (st = write_all(f, ti.p, ti.n, tmp_path, err)) ||
        (st = pad_to(f, 24 + kv.n + ti.n, tmp_path, err)))
        goto done;

    /* data, one tensor at a time */
    float lora_scale = adp ? (float)lt_lora_scale(adp->cfg.alpha, adp->cfg.r, adp->cfg.rslora) : 0.0f;
    for (size_t i = 0; i < np; i++) {
        plan_tensor *t = &pt[i];
        size_t numel = (size_t)(t->shape[0] * t->shape[1]);
        if (t->src == SRC_ROPE_FREQS) {
            lt_config plain = cfg;
            plain.rope_scaling_type = 0;
            lt_config_rope_inv_freq(&plain, tmp);
            lt_config_rope_inv_freq(&cfg, w);
            for (size_t j = 0; j < numel; j++) w[j] = tmp[j] / w[j];
        } else if (t->src == SRC_ROPE_LONG || t->src == SRC_ROPE_SHORT) {
            memcpy(w, t->src == SRC_ROPE_LONG ? cfg.rope_long_factor : cfg.rope_short_factor, numel * sizeof *w);
        } else {
            const lt_st_tensor *s = o->weights ? lt_st_find(o->weights, t->hf) : lt_st_model_find(stm, t->hf);
            if ((st = lt_st_to_f32(s, w, numel, err))) goto done;
            const lt_peft_tensor *lp = adp && t->target >= 0 ? lt_peft_find(adp, t->layer, t->target) : NULL;
            if (lp) /* W (out, in) += scale * B (out, r) @ A (r, in), as PEFT's merge */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, lp->out, lp->in, adp->cfg.r, lora_scale, lp->B,
                            adp->cfg.r, lp->A, lp->in, 1.0f, w, lp->in);
            /* trained embeddings (--train-embeddings new|all) replace their rows, as PEFT's merge_and_unload;
             * a tied head (token_embd, or output.weight written from it) follows the embedding */
            int is_emb = !strcmp(t->hf, "model.embed_tokens.weight"), is_head = !strcmp(t->hf, "lm_head.weight");
            if (adp && adp->emb.mode && (is_emb || is_head) &&
                (st = lt_peft_embed_apply(&adp->emb, is_emb ? w : NULL, is_head ? w : NULL, t->shape[0], t->shape[1],
                                          err)))
                goto done;
            if (t->add != 0.0f)
                for (size_t j = 0; j < numel; j++) w[j] += t->add;
            if (t->permute_heads) {
                permute_rows(w, tmp, t->permute_heads, t->shape[0], t->shape[1]);
                memcpy(w, tmp, numel * sizeof *w);
            }
        }
        for (size_t j = 0; j < numel; j++)
            if (!isfinite(w[j])) {
                st = lt_fail(err, LT_ERR_NONFINITE, "tensor '%s' (%s) holds a non-finite value at %zu", t->hf,
                             t->name, j);
                goto done;
            }
        if (t->type == LT_GGUF_F16)
            for (size_t j = 0; j < numel; j++)
                if (fabsf(w[j]) > 65504.0f) {
                    st = lt_fail(err, LT_ERR_RANGE,
                                 "tensor '%s' (%s) holds %g at %zu, beyond f16's range (65504): use --type bf16 or f32",
                                 t->hf, t->name, (double)w[j], j);
                    goto done;
                }
        const void *data = w;
        if (t->type == LT_GGUF_F16 || t->type == LT_GGUF_BF16) {
            uint16_t *h = conv;
            for (size_t j = 0; j < numel; j++) h[j] = t->type == LT_GGUF_F16 ? lt_f32_to_f16(w[j]) : lt_f32_to_bf16(w[j]);
            data = h;
        } else if (t->type == LT_GGUF_Q8_0) {
            lt_gguf_quantize_q8_0(w, numel, conv);
            data = conv;
        }
        if ((st = write_all(f, data, t->nbytes, tmp_path, err)) ||
            (st = pad_to(f, t->offset + t->nbytes, tmp_path, err)))
            goto done;
    }
    if (fflush(f) || fsync(fileno(f))) {
        st = lt_fail(err, LT_ERR_IO, "%s: write failed: %s", tmp_path, strerror(errno));
        goto done;
    }
    fclose(f);
    f = NULL;
    if (rename(tmp_path, o->out_path)) {
        st = lt_fail(err, LT_ERR_IO, "cannot rename %s to %s: %s", tmp_path, o->out_path, strerror(errno));
        goto done;
    }
    tmp_path[0] = 0;
    lt_fsync_parent(o->out_path);
done:
    if (f) fclose(f);
    if (tmp_path[0]) unlink(tmp_path);
    free(w);
    free(tmp);
    free(conv);
    free(kv.p);
    free(ti.p);
    free(pt);
    free(specs);
    lt_peft_free(ad);
    if (stm) lt_st_close_model(stm);
    return st;
}
