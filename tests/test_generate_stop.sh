#!/usr/bin/env bash
# test_generate_stop.sh -- `luxtrain generate` stops at the chat template's
# end-of-turn token. The toy sample model never emits <|im_end|> by itself, so
# the test first teaches it one short answer: full fine-tuning (30 steps, a
# couple of seconds) on instructions whose answer is always "Jo.", then
# generation with a generous --max-new-tokens must print exactly "Jo." (the
# answer, then <|im_end|>, which ends the turn and is not printed); a model
# that did not stop would keep writing up to the limit.
set -u
src="${LT_SOURCE_DIR:?LT_SOURCE_DIR not set}"
bin="${LT_BIN:?LT_BIN not set}"
py="${LT_PYTHON:-python3}"
tmp="${LT_TMP:-$(mktemp -d)}"
model="$src/data/sample/model"
[ -x "$bin" ] || { echo "FAIL: luxtrain binary '$bin' not built" >&2; exit 1; }
rm -rf "$tmp" && mkdir -p "$tmp" && cd "$tmp" || exit 1

"$py" - <<'PY' || { echo "FAIL: could not write jo.jsonl" >&2; exit 1; }
import json
qs = ["Sot jo.", "Äntwert mat jo.", "Wat seet een fir ja?", "Jo oder nee? Sot jo.",
      "Bass du do?", "Kanns du hëllefen?", "Ass et gutt?", "Verstees du mech?"]
with open("jo.jsonl", "w", encoding="utf-8") as f:
    for q in qs * 2:
        f.write(json.dumps({"instruction": q, "output": "Jo."}, ensure_ascii=False) + "\n")
PY
"$bin" tokenize --tokenizer "$model" --input jo.jsonl --out shards --quiet >tok.txt 2>&1 \
  || { echo "FAIL: tokenize: $(tail -3 tok.txt)" >&2; exit 1; }
"$bin" train --model "$model" --data shards/train-00000.h5 --out run --seq-len 64 --micro-batch 8 --epochs 0 \
  --max-steps 30 --lr 5e-3 --warmup-steps 2 --save-every 0 --eval-every 0 --device cpu --threads 2 >train.txt 2>&1 \
  || { echo "FAIL: train: $(tail -3 train.txt)" >&2; exit 1; }
out=$("$bin" generate --model run/final --prompt "Sot jo." --max-new-tokens 30 --device cpu 2>gen.txt) \
  || { echo "FAIL: generate: $(cat gen.txt)" >&2; exit 1; }
if [ "$out" != "Jo." ]; then
  echo "FAIL: expected generation to stop after 'Jo.' at <|im_end|>, got '$out'" >&2
  exit 1
fi
echo "test_generate_stop: generation stopped at the end-of-turn token ('$out')"
