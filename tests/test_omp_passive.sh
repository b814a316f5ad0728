#!/usr/bin/env bash
# test_omp_passive.sh -- idle OpenMP threads sleep by default: a `luxtrain`
# started without OMP_WAIT_POLICY runs (after re-executing itself) with
# OMP_WAIT_POLICY=passive in its own environment (/proc/PID/environ, what the
# OpenMP runtime and its children read); a user's explicit setting is kept.
# Skips (77) without /proc or the sample model.
. "$(dirname "$0")/lt_test_lib.sh"
[ -r /proc/self/environ ] || { echo "SKIP: no /proc" >&2; exit 77; }
lt_need_model
lt_enter_tmp
lt_tokenize_sample shards

# policy_of LABEL ENV...: the OMP_WAIT_POLICY line of a running `luxtrain train`'s environment
policy_of() {
  local out=$1
  shift
  env "$@" "$bin" train --model "$model" --data shards/train-00000.h5 --seq-len 64 --micro-batch 1 --epochs 50 \
    --save-every 0 --eval-every 0 --device cpu --threads 2 --log-every 1000 --out "$out" >"$out.txt" 2>&1 &
  local pid=$! p=""
  for _ in $(seq 1 400); do
    if grep -q '"loss"' "$out/metrics.jsonl" 2>/dev/null; then
      p=$(tr '\0' '\n' <"/proc/$pid/environ" | grep '^OMP_WAIT_POLICY=' || echo "OMP_WAIT_POLICY unset")
      break
    fi
    sleep 0.05
  done
  kill -TERM $pid 2>/dev/null; kill -TERM $pid 2>/dev/null
  wait $pid 2>/dev/null
  echo "$p"
}
got=$(policy_of unset -u OMP_WAIT_POLICY)
[ "$got" = "OMP_WAIT_POLICY=passive" ] && echo "ok   no OMP_WAIT_POLICY: the process runs with $got" ||
  fail "no OMP_WAIT_POLICY: the process has '$got' (expected passive)"
got=$(policy_of active OMP_WAIT_POLICY=active)
[ "$got" = "OMP_WAIT_POLICY=active" ] && echo "ok   OMP_WAIT_POLICY=active is kept" ||
  fail "the user's OMP_WAIT_POLICY=active became '$got'"
# the re-executed process still parses its arguments (and exits as before)
env -u OMP_WAIT_POLICY "$bin" train --help >help.txt 2>&1 && grep -q -- "--max-steps" help.txt ||
  fail "train --help after the re-execution: $(tail -2 help.txt)"

lt_finish
