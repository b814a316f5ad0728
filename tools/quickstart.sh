#!/usr/bin/env bash
# quickstart.sh -- README's first command: set up, build, and run the main job on
# the bundled sample (data/sample/): tokenize the Luxembourgish instruction set,
# take the toy base model's exam score and a generated answer, LoRA-fine-tune it
# (CPU when there is no GPU), evaluate, export the PEFT adapter, and show the
# answer and the exam score again. Everything lands in runs/quickstart/.
#
#   bash tools/quickstart.sh            # full job (about a minute on 2 CPU cores, after the build)
#   LT_QUICK_STEPS=20 bash tools/quickstart.sh   # fewer optimizer steps
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

bash tools/setup-deps.sh
# Build the CUDA backend only where a GPU is present (CI builds it everywhere).
cuda=OFF
if command -v nvcc >/dev/null && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then cuda=ON; fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLUXTRAIN_CUDA=$cuda >/dev/null
cmake --build build -j "$(nproc)" --target luxtrain >/dev/null
lt="$here/build/tools/luxtrain"

model=data/sample/model
run=runs/quickstart
steps="${LT_QUICK_STEPS:-60}"
question="Wat ass d'Haaptstad vu Lëtzebuerg?"
rm -rf "$run"
mkdir -p "$run"

step() { printf '\n== %s\n' "$*"; }

step "the model"
"$lt" inspect "$model"

step "tokenize the sample (instructions, conversations, raw text) into HDF5 shards"
"$lt" tokenize --tokenizer "$model" --input data/sample/luxit_sample.jsonl data/sample/conversations.jsonl \
  data/sample/text.jsonl --out "$run/shards" --val-fraction 0.1
"$lt" inspect "$run/shards/train-00000.h5" --show 1 --tokenizer "$model"

step "before fine-tuning: answer to \"$question\""
"$lt" generate --model "$model" --prompt "$question" --max-new-tokens 40
echo
step "before fine-tuning: the Luxembourgish sample exam"
"$lt" eval --model "$model" --tasks data/sample/exam_lb.jsonl --output "$run/exam_before.json"

step "LoRA fine-tuning ($steps steps, device auto)"
"$lt" train --model "$model" --data "$run/shards/train-00000.h5" --eval-data "$run/shards/val-00000.h5" \
  --out "$run/lora" --lora-rank 16 --lora-alpha 32 --seq-len 256 --micro-batch 4 --grad-accum 1 \
  --epochs 0 --max-steps "$steps" --lr 2e-3 --warmup-steps 5 --schedule cosine --eval-every 20 \
  --save-every 0 --log-every 5 --device auto

step "after fine-tuning: loss on the held-out shard (adapter from $run/lora/final)"
"$lt" eval --model "$model" --adapter "$run/lora/final" --data "$run/shards/val-00000.h5"

step "after fine-tuning: answer to \"$question\""
"$lt" generate --model "$model" --adapter "$run/lora/final" --prompt "$question" --max-new-tokens 40
echo
step "after fine-tuning: the sample exam, and the comparison"
"$lt" eval --model "$model" --adapter "$run/lora/final" --tasks data/sample/exam_lb.jsonl \
  --output "$run/exam_after.json"
"$lt" eval --compare "$run/exam_before.json" "$run/exam_after.json"

step "done"
echo "run folder:     $run/lora (metrics.jsonl, config.json, loss plot)"
echo "PEFT adapter:   $run/lora/final (loads with peft.PeftModel.from_pretrained)"
