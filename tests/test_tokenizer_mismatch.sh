#!/usr/bin/env bash
# test_tokenizer_mismatch.sh -- `train` and `eval --data` compare the shards'
# tokenizer_sha256 with the model's tokenizer.json (sample model, CPU):
#   1. shards of the model's own tokenizer: accepted;
#   2. shards of another tokenizer.json with the same vocabulary (the sample's
#      plus trailing whitespace): refused (exit 1) with a message naming the
#      shard, the tokenizer file and both SHA-256 hashes (checked with sha256sum);
#   3. --allow-tokenizer-mismatch: runs, with a warning;
#   4. eval --tokenizer naming the shards' tokenizer: accepted.
# Skips (77) when the sample model is absent.
. "$(dirname "$0")/lt_test_lib.sh"
lt_need_model
lt_enter_tmp
mkdir other && cp "$model/tokenizer.json" "$model/tokenizer_config.json" other/ && printf '\n\n' >>other/tokenizer.json
input="$src/data/sample/luxit_sample.jsonl"
"$bin" tokenize --tokenizer "$model" --input "$input" --out own --quiet >tok1.txt 2>&1 || fail "tokenize: $(tail -2 tok1.txt)"
"$bin" tokenize --tokenizer other --input "$input" --out foreign --quiet >tok2.txt 2>&1 || fail "tokenize: $(tail -2 tok2.txt)"
train=(train --model "$model" --seq-len 64 --micro-batch 1 --max-steps 2 --epochs 1 --save-every 0 --eval-every 0
       --device cpu --threads 1 --log-every 100)
evalp=(eval --model "$model" --seq-len 64 --device cpu --threads 1)

"$bin" "${train[@]}" --data own/train-00000.h5 --out r-own >r-own.txt 2>&1 && echo "ok   train: own tokenizer accepted" ||
  fail "train on the model's own shards: $(tail -2 r-own.txt)"
"$bin" "${evalp[@]}" --data own/train-00000.h5 >e-own.txt 2>&1 && echo "ok   eval: own tokenizer accepted" ||
  fail "eval on the model's own shards: $(tail -2 e-own.txt)"

h_model=$(sha256sum "$model/tokenizer.json" | cut -d' ' -f1)
h_other=$(sha256sum other/tokenizer.json | cut -d' ' -f1)
refused() { # LOG: exit was 1 and the message names everything
  grep -q "foreign/train-00000.h5 was tokenized by another tokenizer than $model/tokenizer.json (shard tokenizer_sha256 $h_other, this tokenizer's sha256 $h_model)" "$1" &&
    grep -q -- "--allow-tokenizer-mismatch" "$1"
}
"$bin" "${train[@]}" --data foreign/train-00000.h5 --out r-foreign >r-foreign.txt 2>&1
rc=$?
[ $rc -eq 1 ] && refused r-foreign.txt && echo "ok   train: foreign tokenizer refused, naming both files and hashes" ||
  fail "train on foreign shards: exit $rc: $(tail -2 r-foreign.txt)"
"$bin" "${evalp[@]}" --data foreign/train-00000.h5 >e-foreign.txt 2>&1
rc=$?
[ $rc -eq 1 ] && refused e-foreign.txt && echo "ok   eval: foreign tokenizer refused, naming both files and hashes" ||
  fail "eval on foreign shards: exit $rc: $(tail -2 e-foreign.txt)"
"$bin" "${train[@]}" --data own/train-00000.h5 --eval-data foreign/train-00000.h5 --out r-evalfor >r-evalfor.txt 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q -- "--eval-data: .*another tokenizer" r-evalfor.txt && echo "ok   train: foreign --eval-data refused" ||
  fail "train with foreign --eval-data: exit $rc: $(tail -2 r-evalfor.txt)"

"$bin" "${train[@]}" --data foreign/train-00000.h5 --out r-allow --allow-tokenizer-mismatch >r-allow.txt 2>&1 &&
  grep -q "warning (--allow-tokenizer-mismatch)" r-allow.txt && echo "ok   train --allow-tokenizer-mismatch: runs with a warning" ||
  fail "train --allow-tokenizer-mismatch: $(tail -2 r-allow.txt)"
"$bin" "${evalp[@]}" --data foreign/train-00000.h5 --allow-tokenizer-mismatch >e-allow.txt 2>&1 &&
  grep -q "warning (--allow-tokenizer-mismatch)" e-allow.txt && echo "ok   eval --allow-tokenizer-mismatch: runs with a warning" ||
  fail "eval --allow-tokenizer-mismatch: $(tail -2 e-allow.txt)"
"$bin" "${evalp[@]}" --data foreign/train-00000.h5 --tokenizer other >e-tok.txt 2>&1 &&
  echo "ok   eval --tokenizer (the shards' own): accepted" || fail "eval --tokenizer other: $(tail -2 e-tok.txt)"

lt_finish
