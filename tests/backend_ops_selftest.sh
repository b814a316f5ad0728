#!/usr/bin/env bash
# backend_ops_selftest.sh TEST_BACKEND_OPS -- ctest test_backend_ops_selftest:
# the test mode of the op case table (tests/test_backend_ops.c) without a
# GPU, a second CPU backend standing in for CUDA (LT_BACKEND_OPS_SELFTEST=1).
# Every op of the table must pass; with each fault injected into the stand-in
# (LT_BACKEND_OPS_FAULT: NaN output, skipped write, guard overrun, a 1e-3
# error, a non-deterministic rerun, a copy one byte short, sumsq_units
# leaving its last unit unwritten) the run must fail and say FAIL; --op
# runs one op, --list-ops lists them, an unknown op exits 2.
set -u
T=${1:?usage: backend_ops_selftest.sh path/to/test_backend_ops}
TMP=${LT_TMP:-$(mktemp -d)}
rm -rf "$TMP" && mkdir -p "$TMP"
export LT_BACKEND_OPS_SELFTEST=1
fail=0

if ! "$T" >"$TMP/all.txt" 2>&1; then
  echo "FAIL: the harness fails against a second CPU backend"; tail -20 "$TMP/all.txt"; fail=1
fi
n=$(grep -c '^  [a-z0-9_]* .* shapes.*: ok$' "$TMP/all.txt")
nops=$("$T" --list-ops | wc -l)
[ "$n" -eq "$nops" ] && [ "$nops" -ge 12 ] || { echo "FAIL: $n ops passed, the table has $nops"; fail=1; }

for f in nan:swiglu skip:swiglu guard:swiglu perturb:swiglu nondet:embedding short:copy lastunit:sumsq_units; do
  LT_BACKEND_OPS_FAULT=${f%%:*} "$T" --op "${f#*:}" >"$TMP/fault.txt" 2>&1; rc=$?
  if [ $rc -ne 1 ] || ! grep -q '^FAIL' "$TMP/fault.txt"; then
    echo "FAIL: fault ${f%%:*} in ${f#*:} not caught (rc $rc)"; cat "$TMP/fault.txt"; fail=1
  fi
done

"$T" --op rope >"$TMP/one.txt" 2>&1 || { echo "FAIL: --op rope"; fail=1; }
[ "$(grep -c ' shapes' "$TMP/one.txt")" -eq 1 ] && grep -q '^  rope ' "$TMP/one.txt" \
  || { echo "FAIL: --op rope ran other ops"; cat "$TMP/one.txt"; fail=1; }
"$T" --op nonsense >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || { echo "FAIL: --op nonsense gave rc $rc (expected 2)"; fail=1; }
[ $fail -eq 0 ] && echo "test_backend_ops_selftest: ok"
exit $fail
