#!/usr/bin/env bash
# test_bench_kernels.sh -- `luxtrain bench kernels` on the CPU with tiny
# shapes (--quick, no PyTorch): it must run every op of the table, write JSON
# that follows bench/README.md, and count FLOPs / bytes by the stated
# formulas (recomputed here from the shapes). Timings are not checked (they
# are only a smoke test on the CPU). Also: bad options exit 2 (`bench step`
# itself: tests/test_bench_step.sh), and bench_kernels_torch.py parses.
# --op NAME runs one op of the op case table (bench/lt_op_cases.c) and
# --list-ops lists them; an unknown op exits 2.
set -u
BIN=${LT_BIN:?LT_BIN not set}
SRC=${LT_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
PY=${LT_PYTHON:-python3}
[ -x "$PY" ] || PY=$(command -v python3 || true)
[ -n "$PY" ] || { echo "no python: skipping"; exit 77; }
TMP=${LT_TMP:-$(mktemp -d)}
rm -rf "$TMP" && mkdir -p "$TMP"
fail=0

if ! "$BIN" bench kernels --device cpu --quick --no-torch --threads 1 --json "$TMP/k.json" >"$TMP/out.txt" 2>"$TMP/err.txt"; then
  echo "FAIL: bench kernels exited with $?"; cat "$TMP/err.txt"; fail=1
fi
grep -q "^goal " "$TMP/out.txt" || { echo "FAIL: no goal lines in the table"; fail=1; }

"$PY" - "$TMP/k.json" <<'PYEOF' || fail=1
import json, math, sys
d = json.load(open(sys.argv[1]))
bad = []
def need(c, msg):
    if not c: bad.append(msg)
need(d.get("schema") == "luxtrain-bench-kernels/1", "schema")
need(d["device"]["backend"] == "cpu" and d["quick"] is True, "device / quick")
pk = d["peak"]
need(pk["copy_gbps"] > 0 and pk["gemm_tflops"] > 0 and math.isfinite(pk["copy_gbps"]), "peak figures")
ops = {r["op"] for r in d["results"]}
want = {"attention_fwd", "attention_bwd", "rmsnorm_fwd", "rmsnorm_bwd", "rope_fwd", "rope_bwd", "swiglu_fwd",
        "swiglu_bwd", "embedding_fwd", "embedding_bwd", "matmul_fwd", "matmul_bwd", "lora_fwd+bwd",
        "cross_entropy", "adamw", "add_rmsnorm_fwd", "embed_noise", "attention_cap_fwd", "attention_cap_bwd",
        "rmsnorm_off_fwd", "rmsnorm_off_bwd", "geglu_fwd", "geglu_bwd", "scale", "cross_entropy_cap",
        "nf4_matmul_fwd", "nf4_matmul_bwd", "copy", "sumsq_units"}
need(ops == want, "ops %s" % sorted(ops ^ want))
for r in d["results"]:
    i, s = r["id"], r["shape"]
    need("error" not in r, "%s: error %s" % (i, r.get("error")))
    if "error" in r: continue
    need(math.isfinite(r["ms"]) and 0 < r["ms_min"] <= r["ms"] <= r["ms_max"] and r["reps"] >= 3, i + ": times")
    rate = r["flop"] / (r["ms"] * 1e-3) * 1e-12 if r["bound"] == "compute" else r["bytes"] / (r["ms"] * 1e-3) * 1e-9
    peak = pk["gemm_tflops"] if r["bound"] == "compute" else pk["copy_gbps"]
    need(abs(r["pct_peak"] - 100 * rate / peak) <= 1e-6 * max(1, r["pct_peak"]), i + ": pct_peak")
    for b in r["baselines"]:
        need(b["ms"] > 0 and abs(b["ratio"] - b["ms"] / r["ms"]) < 1e-9 * b["ratio"] + 1e-12, i + ": ratio")
    a = 4  # f32 activations on the CPU
    op = r["op"]
    if op == "attention_fwd":
        need(r["flop"] == 4 * s["B"] * s["Hq"] * s["D"] * s["T"] ** 2 / 2, i + ": flop")
    if op == "attention_bwd":
        need(r["flop"] == 2.5 * 4 * s["B"] * s["Hq"] * s["D"] * s["T"] ** 2 / 2, i + ": flop")
    if op == "matmul_fwd":
        need(r["flop"] == 2 * s["M"] * s["K"] * s["N"], i + ": flop")
        need([b["name"] for b in r["baselines"]] == ["BLAS sgemm"], i + ": baseline")
    if op == "lora_fwd+bwd":
        M, K, N, rr = s["M"], s["K"], s["N"], s["r"]
        need(r["flop"] == 4 * M * K * N + 2 * M * rr * (3 * K + 3 * N), i + ": flop")
        need(r["baselines"][0]["name"].startswith("frozen") and r["goal"]["met"] in (True, False), i + ": goal")
        need(r["goal"]["met"] == (r["ms"] <= 1.1 * r["baselines"][0]["ms"]), i + ": goal value")
    if op == "rmsnorm_fwd":
        need(r["bytes"] == a * 2 * s["R"] * s["C"] + a * s["C"] + 4 * s["R"], i + ": bytes")
        need(r["goal"]["met"] == (r["pct_peak"] >= 90), i + ": goal")
    if op == "cross_entropy":
        need(r["bytes"] == 2 * a * s["N"] * s["V"] + 8 * s["N"], i + ": bytes")
    if op in ("embed_noise", "copy"):
        need(r["bytes"] == 2 * a * s["N"] * s["C"], i + ": bytes")
    if op == "adamw":
        need(r["bytes"] == s["elements"] * (30 if s["master"] else 28), i + ": bytes")
    if op == "sumsq_units":
        need(r["bytes"] == 4 * s["n"] + 8 * -(-s["n"] // s["unit"]), i + ": bytes")
        need([b["name"] for b in r["baselines"]] == ["sumsq per unit (one synchronisation each)"], i + ": baseline")
    if op == "attention_fwd":
        need(r["goal"]["met"] is None, i + ": no torch, no verdict")
need(d["torch"]["used"] is False, "torch used despite --no-torch")
if bad:
    print("FAIL:", *bad, sep="\n  ")
    sys.exit(1)
print("ok: %d results" % len(d["results"]))
PYEOF

# --list-ops: the table's ops; --op: only that op's results
"$BIN" bench kernels --list-ops >"$TMP/ops.txt" || { echo "FAIL: --list-ops"; fail=1; }
for op in embedding embed_noise matmul rmsnorm add_rmsnorm rope attention swiglu add cross_entropy lora sumsq adamw \
    rmsnorm_off geglu attention_cap cross_entropy_cap scale nf4_matmul copy sumsq_units; do
  grep -q "^$op " "$TMP/ops.txt" || { echo "FAIL: --list-ops lacks $op"; fail=1; }
done
if ! "$BIN" bench kernels --device cpu --quick --no-torch --threads 1 --op rmsnorm --json "$TMP/op.json" \
    >/dev/null 2>"$TMP/err-op.txt"; then
  echo "FAIL: bench kernels --op rmsnorm exited with $?"; cat "$TMP/err-op.txt"; fail=1
fi
"$PY" - "$TMP/op.json" <<'PYEOF' || fail=1
import json, sys
d = json.load(open(sys.argv[1]))
ops = sorted({r["op"] for r in d["results"]})
if ops != ["rmsnorm_bwd", "rmsnorm_fwd"] or any(not r.get("formula") for r in d["results"]):
    print("FAIL: --op rmsnorm gave", ops); sys.exit(1)
PYEOF
"$BIN" bench kernels --device cpu --op nonsense >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || { echo "FAIL: --op nonsense gave rc $rc (expected 2)"; fail=1; }
"$BIN" bench kernels --device cpu --op sumsq >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || { echo "FAIL: --op sumsq (no benchmark) gave rc $rc (expected 2)"; fail=1; }

"$BIN" bench nonsense >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || { echo "FAIL: bench nonsense gave rc $rc (expected 2)"; fail=1; }
"$BIN" bench kernels --device cpu --budget -1 >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || { echo "FAIL: --budget -1 gave rc $rc (expected 2)"; fail=1; }
"$BIN" bench kernels --nonsense >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || { echo "FAIL: unknown option gave rc $rc (expected 2)"; fail=1; }
"$PY" -c "import ast, sys; ast.parse(open(sys.argv[1]).read())" "$SRC/bench/bench_kernels_torch.py" \
  || { echo "FAIL: bench_kernels_torch.py does not parse"; fail=1; }
[ $fail -eq 0 ] && echo "test_bench_kernels: ok"
exit $fail
