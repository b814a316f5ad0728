#!/usr/bin/env bash
# test_cli_outputs.sh -- a command that fails leaves nothing behind: train,
# tokenize and merge given an invalid input leave no output folder they made
# (not even an empty one, nor a lone config.json in it, nor a parent level
# of a nested --out that it created), and a folder that existed before keeps
# exactly what it held. Runs on data/sample only.
set -uo pipefail
bin="${LT_BIN:?}"
src="${LT_SOURCE_DIR:?}"
tmp="${LT_TMP:-/tmp/test_cli_outputs}"
model="$src/data/sample/model"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
rm -rf "$tmp"; mkdir -p "$tmp"

"$bin" tokenize --tokenizer "$model" --input "$src/data/sample/luxit_sample.jsonl" --out "$tmp/shards" --quiet \
    >/dev/null || { echo "FAIL tokenize of the sample"; exit 1; }
shard="$tmp/shards/train-00000.h5"
printf '{"messages": [{"role": "user", "content": "Moien"}]}\n{"broken\n' >"$tmp/bad.jsonl"

# fails CMD...: the command exits non-zero
fails() { "$@" >"$tmp/log" 2>&1 && { echo "    (it succeeded)"; return 1; }; sed 's/^/    /' "$tmp/log"; }
# a folder that existed before, with something in it
fresh_existing() { rm -rf "$tmp/existing"; mkdir -p "$tmp/existing"; echo keep >"$tmp/existing/notes.txt"; }
untouched() { [[ "$(cd "$tmp/existing" && ls -A)" == notes.txt && "$(cat "$tmp/existing/notes.txt")" == keep ]]; }

for case in "missing shard|--data $tmp/none.h5" "missing model|--model $tmp/nomodel" \
    "bad --lora-targets|--lora-targets q,nope" "unknown device|--device tpu"; do
    name="${case%%|*}" extra="${case#*|}"
    args=(--model "$model" --data "$shard" --max-steps 1 --device cpu)
    check "train ($name) fails" 'fails "$bin" train "${args[@]}" $extra --out "$tmp/run"'
    check "train ($name): no run folder left" '[[ ! -e "$tmp/run" ]]'
    fresh_existing
    check "train ($name) into an existing folder fails" 'fails "$bin" train "${args[@]}" $extra --out "$tmp/existing"'
    check "train ($name): the existing folder keeps only what it held" untouched
done
check "train into a new nested folder fails" \
    'fails "$bin" train --model "$model" --data "$tmp/none.h5" --out "$tmp/a/b"'
check "train: the nested folder it made is gone" '[[ ! -e "$tmp/a/b" ]]'
check "train: every level it made is gone (a too)" '[[ ! -e "$tmp/a" ]]'
mkdir -p "$tmp/a"
check "train into a/b/c where a existed fails" \
    'fails "$bin" train --model "$model" --data "$tmp/none.h5" --out "$tmp/a/b/c/"'
check "train: b and c are gone, a (which existed) stays" '[[ -d "$tmp/a" && ! -e "$tmp/a/b" ]]'

check "tokenize (bad JSONL) fails" \
    'fails "$bin" tokenize --tokenizer "$model" --input "$tmp/bad.jsonl" --out "$tmp/tok" --quiet'
check "tokenize: no output folder left" '[[ ! -e "$tmp/tok" ]]'
check "tokenize (missing input) fails" \
    'fails "$bin" tokenize --tokenizer "$model" --input "$tmp/none.jsonl" --out "$tmp/tok" --quiet'
check "tokenize: no output folder left" '[[ ! -e "$tmp/tok" ]]'
fresh_existing
check "tokenize (bad JSONL) into an existing folder fails" \
    'fails "$bin" tokenize --tokenizer "$model" --input "$tmp/bad.jsonl" --out "$tmp/existing" --quiet'
check "tokenize: the existing folder keeps only what it held" untouched

check "merge (not an adapter) fails" 'fails "$bin" merge --model "$model" --adapter "$model" --out "$tmp/merged"'
check "merge: no output folder left" '[[ ! -e "$tmp/merged" ]]'
check "merge (adapter of another shape) fails" \
    'fails "$bin" merge --model "$model" --adapter "$src/tests/fixtures/peft/adapter" --out "$tmp/merged"'
check "merge: no output folder left" '[[ ! -e "$tmp/merged" ]]'
fresh_existing
check "merge into an existing folder fails" \
    'fails "$bin" merge --model "$model" --adapter "$src/tests/fixtures/peft/adapter" --out "$tmp/existing"'
check "merge: the existing folder keeps only what it held" untouched
exit $fail
