#!/usr/bin/env bash
# test_train_nccl_fake.sh -- `luxtrain train` end to end with the NCCL
# communicator on the CPU stand-in (tests/fakegpu/lt_fakegpu.c), under mpirun:
# luxtrain_fakenccl (the CPU backend, the NCCL communicator linked to the
# stand-in; tests/CMakeLists.txt) with LT_COMM_KIND=nccl and
# FAKEGPU_HOST_IS_DEVICE=1, so the CPU backend's buffers take the device path
# a GPU run takes: non-blocking starts, the hybrid chains (--shard-group) and
# the ordered fold by cuBLAS axpy on the fake's streams (4 ranks: on a slow
# device, FAKEGPU_SLOW=1, so streams overtake each other); and again with
# FAKEGPU_HOST_IS_DEVICE=0: host buffers staged through the device (the
# path of the real NCCL with the CPU backend). Each run (full
# fine-tuning of the sample model, a few steps):
#   no ZeRO (the ordered all-reduce), ZeRO-1, 2 and 3 on 2 ranks; ZeRO-1,
#   2 and 3 on 4 ranks with --shard-group 2 (two groups: the chains);
#   ZeRO-3 in groups of 2 with LT_OVERLAP=0 (blocking); LoRA under ZeRO-3
#   in groups of 2 (the adapter)
# equals the same run on the MPI communicator (LT_COMM_KIND=mpi) and one
# process with the same global batch bitwise: every step's loss, grad norm
# and target count, and the final weights' (or adapter's) bytes; with
# overlap the run counts reductions that ran non-blocking (> 0). A hang
# (a wait out of order, a lost message) ends within seconds: the
# communicator's and the stand-in's timeouts are short here.
# Skips (77) without mpirun, the sample model, Python, or the stand-in
# (LT_FAKE_WHY: no CUDA / NCCL headers, no MPI).
. "$(dirname "$0")/lt_test_lib.sh"
[ -z "${LT_FAKE_WHY:-}" ] || lt_skip "the NCCL stand-in is not built: $LT_FAKE_WHY"
[ -n "${LT_FAKE_BIN:-}" ] && [ -x "$LT_FAKE_BIN" ] || lt_skip "LT_FAKE_BIN (luxtrain_fakenccl) not set or not built"
lt_need_mpi
lt_need_model
[ -n "$py" ] || lt_skip "no LT_PYTHON"
lt_enter_tmp
export LT_COMM_TIMEOUT_S=20 FAKEGPU_TIMEOUT_S=20
train_timeout=${train_timeout:-90}

lt_tokenize_sample shards
steps=4
common=(--model "$model" --data shards/train-00000.h5 --seq-len 32 --micro-batch 1 --max-steps $steps
        --lr 2e-3 --warmup-steps 1 --save-every 0 --eval-every 0 --device cpu --threads 1 --log-every 100)
lora=(--lora-rank 4 --lora-alpha 8)

# a bad LT_COMM_KIND is refused by name
LT_COMM_KIND=gloo train 1 badkind --max-steps 1
grep -q "LT_COMM_KIND='gloo'" badkind.txt || fail "LT_COMM_KIND=gloo not refused by name: $(tail -2 badkind.txt)"

train 1 one-full --grad-accum 4 || fail "one process: $(tail -2 one-full.txt)"
train 1 one-lora --grad-accum 4 "${lora[@]}" || fail "one process, LoRA: $(tail -2 one-lora.txt)"
# mode np zero shard-group overlap
for spec in "full 2 0 0 1" "full 2 1 0 1" "full 2 2 0 1" "full 2 3 0 1" "full 4 1 2 1" "full 4 2 2 1" "full 4 3 2 1" "full 4 3 2 0" "lora 4 3 2 1"; do
  set -- $spec
  mode=$1 np=$2 z=$3 g=$4 ov=$5
  extra=(--grad-accum $((4 / np)) --zero "$z")
  [ "$g" = 0 ] || extra+=(--shard-group "$g")
  [ "$mode" = lora ] && extra+=("${lora[@]}")
  name="np$np-$mode-z$z-g$g-ov$ov"
  ok=1
  for kind in nccl ncclhost mpi; do
    out="$name-$kind"
    if [ $kind = nccl ]; then
      LT_COMM_KIND=nccl FAKEGPU_HOST_IS_DEVICE=1 FAKEGPU_SLOW=$((np > 2)) LT_OVERLAP=$ov train_bin="$LT_FAKE_BIN" \
        train "$np" "$out" "${extra[@]}"
    elif [ $kind = ncclhost ]; then # host buffers: staged through the device, blocking
      LT_COMM_KIND=nccl FAKEGPU_HOST_IS_DEVICE=0 LT_OVERLAP=$ov train_bin="$LT_FAKE_BIN" train "$np" "$out" "${extra[@]}"
    else
      LT_COMM_KIND=mpi LT_OVERLAP=$ov train "$np" "$out" "${extra[@]}"
    fi || { fail "$out: $(grep -m2 -E 'timed out|fakegpu:|luxtrain: rank|train: ' "$out.txt" | grep -v 'train: memory' || tail -3 "$out.txt")"; ok=0; continue; }
    grep -Eq "communicator ${kind%host}(,|$)" "$out.txt" || { fail "$out: the run does not say communicator $kind"; ok=0; }
    if [ "$z" = 0 ]; then : # (no ZeRO: blocking all-reduces, nothing counted)
    elif [ "$ov" = 1 ]; then
      grep -Eq "ZeRO-$z: [1-9][0-9]* gradient reductions ran non-blocking" "$out.txt" || { fail "$out: no non-blocking reductions"; ok=0; }
    else
      grep -q "ZeRO-$z: 0 gradient reductions ran non-blocking" "$out.txt" || { fail "$out: reductions still non-blocking"; ok=0; }
    fi
  done
  [ $ok = 1 ] || continue
  if same_run "$name-nccl" "$name-mpi" && same_run "one-$mode" "$name-nccl"; then
    echo "ok   $name: NCCL on the stand-in (device path) bitwise equal to the MPI communicator and to 1 process x 4"
  else fail "$name: the NCCL communicator's run (device path) differs from the MPI communicator's or 1 process's"; fi
  if same_run "$name-ncclhost" "$name-mpi"; then
    echo "ok   $name: NCCL on the stand-in (host buffers staged) bitwise equal to the MPI communicator"
  else fail "$name: the NCCL communicator's run (host buffers staged) differs from the MPI communicator's"; fi
done
lt_finish
