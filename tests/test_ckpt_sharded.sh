#!/usr/bin/env bash
# test_ckpt_sharded.sh -- sharded checkpoints (lt_ckpt.h) of `luxtrain train`
# under mpirun (CPU ranks, the MPI communicator) on the sample model, against
# one process with the same global batch (--micro-batch 1: 1 x --grad-accum 6
# = 2 ranks x 3 = 3 ranks x 2), 6 steps, checkpoints every 2:
#   1. layout: a 3-rank checkpoint holds index.json and weights- /
#      optimizer-rank-R-of-3.safetensors, no gathered file; no rank's file
#      holds the whole model; COMPLETE lists every file;
#   2. resume on another number of ranks, bitwise: 3 -> 2 (full and LoRA,
#      ZeRO-1), 2 -> 3 (ZeRO-1), 2 (no ZeRO: flat ranges) -> 1 process, and an
#      old-format (gathered, 1-process) checkpoint -> 2 ranks, LoRA with
#      --train-embeddings new (state for the added rows only) 2 -> 1: every step's
#      loss and grad norm strings and the final weights' bytes equal the
#      uninterrupted 1-process run;
#   3. offline export (`luxtrain export`, one process) of a mid-run sharded
#      checkpoint equals byte for byte what the run wrote at that step
#      (step-N/hf, step-N/adapter), of the last one the run's final/; its
#      peak resident memory grows by less than the model's f32 size (streamed);
#      a mid-run checkpoint still exports after the run resumed at another
#      number of ranks (config.json then holds the new --grad-accum); --gguf
#      of a sharded checkpoint is refused with what to do instead;
#   4. crashes while writing: a non-zero rank killed after writing its shard
#      (LT_CKPT_TEST_KILL_AT=3 LT_CKPT_TEST_KILL_RANK=1) and rank 0 killed
#      after COMPLETE but before the rename (6): no step-N appears, the
#      previous checkpoint stays the newest and resumes to the same result;
#   5. a missing rank file is refused by name.
# Skips (77) when mpirun, the MPI communicator or the sample model is absent.
. "$(dirname "$0")/lt_test_lib.sh"
lt_need_mpi
lt_need_model
ok() { echo "ok   $*"; }
lt_enter_tmp

lt_tokenize_sample shards
common=(--model "$model" --data shards/train-00000.h5 --seq-len 64 --micro-batch 1 --epochs 0 --max-steps 6
        --lr 2e-3 --warmup-steps 1 --save-every 2 --eval-every 0 --device cpu --threads 1 --log-every 100)
lora=(--lora-rank 4 --lora-alpha 8 --lora-dropout 0.1)

# train NP OUT ARGS...: 1 = plain process, else mpirun -np NP (per-rank --grad-accum 6 / NP)
train() {
  local np=$1 out=$2
  shift 2
  if [ "$np" = 1 ]; then
    "$bin" train "${common[@]}" --grad-accum 6 "$@" --out "$out" >>"$out.txt" 2>&1
  else
    timeout 120 mpirun --oversubscribe -np "$np" "$bin" train "${common[@]}" --grad-accum $((6 / np)) "$@" \
      --out "$out" >>"$out.txt" 2>&1
  fi
}
steps() { sed -n 's/.*"step": \([0-9]*\),.*"loss": \([^,]*\),.*"grad_norm": \([^,]*\),.*/\1 \2 \3/p' "$1/metrics.jsonl"; }
final_of() { if [ -f "$1/final/model.safetensors" ]; then echo "$1/final/model.safetensors"; else echo "$1/final/adapter_model.safetensors"; fi; }
# same_run REF RUN WHAT: every step's loss and grad norm, and the final weights, bitwise equal
same_run() {
  local a b
  a=$(steps "$1") b=$(steps "$2")
  [ "$(echo "$a" | wc -l)" = 6 ] || { fail "$3: $1 has $(echo "$a" | wc -l) steps"; return; }
  if [ "$a" != "$b" ]; then fail "$3: losses / grad norms differ: $(diff <(echo "$a") <(echo "$b") | head -4 | tr '\n' ' ')"
  elif ! cmp -s "$(final_of "$1")" "$(final_of "$2")"; then fail "$3: final weights differ"
  else ok "$3: 6 steps' losses, grad norms and the final weights bitwise equal to 1 process"; fi
}
same_dir() { # A B: the same file names, every file equal byte for byte
  local a="$1" b="$2" f
  [ -d "$a" ] && [ -d "$b" ] || return 1
  [ "$(ls "$a")" == "$(ls "$b")" ] || { echo "  files differ: $(ls "$a" | tr '\n' ' ') vs $(ls "$b" | tr '\n' ' ')"; return 1; }
  for f in "$a"/*; do cmp -s "$f" "$b/$(basename "$f")" || { echo "  $(basename "$f") differs"; return 1; }; done
}
export_eq() { # NAME CHECKPOINT REFERENCE
  rm -rf "out-$1"
  if ! "$bin" export "$2" --out "out-$1" >"export-$1.txt" 2>&1; then fail "export $1: $(tail -2 "export-$1.txt")"; return; fi
  if same_dir "$3" "out-$1"; then ok "export $1: the offline export of $2 equals $3"; else fail "export $1: differs from $3"; fi
}
ck() { printf '%s/checkpoints/step-%06d' "$1" "$2"; }

train 2 probe --max-steps 1 --save-every 0
if grep -q "was not built\|built without" probe.txt; then lt_skip "no MPI communicator"; fi
grep -q "communicator mpi" probe.txt || fail "2 ranks did not use the MPI communicator: $(tail -3 probe.txt)"

# ---- references: one process ----
train 1 ref-full --save-every 0 || fail "1 process: $(tail -2 ref-full.txt)"
train 1 ref-lora --save-every 0 "${lora[@]}" || fail "1 process LoRA: $(tail -2 ref-lora.txt)"

# ---- 1-3. 3 ranks -> 2 ranks, full and LoRA ----
for mode in full lora; do
  extra=(--zero 1)
  [ $mode = lora ] && extra+=("${lora[@]}")
  LT_TRAIN_TEST_KILL_AFTER=3 train 3 "s3-$mode" "${extra[@]}"
  c=$(ck "s3-$mode" 2)
  [ -f "$c/COMPLETE" ] && [ ! -e "$(ck "s3-$mode" 4)" ] || { fail "3 ranks $mode: no step-2 checkpoint: $(tail -3 "s3-$mode.txt")"; continue; }
  files=$(cd "$c" && ls -- *.safetensors index.json 2>/dev/null | tr '\n' ' ')
  want="index.json optimizer-rank-00000-of-00003.safetensors optimizer-rank-00001-of-00003.safetensors optimizer-rank-00002-of-00003.safetensors weights-rank-00000-of-00003.safetensors weights-rank-00001-of-00003.safetensors weights-rank-00002-of-00003.safetensors "
  [ "$(echo "$files" | tr ' ' '\n' | sort | tr '\n' ' ')" = "$(echo "$want" | tr ' ' '\n' | sort | tr '\n' ' ')" ] \
    && ok "3 ranks $mode: step 2 is sharded: $files" || fail "3 ranks $mode: files $files"
  for f in "$c"/*-rank-*; do grep -q "\"$(basename "$f")\"" "$c/COMPLETE" || fail "COMPLETE does not list $f"; done
  sizes=$(stat -c %s "$c"/weights-rank-*)
  total=$(echo "$sizes" | paste -sd+ | bc) max=$(echo "$sizes" | sort -n | tail -1)
  [ $((max * 2)) -lt "$total" ] && ok "3 ranks $mode: the largest rank's weights file is $max of $total bytes" \
    || fail "3 ranks $mode: a rank wrote $max of $total bytes of weights"
  sub=hf; [ $mode = lora ] && sub=adapter
  export_eq "s3-$mode-mid" "$c" "$c/$sub"
  train 2 "s3-$mode" "${extra[@]}" --resume || fail "resume $mode on 2 ranks: $(tail -3 "s3-$mode.txt")"
  grep -q "resuming from .*step-000002 (step 2, written by another number of ranks.*sharded" "s3-$mode.txt" \
    || fail "$mode: no resume message: $(grep resuming "s3-$mode.txt")"
  same_run "ref-$mode" "s3-$mode" "$mode 3 ranks -> 2 ranks"
  export_eq "s3-$mode-final" "$(ck "s3-$mode" 6)" "s3-$mode/final"
  # config.json now holds the 2-rank launch's --grad-accum: step 2 (3 ranks) is still this run's
  export_eq "s3-$mode-mid-after" "$c" "$c/$sub"
done
"$bin" export "$(ck s3-full 2)" --gguf s3.gguf >gguf.txt 2>&1
[ $? -eq 1 ] && grep -q "is sharded (written by 3 ranks): export the Hugging Face folder" gguf.txt \
  && ok "--gguf of a sharded checkpoint: refused with the way round" || fail "--gguf of a sharded checkpoint: $(cat gguf.txt)"

# peak memory of the offline export: streamed, not the whole model
line=$(grep "peak resident memory" export-s3-full-mid.txt)
echo "     $line"
grow=$(echo "$line" | sed -n 's/.*, +\([0-9]*\) KiB).*/\1/p')
wkib=$(echo "$line" | sed -n "s/.*weights: \([0-9]*\) KiB in f32.*/\1/p")
big=$(echo "$line" | sed -n 's/.*largest tensor \([0-9]*\) KiB.*/\1/p')
if [ -n "$grow" ] && [ -n "$wkib" ] && [ -n "$big" ] && [ "$grow" -lt "$wkib" ] && [ "$grow" -le $((3 * big + 512)) ]; then
  ok "export: peak memory grew by $grow KiB for $wkib KiB of f32 weights (largest tensor $big KiB)"
else fail "export memory: '$line'"; fi

# ---- 2 -> 3 ranks (ZeRO-1), 2 ranks without ZeRO -> 1 process, old format -> 2 ranks ----
LT_TRAIN_TEST_KILL_AFTER=3 train 2 s2 --zero 1
train 3 s2 --zero 1 --resume || fail "2 -> 3: $(tail -3 s2.txt)"
same_run ref-full s2 "full 2 ranks -> 3 ranks"
LT_TRAIN_TEST_KILL_AFTER=3 train 2 z0 --zero 0
[ -f "$(ck z0 2)/weights-rank-00001-of-00002.safetensors" ] || fail "no ZeRO: no sharded checkpoint"
train 1 z0 --resume || fail "2 ranks (no ZeRO) -> 1: $(tail -3 z0.txt)"
same_run ref-full z0 "full 2 ranks (no ZeRO) -> 1 process"
LT_TRAIN_TEST_KILL_AFTER=3 train 1 old
[ -f "$(ck old 2)/weights.safetensors" ] || fail "1 process: no gathered checkpoint"
train 2 old --zero 1 --resume || fail "old format -> 2 ranks: $(tail -3 old.txt)"
same_run ref-full old "full 1 process (gathered checkpoint) -> 2 ranks"

# a row subset's state (LoRA + --train-embeddings new: AdamW state and master
# weights for the added rows only) through a 2-rank sharded checkpoint -> 1 process
if "$bin" vocab add --model "$model" --tokens "$src/tests/fixtures/vocab/tokens_lb.txt" --out lb >add.txt 2>&1 &&
   "$bin" tokenize --tokenizer lb --input "$src/data/sample/text.jsonl" --out shards-lb --quiet >tok-lb.txt 2>&1; then
  saved=("${common[@]}")
  for i in "${!common[@]}"; do
    [ "${common[$i]}" = "$model" ] && common[$i]=lb
    [ "${common[$i]}" = shards/train-00000.h5 ] && common[$i]=shards-lb/train-00000.h5
  done
  train 1 ref-emb --save-every 0 "${lora[@]}" --train-embeddings new || fail "1 process rows: $(tail -2 ref-emb.txt)"
  LT_TRAIN_TEST_KILL_AFTER=3 train 2 e2 --zero 0 "${lora[@]}" --train-embeddings new
  [ -f "$(ck e2 2)/optimizer-rank-00001-of-00002.safetensors" ] || fail "rows: no sharded checkpoint: $(tail -3 e2.txt)"
  train 1 e2 --resume "${lora[@]}" --train-embeddings new || fail "rows 2 -> 1: $(tail -3 e2.txt)"
  same_run ref-emb e2 "LoRA + --train-embeddings new 2 ranks -> 1 process"
  common=("${saved[@]}")
else
  fail "vocab add / tokenize for the row-subset case: $(tail -2 add.txt tok-lb.txt)"
fi

# ---- 4. crashes while writing ----
# rank 1 dies after writing its files of the step-2 checkpoint: no step-2
LT_CKPT_TEST_KILL_AT=3 LT_CKPT_TEST_KILL_RANK=1 train 3 crash1 --zero 1
[ $? -ne 0 ] || fail "crash on rank 1: the job succeeded"
if [ -e "$(ck crash1 2)" ] || ! compgen -G "crash1/checkpoints/.tmp-step-000002-*" >/dev/null; then
  fail "crash on rank 1: $(ls -a crash1/checkpoints)"
else
  ok "rank 1 killed after writing its shard: no step-2 checkpoint, only $(cd crash1/checkpoints && echo .tmp-*)"
fi
# from a complete step-2 checkpoint: rank 1 (then rank 0 after COMPLETE, before the rename) dies
# writing step 4; step 2 stays the newest and resumes to the uninterrupted result
for spec in "3 1" "6 0"; do
  set -- $spec
  rm -rf crash crash.txt
  LT_TRAIN_TEST_KILL_AFTER=3 train 3 crash --zero 1
  LT_CKPT_TEST_KILL_AT=$1 LT_CKPT_TEST_KILL_RANK=$2 train 2 crash --zero 1 --resume
  [ $? -ne 0 ] || fail "crash at stage $1 on rank $2: the job succeeded"
  if [ -e "$(ck crash 4)" ] || [ ! -f "$(ck crash 2)/COMPLETE" ]; then fail "crash at stage $1 on rank $2: $(ls -a crash/checkpoints)"
  else
    train 2 crash --zero 1 --resume || fail "resume after the crash: $(tail -3 crash.txt)"
    grep -q "resuming from .*step-000002" crash.txt || fail "after the crash: not resumed from step 2"
    same_run ref-full crash "crash at stage $1 on rank $2 writing step 4, resumed from step 2"
  fi
done

# ---- 5. a missing rank file ----
cp -r s3-full broken && rm "$(ck broken 2)/optimizer-rank-00001-of-00003.safetensors"
"$bin" export "$(ck broken 2)" --out err-broken >broken.txt 2>&1
[ $? -eq 1 ] && grep -q "optimizer-rank-00001-of-00003.safetensors: missing (listed in COMPLETE" broken.txt && [ ! -e err-broken ] \
  && ok "a missing rank file is refused by name" || fail "missing rank file: $(cat broken.txt)"

lt_finish
