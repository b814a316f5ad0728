#!/usr/bin/env bash
# test_train_mpi.sh -- data-parallel `luxtrain train` under `mpirun -np 2`
# (the MPI communicator, CPU backend) against one process with the same global
# batch: 2 ranks x --micro-batch 2 vs 1 rank x --micro-batch 4, full
# fine-tuning and LoRA, on the sample model. The loader gives both the same
# packed global batches, so every step's loss, target count and grad norm
# must agree (relative 1e-5: the gradient sums are added in another order),
# and only rank 0 writes (one metrics line per step, one final export).
# Skips (77) when mpirun, the MPI communicator or the sample model is absent.
set -u
src="${LT_SOURCE_DIR:?LT_SOURCE_DIR not set}"
bin="${LT_BIN:?LT_BIN not set}"
py="${LT_PYTHON:-}"
tmp="${LT_TMP:-$(mktemp -d)}"
model="$src/data/sample/model"
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
command -v mpirun >/dev/null || { echo "SKIP: no mpirun" >&2; exit 77; }
[ -f "$model/model.safetensors" ] || { echo "SKIP: $model not generated" >&2; exit 77; }
[ -n "$py" ] || { echo "SKIP: no LT_PYTHON" >&2; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_base_warn_component_unused=0
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1

"$bin" tokenize --tokenizer "$model" --input "$src/data/sample/luxit_sample.jsonl" --out shards --quiet \
  >tok.txt 2>&1 || { fail "tokenize: $(tail -2 tok.txt)"; exit 1; }
common=(--model "$model" --data shards/train-00000.h5 --seq-len 64 --grad-accum 2 --epochs 0 --max-steps 4
        --lr 2e-3 --warmup-steps 1 --save-every 0 --eval-every 0 --device cpu --threads 1)
for mode in full lora; do
  extra=()
  [ $mode = lora ] && extra=(--lora-rank 4 --lora-alpha 8)
  OMP_NUM_THREADS=1 "$bin" train "${common[@]}" "${extra[@]}" --micro-batch 4 --out "one-$mode" >"one-$mode.txt" 2>&1 \
    || fail "$mode: one process: $(tail -2 one-$mode.txt)"
  OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 "$bin" train "${common[@]}" "${extra[@]}" --micro-batch 2 \
    --out "two-$mode" >"two-$mode.txt" 2>&1 || { grep -q "communicator\|not built" "two-$mode.txt" || true; }
  if grep -q "was not built\|built without" "two-$mode.txt"; then echo "SKIP: no MPI communicator" >&2; exit 77; fi
  [ -f "two-$mode/metrics.jsonl" ] || { fail "$mode: 2 ranks: $(tail -3 two-$mode.txt)"; continue; }
  grep -q "communicator mpi" "two-$mode.txt" || fail "$mode: 2 ranks did not use the MPI communicator"
  "$py" - "one-$mode/metrics.jsonl" "two-$mode/metrics.jsonl" <<'PY' || fail "$mode: 2 ranks differ from 1"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
b = [json.loads(l) for l in open(sys.argv[2]) if '"loss"' in l]
assert len(a) == 4 and len(b) == 4, (len(a), len(b))
for x, y in zip(a, b):
    assert x["step"] == y["step"] and x["target_tokens"] == y["target_tokens"] and x["tokens"] == y["tokens"], (x, y)
    for k in ("loss", "grad_norm"):
        assert abs(x[k] - y[k]) <= 1e-5 * abs(x[k]), (k, x, y)
    print("step %d: loss %.9f / %.9f, grad norm %.9f / %.9f" % (x["step"], x["loss"], y["loss"], x["grad_norm"], y["grad_norm"]))
PY
  [ -d "two-$mode/final" ] || fail "$mode: 2 ranks wrote no final export"
done
if [ $fails -ne 0 ]; then echo "test_train_mpi: $fails failure(s)" >&2; exit 1; fi
echo "test_train_mpi: all checks passed"
