#!/usr/bin/env bash
# test_train_qlora.sh -- QLoRA (`train --quantize nf4`) on the sample model,
# on the CPU: LoRA on q, v and down over NF4 base weights (so both paths run:
# adapted projections dequantize for the LoRA linear, the others use the
# nf4_matmul ops) -> the loss falls -> the adapter is a plain PEFT adapter
# (the same files and config keys as a LoRA run) -> it loads on the
# UNQUANTIZED base (eval --adapter) and lowers the loss on the training data
# there -> full fine-tuning with --quantize nf4 and an unknown --quantize are
# refused by name; --quantize enters the trajectory hash (resuming a LoRA
# run with --quantize nf4 is refused) -> a resumed QLoRA run ends bitwise as
# the uninterrupted one -> --dry-run: Llama-3.1-8B QLoRA (r 16
# on every projection, 4096 tokens, --recompute) fits a 24 GB GPU, its
# projections at ~0.516 bytes per parameter (tests/fixtures/config/llama31_8b:
# the published config.json).
. "$(dirname "$0")/lt_test_lib.sh"

if [ ! -x "$bin" ]; then echo "FAIL: luxtrain binary '$bin' not built" >&2; exit 1; fi
lt_need_model
if [ -z "$py" ] || ! "$py" -c "import json" 2>/dev/null; then lt_skip "no LT_PYTHON"; fi
lt_enter_tmp
lt_tokenize_sample shards

common=(--model "$model" --data shards/train-00000.h5 --lora-rank 8 --lora-alpha 16 --lora-targets q,v,down
        --seq-len 128 --micro-batch 4 --lr 5e-3 --device cpu --threads 2 --eval-every 0)
"$bin" train "${common[@]}" --epochs 2 --save-every 0 --quantize nf4 --out q >q.txt 2>&1 \
  || fail "train --quantize nf4: $(tail -3 q.txt)"
grep -q "QLoRA (NF4 base weights)" q.txt || fail "the run does not say QLoRA: $(head -2 q.txt)"
for f in final/adapter_config.json final/adapter_model.safetensors metrics.jsonl; do
  [ -f "q/$f" ] || fail "q/$f missing"
done
"$py" - q/metrics.jsonl <<'EOF' || fail "metrics.jsonl: the loss does not fall"
import json, math, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
assert len(steps) >= 4 and all(math.isfinite(s["loss"]) for s in steps), steps
half = len(steps) // 2
first = sum(s["loss"] for s in steps[:half]) / half
last = sum(s["loss"] for s in steps[half:]) / (len(steps) - half)
assert last < first, [s["loss"] for s in steps]
EOF

# the same adapter format as a LoRA run (a one-step plain LoRA run to compare with)
"$bin" train "${common[@]}" --epochs 0 --max-steps 1 --save-every 1 --out plain >plain.txt 2>&1 \
  || fail "train (LoRA): $(tail -3 plain.txt)"
"$py" - q/final plain/final <<'EOF' || fail "adapter format differs from a LoRA run's"
import json, struct, sys
def header(d):
    b = open(d + "/adapter_model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"]) for k, v in h.items()}
a = json.load(open(sys.argv[1] + "/adapter_config.json"))
b = json.load(open(sys.argv[2] + "/adapter_config.json"))
assert sorted(a) == sorted(b), (sorted(a), sorted(b))
for k in ("peft_type", "r", "lora_alpha", "target_modules", "task_type"):
    assert a[k] == b[k], (k, a[k], b[k])
assert header(sys.argv[1]) == header(sys.argv[2])
EOF

# the memory line counts the NF4 base weights as held: the QLoRA run's parameters are the LoRA run's
# with every projection's f32 bytes (the CPU's param dtype) replaced by its NF4 buffer (bitsandbytes'
# layout: 4-bit codes, one absmax byte per block of 64, 4-aligned, an fp32 absmax2 per 256 blocks and
# the fp32 offset); --zero 1/2 keep the same buffers (test_train_zero.sh: one process = ZeRO-3 on 1 rank)
"$py" - "$model/model.safetensors" q.txt plain.txt <<'EOF' || fail "memory line: the NF4 weights are not counted as held"
import json, re, struct, sys
b = open(sys.argv[1], "rb")
h = json.loads(b.read(struct.unpack("<Q", b.read(8))[0]))
proj = [v["shape"][0] * v["shape"][1] for k, v in h.items()
        if re.match(r"model\.layers\.\d+\.(self_attn\.[qkvo]|mlp\.(gate|up|down))_proj\.weight$", k)]
def nf4(n):
    blocks = -(-n // 64)
    return ((n + 1) // 2 + blocks + 3) // 4 * 4 + 4 * -(-blocks // 256) + 4
def params(f):
    return [int(m.group(1)) for m in (re.match(r"train: memory rank 0 of 1: parameters (\d+) B", l) for l in open(f)) if m]
q, p, nb = params(sys.argv[2]), params(sys.argv[3]), sum(nf4(n) for n in proj)
assert len(proj) == 4 * 7 and len(q) == 1 and len(p) == 1, (len(proj), q, p)
want = p[0] - 4 * sum(proj) + nb
assert q[0] == want, "QLoRA parameters %d B, expected %d B (LoRA run %d B; %d projections, %d NF4 bytes)" % (
    q[0], want, p[0], len(proj), nb)
print("ok   memory line: QLoRA parameters %d B = the LoRA run's %d B - %d f32 projection bytes + %d NF4 bytes"
      % (q[0], p[0], 4 * sum(proj), nb))
EOF

# the adapter on the unquantized base: loads, and the training loss falls there too
e0=$("$bin" eval --model "$model" --data shards/train-00000.h5 --seq-len 128 --device cpu 2>e0.txt) \
  || fail "eval base: $(cat e0.txt)"
e1=$("$bin" eval --model "$model" --adapter q/final --data shards/train-00000.h5 --seq-len 128 --device cpu 2>e1.txt) \
  || fail "eval --adapter (the QLoRA adapter on the unquantized base): $(cat e1.txt)"
"$py" -c "
import json, math, sys
a = json.loads(sys.argv[1]); b = json.loads(sys.argv[2])
assert math.isfinite(b['loss']) and a['target_tokens'] == b['target_tokens'], (a, b)
assert b['loss'] < a['loss'] - 0.1, ('no improvement on the unquantized base', a['loss'], b['loss'])
" "$e0" "$e1" || fail "QLoRA adapter on the unquantized base: base '$e0', adapted '$e1'"

# refusals, by name
msg=$("$bin" train --model "$model" --data shards/train-00000.h5 --out ff --quantize nf4 --device cpu 2>&1) \
  && fail "full fine-tuning with --quantize nf4 ran"
grep -q -- "--quantize nf4 is QLoRA.*full fine-tuning" <<<"$msg" || fail "full fine-tuning refusal: '$msg'"
msg=$("$bin" train "${common[@]}" --max-steps 1 --quantize int8 --out x 2>&1) && fail "--quantize int8 accepted"
grep -q -- "--quantize expects one of none, nf4, got 'int8'" <<<"$msg" || fail "--quantize int8: '$msg'"
"$bin" train "${common[@]}" --epochs 0 --max-steps 2 --save-every 1 --quantize nf4 --out plain --resume \
  >resume.txt 2>&1 && fail "resuming a LoRA run with --quantize nf4 succeeded"

# a QLoRA run resumed from a checkpoint ends bitwise where the uninterrupted run does
rs=("${common[@]}" --lora-rank 4 --quantize nf4 --epochs 0 --max-steps 4 --save-every 2)
"$bin" train "${rs[@]}" --out r1 >r1.txt 2>&1 || fail "train r1: $(tail -2 r1.txt)"
cp -r r1 r2 && rm -rf r2/checkpoints/step-000004 r2/final # as if stopped after step 2
"$bin" train "${rs[@]}" --out r2 --resume >r2b.txt 2>&1 || fail "train r2 --resume: $(tail -2 r2b.txt)"
cmp -s r1/final/adapter_model.safetensors r2/final/adapter_model.safetensors \
  || fail "a resumed QLoRA run ends with another adapter than the uninterrupted one"

# --dry-run: 8B QLoRA on a 24 GB GPU
q8=(--model "$src/tests/fixtures/config/llama31_8b" --data none.h5 --out none --dry-run --device cuda --lora-rank 16
    --seq-len 4096 --micro-batch 1 --recompute)
d4=$("$bin" train "${q8[@]}" --quantize nf4 2>&1) || fail "--dry-run --quantize nf4: $d4"
d16=$("$bin" train "${q8[@]}" 2>&1) || fail "--dry-run (LoRA): $d16"
grep -q "^luxtrain train --dry-run: llama, 8.030 B parameters (41.94 M trainable, QLoRA)" <<<"$d4" \
  || fail "dry-run header: $(head -1 <<<"$d4")"
grep -q "^QLoRA (--quantize nf4): 6.979 B parameters in NF4 (3.60 GB, 0.516 bytes each), 1.051 B in bf16" <<<"$d4" \
  || fail "dry-run NF4 line: $(grep QLoRA <<<"$d4")"
grep -q "fits a GPU of 16 GB: [a-z]*, 24 GB: yes" <<<"$d4" || fail "8B QLoRA does not fit 24 GB: $d4"
w4=$(awk '/<- this launch/ {print $2}' <<<"$d4"); w16=$(awk '/<- this launch/ {print $2}' <<<"$d16")
awk -v a="$w4" -v b="$w16" 'BEGIN {exit !(a > 5 && a < 6.5 && b > 16 && b < 16.5)}' \
  || fail "weights: QLoRA $w4 GB, LoRA $w16 GB (expected ~6 and ~16.2)"
lt_finish
