#!/usr/bin/env bash
# test_gpu_check.sh -- tools/gpu-check.sh keeps its promises without a GPU:
#  1. the results writer (tools/gpu_check_report.py) turns logs of every kind
#     of phase into a well-formed JSON, and --verify rejects a broken one;
#  2. (root, unshare and .debs/ present, else that part is skipped) the
#     rehearsal with a deadline far too short for the build: the build phase
#     is cut and reported as a timeout, the exit status is 1, and $OUT still
#     holds exactly the two files, valid (the full rehearsal runs in .ci/run).
set -uo pipefail
src="${LT_SOURCE_DIR:?}"
tmp="${LT_TMP:?}"
py="${LT_PYTHON:-python3}"
"$py" -c 'import json' 2>/dev/null || py=python3
rm -rf "$tmp" && mkdir -p "$tmp"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }

# --- 1. the results writer on synthetic logs --------------------------------------
logs="$tmp/logs"
mkdir -p "$logs"
printf 'preflight\tok\t1\t0\ndeps\tok\t4\t0\nbuild\ttimeout\t400\t124\ngpu-tests\tdeadline\t0\nzero\tfailed\t9\t1\n' >"$logs/phases.tsv"
printf 'zero-check: ok   z2 on cuda: bitwise\nnoise\nzero-check: FAIL z3: final weights differ\nzero-check: ok   qlora-z3 on cuda: adapter\n' >"$logs/zero.log"
echo "nvcc: 13.0" >"$logs/preflight.log"
cat >"$logs/gpu-tests.log" <<'EOF'
1: ok rmsnorm_fwd R=7 C=64 out           norm err 1.2e-03  max abs 3.1e-03
1: FAIL attention_bwd B=1 T=9 dq: normalized error 2.5e-01 (tol 1.0e-02)
1/2 Test  #1: test_backend_ops .................***Failed    3.10 sec
2/2 Test #13: test_model_cuda ..................   Passed   12.50 sec
EOF
cat >"$logs/bench.log" <<'EOF'
--- bench_kernels --device cuda --quick
attention fwd 1.0 ms
--- luxtrain bench step --device cuda --shape 1b --steps 5
tokens/s 1234
EOF
echo '{"schema": "luxtrain-bench-step/1", "config": {"shape": "1b"}, "result": {"tokens_per_s": 1234}}' \
  >"$logs/bench_step_1b-full.json"
echo "logits 1e-2" >"$logs/test_model_cuda.report.txt"
out="$tmp/r.json"
"$py" "$src/tools/gpu_check_report.py" --logs "$logs" --out "$out" --meta date=2026-01-01 gpu=TestGPU \
  commit=abc deadline_s=540 >"$tmp/summary.txt" 2>&1
rc=$?
check "report writer exits 0" '[[ $rc == 0 ]]'
check "verify accepts it" '"$py" "$src/tools/gpu_check_report.py" --verify "$out" >/dev/null'
check "fields parsed" '"$py" - "$out" <<EOF
import json, sys
r = json.load(open(sys.argv[1]))
assert [p["status"] for p in r["phases"]] == ["ok", "ok", "timeout", "deadline", "failed"], r["phases"]
assert r["zero_check"] == ["ok   z2 on cuda: bitwise", "FAIL z3: final weights differ", "ok   qlora-z3 on cuda: adapter"], r["zero_check"]
assert r["deadline_s"] == 540 and r["gpu"] == "TestGPU"
assert [t["status"] for t in r["gpu_tests"]] == ["Failed", "Passed"], r["gpu_tests"]
assert len(r["backend_ops"]) == 2 and r["backend_ops"][0]["ok"] and not r["backend_ops"][1]["ok"]
assert abs(r["backend_ops"][1]["norm_err"] - 0.25) < 1e-12
assert [b["run"].split()[0] for b in r["benchmarks"]] == ["bench_kernels", "luxtrain"]
assert r["step"][0]["result"]["tokens_per_s"] == 1234
assert r["model_reports"]["test_model_cuda"] == ["logits 1e-2"]
EOF'
check "summary names the failed op" 'grep -q "FAIL attention_bwd" "$tmp/summary.txt"'
check "summary names the failed ZeRO run" 'grep -q "zero  FAIL z3" "$tmp/summary.txt"'
check "summary lists every ZeRO run" 'grep -q "zero  ok   qlora-z3 on cuda" "$tmp/summary.txt"'
echo '{"schema": "luxtrain-gpu-check/2", "phases": [{"name": "bogus"}]}' >"$tmp/bad.json"
check "verify rejects a broken file" '! "$py" "$src/tools/gpu_check_report.py" --verify "$tmp/bad.json" >/dev/null'

# --- 2. the deadline, in the rehearsal ----------------------------------------------
skip=""
[[ "$(id -u)" == 0 ]] || skip="not root"
command -v unshare >/dev/null || skip="no unshare"
command -v nvcc >/dev/null || skip="no nvcc"
ls "$src"/.debs/*.deb >/dev/null 2>&1 || skip="no .debs/ (tools/fetch-debs.sh)"
if [[ -n "$skip" ]]; then
  echo "skip the rehearsal part: $skip"
  ((fail)) && exit 1
  exit 77
fi
LT_DEADLINE=60 LT_REHEARSE_SCALE=1 LT_BUILD_DIR="$tmp/build" LT_DEPS_PREFIX="$tmp/deps" \
  bash "$src/tools/gpu-check.sh" --rehearse --no-bench >"$tmp/rehearse.log" 2>&1
rc=$?
check "a cut run exits 1" '[[ $rc == 1 ]]'
check "the build is reported cut" 'grep -qE -- "--- build: timeout|build: not run \(deadline\)|configure: timeout" "$tmp/rehearse.log"'
check "\$OUT still holds the two files" 'grep -q "gpu-check --rehearse: \$OUT OK" "$tmp/rehearse.log"'
check "nothing from the simulation leaks: pkg-config hidden" 'grep -q "pkg-config: none" "$tmp/rehearse.log"'
((fail)) && { tail -40 "$tmp/rehearse.log"; exit 1; }
echo "test_gpu_check: all checks passed"
