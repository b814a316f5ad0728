#!/usr/bin/env bash
# test_train_signal.sh -- `luxtrain train` stopped by a signal (CPU, sample model):
#   1. SIGTERM mid-run: exit 75, "stopped by SIGTERM after step N", a complete
#      checkpoint of step N, metrics up to step N, and a printed --resume line;
#      running that line finishes the run with losses and final weights
#      bitwise equal to an uninterrupted run;
#   2. SIGINT and SIGUSR1 stop the same way (exit 75, checkpoint);
#   3. two SIGTERMs in a row end the process at once (killed by SIGTERM: 143),
#      without the stop message.
# Skips (77) when the sample model is absent.
. "$(dirname "$0")/lt_test_lib.sh"
lt_need_model
lt_enter_tmp
lt_tokenize_sample shards
common=(--model "$model" --data shards/train-00000.h5 --seq-len 64 --micro-batch 1 --epochs 4
        --lr 2e-3 --warmup-steps 1 --save-every 0 --eval-every 0 --device cpu --threads 1 --log-every 1000)

"$bin" train "${common[@]}" --out ref >ref.txt 2>&1 || fail "uninterrupted run: $(tail -2 ref.txt)"

steps_in() { local n; n=$(grep -c '"loss"' "$1/metrics.jsonl" 2>/dev/null); echo "${n:-0}"; }
# start OUT [STEPS [ARGS...]]: a run in the background; waits until it has done STEPS (3) steps (pid in $pid)
start() {
  local out=$1 want=${2:-3}
  shift 2 2>/dev/null || shift $#
  "$bin" train "${common[@]}" "$@" --out "$out" >"$out.txt" 2>&1 &
  pid=$!
  for _ in $(seq 1 2400); do
    [ "$(steps_in "$out")" -ge "$want" ] && return 0
    kill -0 $pid 2>/dev/null || break
    sleep 0.05
  done
  fail "$out: the run did not get to step $want: $(tail -2 "$out.txt")"
  return 1
}

# ---- 1. SIGTERM, then the printed --resume line ----
if start term; then
  kill -TERM $pid
  wait $pid
  rc=$?
  [ $rc -eq 75 ] || fail "SIGTERM: exit $rc, expected 75: $(tail -3 term.txt)"
  n=$(sed -n 's/.*stopped by SIGTERM after step \([0-9]*\) of.*/\1/p' term.txt)
  if [ -z "$n" ]; then fail "SIGTERM: no 'stopped by SIGTERM after step N': $(tail -3 term.txt)"
  else
    ck=$(printf 'term/checkpoints/step-%06d' "$n")
    [ -f "$ck/COMPLETE" ] || fail "SIGTERM: no complete checkpoint $ck"
    grep -q "checkpoint: $ck" term.txt || fail "SIGTERM: the message does not name $ck: $(tail -3 term.txt)"
    [ "$(steps_in term)" = "$n" ] || fail "SIGTERM: metrics hold $(steps_in term) steps, stopped after $n"
    echo "ok   SIGTERM: exit 75 after step $n with checkpoint $ck"
  fi
  line=$(sed -n 's/^train: to continue (under the same launcher, if any): //p' term.txt)
  case "$line" in
    "luxtrain train "*" --resume") ;;
    *) fail "SIGTERM: no --resume line: $(tail -3 term.txt)" ;;
  esac
  eval "\"\$bin\" ${line#luxtrain }" >term2.txt 2>&1 || fail "the printed resume line failed: $(tail -3 term2.txt)"
  grep -q "resuming from .*step-0*$n" term2.txt || fail "resume did not start at step $n: $(grep resum term2.txt)"
  if cmp -s <(grep '"loss"' ref/metrics.jsonl | sed 's/"tokens_per_s.*//') <(grep '"loss"' term/metrics.jsonl | sed 's/"tokens_per_s.*//') &&
     cmp -s ref/final/model.safetensors term/final/model.safetensors; then
    echo "ok   the printed --resume line finished the run bitwise equal to the uninterrupted one"
  else fail "stopped + resumed run differs from the uninterrupted run"; fi
fi

# ---- 2. SIGINT and SIGUSR1 ----
for sig in INT USR1; do
  if start "s$sig"; then
    kill -$sig $pid
    wait $pid
    rc=$?
    if [ $rc -eq 75 ] && grep -q "stopped by SIG$sig after step" "s$sig.txt" && ls -d "s$sig"/checkpoints/step-* >/dev/null 2>&1; then
      echo "ok   SIG$sig: exit 75 with a checkpoint"
    else fail "SIG$sig: exit $rc: $(tail -3 "s$sig.txt")"; fi
  fi
done

# ---- 3. a second signal stops at once ----
# steps of 50 micro-batches (about a second): the second signal lands inside the step that the
# first one lets finish (sent once the first has been received: two pending SIGTERMs would merge)
if start twice 1 --grad-accum 50; then
  kill -TERM $pid
  for _ in $(seq 1 400); do grep -q "signal received" twice.txt && break; sleep 0.01; done
  kill -TERM $pid
  wait $pid
  rc=$?
  if [ $rc -eq 143 ] && ! grep -q "stopped by" twice.txt; then echo "ok   second SIGTERM: killed at once (exit 143)"
  else fail "second SIGTERM: exit $rc (expected 143): $(tail -3 twice.txt)"; fi
fi

lt_finish
