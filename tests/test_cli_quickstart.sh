#!/usr/bin/env bash
# test_cli_quickstart.sh -- tools/quickstart.sh says only what its own results
# show: run with the built binary (LT_BIN: no setup, no build) and 20 steps, its
# summary's held-out losses and exam accuracies are those of the files it
# wrote, it calls the exam unchanged when it is, better/worse only with
# p < 0.05, and the legend of the target marks and the loss plot path it
# prints are real.
set -uo pipefail
bin="${LT_BIN:?}"
src="${LT_SOURCE_DIR:?}"
tmp="${LT_TMP:-/tmp/test_cli_quickstart}"
rm -rf "$tmp"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
LT_BIN="$bin" LT_QUICK_RUN="$tmp/run" LT_QUICK_STEPS=20 bash "$src/tools/quickstart.sh" >"$tmp.log" 2>&1; rc=$?
sed -n '/== summary/,$p' "$tmp.log"
check "quickstart exits 0" '[[ $rc == 0 ]]' || { tail -20 "$tmp.log"; exit 1; }
r="$tmp/run"
num() { sed -n "s/.*\"$2\":[[:space:]]*\([-0-9.e+]*\).*/\1/p" "$1" | head -1; }
acc() { tr -d '\n' <"$1" | sed -n 's/.*"overall":[[:space:]]*{[^}]*"acc":[[:space:]]*\([0-9.e+-]*\).*/\1/p'; }
lb=$(printf %.4f "$(num "$r/heldout_before.json" loss)") la=$(printf %.4f "$(num "$r/heldout_after.json" loss)")
eb=$(printf %.4f "$(acc "$r/exam_before.json")") ea=$(printf %.4f "$(acc "$r/exam_after.json")")
line() { grep "^$1" "$tmp.log"; }
check "held-out loss $lb -> $la as eval wrote it" '[[ "$(line "held-out loss:")" == "held-out loss:  $lb -> $la "* ]]'
if awk -v a="$la" -v b="$lb" 'BEGIN {exit !(a < b)}'; then
    check "held-out loss: called lower" 'line "held-out loss:" | grep -q "(lower"'
else
    check "held-out loss: not called lower" 'line "held-out loss:" | grep -q "(not lower"'
fi
check "exam accuracy $eb -> $ea as eval wrote it" '[[ "$(line "exam accuracy:")" == "exam accuracy:  $eb -> $ea "* ]]'
p=$(awk '$1 == "overall" {print $NF}' "$r/exam_compare.txt")
if [[ $eb == "$ea" ]]; then
    check "exam: called unchanged" 'line "exam accuracy:" | grep -q "(unchanged"'
elif awk -v p="$p" 'BEGIN {exit !(p + 0 < 0.05)}'; then
    check "exam: a significant change named with its p-value" 'line "exam accuracy:" | grep -q "significant: McNemar p = $p"'
else
    check "exam: a change that is not significant is called so" 'line "exam accuracy:" | grep -q "not significant"'
fi
check "no claim of improvement beyond the summary" '! grep -qiE "improv" "$tmp.log"'
check "the legend of the target marks precedes inspect --show" \
    'grep -A1 "between ⟦ and ⟧" "$tmp.log" | tail -1 | grep -q "train-00000.h5" && grep -q "⟦" "$tmp.log"'
plot=$(sed -n 's/^loss plot: *\([^ ]*\).*/\1/p' "$tmp.log")
check "the loss plot it names exists ($plot)" '[[ -s "$plot" ]] && grep -q "<svg" "$plot"'
exit $fail
