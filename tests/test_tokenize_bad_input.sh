#!/usr/bin/env bash
# test_tokenize_bad_input.sh -- `luxtrain tokenize` on JSONL that is not UTF-8
# or holds a raw NUL byte inside a string (sample tokenizer):
#   1. stops (exit 1) naming file:line and the byte offset inside the line;
#   2. --skip-bad skips exactly those lines (reported with file:line) and keeps the others;
#   3. the kept documents equal those of the clean lines alone.
# Skips (77) when the sample model is absent.
. "$(dirname "$0")/lt_test_lib.sh"
lt_need_model tokenizer.json
lt_enter_tmp
# line 2: Latin-1 e acute at byte offset 19 of the line (0-based); line 3: a raw NUL at offset 14
printf '{"text": "first line"}\n{"text": "Moien caf\xe9"}\n{"text": "abcd\0efgh"}\n{"text": "last line"}\n' >bad.jsonl
printf '{"text": "first line"}\n{"text": "last line"}\n' >clean.jsonl
tok() { "$bin" tokenize --tokenizer "$model" --format text --val-fraction 0 "$@"; }

tok --input bad.jsonl --out out1 --quiet >t1.txt 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "bad.jsonl:2: not UTF-8 at byte offset 19 (byte 0xE9)" t1.txt &&
  echo "ok   Latin-1 byte: stopped at bad.jsonl:2, byte offset 19" || fail "Latin-1: exit $rc: $(tail -2 t1.txt)"
printf '{"text": "first line"}\n{"text": "abcd\0efgh"}\n' >nul.jsonl
tok --input nul.jsonl --out out2 --quiet >t2.txt 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "nul.jsonl:2: a raw NUL byte (0x00) at byte offset 14" t2.txt &&
  echo "ok   raw NUL: stopped at nul.jsonl:2, byte offset 14" || fail "raw NUL: exit $rc: $(tail -2 t2.txt)"

tok --input bad.jsonl --out out3 --skip-bad >t3.txt 2>&1 || fail "--skip-bad: $(tail -2 t3.txt)"
grep -q "bad.jsonl:2: not UTF-8 .*(skipped)" t3.txt && grep -q "bad.jsonl:3: a raw NUL byte .*(skipped)" t3.txt &&
  grep -q "skipped  *2 bad records" t3.txt && echo "ok   --skip-bad: lines 2 and 3 skipped" ||
  fail "--skip-bad report: $(cat t3.txt)"
tok --input clean.jsonl --out out4 --quiet >t4.txt 2>&1 || fail "clean: $(tail -2 t4.txt)"
if [ -n "${LT_PYTHON:-}" ] && "$LT_PYTHON" -c 'import h5py' 2>/dev/null; then
  "$LT_PYTHON" - out3/train-00000.h5 out4/train-00000.h5 <<'PY' && echo "ok   --skip-bad kept exactly the clean lines' tokens" || fail "--skip-bad tokens differ from the clean lines'"
import sys, h5py
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for k in a:
    assert (a[k][()] == b[k][()]).all(), k
PY
else
  "$bin" inspect out3/train-00000.h5 | grep -v '\.h5' >i3.txt; "$bin" inspect out4/train-00000.h5 | grep -v '\.h5' >i4.txt
  cmp -s i3.txt i4.txt && echo "ok   --skip-bad: the same shard summary as the clean lines" || fail "--skip-bad shard differs"
fi

lt_finish
