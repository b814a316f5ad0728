#!/usr/bin/env bash
# test_cli_basics.sh -- first contact with the `luxtrain` binary: --version
# names the version of CMakeLists.txt, the commit of the source tree and the
# build options; no command and an unknown command are usage errors (2);
# every command's --help names its real command line and exits 0; an unknown
# option is a usage error that names it and the nearest valid option, with
# the --help hint printed once; --device cuda without a GPU (or in a build
# without CUDA) says so in words, in every command that takes --device.
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
check "unknown command: no far-fetched suggestion" '[[ "$err" != *"did you mean"* ]]'
err="$("$bin" trian 2>&1)"; rc=$?
check "a misspelt command: exit 2, the nearest command suggested" '[[ $rc == 2 && "$err" == *"did you mean '"'"'train'"'"'?"* ]]'

# --help of every command (the list comes from `luxtrain --help`)
cmds="$("$bin" --help | sed -n 's/^  \([a-z]\+\) .*/\1/p')"
check "luxtrain --help lists the commands" '[[ $(wc -w <<<"$cmds") -ge 9 ]]'
for c in $cmds; do
    if [[ $c == bench ]]; then subs="bench:kernels bench:step"; else subs="$c"; fi
    for s in $subs; do
        line="${s/:/ }"
        out="$("$bin" $line --help 2>&1)"; rc=$?
        check "$line --help: exit 0, usage names 'luxtrain $line'" \
            '[[ $rc == 0 && "$(head -1 <<<"$out")" == "usage: luxtrain $line "* ]]'
        check "$line --help names no other program" '! grep -qE "(^|[ (])(bench_[a-z]+|kernels|step):" <<<"$out"'
    done
done
out="$("$bin" inspect --help)"
check "inspect --help lists --show and --tokenizer" '[[ "$out" == *--show* && "$out" == *--tokenizer* ]]'

# unknown options: named once, with the nearest valid option
unknown() { # NAME EXPECTED-SUGGESTION ARGS...
    local name="$1" want="$2"; shift 2
    local err rc
    err="$("$bin" "$@" 2>&1 >/dev/null)"; rc=$?
    echo "$err" | sed 's/^/    /'
    if [[ -n $want ]]; then
        check "$name: suggests $want" '[[ $rc == 2 && "$err" == *"did you mean '"'"'$want'"'"'?"* ]]'
    else
        check "$name: no suggestion" '[[ $rc == 2 && "$err" == *"unknown option"* && "$err" != *"did you mean"* ]]'
    fi
    check "$name: the --help hint once" '[[ $(grep -o -- "--help" <<<"$err" | wc -l) == 1 ]]'
}
unknown "train --learning-rat" --lr train --learning-rat 0.1
unknown "train --lora_rank" --lora-rank train --lora_rank 8
unknown "train --mciro-batch" --micro-batch train --model m --mciro-batch 2
unknown "train --frobnicate" "" train --frobnicate
unknown "generate --modle" --model generate --modle m --prompt hi
unknown "merge --adpater" --adapter merge --adpater a
unknown "export --overwrit" --overwrite export ck --out o --overwrit
unknown "eval --taks" --tasks eval --taks exam.jsonl
unknown "plot --ot" --out plot run --ot x.svg
unknown "tokenize --tokeniser" --tokenizer tokenize --tokeniser t
unknown "inspect --jsn" --json inspect m --jsn
unknown "score --logit" --logits score --logit x
unknown "bench step --step" --steps bench step --step 3
unknown "bench kernels --quik" --quick bench kernels --quik

# --device cuda where there is no GPU, or no CUDA in this build
sample="$src/data/sample"
tmp="${LT_TMP:-/tmp/test_cli_basics}"
rm -rf "$tmp"; mkdir -p "$tmp"
if "$bin" score --model "$sample/model" --ids 1,2 --device cuda >/dev/null 2>&1; then
    echo "skip --device cuda messages: a GPU is present and CUDA is built in"
else
    if grep -q "^build: CUDA on" <<<"$("$bin" --version)"; then
        want="no NVIDIA GPU was found"
    else
        want="built without the CUDA backend|has no CUDA backend|CUDA was not built"
    fi
    "$bin" tokenize --tokenizer "$sample/model" --input "$sample/luxit_sample.jsonl" --out "$tmp/shards" \
        --quiet >/dev/null || echo "FAIL tokenize of the sample"
    devcmd() { # NAME ARGS...
        local name="$1" err rc; shift
        err="$("$bin" "$@" --device cuda 2>&1 >/dev/null)"; rc=$?
        echo "    $err"
        check "$name --device cuda: exit 1, says '$want'" '[[ $rc == 1 ]] && grep -qE "$want" <<<"$err"'
    }
    devcmd score score --model "$sample/model" --ids 1,2
    devcmd generate generate --model "$sample/model" --prompt Moien --max-new-tokens 2
    devcmd "eval --tasks" eval --model "$sample/model" --tasks "$sample/exam_lb.jsonl"
    devcmd "eval --data" eval --model "$sample/model" --data "$tmp/shards/train-00000.h5"
    devcmd train train --model "$sample/model" --data "$tmp/shards/train-00000.h5" --out "$tmp/run" --max-steps 1
    devcmd "bench step" bench step --shape sample --steps 1
    devcmd "bench kernels" bench kernels --quick --no-torch
fi
exit $fail
