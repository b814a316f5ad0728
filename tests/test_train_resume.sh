#!/usr/bin/env bash
# test_train_resume.sh -- `luxtrain train --resume` on what is not a run (sample model, CPU):
#   1. a folder that does not exist: an error naming it, exit 1, nothing created;
#   2. an empty folder: a warning, then a run from step 0 (exit 0);
#   3. a resumed run with another --max-steps: the message gives the schedule's
#      old and new end and the next step's learning rate under both, which
#      must equal the linear schedule's formula (lt_optim.h) and the lr the
#      run then logs for that step;
#   3b. inspect on the run folder and on a checkpoint: step, loss, options and
#      what the folder holds;
#   4. final.tmp-<host>-<pid>/, final.old-*, checkpoints/.tmp-step-N-* and
#      step-N/{hf,adapter}.{tmp,old}-* left by a killed export: removed by the
#      next run when that process of this host is gone, kept while it runs,
#      kept with a note when another host wrote them;
#   5. a checkpoint whose extra.epochs_done is 1e300 (COMPLETE updated to
#      match): --resume refuses it by name instead of casting it.
# Skips (77) when the sample model is absent.
. "$(dirname "$0")/lt_test_lib.sh"
lt_need_model
lt_enter_tmp
lt_tokenize_sample shards
common=(--model "$model" --data shards/train-00000.h5 --seq-len 64 --micro-batch 1 --epochs 1 --lr 2e-3
        --warmup-steps 1 --schedule linear --min-lr-ratio 0 --eval-every 0 --device cpu --threads 1 --log-every 1000)

# ---- 1. missing folder ----
"$bin" train "${common[@]}" --max-steps 4 --out missing --resume >missing.txt 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "resume: missing does not exist" missing.txt && [ ! -e missing ]; then
  echo "ok   --resume with a missing folder: error, nothing created"
else fail "--resume with a missing folder: exit $rc, $(tail -2 missing.txt); exists: $([ -e missing ] && echo yes)"; fi

# ---- 2. empty folder ----
mkdir empty
if "$bin" train "${common[@]}" --max-steps 4 --out empty --resume >empty.txt 2>&1 &&
   grep -q "warning: --resume: no complete checkpoint in empty: starting over from step 0" empty.txt &&
   [ "$(grep -c '"loss"' empty/metrics.jsonl)" = 4 ]; then
  echo "ok   --resume with an empty folder: warning, 4 steps from step 0"
else fail "--resume with an empty folder: $(tail -3 empty.txt)"; fi

# ---- 3. another --max-steps on resume ----
LT_TRAIN_TEST_KILL_AFTER=5 "$bin" train "${common[@]}" --max-steps 10 --save-every 5 --out sched >sched1.txt 2>&1
[ -f sched/checkpoints/step-000005/COMPLETE ] || fail "schedule: no step-5 checkpoint: $(tail -2 sched1.txt)"
"$bin" train "${common[@]}" --max-steps 20 --save-every 5 --out sched --resume >sched2.txt 2>&1 ||
  fail "schedule: resume with --max-steps 20: $(tail -2 sched2.txt)"
# linear, W = 1, r = 0: lr(step) = 2e-3 * (1 - (step - W) / (N - W)); step 5 is the 6th update
want=$(awk 'BEGIN { s = 5; printf "%.6g %.6g", 2e-3 * (1 - (s - 1) / 19), 2e-3 * (1 - (s - 1) / 9) }')
set -- $want
line=$(grep "schedule now ends" sched2.txt)
case "$line" in
  *"ends at step 20 instead of 10 (linear): the learning rate of the next step (6) is $1 instead of $2"*)
    echo "ok   --resume with --max-steps 10 -> 20: $line" ;;
  *) fail "schedule change message: '$line', expected next lr $1 instead of $2" ;;
esac
logged=$(grep '"step": 6,' sched/metrics.jsonl | sed 's/.*"lr": \([^,]*\),.*/\1/')
awk -v a="$logged" -v b="$1" 'BEGIN { exit !(a > 0 && (a - b) / b < 1e-5 && (b - a) / b < 1e-5) }' ||
  fail "step 6 logged lr $logged, the message said $1"

# ---- 3b. inspect on the run folder and on one of its checkpoints ----
loss10=$(awk -v x="$(sed -n 's/.*"loss":[[:space:]]*\([^,]*\),.*/\1/p' sched/checkpoints/step-000010/state.json)" \
  'BEGIN { printf "%.6g", x }')
"$bin" inspect sched/checkpoints/step-000010 >insp_ck.txt 2>&1 || fail "inspect checkpoint: $(cat insp_ck.txt)"
if grep -q "^step: *10 of 20 (epoch 0), full fine-tuning" insp_ck.txt && grep -q "^loss: *$loss10 " insp_ck.txt &&
   grep -q "^  max_steps *20$" insp_ck.txt && grep -q "^  hf .*luxtrain inspect sched/checkpoints/step-000010/hf" insp_ck.txt &&
   grep -q "^  optimizer.safetensors" insp_ck.txt; then
  echo "ok   inspect RUN/checkpoints/step-000010: step, loss $loss10, options, what it holds"
else fail "inspect checkpoint: $(cat insp_ck.txt)"; fi
"$bin" inspect sched >insp_run.txt 2>&1 || fail "inspect run: $(cat insp_run.txt)"
if grep -q "^checkpoints: *4 complete; newest: sched/checkpoints/step-000020" insp_run.txt &&
   grep -q "^step: *20 of 20" insp_run.txt && grep -q "^  final .*Hugging Face model" insp_run.txt &&
   grep -q "^  seq_len *64$" insp_run.txt; then
  echo "ok   inspect RUN: checkpoints, step, options, final/"
else fail "inspect run: $(cat insp_run.txt)"; fi
"$bin" inspect sched --json >/dev/null 2>insp_json.txt; rc=$?
[ $rc -eq 2 ] && grep -q "training run" insp_json.txt || fail "inspect RUN --json: exit $rc: $(cat insp_json.txt)"
"$bin" inspect sched/final | grep -q "^architecture:" || fail "inspect RUN/final no longer describes the model"
"$bin" train "${common[@]}" --max-steps 2 --save-every 2 --lora-rank 2 --out lora >lora.txt 2>&1 ||
  fail "LoRA run: $(tail -2 lora.txt)"
if "$bin" inspect lora/checkpoints/step-000002 >insp_lora.txt 2>&1 &&
   grep -q "^step: *2 of 2 (epoch 0), LoRA fine-tuning" insp_lora.txt &&
   grep -q "^  adapter .*(use with --adapter lora/checkpoints/step-000002/adapter)" insp_lora.txt &&
   grep -q "^  lora_rank *2$" insp_lora.txt; then
  echo "ok   inspect a LoRA checkpoint: LoRA, adapter/ to use with --adapter, lora_rank"
else fail "inspect a LoRA checkpoint: $(cat insp_lora.txt)"; fi

# ---- 4. leftovers of a killed final export ----
sh -c 'exit 0' &
dead=$!
wait $dead
kill -0 $dead 2>/dev/null && dead=999999999
sleep 30 &
alive=$!
# temporary names end in -<host>-<pid>, the host as lt_fs_tmp_tag writes it
host=$(uname -n | cut -c1-64 | tr -c 'A-Za-z0-9_.\n' '_')
me=$host-$dead live=$host-$alive other=not_this_host.example-$dead
ck=stale/checkpoints/step-000001
mkdir -p stale/final.tmp-$me/sub stale/final.old-$me stale/final.tmp-$live stale/final.tmp-$other \
  stale/checkpoints/.tmp-step-000003-$me $ck/hf.tmp-$me $ck/hf.old-$me $ck/adapter.tmp-$me $ck/hf.tmp-$live \
  $ck/hf.tmp-$other
touch stale/final.tmp-$me/sub/model.safetensors $ck/hf.tmp-$me/model.safetensors
"$bin" train "${common[@]}" --max-steps 2 --out stale >stale.txt 2>&1 || fail "stale: $(tail -2 stale.txt)"
kill $alive 2>/dev/null
gone=1
for d in stale/final.tmp-$me stale/final.old-$me stale/checkpoints/.tmp-step-000003-$me $ck/hf.tmp-$me $ck/hf.old-$me \
  $ck/adapter.tmp-$me; do [ -e $d ] && { gone=0; echo "    still there: $d"; }; done
kept=1
for d in stale/final.tmp-$live stale/final.tmp-$other $ck/hf.tmp-$live $ck/hf.tmp-$other; do
  [ -d $d ] || { kept=0; echo "    removed: $d"; }; done
if [ $gone = 1 ] && [ $kept = 1 ] && [ -f stale/final/model.safetensors ] &&
   grep -q "removed 6 unfinished folder" stale.txt && [ "$(grep -c '^note: left .*host not_this_host.example' stale.txt)" = 2 ] &&
   grep -q "^note: left $ck/hf.tmp-$other: unfinished, written on host not_this_host.example (this is $host)" stale.txt; then
  echo "ok   leftovers (final, .tmp-step, step-N/hf, step-N/adapter) of a dead pid on this host removed;"
  echo "     those of a live pid kept; those of another host kept with a note"
else fail "stale temp folders: $(ls -A stale $ck) / $(grep 'removed\|note' stale.txt)"; fi

# ---- 5. a crafted epochs_done ----
ck=sched/checkpoints/step-000020
if [ -f $ck/state.json ]; then
  sed -i -E 's/("epochs_done":[[:space:]]*)[0-9]+/\11e300/' $ck/state.json
  sed -i -E "s/(\"state.json\":[[:space:]]*)[0-9]+/\1$(stat -c %s $ck/state.json)/" $ck/COMPLETE
  grep -q '"epochs_done":[[:space:]]*1e300' $ck/state.json || fail "epochs_done: the edit did not happen"
  "$bin" train "${common[@]}" --max-steps 20 --save-every 5 --out sched --resume >crafted.txt 2>&1
  rc=$?
  [ $rc -eq 1 ] && grep -q "step-000020: state.json: extra.epochs_done is not an integer" crafted.txt &&
    echo "ok   extra.epochs_done = 1e300: refused" || fail "epochs_done 1e300: exit $rc: $(tail -2 crafted.txt)"
else fail "no $ck"; fi

lt_finish
