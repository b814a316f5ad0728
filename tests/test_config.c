/* test_config.c -- config.json parsing: a valid config per architecture
 * (real model geometries), every refusal with its message, lt_config_load
 * from a folder / file, and llama3 rope inv_freq against transformers 4.51.3
 * (tests/fixtures/config/llama3_rope.json, tools/gen_config_fixture.py).
 *
 * Tolerance for inv_freq: max relative error <= 1e-6 per element. We compute
 * in double and round once; transformers computes in float32, which differs
 * by a few float32 ulps (measured ~3e-7 relative). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_config.h"
#include "lt_family.h"
#include "lt_test.h"

static const char *LLAMA31_8B =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], \"head_dim\": 128,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 14336, \"max_position_embeddings\": 131072, \"mlp_bias\": false,"
    " \"model_type\": \"llama\", \"num_attention_heads\": 32, \"num_hidden_layers\": 32,"
    " \"num_key_value_heads\": 8, \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05,"
    " \"rope_scaling\": {\"factor\": 8.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0,"
    " \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}, \"rope_theta\": 500000.0,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.43.0.dev0\","
    " \"use_cache\": true, \"vocab_size\": 128256}";

static const char *LLAMA2_7B =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02, \"intermediate_size\": 11008,"
    " \"max_position_embeddings\": 4096, \"model_type\": \"llama\", \"num_attention_heads\": 32,"
    " \"num_hidden_layers\": 32, \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05, \"rope_scaling\": null,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"float16\", \"use_cache\": true, \"vocab_size\": 32000}";

static const char *MISTRAL_7B_V01 =
    "{\"architectures\": [\"MistralForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02, \"intermediate_size\": 14336,"
    " \"max_position_embeddings\": 32768, \"model_type\": \"mistral\", \"num_attention_heads\": 32,"
    " \"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0,"
    " \"sliding_window\": 4096, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\","
    " \"use_cache\": true, \"vocab_size\": 32000}";

/* Mistral-Nemo-Instruct-2407's config.json (mistralai): head_dim 128 != 5120 / 32 = 160 */
static const char *MISTRAL_NEMO =
    "{\"architectures\": [\"MistralForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 1,"
    " \"eos_token_id\": 2, \"head_dim\": 128, \"hidden_act\": \"silu\", \"hidden_size\": 5120,"
    " \"initializer_range\": 0.02, \"intermediate_size\": 14336, \"max_position_embeddings\": 1024000,"
    " \"model_type\": \"mistral\", \"num_attention_heads\": 32, \"num_hidden_layers\": 40,"
    " \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-05, \"rope_theta\": 1000000.0, \"sliding_window\": null,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.43.0.dev0\","
    " \"use_cache\": true, \"vocab_size\": 131072}";

static const char *QWEN25_05B =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 151643,"
    " \"eos_token_id\": 151643, \"hidden_act\": \"silu\", \"hidden_size\": 896, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 4864, \"max_position_embeddings\": 32768, \"max_window_layers\": 24,"
    " \"model_type\": \"qwen2\", \"num_attention_heads\": 14, \"num_hidden_layers\": 24,"
    " \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0,"
    " \"sliding_window\": 32768, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\","
    " \"use_cache\": true, \"use_sliding_window\": false, \"vocab_size\": 151936}";

static const char *QWEN3_06B =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 151643, \"eos_token_id\": 151645, \"head_dim\": 128, \"hidden_act\": \"silu\","
    " \"hidden_size\": 1024, \"initializer_range\": 0.02, \"intermediate_size\": 3072,"
    " \"max_position_embeddings\": 40960, \"max_window_layers\": 28, \"model_type\": \"qwen3\","
    " \"num_attention_heads\": 16, \"num_hidden_layers\": 28, \"num_key_value_heads\": 8,"
    " \"rms_norm_eps\": 1e-06, \"rope_scaling\": null, \"rope_theta\": 1000000, \"sliding_window\": null,"
    " \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\", \"use_cache\": true,"
    " \"use_sliding_window\": false, \"vocab_size\": 151936}";
/* OLMo-2-1124-7B's config.json (allenai) */
static const char *OLMO2_7B =
    "{\"architectures\": [\"Olmo2ForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"eos_token_id\": 100257, \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 11008, \"max_position_embeddings\": 4096, \"model_type\": \"olmo2\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 32,"
    " \"pad_token_id\": 100277, \"rms_norm_eps\": 1e-06, \"rope_scaling\": null, \"rope_theta\": 500000,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"float32\", \"use_cache\": true,"
    " \"vocab_size\": 100352}";

/* gemma-2-2b's config.json (google), as transformers 4 wrote it */
static const char *GEMMA2_2B =
    "{\"architectures\": [\"Gemma2ForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"attn_logit_softcapping\": 50.0, \"bos_token_id\": 2, \"cache_implementation\": \"hybrid\","
    " \"eos_token_id\": 1, \"final_logit_softcapping\": 30.0, \"head_dim\": 256,"
    " \"hidden_act\": \"gelu_pytorch_tanh\", \"hidden_activation\": \"gelu_pytorch_tanh\", \"hidden_size\": 2304,"
    " \"initializer_range\": 0.02, \"intermediate_size\": 9216, \"max_position_embeddings\": 8192,"
    " \"model_type\": \"gemma2\", \"num_attention_heads\": 8, \"num_hidden_layers\": 26,"
    " \"num_key_value_heads\": 4, \"pad_token_id\": 0, \"query_pre_attn_scalar\": 256, \"rms_norm_eps\": 1e-06,"
    " \"rope_theta\": 10000.0, \"sliding_window\": 4096, \"torch_dtype\": \"float32\","
    " \"transformers_version\": \"4.42.4\", \"use_cache\": true, \"vocab_size\": 256000}";

/* gemma-3-4b-it's text_config as a gemma3_text config.json (transformers 4 form) */
static const char *GEMMA3_4B =
    "{\"architectures\": [\"Gemma3ForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"attn_logit_softcapping\": null, \"cache_implementation\": \"hybrid\", \"final_logit_softcapping\": null,"
    " \"head_dim\": 256, \"hidden_activation\": \"gelu_pytorch_tanh\", \"hidden_size\": 2560,"
    " \"initializer_range\": 0.02, \"intermediate_size\": 10240, \"max_position_embeddings\": 131072,"
    " \"model_type\": \"gemma3_text\", \"num_attention_heads\": 8, \"num_hidden_layers\": 34,"
    " \"num_key_value_heads\": 4, \"query_pre_attn_scalar\": 256, \"rms_norm_eps\": 1e-06,"
    " \"rope_local_base_freq\": 10000.0, \"rope_scaling\": {\"factor\": 8.0, \"rope_type\": \"linear\"},"
    " \"rope_theta\": 1000000.0, \"sliding_window\": 1024, \"sliding_window_pattern\": 6,"
    " \"torch_dtype\": \"bfloat16\", \"use_cache\": true, \"vocab_size\": 262208}";

/* base with key set to the JSON `value` (NULL: key removed); static buffer */
static const char *with(const char *base, const char *key, const char *value) {
    static char *out = NULL;
    cJSON *root = cJSON_Parse(base);
    if (!root) {
        fprintf(stderr, "test bug: base config does not parse\n");
        exit(1);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    if (value) {
        cJSON *v = cJSON_Parse(value);
        if (!v) {
            fprintf(stderr, "test bug: value %s does not parse\n", value);
            exit(1);
        }
        cJSON_AddItemToObject(root, key, v);
    }
    free(out);
    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static int parse_ok(const char *what, const char *json, lt_config *c) {
    lt_err err = {{0}};
    memset(c, 0x5a, sizeof *c); /* poison */
    lt_status st = lt_config_parse(json, "config.json", c, &err);
    LT_CHECK(st == LT_OK, "%s: %s: %s", what, lt_status_name(st), err.msg);
    return st == LT_OK;
}

static void expect_fail(const char *what, const char *json, lt_status want, const char *a, const char *b) {
    lt_err err = {{0}};
    lt_config c;
    lt_status st = lt_config_parse(json, "config.json", &c, &err);
    LT_CHECK(st == want, "%s: status %s, expected %s (msg: %s)", what, lt_status_name(st), lt_status_name(want),
             err.msg);
    LT_CHECK(strncmp(err.msg, "config.json: ", 13) == 0, "%s: message does not start with the origin: %s", what,
             err.msg);
    LT_CHECK((!a || strstr(err.msg, a)) && (!b || strstr(err.msg, b)), "%s: message lacks '%s' / '%s': %s", what,
             a ? a : "", b ? b : "", err.msg);
    if (getenv("LT_TEST_VERBOSE")) printf("  %-40s -> %s\n", what, err.msg);
}

static void test_valid(void) {
    lt_config c;
    if (parse_ok("llama 3.1 8B", LLAMA31_8B, &c)) {
        LT_CHECK(c.arch == LT_ARCH_LLAMA && strcmp(c.model_type, "llama") == 0 &&
                     strcmp(c.architecture, "LlamaForCausalLM") == 0,
                 "llama3.1 arch");
        LT_CHECK(c.vocab_size == 128256 && c.hidden_size == 4096 && c.intermediate_size == 14336 &&
                     c.num_layers == 32 && c.num_heads == 32 && c.num_kv_heads == 8 && c.head_dim == 128,
                 "llama3.1 sizes");
        LT_CHECK(c.rms_norm_eps == 1e-5f && c.rope_theta == 500000.0 && c.max_position_embeddings == 131072,
                 "llama3.1 eps/theta/maxpos");
        LT_CHECK(c.rope_scaling_type == 1 && c.rope_factor == 8.0 && c.rope_low_freq_factor == 1.0 &&
                     c.rope_high_freq_factor == 4.0 && c.rope_original_max_pos == 8192,
                 "llama3.1 rope scaling");
        LT_CHECK(!c.tie_word_embeddings && !c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.qk_norm &&
                     c.sliding_window == 0,
                 "llama3.1 flags");
        LT_CHECK(c.bos_token_id == 128000 && c.eos_token_id == 128001, "llama3.1 bos/eos (first of list): %d %d",
                 c.bos_token_id, c.eos_token_id);
        LT_CHECK(c.torch_dtype == LT_BF16, "llama3.1 dtype");
    }
    if (parse_ok("llama 2 7B", LLAMA2_7B, &c)) {
        LT_CHECK(c.num_kv_heads == 32 && c.head_dim == 128, "llama2 kv default = heads, head_dim = hidden/heads");
        LT_CHECK(c.rope_scaling_type == 0 && c.rope_theta == 10000.0, "llama2 rope defaults");
        LT_CHECK(c.bos_token_id == 1 && c.eos_token_id == 2 && c.torch_dtype == LT_F16, "llama2 tokens/dtype");
    }
    if (parse_ok("llama biases", with(with(LLAMA2_7B, "attention_bias", "true"), "mlp_bias", "true"), &c))
        LT_CHECK(c.qkv_bias && c.o_bias && c.mlp_bias, "llama attention_bias/mlp_bias flags");
    /* transformers' defaults for absent keys */
    if (parse_ok("llama defaults",
                 with(with(with(with(with(with(LLAMA2_7B, "tie_word_embeddings", NULL), "rms_norm_eps", NULL),
                                     "max_position_embeddings", NULL),
                                "torch_dtype", NULL),
                           "bos_token_id", NULL),
                      "architectures", NULL),
                 &c)) {
        LT_CHECK(c.tie_word_embeddings == 0, "tie_word_embeddings defaults to false (LlamaConfig)");
        LT_CHECK(c.rms_norm_eps == 1e-6f && c.max_position_embeddings == 2048, "llama eps/maxpos defaults");
        LT_CHECK(c.torch_dtype == LT_F32 && c.bos_token_id == -1, "absent dtype/bos");
        LT_CHECK(strcmp(c.architecture, "LlamaForCausalLM") == 0, "architecture from model_type");
    }
    if (parse_ok("llama head_dim null", with(LLAMA31_8B, "head_dim", "null"), &c))
        LT_CHECK(c.head_dim == 128, "head_dim null -> hidden/heads");
    if (parse_ok("llama head_dim 64 given", with(LLAMA31_8B, "head_dim", "64"), &c))
        LT_CHECK(c.head_dim == 64, "head_dim from config");
    if (parse_ok("rope_scaling default", with(LLAMA2_7B, "rope_scaling", "{\"rope_type\":\"default\"}"), &c))
        LT_CHECK(c.rope_scaling_type == 0, "rope_type default = none");
    if (parse_ok("eos empty list", with(LLAMA2_7B, "eos_token_id", "[]"), &c)) LT_CHECK(c.eos_token_id == -1, "eos []");
    if (parse_ok("eos null", with(LLAMA2_7B, "eos_token_id", "null"), &c)) LT_CHECK(c.eos_token_id == -1, "eos null");
    if (parse_ok("kv null", with(LLAMA31_8B, "num_key_value_heads", "null"), &c))
        LT_CHECK(c.num_kv_heads == 32, "kv null -> heads");

    if (parse_ok("mistral 7B v0.1", MISTRAL_7B_V01, &c)) {
        LT_CHECK(c.arch == LT_ARCH_MISTRAL && c.num_kv_heads == 8 && c.head_dim == 128, "mistral sizes");
        LT_CHECK(c.sliding_window == 4096 && !c.qkv_bias && !c.o_bias && !c.qk_norm, "mistral window/flags");
    }
    if (parse_ok("mistral sliding_window null", with(MISTRAL_7B_V01, "sliding_window", "null"), &c))
        LT_CHECK(c.sliding_window == 0, "mistral null window = none");
    if (parse_ok("mistral sliding_window absent", with(MISTRAL_7B_V01, "sliding_window", NULL), &c))
        LT_CHECK(c.sliding_window == 4096, "mistral absent window = MistralConfig default 4096");
    if (parse_ok("mistral attention_bias ignored", with(MISTRAL_7B_V01, "attention_bias", "true"), &c))
        LT_CHECK(!c.qkv_bias && !c.o_bias, "mistral has no biases in transformers");
    if (parse_ok("mistral kv absent", with(MISTRAL_7B_V01, "num_key_value_heads", NULL), &c))
        LT_CHECK(c.num_kv_heads == 8, "mistral kv absent = MistralConfig default 8");
    if (parse_ok("mistral head_dim null", with(MISTRAL_7B_V01, "head_dim", "null"), &c))
        LT_CHECK(c.head_dim == 128, "mistral head_dim null");
    if (parse_ok("mistral nemo", MISTRAL_NEMO, &c)) {
        LT_CHECK(c.arch == LT_ARCH_MISTRAL && c.hidden_size == 5120 && c.num_heads == 32 && c.head_dim == 128,
                 "mistral nemo head_dim from config (not 5120 / 32 = 160): %d", c.head_dim);
        LT_CHECK(c.num_layers == 40 && c.num_kv_heads == 8 && c.intermediate_size == 14336 && c.vocab_size == 131072,
                 "mistral nemo sizes");
        LT_CHECK(c.rope_theta == 1e6 && c.max_position_embeddings == 1024000 && c.sliding_window == 0 &&
                     c.rms_norm_eps == 1e-5f && !c.qkv_bias && !c.o_bias && !c.qk_norm && !c.tie_word_embeddings,
                 "mistral nemo values");
    }
    if (parse_ok("mistral nemo head_dim null", with(MISTRAL_NEMO, "head_dim", "null"), &c))
        LT_CHECK(c.head_dim == 160, "mistral nemo head_dim null -> hidden/heads: %d", c.head_dim);

    if (parse_ok("qwen2.5 0.5B", QWEN25_05B, &c)) {
        LT_CHECK(c.arch == LT_ARCH_QWEN2 && c.num_heads == 14 && c.num_kv_heads == 2 && c.head_dim == 64,
                 "qwen2 sizes");
        LT_CHECK(c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.qk_norm, "qwen2 q/k/v bias only");
        LT_CHECK(c.tie_word_embeddings && c.sliding_window == 0 && c.rope_theta == 1e6, "qwen2 tie/window/theta");
        LT_CHECK(c.eos_token_id == 151643, "qwen2 eos");
    }
    if (parse_ok("qwen2 sliding on", with(with(QWEN25_05B, "use_sliding_window", "true"), "max_window_layers", "20"),
                 &c))
        LT_CHECK(c.sliding_window == 32768, "qwen2 use_sliding_window true records the window: %d", c.sliding_window);
    if (parse_ok("qwen2 sliding on, no layer uses it", with(QWEN25_05B, "use_sliding_window", "true"), &c))
        LT_CHECK(c.sliding_window == 0, "max_window_layers >= num_layers: no window");

    if (parse_ok("qwen3 0.6B", QWEN3_06B, &c)) {
        LT_CHECK(c.arch == LT_ARCH_QWEN3 && c.hidden_size == 1024 && c.num_heads == 16 && c.head_dim == 128,
                 "qwen3 head_dim from config (not hidden/heads)");
        LT_CHECK(c.qk_norm && !c.qkv_bias && !c.o_bias && c.tie_word_embeddings && c.sliding_window == 0,
                 "qwen3 flags");
        LT_CHECK(c.rope_theta == 1e6 && c.rms_norm_eps == 1e-6f && c.eos_token_id == 151645, "qwen3 values");
    }
    if (parse_ok("qwen3 attention_bias", with(QWEN3_06B, "attention_bias", "true"), &c))
        LT_CHECK(c.qkv_bias && c.o_bias && c.qk_norm, "qwen3 attention_bias -> q/k/v/o bias");
    if (parse_ok("qwen3 head_dim absent", with(QWEN3_06B, "head_dim", NULL), &c))
        LT_CHECK(c.head_dim == 128, "qwen3 head_dim absent = Qwen3Config default 128: %d", c.head_dim);

    if (parse_ok("olmo2 7B", OLMO2_7B, &c)) {
        LT_CHECK(c.arch == LT_ARCH_OLMO2 && c.head_dim == 128 && c.num_kv_heads == 32, "olmo2 sizes");
        LT_CHECK(c.qk_norm == LT_QK_NORM_WHOLE && c.post_norm && !c.qkv_bias && !c.o_bias && !c.tie_word_embeddings,
                 "olmo2 flags: whole-projection q/k norm, post-norm");
        LT_CHECK(c.rope_theta == 5e5 && c.rms_norm_eps == 1e-6f, "olmo2 values");
    }
    if (parse_ok("olmo2 rms_norm_eps absent", with(OLMO2_7B, "rms_norm_eps", NULL), &c))
        LT_CHECK(c.rms_norm_eps == 1e-5f, "olmo2 rms_norm_eps absent = Olmo2Config default 1e-5: %g",
                 (double)c.rms_norm_eps);
    expect_fail("olmo2 mlp_bias", with(OLMO2_7B, "mlp_bias", "true"), LT_ERR_UNSUPPORTED, "mlp_bias", "olmo2");

    if (parse_ok("gemma2 2B", GEMMA2_2B, &c)) {
        LT_CHECK(c.arch == LT_ARCH_GEMMA2 && c.head_dim == 256 && c.num_kv_heads == 4 && c.tie_word_embeddings,
                 "gemma2 sizes, tied head (absent tie_word_embeddings = Gemma2Config default true)");
        LT_CHECK(c.norm_offset == 1.0f && c.sandwich_norm && c.embed_scale && c.mlp_act == LT_ACT_GELU_TANH &&
                     !c.post_norm && !c.qk_norm && !c.qkv_bias,
                 "gemma2 flags: (1 + w) norms, four norms, normalizer, GeGLU");
        LT_CHECK(c.attn_scale == 0.0625f && c.attn_softcap == 50.0f && c.final_softcap == 30.0f,
                 "gemma2 scale 256^-0.5 and soft-caps: %g %g %g", (double)c.attn_scale, (double)c.attn_softcap,
                 (double)c.final_softcap);
        int alt = c.window_layers && c.sliding_window == 4096;
        for (int l = 0; l < c.num_layers; l++) alt &= lt_config_layer_window(&c, l) == (l % 2 == 0 ? 4096 : 0);
        LT_CHECK(alt, "gemma2 v4 config: layers 0, 2, ... slide (window 4096), the others are full");
    }
    if (parse_ok("gemma2 defaults", with(with(with(GEMMA2_2B, "attn_logit_softcapping", NULL), "sliding_window", NULL),
                                         "hidden_activation", NULL), &c))
        LT_CHECK(c.attn_softcap == 50.0f && c.sliding_window == 4096 && c.mlp_act == LT_ACT_GELU_TANH,
                 "gemma2 absent keys take Gemma2Config's defaults");
    if (parse_ok("gemma2 caps null", with(with(GEMMA2_2B, "attn_logit_softcapping", "null"), "final_logit_softcapping",
                                          "null"), &c))
        LT_CHECK(c.attn_softcap == 0.0f && c.final_softcap == 0.0f, "gemma2 null soft-caps: none");
    if (parse_ok("gemma2 layer_types", with(GEMMA2_2B, "layer_types",
                                            "[\"full_attention\",\"sliding_attention\",\"full_attention\","
                                            "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\","
                                            "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\","
                                            "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\","
                                            "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\","
                                            "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\","
                                            "\"full_attention\",\"full_attention\",\"sliding_attention\"]"),
                 &c))
        LT_CHECK(lt_config_layer_window(&c, 0) == 0 && lt_config_layer_window(&c, 1) == 4096 &&
                     lt_config_layer_window(&c, 2) == 0 && lt_config_layer_window(&c, 25) == 4096,
                 "gemma2 v5 layer_types decide which layers slide");
    expect_fail("gemma2 exact gelu", with(GEMMA2_2B, "hidden_activation", "\"gelu\""), LT_ERR_UNSUPPORTED,
                "hidden_activation", "gelu");
    expect_fail("gemma2 hidden_act disagrees", with(GEMMA2_2B, "hidden_act", "\"silu\""), LT_ERR_UNSUPPORTED,
                "hidden_act", "disagrees");
    expect_fail("gemma2 bidirectional", with(GEMMA2_2B, "use_bidirectional_attention", "true"), LT_ERR_UNSUPPORTED,
                "use_bidirectional_attention", NULL);
    expect_fail("gemma2 sliding layers without a window", with(GEMMA2_2B, "sliding_window", "null"), LT_ERR_INVALID,
                "sliding_window", "null");
    expect_fail("gemma2 query_pre_attn_scalar 0", with(GEMMA2_2B, "query_pre_attn_scalar", "0"), LT_ERR_INVALID,
                "query_pre_attn_scalar", NULL);
    expect_fail("gemma2 unknown key", with(GEMMA2_2B, "attn_logit_softcap", "50"), LT_ERR_UNSUPPORTED,
                "attn_logit_softcap", "gemma2");
    if (parse_ok("gemma3 4B", GEMMA3_4B, &c)) {
        LT_CHECK(c.arch == LT_ARCH_GEMMA3 && c.qk_norm == LT_QK_NORM_HEAD && c.norm_offset == 1.0f &&
                     c.sandwich_norm && c.embed_scale && c.tie_word_embeddings && c.attn_softcap == 0.0f &&
                     c.final_softcap == 0.0f,
                 "gemma3 flags: per-head q/k norm, Gemma 2's layer, no soft-caps");
        LT_CHECK(c.rope_tables == 2 && c.rope_theta == 1e6 && c.rope_scaling_type == 2 && c.rope_factor == 8.0 &&
                     c.rope_local_theta == 1e4 && c.rope_local_factor == 1.0,
                 "gemma3 two rotary tables: global 1e6 / linear 8, local 1e4");
        int pat = 1;
        for (int l = 0; l < c.num_layers; l++)
            pat &= lt_config_layer_window(&c, l) == ((l + 1) % 6 == 0 ? 0 : 1024);
        LT_CHECK(pat, "gemma3: 5 local layers (window 1024) : 1 global");
        float g[128], lo[128];
        lt_config_rope_inv_freq(&c, g);
        lt_config_rope_inv_freq_local(&c, lo);
        LT_CHECK(fabsf(g[1] - (float)(pow(1e6, -2.0 / 256) / 8)) < 1e-9f && fabsf(lo[1] - (float)pow(1e4, -2.0 / 256)) < 1e-9f,
                 "gemma3 inv_freq: global %g local %g", (double)g[1], (double)lo[1]);
    }
    if (parse_ok("gemma3 defaults", with(with(GEMMA3_4B, "rope_theta", NULL), "rope_local_base_freq", NULL), &c))
        LT_CHECK(c.rope_theta == 1e6 && c.rope_local_theta == 1e4, "gemma3 absent thetas: 1e6 global, 1e4 local");
    expect_fail("gemma3 local theta conflict",
                with(GEMMA3_4B, "rope_parameters",
                     "{\"full_attention\": {\"rope_type\": \"linear\", \"factor\": 8.0, \"rope_theta\": 1000000.0},"
                     " \"sliding_attention\": {\"rope_type\": \"default\", \"rope_theta\": 20000.0}}"),
                LT_ERR_INVALID, "rope_local_base_freq", "conflicts");
    expect_fail("gemma3 yarn", with(GEMMA3_4B, "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 8.0}"),
                LT_ERR_UNSUPPORTED, "rope_scaling", "yarn");
    expect_fail("llama with a soft-cap", with(LLAMA31_8B, "attn_logit_softcapping", "50"), LT_ERR_UNSUPPORTED,
                "attn_logit_softcapping", "llama");
    expect_fail("llama gelu_pytorch_tanh", with(LLAMA31_8B, "hidden_act", "\"gelu_pytorch_tanh\""),
                LT_ERR_UNSUPPORTED, "hidden_act", "silu");
}

static void test_refusals(void) {
    expect_fail("not JSON", "{\"model_type\": ", LT_ERR_FORMAT, "JSON", NULL);
    expect_fail("not an object", "[1,2]", LT_ERR_FORMAT, "object", NULL);
    expect_fail("text after the object", "{\"model_type\": \"llama\"} {}", LT_ERR_FORMAT, "text after", NULL);
    /* huge sizes: the projection width num_heads * head_dim must fit an int (LoRA dims, kernels) */
    expect_fail("head_dim 2^30", with(LLAMA31_8B, "head_dim", "1073741824"), LT_ERR_INVALID,
                "num_attention_heads * head_dim", "32 * 1073741824");
    expect_fail("model_type missing", with(LLAMA2_7B, "model_type", NULL), LT_ERR_INVALID, "model_type", NULL);
    expect_fail("model_type gemma3", with(LLAMA2_7B, "model_type", "\"gemma3\""), LT_ERR_UNSUPPORTED, "model_type",
                "gemma3");
    expect_fail("architectures mismatch", with(LLAMA2_7B, "architectures", "[\"MistralForCausalLM\"]"),
                LT_ERR_UNSUPPORTED, "MistralForCausalLM", "LlamaForCausalLM");
    expect_fail("architectures: classification head",
                with(QWEN25_05B, "architectures", "[\"Qwen2ForSequenceClassification\"]"), LT_ERR_UNSUPPORTED,
                "architectures[0]", "Qwen2ForSequenceClassification");
    expect_fail("architectures empty", with(LLAMA2_7B, "architectures", "[]"), LT_ERR_INVALID, "architectures",
                NULL);
    expect_fail("hidden_size missing", with(LLAMA2_7B, "hidden_size", NULL), LT_ERR_INVALID, "hidden_size",
                "required");
    expect_fail("vocab_size 0", with(LLAMA2_7B, "vocab_size", "0"), LT_ERR_INVALID, "vocab_size = 0", "> 0");
    expect_fail("intermediate_size negative", with(LLAMA2_7B, "intermediate_size", "-7"), LT_ERR_INVALID,
                "intermediate_size = -7", NULL);
    expect_fail("num_hidden_layers 2.5", with(LLAMA2_7B, "num_hidden_layers", "2.5"), LT_ERR_INVALID,
                "num_hidden_layers", "integer");
    expect_fail("hidden_size string", with(LLAMA2_7B, "hidden_size", "\"4096\""), LT_ERR_INVALID, "hidden_size",
                "a string");
    expect_fail("num_attention_heads 0", with(LLAMA2_7B, "num_attention_heads", "0"), LT_ERR_INVALID,
                "num_attention_heads = 0", NULL);
    {
        lt_err err = {{0}};
        lt_config c;
        lt_status st = lt_config_parse(with(with(LLAMA2_7B, "num_attention_heads", "8"), "num_key_value_heads", "3"),
                                       "config.json", &c, &err);
        LT_CHECK(st == LT_ERR_INVALID &&
                     strcmp(err.msg, "config.json: num_key_value_heads = 3 does not divide num_attention_heads = 8") ==
                         0,
                 "kv 3 / heads 8: exact message: %s", err.msg);
    }
    expect_fail("num_key_value_heads 0", with(LLAMA2_7B, "num_key_value_heads", "0"), LT_ERR_INVALID,
                "num_key_value_heads = 0", NULL);
    expect_fail("hidden % heads", with(with(LLAMA2_7B, "hidden_size", "100"), "num_attention_heads", "8"),
                LT_ERR_INVALID, "hidden_size = 100", "num_attention_heads = 8");
    expect_fail("head_dim odd", with(LLAMA31_8B, "head_dim", "63"), LT_ERR_INVALID, "head_dim = 63", "even");
    expect_fail("head_dim odd (derived)", with(with(LLAMA2_7B, "hidden_size", "96"), "num_attention_heads", "32"),
                LT_ERR_INVALID, "head_dim = 3", "even");
    expect_fail("head_dim 0", with(LLAMA31_8B, "head_dim", "0"), LT_ERR_INVALID, "head_dim = 0", NULL);
    expect_fail("hidden_act gelu", with(LLAMA2_7B, "hidden_act", "\"gelu\""), LT_ERR_UNSUPPORTED, "hidden_act",
                "gelu");
    expect_fail("rms_norm_eps 0", with(LLAMA2_7B, "rms_norm_eps", "0"), LT_ERR_INVALID, "rms_norm_eps", "> 0");
    expect_fail("rms_norm_eps negative", with(LLAMA2_7B, "rms_norm_eps", "-1e-5"), LT_ERR_INVALID, "rms_norm_eps",
                NULL);
    expect_fail("rope_theta 0", with(LLAMA2_7B, "rope_theta", "0"), LT_ERR_INVALID, "rope_theta", "> 0");
    expect_fail("max_position_embeddings 0", with(LLAMA2_7B, "max_position_embeddings", "0"), LT_ERR_INVALID,
                "max_position_embeddings", NULL);
    static const char *bad_types[] = {"linear", "dynamic", "yarn", "longrope", "su"};
    for (int i = 0; i < 5; i++) {
        char v[128], what[64];
        snprintf(v, sizeof v, "{\"rope_type\":\"%s\",\"factor\":2.0}", bad_types[i]);
        snprintf(what, sizeof what, "rope_scaling %s", bad_types[i]);
        expect_fail(what, with(LLAMA2_7B, "rope_scaling", v), LT_ERR_UNSUPPORTED, "rope_scaling.rope_type",
                    bad_types[i]);
    }
    expect_fail("rope_scaling legacy type linear", with(LLAMA2_7B, "rope_scaling", "{\"type\":\"linear\",\"factor\":2}"),
                LT_ERR_UNSUPPORTED, "rope_scaling.type", "linear");
    expect_fail("rope_scaling without type", with(LLAMA2_7B, "rope_scaling", "{\"factor\":2}"), LT_ERR_INVALID,
                "rope_type", NULL);
    expect_fail("rope_scaling not an object", with(LLAMA2_7B, "rope_scaling", "3"), LT_ERR_INVALID, "rope_scaling",
                NULL);
    expect_fail("llama3 without factor",
                with(LLAMA2_7B, "rope_scaling",
                     "{\"rope_type\":\"llama3\",\"low_freq_factor\":1,\"high_freq_factor\":4,"
                     "\"original_max_position_embeddings\":8192}"),
                LT_ERR_INVALID, "rope_scaling.factor", NULL);
    expect_fail("llama3 without original_max",
                with(LLAMA2_7B, "rope_scaling",
                     "{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4}"),
                LT_ERR_INVALID, "rope_scaling.original_max_position_embeddings", NULL);
    expect_fail("llama3 high <= low",
                with(LLAMA2_7B, "rope_scaling",
                     "{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":4,\"high_freq_factor\":4,"
                     "\"original_max_position_embeddings\":8192}"),
                LT_ERR_INVALID, "high_freq_factor", "low_freq_factor");
    expect_fail("llama3 factor < 1",
                with(LLAMA2_7B, "rope_scaling",
                     "{\"rope_type\":\"llama3\",\"factor\":0.5,\"low_freq_factor\":1,\"high_freq_factor\":4,"
                     "\"original_max_position_embeddings\":8192}"),
                LT_ERR_INVALID, "rope_scaling.factor", NULL);
    expect_fail("partial_rotary_factor", with(LLAMA2_7B, "partial_rotary_factor", "0.5"), LT_ERR_UNSUPPORTED,
                "partial_rotary_factor", NULL);
    expect_fail("torch_dtype float64", with(LLAMA2_7B, "torch_dtype", "\"float64\""), LT_ERR_UNSUPPORTED,
                "torch_dtype", "float64");
    expect_fail("tie_word_embeddings string", with(LLAMA2_7B, "tie_word_embeddings", "\"yes\""), LT_ERR_INVALID,
                "tie_word_embeddings", NULL);
    expect_fail("attention_bias number", with(LLAMA2_7B, "attention_bias", "1"), LT_ERR_INVALID, "attention_bias",
                NULL);
    expect_fail("eos string", with(LLAMA2_7B, "eos_token_id", "\"</s>\""), LT_ERR_INVALID, "eos_token_id", NULL);
    expect_fail("bos negative", with(LLAMA2_7B, "bos_token_id", "-3"), LT_ERR_INVALID, "bos_token_id = -3", NULL);
    expect_fail("mistral sliding_window 0", with(MISTRAL_7B_V01, "sliding_window", "0"), LT_ERR_INVALID,
                "sliding_window = 0", NULL);
    expect_fail("qwen2 sliding on with window 0",
                with(with(with(QWEN25_05B, "use_sliding_window", "true"), "max_window_layers", "0"), "sliding_window",
                     "0"),
                LT_ERR_INVALID, "sliding_window", NULL);
}

static void test_load(void) {
    const char *dir = lt_test_tmpdir("test_config");
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    lt_err err = {{0}};
    LT_CHECK_OK(lt_write_file_atomic(path, QWEN3_06B, strlen(QWEN3_06B), &err), &err);
    lt_config c;
    memset(&c, 0, sizeof c);
    LT_CHECK_OK(lt_config_load(dir, &c, &err), &err);
    LT_CHECK(c.arch == LT_ARCH_QWEN3 && c.head_dim == 128, "load from folder");
    memset(&c, 0, sizeof c);
    LT_CHECK_OK(lt_config_load(path, &c, &err), &err);
    LT_CHECK(c.arch == LT_ARCH_QWEN3 && c.num_layers == 28, "load from file");
    const char *bad = with(QWEN3_06B, "hidden_act", "\"gelu_pytorch_tanh\"");
    LT_CHECK_OK(lt_write_file_atomic(path, bad, strlen(bad), &err), &err);
    lt_status st = lt_config_load(dir, &c, &err);
    LT_CHECK(st == LT_ERR_UNSUPPORTED && strstr(err.msg, path) && strstr(err.msg, "gelu_pytorch_tanh"),
             "load error names the file: %s", err.msg);
    char missing[4096];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    st = lt_config_load(missing, &c, &err);
    LT_CHECK(st == LT_ERR_IO && strstr(err.msg, "nope"), "missing config: %s", err.msg);
    LT_CHECK(strcmp(lt_arch_name(LT_ARCH_QWEN2), "qwen2") == 0 && strcmp(lt_arch_name(LT_ARCH_MISTRAL), "mistral") == 0,
             "arch names");
}

/* inv_freq vs transformers */
static void test_rope(void) {
    char *text = NULL;
    lt_err err = {{0}};
    LT_CHECK_OK(lt_read_file(lt_src_path("tests/fixtures/config/llama3_rope.json"), &text, NULL, &err), &err);
    if (!text) return;
    cJSON *root = cJSON_Parse(text);
    free(text);
    LT_CHECK(root != NULL, "fixture parses");
    if (!root) return;
    const cJSON *cases = cJSON_GetObjectItem(root, "cases"), *e;
    int n_cases = 0, n_scaled = 0;
    cJSON_ArrayForEach(e, cases) {
        n_cases++;
        char *cfg_json = cJSON_PrintUnformatted(cJSON_GetObjectItem(e, "config"));
        lt_config c;
        int ok = parse_ok(e->string, cfg_json, &c);
        free(cfg_json);
        if (!ok) continue;
        int hd = (int)cJSON_GetObjectItem(e, "head_dim")->valuedouble;
        const cJSON *ref = cJSON_GetObjectItem(e, "inv_freq");
        int n = cJSON_GetArraySize(ref);
        LT_CHECK(c.head_dim == hd && n == hd / 2, "%s: head_dim %d vs %d, %d freqs", e->string, c.head_dim, hd, n);
        if (c.head_dim != hd || n != hd / 2) continue;
        float *got = malloc((size_t)n * sizeof *got), *want = malloc((size_t)n * sizeof *want);
        for (int i = 0; i < n; i++) want[i] = (float)cJSON_GetArrayItem(ref, i)->valuedouble;
        lt_poison(got, (size_t)n);
        lt_config_rope_inv_freq(&c, got);
        double worst = 0;
        for (int i = 0; i < n; i++) {
            double r = fabs((double)got[i] - want[i]) / fabs((double)want[i]);
            if (!(r <= worst)) worst = r; /* NaN propagates */
        }
        LT_CHECK(worst <= 1e-6, "%s: inv_freq max relative error %.3g > 1e-6", e->string, worst);
        if (getenv("LT_TEST_VERBOSE")) printf("  %-20s inv_freq max rel err %.3g\n", e->string, worst);
        /* the test can fail: without scaling the llama3 cases are far off */
        if (c.rope_scaling_type == 1) {
            n_scaled++;
            lt_config c0 = c;
            c0.rope_scaling_type = 0;
            lt_config_rope_inv_freq(&c0, got);
            double off = 0;
            for (int i = 0; i < n; i++) off = fmax(off, fabs((double)got[i] - want[i]) / fabs((double)want[i]));
            LT_CHECK(off > 0.5, "%s: unscaled inv_freq should differ from the scaled reference (%.3g)", e->string,
                     off);
        }
        free(got);
        free(want);
    }
    LT_CHECK(n_cases == 4 && n_scaled == 3, "fixture has %d cases, %d scaled", n_cases, n_scaled);
    cJSON_Delete(root);
}

/* every field that reaches the model */
static int same_config(const lt_config *a, const lt_config *b) {
    return a->arch == b->arch && !strcmp(a->model_type, b->model_type) && !strcmp(a->architecture, b->architecture) &&
           a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
           a->intermediate_size == b->intermediate_size && a->num_layers == b->num_layers &&
           a->num_heads == b->num_heads && a->num_kv_heads == b->num_kv_heads && a->head_dim == b->head_dim &&
           a->rms_norm_eps == b->rms_norm_eps && a->rope_theta == b->rope_theta &&
           a->max_position_embeddings == b->max_position_embeddings &&
           a->tie_word_embeddings == b->tie_word_embeddings && a->qkv_bias == b->qkv_bias && a->o_bias == b->o_bias &&
           a->mlp_bias == b->mlp_bias && a->qk_norm == b->qk_norm && a->sliding_window == b->sliding_window &&
           a->rope_scaling_type == b->rope_scaling_type && a->rope_factor == b->rope_factor &&
           a->rope_low_freq_factor == b->rope_low_freq_factor && a->rope_high_freq_factor == b->rope_high_freq_factor &&
           a->rope_original_max_pos == b->rope_original_max_pos && a->bos_token_id == b->bos_token_id &&
           a->eos_token_id == b->eos_token_id && a->torch_dtype == b->torch_dtype && a->post_norm == b->post_norm &&
           a->rotary_dim == b->rotary_dim && a->fused_proj == b->fused_proj &&
           a->rope_n_factors == b->rope_n_factors &&
           !memcmp(a->rope_short_factor, b->rope_short_factor, sizeof a->rope_short_factor) &&
           !memcmp(a->rope_long_factor, b->rope_long_factor, sizeof a->rope_long_factor) &&
           a->rope_attention_factor == b->rope_attention_factor &&
           a->norm_offset == b->norm_offset && a->sandwich_norm == b->sandwich_norm &&
           a->embed_scale == b->embed_scale && a->mlp_act == b->mlp_act && a->attn_scale == b->attn_scale &&
           a->attn_softcap == b->attn_softcap && a->final_softcap == b->final_softcap &&
           a->window_layers == b->window_layers &&
           memcmp(a->layer_sliding, b->layer_sliding, sizeof a->layer_sliding) == 0 &&
           a->rope_tables == b->rope_tables && a->rope_local_theta == b->rope_local_theta &&
           a->rope_local_factor == b->rope_local_factor;
}

/* transformers 5 configs (rope_parameters, dtype, layer_types): each fixture
 * model's v5 file (written by transformers 5, tests/fixtures/config/v5/) gives
 * the same lt_config as its v4 file; test_model_fixtures runs both forms. */
static void test_v5(void) {
    const char *models[32];
    size_t nm = lt_family_fixtures(models, 32);
    LT_CHECK(nm >= 5, "the families list %zu fixture models", nm);
    for (size_t i = 0; i < nm; i++) {
        char p4[4096], p5[4096];
        snprintf(p4, sizeof p4, "%s%s", lt_src_path("tests/fixtures/models/"), models[i]);
        snprintf(p5, sizeof p5, "%s%s", lt_src_path("tests/fixtures/config/v5/"), models[i]);
        lt_config a, b;
        lt_err err = {{0}};
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        LT_CHECK_OK(lt_config_load(p4, &a, &err), &err);
        LT_CHECK_OK(lt_config_load(p5, &b, &err), &err);
        LT_CHECK(same_config(&a, &b), "%s: the v4 and v5 config forms parse differently", models[i]);
    }
    const char *v5_llama31 = with(with(with(with(LLAMA31_8B, "rope_scaling", NULL), "rope_theta", NULL),
                                       "torch_dtype", NULL),
                                  "rope_parameters",
                                  "{\"factor\": 8.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0,"
                                  " \"original_max_position_embeddings\": 8192, \"rope_theta\": 500000.0,"
                                  " \"rope_type\": \"llama3\"}");
    char *v5 = strdup(with(v5_llama31, "dtype", "\"bfloat16\""));
    lt_config c, ref;
    if (parse_ok("llama 3.1 v5 form", v5, &c) && parse_ok("llama 3.1 v4 form", LLAMA31_8B, &ref))
        LT_CHECK(same_config(&c, &ref) && c.rope_scaling_type == 1 && c.rope_theta == 500000.0 &&
                     c.torch_dtype == LT_BF16,
                 "llama 3.1: v5 form = v4 form");
    /* both forms at once: accepted when they agree */
    if (parse_ok("both forms agree", with(with(v5, "rope_theta", "500000.0"), "torch_dtype", "\"bfloat16\""), &c))
        LT_CHECK(same_config(&c, &ref), "both forms agree");
    /* per layer type, all the same */
    if (parse_ok("per-layer-type rope_parameters",
                 with(v5, "rope_parameters",
                      "{\"full_attention\": {\"rope_type\": \"default\", \"rope_theta\": 1e6},"
                      " \"sliding_attention\": {\"rope_type\": \"default\", \"rope_theta\": 1e6}}"),
                 &c))
        LT_CHECK(c.rope_scaling_type == 0 && c.rope_theta == 1e6, "per-type rope theta");
    expect_fail("rope_theta conflicts", with(v5, "rope_theta", "10000.0"), LT_ERR_INVALID, "rope_theta = 10000",
                "rope_parameters.rope_theta = 500000");
    expect_fail("rope_scaling conflicts", with(v5, "rope_scaling", "{\"rope_type\": \"default\"}"), LT_ERR_INVALID,
                "rope_scaling", "rope_parameters");
    expect_fail("dtype conflicts", with(v5, "torch_dtype", "\"float16\""), LT_ERR_INVALID, "torch_dtype", "dtype");
    expect_fail("dtype float64", with(v5, "dtype", "\"float64\""), LT_ERR_UNSUPPORTED, "dtype = \"float64\"", NULL);
    expect_fail("rope_parameters yarn", with(v5, "rope_parameters", "{\"rope_type\": \"yarn\", \"factor\": 4.0}"),
                LT_ERR_UNSUPPORTED, "rope_parameters.rope_type", "yarn");
    expect_fail("rope_parameters unknown inner key",
                with(v5, "rope_parameters", "{\"rope_type\": \"default\", \"partial_rotary_factor\": 0.5}"),
                LT_ERR_UNSUPPORTED, "rope_parameters.partial_rotary_factor", NULL);
    expect_fail("rope_scaling default with factor", with(LLAMA2_7B, "rope_scaling", "{\"rope_type\": \"default\", \"factor\": 2}"),
                LT_ERR_UNSUPPORTED, "rope_scaling.factor", NULL);
    expect_fail("per-layer-type rope differs",
                with(v5, "rope_parameters",
                     "{\"full_attention\": {\"rope_type\": \"default\", \"rope_theta\": 1e6},"
                     " \"sliding_attention\": {\"rope_type\": \"default\", \"rope_theta\": 1e4}}"),
                LT_ERR_UNSUPPORTED, "rope_parameters.full_attention", "rope_parameters.sliding_attention");
    expect_fail("per-layer-type unknown type",
                with(v5, "rope_parameters", "{\"chunked_attention\": {\"rope_type\": \"default\"}}"),
                LT_ERR_UNSUPPORTED, "chunked_attention", NULL);
    expect_fail("rope_parameters theta 0", with(v5, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 0}"),
                LT_ERR_INVALID, "rope_parameters.rope_theta", "> 0");
    expect_fail("v5 yarn in a real-looking file", with(v5, "rope_parameters",
                "{\"rope_type\": \"longrope\", \"rope_theta\": 1e4}"), LT_ERR_UNSUPPORTED, "longrope", NULL);
    free(v5);
    /* keys that change the math and are not understood: refused by name */
    expect_fail("attention_dropout", with(LLAMA2_7B, "attention_dropout", "0.1"), LT_ERR_UNSUPPORTED,
                "attention_dropout = 0.1", NULL);
    expect_fail("unknown key", with(LLAMA2_7B, "attn_logit_softcapping", "50.0"), LT_ERR_UNSUPPORTED,
                "\"attn_logit_softcapping\"", "llama");
    expect_fail("quantization_config", with(QWEN3_06B, "quantization_config", "{\"quant_method\": \"gptq\"}"),
                LT_ERR_UNSUPPORTED, "\"quantization_config\"", "qwen3");
    expect_fail("mlp_bias is llama's, not qwen2's", with(QWEN25_05B, "mlp_bias", "true"), LT_ERR_UNSUPPORTED,
                "\"mlp_bias\"", "qwen2");
    expect_fail("layer_types on llama", with(LLAMA2_7B, "layer_types", "[]"), LT_ERR_UNSUPPORTED, "\"layer_types\"",
                NULL);
    /* harmless bookkeeping keys pass */
    parse_ok("harmless keys",
             with(with(with(LLAMA2_7B, "transformers_version", "\"5.0.0\""), "pad_token_id", "null"), "use_cache",
                  "false"),
             &c);
    parse_ok("bookkeeping keys of fine-tuning tools",
             with(with(with(LLAMA2_7B, "unsloth_version", "\"2025.3.1\""), "_attn_implementation_autoset", "true"),
                  "sep_token_id", "3"),
             &c);
    expect_fail("a version-like key that is not bookkeeping", with(LLAMA2_7B, "version_rope", "2"),
                LT_ERR_UNSUPPORTED, "\"version_rope\"", NULL);
    /* layer_types (qwen2/qwen3, transformers 5) */
    {
        char two[2048];
        snprintf(two, sizeof two, "%s", with(QWEN3_06B, "num_hidden_layers", "2"));
        if (parse_ok("qwen3 layer_types sliding",
                     with(with(two, "sliding_window", "512"), "layer_types",
                          "[\"full_attention\", \"sliding_attention\"]"),
                     &c))
            LT_CHECK(c.sliding_window == 512, "a sliding layer records the window: %d", c.sliding_window);
        expect_fail("layer_types length", with(two, "layer_types", "[\"full_attention\"]"), LT_ERR_INVALID,
                    "layer_types", "2 strings");
        expect_fail("layer_types value", with(two, "layer_types", "[\"full_attention\", \"chunked_attention\"]"),
                    LT_ERR_UNSUPPORTED, "layer_types[1]", "chunked_attention");
        expect_fail("layer_types sliding without window",
                    with(two, "layer_types", "[\"sliding_attention\", \"full_attention\"]"), LT_ERR_INVALID,
                    "layer_types[0]", "sliding_window is null");
    }
}

/* Phi-3 family: real configs (Phi-3-mini-4k-instruct, Phi-4-mini-instruct's
 * keys; LongRoPE factor lists shortened to the geometry's count where the
 * values do not matter here), and what is refused by name. */
static const char PHI3_MINI_4K[] =
    "{\"_name_or_path\": \"Phi-3-mini-4k-instruct\", \"architectures\": [\"Phi3ForCausalLM\"], \"attention_bias\": false,"
    " \"attention_dropout\": 0.0, \"auto_map\": {\"AutoConfig\": \"configuration_phi3.Phi3Config\","
    " \"AutoModelForCausalLM\": \"modeling_phi3.Phi3ForCausalLM\"}, \"bos_token_id\": 1, \"embd_pdrop\": 0.0,"
    " \"eos_token_id\": 32000, \"hidden_act\": \"silu\", \"hidden_size\": 3072, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 8192, \"max_position_embeddings\": 4096, \"model_type\": \"phi3\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 32,"
    " \"original_max_position_embeddings\": 4096, \"pad_token_id\": 32000, \"resid_pdrop\": 0.0,"
    " \"rms_norm_eps\": 1e-05, \"rope_scaling\": null, \"rope_theta\": 10000.0, \"sliding_window\": 2047,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.40.2\","
    " \"use_cache\": true, \"vocab_size\": 32064}";

/* a factor list of n entries (JSON) */
static const char *factors(int n, double v) {
    static char buf[8192];
    size_t k = (size_t)snprintf(buf, sizeof buf, "[");
    for (int i = 0; i < n; i++) k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%g", i ? "," : "", v + 0.01 * i);
    snprintf(buf + k, sizeof buf - k, "]");
    return buf;
}

static void test_phi3(void) {
    lt_config c;
    if (parse_ok("Phi-3-mini-4k", PHI3_MINI_4K, &c)) {
        LT_CHECK(c.arch == LT_ARCH_PHI3 && c.fused_proj && c.head_dim == 96 && lt_config_rotary_dim(&c) == 96 &&
                     c.rope_scaling_type == 0 && lt_config_rope_scale(&c) == 1.0f && c.sliding_window == 2047 &&
                     c.rms_norm_eps == 1e-5f && !c.qkv_bias && !c.mlp_bias && !c.tie_word_embeddings,
                 "phi3 mini values");
    }
    /* Phi-4-mini-instruct: partial rotary 0.75 (96 of 128), 48 LongRoPE pairs, its remote-code keys */
    char rs[8192], *phi4;
    snprintf(rs, sizeof rs, "{\"type\": \"longrope\", \"short_factor\": %s,", factors(48, 1.0));
    snprintf(rs + strlen(rs), sizeof rs - strlen(rs), " \"long_factor\": %s}", factors(48, 2.0));
    phi4 = strdup(with(with(with(with(with(with(with(with(with(with(with(with(PHI3_MINI_4K, "rope_scaling", rs),
        "partial_rotary_factor", "0.75"), "num_attention_heads", "24"), "num_key_value_heads", "8"),
        "max_position_embeddings", "131072"), "full_attn_mod", "1"), "interpolate_factor", "1"),
        "lm_head_bias", "false"), "mlp_bias", "false"), "sliding_window", "262144"), "tie_word_embeddings", "true"),
        "vocab_size", "200064"));
    if (parse_ok("Phi-4-mini", phi4, &c)) {
        LT_CHECK(c.head_dim == 128 && c.rotary_dim == 96 && c.rope_scaling_type == LT_ROPE_LONGROPE && c.rope_n_factors == 48 &&
                     c.rope_original_max_pos == 4096 && c.rope_short_factor[47] == 1.47f &&
                     c.rope_long_factor[0] == 2.0f && c.tie_word_embeddings,
                 "phi4 mini values");
        LT_CHECK(fabs(c.rope_attention_factor - sqrt(1 + log(32.0) / log(4096.0))) < 1e-15, "attention factor %.17g",
                 c.rope_attention_factor);
    }
    if (parse_ok("legacy su", with(phi4, "rope_scaling", strstr(rs, "longrope") ? "{\"type\": \"su\", "
                                   "\"short_factor\": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
                                   "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1], \"long_factor\": [2,2,2,2,2,2,2,2,2,2,"
                                   "2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2]}" : ""),
                 &c))
        LT_CHECK(c.rope_scaling_type == LT_ROPE_LONGROPE, "\"su\" is longrope");
    /* refused by name */
    expect_fail("phi3 resid_pdrop", with(PHI3_MINI_4K, "resid_pdrop", "0.1"), LT_ERR_UNSUPPORTED, "resid_pdrop", "0");
    expect_fail("phi3 embd_pdrop", with(PHI3_MINI_4K, "embd_pdrop", "0.05"), LT_ERR_UNSUPPORTED, "embd_pdrop", NULL);
    expect_fail("phi3 attention_bias", with(PHI3_MINI_4K, "attention_bias", "true"), LT_ERR_UNSUPPORTED,
                "attention_bias", "false");
    expect_fail("phi4 full_attn_mod", with(phi4, "full_attn_mod", "2"), LT_ERR_UNSUPPORTED, "full_attn_mod", NULL);
    expect_fail("phi4 interpolate_factor", with(phi4, "interpolate_factor", "2"), LT_ERR_UNSUPPORTED,
                "interpolate_factor", NULL);
    expect_fail("phi3 unknown key", with(PHI3_MINI_4K, "attn_logit_softcapping", "50"), LT_ERR_UNSUPPORTED,
                "attn_logit_softcapping", "phi3");
    expect_fail("phi4 short_factor length", with(phi4, "partial_rotary_factor", "0.5"), LT_ERR_INVALID,
                "short_factor", "expected 32");
    expect_fail("phi3 odd rotary dims", with(PHI3_MINI_4K, "partial_rotary_factor", "0.7"), LT_ERR_UNSUPPORTED,
                "rotary dims", "67");
    expect_fail("phi3 llama3 rope", with(PHI3_MINI_4K, "rope_scaling",
                                         "{\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, "
                                         "\"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}"),
                LT_ERR_UNSUPPORTED, "llama3", "phi3");
    expect_fail("phi3 yarn", with(PHI3_MINI_4K, "rope_scaling", "{\"type\": \"yarn\", \"factor\": 4}"),
                LT_ERR_UNSUPPORTED, "yarn", "longrope");
    expect_fail("phi3 longrope without lists", with(PHI3_MINI_4K, "rope_scaling", "{\"type\": \"longrope\"}"),
                LT_ERR_INVALID, "short_factor", NULL);
    expect_fail("llama partial rotary", with(LLAMA31_8B, "partial_rotary_factor", "0.5"), LT_ERR_UNSUPPORTED,
                "partial_rotary_factor", NULL);
    /* v5: the rope dict's original length must be the one transformers uses (the top-level key) */
    cJSON *j = cJSON_Parse(phi4);
    cJSON *r = cJSON_DetachItemFromObject(j, "rope_scaling");
    cJSON_DeleteItemFromObject(j, "rope_theta");
    cJSON_AddStringToObject(r, "rope_type", "longrope");
    cJSON_DeleteItemFromObject(r, "type");
    cJSON_AddNumberToObject(r, "rope_theta", 10000.0);
    cJSON_AddNumberToObject(r, "partial_rotary_factor", 0.75);
    cJSON_AddNumberToObject(r, "original_max_position_embeddings", 4096);
    cJSON_AddItemToObject(j, "rope_parameters", r);
    char *v5 = cJSON_PrintUnformatted(j);
    lt_config c4;
    if (parse_ok("Phi-4-mini v5", v5, &c) && parse_ok("Phi-4-mini v4", phi4, &c4))
        LT_CHECK(same_config(&c, &c4), "phi4 v4 and v5 forms differ");
    cJSON_ReplaceItemInObject(r, "original_max_position_embeddings", cJSON_CreateNumber(8192));
    free(v5);
    v5 = cJSON_PrintUnformatted(j);
    expect_fail("phi3 v5 original length conflict", v5, LT_ERR_INVALID, "original_max_position_embeddings", "8192");
    cJSON_ReplaceItemInObject(r, "original_max_position_embeddings", cJSON_CreateNumber(4096));
    cJSON_ReplaceItemInObject(r, "partial_rotary_factor", cJSON_CreateNumber(0.5));
    free(v5);
    v5 = cJSON_PrintUnformatted(j);
    expect_fail("phi3 v5 partial rotary conflict", v5, LT_ERR_INVALID, "partial_rotary_factor", NULL);
    free(v5);
    cJSON_Delete(j);
    free(phi4);
}

/* LongRoPE inv_freq (short and long) and attention factor vs transformers 5
 * (tests/fixtures/config/longrope.json, tools/gen_config_fixture.py longrope) */
static void test_longrope(void) {
    char *text = NULL;
    lt_err err = {{0}};
    LT_CHECK_OK(lt_read_file(lt_src_path("tests/fixtures/config/longrope.json"), &text, NULL, &err), &err);
    if (!text) return;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *e;
    int n_cases = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(root, "cases")) {
        char *cfg_json = cJSON_PrintUnformatted(cJSON_GetObjectItem(e, "config"));
        lt_config c;
        int ok = parse_ok(e->string, cfg_json, &c);
        free(cfg_json);
        if (!ok) continue;
        n_cases++;
        int R = (int)cJSON_GetObjectItem(e, "rotary_dim")->valuedouble;
        double af = cJSON_GetObjectItem(e, "attention_factor")->valuedouble;
        LT_CHECK(lt_config_rotary_dim(&c) == R && c.rope_scaling_type == LT_ROPE_LONGROPE, "%s: rotary dims %d vs %d", e->string,
                 lt_config_rotary_dim(&c), R);
        LT_CHECK(fabs(c.rope_attention_factor - af) <= 1e-15 * af, "%s: attention factor %.17g vs %.17g", e->string,
                 c.rope_attention_factor, af);
        if (lt_config_rotary_dim(&c) != R) continue;
        float got[LT_ROPE_MAX_PAIRS], other[LT_ROPE_MAX_PAIRS];
        const char *keys[2] = {"inv_freq_short", "inv_freq_long"};
        for (int k = 0; k < 2; k++) {
            const cJSON *ref = cJSON_GetObjectItem(e, keys[k]);
            LT_CHECK(cJSON_GetArraySize(ref) == R / 2, "%s: %d frequencies", e->string, cJSON_GetArraySize(ref));
            if (k) lt_config_rope_inv_freq_long(&c, got);
            else lt_config_rope_inv_freq(&c, got);
            if (k) lt_config_rope_inv_freq(&c, other);
            else lt_config_rope_inv_freq_long(&c, other);
            double worst = 0, off = 0;
            for (int i = 0; i < R / 2; i++) {
                double w = cJSON_GetArrayItem(ref, i)->valuedouble;
                worst = fmax(worst, fabs(got[i] - w) / w);
                off = fmax(off, fabs(other[i] - w) / w);
            }
            LT_CHECK(worst <= 3e-7, "%s: %s max relative error %.3g", e->string, keys[k], worst);
            LT_CHECK(off > 0.1, "%s: the other table is as close to %s (%.3g)", e->string, keys[k], off);
        }
    }
    LT_CHECK(n_cases == 5, "longrope fixture: %d cases", n_cases);
    cJSON_Delete(root);
}

/* gemma-3-4b-it's config.json (Gemma3ForConditionalGeneration, transformers
 * 4.50): text_config written as a diff to Gemma3TextConfig's defaults (no
 * vocab_size, num_attention_heads, head_dim, rope_theta, ...) */
#define G3_TEXT_4B                                                                                                   \
    "{\"hidden_size\": 2560, \"intermediate_size\": 10240, \"model_type\": \"gemma3_text\","                        \
    " \"num_hidden_layers\": 34, \"rope_scaling\": {\"factor\": 8.0, \"rope_type\": \"linear\"},"                 \
    " \"sliding_window\": 1024}"
static const char *GEMMA3_4B_CG =
    "{\"architectures\": [\"Gemma3ForConditionalGeneration\"], \"boi_token_index\": 255999,"
    " \"eoi_token_index\": 256000, \"eos_token_id\": [1, 106], \"image_token_index\": 262144,"
    " \"initializer_range\": 0.02, \"mm_tokens_per_image\": 256, \"model_type\": \"gemma3\","
    " \"text_config\": " G3_TEXT_4B ", \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.50.0.dev0\","
    " \"vision_config\": {\"hidden_size\": 1152, \"image_size\": 896, \"intermediate_size\": 4304,"
    " \"model_type\": \"siglip_vision_model\", \"num_attention_heads\": 16, \"num_hidden_layers\": 27,"
    " \"patch_size\": 14, \"vision_use_head\": false}}";

/* G3_TEXT_4B with key set to `value` (NULL: removed), as a text_config value; static buffer */
static const char *g3_text(const char *key, const char *value) {
    static char buf[2048];
    snprintf(buf, sizeof buf, "%s", with(G3_TEXT_4B, key, value));
    return buf;
}

/* The language model inside Gemma3ForConditionalGeneration: the same
 * lt_config as its text settings in a gemma3_text config.json (the text
 * config class's defaults filled in, the top level's dtype and eos), and
 * what is refused by name at either level. */
static void test_wrapped(void) {
    lt_config c, ref;
    if (parse_ok("gemma-3-4b-it (Gemma3ForConditionalGeneration)", GEMMA3_4B_CG, &c) &&
        parse_ok("gemma3 4B text", GEMMA3_4B, &ref)) {
        LT_CHECK(c.wrap && !strcmp(c.architecture, "Gemma3ForConditionalGeneration") && c.arch == LT_ARCH_GEMMA3 &&
                     !ref.wrap,
                 "the multimodal class is recorded");
        LT_CHECK(c.eos_token_id == 1 && c.torch_dtype == LT_BF16 && c.tie_word_embeddings == 1 &&
                     c.vocab_size == 262208 && c.num_heads == 8 && c.head_dim == 256,
                 "top-level eos / dtype, Gemma3TextConfig's sizes: eos %d vocab %d heads %d", c.eos_token_id,
                 c.vocab_size, c.num_heads);
        snprintf(ref.architecture, sizeof ref.architecture, "%s", c.architecture);
        ref.eos_token_id = c.eos_token_id;
        ref.bos_token_id = c.bos_token_id;
        LT_CHECK(same_config(&c, &ref), "gemma-3-4b-it: the same language model as its gemma3_text config");
    }
    if (parse_ok("top-level dtype over text_config's",
                 with(GEMMA3_4B_CG, "text_config", g3_text("dtype", "\"float32\"")), &c))
        LT_CHECK(c.torch_dtype == LT_BF16, "the top level's torch_dtype wins over text_config.dtype");
    if (parse_ok("untied at the top level", with(GEMMA3_4B_CG, "tie_word_embeddings", "false"), &c))
        LT_CHECK(!c.tie_word_embeddings, "top-level tie_word_embeddings false: untied head");
    expect_fail("tie conflict",
                with(with(GEMMA3_4B_CG, "tie_word_embeddings", "false"), "text_config",
                     g3_text("tie_word_embeddings", "true")),
                LT_ERR_INVALID, "tie_word_embeddings = false", "text_config.tie_word_embeddings = true");
    expect_fail("unknown top-level key", with(GEMMA3_4B_CG, "image_scale", "2.0"), LT_ERR_UNSUPPORTED,
                "\"image_scale\"", "model_type \"gemma3\"");
    expect_fail("unknown text_config key", with(GEMMA3_4B_CG, "text_config", g3_text("logit_scale", "2.0")),
                LT_ERR_UNSUPPORTED, "text_config", "\"logit_scale\"");
    expect_fail("text_config attention_dropout", with(GEMMA3_4B_CG, "text_config", g3_text("attention_dropout", "0.1")),
                LT_ERR_UNSUPPORTED, "text_config", "attention_dropout");
    expect_fail("text_config soft-cap out of range",
                with(GEMMA3_4B_CG, "text_config", g3_text("final_logit_softcapping", "-1")), LT_ERR_INVALID,
                "text_config", "final_logit_softcapping");
    expect_fail("text_config yarn",
                with(GEMMA3_4B_CG, "text_config", g3_text("rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 8.0}")),
                LT_ERR_UNSUPPORTED, "text_config", "yarn");
    expect_fail("text_config of another family", with(GEMMA3_4B_CG, "text_config", g3_text("model_type", "\"llama\"")),
                LT_ERR_UNSUPPORTED, "text_config.model_type = llama", "gemma3_text");
    expect_fail("no text_config", with(GEMMA3_4B_CG, "text_config", NULL), LT_ERR_INVALID, "text_config", "absent");
    expect_fail("other class", with(GEMMA3_4B_CG, "architectures", "[\"PaliGemmaForConditionalGeneration\"]"),
                LT_ERR_UNSUPPORTED, "PaliGemmaForConditionalGeneration", "Gemma3ForConditionalGeneration");
}

int main(void) {
    test_valid();
    test_wrapped();
    test_v5();
    test_refusals();
    test_load();
    test_rope();
    test_phi3();
    test_longrope();
    return lt_test_finish("test_config");
}
