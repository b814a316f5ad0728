#!/usr/bin/env bash
# test_train_cli.sh -- the quickstart path on the sample model
# (data/sample/model, a tiny llama with a ChatML tokenizer):
#   tokenize data/sample -> train LoRA for a few steps with eval data ->
#   metrics.jsonl sane (one line per step with every field, eval lines, loss
#   falls), checkpoints and final/ PEFT adapter present, config.json is a valid
#   --config -> eval --adapter (one JSON line) -> generate (greedy, twice: same
#   text; sampled with a seed: same text twice) -> merge, and the merged
#   folder evaluates to the adapter's loss within BF16 rounding (1e-3
#   relative) -> bad options of generate / merge exit 2.
# Resume bit-exactness, crash-in-checkpoint and divergence are in
# tests/test_train_run.c; numerics against PyTorch/PEFT in test_train_torch.c.
. "$(dirname "$0")/lt_test_lib.sh"

if [ ! -x "$bin" ]; then echo "FAIL: luxtrain binary '$bin' not built" >&2; exit 1; fi
lt_need_model
if [ -z "$py" ] || ! "$py" -c "import json" 2>/dev/null; then echo "SKIP: no LT_PYTHON" >&2; exit 77; fi
lt_enter_tmp

"$bin" tokenize --tokenizer "$model" --input "$src/data/sample/luxit_sample.jsonl" \
  "$src/data/sample/conversations.jsonl" --out shards --val-fraction 0.1 --quiet >tok.txt 2>&1 \
  || fail "tokenize: $(tail -3 tok.txt)"

"$bin" train --model "$model" --data shards/train-00000.h5 --eval-data shards/val-00000.h5 --out run \
  --lora-rank 8 --lora-alpha 16 --seq-len 128 --micro-batch 4 --grad-accum 2 --epochs 0 --max-steps 6 --lr 5e-3 \
  --warmup-steps 1 --eval-every 3 --save-every 3 --device cpu --threads 2 >train.txt 2>&1 \
  || fail "train: $(tail -3 train.txt)"
for f in config.json metrics.jsonl final/adapter_config.json final/adapter_model.safetensors \
         checkpoints/step-000003/COMPLETE checkpoints/step-000006/COMPLETE; do
  [ -f "run/$f" ] || fail "run/$f missing"
done
# the loss plot written at the end of the run (train + eval curves)
grep -q 'class="train-loss"' run/loss.svg 2>/dev/null || fail "run/loss.svg missing or without a training curve"
grep -q 'class="eval-loss"' run/loss.svg || fail "run/loss.svg has no eval curve"
"$py" - run/metrics.jsonl <<'EOF' || fail "metrics.jsonl"
import json, math, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
steps = [l for l in lines if "loss" in l]
evals = [l for l in lines if "eval_loss" in l]
keys = ["step", "epoch", "loss", "grad_norm", "lr", "tokens", "target_tokens", "tokens_per_s", "elapsed_s"]
assert [l["step"] for l in steps] == list(range(1, 7)), [l["step"] for l in steps]
for l in steps:
    assert all(k in l for k in keys), l
    assert all(math.isfinite(l[k]) for k in keys), l
    assert l["target_tokens"] > 0 and l["tokens"] > 0, l
assert steps[0]["lr"] == 0 and steps[1]["lr"] == 5e-3, steps[:2]
assert all(b["tokens"] > a["tokens"] for a, b in zip(steps, steps[1:])), "tokens must grow"
assert [e["step"] for e in evals] == [3, 6], evals
assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] + 0.5
assert steps[-1]["loss"] < steps[0]["loss"], (steps[0]["loss"], steps[-1]["loss"])
EOF

# the resolved config is itself a valid --config (rejected only because run/ holds checkpoints)
"$bin" train --config run/config.json --out run2 --max-steps 1 --save-every 0 --eval-every 0 >cfg.txt 2>&1 \
  || fail "train --config run/config.json: $(tail -2 cfg.txt)"

ev=$("$bin" eval --model "$model" --adapter run/final --data shards/val-00000.h5 --seq-len 128 --device cpu 2>/dev/null)
"$py" -c "import json,sys; d=json.loads(sys.argv[1]); assert d['target_tokens']>0 and d['loss']>0" "$ev" \
  || fail "eval --adapter: '$ev'"

# --adapter given the run folder instead of its final/: the error says where the adapter is
msg=$("$bin" eval --model "$model" --adapter run --data shards/val-00000.h5 --seq-len 128 --device cpu 2>&1) \
  && fail "eval --adapter run (the run folder) succeeded"
grep -q "run is a training run folder.*--adapter run/final" <<<"$msg" || fail "eval --adapter run: '$msg'"

g1=$("$bin" generate --model "$model" --adapter run/final --prompt "Moien, wéi geet et?" --max-new-tokens 12 --device cpu 2>gen.txt) \
  || fail "generate: $(cat gen.txt)"
g2=$("$bin" generate --model "$model" --adapter run/final --prompt "Moien, wéi geet et?" --max-new-tokens 12 --device cpu 2>/dev/null)
[ -n "$g1" ] && [ "$g1" = "$g2" ] || fail "greedy generation not reproducible: '$g1' vs '$g2'"
s1=$("$bin" generate --model "$model" --prompt "Moien" --system "Du bass e Bot." --temperature 0.9 --top-p 0.8 --seed 5 --max-new-tokens 12 --device cpu 2>/dev/null)
s2=$("$bin" generate --model "$model" --prompt "Moien" --system "Du bass e Bot." --temperature 0.9 --top-p 0.8 --seed 5 --max-new-tokens 12 --device cpu 2>/dev/null)
[ -n "$s1" ] && [ "$s1" = "$s2" ] || fail "seeded sampling not reproducible: '$s1' vs '$s2'"

"$bin" merge --model "$model" --adapter run/final --out merged >merge.txt 2>&1 || fail "merge: $(cat merge.txt)"
em=$("$bin" eval --model merged --data shards/val-00000.h5 --seq-len 128 --device cpu 2>/dev/null)
"$py" -c "
import json,sys
a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2])
assert a['target_tokens']==b['target_tokens']
assert abs(a['loss']-b['loss']) <= 1e-3*abs(a['loss']), (a, b)
" "$ev" "$em" || fail "merged model loss '$em' vs adapter '$ev'"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
  [ -f "merged/$f" ] || fail "merged/$f missing"
done

# continue training from the exported adapter (its r / alpha / targets are kept)
"$bin" train --model "$model" --adapter run/final --data shards/train-00000.h5 --out cont --seq-len 128 \
  --micro-batch 4 --epochs 0 --max-steps 2 --lr 1e-3 --device cpu --threads 2 >cont.txt 2>&1 \
  || fail "train --adapter: $(tail -3 cont.txt)"
"$py" -c "
import json,sys
a=json.load(open('run/final/adapter_config.json')); b=json.load(open('cont/final/adapter_config.json'))
assert (a['r'], a['lora_alpha'], sorted(a['target_modules'])) == (b['r'], b['lora_alpha'], sorted(b['target_modules'])), (a, b)
" || fail "continued adapter config differs"

# full fine-tuning of the BF16 model: the export is a BF16 Hugging Face folder that loads again
"$bin" train --model "$model" --data shards/train-00000.h5 --out fullrun --seq-len 128 --micro-batch 4 \
  --epochs 0 --max-steps 2 --lr 1e-3 --device cpu --threads 2 >full.txt 2>&1 || fail "full train: $(tail -3 full.txt)"
"$py" - "$model/model.safetensors" fullrun/final/model.safetensors <<'PY' || fail "full export dtypes/names differ"
import json, struct, sys
def header(p):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"]) for k, v in h.items()}
a, b = header(sys.argv[1]), header(sys.argv[2])
assert a == b, set(a.items()) ^ set(b.items())
PY
"$bin" eval --model fullrun/final --data shards/val-00000.h5 --seq-len 128 --device cpu >/dev/null 2>full_eval.txt \
  || fail "eval of the fully fine-tuned export: $(cat full_eval.txt)"

# bad options
"$bin" generate --model "$model" --prompt x --temperature -1 2>/dev/null; [ $? -eq 2 ] || fail "generate --temperature -1 accepted"
"$bin" generate --model "$model" --prompt x --top-p 0 2>/dev/null; [ $? -eq 2 ] || fail "generate --top-p 0 accepted"
"$bin" generate --model "$model" 2>/dev/null; [ $? -eq 2 ] || fail "generate without --prompt accepted"
"$bin" merge --model "$model" --out x 2>/dev/null; [ $? -eq 2 ] || fail "merge without --adapter accepted"
"$bin" merge --model "$model" --adapter "$tmp/nope" --out x 2>/dev/null; [ $? -eq 1 ] || fail "merge of a missing adapter"

lt_finish
