#!/usr/bin/env bash
# quickstart.sh -- README's first command: set up, build, and run the main job on
# the bundled sample (data/sample/): tokenize the Luxembourgish instruction set,
# take the toy base model's exam score and a generated answer, LoRA-fine-tune it
# (CPU when there is no GPU), evaluate, export the PEFT adapter, and show the
# held-out loss, the answer and the exam score again, then says in one
# summary what changed and what did not. Everything lands in runs/quickstart/.
#
#   bash tools/quickstart.sh            # full job (about a minute on 2 CPU cores, after the build)
#   LT_QUICK_STEPS=20 bash tools/quickstart.sh   # fewer optimizer steps
#   LT_BIN=build/tools/luxtrain LT_QUICK_RUN=DIR bash tools/quickstart.sh
#                                       # an existing binary (no setup, no build), output in DIR
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

if [[ -n "${LT_BIN:-}" ]]; then
  lt="$LT_BIN"
else
  bash tools/setup-deps.sh
  # Build the CUDA backend only where a GPU is present (CI builds it everywhere).
  cuda=OFF
  if command -v nvcc >/dev/null && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then cuda=ON; fi
  printf '\n== building luxtrain (CUDA %s; the first build takes a few minutes)\n' "$cuda"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLUXTRAIN_CUDA=$cuda >/dev/null
  cmake --build build -j "$(nproc)" --target luxtrain 2>&1 | grep -E '^\[ *[0-9]+%\]|error|warning' || true
  [[ -x build/tools/luxtrain ]] || { echo "quickstart: the build failed (cmake --build build shows why)" >&2; exit 1; }
  lt="$here/build/tools/luxtrain"
fi

model=data/sample/model
run="${LT_QUICK_RUN:-runs/quickstart}"
steps="${LT_QUICK_STEPS:-100}"
question="Wat ass d'Haaptstad vu Lëtzebuerg?"
rm -rf "$run"
mkdir -p "$run"

step() { printf '\n== %s\n' "$*"; }

step "the model"
"$lt" inspect "$model"

step "tokenize the sample (instructions, conversations, raw text) into HDF5 shards"
"$lt" tokenize --tokenizer "$model" --input data/sample/luxit_sample.jsonl data/sample/conversations.jsonl \
  data/sample/text.jsonl --out "$run/shards" --val-fraction 0.1
echo "the first document as the model will see it; the tokens it is trained on (the answers) are between ⟦ and ⟧:"
"$lt" inspect "$run/shards/train-00000.h5" --show 1 --tokenizer "$model"

step "before fine-tuning: loss on the held-out shard (documents the training never sees)"
"$lt" eval --model "$model" --data "$run/shards/val-00000.h5" | tee "$run/heldout_before.json"

step "before fine-tuning: answer to \"$question\""
"$lt" generate --model "$model" --prompt "$question" --max-new-tokens 40
echo
step "before fine-tuning: the Luxembourgish sample exam"
"$lt" eval --model "$model" --tasks data/sample/exam_lb.jsonl --output "$run/exam_before.json"

step "LoRA fine-tuning ($steps steps, device auto)"
"$lt" train --model "$model" --data "$run/shards/train-00000.h5" --eval-data "$run/shards/val-00000.h5" \
  --out "$run/lora" --lora-rank 16 --lora-alpha 32 --seq-len 256 --micro-batch 4 --grad-accum 1 \
  --epochs 0 --max-steps "$steps" --lr 1e-2 --warmup-steps 5 --schedule cosine --eval-every 20 \
  --save-every 0 --log-every 5 --device auto

step "after fine-tuning: loss on the held-out shard (adapter from $run/lora/final)"
"$lt" eval --model "$model" --adapter "$run/lora/final" --data "$run/shards/val-00000.h5" | tee "$run/heldout_after.json"

step "after fine-tuning: answer to \"$question\""
"$lt" generate --model "$model" --adapter "$run/lora/final" --prompt "$question" --max-new-tokens 40
echo
step "after fine-tuning: the sample exam, and the comparison"
"$lt" eval --model "$model" --adapter "$run/lora/final" --tasks data/sample/exam_lb.jsonl \
  --output "$run/exam_after.json"
"$lt" eval --compare "$run/exam_before.json" "$run/exam_after.json" | tee "$run/exam_compare.txt"

# What changed, from the files above (nothing here is typed in by hand).
num() { sed -n "s/.*\"$2\":[[:space:]]*\([-0-9.e+]*\).*/\1/p" "$1" | head -1; }
acc() { tr -d '\n' <"$1" | sed -n 's/.*"overall":[[:space:]]*{[^}]*"acc":[[:space:]]*\([0-9.e+-]*\).*/\1/p'; }
lb=$(num "$run/heldout_before.json" loss) la=$(num "$run/heldout_after.json" loss)
eb=$(acc "$run/exam_before.json") ea=$(acc "$run/exam_after.json")
# the p-value is the last column, followed by a "*" when it is below 0.05
p=$(awk '$1 == "overall" {print ($NF == "*" ? $(NF - 1) : $NF)}' "$run/exam_compare.txt")
step "summary"
awk -v b="$lb" -v a="$la" 'BEGIN {
  if (a < b) what = "lower: the adapter predicts the trained-on tokens of unseen documents better"
  else what = "not lower: on unseen documents fine-tuning did not help"
  printf "held-out loss:  %.4f -> %.4f  (%s)\n", b, a, what }'
awk -v b="$eb" -v a="$ea" -v p="$p" 'BEGIN {
  printf "exam accuracy:  %.4f -> %.4f  ", b, a
  if (a == b) print "(unchanged: fine-tuning on the bundled instructions did not move this exam)"
  else if (p + 0 < 0.05) printf "(%s, significant: McNemar p = %s)\n", (a > b ? "better" : "worse"), p
  else printf "(%s, but not significant: McNemar p = %s: no evidence of a change)\n", (a > b ? "higher" : "lower"), p }'
echo "The exam (data/sample/exam_lb.jsonl) asks, in its own words, about what the instructions teach and shares"
echo "no question with them; the toy model (about 1M parameters) learns the taught words and facts, not the language."

step "done"
echo "run folder:     $run/lora (metrics.jsonl, config.json, checkpoints/)"
echo "loss plot:      $run/lora/loss.svg (training and held-out loss, learning rate)"
echo "PEFT adapter:   $run/lora/final (loads with peft.PeftModel.from_pretrained)"
