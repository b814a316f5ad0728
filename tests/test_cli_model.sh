#!/usr/bin/env bash
# test_cli_model.sh -- `luxtrain inspect` and `luxtrain score` on the fixture
# models (tests/fixtures/models/, written by tools/gen_fixtures.py with
# transformers). Checks:
#   - inspect (text and --json) reports the config's sizes and the parameter
#     count transformers computed;
#   - score's log-probs match transformers' (abs error <= 1e-4 each; sum
#     within 1e-4 relative), and --logits writes a .npy equal to transformers'
#     logits (normalized error <= 1e-5), for a single-file, a BF16 tied and a
#     sharded model;
#   - bad input (missing folder, non-numeric / out-of-vocabulary ids, unknown
#     option) exits nonzero with a clear message;
#   - a config that does not match the weights (hidden_size changed) is
#     refused naming the tensor and both shapes.
set -u
src="${LT_SOURCE_DIR:?LT_SOURCE_DIR not set}"
bin="${LT_BIN:?LT_BIN not set}"
py="${LT_PYTHON:-}"
tmp="${LT_TMP:-$(mktemp -d)}"
mkdir -p "$tmp"
fx="$src/tests/fixtures/models"
fails=0
checks=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
ok() { checks=$((checks + 1)); }

if [ ! -x "$bin" ]; then echo "FAIL: luxtrain binary '$bin' not built" >&2; exit 1; fi
if [ -z "$py" ] || ! "$py" -c "import numpy" 2>/dev/null; then
  echo "SKIP: LT_PYTHON with numpy not available" >&2; exit 77
fi

# expect_fail DESCRIPTION PATTERN -- COMMAND...: nonzero exit, stderr matches PATTERN
expect_fail() {
  local what="$1" pat="$2"; shift 3
  "$@" >"$tmp/out.txt" 2>"$tmp/err.txt"
  local rc=$?
  ok
  if [ $rc -eq 0 ]; then fail "$what: exit 0 (expected an error)"; return; fi
  if ! grep -Eq -e "$pat" "$tmp/err.txt"; then
    fail "$what: message does not match /$pat/: $(cat "$tmp/err.txt")"
  fi
}

# ---- inspect ----------------------------------------------------------------
for m in llama llama_tied eurollm mistral mistral_nemo qwen2 qwen3 phi3; do
  ok
  if ! "$bin" inspect "$fx/$m" >"$tmp/inspect_$m.txt" 2>"$tmp/err.txt"; then
    fail "inspect $m: $(cat "$tmp/err.txt")"; continue
  fi
  ok
  if ! "$bin" inspect "$fx/$m" --json >"$tmp/inspect_$m.json" 2>"$tmp/err.txt"; then
    fail "inspect --json $m: $(cat "$tmp/err.txt")"; continue
  fi
  ok
  if ! out=$("$py" - "$fx/$m" "$tmp/inspect_$m.json" "$tmp/inspect_$m.txt" 2>&1 <<'EOF'
import json, sys
d, js, txt = sys.argv[1:4]
cfg = json.load(open(d + "/config.json"))
exp = json.load(open(d + "/expected.json"))
got = json.loads(open(js).read())
text = open(txt).read()
bad = []
want = {
    "architecture": cfg["architectures"][0], "num_parameters": exp["num_parameters"],
    "num_layers": cfg["num_hidden_layers"], "hidden_size": cfg["hidden_size"], "vocab_size": cfg["vocab_size"],
    "num_heads": cfg["num_attention_heads"], "num_kv_heads": cfg["num_key_value_heads"],
    "intermediate_size": cfg["intermediate_size"],
    "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"],
    "tied_embeddings": bool(cfg.get("tie_word_embeddings")),
}
for k, v in want.items():
    if got.get(k) != v:
        bad.append(f"json {k} = {got.get(k)!r}, expected {v!r}")
dt = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[exp["saved_dtype"]]
if got.get("dtypes") != [dt]:
    bad.append(f"json dtypes {got.get('dtypes')}, expected [{dt}]")
rs = cfg.get("rope_scaling")
if (rs is None) != (got.get("rope_scaling") is None):
    bad.append(f"json rope_scaling {got.get('rope_scaling')} vs config {rs}")
elif rs and rs.get("type", rs.get("rope_type")) == "longrope":
    omp = cfg["original_max_position_embeddings"]
    if got["rope_scaling"]["original_max_position_embeddings"] != omp or \
            abs(got["rope_scaling"]["factor"] - rs.get("factor", cfg["max_position_embeddings"] / omp)) > 1e-12:
        bad.append("json longrope original_max_position_embeddings / factor")
elif rs and got["rope_scaling"]["factor"] != rs["factor"]:
    bad.append("json rope_scaling factor")
rd = int(want["head_dim"] * cfg.get("partial_rotary_factor", 1.0))
if got.get("rotary_dim") != rd:
    bad.append(f"json rotary_dim {got.get('rotary_dim')}, expected {rd}")
kind = (rs.get("type", rs.get("rope_type")) if rs else None) or "no scaling"
for needle in [cfg["architectures"][0], str(exp["num_parameters"]), "tied" if cfg.get("tie_word_embeddings") else "untied",
               dt, kind]:
    if needle not in text:
        bad.append(f"text output lacks {needle!r}")
print("; ".join(bad))
sys.exit(1 if bad else 0)
EOF
  ); then fail "inspect $m: $out"; fi
done

# ---- score ------------------------------------------------------------------
for m in llama llama_tied eurollm qwen3 gemma2 gemma3 phi3; do  # gemma2: soft-capped logits and log-probs
  ids=$("$py" -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['score_ids'])))" \
        "$fx/$m/expected.json")
  rm -f "$tmp/logits_$m.npy"
  ok
  if ! "$bin" score --model "$fx/$m" --ids "$ids" --logits "$tmp/logits_$m.npy" --device cpu --threads 2 \
       >"$tmp/score_$m.json" 2>"$tmp/err.txt"; then
    fail "score $m: $(cat "$tmp/err.txt")"; continue
  fi
  ok
  if ! out=$("$py" - "$fx/$m" "$tmp/score_$m.json" "$tmp/logits_$m.npy" 2>&1 <<'EOF'
import json, struct, sys
import numpy as np
d, sj, npy = sys.argv[1:4]

def read_safetensors(path):  # minimal reader: header length, JSON header, raw data
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        dt = {"F32": np.float32, "I32": np.int32}[v["dtype"]]
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=dt).reshape(v["shape"])
    return out

ex = read_safetensors(d + "/expected.safetensors")
lines = open(sj).read().strip().splitlines()
bad = []
if len(lines) != 1:
    bad.append(f"score printed {len(lines)} lines, expected 1")
got = json.loads(lines[-1])
ids = ex["score_ids"].tolist()
if got["ids"] != ids:
    bad.append("ids echoed wrongly")
lp = np.array(got["logprobs"], dtype=np.float64)
want = ex["score_logprobs"].astype(np.float64)
if lp.shape != want.shape:
    bad.append(f"{lp.shape[0]} log-probs, expected {want.shape[0]}")
else:
    err = np.abs(lp - want).max()
    if not err <= 1e-4:
        bad.append(f"log-probs max abs error {err:.3g} > 1e-4")
    if not abs(got["sum"] - want.sum()) <= 1e-4 * abs(want.sum()):
        bad.append(f"sum {got['sum']} vs {want.sum()}")
    if not abs(got["mean"] - want.mean()) <= 1e-4 * abs(want.mean()):
        bad.append(f"mean {got['mean']} vs {want.mean()}")
lg = np.load(npy)
wl = ex["score_logits"]
if lg.dtype != np.float32 or lg.shape != wl.shape:
    bad.append(f"npy {lg.dtype} {lg.shape}, expected float32 {wl.shape}")
else:
    ne = np.linalg.norm(lg.astype(np.float64) - wl) / np.linalg.norm(wl)
    if not ne <= 1e-5:
        bad.append(f"logits normalized error {ne:.3g} > 1e-5")
print("; ".join(bad))
sys.exit(1 if bad else 0)
EOF
  ); then fail "score $m: $out"; fi
done

# ---- bad input ----------------------------------------------------------------
expect_fail "inspect missing dir" "no-such-model" -- "$bin" inspect "$tmp/no-such-model"
expect_fail "score missing dir" "no-such-model" -- "$bin" score --model "$tmp/no-such-model" --ids 1,2,3
expect_fail "score non-numeric id" "'x7'" -- "$bin" score --model "$fx/llama" --ids 5,x7,3
expect_fail "score empty id" "empty" -- "$bin" score --model "$fx/llama" --ids 5,,3
expect_fail "score negative id" "'-3'" -- "$bin" score --model "$fx/llama" --ids 5,-3
expect_fail "score id out of vocab" "160.*vocabulary|vocabulary.*160" -- "$bin" score --model "$fx/llama" --ids 5,160,3
expect_fail "score one id" "at least 2" -- "$bin" score --model "$fx/llama" --ids 5
expect_fail "score without --ids" "--ids" -- "$bin" score --model "$fx/llama"
expect_fail "score unknown option" "--bogus" -- "$bin" score --model "$fx/llama" --ids 1,2 --bogus
expect_fail "score bad device" "expects one of cpu, cuda, auto, got .tpu." -- "$bin" score --model "$fx/llama" --ids 1,2 --device tpu
expect_fail "score signed id" "'\+5'" -- "$bin" score --model "$fx/llama" --ids +5,3
expect_fail "score id with a blank" "' 5'" -- "$bin" score --model "$fx/llama" --ids " 5,3"
# more ids than max_position_embeddings (256): refused before any allocation
many=$(seq -s, 0 299 | sed 's/[0-9][0-9]*/7/g')
expect_fail "score too many ids" "300 exceeds max_position_embeddings 256" -- "$bin" score --model "$fx/llama" --ids "$many"
expect_fail "score logits into a missing folder" "no-such-dir" -- "$bin" score --model "$fx/llama" --ids 1,2 \
  --logits "$tmp/no-such-dir/l.npy"
ok; if [ -e "$tmp/no-such-dir" ]; then fail "score --logits created $tmp/no-such-dir"; fi
# merge of an adapter trained for another model (hidden 32 vs 64): refused naming the adapter, nothing written
rm -rf "$tmp/merged_wrong"
expect_fail "merge adapter of another model" "peft/adapter.*does not fit.*q_proj is 32 -> 32.*64 -> 64" -- \
  "$bin" merge --model "$fx/llama" --adapter "$src/tests/fixtures/peft/adapter" --out "$tmp/merged_wrong"
ok; if [ -e "$tmp/merged_wrong" ]; then fail "merge wrote $tmp/merged_wrong after refusing the adapter"; fi

# ---- config that does not match the weights -------------------------------------
bad="$tmp/llama_bad"
rm -rf "$bad"; cp -r "$fx/llama" "$bad"
"$py" - "$bad/config.json" <<'EOF'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["hidden_size"] = 48; c["head_dim"] = 12
json.dump(c, open(p, "w"))
EOF
pat="model.embed_tokens.weight.*\[160, 64\].*\[160, 48\]"
expect_fail "inspect mismatched config" "$pat" -- "$bin" inspect "$bad"
expect_fail "score mismatched config" "$pat" -- "$bin" score --model "$bad" --ids 1,2,3
# a missing tensor is named
rm -rf "$bad"; cp -r "$fx/llama" "$bad"
"$py" - "$bad/config.json" <<'EOF'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["num_hidden_layers"] = 3
json.dump(c, open(p, "w"))
EOF
expect_fail "inspect missing layer" "model.layers.2.input_layernorm.weight.*missing" -- "$bin" inspect "$bad"
# a tensor the architecture does not use is refused and named
rm -rf "$bad"; cp -r "$fx/llama" "$bad"
"$py" - "$bad/config.json" <<'EOF'
import json, sys
p = sys.argv[1]; c = json.load(open(p)); c["num_hidden_layers"] = 1
json.dump(c, open(p, "w"))
EOF
expect_fail "inspect unused tensors" "does not use.*model.layers.1" -- "$bin" inspect "$bad"

if [ $fails -gt 0 ]; then echo "test_cli_model: $fails of $checks checks FAILED" >&2; exit 1; fi
echo "test_cli_model: all $checks checks passed"
