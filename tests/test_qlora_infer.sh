#!/usr/bin/env bash
# test_qlora_infer.sh -- a QLoRA adapter at inference time, on the CPU:
# 1. `merge --quantize nf4` against PEFT + bitsandbytes (tests/fixtures/qlora_merge,
#    tools/gen_qlora_merge_fixture.py: the weight PEFT's Linear4bit merge computes,
#    dequantize_bnb_weight + the LoRA delta) on llama (separate projections) and
#    phi3 (fused qkv_proj / gate_up_proj quantized whole): the projections nobody
#    adapted equal bitsandbytes' dequantization bitwise, the adapted ones agree to
#    f32 rounding, everything else is the base's; a plain merge does not match.
#    The blocks where bitsandbytes' CPU nested quantization kept the farther code
#    (expected.json nested_not_nearest, one per model) agree to one step of its map;
# 2. `eval --quantize nf4 --adapter RUN/final` prints the loss the QLoRA run's
#    own evaluation wrote (metrics.jsonl eval_loss, same shard, batch and length)
#    to all 9 printed digits; on the unquantized base (no --quantize) it differs;
# 3. `score` and `generate` take --quantize nf4 with the adapter (scores differ from
#    the unquantized base's); --quantize with --compare is refused by name.
. "$(dirname "$0")/lt_test_lib.sh"

if [ ! -x "$bin" ]; then echo "FAIL: luxtrain binary '$bin' not built" >&2; exit 1; fi
lt_need_model
if [ -z "$py" ] || ! "$py" -c "import json, numpy" 2>/dev/null; then lt_skip "no LT_PYTHON with numpy"; fi
lt_enter_tmp

# ---- 1. merge --quantize nf4 against PEFT + bitsandbytes
fx="$src/tests/fixtures/qlora_merge"
for m in llama phi3; do
  "$bin" merge --model "$src/tests/fixtures/models/$m" --adapter "$fx/$m/adapter" --out "m4-$m" --quantize nf4 \
    >"m4-$m.txt" 2>&1 || { fail "merge --quantize nf4 $m: $(tail -2 "m4-$m.txt")"; continue; }
  "$bin" merge --model "$src/tests/fixtures/models/$m" --adapter "$fx/$m/adapter" --out "m0-$m" \
    >"m0-$m.txt" 2>&1 || { fail "merge $m: $(tail -2 "m0-$m.txt")"; continue; }
  "$py" - "$fx/$m" "m4-$m" "m0-$m" "$src/tests/fixtures/models/$m" <<'EOF' || fail "merge --quantize nf4 $m vs PEFT + bitsandbytes"
import glob, json, struct, sys
import numpy as np
def load(d):
    out = {}
    for p in sorted(glob.glob(d + "/*.safetensors")) if not d.endswith(".safetensors") else [d]:
        b = open(p, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
        for k, v in h.items():
            assert v["dtype"] == "F32", (k, v["dtype"])
            s, e = v["data_offsets"]
            out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype="<f4").reshape(v["shape"])
    return out
fx, m4, m0, base = sys.argv[1:5]
exp, q, plain, b = load(fx + "/expected.safetensors"), load(m4), load(m0), load(base + "/model.safetensors")
meta = json.load(open(fx + "/expected.json"))
targets, nn = meta["targets"], meta["nested_not_nearest"]
assert sorted(q) == sorted(b), "merged tensors differ from the base's names"
for k in b:
    if k not in exp:
        assert np.array_equal(q[k], b[k]), k + ": not the base's"
nad = 0
for k, e in exp.items():
    # blocks where bitsandbytes' CPU search kept the farther nested code: one map step apart
    near = np.ones(e.size, bool)
    for blk in nn.get(k, []):
        near[blk * 64:(blk + 1) * 64] = False
    near = near.reshape(e.shape)
    if (~near).any():
        far = np.abs(q[k][~near].astype(np.float64) - e[~near]).max()
        assert far <= 5e-3 * np.abs(e).max(), (k, "beyond one nested step", far)
    if not any("." + t + "." in k for t in targets):
        nad += 1
        assert np.array_equal(q[k][near], e[near]), (k, "not bitsandbytes' dequantization")
    else:
        d = np.abs(q[k][near].astype(np.float64) - e[near]).max()
        assert d <= 2e-6 * np.abs(e).max(), (k, d)
        dp = np.abs(plain[k].astype(np.float64) - e).max()
        assert dp > 100 * max(d, 1e-9), (k, "a plain merge matches too", dp, d)
assert nad > 0 and len(exp) > nad
print(m4, "matches", len(exp), "tensors")
EOF
done

# ---- 2. eval --quantize nf4 = the QLoRA run's own evaluation
lt_tokenize_sample shards
run=(--model "$model" --data shards/train-00000.h5 --eval-data shards/train-00000.h5 --lora-rank 8 --lora-alpha 16
     --lora-targets q,v,down --seq-len 128 --micro-batch 4 --lr 5e-3 --device cpu --threads 2 --epochs 0
     --max-steps 3 --eval-every 0 --save-every 0 --quantize nf4)
"$bin" train "${run[@]}" --out q >q.txt 2>&1 || { fail "train --quantize nf4: $(tail -3 q.txt)"; lt_finish; }
ev=(--model "$model" --adapter q/final --data shards/train-00000.h5 --seq-len 128 --batch 4 --device cpu --threads 2)
e4=$("$bin" eval "${ev[@]}" --quantize nf4 2>e4.txt) || fail "eval --quantize nf4: $(cat e4.txt)"
e0=$("$bin" eval "${ev[@]}" 2>e0.txt) || fail "eval (unquantized base): $(cat e0.txt)"
"$py" - q/metrics.jsonl "$e4" "$e0" <<'EOF' || fail "eval --quantize nf4 '$e4' vs the run's eval_loss (unquantized: '$e0')"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if '"eval_loss"' in l]
assert ev, "the run wrote no eval_loss"
run = ev[-1]
a, b = json.loads(sys.argv[2]), json.loads(sys.argv[3])
assert "%.9g" % run["eval_loss"] == "%.9g" % a["loss"], (run, a)
assert run["eval_target_tokens"] == a["target_tokens"], (run, a)
assert abs(b["loss"] - a["loss"]) > 1e-6, ("the unquantized base gives the same loss", a, b)
EOF

# ---- 3. score, generate; refusals
ids=1,15,27,33,8,19,4,52
s4=$("$bin" score --model "$model" --adapter q/final --quantize nf4 --ids $ids 2>s4.txt) \
  || fail "score --quantize nf4: $(cat s4.txt)"
s0=$("$bin" score --model "$model" --adapter q/final --ids $ids 2>s0.txt) || fail "score --adapter: $(cat s0.txt)"
"$py" -c "
import json, math, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert math.isfinite(a['sum']) and a['sum'] != b['sum'], (a['sum'], b['sum'])
" "$s4" "$s0" || fail "score: NF4 '$s4' vs unquantized '$s0'"
"$bin" generate --model "$model" --adapter q/final --quantize nf4 --prompt "Moien" --max-new-tokens 4 --device cpu \
  >g.txt 2>&1 || fail "generate --quantize nf4: $(tail -2 g.txt)"
echo '{}' >a.json
msg=$("$bin" eval --compare a.json a.json --quantize nf4 2>&1) && fail "eval --compare --quantize nf4 ran"
grep -q -- "--quantize belong to --tasks / --data" <<<"$msg" || fail "eval --compare --quantize: '$msg'"
msg=$("$bin" merge --model "$model" --adapter q/final --out x --quantize int4 2>&1) && fail "merge --quantize int4 ran"
grep -q -- "int4" <<<"$msg" || fail "merge --quantize int4: '$msg'"
lt_finish
