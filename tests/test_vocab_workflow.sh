#!/usr/bin/env bash
# test_vocab_workflow.sh -- the Luxembourgish workflow's first steps end to
# end: `vocab add` on the sample model, tokenize with the extended tokenizer
# (the new tokens appear in the shards), `train --lora-rank 4
# --train-embeddings new|all`, `merge`, `export` of the last checkpoint (the
# same adapter as final/), --resume (bitwise the uninterrupted run), refusals (new without vocab add's record,
# --train-embeddings without LoRA or with --adapter). With a Python that has
# torch, transformers and peft ($LT_PEFT_PYTHON, else $LT_PYTHON), PEFT loads
# the adapters onto the extended base and gives luxtrain's logits
# (tests/vocab_peft_check.py); without one that part is skipped.
. "$(dirname "$0")/lt_test_lib.sh"
lt_need_model
lt_enter_tmp
ppy="${LT_PEFT_PYTHON:-$py}"
peft_ok=0
if [ -n "$ppy" ] && "$ppy" -c 'import torch, transformers, peft' 2>/dev/null; then peft_ok=1; fi

"$bin" vocab add --model "$model" --tokens "$src/tests/fixtures/vocab/tokens_lb.txt" --out lb >add.txt 2>&1 ||
  { fail "vocab add: $(tail -2 add.txt)"; lt_finish; }
grep -q '"added_ids"' lb/luxtrain_vocab.json || fail "no luxtrain_vocab.json record"
base=lb
if [ "$peft_ok" = 1 ]; then # f32, so that merge is exact and PEFT can be compared closely
  "$ppy" "$src/tests/vocab_peft_check.py" to32 lb lb32 >to32.txt 2>&1 && base=lb32 || fail "to32: $(tail -2 to32.txt)"
fi
"$bin" tokenize --tokenizer "$base" --input "$src/data/sample/text.jsonl" --out shards --quiet >tok.txt 2>&1 ||
  fail "tokenize: $(tail -2 tok.txt)"
"$bin" inspect shards/train-00000.h5 --show 5 --tokenizer "$base" >show.txt 2>&1 || fail "inspect shard"
new=$(sed -n 's/.*"added_ids":[^0-9]*\([0-9]*\).*/\1/p' lb/luxtrain_vocab.json)
for mode in new all; do
  "$bin" train --model "$base" --data shards/train-00000.h5 --out run-$mode --lora-rank 4 --train-embeddings $mode \
    --max-steps 2 --seq-len 64 --micro-batch 2 --lr 0.01 --device cpu >train-$mode.txt 2>&1 ||
    { fail "train $mode: $(tail -2 train-$mode.txt)"; continue; }
  key=$([ $mode = new ] && echo trainable_token_indices || echo modules_to_save)
  grep -q "\"$key\":[[:space:]]*\[" run-$mode/final/adapter_config.json || fail "$mode: adapter_config.json lacks $key"
  "$bin" export run-$mode/checkpoints/step-000002 --out exp-$mode >exp-$mode.txt 2>&1 || fail "export $mode: $(tail -2 exp-$mode.txt)"
  cmp -s exp-$mode/adapter_model.safetensors run-$mode/final/adapter_model.safetensors ||
    fail "$mode: export of the checkpoint differs from final/"
  "$bin" merge --model "$base" --adapter run-$mode/final --out merged-$mode >/dev/null 2>&1 || fail "merge $mode"
  ids="5,$new,17,$((new + 1)),99,$((new + 2))"
  "$bin" score --model merged-$mode --ids "$ids" --logits lt-$mode.npy --device cpu >/dev/null 2>&1 || fail "score $mode"
  if [ "$peft_ok" = 1 ]; then
    "$ppy" "$src/tests/vocab_peft_check.py" logits "$base" run-$mode/final "$ids" lt-$mode.npy >peft-$mode.txt 2>&1 ||
      fail "PEFT $mode: $(tail -3 peft-$mode.txt)"
    tail -1 peft-$mode.txt
  fi
done
# resume: 2 steps, then on to 4 == 4 steps at once (the embedding rows are in the checkpoint)
A="--model $base --data shards/train-00000.h5 --lora-rank 4 --train-embeddings new --seq-len 64 --micro-batch 1 --lr 0.01 --device cpu --schedule constant"
"$bin" train $A --out ra --max-steps 4 >ra.txt 2>&1 || fail "train 4 steps: $(tail -1 ra.txt)"
"$bin" train $A --out rb --max-steps 2 >rb.txt 2>&1 || fail "train 2 steps: $(tail -1 rb.txt)"
"$bin" train $A --out rb --max-steps 4 --resume >rb2.txt 2>&1 || fail "resume: $(tail -1 rb2.txt)"
cmp -s ra/final/adapter_model.safetensors rb/final/adapter_model.safetensors || fail "resumed run differs"
# continuing the adapter (--adapter): its rows train on, and export of its checkpoint = final/
"$bin" train --model "$base" --data shards/train-00000.h5 --adapter ra/final --out rc --max-steps 2 --seq-len 64 \
  --micro-batch 1 --device cpu >rc.txt 2>&1 || fail "train --adapter: $(tail -1 rc.txt)"
grep -q "\"trainable_token_indices\":[[:space:]]*\[" rc/final/adapter_config.json || fail "--adapter run lost its rows"
"$bin" export rc/checkpoints/step-000002 --out rcx >rcx.txt 2>&1 || fail "export --adapter run: $(tail -1 rcx.txt)"
cmp -s rcx/adapter_model.safetensors rc/final/adapter_model.safetensors || fail "--adapter run: export differs"
# refusals
"$bin" train --model "$model" --data shards/train-00000.h5 --out r1 --lora-rank 4 --train-embeddings new \
  --max-steps 1 --seq-len 64 --device cpu >r1.txt 2>&1 && fail "new without a vocab add record accepted"
grep -q luxtrain_vocab.json r1.txt || fail "the refusal does not name luxtrain_vocab.json: $(tail -1 r1.txt)"
"$bin" train --model "$base" --data shards/train-00000.h5 --out r2 --train-embeddings all --max-steps 1 \
  --seq-len 64 --device cpu >r2.txt 2>&1 && fail "--train-embeddings without LoRA accepted"
"$bin" train --model "$base" --data shards/train-00000.h5 --out r3 --lora-rank 4 --train-embeddings most \
  --max-steps 1 --seq-len 64 --device cpu >r3.txt 2>&1 && fail "--train-embeddings most accepted"
# --dry-run: "new" keeps AdamW state (m + v, f32) for the added rows only, "all" for the whole tables
dr=(--model "$base" --data none.h5 --out none --dry-run --device cpu --lora-rank 4 --seq-len 64 --micro-batch 1)
dn=$("$bin" train "${dr[@]}" --train-embeddings new 2>&1) || fail "--dry-run --train-embeddings new: $dn"
da=$("$bin" train "${dr[@]}" --train-embeddings all 2>&1) || fail "--dry-run --train-embeddings all: $da"
st() { sed -n 's/.*: \([0-9.e+-]*\) M table elements train; AdamW state for \([0-9.e+-]*\) M of them.*/\1 \2/p' <<<"$1"; }
read -r tn sn <<<"$(st "$dn")"; read -r ta sa <<<"$(st "$da")"
awk -v tn="$tn" -v sn="$sn" -v ta="$ta" -v sa="$sa" 'BEGIN {exit !(tn == ta && sa == ta && sn > 0 && sn < tn / 2)}' \
  || fail "dry-run state: new $sn of $tn M, all $sa of $ta M: $(grep -- --train-embeddings <<<"$dn")"
[ "$peft_ok" = 1 ] || echo "note: PEFT comparison skipped (no torch/transformers/peft in ${ppy:-\$LT_PYTHON})"
lt_finish
