#!/usr/bin/env bash
# test_gguf_spm.sh -- SentencePiece-style tokenizers (tokenizer.json: BPE with
#   byte_fallback on U+2581-escaped text) in `luxtrain export --gguf`, as
#   llama.cpp's "llama" (SPM) tokenizer: for the real Llama 2 and Gemma 3
#   tokenizers in ../shared/tokenizers (read here, never copied into the
#   tree; and Llama 2's with a Metaspace pre-tokenizer instead of its
#   normalizer, the form of newer conversions such as Mistral v0.3), a model folder at their vocabulary size (zero weights) exported,
#   the file read back with the `gguf` package and its tokenizer keys checked
#   (tokens, types with byte / unknown / control / user-defined, scores from
#   the merge ranks, add_space_prefix, unk / bos / eos / pad, no merges), and
#   the ids llama.cpp gave a set of texts from such a file
#   (tests/fixtures/gguf/spm_ids.json, tools/gen_gguf_fixtures.py spm) equal
#   to Hugging Face `tokenizers`' ids on the same tokenizer.json. Skips (77)
#   without ../shared or without a Python holding gguf and tokenizers.
#   (gguf's reader takes a minute or two on Gemma 3's 262,208 tokens.)
. "$(dirname "$0")/lt_test_lib.sh"
ok() { echo "ok   $*"; }

if [ ! -x "$bin" ]; then echo "FAIL: luxtrain binary '$bin' not built" >&2; exit 1; fi
shared="${LT_SHARED_DIR:-$src/../shared}"
[ -f "$shared/tokenizers/llama2/tokenizer.json" ] && [ -f "$shared/tokenizers/gemma3/tokenizer.json" ] \
  || lt_skip "no real tokenizers in $shared/tokenizers (the project's ../shared)"
[ -n "$py" ] && "$py" -c "import gguf, numpy, tokenizers" 2>/dev/null \
  || lt_skip "no Python with gguf and tokenizers (LT_PYTHON='$py'; tools/requirements-test.txt)"
lt_enter_tmp
fx="$src/tests/fixtures/gguf/spm_ids.json"

for name in llama2 llama2_metaspace gemma3; do
    "$py" "$src/tools/gen_gguf_fixtures.py" spm-model "$name" "$shared/tokenizers" "$name" >"$name.model.txt" 2>&1 \
      || { fail "$name: model folder: $(tail -2 "$name.model.txt")"; continue; }
    "$bin" export --gguf "$name.gguf" --model "$name" --type bf16 >"$name.export.txt" 2>&1 \
      || { fail "$name: export: $(tail -2 "$name.export.txt")"; continue; }
    "$py" "$src/tests/gguf_check.py" spm "$name.gguf" "$name" "$fx" "$name" >"$name.check" 2>&1 \
      && ok "$name: $(tr '\n' ';' <"$name.check")" || fail "$name: $(tail -3 "$name.check")"
done

lt_finish
