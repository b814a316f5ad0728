#!/usr/bin/env bash
# test_plot.sh -- `luxtrain plot`: two synthetic runs -> SVG. Checks with
# Python's XML parser that the SVG is well-formed, holds one training-loss
# polyline per run with one point per training line, the eval-loss polyline
# at the token counts of the matching steps, the learning-rate polylines and
# the right-hand learning-rate axis; then bad input (missing file, malformed
# line, training line without tokens, no runs) fails with a message naming
# the file and line.
set -u
BIN=${LT_BIN:?LT_BIN not set}
PY=${LT_PYTHON:-python3}
[ -x "$PY" ] || PY=$(command -v python3 || true)
[ -n "$PY" ] || { echo "no python: skipping"; exit 77; }
TMP=${LT_TMP:-$(mktemp -d)}
rm -rf "$TMP" && mkdir -p "$TMP/run_a" "$TMP/run_b" "$TMP/bad1" "$TMP/bad2" "$TMP/empty"
fail=0
check() { if ! eval "$1"; then echo "FAIL: $2"; fail=1; fi; }

# run_a: 40 training lines (4096 tokens a step, cosine-ish lr), eval every 10 steps (no tokens: mapped by step)
"$PY" - "$TMP" <<'EOF'
import json, math, sys
tmp = sys.argv[1]
with open(tmp + "/run_a/metrics.jsonl", "w") as f:
    f.write(json.dumps({"step": 0, "eval_loss": 3.1}) + "\n")
    for s in range(1, 41):
        lr = 3e-4 * min(1.0, s / 5) * (0.5 + 0.5 * math.cos(math.pi * s / 40))
        f.write(json.dumps({"step": s, "epoch": 0, "loss": 3.0 * math.exp(-s / 25) + 0.5, "grad_norm": 1.0,
                            "lr": lr, "tokens": 4096 * s, "target_tokens": 3000 * s, "tokens_per_s": 1000.0,
                            "elapsed_s": 4.1 * s}) + "\n")
        if s % 10 == 0:
            f.write(json.dumps({"step": s, "eval_loss": 3.0 * math.exp(-s / 30) + 0.7}) + "\n")
    f.write("\n")  # a blank line is fine
with open(tmp + "/run_b/metrics.jsonl", "w") as f:
    for s in range(1, 26):
        f.write(json.dumps({"step": s, "epoch": 0, "loss": 2.5 * math.exp(-s / 15) + 0.8, "grad_norm": 0.5,
                            "lr": 1e-4, "tokens": 8192 * s, "target_tokens": 7000 * s, "tokens_per_s": 2000.0,
                            "elapsed_s": 2.0 * s}) + "\n")
    f.write(json.dumps({"event": "done"}) + "\n")  # other objects are skipped
with open(tmp + "/bad1/metrics.jsonl", "w") as f:
    f.write(json.dumps({"step": 1, "loss": 2.0, "tokens": 10, "lr": 1e-4}) + "\n")
    f.write(json.dumps({"step": 2, "loss": 1.9, "tokens": 20, "lr": 1e-4}) + "\n")
    f.write('{"step": 3, "loss": 1.8, "tok\n')
with open(tmp + "/bad2/metrics.jsonl", "w") as f:
    f.write(json.dumps({"step": 1, "loss": 2.0, "lr": 1e-4}) + "\n")
EOF

out=$("$BIN" plot "$TMP/run_a" "$TMP/run_b" --out "$TMP/plot.svg" 2>&1); rc=$?
check "[ $rc -eq 0 ]" "plot exit $rc: $out"
check "[ -s '$TMP/plot.svg' ]" "no SVG written"

"$PY" - "$TMP/plot.svg" <<'EOF' || fail=1
import sys
import xml.etree.ElementTree as ET
NS = "{http://www.w3.org/2000/svg}"
root = ET.parse(sys.argv[1]).getroot()  # raises on malformed XML
assert root.tag == NS + "svg", root.tag
lines = {}
for pl in root.iter(NS + "polyline"):
    pts = [tuple(map(float, p.split(","))) for p in pl.get("points").split()]
    lines[(pl.get("class"), pl.get("data-run"))] = pts
def need(key, n):
    assert key in lines, "missing polyline %s (have %s)" % (key, sorted(lines))
    assert len(lines[key]) == n, "%s: %d points, want %d" % (key, len(lines[key]), n)
need(("train-loss", "run_a"), 40)
need(("train-loss", "run_b"), 25)
need(("lr", "run_a"), 40)
need(("lr", "run_b"), 25)
need(("eval-loss", "run_a"), 5)
assert ("eval-loss", "run_b") not in lines, "run_b has no eval lines"
# x grows with tokens; run_b reaches further right (25 * 8192 > 40 * 4096)
xa = [p[0] for p in lines[("train-loss", "run_a")]]
assert xa == sorted(xa) and xa[0] < xa[-1]
assert lines[("train-loss", "run_b")][-1][0] > xa[-1]
# eval at step 10 sits at the x of training step 10 (tokens mapped via the step); step 0 at x of 0 tokens
ev = lines[("eval-loss", "run_a")]
assert abs(ev[1][0] - xa[9]) < 0.01, (ev[1], xa[9])
assert abs(ev[4][0] - xa[39]) < 0.01
assert ev[0][0] < xa[0]
# loss decreases -> y (downwards in SVG) increases
ya = [p[1] for p in lines[("train-loss", "run_a")]]
assert ya[-1] > ya[0]
# everything inside the canvas
W, H = float(root.get("width")), float(root.get("height"))
for k, pts in lines.items():
    for x, y in pts:
        assert 0 <= x <= W and 0 <= y <= H, (k, x, y)
ids = {g.get("id") for g in root.iter(NS + "g")}
assert {"x-axis", "loss-axis", "lr-axis", "legend"} <= ids, ids
texts = " ".join((t.text or "") for t in root.iter(NS + "text"))
for word in ("tokens", "loss", "learning rate", "run_a", "run_b", "eval loss"):
    assert word in texts, word
print("svg ok: %d polylines" % len(lines))
EOF

# default output: RUN_DIR/loss.svg
"$BIN" plot "$TMP/run_b" > /dev/null 2>&1
check "[ -s '$TMP/run_b/loss.svg' ]" "default output run_b/loss.svg"

# null losses (what the trainer writes for a non-finite loss, or an evaluation without targets) are left
# out, not an error; the step still maps later evaluations to tokens
mkdir -p "$TMP/nulls" "$TMP/nan" "$TMP/ulps"
printf '%s\n' '{"step": 1, "loss": 2.0, "lr": 1e-4, "tokens": 100}' \
    '{"step": 2, "loss": null, "grad_norm": null, "lr": 1e-4, "tokens": 200}' \
    '{"step": 2, "eval_loss": null, "eval_target_tokens": 0}' \
    '{"step": 3, "loss": 1.5, "lr": 1e-4, "tokens": 300}' '{"step": 3, "eval_loss": 1.7}' > "$TMP/nulls/metrics.jsonl"
out=$("$BIN" plot "$TMP/nulls" --out "$TMP/nulls.svg" 2>&1); rc=$?
check "[ $rc -eq 0 ]" "null losses: exit $rc: $out"
"$PY" - "$TMP/nulls.svg" <<'EOF' || fail=1
import sys
import xml.etree.ElementTree as ET
NS = "{http://www.w3.org/2000/svg}"
lines = {pl.get("class"): pl.get("points").split() for pl in ET.parse(sys.argv[1]).getroot().iter(NS + "polyline")}
assert len(lines["train-loss"]) == 2 and len(lines["eval-loss"]) == 1 and len(lines["lr"]) == 3, lines
assert lines["eval-loss"][0].split(",")[0] == lines["train-loss"][1].split(",")[0], lines  # eval at step 3's tokens
print("nulls ok")
EOF
# NaN is not JSON: a clear message naming the line
printf '%s\n' '{"step": 1, "loss": 2.0, "tokens": 100}' '{"step": 2, "loss": NaN, "tokens": 200}' > "$TMP/nan/metrics.jsonl"
out=$("$BIN" plot "$TMP/nan" --out "$TMP/x.svg" 2>&1); rc=$?
check "[ $rc -eq 1 ] && grep -q 'nan/metrics.jsonl:2: malformed JSON' <<< \"\$out\" && grep -q 'null, not NaN' <<< \"\$out\"" \
    "NaN literal: $out"
# losses a few ulps apart: the tick loop used to spin forever
printf '%s\n' '{"step": 1, "loss": 1e20, "tokens": 100}' '{"step": 2, "loss": 1.0000000000000002e20, "tokens": 200}' \
    > "$TMP/ulps/metrics.jsonl"
out=$(timeout 20 "$BIN" plot "$TMP/ulps" --out "$TMP/ulps.svg" 2>&1); rc=$?
check "[ $rc -eq 0 ] && [ -s '$TMP/ulps.svg' ]" "losses a few ulps apart: exit $rc: $out"

# bad input
out=$("$BIN" plot "$TMP/nope" --out "$TMP/x.svg" 2>&1); rc=$?
check "[ $rc -eq 1 ]" "missing run: exit $rc"
check "grep -q 'nope/metrics.jsonl' <<< \"\$out\"" "missing run: message names the file: $out"
out=$("$BIN" plot "$TMP/bad1" --out "$TMP/x.svg" 2>&1); rc=$?
check "[ $rc -eq 1 ]" "malformed line: exit $rc"
check "grep -q 'bad1/metrics.jsonl:3' <<< \"\$out\"" "malformed line: message names file:line: $out"
out=$("$BIN" plot "$TMP/bad2" --out "$TMP/x.svg" 2>&1); rc=$?
check "[ $rc -eq 1 ]" "training line without tokens: exit $rc"
check "grep -q 'bad2/metrics.jsonl:1' <<< \"\$out\"" "no tokens: message: $out"
: > "$TMP/empty/metrics.jsonl"
out=$("$BIN" plot "$TMP/empty" --out "$TMP/x.svg" 2>&1); rc=$?
check "[ $rc -eq 1 ]" "empty metrics: exit $rc"
check "[ ! -e '$TMP/x.svg' ]" "no SVG after errors"
"$BIN" plot > /dev/null 2>&1; rc=$?
check "[ $rc -eq 2 ]" "no runs: usage exit $rc"

if [ $fail -ne 0 ]; then echo "test_plot: FAILED"; exit 1; fi
echo "test_plot: all checks passed"
