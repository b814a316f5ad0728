#!/usr/bin/env bash
# test_cli_dry_run.sh -- `luxtrain train --dry-run` estimates the run this
# machine would do: --device auto without a usable GPU is the CPU run (f32
# weights and activations, CPU memory against the machine's), --device cpu
# likewise, --device cuda the bf16 GPU run (planning for a GPU machine); the
# "this launch" total is the table's row for this launch.
set -uo pipefail
bin="${LT_BIN:?}"
src="${LT_SOURCE_DIR:?}"
model="$src/data/sample/model"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
dry() { "$bin" train --model "$model" --data none.h5 --out none --dry-run --micro-batch 16 --seq-len 256 "$@"; }
col() { awk -v c="$2" '/<- this launch/ {print $c; exit}' <<<"$1"; } # column of the launch's row: 7 acts, 8 total

cpu="$(dry --device cpu)" || { echo "FAIL --dry-run --device cpu exits non-zero"; exit 1; }
echo "$cpu" | sed 's/^/    /'
check "--device cpu: a CPU run in f32" 'grep -q "^device CPU: weights and activations in f32" <<<"$cpu"'
check "--device cpu: this launch in CPU memory, against the machine's" \
    'grep -q "^this launch: about $(col "$cpu" 8) GB per rank of CPU memory, in f32" <<<"$cpu" && grep -q "^this machine has [0-9.]* GB of memory" <<<"$cpu"'
check "--device cpu: no CUDA workspace" '! grep -q "CUDA context" <<<"$cpu"'

gpu="$(dry --device cuda)" || { echo "FAIL --dry-run --device cuda exits non-zero"; exit 1; }
check "--device cuda: a GPU run in bf16 (even where there is no GPU)" \
    'grep -q "^device CUDA: weights and activations in bf16" <<<"$gpu" && grep -q "of GPU memory, in bf16" <<<"$gpu"'
check "f32 activations are twice the bf16 ones" \
    'awk -v a="$(col "$cpu" 7)" -v b="$(col "$gpu" 7)" "BEGIN {exit !(b > 0 && a / b > 1.9 && a / b < 2.1)}"'

auto="$(dry)" || { echo "FAIL --dry-run exits non-zero"; exit 1; }
if "$bin" score --model "$model" --ids 1,2 --device cuda >/dev/null 2>&1; then
    check "--device auto with a GPU: the GPU run" 'grep -q "^device CUDA (--device auto: a GPU is present)" <<<"$auto"'
else
    check "--device auto without a GPU: the CPU run" \
        'grep -q "^device CPU (--device auto: no NVIDIA GPU found, or CUDA not built in): weights and activations in f32" <<<"$auto"'
    check "--device auto without a GPU: the same figures as --device cpu" \
        '[[ "$(col "$auto" 8)" == "$(col "$cpu" 8)" ]]'
fi

# a sequence the run itself would refuse is refused here too, naming the limit
long="$("$bin" train --model "$model" --data none.h5 --out none --dry-run --device cpu --seq-len 513 2>&1)"; rc=$?
check "--seq-len past max_position_embeddings (512) is refused: rc $rc" \
    '[ $rc != 0 ] && grep -q "sequence length 513 exceeds max_position_embeddings 512" <<<"$long"'
# --world N marks that row; the per-stage table: ZeRO-2 below ZeRO-1 below ZeRO-0 from 2 ranks on, ZeRO-3
# (the estimate) falling with the world size
z="$(dry --device cuda --zero 2 --world 8)" || { echo "FAIL --dry-run --zero 2 --world 8"; exit 1; }
check "--world 8 marks the 8-rank row" '[[ "$(awk '"'"'/<- this launch/ {print $1; exit}'"'"' <<<"$z")" == 8 ]]'
check "the ZeRO-2 table is the ZeRO-2 column of the stage table" \
    '[[ "$(awk '"'"'/ZeRO-3/ {t=1} t && $1 == 8 {print $4}'"'"' <<<"$z")" == "$(col "$z" 8 | head -1)" ]]'
check "stages: ZeRO-0 > ZeRO-1 > ZeRO-2 at 8 ranks, ZeRO-3 at 256 below ZeRO-3 at 2" \
    'awk '"'"'/ZeRO-3/ {t=1} t && $1 == 8 {ok = $2 > $3 && $3 > $4} t && $1 == 2 {a = $5} t && $1 == 256 {b = $5} END {exit !(ok && b < a)}'"'"' <<<"$z"'
# QLoRA under ZeRO-3 shards the NF4 weights: Llama-3.1-8B's per-rank weights at 8 ranks well below 1 rank's
# (NF4 3.60 GB + bf16 rest 2.10 GB, divided; the dequantization buffer, LoRA and the gathered groups stay)
q3="$("$bin" train --model "$src/tests/fixtures/config/llama31_8b" --data none.h5 --out none --dry-run --device cuda \
      --zero 3 --world 8 --quantize nf4 --lora-rank 16 --seq-len 4096 --micro-batch 1 --recompute)" \
  || { echo "FAIL --dry-run --zero 3 --quantize nf4"; exit 1; }
check "QLoRA ZeRO-3: the NF4 weights are sharded (weights at 8 ranks < 0.7 x 1 rank's)" \
    'awk '"'"'/ZeRO-3\)$/ {t=1} /^total per rank/ {t=0} t && $1 == 1 {a = $2} t && $1 == 8 {b = $2} END {exit !(a > 0 && b < 0.7 * a)}'"'"' <<<"$q3"'
# --train-embeddings new: the AdamW state is the added rows' at every stage (ZeRO-1/2/3: each rank the
# rows inside its part), whatever the launch's own --zero: the per-stage table is the same from a ZeRO-0
# and a ZeRO-2 launch, and ZeRO-1/2/3 need no more than ZeRO-0 at any number of ranks and less from 2
# ranks on (Llama-3.1-8B's config with the vocabulary record `vocab add` writes for the sample model:
# only the number of added rows counts)
vtmp="$(mktemp -d)"
if "$bin" vocab add --model "$model" --tokens "$src/tests/fixtures/vocab/tokens_lb.txt" --out "$vtmp/lb" >"$vtmp/add.txt" 2>&1 &&
   mkdir "$vtmp/m" && cp "$src/tests/fixtures/config/llama31_8b/config.json" "$vtmp/lb/luxtrain_vocab.json" "$vtmp/m/"; then
  stages() { "$bin" train --model "$vtmp/m" --data none.h5 --out none --dry-run --device cuda --micro-batch 1 --seq-len 64 \
               --lora-rank 4 --train-embeddings new --world 2 "$@" | sed -n '/^total per rank/,/^$/p'; }
  s0="$(stages --zero 0)" s2="$(stages --zero 2)"
  echo "$s0" | sed 's/^/    /'
  check "--train-embeddings new: the stage table does not depend on the launch's --zero" '[ -n "$s0" ] && [[ "$s0" == "$s2" ]]'
  check "--train-embeddings new: ZeRO-1/2/3 at most ZeRO-0 at every number of ranks, below it from 2 ranks" \
      'awk '"'"'$1 ~ /^[0-9]+$/ {n++; if (!($3 <= $2 && $4 <= $2 && $5 <= $2) || ($1 > 1 && !($3 < $2))) bad = 1}
            END {exit !(n >= 8 && !bad)}'"'"' <<<"$s0"'
else
  echo "FAIL vocab add: $(tail -2 "$vtmp/add.txt")"; fail=1
fi
rm -rf "$vtmp"
exit $fail
