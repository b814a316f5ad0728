#!/usr/bin/env bash
# test_cli_quickstart.sh -- tools/quickstart.sh says only what its own results
# show: run with the built binary (LT_BIN: no setup, no build) and its default
# steps, its summary's held-out losses and exam accuracies are those of the
# files it wrote, it calls the exam unchanged when it is, better/worse only with
# p < 0.05, and the legend of the target marks and the loss plot path it prints
# are real. The demonstration itself: fine-tuning on the bundled instructions
# lowers the held-out loss by more than 1 nat and lifts the sample exam by at
# least 0.10 with McNemar p < 0.05 (measured: 7.3668 -> 4.9628, 0.7115 ->
# 0.8654, p = 0.00781: 8 questions won, none lost), and (with $LT_PYTHON) no exam question shares a word
# 5-gram or 40 characters with the instructions.
set -uo pipefail
bin="${LT_BIN:?}"
src="${LT_SOURCE_DIR:?}"
tmp="${LT_TMP:-/tmp/test_cli_quickstart}"
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
LT_BIN="$bin" LT_QUICK_RUN="$tmp/run" bash "$src/tools/quickstart.sh" >"$tmp.log" 2>&1; rc=$?
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
p=$(awk '$1 == "overall" {print ($NF == "*" ? $(NF - 1) : $NF)}' "$r/exam_compare.txt")
if [[ $eb == "$ea" ]]; then
    check "exam: called unchanged" 'line "exam accuracy:" | grep -q "(unchanged"'
elif awk -v p="$p" 'BEGIN {exit !(p + 0 < 0.05)}'; then
    check "exam: a significant change named with its p-value" 'line "exam accuracy:" | grep -q "significant: McNemar p = $p"'
else
    check "exam: a change that is not significant is called so" 'line "exam accuracy:" | grep -q "not significant"'
fi
check "held-out loss falls by more than 1 ($lb -> $la)" 'awk -v a="$la" -v b="$lb" "BEGIN {exit !(a < b - 1)}"'
check "the exam rises by at least 0.10 ($eb -> $ea)" 'awk -v a="$ea" -v b="$eb" "BEGIN {exit !(a >= b + 0.10)}"'
check "the exam's rise is significant (McNemar p = $p < 0.05)" 'awk -v p="$p" "BEGIN {exit !(p != \"\" && p + 0 < 0.05)}"'
check "no claim of improvement beyond the summary" '! grep -qiE "improv" "$tmp.log"'
check "the legend of the target marks precedes inspect --show" \
    'grep -A1 "between ⟦ and ⟧" "$tmp.log" | tail -1 | grep -q "train-00000.h5" && grep -q "⟦" "$tmp.log"'
plot=$(sed -n 's/^loss plot: *\([^ ]*\).*/\1/p' "$tmp.log")
check "the loss plot it names exists ($plot)" '[[ -s "$plot" ]] && grep -q "<svg" "$plot"'
py="${LT_PYTHON:-}"
if [[ -n $py ]] && "$py" -c "" 2>/dev/null; then
    # the exam shares no question with the instructions: no word 5-gram of a
    # question and no 40-character piece of it occurs in any training text
    "$py" - "$src/data/sample" <<'EOF' || fail=1
import json, os, sys
d = sys.argv[1]
texts = []
for name in ("luxit_sample.jsonl", "conversations.jsonl", "text.jsonl"):
    for line in open(os.path.join(d, name), encoding="utf-8"):
        if line.strip():
            r = json.loads(line)
            texts += [str(r.get(k, "")) for k in ("instruction", "input", "output", "text")]
            texts += [m["content"] for m in r.get("messages", [])]
blob = "\n".join(texts)
worst, bad = (0, "", ""), []
for line in open(os.path.join(d, "exam_lb.jsonl"), encoding="utf-8"):
    q = json.loads(line)
    c = q["context"].removeprefix("Fro: ").removesuffix("\nÄntwert:")
    best = ""
    for i in range(len(c)):
        n = len(best) + 1
        while i + n <= len(c) and c[i:i + n] in blob:
            best, n = c[i:i + n], n + 1
    worst = max(worst, (len(best), q["id"], best))
    w = c.split()
    bad += [(q["id"], g) for g in {" ".join(w[i:i + 5]) for i in range(len(w) - 4)} if g in blob]
print(f"longest piece of an exam question found in the instructions: {worst[0]} characters ({worst[1]}: {worst[2]!r})")
ok = not bad and worst[0] < 40
print(("ok   " if ok else "FAIL ") + "the exam shares no question with the instructions" + (f": {bad[:3]}" if bad else ""))
sys.exit(0 if ok else 1)
EOF
else
    echo "skip the overlap check: LT_PYTHON='$py' is not a usable Python"
fi
exit $fail
