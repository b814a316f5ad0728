# lt_test_lib.sh -- what every shell test starts and ends with; sourced as
#   . "$(dirname "$0")/lt_test_lib.sh"
# The harness (tests/CMakeLists.txt) sets LT_SOURCE_DIR, LT_BIN, LT_PYTHON and
# may set LT_TMP. Gives: src, bin, py, tmp, model (the bundled sample model);
# fail MSG (counts a failure, the test goes on); lt_skip WHY (exit 77, the
# reason on stderr); lt_need_model [FILE] (skip when the sample model lacks
# FILE, default model.safetensors); lt_enter_tmp (a fresh $tmp as the working
# folder); lt_tokenize_sample OUT [ARGS] (the sample instructions -> OUT/,
# stops the test when it fails); lt_use_lb_vocab (the sample model with added
# tokens, in the caller's common[] array); final_of RUN; train NP OUT ARGS and same_run A B (runs
# of `luxtrain train` compared bitwise, below); lt_finish (the summary line and exit status).
set -u
src="${LT_SOURCE_DIR:?LT_SOURCE_DIR not set}"
bin="${LT_BIN:?LT_BIN not set}"
py="${LT_PYTHON:-}"
[ -z "$py" ] || [ -x "$py" ] || py="" # configured but never made (no tools/setup-deps.sh): the tests that need it skip
tmp="${LT_TMP:-$(mktemp -d)}"
model="$src/data/sample/model"
fails=0
lt_name="$(basename "$0" .sh)"

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
lt_skip() { echo "SKIP: $*" >&2; exit 77; }
# the tests that launch CPU ranks under mpirun: skip without it; Open MPI as
# root, over shared memory / TCP on this host, one OpenMP thread per rank
lt_need_mpi() {
  command -v mpirun >/dev/null || lt_skip "no mpirun"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_base_warn_component_unused=0
  export OMP_NUM_THREADS=1
}
lt_need_model() { [ -f "$model/${1:-model.safetensors}" ] || lt_skip "$model/${1:-model.safetensors} not generated"; }
lt_enter_tmp() { rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1; }
lt_tokenize_sample() {
  local out=$1
  shift
  "$bin" tokenize --tokenizer "$model" --input "$src/data/sample/luxit_sample.jsonl" --out "$out" --quiet "$@" \
    >"$out.tokenize.txt" 2>&1 || { fail "tokenize: $(tail -2 "$out.tokenize.txt")"; exit 1; }
}
# lt_use_lb_vocab: the sample model with the Luxembourgish tokens added (`vocab add` -> ./lb)
# and the sample texts tokenized with it (./shards-lb); in the caller's common[] array the
# sample model and shards/train-00000.h5 become those (saved[] keeps the old array).
# Status 1 (nothing switched) when either command fails.
lt_use_lb_vocab() {
  "$bin" vocab add --model "$model" --tokens "$src/tests/fixtures/vocab/tokens_lb.txt" --out lb >add.txt 2>&1 &&
    "$bin" tokenize --tokenizer lb --input "$src/data/sample/text.jsonl" --out shards-lb --quiet >tok-lb.txt 2>&1 ||
    return 1
  saved=("${common[@]}")
  local i
  for i in "${!common[@]}"; do
    [ "${common[$i]}" = "$model" ] && common[$i]=lb
    [ "${common[$i]}" = shards/train-00000.h5 ] && common[$i]=shards-lb/train-00000.h5
  done
  return 0
}
# final_of RUN: the run's final weights file (a full run's model.safetensors, else the adapter's)
final_of() { if [ -f "$1/final/model.safetensors" ]; then echo "$1/final/model.safetensors"; else echo "$1/final/adapter_model.safetensors"; fi; }
# train NP OUT ARGS...: `$train_bin train` (default $bin) with the caller's common[] array and
# ARGS, --out OUT, its output in OUT.txt; NP 1: a plain process, else mpirun -np NP (ended after
# ${train_timeout:-120} s)
train() {
  local np=$1 out=$2
  shift 2
  if [ "$np" = 1 ]; then "${train_bin:-$bin}" train "${common[@]}" "$@" --out "$out" >"$out.txt" 2>&1
  else timeout "${train_timeout:-120}" mpirun --oversubscribe -np "$np" "${train_bin:-$bin}" train "${common[@]}" "$@" \
         --out "$out" >"$out.txt" 2>&1; fi
}
# same_run A B: every step's loss, grad_norm and target count strings equal (${steps:-8} steps
# logged) and the final weights' bytes equal (needs $py)
same_run() {
  "$py" - "$1/metrics.jsonl" "$2/metrics.jsonl" "${steps:-8}" <<'PY' && cmp -s "$(final_of "$1")" "$(final_of "$2")"
import re, sys
def rows(p):
    return [tuple(re.search(r'"%s": ([^,]+)' % k, l).group(1) for k in ("step", "loss", "grad_norm", "target_tokens"))
            for l in open(p) if '"loss"' in l]
a, b = rows(sys.argv[1]), rows(sys.argv[2])
assert len(a) == int(sys.argv[3]) and a == b, (a[:2], b[:2])
PY
}
lt_finish() {
  if [ "$fails" -ne 0 ]; then echo "$lt_name: $fails failure(s)" >&2; exit 1; fi
  echo "$lt_name: all checks passed"
  exit 0
}
