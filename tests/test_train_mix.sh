#!/usr/bin/env bash
# test_train_mix.sh -- `luxtrain train --data 'corpus/*.h5:W' 'instr/*.h5:W'` (sample model, CPU):
#   1. raw text tokenized with --format text is all targets after each document's
#      first token; the chat shards only the assistant turns;
#   2. a mixed run (weights 0.3 / 0.7) killed after step 37 and resumed from its
#      step-35 checkpoint (in the second mix epoch: each set's place in its
#      passes is restored) logs bitwise the same losses, grad norms, learning
#      rates and token counts as the uninterrupted run, and exports the same model;
#   3. inspect RUN shows the mix: each set's target share, the share achieved
#      (near the target), tokens, documents and target tokens, the same for both
#      runs; the sets' tokens add up to the run's tokens;
#   4. the epochs form (corpus x2, instructions x1) for one epoch takes every
#      corpus document twice and every instruction once; raw text trains on all
#      its tokens after the first, chats on fewer;
#   5. bad input: a weight that is not a positive number, an empty pattern, a
#      set of another tokenizer, weights mixed with epoch counts, a mix in
#      --eval-data, --resume with other weights: refused by name.
# Skips (77) when the sample model is absent.
. "$(dirname "$0")/lt_test_lib.sh"
lt_need_model
lt_enter_tmp
s="$src/data/sample"
"$bin" tokenize --tokenizer "$model" --input "$s/text.jsonl" --format text --out corpus --quiet >tok1.txt 2>&1 ||
  fail "tokenize text: $(tail -2 tok1.txt)"
lt_tokenize_sample instr

# ---- 1. the shards' masks ----
"$bin" inspect corpus/train-00000.h5 >ic.txt 2>&1 && "$bin" inspect instr/train-00000.h5 >ii.txt 2>&1 ||
  fail "inspect shards: $(cat ic.txt ii.txt)"
cd_docs=$(awk '/num_docs/ {print $2}' ic.txt) cd_tok=$(awk '/num_tokens/ {print $2}' ic.txt)
cd_tgt=$(awk '/target tokens/ {print $3}' ic.txt)
in_tok=$(awk '/num_tokens/ {print $2}' ii.txt) in_tgt=$(awk '/target tokens/ {print $3}' ii.txt)
if [ "$cd_tgt" = $((cd_tok - cd_docs)) ] && [ "$in_tgt" -lt $((in_tok / 2 + in_tok / 4)) ]; then
  echo "ok   raw text: $cd_tgt targets of $cd_tok tokens in $cd_docs documents; chats: $in_tgt of $in_tok"
else fail "masks: corpus $cd_tgt targets / $cd_tok tokens / $cd_docs docs; instr $in_tgt / $in_tok"; fi

common=(--model "$model" --seq-len 64 --micro-batch 2 --epochs 0 --lr 1e-3 --warmup-steps 1 --eval-every 0 --device cpu
        --threads 1 --log-every 1000 --save-every 35)
mix=(--data 'corpus/train-*.h5:0.3' 'instr/*.h5:0.7')

# ---- 2. resume equality ----
"$bin" train "${common[@]}" "${mix[@]}" --max-steps 40 --out full >full.txt 2>&1 || fail "mixed run: $(tail -3 full.txt)"
grep -q "mix set 2 instr/\*.h5:0.7: 56 documents" full.txt || fail "no mix line: $(grep mix full.txt)"
LT_TRAIN_TEST_KILL_AFTER=37 "$bin" train "${common[@]}" "${mix[@]}" --max-steps 40 --out cut >cut1.txt 2>&1
[ -f cut/checkpoints/step-000035/COMPLETE ] && [ ! -d cut/final ] || fail "killed run: $(tail -2 cut1.txt)"
"$bin" train "${common[@]}" "${mix[@]}" --max-steps 40 --out cut --resume >cut2.txt 2>&1 ||
  fail "resume: $(tail -3 cut2.txt)"
trace() { grep '"loss"' "$1" | sed -E 's/"(tokens_per_s|elapsed_s)": [^,}]*//g'; }
if [ "$(trace full/metrics.jsonl | wc -l)" = 40 ] && grep -q '"step": 35, "epoch": 1,' full/metrics.jsonl && [ "$(trace full/metrics.jsonl)" = "$(trace cut/metrics.jsonl)" ] &&
   cmp -s full/final/model.safetensors cut/final/model.safetensors &&
   grep -q "resuming from cut/checkpoints/step-000035" cut2.txt; then
  echo "ok   mixed run killed after step 37, resumed from step 35 (epoch 1): 40 steps' losses and the final model"
  echo "     bitwise equal"
else fail "resume differs: $(diff <(trace full/metrics.jsonl) <(trace cut/metrics.jsonl) | head -4)"; fi

# ---- 3. inspect shows the mix ----
"$bin" inspect full >if.txt 2>&1 && "$bin" inspect cut >ik.txt 2>&1 || fail "inspect: $(cat if.txt ik.txt)"
"$bin" inspect full/checkpoints/step-000040 >ick.txt 2>&1 || fail "inspect checkpoint: $(cat ick.txt)"
mixrows() { awk '/^mix:/ { on = 1; next } on && /^  [^ ]/ { print; next } on { exit }' "$1"; }
rows=$(mixrows if.txt)
tokens_run=$(grep '"loss"' full/metrics.jsonl | tail -1 | sed -E 's/.*"tokens": ([0-9]+).*/\1/')
if grep -q "^mix: *2 shard sets" if.txt && [ "$(echo "$rows" | wc -l)" = 3 ] &&
   [ "$rows" = "$(mixrows ik.txt)" ] && [ "$rows" = "$(mixrows ick.txt)" ] &&
   echo "$rows" | awk -v total="$tokens_run" '
     $1 == "corpus/train-*.h5:0.3" { c = 1; ok = $2 == "0.3000" && $3 > 0.2 && $3 < 0.4; sum += $4; ach += $3 }
     $1 == "instr/*.h5:0.7" { i = 1; ok2 = $2 == "0.7000" && $3 > 0.6 && $3 < 0.8; sum += $4; ach += $3 }
     END { exit !(c && i && ok && ok2 && sum == total && ach > 0.9999 && ach < 1.0001) }'; then
  echo "ok   inspect RUN / checkpoint: the mix (target 0.3 / 0.7, achieved near it, $tokens_run tokens in all):"
  echo "$rows" | sed 's/^/       /'
else fail "inspect mix ($tokens_run tokens): $(sed -n '/^mix:/,/^options:/p' if.txt)"; fi

# ---- 4. epochs form ----
"$bin" train "${common[@]}" --data 'corpus/train-*.h5:x2' instr --epochs 1 --seq-len 128 --out ep >ep.txt 2>&1 ||
  fail "epochs form: $(tail -3 ep.txt)"
"$bin" inspect ep >iep.txt 2>&1
if mixrows iep.txt | awk -v cd="$cd_docs" -v ct="$cd_tok" -v cg="$cd_tgt" -v it="$in_tok" -v ig="$in_tgt" '
     $1 == "corpus/train-*.h5:x2" { c = $5 == 2 * cd && $4 == 2 * ct && $6 == 2 * cg }
     $1 == "instr" { i = $5 == 56 && $4 == it && $6 == ig }
     END { exit !(c && i) }'; then
  echo "ok   epochs form: corpus x2 and instructions x1 in one epoch: every document that often, all their targets"
else fail "epochs form: $(sed -n '/^mix:/,/^options:/p' iep.txt)"; fi

# ---- 5. bad input ----
refused() { # name, expected text, train args...
  local name=$1 want=$2
  shift 2
  "$bin" train "${common[@]}" --max-steps 2 "$@" >bad.txt 2>&1
  local rc=$?
  if [ $rc -eq 1 ] && grep -qF -- "$want" bad.txt; then echo "ok   refused: $name"
  else fail "$name: exit $rc: $(tail -2 bad.txt)"; fi
}
refused "weight -1" "--data 'instr/*.h5:-1': '-1' is not a positive weight" \
  --data 'corpus/train-*.h5:0.3' 'instr/*.h5:-1' --out b1
refused "weight abc" "'abc' is not a positive weight" --data 'corpus/train-*.h5:abc' 'instr/*.h5:1' --out b2
refused "empty pattern" "--data set 2 'nothing/*.h5:0.5': nothing/*.h5: no file matches this pattern" \
  --data 'corpus/train-*.h5:0.5' 'nothing/*.h5:0.5' --out b3
mkdir tok2 && cp "$model"/tokenizer* tok2/ && echo >>tok2/tokenizer.json
"$bin" tokenize --tokenizer tok2 --input "$s/text.jsonl" --format text --out corpus2 --quiet >tok2.txt 2>&1 ||
  fail "tokenize with tok2: $(tail -2 tok2.txt)"
refused "another tokenizer" "--data set 2 'corpus2:0.5': corpus2/train-00000.h5 has tokenizer_sha256" \
  --data 'instr:0.5' 'corpus2:0.5' --out b4
grep -q "expected $(sha256sum "$model/tokenizer.json" | cut -c1-64) as in set 1 'instr:0.5'" bad.txt ||
  fail "another tokenizer: the expected hash is not named: $(tail -1 bad.txt)"
refused "weights with epoch counts" "some sets have weights and others epoch counts" \
  --data 'corpus:0.5' 'instr:x2' --out b5
refused "a mix in --eval-data" "--eval-data takes shards, folders or patterns, not weighted sets" \
  --data instr --eval-data 'instr:0.5' --out b6
"$bin" train "${common[@]}" --data 'corpus/train-*.h5:0.5' 'instr/*.h5:0.5' --max-steps 40 --out cut --resume \
  >b7.txt 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q "was written with different training options" b7.txt &&
  echo "ok   refused: --resume with other weights" || fail "resume with other weights: exit $rc: $(tail -2 b7.txt)"

lt_finish
