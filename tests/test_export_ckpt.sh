#!/usr/bin/env bash
# test_export_ckpt.sh -- `luxtrain export RUN_DIR/checkpoints/step-N --out DIR`
# on the sample model (data/sample/model, BF16):
#   full fine-tuning and LoRA runs whose last checkpoint is at --max-steps:
#   the export of that checkpoint equals the run's final/ byte for byte (every
#   file); a mid-run checkpoint's export equals the folder the run wrote next
#   to it (step-N/hf, step-N/adapter); a LoRA run that continued an --adapter
#   too, and a 2-rank ZeRO-1 run (sharded checkpoint; under mpirun, where built with MPI); a
#   checkpoint given from inside checkpoints/; --model when the base model
#   moved; --out refused when not empty unless --overwrite; errors: no folder,
#   not a checkpoint (names the missing files), no COMPLETE marker, a damaged
#   file, a NaN (stops midway, an earlier export kept), the run's config.json
#   replaced, the base model missing or changed -- each exits 1 and leaves
#   neither DIR nor DIR.tmp-* behind.
. "$(dirname "$0")/lt_test_lib.sh"
ok() { echo "ok   $*"; }

if [ ! -x "$bin" ]; then echo "FAIL: luxtrain binary '$bin' not built" >&2; exit 1; fi
lt_need_model
lt_enter_tmp
cp -r "$model" base # a base model folder this test may move and change

lt_tokenize_sample shards
common=(--data shards/train-00000.h5 --seq-len 64 --micro-batch 2 --epochs 0 --max-steps 3 --lr 1e-3
        --save-every 2 --device cpu --threads 1)
# --save-every 2 and --max-steps 3: checkpoints at 2 (mid-run) and 3 (the end)
"$bin" train --model base --out full "${common[@]}" >full.txt 2>&1 || fail "full train: $(tail -3 full.txt)"
"$bin" train --model base --out lora --lora-rank 4 --lora-alpha 8 --lora-targets q,v,down "${common[@]}" \
  >lora.txt 2>&1 || fail "LoRA train: $(tail -3 lora.txt)"
"$bin" train --model base --adapter lora/final --out cont "${common[@]}" >cont.txt 2>&1 \
  || fail "LoRA --adapter train: $(tail -3 cont.txt)"

same_dir() { # A B: the same file names, every file equal byte for byte
    local a="$1" b="$2" f
    [ -d "$a" ] && [ -d "$b" ] || return 1
    [ "$(ls "$a")" == "$(ls "$b")" ] || { echo "  files differ: $(ls "$a" | tr '\n' ' ') vs $(ls "$b" | tr '\n' ' ')"; return 1; }
    for f in "$a"/*; do cmp -s "$f" "$b/$(basename "$f")" || { echo "  $(basename "$f") differs"; return 1; }; done
}
export_eq() { # NAME CHECKPOINT REFERENCE [ARGS...]
    local name="$1" ck="$2" ref="$3"; shift 3
    rm -rf "out-$name"
    if ! "$bin" export "$ck" --out "out-$name" "$@" >"$name.txt" 2>&1; then fail "$name: $(tail -2 "$name.txt")"; return; fi
    if same_dir "$ref" "out-$name"; then ok "$name: export of $ck equals $ref"; else fail "$name: export differs from $ref"; fi
}
export_eq full-final full/checkpoints/step-000003 full/final
export_eq full-mid full/checkpoints/step-000002 full/checkpoints/step-000002/hf
export_eq lora-final lora/checkpoints/step-000003 lora/final
export_eq lora-mid lora/checkpoints/step-000002 lora/checkpoints/step-000002/adapter
export_eq cont-final cont/checkpoints/step-000003 cont/final
(cd lora/checkpoints && "$bin" export step-000003/ --out ../../out-inside >../../inside.txt 2>&1) \
  && same_dir lora/final out-inside && ok "a checkpoint given from inside checkpoints/" \
  || fail "export step-000003/ from inside checkpoints/: $(cat inside.txt)"
# a checkpoint of a 2-rank ZeRO-1 run (sharded: each rank wrote its slices; the
# options hash counts micro-batches over all ranks) -- where mpirun and MPI are built in
if command -v mpirun >/dev/null && "$bin" --version | grep -q "MPI on"; then
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader,tcp \
    OMPI_MCA_btl_base_warn_component_unused=0 OMP_NUM_THREADS=1 timeout 120 mpirun --oversubscribe -np 2 \
    "$bin" train --model base --out mpi --zero 1 "${common[@]}" >mpi.txt 2>&1 || fail "2-rank train: $(tail -3 mpi.txt)"
  export_eq mpi-final mpi/checkpoints/step-000003 mpi/final
else
  echo "skip the 2-rank ZeRO-1 checkpoint: no mpirun or no MPI in this build"
fi
[ -f out-full-final/model.safetensors ] && [ -f out-full-final/tokenizer.json ] && [ -f out-full-final/config.json ] \
  || fail "the full export lacks model.safetensors, config.json or tokenizer.json"
[ -f out-lora-final/adapter_config.json ] && [ -f out-lora-final/adapter_model.safetensors ] \
  || fail "the LoRA export lacks adapter_config.json or adapter_model.safetensors"
grep -qE '"base_model_name_or_path":[[:space:]]*"base"' out-lora-final/adapter_config.json \
  || fail "adapter_config.json does not name the run's base model"

# --out: an existing non-empty folder is refused, replaced with --overwrite; an empty one is used
mkdir -p busy && echo keep >busy/keep.txt
"$bin" export full/checkpoints/step-000003 --out busy >busy.txt 2>&1; rc=$?
[[ $rc == 1 && "$(cat busy.txt)" == *"--out busy exists and is not empty; use --overwrite"* && -f busy/keep.txt ]] \
  && ok "non-empty --out refused" || fail "non-empty --out: rc $rc: $(cat busy.txt)"
"$bin" export full/checkpoints/step-000003 --out busy --overwrite >force.txt 2>&1 && same_dir full/final busy \
  && ok "--overwrite replaces it" || fail "--overwrite: $(cat force.txt)"
mkdir -p empty
"$bin" export lora/checkpoints/step-000003 --out empty >empty.txt 2>&1 && same_dir lora/final empty \
  && ok "an empty --out is used" || fail "empty --out: $(cat empty.txt)"

# errors: exit 1, the message, nothing left behind
expect_err() { # NAME EXPECTED-TEXT ARGS...
    local name="$1" want="$2"; shift 2
    rm -rf "err-$name"
    "$bin" export "$@" --out "err-$name" >"log-$name.txt" 2>&1; local rc=$?
    if [[ $rc == 1 && "$(cat "log-$name.txt")" == *"$want"* ]]; then ok "$name: refused ($want)"
    else fail "$name: rc $rc, expected 1 and '$want': $(cat "log-$name.txt")"; fi
    if compgen -G "err-$name*" >/dev/null; then fail "$name: left $(echo err-"$name"*) behind"; fi
}
expect_err no-folder "no such checkpoint folder" full/checkpoints/step-000009
expect_err not-ckpt "not a checkpoint folder: weights.safetensors, loader.bin, state.json missing" full
mkdir -p bad/checkpoints && cp full/config.json bad/
cp -r full/checkpoints/step-000003 bad/checkpoints/step-000003 && rm bad/checkpoints/step-000003/COMPLETE
expect_err incomplete "incomplete checkpoint: no COMPLETE marker" bad/checkpoints/step-000003
cp -r full/checkpoints/step-000002 bad/checkpoints/step-000002 && truncate -s -4 bad/checkpoints/step-000002/weights.safetensors
expect_err damaged "weights.safetensors: " bad/checkpoints/step-000002
cp -r lora relr && sed -i 's/"lr":.*/"lr": 0.5,/' relr/config.json
expect_err other-options "are not those checkpoint" relr/checkpoints/step-000003
expect_err usage-model "is missing or has no config.json" full/checkpoints/step-000003 --model nowhere

# a NaN in the checkpoint's last tensor: the export stops midway, removes its
# temporary folder, and an earlier export in --out survives --overwrite
cp -r full fullnan && w=fullnan/checkpoints/step-000003/weights.safetensors
printf '\x00\x00\xc0\x7f' | dd of="$w" bs=1 seek=$(($(stat -c %s "$w") - 4)) conv=notrunc status=none
expect_err nan "holds NaN" fullnan/checkpoints/step-000003
"$bin" export fullnan/checkpoints/step-000003 --out busy --overwrite >nan2.txt 2>&1; rc=$?
[[ $rc == 1 ]] && same_dir full/final busy && ok "a failed --overwrite export leaves the earlier one" \
  || fail "a failed --overwrite export: rc $rc: $(cat nan2.txt)"

# the base model moved: refused, then found with --model
mv base base-moved
expect_err moved-full "base model folder base (named in RUN_DIR/config.json) is missing" full/checkpoints/step-000003
expect_err moved-lora "base model folder base (named in RUN_DIR/config.json) is missing" lora/checkpoints/step-000003
export_eq moved-full full/checkpoints/step-000003 full/final --model base-moved
export_eq moved-lora lora/checkpoints/step-000003 lora/final --model base-moved
# the base model changed: a model of other shapes under the same name
cp -r base-moved base
sed -i 's/"intermediate_size": *\([0-9]*\)/"intermediate_size": 1\1/' base/config.json
grep -q '"intermediate_size": 1' base/config.json || fail "test setup: intermediate_size not changed"
expect_err changed-lora "against base model base" lora/checkpoints/step-000003
expect_err changed-full "base model base" full/checkpoints/step-000003
# the tmp folders of the export itself never survive
if compgen -G "*.tmp-*" >/dev/null; then fail "temporary folders left: $(echo *.tmp-*)"; fi

lt_finish
