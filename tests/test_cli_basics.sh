#!/usr/bin/env bash
# test_cli_basics.sh -- first contact with the `luxtrain` binary: --version
# names the version of CMakeLists.txt, the commit of the source tree and the
# build options; no command and an unknown command are usage errors (2).
set -uo pipefail
bin="${LT_BIN:?}"
src="${LT_SOURCE_DIR:?}"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }

out="$("$bin" --version)"; rc=$?
echo "$out"
ver="$(sed -n 's/^project(luxtrain VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")"
check "--version exits 0" '[[ $rc == 0 ]]'
check "--version names the version $ver" '[[ "$out" == "luxtrain $ver (commit "* ]]'
commit="$(git -C "$src" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
check "--version names the commit $commit" '[[ "$out" == *"commit $commit"* ]]'
check "--version lists the build options" 'grep -qE "^build: CUDA (on|off).*MPI (on|off)" <<<"$out"'
"$bin" >/dev/null 2>&1; rc=$?
check "no command: exit 2" '[[ $rc == 2 ]]'
err="$("$bin" frobnicate 2>&1)"; rc=$?
check "unknown command: exit 2 and named" '[[ $rc == 2 && "$err" == *"unknown command '"'"'frobnicate'"'"'"* ]]'
exit $fail
