/*
 * lt_gguf.h -- exporting a Hugging Face model folder (optionally with a PEFT
 * LoRA adapter merged in) to one GGUF v3 file that llama.cpp loads.
 *
 * The file (docs/export.md has the details and the per-family tables):
 *   header        "GGUF", version 3, tensor count, metadata count
 *   metadata      general.* (architecture, name, alignment 32, file_type,
 *                 quantization_version for q8_0), <arch>.* hyperparameters
 *                 (context_length, embedding_length, block_count,
 *                 feed_forward_length, attention.head_count / head_count_kv /
 *                 key_length / value_length / layer_norm_rms_epsilon,
 *                 rope.dimension_count, rope.freq_base, vocab_size), the
 *                 tokenizer as llama.cpp reads a byte-level BPE one
 *                 (tokenizer.ggml.model "gpt2", .pre named after the
 *                 pre-tokenizer regex, tokens, token_type, merges, bos / eos /
 *                 padding ids, add_bos_token, add_eos_token) or a
 *                 SentencePiece-style one (byte_fallback BPE on U+2581-escaped
 *                 text: model "llama", scores from the merge ranks,
 *                 add_space_prefix, unknown_token_id, byte / unknown token
 *                 types) and tokenizer.chat_template
 *   tensor infos  llama.cpp's names (token_embd, blk.N.attn_q, ...; the
 *                 family's lt_family_gguf entry for those that differ),
 *                 dimensions innermost first, offsets aligned to 32
 *   data          2-D weights in the asked type (F32, F16, BF16 rounded to
 *                 nearest even, or Q8_0: blocks of 32 values, an fp16 scale
 *                 d = amax / 127 and 32 int8 round(x / d), as ggml's
 *                 quantize_row_q8_0_ref; a row whose length is not a
 *                 multiple of 32 falls back to F16), 1-D tensors (norms,
 *                 biases, rope_freqs) in F32
 * For arch "llama" the q/k projection rows are permuted per head from the
 * Hugging Face rotate-half layout to the interleaved pairs llama.cpp's RoPE
 * rotates. Llama 3 RoPE scaling becomes rope_freqs.weight (the per-frequency
 * divisors), as llama.cpp's converter writes it; linear scaling the
 * rope.scaling.* keys; LongRoPE (phi3) rope_factors_long / _short.weight and
 * rope.scaling.attn_factor / original_context_length, with the partial
 * rotary dims as rope.dimension_count. An adapter's trained embeddings
 * (--train-embeddings) replace their rows of token_embd / output. Gemma 2 / 3: norm weights written as 1 + w (the
 * family's norm_offset), the sliding window with llama.cpp's layer pattern,
 * soft-caps (gemma2), the sliding layers' RoPE base (gemma3); what llama.cpp's
 * graph for a family cannot express (lt_family_gguf flags) is refused by name.
 *
 * Memory: one tensor in f32 (plus its converted form) at a time. The file is
 * written to "<out>.tmp-<host>-<pid>" and renamed into place.
 */
#ifndef LT_GGUF_H
#define LT_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "lt_base.h"
#include "lt_export.h"
#include "lt_safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ggml type ids written (ggml.h's enum values) */
typedef enum { LT_GGUF_F32 = 0, LT_GGUF_F16 = 1, LT_GGUF_Q8_0 = 8, LT_GGUF_BF16 = 30 } lt_gguf_type;

#define LT_GGUF_Q8_0_BLOCK 32
#define LT_GGUF_Q8_0_BYTES 34 /* fp16 scale + 32 int8 */

/* "f32", "f16", "bf16", "q8_0" -> type; others are refused by name */
lt_status lt_gguf_parse_type(const char *s, lt_gguf_type *t, lt_err *err);
const char *lt_gguf_type_name(lt_gguf_type t);

/* n (a multiple of 32) values -> n / 32 Q8_0 blocks */
void lt_gguf_quantize_q8_0(const float *x, size_t n, uint8_t *out);

typedef struct lt_gguf_opts {
    const char *model_dir;   /* config.json, safetensors, tokenizer.json [, tokenizer_config.json] */
    const char *adapter_dir; /* PEFT LoRA adapter merged in (W + scale B A), or NULL */
    /* a training checkpoint instead (luxtrain export CHECKPOINT --gguf): every tensor of the
     * model from `weights` (full fine-tuning; same names and shapes), or the adapter already
     * read (LoRA); model_dir still gives config.json and the tokenizer. NULL: unused. */
    const lt_st_file *weights;
    const lt_peft_adapter *adapter;
    const char *out_path;
    int type;      /* lt_gguf_type, or -1: BF16 for a BF16 model, else F16 */
    int overwrite; /* replace an existing out_path */
} lt_gguf_opts;

lt_status lt_gguf_export(const lt_gguf_opts *o, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
