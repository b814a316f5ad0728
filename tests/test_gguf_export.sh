#!/usr/bin/env bash
# test_gguf_export.sh -- `luxtrain export --gguf OUT.gguf --model DIR [--adapter A] [--type T]`:
#   every model of tests/fixtures/gguf/models.txt (the sample model and one
#   tiny model per family, with a fixture tokenizer) in f32, f16, bf16 and
#   q8_0, read back with llama.cpp's `gguf` package and checked against
#   config.json, the tokenizer files and the safetensors values
#   (tests/gguf_check.py); the default type (bf16 for the BF16 sample model);
#   a LoRA adapter merged in (and one on phi3's fused modules; models.txt's
#   adapters with trained embeddings); from checkpoints (`export CHECKPOINT --gguf`):
#   a full run's F32 weights, a LoRA run's adapter (the same file as
#   --adapter RUN/final; with --train-embeddings all too); Gemma3ForConditionalGeneration: its language
#   model as the gemma3 GGUF of the same weights as a Gemma3ForCausalLM (text only), from a LoRA run's
#   checkpoint (PEFT's regex target_modules) and a full run's; errors: an unknown --type, an existing OUT without
#   --overwrite (kept as it was), an olmo2 model whose head_dim llama.cpp
#   cannot take, gemma2 / gemma3 configs
#   llama.cpp's gemma graphs cannot express (query_pre_attn_scalar other than
#   head_dim, a gemma3 soft-cap, an untied gemma2 head, gemma2 without
#   soft-caps, layer_types with no period) -- and gemma transformers 5 configs
#   giving the v4 file --, a model without
#   tokenizer.json, f16 of a
#   weight beyond its range, a
#   BPE with neither ByteLevel nor byte_fallback, a byte_fallback BPE whose
#   normalizer / pre-tokenizer llama.cpp's SPM cannot follow, not a checkpoint, a checkpoint with
#   --adapter, --out with --gguf, no source, --type without --gguf -- each
#   leaves no OUT.tmp-* behind.
. "$(dirname "$0")/lt_test_lib.sh"
ok() { echo "ok   $*"; }

if [ ! -x "$bin" ]; then echo "FAIL: luxtrain binary '$bin' not built" >&2; exit 1; fi
[ -n "$py" ] && "$py" -c "import gguf, numpy" 2>/dev/null \
  || lt_skip "no Python with the gguf package (LT_PYTHON='$py'; tools/requirements-test.txt)"
lt_need_model
lt_enter_tmp
check="$src/tests/gguf_check.py"

# a model folder with the tokenizer files (the fixture models have none)
model_dir() { # NAME MODEL TOKENIZER -> prints the folder
    local name=$1 m=$src/$2 t=$3 f
    if [ "$t" == "-" ]; then echo "$m"; return; fi
    mkdir -p "models/$name"
    for f in "$m"/config.json "$m"/model*.safetensors "$m"/model.safetensors.index.json; do
        [ -e "$f" ] && ln -sf "$f" "models/$name/"
    done
    ln -sf "$src/$t"/* "models/$name/"
    echo "models/$name"
}

while read -r name mdir tdir adir; do
    case "$name" in '#'* | '') continue ;; esac
    d=$(model_dir "$name" "$mdir" "$tdir")
    a=()
    [ -n "$adir" ] && a=(--adapter "$src/$adir")
    for t in f32 f16 bf16 q8_0; do
        "$bin" export --gguf "$name.$t.gguf" --model "$d" --type "$t" "${a[@]}" >"$name.$t.txt" 2>&1 \
          || { fail "$name $t: $(tail -2 "$name.$t.txt")"; continue; }
        "$py" "$check" check "$name.$t.gguf" "$d" "$t" ${adir:+"$src/$adir"} >"$name.$t.check" 2>&1 \
          && ok "$name $t: $(tail -1 "$name.$t.check")" || fail "$name $t: $(tail -3 "$name.$t.check")"
    done
done <"$src/tests/fixtures/gguf/models.txt"

# the default type follows the model: the sample model is BF16
"$bin" export --gguf default.gguf --model "$model" >default.txt 2>&1 || fail "default type: $(cat default.txt)"
cmp -s default.gguf sample.bf16.gguf && ok "default type of a BF16 model is bf16" \
  || fail "the default export of the BF16 sample model is not its --type bf16 export"

# a LoRA adapter merged in (PEFT format, q/v/down)
d=models/llama
"$py" "$check" adapter "$d" adapter >adapter.txt 2>&1 || fail "writing the adapter: $(cat adapter.txt)"
for t in f32 q8_0; do
    "$bin" export --gguf "lora.$t.gguf" --model "$d" --adapter adapter --type "$t" >"lora.$t.txt" 2>&1 \
      || fail "--adapter $t: $(tail -2 "lora.$t.txt")"
    "$py" "$check" check "lora.$t.gguf" "$d" "$t" adapter >"lora.$t.check" 2>&1 \
      && ok "--adapter $t: $(tail -1 "lora.$t.check")" || fail "--adapter $t: $(tail -3 "lora.$t.check")"
done
cmp -s lora.f32.gguf llama.f32.gguf && fail "--adapter changed nothing"
# phi3: LoRA on the fused modules (qkv_proj, gate_up_proj) merged into attn_qkv / ffn_up
d=models/phi_long
"$py" "$check" adapter "$d" adapter3 >adapter3.txt 2>&1 || fail "writing the phi3 adapter: $(cat adapter3.txt)"
"$bin" export --gguf lora3.gguf --model "$d" --adapter adapter3 --type f32 >lora3.txt 2>&1 \
  || fail "phi3 --adapter: $(tail -2 lora3.txt)"
"$py" "$check" check lora3.gguf "$d" f32 adapter3 >lora3.check 2>&1 \
  && ok "phi3 --adapter (fused qkv_proj / gate_up_proj): $(tail -1 lora3.check)" || fail "phi3 --adapter: $(tail -3 lora3.check)"

# from a checkpoint: a full run's weights, a LoRA run's adapter, on the base model
lt_tokenize_sample shards
common=(--data shards/train-00000.h5 --seq-len 64 --micro-batch 2 --epochs 0 --max-steps 2 --lr 1e-2
        --save-every 2 --device cpu --threads 1)
"$bin" train --model "$model" --out full "${common[@]}" >full.txt 2>&1 || fail "full train: $(tail -3 full.txt)"
"$bin" train --model "$model" --out lora --lora-rank 4 --lora-alpha 8 --lora-targets q,k,v,down "${common[@]}" \
  >lora.txt 2>&1 || fail "LoRA train: $(tail -3 lora.txt)"
# full: the checkpoint's F32 weights (a folder holding them as model.safetensors is the reference)
mkdir -p ckf && ln -sf "$model"/{config.json,tokenizer.json,tokenizer_config.json} ckf/
ln -sf "$PWD/full/checkpoints/step-000002/weights.safetensors" ckf/model.safetensors
"$bin" export full/checkpoints/step-000002 --gguf full.gguf --type f32 >fc.txt 2>&1 || fail "full checkpoint: $(cat fc.txt)"
"$bin" export --gguf ckf.gguf --model ckf --type f32 >ckf.txt 2>&1 || fail "checkpoint weights folder: $(cat ckf.txt)"
"$py" "$check" same full.gguf ckf.gguf >same.txt 2>&1 && "$py" "$check" check full.gguf ckf f32 >>same.txt 2>&1 \
  && ok "full checkpoint: $(tail -1 same.txt)" || fail "full checkpoint: $(tail -2 same.txt)"
"$py" "$check" same full.gguf sample.f32.gguf >/dev/null 2>&1 && fail "the full checkpoint exported the base weights"
# LoRA: the same file as the run's final adapter merged into the base model
"$bin" export lora/checkpoints/step-000002 --gguf lc.gguf --type q8_0 >lc.txt 2>&1 || fail "LoRA checkpoint: $(cat lc.txt)"
"$bin" export --gguf lf.gguf --model "$model" --adapter lora/final --type q8_0 >lf.txt 2>&1 || fail "final: $(cat lf.txt)"
cmp -s lc.gguf lf.gguf && ok "LoRA checkpoint = its final adapter merged" || fail "LoRA checkpoint differs from --adapter final"
"$py" "$check" check lc.gguf "$model" q8_0 lora/final >lcc.txt 2>&1 && ok "LoRA checkpoint: $(tail -1 lcc.txt)" \
  || fail "LoRA checkpoint: $(tail -2 lcc.txt)"
lora_run() { # WHAT MODEL RUN TYPE BASE.gguf TRAIN-ARGS...: a LoRA run's checkpoint exported as its final adapter
    local what=$1 m=$2 run=$3 t=$4 base=$5
    shift 5
    "$bin" train --model "$m" --out "$run" --lora-rank 4 --lora-alpha 8 "$@" >"$run.txt" 2>&1 \
      || { fail "$what train: $(tail -3 "$run.txt")"; return; }
    "$bin" export "$run/checkpoints/step-000002" --gguf "$run.c.gguf" --type "$t" >"$run.c.txt" 2>&1 \
      || fail "$what checkpoint: $(cat "$run.c.txt")"
    "$bin" export --gguf "$run.f.gguf" --model "$m" --adapter "$run/final" --type "$t" >"$run.f.txt" 2>&1 \
      || fail "$what final: $(cat "$run.f.txt")"
    cmp -s "$run.c.gguf" "$run.f.gguf" && ok "$what checkpoint = its final adapter merged" \
      || fail "$what checkpoint differs from --adapter final"
    "$py" "$check" check "$run.c.gguf" "$m" "$t" "$run/final" >"$run.check" 2>&1 && ok "$what: $(tail -1 "$run.check")" \
      || fail "$what: $(tail -2 "$run.check")"
    "$py" "$check" same "$run.c.gguf" "$base" >/dev/null 2>&1 && fail "the $what checkpoint exported the base weights"
}
# a LoRA run with --train-embeddings all: the trained embed_tokens (tied head) folded in, from the checkpoint
# as from the run's final adapter (modules_to_save)
lora_run "--train-embeddings all" "$model" lemb f32 sample.f32.gguf --lora-targets q,v --train-embeddings all "${common[@]}"

# Gemma3ForConditionalGeneration: its language model as the gemma3 GGUF of the same weights in a
# Gemma3ForCausalLM folder (text_config as config.json, the tensors renamed, the other towers left out),
# with a line saying the vision tower and projector are not included; a LoRA run on it (PEFT's regex
# target_modules) exported from its checkpoint as from its final adapter; a full run's checkpoint as its
# final folder (a whole Gemma3ForConditionalGeneration again)
grep -q "the vision tower and projector are not included" gemma3_cg.f32.txt \
  && ok "gemma3_cg: $(grep 'not included' gemma3_cg.f32.txt | sed 's/.*: the language/the language/')" \
  || fail "gemma3_cg: no line about the vision tower: $(cat gemma3_cg.f32.txt)"
mkdir -p cg_text && ln -sf "$src/tests/fixtures/gguf/tok_llama3"/* cg_text/
"$py" - "$src/tests/fixtures/gguf/gemma3_cg_qs16" cg_text "$src/tests" <<'EOF'
import json, os, struct, sys
sys.path.insert(0, sys.argv[3])
import gguf_check
cfg = gguf_check.load_config(sys.argv[1])
cfg["architectures"] = ["Gemma3ForCausalLM"]
json.dump(cfg, open(os.path.join(sys.argv[2], "config.json"), "w"))
header, blobs, off = {}, [], 0
for n, a in gguf_check.read_model(sys.argv[1]).items():
    header[n] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
    blobs.append(a.astype("float32").tobytes())
    off += a.nbytes
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open(os.path.join(sys.argv[2], "model.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
EOF
"$bin" export --gguf cg_text.gguf --model cg_text --type f32 >cgt.txt 2>&1 \
  && "$py" "$check" same cg_text.gguf gemma3_cg.f32.gguf >>cgt.txt 2>&1 \
  && ok "gemma3_cg = the gemma3 GGUF of its language model as a Gemma3ForCausalLM: $(tail -1 cgt.txt)" \
  || fail "gemma3_cg against its language model as a Gemma3ForCausalLM: $(tail -2 cgt.txt)"
d=models/gemma3_cg
"$bin" tokenize --tokenizer "$d" --input "$src/data/sample/luxit_sample.jsonl" --out shcg --quiet >shcg.txt 2>&1 \
  || fail "tokenize for gemma3_cg: $(tail -2 shcg.txt)"
cgc=(--data shcg/train-00000.h5 "${common[@]:2}")
lora_run "gemma3_cg LoRA" "$d" cgl q8_0 gemma3_cg.q8_0.gguf --lora-targets q,v,down "${cgc[@]}"
grep -q 'language_model' cgl/final/adapter_config.json || fail "gemma3_cg LoRA: target_modules not PEFT's regex"
"$bin" train --model "$d" --out cgf "${cgc[@]}" >cgf.txt 2>&1 || fail "gemma3_cg full train: $(tail -3 cgf.txt)"
"$bin" export cgf/checkpoints/step-000002 --gguf cgfc.gguf --type f32 >cgfc.txt 2>&1 || fail "gemma3_cg full checkpoint: $(cat cgfc.txt)"
"$bin" export --gguf cgff.gguf --model cgf/final --type f32 >cgff.txt 2>&1 || fail "gemma3_cg final: $(cat cgff.txt)"
"$py" "$check" same cgfc.gguf cgff.gguf >cgfs.txt 2>&1 && "$py" "$check" check cgfc.gguf cgf/final f32 >>cgfs.txt 2>&1 \
  && ok "gemma3_cg full checkpoint = its final folder: $(tail -1 cgfs.txt)" || fail "gemma3_cg full checkpoint: $(tail -2 cgfs.txt)"
"$py" "$check" same cgfc.gguf gemma3_cg.f32.gguf >/dev/null 2>&1 && fail "the gemma3_cg full checkpoint exported the base weights"

# errors
expect_fail() { # WHAT PATTERN ARGS...: exits non-zero, says PATTERN, leaves no temporary file
    local what=$1 pat=$2
    shift 2
    if "$bin" export "$@" >err.txt 2>&1; then fail "$what: succeeded"; return; fi
    grep -q -- "$pat" err.txt && ok "$what: $(head -1 err.txt)" || fail "$what: said '$(cat err.txt)', not '$pat'"
    ls ./*.tmp-* >/dev/null 2>&1 && fail "$what: left $(ls ./*.tmp-*)"
    rm -f ./*.tmp-*
}
expect_fail "unknown --type" "--type expects one of f16, bf16, q8_0, f32, got .q4_0." --gguf x.gguf --model "$model" --type q4_0
cp llama.f16.gguf keep.gguf
expect_fail "existing OUT" "overwrite" --gguf keep.gguf --model models/llama --type f32
expect_fail "Gemma3ForConditionalGeneration: text_config's query_pre_attn_scalar" \
  "gemma3_cg: query_pre_attn_scalar 24: llama.cpp's gemma3 graph" --gguf x.gguf --model "$src/tests/fixtures/models/gemma3_cg"
cmp -s keep.gguf llama.f16.gguf || fail "an existing OUT was changed without --overwrite"
"$bin" export --gguf keep.gguf --model models/llama --type f32 --overwrite >ow.txt 2>&1 \
  && cmp -s keep.gguf llama.f32.gguf && ok "--overwrite replaces OUT" || fail "--overwrite: $(cat ow.txt)"
mkdir -p olmo16 && ln -sf "$src/tests/fixtures/models/olmo2"/{config.json,model.safetensors} olmo16/
ln -sf "$src/tests/fixtures/gguf/tok_cl100k"/* olmo16/
expect_fail "olmo2 with head_dim != hidden / heads" "head_dim 16 with 4 heads is not hidden_size 48" --gguf x.gguf \
  --model olmo16
# gemma: what llama.cpp's graphs cannot express (checked before the weights are read)
variant() { # NAME FAMILY PYTHON-EDIT [CONFIG]: the family's fixture weights, tok_llama3, gemma{2,3}_qs16's config (or CONFIG) edited
    mkdir -p "$1" && ln -sf "$src/tests/fixtures/models/$2/model.safetensors" "$src/tests/fixtures/gguf/tok_llama3"/* "$1/"
    "$py" -c "import json, sys; c = json.load(open(sys.argv[1])); $3; json.dump(c, open(sys.argv[2], 'w'))" \
      "${4:-$src/tests/fixtures/gguf/${2}_qs16/config.json}" "$1/config.json"
}
# transformers 5 configs (layer_types, rope_parameters per layer type) give the same file
for fam in gemma2 gemma3; do
    variant "${fam}_v5" "$fam" "c['query_pre_attn_scalar'] = 16" "$src/tests/fixtures/config/v5/$fam/config.json"
    "$bin" export --gguf "${fam}_v5.gguf" --model "${fam}_v5" --type f32 >v5.txt 2>&1 \
      && "$py" "$check" same "${fam}_v5.gguf" "$fam.f32.gguf" >>v5.txt 2>&1 \
      && ok "$fam: a transformers 5 config gives the same file" || fail "$fam v5 config: $(tail -2 v5.txt)"
done
variant g3types gemma3 "c['query_pre_attn_scalar'] = 16; c['layer_types'][1] = 'full_attention'" \
  "$src/tests/fixtures/config/v5/gemma3/config.json"
expect_fail "gemma3 layer_types with no period" "repeat with no period llama.cpp's sliding_window_pattern" \
  --gguf x.gguf --model g3types
variant g2qs gemma2 "c['query_pre_attn_scalar'] = 24"
expect_fail "gemma2 query_pre_attn_scalar != head_dim" "query_pre_attn_scalar 24: llama.cpp's gemma2 graph scales attention by head_dim^-0.5 = 16^-0.5" --gguf x.gguf --model g2qs
variant g2big gemma2 "c['num_hidden_layers'] = 46"
expect_fail "gemma2 at 46 layers (llama.cpp's 27B scale)" "scales attention by (hidden_size / heads)^-0.5 = 12^-0.5 for 46 layers" \
  --gguf x.gguf --model g2big
variant g3cap gemma3 "c['final_logit_softcapping'] = 30.0"
expect_fail "gemma3 with a soft-cap" "final_logit_softcapping is set: llama.cpp's gemma3 graph has no logit soft-capping" --gguf x.gguf --model g3cap
variant g2untied gemma2 "c['tie_word_embeddings'] = False"
expect_fail "untied gemma2" "tie_word_embeddings is false: llama.cpp's gemma2 graph reads the head from token_embd" --gguf x.gguf --model g2untied
variant g2nocap gemma2 "c['attn_logit_softcapping'] = None"
expect_fail "gemma2 without soft-caps" "must both be set: llama.cpp's gemma2 graph always soft-caps" --gguf x.gguf --model g2nocap
expect_fail "no tokenizer.json" "tokenizer.json: missing" --gguf x.gguf --model "$src/tests/fixtures/models/qwen2"
mkdir -p spm && ln -sf "$src/tests/fixtures/models/llama"/{config.json,model.safetensors} spm/
"$py" - "$src/tests/fixtures/gguf/tok_llama3/tokenizer.json" spm/tokenizer.json <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
t["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
t["decoder"] = None
json.dump(t, open(sys.argv[2], "w"))
EOF
expect_fail "a BPE with neither ByteLevel nor byte_fallback" "byte-level BPE" --gguf x.gguf --model spm
mkdir -p spm2 && ln -sf "$src/tests/fixtures/models/llama"/{config.json,model.safetensors} spm2/
"$py" - "$src/tests/fixtures/gguf/tok_llama3/tokenizer.json" spm2/tokenizer.json <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
t["model"]["byte_fallback"] = True
t["normalizer"] = {"type": "NFC"}  # luxtrain reads it; llama.cpp's SPM only escapes spaces
t["pre_tokenizer"] = None
json.dump(t, open(sys.argv[2], "w"))
EOF
# a small SentencePiece-style tokenizer: written as llama.cpp's "llama" model (scores from the merge
# ranks); with a token two tokens make but no merge does, refused
mkdir -p spm3 spm4 && ln -sf "$src/tests/fixtures/models/llama"/{config.json,model.safetensors} spm3/
ln -sf "$src/tests/fixtures/models/llama"/{config.json,model.safetensors} spm4/
"$py" - spm3/tokenizer.json spm4/tokenizer.json <<'EOF'
import json, sys
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
vocab.update({f"<0x{b:02X}>": 3 + b for b in range(10)})
for c in ["\u2581", "a", "b", "c", "ab", "\u2581a", "\u2581ab"]:
    vocab[c] = len(vocab)
special = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
            "special": True} for c, i in list(vocab.items())[:3]]
t = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
     "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
     "pre_tokenizer": None, "post_processor": None, "decoder": None,
     "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
               "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
               "vocab": vocab, "merges": [["a", "b"], ["\u2581", "a"], ["\u2581", "ab"], ["\u2581a", "b"]]}}
json.dump(t, open(sys.argv[1], "w"))
t["model"]["merges"] = t["model"]["merges"][1:]  # "ab" no merge's result
json.dump(t, open(sys.argv[2], "w"))
EOF
"$bin" export --gguf spm3.gguf --model spm3 --type f32 >spm3.txt 2>&1 && "$py" "$check" check spm3.gguf spm3 f32 >>spm3.txt 2>&1 \
  && ok "a SentencePiece-style tokenizer: $(grep tokenizer spm3.txt)" || fail "SentencePiece-style tokenizer: $(tail -2 spm3.txt)"
expect_fail "a SentencePiece-style token no merge makes" "token 'ab' (id 17) is no merge's result but 'a' + 'b' are tokens" \
  --gguf x.gguf --model spm4
expect_fail "byte_fallback BPE llama.cpp cannot split alike" "llama.cpp's SentencePiece tokenizer would split text otherwise" \
  --gguf x.gguf --model spm2
mkdir -p big && ln -sf "$src/tests/fixtures/models/llama/config.json" "$src/tests/fixtures/gguf/tok_llama3"/* big/
"$py" - "$src/tests/fixtures/models/llama/model.safetensors" big/model.safetensors <<'EOF'
import json, struct, sys
import numpy as np
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])["model.layers.1.mlp.up_proj.weight"]
assert h["dtype"] == "F32"
b[8 + n + h["data_offsets"][0] + 12:8 + n + h["data_offsets"][0] + 16] = np.float32(-7e4).tobytes()
open(sys.argv[2], "wb").write(b)
EOF
expect_fail "a weight beyond f16's range" "up_proj.weight.*-70000 at 3, beyond f16's range" --gguf x.gguf --model big \
  --type f16
"$bin" export --gguf big.gguf --model big --type bf16 >big.txt 2>&1 && ok "the same model as bf16" \
  || fail "bf16 of a model beyond f16's range: $(cat big.txt)"
expect_fail "--gguf: not a checkpoint" "step-1" some/checkpoints/step-1 --gguf x.gguf
expect_fail "--gguf, checkpoint and --adapter" "holds its adapter" lora/checkpoints/step-000002 --gguf x.gguf \
  --adapter lora/final
expect_fail "--gguf with --out" "not used with it" --gguf x.gguf --model "$model" --out dir
expect_fail "--gguf without a source" "needs --model DIR or a checkpoint" --gguf x.gguf
expect_fail "--type without --gguf" "option of export --gguf" some/checkpoints/step-1 --out dir --type f16
[ -e x.gguf ] && fail "a failed export left x.gguf"

lt_finish
