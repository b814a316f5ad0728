#!/usr/bin/env bash
# test_train_mpi.sh -- data-parallel `luxtrain train` under mpirun (the MPI
# communicator, CPU backend) on the sample model, against one process with the
# same global batch (--micro-batch 1: 1 rank x --grad-accum 6 = 2 ranks x 3 =
# 3 ranks x 2 micro-batches per step; one epoch of ~50 sequences, so the last
# step is an uneven tail where some ranks get only padding):
#   1. full fine-tuning (also with --neftune-alpha) and LoRA (with dropout), with and without ZeRO-1:
#      every step's loss and grad norm (as written, shortest round-trip
#      decimals) and the final export's bytes EQUAL the 1-rank run's; only
#      rank 0 writes (one metrics line per step);
#   2. resume across a changed world size: 2 ranks (ZeRO-1) killed after step
#      4, resumed from the step-3 checkpoint with 3 ranks (ZeRO-1, re-sharded
#      optimizer state): the losses after the resume are within 1e-6 relative
#      of the uninterrupted run (in fact equal) and the final export matches;
#   3. a rank that exits mid-run (LT_FAULT_RANK=1 LT_FAULT_STEP=5) ends the
#      job within `timeout 60` with a message naming rank 1; the last complete
#      checkpoint (step 4) resumes to the uninterrupted result;
#   4. a rank that hangs (LT_FAULT_MODE=hang, LT_COMM_TIMEOUT_S=3): the others
#      time out naming rank 1 and the job ends;
#   5. --grad-reduce-dtype bf16 runs and stays close (1e-2) to the f32 run;
#   6. SIGUSR1 sent to rank 1 alone: both ranks stop after the same step
#      (exit 75), rank 0 writes that step's checkpoint and names it.
# Skips (77) when mpirun, the MPI communicator or the sample model is absent.
. "$(dirname "$0")/lt_test_lib.sh"
lt_need_mpi
lt_need_model
[ -n "$py" ] || lt_skip "no LT_PYTHON"
lt_enter_tmp

lt_tokenize_sample shards
common=(--model "$model" --data shards/train-00000.h5 --seq-len 64 --micro-batch 1 --epochs 1
        --lr 2e-3 --warmup-steps 1 --save-every 0 --eval-every 0 --device cpu --threads 1 --log-every 100)
lora=(--lora-rank 4 --lora-alpha 8 --lora-dropout 0.1)

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# train NP OUT ARGS...: 1 = plain process, else mpirun -np NP
train() {
  local np=$1 out=$2
  shift 2
  if [ "$np" = 1 ]; then
    "$bin" train "${common[@]}" "$@" --out "$out" >"$out.txt" 2>&1
  else
    timeout 120 mpirun --oversubscribe -np "$np" "$bin" train "${common[@]}" "$@" --out "$out" >"$out.txt" 2>&1
  fi
}
# same_run A B [from_step]: loss and grad_norm strings of every step (>= from_step) equal, final bytes equal
same_run() {
  "$py" - "$1/metrics.jsonl" "$2/metrics.jsonl" "${3:-1}" <<'PY'
import re, sys
def rows(p):
    out = {}
    for l in open(p):
        if '"loss"' not in l: continue
        step = int(re.search(r'"step": (\d+)', l).group(1))
        out[step] = (re.search(r'"loss": ([^,]+)', l).group(1), re.search(r'"grad_norm": ([^,]+)', l).group(1),
                     re.search(r'"target_tokens": (\d+)', l).group(1))
    return out
a, b, s0 = rows(sys.argv[1]), rows(sys.argv[2]), int(sys.argv[3])
assert len(a) >= 8, ("too few steps", len(a))
ka = [k for k in a if k >= s0]
assert sorted(ka) == sorted(k for k in b if k >= s0), (sorted(a), sorted(b))
bad = [(k, a[k], b[k]) for k in ka if a[k] != b[k]]
assert not bad, bad[:3]
PY
  [ $? -eq 0 ] && cmp -s "$(final_of "$1")" "$(final_of "$2")"
}

# ---- 1. N ranks == 1 rank, bitwise ----
train 1 one-full --grad-accum 6 || fail "full: one process: $(tail -2 one-full.txt)"
train 1 one-lora --grad-accum 6 "${lora[@]}" || fail "lora: one process: $(tail -2 one-lora.txt)"
neft=(--neftune-alpha 5) # NEFTune: micro-batch g's noise is keyed by its global index, not the rank
train 1 one-neft --grad-accum 6 "${neft[@]}" || fail "neft: one process: $(tail -2 one-neft.txt)"
if ! train 2 probe --grad-accum 3 --max-steps 1; then
  if grep -q "was not built\|built without" probe.txt; then echo "SKIP: no MPI communicator" >&2; exit 77; fi
fi
grep -q "communicator mpi" probe.txt || fail "2 ranks did not use the MPI communicator: $(tail -3 probe.txt)"
for spec in "full 2 3 0" "full 3 2 1" "full 2 3 1" "lora 2 3 1" "lora 3 2 0" "neft 3 2 0"; do
  set -- $spec
  mode=$1 np=$2 k=$3 z=$4
  extra=(--grad-accum "$k" --zero "$z")
  [ "$mode" = lora ] && extra+=("${lora[@]}")
  [ "$mode" = neft ] && extra+=("${neft[@]}")
  out="np$np-$mode-z$z"
  if ! train "$np" "$out" "${extra[@]}"; then fail "$out: $(tail -3 "$out.txt")"; continue; fi
  nlines=$(grep -c '"loss"' "$out/metrics.jsonl")
  nref=$(grep -c '"loss"' "one-$mode/metrics.jsonl")
  [ "$nlines" = "$nref" ] || fail "$out: $nlines metrics lines, 1 rank wrote $nref (only rank 0 may write)"
  if same_run "one-$mode" "$out"; then echo "ok   $out: $nlines steps, losses, grad norms and final weights bitwise equal to 1 rank x 6"
  else fail "$out differs from 1 rank x 6"; fi
done

# ---- 2. resume 2 ranks -> 3 ranks (ZeRO-1 re-sharded) ----
LT_TRAIN_TEST_KILL_AFTER=4 train 2 resume --grad-accum 3 --zero 1 --save-every 3
[ -f resume/checkpoints/step-000003/COMPLETE ] || fail "resume: no step-3 checkpoint: $(tail -3 resume.txt)"
train 3 resume --grad-accum 2 --zero 1 --save-every 3 --resume || fail "resume with 3 ranks: $(tail -3 resume.txt)"
grep -q "re-sharded" resume.txt || fail "resume: no re-sharding message: $(grep resuming resume.txt)"
"$py" - one-full/metrics.jsonl resume/metrics.jsonl <<'PY' || fail "resume 2 -> 3 ranks: losses differ"
import json, sys
a = {j["step"]: j for j in map(json.loads, open(sys.argv[1])) if "loss" in j}
b = {j["step"]: j for j in map(json.loads, open(sys.argv[2])) if "loss" in j}
assert sorted(a) == sorted(b), (sorted(a), sorted(b))
for s in a:
    assert abs(a[s]["loss"] - b[s]["loss"]) <= 1e-6 * abs(a[s]["loss"]), (s, a[s]["loss"], b[s]["loss"])
print("resume 2 -> 3 ranks: %d steps within 1e-6 (max rel diff %.3g)" % (len(a), max(abs(a[s]["loss"] - b[s]["loss"]) / abs(a[s]["loss"]) for s in a)))
PY
cmp -s one-full/final/model.safetensors resume/final/model.safetensors && echo "ok   resume 2 -> 3 ranks: final weights equal the uninterrupted run" \
  || fail "resume 2 -> 3 ranks: final weights differ"

# ---- 3. a rank exits mid-run ----
t0=$(now_ms)
LT_FAULT_RANK=1 LT_FAULT_STEP=5 LT_COMM_TIMEOUT_S=10 train 2 dead --grad-accum 3 --zero 1 --save-every 2
rc=$?
dt=$(( $(now_ms) - t0 ))
if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then fail "dead rank: exit $rc after ${dt} ms (must fail, not hang)"; fi
grep -Eq "rank 1 of 2: fault injection" dead.txt || fail "dead rank: no fault message: $(tail -5 dead.txt)"
grep -Eq "process rank 1|rank 1 with PID|\[\[[0-9]+,1\],1\]" dead.txt || fail "dead rank: mpirun did not name rank 1: $(tail -8 dead.txt)"
echo "ok   dead rank: the job ended with exit $rc after ${dt} ms, naming rank 1"
[ -f dead/checkpoints/step-000004/COMPLETE ] || fail "dead rank: checkpoint step 4 missing"
train 2 dead --grad-accum 3 --zero 1 --save-every 2 --resume || fail "dead rank: resume: $(tail -3 dead.txt)"
same_run one-full dead && echo "ok   dead rank: resumed from step 4, equal to the uninterrupted run" || fail "dead rank: resumed run differs"

# ---- 4. a rank hangs: the collective timeout names it ----
t0=$(now_ms)
LT_FAULT_RANK=1 LT_FAULT_STEP=2 LT_FAULT_MODE=hang LT_COMM_TIMEOUT_S=3 train 2 hang --grad-accum 3
rc=$?
dt=$(( $(now_ms) - t0 ))
if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then fail "hung rank: exit $rc after ${dt} ms"; fi
grep -q "rank 0 of 2: collective .* timed out after 3 s waiting for rank 1" hang.txt \
  && echo "ok   hung rank: rank 0 timed out naming rank 1, job ended after ${dt} ms" \
  || fail "hung rank: no timeout message naming rank 1: $(tail -5 hang.txt)"

# ---- 5. bf16 gradient reduction ----
train 2 bf16 --grad-accum 3 --zero 1 --grad-reduce-dtype bf16 || fail "bf16: $(tail -3 bf16.txt)"
"$py" - one-full/metrics.jsonl bf16/metrics.jsonl <<'PY' || fail "bf16 reduction strays from f32"
import json, sys
a = [j for j in map(json.loads, open(sys.argv[1])) if "loss" in j]
b = [j for j in map(json.loads, open(sys.argv[2])) if "loss" in j]
assert len(a) == len(b)
for x, y in zip(a, b):
    assert abs(x["loss"] - y["loss"]) <= 1e-2 * abs(x["loss"]), (x["loss"], y["loss"])
print("bf16 reduction: losses within 1e-2 of f32 (last %.6f vs %.6f)" % (a[-1]["loss"], b[-1]["loss"]))
PY

# ---- 6. a signal to one rank: every rank stops after the same step ----
timeout 120 mpirun --oversubscribe -np 2 "$bin" train "${common[@]}" --grad-accum 3 --epochs 8 --out sig >sig.txt 2>&1 &
mpid=$!
r1=""
for _ in $(seq 1 600); do
  n=$(grep -c '"loss"' sig/metrics.jsonl 2>/dev/null)
  if [ "${n:-0}" -ge 3 ]; then
    for p in $(pgrep -P $mpid) $(for c in $(pgrep -P $mpid); do pgrep -P "$c"; done); do
      tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && r1=$p
    done
    break
  fi
  sleep 0.05
done
if [ -z "$r1" ]; then fail "signal: rank 1's process not found: $(tail -3 sig.txt)"; kill $mpid 2>/dev/null
else
  kill -USR1 "$r1"
  wait $mpid
  rc=$?
  n=$(sed -n 's/.*stopped by a signal on another rank after step \([0-9]*\) of.*/\1/p' sig.txt)
  if [ $rc -ne 75 ] || [ -z "$n" ]; then fail "signal to rank 1: exit $rc: $(tail -4 sig.txt)"
  else
    ck=$(printf 'sig/checkpoints/step-%06d' "$n")
    [ -f "$ck/COMPLETE" ] || fail "signal to rank 1: no complete $ck"
    [ "$(grep -c '"loss"' sig/metrics.jsonl)" = "$n" ] || fail "signal to rank 1: metrics do not end at step $n"
    grep -q -- "--resume" sig.txt || fail "signal to rank 1: no --resume line"
    echo "ok   SIGUSR1 to rank 1: both ranks stopped after step $n (exit 75), checkpoint $ck"
  fi
fi

lt_finish
